"""Plain constants and functions the tests share (pytest fixtures live in conftest.py): the
repository's paths and configs, fine-tuning overrides for the tiny synthetic dataset, random
batches, the ASIS heads' hand-made scan, running a tool, read-only dataset folders, and the
fine-tune -> infer -> evaluate check."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC_LABELS = ROOT / "configs" / "labels" / "synthetic.yaml"
KITTI_LABELS = ROOT / "configs" / "labels" / "semantic-kitti.yaml"
#: A small Segmentor config: MinkUNet14A (2 input channels, 0.5 m voxels), a 5-class semantic head, CE.
SEGMENTOR = {
    "type": "Segmentor",
    "backbone": {"type": "MinkUNet14A", "in_channels": 2, "voxel_size": 0.5},
    "heads": {"semantic": {"type": "SemanticHead", "num_classes": 5}},
    "losses": {"ce": {"type": "CrossEntropyLoss", "head": "semantic"}},
}
FINETUNE_CONFIG = ROOT / "configs" / "finetune" / "synthetic_minkunet14a.yaml"
PRETRAIN_CONFIG = ROOT / "configs" / "pretrain" / "synthetic_minkunet14a_iscc.yaml"
ASIS_CONFIG = ROOT / "configs" / "finetune" / "synthetic_minkunet14a_asis.yaml"


def finetune_overrides(root, out, **extra) -> list[str]:
    """KEY=VALUE overrides for a short semantic run on the tiny dataset: train on sequence 00,
    validate on 01, six steps; `extra` adds or replaces settings."""
    base = {
        "data.root": str(root), "data.train.sequences": "[0]", "data.val.sequences": "[1]",
        "model.backbone.voxel_size": 0.4, "train.batch_size": 1, "train.num_workers": 0, "train.max_steps": 6,
        "train.warmup_steps": 2, "train.val_every": 3, "train.checkpoint_every": 2, "train.progress": "false",
        "train.threads": 1, "output_dir": str(out),
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def asis_overrides(root, out, **extra) -> list[str]:
    """Overrides for ASIS_CONFIG on the tiny dataset: eight steps, no augmentation, instances of
    at least five points; `extra` adds or replaces settings."""
    base = {
        "data.root": str(root), "data.train.sequences": "[0]", "data.val.sequences": "[1]",
        "model.backbone.voxel_size": 0.4, "train.batch_size": 1, "train.num_workers": 0, "train.max_steps": 8,
        "train.warmup_steps": 2, "train.val_every": 0, "train.checkpoint_every": 4, "train.progress": "false",
        "train.threads": 1, "train.lr": 0.01, "data.train.transforms": "[]",
        "model.heads.asis.min_instance_points": 5, "evaluator.min_region_size": 5, "output_dir": str(out),
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def asis_hand_made_scan() -> tuple[dict[str, torch.Tensor], SimpleNamespace, dict[str, torch.Tensor], torch.Tensor]:
    """The hand-made scan of the ASIS-style heads' predict tests: six voxels of one scan (20, 20,
    10, 20, 20, 20 points); voxels 0, 1 and 3 close in embedding space (class 0 leads on 0 and 1,
    class 1 on 3), voxel 2 far away (class 0), voxels 4 and 5 stuff (class 2). Returns the head
    outputs (per point and per voxel), the backbone features, the batch and `inverse` (point ->
    voxel)."""
    points_per_voxel = torch.tensor([20, 20, 10, 20, 20, 20])
    inverse = torch.repeat_interleave(torch.arange(6), points_per_voxel)
    voxel_logits = torch.tensor([[4.0, 0, 0], [3.0, 0, 0], [2.0, 0, 0], [0, 3.0, 0], [0, 0, 5.0], [0, 0, 5.0]])
    voxel_embedding = torch.tensor([[0.0, 0], [0.1, 0], [5.0, 5.0], [0.2, 0.1], [0.0, 0], [0.0, 0]])
    outputs = {"logits": voxel_logits[inverse], "embedding": voxel_embedding[inverse],
               "voxel_logits": voxel_logits, "voxel_embedding": voxel_embedding}
    features = SimpleNamespace(voxel_batch=torch.zeros(6, dtype=torch.long), inverse=inverse)
    return outputs, features, {"batch": torch.zeros(len(inverse), dtype=torch.long)}, inverse


def random_batch(rng: np.random.Generator, sizes=(1500, 900), channels=2, extent=12.0) -> dict[str, torch.Tensor]:
    """A collated batch of len(sizes) scans of uniformly random points with normal features."""
    coord = np.concatenate([rng.uniform(-extent, extent, (n, 3)) for n in sizes]).astype(np.float32)
    return {
        "coord": torch.from_numpy(coord),
        "feat": torch.from_numpy(rng.normal(size=(sum(sizes), channels)).astype(np.float32)),
        "batch": torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
    }


def cli(*args) -> subprocess.CompletedProcess:
    """`python ARGS...` in the repository root, output captured as text."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)


