"""ISCC pretraining data: the window group ids preprocessing publishes, and the pair dataset."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.spatial import cKDTree

from preprocessing import pipeline
from tests.helpers import ROOT, SYNTHETIC_LABELS
from voxseg.data import groups as grouplib, semantic_kitti as sk
from voxseg.data.collate import collate
from voxseg.data.pretrain_pairs import ISCCPairs
from voxseg.errors import ConfigError, DataFormatError
from voxseg.registry import DATASETS, TRANSFORMS

CONFIG = ROOT / "configs" / "preprocess" / "default.yaml"
SMALL = ["stacking.window=4", "stacking.stride=2"]  # seq 00 (6 scans): windows 0..3 and 2..5; seq 01: one of 3


def cfg(*extra):
    return pipeline.resolve(CONFIG, [*SMALL, *extra])


@pytest.fixture(scope="module")
def grouped(tiny_dataset, tmp_path_factory):
    """The tiny dataset's groups, made by the real preprocessing into a folder of their own."""
    out = tmp_path_factory.mktemp("pretrain_groups")
    pipeline.run(tiny_dataset, ["00", "01"], cfg(), out=out, progress=False)
    return out


def pairs(tiny_dataset, grouped, **kwargs):
    kwargs.setdefault("sequences", ["00", "01"])
    return ISCCPairs(root=str(tiny_dataset), groups_root=str(grouped), **kwargs)


def scan_labels(root, sequence, i):
    scan = sk.read_scan(sk.scan_path(root, sequence, f"{i:06d}"))
    return scan, *sk.read_label(sk.label_path(root, sequence, f"{i:06d}"), len(scan))


# ----------------------------------------------------------------------- window outputs
def test_window_files_are_published_with_a_versioned_manifest(tiny_dataset, grouped):
    target = grouped / "sequences" / "00" / "groups"
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["format_version"] == grouplib.FORMAT_VERSION == 2 and manifest["status"] == "complete"
    assert manifest["window_scans"] == [[0, 4], [2, 6]]
    assert sorted(p.name for p in (target / "windows").iterdir()) == ["00000.npz", "00001.npz"]
    assert not (target / ".windows").exists()  # the resume cache was promoted, not copied
    for w, (a, b) in enumerate(manifest["window_scans"]):
        start, frames, counts = grouplib.read_window_index(target / "windows" / f"{w:05d}.npz")
        assert start == a and frames == [f"{i:06d}" for i in range(a, b)]
        assert list(counts) == [sk.scan_size(sk.scan_path(tiny_dataset, "00", f)) for f in frames]


def test_window_ids_map_one_to_one_onto_the_published_ids_of_home_scans(tiny_dataset, grouped):
    """A scan's .group ids are its home window's ids renamed by linking: the two label the same
    points alike (a bijection between ids, -1 to -1)."""
    from preprocessing.stacking import home_window, windows

    groups = grouplib.SequenceGroups(grouped / "sequences" / "00" / "groups", sk.frame_ids(tiny_dataset, "00"))
    all_windows = windows(6, 4, 2)
    for i in range(6):
        published = pipeline.read_groups(grouped / "sequences" / "00" / "groups" / f"{i:06d}.group")
        local = groups.ids(home_window(i, all_windows).index, i, len(published))
        np.testing.assert_array_equal(local == -1, published == -1)
        pairs_ = np.unique(np.stack([local, published]), axis=1)
        assert len(np.unique(pairs_[0])) == len(np.unique(pairs_[1])) == pairs_.shape[1]


