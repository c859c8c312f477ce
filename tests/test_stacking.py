"""Frame stacking: KITTI's pose convention (checked against real sequence 00 values), windows."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing import stacking
from voxseg.data import semantic_kitti as sk

# From ../shared/data/README.md: KITTI odometry sequence 00, calib Tr and the first two poses.
KITTI_TR = ("4.276802385584e-04 -9.999672484946e-01 -8.084491683471e-03 -1.198459927713e-02 "
            "-7.210626507497e-03 8.081198471645e-03 -9.999413164504e-01 -5.403984729748e-02 "
            "9.999738645903e-01 4.859485810390e-04 -7.206933692422e-03 -2.921968648686e-01")
KITTI_POSES = ("1 0 0 0 0 1 0 0 0 0 1 0\n"
               "0.9999978 0.0005272628 -0.002066935 -0.04690294 -0.0005296506 0.9999992 -0.001154865 "
               "-0.02839928 0.002066324 0.001155958 0.9999971 0.8586941\n")


@pytest.fixture
def kitti_files(tmp_path):
    zeros = " ".join(["0"] * 12)
    (tmp_path / "calib.txt").write_text(f"P0: {zeros}\nP1: {zeros}\nP2: {zeros}\nP3: {zeros}\nTr: {KITTI_TR}\n")
    (tmp_path / "poses.txt").write_text(KITTI_POSES)
    return tmp_path / "calib.txt", tmp_path / "poses.txt"


def test_lidar_pose_matches_kitti_check(kitti_files):
    poses = stacking.lidar_poses(*kitti_files)
    assert poses.shape == (2, 4, 4)
    np.testing.assert_allclose(poses[1, :3, 3], [0.8588, 0.0465, 0.0222], atol=5e-4)
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-6)
    # applying the camera pose directly (the classic mistake) would move along z instead
    assert abs(sk.read_poses(kitti_files[1])[1, 2, 3]) > 0.8


def test_camera_poses_inverts_lidar_poses(kitti_files):
    tr = sk.read_calib(kitti_files[0])["Tr"]
    lidar = stacking.lidar_poses(*kitti_files)
    np.testing.assert_allclose(stacking.camera_poses(lidar, tr), sk.read_poses(kitti_files[1]), atol=1e-9)


def test_stack_moves_points_into_reference_frame():
    pose1 = np.eye(4)
    pose1[:3, 3] = [1.0, 2.0, 0.0]
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z
    pose2 = np.eye(4)
    pose2[:3, :3], pose2[:3, 3] = rot, [1.0, 2.0, 0.0]
    scans = [np.array([[1.0, 0.0, 0.0, 0.5]], np.float32), np.array([[1.0, 0.0, 0.0, 0.7]], np.float32)]
    points, owner = stacking.stack(scans, np.stack([pose1, pose2]), reference=0)
    # scan 1's point (1, 0, 0) rotated by 90 degrees is (0, 1, 0) in scan 0's frame; intensity kept
    np.testing.assert_allclose(points, [[1, 0, 0, 0.5], [0, 1, 0, 0.7]], atol=1e-6)
    np.testing.assert_array_equal(owner, [0, 1])


def test_stacked_static_scene_lines_up(tiny_dataset):
    """A parked car seen from two positions 5 scans apart: after stacking, its points coincide;
    without the poses they are metres apart."""
    from scipy.spatial import cKDTree

    seq = sk.sequence_dir(tiny_dataset, "00")
    poses = stacking.lidar_poses(seq / "calib.txt", seq / "poses.txt")
    scans, labels = [], []
    for i in (0, 5):
        scan = sk.read_scan(seq / "velodyne" / f"{i:06d}.bin")
        scans.append(scan)
        labels.append(sk.read_label(seq / "labels" / f"{i:06d}.label", len(scan)))
    parked = [(sem == 10) & (ins > 0) for sem, ins in labels]
    common = np.intersect1d(labels[0][1][parked[0]], labels[1][1][parked[1]])
    car = max(common, key=lambda c: min(np.sum(labels[0][1] == c), np.sum(labels[1][1] == c)))
    points, owner = stacking.stack(scans, poses[[0, 5]])
    first = points[owner == 0][labels[0][1] == car, :3]
    second = points[owner == 1][labels[1][1] == car, :3]
    stacked_gap = np.median(cKDTree(first).query(second)[0])
    raw_gap = np.median(cKDTree(first).query(scans[1][labels[1][1] == car, :3])[0])
    assert stacked_gap < 0.1 and raw_gap > 1.0


def test_windows_cover_every_scan():
    ws = stacking.windows(50, size=12, stride=4)
    assert [(w.start, w.stop) for w in ws[:2]] == [(0, 12), (4, 16)]
    assert ws[-1].stop == 50 and all(w.stop - w.start == 12 for w in ws)
    covered = set().union(*(set(w.frames) for w in ws))
    assert covered == set(range(50))
    assert stacking.windows(5, 12, 4) == [stacking.Window(0, 0, 5)]
    # home window: the one where the scan is most central
    assert stacking.home_window(6, ws).start == 0  # centre 5.5 beats 9.5
    assert stacking.home_window(10, ws).start == 4


def test_windows_reject_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        stacking.windows(10, size=0)
