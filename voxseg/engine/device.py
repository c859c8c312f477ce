"""Which device a run uses: CUDA only where both torch and MinkowskiEngine were built with it.

A CUDA torch (PyPI's default build) beside a CPU-only MinkowskiEngine is common: `make install`
on a machine without the CUDA toolkit builds ME with --cpu_only. `auto` then trains on the CPU
instead of failing inside ME with an assertion; asking for `cuda` is one clear error that says
how to get a CUDA build.
"""

from __future__ import annotations

import torch

from voxseg.errors import ConfigError
from voxseg.sparse import ME

REBUILD_HINT = ("rebuild MinkowskiEngine with CUDA: on a machine with the CUDA toolkit (nvcc) and a CUDA torch, "
                "`rm -rf .venv && make install` (or VOXSEG_ME_CUDA=1 make install), see docs/installation.md")


def minkowski_has_cuda() -> bool:
    """True when the installed MinkowskiEngine was compiled with CUDA."""
    return bool(ME.is_cuda_available())


def cuda_usable() -> bool:
    """CUDA can train: a GPU is visible to torch and MinkowskiEngine has CUDA kernels."""
    return torch.cuda.is_available() and minkowski_has_cuda()


def pick_device(name: str, local_rank: int | None = None, option: str = "train.device") -> torch.device:
    """`auto` | `cpu` | `cuda` | `cuda:N` as a torch.device, checked. `local_rank` (a process
    started by torchrun) chooses the GPU of `auto` and `cuda`. `option` is what the user set the
    name with (the config's `train.device`, a tool's `--device`): errors name it."""
    if name == "auto":
        name = "cuda" if cuda_usable() else "cpu"
    choices = f"{option} must be auto, cpu, cuda or cuda:N, got {name!r}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(choices) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(choices)
    use_cpu = f"{option} cpu" if option.startswith("--") else f"{option}=cpu"
    if not torch.cuda.is_available():
        raise ConfigError(f"{option}: CUDA was requested ({name!r}) but torch.cuda.is_available() is False: torch "
                          f"sees no CUDA GPU (torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}); "
                          f"use {use_cpu}")
    if not minkowski_has_cuda():
        raise ConfigError(f"{option}: CUDA was requested ({name!r}) but MinkowskiEngine {ME.__version__} was built "
                          f"without CUDA; {REBUILD_HINT}, or use {use_cpu}")
    if device.index is None:
        device = torch.device("cuda", local_rank or 0)
    if device.index >= torch.cuda.device_count():
        raise ConfigError(f"{option}: {name!r} but only {torch.cuda.device_count()} GPU(s) are visible")
    return device
