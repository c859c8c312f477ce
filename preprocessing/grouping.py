"""Grouping: HDBSCAN segments of the stacked non-ground points of a window.

Selected in YAML under `grouping:` by type; each is a callable (N, 3) xyz -> (N,) int labels,
0..K-1 numbered by decreasing size, -1 for noise.
  * HDBSCANPoints: TARL's reference configuration, HDBSCAN on every point of the stacked
    window.
  * VoxelHDBSCAN (default): HDBSCAN on the centroids of occupied voxels, labels propagated to
    the points of each voxel. Stacking 12 scans piles the same surfaces up, so 0.2 m voxels keep
    the geometry with ~10x fewer samples; uniform sample density then calls for a smaller
    min_samples, and `max_cluster_size` keeps EOM from picking one cluster that runs along a
    whole street. The spanning tree is built on the 8-NN graph (knn_hdbscan).
    benchmarks/preprocess.py compares it with the reference (purity, coverage, time, memory);
    the figures are in docs/results.md.
"""

from __future__ import annotations

import hdbscan
import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree
from scipy.spatial import cKDTree

from voxseg.registry import Registry

GROUPING = Registry("grouping")


def _hdbscan(points: np.ndarray, **params) -> np.ndarray:
    if len(points) < max(params.get("min_cluster_size", 2), 2):
        return np.full(len(points), -1, dtype=np.int64)
    return hdbscan.HDBSCAN(metric="euclidean", approx_min_span_tree=True, core_dist_n_jobs=1,
                           **params).fit_predict(points).astype(np.int64)


def by_size(labels: np.ndarray, min_points: int = 1) -> np.ndarray:
    """Renumber groups 0..K-1 by decreasing point count (ties: lower old label first); groups
    with fewer than `min_points` points become noise (-1)."""
    out = np.full(len(labels), -1, dtype=np.int64)
    grouped = labels >= 0
    if not grouped.any():
        return out
    counts = np.bincount(labels[grouped])
    kept = np.flatnonzero(counts >= min_points)
    order = kept[np.lexsort((kept, -counts[kept]))]
    new = np.full(len(counts), -1, dtype=np.int64)
    new[order] = np.arange(len(order))
    out[grouped] = new[labels[grouped]]
    return out


def voxelize(points: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(M, 3) centroids of the occupied voxels and the (N,) voxel index of every point."""
    cells = np.floor(points[:, :3] / voxel_size).astype(np.int64)
    cells -= cells.min(axis=0)
    extent = cells.max(axis=0) + 1
    keys = (cells[:, 0] * extent[1] + cells[:, 1]) * extent[2] + cells[:, 2]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    centroids = np.stack([np.bincount(inverse, points[:, d], len(counts)) for d in range(3)], axis=1)
    return centroids / counts[:, None], inverse


@GROUPING.register()
class HDBSCANPoints:
    """HDBSCAN on every point (TARL's settings: min_cluster_size 20, leaf_size 100)."""

    def __init__(self, min_cluster_size: int = 20, min_samples: int | None = None, leaf_size: int = 100):
        self.params = dict(min_cluster_size=min_cluster_size, min_samples=min_samples, leaf_size=leaf_size)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return by_size(_hdbscan(points[:, :3].astype(np.float64), **self.params))


def knn_hdbscan(points: np.ndarray, min_cluster_size: int, min_samples: int, max_cluster_size: int = 0,
                neighbours: int = 8) -> np.ndarray:
    """HDBSCAN* labels (-1 noise) with the minimum spanning tree taken over the k-nearest-neighbour
    graph instead of all pairs.

    The hdbscan package spends most of a fit on its exact Boruvka MST of the mutual reachability
    distances max(core(a), core(b), |a - b|). On 3-D surface samples that MST's edges join near
    neighbours, so scipy's MST of the same distances on the 8-NN graph is the same tree in
    practice and faster (docs/results.md); the hierarchy, condensing and EOM selection (with
    max_cluster_size) are the hdbscan package's own routines. Parts of the graph that share no
    edge are joined above every real edge, so they split at the root as HDBSCAN would split them.
    core(a): distance to a's `min_samples`-th nearest other point, as hdbscan's Boruvka uses it.
    """
    from hdbscan._hdbscan_linkage import label
    from hdbscan._hdbscan_tree import compute_stability, condense_tree, get_clusters

    n = len(points)
    k = min(max(neighbours, min_samples), n - 1)
    if n < max(min_cluster_size, 2) or k < 1:
        return np.full(n, -1, dtype=np.int64)
    dist, index = cKDTree(points).query(points, k=k + 1)  # column 0: the point itself
    core = dist[:, min(min_samples, k)]
    rows = np.repeat(np.arange(n), k)
    cols = index[:, 1:].ravel()
    weight = np.maximum(np.maximum(core[rows], core[cols]), dist[:, 1:].ravel())
    graph = scipy.sparse.coo_matrix((np.maximum(weight, 1e-12), (rows, cols)), shape=(n, n)).tocsr()
    tree = minimum_spanning_tree(graph).tocoo()
    edges = np.c_[tree.row, tree.col, tree.data]
    parts, part = connected_components(graph, directed=False)
    if parts > 1:
        first = np.unique(part, return_index=True)[1]
        top = 2 * edges[:, 2].max() if len(edges) else 1.0
        edges = np.r_[edges, np.c_[first[:-1], first[1:], np.full(parts - 1, top)]]
    edges = edges[np.argsort(edges[:, 2], kind="stable")]
    condensed = condense_tree(label(np.ascontiguousarray(edges, dtype=np.float64)), min_cluster_size)
    labels, _, _ = get_clusters(condensed, compute_stability(condensed), cluster_selection_method="eom",
                                max_cluster_size=max_cluster_size)
    return labels.astype(np.int64)


@GROUPING.register()
class VoxelHDBSCAN:
    """HDBSCAN on voxel centroids (knn_hdbscan); sizes in voxels except `min_points` (points, as
    the reference's min_cluster_size counts them)."""

    def __init__(self, voxel_size: float = 0.2, min_cluster_size: int = 5, min_samples: int = 3,
                 max_cluster_size: int = 500, attach_radius: float = 0.25, min_points: int = 20,
                 neighbours: int = 8):
        if voxel_size <= 0:
            raise ValueError(f"voxel_size must be positive, got {voxel_size}")
        self.voxel_size, self.attach_radius, self.min_points = voxel_size, attach_radius, min_points
        self.params = dict(min_cluster_size=min_cluster_size, min_samples=min_samples,
                           max_cluster_size=max_cluster_size, neighbours=neighbours)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        if len(points) == 0:
            return np.zeros(0, dtype=np.int64)
        centroids, voxel = voxelize(points, self.voxel_size)
        labels = attach_noise(centroids, knn_hdbscan(centroids, **self.params), self.attach_radius)
        return by_size(labels[voxel], self.min_points)


def attach_noise(points: np.ndarray, labels: np.ndarray, radius: float) -> np.ndarray:
    """Noise samples within `radius` of a grouped sample join its group.

    When EOM selects the children of a cluster (always, above max_cluster_size), the samples
    that fell out of it before it split stay noise: about half of a facade. Their nearest grouped
    neighbour, one voxel away, is the group they belong to."""
    noise = labels < 0
    if radius <= 0 or not noise.any() or noise.all():
        return labels
    dist, nearest = cKDTree(points[~noise]).query(points[noise], distance_upper_bound=radius)
    near = np.isfinite(dist)
    out = labels.copy()
    out[np.flatnonzero(noise)[near]] = labels[~noise][nearest[near]]
    return out
