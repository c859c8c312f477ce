"""Config loading: _base_ inheritance, overrides, validation errors that name key and file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import pytest
import yaml

from voxseg import config as cfglib
from voxseg.config import Component, Range
from voxseg.errors import ConfigError
from voxseg.registry import Registry

TOYS = Registry("toy")


@TOYS.register()
class ToyBlock:
    # literal defaults, as in registered components: the config schema and the resolved config
    # record them as written (a None stand-in would change what is recorded)
    def __init__(self, width: int, scale: float = 1.0, name: str = "a", tags: list[str] = []):  # noqa: B006
        pass


@TOYS.register()
class OtherBlock:
    def __init__(self, depth: int = 3):
        pass


@dataclass
class Section:
    steps: int = 10
    rate: float = 0.5
    flag: bool = False


@dataclass
class Schema:
    block: Component
    section: Section = field(default_factory=Section)
    blocks: list[Component] = field(default_factory=list)
    out: str = "runs/x"


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_base_merge_and_override_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "a.yaml",
          {"block": {"type": "ToyBlock", "width": 4, "scale": 2.0}, "section": {"steps": 1}})
    write(tmp_path / "base" / "b.yaml", {"section": {"steps": 2, "rate": 0.1}})
    write(tmp_path / "top.yaml", {"_base_": ["base/a.yaml", "base/b.yaml"], "block": {"width": 8}})
    loaded = cfglib.load("top.yaml", ["section.rate=0.25", "block.tags=[x, y]"])
    resolved = cfglib.validate(loaded, Schema)
    assert resolved["block"] == {"type": "ToyBlock", "width": 8, "scale": 2.0, "name": "a", "tags": ["x", "y"]}
    assert resolved["section"] == {"steps": 2, "rate": 0.25, "flag": False}  # b after a, then the override
    assert resolved["out"] == "runs/x"  # default filled in
    assert loaded.source("block.width") == "top.yaml"
    assert loaded.source("block.scale") == "base/a.yaml"
    assert loaded.source("section.rate") == "command line"


def test_changing_a_component_type_drops_the_old_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {"block": {"type": "ToyBlock", "width": 4}})
    write(tmp_path / "b.yaml", {"_base_": "a.yaml", "block": {"type": "OtherBlock"}})
    assert cfglib.validate(cfglib.load("b.yaml"), Schema)["block"] == {"type": "OtherBlock", "depth": 3}


def test_unknown_key_names_key_and_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {"block": {"type": "ToyBlock", "width": 4}})
    write(tmp_path / "b.yaml", {"_base_": "a.yaml", "section": {"stepz": 3}})
    with pytest.raises(ConfigError, match=r"^b\.yaml: section\.stepz: unknown key .*did you mean 'steps'"):
        cfglib.validate(cfglib.load("b.yaml"), Schema)
    with pytest.raises(ConfigError, match=r"^a\.yaml: block\.widht"):
        write(tmp_path / "a.yaml", {"block": {"type": "ToyBlock", "widht": 4}})
        cfglib.validate(cfglib.load("b.yaml"), Schema)


def test_wrong_type_names_key_and_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {"block": {"type": "ToyBlock", "width": "wide"}})
    with pytest.raises(ConfigError, match=r"^a\.yaml: block\.width: expected int, got str 'wide'"):
        cfglib.validate(cfglib.load("a.yaml"), Schema)
    write(tmp_path / "a.yaml", {"block": {"type": "ToyBlock", "width": 2}})
    with pytest.raises(ConfigError, match=r"^command line: section\.flag: expected bool"):
        cfglib.validate(cfglib.load("a.yaml", ["section.flag=3"]), Schema)
    with pytest.raises(ConfigError, match=r"^command line: section\.steps: expected int, got float"):
        cfglib.validate(cfglib.load("a.yaml", ["section.steps=2.5"]), Schema)


def test_ints_are_accepted_as_floats_and_normalised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {"block": {"type": "ToyBlock", "width": 2, "scale": 3}})
    resolved = cfglib.validate(cfglib.load("a.yaml"), Schema)
    assert resolved["block"]["scale"] == 3.0 and isinstance(resolved["block"]["scale"], float)


def test_component_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {"block": {"type": "ToyBlok", "width": 2}})
    with pytest.raises(ConfigError, match=r"a\.yaml: block\.type: unknown component type 'ToyBlok'"):
        cfglib.validate(cfglib.load("a.yaml"), Schema)
    write(tmp_path / "a.yaml", {"block": {"type": "ToyBlock"}})
    with pytest.raises(ConfigError, match=r"a\.yaml: block: missing required key 'width'"):
        cfglib.validate(cfglib.load("a.yaml"), Schema)
    write(tmp_path / "a.yaml",
          {"block": {"type": "ToyBlock", "width": 1}, "blocks": [{"type": "OtherBlock", "deep": 1}]})
    with pytest.raises(ConfigError, match=r"a\.yaml: blocks\.0\.deep: unknown key"):
        cfglib.validate(cfglib.load("a.yaml"), Schema)


def test_file_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        cfglib.load("missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+: invalid YAML"):
        cfglib.load("bad.yaml")
    write(tmp_path / "x.yaml", {"_base_": "y.yaml"})
    write(tmp_path / "y.yaml", {"_base_": "x.yaml"})
    with pytest.raises(ConfigError, match="_base_ cycle"):
        cfglib.load("x.yaml")
    write(tmp_path / "z.yaml", {"_base_": "nope.yaml"})
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found \(a _base_ of z\.yaml\)"):
        cfglib.load("z.yaml")
    write(tmp_path / "ok.yaml", {"out": "x"})
    with pytest.raises(ConfigError, match=r"^command line: override 'novalue' is not of the form"):
        cfglib.load("ok.yaml", ["novalue"])


def test_a_missing_section_resolves_to_its_defaults_as_a_mapping(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {"block": {"type": "ToyBlock", "width": 2}})
    resolved = cfglib.validate(cfglib.load("a.yaml"), Schema)
    assert resolved["section"] == {"steps": 10, "rate": 0.5, "flag": False} and resolved["blocks"] == []
    assert type(resolved["section"]) is dict


def test_resolved_config_round_trips(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {"block": {"type": "ToyBlock", "width": 2}, "section": {"rate": 1}})
    resolved = cfglib.validate(cfglib.load("a.yaml"), Schema)
    cfglib.dump(resolved, tmp_path / "run" / "config.yaml")
    again = cfglib.validate(cfglib.load("run/config.yaml"), Schema)
    assert again == resolved


def test_list_index_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {"block": {"type": "ToyBlock", "width": 2}, "blocks": [{"type": "OtherBlock"}]})
    resolved = cfglib.validate(cfglib.load("a.yaml", ["blocks.0.depth=7"]), Schema)
    assert resolved["blocks"] == [{"type": "OtherBlock", "depth": 7}]
    with pytest.raises(ConfigError, match="list index out of range"):
        cfglib.load("a.yaml", ["blocks.3.depth=7"])


# ------------------------------------------------------------------------------ value ranges
@TOYS.register()
class RangedToyBlock:
    def __init__(self, voxel_size: Annotated[float, Range(gt=0)] = 0.1, channels: Annotated[int, Range(ge=1)] = 1,
                 dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,
                 momentum: Annotated[float | None, Range(ge=0, le=1)] = None):
        pass


@dataclass
class RangedTrain:
    batch_size: Annotated[int, Range(ge=1)] = 2
    lr: Annotated[float, Range(gt=0)] = 1e-3
    keep: Annotated[float, Range(gt=0, le=1)] = 0.5
    clip: Annotated[float | None, Range(gt=0)] = None


@dataclass
class RangedSchema:
    model: Component
    train: RangedTrain = field(default_factory=RangedTrain)


RANGED_OK = {"model": {"type": "RangedToyBlock"}}

RANGE_FAILURES = [
    ("train", "batch_size", 0, "must be >= 1, got 0"),
    ("train", "batch_size", -1, "must be >= 1, got -1"),
    ("train", "batch_size", True, "expected int, got bool True"),
    ("train", "lr", 0, "must be > 0, got 0"),
    ("train", "lr", -1.0, "must be > 0, got -1.0"),
    ("train", "lr", float("nan"), "expected a finite number > 0, got nan"),
    ("train", "lr", float("inf"), "expected a finite number > 0, got inf"),
    ("train", "lr", float("-inf"), "expected a finite number > 0, got -inf"),
    ("train", "lr", False, "expected float, got bool False"),
    ("train", "keep", 1.5, "must be in (0, 1], got 1.5"),
    ("train", "keep", 0.0, "must be in (0, 1], got 0.0"),
    ("train", "clip", 0, "must be > 0, got 0"),
    ("train", "clip", float("nan"), "expected a finite number > 0, got nan"),
    ("model", "voxel_size", 0, "must be > 0, got 0"),
    ("model", "voxel_size", -0.05, "must be > 0, got -0.05"),
    ("model", "voxel_size", float("nan"), "expected a finite number > 0, got nan"),
    ("model", "voxel_size", True, "expected float, got bool True"),
    ("model", "channels", 0, "must be >= 1, got 0"),
    ("model", "dropout", 1.0, "must be in [0, 1), got 1.0"),
    ("model", "dropout", -1, "must be in [0, 1), got -1"),
    ("model", "momentum", float("inf"), "expected a finite number in [0, 1], got inf"),
    ("model", "momentum", 2, "must be in [0, 1], got 2"),
]


@pytest.mark.parametrize(("section", "name", "value", "message"), RANGE_FAILURES)
def test_range_refuses_bad_values_naming_key_and_file(tmp_path, monkeypatch, section, name, value, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", RANGED_OK)
    data = {"_base_": "a.yaml", section: {name: value}}
    if section == "model":
        data[section]["type"] = "RangedToyBlock"
    write(tmp_path / "b.yaml", data)
    with pytest.raises(ConfigError) as info:
        cfglib.validate(cfglib.load("b.yaml"), RangedSchema)
    assert str(info.value) == f"b.yaml: {section}.{name}: {message}"


@pytest.mark.parametrize(("override", "message"), [
    ("train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
    ("train.lr=.nan", "train.lr: expected a finite number > 0, got nan"),
    ("train.lr=.inf", "train.lr: expected a finite number > 0, got inf"),
    ("train.lr=-1", "train.lr: must be > 0, got -1"),
    ("train.lr=true", "train.lr: expected float, got bool True"),
    ("train.keep=1.5", "train.keep: must be in (0, 1], got 1.5"),
    ("model.voxel_size=0", "model.voxel_size: must be > 0, got 0"),
    ("model.voxel_size=-.inf", "model.voxel_size: expected a finite number > 0, got -inf"),
    ("model.channels=false", "model.channels: expected int, got bool False"),
])
def test_range_refuses_bad_overrides_naming_the_command_line(tmp_path, monkeypatch, override, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", RANGED_OK)
    with pytest.raises(ConfigError) as info:
        cfglib.validate(cfglib.load("a.yaml", [override]), RangedSchema)
    assert str(info.value) == f"command line: {message}"


def test_range_reads_yaml_nan_and_inf_from_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text("model: {type: RangedToyBlock}\ntrain:\n  lr: .NaN\n")
    with pytest.raises(ConfigError) as info:
        cfglib.validate(cfglib.load("a.yaml"), RangedSchema)
    assert str(info.value) == "a.yaml: train.lr: expected a finite number > 0, got nan"
    (tmp_path / "a.yaml").write_text("model: {type: RangedToyBlock, voxel_size: .inf}\n")
    with pytest.raises(ConfigError) as info:
        cfglib.validate(cfglib.load("a.yaml"), RangedSchema)
    assert str(info.value) == "a.yaml: model.voxel_size: expected a finite number > 0, got inf"


def test_range_accepts_valid_values_and_normalises_ints_to_floats(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {
        "model": {"type": "RangedToyBlock", "voxel_size": 1, "channels": 1, "dropout": 0, "momentum": 1},
        "train": {"batch_size": 1, "lr": 2, "keep": 1, "clip": 5},
    })
    resolved = cfglib.validate(cfglib.load("a.yaml"), RangedSchema)
    assert resolved["model"] == {"type": "RangedToyBlock", "voxel_size": 1.0, "channels": 1, "dropout": 0.0,
                                 "momentum": 1.0}
    assert resolved["train"] == {"batch_size": 1, "lr": 2.0, "keep": 1.0, "clip": 5.0}
    assert type(resolved["train"]["batch_size"]) is int and type(resolved["model"]["channels"]) is int
    for section, name in [("model", "voxel_size"), ("model", "dropout"), ("model", "momentum"),
                          ("train", "lr"), ("train", "keep"), ("train", "clip")]:
        assert type(resolved[section][name]) is float, (section, name)
    resolved = cfglib.validate(cfglib.load("a.yaml", ["train.lr=1.0e-4", "model.voxel_size=0.05"]), RangedSchema)
    assert resolved["train"]["lr"] == 1e-4 and resolved["model"]["voxel_size"] == 0.05


def test_range_lets_none_through_for_optional_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {"model": {"type": "RangedToyBlock", "momentum": None}, "train": {"clip": None}})
    resolved = cfglib.validate(cfglib.load("a.yaml"), RangedSchema)
    assert resolved["model"]["momentum"] is None and resolved["train"]["clip"] is None
    resolved = cfglib.validate(cfglib.load("a.yaml", ["train.clip=0.5", "model.momentum=null"]), RangedSchema)
    assert resolved["train"]["clip"] == 0.5 and resolved["model"]["momentum"] is None
    write(tmp_path / "a.yaml", {"model": {"type": "RangedToyBlock"}, "train": {"lr": None}})
    with pytest.raises(ConfigError) as info:  # None is only fine where the type allows it
        cfglib.validate(cfglib.load("a.yaml"), RangedSchema)
    assert str(info.value) == "a.yaml: train.lr: expected float, got NoneType None"


def test_range_declaration():
    assert Range(ge=1).describe() == ">= 1"
    assert Range(gt=0).describe() == "> 0"
    assert Range(le=5).describe() == "<= 5"
    assert Range(lt=1).describe() == "< 1"
    assert Range(gt=0, le=1).describe() == "in (0, 1]"
    assert Range(ge=0, lt=1).describe() == "in [0, 1)"
    assert Range(ge=0, le=1).contains(1) and not Range(ge=0, lt=1).contains(1)
    assert Annotated[float, Range(gt=0)] == Annotated[float, Range(gt=0)]  # frozen: hashable, usable as metadata
    assert "Range" in cfglib.__all__
    for bad in ({"ge": 0, "gt": 0}, {"le": 1, "lt": 1}, {"ge": 2, "le": 1}, {"gt": 1, "lt": 1},
                {"gt": float("nan")}, {"le": float("inf")}):
        with pytest.raises(ValueError):
            Range(**bad)


# ------------------------------------------------------- named components, injected arguments
@TOYS.register()
class ToyHeadHolder:
    def __init__(self, heads: Annotated[dict[str, Component], cfglib.Inject("in_channels")], rate: float = 1.0):
        pass


@TOYS.register()
class ToyInjectedHead:
    def __init__(self, in_channels: int, classes: Annotated[int, Range(ge=1)] = 2):
        pass


@dataclass
class ToyGroup:
    params: str
    lr: Annotated[float | None, Range(gt=0)] = None


@dataclass
class HolderSchema:
    holder: Component
    groups: list[ToyGroup] = field(default_factory=list)


def test_dict_of_named_components_with_injected_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "h.yaml",
                 {"holder": {"type": "ToyHeadHolder", "heads": {"sem": {"type": "ToyInjectedHead"}}},
                  "groups": [{"params": "a.*", "lr": "1e-3"}]})
    resolved = cfglib.validate(cfglib.load(path), HolderSchema)
    assert resolved["holder"]["heads"] == {"sem": {"type": "ToyInjectedHead", "classes": 2}}
    assert resolved["groups"] == [{"params": "a.*", "lr": 0.001}]  # YAML 1.1 reads 1e-3 as a string
    injected = write(tmp_path / "i.yaml", {"holder": {"type": "ToyHeadHolder", "heads": {
        "sem": {"type": "ToyInjectedHead", "in_channels": 3}}}})
    with pytest.raises(ConfigError, match=r"^i.yaml: holder.heads.sem.in_channels: unknown key .*allowed: classes$"):
        cfglib.validate(cfglib.load(injected), HolderSchema)
    with pytest.raises(ConfigError, match=r"^command line: holder.heads.sem.classes: must be >= 1, got 0$"):
        cfglib.validate(cfglib.load(path, ["holder.heads.sem.classes=0"]), HolderSchema)
    with pytest.raises(ConfigError, match=r"^command line: groups.0.lr: must be > 0, got -1.0$"):
        cfglib.validate(cfglib.load(path, ["groups.0.lr=-1e0"]), HolderSchema)
    with pytest.raises(ConfigError, match=r"^command line: groups.0.rate: unknown key for section 'groups.0'"):
        cfglib.validate(cfglib.load(path, ["groups.0.rate=1"]), HolderSchema)


# ------------------------------------------------------------------- ranges on mapping values
@TOYS.register()
class WeightedToyBlock:
    def __init__(self, weights: dict[str, Annotated[float, Range(ge=0)]] = {}):  # noqa: B006  (a literal default)
        pass


@pytest.mark.parametrize(("weights", "message"), [
    ("{a: -1}", "weights.a: must be >= 0, got -1"),
    ("{a: 1, b: -0.5}", "weights.b: must be >= 0, got -0.5"),
    ("{a: .nan}", "weights.a: expected a finite number >= 0, got nan"),
    ("{a: fast}", "weights.a: expected float, got str 'fast'"),
    ("[1, 2]", "weights: expected a mapping of str to float, got list"),
])
def test_range_checks_each_value_of_a_mapping(tmp_path, monkeypatch, weights, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {"block": {"type": "WeightedToyBlock"}})
    with pytest.raises(ConfigError) as info:
        cfglib.validate(cfglib.load("a.yaml", [f"block.weights={weights}"]), Schema)
    assert str(info.value) == f"command line: block.{message}"
    (tmp_path / "b.yaml").write_text(f"block:\n  type: WeightedToyBlock\n  weights: {weights}\n")
    with pytest.raises(ConfigError) as info:
        cfglib.validate(cfglib.load("b.yaml"), Schema)
    assert str(info.value) == f"b.yaml: block.{message}"


def test_mapping_values_are_normalised_like_single_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {"block": {"type": "WeightedToyBlock", "weights": {"a": 2, "b": "1e-3", "c": 0}}})
    weights = cfglib.validate(cfglib.load("a.yaml"), Schema)["block"]["weights"]
    assert weights == {"a": 2.0, "b": 0.001, "c": 0.0} and all(type(w) is float for w in weights.values())


# ------------------------------------------------------------- rules between a component's keys
@TOYS.register()
class IntervalToyBlock:
    def __init__(self, low: float = 0.0, high: float = 1.0):
        pass

    @staticmethod
    def check_config(cfg: dict) -> None:
        if cfg["low"] > cfg["high"]:
            raise cfglib.InvalidValue("low", f"must be <= high ({cfg['high']!r}), got {cfg['low']!r}")


def test_check_config_errors_name_the_key_and_the_file_that_set_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {"block": {"type": "ToyBlock", "width": 1},
                                "blocks": [{"type": "IntervalToyBlock", "low": 2.0, "high": 3.0}]})
    resolved = cfglib.validate(cfglib.load("a.yaml"), Schema)  # the defaults are filled in before the check
    assert resolved["blocks"] == [{"type": "IntervalToyBlock", "low": 2.0, "high": 3.0}]
    write(tmp_path / "b.yaml", {"_base_": "a.yaml", "blocks": [{"type": "IntervalToyBlock", "low": 2.0}]})
    with pytest.raises(ConfigError) as info:
        cfglib.validate(cfglib.load("b.yaml"), Schema)
    assert str(info.value) == "b.yaml: blocks.0.low: must be <= high (1.0), got 2.0"
    with pytest.raises(ConfigError) as info:
        cfglib.validate(cfglib.load("a.yaml", ["blocks.0.low=4"]), Schema)
    assert str(info.value) == "command line: blocks.0.low: must be <= high (3.0), got 4.0"  # read as a float


# ------------------------------------------------------------------------------ duplicate keys
@pytest.mark.parametrize(("text", "line", "key", "first"), [
    ("train:\n  lr: 0.0123\nblock: {type: ToyBlock, width: 1}\ntrain:\n  steps: 3\n", 4, "train", 1),
    ("block:\n  type: ToyBlock\n  width: 1\n  scale: 2.0\n  width: 2\n", 5, "width", 3),
    ("blocks:\n  - {type: OtherBlock, depth: 1, depth: 2}\n", 2, "depth", 2),
    ("section: {steps: 1}\n'section': {rate: 1.0}\n", 2, "section", 1),
])
def test_duplicate_keys_are_refused_with_both_lines(tmp_path, monkeypatch, text, line, key, first):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dup.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        cfglib.load("dup.yaml")
    assert str(info.value) == f"dup.yaml: line {line}: duplicate key {key!r} (first at line {first})"


def test_duplicate_key_in_a_base_file_names_the_base(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text("section:\n  steps: 1\n  rate: 0.1\n  steps: 2\n")
    write(tmp_path / "top.yaml", {"_base_": "base.yaml", "block": {"type": "ToyBlock", "width": 1}})
    with pytest.raises(ConfigError) as info:
        cfglib.load("top.yaml")
    assert str(info.value) == "base.yaml: line 4: duplicate key 'steps' (first at line 2)"


def test_yaml_merge_keys_may_repeat_what_they_merge(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text("x-block: &b {type: ToyBlock, width: 1, scale: 2.0}\n"
                                     "block:\n  <<: *b\n  width: 4\n")
    assert cfglib.load("a.yaml").data["block"] == {"type": "ToyBlock", "width": 4, "scale": 2.0}


# ------------------------------------------------------------------- type changed by override
def test_overriding_a_type_replaces_the_mapping(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", {"block": {"type": "ToyBlock", "width": 4, "scale": 2.0},
                                "blocks": [{"type": "ToyBlock", "width": 1}]})
    loaded = cfglib.load("a.yaml", ["block.type=OtherBlock", "blocks.0.type=OtherBlock", "blocks.0.depth=5"])
    assert loaded.data["block"] == {"type": "OtherBlock"}
    assert loaded.data["blocks"] == [{"type": "OtherBlock", "depth": 5}]
    assert loaded.source("block") == loaded.source("block.type") == "command line"
    assert not any(key.startswith("block.") and key != "block.type" for key in loaded.sources)
    assert cfglib.validate(loaded, Schema)["block"] == {"type": "OtherBlock", "depth": 3}
    with pytest.raises(ConfigError, match=r"^command line: block\.width: unknown key for toy OtherBlock"):
        cfglib.validate(cfglib.load("a.yaml", ["block.type=OtherBlock", "block.width=2"]), Schema)
    same = cfglib.load("a.yaml", ["block.type=ToyBlock"])  # the same type: the arguments stay
    assert same.data["block"] == {"type": "ToyBlock", "width": 4, "scale": 2.0}
    assert same.source("block.width") == "a.yaml"
