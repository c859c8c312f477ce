"""Probabilistic embeddings for instance segmentation (Zhang & Wonka, "Point Cloud Instance
Segmentation using Probabilistic Embeddings", CVPR 2021).

Every voxel (its points share its features and outputs) is embedded as a diagonal Gaussian
e_i ~ N(mu_i, diag(sigma_i^2)) (Sec. 3.1) and gets a score vector p_i over the classes. Three
output branches on the backbone features, with the activations of Table 2:

  mu_i    = x_i / coord_scale + tanh(o_i)       centres, 3-D (Table 2; see `coord_scale` below)
  sigma_i = exp(s_i)                            uncertainties (Table 2)
  p_i     = softmax(p~_i)                       class-centre score map P (Sec. 3.4)

Similarity: the Bhattacharyya kernel of the two Gaussians (eq. 1), computed in log space:

  log kappa(e_i, e_j) = log beta_ij - sum_d (mu_i^d - mu_j^d)^2 / alpha_ij^d
  alpha_ij^d = 4 (sigma_i^d^2 + sigma_j^d^2)
  log beta_ij = -1/2 sum_d log((sigma_i^d / sigma_j^d + sigma_j^d / sigma_i^d) / 2)
              = -1/2 sum_d log cosh(s_i^d - s_j^d)

The expansion printed under eq. 1 drops the square of (mu_i - mu_j); the closed form of the
Bhattacharyya coefficient (Jebara et al. 2004, the paper's [13]) has it, and so does eq. 3, so
the Mahalanobis term here is sum_d (mu_i^d - mu_j^d)^2 / alpha^d. (Figure 4's caption writes
exp(-1/2 dmu / alpha); the 1/2 is also not in the closed form and is not used.)

The four variants of Sec. 3.2 / Table 4 (`isotropic`, `heteroscedastic`):
  anisotropic heteroscedastic (the full model): sigma_i in R^3 per voxel;
  isotropic heteroscedastic: one sigma_i per voxel, Sigma_i = sigma_i^2 I, eq. 3 (beta's exponent
    becomes -3/2: the general formula with sigma_i broadcast to the 3 axes);
  homoscedastic (isotropic or not): a single Sigma per point cloud. The paper "learns to
    predict" it; here it is the mean over the scan's voxels of the uncertainty branch's output
    s_i (global average pooling, then exp), so it still depends on the input. With equal
    sigmas beta = 1 and the kernel is the RBF kernel of eq. 2.
`deterministic: true` is the deterministic baseline of Table 4 ("Reference": center-aware loss,
ExtDim): an `embed_dim`-D (6-D for ExtDim) point embedding with kappa = exp(-||e_i - e_j||^2)
(Sec. 3.2, "Compared to deterministic embedding"), i.e. the same kernel with a fixed, shared
sigma = 1/sqrt(8) (alpha = 1, beta = 1). Its first 3 dimensions are x / coord_scale + tanh(o),
the others tanh(o) (bounded like the spatial ones, with no position to offset).

Training (voxseg.models.losses.probabilistic): L = L_Ins + L_Score + 0.001 L_Reg (eq. 17).

Inference: the greedy clustering of eq. 16 (after Neven et al. 2019, the paper's [26]), per
scan over its voxels: the anchor (i0, l0) is the voxel and thing class with the highest score
P[i, l] among the unassigned voxels; every unassigned voxel with kappa(e_i, e_i0) >= tau (0.35)
joins it and gets class l0; repeat. The paper stops when no point is left (PartNet has no
stuff); a LiDAR scene is mostly stuff, so the loop stops, as Neven's does, when the best
remaining thing score falls below `min_anchor_score` (Neven's seed threshold, 0.5; 0 restores
"until no point is left"), or after `max_instances` anchors. Instances with fewer than
`min_instance_points` points are dropped (their points keep their own argmax class). An
instance's confidence is its anchor's score P[i0, l0] (Neven's seed score). Points outside
instances take the argmax of p_i (Sec. 3.4, condition 1).

`coord_scale` (metres): PartNet shapes are normalised to the unit sphere, so tanh offsets of
up to 1 reach any centre; LiDAR coordinates are metres, so positions are divided by
`coord_scale` first (the embedding space and sigma are in these units). With 2 m, offsets reach
2 m, about half a car's length.
"""

