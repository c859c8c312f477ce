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

from tests.helpers import FINETUNE_CONFIG, PRETRAIN_CONFIG, ROOT, finetune_overrides
from voxseg.engine import checkpoint, finetune, pretrain
from voxseg.errors import VoxsegError

PARTIAL = "; pass --allow-partial-pretrained to load the matching tensors anyway"


def run(root, out, resume=False, pretrained=None, **extra):
    cfg = finetune.resolve(str(FINETUNE_CONFIG), finetune_overrides(root, out, **extra))
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
    with pytest.raises(VoxsegError) as refused:
        checkpoint.load_backbone(wider_input, source)
    assert str(refused.value) == (f"{source}: backbone tensors do not fit the model's MinkUNet14A: 1 of another shape "
                                  f"(stem.0.kernel [125, 1, 32] vs [125, 2, 32]){PARTIAL}")
    report = checkpoint.load_backbone(wider_input, source, allow_partial=True)
    assert report.mismatched == ["stem.0.kernel"] and len(report.loaded) == 191
    deeper = BACKBONES.build({"type": "MinkUNet18A", "in_channels": 1})
    report = checkpoint.load_backbone(deeper, source, allow_partial=True)
    assert report.missing and any(".1." in k for k in report.missing)  # the second block of each stage

    _, _ = run(tiny_dataset, tmp_path / "ft", pretrained=str(source), **{"train.max_steps": 1, "train.val_every": 0})
    assert "loaded" in (tmp_path / "ft" / "pretrained.txt").read_text()


def encoder_file(path, backbone="MinkUNet14A", features="[intensity]"):
    """An untrained encoder.pt as pretraining writes it (pretrain.EncoderHook): a `backbone` built
    for `features`, with the pretraining run's resolved config."""
    from types import SimpleNamespace

    from voxseg.registry import BACKBONES

    cfg = pretrain.resolve(str(PRETRAIN_CONFIG), [f"model.backbone.type={backbone}", f"data.train.features={features}",
                                                  "model.backbone.voxel_size=0.4"])
    model = SimpleNamespace(backbone=BACKBONES.build(cfg["model"]["backbone"]))
    pretrain.EncoderHook(path, cfg).after_train(SimpleNamespace(step=0, model=model))
    return path


RANGE = {"data.train.features": "[range]", "data.val.features": "[range]"}


@pytest.mark.parametrize("encoder, model, expected", [
    (("MinkUNet18A", "[intensity]"), {}, "backbone MinkUNet18A (in_channels 1, features [intensity]) does not fit "
                                         "the model's MinkUNet14A (in_channels 1, features [intensity])"),
    (("MinkUNet14A", "[intensity]"), {"model.backbone.type": "MinkUNet14C"},
     "backbone MinkUNet14A (in_channels 1, features [intensity]) does not fit the model's MinkUNet14C "
     "(in_channels 1, features [intensity])"),
    (("MinkUNet14A", "[intensity]"), RANGE, "backbone MinkUNet14A (in_channels 1, features [intensity]) does not fit "
                                            "the model's MinkUNet14A (in_channels 1, features [range])"),
], ids=["18A_into_14A", "14A_into_14C", "intensity_into_range"])
def test_a_pretrained_backbone_that_does_not_fit_is_refused_before_anything_is_written(
        tiny_dataset, tmp_path, monkeypatch, encoder, model, expected):
    monkeypatch.chdir(ROOT)
    source = encoder_file(tmp_path / "encoder.pt", *encoder)
    out = tmp_path / "run"
    with pytest.raises(VoxsegError) as refused:
        run(tiny_dataset, out, pretrained=str(source), **model)
    assert str(refused.value) == f"{source}: {expected}{PARTIAL}"
    assert not out.exists()


def test_pretrained_tensors_of_another_shape_are_refused(tiny_dataset, tmp_path, monkeypatch):
    """A file whose config fits the model but whose tensors do not (written by hand)."""
    monkeypatch.chdir(ROOT)
    source = encoder_file(tmp_path / "encoder.pt")
    data = torch.load(source, weights_only=False)
    data["model"]["backbone.stem.0.kernel"] = torch.zeros(125, 2, 32)
    del data["model"]["backbone.decoder.3.0.downsample.1.bn.bias"]
    torch.save(data, source)
    out = tmp_path / "run"
    with pytest.raises(VoxsegError) as refused:
        run(tiny_dataset, out, pretrained=str(source))
    assert str(refused.value) == (
        f"{source}: backbone tensors do not fit the model's MinkUNet14A (in_channels 1, features [intensity]): "
        "1 missing (decoder.3.0.downsample.1.bn.bias), "
        f"1 of another shape (stem.0.kernel [125, 2, 32] vs [125, 1, 32]){PARTIAL}")
    assert not out.exists()


