"""CALVADOS 3: one bead per residue for disordered and multi-domain proteins, as an OpenMM System.

The model of Cao, von Buelow, Tesei & Lindorff-Larsen, Protein Science 33,
e5172 (2024), built from an all-atom structure and a list of folded domains
the way the CALVADOS package (0.8.0) sets up a protein with harmonic domain
restraints and ``use_com``:

* one bead per residue at the centre of mass of the residue's heavy atoms
  (every residue, inside domains or not), named ``CA`` in the CG topology;
* harmonic bonds ``0.5*k*(r - b)^2``, ``k`` = 8033 kJ/mol/nm^2, between
  consecutive residues of a chain: ``b`` is the input bead distance when at
  least one of the two residues lies in a folded domain, else 0.38 nm;
* domain restraints ``0.5*k*(r - d)^2``, ``k`` = 700 kJ/mol/nm^2, between
  the beads of each pair of residues of the same domain that are at least
  two apart in the sequence and at most 0.9 nm apart in the input, at their
  input distance ``d``;
* Ashbaugh-Hatch and Debye-Hueckel pair terms as in :mod:`.hps` (2.0 and
  4.0 nm cut-offs), with the CALVADOS 3 residue parameters
  (``calvados3_parameters.csv``); lambda and epsilon are the same inside
  and outside domains. Bonded and restrained pairs are excluded from both
  pair terms; every other pair, within a domain too, interacts.

Charges: the table's, histidine ``1/(1 + 10^(pH - 6))``, and (by default)
+1 on the first and -1 on the last residue of each chain, whose bead masses
gain 2 and 16 g/mol. Force groups: :data:`CALVADOS3_FORCE_GROUPS`.
"""

from __future__ import annotations

import os
import string

import numpy as np

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.force_fields.hps import (
    BOND_K,
    BOND_LENGTH,
    HPS_FORCE_GROUPS,
    _value,
    ashbaugh_hatch_force,
    cg_topology,
    debye_huckel_force,
    debye_huckel_parameters,
    harmonic_bond_force,
    periodic_box_vectors,
    read_parameter_table,
    set_topology_box,
)
from backmap_plugin.io.chains import input_chain_id, topology_to_openmm_as_read
from backmap_plugin.io.cif_atoms import read_mmcif_models
from backmap_plugin.io.loaders import open_text
from backmap_plugin.io.paths import MMCIF, match_extension

__all__ = [
    "CALVADOS3_FORCE_GROUPS",
    "RESTRAINT_CUTOFF",
    "RESTRAINT_K",
    "RESTRAINT_MIN_SEPARATION",
    "create_calvados3_system",
    "histidine_charge",
    "load_calvados3_parameters",
    "read_domains",
]

#: Force constant of the domain restraints, kJ/mol/nm^2.
RESTRAINT_K = 700.0
#: Input bead distance (nm) up to which a pair of a domain is restrained.
RESTRAINT_CUTOFF = 0.9
#: Smallest sequence separation ``|i - j|`` of a restrained pair.
RESTRAINT_MIN_SEPARATION = 2
#: Mass (g/mol) added to the N- and C-terminal beads of a chain with charged termini.
TERMINAL_MASSES = (2.0, 16.0)
#: Force group of each term of :func:`create_calvados3_system`.
CALVADOS3_FORCE_GROUPS = {**HPS_FORCE_GROUPS, "restraints": 3}


def load_calvados3_parameters(path=None) -> dict:
    """Read the CALVADOS 3 per-residue parameters.

    Parameters
    ----------
    path : str or os.PathLike, optional
        CSV with columns ``one, three, mass, lambda, sigma, charge``; lines
        starting with ``#`` are comments. Default: the packaged
        ``calvados3_parameters.csv`` (source in its header).

    Returns
    -------
    dict
        One-letter code -> :class:`~backmap_plugin.force_fields.hps.ResidueParameters`.
    """
    return read_parameter_table(path, "calvados3_parameters.csv")


def histidine_charge(pH: float) -> float:
    """Mean histidine charge at a pH (side-chain pKa 6), as CALVADOS sets it.

    Parameters
    ----------
    pH : float

    Returns
    -------
    float
        ``1 / (1 + 10^(pH - 6))``: 0.0909 at pH 7.
    """
    return 1.0 / (1.0 + 10.0 ** (float(pH) - 6.0))


