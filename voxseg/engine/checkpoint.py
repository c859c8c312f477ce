"""Checkpoints: atomic save, resume, and loading pretrained backbone weights."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from voxseg import __version__, atomic
from voxseg.errors import VoxsegError


def save(path: str | os.PathLike, trainer, config: dict) -> None:
    """Model, optimizer, scheduler, step, epoch, hook state and config, written atomically."""
    atomic.torch_save(
        {
            "voxseg_version": __version__,
            "step": trainer.step,
            "epoch": trainer.epoch,
            "state": trainer.state,
            "config": config,
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        },
        path,
    )


def load(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise VoxsegError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say which
        raise VoxsegError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None


def restore(trainer, checkpoint: dict) -> None:
    trainer.model.load_state_dict(checkpoint["model"])
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    trainer.scheduler.load_state_dict(checkpoint["scheduler"])
    trainer.step, trainer.epoch, trainer.state = checkpoint["step"], checkpoint["epoch"], checkpoint["state"]
    torch.set_rng_state(checkpoint["torch_rng"])


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[str] = field(default_factory=list)  # in both, different shapes: not loaded

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} backbone tensors"]
        for name in ("missing", "unexpected", "mismatched"):
            keys = getattr(self, name)
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                lines.append(f"{name} keys: {shown}")
        return "\n".join(lines)


def load_backbone(backbone: torch.nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load backbone weights from a voxseg checkpoint (its `backbone.*` tensors, from any model:
    a pretraining run or another fine-tuning run) or from a bare backbone state dict."""
    data = load(path)
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise VoxsegError(f"{path}: holds no state dict of tensors")
    prefix = "backbone."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = backbone.state_dict()
    report = LoadReport(
        missing=sorted(k for k in own if k not in state),
        unexpected=sorted(k for k in state if k not in own),
        mismatched=sorted(k for k in state if k in own and state[k].shape != own[k].shape),
    )
    usable = {k: v for k, v in state.items() if k in own and k not in report.mismatched}
    if not usable:
        raise VoxsegError(f"{path}: no tensor matches the backbone (is it a checkpoint of another architecture?)")
    backbone.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    return report
