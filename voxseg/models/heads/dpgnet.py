"""Instance head by DPGNet's differentiable grouping into cliques (Cheng et al.; after SSN, Jampani
et al. 2018; the layer: voxseg.models.cliques).

Per voxel (points take their voxel's outputs):

  f      = FC-BN-ReLU(F)                      shared features
  G      = Linear(f)                          the k-dim features grouped on (SSN's learnt features)
  Q, S   = cliques(G)                         eqs. 1-2, T iterations, cliques seeded at the occupied
                                              cells of a grid of `stride` voxels, 27 cells each
  f~     = Q^ pool(f)                         clique features pooled (eq. 2) and scattered back (SSN)
  logits = Linear([f, f~])                    semantics from the voxel and its cliques: the task
                                              loss trains the grouping, as the paper's (Sec. 3.2)

Training: CrossEntropyLoss on `logits`, CliqueReconstructionLoss (SSN) and CliqueAffinityLoss on
the associations (voxseg.models.losses.dpgnet).

Inference. Each voxel takes its clique of largest Q (SSN's hard association). The paper stops at
cliques; making instances of them is our choice: a clique's class is the argmax of the mean
softmax over its voxels; neighbouring cliques (27 cells, same scan) of the same thing class whose
affinity exp(-||S_i - S_j||^2) (eq. 1's kernel between clique features) exceeds
`merge_threshold` are joined, and the connected components (scipy) are the instances. An
instance's points take its class (panoptic consistency); instances of fewer than
`min_instance_points` points are dropped; the score is the mean softmax probability of its class
over its points. `clique` in the predictions is each point's clique, 0.. per scan, for ASA
(voxseg.evaluation.asa).
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn as nn
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from voxseg.config import Range
from voxseg.models.backbone_output import BackboneOutput
from voxseg.models.cliques import DifferentiableGrouping
from voxseg.models.heads.instances import thing_train_ids
from voxseg.registry import HEADS


def merge_cliques(features: torch.Tensor, neighbours: torch.Tensor, clique_class: torch.Tensor,
                  threshold: float) -> torch.Tensor:
    """(M,) instance (connected component) of each clique, -1 where clique_class < 0.

    Cliques i, j are joined when j is among i's 27 neighbouring cells, both have the same class
    >= 0 and exp(-||S_i - S_j||^2) > threshold. Components are numbered 0.. in order of their
    smallest clique."""
    M = len(features)
    i = torch.arange(M, device=features.device).unsqueeze(1).expand_as(neighbours)
    j = neighbours.clamp(min=0)
    link = (neighbours >= 0) & (clique_class[i] >= 0) & (clique_class[i] == clique_class[j])
    i, j = i[link], j[link]
    link = torch.exp(-(features[i] - features[j]).square().sum(dim=1)) > threshold
    rows, cols = i[link].cpu().numpy(), j[link].cpu().numpy()
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(M, M))
    _, component = connected_components(graph, directed=True, connection="weak")
    component = torch.from_numpy(component).to(features.device).long()
    keep = clique_class >= 0
    _, renumbered = torch.unique(component[keep], return_inverse=True)  # components of kept cliques: 0..
    out = torch.full((M,), -1, dtype=torch.long, device=features.device)
    out[keep] = renumbered.view(-1)
    return out


def per_scan_ids(ids: torch.Tensor, scan: torch.Tensor) -> torch.Tensor:
    """Ids (>= 0; -1 kept) renumbered 0.. within each scan, in order of the old ids."""
    out = torch.full_like(ids, -1)
    has = ids >= 0
    if not has.any():
        return out
    span = int(ids.max()) + 1
    keys, inverse = torch.unique(scan[has] * span + ids[has], return_inverse=True)
    start = torch.searchsorted(keys, (keys // span) * span)  # first key of each key's scan
    out[has] = inverse - start[inverse]
    return out


@HEADS.register()
class DPGNetHead(nn.Module):
    """Semantic logits and cliques per point (see the module docstring).

    Outputs {"logits" (N, classes), "embedding" (N, k) the features grouped on, "voxel_logits",
    "voxel_embedding", "association" (V, 27), "candidates" (V, 27), "clique_features" (M, k),
    "clique_neighbours" (M, 27), "clique_batch" (M,), "point_voxel" (N,)}; in evaluation predicts
    {"segment", "segment_logits", "embedding", "instance" (N,) 0.. per scan (-1 = none),
    "instance_score", "clique" (N,) 0.. per scan}. `thing_classes` are the train ids with instances
    (LabelConfig.thing_train_ids; the fine-tuning run checks they agree).
    """

    predicts = ("segment", "segment_logits", "embedding", "instance", "instance_score", "clique")  # `predict`'s keys

    def __init__(self, in_channels: int, num_classes: Annotated[int, Range(ge=1)], thing_classes: list[int],
                 channels: Annotated[int, Range(ge=1)] = 64, embed_dim: Annotated[int, Range(ge=1)] = 16,
                 stride: Annotated[int, Range(ge=1)] = 4, iterations: Annotated[int, Range(ge=1)] = 3,
                 normalize: Literal["softmax", "none"] = "softmax",
                 merge_threshold: Annotated[float, Range(gt=0, lt=1)] = 0.5,
                 min_instance_points: Annotated[int, Range(ge=1)] = 30):
        super().__init__()
        self.num_classes, self.thing_classes = num_classes, thing_train_ids(thing_classes, num_classes)
        self.merge_threshold, self.min_instance_points = merge_threshold, min_instance_points
        self.branch = nn.Sequential(nn.Linear(in_channels, channels), nn.BatchNorm1d(channels), nn.ReLU(inplace=True))
        self.embed = nn.Linear(channels, embed_dim)
        self.grouping = DifferentiableGrouping(stride=stride, iterations=iterations, normalize=normalize)
        self.classifier = nn.Linear(2 * channels, num_classes)
        self.timings = {"cluster_s": 0.0}  # inference profile: seconds spent merging cliques, summed

    def forward(self, features: BackboneOutput, batch: dict) -> dict:
        f = self.branch(features.voxel.F)
        embedding = self.embed(f)
        cliques = self.grouping(features.voxel, embedding)
        logits = self.classifier(torch.cat([f, cliques.scatter(cliques.pool(f))], dim=1))
        inverse = features.inverse
        return {"logits": logits[inverse], "embedding": embedding[inverse], "voxel_logits": logits,
                "voxel_embedding": embedding, "association": cliques.association, "candidates": cliques.candidates,
                "clique_features": cliques.features, "clique_neighbours": cliques.neighbours,
                "clique_batch": cliques.batch, "point_voxel": inverse}

    @torch.no_grad()
    def predict(self, outputs: dict, features: BackboneOutput, batch: dict) -> dict:
        prob = outputs["logits"].softmax(dim=1)
        segment = prob.argmax(dim=1)
        inverse, scan = outputs["point_voxel"], batch["batch"]
        start = time.perf_counter()
        association, candidates = outputs["association"], outputs["candidates"]
        voxel_clique = candidates.gather(1, association.argmax(dim=1, keepdim=True)).squeeze(1)
        M = len(outputs["clique_features"])
        voxel_prob = outputs["voxel_logits"].softmax(dim=1)
        members = torch.bincount(voxel_clique, minlength=M)
        clique_prob = voxel_prob.new_zeros((M, voxel_prob.shape[1])).index_add(0, voxel_clique, voxel_prob)
        clique_class = clique_prob.argmax(dim=1)
        things = torch.as_tensor(self.thing_classes, device=segment.device)
        clique_class = torch.where((members > 0) & torch.isin(clique_class, things), clique_class, -1)
        component = merge_cliques(outputs["clique_features"], outputs["clique_neighbours"], clique_class,
                                  self.merge_threshold)
        point_clique = voxel_clique[inverse]
        point_component = component[point_clique]
        size = torch.bincount(point_component.clamp(min=0), weights=(point_component >= 0).to(prob.dtype),
                              minlength=int(component.max()) + 1 if M else 1)
        point_component = torch.where((point_component >= 0) & (size[point_component.clamp(min=0)]
                                                                >= self.min_instance_points), point_component, -1)
        has = point_component >= 0
        component_class = torch.zeros_like(size, dtype=torch.long)
        component_class[component[component >= 0]] = clique_class[component >= 0]  # one class per component
        segment[has] = component_class[point_component[has]]
        own = prob[has].gather(1, segment[has].unsqueeze(1)).squeeze(1)
        total = prob.new_zeros(len(size)).index_add(0, point_component[has], own)
        score = prob.new_zeros(len(segment))
        score[has] = (total / size.clamp(min=1))[point_component[has]]
        instance = per_scan_ids(point_component, scan)
        if segment.is_cuda:
            torch.cuda.synchronize(segment.device)
        self.timings["cluster_s"] += time.perf_counter() - start
        return {"segment": segment, "segment_logits": outputs["logits"], "embedding": outputs["embedding"],
                "instance": instance, "instance_score": score, "clique": per_scan_ids(point_clique, scan)}
