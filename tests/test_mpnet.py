"""MPNet (He et al. 2020): the semantic memory (eq. 1), cosine addressing and the memory read
(eq. 2), R_seg (eq. 4) and R_ins (eq. 3) against hand computations and gradcheck, the Table 1
switches, the shipped configs, and a short fine-tune -> infer -> evaluate."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from tests.helpers import ROOT, asis_hand_made_scan, check_instance_predictions_reproduce_the_run
from voxseg.engine.optim import build_optimizer
from voxseg.models.heads.asis import ASISHead
from voxseg.models.heads.mpnet import MPNetHead, address, read_memory, semantic_memory
from voxseg.models.losses.mpnet import InstanceCentroidRegularizer, SemanticMemoryRegularizer

D64 = torch.float64


# ----------------------------------------------------------------------------- memory (eqs. 1, 2)
def test_semantic_memory_is_the_mean_of_each_class_block_eq_1():
    memory = torch.tensor([[1.0, 2], [3, 4], [0, 0], [2, -2], [5, 5], [7, 1]], dtype=D64)  # C = 3, Nc = 2
    assert semantic_memory(memory, 3).tolist() == [[2, 3], [1, -1], [6, 3]]
    assert torch.allclose(semantic_memory(memory, 1), torch.tensor([[3, 10 / 6]], dtype=D64), rtol=1e-15)
    # C = 2, Nc = 3: rows 0-2 and 3-5
    assert torch.allclose(semantic_memory(memory, 2), torch.tensor([[4 / 3, 2], [14 / 3, 4 / 3]], dtype=D64))
    with pytest.raises(ValueError, match="equal blocks"):
        semantic_memory(memory, 4)


def test_cosine_addressing_and_read_eq_2_by_hand():
    memory = torch.tensor([[1.0, 0], [0, 2], [-3, 0]], dtype=D64)
    query = torch.tensor([[5.0, 0], [1, 1]], dtype=D64)
    s = 1 / math.sqrt(2)
    for beta in (1.0, 2.5):
        # cosines: query 0 -> 1, 0, -1; query 1 -> 1/sqrt2, 1/sqrt2, -1/sqrt2 (norms do not matter)
        rows = [[math.exp(beta * c) for c in (1, 0, -1)], [math.exp(beta * c) for c in (s, s, -s)]]
        want = torch.tensor([[v / sum(r) for v in r] for r in rows], dtype=D64)
        w = address(query, memory, beta)
        assert torch.allclose(w, want, rtol=1e-14, atol=0)
        read, weights = read_memory(query, memory, beta)
        assert torch.equal(weights, w)
        # f^ = sum_j w_j m_j = (w_0 - 3 w_2, 2 w_1)
        hand = torch.stack([want[:, 0] - 3 * want[:, 2], 2 * want[:, 1]], dim=1)
        assert torch.allclose(read, hand, rtol=1e-14, atol=1e-15)


def test_memory_read_gradcheck_double():
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(5, 4, generator=gen, dtype=D64, requires_grad=True)
    memory = torch.randn(6, 4, generator=gen, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, m: read_memory(q, m, 1.7)[0], (query, memory))
    # through the semantic memory too (Sec. 3.4: f^_seg = gamma^T C with C from eq. 1)
    assert torch.autograd.gradcheck(lambda q, m: read_memory(q, semantic_memory(m, 3))[0], (query, memory))


# ----------------------------------------------------------------------------- R_seg (eq. 4)
def test_semantic_memory_regulariser_eq_4_by_hand():
    # one feature at the origin; distances to the class summaries 5, 1, 2
    summary = torch.tensor([[3.0, 4], [0, 1], [0, 2]], dtype=D64)
    feature = torch.zeros(4, 2, dtype=D64)
    label = torch.tensor([0, 1, 2, -1])
    loss = SemanticMemoryRegularizer(head="h", margin=5.0)
    # y = 0: 5 - (1 + 2) + 5 = 7; y = 1: 1 - (5 + 2) + 5 = -1 -> 0; y = 2: 2 - (5 + 1) + 5 = 1;
    # the unlabelled point does not count: mean over 3
    got = loss({"h": {"seg_feature": feature, "semantic_memory": summary}}, {"segment": label})
    assert torch.allclose(got, torch.tensor(8 / 3, dtype=D64))
    # margin 2: y = 0 -> 4, y = 2 -> 0 (-2)
    got = SemanticMemoryRegularizer(head="h", margin=2.0)({"h": {"seg_feature": feature, "semantic_memory": summary}},
                                                          {"segment": label})
    assert torch.allclose(got, torch.tensor(4 / 3, dtype=D64))
    assert SemanticMemoryRegularizer().margin == 5.0  # the paper's m


def test_semantic_memory_regulariser_gradcheck_reaches_the_memory():
    gen = torch.Generator().manual_seed(1)
    feature = torch.randn(7, 3, generator=gen, dtype=D64, requires_grad=True)
    memory = torch.randn(8, 3, generator=gen, dtype=D64, requires_grad=True)  # 4 classes x Nc = 2
    label = torch.tensor([0, 1, 2, 3, -1, 1, 0])
    loss = SemanticMemoryRegularizer(head="h", margin=20.0)  # every hinge active (off its kink)

    def f(x, m):
        return loss({"h": {"seg_feature": x, "semantic_memory": semantic_memory(m, 4)}}, {"segment": label})

    assert torch.autograd.gradcheck(f, (feature, memory))
    assert torch.autograd.grad(f(feature, memory), memory)[0].abs().sum() > 0
    zero = loss({"h": {"seg_feature": feature, "semantic_memory": semantic_memory(memory, 4)}},
                {"segment": torch.full((7,), -1)})
    assert zero.item() == 0.0 and zero.requires_grad


# ----------------------------------------------------------------------------- R_ins (eq. 3)
def centroid_batch():
    """Scan 0: instance 0 at x = 0 and 2 (GT (1, 0, 0)), instance 1 one point at (5, 5, 5), a stuff
    point; scan 1: instance 2 = {(0,0,0), (0,0,3), (0,3,0)} (GT (0, 1, 1)); scan 2: stuff only."""
    coord = torch.tensor([[0, 0, 0], [2, 0, 0], [5, 5, 5], [9, 9, 9], [0, 0, 0], [0, 0, 3], [0, 3, 0], [1, 1, 1]],
                         dtype=D64)
    centroid = torch.tensor([[1, 0, 0], [1, 1, 0], [5, 5, 7], [100, 0, 0], [0, 1, 1], [0, 1, 1], [0, 1, 3],
                             [50, 50, 50]], dtype=D64)
    batch = {"coord": coord, "instance": torch.tensor([0, 0, 1, -1, 2, 2, 2, -1]),
             "batch": torch.tensor([0, 0, 0, 0, 1, 1, 1, 2])}
    return centroid, batch


def test_instance_centroid_regulariser_eq_3_by_hand():
    centroid, batch = centroid_batch()
    loss = InstanceCentroidRegularizer(head="h")
    # scan 0: instance 0 squared errors 0 and 1 -> 1/2; instance 1: 2^2 = 4 -> (0.5 + 4) / 2;
    # scan 1: errors 0, 0, 4 -> 4/3 (one instance); scan 2 and the stuff points do not count
    want = ((0.5 + 4) / 2 + 4 / 3) / 2
    got = loss({"h": {"centroid": centroid}}, batch)
    assert torch.allclose(got, torch.tensor(want, dtype=D64))
    assert torch.autograd.gradcheck(lambda c: loss({"h": {"centroid": c}}, batch), (centroid.requires_grad_(True),))
    zero = loss({"h": {"centroid": centroid}}, {**batch, "instance": torch.full((8,), -1)})
    assert zero.item() == 0.0 and zero.requires_grad


def test_regularisers_name_the_missing_switch():
    with pytest.raises(KeyError, match="semantic_memory: true"):
        SemanticMemoryRegularizer(head="h")({"h": {"logits": torch.zeros(1, 2)}}, {"segment": torch.zeros(1).long()})
    with pytest.raises(KeyError, match="centroid_estimator: true"):
        InstanceCentroidRegularizer(head="h")({"h": {}}, {"instance": torch.zeros(1).long()})


# ----------------------------------------------------------------------------- the head's switches
def fake_features(voxels=30, channels=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    inverse = torch.randint(0, voxels, (80,), generator=gen)
    inverse[:voxels] = torch.arange(voxels)
    features = SimpleNamespace(voxel=SimpleNamespace(F=torch.randn(voxels, channels, generator=gen)),
                               voxel_batch=torch.zeros(voxels, dtype=torch.long), inverse=inverse)
    return features, {"coord": torch.randn(80, 3, generator=gen), "batch": torch.zeros(80, dtype=torch.long)}


@pytest.mark.parametrize("ins, seg", [(False, False), (True, False), (True, True), (False, True)])
def test_switches_route_each_branch_through_the_memory_or_not(ins, seg):
    torch.manual_seed(0)
    features, batch = fake_features()
    head = MPNetHead(8, num_classes=3, thing_classes=[0], channels=6, slots_per_class=4, instance_memory=ins,
                     semantic_memory=seg, key_strength=3.0).eval()
    out = head(features, batch)
    x, inv = features.voxel.F, features.inverse
    f_ins, f_seg = head.branch_ins(x), head.branch_seg(x)
    assert (head.memory is None) == (not ins and not seg)
    if ins:  # eq. 2: f^_ins = softmax(beta cos(f_ins, M)) M
        f_ins = read_memory(f_ins, head.memory, 3.0)[0]
    if seg:  # Sec. 3.4 on C of eq. 1
        summary = semantic_memory(head.memory, 3)
        assert head.memory.shape == (12, 6) and torch.equal(out["semantic_memory"], summary)
        f_seg = read_memory(f_seg, summary, 3.0)[0]
        assert torch.allclose(out["seg_feature"], f_seg[inv])
    else:
        assert "seg_feature" not in out and "semantic_memory" not in out
    assert torch.allclose(out["embedding"], head.embed(f_ins)[inv]) and torch.equal(out["voxel_embedding"][inv],
                                                                                    out["embedding"])
    assert torch.allclose(out["logits"], head.classifier(f_seg)[inv]) and torch.equal(out["voxel_logits"][inv],
                                                                                     out["logits"])
    assert torch.allclose(out["centroid"], batch["coord"] + head.centroid(f_ins)[inv])  # G on f^_ins
    # which outputs depend on the memory
    if head.memory is not None:
        g_emb = torch.autograd.grad(out["embedding"].sum(), head.memory, allow_unused=True)[0]
        g_log = torch.autograd.grad(out["logits"].sum(), head.memory, allow_unused=True)[0]
        assert (g_emb is not None and g_emb.abs().sum() > 0) == ins
        assert (g_log is not None and g_log.abs().sum() > 0) == seg
    # memory off is exactly the two plain branches (vanilla ASIS: no SA, no IF)
    if not ins and not seg:
        asis = ASISHead(8, num_classes=3, thing_classes=[0], channels=6, semantic_awareness=False,
                        instance_fusion=False).eval()
        asis.load_state_dict({k.replace("branch_seg", "branch_sem"): v for k, v in head.state_dict().items()
                              if not k.startswith("centroid")})
        plain = asis(features, batch)
        assert torch.equal(out["embedding"], plain["embedding"]) and torch.equal(out["logits"], plain["logits"])


@pytest.mark.parametrize("ins, seg", [(True, True), (True, False), (False, True), (False, False)])
def test_learned_key_strength_one_log_beta_per_read_in_use(ins, seg):
    """learn_key_strength: each read in use has its own log beta, starting at log key_strength;
    the outputs equal those of a fixed head with the same beta, and each beta gets gradient only
    from its own read."""
    torch.manual_seed(0)
    features, batch = fake_features()
    kwargs = dict(num_classes=3, thing_classes=[0], channels=6, slots_per_class=4, instance_memory=ins,
                  semantic_memory=seg, key_strength=2.5)
    learned = MPNetHead(8, learn_key_strength=True, **kwargs).eval()
    reads = {"instance"} if ins and not seg else {"semantic"} if seg and not ins else {"instance", "semantic"}
    if not ins and not seg:  # no read: no parameter, so the Baseline row stays vanilla ASIS
        assert learned.log_key_strength is None and learned.strength("instance") == 2.5
        return
    assert set(learned.log_key_strength) == reads
    for name in reads:
        assert learned.log_key_strength[name].item() == pytest.approx(math.log(2.5), rel=1e-7)
    fixed = MPNetHead(8, learn_key_strength=False, **kwargs).eval()
    assert fixed.log_key_strength is None and fixed.strength("semantic") == 2.5
    fixed.load_state_dict({k: v for k, v in learned.state_dict().items() if not k.startswith("log_key")})
    out, ref = learned(features, batch), fixed(features, batch)
    for key in ("embedding", "logits"):
        assert torch.allclose(out[key], ref[key], atol=1e-6)
    # the instance beta moves the embedding, the semantic beta the logits, never the other
    for key, read in (("embedding", "instance"), ("logits", "semantic")):
        grads = torch.autograd.grad(out[key].square().sum(), list(learned.log_key_strength.values()),
                                    allow_unused=True)
        for name, grad in zip(learned.log_key_strength, grads, strict=True):
            assert (grad is not None and grad.abs() > 0) == (name == read), (key, name)
    # a larger beta sharpens the addressing: the entropy of w falls
    with torch.no_grad():
        name = sorted(reads)[0]
        query = learned.branch_ins(features.voxel.F) if name == "instance" else learned.branch_seg(features.voxel.F)
        keys = learned.memory if name == "instance" else semantic_memory(learned.memory, 3)
        entropy = [-(w * w.log()).sum(1).mean() for w in (address(query, keys, b) for b in (1.0, 2.5, 10.0))]
        assert entropy[0] > entropy[1] > entropy[2]


def test_no_centroid_estimator_and_bad_thing_classes():
    features, batch = fake_features()
    head = MPNetHead(8, num_classes=3, thing_classes=[0], channels=6, slots_per_class=2, centroid_estimator=False)
    assert head.centroid is None and "centroid" not in head(features, batch)
    assert head.memory.shape == (6, 6)
    bound = 1 / math.sqrt(6)  # MemAE's initialisation
    assert head.memory.abs().max() <= bound and head.memory.std() > bound / 4
    with pytest.raises(ValueError, match="thing_classes"):
        MPNetHead(8, num_classes=3, thing_classes=[3])


def test_predict_is_the_asis_mean_shift_step():
    """The ASIS hand-made scan (tests.helpers.asis_hand_made_scan): voxels 0, 1, 3 one instance of class 0 (60
    points), voxel 2 alone and too small, voxels 4, 5 stuff."""
    head = MPNetHead(4, num_classes=3, thing_classes=[0, 1], min_instance_points=30)
    outputs, features, batch, inverse = asis_hand_made_scan()
    voxel_logits = outputs["voxel_logits"]
    pred = head.predict(outputs, features, batch)
    per_voxel = lambda key: [pred[key][inverse == v].unique().tolist() for v in range(6)]  # noqa: E731
    assert per_voxel("instance") == [[0], [0], [-1], [0], [-1], [-1]]
    assert per_voxel("segment") == [[0], [0], [0], [0], [2], [2]]
    prob = voxel_logits.softmax(dim=1)[:, 0]
    assert torch.allclose(pred["instance_score"][inverse == 0], ((prob[0] + prob[1] + prob[3]) / 3).expand(20))
    assert head.timings["cluster_s"] > 0


# ----------------------------------------------------------------------------- the head in a model
def test_full_model_in_a_segmentor_trains_and_predicts(rng):
    import voxseg.models  # noqa: F401
    from tests.helpers import random_batch
    from voxseg.registry import MODELS

    torch.manual_seed(0)
    cfg = {"type": "Segmentor", "backbone": {"type": "MinkUNet14A", "in_channels": 2, "voxel_size": 0.5},
           "heads": {"mpnet": {"type": "MPNetHead", "num_classes": 4, "thing_classes": [0, 1], "channels": 16,
                               "slots_per_class": 5, "min_instance_points": 1}},
           "losses": {"ce": {"type": "CrossEntropyLoss", "head": "mpnet"},
                      "disc": {"type": "DiscriminativeLoss", "head": "mpnet"},
                      "seg_reg": {"type": "SemanticMemoryRegularizer", "head": "mpnet"},
                      "ins_reg": {"type": "InstanceCentroidRegularizer", "head": "mpnet"}},
           "loss_weights": {"ins_reg": 0.3}}
    model = MODELS.build(cfg)
    sizes = (700, 500)
    batch = random_batch(rng, sizes)
    batch["segment"] = torch.from_numpy(rng.integers(-1, 4, sum(sizes)))
    ids = torch.from_numpy(rng.integers(-1, 6, sum(sizes)))
    batch["instance"] = torch.where((ids >= 0) & (batch["segment"] <= 1) & (batch["segment"] >= 0),
                                    ids + 6 * batch["batch"], -1)
    out = model(batch)
    h = out["heads"]["mpnet"]
    assert h["logits"].shape == (1200, 4) and h["embedding"].shape == (1200, 5) and h["centroid"].shape == (1200, 3)
    assert h["semantic_memory"].shape == (4, 16) and h["seg_feature"].shape == (1200, 16)
    assert out["loss_seg_reg"] > 0 and out["loss_ins_reg"] > 0
    want = out["loss_ce"] + out["loss_disc"] + out["loss_seg_reg"] + 0.3 * out["loss_ins_reg"]  # eq. 6
    assert torch.allclose(out["loss"], want) and out["loss"].requires_grad
    out["loss"].backward()
    head = model.heads["mpnet"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    model.eval()
    with torch.no_grad():
        pred = model(batch)["pred"]
    assert {"segment", "segment_logits", "embedding", "instance", "instance_score"} <= set(pred)
    inst = pred["instance"]
    for sample in (0, 1):  # ids 0..K-1 per scan; one thing class and one score per instance
        ids = inst[(batch["batch"] == sample) & (inst >= 0)]
        if len(ids):
            assert torch.equal(torch.unique(ids), torch.arange(int(ids.max()) + 1))
        for i in torch.unique(ids):
            members = (inst == i) & (batch["batch"] == sample)
            assert len(torch.unique(pred["segment"][members])) == 1 and int(pred["segment"][members][0]) in (0, 1)
            assert len(torch.unique(pred["instance_score"][members])) == 1
    assert (pred["instance_score"][inst < 0] == 0).all()


# ----------------------------------------------------------------------------- shipped configs
CONFIGS = ROOT / "configs" / "finetune"
ROWS = {  # Table 1: (instance memory, semantic memory, G, loss terms)
    "mpnet_nomem": (False, False, False, {"ce", "disc"}),
    "mpnet_insmem": (True, False, False, {"ce", "disc"}),
    "mpnet_segmem": (True, True, False, {"ce", "disc"}),
    "mpnet": (True, True, True, {"ce", "disc", "seg_reg", "ins_reg"}),
    "mpnet_printed": (True, True, True, {"ce", "disc", "seg_reg", "ins_reg"}),  # the full model, beta = 1 fixed
    "mpnet_beta16": (True, True, True, {"ce", "disc", "seg_reg", "ins_reg"}),  # the full model, beta = 16 fixed
}


def test_every_mpnet_config_is_a_table_1_row():
    rows = {p.stem.removeprefix("synthetic_minkunet14a_") for p in CONFIGS.glob("synthetic_minkunet14a_mpnet*.yaml")}
    assert rows == set(ROWS)


@pytest.mark.parametrize("row", sorted(ROWS))
def test_shipped_mpnet_configs_build_the_intended_row(row):
    import voxseg.models  # noqa: F401
    from voxseg.engine import finetune
    from voxseg.registry import MODELS

    cfg = finetune.resolve(str(CONFIGS / f"synthetic_minkunet14a_{row}.yaml"), [])
    model = MODELS.build(cfg["model"])
    head = model.heads["mpnet"]
    ins, seg, g, terms = ROWS[row]
    assert (head.instance_memory, head.semantic_memory, head.centroid is not None) == (ins, seg, g)
    assert set(model.losses) == terms and cfg["output_dir"] == f"runs/synthetic_minkunet14a_{row}"
    assert head.num_classes == 12 and head.thing_classes == [0, 1]
    assert head.key_strength == (16.0 if row == "mpnet_beta16" else 1.0)
    # eq. 2's beta is learned per read (NTM) except in the two fixed-beta rows
    learned = row not in ("mpnet_printed", "mpnet_beta16", "mpnet_nomem")
    assert (head.log_key_strength is not None) == learned
    if learned:
        assert set(head.log_key_strength) == {"instance"} | ({"semantic"} if seg else set())
    assert (head.memory is None) == (not ins) and (head.memory is None or head.memory.shape == (150 * 12, 64))
    if row == "mpnet":  # the paper's settings: Nc = 150, m = 5, eq. 6 weights
        assert model.losses["seg_reg"].margin == 5.0
        assert model.loss_weights == {"ce": 1.0, "disc": 1.0, "seg_reg": 1.0, "ins_reg": 1.0}
    asis = finetune.resolve(str(CONFIGS / "synthetic_minkunet14a_asis.yaml"), [])
    # the same data and budget as ASIS; only the learned betas have their own rate (10x, no decay)
    groups = cfg["train"]["param_groups"]
    assert groups == ([{"params": "*log_key_strength*", "lr": 10 * asis["train"]["lr"], "weight_decay": 0.0}]
                      if learned else [])
    assert cfg["data"] == asis["data"] and dict(cfg["train"], param_groups=[]) == asis["train"]
    assert cfg["evaluator"] == asis["evaluator"]
    optimizer = build_optimizer(model, cfg["train"])  # a pattern matching nothing would be a ConfigError
    if learned:
        assert optimizer.param_groups[0]["params"] == list(head.log_key_strength.values())
    assert cfg["model"]["backbone"] == asis["model"]["backbone"]


# ----------------------------------------------------------------------------- end to end
def test_mpnet_finetune_infer_evaluate(tiny_dataset, tmp_path, monkeypatch):
    """The full MPNet config trains and validates; the files that tools/infer.py writes for the
    InsMem row (instance memory read, eq. 2) reproduce its run's PQ and mIoU. The files are
    checked on InsMem because after these 4 steps the full model's semantic read (a mixture of
    the 12 class summaries of eq. 1, still near their random start) predicts one stuff class
    for every point, so its predictions hold no instance to check."""
    from voxseg.engine import finetune

    monkeypatch.chdir(ROOT)
    settings = {
        "data.root": str(tiny_dataset), "data.train.sequences": "[0]", "data.val.sequences": "[1]",
        "model.backbone.voxel_size": 0.4, "train.batch_size": 1, "train.num_workers": 0, "train.max_steps": 4,
        "train.warmup_steps": 1, "train.val_every": 0, "train.checkpoint_every": 4, "train.progress": "false",
        "train.threads": 1, "train.lr": 0.01, "data.train.transforms": "[]", "model.heads.mpnet.slots_per_class": 20,
        "model.heads.mpnet.min_instance_points": 5, "evaluator.min_region_size": 5,
    }
    for row in ("mpnet", "mpnet_insmem"):
        out = tmp_path / row
        cfg = finetune.resolve(str(CONFIGS / f"synthetic_minkunet14a_{row}.yaml"),
                               [f"{k}={v}" for k, v in {**settings, "output_dir": str(out)}.items()])
        finetune.run(cfg)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["step"] == 4 and {"pq", "ap50", "mwcov", "miou", "best_pq"} <= set(metrics)

    check_instance_predictions_reproduce_the_run(tmp_path / "mpnet_insmem", tiny_dataset, tmp_path,
                                                 {"panoptic": ("pq", "miou")})


def test_the_baseline_row_trains_exactly_as_vanilla_asis(tiny_dataset, tmp_path):
    """Table 1's Baseline is vanilla ASIS: synthetic_minkunet14a_mpnet_nomem.yaml and
    synthetic_minkunet14a_asis_vanilla.yaml train to the same weights, byte for byte (so the
    benchmark's MPNet-without-memory row equals its ASIS vanilla row)."""
    from tests.helpers import finetune_overrides
    from voxseg.engine import checkpoint, finetune
    from voxseg.registry import MODELS

    states = {}
    for row in ("mpnet_nomem", "asis_vanilla"):
        cfg = finetune.resolve(str(CONFIGS / f"synthetic_minkunet14a_{row}.yaml"),
                               finetune_overrides(tiny_dataset, tmp_path / row,
                                                  **{"train.max_steps": 3, "train.val_every": 0,
                                                     "train.checkpoint_every": 0}))
        finetune.run(cfg)
        states[row] = checkpoint.load(tmp_path / row / "checkpoints" / "last.pt")["model"]
    rename = {"heads.mpnet.branch_seg.": "heads.asis.branch_sem.", "heads.mpnet.": "heads.asis."}

    def as_asis(key: str) -> str:
        for old, new in rename.items():
            if key.startswith(old):
                return new + key[len(old):]
        return key

    mpnet = {as_asis(k): v for k, v in states["mpnet_nomem"].items()}
    assert mpnet.keys() == states["asis_vanilla"].keys()
    assert all(torch.equal(v, states["asis_vanilla"][k]) for k, v in mpnet.items())
    torch.manual_seed(cfg["train"]["seed"])  # the run's initial weights: training moved them
    initial = MODELS.build(cfg["model"]).state_dict()
    assert not torch.equal(initial["backbone.stem.0.kernel"], states["asis_vanilla"]["backbone.stem.0.kernel"])
