"""Dataset samples, transforms and collation."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SYNTHETIC_LABELS
from voxseg.data import transforms
from voxseg.data.collate import collate
from voxseg.data.dataset import SemanticKITTI
from voxseg.errors import ConfigError


def test_sample_contents(tiny_dataset):
    dataset = SemanticKITTI(str(tiny_dataset), str(SYNTHETIC_LABELS), sequences=[0, 1], features=["intensity", "height"])
    assert len(dataset) == 9 and dataset.name(6) == "01/000000"
    sample = dataset[0]
    n = len(sample["coord"])
    assert sample["feat"].shape == (n, 2) and np.array_equal(sample["feat"][:, 1], sample["coord"][:, 2])
    assert sample["segment"].min() >= -1 and sample["segment"].max() <= 11
    assert (sample["segment"] >= 0).mean() > 0.95  # nearly every synthetic point has a class


def test_unknown_feature(tiny_dataset):
    with pytest.raises(ConfigError, match=r"unknown point feature\(s\) \['colour'\]"):
        SemanticKITTI(str(tiny_dataset), str(SYNTHETIC_LABELS), sequences=[0], features=["colour"])


def make_sample(rng, n=500):
    return {
        "coord": rng.uniform(-80, 80, (n, 3)).astype(np.float32),
        "feat": rng.uniform(0, 1, (n, 1)).astype(np.float32),
        "segment": rng.integers(-1, 5, n),
        "instance": rng.integers(0, 9, n),
        "point_index": np.arange(n),
        "name": "00/000000",
    }


def test_range_crop_keeps_per_point_arrays_aligned(rng):
    sample = make_sample(rng)
    out = transforms.RangeCrop(max_range=40.0)(sample, rng)
    kept = out["point_index"]
    assert np.all(np.linalg.norm(out["coord"][:, :2], axis=1) <= 40)
    assert 0 < len(kept) < 500
    for key in ("coord", "feat", "segment", "instance"):
        assert np.array_equal(out[key], sample[key][kept])


def test_rigid_transforms(rng):
    sample = make_sample(rng)
    pair = lambda c: np.linalg.norm(c[0] - c[1])  # noqa: E731
    rotated = transforms.RandomRotateZ()(sample, rng)["coord"]
    flipped = transforms.RandomFlip(p=1.0)(sample, rng)["coord"]
    scaled = transforms.RandomScale(2.0, 2.0)(sample, rng)["coord"]
    assert pair(rotated) == pytest.approx(pair(sample["coord"]), rel=1e-5)
    assert np.allclose(rotated[:, 2], sample["coord"][:, 2])
    assert np.allclose(flipped, sample["coord"] * [-1, -1, 1])
    assert np.allclose(scaled, 2 * sample["coord"])


def test_collate(rng):
    a, b = make_sample(rng, 3), make_sample(rng, 5)
    batch = collate([a, b])
    assert batch["batch"].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert batch["offset"].tolist() == [3, 8]
    assert np.array_equal(batch["coord"][3:].numpy(), b["coord"]) and batch["name"] == ["00/000000"] * 2
