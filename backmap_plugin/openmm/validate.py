"""Validation of all-atom protein structures: energy, clashes, geometry, chirality.

Per model of a structure file, :func:`validate_structure` reports

* the potential energy with amber14 (``amber14-all.xml``, vacuum or
  ``implicit/gbn2.xml``) after adding missing hydrogens at pH 7, every
  hydrogen at the force field's bond length; NaN (null in JSON) when the
  structure cannot be parametrised, with the reason;
* heavy-atom clashes: pairs closer than 2.0 Angstrom that are more than 3
  bonds apart (:func:`backmap_plugin.core.metrics.clashes`);
* an all-atom clashscore in the style of MolProbity: pairs more than 3 bonds
  apart whose van der Waals spheres overlap by 0.4 Angstrom or more, per
  1,000 atoms, hydrogens included (Probe's radii; see
  :data:`~backmap_plugin.core.checks.VDW_RADII` and
  :func:`~backmap_plugin.core.checks.all_atom_clashes` for what differs
  from MolProbity's Probe);
* bond-length and bond-angle outliers (disulfides' S-S bonds and CB-SG-SG
  angles included): more than 4 sigma from the Engh &
  Huber (1991) ideal values of :mod:`backmap_plugin.core.chemistry`, with one
  sigma per kind (0.02 Angstrom and 2 degrees,
  :data:`~backmap_plugin.core.checks.BOND_SIGMA` and ``ANGLE_SIGMA``);
* cis peptides (omega within 30 degrees of 0) before non-proline residues
  and before prolines (counted apart), twisted peptides (omega 30 to 150
  degrees from 0, :func:`~backmap_plugin.core.checks.peptide_conformations`);
* D-amino acids (negative CA chirality volume,
  :func:`backmap_plugin.core.metrics.chirality`);
* Ramachandran favoured / allowed / outliers against the corpus-derived
  contours of :mod:`backmap_plugin.core.ramachandran` (98 % and 99.95 %,
  classes general, glycine, proline, pre-proline);
* rotamer outliers: chi1/chi2 below the 0.3 % level of the corpus-derived
  densities of :mod:`backmap_plugin.core.rotamer_density`;
* C-beta deviations: C-beta more than 0.25 Angstrom from its ideal position
  (:func:`~backmap_plugin.core.checks.cbeta_deviations`);
* heavy atoms missing against the residue table.

Bond/angle outliers, heavy clashes, cis non-Pro peptides, D residues,
Ramachandran outliers and missing atoms make a structure fail
(:data:`FAILING_COUNTS`, ``backmap validate --strict``); rotamer outliers,
C-beta deviations, twisted peptides and the clashscore are reported only.
:meth:`ValidationResult.summary` gives the figures MolProbity reports, over
all frames; :meth:`ValidationResult.compare` sets two structures side by
side (``backmap validate --reference``).

The maths lives in :mod:`~backmap_plugin.core.checks` (numpy arrays in
Angstrom and degrees); :func:`validate_frames` takes an OpenMM topology and
positions, :func:`validate_structure` a file.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import metrics
from backmap_plugin.core import ramachandran as rama
from backmap_plugin.core import rotamer_density as rotamers
from backmap_plugin.core.checks import (
    ANGLE_SIGMA,
    BOND_SIGMA,
    CARBONYL_C_RADIUS,
    CBETA_DEVIATION,
    CIS_CUTOFF,
    CLASH_OVERLAP,
    N_SIGMA,
    POLAR_H_RADIUS,
    TWIST_CUTOFF,
    VDW_RADII,
    all_atom_clashes,
    angle_values,
    bond_outliers,
    cbeta_deviations,
    deviation_outliers,
    dihedral_values,
    peptide_conformations,
)
from backmap_plugin.core.dihedral_density import ALLOWED, FAVOURED, OUTLIER
from backmap_plugin.core.ramachandran import PEPTIDE_BOND_MAX
from backmap_plugin.openmm.frames import open_structure
from backmap_plugin.openmm.structure import (
    add_hydrogens,
    is_hydrogen,
    positions_to_array,
    residue_label,
)
from backmap_plugin.openmm.systems import create_system, force_field_parts, load_force_field, template_error

__all__ = [
    "CLASH_CUTOFF",
    "FAILING_COUNTS",
    "PEPTIDE_BOND_MAX",
    "SUMMARY_FIGURES",
    "ValidationResult",
    "validate_frames",
    "validate_structure",
]

#: Heavy-atom clash distance (Angstrom).
CLASH_CUTOFF = 2.0


# ---------------------------------------------------------------- topology tables


def _angle_table():
    """Ideal intra-residue angles per residue: name -> list of (a, b, c, degrees)."""
    table = {}
    for name, spec in chem.RESIDUES.items():
        angles = [("N", "CA", "C", chem.ANGLE_N_CA_C), ("CA", "C", "O", chem.ANGLE_CA_C_O),
                  ("CA", "C", "OXT", chem.ANGLE_CA_C_OXT)]
        for atom, a, b, _c, _bond, angle, _torsion in spec.zmatrix:
            angles.append((atom, a, b, angle))
        table[name] = angles
    return table


_ANGLES = _angle_table()


@dataclass
class _Tables:
    """Index tables of one topology for the per-frame checks."""

    heavy: np.ndarray
    heavy_bonds: np.ndarray
    bonds: np.ndarray
    bond_ideal: np.ndarray
    bond_labels: list
    angles: np.ndarray
    angle_ideal: np.ndarray
    angle_labels: list
    peptides: np.ndarray  # (n, 4): CA_i, C_i, N_j, CA_j atom indices
    peptide_next_pro: np.ndarray
    peptide_labels: list
    chirality: tuple
    chirality_labels: list
    missing: list
    n_missing: int
    missing_oxt: list
    chain_breaks: list
    residue_names: list
    bonded_next: np.ndarray  # per residue: peptide-bonded to the next one
    omega_before: np.ndarray  # (n_residues, 4) omega before every residue (-1 rows: none)
    rama_index: np.ndarray  # residues with phi and psi
    phi: np.ndarray  # (n, 4) atom quadruples of those residues
    psi: np.ndarray
    rama_labels: list
    cbeta: tuple  # N, CA, C, CB indices and ideal bond, angle, torsion
    cbeta_labels: list
    chis: np.ndarray  # (n, 2, 4) chi1 and chi2 quadruples (chi1 twice for one-chi residues)
    chi_names: list
    chi_labels: list


#: Atoms without any bond in the topology (residues OpenMM has no template
#: for, e.g. selenomethionine MSE) are bonded to every atom closer than this
#: (Angstrom), so that their bonds do not count as clashes.
GUESSED_BOND_MAX = 2.1


def _bonds(topology, xyz):
    """Bonds of a topology as (n, 2) atom indices, plus guessed bonds of unbonded atoms.

    Parameters
    ----------
    topology : openmm.app.Topology
        Topology.
    xyz : numpy.ndarray, shape (n_atoms, 3)
        Coordinates in Angstrom (one frame), for :data:`GUESSED_BOND_MAX`.
    """
    from scipy.spatial import cKDTree

    bonds = np.array([(b[0].index, b[1].index) for b in topology.bonds()], dtype=np.int64).reshape(-1, 2)
    unbonded = np.setdiff1d(np.arange(topology.getNumAtoms()), bonds.ravel())
    if len(unbonded) == 0:
        return bonds
    near = cKDTree(xyz).query_ball_point(xyz[unbonded], GUESSED_BOND_MAX)
    guessed = [(int(i), int(j)) for i, js in zip(unbonded, near) for j in js if j != i]
    return np.concatenate([bonds, np.array(guessed, dtype=np.int64).reshape(-1, 2)])


def _topology_tables(topology, first_xyz) -> _Tables:
    """Bonds, angles, peptides, chirality atoms and missing atoms of a topology (Angstrom)."""
    heavy = np.array([a.index for a in topology.atoms() if not is_hydrogen(a)], dtype=np.int64)
    position = np.full(topology.getNumAtoms(), -1, dtype=np.int64)
    position[heavy] = np.arange(len(heavy))
    residues = []
    for residue in topology.residues():
        std = chem.standard_residue_name(residue.name)
        if std is None:
            continue
        atoms = {}
        for atom in residue.atoms():
            name = chem.standard_atom_name(std, atom.name)
            if name is not None and not is_hydrogen(atom):
                atoms[name] = atom.index
        residues.append((residue, std, atoms))
    bonds, ideal, blabels = [], [], []
    angles, aideal, alabels = [], [], []
    peptides, next_pro, plabels, breaks = [], [], [], []
    chir = [[], [], [], []]
    clabels, missing, missing_oxt = [], [], []
    cbeta, cbeta_labels, chis, chi_names, chi_labels = [], [], [], [], []
    n_missing = 0
    bonded_next = rama.peptide_bonds([r[2] for r in residues], [r[0].chain for r in residues], first_xyz)
    for k, (residue, std, atoms) in enumerate(residues):
        spec = chem.RESIDUES[std]
        for (a, b), length in zip(spec.bonds, spec.bond_lengths):
            if a in atoms and b in atoms:
                bonds.append((atoms[a], atoms[b]))
                ideal.append(length)
                blabels.append(f"{residue_label(residue)} {a}-{b}")
        if "C" in atoms and "OXT" in atoms:
            bonds.append((atoms["C"], atoms["OXT"]))
            ideal.append(chem.BOND_C_OXT)
            blabels.append(f"{residue_label(residue)} C-OXT")
        for a, b, c, angle in _ANGLES[std]:
            if a in atoms and b in atoms and c in atoms:
                angles.append((atoms[a], atoms[b], atoms[c]))
                aideal.append(angle)
                alabels.append(f"{residue_label(residue)} {a}-{b}-{c}")
        if spec.name != "GLY":
            for slot, name in enumerate(("N", "CA", "C", "CB")):
                chir[slot].append(atoms.get(name, -1))
            clabels.append(residue_label(residue))
            if all(name in atoms for name in ("N", "CA", "C", "CB")):
                _cb, _a, _b, _c, bond, angle, torsion = spec.zmatrix[0]
                cbeta.append((atoms["N"], atoms["CA"], atoms["C"], atoms["CB"], bond, angle, torsion))
                cbeta_labels.append(residue_label(residue))
        quads = rotamers.chi_atoms(std, atoms) if rotamers.chi_axes(std) else None
        if quads is not None:
            chis.append((quads + quads)[:2])
            chi_names.append(std)
            chi_labels.append(residue_label(residue))
        absent = [a for a in spec.atoms if a not in atoms]
        n_missing += len(absent)
        if absent:
            missing.append(f"{residue_label(residue)}: {' '.join(absent)}")
        nxt = residues[k + 1] if k + 1 < len(residues) else None
        same_chain = nxt is not None and nxt[0].chain is residue.chain
        if same_chain and "C" in atoms and "N" in nxt[2]:
            if bonded_next[k]:
                n_atoms = nxt[2]
                bonds.append((atoms["C"], n_atoms["N"]))
                ideal.append(chem.BOND_C_N)
                blabels.append(f"{residue_label(residue)} C-N (peptide)")
                if "CA" in atoms and "CA" in n_atoms:
                    peptides.append((atoms["CA"], atoms["C"], n_atoms["N"], n_atoms["CA"]))
                    next_pro.append(nxt[1] == "PRO")
                    plabels.append(f"{residue_label(residue)}-{residue_label(nxt[0])}")
            else:
                d = float(np.linalg.norm(first_xyz[atoms["C"]] - first_xyz[nxt[2]["N"]]))
                breaks.append(f"{residue_label(residue)}-{residue_label(nxt[0])} ({d:.1f} A)")
        elif not same_chain and "OXT" not in atoms:
            missing_oxt.append(residue_label(residue))
    named = {residue.index: atoms for residue, _, atoms in residues}
    for bond in topology.bonds():  # disulfides: the S-S bond and both CB-SG-SG angles
        a, b = sorted(bond[:2], key=lambda atom: atom.index)
        if a.name == b.name == "SG" and a.residue is not b.residue and a.residue.index in named \
                and b.residue.index in named:
            bonds.append((a.index, b.index))
            ideal.append(chem.BOND_SG_SG)
            blabels.append(f"{residue_label(a.residue)}-{residue_label(b.residue)} SG-SG (disulfide)")
            for sg, other in ((a, b), (b, a)):
                if "CB" in named[sg.residue.index]:
                    angles.append((named[sg.residue.index]["CB"], sg.index, other.index))
                    aideal.append(chem.ANGLE_CB_SG_SG)
                    alabels.append(f"{residue_label(sg.residue)} CB-SG-SG (disulfide)")
    phi, psi, omega = rama.backbone_dihedral_atoms([r[2] for r in residues], bonded_next)
    scored = np.nonzero((phi[:, 0] >= 0) & (psi[:, 0] >= 0))[0]
    cbeta_arr = np.array(cbeta, dtype=np.float64).reshape(-1, 7)
    return _Tables(
        heavy=heavy,
        heavy_bonds=np.array(
            [(position[i], position[j]) for i, j in _bonds(topology, first_xyz)
             if position[i] >= 0 and position[j] >= 0],
            dtype=np.int64).reshape(-1, 2),
        bonds=np.array(bonds, dtype=np.int64).reshape(-1, 2),
        bond_ideal=np.array(ideal),
        bond_labels=blabels,
        angles=np.array(angles, dtype=np.int64).reshape(-1, 3),
        angle_ideal=np.array(aideal),
        angle_labels=alabels,
        peptides=np.array(peptides, dtype=np.int64).reshape(-1, 4),
        peptide_next_pro=np.array(next_pro, dtype=bool),
        peptide_labels=plabels,
        chirality=tuple(np.array(c, dtype=np.int64) for c in chir),
        chirality_labels=clabels,
        missing=missing,
        n_missing=n_missing,
        missing_oxt=missing_oxt,
        chain_breaks=breaks,
        residue_names=[r[1] for r in residues],
        bonded_next=bonded_next,
        omega_before=omega,
        rama_index=scored,
        phi=phi[scored],
        psi=psi[scored],
        rama_labels=[residue_label(residues[i][0]) for i in scored],
        cbeta=tuple(cbeta_arr[:, j].astype(np.int64) for j in range(4)) + tuple(cbeta_arr[:, j] for j in range(4, 7)),
        cbeta_labels=cbeta_labels,
        chis=np.array(chis, dtype=np.int64).reshape(-1, 2, 4),
        chi_names=chi_names,
        chi_labels=chi_labels,
    )


def _peptide_angles(tables):
    """CA-C-N and C-N-CA angles of every peptide with trans and cis ideals."""
    p = tables.peptides
    triples = np.concatenate([p[:, [0, 1, 2]], p[:, [1, 2, 3]]])
    trans = np.concatenate([np.full(len(p), chem.ANGLE_CA_C_N), np.full(len(p), chem.ANGLE_C_N_CA)])
    cis = np.concatenate([np.full(len(p), chem.ANGLE_CA_C_N_CIS), np.full(len(p), chem.ANGLE_C_N_CA_CIS)])
    labels = [f"{x} CA-C-N" for x in tables.peptide_labels] + [f"{x} C-N-CA" for x in tables.peptide_labels]
    return triples, trans, cis, labels


def _rama_grades(xyz, tables):
    """Ramachandran grade (favoured / allowed / outlier) of every scored residue, per frame."""
    n_frames, n = len(xyz), len(tables.phi)
    if n == 0:
        return np.zeros((n_frames, 0), dtype=np.int8)
    phi = dihedral_values(xyz, tables.phi)
    psi = dihedral_values(xyz, tables.psi)
    has_omega = tables.omega_before[:, 0] >= 0
    omega = np.full((n_frames, len(has_omega)), np.nan)
    omega[:, has_omega] = dihedral_values(xyz, tables.omega_before[has_omega])
    # the class can change between frames only for prolines (cis / trans)
    grades = np.empty((n_frames, n), dtype=np.int8)
    for f in range(n_frames):
        classes = rama.residue_classes(tables.residue_names, tables.bonded_next, omega[f])
        grades[f] = rama.classify(phi[f], psi[f], [classes[i] for i in tables.rama_index])
    return grades


def _hbond_kinds(topology):
    """Per-atom hydrogen-bond role for :func:`all_atom_clashes`."""
    kinds = np.zeros(topology.getNumAtoms(), dtype=np.int64)
    carries_h = set()
    for a, b in topology.bonds():
        for h, heavy in ((a, b), (b, a)):
            if is_hydrogen(h) and heavy.element is not None and heavy.element.symbol in ("N", "O", "S"):
                kinds[h.index] = 1
                carries_h.add(heavy.index)
    for atom in topology.atoms():
        if atom.element is not None and atom.element.symbol in ("N", "O"):
            kinds[atom.index] = 3 if atom.index in carries_h else 2
    return kinds


def _radii(topology, hbond_kinds, bonds):
    """Van der Waals radius per atom (:data:`VDW_RADII`, polar H :data:`POLAR_H_RADIUS`, carbonyl C)."""
    radii = []
    for atom in topology.atoms():
        symbol = atom.element.symbol.upper() if atom.element is not None else "C"
        radii.append(VDW_RADII.get(symbol, 1.70))
    radii = np.array(radii)
    radii[np.asarray(hbond_kinds) == 1] = POLAR_H_RADIUS
    oxygen = np.array([a.element is not None and a.element.symbol == "O" for a in topology.atoms()])
    carbon = np.array([a.element is not None and a.element.symbol == "C" for a in topology.atoms()])
    terminal_o = oxygen & (np.bincount(bonds.ravel(), minlength=len(radii)) == 1)
    for a, b in ((bonds[:, 0], bonds[:, 1]), (bonds[:, 1], bonds[:, 0])):
        radii[a[carbon[a] & terminal_o[b]]] = CARBONYL_C_RADIUS
    return radii


# ---------------------------------------------------------------- energy


def _selenium_as_sulfur(topology, positions):
    """The topology with selenomethionines (MSE, Se) as methionines (MET, SD); itself without MSE.

    amber14 has no selenium; the energy of a selenomethionine structure is
    that of its methionine form, which is also how refinement builds it.
    The renamed structure (at ``positions``, any frame) is read back through
    OpenMM's PDB reader, which bonds MET (and its peptide bonds) from its
    templates; atoms keep their order, so every frame's positions fit it.
    """
    import copy
    import io

    from openmm.app import PDBFile, element

    if not any(r.name == "MSE" for r in topology.residues()):
        return topology
    renamed = copy.deepcopy(topology)
    for residue in renamed.residues():
        if residue.name == "MSE":
            residue.name = "MET"
            for atom in residue.atoms():
                if atom.name == "SE":
                    atom.name, atom.element = "SD", element.sulfur
    text = io.StringIO()
    PDBFile.writeFile(renamed, positions, text, keepIds=True)
    return PDBFile(io.StringIO(text.getvalue())).topology


def _with_hydrogens(topology, positions):
    """Add missing hydrogens at pH 7 (Modeller); (topology, positions, error or None)."""
    from openmm.app import Modeller

    modeller = Modeller(topology, positions)
    try:
        add_hydrogens(modeller, 7.0)
    except Exception as exc:  # residues without hydrogen definitions
        return topology, positions, f"cannot add hydrogens: {str(exc).splitlines()[0]}"
    return modeller.topology, modeller.positions, None


class _Energy:
    """amber14 potential energy, each hydrogen first moved along its bond to the force field's bond length; the
    context is reused while the atoms stay the same.

    Hydrogens placed without a force field (:func:`_with_hydrogens`) strain their bonds: the 1VFB crystal structure
    (heavy atoms) scored +46,654 kJ/mol, of which bonds 48,535; at the force field's bond lengths +427 (its
    hydrogens minimised alone, -26,588, but that takes minutes for 200 residues). A backmapped structure's
    figure (1VFB from its C-alpha trace: +44,074) keeps what its contacts cost.
    """

    def __init__(self, solvent, platform):
        self.solvent, self.platform = solvent, platform
        self.forcefield = None
        self._key, self._context, self._error = None, None, None
        self._hydrogen_bonds = None  # (hydrogen index, heavy-atom index, bond length in nm) arrays

    def __call__(self, topology, positions):
        """Energy in kJ/mol (NaN when it cannot be computed) and the error message or None."""
        import openmm
        from openmm import unit

        from backmap_plugin.openmm.platforms import create_context

        key = tuple((a.residue.name, a.name) for a in topology.atoms())
        if key != self._key:
            self._key, self._context, self._error = key, None, None
            try:
                if self.forcefield is None:
                    self.forcefield = load_force_field(self.solvent)
                system = create_system(self.forcefield, topology, self.solvent)
                self._hydrogen_bonds = _hydrogen_bond_lengths(system, topology)
                self._context = create_context(system, openmm.VerletIntegrator(0.001), self.platform)
            except Exception as exc:  # "No template found for residue 4 ...": named by chain, name and number
                self._error = template_error(exc, topology).splitlines()[0]
        if self._context is None:
            return math.nan, self._error
        xyz = positions_to_array(positions)
        hydrogen, heavy, length = self._hydrogen_bonds
        bond = xyz[hydrogen] - xyz[heavy]
        xyz[hydrogen] = xyz[heavy] + bond * (length / np.linalg.norm(bond, axis=-1))[:, None]
        self._context.setPositions(xyz * unit.nanometer)
        energy = self._context.getState(energy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        return energy, None if math.isfinite(energy) else "energy is not finite"


def _hydrogen_bond_lengths(system, topology) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hydrogen, heavy atom, length in nm) of every bond between a hydrogen and a heavy atom in ``system``."""
    import openmm
    from openmm import unit

    is_h = np.array([a.element is not None and a.element.symbol == "H" for a in topology.atoms()])
    rows = []
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, length, _ = force.getBondParameters(k)
                if is_h[i] != is_h[j]:
                    hydrogen, heavy = (i, j) if is_h[i] else (j, i)
                    rows.append((hydrogen, heavy, length.value_in_unit(unit.nanometer)))
    table = np.array(rows, dtype=float).reshape(-1, 3)
    return table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2]


