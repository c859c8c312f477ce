"""ISCC pretraining pairs: a scan, a nearby scan of the same preprocessing window, both augmented,
shared groups, masked groups and implicit-surface queries.

Item `index` is scan x_i of the dataset. A window of the preprocessing (voxseg.data.groups) that
holds x_i and another scan x_j at most `max_frame_distance` scans away is drawn, then x_j among
those scans; both take that window's group ids, which agree across its scans. Each scan is
augmented by its own transform list (`view1_transforms` for x_i, the student's view;
`view2_transforms` for x_j, the teacher's). Of the groups present in both augmented views, a
random `mask_ratio` (at most `max_masked_groups`, and never all of them) are removed whole from
view 1, and queries for implicit surface reconstruction are cast along the LiDAR rays through up
to `max_query_points` removed points p, the sensor at the origin (as ALSO, Boulch et al. 2023),
each with its own u ~ U(0, 1) and d = `surface_distance`:

    behind the surface  p + d u p/|p|   surface_offset +d u       (occupied)
    in front of it      p - d u p/|p|   surface_offset -d u       (empty)
    between sensor, p   u p             surface_offset (u - 1)|p| (empty)

With `visible_query_points` N > 0 (not in the slides: ALSO casts its queries around every input
point), the same three queries are also cast through up to N points still visible in view 1,
drawn uniformly: ground (which no group covers) and objects alike then have a surface to
reconstruct. Their `group` is -1. With N = 0 (the default) only the crops cast queries, as the
slides' "query points near the target crops".

Finally every group id not present in both views is set to -1 in both, so only shared groups
count. A sample:

    {"view1": {coord (N1, 3) float32, intensity, feat (N1, C) float32, group (N1,) int64,
               point_index (N1,) row in x_i's scan file[, segment, instance]},
     "view2": {... the same for x_j},
     "query": {coord (Q, 3) float32 in view 1's coordinates, surface_offset (Q,) float32,
               surface_intensity (Q,) float32: the intensity of the point the query was cast
               through for the queries behind and in front of the surface, NaN for those between
               sensor and surface (ALSO's intensity targets: none in free space),
               group (Q,) int64: the removed group the query was cast from (-1 in the views;
               -1 for the queries through visible points, after the crops' queries)},
     "name": "SS/FFFFFF" (x_i), "pair": "SS/FFFFFF" (x_j), "window": index of the window (in
     its sequence) whose ids the views hold}

Queries are cast after view 1's augmentation. That is exact because its transforms keep the
sensor at the origin: rotation about z, flips and scaling map rays from the origin to rays from
the origin, jitter moves points but not the sensor, and dropout or cropping only remove points;
other transforms in `view1_transforms` are refused (ConfigError). Randomness is a function of
(seed, epoch, index), with separate streams for the pair, each view, the masking and the visible
queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
from tqdm import tqdm

from voxseg.config import Component, Range
from voxseg.data import semantic_kitti as sk
from voxseg.data.defaults import PointDataset, augment, build_transforms
from voxseg.data.features import LIDAR_FEATURES
from voxseg.data.groups import SequenceGroups
from voxseg.data.keys import is_point_key, register_point_key
from voxseg.errors import ConfigError, DataFormatError
from voxseg.registry import DATASETS

register_point_key("surface_offset")  # (Q,) float32 signed distance along the ray, + = occupied side
register_point_key("surface_intensity")  # (Q,) float32 intensity of the surface point, NaN in free space

# transforms under which the sensor stays at the origin of view 1 (see the module docstring)
KEEP_ORIGIN = ("RandomRotateZ", "RandomFlip", "RandomScale", "RandomJitter", "RandomDropout", "RangeCrop")


@DATASETS.register()
class ISCCPairs(PointDataset):
    """Pairs of scans of `sequences` under `root` with window group ids from `groups_root`
    (OUT/sequences/NN/groups of tools/preprocess.py; default: `root`). See the module docstring.

    `group_params` is a nested mapping of preprocessing parameters the groups must have been made
    with (`{stacking: {window: 12, stride: 4}}`); every sequence's groups must also share one
    configuration. With `labels`, each view also holds `segment` and `instance` as in
    SemanticKITTI (needs `label_config`).

    The constructor checks, `seed`/`epoch` and the feature derivation are PointDataset's; the
    views have their own transform lists (the base's `transforms` stays empty), and
    `__getitem__` is this class's own, as a sample is two scans.
    """

    offered_features = LIDAR_FEATURES

    def __init__(self, root: str, sequences: list[int | str], label_config: str | None = None,
                 features: list[str] = ["intensity"],  # noqa: B006
                 view1_transforms: list[Component] = [], view2_transforms: list[Component] = [],  # noqa: B006
                 max_frame_distance: Annotated[int, Range(ge=1)] = 4,
                 mask_ratio: Annotated[float, Range(ge=0, le=1)] = 0.3,
                 max_masked_groups: Annotated[int, Range(ge=0)] = 16,
                 max_query_points: Annotated[int, Range(ge=0)] = 1024,
                 visible_query_points: Annotated[int, Range(ge=0)] = 0,
                 surface_distance: Annotated[float, Range(gt=0)] = 0.1,
                 groups_root: str | None = None, group_params: dict = {}, labels: bool = False):  # noqa: B006
        super().__init__(root, label_config, features, [], labels)
        moving = [t.get("type") for t in view1_transforms if t.get("type") not in KEEP_ORIGIN]
        if moving:
            raise ConfigError(f"view1_transforms: {moving[0]} is not known to keep the sensor at the origin, which the "
                              f"queries cast along rays from the origin need; use {', '.join(KEEP_ORIGIN)}")
        for key, value, ok in (("max_frame_distance", max_frame_distance, max_frame_distance >= 1),
                               ("mask_ratio", mask_ratio, 0 <= mask_ratio <= 1),
                               ("max_masked_groups", max_masked_groups, max_masked_groups >= 0),
                               ("max_query_points", max_query_points, max_query_points >= 0),
                               ("visible_query_points", visible_query_points, visible_query_points >= 0),
                               ("surface_distance", surface_distance, surface_distance > 0)):
            if not ok:
                raise ConfigError(f"ISCCPairs: {key} out of range, got {value!r}")
        self.groups_root = Path(groups_root) if groups_root is not None else self.root
        self.view1_transforms = build_transforms(view1_transforms)
        self.view2_transforms = build_transforms(view2_transforms)
        self.max_frame_distance = max_frame_distance
        self.mask_ratio, self.max_masked_groups = mask_ratio, max_masked_groups
        self.max_query_points, self.surface_distance = max_query_points, surface_distance
        self.visible_query_points = visible_query_points

        self.groups: dict[str, SequenceGroups] = {}
        self.frames: list[tuple[str, int]] = []  # (sequence, scan index in it)
        self.partners: list[list[tuple[int, list[int]]]] = []  # per item: (window, candidate scans x_j)
        first = None
        for s in sequences:
            name = sk.sequence_name(s)
            frames = sk.frame_ids(self.root, name)
            groups = SequenceGroups(self.groups_root / "sequences" / name / "groups", frames, group_params)
            if first is not None and groups.config != first.config:
                raise DataFormatError(f"{groups.manifest_path}: these groups were made with other parameters than "
                                      f"{first.manifest_path}; preprocess every sequence with one configuration")
            first = first or groups
            self.groups[name] = groups
            for i in range(len(frames)):
                options = [(w, self._candidates(groups, w, i)) for w in groups.windows_of(i)]
                options = [(w, js) for w, js in options if js]
                if not options:
                    raise DataFormatError(f"{groups.manifest_path}: scan {frames[i]} shares no window with another "
                                          f"scan within max_frame_distance={max_frame_distance}")
                self.frames.append((name, i))
                self.partners.append(options)
        if not self.frames:
            raise ConfigError(f"{self.root}: no scans in sequences {list(sequences)}")
        self.items = [f"{sequence}/{self.groups[sequence].frames[i]}" for sequence, i in self.frames]

    def _candidates(self, groups: SequenceGroups, w: int, i: int) -> list[int]:
        """The scans of window w other than i, at most max_frame_distance from it."""
        a, b = groups.windows[w]
        near = range(max(a, i - self.max_frame_distance), min(b, i + self.max_frame_distance + 1))
        return [j for j in near if j != i]

    def pick(self, index: int, rng: np.random.Generator) -> tuple[int, int]:
        """(window, scan index of x_j) for item `index`: a window holding x_i with another scan
        near it, uniformly, then one of those scans uniformly."""
        options = self.partners[index]
        w, candidates = options[rng.integers(len(options))]
        return w, candidates[rng.integers(len(candidates))]

    def __getitem__(self, index: int) -> dict:
        sequence, i = self.frames[index]
        groups = self.groups[sequence]
        pair_rng, rng1, rng2, mask_rng, visible_rng = self.rng(index).spawn(5)
        w, j = self.pick(index, pair_rng)
        view1 = self._view(sequence, groups, w, i, self.view1_transforms, rng1)
        view2 = self._view(sequence, groups, w, j, self.view2_transforms, rng2)
        shared = np.intersect1d(view1["group"][view1["group"] >= 0], view2["group"][view2["group"] >= 0])
        masked = self.choose_masked(shared, mask_rng)
        removed = np.isin(view1["group"], masked)
        query = self.queries(view1["coord"][removed], view1["group"][removed], view1["intensity"][removed, 0],
                             mask_rng, self.max_query_points)
        view1 = {k: (v[~removed] if is_point_key(k) else v) for k, v in view1.items()}
        if self.visible_query_points:
            visible = self.queries(view1["coord"], np.full(len(view1["coord"]), -1, dtype=np.int64),
                                   view1["intensity"][:, 0], visible_rng, self.visible_query_points)
            query = {k: np.concatenate([query[k], visible[k]]) for k in query}
        both = np.intersect1d(view1["group"], view2["group"])
        for view in (view1, view2):
            view["group"] = np.where(np.isin(view["group"], both), view["group"], -1)
            self.add_feat(view)
        return {"view1": view1, "view2": view2, "query": query, "name": self.name(index),
                "pair": f"{sequence}/{groups.frames[j]}", "window": w}

    def _view(self, sequence: str, groups: SequenceGroups, w: int, i: int, transforms: list,
              rng: np.random.Generator) -> dict:
        """Scan i with window w's group ids, augmented."""
        view = sk.read_scan_sample(self.root, sequence, groups.frames[i], self.label_config if self.labels else None)
        view["group"] = groups.ids(w, i, len(view["point_index"])).astype(np.int64)
        return augment(view, transforms, rng)

    def choose_masked(self, shared: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """round(mask_ratio * shared) of the shared groups, at most max_masked_groups and leaving
        at least one, drawn uniformly."""
        count = min(round(self.mask_ratio * len(shared)), self.max_masked_groups, max(len(shared) - 1, 0))
        return np.sort(rng.choice(shared, size=count, replace=False)) if count else shared[:0]

    def queries(self, points: np.ndarray, group: np.ndarray, intensity: np.ndarray, rng: np.random.Generator,
                limit: int) -> dict:
        """Queries on the rays from the origin through up to `limit` of `points` (those farther
        than surface_distance from the sensor), drawn uniformly: behind, in front of and before
        each; `group` and `intensity` are each point's."""
        far = np.linalg.norm(points.astype(np.float64), axis=1) > self.surface_distance
        points, group, intensity = points[far], group[far], intensity[far]
        chosen = np.sort(rng.choice(len(points), size=min(len(points), limit), replace=False))
        p = points[chosen].astype(np.float64)
        distance = np.linalg.norm(p, axis=1, keepdims=True)
        direction = p / np.maximum(distance, np.finfo(np.float64).tiny)
        # u in (0, 1): an endpoint would put a query on the surface (offset 0)
        u = np.clip(rng.random((3, len(p), 1)), 1e-6, 1 - 1e-6)
        d = self.surface_distance
        coord = np.concatenate([p + d * u[0] * direction, p - d * u[1] * direction, u[2] * p])
        offset = np.concatenate([d * u[0], -d * u[1], (u[2] - 1) * distance])[:, 0]
        surface = intensity[chosen].astype(np.float32)
        return {"coord": coord.astype(np.float32), "surface_offset": offset.astype(np.float32),
                "surface_intensity": np.concatenate([surface, surface, np.full_like(surface, np.nan)]),
                "group": np.tile(group[chosen], 3).astype(np.int64)}

    def check(self, full: bool = True, progress: bool = True, indices=None) -> None:
        """Check the scans (and their group ids) before work starts: each scan exists and holds a
        whole number of points and at least one, every window file holding it exists, indexes the
        right scans and has one id per point; with `labels`, the label files match; with `full`,
        also read the scans and their ids. `indices` limits the check to those items' scans (the
        windows they pair in are checked for them; their partners x_j are checked as items of
        their own). Raises DataFormatError naming the first bad file."""
        items = range(len(self)) if indices is None else indices
        sizes: dict[tuple[str, int], dict[int, int]] = {}  # (sequence, window) -> {scan: points}
        for index in tqdm(items, desc=f"checking {self.root}", unit="scan", disable=not progress):
            sequence, i = self.frames[index]
            groups = self.groups[sequence]
            scan = sk.scan_path(self.root, sequence, groups.frames[i])
            num_points = sk.scan_size(scan, allow_empty=False)
            if self.labels:
                sk.label_size(sk.label_path(self.root, sequence, groups.frames[i]), num_points)
            if full:
                sk.read_scan(scan)
            for w, _ in self.partners[index]:
                sizes.setdefault((sequence, w), {})[i] = num_points
                if full:
                    groups.ids(w, i, num_points)
        for (sequence, w), scans in sizes.items():
            self.groups[sequence].check_window(w, scans)
