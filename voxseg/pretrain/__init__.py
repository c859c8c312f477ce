"""Self-supervised pretraining: ISCC (Zhang, Bai, Li, "Implicit Surface Contrastive Clustering
for LiDAR Point Clouds", CVPR 2023).

    losses     group average pooling, local InfoNCE, clustering and occupancy cross-entropies
    sinkhorn   Sinkhorn-Knopp balanced assignments (SwAV)
    queue      FIFO queue of past teacher group features (checkpointed buffers)
    teacher    the momentum teacher: a frozen copy updated as an EMA of the student's parameters
    occupancy  the implicit decoder of the local occupancy loss
    iscc       the ISCC model, registered in voxseg.registry.MODELS

voxseg.models imports this package, so `ISCC` is available to YAML configs like any model.
"""

from voxseg.pretrain import iscc  # noqa: F401  (registers ISCC)
