"""voxseg.clustering.mean_shift against scikit-learn's MeanShift(bandwidth, bin_seeding=True)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import MeanShift
from sklearn.cluster._mean_shift import get_bin_seeds
from sklearn.metrics import adjusted_rand_score

from voxseg.clustering import bin_seeds, mean_shift
from voxseg.clustering.mean_shift import _merge

H = 0.6


def blobs(n: int, centres: np.ndarray, sigma: float, seed: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = sigma * rng.standard_normal((n, centres.shape[1]))
    return (centres[rng.integers(0, len(centres), n)] + noise).astype(dtype)


def sklearn(x: np.ndarray, bandwidth: float = H, **kwargs) -> MeanShift:
    return MeanShift(bandwidth=bandwidth, bin_seeding=True, **kwargs).fit(x)


def ours(x: np.ndarray, bandwidth: float = H, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    labels, modes = mean_shift(torch.from_numpy(x), bandwidth, **kwargs)
    assert labels.dtype == torch.long and modes.dtype == torch.from_numpy(x).dtype
    return labels.numpy(), modes.numpy()


def test_separated_blobs_as_sklearn():
    corners = np.array([[i >> d & 1 for d in range(5)] for i in range(8)], dtype=float) * 3.0
    x = blobs(600, corners, 0.12, seed=0)
    labels, modes = ours(x)
    assert len(modes) == 8
    assert adjusted_rand_score(sklearn(x).labels_, labels) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_overlapping_blobs_as_sklearn(seed):
    """Centres 0-2 apart with sigma 0.25: windows overlap, modes merge, seeds wander."""
    x = blobs(300, np.random.default_rng(seed).uniform(0, 2, (6, 5)), 0.25, seed)
    labels, modes = ours(x)
    reference = sklearn(x)
    assert len(modes) == len(reference.cluster_centers_) > 3
    assert adjusted_rand_score(reference.labels_, labels) >= 0.98


@pytest.mark.parametrize("dtype, atol", [(np.float32, 1e-5), (np.float64, 1e-9)])
@pytest.mark.parametrize("kwargs", [{}, {"min_bin_freq": 3}, {"max_iter": 0}, {"max_iter": 2}])
def test_modes_as_sklearn(kwargs, dtype, atol):
    """Same modes in the same order (so the same labels), with sklearn's min_bin_freq and its
    max_iter (max_iter + 1 means per seed)."""
    x = blobs(500, np.random.default_rng(7).uniform(0, 3, (8, 5)), 0.2, seed=7, dtype=dtype)
    labels, modes = ours(x, **kwargs)
    reference = sklearn(x, **kwargs)
    assert modes.shape == reference.cluster_centers_.shape
    np.testing.assert_allclose(modes, reference.cluster_centers_, rtol=0, atol=atol)
    np.testing.assert_array_equal(labels, reference.labels_)


@pytest.mark.parametrize("dims, n", [(2, 300), (8, 300), (5, 40)])
def test_first_step_from_any_seeds(dims, n):
    """Paths where the first step is not enumerated from cell centres: 8-D points, and points
    so sparse that each has a cell of its own (sklearn then seeds with the points)."""
    spread = 4.0 if n > 40 else 40.0
    x = blobs(n, np.random.default_rng(dims).uniform(0, spread, (5, dims)), 0.2, seed=dims)
    labels, modes = ours(x)
    reference = sklearn(x)
    np.testing.assert_allclose(modes, reference.cluster_centers_, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(labels, reference.labels_)


def test_far_outliers_as_sklearn():
    """Cells spread over 2 * 4000 / h per coordinate: their keys would overflow int64, so they
    are renumbered and the first step goes through candidate lists."""
    x = blobs(300, np.random.default_rng(9).uniform(0, 3, (4, 5)), 0.2, seed=9)
    x = np.concatenate([x, np.full((2, 5), -4000.0, dtype=np.float32), np.full((1, 5), 4000.0, dtype=np.float32)])
    labels, modes = ours(x)
    reference = sklearn(x)
    np.testing.assert_allclose(modes, reference.cluster_centers_, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(labels, reference.labels_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("min_bin_freq", [1, 2])
def test_bin_seeds_equal_sklearn(dtype, min_bin_freq):
    x = (np.random.default_rng(1).standard_normal((3000, 5)) * 2).astype(dtype)
    seeds = bin_seeds(torch.from_numpy(x), H, min_bin_freq).numpy()
    expected = get_bin_seeds(x, H, min_bin_freq)
    assert seeds.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(seeds, expected)


def test_bin_seeds_are_the_points_when_every_cell_has_one():
    x = torch.arange(15.0).reshape(5, 3)
    assert bin_seeds(x, H) is x


@pytest.mark.parametrize("copies", [1, 2])
def test_window_boundary_is_included(copies):
    """Points exactly h apart share their windows (||x - m|| <= h), so both seeds climb to their
    midpoint; with < they would stay apart. One copy: every point has a cell of its own and
    seeds; two: seeds are the cell centres."""
    x = np.repeat(np.array([[0, 0, 0, 0, 0], [0.5, 0, 0, 0, 0], [9, 9, 9, 9, 9]], dtype=np.float32), copies, axis=0)
    labels, modes = ours(x, 0.5)
    np.testing.assert_array_equal(modes, [[0.25, 0, 0, 0, 0], [9, 9, 9, 9, 9]])  # 2 copies of 2 points, then 1
    np.testing.assert_array_equal(labels, sklearn(x, 0.5).labels_)


def test_merge_removes_modes_exactly_h_apart():
    """sklearn's post-processing drops a mode within h of a stronger one, h included."""
    modes = torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.25, 0.0]])
    kept = _merge(modes, torch.tensor([1, 2, 3]), 0.5)
    assert torch.equal(kept, torch.tensor([[1.25, 0.0], [0.5, 0.0]]))


