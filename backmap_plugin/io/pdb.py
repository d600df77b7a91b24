"""The PDB writer of :class:`backmap_plugin.io.trajectory.TrajectoryWriter`.

Fixed-column records: SSBOND for the topology's disulfides, CRYST1 where
frames have a box (one per model), MODEL/ENDMDL (only for more than one
frame), TER at every chain end, CONECT for the disulfides, END. Written here
rather than by mdtraj/OpenMM,
because those drop insertion codes (residues 82, 82A and 82B then merge into
one residue on reading), and mdtraj writes negative residue numbers modulo
10000 and CONECT records that can point at the wrong atoms.
"""

from __future__ import annotations

from typing import Optional

import mdtraj as md
import numpy as np

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.pbc import box_lengths_and_angles
from backmap_plugin.core.topology import residue_number
from backmap_plugin.io.atomic import atomic_write
from backmap_plugin.io.atoms import describe_atom, element_symbol
from backmap_plugin.io.chains import input_chain_id, insertion_codes
from backmap_plugin.io.text_output import TextBackend, open_partial_text


class PdbBackend(TextBackend):
    """Fixed-column PDB writer: SSBOND, CRYST1, MODEL/ENDMDL, TER at chain ends, CONECT of disulfides, END.

    The disulfides (SG-SG bonds of the topology) are written as SSBOND
    records before the first model and as CONECT records after the last
    (mdtraj and MDAnalysis read bonds from CONECT only; OpenMM also finds
    them by distance). A frame's box is a CRYST1 record before its model.

    Parameters
    ----------
    partial : str
        The file to write frames into.
    topology : mdtraj.Topology
        Topology of every frame.
    path : str
        The final output, for messages.
    resume : dict, optional
        State of an interrupted writer to continue (:meth:`state` plus
        ``frames``); a single kept model starts over.
    append : bool, optional
        Continue the file ``partial`` (one this writer wrote for the same
        topology: its ATOM records must match, column for column up to the
        coordinates); its whole models are kept, also where a killed process
        left it without END or with a model cut short. A single structure
        without MODEL records becomes model 1.

    Attributes
    ----------
    kept : int
        Frames kept from the resumed file.
    notes : list of str
        What was left out on the way: residue numbers and atom serials
        written modulo what their columns hold (:func:`_wrapped_numbers`); a
        box too large for the CRYST1 columns (:data:`MAX_CRYST1_LENGTH`) is
        not written.
    """

    def __init__(self, partial: str, topology: md.Topology, path: str, resume: Optional[dict] = None,
                 append: bool = False):
        self._path = path
        self._prefix, self._suffix, self._ter_after, where = self._atom_fields(topology, path)
        self._ssbond, self._conect = self._disulfide_records(topology, where)
        self._first_offset = None
        self._first_frame = None
        self._first_box = None
        self.notes: list = _wrapped_numbers(topology, path)
        if append:
            resume = self._append_state(partial)
        # a single kept model would have to be rewritten without MODEL at the end: start over instead
        if resume is not None and resume["frames"] >= 2 or append:
            self._file = open_partial_text(partial, "ascii", resume)
            self.kept = resume["frames"]
        else:
            self._file = open_partial_text(partial, "ascii")
            self._file.write(self._ssbond)
            self.kept = 0

    @staticmethod
    def _disulfide_records(topology, where) -> tuple[str, str]:
        """SSBOND and CONECT lines of the topology's SG-SG bonds (``where``: atom index -> (serial, chain id,
        residue number, insertion code)); no CONECT in a file of more than 99,999 atoms, whose serials wrap (a
        reader would bond the later atom of the same serial)."""
        ssbond, conect = [], []
        serials_unique = topology.n_atoms <= 99999
        for a, b in topology.bonds:
            if a.name != "SG" or b.name != "SG":
                continue
            (sa, ca, na, ia), (sb, cb, nb, ib) = where[a.index], where[b.index]
            ssbond.append(f"SSBOND {len(ssbond) + 1:3d} CYS {ca} {na:4d}{ia}   CYS {cb} {nb:4d}{ib}\n")
            if serials_unique:
                conect += [f"CONECT{sa:5d}{sb:5d}\n", f"CONECT{sb:5d}{sa:5d}\n"]
        return "".join(ssbond), "".join(conect)

    @staticmethod
    def _atom_fields(topology, path):
        """Columns 1-30 and 55-80 of every ATOM line, the TER lines, and each atom's (serial, chain id, residue
        number, insertion code)."""
        prefix, suffix, ter_after, where = [], [], {}, {}
        serial = 0
        for chain in topology.chains:
            chain_id = chain.chain_id
            if chain_id is None or chain_id == "":
                chain_id = input_chain_id(chain.index)
            if len(chain_id) != 1:
                raise BackmapInputError(
                    f"{path}: chain id {chain_id!r} (chain #{chain.index}) does not fit the one-character "
                    f"PDB chain column; write .cif instead"
                )
            codes = insertion_codes(chain, path)
            last_atom = None
            for residue, code in zip(chain.residues, codes):
                name = residue.name
                if len(name) > 4:
                    raise BackmapInputError(
                        f"{path}: residue name {name!r} (chain {chain_id!r} residue {residue_number(residue)}) is "
                        f"longer than the 4 characters PDB allows; write .cif instead"
                    )
                res_field = f"{name:>3} " if len(name) <= 3 else name
                number = residue.resSeq if -999 <= residue.resSeq <= 9999 else residue.resSeq % 10000
                for atom in residue.atoms:
                    serial += 1
                    symbol = element_symbol(atom)
                    if len(atom.name) > 4:
                        raise BackmapInputError(
                            f"{path}: atom name {atom.name!r} ({describe_atom(atom)}) is longer than the "
                            f"4 characters PDB allows; write .cif instead"
                        )
                    if len(atom.name) < 4 and atom.name[:1].isalpha() and len(symbol) < 2:
                        atom_field = f" {atom.name:<3}"
                    else:
                        atom_field = f"{atom.name:<4}"
                    charge = getattr(atom, "formal_charge", None)
                    charge_field = f"{abs(charge)}{'-' if charge < 0 else '+'}" if charge else "  "
                    segment = (residue.segment_id or "")[:4]
                    prefix.append(
                        f"ATOM  {serial % 100000:5d} {atom_field} {res_field}{chain_id}{number:4d}{code}   "
                    )
                    where[atom.index] = (serial, chain_id, number, code)
                    suffix.append(f"  1.00  0.00      {segment:<4}{symbol.upper():>2}{charge_field}\n")
                    last_atom = len(prefix) - 1
                    last = (res_field, number, code)
            if last_atom is not None:
                serial += 1
                res_field, number, code = last
                ter_after[last_atom] = f"TER   {serial % 100000:5d}      {res_field}{chain_id}{number:4d}{code}\n"
        return prefix, suffix, ter_after, where

    def _append_state(self, partial: str) -> dict:
        """The resume state (``frames``, ``offset`` after the last whole model) of a file to append to.

        A file that a killed reporter left (no END, a model cut short) keeps
        its whole models; a file of one structure (no MODEL records) is
        rewritten as model 1 first.
        """
        with open(partial, encoding="ascii", newline="\n") as handle:
            lines = handle.readlines()
        finished = bool(lines) and lines[-1] == "END\n"
        body = lines[:-1] if finished else lines
        while body and body[-1].startswith("CONECT"):  # (written again when the file is finished)
            body.pop()
        models = sum(line.startswith("MODEL ") for line in body)
        if models:  # whole models only: up to the last ENDMDL
            last = max(k for k, line in enumerate(body) if line == "ENDMDL\n") if "ENDMDL\n" in body else -1
            body = body[: last + 1]
            models = sum(line == "ENDMDL\n" for line in body)
        atoms = [line for line in body if line.startswith("ATOM  ")]
        n_atoms = len(self._prefix)
        kinds = {line[:6] for line in body}
        if (not body or not (models or finished) or kinds - {"ATOM  ", "TER   ", "MODEL ", "ENDMDL", "SSBOND", "CRYST1"}
                or len(atoms) != n_atoms * max(models, 1)):
            raise BackmapInputError(
                f"{self._path}: cannot append: the file is not a PDB trajectory written for this topology "
                f"({n_atoms} atoms a model, {len(atoms)} ATOM records in {max(models, 1)} whole model(s))"
            )
        for i, (line, prefix) in enumerate(zip(atoms, self._prefix)):
            if line[:30] != prefix:
                raise BackmapInputError(
                    f"{self._path}: cannot append: atom {i + 1} is {line[:30].strip()!r} in the file and "
                    f"{prefix.strip()!r} in the topology written now"
                )
        if not models:  # one structure: it becomes model 1 (its box record before it)
            head = [line for line in body if line.startswith(("SSBOND", "CRYST1"))]
            body = [line for line in head if line.startswith("SSBOND")] + [
                line for line in head if line.startswith("CRYST1")] + ["MODEL        1\n"] + [
                line for line in body if not line.startswith(("SSBOND", "CRYST1"))] + ["ENDMDL\n"]
            with atomic_write(partial, newline="\n") as handle:
                handle.write("".join(body) + "END\n")
        return {"frames": max(models, 1), "offset": sum(len(line) for line in body)}

    def check(self, xyz: np.ndarray, topology, first_frame: int) -> None:
        """Coordinates must fit the 8.3f columns."""
        bad = (xyz <= -999.9995) | (xyz >= 9999.9995)
        if bad.any():
            frame, atom_index, _ = (int(i) for i in np.argwhere(bad)[0])
            raise BackmapInputError(
                f"{self._path}: frame {first_frame + frame} coordinate {xyz[frame, atom_index].tolist()} of "
                f"{describe_atom(topology.atom(atom_index))} does not fit the PDB coordinate columns "
                f"(-999.999 to 9999.999 Angstrom); write .cif, .dcd or .xtc instead"
            )

    def _model_text(self, frame: np.ndarray) -> str:
        lines = []
        for i, (x, y, z) in enumerate(frame.tolist()):
            lines.append(f"{self._prefix[i]}{x:8.3f}{y:8.3f}{z:8.3f}{self._suffix[i]}")
            if i in self._ter_after:
                lines.append(self._ter_after[i])
        return "".join(lines)

    def write(self, xyz: np.ndarray, first_frame: int, box=None, time=None, step=None) -> None:
        """Append frames ``first_frame, ...`` (Angstrom), each a MODEL after its box's CRYST1 record (box vectors
        in Angstrom, where given), and flush (times and steps not kept)."""
        for k, frame in enumerate(xyz):
            index = first_frame + k
            cryst1 = "" if box is None else self._cryst1(box[k], index)
            if index == 0:
                self._first_offset = self._file.tell()
                self._first_frame = frame.copy()
                self._first_box = cryst1
            self._file.write(f"{cryst1}MODEL     {index % 9999 + 1:4d}\n{self._model_text(frame)}ENDMDL\n")
        self._file.flush()

    def _cryst1(self, box: np.ndarray, index: int) -> str:
        """The CRYST1 record of frame ``index``'s box (:func:`cryst1_record`); '' with a note (the first time) where
        its lengths do not fit the columns."""
        record = cryst1_record(box)
        if record is None and not self.notes:
            lengths = " x ".join(f"{v:.0f}" for v in box_lengths_and_angles(box)[0].tolist())
            self.notes.append(
                f"{self._path}: the periodic box ({lengths} A, first in frame {index}) does not fit the PDB CRYST1 "
                f"record (edges up to {MAX_CRYST1_LENGTH:.3f} A): no CRYST1 record is written for such boxes (a box "
                "this large makes the run all but non-periodic); write .cif, .dcd, .xtc or .h5 to keep it"
            )
        return record or ""

    def finish(self, n_frames: int) -> None:
        """Write the disulfides' CONECT records and END (dropping MODEL/ENDMDL of a single frame) and close the
        file."""
        if n_frames == 1 and self._first_frame is not None:  # a single structure has no MODEL record
            self._file.seek(self._first_offset)
            self._file.truncate()
            self._file.write(self._first_box + self._model_text(self._first_frame))
        self._file.write(self._conect + "END\n")
        self._file.close()


