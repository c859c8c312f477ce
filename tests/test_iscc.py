"""ISCC (Zhang, Bai, Li, CVPR 2023) pretraining model: each loss against a hand computation, the
K-bin occupancy labels, Sinkhorn-Knopp marginals, the FIFO queue, the momentum teacher, gradcheck,
and the whole model on a small random sparse batch (every ablation switch row, backward, teacher
update order, load_backbone, the shipped config)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tests.helpers import ROOT
from voxseg import config as cfglib
from voxseg.engine.checkpoint import FORMAT, load_backbone
from voxseg.models.backbones.minkunet import MinkUNet14A
from voxseg.pretrain import iscc
from voxseg.pretrain.iscc import ISCC
from voxseg.pretrain.losses import (
    clustering_loss,
    cosine_scores,
    group_average,
    intensity_loss,
    local_info_nce,
    occupancy_labels,
    occupancy_loss,
    prototype_entropy,
    shared_groups,
)
from voxseg.pretrain.occupancy import nearest_rows
from voxseg.pretrain.queue import FeatureQueue
from voxseg.pretrain.sinkhorn import sinkhorn_knopp, sinkhorn_targets
from voxseg.pretrain.teacher import make_teacher, momentum_update_
from voxseg.registry import MODELS

D64 = torch.float64
e, log = math.e, math.log
CONFIG = ROOT / "configs" / "_base_" / "models" / "minkunet14a_iscc.yaml"


def t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


# ------------------------------------------------------------------------------- loss terms
def test_local_info_nce_by_hand():
    # scene 0: 2 groups; scene 1: 3 groups; scene 2: 1 group (no negative: left out). tau = 1.
    f1 = t([[1, 0], [0, 1], [1, 0], [0, 1], [-1, 0], [0, 1]]) * 2  # scaled: normalised inside
    f2 = t([[1, 0], [0, 1], [0, 1], [0, 1], [-1, 0], [1, 0]])
    scene = torch.tensor([0, 0, 1, 1, 1, 2])
    # scene 0: rows' logits [1, 0] and [0, 1] -> each -log(e / (e + 1)) = log(1 + e^-1)
    scene0 = log(1 + e ** -1)
    # scene 1: logits f1_i.f2_j: [0, 0, -1], [1, 1, 0], [0, 0, 1]; positives on the diagonal
    scene1 = (log(2 + e ** -1) + (log(2 * e + 1) - 1) + (log(2 + e) - 1)) / 3
    got = local_info_nce(f1, f2, scene, temperature=1.0)
    assert got.item() == pytest.approx((scene0 + scene1) / 2, rel=1e-6)  # mean over groups, then scenes
    # the temperature divides the logits: tau = 0.5 doubles them
    assert local_info_nce(f1[:2], f2[:2], scene[:2], 0.5).item() == pytest.approx(log(1 + e ** -2), rel=1e-6)


def test_local_info_nce_without_pairs_is_zero_and_attached():
    f1 = torch.randn(2, 4, requires_grad=True)
    loss = local_info_nce(f1, torch.randn(2, 4), torch.tensor([0, 1]), 0.1)
    assert loss.item() == 0.0 and loss.requires_grad


def test_clustering_loss_and_scores_by_hand():
    assert torch.allclose(cosine_scores(t([[3, 4]]), t([[1, 0], [0, 2]])), t([[0.6, 0.8]]))
    scores = t([[1, 0, -1], [0, 0, 0]])
    target = t([[0.5, 0.5, 0], [0, 0, 1]])
    # tau = 0.5: row 0 logits [2, 0, -2]: -(0.5 (2 - lse) + 0.5 (0 - lse)) = lse - 1; row 1: log 3
    lse = log(e ** 2 + 1 + e ** -2)
    expected = ((lse - 1) + log(3)) / 2
    assert clustering_loss(scores, target, 0.5).item() == pytest.approx(expected, rel=1e-6)
    # the batch's mean assignment of row 0 (softmax [2, 0, -2]) and row 1 (uniform)
    z = e ** 2 + 1 + e ** -2
    mean = [(e ** 2 / z + 1 / 3) / 2, (1 / z + 1 / 3) / 2, (e ** -2 / z + 1 / 3) / 2]
    assert prototype_entropy(scores, 0.5).item() == pytest.approx(-sum(p * log(p) for p in mean), rel=1e-6)
    assert prototype_entropy(torch.zeros(5, 4), 0.1).item() == pytest.approx(log(4), rel=1e-6)


def test_occupancy_bins_and_loss_by_hand():
    # K = 2 (ALSO's occupancy): in front of the surface (offset < 0) = empty 0, on or behind = occupied 1
    offsets = t([-0.3, -1e-4, 0.0, 0.2, 5.0])
    assert occupancy_labels(offsets, 2, 1.0).tolist() == [0, 0, 1, 1, 1]
    # K = 4 over [-1, 1]: edges -0.5, 0, 0.5, half-open [e_k, e_k+1), outer bins open-ended
    offsets = t([-2.0, -0.5, -0.2, 0.0, 0.49, 0.5, 3.0])
    assert occupancy_labels(offsets, 4, 1.0).tolist() == [0, 1, 1, 2, 2, 3, 3]
    # K = 8 over [-2, 2]: width 0.5, bin k = [-2 + 0.5 k, ...) -> 0.7 in [0.5, 1) = bin 5
    assert occupancy_labels(t([0.7, -1.7, -1.2, 1.9, 2.1, -9.0]), 8, 2.0).tolist() == [5, 0, 1, 7, 7, 0]
    logits = t([[0.0, log(3)], [log(2), 0.0]])
    # softmax: [1/4, 3/4] and [2/3, 1/3]; labels 1 and 0
    expected = (-log(3 / 4) - log(2 / 3)) / 2
    assert occupancy_loss(logits, torch.tensor([1, 0])).item() == pytest.approx(expected, rel=1e-6)


def test_intensity_loss_by_hand():
    """ALSO's L1 over the queries with a target: (|0.5 - 0.25| + |0.9 - 1.0|) / 2 = 0.175; the
    free-space query (NaN) has no loss and no gradient; d/dp = sign(p - y) / 2."""
    predicted = t([0.5, 0.2, 0.9]).requires_grad_()
    loss = intensity_loss(predicted, t([0.25, math.nan, 1.0]))
    assert loss.item() == pytest.approx(0.175, rel=1e-6)
    loss.backward()
    assert predicted.grad.tolist() == [0.5, 0.0, -0.5]
    none = t([0.3, 0.4]).requires_grad_()
    empty = intensity_loss(none, t([math.nan, math.nan]))
    assert empty.item() == 0.0 and empty.requires_grad
    empty.backward()
    assert none.grad.tolist() == [0.0, 0.0]


def test_intensity_is_the_occupancy_decoders_extra_output():
    """With use_intensity the decoder has K + 1 outputs: the first K are the occupancy logits, the
    last the intensity regressed at the queries (the same forward, read back by hand)."""
    model = build(use_intensity=True).train()
    batch = random_batch()
    out = model(batch)
    query = batch["query"]
    decoded = model.decoder(model.backbone(batch["view1"]), query["coord"], query["batch"], model.voxel_size)
    assert decoded.shape == (80, 4 + 1)
    assert torch.equal(out["loss_intensity"], intensity_loss(decoded[:, 4], query["surface_intensity"]).detach())
    assert torch.equal(out["loss_occupancy"], occupancy_loss(
        decoded[:, :4], occupancy_labels(query["surface_offset"], 4, model.occupancy_range)).detach())
    assert build().decoder.mlp[-1].out_features == 4  # off: the occupancy logits alone
    with pytest.raises(ValueError, match="needs use_occupancy"):
        build(use_occupancy=False, use_intensity=True)


def test_group_average_and_shared_groups_by_hand():
    values = t([[1, 2], [3, 4], [10, 0], [99, 99], [5, 5], [7, 1]])
    group = torch.tensor([4, 4, 7, -1, 9, 9])
    batch = torch.tensor([0, 0, 0, 0, 1, 1])
    ids, means, scene = group_average(values, group, batch)
    assert ids.tolist() == [4, 7, 9] and scene.tolist() == [0, 0, 1]
    assert torch.equal(means, t([[2, 3], [10, 0], [6, 3]]))  # -1 (none) ignored
    # view 2 holds groups 7, 9, 12: group 4 (view 1 only) and 12 (view 2 only) do not count
    rows1, rows2 = shared_groups(ids, torch.tensor([7, 9, 12]))
    assert rows1.tolist() == [1, 2] and rows2.tolist() == [0, 1]


def test_nearest_rows_stays_in_scene():
    points = t([[0, 0, 0], [5, 0, 0], [0.1, 0, 0]])
    scene = torch.tensor([0, 0, 1])
    rows = nearest_rows(t([[0.2, 0, 0], [4, 0, 0], [0, 0, 0]]), scene, points, scene)
    assert rows.tolist() == [0, 1, 2]  # the last query's nearest point of its own scene is row 2


def test_gradcheck_contrastive_terms():
    torch.manual_seed(0)
    f1 = torch.randn(5, 3, dtype=D64, requires_grad=True)
    f2 = torch.randn(5, 3, dtype=D64, requires_grad=True)
    scene = torch.tensor([0, 0, 1, 1, 1])
    assert torch.autograd.gradcheck(lambda a, b: local_info_nce(a, b, scene, 0.3), (f1, f2))
    prototypes = torch.randn(4, 3, dtype=D64, requires_grad=True)
    target = torch.softmax(torch.randn(5, 4, dtype=D64), 1)
    assert torch.autograd.gradcheck(lambda f, c: clustering_loss(cosine_scores(f, c), target, 0.2), (f1, prototypes))


# ---------------------------------------------------------------------------------- Sinkhorn
def test_sinkhorn_one_iteration_by_hand():
    # exp(S / eps) = [[1, 2], [3, 4]]: /10, columns / (sum * 2), rows / (sum * 2)
    scores = 0.05 * torch.log(t([[1, 2], [3, 4]], D64))
    plan = sinkhorn_knopp(scores, epsilon=0.05, iterations=1)
    assert torch.allclose(plan, t([[3 / 14, 4 / 14], [9 / 34, 8 / 34]], D64), atol=1e-12)


def test_sinkhorn_marginals_and_targets():
    torch.manual_seed(0)
    scores = torch.rand(12, 5, dtype=D64) * 2 - 1  # cosines
    plan = sinkhorn_knopp(scores, epsilon=0.05, iterations=3)
    # rows: exactly 1/R (the last rescaling); columns: approximately 1/M, exact in the limit
    assert torch.allclose(plan.sum(1), torch.full((12,), 1 / 12, dtype=D64), atol=1e-15)
    converged = sinkhorn_knopp(scores, epsilon=0.05, iterations=500)
    assert torch.allclose(converged.sum(0), torch.full((5,), 1 / 5, dtype=D64), atol=1e-9)
    assert (plan.sum(0) - 0.2).abs().max() > (converged.sum(0) - 0.2).abs().max()
    # P = diag(u) exp(S / eps) diag(v): log P - S / eps is a row term plus a column term
    residual = torch.log(plan) - scores / 0.05
    assert torch.allclose(residual - residual[:, :1] - residual[:1, :] + residual[0, 0], torch.zeros_like(residual),
                          atol=1e-9)
    # targets: the batch rows (the last 4) scaled to sum to 1, balanced with the queue's 8
    targets = sinkhorn_targets(scores[8:], scores[:8], epsilon=0.05, iterations=3)
    assert torch.allclose(targets, plan[8:] * 12) and torch.allclose(targets.sum(1), torch.ones(4, dtype=D64))
    assert torch.allclose(sinkhorn_targets(scores, scores[:0]), sinkhorn_knopp(scores) * 12)  # empty queue


# ------------------------------------------------------------------------------------ queue
def test_queue_fifo_wraps_and_checkpoints():
    queue = FeatureQueue(4, 1)
    col = lambda *v: t(v).unsqueeze(1)  # noqa: E731
    assert queue.contents().shape == (0, 1) and int(queue.fill) == 0
    queue.push(col(1, 2, 3))
    assert torch.equal(queue.contents(), col(1, 2, 3)) and int(queue.fill) == 3
    queue.push(col(4, 5))  # 5 wraps around to row 0, overwriting 1
    assert torch.equal(queue.features, col(5, 2, 3, 4)) and torch.equal(queue.contents(), col(2, 3, 4, 5))
    assert int(queue.fill) == 4 and int(queue.position) == 1
    queue.push(col(6, 7, 8, 9, 10, 11))  # more rows than the queue holds: the last 4 stay
    assert torch.equal(queue.contents(), col(8, 9, 10, 11)) and torch.equal(queue.features, col(11, 8, 9, 10))
    resumed = FeatureQueue(4, 1)
    resumed.load_state_dict(queue.state_dict())
    resumed.push(col(12))
    queue.push(col(12))
    assert torch.equal(resumed.contents(), col(9, 10, 11, 12)) and torch.equal(resumed.contents(), queue.contents())


# ---------------------------------------------------------------------------------- teacher
def test_momentum_teacher_exact_ema_no_grad_own_bn_stats():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    teacher = make_teacher(student, lambda: nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)))
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(a, b)
               for a, b in zip(teacher.state_dict().values(), student.state_dict().values(), strict=True))
    stats = {k: v.clone() for k, v in teacher.state_dict().items() if "running" in k or "num_batches" in k}
    student.train(), teacher.train()
    student(torch.randn(8, 2)).square().sum().backward()  # a student step's forward and backward
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in stats.items())  # BN stats untouched
    assert not torch.equal(student[1].running_mean, stats["1.running_mean"])
    # p_t <- m p_t + (1 - m) p_s, exact in binary: 0.75 * 1 + 0.25 * 3 = 1.5; buffers are the teacher's own
    with torch.no_grad():
        for p in student.parameters():
            p.fill_(3.0)
        for p in teacher.parameters():
            p.fill_(1.0)
    momentum_update_(teacher, student, 0.75)
    assert all(torch.equal(p, torch.full_like(p, 1.5)) for p in teacher.parameters())
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in stats.items())
    momentum_update_(teacher, student, 1.0)  # m = 1: frozen
    assert all(torch.equal(p, torch.full_like(p, 1.5)) for p in teacher.parameters())


# ------------------------------------------------------------------------------ whole model
BACKBONE = {"type": "MinkUNet14A", "in_channels": 1, "voxel_size": 0.2}
ROWS = {  # the slides' ablation rows: switches -> the terms forward must return
    "occ-only": (dict(use_local=False, use_global=False, occupancy_bins=8), {"occupancy"}),
    "local-only": (dict(use_global=False, use_occupancy=False), {"local"}),
    "global-only": (dict(use_local=False, use_occupancy=False), {"global"}),
    "full(M)": (dict(use_occupancy=False, num_prototypes=20), {"local", "global"}),
    "ours": (dict(), {"local", "global", "occupancy"}),
    "ours + intensity": (dict(use_intensity=True), {"local", "global", "occupancy", "intensity"}),
    "occ-only + intensity": (dict(use_local=False, use_global=False, use_intensity=True), {"occupancy", "intensity"}),
}
WEIGHTS = {"local": 0.5, "global": 2.0, "occupancy": 3.0, "intensity": 4.0}


def build(**kwargs) -> ISCC:
    torch.manual_seed(0)
    args = dict(backbone=BACKBONE, proj_dim=16, num_prototypes=10, queue_size=32, occupancy_bins=4)
    return MODELS.build({"type": "ISCC", **{**args, **kwargs}})


def view(gen: torch.Generator, scenes: int, points: int, masked: set[int], group_shift: int = 0) -> dict:
    """Points in a 4 m cube per scene, 6 groups per scene (x slabs), ids unique across scenes;
    groups in `masked` are removed (the student's masking)."""
    coord = torch.rand(scenes * points, 3, generator=gen) * 4
    batch = torch.arange(scenes).repeat_interleave(points)
    group = (coord[:, 0] / 4 * 6).long().clamp_max(5) + 6 * batch + group_shift
    group[torch.rand(len(group), generator=gen) < 0.1] = -1
    keep = ~torch.isin(group, torch.tensor(sorted(masked), dtype=torch.long))
    coord, batch, group = coord[keep], batch[keep], group[keep]
    return {"coord": coord, "feat": torch.rand(len(coord), 1, generator=gen), "group": group, "batch": batch,
            "offset": torch.cumsum(torch.bincount(batch, minlength=scenes), 0)}


def random_batch(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    view1 = view(gen, 2, 150, masked={2, 9})  # one masked group per scene, absent from the student's view
    view2 = view(gen, 2, 150, masked=set())
    qbatch = torch.arange(2).repeat_interleave(40)
    intensity = torch.rand(80, generator=gen)
    query = {"coord": torch.rand(80, 3, generator=gen) * 4, "surface_offset": torch.rand(80, generator=gen) * 3 - 1.5,
             "surface_intensity": torch.where(torch.arange(80) % 3 == 2, torch.nan, intensity),  # free space: none
             "batch": qbatch, "offset": torch.tensor([40, 80])}
    return {"view1": view1, "view2": view2, "query": query}


@pytest.mark.parametrize("row", list(ROWS))
def test_switch_rows_return_exactly_their_terms(row):
    switches, terms = ROWS[row]
    model = build(**switches, loss_weights=WEIGHTS).train()
    out = model(random_batch())
    extra = {"prototype_entropy"} if "global" in terms else set()
    assert set(out) == {"loss", "queue_fill", *extra, *(f"loss_{name}" for name in terms)}
    assert all(torch.isfinite(v).all() for v in out.values())
    total = sum(WEIGHTS[name] * out[f"loss_{name}"] for name in terms)
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    assert all(not out[f"loss_{name}"].requires_grad for name in terms)
    assert hasattr(model, "teacher") == bool(terms & {"local", "global"})
    out["loss"].backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_batch_without_shared_groups_gives_zero_contrastive_terms():
    model = build().train()
    batch = random_batch()
    batch["view2"]["group"] = torch.full_like(batch["view2"]["group"], -1)  # no group in both views
    out = model(batch)
    assert out["loss_local"].item() == 0.0 and out["loss_global"].item() == 0.0 and int(out["queue_fill"]) == 0
    assert torch.isfinite(out["loss_occupancy"]) and out["loss"].item() == pytest.approx(out["loss_occupancy"].item())
    out["loss"].backward()


def test_teacher_follows_only_momentum_update_and_queue_fills_in_training(monkeypatch):
    model = build()
    batch = random_batch()
    teacher_stats = {k: v.clone() for k, v in model.teacher.state_dict().items() if "running" in k}
    model.train()
    model.backbone(batch["view1"])  # a student forward leaves the teacher's BN statistics alone
    assert all(torch.equal(model.teacher.state_dict()[k], v) for k, v in teacher_stats.items())

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    before = [p.clone() for p in model.teacher.parameters()]
    out = model(batch)
    shared = len(shared_groups(torch.unique(batch["view1"]["group"][batch["view1"]["group"] >= 0]),
                               torch.unique(batch["view2"]["group"][batch["view2"]["group"] >= 0]))[0])
    assert shared == 10 and int(out["queue_fill"]) == shared  # 12 groups, 2 masked in view 1
    out["loss"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.teacher.parameters(), strict=True))
    model.momentum_update()
    students = [*model.backbone.parameters(), *model.projector.parameters()]
    assert len(students) == len(before)
    for old, new, s in zip(before, model.teacher.parameters(), students, strict=True):
        assert torch.allclose(new, 0.999 * old + 0.001 * s.detach(), rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.teacher.parameters(), strict=True))

    model.eval()
    with torch.no_grad():
        assert int(model(batch)["queue_fill"]) == shared  # no queue update outside training
    model.train()
    seen = []  # queue rows the targets were balanced against: the contents before this step's push
    monkeypatch.setattr(iscc, "sinkhorn_targets", lambda b, q, *a: seen.append(len(q)) or sinkhorn_targets(b, q, *a))
    assert int(model(batch)["queue_fill"]) == 2 * shared and seen == [shared]


