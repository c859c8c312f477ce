"""The MinkUNet family: built from config, random sparse points in, per-point features out."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import voxseg.models  # noqa: F401  (registers the backbones)
from tests.helpers import ROOT, random_batch
from voxseg import sparse
from voxseg.models.backbones.minkunet import MinkUNetBase
from voxseg.registry import BACKBONES

EXPECTED_OUT = {"14A": 96, "14B": 128, "14C": 128, "14D": 384, "18A": 96, "18B": 128, "18C": 128, "18D": 384,
                "34A": 64, "34B": 32, "34C": 96, "50": 384}
EXPECTED_DEPTH = {"14": (1,) * 8, "18": (2,) * 8, "34": (2, 3, 4, 6, 2, 2, 2, 2), "50": (2, 3, 4, 6, 2, 2, 2, 2)}


def test_family_is_registered_with_example_widths():
    names = {n for n in BACKBONES.names() if n.startswith("MinkUNet")}
    assert names == {f"MinkUNet{k}" for k in EXPECTED_OUT}
    for key, out in EXPECTED_OUT.items():
        cls = BACKBONES.get(f"MinkUNet{key}")
        assert issubclass(cls, MinkUNetBase) and cls.LAYERS == EXPECTED_DEPTH[key[:2]]
        assert cls(in_channels=1).out_channels == out


@pytest.mark.parametrize("name", ["MinkUNet14A", "MinkUNet18B", "MinkUNet34C"])
def test_forward_backward_shapes(name, rng):
    backbone = BACKBONES.build({"type": name, "in_channels": 2, "voxel_size": 0.5})
    batch = random_batch(rng)
    features = backbone(batch).point
    assert features.shape == (2400, EXPECTED_OUT[name[-3:]])
    assert torch.isfinite(features).all()
    features.square().mean().backward()
    grads = [p.grad for p in backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_points_sharing_a_voxel_share_features(rng):
    backbone = BACKBONES.build({"type": "MinkUNet14A", "in_channels": 2, "voxel_size": 0.5}).eval()
    batch = random_batch(rng, sizes=(800,))
    twin = {k: torch.cat([v, v]) for k, v in batch.items()}  # every point twice: same voxel, same features
    with torch.no_grad():
        out = backbone(twin).point
    assert torch.equal(out[:800], out[800:])
    assert not torch.allclose(out[0], out[1])  # different voxels differ


def test_samples_in_a_batch_do_not_interact(rng):
    """In eval mode a sample's features are the same alone or batched with another sample."""
    backbone = BACKBONES.build({"type": "MinkUNet14A", "in_channels": 2, "voxel_size": 0.5}).eval()
    batch = random_batch(rng)
    first = {k: v[:1500] for k, v in batch.items()}
    with torch.no_grad():
        together, alone = backbone(batch).point[:1500], backbone(first).point
    assert torch.allclose(together, alone, atol=1e-5)


def test_voxelization_averages_and_slices_back():
    """Two points in voxel (0,0,0) with features 1 and 3, one in voxel (2,0,0) with 5."""
    coord = torch.tensor([[0.05, 0.02, 0.01], [0.09, 0.08, 0.07], [0.25, 0.0, 0.0]])
    feat = torch.tensor([[1.0], [3.0], [5.0]])
    field = sparse.to_field(coord, feat, torch.zeros(3, dtype=torch.long), voxel_size=0.1)
    voxels = field.sparse()
    by_coord = {tuple(c.tolist()): f.item() for c, f in zip(voxels.C, voxels.F, strict=True)}
    assert by_coord == {(0, 0, 0, 0): 2.0, (0, 2, 0, 0): 5.0}
    assert voxels.slice(field).F.squeeze(1).tolist() == [2.0, 2.0, 5.0]


def minkunet_parameters(in_channels: int, bottleneck: bool, layers: tuple, planes: tuple, init_dim: int = 32) -> int:
    """The parameter count of MinkowskiEngine's examples/minkunet.py network (without its final
    classifier) from its depths and widths: convolutions k^3 * c_in * c_out without bias, batch
    norm 2 * c; BasicBlock two 3^3 convolutions, Bottleneck 1^3, 3^3 and 1^3 to 4 * planes."""
    conv = lambda k, a, b: k ** 3 * a * b  # noqa: E731
    expansion = 4 if bottleneck else 1

    def block(inplanes: int, p: int) -> int:
        if bottleneck:
            return conv(1, inplanes, p) + conv(3, p, p) + conv(1, p, 4 * p) + 2 * (p + p + 4 * p)
        return conv(3, inplanes, p) + conv(3, p, p) + 2 * (p + p)

    def stage(inplanes: int, p: int, blocks: int) -> int:
        projection = conv(1, inplanes, p * expansion) + 2 * p * expansion if inplanes != p * expansion else 0
        return projection + block(inplanes, p) + (blocks - 1) * block(p * expansion, p)

    total, width = conv(5, in_channels, init_dim) + 2 * init_dim, init_dim
    for s in range(4):  # encoder: a stride-2 convolution, then the stage
        total += conv(2, width, width) + 2 * width + stage(width, planes[s], layers[s])
        width = planes[s] * expansion
    skips = [planes[2] * expansion, planes[1] * expansion, planes[0] * expansion, init_dim]
    for s in range(4):  # decoder: a stride-2 transposed convolution, the skip concatenated, the stage
        p = planes[4 + s]
        total += conv(2, width, p) + 2 * p + stage(p + skips[s], p, layers[4 + s])
        width = p * expansion
    return total


@pytest.mark.parametrize("name", ["MinkUNet14A", "MinkUNet34C", "MinkUNet50"])
def test_parameter_count_follows_from_depths_and_widths(name):
    cls = BACKBONES.get(name)
    backbone = BACKBONES.build({"type": name, "in_channels": 2})
    expected = minkunet_parameters(2, name == "MinkUNet50", cls.LAYERS, cls.PLANES)
    assert sum(p.numel() for p in backbone.parameters()) == expected


