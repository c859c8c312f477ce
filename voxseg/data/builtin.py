"""Importing this module registers every dataset and transform of voxseg.data for YAML configs
(as detectron2's data/datasets/builtin.py registers its datasets): the one place that does."""

from voxseg.data import dataset, pretrain_pairs, s3dis, scannet, transforms  # noqa: F401
