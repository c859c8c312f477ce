"""Panoptic quality exactly as semantic-kitti-api defines it (`auxiliary/eval_np.py` PanopticEval,
`evaluate_panoptic.py`), on every input: tested against a loop-based port of the api's
`addBatchPanoptic` / `getPQ` on scans with instance ids on stuff, predictions of ignored classes
and segments under `min_points` (tests/test_panoptic_metrics.py).

Inputs are learn ids and instance ids (ints >= 0, the .label upper 16 bits). Per scan:
  1. points whose ground truth is an ignored class are removed;
  2. a segment is a (class, instance id) pair of one scan, for ground truth and prediction alike,
     for thing and stuff classes alike: instance 0 is an ordinary segment id (the api shifts ids
     by one), so a class's points without an instance form one segment. Instance ids on stuff
     points are kept, as the api keeps them: a car predicted as road with its id kept is a road
     segment of its own, and a ground-truth stuff class with several ids is several segments.
     (SemanticKITTI's ground truth and voxseg's own predictions put no ids on stuff, so there
     each stuff class is one segment per scan.) Points predicted as an ignored class are in no
     segment;
  3. a predicted and a ground-truth segment of the same class match when IoU > 0.5 (a match is
     unique at that threshold): TP, IoU summed (per scan and class in the api's order, so that
     sums are bit-identical);
  4. unmatched segments of at least `min_points` points are FP (predicted) or FN (ground truth);
     smaller ones are neither.
Per class over all scans: SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN/2), PQ = SQ * RQ (0 for
a class without TP, FP or FN). PQ, SQ, RQ average every evaluated class (absent ones count 0);
pq_things / pq_stuff average the thing / stuff classes (NaN for an empty group); PQ-dagger
averages PQ of things with the semantic IoU of stuff classes (semantic-kitti-api's confusion
matrix over the same points, `ConfusionMatrix`, IoU = TP / max(union, 1e-15) as getSemIoU).
evaluate_panoptic.py averages these groups over its own lists of class names, voxseg over learn
ids in order: the same values, summed in another order (the last bit may differ).
"""

from __future__ import annotations

import numpy as np

from voxseg.evaluation.semantic import ConfusionMatrix

MATCH_IOU = 0.5


class PanopticQuality:
    def __init__(self, num_classes: int, ignore: list[int], things: list[int] | tuple[int, ...], min_points: int = 50):
        self.num_classes = num_classes
        self.ignore = sorted(ignore)
        self.include = [c for c in range(num_classes) if c not in self.ignore]
        self.things = [c for c in self.include if c in set(things)]
        self.stuff = [c for c in self.include if c not in set(things)]
        self.min_points = min_points
        self.confusion = ConfusionMatrix(num_classes, self.ignore, padded_union=False)
        self.tp = np.zeros(num_classes, dtype=np.int64)
        self.fp = np.zeros(num_classes, dtype=np.int64)
        self.fn = np.zeros(num_classes, dtype=np.int64)
        self.iou_sum = np.zeros(num_classes, dtype=np.float64)

    def add(self, sem_pred: np.ndarray, inst_pred: np.ndarray, sem_gt: np.ndarray, inst_gt: np.ndarray) -> None:
        """One scan: learn ids and instance ids (>= 0) per point, all of the same length."""
        sem_pred, inst_pred, sem_gt, inst_gt = (np.asarray(a, dtype=np.int64).reshape(-1)
                                                for a in (sem_pred, inst_pred, sem_gt, inst_gt))
        if not len(sem_pred) == len(inst_pred) == len(sem_gt) == len(inst_gt):
            raise ValueError(f"{len(sem_pred)} predicted classes, {len(inst_pred)} predicted instances, "
                             f"{len(sem_gt)} ground-truth classes and {len(inst_gt)} instances: one per point")
        if inst_pred.min(initial=0) < 0 or inst_gt.min(initial=0) < 0:
            raise ValueError("instance ids must be >= 0 (0 = no instance)")
        self.confusion.update(sem_pred, sem_gt)
        keep = ~np.isin(sem_gt, self.ignore)
        sem_pred, inst_pred, sem_gt, inst_gt = sem_pred[keep], inst_pred[keep], sem_gt[keep], inst_gt[keep]

        segment = np.isin(sem_pred, self.include)  # points in a predicted segment
        pred_keys, pred_index, pred_size = np.unique((sem_pred << 32 | inst_pred)[segment],
                                                     return_inverse=True, return_counts=True)
        gt_keys, gt_index, gt_size = np.unique(sem_gt << 32 | inst_gt, return_inverse=True, return_counts=True)
        pred_class, gt_class = pred_keys >> 32, gt_keys >> 32

        both = (sem_pred == sem_gt)[segment]
        pairs, inter = np.unique(pred_index[both] * len(gt_keys) + gt_index[segment][both], return_counts=True)
        p, g = pairs // len(gt_keys), pairs % len(gt_keys)
        iou = inter / (pred_size[p] + gt_size[g] - inter)
        match = iou > MATCH_IOU
        self.tp += np.bincount(pred_class[p[match]], minlength=self.num_classes)
        # the api adds np.sum of each class's matched IoUs, ordered by ground-truth instance id
        by_gt = np.argsort(g[match], kind="stable")
        matched_class, matched_iou = gt_class[g[match]][by_gt], iou[match][by_gt]
        classes, first = np.unique(matched_class, return_index=True)
        # not strict: with no match np.split still gives one (empty) piece, for no class
        for c, ious in zip(classes.tolist(), np.split(matched_iou, first[1:]), strict=False):
            self.iou_sum[c] += np.sum(ious)

        pred_unmatched = np.ones(len(pred_keys), dtype=bool)
        pred_unmatched[p[match]] = False
        gt_unmatched = np.ones(len(gt_keys), dtype=bool)
        gt_unmatched[g[match]] = False
        self.fp += np.bincount(pred_class[pred_unmatched & (pred_size >= self.min_points)], minlength=self.num_classes)
        self.fn += np.bincount(gt_class[gt_unmatched & (gt_size >= self.min_points)], minlength=self.num_classes)

    def result(self) -> dict:
        """pq, sq, rq, pq_things, pq_stuff, pq_dagger, miou; per_class {learn id: {pq, sq, rq, iou}}."""
        sq = self.iou_sum / np.maximum(self.tp, 1)
        rq = self.tp / np.maximum(self.tp + 0.5 * self.fp + 0.5 * self.fn, 1e-15)
        pq = sq * rq
        iou = self.confusion.iou()
        return {
            "pq": float(pq[self.include].mean()),
            "sq": float(sq[self.include].mean()),
            "rq": float(rq[self.include].mean()),
            "pq_things": _mean(pq[self.things]),
            "pq_stuff": _mean(pq[self.stuff]),
            "pq_dagger": _mean(np.concatenate([pq[self.things], iou[self.stuff]])),
            "miou": self.confusion.miou(),
            "per_class": {c: {"pq": float(pq[c]), "sq": float(sq[c]), "rq": float(rq[c]), "iou": float(iou[c])}
                          for c in self.include},
        }


def _mean(values: np.ndarray) -> float:
    """Mean, NaN for no values (without numpy's empty-slice warning)."""
    return float(values.mean()) if len(values) else float("nan")
