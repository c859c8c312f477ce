"""The preprocessing job: windows of stacked scans -> ground removal -> grouping -> linked ids.

Layout written under OUT (the dataset root unless --out says otherwise):

    OUT/sequences/NN/groups/FFFFFF.group   int32 per point, aligned with velodyne/FFFFFF.bin;
                                           sequence-wide group id, -1 for ground and noise
    OUT/sequences/NN/groups/manifest.json  parameters, library versions, counts, format version,
                                           the scan range of each window
    OUT/sequences/NN/groups/windows/WWWWW.npz
                                           window-consistent ids: per scan of window WWWWW, int32
                                           per point, window-local group id, -1 for ground and
                                           noise; one object has one id in all the window's scans
                                           (format: voxseg.data.groups, version 2)
    OUT/sequences/NN/groups/.windows/      the same window files while a sequence is in progress,
                                           so reruns, shards and interrupted runs only redo what
                                           is missing; moved to windows/ when the sequence completes
    OUT/sequences/NN/poses.txt, calib.txt  with `estimate_poses`, for a sequence without poses.txt:
                                           the KISS-ICP poses (preprocessing.odometry), which
                                           reruns and other shards read from here

Nothing is written under the dataset root unless it is also OUT (it may be mounted read-only).

A scan's ids come from its home window (the one it is most central in, stacking.home_window),
mapped to sequence-wide ids by linking.Linker. Work is split into windows: `workers` processes
share them (and die with the run, even a killed one), `shard=(k, n)` keeps every n-th chunk of
consecutive windows, and whichever run finds all windows of a sequence done links them, writes
the group files, publishes the window files and marks the manifest complete. Every file is
written atomically; a group file whose size does not match its scan is redone. An output of
format version 1 (group files only) is brought up to date by a rerun with the same parameters.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Annotated

import numpy as np
from tqdm import tqdm

from preprocessing import odometry, stacking
from preprocessing.ground import GROUND
from preprocessing.grouping import GROUPING, by_size
from preprocessing.linking import Linker, relabel
from voxseg import atomic, config as cfglib
from voxseg.config import Component, Range
from voxseg.data import groups as grouplib, semantic_kitti as sk
from voxseg.errors import DataFormatError, VoxsegError

CHUNK = 4  # consecutive windows per task: they share scans, read and ground-segmented once
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
VERSIONED = ("voxseg", "numpy", "hdbscan", "pypatchworkpp", "open3d-cpu", "open3d", "kiss-icp", "scikit-learn")


@dataclass
class StackingSection:
    window: int = 12  # scans per window (TARL: 12)
    stride: int = 4  # scans between window starts (TARL: 4, so windows share 8 scans)


@dataclass
class LinkingSection:
    min_iou: float = 0.3  # IoU on shared points for a group to inherit the previous window's id


@dataclass
class GroundPatchesSection:
    # metres; > 0: the ground points of a window become groups too, one per size x size cell of the
    # bird's-eye-view grid of the window's frame (BEVContrast's BEV cells, on the ground only, which
    # no HDBSCAN group covers); 0: ground stays -1, as in ISCC and TARL
    size: Annotated[float, Range(ge=0)] = 0.0
    # cells with fewer ground points (in the stacked window) stay -1, as small groups do
    min_points: Annotated[int, Range(ge=1)] = 20


@dataclass
class PreprocessConfig:
    ground: Component
    grouping: Component
    stacking: StackingSection = field(default_factory=StackingSection)
    linking: LinkingSection = field(default_factory=LinkingSection)
    ground_patches: GroundPatchesSection = field(default_factory=GroundPatchesSection)


def resolve(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict:
    import preprocessing.ground  # noqa: F401  (registers the components)
    import preprocessing.grouping  # noqa: F401

    return cfglib.validate(cfglib.load(Path(path), overrides), PreprocessConfig)


# ------------------------------------------------------------------------------ planning
@dataclass
class SequencePlan:
    name: str
    source: Path  # ROOT/sequences/NN
    target: Path  # OUT/sequences/NN/groups
    frames: list[str]
    sizes: list[int]  # points per scan
    poses: np.ndarray | None  # (N, 4, 4) LiDAR poses; None until estimated (`estimate_missing_poses`)
    windows: list[stacking.Window]

    def scan(self, i: int) -> Path:
        return self.source / "velodyne" / f"{self.frames[i]}.bin"

    def group_file(self, i: int) -> Path:
        return self.target / f"{self.frames[i]}.group"

    def cache_file(self, w: int) -> Path:
        """Where window w's ids are kept while the sequence is in progress."""
        return self.target / ".windows" / grouplib.window_name(w)

    def window_file(self, w: int) -> Path:
        """Where window w's ids are published once the sequence is complete."""
        return self.target / grouplib.WINDOWS / grouplib.window_name(w)

    def scan_done(self, i: int) -> bool:
        path = self.group_file(i)
        return path.is_file() and path.stat().st_size == 4 * self.sizes[i]

    def window_done(self, w: int) -> bool:
        return _load_window(self, w, labels=False) is not None

    def window_published(self, w: int) -> bool:
        return _valid_window(self, w, self.window_file(w))

    def offsets(self, window: stacking.Window) -> np.ndarray:
        """Where each scan's points start in the window's concatenation (and the total at the end)."""
        return np.concatenate([[0], np.cumsum(self.sizes[window.start:window.stop])])


    @property
    def output_dir(self) -> Path:
        """OUT/sequences/NN: where estimated poses go."""
        return self.target.parent


