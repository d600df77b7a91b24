"""Reading and writing structures and trajectories.

This module is the package's boundary with files. Inside the package every
length is in Angstrom; mdtraj and OpenMM work in nm, so coordinates are
converted here (x10 on read, /10 on write where the format stores nm).
Coordinates are always numpy ``float32`` arrays shaped
``(n_frames, n_atoms, 3)`` and topologies are ``mdtraj.Topology`` objects.

Reading goes through :func:`open_frames`, which checks the file and its
topology up front and then yields bounded chunks of frames. Writing goes
through :class:`TrajectoryWriter`, which streams frames into a partial file
next to the output and moves it into place only when everything went well.

PDB and mmCIF are written by small writers in this module rather than by
mdtraj/OpenMM, because those drop insertion codes (residues 82, 82A and 82B
then merge into one residue on reading), mdtraj writes negative residue
numbers modulo 10000 and CONECT records that can point at the wrong atoms,
and OpenMM's mmCIF writer puts author residue numbers into
``label_seq_id``, which makes multi-model files unreadable when a number
repeats in a chain.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import warnings
from collections import Counter
from typing import Iterator, NamedTuple, Optional

import mdtraj as md
import numpy as np

from backmap_plugin.core.errors import BackmapInputError, BackmapOutputError

#: Extensions :func:`open_frames` reads (lower case; ``.gz`` only where mdtraj
#: decompresses it itself).
SUPPORTED_INPUT = (
    ".pdb", ".pdb.gz", ".cif", ".cif.gz", ".mmcif", ".mmcif.gz", ".gro", ".h5",
    ".dcd", ".xtc", ".trr", ".nc", ".netcdf",
)

#: Extensions :class:`TrajectoryWriter` writes.
SUPPORTED_OUTPUT = (".pdb", ".cif", ".dcd", ".xtc", ".h5")

#: Input formats that hold coordinates only and need a ``top`` file.
_NEEDS_TOPOLOGY = (".dcd", ".xtc", ".trr", ".nc", ".netcdf")

#: Input formats that hold a topology and can be passed as ``top`` (``.tpr``
#: through MDAnalysis, an optional dependency).
_TOPOLOGY_FORMATS = (".pdb", ".pdb.gz", ".cif", ".cif.gz", ".mmcif", ".mmcif.gz", ".gro", ".h5", ".tpr")

#: Small single-structure / ensemble formats that are loaded whole.
_LOADED_WHOLE = (".pdb", ".pdb.gz", ".cif", ".cif.gz", ".mmcif", ".mmcif.gz", ".gro")

_MMCIF = (".cif", ".cif.gz", ".mmcif", ".mmcif.gz")


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
        (triclinic cells kept), or None when the file has no unit cell.
    """

    start: int
    xyz: np.ndarray
    box: Optional[np.ndarray]


# ---------------------------------------------------------------------------
# helpers shared by reading and writing
# ---------------------------------------------------------------------------

def _match_extension(path: str, choices: tuple) -> Optional[str]:
    """Return the longest extension in ``choices`` that ``path`` ends with."""
    lower = path.lower()
    hits = [ext for ext in choices if lower.endswith(ext)]
    return max(hits, key=len) if hits else None


def _describe_atom(atom) -> str:
    """Chain id, residue name+number and atom name of an mdtraj atom."""
    residue = atom.residue
    chain_id = residue.chain.chain_id
    chain = repr(chain_id) if chain_id else f"#{residue.chain.index}"
    return f"chain {chain} residue {residue.name}{residue.resSeq} atom {atom.name}"


def _check_finite(xyz: np.ndarray, topology, path: str, first_frame: int, stride: int = 1) -> None:
    """Raise BackmapInputError at the first NaN/inf coordinate, if any."""
    bad = ~np.isfinite(xyz).all(axis=2)
    if not bad.any():
        return
    frame, atom_index = (int(i) for i in np.argwhere(bad)[0])
    frame += first_frame
    where = f"frame {frame}"
    if stride != 1:
        where += f" (frame {frame * stride} of the file, stride {stride})"
    raise BackmapInputError(
        f"{path}: {where} has a non-finite coordinate {xyz[frame - first_frame, atom_index].tolist()} "
        f"for {_describe_atom(topology.atom(atom_index))}"
    )


def _check_duplicate_atoms(topology, path: str) -> None:
    """Raise BackmapInputError if one residue holds two atoms of the same name."""
    for residue in topology.residues:
        counts = Counter(atom.name for atom in residue.atoms)
        twice = [name for name, n in counts.items() if n > 1]
        if twice:
            atom = next(a for a in residue.atoms if a.name == twice[0])
            raise BackmapInputError(
                f"{path}: duplicate atom: {_describe_atom(atom)} appears {counts[twice[0]]} times in "
                f"one residue (alternate locations are merged on reading, so this is the same atom "
                f"listed twice, or two residues with the same number and name next to each other)"
            )


