"""Real Velodyne scans through the backbone (skipped where ../shared/data/kitti_real is absent)."""

from __future__ import annotations

import numpy as np
import torch

import voxseg.models  # noqa: F401
from voxseg.data import semantic_kitti as sk
from voxseg.registry import BACKBONES

VOXEL_SIZE = 0.1


def forward_backward(path):
    """MinkUNet14A and a 19-class linear layer, seeded, on one scan: (the backbone's output,
    the logits, the loss, the backbone's parameters with their gradients of a CE loss against
    random labels)."""
    torch.manual_seed(0)
    backbone = BACKBONES.build({"type": "MinkUNet14A", "in_channels": 1, "voxel_size": VOXEL_SIZE})
    head = torch.nn.Linear(backbone.out_channels, 19)
    points = torch.from_numpy(sk.read_scan(path))
    batch = {"coord": points[:, :3], "feat": points[:, 3:], "batch": torch.zeros(len(points), dtype=torch.long)}
    out = backbone(batch)
    logits = head(out.point)
    loss = torch.nn.functional.cross_entropy(logits, torch.randint(0, 19, (len(points),)))
    loss.backward()
    return out, logits, loss, dict(backbone.named_parameters())


def test_minkunet14_forward_backward_on_each_real_scan(kitti_real):
    for path in kitti_real:
        points = sk.read_scan(path)
        assert len(points) > 100_000  # a full HDL-64E sweep
        out, logits, loss, params = forward_backward(path)
        assert logits.shape == (len(points), 19)
        # one voxel row per occupied 0.1 m cell, and each point mapped to the cell it lies in
        cells = np.floor(points[:, :3] / VOXEL_SIZE).astype(np.int64)
        assert len(out.voxel.F) == len(np.unique(cells, axis=0))
        assert np.array_equal(out.voxel.C[out.inverse, 1:].numpy(), cells)
        # the loss reaches every backbone parameter, the stem's kernel first among them
        stem_grad = params["stem.0.kernel"].grad
        assert stem_grad is not None and torch.isfinite(stem_grad).all() and stem_grad.abs().sum() > 0
        for name, p in params.items():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # the same seed gives the same numbers: the forward pass bit for bit, the gradients up to the
    # order in which the sparse convolutions' threads sum them
    _, again_logits, again_loss, again_params = forward_backward(path)
    assert torch.equal(again_logits, logits) and torch.equal(again_loss, loss)
    for name, p in params.items():
        torch.testing.assert_close(again_params[name].grad, p.grad, rtol=1e-4, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")
