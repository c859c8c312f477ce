"""ASIS: associatively segmenting instances and semantics (Wang et al., CVPR 2019).

Two branches on the shared backbone features, per voxel (every point of a voxel shares its
features, so the head runs once per voxel and points take their voxel's outputs):

  F_SEM = branch_sem(F)              F_INS = branch_ins(F)            (Sec. 3.1)
  F_SINS = F_INS + FC(F_SEM)          semantic awareness, SA           (eq. 5)
  E_INS = embed(F_SINS)               instance embedding, dim 5
  x'_i = Max(x_i1, ..., x_iK)         instance fusion, IF: channel-wise max of F_SEM over the
                                      K nearest neighbours in embedding space (eq. 6)
  P_SEM = classifier(F_ISEM)

The "vanilla" baseline of the paper (Sec. 3.1) is `semantic_awareness: false,
instance_fusion: false`; each switch alone gives the rows of Table 3. Training: CrossEntropyLoss
on `logits` and DiscriminativeLoss (voxseg.models.losses.asis, eqs. 1-4) on `embedding`.

Fusion warm-up (`fusion_warmup_steps`, not in the paper, which fuses from the first step): early
in training the embedding is not yet settled, so a voxel's K neighbours include voxels of other
classes and fusion max-pools their semantic features. With a warm-up of W > 0 steps the classifier
reads the unfused F_SEM for the first W training forwards, and the fused one from then on; the
count is a buffer, saved in checkpoints. The precedent is PointGroup (Jiang et al., CVPR 2020),
which trains its semantic and offset branches alone for `prepare_epochs` before its clustering and
ScoreNet join.

Inference (Sec. 3.1; shared with MPNet in voxseg.models.heads.instances): mean-shift (flat
kernel, bandwidth 0.6) on the embeddings of the voxels predicted as thing classes,
class-agnostic as in the paper, each sample on its own; an instance's class is the mode of its
points' semantic predictions, and its points take that class (panoptic consistency, the
majority vote of Panoptic-PolarNet); instances with fewer than `min_instance_points` points are
dropped. The paper gives no instance confidence; voxseg scores an instance by the mean softmax
probability of its class over its points.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn as nn

from voxseg.config import InvalidValue, Range
from voxseg.models.backbone_output import BackboneOutput
from voxseg.models.heads.instances import mean_shift_panoptic, thing_train_ids
from voxseg.models.knn import knn
from voxseg.registry import HEADS


def fc_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """The paper's point-independent FC layer with batch normalization and ReLU."""
    return nn.Sequential(nn.Linear(in_channels, out_channels), nn.BatchNorm1d(out_channels), nn.ReLU(inplace=True))


