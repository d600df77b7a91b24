"""Loading with mdtraj: whole structure files (mmCIF with this package's reader), topologies, the atom count of
a trajectory, box vectors."""

from __future__ import annotations

import gzip
import itertools
import os
import tempfile
import warnings
from collections import Counter
from typing import Optional

import mdtraj as md
import numpy as np

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.io import mdtraj_files
from backmap_plugin.io.atoms import CutShortNote
from backmap_plugin.io.chains import set_insertion_codes
from backmap_plugin.io.cif_atoms import PLACEHOLDER_CELL, read_mmcif
from backmap_plugin.io.mdtraj_files import open_file
from backmap_plugin.io.paths import MMCIF, PDB, match_extension
from backmap_plugin.io.tpr import load_tpr_topology


def open_text(path: str):
    """A text file for reading, gunzipped where its name ends in ``.gz`` (any case); undecodable bytes are replaced."""
    if match_extension(path, (".gz",)):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def pdb_model_boxes(path: str, n_models: int) -> Optional[np.ndarray]:
    """Box vectors of each model of a PDB file whose models have boxes of their own, else None.

    A CRYST1 record holds for the models after it, up to the next one
    (``gmx trjconv`` writes one before every model, as this package's writer
    does). mdtraj's and OpenMM's readers give every model the file's last
    CRYST1 box: in a constant-pressure run that shifted the periodic images
    of later frames by the box's change.

    Parameters
    ----------
    path : str
        A PDB file (gzipped where it ends in ``.gz``).
    n_models : int
        The models read from it: boxes are returned only for as many.

    Returns
    -------
    numpy.ndarray or None
        ``(n_models, 3, 3)`` ``float32`` box vectors (rows, Angstrom); None
        where the file has fewer than two CRYST1 records or they do not
        cover its models.
    """
    boxes, current, n_cryst1 = [], None, 0
    with open_text(path) as handle:
        for line in handle:
            if line.startswith("CRYST1"):
                current = cryst1_box(line)
                if current is None:
                    return None
                n_cryst1 += 1
            elif line.startswith("MODEL"):
                boxes.append(current)
    if n_cryst1 < 2 or len(boxes) < n_models or any(box is None for box in boxes[:n_models]):
        return None
    return np.array(boxes[:n_models], dtype=np.float32)


def cryst1_box(line: str) -> Optional[np.ndarray]:
    """Box vectors (rows, Angstrom; float64 (3, 3)) of a PDB CRYST1 record, None where it is unreadable or the
    placeholder of NMR and cryo-EM entries (1 x 1 x 1 A: :data:`~backmap_plugin.io.cif_atoms.PLACEHOLDER_CELL`)."""
    try:
        lengths_angles = [float(line[i:j]) for i, j in ((6, 15), (15, 24), (24, 33), (33, 40), (40, 47), (47, 54))]
    except ValueError:
        return None
    if max(lengths_angles[:3]) <= PLACEHOLDER_CELL:
        return None
    return np.array(md.utils.lengths_and_angles_to_box_vectors(*lengths_angles), dtype=np.float64)


def _pdb_models_read(path: str) -> tuple[list, bool]:
    """The MODEL records of a (possibly gzipped) PDB file, ``[line, ENDMDL line or None, atoms]`` each, and whether
    it has an END record."""
    models, ended = [], False
    with open_text(path) as handle:
        for i, line in enumerate(handle):
            if line.startswith("MODEL"):
                models.append([i, None, 0])
            elif models and line.startswith(("ATOM", "HETATM")):
                models[-1][2] += 1
            elif models and line.startswith("ENDMDL"):
                models[-1][1] = i
            elif line.rstrip() == "END":
                ended = True
    return models, ended


def cut_model_note(n_atoms: int) -> str:
    """The note on a PDB file of one MODEL without ENDMDL or END (``n_atoms`` read)."""
    return (f"model 1 has no ENDMDL and the file no END ({n_atoms} atoms read): a truncated file, or one still "
            "being written? (how much is missing cannot be told)")


