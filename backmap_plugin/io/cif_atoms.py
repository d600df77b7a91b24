"""Reading the atom sites of an mmCIF (PDBx) file into an mdtraj trajectory.

Written here rather than left to mdtraj's or OpenMM's readers, which name
chains by ``label_asym_id`` wherever a file has more label ids than author
ids (every crystal entry with ligands or water: chains E and I came out A
and B), drop insertion codes, take atoms of residues with insertion codes
for alternate locations of others where ``label_alt_id`` is ``?`` (14 of 127
residues lost), keep the first alternate location listed, read a cell's
angles as 90 degrees, and answer damaged files with a parser's exception.

Here: chains by ``auth_asym_id`` (else ``label_asym_id``; a new chain also
where ``label_asym_id`` changes, as chains that share an author id are
told apart), residues by
``auth_seq_id`` (else ``label_seq_id``) and ``pdbx_PDB_ins_code`` (kept on
the residues: :func:`~backmap_plugin.core.topology.insertion_code`), names
by ``auth_comp_id`` / ``auth_atom_id`` (else the label ones), one conformer
of each residue with alternate locations (its highest mean occupancy, as
for PDB files: :func:`~backmap_plugin.io.loaders.choose_conformers`), every
model (``pdbx_PDB_model_num``; a last model cut short is left out with a
note), the ``_cell`` as the box (the placeholder cell of 1 A of NMR and
cryo-EM entries as none). Errors name the file, the line and the atom.
Coordinates in Angstrom as the file holds them (the trajectory in nm, as
mdtraj keeps it).
"""

from __future__ import annotations

import re
from typing import Optional

import mdtraj as md
import numpy as np

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.topology import residue_number, set_insertion_code
from backmap_plugin.io.atoms import CutShortNote

#: One CIF value: quoted ('...' or "...", closed by a quote before white space) or bare.
_TOKEN = re.compile(r"""'(.*?)'(?=\s|$)|"(.*?)"(?=\s|$)|(\S+)""")
#: Values that mean "none" in CIF.
_NONE = ("?", ".")
#: The columns a file must have, and the ones read where present (the first of each pair that the file has).
_COORDINATES = ("Cartn_x", "Cartn_y", "Cartn_z")
_CHOICES = {
    "atom": ("auth_atom_id", "label_atom_id"),
    "residue": ("auth_comp_id", "label_comp_id"),
    "chain": ("auth_asym_id", "label_asym_id"),
    "number": ("auth_seq_id", "label_seq_id"),
}
#: A cell no longer than this (Angstrom) is the wwPDB's placeholder (1 x 1 x 1) of entries without a crystal
#: (NMR, cryo-EM): no box.
PLACEHOLDER_CELL = 2.0


def whole_models(path: str, sizes: list, names: list) -> tuple[int, Optional[str]]:
    """How many of a file's models to read: all, or all but a last one cut short (a killed writer), with a note.

    Parameters
    ----------
    path : str
        The file, for messages.
    sizes : list of int
        Atoms of each model, in file order.
    names : list
        Each model's name (number) for messages.

    Returns
    -------
    kept : int
        Models to read, from the first.
    note : CutShortNote or None
        Where the last model is left out, which and why.

    Raises
    ------
    BackmapInputError
        Another model holds other atoms than the first (naming both).
    """
    if all(size == sizes[0] for size in sizes):
        return len(sizes), None
    if len(sizes) > 1 and sizes[-1] < sizes[0] and all(size == sizes[0] for size in sizes[:-1]):
        return len(sizes) - 1, CutShortNote(f"{path}: read {len(sizes) - 1} whole model(s); model {names[-1]} is cut "
                                            f"short ({sizes[-1]} of {sizes[0]} atoms): a truncated file, or one still "
                                            "being written?")
    other = next(k for k, size in enumerate(sizes) if size != sizes[0])
    raise BackmapInputError(f"{path}: model {names[other]} holds {sizes[other]} atoms, model {names[0]} {sizes[0]}: "
                            "every model must hold the same atoms")


def _values(line: str) -> list:
    """The CIF values of one line."""
    return [next(g for g in m.groups() if g is not None) for m in _TOKEN.finditer(line)]


