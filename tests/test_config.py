"""Config loading: _base_ inheritance, overrides, validation errors that name key and file."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from voxseg import config as cfglib
from voxseg.config import Component
from voxseg.errors import ConfigError
from voxseg.registry import Registry


TOYS = Registry("toy")


@TOYS.register()
class ToyBlock:
    def __init__(self, width: int, scale: float = 1.0, name: str = "a", tags: list[str] = []):
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
    write(tmp_path / "base" / "a.yaml", {"block": {"type": "ToyBlock", "width": 4, "scale": 2.0}, "section": {"steps": 1}})
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
    write(tmp_path / "a.yaml", {"block": {"type": "ToyBlock", "width": 1}, "blocks": [{"type": "OtherBlock", "deep": 1}]})
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