from __future__ import annotations

import math
import time
from typing import Annotated

import torch
import torch.nn as nn

from voxseg.config import Range
from voxseg.models.backbone_output import BackboneOutput
from voxseg.models.heads.instances import thing_train_ids
from voxseg.registry import HEADS

__all__ = ["log_bhattacharyya", "bhattacharyya", "greedy_cluster", "ProbabilisticEmbeddingHead",
           "DETERMINISTIC_LOG_SIGMA"]

# sigma of the deterministic kernel exp(-||e_i - e_j||^2): alpha = 4 (2 sigma^2) = 1
DETERMINISTIC_LOG_SIGMA = -0.5 * math.log(8.0)


def _log_cosh(x: torch.Tensor) -> torch.Tensor:
    """log cosh(x) = |x| + log1p(exp(-2|x|)) - log 2, without overflow."""
    a = x.abs()
    return a + torch.log1p(torch.exp(-2.0 * a)) - math.log(2.0)


def log_bhattacharyya(mu_i: torch.Tensor, log_sigma_i: torch.Tensor, mu_j: torch.Tensor,
                      log_sigma_j: torch.Tensor) -> torch.Tensor:
    """log kappa(e_i, e_j) of eq. 1 (eq. 3 when the sigmas have one column), broadcasting.

    mu_*: (..., D) means; log_sigma_*: (..., D) per-axis or (..., 1) isotropic log standard
    deviations (broadcast to the D axes, which gives eq. 3's exponent -D/2 of beta). Returns
    (...,) = log beta_ij - sum_d (mu_i^d - mu_j^d)^2 / alpha_ij^d with alpha_ij^d =
    4 (sigma_i^d^2 + sigma_j^d^2) and log beta_ij = -1/2 sum_d log cosh(log sigma_i^d - log sigma_j^d)
    (because (s_i/s_j + s_j/s_i) / 2 = cosh(log s_i - log s_j)). Always <= 0; 0 iff the two
    Gaussians are equal.
    """
    shape = torch.broadcast_shapes(mu_i.shape, mu_j.shape)
    ls_i = log_sigma_i.expand(*shape[:-1], shape[-1]) if log_sigma_i.shape[-1] == 1 else log_sigma_i
    ls_j = log_sigma_j.expand(*shape[:-1], shape[-1]) if log_sigma_j.shape[-1] == 1 else log_sigma_j
    log_beta = -0.5 * _log_cosh(ls_i - ls_j).sum(dim=-1)
    # 1 / alpha = exp(-log 4 - logaddexp(2 s_i, 2 s_j)): no overflow for large sigmas
    inv_alpha = torch.exp(-math.log(4.0) - torch.logaddexp(2.0 * ls_i, 2.0 * ls_j))
    mahalanobis = ((mu_i - mu_j) ** 2 * inv_alpha).sum(dim=-1)
    return log_beta - mahalanobis


def bhattacharyya(mu_i, log_sigma_i, mu_j, log_sigma_j) -> torch.Tensor:
    """kappa(e_i, e_j) in [0, 1] (eq. 1): exp of log_bhattacharyya."""
    return log_bhattacharyya(mu_i, log_sigma_i, mu_j, log_sigma_j).exp()


