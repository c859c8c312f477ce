"""The indoor datasets, S3DIS and ScanNet, on small files written here: exact points, colours,
train ids and instances; one DataFormatError naming the file per bad input; label configs;
transforms and collation; the shipped indoor fine-tuning configs; read-only dataset folders (the
S3DIS parse cache lives in $VOXSEG_CACHE) and ScanNet v1 label spellings."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, read_only, snapshot
from voxseg.data.collate import collate
from voxseg.data.labels import LabelConfig
from voxseg.data.s3dis import S3DIS
from voxseg.data.scannet import V1_SPELLINGS, ScanNet
from voxseg.data.semantic_kitti_dataset import SemanticKITTI  # noqa: F401  (registers the datasets as the engine does)
from voxseg.errors import ConfigError, DataFormatError
from voxseg.registry import DATASETS

S3DIS_LABELS = str(ROOT / "configs" / "labels" / "s3dis.yaml")
SCANNET_LABELS = str(ROOT / "configs" / "labels" / "scannet.yaml")
S3DIS_TRAIN = {"ceiling": 0, "floor": 1, "wall": 2, "beam": 3, "column": 4, "window": 5, "door": 6, "table": 7,
               "chair": 8, "sofa": 9, "bookcase": 10, "board": 11, "clutter": 12}


@pytest.fixture(autouse=True)
def voxseg_cache(tmp_path, monkeypatch) -> Path:
    """voxseg's cache folder for the test (the shipped S3DIS configs cache parsed rooms there)."""
    monkeypatch.setenv("VOXSEG_CACHE", str(tmp_path / "voxseg-cache"))
    return tmp_path / "voxseg-cache"


# ------------------------------------------------------------------------------ S3DIS fixture
def room_points(rng: np.random.Generator, n: int) -> np.ndarray:
    """n rows of x y z (3 decimals, as S3DIS writes them) and integer r g b."""
    xyz = np.round(rng.uniform(-20, 20, (n, 3)), 3)
    return np.hstack([xyz, rng.integers(0, 256, (n, 3))])


def write_txt(path: Path, rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{x:.3f} {y:.3f} {z:.3f} {int(r)} {int(g)} {int(b)}\n" for x, y, z, r, g, b in rows))


# Objects of each room in the order the reader concatenates them (class, then number: table_2
# before table_10), with their point counts.
ROOMS = {
    "Area_1/office_1": [("chair", 1, 3), ("chair", 2, 2), ("wall", 1, 4)],
    "Area_5/hallway_2": [("floor", 1, 3), ("stairs", 1, 2), ("table", 2, 3), ("table", 10, 2)],
}


@pytest.fixture
def s3dis_root(tmp_path) -> tuple[Path, dict]:
    """Two rooms with Annotations under tmp_path/s3dis; returns the root and, per room, the rows
    written in reading order."""
    rng = np.random.default_rng(3)
    root = tmp_path / "s3dis"
    written = {}
    for room, objects in ROOMS.items():
        rows = []
        for cls, k, n in reversed(objects):  # written in another order than read
            part = room_points(rng, n)
            write_txt(root / room / "Annotations" / f"{cls}_{k}.txt", part)
            rows.insert(0, part)
        written[room] = rows
    return root, written


def test_s3dis_rooms_come_out_as_written(s3dis_root):
    root, written = s3dis_root
    dataset = S3DIS(str(root), S3DIS_LABELS, areas=[1, "Area_5"], features=["color", "height"])
    assert len(dataset) == 2 and [dataset.name(i) for i in range(2)] == list(ROOMS)
    assert dataset.in_channels == 4
    expected_segment = {"Area_1/office_1": [8, 8, 8, 8, 8, 2, 2, 2, 2],
                        # stairs are clutter (12), as configs/labels/s3dis.yaml maps them
                        "Area_5/hallway_2": [1, 1, 1, 12, 12, 7, 7, 7, 7, 7]}
    expected_instance = {"Area_1/office_1": [0, 0, 0, 1, 1, 2, 2, 2, 2],
                         "Area_5/hallway_2": [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]}
    for index, room in enumerate(ROOMS):
        sample = dataset[index]
        rows = np.concatenate(written[room])
        assert sample["name"] == room
        assert sample["coord"].dtype == np.float32 and np.array_equal(sample["coord"], rows[:, :3].astype(np.float32))
        assert sample["color"].dtype == np.float32
        assert np.array_equal(sample["color"], (rows[:, 3:] / 255.0).astype(np.float32))
        assert np.array_equal(sample["segment"], expected_segment[room])
        assert np.array_equal(sample["instance"], expected_instance[room])
        assert np.array_equal(sample["point_index"], np.arange(len(rows)))
        assert np.array_equal(sample["feat"], np.hstack([sample["color"], sample["coord"][:, 2:]]))
        assert sorted(sample) == ["color", "coord", "feat", "instance", "name", "point_index", "segment"]


def test_s3dis_without_labels_has_no_segment(s3dis_root):
    root, _ = s3dis_root
    sample = S3DIS(str(root), S3DIS_LABELS, areas=[1], labels=False)[0]
    assert "segment" not in sample and "instance" not in sample and sample["feat"].shape == (9, 3)


def test_s3dis_room_txt_serves_unlabelled_reading_only(tmp_path):
    rows = room_points(np.random.default_rng(0), 5)
    write_txt(tmp_path / "Area_6" / "lobby_1" / "lobby_1.txt", rows)
    sample = S3DIS(str(tmp_path), S3DIS_LABELS, areas=[6], labels=False)[0]
    assert np.array_equal(sample["coord"], rows[:, :3].astype(np.float32))
    assert np.array_equal(sample["color"], (rows[:, 3:] / 255.0).astype(np.float32))
    with pytest.raises(DataFormatError, match=r"lobby_1: no Annotations folder.*labels: false"):
        S3DIS(str(tmp_path), S3DIS_LABELS, areas=[6])[0]


def cache_file(cache: Path, root: Path, room: str) -> Path:
    """Where the S3DIS reader caches `room` of `root`: under a hash of the resolved root."""
    return cache / "s3dis" / hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16] / f"{room}.npz"


