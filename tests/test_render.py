"""Pictures of predictions (voxseg.evaluation.render, tools/render.py, tools/evaluate.py --plots):
the colours drawn are the label config's and the error map's, the projection is a camera's, and
the confusion matrix is the evaluation's counts."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from tests.helpers import SYNTHETIC_LABELS, cli
from voxseg.data import semantic_kitti as sk
from voxseg.data.labels import LabelConfig
from voxseg.evaluation.render import RIGHT, WRONG, error_rgb, perspective, render_scan, render_sheet
from voxseg.evaluation.semantic import evaluate_arrays

LABELS = LabelConfig.load(SYNTHETIC_LABELS)
CAR, ROAD, UNLABELED = 10, 40, 0


def colours_in(png) -> set[tuple[int, int, int]]:
    image = matplotlib.image.imread(png)[..., :3]
    return {tuple(c) for c in np.unique((image.reshape(-1, 3) * 255).round().astype(int), axis=0)}


def rgb255(raw: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in (LABELS.rgb(np.array([raw]))[0] * 255).round())


def scene(rng, n=4000):
    """Cars in a square on a road plane, as a scan would hold them."""
    coord = np.concatenate([np.c_[rng.uniform(-20, 20, (n, 2)), np.zeros(n)],
                            np.c_[rng.uniform(3, 6, (n // 4, 2)), rng.uniform(0, 1.5, n // 4)]]).astype(np.float32)
    semantic = np.r_[np.full(n, ROAD), np.full(n // 4, CAR)]
    instance = np.r_[np.zeros(n, int), np.ones(n // 4, int)]
    return coord, semantic, instance


def test_error_map_is_right_wrong_and_grey_for_ignored_truth():
    colours = error_rgb(np.array([CAR, ROAD, CAR]), np.array([CAR, CAR, UNLABELED]), LABELS)
    assert np.array_equal(colours, [RIGHT, WRONG, (0.8, 0.8, 0.8)])


def test_perspective_centres_the_target_and_draws_far_points_first():
    coord = np.array([[0.0, 0.0, 0.0], [10.0, 8.0, -9.0], [-10.0, -8.0, 9.0], [1.0, 1.0, 1.0]])
    image, order = perspective(coord)
    target = np.median(coord, axis=0)
    centred, _ = perspective(np.vstack([coord, target]))
    assert np.allclose(centred[-1], 0, atol=1e-9)  # the camera looks at the median
    depth = -np.array([[-0.8, -0.6, 0.7]]) @ (coord - target).T  # along the viewing direction
    assert list(order) == list(np.argsort(-depth[0], kind="stable"))


def test_a_scan_render_shows_class_colours_and_the_error_map(tmp_path, rng):
    coord, semantic, instance = scene(rng)
    render_scan(tmp_path / "right.png", coord, semantic, instance, LABELS, gt_semantic=semantic)
    seen = colours_in(tmp_path / "right.png")
    assert {rgb255(CAR), rgb255(ROAD)} <= seen
    assert tuple(round(255 * v) for v in RIGHT) in seen and tuple(round(255 * v) for v in WRONG) not in seen
    wrong = semantic.copy()
    wrong[semantic == CAR] = ROAD
    render_scan(tmp_path / "wrong.png", coord, wrong, instance, LABELS, gt_semantic=semantic)
    assert tuple(round(255 * v) for v in WRONG) in colours_in(tmp_path / "wrong.png")
    with pytest.raises(ValueError, match="5000 points but 3 classes"):
        render_scan(tmp_path / "x.png", coord, semantic[:3], instance, LABELS)
    assert not (tmp_path / "x.png").exists()


def test_a_sheet_draws_every_scan(tmp_path, rng):
    coord, semantic, _ = scene(rng)
    render_sheet(tmp_path / "sheet.png", [("a", coord, semantic), ("b", coord, np.full_like(semantic, CAR))], LABELS)
    assert {rgb255(CAR), rgb255(ROAD)} <= colours_in(tmp_path / "sheet.png")


def test_confusion_rows_are_true_classes_columns_predicted():
    result = evaluate_arrays([np.array([CAR, CAR, ROAD, ROAD, ROAD])], [np.array([CAR, ROAD, ROAD, ROAD, CAR])], LABELS)
    names = list(result["iou_per_class"])
    car, road = names.index("car"), names.index("road")
    confusion = np.asarray(result["confusion"])
    assert confusion.shape == (len(names), len(names)) and confusion.sum() == 5
    assert confusion[car, car] == 1 and confusion[car, road] == 1 and confusion[road, road] == 2
    assert confusion[road, car] == 1


def test_tools_render_and_evaluate_plots(tmp_path, rng):
    data = tmp_path / "data"
    coord, semantic, instance = scene(rng, 800)
    points = np.c_[coord, np.zeros(len(coord), np.float32)]
    for frame in ("000000", "000001"):
        sk.write_scan(sk.scan_path(data, "04", frame), points)
        sk.write_label(sk.label_path(data, "04", frame), semantic)
        sk.write_label(tmp_path / "pred" / "sequences" / "04" / "predictions" / f"{frame}.label", semantic, instance)
    done = cli("tools/render.py", "--predictions", str(tmp_path / "pred"), "--dataset", str(data), "--sequences", "4",
               "--label-config", str(SYNTHETIC_LABELS), "--out", str(tmp_path / "png"), "--frames", "000001", "--sheet")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["04.png", "04_000001.png"]
    assert tuple(round(255 * v) for v in RIGHT) in colours_in(tmp_path / "png" / "04_000001.png")

    done = cli("tools/evaluate.py", "--gt-labels", str(data / "sequences" / "04" / "labels"), "--pred-labels",
               str(tmp_path / "pred" / "sequences" / "04" / "predictions"), "--label-config", str(SYNTHETIC_LABELS),
               "--out", str(tmp_path / "m.json"), "--plots", str(tmp_path / "plots"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["confusion.png", "iou.png"]
    done = cli("tools/render.py", "--predictions", str(tmp_path / "none"), "--dataset", str(data), "--sequences", "4",
               "--label-config", str(SYNTHETIC_LABELS), "--out", str(tmp_path / "png2"))
    assert done.returncode == 2 and "no prediction for 2 of the 2 scans of sequence 04" in done.stderr
