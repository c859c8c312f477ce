"""SemanticKITTI-format dataset: one sample per scan, labels in train ids."""

from __future__ import annotations

from typing import Annotated

from tqdm import tqdm

from voxseg.config import Component, Range
from voxseg.data import semantic_kitti as sk
from voxseg.data.defaults import PointDataset
from voxseg.data.features import LIDAR_FEATURES
from voxseg.errors import ConfigError
from voxseg.registry import DATASETS


@DATASETS.register()
class SemanticKITTI(PointDataset):
    """Scans of `sequences` under `root`.

    A sample is `semantic_kitti.read_scan_sample`'s (`coord`, `intensity`, `point_index`, and with
    labels `segment` in train ids and dense `instance` ids) plus `feat` (N, C) and `name`
    ("SS/FFFFFF"). With `labels=False` (inference on unlabelled scans) there is no segment or
    instance. Transforms that drop points may leave gaps in the instance ids. `frame_stride` k
    keeps every k-th scan of each sequence (scans 0, k, 2k...): a sample of a long validation
    sequence to validate on during training, as tools/infer.py then predicts all of it.

    Transforms and features as voxseg.data.defaults.PointDataset: the generator is seeded by
    (seed, epoch, index), and `feat` follows the augmented coordinates.
    """

    offered_features = LIDAR_FEATURES

    def __init__(self, root: str, label_config: str, sequences: list[int | str],
                 features: list[str] = ["intensity"],  # noqa: B006
                 transforms: list[Component] = [], labels: bool = True,  # noqa: B006
                 frame_stride: Annotated[int, Range(ge=1)] = 1):
        super().__init__(root, label_config, features, transforms, labels)
        self.frames = [(sk.sequence_name(s), f) for s in sequences
                       for f in sk.frame_ids(self.root, s)[::frame_stride]]
        if not self.frames:
            raise ConfigError(f"{self.root}: no scans in sequences {list(sequences)}")
        self.items = ["/".join(frame) for frame in self.frames]

    def read(self, index: int) -> dict:
        sequence, frame = self.frames[index]
        sample = sk.read_scan_sample(self.root, sequence, frame, self.label_config if self.labels else None)
        sample["name"] = self.items[index]
        return sample

    def check(self, full: bool = True, progress: bool = True, indices=None) -> None:
        """Check every scan before work starts: it exists, holds a whole number of points and at
        least one, and (with labels) its label file has one label per point; with `full`, also
        read it (finite values). `indices` limits the check to those scans (the ones a run will
        read). Raises DataFormatError naming the first bad file."""
        frames = self.frames if indices is None else [self.frames[i] for i in indices]
        for sequence, frame in tqdm(frames, desc=f"checking {self.root}", unit="scan", disable=not progress):
            scan = sk.scan_path(self.root, sequence, frame)
            num_points = sk.scan_size(scan, allow_empty=False)
            if self.labels:
                sk.label_size(sk.label_path(self.root, sequence, frame), num_points)
            if full:
                sk.read_scan(scan)
