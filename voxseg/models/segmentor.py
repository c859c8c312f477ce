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
"""

from __future__ import annotations

from typing import Annotated

import torch.nn as nn

from voxseg.config import Component, Inject
from voxseg.registry import BACKBONES, HEADS, LOSSES, MODELS


@MODELS.register()
class Segmentor(nn.Module):
    def __init__(self, backbone: Component, heads: Annotated[dict[str, Component], Inject("in_channels")],
                 losses: dict[str, Component] = {}, loss_weights: dict[str, float] = {}):
        super().__init__()
        if not heads:
            raise ValueError("a Segmentor needs at least one head")
        unknown = sorted(set(loss_weights) - set(losses))
        if unknown:
            raise ValueError(f"loss_weights names no loss term: {unknown}; terms: {sorted(losses)}")
        self.backbone = BACKBONES.build(backbone)
        self.heads = nn.ModuleDict({name: HEADS.build(cfg, in_channels=self.backbone.out_channels)
                                    for name, cfg in heads.items()})
        self.losses = nn.ModuleDict({name: LOSSES.build(cfg) for name, cfg in losses.items()})
        self.loss_weights = {name: float(loss_weights.get(name, 1.0)) for name in losses}

    @property
    def num_classes(self) -> int | None:
        """The class count of the heads that have one (they must agree), else None."""
        counts = {head.num_classes for head in self.heads.values() if hasattr(head, "num_classes")}
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
            for name, head in self.heads.items():
                for key, value in (head.predict(heads[name], features, batch) if hasattr(head, "predict") else {}).items():
                    if key in pred:
                        raise ValueError(f"heads predict the same key {key!r}; rename one head's output")
                    pred[key] = value
            out["pred"] = pred
        return out

    def _has_targets(self, batch: dict) -> bool:
        targets = [getattr(loss_fn, "target", None) for loss_fn in self.losses.values()]
        return all(t is None or t in batch for t in targets)
