"""Chain and residue numbering: generated chain ids, chains split where numbering
restarts or segment ids change, residues that share a number told apart on reading, and insertion codes: an
input's kept on its residues (mdtraj drops them), and made up on writing for residues that share a number."""

from __future__ import annotations

import mdtraj as md
import numpy as np

from backmap_plugin.core.chemistry import standard_residue_name
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.topology import insertion_code, set_insertion_code

#: GROMACS writes residue numbers modulo 100000, PDB writers (VMD, OpenMM) modulo 10000.
_RESIDUE_WRAPS = (100000, 10000)


#: The one-character chain ids given, in turn, to chains an input names none for (``.gro``, ``.tpr``, PDB files
#: with blank ids): PDB's chain column holds one character.
CHAIN_ID_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def input_chain_id(index: int) -> str:
    """The id given to chain ``index`` (counting from 0) of an input without chain ids: A ... Z, a ... z, 0 ... 9,
    then A again (chains that share an id are still apart: TER records, chain indices)."""
    return CHAIN_ID_CHARACTERS[index % len(CHAIN_ID_CHARACTERS)]


def generated_chain_id(index: int) -> str:
    """The generated id of chain ``index``: A, B, ..., Z, AA, AB, ...

    Parameters
    ----------
    index : int
        Chain index, counting from 0.

    Returns
    -------
    str
        The id (``0`` -> ``A``, ``25`` -> ``Z``, ``26`` -> ``AA``).
    """
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def set_insertion_codes(topology: md.Topology, codes) -> None:
    """Give the residues of an mdtraj topology (in order) the insertion codes ``codes`` (strings, '' for none).

    mdtraj drops the codes of PDB and mmCIF files on reading (residues 82,
    82A and 82B come back as three residues numbered 82, residues 1D ... 1A,
    1 as five numbered 1); the loaders put them back with this.
    """
    for residue, code in zip(topology.residues, codes):
        set_insertion_code(residue, code)


def topology_subset(topology: md.Topology, atoms) -> md.Topology:
    """``mdtraj.Topology.subset`` that keeps the residues' insertion codes (mdtraj's copy drops them).

    Parameters
    ----------
    topology : mdtraj.Topology
        Topology as read.
    atoms : sequence of int
        Indices of the atoms to keep.

    Returns
    -------
    mdtraj.Topology
        The residues that hold any of ``atoms``, in order, with those atoms.
    """
    subset = topology.subset(atoms)
    kept = {int(i) for i in atoms}
    residues = [r for r in topology.residues if any(atom.index in kept for atom in r.atoms)]
    for residue, copy in zip(residues, subset.residues):
        _same_code(residue, copy)
    return subset


def topology_from_openmm(topology, source: str = "OpenMM topology") -> md.Topology:
    """``mdtraj.Topology.from_openmm`` that keeps the residues' insertion codes (mdtraj's drops them).

    Parameters
    ----------
    topology : openmm.app.Topology
        The topology to convert.
    source : str
        What to call it in messages (e.g. the reporter's file).

    Returns
    -------
    mdtraj.Topology

    Raises
    ------
    BackmapInputError
        An amino-acid residue whose id is no whole number (:func:`check_openmm_residue_ids`).
    """
    check_openmm_residue_ids(topology, source)
    converted = md.Topology.from_openmm(topology)
    codes = [residue.insertionCode for residue in topology.residues()]
    if any(code.strip() for code in codes):
        set_insertion_codes(converted, codes)
    return converted


def check_openmm_residue_ids(topology, source: str) -> None:
    """Refuse an OpenMM topology with an amino-acid residue whose id is no whole number.

    OpenMM's readers keep a residue's number in ``Residue.id`` and its
    insertion code in ``Residue.insertionCode`` (82 and ``A``); a topology
    built otherwise (id ``82A``) was numbered by mdtraj's conversion by the
    residue's index, silently. Other residues (water whose id is ``.``) are
    left to it: they are not written.

    Parameters
    ----------
    topology : openmm.app.Topology
        The topology.
    source : str
        What to call it in the message.

    Raises
    ------
    BackmapInputError
        Naming the first such residue: chain, name and id.
    """
    for residue in topology.residues():
        if not residue.id.strip().lstrip("-").isdigit() and standard_residue_name(residue.name.strip().upper()):
            raise BackmapInputError(
                f"{source}: chain {residue.chain.id!r} residue {residue.name} {residue.id!r}: the residue id is no "
                "whole number; OpenMM topologies keep the number in Residue.id and the insertion code in "
                "Residue.insertionCode (82 and 'A', not '82A')")


