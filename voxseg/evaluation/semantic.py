"""Semantic segmentation metrics exactly as semantic-kitti-api defines them.

One confusion matrix over all scans, indexed [prediction, ground truth] in learn ids. Points
whose ground truth is an ignored class are removed (their column is zeroed). Per class:
TP = diagonal, FP = row sum - TP, FN = column sum - TP, IoU = TP / (TP + FP + FN + 1e-15) as
evaluate_semantics.py computes it (`auxiliary/np_ioueval.py` getIoU; evaluate_panoptic.py's
`eval_np.py` getSemIoU divides by max(TP + FP + FN, 1e-15) instead: ConfusionMatrix follows
either, bit for bit; the two differ in the last bits where a union is under about 10 points).
The mean IoU averages over every non-ignored class, including classes absent from both ground
truth and predictions (IoU 0), as the api does; `absent_classes` lists those so they can be
spotted. Accuracy = sum(TP) / (sum over evaluated classes of TP + FP + 1e-15), the api's
`getacc`.

A class id that the label config does not list is refused (`check_known_ids`): the api's lookup
table maps it to 0 (unlabeled, ignored) without a word, so a wrong label config or a corrupt file
would score a fraction of the points.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from voxseg.data import semantic_kitti as sk
from voxseg.data.labels import LabelConfig
from voxseg.errors import DataFormatError
from voxseg.registry import EVALUATORS

EPS = 1e-15  # semantic-kitti-api's guard against 0 / 0


class ConfusionMatrix:
    """`padded_union`: IoU and accuracy divide by union + 1e-15 (np_ioueval, evaluate_semantics.py);
    otherwise by max(union, 1e-15) (eval_np.PanopticEval, evaluate_panoptic.py)."""

    def __init__(self, num_classes: int, ignore: list[int], padded_union: bool = True):
        self.padded_union = padded_union
        self.num_classes = num_classes
        self.ignore = list(ignore)
        self.include = [c for c in range(num_classes) if c not in self.ignore]
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add points with learn-id predictions `pred` and ground truth `gt` (same length)."""
        pred, gt = np.asarray(pred).reshape(-1), np.asarray(gt).reshape(-1)
        if pred.shape != gt.shape:
            raise ValueError(f"{len(pred)} predictions for {len(gt)} ground-truth points")
        self.matrix += np.bincount(pred * self.num_classes + gt, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        conf = self.matrix.copy()
        conf[:, self.ignore] = 0
        tp = np.diag(conf)
        return tp, conf.sum(axis=1) - tp, conf.sum(axis=0) - tp

    def _divide(self, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        return numerator / (denominator + EPS if self.padded_union else np.maximum(denominator, EPS))

    def iou(self) -> np.ndarray:
        tp, fp, fn = self.stats()
        return self._divide(tp, tp + fp + fn)

    def miou(self) -> float:
        return float(self.iou()[self.include].mean())

    def accuracy(self) -> float:
        tp, fp, _ = self.stats()
        return float(self._divide(tp.sum(), tp[self.include].sum() + fp[self.include].sum()))


@EVALUATORS.register()
class SemanticEvaluator:
    """Accumulates raw-id predictions and labels of scans under a label config.

    As a training evaluator (`evaluator: {type: SemanticEvaluator}`): add(pred, sample) takes a
    model's per-point predictions (`pred["segment"]`, train ids) and the sample's `segment`;
    result() gives the scalar METRICS and per-class tables; summary(result) a printable table.
    """

    METRICS = ("miou", "accuracy")

    def __init__(self, labels: LabelConfig):
        self.labels = labels
        self.confusion = ConfusionMatrix(labels.num_learn_classes, labels.ignored)

    def add(self, pred: dict, sample: dict) -> None:
        self.add_train(np.asarray(pred["segment"]), np.asarray(sample["segment"]))

    def summary(self, result: dict) -> str:
        return format_table(result)

    def add_raw(self, pred_raw: np.ndarray, gt_raw: np.ndarray) -> None:
        """Raw SemanticKITTI ids (upper 16 instance bits are dropped), as .label files hold them;
        ids the label config does not list become learn id 0 (check_known_ids refuses them first)."""
        self.confusion.update(self.labels.raw_to_learn(pred_raw), self.labels.raw_to_learn(gt_raw))

    def add_train(self, pred_train: np.ndarray, gt_train: np.ndarray) -> None:
        """Train ids (network outputs; ground truth -1 = ignored)."""
        gt_learn = np.zeros_like(gt_train)
        valid = gt_train >= 0
        gt_learn[valid] = self.labels.train_to_learn(gt_train[valid])
        gt_learn[~valid] = self.labels.ignored[0] if self.labels.ignored else 0
        self.confusion.update(self.labels.train_to_learn(pred_train), gt_learn)

    def result(self) -> dict:
        c = self.confusion
        iou = c.iou()
        tp, fp, fn = c.stats()
        names = {i: self.labels.learn_name(i) for i in c.include}
        return {
            "miou": c.miou(),
            "accuracy": c.accuracy(),
            "iou_per_class": {names[i]: float(iou[i]) for i in c.include},
            "points_per_class": {names[i]: int(tp[i] + fn[i]) for i in c.include},
            "absent_classes": [names[i] for i in c.include if tp[i] + fp[i] + fn[i] == 0],
            "num_points": int(c.matrix[:, c.include].sum()),
            # points of true class row, predicted as class column, over the evaluated classes (in
            # the order of iou_per_class); a prediction of an ignored class is in no column
            "confusion": c.matrix[np.ix_(c.include, c.include)].T.tolist(),
        }


def check_known_ids(raw: np.ndarray, labels: LabelConfig, source: str | os.PathLike) -> None:
    """A DataFormatError `SOURCE: class id 999 (12 points) is not in LABEL_CONFIG` (every unknown
    id in the one line) when the lower 16 bits of `raw` hold ids that `labels` does not list."""
    unknown = labels.unknown_raw_ids(raw)
    if unknown:
        listed = ", ".join(f"{i} ({n} point{'' if n == 1 else 's'})" for i, n in unknown.items())
        many = len(unknown) > 1
        raise DataFormatError(f"{source}: class id{'s' if many else ''} {listed} {'are' if many else 'is'} "
                              f"not in {labels.path}")


def read_known_label(path: Path, labels: LabelConfig) -> tuple[np.ndarray, np.ndarray]:
    """(raw class, instance id) of a .label file whose every class id `labels` lists (check_known_ids)."""
    semantic, instance = sk.read_label(path)
    check_known_ids(semantic, labels, path)
    return semantic, instance


def evaluate_arrays(pred_raw: list[np.ndarray], gt_raw: list[np.ndarray], labels: LabelConfig) -> dict:
    """Metrics for lists of per-scan raw-id arrays (from Python, without files); an unknown class
    id is a DataFormatError naming `ground truth [i]` or `prediction [i]`."""
    evaluator = SemanticEvaluator(labels)
    for i, (pred, gt) in enumerate(zip(pred_raw, gt_raw, strict=True)):
        check_known_ids(gt, labels, f"ground truth [{i}]")
        check_known_ids(pred, labels, f"prediction [{i}]")
        evaluator.add_raw(pred, gt)
    return evaluator.result()


def matched_label_files(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(ground truth, prediction) pairs: every .label file of `gt_dir` with the same-named file of
    `pred_dir`; a missing folder, an empty one or a missing prediction is a DataFormatError."""
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for directory in (gt_dir, pred_dir):
        if not directory.is_dir():
            raise DataFormatError(f"{directory}: label directory not found")
    gt_files = sorted(gt_dir.glob("*.label"))
    if not gt_files:
        raise DataFormatError(f"{gt_dir}: no .label files")
    missing = [f.name for f in gt_files if not (pred_dir / f.name).is_file()]
    if missing:
        raise DataFormatError(f"{pred_dir}: no prediction for {len(missing)} ground-truth scan(s), first {missing[0]}")
    return [(f, pred_dir / f.name) for f in gt_files]


def evaluate_directories(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike, labels: LabelConfig) -> dict:
    """Metrics over every .label file of `gt_dir` against the same-named file of `pred_dir`; a
    class id that `labels` does not list is a DataFormatError naming the file (check_known_ids)."""
    files = matched_label_files(gt_dir, pred_dir)
    evaluator = SemanticEvaluator(labels)
    for gt_file, pred_file in files:
        gt, _ = read_known_label(gt_file, labels)
        pred, _ = read_known_label(pred_file, labels)
        if len(pred) != len(gt):
            raise DataFormatError(f"{pred_file}: {len(pred)} predictions for the {len(gt)} points of {gt_file}")
        evaluator.add_raw(pred, gt)
    return {**evaluator.result(), "num_scans": len(files)}


def format_table(result: dict) -> str:
    """A per-class IoU table with the mean IoU and accuracy."""
    width = max(len(n) for n in result["iou_per_class"]) + 2
    lines = [f"{'class':<{width}}{'IoU':>8}{'points':>12}", "-" * (width + 20)]
    for name, iou in result["iou_per_class"].items():
        lines.append(f"{name:<{width}}{100 * iou:>7.1f}%{result['points_per_class'][name]:>12,}")
    lines.append("-" * (width + 20))
    lines.append(f"{'mIoU':<{width}}{100 * result['miou']:>7.1f}%")
    lines.append(f"{'accuracy':<{width}}{100 * result['accuracy']:>7.1f}%")
    if result["absent_classes"]:
        lines.append("absent from ground truth and predictions (IoU 0, counted in the mean): "
                     f"{', '.join(result['absent_classes'])}")
    return "\n".join(lines)
