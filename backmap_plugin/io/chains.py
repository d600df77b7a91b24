"""Chain and residue numbering: generated chain ids, chains split where numbering
restarts, and insertion codes for residues that share a number."""

from __future__ import annotations

import mdtraj as md
import numpy as np

from backmap_plugin.core.errors import BackmapInputError

#: GROMACS writes residue numbers modulo 100000.
_GRO_RESIDUE_WRAP = 100000


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


def insertion_codes(chain, path: str) -> list:
    """Insertion codes for a chain: ' ' then 'A', 'B', ... for repeated numbers.

    mdtraj drops insertion codes on reading, so residues 82, 82A and 82B
    come back as three residues numbered 82. Writing them with codes again
    keeps readers from merging them.

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

    Raises
    ------
    BackmapInputError
        More than 27 consecutive residues share a number.
    """
    codes = []
    previous = None
    for residue in chain.residues:
        if previous is not None and residue.resSeq == previous.resSeq:
            index = 0 if codes[-1] == " " else ord(codes[-1]) - ord("A") + 1
            if index >= 26:
                raise BackmapInputError(
                    f"{path}: more than 27 consecutive residues numbered {residue.resSeq} in chain "
                    f"{chain.chain_id!r}: cannot give them insertion codes"
                )
            codes.append(chr(ord("A") + index))
        else:
            codes.append(" ")
        previous = residue
    return codes


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
        is not larger than the one before (99999 followed by 0 is the
        ``.gro`` wrap-around, not a restart).
    """
    res_seq = np.asarray(res_seq, dtype=np.int64)
    starts = np.ones(res_seq.shape, dtype=bool)
    if len(res_seq) > 1:
        prev, cur = res_seq[:-1], res_seq[1:]
        wrapped = (prev == _GRO_RESIDUE_WRAP - 1) & (cur == 0)
        starts[1:] = (cur <= prev) & ~wrapped
    return starts


def split_chains_by_numbering(topology: md.Topology) -> md.Topology:
    """Copy of an mdtraj topology with a new chain wherever residue numbers restart.

    Meant for ``.gro`` topologies (no chain ids: mdtraj reads one chain).
    Each chain of ``topology`` is split before every residue whose number
    is not larger than the previous one (:func:`chain_starts`). Chains that
    had an id keep it for all their pieces; chains without one get
    generated ids (A, B, ..., Z, AA, ...) in order.

    Parameters
    ----------
    topology : mdtraj.Topology
        Topology as read, e.g. from a ``.gro`` file.

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
        starts = chain_starts([r.resSeq for r in residues])
        named = bool(chain.chain_id and str(chain.chain_id).strip())
        new_chain = None
        for residue, start in zip(residues, starts):
            if new_chain is None or start:
                new_chain = new.add_chain(chain_id=chain.chain_id if named else generated_chain_id(n_chains))
                n_chains += 1
            new_res = new.add_residue(residue.name, new_chain, resSeq=residue.resSeq, segment_id=residue.segment_id)
            for atom in residue.atoms:
                atoms[atom.index] = new.add_atom(atom.name, atom.element, new_res, serial=atom.serial,
                                                 formal_charge=atom.formal_charge)
    for bond in topology.bonds:
        new.add_bond(atoms[bond[0].index], atoms[bond[1].index], type=bond.type, order=bond.order)
    return new
