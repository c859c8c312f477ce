"""Datasets (dataset.py), the SemanticKITTI format (semantic_kitti.py), class mappings
(labels.py), augmentations (transforms.py) and batch collation (collate.py).

Importing voxseg.data.dataset registers the datasets and transforms for YAML configs.
"""