def _insertion_codes(chain, path: str) -> list:
    """Insertion codes for a chain: ' ' then 'A', 'B', ... for repeated numbers.

    mdtraj drops insertion codes on reading, so residues 82, 82A and 82B
    come back as three residues numbered 82. Writing them with codes again
    keeps readers from merging them.
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


def generated_chain_id(index: int) -> str:
    """A, B, ..., Z, AA, AB, ... for chain ``index``."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _element_symbol(atom) -> str:
    """Element symbol of an mdtraj atom, '' for none or virtual sites."""
    element = atom.element
    if element is None or element is md.element.virtual:
        return ""
    return element.symbol


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------

def _check_input_file(path: str, choices: tuple, role: str) -> str:
    """Check a file exists, is non-empty and has an extension in ``choices``."""
    if not os.path.exists(path):
        raise BackmapInputError(f"{path}: {role} file does not exist")
    if os.path.isdir(path):
        raise BackmapInputError(f"{path}: {role} file is a directory")
    ext = _match_extension(path, choices)
    if ext is None:
        raise BackmapInputError(
            f"{path}: unsupported {role} file extension; supported: {', '.join(choices)}"
        )
    if not path.endswith(ext):
        raise BackmapInputError(
            f"{path}: mdtraj picks the format by the exact, lower-case extension; rename the file to end in {ext}"
        )
    if os.path.getsize(path) == 0:
        raise BackmapInputError(f"{path}: {role} file is empty")
    return ext


def _mdtraj_can_read(ext: str) -> bool:
    """Whether the installed mdtraj has a loader for ``ext``."""
    return ext in md.formats.registry.FormatRegistry.loaders


def _load_mmcif_with_openmm(path: str) -> md.Trajectory:
    """Load every model of an mmCIF file with OpenMM's reader."""
    import gzip

    from openmm import unit
    from openmm.app import PDBxFile

    if path.lower().endswith(".gz"):
        with gzip.open(path, "rt") as handle:
            pdbx = PDBxFile(handle)
    else:
        pdbx = PDBxFile(path)
    topology = md.Topology.from_openmm(pdbx.topology)
    xyz = np.array(
        [pdbx.getPositions(asNumpy=True, frame=i).value_in_unit(unit.nanometer)
         for i in range(pdbx.getNumFrames())],
        dtype=np.float32,
    )
    lengths = angles = None
    cell = pdbx.topology.getUnitCellDimensions()
    if cell is not None:
        lengths = np.tile(cell.value_in_unit(unit.nanometer), (len(xyz), 1))
        angles = np.full((len(xyz), 3), 90.0)
    return md.Trajectory(xyz, topology, unitcell_lengths=lengths, unitcell_angles=angles)


def _pdb_has_atoms(path: str) -> bool:
    """Whether a (possibly gzipped) PDB file has an ATOM or HETATM record."""
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", errors="replace") as handle:
            return any(line.startswith(("ATOM", "HETATM")) for line in handle)
    except OSError:
        return True  # unreadable: let the parser's own message through


def _load_whole(path: str, ext: str) -> md.Trajectory:
    """Load a whole structure file with mdtraj (OpenMM for mmCIF if needed).

    mdtraj's mmCIF reader keys atoms of later models by author residue
    number without insertion code, so it rejects multi-model files where a
    number repeats in a chain; OpenMM's reader (keyed by ``label_seq_id``)
    reads them, so it is tried when mdtraj fails.
    """
    try:
        if ext in _MMCIF and not _mdtraj_can_read(ext):
            return _load_mmcif_with_openmm(path)
        if ext in (".pdb", ".pdb.gz"):
            return md.load_pdb(path)  # md.load parses a PDB twice
        return md.load(path)
    except Exception as exc:  # mdtraj raises many types; keep its message
        if ext in (".pdb", ".pdb.gz") and not _pdb_has_atoms(path):
            raise BackmapInputError(f"{path}: is empty: no ATOM/HETATM records") from exc
        if ext in _MMCIF:
            try:
                return _load_mmcif_with_openmm(path)
            except Exception:
                pass
        raise BackmapInputError(f"{path}: cannot be read as {ext}: {type(exc).__name__}: {exc}") from exc


def _element_or_none(symbol: str):
    """The mdtraj element of a symbol; None for coarse-grained or unknown types."""
    try:
        return md.element.get_by_symbol(symbol.strip().capitalize())
    except KeyError:
        return None


def _load_tpr_topology(path: str) -> md.Topology:
    """Topology of a GROMACS run input (.tpr) read with MDAnalysis: one chain per molecule
    (split further where the molecule's chain ids change)."""
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
    molecules = atoms.molnums if hasattr(atoms, "molnums") else np.zeros(len(atoms), dtype=int)
    chain_ids = atoms.chainIDs if hasattr(atoms, "chainIDs") else np.full(len(atoms), "")
    elements = atoms.elements if hasattr(atoms, "elements") else np.full(len(atoms), "")
    topology = md.Topology()
    chain_key = residue_index = chain = residue = None
    for i in range(len(atoms)):
        key = (int(molecules[i]), str(chain_ids[i]))
        if key != chain_key:
            chain = topology.add_chain(chain_id=generated_chain_id(topology.n_chains))
            chain_key, residue_index = key, None
        if int(atoms.resindices[i]) != residue_index:
            residue_index = int(atoms.resindices[i])
            residue = topology.add_residue(str(atoms.resnames[i]), chain, resSeq=int(atoms.resids[i]))
        topology.add_atom(str(atoms.names[i]), _element_or_none(str(elements[i])), residue, serial=i + 1)
    return topology


