"""Pictures of predictions, headless (matplotlib's Agg backend, PNG files written atomically):

- `render_scan`: one scan or scene. The top row is a bird's-eye view, the bottom row one
  perspective view of the same points, and the columns are the predicted classes (the label
  config's colours, with a legend of the classes present), the predicted instances, and where
  ground truth is given, the true classes and an error map (green: right class, red: wrong,
  grey: an ignored ground-truth class, not scored).
- `render_sheet`: the bird's-eye views of many scans (a sequence) on one sheet, by class.
- `plot_iou` and `plot_confusion`: the per-class IoU bar chart and the confusion matrix of a
  semantic evaluation (tools/evaluate.py --plots).

Views frame the points' extent, so LiDAR scans and indoor rooms both fill the picture. The
perspective view is a pinhole camera looking at the points' centre from behind, to the side and
above (a hand-written projection: three lines of linear algebra, drawn far points first).
"""

from __future__ import annotations

import os

import numpy as np

from voxseg import atomic
from voxseg.data.labels import LabelConfig

GREY = (0.8, 0.8, 0.8)
RIGHT, WRONG = (0.2, 0.6, 0.2), (0.8, 0.0, 0.0)  # exact in 8 bits: 51 153 51, 204 0 0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    with atomic.atomic_open(path) as f:
        fig.savefig(f, format="png")
    _pyplot().close(fig)


def instance_rgb(instance: np.ndarray) -> np.ndarray:
    """(N, 3) RGB in [0, 1]: a fixed colour per instance id (> 0), grey for 0 (no instance)."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    tab20 = matplotlib.colormaps["tab20"]
    assert isinstance(tab20, ListedColormap)  # a qualitative colormap: a list of colours
    palette = np.asarray(tab20.colors)
    colours = np.tile(GREY, (len(instance), 1))
    has = instance > 0
    colours[has] = palette[(instance[has].astype(np.int64) * 7919) % len(palette)]  # neighbouring ids apart
    return colours


def error_rgb(semantic: np.ndarray, gt_semantic: np.ndarray, labels: LabelConfig) -> np.ndarray:
    """(N, 3): RIGHT where the predicted learn class is the true one, WRONG where not, GREY where
    the true class is ignored (not scored)."""
    pred, gt = labels.raw_to_learn(semantic), labels.raw_to_learn(gt_semantic)
    ignored = np.array([labels.learning_ignore[c] for c in range(labels.num_learn_classes)])[gt]
    colours = np.where((pred == gt)[:, None], RIGHT, WRONG)
    colours[ignored] = GREY
    return colours


def perspective(coord: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image xy (N, 2), drawing order far to near) of a pinhole camera looking at the points'
    median from behind (-x), to the side (-y) and above, at 1.2 times their radius."""
    target = np.median(coord, axis=0)
    radius = max(float(np.percentile(np.linalg.norm(coord - target, axis=1), 95)), 1e-3)
    eye = target + radius * 1.2 * np.array([-0.8, -0.6, 0.7])
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    local = (coord - eye) @ np.stack([right, up, forward], axis=1)
    depth = np.maximum(local[:, 2], 1e-3)
    return local[:, :2] / depth[:, None], np.argsort(-depth, kind="stable")


def marker_size(points: int) -> float:
    """Scatter marker area (pt^2): dots of about a pixel for a dense scan, larger for a sparse cloud."""
    return float(np.clip(2e4 / max(points, 1), 0.3, 6.0))


def _panel(ax, xy: np.ndarray, colours: np.ndarray, title: str, order: np.ndarray | None = None) -> None:
    size = marker_size(len(xy))
    if order is not None:
        xy, colours = xy[order], colours[order]
    ax.scatter(xy[:, 0], xy[:, 1], s=size, c=colours, linewidths=0)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(fig, semantic: np.ndarray, labels: LabelConfig) -> None:
    """The classes present, with their colours, under the figure."""
    from matplotlib.patches import Patch

    present = np.unique(np.asarray(semantic, dtype=np.int64) & 0xFFFF)
    handles = [Patch(color=tuple(labels.rgb(np.array([c]))[0]), label=labels.names.get(int(c), str(c)))
               for c in present]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8, frameon=False)


