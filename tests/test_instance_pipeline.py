"""ASIS end to end on the tiny synthetic dataset: fine-tune, panoptic .label files with score side
files (tools/infer.py), and tools/evaluate.py --task panoptic|instance reproducing the run's own
final validation."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ASIS_CONFIG, ROOT, asis_overrides, check_instance_predictions_reproduce_the_run
from voxseg.engine import finetune
from voxseg.errors import ConfigError


def test_asis_finetune_infer_evaluate(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "asis"
    finetune.run(finetune.resolve(str(ASIS_CONFIG), asis_overrides(tiny_dataset, out)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 8 and {"pq", "ap50", "mwcov", "miou", "best_pq"} <= set(metrics)
    # eight steps already predict things; the files, scored by the tool, give the numbers the
    # run's validation computed in memory
    check_instance_predictions_reproduce_the_run(
        out, tiny_dataset, tmp_path, {"panoptic": ("pq", "sq", "rq", "pq_things", "pq_stuff", "pq_dagger", "miou"),
                                      "instance": ("ap", "ap50", "ap25", "mcov", "mwcov", "mprec", "mrec")})


def test_thing_classes_must_match_the_label_config(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = finetune.resolve(str(ASIS_CONFIG), asis_overrides(tiny_dataset, tmp_path / "x",
                                                            **{"model.heads.asis.thing_classes": "[0, 2]"}))
    with pytest.raises(ConfigError, match=r"thing_classes is \[0, 2\] but .*synthetic.yaml makes train ids \[0, 1\]"):
        finetune.run(cfg)
    assert not (tmp_path / "x").exists()