def test_modes_farther_than_h_are_kept():
    """Float32 0.6 is a little more than 0.6: sklearn keeps both modes (float64 distances)."""
    x = np.array([[0, 0, 0, 0, 0], [0.6, 0, 0, 0, 0], [5, 5, 5, 5, 5]], dtype=np.float32)
    labels, modes = ours(x)
    assert len(modes) == 3
    np.testing.assert_array_equal(labels, sklearn(x).labels_)


def test_empty():
    labels, modes = mean_shift(torch.zeros(0, 5), H)
    assert labels.shape == (0,) and labels.dtype == torch.long and modes.shape == (0, 5)


def test_single_point():
    x = np.array([[0.3, -1.2, 4.0, 0.0, 2.5]], dtype=np.float32)
    labels, modes = ours(x)
    np.testing.assert_array_equal(labels, [0])
    np.testing.assert_array_equal(modes, x)


@pytest.mark.parametrize("value", [0.0, 0.29])
def test_identical_points(value):
    """At 0.29 the cell centre (0) is sqrt(5) 0.29 > h from the points: sklearn raises, voxseg
    falls back to the points as seeds."""
    x = np.full((10, 5), value, dtype=np.float32)
    labels, modes = ours(x)
    np.testing.assert_array_equal(labels, np.zeros(10))
    np.testing.assert_array_equal(modes, x[:1])
    if value:
        with pytest.raises(ValueError, match="No point was within bandwidth"):
            sklearn(x)


def test_chunking_does_not_change_results():
    x = torch.from_numpy(blobs(800, np.random.default_rng(3).uniform(0, 4, (10, 5)), 0.2, seed=3))
    whole = mean_shift(x, H, max_pairs=1 << 40)
    for max_pairs in (100, 3000):  # down to a few seeds (or a part of one) at a time
        chunked = mean_shift(x, H, max_pairs=max_pairs)
        assert torch.equal(chunked[0], whole[0]) and torch.equal(chunked[1], whole[1])


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="bandwidth"):
        mean_shift(torch.zeros(3, 5), 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        mean_shift(torch.tensor([[0.0, float("nan")]]), H)
    with pytest.raises(ValueError, match="floating-point"):
        mean_shift(torch.zeros(3, 5, dtype=torch.long), H)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.from_numpy(blobs(5000, np.random.default_rng(4).uniform(0, 4, (20, 5)), 0.2, seed=4))
    cpu = mean_shift(x, H)
    cuda = mean_shift(x.cuda(), H)
    assert cuda[0].is_cuda and cuda[1].is_cuda
    assert torch.equal(cuda[0].cpu(), cpu[0])
    torch.testing.assert_close(cuda[1].cpu(), cpu[1], rtol=0, atol=1e-6)
