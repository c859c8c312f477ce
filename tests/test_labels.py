"""Label config: raw -> learn -> train ids and back, on SemanticKITTI's own mapping."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import KITTI_LABELS, SYNTHETIC_LABELS
from voxseg.data.labels import LabelConfig
from voxseg.errors import ConfigError


def test_semantic_kitti_mapping():
    labels = LabelConfig.load(KITTI_LABELS)
    assert labels.num_learn_classes == 20 and labels.num_classes == 19 and labels.ignored == [0]
    raw = np.array([0, 1, 10, 252, 40, 60, 52, 81, 254, 999, (5 << 16) | 10])
    #              unlab outl car mv-car road lane other sign mv-person unknown car+instance
    assert labels.raw_to_learn(raw).tolist() == [0, 0, 1, 1, 9, 9, 0, 19, 6, 0, 1]
    assert labels.raw_to_train(raw).tolist() == [-1, -1, 0, 0, 8, 8, -1, 18, 5, -1, 0]
    assert labels.train_to_raw(np.array([0, 8, 18])).tolist() == [10, 40, 81]
    assert labels.class_names[:3] == ["car", "bicycle", "motorcycle"]


def test_synthetic_mapping_keeps_its_twelve_classes():
    labels = LabelConfig.load(SYNTHETIC_LABELS)
    assert labels.num_classes == 12
    assert labels.class_names == ["car", "person", "road", "parking", "sidewalk", "building", "fence",
                                  "vegetation", "trunk", "terrain", "pole", "traffic-sign"]
    assert labels.raw_to_train(np.array([252, 254, 60, 18])).tolist() == [0, 1, 2, -1]


def test_bad_label_config(tmp_path):
    (tmp_path / "l.yaml").write_text("labels: {0: a}\nlearning_map: {0: 0, 1: 3}\nlearning_map_inv: {0: 0, 1: 1}\n"
                                     "learning_ignore: {0: true, 1: false}\n")
    with pytest.raises(ConfigError, match=r"l\.yaml: learning_map targets \[3\] have no learning_map_inv entry"):
        LabelConfig.load(tmp_path / "l.yaml")
    (tmp_path / "m.yaml").write_text("labels: {0: a}\n")
    with pytest.raises(ConfigError, match=r"m\.yaml: label config lacks"):
        LabelConfig.load(tmp_path / "m.yaml")


def test_thing_and_stuff_classes():
    kitti = LabelConfig.load(KITTI_LABELS)
    assert kitti.thing_train_ids == [0, 1, 2, 3, 4, 5, 6, 7]  # car ... motorcyclist
    assert kitti.stuff_train_ids == list(range(8, 19))
    synthetic = LabelConfig.load(SYNTHETIC_LABELS)
    assert synthetic.thing_train_ids == [0, 1]  # car, person
    assert synthetic.stuff_train_ids == list(range(2, 12))


MINIMAL = "labels: {0: unlabeled, 10: car, 40: road}\nlearning_map: {0: 0, 10: 1, 40: 2}\n" \
          "learning_map_inv: {0: 0, 1: 10, 2: 40}\nlearning_ignore: {0: true, 1: false, 2: false}\n"


def test_thing_classes_are_checked(tmp_path):
    (tmp_path / "old.yaml").write_text(MINIMAL)
    old = LabelConfig.load(tmp_path / "old.yaml")  # no thing_classes: none
    assert old.thing_train_ids == [] and old.stuff_train_ids == [0, 1]
    (tmp_path / "t.yaml").write_text(MINIMAL + "thing_classes: [road]\n")
    assert LabelConfig.load(tmp_path / "t.yaml").thing_train_ids == [1]
    (tmp_path / "u.yaml").write_text(MINIMAL + "thing_classes: [car, lorry]\n")
    with pytest.raises(ConfigError, match=r"u\.yaml: thing_classes \['lorry'\] are not learn classes"):
        LabelConfig.load(tmp_path / "u.yaml")
    (tmp_path / "i.yaml").write_text(MINIMAL + "thing_classes: [unlabeled]\n")
    with pytest.raises(ConfigError, match=r"i\.yaml: thing_classes \['unlabeled'\] are ignored classes"):
        LabelConfig.load(tmp_path / "i.yaml")
    (tmp_path / "s.yaml").write_text(MINIMAL + "thing_classes: car\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: thing_classes must be a list of class names"):
        LabelConfig.load(tmp_path / "s.yaml")


def test_dense_instances():
    labels = LabelConfig.load(KITTI_LABELS)
    semantic = np.array([10, 252, 30, 30, 40, 11, 10])
    instance = np.array([3, 3, 3, 9, 0, 3, 0])
    # (learn class, id): car 3 (1, 3) -> 0, bicycle 3 (2, 3) -> 1, person 3 (6, 3) -> 2, person 9 (6, 9) -> 3
    assert np.array_equal(labels.dense_instances(semantic, instance), [0, 0, 2, 3, -1, 1, -1])
    assert np.array_equal(labels.dense_instances(semantic, np.zeros(7, int)), np.full(7, -1))
