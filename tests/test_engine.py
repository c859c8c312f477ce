"""Engine parts: EMA of weights, parameter groups, deferred interrupts, config comparison,
checkpoint files, devices."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from tests.helpers import ROOT
from voxseg import distributed
from voxseg.engine import checkpoint, device as device_lib
from voxseg.engine.ema import ModelEMA
from voxseg.engine.interrupt import deferred_interrupts
from voxseg.engine.optim import build_optimizer, build_scheduler, param_groups
from voxseg.errors import ConfigError, VoxsegError


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_ema_update_is_the_momentum_average():
    model = small_net()
    ema = ModelEMA(model, momentum=0.9)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    model.train()
    model(torch.randn(8, 3)).sum().backward()  # updates the student's BN statistics
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    after, student = ema.module.state_dict(), model.state_dict()
    for key, value in after.items():
        if value.is_floating_point():
            expected = before[key].clone().mul_(0.9).add_(student[key], alpha=0.1)
            assert torch.equal(value, expected), key
        else:  # num_batches_tracked is copied
            assert torch.equal(value, student[key]), key
    assert after["1.num_batches_tracked"].item() == 1
    assert not any(p.requires_grad for p in ema.module.parameters())
    ema.train()
    assert not ema.module.training  # the average stays in evaluation mode


def test_ema_does_not_share_storage_with_the_student():
    model = small_net()
    ema = ModelEMA(model, momentum=0.5)
    model.train()
    model(torch.randn(8, 3))  # student forward: its BN statistics move, the EMA's do not
    assert not torch.equal(model[1].running_mean, ema.module[1].running_mean)
    assert torch.equal(ema.module[1].running_mean, torch.zeros(4))
    with pytest.raises(ValueError, match="momentum"):
        ModelEMA(model, momentum=1.5)


def test_param_groups_by_pattern():
    model = small_net()
    groups = param_groups(model, [{"params": "0.*", "lr": 0.1}, {"params": "*.bias", "weight_decay": 0.0}],
                          lr=1.0, weight_decay=0.5)
    assert [g["name"] for g in groups] == ["0.*", "*.bias", "default"]
    assert [len(g["params"]) for g in groups] == [2, 2, 2]  # 0.weight/0.bias; 1.bias, 3.bias; 1.weight, 3.weight
    assert groups[1]["params"][0] is model[1].bias and groups[2]["params"][1] is model[3].weight
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(0.1, 0.5), (1.0, 0.0), (1.0, 0.5)]
    with pytest.raises(ConfigError, match=r"train.param_groups.1.params: 'head.\*' matches no trainable parameter"):
        param_groups(model, [{"params": "0.*"}, {"params": "head.*"}], lr=1.0, weight_decay=0.0)


def test_schedule_scales_each_group():
    model = small_net()
    train = {"param_groups": [{"params": "0.*", "lr": 0.01}], "lr": 0.1, "weight_decay": 0.0, "optimizer": "adamw",
             "warmup_steps": 2, "max_steps": 10, "min_lr_ratio": 0.0}
    optimizer = build_optimizer(model, train)
    scheduler = build_scheduler(optimizer, train)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.005, 0.05])  # warm-up step 1 of 2
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    ratio = optimizer.param_groups[0]["lr"] / optimizer.param_groups[1]["lr"]
    assert ratio == pytest.approx(0.1)


def test_interrupts_are_deferred_then_forced():
    original = signal.getsignal(signal.SIGINT)
    with deferred_interrupts() as stop:
        assert stop.requested is None
        signal.raise_signal(signal.SIGINT)  # would raise KeyboardInterrupt outside the block
        assert stop.requested == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)  # a second signal stops at once
    assert signal.getsignal(signal.SIGINT) is original


def test_config_differences():
    saved = {"model": {"backbone": {"voxel_size": 0.1}}, "train": {"lr": 1.0, "seed": 0}, "x": [1, 2]}
    current = {"model": {"backbone": {"voxel_size": 0.2}}, "train": {"lr": 1.0}, "x": [1, 3], "new": 1}
    assert checkpoint.config_differences(saved, current) == ["model.backbone.voxel_size", "new", "train.seed", "x"]


class ScoreEvaluator:
    """Mean of the predicted `score` over the scans added."""

    METRICS = ("score",)

    def __init__(self):
        self.values = []

    def add(self, pred, sample):
        self.values.append(pred["score"])

    def result(self):
        return {"score": float(np.mean(self.values))}

    def summary(self, result):  # the Evaluator contract (voxseg.contracts)
        return f"score {result['score']}"


def test_best_is_decided_on_the_same_scans_every_time(tmp_path, monkeypatch):
    """Scan 0 is the validation subset (max_scans=1). At step 2 it scores 0.6; at the end (step 4)
    scan 0 scores 0.5 while the mean over all scans is 0.7. Comparing the final all-scan 0.7 with
    step 2's subset 0.6 would crown step 4; on the same scans step 2 is best."""
    from voxseg.engine import hooks

    scores = {2: [0.6, 0.1, 0.1], 4: [0.5, 0.8, 0.8]}

    def fake_predict(model, dataset, device, indices):
        for i in indices:
            yield str(i), {"score": scores[trainer.step][i]}, {}

    saved = []
    monkeypatch.setattr(hooks, "predict", fake_predict)
    monkeypatch.setattr(hooks.checkpoint, "save", lambda path, trainer, config: saved.append((path.name, trainer.step)))
    hook = hooks.ValidationHook([0, 1, 2], ScoreEvaluator, every=2, checkpoint_dir=tmp_path,
                                metrics_path=tmp_path / "m.json", config={}, key_metric="score", mode="max",
                                max_scans=1)
    trainer = SimpleNamespace(step=0, max_steps=4, state={}, model=None, device=None, log=lambda scalars: None,
                              ctx=distributed.Context())
    hook.before_train(trainer)
    trainer.step = 2
    hook.after_step(trainer, {})
    trainer.step = 4
    hook.after_train(trainer)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert saved == [("best.pt", 2)]
    assert metrics["best_score"] == 0.6 and metrics["best_step"] == 2
    assert metrics["score"] == pytest.approx(0.7)  # the final metrics score every scan
    assert trainer.state["last_val"]["score"] == pytest.approx(0.7)