def topology_to_openmm(topology: md.Topology):
    """``mdtraj.Topology.to_openmm`` that keeps the residues' insertion codes (mdtraj's drops them)."""
    converted = topology.to_openmm()
    for residue, openmm_residue in zip(topology.residues, converted.residues()):
        code = insertion_code(residue)
        if code:
            openmm_residue.insertionCode = code
    return converted


def topology_to_openmm_as_read(topology: md.Topology, xyz, box=None):
    """An mdtraj topology read by the package (mmCIF: :func:`~backmap_plugin.io.cif_atoms.read_mmcif_models`) as
    OpenMM's structure readers give theirs.

    :func:`topology_to_openmm` (insertion codes kept), then what OpenMM's
    PDB and PDBx readers do while reading: the residue and atom names of
    their table of alternatives (``OT1`` -> ``O``, ``OT2`` -> ``OXT`` ...),
    standard bonds, disulfides (SG atoms within 0.3 nm) and the periodic box.

    Parameters
    ----------
    topology : mdtraj.Topology
        Topology as read.
    xyz : numpy.ndarray
        ``(n_atoms, 3)`` coordinates in nm (the first model), for the disulfides.
    box : numpy.ndarray, optional
        ``(3, 3)`` periodic box vectors (rows, nm); None for none.

    Returns
    -------
    openmm.app.Topology
        The same chains, residues and atoms, in the same order.
    """
    from openmm import unit
    from openmm.app import PDBFile

    converted = topology_to_openmm(topology)
    PDBFile._loadNameReplacementTables()  # (the table OpenMM's PDB and PDBx readers apply while reading)
    for residue in converted.residues():
        residue.name = PDBFile._residueNameReplacements.get(residue.name, residue.name)
        atom_names = PDBFile._atomNameReplacements.get(residue.name, {})
        for atom in residue.atoms():
            atom.name = atom_names.get(atom.name, atom.name)
    converted.createStandardBonds()
    converted.createDisulfideBonds(unit.Quantity(np.asarray(xyz, dtype=np.float64), unit.nanometer))
    if box is not None:
        converted.setPeriodicBoxVectors(unit.Quantity(np.asarray(box, dtype=np.float64), unit.nanometer))
    return converted


def _same_code(old, new) -> None:
    """``new`` (a residue of a copied topology) keeps the insertion code of ``old``, where it has one."""
    code = insertion_code(old)
    if code is not None:
        set_insertion_code(new, code)


def insertion_codes(chain, path: str) -> list:
    """Insertion codes for writing an mdtraj chain (:func:`distinct_insertion_codes` of its residues).

    Parameters
    ----------
    chain : mdtraj.core.topology.Chain
        The chain to number.
    path : str
        The file being written, for messages.

    Returns
    -------
    list of str
        One one-character code per residue of ``chain``.
    """
    residues = list(chain.residues)
    return distinct_insertion_codes([r.resSeq for r in residues], [insertion_code(r) for r in residues],
                                    f"{path}: chain {chain.chain_id!r}")


