"""YAML configs with inheritance, command-line overrides and strict validation.

* A file may name parent files under `_base_` (a path or a list, relative to the file). Parents
  are merged first, in order, then the file itself: mappings merge key by key, anything else
  (lists included) is replaced. A mapping whose `type` differs from its parent's replaces it
  whole, so switching a component's type never inherits the old type's arguments.
* Overrides are dotted `key=value` pairs, the value read as YAML (`train.max_steps=50`,
  `data.train.sequences=[0,1]`, `model.backbone.type=MinkUNet18A`).
* `validate` checks the merged config against a schema: dataclasses for fixed sections, and the
  registered class's constructor signature for every mapping with a `type` (see voxseg.registry).
  An unknown key, a missing required key or a value of the wrong type raises ConfigError naming
  the key and the file that set it (or "command line"). Defaults are filled in, so the result is
  the fully resolved config that each run writes beside its outputs.
* Numeric bounds are declared on dataclass fields and constructor parameters with `Range` inside
  `typing.Annotated` (`batch_size: Annotated[int, Range(ge=1)] = 2`), also on the values of a
  mapping (`loss_weights: dict[str, Annotated[float, Range(ge=0)]]`, each checked as
  `loss_weights.NAME`). A value out of range, or a non-finite float (NaN, +-inf; YAML `.nan`,
  `.inf`), raises ConfigError the same way; None passes (`Annotated[float | None, Range(gt=0)]`).
* Rules between a component's arguments (RandomScale's low <= high, a loss naming an existing
  head) are declared once, in the component's `check_config(resolved)` static method, which
  raises InvalidValue(key within the component, problem); validation reports it as the other
  errors, so a config that cannot mean what it says is refused before a run starts.
* A YAML mapping that names a key twice is refused with both lines (PyYAML would keep the last
  silently, dropping a whole `train:` block).
* An override that changes a component's `type` (`ground.type=RansacPlane`) replaces its mapping,
  as a `_base_` child does: the old type's arguments are dropped, not blamed on their file.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml

from voxseg import atomic
from voxseg.errors import ConfigError
from voxseg.registry import find_component

__all__ = ["Component", "Inject", "Range", "InvalidValue", "LoadedConfig", "load", "validate", "dump", "ConfigError"]

_COMPONENT_MARK = "voxseg.component"
#: Annotation of a config value that is a registered component: a mapping with a `type` key.
Component = Annotated[dict, _COMPONENT_MARK]
COMMAND_LINE = "command line"


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds on a numeric config value, used as `Annotated[float, Range(gt=0)]`.

    `ge`/`gt` give the lower bound (inclusive/exclusive), `le`/`lt` the upper one; at most one of
    each pair. Validation also rejects NaN and +-inf for any value that has a Range, so `Range()`
    alone means "a finite number". None is not checked (for `Annotated[float | None, Range(...)]`).
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __post_init__(self) -> None:
        for name in ("ge", "gt", "le", "lt"):
            bound = getattr(self, name)
            if bound is not None and (
                isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound)
            ):
                raise ValueError(f"Range({name}=...) needs a finite number, got {bound!r}")
        if self.ge is not None and self.gt is not None:
            raise ValueError("Range takes at most one lower bound: ge or gt")
        if self.le is not None and self.lt is not None:
            raise ValueError("Range takes at most one upper bound: le or lt")
        low, high = self._low(), self._high()
        open_end = self.gt is not None or self.lt is not None
        if low is not None and high is not None and (low > high or (low == high and open_end)):
            raise ValueError(f"Range is empty: {self.describe()}")

    def _low(self) -> float | None:
        return self.ge if self.ge is not None else self.gt

    def _high(self) -> float | None:
        return self.le if self.le is not None else self.lt

    def contains(self, value: float) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def describe(self) -> str:
        """'>= 1', '> 0', '< 1', 'in (0, 1]'...; '' for an unbounded Range."""
        low, high = self._low(), self._high()
        if low is not None and high is not None:
            return f"in {'[' if self.ge is not None else '('}{low}, {high}{']' if self.le is not None else ')'}"
        if low is not None:
            return f"{'>=' if self.ge is not None else '>'} {low}"
        if high is not None:
            return f"{'<=' if self.le is not None else '<'} {high}"
        return ""


class InvalidValue(ValueError):
    """A value its type and Range allow but the rest of its component does not, raised by the
    component's `check_config(resolved)`: `key` is dotted within the component (`loss_weights.ce`),
    and validation reports `FILE: model.loss_weights.ce: problem`."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


