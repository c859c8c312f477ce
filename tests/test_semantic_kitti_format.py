"""SemanticKITTI files: round trips and one clear error per kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest

from voxseg.data import semantic_kitti as sk
from voxseg.errors import DataFormatError


def test_scan_and_label_round_trip(tmp_path, rng):
    points = rng.normal(size=(100, 4)).astype(np.float32)
    semantic = rng.integers(0, 260, 100)
    instance = rng.integers(0, 70000 % 0xFFFF, 100)
    sk.write_scan(tmp_path / "a.bin", points)
    sk.write_label(tmp_path / "a.label", semantic, instance)
    assert np.array_equal(sk.read_scan(tmp_path / "a.bin"), points)
    sem, inst = sk.read_label(tmp_path / "a.label", num_points=100)
    assert np.array_equal(sem, semantic) and np.array_equal(inst, instance)
    # the packing is SemanticKITTI's: semantic in the lower 16 bits, instance in the upper 16
    raw = np.fromfile(tmp_path / "a.label", dtype=np.uint32)
    assert raw[0] == (instance[0] << 16) + semantic[0]


def test_truncated_scan_names_the_file(tmp_path):
    path = tmp_path / "000001.bin"
    path.write_bytes(np.zeros(4 * 10 + 1, np.float32).tobytes()[:-2])
    with pytest.raises(DataFormatError, match=r"000001\.bin: 162 bytes is not a multiple of 16"):
        sk.read_scan(path)


def test_nan_coordinates_are_rejected(tmp_path):
    points = np.zeros((5, 4), np.float32)
    points[3, 1] = np.nan
    points[4, 0] = np.inf
    sk.write_scan(tmp_path / "x.bin", points)
    with pytest.raises(DataFormatError,
                       match=r"x\.bin: 2 of 5 points have NaN or infinite coordinates \(first at point 3\)"):
        sk.read_scan(tmp_path / "x.bin")


def test_nan_intensities_are_rejected(tmp_path):
    points = np.ones((4, 4), np.float32)
    points[2, 3] = np.nan
    sk.write_scan(tmp_path / "000042.bin", points)
    with pytest.raises(DataFormatError,
                       match=r"000042\.bin: 1 of 4 points have NaN or infinite intensities \(first at point 2\)"):
        sk.read_scan(tmp_path / "000042.bin")


def test_sizes_from_the_files(tmp_path):
    sk.write_scan(tmp_path / "a.bin", np.zeros((0, 4), np.float32))
    assert sk.scan_size(tmp_path / "a.bin") == 0
    with pytest.raises(DataFormatError, match=r"a\.bin: empty scan \(0 points\)"):
        sk.scan_size(tmp_path / "a.bin", allow_empty=False)
    sk.write_label(tmp_path / "a.label", np.ones(6, int))
    assert sk.label_size(tmp_path / "a.label") == 6 and sk.label_size(tmp_path / "a.label", num_points=6) == 6
    with pytest.raises(DataFormatError, match=r"a\.label: 6 labels for a scan of 5 points"):
        sk.label_size(tmp_path / "a.label", num_points=5)


def test_label_count_mismatch(tmp_path):
    sk.write_label(tmp_path / "a.label", np.ones(9, int))
    with pytest.raises(DataFormatError, match=r"a\.label: 9 labels for a scan of 10 points"):
        sk.read_label(tmp_path / "a.label", num_points=10)
    (tmp_path / "b.label").write_bytes(b"\0" * 7)
    with pytest.raises(DataFormatError, match=r"b\.label: 7 bytes is not a multiple of 4"):
        sk.read_label(tmp_path / "b.label")


def test_missing_files_and_sequences(tmp_path):
    with pytest.raises(DataFormatError, match=r"nope\.bin: scan file not found"):
        sk.read_scan(tmp_path / "nope.bin")
    with pytest.raises(DataFormatError, match=r"sequences/07: sequence not found"):
        sk.frame_ids(tmp_path, 7)


def test_poses_and_calib_round_trip(tmp_path, rng):
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, :3, 3] = rng.normal(size=(3, 3))
    sk.write_poses(tmp_path / "poses.txt", poses)
    assert np.allclose(sk.read_poses(tmp_path / "poses.txt"), poses)
    tr = np.eye(4)
    tr[:3, :3] = [[0, -1, 0], [0, 0, -1], [1, 0, 0]]
    sk.write_calib(tmp_path / "calib.txt", {"P0": np.eye(4), "Tr": tr})
    assert np.allclose(sk.read_calib(tmp_path / "calib.txt")["Tr"], tr)


def test_bad_poses_and_calib(tmp_path):
    (tmp_path / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1\n")
    with pytest.raises(DataFormatError, match=r"poses\.txt: line 2: expected 12 numbers \(3x4 pose\), got 11"):
        sk.read_poses(tmp_path / "poses.txt")
    (tmp_path / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 x\n")
    with pytest.raises(DataFormatError, match=r"poses\.txt: line 1: not a number"):
        sk.read_poses(tmp_path / "poses.txt")
    (tmp_path / "calib.txt").write_text("P0: " + " ".join(["1"] * 12) + "\n")
    with pytest.raises(DataFormatError, match=r"calib\.txt: no 'Tr:' line"):
        sk.read_calib(tmp_path / "calib.txt")


def test_writes_are_atomic(tmp_path, monkeypatch):
    """A failing write leaves the previous file intact and no temporary file behind."""
    sk.write_scan(tmp_path / "a.bin", np.ones((2, 4), np.float32))

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", explode)
    with pytest.raises(OSError):
        sk.write_scan(tmp_path / "a.bin", np.zeros((5, 4), np.float32))
    assert np.array_equal(sk.read_scan(tmp_path / "a.bin"), np.ones((2, 4), np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
