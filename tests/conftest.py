"""Shared fixtures: a tiny synthetic dataset (generated once per session) and the real KITTI scans."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import ROOT
from voxseg import sparse


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Two short synthetic sequences at a quarter of KITTI's azimuth resolution (~30k points/scan)."""
    from voxseg.synthetic import SyntheticSpec, generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return generate_dataset(root, SyntheticSpec({"00": 6, "01": 3}, seed=7, azimuth_steps=512), progress=False)


def kitti_real_dir() -> Path | None:
    """../shared/data/kitti_real or $VOXSEG_KITTI_REAL: three real HDL-64E scans (no labels)."""
    candidates = [os.environ.get("VOXSEG_KITTI_REAL"), ROOT.parent / "shared" / "data" / "kitti_real"]
    for c in candidates:
        if c and Path(c).is_dir() and sorted(Path(c).glob("*.bin")):
            return Path(c)
    return None


@pytest.fixture(scope="session")
def kitti_real() -> list[Path]:
    directory = kitti_real_dir()
    if directory is None:
        pytest.skip("real KITTI scans not found (set VOXSEG_KITTI_REAL or provide ../shared/data/kitti_real)")
    return sorted(directory.glob("*.bin"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def one_thread():
    """One CPU thread in the test process (give the tools it compares against --threads 1): with
    several, MinkowskiEngine's CPU kernels sum in a varying order (voxseg.sparse.set_threads), and
    predictions compared exactly could differ in their last bits."""
    before = torch.get_num_threads()
    sparse.set_threads(1)
    yield
    sparse.set_threads(before)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run only where both torch and MinkowskiEngine have CUDA."""
    from voxseg.engine.device import cuda_usable

    if cuda_usable():
        return
    reason = pytest.mark.skip(reason="needs a CUDA GPU and a CUDA build of MinkowskiEngine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(reason)
