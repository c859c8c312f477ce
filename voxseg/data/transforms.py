"""Point-cloud augmentations, selected by name in YAML (`data.train.transforms`).

Each transform takes and returns a sample dict with at least `coord` (N, 3), and optionally other
per-point arrays (`intensity`, `segment`, `instance`, ...) that must stay aligned with the points;
transforms that drop points index every per-point key (voxseg.data.keys). Transforms run before
the dataset derives `feat`, so they only move or drop points. Randomness comes from the `rng` the
dataset passes in, so a seeded run is repeatable.

Parameters carry their valid ranges (voxseg.config.Range) and RandomScale checks low <= high
(`check_config`), so a config that would augment nonsense (NaN angles, negative noise, a crop
that leaves no points) is refused when it is validated, naming the file and key.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from voxseg.config import InvalidValue, Range
from voxseg.data.keys import is_point_key
from voxseg.errors import ConfigError
from voxseg.registry import TRANSFORMS

#: RangeCrop's smallest radius. A LiDAR sees little within a few metres of itself (the vehicle
#: and the mount: the synthetic sensor's min_range is 2.5 m, preprocessing/odometry.py drops
#: returns within 3 m), so a smaller crop leaves scans empty ("cannot voxelize an empty batch").
MIN_CROP_RANGE = 5.0


def _keep(sample: dict, mask: np.ndarray) -> dict:
    """The sample with only the points where `mask` is true, in every per-point key."""
    return {k: (v[mask] if is_point_key(k) else v) for k, v in sample.items()}


@TRANSFORMS.register()
class RandomRotateZ:
    """Rotate about the vertical axis by an angle uniform in [-max_deg, max_deg]."""

    def __init__(self, max_deg: Annotated[float, Range(ge=0)] = 180.0):
        self.max_rad = np.deg2rad(max_deg)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        a = rng.uniform(-self.max_rad, self.max_rad)
        c, s = np.cos(a), np.sin(a)
        rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float32)
        return {**sample, "coord": sample["coord"] @ rotation.T}


@TRANSFORMS.register()
class RandomFlip:
    """Mirror x and/or y, each with probability p."""

    def __init__(self, p: Annotated[float, Range(ge=0, le=1)] = 0.5):
        self.p = p

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        sign = np.where(rng.random(2) < self.p, -1.0, 1.0).astype(np.float32)
        return {**sample, "coord": sample["coord"] * np.array([sign[0], sign[1], 1.0], dtype=np.float32)}


@TRANSFORMS.register()
class RandomScale:
    """Scale all coordinates by one factor uniform in [low, high] (0 < low <= high)."""

    def __init__(self, low: Annotated[float, Range(gt=0)] = 0.95, high: Annotated[float, Range(gt=0)] = 1.05):
        self.check_config({"low": low, "high": high})
        self.low, self.high = low, high

    @staticmethod
    def check_config(cfg: dict) -> None:
        if cfg["low"] > cfg["high"]:
            raise InvalidValue("low", f"must be <= high ({cfg['high']!r}), got {cfg['low']!r}")

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        return {**sample, "coord": sample["coord"] * np.float32(rng.uniform(self.low, self.high))}


@TRANSFORMS.register()
class RandomJitter:
    """Add Gaussian noise (sigma metres, clipped at clip) to every coordinate."""

    def __init__(self, sigma: Annotated[float, Range(ge=0)] = 0.01, clip: Annotated[float, Range(ge=0)] = 0.05):
        self.sigma, self.clip = sigma, clip

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        noise = np.clip(rng.normal(0, self.sigma, sample["coord"].shape), -self.clip, self.clip)
        return {**sample, "coord": sample["coord"] + noise.astype(np.float32)}


@TRANSFORMS.register()
class RangeCrop:
    """Keep the points within `max_range` metres of the sensor (horizontal distance; at least
    MIN_CROP_RANGE)."""

    def __init__(self, max_range: Annotated[float, Range(ge=MIN_CROP_RANGE)] = 50.0):
        self.max_range = max_range

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        return _keep(sample, np.linalg.norm(sample["coord"][:, :2], axis=1) <= self.max_range)


@TRANSFORMS.register()
class RandomDropout:
    """Drop each point independently with probability `ratio`."""

    def __init__(self, ratio: float = 0.1):
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(f"RandomDropout: ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        return _keep(sample, rng.random(len(sample["coord"])) >= self.ratio)