def _load_topology(path: str, ext: str) -> md.Topology:
    """Topology of a structure file (or of an .h5 trajectory, or a .tpr run input)."""
    if ext == ".tpr":
        return _load_tpr_topology(path)
    if ext == ".h5":
        try:
            return md.load_topology(path)
        except Exception as exc:
            raise BackmapInputError(
                f"{path}: cannot be read as {ext}: {type(exc).__name__}: {exc}"
            ) from exc
    return _load_whole(path, ext).topology


def _flush_c_stdio() -> None:
    """Flush the C library's stdio buffers (printf output of compiled readers)."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def c_stdout_to_stderr():
    """Send file descriptor 1 to stderr for the duration of the block.

    mdtraj's compiled DCD plugin prints ``dcdplugin) ...`` lines to the C
    stdout whenever it opens a file; they go to stderr so that stdout stays
    for the program's own output.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1
        yield
        return
    _flush_c_stdio()
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        _flush_c_stdio()
        os.dup2(saved, 1)
        os.close(saved)


def _count_trajectory_atoms(path: str, ext: str) -> int:
    """Number of atoms in the first frame of a coordinate-only trajectory."""
    try:
        with c_stdout_to_stderr(), md.open(path) as handle:
            first = handle.read(n_frames=1)
        xyz = first[0] if isinstance(first, tuple) else first
    except Exception as exc:
        raise BackmapInputError(f"{path}: cannot be read as {ext}: {type(exc).__name__}: {exc}") from exc
    if xyz is None or len(xyz) == 0:
        raise BackmapInputError(f"{path}: contains no frames")
    return int(xyz.shape[1])


#: GROMACS writes residue numbers modulo 100000.
_GRO_RESIDUE_WRAP = 100000


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


