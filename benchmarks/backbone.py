#!/usr/bin/env python3
"""MinkUNet14A training step on a full real KITTI scan: seconds per step and peak memory.

    python benchmarks/backbone.py [--scan ../shared/data/kitti_real/000000.bin] [--steps 3]

One step = voxelize (ME TensorField) + forward + per-point cross-entropy + backward + AdamW
update, for the whole ~124k-point HDL-64E sweep, at 0.1 m and 0.05 m voxels, on this machine's
CPU (or the GPU when there is one), each voxel size in a fresh process. Memory: resident-set
growth over the steps (model, optimizer state, activations) on CPU, torch's peak allocation on
CUDA. The last line compares the two voxel sizes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import voxseg.models  # noqa: E402,F401
from benchmarks.common import PeakRSS  # noqa: E402
from voxseg import sparse  # noqa: E402
from voxseg.data import semantic_kitti as sk  # noqa: E402
from voxseg.registry import MODELS  # noqa: E402


def measure(scan: str, voxel_size: float, steps: int, threads: int) -> tuple[float, float, int]:
    """Seconds per step, peak memory (GB) and voxel count. Runs in a fresh process per voxel size
    so that memory one size freed does not hide the next one's peak."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        sparse.set_threads(threads)
    points = torch.from_numpy(sk.read_scan(scan))
    torch.manual_seed(0)
    model = MODELS.build({"type": "Segmentor",
                          "backbone": {"type": "MinkUNet14A", "in_channels": 1, "voxel_size": voxel_size},
                          "heads": {"semantic": {"type": "SemanticHead", "num_classes": 19}},
                          "losses": {"ce": {"type": "CrossEntropyLoss", "head": "semantic"}}}).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = {"coord": points[:, :3], "feat": points[:, 3:], "batch": torch.zeros(len(points), dtype=torch.long),
             "segment": torch.randint(0, 19, (len(points),))}
    batch = {k: v.to(device) for k, v in batch.items()}
    voxels = len(torch.unique(torch.floor(points[:, :3] / voxel_size), dim=0))

    def step():
        optimizer.zero_grad()
        model(batch)["loss"].backward()
        optimizer.step()

    model.train()
    with PeakRSS() as memory:  # model, optimizer state and activations of the steps
        step()  # warm-up: allocator, ME kernel maps
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else memory.grown_gb
    return seconds, peak, voxels


def main() -> None:
    default_scan = Path(os.environ.get("VOXSEG_KITTI_REAL", ROOT.parent / "shared/data/kitti_real")) / "000000.bin"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scan", default=str(default_scan), help="a KITTI .bin scan (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per voxel size (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (voxseg's CPU default: 1)")
    args = parser.parse_args()
    points = sk.read_scan(args.scan)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"MinkUNet14A + semantic head, one training step on {args.scan} ({len(points)} points), "
          f"{device}{'' if device.type == 'cuda' else f', {args.threads} thread(s)'}")
    print(f"{'voxel':>7} {'voxels':>8} {'s/step':>8} {'peak GB':>8}")
    seconds = {}
    context = multiprocessing.get_context("spawn")
    for voxel_size in (0.1, 0.05):
        with context.Pool(1) as pool:
            seconds[voxel_size], peak, voxels = pool.apply(measure, (args.scan, voxel_size, args.steps, args.threads))
        print(f"{voxel_size:6.2f}m {voxels:8d} {seconds[voxel_size]:8.2f} {peak:8.2f}", flush=True)
    print(f"0.05 m costs {seconds[0.05] / seconds[0.1]:.1f}x the time per step of 0.1 m")


if __name__ == "__main__":
    main()
