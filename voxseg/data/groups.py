"""Window group ids made by preprocessing (tools/preprocess.py), written and read.

Format version 2 (`format_version` in the manifest; version 1 had only the .group files):

    OUT/sequences/NN/groups/manifest.json   parameters (`config`), `status` ("complete" once every
                                            file is written), `scans`, `format_version`, and
                                            `window_scans`: [start, stop) scan indices per window
    OUT/sequences/NN/groups/windows/WWWWW.npz
        start     int64 scalar: index of the window's first scan in the sorted velodyne scans
        frames    (K,) str: the names FFFFFF of its K consecutive scans
        counts    (K,) int64: points per scan
        ids_FFFFFF  (counts[k],) int32 per scan: window-local group ids aligned with the points of
                  velodyne/FFFFFF.bin, -1 for ground and noise

The scans of a window are stacked and grouped together, so one object has one id in every scan of
that window (unlike the sequence-wide ids of the .group files, which are linked across windows by
IoU). Windows overlap: a scan lies in several windows, with other ids in each. The arrays are
separate .npz members, so reading one scan's ids decompresses only those.

`SequenceGroups` reads one sequence's windows and checks, before work starts, that they exist, are
complete, are of this format version and were made with the parameters a config expects; every
problem is one DataFormatError naming the folder or file.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from voxseg import atomic
from voxseg.errors import DataFormatError

FORMAT_VERSION = 2
WINDOWS = "windows"  # folder of the window files, beside manifest.json
MANIFEST = "manifest.json"
LAYOUT = ("windows/WWWWW.npz: start, frames, counts and ids_FFFFFF (int32 per point of velodyne/FFFFFF.bin, "
          "window-local group ids, the same id = the same group in every scan of the window; -1 = ground or noise)")
_HINT = "run tools/preprocess.py on this dataset (with --out to match `groups_root`)"


def window_name(index: int) -> str:
    return f"{index:05d}.npz"


def write_window(path: str | os.PathLike, start: int, frames: list[str], ids: list[np.ndarray]) -> None:
    """Write one window file atomically: `ids[k]` are the group ids of scan `frames[k]`."""
    if len(frames) != len(ids):
        raise ValueError(f"{len(frames)} frames but {len(ids)} id arrays")
    members = {f"ids_{frame}": np.asarray(a, dtype="<i4") for frame, a in zip(frames, ids, strict=True)}
    with atomic.atomic_open(path) as f:
        np.savez_compressed(f, start=np.int64(start), frames=np.asarray(frames, dtype=str),
                            counts=np.array([len(a) for a in ids], dtype=np.int64),
                            **members)  # type: ignore[arg-type]  # numpy's stubs: **arrays might fill allow_pickle


def read_window_index(path: str | os.PathLike) -> tuple[int, list[str], np.ndarray]:
    """(start, frames, counts) of a window file, without decompressing its ids."""
    path = Path(path)
    try:
        with np.load(path) as data:
            start, frames, counts = int(data["start"]), [str(f) for f in data["frames"]], data["counts"]
    except FileNotFoundError:
        raise DataFormatError(f"{path}: window group file not found") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"{path}: not a window group file of format {FORMAT_VERSION} ({exc})") from None
    if len(frames) != len(counts):
        raise DataFormatError(f"{path}: {len(frames)} frames but {len(counts)} counts")
    return start, frames, counts


def read_window_ids(path: str | os.PathLike, frame: str, num_points: int | None = None) -> np.ndarray:
    """(N,) int32 window-local group ids of scan `frame`; checks the count against `num_points`."""
    path = Path(path)
    try:
        with np.load(path) as data:
            ids = data[f"ids_{frame}"]
    except FileNotFoundError:
        raise DataFormatError(f"{path}: window group file not found") from None
    except KeyError:
        raise DataFormatError(f"{path}: no group ids for scan {frame}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"{path}: not a window group file of format {FORMAT_VERSION} ({exc})") from None
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: ids of scan {frame} are {ids.dtype} {ids.shape}, expected int32 (N,)")
    if num_points is not None and len(ids) != num_points:
        raise DataFormatError(f"{path}: {len(ids)} group ids for scan {frame} of {num_points} points")
    return ids.astype(np.int32)


def _mismatches(expected: dict, found: dict, prefix: str = "") -> list[str]:
    """`key: found X, expected Y` for each dotted key of `expected` whose value `found` differs."""
    out = []
    for key, want in expected.items():
        name = f"{prefix}{key}"
        have = found.get(key, "<missing>") if isinstance(found, dict) else "<missing>"
        if isinstance(want, dict) and isinstance(have, dict):
            out += _mismatches(want, have, name + ".")
        elif have != want and not (isinstance(have, (int, float)) and isinstance(want, (int, float))
                                   and not isinstance(have, bool) and float(have) == float(want)):
            out.append(f"{name}={have!r} where the config expects {want!r}")
    return out


class SequenceGroups:
    """The window group ids of one sequence, in `directory` (OUT/sequences/NN/groups).

    `frames` are the sequence's scan names (sorted, as the windows index them); `expect` is a
    nested mapping of preprocessing parameters the manifest's config must hold (e.g.
    `{"stacking": {"window": 12}}`). Raises DataFormatError naming the folder or file when the
    outputs are missing, incomplete, of another format version or made with other parameters.
    """

    def __init__(self, directory: str | os.PathLike, frames: list[str], expect: dict | None = None):
        self.directory = Path(directory)
        self.frames = list(frames)
        manifest_path = self.directory / MANIFEST
        if not self.directory.is_dir():
            raise DataFormatError(f"{self.directory}: no groups folder (window group ids); {_HINT}")
        if not manifest_path.is_file():
            raise DataFormatError(f"{manifest_path}: not found, so {self.directory} holds no preprocessing output; "
                                  f"{_HINT}")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFormatError(f"{manifest_path}: not a readable manifest ({exc})") from None
        version = manifest.get("format_version", 1) if isinstance(manifest, dict) else None
        if version != FORMAT_VERSION:
            raise DataFormatError(f"{manifest_path}: groups of format version {version}, this voxseg reads version "
                                  f"{FORMAT_VERSION} (per-window ids in {WINDOWS}/); rerun tools/preprocess.py with "
                                  "the same parameters to add them")
        if manifest.get("status") != "complete":
            raise DataFormatError(f"{manifest_path}: preprocessing is not complete "
                                  f"(status {manifest.get('status')!r}); finish tools/preprocess.py first")
        if manifest.get("scans") != len(self.frames):
            raise DataFormatError(f"{manifest_path}: made for {manifest.get('scans')} scans, the sequence has "
                                  f"{len(self.frames)}; rerun tools/preprocess.py")
        wrong = _mismatches(expect or {}, manifest.get("config", {}))
        if wrong:
            raise DataFormatError(f"{manifest_path}: these groups were made with other parameters: {'; '.join(wrong)}")
        self.config = manifest.get("config", {})
        self.manifest_path = manifest_path
        self.windows = [(int(a), int(b)) for a, b in manifest.get("window_scans", [])]
        if not self.windows or any(not 0 <= a < b <= len(self.frames) for a, b in self.windows):
            raise DataFormatError(f"{manifest_path}: window_scans {manifest.get('window_scans')!r} do not index "
                                  f"the {len(self.frames)} scans")
        self._containing: list[list[int]] = [[] for _ in self.frames]
        for w, (a, b) in enumerate(self.windows):
            for i in range(a, b):
                self._containing[i].append(w)
        uncovered = [self.frames[i] for i, ws in enumerate(self._containing) if not ws]
        if uncovered:
            raise DataFormatError(f"{manifest_path}: scan {uncovered[0]} is in no window")

    def window_file(self, w: int) -> Path:
        return self.directory / WINDOWS / window_name(w)

    def windows_of(self, i: int) -> list[int]:
        """The windows holding scan `i` (an index into `frames`)."""
        return self._containing[i]

    def check_window(self, w: int, sizes: dict[int, int] | None = None) -> None:
        """The window file exists and indexes the scans the manifest says; with `sizes` ({scan
        index: points}), its per-scan counts match them."""
        path = self.window_file(w)
        start, frames, counts = read_window_index(path)
        a, b = self.windows[w]
        if start != a or frames != self.frames[a:b]:
            raise DataFormatError(f"{path}: holds scans {frames[:1]}..{frames[-1:]} from index {start}, the manifest "
                                  f"and the sequence say {self.frames[a]}..{self.frames[b - 1]} from index {a}")
        for i, n in (sizes or {}).items():
            if counts[i - a] != n:
                raise DataFormatError(f"{path}: {counts[i - a]} group ids for scan {self.frames[i]} of {n} points")

    def ids(self, w: int, i: int, num_points: int | None = None) -> np.ndarray:
        """(N,) int32 window-local group ids of scan `i` in window `w`."""
        a, b = self.windows[w]
        if not a <= i < b:
            raise ValueError(f"scan {i} is not in window {w} ({a}..{b - 1})")
        return read_window_ids(self.window_file(w), self.frames[i], num_points)
