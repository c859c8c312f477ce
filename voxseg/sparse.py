"""Points <-> MinkowskiEngine sparse tensors.

A batch of points becomes an ME.TensorField whose coordinates are (batch index, x/v, y/v, z/v)
for voxel size v. `field.sparse()` quantizes it (floor of the scaled coordinates; the features
of points sharing a voxel are averaged) and `sparse_out.slice(field)` maps voxel outputs back to
every input point through ME's inverse map, so predictions and metrics are per point.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits


def cpuinfo_fields(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str] | None:
    """The first processor's fields in `cpuinfo` ('model name', 'cpu family', 'model', 'flags'...),
    or None where it cannot be read (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def openblas_kernels(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The OpenBLAS kernels for this CPU's vector instructions, as an OPENBLAS_CORETYPE value:
    'SkylakeX' with AVX-512 (F, BW, DQ, VL), 'Haswell' with AVX2 and FMA, None otherwise or where
    `cpuinfo` cannot be read (not Linux).

    OpenBLAS picks its kernels by CPU model when it loads. A release older than the CPU does not
    know the model and falls back to its generic SSE3 kernels ('Prescott'): Debian 12's 0.3.21,
    which MinkowskiEngine links, does so on a 5th-generation Xeon (family 6 model 207), and
    MinkowskiEngine's CPU convolutions then run on them (docs/results.md has what that costs).
    These two are the float32 GEMM kernels that OpenBLAS's own targets for such CPUs use (its
    Cooperlake and SapphireRapids targets add bfloat16 kernels only; Zen is Haswell's)."""
    fields = cpuinfo_fields(cpuinfo)
    flags = set((fields or {}).get("flags", "").split())
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


# Before MinkowskiEngine loads OpenBLAS, which reads it then; a value the user set is kept.
if "OPENBLAS_CORETYPE" not in os.environ and (_kernels := openblas_kernels()):
    os.environ["OPENBLAS_CORETYPE"] = _kernels

with warnings.catch_warnings():
    # A CPU-only build warns on every import that it was compiled without CUDA.
    warnings.filterwarnings("ignore", message=".*compiled with CPU_ONLY.*")
    import MinkowskiEngine as ME  # noqa: E402
# ME 0.5.4 builds its sparse matrices with a constructor torch deprecated; nothing to act on.
warnings.filterwarnings("ignore", message="torch.sparse.SparseTensor", category=UserWarning)

__all__ = ["ME", "to_field", "voxel_coordinates", "set_threads", "openblas_kernels"]


_threads = -1  # ME's default: min(OMP_NUM_THREADS or cpu_count, 20)


def set_threads(count: int) -> None:
    """CPU threads for torch, for MinkowskiEngine's OpenMP kernels and for the BLAS libraries.

    ME shares torch's OpenMP runtime but calls omp_set_num_threads(cpu_count) whenever it
    creates a coordinate manager, overriding torch.set_num_threads; so the fields made here
    carry their own manager with `count` threads. With several threads ME's CPU backward
    accumulates in a varying order and runs differ; with one they repeat bit for bit (and on
    2 cores train no slower).

    ME's CPU convolutions multiply through OpenBLAS, whose own thread pool neither torch nor
    OpenMP settings reach once it is loaded: it is limited through threadpoolctl, or its idle
    threads spin beside one-thread work and take a core from anything running alongside.
    """
    global _threads
    _threads = count
    torch.set_num_threads(count)
    threadpool_limits(count, user_api="blas")


def voxel_coordinates(coord: torch.Tensor, batch: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """(N, 4) float coordinates (batch, x, y, z) in voxel units, as ME.TensorField takes them."""
    return torch.cat([batch.to(coord.dtype).unsqueeze(1), coord / voxel_size], dim=1)


def to_field(coord: torch.Tensor, feat: torch.Tensor, batch: torch.Tensor, voxel_size: float) -> ME.TensorField:
    """A TensorField of N points: `coord` (N, 3) metres, `feat` (N, C), `batch` (N,) sample index."""
    if not (len(coord) == len(feat) == len(batch)):
        raise ValueError(f"coord, feat and batch differ in length: {len(coord)}, {len(feat)}, {len(batch)}")
    if len(coord) == 0:
        raise ValueError("cannot voxelize an empty batch")
    algorithm = ME.MinkowskiAlgorithm.SPEED_OPTIMIZED
    map_type = ME.CoordinateMapType.CUDA if feat.is_cuda else ME.CoordinateMapType.CPU
    manager = ME.CoordinateManager(D=3, num_threads=_threads, coordinate_map_type=map_type,
                                   minkowski_algorithm=algorithm)
    return ME.TensorField(
        features=feat,
        coordinates=voxel_coordinates(coord, batch, voxel_size),
        quantization_mode=ME.SparseTensorQuantizationMode.UNWEIGHTED_AVERAGE,
        minkowski_algorithm=algorithm,
        coordinate_manager=manager,
        device=feat.device,
    )
