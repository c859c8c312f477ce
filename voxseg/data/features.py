"""The input features of a point (config `features`): one table, name -> (columns, function of
the sample), shared by every dataset. Features are derived after the sample's transforms ran, so
height and range follow the augmented coordinates. Each dataset offers the features whose keys its
samples carry (`PointDataset.offered_features`): the LiDAR datasets `LIDAR_FEATURES`, the indoor
ones `INDOOR_FEATURES`.
"""

from __future__ import annotations

import numpy as np

from voxseg.errors import ConfigError

# name -> (columns, (N, columns) array of the sample)
POINT_FEATURES = {
    "intensity": (1, lambda sample: sample["intensity"]),
    "height": (1, lambda sample: sample["coord"][:, 2:3]),
    "range": (1, lambda sample: np.linalg.norm(sample["coord"], axis=1, keepdims=True)),
    "color": (3, lambda sample: sample["color"]),
}

LIDAR_FEATURES = ("intensity", "height", "range")
INDOOR_FEATURES = ("color", "height")


def check_features(features: list[str], allowed: tuple[str, ...], where: str) -> None:
    """ConfigError naming `where` and the allowed names unless `features` is a non-empty list of
    names in `allowed`."""
    unknown = [f for f in features if f not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown point feature(s) {unknown}; choose from {sorted(allowed)}")
    if not features:
        raise ConfigError(f"{where}: features is empty; choose from {sorted(allowed)}")


def feature_channels(features: list[str]) -> int:
    """The number of columns `point_features` gives for `features`."""
    return sum(POINT_FEATURES[f][0] for f in features)


def point_features(sample: dict, features: list[str]) -> np.ndarray:
    """(N, feature_channels(features)) float32: the named features of the sample's points, in
    that order."""
    return np.concatenate([POINT_FEATURES[f][1](sample) for f in features], axis=1).astype(np.float32)