# ------------------------------------------------------------------------- read-only folders
# Tests may run as root, for whom `chmod a-w` does not stop writes, so a test asserts that the
# folder's snapshot is unchanged: every path with its type, size, content hash and modification
# time (a folder's changes whenever an entry is created, renamed or removed, a temporary file
# included).
def snapshot(root: Path) -> dict[str, tuple]:
    """relative path -> ("dir", mtime_ns, sorted entries) or ("file", size, sha256, mtime_ns), for
    `root` and everything under it."""
    found = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        name = str(path.relative_to(root))
        if stat.S_ISDIR(info.st_mode):
            found[name] = ("dir", info.st_mtime_ns, sorted(p.name for p in path.iterdir()))
        else:
            found[name] = ("file", info.st_size, hashlib.sha256(path.read_bytes()).hexdigest(), info.st_mtime_ns)
    return found


@contextlib.contextmanager
def read_only(root: Path) -> Iterator[dict[str, tuple]]:
    """`chmod -R a-w root` for the duration (write permission restored after, so pytest can delete
    the folder); yields the snapshot taken once the permissions are gone."""
    paths = [root, *root.rglob("*")]
    modes = {p: p.lstat().st_mode for p in paths}
    for p in paths:
        os.chmod(p, stat.S_IMODE(modes[p]) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield snapshot(root)
    finally:
        for p in reversed(paths):
            os.chmod(p, stat.S_IMODE(modes[p]))


# ------------------------------------------------------------- fine-tune -> infer -> evaluate
def same_metric(a: float, b: float) -> bool:
    """Equal up to 1e-6, both NaN counting as equal (a metric with nothing to score is NaN)."""
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6)


def check_instance_predictions_reproduce_the_run(run: Path, dataset: Path, out: Path, tasks: dict[str, tuple[str, ...]],
                                                  sequence: str = "01") -> None:
    """tools/infer.py on `run`'s last checkpoint writes, per scan of `sequence`, a panoptic .label
    file and a scores side file: instance ids only on thing-class points, one class per instance,
    one score in (0, 1] per instance, and instances at all (else those checks are vacuous); then
    tools/evaluate.py --task TASK on the files gives, for each of `tasks[TASK]`, the number the
    run's own final validation wrote to metrics.json (`sequence` must be the run's validation
    split)."""
    from voxseg.data import semantic_kitti as sk
    from voxseg.data.labels import LabelConfig

    metrics = json.loads((run / "metrics.json").read_text())
    pred = out / "pred"
    done = cli("tools/infer.py", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--dataset", str(dataset),
               "--sequences", sequence, "--out", str(pred), "--threads", "1")
    assert done.returncode == 0, done.stderr
    labels = LabelConfig.load(SYNTHETIC_LABELS)
    things = {labels.learning_map_inv[c] for c in labels.thing_learn_ids}
    folder = pred / "sequences" / sequence
    frames = sorted(p.stem for p in (dataset / "sequences" / sequence / "velodyne").glob("*.bin"))
    assert sorted(p.stem for p in (folder / "predictions").glob("*.label")) == frames
    instances = 0
    for frame in frames:
        semantic, instance = sk.read_label(folder / "predictions" / f"{frame}.label")
        scores = sk.read_instance_scores(folder / "scores" / f"{frame}.txt")
        assert set(np.unique(semantic[instance > 0]).tolist()) <= things
        assert sorted(scores) == sorted(set(np.unique(instance).tolist()) - {0})
        for i in scores:
            assert len(np.unique(semantic[instance == i])) == 1 and 0 < scores[i] <= 1
        instances += len(scores)
    assert instances > 0, "no scan of the predictions holds an instance: the checks above were vacuous"

    for task, keys in tasks.items():
        done = cli("tools/evaluate.py", "--task", task, "--gt-labels", str(dataset / "sequences" / sequence / "labels"),
                   "--pred-labels", str(folder / "predictions"), "--label-config", str(SYNTHETIC_LABELS),
                   "--min-region-size", "5", "--out", str(out / f"{task}.json"))
        assert done.returncode == 0, done.stderr
        scored = json.loads((out / f"{task}.json").read_text())
        for key in keys:
            assert same_metric(scored[key], metrics[key]), (task, key, scored[key], metrics[key])


# A stand-in `torch` package for the shell scripts' tests (install.sh, tools/gpu_check.sh): its
# version, CUDA version and GPUs come from FAKE_TORCH ("missing": the import fails), FAKE_CUDA
# (empty: a CPU build) and FAKE_GPUS (count; device i has capability (9,0), (8,6), (9,0)).
FAKE_TORCH = '''import os
if os.environ.get("FAKE_TORCH") == "missing":
    raise ImportError("fake: no torch")
__version__ = os.environ.get("FAKE_TORCH", "2.11.0+cu130")
class version:
    cuda = os.environ.get("FAKE_CUDA", "13.0") or None
class cuda:
    @staticmethod
    def is_available():
        return int(os.environ.get("FAKE_GPUS", "0")) > 0
    @staticmethod
    def device_count():
        return int(os.environ.get("FAKE_GPUS", "0"))
    @staticmethod
    def get_device_capability(i):
        return [(9, 0), (8, 6), (9, 0)][i]
'''


def fake_torch(root: Path) -> Path:
    """ROOT/fake holding the FAKE_TORCH package: a PYTHONPATH entry."""
    (root / "fake" / "torch").mkdir(parents=True, exist_ok=True)
    (root / "fake" / "torch" / "__init__.py").write_text(FAKE_TORCH)
    return root / "fake"