# ---------------------------------------------------------------- driver


_NOT_COMPUTED = "not computed"

#: Per-frame counts that make a structure fail (``--strict``); a non-finite
#: energy fails too (unless the energy was not asked for).
FAILING_COUNTS = (
    "heavy_clashes",
    "bond_outliers",
    "angle_outliers",
    "cis_non_pro",
    "d_residues",
    "ramachandran_outliers",
    "missing_atoms",
)

#: The figures of :meth:`ValidationResult.summary` (the ones MolProbity
#: reports, then the rest): (label, key in the frame dicts, format).
#: Counts (format None) are written without decimals when whole (one
#: frame), else with one (a mean over frames).
SUMMARY_FIGURES = (
    ("clashscore (all atoms, per 1,000)", "clashscore", "{:.2f}"),
    ("Ramachandran favoured %", "ramachandran_favoured_pct", "{:.2f}"),
    ("Ramachandran outliers %", "ramachandran_outliers_pct", "{:.2f}"),
    ("Ramachandran outliers", "ramachandran_outliers", None),
    ("Ramachandran residues scored", "ramachandran_scored", None),
    ("rotamer outliers %", "rotamer_outliers_pct", "{:.2f}"),
    ("rotamer outliers", "rotamer_outliers", None),
    ("C-beta deviations > 0.25 A", "cbeta_deviations", None),
    ("cis peptides, non-Pro", "cis_non_pro", None),
    ("cis peptides, Pro", "cis_pro", None),
    ("twisted peptides", "twisted_peptides", None),
    ("D residues (CA chirality)", "d_residues", None),
    ("bond outliers > 4 sd", "bond_outliers", None),
    ("angle outliers > 4 sd", "angle_outliers", None),
    ("heavy-atom clashes < 2 A", "heavy_clashes", None),
    ("missing heavy atoms", "missing_atoms", None),
    ("energy kJ/mol", "energy_kj_mol", "{:.1f}"),
)


