"""Supervised fine-tuning of a backbone and heads: the config schema and the run.

The run is voxseg.engine.training_run's skeleton on a segmentation model (voxseg.contracts.
SegmentationModel) and a labelled dataset. Everything a run needs is checked before anything is
written: the config (types and ranges), the output folder, on --resume the checkpoint and that
the config matches it, the model against the label config and features, the --pretrained
checkpoint against the model (voxseg.engine.checkpoint.load_backbone), and every scan the run
will read. A problem is one `error: FILE: problem` line (voxseg.errors) and the output folder is
left as it was.

Started by torchrun, the run trains data-parallel (voxseg.engine.process_group): every process
checks, rank 0 alone writes, and the world size is recorded as `train.world_size`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch

from voxseg import atomic, config as cfglib, contracts
from voxseg.config import Component, Range
from voxseg.data.labels import LabelConfig
from voxseg.engine import checkpoint
from voxseg.engine.hooks import CheckpointHook, ProgressBarHook, TensorBoardHook, ValidationHook
from voxseg.engine.trainer import Trainer
from voxseg.engine.training_run import TrainingRun, TrainSection
from voxseg.errors import ConfigError, VoxsegError
from voxseg.registry import DATASETS, EVALUATORS

INJECTED = ("root", "label_config")  # given once under `data`, passed to both datasets


@dataclass
class DataSection:
    root: str  # SemanticKITTI-format dataset: ROOT/sequences/NN/...
    label_config: str  # class mapping (configs/labels/*.yaml)
    train: Component = field(metadata={"inject": INJECTED})
    val: Component = field(metadata={"inject": INJECTED})


@dataclass
class FinetuneTrainSection(TrainSection):
    """Fine-tuning's `train` section: every run's keys (TrainSection) and validation's."""

    label_fraction: Annotated[float, Range(gt=0, le=1)] = 1.0  # train on this fraction of the labelled scans
    val_every: Annotated[int, Range(ge=0)] = 0  # steps between validations; 0 = only at the end
    val_max_scans: Annotated[int, Range(ge=0)] = 0  # scans per intermediate validation (and "best"); 0 = all
    key_metric: str = "miou"  # the evaluator's metric that picks best.pt
    key_metric_mode: Literal["max", "min"] = "max"


@dataclass
class FinetuneConfig:
    model: Component
    data: DataSection
    train: FinetuneTrainSection = field(default_factory=FinetuneTrainSection)
    evaluator: Component = field(default_factory=lambda: {"type": "SemanticEvaluator"},
                                 metadata={"inject": ("labels",)})
    output_dir: str = "runs/finetune"


def resolve(path: str, overrides: list[str]) -> dict:
    import voxseg.data.builtin  # noqa: F401  (register datasets and transforms)
    import voxseg.evaluation  # noqa: F401  (register evaluators)
    import voxseg.models  # noqa: F401  (register backbones, heads, losses, models)

    loaded = cfglib.load(path, overrides)
    if isinstance(loaded.data.get("model"), dict):  # an older config: format 1, or renamed types
        loaded.data["model"] = checkpoint.migrate_model_config(loaded.data["model"])
    return cfglib.validate(loaded, FinetuneConfig)


