"""ISCC's loss terms (slides, "Loss formulation") and the group pooling they read.

    f = avg_pool(h, V)                                    group_average, shared_groups
    L_local = -sum_{i in K} log exp(f1_i.f2_i / tau) / sum_{j in K} exp(f1_i.f2_j / tau)
                                                          local_info_nce
    L_c = -sum_m y_m log p^c_m,  p^c = softmax(cos(f1, c_m) / tau)
                                                          cosine_scores, clustering_loss
    L_o = -sum_{m=1..K} z_m log p^o_m                     occupancy_labels, occupancy_loss
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_average(values: torch.Tensor, group: torch.Tensor,
                  batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """avg_pool(h, V): the mean of `values` (N, C) over the points of each group.

    group (N,) int64 ids, -1 = none (ignored); batch (N,) scene of each point. Returns (ids (G,)
    sorted, means (G, C), scene (G,)): a group's ids are unique across the batch (collate shifts
    them), so all its points share one scene.
    """
    keep = group >= 0
    ids, inverse = torch.unique(group[keep], return_inverse=True)
    sums = values.new_zeros((len(ids), values.shape[1])).index_add_(0, inverse, values[keep])
    counts = torch.bincount(inverse, minlength=len(ids)).clamp_min(1).to(values.dtype)
    scene = batch.new_zeros(len(ids)).scatter_(0, inverse, batch[keep])
    return ids, sums / counts.unsqueeze(1), scene


def shared_groups(ids1: torch.Tensor, ids2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of two sorted id lists (group_average's) that hold the same group, in id order: only
    groups present in both views enter the contrastive terms."""
    rows1 = torch.nonzero(torch.isin(ids1, ids2)).squeeze(1)
    rows2 = torch.nonzero(torch.isin(ids2, ids1)).squeeze(1)
    return rows1, rows2


def local_info_nce(f1: torch.Tensor, f2: torch.Tensor, scene: torch.Tensor, temperature: float) -> torch.Tensor:
    """The local contrastive loss: InfoNCE over the K shared groups of each scene.

    f1 (G, d) student and f2 (G, d) teacher features of the same groups (row i = group i),
    L2-normalised here; scene (G,). Per scene s with K_s >= 2 groups the loss is the mean over
    its groups i of -log exp(f1_i.f2_i / tau) / sum_j exp(f1_i.f2_j / tau), j over the scene's
    groups only (the slides' sum over K); the result is the mean over those scenes, so each
    scene weighs the same whatever its group count. A scene with fewer than 2 groups has no
    negative and is left out; with none left the loss is 0 (still attached to f1's graph).
    """
    f1, f2 = F.normalize(f1, dim=1), F.normalize(f2, dim=1)
    terms = []
    for s in torch.unique(scene):
        rows = torch.nonzero(scene == s).squeeze(1)
        if len(rows) < 2:
            continue
        logits = f1[rows] @ f2[rows].T / temperature
        terms.append(F.cross_entropy(logits, torch.arange(len(rows), device=logits.device)))
    return torch.stack(terms).mean() if terms else f1.sum() * 0.0


def cosine_scores(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """(G, M) cosine similarities of features (G, d) to the M prototypes (M, d)."""
    return F.normalize(features, dim=1) @ F.normalize(prototypes, dim=1).T


def clustering_loss(scores: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_c = -sum_m y_m log p^c_m with p^c = softmax(scores / tau) over the M prototypes, for
    scores (G, M) and targets y (G, M) whose rows sum to 1; the mean over the G groups of the batch
    (as SwAV averages its swapped-prediction loss over samples). 0 for G = 0."""
    if len(scores) == 0:
        return scores.sum() * 0.0
    return -(target * F.log_softmax(scores / temperature, dim=1)).sum(1).mean()


def prototype_entropy(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Entropy (nats) of the batch's mean prototype assignment mean_g softmax(scores_g / tau):
    log M when the groups spread evenly over the prototypes, 0 when all pick one (collapse)."""
    if len(scores) == 0:
        return scores.new_zeros(())
    mean = F.softmax(scores / temperature, dim=1).mean(0)
    return -(mean * torch.log(mean.clamp_min(1e-12))).sum()


def occupancy_labels(surface_offset: torch.Tensor, bins: int, max_distance: float) -> torch.Tensor:
    """The K-bin target of each query: its signed distance along the ray from the removed surface
    point (metres, + behind the surface, - in front) binned uniformly over [-d_max, +d_max] into
    `bins` half-open bins [e_k, e_{k+1}), the two outer bins open-ended. With K = 2 the one edge is
    0: in front (empty) -> 0, on or behind the surface (occupied) -> 1, ALSO's binary occupancy."""
    if bins < 2:
        raise ValueError(f"occupancy needs at least 2 bins, got {bins}")
    edges = torch.linspace(-max_distance, max_distance, bins + 1, dtype=surface_offset.dtype,
                           device=surface_offset.device)[1:-1]
    return torch.bucketize(surface_offset.contiguous(), edges, right=True)


def occupancy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_o = -sum_m z_m log p^o_m with z the one-hot bin of each query and p^o = softmax(logits)
    (Q, K); the mean over the Q queries of the batch. 0 for Q = 0."""
    if len(logits) == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels)


def intensity_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ALSO's intensity term (Boulch et al., CVPR 2023; their SemanticKITTI setting): the mean
    |predicted - target| over the queries that have a target, those behind and in front of a
    surface, whose target is the intensity of the point they were cast through; the queries in
    free space (target NaN) have none. 0 where no query has one. No host sync: the mean is a
    masked sum over a clamped count."""
    has = torch.isfinite(target)
    error = torch.where(has, (predicted - target.nan_to_num()).abs(), predicted.new_zeros(()))
    return error.sum() / has.sum().clamp_min(1).to(error.dtype)

