"""The tools' command lines: overrides wherever they stand, a changed `type` on the command line,
Ctrl-C while a tool is still importing."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from tests.helpers import FINETUNE_CONFIG, PRETRAIN_CONFIG, ROOT, cli
from voxseg.cli import parse_args_with_overrides, training_parser

PREPROCESS_CONFIG = ROOT / "configs" / "preprocess" / "default.yaml"


# --------------------------------------------------------------------- overrides stand anywhere
def test_overrides_are_taken_from_anywhere_on_the_line():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequences", nargs="+")
    parser.add_argument("--out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parse_args_with_overrides(parser, ["a.b=1", "--sequences", "00", "01", "blocks.0.depth=7", "--resume",
                                              "--out", "runs/x=1", "output_dir=y"])
    assert args.sequences == ["00", "01"] and args.resume and args.out == "runs/x=1"
    assert args.overrides == ["a.b=1", "blocks.0.depth=7", "output_dir=y"]
    stray = parse_args_with_overrides(parser, ["--resume", "typo", "a=1"])
    assert stray.overrides == ["a=1", "typo"]  # load() refuses 'typo' as an override, naming it


def test_the_training_tools_share_their_options():
    parser = training_parser("doc")
    args = parse_args_with_overrides(parser, ["a.b=1", "--config", "x.yaml", "--resume", "c=2"])
    assert (args.config, args.resume, args.allow_config_change, args.overrides) == ("x.yaml", True, False,
                                                                                     ["a.b=1", "c=2"])
    with pytest.raises(SystemExit):  # --config is required
        parse_args_with_overrides(parser, ["--resume"])


@pytest.mark.parametrize("tool, args, message", [
    ("finetune",
     ["--config", str(FINETUNE_CONFIG), "output_dir=OUT", "--pretrained", "missing.pt", "train.batch_size=0"],
     "command line: train.batch_size: must be >= 1, got 0"),
    ("pretrain", ["--config", str(PRETRAIN_CONFIG), "output_dir=OUT", "--resume", "train.batch_size=0"],
     "command line: train.batch_size: must be >= 1, got 0"),
    ("preprocess", ["--dataset", "data/none", "--sequences", "00", "01", "grouping.min_points=x", "--out", "OUT"],
     "command line: grouping.min_points: expected int, got str 'x'"),
])
def test_an_override_after_an_option_reaches_the_config(tool, args, message, tmp_path):
    """The override is read (its validation error is the one line), not refused by argparse
    ("unrecognized arguments" when overrides stood on both sides of an option) or taken as a
    sequence name by --sequences."""
    out = tmp_path / "run"
    done = cli(f"tools/{tool}.py", *(a.replace("OUT", str(out)) for a in args))
    assert done.returncode == 2 and done.stderr.strip() == f"error: {message}", done.stderr
    assert not out.exists()


# ------------------------------------------------------------------ a type changed by override
def test_a_ground_type_override_drops_the_old_types_arguments():
    from preprocessing import pipeline

    cfg = pipeline.resolve(PREPROCESS_CONFIG, ["ground.type=RansacPlane"])
    assert cfg["ground"] == {"type": "RansacPlane", "distance_threshold": 0.25, "ransac_n": 3, "num_iterations": 200,
                             "seed": 0}
    assert cfg["grouping"]["voxel_size"] == 0.2  # the rest of the file stays


def test_a_ground_type_override_on_the_tool_checks_the_new_types_arguments(tmp_path):
    """Before, PatchworkPP's keys stayed: `configs/preprocess/default.yaml: ground.sensor_height:
    unknown key for ground RansacPlane`. Now RansacPlane's own arguments are checked."""
    done = cli("tools/preprocess.py", "--config", str(PREPROCESS_CONFIG), "--dataset", str(tmp_path / "data"),
               "--sequences", "00", "ground.type=RansacPlane", "ground.ransac_n=x")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: command line: ground.ransac_n: expected int, got str 'x'"
    assert not (tmp_path / "data").exists()
    done = cli("tools/preprocess.py", "--config", str(PREPROCESS_CONFIG), "--dataset", str(tmp_path / "data"),
               "--sequences", "00", "ground.type=RansacPlane", "ground.sensor_height=1.7")
    assert done.stderr.strip() == ("error: command line: ground.sensor_height: unknown key for ground RansacPlane; "
                                   "allowed: distance_threshold, num_iterations, ransac_n, seed")


# ------------------------------------------------------------------ Ctrl-C while importing
INTERRUPT_ON_IMPORT = '''
import importlib.abc
import signal
import sys


class InterruptOnImport(importlib.abc.MetaPathFinder):
    """A Ctrl-C (a real SIGINT) the moment numpy, which every tool's heavy imports load, is imported."""

    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            signal.raise_signal(signal.SIGINT)
        return None


# Python's own Ctrl-C handler, as in a terminal: a job started in the background by a shell
# without job control (CI scripts, `make test &`) inherits SIGINT ignored, and the signal would be lost
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.meta_path.insert(0, InterruptOnImport())
'''


@pytest.mark.parametrize("tool", ["finetune", "pretrain", "preprocess", "infer", "evaluate", "make_synthetic"])
def test_ctrl_c_while_a_tool_imports_exits_130_without_a_traceback(tool, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(INTERRUPT_ON_IMPORT)  # imported at start-up from PYTHONPATH
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, f"tools/{tool}.py"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert (done.returncode, done.stderr, done.stdout) == (130, "interrupted\n", "")