#: The longest box edge (Angstrom) a CRYST1 record's 9.3f columns hold.
MAX_CRYST1_LENGTH = 99999.999


def _wrapped_numbers(topology: md.Topology, path: str) -> list:
    """Notes on the residue numbers (outside -999 ... 9999) and atom serials (above 99,999) a PDB file can only
    hold modulo 10,000 and 100,000, as the writer writes them (VMD's and OpenMM's convention; readers that count
    on take them back, others read the numbers as written)."""
    notes = []
    wrapped = [r for r in topology.residues if not -999 <= r.resSeq <= 9999]
    if wrapped:
        first = wrapped[0]
        notes.append(f"{path}: {len(wrapped)} residue number(s) outside -999 ... 9999 (first: chain "
                     f"{first.chain.chain_id or '?'} residue {first.name} {residue_number(first)}) written modulo "
                     "10000, as the PDB format's 4 columns hold; write .cif to keep them")
    if topology.n_atoms > 99999:
        notes.append(f"{path}: {topology.n_atoms} atoms: serials above 99999 written modulo 100000, and no CONECT "
                     "records (they would name the wrong atoms); write .cif to keep them")
    return notes


def cryst1_record(box: np.ndarray) -> Optional[str]:
    """The CRYST1 record of (3, 3) box vectors (rows, Angstrom), space group P 1.

    Parameters
    ----------
    box : numpy.ndarray
        ``(3, 3)`` box vectors (rows), Angstrom.

    Returns
    -------
    str or None
        The line; None where an edge does not fit its 9 columns (from
        100,000 Angstrom on, as a HOOMD or LAMMPS run of one chain in a huge
        box writes: the fields ran together and no reader could parse the
        file).
    """
    (a, b, c), (alpha, beta, gamma) = (values.tolist() for values in box_lengths_and_angles(box))
    if not all(-9999.9995 < v < MAX_CRYST1_LENGTH + 0.0005 for v in (a, b, c)):
        return None
    return f"CRYST1{a:9.3f}{b:9.3f}{c:9.3f}{alpha:7.2f}{beta:7.2f}{gamma:7.2f} P 1           1\n"


def check_pdb_topology(topology: md.Topology, path: str) -> None:
    """Raise, before any frame, where ``topology`` does not fit PDB's columns (chain ids of more than one character,
    residue or atom names of more than four), as :class:`PdbBackend` would when it opens ``path``."""
    PdbBackend._atom_fields(topology, path)
