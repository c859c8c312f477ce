#!/usr/bin/env python3
"""tools/finetune.py through voxseg's data-parallel path, even in a world of one process
(`make gpu-check`'s NCCL step, tools/gpu_check.sh).

    torchrun --standalone --nproc_per_node 1 tools/gpu_check_ddp.py --config X.yaml key=value ...

voxseg joins a process group only when torchrun starts several processes
(voxseg.distributed.Context.enabled: world_size > 1), and NCCL refuses two ranks on one GPU, so
on a one-GPU machine a torchrun of tools/finetune.py trains without DDP and NCCL never runs. Here
Context.enabled is true for any world size, so one process takes the path that N take: the
process group (NCCL on CUDA, gloo on CPU), DistributedDataParallel, the all-reduce of the logged
losses, the barriers, the batch-norm broadcast and the gather of the sharded validation. With
several processes it changes nothing. The arguments are tools/finetune.py's.
"""

import runpy
import sys
from pathlib import Path

from voxseg import distributed

FINETUNE = Path(__file__).resolve().with_name("finetune.py")


def force_data_parallel() -> None:
    """Every Context takes the data-parallel path, a world of one included."""
    distributed.Context.enabled = property(lambda self: True)  # type: ignore[method-assign,assignment]


if __name__ == "__main__":
    force_data_parallel()
    sys.argv[0] = str(FINETUNE)
    runpy.run_path(str(FINETUNE), run_name="__main__")
