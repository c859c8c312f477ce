"""ASIS (Wang et al. 2019): the discriminative loss against eqs. 1-4, instance fusion's neighbour
filtering and max (eq. 6), the exact kNN it stands on, and the head inside a Segmentor."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import asis_hand_made_scan
from voxseg.models.heads.asis import ASISHead, neighbour_max
from voxseg.models.knn import knn
from voxseg.models.losses.asis import DiscriminativeLoss


# ----------------------------------------------------------------------------- discriminative loss
def tiny_scenes(dtype=torch.float64):
    """Scene 0: instance 0 = {(0,0), (1,0)}, instance 1 = {(3,1)}; scene 1: instance 2 =
    {(1,1), (1,1), (1,4)} and an unlabelled point; scene 2: only unlabelled points."""
    embedding = torch.tensor([[0, 0], [1, 0], [3, 1], [1, 1], [1, 1], [1, 4], [9, 9], [7, 7]], dtype=dtype)
    batch = {"instance": torch.tensor([0, 0, 1, 2, 2, 2, -1, -1]), "batch": torch.tensor([0, 0, 0, 1, 1, 1, 1, 2])}
    return embedding, batch


def test_discriminative_loss_matches_equations_1_to_4():
    embedding, batch = tiny_scenes()
    loss = DiscriminativeLoss(head="asis", stuff="ignore", delta_v=0.2, delta_d=2.0, alpha=0.1)
    # scene 0: mu_0 = (0.5, 0), L1 distances of its points 0.5 and 0.5 -> [0.5 - 0.2]^2 = 0.09 each;
    # mu_1 = (3, 1), one point at distance 0. L_var = (0.09 + 0) / 2.
    # ||mu_0 - mu_1||_1 = 2.5 + 1 = 3.5 -> [2 * 2 - 3.5]^2 = 0.25 for each of the 2 ordered pairs,
    # over I(I-1) = 2. L_reg = (0.5 + 4) / 2.
    scene0 = (0.09 + 0) / 2 + (0.25 + 0.25) / 2 + 0.1 * (0.5 + 4) / 2
    # scene 1: mu_2 = (1, 2); distances 1, 1, 2 -> 0.8^2, 0.8^2, 1.8^2 over 3 points; one
    # instance: no L_dist; L_reg = 3. Scene 2 has no instance and does not count.
    scene1 = (0.64 + 0.64 + 3.24) / 3 + 0.1 * 3
    got = loss({"asis": {"embedding": embedding}}, batch)
    assert torch.allclose(got, torch.tensor((scene0 + scene1) / 2, dtype=torch.float64))


def test_discriminative_loss_gradcheck_and_empty_batch():
    embedding, batch = tiny_scenes()
    embedding = embedding + 0.01 * torch.arange(16, dtype=torch.float64).view(8, 2)  # off the hinges' kinks
    embedding.requires_grad_(True)
    loss = DiscriminativeLoss(head="asis", stuff="ignore", delta_v=0.2, delta_d=2.0, alpha=0.1)
    assert torch.autograd.gradcheck(lambda e: loss({"asis": {"embedding": e}}, batch), (embedding,))
    none = {"instance": torch.full((8,), -1), "batch": batch["batch"]}
    zero = loss({"asis": {"embedding": embedding}}, none)
    assert zero.item() == 0.0 and zero.requires_grad


def test_stuff_points_form_one_instance_per_scene_and_class():
    batch = {"instance": torch.tensor([0, 0, -1, -1, -1, 1, -1, -1, -1]),
             "segment": torch.tensor([0, 0, 2, 2, 3, 0, 2, -1, 3]),
             "batch": torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1])}
    ids = DiscriminativeLoss(stuff="segments").instances(batch)
    # instance ids 0 and 1 kept; stuff ids start at 2 and are 2 + scene * 4 classes + class
    assert ids.tolist() == [0, 0, 4, 4, 5, 1, 8, -1, 9]
    assert torch.equal(DiscriminativeLoss(stuff="ignore").instances(batch), batch["instance"])
    # and the loss is the formula over those groups: the same as passing them as instances
    embedding = torch.randn(9, 3, dtype=torch.float64)
    with_stuff = DiscriminativeLoss(head="h")({"h": {"embedding": embedding}}, batch)
    explicit = DiscriminativeLoss(head="h", stuff="ignore")({"h": {"embedding": embedding}}, {**batch, "instance": ids})
    assert torch.equal(with_stuff, explicit)


# ----------------------------------------------------------------------------- kNN
def test_knn_is_exact_per_sample_for_tree_and_brute_force():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=gen)
    batch = torch.randint(0, 3, (300,), generator=gen)
    for p in (1, 2):
        full = torch.cdist(x, x, p=p, compute_mode="donot_use_mm_for_euclid_dist")
        full[batch.unsqueeze(0) != batch.unsqueeze(1)] = float("inf")  # other samples never count
        want = full.topk(7, dim=1, largest=False)
        for method in ("tree", "brute"):
            dist, index = knn(x, 7, batch, p=p, method=method)
            assert torch.equal(index, want.indices), (p, method)
            assert torch.allclose(dist, want.values, atol=1e-5)


def test_knn_max_distance_replaces_farther_neighbours_by_the_row_itself():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(200, 5, generator=gen)
    batch = torch.randint(0, 2, (200,), generator=gen)
    full_d, full_i = knn(x, 9, batch, p=1, method="brute")
    own = torch.arange(200).unsqueeze(1).expand(200, 9)
    for method in ("tree", "brute"):
        dist, index = knn(x, 9, batch, p=1, max_distance=1.5, method=method)
        far = full_d > 1.5
        assert far.any() and (~far).any()
        assert torch.equal(index, torch.where(far, own, full_i)), method
        assert torch.equal(torch.isinf(dist), far)


def test_knn_pads_small_samples_with_the_row_itself():
    x = torch.tensor([[0.0], [1.0], [5.0], [5.5], [9.0]])
    dist, index = knn(x, 3, torch.tensor([0, 0, 1, 1, 2]), p=1)
    assert index.tolist() == [[0, 1, 0], [1, 0, 1], [2, 3, 2], [3, 2, 3], [4, 4, 4]]
    assert dist.tolist() == [[0, 1, 0], [0, 1, 0], [0, 0.5, 0], [0, 0.5, 0], [0, 0, 0]]


# ----------------------------------------------------------------------------- instance fusion
def test_fusion_neighbours_drop_those_beyond_delta_v():
    head = ASISHead(in_channels=4, num_classes=3, thing_classes=[0], k=3, delta_v=0.5)
    embedding = torch.tensor([[0.0], [0.1], [0.3], [5.0], [5.2], [0.05]])
    batch = torch.tensor([0, 0, 0, 0, 0, 1])  # row 5 is alone in its sample
    index = head.fusion_neighbours(embedding, batch)
    # row 3: itself, row 4 at 0.2, then row 2 at 4.7 > delta_v -> replaced by row 3 itself
    assert index.tolist() == [[0, 1, 2], [1, 0, 2], [2, 1, 0], [3, 4, 3], [4, 3, 4], [5, 5, 5]]


def test_neighbour_max_equals_amax_over_the_gathered_tensor_with_its_gradient():
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(50, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 50, (50, 4), generator=gen)
    got = neighbour_max(features, index, chunk=7)
    want = features[index].amax(dim=1)
    assert torch.equal(got, want)
    weights = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    (g_got,) = torch.autograd.grad((got * weights).sum(), features)
    (g_want,) = torch.autograd.grad((want * weights).sum(), features)
    # duplicates in a row (as the filtered neighbour lists have) split amax's gradient between
    # copies of the same entry, so the sums agree up to rounding order
    assert torch.allclose(g_got, g_want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda f: neighbour_max(f, index, chunk=7), (features,))


def test_neighbour_max_gives_a_tie_to_the_first_neighbour_in_the_row():
    # rows 0 and 1 are equal: the gradient of each output goes to whichever is listed first
    features = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 5.0]], requires_grad=True)
    index = torch.tensor([[1, 0, 2], [1, 2, 0], [2, 2, 2]])
    out = neighbour_max(features, index)
    assert torch.equal(out.detach(), torch.tensor([[1.0, 5.0], [1.0, 5.0], [0.0, 5.0]]))
    (grad,) = torch.autograd.grad(out[:, 0].sum(), features)
    assert torch.equal(grad, torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 0.0]]))


# ----------------------------------------------------------------------------- the head
ASIS_MODEL = {
    "type": "Segmentor",
    "backbone": {"type": "MinkUNet14A", "in_channels": 2, "voxel_size": 0.5},
    "heads": {"asis": {"type": "ASISHead", "num_classes": 4, "thing_classes": [0, 1], "channels": 16}},
    "losses": {"ce": {"type": "CrossEntropyLoss", "head": "asis"},
               "disc": {"type": "DiscriminativeLoss", "head": "asis", "target": "instance"}},
    "loss_weights": {"disc": 0.5},
}


def labelled_instance_batch(rng, sizes=(700, 500)):
    from tests.helpers import random_batch

    batch = random_batch(rng, sizes)
    batch["segment"] = torch.from_numpy(rng.integers(-1, 4, sum(sizes)))
    batch["instance"] = torch.from_numpy(rng.integers(-1, 6, sum(sizes)))
    return batch


def test_asis_in_a_segmentor_trains_and_predicts(rng):
    import voxseg.models  # noqa: F401
    from voxseg.registry import MODELS

    torch.manual_seed(0)
    model = MODELS.build(ASIS_MODEL)
    batch = labelled_instance_batch(rng)
    out = model(batch)
    heads = out["heads"]["asis"]
    assert heads["logits"].shape == (1200, 4) and heads["embedding"].shape == (1200, 5)
    assert torch.equal(out["loss"], out["loss_ce"] + 0.5 * out["loss_disc"]) and out["loss"].requires_grad
    out["loss"].backward()
    assert all(p.grad is not None for p in model.heads["asis"].parameters())
    model.eval()
    with torch.no_grad():
        pred = model(batch)["pred"]
    assert {"segment", "segment_logits", "embedding", "instance", "instance_score"} <= set(pred)
    inst = pred["instance"]
    assert inst.shape == (1200,) and int(inst.min()) >= -1
    for sample in (0, 1):  # ids 0..K-1 per scan; an instance has one thing class and one score
        ids = inst[(batch["batch"] == sample) & (inst >= 0)]
        if len(ids):
            assert torch.equal(torch.unique(ids), torch.arange(int(ids.max()) + 1))
    for i in torch.unique(inst[inst >= 0]):
        for sample in (0, 1):
            members = (inst == i) & (batch["batch"] == sample)
            if members.any():
                assert len(torch.unique(pred["segment"][members])) == 1
                assert int(pred["segment"][members][0]) in (0, 1)
                assert len(torch.unique(pred["instance_score"][members])) == 1
    assert (pred["instance_score"][inst < 0] == 0).all()


def test_semantic_awareness_and_fusion_switches(rng):
    """SA makes the embedding depend on the semantic branch (eq. 5); IF makes a voxel's logits
    depend on other voxels' semantic features (eq. 6); vanilla has neither."""
    from types import SimpleNamespace

    features = SimpleNamespace(voxel=SimpleNamespace(F=torch.randn(40, 8)),
                               voxel_batch=torch.zeros(40, dtype=torch.long), inverse=torch.arange(40))
    for sa, fusion in ((True, True), (False, False), (True, False)):
        torch.manual_seed(0)
        head = ASISHead(8, num_classes=3, thing_classes=[0], channels=6, semantic_awareness=sa,
                        instance_fusion=fusion, delta_v=100.0)  # every neighbour counts
        out = head(features, {})
        (grad,) = torch.autograd.grad(out["embedding"].sum(), head.branch_sem[0].weight, allow_unused=True)
        assert (grad is not None and grad.abs().sum() > 0) == sa
        # logits of voxel 0 react to another voxel's input only through instance fusion (in
        # evaluation mode: batch norm in training mixes the rows anyway)
        head.eval()
        x = features.voxel.F.clone().requires_grad_(True)
        logits = head(SimpleNamespace(voxel=SimpleNamespace(F=x), voxel_batch=features.voxel_batch,
                                      inverse=features.inverse), {})["logits"]
        (gx,) = torch.autograd.grad(logits[0].sum(), x)
        assert (gx[1:].abs().sum() > 0).item() == fusion


