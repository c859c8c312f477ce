"""A segmentation model: one backbone, named heads on its output, named loss terms.

    model:
      type: Segmentor
      backbone: {type: MinkUNet14A, in_channels: 1, voxel_size: 0.05}
      heads:
        semantic: {type: SemanticHead, num_classes: 19}
      losses:
        ce: {type: CrossEntropyLoss, head: semantic}
      loss_weights: {ce: 1.0}          # default 1 per term

forward(batch) voxelizes once (the backbone) and runs every head on the same BackboneOutput.
It returns a dict:
  loss           the weighted sum of the terms (when the batch has what the losses need;
                 always in training);
  loss_<name>    each term, detached and unweighted, for logs;
  heads          {head name: the head's raw outputs};
  pred           in evaluation: every head's per-point predictions merged (`segment`,
                 `instance`, `embedding`, `score`, ...); two heads may not predict the same key.

`check_config` refuses, when the config is validated (voxseg.config) and again at build, what
cannot train as written: no head, a loss whose `head` names no head, a loss weight that names no
loss, a head class that declares no `predicts`, two heads that declare the same predicted key.
Heads and losses satisfy voxseg.contracts.Head and Loss (checked when built). Loss weights are
finite and >= 0: a negative weight trains to make its term worse.
"""

from __future__ import annotations

import inspect
from typing import Annotated, cast

import torch.nn as nn

from voxseg import contracts
from voxseg.config import Component, Inject, InvalidValue, Range
from voxseg.registry import BACKBONES, HEADS, LOSSES, MODELS


@MODELS.register()
class Segmentor(nn.Module):
    def __init__(self, backbone: Component, heads: Annotated[dict[str, Component], Inject("in_channels")],
                 losses: dict[str, Component] = {},  # noqa: B006
                 loss_weights: dict[str, Annotated[float, Range(ge=0)]] = {}):  # noqa: B006
        super().__init__()
        self.check_config({"heads": heads, "losses": losses, "loss_weights": loss_weights})
        self.backbone = BACKBONES.build(backbone)
        self.heads = nn.ModuleDict({name: HEADS.build(cfg, in_channels=self.backbone.out_channels)
                                    for name, cfg in heads.items()})
        self.losses = nn.ModuleDict({name: LOSSES.build(cfg) for name, cfg in losses.items()})
        self.loss_weights = {name: float(loss_weights.get(name, 1.0)) for name in losses}

    @staticmethod
    def check_config(cfg: dict) -> None:
        """The rules between heads, losses and loss weights (module docstring); InvalidValue names
        the key at fault."""
        heads, losses = cfg["heads"], cfg.get("losses", {})
        if not heads:
            raise InvalidValue("heads", "a Segmentor needs at least one head")
        for name in cfg.get("loss_weights", {}):
            if name not in losses:
                raise InvalidValue(f"loss_weights.{name}", f"names no loss term; terms: {', '.join(losses) or 'none'}")
        for name, loss in losses.items():
            head = _argument(LOSSES.get(loss["type"]), loss, "head")
            if head is not None and head not in heads:
                raise InvalidValue(f"losses.{name}.head", f"{head!r} names no head; heads: {', '.join(heads)}")
        predicted_by: dict[str, str] = {}
        for name, head in heads.items():
            predicts = getattr(HEADS.get(head["type"]), "predicts", None)
            if predicts is None:
                raise InvalidValue(f"heads.{name}", f"{head['type']} declares no `predicts` (the keys its `predict` "
                                                    "returns: voxseg.contracts.Head)")
            for key in predicts:
                if key in predicted_by:
                    raise InvalidValue(f"heads.{name}", f"predicts {key!r} as heads.{predicted_by[key]} does; "
                                                        "a model has one head per prediction")
                predicted_by[key] = name

    @property
    def num_classes(self) -> int | None:
        """The class count of the heads that have one (they must agree), else None."""
        counts = {head.num_classes for head in self._head_contracts().values() if head.num_classes is not None}
        if len(counts) > 1:
            raise ValueError(f"heads disagree on num_classes: {sorted(counts)}")
        return counts.pop() if counts else None

    def forward(self, batch: dict) -> dict:
        features = self.backbone(batch)
        heads = {name: head(features, batch) for name, head in self.heads.items()}
        out: dict = {"heads": heads}
        if self.training or self._has_targets(batch):
            total = None
            for name, loss_fn in self.losses.items():
                term = loss_fn(heads, batch)
                out[f"loss_{name}"] = term.detach()
                weighted = self.loss_weights[name] * term
                total = weighted if total is None else total + weighted
            if total is not None:
                out["loss"] = total
        if not self.training:
            pred: dict = {}
            for name, head in self._head_contracts().items():
                for key, value in head.predict(heads[name], features, batch).items():
                    if key in pred:
                        raise ValueError(f"heads predict the same key {key!r}; rename one head's output")
                    pred[key] = value
            out["pred"] = pred
        return out

    def _head_contracts(self) -> dict[str, contracts.Head]:
        """`heads` by name, typed as the Head contract that HEADS.build checked each against."""
        return {name: cast(contracts.Head, head) for name, head in self.heads.items()}

    def _has_targets(self, batch: dict) -> bool:
        targets = [loss_fn.target for loss_fn in self.losses.values()]
        return all(t is None or t in batch for t in targets)


def _argument(cls: type, cfg: dict, name: str):
    """Argument `name` of the component `cfg` builds: its value, else the constructor's default;
    None when the constructor takes no such argument."""
    param = inspect.signature(cls).parameters.get(name)
    if param is None:
        return None
    return cfg.get(name, None if param.default is inspect.Parameter.empty else param.default)
