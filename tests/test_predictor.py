"""Predicting loose point clouds: the readers of every format (voxseg.data.point_files), the
Python API (voxseg.engine.predictor) and tools/infer.py --input, each against the predictions
tools/infer.py writes for the same scans of a SemanticKITTI-format dataset."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import open3d as o3d
import pytest

from tests.helpers import ASIS_CONFIG, FINETUNE_CONFIG, SYNTHETIC_LABELS, asis_overrides, cli, finetune_overrides
from voxseg.data import point_files, semantic_kitti as sk
from voxseg.data.labels import LabelConfig
from voxseg.engine import finetune
from voxseg.engine.predictor import Predictor
from voxseg.errors import DataFormatError, VoxsegError


def write_pcd(path, coord, intensity=None):
    cloud = o3d.t.geometry.PointCloud(o3d.core.Tensor(coord.astype(np.float32)))
    if intensity is not None:
        cloud.point["intensity"] = o3d.core.Tensor(intensity.astype(np.float32).reshape(-1, 1))
    assert o3d.t.io.write_point_cloud(str(path), cloud)


def test_every_format_reads_the_same_cloud(tmp_path, rng):
    points = rng.normal(size=(50, 4)).astype(np.float32)
    sk.write_scan(tmp_path / "a.bin", points)
    np.save(tmp_path / "b.npy", points)
    np.savez(tmp_path / "c.npz", coord=points[:, :3], intensity=points[:, 3])
    np.savez(tmp_path / "d.npz", points=points)
    write_pcd(tmp_path / "e.pcd", points[:, :3], points[:, 3])
    write_pcd(tmp_path / "f.ply", points[:, :3], points[:, 3])
    for name in ("a.bin", "b.npy", "c.npz", "d.npz", "e.pcd", "f.ply"):
        cloud = point_files.read_points(tmp_path / name)
        assert sorted(cloud) == ["coord", "intensity"], name
        assert np.array_equal(cloud["coord"], points[:, :3]) and cloud["coord"].dtype == np.float32, name
        assert np.array_equal(cloud["intensity"], points[:, 3:4]) and cloud["intensity"].dtype == np.float32, name
    write_pcd(tmp_path / "g.pcd", points[:, :3])  # a ROS export without intensity
    assert sorted(point_files.read_points(tmp_path / "g.pcd")) == ["coord"]
    np.savez(tmp_path / "h.npz", coord=points[:, :3], color=np.full((50, 3), 255, dtype=np.uint8))
    assert np.array_equal(point_files.read_points(tmp_path / "h.npz")["color"], np.ones((50, 3), np.float32))


def test_bad_files_are_one_line_naming_the_file(tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((4, 5), np.float32))
    with pytest.raises(DataFormatError, match=r"wide.npy: the array must be numbers of shape \(N, 3\) x y z or "
                                              r"\(N, 4\) x y z intensity, got float32 \(4, 5\)$"):
        point_files.read_points(tmp_path / "wide.npy")
    nan = np.zeros((3, 3), np.float32)
    nan[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    nan_message = r"nan.npy: 1 of 3 points have NaN or infinite coord \(first at point 1\)"
    with pytest.raises(DataFormatError, match=nan_message):
        point_files.read_points(tmp_path / "nan.npy")
    (tmp_path / "junk.pcd").write_bytes(b"not a pcd")
    with pytest.raises(DataFormatError, match=r"junk.pcd: open3d read no points"):
        point_files.read_points(tmp_path / "junk.pcd")
    np.savez(tmp_path / "keys.npz", xyz=np.zeros((2, 3)))
    with pytest.raises(DataFormatError, match=r"keys.npz: no `coord` or `points` array \(it holds xyz\)"):
        point_files.read_points(tmp_path / "keys.npz")


def test_inputs_expand_folders_and_refuse_what_would_collide(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("b.bin", "a.pcd", "notes.txt"):
        (tmp_path / "d" / name).write_bytes(b"")
    (tmp_path / "c.npy").write_bytes(b"")
    assert point_files.expand_inputs([tmp_path / "d", tmp_path / "c.npy"]) == [
        tmp_path / "d" / "a.pcd", tmp_path / "d" / "b.bin", tmp_path / "c.npy"]
    (tmp_path / "a.ply").write_bytes(b"")
    with pytest.raises(VoxsegError, match=r"a.ply: has the name of .*a.pcd; their predictions would both be a.label"):
        point_files.expand_inputs([tmp_path / "d", tmp_path / "a.ply"])
    with pytest.raises(VoxsegError, match=r"notes.txt: not a point-cloud file"):
        point_files.expand_inputs([tmp_path / "d" / "notes.txt"])
    with pytest.raises(VoxsegError, match=r"missing: no such file or folder"):
        point_files.expand_inputs([tmp_path / "missing"])


def test_class_colors_are_the_label_configs_bgr_as_rgb():
    labels = dataclasses.replace(LabelConfig.load(SYNTHETIC_LABELS), color_map={0: (0, 0, 255), 1: (255, 0, 0)})
    assert np.array_equal(labels.rgb(np.array([1, 0, 7])) * 255, [[0, 0, 255], [255, 0, 0], [128, 128, 128]])


@pytest.fixture(scope="module")
def asis_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("asis") / "run"
    finetune.run(finetune.resolve(str(ASIS_CONFIG), asis_overrides(tiny_dataset, out, **{"train.max_steps": 4})))
    return out


def test_the_api_and_loose_files_predict_what_the_dataset_tool_writes(asis_run, tiny_dataset, tmp_path, one_thread):
    """The same scans predicted three ways give identical files: tools/infer.py --dataset, the
    Predictor on arrays and files, and tools/infer.py --input on .bin, .npy and .pcd copies."""
    checkpoint = asis_run / "checkpoints" / "last.pt"
    done = cli("tools/infer.py", "--checkpoint", str(checkpoint), "--dataset", str(tiny_dataset), "--sequences", "01",
               "--out", str(tmp_path / "pred"), "--threads", "1")
    assert done.returncode == 0, done.stderr
    expected = tmp_path / "pred" / "sequences" / "01"
    frames = sorted(p.stem for p in (expected / "predictions").glob("*.label"))[:3]
    loose = tmp_path / "loose"
    loose.mkdir()
    for i, frame in enumerate(frames):
        scan = sk.scan_path(tiny_dataset, "01", frame)
        if i == 0:
            shutil.copy(scan, loose / f"{frame}.bin")
        elif i == 1:
            np.save(loose / f"{frame}.npy", sk.read_scan(scan))
        else:
            points = sk.read_scan(scan)
            write_pcd(loose / f"{frame}.pcd", points[:, :3], points[:, 3])

    predictor = Predictor(checkpoint, device="cpu")
    assert predictor.instances and predictor.features == ["intensity"]
    instances = 0
    for frame in frames:
        label = (expected / "predictions" / f"{frame}.label").read_bytes()
        scores = sk.read_instance_scores(expected / "scores" / f"{frame}.txt")
        result = predictor.predict(sk.read_scan(sk.scan_path(tiny_dataset, "01", frame)))
        assert result.label().tobytes() == label and result.scores == scores
        instances += len(scores)
    assert instances > 0, "no instance predicted: the scores comparison is vacuous"

    done = cli("tools/infer.py", "--checkpoint", str(checkpoint), "--input", str(loose), "--out", str(tmp_path / "out"),
               "--ply", "--threads", "1")
    assert done.returncode == 0, done.stderr
    for frame in frames:
        assert (tmp_path / "out" / f"{frame}.label").read_bytes() == \
            (expected / "predictions" / f"{frame}.label").read_bytes()
        assert (tmp_path / "out" / f"{frame}.scores.txt").read_bytes() == \
            (expected / "scores" / f"{frame}.txt").read_bytes()
        ply = o3d.t.io.read_point_cloud(str(tmp_path / "out" / f"{frame}.ply"))
        semantic, _ = sk.read_label(tmp_path / "out" / f"{frame}.label")
        assert np.allclose(ply.point["colors"].numpy(),
                           predictor.labels.rgb(semantic), atol=1 / 255)


def test_a_model_reading_intensity_refuses_a_file_without_it_unless_filled(asis_run, tmp_path, rng, one_thread):
    checkpoint = asis_run / "checkpoints" / "last.pt"
    coord = rng.uniform(-10, 10, (200, 3)).astype(np.float32)
    write_pcd(tmp_path / "ros.pcd", coord)
    (tmp_path / "out").mkdir()
    done = cli("tools/infer.py", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "ros.pcd"),
               "--out", str(tmp_path / "out"))
    assert done.returncode != 0 and not any((tmp_path / "out").iterdir())
    assert done.stderr.strip().splitlines()[-1].endswith(
        "ros.pcd: has no intensity, which " + f"{checkpoint}'s model reads (features ['intensity']); give it, or fill "
        "it (--fill-intensity VALUE, fill={'intensity': VALUE})")
    filled = Predictor(checkpoint, device="cpu", fill={"intensity": 0.25}).predict({"coord": coord})
    given = Predictor(checkpoint, device="cpu").predict(np.concatenate([coord, np.full((200, 1), 0.25, np.float32)], 1))
    assert np.array_equal(filled.label(), given.label()) and filled.scores == given.scores


def test_semantic_model_predicts_arrays_and_batches(tiny_dataset, tmp_path, rng):
    out = tmp_path / "sem"
    finetune.run(finetune.resolve(str(FINETUNE_CONFIG), finetune_overrides(tiny_dataset, out, **{
        "train.max_steps": 2, "train.val_every": 0})))
    predictor = Predictor(out / "checkpoints" / "last.pt", device="auto")
    scans = [sk.read_scan(sk.scan_path(tiny_dataset, "01", f)) for f in sk.frame_ids(tiny_dataset, "01")[:2]]
    batch = predictor.predict_batch(scans)
    assert not predictor.instances and len(batch) == 2
    for scan, result in zip(scans, batch, strict=True):
        single = predictor.predict(scan)
        assert np.array_equal(result.semantic, single.semantic) and len(result.semantic) == len(scan)
        assert not result.instance.any() and result.scores == {}
        assert set(np.unique(result.semantic).tolist()) <= set(predictor.labels.learning_map_inv.values())
    empty = predictor.predict(np.zeros((0, 4), np.float32))
    assert len(empty.semantic) == 0 and empty.scores == {}
    with pytest.raises(VoxsegError, match=r"cloud: a cloud is an \(N, 3\) x y z or \(N, 4\) x y z intensity array, "
                                          r"got shape \(5,\)"):
        predictor.predict(np.zeros(5))
