"""Pure array checks of protein geometry (Angstrom and degrees).

The maths behind :mod:`~backmap_plugin.openmm.validate`: deviations from
ideal bond lengths and angles, bond and dihedral angles, all-atom van der
Waals overlaps with hydrogen-bond pairs spared, ideal C-beta positions and
their deviations, cis and twisted peptides. The Ramachandran and rotamer
checks are in :mod:`~backmap_plugin.core.ramachandran` and
:mod:`~backmap_plugin.core.rotamer_density`.
Inputs are numpy arrays; nothing here knows about files or OpenMM.
"""

from __future__ import annotations

import numpy as np

from backmap_plugin.core import metrics

__all__ = [
    "ANGLE_SIGMA",
    "BOND_SIGMA",
    "CARBONYL_C_RADIUS",
    "CBETA_DEVIATION",
    "CIS_CUTOFF",
    "CLASH_OVERLAP",
    "HBOND_MIN_DISTANCE",
    "N_SIGMA",
    "POLAR_H_RADIUS",
    "TWIST_CUTOFF",
    "VDW_RADII",
    "all_atom_clashes",
    "angle_values",
    "bond_outliers",
    "cbeta_deviations",
    "deviation_outliers",
    "dihedral_values",
    "ideal_cbeta",
    "peptide_conformations",
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
#: All-atom clash: van der Waals overlap of at least this (Angstrom), MolProbity's "serious" overlap.
CLASH_OVERLAP = 0.4
#: Van der Waals radii (Angstrom) of MolProbity's Probe for explicit
#: hydrogens (Word et al., J. Mol. Biol. 285, 1711 (1999)): nonpolar H 1.17,
#: C 1.75, N 1.55, O 1.40, S 1.80; carbonyl carbons
#: :data:`CARBONYL_C_RADIUS`, polar hydrogens :data:`POLAR_H_RADIUS`; Se
#: (selenomethionine) Bondi's 1.90. Differences from MolProbity's clashscore
#: remain: hydrogens are placed by OpenMM at nuclear distances (Reduce
#: places them at electron-cloud distances, about 0.1 Angstrom shorter, and
#: optimises OH/NH3+ rotations and Asn/Gln/His flips), and Probe's dot
#: surfaces are replaced by a pair count.
VDW_RADII = {"H": 1.17, "C": 1.75, "N": 1.55, "O": 1.40, "S": 1.80, "SE": 1.90}
#: Radius of carbon atoms with a double-bonded oxygen (an O with one bond):
#: backbone C, Asp CG, Glu CD, Asn CG, Gln CD.
CARBONYL_C_RADIUS = 1.65
#: Radius of polar hydrogens (bonded to N, O or S), the reduced value Probe uses for them.
POLAR_H_RADIUS = 1.00
#: Hydrogen-bond pairs (a hydrogen bonded to N/O/S with an N or O atom; two
#: N/O atoms one of which carries a hydrogen) count as clashes only below
#: these distances (Angstrom), since their overlap is the hydrogen bond.
HBOND_MIN_DISTANCE = {"H": 1.5, "heavy": 2.5}
#: A C-beta farther than this (Angstrom) from its ideal position is a
#: C-beta deviation (Lovell et al., Proteins 50, 437 (2003)).
CBETA_DEVIATION = 0.25
#: |omega| from this up to 180 minus it (degrees) is a twisted peptide
#: (MolProbity: more than 30 degrees from planar, neither cis nor trans).
TWIST_CUTOFF = 30.0


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
    """Atom pairs whose van der Waals spheres overlap by ``overlap`` or more.

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
        Overlap in Angstrom from which a pair clashes.
    max_sep : int, optional
        Bond separation up to which pairs are excluded.

    Returns
    -------
    numpy.ndarray of int64, shape (n_frames,)
        Clashing pairs per frame.
    """
    from scipy.spatial import cKDTree  # (here: the builders read this module's sigmas, and backmap run no scipy)

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
        clash = r[i] + r[j] - d >= overlap
        ki, kj = kind[i], kind[j]
        h_pair = ((ki == 1) & (kj >= 2)) | ((kj == 1) & (ki >= 2))
        heavy_pair = (ki >= 2) & (kj >= 2) & ((ki == 3) | (kj == 3))
        clash &= ~(h_pair & (d >= HBOND_MIN_DISTANCE["H"]))
        clash &= ~(heavy_pair & (d >= HBOND_MIN_DISTANCE["heavy"]))
        counts[f] = np.count_nonzero(clash)
    return counts


def ideal_cbeta(n, ca, c, bond, angle, torsion):
    """Ideal C-beta positions from the backbone N, CA and C.

    The average of two placements (as MolProbity's ideal C-beta): from N
    with the N-CA-CB angle and the CB-CA-N-C torsion of the residue table,
    and from C with the C-CA-CB angle and CB-CA-C-N torsion that the same
    ideal tetrahedron has when N-CA-C is the ideal
    :data:`~backmap_plugin.core.chemistry.ANGLE_N_CA_C`. Averaging cancels
    most of the shift a strained N-CA-C angle gives each placement alone.

    Parameters
    ----------
    n, ca, c : array_like, shape (..., 3)
        Backbone atoms in Angstrom.
    bond : array_like, shape (...)
        CA-CB length in Angstrom.
    angle, torsion : array_like, shape (...)
        N-CA-CB angle and CB-CA-N-C torsion in degrees (Engh & Huber, the
        Z-matrix row of CB in :data:`backmap_plugin.core.chemistry.RESIDUES`).

    Returns
    -------
    numpy.ndarray, shape (..., 3)
    """
    import torch

    from backmap_plugin.core import chemistry as chem
    from backmap_plugin.core import geometry as geo

    def t(x):
        return torch.as_tensor(np.asarray(x, dtype=np.float64))

    n, ca, c, bond = t(n), t(ca), t(c), t(bond)
    angle, torsion = torch.deg2rad(t(angle)), torch.deg2rad(t(torsion))
    # the C-side angle and torsion of the same ideal tetrahedron
    zero = torch.zeros(angle.shape + (3,), dtype=torch.float64)
    ideal_ca = zero + torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    ideal_n = zero + torch.tensor([chem.BOND_N_CA, 0.0, 0.0], dtype=torch.float64)
    tau = np.deg2rad(chem.ANGLE_N_CA_C)
    ideal_c = zero + torch.tensor([chem.BOND_CA_C * np.cos(tau), chem.BOND_CA_C * np.sin(tau), 0.0],
                                  dtype=torch.float64)
    ideal_cb = geo.place_atom(ideal_ca, ideal_n, ideal_c, bond, angle, torsion)
    angle_c = geo.bond_angle(ideal_cb, ideal_ca, ideal_c)
    torsion_c = geo.dihedral(ideal_cb, ideal_ca, ideal_c, ideal_n)
    from_n = geo.place_atom(ca, n, c, bond, angle, torsion)
    from_c = geo.place_atom(ca, c, n, bond, angle_c, torsion_c)
    return (0.5 * (from_n + from_c)).numpy()


def cbeta_deviations(xyz, n_idx, ca_idx, c_idx, cb_idx, bond, angle, torsion):
    """Distance of every C-beta from its ideal position (:func:`ideal_cbeta`).

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates in Angstrom.
    n_idx, ca_idx, c_idx, cb_idx : array_like of int, shape (n,)
        Atom indices per residue.
    bond, angle, torsion : array_like, shape (n,)
        Ideal CA-CB length, N-CA-CB angle and CB-CA-N-C torsion (degrees).

    Returns
    -------
    numpy.ndarray, shape (n_frames, n)
        Angstrom; compare with :data:`CBETA_DEVIATION`.
    """
    x = _frames(xyz)
    ideal = ideal_cbeta(x[:, n_idx], x[:, ca_idx], x[:, c_idx], bond, angle, torsion)
    return np.linalg.norm(x[:, cb_idx] - ideal, axis=-1)


def peptide_conformations(omega):
    """Cis and twisted peptides from omega angles.

    Parameters
    ----------
    omega : array_like
        Omega (CA-C-N-CA) in degrees, in [-180, 180].

    Returns
    -------
    cis, twisted : numpy.ndarray of bool
        ``|omega| <`` :data:`CIS_CUTOFF`; ``|omega|`` within
        [:data:`TWIST_CUTOFF`, 180 - :data:`TWIST_CUTOFF`].
    """
    a = np.abs(np.asarray(omega, dtype=np.float64))
    return a < CIS_CUTOFF, (a >= TWIST_CUTOFF) & (a <= 180.0 - TWIST_CUTOFF)


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
