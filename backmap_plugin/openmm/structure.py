"""Reading structures and completing them for amber14 (OpenMM, PDBFixer).

Shared by :mod:`~backmap_plugin.openmm.refine` and
:mod:`~backmap_plugin.openmm.validate`: read every model of a PDB/mmCIF file,
add missing heavy atoms with PDBFixer (never whole residues), bond close CYS
pairs as disulfides and add hydrogens at a given pH, keeping track of which
atoms came from the input.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.io.chains import distinct_insertion_codes

__all__ = [
    "AtomTemplate",
    "CompletedStructure",
    "complete_structure",
    "create_disulfide_bonds",
    "cysteine_sg",
    "heavy_atom_bonds",
    "is_hydrogen",
    "large_structure_message",
    "positions_to_array",
    "array_to_positions",
    "read_structure",
    "residue_label",
    "residue_variants",
]


#: Seed of the start positions that ``Modeller.addHydrogens`` draws from Python's ``random`` before it
#: minimises the hydrogens (:func:`add_hydrogens`): without it the hydrogens of one structure, and so its
#: clashscore, depend on what drew random numbers before in the process.
HYDROGEN_SEED = 0


def add_hydrogens(modeller, pH: float = 7.0, variants=None):
    """``modeller.addHydrogens``, made reproducible: the same structure always gets the same hydrogens.

    ``addHydrogens`` starts the hydrogens at random positions (Python's
    ``random``; seeded here with :data:`HYDROGEN_SEED`, the caller's random
    state restored afterwards) and minimises them on a platform of its
    choice; a multi-threaded platform sums forces in a varying order, which
    moved hydrogens by up to 0.01 Angstrom between runs, enough to make or
    remove a clash. The minimisation runs on the CPU platform with one thread
    (Reference where there is no CPU platform): 1.1 s for 300 residues on
    this project's machines, against 0.8 s with two threads and 2.3 s on
    Reference. Returns what ``addHydrogens`` returns.
    """
    import openmm

    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    platform = openmm.Platform.getPlatformByName("CPU" if "CPU" in names else "Reference")
    threads = platform.getPropertyDefaultValue("Threads") if platform.getName() == "CPU" else None
    state = random.getstate()
    random.seed(HYDROGEN_SEED)
    try:
        if threads is not None:
            platform.setPropertyDefaultValue("Threads", "1")
        return modeller.addHydrogens(pH=pH, variants=variants, platform=platform)
    finally:
        random.setstate(state)
        if threads is not None:
            platform.setPropertyDefaultValue("Threads", threads)


#: Residues from which completing a structure takes minutes (PDBFixer, then ``Modeller.addHydrogens``, which
#: minimises the hydrogens it adds: 84 s for 5,233 residues on one core); ``refine`` and ``export`` say so first.
LARGE_STRUCTURE = 2000


def large_structure_message(n_residues: int, who: str, what: str):
    """The line a command prints before completing a structure that takes minutes, or None for a smaller one.

    Parameters
    ----------
    n_residues : int
        Residues of the structure.
    who : str
        The command, which starts the line (``refine``, ``export``).
    what : str
        What is completed (``the first frame``, ``the structure``).

    Returns
    -------
    str or None
        The line, from :data:`LARGE_STRUCTURE` residues on; None below.
    """
    if n_residues < LARGE_STRUCTURE:
        return None
    return (f"{who}: {n_residues:,} residues: completing {what} (PDBFixer, hydrogens) takes minutes at this size "
            "(about 1.5 min for 5,000 residues on one core)")


_WATER = frozenset({"HOH", "WAT", "SOL", "H2O", "TIP3", "TIP3P", "TIP4", "TIP4P", "SPC", "T3P"})


def read_structure(path, top=None):
    """Read every frame of an all-atom structure file (:func:`~backmap_plugin.openmm.frames.open_structure`).

    Parameters
    ----------
    path : str or os.PathLike
        ``.pdb``, ``.ent``, ``.cif`` or ``.mmcif``, each optionally ``.gz``;
        ``.h5``; or a trajectory with ``top``.
    top : str or os.PathLike, optional
        Topology of a trajectory (PDB / mmCIF / ``.h5``).

    Returns
    -------
    topology : openmm.app.Topology
        Topology with standard and disulfide bonds (OpenMM's reader).
    frames : list of openmm.unit.Quantity
        Positions of each frame.

    Raises
    ------
    BackmapInputError
        Missing or unreadable file, unsupported extension, no atoms.
    """
    from backmap_plugin.openmm.frames import open_structure

    structure = open_structure(path, top)
    return structure.topology, [positions for positions, _, _ in structure]


def residue_label(residue) -> str:
    """How reports name an OpenMM residue: chain, name, number and insertion code, e.g. ``A:ILE167``, ``H:SER82B``
    (``?`` for no chain id)."""
    return f"{residue.chain.id or '?'}:{residue.name}{residue.id}{(residue.insertionCode or '').strip()}"


def is_hydrogen(atom) -> bool:
    """True for an OpenMM atom whose element is hydrogen (or deuterium).

    Parameters
    ----------
    atom : openmm.app.topology.Atom

    Returns
    -------
    bool
    """
    return atom.element is not None and atom.element.symbol in ("H", "D")


def positions_to_array(positions) -> np.ndarray:
    """OpenMM positions as a float64 ``(n_atoms, 3)`` array in nm.

    Parameters
    ----------
    positions : openmm.unit.Quantity or array_like
        A Quantity of any length unit, or plain values in nm.

    Returns
    -------
    numpy.ndarray
    """
    from openmm import unit

    if unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    return np.array([[v[0], v[1], v[2]] for v in positions], dtype=np.float64)


def array_to_positions(xyz):
    """A ``(n_atoms, 3)`` array in nm as OpenMM positions (list of Vec3 in nm).

    Parameters
    ----------
    xyz : array_like

    Returns
    -------
    openmm.unit.Quantity
    """
    from openmm import Vec3, unit

    return unit.Quantity([Vec3(*row) for row in np.asarray(xyz, dtype=float).tolist()], unit.nanometer)


def create_disulfide_bonds(topology, positions, cutoff: float = chem.DISULFIDE_CUTOFF, pairs=None):
    """Copy of a topology whose SG-SG bonds are the close CYS pairs only (or the ``pairs`` given).

    OpenMM's readers bond SG atoms up to 3 Angstrom apart; here a disulfide
    needs SG-SG below ``cutoff`` (default :data:`~backmap_plugin.core.chemistry.DISULFIDE_CUTOFF`). Pairs are
    bonded closest first, each SG at most once; any other SG-SG bond of the
    input is dropped.

    Parameters
    ----------
    topology : openmm.app.Topology
        Input topology (not modified).
    positions : openmm.unit.Quantity
        Positions of its atoms.
    cutoff : float, optional
        Largest SG-SG distance of a disulfide, Angstrom.
    pairs : list of tuple of int, optional
        Residue indices of the cysteines to bond, however far apart their SG
        atoms are here (a trajectory's disulfides, chosen from several
        frames: :func:`~backmap_plugin.core.chemistry.disulfide_pairs`).

    Returns
    -------
    topology : openmm.app.Topology
        New topology with the same chains, residues, atoms and bonds except
        SG-SG bonds.
    n_disulfides : int
        Number of disulfide bonds made.
    """
    from openmm.app import Topology

    xyz = positions_to_array(positions) * 10.0
    new = Topology()
    new.setPeriodicBoxVectors(topology.getPeriodicBoxVectors())
    atoms = {}
    for chain in topology.chains():
        new_chain = new.addChain(chain.id)
        for residue in chain.residues():
            new_res = new.addResidue(residue.name, new_chain, residue.id, residue.insertionCode)
            for atom in residue.atoms():
                atoms[atom.index] = new.addAtom(atom.name, atom.element, new_res, atom.id)
    for bond in topology.bonds():
        a, b = bond[0], bond[1]
        if a.name == "SG" and b.name == "SG":
            continue
        new.addBond(atoms[a.index], atoms[b.index], bond.type, bond.order)
    sg = cysteine_sg(topology)
    if pairs is None:
        bonded = chem.disulfide_pairs(xyz[sg], cutoff)
    else:
        every = list(topology.atoms())
        sg_of_residue = {every[atom].residue.index: n for n, atom in enumerate(sg)}
        bonded = [(sg_of_residue[i], sg_of_residue[j]) for i, j in pairs if i in sg_of_residue and j in sg_of_residue]
    for i, j in bonded:
        new.addBond(atoms[sg[i]], atoms[sg[j]])
    return new, len(bonded)


def cysteine_sg(topology) -> list:
    """Atom indices of the SG atoms of a topology's cysteines (CYS, CYX), in order."""
    return [a.index for a in topology.atoms() if a.name == "SG" and a.residue.name in ("CYS", "CYX")]


def residue_variants(topology) -> list:
    """Protonation variant of each residue, read from its hydrogens.

    Parameters
    ----------
    topology : openmm.app.Topology
        A topology with hydrogens.

    Returns
    -------
    list of str or None
        One entry per residue for ``Modeller.addHydrogens(variants=...)``:
        HID/HIE/HIP, CYS/CYX, ASH, GLH, LYN where they apply, None elsewhere.
    """
    variants = []
    for residue in topology.residues():
        names = {a.name for a in residue.atoms()}
        variant = None
        if residue.name in ("HIS", "HID", "HIE", "HIP"):
            if "HD1" in names and "HE2" in names:
                variant = "HIP"
            elif "HD1" in names:
                variant = "HID"
            elif "HE2" in names:
                variant = "HIE"
        elif residue.name in ("CYS", "CYX"):
            variant = "CYS" if "HG" in names else "CYX"
        elif residue.name in ("ASP", "ASH") and ("HD2" in names or "HD1" in names):
            variant = "ASH"
        elif residue.name in ("GLU", "GLH") and ("HE2" in names or "HE1" in names):
            variant = "GLH"
        elif residue.name in ("LYS", "LYN") and "HZ3" not in names and "HZ1" in names:
            variant = "LYN"
        variants.append(variant)
    return variants


@dataclass
class CompletedStructure:
    """A structure completed for amber14 by :func:`complete_structure`.

    Attributes
    ----------
    topology : openmm.app.Topology
        All atoms, hydrogens included.
    positions : openmm.unit.Quantity
        Their positions.
    source_index : numpy.ndarray
        ``(n_atoms,)`` index of each atom in the input topology, -1 for atoms
        that were added (missing heavy atoms, hydrogens).
    variants : list
        Protonation variant per residue (:func:`residue_variants`).
    n_added_heavy : int
        Heavy atoms added by PDBFixer.
    n_disulfides : int
        Disulfide bonds made.
    """

    topology: object
    positions: object
    source_index: np.ndarray
    variants: list
    n_added_heavy: int
    n_disulfides: int


def _distinct_residue_ids(topology) -> None:
    """Give residues of an OpenMM topology that repeat the number and insertion code of the residue before them
    codes A, B, ... (:func:`~backmap_plugin.io.chains.distinct_insertion_codes`), in place.

    A structure read from a file that holds no insertion codes (``.h5``)
    numbers residues 82, 82A and 82B alike; PDBFixer, which reads the
    structure as PDBx text, would merge them.
    """
    for chain in topology.chains():
        residues = list(chain.residues())
        codes = distinct_insertion_codes([r.id for r in residues], [r.insertionCode for r in residues],
                                         f"chain {chain.id!r}")
        for residue, code in zip(residues, codes):
            residue.insertionCode = code


def complete_structure(topology, positions, pH: float = 7.0, variants=None, disulfides=None) -> CompletedStructure:
    """Add missing heavy atoms, disulfides and hydrogens for amber14.

    Hydrogens and water of the input are discarded (and rebuilt: hydrogens
    at ``pH``). PDBFixer adds missing heavy atoms including terminal OXT;
    missing residues are never built (``missingResidues = {}``).

    Parameters
    ----------
    topology : openmm.app.Topology
        Input topology.
    positions : openmm.unit.Quantity
        Input positions.
    pH : float, optional
        pH for the protonation states.
    variants : list, optional
        Protonation variant per residue (from a previous frame) to reproduce
        the same atoms; chosen at ``pH`` when None.
    disulfides : list of tuple of int, optional
        Residue indices of the cysteine pairs to bond (``pairs`` of
        :func:`create_disulfide_bonds`); by default those whose SG atoms
        are close here.

    Returns
    -------
    CompletedStructure

    Raises
    ------
    BackmapInputError
        When PDBFixer cannot complete the structure.
    """
    from openmm.app import Modeller, PDBxFile
    from pdbfixer import PDBFixer

    water = [r for r in topology.residues() if r.name in _WATER]
    original = [a for a in topology.atoms() if not is_hydrogen(a) and a.residue.name not in _WATER]
    stripped = Modeller(topology, positions)
    stripped.delete(water + [a for a in topology.atoms() if is_hydrogen(a) and a.residue.name not in _WATER])
    # atom identity for the restraints: (residue ordinal, atom name) -> input atom index
    input_keys = {
        (atom.residue.index, atom.name): original[atom.index].index for atom in stripped.topology.atoms()
    }
    _distinct_residue_ids(stripped.topology)
    # handed over as PDBx text: PDB text would cut chain ids to one character and numbers to four digits; each chain
    # under an id of its own, as the PDBx reader joins consecutive chains of one id (the pieces of a broken chain,
    # which would then be bonded across the break), its own id given back after
    given = {}
    for index, chain in enumerate(stripped.topology.chains()):
        given[str(index)], chain.id = chain.id, str(index)
    text = io.StringIO()
    PDBxFile.writeFile(stripped.topology, stripped.positions, text, keepIds=True)
    text.seek(0)
    try:
        fixer = PDBFixer(pdbxfile=text)
        fixer.findMissingResidues()
        fixer.missingResidues = {}
        fixer.findMissingAtoms()
        fixer.addMissingAtoms()
    except Exception as exc:  # PDBFixer raises plain Exception
        raise BackmapInputError(f"PDBFixer could not complete the structure: {exc}") from exc
    for chain in fixer.topology.chains():
        chain.id = given[chain.id]
    if fixer.topology.getNumResidues() != stripped.topology.getNumResidues():
        raise BackmapInputError(
            f"PDBFixer changed the number of residues ({stripped.topology.getNumResidues()} -> "
            f"{fixer.topology.getNumResidues()})"
        )
    heavy_top, n_ss = create_disulfide_bonds(fixer.topology, fixer.positions, pairs=disulfides)
    n_added_heavy = fixer.topology.getNumAtoms() - stripped.topology.getNumAtoms()
    modeller = Modeller(heavy_top, fixer.positions)
    add_hydrogens(modeller, pH, None if variants is None else list(variants))
    source = np.full(modeller.topology.getNumAtoms(), -1, dtype=np.int64)
    for atom in modeller.topology.atoms():
        if not is_hydrogen(atom):
            source[atom.index] = input_keys.get((atom.residue.index, atom.name), -1)
    return CompletedStructure(
        topology=modeller.topology,
        positions=modeller.positions,
        source_index=source,
        variants=residue_variants(modeller.topology),
        n_added_heavy=max(0, n_added_heavy),
        n_disulfides=n_ss,
    )


class AtomTemplate:
    """Completion of later frames by copying the added atoms of a template frame.

    The atoms a completion added (hydrogens, missing heavy atoms) are placed
    in a new frame by the local geometry of the template: each one keeps its
    bond vector to an anchor atom (a bonded atom placed before it), turned by
    the rotation that best maps the anchor's neighbourhood (its bonded atoms,
    and theirs when it has only one) from the template onto the new frame
    (Kabsch, about the anchor). Bond lengths to the anchors are those of the
    template, or ``bondLengths`` where given; atoms, names, order, protonation and disulfides are
    those of the template frame, so every frame of a trajectory has the
    same topology and one OpenMM System serves them all.

    Parameters
    ----------
    completed : CompletedStructure
        The template frame's completion (:func:`complete_structure`).
    positions : openmm.unit.Quantity or array_like, optional
        Template positions of ``completed.topology`` (e.g. the refined first
        frame, nm); default ``completed.positions``.
    bondLengths : tuple of numpy.ndarray, optional
        ``(pairs, lengths)``: ``(n, 2)`` atom indices and their bond lengths
        (nm), e.g. the force field's; an added atom bonded to its anchor by
        one of these pairs is placed at that distance.

    Raises
    ------
    ValueError
        When an added atom has no bonded atom to anchor it (cannot happen
        for a protein whose atoms are all bonded).
    """

    def __init__(self, completed: CompletedStructure, positions=None, bondLengths=None):
        self.completed = completed
        self.xyz = positions_to_array(completed.positions if positions is None else positions)
        n = completed.topology.getNumAtoms()
        neighbours = [[] for _ in range(n)]
        for bond in completed.topology.bonds():
            neighbours[bond[0].index].append(bond[1].index)
            neighbours[bond[1].index].append(bond[0].index)
        placed = completed.source_index >= 0
        self.levels = []  # per level: (atoms, anchors, (group, reference) rows)
        todo = [i for i in range(n) if not placed[i]]
        while todo:
            atoms, anchors, rows = [], [], []
            for i in todo:
                anchor = next((a for a in neighbours[i] if placed[a]), None)
                if anchor is None:
                    continue
                refs = [a for a in neighbours[anchor] if placed[a]]
                if len(refs) < 2:
                    refs += [b for a in refs for b in neighbours[a] if placed[b] and b != anchor]
                atoms.append(i)
                anchors.append(anchor)
                rows.extend((len(atoms) - 1, r) for r in refs)
            if not atoms:
                raise ValueError(f"atom {todo[0]} of the template has no placed bonded atom to anchor it")
            self.levels.append((np.array(atoms), np.array(anchors), np.array(rows, dtype=np.int64).reshape(-1, 2)))
            placed[atoms] = True
            todo = [i for i in todo if not placed[i]]
        lengths = {}
        if bondLengths is not None:
            for (i, j), length in zip(np.asarray(bondLengths[0]).tolist(), np.asarray(bondLengths[1]).tolist()):
                lengths[(i, j)] = lengths[(j, i)] = length
        self.bonds = []  # per level: template vectors anchor -> atom
        for atoms, anchors, _ in self.levels:
            bond = self.xyz[atoms] - self.xyz[anchors]
            wanted = np.array([lengths.get(pair, np.nan) for pair in zip(atoms.tolist(), anchors.tolist())])
            scale = np.where(np.isnan(wanted), 1.0, wanted / np.linalg.norm(bond, axis=1))
            self.bonds.append(bond * scale[:, None])

    def place(self, xyz) -> np.ndarray:
        """All-atom coordinates (nm) of a frame whose input atoms are known.

        Parameters
        ----------
        xyz : numpy.ndarray
            ``(n_atoms, 3)`` coordinates of the completed topology (nm); rows
            of atoms that came from the input are used, the others are
            overwritten.

        Returns
        -------
        numpy.ndarray
            A copy with every added atom placed.
        """
        from backmap_plugin.core.metrics import kabsch_rotation_of

        out = np.array(xyz, dtype=np.float64)
        for (atoms, anchors, rows), bond in zip(self.levels, self.bonds):
            group, refs = rows[:, 0], rows[:, 1]
            p = self.xyz[refs] - self.xyz[anchors[group]]
            q = out[refs] - out[anchors[group]]
            h = np.zeros((len(atoms), 3, 3))
            np.add.at(h, group, p[:, :, None] * q[:, None, :])
            rotation = kabsch_rotation_of(h)  # row vectors: p @ rotation ~ q
            out[atoms] = out[anchors] + np.einsum("ni,nij->nj", bond, rotation)
        return out

    def complete(self, positions) -> CompletedStructure:
        """The completion of a frame of the template's input topology.

        Parameters
        ----------
        positions : openmm.unit.Quantity or array_like
            Positions of the input topology the template was completed from
            (nm when plain numbers).

        Returns
        -------
        CompletedStructure
            Same topology, source indices, variants and counts as the
            template; positions of this frame.
        """
        source = self.completed.source_index
        frame = positions_to_array(positions)
        xyz = np.zeros((len(source), 3))
        xyz[source >= 0] = frame[source[source >= 0]]
        t = self.completed
        return CompletedStructure(topology=t.topology, positions=array_to_positions(self.place(xyz)),
                                  source_index=source, variants=t.variants, n_added_heavy=t.n_added_heavy,
                                  n_disulfides=t.n_disulfides)


def heavy_atom_bonds(topology):
    """Heavy atoms of a topology and the bonds between them.

    Parameters
    ----------
    topology : openmm.app.Topology

    Returns
    -------
    heavy : numpy.ndarray
        ``(n_heavy,)`` atom indices of the non-hydrogen atoms.
    bonds : numpy.ndarray
        ``(n_bonds, 2)`` bonds between heavy atoms, as indices into ``heavy``
        (the layout :func:`backmap_plugin.core.metrics.clashes` takes).
    """
    heavy = np.array([a.index for a in topology.atoms() if not is_hydrogen(a)], dtype=np.int64)
    position = np.full(topology.getNumAtoms(), -1, dtype=np.int64)
    position[heavy] = np.arange(len(heavy))
    pairs = [(position[b[0].index], position[b[1].index]) for b in topology.bonds()]
    bonds = np.array([p for p in pairs if p[0] >= 0 and p[1] >= 0], dtype=np.int64).reshape(-1, 2)
    return heavy, bonds


