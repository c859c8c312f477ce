"""Class mapping of a SemanticKITTI-format dataset, read from a semantic-kitti-api style YAML.

Three id spaces:
  raw     the ids in .label files (10 car, 40 road, 252 moving-car, ...);
  learn   `learning_map`'s "xentropy" ids, as semantic-kitti-api evaluates them (0 = unlabeled);
  train   contiguous ids 0..K-1 over the learn classes not in `learning_ignore`; -1 = ignore.
Networks predict train ids; files and the evaluator use raw and learn ids.

Thing classes, the classes whose objects have instances (car, person, ...; the other evaluated
classes are stuff), in each space:
  names      the label YAML's `thing_classes` (optional): a list of learn class names;
  learn ids  `LabelConfig.thing_learn_ids`, what the evaluator scores by;
  train ids  `LabelConfig.thing_train_ids` (and `stuff_train_ids`), what networks predict.
An instance head's `thing_classes` parameter (model.heads.<name>.thing_classes) lists train ids,
and fine-tuning checks it equals `thing_train_ids`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from voxseg.errors import ConfigError

REQUIRED_KEYS = ("labels", "learning_map", "learning_map_inv", "learning_ignore")


def _bgr(value: object, path: Path) -> tuple[int, int, int]:
    """One `color_map` entry: [blue, green, red]."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ConfigError(f"{path}: color_map entries must be [B, G, R], got {value!r}")
    blue, green, red = value
    return int(blue), int(green), int(red)