def select_subset(names: list[str], fraction: float, seed: int) -> list[int]:
    """Indices of round(fraction * n) scans (at least one), drawn without replacement, sorted."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"train.label_fraction must be in (0, 1], got {fraction}")
    count = max(1, round(fraction * len(names)))
    return sorted(np.random.default_rng(seed).choice(len(names), size=count, replace=False).tolist())


def build_datasets(cfg: dict) -> tuple[Any, Any]:
    """(training, validation) datasets, each given `data.root` and `data.label_config`."""
    data = cfg["data"]
    common = {"root": data["root"], "label_config": data["label_config"]}
    return DATASETS.build(data["train"], **common), DATASETS.build(data["val"], **common)


def check_model(model: Any, labels: LabelConfig, train_set: contracts.PointDataset, evaluator: contracts.Evaluator,
                train_cfg: dict) -> None:
    """The model against the label config (classes, thing classes), the data (input channels)
    and the evaluator (train.key_metric is one of its METRICS)."""
    if model.num_classes is not None and model.num_classes != labels.num_classes:
        raise ConfigError(f"model: heads predict {model.num_classes} classes but {labels.path} defines "
                          f"{labels.num_classes} evaluated classes")
    for name, head in model.heads.items():
        things = head.thing_classes
        if things is not None and list(things) != labels.thing_train_ids:
            raise ConfigError(f"model.heads.{name}.thing_classes is {list(things)} but {labels.path} makes train ids "
                              f"{labels.thing_train_ids} thing classes "
                              f"({', '.join(labels.class_names[c] for c in labels.thing_train_ids)})")
    in_channels = model.backbone.in_channels
    if in_channels != train_set.in_channels:
        raise ConfigError(f"model.backbone.in_channels is {in_channels} but data.train.features gives "
                          f"{train_set.in_channels}")
    if train_cfg["key_metric"] not in evaluator.METRICS:
        raise ConfigError(f"train.key_metric: {type(evaluator).__name__} has no metric {train_cfg['key_metric']!r}; "
                          f"choose from {', '.join(evaluator.METRICS)}")


class FinetuneRun(TrainingRun):
    """Fine-tuning: trains on the labelled subset (train.label_fraction, drawn by `select_subset`
    and recorded in label_subset.txt), validates with the evaluator (ValidationHook: best.pt and
    metrics.json) and returns the final validation's metrics."""

    contract = contracts.SegmentationModel
    schema = FinetuneConfig
    samples_noun = "labelled training scans"

    def __init__(self, cfg: dict, resume: bool = False, pretrained: str | None = None,
                 allow_config_change: bool = False, allow_partial_pretrained: bool = False):
        super().__init__(cfg, resume, allow_config_change)
        self.pretrained, self.allow_partial_pretrained = pretrained, allow_partial_pretrained
        self.report: checkpoint.LoadReport | None = None

    def start(self) -> None:
        super().start()
        if self.pretrained and not Path(self.pretrained).is_file():
            raise VoxsegError(f"{self.pretrained}: pretrained checkpoint not found")

    def build_datasets(self) -> contracts.PointDataset:
        train_set, self.val_set = build_datasets(self.cfg)
        for key, dataset in (("train", train_set), ("val", self.val_set)):
            contracts.require(dataset, contracts.LabelledDataset, f"data.{key}: {self.cfg['data'][key]['type']}")
        self.labels: LabelConfig = train_set.label_config
        return train_set

    def make_evaluator(self) -> contracts.Evaluator:
        return EVALUATORS.build(self.cfg["evaluator"], labels=self.labels)

    def check_model(self, model: Any) -> None:
        check_model(model, self.labels, self.train_set, self.make_evaluator(), self.train_cfg)
        if self.pretrained and self.saved is None:  # a resumed run continues from its checkpoint's weights
            self.report = checkpoint.load_backbone(model.backbone, self.pretrained,
                                                   checkpoint.BackboneRecord.of_config(self.cfg),
                                                   self.allow_partial_pretrained)

    def training_set(self) -> LabelledSubset:
        names = [self.train_set.name(i) for i in range(len(self.train_set))]
        self.names = names
        self.subset_file = self.out / "label_subset.txt"
        self.subset_recorded = self.resume and self.subset_file.exists()
        if self.subset_recorded:
            wanted = set(self.subset_file.read_text().split())
            self.subset = [i for i, n in enumerate(names) if n in wanted]
        else:
            self.subset = select_subset(names, self.train_cfg["label_fraction"], self.train_cfg["seed"])
        return LabelledSubset(self.train_set, self.subset)

    def check_data(self) -> None:
        full = self.train_cfg["check_data"] == "full"
        self.train_set.check(full=full, progress=self.train_cfg["progress"], indices=self.subset)
        self.val_set.check(full=full, progress=self.train_cfg["progress"])

    def write_records(self) -> None:
        if not self.subset_recorded:
            atomic.write_text(self.subset_file, "".join(f"{self.names[i]}\n" for i in self.subset))
        if self.report is not None:
            atomic.write_text(self.out / "pretrained.txt", f"{self.pretrained}\n{self.report.summary()}\n")

    def build_hooks(self) -> list:
        train_cfg, ckpt_dir = self.train_cfg, self.ckpt_dir
        if self.report is not None:
            self.say(f"pretrained weights from {self.pretrained}:\n{self.report.summary()}")
        return [
            ProgressBarHook(enabled=train_cfg["progress"]),
            TensorBoardHook(self.out / "tb", every=train_cfg["log_every"]),
            ValidationHook(self.val_set, self.make_evaluator, train_cfg["val_every"], ckpt_dir,
                           self.out / "metrics.json", self.cfg, train_cfg["key_metric"], train_cfg["key_metric_mode"],
                           train_cfg["val_max_scans"]),
            *self.extra_hooks(),
            CheckpointHook(ckpt_dir, self.cfg, every=train_cfg["checkpoint_every"]),  # last: saves what the others did
        ]

    def describe_data(self) -> str:
        return f"{len(self.subset)} of {len(self.train_set)} labelled scans, validating on {len(self.val_set)}"

    def result(self, trainer: Trainer) -> dict:
        return trainer.state.get("last_val", {})


def run(cfg: dict, resume: bool = False, pretrained: str | None = None, allow_config_change: bool = False,
        allow_partial_pretrained: bool = False) -> dict:
    """Fine-tune as `cfg` (resolved) says; returns the final validation metrics (on rank 0; an
    empty dict on the other ranks of a torchrun). `pretrained` must fit the model unless
    `allow_partial_pretrained` (voxseg.engine.checkpoint.load_backbone)."""
    return FinetuneRun(cfg, resume, pretrained, allow_config_change, allow_partial_pretrained).run()


class LabelledSubset(torch.utils.data.Subset):
    """The scans kept by the label fraction; `epoch` reaches the dataset's augmentation seed."""

    def __init__(self, dataset: contracts.PointDataset, indices: list[int]):
        super().__init__(dataset, indices)  # type: ignore[arg-type]  # a PointDataset is a map-style Dataset
        self.source = dataset

    @property
    def epoch(self) -> int:
        return self.source.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.source.epoch = value
