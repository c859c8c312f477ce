"""Cliques: DPGNet's differentiable grouping of voxels (Cheng, Xu, Vuong, "Task-driven
Differentiable Grouping for Point Cloud Analysis"; after SSN, Jampani et al., ECCV 2018).

A clique is the paper's point-cloud analogue of a superpixel, learnt end to end. Not to be
confused with preprocessing's groups (voxseg.data.groups: HDBSCAN segments of stacked scans for
ISCC pretraining), which are fixed offline.

Soft associations between voxels p and cliques i, and the clique centres they give (Sec. 3.1):

  Q_pi^t = exp(-||F_p - S_i^{t-1}||^2)                                   (eq. 1)
  S_i^t  = 1/Z_i^t sum_p Q_pi^t F_p,      Z_i^t = sum_p Q_pi^t             (eq. 2)

for t = 1..T, each voxel restricted to the cliques of the 27 cells around its own (Sec. 3.1:
"only 27 surrounding cliques", Q of size n x 27).

Cliques are seeded, as SSN seeds superpixels on a regular grid and the paper on "the nodes of a
uniform 3d meshgrid" (Sec. 3.3), at the occupied cells of a coarse grid: the coordinates of
MinkowskiEngine's strided map (stride `s`) in the input's own coordinate manager, one clique per
occupied cell of each sample. The cell of a voxel is ME's stride map, the 27 cells around a cell
ME's kernel map (kernel size 3, stride 1) on the strided map; both never cross samples, as the
batch index is a coordinate. Choices the paper leaves open:

* S^0: the mean feature of the voxels of the cell (SSN's initialisation of superpixel features).
* Normalisation (`normalize`): "softmax" (default) divides each voxel's Q by its sum over its
  candidate cliques, exp(-d) / sum_j exp(-d_j), as SSN's released code does (a softmax over
  negative distances). It is eq. 1 times a per-voxel factor, cannot underflow to all zeros, and
  makes every voxel carry the same total weight in eq. 2. "none" is eq. 1 as printed.
* A clique whose Z_i underflows to 0 (every voxel far away in feature space) keeps S^{t-1}.
* Pooled and scattered-back features (SSN, Sec. 3): any per-voxel values V are pooled into the
  cliques with the final Q as eq. 2 pools F, and mapped back to the voxels by the row-normalised
  association, V~_p = sum_i Q^_pi P_i with Q^_pi = Q_pi / sum_j Q_pj.
* The hard clique of a voxel (SSN at test time) is its candidate of largest Q.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from voxseg.sparse import ME

__all__ = ["NEIGHBOURS", "Cliques", "DifferentiableGrouping", "associate", "clique_neighbourhood"]

NEIGHBOURS = 27  # 3 x 3 x 3 cells


def clique_neighbourhood(x: ME.SparseTensor, stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cliques of `x`'s coordinates on the grid of `stride` times its tensor stride.

    Returns (cell (V,) the clique/cell index of each voxel, neighbours (M, 27) the cells around each
    cell, -1 where unoccupied, coordinates (M, 4) int (batch, i, j, k) of the cells). Column 13 of
    `neighbours` is the cell itself. All from ME's maps of `x`'s coordinate manager.
    """
    manager, key = x.coordinate_manager, x.coordinate_map_key
    coarse = manager.stride(key, stride)
    fine_rows, cell_rows = manager.stride_map(key, coarse)
    cell = torch.empty(len(x.F), dtype=torch.long, device=x.F.device)
    cell[fine_rows.long().to(cell.device)] = cell_rows.long().to(cell.device)
    coordinates = manager.get_coordinates(coarse).to(x.F.device)
    neighbours = torch.full((len(coordinates), NEIGHBOURS), -1, dtype=torch.long, device=x.F.device)
    # kernel_map(coarse, coarse, kernel 3): {offset index: [in rows, out rows]}, in = out + offset
    for offset, (rows_in, rows_out) in manager.kernel_map(coarse, coarse, stride=1, kernel_size=3).items():
        neighbours[rows_out.long().to(cell.device), int(offset)] = rows_in.long().to(cell.device)
    return cell, neighbours, coordinates


