"""One training run: the skeleton that fine-tuning (voxseg.engine.finetune) and pretraining
(voxseg.engine.pretrain) share, as detectron2's DefaultTrainer: `TrainingRun.run` calls the
`build_*` and `check_*` steps below in this order, and a task overrides the ones it needs.

    start          record the world size; check the output folder; on --resume load
                   checkpoints/last.pt and check the config against it; threads, seeds, device,
                   process group
    build_datasets the training dataset (and any other the task reads); its `seed` is set here,
                   the one place (the trainer sets `epoch`)
    build_model    the model from the MODELS registry, checked against the task's contract
                   (voxseg.contracts), moved to the device (synchronised batch norm on request)
    check_model    the model against the data (input channels) and the task (classes, metrics)
    training_set   the samples the run trains on (fine-tuning: the labelled subset)
    check_data     rank 0 reads every scan the run will read (train.check_data)
    write_records  rank 0: the output folder, config.yaml and the task's records; nothing is
                   written before this step, so a failed check leaves the folder as it was
    build_hooks    the task's hooks around the trainer (checkpoints last)
    trainer        EpochSampler, DataLoader, optimizer, scheduler, Trainer (restored on
                   --resume); then `trainer.run()` and `result(trainer)`

A problem found by a step is one `error: FILE: problem` line (voxseg.errors).
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from voxseg import config as cfglib, contracts, distributed, sparse
from voxseg.config import Component, Range
from voxseg.data.collate import collate
from voxseg.engine import checkpoint, process_group
from voxseg.engine.device import pick_device
from voxseg.engine.interrupt import ignore_in_worker
from voxseg.engine.optim import ParamGroup, build_optimizer, build_scheduler
from voxseg.engine.trainer import EpochSampler, Trainer
from voxseg.errors import ConfigError, VoxsegError
from voxseg.registry import HOOKS, MODELS

# Keys a resumed run may change freely: they affect speed and display, not the numbers.
# (train.world_size is not one: it changes the global batch and the order of the scans.)
RUNTIME_KEYS = ("train.num_workers", "train.progress", "train.device", "train.check_data", "output_dir")


@dataclass
class TrainSection:
    """The `train` section of every run; a task's schema adds its own keys (FinetuneTrainSection)."""

    max_steps: Annotated[int, Range(ge=1)] = 1000
    batch_size: Annotated[int, Range(ge=1)] = 2  # samples per step and process; the global batch: world_size times it
    num_workers: Annotated[int, Range(ge=0)] = 1
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: Annotated[float, Range(gt=0)] = 1e-3
    weight_decay: Annotated[float, Range(ge=0)] = 1e-4
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9  # SGD only (ISCC's teacher has its own: model.momentum)
    param_groups: list[ParamGroup] = field(default_factory=list)  # own lr / weight decay by name pattern
    warmup_steps: Annotated[int, Range(ge=0)] = 50  # linear warm-up, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: Annotated[float, Range(ge=0, le=1)] = 0.01
    grad_clip: Annotated[float, Range(ge=0)] = 10.0  # max gradient norm; 0 disables
    seed: Annotated[int, Range(ge=0, lt=2**32)] = 0  # numpy seeds are 32-bit
    log_every: Annotated[int, Range(ge=1)] = 10
    checkpoint_every: Annotated[int, Range(ge=0)] = 100
    hooks: list[Component] = field(default_factory=list)  # more hooks (HOOKS registry), e.g. EMAHook
    check_data: Literal["full", "sizes"] = "full"  # read every scan before training, or only check sizes
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Annotated[int, Range(ge=0)] = 0  # CPU threads for torch and ME; 1 makes CPU runs repeatable; 0 = defaults
    progress: bool = True
    world_size: Annotated[int, Range(ge=1)] = 1  # processes (torchrun's WORLD_SIZE), recorded by the run: not set
    sync_bn: bool = False  # with several GPUs: batch-norm statistics over the global batch (MinkowskiSyncBatchNorm)
    find_unused_parameters: bool = False  # DDP: needed when some parameters get no gradient in a step