def split_chains_by_numbering(topology):
    """Copy of an mdtraj topology with a new chain wherever residue numbers restart.

    Meant for ``.gro`` topologies (no chain ids: mdtraj reads one chain).
    Each chain of ``topology`` is split before every residue whose number
    is not larger than the previous one (:func:`chain_starts`). Chains that
    had an id keep it for all their pieces; chains without one get
    generated ids (A, B, ..., Z, AA, ...) in order.

    Parameters
    ----------
    topology : mdtraj.Topology

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


def _box_vectors(traj: md.Trajectory) -> Optional[np.ndarray]:
    """(F, 3, 3) periodic box vectors (rows, Angstrom) of a trajectory, triclinic included; None without a box."""
    if traj.unitcell_vectors is None:
        return None
    return (traj.unitcell_vectors.astype(np.float64) * 10.0).astype(np.float32)


class FrameSource:
    """Frames of a structure or trajectory file, read in bounded chunks.

    Made by :func:`open_frames`, which checks the file, its topology, atom
    counts and duplicate atoms up front. Iterating (any number of times)
    yields :class:`FrameChunk` items; trajectories are read with
    ``mdtraj.iterload`` so at most ``chunk`` frames are in memory, while
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
    """

    def __init__(self, path, top=None, chunk: int = 1000, stride: int = 1):
        self.path = os.fspath(path)
        self.top_path = None if top is None else os.fspath(top)
        for name, value in (("chunk", chunk), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise BackmapInputError(f"{self.path}: {name} must be a positive integer, got {value!r}")
        self.chunk = int(chunk)
        self.stride = int(stride)
        self._ext = _check_input_file(self.path, SUPPORTED_INPUT, "input")
        if self._ext in _NEEDS_TOPOLOGY and self.top_path is None:
            raise BackmapInputError(
                f"{self.path}: {self._ext} files hold coordinates only, so this needs a topology file: "
                f"pass --top (one of {', '.join(_TOPOLOGY_FORMATS)})"
            )
        top_topology = None
        if self.top_path is not None:
            top_ext = _check_input_file(self.top_path, _TOPOLOGY_FORMATS, "topology")
            top_topology = _load_topology(self.top_path, top_ext)

        self._whole = None  # (xyz in Angstrom, box in Angstrom or None), strided
        if self._ext in _LOADED_WHOLE:
            traj = _load_whole(self.path, self._ext)
            topology, n_atoms = traj.topology, traj.n_atoms
            if traj.n_frames == 0:
                raise BackmapInputError(f"{self.path}: contains no frames")
            xyz = (traj.xyz[:: self.stride].astype(np.float64) * 10.0).astype(np.float32)
            self._whole = (xyz, _box_vectors(traj[:: self.stride]))
        elif self._ext in _NEEDS_TOPOLOGY:
            topology, n_atoms = None, _count_trajectory_atoms(self.path, self._ext)
        else:  # .h5: topology inside, frames streamed
            topology = _load_topology(self.path, self._ext)
            n_atoms = topology.n_atoms

        if top_topology is not None:
            if top_topology.n_atoms != n_atoms:
                raise BackmapInputError(
                    f"atom count mismatch: topology {self.top_path} has {top_topology.n_atoms} atoms "
                    f"but coordinates {self.path} have {n_atoms}"
                )
            topology = top_topology
        if n_atoms == 0:
            raise BackmapInputError(f"{self.path}: contains no atoms")
        if (self.top_path or self.path).lower().endswith(".gro"):
            topology = split_chains_by_numbering(topology)  # .gro has no chain ids
        _check_duplicate_atoms(topology, self.top_path or self.path)
        self.topology = topology
        self.n_atoms = n_atoms
        if self._whole is not None:
            _check_finite(self._whole[0], topology, self.path, 0, self.stride)

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
                with c_stdout_to_stderr(), md.open(self.path) as handle:
                    total = len(handle)
                self._n_frames = -(-total // self.stride)
            except Exception:  # a length is only for the progress bar
                self._n_frames = None
        return self._n_frames

    def __iter__(self) -> Iterator[FrameChunk]:
        if self._whole is not None:
            xyz, box = self._whole
            for start in range(0, len(xyz), self.chunk):
                stop = start + self.chunk
                yield FrameChunk(start, xyz[start:stop].copy(), None if box is None else box[start:stop].copy())
            return
        yield from self._iter_streamed()

    def _iter_streamed(self) -> Iterator[FrameChunk]:
        # mdtraj's HDF5 reader counts ``n_frames`` in file frames, so with a
        # stride each chunk must span a multiple of it to keep the phase.
        per_read = self.chunk * self.stride if self._ext == ".h5" else self.chunk
        start = 0
        for traj in self._iterload(per_read):
            for first in range(0, traj.n_frames, self.chunk):
                piece = traj[first:first + self.chunk]
                xyz = (piece.xyz.astype(np.float64) * 10.0).astype(np.float32)
                _check_finite(xyz, self.topology, self.path, start, self.stride)
                yield FrameChunk(start, xyz, _box_vectors(piece))
                start += piece.n_frames
        if start == 0:
            raise BackmapInputError(f"{self.path}: contains no frames")

    def _iterload(self, per_read: int) -> Iterator[md.Trajectory]:
        """``mdtraj.iterload`` with its exceptions wrapped."""
        chunks = md.iterload(self.path, chunk=per_read, stride=self.stride,
                             top=self.topology if self._ext in _NEEDS_TOPOLOGY else None)
        done = 0
        while True:
            try:
                with c_stdout_to_stderr():  # the first read opens the file
                    traj = next(chunks)
            except StopIteration:
                return
            except Exception as exc:
                raise BackmapInputError(
                    f"{self.path}: cannot be read as {self._ext} (near frame {done}): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if traj.n_frames == 0:
                return
            done += traj.n_frames
            yield traj


def open_frames(path, top=None, chunk: int = 1000, stride: int = 1) -> FrameSource:
    """Open a structure or trajectory file for chunked reading.

    Parameters
    ----------
    path : str or os.PathLike
        Coordinate file; its extension must be in :data:`SUPPORTED_INPUT`.
    top : str or os.PathLike, optional
        Topology file (PDB, mmCIF, GRO or H5). Required for ``.dcd``,
        ``.xtc``, ``.trr``, ``.nc`` and ``.netcdf``; if given for a format
        that has its own topology, it replaces that topology (atom counts
        must match).
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
    OT1 -> O); mmCIF readers apply the same table. For alternate locations
    the first one listed in the file is kept.
    """
    return FrameSource(path, top=top, chunk=chunk, stride=stride)


def frames_from_openmm(topology, positions):
    """Convert an OpenMM topology and positions to the package's conventions.

    Parameters
    ----------
    topology : openmm.app.Topology or mdtraj.Topology
        The system's topology.
    positions : openmm.unit.Quantity or array_like
        Shape ``(n_atoms, 3)`` or ``(n_frames, n_atoms, 3)``. A Quantity may
        use any length unit; a plain array (or list of ``Vec3``) is taken to
        be in **nm**, OpenMM's unit.

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
        topology = md.Topology.from_openmm(topology)
    if unit.is_quantity(positions):
        values = positions.value_in_unit(unit.angstrom)
        xyz = np.asarray([tuple(v) for v in values] if isinstance(values, list) else values, dtype=np.float64)
    else:
        xyz = np.asarray(positions, dtype=np.float64) * 10.0
    if xyz.ndim == 2:
        xyz = xyz[np.newaxis]
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise BackmapInputError(
            f"OpenMM positions: expected shape (n_atoms, 3) or (n_frames, n_atoms, 3), got {xyz.shape}"
        )
    if xyz.shape[1] != topology.n_atoms:
        raise BackmapInputError(
            f"OpenMM positions: {xyz.shape[1]} positions for a topology of {topology.n_atoms} atoms"
        )
    xyz = xyz.astype(np.float32)
    _check_finite(xyz, topology, "OpenMM positions", 0)
    return topology, xyz


# ---------------------------------------------------------------------------
# writing: format back ends
# ---------------------------------------------------------------------------

