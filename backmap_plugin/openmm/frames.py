"""All-atom structures and trajectories for OpenMM, one frame at a time.

:func:`open_structure` reads the topology of a PDB, PDBx/mmCIF or HDF5 file
(or of the ``top`` file that goes with an ``.xtc``, ``.dcd``, ``.trr`` or
``.nc`` trajectory) with OpenMM's readers, an mmCIF file with the package's
own (:func:`~backmap_plugin.io.cif_atoms.read_mmcif_models`, as ``backmap
run`` reads it: the same chain ids, residues and atoms), and then gives the
frames one by one, so that a trajectory of thousands of frames is never held
in memory.
Models of a PDB file after the first are read line by line (OpenMM's reader
keeps every model as Python objects, about 0.8 KB an atom); where its first
model read that way is not what OpenMM read, the whole file is read by
OpenMM instead; so is a file with alternate locations, each residue's
conformer of highest occupancy (OpenMM keeps the first listed), with a note. Positions are OpenMM quantities, as
OpenMM's readers give them; each frame comes with its box and time. A frame
whose bonds inside residues are not as long as in the topology file (atoms
in another order) is refused; a trajectory cut short in a frame gives the
frames before it (:attr:`StructureFrames.frames_read`).
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator

import numpy as np

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.detect import decide_mapping
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.pbc import image_gap
from backmap_plugin.io.atoms import CutShortNote
from backmap_plugin.io.chains import topology_from_openmm, topology_to_openmm_as_read
from backmap_plugin.io.cif_atoms import PLACEHOLDER_CELL, read_mmcif_models
from backmap_plugin.io.loaders import count_trajectory_atoms, cryst1_box, one_conformer, open_text, pdb_whole_models
from backmap_plugin.io.martini import BEAD_NAMES
from backmap_plugin.io.paths import MMCIF, NEEDS_TOPOLOGY, PDB, match_extension

__all__ = ["StructureFrames", "open_structure", "STRUCTURE_INPUT", "TRAJECTORY_INPUT"]

#: Files that hold their own topology (PDB text, ``.pdb`` or ``.ent``, and PDBx/mmCIF, also gzipped; HDF5).
STRUCTURE_INPUT = PDB + MMCIF + (".h5",)
#: Trajectories that need a topology file (``top``: one of :data:`STRUCTURE_INPUT`).
TRAJECTORY_INPUT = NEEDS_TOPOLOGY
#: Frames a trajectory read holds at a time.
READ_CHUNK = 20


def _kind(path: str) -> str:
    """The format's extension, one of :data:`STRUCTURE_INPUT` or :data:`TRAJECTORY_INPUT`."""
    ext = match_extension(path, STRUCTURE_INPUT + TRAJECTORY_INPUT)
    if ext is None:
        raise BackmapInputError(
            f"{path}: unsupported input extension; use .pdb, .ent or .cif (optionally .gz), .h5, or a trajectory "
            f"({', '.join(TRAJECTORY_INPUT)}) with its topology"
        )
    return ext


#: Largest change (Angstrom) of a bond inside a residue between a frame and the topology's coordinates (or
#: the first frame): a frame whose atoms are in another order than the topology's changes some by 0.9 A or
#: more (atoms two bonds apart are 2.4-2.5 A apart: N and CA swapped, CA-C 1.5 -> 2.4); thermal motion changes
#: them by hundredths, and a noisy or strained input (other tools' output) by up to about half an Angstrom
#: (0.54 A seen in a 20-frame all-atom file that refine takes as it is).
BOND_MISMATCH = 0.75
#: Angstrom: a frame whose periodic images can come this close to it (:func:`~backmap_plugin.core.pbc.image_gap`;
#: chains of a slab or condensate packed against the images of others) gets a note that clashes are counted, and
#: structures minimised, without periodic images.
NEAR_IMAGE = 4.0


