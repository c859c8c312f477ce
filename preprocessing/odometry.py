"""LiDAR poses for sequences that come without them: odometry with KISS-ICP.

Convention. Poses here are LiDAR poses T_i, 4x4, mapping points of scan i's LiDAR frame into the
LiDAR frame of the first scan (T_0 = identity), as `stacking.lidar_poses` returns them. On disk
they are stored the SemanticKITTI way: poses.txt holds camera-0 poses P_i = Tr T_i Tr^-1 (written
with `stacking.camera_poses`) and calib.txt the LiDAR-to-camera transform Tr, so every reader of
SemanticKITTI poses (including `stacking.lidar_poses`) gets T_i back.

Where. Estimated poses are written to the output, OUT/sequences/NN/poses.txt with a calib.txt
beside them (a copy of the sequence's own calib.txt when it has one), never into the input
sequence unless it is also the output: datasets are often mounted read-only. A sequence's poses
are, in order: its own poses.txt (with its calib.txt), else the estimated ones in the output,
so reruns and the other shards of a run read the poses the first run estimated (`stored_poses`).

Why KISS-ICP (Vizzo et al., RA-L 2023; github.com/PRBonn/kiss-icp): a maintained, pip-installable
LiDAR odometry (point-to-point ICP against a voxel-hash local map, constant-velocity prediction,
adaptive correspondence threshold) that runs on KITTI's HDL-64E and other sensors with no
per-dataset tuning and ranks among the best LiDAR-only odometries on KITTI. Writing our own ICP
would be slower and less robust.

Defaults, for a KITTI-like HDL-64E on a car roof:
  * max_range 100 m (KISS-ICP's default) and its map voxel size rule, max_range / 100 = 1 m;
  * min_range 3 m: drops returns from the ego vehicle and the sensor mount. The steepest beam
    (-24.3 deg) from a roof at 1.73 m meets the ground at about 3.8 m, so no ground is lost;
  * deskew off: scans carry no per-point timestamps (KITTI's are already motion compensated,
    the synthetic ones have no motion distortion);
  * ground thinned to 2 % (`ground_keep`): Patchwork++ finds the ground points and only every
    50th is kept. Point-to-point ICP on a flat ground is biased towards zero motion, because each
    scan's ring pattern moves with the sensor and rings match rings. On voxseg's synthetic
    sequences (ground = 60 % of the points, perfectly planar) full scans give 0.2 to 4 m of error
    over 8 frames; without most of the ground, 4 to 8 cm. The few ground points kept still tie
    down height, roll and pitch. On real KITTI scans the estimate moves by about 2 cm either
    way. `ground_keep=1.0` gives KISS-ICP exactly as published.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sized
from pathlib import Path

import numpy as np
from tqdm import tqdm

from preprocessing import stacking
from voxseg import atomic
from voxseg.data import semantic_kitti as sk
from voxseg.errors import DataFormatError

DEFAULT_MAX_RANGE = 100.0
DEFAULT_MIN_RANGE = 3.0
DEFAULT_GROUND_KEEP = 0.02
ESTIMATE_FLAG = "--estimate-poses"

# Placeholder camera projection written with an estimated Tr when a sequence has no calib.txt:
# KITTI-style 3x4 [I | 0]. Nothing in voxseg projects into images; it only keeps calib.txt in the
# usual `P0..P3, Tr` layout.
_PLACEHOLDER_P = np.eye(4)


def kiss_config(max_range: float = DEFAULT_MAX_RANGE, min_range: float = DEFAULT_MIN_RANGE,
                voxel_size: float | None = None, max_threads: int = 0):
    """A KISS-ICP configuration for scans without timestamps (deskew off). Built explicitly, so
    `kiss_icp_*` environment variables cannot change it behind our back."""
    from kiss_icp.config.config import AdaptiveThresholdConfig, DataConfig, MappingConfig, RegistrationConfig
    from kiss_icp.config.parser import KISSConfig

    if not 0 <= min_range < max_range:
        raise ValueError(f"need 0 <= min_range < max_range, got min_range={min_range}, max_range={max_range}")
    return KISSConfig(
        data=DataConfig(max_range=max_range, min_range=min_range, deskew=False),
        mapping=MappingConfig(voxel_size=voxel_size if voxel_size is not None else max_range / 100.0),
        registration=RegistrationConfig(max_num_threads=max_threads),
        adaptive_threshold=AdaptiveThresholdConfig(),
    )


class _GroundThinner:
    """Keeps every n-th of the ground points that Patchwork++ finds, and all other points."""

    def __init__(self, keep: float):
        if not 0 <= keep <= 1:
            raise ValueError(f"ground_keep is a fraction in [0, 1], got {keep}")
        self.stride = 0 if keep == 0 else max(1, round(1 / keep))
        self.patchwork = None
        if self.stride != 1:
            from preprocessing.ground import PatchworkPP

            # KITTI's HDL-64E at 1.723 m; no reflected-noise removal: every non-ground point helps ICP
            self.patchwork = PatchworkPP(enable_RNR=False)

    def __call__(self, scan: np.ndarray) -> np.ndarray:
        xyz = np.ascontiguousarray(scan[:, :3], dtype=np.float64)
        if self.patchwork is None:
            return xyz
        with_intensity = scan[:, :4] if scan.shape[1] >= 4 else np.c_[scan[:, :3], np.zeros(len(scan))]
        ground = np.flatnonzero(self.patchwork(with_intensity))
        keep = np.ones(len(xyz), dtype=bool)
        keep[ground] = False
        if self.stride:
            keep[ground[:: self.stride]] = True
        return np.ascontiguousarray(xyz[keep])


class UnregistrableScan(ValueError):
    """A scan KISS-ICP cannot register: `index` in the sequence, `reason` why."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"scan {index}: {reason}")
        self.index, self.reason = index, reason


