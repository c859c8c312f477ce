"""ASIS end to end on the tiny synthetic dataset: fine-tune, panoptic .label files with score side
files (tools/infer.py), and tools/evaluate.py --task panoptic|instance reproducing the run's own
final validation."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, SYNTHETIC_LABELS
from voxseg.data import semantic_kitti as sk
from voxseg.data.labels import LabelConfig
from voxseg.engine import finetune
from voxseg.errors import ConfigError

CONFIG = ROOT / "configs" / "finetune" / "synthetic_minkunet14a_asis.yaml"


def overrides(root, out, **extra):
    base = {
        "data.root": str(root), "data.train.sequences": "[0]", "data.val.sequences": "[1]",
        "model.backbone.voxel_size": 0.4, "train.batch_size": 1, "train.num_workers": 0, "train.max_steps": 8,
        "train.warmup_steps": 2, "train.val_every": 0, "train.checkpoint_every": 4, "train.progress": "false",
        "train.threads": 1, "train.lr": 0.01, "data.train.transforms": "[]",
        "model.heads.asis.min_instance_points": 5, "evaluator.min_region_size": 5, "output_dir": str(out),
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def same(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6)


def test_asis_finetune_infer_evaluate(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "asis"
    finetune.run(finetune.resolve(str(CONFIG), overrides(tiny_dataset, out)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 8 and {"pq", "ap50", "mwcov", "miou", "best_pq"} <= set(metrics)

    pred = tmp_path / "pred"
    done = subprocess.run([sys.executable, "tools/infer.py", "--checkpoint", str(out / "checkpoints" / "last.pt"),
                           "--dataset", str(tiny_dataset), "--sequences", "01", "--out", str(pred)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    labels = LabelConfig.load(SYNTHETIC_LABELS)
    things = {labels.learning_map_inv[c] for c in labels.things}
    folder = pred / "sequences" / "01"
    instances = 0
    for frame in ("000000", "000001", "000002"):
        semantic, instance = sk.read_label(folder / "predictions" / f"{frame}.label")
        scores = sk.read_instance_scores(folder / "scores" / f"{frame}.txt")
        # instance ids only on thing-class points, one class per instance, one score line each
        assert set(np.unique(semantic[instance > 0]).tolist()) <= things
        assert sorted(scores) == sorted(set(np.unique(instance).tolist()) - {0})
        for i in scores:
            assert len(np.unique(semantic[instance == i])) == 1 and 0 < scores[i] <= 1
        instances += len(scores)
    assert instances > 0  # eight steps already predict things: the checks above were not vacuous

    # the files, scored by the tool, give the numbers the run's validation computed in memory
    for task, keys in (("panoptic", ("pq", "sq", "rq", "pq_things", "pq_stuff", "pq_dagger", "miou")),
                       ("instance", ("ap", "ap50", "ap25", "mcov", "mwcov", "mprec", "mrec"))):
        done = subprocess.run([sys.executable, "tools/evaluate.py", "--task", task,
                               "--gt-labels", str(tiny_dataset / "sequences" / "01" / "labels"),
                               "--pred-labels", str(folder / "predictions"), "--label-config", str(SYNTHETIC_LABELS),
                               "--min-region-size", "5", "--out", str(tmp_path / f"{task}.json")],
                              cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        scored = json.loads((tmp_path / f"{task}.json").read_text())
        for key in keys:
            assert same(scored[key], metrics[key]), (task, key, scored[key], metrics[key])


def test_thing_classes_must_match_the_label_config(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = finetune.resolve(str(CONFIG), overrides(tiny_dataset, tmp_path / "x", **{"model.heads.asis.thing_classes": "[0, 2]"}))
    with pytest.raises(ConfigError, match=r"thing_classes is \[0, 2\] but .*synthetic.yaml makes train ids \[0, 1\]"):
        finetune.run(cfg)
    assert not (tmp_path / "x").exists()
