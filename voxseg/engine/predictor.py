"""Predict any point cloud with a fine-tuned checkpoint, from Python:

    from voxseg.engine.predictor import Predictor

    predictor = Predictor("runs/x/checkpoints/best.pt")           # device="auto": a GPU when usable
    result = predictor.predict(points)                             # (N, 4) x y z intensity, or a dict
    result.semantic, result.instance, result.scores                # raw class ids, ids 1.. (0 none), {id: score}
    results = predictor.predict_batch([points_a, points_b])
    result = predictor.predict_file("scan.pcd")                    # .bin .pcd .ply .npy .npz

The checkpoint is loaded once. A cloud is an (N, 3) x y z or (N, 4) x y z intensity array, or a
dict with `coord` (N, 3) and, as the model's features need them, `intensity` (N,) or (N, 1) and
`color` (N, 3) RGB in [0, 1]. The model's input features are those it was trained with (the
checkpoint's `data.val.features`); a feature that the cloud lacks is a VoxsegError, unless
`fill` gives its value for every point (e.g. `fill={"intensity": 0.0}`: a documented choice, the
model then sees constant intensity). No transform runs: the points are predicted as given, as
tools/infer.py predicts a dataset's scans. Labels are the checkpoint's label config's raw ids, in
SemanticKITTI's panoptic format with `Prediction.label()`, exactly what tools/infer.py writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voxseg.data.collate import collate, to_device
from voxseg.data.features import POINT_FEATURES, point_features
from voxseg.data.labels import LabelConfig
from voxseg.data.point_files import read_points
from voxseg.engine import checkpoint
from voxseg.engine.device import pick_device
from voxseg.engine.prediction_files import PANOPTIC_KEYS, has_instance_head, panoptic_prediction
from voxseg.errors import VoxsegError
from voxseg.registry import MODELS

# the sample key each feature is derived from (height and range come from `coord`)
FEATURE_SOURCES = {"intensity": "intensity", "color": "color", "height": "coord", "range": "coord"}


@dataclass
class Prediction:
    """One cloud's predictions, one row per input point."""

    semantic: np.ndarray  # (N,) int64 raw class ids of the label config (SemanticKITTI's ids for its data)
    instance: np.ndarray  # (N,) int64 instance ids 1.. per cloud, 0 for stuff and unclustered points
    scores: dict[int, float]  # instance id -> confidence (empty for a model without an instance head)

    def label(self) -> np.ndarray:
        """(N,) uint32 as a SemanticKITTI .label file holds it: instance << 16 | class."""
        return (self.instance.astype(np.uint32) << 16) | self.semantic.astype(np.uint32)


class Predictor:
    """A fine-tuned checkpoint ready to predict (module docstring)."""

    def __init__(self, checkpoint_path: str | os.PathLike, device: str = "auto",
                 label_config: str | os.PathLike | None = None, fill: dict[str, float] | None = None):
        import voxseg.models  # noqa: F401  (registers backbones, heads, losses, models)

        self.path = Path(checkpoint_path)
        self.device = pick_device(device, option="device")
        state = checkpoint.load_predictor(self.path)
        cfg = state["config"]
        self.labels = LabelConfig.load(label_config or cfg["data"]["label_config"])
        self.model = MODELS.build(cfg["model"])
        self.model.load_state_dict(state["model"])
        self.model.to(self.device).eval()
        if self.model.num_classes != self.labels.num_classes:
            raise VoxsegError(f"{self.labels.path}: defines {self.labels.num_classes} evaluated classes but "
                              f"{self.path} predicts {self.model.num_classes}; pass the label config it was "
                              "trained with")
        self.features = list(cfg["data"]["val"].get("features") or [])
        self.instances = has_instance_head(self.model)
        self.fill = dict(fill or {})
        unknown = sorted(set(self.fill) - {"intensity", "color"})
        if unknown:
            raise VoxsegError(f"fill: {unknown} cannot be filled; only intensity and color can")

    def sample(self, cloud: np.ndarray | dict, name: str = "cloud") -> dict:
        """The sample the model reads: `coord`, the features' inputs (filled where asked),
        `point_index`, `feat`."""
        if isinstance(cloud, dict):
            points = {k: np.asarray(v) for k, v in cloud.items()}
        else:
            array = np.asarray(cloud)
            if array.ndim != 2 or array.shape[1] not in (3, 4):
                raise VoxsegError(f"{name}: a cloud is an (N, 3) x y z or (N, 4) x y z intensity array, "
                                  f"got shape {array.shape}")
            points = {"coord": array[:, :3]} | ({"intensity": array[:, 3:4]} if array.shape[1] == 4 else {})
        if "coord" not in points:
            raise VoxsegError(f"{name}: a cloud needs `coord` (N, 3)")
        n = len(points["coord"])
        sample = {"coord": np.ascontiguousarray(points["coord"], dtype=np.float32),
                  "point_index": np.arange(n), "name": name}
        for feature in self.features:
            key = FEATURE_SOURCES[feature]
            if key == "coord" or key in sample:
                continue
            if key in points:
                columns = POINT_FEATURES[feature][0]
                sample[key] = np.ascontiguousarray(points[key], dtype=np.float32).reshape(n, columns)
            elif key in self.fill:
                sample[key] = np.full((n, POINT_FEATURES[feature][0]), self.fill[key], dtype=np.float32)
            else:
                raise VoxsegError(f"{name}: has no {key}, which {self.path}'s model reads (features {self.features}); "
                                  f"give it, or fill it (--fill-{key} VALUE, fill={{'{key}': VALUE}})")
        sample["feat"] = point_features(sample, self.features)
        return sample

    @torch.no_grad()
    def predict(self, cloud: np.ndarray | dict, name: str = "cloud") -> Prediction:
        """Semantic classes, instances and their confidences of every point of `cloud`."""
        sample = self.sample(cloud, name)
        pred: dict = {}
        if len(sample["coord"]):
            batch = collate([sample])
            pred = {k: v.cpu().numpy() for k, v in self.model(to_device(batch, self.device))["pred"].items()
                    if k in PANOPTIC_KEYS}
        semantic, instance, scores = panoptic_prediction(pred, sample["point_index"], self.labels)
        return Prediction(semantic, instance, scores)

    def predict_batch(self, clouds: list[np.ndarray | dict]) -> list[Prediction]:
        """`predict` of each cloud, in order (one at a time: a cloud's prediction does not depend
        on the others, and instance clustering runs per cloud)."""
        return [self.predict(cloud, f"cloud {i}") for i, cloud in enumerate(clouds)]

    def predict_file(self, path: str | os.PathLike) -> Prediction:
        """`predict` of the cloud in a .bin, .pcd, .ply, .npy or .npz file (voxseg.data.point_files)."""
        return self.predict(read_points(path), str(path))