def single_model_cut(path: str) -> Optional[str]:
    """:func:`cut_model_note` where the (possibly gzipped) PDB file ``path`` holds one MODEL without ENDMDL or END
    (cut short, or still being written); else None."""
    models, ended = _pdb_models_read(path)
    return cut_model_note(models[0][2]) if _one_model_cut(models, ended) else None


def _one_model_cut(models: list, ended: bool) -> bool:
    """Whether :func:`_pdb_models_read` found one MODEL with atoms, no ENDMDL and no END."""
    return len(models) == 1 and models[0][1] is None and not ended and models[0][2] > 0


def pdb_whole_models(path: str) -> Optional[tuple]:
    """``(text, note)``: the whole models of a multi-model PDB file whose last model is cut short (no ENDMDL,
    fewer atoms than the others, which all hold as many), and what was left out (a
    :class:`~backmap_plugin.io.atoms.CutShortNote`); the whole text of a file of one model without ENDMDL or END
    (:func:`single_model_cut`: how much is missing cannot be told), and a note saying so; else None. Notes and
    errors name the file and count models as frames, from 0 (as every message does), with the line of their
    MODEL record.

    Parameters
    ----------
    path : str
        A (possibly gzipped) PDB file, read line by line (its text is kept only where a model is cut).

    Returns
    -------
    tuple of (str, str) or None

    Raises
    ------
    BackmapInputError
        Whole models hold different numbers of atoms (naming two).
    """
    models, ended = _pdb_models_read(path)
    if _one_model_cut(models, ended):
        with open_text(path) as handle:
            return handle.read(), f"{path}: {cut_model_note(models[0][2])}"
    if len(models) < 2 or any(m[1] is None for m in models[:-1]):
        return None
    size, last = models[0][2], models[-1]
    whole = models if last[1] is not None else models[:-1]
    other = next((k for k, m in enumerate(whole) if m[2] != size), None)
    if other is not None:
        raise BackmapInputError(f"{path}: its models hold different numbers of atoms (frame 0: {size}, frame {other}: "
                                f"{models[other][2]}, the MODEL on line {models[other][0] + 1}); the frames of a "
                                "trajectory hold the same atoms")
    if last[1] is not None or last[2] >= size:
        return None
    n_whole = len(models) - 1
    read = "frame 0" if n_whole == 1 else f"frames 0-{n_whole - 1}"
    note = CutShortNote(f"{path}: read {n_whole} whole model(s) ({read}); frame {n_whole} (the MODEL on line "
                        f"{last[0] + 1}) is cut short ({last[2]} of {size} atoms): a truncated file, or one still "
                        "being written?")
    with open_text(path) as handle:
        return "".join(itertools.islice(handle, last[0])) + "END\n", note


def _pdb_has_atoms(path: str) -> bool:
    """Whether a (possibly gzipped) PDB file has an ATOM or HETATM record."""
    try:
        with open_text(path) as handle:
            return any(line.startswith(("ATOM", "HETATM")) for line in handle)
    except OSError:
        return True  # unreadable: let the parser's own message through


def _short_atom_line(path: str) -> Optional[int]:
    """The number (from 1) of a (possibly gzipped) PDB file's first ATOM / HETATM line too short to hold its
    coordinates (columns 31-54), or None."""
    try:
        with open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                if line.startswith(("ATOM", "HETATM")) and len(line.rstrip("\r\n")) < 54:
                    return number
    except OSError:
        pass
    return None


#: Residue names that carry a protonation state (or a disulfide) and that mdtraj's PDB reader replaces by the
#: standard name as it reads them.
PROTONATION_NAMES = {"HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS",
                     "HIH": "HIS", "HSH": "HIS", "CYX": "CYS"}


