"""SemanticKITTI on-disk format, read and written.

    ROOT/sequences/NN/velodyne/FFFFFF.bin   float32 (x, y, z, intensity) per point, LiDAR frame
    ROOT/sequences/NN/labels/FFFFFF.label   uint32 per point: semantic class in the lower 16
                                            bits, instance id in the upper 16
    ROOT/sequences/NN/poses.txt             camera-0 pose of each scan, 3x4 row-major per line
    ROOT/sequences/NN/calib.txt             `KEY: values` lines; Tr is LiDAR -> camera 0 (3x4)

Readers validate and raise DataFormatError naming the file; writers are atomic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from voxseg import atomic
from voxseg.errors import DataFormatError

if TYPE_CHECKING:
    from voxseg.data.labels import LabelConfig

PathLike = str | os.PathLike


def sequence_name(sequence: int | str) -> str:
    """`3`, `"3"` and `"03"` all name sequence directory `03`."""
    text = str(sequence)
    return f"{int(text):02d}" if text.isdigit() else text


def sequence_dir(root: PathLike, sequence: int | str, must_exist: bool = True) -> Path:
    path = Path(root) / "sequences" / sequence_name(sequence)
    if must_exist and not path.is_dir():
        raise DataFormatError(f"{path}: sequence not found")
    return path


def frame_ids(root: PathLike, sequence: int | str) -> list[str]:
    """Sorted frame names (`000000`, ...) of a sequence's velodyne directory."""
    velodyne = sequence_dir(root, sequence) / "velodyne"
    if not velodyne.is_dir():
        raise DataFormatError(f"{velodyne}: velodyne directory not found")
    return sorted(p.stem for p in velodyne.glob("*.bin"))


def scan_path(root: PathLike, sequence: int | str, frame: str) -> Path:
    return sequence_dir(root, sequence, must_exist=False) / "velodyne" / f"{frame}.bin"


def label_path(root: PathLike, sequence: int | str, frame: str) -> Path:
    return sequence_dir(root, sequence, must_exist=False) / "labels" / f"{frame}.label"


# -------------------------------------------------------------------------------- scans
def scan_size(path: PathLike, allow_empty: bool = True) -> int:
    """Points in a .bin scan, from its size alone: a quick check of a whole sequence before work
    starts. Rejects missing and truncated files (and empty ones unless `allow_empty`)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: scan file not found")
    size = path.stat().st_size
    if size % 16:
        raise DataFormatError(
            f"{path}: {size} bytes is not a multiple of 16 (4 float32 per point): truncated or not a KITTI scan"
        )
    if size == 0 and not allow_empty:
        raise DataFormatError(f"{path}: empty scan (0 points)")
    return size // 16


def read_scan(path: PathLike) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity. Rejects truncated files and non-finite values."""
    path = Path(path)
    scan_size(path)
    points = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    nonfinite = {"coordinates": ~np.isfinite(points[:, :3]).all(axis=1), "intensities": ~np.isfinite(points[:, 3])}
    for what, bad in nonfinite.items():
        if bad.any():
            raise DataFormatError(
                f"{path}: {int(bad.sum())} of {len(points)} points have NaN or infinite {what} "
                f"(first at point {int(np.argmax(bad))})"
            )
    return points


def write_scan(path: PathLike, points: np.ndarray) -> None:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"a scan is (N, 4) x, y, z, intensity; got shape {points.shape}")
    atomic.write_bytes(path, np.ascontiguousarray(points, dtype=np.float32).tobytes())


# ------------------------------------------------------------------------------- labels
def label_size(path: PathLike, num_points: int | None = None) -> int:
    """Labels in a .label file, from its size alone; checks the count against `num_points` if given.
    Rejects missing and truncated files."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: label file not found")
    size = path.stat().st_size
    if size % 4:
        raise DataFormatError(f"{path}: {size} bytes is not a multiple of 4 (one uint32 per point): truncated")
    if num_points is not None and size // 4 != num_points:
        raise DataFormatError(f"{path}: {size // 4} labels for a scan of {num_points} points")
    return size // 4


def read_label(path: PathLike, num_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(semantic, instance) as int64 arrays; checks the count against `num_points` if given."""
    path = Path(path)
    label_size(path, num_points)
    raw = np.fromfile(path, dtype=np.uint32)
    return (raw & 0xFFFF).astype(np.int64), (raw >> 16).astype(np.int64)


def write_label(path: PathLike, semantic: np.ndarray, instance: np.ndarray | None = None) -> None:
    semantic = np.asarray(semantic, dtype=np.int64)
    instance = np.zeros_like(semantic) if instance is None else np.asarray(instance, dtype=np.int64)
    if semantic.shape != instance.shape or semantic.ndim != 1:
        raise ValueError(f"semantic {semantic.shape} and instance {instance.shape} must be equal 1-D shapes")
    if (semantic.min(initial=0) < 0 or semantic.max(initial=0) > 0xFFFF
            or instance.min(initial=0) < 0 or instance.max(initial=0) > 0xFFFF):
        raise ValueError("semantic and instance ids must fit in 16 bits")
    packed = (instance.astype(np.uint32) << 16) | semantic.astype(np.uint32)
    atomic.write_bytes(path, packed.tobytes())


