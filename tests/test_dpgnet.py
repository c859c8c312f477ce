"""DPGNet's differentiable grouping into cliques (Cheng et al.; after SSN): Q and S (eqs. 1-2)
against a hand computation, the 27-cell neighbourhood against brute force, gradcheck through T
iterations, ASA, the losses on the associations, clique merging, the backbone variant, the
shipped config, and a short fine-tune -> infer -> evaluate."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, check_instance_predictions_reproduce_the_run, finetune_overrides
from voxseg import sparse
from voxseg.evaluation import achievable_segmentation_accuracy
from voxseg.models.cliques import DifferentiableGrouping, associate, clique_neighbourhood
from voxseg.models.heads.dpgnet import DPGNetHead, merge_cliques, per_scan_ids
from voxseg.models.losses.dpgnet import CliqueAffinityLoss, CliqueReconstructionLoss

D64 = torch.float64
e = math.exp


def sparse_tensor(coord, batch, feat):
    coord = torch.as_tensor(coord, dtype=torch.float32)
    return sparse.to_field(coord, torch.as_tensor(feat, dtype=torch.float32), torch.as_tensor(batch), 1.0).sparse()


def rows_of(x, coords):
    """Row of x for each (batch, i, j, k)."""
    table = {tuple(c): r for r, c in enumerate(x.C.tolist())}
    return [table[tuple(c)] for c in coords]


# ----------------------------------------------------------------------------- eqs. 1-2 by hand
def tiny_scene():
    """Sample 0: voxels x = 0, 1, 2, 3 on a line (cells A = {0, 1}, B = {2, 3} at stride 2) and x = 10
    (cell C, 4 cells away: not a neighbour); sample 1: a voxel at x = 0 (cell D, same coordinates
    as A in another sample). Features 2-D."""
    coord = [[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [10, 0, 0], [0, 0, 0]]
    feat = [[0, 0], [1, 0], [2, 1], [3, 1], [7, 7], [5, 5]]
    batch = [0, 0, 0, 0, 0, 1]
    x = sparse_tensor(coord, batch, feat)
    rows = rows_of(x, [[b, *c] for b, c in zip(batch, coord, strict=True)])
    return x, rows


@pytest.mark.parametrize("normalize", ["none", "softmax"])
def test_q_and_s_match_eqs_1_2_by_hand(normalize):
    x, rows = tiny_scene()
    cliques = DifferentiableGrouping(stride=2, iterations=1, normalize=normalize)(x)
    cell = cliques.cell[rows]
    A, B, C, D = cell.tolist()[0], cell.tolist()[2], cell.tolist()[4], cell.tolist()[5]
    assert cell.tolist() == [A, A, B, B, C, D] and len({A, B, C, D}) == 4 and len(cliques.features) == 4
    # S^0 = cell means: A (0.5, 0), B (2.5, 1). ||F - S^0||^2 of voxels 0..3 to A and to B:
    dA, dB = [0.25, 0.25, 3.25, 7.25], [7.25, 3.25, 0.25, 0.25]
    QA, QB = [e(-d) for d in dA], [e(-d) for d in dB]  # eq. 1
    if normalize == "softmax":
        QA, QB = [a / (a + b) for a, b in zip(QA, QB, strict=True)], [b / (a + b) for a, b in zip(QA, QB, strict=True)]
    Q = torch.zeros(6, len(cliques.features), dtype=D64)
    for v in range(4):
        Q[v, A], Q[v, B] = QA[v], QB[v]
    Q[4, C] = e(0) if normalize == "none" else 1.0  # alone in its neighbourhood: distance 0 to its own mean
    Q[5, D] = 1.0
    got = torch.zeros(6, len(cliques.features), dtype=D64)
    for v in range(6):
        for k in range(27):
            if cliques.candidates[rows[v], k] >= 0:
                got[v, cliques.candidates[rows[v], k]] += cliques.association[rows[v], k].double()
    assert torch.allclose(got, Q, atol=1e-6, rtol=1e-5)
    F = [[0, 0], [1, 0], [2, 1], [3, 1]]
    SA = [sum(QA[v] * F[v][c] for v in range(4)) / sum(QA) for c in range(2)]  # eq. 2
    SB = [sum(QB[v] * F[v][c] for v in range(4)) / sum(QB) for c in range(2)]
    S = cliques.features.double()
    assert torch.allclose(S[A], torch.tensor(SA, dtype=D64), atol=1e-6)
    assert torch.allclose(S[B], torch.tensor(SB, dtype=D64), atol=1e-6)
    assert S[C].tolist() == [7, 7] and S[D].tolist() == [5, 5]  # sample 1's voxel never joins A
    assert cliques.hard()[rows].tolist() == [A, A, B, B, C, D]


def dense_reference(F, cell_coord, voxel_cell, batch, stride, iterations, normalize):
    """Eqs. 1-2 on the dense n x m matrix, masked to the 27 cells: an independent implementation."""
    n, m = len(F), len(cell_coord)
    near = np.zeros((n, m), dtype=bool)
    for p in range(n):
        for i in range(m):
            gap = np.abs(cell_coord[i, 1:] - cell_coord[voxel_cell[p], 1:]) // stride
            near[p, i] = cell_coord[i, 0] == batch[p] and gap.max() <= 1
    S = np.stack([F[voxel_cell == i].mean(axis=0) for i in range(m)])
    for _ in range(iterations):
        Q = np.exp(-((F[:, None, :] - S[None]) ** 2).sum(axis=2)) * near
        if normalize == "softmax":
            Q = Q / Q.sum(axis=1, keepdims=True)
        S = (Q.T @ F) / Q.sum(axis=0)[:, None]
    return Q, S, near


@pytest.mark.parametrize("normalize, iterations", [("none", 2), ("softmax", 3)])
def test_t_iterations_match_a_dense_reference(normalize, iterations):
    x, rows = tiny_scene()
    cliques = DifferentiableGrouping(stride=2, iterations=iterations, normalize=normalize)(x)
    F = x.F.double().numpy()
    Q, S, _ = dense_reference(F, cliques.coordinates.numpy(), cliques.cell.numpy(), x.C[:, 0].numpy(), 2,
                              iterations, normalize)
    got = np.zeros_like(Q)
    valid = cliques.candidates >= 0
    got[valid.nonzero()[:, 0].numpy(), cliques.candidates[valid].numpy()] = cliques.association[valid].numpy()
    assert np.allclose(got, Q, atol=1e-6) and np.allclose(cliques.features.numpy(), S, atol=1e-5)
    # pooling another value is eq. 2 with the last Q; scattering back is the row-normalised Q
    values = torch.arange(12, dtype=torch.float32).view(6, 2)
    pooled = cliques.pool(values).double().numpy()
    assert np.allclose(pooled, (Q.T @ values.double().numpy()) / Q.sum(axis=0)[:, None], atol=1e-5)
    back = cliques.scatter(torch.from_numpy(pooled).float()).double().numpy()
    assert np.allclose(back, (Q / Q.sum(axis=1, keepdims=True)) @ pooled, atol=1e-5)


# ----------------------------------------------------------------------------- the neighbourhood
@pytest.mark.parametrize("stride", [2, 3])
def test_candidates_are_exactly_the_27_cells_of_the_own_sample(rng, stride):
    coord = rng.integers(-9, 9, size=(600, 3))
    batch = rng.integers(0, 3, size=600)
    x = sparse_tensor(coord, batch, rng.normal(size=(600, 2)))
    cell, neighbours, cells = clique_neighbourhood(x, stride)
    C, cells = x.C.numpy(), cells.numpy()
    # each voxel's cell is the floor of its coordinates on the coarse grid, in its own sample
    assert np.array_equal(cells[cell.numpy()][:, 0], C[:, 0])
    assert np.array_equal(cells[cell.numpy()][:, 1:], np.floor_divide(C[:, 1:], stride) * stride)
    assert len(np.unique(cells, axis=0)) == len(cells)
    assert len(cells) == len(np.unique(np.c_[C[:, :1], np.floor_divide(C[:, 1:], stride)], axis=0))
    near = (cells[None, :, 0] == cells[:, None, 0]) & (
        np.abs(cells[None, :, 1:] - cells[:, None, 1:]).max(axis=2) <= stride)
    got = np.zeros_like(near)
    rows, cols = np.nonzero(neighbours.numpy() >= 0)
    got[rows, neighbours.numpy()[rows, cols]] = True
    assert np.array_equal(got, near)  # exactly the occupied cells of the 3 x 3 x 3 block, no other
    assert (neighbours[:, 13] == torch.arange(len(cells))).all()  # column 13: the cell itself
    assert near.sum() > len(cells) and (cells[:, 0] > 0).any()  # cells have neighbours; several samples
    cliques = DifferentiableGrouping(stride=stride, iterations=2)(x)
    # a voxel associates only with candidates; the hard clique is one of its 27 cells
    assert (cliques.association[cliques.candidates < 0] == 0).all()
    assert (cliques.association[cliques.candidates >= 0] > 0).any()
    hard = cliques.hard().numpy()
    assert near[cell.numpy(), hard].all()


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("normalize", ["none", "softmax"])
def test_gradcheck_through_t_iterations(rng, normalize):
    coord = rng.integers(0, 4, size=(24, 3))
    x = sparse_tensor(coord, rng.integers(0, 2, size=24), np.zeros((24, 1)))
    cell, neighbours, cells = clique_neighbourhood(x, 2)
    candidates = neighbours[cell]
    assert ((candidates >= 0).sum(dim=1) > 1).float().mean() > 0.5  # most voxels choose among cliques
    F = (0.6 * torch.from_numpy(rng.normal(size=(len(cell), 2)))).requires_grad_(True)
    valid = candidates >= 0

    def grouped(f):
        Q, S = associate(f, candidates, cell, len(cells), 3, normalize)
        return Q[valid], S

    assert torch.autograd.gradcheck(grouped, (F,))
    grouping = DifferentiableGrouping(stride=2, iterations=3, normalize=normalize)

    def pooled_back(f):
        field = SimpleNamespace(F=f, coordinate_manager=x.coordinate_manager, coordinate_map_key=x.coordinate_map_key)
        cliques = grouping(field)
        return cliques.scatter(cliques.pool(f)), cliques.features

    assert torch.autograd.gradcheck(pooled_back, (F,), fast_mode=True)


@pytest.mark.cuda
def test_cuda_matches_cpu(rng):
    coord = rng.integers(-9, 9, size=(500, 3))
    batch = rng.integers(0, 2, size=500)
    feat = rng.normal(size=(500, 3))
    cpu = sparse_tensor(coord, batch, feat)
    gpu = sparse.to_field(torch.as_tensor(coord, dtype=torch.float32).cuda(),
                          torch.as_tensor(feat, dtype=torch.float32).cuda(),
                          torch.as_tensor(batch).cuda(), 1.0).sparse()
    grouping = DifferentiableGrouping(stride=2, iterations=3)
    a, b = grouping(cpu), grouping(gpu)
    order_a = rows_of(cpu, gpu.C.cpu().tolist())
    # the same partition and the same centres, whatever order each device stores voxels in
    key = lambda c: c.coordinates.cpu()[c.hard().cpu()]  # noqa: E731
    assert torch.equal(key(a)[order_a], key(b))
    cells_a = {tuple(c): s for c, s in zip(a.coordinates.tolist(), a.features.tolist(), strict=True)}
    for c, s in zip(b.coordinates.cpu().tolist(), b.features.cpu().tolist(), strict=True):
        assert s == pytest.approx(cells_a[tuple(c)], abs=1e-4)


def test_underflowing_clique_keeps_its_centre():
    # eq. 1 as printed: voxel 1 is 30 away from both centres' features; exp(-900) = 0 in double
    F = torch.tensor([[0.0], [30.0]], dtype=D64)
    candidates = torch.tensor([[0, 1], [1, 0]])
    cell = torch.tensor([0, 1])
    Q, S = associate(F, candidates, cell, 2, 1, "none")
    # S^0 = (0, 30); clique 1 has Z = exp(-900) + exp(-0) = 1 -> S_1 = 30; no NaN anywhere
    assert torch.isfinite(S).all() and S[:, 0].tolist() == [0.0, 30.0]
    Q, S = associate(torch.tensor([[0.0], [30.0]], dtype=D64), torch.tensor([[0, -1], [0, -1]]), torch.tensor([0, 0]),
                     2, 1, "none")
    assert S[1].tolist() == [0.0]  # clique 1 (no voxel, Z = 0) keeps S^0


# ----------------------------------------------------------------------------- ASA
def test_asa_by_hand():
    assert achievable_segmentation_accuracy([3, 3, 7, 7, 9], [0, 0, 1, 1, 2]) == 1.0
    assert achievable_segmentation_accuracy([0, 0, 0, 0], [5, 5, 5, 5]) == 1.0
    # clique 0: {5, 5, 7} -> 2; clique 1: {7, 7} -> 2; clique 2: {none} -> 1: 5 of 6
    assert achievable_segmentation_accuracy([0, 0, 0, 1, 1, 2], [5, 5, 7, 7, 7, -1]) == pytest.approx(5 / 6)
    # no instance is one segment (-1 and -2 alike): clique 0 = {none, none, 4} -> 2; clique 1 = {4, none} -> 1
    assert achievable_segmentation_accuracy([0, 0, 0, 1, 1], [-1, -2, 4, 4, -1]) == pytest.approx(3 / 5)
    # unlabelled points (valid False) count nowhere: clique 0 then holds {-1, 4} -> 1; clique 1 {4, -1} -> 1
    valid = [False, True, True, True, True]
    assert achievable_segmentation_accuracy([0, 0, 0, 1, 1], [-1, -2, 4, 4, -1], valid) == pytest.approx(2 / 4)
    assert math.isnan(achievable_segmentation_accuracy([], []))
    with pytest.raises(ValueError):
        achievable_segmentation_accuracy([0, 1], [0])


# ----------------------------------------------------------------------------- losses
def loss_outputs(S=None):
    """3 voxels, 2 cliques; voxel 0 and 1 hold one point each, voxel 2 two points."""
    return {"g": {"association": torch.tensor([[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]], dtype=D64),
                  "candidates": torch.tensor([[0, 1], [1, 0], [1, 0]]),
                  "clique_features": torch.zeros(2, 2, dtype=D64) if S is None else S,
                  "clique_neighbours": torch.tensor([[0, 1], [1, 0]]),
                  "point_voxel": torch.tensor([0, 1, 2, 2, 0])}}


def test_reconstruction_loss_by_hand():
    out = loss_outputs()
    # points: p0 (voxel 0, label a), p1 (voxel 1, label b), p2, p3 (voxel 2, label b), p4 (voxel 0, unlabelled)
    batch = {"instance": torch.tensor([3, 8, 8, 8, -1]), "segment": torch.tensor([0, 1, 1, 1, -1]),
             "batch": torch.zeros(5, dtype=torch.long)}
    # Q of each point to clique 0 / clique 1: p0 (0.8, 0.2), p1 (0.5, 0.5), p2, p3 (0.9, 0.1)
    Z0, Z1 = 0.8 + 0.5 + 0.9 + 0.9, 0.2 + 0.5 + 0.1 + 0.1
    R0a, R0b, R1a, R1b = 0.8 / Z0, (0.5 + 1.8) / Z0, 0.2 / Z1, (0.5 + 0.2) / Z1
    want = -(math.log(0.8 * R0a + 0.2 * R1a) + math.log(0.5 * R0b + 0.5 * R1b)
             + 2 * math.log(0.9 * R0b + 0.1 * R1b)) / 4
    got = CliqueReconstructionLoss(head="g", stuff="ignore")(out, batch)
    assert got.item() == pytest.approx(want, rel=1e-12)
    # pure cliques reconstruct exactly: loss 0 whatever Q
    pure = {"instance": torch.tensor([3, 3, 3, 3, -1]), **{k: batch[k] for k in ("segment", "batch")}}
    assert CliqueReconstructionLoss(head="g", stuff="ignore")(out, pure).item() == pytest.approx(0.0, abs=1e-12)
    # nothing labelled: a zero that keeps the graph
    out["g"]["association"].requires_grad_(True)
    none = {"instance": torch.full((5,), -1), "segment": torch.full((5,), -1), "batch": batch["batch"]}
    zero = CliqueReconstructionLoss(head="g")(out, none)
    assert zero.item() == 0.0 and zero.requires_grad


def test_affinity_loss_by_hand():
    S = torch.tensor([[0.0, 0.0], [0.3, 0.4]], dtype=D64, requires_grad=True)  # ||S_0 - S_1||^2 = 0.25
    out = loss_outputs(S)
    same = {"instance": torch.tensor([3, 3, 3, 3, -1]), "segment": torch.zeros(5, dtype=torch.long),
            "batch": torch.zeros(5, dtype=torch.long)}
    got = CliqueAffinityLoss(head="g", stuff="ignore")(out, same)
    assert got.item() == pytest.approx(0.25, rel=1e-12)  # -log A = ||S_0 - S_1||^2
    # dominant labels: clique 0 has a 0.8, b 2.3 -> b; clique 1 has a 0.2, b 0.7 -> b: same
    mixed = {"instance": torch.tensor([3, 8, 8, 8, -1]), **{k: same[k] for k in ("segment", "batch")}}
    assert CliqueAffinityLoss(head="g", stuff="ignore")(out, mixed).item() == pytest.approx(0.25, rel=1e-12)
    # voxel 2's points labelled a: clique 0 a (0.8 + 1.8) vs b 0.5 -> a; clique 1 a 0.4 vs b 0.5 -> b: differ
    differ = {"instance": torch.tensor([3, 8, 3, 3, -1]), **{k: same[k] for k in ("segment", "batch")}}
    got = CliqueAffinityLoss(head="g", stuff="ignore")(out, differ)
    assert got.item() == pytest.approx(-math.log(1 - math.exp(-0.25)), rel=1e-12)
    got.backward()
    assert S.grad[1, 0] < 0 < S.grad[0, 0]  # descent pushes the cliques apart


# ----------------------------------------------------------------------------- merging, predict
def test_merge_cliques_constructed_case():
    # a chain 0 - 1 - 2 - 3 - 4 of neighbouring cells; 5 neighbours 0 only
    neighbours = torch.tensor([[0, 1, 5], [1, 0, 2], [2, 1, 3], [3, 2, 4], [4, 3, -1], [5, 0, -1]])
    features = torch.tensor([[0.0], [0.5], [1.0], [3.0], [3.2], [0.1]])
    cls = torch.tensor([0, 0, 0, 0, 0, 1])
    # affinities: 0-1 e^-0.25 = 0.78, 1-2 0.78, 2-3 e^-4 = 0.02, 3-4 0.96; 0-5 differs in class
    assert merge_cliques(features, neighbours, cls, 0.5).tolist() == [0, 0, 0, 1, 1, 2]
    assert merge_cliques(features, neighbours, cls, 0.9).tolist() == [0, 1, 2, 3, 3, 4]
    cls = torch.tensor([0, -1, 0, 0, 0, 0])  # clique 1 is stuff: the chain breaks there; 5 joins 0 now
    assert merge_cliques(features, neighbours, cls, 0.5).tolist() == [0, -1, 1, 2, 2, 0]
    ids, scan = torch.tensor([4, 9, -1, 4, 2, 7]), torch.tensor([0, 0, 0, 1, 1, 1])
    assert per_scan_ids(ids, scan).tolist() == [0, 1, -1, 1, 0, 2]


def test_predict_merges_cliques_into_instances():
    head = DPGNetHead(4, num_classes=3, thing_classes=[0, 1], min_instance_points=3, merge_threshold=0.5)
    # 5 voxels, cliques 0..3; voxel v's candidates (v's clique first); points per voxel 2, 2, 1, 3, 2
    candidates = torch.tensor([[0, 1], [1, 0], [2, 1], [3, -1], [3, -1]])
    association = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [1.0, 0.0], [1.0, 0.0]])
    voxel_logits = torch.tensor([[5.0, 0, 0], [4.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [0, 0, 5.0]])
    inverse = torch.repeat_interleave(torch.arange(5), torch.tensor([2, 2, 1, 3, 2]))
    outputs = {"association": association, "candidates": candidates, "voxel_logits": voxel_logits,
               "logits": voxel_logits[inverse], "embedding": torch.zeros(10, 2), "point_voxel": inverse,
               "clique_features": torch.tensor([[0.0], [0.3], [0.1], [0.0]]),
               "clique_neighbours": torch.tensor([[0, 1, 2], [1, 0, 2], [2, 0, 1], [3, -1, -1]])}
    batch = {"batch": torch.zeros(10, dtype=torch.long)}
    pred = head.predict(outputs, SimpleNamespace(), batch)
    # cliques 0, 1 (class 0, affinity e^-0.09) merge: 4 points; clique 2 (class 1) has 1 point < 3:
    # dropped; clique 3 is stuff
    assert pred["instance"].tolist() == [0, 0, 0, 0, -1, -1, -1, -1, -1, -1]
    assert pred["segment"].tolist() == [0, 0, 0, 0, 1, 2, 2, 2, 2, 2]
    p = voxel_logits.softmax(dim=1)
    assert pred["instance_score"][:4].tolist() == pytest.approx([(p[0, 0] * 2 + p[1, 0] * 2).item() / 4] * 4)
    assert (pred["instance_score"][4:] == 0).all()
    assert pred["clique"].tolist() == [0, 0, 1, 1, 2, 3, 3, 3, 3, 3] and head.timings["cluster_s"] > 0


# ----------------------------------------------------------------------------- backbone, config
def test_dpgnet_backbone_shapes_and_gradients(rng):
    import voxseg.models  # noqa: F401
    from tests.helpers import random_batch
    from voxseg.registry import BACKBONES

    torch.manual_seed(0)
    backbone = BACKBONES.build({"type": "DPGNetMinkUNet14A", "in_channels": 2, "voxel_size": 0.5})
    assert sorted(backbone.grouping) == ["2", "4", "8"] and backbone.out_channels == 96
    batch = random_batch(rng, sizes=(800, 500))
    out = backbone(batch)
    assert out.point.shape == (1300, 96) and out.voxel.tensor_stride == [1, 1, 1] and torch.isfinite(out.point).all()
    assert len(out.voxel.F) == len(torch.unique(out.voxel.C, dim=0))
    out.point.square().mean().backward()
    for level in ("2", "4", "8"):
        assert backbone.grouping[level].embed.weight.grad.abs().sum() > 0  # the grouping is in the graph
    with pytest.raises(ValueError, match="levels"):
        BACKBONES.build({"type": "DPGNetMinkUNet14A", "levels": [16]})


CONFIGS = ROOT / "configs" / "finetune"


def test_shipped_config_resolves_and_builds(monkeypatch):
    import voxseg.models  # noqa: F401
    from voxseg.engine import finetune
    from voxseg.registry import MODELS

    monkeypatch.chdir(ROOT)
    cfg = finetune.resolve(str(CONFIGS / "synthetic_minkunet14a_dpgnet.yaml"), [])
    head = cfg["model"]["heads"]["dpgnet"]
    assert head["type"] == "DPGNetHead" and head["num_classes"] == 12 and head["thing_classes"] == [0, 1]
    asis = finetune.resolve(str(CONFIGS / "synthetic_minkunet14a_asis.yaml"), [])
    assert cfg["train"] == asis["train"] and cfg["data"] == asis["data"]  # the same budget as ASIS
    model = MODELS.build(cfg["model"])
    assert isinstance(model.heads["dpgnet"], DPGNetHead) and model.heads["dpgnet"].grouping.stride == 4
    assert sorted(model.losses) == ["affinity", "ce", "recon"]
    backbone = finetune.resolve(str(CONFIGS / "synthetic_minkunet14a_dpgnet.yaml"),
                                ["model.backbone.type=DPGNetMinkUNet14A"])
    assert type(MODELS.build(backbone["model"]).backbone).__name__ == "DPGNetMinkUNet14A"


def test_checkpoints_of_the_old_type_names_load(tmp_path, monkeypatch):
    """Checkpoints recorded GroupingHead and GroupingMinkUNet14A before the DPGNet rename: loading
    one gives the current names (voxseg.engine.checkpoint.RENAMED_TYPES) and its weights fit."""
    import voxseg.models  # noqa: F401
    from voxseg.engine import checkpoint, finetune
    from voxseg.registry import MODELS

    torch.manual_seed(0)
    head = {"type": "DPGNetHead", "num_classes": 3, "thing_classes": [0], "channels": 8, "embed_dim": 4}
    new = {"type": "Segmentor", "backbone": {"type": "DPGNetMinkUNet14A", "in_channels": 2, "voxel_size": 0.5},
           "heads": {"grouping": head},
           "losses": {"recon": {"type": "CliqueReconstructionLoss", "head": "grouping"}}}
    model = MODELS.build(new)
    old = {**new, "backbone": {**new["backbone"], "type": "GroupingMinkUNet14A"},
           "heads": {"grouping": {**head, "type": "GroupingHead"}}}
    saved = {"format": checkpoint.FORMAT, "config": {"model": old}, "model": model.state_dict()}
    torch.save(saved, tmp_path / "old.pt")
    data = checkpoint.load(tmp_path / "old.pt")
    assert data["config"]["model"] == new
    MODELS.build(data["config"]["model"]).load_state_dict(data["model"])
    record = checkpoint.BackboneRecord.of_config({"model": new})
    assert checkpoint.load_backbone(MODELS.build(new).backbone, tmp_path / "old.pt", record).loaded
    assert checkpoint.migrate_model_config({"type": "ISCC", "backbone": {"type": "GroupingMinkUNet14A"},
                                            "list": [{"type": "GroupingHead"}]}) == {
        "type": "ISCC", "backbone": {"type": "DPGNetMinkUNet14A"}, "list": [{"type": "DPGNetHead"}]}
    monkeypatch.chdir(ROOT)
    resolved = finetune.resolve(str(CONFIGS / "synthetic_minkunet14a_dpgnet.yaml"),
                                ["model.backbone.type=GroupingMinkUNet14A"])  # a config of the old name
    assert resolved["model"]["backbone"]["type"] == "DPGNetMinkUNet14A"


# ----------------------------------------------------------------------------- end to end
def overrides(root, out, **extra):
    """finetune_overrides for four steps of this head, without augmentation, small instances kept."""
    return finetune_overrides(root, out, **{
        "train.max_steps": 4, "train.warmup_steps": 1, "train.val_every": 0, "train.checkpoint_every": 4,
        "train.lr": 0.01, "data.train.transforms": "[]", "evaluator.min_region_size": 5,
        "model.heads.dpgnet.min_instance_points": 5, "model.heads.dpgnet.merge_threshold": 0.05,
        **extra})


def test_dpgnet_finetune_infer_evaluate(tiny_dataset, tmp_path, monkeypatch):
    from voxseg.engine import finetune

    monkeypatch.chdir(ROOT)
    out = tmp_path / "dpgnet"
    finetune.run(finetune.resolve(str(CONFIGS / "synthetic_minkunet14a_dpgnet.yaml"), overrides(tiny_dataset, out)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 4 and {"pq", "ap", "ap50", "mwcov", "miou", "best_pq"} <= set(metrics)

    # ASA of the predicted cliques against the ground-truth instances, scan by scan (as the benchmark reports it)
    import voxseg.data.semantic_kitti_dataset  # noqa: F401
    from voxseg.engine import checkpoint
    from voxseg.engine.inference import predict
    from voxseg.registry import DATASETS, MODELS

    state = checkpoint.load(out / "checkpoints" / "last.pt")
    model = MODELS.build(state["config"]["model"])
    model.load_state_dict(state["model"])
    val = DATASETS.build({**state["config"]["data"]["val"], "transforms": []}, root=tiny_dataset,
                         label_config=state["config"]["data"]["label_config"])
    for _, scan, sample in predict(model, val, torch.device("cpu")):
        clique, gt = scan["clique"], sample["instance"]
        assert clique.min() == 0 and np.array_equal(np.unique(clique), np.arange(clique.max() + 1))
        asa = achievable_segmentation_accuracy(clique, gt, sample["segment"] >= 0)
        # cliques of <= 3 cells of 1.6 m are finer than most instances: ASA well above one segment's
        single = achievable_segmentation_accuracy(np.zeros_like(clique), gt, sample["segment"] >= 0)
        assert single < asa <= 1.0 and asa > 0.9

    check_instance_predictions_reproduce_the_run(out, tiny_dataset, tmp_path, {"panoptic": ("pq", "miou")})
