"""The input features of a LiDAR point (config `features`), derived from a sample after its
transforms ran, so height and range follow the augmented coordinates. SemanticKITTI scans and
the ISCC pretraining pairs share them; the indoor datasets have their own (voxseg.data.indoor)."""

from __future__ import annotations

import numpy as np

from voxseg.errors import ConfigError

# each (N, 1)
FEATURES = {
    "intensity": lambda sample: sample["intensity"],
    "height": lambda sample: sample["coord"][:, 2:3],
    "range": lambda sample: np.linalg.norm(sample["coord"], axis=1, keepdims=True),
}


def check_features(features: list[str]) -> None:
    """ConfigError unless every name is one of FEATURES."""
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ConfigError(f"unknown point feature(s) {unknown}; choose from {sorted(FEATURES)}")


def point_features(sample: dict, features: list[str]) -> np.ndarray:
    """(N, len(features)) float32: the named features of the sample's points, in that order."""
    return np.concatenate([FEATURES[f](sample) for f in features], axis=1).astype(np.float32)
