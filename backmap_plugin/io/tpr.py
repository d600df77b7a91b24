"""The topology of a GROMACS run input (``.tpr``), read with MDAnalysis (an
optional dependency, imported on use)."""

from __future__ import annotations

import contextlib
import warnings

import mdtraj as md
import numpy as np

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.topology import set_insertion_code
from backmap_plugin.io.chains import chain_starts, input_chain_id


def _element_or_none(symbol: str):
    """The mdtraj element of a symbol; None for coarse-grained or unknown types."""
    try:
        return md.element.get_by_symbol(symbol.strip().capitalize())
    except KeyError:
        return None


def load_tpr_topology(path: str) -> md.Topology:
    """Topology of a GROMACS run input (.tpr) read with MDAnalysis.

    One chain per molecule, split further where the molecule's chain ids
    change or its residue numbers start again (the chains of one molecule
    that ``martinize2 -merge`` or a Go model made, numbered as their input
    chains were: :func:`~backmap_plugin.io.chains.chain_starts`, as a
    ``.gro`` is read); chains get ids A ... Z, a ... z, 0 ... 9 in turn, the
    protein's first (water or lipids may come before it in the file). The bonds are
    the file's bonds and constraints (as MDAnalysis reads them), as a
    ``.pdb`` from martinize2 has them in CONECT records (a Martini 3 run's
    cystines are SC1-SC1 constraints).

    Parameters
    ----------
    path : str
        The ``.tpr`` file.

    Returns
    -------
    mdtraj.Topology
        Atoms with their names, residue names and numbers (and insertion
        codes) as the file holds them (MDAnalysis numbers residues 1 ... N:
        the file's numbers are kept while it reads, :func:`_residue_info_kept`);
        elements where the file has known ones; bonds.

    Raises
    ------
    BackmapInputError
        MDAnalysis is not installed, or cannot read the file.
    """
    try:
        import MDAnalysis
    except ImportError as exc:
        raise BackmapInputError(
            f"{path}: reading .tpr files needs MDAnalysis: pip install 'backmap_plugin[gromacs]' "
            "(or pip install MDAnalysis), or pass the .gro file of the run as --top instead"
        ) from exc
    try:
        with warnings.catch_warnings(), _residue_info_kept() as kept:
            warnings.simplefilter("ignore")
            atoms = MDAnalysis.Universe(path).atoms
    except Exception as exc:
        raise BackmapInputError(f"{path}: cannot be read as .tpr: {type(exc).__name__}: {exc}") from exc
    # each per-atom array taken once, as lists: indexing the AtomGroup's attributes atom by atom rebuilt them each
    # time (554k beads of a solvated Martini system: about 50 min)
    n = len(atoms)
    molecules = (atoms.molnums if hasattr(atoms, "molnums") else np.zeros(n, dtype=int)).tolist()
    chain_ids = [str(c) for c in (atoms.chainIDs if hasattr(atoms, "chainIDs") else np.full(n, ""))]
    elements = [str(e) for e in (atoms.elements if hasattr(atoms, "elements") else np.full(n, ""))]
    resindices, resnames = atoms.resindices.tolist(), atoms.resnames.tolist()
    numbers, codes = _residue_numbers(atoms, kept)
    names = atoms.names.tolist()
    topology = md.Topology()
    chain_key = residue_index = chain = residue = None
    for i in range(n):
        key = (molecules[i], chain_ids[i])
        new_residue = resindices[i] != residue_index
        restarts = (key == chain_key and new_residue and residue is not None
                    and bool(chain_starts([residue.resSeq, int(numbers[i])])[1]))
        if key != chain_key or restarts:
            chain = topology.add_chain()
            chain_key, residue_index = key, None
        if resindices[i] != residue_index:
            residue_index = resindices[i]
            residue = topology.add_residue(str(resnames[i]), chain, resSeq=int(numbers[i]))
            if codes[i]:
                set_insertion_code(residue, codes[i])
        topology.add_atom(str(names[i]), _element_or_none(elements[i]), residue, serial=i + 1)
    bonds = atoms.bonds.indices.tolist() if hasattr(atoms, "bonds") else []
    added = list(topology.atoms)
    for a, b in bonds:
        topology.add_bond(added[a], added[b])
    # ids: the protein's chains first (A, B ... wherever they lie: solvent may come before them), then the others
    chains = sorted(topology.chains, key=lambda c: not any(r.is_protein for r in c.residues))
    for k, chain in enumerate(chains):
        chain.chain_id = input_chain_id(k)
    return topology


@contextlib.contextmanager
def _residue_info_kept():
    """While MDAnalysis reads a .tpr in this context, keep what it reads and drops of each molecule type's residues.

    Yields a dict, filled as the file is read: molecule type name -> [(number, insertion code), ...] of its
    residues in order (a .tpr's ``resinfo``: name, number, code). Left empty where MDAnalysis's reader is not
    built as expected (then residues are numbered as MDAnalysis numbers them).
    """
    kept: dict = {}
    try:
        from MDAnalysis.topology.tpr import utils
        read_resinfo, read_moltype = utils.do_resinfo, utils.do_moltype
    except (ImportError, AttributeError):
        yield kept
        return
    current: list = []

    def do_resinfo(data, symtab, fver, nres):
        if fver < 63:  # names only
            return read_resinfo(data, symtab, fver, nres)
        names = []
        for _ in range(nres):
            names.append(symtab[data.unpack_int()])
            number, code = data.unpack_int(), data.unpack_uchar()
            current.append((number, chr(code).strip() if 32 < code < 127 else ""))
        return names

    def do_moltype(data, symtab, fver):
        current.clear()
        moltype = read_moltype(data, symtab, fver)
        name = moltype.name.decode() if isinstance(moltype.name, bytes) else str(moltype.name)
        kept[name] = list(current)
        return moltype

    utils.do_resinfo, utils.do_moltype = do_resinfo, do_moltype
    try:
        yield kept
    finally:
        utils.do_resinfo, utils.do_moltype = read_resinfo, read_moltype


def _residue_numbers(atoms, kept: dict) -> tuple[list, list]:
    """Residue number and insertion code ('' for none) of every atom: the file's (``kept``,
    :func:`_residue_info_kept`), or MDAnalysis's 1 ... N where the file's cannot be matched to the atoms."""
    fallback = atoms.resids.tolist(), [""] * len(atoms)
    if not kept or not hasattr(atoms, "moltypes") or not hasattr(atoms, "molnums"):
        return fallback
    first_residue: dict = {}
    numbers, codes = [], []
    for moltype, molnum, resindex in zip(atoms.moltypes.tolist(), atoms.molnums.tolist(), atoms.resindices.tolist()):
        residues = kept.get(str(moltype))
        k = resindex - first_residue.setdefault(molnum, resindex)
        if residues is None or not 0 <= k < len(residues):
            return fallback
        numbers.append(residues[k][0])
        codes.append(residues[k][1])
    return numbers, codes