def distinct_insertion_codes(numbers, codes, where: str) -> list:
    """Insertion codes for the residues of one chain: each residue's own, and 'A', 'B', ... for repeated numbers.

    A residue keeps the code its input gave it, so that 1D, 1C, 1B, 1A, 1 or
    a propeptide's 6P ... 38P come out as they came in. A residue without one
    (read from a file that holds none, e.g. ``.gro``, ``.h5``), or whose
    number and code repeat the previous residue's (residues a file without
    codes numbered alike, read apart), takes ' ' or, after a residue of the
    same number, the letter after that residue's code, so that readers do
    not merge them.

    Parameters
    ----------
    numbers : sequence
        Residue numbers, in chain order.
    codes : sequence
        Each residue's insertion code as read ('' or ' ' for none, None where
        the input holds none).
    where : str
        The file and chain, for messages.

    Returns
    -------
    list of str
        One one-character code per residue (' ' for none).

    Raises
    ------
    BackmapInputError
        More than 27 consecutive residues share a number, or a code is longer
        than one character.
    """
    out: list = []
    given = [None if code is None else (str(code).strip() or " ") for code in codes]
    for k, (number, code) in enumerate(zip(numbers, given)):
        same_number = k > 0 and number == numbers[k - 1]
        if code is not None and len(code) > 1:
            raise BackmapInputError(f"{where} residue {number}: insertion code {code!r} is longer than the one "
                                    "character PDB and mmCIF hold")
        if code is not None and not (same_number and code == given[k - 1]):
            out.append(code)
        elif same_number:
            index = 0 if out[-1] == " " else ord(out[-1].upper()) - ord("A") + 1
            if not 0 <= index < 26:
                raise BackmapInputError(f"{where}: more than 27 consecutive residues numbered {number}: cannot "
                                        "give them insertion codes")
            out.append(chr(ord("A") + index))
        else:
            out.append(" ")
    return out


def chain_starts(res_seq) -> np.ndarray:
    """Where residue numbering restarts: the first residue of each chain.

    Parameters
    ----------
    res_seq : array_like of int
        ``(R,)`` residue numbers in file order.

    Returns
    -------
    numpy.ndarray
        ``(R,)`` bool, True for residue 0 and for every residue whose number
        is smaller than the one before (99999 followed by 0 is the ``.gro``
        wrap-around, 9999 followed by 0 the PDB one, not a restart). Equal numbers are not a restart: files
        without insertion codes (``.gro``, ``.tpr``) number residues 54,
        54A and 54B alike.
    """
    res_seq = np.asarray(res_seq, dtype=np.int64)
    starts = np.ones(res_seq.shape, dtype=bool)
    if len(res_seq) > 1:
        prev, cur = res_seq[:-1], res_seq[1:]
        wrapped = np.isin(prev, np.array(_RESIDUE_WRAPS) - 1) & (cur == 0)
        starts[1:] = (cur < prev) & ~wrapped
    return starts


def split_chains(topology: md.Topology) -> md.Topology:
    """Copy of an mdtraj topology with a new chain wherever a chain without an id restarts its residue numbers, or
    the segment id changes.

    A ``.gro`` file has no chain ids (mdtraj reads one chain), and PDB files
    written by VMD, psfgen or LAMMPS converters often leave them blank and
    tell molecules apart by segment ids (CHARMM's P1, P2 ...) or by numbers
    that start again. Chains without an id are split before every residue
    whose number is smaller than the previous one (:func:`chain_starts`);
    every chain before a residue whose segment id differs from the previous
    residue's. Chains with an id keep it for all their pieces (their numbers
    may go down within a molecule: circular permutations, propeptides);
    chains without one get ids A ... Z, a ... z, 0 ... 9 in turn (:func:`input_chain_id`).

    Parameters
    ----------
    topology : mdtraj.Topology
        Topology as read, e.g. from a ``.gro`` or PDB file.

    Returns
    -------
    mdtraj.Topology
        Same atoms (order, names, elements, serials), residues and bonds.
    """
    new = md.Topology()
    atoms = {}
    n_chains = 0
    for chain in topology.chains:
        residues = list(chain.residues)
        named = bool(chain.chain_id and str(chain.chain_id).strip())
        starts = np.zeros(len(residues), dtype=bool) if named else chain_starts([r.resSeq for r in residues])
        segments = [str(r.segment_id or "").strip() for r in residues]
        starts[1:] |= np.array(segments[1:]) != np.array(segments[:-1])
        new_chain = None
        for residue, start in zip(residues, starts):
            if new_chain is None or start:
                new_chain = new.add_chain(chain_id=chain.chain_id if named else input_chain_id(n_chains))
                n_chains += 1
            new_res = new.add_residue(residue.name, new_chain, resSeq=residue.resSeq, segment_id=residue.segment_id)
            _same_code(residue, new_res)
            for atom in residue.atoms:
                atoms[atom.index] = new.add_atom(atom.name, atom.element, new_res, serial=atom.serial,
                                                 formal_charge=atom.formal_charge)
    for bond in topology.bonds:
        new.add_bond(atoms[bond[0].index], atoms[bond[1].index], type=bond.type, order=bond.order)
    return new