def test_under_ddp_sinkhorn_balances_the_global_batch_and_every_queue_gets_it(monkeypatch):
    """In a world of two, as SwAV and MoCo: the targets are this process's rows of Sinkhorn over
    the queue and every process's teacher features, and the queue gets all of them in rank order."""
    model = build(queue_size=64).train()
    other = torch.nn.functional.normalize(torch.randn(7, 16, generator=torch.Generator().manual_seed(3)), dim=1)
    seen = {}

    def gather(rows):  # this process is rank 1 of 2; rank 0 holds `other`
        seen.setdefault("f2", rows.clone())
        return torch.cat([other, rows]), len(other)

    def loss(scores, target, tau):
        seen.setdefault("target", target)
        return clustering_loss(scores, target, tau)

    monkeypatch.setattr(iscc, "all_gather_rows", gather)
    monkeypatch.setattr(iscc, "clustering_loss", loss)
    model(random_batch())
    f2 = seen["f2"]
    assert len(f2) == 10 and torch.equal(model.queue.contents(), torch.cat([other, f2]))
    everyone = cosine_scores(torch.cat([other, f2]), model.prototypes.detach())
    expected = sinkhorn_targets(everyone, everyone[:0])[len(other):]
    assert torch.equal(seen["target"], expected)
    assert not torch.allclose(expected, sinkhorn_targets(everyone[len(other):], everyone[:0]))  # not the local batch's
    # the next step balances against the gathered queue
    model(random_batch(1))
    assert int(model.queue.fill) == 2 * (7 + 10)