def test_minkunet50_runs_forward_and_backward_from_config(rng):
    """The bottleneck network: 96 * 4 features per point, gradients to every parameter."""
    backbone = BACKBONES.build({"type": "MinkUNet50", "in_channels": 2, "voxel_size": 0.5})
    features = backbone(random_batch(rng, sizes=(300, 200))).point
    assert features.shape == (500, 384) and torch.isfinite(features).all()
    features.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in backbone.parameters())


def test_input_checks(rng):
    backbone = BACKBONES.build({"type": "MinkUNet14A", "in_channels": 3})
    with pytest.raises(ValueError, match="expects 3 input channels, got 2"):
        backbone(random_batch(rng))
    with pytest.raises(ValueError, match="voxel_size > 0"):
        BACKBONES.build({"type": "MinkUNet14A", "voxel_size": 0.0})


def test_output_maps_points_to_stride_one_voxels(rng):
    """One voxelization: `point` rows are the voxel rows `inverse` names, as ME's slice gives them."""
    backbone = BACKBONES.build({"type": "MinkUNet14A", "in_channels": 2, "voxel_size": 0.5}).eval()
    batch = random_batch(rng)
    with torch.no_grad():
        out = backbone(batch)
    assert out.voxel.tensor_stride == [1, 1, 1]
    assert torch.equal(out.point, out.voxel.slice(out.field).F)
    assert torch.equal(out.point, out.voxel.F[out.inverse])
    voxel_of_point = torch.floor(batch["coord"] / 0.5).int()
    assert torch.equal(out.voxel.C[out.inverse, 1:], voxel_of_point)
    assert torch.equal(out.voxel.C[out.inverse, 0].long(), batch["batch"])
    assert torch.equal(out.voxel_batch, out.voxel.C[:, 0].long())


def test_to_voxels_reduces_points_per_voxel():
    """Points 0 and 1 share voxel (0,0,0), point 2 is alone in (2,0,0)."""
    backbone = BACKBONES.build({"type": "MinkUNet14A", "in_channels": 1, "voxel_size": 0.1}).eval()
    batch = {"coord": torch.tensor([[0.05, 0.02, 0.01], [0.09, 0.08, 0.07], [0.25, 0.0, 0.0]]),
             "feat": torch.ones(3, 1), "batch": torch.zeros(3, dtype=torch.long)}
    with torch.no_grad():
        out = backbone(batch)
    values = torch.tensor([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0]])
    rows = {tuple(c[1:].tolist()): i for i, c in enumerate(out.voxel.C)}
    mean, high = out.to_voxels(values), out.to_voxels(values, reduce="amax")
    assert mean[rows[(0, 0, 0)]].tolist() == [2.0, 15.0] and mean[rows[(2, 0, 0)]].tolist() == [5.0, 30.0]
    assert high[rows[(0, 0, 0)]].tolist() == [3.0, 20.0]


def test_set_threads_limits_the_blas_pools_minkowski_multiplies_through():
    # in a fresh process: the limit is process-wide. MinkowskiEngine's CPU convolutions call
    # OpenBLAS, whose pool torch.set_num_threads does not reach; its idle threads would spin.
    code = """import json
from threadpoolctl import threadpool_info
from voxseg import sparse
sparse.set_threads(1)
print(json.dumps([(p["filepath"], p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"]))"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"})
    pools = json.loads(done.stdout.strip().splitlines()[-1])
    assert any("openblas" in path for path, _ in pools), pools  # ME's (and numpy's) OpenBLAS are loaded
    assert all(threads == 1 for _, threads in pools), pools


@pytest.mark.parametrize("flags, kernels", [
    ("fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl", "SkylakeX"),
    ("fpu sse2 avx avx2 fma avx512f avx512cd", "Haswell"),  # AVX-512 without BW/DQ/VL (Knights Landing)
    ("fpu sse2 avx avx2 fma", "Haswell"),
    ("fpu sse2 avx avx2", None),  # AVX2 without FMA: OpenBLAS's own choice stays
    ("fpu sse2 sse4_2 avx", None),
])
def test_openblas_kernels_follow_the_vector_instructions(tmp_path, flags, kernels):
    cpuinfo = tmp_path / "cpuinfo"
    core = f"model name\t: a CPU\nflags\t\t: {flags}\n"
    cpuinfo.write_text(f"processor\t: 0\n{core}\nprocessor\t: 1\n{core}")
    assert sparse.openblas_kernels(cpuinfo) == kernels
    assert sparse.openblas_kernels(tmp_path / "absent") is None  # not Linux: nothing is chosen


def loaded_kernels(env: dict) -> list[str]:
    """The kernels of MinkowskiEngine's OpenBLAS in a fresh process that imports voxseg first."""
    code = "from benchmarks.common import loaded_openblas_kernels; print(loaded_openblas_kernels())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    return done.stdout.strip().splitlines()[-1].split(", ")


def test_minkowski_loads_openblas_with_the_kernels_of_the_cpu_unless_the_user_chose():
    # in fresh processes: OpenBLAS reads OPENBLAS_CORETYPE once, when MinkowskiEngine loads it
    chosen = sparse.openblas_kernels()
    if chosen is None:
        pytest.skip("no AVX2 here: voxseg leaves OpenBLAS's kernels to OpenBLAS")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    assert loaded_kernels(env) == [chosen]  # the system OpenBLAS, which MinkowskiEngine links
    assert loaded_kernels({**env, "OPENBLAS_CORETYPE": "Prescott"}) == ["Prescott"]  # the user's is kept
