"""benchmarks/predict.py without measuring: the big cloud it predicts (exact size, finite,
deterministic, the scans in turn) and its two predictors on one checkpoint (voxseg's Predictor
and the bare MinkUNet14A given the same weights agree on every point)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import predict as bench
from voxseg.data.labels import LabelConfig


def test_big_cloud_has_exactly_the_points_asked_for_deterministically(rng):
    clouds = [rng.normal(0, 10, (700, 4)).astype(np.float32), rng.normal(0, 10, (500, 4)).astype(np.float32)]
    cloud = bench.big_cloud(clouds, 2000)
    assert cloud.shape == (2000, 4) and cloud.dtype == np.float32 and np.isfinite(cloud).all()
    assert np.array_equal(cloud, bench.big_cloud(clouds, 2000))
    assert not np.array_equal(cloud, bench.big_cloud(clouds, 2000, seed=1))
    # the scans in turn (700 + 500 + 700 + the first 100 of the second), x y z jittered, intensity kept
    sources = np.concatenate([clouds[0], clouds[1], clouds[0], clouds[1][:100]])
    assert np.array_equal(cloud[:, 3], sources[:, 3])
    offset = cloud[:, :3] - sources[:, :3]
    assert 0 < np.abs(offset).max() < 10 * bench.JITTER and abs(offset.std() - bench.JITTER) < 0.1 * bench.JITTER
    assert bench.big_cloud(clouds, 300).shape == (300, 4)  # shorter than one scan
    with pytest.raises(ValueError, match="non-empty"):
        bench.big_cloud([np.zeros((0, 4), np.float32)], 10)


def test_both_predictors_load_the_checkpoint_and_agree(tmp_path, rng):
    path = tmp_path / "model.pt"
    params = bench.write_checkpoint(path, voxel_size=0.25)
    job = {"checkpoint": str(path), "voxel_size": 0.25}
    voxseg_predict, voxseg_params = bench.predictor({**job, "kind": "voxseg"}, torch.device("cpu"))
    bare_predict, bare_params = bench.predictor({**job, "kind": "bare"}, torch.device("cpu"))  # strict load
    assert params == voxseg_params == bare_params
    points = np.concatenate([rng.uniform(-8, 8, (3000, 3)), rng.uniform(0, 1, (3000, 1))], axis=1).astype(np.float32)
    voxseg_labels, bare_labels = voxseg_predict(points), bare_predict(points)
    assert voxseg_labels.shape == bare_labels.shape == (3000,)
    assert np.array_equal(voxseg_labels, LabelConfig.load(bench.LABEL_CONFIG).train_to_raw(bare_labels))
