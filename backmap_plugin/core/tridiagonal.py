"""Batched tridiagonal linear systems in torch (cyclic reduction).

A chain's Gauss-Newton steps couple each unknown with its neighbours only
(e.g. the peptide-plane rotations of :mod:`backmap_plugin.build.backbone`,
coupled through the N-CA-C angle between two planes). Cyclic reduction
solves such systems in about log2(n) vectorised rounds instead of the n
sequential ones of the Thomas algorithm, on any device. It is stable for the
symmetric positive-definite (and diagonally dominant) systems it is used on.
"""

from __future__ import annotations

import torch


def solve_tridiagonal(lower: torch.Tensor, diagonal: torch.Tensor, upper: torch.Tensor,
                      rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``lower[i] x[i-1] + diagonal[i] x[i] + upper[i] x[i+1] = rhs[i]`` for every batch row.

    Parameters
    ----------
    lower, diagonal, upper, rhs : torch.Tensor
        (..., n) each; ``lower[..., 0]`` and ``upper[..., -1]`` are ignored.

    Returns
    -------
    torch.Tensor
        (..., n) solution.
    """
    n = diagonal.shape[-1]
    if n == 0:
        return rhs.clone()
    zero = torch.zeros((), dtype=diagonal.dtype, device=diagonal.device)
    first, last = torch.arange(n, device=diagonal.device) == 0, torch.arange(n, device=diagonal.device) == n - 1
    return _reduce(torch.where(first, zero, lower), diagonal, torch.where(last, zero, upper), rhs)


def _reduce(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    n = b.shape[-1]
    if n == 1:
        return d / b
    if n % 2:  # an even length: a last equation x = 0 that nothing couples to
        pad = [torch.nn.functional.pad(t, (0, 1), value=v) for t, v in ((a, 0.0), (b, 1.0), (c, 0.0), (d, 0.0))]
        return _reduce(*pad)[..., :n]
    # eliminate the even-indexed unknowns from the odd-indexed equations
    a_e, b_e, c_e, d_e = a[..., 0::2], b[..., 0::2], c[..., 0::2], d[..., 0::2]
    a_o, b_o, c_o, d_o = a[..., 1::2], b[..., 1::2], c[..., 1::2], d[..., 1::2]
    # neighbours of odd row i: even rows i-1 (same pair) and i+1 (next pair; none after the last)
    a_next = torch.nn.functional.pad(a_e[..., 1:], (0, 1))
    b_next = torch.nn.functional.pad(b_e[..., 1:], (0, 1), value=1.0)
    c_next = torch.nn.functional.pad(c_e[..., 1:], (0, 1))
    d_next = torch.nn.functional.pad(d_e[..., 1:], (0, 1))
    alpha = -a_o / b_e
    gamma = -c_o / b_next
    x_odd = _reduce(alpha * a_e, b_o + alpha * c_e + gamma * a_next, gamma * c_next, d_o + alpha * d_e + gamma * d_next)
    x_prev = torch.nn.functional.pad(x_odd[..., :-1], (1, 0))  # odd unknown before each even row
    x_even = (d_e - a_e * x_prev - c_e * x_odd) / b_e
    return torch.stack([x_even, x_odd], -1).flatten(-2)