@dataclass(frozen=True)
class LabelConfig:
    path: str
    names: dict[int, str]  # raw id -> name
    learning_map: dict[int, int]  # raw -> learn
    learning_map_inv: dict[int, int]  # learn -> raw
    learning_ignore: dict[int, bool]  # learn -> ignored in training and mIoU
    color_map: dict[int, tuple[int, int, int]]  # raw -> BGR, as semantic-kitti-api stores it
    thing_learn_ids: tuple[int, ...] = ()  # the label YAML's thing_classes, as learn ids

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LabelConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: label config not found")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        missing = [k for k in REQUIRED_KEYS if not isinstance(data, dict) or not isinstance(data.get(k), dict)]
        if missing:
            raise ConfigError(f"{path}: label config lacks the mapping(s) {', '.join(missing)}")
        try:
            config = cls(
                path=str(path),
                names={int(k): str(v) for k, v in data["labels"].items()},
                learning_map={int(k): int(v) for k, v in data["learning_map"].items()},
                learning_map_inv={int(k): int(v) for k, v in data["learning_map_inv"].items()},
                learning_ignore={int(k): bool(v) for k, v in data["learning_ignore"].items()},
                color_map={int(k): _bgr(v, path) for k, v in (data.get("color_map") or {}).items()},
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: ids must be integers: {exc}") from None
        n = config.num_learn_classes
        if sorted(config.learning_map_inv) != list(range(n)):
            raise ConfigError(f"{path}: learning_map_inv keys must be 0..{n - 1}")
        stray = sorted(set(config.learning_map.values()) - set(range(n)))
        if stray:
            raise ConfigError(f"{path}: learning_map targets {stray} have no learning_map_inv entry")
        if sorted(config.learning_ignore) != list(range(n)):
            raise ConfigError(f"{path}: learning_ignore must list every learn class 0..{n - 1}")
        return dataclasses.replace(config, thing_learn_ids=config._learn_ids(data.get("thing_classes") or [], path))

    def _learn_ids(self, names: list, path: Path) -> tuple[int, ...]:
        """Learn ids of the evaluated classes called `names` (thing_classes)."""
        if not isinstance(names, list):
            raise ConfigError(f"{path}: thing_classes must be a list of class names, got {names!r}")
        by_name = {self.learn_name(c): c for c in self.evaluated}
        ignored = [n for n in names if n in {self.learn_name(c) for c in self.ignored}]
        if ignored:
            raise ConfigError(f"{path}: thing_classes {ignored} are ignored classes (learning_ignore)")
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(f"{path}: thing_classes {unknown} are not learn classes; choose from {sorted(by_name)}")
        return tuple(sorted({by_name[n] for n in names}))

    # ------------------------------------------------------------------------ id spaces
    @property
    def num_learn_classes(self) -> int:
        return len(self.learning_map_inv)

    @property
    def ignored(self) -> list[int]:
        """Learn ids excluded from training and from the mean IoU."""
        return [c for c in range(self.num_learn_classes) if self.learning_ignore[c]]

    @property
    def evaluated(self) -> list[int]:
        """Learn ids that the mean IoU averages over (semantic-kitti-api's `include`)."""
        return [c for c in range(self.num_learn_classes) if not self.learning_ignore[c]]

    @property
    def num_classes(self) -> int:
        """Number of train ids, i.e. of a network's outputs."""
        return len(self.evaluated)

    def learn_name(self, learn_id: int) -> str:
        return self.names.get(self.learning_map_inv[learn_id], str(learn_id))

    @property
    def class_names(self) -> list[str]:
        """Names of train ids 0..K-1."""
        return [self.learn_name(c) for c in self.evaluated]

    def rgb(self, raw: np.ndarray) -> np.ndarray:
        """(N, 3) float RGB in [0, 1] of raw class ids from `color_map` (stored BGR, as
        semantic-kitti-api does); grey for an id it lacks."""
        ids = np.asarray(raw, dtype=np.int64) & 0xFFFF
        lut = np.full((max(max(self.color_map, default=0), int(ids.max(initial=0))) + 1, 3), 128.0)
        for key, bgr in self.color_map.items():
            lut[key] = bgr[::-1]
        return lut[ids] / 255.0

    @property
    def thing_train_ids(self) -> list[int]:
        """Train ids of the classes with instances, sorted."""
        return sorted(self.learn_to_train(np.asarray(self.thing_learn_ids, dtype=np.int64)).tolist())

    @property
    def stuff_train_ids(self) -> list[int]:
        """Train ids of the other evaluated classes, sorted."""
        return sorted(set(range(self.num_classes)) - set(self.thing_train_ids))

    def raw_to_learn(self, raw: np.ndarray) -> np.ndarray:
        """Lower 16 bits of raw labels -> learn ids; ids missing from learning_map -> 0, as the api does."""
        lut = np.zeros(0x10000, dtype=np.int64)
        keys = np.fromiter(self.learning_map, dtype=np.int64)
        lut[keys] = np.fromiter(self.learning_map.values(), dtype=np.int64)
        return lut[np.asarray(raw, dtype=np.int64) & 0xFFFF]

    def unknown_raw_ids(self, raw: np.ndarray) -> dict[int, int]:
        """{class id: number of points} for the lower 16 bits of `raw` that `learning_map` does not
        list, ascending (raw_to_learn would map them to 0, unlabeled, without a word)."""
        counts = np.bincount(np.asarray(raw, dtype=np.int64).reshape(-1) & 0xFFFF, minlength=0x10000)
        counts[np.fromiter(self.learning_map, dtype=np.int64)] = 0
        unknown = np.flatnonzero(counts)
        return dict(zip(unknown.tolist(), counts[unknown].tolist(), strict=True))

    def learn_to_train(self, learn: np.ndarray) -> np.ndarray:
        lut = np.full(self.num_learn_classes, -1, dtype=np.int64)
        lut[self.evaluated] = np.arange(self.num_classes)
        return lut[learn]

    def raw_to_train(self, raw: np.ndarray) -> np.ndarray:
        return self.learn_to_train(self.raw_to_learn(raw))

    def dense_instances(self, semantic: np.ndarray, instance: np.ndarray) -> np.ndarray:
        """Per-scan instance ids: -1 where `instance` (the label's upper 16 bits) is 0, else a dense
        id 0..K-1 per (learn class, instance) pair, ordered by class then instance; SemanticKITTI's
        instance ids are unique only within a class."""
        instance = np.asarray(instance, dtype=np.int64)
        dense = np.full(instance.shape, -1, dtype=np.int64)
        has = instance > 0
        pairs = self.raw_to_learn(np.asarray(semantic)[has]) * 0x10000 + instance[has]
        dense[has] = np.unique(pairs, return_inverse=True)[1].reshape(-1)
        return dense

    def train_to_learn(self, train: np.ndarray) -> np.ndarray:
        return np.asarray(self.evaluated, dtype=np.int64)[train]

    def train_to_raw(self, train: np.ndarray) -> np.ndarray:
        lut = np.array([self.learning_map_inv[c] for c in self.evaluated], dtype=np.int64)
        return lut[train]
