"""voxseg: sparse-voxel 3D segmentation on MinkowskiEngine."""

__version__ = "0.1.0"
