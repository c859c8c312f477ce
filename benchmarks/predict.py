#!/usr/bin/env python3
"""Prediction throughput and memory: voxseg's Predictor against a bare MinkowskiEngine MinkUNet14A.

    python benchmarks/predict.py                        # on CPU: 0.1 m voxels, the folder's scans once, 1 thread
    python benchmarks/predict.py --voxel-size 0.05 --scans 50   # on a GPU (its defaults)
    python benchmarks/predict.py --scans 3 --repeats 1 --big-points 500000   # a quick check

Options: --scan-dir DIR (default $VOXSEG_KITTI_REAL, else ../shared/data/kitti_real/: its .bin
files), --scans N (timed predictions per run: 50 on CUDA; on CPU as many as the folder holds),
--warmup (1), --voxel-size (0.05 m on CUDA, 0.1 m on CPU), --big-points (2,000,000), --repeats
(runs per side and measurement, 2), --threads (CPU: 1).

What is compared. The same network, with the same weights, predicts the same points in two ways:

  voxseg  the public Python API: voxseg.engine.predictor.Predictor(checkpoint, device).predict(
          points) on an (N, 4) x y z intensity array, returning a Prediction (raw SemanticKITTI
          class ids per point). The checkpoint is a Segmentor built from
          configs/finetune/semantic_kitti_minkunet14a.yaml (MinkUNet14A, SemanticHead, 19
          classes, the intensity feature) at --voxel-size, written in voxseg's checkpoint
          format to a temporary folder. Its weights are random (seeded): the speed and memory
          of a prediction do not depend on their values, so no trained model is needed.
  bare    BareMinkUNet14A of benchmarks/backbone.py (MinkowskiEngine's examples written out)
          in eval mode under torch.no_grad(), given voxseg's weights (bare_state_dict maps the
          names; the head's Linear becomes the 1x1 `final` convolution): the least work any
          predictor must do. The points (a numpy array) become tensors, the coordinates are
          scaled by the voxel size, ME.TensorField (unweighted-average quantisation) ->
          sparse() -> forward -> slice(field) back to the points -> argmax -> a numpy array of
          class ids. No mapping to raw ids, no logits leave the device.

The script prints on how many points of the first scan the two agree (the same weights: all,
up to float rounding on near-ties), which checks the weight mapping.

Measured, each side in its own freshly spawned process per run (memory peaks stay separate,
nothing is cached across runs), runs alternating (voxseg, bare, bare, voxseg, ...):

  scans/s  the real scans of the --scan-dir folder, in turn, --warmup untimed predictions
           then --scans timed ones; the clock is read after each (after a CUDA synchronize;
           both sides' results are on the CPU by then). Time per scan = the timed predictions'
           wall time over their count; a side's figure is its best run's.
  big      one cloud of --big-points points: the folder's real scans in turn, every copy
           jittered by N(0, 0.02 m) per coordinate (seeded), the last copy cut short
           (big_cloud). So it is a denser scan of the same scene, as a 128-beam sensor or a few
           aggregated sweeps give, not a wider one: its voxels (printed) grow far less than its
           points. Each run warms up on one real scan, then predicts the cloud once, timed.
           Peak memory: on CPU the growth of the measuring process's resident set during that
           prediction (sampled every 5 ms, benchmarks.common.PeakRSS); on CUDA torch's peak
           allocation during it (weights and the input included). A side's figure is its best
           time and its largest peak.

On CPU both sides use --threads threads (torch's and MinkowskiEngine's OpenMP: OMP_NUM_THREADS is
set for the measuring processes and voxseg passes the count to its fields); on CUDA the count is
left as it is unless given.

Printed: the device and CPU threads, the scans and their points, the agreement, per side the
scans/s and milliseconds per scan and the big cloud's seconds and peak GB with three significant
digits, voxseg / bare for each; then the big cloud's memory ratio and, last,

    ratio = voxseg time per scan / bare time per scan

1.00 means no overhead, above 1 voxseg is slower.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.backbone import (  # noqa: E402
    LABEL_CONFIG,
    NUM_CLASSES,
    RECIPE,
    SEED,
    BareMinkUNet14A,
    alternate,
    bare_field,
    best,
    check_threads,
    describe_device,
    parameter_count,
    pick_device,
    setup,
    sig3,
    sync,
    timed_seconds,
    voxel_count,
)
from benchmarks.common import PeakRSS  # noqa: E402
from voxseg import __version__  # noqa: E402
from voxseg.data import semantic_kitti as sk  # noqa: E402
from voxseg.data.labels import LabelConfig  # noqa: E402
from voxseg.engine import checkpoint  # noqa: E402
from voxseg.sparse import ME  # noqa: E402

BIG_POINTS = 2_000_000
JITTER = 0.02  # metres, per coordinate, of every copy in the big cloud


# ------------------------------------------------------------------ inputs and weights
def big_cloud(clouds: list[np.ndarray], points: int, seed: int = SEED, jitter: float = JITTER) -> np.ndarray:
    """(points, 4) float32: `clouds` in turn, each copy's x y z jittered by N(0, jitter) (its
    intensity kept), concatenated and cut to exactly `points` rows. Deterministic in `seed`."""
    if not clouds or not any(len(c) for c in clouds):
        raise ValueError("big_cloud needs at least one non-empty cloud")
    rng = np.random.default_rng(seed)
    parts, total, i = [], 0, 0
    while total < points:
        copy = np.array(clouds[i % len(clouds)][: points - total], dtype=np.float32)
        copy[:, :3] += rng.normal(0.0, jitter, (len(copy), 3)).astype(np.float32)
        parts.append(copy)
        total, i = total + len(copy), i + 1
    return np.concatenate(parts) if parts else np.zeros((0, 4), np.float32)


def bare_name(name: str) -> str:
    """The BareMinkUNet14A name of a voxseg Segmentor (MinkUNet14A + SemanticHead) tensor name."""
    parts = name.split(".")
    if parts[0] == "heads":  # heads.semantic.classifier.{weight,bias}
        return f"final.{'kernel' if parts[-1] == 'weight' else 'bias'}"
    assert parts[0] == "backbone", name
    part, rest = parts[1], parts[2:]
    if part == "stem":  # stem.0 conv, stem.1 norm
        return ".".join([("conv0p1s1", "bn0")[int(rest[0])], *rest[1:]])
    stage = int(rest[0])
    if part in ("down", "up"):  # {down,up}.i.0 conv, .1 norm
        conv = (f"conv{stage + 1}p{2 ** stage}s2" if part == "down" else f"convtr{stage + 4}p{16 >> stage}s2")
        norm = f"bn{stage + 1}" if part == "down" else f"bntr{stage + 4}"
        return ".".join([(conv, norm)[int(rest[1])], *rest[2:]])
    block = stage + 1 if part == "encoder" else stage + 5  # {encoder,decoder}.i.<layer>...
    return ".".join([f"block{block}", *rest[1:]])


def bare_state_dict(voxseg_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """voxseg's Segmentor weights as BareMinkUNet14A's: renamed (bare_name); the head's Linear
    (weight (K, C), bias (K,)) as the 1x1 convolution `final` (kernel (C, K), bias (1, K))."""
    state = {}
    for name, tensor in voxseg_state.items():
        if name == "heads.semantic.classifier.weight":
            tensor = tensor.t().contiguous()
        elif name == "heads.semantic.classifier.bias":
            tensor = tensor.reshape(1, -1)
        state[bare_name(name)] = tensor
    return state


def write_checkpoint(path: Path, voxel_size: float) -> int:
    """A voxseg checkpoint of the recipe's Segmentor at `voxel_size` with seeded random weights,
    as Predictor loads it; returns its parameter count."""
    from voxseg.engine import finetune
    from voxseg.registry import MODELS

    cfg = finetune.resolve(str(RECIPE), [f"model.backbone.voxel_size={voxel_size}",
                                         f"model.heads.semantic.num_classes={NUM_CLASSES}",
                                         f"data.label_config={LABEL_CONFIG}"])
    torch.manual_seed(SEED)
    model = MODELS.build(cfg["model"])
    torch.save({"voxseg_version": __version__, "format": checkpoint.FORMAT, "config": cfg,
                "model": model.state_dict()}, path)
    return parameter_count(model)


# ------------------------------------------------------------------------ measuring
def predictor(job: dict, device: torch.device):
    """The side's predict function: points (N, 4) -> class ids (N,) as a numpy array."""
    if job["kind"] == "voxseg":
        from voxseg.engine.predictor import Predictor

        model = Predictor(job["checkpoint"], device=str(device))
        return (lambda points: model.predict(points).semantic), parameter_count(model.model)
    net = BareMinkUNet14A(1, NUM_CLASSES)
    net.load_state_dict(bare_state_dict(checkpoint.load(job["checkpoint"])["model"]))
    net.to(device).eval()
    voxel_size = job["voxel_size"]

    @torch.no_grad()
    def predict(points: np.ndarray) -> np.ndarray:
        points = torch.from_numpy(points)
        coords = ME.utils.batched_coordinates([points[:, :3] / voxel_size], dtype=torch.float32, device=device)
        field = bare_field(coords, points[:, 3:].to(device), device)
        return net(field.sparse()).slice(field).F.argmax(dim=1).cpu().numpy()

    return predict, parameter_count(net)


