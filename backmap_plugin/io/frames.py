"""Reading frames: coarse-grained structures and trajectories in bounded chunks
(:func:`open_frames`), and OpenMM positions (:func:`frames_from_openmm`).

Inside the package every length is in Angstrom; mdtraj and OpenMM work in
nm, so coordinates are converted here (x10 on read). Coordinates are always
numpy ``float32`` arrays shaped ``(n_frames, n_atoms, 3)`` and topologies
are ``mdtraj.Topology`` objects. :func:`open_frames` checks the file and its
topology up front and then yields bounded chunks of frames.
"""

from __future__ import annotations

import os
from typing import Iterator, NamedTuple, Optional

import mdtraj as md
import numpy as np

from backmap_plugin.core.chemistry import standard_residue_name
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.pbc import box_lengths_and_angles
from backmap_plugin.core.topology import residue_number
from backmap_plugin.io import dcd
from backmap_plugin.io.atoms import CutShortNote, check_duplicate_atoms, check_finite, frame_label
from backmap_plugin.io.c_stdout import c_stdout_to_stderr
from backmap_plugin.io.chains import split_chains, split_merged_residues, topology_from_openmm, topology_subset
from backmap_plugin.io.loaders import (
    box_vectors,
    count_trajectory_atoms,
    crystal_space_group,
    frames_in_file,
    load_topology,
    load_topology_and_box,
    load_whole,
    protonation_note,
)
from backmap_plugin.io.mdtraj_files import STEPPED, iterload, iterload_with_steps, open_file
from backmap_plugin.io.paths import (
    LOADED_WHOLE,
    NEEDS_TOPOLOGY,
    PDB,
    SUPPORTED_INPUT,
    TOPOLOGY_FORMATS,
    check_input_file,
    match_extension,
)

#: Frames x atoms a trajectory read holds at most (float32: 12 bytes an atom): a CG system with solvent or a
#: membrane has hundreds of thousands of beads, and 1,000 frames of 250,000 beads would take 3 GB. A chunk
#: holds fewer frames than asked for where its atoms would exceed this.
ATOM_FRAMES_PER_READ = 20_000_000


def _angstrom(xyz_nm: np.ndarray) -> np.ndarray:
    """mdtraj's nm coordinates in Angstrom, float32 (the same numbers as through float64: x * 10 is exact there)."""
    return np.asarray(xyz_nm, dtype=np.float32) * np.float32(10.0)


class FrameChunk(NamedTuple):
    """A block of consecutive (strided) frames.

    Attributes
    ----------
    start : int
        Index, in the strided frame numbering, of the first frame here.
    xyz : numpy.ndarray
        ``float32`` coordinates in Angstrom, shape ``(n, n_atoms, 3)``.
    box : numpy.ndarray or None
        Periodic box vectors (rows) in Angstrom, shape ``(n, 3, 3)``
        (triclinic cells kept; a crystal's unit cell, in a space group
        other than P 1, is no box:
        :func:`~backmap_plugin.io.loaders.crystal_space_group`); where the
        file has no unit cell the topology file's simulation box for every
        frame (:func:`~backmap_plugin.io.loaders.load_topology_and_box`),
        else None.
    time : numpy.ndarray or None
        ``(n,)`` times in ps as the file gives them (DCD: from its
        header's first step, interval and time step; frame indices for
        files without times, as mdtraj gives them), or None.
    step : numpy.ndarray or None
        ``(n,)`` int64 step numbers as the file gives them (XTC, TRR; DCD:
        from its header's first step and steps between frames), else each
        frame's index in the file (``k * stride`` for frame ``k`` read); or None.
    """

    start: int
    xyz: np.ndarray
    box: Optional[np.ndarray]
    time: Optional[np.ndarray] = None
    step: Optional[np.ndarray] = None


