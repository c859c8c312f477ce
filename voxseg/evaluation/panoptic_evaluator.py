"""Panoptic and instance evaluation of scans: semantic mIoU, PQ (semantic-kitti-api), AP (ScanNet)
and coverage (ASIS) at once, from a model's predictions or from SemanticKITTI-format files.

Files: predictions are .label files like the ground truth (class in the lower 16 bits, instance
id in the upper 16, 0 = no instance; an instance id names one predicted instance in its scan);
AP also needs each predicted instance's confidence, in a scores file per scan beside the
predictions (`semantic_kitti.write_instance_scores`):

    PRED/sequences/NN/predictions/FFFFFF.label
    PRED/sequences/NN/scores/FFFFFF.txt        "instance_id score" lines

Without confidences (any scan added without them) the AP family is NaN; PQ and coverage do
not need them. A class id that the label config does not list is refused, naming the file
(voxseg.evaluation.semantic.check_known_ids).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated

import numpy as np

from voxseg.config import Range
from voxseg.data import semantic_kitti as sk
from voxseg.data.labels import LabelConfig
from voxseg.errors import DataFormatError
from voxseg.evaluation.instance import InstanceAP, InstanceCoverage
from voxseg.evaluation.panoptic import PanopticQuality
from voxseg.evaluation.semantic import check_known_ids, matched_label_files, read_known_label
from voxseg.registry import EVALUATORS


@EVALUATORS.register()
class PanopticEvaluator:
    """Accumulates scans for PQ, AP, coverage and mIoU under a label config.

    As a training evaluator (`evaluator: {type: PanopticEvaluator}`), add(pred, sample) takes
      pred["segment"]         (N,) train ids
      pred["instance"]        (N,) predicted instance ids, -1 = none
      pred["instance_score"]  (N,) the confidence of each point's instance (one value per instance)
      sample["segment"]       (N,) train ids, -1 = ignored
      sample["instance"]      (N,) ground-truth instance ids, -1 = none, else unique per scan
    result() gives the scalar METRICS and per-class tables (class name -> value, NaN where a
    metric is undefined); summary(result) the printable tables. `min_points`: PQ's smallest
    unmatched segment that counts (semantic-kitti-api's 50); `min_region_size`: AP's smallest
    instance (ScanNet's 100).
    """

    METRICS = ("pq", "sq", "rq", "pq_things", "pq_stuff", "pq_dagger", "ap", "ap50", "ap25",
               "mcov", "mwcov", "mprec", "mrec", "miou")

    def __init__(self, labels: LabelConfig, min_points: Annotated[int, Range(ge=1)] = 50,
                 min_region_size: Annotated[int, Range(ge=1)] = 100):
        self.labels = labels
        n, ignore, things = labels.num_learn_classes, labels.ignored, labels.thing_learn_ids
        self.panoptic = PanopticQuality(n, ignore, things, min_points=min_points)
        self.instance_ap = InstanceAP(n, ignore, things, min_region_size=min_region_size)
        self.coverage = InstanceCoverage(n, ignore, things)
        self.with_scores = True  # every scan so far came with confidences

    def add(self, pred: dict, sample: dict) -> None:
        gt_train = np.asarray(sample["segment"], dtype=np.int64)
        sem_gt = np.full(len(gt_train), self.labels.ignored[0] if self.labels.ignored else 0, dtype=np.int64)
        sem_gt[gt_train >= 0] = self.labels.train_to_learn(gt_train[gt_train >= 0])
        inst_pred = np.asarray(pred["instance"], dtype=np.int64)
        has = inst_pred >= 0
        ids, first = np.unique(inst_pred[has], return_index=True)
        first_scores = np.asarray(pred["instance_score"], dtype=np.float64)[has][first]
        scores = dict(zip(ids.tolist(), first_scores.tolist(), strict=True))
        self.add_learn(self.labels.train_to_learn(np.asarray(pred["segment"], dtype=np.int64)), inst_pred, scores,
                       sem_gt, np.asarray(sample["instance"], dtype=np.int64) + 1)

    def add_raw(self, pred_label: np.ndarray, gt_label: np.ndarray, scores: dict[int, float] | None) -> None:
        """.label contents (uint32: raw class in the lower 16 bits, instance id in the upper 16,
        0 = none) and `scores` {predicted instance id: confidence}, or None (no AP)."""
        pred_label, gt_label = np.asarray(pred_label, dtype=np.int64), np.asarray(gt_label, dtype=np.int64)
        pred_instance = pred_label >> 16
        self.add_learn(self.labels.raw_to_learn(pred_label), np.where(pred_instance > 0, pred_instance, -1), scores,
                       self.labels.raw_to_learn(gt_label), gt_label >> 16)

    def add_learn(self, sem_pred: np.ndarray, inst_pred: np.ndarray, scores: dict[int, float] | None,
                  sem_gt: np.ndarray, inst_gt: np.ndarray) -> None:
        """Learn ids; predicted instances -1 = none, ground-truth instances 0 = none."""
        if len(sem_pred) != len(sem_gt):
            raise ValueError(f"{len(sem_pred)} predictions for {len(sem_gt)} ground-truth points")
        self.panoptic.add(sem_pred, inst_pred + 1, sem_gt, inst_gt)
        self.coverage.add(sem_pred, inst_pred, sem_gt, inst_gt)
        if scores is None:
            self.with_scores = False
        elif self.with_scores:
            self.instance_ap.add(sem_pred, inst_pred, scores, sem_gt, inst_gt)

    def result(self) -> dict:
        pq, cov = self.panoptic.result(), self.coverage.result()
        nan = float("nan")
        ap: dict = self.instance_ap.result() if self.with_scores else {
            "ap": nan, "ap50": nan, "ap25": nan,
            "per_class": {c: {"ap": nan, "ap50": nan, "ap25": nan} for c in cov["per_class"]}}
        name = self.labels.learn_name
        tables = {f"{k}_per_class": {name(c): v[k] for c, v in source["per_class"].items()}
                  for source, keys in ((pq, ("pq", "sq", "rq", "iou")), (ap, ("ap", "ap50", "ap25")),
                                       (cov, ("cov", "wcov", "prec", "rec")))
                  for k in keys}
        return {**{k: pq[k] for k in ("pq", "sq", "rq", "pq_things", "pq_stuff", "pq_dagger", "miou")},
                **{k: ap[k] for k in ("ap", "ap50", "ap25")},
                **{k: cov[k] for k in ("mcov", "mwcov", "mprec", "mrec")},
                "things": [name(c) for c in self.panoptic.things], **tables}

    def summary(self, result: dict) -> str:
        return format_panoptic_table(result) + "\n\n" + format_instance_table(result)


def evaluate_panoptic_arrays(pred_raw: list[np.ndarray], gt_raw: list[np.ndarray], labels: LabelConfig,
                             scores: list[dict[int, float]] | None = None, **options) -> dict:
    """Metrics for lists of per-scan .label arrays and, for AP, per-scan confidences (from Python,
    without files); `options` go to PanopticEvaluator (min_points, min_region_size). An unknown
    class id is a DataFormatError naming `ground truth [i]` or `prediction [i]`."""
    evaluator = PanopticEvaluator(labels, **options)
    for i, (pred, gt) in enumerate(zip(pred_raw, gt_raw, strict=True)):
        check_known_ids(gt, labels, f"ground truth [{i}]")
        check_known_ids(pred, labels, f"prediction [{i}]")
        evaluator.add_raw(pred, gt, None if scores is None else scores[i])
    return evaluator.result()


def evaluate_panoptic_directories(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike, labels: LabelConfig,
                                  scores_dir: str | os.PathLike | None = None, **options) -> dict:
    """Metrics over every .label file of `gt_dir` against the same-named file of `pred_dir` and,
    with `scores_dir`, the same-named .txt confidences there (without: AP is NaN); `options`
    go to PanopticEvaluator (min_points, min_region_size). Besides the metrics: `num_scans`, and
    `pred_instances`, the number of predicted instances (distinct ids > 0 per scan) in all files;
    0 for semantic-only predictions, whose things PQ scores as one segment per class and scan."""
    files = matched_label_files(gt_dir, pred_dir)
    scores_dir = None if scores_dir is None else Path(scores_dir)
    if scores_dir is not None and not scores_dir.is_dir():
        raise DataFormatError(f"{scores_dir}: scores directory not found")
    evaluator = PanopticEvaluator(labels, **options)
    pred_instances = 0
    for gt_file, pred_file in files:
        gt = _read_packed(gt_file, labels)
        pred = _read_packed(pred_file, labels)
        if len(pred) != len(gt):
            raise DataFormatError(f"{pred_file}: {len(pred)} predictions for the {len(gt)} points of {gt_file}")
        instance_ids = np.unique(pred >> 16)
        instance_ids = instance_ids[instance_ids > 0]
        pred_instances += len(instance_ids)
        scores = None
        if scores_dir is not None:
            scores_file = scores_dir / f"{gt_file.stem}.txt"
            scores = sk.read_instance_scores(scores_file)
            unscored = sorted(set(instance_ids.tolist()) - set(scores))
            if unscored:
                raise DataFormatError(f"{scores_file}: no score for instance(s) {unscored[:5]} of {pred_file}")
        evaluator.add_raw(pred, gt, scores)
    return {**evaluator.result(), "num_scans": len(files), "pred_instances": pred_instances}


def _read_packed(path: Path, labels: LabelConfig) -> np.ndarray:
    """A .label file as int64 values `instance << 16 | class`; every class id listed in `labels`."""
    semantic, instance = read_known_label(path, labels)
    return instance << 16 | semantic


def _percent(value: float) -> str:
    return f"{'-':>8}" if math.isnan(value) else f"{100 * value:>7.1f}%"


def _table(result: dict, columns: dict[str, str], classes: list[str], means: dict[str, dict[str, str]]) -> str:
    """Rows of per-class percentages (`columns`: header -> table key), then one row per entry
    of `means` (row label -> {header: scalar key})."""
    width = max(len(n) for n in [*classes, *means, "class"]) + 2
    lines = [f"{'class':<{width}}" + "".join(f"{h:>8}" for h in columns), "-" * (width + 8 * len(columns))]
    for name in classes:
        lines.append(f"{name:<{width}}" + "".join(_percent(result[key][name]) for key in columns.values()))
    lines.append("-" * (width + 8 * len(columns)))
    for label, keys in means.items():
        cells = (_percent(result[keys[h]]) if h in keys else " " * 8 for h in columns)
        lines.append(f"{label:<{width}}" + "".join(cells))
    return "\n".join(line.rstrip() for line in lines)


def format_panoptic_table(result: dict) -> str:
    """Per-class PQ, SQ, RQ and IoU, their means, PQ of things and stuff, and PQ-dagger."""
    columns = {"PQ": "pq_per_class", "SQ": "sq_per_class", "RQ": "rq_per_class", "IoU": "iou_per_class"}
    means = {"mean": {"PQ": "pq", "SQ": "sq", "RQ": "rq", "IoU": "miou"}, "things": {"PQ": "pq_things"},
             "stuff": {"PQ": "pq_stuff"}, "PQ-dagger": {"PQ": "pq_dagger"}}
    return _table(result, columns, list(result["pq_per_class"]), means)


def format_instance_table(result: dict) -> str:
    """Per thing class AP, AP50, AP25, Cov, WCov, precision and recall, and their means."""
    columns = {"AP": "ap_per_class", "AP50": "ap50_per_class", "AP25": "ap25_per_class", "Cov": "cov_per_class",
               "WCov": "wcov_per_class", "Prec": "prec_per_class", "Rec": "rec_per_class"}
    means = {"mean": {"AP": "ap", "AP50": "ap50", "AP25": "ap25", "Cov": "mcov", "WCov": "mwcov", "Prec": "mprec",
                      "Rec": "mrec"}}
    return _table(result, columns, result["things"], means)
