"""Mean-shift clustering with a flat kernel, vectorised in torch.

Mean shift (Comaniciu & Meer, "Mean shift: a robust approach toward feature space analysis",
IEEE TPAMI 24(5), 2002) moves each seed to the mean of the points within the bandwidth h of it
until it stops moving; the modes reached are the clusters. `mean_shift` reproduces
scikit-learn's `MeanShift(bandwidth=h, bin_seeding=True)` with its other defaults
(min_bin_freq=1, cluster_all=True, max_iter=300), rule for rule (read from scikit-learn 1.9):

- seeds: `get_bin_seeds` (`bin_seeds` here): the float32 centres of the cells of side h (index
  round(x / h)) holding at least min_bin_freq points, in the order of each cell's first point;
  the points themselves when every point has a cell of its own;
- window: the points with ||x - m|| <= h, boundary included (sklearn's radius_neighbors keeps
  squared distances <= h**2);
- a seed stops once its mean moves by <= 1e-3 h, or after max_iter + 1 means; its intensity is
  the size of the window its last mean came from; seeds with an empty window are dropped;
- merge: distinct modes sorted by (intensity, coordinates), descending (a mode reached by several
  seeds takes the intensity of the last); each mode kept removes the later ones within h
  (float64 distances, as sklearn);
- labels: every point takes its nearest kept mode (the first on ties).
Where sklearn raises (no seed has a point within h), this falls back to the points as seeds
(sklearn's bin_seeding=False): every non-empty input gets labels.

Method. All active seeds step together, once per distinct place (seeds at the same place have
the same windows from then on, sums being exact, below); a seed leaves once it stops. The first
step, from the cell centres, is taken point by point: a point can only be in the windows of the
centres of the cells around its own (index within 1 in each coordinate), enumerated one
coordinate at a time while the partial sum of squares stays <= h**2 (up to D = 6). Later steps
are taken seed by seed: seeds are grouped by the cell of side 2h they are in, and a group is
given the points of every cell whose centroid is within h + the group's radius + the cell's
radius of the group's centroid; each seed's window is then tested exactly among them
(torch.cdist) and summed (bmm). Groups of similar size and candidate count are batched, padded.

Exactness. The points are moved to a fixed-point frame, (x - min) * 2**k rounded to integers,
k as large as keeps any window's sum of offsets from an integer origin below 2**52: float64 adds
those exactly, in any order. A seed's path then depends only on its windows, not on how seeds
are grouped or chunked, on threads or on the device's summation order: results are
deterministic and independent of max_pairs. The frame's resolution, 2**-k, is ~1e-10 for 1e5
points at h = 0.6, far below float32's.

Memory. `max_pairs` bounds what is held at once: (seed, candidate point) pairs, ~17 bytes each
(distance, window flag, float64 weight), a block's candidate points, ~8 D + 40 bytes each
(float64 offsets, their positions while gathered), and seed-to-cell, point-to-cell-centre and
cell-to-mode distances: ~100 MB at the default 2**20 for D = 5. One seed's candidates are never
split, so the bound is really max(max_pairs, N) candidates; nothing is N x N.

Threads. torch.cdist opens an OpenMP parallel region for as few as ~400 distances; on a CPU
oversubscribed by other processes each such region can wait for a descheduled thread (ms where
it takes us), so there one torch thread is faster than several.
"""

from __future__ import annotations

import math

import torch

ENUMERATED_DIMENSIONS = 6  # the first step enumerates up to 3**D cell centres per point
GROUP = 2.0  # later steps group seeds by cells of GROUP h (measured best on 1e5 blob points)


def bin_seeds(x: torch.Tensor, bin_size: float, min_bin_freq: int = 1) -> torch.Tensor:
    """sklearn's get_bin_seeds: float32 centres of the grid cells (side bin_size, index
    round(x / bin_size)) holding at least min_bin_freq points, ordered by their first point; x
    itself when bin_size is 0 or there are as many seeds as points."""
    if bin_size == 0 or len(x) == 0:
        return x
    cells = _Cells(x, bin_size)
    seeds = cells.seeds(min_bin_freq)
    return x if len(seeds) == len(x) else cells.centres(seeds)


