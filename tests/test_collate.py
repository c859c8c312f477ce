"""Batch collation (nested samples, ids unique across a batch) and to_device."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from voxseg.data import transforms
from voxseg.data.collate import collate, to_device
from voxseg.data.keys import is_id_key, is_point_key, register_point_key

register_point_key("normal")  # a key this test file adds: it must follow the points with no core edit
register_point_key("occupancy")


def points(n: int, **arrays) -> dict:
    return {"coord": np.arange(3 * n, dtype=np.float32).reshape(n, 3), **{k: np.asarray(v) for k, v in arrays.items()}}


def test_registry():
    assert is_point_key("coord") and is_point_key("normal") and not is_point_key("name")
    assert is_id_key("instance") and is_id_key("group") and not is_id_key("segment")
    with pytest.raises(ValueError, match="'segment' is already registered with ids=False"):
        register_point_key("segment", ids=True)


def test_ids_are_shifted_past_earlier_samples_and_minus_one_kept():
    samples = [
        points(4, instance=[0, -1, 2, 2], segment=[1, 1, 0, -1]),
        points(2, instance=[-1, -1], segment=[0, 0]),  # no ids: shifts the next sample by 0
        points(3, instance=[1, 0, -1], segment=[2, 2, 2]),
    ]
    batch = collate(samples)
    assert torch.equal(batch["instance"], torch.tensor([0, -1, 2, 2, -1, -1, 4, 3, -1]))
    assert torch.equal(batch["segment"], torch.tensor([1, 1, 0, -1, 0, 0, 2, 2, 2]))  # not an id key: as is
    assert torch.equal(batch["batch"], torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2]))
    assert torch.equal(batch["offset"], torch.tensor([4, 6, 9]))
    assert batch["batch"].dtype == torch.int64


def test_views_share_ids_within_a_sample_and_not_across_samples():
    def pair(group1, group2, name):
        return {"view1": points(len(group1), feat=np.ones((len(group1), 1), np.float32), group=group1),
                "view2": points(len(group2), feat=np.ones((len(group2), 1), np.float32), group=group2),
                "name": name}

    # sample 0's largest group id is 2, in view2 only: sample 1's groups shift by 3 in both views
    batch = collate([pair([0, 1, -1], [1, 1, 2], "a"), pair([0, -1], [0, 0, 1, -1], "b")])
    assert torch.equal(batch["view1"]["group"], torch.tensor([0, 1, -1, 3, -1]))
    assert torch.equal(batch["view2"]["group"], torch.tensor([1, 1, 2, 3, 3, 4, -1]))
    assert torch.equal(batch["view1"]["batch"], torch.tensor([0, 0, 0, 1, 1]))
    assert torch.equal(batch["view2"]["offset"], torch.tensor([3, 7]))
    assert batch["name"] == ["a", "b"] and batch["view1"]["feat"].shape == (5, 1)


def test_id_keys_are_shifted_each_on_its_own():
    batch = collate([points(2, instance=[0, 0], group=[5, 7]), points(2, instance=[0, 1], group=[0, -1])])
    assert torch.equal(batch["instance"], torch.tensor([0, 0, 1, 2]))
    assert torch.equal(batch["group"], torch.tensor([5, 7, 8, -1]))


def test_query_points_get_their_own_batch_index():
    def sample(n, occupancy):
        q = len(occupancy)
        return {**points(n, feat=np.zeros((n, 2), np.float32)),
                "query": {"coord": np.full((q, 3), n, np.float32), "occupancy": np.asarray(occupancy, np.float32)}}

    batch = collate([sample(3, [1, 0]), sample(1, [0, 0, 1, 1])])
    assert torch.equal(batch["batch"], torch.tensor([0, 0, 0, 1]))
    assert torch.equal(batch["offset"], torch.tensor([3, 4]))
    query = batch["query"]
    assert torch.equal(query["batch"], torch.tensor([0, 0, 1, 1, 1, 1]))
    assert torch.equal(query["offset"], torch.tensor([2, 6]))
    assert torch.equal(query["occupancy"], torch.tensor([1.0, 0, 0, 0, 1, 1]))
    assert torch.equal(query["coord"][:, 0], torch.tensor([3.0, 3, 1, 1, 1, 1]))


def test_values_that_are_not_per_point():
    def sample(n, scale, tag):
        return {**points(n, extra=np.arange(n)), "pose": np.eye(4) * scale,
                "meta": {"scale": scale, "tag": tag, "sizes": np.arange(n), "count": np.int64(n)}}

    batch = collate([sample(2, 1.5, "x"), sample(3, 2.0, "y")])
    assert torch.equal(batch["pose"], torch.from_numpy(np.stack([np.eye(4) * 1.5, np.eye(4) * 2.0])))
    assert isinstance(batch["extra"], list) and len(batch["extra"]) == 2  # not registered: not per point
    meta = batch["meta"]
    assert torch.equal(meta["scale"], torch.tensor([1.5, 2.0], dtype=torch.float64))
    assert torch.equal(meta["count"], torch.tensor([2, 3]))
    assert meta["tag"] == ["x", "y"] and "batch" not in meta  # no coord: not a point set
    assert [s.tolist() for s in meta["sizes"]] == [[0, 1], [0, 1, 2]]  # shapes differ: a list


def test_samples_with_different_keys():
    with pytest.raises(ValueError,
                       match=r"sample 1\['view1'\] has keys \['coord'\], sample 0\['view1'\] \['coord', 'group'\]"):
        collate([{"view1": points(1, group=[0])}, {"view1": points(1)}])


def test_registered_key_is_cropped_and_collated(rng):
    n = 200
    sample = {"coord": rng.uniform(-60, 60, (n, 3)).astype(np.float32), "normal": rng.normal(size=(n, 3)),
              "point_index": np.arange(n), "name": "00/000000"}
    cropped = transforms.RangeCrop(max_range=30.0)(sample, rng)
    kept = cropped["point_index"]
    assert 0 < len(kept) < n and np.array_equal(cropped["normal"], sample["normal"][kept])
    batch = collate([cropped, sample])
    assert batch["normal"].shape == (len(kept) + n, 3)
    assert np.array_equal(batch["normal"].numpy(), np.concatenate([sample["normal"][kept], sample["normal"]]))


def nested_batch() -> dict:
    Pair = collections.namedtuple("Pair", "first second")
    return {"coord": torch.ones(4, 3), "name": ["a"], "views": [torch.arange(3), "text"],
            "pair": Pair(torch.zeros(2), 5), "inner": {"t": (torch.full((2,), 7.0),), "n": 3}}


def check_moved(out: dict, device: str):
    assert out["coord"].device.type == device and out["views"][0].device.type == device
    assert out["pair"].first.device.type == device and out["inner"]["t"][0].device.type == device
    assert out["name"] == ["a"] and out["views"][1] == "text" and out["pair"].second == 5 and out["inner"]["n"] == 3
    assert type(out["pair"]).__name__ == "Pair" and isinstance(out["inner"]["t"], tuple)


def test_to_device_is_recursive():
    check_moved(to_device(nested_batch(), "meta"), "meta")  # the meta device proves the tensors moved
    out = to_device(nested_batch(), torch.device("cpu"))
    assert torch.equal(out["views"][0], torch.arange(3)) and torch.equal(out["inner"]["t"][0], torch.full((2,), 7.0))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_device_on_cuda():
    batch = nested_batch()
    batch["pinned"] = torch.arange(5).pin_memory()
    batch["already"] = torch.arange(2, device="cuda")
    out = to_device(batch, "cuda")
    torch.cuda.synchronize()
    check_moved(out, "cuda")
    assert torch.equal(out["pinned"].cpu(), torch.arange(5)) and out["already"].is_cuda
    assert torch.equal(out["inner"]["t"][0].cpu(), torch.full((2,), 7.0))
