"""Self-supervised pretraining (ISCC): the config schema and the run.

The run is fine-tuning's loop (voxseg.engine.trainer) on a pretraining model (voxseg.pretrain,
`type: ISCC`) and a pair dataset (voxseg.data.pretrain_pairs, `type: ISCCPairs`), without labels,
validation or an evaluator:
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
from typing import Annotated, Literal

import torch

from voxseg import atomic, config as cfglib, distributed
from voxseg.config import Component, Range
from voxseg.engine import checkpoint, process_group
from voxseg.engine.finetune import (make_loader, make_output_dir, make_trainer, processes_text, start_run,
                                    sync_batch_norm)
from voxseg.engine.hooks import CheckpointHook, ProgressBarHook, TensorBoardHook
from voxseg.engine.optim import ParamGroup, build_optimizer, build_scheduler
from voxseg.engine.trainer import EpochSampler, Hook, Trainer
from voxseg.errors import ConfigError, VoxsegError
from voxseg.registry import DATASETS, HOOKS, MODELS


@dataclass
class PretrainDataSection:
    root: str  # SemanticKITTI-format dataset with preprocessing's groups (tools/preprocess.py)
    train: Component = field(metadata={"inject": ("root",)})


@dataclass
class PretrainTrainSection:
    max_steps: Annotated[int, Range(ge=1)] = 1000
    batch_size: Annotated[int, Range(ge=1)] = 2  # pairs per step and process
    num_workers: Annotated[int, Range(ge=0)] = 1
    optimizer: Literal["adamw", "sgd"] = "adamw"  # AdamW as TARL
    lr: Annotated[float, Range(gt=0)] = 1e-3
    weight_decay: Annotated[float, Range(ge=0)] = 1e-4
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9  # SGD only (the teacher's momentum is model.momentum)
    param_groups: list[ParamGroup] = field(default_factory=list)
    warmup_steps: Annotated[int, Range(ge=0)] = 50
    min_lr_ratio: Annotated[float, Range(ge=0, le=1)] = 0.01
    grad_clip: Annotated[float, Range(ge=0)] = 10.0
    seed: Annotated[int, Range(ge=0, lt=2**32)] = 0  # numpy seeds are 32-bit
    log_every: Annotated[int, Range(ge=1)] = 10
    checkpoint_every: Annotated[int, Range(ge=0)] = 100
    hooks: list[Component] = field(default_factory=list)
    check_data: Literal["full", "sizes"] = "full"
    device: str = "auto"
    threads: Annotated[int, Range(ge=0)] = 0
    progress: bool = True
    world_size: Annotated[int, Range(ge=1)] = 1  # recorded by the run (torchrun's WORLD_SIZE)
    sync_bn: bool = False
    find_unused_parameters: bool = False


@dataclass
class PretrainConfig:
    model: Component
    data: PretrainDataSection
    train: PretrainTrainSection = field(default_factory=PretrainTrainSection)
    output_dir: str = "runs/pretrain"


def resolve(path: str, overrides: list[str]) -> dict:
    import voxseg.data.builtin  # noqa: F401  (register datasets, ISCCPairs included, and transforms)
    import voxseg.models  # noqa: F401  (register backbones and the pretraining models)

    return cfglib.validate(cfglib.load(path, overrides), PretrainConfig)


class MomentumTeacherHook(Hook):
    """After every optimizer step: the model's teacher becomes the EMA of the student
    (`model.momentum_update()`, on every rank), and the step's diagnostics (`prototype_entropy`,
    `queue_fill`) join the logged scalars, so TensorBoard and the progress bar show them."""

    DIAGNOSTICS = ("prototype_entropy", "queue_fill")

    def after_step(self, trainer: Trainer, outputs: dict) -> None:
        update = getattr(trainer.model, "momentum_update", None)
        if update is not None:
            update()
        for key in self.DIAGNOSTICS:
            if key in outputs:
                trainer.scalars[key] = float(outputs[key])


def encoder_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
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


def run(cfg: dict, resume: bool = False, allow_config_change: bool = False) -> Path:
    """Pretrain as `cfg` (resolved) says; returns the encoder checkpoint's path."""
    ctx = distributed.from_env()
    try:
        return _run(cfg, ctx, resume, allow_config_change)
    finally:
        process_group.teardown()


def _run(cfg: dict, ctx: distributed.Context, resume: bool, allow_config_change: bool) -> Path:
    train_cfg = cfg["train"]
    say = print if ctx.is_main else (lambda *a, **k: None)
    out, saved, device = start_run(cfg, ctx, resume, allow_config_change)
    ckpt_dir = out / "checkpoints"

    dataset = DATASETS.build(cfg["data"]["train"], root=cfg["data"]["root"])
    model = MODELS.build(cfg["model"]).to(device)
    if not hasattr(model, "backbone"):
        raise ConfigError(f"model: {cfg['model']['type']} has no `backbone` to pretrain")
    if model.backbone.in_channels != dataset.in_channels:
        raise ConfigError(f"model.backbone.in_channels is {model.backbone.in_channels} but data.train.features "
                          f"gives {dataset.in_channels}")
    if train_cfg["sync_bn"]:
        model = sync_batch_norm(model, device, ctx)
    global_batch = train_cfg["batch_size"] * ctx.world_size
    if global_batch > len(dataset):
        raise ConfigError(f"train.batch_size {train_cfg['batch_size']} x {ctx.world_size} processes exceeds "
                          f"the {len(dataset)} scans of the pretraining data")
    dataset.seed = train_cfg["seed"]
    if ctx.is_main:
        dataset.check(full=train_cfg["check_data"] == "full", progress=train_cfg["progress"])
        if saved is None:  # a resumed run trained on these pairs already
            check_shared_groups(dataset, train_cfg, global_batch)
        make_output_dir(out)  # every check passed: from here on the run writes
        cfglib.dump(cfg, out / "config.yaml")
    distributed.barrier(ctx)
    sampler = EpochSampler(len(dataset), train_cfg["seed"], ctx.rank, ctx.world_size)
    loader = make_loader(dataset, sampler, train_cfg, device)
    optimizer = build_optimizer(model, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg)
    encoder = ckpt_dir / "encoder.pt"
    hooks = [
        MomentumTeacherHook(),  # first: the scalars it adds are then logged by the hooks after it
        ProgressBarHook(enabled=train_cfg["progress"]),
        TensorBoardHook(out / "tb", every=train_cfg["log_every"]),
        *[HOOKS.build(h) for h in train_cfg["hooks"]],
        EncoderHook(encoder, cfg),
        CheckpointHook(ckpt_dir, cfg, every=train_cfg["checkpoint_every"]),  # last: saves what the others did
    ]
    trainer = make_trainer(model, optimizer, scheduler, loader, sampler, device, hooks, cfg, ctx, saved, say)
    processes = processes_text(ctx, device, global_batch)
    say(f"pretraining on {len(dataset)} scans; device {device}{processes}; output {out}")
    trainer.run()
    say(f"encoder weights for fine-tuning (--pretrained): {encoder}")
    return encoder