def _figure(value, fmt):
    """A summary figure as text (:data:`SUMMARY_FIGURES`), None as '-'."""
    if value is None:
        return "-"
    if fmt is None:
        return f"{int(value)}" if float(value).is_integer() else f"{value:.1f}"
    return fmt.format(value)


def _text_table(rows, left=1):
    """Rows of cells as aligned text (the first ``left`` columns left-aligned)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in rows]


@dataclass
class ValidationResult:
    """What :func:`validate_structure` found.

    Attributes
    ----------
    input : str
        Input description (file name).
    frames : list of dict
        Per-frame figures; see :func:`validate_frames`.
    settings : dict
        Thresholds and models used.
    seconds : float
        Wall time.
    input_sha256 : str or None
        SHA-256 of the file validated (:func:`validate_structure`), so a
        report can tell it from a later file of the same name.
    notes : list of str
        What the user should know of the file read (models or frames cut
        short, alternate locations chosen ...).
    """

    input: str
    frames: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    input_sha256: str | None = None
    notes: list = field(default_factory=list)

    @property
    def failures(self) -> list:
        """One line per failing check and frame (empty when all pass)."""
        out = []
        for f in self.frames:
            for key in FAILING_COUNTS:
                if f[key]:
                    out.append(f"frame {f['frame']}: {key.replace('_', ' ')}: {f[key]}")
            if f["energy_kj_mol"] is None and f.get("energy_error") != _NOT_COMPUTED:
                out.append(f"frame {f['frame']}: energy not finite ({f.get('energy_error') or 'NaN'})")
            elif f.get("hydrogen_error"):  # (no energy asked for: the clashscore is what lacks them)
                out.append(f"frame {f['frame']}: hydrogens not added ({f['hydrogen_error']}): clashscore of heavy "
                           "atoms only")
        return out

    @property
    def passed(self) -> bool:
        """No failure in any frame."""
        return not self.failures

    def to_dict(self) -> dict:
        """JSON-ready dictionary (NaN written as null).

        Returns
        -------
        dict
            ``input``, ``input_sha256`` (of a file validated, else None),
            ``settings``, ``n_frames``, ``passed``, ``failures``, ``frames``,
            ``seconds`` and ``notes``.
        """
        return {"input": self.input, "input_sha256": self.input_sha256, "settings": self.settings,
                "n_frames": len(self.frames), "passed": self.passed, "failures": self.failures,
                "summary": self.summary(), "frames": self.frames, "seconds": self.seconds, "notes": self.notes}

    def summary(self) -> dict:
        """The :data:`SUMMARY_FIGURES` over all frames: the mean of each (None where no frame has it).

        Returns
        -------
        dict
            Key (as in the frame dicts) -> float or None, plus ``n_frames``.
        """
        out = {"n_frames": len(self.frames)}
        for _, key, _ in SUMMARY_FIGURES:
            values = [f[key] for f in self.frames if f.get(key) is not None]
            out[key] = float(np.mean(values)) if values else None
        return out

    def compare(self, reference: ValidationResult | None = None) -> str:
        """The summary figures as a text table, beside those of a reference structure.

        Parameters
        ----------
        reference : ValidationResult, optional
            Validation of the reference (e.g. the experimental structure).

        Returns
        -------
        str
            One row per figure; columns: this structure (mean over its
            frames) and, when given, the reference.
        """
        results = [self] + ([reference] if reference is not None else [])
        head = ["figure"] + [f"{os.path.basename(r.input)} ({len(r.frames)} frame(s))"
                             if len(r.frames) > 1 else os.path.basename(r.input) for r in results]
        rows = [head]
        summaries = [r.summary() for r in results]
        for label, key, fmt in SUMMARY_FIGURES:
            rows.append([label] + [_figure(s[key], fmt) for s in summaries])
        return "\n".join(_text_table(rows))

    def table(self, maxRows: int = 50, reference: ValidationResult | None = None) -> str:
        """A plain-text table, one row per frame, the summary figures, then the verdict.

        Parameters
        ----------
        maxRows : int, optional
            Largest number of frame rows shown.
        reference : ValidationResult, optional
            Shown beside the summary figures (:meth:`compare`).

        Returns
        -------
        str
        """
        columns = [("frame", "frame", "{}"), ("energy kJ/mol", "energy_kj_mol", "{:.1f}"),
                   ("clash", "heavy_clashes", "{}"), ("clashscore", "clashscore", "{:.1f}"),
                   ("bond>4sd", "bond_outliers", "{}"), ("angle>4sd", "angle_outliers", "{}"),
                   ("cis-nonPro", "cis_non_pro", "{}"), ("twisted", "twisted_peptides", "{}"),
                   ("D", "d_residues", "{}"), ("rama-fav%", "ramachandran_favoured_pct", "{:.1f}"),
                   ("rama-out", "ramachandran_outliers", "{}"), ("rota-out%", "rotamer_outliers_pct", "{:.1f}"),
                   ("CB>0.25", "cbeta_deviations", "{}"), ("missing", "missing_atoms", "{}")]
        rows = [[title for title, _, _ in columns]]
        for f in self.frames[:maxRows]:
            rows.append(["-" if f.get(key) is None else fmt.format(f[key]) for _, key, fmt in columns])  # not measured
        lines = _text_table(rows, left=0)
        if len(self.frames) > maxRows:
            lines.append(f"... {len(self.frames) - maxRows} more frame(s), see --json")
        lines.append("")
        lines.append(("summary (mean over frames)" if len(self.frames) > 1 else "summary")
                     + (" beside the reference" if reference is not None else "") + ":")
        lines.append(self.compare(reference))
        if self.settings.get("force_field") and any(f.get("energy_kj_mol") is not None for f in self.frames):
            lines.append(f"(energy: {self.settings['force_field']})")
        lines.append("")
        failures = self.failures
        verdict = "PASS" if not failures else f"FAIL ({len(failures)} failing check(s))"
        lines.append(f"{self.input}: {len(self.frames)} frame(s): {verdict}")
        lines.extend(f"  {line}" for line in failures[:20])
        if len(failures) > 20:
            lines.append(f"  ... {len(failures) - 20} more")
        return "\n".join(lines)


def _names(labels, mask):
    return [label for label, bad in zip(labels, mask) if bad]


def _percent(count, total):
    return 100.0 * count / total if total else None


def _table_note(what, info, levels):
    return (f"{what} table of backmap_plugin/core/tables ({info['n_files']} crystal structures of the corpus "
            f"train split, {info['date']}): {levels}")


def _validate_chunk(frames: list, first: int, tables, energy_topology, evaluate, energy: bool) -> list[dict]:
    """The figures of :func:`validate_frames` for frames ``first``, ``first + 1`` ... (positions in ``frames``)."""
    xyz_nm = np.stack([positions_to_array(p) for p in frames])
    xyz = xyz_nm * 10.0
    heavy_clashes = metrics.clashes(xyz[:, tables.heavy], tables.heavy_bonds, cutoff=CLASH_CUTOFF)
    bond_bad = bond_outliers(xyz, tables.bonds, tables.bond_ideal)
    omega = dihedral_values(xyz, tables.peptides)
    cis, twisted = peptide_conformations(omega)
    triples, trans_ideal, cis_ideal, pep_labels = _peptide_angles(tables)
    all_triples = np.concatenate([tables.angles, triples])
    cis_twice = np.concatenate([cis, cis], axis=1)
    ideal = np.concatenate(
        [np.broadcast_to(tables.angle_ideal, (len(xyz), len(tables.angle_ideal))),
         np.where(cis_twice, cis_ideal, trans_ideal)], axis=1)
    angle_bad = deviation_outliers(angle_values(xyz, all_triples), ideal, ANGLE_SIGMA)
    angle_labels = tables.angle_labels + pep_labels
    chir = metrics.chirality(xyz, *tables.chirality)
    rama_grade = _rama_grades(xyz, tables)
    cb_dev = cbeta_deviations(xyz, *tables.cbeta)
    cb_bad = cb_dev > CBETA_DEVIATION
    if len(tables.chi_names):
        chi = dihedral_values(xyz, tables.chis.reshape(-1, 4)).reshape(len(xyz), -1, 2)
        rot_bad = rotamers.classify_rotamers(tables.chi_names, chi) == OUTLIER
    else:
        rot_bad = np.zeros((len(xyz), 0), dtype=bool)
    results = []
    for f, positions in enumerate(frames):
        top_h, pos_h, hydrogen_error = _with_hydrogens(energy_topology, positions)
        if not energy:
            e, error = math.nan, _NOT_COMPUTED
        elif hydrogen_error is not None:
            e, error = math.nan, hydrogen_error
        else:
            e, error = evaluate(top_h, pos_h)
        xyz_h = positions_to_array(pos_h) * 10.0
        bonds_h = _bonds(top_h, xyz_h)
        kinds = _hbond_kinds(top_h)
        n_clash = int(all_atom_clashes(xyz_h, _radii(top_h, kinds, bonds_h), bonds_h, kinds)[0])
        cis_f, next_pro = cis[f], tables.peptide_next_pro
        d_mask = chir[f] < 0
        n_rama = rama_grade.shape[1]
        n_favoured = int(np.sum(rama_grade[f] == FAVOURED))
        n_allowed = int(np.sum(rama_grade[f] == ALLOWED))
        rama_bad = rama_grade[f] == OUTLIER
        results.append({
            "frame": first + f,
            "energy_kj_mol": float(e) if math.isfinite(e) else None,
            "energy_error": error,
            "hydrogen_error": hydrogen_error,
            "heavy_clashes": int(heavy_clashes[f]),
            "clashscore": 1000.0 * n_clash / max(1, len(xyz_h)),
            "all_atom_clashes": n_clash,
            "bond_outliers": int(bond_bad[f].sum()),
            "angle_outliers": int(angle_bad[f].sum()),
            "cis_non_pro": int(np.sum(cis_f & ~next_pro)),
            "cis_pro": int(np.sum(cis_f & next_pro)),
            "twisted_peptides": int(np.sum(twisted[f])),
            "peptides_scored": int(cis.shape[1]),
            "d_residues": int(np.sum(d_mask)),
            "ramachandran_favoured": n_favoured,
            "ramachandran_allowed": n_allowed,
            "ramachandran_outliers": int(rama_bad.sum()),
            "ramachandran_scored": int(n_rama),
            "ramachandran_favoured_pct": _percent(n_favoured, n_rama),
            "ramachandran_outliers_pct": _percent(int(rama_bad.sum()), n_rama),
            "rotamer_outliers": int(rot_bad[f].sum()),
            "rotamer_scored": int(rot_bad.shape[1]),
            "rotamer_outliers_pct": _percent(int(rot_bad[f].sum()), rot_bad.shape[1]),
            "cbeta_deviations": int(cb_bad[f].sum()),
            "cbeta_scored": int(cb_bad.shape[1]),
            "missing_atoms": tables.n_missing,
            "n_atoms": int(len(xyz[f])),
            "n_atoms_with_h": int(len(xyz_h)),
            "details": {
                "bond_outliers": _names(tables.bond_labels, bond_bad[f]),
                "angle_outliers": _names(angle_labels, angle_bad[f]),
                "cis_non_pro": _names(tables.peptide_labels, cis_f & ~next_pro),
                "cis_pro": _names(tables.peptide_labels, cis_f & next_pro),
                "twisted_peptides": [f"{label} ({w:.0f} deg)" for label, w, bad in
                                     zip(tables.peptide_labels, omega[f], twisted[f]) if bad],
                "d_residues": _names(tables.chirality_labels, d_mask),
                "ramachandran_outliers": _names(tables.rama_labels, rama_bad),
                "rotamer_outliers": _names(tables.chi_labels, rot_bad[f]),
                "cbeta_deviations": [f"{label} ({d:.2f} A)" for label, d, bad in
                                     zip(tables.cbeta_labels, cb_dev[f], cb_bad[f]) if bad],
                "missing_atoms": list(tables.missing),
                "missing_oxt": list(tables.missing_oxt),
                "chain_breaks": list(tables.chain_breaks),
            },
        })
    return results


#: Frames validated at a time (their arrays together): memory does not grow with a trajectory.
VALIDATE_CHUNK = 100


def validate_frames(topology, frames, solvent="gbn2", platform="auto", energy=True, source="structure"):
    """Validate models given as an OpenMM topology and positions.

    Parameters
    ----------
    topology : openmm.app.Topology
        Topology (hydrogens optional).
    frames : iterable of openmm.unit.Quantity
        Positions of each model, taken :data:`VALIDATE_CHUNK` at a time.
    solvent : {"gbn2", "obc2", "screened", "vacuum"}, optional
        Solvent model of the amber14 energy (default gbn2).
    platform : str, optional
        OpenMM platform for the energy (``auto``: CUDA when present, else CPU).
    energy : bool, optional
        Compute the energy (NaN otherwise).
    source : str, optional
        Name used in the result.

    Returns
    -------
    ValidationResult
        ``frames`` holds one dict per model with ``energy_kj_mol`` (None if
        not finite) and ``energy_error``, ``hydrogen_error`` (why hydrogens
        could not be added, else None), ``heavy_clashes``, ``clashscore``
        (clashes per 1,000 atoms, hydrogens included) and
        ``all_atom_clashes``, ``bond_outliers``, ``angle_outliers``,
        ``cis_non_pro`` and ``cis_pro``, ``twisted_peptides`` (of
        ``peptides_scored``), ``d_residues``, ``ramachandran_favoured`` /
        ``_allowed`` / ``_outliers`` (of ``ramachandran_scored``) and
        ``ramachandran_favoured_pct`` / ``_outliers_pct``,
        ``rotamer_outliers`` (of ``rotamer_scored``) and
        ``rotamer_outliers_pct``, ``cbeta_deviations`` (of ``cbeta_scored``),
        ``missing_atoms``, ``n_atoms`` / ``n_atoms_with_h``, and ``details``
        (labels of the offending bonds, angles, peptides and residues).
        Percentages are None when nothing was scored.
    """
    t0 = time.perf_counter()
    evaluate = _Energy(solvent, platform)
    tables = energy_topology = None
    results = []
    frames = iter(frames)
    while chunk := list(itertools.islice(frames, VALIDATE_CHUNK)):
        if tables is None:
            tables = _topology_tables(topology, positions_to_array(chunk[0]) * 10.0)
            # hydrogens and energy: selenomethionines as methionines, converted once for all frames
            energy_topology = _selenium_as_sulfur(topology, chunk[0])
        results += _validate_chunk(chunk, len(results), tables, energy_topology, evaluate, energy)
    settings = {
        "force_field": " + ".join(force_field_parts(solvent)),
        "heavy_clash_cutoff_angstrom": CLASH_CUTOFF,
        "clash_overlap_angstrom": CLASH_OVERLAP,
        "vdw_radii": "Probe (Word et al. 1999): " + ", ".join(f"{k} {v}" for k, v in VDW_RADII.items())
        + f"; polar H {POLAR_H_RADIUS}; carbonyl C {CARBONYL_C_RADIUS}",
        "bond_sigma_angstrom": BOND_SIGMA,
        "angle_sigma_degrees": ANGLE_SIGMA,
        "n_sigma": N_SIGMA,
        "cis_cutoff_degrees": CIS_CUTOFF,
        "twist_cutoff_degrees": TWIST_CUTOFF,
        "cbeta_deviation_angstrom": CBETA_DEVIATION,
        "ramachandran": _table_note("Ramachandran", rama.load_table()[1],
                                    "favoured 98 %, allowed 99.95 % of the reference residues"),
        "rotamers": _table_note("rotamer", rotamers.load_table()[1],
                                "chi1/chi2 densities; outlier below the level 99.7 % of the reference reach"),
    }
    return ValidationResult(input=source, frames=results, settings=settings, seconds=time.perf_counter() - t0)


def validate_structure(input, solvent="gbn2", platform="auto", energy=True, top=None):
    """Validate every frame of a structure or trajectory file (:func:`~backmap_plugin.openmm.frames.open_structure`).

    Parameters
    ----------
    input : str or os.PathLike
        PDB or mmCIF file (optionally gzipped) or ``.h5``; or a trajectory
        (``.xtc``, ``.dcd``, ``.trr``, ``.nc``) with ``top``.
    solvent : {"gbn2", "obc2", "screened", "vacuum"}, optional
        Solvent model of the amber14 energy (default gbn2).
    platform : str, optional
        OpenMM platform for the energy (``auto``: CUDA when present, else CPU).
    energy : bool, optional
        Compute the amber14 energy (the slowest check).
    top : str or os.PathLike, optional
        Topology of a trajectory ``input`` (PDB / mmCIF / ``.h5``, the same
        atoms in the same order).

    Returns
    -------
    ValidationResult
        See :func:`validate_frames`; ``passed`` / ``failures`` give the
        verdict used by ``backmap validate --strict``.

    Raises
    ------
    BackmapInputError
        Missing or unreadable file.
    """
    from backmap_plugin.io.paths import file_digest

    input = os.fspath(input)
    structure = open_structure(input, top)
    result = validate_frames(structure.topology, (positions for positions, _, _ in structure), solvent=solvent,
                             platform=platform, energy=energy, source=input)
    result.input_sha256 = file_digest(input)
    result.notes = structure.read_notes("validated")
    return result
