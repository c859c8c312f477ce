#!/usr/bin/env python3
"""Predict every point of a sequence (or indoor scene) with a checkpoint; write the benchmark's files.
Or predict loose point-cloud files: your own scans.

    python tools/infer.py --checkpoint runs/x/checkpoints/best.pt --input scans/ one.pcd two.ply --out P [--ply]
    python tools/infer.py --checkpoint runs/x/checkpoints/best.pt --dataset data/synthetic \
        --sequences 04 --out runs/x/predictions
    python tools/infer.py --checkpoint runs/s3dis/checkpoints/best.pt --dataset data/s3dis --areas 5 --out P
    python tools/infer.py --checkpoint runs/scannet/checkpoints/best.pt --dataset data/scannet \
        --split-file scannetv2_test.txt --scans-dir scans_test --out P

A model trained on S3DIS or ScanNet writes the ScanNet benchmark's formats instead:
OUT/semantic/NAME.txt (one raw class id per point; NYU40 ids for ScanNet) and, with an instance
head, OUT/instance/NAME.txt with the masks under OUT/instance/NAME/ (voxseg.data.scene_predictions).
Without --areas / --scenes / --split-file it predicts the checkpoint's validation split.

Loose files (--input: files, or folders of them): KITTI .bin, .pcd (ROS exports, with or without
intensity), .ply, .npy (N, 3|4) and .npz (`coord`, optional `intensity`, `color`; see
voxseg.data.point_files). Writes OUT/NAME.label per input (NAME: the file name without its
suffix) in SemanticKITTI's panoptic format, OUT/NAME.scores.txt for a model with an instance head
("instance_id confidence" lines), and with --ply OUT/NAME.ply coloured by class (the label
config's colours). A model that reads intensity refuses a file without it, unless
--fill-intensity VALUE gives every point that value. Every input is read and checked before
anything is written. voxseg.engine.predictor.Predictor does the same from Python.

SemanticKITTI-format data:

Writes OUT/sequences/NN/predictions/FFFFFF.label: the raw class id in the lower 16 bits and,
for a model with an instance head, the instance id in the upper 16 (1.. per scan, 0 for stuff
and unclustered points): the panoptic format semantic-kitti-api's evaluate_semantics.py,
evaluate_panoptic.py and tools/evaluate.py read. An instance model also writes
OUT/sequences/NN/scores/FFFFFF.txt, one "instance_id confidence" line per instance, which
instance AP ranks by (tools/evaluate.py --task instance). Needs no labels.
Predictions are written to a staging folder under OUT and moved into place per sequence (per
scene indoors) only when every scan succeeded, so a failure leaves earlier predictions as they were.
"""

import argparse
from pathlib import Path

from tqdm import tqdm

from voxseg.cli import exit_on_interrupt, main_guard

with exit_on_interrupt():
    from voxseg import sparse
    from voxseg.data import point_files, semantic_kitti as sk
    from voxseg.engine import checkpoint
    from voxseg.engine.device import pick_device
    from voxseg.engine.inference import predict
    from voxseg.engine.prediction_files import has_instance_head, write_scenes, write_sequences
    from voxseg.engine.predictor import Predictor
    from voxseg.errors import VoxsegError
    from voxseg.registry import DATASETS, MODELS


INDOOR = ("S3DIS", "ScanNet")  # dataset types whose predictions are written per scene


def indoor_selection(args, val: dict) -> dict:
    """The dataset settings that pick the scenes: the flags given, else the validation split's."""
    if val["type"] == "S3DIS":
        if args.scenes or args.split_file or args.scans_dir:
            raise VoxsegError("--scenes, --split-file and --scans-dir are for ScanNet; S3DIS takes --areas")
        return {"areas": args.areas} if args.areas else {}
    if args.areas:
        raise VoxsegError("--areas is for S3DIS; ScanNet takes --scenes or --split-file")
    picked = {"scans_dir": args.scans_dir} if args.scans_dir else {}
    if args.scenes or args.split_file:
        picked.update(scenes=args.scenes, split_file=args.split_file)
    return picked


