"""Semantic segmentation head: a per-point linear classifier on backbone features."""

from __future__ import annotations

from typing import Annotated

import torch.nn as nn

from voxseg.config import Range
from voxseg.models.backbone_output import BackboneOutput
from voxseg.registry import HEADS


@HEADS.register()
class SemanticHead(nn.Module):
    """Class logits per point. Outputs {"logits" (N, K)}; predicts {"segment" (N,) train ids,
    "segment_logits" (N, K)}. Trained by a loss on "logits" (CrossEntropyLoss)."""

    predicts = ("segment", "segment_logits")  # what `predict` returns
    thing_classes = None  # predicts no instances (voxseg.contracts.Head)

    def __init__(self, in_channels: int, num_classes: Annotated[int, Range(ge=1)],
                 dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0):
        super().__init__()
        self.num_classes = num_classes
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, features: BackboneOutput, batch: dict) -> dict:
        if self.training:
            return {"logits": self.classifier(self.dropout(features.point))}
        # in evaluation dropout is the identity and a point's logits are its voxel's: classify the
        # V voxels, then copy rows to the N points (a dense cloud has many points per voxel)
        return {"logits": self.classifier(features.voxel.F)[features.inverse]}

    def predict(self, outputs: dict, features: BackboneOutput, batch: dict) -> dict:
        return {"segment": outputs["logits"].argmax(dim=1), "segment_logits": outputs["logits"]}
