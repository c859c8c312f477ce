"""Registries: YAML names every exchangeable component by its `type`.

Backbones, heads, losses and models live in voxseg.models; datasets and transforms in
voxseg.data; hooks in voxseg.engine; evaluators in voxseg.evaluation. A component is registered
with a decorator and built from a config dict whose `type` key names it and whose other keys
are its constructor's arguments:

    @BACKBONES.register()
    class MinkUNet14A(MinkUNetBase): ...

    backbone = BACKBONES.build({"type": "MinkUNet14A", "in_channels": 1})

New heads, losses, datasets, transforms, hooks or evaluators are new modules that register
themselves; nothing in the core changes. Config validation (voxseg.config) looks component
types up here to check their keys. Each registry holds one kind of component and checks what it
builds against that kind's contract (voxseg.contracts): a head without `predict` fails at
build, naming what it lacks.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

from voxseg import contracts

__all__ = ["Registry", "BACKBONES", "HEADS", "LOSSES", "MODELS", "DATASETS", "TRANSFORMS", "HOOKS", "EVALUATORS",
           "find_component"]


class Registry:
    """A name -> class table with a `build(cfg)` factory that checks what it builds against
    `contract` (voxseg.contracts.require)."""

    _all: list["Registry"] = []

    def __init__(self, name: str, contract: type | None = None):
        self.name, self.contract = name, contract
        self._classes: dict[str, type] = {}
        Registry._all.append(self)

    def register(self, name: str | None = None) -> Callable[[type], type]:
        def add(cls: type) -> type:
            key = name or cls.__name__
            if key in self._classes:
                raise KeyError(f"{self.name} registry already has a component named {key!r}")
            self._classes[key] = cls
            return cls

        return add

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type:
        if name not in self._classes:
            hint = difflib.get_close_matches(name, self._classes, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise KeyError(f"unknown {self.name} type {name!r}{extra}; known: {', '.join(self.names())}")
        return self._classes[name]

    def __contains__(self, name: str) -> bool:
        return name in self._classes

    def build(self, cfg: dict[str, Any], **extra: Any) -> Any:
        """Instantiate `cfg["type"]` with the other keys (and `extra`) as keyword arguments."""
        if "type" not in cfg:
            raise KeyError(f"a {self.name} config needs a 'type' key, got keys {sorted(cfg)}")
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        component = self.get(cfg["type"])(**kwargs, **extra)
        if self.contract is not None:
            contracts.require(component, self.contract, f"{self.name} {cfg['type']}")
        return component


BACKBONES = Registry("backbone", contracts.Backbone)
HEADS = Registry("head", contracts.Head)
LOSSES = Registry("loss", contracts.Loss)
MODELS = Registry("model", contracts.Model)
DATASETS = Registry("dataset", contracts.PointDataset)
TRANSFORMS = Registry("transform", contracts.Transform)
HOOKS = Registry("hook", contracts.Hook)
EVALUATORS = Registry("evaluator", contracts.Evaluator)


def find_component(name: str) -> tuple[Registry, type[Any]] | None:
    """The registry and class registered under `name` in any registry, or None."""
    for registry in Registry._all:
        if name in registry:
            return registry, registry.get(name)
    return None
