"""Mean-shift clustering with a flat kernel, vectorised in torch.

Mean shift (Comaniciu & Meer, "Mean shift: a robust approach toward feature space analysis",
IEEE TPAMI 24(5), 2002) moves each seed to the mean of the points within `bandwidth` of it until
it stops moving; the modes it reaches are the clusters. `mean_shift` gives the result of
scikit-learn's `MeanShift(bandwidth=h, bin_seeding=True)` (other arguments at their defaults:
min_bin_freq=1, cluster_all=True, max_iter=300), step for step:

- seeds: `get_bin_seeds` (`bin_seeds` here): the centres of the grid cells of side h, cell index
  round(x / h), that hold at least min_bin_freq points, in the order of each cell's first point;
  the points themselves when every point has a cell of its own;
- a point is in the window of mode m when ||x - m|| <= h (sklearn's radius_neighbors: boundary
  included);
- a seed stops when its mean moves by <= 1e-3 h, or after max_iter + 1 means; its intensity is
  the size of the window its last mean came from; seeds whose window is empty are dropped;
- merge: distinct modes sorted by (intensity, coordinates) descending (a mode reached by several
  seeds takes the intensity of the last one); each mode kept removes the later ones within h;
- every point is labelled with its nearest kept mode (cluster_all=True; ties: the first).

Where sklearn raises (no seed has a point within h) this falls back to the points as seeds
(sklearn's bin_seeding=False), so every non-empty input gets labels.

Speed. All seeds climb at once, each on a neighbour list (a Verlet list): the points within
h + skin of where the list was built, found through the cells (a cell is a candidate when its
centroid is within h + skin + the cell's radius). While a seed stays within skin of that place
its window is inside the list; when it moves farther, its list is rebuilt. The first lists have
no skin (the first step, from a cell centre towards the mode, is about h / 2), later ones
SKIN h. A window is kept up to date by adding the points that enter it and removing those that
leave. Seeds stop computing as they converge (active set).

Memory is bounded by `max_pairs`: lists are built and iterated in blocks of at most max_pairs
(seed, point) pairs (at least one seed: at most max(max_pairs, N) pairs), seeds are tested
against cells and points against modes in chunks of max_pairs distances; never N x N. A pair
costs about 4 D + 20 bytes at float32 (list offsets, candidate indices, window flags), ~80 MB
for the default 2**21 pairs at D = 5.

Each seed's arithmetic uses only its own list, in an order set by the data, so the result does
not depend on max_pairs; on a given device it is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

SKIN = 0.5  # Verlet skin after the first step, in bandwidths (lists reach 1.5 h)


def bin_seeds(x: torch.Tensor, bin_size: float, min_bin_freq: int = 1) -> torch.Tensor:
    """sklearn's get_bin_seeds: float32 centres of the grid cells (side bin_size, index
    round(x / bin_size)) holding at least min_bin_freq points, ordered by their first point; x
    itself when bin_size is 0 or there are as many seeds as points."""
    if bin_size == 0 or len(x) == 0:
        return x
    _, counts, first = _cells(x, bin_size)
    order = torch.argsort(first)
    first = first[order][counts[order] >= min_bin_freq]
    seeds = torch.round(x[first] / bin_size).float()
    return x if len(seeds) == len(x) else seeds * bin_size


def mean_shift(x: torch.Tensor, bandwidth: float, *, min_bin_freq: int = 1, max_iter: int = 300,
               max_pairs: int = 1 << 21) -> tuple[torch.Tensor, torch.Tensor]:
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
    modes, sizes = _climb(grid, bin_seeds(x, bandwidth, min_bin_freq), bandwidth, max_iter, max_pairs)
    if not (sizes > 0).any():
        modes, sizes = _climb(grid, x, bandwidth, max_iter, max_pairs)
    modes = _merge(modes[sizes > 0], sizes[sizes > 0], bandwidth)
    return _nearest(x, modes, max_pairs), modes


def _cells(x: torch.Tensor, size: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each point's cell (index round(x / size)), cells numbered in lexicographic order of their
    indices; the points per cell and each cell's first point."""
    index = torch.round(x / size)
    index = (index - index.min(0).values).long()
    key, span = torch.zeros(len(x), dtype=torch.long, device=x.device), 1
    for column in index.T:  # mixed-radix key, renumbered densely before it could overflow
        n = int(column.max()) + 1
        if span * n >= 1 << 62:
            key = torch.unique(key, return_inverse=True)[1]
            span = int(key.max()) + 1
        key, span = key * n + column, span * n
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    first = torch.full((len(counts),), len(x), dtype=torch.long, device=x.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(x), device=x.device), "amin")
    return inverse, counts, first


