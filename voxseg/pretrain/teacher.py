"""ISCC's momentum encoder F_m: a copy of the student that takes no gradients and follows it as an
exponential moving average of its parameters, p_t <- m p_t + (1 - m) p_s (slides: "the teacher
network is a momentum encoder"; m = 0.999 in SegContrast and TARL).

As in MoCo, SegContrast and TARL (not voxseg.engine.ema.ModelEMA), the teacher
  * is averaged over parameters only; its buffers (batch-norm running statistics) are its own,
    updated by its own forward passes and never by the student's;
  * follows the model's train/eval mode, so in training it normalises with the statistics of its
    own batch. ModelEMA instead keeps its copy in eval mode and averages the running statistics
    too: a teacher normalising with statistics that start at batch norm's init (0, 1) and move at
    rate 1 - m (~1000 steps at m = 0.999) would give the clustering targets of the first
    thousands of steps from badly normalised features.

The teacher is built anew and loaded with the student's state, not deep-copied: MinkowskiEngine's
convolutions keep their settings in __slots__, which torch's Module.__getstate__ (and so
copy.deepcopy) drops.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
import torch.nn as nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def make_teacher(student: nn.Module, build: Callable[[], ModuleT]) -> ModuleT:
    """A new module from `build` (the student's architecture) holding the student's weights and
    buffers, whose parameters take no gradients."""
    teacher = build()
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def momentum_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """p_t <- m p_t + (1 - m) p_s for every parameter pair, in place; buffers untouched."""
    pairs = list(zip(teacher.parameters(), student.parameters(), strict=True))
    for p_t, p_s in pairs:
        if p_t.shape != p_s.shape:
            raise ValueError(f"teacher and student differ: {tuple(p_t.shape)} vs {tuple(p_s.shape)}")
        p_t.mul_(momentum).add_(p_s.detach(), alpha=1.0 - momentum)
