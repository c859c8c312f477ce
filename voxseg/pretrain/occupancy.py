"""The implicit decoder of ISCC's local occupancy loss L_o(h^1, Q^1).

The slides give the loss (a K-way cross-entropy at query points Q^1 made "near the target crops")
but not the decoder. Ours follows ALSO (Boulch et al., CVPR 2023: a small decoder reading the
backbone's features near each query plus the query's relative position):

  * the feature read is that of the query's nearest occupied voxel of the student's view (same
    scene, Euclidean distance between the query and the voxel centres). Queries lie around
    surfaces that masking removed from the view, so the 8 voxels around a query are often empty
    and trilinear interpolation (or ME.MinkowskiInterpolation) would read zeros there; the nearest
    occupied voxel always exists;
  * the relative position is query - that voxel's centre, in metres (voxel i spans
    [i v, (i + 1) v), centre (i + 1/2) v), so the decoder knows how far the feature was read from;
  * the MLP is Linear-ReLU-Linear-ReLU-Linear from (C + 3) to K logits (width `hidden`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from scipy.spatial import cKDTree

from voxseg.models.backbone_output import BackboneOutput

CHUNK_ROWS = 4096  # query rows per brute-force chunk on the GPU


@torch.no_grad()
def nearest_rows(query: torch.Tensor, query_batch: torch.Tensor, points: torch.Tensor,
                 point_batch: torch.Tensor) -> torch.Tensor:
    """(Q,) int64: for each query (Q, 3) the row of its nearest point (P, 3) of the same scene. A
    k-d tree on the CPU, chunked brute force on the GPU (as voxseg.models.knn)."""
    out = torch.empty(len(query), dtype=torch.long, device=query.device)
    for scene in torch.unique(query_batch):
        q_rows = torch.nonzero(query_batch == scene).squeeze(1)
        p_rows = torch.nonzero(point_batch == scene).squeeze(1)
        if len(p_rows) == 0:
            raise ValueError(f"scene {int(scene)} has queries but no voxels to read features from")
        q, p = query[q_rows], points[p_rows]
        if query.is_cuda:
            nearest = torch.cat([torch.cdist(q[i:i + CHUNK_ROWS], p).argmin(1) for i in range(0, len(q), CHUNK_ROWS)])
        else:
            _, found = cKDTree(p.double().numpy()).query(q.double().numpy(), k=1)
            nearest = torch.from_numpy(found).long()
        out[q_rows] = p_rows[nearest]
    return out


class OccupancyDecoder(nn.Module):
    """K-way logits at query points from the student's voxel features (see the module docstring)."""

    def __init__(self, in_channels: int, bins: int, hidden: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_channels + 3, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, bins),
        )

    def forward(self, features: BackboneOutput, query: torch.Tensor, query_batch: torch.Tensor,
                voxel_size: float) -> torch.Tensor:
        """(Q, K) logits for queries (Q, 3) in metres, in the coordinates of the view `features`
        was computed from, and their scene index (Q,)."""
        coords = features.voxel.C
        centres = (coords[:, 1:].to(query.dtype) + 0.5) * voxel_size
        rows = nearest_rows(query, query_batch, centres, coords[:, 0].long())
        return self.mlp(torch.cat([features.voxel.F[rows], query - centres[rows]], dim=1))