def protonation_note(path: str) -> Optional[str]:
    """A note naming the residue names of a (possibly gzipped) PDB file that say a protonation state, which reading
    drops (:data:`PROTONATION_NAMES`), or None."""
    found = set()
    try:
        with open_text(path) as handle:
            for line in handle:
                if line.startswith(("ATOM", "HETATM")) and line[17:21].strip() in PROTONATION_NAMES:
                    found.add(line[17:21].strip())
    except OSError:
        return None
    if not found:
        return None
    read_as = ", ".join(f"{name} as {PROTONATION_NAMES[name]}" for name in sorted(found))
    return (f"{path}: residue names that say a protonation state or a disulfide are read as standard residues "
            f"({read_as}): the output names standard residues, and refine protonates at its pH (--ph)")


def load_whole(path: str, ext: str, notes: Optional[list] = None) -> md.Trajectory:
    """Load a whole structure file with mdtraj (mmCIF with this package's reader).

    An mmCIF file is read by :func:`~backmap_plugin.io.cif_atoms.read_mmcif`
    (author chain ids and numbers, insertion codes, one conformer of each
    residue, a last model cut short left out). A multi-model PDB file
    whose last model is cut short (a run killed while writing it) gives
    its whole models, with a note; models with CRYST1 records of their own
    keep their boxes (:func:`pdb_model_boxes`). Of a PDB file's alternate
    locations each residue keeps its conformer of highest occupancy, with a
    note (:func:`one_conformer`; mdtraj and OpenMM keep the first listed).

    Parameters
    ----------
    path : str
        A PDB (:data:`~backmap_plugin.io.paths.PDB`: ``.pdb`` or ``.ent``), mmCIF or GRO file (gzipped
        where the extension says so).
    ext : str
        Its extension, from :func:`backmap_plugin.io.paths.check_input_file`.
    notes : list, optional
        Where notes on a model cut short and on alternate locations go.

    Returns
    -------
    mdtraj.Trajectory
        Every model of the file (nm, as mdtraj keeps them).

    Raises
    ------
    BackmapInputError
        The file has no atoms or cannot be parsed.
    """
    if ext in MMCIF:
        with open_text(path) as handle:
            return read_mmcif(path, handle, notes)
    try:
        with warnings.catch_warnings():
            # one warning per residue: the residues are read apart later, with one note (split_merged_residues)
            warnings.filterwarnings("ignore", message=".*two consecutive residues with same number")
            if ext in PDB:
                return _load_pdb(path, path, notes)
            if ext == ".gro":
                return md.formats.gro.load_gro(path)  # md.load reads a GRO file's topology twice
            return md.load(path)
    except Exception as exc:  # mdtraj raises many types; keep its message
        if ext in PDB and not _pdb_has_atoms(path):
            raise BackmapInputError(f"{path}: is empty: no ATOM/HETATM records") from exc
        short = _short_atom_line(path) if ext in PDB else None
        whole = pdb_whole_models(path) if ext in PDB else None
        try:
            if whole is not None:
                text, note = whole
                with tempfile.TemporaryDirectory() as scratch:
                    cut = os.path.join(scratch, "whole_models.pdb")
                    with open(cut, "w") as handle:
                        handle.write(text)
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message=".*two consecutive residues with same number")
                        traj = _load_pdb(cut, path, notes)
                if notes is not None:
                    notes.append(note)
                return traj
        except Exception:  # (the whole models hold the line cut short too: said below)
            if short is None:
                raise
        if short is not None:
            raise BackmapInputError(f"{path}: line {short} is an atom record cut short (its coordinates need columns "
                                    "31-54): a truncated or damaged file?") from exc
        raise BackmapInputError(f"{path}: cannot be read as {ext}: {type(exc).__name__}: {exc}") from exc


