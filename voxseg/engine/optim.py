"""Optimizer with parameter groups, and the warm-up + cosine learning-rate schedule.

    train:
      lr: 0.002
      param_groups:                       # first matching pattern wins; the rest use lr
        - {params: "backbone.*", lr: 0.0002}
        - {params: "*.bias", weight_decay: 0.0}

Patterns are fnmatch globs on parameter names (`model.named_parameters()`). A pattern that
matches no trainable parameter is an error, so a typo does not silently train at the base rate.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Annotated

import torch

from voxseg.config import Range
from voxseg.errors import ConfigError


@dataclass
class ParamGroup:
    params: str  # glob over parameter names
    lr: Annotated[float | None, Range(gt=0)] = None  # None: train.lr
    weight_decay: Annotated[float | None, Range(ge=0)] = None  # None: train.weight_decay


def param_groups(model: torch.nn.Module, groups: list[dict], lr: float, weight_decay: float) -> list[dict]:
    """torch parameter groups: one per configured pattern (in order) plus one for the rest."""
    buckets: list[list] = [[] for _ in range(len(groups) + 1)]
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        index = next((i for i, g in enumerate(groups) if fnmatch.fnmatchcase(name, g["params"])), len(groups))
        buckets[index].append(param)
    out = []
    for i, group in enumerate(groups):
        if not buckets[i]:
            raise ConfigError(f"train.param_groups.{i}.params: {group['params']!r} matches no trainable parameter "
                              f"(or only ones an earlier pattern took)")
        out.append({"name": group["params"], "params": buckets[i],
                    "lr": lr if group.get("lr") is None else group["lr"],
                    "weight_decay": weight_decay if group.get("weight_decay") is None else group["weight_decay"]})
    if buckets[-1]:
        out.append({"name": "default", "params": buckets[-1], "lr": lr, "weight_decay": weight_decay})
    return out


def build_optimizer(model: torch.nn.Module, train: dict) -> torch.optim.Optimizer:
    groups = param_groups(model, train["param_groups"], train["lr"], train["weight_decay"])
    if train["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=train["lr"], momentum=train["momentum"], nesterov=True)
    return torch.optim.AdamW(groups, lr=train["lr"])


def lr_lambda(warmup: int, total: int, min_ratio: float):
    """Linear warm-up over `warmup` steps, then cosine decay to `min_ratio` at `total`; a factor
    of each group's own learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, train: dict) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(train["warmup_steps"], train["max_steps"], train["min_lr_ratio"]))
