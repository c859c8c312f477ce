"""A step-based training loop with hooks (Pointcept / mmengine style, kept small).

Hooks (voxseg.contracts.Hook) see the trainer at before_train, before_step, after_step(outputs),
after_epoch, after_train and on_interrupt, and receive scalars through log(trainer, scalars).
Everything else (progress bar, TensorBoard, validation, EMA, checkpoints) is a hook; a hook with
state returns it from state_dict() and it is saved in every checkpoint.

The model is any module whose forward(batch) returns a dict with a scalar `loss` in training
(and `loss_<name>` parts for logs). Interrupts (Ctrl-C, SIGTERM) are honoured between steps
only (voxseg.engine.interrupt): the checkpoint then holds exactly the steps it counts.

Under torchrun (voxseg.engine.process_group) the model is wrapped in DistributedDataParallel for
the training forward, each rank reads its share of every global batch, and hooks marked
`main_only` (those that print or write) run on rank 0 alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from voxseg import distributed
from voxseg.contracts import Hook
from voxseg.data.collate import to_device
from voxseg.engine.interrupt import deferred_interrupts


def loss_terms(outputs: dict) -> dict[str, float]:
    """The scalar `loss*` entries (and `grad_norm`) of a model's outputs, as floats."""
    return {k: float(v.detach()) for k, v in outputs.items()
            if (k.startswith("loss") or k == "grad_norm") and torch.is_tensor(v) and v.numel() == 1}


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch that can start part-way, so a resumed run continues with
    exactly the samples the interrupted run would have seen next.

    With `world_size` ranks each takes every world_size-th sample from `start`, from its rank
    on: step k's batches of batch_size scans on every rank are together the global batch
    order[start + k * B : start + (k + 1) * B], B = world_size * batch_size, which one process
    with batch size B would read."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        return iter(order[self.start + self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return len(range(self.start + self.rank, self.size, self.world_size))


class Trainer:
    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, loader: DataLoader,
                 sampler: EpochSampler, max_steps: int, device: torch.device, hooks: list[Hook], grad_clip: float = 0.0,
                 seed: int = 0, work_dir: str | Path | None = None, config: dict | None = None,
                 ctx: distributed.Context | None = None, find_unused_parameters: bool = False):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        ctx = ctx or distributed.Context()  # one process unless given
        self.ctx = ctx  # this process's rank and the world size (torchrun)
        # the training forward goes through DDP, which averages gradients over the ranks; hooks,
        # checkpoints and validation use the bare model
        self.forward_model = model if not ctx.enabled else torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters)
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
    def global_batch_size(self) -> int:
        assert self.loader.batch_size is not None  # a batching loader (drop_last), not a sampler of batches
        return self.loader.batch_size * self.ctx.world_size

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader.dataset) // self.global_batch_size  # type: ignore[arg-type]  # map-style: sized

    def _active_hooks(self) -> list[Hook]:
        return [h for h in self.hooks if self.ctx.is_main or not h.main_only]

    def log(self, scalars: dict[str, float]) -> None:
        for hook in self._active_hooks():
            hook.log(self, scalars)

    def _call(self, event: str, *args) -> None:
        for hook in self._active_hooks():
            getattr(hook, event)(self, *args)

    def train_step(self, batch: dict) -> dict:
        self.model.train()
        outputs = self.forward_model(to_device(batch, self.device))
        loss = outputs["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step + 1} (scans {batch.get('name')})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            outputs["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        # read once per step (one device sync), averaged over the ranks, shared by the hooks
        self.scalars = distributed.average(loss_terms(outputs), self.ctx, self.device)
        self.state["train_losses"] = {k: v for k, v in self.scalars.items() if k.startswith("loss")}
        return outputs

    def _start_epoch(self) -> None:
        """Position the sampler, and re-seed the loader's generator from (seed, epoch): the worker
        seeds it draws are then the same whether the epoch starts fresh or after a resume."""
        self.epoch = self.step // self.steps_per_epoch
        self.sampler.set_position(self.epoch, (self.step % self.steps_per_epoch) * self.global_batch_size)
        self.loader.dataset.epoch = self.epoch  # type: ignore[attr-defined]  # a PointDataset (voxseg.contracts)
        if self.loader.generator is not None:
            self.loader.generator.manual_seed(self.seed * 1_000_003 + self.epoch)

    def run(self) -> None:
        with deferred_interrupts() as stop:
            # every rank stops after the same step: a rank that stopped alone would leave the
            # others waiting in DDP's gradient all-reduce
            stopping = lambda: distributed.any_rank(stop.requested is not None, self.ctx, self.device)  # noqa: E731
            self._call("before_train")
            while self.step < self.max_steps and not stopping():
                self._start_epoch()
                for batch in self.loader:
                    if stopping():
                        break
                    self._call("before_step")
                    outputs = self.train_step(batch)
                    self.step += 1
                    self._call("after_step", outputs)
                    # dropped before the next batch is read: the outputs reach the step's autograd
                    # graph, whose MinkowskiEngine nodes keep every convolution's input features and
                    # the coordinate manager (its kernel maps) for as long as the graph lives
                    del outputs, batch
                    if self.step >= self.max_steps or self.step % self.steps_per_epoch == 0 or stopping():
                        break
                if self.step % self.steps_per_epoch == 0:
                    self._call("after_epoch")
            if stopping():
                self.interrupted = True
                self._call("on_interrupt")
                raise KeyboardInterrupt
            self._call("after_train")