def test_an_object_has_one_id_in_every_scan_of_a_window(tiny_dataset, grouped):
    """Parked cars (ground truth: class 10, one instance id) take one window id in all 4 scans."""
    groups = grouplib.SequenceGroups(grouped / "sequences" / "00" / "groups", sk.frame_ids(tiny_dataset, "00"))
    checked = 0
    for w, (a, b) in enumerate(groups.windows):
        per_scan = []
        for i in range(a, b):
            scan, semantic, instance = scan_labels(tiny_dataset, "00", i)
            per_scan.append((semantic, instance, groups.ids(w, i, len(scan))))
        cars = set.intersection(*[set(ins[(sem == 10) & (ins > 0)]) for sem, ins, _ in per_scan])
        for car in cars:
            ids = [g[(ins == car) & (g >= 0)] for _, ins, g in per_scan]
            if min(len(x) for x in ids) < 50:
                continue
            dominant = {int(np.bincount(x).argmax()) for x in ids}
            assert len(dominant) == 1, (w, car, dominant)
            assert all(np.mean(x == next(iter(dominant))) > 0.5 for x in ids)  # a majority in each scan
            checked += 1
    assert checked >= 8


def test_a_format_1_output_is_upgraded_by_a_rerun(tiny_dataset, grouped, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(grouped, out)
    target = out / "sequences" / "01" / "groups"
    shutil.rmtree(target / "windows")
    manifest = json.loads((target / "manifest.json").read_text())
    for key in ("format_version", "window_scans", "windows_layout"):
        del manifest[key]
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataFormatError, match=r"01/groups/manifest\.json: groups of format version 1"):
        pairs(tiny_dataset, out, sequences=["01"])
    group_files = {p.name: p.read_bytes() for p in target.glob("*.group")}
    summary = pipeline.run(tiny_dataset, ["00", "01"], cfg(), out=out, progress=False)
    assert summary.sequences["00"]["status"] == "already complete"
    assert summary.sequences["01"]["status"] == "complete" and summary.sequences["01"]["written"] == 0
    assert {p.name: p.read_bytes() for p in target.glob("*.group")} == group_files
    reference = grouplib.SequenceGroups(grouped / "sequences" / "01" / "groups", sk.frame_ids(tiny_dataset, "01"))
    upgraded = grouplib.SequenceGroups(target, sk.frame_ids(tiny_dataset, "01"))
    for i in range(3):
        np.testing.assert_array_equal(upgraded.ids(0, i), reference.ids(0, i))


# --------------------------------------------------------------------------------- pairs
def test_registered_and_built_from_a_config(tiny_dataset, grouped):
    ds = DATASETS.build({"type": "ISCCPairs", "sequences": [0, 1], "features": ["intensity", "range"],
                         "view1_transforms": [{"type": "RandomRotateZ"}], "view2_transforms": [{"type": "RandomFlip"}],
                         "groups_root": str(grouped), "group_params": {"stacking": {"window": 4, "stride": 2}},
                         "labels": True},
                        root=str(tiny_dataset), label_config=str(SYNTHETIC_LABELS))
    assert len(ds) == 9 and ds.in_channels == 2 and ds.name(6) == "01/000000"
    ds.check(progress=False)
    sample = ds[0]
    for view in ("view1", "view2"):
        v = sample[view]
        n = len(v["coord"])
        assert v["coord"].dtype == np.float32 and v["feat"].shape == (n, 2) and v["feat"].dtype == np.float32
        assert v["group"].dtype == np.int64 and v["group"].shape == v["point_index"].shape == (n,)
        np.testing.assert_allclose(v["feat"][:, 1], np.linalg.norm(v["coord"], axis=1), rtol=1e-6)
        assert v["segment"].shape == v["instance"].shape == (n,)
    assert sample["view1"]["coord"].shape[0] < sk.scan_size(sk.scan_path(tiny_dataset, "00", "000000"))  # masked


def test_how_many_groups_are_masked(tiny_dataset, grouped):
    rng = np.random.default_rng(0)
    shared = np.arange(10, 30)
    assert len(pairs(tiny_dataset, grouped, mask_ratio=0.3).choose_masked(shared, rng)) == 6
    assert len(pairs(tiny_dataset, grouped, mask_ratio=0.3, max_masked_groups=4).choose_masked(shared, rng)) == 4
    everything = pairs(tiny_dataset, grouped, mask_ratio=1.0, max_masked_groups=100)
    chosen = everything.choose_masked(shared, rng)
    assert len(chosen) == 19 and set(chosen) < set(shared)  # one group always stays
    assert len(everything.choose_masked(shared[:1], rng)) == 0


