"""Ramachandran classes and regions from the corpus (MolProbity-style contours).

Every residue with both phi and psi is put in one of the classes of Lovell
et al., Proteins 50, 437 (2003): glycine, proline (``trans-proline`` /
``cis-proline`` by the omega before it, see :data:`CLASS_OF_TABLE` for
which the shipped table merges), pre-proline (a residue other than Gly or
Pro before a proline) and general (everything else). Its (phi, psi) is
scored against a smoothed reference density of its class built from the
crystal structures of the corpus's train split by
``workflows/tables/build_ramachandran.py``: *favoured* inside the contour
that holds 98 % of the reference residues, *allowed* inside the 99.95 %
contour, *outlier* beyond (the definitions of Lovell et al.). The table
(``tables/ramachandran.npz``) and its provenance (``tables/ramachandran.json``)
ship with the package.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from backmap_plugin.core.checks import CIS_CUTOFF
from backmap_plugin.core.dihedral_density import ALLOWED, FAVOURED, OUTLIER, grade, load_grids, lookup

__all__ = [
    "ALLOWED",
    "CLASSES",
    "FAVOURED",
    "OUTLIER",
    "PEPTIDE_BOND_MAX",
    "TABLE_DIR",
    "backbone_dihedral_atoms",
    "classify",
    "load_table",
    "peptide_bonds",
    "residue_classes",
]

#: Folder of the shipped tables.
TABLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tables")
#: A C(i)-N(i+1) distance above this (Angstrom) is a chain break, not a bond.
PEPTIDE_BOND_MAX = 2.0
#: Residue classes, in the order of :func:`residue_classes`.
CLASSES = ("general", "glycine", "trans-proline", "cis-proline", "pre-proline")


def peptide_bonds(atoms, chain, xyz, max_distance=PEPTIDE_BOND_MAX):
    """Which residues are peptide-bonded to the next one.

    Parameters
    ----------
    atoms : sequence of dict
        Per residue, standard heavy-atom name -> atom index.
    chain : sequence
        Chain of every residue (any comparable value).
    xyz : array_like, shape (n_atoms, 3)
        Coordinates in Angstrom (one frame).
    max_distance : float, optional
        Longest C(i)-N(i+1) distance that is a bond.

    Returns
    -------
    numpy.ndarray of bool, shape (n_residues,)
        False for the last residue, across chains and where C or N is absent.
    """
    x = np.asarray(xyz, dtype=np.float64)
    out = np.zeros(len(atoms), dtype=bool)
    for i in range(len(atoms) - 1):
        if chain[i] == chain[i + 1] and "C" in atoms[i] and "N" in atoms[i + 1]:
            out[i] = np.linalg.norm(x[atoms[i]["C"]] - x[atoms[i + 1]["N"]]) <= max_distance
    return out


def backbone_dihedral_atoms(atoms, bonded_next):
    """Atom quadruples of phi, psi and of the omega before every residue.

    Parameters
    ----------
    atoms : sequence of dict
        Per residue, standard heavy-atom name -> atom index.
    bonded_next : array_like of bool, shape (n_residues,)
        Residue ``i`` is bonded to ``i + 1`` (:func:`peptide_bonds`).

    Returns
    -------
    phi, psi, omega : numpy.ndarray of int64, shape (n_residues, 4)
        ``C(i-1) N CA C``, ``N CA C N(i+1)`` and ``CA(i-1) C(i-1) N CA``;
        rows of -1 where the angle is undefined (chain end, break, atom missing).
    """
    n = len(atoms)
    phi, psi, omega = (np.full((n, 4), -1, dtype=np.int64) for _ in range(3))

    def row(names):
        idx = [a.get(name) for a, name in names]
        return None if any(i is None for i in idx) else idx

    for i, a in enumerate(atoms):
        prev = atoms[i - 1] if i > 0 and bonded_next[i - 1] else None
        nxt = atoms[i + 1] if i + 1 < n and bonded_next[i] else None
        if prev is not None:
            for out, names in ((phi, ((prev, "C"), (a, "N"), (a, "CA"), (a, "C"))),
                               (omega, ((prev, "CA"), (prev, "C"), (a, "N"), (a, "CA")))):
                idx = row(names)
                if idx is not None:
                    out[i] = idx
        if nxt is not None:
            idx = row(((a, "N"), (a, "CA"), (a, "C"), (nxt, "N")))
            if idx is not None:
                psi[i] = idx
    return phi, psi, omega


def residue_classes(names, bonded_next, omega):
    """Ramachandran class of every residue.

    Parameters
    ----------
    names : sequence of str
        Standard residue names.
    bonded_next : array_like of bool, shape (n,)
        Residue ``i`` is bonded to ``i + 1``.
    omega : array_like, shape (n,)
        Omega before each residue in degrees (NaN where undefined: a proline
        without it counts as trans).

    Returns
    -------
    list of str
        Entries of :data:`CLASSES`.
    """
    out = []
    for i, name in enumerate(names):
        if name == "GLY":
            out.append("glycine")
        elif name == "PRO":
            out.append("cis-proline" if abs(omega[i]) < CIS_CUTOFF else "trans-proline")
        elif i + 1 < len(names) and bonded_next[i] and names[i + 1] == "PRO":
            out.append("pre-proline")
        else:
            out.append("general")
    return out


@functools.lru_cache(maxsize=None)
def load_table(directory=TABLE_DIR):
    """The shipped Ramachandran table.

    Parameters
    ----------
    directory : str, optional
        Folder holding ``ramachandran.npz`` and ``ramachandran.json``.

    Returns
    -------
    grids : dict
        Table name -> (n_phi, n_psi) log10 density (float64).
    info : dict
        The provenance and levels (``ramachandran.json``): per table
        ``favoured_level`` and ``allowed_level`` (log10 density), ``sigma_deg``,
        residue counts; ``grid`` (``start``, ``period``, ``shape``);
        ``class_of_table`` (residue class -> table name).
    """
    return load_grids(directory, "ramachandran")


def classify(phi, psi, classes, table=None):
    """Favoured / allowed / outlier code of (phi, psi) pairs.

    Parameters
    ----------
    phi, psi : array_like, shape (n_frames, n_res) or (n_res,)
        Backbone dihedrals in degrees.
    classes : sequence of str, length n_res
        Entries of :data:`CLASSES` (:func:`residue_classes`).
    table : tuple, optional
        ``(grids, info)`` as :func:`load_table` returns (default: the shipped one).

    Returns
    -------
    numpy.ndarray of int8, same shape as ``phi``
        :data:`FAVOURED`, :data:`ALLOWED` or :data:`OUTLIER`.
    """
    grids, info = load_table() if table is None else table
    phi = np.asarray(phi, dtype=np.float64)
    psi = np.asarray(psi, dtype=np.float64)
    out = np.full(phi.shape, OUTLIER, dtype=np.int8)
    start, period = info["grid"]["start"], info["grid"]["period"]
    classes = np.asarray(classes, dtype=object)
    for name in set(classes.tolist()):
        table_name = info["class_of_table"][name]
        levels = info["tables"][table_name]
        cols = classes == name
        density = lookup(grids[table_name], np.stack([phi[..., cols], psi[..., cols]], axis=-1), start, period)
        out[..., cols] = grade(density, levels["favoured_level"], levels["allowed_level"])
    return out
