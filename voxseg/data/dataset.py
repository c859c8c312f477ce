"""SemanticKITTI-format dataset: one sample per scan, labels in train ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from voxseg.config import Component
from voxseg.data import semantic_kitti as sk
from voxseg.data import transforms  # noqa: F401  (registers the transforms datasets build)
from voxseg.data.labels import LabelConfig
from voxseg.data.lidar_features import check_features, point_features
from voxseg.errors import ConfigError
from voxseg.registry import DATASETS, TRANSFORMS

@DATASETS.register()
class SemanticKITTI(Dataset):
    """Scans of `sequences` under `root`.

    A sample is a dict of numpy arrays: `coord` (N, 3) float32 metres in the LiDAR frame,
    `intensity` (N, 1), `point_index` (N,) row of each point in the scan file, `segment` (N,) train
    ids (-1 = ignore), `instance` (N,), `feat` (N, C), plus `name` ("SS/FFFFFF"). With
    `labels=False` (inference on unlabelled scans) there is no segment or instance.

    `instance` is -1 for points without an instance (label upper 16 bits 0) and otherwise a dense
    id 0..K-1 per (learn class, instance id) pair of the scan, as SemanticKITTI's instance ids are
    unique only within a class; transforms that drop points may leave gaps in these ids.

    Transforms run in order with a generator seeded by (seed, epoch, index); `feat` is derived
    after them (columns in the order of `features`), so height and range follow the augmented
    coordinates.
    """

    def __init__(self, root: str, label_config: str, sequences: list[int | str], features: list[str] = ["intensity"],
                 transforms: list[Component] = [], labels: bool = True):
        check_features(features)
        self.root = Path(root)
        self.label_config = LabelConfig.load(label_config)
        self.features = list(features)
        self.transforms = [TRANSFORMS.build(t) for t in transforms]
        self.labels = labels
        self.seed = 0  # augmentation seed; the trainer sets it from train.seed
        self.epoch = 0
        self.frames = [(sk.sequence_name(s), f) for s in sequences for f in sk.frame_ids(self.root, s)]
        if not self.frames:
            raise ConfigError(f"{self.root}: no scans in sequences {list(sequences)}")

    @property
    def in_channels(self) -> int:
        return len(self.features)

    def __len__(self) -> int:
        return len(self.frames)

    def name(self, index: int) -> str:
        return "/".join(self.frames[index])

    def __getitem__(self, index: int) -> dict:
        sequence, frame = self.frames[index]
        points = sk.read_scan(sk.scan_path(self.root, sequence, frame))
        sample = {
            "coord": points[:, :3].copy(),
            "intensity": points[:, 3:4].copy(),
            "point_index": np.arange(len(points)),
            "name": f"{sequence}/{frame}",
        }
        if self.labels:
            semantic, instance = sk.read_label(sk.label_path(self.root, sequence, frame), num_points=len(points))
            sample["segment"] = self.label_config.raw_to_train(semantic)
            sample["instance"] = self.label_config.dense_instances(semantic, instance)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        for transform in self.transforms:
            sample = transform(sample, rng)
        sample["feat"] = point_features(sample, self.features)
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