def plan_sequence(dataset: Path, out: Path, sequence: str, cfg: dict, estimate_poses: bool) -> SequencePlan:
    """Check a sequence's inputs before anything is written; errors name the file. Its poses are
    its own or those estimated into OUT by an earlier run; without either, None with
    `estimate_poses` (estimated later), else an error."""
    source = sk.sequence_dir(dataset, sequence)
    frames = sk.frame_ids(dataset, sequence)
    if not frames:
        raise DataFormatError(f"{source / 'velodyne'}: no .bin scans")
    sizes = [sk.scan_size(source / "velodyne" / f"{frame}.bin", allow_empty=False) for frame in frames]
    target = out / "sequences" / source.name / "groups"
    poses = odometry.stored_poses(source, target.parent)
    if poses is None and not estimate_poses:
        raise odometry.missing_poses(source, target.parent)
    size, stride = cfg["stacking"]["window"], cfg["stacking"]["stride"]
    return SequencePlan(source.name, source, target, frames, sizes, poses, stacking.windows(len(frames), size, stride))


def estimate_missing_poses(plans: list[SequencePlan], progress: bool = True) -> None:
    """KISS-ICP poses for the plans without poses: all estimated first (nothing is written while a
    scan may still be refused), then written to each sequence's output folder (with a copy of the
    input's calib.txt, if any) and read back, so later runs get exactly these poses."""
    estimated = {plan.name: odometry.estimate_sequence_poses(plan.source, progress)
                 for plan in plans if plan.poses is None}
    for plan in plans:
        if plan.name in estimated:
            calib = plan.source / "calib.txt"
            odometry.write_estimated_poses(plan.output_dir, estimated[plan.name],
                                           source_calib=calib if calib.exists() else None)
            plan.poses = odometry.stored_poses(plan.source, plan.output_dir)


def versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def check_manifest(plan: SequencePlan, cfg: dict) -> dict:
    """The sequence's manifest; a new one (status "running") when there is none. Refuses to mix
    outputs made with other parameters."""
    path = plan.target / "manifest.json"
    if path.is_file():
        manifest = json.loads(path.read_text())
        saved = manifest.get("config")  # a parameter added since the output was made reads its default
        if not isinstance(saved, dict) or cfglib.resolve_saved(saved, PreprocessConfig) != cfg:
            raise VoxsegError(f"{path}: these groups were made with other parameters; "
                              "choose another --out or delete that directory")
        return manifest
    manifest = {"sequence": plan.name, "dataset": str(plan.source.resolve()), "status": "running",
                "layout": "FFFFFF.group: int32 per point of velodyne/FFFFFF.bin; -1 = ground or noise",
                "windows_layout": grouplib.LAYOUT, "format_version": grouplib.FORMAT_VERSION,
                "config": cfg, "versions": versions(), "scans": len(plan.frames), "windows": len(plan.windows)}
    atomic.write_text(path, json.dumps(manifest, indent=2) + "\n")
    return manifest


# ------------------------------------------------------------------------- window work
_worker: dict = {}


def _init_worker(cfg: dict) -> None:
    _worker.update(cfg=cfg, ground=GROUND.build(cfg["ground"]), grouping=GROUPING.build(cfg["grouping"]),
                   scans=OrderedDict())


def _init_pool_worker(parent: int, cfg: dict) -> None:
    """A pool worker dies with the parent process, however that dies, and leaves Ctrl-C to it
    (the parent terminates the pool)."""
    if sys.platform == "linux":  # SIGKILL when the thread that started this worker exits
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(cfg)


