"""Achievable segmentation accuracy (ASA) of an over-segmentation (superpixels, cliques).

The measure SSN (Jampani et al. 2018) and DPGNet (Cheng et al., Sec. 4.2) report for superpixels:
the accuracy of the best segmentation that can be built from the cliques, i.e. each clique taking
the ground-truth label it overlaps most,

  ASA = sum_i max_g |c_i ∩ g_g| / sum_i |c_i|.

For LiDAR instances (the paper scores image segments, where every pixel has a segment), points
without an instance (id < 0: stuff, and thing points of no instance) form one ground-truth
segment of their own, "no instance": a clique mixing a car with the road beside it loses the
smaller part, as an instance built from cliques could not leave those points out. Points where
`valid` is False (unlabelled) count nowhere. Clique and instance ids are those of one scan (or
unique over the scans passed together).
"""

from __future__ import annotations

import numpy as np

__all__ = ["achievable_segmentation_accuracy"]


def achievable_segmentation_accuracy(clique, instance, valid=None) -> float:
    """ASA of `clique` (N,) ids against ground-truth `instance` (N,) ids (< 0 = no instance, one
    segment); `valid` (N,) bool selects the labelled points (default: all). NaN without points."""
    clique, instance = np.asarray(clique).astype(np.int64).ravel(), np.asarray(instance).astype(np.int64).ravel()
    if clique.shape != instance.shape:
        raise ValueError(f"clique and instance differ in length: {len(clique)}, {len(instance)}")
    if valid is not None:
        valid = np.asarray(valid, dtype=bool).ravel()
        if valid.shape != clique.shape:
            raise ValueError(f"valid has {len(valid)} entries for {len(clique)} points")
        clique, instance = clique[valid], instance[valid]
    if len(clique) == 0:
        return float("nan")
    instance = np.where(instance < 0, -1, instance)  # every point without an instance: one segment
    pairs, overlap = np.unique(np.stack([clique, instance], axis=1), axis=0, return_counts=True)
    best = np.zeros(len(np.unique(clique)), dtype=np.int64)
    np.maximum.at(best, np.unique(pairs[:, 0], return_inverse=True)[1].ravel(), overlap)
    return float(best.sum() / len(clique))
