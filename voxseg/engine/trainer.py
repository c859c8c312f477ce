"""A step-based training loop with hooks (Pointcept / mmengine style, kept small).

Hooks see the trainer at before_train, before_step, after_step(outputs), after_epoch,
after_train and on_interrupt, and receive scalars through log(trainer, scalars). Everything else
(progress bar, TensorBoard, validation, checkpoints) is a hook.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


class Hook:
    def before_train(self, trainer: "Trainer") -> None: ...
    def before_step(self, trainer: "Trainer") -> None: ...
    def after_step(self, trainer: "Trainer", outputs: dict) -> None: ...
    def after_epoch(self, trainer: "Trainer") -> None: ...
    def after_train(self, trainer: "Trainer") -> None: ...
    def on_interrupt(self, trainer: "Trainer") -> None: ...
    def log(self, trainer: "Trainer", scalars: dict[str, float]) -> None: ...


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


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


class Trainer:
    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, loader: DataLoader,
                 sampler: EpochSampler, max_steps: int, device: torch.device, hooks: list[Hook], grad_clip: float = 0.0):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.loader, self.sampler = loader, sampler
        self.max_steps, self.device, self.hooks, self.grad_clip = max_steps, device, hooks, grad_clip
        self.step = 0  # optimizer steps done
        self.epoch = 0
        self.state: dict = {}  # shared by hooks: best metric, last validation, ...

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
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step + 1} (scans {batch['name']})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            outputs["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return outputs

    def run(self) -> None:
        try:
            self._call("before_train")
            while self.step < self.max_steps:
                self.epoch = self.step // self.steps_per_epoch
                self.sampler.set_position(self.epoch, (self.step % self.steps_per_epoch) * self.loader.batch_size)
                self.loader.dataset.epoch = self.epoch
                for batch in self.loader:
                    self._call("before_step")
                    outputs = self.train_step(batch)
                    self.step += 1
                    self._call("after_step", outputs)
                    if self.step >= self.max_steps or self.step % self.steps_per_epoch == 0:
                        break
                if self.step % self.steps_per_epoch == 0:
                    self._call("after_epoch")
            self._call("after_train")
        except KeyboardInterrupt:
            self._call("on_interrupt")
            raise
