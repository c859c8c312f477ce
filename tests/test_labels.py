"""Label config: raw -> learn -> train ids and back, on SemanticKITTI's own mapping."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import KITTI_LABELS, SYNTHETIC_LABELS
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
    (tmp_path / "l.yaml").write_text("labels: {0: a}\nlearning_map: {0: 0, 1: 3}\nlearning_map_inv: {0: 0, 1: 1}\nlearning_ignore: {0: true, 1: false}\n")
    with pytest.raises(ConfigError, match=r"l\.yaml: learning_map targets \[3\] have no learning_map_inv entry"):
        LabelConfig.load(tmp_path / "l.yaml")
    (tmp_path / "m.yaml").write_text("labels: {0: a}\n")
    with pytest.raises(ConfigError, match=r"m\.yaml: label config lacks"):
        LabelConfig.load(tmp_path / "m.yaml")
