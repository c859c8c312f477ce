"""Checkpoints: atomic save, exact resume, old-format migration, pretrained backbone weights.

A checkpoint holds everything a resumed run needs to continue exactly as if it had never
stopped: model, optimizer, scheduler, step, epoch, shared hook state, each hook's own state
(EMA weights, ...), the config, and every random number generator that training draws from:
torch's CPU generator, every CUDA device's, numpy's and Python's global ones, and the data
loader's generator. Data augmentation draws from a numpy generator seeded by (seed, epoch,
scan index) and the sampler's order by (seed, epoch), so batches do not depend on when a run
stopped.

A voxseg checkpoint is a dict with the run's resolved `config` and its `model` tensors; every
file a run writes (last.pt, best.pt, ema.pt, a pretraining's encoder.pt) is one, and `load`
refuses anything else in one line. The config records what a backbone was built for: its type
and input channels (`model.backbone`) and the input features (`data.train.features`, filled
with the dataset's default when a config leaves them out), which `load_backbone` compares with
the model it loads into (see there).
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
# registered model types renamed since checkpoints recorded them: old name -> current name
RENAMED_TYPES = {"GroupingHead": "DPGNetHead", "GroupingMinkUNet14A": "DPGNetMinkUNet14A"}


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
    """A voxseg checkpoint (module docstring), migrated to the current format; anything else
    (a truncated or empty file, random bytes, a bare state dict) is one VoxsegError line."""
    path = Path(path)
    if not path.is_file():
        raise VoxsegError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say which
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise VoxsegError(f"{path}: not a voxseg checkpoint ({type(exc).__name__}: {reason})") from None
    if not isinstance(data, dict):
        raise VoxsegError(f"{path}: not a voxseg checkpoint (it holds a {type(data).__name__}, "
                          "not a dict with the run's config and model)")
    absent = [key for key in ("config", "model") if not isinstance(data.get(key), dict)]
    if absent:
        raise VoxsegError(f"{path}: not a voxseg checkpoint (no {' and no '.join(absent)} dict; voxseg's runs "
                          "write checkpoints/*.pt with the run's config and model)")
    return migrate(data)


def load_predictor(path: str | os.PathLike) -> dict:
    """A checkpoint to predict with (tools/infer.py): a fine-tuning run's, whose model has heads.
    A pretraining run's checkpoint (encoder.pt: the backbone alone; last.pt: the backbone with
    the pretraining modules) has none: one line says so and what to pass instead."""
    data = load(path)
    model = data["config"].get("model", {})
    if "heads" in model:
        return data
    encoder = all(k.startswith("backbone.") for k in data["model"])
    held = "backbone only" if encoder else "backbone and pretraining modules"
    raise VoxsegError(f"{path}: a pretraining checkpoint of {model.get('type')} ({held}) has no heads to predict "
                      f"with; fine-tune it first (tools/finetune.py --pretrained {path}) and pass that run's "
                      "checkpoints/best.pt")


def migrate(data: dict) -> dict:
    """Format 1 (voxseg <= 0.1: the model was `SemanticHead` with a `classifier`) to format 2:
    the config's model becomes a Segmentor with a `semantic` head and a `ce` loss, and the
    weights `classifier.*` become `heads.semantic.classifier.*`. Backbone keys are unchanged.
    In any format, the model config's renamed types take their current names (RENAMED_TYPES)."""
    if data.get("format", 1) >= FORMAT:
        model = data["config"].get("model")
        if not isinstance(model, dict):
            return data
        return dict(data, config=dict(data["config"], model=migrate_model_config(model)))
    data = dict(data, format=FORMAT)
    data["config"] = dict(data["config"], model=migrate_model_config(data["config"]["model"]))
    data["model"] = {(f"heads.semantic.{k}" if k.startswith("classifier.") else k): v for k, v in data["model"].items()}
    if "torch_rng" in data:
        data["rng"] = {"torch": data.pop("torch_rng"), "numpy": np.random.get_state(), "python": random.getstate(),
                       "cuda": []}
    return data


def migrate_model_config(model: dict) -> dict:
    """An older config's model section in current terms: every `type` that RENAMED_TYPES lists,
    at any depth, under its current name, and the format-1 section {type: SemanticHead, backbone,
    num_classes, dropout, label_smoothing} as a Segmentor section."""
    model = renamed_types(model)
    if model.get("type") != "SemanticHead" or "backbone" not in model:
        return model
    head = {"type": "SemanticHead", "num_classes": model["num_classes"]}
    if "dropout" in model:
        head["dropout"] = model["dropout"]
    loss = {"type": "CrossEntropyLoss", "head": "semantic"}
    if "label_smoothing" in model:
        loss["label_smoothing"] = model["label_smoothing"]
    return {"type": "Segmentor", "backbone": model["backbone"], "heads": {"semantic": head}, "losses": {"ce": loss}}