def pdb_insertion_codes(path: str, n_residues: int) -> Optional[list]:
    """The insertion codes of the residues of a PDB file's first model, in the order mdtraj reads them.

    mdtraj reads the codes to tell residues apart and then drops them. A
    residue starts where the chain, number or code changes, or the name does
    outside alternate locations (mdtraj's rule). Only letters count as codes:
    a digit in that column is the fifth digit of a residue number written
    past its columns.

    Parameters
    ----------
    path : str
        The (possibly gzipped) PDB file.
    n_residues : int
        The residues mdtraj read from it.

    Returns
    -------
    list of str or None
        One code per residue ('' for none); None where the file has no codes or
        its residues, counted so, are not ``n_residues``.
    """
    codes, previous = [], None
    with open_text(path) as handle:  # (streamed: big files)
        for line in handle:
            if line.startswith("ENDMDL"):
                break
            if not line.startswith(("ATOM", "HETATM")):
                continue
            line = line.ljust(27)
            key, name = (line[21], line[22:26], line[26]), line[17:20]
            if previous is None or key != previous[0] or (name != previous[1] and line[16] == " "):
                codes.append(line[26] if line[26].isalpha() else "")
            previous = key, name
    return codes if any(codes) and len(codes) == n_residues else None


def _mdtraj_pdb(path: str) -> md.Trajectory:
    """mdtraj's reading of a PDB file, without its warning on the placeholder CRYST1 record (1 x 1 x 1 A) of NMR
    and cryo-EM entries, which it discards, as a box of none; its residues keep their insertion codes
    (:func:`pdb_insertion_codes`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unlikely unit cell vectors detected")
        traj = md.load_pdb(path)
    codes = pdb_insertion_codes(path, traj.topology.n_residues)
    if codes is not None:
        set_insertion_codes(traj.topology, codes)
    return traj


def _load_pdb(path: str, name: str, notes: Optional[list]) -> md.Trajectory:
    """A PDB file (``name`` in notes) read by mdtraj (``md.load`` would parse it twice), one conformer of each
    residue with alternate locations (:func:`one_conformer`), each model with its box (:func:`_with_model_boxes`)."""
    cut = single_model_cut(path)
    if cut is not None and notes is not None:
        notes.append(f"{name}: {cut}")
    picked = one_conformer(path)
    if picked is None:
        return _with_model_boxes(_mdtraj_pdb(path), path)
    text, note = picked
    with tempfile.TemporaryDirectory() as scratch:
        one = os.path.join(scratch, "one_conformer.pdb")
        with open(one, "w") as handle:
            handle.write(text)
        traj = _with_model_boxes(_mdtraj_pdb(one), one)
    if notes is not None:
        notes.append(f"{name}: {note}")
    return traj


def _occupancy(line: str) -> float:
    """The occupancy of an ATOM / HETATM record (columns 55-60); 1 where it is blank or unreadable."""
    try:
        return float(line[54:60])
    except ValueError:
        return 1.0


def one_conformer(path: str) -> Optional[tuple]:
    """The text of a (possibly gzipped) PDB file with one conformer of each residue that has alternate
    locations, and a note saying which; None where the file has none.

    A residue (chain, number and insertion code, in every model alike) keeps
    the atoms of no alternate location and those of its location of highest
    mean occupancy, the first in the alphabet where they tie (A before B),
    with the location column cleared. mdtraj and OpenMM keep the first
    location listed, whatever its occupancy; a residue whose conformers are
    different residues (microheterogeneity: A SER, B THR) is read as the one
    kept.

    Parameters
    ----------
    path : str
        The PDB file.

    Returns
    -------
    tuple of (str, str) or None
        The text, and the note naming how many residues had alternate
        locations, which was kept how often, and the first such residue.
    """
    occupancy: dict = {}  # residue key -> {location: [occupancy sum, atoms, residue name]}
    with open_text(path) as handle:  # (streamed: most files have none, some are big)
        for line in handle:
            if line.startswith(("ATOM", "HETATM")) and len(line) > 16 and line[16] != " ":
                where = occupancy.setdefault((line[21], line[22:27]), {})
                entry = where.setdefault(line[16], [0.0, 0, line[17:20].strip()])
                entry[0] += _occupancy(line)
                entry[1] += 1
    if not occupancy:
        return None
    kept, note = choose_conformers(occupancy)
    text = []
    with open_text(path) as handle:
        for line in handle:
            if line.startswith(("ATOM", "HETATM")) and len(line) > 16 and line[16] != " ":
                if kept[(line[21], line[22:27])] != line[16]:
                    continue
                line = line[:16] + " " + line[17:]
            text.append(line)
    return "".join(text), note


def choose_conformers(occupancy: dict) -> tuple[dict, str]:
    """The conformer each residue with alternate locations keeps, and the note saying which.

    Parameters
    ----------
    occupancy : dict
        ``(chain id, number with insertion code) -> {location: [occupancy sum, atoms, residue name]}``, in file
        order.

    Returns
    -------
    kept : dict
        The same keys -> the location of highest mean occupancy (the first in the alphabet where they tie).
    note : str
        How many residues had alternate locations, the first of them, and which were kept how often.
    """
    kept = {key: min(where, key=lambda loc: (-round(where[loc][0] / where[loc][1], 3), loc))
            for key, where in occupancy.items()}
    (chain, number), where = next(iter(occupancy.items()))
    first = ", ".join(f"{loc} {name} {total / atoms:.2f}" for loc, (total, atoms, name) in sorted(where.items()))
    counts = Counter(kept.values())
    said = ", ".join(f"{loc} in {counts[loc]}" for loc in sorted(counts))
    note = (f"{len(occupancy)} residue(s) have alternate locations (first: chain {chain.strip() or '?'} residue "
            f"{number.strip()}: {first}, mean occupancy): each keeps its conformer of highest occupancy (A where "
            f"they tie), kept {said}")
    return kept, note


def _with_model_boxes(traj: md.Trajectory, path: str) -> md.Trajectory:
    """``traj`` read from the PDB file ``path``, each frame with its model's box (:func:`pdb_model_boxes`)."""
    boxes = pdb_model_boxes(path, traj.n_frames)
    if boxes is not None:
        traj.unitcell_vectors = boxes / np.float32(10.0)
    return traj


