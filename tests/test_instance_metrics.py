"""ScanNet AP and ASIS coverage / precision / recall against values computed by hand.

Learn ids: 0 unlabeled (ignored), 1 car, 2 person (things), 3 road (stuff). Scenes are blocks of
points (count, predicted class, predicted instance (-1 none), gt class, gt instance (0 none)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from voxseg.evaluation import InstanceAP, InstanceCoverage
from voxseg.evaluation.instance import average_precision

UNLABELED, CAR, PERSON, ROAD = 0, 1, 2, 3
NUM, IGNORE, THINGS = 4, [0], [CAR, PERSON]


def scene(*blocks) -> list[np.ndarray]:
    """sem_pred, inst_pred, sem_gt, inst_gt from (count, sem_pred, inst_pred, sem_gt, inst_gt) blocks."""
    counts = [b[0] for b in blocks]
    return [np.repeat([b[i] for b in blocks], counts) for i in range(1, 5)]


def test_average_precision_curve():
    # ranked: 0.95 TP, 0.9 FP, 0.7 TP, no missed instance. Points by rising score threshold:
    # >=0.7: P 2/3 R 1; >=0.9: P 1/2 R 1/2; >=0.95: P 1 R 1/2; artificial: P 1 R 0.
    # Step widths (R_{k-1} - R_{k+1}) / 2 with R_{-1} = R_0: (1-.5)/2, (1-.5)/2, (.5-0)/2, (.5-0)/2
    assert average_precision([1, 0, 1], [0.95, 0.9, 0.7], 0) == pytest.approx((2 / 3 + 1 / 2 + 1 + 1) / 4)
    # one missed instance halves every recall: P 1/3 R 1/2, then P 0 R 0 twice, artificial P 1 R 0
    assert average_precision([0, 0, 1], [0.95, 0.9, 0.7], 1) == pytest.approx(1 / 3 * 0.5 / 2)
    assert average_precision([], [], 1) == 0.0


def test_ap_ranked_duplicate_and_threshold_average():
    sem_pred, inst_pred, sem_gt, inst_gt = scene(
        (8, CAR, 1, CAR, 1),  # prediction 1 (score 0.9): 8 of car A's 12 points, IoU 8/12
        (4, CAR, 2, CAR, 1),  # prediction 2 (score 0.95): A's other 4 points, IoU 4/12
        (5, CAR, 3, CAR, 2),  # prediction 3 (score 0.7) = car B, IoU 1
        (6, ROAD, -1, ROAD, 0),
    )
    metric = InstanceAP(NUM, IGNORE, THINGS, min_region_size=3)
    metric.add(sem_pred, inst_pred, {1: 0.9, 2: 0.95, 3: 0.7}, sem_gt, inst_gt)
    result = metric.result()
    # IoU > 0.25: A matches prediction 1 first, then prediction 2 is a duplicate: a false positive
    # with the lower confidence (0.9) while A keeps the higher (0.95). Ranked: 0.95 TP, 0.9 FP,
    # 0.7 TP -> AP (2/3 + 1/2 + 1 + 1) / 4 (see test_average_precision_curve)
    ap25 = (2 / 3 + 1 / 2 + 1 + 1) / 4
    # IoU > 0.5 .. 0.65: prediction 1 matches A; prediction 2 matches nothing and lies on no void:
    # FP at 0.95. Ranked 0.95 FP, 0.9 TP, 0.7 TP: points P 2/3 R 1, P 1/2 R 1/2, P 0 R 0, P 1 R 0;
    # widths (1-.5)/2, (1-0)/2, (.5-0)/2, 0 -> 2/3 * 1/4 + 1/2 * 1/2
    ap50 = 2 / 3 / 4 + 1 / 2 / 2
    # IoU > 0.7 .. 0.9 (8/12 < 0.7): A is missed, predictions 1 and 2 are FP: 0.95 FP, 0.9 FP,
    # 0.7 TP, one missed: AP 1/3 * 1/4 (see test_average_precision_curve)
    ap_high = 1 / 3 / 4
    car = {"ap": (4 * ap50 + 5 * ap_high) / 9, "ap50": ap50, "ap25": ap25}  # thresholds .5 .55 .6 .65 | .7 ... .9
    assert result["per_class"][CAR] == pytest.approx(car)
    assert all(math.isnan(v) for v in result["per_class"][PERSON].values())  # no person anywhere: NaN
    assert result["ap"] == pytest.approx(car["ap"])  # NaN classes left out of the mean
    assert result["ap50"] == pytest.approx(ap50) and result["ap25"] == pytest.approx(ap25)


def test_prediction_on_void_and_small_instances():
    sem_pred, inst_pred, sem_gt, inst_gt = scene(
        (6, CAR, 1, CAR, 1),  # prediction 1 (score 0.5) = car A
        # prediction 2 (score 0.9), 13 car points: 9 on ignored ground truth, 4 on person D
        (3, CAR, 2, ROAD, 0),  # void: stuff class
        (2, CAR, 2, UNLABELED, 0),  # void: ignored class
        (3, CAR, 2, CAR, 0),  # void: car points without instance (not an instance of 3 points)
        (1, CAR, 2, CAR, 3),  # small car C (2 points < 3): left out, its points ignored
        (4, CAR, 2, PERSON, 4),  # person D (10 points): another class, counts against it
        (1, ROAD, -1, CAR, 3),
        (2, CAR, 5, PERSON, 4),  # prediction 5 (score 0.99): 2 points < 3, left out
        (4, ROAD, -1, PERSON, 4),
    )
    metric = InstanceAP(NUM, IGNORE, THINGS, min_region_size=3)
    metric.add(sem_pred, inst_pred, {1: 0.5, 2: 0.9, 5: 0.99}, sem_gt, inst_gt)
    result = metric.result()
    # prediction 2 overlaps no car instance; 9/13 = 0.69 of it is ignored: no FP at thresholds
    # t < 9/13 (0.25, 0.5, 0.55, 0.6, 0.65): car AP 1 (A found, nothing else). At 0.7 .. 0.9 (5
    # thresholds) it is a FP ranked above A: points P 1/2 R 1, P 0 R 0, P 1 R 0 -> 1/2 * 1/2
    car_ap = (4 * 1 + 5 * (1 / 2 * 1 / 2)) / 9
    assert result["per_class"][CAR] == pytest.approx({"ap": car_ap, "ap50": 1.0, "ap25": 1.0})
    # person D has no person prediction: AP 0 (not NaN), and counts in the means
    assert result["per_class"][PERSON] == {"ap": 0.0, "ap50": 0.0, "ap25": 0.0}
    assert result["ap"] == pytest.approx(car_ap / 2)
    assert result["ap50"] == pytest.approx(0.5) and result["ap25"] == pytest.approx(0.5)


def test_default_min_region_size_is_100_points():
    sem_pred, inst_pred, sem_gt, inst_gt = scene(
        (100, CAR, 0, CAR, 1),  # 100 points: evaluated, found
        (99, PERSON, 1, PERSON, 1),  # 99 points: instance and prediction both left out
    )
    metric = InstanceAP(NUM, IGNORE, THINGS)
    metric.add(sem_pred, inst_pred, {0: 0.5, 1: 0.5}, sem_gt, inst_gt)
    result = metric.result()
    assert result["per_class"][CAR] == {"ap": 1.0, "ap50": 1.0, "ap25": 1.0}
    assert math.isnan(result["per_class"][PERSON]["ap"])


def test_ap_needs_a_score_per_prediction():
    sem_pred, inst_pred, sem_gt, inst_gt = scene((5, CAR, 4, CAR, 1))
    with pytest.raises(ValueError, match=r"no confidence for predicted instance\(s\) \[4\]"):
        InstanceAP(NUM, IGNORE, THINGS, min_region_size=1).add(sem_pred, inst_pred, {3: 0.5}, sem_gt, inst_gt)


def test_coverage_precision_recall():
    metric = InstanceCoverage(NUM, IGNORE, THINGS)
    metric.add(*scene(
        # prediction 1: 7 car + 3 person votes -> a car; 8 of car A's 10 points: IoU 8/12
        (5, CAR, 1, CAR, 1), (3, PERSON, 1, CAR, 1), (2, CAR, 1, ROAD, 0), (2, ROAD, -1, CAR, 1),
        # prediction 2: 15 of car B's 30 points, plus 3 on ignored ground truth (removed): IoU 1/2
        (15, CAR, 2, CAR, 2), (15, ROAD, -1, CAR, 2), (3, CAR, 2, UNLABELED, 0),
        (5, PERSON, 3, PERSON, 3),  # prediction 3 = person C
        (5, CAR, 4, ROAD, 0),  # prediction 4: a car on the road, IoU 0 with every car
    ))
    metric.add(*scene((10, CAR, 0, CAR, 7)))  # second scan: prediction 0 = car D
    result = metric.result()
    # car: per scan, the mean best IoU of its instances; then the mean over the two scans
    car_cov = ((8 / 12 + 1 / 2) / 2 + 1) / 2
    car_wcov = ((8 / 12 * 10 + 1 / 2 * 30) / (10 + 30) + 1) / 2
    # car predictions with best IoU >= 0.5: 1, 2 (exactly 0.5) and scan 2's; prediction 4 is not
    car_prec, car_rec = 3 / 4, 3 / 3
    assert result["per_class"][CAR] == pytest.approx(
        {"cov": car_cov, "wcov": car_wcov, "prec": car_prec, "rec": car_rec})
    assert result["per_class"][PERSON] == pytest.approx({"cov": 1.0, "wcov": 1.0, "prec": 1.0, "rec": 1.0})
    assert result["mcov"] == pytest.approx((car_cov + 1) / 2)
    assert result["mwcov"] == pytest.approx((car_wcov + 1) / 2)
    assert result["mprec"] == pytest.approx((car_prec + 1) / 2)
    assert result["mrec"] == pytest.approx(1.0)


def test_coverage_undefined_classes_are_nan_and_skipped():
    metric = InstanceCoverage(NUM, IGNORE, THINGS)
    metric.add(*scene((10, CAR, 0, CAR, 1), (6, ROAD, -1, PERSON, 2)))  # a person nobody predicted
    result = metric.result()
    person = result["per_class"][PERSON]
    assert person["cov"] == 0.0 and person["rec"] == 0.0 and math.isnan(person["prec"])  # 0 of 0 predictions
    assert result["mprec"] == 1.0  # car's alone
    assert result["mrec"] == pytest.approx((1 + 0) / 2)


def test_scene_prediction_confidences_read_back_exactly(tmp_path):
    """The ScanNet-format listing (voxseg.data.scene_predictions) keeps each confidence at full
    precision: read as evaluate_semantic_instance.py reads it (float of the third field), it is
    the same float, and AP over the masks and confidences read back equals AP in memory. Car A
    is predicted by instance 0 (confidence 0.1234564891234); instance 1, 3e-7 lower, is a car on
    person B: ranked below the TP, car AP is 1; rounded to 6 decimals the two tie (AP 3/4)."""
    from voxseg.data import scene_predictions as sp

    sem_pred, inst_pred, sem_gt, inst_gt = scene((10, CAR, 0, CAR, 1), (10, CAR, 1, PERSON, 2), (5, ROAD, -1, ROAD, 0))
    confidences = [0.1234564891234, 0.1234561891234]
    sp.write_scene(tmp_path / "staging", "scene0000_00", sem_pred,
                   [(inst_pred == k, CAR, confidences[k]) for k in range(2)])
    sp.publish_scene(tmp_path / "staging", tmp_path / "out", "scene0000_00")
    listing = tmp_path / "out" / "instance" / "scene0000_00.txt"
    assert listing.read_text() == ("scene0000_00/000.txt 1 0.1234564891234\n"
                                   "scene0000_00/001.txt 1 0.1234561891234\n")
    read_inst, read_scores = np.full(len(sem_pred), -1), {}
    for k, line in enumerate(listing.read_text().splitlines()):
        mask_file, _, confidence = line.split()
        read_inst[np.array((listing.parent / mask_file).read_text().split(), dtype=int) != 0] = k
        read_scores[k] = float(confidence)
    assert read_scores == {0: confidences[0], 1: confidences[1]}

    def car_ap(inst, scores) -> float:
        metric = InstanceAP(NUM, IGNORE, THINGS, min_region_size=5)
        metric.add(sem_pred, inst, scores, sem_gt, inst_gt)
        return metric.result()["per_class"][CAR]["ap"]

    assert car_ap(read_inst, read_scores) == car_ap(inst_pred, dict(enumerate(confidences))) == 1.0
    assert car_ap(inst_pred, {k: float(f"{c:.6f}") for k, c in enumerate(confidences)}) == 0.75
