"""Supervised fine-tuning of a backbone and heads: the config schema and the run.

Everything a run needs is checked before anything is written: the config (types and ranges),
the output folder, on --resume the checkpoint and that the config matches it, the model
against the label config and features, the --pretrained checkpoint against the model
(voxseg.engine.checkpoint.load_backbone), and every scan the run will read. A problem is one
`error: FILE: problem` line (voxseg.errors) and the output folder is left as it was.

Started by torchrun, the run trains data-parallel (voxseg.engine.process_group): every process
checks, rank 0 alone writes, and the world size is recorded as `train.world_size`.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from voxseg import atomic, config as cfglib, distributed, sparse
from voxseg.config import Component, Range
from voxseg.data.collate import collate
from voxseg.engine import checkpoint, process_group
from voxseg.engine.device import pick_device
from voxseg.engine.hooks import CheckpointHook, ProgressBarHook, TensorBoardHook, ValidationHook
from voxseg.engine.interrupt import ignore_in_worker
from voxseg.engine.optim import ParamGroup, build_optimizer, build_scheduler
from voxseg.engine.trainer import EpochSampler, Trainer
from voxseg.errors import ConfigError, VoxsegError
from voxseg.registry import DATASETS, EVALUATORS, HOOKS, MODELS

INJECTED = ("root", "label_config")  # given once under `data`, passed to both datasets
# Keys a resumed run may change freely: they affect speed and display, not the numbers.
# (train.world_size is not one: it changes the global batch and the order of the scans.)
RUNTIME_KEYS = ("train.num_workers", "train.progress", "train.device", "train.check_data", "output_dir")


@dataclass
class DataSection:
    root: str  # SemanticKITTI-format dataset: ROOT/sequences/NN/...
    label_config: str  # class mapping (configs/labels/*.yaml)
    train: Component = field(metadata={"inject": INJECTED})
    val: Component = field(metadata={"inject": INJECTED})


@dataclass
class TrainSection:
    max_steps: Annotated[int, Range(ge=1)] = 1000
    batch_size: Annotated[int, Range(ge=1)] = 2  # scans per step and process; the global batch is world_size times it
    num_workers: Annotated[int, Range(ge=0)] = 1
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: Annotated[float, Range(gt=0)] = 1e-3
    weight_decay: Annotated[float, Range(ge=0)] = 1e-4
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9  # SGD only
    param_groups: list[ParamGroup] = field(default_factory=list)  # own lr / weight decay by name pattern
    warmup_steps: Annotated[int, Range(ge=0)] = 50  # linear warm-up, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: Annotated[float, Range(ge=0, le=1)] = 0.01
    grad_clip: Annotated[float, Range(ge=0)] = 10.0  # max gradient norm; 0 disables
    label_fraction: Annotated[float, Range(gt=0, le=1)] = 1.0  # train on this fraction of the labelled scans
    seed: Annotated[int, Range(ge=0, lt=2**32)] = 0  # numpy seeds are 32-bit
    log_every: Annotated[int, Range(ge=1)] = 10
    val_every: Annotated[int, Range(ge=0)] = 0  # steps between validations; 0 = only at the end
    val_max_scans: Annotated[int, Range(ge=0)] = 0  # scans per intermediate validation (and "best"); 0 = all
    key_metric: str = "miou"  # the evaluator's metric that picks best.pt
    key_metric_mode: Literal["max", "min"] = "max"
    checkpoint_every: Annotated[int, Range(ge=0)] = 100
    hooks: list[Component] = field(default_factory=list)  # more hooks (HOOKS registry), e.g. EMAHook
    check_data: Literal["full", "sizes"] = "full"  # read every scan before training, or only check sizes
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Annotated[int, Range(ge=0)] = 0  # CPU threads for torch and ME; 1 makes CPU runs repeatable; 0 = defaults
    progress: bool = True
    world_size: Annotated[int, Range(ge=1)] = 1  # processes (torchrun's WORLD_SIZE): recorded by the run, not set by hand
    sync_bn: bool = False  # with several GPUs: batch-norm statistics over the global batch (MinkowskiSyncBatchNorm)
    find_unused_parameters: bool = False  # DDP: needed when some parameters get no gradient in a step


@dataclass
class FinetuneConfig:
    model: Component
    data: DataSection
    train: TrainSection = field(default_factory=TrainSection)
    evaluator: Component = field(default_factory=lambda: {"type": "SemanticEvaluator"}, metadata={"inject": ("labels",)})
    output_dir: str = "runs/finetune"


def resolve(path: str, overrides: list[str]) -> dict:
    import voxseg.data.builtin  # noqa: F401  (register datasets and transforms)
    import voxseg.evaluation  # noqa: F401  (register evaluators)
    import voxseg.models  # noqa: F401  (register backbones, heads, losses, models)

    loaded = cfglib.load(path, overrides)
    if isinstance(loaded.data.get("model"), dict):  # a config written before heads were separate
        loaded.data["model"] = checkpoint.migrate_model_config(loaded.data["model"])
    return cfglib.validate(loaded, FinetuneConfig)


def select_subset(names: list[str], fraction: float, seed: int) -> list[int]:
    """Indices of round(fraction * n) scans (at least one), drawn without replacement, sorted."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"train.label_fraction must be in (0, 1], got {fraction}")
    count = max(1, round(fraction * len(names)))
    return sorted(np.random.default_rng(seed).choice(len(names), size=count, replace=False).tolist())