def test_s3dis_cache_is_used_and_refreshed(s3dis_root, voxseg_cache, monkeypatch):
    root, written = s3dis_root
    dataset = S3DIS(str(root), S3DIS_LABELS, areas=[1], cache=True)
    first = dataset[0]
    assert [p for p in voxseg_cache.rglob("*") if p.is_file()] == [cache_file(voxseg_cache, root, "Area_1/office_1")]
    import voxseg.data.s3dis as s3dis_module

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed although the cache is up to date")

    with monkeypatch.context() as patch:
        patch.setattr(s3dis_module, "read_numbers", no_parsing)
        again = dataset[0]
    for key in ("coord", "color", "segment", "instance"):
        assert np.array_equal(first[key], again[key])
    # a changed file (another size) is parsed again
    changed = written["Area_1/office_1"][2][:3].copy()
    write_txt(root / "Area_1" / "office_1" / "Annotations" / "wall_1.txt", changed)
    assert np.array_equal(dataset[0]["coord"][5:], changed[:, :3].astype(np.float32))
    assert len(dataset[0]["coord"]) == 8


def test_s3dis_check_accepts_good_rooms(s3dis_root, capsys):
    root, _ = s3dis_root
    dataset = S3DIS(str(root), S3DIS_LABELS, areas=[1, 5])
    dataset.check(full=True, progress=False)
    dataset.check(full=False, progress=False)
    # it checks every room, down to the last file of the last one: the bar counts two rooms, a
    # malformed line there is found by parsing (full), an empty file by the quick check too
    dataset.check(full=False, progress=True)
    assert "2/2" in capsys.readouterr().err
    last = root / "Area_5" / "hallway_2" / "Annotations" / "table_10.txt"
    last.write_text("1.0 2.0 abc 4 5 6\n")
    dataset.check(full=False, progress=False)
    with pytest.raises(DataFormatError, match=re.escape(f"{last}: line 1: not a number")):
        dataset.check(full=True, progress=False)
    last.write_text("")
    for full in (False, True):
        with pytest.raises(DataFormatError, match=re.escape(f"{last}: empty annotation file (0 points)")):
            dataset.check(full=full, progress=False)


def test_s3dis_read_only_root_is_untouched_and_cached_outside(s3dis_root, voxseg_cache):
    """The issue's case: a dataset mounted read-only. Reading and checking every room, cache on,
    writes the cache in $VOXSEG_CACHE and nothing under ROOT (checked byte for byte and entry for
    entry, since as root chmod stops nothing); the second pass reads the cache."""
    root, written = s3dis_root
    with read_only(root) as before:
        dataset = S3DIS(str(root), S3DIS_LABELS, areas=[1, 5], cache=True)
        dataset.check(full=True, progress=False)
        assert sorted(p for p in voxseg_cache.rglob("*.npz")) == [
            cache_file(voxseg_cache, root, room) for room in sorted(ROOMS)]
        cached = {room: cache_file(voxseg_cache, root, room).stat().st_mtime_ns for room in ROOMS}
        for index, room in enumerate(ROOMS):
            assert np.array_equal(dataset[index]["coord"], np.concatenate(written[room])[:, :3].astype(np.float32))
        assert {room: cache_file(voxseg_cache, root, room).stat().st_mtime_ns for room in ROOMS} == cached
        assert snapshot(root) == before


@pytest.mark.parametrize("setting", [None, ""])
def test_s3dis_cache_defaults_to_the_installer_cache_folder(s3dis_root, tmp_path, monkeypatch, setting):
    """$VOXSEG_CACHE unset or empty: ~/.cache/voxseg, as tools/install/install.sh's ${VOXSEG_CACHE:-...}."""
    root, _ = s3dis_root
    if setting is None:
        monkeypatch.delenv("VOXSEG_CACHE")
    else:
        monkeypatch.setenv("VOXSEG_CACHE", setting)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    S3DIS(str(root), S3DIS_LABELS, areas=[1], cache=True)[0]
    assert cache_file(tmp_path / "home" / ".cache" / "voxseg", root, "Area_1/office_1").is_file()


