"""Write synthetic LiDAR sequences as a SemanticKITTI-format dataset.

Each sequence is its own procedural scene (seeded by the dataset seed and the sequence number),
driven through by the ego vehicle at 10 Hz and scanned by a simulated HDL-64E. Written per
sequence: velodyne/*.bin, labels/*.label (exact semantic classes, instance ids for cars and
pedestrians), poses.txt (camera-0 poses, as KITTI stores them), calib.txt (KITTI's Tr) and
times.txt. The LiDAR pose of scan i is T_i = Tr^-1 P_i Tr with P_i the line of poses.txt; the
first scan's LiDAR frame is the world frame.

Frames are written atomically and each from its own seed, so an interrupted run resumes where it
stopped and gives the same files as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from voxseg import atomic
from voxseg.data import semantic_kitti as sk
from voxseg.errors import DataFormatError
from voxseg.synthetic.lidar import SpinningLidar
from voxseg.synthetic.scene import build_scene

FORMAT_VERSION = 1
FRAME_RATE = 10.0
# KITTI odometry sequence 00's LiDAR-to-camera-0 transform and camera projections.
KITTI_TR = np.array([
    [4.276802385584e-04, -9.999672484946e-01, -8.084491683471e-03, -1.198459927713e-02],
    [-7.210626507497e-03, 8.081198471645e-03, -9.999413164504e-01, -5.403984729748e-02],
    [9.999738645903e-01, 4.859485810390e-04, -7.206933692422e-03, -2.921968648686e-01],
    [0.0, 0.0, 0.0, 1.0],
])
KITTI_P0 = np.array([
    [718.856, 0.0, 607.1928, 0.0],
    [0.0, 718.856, 185.2157, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0, 0, 0, 1.0],
])


@dataclass
class SyntheticSpec:
    """What a synthetic dataset is made of; stored in its manifest so reruns can check it."""

    sequences: dict[str, int] = field(default_factory=lambda: {"00": 50, "01": 50, "02": 50, "03": 50, "04": 40})
    seed: int = 0
    azimuth_steps: int = 2048

    def to_json(self) -> dict:
        return {"format_version": FORMAT_VERSION, **asdict(self)}


MANIFEST = "synthetic.json"


def generate_dataset(root: str | os.PathLike, spec: SyntheticSpec, progress: bool = True) -> Path:
    """Generate (or finish generating) every sequence of `spec` under `root`."""
    root = Path(root)
    manifest = root / MANIFEST
    if manifest.exists():
        existing = json.loads(manifest.read_text())
        if existing != spec.to_json():
            raise DataFormatError(
                f"{manifest}: the dataset there was generated with other settings ({existing}); "
                "delete it or choose another output directory"
            )
    elif root.exists() and any(root.iterdir()):
        raise DataFormatError(f"{root}: directory is not empty and holds no {MANIFEST}; refusing to write into it")
    root.mkdir(parents=True, exist_ok=True)
    atomic.write_text(manifest, json.dumps(spec.to_json(), indent=2) + "\n")
    lidar = SpinningLidar(azimuth_steps=spec.azimuth_steps)
    for name, frames in spec.sequences.items():
        generate_sequence(root, name, frames, spec.seed, lidar, progress)
    return root


def generate_sequence(root: Path, sequence: str, num_frames: int, seed: int, lidar: SpinningLidar,
                      progress: bool = True) -> None:
    seq_dir = sk.sequence_dir(root, sequence, must_exist=False)
    done = seq_dir / ".complete"
    if done.exists():
        return
    seq_seed = [seed, int(sequence)]
    rng = np.random.default_rng(seq_seed)
    times = np.arange(num_frames) / FRAME_RATE
    scene = build_scene(rng, drive_length=float(9.5 * times[-1] + 10.0))  # room for the fastest ego
    calibration = lidar.calibration(rng)
    world_from_lidar = np.stack([scene.ego_pose(t) for t in times])
    lidar_poses = np.linalg.inv(world_from_lidar[0]) @ world_from_lidar  # scan 0 is the world frame

    for i in tqdm(range(num_frames), desc=f"synthetic sequence {sequence}", unit="scan", disable=not progress):
        frame = f"{i:06d}"
        scan_file, label_file = sk.scan_path(root, sequence, frame), sk.label_path(root, sequence, frame)
        if scan_file.exists() and label_file.exists():
            continue  # written atomically by an earlier run
        frame_rng = np.random.default_rng([*seq_seed, i])
        points, semantic, instance = lidar.scan(scene.mesh_at(times[i]), world_from_lidar[i], calibration, frame_rng)
        sk.write_label(label_file, semantic, instance)
        sk.write_scan(scan_file, points)

    camera_poses = KITTI_TR @ lidar_poses @ np.linalg.inv(KITTI_TR)
    sk.write_poses(seq_dir / "poses.txt", camera_poses)
    calib = {"P0": KITTI_P0, "P1": KITTI_P0, "P2": KITTI_P0, "P3": KITTI_P0, "Tr": KITTI_TR}
    sk.write_calib(seq_dir / "calib.txt", calib)
    atomic.write_text(seq_dir / "times.txt", "".join(f"{t:.6e}\n" for t in times))
    atomic.write_text(done, "")
