"""The dataset base (voxseg.data.defaults.PointDataset) and the one point-feature table
(voxseg.data.features): the (seed, epoch, index) generator, in_channels, the shared constructor
checks, and the one SemanticKITTI scan read."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import ROOT, SYNTHETIC_LABELS
from voxseg.data import semantic_kitti as sk
from voxseg.data.defaults import PointDataset
from voxseg.data.features import INDOOR_FEATURES, LIDAR_FEATURES, feature_channels, point_features
from voxseg.data.pretrain_pairs import ISCCPairs
from voxseg.data.s3dis import S3DIS
from voxseg.data.scannet import ScanNet
from voxseg.data.semantic_kitti_dataset import SemanticKITTI
from voxseg.errors import ConfigError

SCANNET_LABELS = str(ROOT / "configs" / "labels" / "scannet.yaml")
ROTATE = [{"type": "RandomRotateZ", "max_deg": 180}]


class Toy(PointDataset):
    """Two fixed point sets, with the LiDAR features."""

    offered_features = LIDAR_FEATURES

    def __init__(self, features=("intensity",), transforms=(), label_config=None, labels=False):
        super().__init__("/nowhere", label_config, list(features), list(transforms), labels)
        self.items = ["a", "b"]

    def read(self, index: int) -> dict:
        coord = np.array([[1, 0, 2], [0, 2, -1], [3, 4, 0]], dtype=np.float32) * (index + 1)
        intensity = np.array([[0.5], [0.25], [1.0]], dtype=np.float32)
        return {"coord": coord, "intensity": intensity, "name": self.items[index]}


def rotated(coord: np.ndarray, seed: int, epoch: int, index: int) -> np.ndarray:
    """RandomRotateZ(180) of `coord` with the generator the base seeds for (seed, epoch, index)."""
    a = np.random.default_rng([seed, epoch, index]).uniform(-np.pi, np.pi)
    c, s = np.cos(a), np.sin(a)
    return coord @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float32).T


def test_the_generator_is_seeded_by_seed_epoch_and_index():
    dataset = Toy(features=["intensity", "height"], transforms=ROTATE)
    dataset.seed, dataset.epoch = 5, 2
    first, again = dataset[1], dataset[1]
    expected = rotated(dataset.read(1)["coord"], 5, 2, 1)
    assert np.array_equal(first["coord"], expected) and np.array_equal(again["coord"], expected)
    assert np.array_equal(first["feat"], again["feat"])
    assert sorted(first) == ["coord", "feat", "intensity", "name"] and first["name"] == "b"
    dataset.epoch = 3
    assert np.array_equal(dataset[1]["coord"], rotated(dataset.read(1)["coord"], 5, 3, 1))
    assert not np.array_equal(dataset[1]["coord"], first["coord"])
    dataset.seed, dataset.epoch = 6, 2
    assert not np.array_equal(dataset[1]["coord"], first["coord"])


def test_feat_is_derived_after_the_transforms():
    dataset = Toy(features=["height", "intensity", "range"], transforms=ROTATE)
    sample = dataset[0]
    assert sample["feat"].dtype == np.float32 and sample["feat"].shape == (3, 3)
    assert np.array_equal(sample["feat"][:, 0], sample["coord"][:, 2])
    assert np.array_equal(sample["feat"][:, 1], [0.5, 0.25, 1.0])
    assert np.array_equal(sample["feat"][:, 2], np.linalg.norm(sample["coord"], axis=1))


def test_in_channels_follow_the_feature_table():
    assert Toy(features=["intensity"]).in_channels == 1
    assert Toy(features=["range", "intensity", "height"]).in_channels == 3
    assert feature_channels(["color"]) == 3 and feature_channels(["color", "height"]) == 4
    assert len(Toy()) == 2 and Toy().name(1) == "b"


def test_one_feature_table_serves_both_families():
    assert SemanticKITTI.offered_features == ISCCPairs.offered_features == LIDAR_FEATURES == ("intensity", "height",
                                                                                              "range")
    assert S3DIS.offered_features == ScanNet.offered_features == INDOOR_FEATURES == ("color", "height")
    sample = {"coord": np.array([[3, 0, 4], [0, 0, -2]], dtype=np.float32),
              "intensity": np.array([[0.75], [0.0]], dtype=np.float32),
              "color": np.array([[1.0, 0.5, 0.0], [0.25, 0.0, 1.0]], dtype=np.float32)}
    assert np.array_equal(point_features(sample, ["intensity", "height", "range"]),
                          np.array([[0.75, 4, 5], [0, -2, 2]], dtype=np.float32))
    assert np.array_equal(point_features(sample, ["color", "height"]),
                          np.array([[1.0, 0.5, 0.0, 4], [0.25, 0.0, 1.0, -2]], dtype=np.float32))


def test_an_unknown_feature_names_the_dataset_and_its_features():
    with pytest.raises(ConfigError) as info:
        SemanticKITTI("/nowhere", str(SYNTHETIC_LABELS), sequences=[0], features=["color"])
    assert str(info.value) == ("SemanticKITTI: unknown point feature(s) ['color']; "
                               "choose from ['height', 'intensity', 'range']")
    with pytest.raises(ConfigError) as info:
        ScanNet("/nowhere", SCANNET_LABELS, scenes=["scene0000_00"], features=["color", "range", "intensity"])
    assert str(info.value) == ("ScanNet: unknown point feature(s) ['range', 'intensity']; "
                               "choose from ['color', 'height']")
    with pytest.raises(ConfigError) as info:
        Toy(features=[])
    assert str(info.value) == "Toy: features is empty; choose from ['height', 'intensity', 'range']"


def test_labels_need_a_label_config():
    with pytest.raises(ConfigError) as info:
        Toy(labels=True)
    assert str(info.value) == "Toy: labels: true needs a label_config"
    assert Toy().label_config is None
    assert Toy(label_config=str(SYNTHETIC_LABELS), labels=True).label_config.path == str(SYNTHETIC_LABELS)


def test_a_scan_sample_is_the_one_scan_read(tiny_dataset):
    dataset = SemanticKITTI(str(tiny_dataset), str(SYNTHETIC_LABELS), sequences=[1], features=["intensity"])
    sample = dataset[2]
    points = sk.read_scan(sk.scan_path(tiny_dataset, "01", "000002"))
    semantic, instance = sk.read_label(sk.label_path(tiny_dataset, "01", "000002"), len(points))
    read = sk.read_scan_sample(tiny_dataset, "01", "000002", dataset.label_config)
    assert sorted(read) == ["coord", "instance", "intensity", "point_index", "segment"]
    assert np.array_equal(read["coord"], points[:, :3]) and read["coord"].dtype == np.float32
    assert np.array_equal(read["intensity"], points[:, 3:4]) and read["intensity"].dtype == np.float32
    assert np.array_equal(read["point_index"], np.arange(len(points)))
    assert np.array_equal(read["segment"], dataset.label_config.raw_to_train(semantic))
    assert np.array_equal(read["instance"], dataset.label_config.dense_instances(semantic, instance))
    assert sorted(sample) == sorted([*read, "name", "feat"]) and sample["name"] == "01/000002"
    assert all(np.array_equal(sample[k], v) and sample[k].dtype == v.dtype for k, v in read.items())
    assert sorted(sk.read_scan_sample(tiny_dataset, "01", "000002")) == ["coord", "intensity", "point_index"]
