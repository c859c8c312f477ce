"""The instance ids that instance losses group points by: the stuff rule, written once.

DiscriminativeLoss (voxseg.models.losses.asis) and the clique losses (voxseg.models.losses.dpgnet)
both read their targets through `instance_targets`; `stuff: segments|ignore` is their parameter.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["instance_targets"]


def instance_targets(batch: dict, stuff: Literal["segments", "ignore"] = "segments", target: str = "instance",
                     semantic_target: str = "segment") -> torch.Tensor:
    """(N,) the id each point of `batch` is grouped by (unique per batch), -1 = not in the loss.

    batch[`target`] (N,) instance ids >= 0 unique per batch, -1 = none; batch[`semantic_target`]
    (N,) train ids, -1 = unlabelled (read only with `stuff: segments`); batch["batch"] (N,) the
    scan of each point.

    The rule. A point with an instance keeps its id. With `stuff: segments`, the labelled points
    without an instance (stuff) form one segment per (scan, class), numbered after the largest
    instance id: max(instance) + 1 + scan * K + class, K = max(segment) + 1. This is how panoptic
    segmentation counts stuff (Kirillov et al., CVPR 2019: all pixels of a stuff class in an
    image are one segment), and what ASIS's data has anyway: in S3DIS every point, walls
    included, has an instance, while a LiDAR scan's stuff has none. Unlabelled points are -1.
    With `stuff: ignore` the instance ids are returned as they are.
    """
    instance = batch[target]
    if stuff == "ignore":
        return instance
    segment = batch[semantic_target]
    classes = int(segment.max()) + 1 if len(segment) else 1
    stuff_ids = int(instance.max()) + 1 + batch["batch"] * classes + segment
    return torch.where(instance >= 0, instance, torch.where(segment >= 0, stuff_ids, -1))