def seed_everything(seed: int) -> None:
    """torch (CPU and every CUDA device), numpy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def build_datasets(cfg: dict):
    data = cfg["data"]
    common = {"root": data["root"], "label_config": data["label_config"]}
    return DATASETS.build(data["train"], **common), DATASETS.build(data["val"], **common)


def check_output_dir(out: Path, resume: bool) -> None:
    """The output folder can hold this run: not a file, and a new run does not overwrite one."""
    if out.exists() and not out.is_dir():
        raise VoxsegError(f"{out}: output_dir is a file, not a folder")
    last = out / "checkpoints" / "last.pt"
    if resume and not last.is_file():
        raise VoxsegError(f"{last}: no checkpoint to resume (run without --resume to start this run)")
    if not resume and last.exists():
        raise VoxsegError(f"{out}: holds a run already; pass --resume to continue it or choose another output_dir")


def make_output_dir(out: Path) -> None:
    """Create the output folder and prove it writable, with one clear line if not."""
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise VoxsegError(f"{out}: cannot write the output folder ({exc.strerror or exc})") from None


def check_resume_config(saved: dict, current: dict, path: Path, allow_change: bool) -> None:
    """A resumed run continues the saved run: its model may not change, and any other change
    (but RUNTIME_KEYS) needs `allow_change`."""
    differ = [k for k in checkpoint.config_differences(saved, current) if not k.startswith(RUNTIME_KEYS)]
    model = [k for k in differ if k.startswith("model.") or k.endswith(".features")]
    if model:
        raise VoxsegError(f"{path}: the config changes the model ({', '.join(model)}); "
                          "a resumed run cannot, start a new run (--pretrained loads the backbone)")
    if differ and not allow_change:
        raise VoxsegError(f"{path}: the config differs from the run's in {', '.join(differ)}; "
                          "pass --allow-config-change to resume with it anyway")


def check_model(model: torch.nn.Module, labels, train_set, evaluator, train_cfg: dict) -> None:
    classes = getattr(model, "num_classes", None)
    if classes is not None and classes != labels.num_classes:
        raise ConfigError(f"model: heads predict {classes} classes but {labels.path} defines "
                          f"{labels.num_classes} evaluated classes")
    for name, head in getattr(model, "heads", {}).items():
        things = getattr(head, "thing_classes", None)
        if things is not None and list(things) != labels.thing_classes:
            raise ConfigError(f"model.heads.{name}.thing_classes is {list(things)} but {labels.path} makes train ids "
                              f"{labels.thing_classes} thing classes ({', '.join(labels.class_names[c] for c in labels.thing_classes)})")
    in_channels = model.backbone.in_channels
    if in_channels != train_set.in_channels:
        raise ConfigError(f"model.backbone.in_channels is {in_channels} but data.train.features gives {train_set.in_channels}")
    metrics = getattr(type(evaluator), "METRICS", ())
    if train_cfg["key_metric"] not in metrics:
        raise ConfigError(f"train.key_metric: {type(evaluator).__name__} has no metric {train_cfg['key_metric']!r}; "
                          f"choose from {', '.join(metrics)}")


def sync_batch_norm(model: torch.nn.Module, device: torch.device, ctx: distributed.Context) -> torch.nn.Module:
    """Batch norm over the global batch (train.sync_bn): ME's and torch's layers both converted."""
    if device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA: synchronised batch norm runs on GPUs only (set it false on CPU)")
    if not ctx.enabled:
        return model
    from voxseg.sparse import ME

    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(ME.MinkowskiSyncBatchNorm.convert_sync_batchnorm(model))


def run(cfg: dict, resume: bool = False, pretrained: str | None = None, allow_config_change: bool = False,
        allow_partial_pretrained: bool = False) -> dict:
    """Fine-tune as `cfg` (resolved) says; returns the final validation metrics (on rank 0; an
    empty dict on the other ranks of a torchrun). `pretrained` must fit the model unless
    `allow_partial_pretrained` (voxseg.engine.checkpoint.load_backbone)."""
    ctx = distributed.from_env()
    try:
        return _run(cfg, ctx, resume, pretrained, allow_config_change, allow_partial_pretrained)
    finally:
        process_group.teardown()


def start_run(cfg: dict, ctx: distributed.Context, resume: bool, allow_config_change: bool,
              pretrained: str | None = None) -> tuple[Path, dict | None, torch.device]:
    """What a training run (fine-tuning or pretraining) does first, before it builds anything:
    record the world size, check the output folder, on --resume load the checkpoint and check
    the config against it, check the pretrained checkpoint exists, set threads and seeds, pick
    the device and join the process group. Returns (output folder, the saved checkpoint or None,
    device)."""
    train_cfg = cfg["train"]
    train_cfg["world_size"] = ctx.world_size
    out = Path(cfg["output_dir"])
    check_output_dir(out, resume)
    saved = None
    if resume:
        saved = checkpoint.load(out / "checkpoints" / "last.pt")
        check_resume_config(saved["config"], cfg, out / "checkpoints" / "last.pt", allow_config_change)
    if pretrained and not Path(pretrained).is_file():
        raise VoxsegError(f"{pretrained}: pretrained checkpoint not found")
    if train_cfg["threads"]:
        sparse.set_threads(train_cfg["threads"])
    seed_everything(train_cfg["seed"])
    device = pick_device(train_cfg["device"], ctx.local_rank if ctx.enabled else None)
    process_group.setup(ctx, device)
    return out, saved, device


def make_loader(dataset, sampler: EpochSampler, train_cfg: dict, device: torch.device) -> DataLoader:
    """The training DataLoader: `train.batch_size` samples a step from `sampler`, collated, with a
    generator the trainer re-seeds every epoch (exact resume) and workers that leave Ctrl-C to
    the main process."""
    return DataLoader(dataset, batch_size=train_cfg["batch_size"], sampler=sampler,
                      num_workers=train_cfg["num_workers"], collate_fn=collate, drop_last=True,
                      persistent_workers=False, pin_memory=device.type == "cuda",
                      generator=torch.Generator(), worker_init_fn=ignore_in_worker)


def make_trainer(model, optimizer, scheduler, loader: DataLoader, sampler: EpochSampler, device: torch.device,
                 hooks: list, cfg: dict, ctx: distributed.Context, saved: dict | None, say) -> Trainer:
    """The run's Trainer (fine-tuning or pretraining), restored from `saved` on --resume."""
    train_cfg = cfg["train"]
    out = Path(cfg["output_dir"])
    trainer = Trainer(model, optimizer, scheduler, loader, sampler, train_cfg["max_steps"], device, hooks,
                      train_cfg["grad_clip"], seed=train_cfg["seed"], work_dir=out, config=cfg, ctx=ctx,
                      find_unused_parameters=train_cfg["find_unused_parameters"])
    if saved is not None:
        checkpoint.restore(trainer, saved)
        say(f"resumed {out} at step {trainer.step}")
    return trainer