class _PdbBackend:
    """Fixed-column PDB writer: MODEL/ENDMDL, TER at chain ends, END, no CONECT."""

    def __init__(self, partial: str, topology: md.Topology, path: str, resume=None):
        self._path = path
        self._prefix, self._suffix, self._ter_after = self._atom_fields(topology, path)
        self._first_offset = None
        self._first_frame = None
        # a single kept model would have to be rewritten without MODEL at the end: start over instead
        if resume is not None and resume["frames"] >= 2:
            self._file = _reopen_text(partial, resume, "ascii")
            self.kept = resume["frames"]
        else:
            self._file = open(partial, "w", encoding="ascii", newline="\n")
            self.kept = 0

    def state(self) -> dict:
        """Where the file is complete (byte offset), for resuming."""
        return {"offset": self._file.tell()}

    @staticmethod
    def _atom_fields(topology, path):
        """Columns 1-30 and 55-80 of every ATOM line, and the TER lines."""
        prefix, suffix, ter_after = [], [], {}
        serial = 0
        for chain in topology.chains:
            chain_id = chain.chain_id
            if chain_id is None or chain_id == "":
                chain_id = generated_chain_id(chain.index)[-1]
            if len(chain_id) != 1:
                raise BackmapInputError(
                    f"{path}: chain id {chain_id!r} (chain #{chain.index}) does not fit the one-character "
                    f"PDB chain column; write .cif instead"
                )
            codes = _insertion_codes(chain, path)
            last_atom = None
            for residue, code in zip(chain.residues, codes):
                name = residue.name
                if len(name) > 4:
                    raise BackmapInputError(
                        f"{path}: residue name {name!r} (chain {chain_id!r} residue {residue.resSeq}) is "
                        f"longer than the 4 characters PDB allows; write .cif instead"
                    )
                res_field = f"{name:>3} " if len(name) <= 3 else name
                number = residue.resSeq if -999 <= residue.resSeq <= 9999 else residue.resSeq % 10000
                for atom in residue.atoms:
                    serial += 1
                    symbol = _element_symbol(atom)
                    if len(atom.name) > 4:
                        raise BackmapInputError(
                            f"{path}: atom name {atom.name!r} ({_describe_atom(atom)}) is longer than the "
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
                    suffix.append(f"  1.00  0.00      {segment:<4}{symbol.upper():>2}{charge_field}\n")
                    last_atom = len(prefix) - 1
                    last = (res_field, number, code)
            if last_atom is not None:
                serial += 1
                res_field, number, code = last
                ter_after[last_atom] = f"TER   {serial % 100000:5d}      {res_field}{chain_id}{number:4d}{code}\n"
        return prefix, suffix, ter_after

    def check(self, xyz: np.ndarray, topology, first_frame: int) -> None:
        """Coordinates must fit the 8.3f columns."""
        bad = (xyz <= -999.9995) | (xyz >= 9999.9995)
        if bad.any():
            frame, atom_index, _ = (int(i) for i in np.argwhere(bad)[0])
            raise BackmapInputError(
                f"{self._path}: frame {first_frame + frame} coordinate {xyz[frame, atom_index].tolist()} of "
                f"{_describe_atom(topology.atom(atom_index))} does not fit the PDB coordinate columns "
                f"(-999.999 to 9999.999 Angstrom); write .cif, .dcd or .xtc instead"
            )

    def _model_text(self, frame: np.ndarray) -> str:
        lines = []
        for i, (x, y, z) in enumerate(frame.tolist()):
            lines.append(f"{self._prefix[i]}{x:8.3f}{y:8.3f}{z:8.3f}{self._suffix[i]}")
            if i in self._ter_after:
                lines.append(self._ter_after[i])
        return "".join(lines)

    def write(self, xyz: np.ndarray, first_frame: int) -> None:
        for k, frame in enumerate(xyz):
            index = first_frame + k
            if index == 0:
                self._first_offset = self._file.tell()
                self._first_frame = frame.copy()
            self._file.write(f"MODEL     {index % 9999 + 1:4d}\n{self._model_text(frame)}ENDMDL\n")
        self._file.flush()

    def finish(self, n_frames: int) -> None:
        if n_frames == 1:  # a single structure has no MODEL record
            self._file.seek(self._first_offset)
            self._file.truncate()
            self._file.write(self._model_text(self._first_frame))
        self._file.write("END\n")
        self._file.close()

    def abort(self) -> None:
        self._file.close()


def _cif_token(value: str) -> str:
    """Quote a value for an mmCIF loop when needed."""
    if value == "":
        return "?"
    if re.search(r"\s", value) or value[0] in "_#$;[]'\"" or value in (".", "?"):
        return f'"{value}"' if "'" in value else f"'{value}'"
    return value


class _CifBackend:
    """Minimal mmCIF writer: one ``atom_site`` loop, one model per frame.

    ``label_asym_id``/``label_seq_id`` are unique per chain/residue (as the
    format requires) while ``auth_asym_id``/``auth_seq_id`` and
    ``pdbx_PDB_ins_code`` keep the topology's chain ids and residue numbers.
    """

    _COLUMNS = (
        "group_PDB", "id", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id",
        "label_asym_id", "label_entity_id", "label_seq_id", "pdbx_PDB_ins_code", "Cartn_x",
        "Cartn_y", "Cartn_z", "occupancy", "B_iso_or_equiv", "auth_seq_id", "auth_comp_id",
        "auth_asym_id", "auth_atom_id", "pdbx_PDB_model_num",
    )

    def __init__(self, partial: str, topology: md.Topology, path: str, resume=None):
        chain_ids = [chain.chain_id for chain in topology.chains]
        usable = all(cid and cid.strip() for cid in chain_ids)
        unique = usable and len(set(chain_ids)) == len(chain_ids)
        self._prefix, self._suffix = [], []
        serial = 0
        for chain in topology.chains:
            label = chain.chain_id if unique else generated_chain_id(chain.index)
            author = chain.chain_id if chain.chain_id and chain.chain_id.strip() else label
            for seq, (residue, code) in enumerate(zip(chain.residues, _insertion_codes(chain, path)), start=1):
                comp = _cif_token(residue.name)
                icode = "?" if code == " " else code
                for atom in residue.atoms:
                    serial += 1
                    name = _cif_token(atom.name)
                    symbol = _element_symbol(atom) or "?"
                    self._prefix.append(
                        f"ATOM {serial} {symbol} {name} . {comp} {_cif_token(label)} ? {seq} {icode} "
                    )
                    self._suffix.append(f" 1.00 0.00 {residue.resSeq} {comp} {_cif_token(author)} {name} ")
        self.kept = 0 if resume is None else resume["frames"]
        if self.kept:
            self._file = _reopen_text(partial, resume, "utf-8")
            return
        block = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(path)) or "backmap"
        self._file = open(partial, "w", encoding="utf-8", newline="\n")
        header = [f"data_{block}", "#", f"_entry.id {block}", "#", "loop_"]
        header += [f"_atom_site.{column}" for column in self._COLUMNS]
        self._file.write("\n".join(header) + "\n")
        self._file.flush()

    def state(self) -> dict:
        """Where the file is complete (byte offset), for resuming."""
        return {"offset": self._file.tell()}

    def check(self, xyz, topology, first_frame) -> None:
        """mmCIF has no column limits."""

    def write(self, xyz: np.ndarray, first_frame: int) -> None:
        for k, frame in enumerate(xyz):
            model = first_frame + k + 1
            self._file.write("".join(
                f"{self._prefix[i]}{x:.3f} {y:.3f} {z:.3f}{self._suffix[i]}{model}\n"
                for i, (x, y, z) in enumerate(frame.tolist())
            ))
        self._file.flush()

    def finish(self, n_frames: int) -> None:
        self._file.write("#\n")
        self._file.close()

    def abort(self) -> None:
        self._file.close()


