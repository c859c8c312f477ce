"""A model config's parts must fit together: checked when the config is validated, declared once
(Segmentor.check_config; each head class's `predicts`)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import ROOT, SEGMENTOR, random_batch
from voxseg.config import InvalidValue
from voxseg.engine import finetune
from voxseg.registry import HEADS, MODELS


@pytest.mark.parametrize("name", ["", "_asis", "_probabilistic", "_mpnet", "_dpgnet"])
def test_each_head_predicts_the_keys_it_declares(name, rng):
    """The validation-time check of two heads predicting one key trusts `predicts`: it must be
    exactly what `predict` returns."""
    cfg = finetune.resolve(str(ROOT / "configs" / "finetune" / f"synthetic_minkunet14a{name}.yaml"),
                           ["model.backbone.voxel_size=0.5"])["model"]
    (head_cfg,) = cfg["heads"].values()
    model = MODELS.build(cfg).eval()
    with torch.no_grad():
        pred = model(random_batch(rng, sizes=(400, 300), channels=1))["pred"]
    assert sorted(pred) == sorted(HEADS.get(head_cfg["type"]).predicts)


def test_segmentor_built_without_validation_checks_the_same_rules():
    with pytest.raises(InvalidValue, match=r"^losses\.ce\.head: 'semantc' names no head; heads: semantic$"):
        MODELS.build({**SEGMENTOR, "losses": {"ce": {"type": "CrossEntropyLoss", "head": "semantc"}}})
    with pytest.raises(InvalidValue, match=r"^losses\.ce\.head: 'semantic' names no head; heads: seg$"):
        MODELS.build({**SEGMENTOR, "heads": {"seg": SEGMENTOR["heads"]["semantic"]},  # the loss's default head
                      "losses": {"ce": {"type": "CrossEntropyLoss"}}})
    with pytest.raises(InvalidValue, match=r"^heads\.b: predicts 'segment' as heads\.a does; "):
        MODELS.build({**SEGMENTOR, "heads": {"a": SEGMENTOR["heads"]["semantic"], "b": SEGMENTOR["heads"]["semantic"]},
                      "losses": {}})
