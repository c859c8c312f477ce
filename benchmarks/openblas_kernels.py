#!/usr/bin/env python3
"""MinkowskiEngine's CPU convolutions with the OpenBLAS kernels voxseg chooses against the ones
OpenBLAS picks by itself.

    python benchmarks/openblas_kernels.py                       # a full real KITTI scan at 0.1 m
    python benchmarks/openblas_kernels.py --voxel-size 0.2 --steps 2

MinkowskiEngine's CPU convolutions multiply through the system OpenBLAS, which picks its kernels
by CPU model when it loads; a release older than the CPU falls back to its generic SSE3 kernels.
voxseg.sparse sets OPENBLAS_CORETYPE from the CPU's vector instructions before MinkowskiEngine
loads it (voxseg.sparse.openblas_kernels; a value the user set is kept). Both sides run the same
work, MinkUNet14A training steps of voxseg's Segmentor on one scan (benchmarks/backbone.py's
voxseg step: forward, per-point cross-entropy, backward, AdamW update, one CPU thread), each in a
fresh process of this script:

  voxseg    imports voxseg first, as every voxseg tool does: OpenBLAS loads with the kernels
            voxseg chooses;
  openblas  OPENBLAS_CORETYPE removed from its environment and MinkowskiEngine imported before
            anything of voxseg: OpenBLAS loads with the kernels it picks itself.

Runs alternate (voxseg, openblas, openblas, voxseg, ...), --repeats of each; each does --warmup
untimed steps, then --steps timed ones, and a side's time is its best run's. Printed: each side's
OpenBLAS kernels (as threadpoolctl reads them from the loaded library) and seconds per step, and
last the ratio openblas / voxseg (above 1: voxseg's choice is faster; 1.00 where both load the
same kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("voxseg", "openblas")


def measure(side: str, job: dict) -> dict:
    """In a fresh process (this script with --measure SIDE): import as `side` does, then time
    benchmarks/backbone.py's voxseg step."""
    if side == "openblas":
        import MinkowskiEngine  # noqa: F401  (before voxseg: OpenBLAS loads with its own kernels)
    sys.path.insert(0, str(ROOT))
    from benchmarks.backbone import measure_scan
    from benchmarks.common import loaded_openblas_kernels

    result = measure_scan({**job, "kind": "voxseg"})
    return {"side": side, "kernels": loaded_openblas_kernels(), "seconds": result["seconds"]}


def run_side(side: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if side == "openblas":
        env.pop("OPENBLAS_CORETYPE", None)
    job = {"scan": args.scan, "voxel_size": args.voxel_size, "warmup": args.warmup, "steps": args.steps, "threads": 1}
    done = subprocess.run([sys.executable, __file__, "--measure", side, "--job", json.dumps(job)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {side} measuring process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    default_scan = Path(os.environ.get("VOXSEG_KITTI_REAL", ROOT.parent / "shared/data/kitti_real")) / "000000.bin"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scan", default=str(default_scan), help="a KITTI .bin scan (default: %(default)s)")
    parser.add_argument("--voxel-size", type=float, default=0.1, help="voxel edge, metres (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first in every run (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side (default: %(default)s)")
    parser.add_argument("--measure", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, json.loads(args.job))))
        return
    if args.steps < 1 or args.warmup < 1 or args.repeats < 1:
        parser.error("--steps, --warmup and --repeats must be at least 1")
    if not Path(args.scan).is_file():
        parser.error(f"--scan {args.scan}: no such file (set VOXSEG_KITTI_REAL or give --scan)")
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        for side in SIDES if repeat % 2 == 0 else SIDES[::-1]:
            runs[side].append(run_side(side, args))
    print(f"{Path(args.scan).name} at {args.voxel_size} m, one CPU thread, {args.warmup} + {args.steps} steps, "
          f"best of {args.repeats} runs per side")
    best = {side: min(r["seconds"] for r in runs[side]) for side in SIDES}
    for side in SIDES:
        print(f"  {side:9s} OpenBLAS kernels {runs[side][0]['kernels']:12s} {best[side]:.2f} s/step")
    print(f"ratio (openblas / voxseg s/step): {best['openblas'] / best['voxseg']:.2f}")


if __name__ == "__main__":
    main()