def render_scan(path: str | os.PathLike, coord: np.ndarray, semantic: np.ndarray, instance: np.ndarray,
                labels: LabelConfig, gt_semantic: np.ndarray | None = None, title: str = "") -> None:
    """A PNG of one scan's predictions (module docstring). `semantic` and `gt_semantic` are raw
    class ids of `labels`, `instance` ids per point (0: none), all one row per point of `coord`."""
    plt = _pyplot()
    coord = np.asarray(coord, dtype=np.float64)[:, :3]
    if not len(semantic) == len(instance) == len(coord) or (gt_semantic is not None and len(gt_semantic) != len(coord)):
        raise ValueError(f"{len(coord)} points but {len(semantic)} classes, {len(instance)} instance ids"
                         + ("" if gt_semantic is None else f", {len(gt_semantic)} true classes"))
    columns = [("predicted classes", labels.rgb(semantic)),
               (f"predicted instances ({len(np.unique(instance[instance > 0]))})", instance_rgb(instance))]
    if gt_semantic is not None:
        scored = ~np.array([labels.learning_ignore[c] for c in range(labels.num_learn_classes)])[
            labels.raw_to_learn(gt_semantic)]
        right = float((labels.raw_to_learn(semantic) == labels.raw_to_learn(gt_semantic))[scored].mean()) \
            if scored.any() else float("nan")
        columns += [("true classes", labels.rgb(gt_semantic)),
                    (f"errors (right: {100 * right:.1f}% of scored points)", error_rgb(semantic, gt_semantic, labels))]
    image, order = perspective(coord)
    fig, axes = plt.subplots(2, len(columns), figsize=(4.2 * len(columns), 8.6), dpi=110, squeeze=False)
    # the perspective frames the 1st-99th percentile of the image: the few points next to (or
    # behind) the camera would otherwise stretch the axes and shrink the scene to a speck
    low, high = np.percentile(image, [1, 99], axis=0)
    pad = 0.05 * (high - low)
    for j, (name, colours) in enumerate(columns):
        _panel(axes[0, j], coord[:, :2], colours, f"{name}: top view")
        _panel(axes[1, j], image, colours, f"{name}: perspective", order)
        axes[1, j].set_xlim(low[0] - pad[0], high[0] + pad[0])
        axes[1, j].set_ylim(low[1] - pad[1], high[1] + pad[1])
    fig.suptitle(title)
    _legend(fig, semantic if gt_semantic is None else np.concatenate([semantic, gt_semantic]), labels)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    _save(fig, path)


def render_sheet(path: str | os.PathLike, scans: list[tuple[str, np.ndarray, np.ndarray]], labels: LabelConfig,
                 title: str = "", columns: int = 4) -> None:
    """One PNG of the bird's-eye views of `scans` ((name, coord, raw class ids) each) by class."""
    if not scans:
        raise ValueError("a sheet needs at least one scan")
    plt = _pyplot()
    rows = -(-len(scans) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows + 0.8), dpi=100, squeeze=False)
    for ax in axes.ravel()[len(scans):]:
        ax.axis("off")
    # strict=False: the grid may have more panels than scans (the spare ones are switched off above)
    for ax, (name, coord, semantic) in zip(axes.ravel(), scans, strict=False):
        _panel(ax, np.asarray(coord)[:, :2], labels.rgb(semantic), name)
    fig.suptitle(title)
    _legend(fig, np.concatenate([s for _, _, s in scans]), labels)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    _save(fig, path)


def plot_iou(path: str | os.PathLike, result: dict, title: str = "") -> None:
    """A bar chart of `result["iou_per_class"]` (a semantic evaluation's result), mIoU marked."""
    plt = _pyplot()
    names, values = list(result["iou_per_class"]), [100 * v for v in result["iou_per_class"].values()]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.5), dpi=110)
    ax.bar(range(len(names)), np.nan_to_num(values), color="tab:blue")
    ax.axhline(100 * result["miou"], color="tab:red", linestyle="--", label=f"mIoU {100 * result['miou']:.1f}")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(path: str | os.PathLike, result: dict, title: str = "") -> None:
    """The confusion matrix of a semantic evaluation (`result["confusion"]`: rows the true
    classes, columns the predicted ones, point counts), each row normalised to 100%."""
    plt = _pyplot()
    names = list(result["iou_per_class"])
    counts = np.asarray(result["confusion"], dtype=np.float64)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.45 * len(names) + 3, 0.45 * len(names) + 2.5), dpi=110)
    shown = ax.imshow(100 * rows, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(shown, ax=ax, label="% of the true class's points")
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)
