"""Batch collation: concatenate the points of several samples, with a per-point batch index."""

from __future__ import annotations

import numpy as np
import torch

POINT_KEYS = ("coord", "feat", "segment", "instance", "point_index")


def collate(samples: list[dict]) -> dict:
    """`coord`, `feat`, `segment`, `instance`, `point_index` concatenated as tensors; `batch` (N,)
    sample index of each point; `offset` (B,) cumulative point counts; `name` list of scans."""
    batch: dict = {}
    for key in POINT_KEYS:
        if key in samples[0]:
            batch[key] = torch.from_numpy(np.concatenate([s[key] for s in samples]))
    counts = [len(s["coord"]) for s in samples]
    batch["batch"] = torch.repeat_interleave(torch.arange(len(samples)), torch.tensor(counts))
    batch["offset"] = torch.tensor(np.cumsum(counts))
    batch["name"] = [s["name"] for s in samples]
    return batch
