"""MPNet: memory-augmented prototypes for semantic and instance segmentation (He, Gong, Tian &
Shen, "Learning and Memorizing Representative Prototypes for 3D Point Cloud Semantic and
Instance Segmentation", ECCV 2020).

Two branches on the shared backbone features, per voxel (a voxel's points share its features,
so the head runs once per voxel and points take their voxel's outputs; Sec. 3.1):

  F_seg = branch_seg(F)          F_ins = branch_ins(F)                 D = `channels`
  M in R^{M x D}, M = Nc * C      the prototype memory, a parameter (Sec. 3.2)
  c_i = 1/Nc sum_{j in block i} m_j                                    semantic memory C (eq. 1)
  w_ij = softmax_j(beta * cos(f_ins,i, m_j));  f^_ins,i = sum_j w_ij m_j   (eq. 2, Sec. 3.3)
  g_ins,i = embed(f^_ins,i)       instance embedding, c' = 5 (Sec. 3.5)
  G(f^_ins,i)                     the instance-centroid estimator of R_ins (eq. 3)
  gamma_ij = softmax_j(beta * cos(f_seg,i, c_j));  f^_seg,i = sum_j gamma_ij c_j  (Sec. 3.4)
  logits_i = classifier(f^_seg,i)

Training (eq. 6): L = L_ce + L_dis + R_seg + lambda R_ins, with CrossEntropyLoss and
DiscriminativeLoss (voxseg.models.losses.asis; eq. 5) and the regularisers of
voxseg.models.losses.mpnet (eqs. 3, 4). Inference: mean-shift on the embeddings of the voxels
predicted as things, as ASIS (voxseg.models.heads.instances).

Table 1 rows (switches): Baseline = `instance_memory: false, semantic_memory: false` (then the
head is vanilla ASIS: f^ = f, no memory parameter); InsMem = `instance_memory: true`;
+ SegMem = `semantic_memory: true`; + Regul = `centroid_estimator: true` with the R_seg and
R_ins loss terms in the config (without them G is not built: DDP rejects unused parameters).

Choices the paper leaves open:
* Eq. 2 has no temperature: w = softmax(cos). `key_strength` beta multiplies the cosine as the
  key strength of NTM's content addressing (Graves et al. 2014, the paper's [11]); beta = 1 is
  the paper as printed. In NTM beta is not a constant but produced by the network for each read
  head, and so here with `learn_key_strength` (the shipped configs): each read (instance, semantic)
  has its own learned log beta, starting at log `key_strength`, trained at 10x the base rate (the
  configs' train.param_groups). Why: with beta fixed at 1 the weights stay close to uniform (cos
  is in [-1, 1] over M = Nc * C slots), so the classifier sees a nearly constant mixture of C
  and the cross-entropy plateaus; a large fixed beta saturates the softmax before the features
  separate. benchmarks/instance_heads.py compares the three (rows mpnet_printed, mpnet_beta16,
  mpnet); the figures are in docs/results.md.
* "Randomly initialized" memory: uniform in +-1/sqrt(D), as MemAE (Gong et al. 2019, the paper's
  [9], same second author) initialises its memory.
* Row block i of M (rows i*Nc .. (i+1)*Nc - 1) belongs to train id i (eq. 1, 0-based).
* The branches are FC-BN-ReLU(D) as ASIS's (the paper's are PointNet++ FP layers ending in the
  same); `embed` is one linear layer ("a simple MLP layer"), `classifier` one linear layer.
* G is FC-BN-ReLU(D) + Linear(D, 3). The paper's G reads the augmented feature of a PointNet++
  point whose input carries its block-normalised xyz, so an absolute centroid is predictable; a
  sparse-convolution feature is translation-equivariant and cannot encode absolute position, so
  G predicts the offset to the centroid and the centroid is the point's position plus it:
  G(f^_ins,n) = x_n + MLP(f^_ins,n) (VoteNet / PointGroup style; eq. 3 is unchanged).
* Semantic memory without instance memory (not a Table 1 row) is allowed: the instance branch
  then uses f_ins, and G (if any) reads f_ins.
* Memory cost: addressing is a (V, M) matrix per forward (V voxels), e.g. 20k x 1800 floats.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

from voxseg.config import Range
from voxseg.models.backbone_output import BackboneOutput
from voxseg.models.heads.asis import fc_bn_relu
from voxseg.models.heads.instances import mean_shift_panoptic, thing_train_ids
from voxseg.registry import HEADS

__all__ = ["MPNetHead", "semantic_memory", "address", "read_memory"]


def semantic_memory(memory: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C (num_classes, D): c_i = the mean of row block i of M (eq. 1); M has Nc * num_classes rows."""
    slots, dim = memory.shape
    if slots % num_classes:
        raise ValueError(f"{slots} memory slots are not {num_classes} equal blocks")
    return memory.view(num_classes, slots // num_classes, dim).mean(dim=1)


def address(query: torch.Tensor, memory: torch.Tensor, key_strength: float | torch.Tensor = 1.0) -> torch.Tensor:
    """w (N, M): w_ij = exp(beta d(q_i, m_j)) / sum_j exp(beta d(q_i, m_j)) with d the cosine
    similarity (eq. 2; beta = `key_strength`, 1 in the paper)."""
    cosine = F.normalize(query, dim=1) @ F.normalize(memory, dim=1).T
    return torch.softmax(key_strength * cosine, dim=1)


def read_memory(query: torch.Tensor, memory: torch.Tensor, key_strength: float | torch.Tensor = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(f^, w): the memory-augmented features f^_i = sum_j w_ij m_j (Sec. 3.3; with C for M,
    Sec. 3.4's f^_seg = gamma^T C) and the addressing weights w of eq. 2."""
    weights = address(query, memory, key_strength)
    return weights @ memory, weights


@HEADS.register()
class MPNetHead(nn.Module):
    """Semantic logits and instance embeddings read from a prototype memory (MPNet, Sec. 3).

    forward -> {"logits" (N, classes), "embedding" (N, embed_dim), "voxel_logits",
    "voxel_embedding"; with `semantic_memory`: "seg_feature" (N, D) f^_seg and "semantic_memory"
    (classes, D) C, which R_seg reads; with `centroid_estimator`: "centroid" (N, 3) G's
    prediction of each point's instance centroid (metres, R_ins)}. predict -> {"segment",
    "segment_logits", "embedding", "instance" (-1 none, 0.. per scan), "instance_score"} by
    mean-shift, as ASIS. `slots_per_class` is Nc (150 in the paper): M = Nc * num_classes.
    `key_strength` is beta of eq. 2 (learned per read, from that start, with `learn_key_strength`).
    """

    predicts = ("segment", "segment_logits", "embedding", "instance", "instance_score")  # what `predict` returns

    def __init__(self, in_channels: int, num_classes: Annotated[int, Range(ge=1)], thing_classes: list[int],
                 channels: Annotated[int, Range(ge=1)] = 64, embed_dim: Annotated[int, Range(ge=1)] = 5,
                 slots_per_class: Annotated[int, Range(ge=1)] = 150,
                 instance_memory: bool = True, semantic_memory: bool = True, centroid_estimator: bool = True,
                 key_strength: Annotated[float, Range(gt=0)] = 1.0, learn_key_strength: bool = False,
                 bandwidth: Annotated[float, Range(gt=0)] = 0.6,
                 min_instance_points: Annotated[int, Range(ge=1)] = 30):
        super().__init__()
        self.num_classes, self.thing_classes = num_classes, thing_train_ids(thing_classes, num_classes)
        self.slots_per_class, self.key_strength = slots_per_class, key_strength
        reads = [name for name, on in (("instance", instance_memory), ("semantic", semantic_memory)) if on]
        # one learned log beta per read head, as NTM's key strengths (module docstring); only the
        # reads in use get one (DDP rejects unused parameters)
        self.log_key_strength = (nn.ParameterDict({name: nn.Parameter(torch.tensor(math.log(key_strength)))
                                                   for name in reads})
                                 if learn_key_strength and reads else None)
        self.instance_memory, self.semantic_memory = instance_memory, semantic_memory
        self.bandwidth, self.min_instance_points = bandwidth, min_instance_points
        self.branch_seg = fc_bn_relu(in_channels, channels)
        self.branch_ins = fc_bn_relu(in_channels, channels)
        self.memory = None
        if instance_memory or semantic_memory:
            bound = 1.0 / math.sqrt(channels)  # MemAE's initialisation
            self.memory = nn.Parameter(torch.empty(slots_per_class * num_classes, channels).uniform_(-bound, bound))
        self.embed = nn.Linear(channels, embed_dim)
        self.classifier = nn.Linear(channels, num_classes)
        self.centroid = (nn.Sequential(fc_bn_relu(channels, channels), nn.Linear(channels, 3))
                         if centroid_estimator else None)
        self.timings = {"cluster_s": 0.0}  # inference profile: seconds spent clustering, summed

    def strength(self, read: str) -> float | torch.Tensor:
        """beta of the `read` ("instance" or "semantic"): learned (a 0-d tensor) or `key_strength`."""
        if self.log_key_strength is None:
            return self.key_strength
        return self.log_key_strength[read].exp()

    def forward(self, features: BackboneOutput, batch: dict) -> dict:
        f_seg = self.branch_seg(features.voxel.F)
        f_ins = self.branch_ins(features.voxel.F)
        if self.instance_memory:
            assert self.memory is not None  # __init__ makes it when either read is on
            f_ins = read_memory(f_ins, self.memory, self.strength("instance"))[0]  # eq. 2, Sec. 3.3
        inv = features.inverse
        out: dict[str, torch.Tensor] = {}
        if self.semantic_memory:
            assert self.memory is not None  # __init__ makes it when either read is on
            summary = semantic_memory(self.memory, self.num_classes)  # eq. 1
            f_seg = read_memory(f_seg, summary, self.strength("semantic"))[0]  # Sec. 3.4
            out.update(seg_feature=f_seg[inv], semantic_memory=summary)
        embedding = self.embed(f_ins)
        logits = self.classifier(f_seg)
        if self.centroid is not None:  # eq. 3: x_n + offset (see the module docstring)
            out["centroid"] = batch["coord"].to(f_ins.dtype) + self.centroid(f_ins)[inv]
        out.update(logits=logits[inv], embedding=embedding[inv], voxel_logits=logits, voxel_embedding=embedding)
        return out

    @torch.no_grad()
    def predict(self, outputs: dict, features: BackboneOutput, batch: dict) -> dict:
        """Mean-shift on the thing voxels' embeddings, per scan, as ASIS (Sec. 3.5)."""
        return mean_shift_panoptic(outputs, features, batch, self.thing_classes, self.bandwidth,
                                   self.min_instance_points, self.timings)
