"""Training hooks: progress bar, TensorBoard scalars, periodic validation, checkpoints."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from voxseg import atomic
from voxseg.engine import checkpoint
from voxseg.engine.inference import predict
from voxseg.engine.trainer import Hook, Trainer
from voxseg.evaluation import SemanticEvaluator, format_table


class ProgressBarHook(Hook):
    """A tqdm bar over the optimizer steps showing the loss, learning rate and last val mIoU."""

    def __init__(self, every: int = 1, enabled: bool = True):
        self.every, self.enabled, self.bar = every, enabled, None
        self.postfix: dict[str, str] = {}

    def before_train(self, trainer: Trainer) -> None:
        self.bar = tqdm(total=trainer.max_steps, initial=trainer.step, desc="train", unit="step",
                        disable=not self.enabled, dynamic_ncols=True)

    def after_step(self, trainer: Trainer, outputs: dict) -> None:
        self.bar.update(1)
        if trainer.step % self.every == 0:
            self.postfix["loss"] = f"{outputs['loss'].item():.3f}"
            self.postfix["lr"] = f"{trainer.optimizer.param_groups[0]['lr']:.2e}"
            self.bar.set_postfix(self.postfix, refresh=False)

    def log(self, trainer: Trainer, scalars: dict[str, float]) -> None:
        if "val/miou" in scalars:
            self.postfix["val_miou"] = f"{100 * scalars['val/miou']:.1f}"

    def after_train(self, trainer: Trainer) -> None:
        self.bar.close()

    on_interrupt = after_train


class TensorBoardHook(Hook):
    """Scalars under `log_dir`: every loss part each `every` steps, learning rate, validation."""

    def __init__(self, log_dir: str | Path, every: int = 10):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))
        self.every = every
        self.sums: dict[str, float] = {}
        self.count = 0
        self.tick = time.perf_counter()

    def after_step(self, trainer: Trainer, outputs: dict) -> None:
        for key, value in outputs.items():
            if (key.startswith("loss") or key == "grad_norm") and torch.is_tensor(value) and value.numel() == 1:
                self.sums[key] = self.sums.get(key, 0.0) + float(value.detach())
        self.count += 1
        if trainer.step % self.every == 0:
            now = time.perf_counter()
            scalars = {f"train/{k}": v / self.count for k, v in self.sums.items()}
            scalars["train/lr"] = trainer.optimizer.param_groups[0]["lr"]
            scalars["train/seconds_per_step"] = (now - self.tick) / self.count
            trainer.log(scalars)
            self.sums, self.count, self.tick = {}, 0, now

    def log(self, trainer: Trainer, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, trainer.step)

    def after_train(self, trainer: Trainer) -> None:
        self.writer.close()

    on_interrupt = after_train


class CheckpointHook(Hook):
    """`last.pt` every `every` steps, at the end, and on Ctrl-C, so a run never loses more than
    `every` steps."""

    def __init__(self, directory: str | Path, config: dict, every: int = 200):
        self.directory, self.config, self.every = Path(directory), config, every

    def save(self, trainer: Trainer) -> None:
        checkpoint.save(self.directory / "last.pt", trainer, self.config)

    def after_step(self, trainer: Trainer, outputs: dict) -> None:
        if self.every and trainer.step % self.every == 0:
            self.save(trainer)

    def after_train(self, trainer: Trainer) -> None:
        self.save(trainer)

    def on_interrupt(self, trainer: Trainer) -> None:
        self.save(trainer)
        print(f"\ninterrupted: checkpoint of step {trainer.step} in {self.directory / 'last.pt'}; continue with --resume")


class ValidationHook(Hook):
    """Per-point semantic metrics on the validation set every `every` steps and at the end.

    Keeps `best.pt` (highest mIoU) and writes the final metrics to `metrics_path` (JSON).
    `max_scans` > 0 evaluates that many scans, evenly spread, at intermediate validations; the
    final validation always uses every scan.
    """

    def __init__(self, dataset, labels, every: int, checkpoint_dir: str | Path, metrics_path: str | Path,
                 config: dict, max_scans: int = 0):
        self.dataset, self.labels, self.every, self.max_scans = dataset, labels, every, max_scans
        self.checkpoint_dir, self.metrics_path, self.config = Path(checkpoint_dir), Path(metrics_path), config

    def validate(self, trainer: Trainer, full: bool) -> dict:
        indices = None
        if not full and self.max_scans and self.max_scans < len(self.dataset):
            indices = np.linspace(0, len(self.dataset) - 1, self.max_scans).round().astype(int)
        evaluator = SemanticEvaluator(self.labels)
        for _, pred, sample in predict(trainer.model, self.dataset, trainer.device, indices):
            evaluator.add_train(pred, sample["segment"])
        result = evaluator.result()
        trainer.log({"val/miou": result["miou"], "val/accuracy": result["accuracy"],
                     **{f"val_iou/{k}": v for k, v in result["iou_per_class"].items()}})
        trainer.state["last_val"] = {"step": trainer.step, **result}
        if result["miou"] > trainer.state.get("best_miou", -math.inf):
            trainer.state.update(best_miou=result["miou"], best_step=trainer.step)
            checkpoint.save(self.checkpoint_dir / "best.pt", trainer, self.config)
        return result

    def after_step(self, trainer: Trainer, outputs: dict) -> None:
        if self.every and trainer.step % self.every == 0 and trainer.step < trainer.max_steps:
            self.validate(trainer, full=False)

    def after_train(self, trainer: Trainer) -> None:
        result = self.validate(trainer, full=True)
        print(format_table(result))
        metrics = {
            "step": trainer.step,
            "best_miou": trainer.state["best_miou"],
            "best_step": trainer.state["best_step"],
            **result,
        }
        atomic.write_text(self.metrics_path, json.dumps(metrics, indent=2) + "\n")