def _check_same_residues(own, top, path: str, top_path: str) -> None:
    """Refuse a ``--top`` whose residues are not those of an input that holds its own topology (a structure file).

    The frames are built on the residues of ``top``; where its residue names (each read as its standard residue:
    HSD as HIS) differ from the input's at some atom, another structure's topology was given, and the output
    would carry its sequence on the input's coordinates.
    """
    def name(atom) -> str:
        return standard_residue_name(atom.residue.name) or atom.residue.name

    for atom, top_atom in zip(own.atoms, top.atoms):
        if name(atom) != name(top_atom):
            raise BackmapInputError(
                f"{path}: its residues are not those of --top {top_path}: atom {atom.index + 1} is in "
                f"{atom.residue.name} {residue_number(atom.residue)} there, in {top_atom.residue.name} "
                f"{residue_number(top_atom.residue)} in the topology; pass the topology {path} was written with, or no "
                "--top (the file holds its own)"
            )


def _mismatch_hint(topology, protein: np.ndarray, n_atoms: int) -> str:
    """What to pass instead of a ``--top`` of ``topology`` (``protein``: the indices of its protein atoms) for
    coordinates of ``n_atoms`` atoms.

    An all-atom topology of as many protein residues as the coordinates have atoms is the all-atom structure a
    coarse-grained run started from (one bead per residue); another larger topology with protein atoms is a whole
    system whose protein part the trajectory may hold.
    """
    n_residues = sum(1 for residue in topology.residues if residue.is_protein)
    if topology.n_atoms > n_atoms and n_residues == n_atoms:
        return (f"; its {n_residues} protein residues are as many as the coordinates' atoms: an all-atom structure "
                "given for a coarse-grained trajectory of one bead per residue? pass the coarse-grained topology the "
                "trajectory was written with (e.g. the top.pdb of a CALVADOS run, a C-alpha trace's .pdb)")
    if len(protein) and topology.n_atoms > n_atoms:
        return (f"; its protein is {len(protein)} atoms" + ("" if protein[0] == 0 else f" from atom {protein[0] + 1}")
                + ": a trajectory of part of a system needs the topology of that part "
                "(e.g. gmx trjconv -s md.tpr -n index.ndx -dump 0 -o part.gro of the same group)")
    return "; pass the topology of the system the trajectory was written from (e.g. the run's .tpr or .gro)"