def test_predict_clusters_things_votes_the_class_and_drops_small_instances():
    """Six voxels of one scan: 0, 1 and 3 close in embedding space, 2 far away, 4 and 5 stuff."""
    head = ASISHead(4, num_classes=3, thing_classes=[0, 1], min_instance_points=30)
    outputs, features, batch, inverse = asis_hand_made_scan()
    voxel_logits = outputs["voxel_logits"]
    pred = head.predict(outputs, features, batch)
    per_voxel = lambda key: [pred[key][inverse == v].unique().tolist() for v in range(6)]  # noqa: E731
    # voxels 0, 1, 3 form one instance of 60 points; class 0 has 40 of its points -> its class,
    # so voxel 3's points (class 1 on their own) take class 0. Voxel 2 is alone: 10 points < 30.
    assert per_voxel("instance") == [[0], [0], [-1], [0], [-1], [-1]]
    assert per_voxel("segment") == [[0], [0], [0], [0], [2], [2]]
    prob = voxel_logits.softmax(dim=1)[:, 0]
    expected = (20 * prob[0] + 20 * prob[1] + 20 * prob[3]) / 60  # mean class-0 probability over its points
    assert torch.allclose(pred["instance_score"][inverse == 0], expected.expand(20))
    assert (pred["instance_score"][inverse == 2] == 0).all()