def test_load_backbone_reads_the_student(tmp_path: Path):
    model = build()
    with torch.no_grad():  # make the teacher differ from the student
        for p in model.teacher.parameters():
            p.add_(1.0)
    # as the training tool's checkpoints (voxseg.engine.checkpoint.save): format, config, model
    checkpoint = {"format": FORMAT, "config": {"model": {"type": "ISCC", "backbone": BACKBONE}},
                  "model": model.state_dict()}
    torch.save(checkpoint, tmp_path / "pretrain.pt")
    fresh = MinkUNet14A(in_channels=1, voxel_size=0.2)
    report = load_backbone(fresh, tmp_path / "pretrain.pt")
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_shipped_config_validates_and_builds():
    @dataclasses.dataclass
    class Schema:
        model: cfglib.Component

    resolved = cfglib.validate(cfglib.load(CONFIG), Schema)["model"]
    assert resolved["momentum"] == 0.999 and resolved["occupancy_bins"] == 32 and resolved["num_prototypes"] == 100
    model = MODELS.build(dict(resolved, queue_size=8))
    assert model.use_local and model.use_global and model.use_occupancy and model.voxel_size == 0.05
    assert not model.use_intensity and resolved["loss_weights"]["intensity"] == 1.0  # off: the slides' method
    with pytest.raises(cfglib.ConfigError, match="occupancy_bins"):
        cfglib.validate(cfglib.load(CONFIG, ["model.occupancy_bins=1"]), Schema)
    with pytest.raises(ValueError, match="at least one"):
        build(use_local=False, use_global=False, use_occupancy=False)
