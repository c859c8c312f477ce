"""Training hooks: progress bar, TensorBoard scalars, validation, EMA of weights, checkpoints.

The trainer's standard hooks are built from `train.*` settings; more come from YAML
(`train.hooks: [{type: EMAHook, momentum: 0.999}]`, any class registered in HOOKS). A hook
finds the run's folder and config on the trainer (`trainer.work_dir`, `trainer.config`).
Under torchrun, hooks that print or write are `main_only` (rank 0); validation runs on every
rank, each predicting its shard of the scans, and rank 0 scores and writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Callable

import numpy as np
from tqdm import tqdm

from voxseg import atomic, distributed
from voxseg.config import Range
from voxseg.contracts import Evaluator, Hook
from voxseg.engine import checkpoint
from voxseg.engine.ema import ModelEMA
from voxseg.engine.inference import predict
from voxseg.engine.trainer import Trainer
from voxseg.registry import HOOKS


@HOOKS.register()
class ProgressBarHook(Hook):
    """A tqdm bar over the optimizer steps showing every loss term, the learning rate and the
    last validation's key metric."""

    main_only = True

    def __init__(self, every: int = 1, enabled: bool = True):
        self.every, self.enabled = every, enabled
        self.bar: Any = None  # the tqdm bar, from before_train
        self.postfix: dict[str, str] = {}

    def before_train(self, trainer: Trainer) -> None:
        self.bar = tqdm(total=trainer.max_steps, initial=trainer.step, desc="train", unit="step",
                        disable=not self.enabled, dynamic_ncols=True)

    def after_step(self, trainer: Trainer, outputs: dict) -> None:
        self.bar.update(1)
        if trainer.step % self.every == 0:
            for key, value in trainer.scalars.items():
                self.postfix[key.removeprefix("loss_") if key != "loss" else key] = f"{value:.3f}"
            self.postfix["lr"] = f"{trainer.optimizer.param_groups[0]['lr']:.2e}"
            self.bar.set_postfix(self.postfix, refresh=False)

    def log(self, trainer: Trainer, scalars: dict[str, float]) -> None:
        key = trainer.state.get("key_metric")
        if key and f"val/{key}" in scalars:
            self.postfix[f"val_{key}"] = f"{scalars[f'val/{key}']:.4g}"

    def after_train(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()

    on_interrupt = after_train


@HOOKS.register()
class TensorBoardHook(Hook):
    """Scalars under `log_dir`: every loss term averaged over `every` steps, the learning rate of
    each parameter group, seconds per step, and whatever other hooks log (validation)."""

    main_only = True

    def __init__(self, log_dir: str | Path, every: int = 10):
        self.log_dir = Path(log_dir)
        self.writer: Any = None  # a SummaryWriter (and its folder) from before_train
        self.every = every
        self.sums: dict[str, float] = {}
        self.count = 0
        self.tick = time.perf_counter()

    def before_train(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir))
        self.tick = time.perf_counter()

    def after_step(self, trainer: Trainer, outputs: dict) -> None:
        for key, value in trainer.scalars.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1
        if trainer.step % self.every == 0:
            now = time.perf_counter()
            scalars = {f"train/{k}": v / self.count for k, v in self.sums.items()}
            for i, group in enumerate(trainer.optimizer.param_groups):
                scalars[f"train/lr/{group.get('name', i)}"] = group["lr"]
            scalars["train/seconds_per_step"] = (now - self.tick) / self.count
            trainer.log(scalars)
            self.sums, self.count, self.tick = {}, 0, now

    def log(self, trainer: Trainer, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, trainer.step)

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.count = dict(state["sums"]), state["count"]

    def after_train(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()

    on_interrupt = after_train


class CheckpointHook(Hook):
    """`last.pt` every `every` steps, at the end, and on Ctrl-C / SIGTERM (between steps), so a
    run never loses more than `every` steps. Removes temp files of writes killed earlier."""

    main_only = True

    def __init__(self, directory: str | Path, config: dict, every: int = 200):
        self.directory, self.config, self.every = Path(directory), config, every

    def save(self, trainer: Trainer) -> None:
        checkpoint.save(self.directory / "last.pt", trainer, self.config)

    def before_train(self, trainer: Trainer) -> None:
        atomic.clean_stale(self.directory)

    def after_step(self, trainer: Trainer, outputs: dict) -> None:
        if self.every and trainer.step % self.every == 0:
            self.save(trainer)

    def after_train(self, trainer: Trainer) -> None:
        self.save(trainer)

    def on_interrupt(self, trainer: Trainer) -> None:
        self.save(trainer)
        print(f"\ninterrupted: checkpoint of step {trainer.step} in {self.directory / 'last.pt'}; "
              "continue with --resume")


class ValidationHook(Hook):
    """Validation every `every` steps and at the end; keeps `best.pt` by the key metric.

    `max_scans` > 0 validates that many scans, evenly spread and always the same ones, at
    intermediate validations. Every validation that decides "best" scores those same scans:
    the final validation scores every scan for metrics.json and, in the same pass, the subset
    for the best-checkpoint decision.
    """

    def __init__(self, dataset, make_evaluator: Callable, every: int, checkpoint_dir: str | Path,
                 metrics_path: str | Path, config: dict, key_metric: str = "miou", mode: str = "max",
                 max_scans: int = 0):
        self.dataset, self.make_evaluator, self.every = dataset, make_evaluator, every
        self.key_metric, self.mode = key_metric, mode
        self.checkpoint_dir, self.metrics_path, self.config = Path(checkpoint_dir), Path(metrics_path), config
        self.evaluator: Evaluator | None = None  # the last validation's, for its printed summary
        n = len(dataset)
        self.subset = (np.linspace(0, n - 1, max_scans).round().astype(int).tolist()
                       if 0 < max_scans < n else list(range(n)))

    def _better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.mode == "max" else value < best

    def validate(self, trainer: Trainer, final: bool) -> dict | None:
        """Score the scans (all of them when `final`); None on ranks other than 0, which only predict."""
        indices = list(range(len(self.dataset))) if final else self.subset
        subset = self.make_evaluator()
        whole = self.make_evaluator() if final and len(self.subset) < len(self.dataset) else subset
        chosen = set(self.subset)
        ctx = trainer.ctx
        distributed.broadcast_buffers(trainer.model, ctx)
        mine = distributed.shard(indices, ctx)
        predictions = zip(mine, predict(trainer.model, self.dataset, trainer.device, mine), strict=True)
        for index, (_, pred, sample) in distributed.gather_in_order(predictions, len(indices), ctx):
            if index in chosen:
                subset.add(pred, sample)
            if whole is not subset:
                whole.add(pred, sample)
        if not ctx.is_main:
            return None
        scored = subset.result()
        result = whole.result() if whole is not subset else scored
        self.evaluator = whole
        trainer.log({f"val/{k}": float(result[k]) for k in type(subset).METRICS})
        trainer.log({f"val_{k}/{name}": float(v) for k, table in result.items() if isinstance(table, dict)
                     for name, v in table.items() if isinstance(v, float)})
        trainer.state["last_val"] = {"step": trainer.step, **result}
        value = float(scored[self.key_metric])
        if self._better(value, trainer.state.get("best")):
            trainer.state.update(best=value, best_step=trainer.step)
            checkpoint.save(self.checkpoint_dir / "best.pt", trainer, self.config)
        return result

    def before_train(self, trainer: Trainer) -> None:
        trainer.state["key_metric"] = self.key_metric

    def after_step(self, trainer: Trainer, outputs: dict) -> None:
        if self.every and trainer.step % self.every == 0 and trainer.step < trainer.max_steps:
            self.validate(trainer, final=False)

    def after_train(self, trainer: Trainer) -> None:
        result = self.validate(trainer, final=True)
        if result is None:  # not rank 0
            return
        assert self.evaluator is not None  # validate set it
        print(self.evaluator.summary(result))
        metrics = {
            "step": trainer.step,
            "key_metric": self.key_metric,
            f"best_{self.key_metric}": trainer.state["best"],
            "best_step": trainer.state["best_step"],
            "best_scored_scans": len(self.subset),
            "train_losses": trainer.state.get("train_losses", {}),  # every term of the last step
            **result,
        }
        atomic.write_text(self.metrics_path, json.dumps(metrics, indent=2) + "\n")


@HOOKS.register()
class EMAHook(Hook):
    """An exponential moving average of the model's weights (voxseg.engine.ema), updated after
    every step, kept in every checkpoint, and written as `checkpoints/ema.pt` (a model checkpoint
    that tools/infer.py reads) at the end. Rank 0 alone keeps it: DDP gives every rank the same weights."""

    main_only = True

    def __init__(self, momentum: Annotated[float, Range(ge=0, le=1)] = 0.999):
        self.momentum = momentum
        self.ema: ModelEMA | None = None
        self._restored: dict | None = None  # EMA weights from a checkpoint, applied at before_train

    def before_train(self, trainer: Trainer) -> None:
        self.ema = ModelEMA(trainer.model, self.momentum)
        if self._restored is not None:
            self.ema.module.load_state_dict(self._restored)

    def after_step(self, trainer: Trainer, outputs: dict) -> None:
        assert self.ema is not None  # before_train made it
        self.ema.update(trainer.model)

    def state_dict(self) -> dict:
        return {"model": self.ema.module.state_dict()} if self.ema is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._restored = state.get("model")

    def after_train(self, trainer: Trainer) -> None:
        assert self.ema is not None and trainer.work_dir is not None  # a run's trainer has a folder
        atomic.torch_save({"format": checkpoint.FORMAT, "step": trainer.step, "config": trainer.config,
                           "model": self.ema.module.state_dict()}, Path(trainer.work_dir) / "checkpoints" / "ema.pt")