@dataclasses.dataclass
class LoadedConfig:
    data: dict[str, Any]
    sources: dict[str, str]  # dotted key -> file (or "command line") that last set it

    def source(self, key: str) -> str:
        """The origin of `key`, or of its nearest ancestor that has one."""
        parts = key.split(".")
        while parts:
            origin = self.sources.get(".".join(parts))
            if origin:
                return origin
            parts.pop()
        return "config"


# ---------------------------------------------------------------------------------- loading
def load(path: str | Path, overrides: typing.Sequence[str] = ()) -> LoadedConfig:
    """Read `path` with its `_base_` parents, then apply dotted `key=value` overrides."""
    data, sources = _load_file(Path(path), stack=())
    for item in overrides:
        _apply_override(data, sources, item)
    return LoadedConfig(data, sources)


def _load_file(path: Path, stack: tuple[Path, ...]) -> tuple[dict, dict[str, str]]:
    path = path.resolve() if path.is_absolute() else Path.cwd() / path
    shown = _display(path)
    if path in stack:
        raise ConfigError(f"{shown}: _base_ cycle: {' -> '.join(_display(p) for p in (*stack, path))}")
    if not path.is_file():
        where = f" (a _base_ of {_display(stack[-1])})" if stack else ""
        raise ConfigError(f"{shown}: config file not found{where}")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except _DuplicateKey as exc:
        raise ConfigError(f"{shown}: line {exc.line}: duplicate key {exc.key!r} (first at line {exc.first})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{shown}:{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{shown}: a config file must hold a mapping, got {type(raw).__name__}")

    bases = raw.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{shown}: _base_ must be a path or a list of paths")

    data: dict = {}
    sources: dict[str, str] = {}
    for base in bases:
        base_data, base_sources = _load_file(path.parent / base, (*stack, path))
        _merge(data, sources, base_data, base_sources, prefix="")
    own_sources: dict[str, str] = {}
    _record_sources(raw, shown, "", own_sources)
    _merge(data, sources, raw, own_sources, prefix="")
    return data, sources


class _DuplicateKey(Exception):
    """Raised by _UniqueKeyLoader; _load_file names the file."""

    def __init__(self, key: Any, line: int, first: int):
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, at any depth (the YAML spec
    requires unique keys; PyYAML would keep the last value and drop the first silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may repeat the keys it merges
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, collections.abc.Hashable):
                continue  # SafeLoader refuses it below
            if key in first_line:
                raise _DuplicateKey(key, line, first_line[key])
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _record_sources(node: Any, origin: str, prefix: str, out: dict[str, str]) -> None:
    if prefix:
        out[prefix] = origin
    if isinstance(node, dict):
        for key, value in node.items():
            _record_sources(value, origin, f"{prefix}.{key}" if prefix else str(key), out)


def _merge(dst: dict, dst_sources: dict, src: dict, src_sources: dict, prefix: str) -> None:
    for key, value in src.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        old = dst.get(key)
        replace_whole = (
            not isinstance(value, dict)
            or not isinstance(old, dict)
            or ("type" in value and value.get("type") != old.get("type"))
        )
        if replace_whole:
            for stale in [k for k in dst_sources if k == dotted or k.startswith(dotted + ".")]:
                del dst_sources[stale]
            dst[key] = copy.deepcopy(value)
            dst_sources.update({k: v for k, v in src_sources.items() if k == dotted or k.startswith(dotted + ".")})
        else:
            assert isinstance(old, dict)  # not replace_whole: both are mappings
            dst_sources[dotted] = src_sources.get(dotted, dst_sources.get(dotted, ""))
            _merge(old, dst_sources, value, src_sources, dotted)


def _apply_override(data: dict, sources: dict[str, str], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{COMMAND_LINE}: override {item!r} is not of the form dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, ".".join(parts[: i + 1]))
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"{COMMAND_LINE}: {'.'.join(parts[: i + 1])} is a value, cannot set {key}")
    last = parts[-1]
    if last == "type" and isinstance(node, dict) and len(parts) > 1 and node.get("type", value) != value:
        # another component: its mapping is replaced, as a _base_ child that changes the type replaces it
        node.clear()
        node["type"] = value
        key, value = ".".join(parts[:-1]), node
    elif isinstance(node, list):
        _list_item(node, last, key)
        node[int(last)] = value
    else:
        node[last] = value
    for stale in [k for k in sources if k.startswith(key + ".")]:
        del sources[stale]
    _record_sources(value, COMMAND_LINE, key, sources)


def _list_item(node: list, index: str, key: str) -> Any:
    if not index.isdigit() or int(index) >= len(node):
        raise ConfigError(f"{COMMAND_LINE}: {key}: list index out of range (list has {len(node)} items)")
    return node[int(index)]


