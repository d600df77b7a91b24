"""Atoms and frames in messages and checks of what is read or written: atom
descriptions, frame labels, element symbols, finite coordinates, duplicate
atoms, and the notes that say a file is cut short."""

from __future__ import annotations

from collections import Counter

import mdtraj as md
import numpy as np

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.topology import residue_number
from backmap_plugin.io.chains import residues_with_repeated_names
from backmap_plugin.io.martini import BEAD_NAMES


def describe_atom(atom) -> str:
    """Chain id, residue name+number and atom name of an mdtraj atom, for messages.

    Parameters
    ----------
    atom : mdtraj.core.topology.Atom
        The atom.

    Returns
    -------
    str
        E.g. ``chain 'A' residue ALA12 atom CB`` (``ALA12A`` with an insertion code; ``chain #0`` without an
        id).
    """
    residue = atom.residue
    chain_id = residue.chain.chain_id
    chain = repr(chain_id) if chain_id else f"#{residue.chain.index}"
    return f"chain {chain} residue {residue.name}{residue_number(residue)} atom {atom.name}"


def frame_label(frame: int, stride: int = 1) -> str:
    """A frame read with a stride, for messages: ``frame 3``, or ``frame 3 (frame 30 of the file, stride 10)``.

    Frames are counted from 0, in messages as in the output (its frame ``k`` is the input's ``k * stride``).

    Parameters
    ----------
    frame : int
        The frame's index among those read.
    stride : int, optional
        The read stride.

    Returns
    -------
    str
    """
    label = f"frame {frame}"
    return label if stride == 1 else f"{label} (frame {frame * stride} of the file, stride {stride})"


class CutShortNote(str):
    """A note that a file ends inside a frame (a run killed while writing it, or one still writing): its whole
    frames before it were read, the frames after it are not there.

    A ``str`` like every note; readers make their notes of a cut file of this type so that
    :attr:`~backmap_plugin.io.frames.FrameSource.cut_short` can tell a run that read such a file from a finished
    one. A file that may have lost atoms, not frames (one model without its end), gets a plain note.
    """

    __slots__ = ()


def element_symbol(atom) -> str:
    """Element symbol of an mdtraj atom.

    Parameters
    ----------
    atom : mdtraj.core.topology.Atom
        The atom.

    Returns
    -------
    str
        The symbol, ``''`` for no element or a virtual site.
    """
    element = atom.element
    if element is None or element is md.element.virtual:
        return ""
    return element.symbol


def check_finite(xyz: np.ndarray, topology, path: str, first_frame: int, stride: int = 1) -> None:
    """Raise at the first NaN/inf coordinate, if any.

    Parameters
    ----------
    xyz : numpy.ndarray
        ``(n, n_atoms, 3)`` coordinates.
    topology : mdtraj.Topology
        Their topology, to name the atom.
    path : str
        The file (or source), for the message.
    first_frame : int
        Frame number of ``xyz[0]``.
    stride : int, optional
        Read stride, to name the frame of the file too.

    Raises
    ------
    BackmapInputError
        A coordinate is not finite.
    """
    bad = ~np.isfinite(xyz).all(axis=2)
    if not bad.any():
        return
    frame, atom_index = (int(i) for i in np.argwhere(bad)[0])
    frame += first_frame
    where = frame_label(frame, stride)
    atom = topology.atom(atom_index)
    hint = ""
    if atom.name in BEAD_NAMES:
        hint = ("; martinize2 writes NaN for a bead whose atoms its input lacks: complete the all-atom structure "
                "(e.g. with PDBFixer) before martinize2")
    raise BackmapInputError(
        f"{path}: {where} has a non-finite coordinate {xyz[frame - first_frame, atom_index].tolist()} "
        f"for {describe_atom(atom)}{hint}"
    )


def check_duplicate_atoms(topology, path: str) -> None:
    """Raise if one residue holds two atoms of the same name.

    Parameters
    ----------
    topology : mdtraj.Topology
        The topology read.
    path : str
        Its file, for the message.

    Raises
    ------
    BackmapInputError
        A residue has two atoms of one name.
    """
    repeated = residues_with_repeated_names(topology)
    if len(repeated):
        residue = topology.residue(int(repeated[0]))
        counts = Counter(atom.name for atom in residue.atoms)
        twice = [name for name, n in counts.items() if n > 1]
        atom = next(a for a in residue.atoms if a.name == twice[0])
        raise BackmapInputError(
            f"{path}: duplicate atom: {describe_atom(atom)} appears {counts[twice[0]]} times in "
            f"one residue (alternate locations are merged on reading, so this is the same atom "
            f"listed twice, or two residues with the same number and name next to each other)"
        )
