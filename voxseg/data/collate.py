"""Batch collation of sample dicts, and moving a batch to a device.

A point set is a dict with `coord`. Collating B samples, recursively over nested dicts:
  - the per-point keys (voxseg.data.keys) of a point set are concatenated into tensors, and the
    point set gets `batch` (N,) int64 sample index of each point and `offset` (B,) cumulative counts;
  - id-valued keys (`instance`, `group`, ...) are shifted to be unique across the batch, each key on
    its own: sample b's ids by the sum over earlier samples of (largest id of that key in any of
    the sample's point sets + 1), so an id shared by two views of one sample stays shared; -1
    (none) stays -1, and a sample without ids shifts the later ones by 0;
  - nested dicts are collated with the same rules (a pair of views, query points, ...);
  - other values: numpy arrays, numbers or tensors of equal shapes are stacked into a (B, ...)
    tensor, anything else (strings, objects, arrays of different shapes) becomes a list.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from voxseg.data.keys import is_id_key, is_point_key


def collate(samples: list[dict]) -> dict:
    """One batch dict from a list of sample dicts (see the module docstring)."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    largest = [_largest_ids(s, {}) for s in samples]
    shifts = {key: np.cumsum([0] + [m.get(key, -1) + 1 for m in largest[:-1]]).tolist()
              for key in set().union(*largest)}
    return _collate_dicts(samples, shifts, "")


def to_device(obj, device: torch.device | str):
    """`obj` with its tensors moved to `device`, recursively through dicts, lists and tuples; for
    CUDA, CPU tensors are pinned first so the copies are asynchronous. Other values are kept."""
    device = torch.device(device)
    if torch.is_tensor(obj):
        if device.type == "cuda" and obj.device.type == "cpu" and not obj.is_pinned():
            obj = obj.pin_memory()
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        moved = [to_device(v, device) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else type(obj)(moved)
    return obj


def _largest_ids(sample: dict, largest: dict[str, int]) -> dict[str, int]:
    """Largest id of each id-valued point key over the point sets nested in `sample`, into `largest`."""
    for key, value in sample.items():
        if isinstance(value, dict):
            _largest_ids(value, largest)
        elif "coord" in sample and is_id_key(key):
            largest[key] = max(largest.get(key, -1), int(np.max(np.asarray(value), initial=-1)))
    return largest


def _collate_dicts(dicts: list[dict], shifts: dict[str, list[int]], path: str) -> dict:
    """Collate the dicts found at `path` (e.g. "['view1']") in each sample."""
    keys = list(dicts[0])
    for i, d in enumerate(dicts):
        if set(d) != set(keys):
            raise ValueError(f"cannot collate: sample {i}{path} has keys {sorted(d)}, sample 0{path} {sorted(keys)}")
    points = "coord" in dicts[0]
    out: dict = {}
    for key in keys:
        values = [d[key] for d in dicts]
        if isinstance(values[0], dict):
            out[key] = _collate_dicts(values, shifts, f"{path}[{key!r}]")
        elif points and is_point_key(key):
            arrays = [np.asarray(v) for v in values]
            if is_id_key(key):
                arrays = [np.where(a >= 0, a + shift, a) for a, shift in zip(arrays, shifts[key], strict=True)]
            out[key] = torch.from_numpy(np.concatenate(arrays))
        else:
            out[key] = _stack(values)
    if points:
        counts = torch.tensor([len(d["coord"]) for d in dicts], dtype=torch.int64)
        out["batch"] = torch.repeat_interleave(torch.arange(len(dicts)), counts)
        out["offset"] = torch.cumsum(counts, 0)
    return out


def _stack(values: list):
    """Equal-shaped tensors, numeric arrays or numbers -> one stacked tensor; otherwise a list."""
    if all(torch.is_tensor(v) for v in values):
        return torch.stack(values) if len({v.shape for v in values}) == 1 else list(values)
    if not all(isinstance(v, (np.ndarray, numbers.Number)) for v in values):
        return list(values)
    arrays = [np.asarray(v) for v in values]
    if len({a.shape for a in arrays}) == 1 and all(a.dtype.kind in "biuf" for a in arrays):
        return torch.from_numpy(np.stack(arrays))
    return list(values)
