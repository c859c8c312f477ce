#!/usr/bin/env python3
"""Preprocessing speed, memory and quality: voxseg's grouping against TARL's reference.

    python benchmarks/preprocess.py [--dataset data/synthetic] [--sequence 00] [--windows 2]

On the same 12-scan windows of a synthetic sequence (with true labels), both pipelines run the
same ground removal (configs/preprocess/default.yaml) and stacking; they differ in grouping:
voxseg's VoxelHDBSCAN (default.yaml) against HDBSCAN on every non-ground point
(tarl_reference.yaml). Printed for both: seconds per window, peak memory (resident set growth
over the run, sampled every 5 ms), purity and coverage of the groups against the true
instances, the share of non-ground points grouped, ground precision and recall. Then the same
on the three real KITTI scans (poses from KISS-ICP), when found; and, for the whole pipeline on
the synthetic sequence, how often an object keeps its group id from scan to scan. The last
line is the speed ratio on the synthetic windows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import PeakRSS  # noqa: E402
from preprocessing import odometry, pipeline, quality, stacking  # noqa: E402
from preprocessing.ground import GROUND, ground_scores  # noqa: E402
from preprocessing.grouping import GROUPING  # noqa: E402
from voxseg.data import semantic_kitti as sk  # noqa: E402

METHODS = {"voxseg": ROOT / "configs/preprocess/default.yaml",
           "reference": ROOT / "configs/preprocess/tarl_reference.yaml"}


def run_windows(cfg: dict, windows: list[tuple[list[np.ndarray], np.ndarray]]
                ) -> tuple[list[np.ndarray], list[np.ndarray], float, float]:
    """Ground removal, stacking and grouping of each window, timed as the pipeline runs them
    (each scan's ground mask computed once, reused by the windows sharing the scan); returns
    labels, ground masks, seconds per window and peak memory growth (GB)."""
    ground, grouping = GROUND.build(cfg["ground"]), GROUPING.build(cfg["grouping"])
    labels, masks, cache = [], [], {}
    with PeakRSS() as memory:
        start = time.perf_counter()
        for scans, poses in windows:
            ground_masks = [cache[id(s)] if id(s) in cache else cache.setdefault(id(s), ground(s)) for s in scans]
            labels.append(pipeline.group_window(scans, ground_masks, poses, grouping))
            masks.append(np.concatenate(ground_masks))
        seconds = (time.perf_counter() - start) / len(windows)
    return labels, masks, seconds, memory.grown_gb


def synthetic(args) -> float:
    seq = sk.sequence_dir(args.dataset, args.sequence)
    poses = stacking.lidar_poses(seq / "calib.txt", seq / "poses.txt")
    chosen = stacking.windows(len(poses), 12, 4)[: args.windows]
    loaded = {}
    for i in range(chosen[0].start, chosen[-1].stop):
        scan = sk.read_scan(seq / "velodyne" / f"{i:06d}.bin")
        loaded[i] = (scan, *sk.read_label(seq / "labels" / f"{i:06d}.label", len(scan)))
    windows = [([loaded[i][0] for i in w.frames], poses[w.start:w.stop]) for w in chosen]
    truth = [(np.concatenate([loaded[i][1] for i in w.frames]), np.concatenate([loaded[i][2] for i in w.frames]))
             for w in chosen]
    points = sum(len(s) for s in windows[0][0])
    print(f"synthetic sequence {args.sequence}: {len(windows)} windows of 12 scans, {points} points in the first")
    print(f"{'method':<10} {'s/window':>9} {'peak GB':>8} {'groups':>7} {'purity':>7} {'coverage':>9} "
          f"{'grouped':>8} {'ground P':>9} {'ground R':>9}")
    seconds = {}
    for name, path in METHODS.items():
        labels, masks, seconds[name], peak = run_windows(pipeline.resolve(path), windows)
        pur = np.mean([quality.purity(lab, s, i) for lab, (s, i) in zip(labels, truth, strict=True)])
        cov = np.mean([quality.coverage(lab, s, i) for lab, (s, i) in zip(labels, truth, strict=True)])
        share = np.mean([quality.grouped(lab, m) for lab, m in zip(labels, masks, strict=True)])
        g = ground_scores(np.concatenate(masks), np.concatenate([s for s, _ in truth]))
        groups = np.mean([lab.max() + 1 for lab in labels])
        print(f"{name:<10} {seconds[name]:9.2f} {peak:8.2f} {groups:7.0f} {pur:7.3f} {cov:9.3f} {share:8.3f} "
              f"{g['precision']:9.3f} {g['recall']:9.3f}", flush=True)
    return seconds["reference"] / seconds["voxseg"]


def linking(args) -> None:
    """The whole pipeline (default.yaml) on the sequence: how often a true object keeps its main
    group id from one scan to the next, with linking and with ids that restart in every window."""
    import tempfile

    cfg = pipeline.resolve(METHODS["voxseg"])
    seq = sk.sequence_dir(args.dataset, args.sequence)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = pipeline.run(args.dataset, [args.sequence], cfg, out=out, progress=False)
        seconds = time.perf_counter() - start
        plan = pipeline.plan_sequence(Path(args.dataset), Path(out), args.sequence, cfg, False)
        home = [stacking.home_window(i, plan.windows).index for i in range(len(plan.frames))]
        local = {w: pipeline.read_window(plan, w) for w in set(home)}  # each window's own ids, unlinked
        linked, unlinked = [], []
        for i, frame in enumerate(plan.frames):
            _, instance = sk.read_label(seq / "labels" / f"{frame}.label", plan.sizes[i])
            groups = pipeline.read_groups(plan.group_file(i), plan.sizes[i])
            window = plan.windows[home[i]]
            start = plan.offsets(window)[i - window.start]
            own = local[home[i]][start:start + plan.sizes[i]]
            linked.append((groups, instance))
            unlinked.append((np.where(own >= 0, own + 100_000 * home[i], -1), instance))
    print(f"\nwhole sequence {args.sequence} through tools/preprocess.py's pipeline: {len(plan.frames)} scans, "
          f"{len(plan.windows)} windows, {summary.sequences[args.sequence]['groups']} ids, {seconds:.1f} s "
          f"({seconds / len(plan.windows):.2f} s per window, 1 worker)")
    print(f"objects keeping their main group id from scan to scan: {quality.id_stability(linked):.3f} linked, "
          f"{quality.id_stability(unlinked):.3f} without linking")


def real(directory: Path) -> None:
    scans = [sk.read_scan(p) for p in sorted(directory.glob("*.bin"))]
    poses = odometry.estimate_poses(scans)
    step = np.linalg.norm(poses[1, :3, 3])
    print(f"\nreal KITTI scans ({directory}): {len(scans)} scans stacked, {sum(map(len, scans))} points, "
          f"KISS-ICP step {step:.2f} m")
    print(f"{'method':<10} {'s/window':>9} {'peak GB':>8} {'groups':>7} {'grouped':>8} {'ground fraction':>16}")
    seconds = {}
    for name, path in METHODS.items():
        labels, masks, seconds[name], peak = run_windows(pipeline.resolve(path), [(scans, poses)])
        print(f"{name:<10} {seconds[name]:9.2f} {peak:8.2f} {labels[0].max() + 1:7d} "
              f"{quality.grouped(labels[0], masks[0]):8.3f} {masks[0].mean():16.3f}", flush=True)
    print(f"real scans speed ratio (reference / voxseg): {seconds['reference'] / seconds['voxseg']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(ROOT / "data" / "synthetic"),
                        help="synthetic dataset (tools/make_synthetic.py; default: %(default)s)")
    parser.add_argument("--sequence", default="00")
    parser.add_argument("--windows", type=int, default=3, help="12-scan windows to time (default: %(default)s)")
    parser.add_argument("--real",
                        default=os.environ.get("VOXSEG_KITTI_REAL", str(ROOT.parent / "shared/data/kitti_real")),
                        help="directory of real KITTI .bin scans (skipped when absent)")
    args = parser.parse_args()
    if not (Path(args.dataset) / "sequences").is_dir():
        from voxseg.synthetic import SyntheticSpec, generate_dataset

        print(f"generating the synthetic dataset in {args.dataset} (as tools/make_synthetic.py does)")
        generate_dataset(args.dataset, SyntheticSpec())
    ratio = synthetic(args)
    linking(args)
    if Path(args.real).is_dir() and any(Path(args.real).glob("*.bin")):
        real(Path(args.real))
    print(f"speed ratio (reference / voxseg, s per 12-scan synthetic window): {ratio:.1f}x")


if __name__ == "__main__":
    main()