def _scan_and_ground(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A scan and its ground mask, kept for the next windows that share it."""
    cache: OrderedDict = _worker["scans"]
    key = str(path)
    if key not in cache:
        points = sk.read_scan(path)
        cache[key] = (points, _worker["ground"](points))
        while len(cache) > _worker["cfg"]["stacking"]["window"] + _worker["cfg"]["stacking"]["stride"]:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


def group_window(scans: list[np.ndarray], ground: list[np.ndarray], poses: np.ndarray, grouping,
                 patch_size: float = 0.0, patch_min_points: int = 20) -> np.ndarray:
    """Local labels of every point of a window (scans in order): the non-ground points are
    stacked into the first scan's frame and grouped; noise gets -1. Ground gets -1 too, or with
    `patch_size` > 0 one label per ground patch (ground_patches) after the groups' labels."""
    points, _ = stacking.stack([scan[~mask] for scan, mask in zip(scans, ground, strict=True)], poses)
    is_ground = np.concatenate(ground)
    labels = np.full(len(is_ground), -1, dtype=np.int32)
    labels[~is_ground] = grouping(points[:, :3])
    if patch_size > 0 and is_ground.any():
        floor, _ = stacking.stack([scan[mask] for scan, mask in zip(scans, ground, strict=True)], poses)
        patches = ground_patches(floor[:, :3], patch_size, patch_min_points)
        labels[is_ground] = np.where(patches >= 0, patches + labels.max() + 1, -1)
    return labels


def ground_patches(points: np.ndarray, size: float, min_points: int) -> np.ndarray:
    """(N,) patch labels of ground points (in one frame): the size x size cell of the x-y grid each
    falls in, numbered 0..P-1 by decreasing point count (grouping.by_size); cells with fewer than
    `min_points` points get -1."""
    cells = np.floor(points[:, :2] / size).astype(np.int64)
    _, cell = np.unique(cells, axis=0, return_inverse=True)
    return by_size(cell.ravel(), min_points)


def _run_window(task: tuple[SequencePlan, int]) -> tuple[str, int]:
    """Group one window and cache its labels; returns (sequence, points in the window)."""
    plan, w = task
    window = plan.windows[w]
    loaded = [_scan_and_ground(plan.scan(i)) for i in window.frames]
    assert plan.poses is not None  # estimated before any window runs (estimate_missing_poses)
    patches = _worker["cfg"]["ground_patches"]
    labels = group_window([s for s, _ in loaded], [g for _, g in loaded], plan.poses[window.start:window.stop],
                          _worker["grouping"], patches["size"], patches["min_points"])
    offsets = plan.offsets(window)
    grouplib.write_window(plan.cache_file(w), window.start, plan.frames[window.start:window.stop],
                          [labels[offsets[k]:offsets[k + 1]] for k in range(len(window.frames))])
    return plan.name, len(labels)


def read_window(plan: SequencePlan, w: int) -> np.ndarray | None:
    """A window's cached labels, or None when missing or not matching the scans."""
    return _load_window(plan, w, labels=True)


def _valid_window(plan: SequencePlan, w: int, path: Path) -> bool:
    """Whether `path` is a readable window file for window w's scans (names and point counts)."""
    if not path.is_file():
        return False
    window = plan.windows[w]
    try:
        start, frames, counts = grouplib.read_window_index(path)
    except DataFormatError:
        return False
    return (start == window.start and frames == plan.frames[window.start:window.stop]
            and list(counts) == plan.sizes[window.start:window.stop])


def _load_window(plan: SequencePlan, w: int, labels: bool) -> np.ndarray | None:
    """Window w's labels, its scans' concatenated (or only its per-scan counts, read without
    decompressing the labels), from the published file or else the cache when one matches the
    scans; else None."""
    for path in (plan.window_file(w), plan.cache_file(w)):
        if _valid_window(plan, w, path):
            break
    else:
        return None
    window = plan.windows[w]
    counts = np.asarray(plan.sizes[window.start:window.stop], dtype=np.int64)
    if not labels:
        return counts
    try:
        return np.concatenate([grouplib.read_window_ids(path, plan.frames[i], plan.sizes[i]) for i in window.frames])
    except DataFormatError:
        return None


def publish_windows(plan: SequencePlan) -> None:
    """Move the sequence's cached window files to windows/ (each an atomic rename) and remove the
    emptied cache folder."""
    for w in range(len(plan.windows)):
        cache = plan.cache_file(w)
        if cache.is_file():
            plan.window_file(w).parent.mkdir(parents=True, exist_ok=True)
            os.replace(cache, plan.window_file(w))
    with contextlib.suppress(OSError):
        (plan.target / ".windows").rmdir()


# ------------------------------------------------------------------------------- linking
def link_and_write(plan: SequencePlan, min_iou: float) -> tuple[int, int]:
    """Link the windows' labels into sequence-wide ids; write the group files not yet done.
    Returns (scans written, number of ids)."""
    home = {i: stacking.home_window(i, plan.windows).index for i in range(len(plan.frames))}
    linker = Linker(min_iou)
    previous = None  # (window, its labels as global ids)
    written = 0
    for w, window in enumerate(plan.windows):
        cached = read_window(plan, w)
        assert cached is not None, f"window {w} of {plan.name} was checked complete before linking"
        local = cached.astype(np.int64)
        offsets = plan.offsets(window)
        if previous is None:
            ids = linker.first(local)
        else:
            prev_window, prev_global = previous
            prev_offsets = plan.offsets(prev_window)
            shared = range(max(window.start, prev_window.start), min(window.stop, prev_window.stop))
            if len(shared):
                a = slice(prev_offsets[shared.start - prev_window.start], prev_offsets[shared.stop - prev_window.start])
                b = slice(offsets[shared.start - window.start], offsets[shared.stop - window.start])
                ids = linker.follow(prev_global[a], local, local[b])
            else:
                ids = linker.first(local)
        global_labels = relabel(local, ids)
        for i in window.frames:
            if home[i] == w and not plan.scan_done(i):
                k = i - window.start
                atomic.write_bytes(plan.group_file(i), global_labels[offsets[k]:offsets[k + 1]].astype("<i4").tobytes())
                written += 1
        previous = (window, global_labels)
    return written, linker.next_id


def read_groups(path: str | os.PathLike, num_points: int | None = None) -> np.ndarray:
    """A .group file: (N,) int32 group ids."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: group file not found")
    ids = np.fromfile(path, dtype="<i4")
    if num_points is not None and len(ids) != num_points:
        raise DataFormatError(f"{path}: {len(ids)} group ids for {num_points} points")
    return ids.astype(np.int32)


# ------------------------------------------------------------------------------------ run
@dataclass
class Summary:
    sequences: dict = field(default_factory=dict)  # name -> dict of counts
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = []
        for name, s in self.sequences.items():
            out.append(f"sequence {name}: {s['status']}; {s['scans']} scans ({s['written']} written now), "
                       f"{s['windows_done']}/{s['windows']} windows, {s['points']} points, {s['groups']} group ids")
        total_points = sum(s["points"] for s in self.sequences.values())
        out.append(f"{len(self.sequences)} sequences, {sum(s['written'] for s in self.sequences.values())} group files "
                   f"written, {total_points} points grouped in windows this run, {self.seconds:.1f} s")
        return out


def run(dataset: str | os.PathLike, sequences: list[str], cfg: dict, out: str | os.PathLike | None = None,
        workers: int = 1, shard: tuple[int, int] = (0, 1), estimate_poses: bool = False,
        progress: bool = True) -> Summary:
    start = time.perf_counter()
    dataset = Path(dataset)
    out = Path(out) if out is not None else dataset
    k, n = shard
    if not (0 <= k < n):
        raise VoxsegError(f"--shard {k}/{n}: expected K/N with 0 <= K < N")
    plans = [plan_sequence(dataset, out, s, cfg, estimate_poses) for s in sequences]
    estimate_missing_poses(plans, progress)
    manifests = {plan.name: check_manifest(plan, cfg) for plan in plans}
    complete = {plan.name: all(plan.scan_done(i) for i in range(len(plan.frames)))
                and all(plan.window_published(w) for w in range(len(plan.windows))) for plan in plans}

    tasks, chunk_index = [], 0
    for plan in plans:
        for w in range(len(plan.windows)):
            mine = (chunk_index + w // CHUNK) % n == k
            if mine and not complete[plan.name] and not plan.window_done(w):
                tasks.append((plan, w))
        chunk_index += -(-len(plan.windows) // CHUNK)

    summary = Summary()
    points = {p.name: 0 for p in plans}
    bar = tqdm(total=len(tasks), desc="grouping windows", unit="window", disable=not progress or not tasks)
    if workers > 1 and len(tasks) > 1:
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(workers, len(tasks)), initializer=_init_pool_worker,
                          initargs=(os.getpid(), cfg)) as pool:
            for name, count in pool.imap_unordered(_run_window, tasks, chunksize=CHUNK // 2):
                points[name] += count
                bar.update()
    else:
        _init_worker(cfg)
        for task in tasks:
            name, count = _run_window(task)
            points[name] += count
            bar.update()
    bar.close()

    for plan in plans:
        manifest = manifests[plan.name]
        done = sum(plan.window_done(w) for w in range(len(plan.windows)))
        info = {"scans": len(plan.frames), "windows": len(plan.windows), "windows_done": done,
                "points": points[plan.name], "written": 0, "groups": manifest.get("groups", 0)}
        if (complete[plan.name] and manifest.get("status") == "complete"
                and manifest.get("format_version") == grouplib.FORMAT_VERSION):
            info["status"] = "already complete"
        elif done == len(plan.windows):
            info["written"], info["groups"] = link_and_write(plan, cfg["linking"]["min_iou"])
            publish_windows(plan)
            info["status"] = "complete"
            poses = odometry.poses_file(plan.source, plan.output_dir)
            assert poses is not None  # the plan's poses were read (or estimated and written) from it
            manifest.update(status="complete", groups=info["groups"], versions=versions(),
                            poses=str(poses.resolve()),
                            format_version=grouplib.FORMAT_VERSION, windows_layout=grouplib.LAYOUT,
                            window_scans=[[window.start, window.stop] for window in plan.windows])
            atomic.write_text(plan.target / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        else:
            info["status"] = "waiting for other shards' windows"
        summary.sequences[plan.name] = info
    summary.seconds = time.perf_counter() - start
    return summary
