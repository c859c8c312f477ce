"""voxseg.engine.prediction_files: model predictions as the benchmarks' files (SemanticKITTI .label
and scores files, the ScanNet benchmark's formats), staged and published per sequence or scene."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from voxseg.data.labels import LabelConfig
from voxseg.engine.prediction_files import (
    has_instance_head,
    panoptic_prediction,
    publish_sequence,
    staging_folder,
    write_scenes,
    write_sequences,
)
from voxseg.errors import VoxsegError

ROOT = Path(__file__).resolve().parents[1]
LABELS = LabelConfig.load(ROOT / "configs" / "labels" / "synthetic.yaml")  # train ids 0, 1, 2 are raw 10, 30, 40


class Predicted:
    """What the writers read of a dataset: its scan names (`frames`, `items`), size and labels."""

    def __init__(self, names: list[str]):
        self.items = names
        self.frames = [tuple(name.split("/")) for name in names]
        self.label_config = LABELS

    def __len__(self) -> int:
        return len(self.items)


def scan(name: str, segment, instance=None, score=None) -> tuple[str, dict, dict]:
    """One scan's (name, predictions, sample) as voxseg.engine.inference.predict yields it."""
    pred = {"segment": np.array(segment, dtype=np.int64)}
    if instance is not None:
        pred["instance"] = np.array(instance, dtype=np.int64)
        pred["instance_score"] = np.array(score, dtype=np.float32)
    return name, pred, {"point_index": np.arange(len(segment))}


def label_bytes(semantic, instance) -> bytes:
    return ((np.array(instance, dtype=np.uint32) << 16) | np.array(semantic, dtype=np.uint32)).tobytes()


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def failing(*scans):
    """The scans, then the error a scan that cannot be read raises."""
    yield from scans
    raise VoxsegError("scan 2: unreadable")


# ---------------------------------------------------------------------------- panoptic ids
def test_instance_ids_run_from_one_per_scan_and_zero_is_no_instance():
    _, pred, sample = scan("00/000000", [0, 2, 1, 0, 1], [1, -1, 0, 1, -1], [0.875, 0.25, 0.5, 0.125, 0.75])
    semantic, instance, scores = panoptic_prediction(pred, sample["point_index"], LABELS)
    assert np.array_equal(semantic, [10, 40, 30, 10, 30])
    assert np.array_equal(instance, [2, 0, 1, 2, 0])  # the model's instance k is id k + 1; stuff and unclustered 0
    assert scores == {1: 0.5, 2: 0.875}  # the confidence at the instance's first point


def test_panoptic_prediction_places_rows_at_their_points_and_handles_no_instances_and_empty_scans():
    pred = {"segment": np.array([2, 0, 1]), "instance": np.array([0, -1, -1]),
            "instance_score": np.array([0.5, 0.5, 0.5], dtype=np.float32)}
    semantic, instance, scores = panoptic_prediction(pred, np.array([1, 2, 0]), LABELS)  # row i is point point_index[i]
    assert np.array_equal(semantic, [30, 40, 10]) and np.array_equal(instance, [0, 1, 0]) and scores == {1: 0.5}
    semantic, instance, scores = panoptic_prediction({"segment": np.array([1, 1])}, np.arange(2), LABELS)
    assert np.array_equal(semantic, [30, 30]) and np.array_equal(instance, [0, 0]) and scores == {}
    semantic, instance, scores = panoptic_prediction({}, np.arange(0), LABELS)
    assert semantic.shape == instance.shape == (0,) and semantic.dtype == np.int64 and scores == {}


def test_has_instance_head():
    semantic = SimpleNamespace(num_classes=12, thing_classes=None)  # a semantic head, as the Head contract has it
    assert not has_instance_head(SimpleNamespace(heads={"semantic": semantic}))
    assert has_instance_head(SimpleNamespace(heads={"semantic": semantic, "asis": SimpleNamespace(thing_classes=[0])}))


# ------------------------------------------------------------------------ SemanticKITTI files
def test_sequence_files_are_the_panoptic_label_and_scores_formats(tmp_path):
    out = tmp_path / "pred"
    scans = [scan("00/000000", [0, 2, 1], [0, -1, 1], [0.5, 0.25, 0.875]),
             scan("00/000001", [1], [-1], [0.25]),
             scan("01/000000", [], [], [])]
    write_sequences(iter(scans), Predicted([name for name, _, _ in scans]), out, instance_model=True)
    assert files(out) == {
        "sequences/00/predictions/000000.label": label_bytes([10, 40, 30], [1, 0, 2]),
        "sequences/00/predictions/000001.label": label_bytes([30], [0]),
        "sequences/00/scores/000000.txt": b"1 0.5\n2 0.875\n",
        "sequences/00/scores/000001.txt": b"",
        "sequences/01/predictions/000000.label": b"",
        "sequences/01/scores/000000.txt": b"",
    }
    assert sorted(p.name for p in out.iterdir()) == ["sequences"]  # the staging folder is gone