def residues_with_repeated_names(topology: md.Topology) -> np.ndarray:
    """Indices (sorted) of the residues of an mdtraj topology that hold two atoms of one name.

    One pass over the atoms in numpy: a membrane system holds hundreds of
    thousands of one-bead residues.
    """
    codes: dict[str, int] = {}
    name = np.array([codes.setdefault(atom.name, len(codes)) for atom in topology.atoms], dtype=np.int64)
    residue_index = np.array([atom.residue.index for atom in topology.atoms], dtype=np.int64)
    width = max(1, len(codes))
    key = np.sort(residue_index * width + name)
    return np.unique(key[1:][key[1:] == key[:-1]] // width)


def _runs(names: list, single_atoms: bool) -> list | None:
    """Where a residue's atom names (file order) start again: run starts, or None.

    The names must be two or more runs that each begin with the first name
    and hold no name twice, and (unless ``single_atoms``) more than one atom
    each; otherwise (e.g. an atom listed twice) None.
    """
    starts = [i for i, name in enumerate(names) if name == names[0]]
    bounds = starts + [len(names)]
    runs = [names[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    if len(runs) < 2 or any(len(set(run)) != len(run) or (len(run) == 1 and not single_atoms) for run in runs):
        return None
    return starts


def split_merged_residues(topology: md.Topology, single_atoms: bool = False) -> tuple[md.Topology, list]:
    """Residues that hold the atoms of several consecutive residues, split into them.

    Files without insertion codes (``.gro``, ``.tpr``, and ``martinize2``'s
    output with ``-resid input``) give residues 29, 29A and 29B of a
    structure one number; where those residues also share a name, readers
    that start a residue where the number or name changes read them as one
    residue whose atom names repeat (GROMACS itself does, from
    ``martinize2``'s ``.itp``). A residue whose atoms, in file order, are
    runs that each begin with its first atom's name and hold no name twice is
    split into those runs (same name and number: written back with insertion
    codes, :func:`insertion_codes`). Runs of one atom (two CA beads, or the
    BB beads of two glycines) are split only with ``single_atoms``: in a
    file that can hold insertion codes they are more likely one atom listed
    twice. A residue with an atom listed twice in any other way is left as
    it is (and refused by the duplicate check).

    Parameters
    ----------
    topology : mdtraj.Topology
        Topology as read.
    single_atoms : bool
        Split runs of one atom too (for ``.gro`` and ``.tpr`` topologies,
        which cannot hold insertion codes).

    Returns
    -------
    topology : mdtraj.Topology
        ``topology`` itself when nothing was split, else a copy with the
        same atoms (order, names, elements, serials), chains and bonds.
    split : list of mdtraj.core.topology.Residue
        The residues of ``topology`` that were split.
    """
    runs = {}
    for index in residues_with_repeated_names(topology):
        residue = topology.residue(int(index))
        starts = _runs([atom.name for atom in residue.atoms], single_atoms)
        if starts is not None:
            runs[residue.index] = set(starts[1:])
    if not runs:
        return topology, []
    new = md.Topology()
    atoms = {}
    for chain in topology.chains:
        new_chain = new.add_chain(chain_id=chain.chain_id)
        for residue in chain.residues:
            if residue.n_atoms == 0:
                _same_code(residue, new.add_residue(residue.name, new_chain, resSeq=residue.resSeq,
                                                    segment_id=residue.segment_id))
            again = runs.get(residue.index, ())
            for k, atom in enumerate(residue.atoms):
                if k == 0 or k in again:
                    new_res = new.add_residue(residue.name, new_chain, resSeq=residue.resSeq,
                                              segment_id=residue.segment_id)
                    _same_code(residue, new_res)
                atoms[atom.index] = new.add_atom(atom.name, atom.element, new_res, serial=atom.serial,
                                                 formal_charge=atom.formal_charge)
    for bond in topology.bonds:
        new.add_bond(atoms[bond[0].index], atoms[bond[1].index], type=bond.type, order=bond.order)
    return new, [topology.residue(i) for i in sorted(runs)]
