"""Probabilistic embeddings (Zhang & Wonka 2021): the Bhattacharyya kernel (eqs. 1-3) against its
closed form and a numerical integral, the losses (eqs. 4-12) against hand computations, the
greedy clustering of eq. 16, the head in a Segmentor, and a short fine-tune -> infer -> evaluate."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, check_instance_predictions_reproduce_the_run, finetune_overrides
from voxseg.models.heads.probabilistic import (
    DETERMINISTIC_LOG_SIGMA,
    ProbabilisticEmbeddingHead,
    bhattacharyya,
    greedy_cluster,
    log_bhattacharyya,
)
from voxseg.models.losses.probabilistic import (
    CenterAwareScoreLoss,
    EntropyRegularizer,
    ProbabilisticInstanceLoss,
    instance_centres,
)

D64 = torch.float64


# ----------------------------------------------------------------------------- the kernel
def closed_form(mu_i, s_i, mu_j, s_j):
    """eq. 1 written out with sigmas (not log sigmas), numpy, one pair; s_* per axis."""
    beta = np.prod((s_i / s_j + s_j / s_i) / 2) ** -0.5
    alpha = 4 * (s_i ** 2 + s_j ** 2)
    return beta * np.exp(-np.sum((mu_i - mu_j) ** 2 / alpha))


def test_kernel_equals_the_closed_form_anisotropic_and_isotropic():
    rng = np.random.default_rng(0)
    mu_i, mu_j = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    s_i, s_j = np.exp(rng.normal(scale=0.7, size=(20, 3))), np.exp(rng.normal(scale=0.7, size=(20, 3)))
    got = bhattacharyya(*(torch.tensor(a) for a in (mu_i, np.log(s_i), mu_j, np.log(s_j)))).numpy()
    want = np.array([closed_form(mu_i[n], s_i[n], mu_j[n], s_j[n]) for n in range(20)])
    assert np.allclose(got, want, rtol=1e-12, atol=0) and want.min() > 1e-9 and want.max() - want.min() > 0.3
    # isotropic: eq. 3, beta = ((s_i/s_j + s_j/s_i)/2)^(-3/2), alpha = 4 (s_i^2 + s_j^2)
    r_i, r_j = s_i[:, :1], s_j[:, :1]
    got = bhattacharyya(*(torch.tensor(a) for a in (mu_i, np.log(r_i), mu_j, np.log(r_j)))).numpy()
    want = ((r_i / r_j + r_j / r_i) / 2)[:, 0] ** -1.5 * np.exp(
        -np.sum((mu_i - mu_j) ** 2, axis=1) / (4 * (r_i ** 2 + r_j ** 2))[:, 0])
    assert np.allclose(got, want, rtol=1e-12, atol=0)


def gauss(x, m, s):
    return np.exp(-0.5 * ((x - m) / s) ** 2) / (math.sqrt(2 * math.pi) * s)


def test_kernel_equals_the_integral_of_sqrt_p_q_1d_and_2d():
    # 1-D: the Bhattacharyya coefficient int sqrt(p q) by the trapezoid rule on a fine grid
    x = np.linspace(-30, 30, 200001)
    for m1, s1, m2, s2 in ((0.0, 1.0, 1.5, 0.5), (0.3, 2.0, -1.0, 2.0), (1.0, 0.7, 1.0, 3.0)):
        integral = np.trapezoid(np.sqrt(gauss(x, m1, s1) * gauss(x, m2, s2)), x)
        got = bhattacharyya(torch.tensor([m1], dtype=D64), torch.tensor([math.log(s1)], dtype=D64),
                            torch.tensor([m2], dtype=D64), torch.tensor([math.log(s2)], dtype=D64))
        assert got.item() == pytest.approx(integral, rel=1e-7), (m1, s1, m2, s2)
    # 2-D anisotropic: a 2-D grid (the density does not factor into the integrand's grid sum trivially)
    g = np.linspace(-12, 12, 1601)
    X, Y = np.meshgrid(g, g, indexing="ij")
    mu_i, s_i, mu_j, s_j = np.array([0.5, -0.2]), np.array([0.6, 1.3]), np.array([-0.4, 0.9]), np.array([1.1, 0.5])
    p = gauss(X, mu_i[0], s_i[0]) * gauss(Y, mu_i[1], s_i[1])
    q = gauss(X, mu_j[0], s_j[0]) * gauss(Y, mu_j[1], s_j[1])
    integral = np.trapezoid(np.trapezoid(np.sqrt(p * q), g, axis=1), g)
    got = bhattacharyya(torch.tensor(mu_i), torch.tensor(np.log(s_i)), torch.tensor(mu_j), torch.tensor(np.log(s_j)))
    assert got.item() == pytest.approx(integral, rel=1e-6)
    # the expansion printed under eq. 1 (no square on mu_i - mu_j) would be far off here
    unsquared = (np.prod((s_i / s_j + s_j / s_i) / 2) ** -0.5
                 * np.exp(-np.sum((mu_i - mu_j) / (4 * (s_i ** 2 + s_j ** 2)))))
    assert abs(unsquared - integral) > 0.05


def test_kernel_is_symmetric_one_on_identical_inputs_and_stable():
    gen = torch.Generator().manual_seed(3)
    mu_i, mu_j = torch.randn(50, 3, generator=gen, dtype=D64), torch.randn(50, 3, generator=gen, dtype=D64)
    s_i, s_j = torch.randn(50, 3, generator=gen, dtype=D64), torch.randn(50, 3, generator=gen, dtype=D64)
    assert torch.equal(log_bhattacharyya(mu_i, s_i, mu_j, s_j), log_bhattacharyya(mu_j, s_j, mu_i, s_i))
    assert torch.equal(log_bhattacharyya(mu_i, s_i, mu_i, s_i), torch.zeros(50, dtype=D64))
    assert (log_bhattacharyya(mu_i, s_i, mu_j, s_j) < 0).all()
    # equal means: kappa = beta, the similarity of the uncertainties (< 1 when they differ)
    beta = bhattacharyya(mu_i, s_i, mu_i, s_j)
    assert torch.allclose(beta, torch.prod((torch.exp(s_i - s_j) + torch.exp(s_j - s_i)) / 2, dim=1) ** -0.5)
    # eq. 7: equal, growing sigmas make any two means similar; float32 extremes stay finite
    far = torch.tensor([[0.0, 0, 0]]), torch.tensor([[5.0, -3, 2]])
    wide = torch.full((1, 3), 20.0)
    assert bhattacharyya(far[0], wide, far[1], wide).item() == pytest.approx(1.0)
    extreme = log_bhattacharyya(far[0], torch.full((1, 3), -40.0), far[1], torch.full((1, 3), 60.0))
    assert torch.isfinite(extreme).all() and extreme.item() < -100


def test_kernel_gradcheck_double():
    gen = torch.Generator().manual_seed(5)
    for sigma_dims in (3, 1):
        args = [torch.randn(6, 3, generator=gen, dtype=D64), 0.5 * torch.randn(6, sigma_dims, generator=gen, dtype=D64),
                torch.randn(6, 3, generator=gen, dtype=D64), 0.5 * torch.randn(6, sigma_dims, generator=gen, dtype=D64)]
        args = [a.requires_grad_(True) for a in args]
        assert torch.autograd.gradcheck(log_bhattacharyya, args)
        assert torch.autograd.gradcheck(bhattacharyya, args)
        assert torch.autograd.gradgradcheck(log_bhattacharyya, args)


# ----------------------------------------------------------------------------- the losses
def tiny_batch():
    """1-D embeddings (D = 1). Scan 0: p0, p1 instance 0 (class 0), p2 stuff (class 2), p3
    ignored; scan 1: p4, p5 instance 5 (class 1); scan 2: p6 stuff only."""
    mu = torch.tensor([[0.0], [2.0], [5.0], [9.0], [0.0], [0.0], [1.0]], dtype=D64)
    log_sigma = torch.log(torch.tensor([[1.0], [1.0], [1.0], [1.0], [1.0], [2.0], [1.0]], dtype=D64))
    batch = {"instance": torch.tensor([0, 0, -1, -1, 5, 5, -1]), "segment": torch.tensor([0, 0, 2, -1, 1, 1, 2]),
             "batch": torch.tensor([0, 0, 0, 0, 1, 1, 2])}
    return mu, log_sigma, batch


# kappa of scan 1's points to their centre: mu_hat = 0, sigma_hat^2 = (1 + 4) / 2 (eq. 4c)
K4 = ((1 / math.sqrt(2.5) + math.sqrt(2.5)) / 2) ** -0.5
K5 = ((2 / math.sqrt(2.5) + math.sqrt(2.5) / 2) / 2) ** -0.5


def test_instance_centres_are_eqs_4b_4c():
    mu = torch.tensor([[0.0, 1], [2, 3], [7, 7]], dtype=D64)
    log_sigma = torch.log(torch.tensor([[1.0, 2], [3, 4], [5, 6]], dtype=D64))
    mu_hat, ls_hat = instance_centres(mu, log_sigma, torch.tensor([0, 0, 1]), 2)
    assert torch.allclose(mu_hat, torch.tensor([[1.0, 2], [7, 7]], dtype=D64))
    assert torch.allclose(ls_hat.exp() ** 2, torch.tensor([[5.0, 10], [25, 36]], dtype=D64))  # mean of variances


def test_instance_loss_matches_eqs_5_6_by_hand():
    mu, log_sigma, batch = tiny_batch()
    out = {"h": {"mu": mu, "log_sigma": log_sigma}}
    # scan 0: centre mu 1, sigma^2 1 -> alpha 8, beta 1: kappa(p0) = kappa(p1) = e^-1/8, kappa(p2) = e^-16/8
    k, k2 = math.exp(-1 / 8), math.exp(-2)
    ce0 = (1 / 8 + 1 / 8 - math.log(1 - k2)) / 3  # N = 3 (p3 is ignored), K = 1
    scan0 = ce0 - math.log(2 * 2 * k / (2 * k + k2 + 2))
    scan1 = -(math.log(K4) + math.log(K5)) / 2 - math.log(2 * (K4 + K5) / (K4 + K5 + 2))
    got = ProbabilisticInstanceLoss(head="h")(out, batch)
    assert got.item() == pytest.approx((scan0 + scan1) / 2, rel=1e-12)  # scan 2 has no instance
    # stuff: ignore drops p2 from scan 0
    ignore0 = (1 / 8 + 1 / 8) / 2 - math.log(2 * 2 * k / (2 * k + 2))
    got = ProbabilisticInstanceLoss(head="h", stuff="ignore")(out, batch)
    assert got.item() == pytest.approx((ignore0 + scan1) / 2, rel=1e-12)
    # two instances in one scan: 1/(NK) over all (point, instance) pairs
    two = {**batch, "instance": torch.tensor([0, 1, -1, -1, 5, 5, -1])}
    # centres: p0 alone (mu 0), p1 alone (mu 2); kappa(p0, c1) = kappa(p1, c0) = e^-4/8, p2: e^-25/8, e^-9/8
    neg = [math.exp(-0.5), math.exp(-0.5), math.exp(-25 / 8), math.exp(-9 / 8)]
    ce = (0 + 0 - sum(math.log(1 - v) for v in neg)) / 6
    scan0 = ce - math.log(2 * 2 / (2 + sum(neg) + 2))
    got = ProbabilisticInstanceLoss(head="h")({"h": {"mu": mu, "log_sigma": log_sigma}}, two)
    assert got.item() == pytest.approx((scan0 + scan1) / 2, rel=1e-12)


def test_instance_loss_gradcheck_and_empty_batch():
    mu, log_sigma, batch = tiny_batch()
    mu = (mu + 0.1 * torch.arange(7, dtype=D64).view(7, 1)).requires_grad_(True)
    log_sigma = (log_sigma + 0.05 * torch.arange(7, dtype=D64).view(7, 1)).requires_grad_(True)
    loss = ProbabilisticInstanceLoss(head="h")
    assert torch.autograd.gradcheck(lambda m, s: loss({"h": {"mu": m, "log_sigma": s}}, batch), (mu, log_sigma))
    none = {**batch, "instance": torch.full((7,), -1)}
    zero = loss({"h": {"mu": mu, "log_sigma": log_sigma}}, none)
    assert zero.item() == 0.0 and zero.requires_grad
    # a point identical to a foreign centre: -ln(1 - kappa) is capped, gradients stay finite
    same = torch.zeros(3, 1, dtype=D64, requires_grad=True)
    value = loss({"h": {"mu": same, "log_sigma": torch.zeros(3, 1, dtype=D64)}},
                 {"instance": torch.tensor([0, -1, -1]), "segment": torch.tensor([0, 1, 1]),
                  "batch": torch.zeros(3, dtype=torch.long)})
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(same.grad).all()


def test_center_aware_loss_matches_eqs_10_12_by_hand():
    mu, log_sigma, batch = tiny_batch()
    logits = torch.tensor([[1.0, 0, 0], [0, 2, 0], [0, 0, 3], [5, 5, 5], [0.5, 1, 0], [0, 0, 1], [1, 2, 3]], dtype=D64)
    logp = torch.log_softmax(logits, dim=1).numpy()
    k = math.exp(-1 / 8)
    L = 3
    scan0 = -(k * logp[0, 0] + k * logp[1, 0] + 1.0 * logp[2, 2]) / (3 * L)  # stuff p2: one-hot
    scan1 = -(K4 * logp[4, 1] + K5 * logp[5, 1]) / (2 * L)
    scan2 = -(logp[6, 2]) / (1 * L)
    mu.requires_grad_(True)
    logits.requires_grad_(True)
    loss = CenterAwareScoreLoss(head="h")
    out = {"h": {"logits": logits, "mu": mu, "log_sigma": log_sigma}}
    got = loss(out, batch)
    assert got.item() == pytest.approx((scan0 + scan1 + scan2) / 3, rel=1e-12)
    q = loss.target_q(out["h"], batch)
    expected = torch.tensor([[k, 0, 0], [k, 0, 0], [0, 0, 1], [0, 0, 0], [0, K4, 0], [0, K5, 0], [0, 0, 1]], dtype=D64)
    assert torch.allclose(q, expected)
    # Q is a fixed target: no gradient reaches the embedding through it
    grad_mu, grad_logits = torch.autograd.grad(got, (mu, logits), allow_unused=True)
    assert grad_mu is None and grad_logits.abs().sum() > 0
    # stuff_target none: stuff rows of Q are 0 (the paper as printed); scan 2 then contributes 0
    got = CenterAwareScoreLoss(head="h", stuff_target="none")(out, batch)
    assert got.item() == pytest.approx((scan0 + logp[2, 2] / 9 + scan1) / 3, rel=1e-12)


def test_entropy_regularizer_is_eq_8():
    gen = torch.Generator().manual_seed(1)
    log_sigma = torch.randn(5, 3, generator=gen, dtype=D64)
    batch = {"batch": torch.tensor([0, 0, 0, 1, 1]), "segment": torch.tensor([0, -1, 1, 1, 1])}
    got = EntropyRegularizer(head="h")({"h": {"log_sigma": log_sigma}}, batch)
    entropy = torch.distributions.Normal(torch.zeros(5, 3, dtype=D64), log_sigma.exp()).entropy().sum(dim=1)
    assert got.item() == pytest.approx(((entropy[:3].sum() + entropy[3:].sum()) / 2).item(), rel=1e-12)  # sum per scan
    labelled = EntropyRegularizer(head="h", points="labelled")({"h": {"log_sigma": log_sigma}}, batch)
    assert labelled.item() == pytest.approx(((entropy[0] + entropy[2] + entropy[3:].sum()) / 2).item(), rel=1e-12)
    batch["instance"] = torch.tensor([-1, -1, 0, 1, -1])  # points 2 and 3 lie in instances
    instances = EntropyRegularizer(head="h", points="instances")({"h": {"log_sigma": log_sigma}}, batch)
    assert instances.item() == pytest.approx(((entropy[2] + entropy[3]) / 2).item(), rel=1e-12)
    mean = EntropyRegularizer(head="h", reduction="mean")({"h": {"log_sigma": log_sigma}}, batch)
    assert mean.item() == pytest.approx(((entropy[:3].sum() / 3 + entropy[3:].sum() / 2) / 2).item(), rel=1e-12)
    iso = torch.randn(4, 1, generator=gen, dtype=D64)  # isotropic: the one sigma for all 3 axes
    got = EntropyRegularizer(head="h")({"h": {"log_sigma": iso}}, {"batch": torch.zeros(4, dtype=torch.long)})
    want = sum(1.5 * math.log(2 * math.pi * math.e) + 3 * s for s in iso[:, 0].tolist())
    assert got.item() == pytest.approx(want, rel=1e-12)


# ----------------------------------------------------------------------------- clustering (eq. 16)
def test_greedy_clustering_hand_made():
    # 1-D, sigma 0.5 except v5: alpha = 2, kappa >= 0.35 <=> |d mu| <= sqrt(-2 ln 0.35) = 1.449
    mu = torch.tensor([[0.0], [0.1], [5.0], [6.3], [10.0], [0.0], [1.6], [1.3]])
    log_sigma = torch.log(torch.tensor([[0.5], [0.5], [0.5], [0.5], [0.5], [0.01], [0.5], [0.5]]))
    score = torch.tensor([[0.9, 0.05], [0.2, 0.1], [0.1, 0.8], [0.3, 0.3], [0.4, 0.1], [0.45, 0.1], [0.2, 0.2],
                          [0.1, 0.1]])
    cluster, column, anchor = greedy_cluster(score, mu, log_sigma, tau=0.35, min_anchor_score=0.5)
    # anchor v0 (0.9, class column 0) takes v1; v5 has the same mean but beta ~ 0.2 < tau; v6 is
    # 1.6 away, v7 1.3 away joins. Next anchor v2 (0.8, column 1) takes v3 (1.3 away). Best left:
    # 0.45 < 0.5: stop.
    assert cluster.tolist() == [0, 0, 1, 1, -1, -1, -1, 0]
    assert column.tolist() == [0, 1] and anchor.tolist() == pytest.approx([0.9, 0.8])
    # the paper's loop (until no point is left): v5 (0.45), v4 (0.4), v6 (0.2) become their own;
    # v7, close to the anchor v6, stays in instance 0: assigned points are masked out
    cluster, column, anchor = greedy_cluster(score, mu, log_sigma, tau=0.35, min_anchor_score=0.0)
    assert cluster.tolist() == [0, 0, 1, 1, 3, 2, 4, 0] and column.tolist() == [0, 1, 0, 0, 0]
    # a lower tau lets v6 join the first instance (kappa = e^-1.28 = 0.28)
    cluster, _, _ = greedy_cluster(score, mu, log_sigma, tau=0.25, min_anchor_score=0.5)
    assert cluster.tolist() == [0, 0, 1, 1, -1, -1, 0, 0]
    cluster, column, _ = greedy_cluster(score, mu, log_sigma, min_anchor_score=0.0, max_instances=1)
    assert cluster.tolist() == [0, 0, -1, -1, -1, -1, -1, 0] and column.tolist() == [0]


def test_predict_assigns_anchor_class_and_score_and_drops_small_instances():
    head = ProbabilisticEmbeddingHead(4, num_classes=3, thing_classes=[0, 1], min_instance_points=30,
                                      min_anchor_score=0.5)
    points_per_voxel = torch.tensor([20, 20, 10, 20, 20])
    inverse = torch.repeat_interleave(torch.arange(5), points_per_voxel)
    voxel_logits = torch.tensor([[4.0, 0, 0], [0, 3.0, 1.0], [0, 5.0, 0], [0, 0, 5.0], [0, 0, 5.0]])
    voxel_mu = torch.tensor([[0.0, 0, 0], [0.2, 0, 0], [9, 9, 9], [20, 0, 0], [0.1, 0.1, 0]])
    voxel_log_sigma = torch.full((5, 3), math.log(0.5))
    outputs = {"logits": voxel_logits[inverse], "mu": voxel_mu[inverse], "log_sigma": voxel_log_sigma[inverse],
               "voxel_logits": voxel_logits, "voxel_mu": voxel_mu, "voxel_log_sigma": voxel_log_sigma}
    features = SimpleNamespace(voxel_batch=torch.zeros(5, dtype=torch.long), inverse=inverse)
    pred = head.predict(outputs, features, {"batch": torch.zeros(len(inverse), dtype=torch.long)})
    per_voxel = lambda key: [pred[key][inverse == v].unique().tolist() for v in range(5)]  # noqa: E731
    # anchor v2 (class 1, 0.987) is alone: 10 points < 30, dropped; anchor v0 (class 0) takes v1 and
    # v4 (a stuff voxel close in embedding space): all take class 0. v1's own argmax was class 1.
    assert per_voxel("instance") == [[0], [0], [-1], [-1], [0]]
    assert per_voxel("segment") == [[0], [0], [1], [2], [0]]
    anchor = voxel_logits.softmax(dim=1)[0, 0]
    assert torch.allclose(pred["instance_score"][inverse == 0], anchor.expand(20))
    assert (pred["instance_score"][pred["instance"] < 0] == 0).all()
    assert torch.equal(pred["embedding"], outputs["mu"]) and head.timings["cluster_s"] > 0


# ----------------------------------------------------------------------------- the head in a model
def model_cfg(**head):
    losses = {"ins": {"type": "ProbabilisticInstanceLoss", "head": "prob"},
              "score": {"type": "CenterAwareScoreLoss", "head": "prob"},
              "reg": {"type": "EntropyRegularizer", "head": "prob"}}
    return {"type": "Segmentor", "backbone": {"type": "MinkUNet14A", "in_channels": 2, "voxel_size": 0.5},
            "heads": {"prob": {"type": "ProbabilisticEmbeddingHead", "num_classes": 4, "thing_classes": [0, 1],
                               "channels": 16, "min_instance_points": 1, "min_anchor_score": 0.0,
                               "max_instances": 20, **head}},
            "losses": losses, "loss_weights": {"reg": 0.001}}


@pytest.mark.parametrize("variant, sigma_dims", [({}, 3), ({"isotropic": True}, 1),
                                                 ({"heteroscedastic": False}, 3),
                                                 ({"isotropic": True, "heteroscedastic": False}, 1),
                                                 ({"deterministic": True, "embed_dim": 6}, 1)])
def test_head_in_a_segmentor_trains_and_predicts(rng, variant, sigma_dims):
    import voxseg.models  # noqa: F401
    from tests.helpers import random_batch
    from voxseg.registry import MODELS

    torch.manual_seed(0)
    model = MODELS.build(model_cfg(**variant))
    head = model.heads["prob"]
    if head.sigma_branch is not None:  # leave the constant start: sigmas then differ per voxel
        torch.nn.init.normal_(head.sigma_branch[1].weight, std=0.3)
    sizes = (700, 500)
    batch = random_batch(rng, sizes)
    batch["segment"] = torch.from_numpy(rng.integers(-1, 4, sum(sizes)))
    ids = torch.from_numpy(rng.integers(-1, 6, sum(sizes)))
    batch["instance"] = torch.where(ids >= 0, ids + 6 * batch["batch"], -1)  # unique per batch
    batch["instance"][batch["segment"] > 1] = -1  # instances only on the thing classes 0, 1
    out = model(batch)
    h = out["heads"]["prob"]
    dim = variant.get("embed_dim", 3)
    assert h["logits"].shape == (1200, 4) and h["mu"].shape == (1200, dim)
    assert h["log_sigma"].shape == (1200, sigma_dims)
    # Table 2: mu = x / coord_scale + tanh(o): within 1 of the voxel's mean position (first 3 dims)
    features = model.backbone(batch)
    position = features.to_voxels(batch["coord"])[features.inverse] / head.coord_scale
    gap = (h["mu"][:, :3] - position).abs()
    assert (gap < 1).all() and gap.max() > 1e-3
    if dim > 3:
        assert (h["mu"][:, 3:].abs() < 1).all()
    if variant.get("deterministic"):
        assert (h["log_sigma"] == DETERMINISTIC_LOG_SIGMA).all()
    elif variant.get("heteroscedastic") is False:  # one Sigma per scan
        for sample in (0, 1):
            rows = h["log_sigma"][batch["batch"] == sample]
            assert torch.allclose(rows, rows[:1].expand_as(rows))
        assert not torch.allclose(h["log_sigma"][0], h["log_sigma"][-1])
    else:
        assert h["log_sigma"].std(dim=0).min() > 1e-3
    assert torch.equal(out["loss"], out["loss_ins"] + out["loss_score"] + 0.001 * out["loss_reg"])
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    model.eval()
    with torch.no_grad():
        pred = model(batch)["pred"]
    assert {"segment", "segment_logits", "embedding", "instance", "instance_score"} <= set(pred)
    inst = pred["instance"]
    assert inst.shape == (1200,) and int(inst.min()) >= -1 and int(inst.max()) >= 0
    for sample in (0, 1):  # ids 0..K-1 per scan; one thing class and one score per instance
        ids = inst[(batch["batch"] == sample) & (inst >= 0)]
        assert torch.equal(torch.unique(ids), torch.arange(int(ids.max()) + 1))
        for i in torch.unique(ids):
            members = (inst == i) & (batch["batch"] == sample)
            assert len(torch.unique(pred["segment"][members])) == 1 and int(pred["segment"][members][0]) in (0, 1)
            assert len(torch.unique(pred["instance_score"][members])) == 1
    assert (pred["instance_score"][inst < 0] == 0).all()


def test_embed_dim_and_thing_classes_are_checked():
    with pytest.raises(ValueError, match="tri-variate"):
        ProbabilisticEmbeddingHead(8, num_classes=3, thing_classes=[0], embed_dim=6)
    with pytest.raises(ValueError, match="thing_classes"):
        ProbabilisticEmbeddingHead(8, num_classes=3, thing_classes=[3])


# ----------------------------------------------------------------------------- end to end
CONFIGS = ROOT / "configs" / "finetune"


def overrides(root, out, **extra):
    """finetune_overrides for four steps of this head, without augmentation, small instances kept."""
    return finetune_overrides(root, out, **{
        "train.max_steps": 4, "train.warmup_steps": 1, "train.val_every": 0, "train.checkpoint_every": 4,
        "train.lr": 0.01, "data.train.transforms": "[]", "evaluator.min_region_size": 5,
        "model.heads.prob.min_instance_points": 5, "model.heads.prob.min_anchor_score": 0.0,
        "model.heads.prob.max_instances": 64,
        **extra})


def test_probabilistic_finetune_infer_evaluate(tiny_dataset, tmp_path, monkeypatch):
    from voxseg.engine import finetune

    monkeypatch.chdir(ROOT)
    out = tmp_path / "prob"
    finetune.run(finetune.resolve(str(CONFIGS / "synthetic_minkunet14a_probabilistic.yaml"),
                                  overrides(tiny_dataset, out)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 4 and {"pq", "ap", "ap50", "mwcov", "miou", "best_pq"} <= set(metrics)

    check_instance_predictions_reproduce_the_run(out, tiny_dataset, tmp_path, {"panoptic": ("pq", "miou")})


def test_extdim_baseline_finetunes(tiny_dataset, tmp_path, monkeypatch):
    from voxseg.engine import finetune

    monkeypatch.chdir(ROOT)
    out = tmp_path / "extdim"
    cfg = finetune.resolve(str(CONFIGS / "synthetic_minkunet14a_extdim.yaml"),
                           overrides(tiny_dataset, out, **{"train.max_steps": 2, "train.checkpoint_every": 2}))
    assert cfg["model"]["heads"]["prob"]["deterministic"] and "reg" not in cfg["model"]["losses"]
    finetune.run(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 2 and {"pq", "ap50", "miou"} <= set(metrics)
    assert all(math.isfinite(metrics[key]) for key in ("pq", "ap50", "miou"))
    # L_Ins and the center-aware loss trained, no L_Reg; the total is their sum (weights 1)
    losses = metrics["train_losses"]
    assert set(losses) == {"loss", "loss_ins", "loss_score"} and all(math.isfinite(v) for v in losses.values())
    assert losses["loss_ins"] > 0
    assert losses["loss"] == pytest.approx(losses["loss_ins"] + losses["loss_score"], rel=1e-5)

    # ExtDim's 6-D embedding and no sigma branch in the checkpoint; training moved the weights
    import voxseg.data.semantic_kitti_dataset  # noqa: F401  (registers the datasets)
    from voxseg.engine import checkpoint
    from voxseg.engine.inference import predict
    from voxseg.registry import DATASETS, MODELS

    state = checkpoint.load(out / "checkpoints" / "last.pt")["model"]
    assert state["heads.prob.center_branch.1.weight"].shape == (6, 64)
    assert not any(key.startswith("heads.prob.sigma_branch.") for key in state)
    torch.manual_seed(cfg["train"]["seed"])  # the run's initial weights
    model = MODELS.build(cfg["model"])
    assert not torch.equal(model.state_dict()["heads.prob.center_branch.1.weight"],
                           state["heads.prob.center_branch.1.weight"])
    model.load_state_dict(state)
    val = DATASETS.build({**cfg["data"]["val"], "transforms": []}, root=tiny_dataset,
                         label_config=cfg["data"]["label_config"])
    [(_, scan, sample)] = predict(model, val, torch.device("cpu"), indices=[0])
    assert scan["embedding"].shape == (len(sample["coord"]), 6) and np.isfinite(scan["embedding"]).all()


@pytest.mark.parametrize("dataset", ["synthetic", "s3dis", "scannet"])
def test_the_shipped_recipes_are_the_papers_objective_plus_cross_entropy(dataset):
    """Every shipped probabilistic recipe trains eq. 17's three terms with the paper's weights and
    the cross-entropy term, weight 1 (synthetic_minkunet14a_probabilistic.yaml says why)."""
    from voxseg.engine import finetune

    model = finetune.resolve(str(CONFIGS / f"{dataset}_minkunet14a_probabilistic.yaml"), [])["model"]
    assert model["loss_weights"] == {"ins": 1.0, "score": 1.0, "reg": 0.001, "ce": 1.0}
    assert model["losses"]["ce"] == {"type": "CrossEntropyLoss", "head": "prob", "target": "segment",
                                     "label_smoothing": 0.0}


def test_the_shipped_recipe_adds_exactly_the_cross_entropy_of_the_class_logits_to_eq_17(rng):
    """synthetic_minkunet14a_probabilistic.yaml (the instance benchmark's probabilistic row) is the
    paper's objective (_printed.yaml, eq. 17: the probabilistic_printed row) plus
    F.cross_entropy of the head's class logits p~ against the point classes, weight 1: the same
    terms otherwise, and the total is their weighted sum."""
    import torch.nn.functional as F

    from tests.helpers import random_batch
    from voxseg.engine import finetune
    from voxseg.registry import MODELS

    base = finetune.resolve(str(CONFIGS / "synthetic_minkunet14a_probabilistic_printed.yaml"), [])["model"]
    with_ce = finetune.resolve(str(CONFIGS / "synthetic_minkunet14a_probabilistic.yaml"), [])["model"]
    assert set(base["losses"]) == {"ins", "score", "reg"}
    assert base["loss_weights"] == {"ins": 1.0, "score": 1.0, "reg": 0.001}  # eq. 17
    assert {k: v for k, v in with_ce["losses"].items() if k != "ce"} == base["losses"]
    assert with_ce["loss_weights"] == {**base["loss_weights"], "ce": 1.0}
    assert {k: v for k, v in with_ce.items() if k not in ("losses", "loss_weights")} == \
        {k: v for k, v in base.items() if k not in ("losses", "loss_weights")}

    batch = random_batch(rng, sizes=(600, 400), channels=1)
    n = len(batch["coord"])
    batch["segment"] = torch.from_numpy(rng.integers(-1, 12, n))
    batch["instance"] = torch.from_numpy(np.where(batch["segment"].numpy() <= 1, rng.integers(0, 3, n), -1))
    torch.manual_seed(0)
    model = MODELS.build(with_ce).train()
    out = model(batch)
    logits = out["heads"]["prob"]["logits"]
    assert torch.equal(out["loss_ce"], F.cross_entropy(logits, batch["segment"], ignore_index=-1).detach())
    weights = with_ce["loss_weights"]
    expected = sum(weights[name] * out[f"loss_{name}"] for name in ("ins", "score", "reg", "ce"))
    assert torch.allclose(out["loss"].detach(), expected, rtol=1e-6, atol=1e-6)
