"""Instance segmentation metrics: ScanNet's AP and ASIS's coverage, precision and recall.

Conventions of both (learn ids; only `things` classes are evaluated):
  ground truth  `inst_gt` >= 0 per point, 0 = no instance (the .label upper 16 bits); an instance
                is a (thing class, instance id > 0) pair of one scan;
  prediction    `inst_pred` per point, -1 = no instance; an instance is one id >= 0 of one scan,
                whatever the classes of its points; its class is the mode of `sem_pred` over
                its points (the smallest class on ties, as scipy.stats.mode); predicted
                instances of other classes than `things` are left out.
A prediction and a ground-truth instance are compared only when of the same class.
"""

from __future__ import annotations

import numpy as np

# ScanNet's overlaps: 0.5, 0.55, ..., 0.9 (0.95 excluded) for AP, then 0.25 for AP25
AP_THRESHOLDS = np.append(np.arange(0.5, 0.95, 0.05), 0.25)
ASIS_IOU = 0.5


def _as_int_arrays(*arrays) -> list[np.ndarray]:
    flat = [np.asarray(a, dtype=np.int64).reshape(-1) for a in arrays]
    if len({len(a) for a in flat}) != 1:
        raise ValueError(f"per-point arrays of different lengths {[len(a) for a in flat]}")
    return flat


def _scan_instances(sem_pred, inst_pred, sem_gt, inst_gt, things) -> dict:
    """Per-point indices of the scan's ground-truth and predicted thing instances (-1 = none),
    their classes and sizes, and the intersections of same-class pairs."""
    things = np.asarray(things, dtype=np.int64)
    gt_index = np.full(len(sem_gt), -1)
    is_gt = np.isin(sem_gt, things) & (inst_gt > 0)
    gt_keys, gt_index[is_gt], gt_size = np.unique(sem_gt[is_gt] << 32 | inst_gt[is_gt],
                                                  return_inverse=True, return_counts=True)
    pred_index = np.full(len(sem_pred), -1)
    is_pred = inst_pred >= 0
    pred_ids, pred_index[is_pred], pred_size = np.unique(inst_pred[is_pred], return_inverse=True,
                                                         return_counts=True)
    pred_class = _mode(pred_index[is_pred], sem_pred[is_pred])
    kept = np.isin(pred_class, things)
    renumber = np.full(len(pred_ids), -1)
    renumber[kept] = np.arange(kept.sum())
    pred_index[is_pred] = renumber[pred_index[is_pred]]
    pred_ids, pred_class, pred_size = pred_ids[kept], pred_class[kept], pred_size[kept]

    gt_class = gt_keys >> 32
    both = (gt_index >= 0) & (pred_index >= 0)
    pairs, inter = np.unique(pred_index[both] * len(gt_keys) + gt_index[both], return_counts=True)
    p, g = pairs // max(len(gt_keys), 1), pairs % max(len(gt_keys), 1)
    same = pred_class[p] == gt_class[g]
    return {"gt_index": gt_index, "gt_class": gt_class, "gt_size": gt_size, "pred_index": pred_index,
            "pred_ids": pred_ids, "pred_class": pred_class, "pred_size": pred_size,
            "pair_pred": p[same], "pair_gt": g[same], "pair_inter": inter[same]}