def read_domains(path, name=None) -> list:
    """Folded domains of one protein from a CALVADOS ``domains.yaml``.

    Parameters
    ----------
    path : str or os.PathLike
        YAML mapping protein name -> list of domains, each ``[first, last]``
        (1-based, inclusive) or a list of such ranges (one domain in
        pieces).
    name : str, optional
        Protein; may be left out when the file holds one.

    Returns
    -------
    list
        The domains as written, for ``create_calvados3_system(domains=...)``.
    """
    try:
        import yaml
    except ImportError as exc:  # PyYAML is not a hard dependency
        raise ImportError("read_domains needs PyYAML (pip install pyyaml)") from exc
    with open(path, encoding="utf-8") as handle:
        entries = yaml.safe_load(handle) or {}
    if not isinstance(entries, dict):
        raise BackmapInputError(f"{path}: expected a mapping of protein names to domain lists")
    if name is None:
        if len(entries) != 1:
            raise BackmapInputError(f"{path}: holds {len(entries)} proteins ({', '.join(map(str, entries))}); "
                                    "pass name=")
        name = next(iter(entries))
    if name not in entries:
        raise BackmapInputError(f"{path}: no protein {name!r} (found: {', '.join(map(str, entries))})")
    return list(entries[name] or [])


def _domain_of(domains, n) -> np.ndarray:
    """(n,) domain number of each residue, -1 outside; checks the 1-based inclusive ranges."""
    owner = np.full(n, -1, dtype=np.int64)
    for d, domain in enumerate(domains):
        ranges = domain if len(domain) and np.ndim(domain[0]) > 0 else [domain]  # a domain in pieces
        for bounds in ranges:
            if len(bounds) != 2:
                raise ValueError(f"domain {d + 1}: expected [first, last] residue ranges, got {bounds!r}")
            first, last = int(bounds[0]), int(bounds[1])
            if not 1 <= first <= last <= n:
                raise ValueError(f"domain {d + 1}: range [{first}, {last}] is not within residues 1-{n} "
                                 "(1-based, inclusive, counted along the protein residues of the structure)")
            taken = owner[first - 1:last]
            if (taken >= 0).any():
                other = int(taken[taken >= 0][0]) + 1
                raise ValueError(f"domain {d + 1}: range [{first}, {last}] overlaps domain {other}")
            owner[first - 1:last] = d
    return owner


def _open_structure(path):
    """Topology and first-model positions (nm) of a PDB file (OpenMM's reader) or an mmCIF file (read as ``backmap
    run`` and ``refine`` read it: :func:`~backmap_plugin.io.cif_atoms.read_mmcif_models`, chains by author id)."""
    from openmm import app

    if not os.path.exists(path):
        raise BackmapInputError(f"{path}: no such file")
    if match_extension(path, MMCIF):
        with open_text(path) as handle:
            topology, xyz, _ = read_mmcif_models(path, handle)
        return topology_to_openmm_as_read(topology, xyz[0] / 10.0), xyz[0] / 10.0
    try:
        with open_text(path) as handle:
            reader = app.PDBFile(handle)
    except Exception as exc:  # OpenMM raises many kinds
        raise BackmapInputError(f"{path}: cannot read structure: {exc}") from exc
    return reader.topology, reader.getPositions(asNumpy=True)


def _positions_nm(positions) -> np.ndarray:
    from openmm import unit

    if unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    return np.asarray(positions, dtype=np.float64).reshape(-1, 3)


def _heavy_atom_mass(atom):
    """Mass (g/mol) of a heavy atom, None for a hydrogen or an unknown element."""
    from openmm import unit
    from openmm.app import element

    elem = atom.element
    if elem is None:
        letters = atom.name.lstrip(string.digits)[:1].upper()
        if not letters or letters in "HD":
            return None
        try:
            elem = element.Element.getBySymbol(letters)
        except KeyError:
            return None
    if elem.atomic_number <= 1:
        return None
    return elem.mass.value_in_unit(unit.dalton)


