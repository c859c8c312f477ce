"""Dataset samples, transforms and collation."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from tests.helpers import SYNTHETIC_LABELS
from voxseg.data import semantic_kitti as sk, transforms
from voxseg.data.collate import collate
from voxseg.data.labels import LabelConfig
from voxseg.data.semantic_kitti_dataset import SemanticKITTI
from voxseg.errors import ConfigError, DataFormatError


def test_sample_contents(tiny_dataset):
    dataset = SemanticKITTI(str(tiny_dataset), str(SYNTHETIC_LABELS), sequences=[0, 1],
                            features=["intensity", "height"])
    assert len(dataset) == 9 and dataset.name(6) == "01/000000"
    sample = dataset[0]
    n = len(sample["coord"])
    assert sample["feat"].shape == (n, 2) and np.array_equal(sample["feat"][:, 1], sample["coord"][:, 2])
    assert sample["segment"].min() >= -1 and sample["segment"].max() <= 11
    assert (sample["segment"] >= 0).mean() > 0.95  # nearly every synthetic point has a class
    assert sorted(sample) == ["coord", "feat", "instance", "intensity", "name", "point_index", "segment"]


def test_frame_stride_keeps_every_kth_scan_of_each_sequence(tiny_dataset):
    every = SemanticKITTI(str(tiny_dataset), str(SYNTHETIC_LABELS), sequences=[0, 1])
    sampled = SemanticKITTI(str(tiny_dataset), str(SYNTHETIC_LABELS), sequences=[0, 1], frame_stride=4)
    # sequence 00 has scans 0-5, 01 has 0-2: scans 0 and 4 of 00, scan 0 of 01
    assert sampled.items == ["00/000000", "00/000004", "01/000000"]
    assert np.array_equal(sampled[1]["coord"], every[4]["coord"])


def test_synthetic_instances_are_dense_and_of_thing_classes(tiny_dataset):
    dataset = SemanticKITTI(str(tiny_dataset), str(SYNTHETIC_LABELS), sequences=[0])
    things = LabelConfig.load(SYNTHETIC_LABELS).thing_train_ids
    for index in (0, 5):
        sample = dataset[index]
        instance, segment = sample["instance"], sample["segment"]
        ids = np.unique(instance[instance >= 0])
        assert len(ids) > 5 and np.array_equal(ids, np.arange(len(ids)))
        assert set(np.unique(segment[instance >= 0]).tolist()) == set(things)
        assert not np.isin(segment[instance < 0], things).any()


def write_scans(root, points: list[np.ndarray], labels: list[tuple[np.ndarray, np.ndarray]] | None = None):
    """A one-sequence dataset under `root` from hand-made scans (and labels)."""
    for i, p in enumerate(points):
        sk.write_scan(sk.scan_path(root, 0, f"{i:06d}"), p)
        if labels is not None:
            sk.write_label(sk.label_path(root, 0, f"{i:06d}"), *labels[i])
    return str(root)


def test_instances_are_dense_per_class_and_instance_id(tmp_path):
    semantic = np.array([10, 10, 252, 30, 40, 10, 30, 254])
    instance = np.array([0, 5, 5, 5, 0, 7, 2, 2])
    # learn classes 1 (car, moving-car) and 2 (person, moving-person); instance 5 is a car and a person
    points = np.zeros((8, 4), np.float32)
    root = write_scans(tmp_path, [points], [(semantic, instance)])
    sample = SemanticKITTI(root, str(SYNTHETIC_LABELS), sequences=[0])[0]
    # pairs sorted by (class, id): (1, 5) -> 0, (1, 7) -> 1, (2, 2) -> 2, (2, 5) -> 3
    assert np.array_equal(sample["instance"], [-1, 0, 0, 3, -1, 1, 2, 2])
    assert np.array_equal(sample["segment"], [0, 0, 0, 1, 2, 0, 1, 1])


def test_features_follow_the_augmented_coordinates(tiny_dataset):
    augment = [{"type": "RandomRotateZ", "max_deg": 180}, {"type": "RandomScale", "low": 2.0, "high": 2.0}]
    dataset = SemanticKITTI(str(tiny_dataset), str(SYNTHETIC_LABELS), sequences=[0],
                            features=["range", "intensity", "height"], transforms=augment)
    sample = dataset[1]
    raw = sk.read_scan(sk.scan_path(tiny_dataset, 0, "000001"))[sample["point_index"]]
    coord, feat = sample["coord"], sample["feat"]
    assert feat.shape == (len(coord), 3) and feat.dtype == np.float32
    assert np.array_equal(feat[:, 0], np.linalg.norm(coord, axis=1))
    assert np.array_equal(feat[:, 1], raw[:, 3])
    assert np.array_equal(feat[:, 2], coord[:, 2])
    # the augmentation did change the coordinates: scaled by 2 and rotated
    assert np.allclose(feat[:, 0], 2 * np.linalg.norm(raw[:, :3], axis=1), rtol=1e-5)
    assert np.allclose(feat[:, 2], 2 * raw[:, 2], rtol=1e-5) and not np.allclose(coord[:, :2], 2 * raw[:, :2])


def test_check_accepts_a_good_dataset(tiny_dataset, tmp_path, capsys):
    SemanticKITTI(str(tiny_dataset), str(SYNTHETIC_LABELS), sequences=[0, 1]).check(progress=False)
    # it checks every scan: its progress bar counts nine, and a copy whose last scan is bad is refused
    SemanticKITTI(str(tiny_dataset), str(SYNTHETIC_LABELS), sequences=[0, 1]).check(progress=True)
    assert "9/9" in capsys.readouterr().err
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    dataset = SemanticKITTI(str(root), str(SYNTHETIC_LABELS), sequences=[0, 1])
    scan, label = sk.scan_path(root, 1, "000002"), sk.label_path(root, 1, "000002")
    values = np.fromfile(scan, dtype=np.float32)
    values[-1] = np.nan
    values.tofile(scan)
    dataset.check(full=False, progress=False)  # sizes alone are fine
    with pytest.raises(DataFormatError, match=re.escape(f"{scan}: 1 of {len(values) // 4} points have NaN")):
        dataset.check(progress=False)
    label.write_bytes(label.read_bytes()[:-4])
    with pytest.raises(DataFormatError, match=re.escape(f"{label}: {len(values) // 4 - 1} labels for a scan of")):
        dataset.check(full=False, progress=False)


def test_check_rejects_an_empty_scan(tmp_path):
    root = write_scans(tmp_path, [np.ones((3, 4), np.float32), np.zeros((0, 4), np.float32)])
    dataset = SemanticKITTI(root, str(SYNTHETIC_LABELS), sequences=[0], labels=False)
    with pytest.raises(DataFormatError, match=r"00/velodyne/000001\.bin: empty scan \(0 points\)"):
        dataset.check(full=False, progress=False)


def test_check_rejects_a_label_count_mismatch(tmp_path):
    labels = [(np.full(3, 40), None), (np.full(4, 40), None)]
    root = write_scans(tmp_path, [np.ones((3, 4), np.float32), np.ones((5, 4), np.float32)], labels)
    dataset = SemanticKITTI(root, str(SYNTHETIC_LABELS), sequences=[0])
    with pytest.raises(DataFormatError, match=r"00/labels/000001\.label: 4 labels for a scan of 5 points"):
        dataset.check(progress=False)
    SemanticKITTI(root, str(SYNTHETIC_LABELS), sequences=[0], labels=False).check(progress=False)


def test_check_full_reads_the_values(tmp_path):
    bad = np.ones((3, 4), np.float32)
    bad[1, 3] = np.nan
    root = write_scans(tmp_path, [np.ones((2, 4), np.float32), bad])
    dataset = SemanticKITTI(root, str(SYNTHETIC_LABELS), sequences=[0], labels=False)
    dataset.check(full=False, progress=False)  # sizes alone are fine
    with pytest.raises(DataFormatError, match=r"000001\.bin: 1 of 3 points have NaN or infinite intensities"):
        dataset.check(progress=False)


def test_unknown_feature(tiny_dataset):
    with pytest.raises(ConfigError, match=r"unknown point feature\(s\) \['colour'\]"):
        SemanticKITTI(str(tiny_dataset), str(SYNTHETIC_LABELS), sequences=[0], features=["colour"])


def make_sample(rng, n=500):
    return {
        "coord": rng.uniform(-80, 80, (n, 3)).astype(np.float32),
        "intensity": rng.uniform(0, 1, (n, 1)).astype(np.float32),
        "segment": rng.integers(-1, 5, n),
        "instance": rng.integers(-1, 9, n),
        "point_index": np.arange(n),
        "name": "00/000000",
    }


def test_range_crop_keeps_per_point_arrays_aligned(rng):
    sample = make_sample(rng)
    out = transforms.RangeCrop(max_range=40.0)(sample, rng)
    kept = out["point_index"]
    assert np.all(np.linalg.norm(out["coord"][:, :2], axis=1) <= 40)
    assert 0 < len(kept) < 500
    for key in ("coord", "intensity", "segment", "instance"):
        assert np.array_equal(out[key], sample[key][kept])


def test_random_dropout_keeps_per_point_arrays_aligned(rng):
    sample = make_sample(rng, 2000)
    out = transforms.RandomDropout(ratio=0.25)(sample, rng)
    kept = out["point_index"]
    assert 1300 < len(kept) < 1700 and np.all(np.diff(kept) > 0) and out["name"] == sample["name"]
    for key in ("coord", "intensity", "segment", "instance"):
        assert np.array_equal(out[key], sample[key][kept])
    with pytest.raises(ConfigError, match=r"RandomDropout: ratio must be in \[0, 1\), got 1.0"):
        transforms.RandomDropout(ratio=1.0)


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