def test_the_partner_is_another_scan_of_the_same_window_within_the_distance(tiny_dataset, grouped):
    ds = pairs(tiny_dataset, grouped, max_frame_distance=1, max_query_points=0)
    seen = set()
    for epoch in range(4):
        ds.epoch = epoch
        for index in range(len(ds)):
            sample = ds[index]
            sequence, i = ds.frames[index]
            j = int(sample["pair"].split("/")[1])
            a, b = ds.groups[sequence].windows[sample["window"]]
            assert sample["pair"].startswith(sequence + "/") and j != i and abs(j - i) <= 1
            assert a <= i < b and a <= j < b
            seen.add((index, j, sample["window"]))
    assert {(4, 3, 1), (4, 5, 1)} <= seen  # scan 4 pairs with both neighbours
    assert (2, 1, 0) in seen and (2, 3, 1) in seen  # scan 2 is in both windows


def test_a_sample_is_a_function_of_seed_epoch_and_index(tiny_dataset, grouped):
    ds = pairs(tiny_dataset, grouped, view1_transforms=[{"type": "RandomRotateZ"}, {"type": "RandomDropout"}])
    a, b = ds[3], ds[3]
    for view in ("view1", "view2", "query"):
        for key in a[view]:
            np.testing.assert_array_equal(a[view][key], b[view][key])
    ds.epoch = 1
    assert not np.array_equal(ds[3]["view1"]["coord"][:10], a["view1"]["coord"][:10])


def raw_ids(ds, sample, view):
    """The window ids of a view's points before any was set to -1, from the window file."""
    sequence = sample["name"].split("/")[0]
    groups = ds.groups[sequence]
    frame = (sample["name"] if view == "view1" else sample["pair"]).split("/")[1]
    return groups.ids(sample["window"], groups.frames.index(frame))[sample[view]["point_index"]]


def test_no_point_of_a_masked_group_reaches_the_student(tiny_dataset, grouped):
    ds = pairs(tiny_dataset, grouped,
               view1_transforms=[{"type": "RandomRotateZ"}, {"type": "RandomDropout", "ratio": 0.2}],
               mask_ratio=0.5, max_masked_groups=100, max_query_points=10**6)
    masked_total = 0
    for index in range(len(ds)):
        sample = ds[index]
        masked = np.unique(sample["query"]["group"])
        assert masked.min(initial=0) >= 0
        raw1 = raw_ids(ds, sample, "view1")
        assert not np.isin(raw1, masked).any()  # exact: not one point of a removed group
        assert not np.isin(sample["view1"]["group"], masked).any()
        assert not np.isin(sample["view2"]["group"], masked).any()
        # the masked groups were visible in view 2 (raw ids), so they were shared groups
        assert np.isin(masked, raw_ids(ds, sample, "view2")).all()
        masked_total += len(masked)
    assert masked_total >= 5 * len(ds)


def test_groups_in_one_view_only_are_none_in_both(tiny_dataset, grouped):
    ds = pairs(tiny_dataset, grouped, view2_transforms=[{"type": "RangeCrop", "max_range": 12.0}],
               mask_ratio=0.3, max_query_points=0)
    one_sided = 0
    for index in range(len(ds)):
        sample = ds[index]
        raw1, raw2 = raw_ids(ds, sample, "view1"), raw_ids(ds, sample, "view2")
        shared = np.intersect1d(raw1[raw1 >= 0], raw2[raw2 >= 0])
        np.testing.assert_array_equal(sample["view1"]["group"], np.where(np.isin(raw1, shared), raw1, -1))
        np.testing.assert_array_equal(sample["view2"]["group"], np.where(np.isin(raw2, shared), raw2, -1))
        one_sided += len(np.setdiff1d(raw1[raw1 >= 0], shared))
        assert len(shared) > 0
    assert one_sided > 0  # the crop left groups in view 1 only, and they were set to -1


