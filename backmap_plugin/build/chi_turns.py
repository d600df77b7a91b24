"""Rigid turns of side chains about their chi bonds, and what they do to weighted means of atoms (beads).

Turning chi k of a residue moves the atoms beyond the chi bond rigidly
about it; bond lengths and angles stay as built, and the residue is the
one that building it with the new chi angles would give. The pieces the
fits and the clash relief share:

* :func:`chi_tables` and :func:`chi_bonds`: which atoms each chi angle
  moves, and where its bond is.
* :func:`turn_chis` turns the atoms.
* :class:`ChiLevers` gives the derivatives of beads (weighted means of a
  residue's atoms) in the turns, from the atoms where they are.

Everything is torch and batched over rows (one residue in one
conformation each). Lengths in Angstrom, angles in radians.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.geometry import cross, rotate_about_axis


@dataclass(frozen=True)
class ChiTables:
    """Per residue type tables (torch, CPU); see :func:`chi_tables`."""

    moved: torch.Tensor  # (T, S, 4) bool: slot moves when chi k turns
    axis: torch.Tensor  # (T, 4, 2) slots of the chi bond (from, to)


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
    return ChiTables(moved=torch.as_tensor(moved), axis=torch.as_tensor(chem.CHI_ATOMS[:, :, 1:3].copy()))


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
    tb = chi_tables()
    dev = atoms.device
    moved = tb.moved.to(dev)[res_type]  # (N, S, 4)
    axis = tb.axis.to(dev)[res_type]  # (N, 4, 2)
    rows = torch.arange(len(atoms), device=dev)
    # outer chis turn first, and no chi bond moves with the chis beyond it: the bonds as built serve every turn
    origin, u = chi_bonds(atoms, axis)
    x = atoms.clone()
    for k in range(3, -1, -1):
        r = rows[moved[:, :, k].any(1)]
        turned = rotate_about_axis(x[r], origin[r, k], u[r, k], delta[r, k])
        x[r] = torch.where(moved[r, :, k, None], turned, x[r])
    return x


class ChiLevers:
    """How weighted means of a residue's atoms (beads) move when its chi angles turn.

    An atom moved by chi k moves by ``u_k x (x - o_k)`` per radian (``u_k``
    the chi bond's direction, ``o_k`` its end, as :func:`turn_chis` turns),
    so ``d bead_b / d chi_k = u_k x (sum_a w_ba moved_ak x_a - (sum_a w_ba moved_ak) o_k)``.
    The atoms' weights are fixed at construction; :meth:`jacobian` takes the atoms.

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
        moved = tables.moved.to(dev)[res_type].to(weights.dtype)  # (N, S, 4)
        self.axis = tables.axis.to(dev)[res_type]  # (N, 4, 2)
        self.moved_weight = (weights[..., None] * moved[:, None]).transpose(-1, -2).flatten(1, 2)  # (N, B * 4, S)
        self.share = self.moved_weight.sum(-1).view(len(weights), -1, 4, 1)

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """(N, B, 4, 3): each bead's move per radian of each chi turn, for atoms ``x`` (N, N_SLOTS, 3)."""
        origin, u = chi_bonds(x, self.axis)
        lever = torch.bmm(self.moved_weight, x).view(len(x), -1, 4, 3) - self.share * origin[:, None]
        return cross(u[:, None].expand_as(lever), lever)
