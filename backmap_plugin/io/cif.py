"""The mmCIF writer of :class:`backmap_plugin.io.trajectory.TrajectoryWriter`.

Written here rather than by OpenMM, whose mmCIF writer puts author residue
numbers into ``label_seq_id``, which makes multi-model files unreadable when
a number repeats in a chain.
"""

from __future__ import annotations

import os
import re
from typing import Optional

import mdtraj as md
import numpy as np

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.pbc import box_lengths_and_angles
from backmap_plugin.io.atoms import element_symbol
from backmap_plugin.io.chains import generated_chain_id, insertion_codes
from backmap_plugin.io.text_output import TextBackend, open_partial_text


def cif_token(value: str) -> str:
    """Quote a value for an mmCIF loop when needed.

    Parameters
    ----------
    value : str
        A name or id.

    Returns
    -------
    str
        ``?`` for an empty value; the value in quotes when it holds white
        space, starts with a reserved character or is ``.`` or ``?``; else
        the value itself.
    """
    if value == "":
        return "?"
    if re.search(r"\s", value) or value[0] in "_#$;[]'\"" or value in (".", "?"):
        return f'"{value}"' if "'" in value else f"'{value}'"
    return value


class CifBackend(TextBackend):
    """Minimal mmCIF writer: one ``atom_site`` loop, one model per frame.

    ``label_asym_id``/``label_seq_id`` are unique per chain/residue (as the
    format requires) while ``auth_asym_id``/``auth_seq_id`` and
    ``pdbx_PDB_ins_code`` keep the topology's chain ids and residue numbers.

    Parameters
    ----------
    partial : str
        The file to write frames into.
    topology : mdtraj.Topology
        Topology of every frame.
    path : str
        The final output (names the data block), for messages.
    resume : dict, optional
        State of an interrupted writer to continue (:meth:`state` plus
        ``frames``).
    append : bool, optional
        Continue the file ``partial`` (one this writer wrote for the same
        topology: its header and atom records must match up to the
        coordinates); its whole models are kept, also where a killed
        process left it unclosed or with a model cut short.

    Attributes
    ----------
    kept : int
        Frames kept from the resumed file.
    """

    _COLUMNS = (
        "group_PDB", "id", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id",
        "label_asym_id", "label_entity_id", "label_seq_id", "pdbx_PDB_ins_code", "Cartn_x",
        "Cartn_y", "Cartn_z", "occupancy", "B_iso_or_equiv", "auth_seq_id", "auth_comp_id",
        "auth_asym_id", "auth_atom_id", "pdbx_PDB_model_num",
    )

    def __init__(self, partial: str, topology: md.Topology, path: str, resume: Optional[dict] = None,
                 append: bool = False):
        chain_ids = [chain.chain_id for chain in topology.chains]
        usable = all(cid and cid.strip() for cid in chain_ids)
        unique = usable and len(set(chain_ids)) == len(chain_ids)
        self._prefix, self._suffix = [], []
        where = {}  # atom index -> (label_asym_id, comp, label_seq_id, atom name, auth_asym_id, auth_seq_id, code)
        serial = 0
        for chain in topology.chains:
            label = chain.chain_id if unique else generated_chain_id(chain.index)
            author = chain.chain_id if chain.chain_id and chain.chain_id.strip() else label
            for seq, (residue, code) in enumerate(zip(chain.residues, insertion_codes(chain, path)), start=1):
                comp = cif_token(residue.name)
                icode = "?" if code == " " else code
                for atom in residue.atoms:
                    serial += 1
                    name = cif_token(atom.name)
                    symbol = element_symbol(atom) or "?"
                    self._prefix.append(
                        f"ATOM {serial} {symbol} {name} . {comp} {cif_token(label)} ? {seq} {icode} "
                    )
                    self._suffix.append(f" 1.00 0.00 {residue.resSeq} {comp} {cif_token(author)} {name} ")
                    where[atom.index] = (cif_token(label), comp, seq, name, cif_token(author), residue.resSeq, icode)
        stem = re.sub(r"\.(cif|mmcif)$", "", os.path.basename(path), flags=re.IGNORECASE)
        block = re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "backmap"
        header = [f"data_{block}", "#", f"_entry.id {block}", "#"] + _struct_conn(topology, where) + ["loop_"]
        header = "\n".join(header + [f"_atom_site.{column}" for column in self._COLUMNS]) + "\n"
        cell = None if resume is None else resume.get("cell")
        self._cell = None if cell is None else np.asarray(cell, dtype=np.float64)  # the first frame's box
        if append:
            resume = self._append_state(partial, path, header)
        self.kept = 0 if resume is None else resume["frames"]
        if self.kept:
            self._file = open_partial_text(partial, "utf-8", resume)
            return
        self._file = open_partial_text(partial, "utf-8")
        self._file.write(header)
        self._file.flush()

    def _append_state(self, partial: str, path: str, header: str) -> dict:
        """The resume state (``frames``, ``offset`` after the last whole model) of a file to append to; a file that
        a killed process left (no closing ``#``, a model cut short) keeps its whole models."""
        with open(partial, encoding="utf-8", newline="\n") as handle:
            text = handle.read()
        n_atoms = len(self._prefix)
        lines = text[len(header):].splitlines(keepends=True)
        while lines and not lines[-1].startswith("ATOM "):  # the loop's closing # and the _cell after it
            lines.pop()
        frames = len(lines) // max(n_atoms, 1)
        lines = lines[: frames * n_atoms]  # whole models only
        # each model's first and last atom carry its number
        numbers = [lines[k * n_atoms + end].split()[-1] for k in range(frames) for end in (0, n_atoms - 1)]
        if not text.startswith(header) or not frames or numbers != [str(k // 2 + 1) for k in range(2 * frames)]:
            raise BackmapInputError(
                f"{path}: cannot append: the file is not an mmCIF trajectory written for this topology "
                f"({n_atoms} atoms a model)"
            )
        for i, (line, prefix, suffix) in enumerate(zip(lines, self._prefix, self._suffix)):
            fields = line.split()
            if fields[:10] + fields[13:19] != (prefix + suffix).split():
                raise BackmapInputError(
                    f"{path}: cannot append: atom {i + 1} is {' '.join(fields[:10])!r} in the file and "
                    f"{prefix.strip()!r} in the topology written now"
                )
        return {"frames": frames, "offset": len(header.encode("utf-8")) + sum(len(x.encode("utf-8")) for x in lines)}

    def state(self) -> dict:
        """Where the file is complete, and the first frame's box (its ``_cell``, written at the end)."""
        return {**super().state(), "cell": None if self._cell is None else self._cell.tolist()}

    def check(self, xyz, topology, first_frame) -> None:
        """mmCIF has no column limits."""

    def write(self, xyz: np.ndarray, first_frame: int, box=None, time=None, step=None) -> None:
        """Append frames ``first_frame, ...`` (Angstrom), one model each, and flush (times and steps not kept; the
        first box written is the file's ``_cell``)."""
        if box is not None and self._cell is None:
            self._cell = box[0]
        for k, frame in enumerate(xyz):
            model = first_frame + k + 1
            self._file.write("".join(
                f"{self._prefix[i]}{x:.3f} {y:.3f} {z:.3f}{self._suffix[i]}{model}\n"
                for i, (x, y, z) in enumerate(frame.tolist())
            ))
        self._file.flush()

    def finish(self, n_frames: int) -> None:
        """Close the ``atom_site`` loop, write the ``_cell`` of the box (where frames had one) and close the file."""
        self._file.write("#\n")
        if self._cell is not None:
            cell = np.concatenate(box_lengths_and_angles(self._cell))
            names = ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")
            self._file.write("".join(f"_cell.{n} {v:.3f}\n" for n, v in zip(names, cell.tolist())) + "#\n")
        self._file.close()


def _struct_conn(topology: md.Topology, where: dict) -> list:
    """The ``struct_conn`` loop of the topology's SG-SG bonds (disulfides), as lines ([] when none): OpenMM's
    PDBx reader bonds them from it (it does not find disulfides by distance), ParmEd from its author columns (with
    the insertion codes, which tell CYS 82 from CYS 82A)."""
    rows = []
    for a, b in topology.bonds:
        if a.name == "SG" and b.name == "SG":
            (la, ca, sa, na, aa, ra, ia), (lb, cb, sb, nb, ab, rb, ib) = where[a.index], where[b.index]
            rows.append(f"disulf{len(rows) + 1} disulf {la} {ca} {sa} {na} {lb} {cb} {sb} {nb} {aa} {ca} {ra} {na} "
                        f"{ab} {cb} {rb} {nb} {ia} {ib}")
    if not rows:
        return []
    columns = ("id", "conn_type_id", "ptnr1_label_asym_id", "ptnr1_label_comp_id", "ptnr1_label_seq_id",
               "ptnr1_label_atom_id", "ptnr2_label_asym_id", "ptnr2_label_comp_id", "ptnr2_label_seq_id",
               "ptnr2_label_atom_id", "ptnr1_auth_asym_id", "ptnr1_auth_comp_id", "ptnr1_auth_seq_id",
               "ptnr1_auth_atom_id", "ptnr2_auth_asym_id", "ptnr2_auth_comp_id", "ptnr2_auth_seq_id",
               "ptnr2_auth_atom_id", "pdbx_ptnr1_PDB_ins_code", "pdbx_ptnr2_PDB_ins_code")
    return ["loop_"] + [f"_struct_conn.{column}" for column in columns] + rows + ["#"]