def test_allow_partial_pretrained_loads_the_matching_tensors(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    from voxseg.registry import BACKBONES

    source = encoder_file(tmp_path / "encoder.pt")
    # 14A into 14C: the 80 tensors of other widths stay random, the other 112 of 192 load
    narrow = BACKBONES.build({"type": "MinkUNet14C", "in_channels": 1})
    record = checkpoint.BackboneRecord("MinkUNet14C", 1, ("intensity",))
    report = checkpoint.load_backbone(narrow, source, record, allow_partial=True)
    assert (len(report.loaded), len(report.mismatched), report.missing, report.unexpected) == (112, 80, [], [])
    saved = checkpoint.load(source)["model"]
    assert all(torch.equal(narrow.state_dict()[k], saved[f"backbone.{k}"]) for k in report.loaded)

    # an [intensity] encoder into a [range] model: every tensor fits, the run says what it allowed
    out = tmp_path / "run"
    cfg = finetune.resolve(str(FINETUNE_CONFIG), finetune_overrides(tiny_dataset, out, **RANGE, **{"train.max_steps": 1,
                                                                                   "train.val_every": 0}))
    finetune.run(cfg, pretrained=str(source), allow_partial_pretrained=True)
    assert (out / "pretrained.txt").read_text() == (
        f"{source}\npartial load allowed: backbone MinkUNet14A (in_channels 1, features [intensity]) does not fit the "
        "model's MinkUNet14A (in_channels 1, features [range])\nloaded 192 backbone tensors\n")


@pytest.mark.parametrize("content, reason", [(b"", "EOFError: Ran out of input"),
                                             (b"not a checkpoint", "UnpicklingError: invalid load key, 'n'.")],
                         ids=["empty", "random_bytes"])
def test_an_unreadable_pretrained_file_is_refused_before_anything_is_written(tiny_dataset, tmp_path, monkeypatch,
                                                                             content, reason):
    monkeypatch.chdir(ROOT)
    source = tmp_path / "encoder.pt"
    source.write_bytes(content)
    out = tmp_path / "run"
    with pytest.raises(VoxsegError) as refused:
        run(tiny_dataset, out, pretrained=str(source))
    assert str(refused.value) == f"{source}: not a voxseg checkpoint ({reason})"
    assert not out.exists()


def test_cli_refuses_a_misfit_pretrained_backbone_in_one_line_and_leaves_the_folder_as_it_was(tiny_dataset, tmp_path):
    source = encoder_file(tmp_path / "encoder.pt", "MinkUNet18A")
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_bytes(b"the user's own file\n")
    done = subprocess.run([sys.executable, "tools/finetune.py", "--config", str(FINETUNE_CONFIG),
                           "--pretrained", str(source), *finetune_overrides(tiny_dataset, out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == (f"error: {source}: backbone MinkUNet18A (in_channels 1, features [intensity]) does not "
                           f"fit the model's MinkUNet14A (in_channels 1, features [intensity]){PARTIAL}\n")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_bytes() == b"the user's own file\n"


@pytest.mark.parametrize("bad", ["train.max_stepz=3", "model.backbone.voxel_size=fine"])
def test_cli_config_errors_are_one_line(tmp_path, bad):
    done = subprocess.run([sys.executable, "tools/finetune.py", "--config", str(FINETUNE_CONFIG.relative_to(ROOT)),
                           bad],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: command line: ")
    assert bad.split("=")[0] in done.stderr


def test_cli_names_the_bad_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"_base_": str(FINETUNE_CONFIG), "train": {"lr": "fast"}}))
    done = subprocess.run([sys.executable, "tools/finetune.py", "--config", str(bad)], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert f"{bad}: train.lr: expected float, got str 'fast'" in done.stderr


def test_model_learns_a_scan(tiny_dataset, tmp_path, monkeypatch):
    """Forty steps on one scan take its point accuracy far above the majority class share."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "overfit"
    cfg = finetune.resolve(str(FINETUNE_CONFIG), finetune_overrides(
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
                           "--dataset", str(tiny_dataset), "--sequences", "00", "--out", str(pred), "--threads", "1"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    files = sorted((pred / "sequences" / "00" / "predictions").glob("*.label"))
    assert [f.stem for f in files] == [f"{i:06d}" for i in range(6)]
    done = subprocess.run([sys.executable, "tools/evaluate.py",
                           "--gt-labels", str(tiny_dataset / "sequences" / "00" / "labels"),
                           "--pred-labels", str(files[0].parent), "--label-config", "configs/labels/synthetic.yaml",
                           "--out", str(pred / "metrics.json")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    scored = json.loads((pred / "metrics.json").read_text())
    assert scored["miou"] == pytest.approx(metrics["miou"], abs=1e-6)
    assert scored["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)

    # a model validated on a sample of the sequence (frame_stride) still predicts every scan of it
    sampled = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    sampled["config"]["data"]["val"]["frame_stride"] = 4
    torch.save(sampled, tmp_path / "sampled.pt")
    done = subprocess.run([sys.executable, "tools/infer.py", "--checkpoint", str(tmp_path / "sampled.pt"),
                           "--dataset", str(tiny_dataset), "--sequences", "00", "--out", str(tmp_path / "pred3"),
                           "--threads", "1"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    again = sorted((tmp_path / "pred3" / "sequences" / "00" / "predictions").glob("*.label"))
    assert [f.read_bytes() for f in again] == [f.read_bytes() for f in files]

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
                    "asis_if": (False, True), "asis_warmup": (True, True),
                    }[path.stem.removeprefix("synthetic_minkunet14a_")]
        assert switches == expected
        assert head.fusion_warmup_steps == (200 if path.stem.endswith("_warmup") else 0)
