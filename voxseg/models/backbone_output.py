"""What a backbone hands its heads: voxel features, the points, and the map between them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from voxseg.sparse import ME


@dataclass(eq=False)
class BackboneOutput:
    """Features of one voxelized batch (voxelization happens once, in the backbone).

    voxel    ME.SparseTensor at tensor stride 1: one row per occupied voxel, coordinates
             (batch, i, j, k) in voxel units. Heads that work per voxel (instance clustering)
             or query the field at arbitrary points (occupancy decoders) use it.
    field    the ME.TensorField of the input points (coordinates in voxel units).
    inverse  (N,) int64: the row of `voxel` that holds input point n.
    """

    voxel: ME.SparseTensor
    field: ME.TensorField
    inverse: torch.Tensor

    @cached_property
    def point(self) -> torch.Tensor:
        """(N, C) per-point features: each point takes its voxel's row (ME's slice)."""
        return self.voxel.F[self.inverse]

    @property
    def voxel_batch(self) -> torch.Tensor:
        """(V,) sample index of each voxel."""
        return self.voxel.C[:, 0].long()

    def to_voxels(self, values: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
        """Per-point `values` (N, ...) reduced to one row per voxel ("mean", "amax", "amin", "sum")."""
        out = values.new_zeros((len(self.voxel.F), *values.shape[1:]))
        index = self.inverse.view(-1, *([1] * (values.dim() - 1))).expand_as(values)
        return out.scatter_reduce(0, index, values, reduce=reduce, include_self=False)
