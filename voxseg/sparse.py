"""Points <-> MinkowskiEngine sparse tensors.

A batch of points becomes an ME.TensorField whose coordinates are (batch index, x/v, y/v, z/v)
for voxel size v. `field.sparse()` quantizes it (floor of the scaled coordinates; the features
of points sharing a voxel are averaged) and `sparse_out.slice(field)` maps voxel outputs back to
every input point through ME's inverse map, so predictions and metrics are per point.
"""

from __future__ import annotations

import warnings

import torch
from threadpoolctl import threadpool_limits

with warnings.catch_warnings():
    # A CPU-only build warns on every import that it was compiled without CUDA.
    warnings.filterwarnings("ignore", message=".*compiled with CPU_ONLY.*")
    import MinkowskiEngine as ME  # noqa: E402
# ME 0.5.4 builds its sparse matrices with a constructor torch deprecated; nothing to act on.
warnings.filterwarnings("ignore", message="torch.sparse.SparseTensor", category=UserWarning)

__all__ = ["ME", "to_field", "voxel_coordinates", "set_threads"]


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
