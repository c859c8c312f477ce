"""Benchmark submissions (voxseg.evaluation.submission, tools/submit.py): the zip's entries and
bytes, and each refusal's message with an existing archive left as it was."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import KITTI_LABELS, ROOT, cli
from voxseg.data import scene_predictions, semantic_kitti as sk
from voxseg.data.labels import LabelConfig
from voxseg.errors import DataFormatError, VoxsegError
from voxseg.evaluation import submission

SCANNET_LABELS = ROOT / "configs" / "labels" / "scannet.yaml"
POINTS = {"00": [5, 3], "01": [4]}  # points of each scan of the tiny SemanticKITTI-format dataset
SCENES = {"scene0707_00": 6, "scene0708_00": 4}  # vertices of each scene of the tiny ScanNet test split


@pytest.fixture
def kitti(tmp_path) -> tuple[Path, Path]:
    """(dataset, predictions): scans of POINTS points; panoptic labels of raw ids car (10) and road (40)."""
    dataset, predictions = tmp_path / "dataset", tmp_path / "pred"
    rng = np.random.default_rng(0)
    for sequence, sizes in POINTS.items():
        for i, n in enumerate(sizes):
            sk.write_scan(sk.scan_path(dataset, sequence, f"{i:06d}"), rng.normal(size=(n, 4)))
            folder = sk.sequence_dir(predictions, sequence, must_exist=False) / "predictions"
            sk.write_label(folder / f"{i:06d}.label", rng.choice([10, 40], n), rng.integers(0, 3, n))
    return dataset, predictions


def kitti_members(dataset: Path, predictions: Path) -> list[submission.Member]:
    return submission.semantic_kitti_members(predictions, dataset, ["00", "1"], LabelConfig.load(KITTI_LABELS))


KITTI_NAMES = ["sequences/", "sequences/00/", "sequences/00/predictions/", "sequences/00/predictions/000000.label",
               "sequences/00/predictions/000001.label", "sequences/01/", "sequences/01/predictions/",
               "sequences/01/predictions/000000.label"]


def test_semantic_kitti_zip_holds_every_prediction_byte_for_byte(kitti, tmp_path):
    dataset, predictions = kitti
    out = tmp_path / "submission.zip"
    submission.write_submission(kitti_members(dataset, predictions), out)
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == KITTI_NAMES
        for name in KITTI_NAMES:
            if not name.endswith("/"):
                assert archive.read(name) == (predictions / name).read_bytes()
        assert [archive.getinfo(n).file_size // 4 for n in KITTI_NAMES if n.endswith(".label")] == [5, 3, 4]


def test_the_same_predictions_give_the_same_archive(kitti, tmp_path):
    dataset, predictions = kitti
    submission.write_submission(kitti_members(dataset, predictions), tmp_path / "a.zip")
    submission.write_submission(kitti_members(dataset, predictions), tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


def test_description_from_fields_or_a_file(kitti, tmp_path):
    dataset, predictions = kitti
    fields = {"name": "MyNet", "pdf url": "https://arxiv.org/pdf/1.pdf", "code url": ""}
    out = tmp_path / "described.zip"
    submission.write_submission([submission.description_member(fields=fields), *kitti_members(dataset, predictions)],
                                out)
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["description.txt", *KITTI_NAMES]
        assert archive.read("description.txt") == b"name: MyNet\npdf url: https://arxiv.org/pdf/1.pdf\n"
    text = tmp_path / "description.txt"
    text.write_bytes(b"name: Other\ncode url: n/a\n")
    submission.write_submission([submission.description_member(text), *kitti_members(dataset, predictions)], out)
    with zipfile.ZipFile(out) as archive:
        assert archive.read("description.txt") == text.read_bytes()
    with pytest.raises(VoxsegError) as err:
        submission.description_member(fields={"name": "two\nlines"})
    assert str(err.value) == "description: the name must be one line, got 'two\\nlines'"
    with pytest.raises(DataFormatError) as err:
        submission.description_member(tmp_path / "none.txt")
    assert str(err.value) == f"{tmp_path / 'none.txt'}: description file not found"


def refused(members, out: Path) -> str:
    """The message of the DataFormatError that building or writing the archive raises, after
    checking that `out` kept its bytes and that no temporary file was left beside it."""
    with pytest.raises(DataFormatError) as err:
        submission.write_submission(members(), out)
    assert out.read_bytes() == b"an older archive"
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []
    return str(err.value)


@pytest.fixture
def old_zip(tmp_path) -> Path:
    out = tmp_path / "out" / "submission.zip"
    out.parent.mkdir()
    out.write_bytes(b"an older archive")
    return out


def test_semantic_kitti_refusals(kitti, old_zip):
    dataset, predictions = kitti
    members = lambda: kitti_members(dataset, predictions)  # noqa: E731
    seq01 = predictions / "sequences" / "01" / "predictions"

    (seq01 / "000000.label").write_bytes(np.array([10, 40, 10], np.uint32).tobytes())
    assert refused(members, old_zip) == f"{seq01 / '000000.label'}: 3 labels for a scan of 4 points"

    (seq01 / "000000.label").write_bytes(np.array([10, 40, 999, 999], np.uint32).tobytes())
    assert refused(members, old_zip) == f"{seq01 / '000000.label'}: class id 999 (2 points) is not in {KITTI_LABELS}"

    (seq01 / "000001.label").write_bytes(b"")
    velodyne = dataset / "sequences" / "01" / "velodyne"
    assert refused(members, old_zip) == (f"{seq01 / '000001.label'}: a prediction for no scan of {velodyne} "
                                         "(1 such file): another dataset's?")
    (seq01 / "000001.label").unlink()

    (predictions / "sequences" / "00" / "predictions" / "000001.label").unlink()
    assert refused(members, old_zip) == (
        f"{predictions / 'sequences' / '00' / 'predictions' / '000001.label'}: no prediction for scan "
        f"{dataset / 'sequences' / '00' / 'velodyne' / '000001.bin'} (1 of the 2 scans of sequence 00 have none)")

    sk.write_label(predictions / "sequences" / "00" / "predictions" / "000001.label", np.array([10, 10, 40]))
    (seq01 / "000000.label").unlink()
    seq01.rmdir()
    assert refused(members, old_zip) == f"{seq01}: predictions folder not found (sequence 01)"

    members = lambda: submission.semantic_kitti_members(  # noqa: E731
        predictions, dataset, ["02"], LabelConfig.load(KITTI_LABELS))
    assert refused(members, old_zip) == f"{dataset / 'sequences' / '02'}: sequence not found"


def test_the_archive_must_be_a_zip(kitti, tmp_path):
    dataset, predictions = kitti
    with pytest.raises(VoxsegError) as err:
        submission.write_submission(kitti_members(dataset, predictions), tmp_path / "submission.tar")
    assert str(err.value) == (f"{tmp_path / 'submission.tar'}: a submission's name must end in .zip "
                              "(the servers refuse others)")


# ------------------------------------------------------------------------------------ ScanNet
def write_mesh(path: Path, vertices: int) -> None:
    """An ASCII PLY of `vertices` coloured vertices, which voxseg.data.scannet.ply_vertices counts."""
    header = ["ply", "format ascii 1.0", f"element vertex {vertices}", "property float x", "property float y",
              "property float z", "property uchar red", "property uchar green", "property uchar blue", "end_header"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header) + "\n" + "0 0 0 0 0 0\n" * vertices)


@pytest.fixture
def scannet(tmp_path) -> tuple[Path, Path]:
    """(dataset, predictions): the test split of SCENES and an instance model's predictions, as
    voxseg.data.scene_predictions writes them (scene0707_00: two instances, scene0708_00: none)."""
    dataset, predictions = tmp_path / "scannet", tmp_path / "pred"
    for scene, vertices in SCENES.items():
        write_mesh(dataset / "scans_test" / scene / f"{scene}_vh_clean_2.ply", vertices)
    (dataset / "scannetv2_test.txt").write_text("".join(f"{s}\n" for s in SCENES))
    masks = [(np.array([1, 1, 0, 0, 0, 0], bool), 5, 0.75), (np.array([0, 0, 1, 1, 1, 0], bool), 39, 0.5)]
    scene_predictions.write_scene(predictions, "scene0707_00", np.array([5, 5, 39, 39, 39, 1]), masks)
    scene_predictions.write_scene(predictions, "scene0708_00", np.array([1, 2, 2, 1]), [])
    return dataset, predictions


def scannet_members(task: str, dataset: Path, predictions: Path) -> list[submission.Member]:
    pack = {"semantic": submission.scannet_semantic_members, "instance": submission.scannet_instance_members}[task]
    return pack(predictions, submission.scannet_meshes(dataset), LabelConfig.load(SCANNET_LABELS))


def test_scannet_semantic_zip(scannet, tmp_path):
    dataset, predictions = scannet
    out = tmp_path / "semantic.zip"
    submission.write_submission(scannet_members("semantic", dataset, predictions), out)
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["scene0707_00.txt", "scene0708_00.txt"]
        assert archive.read("scene0707_00.txt") == b"5\n5\n39\n39\n39\n1\n"
        assert archive.read("scene0708_00.txt") == (predictions / "semantic" / "scene0708_00.txt").read_bytes()


def test_scannet_instance_zip_lists_masks_under_predicted_masks(scannet, tmp_path):
    dataset, predictions = scannet
    out = tmp_path / "instance.zip"
    submission.write_submission(scannet_members("instance", dataset, predictions), out)
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["predicted_masks/", "scene0707_00.txt", "predicted_masks/scene0707_00_000.txt",
                                      "predicted_masks/scene0707_00_001.txt", "scene0708_00.txt"]
        assert archive.read("scene0707_00.txt") == (b"predicted_masks/scene0707_00_000.txt 5 0.75\n"
                                                    b"predicted_masks/scene0707_00_001.txt 39 0.5\n")
        assert archive.read("predicted_masks/scene0707_00_001.txt") == b"0\n0\n1\n1\n1\n0\n"
        assert archive.read("predicted_masks/scene0707_00_000.txt") == (
            predictions / "instance" / "scene0707_00" / "000.txt").read_bytes()
        assert archive.read("scene0708_00.txt") == b""


def test_scannet_scenes_from_a_list_or_a_split_file(scannet):
    dataset, _ = scannet
    assert submission.scannet_meshes(dataset, scenes=["scene0708_00"]) == {
        "scene0708_00": dataset / "scans_test" / "scene0708_00" / "scene0708_00_vh_clean_2.ply"}
    assert list(submission.scannet_meshes(dataset)) == list(SCENES)


def test_scannet_refusals(scannet, old_zip):
    dataset, predictions = scannet
    semantic = predictions / "semantic" / "scene0708_00.txt"
    mesh = dataset / "scans_test" / "scene0708_00" / "scene0708_00_vh_clean_2.ply"
    members = lambda: scannet_members("semantic", dataset, predictions)  # noqa: E731

    semantic.write_text("1\n2\n2\n")
    assert refused(members, old_zip) == f"{semantic}: 3 lines for the 4 vertices of {mesh}"
    semantic.write_text("1\n2\nchair\n1\n")
    assert refused(members, old_zip) == f"{semantic}: line 3: 'chair' is not an integer"
    semantic.write_text("1\n41\n41\n70000\n")
    assert refused(members, old_zip) == f"{semantic}: class id 70000 (1 point) is not in {SCANNET_LABELS}"
    semantic.write_text("1\n41\n41\n1\n")
    assert refused(members, old_zip) == f"{semantic}: class id 41 (2 points) is not in {SCANNET_LABELS}"
    semantic.unlink()
    assert refused(members, old_zip) == f"{semantic}: no semantic prediction for scene scene0708_00"

    members = lambda: scannet_members("instance", dataset, predictions)  # noqa: E731
    listing = predictions / "instance" / "scene0707_00.txt"
    mask = predictions / "instance" / "scene0707_00" / "001.txt"
    mesh = dataset / "scans_test" / "scene0707_00" / "scene0707_00_vh_clean_2.ply"
    mask.write_text("0\n1\n")
    assert refused(members, old_zip) == f"{mask}: 2 lines for the 6 vertices of {mesh}"
    listing.write_text("scene0707_00/000.txt 5 0.75\nscene0707_00/001.txt 41 0.5\n")
    assert refused(members, old_zip) == f"{listing}: line 2: class id 41 is not in {SCANNET_LABELS}"
    listing.write_text("scene0707_00/000.txt 5\n")
    assert refused(members, old_zip) == (f"{listing}: line 1: expected 'MASK LABEL CONFIDENCE', "
                                         "got 'scene0707_00/000.txt 5'")
    listing.write_text("../semantic/scene0707_00.txt 5 0.75\n")
    assert refused(members, old_zip) == (f"{listing}: line 1: the mask path ../semantic/scene0707_00.txt must be "
                                         f"relative and inside {predictions / 'instance'}")
    listing.write_text("scene0707_00/002.txt 5 0.75\n")
    assert refused(members, old_zip) == (f"{predictions / 'instance' / 'scene0707_00' / '002.txt'}: mask file not "
                                         f"found ({listing}: line 1)")
    listing.unlink()
    assert refused(members, old_zip) == (f"{listing}: no instance prediction for scene scene0707_00 "
                                         "(a semantic-only model writes none)")


# ------------------------------------------------------------------------------------ the tool
def test_tool_packs_the_chosen_sequences_and_refuses_in_one_line(kitti, tmp_path):
    dataset, predictions = kitti
    out = tmp_path / "submission.zip"
    args = ["tools/submit.py", "--task", "panoptic", "--predictions", str(predictions), "--dataset", str(dataset),
            "--sequences", "00", "01", "--name", "MyNet", "--out", str(out)]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{out}: 4 files for --task panoptic\n"
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["description.txt", *KITTI_NAMES]
        assert archive.read("description.txt") == b"name: MyNet\n"
    before = out.read_bytes()

    (predictions / "sequences" / "01" / "predictions" / "000000.label").write_bytes(b"\0" * 12)
    failed = cli(*args)
    assert failed.returncode == 2
    label = predictions / "sequences" / "01" / "predictions" / "000000.label"
    assert failed.stderr == f"error: {label}: 3 labels for a scan of 4 points\n"
    assert out.read_bytes() == before