class StructureFrames:
    """The topology of an all-atom structure file and its frames, read one at a time.

    Made by :func:`open_structure`. Iterating gives ``(positions, box,
    time)`` per frame: OpenMM positions (nm, a list of ``Vec3``), the
    frame's periodic box vectors (nm) or None, and its time (ps) or None.
    Every frame's bonds inside residues must have the lengths they have in
    the topology file's coordinates (the first frame's for a file with its
    own topology), within :data:`BOND_MISMATCH`: a frame whose atoms are in
    another order is refused, naming the bond. It can be iterated more than
    once.

    Attributes
    ----------
    path : str
        The coordinate file.
    top_path : str or None
        The topology file of a trajectory.
    topology : openmm.app.Topology
        With standard bonds and disulfides (SG atoms within 0.3 nm in the
        first frame, as OpenMM's PDB reader bonds them).
    n_frames : int
        Frames in the file (its header's count for a trajectory).
    frames_read : int
        Frames the last iteration gave (fewer than ``n_frames`` where a
        trajectory is cut short in a frame).
    notes : list of str
        What the user should know of the file (a DCD holding fewer frames
        than its header announces).
    near_images : bool
        A frame of the last iteration has periodic images within
        :data:`NEAR_IMAGE` of it (see :meth:`read_notes`).
    """

    def __init__(self, path: str, top_path: str | None, topology, n_frames: int, frames, reference=None):
        self.path = path
        self.top_path = top_path
        self.topology = topology
        self.n_frames = n_frames
        self.frames_read = 0
        self.near_images = False
        self.notes = []
        self._frames = frames  # callable -> iterator of (xyz nm (N, 3), box nm (3, 3) or None, time ps or None)
        self._reference = reference  # (N, 3) nm coordinates of the topology file, or None: the first frame

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[tuple]:
        from backmap_plugin.openmm.structure import array_to_positions

        bonds = _residue_bonds(self.topology)
        reference = None if self._reference is None else _lengths(self._reference, bonds)
        self.frames_read = 0
        self.near_images = False
        for index, (xyz, box, time) in enumerate(self._frames()):
            self._check_finite(index, xyz)
            if box is not None and not self.near_images:
                self.near_images = image_gap(xyz * 10.0, box * 10.0) < NEAR_IMAGE
            lengths = _lengths(xyz, bonds)
            if reference is None:
                reference = lengths
            self._check_bonds(index, lengths, reference, bonds)
            self.frames_read = index + 1
            yield array_to_positions(xyz), None if box is None else array_to_positions(box), time

    def read_notes(self, done: str) -> list:
        """:attr:`notes`; where the last iteration stopped short of :attr:`n_frames`, that it did; where frames came
        within reach of their periodic images (:attr:`near_images`), that they were taken without them.

        Parameters
        ----------
        done : str
            What was done with the frames read (``refined``, ``validated``).

        Returns
        -------
        list of str
            Those that say the file is cut short are
            :class:`~backmap_plugin.io.atoms.CutShortNote`.
        """
        notes = list(self.notes)
        if self.frames_read < self.n_frames:
            notes.append(CutShortNote(f"{self.path}: {self.frames_read} whole frame(s) of the {self.n_frames} it "
                                      f"holds: cut short in a frame? Those were {done}"))
        if self.near_images:
            notes.append(f"{self.path}: its atoms come within {NEAR_IMAGE:.0f} A of their periodic images (e.g. "
                         f"chains packed across the box's faces), and the frames were {done} without images: "
                         "clashes across the faces are not counted (nor, in refine, minimised away)")
        return notes

    def _check_finite(self, index: int, xyz: np.ndarray) -> None:
        bad = np.flatnonzero(~np.isfinite(xyz).all(axis=1))
        if not len(bad):
            return
        from backmap_plugin.openmm.structure import residue_label

        atom = list(self.topology.atoms())[int(bad[0])]
        raise BackmapInputError(f"{self.path}: frame {index}: atom {atom.name} of {residue_label(atom.residue)} has "
                                f"a non-finite coordinate ({len(bad)} such atom(s) in the frame)")

    def _check_bonds(self, index: int, lengths: np.ndarray, reference: np.ndarray, bonds: np.ndarray) -> None:
        change = np.abs(lengths - reference)
        if not len(change) or change.max() <= BOND_MISMATCH / 10.0:
            return
        from backmap_plugin.openmm.structure import residue_label

        k = int(change.argmax())
        atoms = list(self.topology.atoms())
        a, b = atoms[bonds[k, 0]], atoms[bonds[k, 1]]
        where = f"in {self.top_path}" if self.top_path else "in the first frame"
        raise BackmapInputError(
            f"{self.path}: frame {index}: the {a.name}-{b.name} bond of {residue_label(a.residue)} is "
            f"{10 * lengths[k]:.2f} A long, {10 * reference[k]:.2f} A {where}: the frame's atoms are not the "
            "topology's, in its order (or the periodic box cuts the molecule: make it whole first, e.g. "
            "gmx trjconv -pbc mol)"
        )


