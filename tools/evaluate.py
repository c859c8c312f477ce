#!/usr/bin/env python3
"""Score SemanticKITTI-format predictions against ground truth.

    python tools/evaluate.py --gt-labels DATA/sequences/08/labels \
        --pred-labels PRED/sequences/08/predictions --out metrics.json [--task panoptic|instance]

Both directories hold .label files (raw class ids in the lower 16 bits, instance ids in the
upper 16) matched by name. --task picks the printed table:
  semantic  per-class IoU, as semantic-kitti-api's evaluate_semantics does (the default);
  panoptic  PQ, SQ, RQ as semantic-kitti-api's evaluate_panoptic does, with PQ-dagger;
  instance  ScanNet's AP, AP50, AP25 and ASIS's coverage, precision and recall. AP needs each
            predicted instance's confidence: --pred-scores holds one FFFFFF.txt of
            "instance_id score" lines per scan (default: the `scores` folder beside the
            predictions folder, PRED/sequences/08/scores).
The JSON holds every metric of the task (panoptic and instance: both tables' metrics; AP is
NaN for --task panoptic without --pred-scores). With --plots DIR (--task semantic), also
DIR/iou.png, the per-class IoU chart, and DIR/confusion.png, the confusion matrix.

Every class id in both directories must be listed in the label config: an unknown one (a wrong
--label-config, a corrupt file) stops the tool before anything is written, with one line
    error: FILE: class id 999 (12 points) is not in LABEL_CONFIG
naming every unknown id of the first such file (the api would count those points as unlabeled).
--task panoptic on semantic-only predictions (no instance id in any prediction file) prints
    note: PRED_LABELS: no prediction file holds an instance id; things are scored as one segment per class per scan
on stderr: each thing class's predicted points of a scan are then one segment, as the api scores them.
"""

import argparse
import json
import sys
from pathlib import Path

from voxseg.cli import exit_on_interrupt, main_guard

with exit_on_interrupt():
    from voxseg import atomic
    from voxseg.data.labels import LabelConfig
    from voxseg.errors import VoxsegError
    from voxseg.evaluation import (
        evaluate_directories,
        evaluate_panoptic_directories,
        format_instance_table,
        format_panoptic_table,
        format_table,
    )

DEFAULT_LABELS = Path(__file__).resolve().parents[1] / "configs" / "labels" / "semantic-kitti.yaml"


@main_guard
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt-labels", required=True, help="directory of ground-truth .label files")
    parser.add_argument("--pred-labels", required=True, help="directory of predicted .label files")
    parser.add_argument("--label-config", default=str(DEFAULT_LABELS), help="class mapping (default: SemanticKITTI's)")
    parser.add_argument("--task", choices=("semantic", "panoptic", "instance"), default="semantic",
                        help="metrics to print (default: semantic)")
    parser.add_argument("--pred-scores", help="directory of per-scan instance confidences (.txt) for AP "
                        "(--task instance default: PRED_LABELS/../scores)")
    parser.add_argument("--min-points", type=int, default=50,
                        help="PQ: smaller unmatched segments are neither FP nor FN (default: 50, the api's)")
    parser.add_argument("--min-region-size", type=int, default=100,
                        help="AP: smaller instances are left out (default: 100, ScanNet's)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--plots", help="--task semantic: a folder for iou.png and confusion.png")
    args = parser.parse_args()
    if args.plots and args.task != "semantic":
        raise VoxsegError("--plots draws the semantic task's charts; run it with --task semantic")
    labels = LabelConfig.load(args.label_config)
    if args.task == "semantic":
        result = evaluate_directories(args.gt_labels, args.pred_labels, labels)
        print(format_table(result))
        if args.plots:
            from voxseg.evaluation.render import plot_confusion, plot_iou

            Path(args.plots).mkdir(parents=True, exist_ok=True)
            plot_iou(Path(args.plots) / "iou.png", result, title=args.pred_labels)
            plot_confusion(Path(args.plots) / "confusion.png", result, title=args.pred_labels)
    else:
        scores = args.pred_scores
        if scores is None and args.task == "instance":
            scores = Path(args.pred_labels).parent / "scores"
        result = evaluate_panoptic_directories(args.gt_labels, args.pred_labels, labels, scores_dir=scores,
                                               min_points=args.min_points, min_region_size=args.min_region_size)
        if args.task == "panoptic" and result["pred_instances"] == 0:
            print(f"note: {args.pred_labels}: no prediction file holds an instance id; things are scored as one "
                  "segment per class per scan", file=sys.stderr)
        print((format_panoptic_table if args.task == "panoptic" else format_instance_table)(result))
    atomic.write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