def neighbour_max(features: torch.Tensor, index: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """out[i, c] = max_k features[index[i, k], c] (eq. 6), without the (N, K, C) tensor in the graph.

    The winning neighbour of each (row, channel) is found without gradients, chunk by chunk;
    the output then gathers those entries, so the gradient reaches exactly the maxima, as
    torch.amax's does (ties aside), in O(N * C) memory instead of O(N * K * C).
    """
    winners = torch.empty(features.shape, dtype=torch.long, device=features.device)
    with torch.no_grad():
        for start in range(0, len(index), chunk):
            rows = index[start:start + chunk]
            # (chunk, C): which of the K neighbours wins, the first on ties, as argmax; max's kernel
            # reduces the strided K dimension several times faster than argmax's on the CPU
            best = features[rows].max(dim=1).indices
            winners[start:start + chunk] = rows.gather(1, best)
    return features.gather(0, winners)


def _read_fusion_steps(head: ASISHead, incompatible_keys) -> None:
    """After load_state_dict: the host count of ASISHead's warm-up is the loaded buffer's."""
    head._fusion_steps_seen = int(head.fusion_steps_seen)


@HEADS.register()
class ASISHead(nn.Module):
    """Semantic logits and instance embeddings per point (ASIS, Sec. 3).

    Outputs {"logits" (N, classes), "embedding" (N, embed_dim)}; in evaluation predicts
    {"segment" (N,) train ids, "segment_logits", "embedding", "instance" (N,) ids 0.. per scan
    (-1 = none), "instance_score" (N,) the confidence of the point's instance (0 where none)}.
    `thing_classes` are the train ids with instances (LabelConfig.thing_train_ids; the
    fine-tuning run checks they agree).

    `fusion_warmup_steps` (W, needs `instance_fusion`; 0: none, the paper's schedule) delays
    instance fusion by W training steps, as PointGroup's `prepare_epochs` delays its clustering
    part, so that fusion starts on a settled embedding. The buffer `fusion_steps_seen` (only when
    W > 0, so a head without warm-up keeps the paper's state_dict) counts the forwards in training
    mode with gradients, one per optimizer step; fusion applies once it has reached W, in
    training and in evaluation alike (a model stopped within its warm-up predicts unfused, as it
    was trained).
    """

    predicts = ("segment", "segment_logits", "embedding", "instance", "instance_score")  # what `predict` returns
    fusion_steps_seen: torch.Tensor  # () long buffer, only with fusion_warmup_steps > 0: training forwards seen

    def __init__(self, in_channels: int, num_classes: Annotated[int, Range(ge=1)], thing_classes: list[int],
                 channels: Annotated[int, Range(ge=1)] = 64, embed_dim: Annotated[int, Range(ge=1)] = 5,
                 semantic_awareness: bool = True, instance_fusion: bool = True,
                 k: Annotated[int, Range(ge=1)] = 30, delta_v: Annotated[float, Range(gt=0)] = 0.5,
                 bandwidth: Annotated[float, Range(gt=0)] = 0.6,
                 min_instance_points: Annotated[int, Range(ge=1)] = 30,
                 fusion_warmup_steps: Annotated[int, Range(ge=0)] = 0):
        super().__init__()
        self.check_config({"instance_fusion": instance_fusion, "fusion_warmup_steps": fusion_warmup_steps})
        self.num_classes, self.thing_classes = num_classes, thing_train_ids(thing_classes, num_classes)
        self.k, self.delta_v, self.bandwidth, self.min_instance_points = k, delta_v, bandwidth, min_instance_points
        self.branch_sem = fc_bn_relu(in_channels, channels)
        self.branch_ins = fc_bn_relu(in_channels, channels)
        self.adapt = fc_bn_relu(channels, channels) if semantic_awareness else None
        self.instance_fusion, self.fusion_warmup_steps = instance_fusion, fusion_warmup_steps
        if fusion_warmup_steps > 0:  # only then: a head without warm-up keeps the paper's state_dict keys
            self.register_buffer("fusion_steps_seen", torch.zeros((), dtype=torch.long))
            # the count on the host too, which the forward reads: reading the buffer would make every
            # forward on a GPU wait for it; loading a state_dict sets it from the buffer
            self._fusion_steps_seen = 0
            self.register_load_state_dict_post_hook(_read_fusion_steps)
        self.embed = nn.Linear(channels, embed_dim)
        self.classifier = nn.Linear(channels, num_classes)
        self.timings = {"cluster_s": 0.0}  # inference profile: seconds spent clustering, summed

    def forward(self, features: BackboneOutput, batch: dict) -> dict:
        f_sem = self.branch_sem(features.voxel.F)
        f_ins = self.branch_ins(features.voxel.F)
        if self.adapt is not None:
            f_ins = f_ins + self.adapt(f_sem)  # eq. 5
        embedding = self.embed(f_ins)
        if self.fuses():
            f_sem = neighbour_max(f_sem, self.fusion_neighbours(embedding, features.voxel_batch))
        logits = self.classifier(f_sem)
        return {"logits": logits[features.inverse], "embedding": embedding[features.inverse],
                "voxel_logits": logits, "voxel_embedding": embedding}

    @staticmethod
    def check_config(cfg: dict) -> None:
        """A fusion warm-up needs instance fusion (voxseg.config validates it so, and the
        constructor again)."""
        if cfg["fusion_warmup_steps"] > 0 and not cfg["instance_fusion"]:
            raise InvalidValue("fusion_warmup_steps", f"{cfg['fusion_warmup_steps']} steps of warm-up delay instance "
                                                      "fusion, which is off (instance_fusion: false); set it to 0")

    def fuses(self) -> bool:
        """Whether this forward applies instance fusion: always with it on and no warm-up; with a
        warm-up, once `fusion_steps_seen` (before this forward's count) has reached it. A forward
        in training mode with gradients counts one."""
        if not self.instance_fusion:
            return False
        if self.fusion_warmup_steps == 0:
            return True
        fuse = self._fusion_steps_seen >= self.fusion_warmup_steps
        if self.training and torch.is_grad_enabled():
            self._fusion_steps_seen += 1
            self.fusion_steps_seen.add_(1)
        return fuse

    def fusion_neighbours(self, embedding: torch.Tensor, voxel_batch: torch.Tensor) -> torch.Tensor:
        """(V, K) rows of each voxel's K nearest voxels of its sample in embedding space (L1, the
        loss's distance), the voxel itself first; neighbours farther than delta_v are replaced by
        the voxel itself, so that only same-instance features are fused (Sec. 3.2)."""
        _, index = knn(embedding.detach(), self.k, voxel_batch, p=1, max_distance=self.delta_v)
        index[:, 0] = torch.arange(len(index), device=index.device)  # itself, even among exact duplicates
        return index

    @torch.no_grad()
    def predict(self, outputs: dict, features: BackboneOutput, batch: dict) -> dict:
        """Mean-shift on the thing voxels' embeddings, per scan (voxseg.models.heads.instances)."""
        return mean_shift_panoptic(outputs, features, batch, self.thing_classes, self.bandwidth,
                                   self.min_instance_points, self.timings)
