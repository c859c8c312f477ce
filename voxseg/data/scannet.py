"""ScanNet v2, as its download script lays it out:

    ROOT/scans/SCENE/SCENE_vh_clean_2.ply                 mesh: vertices x y z red green blue (alpha)
    ROOT/scans/SCENE/SCENE_vh_clean_2.0.010000.segs.json  {"segIndices": [segment of each vertex]}
    ROOT/scans/SCENE/SCENE.aggregation.json               {"segGroups": [{"objectId", "label",
                                                           "segments": [...]}, ...]}: the objects
    ROOT/scannetv2-labels.combined.tsv                     label string (raw_category) -> nyu40id

A sample's points are the mesh vertices (`point_index` = vertex row). Object labels map to NYU40
ids through the tsv, and NYU40 ids to train ids through the label config (configs/labels/
scannet.yaml: the 20 benchmark classes; other NYU40 classes and vertices in no object are
ignored, -1). Instances are the objects of thing classes (the instance benchmark's 18: all but
wall and floor); where two objects claim a segment, the later one in the file wins, as ScanNet's
own export scripts do.

ScanNet v1 scenes, still shared, carry some labels spelt otherwise than in the v2 tsv.
`V1_SPELLINGS` maps them to their v2 rows: every label of ScanNet v1's label table
(scannet-labels.combined.tsv, column `category`; a copy is in github.com/charlesq34/pointnet2,
scannet/preprocessing/) that the v2 table (scannetv2-labels.combined.tsv, column `raw_category`;
a copy is in github.com/facebookresearch/votenet, scannet/meta_data/) lacks but holds once spaces
and punctuation are ignored. That is 13 labels, of which only `trashcan` is common (688 objects
in v1), and `dishrack`, which v1 scenes carry though v1's table does not list it: v2's `dish rack`
by the same rule. The v2 row's NYU40 id applies; for 4 of them it differs from v1's (showerhead and stove
top: other structure, lampbase: lamp, all other prop in v1; bean bag chair: other furniture, chair
in v1). The other v1 labels missing from v2 (`computer`, `dining chair`, `countertop`, ...: about
800 of v1's 1163 labels, 8 % of its objects) are other words, not other spellings, and are not
guessed. Labels that neither the tsv nor
`V1_SPELLINGS` knows are one DataFormatError listing every such label of the scene with its
number of objects.

The PLY is read with open3d; its header is also parsed here, because open3d only warns (and
returns partial data) on a truncated file, and the vertex count must be checked against the
segs file without reading the mesh.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from voxseg.config import Component
from voxseg.data.indoor import IndoorDataset, colors_to_unit
from voxseg.errors import ConfigError, DataFormatError
from voxseg.registry import DATASETS

# ScanNet v1 label -> the v2 tsv's raw_category of the same words (see the module docstring)
V1_SPELLINGS = {
    "trashcan": "trash can", "dartboard": "dart board", "showerhead": "shower head", "teakettle": "tea kettle",
    "bean bag chair": "beanbag chair", "hairbrush": "hair brush", "papertray": "paper tray",
    "lampbase": "lamp base", "penholder": "pen holder", "bunkbed": "bunk bed", "music stand'": "music stand",
    "flipflops": "flip flops", "stove top": "stovetop", "dishrack": "dish rack",
}

_PLY_TYPES = {"char": 1, "int8": 1, "uchar": 1, "uint8": 1, "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
              "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}


def ply_vertices(path: Path) -> int:
    """Vertex count from a PLY header, after checking that the vertices have colours and (binary
    files) that the file holds all of them."""
    if not path.is_file():
        raise DataFormatError(f"{path}: mesh file not found")
    with open(path, "rb") as f:
        head = f.read(65536)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise DataFormatError(f"{path}: not a PLY file (no 'ply ... end_header' header)")
    header_bytes = head.index(b"\n", end) + 1 if b"\n" in head[end:] else len(head)
    lines = [line.split() for line in head[:end].decode("ascii", "replace").splitlines()]
    fmt = next((line[1] for line in lines if line[:1] == ["format"] and len(line) > 1), None)
    count, properties, element = None, [], None
    for line in lines:
        if line[:1] == ["element"] and len(line) == 3:
            element = line[1]
            if element == "vertex":
                count = int(line[2]) if line[2].isdigit() else None
        elif line[:1] == ["property"] and element == "vertex":
            properties.append(line[1:])
    if count is None:
        raise DataFormatError(f"{path}: the PLY header has no 'element vertex COUNT'")
    names = {p[-1] for p in properties}
    if not {"x", "y", "z"} <= names:
        raise DataFormatError(f"{path}: the PLY vertices lack x y z")
    if not {"red", "green", "blue"} <= names:
        raise DataFormatError(f"{path}: the PLY vertices have no colours (red green blue properties)")
    if fmt in ("binary_little_endian", "binary_big_endian") and all(p[0] in _PLY_TYPES for p in properties):
        need = header_bytes + count * sum(_PLY_TYPES[p[0]] for p in properties)
        size = path.stat().st_size
        if size < need:
            raise DataFormatError(f"{path}: truncated: {size} bytes, its {count} vertices need {need}")
    return count


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(positions (N, 3) float32, colours (N, 3) float32 in [0, 1]) of a PLY's vertices."""
    import open3d as o3d

    count = ply_vertices(path)
    # open3d's stubs take a PathLike only; the binding reads str paths too
    cloud = o3d.t.io.read_point_cloud(str(path), remove_nan_points=False,  # type: ignore[arg-type]
                                      remove_infinite_points=False)
    if "positions" not in cloud.point or "colors" not in cloud.point:
        raise DataFormatError(f"{path}: open3d could not read the vertices and colours")
    positions = cloud.point.positions.numpy().astype(np.float32)
    colors = cloud.point.colors.numpy()
    if len(positions) != count:
        raise DataFormatError(f"{path}: read {len(positions)} vertices, the header says {count}")
    if not np.isfinite(positions).all():
        raise DataFormatError(f"{path}: NaN or infinite vertex coordinates")
    if colors.dtype == np.uint8:
        return positions, colors_to_unit(colors, path)
    return positions, colors_to_unit(colors.astype(np.float64) * 255.0, path)  # float colours in [0, 1]


