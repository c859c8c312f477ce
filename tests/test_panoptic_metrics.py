"""Panoptic quality against values computed by hand, the PanopticEvaluator from train ids and
from .label arrays, the scores side file, and tools/evaluate.py --task panoptic / instance.

Learn ids: 0 unlabeled (ignored), 1 car, 2 person (things), 3 road, 4 building (stuff). Scenes are
blocks of points (count, predicted class, predicted instance, gt class, gt instance).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from voxseg.data import semantic_kitti as sk
from voxseg.data.labels import LabelConfig
from voxseg.errors import DataFormatError
from voxseg.evaluation import PanopticEvaluator, PanopticQuality, evaluate_panoptic_arrays, evaluate_panoptic_directories
from voxseg.registry import EVALUATORS

UNLABELED, CAR, PERSON, ROAD, BUILDING = 0, 1, 2, 3, 4
LABEL_YAML = """
labels: {0: unlabeled, 10: car, 20: person, 30: road, 40: building}
learning_map: {0: 0, 10: 1, 20: 2, 30: 3, 40: 4}
learning_map_inv: {0: 0, 1: 10, 2: 20, 3: 30, 4: 40}
learning_ignore: {0: true, 1: false, 2: false, 3: false, 4: false}
thing_classes: [car, person]
"""


def scene(*blocks) -> list[np.ndarray]:
    """One per-point array per block field after the count."""
    counts = [b[0] for b in blocks]
    return [np.repeat([b[i] for b in blocks], counts) for i in range(1, len(blocks[0]))]


@pytest.fixture
def labels(tmp_path) -> LabelConfig:
    (tmp_path / "labels.yaml").write_text(LABEL_YAML)
    return LabelConfig.load(tmp_path / "labels.yaml")


def test_hand_computed_panoptic_quality():
    metric = PanopticQuality(5, ignore=[UNLABELED], things=[CAR, PERSON])  # min_points 50
    metric.add(*scene(
        # road (100 points): predicted road under instance ids 3 and 5 -- stuff is one segment per
        # scan whatever its ids -- plus 20 road points predicted building
        (50, ROAD, 3, ROAD, 0), (30, ROAD, 5, ROAD, 0), (20, BUILDING, 0, ROAD, 0),
        # building (60 points): 20 predicted road, 40 building
        (20, ROAD, 5, BUILDING, 0), (40, BUILDING, 2, BUILDING, 0),
        # car 1 (60 points): 54 in predicted car 7, 6 in predicted car 8 (6 < 50 points, unmatched:
        # not a FP); 70 points of ignored ground truth also predicted car 7 are removed first
        (54, CAR, 7, CAR, 1), (6, CAR, 8, CAR, 1), (70, CAR, 7, UNLABELED, 0),
        (30, UNLABELED, 0, CAR, 2),  # car 2: 30 < 50 points, missed: not a FN
        (50, PERSON, 6, CAR, 3),  # car 3: 50 points, missed (FN); predicted person 6 (FP)
        (55, PERSON, 4, PERSON, 1),  # person 1 found exactly
    ))
    result = metric.result()
    # road: one predicted segment of 100 points, 80 shared with the 100 gt points: IoU 80/120
    # building: 60 predicted, 60 gt, 40 shared: IoU 40/80 = 0.5, not > 0.5: one FP, one FN
    # car: TP car 1 (IoU 54/60), FN car 3; person: TP (IoU 1), FP predicted person 6
    sq = {CAR: 54 / 60, PERSON: 1.0, ROAD: 80 / 120, BUILDING: 0.0}
    rq = {CAR: 1 / (1 + 0.5 * 1), PERSON: 1 / (1 + 0.5 * 1), ROAD: 1.0, BUILDING: 0 / (0 + 0.5 + 0.5)}
    pq = {c: sq[c] * rq[c] for c in sq}
    for c in sq:
        assert result["per_class"][c]["sq"] == pytest.approx(sq[c])
        assert result["per_class"][c]["rq"] == pytest.approx(rq[c])
        assert result["per_class"][c]["pq"] == pytest.approx(pq[c])
    assert result["pq"] == pytest.approx(sum(pq.values()) / 4)
    assert result["sq"] == pytest.approx(sum(sq.values()) / 4)
    assert result["rq"] == pytest.approx(sum(rq.values()) / 4)
    assert result["pq_things"] == pytest.approx((pq[CAR] + pq[PERSON]) / 2)
    assert result["pq_stuff"] == pytest.approx((pq[ROAD] + pq[BUILDING]) / 2)
    # PQ-dagger: stuff classes by semantic IoU -- road TP 80, FP 20, FN 20; building TP 40, FP 20, FN 20
    assert result["pq_dagger"] == pytest.approx((pq[CAR] + pq[PERSON] + 80 / 120 + 40 / 80) / 4)


def test_reference_example_of_semantic_kitti_api():
    """eval_np.py's own example (He et al.'s panoptic figure): classes ignore, grass, sky, person,
    dog; min_points 1. The api prints PQ 0.47916666666666663, SQ 0.5520833333333333, RQ 2/3.
    By hand: grass 50 gt, 40 + 10 (sky's) predicted: IoU 40/60 (sky the same); person gt 33 (150
    points), 42 (50), 11 (100) against predicted 8 (200 = 33 + 42) and 95 (100 = 11): 8~33 IoU
    150/200, 95~11 IoU 1, 42 missed; predicted person 35 (the dog) is a FP and the dog a FN.
    person SQ (0.75 + 1) / 2, RQ 2 / (2 + 1/2 + 1/2); dog 0."""
    grass, sky, person, dog = 1, 2, 3, 4
    metric = PanopticQuality(5, ignore=[0], things=[person, dog], min_points=1)
    metric.add(*scene(
        (50, 0, 0, 0, 0),
        (40, grass, 0, grass, 0), (10, sky, 0, grass, 0),
        (40, sky, 0, sky, 0), (10, grass, 0, sky, 0),
        (50, person, 35, dog, 22),
        (150, person, 8, person, 33), (50, person, 8, person, 42), (100, person, 95, person, 11),
    ))
    result = metric.result()
    person_sq, person_rq = (0.75 + 1) / 2, 2 / 3
    assert result["pq"] == pytest.approx((2 / 3 + 2 / 3 + person_sq * person_rq + 0) / 4)
    assert result["pq"] == pytest.approx(0.47916666666666663)
    assert result["sq"] == pytest.approx((2 / 3 + 2 / 3 + person_sq + 0) / 4)
    assert result["rq"] == pytest.approx((1 + 1 + person_rq + 0) / 4)


# -------------------------------------------------------------------------------- evaluator
# Train ids: 0 car, 1 person, 2 road, 3 building. Blocks: (count, predicted train id, predicted
# instance (-1 none), its score, gt train id (-1 ignored), gt instance (-1 none)).
T_CAR, T_PERSON, T_ROAD, T_BUILDING = 0, 1, 2, 3
SCAN = [
    (20, T_ROAD, -1, 0.0, T_ROAD, -1),
    (10, T_BUILDING, -1, 0.0, T_BUILDING, -1),
    (10, T_CAR, 0, 0.8, T_CAR, 0),  # a car found exactly
    (8, T_PERSON, 1, 0.6, T_PERSON, 1),  # 8 of a person's 12 points: IoU 8/12
    (4, T_ROAD, -1, 0.0, T_PERSON, 1),
    (5, T_BUILDING, -1, 0.0, -1, -1),  # ignored ground truth
]
OPTIONS = {"min_points": 5, "min_region_size": 5}
# PQ: car 1, person 8/12, road 20/24 (24 points predicted road), building 1 (ignored points
# removed); all RQ 1. Semantic IoU the same values.
EXPECTED = {
    "pq": (1 + 8 / 12 + 20 / 24 + 1) / 4, "sq": (1 + 8 / 12 + 20 / 24 + 1) / 4, "rq": 1.0,
    "pq_things": (1 + 8 / 12) / 2, "pq_stuff": (20 / 24 + 1) / 2, "pq_dagger": (1 + 8 / 12 + 20 / 24 + 1) / 4,
    "miou": (1 + 8 / 12 + 20 / 24 + 1) / 4,
    # AP: car 1 at every threshold; person (IoU 0.667) 1 at 0.5 .. 0.65, 0 at 0.7 .. 0.9 (missed,
    # and its prediction a FP)
    "ap": (1 + 4 / 9) / 2, "ap50": 1.0, "ap25": 1.0,
    "mcov": (1 + 8 / 12) / 2, "mwcov": (1 + 8 / 12) / 2, "mprec": 1.0, "mrec": 1.0,
}


def train_inputs() -> tuple[dict, dict]:
    seg, inst, score, gt_seg, gt_inst = scene(*SCAN)
    return {"segment": seg, "instance": inst, "instance_score": score}, {"segment": gt_seg, "instance": gt_inst}


def raw_inputs(labels: LabelConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """The scan as .label arrays: raw classes, instance ids + 1 in the upper bits (0 = none)."""
    pred, sample = train_inputs()
    gt_raw = np.where(sample["segment"] >= 0, labels.train_to_raw(np.maximum(sample["segment"], 0)), 0)
    pred_label = (pred["instance"] + 1) << 16 | labels.train_to_raw(pred["segment"])
    gt_label = (sample["instance"] + 1) << 16 | gt_raw
    return pred_label.astype(np.uint32), gt_label.astype(np.uint32), {1: 0.8, 2: 0.6}


def test_evaluator_from_train_ids_and_from_labels(labels):
    evaluator = EVALUATORS.build({"type": "PanopticEvaluator", **OPTIONS}, labels=labels)
    evaluator.add(*train_inputs())
    result = evaluator.result()
    assert {k: result[k] for k in PanopticEvaluator.METRICS} == pytest.approx(EXPECTED)
    assert result["pq_per_class"] == pytest.approx({"car": 1.0, "person": 8 / 12, "road": 20 / 24, "building": 1.0})
    assert result["ap_per_class"] == pytest.approx({"car": 1.0, "person": 4 / 9})
    assert "PQ-dagger" in evaluator.summary(result) and "AP50" in evaluator.summary(result)

    pred_label, gt_label, scores = raw_inputs(labels)
    from_labels = evaluate_panoptic_arrays([pred_label], [gt_label], labels, [scores], **OPTIONS)
    assert {k: from_labels[k] for k in PanopticEvaluator.METRICS} == pytest.approx(EXPECTED)
    without_scores = evaluate_panoptic_arrays([pred_label], [gt_label], labels, **OPTIONS)
    assert math.isnan(without_scores["ap"]) and without_scores["pq"] == pytest.approx(EXPECTED["pq"])


def test_scores_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "scores" / "000000.txt"
    sk.write_instance_scores(path, {7: 0.25, 2: 0.9})
    assert path.read_text() == "2 0.9\n7 0.25\n"
    assert sk.read_instance_scores(path) == {2: 0.9, 7: 0.25}
    path.write_text("2 0.9\n7 high\n")
    with pytest.raises(DataFormatError, match=r"000000\.txt: line 2: expected 'instance_id score'"):
        sk.read_instance_scores(path)
    with pytest.raises(DataFormatError, match=r"missing\.txt: instance scores file not found"):
        sk.read_instance_scores(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="1..65535"):
        sk.write_instance_scores(path, {0: 0.5})


def write_files(tmp_path, labels: LabelConfig):
    pred_label, gt_label, scores = raw_inputs(labels)
    gt_dir = tmp_path / "data" / "sequences" / "08" / "labels"
    pred_dir = tmp_path / "out" / "sequences" / "08" / "predictions"
    for directory, label in ((gt_dir, gt_label), (pred_dir, pred_label)):
        sk.write_label(directory / "000000.label", label & 0xFFFF, label >> 16)
    sk.write_instance_scores(tmp_path / "out" / "sequences" / "08" / "scores" / "000000.txt", scores)
    return gt_dir, pred_dir


def run_tool(gt_dir, pred_dir, labels, out, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "evaluate.py"), "--gt-labels", str(gt_dir), "--pred-labels", str(pred_dir),
         "--label-config", labels.path, "--out", str(out), "--min-points", "5", "--min-region-size", "5", *extra],
        capture_output=True, text=True,
    )


def test_cli_panoptic_and_instance(tmp_path, labels):
    gt_dir, pred_dir = write_files(tmp_path, labels)
    done = run_tool(gt_dir, pred_dir, labels, tmp_path / "pq.json", "--task", "panoptic")
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "pq.json").read_text())
    assert saved["pq"] == pytest.approx(EXPECTED["pq"]) and saved["num_scans"] == 1
    assert "PQ-dagger" in done.stdout and f"{100 * EXPECTED['pq']:.1f}%" in done.stdout

    done = run_tool(gt_dir, pred_dir, labels, tmp_path / "ap.json", "--task", "instance")  # scores beside predictions
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "ap.json").read_text())
    assert {k: saved[k] for k in ("ap", "ap50", "mcov", "mprec")} == pytest.approx(
        {k: EXPECTED[k] for k in ("ap", "ap50", "mcov", "mprec")})
    assert "AP50" in done.stdout and f"{100 * EXPECTED['ap']:.1f}%" in done.stdout

    scores_dir = tmp_path / "out" / "sequences" / "08" / "scores"
    (scores_dir / "000000.txt").rename(tmp_path / "elsewhere.txt")
    scores_dir.rmdir()
    done = run_tool(gt_dir, pred_dir, labels, tmp_path / "none.json", "--task", "instance")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert f"{scores_dir}: scores directory not found" in done.stderr
    assert not (tmp_path / "none.json").exists()


def test_directory_errors(tmp_path, labels):
    gt_dir, pred_dir = write_files(tmp_path, labels)
    scores_dir = pred_dir.parent / "scores"
    sk.write_instance_scores(scores_dir / "000000.txt", {1: 0.8})  # instance 2 has no score
    with pytest.raises(DataFormatError, match=r"000000\.txt: no score for instance\(s\) \[2\] of .*000000\.label"):
        evaluate_panoptic_directories(gt_dir, pred_dir, labels, scores_dir)
    (scores_dir / "000000.txt").unlink()
    with pytest.raises(DataFormatError, match=r"scores/000000\.txt: instance scores file not found"):
        evaluate_panoptic_directories(gt_dir, pred_dir, labels, scores_dir)
    sk.write_label(pred_dir / "000000.label", np.array([10, 10]))
    with pytest.raises(DataFormatError, match=r"000000\.label: 2 predictions for the 57 points of"):
        evaluate_panoptic_directories(gt_dir, pred_dir, labels)
    (pred_dir / "000000.label").unlink()
    with pytest.raises(DataFormatError, match=r"predictions: no prediction for 1 ground-truth scan\(s\), first 000000"):
        evaluate_panoptic_directories(gt_dir, pred_dir, labels)
