"""Checkpoints: atomic save, exact resume, old-format migration, pretrained backbone weights.

A checkpoint holds everything a resumed run needs to continue exactly as if it had never
stopped: model, optimizer, scheduler, step, epoch, shared hook state, each hook's own state
(EMA weights, ...), the config, and every random number generator that training draws from:
torch's CPU generator, every CUDA device's, numpy's and Python's global ones, and the data
loader's generator. Data augmentation draws from a numpy generator seeded by (seed, epoch,
scan index) and the sampler's order by (seed, epoch), so batches do not depend on when a run
stopped.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from voxseg import __version__, atomic
from voxseg.errors import VoxsegError

FORMAT = 2  # 1: model = SemanticHead(backbone, classifier); 2: model = Segmentor(backbone, heads, losses)


def rng_state(loader_generator: torch.Generator | None = None) -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict, loader_generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


def save(path: str | os.PathLike, trainer, config: dict) -> None:
    """Everything `restore` needs, written atomically (temp file, then rename)."""
    atomic.torch_save(
        {
            "voxseg_version": __version__,
            "format": FORMAT,
            "step": trainer.step,
            "epoch": trainer.epoch,
            "state": trainer.state,
            "hooks": {f"{i}:{type(h).__name__}": h.state_dict() for i, h in enumerate(trainer.hooks)},
            "config": config,
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "rng": rng_state(trainer.loader.generator),
        },
        path,
    )


def load(path: str | os.PathLike) -> dict:
    """A checkpoint, migrated to the current format."""
    path = Path(path)
    if not path.is_file():
        raise VoxsegError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say which
        raise VoxsegError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    return migrate(data) if isinstance(data, dict) and "config" in data else data


def migrate(data: dict) -> dict:
    """Format 1 (voxseg <= 0.1: the model was `SemanticHead` with a `classifier`) to format 2:
    the config's model becomes a Segmentor with a `semantic` head and a `ce` loss, and the
    weights `classifier.*` become `heads.semantic.classifier.*`. Backbone keys are unchanged."""
    if data.get("format", 1) >= FORMAT:
        return data
    data = dict(data, format=FORMAT)
    data["config"] = dict(data["config"], model=migrate_model_config(data["config"]["model"]))
    data["model"] = {(f"heads.semantic.{k}" if k.startswith("classifier.") else k): v for k, v in data["model"].items()}
    if "torch_rng" in data:
        data["rng"] = {"torch": data.pop("torch_rng"), "numpy": np.random.get_state(), "python": random.getstate(),
                       "cuda": []}
    return data


def migrate_model_config(model: dict) -> dict:
    """The format-1 model section {type: SemanticHead, backbone, num_classes, dropout,
    label_smoothing} as a Segmentor section; other sections are returned unchanged."""
    if model.get("type") != "SemanticHead" or "backbone" not in model:
        return model
    head = {"type": "SemanticHead", "num_classes": model["num_classes"]}
    if "dropout" in model:
        head["dropout"] = model["dropout"]
    loss = {"type": "CrossEntropyLoss", "head": "semantic"}
    if "label_smoothing" in model:
        loss["label_smoothing"] = model["label_smoothing"]
    return {"type": "Segmentor", "backbone": model["backbone"], "heads": {"semantic": head}, "losses": {"ce": loss}}


def restore(trainer, checkpoint: dict) -> None:
    trainer.model.load_state_dict(checkpoint["model"])
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    trainer.scheduler.load_state_dict(checkpoint["scheduler"])
    trainer.step, trainer.epoch, trainer.state = checkpoint["step"], checkpoint["epoch"], checkpoint["state"]
    hook_states = checkpoint.get("hooks", {})
    for i, hook in enumerate(trainer.hooks):
        key = f"{i}:{type(hook).__name__}"
        if key in hook_states:
            hook.load_state_dict(hook_states[key])
    set_rng_state(checkpoint["rng"], trainer.loader.generator)


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs (added or removed included)."""
    keys = []
    for key in sorted(set(saved) | set(current), key=str):
        dotted = f"{prefix}{key}"
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            keys += config_differences(a, b, dotted + ".")
        elif a != b:
            keys.append(dotted)
    return keys


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
