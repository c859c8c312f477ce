"""What the instance heads share: the check of their thing classes, and panoptic prediction by
mean-shift on instance embeddings for the heads that group like ASIS (Wang et al. 2019, Sec.
3.1): voxseg.models.heads.asis and .mpnet.

Per scan: mean-shift (flat kernel) on the embeddings of the voxels predicted as thing classes,
class-agnostic as in ASIS; an instance's class is the mode of its points' semantic predictions
and its points take that class (panoptic consistency, the majority vote of Panoptic-PolarNet);
instances with fewer than `min_instance_points` points, or whose mode is a stuff class, are
dropped. ASIS gives no instance confidence; an instance is scored by the mean softmax
probability of its class over its points.
"""

from __future__ import annotations

import time

import torch

from voxseg.clustering import mean_shift

__all__ = ["thing_train_ids", "mean_shift_panoptic", "cluster_scan"]


def thing_train_ids(thing_classes: list[int], num_classes: int) -> list[int]:
    """`thing_classes` sorted without repeats; a ValueError if one is not a train id 0..num_classes - 1."""
    bad = [c for c in thing_classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"thing_classes {bad} are not train ids 0..{num_classes - 1}")
    return sorted(set(thing_classes))


@torch.no_grad()
def mean_shift_panoptic(outputs: dict, features, batch: dict, thing_classes: list[int], bandwidth: float,
                        min_instance_points: int, timings: dict | None = None) -> dict:
    """A head's `predict` from its outputs "logits" (N, C), "embedding" (N, E), "voxel_logits"
    (V, C) and "voxel_embedding" (V, E): {"segment" (N,) argmax train ids, voxel-voted inside
    instances, "segment_logits", "embedding", "instance" (N,) ids 0.. per scan (-1 none),
    "instance_score" (N,) (0 where none)}. The seconds spent clustering are added to
    timings["cluster_s"]."""
    prob = outputs["logits"].softmax(dim=1)
    segment = prob.argmax(dim=1)
    instance = torch.full_like(segment, -1)
    score = prob.new_zeros(len(segment))
    voxel_segment = outputs["voxel_logits"].argmax(dim=1)
    things = torch.as_tensor(thing_classes, dtype=torch.long, device=segment.device)
    start = time.perf_counter()
    for sample in torch.unique(batch["batch"]):
        cluster_scan(sample, outputs["voxel_embedding"], voxel_segment, features.voxel_batch, features.inverse,
                     batch["batch"], things, prob, segment, instance, score, bandwidth, min_instance_points)
    if segment.is_cuda:
        torch.cuda.synchronize(segment.device)
    if timings is not None:
        timings["cluster_s"] += time.perf_counter() - start
    return {"segment": segment, "segment_logits": outputs["logits"], "embedding": outputs["embedding"],
            "instance": instance, "instance_score": score}


def cluster_scan(sample, voxel_embedding: torch.Tensor, voxel_segment: torch.Tensor, voxel_batch: torch.Tensor,
                 inverse: torch.Tensor, point_batch: torch.Tensor, things: torch.Tensor, prob: torch.Tensor,
                 segment: torch.Tensor, instance: torch.Tensor, score: torch.Tensor, bandwidth: float,
                 min_instance_points: int) -> None:
    """Cluster scan `sample`'s thing voxels by mean-shift and write its instances, in place, into
    the per-point `segment` (the instance's majority class), `instance` (0.. in this scan) and
    `score` (mean probability of that class over the instance's points)."""
    voxels = torch.nonzero((voxel_batch == sample) & torch.isin(voxel_segment, things)).squeeze(1)
    if len(voxels) == 0:
        return
    cluster_of_voxel = torch.full((len(voxel_segment),), -1, dtype=torch.long, device=voxels.device)
    cluster_of_voxel[voxels] = mean_shift(voxel_embedding[voxels].float(), bandwidth)[0]
    cluster = cluster_of_voxel[inverse]
    points = torch.nonzero((point_batch == sample) & (cluster >= 0)).squeeze(1)
    next_id = 0
    for c in torch.unique(cluster[points]):
        members = points[cluster[points] == c]
        if len(members) < min_instance_points:
            continue
        label = torch.mode(segment[members]).values
        if not torch.isin(label, things):  # the mode may be stuff where point and voxel votes differ
            continue
        segment[members] = label
        instance[members] = next_id
        score[members] = prob[members, label].mean()
        next_id += 1
