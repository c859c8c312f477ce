"""Real Velodyne scans through the backbone (skipped where ../shared/data/kitti_real is absent)."""

from __future__ import annotations

import torch

import voxseg.models  # noqa: F401
from voxseg.data import semantic_kitti as sk
from voxseg.registry import BACKBONES


def test_minkunet14_forward_backward_on_each_real_scan(kitti_real):
    torch.manual_seed(0)
    backbone = BACKBONES.build({"type": "MinkUNet14A", "in_channels": 1, "voxel_size": 0.1})
    head = torch.nn.Linear(backbone.out_channels, 19)
    for path in kitti_real:
        points = torch.from_numpy(sk.read_scan(path))
        assert len(points) > 100_000  # a full HDL-64E sweep
        batch = {"coord": points[:, :3], "feat": points[:, 3:], "batch": torch.zeros(len(points), dtype=torch.long)}
        backbone.zero_grad()
        logits = head(backbone(batch).point)
        assert logits.shape == (len(points), 19)
        loss = torch.nn.functional.cross_entropy(logits, torch.randint(0, 19, (len(points),)))
        loss.backward()
        stem_grad = backbone.stem[0].kernel.grad
        assert stem_grad is not None and torch.isfinite(stem_grad).all() and stem_grad.abs().sum() > 0
