"""C-alpha structure-based (Go-type) model from a native structure, as an OpenMM System.

The model of Clementi, Nymeyer & Onuchic, J. Mol. Biol. 298, 937 (2000),
with every term at its native value and one energy scale ``epsilon``:

* bonds ``Kr (r - r0)^2`` with ``Kr = 100 epsilon / Angstrom^2``;
* angles ``Ktheta (theta - theta0)^2`` with ``Ktheta = 20 epsilon / rad^2``;
* dihedrals ``K1 (1 - cos(phi - phi0)) + K3 (1 - cos(3 (phi - phi0)))`` with
  ``K1 = epsilon`` and ``K3 = epsilon / 2``;
* native contacts ``epsilon (5 (s/r)^12 - 6 (s/r)^10)`` with ``s`` the
  native C-alpha distance (minimum ``-epsilon`` at ``r = s``); a residue
  pair is in contact when any of their heavy atoms are within 4.5 Angstrom
  in the native structure and they are at least 4 apart in the chain (any
  pair of residues of different chains);
* repulsion ``epsilon (C/r)^12`` with ``C`` = 4 Angstrom between all other
  pairs more than 3 apart in the chain (and all pairs of different chains).

Force groups: :data:`GO_FORCE_GROUPS`. Residues bonded in the model are
consecutive residues of a chain with C-alpha atoms at most
:data:`BREAK_DISTANCE` apart; angles and dihedrals run over bonded stretches
only.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from scipy.spatial import cKDTree

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.geometry import bond_angle, dihedral
from backmap_plugin.core.topology import insertion_code
from backmap_plugin.force_fields.hps import load_hps_parameters
from backmap_plugin.io.paths import LOADED_WHOLE, match_extension

__all__ = [
    "BREAK_DISTANCE",
    "CONTACT_CUTOFF",
    "GO_FORCE_GROUPS",
    "REPULSION_DISTANCE",
    "create_go_system",
    "native_contacts",
]

#: Heavy-atom distance (nm) that puts two residues in native contact.
CONTACT_CUTOFF = 0.45
#: Smallest sequence separation of an intra-chain native contact.
MIN_SEPARATION = 4
#: Repulsion distance ``C`` (nm) of the non-native pairs.
REPULSION_DISTANCE = 0.4
#: Cutoff of the repulsion (nm); ``(C/r)^12`` is below 2e-5 there.
REPULSION_CUTOFF = 1.0
#: C-alpha distance (nm) above which consecutive residues are not bonded.
BREAK_DISTANCE = 0.45
#: Force group of each term of :func:`create_go_system`.
GO_FORCE_GROUPS = {"bonds": 0, "angles": 1, "dihedrals": 2, "contacts": 3, "repulsion": 4}


def native_contacts(heavy_xyz, heavy_residue, chain, cutoff=CONTACT_CUTOFF, min_separation=MIN_SEPARATION):
    """Residue pairs in native contact.

    Parameters
    ----------
    heavy_xyz : array_like, shape (n_atoms, 3)
        Heavy-atom coordinates (nm).
    heavy_residue : array_like of int, shape (n_atoms,)
        Residue index of each atom.
    chain : array_like of int, shape (n_res,)
        Chain index of each residue (residues of a chain consecutive).
    cutoff : float, optional
        Heavy-atom distance (nm).
    min_separation : int, optional
        Smallest ``|i - j|`` of an intra-chain contact.

    Returns
    -------
    numpy.ndarray of int64, shape (n_contacts, 2)
        Residue pairs ``i < j``, sorted.
    """
    res = np.asarray(heavy_residue, dtype=np.int64)
    chain = np.asarray(chain)
    pairs = cKDTree(np.asarray(heavy_xyz, dtype=np.float64)).query_pairs(cutoff, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    rp = np.sort(res[pairs], axis=1)
    keep = (chain[rp[:, 0]] != chain[rp[:, 1]]) | (rp[:, 1] - rp[:, 0] >= min_separation)
    return np.unique(rp[keep], axis=0)


def _angle(a, b, c) -> float:
    return float(bond_angle(*(torch.as_tensor(x, dtype=torch.float64) for x in (a, b, c))))


def _dihedral(a, b, c, d) -> float:
    return float(dihedral(*(torch.as_tensor(x, dtype=torch.float64) for x in (a, b, c, d))))


def _read_native(pdbfile):
    """Protein residues of the first model: names, chain ids/indices, numbers and insertion codes ('' for none), CA
    and heavy atoms (nm); a PDB, mmCIF or GRO file read as ``backmap run`` reads it
    (:func:`~backmap_plugin.io.loaders.load_whole`: mmCIF chains by author id, insertion codes, each residue's
    conformer of highest occupancy)."""
    from backmap_plugin.io.chains import input_chain_id
    from backmap_plugin.io.loaders import load_whole
    from backmap_plugin.io.mdtraj_files import load_frame

    path = os.fspath(pdbfile)
    if not os.path.exists(path):
        raise BackmapInputError(f"{path}: no such file")
    ext = match_extension(path, LOADED_WHOLE)
    try:
        # (every model, the first used below: a slice, traj[0], copies the topology without its insertion codes)
        traj = load_whole(path, ext) if ext is not None else load_frame(path, 0)
    except BackmapInputError:
        raise
    except Exception as exc:  # mdtraj raises many kinds
        raise BackmapInputError(f"{path}: cannot read structure: {exc}") from exc
    names, chain_ids, chain_index, numbers, codes, ca, heavy, heavy_res = [], [], [], [], [], [], [], []
    chains = {}
    for residue in traj.topology.residues:
        std = chem.standard_residue_name(residue.name)
        atoms = {a.name: a.index for a in residue.atoms}
        if std is None or "CA" not in atoms:
            continue
        k = len(names)
        names.append(std)
        chain_id = (getattr(residue.chain, "chain_id", None) or "").strip()
        chain_ids.append(chain_id or input_chain_id(residue.chain.index))
        chain_index.append(chains.setdefault(residue.chain.index, len(chains)))
        numbers.append(residue.resSeq)
        codes.append(insertion_code(residue) or "")
        ca.append(traj.xyz[0, atoms["CA"]])
        for atom in residue.atoms:
            if atom.element is not None and atom.element.symbol not in ("H", "D"):
                heavy.append(traj.xyz[0, atom.index])
                heavy_res.append(k)
    if len(names) < 2:
        raise BackmapInputError(f"{path}: needs at least two amino-acid residues with CA atoms")
    if len(heavy) == len(names):
        raise BackmapInputError(f"{path}: only C-alpha atoms; the native contact map needs all heavy atoms")
    return (names, chain_ids, np.array(chain_index), numbers, codes, np.array(ca, dtype=np.float64),
            np.array(heavy, dtype=np.float64), np.array(heavy_res))


def create_go_system(pdbfile, epsilon=1.0, contactCutoff=CONTACT_CUTOFF):
    """C-alpha Go model of a native structure.

    Parameters
    ----------
    pdbfile : str or os.PathLike
        Native structure with heavy atoms (PDB, mmCIF or any format mdtraj
        reads; the first model is used).
    epsilon : float or openmm.unit.Quantity, optional
        Energy scale of every term, kJ/mol when a plain number (default 1).
    contactCutoff : float or openmm.unit.Quantity, optional
        Heavy-atom distance of a native contact, nm (default 0.45).

    Returns
    -------
    topology : openmm.app.Topology
        One residue per amino acid (three-letter names, native chain ids (blank
        ones become A, B, ... by chain: :func:`~backmap_plugin.io.chains.input_chain_id`),
        residue numbers and insertion codes), one atom ``CA`` (element
        carbon) each; bonds between bonded beads.
    system : openmm.System
        Non-periodic; masses from the residue masses of
        ``hps_parameters.csv``; forces in the groups of
        :data:`GO_FORCE_GROUPS`.
    positions : openmm.unit.Quantity
        Native C-alpha positions.

    Raises
    ------
    BackmapInputError
        Unreadable file, fewer than two residues or no side-chain atoms.
    """
    import openmm
    from openmm import unit
    from openmm.app import Topology, element

    if unit.is_quantity(epsilon):
        epsilon = epsilon.value_in_unit(unit.kilojoule_per_mole)
    if unit.is_quantity(contactCutoff):
        contactCutoff = contactCutoff.value_in_unit(unit.nanometer)
    eps = float(epsilon)
    names, chain_ids, chain, numbers, codes, ca, heavy, heavy_res = _read_native(pdbfile)
    n = len(names)
    masses = {p.three: p.mass for p in load_hps_parameters().values()}

    bonded = np.zeros(n - 1, dtype=bool)
    for i in range(n - 1):
        bonded[i] = chain[i] == chain[i + 1] and np.linalg.norm(ca[i + 1] - ca[i]) <= BREAK_DISTANCE

    system = openmm.System()
    topology = Topology()
    atoms = []
    top_chain = None
    for i, name in enumerate(names):
        system.addParticle(masses[name])
        if i == 0 or chain[i] != chain[i - 1]:
            top_chain = topology.addChain(chain_ids[i])
        residue = topology.addResidue(name, top_chain, str(numbers[i]), codes[i])
        atoms.append(topology.addAtom("CA", element.carbon, residue))

    bonds = openmm.HarmonicBondForce()
    bonds.setName("GoBonds")
    bond_pairs = [(i, i + 1) for i in range(n - 1) if bonded[i]]
    for i, j in bond_pairs:
        bonds.addBond(i, j, float(np.linalg.norm(ca[j] - ca[i])), 2 * 100.0 * 100.0 * eps)  # 100 eps/A^2
        topology.addBond(atoms[i], atoms[j])

    angles = openmm.HarmonicAngleForce()
    angles.setName("GoAngles")
    torsions = openmm.PeriodicTorsionForce()
    torsions.setName("GoDihedrals")
    for i in range(n - 2):
        if bonded[i] and bonded[i + 1]:
            angles.addAngle(i, i + 1, i + 2, _angle(*ca[i:i + 3]), 2 * 20.0 * eps)
    for i in range(n - 3):
        if bonded[i] and bonded[i + 1] and bonded[i + 2]:
            phi0 = _dihedral(*ca[i:i + 4])
            torsions.addTorsion(i, i + 1, i + 2, i + 3, 1, phi0 + np.pi, eps)
            torsions.addTorsion(i, i + 1, i + 2, i + 3, 3, 3 * phi0 + np.pi, 0.5 * eps)

    contacts = native_contacts(heavy, heavy_res, chain, cutoff=contactCutoff)
    native = openmm.CustomBondForce("eps*(5*(s/r)^12 - 6*(s/r)^10)")
    native.setName("GoContacts")
    native.addGlobalParameter("eps", eps)
    native.addPerBondParameter("s")
    for i, j in contacts.tolist():
        native.addBond(i, j, [float(np.linalg.norm(ca[j] - ca[i]))])

    repulsion = openmm.CustomNonbondedForce("eps_rep*(crep/r)^12")
    repulsion.setName("GoRepulsion")
    repulsion.addGlobalParameter("eps_rep", eps)
    repulsion.addGlobalParameter("crep", REPULSION_DISTANCE)
    for _ in range(n):
        repulsion.addParticle([])
    for i in range(n):
        for j in range(i + 1, min(n, i + MIN_SEPARATION)):
            if chain[i] == chain[j]:
                repulsion.addExclusion(i, j)  # |i - j| <= 3
    for i, j in contacts.tolist():  # all at |i - j| >= 4 or in different chains
        repulsion.addExclusion(i, j)
    repulsion.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffNonPeriodic)
    repulsion.setCutoffDistance(REPULSION_CUTOFF)

    for force, group in ((bonds, "bonds"), (angles, "angles"), (torsions, "dihedrals"),
                         (native, "contacts"), (repulsion, "repulsion")):
        force.setForceGroup(GO_FORCE_GROUPS[group])
        system.addForce(force)
    positions = unit.Quantity([openmm.Vec3(*row) for row in ca.tolist()], unit.nanometer)
    return topology, system, positions