def _mode(index: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Most frequent label of each index 0..n-1 (every index present), the smallest on ties."""
    if len(index) == 0:
        return np.zeros(0, dtype=np.int64)
    span = int(labels.max()) + 1
    keys, counts = np.unique(index * span + labels, return_counts=True)
    owner, label = keys // span, keys % span
    order = np.lexsort((label, -counts, owner))
    first = np.unique(owner[order], return_index=True)[1]
    return label[order][first]


def _nanmean(values: np.ndarray) -> float:
    """np.nanmean, NaN without a warning when every value is NaN."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def average_precision(true: np.ndarray, score: np.ndarray, hard_false_negatives: int) -> float:
    """ScanNet's AP of one class: ranked detections (`true` 1 = TP, 0 = FP) and ground-truth
    instances no prediction matched. One precision/recall point per distinct score, keeping the
    detections scored at least that much, then an artificial point (recall 0, precision 1);
    AP = sum of precision_k * (recall_{k-1} - recall_{k+1}) / 2 over the points ordered by
    rising score, with recall_{-1} = recall_0 and 0 after the last point. Without any
    detection that curve is the artificial point alone: AP 0 (ScanNet's script fails there)."""
    order = np.argsort(score)
    true = np.asarray(true, dtype=np.float64)[order]
    thresholds_first = np.unique(np.asarray(score)[order], return_index=True)[1]
    before = np.concatenate([[0.0], np.cumsum(true)])[thresholds_first]  # TPs scored below each threshold
    tp = true.sum() - before
    fp = len(true) - thresholds_first - tp
    fn = before + hard_false_negatives
    precision = np.append(tp / (tp + fp), 1.0)
    recall = np.append(tp / (tp + fn), 0.0)
    padded = np.concatenate([recall[:1], recall, [0.0]])
    return float(np.dot(precision, (padded[:-2] - padded[2:]) / 2))


class InstanceAP:
    """ScanNet's AP (`BenchmarkScripts/3d_evaluation/evaluate_semantic_instance.py`).

    Predicted and ground-truth instances under `min_region_size` points are left out. For each
    IoU threshold t (0.5..0.9 and 0.25), per scan, ground-truth instances in order take the
    same-class predictions with IoU > t in order, skipping those already matched to another:
    the first is a match; each further one is a false positive, and the instance keeps the
    highest of their confidences. A prediction without a same-class instance at IoU > t (left-out
    small ones included) is a false positive unless more than t of its points lie on void
    ground truth (points in no ground-truth instance: ignored and stuff classes, thing points
    without instance id) or on small same-class instances: ScanNet's `proportion_ignore <= t`.
    Per class: AP from `average_precision`; 0 for a class with ground truth and no prediction,
    NaN for one without ground truth. ap averages the thresholds 0.5..0.9, then the classes
    (nanmean); ap50 and ap25 take one threshold.
    """

    def __init__(self, num_classes: int, ignore: list[int], things: list[int] | tuple[int, ...],
                 min_region_size: int = 100):
        self.num_classes = num_classes
        self.things = [c for c in sorted(set(things)) if c not in ignore]
        self.min_region_size = min_region_size
        # every scan's instances and same-class pairs, numbered across scans
        self.tables: dict[str, list[np.ndarray]] = {
            key: [np.zeros(0, dtype=np.float64 if key == "pred_score" else np.int64)]
            for key in ("gt_class", "gt_size", "pred_class", "pred_size", "pred_score", "pred_void",
                        "pair_pred", "pair_gt", "pair_inter")}
        self.num_gt = self.num_pred = 0

    def add(self, sem_pred: np.ndarray, inst_pred: np.ndarray, scores: dict[int, float], sem_gt: np.ndarray,
            inst_gt: np.ndarray) -> None:
        """One scan: learn ids, instance ids (conventions in the module docstring) and
        `scores` {predicted instance id: confidence}, which must name every predicted instance."""
        sem_pred, inst_pred, sem_gt, inst_gt = _as_int_arrays(sem_pred, inst_pred, sem_gt, inst_gt)
        scan = _scan_instances(sem_pred, inst_pred, sem_gt, inst_gt, self.things)
        missing = [int(i) for i in scan["pred_ids"] if int(i) not in scores]
        if missing:
            raise ValueError(f"no confidence for predicted instance(s) {missing[:5]}")
        kept = scan["pred_size"] >= self.min_region_size
        void = (scan["gt_index"] < 0) & (scan["pred_index"] >= 0)
        void_points = np.bincount(scan["pred_index"][void], minlength=len(kept))
        renumber = self.num_pred + np.cumsum(kept) - 1
        pair_kept = kept[scan["pair_pred"]]
        for key, values in {
            "gt_class": scan["gt_class"], "gt_size": scan["gt_size"],
            "pred_class": scan["pred_class"][kept], "pred_size": scan["pred_size"][kept],
            "pred_score": np.array([float(scores[int(i)]) for i in scan["pred_ids"][kept]], dtype=np.float64),
            "pred_void": void_points[kept],
            "pair_pred": renumber[scan["pair_pred"][pair_kept]], "pair_gt": self.num_gt + scan["pair_gt"][pair_kept],
            "pair_inter": scan["pair_inter"][pair_kept],
        }.items():
            self.tables[key].append(values)
        self.num_gt += len(scan["gt_size"])
        self.num_pred += int(kept.sum())

    def _ap_at(self, m: dict, iou: np.ndarray, threshold: float) -> np.ndarray:
        """AP per learn class at one IoU threshold (NaN where no ground truth)."""
        large = m["gt_size"] >= self.min_region_size
        above = iou > threshold
        # greedy assignment: ground-truth instances in order, each trying its predictions in order
        candidates = np.flatnonzero(above & large[m["pair_gt"]])
        candidates = candidates[np.lexsort((m["pair_pred"][candidates], m["pair_gt"][candidates]))]
        visited = np.zeros(len(m["pred_size"]), dtype=bool)
        best: dict[int, float] = {}  # matched ground truth -> its confidence
        duplicates: list[tuple[int, float]] = []  # (class, confidence) of the false positives
        for g, p in zip(m["pair_gt"][candidates].tolist(), m["pair_pred"][candidates].tolist(), strict=True):
            if visited[p]:
                continue
            confidence = float(m["pred_score"][p])
            if g in best:
                duplicates.append((int(m["gt_class"][g]), min(best[g], confidence)))
                best[g] = max(best[g], confidence)
            else:
                best[g] = confidence
                visited[p] = True
        # unmatched predictions: false positives unless mostly on void or small instances
        found = np.zeros(len(m["pred_size"]), dtype=bool)
        found[m["pair_pred"][above]] = True
        small = ~large[m["pair_gt"]]
        ignored = m["pred_void"] + np.bincount(m["pair_pred"][small], weights=m["pair_inter"][small],
                                               minlength=len(found))
        false_pos = ~found & (ignored / np.maximum(m["pred_size"], 1) <= threshold)

        matched = np.zeros(len(m["gt_size"]), dtype=bool)
        matched[list(best)] = True
        ap = np.full(self.num_classes, np.nan)
        for c in self.things:
            has_gt = (large & (m["gt_class"] == c)).any()
            if not has_gt:
                continue
            if not (m["pred_class"] == c).any():
                ap[c] = 0.0
                continue
            tp_scores = [s for g, s in best.items() if m["gt_class"][g] == c]
            fp_scores = ([s for k, s in duplicates if k == c]
                         + m["pred_score"][false_pos & (m["pred_class"] == c)].tolist())
            hard_fn = int((large & ~matched & (m["gt_class"] == c)).sum())
            ap[c] = average_precision(np.r_[np.ones(len(tp_scores)), np.zeros(len(fp_scores))],
                                      np.array(tp_scores + fp_scores, dtype=np.float64), hard_fn)
        return ap

    def result(self) -> dict:
        """ap, ap50, ap25 and per_class {learn id: {ap, ap50, ap25}} (NaN: no ground truth)."""
        m = {key: np.concatenate(parts) for key, parts in self.tables.items()}
        iou = m["pair_inter"] / (m["gt_size"][m["pair_gt"]] + m["pred_size"][m["pair_pred"]] - m["pair_inter"])
        aps = np.stack([self._ap_at(m, iou, t) for t in AP_THRESHOLDS], axis=1)[self.things]  # (things, thresholds)
        main, ap50, ap25 = aps[:, :-1], aps[:, 0], aps[:, -1]
        per_class_ap = main.mean(axis=1)  # NaN for a class without ground truth (NaN at every threshold)
        return {
            "ap": _nanmean(main),
            "ap50": _nanmean(ap50),
            "ap25": _nanmean(ap25),
            "per_class": {c: {"ap": float(a), "ap50": float(b), "ap25": float(d)}
                          for c, a, b, d in zip(self.things, per_class_ap, ap50, ap25, strict=True)},
        }


class InstanceCoverage:
    """ASIS / SGPN coverage, precision and recall (ASIS `models/ASIS/eval_iou_accuracy.py`).

    Points whose ground truth is an ignored class are removed first (S3DIS, ASIS's data set, has
    no such points). Per scan and class: Cov = mean over its ground-truth instances of the best
    IoU with a same-class predicted instance (0 if none), WCov the same weighted by instance
    size; per class, both average the scans holding the class's instances, then mcov / mwcov
    average the classes. A predicted instance is a TP when its best IoU with a same-class
    ground-truth instance is >= 0.5 (ASIS matches nothing one-to-one); per class over all scans
    precision = TP / predictions, recall = TP / ground-truth instances; mprec / mrec average the
    classes. A class's value is NaN where it is 0/0 (no ground truth; for precision, no
    prediction); the means skip NaN (nanmean).
    """

    def __init__(self, num_classes: int, ignore: list[int], things: list[int] | tuple[int, ...]):
        self.num_classes = num_classes
        self.ignore = list(ignore)
        self.things = [c for c in sorted(set(things)) if c not in self.ignore]
        self.cov_sum = np.zeros(num_classes)
        self.wcov_sum = np.zeros(num_classes)
        self.scans_with = np.zeros(num_classes, dtype=np.int64)
        self.tp = np.zeros(num_classes, dtype=np.int64)
        self.predicted = np.zeros(num_classes, dtype=np.int64)
        self.gt_instances = np.zeros(num_classes, dtype=np.int64)

    def add(self, sem_pred: np.ndarray, inst_pred: np.ndarray, sem_gt: np.ndarray, inst_gt: np.ndarray) -> None:
        """One scan: learn ids and instance ids (conventions in the module docstring)."""
        sem_pred, inst_pred, sem_gt, inst_gt = _as_int_arrays(sem_pred, inst_pred, sem_gt, inst_gt)
        keep = ~np.isin(sem_gt, self.ignore)
        scan = _scan_instances(sem_pred[keep], inst_pred[keep], sem_gt[keep], inst_gt[keep], self.things)
        p, g, inter = scan["pair_pred"], scan["pair_gt"], scan["pair_inter"]
        iou = inter / (scan["pred_size"][p] + scan["gt_size"][g] - inter)
        n = self.num_classes
        gt_class, gt_size = scan["gt_class"], scan["gt_size"]

        best_gt = np.zeros(len(gt_size))
        np.maximum.at(best_gt, g, iou)
        count = np.bincount(gt_class, minlength=n)
        present = count > 0
        self.cov_sum[present] += np.bincount(gt_class, weights=best_gt, minlength=n)[present] / count[present]
        self.wcov_sum[present] += (np.bincount(gt_class, weights=best_gt * gt_size, minlength=n)[present]
                                   / np.bincount(gt_class, weights=gt_size, minlength=n)[present])
        self.scans_with += present
        self.gt_instances += count

        best_pred = np.zeros(len(scan["pred_size"]))
        np.maximum.at(best_pred, p, iou)
        self.tp += np.bincount(scan["pred_class"][best_pred >= ASIS_IOU], minlength=n)
        self.predicted += np.bincount(scan["pred_class"], minlength=n)

    def result(self) -> dict:
        """mcov, mwcov, mprec, mrec and per_class {learn id: {cov, wcov, prec, rec}}."""
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = self.cov_sum / self.scans_with
            wcov = self.wcov_sum / self.scans_with
            prec = self.tp / self.predicted
            rec = self.tp / self.gt_instances
        t = self.things
        return {
            "mcov": _nanmean(cov[t]), "mwcov": _nanmean(wcov[t]), "mprec": _nanmean(prec[t]), "mrec": _nanmean(rec[t]),
            "per_class": {
                c: {"cov": float(cov[c]), "wcov": float(wcov[c]), "prec": float(prec[c]), "rec": float(rec[c])}
                for c in t
            },
        }
