"""Runs that lose nothing: stopped by SIGINT or SIGKILL anywhere (mid-step, mid-checkpoint-write)
and resumed, a run ends bit for bit where an uninterrupted one does: every tensor of the final
checkpoint (model, optimizer, scheduler, RNG states, hook state) is torch.equal.

The runs cross an epoch boundary (6 scans, batch 1, 8 steps), use dropout 0.3 (draws from the
torch RNG every step), validate every 3 steps and keep an EMA of the weights (hook state).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.helpers import FINETUNE_CONFIG, ROOT, finetune_overrides
from voxseg.engine import checkpoint, finetune
from voxseg.engine.trainer import Trainer

SETTINGS = {"train.max_steps": 8, "train.val_every": 3, "train.val_max_scans": 2, "train.checkpoint_every": 2,
            "model.heads.semantic.dropout": 0.3, "train.hooks": "[{type: EMAHook, momentum: 0.9}]"}


def configure(root, out):
    return finetune.resolve(str(FINETUNE_CONFIG), finetune_overrides(root, out, **SETTINGS))


@pytest.fixture(scope="module")
def straight(tiny_dataset, tmp_path_factory):
    """The final checkpoint of an uninterrupted run."""
    out = tmp_path_factory.mktemp("straight") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        finetune.run(configure(tiny_dataset, out))
    return checkpoint.load(out / "checkpoints" / "last.pt")


def assert_identical(a, b, path="checkpoint"):
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_identical(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def assert_same_run(final: dict, straight: dict) -> None:
    assert final["step"] == straight["step"] == 8
    without_dir = lambda c: {k: v for k, v in c.items() if k != "output_dir"}  # noqa: E731
    assert without_dir(final["config"]) == without_dir(straight["config"])
    for key in ("model", "optimizer", "scheduler", "rng", "hooks", "state", "epoch"):
        assert_identical(final[key], straight[key], key)
    assert len(final["rng"]["torch"]) and final["rng"]["loader"] is not None


def resume(root, out):
    finetune.run(configure(root, out), resume=True)
    return checkpoint.load(out / "checkpoints" / "last.pt")


@pytest.mark.parametrize("where", ["mid_forward", "after_optimizer_step"])
def test_sigint_mid_step_resumes_exactly(where, straight, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    if where == "mid_forward":
        from voxseg.models.heads.semantic import SemanticHead

        forward = SemanticHead.forward

        def head_forward(self, features, batch):
            if self.training and not getattr(SemanticHead, "fired", False):
                if int(batch["batch"].numel()) and STEP["n"] == 2:
                    SemanticHead.fired = True
                    signal.raise_signal(signal.SIGINT)  # after the backbone's BN statistics moved
            return forward(self, features, batch)

        STEP = {"n": 0}
        step = Trainer.train_step

        def counting(trainer, batch):
            STEP["n"] = trainer.step
            return step(trainer, batch)

        monkeypatch.setattr(SemanticHead, "forward", head_forward)
        monkeypatch.setattr(Trainer, "train_step", counting)
    else:
        step = Trainer.train_step

        def interrupted(trainer, batch):
            outputs = step(trainer, batch)
            if trainer.step == 2:
                signal.raise_signal(signal.SIGINT)  # optimizer stepped, counter not yet
            return outputs

        monkeypatch.setattr(Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune.run(configure(tiny_dataset, out))
    assert checkpoint.load(out / "checkpoints" / "last.pt")["step"] == 3  # the step in flight completed
    monkeypatch.undo()
    monkeypatch.chdir(ROOT)
    assert_same_run(resume(tiny_dataset, out), straight)


def test_sigint_during_checkpoint_write(straight, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    save = torch.save

    def interrupted_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4 and "optimizer" in obj:
            signal.raise_signal(signal.SIGINT)
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        finetune.run(configure(tiny_dataset, out))
    monkeypatch.undo()
    monkeypatch.chdir(ROOT)
    assert checkpoint.load(out / "checkpoints" / "last.pt")["step"] == 4
    assert not list((out / "checkpoints").glob(".*.tmp"))
    assert_same_run(resume(tiny_dataset, out), straight)


KILLED_RUN = r"""
import json, os, signal, sys
import torch
from voxseg.engine import finetune
from voxseg.engine.trainer import Trainer

where, overrides = sys.argv[1], json.loads(sys.argv[2])
if where == "step":  # step 5's update done, its counter and checkpoint not
    step = Trainer.train_step
    def killed(trainer, batch):
        outputs = step(trainer, batch)
        if trainer.step == 4:
            os.kill(os.getpid(), signal.SIGKILL)
        return outputs
    Trainer.train_step = killed
else:  # half-way through writing step 4's checkpoint
    save = torch.save
    def killed_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4 and "optimizer" in obj:
            f.write(b"PK\x03\x04 half a zip")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return save(obj, f, *args, **kwargs)
    torch.save = killed_save
finetune.run(finetune.resolve(sys.argv[3], overrides))
"""


@pytest.mark.parametrize("where", ["step", "checkpoint_write"])
def test_sigkill_resumes_exactly(where, straight, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    overrides = json.dumps(finetune_overrides(tiny_dataset, out, **SETTINGS))
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, where, overrides, str(FINETUNE_CONFIG)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    saved = checkpoint.load(out / "checkpoints" / "last.pt")["step"]
    stale = list((out / "checkpoints").glob(".last.pt.*.tmp"))
    if where == "step":
        assert saved == 4 and not stale
    else:
        assert saved == 2 and len(stale) == 1  # the killed write left its temp file; last.pt is intact
    assert_same_run(resume(tiny_dataset, out), straight)
    assert not list((out / "checkpoints").glob(".*.tmp"))  # cleaned on resume
    assert json.loads((out / "metrics.json").read_text())["step"] == 8
    assert os.stat(out / "checkpoints" / "last.pt").st_mode & 0o777 == 0o666 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_ctrl_c_from_a_terminal_with_loader_workers(tiny_dataset, tmp_path, monkeypatch):
    """SIGINT to the whole process group (as a terminal sends it), DataLoader workers included:
    the run saves the step it finished and exits 130 with no traceback; --resume continues."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    args = finetune_overrides(tiny_dataset, out, **{"train.max_steps": 500, "train.num_workers": 1,
                                                    "train.val_every": 0, "train.checkpoint_every": 0})
    run = subprocess.Popen([sys.executable, "tools/finetune.py", "--config", str(FINETUNE_CONFIG), *args], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list((out / "tb").glob("events.*")) and time.monotonic() < deadline:  # training has started
        time.sleep(0.1)
    time.sleep(2.0)
    os.killpg(run.pid, signal.SIGINT)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.rstrip().endswith("interrupted")
    step = checkpoint.load(out / "checkpoints" / "last.pt")["step"]
    assert 0 < step < 500 and f"checkpoint of step {step}" in stdout
    cfg = finetune.resolve(str(FINETUNE_CONFIG), finetune_overrides(tiny_dataset, out, **{
        "train.max_steps": step + 1, "train.num_workers": 1, "train.val_every": 0, "train.checkpoint_every": 0}))
    finetune.run(cfg, resume=True, allow_config_change=True)
    assert checkpoint.load(out / "checkpoints" / "last.pt")["step"] == step + 1
