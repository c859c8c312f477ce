"""Data-parallel training (torchrun, gloo on CPU) and device choice."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.helpers import FINETUNE_CONFIG, ROOT, finetune_overrides
from voxseg import distributed, sparse
from voxseg.engine import checkpoint, device as device_lib, finetune, training_run
from voxseg.engine.inference import predict
from voxseg.engine.trainer import EpochSampler
from voxseg.errors import ConfigError, VoxsegError
from voxseg.registry import DATASETS, EVALUATORS, MODELS


@pytest.mark.parametrize("start", [0, 4])
def test_ranks_read_the_global_batch_of_one_process(start):
    """Step k's batches of the ranks are together the batch of one process with world x batch."""
    world, batch, size = 3, 2, 17
    single = EpochSampler(size, seed=5)
    single.set_position(epoch=2, start=start)
    ranks = [EpochSampler(size, seed=5, rank=r, world_size=world) for r in range(world)]
    for sampler in ranks:
        sampler.set_position(epoch=2, start=start)
    order = list(single)
    shares = [list(s) for s in ranks]
    assert sum(len(s) for s in ranks) == len(order) == size - start
    for k in range((size - start) // (world * batch)):
        union = sorted(i for share in shares for i in share[k * batch:(k + 1) * batch])
        assert union == sorted(order[k * world * batch:(k + 1) * world * batch])


def test_gather_in_order_is_the_identity_in_one_process():
    ctx = distributed.Context()
    assert distributed.shard(list(range(7)), ctx) == list(range(7))
    assert list(distributed.gather_in_order(iter("abc"), 3, ctx)) == ["a", "b", "c"]
    assert distributed.shard(list(range(7)), distributed.Context(rank=1, world_size=3)) == [1, 4]


def _gather_worker(rank: int, world: int, folder: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank, world_size=world)
    try:
        rows = torch.arange(10 * rank, 10 * rank + 2 * rank, dtype=torch.float64).reshape(rank, 2)  # 0, 1, 2 rows
        gathered, start = distributed.all_gather_rows(rows)
        torch.save((gathered, start), f"{folder}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_all_gather_rows_of_unequal_counts_across_three_gloo_processes(tmp_path):
    """Rank r holds r rows (rank 0 none): every rank gets all rows in rank order and its start."""
    alone = torch.ones(3, 2)
    assert distributed.all_gather_rows(alone)[0] is alone and distributed.all_gather_rows(alone)[1] == 0
    torch.multiprocessing.spawn(_gather_worker, args=(3, str(tmp_path)), nprocs=3)
    expected = torch.tensor([[10.0, 11], [20, 21], [22, 23]], dtype=torch.float64)
    for rank in range(3):
        gathered, start = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(gathered, expected) and start == [0, 0, 1][rank]


def test_context_from_torchrun_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.from_env() == distributed.Context(rank=2, world_size=4, local_rank=0)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK 4 is not in a world of WORLD_SIZE 4"):
        distributed.from_env()


def test_device_auto_needs_cuda_in_both_torch_and_minkowski(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(device_lib, "minkowski_has_cuda", lambda: False)
    assert device_lib.pick_device("auto") == torch.device("cpu")  # a CUDA torch beside a CPU-only ME
    with pytest.raises(ConfigError, match="MinkowskiEngine .* was built without CUDA; rebuild MinkowskiEngine"):
        device_lib.pick_device("cuda")
    monkeypatch.setattr(device_lib, "minkowski_has_cuda", lambda: True)
    assert device_lib.pick_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert device_lib.pick_device("cuda:0", local_rank=1) == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="only 2 GPU"):
        device_lib.pick_device("cuda:2")


def test_device_without_cuda_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_lib.pick_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
        device_lib.pick_device("cuda")
    with pytest.raises(ConfigError, match="must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        device_lib.pick_device("gpu")


def test_sync_bn_on_cpu_is_a_config_error(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    overrides = finetune_overrides(tiny_dataset, tmp_path / "run", **{"train.sync_bn": "true", "train.device": "cpu"})
    cfg = finetune.resolve(str(FINETUNE_CONFIG), overrides)
    with pytest.raises(ConfigError, match="train.sync_bn needs CUDA"):
        finetune.run(cfg)
    assert not (tmp_path / "run").exists()


def test_resume_with_another_world_size_is_a_config_change():
    saved = {"train": {"world_size": 2, "batch_size": 1}}
    with pytest.raises(VoxsegError, match="differs from the run's in train.world_size"):
        training_run.check_resume_config(saved, {"train": {"world_size": 1, "batch_size": 1}}, "last.pt", False)


def _scalars(run_dir, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return [e.value for e in EventAccumulator(str(run_dir / "tb")).Reload().Scalars(tag)]


def test_two_gloo_processes_train_like_one_with_the_same_global_batch(tiny_dataset, tmp_path):
    """torchrun with 2 CPU processes of batch 1 against one process of batch 2: the same losses
    (within tolerance: batch norm and the loss mean see one scan per process, not two), one
    writer, the world size recorded, and validation metrics gathered from both ranks equal to a
    one-process validation of the saved weights, exactly (so both ranks held the same weights
    and statistics)."""
    extra = {"train.max_steps": 4, "train.val_every": 0, "train.log_every": 1, "train.lr": 0.002,
             "train.warmup_steps": 0, "model.heads.semantic.dropout": 0.0}
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "tools" / "finetune.py"), "--config", str(FINETUNE_CONFIG),
         *finetune_overrides(tiny_dataset, tmp_path / "ddp", **extra)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("training on 6 of 6 labelled scans") == 1  # rank 0 alone prints
    assert "2 processes (gloo), global batch 2" in ddp.stdout
    single_cfg = finetune.resolve(str(FINETUNE_CONFIG), finetune_overrides(tiny_dataset, tmp_path / "one", **extra,
                                                         **{"train.batch_size": 2}))
    finetune.run(single_cfg)

    saved = checkpoint.load(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert saved["config"]["train"]["world_size"] == 2 and single_cfg["train"]["world_size"] == 1
    assert "world_size: 2" in (tmp_path / "ddp" / "config.yaml").read_text()
    ddp_losses, one_losses = _scalars(tmp_path / "ddp", "train/loss"), _scalars(tmp_path / "one", "train/loss")
    assert len(ddp_losses) == len(one_losses) == 4
    np.testing.assert_allclose(ddp_losses, one_losses, rtol=0.05)
    assert ddp_losses[-1] < ddp_losses[0]

    # the 3 validation scans were predicted 2 by rank 0 and 1 by rank 1, then scored by rank 0
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    cfg = saved["config"]
    sparse.set_threads(1)
    model = MODELS.build(cfg["model"])
    model.load_state_dict(saved["model"])
    val = DATASETS.build(cfg["data"]["val"], root=cfg["data"]["root"], label_config=cfg["data"]["label_config"])
    evaluator = EVALUATORS.build(cfg["evaluator"], labels=val.label_config)
    for _, pred, sample in predict(model, val, torch.device("cpu")):
        evaluator.add(pred, sample)
    result = evaluator.result()
    assert len(val) == 3
    assert metrics["miou"] == result["miou"]
    np.testing.assert_equal(metrics["iou_per_class"], result["iou_per_class"])  # exactly (NaN equal to NaN)
