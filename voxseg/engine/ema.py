"""Exponential moving average of a model's weights: a momentum teacher (ISCC, BYOL, MoCo) or
weight averaging for evaluation.

    ema = ModelEMA(model, momentum=0.999)
    ... optimizer.step(); ema.update(model)

After update: p_ema <- m * p_ema + (1 - m) * p for every floating-point parameter and buffer
(batch-norm running statistics included, as timm's ModelEmaV2); integer buffers (batch-norm's
`num_batches_tracked`) are copied. The averaged copy never takes gradients, and the student's
forward passes never touch its batch-norm statistics: it is a separate module.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


def clone_module(model: nn.Module) -> nn.Module:
    """A deep copy of `model` that also copies attributes kept in `__slots__`.

    MinkowskiEngine's layers (MinkowskiConvolution, ...) keep their settings (`dimension`,
    `kernel_generator`, ...) in `__slots__`, which torch's Module.__getstate__, and so
    copy.deepcopy, drops: the copy's first forward fails. No library copies them, so they are
    set here, module by module, after the deep copy. They are configuration (kernel generator,
    autograd function objects, some of which cannot be deep-copied), never parameters or
    buffers, so the copy shares them."""
    clone = copy.deepcopy(model)
    for source, target in zip(model.modules(), clone.modules(), strict=True):  # a deep copy: the same modules
        for cls in type(source).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if name not in ("__dict__", "__weakref__") and hasattr(source, name) and not hasattr(target, name):
                    setattr(target, name, getattr(source, name))
    return clone


class ModelEMA(nn.Module):
    def __init__(self, model: nn.Module, momentum: float = 0.999):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.module = clone_module(model).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, momentum: float | None = None) -> None:
        m = self.momentum if momentum is None else momentum
        mine = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = mine[name]
            if target.is_floating_point():
                target.mul_(m).add_(value.detach(), alpha=1.0 - m)
            else:
                target.copy_(value)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> "ModelEMA":
        """The averaged model always stays in evaluation mode."""
        return super().train(False)
