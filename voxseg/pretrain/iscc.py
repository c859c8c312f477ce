"""ISCC: Implicit Surface Contrastive Clustering (Zhang, Bai, Li, CVPR 2023), self-supervised
pretraining of a sparse backbone.

    model:
      type: ISCC
      backbone: {type: MinkUNet14A, in_channels: 1, voxel_size: 0.05}
      num_prototypes: 100
      occupancy_bins: 32

The slides' algorithm, per step: h1 = F_theta(x^_i) (student, view1), h2 = F_m(x^_j) (teacher,
view2); f1 = avg_pool(h1, V), f2 = avg_pool(h2, V) over the groups V shared by both views;
L = w_c L_c(f1, f2, F_g) + w_l L_local(f1, f2) + w_o L_o(h1, Q^1); update F_g with f2 and F_theta.

Choices the slides leave open (each names the closest public method):
  * group features: the mean over a group's points of their voxel's feature (points, not voxels,
    are averaged: the slides pool "point groups"), then a projection head Linear-ReLU-Linear
    (MoCo v2, SegContrast) to `proj_dim` (128, MoCo / SegContrast); the teacher has its own copy
    of the head. Groups present in one view only are dropped.
  * teacher: parameters are an EMA of the student's backbone and head (voxseg.pretrain.teacher:
    MoCo-style, not ModelEMA; see there why); it runs under no_grad with batch statistics.
  * global clustering (SwAV): M learnable prototypes, cosine scores, p^c = softmax(cos / tau_c),
    tau_c = 0.1; targets y = Sinkhorn-Knopp over the teacher's scores of the queue and the
    batch (eps 0.05, 3 iterations), both scored against the current prototypes. Only the student
    is trained to predict the teacher's code (the slides' L_c(f1, f2, F_g); SwAV swaps both ways).
  * local contrast: InfoNCE per scene over its shared groups, tau_l = 0.1 (SegContrast, TARL),
    teacher features as keys, mean over groups then scenes (voxseg.pretrain.losses).
  * occupancy: K bins of the query's signed distance along its ray over [-d_max, d_max] (K = 2:
    ALSO's occupancy), decoder on the nearest student voxel + relative position (ALSO-like;
    voxseg.pretrain.occupancy). Queries are in view1's coordinates, so h1 is read.
  * intensity (`use_intensity`, off by default: not in the slides): ALSO's second decoder
    output, the intensity of the surface point a query was cast through, regressed with L1 at the
    queries behind and in front of the surface (voxseg.pretrain.losses.intensity_loss); ALSO's
    SemanticKITTI setting, weight 1. It needs the occupancy decoder, one more output of its MLP.
  * the queue holds the teacher's L2-normalised projected group features, oldest overwritten
    first (voxseg.pretrain.queue); with queue_size 0 Sinkhorn balances the batch alone.
  * the global and occupancy terms are means over the batch's groups / queries; weights 1.
  * modules of switched-off terms are not built: occ-only has no teacher, projector, prototypes
    or queue (nothing would train them, and DDP would find them unused).
  * under DDP (torchrun) the teacher features f2 of every process are gathered in training
    (voxseg.distributed.all_gather_rows): Sinkhorn balances the global batch with the
    queue, as SwAV's distributed Sinkhorn does, each process keeps its own rows of the targets,
    and every process pushes the same gathered rows, as MoCo's queue does, so the queues stay
    identical (DDP's buffer broadcast from rank 0 then changes nothing). Call momentum_update on
    the unwrapped model (DDP's .module).

Training order (what a training tool must do each step):
    out = model(batch)        # forward: teacher, student, losses; in training mode it then
                              # pushes this batch's teacher group features f2 into the queue
                              # (after the targets were computed from the queue's old contents)
    out["loss"].backward(); optimizer.step()
    model.momentum_update()   # teacher <- EMA of the student, after every optimizer step
forward returns loss (weighted sum), loss_local / loss_global / loss_occupancy / loss_intensity (the terms in use,
detached, unweighted), prototype_entropy (with the global term: entropy of the batch's mean
prototype assignment, log M when balanced, 0 when collapsed) and queue_fill (rows in the queue).

The student backbone is `backbone`, so voxseg.engine.checkpoint.load_backbone reads a pretraining
checkpoint's `backbone.*` tensors into a fine-tuning backbone; the teacher lives under `teacher.`.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

from voxseg.config import Component, InvalidValue, Range
from voxseg.distributed import all_gather_rows
from voxseg.pretrain.losses import (
    clustering_loss,
    cosine_scores,
    group_average,
    intensity_loss,
    local_info_nce,
    occupancy_labels,
    occupancy_loss,
    prototype_entropy,
    shared_groups,
)
from voxseg.pretrain.occupancy import OccupancyDecoder
from voxseg.pretrain.queue import FeatureQueue
from voxseg.pretrain.sinkhorn import sinkhorn_targets
from voxseg.pretrain.teacher import make_teacher, momentum_update_
from voxseg.registry import BACKBONES, MODELS

TERMS = ("local", "global", "occupancy", "intensity")


@MODELS.register()
class ISCC(nn.Module):
    def __init__(
        self,
        backbone: Component,
        momentum: Annotated[float, Range(ge=0, le=1)] = 0.999,
        proj_dim: Annotated[int, Range(ge=1)] = 128,
        proj_hidden: Annotated[int | None, Range(ge=1)] = None,
        num_prototypes: Annotated[int, Range(ge=2)] = 100,
        queue_size: Annotated[int, Range(ge=0)] = 4096,
        local_temperature: Annotated[float, Range(gt=0)] = 0.1,
        cluster_temperature: Annotated[float, Range(gt=0)] = 0.1,
        sinkhorn_epsilon: Annotated[float, Range(gt=0)] = 0.05,
        sinkhorn_iterations: Annotated[int, Range(ge=1)] = 3,
        occupancy_bins: Annotated[int, Range(ge=2)] = 32,
        occupancy_range: Annotated[float, Range(gt=0)] = 0.1,
        occupancy_hidden: Annotated[int, Range(ge=1)] = 64,
        use_local: bool = True,
        use_global: bool = True,
        use_occupancy: bool = True,
        use_intensity: bool = False,
        loss_weights: dict[str, Annotated[float, Range(ge=0)]] = {},  # noqa: B006
    ):
        """proj_hidden: the projection head's hidden width (None: the backbone's out_channels);
        queue_size: C rows of F_g (0: Sinkhorn on the batch alone); occupancy_range: d_max in
        metres, to match the data side's query distance (PretrainPairs' surface_distance, 0.1 m);
        use_intensity: also regress each query's surface intensity (ALSO), with use_occupancy;
        loss_weights: per term (local, global, occupancy, intensity), default 1; weights of terms
        switched off are ignored, so one base config serves every ablation row."""
        super().__init__()
        self.check_config({"use_local": use_local, "use_global": use_global, "use_occupancy": use_occupancy,
                           "use_intensity": use_intensity, "loss_weights": loss_weights})
        self.momentum = momentum
        self.use_local, self.use_global, self.use_occupancy = use_local, use_global, use_occupancy
        self.use_intensity = use_intensity
        self.local_temperature, self.cluster_temperature = local_temperature, cluster_temperature
        self.sinkhorn_epsilon, self.sinkhorn_iterations = sinkhorn_epsilon, sinkhorn_iterations
        self.occupancy_bins, self.occupancy_range = occupancy_bins, occupancy_range
        self.loss_weights = {t: float(loss_weights.get(t, 1.0)) for t in TERMS}

        self.backbone = BACKBONES.build(backbone)
        channels = self.backbone.out_channels
        if use_local or use_global:
            hidden = proj_hidden or channels
            projector = lambda: nn.Sequential(  # noqa: E731
                nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, proj_dim))
            self.projector = projector()
            self.teacher = make_teacher(
                nn.ModuleDict({"backbone": self.backbone, "projector": self.projector}),
                lambda: nn.ModuleDict({"backbone": BACKBONES.build(backbone), "projector": projector()}))
        if use_global:
            self.prototypes = nn.Parameter(F.normalize(torch.randn(num_prototypes, proj_dim), dim=1))
            self.queue = FeatureQueue(queue_size, proj_dim) if queue_size > 0 else None
        if use_occupancy:
            self.voxel_size = float(self.backbone.voxel_size)
            if not self.voxel_size > 0:
                raise ValueError(f"the occupancy term needs a backbone with a voxel_size > 0, "
                                 f"{backbone['type']} has {self.voxel_size}")
            self.decoder = OccupancyDecoder(channels, occupancy_bins + int(use_intensity), occupancy_hidden)

    @staticmethod
    def check_config(cfg: dict) -> None:
        """At least one term is on, and each loss weight names a term (voxseg.config validates it
        so, and the constructor again); the weights' Range (>= 0) refuses a negative one, which
        would train to make its term worse."""
        if not (cfg["use_local"] or cfg["use_global"] or cfg["use_occupancy"]):
            raise InvalidValue("use_local", "ISCC needs at least one of use_local, use_global, use_occupancy")
        if cfg.get("use_intensity") and not cfg["use_occupancy"]:
            raise InvalidValue("use_intensity", "needs use_occupancy: the occupancy decoder predicts the intensity")
        for name in cfg.get("loss_weights", {}):
            if name not in TERMS:
                raise InvalidValue(f"loss_weights.{name}", f"names no ISCC term; terms: {', '.join(TERMS)}")

    @torch.no_grad()
    def momentum_update(self) -> None:
        """Teacher <- EMA of the student (backbone and projection head), p_t = m p_t + (1 - m) p_s.
        Call after every optimizer step; it changes nothing else (the queue is updated in forward)."""
        if self.use_local or self.use_global:
            momentum_update_(self.teacher["backbone"], self.backbone, self.momentum)
            momentum_update_(self.teacher["projector"], self.projector, self.momentum)

    def forward(self, batch: dict) -> dict:
        view1 = batch["view1"]
        student = self.backbone(view1)
        terms: dict[str, torch.Tensor] = {}
        out: dict[str, torch.Tensor] = {}
        if self.use_local or self.use_global:
            view2 = batch["view2"]
            ids1, pooled1, scene = group_average(student.point, view1["group"], view1["batch"])
            with torch.no_grad():
                teacher = self.teacher["backbone"](view2)
                ids2, pooled2, _ = group_average(teacher.point, view2["group"], view2["batch"])
            rows1, rows2 = shared_groups(ids1, ids2)
            f1 = self.projector(pooled1[rows1])
            with torch.no_grad():
                f2 = F.normalize(self.teacher["projector"](pooled2[rows2]), dim=1)
            if self.use_local:
                terms["local"] = local_info_nce(f1, f2, scene[rows1], self.local_temperature)
            if self.use_global:
                # every process's f2 in training under DDP (module docstring); f2 and 0 otherwise.
                # Only the global term needs them: local-only runs make no collective call here
                every_f2, start = all_gather_rows(f2) if self.training else (f2, 0)
                scores = cosine_scores(f1, self.prototypes)
                with torch.no_grad():
                    queued = self.queue.contents() if self.queue is not None else f2[:0]
                    target = sinkhorn_targets(cosine_scores(every_f2, self.prototypes),
                                              cosine_scores(queued, self.prototypes),
                                              self.sinkhorn_epsilon, self.sinkhorn_iterations)
                    target = target[start:start + len(f2)]
                terms["global"] = clustering_loss(scores, target, self.cluster_temperature)
                out["prototype_entropy"] = prototype_entropy(scores.detach(), self.cluster_temperature)
        if self.use_occupancy:
            query = batch["query"]
            decoded = self.decoder(student, query["coord"], query["batch"], self.voxel_size)
            labels = occupancy_labels(query["surface_offset"], self.occupancy_bins, self.occupancy_range)
            terms["occupancy"] = occupancy_loss(decoded[:, :self.occupancy_bins], labels)
            if self.use_intensity:
                terms["intensity"] = intensity_loss(decoded[:, self.occupancy_bins], query["surface_intensity"])

        loss = sum(self.loss_weights[name] * term for name, term in terms.items())
        assert isinstance(loss, torch.Tensor)  # check_config: at least one term is on
        out["loss"] = loss
        out.update({f"loss_{name}": term.detach() for name, term in terms.items()})
        queue = getattr(self, "queue", None)
        if self.training and queue is not None:
            queue.push(every_f2)  # after the loss: the targets were balanced against the old contents
        out["queue_fill"] = queue.fill.clone() if queue is not None else torch.zeros((), dtype=torch.long)
        return out
