"""Importing this module registers every dataset and transform of voxseg.data for YAML configs
(as detectron2's data/datasets/builtin.py registers its datasets): the one place that does."""

from voxseg.data import pretrain_pairs, s3dis, scannet, semantic_kitti_dataset, transforms  # noqa: F401
