"""The component contracts (voxseg.contracts): what each requires, that every shipped component
meets its own, and that a component missing a member fails when built, naming the member."""

from __future__ import annotations

import pytest
import torch.nn as nn

import voxseg.data.builtin  # noqa: F401  (registers datasets and transforms)
import voxseg.evaluation  # noqa: F401  (registers evaluators)
import voxseg.models  # noqa: F401  (registers backbones, heads, losses, models)
from tests.helpers import ROOT, SEGMENTOR, SYNTHETIC_LABELS
from voxseg import config as cfglib, contracts
from voxseg.data.labels import LabelConfig
from voxseg.engine import finetune, pretrain
from voxseg.errors import ConfigError
from voxseg.registry import EVALUATORS, HEADS, HOOKS, LOSSES, MODELS, Registry


def test_members_lists_annotations_methods_and_properties_inherited_ones_included():
    assert contracts.members(contracts.Head) == ["forward", "num_classes", "predict", "predicts", "thing_classes"]
    assert contracts.members(contracts.PointDataset) == ["__getitem__", "__len__", "check", "epoch", "in_channels",
                                                         "name", "seed"]
    assert contracts.members(contracts.LabelledDataset) == sorted(contracts.members(contracts.PointDataset)
                                                                    + ["label_config"])
    assert contracts.members(contracts.SegmentationModel) == ["backbone", "forward", "heads", "num_classes"]
    assert contracts.members(contracts.PretrainingModel) == ["backbone", "forward", "momentum_update"]


class HeadWithoutPredict(nn.Module):
    predicts = ("segment",)
    num_classes = 3

    def __init__(self, in_channels: int):
        super().__init__()

    def forward(self, features, batch):
        return {}


def test_a_registry_refuses_what_breaks_its_contract_naming_every_missing_member():
    registry = Registry("head", contracts.Head)
    registry.register()(HeadWithoutPredict)
    with pytest.raises(ConfigError, match=r"^head HeadWithoutPredict lacks predict, thing_classes of the Head "
                                          r"contract \(voxseg/contracts.py\)$"):
        registry.build({"type": "HeadWithoutPredict"}, in_channels=4)


def test_hooks_must_derive_from_the_hook_base():
    registry = Registry("hook", contracts.Hook)
    registry.register("NotAHook")(type("NotAHook", (), {"after_step": lambda self, trainer, outputs: None}))
    with pytest.raises(ConfigError, match=r"^hook NotAHook is not a Hook \(derive it from voxseg.contracts.Hook\)$"):
        registry.build({"type": "NotAHook"})
    assert HOOKS.contract is contracts.Hook


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs" / "finetune").glob("*.yaml")))
def test_every_shipped_finetune_model_meets_the_segmentation_contract(name):
    """Built through the registries (each part checked against its contract when built), the
    model is a SegmentationModel whose heads are Heads and whose losses are Losses."""
    cfg = cfglib.validate(cfglib.load(str(ROOT / "configs" / "finetune" / name), []), finetune.FinetuneConfig)
    model = MODELS.build(cfg["model"])
    assert isinstance(model, contracts.SegmentationModel)
    assert isinstance(model.backbone, contracts.Backbone)
    assert model.heads and all(isinstance(h, contracts.Head) for h in model.heads.values())
    assert all(isinstance(loss, contracts.Loss) for loss in model.losses.values())


def test_the_pretraining_model_meets_its_contract_and_fine_tuning_refuses_it(tmp_path):
    cfg = pretrain.resolve(str(ROOT / "configs" / "pretrain" / "synthetic_minkunet14a_iscc.yaml"), [])
    model = MODELS.build(cfg["model"])
    assert isinstance(model, contracts.PretrainingModel) and not isinstance(model, contracts.SegmentationModel)
    run = finetune.FinetuneRun({"model": cfg["model"], "train": {"sync_bn": False}, "output_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"^model: ISCC lacks heads, num_classes of the SegmentationModel contract"):
        run.build_model()
    assert not any(tmp_path.iterdir())


def test_every_evaluator_and_loss_class_declares_its_contracts_class_members():
    labels = LabelConfig.load(SYNTHETIC_LABELS)
    for name in EVALUATORS.names():
        assert isinstance(EVALUATORS.build({"type": name}, labels=labels), contracts.Evaluator), name
    segmentor = MODELS.build(SEGMENTOR)
    assert isinstance(segmentor.losses["ce"], contracts.Loss) and segmentor.losses["ce"].target == "segment"
    assert set(HEADS.names()) >= {"SemanticHead", "ASISHead"} and "CrossEntropyLoss" in LOSSES
