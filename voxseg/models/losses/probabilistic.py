"""The losses of the probabilistic-embedding head (Zhang & Wonka 2021; voxseg.models.heads.probabilistic),
selected by name in YAML like voxseg.models.losses. The paper's objective (eq. 17) is

    L = L_Ins + L_Score + 0.001 L_Reg

written in a config as three terms with loss_weights {ins: 1, score: 1, reg: 0.001}.

Each loss reads a head's per-point "mu", "log_sigma" (and "logits") and the batch's `instance`
ids (>= 0, unique per batch, -1 = none) and `segment` train ids (-1 = ignored). Every term is
computed per scan (the paper's sums run over one point cloud) and averaged over the batch's
scans that have what the term needs; without any, a zero that keeps the graph.

Choices where the paper (PartNet: every point belongs to a part instance) is silent:
* Points that are labelled (segment >= 0) but in no instance (LiDAR stuff) are in the N of
  eqs. 5-6 with z_i = none: they only have the "otherwise" terms, so they are pushed away from
  every instance centre, as background pixels are in Neven et al. 2019 ([26]).
  `stuff: ignore` leaves them out. Ignored points (segment -1 and no instance) never count.
* -ln(1 - kappa) is taken as -log(-expm1(log kappa)) with log kappa <= -1e-30 (at most ~69, as
  PyTorch's BCE clamps its logs); -ln kappa is exact in log space.
* In eq. 12 the L columns of P are all classes (the softmax is over all of them, Table 2). Q is
  the paper's for thing points (eq. 11: Q[i, y_i] = kappa(e_i, c_{z_i}), 0 elsewhere); a stuff
  point has no instance and would get Q = 0, i.e. no semantic supervision at all, so with
  `stuff_target: onehot` (default) its row is the one-hot of its class (eq. 9's target: a stuff
  region as one instance whose every point is a centre). `stuff_target: none` keeps Q = 0.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn

from voxseg.models.heads.probabilistic import log_bhattacharyya
from voxseg.registry import LOSSES

__all__ = ["ProbabilisticInstanceLoss", "CenterAwareScoreLoss", "EntropyRegularizer", "instance_centres"]


def instance_centres(mu: torch.Tensor, log_sigma: torch.Tensor, instance: torch.Tensor, num: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian of each instance centre c_k (eqs. 4a-4c) from its points' Gaussians.

    mu (M, D), log_sigma (M, D or 1) of the points in instances, instance (M,) in 0..num-1.
    mu_hat_k = mean mu_i (eq. 4b); Sigma_hat_k = mean Sigma_i (eq. 4c, as printed: the mean of the
    variances, not the variance of the mean), so log sigma_hat_k = 1/2 log mean exp(2 log sigma_i),
    computed with a per-instance max shift.
    """
    count = torch.bincount(instance, minlength=num).to(mu.dtype).unsqueeze(1)
    mu_hat = mu.new_zeros((num, mu.shape[1])).index_add_(0, instance, mu) / count
    two = 2.0 * log_sigma
    index = instance.unsqueeze(1).expand_as(two)
    shift = two.new_full((num, two.shape[1]), -torch.inf).scatter_reduce_(0, index, two.detach(), "amax")
    summed = two.new_zeros((num, two.shape[1])).index_add_(0, instance, torch.exp(two - shift[instance]))
    log_sigma_hat = 0.5 * (torch.log(summed / count) + shift)
    return mu_hat, log_sigma_hat


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A zero loss that keeps the graph of `tensors` (at least one)."""
    zero = sum(t.sum() * 0.0 for t in tensors)
    if not isinstance(zero, torch.Tensor):
        raise ValueError("_zero needs at least one tensor")
    return zero


@LOSSES.register()
class ProbabilisticInstanceLoss(nn.Module):
    """L_Ins = L_InsCE + log-Dice (eqs. 5-6) against the instance centres c_k (eqs. 4b-4c), per scan:

      L_InsCE = 1/(N K) sum_k sum_i { -ln kappa(e_i, c_k) if z_i = k; -ln(1 - kappa(e_i, c_k)) otherwise }
      L_Ins   = L_InsCE - ln( 2 sum_{k,i} kappa(e_i, c_k) 1[z_i = k] / sum_{k,i} (kappa(e_i, c_k) + 1[z_i = k]) )

    N: the scan's points in the loss (see the module docstring for stuff), K: its instances.
    Gradients flow through the centres too. Scans without instances do not count.
    """

    def __init__(self, head: str = "instance", target: str = "instance", semantic_target: str = "segment",
                 stuff: Literal["negatives", "ignore"] = "negatives"):
        super().__init__()
        self.head, self.target, self.semantic_target, self.stuff = head, target, semantic_target, stuff

    def forward(self, outputs: dict[str, dict], batch: dict) -> torch.Tensor:
        out = outputs[self.head]
        mu, log_sigma = out["mu"], out["log_sigma"]
        ids = batch[self.target]
        in_loss = ids >= 0
        if self.stuff == "negatives":
            in_loss = in_loss | (batch[self.semantic_target] >= 0)
        scans = batch["batch"]
        terms = []
        for sample in torch.unique(scans[ids >= 0]):
            rows = torch.nonzero(in_loss & (scans == sample)).squeeze(1)
            z = ids[rows]
            has = z >= 0
            labels, k_of = torch.unique(z[has], return_inverse=True)
            num = len(labels)
            mu_hat, ls_hat = instance_centres(mu[rows][has], log_sigma[rows][has], k_of, num)
            log_k = log_bhattacharyya(mu[rows].unsqueeze(1), log_sigma[rows].unsqueeze(1),
                                      mu_hat.unsqueeze(0), ls_hat.unsqueeze(0))  # (N, K)
            member = torch.zeros_like(log_k, dtype=torch.bool)
            member[torch.nonzero(has).squeeze(1), k_of] = True
            log_1m = torch.log(-torch.expm1(log_k.clamp(max=-1e-30)))
            ce = torch.where(member, -log_k, -log_1m).sum() / (log_k.numel())
            kappa = log_k.exp()
            dice = 2.0 * (kappa * member).sum() / (kappa.sum() + member.sum())
            terms.append(ce - torch.log(dice))
        if not terms:
            return _zero(mu, log_sigma)
        return torch.stack(terms).mean()


@LOSSES.register()
class CenterAwareScoreLoss(nn.Module):
    """The center-aware loss (eqs. 10-12) on a head's per-point `logits` (P = softmax), per scan:

      Q~[i, k] = kappa(e_i, c_k) 1[z_i = k]                         (eq. 10)
      Q[i, l]  = max_{k: y(k) = l} Q~[i, k]                          (eq. 11)
      L_Score  = 1/(N L) sum_i sum_l -Q[i, l] log P[i, l]            (eq. 12)

    Q is a fixed target (computed without gradient). Since a point is in one instance at most,
    Q[i, y_i] = kappa(e_i, c_{z_i}) and the other entries of a thing point's row are 0. Stuff
    rows: see the module docstring (`stuff_target`). N: the scan's labelled points (segment >= 0),
    L: the number of classes.
    """

    def __init__(self, head: str = "instance", target: str = "instance", semantic_target: str = "segment",
                 stuff_target: Literal["onehot", "none"] = "onehot"):
        super().__init__()
        self.head, self.target, self.semantic_target, self.stuff_target = head, target, semantic_target, stuff_target

    @torch.no_grad()
    def target_q(self, out: dict, batch: dict) -> torch.Tensor:
        """Q (N, L) for every point of the batch (rows of unlabelled points are 0)."""
        logits, mu, log_sigma = out["logits"], out["mu"], out["log_sigma"]
        ids, segment = batch[self.target], batch[self.semantic_target]
        q = logits.new_zeros(logits.shape)
        if self.stuff_target == "onehot":
            stuff = (ids < 0) & (segment >= 0)
            q[stuff, segment[stuff]] = 1.0
        # instances per scan (ids are unique per batch; keyed by scan too, to be safe)
        key = torch.where(ids >= 0, batch["batch"] * (int(ids.max()) + 1) + ids, -1) if len(ids) else ids
        members = torch.nonzero(key >= 0).squeeze(1)
        if len(members):
            labels, k_of = torch.unique(key[members], return_inverse=True)
            # centres from all points of each instance (eqs. 4b-4c), as in ProbabilisticInstanceLoss
            mu_hat, ls_hat = instance_centres(mu[members], log_sigma[members], k_of, len(labels))
            things = segment[members] >= 0
            rows, k_of = members[things], k_of[things]
            kappa = log_bhattacharyya(mu[rows], log_sigma[rows], mu_hat[k_of], ls_hat[k_of]).exp()
            q[rows, segment[rows]] = kappa.to(q.dtype)
        return q

    def forward(self, outputs: dict[str, dict], batch: dict) -> torch.Tensor:
        out = outputs[self.head]
        logits = out["logits"]
        labelled = batch[self.semantic_target] >= 0
        if not labelled.any():
            return _zero(logits)
        q = self.target_q(out, batch)
        per_point = -(q * torch.log_softmax(logits, dim=1)).sum(dim=1) / logits.shape[1]  # 1/L sum_l
        scans = batch["batch"][labelled]
        present, scan = torch.unique(scans, return_inverse=True)
        total = per_point.new_zeros(len(present)).index_add_(0, scan, per_point[labelled])
        count = torch.bincount(scan, minlength=len(present)).to(per_point.dtype)
        return (total / count).mean()


@LOSSES.register()
class EntropyRegularizer(nn.Module):
    """L_Reg = sum_i H(e_i) = sum_i [3/2 ln(2 pi e) + 1/2 ln (sigma_i^1 sigma_i^2 sigma_i^3)^2] (eq. 8),
    the differential entropy of each point's Gaussian, summed over the scan's points (as printed:
    a sum, not a mean) and averaged over the batch's scans. An isotropic sigma counts for the
    3 axes. Weighted 0.001 in eq. 17 (loss_weights). `points`: which points the sum runs over:
    `all` (as printed: on PartNet every point lies in an instance), `instances` the points with
    an instance id (>= 0), `labelled` those with segment >= 0 or an instance. On LiDAR use
    `instances`: stuff points have no centre, so nothing in L_Ins holds their sigma up (as
    negatives, a smaller sigma only lowers their loss) and minimising their entropy drives it
    to 0 without bound, and the loss to inf (docs/results.md).
    `reduction`: `sum` over a scan's points as printed, or `mean`. L_Ins (eqs. 5-6) is a mean
    over N K terms, so a point's share of its pull on log sigma is ~1.5 / (N K) against 0.003
    from 0.001 L_Reg summed: with 10^4 points the regulariser wins and sigmas still collapse,
    even over instance points only (docs/results.md); the mean keeps the two in the proportion
    of the paper's per-point terms.
    """

    def __init__(self, head: str = "instance", semantic_target: str = "segment",
                 points: Literal["instances", "labelled", "all"] = "all", reduction: Literal["sum", "mean"] = "sum",
                 dims: int = 3):
        super().__init__()
        self.head, self.semantic_target, self.points, self.dims = head, semantic_target, points, dims
        self.reduction = reduction
        self.target = None

    def forward(self, outputs: dict[str, dict], batch: dict) -> torch.Tensor:
        log_sigma = outputs[self.head]["log_sigma"]
        if self.points == "instances":
            keep = batch["instance"] >= 0
        elif self.points == "labelled":
            keep = batch[self.semantic_target] >= 0
            if "instance" in batch:
                keep = keep | (batch["instance"] >= 0)
        else:
            keep = torch.ones(len(log_sigma), dtype=torch.bool, device=log_sigma.device)
        if not keep.any():
            return _zero(log_sigma)
        # ln (prod_d sigma^d)^2 / 2 = sum_d log sigma^d; an isotropic column stands for all dims
        log_det_half = log_sigma.sum(dim=1) * (self.dims if log_sigma.shape[1] == 1 else 1)
        entropy = 0.5 * self.dims * math.log(2 * math.pi * math.e) + log_det_half
        scans = batch["batch"][keep]
        present, scan = torch.unique(scans, return_inverse=True)
        total = entropy.new_zeros(len(present)).index_add_(0, scan, entropy[keep])
        if self.reduction == "mean":
            total = total / torch.bincount(scan, minlength=len(present)).to(total.dtype)
        return total.mean()
