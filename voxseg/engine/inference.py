"""Run a segmentation model over a dataset, scan by scan."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from voxseg.data.collate import collate
from voxseg.engine.trainer import to_device


@torch.no_grad()
def predict(model: torch.nn.Module, dataset, device: torch.device, indices=None, num_workers: int = 0) -> Iterator[tuple[str, np.ndarray, dict]]:
    """Yield (scan name, per-point train-id predictions, sample) for each scan, in order.

    Predictions cover every point of the scan as the dataset returns it (`sample["point_index"]`
    maps them to the file's points when a transform dropped some).
    """
    model.eval()
    subset = dataset if indices is None else torch.utils.data.Subset(dataset, list(indices))
    loader = DataLoader(subset, batch_size=1, shuffle=False, num_workers=num_workers, collate_fn=collate)
    for batch in loader:
        pred = model(to_device(batch, device))["pred"].cpu().numpy()
        sample = {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in batch.items()}
        yield batch["name"][0], pred, sample
