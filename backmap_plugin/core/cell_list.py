"""Close pairs of points in time and memory linear in their number (cell list).

The points of each frame are binned into cubic cells at least as wide as
the cutoff, so a point's partners within the cutoff lie in its own cell or
one of the 26 around it. Cells are keyed by one integer (frame and cell
coordinates), the keys sorted, and each point's 27 cells looked up by
binary search (:func:`torch.searchsorted`): no grid is allocated, so
sparse or far-flung coordinates cost nothing extra. Distances are computed
pair by pair, so a pair's distance does not depend on the other points or
frames. Everything is torch (any device). Lengths in Angstrom.
"""

from __future__ import annotations

import math

import torch

#: Largest cell key: cells widen (by factors of 2) until frames x cells fit.
_MAX_KEY = 2 ** 62
#: Distances a frame's matrix holds at once where every pair of a frame is a candidate.
DENSE_BLOCK = 1 << 22
#: Every pair of a frame is a candidate where that is at most DENSE_FACTOR times as many as the cells give:
#: a pair costs less in a distance matrix than a cell pair's (about 8 times less, on one CPU thread), and
#: where the frames hold at most DENSE_PAIRS pairs in all (binning the points would cost more than it saves).
DENSE_FACTOR = 8
DENSE_PAIRS = 1 << 18


def close_pairs(points: torch.Tensor, cutoff: float, mask: torch.Tensor | None = None,
                radius: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every pair of points of a frame closer than ``cutoff`` (or spheres within ``cutoff`` of each other), once.

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

    Returns
    -------
    frame, i, j : torch.Tensor
        (P,) long, ``i < j``, sorted by frame, then ``i``, then ``j``.
    distance : torch.Tensor
        (P,) in the dtype of ``points``.
    """
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    n_frames, n = points.shape[:2]
    dev = points.device
    valid = torch.isfinite(points).all(-1)
    if mask is not None:
        valid = valid & mask.to(dev).expand(n_frames, n)
    frame, index = valid.nonzero(as_tuple=True)  # sorted by frame, then index
    p = points[frame, index]
    radius = None if radius is None else radius.to(device=dev, dtype=points.dtype).expand(n_frames, n)
    if len(p) < 2:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty, empty, points.new_zeros(0)
    r = None if radius is None else radius[frame, index]
    per_frame = torch.bincount(frame, minlength=n_frames)
    every_pair = int((per_frame * (per_frame - 1) // 2).sum())
    cells = None
    if every_pair > DENSE_PAIRS:
        cells = _cells(p, frame, n_frames, cutoff + (0.0 if r is None else 2 * float(r.max())))
    if cells is None or every_pair <= DENSE_FACTOR * cells.candidates:
        a, b, distance = _dense_pairs(points, valid, radius, cutoff)
    else:
        a, b = cells.pairs()
        # the norm of the difference: to the bit what torch.cdist gives the dense search
        distance = torch.linalg.vector_norm(p[a] - p[b], dim=-1)
        close = distance < (cutoff if r is None else r[a] + r[b] + cutoff)
        a, b, distance = a[close], b[close], distance[close]
        # the valid points are in (frame, index) order, so (a, b) order is (frame, i, j) order
        order = torch.argsort(a * len(p) + b)
        a, b, distance = a[order], b[order], distance[order]
    return frame[a], index[a], index[b], distance


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
        # int32 indices where they fit: the candidates are many, and their arithmetic is most of the time
        small = max(self.candidates * 2, len(self.order)) < 2 ** 31
        idt = torch.int32 if small else torch.long
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


def _dense_pairs(points: torch.Tensor, valid: torch.Tensor, radius: torch.Tensor | None,
                 cutoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs (a, b), a < b, of one frame closer than ``cutoff`` (plus radii) and their distances, sorted.

    From distance matrices of ``points`` (F, N, 3), :data:`DENSE_BLOCK`
    distances at a time (several frames, or rows of one frame); ``a`` and
    ``b`` number the ``valid`` (F, N) points in (frame, index) order.
    """
    dev = points.device
    n_frames, n = valid.shape
    position = torch.full((n_frames, n), -1, dtype=torch.long, device=dev)
    position[valid] = torch.arange(int(valid.sum()), device=dev)
    frames = max(1, DENSE_BLOCK // (n * n))
    rows = n if n * n <= DENSE_BLOCK else max(1, DENSE_BLOCK // n)
    column = torch.arange(n, device=dev)
    found = []
    for f0 in range(0, n_frames, frames):
        fs = slice(f0, f0 + frames)
        for r0 in range(0, n, rows):
            rs = slice(r0, r0 + rows)
            d = torch.cdist(points[fs, rs], points[fs], compute_mode="donot_use_mm_for_euclid_dist")
            limit = cutoff if radius is None else radius[fs, rs, None] + radius[fs, None, :] + cutoff
            upper = column[rs, None] < column[None, :]
            f, i, j = torch.nonzero((d < limit) & upper & valid[fs, rs, None] & valid[fs, None, :], as_tuple=True)
            found.append((position[f + f0, i + r0], position[f + f0, j], d[f, i, j]))
    return tuple(torch.cat(parts) for parts in zip(*found))


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
        float32: lower index first); the point itself where it has fewer
        than ``k``.
    distance : torch.Tensor
        (F, N, k), 0 where there is no neighbour.
    found : torch.Tensor
        (F, N, k) bool: a neighbour is there.
    """
    n_frames, n = points.shape[:2]
    dev = points.device
    frame, i, j, d = close_pairs(points, cutoff, mask)
    # both directions, grouped by (frame, point), nearest first: one sort on (frame, point, distance), the
    # distance by the bits of its float32 value (in order for numbers >= 0)
    # (partners below a point come first, in order, then those above it: ties stay in index order)
    frame, i, j, d = torch.cat([frame, frame]), torch.cat([j, i]), torch.cat([i, j]), torch.cat([d, d])
    bits = d.float().view(torch.int32).long()
    order = torch.argsort((frame * n + i) * 2 ** 31 + bits, stable=True)
    frame, i, j, d = frame[order], i[order], j[order], d[order]
    row = frame * n + i
    count = torch.bincount(row, minlength=n_frames * n)
    rank = torch.arange(len(row), device=dev) - (torch.cumsum(count, 0) - count)[row]
    take = rank < k
    index = torch.arange(n, device=dev)[None, :, None].repeat(n_frames, 1, k)
    distance = points.new_zeros(n_frames, n, k)
    found = torch.zeros(n_frames, n, k, dtype=torch.bool, device=dev)
    slot = (frame[take], i[take], rank[take])
    index[slot], distance[slot], found[slot] = j[take], d[take], True
    return index, distance, found
