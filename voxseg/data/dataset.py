"""SemanticKITTI-format dataset: one sample per scan, labels in train ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from voxseg.config import Component
from voxseg.data import semantic_kitti as sk
from voxseg.data import transforms  # noqa: F401  (registers the transforms datasets build)
from voxseg.data.labels import LabelConfig
from voxseg.errors import ConfigError
from voxseg.registry import DATASETS, TRANSFORMS

FEATURES = {
    "intensity": lambda points: points[:, 3:4],
    "height": lambda points: points[:, 2:3],
    "range": lambda points: np.linalg.norm(points[:, :3], axis=1, keepdims=True),
}


@DATASETS.register()
class SemanticKITTI(Dataset):
    """Scans of `sequences` under `root`.

    A sample is a dict of numpy arrays: `coord` (N, 3) metres in the LiDAR frame, `feat` (N, C)
    from `features`, `segment` (N,) train ids (-1 = ignore), `instance` (N,), plus `name`
    ("SS/FFFFFF"). With `labels=False` (inference on unlabelled scans) there is no segment or
    instance. Transforms run in order with a generator seeded by (seed, epoch, index).
    """

    def __init__(self, root: str, label_config: str, sequences: list[int | str], features: list[str] = ["intensity"],
                 transforms: list[Component] = [], labels: bool = True):
        unknown = [f for f in features if f not in FEATURES]
        if unknown:
            raise ConfigError(f"unknown point feature(s) {unknown}; choose from {sorted(FEATURES)}")
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
            "feat": np.concatenate([FEATURES[f](points) for f in self.features], axis=1).astype(np.float32),
            "point_index": np.arange(len(points)),
            "name": f"{sequence}/{frame}",
        }
        if self.labels:
            semantic, instance = sk.read_label(sk.label_path(self.root, sequence, frame), num_points=len(points))
            sample["segment"] = self.label_config.raw_to_train(semantic)
            sample["instance"] = instance
        rng = np.random.default_rng([self.seed, self.epoch, index])
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample
