"""The semantic loss: cross-entropy on a head's per-point class logits (voxseg.models.heads.semantic)."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

from voxseg.config import Range
from voxseg.registry import LOSSES


@LOSSES.register()
class CrossEntropyLoss(nn.Module):
    """Cross-entropy of a head's per-point `logits` against batch[`target`] (train ids; -1 ignored).

    A batch whose points are all ignored gives a zero that keeps the graph, not 0/0.
    """

    def __init__(self, head: str = "semantic", target: str = "segment",
                 label_smoothing: Annotated[float, Range(ge=0, lt=1)] = 0.0):
        super().__init__()
        self.head, self.target, self.label_smoothing = head, target, label_smoothing

    def forward(self, outputs: dict[str, dict], batch: dict) -> torch.Tensor:
        logits, target = outputs[self.head]["logits"], batch[self.target]
        if not (target >= 0).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, ignore_index=-1, label_smoothing=self.label_smoothing)
