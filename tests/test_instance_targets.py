"""The stuff rule of the instance losses (voxseg.models.losses.instance_targets) by hand, and that
DiscriminativeLoss and the clique losses both group points by it."""

from __future__ import annotations

import torch

from voxseg.models.losses.asis import DiscriminativeLoss
from voxseg.models.losses.dpgnet import CliqueAffinityLoss, CliqueReconstructionLoss
from voxseg.models.losses.instance_targets import instance_targets


def test_stuff_forms_one_segment_per_scan_and_class():
    batch = {"instance": torch.tensor([0, -1, -1, 2, -1, -1, -1]),
             "segment": torch.tensor([1, 3, 3, 0, 0, -1, 3]),
             "batch": torch.tensor([0, 0, 0, 1, 1, 1, 1])}
    # K = 4 classes; stuff ids start after instance 2: 3 + scan * 4 + class; unlabelled -1
    want = torch.tensor([0, 3 + 0 * 4 + 3, 3 + 0 * 4 + 3, 2, 3 + 1 * 4 + 0, -1, 3 + 1 * 4 + 3])
    assert torch.equal(instance_targets(batch, "segments"), want)
    assert torch.equal(instance_targets(batch, "ignore"), batch["instance"])
    # no instance at all: stuff ids start at 0
    none = {"instance": torch.tensor([-1, -1]), "segment": torch.tensor([0, 1]), "batch": torch.tensor([0, 1])}
    assert torch.equal(instance_targets(none), torch.tensor([0, 1 * 2 + 1]))
    # `ignore` does not read the semantic labels; other keys by name
    assert torch.equal(instance_targets({"instance": batch["instance"]}, "ignore"), batch["instance"])
    renamed = {"obj": batch["instance"], "cls": batch["segment"], "batch": batch["batch"]}
    assert torch.equal(instance_targets(renamed, "segments", target="obj", semantic_target="cls"), want)


def test_both_instance_losses_group_by_the_rule():
    batch = {"instance": torch.tensor([3, -1, -1, 8, -1]), "segment": torch.tensor([0, 1, 1, 1, -1]),
             "batch": torch.zeros(5, dtype=torch.long)}
    ids = instance_targets(batch)
    assert torch.equal(DiscriminativeLoss().instances(batch), ids)
    explicit = {**batch, "instance": ids}
    embedding = torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(DiscriminativeLoss(head="h")({"h": {"embedding": embedding}}, batch),
                       DiscriminativeLoss(head="h", stuff="ignore")({"h": {"embedding": embedding}}, explicit))
    out = {"g": {"association": torch.tensor([[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]], dtype=torch.float64),
                 "candidates": torch.tensor([[0, 1], [1, 0], [1, 0]]),
                 "clique_features": torch.tensor([[0.0, 0.0], [0.3, 0.4]], dtype=torch.float64),
                 "clique_neighbours": torch.tensor([[0, 1], [1, 0]]),
                 "point_voxel": torch.tensor([0, 1, 2, 2, 0])}}
    for loss in (CliqueReconstructionLoss, CliqueAffinityLoss):
        assert torch.equal(loss(head="g")(out, batch), loss(head="g", stuff="ignore")(out, explicit))