def _atom_site_rows(path: str, handle) -> tuple[list, list, dict, int]:
    """The ``_atom_site`` column names, its rows (line number, values), the file's ``_cell`` items, and the
    values of a last row cut short (0 where none is)."""
    columns, rows, cell, pending = [], [], {}, []
    state = None  # None; "loop" (after loop_); "header" (_atom_site. names); "rows"
    for number, line in enumerate(handle, start=1):
        stripped = line.strip()
        if state == "header":
            if stripped.startswith("_atom_site."):
                columns.append(stripped.split()[0][len("_atom_site."):])
                continue
            state = "rows"
        if state == "rows":
            if not stripped:
                continue
            if not stripped.startswith(("_", "loop_", "#", "data_")):
                if stripped.startswith(";"):
                    raise BackmapInputError(f"{path}: line {number}: a text field (;) in the atom_site loop, which "
                                            "this reader does not take")
                pending += _values(stripped)
                while len(pending) >= len(columns):
                    rows.append((number, pending[:len(columns)]))
                    pending = pending[len(columns):]
                continue
            state = None
        if state == "loop":
            state = None
            if stripped.startswith("_atom_site."):
                columns.append(stripped.split()[0][len("_atom_site."):])
                state = "header"
                continue
        if stripped.startswith("loop_"):
            state = "loop"
        elif stripped.startswith("_cell.") and len(stripped.split()) >= 2:
            key, item = stripped.split(None, 1)
            cell[key[len("_cell."):]] = item.strip().strip("'\"").split("(")[0]
    return columns, rows, cell, len(pending)


def _column(columns: list, names, path: str, required: bool = True) -> Optional[int]:
    """The index of the first of ``names`` among the columns (None where absent and not ``required``)."""
    for name in names:
        if name in columns:
            return columns.index(name)
    if required:
        raise BackmapInputError(f"{path}: the atom_site loop has no {' or '.join(names)} column")
    return None


def _box(cell: dict) -> Optional[np.ndarray]:
    """(3, 3) box vectors (rows, Angstrom) of a ``_cell``, or None (none, or the placeholder)."""
    try:
        lengths = [float(cell[f"length_{k}"]) for k in "abc"]
        angles = [float(cell.get(f"angle_{k}", "90")) for k in ("alpha", "beta", "gamma")]
    except (KeyError, ValueError):
        return None
    if max(lengths) <= PLACEHOLDER_CELL:
        return None
    a, b, c = md.utils.lengths_and_angles_to_box_vectors(*lengths, *angles)
    return np.array([a, b, c], dtype=np.float64)


class _Columns:
    """Where an atom_site loop holds what is read (column indices; None: absent), and each row's values."""

    def __init__(self, columns: list, path: str):
        self.xyz = [_column(columns, (name,), path) for name in _COORDINATES]
        self.at = {key: _column(columns, names, path, required=key != "number") for key, names in _CHOICES.items()}
        self.at.update({key: _column(columns, (name,), path, required=False) for key, name in (
            ("label_seq", "label_seq_id"), ("label_asym", "label_asym_id"), ("code", "pdbx_PDB_ins_code"),
            ("alt", "label_alt_id"), ("occupancy", "occupancy"), ("model", "pdbx_PDB_model_num"),
            ("element", "type_symbol"))})

    def value(self, row: list, key: str) -> str:
        """The row's value of ``key`` ('' where the column is absent or holds ``?`` / ``.``)."""
        index = self.at[key]
        return "" if index is None or row[index] in _NONE else row[index]

    def residue(self, row: list) -> tuple[str, str, str]:
        """(chain id, number, insertion code) of the row's residue."""
        return self.value(row, "chain"), self.value(row, "number") or self.value(row, "label_seq"), \
            self.value(row, "code")


def _one_conformer(rows: list, cols: _Columns, path: str, notes: Optional[list]) -> list:
    """The rows of each residue's conformer of highest mean occupancy (the first model's decide), and those of no
    alternate location; a note on what was kept (:func:`~backmap_plugin.io.loaders.choose_conformers`)."""
    from backmap_plugin.io.loaders import choose_conformers  # (loaders reads mmCIF files with this module)

    first_model = cols.value(rows[0][1], "model")
    occupancy: dict = {}
    for line, row in rows:
        alt = cols.value(row, "alt")
        if alt and cols.value(row, "model") == first_model:
            chain, number, code = cols.residue(row)
            entry = occupancy.setdefault((chain, f"{number}{code}"), {}).setdefault(
                alt, [0.0, 0, cols.value(row, "residue")])
            try:
                entry[0] += float(cols.value(row, "occupancy") or 1.0)
            except ValueError:
                raise BackmapInputError(f"{path}: line {line}: occupancy {cols.value(row, 'occupancy')!r} is no "
                                        "number") from None
            entry[1] += 1
    if not occupancy:
        return rows
    kept, note = choose_conformers(occupancy)
    if notes is not None:
        notes.append(f"{path}: {note}")

    def kept_row(row):
        chain, number, code = cols.residue(row)
        return kept.get((chain, f"{number}{code}"), cols.value(row, "alt")) == cols.value(row, "alt")

    return [(line, row) for line, row in rows if not cols.value(row, "alt") or kept_row(row)]