class _Grid:
    """The points grouped by cell of side h: sorted by cell, each cell's first position in that
    order, size, centroid and radius (its farthest point from the centroid)."""

    def __init__(self, x: torch.Tensor, h: float):
        inverse, self.counts, _ = _cells(x, h)
        self.points = x[torch.argsort(inverse, stable=True)]
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.centre = x.new_zeros((len(self.counts), x.shape[1])).index_add_(0, inverse, x)
        self.centre /= self.counts[:, None]
        spread = torch.linalg.vector_norm(x - self.centre[inverse], dim=1)
        self.radius = x.new_zeros(len(self.counts)).scatter_reduce_(0, inverse, spread, "amax")

    def lists(self, queries: torch.Tensor, reach: float, max_pairs: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Blocks (rows, offsets): for the queries `rows`, the points within `reach` of each as
        offsets from it, (len(rows), L, D), in cell then point order, padded with offsets
        farther than 2 reach from it."""
        device = queries.device
        pairs, step = [], max(1, max_pairs // len(self.counts))
        for i in range(0, len(queries), step):  # candidate cells, max_pairs distances at a time
            far = torch.cdist(queries[i:i + step], self.centre, compute_mode="donot_use_mm_for_euclid_dist")
            query, cell = torch.nonzero(far <= reach + self.radius, as_tuple=True)
            pairs.append(torch.stack([query + i, cell]))
        query, cell = torch.cat(pairs, 1)
        bound = torch.zeros(len(queries), dtype=torch.long, device=device).index_add_(0, query, self.counts[cell])
        order = torch.argsort(bound, descending=True, stable=True)  # blocks of similar lengths
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=device)
        row = rank[query]
        by_row = torch.argsort(row, stable=True)
        query, cell, row = query[by_row], cell[by_row], row[by_row]
        first_pair = torch.searchsorted(row, torch.arange(len(order) + 1, device=device)).tolist()
        bound = bound[order].tolist()
        start = 0
        while start < len(order):
            stop = min(len(order), start + max(1, max_pairs // max(bound[start], 1)))
            block = slice(first_pair[start], first_pair[stop])
            yield order[start:stop], self._offsets(queries, query[block], row[block] - start, cell[block],
                                                   stop - start, reach)
            start = stop

    def _offsets(self, queries, query, row, cell, n_rows, reach) -> torch.Tensor:
        """Padded (n_rows, L, D) offsets from each query to the points of its cells within reach;
        one (query, its row, cell) per candidate cell, sorted by row."""
        n = self.counts[cell]
        pair = torch.repeat_interleave(torch.arange(len(cell), device=cell.device), n)
        point = torch.arange(len(pair), device=cell.device) + (self.starts[cell] - (torch.cumsum(n, 0) - n))[pair]
        offsets = self.points[point] - queries[query[pair]]
        near = torch.linalg.vector_norm(offsets, dim=1) <= reach
        row, offsets = row[pair][near], offsets[near]
        lengths = torch.bincount(row, minlength=n_rows)
        column = torch.arange(len(row), device=row.device) - (torch.cumsum(lengths, 0) - lengths)[row]
        padded = offsets.new_zeros((n_rows, int(lengths.max()) if len(row) else 0, offsets.shape[1]))
        padded[..., 0] = 2 * reach
        padded[row, column] = offsets
        return padded


def _climb(grid: _Grid, seeds: torch.Tensor, h: float, max_iter: int, max_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Move every seed to its mode: the modes and their intensities (window sizes; 0: dropped)."""
    device = seeds.device
    modes = seeds.to(grid.points.dtype).clone()
    iterations = torch.zeros(len(seeds), dtype=torch.long, device=device)
    sizes = torch.zeros(len(seeds), dtype=torch.long, device=device)
    moving, skin = torch.arange(len(seeds), device=device), 0.0
    while len(moving):
        stopped = torch.zeros(len(seeds), dtype=torch.bool, device=device)
        for rows, offsets in grid.lists(modes[moving], h + skin, max_pairs):
            _shift(offsets, moving[rows], modes, iterations, sizes, stopped, h, skin, max_iter)
        moving, skin = moving[~stopped[moving]], SKIN * h
    return modes, sizes


def _shift(offsets, ids, modes, iterations, sizes, stopped, h, skin, max_iter) -> None:
    """Iterate the seeds `ids` on their lists (offsets from the seeds' modes) until each stops or
    moves farther than skin; writes modes, iterations, sizes and stopped."""
    origin, shift = modes[ids], torch.zeros_like(modes[ids])
    inside = torch.zeros(offsets.shape[:2], dtype=torch.bool, device=offsets.device)
    total, count = torch.zeros_like(shift), torch.zeros(len(ids), dtype=torch.long, device=ids.device)
    while len(ids):
        now = torch.cdist(offsets, shift[:, None], compute_mode="donot_use_mm_for_euclid_dist")[..., 0] <= h
        row, column = torch.nonzero(now ^ inside, as_tuple=True)
        sign = now[row, column].long() * 2 - 1  # +1 entered the window, -1 left it
        total.index_add_(0, row, offsets[row, column] * sign[:, None].to(total.dtype))
        count.index_add_(0, row, sign)
        mean = total / count.clamp(min=1)[:, None]
        empty = count == 0
        done = empty | (torch.linalg.vector_norm(mean - shift, dim=1) <= 1e-3 * h) | (iterations[ids] == max_iter)
        leave = done | (torch.linalg.vector_norm(mean, dim=1) > skin)
        moved = leave & ~empty
        modes[ids[moved]] = origin[moved] + mean[moved]
        sizes[ids[done]] = count[done]
        stopped[ids[done]] = True
        iterations[ids[~done]] += 1
        if leave.any():
            stay = ~leave
            ids, origin, offsets, now, total, count, mean = (
                ids[stay], origin[stay], offsets[stay], now[stay], total[stay], count[stay], mean[stay])
        inside, shift = now, mean


def _merge(modes: torch.Tensor, sizes: torch.Tensor, h: float) -> torch.Tensor:
    """sklearn's post-processing: distinct modes sorted by (intensity, coordinates) descending;
    each one kept removes the later ones within h."""
    distinct, inverse = torch.unique(modes, dim=0, return_inverse=True)  # lexicographic order
    last = torch.full((len(distinct),), -1, dtype=torch.long, device=modes.device)
    last.scatter_reduce_(0, inverse, torch.arange(len(modes), device=modes.device), "amax")
    distinct, intensity = distinct.flip(0), sizes[last].flip(0)
    distinct = distinct[torch.sort(intensity, descending=True, stable=True).indices]
    alive = torch.ones(len(distinct), dtype=torch.bool, device=modes.device)
    kept, i = [], 0
    while True:
        after = torch.nonzero(alive[i:])
        if len(after) == 0:
            return distinct[kept]
        i += int(after[0])
        kept.append(i)
        alive &= torch.linalg.vector_norm(distinct - distinct[i], dim=1) > h
        i += 1


def _nearest(x: torch.Tensor, modes: torch.Tensor, max_pairs: int) -> torch.Tensor:
    """Index of each point's nearest mode (the first on ties), max_pairs distances at a time."""
    step = max(1, max_pairs // len(modes))
    return torch.cat([torch.cdist(x[i:i + step], modes, compute_mode="donot_use_mm_for_euclid_dist").argmin(1)
                      for i in range(0, len(x), step)])