def seed_everything(seed: int) -> None:
    """torch (CPU and every CUDA device), numpy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


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


def check_resume_config(saved: dict, current: dict, path: Path | str, allow_change: bool) -> None:
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


def sync_batch_norm(model: torch.nn.Module, device: torch.device, ctx: distributed.Context) -> torch.nn.Module:
    """Batch norm over the global batch (train.sync_bn): ME's and torch's layers both converted."""
    if device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA: synchronised batch norm runs on GPUs only (set it false on CPU)")
    if not ctx.enabled:
        return model
    from voxseg.sparse import ME

    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(ME.MinkowskiSyncBatchNorm.convert_sync_batchnorm(model))


class TrainingRun:
    """The run of a resolved config (module docstring). `contract` is the protocol of
    voxseg.contracts the task's model must satisfy; `run()` returns `result(trainer)`."""

    contract: type = contracts.Model
    schema: type  # the task's config dataclass (FinetuneConfig, PretrainConfig)
    noun = "training"  # the start line's first word

    def __init__(self, cfg: dict, resume: bool = False, allow_config_change: bool = False):
        self.cfg, self.resume, self.allow_config_change = cfg, resume, allow_config_change
        self.train_cfg = cfg["train"]
        self.out = Path(cfg["output_dir"])
        self.ckpt_dir = self.out / "checkpoints"
        self.saved: dict | None = None  # the checkpoint a resumed run continues
        self.train_set: contracts.PointDataset
        self.model: Any  # a torch.nn.Module satisfying `contract`
        self.global_batch = 0
        self.ctx = distributed.Context()
        self.device = torch.device("cpu")
        self.say = print

    def run(self) -> Any:
        self.ctx = distributed.from_env()
        try:
            return self._run()
        finally:
            process_group.teardown()

    def _run(self) -> Any:
        ctx, train_cfg = self.ctx, self.train_cfg
        self.say = print if ctx.is_main else (lambda *a, **k: None)
        self.start()
        self.train_set = self.build_datasets()
        self.train_set.seed = train_cfg["seed"]
        self.model = self.build_model()
        self.check_model(self.model)
        dataset = self.training_set()
        self.global_batch = train_cfg["batch_size"] * ctx.world_size
        if self.global_batch > len(dataset):
            per = f" x {ctx.world_size} processes" if ctx.enabled else ""
            raise ConfigError(f"train.batch_size {train_cfg['batch_size']}{per} exceeds the {len(dataset)} "
                              f"{self.samples_noun}")
        if ctx.is_main:  # the scans are read once, not by every process
            self.check_data()
            make_output_dir(self.out)  # every check passed: from here on the run writes
            cfglib.dump(self.cfg, self.out / "config.yaml")
            self.write_records()
        distributed.barrier(ctx)  # (a rank-0 error ends the run: torchrun stops the other processes)
        trainer = self.build_trainer(dataset)
        self.say(f"{self.noun} on {self.describe_data()}; device {self.device}{self.processes_text()}; "
                 f"output {self.out}")
        trainer.run()
        return self.result(trainer)

    def start(self) -> None:
        """Record the world size, check the output folder, on --resume load the checkpoint and
        check the config against it, set threads and seeds, pick the device and join the
        process group."""
        train_cfg = self.train_cfg
        train_cfg["world_size"] = self.ctx.world_size
        check_output_dir(self.out, self.resume)
        if self.resume:
            last = self.ckpt_dir / "last.pt"
            self.saved = checkpoint.load(last)
            saved_cfg = self.resolve_saved(self.saved["config"])
            check_resume_config(saved_cfg, self.cfg, last, self.allow_config_change)
        if train_cfg["threads"]:
            sparse.set_threads(train_cfg["threads"])
        seed_everything(train_cfg["seed"])
        self.device = pick_device(train_cfg["device"], self.ctx.local_rank if self.ctx.enabled else None)
        process_group.setup(self.ctx, self.device)

    # ---------------------------------------------------------------- the steps a task overrides
    samples_noun = "training samples"  # the batch-size error's noun (a class attribute a task sets)

    def resolve_saved(self, saved: dict) -> dict:
        """A resumed run's saved config resolved by this code's schema: an option
        added since the run was saved reads its default (the run ran without it) instead of
        counting as a change. A saved config this schema refuses (a key the code no longer
        knows) is compared as saved: the retired key is then a change like any other."""
        return cfglib.resolve_saved(saved, self.schema)

    def build_datasets(self) -> contracts.PointDataset:
        """The training dataset (a task keeps any other it needs on self)."""
        raise NotImplementedError

    def build_model(self) -> Any:
        model = MODELS.build(self.cfg["model"])
        contracts.require(model, self.contract, f"model: {self.cfg['model']['type']}")
        model = model.to(self.device)
        if self.train_cfg["sync_bn"]:
            model = sync_batch_norm(model, self.device, self.ctx)
        return model

    def check_model(self, model: Any) -> None:
        in_channels = model.backbone.in_channels
        if in_channels != self.train_set.in_channels:
            raise ConfigError(f"model.backbone.in_channels is {in_channels} but data.train.features gives "
                              f"{self.train_set.in_channels}")

    def training_set(self) -> Any:  # a map-style dataset with len(), for the DataLoader
        return self.train_set

    def check_data(self) -> None:
        self.train_set.check(full=self.train_cfg["check_data"] == "full", progress=self.train_cfg["progress"])

    def write_records(self) -> None:
        """The task's files beside config.yaml (rank 0, after every check)."""

    def build_hooks(self) -> list:
        raise NotImplementedError

    def describe_data(self) -> str:
        return f"{len(self.train_set)} scans"

    def result(self, trainer: Trainer) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------------------ the trainer
    def build_trainer(self, dataset: Any) -> Trainer:
        """EpochSampler, DataLoader (a generator the trainer re-seeds every epoch, for exact
        resume; workers leave Ctrl-C to the main process), optimizer, scheduler, the task's
        hooks and the Trainer, restored from the checkpoint on --resume."""
        train_cfg, ctx = self.train_cfg, self.ctx
        sampler = EpochSampler(len(dataset), train_cfg["seed"], ctx.rank, ctx.world_size)
        loader = DataLoader(dataset, batch_size=train_cfg["batch_size"], sampler=sampler,
                            num_workers=train_cfg["num_workers"], collate_fn=collate, drop_last=True,
                            persistent_workers=False, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator(), worker_init_fn=ignore_in_worker)
        optimizer = build_optimizer(self.model, train_cfg)
        scheduler = build_scheduler(optimizer, train_cfg)
        trainer = Trainer(self.model, optimizer, scheduler, loader, sampler, train_cfg["max_steps"], self.device,
                          self.build_hooks(), train_cfg["grad_clip"], seed=train_cfg["seed"], work_dir=self.out,
                          config=self.cfg, ctx=ctx, find_unused_parameters=train_cfg["find_unused_parameters"])
        if self.saved is not None:
            checkpoint.restore(trainer, self.saved)
            self.say(f"resumed {self.out} at step {trainer.step}")
        return trainer

    def extra_hooks(self) -> list:
        """The hooks the config adds (train.hooks, HOOKS registry)."""
        return [HOOKS.build(h) for h in self.train_cfg["hooks"]]

    def processes_text(self) -> str:
        """"; N processes (backend), global batch B" for the start line of a torchrun, else ""."""
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        return f"; {self.ctx.world_size} processes ({backend}), global batch {self.global_batch}" if self.ctx.enabled \
            else ""

