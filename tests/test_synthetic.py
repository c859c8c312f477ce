"""The synthetic LiDAR generator: deterministic, resumable, KITTI-like, with consistent poses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from voxseg.data import semantic_kitti as sk
from voxseg.errors import DataFormatError
from voxseg.synthetic import SyntheticSpec, generate_dataset
from voxseg.synthetic.lidar import SpinningLidar, hdl64e_elevations
from voxseg.synthetic.sequence import KITTI_TR

THINGS = {10, 30, 252, 254}


def lidar_poses(root, seq):
    """T_i = Tr^-1 P_i Tr, written out here independently of the preprocessing package."""
    tr = sk.read_calib(sk.sequence_dir(root, seq) / "calib.txt")["Tr"]
    return np.linalg.inv(tr) @ sk.read_poses(sk.sequence_dir(root, seq) / "poses.txt") @ tr


def test_layout_and_labels(tiny_dataset):
    assert sk.frame_ids(tiny_dataset, 0) == [f"{i:06d}" for i in range(6)]
    for frame in sk.frame_ids(tiny_dataset, 0):
        points = sk.read_scan(sk.scan_path(tiny_dataset, 0, frame))
        semantic, instance = sk.read_label(sk.label_path(tiny_dataset, 0, frame), len(points))
        # 64 beams x 512 columns, most rays return
        assert 0.6 * 64 * 512 < len(points) <= 64 * 512
        assert 0 <= points[:, 3].min() and points[:, 3].max() < 1
        present = set(np.unique(semantic))
        assert {40, 48, 50, 72, 10}.issubset(present)  # road, sidewalk, building, terrain, car
        is_thing = np.isin(semantic, list(THINGS))
        assert (instance[is_thing] > 0).all() and (instance[~is_thing] == 0).all()
        ground = np.isin(semantic, [40, 44, 48, 60, 72]).mean()
        assert 0.3 < ground < 0.85


def test_poses_follow_kitti_convention_and_register_static_points(tiny_dataset):
    poses = lidar_poses(tiny_dataset, 0)
    assert np.allclose(poses[0], np.eye(4), atol=1e-6)
    steps = np.diff(poses[:, :3, 3], axis=0)
    forward = np.einsum("nij,nj->ni", np.linalg.inv(poses[:-1, :3, :3]), steps)
    assert np.all((forward[:, 0] > 0.5) & (forward[:, 0] < 1.0))  # 6-9 m/s at 10 Hz, along the LiDAR x axis
    assert np.all(np.abs(forward[:, 1:]) < 0.1)

    def world_buildings(frame):
        points = sk.read_scan(sk.scan_path(tiny_dataset, 0, f"{frame:06d}"))
        semantic, _ = sk.read_label(sk.label_path(tiny_dataset, 0, f"{frame:06d}"))
        xyz = points[semantic == 50, :3].astype(np.float64)
        return xyz @ poses[frame][:3, :3].T + poses[frame][:3, 3], xyz

    world0, local0 = world_buildings(0)
    world5, local5 = world_buildings(5)
    registered = np.median(cKDTree(world0).query(world5)[0])
    unregistered = np.median(cKDTree(local0).query(local5)[0])
    assert registered < 0.15 < unregistered


def test_moving_objects_keep_their_instance_ids(tiny_dataset):
    ids = []
    for frame in ("000000", "000005"):
        semantic, instance = sk.read_label(sk.label_path(tiny_dataset, 0, frame))
        ids.append(set(instance[np.isin(semantic, [252, 254])].tolist()))
    assert ids[0] & ids[1]


def test_deterministic_and_resumable(tmp_path):
    spec = SyntheticSpec({"03": 3}, seed=1, azimuth_steps=256)
    a = generate_dataset(tmp_path / "a", spec, progress=False)
    b = generate_dataset(tmp_path / "b", spec, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    # an interrupted run: one scan missing, sequence not marked complete -> the rerun restores it
    (b / "sequences" / "03" / "velodyne" / "000001.bin").unlink()
    (b / "sequences" / "03" / ".complete").unlink()
    generate_dataset(tmp_path / "b", spec, progress=False)
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_refuses_to_mix_settings(tmp_path):
    generate_dataset(tmp_path / "a", SyntheticSpec({"00": 1}, seed=1, azimuth_steps=128), progress=False)
    with pytest.raises(DataFormatError, match=r"synthetic\.json: the dataset there was generated with other settings"):
        generate_dataset(tmp_path / "a", SyntheticSpec({"00": 1}, seed=2, azimuth_steps=128), progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataFormatError, match="not empty"):
        generate_dataset(tmp_path / "other", SyntheticSpec({"00": 1}), progress=False)


def test_hdl64e_geometry():
    elevations = hdl64e_elevations()
    assert len(elevations) == 64
    assert elevations.max() == pytest.approx(2.0) and elevations.min() == pytest.approx(-24.33)
    assert np.allclose(np.diff(elevations[:32]), -10.33 / 31) and np.allclose(np.diff(elevations[32:]), -0.5)
    lidar = SpinningLidar(azimuth_steps=100)
    directions = lidar.directions(np.zeros(64), np.random.default_rng(0))
    assert directions.shape == (6400, 3) and np.allclose(np.linalg.norm(directions, axis=1), 1)


def test_calib_is_kittis(tiny_dataset):
    assert np.allclose(sk.read_calib(sk.sequence_dir(tiny_dataset, 0) / "calib.txt")["Tr"], KITTI_TR)