def predict_files(args) -> None:
    """--input: each file's predictions as OUT/NAME.label (+ .scores.txt, + .ply); every input is
    read and checked before the first file is written."""
    files = point_files.expand_inputs(args.input)
    fill = {"intensity": args.fill_intensity} if args.fill_intensity is not None else None
    predictor = Predictor(args.checkpoint, args.device, args.label_config, fill)
    for file in tqdm(files, desc="checking", unit="file", leave=False):  # readable, with what the model reads
        predictor.sample(point_files.read_points(file), str(file))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for file in tqdm(files, desc="predicting", unit="file"):
        cloud = point_files.read_points(file)
        result = predictor.predict(cloud, str(file))
        sk.write_label(out / f"{file.stem}.label", result.semantic, result.instance)
        if predictor.instances:
            sk.write_instance_scores(out / f"{file.stem}.scores.txt", result.scores)
        if args.ply:
            colours = predictor.labels.rgb(result.semantic)
            point_files.write_colored_ply(out / f"{file.stem}.ply", cloud["coord"], colours)
    print(f"wrote {len(files)} prediction files under {out}")


@main_guard
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="dataset root (SemanticKITTI-format, S3DIS or ScanNet)")
    source.add_argument("--input", nargs="+", help="point-cloud files or folders of them (.bin .pcd .ply .npy .npz)")
    parser.add_argument("--sequences", nargs="+", help="SemanticKITTI format: the sequences to predict")
    parser.add_argument("--areas", nargs="+", help="S3DIS: the areas to predict (default: the validation areas)")
    parser.add_argument("--scenes", nargs="+", help="ScanNet: the scenes to predict")
    parser.add_argument("--split-file", help="ScanNet: a scene list, e.g. scannetv2_test.txt (relative to --dataset)")
    parser.add_argument("--scans-dir", help="ScanNet: the scene folder under --dataset (scans_test for the test split)")
    parser.add_argument("--out", required=True, help="prediction root (OUT/sequences/NN/predictions; indoors "
                                                     "OUT/semantic and OUT/instance)")
    parser.add_argument("--label-config", help="class mapping (default: the one the checkpoint was trained with)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (torch, MinkowskiEngine, BLAS); "
                                                               "default: the libraries' own (all cores)")
    parser.add_argument("--ply", action="store_true", help="--input: also write OUT/NAME.ply coloured by class")
    parser.add_argument("--fill-intensity", type=float, help="--input: the intensity of every point of a file "
                                                             "without one (default: such a file is refused)")
    args = parser.parse_args()
    if args.threads < 0:
        raise VoxsegError(f"--threads must be at least 0, got {args.threads}")
    if args.threads:
        sparse.set_threads(args.threads)
    if args.input:
        predict_files(args)
        return

    import voxseg.data.builtin  # noqa: F401  (registers datasets and transforms)
    import voxseg.models  # noqa: F401

    device = pick_device(args.device, option="--device")
    state = checkpoint.load_predictor(args.checkpoint)
    cfg = state["config"]
    indoor = cfg["data"]["val"]["type"] in INDOOR
    if indoor:
        if args.sequences:
            raise VoxsegError(f"{args.checkpoint}: a {cfg['data']['val']['type']} model; --sequences is for "
                              "SemanticKITTI-format data (use --areas, --scenes or --split-file)")
        dataset_cfg = {**cfg["data"]["val"], "transforms": [], "labels": False,
                       **indoor_selection(args, cfg["data"]["val"])}
    else:
        if not args.sequences:
            raise VoxsegError("--sequences is required for SemanticKITTI-format data")
        for sequence in args.sequences:  # every scan's size checked before any prediction is written
            for frame in sk.frame_ids(args.dataset, sequence):
                sk.scan_size(sk.scan_path(args.dataset, sequence, frame))
        # every scan of the sequences asked for: the validation's frame_stride sampled them for training
        val_cfg = {k: v for k, v in cfg["data"]["val"].items() if k != "frame_stride"}
        dataset_cfg = {**val_cfg, "transforms": [], "labels": False, "sequences": args.sequences}
    model = MODELS.build(cfg["model"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    label_config = args.label_config or cfg["data"]["label_config"]
    dataset = DATASETS.build(dataset_cfg, root=args.dataset, label_config=label_config)
    labels = dataset.label_config
    if model.num_classes != labels.num_classes:
        raise VoxsegError(f"{labels.path}: defines {labels.num_classes} evaluated classes but {args.checkpoint} "
                          f"predicts {model.num_classes}; pass the label config it was trained with")

    write = write_scenes if indoor else write_sequences
    write(predict(model, dataset, device), dataset, Path(args.out), has_instance_head(model))
    print(f"wrote {len(dataset)} scenes' predictions under {args.out}" if indoor
          else f"wrote {len(dataset)} prediction files under {args.out}")


if __name__ == "__main__":
    main()