def test_best_follows_the_metric_direction(tmp_path, monkeypatch):
    from voxseg.engine import hooks

    scores = {2: [0.6], 4: [0.5]}
    monkeypatch.setattr(hooks, "predict",
                        lambda m, d, dev, idx: ((str(i), {"score": scores[trainer.step][i]}, {}) for i in idx))
    saved = []
    monkeypatch.setattr(hooks.checkpoint, "save", lambda path, trainer, config: saved.append(trainer.step))
    hook = hooks.ValidationHook([0], ScoreEvaluator, every=2, checkpoint_dir=tmp_path, metrics_path=tmp_path / "m.json",
                                config={}, key_metric="score", mode="min")
    trainer = SimpleNamespace(step=2, max_steps=4, state={}, model=None, device=None, log=lambda scalars: None,
                              ctx=distributed.Context())
    hook.after_step(trainer, {})
    trainer.step = 4
    hook.after_train(trainer)
    assert saved == [2, 4]  # lower is better: 0.5 after 0.6


def test_model_ema_of_a_minkowski_network_runs_and_matches_the_original():
    """MinkowskiEngine layers keep their settings in __slots__, which deepcopy drops; the EMA copy
    must still run, and before any update it computes exactly what the original computes."""
    import voxseg.models  # noqa: F401
    from voxseg.engine.ema import ModelEMA
    from voxseg.registry import BACKBONES

    torch.manual_seed(0)
    backbone = BACKBONES.build({"type": "MinkUNet14A", "in_channels": 1, "voxel_size": 0.2}).eval()
    ema = ModelEMA(backbone, momentum=0.5)
    coord = torch.rand(400, 3) * 8
    batch = {"coord": coord, "feat": torch.rand(400, 1), "batch": torch.zeros(400, dtype=torch.long)}
    with torch.no_grad():
        assert torch.equal(ema(batch).point, backbone(batch).point)
        conv = next(m for m in ema.module.modules() if type(m).__name__ == "MinkowskiConvolution")
        original = next(m for m in backbone.modules() if type(m).__name__ == "MinkowskiConvolution")
        assert conv.dimension == original.dimension == 3
        assert conv.kernel.data_ptr() != original.kernel.data_ptr()  # weights copied, not shared