def read_label_map(path: Path) -> dict[str, int]:
    """raw_category -> nyu40id from ScanNet's scannetv2-labels.combined.tsv."""
    if not path.is_file():
        raise DataFormatError(f"{path}: ScanNet label map (scannetv2-labels.combined.tsv) not found")
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or not {"raw_category", "nyu40id"} <= set(rows[0]):
        raise DataFormatError(f"{path}: the header must name the columns raw_category and nyu40id")
    name, nyu = rows[0].index("raw_category"), rows[0].index("nyu40id")
    mapping = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            mapping[row[name]] = int(row[nyu])
        except (IndexError, ValueError):
            raise DataFormatError(f"{path}: line {number}: no integer nyu40id for {row[:3]}") from None
    return mapping


def _load_json(path: Path, key: str) -> list:
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataFormatError(f"{path}: no {key!r} list")
    return data[key]


def read_segments(path: Path, num_vertices: int) -> np.ndarray:
    """The segment id of each vertex (segs.json's segIndices)."""
    try:
        segments = np.asarray(_load_json(path, "segIndices"), dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataFormatError(f"{path}: segIndices must be integers") from None
    if len(segments) != num_vertices:
        raise DataFormatError(f"{path}: {len(segments)} segIndices for a mesh of {num_vertices} vertices")
    return segments


def read_objects(path: Path, segments: np.ndarray, label_map: dict[str, int],
                 label_map_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(NYU40 id, object id) of each vertex from the aggregation's segGroups: 0 and -1 where
    no object covers the vertex. Labels are looked up in `label_map`, then as ScanNet v1
    spellings (`V1_SPELLINGS`); labels found in neither are listed together in one error."""
    groups = _load_json(path, "segGroups")
    for g, group in enumerate(groups):
        if not isinstance(group, dict) or not {"label", "segments"} <= set(group):
            raise DataFormatError(f"{path}: segGroups[{g}] lacks 'label' or 'segments'")
        if not isinstance(group["label"], str):
            raise DataFormatError(f"{path}: segGroups[{g}] label {group['label']!r} is not a string")
    labels = [group["label"] for group in groups]

    def nyu40_id(label: str) -> int | None:
        """The label's NYU40 id as spelled, else as its v1 spelling; None when neither is known."""
        v1 = V1_SPELLINGS.get(label)
        return label_map.get(label, label_map.get(v1) if v1 is not None else None)

    nyu40_of = {label: nyu40_id(label) for label in set(labels)}
    unknown = Counter(label for label in labels if nyu40_of[label] is None)
    if unknown:
        listed = ", ".join(f"{label!r} ({n} object{'s' if n > 1 else ''})" for label, n in unknown.items())
        raise DataFormatError(f"{path}: labels not in {label_map_path}: {listed}")
    unique, inverse = np.unique(segments, return_inverse=True)
    group_of_segment = np.full(len(unique), -1, dtype=np.int64)
    nyu40, object_ids = [], []
    for g, (group, label) in enumerate(zip(groups, labels, strict=True)):
        try:
            members = np.asarray(group["segments"], dtype=np.int64).reshape(-1)
            object_ids.append(int(group.get("objectId", group.get("id", g))))
        except (TypeError, ValueError):
            raise DataFormatError(f"{path}: segGroups[{g}]: segments and objectId must be integers") from None
        rows = np.searchsorted(unique, members)
        known = (rows < len(unique)) & (unique[np.minimum(rows, len(unique) - 1)] == members)
        if not known.all():
            raise DataFormatError(f"{path}: segGroups[{g}] ({label!r}) references segment {members[~known][0]} "
                                  "that the segs file does not have")
        group_of_segment[rows] = g
        nyu40.append(nyu40_of[label])
    group = group_of_segment[inverse.reshape(-1)]
    has = group >= 0
    raw = np.zeros(len(segments), dtype=np.int64)
    objects = np.full(len(segments), -1, dtype=np.int64)
    raw[has] = np.asarray(nyu40, dtype=np.int64)[group[has]]
    objects[has] = np.asarray(object_ids, dtype=np.int64)[group[has]]
    return raw, objects


@DATASETS.register()
class ScanNet(IndoorDataset):
    """The scenes named in `split_file` (one per line; ScanNet's scannetv2_train.txt, _val.txt,
    _test.txt) or listed in `scenes`, under ROOT/`scans_dir` (`scans_test` for the test split,
    which has no labels: labels: false). `split_file` and `label_map` are relative to `root`
    unless absolute; `label_map` defaults to ROOT/scannetv2-labels.combined.tsv. Samples as
    voxseg.data.indoor describes, named by the scene."""

    def __init__(self, root: str, label_config: str | None, split_file: str | None = None,
                 scenes: list[str] | None = None, scans_dir: str = "scans", label_map: str | None = None,
                 features: list[str] = ["color"],  # noqa: B006
                 transforms: list[Component] = [], labels: bool = True):  # noqa: B006
        super().__init__(root, label_config, features, transforms, labels)
        if (split_file is None) == (scenes is None):
            raise ConfigError("ScanNet: give exactly one of split_file (a scene list file) and scenes")
        if split_file is not None:
            listed = self.root / split_file
            if not listed.is_file():
                raise DataFormatError(f"{listed}: ScanNet split file not found")
            scenes = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
            if not scenes:
                raise DataFormatError(f"{listed}: the split file names no scenes")
        if not scenes:
            raise ConfigError("ScanNet: scenes is empty")
        self.scans = self.root / scans_dir
        for scene in scenes:
            if not (self.scans / scene).is_dir():
                raise DataFormatError(f"{self.scans / scene}: ScanNet scene folder not found")
        self.items = list(scenes)
        self.label_map_path = self.root / (label_map or "scannetv2-labels.combined.tsv")
        self.label_map = read_label_map(self.label_map_path) if labels else {}

    def files(self, index: int) -> tuple[Path, Path, Path]:
        """(mesh, segs, aggregation) of a scene."""
        scene = self.items[index]
        folder = self.scans / scene
        return (folder / f"{scene}_vh_clean_2.ply", folder / f"{scene}_vh_clean_2.0.010000.segs.json",
                folder / f"{scene}.aggregation.json")

    def read(self, index: int) -> dict:
        mesh, segs, aggregation = self.files(index)
        coord, color = read_ply(mesh)
        if not len(coord):
            raise DataFormatError(f"{mesh}: the mesh has no vertices")
        sample: dict = {"coord": coord, "color": color, "point_index": np.arange(len(coord)), "name": self.items[index]}
        if self.labels:
            assert self.label_config is not None  # `labels` requires one (PointDataset)
            segments = read_segments(segs, len(coord))
            raw, objects = read_objects(aggregation, segments, self.label_map, self.label_map_path)
            sample["segment"] = self.label_config.raw_to_train(raw)
            sample["instance"] = self.dense_things(sample["segment"], objects)
        return sample

    def check(self, full: bool = True, progress: bool = True, indices=None) -> None:
        """Check every scene before work starts: the mesh has coloured vertices and is not
        truncated, and (labels) the segs file has one segment per vertex and the aggregation
        exists; with `full`, read the whole scene (finite coordinates, known labels, segments).
        `indices` limits the check to those scenes. Raises DataFormatError naming the first bad
        file."""
        scenes = range(len(self)) if indices is None else indices
        for index in tqdm(scenes, desc=f"checking {self.scans}", unit="scene", disable=not progress):
            if full:
                self.read(index)
                continue
            mesh, segs, aggregation = self.files(index)
            count = ply_vertices(mesh)
            if count == 0:
                raise DataFormatError(f"{mesh}: the mesh has no vertices")
            if self.labels:
                read_segments(segs, count)
                if not aggregation.is_file():
                    raise DataFormatError(f"{aggregation}: file not found")