def greedy_cluster(score: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor, tau: float = 0.35,
                   min_anchor_score: float = 0.5, max_instances: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The greedy anchor clustering of eq. 16 on one scan.

    score: (V, T) the score map P restricted to the candidate (thing) classes; mu (V, D),
    log_sigma (V, D or 1). Repeats: (i0, l0) = argmax over unassigned i and all l of
    score[i, l] (eq. 16); stop if it is below `min_anchor_score`; every unassigned i with
    kappa(e_i, e_i0) >= tau gets the next cluster id (the anchor always does: kappa = 1).
    Each step is vectorised over the voxels. Returns (cluster (V,) ids 0.. or -1,
    anchor_column (C,) the l0 of each cluster, anchor_score (C,) its score[i0, l0]).
    """
    num = len(score)
    cluster = torch.full((num,), -1, dtype=torch.long, device=score.device)
    columns: list[int] = []
    scores: list[float] = []
    if num == 0 or score.shape[1] == 0:
        empty = torch.zeros(0, device=score.device)
        return cluster, empty.long(), empty
    best, best_column = score.max(dim=1)
    best = best.clone()
    log_tau = math.log(tau)
    limit = num if max_instances is None else max_instances
    while len(columns) < limit:
        value, anchor = best.max(dim=0)
        if not torch.isfinite(value) or value.item() < min_anchor_score:
            break
        log_k = log_bhattacharyya(mu, log_sigma, mu[anchor].unsqueeze(0), log_sigma[anchor].unsqueeze(0))
        members = (log_k >= log_tau) & (cluster < 0)
        members[anchor] = True
        cluster[members] = len(columns)
        best[members] = -math.inf
        columns.append(int(best_column[anchor]))
        scores.append(float(value))
    return (cluster, torch.tensor(columns, dtype=torch.long, device=score.device),
            torch.tensor(scores, dtype=score.dtype, device=score.device))


def fc_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_channels, out_channels), nn.BatchNorm1d(out_channels), nn.ReLU(inplace=True))


@HEADS.register()
class ProbabilisticEmbeddingHead(nn.Module):
    """Centres, uncertainties and class-centre scores per point (Sec. 3.1, 3.4, Table 2).

    Switches: `isotropic` (one sigma per voxel or per scan instead of one per axis),
    `heteroscedastic` (sigma per voxel; false: one per scan), `deterministic` (the Table 4
    deterministic baseline: no sigma, `embed_dim`-D embedding, kernel exp(-||e_i - e_j||^2)),
    `embed_dim` (3 for the probabilistic embedding, as the paper; 6 for ExtDim).

    forward -> {"logits" (N, classes) p~ (pre-softmax), "mu" (N, D), "log_sigma" (N, D or 1),
    and the voxel-level "voxel_logits", "voxel_mu", "voxel_log_sigma"}. predict -> {"segment",
    "segment_logits", "embedding" (mu), "instance" (-1 none, 0.. per scan), "instance_score"}.
    """

    predicts = ("segment", "segment_logits", "embedding", "instance", "instance_score")  # what `predict` returns

    def __init__(self, in_channels: int, num_classes: Annotated[int, Range(ge=1)], thing_classes: list[int],
                 channels: Annotated[int, Range(ge=1)] = 64, embed_dim: Annotated[int, Range(ge=1)] = 3,
                 isotropic: bool = False, heteroscedastic: bool = True, deterministic: bool = False,
                 coord_scale: Annotated[float, Range(gt=0)] = 2.0,
                 init_sigma: Annotated[float, Range(gt=0)] = 0.2,
                 tau: Annotated[float, Range(gt=0, le=1)] = 0.35,
                 min_anchor_score: Annotated[float, Range(ge=0, le=1)] = 0.5,
                 max_instances: Annotated[int, Range(ge=1)] = 256,
                 min_instance_points: Annotated[int, Range(ge=1)] = 30):
        super().__init__()
        if not deterministic and embed_dim != 3:
            raise ValueError("the probabilistic embedding is tri-variate (Sec. 3.1): embed_dim must be 3")
        self.num_classes, self.thing_classes = num_classes, thing_train_ids(thing_classes, num_classes)
        self.embed_dim, self.isotropic, self.heteroscedastic = embed_dim, isotropic, heteroscedastic
        self.deterministic, self.coord_scale = deterministic, coord_scale
        self.tau, self.min_anchor_score = tau, min_anchor_score
        self.max_instances, self.min_instance_points = max_instances, min_instance_points
        self.center_branch = nn.Sequential(fc_bn_relu(in_channels, channels), nn.Linear(channels, embed_dim))
        self.score_branch = nn.Sequential(fc_bn_relu(in_channels, channels), nn.Linear(channels, num_classes))
        self.sigma_branch = None
        if not deterministic:
            hidden = fc_bn_relu(in_channels, channels)  # built before `sigma`, as the random init draws
            sigma = nn.Linear(channels, 1 if isotropic else embed_dim)
            self.sigma_branch = nn.Sequential(hidden, sigma)
            nn.init.zeros_(sigma.weight)  # start every sigma at init_sigma
            nn.init.constant_(sigma.bias, math.log(init_sigma))
        self.timings = {"cluster_s": 0.0}

    def forward(self, features: BackboneOutput, batch: dict) -> dict:
        f = features.voxel.F
        position = features.to_voxels(batch["coord"].to(f.dtype)) / self.coord_scale  # voxel's mean point
        offset = torch.tanh(self.center_branch(f))
        spatial = min(3, self.embed_dim)
        mu = torch.cat([position[:, :spatial] + offset[:, :spatial], offset[:, spatial:]], dim=1)
        if self.sigma_branch is None:
            log_sigma = f.new_full((len(f), 1), DETERMINISTIC_LOG_SIGMA)
        else:
            log_sigma = self.sigma_branch(f)
            if not self.heteroscedastic:  # one Sigma per point cloud: the scan's mean
                scan = features.voxel_batch
                count = torch.bincount(scan).clamp(min=1).to(f.dtype)
                mean = log_sigma.new_zeros((len(count), log_sigma.shape[1])).index_add_(0, scan, log_sigma)
                log_sigma = (mean / count.unsqueeze(1))[scan]
        logits = self.score_branch(f)
        inv = features.inverse
        return {"logits": logits[inv], "mu": mu[inv], "log_sigma": log_sigma[inv],
                "voxel_logits": logits, "voxel_mu": mu, "voxel_log_sigma": log_sigma}

    @torch.no_grad()
    def predict(self, outputs: dict, features: BackboneOutput, batch: dict) -> dict:
        prob = outputs["logits"].softmax(dim=1)
        segment = prob.argmax(dim=1)
        instance = torch.full_like(segment, -1)
        score = prob.new_zeros(len(segment))
        voxel_prob = outputs["voxel_logits"].softmax(dim=1)
        things = torch.as_tensor(self.thing_classes, dtype=torch.long, device=segment.device)
        start = time.perf_counter()
        for sample in torch.unique(batch["batch"]):
            self._instances(sample, outputs, features, batch["batch"], voxel_prob, things, segment, instance, score)
        if segment.is_cuda:
            torch.cuda.synchronize(segment.device)
        self.timings["cluster_s"] += time.perf_counter() - start
        return {"segment": segment, "segment_logits": outputs["logits"], "embedding": outputs["mu"],
                "instance": instance, "instance_score": score}

    def _instances(self, sample, outputs, features, point_batch, voxel_prob, things, segment, instance,
                   score) -> None:
        voxels = torch.nonzero(features.voxel_batch == sample).squeeze(1)
        if len(voxels) == 0 or len(things) == 0:
            return
        cluster, column, anchor_score = greedy_cluster(
            voxel_prob[voxels][:, things].float(), outputs["voxel_mu"][voxels].float(),
            outputs["voxel_log_sigma"][voxels].float(), self.tau, self.min_anchor_score, self.max_instances)
        cluster_of_voxel = torch.full((len(voxel_prob),), -1, dtype=torch.long, device=voxels.device)
        cluster_of_voxel[voxels] = cluster
        point_cluster = cluster_of_voxel[features.inverse]
        points = torch.nonzero((point_batch == sample) & (point_cluster >= 0)).squeeze(1)
        counts = torch.bincount(point_cluster[points], minlength=len(column))
        next_id = 0
        for c in range(len(column)):
            if int(counts[c]) < self.min_instance_points:
                continue
            members = points[point_cluster[points] == c]
            segment[members] = things[column[c]]
            instance[members] = next_id
            score[members] = anchor_score[c].to(score.dtype)
            next_id += 1
