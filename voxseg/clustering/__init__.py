"""Clustering of per-point embeddings (instance segmentation at inference)."""

from voxseg.clustering.mean_shift import bin_seeds, mean_shift

__all__ = ["bin_seeds", "mean_shift"]