def _residue_bonds(topology) -> np.ndarray:
    """(B, 2) atom indices of the topology's bonds inside residues."""
    pairs = [(a.index, b.index) for a, b in topology.bonds() if a.residue is b.residue]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _lengths(xyz: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    return np.linalg.norm(xyz[bonds[:, 0]] - xyz[bonds[:, 1]], axis=-1)


def open_structure(path, top=None) -> StructureFrames:
    """Open an all-atom structure or trajectory for reading frame by frame (a protein's: a file of no amino acid
    residue is refused).

    Parameters
    ----------
    path : str or os.PathLike
        ``.pdb`` / ``.ent`` / ``.cif`` / ``.mmcif`` (each optionally
        ``.gz``) or ``.h5``, one or more frames; or a trajectory (``.xtc``,
        ``.dcd``, ``.trr``, ``.nc``) with ``top``.
    top : str or os.PathLike, optional
        Topology of a trajectory: a PDB / mmCIF file (its first model) or an
        ``.h5`` file with the same atoms in the same order.

    Returns
    -------
    StructureFrames

    Raises
    ------
    BackmapInputError
        Missing or unreadable file, unsupported extension, no atoms, no
        protein residue, a trajectory without ``top`` or whose atoms are not
        ``top``'s, a model with other atoms than the first.
    """
    structure = _open(os.fspath(path), None if top is None else os.fspath(top))
    if not any(chem.standard_residue_name(r.name.strip().upper()) for r in structure.topology.residues()):
        names = sorted({r.name for r in structure.topology.residues()})
        raise BackmapInputError(f"{structure.path}: no protein residues (it holds {', '.join(names[:5])}"
                                f"{' ...' if len(names) > 5 else ''})")
    _refuse_beads(structure)
    return structure


def _refuse_beads(structure: StructureFrames) -> None:
    """Refuse coarse-grained beads other than a C-alpha trace (which is completed, as all-atom input lacking atoms).

    Martini beads (``BB``, ``SC1`` ...), and a trace of one bead per residue whose bead distances say residue
    centres of mass (:func:`~backmap_plugin.core.detect.decide_mapping` on the first frame: a CALVADOS 3
    ``top.pdb``, whose beads are named CA) would otherwise be read as C-alpha atoms and built around.
    """
    residues = [r for r in structure.topology.residues() if chem.standard_residue_name(r.name.strip().upper())]
    names = {atom.name.strip().upper() for r in residues for atom in r.atoms()}
    run_first = "`backmap run` builds the atoms of beads; refine, validate and export take its all-atom output"
    if names & set(BEAD_NAMES) and "CA" not in names:
        raise BackmapInputError(f"{structure.path}: Martini beads ({', '.join(sorted(names & set(BEAD_NAMES)))}), "
                                f"not atoms: {run_first}")
    if len(residues) < 3 or any(len(list(r.atoms())) != 1 for r in residues):
        return
    positions = next(iter(structure))[0]
    index = [next(r.atoms()).index for r in residues]
    beads = np.array([[v.x, v.y, v.z] for v in positions], dtype=np.float64)[index] * 10.0
    res_seq = [int(r.id) if r.id.strip().lstrip("-").isdigit() else k for k, r in enumerate(residues)]
    res_type = [chem.RESIDUE_INDEX[chem.standard_residue_name(r.name.strip().upper())] for r in residues]
    try:
        decision = decide_mapping(beads, np.array(res_type), np.array([r.chain.index for r in residues]),
                                  [r.chain.id for r in residues], res_seq, source=f"{structure.path}: frame 0")
    except BackmapInputError:
        return  # (the distances cannot tell: read as a C-alpha trace, as before)
    if decision.name != "ca":
        raise BackmapInputError(f"{structure.path}: one bead per residue, and not at the C-alpha atoms: "
                                f"{decision.evidence}; {run_first}")


def _open(path: str, top: str | None) -> StructureFrames:
    """:func:`open_structure` of any structure."""
    for name in (path, top):
        if name is not None and not os.path.exists(name):
            raise BackmapInputError(f"{name}: no such file")
        if name is not None and os.path.isdir(name):
            raise BackmapInputError(f"{name}: is a directory, expected a structure or trajectory file")
        if name is not None and os.path.getsize(name) == 0:
            raise BackmapInputError(f"{name}: the file is empty")
    kind = _kind(path)
    if kind in TRAJECTORY_INPUT:
        if top is None:
            raise BackmapInputError(f"{path}: a {kind} trajectory holds no topology: pass its topology "
                                    "(--top: the first frame as .pdb, or an .h5 file)")
        if _kind(top) in TRAJECTORY_INPUT:
            raise BackmapInputError(f"{top}: a trajectory is no topology; pass a .pdb, .cif or .h5 file")
        frames = _open(top, None)
        first = next(iter(frames))[0]  # (the coordinates every frame's bonds are checked against)
        return _trajectory(path, top, frames.topology, _nm(first))
    if top is not None:
        raise BackmapInputError(f"{path}: holds its own topology; --top is for trajectories "
                                f"({', '.join(TRAJECTORY_INPUT)})")
    if kind == ".h5":
        return _trajectory(path, None, None, None)
    if kind in PDB:
        return _pdb(path)
    return _mmcif(path)


def _mmcif(path: str) -> StructureFrames:
    """An mmCIF file read as ``backmap run`` reads it (:func:`~backmap_plugin.io.cif_atoms.read_mmcif_models`:
    chains by author id, insertion codes, each residue's conformer of highest occupancy and a last model cut short
    left out, with notes, the placeholder cell as no box), for OpenMM
    (:func:`~backmap_plugin.io.chains.topology_to_openmm_as_read`).

    OpenMM's PDBx reader named chains by ``label_asym_id`` where a file has
    more label ids than author ids (a crystal entry's chains N and H came out
    A and C), and took the atoms of a residue's other conformers into it."""
    notes: list = []
    with open_text(path) as handle:
        md_topology, xyz, box = read_mmcif_models(path, handle, notes)
    frames = [model / 10.0 for model in xyz]
    box = None if box is None else box / 10.0
    topology = topology_to_openmm_as_read(md_topology, frames[0], box)
    structure = StructureFrames(path, None, topology, len(frames), lambda: ((x, box, None) for x in frames))
    structure.notes += notes
    return structure


def _topology_box(topology) -> np.ndarray | None:
    """An OpenMM topology's periodic box (nm), None where it has none or the 1 A placeholder of NMR and cryo-EM
    entries (:data:`~backmap_plugin.io.cif_atoms.PLACEHOLDER_CELL`), which OpenMM's readers take as a box."""
    box = topology.getPeriodicBoxVectors()
    return None if box is None or 10 * _nm(box).max() <= PLACEHOLDER_CELL else _nm(box)


def _nm(quantity) -> np.ndarray:
    from openmm import unit

    return np.array([[v[0], v[1], v[2]] for v in quantity.value_in_unit(unit.nanometer)], dtype=np.float64)


def _read_whole(path: str, text: str | None = None):
    """OpenMM's PDB reader on the whole file (or on ``text``): topology and every frame's (N, 3) nm array."""
    from openmm.app import PDBFile

    try:
        with (io.StringIO(text) if text is not None else open_text(path)) as handle:
            structure = PDBFile(handle)
    except BackmapInputError:
        raise
    except Exception as exc:  # OpenMM readers raise plain Exception/ValueError/KeyError
        raise BackmapInputError(f"{path}: cannot read structure: {exc}") from exc
    if structure.topology.getNumAtoms() == 0:
        raise BackmapInputError(f"{path}: no atoms")
    frames = [_nm(structure.getPositions(frame=i)) for i in range(structure.getNumFrames())]
    return structure.topology, frames


def _pdb_models(path: str, text: str | None = None) -> Iterator[tuple[np.ndarray, np.ndarray | None, int]]:
    """Each model's ATOM / HETATM coordinates (N, 3), its box (the last CRYST1 before its atoms; 3, 3), nm, and the
    line (from 1) of its MODEL record (of its first atom where it has none), of the file (or of ``text``, a part of
    it)."""
    rows, box, model_box, model_line, start = [], None, None, None, None
    with io.StringIO(text) if text is not None else open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            record = line[:6]
            if record in ("ATOM  ", "HETATM"):
                if not rows:
                    model_box, start = box, model_line or number
                rows.append((line[30:38], line[38:46], line[46:54]))
            elif record.startswith("MODEL"):
                if rows:
                    yield np.array(rows, dtype=np.float64) / 10.0, model_box, start
                    rows = []
                model_line = number
            elif record == "CRYST1":
                box = cryst1_box(line)
                box = None if box is None else box / 10.0
    if rows:
        yield np.array(rows, dtype=np.float64) / 10.0, model_box, start


def _pdb(path: str) -> StructureFrames:
    """A PDB file: OpenMM reads its first model (with the header and CONECT records), the rest is read per line;
    a file with alternate locations is read whole, each residue's conformer of highest occupancy (OpenMM keeps the
    first listed), with a note (:func:`~backmap_plugin.io.loaders.one_conformer`); a file whose last model is cut
    short (a killed writer) gives its whole models, with a note (:func:`~backmap_plugin.io.loaders.pdb_whole_models`;
    their alternate locations as OpenMM keeps them)."""
    for part_of in (pdb_whole_models, one_conformer):  # (the text of the file to read, and why)
        picked = part_of(path)
        if picked is not None:
            text, note = picked
            structure = _pdb_whole(path, text)
            structure.notes.append(note if part_of is pdb_whole_models else f"{path}: {note}")  # (the first names it)
            return structure
    first, conect, n_models, in_first = [], [], 0, True
    with open_text(path) as handle:
        for line in handle:
            if line.startswith("MODEL"):
                n_models += 1
                in_first = in_first and n_models == 1
            if in_first:
                first.append(line)
            elif line.startswith(("CONECT", "END ", "END\n")) or line.rstrip() == "END":
                conect.append(line)
    topology, (xyz,) = _read_whole(path, "".join(first + conect))
    n_models = max(n_models, 1)
    models = _pdb_models(path)
    try:
        line_read, _, _ = next(models)
        same = line_read.shape == xyz.shape and np.allclose(line_read, xyz, atol=1e-6)
    except (ValueError, StopIteration):
        same = False
    finally:
        models.close()
    if not same:  # OpenMM read the first model otherwise: it reads every model
        return _pdb_whole(path)
    n_atoms = topology.getNumAtoms()

    def frames():
        models = _pdb_models(path)
        for index in itertools.count():
            try:
                coords, box, line = next(models)
            except StopIteration:
                return
            except ValueError as exc:  # (a coordinate that is no number)
                raise BackmapInputError(f"{path}: cannot read coordinates: {exc}") from exc
            if coords.shape[0] != n_atoms:
                raise BackmapInputError(f"{path}: frame {index} (the MODEL on line {line}) has {coords.shape[0]} "
                                        f"atoms, frame 0 {n_atoms}; every model must hold the same atoms")
            yield coords, box, None

    return StructureFrames(path, None, topology, n_models, frames)


def _pdb_whole(path: str, text: str | None = None) -> StructureFrames:
    """A PDB file (or ``text``, that of its atoms kept) read whole by OpenMM, every model with its box."""
    topology, frames = _read_whole(path, text)
    boxes = [box for _, box, _ in _pdb_models(path, text)] if len(frames) > 1 else []
    boxes = boxes if len(boxes) == len(frames) else [None] * len(frames)
    box = _topology_box(topology)
    boxes = [b if b is not None or box is None else box for b in boxes]
    return StructureFrames(path, None, topology, len(frames), lambda: zip(frames, boxes, [None] * len(frames)))


def _trajectory(path: str, top: str | None, topology, reference) -> StructureFrames:
    """An ``.h5`` file (``top`` None: its own topology) or a trajectory with ``topology`` read from ``top``
    (``reference``: its coordinates, nm)."""
    from backmap_plugin.io.c_stdout import c_stdout_to_stderr
    from backmap_plugin.io.dcd import clock, frames_missing
    from backmap_plugin.io.mdtraj_files import iterload, load_frame, load_topology

    kind = _kind(path)
    is_dcd = kind == ".dcd"
    if topology is not None:
        n_atoms = count_trajectory_atoms(path, kind)
        if n_atoms != topology.getNumAtoms():
            raise BackmapInputError(f"{path}: {n_atoms} atoms, its topology {top} {topology.getNumAtoms()}: "
                                    "pass the topology these frames were written with")
    try:
        with c_stdout_to_stderr():
            if topology is None:
                md_top = load_topology(path)
                topology = md_top.to_openmm()
            else:
                md_top = topology_from_openmm(topology)
            first = load_frame(path, 0, top=md_top) if top is not None else load_frame(path, 0)
            n_frames = _count_frames(path, md_top)
    except Exception as exc:
        raise BackmapInputError(f"{path}: cannot read trajectory: {exc}") from exc
    if top is None and not any(a.name == "SG" and b.name == "SG" for a, b in topology.bonds()):
        from openmm import unit

        topology.createDisulfideBonds(unit.Quantity(first.xyz[0].astype(np.float64), unit.nanometer))
    dcd_clock = clock(path) if is_dcd else None  # (mdtraj gives DCD frames no times)

    def frames():
        chunks, done, per_read = iterload(path, top=md_top, chunk=READ_CHUNK), 0, READ_CHUNK
        while True:
            try:
                with c_stdout_to_stderr():  # (only while mdtraj reads: the consumer's prints stay on stdout)
                    chunk = next(chunks, None)
            except (RuntimeError, OSError, ValueError, IndexError):  # (mdtraj: "XTC read error" ...)
                if per_read == 1:  # the frame itself cannot be read: the file is cut short (or damaged) there
                    return
                # a read of several frames failed: the frames before the one that cannot be read, one at a time
                chunks, per_read = iterload(path, top=md_top, chunk=1, skip=done), 1
                continue
            if chunk is None:
                return
            boxes = chunk.unitcell_vectors
            for k in range(chunk.n_frames):
                if dcd_clock is not None:
                    time = dcd_clock[0] + done * dcd_clock[1]
                else:
                    time = None if is_dcd else float(chunk.time[k])
                yield chunk.xyz[k].astype(np.float64), None if boxes is None else boxes[k].astype(np.float64), time
                done += 1

    structure = StructureFrames(path, top, topology, n_frames, frames, reference)
    if is_dcd:
        structure.notes += [note for note in [frames_missing(path)] if note]
    return structure


def _count_frames(path: str, md_top) -> int:
    """Frames of a trajectory file, without reading its coordinates where the format says."""
    from backmap_plugin.io.mdtraj_files import iterload, open_file

    with open_file(path) as handle:
        try:
            return len(handle)
        except (TypeError, NotImplementedError):
            pass
    return sum(chunk.n_frames for chunk in iterload(path, top=md_top, chunk=READ_CHUNK))
