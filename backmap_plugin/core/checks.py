"""Pure array checks of protein geometry (Angstrom and degrees).

The maths behind :mod:`~backmap_plugin.openmm.validate`: deviations from
ideal bond lengths and angles, bond and dihedral angles, all-atom van der
Waals overlaps with hydrogen-bond pairs spared, and Ramachandran regions.
Inputs are numpy arrays; nothing here knows about files or OpenMM.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from backmap_plugin.core import metrics

__all__ = [
    "ANGLE_SIGMA",
    "BOND_SIGMA",
    "CIS_CUTOFF",
    "CLASH_OVERLAP",
    "HBOND_MIN_DISTANCE",
    "N_SIGMA",
    "POLAR_H_RADIUS",
    "RAMACHANDRAN_REGIONS",
    "VDW_RADII",
    "all_atom_clashes",
    "angle_values",
    "bond_outliers",
    "deviation_outliers",
    "dihedral_values",
    "ramachandran_outliers",
]

#: Sigma of bond lengths (Angstrom) and angles (degrees) used for the 4-sigma
#: outlier test. One value per kind, not Engh & Huber's per-class table:
#: their published sigmas for protein bonds and angles lie around 0.01-0.03
#: Angstrom and 1.5-3 degrees, so these are typical values, stated here so
#: the thresholds (0.08 Angstrom, 8 degrees) are explicit.
BOND_SIGMA = 0.02
ANGLE_SIGMA = 2.0
#: Outlier threshold in sigma.
N_SIGMA = 4.0
#: |omega| below this (degrees) is a cis peptide.
CIS_CUTOFF = 30.0
#: All-atom clash: van der Waals overlap above this (Angstrom).
CLASH_OVERLAP = 0.4
#: Van der Waals radii (Angstrom) of Bondi, J. Phys. Chem. 68, 441 (1964),
#: except polar hydrogens (bonded to N, O or S): :data:`POLAR_H_RADIUS`.
#: MolProbity's Probe uses its own, atom-type dependent radii (e.g. carbonyl
#: C 1.65, nonpolar H 1.17), so clashscores here are comparable between our
#: structures but not identical to MolProbity's.
VDW_RADII = {"H": 1.20, "C": 1.70, "N": 1.55, "O": 1.52, "S": 1.80, "SE": 1.90}
#: Radius of polar hydrogens, the reduced value Probe uses for them (Word et
#: al., J. Mol. Biol. 285, 1711 (1999)).
POLAR_H_RADIUS = 1.00
#: Hydrogen-bond pairs (a hydrogen bonded to N/O/S with an N or O atom; two
#: N/O atoms one of which carries a hydrogen) count as clashes only below
#: these distances (Angstrom), since their overlap is the hydrogen bond.
HBOND_MIN_DISTANCE = {"H": 1.5, "heavy": 2.5}
#: Allowed Ramachandran regions as (phi_min, phi_max, psi_min, psi_max)
#: boxes in degrees, per residue class. A coarse, documented approximation
#: of the allowed (99.95%) contours of Lovell et al., Proteins 50, 437
#: (2003): beta/PPII and alpha-R/bridge regions at negative phi, the
#: left-handed helix for non-proline residues, proline limited to phi in
#: [-110, -35], glycine everywhere except |phi| < 40. Not MolProbity's
#: contours: expect a few differences near region borders. Residues without both
#: phi and psi (chain ends, breaks) are not scored.
RAMACHANDRAN_REGIONS = {
    "general": (
        (-180.0, -40.0, 90.0, 180.0),    # beta, PPII
        (-180.0, -40.0, -180.0, -150.0),  # beta wrapping through psi = 180
        (-180.0, -25.0, -125.0, 90.0),   # alpha-R, bridge
        (25.0, 110.0, -60.0, 100.0),      # alpha-L, gamma
    ),
    "PRO": (
        (-110.0, -35.0, 90.0, 180.0),
        (-110.0, -35.0, -180.0, -150.0),
        (-110.0, -35.0, -70.0, 90.0),
    ),
    "GLY": (
        (-180.0, -40.0, -180.0, 180.0),
        (40.0, 180.0, -180.0, 180.0),
    ),
}


def _frames(xyz) -> np.ndarray:
    arr = np.asarray(xyz, dtype=np.float64)
    return arr[None] if arr.ndim == 2 else arr


def deviation_outliers(values, ideal, sigma, n_sigma=N_SIGMA):
    """Which values lie more than ``n_sigma`` sigma from their ideal.

    Parameters
    ----------
    values : array_like, shape (n_frames, n)
        Measured values.
    ideal : array_like, shape (n,) or (n_frames, n)
        Ideal values.
    sigma : float or array_like, shape (n,)
        Standard deviations.
    n_sigma : float, optional
        Threshold.

    Returns
    -------
    numpy.ndarray of bool, shape (n_frames, n)
    """
    values = np.asarray(values, dtype=np.float64)
    return np.abs(values - np.asarray(ideal, dtype=np.float64)) > n_sigma * np.asarray(sigma, dtype=np.float64)


def bond_outliers(xyz, bonds, ideal, sigma=BOND_SIGMA, n_sigma=N_SIGMA):
    """Bond-length outliers.

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates in Angstrom.
    bonds : array_like of int, shape (n_bonds, 2)
        Atom index pairs.
    ideal : array_like, shape (n_bonds,)
        Ideal lengths in Angstrom.
    sigma : float or array_like, optional
        Standard deviation(s) in Angstrom.
    n_sigma : float, optional
        Threshold in sigma.

    Returns
    -------
    numpy.ndarray of bool, shape (n_frames, n_bonds)
    """
    return deviation_outliers(metrics.bond_lengths(xyz, bonds), ideal, sigma, n_sigma)


def angle_values(xyz, triples):
    """Bond angles ``a-b-c`` (vertex ``b``) in degrees.

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates.
    triples : array_like of int, shape (n_angles, 3)
        Atom indices ``(a, b, c)``.

    Returns
    -------
    numpy.ndarray, shape (n_frames, n_angles)
    """
    x = _frames(xyz)
    t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    u = x[:, t[:, 0]] - x[:, t[:, 1]]
    v = x[:, t[:, 2]] - x[:, t[:, 1]]
    cos = np.sum(u * v, axis=-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def all_atom_clashes(xyz, radii, bonds, hbond_kind=None, overlap=CLASH_OVERLAP, max_sep=3):
    """Atom pairs whose van der Waals spheres overlap by more than ``overlap``.

    Pairs at most ``max_sep`` bonds apart are not counted. Hydrogen-bond
    pairs (``hbond_kind``) count only when closer than
    :data:`HBOND_MIN_DISTANCE`.

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates in Angstrom, hydrogens included.
    radii : array_like, shape (n_atoms,)
        Van der Waals radii in Angstrom.
    bonds : array_like of int, shape (n_bonds, 2)
        All bonds (hydrogens included).
    hbond_kind : array_like of int, shape (n_atoms,), optional
        1 for polar hydrogens (bonded to N, O or S), 2 for N/O acceptors, 3
        for N/O atoms that carry a hydrogen (donors, also acceptors), 0
        otherwise. None treats no pair as a hydrogen bond.
    overlap : float, optional
        Overlap in Angstrom above which (strictly) a pair clashes.
    max_sep : int, optional
        Bond separation up to which pairs are excluded.

    Returns
    -------
    numpy.ndarray of int64, shape (n_frames,)
        Clashing pairs per frame.
    """
    x = _frames(xyz)
    r = np.asarray(radii, dtype=np.float64)
    n = x.shape[1]
    kind = np.zeros(n, dtype=np.int64) if hbond_kind is None else np.asarray(hbond_kind, dtype=np.int64)
    excl = metrics.bonded_exclusions(n, bonds, max_sep)
    excl_codes = excl[:, 0] * n + excl[:, 1]
    reach = 2.0 * r.max() - overlap
    counts = np.zeros(x.shape[0], dtype=np.int64)
    for f in range(x.shape[0]):
        pairs = cKDTree(x[f]).query_pairs(reach, output_type="ndarray").astype(np.int64)
        if len(pairs) == 0:
            continue
        pairs = np.sort(pairs, axis=1)
        pairs = pairs[~np.isin(pairs[:, 0] * n + pairs[:, 1], excl_codes)]
        i, j = pairs[:, 0], pairs[:, 1]
        d = np.linalg.norm(x[f, i] - x[f, j], axis=1)
        clash = r[i] + r[j] - d > overlap
        ki, kj = kind[i], kind[j]
        h_pair = ((ki == 1) & (kj >= 2)) | ((kj == 1) & (ki >= 2))
        heavy_pair = (ki >= 2) & (kj >= 2) & ((ki == 3) | (kj == 3))
        clash &= ~(h_pair & (d >= HBOND_MIN_DISTANCE["H"]))
        clash &= ~(heavy_pair & (d >= HBOND_MIN_DISTANCE["heavy"]))
        counts[f] = np.count_nonzero(clash)
    return counts


def _in_boxes(phi, psi, boxes):
    inside = np.zeros(np.shape(phi), dtype=bool)
    for lo_phi, hi_phi, lo_psi, hi_psi in boxes:
        inside |= (phi >= lo_phi) & (phi <= hi_phi) & (psi >= lo_psi) & (psi <= hi_psi)
    return inside


def ramachandran_outliers(phi, psi, residue_class):
    """Which (phi, psi) pairs lie outside :data:`RAMACHANDRAN_REGIONS`.

    Parameters
    ----------
    phi, psi : array_like, shape (n_frames, n_res)
        Backbone dihedrals in degrees, in [-180, 180].
    residue_class : sequence of str, length n_res
        ``"GLY"``, ``"PRO"`` or ``"general"`` per residue.

    Returns
    -------
    numpy.ndarray of bool, shape (n_frames, n_res)
    """
    phi = np.atleast_2d(np.asarray(phi, dtype=np.float64))
    psi = np.atleast_2d(np.asarray(psi, dtype=np.float64))
    allowed = np.zeros(phi.shape, dtype=bool)
    classes = np.asarray(residue_class)
    for name, boxes in RAMACHANDRAN_REGIONS.items():
        cols = classes == name
        allowed[:, cols] = _in_boxes(phi[:, cols], psi[:, cols], boxes)
    return ~allowed


def dihedral_values(xyz, quads):
    """Dihedral angles of atom quadruples in degrees (IUPAC sign, in [-180, 180]).

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates.
    quads : array_like of int, shape (n_dihedrals, 4)
        Atom indices ``(a, b, c, d)``.

    Returns
    -------
    numpy.ndarray, shape (n_frames, n_dihedrals)
    """
    x = _frames(xyz)
    q = np.asarray(quads, dtype=np.int64).reshape(-1, 4)
    b0 = x[:, q[:, 0]] - x[:, q[:, 1]]
    b1 = x[:, q[:, 2]] - x[:, q[:, 1]]
    b2 = x[:, q[:, 3]] - x[:, q[:, 2]]
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, axis=-1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, axis=-1, keepdims=True) * b1n
    x_ = np.sum(v * w, axis=-1)
    y_ = np.sum(np.cross(b1n, v) * w, axis=-1)
    return np.degrees(np.arctan2(y_, x_))