class _MdtrajBackend:
    """DCD (Angstrom), XTC and H5 (nm) through mdtraj's file objects.

    XTC frames carry their frame index as step and time, so a file does not
    depend on how its frames were cut into writes. Resuming rewrites the
    kept frames of the old partial file into a fresh one (mdtraj cannot
    append to these formats); the values read back are written identically.
    """

    _CLASSES = {".h5": "HDF5TrajectoryFile", ".xtc": "XTCTrajectoryFile", ".dcd": "DCDTrajectoryFile"}

    def __init__(self, partial: str, topology: md.Topology, path: str, ext: str, resume=None):
        self._ext = ext
        self._cls = getattr(md.formats, self._CLASSES[ext])
        kept = None
        if resume is not None and resume["frames"]:
            kept = self._read_kept(partial, resume["frames"], path)
        with c_stdout_to_stderr():
            self._file = self._cls(partial, "w", force_overwrite=True)
        if ext == ".h5":
            self._file.topology = topology
        self.kept = 0
        if kept is not None:
            self.write(kept, 0)
            self.kept = len(kept)

    def _read_kept(self, partial: str, n_frames: int, path: str) -> np.ndarray:
        """The first ``n_frames`` frames (Angstrom) of the old partial file."""
        try:
            with c_stdout_to_stderr(), self._cls(partial, "r") as handle:
                found = handle.read(n_frames=n_frames)
        except Exception as exc:
            raise BackmapInputError(f"{path}: cannot resume: partial file {partial} is unreadable: {exc}") from exc
        xyz = found.coordinates if self._ext == ".h5" else found[0]
        if xyz is None or len(xyz) < n_frames:
            raise BackmapInputError(
                f"{path}: cannot resume: partial file {partial} holds {0 if xyz is None else len(xyz)} complete "
                f"frame(s), the progress record says {n_frames}; start over with --overwrite"
            )
        return xyz if self._ext == ".dcd" else xyz * np.float32(10.0)

    def state(self) -> dict:
        """Nothing beyond the frame count is needed to resume these formats."""
        return {}

    def check(self, xyz, topology, first_frame) -> None:
        """Binary formats have no column limits."""

    def write(self, xyz: np.ndarray, first_frame: int) -> None:
        if self._ext == ".dcd":
            self._file.write(xyz)  # DCD stores Angstrom; mdtraj writes it unbuffered
        elif self._ext == ".xtc":
            step = np.arange(first_frame, first_frame + len(xyz), dtype=np.int32)
            self._file.write(xyz / np.float32(10.0), time=step.astype(np.float32), step=step)
            self._file.flush()
        else:
            self._file.write(coordinates=xyz / np.float32(10.0))
            self._file.flush()

    def finish(self, n_frames: int) -> None:
        self._file.close()

    def abort(self) -> None:
        self._file.close()


