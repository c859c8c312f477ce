"""Semantic metrics against values computed by hand, and the evaluate tool end to end.

Fixture (label config: learn 0 = unlabeled (ignored), 1 = a (raw 10), 2 = b (raw 20),
3 = c (raw 30), 4 = d (raw 40, never present); raw 1 (outlier) maps to unlabeled):

  scan 1  gt   10 10 20 20 30  0  0  1      learn  1 1 2 2 3 0 0 0
          pred 10 20 20 20 10 10 30 20             1 2 2 2 1 1 3 2
  scan 2  gt   30 30 10                            3 3 1
          pred 30  0 10                            3 0 1

The three points whose ground truth is unlabeled do not count. The rest, as (pred, gt):
(1,1) x2, (2,1), (2,2) x2, (1,3), (3,3), (0,3). Hence
  a: TP 2, FP 1 (the c point called a), FN 1 (the a point called b)  -> IoU 2/4 = 0.5
  b: TP 2, FP 1, FN 0                                                 -> IoU 2/3
  c: TP 1, FP 0, FN 2 (one called a, one called unlabeled)            -> IoU 1/3
  d: absent                                                           -> IoU 0, still averaged
  mIoU = (1/2 + 2/3 + 1/3 + 0) / 4 = 0.375
  accuracy = sum TP / (TP + FP over a..d) = 5 / 7 (semantic-kitti-api's getacc: the point
  predicted as unlabeled is in no evaluated class's TP or FP).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT
from voxseg.data import semantic_kitti as sk
from voxseg.data.labels import LabelConfig
from voxseg.errors import DataFormatError
from voxseg.evaluation import ConfusionMatrix, SemanticEvaluator, evaluate_arrays, evaluate_directories

LABEL_YAML = """
labels: {0: unlabeled, 1: outlier, 10: a, 20: b, 30: c, 40: d}
learning_map: {0: 0, 1: 0, 10: 1, 20: 2, 30: 3, 40: 4}
learning_map_inv: {0: 0, 1: 10, 2: 20, 3: 30, 4: 40}
learning_ignore: {0: true, 1: false, 2: false, 3: false, 4: false}
"""
GT = [np.array([10, 10, 20, 20, 30, 0, 0, 1]), np.array([30, 30, 10])]
PRED = [np.array([10, 20, 20, 20, 10, 10, 30, 20]), np.array([30, 0, 10])]


@pytest.fixture
def labels(tmp_path) -> LabelConfig:
    (tmp_path / "labels.yaml").write_text(LABEL_YAML)
    return LabelConfig.load(tmp_path / "labels.yaml")


def test_hand_computed_metrics(labels):
    result = evaluate_arrays(PRED, GT, labels)
    assert result["iou_per_class"] == pytest.approx({"a": 0.5, "b": 2 / 3, "c": 1 / 3, "d": 0.0})
    assert result["miou"] == pytest.approx(0.375)
    assert result["accuracy"] == pytest.approx(5 / 7)
    assert result["absent_classes"] == ["d"]
    assert result["points_per_class"] == {"a": 3, "b": 2, "c": 3, "d": 0}
    assert result["num_points"] == 8
    # bit for bit as evaluate_semantics.py (np_ioueval): every union and total padded by 1e-15,
    # which shows in the last bits at such small counts
    assert result["iou_per_class"]["c"] == 1 / (3 + 1e-15) != 1 / 3
    assert result["accuracy"] == 5 / (7 + 1e-15) != 5 / 7


def test_confusion_matrix_layout():
    confusion = ConfusionMatrix(3, ignore=[0])
    confusion.update(np.array([2, 2, 1]), np.array([1, 2, 0]))
    assert confusion.matrix.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 1]]  # rows: prediction, cols: truth
    tp, fp, fn = confusion.stats()
    assert tp.tolist() == [0, 0, 1] and fp.tolist() == [0, 0, 1] and fn.tolist() == [0, 1, 0]


def test_train_id_path_matches_raw_path(labels):
    evaluator = SemanticEvaluator(labels)
    for pred, gt in zip(PRED, GT, strict=True):
        gt_train = labels.raw_to_train(gt)
        pred_train = labels.raw_to_train(pred)
        keep = pred_train >= 0  # the train path cannot predict "unlabeled": score the rest only
        evaluator.add_train(pred_train[keep], gt_train[keep])
    # without the point predicted as unlabeled, c has TP 1, FP 0, FN 1 -> 1/2
    assert evaluator.result()["iou_per_class"]["c"] == pytest.approx(0.5)
    assert evaluator.result()["iou_per_class"]["a"] == pytest.approx(0.5)


def write_fixture(tmp_path):
    for i, (gt, pred) in enumerate(zip(GT, PRED, strict=True)):
        sk.write_label(tmp_path / "gt" / f"{i:06d}.label", gt, np.full(len(gt), 3))  # instance bits ignored
        sk.write_label(tmp_path / "pred" / f"{i:06d}.label", pred)


def test_directories_and_cli(tmp_path, labels):
    write_fixture(tmp_path)
    result = evaluate_directories(tmp_path / "gt", tmp_path / "pred", labels)
    assert result["miou"] == pytest.approx(0.375) and result["num_scans"] == 2
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "evaluate.py"), "--gt-labels", str(tmp_path / "gt"),
         "--pred-labels", str(tmp_path / "pred"), "--label-config", labels.path, "--out", str(tmp_path / "m.json")],
        capture_output=True, text=True, check=True,
    )
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["miou"] == pytest.approx(0.375) and saved["accuracy"] == pytest.approx(5 / 7)
    assert "mIoU" in done.stdout and "37.5%" in done.stdout and "66.7%" in done.stdout


def test_cli_errors_are_one_line(tmp_path, labels):
    write_fixture(tmp_path)
    (tmp_path / "pred" / "000001.label").unlink()
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "evaluate.py"), "--gt-labels", str(tmp_path / "gt"),
         "--pred-labels", str(tmp_path / "pred"), "--label-config", labels.path, "--out", str(tmp_path / "m.json")],
        capture_output=True, text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "pred: no prediction for 1 ground-truth scan(s), first 000001.label" in done.stderr
    assert not (tmp_path / "m.json").exists()
    sk.write_label(tmp_path / "pred" / "000001.label", np.array([30, 0]))
    with pytest.raises(Exception, match=r"000001\.label: 2 predictions for the 3 points"):
        evaluate_directories(tmp_path / "gt", tmp_path / "pred", labels)


def run_evaluate(tmp_path, label_config, out) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "evaluate.py"), "--gt-labels", str(tmp_path / "gt"),
         "--pred-labels", str(tmp_path / "pred"), "--label-config", str(label_config), "--out", str(out)],
        capture_output=True, text=True,
    )


def test_unknown_class_ids_are_refused(tmp_path, labels):
    write_fixture(tmp_path)
    out = tmp_path / "m.json"
    out.write_bytes(b'{"miou": 0.5}\n')
    sk.write_label(tmp_path / "pred" / "000001.label", np.array([999, 30, 10]))  # a corrupt id
    done = run_evaluate(tmp_path, labels.path, out)
    assert done.returncode == 2
    bad = tmp_path / "pred" / "000001.label"
    assert done.stderr.strip() == f"error: {bad}: class id 999 (1 point) is not in {labels.path}"
    assert out.read_bytes() == b'{"miou": 0.5}\n'
    sk.write_label(tmp_path / "gt" / "000000.label", np.array([10, 10, 20, 20, 30, 999, 999, 5]))
    with pytest.raises(DataFormatError, match=r"gt/000000\.label: class ids 5 \(1 point\), 999 \(2 points\) are not "):
        evaluate_directories(tmp_path / "gt", tmp_path / "pred", labels)
    with pytest.raises(DataFormatError, match=r"^ground truth \[1\]: class id 7 \(3 points\) is not in "):
        evaluate_arrays(PRED, [GT[0], np.array([7, 7, 7])], labels)


def test_labels_of_another_dataset_are_refused(tmp_path):
    """SemanticKITTI labels scored with S3DIS's label config: raw 40 (road) and 70 (vegetation)
    are no S3DIS ids (0..14 are: car, 10, would read as sofa and outlier, 1, as ceiling, so
    without the check 5 of the 9 points would be scored, at 100% accuracy)."""
    kitti = np.array([10, 10, 10, 40, 40, 40, 70, 1, 1])
    for folder in ("gt", "pred"):
        sk.write_label(tmp_path / folder / "000000.label", kitti)
    s3dis = ROOT / "configs" / "labels" / "s3dis.yaml"
    done = run_evaluate(tmp_path, s3dis, tmp_path / "m.json")
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {tmp_path / 'gt' / '000000.label'}: class ids 40 (3 points), 70 (1 point) "
                                   f"are not in {s3dis}")
    assert not (tmp_path / "m.json").exists()