# ----------------------------------------------------------------------------- fusion warm-up
def voxel_features(n=40, channels=8, seed=0):
    """What the head reads of a BackboneOutput: one sample of n voxels, one point per voxel."""
    from types import SimpleNamespace

    gen = torch.Generator().manual_seed(seed)
    return SimpleNamespace(voxel=SimpleNamespace(F=torch.randn(n, channels, generator=gen)),
                           voxel_batch=torch.zeros(n, dtype=torch.long), inverse=torch.arange(n))


def warmup_head(**kwargs):
    torch.manual_seed(0)  # delta_v: every neighbour counts, so that fusion changes the logits
    return ASISHead(8, num_classes=3, thing_classes=[0], channels=6, delta_v=100.0, **kwargs)


def same_weights(head, instance_fusion):
    """A head without warm-up, fusion on or off, with `head`'s weights and statistics."""
    twin = ASISHead(8, num_classes=3, thing_classes=[0], channels=6, delta_v=100.0, instance_fusion=instance_fusion)
    twin.load_state_dict({k: v for k, v in head.state_dict().items() if k != "fusion_steps_seen"})
    return twin


def test_fusion_warmup_reads_the_unfused_features_then_the_fused_ones():
    head = warmup_head(fusion_warmup_steps=2)
    for step in range(3):
        unfused, fused = same_weights(head, False), same_weights(head, True)  # before this forward's statistics
        features = voxel_features(seed=step)
        logits = head(features, {})["logits"]
        want_unfused, want_fused = unfused(features, {})["logits"], fused(features, {})["logits"]
        assert int(head.fusion_steps_seen) == step + 1
        assert not torch.equal(want_unfused, want_fused)
        if step < 2:
            assert torch.equal(logits, want_unfused), step
        else:
            assert torch.equal(logits, want_fused) and not torch.equal(logits, want_unfused)
        logits.sum().backward()  # a training step's forward keeps its graph


