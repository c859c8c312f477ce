"""Data-parallel training in processes started by torchrun (DistributedDataParallel).

    torchrun --standalone --nproc_per_node N tools/finetune.py --config X.yaml

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (voxseg.distributed.from_env); a process started
without them is a world of one and joins no process group. With N processes (NCCL between GPUs,
gloo on CPU):
  * each global batch (train.batch_size scans per process, N * batch_size in all) is split by
    rank (voxseg.engine.trainer.EpochSampler), DDP averages the gradients, and the logged loss
    terms are averaged over the ranks;
  * an interrupt (Ctrl-C, SIGTERM) on any rank stops every rank after the same step;
  * validation predicts a shard of the scans per rank after rank 0's batch-norm statistics are
    copied to all; rank 0 scores the predictions in scan order, so the metrics equal those of a
    one-process validation of the same weights;
  * rank 0 alone prints and writes (config, checkpoints, TensorBoard, metrics).
The collectives these use are voxseg.distributed's; this module joins and leaves the group.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from voxseg.distributed import Context


def setup(ctx: Context, device: torch.device) -> None:
    """Join the process group: NCCL when training on CUDA, gloo on CPU."""
    if not ctx.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
