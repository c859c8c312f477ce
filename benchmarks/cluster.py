#!/usr/bin/env python3
"""Mean-shift speed and agreement: voxseg.clustering.mean_shift against scikit-learn.

    python benchmarks/cluster.py [--sizes 1000 10000 100000] [--embeddings FILE.npy] [--repeats 2]
                                 [--threads N]

Both cluster the same embeddings with a flat kernel of bandwidth 0.6 and bin seeding (sklearn:
MeanShift(bandwidth=0.6, bin_seeding=True)): synthetic 5-D blobs of each size, and the real
(N, D) embeddings of --embeddings (a .npy float array, taken as float32 as the ASIS head does).
Printed per input: the clusters each finds, the adjusted Rand index between the two labellings,
seconds (best of --repeats, wall clock, this machine's CPU) for voxseg with torch's default
threads (or --threads) and for sklearn with n_jobs=1, with its default n_jobs=None (one job
unless a joblib backend is active) and with n_jobs=-1 (every core), and voxseg's speed ratio
against the fastest sklearn. The last line is that ratio at the largest synthetic size. The
default run takes about 2 minutes on 2 cores, mostly sklearn at 1e5 points (~10 s a fit, 3
variants, 2 repeats). The load average is printed too: on a CPU that other processes keep busy,
torch's threads wait on each other (see voxseg.clustering.mean_shift), and --threads 1 shows
the method's own speed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MeanShift
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voxseg.clustering import mean_shift  # noqa: E402

BANDWIDTH = 0.6
SKLEARN_JOBS = {"1 job": 1, "default": None, "all cores": -1}  # n_jobs


def blobs(n: int, seed: int = 0, dims: int = 5) -> np.ndarray:
    """n points around 20-200 instance centres (more for more points), like a trained ASIS head's
    embeddings. Its DiscriminativeLoss (delta_v 0.5, delta_d 1.5, L1) pulls embeddings within
    0.5 of their instance mean and pushes means 3 apart in L1, >= 1.34 in L2: so centres at
    least 1.5 apart (L2), 2-3 to the nearest typically, and sigma 0.15 per coordinate (0.6 from
    the mean in L1 on average: a head not quite converged). Instance sizes vary as cars and
    pedestrians do (lognormal)."""
    rng = np.random.default_rng(seed)
    count = min(200, max(20, round(20 * math.sqrt(n / 1000))))
    side = 2.5 * count ** (1 / dims)  # box in which `count` centres lie ~2.5 apart
    centres: list[np.ndarray] = []
    while len(centres) < count:
        centre = rng.uniform(0, side, dims)
        if all(np.linalg.norm(centre - other) >= 1.5 for other in centres):
            centres.append(centre)
    sizes = rng.lognormal(0.0, 1.0, count)
    instance = rng.choice(count, n, p=sizes / sizes.sum())
    return (np.array(centres)[instance] + 0.15 * rng.standard_normal((n, dims))).astype(np.float32)


def best(run, repeats: int):
    """Fewest seconds over `repeats` runs, and the last result."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return min(seconds), result


def compare(name: str, x: np.ndarray, repeats: int) -> tuple[float, float]:
    """Print one row; returns the speed ratio against the fastest sklearn and the ARI."""
    points = torch.from_numpy(x)
    ours_s, (labels, modes) = best(lambda: mean_shift(points, BANDWIDTH), repeats)
    theirs = {}
    for column, jobs in SKLEARN_JOBS.items():
        reference = MeanShift(bandwidth=BANDWIDTH, bin_seeding=True, n_jobs=jobs)
        theirs[column], fit = best(partial(reference.fit, x), repeats)
    ari = adjusted_rand_score(fit.labels_, labels.numpy())
    ratio = min(theirs.values()) / ours_s
    print(f"{name:<18} {len(x):>7} {x.shape[1]:>3} {len(modes):>7} {len(fit.cluster_centers_):>7} {ari:>7.4f} "
          f"{ours_s:>9.3f} " + " ".join(f"{theirs[c]:>11.3f}" for c in SKLEARN_JOBS) + f" {ratio:>7.1f}x", flush=True)
    return ratio, ari


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000],
                        help="synthetic inputs, points each (default: %(default)s)")
    parser.add_argument("--embeddings", type=Path, help="real embeddings: an (N, D) float .npy array")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per method and input; the best counts")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} at start; bandwidth {BANDWIDTH}, bin seeding")
    print("clusters: found by voxseg / sklearn; seconds: voxseg, sklearn with n_jobs 1, None, -1; speedup: "
          "against the fastest sklearn")
    print(f"{'input':<18} {'points':>7} {'dim':>3} {'vox K':>7} {'sk K':>7} {'ARI':>7} {'voxseg s':>9} "
          + " ".join(f"{'sk ' + c:>11}" for c in SKLEARN_JOBS) + f" {'speedup':>8}")
    results = {n: compare("blobs", blobs(n), args.repeats) for n in args.sizes}
    if args.embeddings:
        embeddings = np.load(args.embeddings).astype(np.float32)
        if embeddings.ndim != 2:
            raise SystemExit(f"{args.embeddings}: expected an (N, D) array, got shape {embeddings.shape}")
        compare(args.embeddings.name[:18], embeddings, args.repeats)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    largest = max(args.sizes)
    ratio, ari = results[largest]
    print(f"speedup at {largest} points: {ratio:.1f}x (ARI {ari:.3f})")


if __name__ == "__main__":
    main()
