"""The discriminative loss of ASIS (Wang et al., CVPR 2019; voxseg.models.heads.asis) on per-point
instance embeddings; MPNet (voxseg.models.heads.mpnet, eq. 5) trains its embeddings with it too."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn as nn

from voxseg.config import Range
from voxseg.models.losses.instance_targets import instance_targets
from voxseg.registry import LOSSES


@LOSSES.register()
class DiscriminativeLoss(nn.Module):
    """The discriminative loss of ASIS (eqs. 1-4; De Brabandere et al. 2017) with L1 distances,
    on a head's per-point `embedding` (N, E), per scene over its ground-truth instances:

      L_var  = 1/I sum_i 1/N_i sum_j [||mu_i - e_j||_1 - delta_v]_+^2          (eq. 2)
      L_dist = 1/(I(I-1)) sum_{iA != iB} [2 delta_d - ||mu_iA - mu_iB||_1]_+^2   (eq. 3)
      L_reg  = 1/I sum_i ||mu_i||_1                                               (eq. 4)
      L      = L_var + L_dist + alpha L_reg                                       (eq. 1)

    The instances are those batch[`target`] gives (ids >= 0, unique per batch; -1 = none). With
    `stuff: segments` (the default), the labelled points without an instance (stuff) also form
    one instance per (scene, class) of batch[`semantic_target`] (the stuff rule of
    voxseg.models.losses.instance_targets): a LiDAR scan's stuff has no instance, and its
    embeddings would otherwise be unconstrained, so that instance fusion would mix the features
    of unrelated classes. `stuff: ignore` uses the instances alone. L_dist is 0 for a scene with
    one instance; the loss is the mean over the batch's scenes that have instances, and a zero
    that keeps the graph without any.
    """

    def __init__(self, head: str = "instance", target: str = "instance", semantic_target: str = "segment",
                 stuff: Literal["segments", "ignore"] = "segments",
                 delta_v: Annotated[float, Range(ge=0)] = 0.5, delta_d: Annotated[float, Range(ge=0)] = 1.5,
                 alpha: Annotated[float, Range(ge=0)] = 0.001):
        super().__init__()
        self.head, self.target, self.semantic_target, self.stuff = head, target, semantic_target, stuff
        self.delta_v, self.delta_d, self.alpha = delta_v, delta_d, alpha

    def instances(self, batch: dict) -> torch.Tensor:
        """(N,) the ids the loss groups points by (voxseg.models.losses.instance_targets)."""
        return instance_targets(batch, self.stuff, self.target, self.semantic_target)

    def forward(self, outputs: dict[str, dict], batch: dict) -> torch.Tensor:
        embedding, ids = outputs[self.head]["embedding"], self.instances(batch)
        has = ids >= 0
        if not has.any():
            return embedding.sum() * 0.0
        e = embedding[has]
        instance = torch.unique(ids[has], return_inverse=True)[1]
        num = int(instance.max()) + 1
        count = torch.bincount(instance, minlength=num).to(e.dtype)
        mu = e.new_zeros((num, e.shape[1])).index_add_(0, instance, e) / count.unsqueeze(1)
        scene = e.new_zeros(num, dtype=torch.long).scatter_(0, instance, batch["batch"][has])
        scenes, scene = torch.unique(scene, return_inverse=True)
        per_scene = len(scenes)
        instances_per_scene = torch.bincount(scene, minlength=per_scene).to(e.dtype)

        pull = (torch.linalg.vector_norm(mu[instance] - e, ord=1, dim=1) - self.delta_v).clamp(min=0) ** 2
        var_i = e.new_zeros(num).index_add_(0, instance, pull) / count
        l_var = e.new_zeros(per_scene).index_add_(0, scene, var_i) / instances_per_scene

        gap = torch.cdist(mu.unsqueeze(0), mu.unsqueeze(0), p=1).squeeze(0)
        push = (2 * self.delta_d - gap).clamp(min=0) ** 2
        pair = (scene.unsqueeze(0) == scene.unsqueeze(1)) & ~torch.eye(num, dtype=torch.bool, device=e.device)
        pairs = instances_per_scene * (instances_per_scene - 1)
        dist_sum = e.new_zeros(per_scene).index_add_(0, scene, (push * pair).sum(dim=1))
        l_dist = torch.where(pairs > 0, dist_sum / pairs.clamp(min=1), torch.zeros_like(dist_sum))

        l_reg = e.new_zeros(per_scene).index_add_(0, scene, mu.abs().sum(dim=1)) / instances_per_scene
        return (l_var + l_dist + self.alpha * l_reg).mean()