def estimate_poses(scans: Iterable[np.ndarray], max_range: float = DEFAULT_MAX_RANGE,
                   min_range: float = DEFAULT_MIN_RANGE, progress: bool = False, *,
                   ground_keep: float = DEFAULT_GROUND_KEEP, voxel_size: float | None = None,
                   max_threads: int = 0, total: int | None = None) -> np.ndarray:
    """(N, 4, 4) LiDAR poses of consecutive scans relative to the first (poses[0] = identity).

    `scans` are (M, 3+) arrays in their LiDAR frame (x, y, z, optionally intensity; further
    columns are ignored), in acquisition order; an iterator is consumed one scan at a time
    (`total`: its length, for the progress bar). `ground_keep`: the fraction of ground points
    used (see the module docstring). `max_threads` 0 lets KISS-ICP use every core. A scan that
    cannot be registered raises UnregistrableScan.
    """
    from kiss_icp.kiss_icp import KissICP

    odometry = KissICP(config=kiss_config(max_range, min_range, voxel_size, max_threads))
    thin = _GroundThinner(ground_keep)
    no_timestamps = np.empty(0)
    if total is None and isinstance(scans, Sized):
        total = len(scans)
    poses = []
    bar = tqdm(scans, total=total, desc="odometry (KISS-ICP)", unit="scan", disable=not progress)
    for index, scan in enumerate(bar):
        scan = np.asarray(scan)
        if scan.ndim != 2 or scan.shape[1] < 3:
            raise UnregistrableScan(index, f"expected an (N, 3+) point array, got shape {scan.shape}")
        xyz = thin(scan)
        distance = np.linalg.norm(xyz, axis=1)
        if not np.any((distance >= min_range) & (distance <= max_range)):
            raise UnregistrableScan(index, f"no points between {min_range} and {max_range} m; cannot register it")
        odometry.register_frame(xyz, no_timestamps)
        poses.append(np.array(odometry.last_pose, dtype=np.float64))
    if not poses:
        return np.zeros((0, 4, 4))
    stacked = np.stack(poses)
    return np.linalg.inv(stacked[0]) @ stacked  # KISS-ICP starts at identity already; make it exact


