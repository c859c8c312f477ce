"""On a CUDA GPU with a CUDA build of MinkowskiEngine: the GPU computes what the CPU computes,
trains, and predicts. Skipped elsewhere (tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import voxseg.data.semantic_kitti_dataset  # noqa: F401  (registers the datasets)
import voxseg.models  # noqa: F401  (registers the models)
from tests.helpers import ASIS_CONFIG, FINETUNE_CONFIG, ROOT, asis_overrides, finetune_overrides
from voxseg import sparse
from voxseg.data.collate import collate, to_device
from voxseg.data.semantic_kitti import read_label
from voxseg.engine import checkpoint, finetune
from voxseg.registry import DATASETS, MODELS

pytestmark = pytest.mark.cuda

MODEL = {"type": "Segmentor",
         "backbone": {"type": "MinkUNet14A", "in_channels": 1, "voxel_size": 0.2},
         "heads": {"semantic": {"type": "SemanticHead", "num_classes": 12}},
         "losses": {"ce": {"type": "CrossEntropyLoss", "head": "semantic"}}}


def _batch(root):
    dataset = DATASETS.build({"type": "SemanticKITTI", "sequences": [0], "features": ["intensity"]}, root=str(root),
                             label_config=str(ROOT / "configs" / "labels" / "synthetic.yaml"))
    return collate([dataset[0], dataset[1]])


def test_forward_and_backward_match_the_cpu(tiny_dataset):
    sparse.set_threads(1)
    torch.manual_seed(0)
    cpu_model = MODELS.build(MODEL).train()
    gpu_model = MODELS.build(MODEL).train()
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model.cuda()
    batch = _batch(tiny_dataset)
    cpu_out = cpu_model(batch)
    gpu_out = gpu_model(to_device(batch, torch.device("cuda")))
    cpu_out["loss"].backward()
    gpu_out["loss"].backward()
    torch.testing.assert_close(gpu_out["loss"].cpu(), cpu_out["loss"].detach(), rtol=1e-4, atol=1e-5)
    gpu_params = dict(gpu_model.named_parameters())
    for name, p in cpu_model.named_parameters():
        g_cpu, g_gpu = p.grad, gpu_params[name].grad.cpu()
        # float32 sums in another order: same direction and size, not the same bits
        cosine = torch.nn.functional.cosine_similarity(g_cpu.flatten(), g_gpu.flatten(), dim=0)
        assert cosine > 0.999, name
        assert g_gpu.norm() == pytest.approx(float(g_cpu.norm()), rel=1e-3, abs=1e-7), name


def test_short_training_and_inference_on_cuda(tiny_dataset, tmp_path, monkeypatch):
    """Semantic fine-tuning on the GPU, then tools/infer.py on the GPU and on the CPU: the same
    predictions (up to points whose two best logits are within float32 noise)."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    cfg = finetune.resolve(str(FINETUNE_CONFIG), finetune_overrides(
        tiny_dataset, out, **{"train.device": "cuda", "train.max_steps": 6, "train.val_every": 3}))
    result = finetune.run(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 6 and metrics["miou"] == result["miou"]
    assert checkpoint.load(out / "checkpoints" / "last.pt")["step"] == 6
    preds = {}
    for device in ("cuda", "cpu"):
        done = subprocess.run([sys.executable, "tools/infer.py", "--checkpoint", str(out / "checkpoints" / "last.pt"),
                               "--dataset", str(tiny_dataset), "--sequences", "01", "--out", str(tmp_path / device),
                               "--device", device], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        files = sorted((tmp_path / device / "sequences" / "01" / "predictions").glob("*.label"))
        assert len(files) == 3
        preds[device] = np.concatenate([read_label(f)[0] for f in files])
    assert (preds["cuda"] == preds["cpu"]).mean() > 0.999


def test_asis_trains_and_clusters_on_cuda(tiny_dataset, tmp_path, monkeypatch):
    """The instance head on the GPU: brute-force kNN for instance fusion, mean-shift on CUDA. The
    same eight steps on the CPU end with the same PQ and mIoU up to float32 noise, both above the
    PQ of the untrained model, which finds no instance (0)."""
    monkeypatch.chdir(ROOT)
    metrics = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / device
        finetune.run(finetune.resolve(str(ASIS_CONFIG), asis_overrides(tiny_dataset, out, **{"train.device": device})))
        metrics[device] = json.loads((out / "metrics.json").read_text())
    gpu, cpu = metrics["cuda"], metrics["cpu"]
    assert gpu["step"] == 8 and 0.0 <= gpu["pq"] <= 1.0 and gpu["miou"] > 0.0
    assert gpu["pq"] > 0.02 and cpu["pq"] > 0.02
    assert gpu["pq"] == pytest.approx(cpu["pq"], abs=0.015)
    assert gpu["miou"] == pytest.approx(cpu["miou"], abs=0.015)