def _residue_beads(topology, xyz):
    """Protein residues: three-letter names, chain index and id, residue ids and insertion codes, heavy-atom centres
    of mass (nm)."""
    names, chain_index, chain_ids, residue_ids, codes, beads = [], [], [], [], [], []
    for c, chain in enumerate(topology.chains()):
        chain_id = chain.id.strip() or input_chain_id(c)
        for residue in chain.residues():
            std = chem.standard_residue_name(residue.name)
            atoms = list(residue.atoms())
            if std is None or not any(a.name == "CA" for a in atoms):
                continue  # water, ions, ligands, caps
            heavy = [(a.index, m) for a in atoms if (m := _heavy_atom_mass(a)) is not None]
            index = np.array([i for i, _ in heavy])
            mass = np.array([m for _, m in heavy])
            names.append(std)
            chain_index.append(c)
            chain_ids.append(chain_id)
            residue_ids.append(residue.id)
            codes.append(residue.insertionCode)
            beads.append((xyz[index] * mass[:, None]).sum(axis=0) / mass.sum())
    return (names, np.array(chain_index, dtype=np.int64), chain_ids, residue_ids, codes,
            np.array(beads).reshape(-1, 3))


def _restrained_pairs(xyz, owner, cutoff=RESTRAINT_CUTOFF, min_separation=RESTRAINT_MIN_SEPARATION):
    """Pairs (i < j) of the same domain, ``j - i >= min_separation``, at most ``cutoff`` apart; their distances."""
    pairs, distances = [], []
    for d in range(int(owner.max()) + 1 if len(owner) else 0):
        members = np.flatnonzero(owner == d)
        dist = np.linalg.norm(xyz[members, None] - xyz[None, members], axis=-1)
        a, b = np.nonzero(np.triu(dist <= cutoff, 1))
        keep = members[b] - members[a] >= min_separation
        pairs.append(np.stack([members[a[keep]], members[b[keep]]], axis=1))
        distances.append(dist[a[keep], b[keep]])
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    return np.concatenate(pairs), np.concatenate(distances)