def _reopen_text(partial: str, resume: dict, encoding: str):
    """Open a partial text file for appending after its last complete frame (``resume['offset']``)."""
    offset = resume.get("offset")
    size = os.path.getsize(partial) if os.path.exists(partial) else None
    if offset is None or size is None or size < offset:
        raise BackmapInputError(
            f"{partial}: cannot resume: the partial file is missing or shorter than the progress record says; "
            "start over with --overwrite"
        )
    handle = open(partial, "r+", encoding=encoding, newline="\n")
    handle.seek(offset)
    handle.truncate()
    return handle


def write_text(path, text: str) -> None:
    """Write a UTF-8 text file atomically.

    The text goes to a hidden temporary file ``.<name>.<pid>.partial`` in
    the same directory, which is then moved onto ``path`` with
    ``os.replace``; if writing fails, the temporary file is removed and
    ``path`` is left as it was.

    Parameters
    ----------
    path : str or os.PathLike
        File to write; its directory must exist.
    text : str
    """
    path = os.fspath(path)
    partial = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.partial")
    try:
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def write_json(path, payload) -> None:
    """Write a JSON file atomically (:func:`write_text`); NaN is refused.

    Parameters
    ----------
    path : str or os.PathLike
    payload : JSON-serialisable object
    """
    write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------
# writing: public API
# ---------------------------------------------------------------------------