def test_fusion_warmup_counts_training_forwards_only_and_resumes_from_the_state_dict():
    head = warmup_head(fusion_warmup_steps=2)
    features = voxel_features()
    head.eval()
    for _ in range(3):  # validation: evaluation mode, with or without gradients
        head(features, {})
        with torch.no_grad():
            head(features, {})
    head.train()
    with torch.no_grad():  # training mode without gradients is no optimizer step either
        head(features, {})
    assert int(head.fusion_steps_seen) == 0
    head.eval()  # stopped within its warm-up: predicts unfused, as it was trained
    with torch.no_grad():
        assert torch.equal(head(features, {})["logits"], same_weights(head, False).eval()(features, {})["logits"])
    head.train()
    head(features, {})
    head(features, {})
    state = head.state_dict()
    assert int(state["fusion_steps_seen"]) == 2
    resumed = warmup_head(fusion_warmup_steps=2)
    assert int(resumed.fusion_steps_seen) == 0
    resumed.load_state_dict(state)
    assert int(resumed.fusion_steps_seen) == 2
    resumed.eval()
    with torch.no_grad():  # the warm-up is over: evaluation fuses
        assert torch.equal(resumed(features, {})["logits"], same_weights(head, True).eval()(features, {})["logits"])
    resumed.train()
    resumed(features, {})
    assert int(resumed.fusion_steps_seen) == 3