def _s3dis_error(root, match, areas=(1,), full=True):
    dataset = S3DIS(str(root), S3DIS_LABELS, areas=list(areas))
    with pytest.raises(DataFormatError, match=match) as info:
        dataset.check(full=full, progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(DataFormatError, match=match):
        dataset[0]


def _refused_on_read_only(root: Path, make_dataset, message: str, fulls=(False, True)) -> None:
    """`message` is the whole error of check (quick and full, as `fulls` says) and of reading the
    first item of the dataset `make_dataset()` builds on a read-only `root`; nothing is written there."""
    with read_only(root) as before:
        dataset = make_dataset()
        for full in fulls:
            with pytest.raises(DataFormatError) as info:
                dataset.check(full=full, progress=False)
            assert str(info.value) == message
        with pytest.raises(DataFormatError) as info:
            dataset[0]
        assert str(info.value) == message
        assert snapshot(root) == before


def _s3dis_exact_error(root: Path, message: str, voxseg_cache: Path, areas=(1,), fulls=(False, True), labels=True):
    """_refused_on_read_only for S3DIS with the cache on: nothing is written in the cache either."""
    _refused_on_read_only(root, lambda: S3DIS(str(root), S3DIS_LABELS, areas=list(areas), labels=labels, cache=True),
                          message, fulls)
    assert not voxseg_cache.exists()


@pytest.mark.parametrize("line, match", [
    ("1.0 2.0 abc 4 5 6", r"chair_2\.txt: line 2: not a number"),
    ("1.0 2.0 3.0 4 5", r"chair_2\.txt: line 2: expected 6 numbers \(x y z r g b\), got 5"),
    ("1.0 2.0 3.0 4 5 6 7", r"chair_2\.txt: line 2: expected 6 numbers \(x y z r g b\), got 7"),
    ("1.0 nan 3.0 4 5 6", r"chair_2\.txt: line 2: NaN or infinite value"),
    ("1.0 2.0 3.0 4 300 6", r"chair_2\.txt: colour values must be 0\.\.255"),
])
def test_s3dis_malformed_line_is_named(s3dis_root, line, match):
    root, _ = s3dis_root
    path = root / "Area_1" / "office_1" / "Annotations" / "chair_2.txt"
    path.write_text("0.5 0.5 0.5 1 2 3\n" + line + "\n")
    _s3dis_error(root, match)


def test_s3dis_unknown_class_is_named(s3dis_root):
    root, _ = s3dis_root
    write_txt(root / "Area_1" / "office_1" / "Annotations" / "lamp_1.txt", room_points(np.random.default_rng(1), 2))
    _s3dis_error(root, r"lamp_1\.txt: class 'lamp' is not in .*s3dis\.yaml", full=False)
    _s3dis_error(root, r"lamp_1\.txt: class 'lamp' is not in .*s3dis\.yaml")


def test_s3dis_badly_named_annotation_is_named(s3dis_root):
    root, _ = s3dis_root
    write_txt(root / "Area_1" / "office_1" / "Annotations" / "chair.txt", room_points(np.random.default_rng(1), 2))
    _s3dis_error(root, r"chair\.txt: annotation file names must be CLASS_NUMBER\.txt")


def test_s3dis_empty_annotation_file_is_named(s3dis_root, voxseg_cache):
    """An empty annotation file is not a 0-point object: the quick check (by size) and the full
    one name it."""
    root, _ = s3dis_root
    chair = root / "Area_1" / "office_1" / "Annotations" / "chair_1.txt"
    chair.write_text("")
    _s3dis_exact_error(root, f"{chair}: empty annotation file (0 points)", voxseg_cache)
    chair.write_text("\n  \n")  # blank lines only: found by parsing
    _s3dis_exact_error(root, f"{chair}: empty annotation file (0 points)", voxseg_cache, fulls=(True,))


def test_s3dis_annotations_folder_without_files_is_named(s3dis_root, voxseg_cache):
    root, _ = s3dis_root
    annotations = root / "Area_3" / "pantry_1" / "Annotations"
    annotations.mkdir(parents=True)
    (annotations / "notes.md").write_text("not an annotation")
    _s3dis_exact_error(root, f"{annotations}: no annotation files (*.txt)", voxseg_cache, areas=[3])


@pytest.mark.parametrize("labels", [True, False])
def test_s3dis_empty_room_folder_is_named(s3dis_root, voxseg_cache, labels):
    """Not "office_2.txt has no labels", about a file that does not exist."""
    root, _ = s3dis_root
    room = root / "Area_1" / "office_0"  # sorts first
    room.mkdir()
    _s3dis_exact_error(root, f"{room}: empty room folder (no Annotations folder, no office_0.txt)", voxseg_cache,
                       labels=labels)
    (room / "office_0.xyz").write_text("1 2 3\n")
    _s3dis_exact_error(root, f"{room}: not an S3DIS room (no Annotations folder, no office_0.txt)", voxseg_cache,
                       labels=labels)


def test_s3dis_empty_room_txt_is_named(tmp_path, voxseg_cache):
    whole = tmp_path / "s3dis" / "Area_6" / "lobby_1" / "lobby_1.txt"
    whole.parent.mkdir(parents=True)
    whole.write_text("")
    _s3dis_exact_error(tmp_path / "s3dis", f"{whole}: empty room file (0 points)", voxseg_cache, areas=[6],
                       labels=False)


def test_s3dis_missing_area_is_named(s3dis_root):
    root, _ = s3dis_root
    with pytest.raises(DataFormatError, match=r"Area_3: S3DIS area folder not found"):
        S3DIS(str(root), S3DIS_LABELS, areas=[1, 3])
    (root / "Area_4").mkdir()
    with pytest.raises(DataFormatError, match=r"Area_4: no room folders"):
        S3DIS(str(root), S3DIS_LABELS, areas=[4])
    with pytest.raises(ConfigError, match="unknown point feature"):
        S3DIS(str(root), S3DIS_LABELS, areas=[1], features=["intensity"])


# ---------------------------------------------------------------------------- ScanNet fixture
SCENE = "scene0000_00"
SEGMENTS = [5, 5, 7, 7, 7, 9, 9, 11, 11, 15, 13]  # vertex -> segment (15: in no object)
GROUPS = [  # objectId, label, segments
    (0, "wall", [5]),
    (1, "chair", [7, 13]),
    (2, "kitchen cabinets", [9]),
    (3, "box", [11]),  # NYU40 29: not a benchmark class
]
TSV = ("id\traw_category\tcategory\tcount\tnyu40id\tnyu40class\n"
       "1\twall\twall\t8277\t1\twall\n"
       "2\tchair\tchair\t4646\t5\tchair\n"
       "3\tkitchen cabinets\tcabinet\t310\t3\tcabinet\n"
       "4\tbox\tbox\t775\t29\tbox\n"
       "5\tfloor\tfloor\t4881\t2\tfloor\n"
       "6\ttrash can\ttrash can\t1\t39\totherfurniture\n")
# wall -> train 0 (stuff, no instance); chair -> 4, cabinet -> 2 (things); box and no object -> ignore
SCANNET_SEGMENT = [0, 0, 4, 4, 4, 2, 2, -1, -1, -1, 4]
SCANNET_INSTANCE = [-1, -1, 0, 0, 0, 1, 1, -1, -1, -1, 0]


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray | None, faces: int = 2, cut: int = 0) -> None:
    """A binary little-endian PLY mesh laid out as ScanNet's (x y z red green blue alpha, faces);
    `cut` drops that many bytes from the end."""
    props = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        props += [("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    vertex = np.zeros(len(xyz), dtype=props)
    vertex["x"], vertex["y"], vertex["z"] = xyz.T
    if rgb is not None:
        vertex["red"], vertex["green"], vertex["blue"] = rgb.T
        vertex["alpha"] = 255
    kinds = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(xyz)}"]
    header += [f"property {kinds[t]} {n}" for n, t in props]
    header += [f"element face {faces}", "property list uchar int vertex_indices", "end_header"]
    face = np.uint8(3).tobytes() + np.array([0, 1, 2], "<i4").tobytes()
    data = ("\n".join(header) + "\n").encode() + vertex.tobytes() + face * faces
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:len(data) - cut])


