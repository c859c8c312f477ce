#!/usr/bin/env python3
"""Offline preprocessing for ISCC: stack scans into windows, remove ground, group with HDBSCAN,
link group ids across windows; one int32 group id per point and scan.

    python tools/preprocess.py --dataset data/synthetic --sequences 00 01
    python tools/preprocess.py --dataset D --sequences 00 --out /scratch/groups --workers 2
    python tools/preprocess.py --dataset D --sequences 00 --shard 0/2     # machine 1 of 2
    python tools/preprocess.py --dataset D --sequences 00 --shard 1/2     # machine 2 of 2
    python tools/preprocess.py --dataset D --sequences 00 --estimate-poses  # no poses.txt: KISS-ICP
    python tools/preprocess.py ... --render pngs/     # bird's-eye view of a scan per sequence
    python tools/preprocess.py ... grouping.voxel_size=0.15    # dotted config overrides

Writes OUT/sequences/NN/groups/FFFFFF.group (int32 per point, -1 = ground/noise), the
window-consistent ids in windows/WWWWW.npz (voxseg.data.groups) and manifest.json; OUT is the
dataset root unless --out is given. --estimate-poses writes the poses it estimates to
OUT/sequences/NN/poses.txt and calib.txt, where reruns and other shards find them; nothing is
written under the dataset root unless it is OUT, so a read-only dataset works with --out.
Reruns skip finished scans; shards share OUT (a shared filesystem) and the run that completes a
sequence's last window writes it.
"""

import argparse
from pathlib import Path

from voxseg.cli import exit_on_interrupt, main_guard, parse_args_with_overrides

with exit_on_interrupt():
    from voxseg.data import semantic_kitti as sk
    from voxseg.errors import VoxsegError

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "preprocess" / "default.yaml"


def parse_shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    if not sep or not k.isdigit() or not n.isdigit() or not 0 <= int(k) < int(n):
        raise VoxsegError(f"--shard: expected K/N with 0 <= K < N, such as 0/2, got {text!r}")
    return int(k), int(n)


@main_guard
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="SemanticKITTI-format root (ROOT/sequences/NN/velodyne)")
    parser.add_argument("--sequences", nargs="+", required=True, help="sequence names, e.g. 00 01")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="preprocessing YAML (default: %(default)s)")
    parser.add_argument("--out", help="output root (default: the dataset root; give one for a read-only dataset)")
    parser.add_argument("--workers", type=int, default=1, help="processes on this machine")
    parser.add_argument("--shard", default="0/1", help="K/N: this machine's share of the windows")
    parser.add_argument("--estimate-poses", action="store_true",
                        help="sequences without poses.txt: estimate poses with KISS-ICP and write them to "
                             "OUT/sequences/NN/poses.txt")
    parser.add_argument("--render", metavar="DIR", help="write a bird's-eye-view PNG of one scan per sequence")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    args = parse_args_with_overrides(parser)
    if args.workers < 1:
        raise VoxsegError(f"--workers must be at least 1, got {args.workers}")
    shard = parse_shard(args.shard)

    from preprocessing import pipeline

    cfg = pipeline.resolve(args.config, args.overrides)
    sequences = [sk.sequence_name(s) for s in args.sequences]
    summary = pipeline.run(args.dataset, sequences, cfg, out=args.out, workers=args.workers, shard=shard,
                           estimate_poses=args.estimate_poses, progress=not args.no_progress)
    for line in summary.lines():
        print(line)
    if args.render:
        from preprocessing.render import render_bev

        out = Path(args.out or args.dataset)
        for name, info in summary.sequences.items():
            if "complete" not in info["status"]:
                continue
            frames = sk.frame_ids(args.dataset, name)
            frame = frames[len(frames) // 2]
            points = sk.read_scan(sk.scan_path(args.dataset, name, frame))
            groups = pipeline.read_groups(out / "sequences" / name / "groups" / f"{frame}.group", len(points))
            png = Path(args.render) / f"{name}_{frame}.png"
            render_bev(points, groups, png, title=f"sequence {name} scan {frame}")
            print(f"rendered {png}")


if __name__ == "__main__":
    main()
