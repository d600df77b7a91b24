"""Close pairs and nearest neighbours of points in time and memory linear in their number (cell list).

The points of each frame are binned into cubic cells at least as wide as
the cutoff (plus the largest two radii, for spheres), so a point's partners
lie in its own cell or one of the 26 around it. Cells are keyed by one
integer (frame and cell coordinates), the keys sorted, and each occupied
cell's 13 neighbours "after" it looked up by binary search
(:func:`torch.searchsorted`): no grid is allocated, so sparse or
far-flung coordinates cost nothing extra. Where the cells would save little
(few points, or every pair of a frame at most :data:`DENSE_FACTOR` times
the cells' candidates) the search takes distance matrices instead, as many
frames or rows at once as :data:`DENSE_BLOCK` allows; both give the same
pairs and the same distances to the bit (the norm of the difference, as
:func:`torch.cdist` computes it without matrix products), so a pair's
distance does not depend on the other points or frames. Everything is
torch (any device). Lengths in Angstrom.
"""

from __future__ import annotations

import math

import torch

#: Largest cell key: cells widen (by factors of 2) until frames x cells fit.
_MAX_KEY = 2 ** 62
#: Distances a distance matrix holds at once (several frames, or rows of one frame).
DENSE_BLOCK = 1 << 22
#: Every pair of a frame is a candidate where that is at most DENSE_FACTOR times as many as the cells give:
#: a pair costs less in a distance matrix than a cell pair's (about 8 times less, on one CPU thread), and
#: where the frames hold at most DENSE_PAIRS pairs in all (binning the points would cost more than it saves).
DENSE_FACTOR = 8
DENSE_PAIRS = 1 << 20


