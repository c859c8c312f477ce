#!/usr/bin/env python3
"""Predict every point of a sequence with a checkpoint; write SemanticKITTI .label files.

    python tools/infer.py --checkpoint runs/x/checkpoints/best.pt --dataset data/synthetic \
        --sequences 04 --out runs/x/predictions

Writes OUT/sequences/NN/predictions/FFFFFF.label (raw class ids in the lower 16 bits), the layout
semantic-kitti-api's evaluate_semantics.py and tools/evaluate.py read. Needs no labels.
"""

import argparse

import numpy as np
from tqdm import tqdm

from voxseg.cli import main_guard
from voxseg.data import semantic_kitti as sk
from voxseg.engine import checkpoint
from voxseg.engine.finetune import pick_device
from voxseg.registry import DATASETS, MODELS


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

    from voxseg.engine.inference import predict

    written = 0
    for name, pred, sample in tqdm(predict(model, dataset, device), total=len(dataset), desc="infer", unit="scan"):
        sequence, frame = name.split("/")
        raw = np.zeros(len(sample["point_index"]), dtype=np.int64)
        raw[sample["point_index"]] = labels.train_to_raw(pred)
        sk.write_label(sk.sequence_dir(args.out, sequence, must_exist=False) / "predictions" / f"{frame}.label", raw)
        written += 1
    print(f"wrote {written} prediction files under {args.out}")


if __name__ == "__main__":
    main()
