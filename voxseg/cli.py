"""Shared plumbing for the command-line tools in tools/."""

from __future__ import annotations

import functools
import sys
from typing import Callable

from voxseg.errors import VoxsegError


def main_guard(main: Callable[[], int | None]) -> Callable[[], None]:
    """Run `main`; a VoxsegError (bad config, bad data file) becomes one `error: ...` line and
    exit status 2 instead of a traceback."""

    @functools.wraps(main)
    def wrapper() -> None:
        try:
            sys.exit(main() or 0)
        except VoxsegError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