def _topology(sites: list, cols: _Columns, path: str) -> md.Topology:
    """The topology of one model's sites: a chain where the author or label chain id changes (chains that share an
    author id have label ids apart), a residue where its number, code or name changes."""
    topology = md.Topology()
    chain = residue = previous = None
    for line, row in sites:
        chain_id, number, code = cols.residue(row)
        name, entity = cols.value(row, "residue"), (chain_id, cols.value(row, "label_asym"))
        if chain is None or entity != previous[0]:
            chain = topology.add_chain(chain_id=chain_id)
            residue = None
        if residue is None or (entity, number, code, name) != previous:
            try:
                resseq = int(number) if number else topology.n_residues + 1
            except ValueError:
                raise BackmapInputError(f"{path}: line {line}: residue number {number!r} is no whole number") from None
            residue = topology.add_residue(name, chain, resSeq=resseq)
            set_insertion_code(residue, code)
        previous = (entity, number, code, name)
        symbol = cols.value(row, "element").capitalize()
        try:
            element = md.element.get_by_symbol(symbol) if symbol else None
        except KeyError:
            element = None
        topology.add_atom(cols.value(row, "atom"), element, residue)
    return topology


def _coordinates(sites: list, cols: _Columns, topology: md.Topology, path: str, model: str) -> np.ndarray:
    """(N, 3) Angstrom of one model's sites."""
    xyz = np.empty((len(sites), 3), dtype=np.float64)
    for k, (line, row) in enumerate(sites):
        try:
            xyz[k] = [float(row[i]) for i in cols.xyz]
        except ValueError:
            atom = topology.atom(k)
            raise BackmapInputError(
                f"{path}: line {line} (model {model}, chain {atom.residue.chain.chain_id} residue "
                f"{atom.residue.name} {residue_number(atom.residue)}, atom {atom.name}): coordinates "
                f"{' '.join(row[i] for i in cols.xyz)} are no numbers") from None
    return xyz


def read_mmcif_models(path: str, handle, notes: Optional[list] = None) -> tuple:
    """Every model of an mmCIF file's atom sites (see the module's docstring): topology, coordinates and box.

    :func:`read_mmcif` makes an mdtraj trajectory of them (``backmap run``);
    :func:`~backmap_plugin.openmm.frames.open_structure` an OpenMM topology
    and frames (``refine``, ``validate``, ``export``): both read a file alike.

    Parameters
    ----------
    path : str
        The file, for messages.
    handle : file object
        Its text (:func:`~backmap_plugin.io.loaders.open_text`).
    notes : list, optional
        Where notes go (alternate locations, a last model cut short).

    Returns
    -------
    topology : mdtraj.Topology
        Chains by author id, residues with their insertion codes, no bonds.
    xyz : numpy.ndarray
        ``(n_models, n_atoms, 3)`` float64 coordinates in Angstrom, as the file holds them.
    box : numpy.ndarray or None
        ``(3, 3)`` box vectors (rows, Angstrom) of the ``_cell``; None where
        there is none or it is the 1 A placeholder.

    Raises
    ------
    BackmapInputError
        No atom_site loop, a coordinate column missing, a value that is no
        number, models of different atoms: naming the file, line and atom.
    """
    columns, rows, cell, cut = _atom_site_rows(path, handle)
    if not rows:
        raise BackmapInputError(f"{path}: no atom_site records (no atoms)")
    cols = _Columns(columns, path)
    if cut and cols.value(rows[-1][1], "model") == cols.value(rows[0][1], "model"):
        # (of several models, the last one is then cut short, and left out below)
        raise BackmapInputError(f"{path}: the atom_site loop ends inside a row ({cut} of {len(columns)} values): "
                                "the file is cut short, or a row lacks values")
    models: dict = {}
    for line, row in _one_conformer(rows, cols, path, notes):
        models.setdefault(cols.value(row, "model"), []).append((line, row))
    names = list(models)
    topology = _topology(models[names[0]], cols, path)
    kept, note = whole_models(path, [len(models[name]) for name in names], names)
    if note and notes is not None:
        notes.append(note)
    names = names[:kept]
    xyz = np.array([_coordinates(models[name], cols, topology, path, name) for name in names], dtype=np.float64)
    return topology, xyz, _box(cell)


def read_mmcif(path: str, handle, notes: Optional[list] = None) -> md.Trajectory:
    """Every model of an mmCIF file's atom sites as an mdtraj trajectory (:func:`read_mmcif_models`).

    Parameters
    ----------
    path : str
        The file, for messages.
    handle : file object
        Its text (:func:`~backmap_plugin.io.loaders.open_text`).
    notes : list, optional
        Where notes go (alternate locations, a last model cut short).

    Returns
    -------
    mdtraj.Trajectory
        Coordinates in nm; residues carry their insertion codes.

    Raises
    ------
    BackmapInputError
        As :func:`read_mmcif_models`.
    """
    topology, xyz, box = read_mmcif_models(path, handle, notes)
    traj = md.Trajectory(xyz.astype(np.float32) / 10.0, topology)
    if box is not None:
        traj.unitcell_vectors = np.repeat(box[None] / 10.0, traj.n_frames, axis=0).astype(np.float32)
    return traj
