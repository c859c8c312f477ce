"""Synthetic LiDAR sequences in SemanticKITTI format: voxseg's embedded default data."""

from voxseg.synthetic.sequence import SyntheticSpec, generate_dataset

__all__ = ["SyntheticSpec", "generate_dataset"]
