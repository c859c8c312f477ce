#!/usr/bin/env python3
"""Predict every point of a sequence with a checkpoint; write SemanticKITTI .label files.

    python tools/infer.py --checkpoint runs/x/checkpoints/best.pt --dataset data/synthetic \
        --sequences 04 --out runs/x/predictions

Writes OUT/sequences/NN/predictions/FFFFFF.label: the raw class id in the lower 16 bits and,
for a model with an instance head, the instance id in the upper 16 (1.. per scan, 0 for stuff
and unclustered points): the panoptic format semantic-kitti-api's evaluate_semantics.py,
evaluate_panoptic.py and tools/evaluate.py read. An instance model also writes
OUT/sequences/NN/scores/FFFFFF.txt, one "instance_id confidence" line per instance, which
instance AP ranks by (tools/evaluate.py --task instance). Needs no labels.
Predictions are written to a staging folder under OUT and moved into place per sequence only
when every scan succeeded, so a failure leaves earlier predictions as they were.
"""

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from voxseg.cli import main_guard
from voxseg.data import semantic_kitti as sk
from voxseg.engine import checkpoint
from voxseg.engine.device import pick_device
from voxseg.errors import VoxsegError
from voxseg.registry import DATASETS, MODELS


FOLDERS = ("predictions", "scores")


def publish(staging: Path, out: Path, sequence: str) -> None:
    """Swap the staged folders of a sequence in for the old ones (an old scores folder goes even
    when the new model writes none, so scores never outlive their predictions)."""
    for folder in FOLDERS:
        target = sk.sequence_dir(out, sequence, must_exist=False) / folder
        target.parent.mkdir(parents=True, exist_ok=True)
        old = target.with_name(f".{folder}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        staged = sk.sequence_dir(staging, sequence, must_exist=False) / folder
        if staged.exists():
            os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)


def panoptic(pred: dict, num_points: int, point_index: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray, dict]:
    """(raw semantic, instance ids 1.. or 0, {instance id: confidence}) for every point of the file."""
    semantic = np.zeros(num_points, dtype=np.int64)
    instance = np.zeros(num_points, dtype=np.int64)
    if not num_points or "segment" not in pred:
        return semantic, instance, {}
    semantic[point_index] = labels.train_to_raw(pred["segment"])
    if "instance" not in pred:
        return semantic, instance, {}
    instance[point_index] = pred["instance"] + 1
    ids, first = np.unique(pred["instance"], return_index=True)
    keep = ids >= 0
    scores = {int(i) + 1: float(pred["instance_score"][f]) for i, f in zip(ids[keep], first[keep])}
    return semantic, instance, scores


@main_guard
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True, help="SemanticKITTI-format root")
    parser.add_argument("--sequences", nargs="+", required=True)
    parser.add_argument("--out", required=True, help="prediction root (OUT/sequences/NN/predictions)")
    parser.add_argument("--label-config", help="class mapping (default: the one the checkpoint was trained with)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import voxseg.data.dataset  # noqa: F401  (registers datasets and transforms)
    import voxseg.models  # noqa: F401

    for sequence in args.sequences:  # every scan's size checked before any prediction is written
        for frame in sk.frame_ids(args.dataset, sequence):
            sk.scan_size(sk.scan_path(args.dataset, sequence, frame))
    state = checkpoint.load(args.checkpoint)
    cfg = state["config"]
    model = MODELS.build(cfg["model"])
    model.load_state_dict(state["model"])
    device = pick_device(args.device)
    model.to(device).eval()
    dataset_cfg = {**cfg["data"]["val"], "transforms": [], "labels": False, "sequences": args.sequences}
    label_config = args.label_config or cfg["data"]["label_config"]
    dataset = DATASETS.build(dataset_cfg, root=args.dataset, label_config=label_config)
    labels = dataset.label_config
    if model.num_classes != labels.num_classes:
        raise VoxsegError(f"{labels.path}: defines {labels.num_classes} evaluated classes but {args.checkpoint} "
                          f"predicts {model.num_classes}; pass the label config it was trained with")

    from voxseg.engine.inference import predict

    instance_model = any(hasattr(head, "thing_classes") for head in model.heads.values())

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    except OSError as exc:
        raise VoxsegError(f"{out}: cannot write the output folder ({exc.strerror or exc})") from None
    try:
        for name, pred, sample in tqdm(predict(model, dataset, device), total=len(dataset), desc="infer", unit="scan"):
            sequence, frame = name.split("/")
            semantic, instance, scores = panoptic(pred, len(sample["point_index"]), sample["point_index"], labels)
            folder = sk.sequence_dir(staging, sequence, must_exist=False)
            sk.write_label(folder / "predictions" / f"{frame}.label", semantic, instance)
            if instance_model:
                sk.write_instance_scores(folder / "scores" / f"{frame}.txt", scores)
        for sequence in sorted({sequence for sequence, _ in dataset.frames}):
            publish(staging, out, sequence)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {len(dataset)} prediction files under {args.out}")


if __name__ == "__main__":
    main()