def load_topology(path: str, ext: str) -> md.Topology:
    """Topology of a structure file (or of an .h5 trajectory, or a .tpr run input): :func:`load_topology_and_box`
    without the box."""
    return load_topology_and_box(path, ext)[0]


def load_topology_and_box(path: str, ext: str, notes: Optional[list] = None) -> tuple:
    """Topology of a structure file (or of an .h5 trajectory, or a .tpr run input), and the periodic box of its
    first frame.

    Parameters
    ----------
    path : str
        The file.
    ext : str
        Its extension (one of
        :data:`backmap_plugin.io.paths.TOPOLOGY_FORMATS`).
    notes : list, optional
        Where notes on reading it go (as :func:`load_whole`).

    Returns
    -------
    topology : mdtraj.Topology
    box : numpy.ndarray or None
        ``(3, 3)`` ``float32`` box vectors (rows, Angstrom) of the first
        frame of a GRO file, or of a PDB file whose CRYST1 record is a
        simulation's box (space group P 1, as MD programs write it; a
        crystal's unit cell is not the box of a run made from it); None
        where it has none, or none that makes a cell (zero volume), and for
        mmCIF, .h5 and .tpr files.

    Raises
    ------
    BackmapInputError
        The file cannot be read.
    """
    if ext == ".tpr":
        return load_tpr_topology(path), None
    if ext == ".h5":
        try:
            return mdtraj_files.load_topology(path), None
        except Exception as exc:
            raise BackmapInputError(
                f"{path}: cannot be read as {ext}: {type(exc).__name__}: {exc}"
            ) from exc
    traj = load_whole(path, ext, notes)
    box = box_vectors(traj)  # (not of traj[:1]: slicing copies the topology, slow for big systems)
    simulation_box = ext == ".gro" or (ext in PDB and pdb_space_group(path) in ("P 1", "P1"))
    if (not simulation_box or box is None or not np.isfinite(box[0]).all()
            or abs(float(np.linalg.det(box[0].astype(np.float64)))) <= 0):
        return traj.topology, None
    return traj.topology, box[0]


