"""Frame stacking: LiDAR poses from KITTI's camera poses, windows of scans, one common frame.

SemanticKITTI's poses.txt holds camera-0 poses P_i and calib.txt the LiDAR-to-camera transform
Tr, so the LiDAR pose of scan i is T_i = Tr^-1 P_i Tr and a point p of scan i, expressed in scan
j's LiDAR frame, is T_j^-1 T_i p. (Applying P_i to LiDAR points directly is the classic mistake:
it moves the car along the LiDAR's z axis.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from voxseg.data import semantic_kitti as sk
from voxseg.errors import DataFormatError


def lidar_poses(calib_path: str | os.PathLike, poses_path: str | os.PathLike) -> np.ndarray:
    """(N, 4, 4) LiDAR poses T_i = Tr^-1 P_i Tr in the frame of scan 0's camera-equivalent world."""
    tr = sk.read_calib(calib_path)["Tr"]
    return np.linalg.inv(tr) @ sk.read_poses(poses_path) @ tr


def camera_poses(lidar: np.ndarray, tr: np.ndarray) -> np.ndarray:
    """The inverse of lidar_poses: P_i = Tr T_i Tr^-1, as poses.txt stores them."""
    return tr @ lidar @ np.linalg.inv(tr)


@dataclass(frozen=True)
class Window:
    index: int
    start: int
    stop: int  # exclusive

    @property
    def frames(self) -> range:
        return range(self.start, self.stop)

    @property
    def centre(self) -> float:
        return (self.start + self.stop - 1) / 2


def windows(num_scans: int, size: int = 12, stride: int = 4) -> list[Window]:
    """Windows of `size` consecutive scans every `stride` scans (TARL: 12 and 4). The last window
    is aligned to the end of the sequence, so every scan is covered and every window is full
    (when the sequence has at least `size` scans)."""
    if size < 1 or stride < 1:
        raise ValueError(f"window size and stride must be positive, got {size}, {stride}")
    if num_scans <= size:
        return [Window(0, 0, num_scans)] if num_scans else []
    starts = list(range(0, num_scans - size + 1, stride))
    if starts[-1] + size < num_scans:
        starts.append(num_scans - size)
    return [Window(i, s, s + size) for i, s in enumerate(starts)]


def home_window(frame: int, all_windows: list[Window]) -> Window:
    """The window in which `frame` is most central: its group ids are the ones written for it."""
    containing = [w for w in all_windows if w.start <= frame < w.stop]
    if not containing:
        raise ValueError(f"frame {frame} is in no window")
    return min(containing, key=lambda w: (abs(frame - w.centre), w.start))


def transform(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Apply a 4x4 pose to (N, 3+) points; extra columns pass through."""
    out = points.copy()
    out[:, :3] = points[:, :3] @ pose[:3, :3].T + pose[:3, 3]
    return out


def stack(scans: list[np.ndarray], poses: np.ndarray, reference: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points of every scan moved into the LiDAR frame of scan `reference` (an index into
    `scans`), concatenated; and the scan index of each point."""
    if len(scans) != len(poses):
        raise DataFormatError(f"{len(scans)} scans but {len(poses)} poses")
    to_reference = np.linalg.inv(poses[reference])
    moved = [transform(s, to_reference @ pose) for s, pose in zip(scans, poses, strict=True)]
    owner = np.repeat(np.arange(len(scans)), [len(s) for s in scans])
    return np.concatenate(moved) if moved else np.zeros((0, 4), np.float32), owner
