"""Self-supervised pretraining (ISCC): the config schema and the run.

The run is voxseg.engine.training_run's skeleton, as fine-tuning's, on a pretraining model
(voxseg.contracts.PretrainingModel: voxseg.pretrain, `type: ISCC`) and a pair dataset
(voxseg.data.pretrain_pairs, `type: ISCCPairs`), without labels, validation or an evaluator:
  - everything is checked before anything is written (config, output folder, on --resume the
    checkpoint, the model against the data's features, every scan and group file, and that the
    first steps' pairs share a group: `check_shared_groups`), and a problem is one
    `error: FILE: problem` line;
  - hooks: progress bar, TensorBoard (every loss term, the prototype usage entropy and the
    queue fill), the momentum teacher's update after every step, atomic checkpoints every
    `train.checkpoint_every` steps and on Ctrl-C / SIGTERM; `--resume` continues exactly;
  - torchrun trains data-parallel as fine-tuning does;
  - at the end, `checkpoints/encoder.pt`: the student backbone's weights (`backbone.*`) and the
    run's config, which records the backbone's type, input channels and features, so that
    `tools/finetune.py --pretrained` loads it only into a backbone it fits (so does `last.pt`;
    voxseg.engine.checkpoint.load_backbone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from voxseg import atomic, config as cfglib, contracts
from voxseg.config import Component
from voxseg.contracts import Hook
from voxseg.engine import checkpoint
from voxseg.engine.hooks import CheckpointHook, ProgressBarHook, TensorBoardHook
from voxseg.engine.trainer import EpochSampler, Trainer
from voxseg.engine.training_run import TrainingRun, TrainSection
from voxseg.errors import VoxsegError
from voxseg.registry import DATASETS


@dataclass
class PretrainDataSection:
    root: str  # SemanticKITTI-format dataset with preprocessing's groups (tools/preprocess.py)
    train: Component = field(metadata={"inject": ("root",)})


@dataclass
class PretrainConfig:
    model: Component
    data: PretrainDataSection
    train: TrainSection = field(default_factory=TrainSection)  # every run's keys: nothing of its own
    output_dir: str = "runs/pretrain"


def resolve(path: str, overrides: list[str]) -> dict:
    import voxseg.data.builtin  # noqa: F401  (register datasets, ISCCPairs included, and transforms)
    import voxseg.models  # noqa: F401  (register backbones and the pretraining models)

    loaded = cfglib.load(path, overrides)
    if isinstance(loaded.data.get("model"), dict):  # an older config: renamed types (checkpoint.RENAMED_TYPES)
        loaded.data["model"] = checkpoint.migrate_model_config(loaded.data["model"])
    return cfglib.validate(loaded, PretrainConfig)


class MomentumTeacherHook(Hook):
    """After every optimizer step: the model's teacher becomes the EMA of the student
    (`model.momentum_update()`, voxseg.contracts.PretrainingModel, on every rank), and the step's
    diagnostics (`prototype_entropy`, `queue_fill`) join the logged scalars, so TensorBoard and
    the progress bar show them."""

    DIAGNOSTICS = ("prototype_entropy", "queue_fill")

    def after_step(self, trainer: Trainer, outputs: dict) -> None:
        model: contracts.PretrainingModel = trainer.model  # type: ignore[assignment]  # PretrainRun checked it
        model.momentum_update()
        for key in self.DIAGNOSTICS:
            if key in outputs:
                trainer.scalars[key] = float(outputs[key])


def encoder_state(model: contracts.Model) -> dict[str, torch.Tensor]:
    """The student backbone's tensors, named `backbone.*` as a Segmentor's."""
    return {f"backbone.{k}": v.detach().cpu() for k, v in model.backbone.state_dict().items()}


class EncoderHook(Hook):
    """Writes `checkpoints/encoder.pt` at the end: the student backbone for fine-tuning, with the
    run's config (what the backbone was built for: voxseg.engine.checkpoint.BackboneRecord)."""

    main_only = True

    def __init__(self, path: Path, config: dict):
        self.path, self.config = path, config

    def after_train(self, trainer: Trainer) -> None:
        atomic.torch_save({"format": checkpoint.FORMAT, "step": trainer.step, "config": self.config,
                           "model": encoder_state(trainer.model)}, self.path)


SHARED_GROUP_STEPS = 10  # the first steps whose pairs check_shared_groups reads


def check_shared_groups(dataset, train_cfg: dict, global_batch: int) -> None:
    """ISCC learns only from groups present in both views of a pair (voxseg.pretrain.iscc: its
    contrastive terms pool shared groups, and its occupancy queries are cast from masked shared
    groups); ISCCPairs sets every other id to -1. Pairs without one give loss and gradient
    exactly 0. Reads the pairs of the first SHARED_GROUP_STEPS steps (at most max_steps and one
    epoch) in the trainer's order (EpochSampler, epoch 0) until one shares a group (usually the
    first); when none does the run would train nothing: VoxsegError naming those scans."""
    steps = min(SHARED_GROUP_STEPS, train_cfg["max_steps"], len(dataset) // global_batch)
    order = list(EpochSampler(len(dataset), train_cfg["seed"]))[:steps * global_batch]
    pairs = []
    for index in order:
        sample = dataset[index]
        if (sample["view1"]["group"] >= 0).any():
            return
        pairs.append(f"{sample['name']} with {sample['pair']}")
    raise VoxsegError(f"{dataset.groups_root}: no group id appears in both views of any pair of the first {steps} "
                      f"step(s) ({checkpoint.shown(pairs, 4)}), so ISCC would train nothing (loss and gradient 0); "
                      "check preprocessing's groups (ground removal may have left one group per scan)")


class PretrainRun(TrainingRun):
    """Pretraining: trains on every pair of the pretraining data (after `check_shared_groups`),
    updates the momentum teacher after every step and returns the encoder checkpoint's path."""

    contract = contracts.PretrainingModel
    schema = PretrainConfig
    noun = "pretraining"
    samples_noun = "scans of the pretraining data"

    def build_datasets(self):
        return DATASETS.build(self.cfg["data"]["train"], root=self.cfg["data"]["root"])

    def check_data(self) -> None:
        super().check_data()
        if self.saved is None:  # a resumed run trained on these pairs already
            check_shared_groups(self.train_set, self.train_cfg, self.global_batch)

    def build_hooks(self) -> list:
        train_cfg, ckpt_dir = self.train_cfg, self.ckpt_dir
        self.encoder = ckpt_dir / "encoder.pt"
        return [
            MomentumTeacherHook(),  # first: the scalars it adds are then logged by the hooks after it
            ProgressBarHook(enabled=train_cfg["progress"]),
            TensorBoardHook(self.out / "tb", every=train_cfg["log_every"]),
            *self.extra_hooks(),
            EncoderHook(self.encoder, self.cfg),
            CheckpointHook(ckpt_dir, self.cfg, every=train_cfg["checkpoint_every"]),  # last: saves what the others did
        ]

    def result(self, trainer: Trainer) -> Path:
        self.say(f"encoder weights for fine-tuning (--pretrained): {self.encoder}")
        return self.encoder


def run(cfg: dict, resume: bool = False, allow_config_change: bool = False) -> Path:
    """Pretrain as `cfg` (resolved) says; returns the encoder checkpoint's path."""
    return PretrainRun(cfg, resume, allow_config_change).run()
