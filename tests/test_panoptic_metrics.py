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
from collections import Counter

import numpy as np
import pytest

from tests.helpers import ROOT
from voxseg.data import semantic_kitti as sk
from voxseg.data.labels import LabelConfig
from voxseg.errors import DataFormatError
from voxseg.evaluation import (
    PanopticEvaluator,
    PanopticQuality,
    evaluate_panoptic_arrays,
    evaluate_panoptic_directories,
)
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
        # road (100 gt points, no instance): 90 predicted road without instance, 10 building
        (90, ROAD, 0, ROAD, 0), (10, BUILDING, 0, ROAD, 0),
        # car 4 (60 points) predicted as road, its instance id 9 kept: a road segment of its own
        (60, ROAD, 9, CAR, 4),
        # building (60 gt points) under two ground-truth ids, 3 (40 points) and 0 (20 points)
        (40, BUILDING, 0, BUILDING, 3), (20, BUILDING, 0, BUILDING, 0),
        # car 1 (60 points): 54 in predicted car 7, 6 in predicted car 8 (6 < 50 points, unmatched:
        # not a FP); 70 points of ignored ground truth also predicted car 7 are removed first
        (54, CAR, 7, CAR, 1), (6, CAR, 8, CAR, 1), (70, CAR, 7, UNLABELED, 0),
        (30, UNLABELED, 0, CAR, 2),  # car 2: 30 < 50 points, predicted as the ignored class: not a FN
        (50, PERSON, 6, CAR, 3),  # car 3: 50 points, missed (FN); predicted person 6 (FP)
        (55, PERSON, 4, PERSON, 1),  # person 1 found exactly
    ))
    result = metric.result()
    # road: predicted road/0 (90 points) matches gt road/0 (100): IoU 90/100; predicted road/9
    # (60 points, the car) matches nothing: a FP. (Zeroing stuff ids would make one predicted
    # road of 150 points, IoU 90/160 and no FP.)
    # building: predicted building/0 (10 + 40 + 20 = 70 points) against gt building/3 (40 shared):
    # IoU 40/70 > 0.5, TP; gt building/0 (20 < 50 points) unmatched: not a FN
    # car: TP car 1 (IoU 54/60), FN car 3 and car 4; person: TP (IoU 1), FP predicted person 6
    sq = {CAR: 54 / 60, PERSON: 1.0, ROAD: 90 / 100, BUILDING: 40 / 70}
    rq = {CAR: 1 / (1 + 0.5 * 2), PERSON: 1 / (1 + 0.5 * 1), ROAD: 1 / (1 + 0.5 * 1), BUILDING: 1.0}
    pq = {c: sq[c] * rq[c] for c in sq}
    for c in sq:
        assert result["per_class"][c]["sq"] == pytest.approx(sq[c], rel=1e-12)
        assert result["per_class"][c]["rq"] == pytest.approx(rq[c], rel=1e-12)
        assert result["per_class"][c]["pq"] == pytest.approx(pq[c], rel=1e-12)
    assert result["pq"] == pytest.approx(sum(pq.values()) / 4, rel=1e-12)
    assert result["sq"] == pytest.approx(sum(sq.values()) / 4, rel=1e-12)
    assert result["rq"] == pytest.approx(sum(rq.values()) / 4, rel=1e-12)
    assert result["pq_things"] == pytest.approx((pq[CAR] + pq[PERSON]) / 2, rel=1e-12)
    assert result["pq_stuff"] == pytest.approx((pq[ROAD] + pq[BUILDING]) / 2, rel=1e-12)
    # PQ-dagger: stuff classes by semantic IoU -- road TP 90, FP 60 (the car), FN 10; building
    # TP 60, FP 10, FN 0
    assert result["pq_dagger"] == pytest.approx((pq[CAR] + pq[PERSON] + 90 / 160 + 60 / 70) / 4, rel=1e-12)


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