def test_queries_lie_on_the_rays_through_removed_points(tiny_dataset, grouped):
    ds = pairs(tiny_dataset, grouped, mask_ratio=0.5, max_query_points=300)
    sample = ds[1]
    query = sample["query"]
    coord, offset = query["coord"].astype(np.float64), query["surface_offset"].astype(np.float64)
    m = len(coord) // 3
    assert m == 300 and query["coord"].dtype == query["surface_offset"].dtype == np.float32
    behind, front, between = coord[:m], coord[m:2 * m], coord[2 * m:]
    ob, of, ot = offset[:m], offset[m:2 * m], offset[2 * m:]
    assert (ob > 0).all() and (ob <= 0.1).all() and (of < 0).all() and (of >= -0.1).all() and (ot < 0).all()
    surface = behind * (1 - ob / np.linalg.norm(behind, axis=1))[:, None]  # p, from the occupied query
    r = np.linalg.norm(surface, axis=1)
    np.testing.assert_allclose(np.linalg.norm(behind, axis=1), r + ob, atol=1e-4)  # beyond p
    np.testing.assert_allclose(front, surface * ((r + of) / r)[:, None], atol=1e-4)  # before p, same ray
    np.testing.assert_allclose(between, surface * ((r + ot) / r)[:, None], atol=1e-4)
    # every p is a point of the scan (view 1 has no transforms here) of the group the query names
    scan = sk.read_scan(sk.scan_path(tiny_dataset, *sample["name"].split("/")))
    distance, row = cKDTree(scan[:, :3]).query(surface)
    assert distance.max() < 1e-4
    groups = ds.groups[sample["name"].split("/")[0]]
    window_ids = groups.ids(sample["window"], groups.frames.index(sample["name"].split("/")[1]))
    np.testing.assert_array_equal(window_ids[row], query["group"][:m])
    # ALSO's intensity targets: p's intensity behind and in front of the surface, none in free space
    intensity = query["surface_intensity"]
    assert intensity.dtype == np.float32
    np.testing.assert_array_equal(intensity[:m], scan[row, 3])
    np.testing.assert_array_equal(intensity[m:2 * m], scan[row, 3])
    assert np.isnan(intensity[2 * m:]).all()


def test_visible_queries_follow_the_crops_and_change_nothing_else(tiny_dataset, grouped):
    """visible_query_points casts the same three queries through visible points of view 1 (group
    -1), after the crops' queries, from a stream of its own: the views, the masked groups and the
    crops' queries are those of the dataset without them, array for array."""
    plain = pairs(tiny_dataset, grouped, mask_ratio=0.5, max_query_points=40,
                  view1_transforms=[{"type": "RandomRotateZ"}, {"type": "RandomDropout", "ratio": 0.2}])
    also = pairs(tiny_dataset, grouped, mask_ratio=0.5, max_query_points=40, visible_query_points=25,
                 view1_transforms=[{"type": "RandomRotateZ"}, {"type": "RandomDropout", "ratio": 0.2}])
    for index in (1, 6):
        a, b = plain[index], also[index]
        for view in ("view1", "view2"):
            assert a[view].keys() == b[view].keys()
            for key in a[view]:
                np.testing.assert_array_equal(a[view][key], b[view][key])
        crops = len(a["query"]["coord"])
        assert crops == 3 * 40 and len(b["query"]["coord"]) == crops + 3 * 25
        for key in a["query"]:
            np.testing.assert_array_equal(b["query"][key][:crops], a["query"][key])
        visible = {key: value[crops:] for key, value in b["query"].items()}
        assert (visible["group"] == -1).all() and (a["query"]["group"] >= 0).all()
        coord, offset = visible["coord"].astype(np.float64), visible["surface_offset"].astype(np.float64)
        behind, ob = coord[:25], offset[:25]
        assert (ob > 0).all() and (ob <= 0.1).all() and (offset[25:50] < 0).all() and (offset[50:] < 0).all()
        surface = behind * (1 - ob / np.linalg.norm(behind, axis=1))[:, None]  # p, from the occupied query
        distance, row = cKDTree(b["view1"]["coord"].astype(np.float64)).query(surface)
        assert distance.max() < 1e-4  # each p is a point the student sees
        assert len(np.unique(row)) == 25  # drawn without replacement
        np.testing.assert_array_equal(visible["surface_intensity"][:50], np.tile(b["view1"]["intensity"][row, 0], 2))
        assert np.isnan(visible["surface_intensity"][50:]).all()


