"""Temporal linking: one object keeps one group id through a sequence.

Overlapping windows share scans (TARL's 12/4 windows share 8), and so share points. Window w's
groups are matched to window w-1's by the IoU they reach on those shared points, one-to-one
(Hungarian assignment, scipy's linear_sum_assignment); a matched group inherits the earlier id,
an unmatched one gets a fresh id. Chaining this along the windows gives sequence-wide ids.
(TARL links nothing across windows; the ISCC paper asks for temporally linked ids.)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.optimize import linear_sum_assignment


def match(previous: np.ndarray, current: np.ndarray, min_iou: float) -> dict[int, int]:
    """{current group: previous group} for the pairs matched on the shared points.

    `previous` and `current` label the same points (ids >= 0 are groups, -1 is ground/noise);
    a pair is kept when its IoU over those points is at least `min_iou`.
    """
    both = (previous >= 0) & (current >= 0)
    if not both.any():
        return {}
    prev_ids, prev_inv = np.unique(previous[previous >= 0], return_inverse=True)
    cur_ids, cur_inv = np.unique(current[current >= 0], return_inverse=True)
    prev_size = np.bincount(prev_inv.ravel(), minlength=len(prev_ids))
    cur_size = np.bincount(cur_inv.ravel(), minlength=len(cur_ids))
    rows = np.searchsorted(cur_ids, current[both])
    cols = np.searchsorted(prev_ids, previous[both])
    inter = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(cur_ids), len(prev_ids))).toarray()
    iou = inter / (cur_size[:, None] + prev_size[None, :] - inter)
    r, c = linear_sum_assignment(iou, maximize=True)
    return {int(cur_ids[i]): int(prev_ids[j]) for i, j in zip(r, c, strict=True) if iou[i, j] >= min_iou}


class Linker:
    """Turns each window's local group labels into sequence-wide ids, window after window."""

    def __init__(self, min_iou: float = 0.3):
        self.min_iou = min_iou
        self.next_id = 0

    def first(self, local: np.ndarray) -> np.ndarray:
        """(num_local,) global id of each local group of the first window."""
        num = int(local.max()) + 1 if len(local) else 0
        ids = np.arange(self.next_id, self.next_id + num)
        self.next_id += num
        return ids

    def follow(self, previous_global: np.ndarray, current_local: np.ndarray, local_shared: np.ndarray) -> np.ndarray:
        """(num_local,) global ids for the current window.

        `previous_global`: global ids of the previous window on the shared points;
        `local_shared`: the current window's local labels on the same points;
        `current_local`: all of the current window's local labels (to count its groups).
        """
        num = int(current_local.max()) + 1 if len(current_local) else 0
        matched = match(previous_global, local_shared, self.min_iou)
        ids = np.empty(num, dtype=np.int64)
        for group in range(num):
            if group in matched:
                ids[group] = matched[group]
            else:
                ids[group] = self.next_id
                self.next_id += 1
        return ids


def relabel(local: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Local labels -> global ids; -1 stays -1."""
    out = np.full(len(local), -1, dtype=np.int32)
    grouped = local >= 0
    out[grouped] = ids[local[grouped]]
    return out
