"""Supervised fine-tuning of backbone + head: the config schema and the run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from voxseg import atomic, config as cfglib, sparse
from voxseg.config import Component
from voxseg.data.collate import collate
from voxseg.engine import checkpoint
from voxseg.engine.hooks import CheckpointHook, ProgressBarHook, TensorBoardHook, ValidationHook
from voxseg.engine.trainer import EpochSampler, Trainer
from voxseg.errors import ConfigError, VoxsegError
from voxseg.registry import DATASETS, MODELS

INJECTED = ("root", "label_config")  # given once under `data`, passed to both datasets


@dataclass
class DataSection:
    root: str  # SemanticKITTI-format dataset: ROOT/sequences/NN/...
    label_config: str  # class mapping (configs/labels/*.yaml)
    train: Component = field(metadata={"inject": INJECTED})
    val: Component = field(metadata={"inject": INJECTED})


@dataclass
class TrainSection:
    max_steps: int = 1000
    batch_size: int = 2
    num_workers: int = 1
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD only
    warmup_steps: int = 50  # linear warm-up, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.01
    grad_clip: float = 10.0  # max gradient norm; 0 disables
    label_fraction: float = 1.0  # train on this fraction of the labelled scans (a seeded list)
    seed: int = 0
    log_every: int = 10
    val_every: int = 0  # steps between validations; 0 = only at the end
    val_max_scans: int = 0  # scans per intermediate validation; 0 = all
    checkpoint_every: int = 100
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads for torch and MinkowskiEngine; 1 makes CPU runs repeatable; 0 = defaults
    progress: bool = True


@dataclass
class FinetuneConfig:
    model: Component
    data: DataSection
    train: TrainSection = field(default_factory=TrainSection)
    output_dir: str = "runs/finetune"


def resolve(path: str, overrides: list[str]) -> dict:
    import voxseg.data.dataset  # noqa: F401  (register datasets and transforms)
    import voxseg.models  # noqa: F401  (register backbones and heads)

    return cfglib.validate(cfglib.load(path, overrides), FinetuneConfig)


def select_subset(names: list[str], fraction: float, seed: int) -> list[int]:
    """Indices of round(fraction * n) scans (at least one), drawn without replacement, sorted."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"train.label_fraction must be in (0, 1], got {fraction}")
    count = max(1, round(fraction * len(names)))
    return sorted(np.random.default_rng(seed).choice(len(names), size=count, replace=False).tolist())


def lr_lambda(warmup: int, total: int, min_ratio: float):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but CUDA is not available")
    return device


def build_datasets(cfg: dict):
    data = cfg["data"]
    common = {"root": data["root"], "label_config": data["label_config"]}
    return DATASETS.build(data["train"], **common), DATASETS.build(data["val"], **common)


def run(cfg: dict, resume: bool = False, pretrained: str | None = None) -> dict:
    """Fine-tune as `cfg` (resolved) says; returns the final metrics."""
    train_cfg = cfg["train"]
    out = Path(cfg["output_dir"])
    ckpt_dir = out / "checkpoints"
    if not resume and (ckpt_dir / "last.pt").exists():
        raise VoxsegError(f"{out}: holds a run already; pass --resume to continue it or choose another output_dir")
    if train_cfg["threads"]:
        sparse.set_threads(train_cfg["threads"])
    torch.manual_seed(train_cfg["seed"])
    device = pick_device(train_cfg["device"])

    train_set, val_set = build_datasets(cfg)
    model = MODELS.build(cfg["model"]).to(device)
    labels = train_set.label_config
    if getattr(model, "num_classes", labels.num_classes) != labels.num_classes:
        raise ConfigError(
            f"model.num_classes is {model.num_classes} but {labels.path} defines {labels.num_classes} evaluated classes"
        )
    in_channels = model.backbone.in_channels
    if in_channels != train_set.in_channels:
        raise ConfigError(f"model.backbone.in_channels is {in_channels} but data.train.features gives {train_set.in_channels}")

    subset_file = out / "label_subset.txt"
    names = [train_set.name(i) for i in range(len(train_set))]
    if resume and subset_file.exists():
        wanted = set(subset_file.read_text().split())
        subset = [i for i, n in enumerate(names) if n in wanted]
    else:
        subset = select_subset(names, train_cfg["label_fraction"], train_cfg["seed"])
        atomic.write_text(subset_file, "".join(f"{names[i]}\n" for i in subset))
    labelled = LabelledSubset(train_set, subset)
    if train_cfg["batch_size"] > len(labelled):
        raise ConfigError(f"train.batch_size {train_cfg['batch_size']} exceeds the {len(labelled)} labelled training scans")
    train_set.seed = train_cfg["seed"]

    sampler = EpochSampler(len(labelled), train_cfg["seed"])
    loader = DataLoader(labelled, batch_size=train_cfg["batch_size"], sampler=sampler,
                        num_workers=train_cfg["num_workers"], collate_fn=collate, drop_last=True,
                        persistent_workers=False)
    params = [p for p in model.parameters() if p.requires_grad]
    if train_cfg["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(params, lr=train_cfg["lr"], momentum=train_cfg["momentum"],
                                    weight_decay=train_cfg["weight_decay"], nesterov=True)
    else:
        optimizer = torch.optim.AdamW(params, lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(train_cfg["warmup_steps"], train_cfg["max_steps"], train_cfg["min_lr_ratio"])
    )

    hooks = [
        ProgressBarHook(enabled=train_cfg["progress"]),
        TensorBoardHook(out / "tb", every=train_cfg["log_every"]),
        ValidationHook(val_set, labels, train_cfg["val_every"], ckpt_dir, out / "metrics.json", cfg,
                       train_cfg["val_max_scans"]),
        CheckpointHook(ckpt_dir, cfg, every=train_cfg["checkpoint_every"]),
    ]
    trainer = Trainer(model, optimizer, scheduler, loader, sampler, train_cfg["max_steps"], device, hooks,
                      train_cfg["grad_clip"])

    cfglib.dump(cfg, out / "config.yaml")
    if resume:
        state = checkpoint.load(ckpt_dir / "last.pt")
        checkpoint.restore(trainer, state)
        print(f"resumed {out} at step {trainer.step}")
    elif pretrained:
        report = checkpoint.load_backbone(model.backbone, pretrained)
        print(f"pretrained weights from {pretrained}:\n{report.summary()}")
        atomic.write_text(out / "pretrained.txt", f"{pretrained}\n{report.summary()}\n")
    print(f"training on {len(labelled)} of {len(train_set)} labelled scans, validating on {len(val_set)}; "
          f"device {device}; output {out}")
    trainer.run()
    return trainer.state.get("last_val", {})


class LabelledSubset(torch.utils.data.Subset):
    """The scans kept by the label fraction; `epoch` reaches the dataset's augmentation seed."""

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.dataset.epoch = value
