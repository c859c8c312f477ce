"""The training loop (voxseg.engine.trainer.Trainer): what it keeps between steps."""

from __future__ import annotations

import weakref

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from voxseg.contracts import Hook
from voxseg.data.collate import collate
from voxseg.engine.trainer import EpochSampler, Trainer


class Points(Dataset):
    epoch = 0  # set by the trainer

    def __init__(self, count: int):
        self.coords = torch.randn(count, 5, 3).numpy()

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, index: int) -> dict:
        return {"coord": self.coords[index]}


class LinearModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, batch: dict) -> dict:
        return {"loss": self.linear(batch["coord"]).square().mean()}


class WatchOutputs(Hook):
    """Notes, at every step's start, whether the previous step's outputs are still alive."""

    def __init__(self):
        self.previous, self.alive = None, []

    def before_step(self, trainer) -> None:
        if self.previous is not None:
            self.alive.append(self.previous() is not None)

    def after_step(self, trainer, outputs: dict) -> None:
        self.previous = weakref.ref(outputs["loss"])


def test_a_step_keeps_nothing_of_the_previous_steps_outputs():
    """The outputs reach the step's autograd graph, whose MinkowskiEngine nodes hold every
    convolution's input and the kernel maps: the trainer drops them once the hooks have seen them."""
    torch.manual_seed(0)
    samples = Points(4)
    sampler = EpochSampler(len(samples), seed=0)
    loader = DataLoader(samples, batch_size=1, sampler=sampler, collate_fn=collate)
    model = LinearModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    watch = WatchOutputs()
    Trainer(model, optimizer, scheduler, loader, sampler, max_steps=4, device=torch.device("cpu"),
            hooks=[watch]).run()
    assert watch.alive == [False, False, False]
