"""The contracts between voxseg's components, each declared once: what a dataset, transform,
backbone, head, loss, model, evaluator and hook must offer. The data flow they form is drawn in
docs/architecture.md.

Every registry (voxseg.registry) holds one kind of component and checks what it builds against
its contract (`require`), so a component that lacks a member fails when it is built, naming the
member, not at its first use deep in a run. The protocols are structural: a component satisfies
one by having its members, not by inheriting from it (Hook, whose methods all have a default, is
the one base class to inherit from).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from voxseg.errors import ConfigError


@runtime_checkable
class PointDataset(Protocol):
    """Samples of point clouds, one dict per index (voxseg.data.defaults: the base every dataset
    fills in). A sample holds numpy arrays: `coord` (N, 3), `feat` (N, in_channels) derived
    after the transforms, `point_index` (N,) the row in the source file, `name`, and with labels
    `segment` (N,) train ids (-1 ignore) and `instance` (N,) (-1 none)."""

    seed: int  # augmentation seed: transforms draw from np.random.default_rng([seed, epoch, index])
    epoch: int  # set by the trainer at every epoch

    @property
    def in_channels(self) -> int: ...  # columns of `feat`

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict: ...

    def name(self, index: int) -> str: ...  # the sample's name, without reading it

    def check(self, full: bool = True, progress: bool = True, indices: Any = None) -> None:
        """Check every file the run will read before work starts (DataFormatError naming it)."""
        ...


@runtime_checkable
class LabelledDataset(PointDataset, Protocol):
    """A dataset fine-tuning trains on: its samples' train ids follow `label_config`."""

    label_config: Any  # voxseg.data.labels.LabelConfig


@runtime_checkable
class Transform(Protocol):
    """A pure function of a sample and a generator: returns the new sample, never mutates the
    one it is given (voxseg.data.transforms)."""

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict: ...


@runtime_checkable
class Backbone(Protocol):
    """Voxelizes a collated batch once and returns per-voxel features with the maps back to
    points (voxseg.models.backbone_output.BackboneOutput)."""

    in_channels: int
    out_channels: int
    voxel_size: float

    def forward(self, batch: dict) -> Any: ...


@runtime_checkable
class Head(Protocol):
    """Maps a BackboneOutput to raw outputs (`forward`, used by losses) and, in evaluation, to
    per-point predictions (`predict`, whose keys are the class's `predicts`)."""

    predicts: tuple[str, ...]  # the keys `predict` returns; two heads of one model may not share one
    num_classes: int | None  # the classes it predicts (None: it predicts none)
    thing_classes: list[int] | None  # train ids it predicts instances of (None: it predicts no instances)

    def forward(self, features: Any, batch: dict) -> dict: ...

    def predict(self, outputs: dict, features: Any, batch: dict) -> dict: ...


@runtime_checkable
class Loss(Protocol):
    """One loss term over the heads' raw outputs; `target` is the batch key it needs (None: it
    needs none), so that a model computes its loss only when the batch has every target."""

    target: str | None

    def forward(self, heads: dict, batch: dict) -> torch.Tensor: ...


@runtime_checkable
class Model(Protocol):
    """A trainable model: forward(batch) returns a dict with a scalar `loss` in training (and
    `loss_<name>` terms for the logs)."""

    backbone: Any  # a Backbone: what --pretrained loads and pretraining exports

    def forward(self, batch: dict) -> dict: ...


@runtime_checkable
class SegmentationModel(Model, Protocol):
    """What fine-tuning trains and inference runs (voxseg.models.segmentor.Segmentor): named
    heads, and in evaluation `pred`, the heads' per-point predictions merged."""

    heads: Any  # name -> Head

    @property
    def num_classes(self) -> int | None: ...


@runtime_checkable
class PretrainingModel(Model, Protocol):
    """What pretraining trains (voxseg.pretrain.iscc.ISCC): after every optimizer step the
    trainer calls `momentum_update()` (the teacher follows the student)."""

    def momentum_update(self) -> None: ...


@runtime_checkable
class Evaluator(Protocol):
    """Accumulates predictions against ground truth; `result()` holds every name of `METRICS`
    (the scalars a run may select its best checkpoint by) and `summary(result)` prints it."""

    METRICS: tuple[str, ...]

    def add(self, pred: dict, sample: dict) -> None: ...

    def result(self) -> dict: ...

    def summary(self, result: dict) -> str: ...


class Hook:
    """What the training loop (voxseg.engine.trainer.Trainer, passed as `trainer`) calls, in
    this order: before_train, then per step before_step and after_step(outputs), after_epoch at
    the end of an epoch, after_train, or on_interrupt on Ctrl-C / SIGTERM; log(scalars) when a
    hook reports scalars. A hook with state returns it from state_dict(), saved in every
    checkpoint. `main_only` hooks (those that print or write) run on rank 0 alone."""

    main_only = False

    def before_train(self, trainer: Any) -> None: ...
    def before_step(self, trainer: Any) -> None: ...
    def after_step(self, trainer: Any, outputs: dict) -> None: ...
    def after_epoch(self, trainer: Any) -> None: ...
    def after_train(self, trainer: Any) -> None: ...
    def on_interrupt(self, trainer: Any) -> None: ...
    def log(self, trainer: Any, scalars: dict[str, float]) -> None: ...
    def state_dict(self) -> dict: return {}
    def load_state_dict(self, state: dict) -> None: ...


_PROTOCOL_DUNDERS = ("__call__", "__len__", "__getitem__")


def members(contract: type) -> list[str]:
    """The names a contract requires, sorted: its annotated attributes and its methods and
    properties, inherited ones included. (typing offers this only privately before Python 3.13.)"""
    names: set[str] = set()
    for cls in contract.__mro__:
        if cls in (object, Protocol) or cls.__module__ == "typing":
            continue
        names.update(getattr(cls, "__annotations__", {}))
        names.update(k for k, v in vars(cls).items()
                     if (callable(v) or isinstance(v, property)) and (not k.startswith("_") or k in _PROTOCOL_DUNDERS))
    return sorted(names)


def require(component: Any, contract: type, what: str) -> None:
    """ConfigError `WHAT lacks A, B of the CONTRACT contract` unless `component` has every member
    of `contract`; for a plain class (Hook), `WHAT is not a CONTRACT` unless it is an instance."""
    if not getattr(contract, "_is_protocol", False):
        if not isinstance(component, contract):
            raise ConfigError(f"{what} is not a {contract.__name__} "
                              f"(derive it from voxseg.contracts.{contract.__name__})")
        return
    missing = [name for name in members(contract) if not hasattr(component, name)]
    if missing:
        raise ConfigError(f"{what} lacks {', '.join(missing)} of the {contract.__name__} contract "
                          "(voxseg/contracts.py)")