def pdb_space_group(path: str) -> Optional[str]:
    """The space group of a PDB file's first CRYST1 record, before its atoms.

    Parameters
    ----------
    path : str
        A PDB file (gzipped where it ends in ``.gz``).

    Returns
    -------
    str or None
        E.g. ``P 1`` (as MD programs write it) or ``P 21 21 21`` (a
        crystal's); None where no CRYST1 record comes before the atoms.
    """
    with open_text(path) as handle:
        for line in handle:
            if line.startswith("CRYST1"):
                return line[55:66].strip()
            if line.startswith(("ATOM", "HETATM", "MODEL")):
                return None
    return None


def mmcif_space_group(path: str) -> Optional[str]:
    """The space group of an mmCIF file (``_symmetry.space_group_name_H-M``, or ``_space_group.name_H-M_alt``),
    before its atoms.

    Parameters
    ----------
    path : str
        An mmCIF file (gzipped where it ends in ``.gz``).

    Returns
    -------
    str or None
        E.g. ``P 21 21 21`` (a crystal's, as the PDB writes it); None where
        the file names none before its ``atom_site`` records (OpenMM and
        this package write a ``_cell`` alone).
    """
    with open_text(path) as handle:
        for line in handle:
            if line.startswith(("_symmetry.space_group_name_H-M", "_space_group.name_H-M_alt")):
                fields = line.split(None, 1)
                value = fields[1].strip().strip("'\"") if len(fields) > 1 else ""
                return value if value not in ("", "?", ".") else None
            if line.startswith("_atom_site."):
                return None
    return None


def crystal_space_group(path: str, ext: str) -> Optional[str]:
    """The space group of a PDB or mmCIF file whose unit cell is a crystal's, not a simulation's box: any but
    ``P 1``, the one MD programs write (:func:`pdb_space_group`, :func:`mmcif_space_group`); None for others."""
    group = pdb_space_group(path) if ext in PDB else mmcif_space_group(path) if ext in MMCIF else None
    return None if group is None or group.replace(" ", "") == "P1" else group


def count_trajectory_atoms(path: str, ext: str) -> int:
    """Number of atoms in the first frame of a coordinate-only trajectory.

    Parameters
    ----------
    path : str
        A DCD, XTC, TRR or NetCDF file.
    ext : str
        Its extension, for messages.

    Returns
    -------
    int

    Raises
    ------
    BackmapInputError
        The file cannot be read or has no frames.
    """
    try:
        with open_file(path) as handle:
            first = handle.read(n_frames=1)
        xyz = first[0] if isinstance(first, tuple) else first
    except Exception as exc:
        raise BackmapInputError(
            f"{path}: cannot be read as {ext} (a truncated or damaged file?): {type(exc).__name__}: {exc}"
        ) from exc
    if xyz is None or len(xyz) == 0:
        raise BackmapInputError(f"{path}: contains no frames")
    return int(xyz.shape[1])


def box_vectors(traj: md.Trajectory) -> Optional[np.ndarray]:
    """Periodic box vectors of a trajectory in Angstrom, triclinic cells included.

    Parameters
    ----------
    traj : mdtraj.Trajectory
        Frames read by mdtraj.

    Returns
    -------
    numpy.ndarray or None
        ``(F, 3, 3)`` ``float32`` box vectors (rows); None without a box.
    """
    if traj.unitcell_vectors is None:
        return None
    return (traj.unitcell_vectors.astype(np.float64) * 10.0).astype(np.float32)


def frames_in_file(path: str) -> Optional[float]:
    """How many frames the bytes of a DCD, XTC or TRR file hold, frames after a damaged one included.

    DCD frames have one size, so the file's size counts them. XTC and TRR
    frames are found by walking their headers, which stops at a damaged
    frame; the bytes after it are counted in frames of the mean size before
    it. None where the file cannot tell.

    Parameters
    ----------
    path : str

    Returns
    -------
    float or None
    """
    with open_file(path) as handle:
        found = len(handle)
        offsets = getattr(handle, "offsets", None)
    if match_extension(path, (".dcd",)) or offsets is None or found < 2:
        return float(found)
    per_frame = float(offsets[-1]) / (found - 1)
    return found - 1 + (os.path.getsize(path) - float(offsets[-1])) / per_frame
