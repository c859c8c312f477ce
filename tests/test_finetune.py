"""Fine-tuning end to end on a tiny synthetic dataset: outputs, resume, pretrained weights, learning."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import ROOT
from voxseg.engine import checkpoint, finetune
from voxseg.errors import VoxsegError

CONFIG = ROOT / "configs" / "finetune" / "synthetic_minkunet14a.yaml"


def overrides(root, out, **extra):
    base = {
        "data.root": str(root), "data.train.sequences": "[0]", "data.val.sequences": "[1]",
        "model.backbone.voxel_size": 0.4, "train.batch_size": 1, "train.num_workers": 0, "train.max_steps": 6,
        "train.warmup_steps": 2, "train.val_every": 3, "train.checkpoint_every": 2, "train.progress": "false",
        "train.threads": 1, "output_dir": str(out),
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run(root, out, resume=False, pretrained=None, **extra):
    cfg = finetune.resolve(str(CONFIG), overrides(root, out, **extra))
    return cfg, finetune.run(cfg, resume=resume, pretrained=pretrained)


def test_run_writes_everything(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    cfg, result = run(tiny_dataset, out, **{"train.label_fraction": 0.5})
    # the resolved config repeats the run: loading it again gives the same config
    assert finetune.resolve(str(out / "config.yaml"), []) == cfg
    assert (out / "label_subset.txt").read_text().split() == [
        f"00/{i:06d}" for i in finetune.select_subset([""] * 6, 0.5, 0)
    ]
    assert len((out / "label_subset.txt").read_text().split()) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"miou", "accuracy", "iou_per_class", "best_miou", "best_step"} <= set(metrics)
    assert metrics["step"] == 6 and len(metrics["iou_per_class"]) == 12
    last = checkpoint.load(out / "checkpoints" / "last.pt")
    assert last["step"] == 6 and last["config"] == cfg
    assert (out / "checkpoints" / "best.pt").exists()
    assert list((out / "tb").glob("events.out.tfevents.*"))
    with pytest.raises(VoxsegError, match="holds a run already; pass --resume"):
        run(tiny_dataset, out)


def test_pretrained_backbone_loading(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run(tiny_dataset, tmp_path / "src", **{"train.max_steps": 2, "train.val_every": 0})
    source = tmp_path / "src" / "checkpoints" / "last.pt"
    from voxseg.registry import BACKBONES

    same = BACKBONES.build({"type": "MinkUNet14A", "in_channels": 1, "voxel_size": 0.4})
    report = checkpoint.load_backbone(same, source)
    assert not report.missing and not report.unexpected and not report.mismatched
    saved = checkpoint.load(source)["model"]
    assert torch.equal(same.state_dict()["stem.0.kernel"], saved["backbone.stem.0.kernel"])

    wider_input = BACKBONES.build({"type": "MinkUNet14A", "in_channels": 2})
    report = checkpoint.load_backbone(wider_input, source)
    assert report.mismatched == ["stem.0.kernel"]
    deeper = BACKBONES.build({"type": "MinkUNet18A", "in_channels": 1})
    report = checkpoint.load_backbone(deeper, source)
    assert report.missing and any(".1." in k for k in report.missing)  # the second block of each stage

    _, _ = run(tiny_dataset, tmp_path / "ft", pretrained=str(source), **{"train.max_steps": 1, "train.val_every": 0})
    assert "loaded" in (tmp_path / "ft" / "pretrained.txt").read_text()


@pytest.mark.parametrize("bad", ["train.max_stepz=3", "model.backbone.voxel_size=fine"])
def test_cli_config_errors_are_one_line(tmp_path, bad):
    done = subprocess.run([sys.executable, "tools/finetune.py", "--config", str(CONFIG.relative_to(ROOT)), bad],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: command line: ")
    assert bad.split("=")[0] in done.stderr


def test_cli_names_the_bad_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"_base_": str(CONFIG), "train": {"lr": "fast"}}))
    done = subprocess.run([sys.executable, "tools/finetune.py", "--config", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert f"{bad}: train.lr: expected float, got str 'fast'" in done.stderr


def test_model_learns_a_scan(tiny_dataset, tmp_path, monkeypatch):
    """Forty steps on one scan take its point accuracy far above the majority class share."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "overfit"
    cfg = finetune.resolve(str(CONFIG), overrides(
        tiny_dataset, out, **{"data.val.sequences": "[0]", "train.max_steps": 40, "train.val_every": 0,
                              "train.lr": 0.01, "train.warmup_steps": 5, "data.train.transforms": "[]",
                              "model.backbone.voxel_size": 0.3}))
    dataset = finetune.build_datasets(cfg)[0]
    finetune.run(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    segment = np.concatenate([dataset[i]["segment"] for i in range(len(dataset))])
    majority = np.bincount(segment[segment >= 0]).max() / (segment >= 0).sum()
    assert metrics["accuracy"] > majority + 0.25
    assert metrics["miou"] > 0.3

    # tools/infer.py + tools/evaluate.py on the same scans reproduce the run's final validation
    pred = tmp_path / "pred"
    done = subprocess.run([sys.executable, "tools/infer.py", "--checkpoint", str(out / "checkpoints" / "last.pt"),
                           "--dataset", str(tiny_dataset), "--sequences", "00", "--out", str(pred)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    files = sorted((pred / "sequences" / "00" / "predictions").glob("*.label"))
    assert [f.stem for f in files] == [f"{i:06d}" for i in range(6)]
    done = subprocess.run([sys.executable, "tools/evaluate.py", "--gt-labels", str(tiny_dataset / "sequences" / "00" / "labels"),
                           "--pred-labels", str(files[0].parent), "--label-config", "configs/labels/synthetic.yaml",
                           "--out", str(pred / "metrics.json")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    scored = json.loads((pred / "metrics.json").read_text())
    assert scored["miou"] == pytest.approx(metrics["miou"], abs=1e-6)
    assert scored["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)

    # a truncated scan: one error line naming it, no traceback
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dataset / "sequences" / "01", broken / "sequences" / "01")
    scan = broken / "sequences" / "01" / "velodyne" / "000001.bin"
    scan.write_bytes(scan.read_bytes()[:-3])
    done = subprocess.run([sys.executable, "tools/infer.py", "--checkpoint", str(out / "checkpoints" / "last.pt"),
                           "--dataset", str(broken), "--sequences", "01", "--out", str(tmp_path / "pred2")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert f"{scan}: " in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "finetune").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_resolves_and_builds(path):
    """Each config in configs/finetune validates and its model builds with the heads it names."""
    from voxseg.registry import MODELS

    cfg = finetune.resolve(str(path), [])
    model = MODELS.build(cfg["model"])
    assert set(model.heads) == set(cfg["model"]["heads"])
    if path.stem.startswith("synthetic_minkunet14a_asis"):
        head = model.heads["asis"]
        switches = (head.adapt is not None, head.instance_fusion)
        expected = {"asis": (True, True), "asis_vanilla": (False, False), "asis_sa": (True, False),
                    "asis_if": (False, True)}[path.stem.removeprefix("synthetic_minkunet14a_")]
        assert switches == expected
