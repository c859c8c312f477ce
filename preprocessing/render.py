"""Bird's-eye-view PNGs of a scan (or a stacked window) with its groups coloured, for checking
a clustering by eye: each group gets a colour from its id, ground and noise are grey."""

from __future__ import annotations

import os

import numpy as np

from voxseg import atomic


def group_colours(groups: np.ndarray) -> np.ndarray:
    """(N, 3) RGB in [0, 1]: a fixed colour per group id (the same id gets the same colour in
    every scan, so linked ids are visible as steady colours); grey for -1."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    tab20 = matplotlib.colormaps["tab20"]
    assert isinstance(tab20, ListedColormap)  # a qualitative colormap: a list of colours
    palette = np.asarray(tab20.colors)
    colours = np.full((len(groups), 3), 0.75)
    grouped = groups >= 0
    # a multiplicative hash spreads neighbouring ids over the palette
    colours[grouped] = palette[(groups[grouped].astype(np.int64) * 7919) % len(palette)]
    return colours


def render_bev(points: np.ndarray, groups: np.ndarray, path: str | os.PathLike, extent: float = 50.0,
               title: str = "") -> None:
    """Top view of `points` (N, 3+) within +-`extent` metres, coloured by `groups`, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(points) != len(groups):
        raise ValueError(f"{len(points)} points but {len(groups)} group ids")
    keep = (np.abs(points[:, 0]) < extent) & (np.abs(points[:, 1]) < extent)
    order = np.argsort(groups[keep] >= 0, kind="stable")  # ground first, groups drawn on top
    xy, colours = points[keep][order, :2], group_colours(groups[keep])[order]
    fig, ax = plt.subplots(figsize=(8, 8), dpi=120)
    ax.scatter(xy[:, 0], xy[:, 1], s=0.3, c=colours, linewidths=0)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    n = len(np.unique(groups[groups >= 0]))
    ax.set_title(f"{title}  ({n} groups; grey: ground and noise)".strip())
    fig.tight_layout()
    with atomic.atomic_open(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
