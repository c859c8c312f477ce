"""Data: scan and label formats, datasets, augmentations and batch collation.

    semantic_kitti     the SemanticKITTI file format (scans, labels, poses)
    labels             class mappings (raw ids <-> train ids)
    groups             the preprocessing's window group ids (tools/preprocess.py)
    keys               which sample keys hold one row per point
    features           the input features of a point (one table for every dataset)
    transforms         augmentations (voxseg.registry.TRANSFORMS)
    defaults           PointDataset, the base of every dataset: read, transform, derive features
    dataset            SemanticKITTI-format scans            } voxseg.registry.DATASETS
    s3dis, scannet     the indoor datasets (indoor.py)       }
    pretrain_pairs     ISCC's pairs of nearby scans          }
    collate            batches of samples
    scene_predictions  the indoor prediction files
    builtin            imports every dataset and transform: the one place that registers them

Importing voxseg.data.builtin registers the datasets and transforms for YAML configs. This
package imports nothing, so that preprocessing and evaluation, which read the formats, do not
import torch.
"""
