"""A step-based training loop with hooks (Pointcept / mmengine style, kept small).

Hooks see the trainer at before_train, before_step, after_step(outputs), after_epoch,
after_train and on_interrupt, and receive scalars through log(trainer, scalars). Everything
else (progress bar, TensorBoard, validation, EMA, checkpoints) is a hook; a hook with state
returns it from state_dict() and it is saved in every checkpoint.

The model is any module whose forward(batch) returns a dict with a scalar `loss` in training
(and `loss_<name>` parts for logs). Interrupts (Ctrl-C, SIGTERM) are honoured between steps
only (voxseg.engine.interrupt): the checkpoint then holds exactly the steps it counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from voxseg.data.collate import to_device
from voxseg.engine.interrupt import deferred_interrupts


def loss_terms(outputs: dict) -> dict[str, float]:
    """The scalar `loss*` entries (and `grad_norm`) of a model's outputs, as floats."""
    return {k: float(v.detach()) for k, v in outputs.items()
            if (k.startswith("loss") or k == "grad_norm") and torch.is_tensor(v) and v.numel() == 1}


class Hook:
    def before_train(self, trainer: "Trainer") -> None: ...
    def before_step(self, trainer: "Trainer") -> None: ...
    def after_step(self, trainer: "Trainer", outputs: dict) -> None: ...
    def after_epoch(self, trainer: "Trainer") -> None: ...
    def after_train(self, trainer: "Trainer") -> None: ...
    def on_interrupt(self, trainer: "Trainer") -> None: ...
    def log(self, trainer: "Trainer", scalars: dict[str, float]) -> None: ...
    def state_dict(self) -> dict: return {}
    def load_state_dict(self, state: dict) -> None: ...


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch that can start part-way, so a resumed run continues with
    exactly the samples the interrupted run would have seen next."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        return iter(order[self.start :].tolist())

    def __len__(self) -> int:
        return self.size - self.start


class Trainer:
    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, loader: DataLoader,
                 sampler: EpochSampler, max_steps: int, device: torch.device, hooks: list[Hook], grad_clip: float = 0.0,
                 seed: int = 0, work_dir: str | Path | None = None, config: dict | None = None):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.work_dir, self.config = work_dir, config  # the run's folder and resolved config, for hooks
        self.loader, self.sampler = loader, sampler
        self.max_steps, self.device, self.hooks, self.grad_clip = max_steps, device, hooks, grad_clip
        self.seed = seed
        self.step = 0  # optimizer steps done
        self.epoch = 0
        self.state: dict = {}  # shared by hooks: best metric, last validation, ...
        self.interrupted = False
        self.scalars: dict[str, float] = {}  # the last step's loss terms and grad norm

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader.dataset) // self.loader.batch_size

    def log(self, scalars: dict[str, float]) -> None:
        for hook in self.hooks:
            hook.log(self, scalars)

    def _call(self, event: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    def train_step(self, batch: dict) -> dict:
        self.model.train()
        outputs = self.model(to_device(batch, self.device))
        loss = outputs["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step + 1} (scans {batch.get('name')})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            outputs["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.scalars = loss_terms(outputs)  # read once per step (one device sync), shared by the hooks
        self.state["train_losses"] = {k: v for k, v in self.scalars.items() if k.startswith("loss")}
        return outputs

    def _start_epoch(self) -> None:
        """Position the sampler, and re-seed the loader's generator from (seed, epoch): the worker
        seeds it draws are then the same whether the epoch starts fresh or after a resume."""
        self.epoch = self.step // self.steps_per_epoch
        self.sampler.set_position(self.epoch, (self.step % self.steps_per_epoch) * self.loader.batch_size)
        self.loader.dataset.epoch = self.epoch
        if self.loader.generator is not None:
            self.loader.generator.manual_seed(self.seed * 1_000_003 + self.epoch)

    def run(self) -> None:
        with deferred_interrupts() as stop:
            self._call("before_train")
            while self.step < self.max_steps and not stop.requested:
                self._start_epoch()
                for batch in self.loader:
                    if stop.requested:
                        break
                    self._call("before_step")
                    outputs = self.train_step(batch)
                    self.step += 1
                    self._call("after_step", outputs)
                    if stop.requested or self.step >= self.max_steps or self.step % self.steps_per_epoch == 0:
                        break
                if self.step % self.steps_per_epoch == 0:
                    self._call("after_epoch")
            if stop.requested:
                self.interrupted = True
                self._call("on_interrupt")
                raise KeyboardInterrupt
            self._call("after_train")