def test_fusion_warmup_never_reads_the_buffer_in_a_forward():
    """The forward decides from the host count: reading the buffer would make each forward on a
    GPU wait for the device. A buffer whose value cannot be read (the meta device) still trains
    through the warm-up and into fusion."""
    head = warmup_head(fusion_warmup_steps=2)
    head.fusion_steps_seen = torch.empty((), dtype=torch.long, device="meta")
    with pytest.raises(RuntimeError, match="meta"):
        int(head.fusion_steps_seen)  # what reading it would do
    for step in range(3):
        want = same_weights(head, instance_fusion=step >= 2)(voxel_features(seed=step), {})["logits"]
        assert torch.equal(head(voxel_features(seed=step), {})["logits"], want), step


def test_no_fusion_warmup_keeps_the_state_dict_keys():
    layers = {"branch_sem.0": False, "branch_sem.1": True, "branch_ins.0": False, "branch_ins.1": True,
              "adapt.0": False, "adapt.1": True, "embed": False, "classifier": False}
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    want = [f"{layer}.{name}" for layer, is_bn in layers.items() for name in (bn if is_bn else ("weight", "bias"))]
    for head in (warmup_head(), warmup_head(fusion_warmup_steps=0), warmup_head(instance_fusion=False)):
        assert list(head.state_dict()) == want
    assert sorted(warmup_head(fusion_warmup_steps=1).state_dict()) == sorted([*want, "fusion_steps_seen"])


def test_fusion_warmup_without_fusion_is_refused_naming_the_key():
    from tests.helpers import ASIS_CONFIG
    from voxseg.config import InvalidValue
    from voxseg.engine import finetune
    from voxseg.errors import ConfigError

    with pytest.raises(InvalidValue, match=r"^fusion_warmup_steps: 5 steps of warm-up delay instance fusion, "
                                           r"which is off \(instance_fusion: false\); set it to 0$"):
        warmup_head(instance_fusion=False, fusion_warmup_steps=5)
    with pytest.raises(ConfigError, match=r"^command line: model\.heads\.asis\.fusion_warmup_steps: 5 steps of "
                                          r"warm-up delay instance fusion, which is off"):
        finetune.resolve(str(ASIS_CONFIG), ["model.heads.asis.instance_fusion=false",
                                            "model.heads.asis.fusion_warmup_steps=5"])
    warmup = ASIS_CONFIG.with_name("synthetic_minkunet14a_asis_warmup.yaml")
    heads = finetune.resolve(str(warmup), [])["model"]["heads"]
    assert heads["asis"]["fusion_warmup_steps"] == 200 and heads["asis"]["instance_fusion"]
