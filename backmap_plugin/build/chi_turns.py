"""Rigid turns of side chains about their chi bonds, and what they do to weighted means of atoms (beads).

Turning chi k of a residue moves the atoms beyond the chi bond rigidly
about it; bond lengths and angles stay as built, and the residue is the
one that building it with the new chi angles would give. The pieces the
fits and the clash relief share:

* :func:`chi_tables` and :func:`chi_bonds`: which atoms each chi angle
  moves, and where its bond is.
* :func:`turn_chis` turns the atoms; :class:`ChiTurner` turns the same
  atoms again and again (a fit's trial turns).
* :class:`ChiLevers` gives the derivatives of beads (weighted means of a
  residue's atoms) in the turns, from the atoms where they are.
* :func:`chi_torques`: the derivatives in the turns of forces on the atoms.

Everything is torch and batched over rows (one residue in one
conformation each). Lengths in Angstrom, angles in radians.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.geometry import cross


@dataclass(frozen=True)
class ChiTables:
    """Per residue type tables (torch, CPU); see :func:`chi_tables`."""

    moved: torch.Tensor  # (T, S, 4) bool: slot moves when chi k turns
    axis: torch.Tensor  # (T, 4, 2) slots of the chi bond (from, to)
    depth: torch.Tensor  # (T, S) long: how many chi angles move the slot (those are chi1 .. chi depth)
    turning: torch.Tensor  # (S',) long: the slots some chi angle of some residue type moves


@functools.cache
def chi_tables() -> ChiTables:
    """Which atom slots each chi angle moves, and the slots of its bond, per residue type."""
    n_types, s = len(chem.RESIDUE_NAMES), chem.N_SLOTS
    moved = np.zeros((n_types, s, 4), bool)
    parents = chem.ZMATRIX_PARENTS
    for t in range(n_types):
        for slot in chem.BUILD_ORDER:
            for k in range(4):
                from_parent = any(p < s and moved[t, p, k] for p in parents[t, slot])
                moved[t, slot, k] = chem.ZMATRIX_CHI[t, slot] == k or from_parent
    moved &= chem.SLOT_EXISTS[:, :, None]
    # an atom beyond chi k's bond lies beyond the bonds of chi 1 .. k - 1 too, so its depth names its chi angles
    assert (moved[..., 1:] <= moved[..., :-1]).all()
    depth = moved.sum(-1)
    return ChiTables(moved=torch.as_tensor(moved), axis=torch.as_tensor(chem.CHI_ATOMS[:, :, 1:3].copy()),
                     depth=torch.as_tensor(depth, dtype=torch.long),
                     turning=torch.as_tensor(np.nonzero(depth.max(0) > 0)[0]))


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-9)


def chi_bonds(atoms: torch.Tensor, axis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Far ends (N, 4, 3) and unit directions (N, 4, 3) of the chi bonds of residues ``atoms`` (N, N_SLOTS, 3).

    ``axis`` (N, 4, 2) holds each bond's slots (from, to), as :func:`chi_tables` gives them per residue type.
    """
    rows = torch.arange(len(atoms), device=atoms.device)[:, None]
    origin = atoms[rows, axis[..., 1]]
    return origin, _unit(origin - atoms[rows, axis[..., 0]])