# ------------------------------------------------------------- semantic-kitti-api's algorithm
class ApiPanopticEval:
    """Test oracle: semantic-kitti-api's PanopticEval (auxiliary/eval_np.py: addBatchSemIoU,
    addBatchPanoptic, getPQ, getSemIoU), ported point by point and class by class from reading it,
    with evaluate_panoptic.py's group means (over learn ids in order here).

    Per scan: the confusion matrix takes every point; instance ids are shifted by one; points of
    ignored ground truth are dropped; then for each evaluated class, the class's predicted points
    group by (shifted) instance id, so do its ground-truth points, whatever the class is (stuff
    ids are not zeroed); pairs count the points both predicted and labelled the class; IoU > 0.5
    is a TP (IoUs summed with np.sum in (gt id, predicted id) order, as the api's np.unique of the
    offset combination orders them); unmatched segments of >= min_points points are FN / FP."""

    def __init__(self, num_classes: int, ignore: list[int], things: list[int], min_points: int):
        self.include = [c for c in range(num_classes) if c not in ignore]
        self.ignore, self.min_points = ignore, min_points
        self.things = [c for c in self.include if c in things]
        self.stuff = [c for c in self.include if c not in things]
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.tp, self.fp, self.fn = (np.zeros(num_classes, dtype=np.int64) for _ in range(3))
        self.iou = np.zeros(num_classes, dtype=np.float64)

    def add(self, x_sem, x_inst, y_sem, y_inst) -> None:
        for x, y in zip(x_sem.tolist(), y_sem.tolist(), strict=True):
            self.confusion[x, y] += 1
        rows = zip(x_sem.tolist(), x_inst.tolist(), y_sem.tolist(), y_inst.tolist(), strict=True)
        points = [(xs, xi + 1, ys, yi + 1) for xs, xi, ys, yi in rows if ys not in self.ignore]
        for cl in self.include:
            pred_area, gt_area, both = Counter(), Counter(), Counter()
            for xs, xi, ys, yi in points:
                if xs == cl:
                    pred_area[xi] += 1
                if ys == cl:
                    gt_area[yi] += 1
                if xs == cl and ys == cl:
                    both[yi, xi] += 1
            matched_gt, matched_pred, ious = set(), set(), []
            for gt_id, pred_id in sorted(both):
                inter = both[gt_id, pred_id]
                iou = inter / (gt_area[gt_id] + pred_area[pred_id] - inter)
                if iou > 0.5:
                    matched_gt.add(gt_id)
                    matched_pred.add(pred_id)
                    ious.append(iou)
            self.tp[cl] += len(ious)
            self.iou[cl] += np.sum(np.array(ious, dtype=np.float64))
            self.fn[cl] += sum(1 for i, n in gt_area.items() if n >= self.min_points and i not in matched_gt)
            self.fp[cl] += sum(1 for i, n in pred_area.items() if n >= self.min_points and i not in matched_pred)

    def result(self) -> dict:
        eps = 1e-15
        sq = self.iou / np.maximum(self.tp.astype(np.float64), eps)
        rq = self.tp / np.maximum(self.tp + 0.5 * self.fp + 0.5 * self.fn, eps)
        pq = sq * rq
        conf = self.confusion.astype(np.float64)
        conf[:, self.ignore] = 0
        tp = conf.diagonal()
        iou = tp / np.maximum(tp + (conf.sum(axis=1) - tp) + (conf.sum(axis=0) - tp), eps)
        inc = self.include
        return {
            "pq": pq[inc].mean(), "sq": sq[inc].mean(), "rq": rq[inc].mean(), "miou": iou[inc].mean(),
            "pq_things": np.mean([pq[c] for c in self.things]), "pq_stuff": np.mean([pq[c] for c in self.stuff]),
            "pq_dagger": np.mean([pq[c] for c in self.things] + [iou[c] for c in self.stuff]),
            "per_class": {c: {"pq": pq[c], "sq": sq[c], "rq": rq[c], "iou": iou[c]} for c in inc},
        }


# learn ids for the randomized scans: two ignored classes, two things, two stuff
R_UNLABELED, R_CAR, R_PERSON, R_ROAD, R_BUILDING, R_OUTLIER = range(6)
R_IGNORE, R_THINGS, R_STUFF = [R_UNLABELED, R_OUTLIER], [R_CAR, R_PERSON], [R_ROAD, R_BUILDING]


def random_scan(rng: np.random.Generator) -> list[np.ndarray]:
    """sem_pred, inst_pred, sem_gt, inst_gt of blocks of 5..120 points (around min_points 50):
    ground truth of every class, stuff included, with ids 0..3; each block cut in up to three
    parts, predicted as the true class (half), a stuff class (thing points predicted as stuff),
    an ignored class or any class, each part keeping the true id or taking another of 0..4."""
    blocks = []
    for _ in range(rng.integers(8, 16)):
        gt_class, gt_inst, size = int(rng.integers(0, 6)), int(rng.choice([0, 0, 1, 2, 3])), int(rng.integers(5, 121))
        cuts = np.sort(rng.choice(np.arange(1, size), size=min(int(rng.integers(0, 3)), size - 1), replace=False))
        for part in np.diff(np.concatenate([[0], cuts, [size]])).tolist():
            pred_class = int(rng.choice([gt_class, gt_class, rng.choice(R_STUFF), rng.choice(R_IGNORE),
                                         rng.integers(0, 6)]))
            pred_inst = gt_inst if rng.random() < 0.5 else int(rng.integers(0, 5))
            blocks.append((part, pred_class, pred_inst, gt_class, gt_inst))
    return scene(*blocks)


