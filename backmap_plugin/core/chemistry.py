"""Residue chemistry: the one table of the 20 standard amino acids.

Every fact about residues lives here: heavy atoms (PDB / OpenMM amber14
names), elements, bonds, the Z-matrix that builds each heavy atom from three
already placed atoms, chi angles, chemically symmetric atom pairs, and the
normalisation of the residue and atom names that real programs write.

Lengths are in Angstrom (the package's one internal length unit) and angles
in degrees in the table; :data:`ZMATRIX` holds the same values in radians as
arrays for the geometry code.

Atom slots
----------
Every residue is stored in a fixed layout of :data:`N_SLOTS` atom slots:
``N, CA, C, O`` in slots 0-3, side-chain atoms from slot 4 (``CB``) in build
order, and the C-terminal ``OXT`` in slot :data:`SLOT_OXT`. The geometry code
adds four context slots holding C-alpha atoms of neighbouring residues, which
the backbone ``N`` and ``C`` are built from (see :mod:`backmap_plugin.core.geometry`).

Z-matrix convention
-------------------
Atom X is placed from parents (A, B, C) by the bond length ``|X - A|``, the
bond angle ``angle(X, A, B)`` and the torsion ``dihedral(X, A, B, C)`` (IUPAC
sign). Ideal bond lengths and angles are those of Engh & Huber (1991, Acta
Cryst. A47, 392); fixed torsions are those of planar groups and of the
tetrahedral branch points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backmap_plugin.core.errors import BackmapInputError

N_SLOTS = 15
SLOT_N, SLOT_CA, SLOT_C, SLOT_O, SLOT_CB = 0, 1, 2, 3, 4
SLOT_OXT = N_SLOTS - 1
#: Context slots (after the atom slots) holding C-alpha atoms of other
#: residues: the backbone N is built from (CA, REF_N1, REF_N2) and C from
#: (CA, REF_C1, REF_C2); which neighbours fill them depends on the residue's
#: place in its segment (see :func:`backmap_plugin.core.geometry.context_indices`).
REF_N1, REF_N2, REF_C1, REF_C2 = N_SLOTS, N_SLOTS + 1, N_SLOTS + 2, N_SLOTS + 3
N_EXTENDED_SLOTS = N_SLOTS + 4

#: Build order of the atom slots: every parent of a slot is built earlier
#: (CA and the context slots are given); the side-chain slots (CB ... before OXT) alone.
SIDE_CHAIN_BUILD_ORDER = tuple(range(SLOT_CB, SLOT_OXT))
BUILD_ORDER = (SLOT_N, SLOT_C, SLOT_O) + SIDE_CHAIN_BUILD_ORDER + (SLOT_OXT,)
#: (N_SLOTS,) bool: the side-chain slots (CB ... before OXT).
SIDE_CHAIN_SLOTS = np.isin(np.arange(N_SLOTS), SIDE_CHAIN_BUILD_ORDER)

# Backbone ideal geometry (Engh & Huber 1991), Angstrom and degrees.
BOND_N_CA = 1.458
BOND_CA_C = 1.525
BOND_C_O = 1.231
BOND_C_N = 1.329
BOND_C_OXT = 1.250
ANGLE_N_CA_C = 111.2
ANGLE_CA_C_O = 120.1
ANGLE_CA_C_N = 116.2
ANGLE_C_N_CA = 121.7
ANGLE_CA_C_OXT = 117.0
# cis peptides (almost always X-Pro) open both angles: CA-CA about 3.0
ANGLE_CA_C_N_CIS = 119.0
ANGLE_C_N_CA_CIS = 128.0
BOND_CA_CA_TRANS = 3.80
# the disulfide bond (Engh & Huber): S-S length and CB-SG-SG angle
BOND_SG_SG = 2.04
#: Cysteine pairs whose SG atoms lie closer than this (Angstrom) are a disulfide (:func:`disulfide_pairs`).
DISULFIDE_CUTOFF = 2.5
ANGLE_CB_SG_SG = 104.0

# CA-CB bond and N-CA-CB angle where they differ from the default
# (1.530, 110.5): proline and the beta-branched residues.
_CB_GEOMETRY = {"PRO": (1.530, 103.0), "VAL": (1.540, 111.5), "ILE": (1.540, 111.5), "THR": (1.540, 111.5)}
# N-CA and CA-C bonds where they differ from the default.
_BACKBONE_BONDS = {"GLY": (1.451, 1.516), "PRO": (1.466, BOND_CA_C)}

# Side-chain Z-matrix: (atom, element, A, B, C, bond, angle, torsion).
# torsion is a float (fixed, degrees) or "chiK" (the K-th chi angle).
_SIDE_CHAINS: dict[str, list[tuple]] = {
    "ALA": [],
    "GLY": [],
    "SER": [("OG", "O", "CB", "CA", "N", 1.417, 111.1, "chi1")],
    "CYS": [("SG", "S", "CB", "CA", "N", 1.808, 114.4, "chi1")],
    "VAL": [
        ("CG1", "C", "CB", "CA", "N", 1.521, 110.5, "chi1"),
        ("CG2", "C", "CB", "CA", "CG1", 1.521, 110.5, 122.9),
    ],
    "THR": [
        ("OG1", "O", "CB", "CA", "N", 1.433, 109.6, "chi1"),
        ("CG2", "C", "CB", "CA", "OG1", 1.521, 110.5, -120.0),
    ],
    "ILE": [
        ("CG1", "C", "CB", "CA", "N", 1.530, 110.4, "chi1"),
        ("CG2", "C", "CB", "CA", "CG1", 1.521, 110.5, -122.9),
        ("CD1", "C", "CG1", "CB", "CA", 1.513, 113.8, "chi2"),
    ],
    "LEU": [
        ("CG", "C", "CB", "CA", "N", 1.530, 116.3, "chi1"),
        ("CD1", "C", "CG", "CB", "CA", 1.521, 110.7, "chi2"),
        ("CD2", "C", "CG", "CB", "CD1", 1.521, 110.7, 122.9),
    ],
    "MET": [
        ("CG", "C", "CB", "CA", "N", 1.520, 114.1, "chi1"),
        ("SD", "S", "CG", "CB", "CA", 1.803, 112.7, "chi2"),
        ("CE", "C", "SD", "CG", "CB", 1.791, 100.9, "chi3"),
    ],
    "PRO": [
        ("CG", "C", "CB", "CA", "N", 1.492, 104.5, "chi1"),
        ("CD", "C", "N", "CA", "CB", 1.473, 112.0, -3.0),
    ],
    "PHE": [
        ("CG", "C", "CB", "CA", "N", 1.502, 113.8, "chi1"),
        ("CD1", "C", "CG", "CB", "CA", 1.384, 120.7, "chi2"),
        ("CD2", "C", "CG", "CB", "CD1", 1.384, 120.7, 180.0),
        ("CE1", "C", "CD1", "CG", "CB", 1.382, 120.7, 180.0),
        ("CE2", "C", "CD2", "CG", "CB", 1.382, 120.7, 180.0),
        ("CZ", "C", "CE1", "CD1", "CG", 1.382, 120.0, 0.0),
    ],
    "TYR": [
        ("CG", "C", "CB", "CA", "N", 1.512, 113.9, "chi1"),
        ("CD1", "C", "CG", "CB", "CA", 1.389, 120.8, "chi2"),
        ("CD2", "C", "CG", "CB", "CD1", 1.389, 120.8, 180.0),
        ("CE1", "C", "CD1", "CG", "CB", 1.382, 121.2, 180.0),
        ("CE2", "C", "CD2", "CG", "CB", 1.382, 121.2, 180.0),
        ("CZ", "C", "CE1", "CD1", "CG", 1.378, 119.6, 0.0),
        ("OH", "O", "CZ", "CE1", "CD1", 1.376, 119.9, 180.0),
    ],
    "TRP": [
        ("CG", "C", "CB", "CA", "N", 1.498, 113.6, "chi1"),
        ("CD1", "C", "CG", "CB", "CA", 1.365, 126.9, "chi2"),
        ("CD2", "C", "CG", "CB", "CD1", 1.433, 126.8, 180.0),
        ("NE1", "N", "CD1", "CG", "CB", 1.374, 110.2, 180.0),
        ("CE2", "C", "CD2", "CG", "CB", 1.409, 107.2, 180.0),
        ("CE3", "C", "CD2", "CG", "CB", 1.398, 133.9, 0.0),
        ("CZ2", "C", "CE2", "CD2", "CG", 1.394, 122.4, 180.0),
        ("CZ3", "C", "CE3", "CD2", "CG", 1.382, 118.6, 180.0),
        ("CH2", "C", "CZ2", "CE2", "CD2", 1.368, 117.5, 0.0),
    ],
    "HIS": [
        ("CG", "C", "CB", "CA", "N", 1.497, 113.8, "chi1"),
        ("ND1", "N", "CG", "CB", "CA", 1.378, 122.7, "chi2"),
        ("CD2", "C", "CG", "CB", "ND1", 1.354, 131.0, 180.0),
        ("CE1", "C", "ND1", "CG", "CB", 1.321, 109.0, 180.0),
        ("NE2", "N", "CD2", "CG", "CB", 1.374, 107.2, 180.0),
    ],
    "ASP": [
        ("CG", "C", "CB", "CA", "N", 1.516, 112.6, "chi1"),
        ("OD1", "O", "CG", "CB", "CA", 1.249, 118.4, "chi2"),
        ("OD2", "O", "CG", "CB", "OD1", 1.249, 118.4, 180.0),
    ],
    "ASN": [
        ("CG", "C", "CB", "CA", "N", 1.516, 112.6, "chi1"),
        ("OD1", "O", "CG", "CB", "CA", 1.231, 120.8, "chi2"),
        ("ND2", "N", "CG", "CB", "OD1", 1.328, 116.4, 180.0),
    ],
    "GLU": [
        ("CG", "C", "CB", "CA", "N", 1.520, 114.1, "chi1"),
        ("CD", "C", "CG", "CB", "CA", 1.516, 112.6, "chi2"),
        ("OE1", "O", "CD", "CG", "CB", 1.249, 118.4, "chi3"),
        ("OE2", "O", "CD", "CG", "OE1", 1.249, 118.4, 180.0),
    ],
    "GLN": [
        ("CG", "C", "CB", "CA", "N", 1.520, 114.1, "chi1"),
        ("CD", "C", "CG", "CB", "CA", 1.516, 112.6, "chi2"),
        ("OE1", "O", "CD", "CG", "CB", 1.231, 120.8, "chi3"),
        ("NE2", "N", "CD", "CG", "OE1", 1.328, 116.4, 180.0),
    ],
    "LYS": [
        ("CG", "C", "CB", "CA", "N", 1.520, 114.1, "chi1"),
        ("CD", "C", "CG", "CB", "CA", 1.520, 111.3, "chi2"),
        ("CE", "C", "CD", "CG", "CB", 1.520, 111.3, "chi3"),
        ("NZ", "N", "CE", "CD", "CG", 1.489, 111.9, "chi4"),
    ],
    "ARG": [
        ("CG", "C", "CB", "CA", "N", 1.520, 114.1, "chi1"),
        ("CD", "C", "CG", "CB", "CA", 1.520, 111.3, "chi2"),
        ("NE", "N", "CD", "CG", "CB", 1.460, 112.0, "chi3"),
        ("CZ", "C", "NE", "CD", "CG", 1.329, 124.2, "chi4"),
        ("NH1", "N", "CZ", "NE", "CD", 1.326, 120.0, 0.0),
        ("NH2", "N", "CZ", "NE", "NH1", 1.326, 120.0, 180.0),
    ],
}

# Bonds closing rings (every other bond is atom -- its first parent), with
# their ideal lengths.
_RING_CLOSURES: dict[str, list[tuple[str, str, float]]] = {
    "PRO": [("CG", "CD", 1.503)],
    "PHE": [("CE2", "CZ", 1.382)],
    "TYR": [("CE2", "CZ", 1.378)],
    "TRP": [("NE1", "CE2", 1.370), ("CZ3", "CH2", 1.400)],
    "HIS": [("CE1", "NE2", 1.321)],
}

#: Pairs of atoms that are chemically equivalent by symmetry (swapping them
#: gives the same molecule): carboxylates, guanidinium, aromatic rings.
SYMMETRIC_PAIRS: dict[str, list[tuple[str, str]]] = {
    "ASP": [("OD1", "OD2")],
    "GLU": [("OE1", "OE2")],
    "PHE": [("CD1", "CD2"), ("CE1", "CE2")],
    "TYR": [("CD1", "CD2"), ("CE1", "CE2")],
    "ARG": [("NH1", "NH2")],
}

_ONE_LETTER = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C",
    "GLN": "Q", "GLU": "E", "GLY": "G", "HIS": "H", "ILE": "I",
    "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P",
    "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V",
}

#: The 20 standard residues, in the order of their type index.
RESIDUE_NAMES: tuple[str, ...] = tuple(sorted(_ONE_LETTER))
RESIDUE_INDEX = {name: i for i, name in enumerate(RESIDUE_NAMES)}
ONE_TO_THREE = {v: k for k, v in _ONE_LETTER.items()}
THREE_TO_ONE = dict(_ONE_LETTER)


@dataclass(frozen=True)
class ResidueSpec:
    """Chemistry of one standard amino acid.

    Attributes
    ----------
    name : str
        Three-letter name (PDB / amber14).
    atoms : tuple of str
        Heavy atoms in slot order, without OXT.
    elements : tuple of str
        Element symbols, same order.
    bonds : tuple of (str, str)
        Intra-residue heavy-atom bonds (OXT excluded).
    bond_lengths : tuple of float
        Ideal length of each bond (Angstrom).
    zmatrix : tuple of tuple
        ``(atom, A, B, C, bond, angle, torsion)`` for every side-chain atom
        (from CB on); torsion is degrees or ``"chiK"``.
    chis : tuple of tuple of str
        The four atoms defining each chi angle, IUPAC order.
    """

    name: str
    atoms: tuple[str, ...]
    elements: tuple[str, ...]
    bonds: tuple[tuple[str, str], ...]
    bond_lengths: tuple[float, ...]
    zmatrix: tuple[tuple, ...]
    chis: tuple[tuple[str, str, str, str], ...]

    @property
    def n_atoms(self) -> int:
        """Number of heavy atoms without OXT."""
        return len(self.atoms)


def _make_spec(name: str) -> ResidueSpec:
    side = list(_SIDE_CHAINS[name])
    if name != "GLY":
        bond, angle = _CB_GEOMETRY.get(name, (1.530, 110.5))
        side.insert(0, ("CB", "C", "CA", "N", "C", bond, angle, -122.6))
    atoms = ("N", "CA", "C", "O") + tuple(e[0] for e in side)
    elements = ("N", "C", "C", "O") + tuple(e[1] for e in side)
    n_ca, ca_c = _BACKBONE_BONDS.get(name, (BOND_N_CA, BOND_CA_C))
    bonds = [("N", "CA"), ("CA", "C"), ("C", "O")] + [(e[2], e[0]) for e in side]
    lengths = [n_ca, ca_c, BOND_C_O] + [e[5] for e in side]
    for a, b, length in _RING_CLOSURES.get(name, []):
        bonds.append((a, b))
        lengths.append(length)
    zmat = tuple((e[0],) + tuple(e[2:]) for e in side)
    chis = []
    for e in side:
        if isinstance(e[7], str):
            chis.append((e[4], e[3], e[2], e[0]))
    return ResidueSpec(name, atoms, elements, tuple(bonds), tuple(lengths), zmat, tuple(chis))


RESIDUES: dict[str, ResidueSpec] = {name: _make_spec(name) for name in RESIDUE_NAMES}
MAX_CHIS = 4

# --------------------------------------------------------------------------
# Name normalisation
# --------------------------------------------------------------------------

#: Residue names written by force fields and programs -> standard name.
RESIDUE_ALIASES = {
    "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "HID": "HIS", "HIE": "HIS",
    "HIP": "HIS", "HISA": "HIS", "HISB": "HIS", "HISD": "HIS", "HISE": "HIS",
    "HISH": "HIS", "HIS1": "HIS", "HIS2": "HIS",
    "CYX": "CYS", "CYM": "CYS", "CYS2": "CYS", "CYSH": "CYS",
    "ASH": "ASP", "ASPH": "ASP", "GLH": "GLU", "GLUH": "GLU",
    "LYN": "LYS", "LSN": "LYS", "LYSH": "LYS", "ARN": "ARG",
}

#: Residue names of coarse-grained programs -> standard name, read only for residues whose atoms are backbone
#: atoms, a C-beta or one bead (:func:`cg_program_residue_name`): the same codes name other chemical components
#: in the PDB's dictionary. openAWSEM (``*-openmmawsem.pdb``) names glycine IGL and proline IPR.
CG_PROGRAM_ALIASES = {"IGL": "GLY", "IPR": "PRO"}
#: Atoms a residue of :data:`CG_PROGRAM_ALIASES` may hold (openAWSEM: N, CA, C, O, CB).
_CG_PROGRAM_ATOMS = frozenset({"N", "CA", "C", "O", "CB", "OXT"})

#: Modified amino acids built as their parent (extra atoms dropped, reported).
MODIFIED_PARENTS = {
    "MSE": "MET", "SEP": "SER", "TPO": "THR", "PTR": "TYR", "HYP": "PRO",
    "MLY": "LYS", "CSO": "CYS", "CME": "CYS", "KCX": "LYS", "LLP": "LYS",
    "SME": "MET", "M3L": "LYS", "CSD": "CYS", "MLZ": "LYS", "ALY": "LYS",
    "LRT": "LYS", "YPL": "CYS",  # retinal-bound lysine, palmitoylated cysteine
}

#: Capping groups: dropped with a report.
CAPS = frozenset({"ACE", "NME", "NMA", "NH2", "NHE", "FOR", "CT3"})

_ATOM_ALIASES_ANY = {"OT1": "O", "OC1": "O", "O1": "O", "OT2": "OXT", "OC2": "OXT", "O2": "OXT", "OT": "OXT"}
_ATOM_ALIASES_RES = {
    ("ILE", "CD"): "CD1",
    ("MET", "SE"): "SD",  # selenomethionine
}


def _strip_terminal_prefix(name: str) -> str | None:
    """Amber writes terminal residues as NALA / CLYS: return ALA / LYS."""
    if len(name) == 4 and name[0] in "NC":
        rest = name[1:]
        if rest in RESIDUE_INDEX or rest in RESIDUE_ALIASES:
            return rest
    return None


def standard_residue_name(name: str) -> str | None:
    """Map a residue name as written by a program to a standard name.

    Parameters
    ----------
    name : str
        Residue name from a file: three-letter, force-field variant (HSD,
        HIE, CYX, ASH ...), Amber terminal form (NALA, CLYS), modified
        residue with a standard parent (MSE, SEP ...) or a one-letter code.

    Returns
    -------
    str or None
        The standard three-letter name, or None when the name is unknown.
    """
    key = name.strip().upper()
    if key in RESIDUE_INDEX:
        return key
    if len(key) == 1:
        return ONE_TO_THREE.get(key)
    stripped = _strip_terminal_prefix(key)
    if stripped is not None:
        key = stripped
    key = RESIDUE_ALIASES.get(key, key)
    key = MODIFIED_PARENTS.get(key, key)
    return key if key in RESIDUE_INDEX else None


def cg_program_residue_name(name: str, atoms) -> str | None:
    """The standard name of a residue that a coarse-grained program names its own way (:data:`CG_PROGRAM_ALIASES`,
    e.g. openAWSEM's IGL for glycine), else None.

    Parameters
    ----------
    name : str
        Residue name from a file.
    atoms : iterable of str
        Names of its heavy atoms: only backbone atoms and a C-beta, or a single bead, read it so (a chemical
        component of that code has atoms of its own).

    Returns
    -------
    str or None
    """
    parent = CG_PROGRAM_ALIASES.get(name.strip().upper())
    names = {atom.strip().upper() for atom in atoms}
    if parent is None or not (len(names) <= 1 or names <= _CG_PROGRAM_ATOMS):
        return None
    return parent


def require_residue_name(name: str, where: str) -> str:
    """Like :func:`standard_residue_name` but raise for an unknown name.

    Parameters
    ----------
    name : str
        Residue name from a file.
    where : str
        Location for the error message (file, chain, residue).

    Raises
    ------
    BackmapInputError
        Naming the residue, where it is and every supported name.
    """
    std = standard_residue_name(name)
    if std is not None:
        return std
    if name.strip().upper() in ("X", "Z"):
        raise BackmapInputError(
            f"{where}: residue '{name}' is a terminal placeholder (CALVADOS 2 "
            f"style); its amino acid is only in your sequence: {SEQUENCE_FROM_NAMES}"
        )
    if name.strip().upper() in UNKNOWN_AMINO_ACID:
        raise BackmapInputError(f"{where}: residue '{name}' is an unknown amino acid: {SEQUENCE_FROM_NAMES}")
    if name.strip().upper() in D_AMINO_ACIDS:
        raise BackmapInputError(
            f"{where}: residue '{name}' is D-{D_AMINO_ACIDS[name.strip().upper()]}: D-amino acids are not supported "
            "(the builders make L residues)"
        )
    raise BackmapInputError(
        f"{where}: unknown residue '{name}'. Supported: "
        + ", ".join(RESIDUE_NAMES)
        + "; one-letter codes; variants "
        + ", ".join(sorted(RESIDUE_ALIASES))
        + "; modified residues "
        + ", ".join(sorted(MODIFIED_PARENTS))
        + "; coarse-grained programs' "
        + ", ".join(sorted(CG_PROGRAM_ALIASES))
        + " (backbone atoms and C-beta)"
    )


#: Residue names that say no amino acid: the PDB's unknown amino acid, which CG programs (HOOMD, LAMMPS converters)
#: write for every bead.
UNKNOWN_AMINO_ACID = frozenset({"UNK"})
#: What an input whose residue names give no sequence needs.
SEQUENCE_FROM_NAMES = ("the residue names must give the sequence: rename the residues (ALA, GLY ...), or pass a "
                       "topology with the sequence (--top)")


#: The PDB's names of the D-amino acids, with the L residue each mirrors.
D_AMINO_ACIDS = {"DAL": "ALA", "DAR": "ARG", "DSG": "ASN", "DAS": "ASP", "DCY": "CYS", "DGN": "GLN", "DGL": "GLU",
                 "DHI": "HIS", "DIL": "ILE", "DLE": "LEU", "DLY": "LYS", "MED": "MET", "DPN": "PHE", "DPR": "PRO",
                 "DSN": "SER", "DTH": "THR", "DTR": "TRP", "DTY": "TYR", "DVA": "VAL"}


def standard_atom_name(residue: str, atom: str) -> str | None:
    """Map an atom name as written by a program to the standard heavy-atom name.

    Parameters
    ----------
    residue : str
        Standard residue name (output of :func:`standard_residue_name`).
    atom : str
        Atom name from the file.

    Returns
    -------
    str or None
        The standard name when the atom is a heavy atom of the residue (OXT
        included), else None (hydrogens, atoms of modifications).
    """
    key = atom.strip().upper()
    key = _ATOM_ALIASES_RES.get((residue, key), key)
    key = _ATOM_ALIASES_ANY.get(key, key)
    if key == "OXT" or key in RESIDUES[residue].atoms:
        return key
    return None


# --------------------------------------------------------------------------
# Arrays for the geometry code
# --------------------------------------------------------------------------


def _slot_of(spec: ResidueSpec, atom: str) -> int:
    return SLOT_OXT if atom == "OXT" else spec.atoms.index(atom)


def _build_tables():
    n_types = len(RESIDUE_NAMES)
    parents = np.zeros((n_types, N_SLOTS, 3), dtype=np.int64)
    values = np.full((n_types, N_SLOTS, 3), np.nan)  # bond, angle, torsion (rad)
    chi_of = np.full((n_types, N_SLOTS), -1, dtype=np.int64)
    exists = np.zeros((n_types, N_SLOTS), dtype=bool)
    # Default parents for absent slots: a valid, non-degenerate frame.
    parents[:] = (SLOT_CA, SLOT_N, SLOT_C)
    values[:] = (1.5, np.deg2rad(110.0), 0.0)
    chi_atoms = np.zeros((n_types, MAX_CHIS, 4), dtype=np.int64)
    chi_exists = np.zeros((n_types, MAX_CHIS), dtype=bool)
    for t, name in enumerate(RESIDUE_NAMES):
        spec = RESIDUES[name]
        exists[t, : spec.n_atoms] = True
        exists[t, SLOT_OXT] = True  # present where the residue ends a segment
        parents[t, SLOT_N] = (SLOT_CA, REF_N1, REF_N2)
        parents[t, SLOT_C] = (SLOT_CA, REF_C1, REF_C2)
        parents[t, SLOT_O] = (SLOT_C, SLOT_CA, SLOT_N)
        parents[t, SLOT_OXT] = (SLOT_C, SLOT_CA, SLOT_O)
        n_ca, ca_c = _BACKBONE_BONDS.get(name, (BOND_N_CA, BOND_CA_C))
        values[t, SLOT_N] = (n_ca, np.nan, np.nan)
        values[t, SLOT_C] = (ca_c, np.nan, np.nan)
        values[t, SLOT_O] = (BOND_C_O, np.deg2rad(ANGLE_CA_C_O), np.nan)
        values[t, SLOT_OXT] = (BOND_C_OXT, np.deg2rad(ANGLE_CA_C_OXT), np.pi)
        for atom, a, b, c, bond, angle, torsion in spec.zmatrix:
            s = _slot_of(spec, atom)
            parents[t, s] = (_slot_of(spec, a), _slot_of(spec, b), _slot_of(spec, c))
            tor = np.nan
            if isinstance(torsion, str):
                chi_of[t, s] = int(torsion[3:]) - 1
            else:
                tor = np.deg2rad(torsion)
            values[t, s] = (bond, np.deg2rad(angle), tor)
        for k, chi in enumerate(spec.chis):
            chi_atoms[t, k] = [_slot_of(spec, x) for x in chi]
            chi_exists[t, k] = True
    return parents, values, chi_of, exists, chi_atoms, chi_exists


(
    ZMATRIX_PARENTS,
    ZMATRIX_IDEAL,
    ZMATRIX_CHI,
    SLOT_EXISTS,
    CHI_ATOMS,
    CHI_EXISTS,
) = _build_tables()
ZMATRIX_PARENTS.setflags(write=False)
ZMATRIX_IDEAL.setflags(write=False)
ZMATRIX_CHI.setflags(write=False)
SLOT_EXISTS.setflags(write=False)
CHI_ATOMS.setflags(write=False)
CHI_EXISTS.setflags(write=False)
"""
Per residue type (index into :data:`RESIDUE_NAMES`) and atom slot:

ZMATRIX_PARENTS : (20, N_SLOTS, 3) int
    Extended-slot indices of the parents (A, B, C).
ZMATRIX_IDEAL : (20, N_SLOTS, 3) float
    Ideal bond (Angstrom), angle and torsion (radians); NaN where the value
    depends on the conformation (backbone, chi angles).
ZMATRIX_CHI : (20, N_SLOTS) int
    Which chi angle (0-3) is the slot's torsion, -1 if none.
SLOT_EXISTS : (20, N_SLOTS) bool
    The residue type has an atom in that slot (OXT: where it ends a chain).
CHI_ATOMS, CHI_EXISTS : (20, 4, 4) int, (20, 4) bool
    Atom slots defining each chi angle.
"""


def residue_atom_names(name: str, c_terminal: bool = False) -> tuple[str, ...]:
    """Heavy-atom names of a standard residue in slot order.

    Parameters
    ----------
    name : str
        Standard three-letter name.
    c_terminal : bool
        Append OXT.
    """
    atoms = RESIDUES[name].atoms
    return atoms + ("OXT",) if c_terminal else atoms


def element_of(name: str, atom: str) -> str:
    """Element symbol of a heavy atom of a standard residue (OXT included)."""
    if atom == "OXT":
        return "O"
    spec = RESIDUES[name]
    return spec.elements[spec.atoms.index(atom)]


def disulfide_pairs(sg_xyz: np.ndarray, cutoff: float = DISULFIDE_CUTOFF) -> list:
    """The disulfides among SG atoms: pairs closer than ``cutoff``, closest first, each SG at most once.

    Parameters
    ----------
    sg_xyz : numpy.ndarray
        (S, 3) SG positions, Angstrom (one per cysteine); or (F, S, 3) of
        F frames, whose median distances decide (pairs closer than
        ``cutoff`` in at least half of the frames).
    cutoff : float, optional
        Largest SG-SG distance of a disulfide, Angstrom.

    Returns
    -------
    list of tuple of int
        ``(i, j)`` indices into ``sg_xyz``, ``i < j``.
    """
    sg_xyz = np.asarray(sg_xyz, dtype=np.float64)
    if sg_xyz.ndim != 3:  # (one frame)
        sg_xyz = sg_xyz.reshape(1, -1, 3)
    i, j = np.triu_indices(sg_xyz.shape[1], 1)
    d = np.median(np.linalg.norm(sg_xyz[:, i] - sg_xyz[:, j], axis=-1), axis=0)
    used, pairs = set(), []
    for k in np.argsort(d, kind="stable"):
        if d[k] >= cutoff:
            break
        if i[k] not in used and j[k] not in used:
            pairs.append((int(i[k]), int(j[k])))
            used.update((i[k], j[k]))
    return pairs
