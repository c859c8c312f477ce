"""tools/pretrain.py end to end on the tiny synthetic dataset: ISCC pretraining writes an encoder
that fine-tuning loads whole, resumes exactly, logs every term, and refuses bad input in one line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from preprocessing import pipeline
from tests.helpers import ROOT
from voxseg.data import groups as groups_lib
from voxseg.engine import checkpoint, finetune, pretrain
from voxseg.errors import VoxsegError
from voxseg.registry import BACKBONES

CONFIG = ROOT / "configs" / "pretrain" / "synthetic_minkunet14a_iscc.yaml"
PREPROCESS = ROOT / "configs" / "preprocess" / "default.yaml"
SMALL = ["stacking.window=4", "stacking.stride=2"]  # windows of 4 scans: the tiny sequences have 6 and 3


@pytest.fixture(scope="module")
def grouped(tiny_dataset, tmp_path_factory):
    """The tiny dataset's groups, by the real preprocessing, in a folder of their own."""
    out = tmp_path_factory.mktemp("pretrain_tool_groups")
    pipeline.run(tiny_dataset, ["00", "01"], pipeline.resolve(PREPROCESS, SMALL), out=out, progress=False)
    return out


def overrides(root, groups, out, steps=3, **extra):
    settings = {"data.root": root, "data.train.groups_root": groups, "data.train.sequences": "[0, 1]",
                "data.train.group_params": "{stacking: {window: 4, stride: 2}}", "output_dir": out,
                "train.max_steps": steps, "train.batch_size": 1, "train.num_workers": 0, "train.progress": "false",
                "train.checkpoint_every": 0, "train.warmup_steps": 1, "train.log_every": 1,
                "model.backbone.voxel_size": 0.4, "model.queue_size": 64, **extra}
    return [f"{k}={v}" for k, v in settings.items()]