def assert_same_as_api(result: dict, api: dict) -> None:
    """Every value of `api` equal, bit for bit, in `result`."""
    for key in ("pq", "sq", "rq", "miou", "pq_things", "pq_stuff", "pq_dagger"):
        assert result[key] == api[key], key
    assert result["per_class"] == api["per_class"]


@pytest.mark.parametrize("min_points", [50, 1])
def test_panoptic_quality_equals_the_api_on_random_scans(min_points):
    rng = np.random.default_rng(min_points)
    metric = PanopticQuality(6, ignore=R_IGNORE, things=R_THINGS, min_points=min_points)
    api = ApiPanopticEval(6, R_IGNORE, R_THINGS, min_points)
    zeroed = ApiPanopticEval(6, R_IGNORE, R_THINGS, min_points)  # the same scans, stuff ids set to 0
    for _ in range(12):
        sem_pred, inst_pred, sem_gt, inst_gt = random_scan(rng)
        metric.add(sem_pred, inst_pred, sem_gt, inst_gt)
        api.add(sem_pred, inst_pred, sem_gt, inst_gt)
        zeroed.add(sem_pred, np.where(np.isin(sem_pred, R_STUFF), 0, inst_pred),
                   sem_gt, np.where(np.isin(sem_gt, R_STUFF), 0, inst_gt))
    for counts in ("tp", "fp", "fn"):
        np.testing.assert_array_equal(getattr(metric, counts), getattr(api, counts))
        assert getattr(api, counts)[api.include].min() > 0  # every evaluated class has TP, FP and FN
    np.testing.assert_array_equal(metric.iou_sum, api.iou)
    assert_same_as_api(metric.result(), api.result())
    # the stuff ids matter on these scans: zeroing them scores stuff differently
    assert any(api.result()["per_class"][c] != zeroed.result()["per_class"][c] for c in R_STUFF)


def test_evaluate_tool_equals_the_api_on_random_label_files(tmp_path, labels):
    """tools/evaluate.py --task panoptic on .label files (raw ids, stuff ids kept in predictions
    and ground truth) against the oracle on the api's lookup of the same files."""
    rng = np.random.default_rng(3)
    api = ApiPanopticEval(5, [UNLABELED], [CAR, PERSON], 50)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for frame in range(4):
        sem_pred, inst_pred, sem_gt, inst_gt = random_scan(rng)
        to_raw = np.array([labels.learning_map_inv[c] for c in range(5)] + [0])  # R_OUTLIER: raw 0, unlabeled
        sk.write_label(gt_dir / f"{frame:06d}.label", to_raw[sem_gt], inst_gt)
        sk.write_label(pred_dir / f"{frame:06d}.label", to_raw[sem_pred], inst_pred)
        gt_label = np.fromfile(gt_dir / f"{frame:06d}.label", dtype=np.uint32)  # as evaluate_panoptic.py reads
        pred_label = np.fromfile(pred_dir / f"{frame:06d}.label", dtype=np.uint32)
        lut = np.zeros(max(labels.learning_map) + 100, dtype=np.int64)
        lut[list(labels.learning_map)] = list(labels.learning_map.values())
        api.add(lut[pred_label & 0xFFFF], (pred_label >> 16).astype(np.int64),
                lut[gt_label & 0xFFFF], (gt_label >> 16).astype(np.int64))
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "evaluate.py"), "--gt-labels", str(gt_dir), "--pred-labels",
         str(pred_dir), "--label-config", labels.path, "--out", str(tmp_path / "pq.json"), "--task", "panoptic"],
        capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    saved, expected = json.loads((tmp_path / "pq.json").read_text()), api.result()
    for key in ("pq", "sq", "rq", "miou", "pq_things", "pq_stuff", "pq_dagger"):
        assert saved[key] == expected[key], key
    for c, values in expected["per_class"].items():
        assert {k: saved[f"{k}_per_class"][labels.learn_name(c)] for k in values} == values


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
    full = {1: 0.1234567891234, 2: 0.1234567891234 - 3e-7, 3: 1 / 3, 4: float(np.float32(0.7)), 5: 5e-324}
    sk.write_instance_scores(path, full)  # every float at full precision: read back ==, not rounded
    assert path.read_text().splitlines()[:2] == ["1 0.1234567891234", "2 0.1234564891234"]
    assert sk.read_instance_scores(path) == full
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
        [sys.executable, str(ROOT / "tools" / "evaluate.py"), "--gt-labels", str(gt_dir),
         "--pred-labels", str(pred_dir), "--label-config", labels.path, "--out", str(out),
         "--min-points", "5", "--min-region-size", "5", *extra],
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


