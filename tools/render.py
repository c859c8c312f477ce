#!/usr/bin/env python3
"""Render predictions as PNG pictures, headless: per scan a bird's-eye view and a perspective
view coloured by predicted class (with a legend), by predicted instance and, where ground truth
exists, by true class with an error map beside them; with --sheet one sheet of a whole sequence.

    python tools/render.py --predictions runs/pred --dataset data/synthetic --sequences 04 \\
        --label-config configs/labels/synthetic.yaml --out runs/renders [--frames 000000 000010] [--sheet]
    python tools/render.py --predictions P --input scans/ --label-config L --out runs/renders

SemanticKITTI-format data (--dataset, --sequences): the predictions are tools/infer.py's
PRED/sequences/NN/predictions/FFFFFF.label; ground truth is DATASET/sequences/NN/labels/ where it
exists. Writes OUT/NN_FFFFFF.png per scan (default: 4 scans spread over each sequence; --frames
picks them, --frames all renders every one) and with --sheet OUT/NN.png.
Loose files (--input, indoor scenes included): the predictions are tools/infer.py --input's
PRED/NAME.label; writes OUT/NAME.png per file.
"""

import argparse
from pathlib import Path

from voxseg.cli import exit_on_interrupt, main_guard

with exit_on_interrupt():
    import numpy as np
    from tqdm import tqdm

    from voxseg.data import point_files, semantic_kitti as sk
    from voxseg.data.labels import LabelConfig
    from voxseg.errors import VoxsegError
    from voxseg.evaluation.render import render_scan, render_sheet

DEFAULT_LABELS = Path(__file__).resolve().parents[1] / "configs" / "labels" / "semantic-kitti.yaml"
DEFAULT_SCANS = 4  # scans rendered per sequence without --frames


def spread(frames: list[str], count: int) -> list[str]:
    """`count` frames evenly spread over `frames`, the first and last included."""
    if len(frames) <= count:
        return frames
    return [frames[i] for i in np.linspace(0, len(frames) - 1, count).round().astype(int)]


def render_sequences(args, labels: LabelConfig, out: Path) -> int:
    jobs = []
    for sequence in map(sk.sequence_name, args.sequences):
        frames = sk.frame_ids(args.dataset, sequence)
        predictions = Path(args.predictions) / "sequences" / sequence / "predictions"
        missing = [f for f in frames if not (predictions / f"{f}.label").is_file()]
        if missing:
            raise VoxsegError(f"{predictions}: no prediction for {len(missing)} of the {len(frames)} scans of sequence "
                              f"{sequence} (first: {missing[0]}.label); run tools/infer.py first")
        chosen = frames if args.frames == ["all"] else (args.frames or spread(frames, DEFAULT_SCANS))
        unknown = sorted(set(chosen) - set(frames))
        if unknown:
            raise VoxsegError(f"{sk.sequence_dir(args.dataset, sequence)}: no scan {unknown[0]}")
        jobs.append((sequence, frames, chosen, predictions))
    count = 0
    for sequence, frames, chosen, predictions in jobs:
        sheet = []
        for frame in tqdm(frames if args.sheet else chosen, desc=f"rendering {sequence}", unit="scan"):
            coord = sk.read_scan(sk.scan_path(args.dataset, sequence, frame))[:, :3]
            semantic, instance = sk.read_label(predictions / f"{frame}.label", num_points=len(coord))
            if frame in chosen:
                gt_path = sk.label_path(args.dataset, sequence, frame)
                gt = sk.read_label(gt_path, num_points=len(coord))[0] if gt_path.is_file() else None
                render_scan(out / f"{sequence}_{frame}.png", coord, semantic, instance, labels, gt,
                            title=f"{sequence}/{frame}")
                count += 1
            if args.sheet:
                sheet.append((frame, coord, semantic))
        if args.sheet:
            render_sheet(out / f"{sequence}.png", sheet, labels, title=f"sequence {sequence}: predicted classes")
            count += 1
    return count


def render_files(args, labels: LabelConfig, out: Path) -> int:
    files = point_files.expand_inputs(args.input)
    predictions = Path(args.predictions)
    missing = [f for f in files if not (predictions / f"{f.stem}.label").is_file()]
    if missing:
        raise VoxsegError(f"{predictions}: no {missing[0].stem}.label for {missing[0]} (tools/infer.py --input "
                          "writes them)")
    for file in tqdm(files, desc="rendering", unit="file"):
        coord = point_files.read_points(file)["coord"]
        semantic, instance = sk.read_label(predictions / f"{file.stem}.label", num_points=len(coord))
        render_scan(out / f"{file.stem}.png", coord, semantic, instance, labels, title=file.name)
    return len(files)


@main_guard
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, help="tools/infer.py's output folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="SemanticKITTI-format dataset root (with --sequences)")
    source.add_argument("--input", nargs="+", help="the point-cloud files (or folders) tools/infer.py --input read")
    parser.add_argument("--sequences", nargs="+", help="--dataset: the sequences to render")
    parser.add_argument("--frames", nargs="+", help=f"--dataset: the scans to render (default: {DEFAULT_SCANS} spread "
                                                    "over each sequence; 'all' for every scan)")
    parser.add_argument("--sheet", action="store_true", help="--dataset: also one sheet per sequence")
    parser.add_argument("--label-config", default=str(DEFAULT_LABELS), help="class mapping and colours "
                                                                           "(default: SemanticKITTI's)")
    parser.add_argument("--out", required=True, help="folder for the PNG files")
    args = parser.parse_args()
    if args.dataset and not args.sequences:
        raise VoxsegError("--dataset needs --sequences")
    labels = LabelConfig.load(args.label_config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    count = render_sequences(args, labels, out) if args.dataset else render_files(args, labels, out)
    print(f"wrote {count} PNG file(s) under {out}")


if __name__ == "__main__":
    main()