def write_estimated_poses(sequence_dir: str | os.PathLike, poses_lidar: np.ndarray,
                          tr: np.ndarray | None = None, overwrite: bool = False,
                          source_calib: str | os.PathLike | None = None) -> Path:
    """Write LiDAR poses as `sequence_dir`/poses.txt (camera-0 poses P_i = Tr T_i Tr^-1), atomically.

    Tr comes from `sequence_dir`/calib.txt, `tr` and `source_calib` (the input sequence's
    calib.txt, when `sequence_dir` is the output's), whichever are there; two that disagree are
    an error, since readers would combine the poses with the wrong one. If `sequence_dir` has no
    calib.txt, one is written: a copy of `source_calib`, or else one holding `tr` (identity when
    not given: the "camera" frame is then the LiDAR frame and poses.txt holds the LiDAR poses
    themselves) and KITTI-style [I | 0] placeholders for the projections P0..P3. An existing
    poses.txt is never replaced unless `overwrite` is True. Returns the path of poses.txt.
    """
    sequence_dir = Path(sequence_dir)
    poses_path, calib_path = sequence_dir / "poses.txt", sequence_dir / "calib.txt"
    poses_lidar = np.asarray(poses_lidar, dtype=np.float64)
    if poses_lidar.ndim != 3 or poses_lidar.shape[1:] != (4, 4):
        raise ValueError(f"poses must be (N, 4, 4), got shape {poses_lidar.shape}")
    if poses_path.exists() and not overwrite:
        raise DataFormatError(f"{poses_path}: poses file already exists; not overwriting it with estimated poses "
                              "(delete it, or pass overwrite=True)")
    trs: list[tuple[Path | None, np.ndarray]] = []  # (its file, None for `tr`; Tr): the first applies
    if calib_path.exists():
        trs.append((calib_path, sk.read_calib(calib_path)["Tr"]))
    if tr is not None:
        trs.append((None, np.asarray(tr, dtype=np.float64)))
    if source_calib is not None:
        trs.append((Path(source_calib), sk.read_calib(source_calib)["Tr"]))
    for other_file, other in trs[1:]:
        if not np.allclose(other, trs[0][1], atol=1e-9):
            file, against = (trs[0][0], other_file) if trs[0][0] is not None else (other_file, None)
            raise DataFormatError(f"{file}: its Tr differs from "
                                  + (f"the one in {against}" if against else "the one given for the estimated poses"))
    chosen = trs[0][1] if trs else np.eye(4)
    if not calib_path.exists():
        if source_calib is not None:
            atomic.write_bytes(calib_path, Path(source_calib).read_bytes())
        else:
            sk.write_calib(calib_path, {"P0": _PLACEHOLDER_P, "P1": _PLACEHOLDER_P, "P2": _PLACEHOLDER_P,
                                        "P3": _PLACEHOLDER_P, "Tr": chosen})
    sk.write_poses(poses_path, stacking.camera_poses(poses_lidar, chosen))
    return poses_path


def poses_file(sequence_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> Path | None:
    """The poses.txt that holds a sequence's poses: its own, else the one estimated into
    `output_dir` (OUT/sequences/NN) by an earlier run; None when neither exists. Its calib.txt
    is the one beside it."""
    folders = [Path(sequence_dir)] + ([Path(output_dir)] if output_dir is not None else [])
    return next((folder / "poses.txt" for folder in folders if (folder / "poses.txt").exists()), None)


def stored_poses(sequence_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> np.ndarray | None:
    """(N, 4, 4) LiDAR poses of a SemanticKITTI sequence directory, one per velodyne/*.bin scan,
    from the `poses_file` and the calib.txt beside it; None when there is none."""
    velodyne = Path(sequence_dir) / "velodyne"
    if not velodyne.is_dir():
        raise DataFormatError(f"{velodyne}: velodyne directory not found")
    path = poses_file(sequence_dir, output_dir)
    if path is None:
        return None
    poses = stacking.lidar_poses(path.parent / "calib.txt", path)
    scans = len(list(velodyne.glob("*.bin")))
    if len(poses) != scans:
        raise DataFormatError(f"{path}: {len(poses)} poses but {scans} scans in {velodyne}; "
                              "poses.txt needs one line per scan")
    return poses


def missing_poses(sequence_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> DataFormatError:
    """The error for a sequence without poses, naming its poses.txt and the flag that estimates them."""
    target = Path(output_dir if output_dir is not None else sequence_dir) / "poses.txt"
    return DataFormatError(f"{Path(sequence_dir) / 'poses.txt'}: poses file not found; pass {ESTIMATE_FLAG} to "
                           f"estimate the LiDAR poses with KISS-ICP odometry (they are written to {target})")


def estimate_sequence_poses(sequence_dir: str | os.PathLike, progress: bool = False) -> np.ndarray:
    """KISS-ICP poses (`estimate_poses`) of every velodyne/*.bin scan of a sequence directory, in
    the order of sk.frame_ids; a scan that cannot be read or registered is a DataFormatError
    naming it. Nothing is written."""
    velodyne = Path(sequence_dir) / "velodyne"
    scan_files = sorted(velodyne.glob("*.bin"), key=lambda p: p.stem)
    if not scan_files:
        raise DataFormatError(f"{velodyne}: no .bin scans to estimate poses from")
    try:
        return estimate_poses((sk.read_scan(p) for p in scan_files), progress=progress, total=len(scan_files))
    except UnregistrableScan as exc:
        raise DataFormatError(f"{scan_files[exc.index]}: {exc.reason}") from None
