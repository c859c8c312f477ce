"""Exact k-nearest neighbours within each sample of a batch, without an N x N matrix.

Instance fusion (ASIS, Sec. 3.2) needs, for each of ~10^5 voxels of a LiDAR scan, its K nearest
neighbours in a low-dimensional embedding space. On the CPU a k-d tree (scipy's cKDTree, a
well-kept C++ implementation) answers that in O(N log N); on the GPU a brute-force search in
chunks of rows (torch.cdist + topk, O(chunk * N) memory) is faster than any tree. Both are exact.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

CHUNK_ROWS = 4096  # query rows per brute-force chunk: 4096 x 10^5 distances = 1.6 GB in float32 at most


@torch.no_grad()
def knn(x: torch.Tensor, k: int, batch: torch.Tensor | None = None, p: float = 2.0,
        max_distance: float | None = None, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest rows of `x` (N, D) to each row, itself included, under the L_p distance,
    searching only rows of the same sample (`batch` (N,) sample index, sorted or not).

    Returns (distances (N, k), indices (N, k) int64 into x), nearest first. A sample with fewer
    than k rows pads its lists with the row itself at distance 0. With `max_distance`, farther
    neighbours are not searched for (the tree prunes them: much faster on spread-out data) and
    come back as the row itself at distance inf. `method`: "tree" (cKDTree, CPU, on torch's
    thread count), "brute" (chunked torch, any device) or "auto" (tree on CPU, brute on CUDA).
    """
    if method == "auto":
        method = "brute" if x.is_cuda else "tree"
    if method not in ("tree", "brute"):
        raise ValueError(f"knn method must be auto, tree or brute, got {method!r}")
    n = len(x)
    dist = x.new_zeros((n, k))
    index = torch.arange(n, device=x.device).unsqueeze(1).repeat(1, k)
    if n == 0:
        return dist, index
    samples = torch.zeros(n, dtype=torch.long, device=x.device) if batch is None else batch
    for sample in torch.unique(samples):
        rows = torch.nonzero(samples == sample).squeeze(1)
        kk = min(k, len(rows))
        search = _tree if method == "tree" else _brute
        d, i = search(x[rows], kk, p, max_distance)
        if max_distance is not None:
            far = d > max_distance
            d[far] = float("inf")
            i[far] = torch.arange(len(rows), device=x.device).unsqueeze(1).expand_as(i)[far]
        dist[rows, :kk] = d
        index[rows, :kk] = rows[i]
    return dist, index


def _tree(x: torch.Tensor, k: int, p: float, max_distance: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    points = x.detach().cpu().double().numpy()
    # cKDTree keeps neighbours strictly closer than the bound: nudge it so that ties are kept too
    bound = np.inf if max_distance is None else np.nextafter(max_distance, np.inf)
    d, i = cKDTree(points).query(points, k=k, p=p, distance_upper_bound=bound, workers=torch.get_num_threads())
    d, i = np.asarray(d).reshape(len(points), k), np.asarray(i).reshape(len(points), k)
    i[i == len(points)] = 0  # "not found" entries: their distance is inf, the caller replaces them
    return torch.from_numpy(d).to(x), torch.from_numpy(i).to(x.device, torch.long)


def _brute(x: torch.Tensor, k: int, p: float, max_distance: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    dists, indices = [], []
    for start in range(0, len(x), CHUNK_ROWS):
        # not the matrix-product form of the L2 distance: it is off by ~1e-3 and can misorder neighbours
        d = torch.cdist(x[start:start + CHUNK_ROWS], x, p=p, compute_mode="donot_use_mm_for_euclid_dist")
        top = d.topk(k, dim=1, largest=False, sorted=True)
        dists.append(top.values)
        indices.append(top.indices)
    return torch.cat(dists), torch.cat(indices)