def test_query_geometry_for_a_hand_built_point(tiny_dataset, grouped):
    ds = pairs(tiny_dataset, grouped, surface_distance=0.5)
    p = np.array([[3.0, 4.0, 0.0], [0.3, 0.0, 0.0]], dtype=np.float32)  # |p| = 5; the second is too near
    query = ds.queries(p, np.array([7, 8]), np.array([0.25, 0.75], np.float32), np.random.default_rng(0), 1024)
    coord, offset = query["coord"].astype(np.float64), query["surface_offset"].astype(np.float64)
    assert coord.shape == (3, 3) and list(query["group"]) == [7, 7, 7]
    np.testing.assert_array_equal(query["surface_intensity"], np.array([0.25, 0.25, np.nan], np.float32))
    direction = np.array([0.6, 0.8, 0.0])
    assert 0 < offset[0] < 0.5 and -0.5 < offset[1] < 0 and -5 < offset[2] < 0
    np.testing.assert_allclose(coord[0], [3, 4, 0] + offset[0] * direction, atol=1e-6)  # p + d u dir
    np.testing.assert_allclose(coord[1], [3, 4, 0] + offset[1] * direction, atol=1e-6)  # p - d u dir
    np.testing.assert_allclose(coord[2], (1 + offset[2] / 5) * np.array([3, 4, 0]), atol=1e-6)  # u p
    assert np.linalg.norm(coord[0]) > 5 > np.linalg.norm(coord[1]) > np.linalg.norm(coord[2])


def test_collate_keeps_shared_ids_equal_and_samples_apart(tiny_dataset, grouped):
    ds = pairs(tiny_dataset, grouped, mask_ratio=0.3, max_query_points=50)
    batch = collate([ds[0], ds[7]])
    for b in range(2):
        ids = [set(batch[v]["group"][batch[v]["batch"] == b].tolist()) - {-1} for v in ("view1", "view2")]
        assert ids[0] == ids[1] and len(ids[0]) > 0
    first = set(batch["view1"]["group"][batch["view1"]["batch"] == 0].tolist()) - {-1}
    second = set(batch["view1"]["group"][batch["view1"]["batch"] == 1].tolist()) - {-1}
    assert not first & second
    masked = [set(batch["query"]["group"][batch["query"]["batch"] == b].tolist()) for b in range(2)]
    assert masked[0] and masked[1] and not masked[0] & masked[1] and not masked[1] & second
    assert batch["query"]["surface_offset"].shape == (len(batch["query"]["coord"]),) == (300,)
    assert batch["query"]["surface_intensity"].shape == (300,)  # a per-query key: concatenated
    assert batch["name"] == ["00/000000", "01/000001"] and batch["window"].tolist() == [0, 0]


# ----------------------------------------------------------------------------- bad input
def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_dataset_without_groups_names_the_folder(tiny_dataset):
    with pytest.raises(DataFormatError, match=r"sequences/00/groups: no groups folder") as exc:
        ISCCPairs(root=str(tiny_dataset), sequences=["00"])
    assert str(tiny_dataset) in one_line(exc)


