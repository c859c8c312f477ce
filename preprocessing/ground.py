"""Ground removal: which points of a scan lie on the ground (road, sidewalk, terrain...).

Selected in YAML under `ground:` by type:
  * PatchworkPP (default): Patchwork++ (Lee et al., RA-L 2022) through `pypatchworkpp`; a
    concentric-zone model that fits a plane per bin, robust to slopes and curbs.
  * RansacPlane: one RANSAC plane (open3d's segment_plane), as SegContrast does; fine on flat
    scenes, wrong on slopes.
Each is a callable: (N, 4) scan in its own LiDAR frame -> (N,) bool, True on ground.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from voxseg.registry import Registry

GROUND = Registry("ground")

# SemanticKITTI raw ids counted as ground when scoring a ground mask against labels, the set
# Patchwork++'s own evaluation uses: road, parking, sidewalk, other-ground, lane-marking, terrain.
GROUND_CLASSES = (40, 44, 48, 49, 60, 72)


@contextlib.contextmanager
def _quiet_stdout():
    """Silence C++ writes to the process's stdout (file descriptor 1) for a moment."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@GROUND.register()
class PatchworkPP:
    """Patchwork++ with its KITTI parameters; `sensor_height` is the LiDAR's height above the road
    (KITTI's HDL-64E: 1.723 m, the value TARL uses).

    Patchwork++ adapts its elevation and flatness thresholds to the scans it has seen, so one
    estimator's answer for a scan depends on the scans before it. Each scan gets a fresh
    estimator (20 us to build): a scan's mask is then the same in every window, shard and rerun.
    """

    def __init__(self, sensor_height: float = 1.723, th_dist: float = 0.125, max_range: float = 80.0,
                 min_range: float = 2.7, enable_RNR: bool = True):
        import pypatchworkpp

        params = pypatchworkpp.Parameters()
        params.sensor_height = sensor_height
        params.th_dist = th_dist
        params.max_range = max_range
        params.min_range = min_range
        params.enable_RNR = enable_RNR
        params.verbose = False
        self._new = lambda: pypatchworkpp.patchworkpp(params)

    def __call__(self, scan: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(scan), dtype=bool)
        if len(scan):
            with _quiet_stdout():  # the C++ constructor prints "INITIALIZATION COMPLETE" regardless
                estimator = self._new()
            estimator.estimateGround(np.ascontiguousarray(scan[:, :4], dtype=np.float64))
            mask[np.asarray(estimator.getGroundIndices(), dtype=np.int64)] = True
        return mask


@GROUND.register()
class RansacPlane:
    """The largest plane found by RANSAC (SegContrast's settings): points within
    `distance_threshold` metres of it are ground."""

    def __init__(self, distance_threshold: float = 0.25, ransac_n: int = 3, num_iterations: int = 200, seed: int = 0):
        self.distance_threshold, self.ransac_n, self.num_iterations, self.seed = (
            distance_threshold, ransac_n, num_iterations, seed)

    def __call__(self, scan: np.ndarray) -> np.ndarray:
        import open3d as o3d

        mask = np.zeros(len(scan), dtype=bool)
        if len(scan) < self.ransac_n:
            return mask
        o3d.utility.random.seed(self.seed)
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(scan[:, :3].astype(np.float64)))
        _, inliers = cloud.segment_plane(self.distance_threshold, self.ransac_n, self.num_iterations)
        mask[np.asarray(inliers, dtype=np.int64)] = True
        return mask


def ground_scores(predicted: np.ndarray, semantic: np.ndarray) -> dict[str, float]:
    """Precision and recall of a ground mask against raw semantic labels (unlabelled points,
    class 0, are left out)."""
    labelled = semantic != 0
    truth = np.isin(semantic, GROUND_CLASSES)[labelled]
    pred = predicted[labelled]
    tp = float(np.sum(pred & truth))
    return {
        "precision": tp / max(float(pred.sum()), 1.0),
        "recall": tp / max(float(truth.sum()), 1.0),
    }