def renamed_types(node):
    """`node` (a config's dicts and lists) with each `type: <old name>` of RENAMED_TYPES renamed."""
    if isinstance(node, dict):
        return {k: RENAMED_TYPES.get(v, v) if k == "type" and isinstance(v, str) else renamed_types(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [renamed_types(v) for v in node]
    return node


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


@dataclass(frozen=True)
class BackboneRecord:
    """What a backbone was built for, as a run's config records it (module docstring): its type,
    input channels and input features (None where the config records none)."""

    type: str | None
    in_channels: int | None
    features: tuple[str, ...] | None

    @classmethod
    def of_config(cls, config: dict) -> "BackboneRecord":
        backbone = config.get("model", {}).get("backbone", {})
        features = config.get("data", {}).get("train", {}).get("features")
        return cls(backbone.get("type"), backbone.get("in_channels"), None if features is None else tuple(features))

    def fits(self, model: "BackboneRecord") -> bool:
        """Same type and input channels, and the same features in the same order; features that
        either side does not record (a config written by hand) are not compared."""
        return ((self.type, self.in_channels) == (model.type, model.in_channels)
                and (self.features is None or model.features is None or self.features == model.features))

    def __str__(self) -> str:
        features = "not recorded" if self.features is None else f"[{', '.join(self.features)}]"
        return f"{self.type} (in_channels {self.in_channels}, features {features})"


PARTIAL_HINT = "pass --allow-partial-pretrained to load the matching tensors anyway"


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[str] = field(default_factory=list)  # in both, different shapes: not loaded
    allowed: str = ""  # the misfit a partial load was allowed despite (--allow-partial-pretrained)

    def summary(self) -> str:
        lines = [f"partial load allowed: {self.allowed}"] if self.allowed else []
        lines.append(f"loaded {len(self.loaded)} backbone tensors")
        for name in ("missing", "unexpected", "mismatched"):
            keys = getattr(self, name)
            if keys:
                lines.append(f"{name} keys: {shown(keys)}")
        return "\n".join(lines)


def shown(items: list[str], limit: int = 8) -> str:
    """The first `limit` items, comma-separated, and how many there are in all when more."""
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def load_backbone(backbone: torch.nn.Module, path: str | os.PathLike, model: BackboneRecord | None = None,
                  allow_partial: bool = False) -> LoadReport:
    """Load the `backbone.*` tensors of a voxseg checkpoint (a pretraining run's encoder.pt or
    last.pt, or another fine-tuning run's checkpoint) into `backbone`, whose config record is
    `model` (None: compare the tensors only).

    Rule: the checkpoint's record (BackboneRecord.of_config of its config) must fit `model`, and
    its tensors must be the backbone's, name for name and shape for shape; otherwise one
    VoxsegError line names both sides and nothing is loaded. With `allow_partial` the tensors of
    matching name and shape are loaded whatever differs (at least one must match), and the
    report says what was left out."""
    data = load(path)
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in data["model"].items() if k.startswith(prefix)}
    saved = BackboneRecord.of_config(data["config"])
    if not state or saved.type is None:
        raise VoxsegError(f"{path}: holds no backbone (no model.backbone in its config or no backbone.* tensors)")
    own = backbone.state_dict()
    report = LoadReport(
        missing=sorted(k for k in own if k not in state),
        unexpected=sorted(k for k in state if k not in own),
        mismatched=sorted(k for k in state if k in own and state[k].shape != own[k].shape),
    )
    if model is not None and not saved.fits(model):
        misfit = f"backbone {saved} does not fit the model's {model}"
    elif report.missing or report.unexpected or report.mismatched:
        misfit = (f"backbone tensors do not fit the model's {model or type(backbone).__name__}: "
                  f"{tensor_misfit(report, state, own)}")
    else:
        misfit = ""
    if misfit and not allow_partial:
        raise VoxsegError(f"{path}: {misfit}; {PARTIAL_HINT}")
    usable = {k: v for k, v in state.items() if k in own and k not in report.mismatched}
    if not usable:
        raise VoxsegError(f"{path}: no tensor matches the backbone (is it a checkpoint of another architecture?)")
    backbone.load_state_dict(usable, strict=False)
    report.loaded, report.allowed = sorted(usable), misfit
    return report


def tensor_misfit(report: LoadReport, state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> str:
    """`N missing (keys), N unexpected (keys), N of another shape (key file vs model, ...)`."""
    parts = [f"{len(report.missing)} missing ({shown(report.missing, 3)})" if report.missing else "",
             f"{len(report.unexpected)} unexpected ({shown(report.unexpected, 3)})" if report.unexpected else ""]
    if report.mismatched:
        shapes = [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in report.mismatched]
        parts.append(f"{len(shapes)} of another shape ({shown(shapes, 3)})")
    return ", ".join(p for p in parts if p)
