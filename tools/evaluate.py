#!/usr/bin/env python3
"""Score SemanticKITTI-format predictions against ground truth, as semantic-kitti-api does.

    python tools/evaluate.py --gt-labels DATA/sequences/08/labels \
        --pred-labels PRED/sequences/08/predictions --out metrics.json

Both directories hold .label files (raw class ids in the lower 16 bits) matched by name.
Prints a per-class IoU table; writes JSON with miou, accuracy, iou_per_class and more.
"""

import argparse
import json
from pathlib import Path

from voxseg import atomic
from voxseg.cli import main_guard
from voxseg.data.labels import LabelConfig
from voxseg.evaluation import evaluate_directories, format_table

DEFAULT_LABELS = Path(__file__).resolve().parents[1] / "configs" / "labels" / "semantic-kitti.yaml"


@main_guard
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt-labels", required=True, help="directory of ground-truth .label files")
    parser.add_argument("--pred-labels", required=True, help="directory of predicted .label files")
    parser.add_argument("--label-config", default=str(DEFAULT_LABELS), help="class mapping (default: SemanticKITTI's)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
    result = evaluate_directories(args.gt_labels, args.pred_labels, LabelConfig.load(args.label_config))
    print(format_table(result))
    atomic.write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
