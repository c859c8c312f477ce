"""Shared plumbing for the command-line tools in tools/.

Every tool follows one layout, so that Ctrl-C at any moment ends it with status 130 and one
`interrupted` line, never a traceback, and a bad input with one `error: ...` line (status 2):

    import argparse                                    # the standard library: instant
    from voxseg.cli import exit_on_interrupt, main_guard

    with exit_on_interrupt():                          # torch & co. take seconds to import
        from voxseg.engine import finetune

    @main_guard
    def main() -> None: ...
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import sys
from typing import Callable, Iterator, Sequence

from voxseg.errors import VoxsegError

#: A dotted `key=value` config override (`train.max_steps=50`, `blocks.0.depth=7`, `output_dir=x`).
OVERRIDE = re.compile(r"[A-Za-z_]\w*(\.\w+)*=")


@contextlib.contextmanager
def exit_on_interrupt() -> Iterator[None]:
    """Ctrl-C inside the block ends the process: one `interrupted` line, exit status 130."""
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def main_guard(main: Callable[[], int | None]) -> Callable[[], None]:
    """Run `main`; a VoxsegError (bad config, bad data file) becomes one `error: ...` line and
    exit status 2 instead of a traceback, Ctrl-C exit status 130 (exit_on_interrupt)."""

    @functools.wraps(main)
    def wrapper() -> None:
        with exit_on_interrupt():
            try:
                sys.exit(main() or 0)
            except VoxsegError as exc:
                print(f"error: {exc}", file=sys.stderr)
                sys.exit(2)

    return wrapper


def training_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every training tool (tools/pretrain.py, tools/finetune.py) shares: --config,
    --resume, --allow-config-change and the positional dotted overrides (parse_args_with_overrides);
    a tool adds its own before parsing."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (may name _base_ files)")
    parser.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoints/last.pt")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume even though the config differs from the run's (not the model)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.max_steps=50")
    return parser


def parse_args_with_overrides(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line of a tool whose positional `overrides` takes dotted `key=value`
    config overrides, which may stand anywhere: before, between or after the options, even right
    after a list option (`--sequences 00 01 grouping.voxel_size=0.15` would otherwise give the
    override to --sequences as a sequence). Arguments of that form go to `overrides`, in order."""
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides = [a for a in argv if OVERRIDE.match(a)]
    args = parser.parse_intermixed_args([a for a in argv if not OVERRIDE.match(a)])
    args.overrides = [*overrides, *args.overrides]  # anything else positional: refused as an override
    return args
