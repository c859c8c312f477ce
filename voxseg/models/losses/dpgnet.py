"""Loss terms on the voxel-clique associations of DPGNet's differentiable grouping (voxseg.models.cliques).

DPGNet (Cheng et al.) trains its grouping through the downstream task's loss alone (Sec. 3.2,
"task-driven") and reproduces SSN (Sec. 4.2), whose superpixels are trained by a task-specific
reconstruction loss: labels R pooled into the superpixels with the column-normalised association
and mapped back with the row-normalised one, R* = Q^ Q~^T R, scored against R by cross-entropy.
CliqueReconstructionLoss is that loss on LiDAR labels. CliqueAffinityLoss is not in either
paper: it trains the clique-feature affinity that the instance head merges cliques by.

Both read a DPGNetHead's outputs: `association` (V, 27) Q, `candidates` (V, 27) clique
indices (-1 = none), `clique_features` (M, k) S, `clique_neighbours` (M, 27), `point_voxel` (N,).
Labels are batch[`target`] ids (instances, unique per batch, -1 = none); with `stuff: segments`
the labelled points without an instance form one label per (scene, class) of
batch[`semantic_target`] (the stuff rule of voxseg.models.losses.instance_targets, which
DiscriminativeLoss uses too); `ignore` leaves them out. A batch without labelled points gives a
zero that keeps the graph.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn as nn

from voxseg.config import Range
from voxseg.models.losses.instance_targets import instance_targets
from voxseg.registry import LOSSES


def pooled_labels(out: dict, ids: torch.Tensor) -> dict | None:
    """Labels pooled into the cliques with Q (eq. 2 applied to one-hot labels), over the labelled
    points: R[i, l] = sum_n Q[n, i] [l_n = l] / sum_n Q[n, i]. Computed only at the (clique,
    label) pairs that occur, as flat keys. None without labelled points."""
    points = torch.nonzero(ids >= 0).squeeze(1)
    if len(points) == 0:
        return None
    label = torch.unique(ids[points], return_inverse=True)[1]
    num_labels = int(label.max()) + 1
    voxel = out["point_voxel"][points]
    q, cand = out["association"][voxel], out["candidates"][voxel]  # (n, 27)
    valid = cand >= 0
    q_edge, clique_edge = q[valid], cand[valid]
    label_edge = label.unsqueeze(1).expand_as(cand)[valid]
    keys, key_of_edge = torch.unique(clique_edge * num_labels + label_edge, return_inverse=True)
    mass = q_edge.new_zeros(len(keys)).index_add(0, key_of_edge, q_edge)
    num_cliques = len(out["clique_features"])
    Z = q_edge.new_zeros(num_cliques).index_add(0, clique_edge, q_edge)
    R = mass / Z[keys // num_labels].clamp(min=torch.finfo(q.dtype).tiny)
    return {"q": q, "valid": valid, "key_of_edge": key_of_edge, "keys": keys, "R": R, "Z": Z,
            "num_labels": num_labels, "mass": mass}


def dominant_label(pooled: dict, num_cliques: int) -> torch.Tensor:
    """(M,) each clique's label of largest pooled mass (the smallest on ties), -1 where no labelled
    point associates with it."""
    keys, mass, L = pooled["keys"], pooled["mass"].detach(), pooled["num_labels"]
    clique, label = keys // L, keys % L
    best = mass.new_full((num_cliques,), float("-inf")).scatter_reduce(0, clique, mass, "amax")
    top = (mass == best[clique]) & (mass > 0)
    out = torch.full((num_cliques,), L, dtype=torch.long, device=keys.device)
    out = out.scatter_reduce(0, clique[top], label[top], "amin")
    return torch.where(out < L, out, torch.full_like(out, -1))


class _CliqueLoss(nn.Module):
    def __init__(self, head: str, target: str, semantic_target: str, stuff: Literal["segments", "ignore"]):
        super().__init__()
        self.head, self.target, self.semantic_target, self.stuff = head, target, semantic_target, stuff

    def pooled(self, outputs: dict, batch: dict) -> tuple[dict, dict | None]:
        out = outputs[self.head]
        return out, pooled_labels(out, instance_targets(batch, self.stuff, self.target, self.semantic_target))


@LOSSES.register()
class CliqueReconstructionLoss(_CliqueLoss):
    """SSN's reconstruction loss on the cliques: the mean over labelled points n of
    -log R*_n[l_n], R*_n = sum_i Q^_ni R[i, l_n] with Q^ the row-normalised association and R the
    labels pooled by the column-normalised one (eq. 2). Points count once each (several points of
    a voxel share its Q). 0 when every clique is pure, whatever Q."""

    def __init__(self, head: str = "dpgnet", target: str = "instance", semantic_target: str = "segment",
                 stuff: Literal["segments", "ignore"] = "segments",
                 eps: Annotated[float, Range(gt=0, lt=1)] = 1e-8):
        super().__init__(head, target, semantic_target, stuff)
        self.eps = eps

    def forward(self, outputs: dict[str, dict], batch: dict) -> torch.Tensor:
        out, pooled = self.pooled(outputs, batch)
        if pooled is None:
            return out["association"].sum() * 0.0
        q, valid = pooled["q"], pooled["valid"]
        row = q / q.sum(dim=1, keepdim=True).clamp(min=torch.finfo(q.dtype).tiny)  # Q^
        back = torch.zeros_like(q)
        back[valid] = pooled["R"][pooled["key_of_edge"]]  # R[candidate, own label]
        reconstructed = (row * back).sum(dim=1)
        return -torch.log(reconstructed.clamp(min=self.eps)).mean()


@LOSSES.register()
class CliqueAffinityLoss(_CliqueLoss):
    """Binary cross-entropy of the clique affinity A_ij = exp(-||S_i - S_j||^2) (eq. 1's kernel
    between clique features) of neighbouring cliques (27 cells, same scan) against whether their
    dominant labels (largest pooled label mass, no gradient) agree. Not in the paper: it trains
    what the instance head merges by. Mean over the pairs of cliques that both hold labels."""

    def __init__(self, head: str = "dpgnet", target: str = "instance", semantic_target: str = "segment",
                 stuff: Literal["segments", "ignore"] = "segments",
                 eps: Annotated[float, Range(gt=0, lt=1)] = 1e-6):
        super().__init__(head, target, semantic_target, stuff)
        self.eps = eps

    def forward(self, outputs: dict[str, dict], batch: dict) -> torch.Tensor:
        out, pooled = self.pooled(outputs, batch)
        S = out["clique_features"]
        if pooled is None:
            return S.sum() * 0.0
        label = dominant_label(pooled, len(S))
        neighbours = out["clique_neighbours"]
        i = torch.arange(len(S), device=S.device).unsqueeze(1).expand_as(neighbours)
        pair = (neighbours > i) & (label[i] >= 0) & (label[neighbours.clamp(min=0)] >= 0)  # each pair once
        i, j = i[pair], neighbours[pair]
        if len(i) == 0:
            return S.sum() * 0.0
        distance = (S[i] - S[j]).square().sum(dim=1)
        same = (label[i] == label[j]).to(S.dtype)
        log_a = -distance  # log A exactly
        log_not_a = torch.log(-torch.expm1(-distance.clamp(min=self.eps)))  # log(1 - A)
        return -(same * log_a + (1 - same) * log_not_a).mean()
