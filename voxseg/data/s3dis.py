"""S3DIS (Stanford Large-Scale 3D Indoor Spaces), the aligned version's layout:

    ROOT/Area_N/ROOM/Annotations/CLASS_K.txt   `x y z r g b` lines: one object (instance) of CLASS
    ROOT/Area_N/ROOM/ROOM.txt                  the whole room, `x y z r g b`, no labels

A room is read from its Annotations folder, the files in (class, K) order (`point_index` is the
row in that concatenation); a room without one is read from ROOM.txt, which has no labels and so
serves only `labels: false`. Class names map to raw ids through the label config's `labels`
names (configs/labels/s3dis.yaml), so the `stairs` objects of Area 5 get their own raw id, which
that config maps to clutter; a class name the label config does not know is a DataFormatError.
Each is one line naming the real problem: an Annotations folder without *.txt files, an
annotation file with no points (a 0-point object is not an object), a room folder with neither
Annotations nor ROOM.txt.

Nothing is written under ROOT: datasets are often mounted read-only. The text files are large (a
room parses in seconds): with `cache`, each parsed room is kept as an .npz in voxseg's cache
folder, `$VOXSEG_CACHE/s3dis` (default `~/.cache/voxseg/s3dis`, the folder tools/install/install.sh
also uses), under a hash of the resolved ROOT, written atomically and reread while the room's
files keep their paths, sizes and modification times. A cache that cannot be written is skipped
with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from voxseg import atomic
from voxseg.config import Component
from voxseg.data.indoor import IndoorDataset, colors_to_unit, read_numbers
from voxseg.data.labels import LabelConfig
from voxseg.errors import ConfigError, DataFormatError
from voxseg.registry import DATASETS

_ANNOTATION = re.compile(r"(?P<cls>.+)_(?P<k>\d+)\.txt")
_CACHE_VERSION = 2  # 2: the signature holds resolved paths, the cache lives outside ROOT


def cache_folder() -> Path:
    """voxseg's cache folder, chosen as tools/install/install.sh chooses it: $VOXSEG_CACHE, or
    ~/.cache/voxseg when that is unset or empty."""
    return Path(os.environ.get("VOXSEG_CACHE") or Path.home() / ".cache" / "voxseg")


def area_name(area: int | str) -> str:
    """`5`, `"5"` and `"Area_5"` all name folder `Area_5`."""
    text = str(area)
    return f"Area_{int(text)}" if text.isdigit() else text


def annotation_files(room: Path) -> list[tuple[str, Path]]:
    """(class name, file) of each object in `room`/Annotations, ordered by class then number."""
    folder = room / "Annotations"
    found = []
    for path in folder.iterdir():
        if path.suffix != ".txt" or not path.is_file():
            continue
        match = _ANNOTATION.fullmatch(path.name)
        if match is None:
            raise DataFormatError(f"{path}: annotation file names must be CLASS_NUMBER.txt")
        found.append((match["cls"], int(match["k"]), path))
    if not found:
        raise DataFormatError(f"{folder}: no annotation files (*.txt)")
    return [(cls, path) for cls, _, path in sorted(found, key=lambda f: (f[0], f[1]))]


def empty_file(cls: str | None, path: Path) -> DataFormatError:
    """The error for a room file without points: an annotation file (an object of class `cls`)
    or, `cls` None, the unlabelled ROOM.txt."""
    return DataFormatError(f"{path}: empty {'room' if cls is None else 'annotation'} file (0 points)")


@DATASETS.register()
class S3DIS(IndoorDataset):
    """The rooms of `areas` under `root` (the standard split trains on areas 1-4 and 6 and tests
    on area 5). Samples as voxseg.data.indoor describes, named "Area_N/ROOM"; every annotation
    file is one object, and its points get an instance id when its class is a thing class of the
    label config (configs/labels/s3dis.yaml makes all 13 classes things, as ASIS evaluates them)."""

    label_config: LabelConfig  # never None: the annotation files' class names map through it, labels or not

    def __init__(self, root: str, label_config: str, areas: list[int | str],
                 features: list[str] = ["color"],  # noqa: B006
                 transforms: list[Component] = [], labels: bool = True, cache: bool = False):  # noqa: B006
        if label_config is None:
            raise ConfigError("S3DIS: needs a label_config (the annotation files' class names map through it)")
        super().__init__(root, label_config, features, transforms, labels)
        if not areas:
            raise ConfigError("S3DIS: areas is empty; name the areas to read, e.g. [1, 2, 3, 4, 6]")
        self.cache = cache
        self.raw_ids = {name: raw for raw, name in self.label_config.names.items()}
        for area in areas:
            folder = self.root / area_name(area)
            if not folder.is_dir():
                raise DataFormatError(f"{folder}: S3DIS area folder not found")
            rooms = sorted(p.name for p in folder.iterdir() if p.is_dir())
            if not rooms:
                raise DataFormatError(f"{folder}: no room folders in this area")
            self.items += [f"{folder.name}/{room}" for room in rooms]

    # ------------------------------------------------------------------------ reading
    def room_sources(self, index: int) -> Sequence[tuple[str | None, Path]]:
        """(class name, file) per file of the room: its annotations, or (None, ROOM.txt)."""
        room = self.root / self.items[index]
        if (room / "Annotations").is_dir():
            return annotation_files(room)
        whole = room / f"{room.name}.txt"
        if not whole.is_file():
            what = "empty room folder" if not any(room.iterdir()) else "not an S3DIS room"
            raise DataFormatError(f"{room}: {what} (no Annotations folder, no {whole.name})")
        if self.labels:
            raise DataFormatError(f"{room}: no Annotations folder, and {whole.name} has no labels; "
                                  "read it with labels: false")
        return [(None, whole)]

    def cache_file(self, index: int) -> Path:
        """Where room `index` is cached: under voxseg's cache folder, never under ROOT."""
        root = str(self.root.resolve())
        return cache_folder() / "s3dis" / hashlib.sha256(root.encode()).hexdigest()[:16] / f"{self.items[index]}.npz"

    def read_room(self, index: int) -> dict[str, np.ndarray]:
        """{"points": (N, 6) float64 x y z r g b, "raw": (N,) raw class ids (0 without labels),
        "object": (N,) annotation file of each point (-1 without labels)}, from the cache if it
        is up to date."""
        sources = self.room_sources(index)
        signature = json.dumps([_CACHE_VERSION] + [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns]
                                                   for _, p in sources])
        cache = self.cache_file(index) if self.cache else None
        if cache is not None and cache.is_file():
            try:
                with np.load(cache) as stored:
                    if str(stored["signature"]) == signature:
                        return {k: stored[k] for k in ("points", "raw", "object")}
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache: parse again and replace it
        parts, raw, objects = [], [], []
        for k, (cls, path) in enumerate(sources):
            values = read_numbers(path, 6, "x y z r g b")
            if not len(values):
                raise empty_file(cls, path)
            colors_to_unit(values[:, 3:], path)  # validates the 0..255 range
            if cls is not None and cls not in self.raw_ids:
                raise DataFormatError(f"{path}: class {cls!r} is not in {self.label_config.path} "
                                      f"(known: {', '.join(sorted(self.raw_ids))})")
            parts.append(values)
            raw.append(np.full(len(values), self.raw_ids[cls] if cls is not None else 0, dtype=np.int64))
            objects.append(np.full(len(values), k if cls is not None else -1, dtype=np.int64))
        room = {"points": np.concatenate(parts), "raw": np.concatenate(raw), "object": np.concatenate(objects)}
        if cache is not None:
            try:
                with atomic.atomic_open(cache, "wb") as f:
                    np.savez(f, signature=np.array(signature),
                             **room)  # type: ignore[arg-type]  # numpy's stubs: **arrays might fill allow_pickle
            except atomic.WriteError as exc:
                warnings.warn(f"S3DIS cache not written: {exc}", stacklevel=2)
        return room

    def read(self, index: int) -> dict:
        room = self.read_room(index)
        points = room["points"]
        sample: dict = {
            "coord": points[:, :3].astype(np.float32),
            "color": colors_to_unit(points[:, 3:], self.root / self.items[index]),
            "point_index": np.arange(len(points)),
            "name": self.items[index],
        }
        if self.labels:
            sample["segment"] = self.label_config.raw_to_train(room["raw"])
            sample["instance"] = self.dense_things(sample["segment"], room["object"])
        return sample

    def check(self, full: bool = True, progress: bool = True, indices=None) -> None:
        """Check every room before work starts: its files exist, are not empty and are named
        CLASS_NUMBER.txt with known classes, and (labels) it has annotations; with `full`, also
        parse them (numbers, finite, colours 0..255, at least one point per file; this fills the
        cache). `indices` limits the check to those rooms. Raises DataFormatError naming the
        first bad file."""
        rooms = range(len(self)) if indices is None else indices
        for index in tqdm(rooms, desc=f"checking {self.root}", unit="room", disable=not progress):
            if full:
                self.read_room(index)
                continue
            sources = self.room_sources(index)
            for cls, path in sources:
                if cls is not None and cls not in self.raw_ids:
                    raise DataFormatError(f"{path}: class {cls!r} is not in {self.label_config.path}")
                if path.stat().st_size == 0:
                    raise empty_file(cls, path)
