"""The global feature queue F_g (C x d) of ISCC's algorithm: past teacher group features, updated
"with f^2" after each step. FIFO as MoCo's and SwAV's queues; held in registered buffers (the
rows, the write position, the fill count), so a checkpoint saves it and a resumed run continues
with the same queue."""

from __future__ import annotations

import torch
import torch.nn as nn


class FeatureQueue(nn.Module):
    features: torch.Tensor  # (size, dim) rows
    position: torch.Tensor  # () long: the next row to write
    fill: torch.Tensor  # () long: rows written so far, at most size

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"a feature queue needs size >= 1 and dim >= 1, got {size}, {dim}")
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))  # next row to write
        self.register_buffer("fill", torch.zeros((), dtype=torch.long))  # rows written so far, at most size

    @property
    def size(self) -> int:
        return len(self.features)

    def contents(self) -> torch.Tensor:
        """The filled rows, oldest first."""
        fill, position = int(self.fill), int(self.position)
        if fill < self.size:
            return self.features[:fill]
        return torch.cat([self.features[position:], self.features[:position]])

    @torch.no_grad()
    def push(self, rows: torch.Tensor) -> None:
        """Append rows (n, d) in order, overwriting the oldest when full; of more than `size` rows
        only the last `size` are kept."""
        rows = rows.detach()[-self.size:].to(self.features.dtype)
        n, position = len(rows), int(self.position)
        first = min(n, self.size - position)
        self.features[position:position + first] = rows[:first]
        self.features[:n - first] = rows[first:]
        self.position.fill_((position + n) % self.size)
        self.fill.fill_(min(int(self.fill) + n, self.size))