def check_output_path(path, overwrite: bool = True) -> str:
    """Check that ``path`` can be written as a trajectory, before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    str
        The output format's extension.

    Raises
    ------
    BackmapInputError
        Unsupported extension, missing directory, a directory in the way,
        an existing file with ``overwrite=False``, no write permission.
    """
    path = os.fspath(path)
    ext = _match_extension(path, SUPPORTED_OUTPUT)
    if ext is None:
        raise BackmapInputError(f"{path}: unsupported output file extension; supported: {', '.join(SUPPORTED_OUTPUT)}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise BackmapInputError(f"{path}: cannot write output: directory {directory} does not exist")
    if os.path.isdir(path):
        raise BackmapInputError(f"{path}: cannot write output: it is a directory")
    if os.path.exists(path) and not overwrite:
        raise BackmapInputError(f"{path}: output file exists and overwrite=False")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BackmapInputError(f"{path}: cannot write output: no permission to write in {directory}")
    return ext


class TrajectoryWriter:
    """Stream frames to a structure/trajectory file, replacing it atomically.

    Frames go to a partial file ``.<name>.partial<ext>`` in the output's
    directory, flushed after every :meth:`write`. A successful :meth:`close`
    (or leaving the ``with`` block normally) moves it onto ``path`` with
    ``os.replace``. If the ``with`` block raises, the partial file is closed
    and kept under its ``.partial`` name, ``path`` is left untouched, and the
    exception propagates.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; the extension (one of :data:`SUPPORTED_OUTPUT`) chooses
        the format.
    topology : mdtraj.Topology
        Topology of every frame. PDB and mmCIF keep its chain ids and residue
        numbers (consecutive residues sharing a number get insertion codes
        A, B, ...); neither writes bonds (readers rebuild standard and
        disulfide bonds).
    overwrite : bool, optional
        If False, an existing ``path`` is an error.
    atomic : bool, optional
        If False, frames go straight to ``path`` (flushed after every
        write, so a crashed process leaves every written frame readable
        there); used by the OpenMM reporter, which has no clear end.
    resume : dict, optional
        Continue the partial file of an interrupted writer: the dict
        :meth:`state` returned after its last complete write. Frames after
        that point are cut off. :attr:`frames_written` tells how many frames
        were kept (a PDB file keeping a single model starts over, 0).

    Attributes
    ----------
    path : str
        Final output path.
    partial_path : str
        Path of the partial file.
    frames_written : int
        Frames written so far.

    Raises
    ------
    BackmapInputError
        Unsupported extension, unwritable location (missing directory, no
        permission), existing file with ``overwrite=False``, a topology the
        format cannot hold (e.g. a two-character chain id in PDB), or a
        partial file that cannot be resumed. Raised here, before any frame
        is written.

    Notes
    -----
    PDB output has MODEL/ENDMDL records only when more than one frame was
    written, a TER record after every chain (also for chains that share a
    chain id) and no CONECT records. mmCIF output has one model per frame;
    if chain ids repeat, ``label_asym_id`` gets unique generated ids (which
    OpenMM/mdtraj readers then report as the chain ids) while
    ``auth_asym_id`` keeps the originals.
    """

    def __init__(self, path, topology: md.Topology, overwrite: bool = True, atomic: bool = True,
                 resume: Optional[dict] = None):
        self.path = os.fspath(path)
        self.atomic = atomic
        if not isinstance(topology, md.Topology):
            raise TypeError(f"{self.path}: topology must be an mdtraj.Topology, got {type(topology).__name__}")
        self.topology = topology
        self.frames_written = 0
        self._backend = None
        ext = check_output_path(self.path, overwrite)
        directory = os.path.dirname(os.path.abspath(self.path))
        if atomic:
            self.partial_path = os.path.join(directory, f".{os.path.basename(self.path)}.partial{ext}")
        else:
            self.partial_path = self.path
        stale_partial = os.path.exists(self.partial_path)
        try:
            if ext == ".pdb":
                self._backend = _PdbBackend(self.partial_path, topology, self.path, resume)
            elif ext == ".cif":
                self._backend = _CifBackend(self.partial_path, topology, self.path, resume)
            else:
                self._backend = _MdtrajBackend(self.partial_path, topology, self.path, ext, resume)
            self.frames_written = self._backend.kept
        except OSError as exc:
            if not stale_partial:
                self._remove_partial()
            raise BackmapInputError(f"{self.path}: cannot write output: {exc}") from exc
        except BaseException:
            if not stale_partial:
                self._remove_partial()
            raise

    def _remove_partial(self) -> None:
        if os.path.exists(self.partial_path):
            os.remove(self.partial_path)

    def write(self, xyz) -> None:
        """Append frames.

        Parameters
        ----------
        xyz : array_like
            ``float32``-convertible coordinates in Angstrom, shape
            ``(n, n_atoms, 3)`` (or ``(n_atoms, 3)`` for one frame).

        Raises
        ------
        BackmapInputError
            Wrong shape, atom-count mismatch, non-finite coordinates, or
            coordinates the format cannot hold. Nothing of this call is
            written then.
        ValueError
            The writer is closed.
        """
        if self._backend is None:
            raise ValueError(f"{self.path}: writer is closed")
        xyz = np.asarray(xyz, dtype=np.float32)
        if xyz.ndim == 2:
            xyz = xyz[np.newaxis]
        if xyz.ndim != 3 or xyz.shape[1:] != (self.topology.n_atoms, 3):
            raise BackmapInputError(
                f"{self.path}: expected coordinates shaped (n_frames, {self.topology.n_atoms}, 3), got {xyz.shape}"
            )
        _check_finite(xyz, self.topology, self.path, self.frames_written)
        self._backend.check(xyz, self.topology, self.frames_written)
        try:
            self._backend.write(np.ascontiguousarray(xyz), self.frames_written)
        except OSError as exc:
            raise BackmapOutputError(
                exc.errno,
                f"{self.path}: writing frame(s) {self.frames_written}-{self.frames_written + len(xyz) - 1} failed: "
                f"{exc.strerror or exc}; the {self.frames_written} frame(s) written before are kept in "
                f"{self.partial_path}",
            ) from exc
        self.frames_written += len(xyz)

    def state(self) -> dict:
        """What a later writer needs to continue this file (``resume=``).

        Returns
        -------
        dict
            ``frames`` written so far and the format's own position (e.g. the
            byte offset after the last complete frame of a PDB file).

        Raises
        ------
        ValueError
            The writer is closed.
        """
        if self._backend is None:
            raise ValueError(f"{self.path}: writer is closed")
        return {"frames": self.frames_written, **self._backend.state()}

    def close(self) -> None:
        """Finish the file and move it onto :attr:`path`.

        Raises
        ------
        BackmapInputError
            No frame was written (the partial file is removed).
        """
        if self._backend is None:
            return
        backend, self._backend = self._backend, None
        if self.frames_written == 0:
            backend.abort()
            self._remove_partial()
            raise BackmapInputError(f"{self.path}: no frames were written")
        backend.finish(self.frames_written)
        if self.atomic:
            os.replace(self.partial_path, self.path)

    def abort(self) -> None:
        """Close without moving into place; the partial file is kept."""
        if self._backend is None:
            return
        backend, self._backend = self._backend, None
        backend.abort()

    def __enter__(self) -> "TrajectoryWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is None:
            self.close()
            return False
        self.abort()
        if exc is not None and hasattr(exc, "add_note") and os.path.exists(self.partial_path):
            exc.add_note(f"partial output kept at {self.partial_path}")
        return False


def write_trajectory(path, topology: md.Topology, xyz) -> None:
    """Write frames to a file in one call (a :class:`TrajectoryWriter` + one write).

    Parameters
    ----------
    path : str or os.PathLike
        Output file; extension in :data:`SUPPORTED_OUTPUT`.
    topology : mdtraj.Topology
        Topology of the frames.
    xyz : array_like
        Coordinates in Angstrom, shape ``(n_frames, n_atoms, 3)``.

    Raises
    ------
    BackmapInputError
        As :class:`TrajectoryWriter` and :meth:`TrajectoryWriter.write`.
    """
    with TrajectoryWriter(path, topology) as writer:
        writer.write(xyz)
