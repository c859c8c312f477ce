"""LiDAR odometry (KISS-ICP) against true synthetic poses and real KITTI scans; poses.txt handling,
estimated poses written to the output and never into the input sequence."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from preprocessing import stacking
from preprocessing.odometry import (
    estimate_poses,
    estimate_sequence_poses,
    missing_poses,
    poses_file,
    stored_poses,
    write_estimated_poses,
)
from tests.helpers import read_only, snapshot
from voxseg.data import semantic_kitti as sk
from voxseg.errors import DataFormatError

NUM_FRAMES = 8
# Measured with the defaults on this sequence (seed 7, 1024 azimuth steps, ~0.91 m a frame):
# at most 0.059 m and 0.24 deg from the true pose over the 8 frames (seeds 1-3: at most 0.079 m
# and 0.12 deg). KISS-ICP on the full scans (ground_keep=1.0) is off by 3.9 m here, and a
# convention slip (camera poses taken for LiDAR ones) by the whole 6.35 m; the tolerances leave
# about 2x margin over the measured error and stay far below either failure.
MAX_TRANSLATION_ERROR = 0.15  # m
MAX_ROTATION_ERROR = 0.5  # deg


def rotation_deg(transforms: np.ndarray) -> np.ndarray:
    cos = (np.trace(transforms[..., :3, :3], axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> Path:
    from voxseg.synthetic import SyntheticSpec, generate_dataset

    root = generate_dataset(tmp_path_factory.mktemp("odometry"),
                            SyntheticSpec({"00": NUM_FRAMES}, seed=7, azimuth_steps=1024), progress=False)
    return sk.sequence_dir(root, "00")


@pytest.fixture(scope="module")
def true_poses(sequence) -> np.ndarray:
    poses = stacking.lidar_poses(sequence / "calib.txt", sequence / "poses.txt")
    return np.linalg.inv(poses[0]) @ poses


@pytest.fixture(scope="module")
def estimated(sequence) -> np.ndarray:
    return estimate_poses(sk.read_scan(p) for p in sorted((sequence / "velodyne").glob("*.bin")))


def copy_sequence(sequence: Path, target: Path, files: tuple[str, ...] = ()) -> Path:
    """The velodyne scans and the named files of `sequence`, copied to `target`."""
    shutil.copytree(sequence / "velodyne", target / "velodyne")
    for name in files:
        shutil.copy(sequence / name, target / name)
    return target


def assert_close_to_truth(estimated: np.ndarray, truth: np.ndarray) -> None:
    error = np.linalg.inv(truth) @ estimated
    translation, rotation = np.linalg.norm(error[:, :3, 3], axis=1), rotation_deg(error)
    assert translation.max() < MAX_TRANSLATION_ERROR, translation
    assert rotation.max() < MAX_ROTATION_ERROR, rotation


def test_estimated_poses_match_true_lidar_poses(estimated, true_poses):
    assert estimated.shape == (NUM_FRAMES, 4, 4)
    assert np.array_equal(estimated[0], np.eye(4))
    assert true_poses[-1, 0, 3] > 5.0  # the car really drives forward (~0.9 m a frame) along LiDAR x
    assert_close_to_truth(estimated, true_poses)


def test_write_estimated_poses_round_trips_in_camera_convention(sequence, estimated, tmp_path):
    target = copy_sequence(sequence, tmp_path / "00", ("calib.txt",))  # KITTI's Tr
    write_estimated_poses(target, estimated)
    assert np.allclose(stacking.lidar_poses(target / "calib.txt", target / "poses.txt"), estimated, atol=1e-6)
    # Stored as camera-0 poses: forward LiDAR motion (x) is camera z, as in KITTI's poses files.
    tr = sk.read_calib(target / "calib.txt")["Tr"]
    camera = sk.read_poses(target / "poses.txt")
    assert np.allclose(camera, stacking.camera_poses(estimated, tr), atol=1e-6)
    assert camera[-1, 2, 3] == pytest.approx(estimated[-1, 0, 3], abs=0.05)


def test_write_estimated_poses_creates_identity_calib_when_missing(sequence, estimated, tmp_path):
    target = copy_sequence(sequence, tmp_path / "00")
    write_estimated_poses(target, estimated)
    calib = sk.read_calib(target / "calib.txt")
    assert np.array_equal(calib["Tr"], np.eye(4)) and {"P0", "P1", "P2", "P3"} <= set(calib)
    assert np.allclose(sk.read_poses(target / "poses.txt"), estimated, atol=1e-6)
    assert np.allclose(stacking.lidar_poses(target / "calib.txt", target / "poses.txt"), estimated, atol=1e-6)


def test_write_estimated_poses_rejects_tr_that_contradicts_calib(sequence, estimated, tmp_path):
    target = copy_sequence(sequence, tmp_path / "00", ("calib.txt",))
    with pytest.raises(DataFormatError, match="calib.txt"):
        write_estimated_poses(target, estimated, tr=np.eye(4))
    assert not (target / "poses.txt").exists()


def test_existing_poses_are_not_overwritten(sequence, estimated, tmp_path):
    target = copy_sequence(sequence, tmp_path / "00", ("calib.txt", "poses.txt"))
    before = (target / "poses.txt").read_bytes()
    with pytest.raises(DataFormatError, match=r"poses\.txt.*already exists"):
        write_estimated_poses(target, estimated)
    assert (target / "poses.txt").read_bytes() == before
    write_estimated_poses(target, estimated, overwrite=True)
    assert (target / "poses.txt").read_bytes() != before


def test_write_estimated_poses_to_an_output_copies_the_input_calib(sequence, estimated, tmp_path):
    source = copy_sequence(sequence, tmp_path / "in" / "00", ("calib.txt",))
    write_estimated_poses(tmp_path / "out" / "00", estimated, source_calib=source / "calib.txt")
    assert (tmp_path / "out" / "00" / "calib.txt").read_bytes() == (sequence / "calib.txt").read_bytes()
    assert np.allclose(stored_poses(source, tmp_path / "out" / "00"), estimated, atol=1e-6)


def test_write_estimated_poses_rejects_an_output_calib_that_contradicts_the_input(sequence, estimated, tmp_path):
    source = copy_sequence(sequence, tmp_path / "in" / "00", ("calib.txt",))
    out = tmp_path / "out" / "00"
    sk.write_calib(out / "calib.txt", {"Tr": np.eye(4)})
    with pytest.raises(DataFormatError) as error:
        write_estimated_poses(out, estimated, source_calib=source / "calib.txt")
    assert str(error.value) == f"{out / 'calib.txt'}: its Tr differs from the one in {source / 'calib.txt'}"
    assert not (out / "poses.txt").exists()


def test_stored_poses_prefer_the_sequence_own_then_the_output(sequence, true_poses, estimated, tmp_path):
    source = copy_sequence(sequence, tmp_path / "in" / "00", ("calib.txt", "poses.txt"))
    out = tmp_path / "out" / "00"
    write_estimated_poses(out, estimated)
    before = snapshot(source)
    assert poses_file(source, out) == source / "poses.txt"
    assert np.allclose(stored_poses(source, out), true_poses, atol=1e-6)  # existing poses are never replaced
    (source / "poses.txt").unlink()
    assert poses_file(source, out) == out / "poses.txt"
    assert np.allclose(stored_poses(source, out), estimated, atol=1e-6)
    assert poses_file(source) is None and stored_poses(source) is None
    assert set(before) - set(snapshot(source)) == {"poses.txt"}


def test_missing_poses_names_the_file_the_flag_and_where_they_go(sequence, tmp_path):
    source = copy_sequence(sequence, tmp_path / "in" / "00")
    assert str(missing_poses(source, tmp_path / "out" / "00")) == (
        f"{source / 'poses.txt'}: poses file not found; pass --estimate-poses to estimate the LiDAR poses with "
        f"KISS-ICP odometry (they are written to {tmp_path / 'out' / '00' / 'poses.txt'})")


def test_pose_count_mismatch_names_file_and_counts(sequence, tmp_path):
    target = copy_sequence(sequence, tmp_path / "00", ("calib.txt",))
    lines = (sequence / "poses.txt").read_text().splitlines()
    (target / "poses.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataFormatError) as error:
        stored_poses(target)
    assert str(error.value) == (f"{target / 'poses.txt'}: {NUM_FRAMES - 1} poses but {NUM_FRAMES} scans in "
                                f"{target / 'velodyne'}; poses.txt needs one line per scan")


def test_estimate_sequence_poses_reads_a_read_only_sequence_and_writes_nothing(sequence, true_poses, tmp_path):
    target = copy_sequence(sequence, tmp_path / "00")  # no poses.txt, no calib.txt
    with read_only(target) as before:
        poses = estimate_sequence_poses(target)
        assert snapshot(target) == before
    assert_close_to_truth(poses, true_poses)


def test_estimate_sequence_poses_names_a_scan_it_cannot_register(sequence, tmp_path):
    target = copy_sequence(sequence, tmp_path / "00")
    bad = target / "velodyne" / "000003.bin"
    points = sk.read_scan(bad)
    points[:, :3] *= 2.0 / np.linalg.norm(points[:, :3], axis=1, keepdims=True).max()  # all within 2 m
    sk.write_scan(bad, points)
    with pytest.raises(DataFormatError) as error:
        estimate_sequence_poses(target)
    assert str(error.value) == f"{bad}: no points between 3.0 and 100.0 m; cannot register it"


def test_estimate_poses_rejects_bad_scans():
    with pytest.raises(ValueError, match="scan 0"):
        estimate_poses([np.zeros((100, 2))])
    with pytest.raises(ValueError, match="scan 0: no points"):
        estimate_poses([np.zeros((100, 4))])  # everything inside min_range


def test_real_kitti_scans_match_independent_point_to_plane_icp(kitti_real):
    """Real HDL-64E scans: KISS-ICP against open3d's point-to-plane ICP, run here from identity.

    These three scans move ~0.69 m a frame (both methods agree, from any initial guess), so they
    are not frames 0-2 of KITTI sequence 00, whose frame 1 lies 0.8588 m ahead; the README's pose
    check therefore does not apply to them. Measured: the two methods differ by 0.020 m and
    0.07-0.11 deg on frames 1 and 2; tolerance 3x that.
    """
    import open3d as o3d

    scans = [sk.read_scan(p) for p in kitti_real]
    poses = estimate_poses(scans)
    assert 0.5 < poses[1, 0, 3] < 1.0 and np.abs(poses[1, 1:3, 3]).max() < 0.1  # forward along LiDAR x

    def cloud(points):
        xyz = points[:, :3].astype(np.float64)
        distance = np.linalg.norm(xyz, axis=1)
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz[(distance > 3) & (distance < 80)]))
        pcd = pcd.voxel_down_sample(0.2)
        pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=1.0, max_nn=30))
        return pcd

    reg = o3d.pipelines.registration
    target = cloud(scans[0])
    for i in range(1, len(scans)):
        source, reference = cloud(scans[i]), np.eye(4)
        for distance in (1.0, 0.5):
            reference = reg.registration_icp(source, target, distance, reference,
                                             reg.TransformationEstimationPointToPlane(),
                                             reg.ICPConvergenceCriteria(max_iteration=100)).transformation
        difference = np.linalg.inv(reference) @ poses[i]
        assert np.linalg.norm(difference[:3, 3]) < 0.06, (i, poses[i][:3, 3], reference[:3, 3])
        assert rotation_deg(difference) < 0.3, (i, rotation_deg(difference))