def write_scene(root: Path, scene: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    xyz = rng.normal(0, 2, (len(SEGMENTS), 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (len(SEGMENTS), 3)).astype(np.uint8)
    folder = root / "scans" / scene
    write_ply(folder / f"{scene}_vh_clean_2.ply", xyz, rgb)
    (folder / f"{scene}_vh_clean_2.0.010000.segs.json").write_text(
        json.dumps({"params": {}, "sceneId": scene, "segIndices": SEGMENTS}))
    groups = [{"id": o, "objectId": o, "label": label, "segments": segs} for o, label, segs in GROUPS]
    (folder / f"{scene}.aggregation.json").write_text(json.dumps({"sceneId": scene, "segGroups": groups}))
    return xyz, rgb


@pytest.fixture
def scannet_root(tmp_path) -> tuple[Path, dict]:
    rng = np.random.default_rng(5)
    written = {scene: write_scene(tmp_path, scene, rng) for scene in (SCENE, "scene0001_01")}
    (tmp_path / "scannetv2-labels.combined.tsv").write_text(TSV)
    (tmp_path / "scannetv2_train.txt").write_text(f"{SCENE}\n")
    (tmp_path / "scannetv2_val.txt").write_text("scene0001_01\n")
    return tmp_path, written


def test_scannet_scene_comes_out_as_written(scannet_root):
    root, written = scannet_root
    dataset = ScanNet(str(root), SCANNET_LABELS, split_file="scannetv2_train.txt", features=["color", "height"])
    assert len(dataset) == 1 and dataset.name(0) == SCENE and dataset.in_channels == 4
    sample = dataset[0]
    xyz, rgb = written[SCENE]
    assert sample["coord"].dtype == np.float32 and np.array_equal(sample["coord"], xyz)
    assert np.array_equal(sample["color"], (rgb / 255.0).astype(np.float32))
    assert np.array_equal(sample["segment"], SCANNET_SEGMENT)
    assert np.array_equal(sample["instance"], SCANNET_INSTANCE)
    assert np.array_equal(sample["feat"], np.hstack([sample["color"], xyz[:, 2:]]))
    listed = ScanNet(str(root), SCANNET_LABELS, scenes=["scene0001_01", SCENE])
    assert [listed.name(i) for i in range(2)] == ["scene0001_01", SCENE]
    assert np.array_equal(listed[0]["coord"], written["scene0001_01"][0])


def test_scannet_later_object_wins_a_shared_segment(scannet_root):
    root, _ = scannet_root
    aggregation = root / "scans" / SCENE / f"{SCENE}.aggregation.json"
    groups = json.loads(aggregation.read_text())["segGroups"]
    groups.append({"objectId": 7, "label": "kitchen cabinets", "segments": [13]})  # also chair's
    aggregation.write_text(json.dumps({"segGroups": groups}))
    sample = ScanNet(str(root), SCANNET_LABELS, scenes=[SCENE])[0]
    assert np.array_equal(sample["segment"], SCANNET_SEGMENT[:-1] + [2])
    assert np.array_equal(sample["instance"], SCANNET_INSTANCE[:-1] + [2])


def test_scannet_check_accepts_good_scenes(scannet_root, capsys):
    root, _ = scannet_root
    dataset = ScanNet(str(root), SCANNET_LABELS, scenes=[SCENE, "scene0001_01"])
    dataset.check(full=True, progress=False)
    dataset.check(full=False, progress=False)
    # it checks every scene: the bar counts two, a NaN vertex of the last one is found by reading
    # it (full), its missing aggregation by the quick check too
    dataset.check(full=False, progress=True)
    assert "2/2" in capsys.readouterr().err
    folder = root / "scans" / "scene0001_01"
    xyz = np.zeros((len(SEGMENTS), 3), np.float32)
    xyz[-1, 0] = np.nan
    mesh = folder / "scene0001_01_vh_clean_2.ply"
    write_ply(mesh, xyz, np.zeros_like(xyz, np.uint8))
    dataset.check(full=False, progress=False)
    with pytest.raises(DataFormatError, match=re.escape(f"{mesh}: NaN or infinite vertex")):
        dataset.check(full=True, progress=False)
    aggregation = folder / "scene0001_01.aggregation.json"
    aggregation.unlink()
    with pytest.raises(DataFormatError, match=re.escape(f"{aggregation}: file not found")):
        dataset.check(full=False, progress=False)


def _scannet_error(root, match, full=True):
    dataset = ScanNet(str(root), SCANNET_LABELS, scenes=[SCENE])
    with pytest.raises(DataFormatError, match=match) as info:
        dataset.check(full=full, progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(DataFormatError, match=match):
        dataset[0]


def test_scannet_ply_without_colours_is_named(scannet_root):
    root, _ = scannet_root
    write_ply(root / "scans" / SCENE / f"{SCENE}_vh_clean_2.ply", np.zeros((len(SEGMENTS), 3), np.float32), None)
    for full in (False, True):
        _scannet_error(root, r"scene0000_00_vh_clean_2\.ply: the PLY vertices have no colours", full)


def test_scannet_truncated_ply_is_named(scannet_root):
    root, _ = scannet_root
    xyz = np.zeros((len(SEGMENTS), 3), np.float32)
    write_ply(root / "scans" / SCENE / f"{SCENE}_vh_clean_2.ply", xyz, np.zeros_like(xyz, np.uint8), faces=0, cut=5)
    for full in (False, True):
        _scannet_error(root, r"scene0000_00_vh_clean_2\.ply: truncated", full)


def test_scannet_nan_vertex_is_named(scannet_root):
    root, _ = scannet_root
    xyz = np.zeros((len(SEGMENTS), 3), np.float32)
    xyz[4, 1] = np.nan
    write_ply(root / "scans" / SCENE / f"{SCENE}_vh_clean_2.ply", xyz, np.zeros_like(xyz, np.uint8))
    _scannet_error(root, r"scene0000_00_vh_clean_2\.ply: NaN or infinite vertex coordinates")


def test_scannet_segment_count_mismatch_is_named(scannet_root):
    root, _ = scannet_root
    (root / "scans" / SCENE / f"{SCENE}_vh_clean_2.0.010000.segs.json").write_text(
        json.dumps({"segIndices": SEGMENTS[:-1]}))
    for full in (False, True):
        _scannet_error(root, r"scene0000_00_vh_clean_2\.0\.010000\.segs\.json: 10 segIndices for a mesh of 11 vertices",
                       full)


def test_scannet_aggregation_with_an_unknown_segment_is_named(scannet_root):
    root, _ = scannet_root
    groups = [{"objectId": 0, "label": "chair", "segments": [7, 8]}]
    (root / "scans" / SCENE / f"{SCENE}.aggregation.json").write_text(json.dumps({"segGroups": groups}))
    _scannet_error(root, r"scene0000_00\.aggregation\.json: segGroups\[0\] \('chair'\) references segment 8")


def test_scannet_unknown_labels_are_all_named_in_one_line(scannet_root):
    """Every label the tsv lacks (a v1 spelling it does know is not among them), in the order of
    first appearance, with its number of objects; the reader writes nothing."""
    root, _ = scannet_root
    aggregation = root / "scans" / SCENE / f"{SCENE}.aggregation.json"
    labels = ["spaceship", "chair", "countertop", "trashcan", "spaceship", "computer", "wall"]
    # the first len(labels) segments: one object each
    groups = [{"objectId": o, "label": label, "segments": [s]}
              for o, (label, s) in enumerate(zip(labels, SEGMENTS, strict=False))]
    aggregation.write_text(json.dumps({"segGroups": groups}))
    message = (f"{aggregation}: labels not in {root / 'scannetv2-labels.combined.tsv'}: 'spaceship' (2 objects), "
               "'countertop' (1 object), 'computer' (1 object)")
    _refused_on_read_only(root, lambda: ScanNet(str(root), SCANNET_LABELS, scenes=[SCENE]), message, fulls=(True,))


def test_scannet_v1_spellings_take_their_v2_rows(scannet_root):
    """A v1 scene's `trashcan` is v2's `trash can` (NYU40 39, otherfurniture: train id 19, a thing)."""
    root, written = scannet_root
    aggregation = root / "scans" / SCENE / f"{SCENE}.aggregation.json"
    groups = json.loads(aggregation.read_text())["segGroups"]
    groups[3]["label"] = "trashcan"  # the box on segment 11
    aggregation.write_text(json.dumps({"segGroups": groups}))
    with read_only(root) as before:
        sample = ScanNet(str(root), SCANNET_LABELS, scenes=[SCENE])[0]
        assert snapshot(root) == before
    assert np.array_equal(sample["segment"], [0, 0, 4, 4, 4, 2, 2, 19, 19, -1, 4])
    assert np.array_equal(sample["instance"], [-1, -1, 0, 0, 0, 1, 1, 2, 2, -1, 0])


def test_scannet_v1_spellings_are_spellings_only():
    """Each mapped v1 label has the letters and digits of its v2 row, in order: only spaces and
    punctuation differ (the rule the module docstring states); trashcan is the common one."""
    def letters(label):
        return "".join(c for c in label if c.isalnum())

    assert len(V1_SPELLINGS) == 14 and V1_SPELLINGS["trashcan"] == "trash can"
    assert V1_SPELLINGS["dishrack"] == "dish rack"
    assert all(letters(v1) == letters(v2) and v1 != v2 for v1, v2 in V1_SPELLINGS.items())


def test_scannet_bad_json_is_named(scannet_root):
    root, _ = scannet_root
    (root / "scans" / SCENE / f"{SCENE}.aggregation.json").write_text("{not json")
    _scannet_error(root, r"scene0000_00\.aggregation\.json: invalid JSON")


def test_scannet_missing_files_are_named(scannet_root):
    root, _ = scannet_root
    with pytest.raises(DataFormatError, match=r"scans/scene0999_00: ScanNet scene folder not found"):
        ScanNet(str(root), SCANNET_LABELS, scenes=[SCENE, "scene0999_00"])
    with pytest.raises(DataFormatError, match=r"scannetv2_test\.txt: ScanNet split file not found"):
        ScanNet(str(root), SCANNET_LABELS, split_file="scannetv2_test.txt")
    with pytest.raises(DataFormatError, match=r"other\.tsv: ScanNet label map .* not found"):
        ScanNet(str(root), SCANNET_LABELS, scenes=[SCENE], label_map="other.tsv")
    with pytest.raises(ConfigError, match="exactly one of split_file"):
        ScanNet(str(root), SCANNET_LABELS)
    (root / "bad.tsv").write_text("id\traw_category\tnyu40id\n1\twall\tnone\n")
    with pytest.raises(DataFormatError, match=r"bad\.tsv: line 2: no integer nyu40id"):
        ScanNet(str(root), SCANNET_LABELS, scenes=[SCENE], label_map="bad.tsv")
    (root / "scans" / SCENE / f"{SCENE}_vh_clean_2.ply").unlink()
    _scannet_error(root, r"scene0000_00_vh_clean_2\.ply: mesh file not found", full=False)


# ------------------------------------------------------------------------------ label configs
def test_label_configs_have_the_benchmark_classes():
    s3dis = LabelConfig.load(S3DIS_LABELS)
    assert s3dis.class_names == list(S3DIS_TRAIN)
    assert s3dis.thing_train_ids == list(range(13)) and s3dis.stuff_train_ids == []
    assert s3dis.raw_to_train(np.arange(15)).tolist() == [-1, *range(13), 12]  # stairs -> clutter
    scannet = LabelConfig.load(SCANNET_LABELS)
    assert scannet.num_classes == 20 and scannet.class_names[:3] == ["wall", "floor", "cabinet"]
    assert scannet.class_names[-1] == "otherfurniture" and scannet.stuff_train_ids == [0, 1]
    assert scannet.thing_train_ids == list(range(2, 20))
    valid = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]
    train = scannet.raw_to_train(np.arange(41))
    assert [int(train[i]) for i in valid] == list(range(20))
    assert all(train[i] == -1 for i in range(41) if i not in valid)


# ------------------------------------------------------------------------ transforms, collate
def test_transforms_and_collate_carry_colours(s3dis_root, scannet_root):
    root, written = s3dis_root
    augment = [{"type": "RandomDropout", "ratio": 0.4}, {"type": "RandomRotateZ", "max_deg": 180},
               {"type": "RandomScale", "low": 2.0, "high": 2.0}]
    dataset = S3DIS(str(root), S3DIS_LABELS, areas=[1, 5], features=["color", "height"], transforms=augment)
    dataset.seed = 4
    samples = [dataset[0], dataset[1]]
    for sample, room in zip(samples, ROOMS, strict=True):
        rows = np.concatenate(written[room])[sample["point_index"]]
        assert np.array_equal(sample["color"], (rows[:, 3:] / 255.0).astype(np.float32))
        assert np.allclose(sample["coord"][:, 2], 2 * rows[:, 2], rtol=1e-5)
        assert np.array_equal(sample["feat"][:, 3], sample["coord"][:, 2])
    dropped = sum(len(s["coord"]) for s in samples)
    assert dropped < 19  # the dropout did drop points (of 9 + 10)
    batch = collate(samples)
    n0 = len(samples[0]["coord"])
    assert batch["color"].shape == (dropped, 3) and batch["feat"].shape == (dropped, 4)
    assert np.array_equal(batch["batch"].numpy(), [0] * n0 + [1] * (dropped - n0))
    shift = samples[0]["instance"].max() + 1
    assert np.array_equal(batch["instance"][n0:].numpy(), samples[1]["instance"] + shift)

    scannet = ScanNet(str(scannet_root[0]), SCANNET_LABELS, scenes=[SCENE], transforms=augment)
    sample = scannet[0]
    assert np.array_equal(sample["color"],
                          (scannet_root[1][SCENE][1][sample["point_index"]] / 255.0).astype(np.float32))
    assert np.array_equal(sample["instance"], np.asarray(SCANNET_INSTANCE)[sample["point_index"]])


# -------------------------------------------------------------------------- shipped configs
@pytest.mark.parametrize("name", [f"{dataset}_minkunet14a_{head}" for dataset in ("s3dis", "scannet")
                                  for head in ("asis", "probabilistic", "mpnet", "dpgnet")])
def test_indoor_finetune_configs_build_on_the_fixtures(name, s3dis_root, scannet_root):
    from voxseg.engine import finetune
    from voxseg.engine.optim import build_optimizer
    from voxseg.registry import EVALUATORS, MODELS

    s3dis = name.startswith("s3dis")
    root = s3dis_root[0] if s3dis else scannet_root[0]
    path = ROOT / "configs" / "finetune" / f"{name}.yaml"
    cfg = finetune.resolve(str(path), [f"data.root={root}"] + (["data.train.areas=[1]"] if s3dis else []))
    model = MODELS.build(cfg["model"])
    train_set, val_set = finetune.build_datasets(cfg)
    assert type(train_set).__name__ == ("S3DIS" if s3dis else "ScanNet") and len(train_set) == len(val_set) == 1
    assert model.backbone.in_channels == train_set.in_channels == 3
    labels = train_set.label_config
    assert labels.num_classes == (13 if s3dis else 20)
    head_type = {"asis": "ASISHead", "probabilistic": "ProbabilisticEmbeddingHead", "mpnet": "MPNetHead",
                 "dpgnet": "DPGNetHead"}[name.rsplit("_", 1)[1]]
    (head,) = model.heads.values()
    assert type(head).__name__ == head_type and head.num_classes == labels.num_classes
    assert head.thing_classes == labels.thing_train_ids
    finetune.check_model(model, labels, train_set, EVALUATORS.build(cfg["evaluator"], labels=labels), cfg["train"])
    build_optimizer(model, cfg["train"])  # every param_groups pattern matches (MPNet: its learned betas)
    train_set.check(progress=False)
    val_set.check(progress=False)
    sample = val_set[0]
    assert sample["feat"].shape == (len(sample["coord"]), 3)
    assert sample["name"] == ("Area_5/hallway_2" if s3dis else "scene0001_01")
    assert DATASETS.get("S3DIS") is S3DIS and DATASETS.get("ScanNet") is ScanNet


# -------------------------------------------------------------------------- predictions (tools/infer.py)
def test_scene_files_are_the_scannet_benchmark_format(tmp_path):
    from voxseg.data import scene_predictions as sp

    staging, out = tmp_path / "staging", tmp_path / "out"
    semantic = np.array([5, 5, 3, 0])
    masks = [(np.array([True, True, False, False]), 5, 0.875), (np.array([False, False, True, False]), 3, 0.5)]
    sp.write_scene(staging, "Area_5/office_1", semantic, masks)
    sp.publish_scene(staging, out, "Area_5/office_1")
    assert (out / "semantic" / "Area_5" / "office_1.txt").read_text() == "5\n5\n3\n0\n"
    # mask paths relative to the listing's folder, as ScanNet's evaluate_semantic_instance.py reads them
    assert (out / "instance" / "Area_5" / "office_1.txt").read_text() == (
        "office_1/000.txt 5 0.875\noffice_1/001.txt 3 0.5\n")
    assert (out / "instance" / "Area_5" / "office_1" / "000.txt").read_bytes() == b"1\n1\n0\n0\n"
    assert (out / "instance" / "Area_5" / "office_1" / "001.txt").read_bytes() == b"0\n0\n1\n0\n"
    # another scene leaves this one alone; a semantic-only model's rerun removes its old instances
    sp.write_scene(staging, "Area_5/office_2", semantic[:2], [])
    sp.publish_scene(staging, out, "Area_5/office_2")
    assert (out / "instance" / "Area_5" / "office_2.txt").read_text() == ""
    assert (out / "instance" / "Area_5" / "office_1" / "001.txt").exists()
    sp.write_scene(staging, "Area_5/office_1", semantic[::-1], None)
    sp.publish_scene(staging, out, "Area_5/office_1")
    assert (out / "semantic" / "Area_5" / "office_1.txt").read_text() == "0\n3\n5\n5\n"
    assert not (out / "instance" / "Area_5" / "office_1.txt").exists()
    assert not (out / "instance" / "Area_5" / "office_1").exists()
    assert sorted(p.name for p in (out / "instance" / "Area_5").iterdir()) == ["office_2", "office_2.txt"]
    assert sp.instance_labels(np.array([2, 2, 7, 7, 7, 1]), np.array([0, 0, 0, -1, -1, 1])) == {0: 2, 1: 1}
    assert sp.instance_labels(np.array([4, 3]), np.array([0, 0])) == {0: 3}  # a tie: the smaller id


def _indoor_checkpoint(tmp_path: Path, name: str, root: Path, overrides: list[str]) -> tuple[Path, dict]:
    """An untrained model of a shipped indoor config, saved as a checkpoint (weights + config)."""
    import torch

    import voxseg.models  # noqa: F401
    from voxseg.engine import checkpoint, finetune
    from voxseg.registry import MODELS

    cfg = finetune.resolve(str(ROOT / "configs" / "finetune" / f"{name}.yaml"), [f"data.root={root}", *overrides])
    torch.manual_seed(0)
    model = MODELS.build(cfg["model"])
    path = tmp_path / f"{name}.pt"
    torch.save({"format": checkpoint.FORMAT, "config": cfg, "model": model.state_dict()}, path)
    return path, cfg


def _infer(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(ROOT / "tools" / "infer.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("dataset", ["s3dis", "scannet"])
def test_infer_writes_each_scene_as_the_model_predicts_it(dataset, s3dis_root, scannet_root, tmp_path, one_thread):
    """tools/infer.py on an indoor checkpoint (its validation split by default): the semantic file
    is the model's prediction in raw ids, point for point; each mask is one predicted instance,
    labelled with its majority class, with its score."""
    import torch

    from voxseg.engine.inference import predict
    from voxseg.registry import MODELS

    root = s3dis_root[0] if dataset == "s3dis" else scannet_root[0]
    # min_instance_points 1: an untrained model's clusters are small, and the fixtures tiny
    ckpt, cfg = _indoor_checkpoint(tmp_path, f"{dataset}_minkunet14a_asis", root,
                                   ["model.heads.asis.min_instance_points=1"])
    out = tmp_path / "pred"
    done = _infer("--checkpoint", str(ckpt), "--dataset", str(root), "--out", str(out), "--device", "cpu",
                  "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    val = DATASETS.build({**cfg["data"]["val"], "labels": False}, root=str(root),
                         label_config=cfg["data"]["label_config"])
    model = MODELS.build(cfg["model"])
    model.load_state_dict(torch.load(ckpt, weights_only=False)["model"])
    (name, pred, sample), = list(predict(model, val, torch.device("cpu")))
    assert name == ("Area_5/hallway_2" if dataset == "s3dis" else "scene0001_01")
    labels = val.label_config
    semantic = np.loadtxt(out / "semantic" / f"{name}.txt", dtype=np.int64, ndmin=1)
    assert np.array_equal(semantic[sample["point_index"]], labels.train_to_raw(pred["segment"]))
    listing = (out / "instance" / f"{name}.txt").read_text().splitlines()
    ids = sorted(set(pred["instance"].tolist()) - {-1})
    assert len(listing) == len(ids) > 0
    for line, k in zip(listing, ids, strict=True):
        mask_path, label, score = line.split(" ")
        mask = np.loadtxt(out / "instance" / Path(name).parent / mask_path, dtype=np.int64, ndmin=1)
        members = pred["instance"] == k
        assert np.array_equal(mask[sample["point_index"]], members.astype(np.int64))
        majority = np.bincount(pred["segment"][members]).argmax()
        assert int(label) == labels.train_to_raw(np.array([majority]))[0]
        assert float(score) == pytest.approx(float(pred["instance_score"][members][0]), abs=1e-6)
    # the wrong selection flag for the dataset is one error line; nothing is written
    wrong = ["--sequences", "04"] if dataset == "s3dis" else ["--areas", "5"]
    bad = _infer("--checkpoint", str(ckpt), "--dataset", str(root), "--out", str(tmp_path / "bad"), *wrong)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