@torch.no_grad()
def mean_shift(x: torch.Tensor, bandwidth: float, *, min_bin_freq: int = 1, max_iter: int = 300,
               max_pairs: int = 1 << 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat-kernel mean shift of the (N, D) points x with bin seeding, as sklearn's
    MeanShift(bandwidth, bin_seeding=True). Returns labels (N,) long, each point's nearest mode,
    and the modes (K, D) in x's dtype, strongest first. Runs on x's device."""
    if x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"mean_shift needs an (N, D) floating-point tensor, got {tuple(x.shape)} {x.dtype}")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device), x.new_zeros((0, x.shape[1]))
    if not torch.isfinite(x).all():
        raise ValueError("mean_shift got non-finite points")
    grid = _Grid(x, bandwidth)
    seeds = grid.cells.seeds(min_bin_freq)
    if len(seeds) == len(x):  # sklearn then seeds with the points
        modes, sizes = _climb(grid, grid.to_frame(x), None, max_iter, max_pairs)
    else:
        modes, sizes = _climb(grid, grid.to_frame(grid.cells.centres(seeds)), seeds, max_iter, max_pairs)
    if not (sizes > 0).any():
        modes, sizes = _climb(grid, grid.to_frame(x), None, max_iter, max_pairs)
    modes = _merge(grid.from_frame(modes[sizes > 0], x.dtype), sizes[sizes > 0], bandwidth)
    return grid.nearest(x, modes, max_pairs), modes


class _Cells:
    """The points binned by cell of side `size`, index round(x / size): each point's index
    (N, D) and cell, cells numbered in lexicographic order of their index; the points per cell,
    each cell's first point; the cells' mixed-radix keys (sorted), None where they would
    overflow int64."""

    def __init__(self, x: torch.Tensor, size: float):
        self.size = size
        self.index = torch.round(x / size).long()
        self.low = self.index.min(0).values
        self.radix = self.index.max(0).values - self.low + 1
        self.strides = [math.prod(self.radix.tolist()[d + 1:]) for d in range(x.shape[1])]
        fits = math.prod(self.radix.tolist()) < 1 << 62
        if fits:
            key = self.key(self.index)
        else:  # renumber densely after each coordinate
            key = torch.zeros(len(x), dtype=torch.long, device=x.device)
            for column, n in zip((self.index - self.low).T, self.radix.tolist(), strict=True):
                key = torch.unique(key, return_inverse=True)[1] * n + column
        keys, self.inverse, self.counts = torch.unique(key, return_inverse=True, return_counts=True)
        self.keys = keys if fits else None
        self.first = torch.full((len(self.counts),), len(x), dtype=torch.long, device=x.device)
        self.first.scatter_reduce_(0, self.inverse, torch.arange(len(x), device=x.device), "amin")

    def key(self, index: torch.Tensor) -> torch.Tensor:
        """Mixed-radix key of cell indices (..., D), lexicographic, linear in the index."""
        return ((index - self.low) * torch.tensor(self.strides, device=index.device)).sum(-1)

    def seeds(self, min_bin_freq: int) -> torch.Tensor:
        """Cells holding at least min_bin_freq points, in the order of their first point."""
        order = torch.argsort(self.first)
        return order[self.counts[order] >= min_bin_freq]

    def centres(self, cells: torch.Tensor) -> torch.Tensor:
        """The cells' centres, float32 as sklearn's seeds."""
        return self.index[self.first[cells]].float() * self.size


class _Grid:
    """The points in the fixed-point frame, sorted by cell of side h (then a point far from all:
    the padding of candidate lists), with each cell's first position in that order, centroid and
    radius (its farthest point from the centroid); mean-shift steps and labelling on them."""

    def __init__(self, x: torch.Tensor, h: float):
        reach = (2 + GROUP * math.sqrt(x.shape[1])) * h  # > farthest a window point is from its group's origin
        extent = float((x.max(0).values - x.min(0).values).max()) + 8 * reach
        self.scale = 2.0 ** math.floor(52 - math.log2(max(len(x) * reach, extent)))
        self.low, self.h = x.min(0).values.double(), h * self.scale
        self.cells = _Cells(x, h)
        order = torch.argsort(self.cells.inverse, stable=True)
        points = torch.round(self.to_frame(x[order]))
        self.index = self.cells.index[order]
        far = points.max(0).values + 4 * reach * self.scale  # farther than 3 reach from any query
        self.points = torch.cat([points, far[None]])
        counts = self.cells.counts
        self.starts = torch.cumsum(counts, 0) - counts
        cell = self.cells.inverse[order]
        self.centre = points.new_zeros((len(counts), x.shape[1])).index_add_(0, cell, points) / counts[:, None]
        spread = torch.linalg.vector_norm(points - self.centre[cell], dim=1)
        self.radius = points.new_zeros(len(counts)).scatter_reduce_(0, cell, spread, "amax")

    def to_frame(self, t: torch.Tensor) -> torch.Tensor:
        """Coordinates in the frame (float64, not rounded)."""
        return (t.double() - self.low) * self.scale

    def from_frame(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return (t / self.scale + self.low).to(dtype)

    @property
    def enumerable(self) -> bool:
        """Whether centre_step applies: cell keys fit int64, and D <= ENUMERATED_DIMENSIONS."""
        return self.cells.keys is not None and self.points.shape[1] <= ENUMERATED_DIMENSIONS

    def centre_step(self, cells: torch.Tensor, queries: torch.Tensor, max_pairs: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from the centres of `cells` (queries: those centres in the frame): the means
        of their windows and the window sizes. Each point visits the centres k with
        |k_d - j_d| <= 1 (j: its cell), one coordinate at a time, keeping partial sums of
        squares <= h**2."""
        device, n_points, dims = queries.device, len(self.points) - 1, queries.shape[1]
        query_of_cell = torch.full((len(self.cells.counts),), -1, dtype=torch.long, device=device)
        query_of_cell[cells] = torch.arange(len(cells), device=device)
        origins = torch.round(queries)
        sums, counts = torch.zeros_like(queries), torch.zeros(len(cells), dtype=torch.long, device=device)
        bound = self.h * self.h * (1 + 1e-9)
        chunk = max(1, max_pairs // 3 ** dims)
        keys = self.cells.keys
        assert keys is not None, "centre_step needs an enumerable grid"
        for i in range(0, n_points, chunk):
            k = self.index[i:i + chunk, :, None] + torch.tensor([-1, 0, 1], device=device)  # (n, D, 3)
            centre = (k.float() * self.cells.size).double()  # sklearn's float32 seed coordinates
            squares = (self.points[i:i + len(k), :, None] - (centre - self.low[:, None]) * self.scale) ** 2
            squares[(k < self.cells.low[:, None]) | (k >= (self.cells.low + self.cells.radix)[:, None])] = math.inf
            point = torch.arange(len(k), device=device)
            partial, key = torch.zeros(len(k), dtype=torch.float64, device=device), self.cells.key(k[..., 0])
            for d, stride in enumerate(self.cells.strides):  # extend the partial centres by a coordinate
                extended = partial[:, None] + squares[point, d]
                live = torch.nonzero(extended.view(-1) <= bound)[:, 0]
                row = live // 3
                point, partial, key = point[row], extended.view(-1)[live], key[row] + live % 3 * stride
            cell = torch.searchsorted(keys, key).clamp(max=len(keys) - 1)
            query = torch.where(keys[cell] == key, query_of_cell[cell], -1)
            inside = (query >= 0) & (torch.sqrt(partial) <= self.h)
            point, query = point[inside] + i, query[inside]
            sums.index_add_(0, query, self.points[point] - origins[query])
            counts.index_add_(0, query, torch.ones_like(query))
        return origins + sums / counts.clamp(min=1)[:, None], counts

    def step(self, queries: torch.Tensor, max_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from any queries: the means of their windows and the window sizes. Queries
        are grouped by the cell of side GROUP h they are in; a group's candidates are the points of
        the cells whose centroid is within h + the group's radius + the cell's radius of the
        group's centroid. Groups alike in size and in candidate count (each within a factor 2)
        are batched, padded, at most max_pairs (query, candidate) pairs at a time."""
        device = queries.device
        grouping = _Cells(queries, GROUP * self.h)
        group_of, members = grouping.inverse, grouping.counts
        centre = queries.new_zeros((len(members), queries.shape[1])).index_add_(0, group_of, queries)
        centre /= members[:, None]
        spread = torch.linalg.vector_norm(queries - centre[group_of], dim=1)
        reach = self.h + 1 + queries.new_zeros(len(members)).scatter_reduce_(0, group_of, spread, "amax")  # + rounding
        group, cell = _pairs(centre, self.centre, lambda far, rows: far.sub_(self.radius) <= reach[rows, None],
                             max_pairs)
        length = torch.zeros(len(members), dtype=torch.long, device=device)
        length.index_add_(0, group, self.cells.counts[cell])
        size_class = torch.floor(torch.log2(members.double())).long()
        order = torch.argsort(size_class * (int(length.max()) + 1) + length, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=device)  # groups renumbered in that order
        by_rank = torch.argsort(rank[group], stable=True)
        group, cell = rank[group][by_rank], cell[by_rank]
        first_pair = torch.searchsorted(group, torch.arange(len(order) + 1, device=device)).tolist()
        rows = torch.argsort(rank[group_of], stable=True)  # queries, by group
        row_group = rank[group_of][rows]
        members, origins = members[order], torch.round(centre[order])
        slot = torch.arange(len(rows), device=device) - (torch.cumsum(members, 0) - members)[row_group]
        n_members, lengths, size_classes = members.tolist(), length[order].tolist(), size_class[order].tolist()
        means, counts = torch.empty_like(queries), torch.empty(len(queries), dtype=torch.long, device=device)
        first, first_row = 0, 0
        while first < len(order):  # a block of groups
            stop = first + 1
            while (stop < len(order) and size_classes[stop] == size_classes[first]
                   and 2 * lengths[stop] >= lengths[first]
                   and (stop + 1 - first) * lengths[first] * n_members[first] <= max_pairs):
                stop += 1
            block = slice(first_row, first_row + sum(n_members[first:stop]))
            pairs = slice(first_pair[first], first_pair[stop])
            candidates = self.points[self._index(group[pairs] - first, cell[pairs], stop - first, lengths[first])]
            candidates -= origins[first:stop, None]
            at = (row_group[block] - first, slot[block])
            padded = queries.new_zeros((stop - first, max(n_members[first:stop]), queries.shape[1]))
            padded[at] = queries[rows[block]] - origins[row_group[block]]
            sums, count = torch.empty_like(padded), torch.empty(padded.shape[:2], dtype=torch.long, device=device)
            part = max(1, max_pairs // ((stop - first) * max(lengths[first], 1)))
            for j in range(0, padded.shape[1], part):  # a group too large for one block: its queries in parts
                window = torch.cdist(padded[:, j:j + part], candidates,
                                     compute_mode="donot_use_mm_for_euclid_dist") <= self.h
                count[:, j:j + part] = window.sum(2)
                sums[:, j:j + part] = torch.bmm(window.to(candidates.dtype), candidates)
            counts[rows[block]] = count[at]
            means[rows[block]] = origins[row_group[block]] + sums[at] / count[at].clamp(min=1)[:, None]
            first, first_row = stop, block.stop
        return means, counts

    def nearest(self, x: torch.Tensor, modes: torch.Tensor, max_pairs: int) -> torch.Tensor:
        """Index of each point's nearest mode (the first on ties). A point's candidates are the
        modes that may be nearest to some point of its cell: within the distance of the mode
        nearest to the cell's centroid plus twice the cell's radius (plus rounding)."""
        centre, radius = self.from_frame(self.centre, torch.float64), (self.radius + 1) / self.scale

        def may_be_nearest(far, rows):  # 1e-5: float32 rounding of the points' own distances
            return far <= (far.min(1, keepdim=True).values + 2 * radius[rows, None]) * (1 + 1e-5)

        cell, mode = _pairs(centre, modes.double(), may_be_nearest, max_pairs)
        candidates = _padded(cell, mode, len(centre), len(modes))
        padded = torch.cat([modes, torch.full_like(modes[:1], math.inf)])  # padding: infinitely far
        labels, chunk = [], max(1, max_pairs // candidates.shape[1])
        for i in range(0, len(x), chunk):
            options = candidates[self.cells.inverse[i:i + chunk]]
            distance = torch.cdist(x[i:i + chunk, None], padded[options], compute_mode="donot_use_mm_for_euclid_dist")
            labels.append(options.gather(1, distance[:, 0].argmin(1, keepdim=True))[:, 0])
        return torch.cat(labels)

    def _index(self, row: torch.Tensor, cell: torch.Tensor, n_rows: int, width: int) -> torch.Tensor:
        """(n_rows, width) positions in points: the points of each row's cells, given as
        (row, cell) pairs sorted by row, then the far point."""
        pair, point = _expand(self.starts[cell], self.cells.counts[cell])
        return _padded(row[pair], point, n_rows, len(self.points) - 1, width)


def _pairs(a: torch.Tensor, b: torch.Tensor, test, max_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (i, j) for which test(distances of a[rows] to b, rows) holds, sorted; max_pairs
    distances at a time."""
    pairs, chunk = [], max(1, max_pairs // len(b))
    for i in range(0, len(a), chunk):
        far = torch.cdist(a[i:i + chunk], b, compute_mode="donot_use_mm_for_euclid_dist")
        row, column = torch.nonzero(test(far, slice(i, i + chunk)), as_tuple=True)
        pairs.append(torch.stack([row + i, column]))
    return tuple(torch.cat(pairs, 1))


def _expand(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranges [start, start + count) laid end to end: each element's range and its value."""
    item = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    offset = torch.arange(len(item), device=counts.device) - (torch.cumsum(counts, 0) - counts)[item]
    return item, starts[item] + offset


def _padded(row: torch.Tensor, value: torch.Tensor, n_rows: int, fill: int, width: int | None = None) -> torch.Tensor:
    """A ragged table given as (row, value) sorted by row, as an (n_rows, width) matrix padded
    with fill (width: the longest row by default)."""
    length = torch.bincount(row, minlength=n_rows)
    column = torch.arange(len(row), device=row.device) - (torch.cumsum(length, 0) - length)[row]
    width = int(length.max()) if width is None else width
    table = torch.full((n_rows, width), fill, dtype=value.dtype, device=row.device)
    table[row, column] = value
    return table


def _climb(grid: _Grid, modes: torch.Tensor, cells: torch.Tensor | None, max_iter: int, max_pairs: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Step all seeds (modes: their starts in the frame; cells: their cells when they start at
    cell centres) until each stops: the modes and their intensities (window sizes, 0: dropped)."""
    device = modes.device
    iterations = torch.zeros(len(modes), dtype=torch.long, device=device)
    sizes = torch.zeros(len(modes), dtype=torch.long, device=device)
    active, from_centres = torch.arange(len(modes), device=device), cells is not None and grid.enumerable
    while len(active):
        old = modes[active]
        if from_centres and cells is not None:  # (from_centres implies cells)
            new, count = grid.centre_step(cells, old, max_pairs)
        else:  # seeds at the same place step alike (exact sums): once per place
            places, place = torch.unique(old, dim=0, return_inverse=True)
            new, count = (result[place] for result in grid.step(places, max_pairs))
        from_centres = False
        empty = count == 0
        done = empty | (torch.linalg.vector_norm(new - old, dim=1) <= 1e-3 * grid.h) | (iterations[active] == max_iter)
        modes[active[~empty]] = new[~empty]
        sizes[active[done]] = count[done]
        iterations[active[~done]] += 1
        active = active[~done]
    return modes, sizes


def _merge(modes: torch.Tensor, sizes: torch.Tensor, h: float) -> torch.Tensor:
    """sklearn's post-processing: distinct modes sorted by (intensity, coordinates) descending;
    each one kept removes the later ones within h."""
    distinct, inverse = torch.unique(modes, dim=0, return_inverse=True)  # lexicographic order
    last = torch.full((len(distinct),), -1, dtype=torch.long, device=modes.device)
    last.scatter_reduce_(0, inverse, torch.arange(len(modes), device=modes.device), "amax")
    distinct, intensity = distinct.flip(0), sizes[last].flip(0)
    distinct = distinct[torch.sort(intensity, descending=True, stable=True).indices]
    alive = torch.ones(len(distinct), dtype=torch.bool, device=modes.device)
    wide = distinct.double()  # sklearn: squared float64 distances against h**2
    kept: list[int] = []
    i = 0
    while True:
        after = torch.nonzero(alive[i:])
        if len(after) == 0:
            return distinct[kept]
        i += int(after[0])
        kept.append(i)
        alive &= ((wide - wide[i]) ** 2).sum(1) > h * h
        i += 1
