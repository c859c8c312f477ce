"""Segmentor = backbone + named heads + named loss terms, built from config."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import voxseg.models  # noqa: F401  (registers backbones, heads, losses, models)
from tests.helpers import ROOT, SEGMENTOR, finetune_overrides, random_batch
from voxseg.contracts import Hook
from voxseg.engine import checkpoint, finetune
from voxseg.registry import HEADS, HOOKS, LOSSES, MODELS


def labelled_batch(rng, sizes=(600, 400)):
    batch = random_batch(rng, sizes)
    batch["segment"] = torch.from_numpy(rng.integers(-1, 5, sum(sizes)))
    return batch


def test_segmentor_outputs_and_loss_formula(rng):
    model = MODELS.build({**SEGMENTOR, "loss_weights": {"ce": 2.5}})
    batch = labelled_batch(rng)
    out = model(batch)
    logits = out["heads"]["semantic"]["logits"]
    assert logits.shape == (1000, 5) and "pred" not in out
    expected = F.cross_entropy(logits, batch["segment"], ignore_index=-1)
    assert torch.equal(out["loss_ce"], expected.detach())
    assert torch.equal(out["loss"], 2.5 * expected)
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert torch.equal(out["pred"]["segment"], out["pred"]["segment_logits"].argmax(1))
    assert out["pred"]["segment"].shape == (1000,) and "loss" in out  # labels present: loss too
    del batch["segment"]
    with torch.no_grad():
        assert "loss" not in model(batch)


def test_semantic_head_classifies_voxels_in_evaluation_with_the_per_point_logits(rng):
    # evaluation classifies each voxel once and copies its row to the voxel's points: the same
    # logits as classifying every point's (identical) features, as in training
    head = HEADS.build({"type": "SemanticHead", "num_classes": 5}, in_channels=8)
    voxel = torch.from_numpy(rng.normal(size=(30, 8)).astype(np.float32))
    inverse = torch.from_numpy(rng.integers(0, 30, 200))

    features = SimpleNamespace(voxel=SimpleNamespace(F=voxel), inverse=inverse, point=voxel[inverse])
    trained = head(features, {})["logits"]
    head.eval()
    evaluated = head(features, {})["logits"]
    assert evaluated.shape == (200, 5) and torch.equal(evaluated, trained)


def test_all_ignored_gives_zero_loss_with_graph(rng):
    model = MODELS.build(SEGMENTOR)
    batch = labelled_batch(rng)
    batch["segment"][:] = -1
    out = model(batch)
    assert out["loss"].item() == 0.0 and out["loss"].requires_grad


def test_segmentor_config_errors():
    with pytest.raises(ValueError, match="^loss_weights.dice: names no loss term; terms: ce$"):
        MODELS.build({**SEGMENTOR, "loss_weights": {"dice": 1.0}})
    with pytest.raises(ValueError, match="needs at least one head"):
        MODELS.build({**SEGMENTOR, "heads": {}})


# ---------------------------------------------------------------- a head and a loss from outside the core
@HEADS.register("ToyOffsetHead")
class ToyOffsetHead(nn.Module):
    """Predicts each point's offset to its voxel centre, from voxel features (voxel level)."""

    predicts = ("embedding", "score")  # the Head contract (voxseg.contracts)
    num_classes = None
    thing_classes = None

    def __init__(self, in_channels: int, hidden: int = 8):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, features, batch):
        per_voxel = self.mlp(features.voxel.F)
        return {"offset": per_voxel[features.inverse], "voxels": len(per_voxel)}

    def predict(self, outputs, features, batch):
        return {"embedding": outputs["offset"], "score": outputs["offset"].norm(dim=1)}


@LOSSES.register("ToyOffsetLoss")
class ToyOffsetLoss(nn.Module):
    target = None  # the Loss contract: needs no target from the batch

    def __init__(self, head: str = "offset"):
        super().__init__()
        self.head = head

    def forward(self, outputs, batch):
        return outputs[self.head]["offset"].square().mean()


SEEN: list[dict] = []


@HOOKS.register("ToyRecorderHook")
class ToyRecorderHook(Hook):
    def after_step(self, trainer, outputs):
        SEEN.append({k: float(v.detach()) for k, v in outputs.items() if k.startswith("loss")})