def measure_scans(job: dict) -> dict:
    """`warmup` untimed, then `count` timed predictions of the real scans in turn (the first of the
    folder first), in this process; with the first prediction's class ids."""
    device = setup(job)
    clouds = [sk.read_scan(s) for s in job["scans"]]
    predict, params = predictor(job, device)
    clock, first = [], None
    for i in range(job["warmup"] + job["count"]):
        labels = predict(clouds[i % len(clouds)])
        sync(device)
        clock.append(time.perf_counter())
        first = labels if first is None else first
    return {"seconds": timed_seconds(clock, job["warmup"], job["count"]), "first": first, "params": params,
            "threads": torch.get_num_threads()}


def measure_big(job: dict) -> dict:
    """One warm-up prediction of a real scan, then one timed prediction of the big cloud, in this process."""
    device = setup(job)
    clouds = [sk.read_scan(s) for s in job["scans"]]
    cloud = big_cloud(clouds, job["points"])
    predict, _ = predictor(job, device)
    predict(clouds[0])
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as memory:
        start = time.perf_counter()
        labels = predict(cloud)
        sync(device)
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else memory.grown_gb
    assert len(labels) == len(cloud)
    return {"seconds": seconds, "peak_gb": peak, "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------- output
def main() -> None:
    default_scans = Path(os.environ.get("VOXSEG_KITTI_REAL", ROOT.parent / "shared/data/kitti_real"))
    cuda = pick_device().type == "cuda"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scan-dir", default=str(default_scans), metavar="DIR",
                        help="a folder of KITTI .bin scans (default: %(default)s)")
    parser.add_argument("--scans", type=int, default=None, metavar="N",
                        help="timed predictions per run, the folder's scans in turn (default: 50 on CUDA; on CPU "
                             "as many as the folder holds)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed predictions first (default: %(default)s)")
    parser.add_argument("--voxel-size", type=float, default=0.05 if cuda else 0.1, metavar="M",
                        help="voxel edge in metres (default here: %(default)s; 0.05 on CUDA, 0.1 on CPU)")
    parser.add_argument("--big-points", type=int, default=BIG_POINTS, metavar="N",
                        help="points of the big cloud (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side per measurement (default: 2)")
    parser.add_argument("--threads", type=int, default=None if cuda else 1,
                        help="CPU threads of torch and MinkowskiEngine (default: 1 on CPU, left as it is on CUDA)")
    args = parser.parse_args()
    if min(args.scans or 1, args.warmup, args.repeats, args.big_points, args.threads or 1) < 1:
        parser.error("--scans, --warmup, --repeats, --big-points and --threads must be at least 1")
    if not args.voxel_size > 0:
        parser.error("--voxel-size must be positive")
    scans = sorted(Path(args.scan_dir).glob("*.bin"))
    if not scans:
        parser.error(f"{args.scan_dir}: no .bin scans (set --scan-dir or $VOXSEG_KITTI_REAL)")
    args.scans = args.scans or (50 if cuda else len(scans))
    if args.threads:  # inherited by the spawned measuring processes: ME reads it when imported
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    clouds = [sk.read_scan(s) for s in scans]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random_minkunet14a.pt"
        params = write_checkpoint(path, args.voxel_size)
        print(f"MinkUNet14A + semantic head ({NUM_CLASSES} classes, {params:,} parameters, the same seeded random "
              f"weights in both), prediction at {args.voxel_size:g} m; voxseg Predictor vs bare MinkowskiEngine")
        print(f"scans: {', '.join(s.name for s in scans)} in {args.scan_dir} "
              f"({', '.join(f'{len(c):,}' for c in clouds)} points, "
              f"{', '.join(f'{voxel_count(c[:, :3], args.voxel_size):,}' for c in clouds)} voxels)", flush=True)
        job = {"checkpoint": str(path), "scans": [str(s) for s in scans], "voxel_size": args.voxel_size,
               "threads": args.threads, "warmup": args.warmup}
        runs = alternate(measure_scans, {**job, "count": args.scans}, args.repeats)
        big_runs = alternate(measure_big, {**job, "points": args.big_points}, args.repeats)
    assert all(r["params"] == params for rs in runs.values() for r in rs)
    threads = check_threads({k: runs[k] + big_runs[k] for k in runs})
    labels = LabelConfig.load(LABEL_CONFIG)
    voxseg_first, bare_first = runs["voxseg"][0]["first"], labels.train_to_raw(runs["bare"][0]["first"])
    agree = float(np.mean(voxseg_first == bare_first))
    big_voxels = voxel_count(big_cloud(clouds, args.big_points)[:, :3], args.voxel_size)

    vs, bs = (min(r["seconds"] for r in runs[k]) for k in ("voxseg", "bare"))
    (vbs, vbm), (bbs, bbm) = best(big_runs["voxseg"]), best(big_runs["bare"])
    print(f"{describe_device(pick_device(), threads)}; {args.repeats} run(s) of each side per measurement, "
          f"alternating, each in a fresh process; best run")
    print(f"agreement: voxseg and bare predict the same class for {agree:.3%} of the {len(voxseg_first):,} points "
          f"of {scans[0].name}")
    print(f"{'':34} {'voxseg':>9} {'bare':>9} {'voxseg/bare':>12}")
    rows = [(f"scans/s ({args.scans} timed, {args.warmup} warm-up)", 1 / vs, 1 / bs),
            ("ms per scan", vs * 1e3, bs * 1e3),
            (f"{args.big_points:,}-point cloud, s", vbs, bbs),
            ("  peak memory, GB", vbm, bbm)]
    for name, v, b in rows:
        print(f"{name:34} {sig3(v):>9} {sig3(b):>9} {v / b:>12.3f}")
    print(f"big cloud: {args.big_points:,} points ({len(scans)} real scans in turn, jittered {JITTER:g} m), "
          f"{big_voxels:,} voxels")
    print(f"memory ratio (voxseg / bare peak memory, {args.big_points:,}-point cloud): {vbm / bbm:.3f}")
    print(f"ratio = voxseg time per scan / bare time per scan: {vs / bs:.3f}")


if __name__ == "__main__":
    main()
