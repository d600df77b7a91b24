"""The cell-list pair search (backmap_plugin.core.cell_list) against distance matrices."""

import pytest
import torch

from backmap_plugin.core import cell_list
from backmap_plugin.core.cell_list import close_pairs, nearest_neighbours

EXACT = "donot_use_mm_for_euclid_dist"


def _brute_pairs(x, cutoff, mask, radius=None, ordered=False):
    d = torch.cdist(x, x, compute_mode=EXACT)
    n = x.shape[1]
    limit = cutoff if radius is None else radius[:, :, None] + radius[:, None, :] + cutoff
    ok = (d < limit) & mask[:, :, None] & mask[:, None, :]
    if not ordered:
        ok &= torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    f, i, j = ok.nonzero(as_tuple=True)
    return f, i, j, d[f, i, j]


def _clouds(seed=0, count=25):
    g = torch.Generator().manual_seed(seed)
    for _ in range(count):
        n_frames, n = int(torch.randint(1, 4, (), generator=g)), int(torch.randint(0, 200, (), generator=g))
        x = torch.randn(n_frames, n, 3, generator=g) * float(torch.rand((), generator=g) * 30 + 1)
        mask = torch.rand(n_frames, n, generator=g) > 0.2
        yield x, mask, float(torch.rand((), generator=g) * 8 + 0.5)


# cells always / every pair of a frame always, several frames or a few rows of one frame per distance matrix
PATHS = [(0, 1 << 22), (10 ** 9, 1 << 22), (10 ** 9, 50)]


def _force(monkeypatch, dense_factor, dense_block):
    monkeypatch.setattr(cell_list, "DENSE_PAIRS", -1 if dense_factor == 0 else 1 << 18)
    monkeypatch.setattr(cell_list, "DENSE_FACTOR", dense_factor)
    monkeypatch.setattr(cell_list, "DENSE_BLOCK", dense_block)


@pytest.mark.parametrize("dense_factor, dense_block", PATHS)
@pytest.mark.parametrize("index_dtype", [None, torch.long])  # the CPU's int32 cell arithmetic, and int64
def test_close_pairs_are_the_distance_matrix_pairs(monkeypatch, dense_factor, dense_block, index_dtype):
    _force(monkeypatch, dense_factor, dense_block)
    if index_dtype is not None:
        monkeypatch.setattr(cell_list, "_index_dtype", lambda *args: index_dtype)
    for x, mask, cutoff in _clouds():
        found = close_pairs(x, cutoff, mask)
        expected = _brute_pairs(x, cutoff, mask)
        for a, b in zip(found[:3], expected[:3]):
            assert torch.equal(a, b)
        assert torch.equal(found[3], expected[3])  # the same distances to the bit, whichever search ran
        # spheres: pairs within the cutoff of each other's surface
        radius = torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(len(x))) * 3
        found = close_pairs(x, cutoff, mask, radius)
        expected = _brute_pairs(x, cutoff, mask, radius)
        for a, b in zip(found, expected):
            assert torch.equal(a, b)
        # every ordered pair, each point with itself included
        found = close_pairs(x, cutoff, mask, radius, ordered=True)
        expected = _brute_pairs(x, cutoff, mask, radius, ordered=True)
        for a, b in zip(found, expected):
            assert torch.equal(a, b)


def test_close_pairs_mask_per_point_and_non_finite_points():
    x = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [float("nan"), 0, 0]]]).repeat(2, 1, 1)
    x[1, 1] = float("inf")
    frame, i, j, d = close_pairs(x, 1.5, torch.tensor([True, True, True, True]))
    assert list(zip(frame.tolist(), i.tolist(), j.tolist())) == [(0, 0, 1), (0, 1, 2)]
    assert d.tolist() == [1.0, 1.0]
    frame, i, j, _ = close_pairs(x, 2.5, torch.tensor([True, False, True, True]))
    assert list(zip(frame.tolist(), i.tolist(), j.tolist())) == [(0, 0, 2), (1, 0, 2)]


def test_close_pairs_far_apart_coordinates_and_bad_cutoff():
    # coordinates far beyond any box: the cells widen instead of overflowing their keys
    x = torch.tensor([[[0.0, 0, 0], [1e15, 0, 0], [1e15, 0.5, 0], [-1e15, 1e15, 3e14]]], dtype=torch.float64)
    frame, i, j, d = close_pairs(x, 1.0)
    assert (i.tolist(), j.tolist(), d.tolist()) == ([1], [2], [0.5])
    with pytest.raises(ValueError, match="cutoff must be positive"):
        close_pairs(x, 0.0)
    assert len(close_pairs(x[:, :1], 1.0)[0]) == 0


def test_cell_candidates_grow_linearly_with_a_spread_out_system():
    # 20,000 points along a 200,000 Angstrom line: 2e8 pairs in all, a few per point near each other
    n = 20000
    x = torch.zeros(1, n, 3)
    x[0, :, 0] = torch.arange(n) * 10.0
    x[0, :, 1] = torch.rand(n) * 3.0
    frame = torch.zeros(n, dtype=torch.long)
    assert cell_list._cells(x[0], frame, 1, 12.0).candidates < 5 * n
    f, i, j, _ = close_pairs(x, 12.0)
    assert torch.equal(j - i, torch.ones_like(i))  # each point with the next one alone
    assert len(i) == n - 1


@pytest.mark.parametrize("dense_factor, dense_block", PATHS)
def test_nearest_neighbours_are_the_nearest_within_the_cutoff(monkeypatch, dense_factor, dense_block):
    _force(monkeypatch, dense_factor, dense_block)
    k = 6
    for x, mask, cutoff in _clouds(seed=1):
        n_frames, n = x.shape[:2]
        index, distance, found = nearest_neighbours(x, k, cutoff, mask)
        assert index.shape == distance.shape == found.shape == (n_frames, n, k)
        d = torch.cdist(x, x, compute_mode=EXACT)
        d = d.masked_fill(~(mask[:, :, None] & mask[:, None, :]), float("inf"))
        d = d + torch.diag_embed(torch.full((n_frames, n), float("inf")))
        kk = min(k, max(n - 1, 0))
        if kk == 0:
            assert not found.any()
            continue
        best, which = torch.topk(d, kk, -1, largest=False, sorted=True)
        near = torch.isfinite(best) & (best < cutoff)
        assert torch.equal(found[..., :kk], near) and not found[..., kk:].any()
        assert torch.equal(torch.where(near, which, -1), torch.where(found[..., :kk], index[..., :kk], -1))
        assert torch.equal(distance[found], d.gather(-1, index)[found])
        # no neighbour: the point itself
        own = torch.arange(n)[None, :, None].expand_as(index)
        assert torch.equal(index[~found], own[~found])