def test_toy_head_and_loss_train_and_predict(tiny_dataset, tmp_path, monkeypatch):
    """Registered in this file alone: chosen in YAML, trained, reported by name, predicted."""
    monkeypatch.chdir(ROOT)
    SEEN.clear()
    out = tmp_path / "toy"
    cfg = finetune.resolve(str(ROOT / "configs/finetune/synthetic_minkunet14a.yaml"), finetune_overrides(
        tiny_dataset, out, **{"train.max_steps": 3, "train.val_every": 0, "train.log_every": 1,
                              "model.heads.offset": "{type: ToyOffsetHead, hidden: 4}",
                              "model.losses.offset": "{type: ToyOffsetLoss}",
                              "model.loss_weights.offset": 0.5,
                              "train.hooks": "[{type: ToyRecorderHook}]"}))
    finetune.run(cfg)
    assert len(SEEN) == 3 and all(set(s) == {"loss", "loss_ce", "loss_offset"} for s in SEEN)
    for s in SEEN:
        assert s["loss"] == pytest.approx(s["loss_ce"] + 0.5 * s["loss_offset"], rel=1e-6)
    assert json.loads((out / "metrics.json").read_text())["step"] == 3

    model = MODELS.build(cfg["model"])
    model.load_state_dict(checkpoint.load(out / "checkpoints" / "last.pt")["model"])
    from voxseg.engine.inference import predict

    dataset = finetune.build_datasets(cfg)[1]
    name, pred, sample = next(predict(model, dataset, torch.device("cpu")))
    n = len(sample["coord"])
    assert set(pred) == {"segment", "segment_logits", "embedding", "score"}
    assert pred["embedding"].shape == (n, 3) and np.allclose(pred["score"], np.linalg.norm(pred["embedding"], axis=1))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(out / "tb")).Reload().Tags()["scalars"]
    assert {"train/loss_ce", "train/loss_offset", "val/miou"} <= set(tags)


@HEADS.register("ToyUndeclaredHead")
class ToyUndeclaredHead(ToyOffsetHead):
    """Predicts what ToyOffsetHead does without declaring it: caught at the first prediction."""

    predicts = ()


def test_two_heads_predicting_one_key_is_an_error(rng):
    model = MODELS.build({**SEGMENTOR, "heads": {"a": {"type": "ToyUndeclaredHead"},
                                                 "b": {"type": "ToyUndeclaredHead"}}, "losses": {}}).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="heads predict the same key 'embedding'"):
        model(random_batch(rng))


def test_format1_checkpoint_migrates(rng, tmp_path):
    """A checkpoint of the old SemanticHead model loads as a Segmentor with identical outputs."""
    model = MODELS.build(SEGMENTOR).eval()
    old_model_cfg = {"type": "SemanticHead", "num_classes": 5, "dropout": 0.0, "label_smoothing": 0.1,
                     "backbone": SEGMENTOR["backbone"]}
    old_state = {(k.removeprefix("heads.semantic.")): v for k, v in model.state_dict().items()}
    assert "classifier.weight" in old_state
    torch.save({"step": 7, "config": {"model": old_model_cfg}, "model": old_state,
                "torch_rng": torch.get_rng_state()}, tmp_path / "old.pt")
    data = checkpoint.load(tmp_path / "old.pt")
    assert data["format"] == checkpoint.FORMAT and torch.equal(data["rng"]["torch"], torch.get_rng_state())
    migrated = data["config"]["model"]
    assert migrated["heads"] == {"semantic": {"type": "SemanticHead", "num_classes": 5, "dropout": 0.0}}
    assert migrated["losses"]["ce"]["label_smoothing"] == 0.1
    again = MODELS.build(migrated).eval()
    again.load_state_dict(data["model"])
    batch = random_batch(rng)
    with torch.no_grad():
        assert torch.equal(again(batch)["pred"]["segment_logits"], model(batch)["pred"]["segment_logits"])


@pytest.mark.parametrize("momentum", [0.0, 1.0])
def test_ema_hook_from_yaml_writes_the_average(momentum, tiny_dataset, tmp_path, monkeypatch):
    """Momentum 0 keeps the latest weights, momentum 1 the initial ones: both exactly."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "ema"
    cfg = finetune.resolve(str(ROOT / "configs/finetune/synthetic_minkunet14a.yaml"), finetune_overrides(
        tiny_dataset, out, **{"train.max_steps": 2, "train.val_every": 0,
                              "train.hooks": f"[{{type: EMAHook, momentum: {momentum}}}]"}))
    finetune.run(cfg)
    ema = checkpoint.load(out / "checkpoints" / "ema.pt")
    last = checkpoint.load(out / "checkpoints" / "last.pt")
    if momentum == 0.0:
        expected = last["model"]
    else:
        torch.manual_seed(cfg["train"]["seed"])
        expected = MODELS.build(cfg["model"]).state_dict()
    assert ema["model"].keys() == expected.keys()
    for key, value in ema["model"].items():
        if value.is_floating_point():
            assert torch.equal(value, expected[key]), key
    saved = next(v for k, v in last["hooks"].items() if k.endswith(":EMAHook"))["model"]
    assert all(torch.equal(saved[k], ema["model"][k]) for k in saved)
    assert ema["config"] == cfg and ema["step"] == 2
