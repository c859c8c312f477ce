"""How good a grouping is, measured against true labels (the synthetic sequences have them).

  * purity: of the points given a group, the fraction whose true segment is the majority
    segment of their group (point-weighted). A true segment is a thing instance (semantic
    class and instance id) or, for points without an instance, their stuff class. A group
    spilling from a car into the building behind it loses purity.
  * coverage: the mean over true thing instances of the best IoU any group reaches with it
    (IoU over all points, ground and noise included), as in SegContrast/TARL-style evaluations
    of unsupervised segments. Splitting a car into halves costs coverage.
  * grouped: the fraction of non-ground points given a group. Leaving hard points as noise
    raises purity for free; this shows it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse


def _contingency(a: np.ndarray, b: np.ndarray) -> tuple[scipy.sparse.csr_matrix, np.ndarray, np.ndarray]:
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    counts = scipy.sparse.coo_matrix((np.ones(len(a), np.int64), (ia.ravel(), ib.ravel())), shape=(len(ua), len(ub)))
    return counts.tocsr(), ua, ub


def true_segments(semantic: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """One id per true segment: (class << 16 | instance) for things, the class for stuff."""
    semantic = semantic.astype(np.int64)
    return np.where(instance > 0, (semantic << 16) | instance.astype(np.int64), semantic)


def purity(groups: np.ndarray, semantic: np.ndarray, instance: np.ndarray) -> float:
    grouped = groups >= 0
    if not grouped.any():
        return 0.0
    counts, _, _ = _contingency(groups[grouped], true_segments(semantic, instance)[grouped])
    return float(counts.max(axis=1).toarray().sum() / grouped.sum())


def coverage(groups: np.ndarray, semantic: np.ndarray, instance: np.ndarray) -> float:
    segments = np.where(instance > 0, true_segments(semantic, instance), -1)
    if not (segments >= 0).any():
        return float("nan")
    counts, seg_ids, group_ids = _contingency(segments, groups)
    seg_size = np.asarray(counts.sum(axis=1)).ravel()
    group_size = np.asarray(counts.sum(axis=0)).ravel()
    coo = counts.tocoo()
    keep = (seg_ids[coo.row] >= 0) & (group_ids[coo.col] >= 0)
    rows, cols, inter = coo.row[keep], coo.col[keep], coo.data[keep].astype(np.float64)
    iou = inter / (seg_size[rows] + group_size[cols] - inter)
    best = np.zeros(len(seg_ids))
    np.maximum.at(best, rows, iou)
    return float(best[seg_ids >= 0].mean())


def grouped(groups: np.ndarray, ground: np.ndarray) -> float:
    """Fraction of the points outside the ground mask that carry a group id."""
    rest = ~ground
    return float(np.mean(groups[rest] >= 0)) if rest.any() else 0.0


def id_stability(scans: list[tuple[np.ndarray, np.ndarray]], min_points: int = 50) -> float:
    """How well group ids persist through time: over consecutive scans (groups, instance) and
    every true instance with at least `min_points` grouped points in both, the fraction of pairs
    in which its main (most frequent) group id is the same."""
    kept = pairs = 0
    previous: dict[int, int] = {}
    for groups, instance in scans:
        current = {}
        for obj in np.unique(instance[instance > 0]):
            ids = groups[(instance == obj) & (groups >= 0)]
            if len(ids) >= min_points:
                current[int(obj)] = int(np.bincount(ids).argmax())
        for obj, main in current.items():
            if obj in previous:
                pairs += 1
                kept += previous[obj] == main
        previous = current
    return kept / pairs if pairs else float("nan")
