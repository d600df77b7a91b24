"""Rotamer outliers: side-chain chi1/chi2 densities per residue type from the corpus.

A simpler form of MolProbity's rotamer check (Lovell et al., Proteins 40,
389 (2000); Chen et al., Acta Cryst. D66, 12 (2010)): per residue type a
smoothed reference density of (chi1, chi2), or of chi1 alone for residues
with one chi angle (SER, THR, VAL, CYS, PRO), built from the crystal
structures of the corpus's train split by
``workflows/tables/build_rotamer_density.py``. A residue whose chi angles
lie where the density is below the level that 99.7 % of the reference
residues reach is an *outlier* (MolProbity's 0.3 % cut); above the 98 %
level it is *favoured*, in between *allowed*. chi3 and chi4 (MET, GLU, GLN,
LYS, ARG) are not scored. The last chi of ASP, PHE and TYR is taken modulo
180 degrees (the two terminal atoms are equivalent). The table
(``tables/rotamer_density.npz``) and its provenance
(``tables/rotamer_density.json``) ship with the package.
"""

from __future__ import annotations

import functools

import numpy as np

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.dihedral_density import OUTLIER, grade, load_grids, lookup
from backmap_plugin.core.ramachandran import TABLE_DIR

__all__ = ["SYMMETRIC_CHI", "chi_atoms", "chi_axes", "classify_rotamers", "load_table"]

#: Residues whose chi ``k`` (0-based) is symmetric by 180 degrees.
SYMMETRIC_CHI = {"ASP": 1, "PHE": 1, "TYR": 1}


def chi_axes(name):
    """Period (degrees) of every scored chi of a residue type.

    Parameters
    ----------
    name : str
        Standard residue name.

    Returns
    -------
    tuple of float
        Empty for GLY and ALA; one or two entries (360, or 180 for a
        symmetric last chi).
    """
    n = min(2, len(chem.RESIDUES[name].chis))
    return tuple(180.0 if SYMMETRIC_CHI.get(name) == k else 360.0 for k in range(n))


def chi_atoms(name, atoms):
    """Atom quadruples of the scored chi angles of one residue.

    Parameters
    ----------
    name : str
        Standard residue name.
    atoms : dict
        Standard heavy-atom name -> atom index.

    Returns
    -------
    list of tuple of int or None
        One quadruple per scored chi (:func:`chi_axes`); None when an atom is missing.
    """
    chis = chem.RESIDUES[name].chis[: len(chi_axes(name))]
    if not all(a in atoms for chi in chis for a in chi):
        return None
    return [tuple(atoms[a] for a in chi) for chi in chis]


@functools.lru_cache(maxsize=None)
def load_table(directory=TABLE_DIR):
    """The shipped rotamer table.

    Parameters
    ----------
    directory : str, optional
        Folder holding ``rotamer_density.npz`` and ``rotamer_density.json``.

    Returns
    -------
    grids : dict
        Residue name -> log10 density over chi1 (1-D) or (chi1, chi2).
    info : dict
        The provenance and levels (``rotamer_density.json``): per residue
        ``start``, ``period``, ``favoured_level``, ``outlier_level``, counts.
    """
    return load_grids(directory, "rotamer_density")


def classify_rotamers(names, chis, table=None):
    """Favoured / allowed / outlier code of side-chain conformations.

    Parameters
    ----------
    names : sequence of str, length n_res
        Standard residue names (residues without a table, GLY and ALA, must
        not be passed).
    chis : array_like, shape (n_frames, n_res, 2) or (n_res, 2)
        chi1 and chi2 in degrees (chi2 ignored for one-chi residues).
    table : tuple, optional
        ``(grids, info)`` as :func:`load_table` returns (default: the shipped one).

    Returns
    -------
    numpy.ndarray of int8, shape ``chis.shape[:-1]``
        :data:`~backmap_plugin.core.dihedral_density.FAVOURED`, ``ALLOWED`` or ``OUTLIER``.
    """
    grids, info = load_table() if table is None else table
    chis = np.asarray(chis, dtype=np.float64)
    out = np.full(chis.shape[:-1], OUTLIER, dtype=np.int8)
    names = np.asarray(names, dtype=object)
    for name in set(names.tolist()):
        entry = info["residues"][name]
        cols = names == name
        d = len(entry["period"])
        density = lookup(grids[name], chis[..., cols, :d], entry["start"], entry["period"])
        out[..., cols] = grade(density, entry["favoured_level"], entry["outlier_level"])
    return out