def create_calvados3_system(structure, domains=(), positions=None, temperature=298.0, ionicStrength=0.15,
                            pH=7.0, box=None, terminalCharges=True, parameters=None):
    """CALVADOS 3 System of a protein with folded domains, from its all-atom structure.

    Parameters
    ----------
    structure : str, os.PathLike, openmm.app.Topology or object with ``topology`` and ``positions``
        All-atom structure: a PDB or mmCIF file (optionally gzipped; the
        first model), an OpenMM Topology (then ``positions`` is required),
        or e.g. an ``openmm.app.PDBFile`` or ``Modeller``. Protein residues
        (with a CA atom) are kept; water, ions and ligands are ignored.
        Hydrogens may be present or not: beads are heavy-atom centres of
        mass.
    domains : sequence, optional
        Folded domains as in a CALVADOS ``domains.yaml`` (see
        :func:`read_domains`): each ``[first, last]``, 1-based and
        inclusive, counted along the protein residues of the structure in
        file order (not residue numbers), or a list of such ranges for a
        domain in pieces. Default: none (a fully disordered chain).
    positions : openmm.unit.Quantity or array_like, optional
        Atom positions with a Topology (nm when plain numbers).
    temperature : float or openmm.unit.Quantity, optional
        Kelvin when a plain number (default 298).
    ionicStrength : float or openmm.unit.Quantity, optional
        mol/L when a plain number (default 0.15).
    pH : float, optional
        Sets the histidine charge (default 7.0: 0.0909).
    box : float, sequence or openmm.unit.Quantity, optional
        Periodic box (nm): an edge length, three edge lengths or three
        vectors. None (default): non-periodic.
    terminalCharges : bool, optional
        +1 on the first and -1 on the last residue of each chain, and their
        masses +2 and +16 g/mol (CALVADOS ``charge_termini: both``).
    parameters : str or os.PathLike, optional
        Parameter CSV (default: packaged CALVADOS 3 values).

    Returns
    -------
    topology : openmm.app.Topology
        One residue per bead (three-letter names, the input's chain ids,
        residue numbers and insertion codes; blank chain ids become A, B,
        ...), one atom ``CA`` (element carbon) each; consecutive beads of a
        chain bonded.
    system : openmm.System
        Forces in the groups of :data:`CALVADOS3_FORCE_GROUPS`, named
        ``CALVADOS3Bonds``, ``AshbaughHatch``, ``DebyeHueckel`` and
        ``CALVADOS3Restraints``.
    positions : openmm.unit.Quantity
        The beads (heavy-atom centres of mass), in the input's frame.

    Raises
    ------
    BackmapInputError
        Unreadable file, or fewer than two protein residues.
    ValueError
        A domain range outside the residues, overlapping domains, a bad
        box, temperature or ionic strength.
    """
    import openmm
    from openmm import app, unit

    if isinstance(structure, (str, os.PathLike)):
        source = os.fspath(structure)
        topology_aa, positions = _open_structure(source)
    elif isinstance(structure, app.Topology):
        if positions is None:
            raise ValueError("create_calvados3_system: positions are needed with a Topology")
        source, topology_aa = "topology", structure
    else:
        source, topology_aa = type(structure).__name__, structure.topology
        positions = structure.positions if positions is None else positions
    xyz = _positions_nm(positions)
    if xyz.shape != (topology_aa.getNumAtoms(), 3):
        raise ValueError(f"{xyz.shape[0]} positions for {topology_aa.getNumAtoms()} atoms")
    names, chain, chain_ids, residue_ids, codes, beads = _residue_beads(topology_aa, xyz)
    n = len(names)
    if n < 2:
        raise BackmapInputError(f"{source}: needs at least two amino-acid residues with CA atoms, found {n}")

    table = {p.three: p for p in load_calvados3_parameters(parameters).values()}
    missing = sorted(set(names) - set(table))
    if missing:
        raise ValueError(f"no parameters for {', '.join(missing)} in the parameter table")
    params = [table[name] for name in names]
    owner = _domain_of(list(domains), n)

    charges = np.array([histidine_charge(pH) if p.three == "HIS" else p.charge for p in params])
    masses = np.array([p.mass for p in params])
    if terminalCharges:
        first = np.flatnonzero(np.r_[True, chain[1:] != chain[:-1]])
        last = np.flatnonzero(np.r_[chain[1:] != chain[:-1], True])
        charges[first] += 1.0
        charges[last] -= 1.0
        masses[first] += TERMINAL_MASSES[0]
        masses[last] += TERMINAL_MASSES[1]

    temperature = _value(temperature, unit.kelvin)
    prefactor, kappa = debye_huckel_parameters(temperature, _value(ionicStrength, unit.molar))
    vectors = periodic_box_vectors(box)
    periodic = vectors is not None

    system = openmm.System()
    for m in masses:
        system.addParticle(float(m))
    if periodic:
        system.setDefaultPeriodicBoxVectors(*vectors)

    bond_pairs = np.array([(i, i + 1) for i in range(n - 1) if chain[i] == chain[i + 1]], dtype=np.int64)
    bond_pairs = bond_pairs.reshape(-1, 2)
    i, j = bond_pairs[:, 0], bond_pairs[:, 1]
    in_domain = (owner[i] >= 0) | (owner[j] >= 0)
    lengths = np.where(in_domain, np.linalg.norm(beads[j] - beads[i], axis=1), BOND_LENGTH)
    bonds = harmonic_bond_force(bond_pairs.tolist(), lengths, BOND_K, periodic, name="CALVADOS3Bonds")

    restrained, distances = _restrained_pairs(beads, owner)
    restraints = harmonic_bond_force(restrained.tolist(), distances, RESTRAINT_K, periodic,
                                     name="CALVADOS3Restraints")

    ah = ashbaugh_hatch_force([p.sigma for p in params], [p.lambda_ for p in params], periodic)
    dh = debye_huckel_force(charges, prefactor, kappa, periodic)
    for a, b in np.concatenate([bond_pairs, restrained]).tolist():
        ah.addExclusion(a, b)
        dh.addExclusion(a, b)
    for force, group in ((bonds, "bonds"), (ah, "ashbaugh_hatch"), (dh, "debye_huckel"),
                         (restraints, "restraints")):
        force.setForceGroup(CALVADOS3_FORCE_GROUPS[group])
        system.addForce(force)

    topology = cg_topology(names, chain_ids=chain_ids, residue_ids=residue_ids, chain_index=chain.tolist(),
                           insertion_codes=codes)
    if periodic:
        set_topology_box(topology, vectors)
    return topology, system, unit.Quantity([openmm.Vec3(*row) for row in beads.tolist()], unit.nanometer)
