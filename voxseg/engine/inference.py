"""Run a segmentation model over a dataset, scan by scan."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader

from voxseg.data.collate import collate, to_device


@torch.no_grad()
def predict(model: torch.nn.Module, dataset, device: torch.device, indices=None,
            num_workers: int = 0) -> Iterator[tuple[str, dict, dict]]:
    """Yield (scan name, predictions, sample) for each scan, in order.

    `predictions` is the model's `pred` dict as numpy arrays, one row per point of the sample
    (`segment` train ids, and whatever else the heads predict); `sample["point_index"]` maps the
    rows to the file's points when a transform dropped some. A scan with no points yields empty
    predictions without running the model. The loader has its own generator, so validation
    in the middle of training draws nothing from the global random state.
    """
    model.eval()
    subset = dataset if indices is None else torch.utils.data.Subset(dataset, list(indices))
    loader = DataLoader(subset, batch_size=1, shuffle=False, num_workers=num_workers, collate_fn=collate,
                        generator=torch.Generator(), pin_memory=device.type == "cuda")
    for batch in loader:
        sample = {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in batch.items()}
        if len(batch["coord"]) == 0:
            yield batch["name"][0], {}, sample
            continue
        pred = model(to_device(batch, device))["pred"]
        yield batch["name"][0], {k: v.cpu().numpy() for k, v in pred.items()}, sample
