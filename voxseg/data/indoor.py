"""What the indoor datasets (S3DIS, ScanNet) share on top of voxseg.data.defaults.PointDataset:
the RGB point key and features, thing-class instance ids, and text-number parsing that names a bad
line.

An indoor sample holds `coord` (N, 3) float32 metres, `color` (N, 3) float32 RGB in [0, 1],
`point_index` (N,), `name`, and with labels `segment` (N,) train ids (-1 ignore) and `instance`
(N,) dense ids 0..K-1 over the thing-class objects of the scene (-1 none); `feat` is derived after
the transforms from `features`, in their order.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from voxseg.data.defaults import PointDataset
from voxseg.data.features import INDOOR_FEATURES
from voxseg.data.keys import register_point_key
from voxseg.errors import DataFormatError

register_point_key("color")  # (N, 3) float32 RGB in [0, 1]


class IndoorDataset(PointDataset):
    """Base of S3DIS and ScanNet: scenes with colours and thing-class objects. Subclasses fill
    `self.items` (one name per scene) and define `read(index)` and `check`."""

    offered_features = INDOOR_FEATURES

    def dense_things(self, segment: np.ndarray, objects: np.ndarray) -> np.ndarray:
        """Instance ids: -1 where `objects` is negative or the point's train id is not a thing
        class, else a dense id 0..K-1 per object id, in the order of the object ids."""
        assert self.label_config is not None  # labelled samples only, and `labels` requires a label config
        things = np.isin(segment, self.label_config.thing_train_ids) & (objects >= 0)
        instance = np.full(len(segment), -1, dtype=np.int64)
        instance[things] = np.unique(objects[things], return_inverse=True)[1].reshape(-1)
        return instance


def colors_to_unit(rgb: np.ndarray, path: Path) -> np.ndarray:
    """0..255 colours -> float32 in [0, 1]; values outside 0..255 are a DataFormatError."""
    rgb = np.asarray(rgb)
    if rgb.size and (rgb.min() < 0 or rgb.max() > 255):
        raise DataFormatError(f"{path}: colour values must be 0..255, found {rgb.min():g}..{rgb.max():g}")
    return (rgb.astype(np.float32) / np.float32(255.0)).astype(np.float32)


def read_numbers(path: Path, columns: int, what: str) -> np.ndarray:
    """(N, columns) float64 from a whitespace-separated text file, one row per non-blank line.
    A line that is not `columns` finite numbers is a DataFormatError naming the file and line."""
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": checked below
            values = np.loadtxt(path, dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        values = None  # non-numeric or ragged: find the line below
    if values is not None and values.shape[1:] == (columns,) and np.isfinite(values).all():
        return values
    if values is not None and values.size == 0:
        return np.zeros((0, columns))
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) != columns:
                raise DataFormatError(f"{path}: line {number}: expected {columns} numbers ({what}), "
                                      f"got {len(tokens)}: {line.strip()[:60]!r}")
            try:
                row = [float(t) for t in tokens]
            except ValueError:
                raise DataFormatError(f"{path}: line {number}: not a number in {line.strip()[:60]!r}") from None
            if not np.all(np.isfinite(row)):
                raise DataFormatError(f"{path}: line {number}: NaN or infinite value")
    raise DataFormatError(f"{path}: cannot be read as lines of {columns} numbers ({what})")
