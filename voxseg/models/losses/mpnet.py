"""The memory regularisers of MPNet (He et al. 2020; voxseg.models.heads.mpnet), selected by
name in YAML like voxseg.models.losses. The paper's objective (eq. 6) is

    L = L_ce + L_dis + R_seg + lambda R_ins

written in a config as four terms: CrossEntropyLoss, DiscriminativeLoss (eq. 5),
SemanticMemoryRegularizer (R_seg, eq. 4) and InstanceCentroidRegularizer (R_ins, eq. 3), with
loss_weights {ce: 1, disc: 1, seg_reg: 1, ins_reg: lambda}. The paper does not give lambda.

Choices where the paper is silent:
* R_seg: ||.|| is the Euclidean norm (not squared); the hinge is per point, as printed: the
  positive distance minus the SUM of the C - 1 negative distances plus m; the loss is the mean
  over the batch's labelled points (segment >= 0), as the cross-entropy's. Gradients reach
  both f^_seg and C (hence the memory M), which is how the paper updates the memory.
* R_ins: GT_k is the mean position (batch["coord"], metres, after augmentation) of instance k's
  points. Only points with an instance id count: on S3DIS (the paper's data) every point,
  walls included, has an instance, while LiDAR stuff (road, vegetation) has none, and the
  centroid of a scan's road is no geometric target for its points. The sums run per scan (the
  paper's K is one input block's) and the loss is the mean over the scans with instances.
Both return a zero that keeps the graph when nothing counts.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn as nn

from voxseg.config import Range
from voxseg.registry import LOSSES

__all__ = ["SemanticMemoryRegularizer", "InstanceCentroidRegularizer"]


def _needs(outputs: dict, head: str, key: str, what: str) -> torch.Tensor:
    if key not in outputs[head]:
        raise KeyError(f"head {head!r} has no {key!r} output: {what}")
    return outputs[head][key]


@LOSSES.register()
class SemanticMemoryRegularizer(nn.Module):
    """R_seg (eq. 4) on a head's "seg_feature" f^_seg (N, D) and "semantic_memory" C (C, D):

      R_seg,i = max(0, ||f^_seg,i - c_{y_i}|| - sum_{j != y_i} ||f^_seg,i - c_j|| + m),   m = 5

    averaged over the points with a label y_i = batch[`target`] >= 0.
    """

    def __init__(self, head: str = "mpnet", target: str = "segment", margin: Annotated[float, Range(ge=0)] = 5.0):
        super().__init__()
        self.head, self.target, self.margin = head, target, margin

    def forward(self, outputs: dict[str, dict], batch: dict) -> torch.Tensor:
        what = "R_seg needs the semantic memory (semantic_memory: true)"
        feature = _needs(outputs, self.head, "seg_feature", what)
        summary = _needs(outputs, self.head, "semantic_memory", what)
        label = batch[self.target]
        keep = label >= 0
        if not keep.any():
            return feature.sum() * 0.0 + summary.sum() * 0.0
        dist = torch.cdist(feature[keep], summary, compute_mode="donot_use_mm_for_euclid_dist")  # (n, C)
        positive = dist.gather(1, label[keep].unsqueeze(1)).squeeze(1)
        negative = dist.sum(dim=1) - positive
        return (positive - negative + self.margin).clamp(min=0).mean()


@LOSSES.register()
class InstanceCentroidRegularizer(nn.Module):
    """R_ins (eq. 3) on a head's "centroid" (N, 3), G's prediction for each point, per scan:

      R_ins = 1/K sum_k 1/N_k sum_{n in k} ||G(f^_ins,n) - GT_k||^2,   GT_k = mean coord of k

    over the scan's K ground-truth instances (batch[`target`] ids >= 0, unique per batch), then
    the mean over the batch's scans that have instances. Points without an instance (stuff,
    unlabelled) do not count (module docstring).
    """

    def __init__(self, head: str = "mpnet", target: str = "instance"):
        super().__init__()
        self.head, self.target = head, target

    def forward(self, outputs: dict[str, dict], batch: dict) -> torch.Tensor:
        centroid = _needs(outputs, self.head, "centroid", "R_ins needs G (centroid_estimator: true)")
        ids = batch[self.target]
        has = ids >= 0
        if not has.any():
            return centroid.sum() * 0.0
        pred = centroid[has]
        coord = batch["coord"][has].to(pred.dtype)
        instance = torch.unique(ids[has], return_inverse=True)[1]
        num = int(instance.max()) + 1
        count = torch.bincount(instance, minlength=num).to(pred.dtype)
        gt = coord.new_zeros((num, 3)).index_add_(0, instance, coord) / count.unsqueeze(1)
        error = ((pred - gt[instance]) ** 2).sum(dim=1)
        per_instance = error.new_zeros(num).index_add_(0, instance, error) / count
        scan_of_instance = torch.zeros(num, dtype=torch.long, device=ids.device).scatter_(
            0, instance, batch["batch"][has])
        scans, scan = torch.unique(scan_of_instance, return_inverse=True)
        per_scan = per_instance.new_zeros(len(scans)).index_add_(0, scan, per_instance)
        return (per_scan / torch.bincount(scan, minlength=len(scans)).to(per_scan.dtype)).mean()