# ------------------------------------------------------------------------ samples
def read_scan_sample(root: PathLike, sequence: str, frame: str, label_config: LabelConfig | None = None) -> dict:
    """A scan as a dataset sample, before its transforms: `coord` (N, 3) float32 metres in the
    LiDAR frame, `intensity` (N, 1) float32, `point_index` (N,) row of each point in the scan
    file; with a `label_config`, also `segment` (N,) train ids (-1 = ignore) and `instance` (N,):
    -1 for points without an instance (label upper 16 bits 0), otherwise a dense id 0..K-1 per
    (learn class, instance id) pair of the scan, as SemanticKITTI's instance ids are unique only
    within a class."""
    points = read_scan(scan_path(root, sequence, frame))
    sample = {"coord": points[:, :3].copy(), "intensity": points[:, 3:4].copy(), "point_index": np.arange(len(points))}
    if label_config is not None:
        semantic, instance = read_label(label_path(root, sequence, frame), num_points=len(points))
        sample["segment"] = label_config.raw_to_train(semantic)
        sample["instance"] = label_config.dense_instances(semantic, instance)
    return sample


# ------------------------------------------------------------------------ poses, calib
def read_poses(path: PathLike) -> np.ndarray:
    """(N, 4, 4) camera-0 poses, one 3x4 row-major line per scan."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: poses file not found")
    poses = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        values = _floats(line.split(), path, number)
        if len(values) != 12:
            raise DataFormatError(f"{path}: line {number}: expected 12 numbers (3x4 pose), got {len(values)}")
        poses.append(np.vstack([np.reshape(values, (3, 4)), [0.0, 0.0, 0.0, 1.0]]))
    return np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)


def write_poses(path: PathLike, poses: np.ndarray) -> None:
    lines = [" ".join(f"{v:.9e}" for v in pose[:3].reshape(-1)) for pose in np.asarray(poses)]
    atomic.write_text(path, "\n".join(lines) + "\n")


def read_calib(path: PathLike) -> dict[str, np.ndarray]:
    """`KEY: 12 numbers` lines as 4x4 matrices (P0..P3, Tr); requires Tr."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: calib file not found")
    calib = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        values = _floats(rest.split(), path, number)
        if not sep or len(values) != 12:
            raise DataFormatError(f"{path}: line {number}: expected 'KEY: 12 numbers', got {line[:60]!r}")
        calib[key.strip()] = np.vstack([np.reshape(values, (3, 4)), [0.0, 0.0, 0.0, 1.0]])
    if "Tr" not in calib:
        raise DataFormatError(f"{path}: no 'Tr:' line (the LiDAR-to-camera transform)")
    return calib


def write_calib(path: PathLike, calib: dict[str, np.ndarray]) -> None:
    lines = [f"{key}: " + " ".join(f"{v:.12e}" for v in np.asarray(m)[:3].reshape(-1)) for key, m in calib.items()]
    atomic.write_text(path, "\n".join(lines) + "\n")


def _floats(tokens: list[str], path: Path, number: int) -> list[float]:
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise DataFormatError(f"{path}: line {number}: not a number in {' '.join(tokens)[:60]!r}") from None
    if not np.all(np.isfinite(values)):
        raise DataFormatError(f"{path}: line {number}: NaN or infinite value")
    return values


# ------------------------------------------------------------------ instance confidences
def write_instance_scores(path: PathLike, scores: dict[int, float]) -> None:
    """The confidences of a scan's predicted instances, for AP: a text file beside the
    predictions (OUT/sequences/NN/scores/FFFFFF.txt for OUT/sequences/NN/predictions/FFFFFF.label)
    with one `INSTANCE_ID SCORE` line per instance, sorted by id. INSTANCE_ID is the instance id
    in the .label file's upper 16 bits (1..65535), SCORE a finite float, higher = more confident;
    a scan without instances has an empty file."""
    lines = []
    for instance, score in sorted(scores.items()):
        if int(instance) != instance or not 1 <= instance <= 0xFFFF:
            raise ValueError(f"instance id {instance!r}: must be an integer 1..65535 (the .label upper 16 bits)")
        if not np.isfinite(score):
            raise ValueError(f"instance {instance}: score {score!r} is not a finite number")
        lines.append(f"{int(instance)} {float(score)!r}\n")
    atomic.write_text(path, "".join(lines))


def read_instance_scores(path: PathLike) -> dict[int, float]:
    """{instance id: score} from a file `write_instance_scores` wrote; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: instance scores file not found")
    scores: dict[int, float] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        tokens = line.split()
        try:
            instance, score = int(tokens[0]), float(tokens[1])
            valid = len(tokens) == 2 and 1 <= instance <= 0xFFFF and np.isfinite(score)
        except (ValueError, IndexError):
            valid = False
        if not valid:
            raise DataFormatError(f"{path}: line {number}: expected 'instance_id score' (id 1..65535, finite score), "
                                  f"got {line[:60]!r}")
        if instance in scores:
            raise DataFormatError(f"{path}: line {number}: instance {instance} listed twice")
        scores[instance] = score
    return scores
