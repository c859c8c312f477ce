"""Semantic segmentation head: a per-point linear classifier on backbone features."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from voxseg.config import Component
from voxseg.registry import BACKBONES, MODELS


@MODELS.register()
class SemanticHead(nn.Module):
    """Backbone + linear classifier, trained with cross-entropy over points (ignore_index -1).

    forward(batch) returns, in training, {"loss", "loss_ce"}; in evaluation {"logits" (N, K),
    "pred" (N,)} plus the losses when the batch carries `segment` labels.
    """

    def __init__(self, backbone: Component, num_classes: int, dropout: float = 0.0, label_smoothing: float = 0.0):
        super().__init__()
        self.backbone = BACKBONES.build(backbone)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(self.backbone.out_channels, num_classes)

    def forward(self, batch: dict) -> dict:
        logits = self.classifier(self.dropout(self.backbone(batch)))
        out = {}
        if "segment" in batch:
            if (batch["segment"] >= 0).any():
                loss = F.cross_entropy(logits, batch["segment"], ignore_index=-1, label_smoothing=self.label_smoothing)
            else:  # every point ignored: a zero loss that keeps the graph, not 0/0
                loss = logits.sum() * 0.0
            out.update(loss=loss, loss_ce=loss.detach())
        if not self.training:
            out.update(logits=logits, pred=logits.argmax(dim=1))
        return out