def associate(features: torch.Tensor, candidates: torch.Tensor, cell: torch.Tensor, num_cliques: int,
              iterations: int, normalize: Literal["softmax", "none"] = "softmax") -> tuple[torch.Tensor, torch.Tensor]:
    """T iterations of eqs. 1-2 on voxel features F (V, k) with candidate cliques (V, K) (-1 =
    none) and the seed cell of each voxel (V,). Returns (Q (V, K) of the last iteration, 0 where
    there is no candidate; S (M, k) after the last update)."""
    valid = candidates >= 0
    index = candidates.clamp(min=0)
    count = torch.bincount(cell, minlength=num_cliques).to(features.dtype)
    S = features.new_zeros((num_cliques, features.shape[1])).index_add(0, cell, features)
    S = S / count.clamp(min=1).unsqueeze(1)  # S^0: the mean feature of each seed cell
    Q = features.new_zeros(candidates.shape)
    for _ in range(iterations):
        distance = (features.unsqueeze(1) - S[index]).square().sum(dim=2)  # ||F_p - S_i||^2, (V, K)
        if normalize == "softmax":
            Q = torch.softmax(distance.neg().masked_fill(~valid, float("-inf")), dim=1)
        else:
            Q = torch.exp(-distance) * valid  # eq. 1
        S = weighted_mean(Q, candidates, features, S)  # eq. 2
    return Q, S


def weighted_mean(Q: torch.Tensor, candidates: torch.Tensor, values: torch.Tensor,
                  fallback: torch.Tensor) -> torch.Tensor:
    """(M, C) sum_p Q_pi v_p / Z_i (eq. 2) for per-voxel values (V, C); `fallback` (M, C) where Z_i = 0."""
    valid = candidates >= 0
    q, cliques, rows = Q[valid], candidates[valid], valid.nonzero()[:, 0]
    Z = values.new_zeros(len(fallback)).index_add(0, cliques, q)
    total = values.new_zeros(fallback.shape).index_add(0, cliques, q.unsqueeze(1) * values[rows])
    return torch.where((Z > 0).unsqueeze(1), total / torch.where(Z > 0, Z, torch.ones_like(Z)).unsqueeze(1), fallback)


@dataclass(eq=False)
class Cliques:
    """The result of grouping V voxels into M cliques.

    candidates   (V, 27) clique index of each voxel's candidate cells, -1 = unoccupied cell
    association  (V, 27) Q of the last iteration (eq. 1, normalised as chosen), 0 off candidates
    features     (M, k) S of the last iteration (eq. 2)
    cell         (V,) the seed cell (clique) each voxel lies in
    neighbours   (M, 27) the cliques of the 27 cells around each clique's cell
    coordinates  (M, 4) (batch, i, j, k) of each clique's cell, at the grid's tensor stride
    """

    candidates: torch.Tensor
    association: torch.Tensor
    features: torch.Tensor
    cell: torch.Tensor
    neighbours: torch.Tensor
    coordinates: torch.Tensor

    @property
    def batch(self) -> torch.Tensor:
        """(M,) sample index of each clique."""
        return self.coordinates[:, 0].long()

    def hard(self) -> torch.Tensor:
        """(V,) each voxel's clique of largest association."""
        return self.candidates.gather(1, self.association.argmax(dim=1, keepdim=True)).squeeze(1)

    def pool(self, values: torch.Tensor) -> torch.Tensor:
        """(M, C) clique averages of per-voxel `values` (V, C), weighted by Q as in eq. 2."""
        fallback = values.new_zeros((len(self.features), values.shape[1]))  # a clique no voxel associates with: 0
        return weighted_mean(self.association, self.candidates, values, fallback)

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """(V, C) per-clique `values` (M, C) mapped back to the voxels by the row-normalised Q (SSN)."""
        weight = self.association / self.association.sum(dim=1, keepdim=True).clamp(min=torch.finfo(values.dtype).tiny)
        return (weight.unsqueeze(2) * values[self.candidates.clamp(min=0)]).sum(dim=1)


class DifferentiableGrouping(torch.nn.Module):
    """Eqs. 1-2 on a sparse tensor: cliques seeded at the occupied cells of `stride` times the
    input's tensor stride, each voxel associated with the cliques of its 27 surrounding cells,
    `iterations` (T) updates. No parameters: what is grouped is learnt by the layers before it."""

    def __init__(self, stride: int = 2, iterations: int = 3, normalize: Literal["softmax", "none"] = "softmax"):
        super().__init__()
        if stride < 1 or iterations < 1 or normalize not in ("softmax", "none"):
            raise ValueError(f"need stride >= 1, iterations >= 1, normalize softmax|none; got {stride}, {iterations}, "
                             f"{normalize!r}")
        self.stride, self.iterations, self.normalize = stride, iterations, normalize

    def forward(self, x: ME.SparseTensor, features: torch.Tensor | None = None) -> Cliques:
        """Group the voxels of `x` on `features` (V, k) (default: x.F)."""
        features = x.F if features is None else features
        cell, neighbours, coordinates = clique_neighbourhood(x, self.stride)
        candidates = neighbours[cell]
        Q, S = associate(features, candidates, cell, len(coordinates), self.iterations, self.normalize)
        return Cliques(candidates, Q, S, cell, neighbours, coordinates)
