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
from backmap_plugin.core.topology import set_insertion_code

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


def read_mmcif(path: str, handle, notes: Optional[list] = None) -> md.Trajectory:
    """Every model of an mmCIF file's atom sites (see the module's docstring).

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
        No atom_site loop, a coordinate column missing, a value that is no
        number, models of different atoms: naming the file, line and atom.
    """
    from backmap_plugin.io.loaders import choose_conformers  # (loaders reads mmCIF files with this module)

    columns, rows, cell, cut = _atom_site_rows(path, handle)
    if not rows:
        raise BackmapInputError(f"{path}: no atom_site records (no atoms)")
    model_at = _column(columns, ("pdbx_PDB_model_num",), path, required=False)
    if cut and (model_at is None or rows[-1][1][model_at] == rows[0][1][model_at]):
        # (of several models, the last one is then cut short, and left out below)
        raise BackmapInputError(f"{path}: the atom_site loop ends inside a row ({cut} of {len(columns)} values): "
                                "the file is cut short, or a row lacks values")
    xyz_at = [_column(columns, (name,), path) for name in _COORDINATES]
    at = {key: _column(columns, names, path, required=key != "number") for key, names in _CHOICES.items()}
    label_seq = _column(columns, ("label_seq_id",), path, required=False)
    label_asym = _column(columns, ("label_asym_id",), path, required=False)
    code_at = _column(columns, ("pdbx_PDB_ins_code",), path, required=False)
    alt_at = _column(columns, ("label_alt_id",), path, required=False)
    occupancy_at = _column(columns, ("occupancy",), path, required=False)
    element_at = _column(columns, ("type_symbol",), path, required=False)

    def value(row, index):
        return "" if index is None or row[index] in _NONE else row[index]

    def residue_key(row):
        return value(row, at["chain"]), value(row, at["number"]) or value(row, label_seq), value(row, code_at)

    first_model = value(rows[0][1], model_at)
    # alternate locations: each residue (of the first model) keeps one conformer
    occupancy: dict = {}
    for _, row in rows:
        alt = value(row, alt_at)
        if alt and value(row, model_at) == first_model:
            chain, number, code = residue_key(row)
            entry = occupancy.setdefault((chain, f"{number}{code}"), {}).setdefault(alt, [0.0, 0, value(
                row, at["residue"])])
            entry[0] += float(value(row, occupancy_at) or 1.0)
            entry[1] += 1
    kept = {}
    if occupancy:
        kept, note = choose_conformers(occupancy)
        if notes is not None:
            notes.append(f"{path}: {note}")

    models: dict = {}
    for line, row in rows:
        alt = value(row, alt_at)
        if alt:
            chain, number, code = residue_key(row)
            if kept.get((chain, f"{number}{code}"), alt) != alt:
                continue
        models.setdefault(value(row, model_at), []).append((line, row))
    first = next(iter(models.values()))
    topology = md.Topology()
    chain = residue = None
    previous = None
    for line, row in first:
        chain_id, number, code = residue_key(row)
        name, entity = value(row, at["residue"]), (chain_id, value(row, label_asym))
        if chain is None or entity != previous[0]:  # (chains that share an author id have label ids apart)
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
        symbol = value(row, element_at).capitalize()
        try:
            element = md.element.get_by_symbol(symbol) if symbol else None
        except KeyError:
            element = None
        topology.add_atom(value(row, at["atom"]), element, residue)
    frames = []
    sizes = {model: len(sites) for model, sites in models.items()}
    whole = list(models)
    if len(whole) > 1 and sizes[whole[-1]] < len(first) and all(sizes[m] == len(first) for m in whole[:-1]):
        if notes is not None:
            notes.append(f"{path}: read {len(whole) - 1} whole model(s); model {whole[-1]} is cut short "
                         f"({sizes[whole[-1]]} of {len(first)} atoms): a truncated file, or one still being written?")
        whole = whole[:-1]
    for model in whole:
        sites = models[model]
        if len(sites) != len(first):
            raise BackmapInputError(f"{path}: model {model} holds {len(sites)} atoms, model {whole[0]} "
                                    f"{len(first)}: the frames of a trajectory hold the same atoms")
        xyz = np.empty((len(sites), 3), dtype=np.float64)
        for k, (line, row) in enumerate(sites):
            try:
                xyz[k] = [float(row[i]) for i in xyz_at]
            except ValueError:
                atom = topology.atom(k)
                raise BackmapInputError(
                    f"{path}: line {line} (model {model}, chain {atom.residue.chain.chain_id} residue "
                    f"{atom.residue.name} {atom.residue.resSeq}, atom {atom.name}): coordinates "
                    f"{' '.join(row[i] for i in xyz_at)} are no numbers") from None
        frames.append(xyz)
    traj = md.Trajectory(np.array(frames, dtype=np.float32) / 10.0, topology)
    box = _box(cell)
    if box is not None:
        traj.unitcell_vectors = np.repeat(box[None] / 10.0, traj.n_frames, axis=0).astype(np.float32)
    return traj