def test_cli_notes_semantic_only_predictions(tmp_path, labels):
    gt_dir, pred_dir = write_files(tmp_path, labels)
    done = run_tool(gt_dir, pred_dir, labels, tmp_path / "pq.json", "--task", "panoptic")
    assert done.returncode == 0 and done.stderr == ""  # predictions with instances: no note
    pred = np.fromfile(pred_dir / "000000.label", dtype=np.uint32)
    sk.write_label(pred_dir / "000000.label", pred & 0xFFFF)  # the same classes, no instance ids
    done = run_tool(gt_dir, pred_dir, labels, tmp_path / "pq.json", "--task", "panoptic")
    assert done.returncode == 0
    assert done.stderr == (f"note: {pred_dir}: no prediction file holds an instance id; things are scored as one "
                           "segment per class per scan\n")
    saved = json.loads((tmp_path / "pq.json").read_text())
    assert saved["pred_instances"] == 0
    # car: the one car segment (10 points) is still found; person: the 8 predicted person points are
    # one segment, IoU 8/12 as before -- each thing class is one segment per scan
    assert saved["pq_per_class"] == pytest.approx({"car": 1.0, "person": 8 / 12, "road": 20 / 24, "building": 1.0})


@pytest.mark.parametrize("task", ["panoptic", "instance"])
def test_cli_refuses_unknown_class_ids(tmp_path, labels, task):
    gt_dir, pred_dir = write_files(tmp_path, labels)
    out = tmp_path / "metrics.json"
    out.write_bytes(b'{"earlier": "run"}\n')
    pred = np.fromfile(pred_dir / "000000.label", dtype=np.uint32)
    sk.write_label(pred_dir / "000000.label", np.r_[[999] * 12, [7] * 3, pred[15:] & 0xFFFF], pred >> 16)
    done = run_tool(gt_dir, pred_dir, labels, out, "--task", task)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {pred_dir / '000000.label'}: class ids 7 (3 points), 999 (12 points) "
                                   f"are not in {labels.path}")
    assert out.read_bytes() == b'{"earlier": "run"}\n'
    gt = np.fromfile(gt_dir / "000000.label", dtype=np.uint32)
    sk.write_label(gt_dir / "000000.label", np.r_[[41], gt[1:] & 0xFFFF], gt >> 16)  # one corrupt id in the gt
    done = run_tool(gt_dir, pred_dir, labels, out, "--task", task)
    assert done.stderr.strip() == f"error: {gt_dir / '000000.label'}: class id 41 (1 point) is not in {labels.path}"
    assert out.read_bytes() == b'{"earlier": "run"}\n'


def test_arrays_refuse_unknown_class_ids(labels):
    pred_label, gt_label, scores = raw_inputs(labels)
    pred_label[:2] = 999
    with pytest.raises(DataFormatError, match=r"^prediction \[0\]: class id 999 \(2 points\) is not in .*\.yaml$"):
        evaluate_panoptic_arrays([pred_label], [gt_label], labels, [scores])


def test_ap_from_files_equals_ap_in_memory_for_near_tied_confidences(tmp_path, labels):
    """Two car predictions 3e-7 apart in confidence: the higher one is car A (TP), the lower one
    lies on person B (a FP for car). Ranked TP first, car AP is 1; rounded to 6 decimals both
    read 0.123456, a tie: one point P 1/2 R 1, AP 3/4."""
    car, person, road = (labels.learning_map_inv[c] for c in (CAR, PERSON, ROAD))
    pred_label = np.repeat(np.array([1 << 16 | car, 2 << 16 | car, road], dtype=np.uint32), [10, 10, 5])
    gt_label = np.repeat(np.array([1 << 16 | car, 1 << 16 | person, road], dtype=np.uint32), [10, 10, 5])
    scores = {1: 0.1234564891234, 2: 0.1234561891234}
    assert f"{scores[1]:.6f}" == f"{scores[2]:.6f}"
    gt_dir, pred_dir = tmp_path / "sequences" / "08" / "labels", tmp_path / "sequences" / "08" / "predictions"
    sk.write_label(gt_dir / "000000.label", gt_label & 0xFFFF, gt_label >> 16)
    sk.write_label(pred_dir / "000000.label", pred_label & 0xFFFF, pred_label >> 16)
    sk.write_instance_scores(pred_dir.parent / "scores" / "000000.txt", scores)
    assert sk.read_instance_scores(pred_dir.parent / "scores" / "000000.txt") == scores

    options = {"min_points": 5, "min_region_size": 5}
    from_files = evaluate_panoptic_directories(gt_dir, pred_dir, labels, pred_dir.parent / "scores", **options)
    in_memory = evaluate_panoptic_arrays([pred_label], [gt_label], labels, [scores], **options)
    assert from_files["ap_per_class"] == in_memory["ap_per_class"] == {"car": 1.0, "person": 0.0}
    rounded = {k: float(f"{v:.6f}") for k, v in scores.items()}
    tied = evaluate_panoptic_arrays([pred_label], [gt_label], labels, [rounded], **options)
    assert tied["ap_per_class"]["car"] == 0.75


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
