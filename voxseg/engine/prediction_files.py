"""A model's predictions as the benchmarks' files, staged under OUT and published atomically.

SemanticKITTI-format data (write_sequences): OUT/sequences/NN/predictions/FFFFFF.label holds the
raw class id of each point in the lower 16 bits and, for a model with an instance head, its
instance id in the upper 16 (1.. per scan, 0 for stuff and unclustered points): the panoptic
format semantic-kitti-api's evaluate_semantics.py and evaluate_panoptic.py read. An instance model
also writes OUT/sequences/NN/scores/FFFFFF.txt, one "instance_id confidence" line per instance,
which instance AP ranks by (voxseg.data.semantic_kitti.write_instance_scores).

S3DIS and ScanNet (write_scenes): the ScanNet benchmark's formats, OUT/semantic/NAME.txt and, for
an instance model, OUT/instance/NAME.txt with its masks (voxseg.data.scene_predictions).

Every scan is written to a staging folder under OUT first; a sequence (a scene indoors) is moved
into place only when every scan succeeded, so a failure leaves earlier predictions as they were.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from voxseg.data import scene_predictions, semantic_kitti as sk
from voxseg.data.labels import LabelConfig
from voxseg.errors import VoxsegError

__all__ = ["has_instance_head", "panoptic_prediction", "staging_folder", "publish_sequence", "write_sequences",
           "write_scenes"]

SEQUENCE_FOLDERS = ("predictions", "scores")  # what a sequence's predictions are, published together

# (scan name, predictions, sample) per scan, as voxseg.engine.inference.predict yields them
Predictions = Iterable[tuple[str, dict, dict]]


def has_instance_head(model) -> bool:
    """Whether a head of the Segmentor predicts instances (one that names thing classes): its
    predictions carry instance ids and confidences."""
    return any(head.thing_classes is not None for head in model.heads.values())


#: the predictions panoptic_prediction reads (a caller may leave the rest, e.g. logits, on the device)
PANOPTIC_KEYS = ("segment", "instance", "instance_score")


def panoptic_prediction(pred: dict, point_index: np.ndarray, labels: LabelConfig
                        ) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
    """(raw class id per point, instance id per point, {instance id: confidence}) of one scan.

    The model's instance k (0..K-1, -1 for stuff and unclustered points) is instance id k + 1, so
    ids run 1.. per scan and 0 is no instance; its confidence is `instance_score` at its first
    point. A model without an instance head (no `instance` prediction) gives all ids 0 and no
    confidences; an empty scan (no `segment` prediction) gives empty arrays."""
    num_points = len(point_index)
    semantic = np.zeros(num_points, dtype=np.int64)
    instance = np.zeros(num_points, dtype=np.int64)
    if not num_points or "segment" not in pred:
        return semantic, instance, {}
    semantic[point_index] = labels.train_to_raw(pred["segment"])
    if "instance" not in pred:
        return semantic, instance, {}
    instance[point_index] = pred["instance"] + 1
    ids, first = np.unique(pred["instance"], return_index=True)
    keep = ids >= 0
    scores = {int(i) + 1: float(pred["instance_score"][f]) for i, f in zip(ids[keep], first[keep], strict=True)}
    return semantic, instance, scores


@contextlib.contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A new hidden folder `.staging-*` under `out` (created if needed) to write predictions into
    before they are published; removed on exit, whatever happens."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    except OSError as exc:
        raise VoxsegError(f"{out}: cannot write the output folder ({exc.strerror or exc})") from None
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_sequence(staging: Path, out: Path, sequence: str) -> None:
    """Swap the staged folders of a sequence in for the old ones (an old scores folder goes even
    when the new model writes none, so scores never outlive their predictions)."""
    for folder in SEQUENCE_FOLDERS:
        target = sk.sequence_dir(out, sequence, must_exist=False) / folder
        target.parent.mkdir(parents=True, exist_ok=True)
        old = target.with_name(f".{folder}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        staged = sk.sequence_dir(staging, sequence, must_exist=False) / folder
        if staged.exists():
            os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)


def write_sequences(predictions: Predictions, dataset, out: Path, instance_model: bool) -> None:
    """Write the predictions of every scan of `dataset` (SemanticKITTI-format: its `frames` and
    `label_config`) as .label files, and scores files for an instance model, then publish each
    of its sequences under `out`."""
    labels = dataset.label_config
    with staging_folder(out) as staging:
        for name, pred, sample in tqdm(predictions, total=len(dataset), desc="infer", unit="scan"):
            sequence, frame = name.split("/")
            semantic, instance, scores = panoptic_prediction(pred, sample["point_index"], labels)
            folder = sk.sequence_dir(staging, sequence, must_exist=False)
            sk.write_label(folder / "predictions" / f"{frame}.label", semantic, instance)
            if instance_model:
                sk.write_instance_scores(folder / "scores" / f"{frame}.txt", scores)
        for sequence in sorted({sequence for sequence, _ in dataset.frames}):
            publish_sequence(staging, out, sequence)


def write_scenes(predictions: Predictions, dataset, out: Path, instance_model: bool) -> None:
    """Write the predictions of every scene of `dataset` (S3DIS or ScanNet: its `items` and
    `label_config`) in the ScanNet benchmark's formats, then publish each scene under `out`. An
    instance's label is the class most of its points are predicted as
    (scene_predictions.instance_labels)."""
    labels = dataset.label_config
    with staging_folder(out) as staging:
        for name, pred, sample in tqdm(predictions, total=len(dataset), desc="infer", unit="scene"):
            semantic, instance, scores = panoptic_prediction(pred, sample["point_index"], labels)
            instances = None
            if instance_model:
                train_ids = np.zeros(len(semantic), dtype=np.int64)
                train_ids[sample["point_index"]] = pred.get("segment", 0)
                classes = scene_predictions.instance_labels(train_ids, instance - 1)
                instances = [(instance == k + 1, int(labels.train_to_raw(np.array([c]))[0]), scores[k + 1])
                             for k, c in classes.items()]
            scene_predictions.write_scene(staging, name, semantic, instances)
        for name in dataset.items:
            scene_predictions.publish_scene(staging, out, name)