def processes_text(ctx: distributed.Context, device: torch.device, global_batch: int) -> str:
    """"; N processes (backend), global batch B" for the start line of a torchrun, else ""."""
    return (f"; {ctx.world_size} processes ({'nccl' if device.type == 'cuda' else 'gloo'}), "
            f"global batch {global_batch}" if ctx.enabled else "")


def _run(cfg: dict, ctx: distributed.Context, resume: bool, pretrained: str | None, allow_config_change: bool,
         allow_partial_pretrained: bool) -> dict:
    train_cfg = cfg["train"]
    say = print if ctx.is_main else (lambda *a, **k: None)
    out, saved, device = start_run(cfg, ctx, resume, allow_config_change, pretrained)
    ckpt_dir = out / "checkpoints"

    train_set, val_set = build_datasets(cfg)
    labels = train_set.label_config
    model = MODELS.build(cfg["model"]).to(device)
    if train_cfg["sync_bn"]:
        model = sync_batch_norm(model, device, ctx)
    make_evaluator = lambda: EVALUATORS.build(cfg["evaluator"], labels=labels)  # noqa: E731
    check_model(model, labels, train_set, make_evaluator(), train_cfg)
    report = None
    if pretrained and saved is None:  # a resumed run continues from its checkpoint's weights
        report = checkpoint.load_backbone(model.backbone, pretrained, checkpoint.BackboneRecord.of_config(cfg),
                                          allow_partial_pretrained)

    names = [train_set.name(i) for i in range(len(train_set))]
    subset_file = out / "label_subset.txt"
    if resume and subset_file.exists():
        wanted = set(subset_file.read_text().split())
        subset = [i for i, n in enumerate(names) if n in wanted]
    else:
        subset = select_subset(names, train_cfg["label_fraction"], train_cfg["seed"])
    global_batch = train_cfg["batch_size"] * ctx.world_size
    if global_batch > len(subset):
        per = f" x {ctx.world_size} processes" if ctx.enabled else ""
        raise ConfigError(f"train.batch_size {train_cfg['batch_size']}{per} exceeds the {len(subset)} labelled training scans")
    if ctx.is_main:  # the scans are read once, not by every process
        full = train_cfg["check_data"] == "full"
        train_set.check(full=full, progress=train_cfg["progress"], indices=subset)
        val_set.check(full=full, progress=train_cfg["progress"])

        # every check passed: from here on the run writes
        make_output_dir(out)
        cfglib.dump(cfg, out / "config.yaml")
        if not (resume and subset_file.exists()):
            atomic.write_text(subset_file, "".join(f"{names[i]}\n" for i in subset))
    distributed.barrier(ctx)  # (a rank-0 error ends the run: torchrun stops the other processes)
    labelled = LabelledSubset(train_set, subset)
    train_set.seed = train_cfg["seed"]
    sampler = EpochSampler(len(labelled), train_cfg["seed"], ctx.rank, ctx.world_size)
    loader = make_loader(labelled, sampler, train_cfg, device)
    optimizer = build_optimizer(model, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg)
    hooks = [
        ProgressBarHook(enabled=train_cfg["progress"]),
        TensorBoardHook(out / "tb", every=train_cfg["log_every"]),
        ValidationHook(val_set, make_evaluator, train_cfg["val_every"], ckpt_dir, out / "metrics.json", cfg,
                       train_cfg["key_metric"], train_cfg["key_metric_mode"], train_cfg["val_max_scans"]),
        *[HOOKS.build(h) for h in train_cfg["hooks"]],
        CheckpointHook(ckpt_dir, cfg, every=train_cfg["checkpoint_every"]),  # last: saves what the others did
    ]
    if report is not None:
        say(f"pretrained weights from {pretrained}:\n{report.summary()}")
        if ctx.is_main:
            atomic.write_text(out / "pretrained.txt", f"{pretrained}\n{report.summary()}\n")
    trainer = make_trainer(model, optimizer, scheduler, loader, sampler, device, hooks, cfg, ctx, saved, say)
    processes = processes_text(ctx, device, global_batch)
    say(f"training on {len(labelled)} of {len(train_set)} labelled scans, validating on {len(val_set)}; "
        f"device {device}{processes}; output {out}")
    trainer.run()
    return trainer.state.get("last_val", {})


class LabelledSubset(torch.utils.data.Subset):
    """The scans kept by the label fraction; `epoch` reaches the dataset's augmentation seed."""

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.dataset.epoch = value