def test_groups_made_with_other_parameters_are_refused(tiny_dataset, grouped):
    with pytest.raises(DataFormatError, match=r"00/groups/manifest\.json: these groups were made with other "
                                              r"parameters: stacking\.window=4 where the config expects 12") as exc:
        pairs(tiny_dataset, grouped, group_params={"stacking": {"window": 12, "stride": 2}})
    one_line(exc)
    pairs(tiny_dataset, grouped, group_params={"stacking": {"window": 4}, "grouping": {"voxel_size": 0.2}})


def test_sequences_grouped_with_other_parameters_are_refused(tiny_dataset, grouped, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(grouped, out)
    path = out / "sequences" / "01" / "groups" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"]["grouping"]["voxel_size"] = 0.3
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataFormatError, match=r"01/groups/manifest\.json: these groups were made with other "
                                              r"parameters than .*00/groups/manifest\.json"):
        pairs(tiny_dataset, out)


def test_another_format_version_or_an_unfinished_run_is_refused(tiny_dataset, grouped, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(grouped, out)
    path = out / "sequences" / "00" / "groups" / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "format_version": 3}))
    with pytest.raises(DataFormatError, match=r"00/groups/manifest\.json: groups of format version 3, this voxseg "
                                              r"reads version 2"):
        pairs(tiny_dataset, out)
    path.write_text(json.dumps({**manifest, "status": "running"}))
    with pytest.raises(DataFormatError, match=r"manifest\.json: preprocessing is not complete"):
        pairs(tiny_dataset, out)


def test_window_ids_of_the_wrong_length_or_a_missing_window_file(tiny_dataset, grouped, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(grouped, out)
    windows = out / "sequences" / "01" / "groups" / "windows"
    start, frames, counts = grouplib.read_window_index(windows / "00000.npz")
    ids = [grouplib.read_window_ids(windows / "00000.npz", f) for f in frames]
    ids[1] = ids[1][:-3]
    grouplib.write_window(windows / "00000.npz", start, frames, ids)
    ds = pairs(tiny_dataset, out)
    with pytest.raises(DataFormatError,
                       match=r"01/groups/windows/00000\.npz: \d+ group ids for scan 000001 of \d+ points"):
        ds.check(full=False, progress=False)
    with pytest.raises(DataFormatError, match=r"00000\.npz: \d+ group ids for scan 000001"):
        ds[7]
    (windows / "00000.npz").unlink()
    with pytest.raises(DataFormatError, match=r"01/groups/windows/00000\.npz: window group file not found"):
        ds.check(full=False, progress=False)


class Shift:
    """A transform that moves the sensor off the origin."""

    def __call__(self, sample, rng):
        return {**sample, "coord": sample["coord"] + 1}


def test_bad_settings_are_config_errors(tiny_dataset, grouped):
    if "ShiftForTest" not in TRANSFORMS:
        TRANSFORMS.register("ShiftForTest")(Shift)
    with pytest.raises(ConfigError,
                       match=r"view1_transforms: ShiftForTest is not known to keep the sensor at the origin"):
        pairs(tiny_dataset, grouped, view1_transforms=[{"type": "ShiftForTest"}])
    pairs(tiny_dataset, grouped, view2_transforms=[{"type": "ShiftForTest"}])  # the teacher's view casts no queries
    with pytest.raises(ConfigError, match="mask_ratio out of range"):
        pairs(tiny_dataset, grouped, mask_ratio=1.5)
    with pytest.raises(ConfigError, match=r"visible_query_points out of range, got -1"):
        pairs(tiny_dataset, grouped, visible_query_points=-1)
    with pytest.raises(ConfigError, match="unknown point feature"):
        pairs(tiny_dataset, grouped, features=["colour"])


def test_a_scan_without_a_partner_is_refused(tiny_dataset, grouped, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(grouped, out)
    path = out / "sequences" / "01" / "groups" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "window_scans": [[0, 1], [1, 3]]}))
    with pytest.raises(DataFormatError, match=r"01/groups/manifest\.json: scan 000000 shares no window with another "
                                              r"scan within max_frame_distance=4"):
        pairs(tiny_dataset, out, sequences=["01"])
