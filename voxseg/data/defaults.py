"""The base of every dataset (as Pointcept's datasets/defaults.py): list the items, read one,
transform it with a generator seeded by (seed, epoch, index), derive its features.

A subclass declares `offered_features` (voxseg.data.features), fills `self.items` with one name
per sample in its constructor and defines `read(index)` (the sample before its transforms) and
`check(full, progress, indices)` (validate the files before work starts, raising DataFormatError
naming the first bad one). The trainer sets `seed` (train.seed) and `epoch`; a sample is a function
of (seed, epoch, index) alone, which keeps resume exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from torch.utils.data import Dataset

import voxseg.data.transforms  # noqa: F401  (registers the transforms datasets build)
from voxseg.config import Component
from voxseg.data.features import check_features, feature_channels, point_features
from voxseg.data.labels import LabelConfig
from voxseg.errors import ConfigError
from voxseg.registry import TRANSFORMS


class PointDataset(Dataset):
    """Samples of the point sets under `root`, named by `self.items`.

    The constructor checks what every dataset shares: `features` are among `offered_features`,
    `labels` has a `label_config` (loaded when given), and builds `transforms` from TRANSFORMS.
    `__getitem__` reads the sample, runs the transforms in order with
    `np.random.default_rng([seed, epoch, index])`, then sets `feat` (N, in_channels) float32,
    its columns in the order of `features`.
    """

    offered_features: tuple[str, ...] = ()

    def __init__(self, root: str, label_config: str | None, features: list[str], transforms: list[Component],
                 labels: bool):
        where = type(self).__name__
        check_features(features, self.offered_features, where)
        if labels and label_config is None:
            raise ConfigError(f"{where}: labels: true needs a label_config")
        self.root = Path(root)
        self.label_config = LabelConfig.load(label_config) if label_config is not None else None
        self.features = list(features)
        self.transforms = build_transforms(transforms)
        self.labels = labels
        self.seed = 0  # augmentation seed; the trainer sets it from train.seed
        self.epoch = 0  # the trainer sets it at each epoch
        self.items: list[str] = []

    @property
    def in_channels(self) -> int:
        return feature_channels(self.features)

    def __len__(self) -> int:
        return len(self.items)

    def name(self, index: int) -> str:
        return self.items[index]

    def read(self, index: int) -> dict:
        """Sample `index` before its transforms."""
        raise NotImplementedError

    def check(self, full: bool = True, progress: bool = True, indices: Iterable[int] | None = None) -> None:
        """Check the files of every sample (of `indices`) before work starts; with `full`, read
        them. Raises DataFormatError naming the first bad file."""
        raise NotImplementedError

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample `index` in this epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def add_feat(self, sample: dict) -> dict:
        """`sample` with `feat` derived from its (transformed) points."""
        sample["feat"] = point_features(sample, self.features)
        return sample

    def __getitem__(self, index: int) -> dict:
        return self.add_feat(augment(self.read(index), self.transforms, self.rng(index)))


def build_transforms(configs: list[Component]) -> list:
    return [TRANSFORMS.build(t) for t in configs]


def augment(sample: dict, transforms: list, rng: np.random.Generator) -> dict:
    """`sample` after each of `transforms` in order, all drawing from `rng`."""
    for transform in transforms:
        sample = transform(sample, rng)
    return sample
