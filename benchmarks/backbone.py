#!/usr/bin/env python3
"""MinkUNet14A training speed and memory: voxseg against a bare MinkowskiEngine MinkUNet14A.

    python benchmarks/backbone.py                   # one full real scan per step, 0.1 m and 0.05 m voxels
    python benchmarks/backbone.py --batch 8         # scans/s through voxseg's training loop, data loading included
    python benchmarks/backbone.py --batch 2 --steps 1 --voxel-sizes 0.1   # a quick check on CPU

Options: --scan FILE (default $VOXSEG_KITTI_REAL/000000.bin, else ../shared/data/kitti_real/),
--voxel-sizes, --steps and --warmup (per run; 20 and 3 on CUDA, 3 and 1 on CPU), --repeats
(runs per configuration, 2), --threads (CPU: 1), --workers (--batch: 4 on CUDA, 1 on CPU).

What is compared. The same network is trained on the same input in two ways:

  voxseg  the registered Segmentor: MinkUNet14A backbone (voxseg.models.backbones.minkunet),
          SemanticHead with 19 classes, CrossEntropyLoss;
  bare    MinkUNet14A written out in this file the way MinkowskiEngine's examples/minkunet.py
          and examples/resnet.py write it (ME.MinkowskiConvolution, MinkowskiBatchNorm,
          MinkowskiReLU, a BasicBlock, one flat forward, a 1x1 `final` convolution to the
          classes), its voxel output sliced back to the points through the TensorField.
          The script asserts that both networks have the same number of parameters.

Default mode. One step on one full real KITTI scan (~124k points): voxelize (an ME.TensorField
with coordinates (batch, x/v, y/v, z/v), the intensity as feature, unweighted-average
quantisation) + forward + per-point cross-entropy on random labels + backward + AdamW update.
Both sides build the same field from the same tensors every step: voxseg inside its backbone
from the batch dict (coord, feat, batch), the bare loop from coordinates it scaled once.

--batch B. Batches of B scans through voxseg's whole training loop. The real scans of the
--scan folder are repeated (symlinks) to fill a temporary SemanticKITTI-format folder, with
random labels, and voxseg trains on it with finetune.run, the function behind
tools/finetune.py, on configs/finetune/semantic_kitti_minkunet14a.yaml with overrides that make
its work the bare loop's: no augmentation, no gradient clipping, the intensity feature, one
epoch (so the DataLoader does not restart within the measurement), one validation scan at the
end (not timed). So a step is SemanticKITTI dataset -> DataLoader (--workers processes,
voxseg's collate, pinned memory on CUDA) -> Trainer.train_step -> its standard hooks
(TensorBoard, validation, checkpoint; progress bar off). A hook added through `train.hooks`
reads the clock after every step. The bare loop reads the same scan and label files in its
own process (no workers: on CPU voxseg thus has one more busy core), stacks them with
ME.utils.batched_coordinates and trains, taking the scans in the order voxseg's EpochSampler
draws, so both train on the same batches (asserted: the same points per step). A bare H100
measurement for orientation: ~29 scans/s at 0.05 m, batch 8.

Fairness. Every run is a freshly spawned process (memory peaks stay separate, nothing is
cached across runs). Each configuration (voxel size x {voxseg, bare}) runs --repeats times,
alternating (voxseg, bare, bare, voxseg, ...). Every run does --warmup untimed steps (allocator,
ME kernel maps, DataLoader start), then --steps timed ones; the clock is read after each step
(after a CUDA synchronize), a run's time per step is the timed steps' wall time over their
count, and a configuration's is its best run's. On CPU both sides use --threads threads: torch's
and MinkowskiEngine's OpenMP (OMP_NUM_THREADS is set for the measuring processes, and voxseg
passes the count to its fields); on CUDA the count is left as it is unless given.

Printed: the device, CPU threads, steps and runs, the voxels (per scan, or per batch averaged
over the timed steps), milliseconds per step with three significant digits (and scans/s with
--batch), each side's peak memory (CPU: growth of the measuring process's resident set, sampled
every 5 ms, up to the last training step, DataLoader workers not counted; CUDA: torch's peak
allocation), and voxseg / bare per voxel size. The last two lines are voxseg's memory ratio and
its overhead ratio at the smallest voxel size:

    memory ratio = voxseg peak memory / bare peak memory                     (target: at most 1.10)
    ratio = voxseg time per step / bare time per step   (with --batch: bare scans/s / voxseg scans/s)

1.00 means no overhead, above 1 voxseg is slower; the target is at most 1.05. The time ratio is
the LAST line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import voxseg.models  # noqa: E402,F401
from benchmarks.common import PeakRSS  # noqa: E402
from voxseg import sparse  # noqa: E402  (imports MinkowskiEngine with its CPU-only warning silenced)
from voxseg.contracts import Hook  # noqa: E402
from voxseg.data import semantic_kitti as sk  # noqa: E402
from voxseg.data.labels import LabelConfig  # noqa: E402
from voxseg.engine.trainer import EpochSampler  # noqa: E402
from voxseg.registry import HOOKS, MODELS  # noqa: E402

import MinkowskiEngine as ME  # noqa: E402  isort: skip

RECIPE = ROOT / "configs/finetune/semantic_kitti_minkunet14a.yaml"
LABEL_CONFIG = ROOT / "configs/labels/semantic-kitti.yaml"
NUM_CLASSES = 19
SEED = 0
MEMORY_TARGET = 1.10  # voxseg / bare peak memory
LR, WEIGHT_DECAY = 1e-3, 1e-4
VOXSEG_MODEL = {"type": "Segmentor",
                "backbone": {"type": "MinkUNet14A", "in_channels": 1, "voxel_size": 0.1},
                "heads": {"semantic": {"type": "SemanticHead", "num_classes": NUM_CLASSES}},
                "losses": {"ce": {"type": "CrossEntropyLoss", "head": "semantic"}}}


# ------------------------------------------------------------------ the bare reference
class BareBasicBlock(nn.Module):
    """The residual block of ME's examples: two 3x3x3 convolutions with batch norm, ReLU after
    the first and after the sum with the (optionally projected) input."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None, bn_momentum=0.1, dimension=3):
        super().__init__()
        self.conv1 = ME.MinkowskiConvolution(inplanes, planes, kernel_size=3, stride=stride, dilation=dilation,
                                             dimension=dimension)
        self.norm1 = ME.MinkowskiBatchNorm(planes, momentum=bn_momentum)
        self.conv2 = ME.MinkowskiConvolution(planes, planes, kernel_size=3, stride=1, dilation=dilation,
                                             dimension=dimension)
        self.norm2 = ME.MinkowskiBatchNorm(planes, momentum=bn_momentum)
        self.relu = ME.MinkowskiReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class BareMinkUNet14A(nn.Module):
    """MinkUNet14A as in ME's examples/minkunet.py: a stride-1 5x5x5 stem, four stride-2
    stages, four transposed stride-2 stages each concatenated with the encoder output of the
    same stride, and a 1x1 convolution to the classes."""

    BLOCK = BareBasicBlock
    LAYERS = (1, 1, 1, 1, 1, 1, 1, 1)
    PLANES = (32, 64, 128, 256, 128, 128, 96, 96)
    INIT_DIM = 32

    def __init__(self, in_channels: int, out_channels: int, D: int = 3):
        super().__init__()
        self.D = D
        P, L, expansion = self.PLANES, self.LAYERS, self.BLOCK.expansion
        self.inplanes = self.INIT_DIM
        self.conv0p1s1 = ME.MinkowskiConvolution(in_channels, self.inplanes, kernel_size=5, dimension=D)
        self.bn0 = ME.MinkowskiBatchNorm(self.inplanes)

        self.conv1p1s2 = ME.MinkowskiConvolution(self.inplanes, self.inplanes, kernel_size=2, stride=2, dimension=D)
        self.bn1 = ME.MinkowskiBatchNorm(self.inplanes)
        self.block1 = self._make_layer(P[0], L[0])
        self.conv2p2s2 = ME.MinkowskiConvolution(self.inplanes, self.inplanes, kernel_size=2, stride=2, dimension=D)
        self.bn2 = ME.MinkowskiBatchNorm(self.inplanes)
        self.block2 = self._make_layer(P[1], L[1])
        self.conv3p4s2 = ME.MinkowskiConvolution(self.inplanes, self.inplanes, kernel_size=2, stride=2, dimension=D)
        self.bn3 = ME.MinkowskiBatchNorm(self.inplanes)
        self.block3 = self._make_layer(P[2], L[2])
        self.conv4p8s2 = ME.MinkowskiConvolution(self.inplanes, self.inplanes, kernel_size=2, stride=2, dimension=D)
        self.bn4 = ME.MinkowskiBatchNorm(self.inplanes)
        self.block4 = self._make_layer(P[3], L[3])

        self.convtr4p16s2 = ME.MinkowskiConvolutionTranspose(self.inplanes, P[4], kernel_size=2, stride=2, dimension=D)
        self.bntr4 = ME.MinkowskiBatchNorm(P[4])
        self.inplanes = P[4] + P[2] * expansion
        self.block5 = self._make_layer(P[4], L[4])
        self.convtr5p8s2 = ME.MinkowskiConvolutionTranspose(self.inplanes, P[5], kernel_size=2, stride=2, dimension=D)
        self.bntr5 = ME.MinkowskiBatchNorm(P[5])
        self.inplanes = P[5] + P[1] * expansion
        self.block6 = self._make_layer(P[5], L[5])
        self.convtr6p4s2 = ME.MinkowskiConvolutionTranspose(self.inplanes, P[6], kernel_size=2, stride=2, dimension=D)
        self.bntr6 = ME.MinkowskiBatchNorm(P[6])
        self.inplanes = P[6] + P[0] * expansion
        self.block7 = self._make_layer(P[6], L[6])
        self.convtr7p2s2 = ME.MinkowskiConvolutionTranspose(self.inplanes, P[7], kernel_size=2, stride=2, dimension=D)
        self.bntr7 = ME.MinkowskiBatchNorm(P[7])
        self.inplanes = P[7] + self.INIT_DIM
        self.block8 = self._make_layer(P[7], L[7])

        self.final = ME.MinkowskiConvolution(P[7] * expansion, out_channels, kernel_size=1, bias=True, dimension=D)
        self.relu = ME.MinkowskiReLU(inplace=True)

    def _make_layer(self, planes, blocks):
        downsample = None
        if self.inplanes != planes * self.BLOCK.expansion:
            downsample = nn.Sequential(
                ME.MinkowskiConvolution(self.inplanes, planes * self.BLOCK.expansion, kernel_size=1, dimension=self.D),
                ME.MinkowskiBatchNorm(planes * self.BLOCK.expansion),
            )
        layers = [self.BLOCK(self.inplanes, planes, downsample=downsample, dimension=self.D)]
        self.inplanes = planes * self.BLOCK.expansion
        layers += [self.BLOCK(self.inplanes, planes, dimension=self.D) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        out_p1 = self.relu(self.bn0(self.conv0p1s1(x)))
        out_b1p2 = self.block1(self.relu(self.bn1(self.conv1p1s2(out_p1))))
        out_b2p4 = self.block2(self.relu(self.bn2(self.conv2p2s2(out_b1p2))))
        out_b3p8 = self.block3(self.relu(self.bn3(self.conv3p4s2(out_b2p4))))
        out = self.block4(self.relu(self.bn4(self.conv4p8s2(out_b3p8))))

        out = self.relu(self.bntr4(self.convtr4p16s2(out)))
        out = self.block5(ME.cat(out, out_b3p8))
        out = self.relu(self.bntr5(self.convtr5p8s2(out)))
        out = self.block6(ME.cat(out, out_b2p4))
        out = self.relu(self.bntr6(self.convtr6p4s2(out)))
        out = self.block7(ME.cat(out, out_b1p2))
        out = self.relu(self.bntr7(self.convtr7p2s2(out)))
        out = self.block8(ME.cat(out, out_p1))
        return self.final(out)


def bare_field(coords: torch.Tensor, feats: torch.Tensor, device: torch.device) -> ME.TensorField:
    return ME.TensorField(features=feats, coordinates=coords,
                          quantization_mode=ME.SparseTensorQuantizationMode.UNWEIGHTED_AVERAGE,
                          minkowski_algorithm=ME.MinkowskiAlgorithm.SPEED_OPTIMIZED, device=device)


def bare_step(net, optimizer, criterion, coords, feats, labels, device) -> int:
    """One training step of the bare network; returns the voxel count."""
    field = bare_field(coords, feats, device)
    voxels = field.sparse()
    loss = criterion(net(voxels).slice(field).F, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return len(voxels)


# ------------------------------------------------------------------------ measuring
def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def setup(job: dict) -> torch.device:
    device = pick_device()
    if job["threads"]:
        sparse.set_threads(job["threads"])  # torch and voxseg's fields; ME's own default follows OMP_NUM_THREADS
    torch.manual_seed(SEED)
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gb(device: torch.device, memory: PeakRSS) -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else memory.grown_gb


def timed_seconds(clock: list[float], warmup: int, steps: int) -> float:
    """Mean seconds per step over the timed steps, from the clock read after every step."""
    assert len(clock) == warmup + steps, (len(clock), warmup, steps)
    return (clock[-1] - clock[warmup - 1]) / steps


def measure_scan(job: dict) -> dict:
    """One scan, `warmup` + `steps` steps of voxseg or of the bare network, in this process."""
    device = setup(job)
    points = torch.from_numpy(sk.read_scan(job["scan"]))
    labels = torch.from_numpy(np.random.default_rng(SEED).integers(0, NUM_CLASSES, len(points)))
    voxel_size = job["voxel_size"]
    if job["kind"] == "voxseg":
        config = {**VOXSEG_MODEL, "backbone": {**VOXSEG_MODEL["backbone"], "voxel_size": voxel_size}}
        model = MODELS.build(config).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        batch = {"coord": points[:, :3], "feat": points[:, 3:], "batch": torch.zeros(len(points), dtype=torch.long),
                 "segment": labels}
        batch = {k: v.to(device) for k, v in batch.items()}

        def step():
            optimizer.zero_grad()
            model(batch)["loss"].backward()
            optimizer.step()
            return None
    else:
        model = BareMinkUNet14A(1, NUM_CLASSES).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        criterion = nn.CrossEntropyLoss()
        coords = ME.utils.batched_coordinates([points[:, :3] / voxel_size], dtype=torch.float32).to(device)
        feats, target = points[:, 3:].to(device), labels.to(device)

        def step():
            return bare_step(model, optimizer, criterion, coords, feats, target, device)

    model.train()
    clock, voxels = [], None
    with PeakRSS() as memory:  # model, optimizer state and activations of the steps
        for _ in range(job["warmup"] + job["steps"]):
            voxels = step()
            sync(device)
            clock.append(time.perf_counter())
    return {"seconds": timed_seconds(clock, job["warmup"], job["steps"]), "peak_gb": peak_gb(device, memory),
            "voxels": voxels, "params": parameter_count(model), "threads": torch.get_num_threads()}


class BenchmarkClock(Hook):
    """A trainer hook, added through `train.hooks`, that reads the clock after every step, notes
    the points of the step's batch, and after the last step the peak memory so far (so that the
    final validation and checkpoint, which the bare loop does not do, are not counted).
    Registered in the measuring process only."""

    last = None  # the instance the run built
    memory: PeakRSS | None = None  # the measuring process's, set before the run

    def __init__(self):
        self.clock, self.points, self.params, self.peak_gb = [], [], None, None
        type(self).last = self

    def before_train(self, trainer) -> None:
        self.params = parameter_count(trainer.model)

    def after_step(self, trainer, outputs: dict) -> None:
        sync(trainer.device)
        self.clock.append(time.perf_counter())
        self.points.append(len(outputs["heads"]["semantic"]["logits"]))
        if trainer.step == trainer.max_steps:
            self.peak_gb = peak_gb(trainer.device, self.memory)


def measure_batch(job: dict) -> dict:
    """`warmup` + `steps` steps of batches of `batch` scans from the folder `root`, through
    voxseg's finetune.run or the bare loop, in this process."""
    device = setup(job)
    root, batch, voxel_size = Path(job["root"]), job["batch"], job["voxel_size"]
    total = job["warmup"] + job["steps"]
    if job["kind"] == "voxseg":
        from voxseg.engine import finetune

        if "BenchmarkClock" not in HOOKS:
            HOOKS.register()(BenchmarkClock)
        # imported before the memory is measured, like everything the bare loop uses
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (TensorBoardHook's)

        with tempfile.TemporaryDirectory() as out:
            overrides = [
                f"data.root={root}", f"data.label_config={LABEL_CONFIG}",
                "data.train.sequences=[0]", "data.val.sequences=[1]",
                "data.train.features=[intensity]", "data.val.features=[intensity]", "data.train.transforms=[]",
                f"model.backbone.voxel_size={voxel_size}", f"model.heads.semantic.num_classes={NUM_CLASSES}",
                f"train.max_steps={total}", f"train.batch_size={batch}", f"train.num_workers={job['workers']}",
                f"train.seed={SEED}", f"train.lr={LR}", f"train.weight_decay={WEIGHT_DECAY}", "train.optimizer=adamw",
                "train.grad_clip=0", "train.label_fraction=1.0", "train.val_every=0", "train.checkpoint_every=0",
                "train.progress=false", "train.check_data=sizes", f"train.threads={job['threads'] or 0}",
                f"train.device={device}", "train.hooks=[{type: BenchmarkClock}]", f"output_dir={out}/run",
            ]
            cfg = finetune.resolve(str(RECIPE), overrides)
            with PeakRSS() as BenchmarkClock.memory, contextlib.redirect_stdout(io.StringIO()):
                finetune.run(cfg)
        clock, points, params = BenchmarkClock.last.clock, BenchmarkClock.last.points, BenchmarkClock.last.params
        peak = BenchmarkClock.last.peak_gb
    else:
        scans, label_files, lut = job["scans"], job["labels"], job["lut"]
        with PeakRSS() as memory:
            model = BareMinkUNet14A(1, NUM_CLASSES).to(device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
            criterion = nn.CrossEntropyLoss()
            model.train()
            clock, points = [], []
            for step in range(total):
                indices = job["order"][step * batch:(step + 1) * batch]
                scan = [np.fromfile(scans[i], dtype=np.float32).reshape(-1, 4) for i in indices]
                labels = np.concatenate([lut[np.fromfile(label_files[i], dtype=np.uint32) & 0xFFFF] for i in indices])
                coords = ME.utils.batched_coordinates([torch.from_numpy(s[:, :3]) / voxel_size for s in scan],
                                                      dtype=torch.float32)
                feats = torch.from_numpy(np.concatenate([s[:, 3:] for s in scan]))
                bare_step(model, optimizer, criterion, coords.to(device), feats.to(device),
                          torch.from_numpy(labels).to(device), device)
                sync(device)
                clock.append(time.perf_counter())
                points.append(len(labels))
        params, peak = parameter_count(model), peak_gb(device, memory)
    return {"seconds": timed_seconds(clock, job["warmup"], job["steps"]), "peak_gb": peak,
            "points": points, "params": params, "threads": torch.get_num_threads()}


def _child(send, function, args) -> None:
    try:
        send.send((True, function(*args)))
    except BaseException:  # noqa: BLE001  (reported by the parent)
        send.send((False, traceback.format_exc()))


def in_fresh_process(function, *args):
    """function(*args) in a freshly spawned process. Not a multiprocessing.Pool: its workers are
    daemons, which may not start DataLoader workers."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, function, args))
    process.start()
    send.close()
    try:
        ok, value = receive.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"the measuring process died (exit code {process.exitcode})") from None
    process.join()
    if not ok:
        raise RuntimeError(f"the measuring process failed:\n{value}")
    return value


def alternate(function, job: dict, repeats: int) -> dict[str, list[dict]]:
    """`repeats` runs each of voxseg and bare, alternating: voxseg, bare, bare, voxseg, ..."""
    runs: dict[str, list[dict]] = {"voxseg": [], "bare": []}
    for repeat in range(repeats):
        for kind in ("voxseg", "bare") if repeat % 2 == 0 else ("bare", "voxseg"):
            runs[kind].append(in_fresh_process(function, {**job, "kind": kind}))
    return runs


def best(runs: list[dict]) -> tuple[float, float]:
    """A configuration's seconds per step (its best run) and peak memory (its largest)."""
    return min(r["seconds"] for r in runs), max(r["peak_gb"] for r in runs)


# --------------------------------------------------------------------------- output
def sig3(value: float) -> str:
    """`value` with three significant digits, without an exponent: 0.0712 -> 0.0712, 71.23 ->
    71.2, 1234 -> 1230."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = 2 - math.floor(math.log10(abs(value)))
    return f"{round(value, decimals):.{max(decimals, 0)}f}"


def voxel_count(xyz: np.ndarray, voxel_size: float) -> int:
    """Occupied voxels of one scan: floor of the coordinates in voxel units, as ME quantises."""
    return len(torch.unique(torch.floor(torch.from_numpy(xyz) / voxel_size), dim=0))


def describe_device(device: torch.device, threads: int) -> str:
    name = f"cuda ({torch.cuda.get_device_name()})" if device.type == "cuda" else "cpu"
    return f"device {name}, {threads} CPU thread(s)"


def check_parameters() -> int:
    voxseg_count = parameter_count(MODELS.build(VOXSEG_MODEL))
    bare_count = parameter_count(BareMinkUNet14A(1, NUM_CLASSES))
    assert voxseg_count == bare_count, f"voxseg has {voxseg_count} parameters, the bare MinkUNet14A {bare_count}"
    return voxseg_count


def check_threads(runs: dict[str, list[dict]]) -> int:
    threads = {r["threads"] for rs in runs.values() for r in rs}
    assert len(threads) == 1, f"the runs used different thread counts: {sorted(threads)}"
    return threads.pop()


def print_memory_ratio(memory: dict[float, float], voxel_size: float, where: str) -> None:
    print(f"voxseg memory ratio (voxseg / bare ME peak memory) at {voxel_size:g} m{where}: "
          f"{memory[voxel_size]:.3f} (target <= {MEMORY_TARGET:.2f})")


def scan_mode(args, device: torch.device, params: int) -> None:
    points = sk.read_scan(args.scan)
    print(f"MinkUNet14A + semantic head ({NUM_CLASSES} classes, {params:,} parameters in both), one training step "
          f"on {args.scan} ({len(points):,} points); voxseg vs bare MinkowskiEngine")
    rows, ratios, memory, seconds = [], {}, {}, {}
    for voxel_size in args.voxel_sizes:
        job = {"scan": args.scan, "voxel_size": voxel_size, "warmup": args.warmup, "steps": args.steps,
               "threads": args.threads}
        runs = alternate(measure_scan, job, args.repeats)
        voxels = voxel_count(points[:, :3], voxel_size)
        assert all(r["voxels"] == voxels for r in runs["bare"]), "the bare field quantised to another voxel count"
        assert all(r["params"] == params for rs in runs.values() for r in rs)
        threads = check_threads(runs)
        (vs, vm), (bs, bm) = best(runs["voxseg"]), best(runs["bare"])
        ratios[voxel_size], memory[voxel_size], seconds[voxel_size] = vs / bs, vm / bm, vs
        rows.append(f"{voxel_size:6.3g}m {voxels:>9,} {sig3(vs * 1e3):>10} {sig3(bs * 1e3):>9} "
                    f"{vm:>10.2f} {bm:>8.2f} {vs / bs:>12.3f}")
        if len(rows) == 1:
            print(f"{describe_device(device, threads)}; {args.warmup} warm-up + {args.steps} timed steps per run, "
                  f"{args.repeats} run(s) each, alternating; best run")
            print(f"{'voxel':>7} {'voxels':>9} {'voxseg ms':>10} {'bare ms':>9} {'voxseg GB':>10} {'bare GB':>8} "
                  f"{'voxseg/bare':>12}")
        print(rows[-1], flush=True)
    sizes = sorted(seconds)
    if len(sizes) > 1:
        print(f"voxseg: {sizes[0]:g} m costs {seconds[sizes[0]] / seconds[sizes[-1]]:.1f}x the time per step of "
              f"{sizes[-1]:g} m")
    finest = sizes[0]
    print_memory_ratio(memory, finest, "")
    print(f"voxseg overhead ratio (voxseg / bare ME time per step) at {finest:g} m: {ratios[finest]:.3f} "
          f"(target <= 1.05)")


def make_dataset(root: Path, scans: list[Path], frames: int) -> tuple[list[str], list[str], np.ndarray]:
    """A SemanticKITTI-format folder: sequence 00 with `frames` scans (the real scans repeated,
    as symlinks) and random labels (one random file per real scan, every train id equally
    likely), sequence 01 with one scan to validate on. Returns the frames' scan and label paths
    and the raw -> train id table."""
    labels = LabelConfig.load(LABEL_CONFIG)
    rng = np.random.default_rng(SEED)
    random_labels = []
    for i, scan in enumerate(scans):
        path = root / "random_labels" / f"{i}.label"
        path.parent.mkdir(parents=True, exist_ok=True)
        sk.write_label(path, labels.train_to_raw(rng.integers(0, labels.num_classes, sk.scan_size(scan))))
        random_labels.append(path)
    scan_paths, label_paths = [], []
    for sequence, count in (("00", frames), ("01", 1)):
        for k in range(count):
            scan = sk.scan_path(root, sequence, f"{k:06d}")
            label = sk.label_path(root, sequence, f"{k:06d}")
            scan.parent.mkdir(parents=True, exist_ok=True)
            label.parent.mkdir(parents=True, exist_ok=True)
            scan.symlink_to(Path(scans[k % len(scans)]).resolve())
            label.symlink_to(random_labels[k % len(scans)].resolve())
            if sequence == "00":
                scan_paths.append(str(scan))
                label_paths.append(str(label))
    lut = labels.raw_to_train(np.arange(0x10000))
    return scan_paths, label_paths, lut


def batch_mode(args, device: torch.device, params: int) -> None:
    scans = sorted(Path(args.scan).parent.glob("*.bin"))
    total = args.warmup + args.steps
    frames = args.batch * total  # one epoch: no DataLoader restart inside the measurement
    order = list(EpochSampler(frames, SEED))  # the order voxseg's trainer draws (seed, epoch 0)
    workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 1)
    clouds = [sk.read_scan(s) for s in scans]
    print(f"MinkUNet14A + semantic head ({NUM_CLASSES} classes, {params:,} parameters in both), batches of "
          f"{args.batch} scans from {len(scans)} real scans ({', '.join(s.name for s in scans)} in "
          f"{Path(args.scan).parent}; {', '.join(f'{len(c):,}' for c in clouds)} points), random labels")
    print(f"voxseg: finetune.run ({RECIPE.relative_to(ROOT)}, no augmentation or clipping), {workers} DataLoader "
          f"worker(s); bare ME: reads and stacks the same batches in its main process")
    rows, ratios, memory = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        scan_paths, label_paths, lut = make_dataset(Path(tmp), scans, frames)
        per_frame_points = [len(clouds[k % len(scans)]) for k in range(frames)]
        expected = [sum(per_frame_points[i] for i in order[s * args.batch:(s + 1) * args.batch]) for s in range(total)]
        for voxel_size in args.voxel_sizes:
            job = {"root": tmp, "scans": scan_paths, "labels": label_paths, "lut": lut, "order": order,
                   "batch": args.batch, "voxel_size": voxel_size, "warmup": args.warmup, "steps": args.steps,
                   "threads": args.threads, "workers": workers}
            runs = alternate(measure_batch, job, args.repeats)
            for kind, rs in runs.items():
                for r in rs:
                    assert r["points"] == expected, f"{kind} trained on other batches: {r['points']} != {expected}"
            assert all(r["params"] == params for rs in runs.values() for r in rs)
            threads = check_threads(runs)
            per_scan = [voxel_count(c[:, :3], voxel_size) for c in clouds]
            timed = order[args.warmup * args.batch:total * args.batch]
            voxels = sum(per_scan[i % len(scans)] for i in timed) / args.steps
            (vs, vm), (bs, bm) = best(runs["voxseg"]), best(runs["bare"])
            ratios[voxel_size], memory[voxel_size] = vs / bs, vm / bm
            rows.append(f"{voxel_size:6.3g}m {round(voxels):>13,} {sig3(args.batch / vs):>15} "
                        f"{sig3(args.batch / bs):>13} {sig3(vs * 1e3):>10} {sig3(bs * 1e3):>9} {vm:>10.2f} "
                        f"{bm:>8.2f} {vs / bs:>12.3f}")
            if len(rows) == 1:
                print(f"{describe_device(device, threads)}; {args.warmup} warm-up + {args.steps} timed steps per run, "
                      f"{args.repeats} run(s) each, alternating; best run")
                print(f"{'voxel':>7} {'voxels/batch':>13} {'voxseg scans/s':>15} {'bare scans/s':>13} "
                      f"{'voxseg ms':>10} {'bare ms':>9} {'voxseg GB':>10} {'bare GB':>8} {'voxseg/bare':>12}")
            print(rows[-1], flush=True)
    finest = min(ratios)
    print_memory_ratio(memory, finest, f", batch {args.batch}")
    print(f"voxseg overhead ratio (voxseg / bare ME time per step, = bare / voxseg scans/s) at {finest:g} m, "
          f"batch {args.batch}: {ratios[finest]:.3f} (target <= 1.05)")


def main() -> None:
    default_scan = Path(os.environ.get("VOXSEG_KITTI_REAL", ROOT.parent / "shared/data/kitti_real")) / "000000.bin"
    device = pick_device()
    cuda = device.type == "cuda"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scan", default=str(default_scan),
                        help="a KITTI .bin scan; with --batch, every .bin scan of its folder (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=0, metavar="B",
                        help="scans per batch through voxseg's training loop and data loading (default: one scan, "
                             "no loader)")
    parser.add_argument("--voxel-sizes", type=float, nargs="+", default=[0.1, 0.05], metavar="M",
                        help="voxel edges in metres (default: %(default)s); the last line is for the smallest")
    parser.add_argument("--steps", type=int, default=20 if cuda else 3,
                        help="timed steps per run (default here: %(default)s; 20 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=3 if cuda else 1,
                        help="untimed steps first in every run (default here: %(default)s; 3 on CUDA, 1 on CPU)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each of voxseg and bare (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None if cuda else 1,
                        help="CPU threads of torch and MinkowskiEngine (default: 1 on CPU, voxseg's CPU default; "
                             "left as it is on CUDA)")
    parser.add_argument("--workers", type=int, default=None,
                        help="voxseg's DataLoader workers with --batch (default: 4 on CUDA, the recipe's; 1 on CPU)")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1 or args.repeats < 1 or args.batch < 0 or (args.threads or 1) < 1:
        parser.error("--steps, --warmup, --repeats and --threads must be at least 1, --batch at least 0")
    if args.threads:  # inherited by the spawned measuring processes: ME reads it when imported
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    params = check_parameters()
    if args.batch:
        batch_mode(args, device, params)
    else:
        scan_mode(args, device, params)


if __name__ == "__main__":
    main()
