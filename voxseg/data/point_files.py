"""Loose point-cloud files, as users have them, read for prediction (tools/infer.py --input and
voxseg.engine.predictor):

    .bin   KITTI velodyne scan: float32 (x, y, z, intensity) per point
    .pcd   PCD, e.g. a ROS export: fields x y z and, when present, intensity (other fields ignored)
    .ply   PLY vertices: x y z and, when present, intensity and red green blue
    .npy   one float array (N, 3) x y z, or (N, 4) x y z intensity
    .npz   `coord` (N, 3) x y z (or `points` (N, 3) / (N, 4) as .npy), and optionally `intensity`
           (N,) or (N, 1) and `color` (N, 3): RGB in [0, 1], or 0..255 integers

A cloud is returned as the arrays a sample starts from: `coord` (N, 3) float32 metres, and where
the file has them `intensity` (N, 1) float32 and `color` (N, 3) float32 in [0, 1]. PCD and PLY are
read with open3d's tensor I/O, which keeps fields beyond x y z (its legacy reader drops intensity).
A file that cannot be read, or holds NaN or infinite coordinates, is one DataFormatError naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from voxseg.data import semantic_kitti as sk
from voxseg.errors import DataFormatError, VoxsegError

SUFFIXES = (".bin", ".pcd", ".ply", ".npy", ".npz")


def expand_inputs(paths: list[str | os.PathLike]) -> list[Path]:
    """The files named, and the point-cloud files (SUFFIXES) directly inside the folders named,
    each folder's sorted by name. A path that does not exist, a file of another format, a folder
    without one, or two inputs with one file name (their outputs would collide: NAME.label) is
    a VoxsegError."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                raise VoxsegError(f"{path}: no point-cloud file ({', '.join(SUFFIXES)}) in this folder")
            files += found
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise VoxsegError(f"{path}: not a point-cloud file this tool reads ({', '.join(SUFFIXES)})")
            files.append(path)
        else:
            raise VoxsegError(f"{path}: no such file or folder")
    seen: dict[str, Path] = {}
    for file in files:
        if file.stem in seen:
            raise VoxsegError(f"{file}: has the name of {seen[file.stem]}; their predictions would both be "
                              f"{file.stem}.label (rename one, or predict them separately)")
        seen[file.stem] = file
    return files


def read_points(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The cloud in `path` (module docstring) as {"coord"[, "intensity"][, "color"]}."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataFormatError(f"{path}: point-cloud file not found")
    if suffix == ".bin":
        points = sk.read_scan(path)
        cloud = {"coord": points[:, :3], "intensity": points[:, 3:4]}
    elif suffix in (".pcd", ".ply"):
        cloud = _read_open3d(path)
    elif suffix == ".npy":
        cloud = _from_columns(_load_array(path, lambda: np.load(path, allow_pickle=False)), path)
    elif suffix == ".npz":
        cloud = _read_npz(path)
    else:
        raise DataFormatError(f"{path}: unknown point-cloud format {suffix!r}; known: {', '.join(SUFFIXES)}")
    return _checked(cloud, path)


def _load_array(path: Path, load):
    try:
        return load()
    except (OSError, ValueError, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot be read as a NumPy file ({exc})") from None


def _from_columns(array: np.ndarray, path: Path, what: str = "the array") -> dict[str, np.ndarray]:
    """(N, 3) x y z or (N, 4) x y z intensity."""
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] not in (3, 4) or not np.issubdtype(array.dtype, np.number):
        raise DataFormatError(f"{path}: {what} must be numbers of shape (N, 3) x y z or (N, 4) x y z intensity, "
                              f"got {array.dtype} {array.shape}")
    cloud = {"coord": array[:, :3]}
    if array.shape[1] == 4:
        cloud["intensity"] = array[:, 3:4]
    return cloud


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with _load_array(path, lambda: np.load(path, allow_pickle=False)) as arrays:
        keys = set(arrays.files)
        if "coord" in keys:
            coord = np.asarray(arrays["coord"])
            if coord.ndim != 2 or coord.shape[1] != 3:
                raise DataFormatError(f"{path}: `coord` must have shape (N, 3), got {coord.shape}")
            cloud = {"coord": coord}
        elif "points" in keys:
            cloud = _from_columns(arrays["points"], path, "`points`")
        else:
            held = ", ".join(sorted(keys)) or "none"
            raise DataFormatError(f"{path}: no `coord` or `points` array (it holds {held})")
        if "intensity" in keys:
            cloud["intensity"] = np.asarray(arrays["intensity"]).reshape(len(cloud["coord"]), -1)
        if "color" in keys:
            cloud["color"] = np.asarray(arrays["color"])
    return cloud


def _read_open3d(path: Path) -> dict[str, np.ndarray]:
    import open3d as o3d

    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        fields = o3d.t.io.read_point_cloud(str(path)).point  # type: ignore[arg-type]  # stubs: PathLike only
    if "positions" not in fields:
        raise DataFormatError(f"{path}: open3d read no points (not a {path.suffix[1:].upper()} point cloud, or empty)")
    cloud = {"coord": fields["positions"].numpy()}
    if "intensity" in fields:
        cloud["intensity"] = fields["intensity"].numpy()
    if "colors" in fields:
        cloud["color"] = fields["colors"].numpy()
    return cloud


def _checked(cloud: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """Shapes agree, values are finite, dtypes are float32; colours 0..255 scale to [0, 1]."""
    coord = np.asarray(cloud["coord"])
    n = len(coord)
    out = {"coord": np.ascontiguousarray(coord, dtype=np.float32)}
    columns = {"intensity": 1, "color": 3}
    for key, values in cloud.items():
        if key == "coord":
            continue
        values = np.asarray(values)
        if values.shape != (n, columns[key]):
            raise DataFormatError(f"{path}: `{key}` has shape {values.shape}, expected ({n}, {columns[key]})")
        if key == "color" and (np.issubdtype(values.dtype, np.integer) or values.max(initial=0) > 1):
            if values.min(initial=0) < 0 or values.max(initial=0) > 255:
                raise DataFormatError(f"{path}: colours must be in [0, 1] or 0..255")
            values = values / 255.0
        out[key] = np.ascontiguousarray(values, dtype=np.float32)
    for key, values in out.items():
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            raise DataFormatError(f"{path}: {int(bad.sum())} of {n} points have NaN or infinite {key} "
                                  f"(first at point {int(np.argmax(bad))})")
    return out


def write_colored_ply(path: str | os.PathLike, coord: np.ndarray, rgb: np.ndarray) -> None:
    """A PLY point cloud of `coord` coloured `rgb` (in [0, 1]), written by open3d to a temporary
    file beside `path`, then renamed over it: a reader never sees half a file."""
    import open3d as o3d

    path = Path(path)
    # open3d's stubs lack Tensor(ndarray) with dtype and device defaulted, and str paths: hence the ignores
    cloud = o3d.t.geometry.PointCloud(
        o3d.core.Tensor(np.ascontiguousarray(coord, dtype=np.float32)))  # type: ignore[call-overload]
    cloud.point["colors"] = o3d.core.Tensor(np.ascontiguousarray(rgb, dtype=np.float32))  # type: ignore[call-overload]
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.ply")
    try:
        if not o3d.t.io.write_point_cloud(str(tmp), cloud):  # type: ignore[arg-type]
            raise VoxsegError(f"{path}: open3d could not write the file")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