def test_pretrain_then_finetune_loads_every_backbone_tensor(tiny_dataset, grouped, tmp_path):
    out = tmp_path / "iscc"
    encoder = pretrain.run(pretrain.resolve(str(CONFIG), overrides(tiny_dataset, grouped, out)))
    assert encoder == out / "checkpoints" / "encoder.pt"
    saved = checkpoint.load(encoder)["model"]
    last = checkpoint.load(out / "checkpoints" / "last.pt")
    assert last["step"] == 3
    # the encoder is the student's backbone (not the teacher's) after the last step
    student = {k: v for k, v in last["model"].items() if k.startswith("backbone.")}
    assert saved.keys() == student.keys() and all(torch.equal(saved[k], student[k]) for k in saved)
    teacher = {k.removeprefix("teacher.backbone."): v
               for k, v in last["model"].items() if k.startswith("teacher.backbone.")}
    assert teacher and any(not torch.equal(teacher[k.removeprefix("backbone.")], v)
                           for k, v in saved.items() if v.is_floating_point())

    fresh = BACKBONES.build({"type": "MinkUNet14A", "in_channels": 1, "voxel_size": 0.4})
    report = checkpoint.load_backbone(fresh, encoder)
    assert not report.missing and not report.unexpected and not report.mismatched
    assert all(torch.equal(fresh.state_dict()[k.removeprefix("backbone.")], v) for k, v in saved.items())

    # fine-tuning from it: the same tensors, reported as loaded with nothing missing
    tuned = tmp_path / "tuned"
    cfg = finetune.resolve(str(ROOT / "configs" / "finetune" / "synthetic_minkunet14a.yaml"), [
        f"data.root={tiny_dataset}", "data.train.sequences=[0]", "data.val.sequences=[1]", f"output_dir={tuned}",
        "train.max_steps=1", "train.batch_size=1", "train.num_workers=0", "train.progress=false",
        "train.val_every=0", "model.backbone.voxel_size=0.4", "train.check_data=sizes"])
    finetune.run(cfg, pretrained=str(encoder))
    summary = (tuned / "pretrained.txt").read_text()
    assert f"loaded {len(saved)} backbone tensors" in summary and "missing" not in summary

    # neither pretraining checkpoint has heads to predict with: one line says what to pass instead
    last_pt = out / "checkpoints" / "last.pt"
    for path, held in ((encoder, "backbone only"), (last_pt, "backbone and pretraining modules")):
        with pytest.raises(VoxsegError) as refused:
            checkpoint.load_predictor(path)
        assert str(refused.value) == (
            f"{path}: a pretraining checkpoint of ISCC ({held}) has no heads to predict with; fine-tune it first "
            f"(tools/finetune.py --pretrained {path}) and pass that run's checkpoints/best.pt")
    predictions = tmp_path / "predictions"
    done = subprocess.run([sys.executable, "tools/infer.py", "--checkpoint", str(encoder),
                           "--dataset", str(tiny_dataset), "--sequences", "01", "--out", str(predictions),
                           "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == (
        f"error: {encoder}: a pretraining checkpoint of ISCC (backbone only) has no heads to predict with; fine-tune "
        f"it first (tools/finetune.py --pretrained {encoder}) and pass that run's checkpoints/best.pt\n")
    assert not predictions.exists()


def test_pretraining_resumes_exactly(tiny_dataset, grouped, tmp_path):
    """4 steps in one run, and 2 then 2 more after --resume, give the same model, byte for byte
    (a constant learning rate, so that the schedule does not depend on max_steps)."""
    constant = {"train.threads": 1, "train.warmup_steps": 0, "train.min_lr_ratio": 1.0}
    whole = tmp_path / "whole"
    pretrain.run(pretrain.resolve(str(CONFIG), overrides(tiny_dataset, grouped, whole, steps=4, **constant)))
    part = tmp_path / "part"
    pretrain.run(pretrain.resolve(str(CONFIG), overrides(tiny_dataset, grouped, part, steps=2, **constant)))
    pretrain.run(pretrain.resolve(str(CONFIG), overrides(tiny_dataset, grouped, part, steps=4, **constant)),
                 resume=True, allow_config_change=True)
    a = checkpoint.load(whole / "checkpoints" / "last.pt")["model"]
    b = checkpoint.load(part / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]  # student, teacher, prototypes and the queue alike
    assert int(a["queue.fill"]) > 0


def test_tensorboard_has_every_term_the_prototype_entropy_and_the_queue_fill(tiny_dataset, grouped, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb_run"
    pretrain.run(pretrain.resolve(str(CONFIG),
                                  overrides(tiny_dataset, grouped, out, steps=2, **{"model.queue_size": 4096})))
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    wanted = {"train/loss", "train/loss_local", "train/loss_global", "train/loss_occupancy",
              "train/prototype_entropy", "train/queue_fill"}
    assert wanted <= tags, wanted - tags
    fills = [e.value for e in events.Scalars("train/queue_fill")]
    assert len(fills) == 2 and 0 < fills[0] < fills[1] <= 4096  # the queue fills step by step


def test_a_dataset_without_groups_is_one_error_line_naming_the_folder(tiny_dataset, tmp_path):
    out = tmp_path / "never"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "pretrain.py"), "--config", str(CONFIG),
         *overrides(tiny_dataset, tmp_path / "no_groups", out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(tmp_path / "no_groups") in lines[0]
    assert not out.exists()  # nothing written


def test_groups_made_with_other_parameters_are_refused(tiny_dataset, grouped, tmp_path):
    from voxseg.errors import VoxsegError

    out = tmp_path / "other"
    cfg = pretrain.resolve(str(CONFIG), overrides(tiny_dataset, grouped, out, **{
        "data.train.group_params": "{stacking: {window: 12, stride: 4}}"}))
    with pytest.raises(VoxsegError, match="window"):
        pretrain.run(cfg)
    assert not out.exists()


@pytest.fixture(scope="module")
def unshared(grouped, tmp_path_factory):
    """Sequence 01's groups with one group per scan, a different id in each scan of a window:
    no group id is ever in both views of a pair."""
    out = tmp_path_factory.mktemp("unshared_groups")
    folder = out / "sequences" / "01" / "groups"
    shutil.copytree(grouped / "sequences" / "01" / "groups", folder)
    for window in sorted((folder / groups_lib.WINDOWS).glob("*.npz")):
        start, frames, counts = groups_lib.read_window_index(window)
        groups_lib.write_window(window, start, frames, [np.full(n, k) for k, n in enumerate(counts)])
    return out


def test_pairs_that_share_no_group_are_refused_before_anything_is_written(tiny_dataset, unshared, tmp_path):
    """Pairs without a shared group give ISCC loss and gradient exactly 0: the first steps' pairs
    (here all 3 steps of a 3-step run, batch 1, in the sampler's order) are named, nothing written."""
    out = tmp_path / "zero"
    cfg = pretrain.resolve(str(CONFIG), overrides(tiny_dataset, unshared, out, **{"data.train.sequences": "[1]"}))
    with pytest.raises(VoxsegError) as refused:
        pretrain.run(cfg)
    first = [f"01/{i:06d}" for i in np.random.default_rng([0, 0]).permutation(3)]  # EpochSampler, seed 0, epoch 0
    pairs = ", ".join(rf"{x} with 01/00000[012]" for x in first)
    assert re.fullmatch(
        rf"{re.escape(str(unshared))}: no group id appears in both views of any pair of the first 3 step\(s\) "
        rf"\({pairs}\), so ISCC would train nothing \(loss and gradient 0\); check preprocessing's groups "
        r"\(ground removal may have left one group per scan\)", str(refused.value)), str(refused.value)
    assert not out.exists()


def test_torchrun_with_two_gloo_processes(tiny_dataset, grouped, tmp_path):
    """torchrun pretrains data-parallel as fine-tuning does: one writer, the world size recorded,
    the teacher updated on every rank (DDP leaves it alone: it has no gradients), an encoder."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out = tmp_path / "ddp"
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "tools" / "pretrain.py"), "--config", str(CONFIG),
         *overrides(tiny_dataset, grouped, out, steps=2, **{"train.threads": 1})],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("pretraining on 9 scans") == 1 and "2 processes (gloo), global batch 2" in ddp.stdout
    last = checkpoint.load(out / "checkpoints" / "last.pt")
    assert last["step"] == 2 and last["config"]["train"]["world_size"] == 2
    encoder = checkpoint.load(out / "checkpoints" / "encoder.pt")["model"]
    assert all(torch.equal(v, last["model"][k]) for k, v in encoder.items())
    # the teacher is a separate, lagging copy: two EMA steps behind the student, not equal to it
    assert last["config"]["model"]["momentum"] < 1
    student, teacher = last["model"]["backbone.stem.0.kernel"], last["model"]["teacher.backbone.stem.0.kernel"]
    assert student.shape == teacher.shape and not torch.equal(student, teacher)
