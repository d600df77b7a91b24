"""A Ramachandran restraint for fits that move the backbone (differentiable, torch).

Fitting a structure to coarse-grained beads from real CG dynamics chases
the beads' thermal noise through the backbone dihedrals: the fit lands on
the beads with phi / psi no protein has. :class:`RamachandranPrior` is the
penalty that holds them back. It reads the shipped Ramachandran table
(:func:`backmap_plugin.core.ramachandran.load_table`: log10 density of the
train crystal structures per residue class, 2-degree cells) and costs, per
residue with both dihedrals, how far (in log10 density) its (phi, psi) lies
below the favoured contour of its class: zero inside the favoured region,
so a structure with common dihedrals feels no pull, and growing outside it
(up to :data:`MAX_PENALTY`). Interpolation is bilinear and periodic between
cell centres, as the check's lookup
(:func:`backmap_plugin.core.dihedral_density.lookup`), so the penalty is zero
exactly where the check says favoured. Angles radians, lengths Angstrom.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.geometry import dihedral
from backmap_plugin.core.topology import ProteinTopology

#: Largest penalty of one residue (log10 density units below the favoured contour; the tables' floor is
#: about 25 below it, where the density is flat and would give no direction).
MAX_PENALTY = 4.0


class RamachandranPrior:
    """Penalty of backbone dihedrals outside the favoured Ramachandran region.

    Parameters
    ----------
    protein : ProteinTopology
        Residue types and segments: a residue has phi (psi) when it is
        bonded to the residue before (after) it in its segment. Peptides are
        taken as trans (prolines use the trans-proline table).
    dtype : torch.dtype
    device : torch.device
    margin : float, optional
        Log10 density units above the favoured contour where the penalty
        starts (default 0: at the contour). A positive margin pulls dihedrals
        into the region rather than onto its edge, where any later move
        tips half of them out.
    """

    def __init__(self, protein: ProteinTopology, dtype=torch.float64, device=None, margin: float = 0.0):
        # imported here: core.ramachandran loads scipy, which a C-alpha run does not need
        from backmap_plugin.core.ramachandran import load_table, residue_classes

        grids, info = load_table()
        bonded = protein.segment[1:] == protein.segment[:-1]
        names = [chem.RESIDUE_NAMES[t] for t in protein.res_type]
        classes = residue_classes(names, np.r_[bonded, False], np.full(len(names), 180.0))
        tables = sorted({info["class_of_table"][c] for c in classes})
        table_of = np.array([tables.index(info["class_of_table"][c]) for c in classes])
        index = np.nonzero(np.r_[False, bonded] & np.r_[bonded, False])[0]  # residues with phi and psi
        self.index = torch.as_tensor(index, device=device)
        # grid values relative to each table's favoured level: penalty = max(0, -value)
        relative = np.stack([grids[t].astype(np.float64) - info["tables"][t]["favoured_level"] - margin
                             for t in tables])
        self.grid = torch.as_tensor(relative, dtype=dtype, device=device)  # (T, n_phi, n_psi)
        self.table = torch.as_tensor(table_of[index], device=device)
        self.start = [math.radians(s) for s in info["grid"]["start"]]
        self.shape = self.grid.shape[1:]

    def dihedrals(self, n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi, psi), each (F, P) radians, of the residues that have both (in order), from N, CA, C (F, R, 3)."""
        i = self.index
        phi = dihedral(c[..., i - 1, :], n[..., i, :], ca[..., i, :], c[..., i, :])
        psi = dihedral(n[..., i, :], ca[..., i, :], c[..., i, :], n[..., i + 1, :])
        return phi, psi

    def penalties(self, n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """(F, P) penalty of each residue that has both dihedrals (log10 density units, at most :data:`MAX_PENALTY`).

        Parameters
        ----------
        n, ca, c : torch.Tensor
            (F, R, 3) backbone atoms (e.g.
            :func:`~backmap_plugin.build.backbone.backbone_atoms`); differentiable.
        """
        return self.penalty_of(*self.dihedrals(n, ca, c))

    def penalty_of(self, phi: torch.Tensor, psi: torch.Tensor, rows=slice(None)) -> torch.Tensor:
        """Penalty (..., M) of dihedrals ``phi``, ``psi`` (..., M, radians) of the residues ``self.index[rows]``
        (default all of them, in order)."""
        return (-self._interpolate(phi, psi, self.table[rows])).clamp(min=0.0, max=MAX_PENALTY)

    def __call__(self, n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """(F,) summed :meth:`penalties` of each frame."""
        if len(self.index) == 0:
            return ca.new_zeros(ca.shape[0])
        return self.penalties(n, ca, c).sum(-1)

    def _interpolate(self, phi: torch.Tensor, psi: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Bilinear, periodic interpolation of each residue's ``table`` (its last axis) at (phi, psi), between
        cell centres."""
        lower, fraction = [], []
        for angle, start, n in ((phi, self.start[0], self.shape[0]), (psi, self.start[1], self.shape[1])):
            u = torch.remainder(angle - start, 2 * math.pi) / (2 * math.pi) * n - 0.5
            i0 = torch.floor(u)
            lower.append(i0.long())
            fraction.append(u - i0)
        table = table.expand_as(lower[0])
        out = 0.0
        for up_phi in (0, 1):
            for up_psi in (0, 1):
                weight = ((fraction[0] if up_phi else 1 - fraction[0]) * (fraction[1] if up_psi else 1 - fraction[1]))
                value = self.grid[table, torch.remainder(lower[0] + up_phi, self.shape[0]),
                                  torch.remainder(lower[1] + up_psi, self.shape[1])]
                out = out + weight * value
        return out