def turn_chis(atoms: torch.Tensor, res_type: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Turn the chi angles of residues by ``delta``, moving the atoms beyond each chi bond rigidly.

    Parameters
    ----------
    atoms : torch.Tensor
        (N, N_SLOTS, 3) residues.
    res_type : torch.Tensor
        (N,) long.
    delta : torch.Tensor
        (N, 4) radians added to chi1..chi4 (ignored where a residue has no
        such chi).

    Returns
    -------
    torch.Tensor
        (N, N_SLOTS, 3); bond lengths and angles unchanged. The same as
        building the residue with chi angles ``chi + delta``.
    """
    return ChiTurner(atoms, res_type)(delta)


class ChiTurner:
    """Turns of residues' chi angles from where they were built, for a fit that tries many turns of the same atoms.

    Outer chi angles turn first, each about its bond as built, so an atom
    beyond the bonds of chi 1 .. d moves by the rigid motion ``R_1 R_2 ... R_d``
    (``R_k`` the turn about chi k's bond): each call makes the residue's four
    composed motions, and each atom takes the one of its depth. The bonds
    and depths are found once, at construction.

    Parameters
    ----------
    atoms : torch.Tensor
        (N, N_SLOTS, 3) residues as built.
    res_type : torch.Tensor
        (N,) long.
    """

    def __init__(self, atoms: torch.Tensor, res_type: torch.Tensor):
        tb = chi_tables()
        dev = atoms.device
        self.atoms = atoms
        self.turning = tb.turning.to(dev)
        self.origin, self.u = chi_bonds(atoms, tb.axis.to(dev)[res_type])
        self.depth = tb.depth.to(dev)[res_type][:, self.turning][None].expand(12, -1, -1)
        self.xyz = atoms[:, self.turning].permute(2, 0, 1)

    def __call__(self, delta: torch.Tensor) -> torch.Tensor:
        """(N, N_SLOTS, 3): the atoms with their chi angles turned by ``delta`` (N, 4) radians (:func:`turn_chis`)."""
        m = torch.gather(_composed_turns(self.origin, self.u, delta), 2, self.depth)  # (12, N, S'): each atom's motion
        x, y, z = self.xyz
        out = self.atoms.clone()
        out[:, self.turning] = torch.stack([m[4 * i] * x + m[4 * i + 1] * y + m[4 * i + 2] * z + m[4 * i + 3]
                                            for i in range(3)], -1)
        return out


def _composed_turns(origin: torch.Tensor, u: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The rigid motions (12, N, 5) ``R_1 ... R_d`` for d = 0 .. 4, rows of (3, 4) affine matrices flattened.

    ``R_k`` turns by ``delta[:, k]`` about the line through ``origin[:, k]``
    along the unit ``u[:, k]`` (Rodrigues). Written component by component
    on (N,) rows: faster than batched 3 x 3 products or broadcasting
    (benchmarks/README.md, session 21).
    """
    ux, uy, uz = u.permute(2, 1, 0)  # (4, N) each
    o = origin.permute(2, 1, 0)
    c, s = torch.cos(delta.T), torch.sin(delta.T)
    v = 1 - c
    rot = [[c + v * ux * ux, v * ux * uy - s * uz, v * ux * uz + s * uy],
           [v * uy * ux + s * uz, c + v * uy * uy, v * uy * uz - s * ux],
           [v * uz * ux - s * uy, v * uz * uy + s * ux, c + v * uz * uz]]
    shift = [o[i] - (rot[i][0] * o[0] + rot[i][1] * o[1] + rot[i][2] * o[2]) for i in range(3)]
    r = [[rot[i][j][0] for j in range(3)] for i in range(3)]
    t = [shift[i][0] for i in range(3)]
    one, zero = torch.ones_like(c[0]), torch.zeros_like(c[0])
    rows = [[one, zero, zero, zero, zero, one, zero, zero, zero, zero, one, zero],
            [*r[0], t[0], *r[1], t[1], *r[2], t[2]]]
    for k in range(1, 4):
        t = [r[i][0] * shift[0][k] + r[i][1] * shift[1][k] + r[i][2] * shift[2][k] + t[i] for i in range(3)]
        r = [[r[i][0] * rot[0][j][k] + r[i][1] * rot[1][j][k] + r[i][2] * rot[2][j][k] for j in range(3)]
             for i in range(3)]
        rows.append([*r[0], t[0], *r[1], t[1], *r[2], t[2]])
    return torch.stack([torch.stack(row) for row in rows], -1)


class ChiLevers:
    """How weighted means of a residue's atoms (beads) move when its chi angles turn.

    An atom moved by chi k moves by ``u_k x (x - o_k)`` per radian (``u_k``
    the chi bond's direction, ``o_k`` its end, as :func:`turn_chis` turns),
    so ``d bead_b / d chi_k = u_k x (sum_a w_ba moved_ak x_a - (sum_a w_ba moved_ak) o_k)``.
    The atoms' weights are fixed at construction; :meth:`jacobian` (the whole
    table), :meth:`normal_equations` (a least-squares fit's, from the levers
    that are not zero) and :meth:`gradient` (a linear function's derivatives,
    as torques) take the atoms.

    Parameters
    ----------
    res_type : torch.Tensor
        (N,) long.
    weights : torch.Tensor
        (N, B, N_SLOTS) weight of each atom slot in each of the residue's beads.
    """

    def __init__(self, res_type: torch.Tensor, weights: torch.Tensor):
        tables = chi_tables()
        dev = weights.device
        self.turning = tables.turning.to(dev)  # the slots that chi turns move: the others do not count
        self.moved = moved = tables.moved.to(dev)[res_type][:, self.turning].to(weights.dtype)  # (N, S', 4)
        self.axis = tables.axis.to(dev)[res_type]  # (N, 4, 2)
        self.weights_t = weights[..., self.turning].transpose(1, 2)  # (N, S', B)
        w = weights[..., self.turning, None] * moved[:, None]  # (N, B, S', 4)
        self.moved_weight = w.transpose(-1, -2).flatten(1, 2)  # (N, B * 4, S')
        self.share = self.moved_weight.sum(-1).view(len(weights), -1, 4, 1)
        # the (row, bead, chi) levers that are not zero (most beads hang on one or two chi angles), and their pairs
        # on one bead: the normal equations are sums over these (normal_equations)
        n_beads = weights.shape[1]
        self.entry = torch.nonzero(self.share[..., 0].flatten())[:, 0]  # (E,) flat (row, bead, chi), sorted
        self.entry_row, self.entry_chi = self.entry // (4 * n_beads), self.entry % 4
        self.entry_bead = self.entry // 4  # flat (row, bead)
        group = torch.searchsorted(self.entry_bead, self.entry_bead)  # the first entry on the same bead
        count = torch.searchsorted(self.entry_bead, self.entry_bead, right=True) - group
        other = group[:, None] + torch.arange(4, device=dev)
        first, second = torch.nonzero(torch.arange(4, device=dev) < count[:, None], as_tuple=True)
        self.pair = (first, other[first, second])  # (P,) each: entries on one bead, every ordered pair
        self.pair_index = self.entry_row[first] * 16 + self.entry_chi[first] * 4 + self.entry_chi[other[first, second]]

    def normal_equations(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``J^T J`` (N, 4, 4) and ``J^T residual`` (N, 4) for :meth:`jacobian` ``J`` at atoms ``x`` (N, N_SLOTS, 3)
        and bead residuals (N, B, 3), summed over the levers that are not zero."""
        n = len(x)
        origin, u = chi_bonds(x, self.axis)
        lever = torch.bmm(self.moved_weight, x[:, self.turning]).view(-1, 3)[self.entry]
        row, chi = self.entry_row, self.entry_chi
        jac = cross(u[row, chi], lever - self.share.view(-1)[self.entry, None] * origin[row, chi])  # (E, 3)
        a, b = self.pair
        normal = x.new_zeros(n * 16).index_add_(0, self.pair_index, (jac[a] * jac[b]).sum(-1))
        rhs = x.new_zeros(n * 4).index_add_(0, row * 4 + chi, (jac * residual.view(-1, 3)[self.entry_bead]).sum(-1))
        return normal.view(n, 4, 4), rhs.view(n, 4)

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """(N, B, 4, 3): each bead's move per radian of each chi turn, for atoms ``x`` (N, N_SLOTS, 3)."""
        origin, u = chi_bonds(x, self.axis)
        lever = torch.bmm(self.moved_weight, x[:, self.turning]).view(len(x), -1, 4, 3) - self.share * origin[:, None]
        return cross(u[:, None].expand_as(lever), lever)

    def gradient(self, x: torch.Tensor, on_beads: torch.Tensor) -> torch.Tensor:
        """(N, 4): the derivative in each chi turn of ``sum_b on_beads[:, b] . bead_b`` for atoms ``x`` (N, N_SLOTS, 3).

        The same as contracting :meth:`jacobian` with ``on_beads`` (N, B, 3),
        at less cost: with ``f_a = sum_b w_ba on_b`` on each atom, chi k's
        derivative is ``u_k . sum_a moved_ak (x_a - o_k) x f_a``.
        """
        origin, u = chi_bonds(x, self.axis)
        return chi_torques(x[:, self.turning], torch.bmm(self.weights_t, on_beads), self.moved, origin, u)


def chi_torques(x: torch.Tensor, force: torch.Tensor, moved: torch.Tensor, origin: torch.Tensor,
                u: torch.Tensor) -> torch.Tensor:
    """(N, 4): the torque of forces on atoms about each chi bond, ``u_k . sum_a moved_ak (x_a - o_k) x f_a``.

    That is the derivative in chi k's turn of ``sum_a f_a . x_a`` (``f`` a
    loss's derivative in the atoms gives the loss's in the chi turns).

    Parameters
    ----------
    x, force : torch.Tensor
        (N, S, 3) atoms and the forces on them.
    moved : torch.Tensor
        (N, S, 4) float: 1 where chi k moves the atom.
    origin, u : torch.Tensor
        (N, 4, 3) the chi bonds' ends and unit directions (:func:`chi_bonds`).
    """
    moment = torch.bmm(moved.transpose(1, 2), torch.cat([cross(x, force), force], -1))  # (N, 4, 6)
    return ((moment[..., :3] - cross(origin, moment[..., 3:])) * u).sum(-1)