class FrameSource:
    """Frames of a structure or trajectory file, read in bounded chunks.

    Made by :func:`open_frames`, which checks the file, its topology, atom
    counts and duplicate atoms up front. Iterating (any number of times)
    yields :class:`FrameChunk` items; trajectories are read with
    ``mdtraj.iterload`` so at most ``chunk`` frames are in memory (fewer for
    systems of many atoms: :data:`ATOM_FRAMES_PER_READ`), while
    PDB/mmCIF/GRO files are loaded whole once.

    Attributes
    ----------
    path : str
        The coordinate file.
    top_path : str or None
        The topology file, if one was given.
    topology : mdtraj.Topology
        Topology of the frames, names as read by mdtraj.
    n_atoms : int
        Number of atoms per frame.
    chunk, stride : int
        Frames per chunk, and the read stride.
    notes : list of str
        What was made of the input on the way (e.g. a topology cut to the
        protein the trajectory holds; a file cut short:
        :class:`~backmap_plugin.io.atoms.CutShortNote`).
    cut_short : str or None
        Once the frames were read to the end: where the file ends inside a
        frame, a message naming it and its last whole frame read; else None.
    """

    def __init__(self, path, top=None, chunk: int = 1000, stride: int = 1):
        self.path = os.fspath(path)
        self.top_path = None if top is None else os.fspath(top)
        for name, value in (("chunk", chunk), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise BackmapInputError(f"{self.path}: {name} must be a positive integer, got {value!r}")
        self.chunk = int(chunk)
        self.stride = int(stride)
        self._ext = check_input_file(self.path, SUPPORTED_INPUT, "input")
        if self._ext in NEEDS_TOPOLOGY and self.top_path is None:
            raise BackmapInputError(
                f"{self.path}: {self._ext} files hold coordinates only, so this needs a topology file: "
                f"pass --top (one of {', '.join(TOPOLOGY_FORMATS)})"
            )
        top_topology = None
        self._top_box = None  # (3, 3) Angstrom: the topology file's box, for frames that have none
        loaded_notes: list = []
        if self.top_path is not None:
            top_ext = check_input_file(self.top_path, TOPOLOGY_FORMATS, "topology")
            top_topology, self._top_box = load_topology_and_box(self.top_path, top_ext, loaded_notes)

        self._whole = None  # (xyz in Angstrom, box in Angstrom or None, time in ps), strided
        self._size_at_open = os.path.getsize(self.path)  # (a file that grows is being written, not damaged)
        if self._ext in LOADED_WHOLE:
            traj = load_whole(self.path, self._ext, loaded_notes)
            topology, n_atoms = traj.topology, traj.n_atoms
            if traj.n_frames == 0:
                raise BackmapInputError(f"{self.path}: contains no frames")
            box = box_vectors(traj)  # (slicing the trajectory would copy its topology: slow for big systems)
            group = None if box is None else crystal_space_group(self.path, self._ext)
            if group is not None:
                loaded_notes.append(self._crystal_cell_note(group))
                box = None
            self._whole = (_angstrom(traj.xyz[:: self.stride]), None if box is None else box[:: self.stride],
                           np.asarray(traj.time[:: self.stride], dtype=np.float32))
        elif self._ext in NEEDS_TOPOLOGY:
            topology, n_atoms = None, count_trajectory_atoms(self.path, self._ext)
        else:  # .h5: topology inside, frames streamed
            topology = load_topology(self.path, self._ext)
            n_atoms = topology.n_atoms

        self.notes = [note for note in (protonation_note(name) for name in dict.fromkeys([self.top_path, self.path])
                                        if name is not None and match_extension(name, PDB)) if note]
        self.notes += list(dict.fromkeys(loaded_notes))  # (a file given as input and as --top: once)
        self._clock = None  # (t0, dt) ps of a DCD file whose header gives times
        self._steps = None  # (first, between) of a DCD file's header
        if self._ext == ".dcd":
            self.notes += [note for note in [dcd.frames_missing(self.path)] if note]
            self._clock = dcd.clock(self.path)
            self._steps = dcd.steps(self.path)
        self._frames_read = None if self._whole is None else len(self._whole[0])  # (by the last whole iteration)
        if top_topology is not None:
            if top_topology.n_atoms != n_atoms:
                top_topology = self._protein_part(top_topology, n_atoms)
            if topology is not None:
                _check_same_residues(topology, top_topology, self.path, self.top_path)
            topology = top_topology
        if n_atoms == 0:
            raise BackmapInputError(f"{self.path}: contains no atoms")
        if match_extension(self.top_path or self.path, LOADED_WHOLE):
            topology = split_chains(topology)  # .gro has no chain ids; PDB files may leave them blank
        no_codes = match_extension(self.top_path or self.path, (".gro", ".tpr")) is not None
        topology, merged = split_merged_residues(topology, single_atoms=no_codes)
        if merged:
            first = merged[0]
            held = (f"{len(merged)} residue(s) held the atoms of consecutive residues with one number and name "
                    f"(first: chain {first.chain.chain_id!r} {first.name}{residue_number(first)})")
            self.notes.append(f"{self.top_path or self.path}: {held} (a file without insertion codes), each read "
                              "as the residues it holds")
        check_duplicate_atoms(topology, self.top_path or self.path)
        self.topology = topology
        self.n_atoms = n_atoms
        if self._whole is not None:
            check_finite(self._whole[0], topology, self.path, 0, self.stride)

    def _crystal_cell_note(self, group: str) -> str:
        """The note on a file whose unit cell is a crystal's (space group ``group``, not P 1), which its frames do
        not take as their periodic box (the output written in P 1 made a simulation's box of it)."""
        record = "CRYST1 record" if self._ext in PDB else "_cell"
        return (f"{self.path}: its {record} is a crystal's unit cell (space group {group}), not a simulation's box: "
                "the frames have no periodic box (chains are not made whole across it, and the output gets none)")

    def _protein_part(self, topology, n_atoms: int):
        """The topology of a trajectory that holds only the system's protein, as GROMACS writes one.

        A trajectory written with a ``Protein`` output group (``compressed-x-grps``, or ``gmx trjconv``
        with that group) holds the protein's atoms in topology order: when the topology of a larger system
        has exactly ``n_atoms`` protein atoms (first or not: water or lipids may come before them), that part
        of it is the trajectory's topology. Any other count mismatch is an error.
        """
        protein = np.array([a.index for a in topology.atoms if a.residue.is_protein], dtype=np.int64)
        if topology.n_atoms > n_atoms and len(protein) == n_atoms:
            where = ("the first atoms" if protein[-1] == n_atoms - 1 else
                     f"atoms {protein[0] + 1}-{protein[-1] + 1}" if protein[-1] - protein[0] == n_atoms - 1 else
                     f"{n_atoms} atoms between atoms {protein[0] + 1} and {protein[-1] + 1}")
            self.notes.append(
                f"{self.path} holds {n_atoms} of the {topology.n_atoms} atoms of {self.top_path}: its protein, "
                f"{where} (a Protein output group); the rest of the topology left out"
            )
            return topology_subset(topology, protein)
        raise BackmapInputError(
            f"atom count mismatch: topology {self.top_path} has {topology.n_atoms} atoms "
            f"but coordinates {self.path} have {n_atoms}{_mismatch_hint(topology, protein, n_atoms)}"
        )

    @property
    def cut_short(self) -> Optional[str]:
        """Where the file ends inside a frame (a :class:`~backmap_plugin.io.atoms.CutShortNote` among
        :attr:`notes`) and its frames were read to the end: a message naming the file and its last whole frame
        read; else None."""
        if not self._frames_read or not any(isinstance(note, CutShortNote) for note in self.notes):
            return None
        return (f"{self.path}: the file is cut short (it ends inside a frame: a run killed while writing it, or one "
                f"still writing it?): its last whole frame read is {frame_label(self._frames_read - 1, self.stride)}")

    def _step_numbers(self, start: int, n: int) -> np.ndarray:
        """The step numbers of ``n`` frames read from frame ``start`` on of a file that gives none per frame: from
        a DCD file's header, else each frame's index in the file."""
        first, between = self._steps or (0, 1)
        return first + between * self.stride * (start + np.arange(n, dtype=np.int64))

    def __repr__(self) -> str:
        top = "" if self.top_path is None else f", top={self.top_path!r}"
        return f"FrameSource({self.path!r}{top}, n_atoms={self.n_atoms}, chunk={self.chunk}, stride={self.stride})"

    @property
    def n_frames(self) -> Optional[int]:
        """Number of frames that iterating yields (after the stride); None when the file cannot tell
        without reading it all. Trajectory files are asked for their length (XTC/TRR: a scan of the frame
        headers), once."""
        if self._whole is not None:
            return len(self._whole[0])
        if not hasattr(self, "_n_frames"):
            try:
                with open_file(self.path) as handle:
                    total = len(handle)
                self._n_frames = -(-total // self.stride)
            except Exception:  # a length is only for the progress bar
                self._n_frames = None
        return self._n_frames

    def __iter__(self) -> Iterator[FrameChunk]:
        if self._whole is not None:
            xyz, box, time = self._whole
            for start in range(0, len(xyz), self.chunk):
                stop = min(start + self.chunk, len(xyz))
                boxes = self._boxes(None if box is None else box[start:stop].copy(), stop - start)
                yield FrameChunk(start, xyz[start:stop].copy(), boxes, time[start:stop].copy(),
                                 self._step_numbers(start, stop - start))
            return
        yield from self._iter_streamed()

    def _boxes(self, box: Optional[np.ndarray], n: int) -> Optional[np.ndarray]:
        """The boxes of ``n`` frames read with ``box`` (None, or (n, 3, 3)): those, or where the coordinate file
        gives none (a DCD written without a unit cell, by catdcd or mdconvert from a LAMMPS dump; boxes of zero
        volume) the topology file's box for every frame, with a note. Chains cut by the box are made whole across
        it later; without it, a wrapped chain fell into pieces a box length apart."""
        if self._top_box is None or (box is not None and (np.abs(np.linalg.det(box.astype(np.float64))) > 0).any()):
            return box
        note = self._top_box_note()
        if note not in self.notes:  # (the frames may be read more than once)
            self.notes.append(note)
        return np.repeat(self._top_box[None], n, axis=0)

    def _top_box_note(self) -> str:
        """The note on frames given the topology file's box."""
        lengths, angles = (values.tolist() for values in box_lengths_and_angles(self._top_box))
        cell = " x ".join(f"{v:.1f}" for v in lengths) + " A"
        if any(abs(a - 90.0) > 0.01 for a in angles):
            cell += ", angles " + ", ".join(f"{a:.1f}" for a in angles)
        return (f"{self.path} gives no periodic box: every frame takes the box of {self.top_path} ({cell}), in "
                "which chains cut by its faces are made whole; this takes the box to be constant (a "
                "constant-volume run): frames of a constant-pressure run need their own boxes in the trajectory")

    def _iter_streamed(self) -> Iterator[FrameChunk]:
        frames = max(1, min(self.chunk, ATOM_FRAMES_PER_READ // max(1, self.n_atoms)))
        # mdtraj's HDF5 reader counts ``n_frames`` in file frames, so with a
        # stride each chunk must span a multiple of it to keep the phase.
        per_read = frames * self.stride if self._ext == ".h5" else frames
        start = 0
        for traj, steps in self._iterload(per_read):
            box = box_vectors(traj)  # not per piece: slicing the trajectory would copy its topology
            time = np.asarray(traj.time, dtype=np.float32)
            if self._clock is not None:  # (mdtraj gives DCD frames their index as time)
                t0, dt = self._clock
                time = (t0 + dt * self.stride * (start + np.arange(traj.n_frames))).astype(np.float32)
            if steps is None:
                steps = self._step_numbers(start, traj.n_frames)
            for first in range(0, traj.n_frames, frames):
                xyz = _angstrom(traj.xyz[first:first + frames])
                check_finite(xyz, self.topology, self.path, start, self.stride)
                yield FrameChunk(start, xyz, self._boxes(None if box is None else box[first:first + frames], len(xyz)),
                                 time[first:first + frames], steps[first:first + frames])
                start += len(xyz)
        if start == 0:
            raise BackmapInputError(f"{self.path}: contains no frames")
        self._check_read_to_the_end(start)
        self._frames_read = start

    def _check_read_to_the_end(self, yielded: int) -> None:
        """Raise where reading stopped well before the end of a DCD, XTC or TRR file's bytes: a frame damaged in
        the middle (mdtraj's readers stop there, the DCD one without a word), not a file cut short, nor one that
        grew while it was read (a simulation still writing it)."""
        if self._ext not in (".dcd", ".xtc", ".trr") or os.path.getsize(self.path) != self._size_at_open:
            return
        try:
            held = frames_in_file(self.path)
        except Exception:  # (a file that cannot be counted is read as far as it goes)
            return
        read = (yielded - 1) * self.stride + 1  # file frames up to the last one yielded
        if held is not None and held - read > self.stride + 1:
            raise BackmapInputError(
                f"{self.path}: reading stopped after frame {read - 1}, but the file's bytes hold about "
                f"{held:.0f} frames: it is damaged after that frame (bytes missing or written over), and the "
                "frames after the damage cannot be read"
            )

    def _iterload(self, per_read: int) -> Iterator[tuple]:
        """:meth:`_chunks` with their exceptions wrapped; when a block fails, its whole frames are read one at a
        time (:meth:`_whole_frames_of`)."""
        chunks = self._chunks(per_read)
        done = 0
        while True:
            try:
                with c_stdout_to_stderr():  # the first read opens the file
                    traj, steps = next(chunks)
            except StopIteration:
                return
            except Exception as exc:
                yield from self._whole_frames_of(done, exc)
                return
            if traj.n_frames == 0:
                return
            done += traj.n_frames
            yield traj, steps

    def _chunks(self, per_read: int) -> Iterator[tuple]:
        """``(trajectory, steps)``, ``per_read`` frames at a time (``mdtraj.iterload``): the step numbers of XTC and
        TRR frames (:func:`~backmap_plugin.io.mdtraj_files.iterload_with_steps`), else None."""
        if self._ext in STEPPED:
            return iterload_with_steps(self.path, per_read, self.stride, self.topology)
        chunks = iterload(self.path, chunk=per_read, stride=self.stride,
                          top=self.topology if self._ext in NEEDS_TOPOLOGY else None)
        return ((traj, None) for traj in chunks)

    def _whole_frames_of(self, done: int, failure: Exception) -> Iterator[tuple]:
        """The frames from ``done`` on that can be read, one at a time, after reading a block from there failed.

        A trajectory cut short (a killed run, or one still writing) ends in
        a partial frame: the whole frames before it are yielded and a note
        says where reading stopped. If not one frame can be read, the
        failure is raised.
        """
        singles = self._chunks(1)
        index = 0
        while True:
            try:
                with c_stdout_to_stderr():
                    single = next(singles)
            except StopIteration:
                return
            except Exception:
                break
            if index >= done:
                yield single
            index += 1
        if index == 0:
            raise BackmapInputError(
                f"{self.path}: cannot be read as {self._ext} (a truncated or damaged file?): "
                f"{type(failure).__name__}: {failure}"
            ) from failure
        note = CutShortNote(f"{self.path}: read {index} whole frame(s); the next could not be read "
                            f"({type(failure).__name__}: {failure}): a truncated file, or one still being written?")
        if note not in self.notes:  # (the frames may be read more than once)
            self.notes.append(note)


def open_frames(path, top=None, chunk: int = 1000, stride: int = 1) -> FrameSource:
    """Open a structure or trajectory file for chunked reading.

    Parameters
    ----------
    path : str or os.PathLike
        Coordinate file; its extension must be in :data:`~backmap_plugin.io.paths.SUPPORTED_INPUT`.
    top : str or os.PathLike, optional
        Topology file (PDB, mmCIF, GRO or H5). Required for ``.dcd``,
        ``.xtc``, ``.trr``, ``.nc`` and ``.netcdf``; if given for a format
        that has its own topology, it replaces that topology (atom counts
        must match). Frames without a periodic box (a DCD written without
        a unit cell) take its box, a simulation's (a ``.gro``'s, a PDB
        CRYST1 record in space group P 1), with a note.
    chunk : int, optional
        Maximum number of frames per yielded chunk (bounds memory).
    stride : int, optional
        Read every ``stride``-th frame.

    Returns
    -------
    FrameSource
        Iterable of :class:`FrameChunk` with ``float32`` Angstrom
        coordinates.

    Raises
    ------
    BackmapInputError
        Missing, empty or unparsable file; unsupported extension; missing
        topology; atom-count mismatch; duplicate atoms; NaN/inf coordinates
        (the latter for trajectories only while iterating).

    Notes
    -----
    PDB files are read with mdtraj's defaults, which include its standard
    name replacements (e.g. HSD/HIE -> HIS, CYX -> CYS, ILE CD -> CD1,
    OT1 -> O); mmCIF readers apply the same table. Of a PDB file's
    alternate locations each residue keeps its conformer of highest
    occupancy (A where they tie), with a note
    (:func:`~backmap_plugin.io.loaders.one_conformer`); of an mmCIF file's,
    the first listed.
    """
    return FrameSource(path, top=top, chunk=chunk, stride=stride)


def frames_from_openmm(topology, positions, source: str = "OpenMM positions"):
    """Convert an OpenMM topology and positions to the package's conventions.

    Parameters
    ----------
    topology : openmm.app.Topology or mdtraj.Topology
        The system's topology.
    positions : openmm.unit.Quantity or array_like
        Shape ``(n_atoms, 3)`` or ``(n_frames, n_atoms, 3)``. A Quantity may
        use any length unit; a plain array (or list of ``Vec3``) is taken to
        be in **nm**, OpenMM's unit.
    source : str
        What to call the positions in messages (e.g. the reporter's file).

    Returns
    -------
    topology : mdtraj.Topology
    xyz : numpy.ndarray
        ``float32`` coordinates in Angstrom, shape ``(n_frames, n_atoms, 3)``.

    Raises
    ------
    BackmapInputError
        Wrong shape, atom-count mismatch or non-finite positions.
    """
    from openmm import unit

    if not isinstance(topology, md.Topology):
        topology = topology_from_openmm(topology, source)
    if unit.is_quantity(positions):
        values = positions.value_in_unit(unit.angstrom)
        xyz = np.asarray([tuple(v) for v in values] if isinstance(values, list) else values, dtype=np.float64)
    else:
        xyz = np.asarray(positions, dtype=np.float64) * 10.0
    xyz = frames_of_shape(xyz, topology.n_atoms, source)
    check_finite(xyz, topology, source, 0)
    return topology, xyz


def frames_of_shape(xyz, n_atoms: int, source: str) -> np.ndarray:
    """Coordinates given as ``(n_atoms, 3)`` or ``(n_frames, n_atoms, 3)`` as ``(n_frames, n_atoms, 3)`` float32.

    Raises
    ------
    BackmapInputError
        Another shape, no frames, or another number of atoms (``source`` names the coordinates).
    """
    xyz = np.asarray(xyz)
    if xyz.ndim == 2:
        xyz = xyz[np.newaxis]
    if xyz.ndim != 3 or xyz.shape[2] != 3 or len(xyz) == 0:
        raise BackmapInputError(
            f"{source}: expected shape (n_atoms, 3) or (n_frames, n_atoms, 3), n_frames at least 1, got {xyz.shape}"
        )
    if xyz.shape[1] != n_atoms:
        raise BackmapInputError(f"{source}: {xyz.shape[1]} positions for a topology of {n_atoms} atoms")
    return xyz.astype(np.float32)


def springs_from_openmm(system) -> tuple[np.ndarray, np.ndarray]:
    """The bonds of an OpenMM ``System``: its harmonic bonds and constraints (custom bond forces hold other terms
    too: a restraint between two molecules, native contacts).

    Parameters
    ----------
    system : openmm.System

    Returns
    -------
    pairs : numpy.ndarray
        (P, 2) particle indices.
    lengths : numpy.ndarray
        (P,) equilibrium lengths (constraints: their distances), Angstrom.
    """
    import openmm

    angstrom = openmm.unit.angstrom
    pairs, lengths = [], []
    for k in range(system.getNumConstraints()):
        i, j, length = system.getConstraintParameters(k)
        pairs.append((i, j))
        lengths.append(length.value_in_unit(angstrom))
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, length, _ = force.getBondParameters(k)
                pairs.append((i, j))
                lengths.append(length.value_in_unit(angstrom))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(lengths, dtype=np.float64)


def bonds_from_openmm(system=None, topology=None) -> tuple[np.ndarray, np.ndarray]:
    """Every bond an OpenMM system and topology state: :func:`springs_from_openmm`'s, then the bonds of the
    system's ``CustomBondForce`` terms and the topology's bonds, their lengths not known (NaN).

    A custom bond force may hold other terms than bonds (native contacts, a restraint between two molecules), so
    these are evidence only where they join consecutive residues of one chain (what :class:`~backmap_plugin.api.
    Backmapper` reads of them).

    Parameters
    ----------
    system : openmm.System, optional
    topology : mdtraj.Topology, optional

    Returns
    -------
    pairs : numpy.ndarray
        (P, 2) particle indices.
    lengths : numpy.ndarray
        (P,) equilibrium lengths, Angstrom; NaN where not known.
    """
    import openmm

    pairs, lengths = springs_from_openmm(system) if system is not None else (np.zeros((0, 2), np.int64), np.zeros(0))
    more = [force.getBondParameters(k)[:2] for force in (system.getForces() if system is not None else [])
            if isinstance(force, openmm.CustomBondForce) for k in range(force.getNumBonds())]
    if topology is not None:
        more += [(a.index, b.index) for a, b in topology.bonds]
    more = np.array(more, dtype=np.int64).reshape(-1, 2)
    return np.concatenate([pairs, more]), np.concatenate([lengths, np.full(len(more), np.nan)])