# ------------------------------------------------------------------------------- validation
def validate(cfg: LoadedConfig, schema: type) -> dict[str, Any]:
    """Check `cfg` against the dataclass `schema`; return the resolved config (defaults filled)."""
    return _check_dataclass(cfg.data, schema, "", cfg)


def resolve_saved(saved: dict, schema: type) -> dict:
    """A config saved by earlier code (a run's, an output manifest's) resolved by this code's
    `schema`: an option added since reads its default (the saved work ran without it) instead of
    counting as a change. A saved config the schema refuses (a key the code no longer knows) is
    returned as saved, so comparing it with a resolved config shows the retired key as a change."""
    try:
        return validate(LoadedConfig(copy.deepcopy(saved), {}), schema)
    except ConfigError:
        return saved


def _error(cfg: LoadedConfig, key: str, message: str) -> ConfigError:
    return ConfigError(f"{cfg.source(key)}: {key}: {message}")


def _unknown(cfg: LoadedConfig, key: str, name: str, allowed: typing.Iterable[str], owner: str) -> ConfigError:
    hint = difflib.get_close_matches(name, list(allowed), n=1)
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    return _error(cfg, key, f"unknown key for {owner}{extra}; allowed: {', '.join(sorted(allowed))}")


def _check_dataclass(value: Any, schema: type, prefix: str, cfg: LoadedConfig) -> dict:
    where = prefix.rstrip(".") or "the config"
    if not isinstance(value, dict):
        raise _error(cfg, where, f"expected a mapping, got {_describe(value)}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema, include_extras=True)
    for name in value:
        if name not in fields:
            raise _unknown(cfg, f"{prefix}{name}", str(name), fields, f"section '{where}'")
    out = {}
    for name, field in fields.items():
        key = f"{prefix}{name}"
        if name in value:
            out[name] = _check_value(value[name], hints[name], key, cfg, field.metadata.get("inject", ()))
        elif field.default is not dataclasses.MISSING:
            out[name] = copy.deepcopy(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()  # a missing section resolves to its defaults, as a mapping
            is_instance = dataclasses.is_dataclass(default) and not isinstance(default, type)
            out[name] = dataclasses.asdict(default) if is_instance else default
        else:
            raise _error(cfg, where, f"missing required key '{name}'")
    return out


def _check_component(value: Any, key: str, cfg: LoadedConfig, injected: typing.Sequence[str] = ()) -> dict:
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise _error(cfg, key, f"expected a mapping with a 'type' key naming a component, got {_describe(value)}")
    found = find_component(value["type"])
    if found is None:
        raise _error(cfg, f"{key}.type", f"unknown component type {value['type']!r}")
    registry, cls = found
    params = {
        name: p
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    owner = f"{registry.name} {value['type']}"
    out = {"type": value["type"]}
    for name in value:
        if name != "type" and (name not in params or name in injected):
            raise _unknown(cfg, f"{key}.{name}", name, [p for p in params if p not in injected], owner)
    for name, param in params.items():
        if name in injected:
            continue
        if name in value:
            out[name] = _check_value(value[name], hints.get(name, Any), f"{key}.{name}", cfg)
        elif param.default is not inspect.Parameter.empty:
            out[name] = copy.deepcopy(param.default)
        else:
            raise _error(cfg, key, f"missing required key '{name}' for {owner}")
    check_config = getattr(cls, "check_config", None)
    if check_config is not None:
        try:
            check_config(out)
        except InvalidValue as exc:
            raise _error(cfg, f"{key}.{exc.key}", exc.problem) from None
    return out


def _check_value(value: Any, ann: Any, key: str, cfg: LoadedConfig, injected: typing.Sequence[str] = ()) -> Any:
    if isinstance(ann, type) and dataclasses.is_dataclass(ann):  # a dataclass schema, not an instance
        return _check_dataclass(value, ann, key + ".", cfg)
    if _is_component(ann):
        return _check_component(value, key, cfg, injected)
    injected = (*injected, *_injected(ann))
    ann = _strip_inject(ann)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is list and args and (_is_component(args[0]) or dataclasses.is_dataclass(args[0])):
        if not isinstance(value, list):
            raise _error(cfg, key, f"expected a list of {_type_name(args[0])}, got {_describe(value)}")
        return [_check_value(v, args[0], f"{key}.{i}", cfg, injected) for i, v in enumerate(value)]
    if origin is dict and len(args) == 2 and _is_component(args[1]):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _error(cfg, key, f"expected a mapping of names to components, got {_describe(value)}")
        return {k: _check_component(v, f"{key}.{k}", cfg, injected) for k, v in value.items()}
    if origin is dict and len(args) == 2 and _ranges(args[1]):
        if not isinstance(value, dict) or not all(_matches(k, args[0]) for k in value):
            raise _error(cfg, key, f"expected a mapping of {_type_name(args[0])} to {_type_name(args[1])}, "
                                   f"got {_describe(value)}")
        return {k: _check_value(v, args[1], f"{key}.{k}", cfg) for k, v in value.items()}
    if isinstance(value, str) and _SCIENTIFIC.match(value) and _matches(1.0, ann) and not _matches(value, ann):
        value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    if not _matches(value, ann):
        raise _error(cfg, key, f"expected {_type_name(ann)}, got {_describe(value)}")
    ranges = _ranges(ann)
    if ranges:
        _check_ranges(value, ranges, key, cfg)
    return _normalise(value, _strip_annotated(ann))


_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


@dataclasses.dataclass(frozen=True)
class Inject:
    """Marks constructor arguments that the owner passes at build time, not YAML: in
    `heads: Annotated[dict[str, Component], Inject("in_channels")]` each head's `in_channels`
    comes from the backbone, so a config may not set it and need not."""

    names: tuple[str, ...]

    def __init__(self, *names: str):
        object.__setattr__(self, "names", names)


def _injected(ann: Any) -> tuple[str, ...]:
    if typing.get_origin(ann) is not Annotated:
        return ()
    return tuple(n for meta in typing.get_args(ann)[1:] if isinstance(meta, Inject) for n in meta.names)


def _strip_inject(ann: Any) -> Any:
    """`ann` without its Inject marks (a component's own mark and Ranges stay)."""
    if typing.get_origin(ann) is not Annotated or not _injected(ann):
        return ann
    rest = [m for m in typing.get_args(ann)[1:] if not isinstance(m, Inject)]
    base = typing.get_args(ann)[0]
    return Annotated[(base, *rest)] if rest else base


def _ranges(ann: Any) -> list[Range]:
    """The Range objects in a top-level Annotated (nested Annotated is flattened by typing)."""
    if typing.get_origin(ann) is not Annotated:
        return []
    return [meta for meta in typing.get_args(ann)[1:] if isinstance(meta, Range)]


def _strip_annotated(ann: Any) -> Any:
    return typing.get_args(ann)[0] if typing.get_origin(ann) is Annotated else ann


def _check_ranges(value: Any, ranges: list[Range], key: str, cfg: LoadedConfig) -> None:
    if value is None:
        return
    wanted = " and ".join(d for d in (r.describe() for r in ranges) if d)
    wanted = f" {wanted}" if wanted else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error(cfg, key, f"expected a number{wanted}, got {_describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _error(cfg, key, f"expected a finite number{wanted}, got {value!r}")
    for r in ranges:
        if not r.contains(value):
            raise _error(cfg, key, f"must be {r.describe()}, got {value!r}")


def _is_component(ann: Any) -> bool:
    return typing.get_origin(ann) is Annotated and any(
        isinstance(meta, str) and meta == _COMPONENT_MARK for meta in typing.get_args(ann)[1:]
    )


def _matches(value: Any, ann: Any) -> bool:
    if ann is Any or ann is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Annotated:
        return _matches(value, args[0])
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if ann is None or ann is type(None):
        return value is None
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    if ann in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(_matches(v, args[0]) for v in value)
    if ann is dict or origin is dict:
        return isinstance(value, dict) and (
            not args or all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
        )
    return isinstance(value, ann) if isinstance(ann, type) else True


def _normalise(value: Any, ann: Any) -> Any:
    """Ints where floats are expected become floats; tuples become lists (YAML-friendly)."""
    if isinstance(value, int) and not isinstance(value, bool) and _wants_float(ann):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _wants_float(ann: Any) -> bool:
    """`float`, or a union such as `float | None` that has float but not int."""
    if ann is float:
        return True
    if typing.get_origin(ann) in (Union, types.UnionType):
        args = typing.get_args(ann)
        return float in args and int not in args
    return False


def _type_name(ann: Any) -> str:
    ann = _strip_annotated(ann)
    if isinstance(ann, type):
        return ann.__name__
    return str(ann).replace("typing.", "")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


# ---------------------------------------------------------------------------------- writing
def dump(resolved: dict[str, Any], path: str | Path) -> None:
    """Write the resolved config atomically, so the run can be repeated from it."""
    atomic.write_text(path, yaml.safe_dump(resolved, sort_keys=False, default_flow_style=None))
