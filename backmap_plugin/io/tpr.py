"""The topology of a GROMACS run input (``.tpr``), read with MDAnalysis (an
optional dependency, imported on use)."""

from __future__ import annotations

import warnings

import mdtraj as md
import numpy as np

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.io.chains import input_chain_id


def _element_or_none(symbol: str):
    """The mdtraj element of a symbol; None for coarse-grained or unknown types."""
    try:
        return md.element.get_by_symbol(symbol.strip().capitalize())
    except KeyError:
        return None


def load_tpr_topology(path: str) -> md.Topology:
    """Topology of a GROMACS run input (.tpr) read with MDAnalysis.

    One chain per molecule, split further where the molecule's chain ids
    change; chains get ids A ... Z, a ... z, 0 ... 9 in turn. The bonds are
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
        Atoms with their names, residue names and numbers; elements where
        the file has known ones; bonds.

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
        with warnings.catch_warnings():
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
    resindices, resnames, resids = atoms.resindices.tolist(), atoms.resnames.tolist(), atoms.resids.tolist()
    names = atoms.names.tolist()
    topology = md.Topology()
    chain_key = residue_index = chain = residue = None
    for i in range(n):
        key = (molecules[i], chain_ids[i])
        if key != chain_key:
            chain = topology.add_chain(chain_id=input_chain_id(topology.n_chains))
            chain_key, residue_index = key, None
        if resindices[i] != residue_index:
            residue_index = resindices[i]
            residue = topology.add_residue(str(resnames[i]), chain, resSeq=int(resids[i]))
        topology.add_atom(str(names[i]), _element_or_none(elements[i]), residue, serial=i + 1)
    bonds = atoms.bonds.indices.tolist() if hasattr(atoms, "bonds") else []
    added = list(topology.atoms)
    for a, b in bonds:
        topology.add_bond(added[a], added[b])
    return topology