NOT_VOXSEG = "not a voxseg checkpoint ("
WRITTEN_BY_RUNS = "voxseg's runs write checkpoints/*.pt with the run's config and model)"


@pytest.mark.parametrize("content, reason", [
    (b"", "EOFError: Ran out of input)"),
    (b"\x00\x01 random bytes", "UnpicklingError: invalid load key, '\\x00'.)"),
    ({"stem.0.kernel": torch.zeros(2)}, "no config and no model dict; " + WRITTEN_BY_RUNS),
    ({"config": {}, "model": [1]}, "no model dict; " + WRITTEN_BY_RUNS),
    ([torch.zeros(2)], "it holds a list, not a dict with the run's config and model)"),
], ids=["empty", "random_bytes", "bare_state_dict", "model_not_a_dict", "list"])
def test_a_file_that_is_not_a_voxseg_checkpoint_is_one_line(tmp_path, content, reason):
    path = tmp_path / "x.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(VoxsegError) as refused:
        checkpoint.load(path)
    assert str(refused.value) == f"{path}: {NOT_VOXSEG}{reason}"


def test_infer_refuses_an_empty_checkpoint_in_one_line(tmp_path):
    empty = tmp_path / "best.pt"
    empty.write_bytes(b"")
    out = tmp_path / "predictions"
    done = subprocess.run([sys.executable, "tools/infer.py", "--checkpoint", str(empty), "--dataset", str(tmp_path),
                           "--sequences", "00", "--out", str(out), "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == f"error: {empty}: {NOT_VOXSEG}EOFError: Ran out of input)\n"
    assert not out.exists()


def test_device_errors_name_the_option_the_user_set(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    versions = f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}"
    with pytest.raises(ConfigError) as refused:
        device_lib.pick_device("cuda", option="--device")
    assert str(refused.value) == ("--device: CUDA was requested ('cuda') but torch.cuda.is_available() is False: "
                                  f"torch sees no CUDA GPU ({versions}); use --device cpu")
    with pytest.raises(ConfigError) as refused:
        device_lib.pick_device("cuda:1")
    assert str(refused.value) == ("train.device: CUDA was requested ('cuda:1') but torch.cuda.is_available() is False: "
                                  f"torch sees no CUDA GPU ({versions}); use train.device=cpu")
    with pytest.raises(ConfigError) as refused:
        device_lib.pick_device("tpu", option="--device")
    assert str(refused.value) == "--device must be auto, cpu, cuda or cuda:N, got 'tpu'"


def test_infer_device_cuda_without_cuda_names_the_flag(tmp_path):
    """No GPU visible (CUDA_VISIBLE_DEVICES empty, so also on a GPU machine): the error names
    --device, before any file is read or written."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "predictions"
    done = subprocess.run([sys.executable, "tools/infer.py", "--checkpoint", str(tmp_path / "absent.pt"),
                           "--dataset", str(tmp_path), "--sequences", "00", "--out", str(out), "--device", "cuda"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == (f"error: --device: CUDA was requested ('cuda') but torch.cuda.is_available() is False: "
                           f"torch sees no CUDA GPU (torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}); "
                           "use --device cpu\n")
    assert not out.exists()
