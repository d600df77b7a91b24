"""Batched tridiagonal solves (core/tridiagonal.py) against dense solves."""

import pytest
import torch

from backmap_plugin.core.tridiagonal import solve_tridiagonal


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 33, 300])
def test_matches_a_dense_solve(n):
    """Every length (odd lengths are padded inside), a batch of systems at once; the unused corners are ignored."""
    g = torch.Generator().manual_seed(n)
    lower, upper, rhs = (torch.randn(3, n, generator=g, dtype=torch.float64) for _ in range(3))
    diagonal = 4.0 + torch.rand(3, n, generator=g, dtype=torch.float64)
    x = solve_tridiagonal(lower, diagonal, upper, rhs)
    dense = torch.diag_embed(diagonal) + torch.diag_embed(lower[:, 1:], -1) + torch.diag_embed(upper[:, :-1], 1)
    assert torch.allclose(x, torch.linalg.solve(dense, rhs), atol=1e-12)


def test_empty_system():
    empty = torch.zeros(2, 0)
    assert solve_tridiagonal(empty, empty, empty, empty).shape == (2, 0)