def test_a_failure_part_way_leaves_every_sequence_as_it_was(tmp_path):
    out = tmp_path / "pred"
    dataset = Predicted(["00/000000", "00/000001", "01/000000"])
    write_sequences(iter([scan(n, [0, 1], [0, -1], [0.5, 0.5]) for n in dataset.items]), dataset, out, True)
    before = files(out)
    # sequence 00 is fully predicted before 01's scan fails: nothing is published
    with pytest.raises(VoxsegError, match="unreadable"):
        write_sequences(failing(scan("00/000000", [2, 2]), scan("00/000001", [2, 2])), dataset, out, False)
    assert files(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["sequences"]


def test_a_semantic_model_removes_an_older_instance_models_scores(tmp_path):
    out = tmp_path / "pred"
    dataset = Predicted(["00/000000"])
    write_sequences(iter([scan("00/000000", [0, 1], [0, 0], [0.5, 0.5])]), dataset, out, True)
    other = Predicted(["01/000000"])
    write_sequences(iter([scan("01/000000", [1], [0], [0.5])]), other, out, True)
    write_sequences(iter([scan("00/000000", [2, 2])]), dataset, out, False)
    assert files(out / "sequences" / "00") == {"predictions/000000.label": label_bytes([40, 40], [0, 0])}
    assert sorted(p.name for p in (out / "sequences" / "00").iterdir()) == ["predictions"]  # no .old folders
    assert sorted(files(out / "sequences" / "01")) == ["predictions/000000.label", "scores/000000.txt"]  # untouched


def test_publish_sequence_swaps_only_that_sequences_folders(tmp_path):
    staging, out = tmp_path / "staging", tmp_path / "out"
    for root, sequence, text in [(out, "00", b"old"), (out, "01", b"other"), (staging, "00", b"new")]:
        (root / "sequences" / sequence / "predictions").mkdir(parents=True)
        (root / "sequences" / sequence / "predictions" / "000000.label").write_bytes(text)
    (out / "sequences" / "00" / "scores").mkdir()
    (out / "sequences" / "00" / "scores" / "000000.txt").write_bytes(b"1 0.5\n")
    publish_sequence(staging, out, "00")
    assert files(out) == {"sequences/00/predictions/000000.label": b"new",
                          "sequences/01/predictions/000000.label": b"other"}
    assert not (staging / "sequences" / "00" / "predictions").exists()


def test_staging_folder_is_under_out_and_removed_whatever_happens(tmp_path):
    out = tmp_path / "a" / "pred"
    with pytest.raises(RuntimeError):
        with staging_folder(out) as staging:
            assert staging.parent == out and staging.name.startswith(".staging-") and staging.is_dir()
            (staging / "x").write_bytes(b"")
            raise RuntimeError
    assert list(out.iterdir()) == []
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(VoxsegError, match=r"^.*/file: cannot write the output folder \(File exists\)$"):
        with staging_folder(tmp_path / "file"):
            pass


# ----------------------------------------------------------------------- ScanNet benchmark files
def test_scene_files_are_the_models_predictions_in_the_scannet_benchmark_format(tmp_path):
    out = tmp_path / "pred"
    # instance 0: three points, two predicted train id 1 (raw 30), one 0; instance 1: one point of 2 (raw 40)
    scenes = [scan("Area_5/office_1", [1, 0, 1, 2, 0], [0, 0, 0, 1, -1], [0.875, 0.875, 0.875, 0.5, 0.25])]
    write_scenes(iter(scenes), Predicted(["Area_5/office_1"]), out, instance_model=True)
    assert files(out) == {
        "semantic/Area_5/office_1.txt": b"30\n10\n30\n40\n10\n",
        "instance/Area_5/office_1.txt": b"office_1/000.txt 30 0.875\noffice_1/001.txt 40 0.5\n",
        "instance/Area_5/office_1/000.txt": b"1\n1\n1\n0\n0\n",
        "instance/Area_5/office_1/001.txt": b"0\n0\n0\n1\n0\n",
    }
    before = files(out)
    with pytest.raises(VoxsegError, match="unreadable"):
        write_scenes(failing(scan("Area_5/office_1", [2, 2, 2, 2, 2])), Predicted(["Area_5/office_1", "Area_5/x"]),
                     out, instance_model=False)
    assert files(out) == before and sorted(p.name for p in out.iterdir()) == ["instance", "semantic"]
    write_scenes(iter([scan("Area_5/office_1", [2, 2])]), Predicted(["Area_5/office_1"]), out, instance_model=False)
    assert files(out) == {"semantic/Area_5/office_1.txt": b"40\n40\n"}  # a semantic model: old instances go