class _Search:
    """The points of a search and how to search them: cells (the valid points in (frame, index) order), or None."""

    def __init__(self, points: torch.Tensor, cutoff: float, mask, radius):
        if not cutoff > 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        self.points, self.cutoff = points, float(cutoff)
        n_frames, n = points.shape[:2]
        dev = points.device
        valid = torch.isfinite(points).all(-1)
        if mask is not None:
            valid = valid & mask.to(dev).expand(n_frames, n)
        self.valid = valid
        self.all_valid = bool(valid.all())
        self.radius = None if radius is None else radius.to(device=dev, dtype=points.dtype).expand(n_frames, n)
        per_frame = valid.sum(1)
        every_pair = int((per_frame * (per_frame - 1) // 2).sum())
        self.cells = None
        if every_pair > DENSE_PAIRS:  # the valid points listed (for the cells) only where cells may pay
            self.frame, self.index = valid.nonzero(as_tuple=True)  # sorted by frame, then index
            self.p = points[self.frame, self.index]
            self.r = None if radius is None else self.radius[self.frame, self.index]
            reach = self.cutoff + (0.0 if self.r is None else 2 * float(self.r.max()))
            cells = _cells(self.p, self.frame, n_frames, reach)
            if every_pair > DENSE_FACTOR * cells.candidates:
                self.cells = cells

    def limit(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | float:
        """The distance below which valid points ``a`` and ``b`` (their numbers) are a pair."""
        return self.cutoff if self.r is None else self.r[a] + self.r[b] + self.cutoff

    def cell_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pairs (a, b), a < b, numbers of valid points, and their distances, from the cells (unsorted)."""
        a, b = self.cells.pairs()
        # the norm of the difference: to the bit what torch.cdist gives the distance matrices
        distance = torch.linalg.vector_norm(self.p[a] - self.p[b], dim=-1)
        close = distance < self.limit(a, b)
        return a[close], b[close], distance[close]

    def blocks(self):
        """Distance matrices of the points, :data:`DENSE_BLOCK` distances at a time: (frames, rows, d)."""
        n_frames, n = self.valid.shape
        if n == 0:
            return
        frames = max(1, DENSE_BLOCK // (n * n))
        rows = n if n * n <= DENSE_BLOCK else max(1, DENSE_BLOCK // n)
        for f0 in range(0, n_frames, frames):
            fs = slice(f0, f0 + frames)
            for r0 in range(0, n, rows):
                rs = slice(r0, r0 + rows)
                d = torch.cdist(self.points[fs, rs], self.points[fs], compute_mode="donot_use_mm_for_euclid_dist")
                limit = self.cutoff
                if self.radius is not None:
                    limit = self.radius[fs, rs, None] + self.radius[fs, None, :] + self.cutoff
                ok = d < limit
                if not self.all_valid:
                    ok &= self.valid[fs, rs, None] & self.valid[fs, None, :]
                yield fs, rs, d, ok


def close_pairs(points: torch.Tensor, cutoff: float, mask: torch.Tensor | None = None,
                radius: torch.Tensor | None = None,
                ordered: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every pair of points of a frame closer than ``cutoff`` (or spheres within ``cutoff`` of each other).

    The candidates are the pairs of points in neighbouring cells or, where
    that is fewer, every pair of a frame (:data:`DENSE_BLOCK` distances at a
    time); either way the same pairs and distances come out.

    Parameters
    ----------
    points : torch.Tensor
        (F, N, 3).
    cutoff : float
        Pairs strictly closer than this (plus their radii) are returned; must be positive.
    mask : torch.Tensor, optional
        (F, N) or (N,) bool: points that take part (default: all).
        Points with a non-finite coordinate never do.
    radius : torch.Tensor, optional
        (F, N) or (N,) radii >= 0 of spheres about the points: pairs closer
        than ``radius_i + radius_j + cutoff`` are returned (default: 0).
    ordered : bool
        False: each pair once, ``i < j``. True: every ordered pair ``(i, j)``,
        ``i == j`` included (each point with itself).

    Returns
    -------
    frame, i, j : torch.Tensor
        (P,) long, sorted by frame, then ``i``, then ``j``.
    distance : torch.Tensor
        (P,) in the dtype of ``points``.
    """
    search = _Search(points, cutoff, mask, radius)
    dev = points.device
    if search.cells is None:
        column = torch.arange(points.shape[1], device=dev)
        found = [(torch.zeros(0, dtype=torch.long, device=dev),) * 3 + (points.new_zeros(0),)]
        for fs, rs, d, ok in search.blocks():
            if not ordered:
                ok = ok & (column[rs, None] < column[None, :])
            f, i, j = torch.nonzero(ok, as_tuple=True)
            found.append((f + fs.start, i + rs.start, j, d[f, i, j]))
        return tuple(torch.cat(parts) for parts in zip(*found))
    a, b, distance = search.cell_pairs()
    frame, index = search.frame, search.index
    if ordered:
        own = torch.arange(len(frame), device=dev)
        a, b = torch.cat([a, b, own]), torch.cat([b, a, own])
        distance = torch.cat([distance, distance, distance.new_zeros(len(own))])
    # the valid points are in (frame, index) order, so (a, b) order is (frame, i, j) order
    order = torch.argsort(a * len(frame) + b)
    a, b, distance = a[order], b[order], distance[order]
    return frame[a], index[a], index[b], distance


def nearest_neighbours(points: torch.Tensor, k: int, cutoff: float,
                       mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` nearest other points of every point closer than ``cutoff``, nearest first.

    Parameters
    ----------
    points : torch.Tensor
        (F, N, 3).
    k : int
    cutoff : float
    mask : torch.Tensor, optional
        (F, N) or (N,) bool: points that take part (default: all).

    Returns
    -------
    index : torch.Tensor
        (F, N, k) long: the neighbours, nearest first (equal distances in
        either order); the point itself where it has fewer than ``k``.
    distance : torch.Tensor
        (F, N, k), 0 where there is no neighbour.
    found : torch.Tensor
        (F, N, k) bool: a neighbour is there.
    """
    n_frames, n = points.shape[:2]
    dev = points.device
    search = _Search(points, cutoff, mask, None)
    index = torch.arange(n, device=dev)[None, :, None].repeat(n_frames, 1, k)
    distance = points.new_zeros(n_frames, n, k)
    found = torch.zeros(n_frames, n, k, dtype=torch.bool, device=dev)
    if search.cells is None:
        column = torch.arange(n, device=dev)
        kk = min(k, n)
        for fs, rs, d, ok in search.blocks():
            d = d.masked_fill(~ok | (column[rs, None] == column[None, :]), float("inf"))
            near, which = torch.topk(d, kk, dim=-1, largest=False, sorted=True)
            hit = torch.isfinite(near)
            index[fs, rs, :kk] = torch.where(hit, which, index[fs, rs, :kk])
            distance[fs, rs, :kk] = torch.where(hit, near, 0.0)
            found[fs, rs, :kk] = hit
        return index, distance, found
    a, b, d = search.cell_pairs()
    # both directions, grouped by (frame, point), nearest first: one sort on (frame, point, distance), the
    # distance by the bits of its float32 value (in order for numbers >= 0)
    a, b, d = torch.cat([a, b]), torch.cat([b, a]), torch.cat([d, d])
    row = search.frame[a] * n + search.index[a]
    order = torch.argsort(row * 2 ** 31 + d.float().view(torch.int32).long(), stable=True)
    row, b, d = row[order], b[order], d[order]
    count = torch.bincount(row, minlength=n_frames * n)
    rank = torch.arange(len(row), device=dev) - (torch.cumsum(count, 0) - count)[row]
    take = rank < k
    slot = (row[take] // n, row[take] % n, rank[take])
    index[slot], distance[slot], found[slot] = search.index[b[take]], d[take], True
    return index, distance, found


class _Cells:
    """Points binned into cubic cells (keys sorted), and the cell pairs to compare."""

    def __init__(self, order, start, count, first, second):
        self.order, self.start, self.count = order, start, count  # points by cell; cells' first point, size
        self.first, self.second = first, second  # (Q,) cell pairs: each cell with itself and 13 neighbours
        same = first == second
        sizes = count[first] * count[second]
        self.candidates = int(torch.where(same, count[first] * (count[first] - 1) // 2, sizes).sum())

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate pairs (a, b), a < b: the points of every cell pair."""
        dev = self.order.device
        idt = _index_dtype(self.candidates, len(self.order), dev)
        n1, n2 = self.count[self.first], self.count[self.second]
        size = (n1 * n2).to(idt)
        # candidate t of cell pair q: point t // n2 of the first cell with point t % n2 of the second
        q = torch.arange(len(size), dtype=idt, device=dev).repeat_interleave(size)
        t = torch.arange(len(q), dtype=idt, device=dev) - (torch.cumsum(size, 0, dtype=idt) - size)[q]
        width = n2.to(idt)[q]
        a_local = torch.div(t, width, rounding_mode="floor")
        b_local = t - a_local * width
        keep = (self.first != self.second)[q] | (a_local < b_local)  # a cell with itself: each pair once
        q, a_local, b_local = q[keep], a_local[keep], b_local[keep]
        order, start = self.order.to(idt), self.start.to(idt)
        a = order[start[self.first][q] + a_local]
        b = order[start[self.second][q] + b_local]
        return torch.minimum(a, b).long(), torch.maximum(a, b).long()


def _index_dtype(candidates: int, points: int, device: torch.device) -> torch.dtype:
    """int32 indices on the CPU where they fit (the candidates are many, and their arithmetic is most of the
    time); elsewhere int64, the index type every torch kernel takes."""
    return torch.int32 if device.type == "cpu" and max(2 * candidates, points) < 2 ** 31 else torch.long


def _cells(p: torch.Tensor, frame: torch.Tensor, n_frames: int, cutoff: float) -> _Cells:
    """Points ``p`` (M, 3) of frames ``frame`` (M,) in cells at least ``cutoff`` wide."""
    dev = p.device
    width = float(cutoff)
    low, high = p.amin(0).double(), p.amax(0).double()
    while n_frames * math.prod(int(s) + 3 for s in ((high - low) / width).floor().tolist()) >= _MAX_KEY:
        width *= 2.0
    # cell coordinates start at 1: room for the -1 neighbours inside the frame's keys
    cell = ((p.double() - low) / width).floor().long() + 1
    extent = (cell.amax(0) + 2).tolist()
    key = ((frame * extent[0] + cell[:, 0]) * extent[1] + cell[:, 1]) * extent[2] + cell[:, 2]
    sorted_key, order = torch.sort(key, stable=True)
    cell_key, count = torch.unique_consecutive(sorted_key, return_counts=True)
    start = torch.cumsum(count, 0) - count
    # the cell itself and the 13 neighbours "after" it: each pair of neighbouring cells once
    shift = torch.tensor([(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1)], device=dev)[13:]
    offset = (shift[:, 0] * extent[1] + shift[:, 1]) * extent[2] + shift[:, 2]
    wanted = cell_key[:, None] + offset[None, :]
    found = torch.searchsorted(cell_key, wanted).clamp(max=len(cell_key) - 1)
    hit = cell_key[found] == wanted
    first, column = hit.nonzero(as_tuple=True)
    return _Cells(order, start, count, first, found[first, column])
