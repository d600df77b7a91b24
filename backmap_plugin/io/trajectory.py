"""Writing structures and trajectories: :class:`TrajectoryWriter` streams frames
into a partial file next to the output, in the format the output's extension
names (:mod:`~backmap_plugin.io.pdb`, :mod:`~backmap_plugin.io.cif`,
:mod:`~backmap_plugin.io.mdtraj_formats`), and moves it into place with
:func:`backmap_plugin.io.atomic.commit` only when everything went well.
Coordinates come in Angstrom and are converted where a format stores nm.
"""

from __future__ import annotations

import errno
import os
from typing import Optional

import mdtraj as md
import numpy as np

from backmap_plugin.core.errors import BackmapInputError, BackmapOutputError
from backmap_plugin.io.atomic import commit
from backmap_plugin.io.atoms import check_finite
from backmap_plugin.io.cif import CifBackend
from backmap_plugin.io.mdtraj_formats import MdtrajBackend
from backmap_plugin.io.paths import check_output_path, partial_path
from backmap_plugin.io.pdb import PdbBackend


class TrajectoryWriter:
    """Stream frames to a structure/trajectory file, replacing it atomically.

    Frames go to a partial file ``.<name>.partial<ext>`` in the output's
    directory (:func:`~backmap_plugin.io.paths.partial_path`: a hash for
    ``<name>`` where that name would be too long), flushed after every
    :meth:`write`. A successful :meth:`close` (or leaving the ``with`` block
    normally) syncs it to the disk and moves it onto ``path`` with
    ``os.replace`` (:func:`backmap_plugin.io.atomic.commit`; a symbolic link
    ``path`` is kept and the file it names replaced). If the ``with`` block raises,
    the partial file is closed and kept under its ``.partial`` name,
    ``path`` is left untouched, and the exception propagates.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; the extension (one of :data:`~backmap_plugin.io.paths.SUPPORTED_OUTPUT`) chooses
        the format.
    topology : mdtraj.Topology
        Topology of every frame. PDB and mmCIF keep its chain ids and residue
        numbers (consecutive residues sharing a number get insertion codes
        A, B, ...) and record its disulfides (SG-SG bonds: PDB SSBOND and
        CONECT, mmCIF struct_conn), not its other bonds (readers rebuild
        standard bonds).
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
    append : bool, optional
        With ``atomic=False``: continue the finished file at ``path``, which
        this writer wrote before for the same topology (checked: its atoms
        for PDB and mmCIF, their number for the binary formats); its frames
        are kept (:attr:`frames_written` counts them). A missing ``path``
        starts a new file.
    append_before : float, optional
        With ``append``, the time (ps) of the frames to come: XTC and H5
        frames, and DCD frames whose header gives times, at or after it are
        left out (:attr:`dropped` counts them), as a simulation restarted
        from a checkpoint older than them writes them again. PDB and mmCIF
        files hold no times.

    Attributes
    ----------
    path : str
        Final output path.
    partial_path : str
        Path of the partial file.
    frames_written : int
        Frames written so far.
    dropped : int
        Frames of the appended file left out by ``append_before``.
    last_time : float or None
        Time (ps) of the last frame kept from an appended XTC, H5 or DCD
        file (DCD: where its header gives times).
    notes : list of str
        What the format could not hold and was left out (a PDB file's
        CRYST1 record of a box too large for its columns, a DCD file's
        times where frames are not evenly spaced), one note each.

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
    written, a CRYST1 record before each model whose frame has a box, a TER
    record after every chain (also for chains that share a chain id) and
    CONECT records for the disulfides only (a box whose edges do not fit
    the CRYST1 columns, 100,000 Angstrom or more, gets no CRYST1 record,
    with a note in :attr:`notes`). mmCIF output has one model per
    frame and the first frame's box as ``_cell``; if chain ids repeat,
    ``label_asym_id`` gets unique generated ids (which OpenMM/mdtraj readers
    then report as the chain ids) while ``auth_asym_id`` keeps the originals.
    """

    def __init__(self, path, topology: md.Topology, overwrite: bool = True, atomic: bool = True,
                 resume: Optional[dict] = None, append: bool = False, append_before: Optional[float] = None):
        self.path = os.fspath(path)
        self.atomic = atomic
        if append and (atomic or resume is not None):
            raise ValueError(f"{self.path}: append needs atomic=False and no resume")
        if not isinstance(topology, md.Topology):
            raise TypeError(f"{self.path}: topology must be an mdtraj.Topology, got {type(topology).__name__}")
        self.topology = topology
        self.frames_written = 0
        self.dropped = 0
        self.last_time = None
        self.notes: list = []
        self._backend = None
        ext = check_output_path(self.path, overwrite)
        self.partial_path = partial_path(self.path) if atomic else self.path
        stale_partial = os.path.exists(self.partial_path)
        append = append and stale_partial
        try:
            if ext == ".pdb":
                self._backend = PdbBackend(self.partial_path, topology, self.path, resume, append)
            elif ext == ".cif":
                self._backend = CifBackend(self.partial_path, topology, self.path, resume, append)
            else:
                self._backend = MdtrajBackend(self.partial_path, topology, self.path, ext, resume, append,
                                              append_before)
            self.frames_written = self._backend.kept
            self.notes = getattr(self._backend, "notes", self.notes)  # (the back end's list: it adds to it)
            self.dropped = getattr(self._backend, "dropped", 0)
            self.last_time = getattr(self._backend, "last_time", None)
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

    def write(self, xyz, box=None, time=None, step=None) -> None:
        """Append frames.

        Parameters
        ----------
        xyz : array_like
            ``float32``-convertible coordinates in Angstrom, shape
            ``(n, n_atoms, 3)`` (or ``(n_atoms, 3)`` for one frame).
        box : array_like, optional
            ``(n, 3, 3)`` periodic box vectors (rows, Angstrom), written to
            DCD, XTC and H5 files.
        time : array_like, optional
            ``(n,)`` times in ps, written to XTC and H5 files (XTC: the
            frame index where not given), and into a DCD file's header while
            all its frames are evenly spaced
            (:class:`~backmap_plugin.io.dcd.EvenClock`).
        step : array_like, optional
            ``(n,)`` integer step numbers, written to XTC files (default:
            the frame index).

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
        check_finite(xyz, self.topology, self.path, self.frames_written)
        self._backend.check(xyz, self.topology, self.frames_written)
        box = None if box is None else np.asarray(box, dtype=np.float32).reshape(len(xyz), 3, 3)
        time = None if time is None else np.asarray(time, dtype=np.float32).reshape(len(xyz))
        step = None if step is None else np.asarray(step, dtype=np.int64).reshape(len(xyz))
        try:
            self._backend.write(np.ascontiguousarray(xyz), self.frames_written, box=box, time=time, step=step)
        except (OSError, RuntimeError, TypeError) as exc:  # (mdtraj: RuntimeError from XTC, TypeError from DCD)
            raise self._write_failed(exc, f"writing frame(s) {self.frames_written}-"
                                          f"{self.frames_written + len(xyz) - 1}") from exc
        self.frames_written += len(xyz)

    def _write_failed(self, exc: Exception, what: str, finishing: bool = False) -> BackmapOutputError:
        """The error for a write that failed: what, why, and what is kept."""
        if isinstance(exc, OSError) and exc.strerror:
            why = exc.strerror
        elif isinstance(exc, TypeError):  # (mdtraj's DCD writer fails on its own error path)
            why = "the writer stopped (a full disk or a file size limit?)"
        else:
            why = f"{exc} (a full disk or a file size limit?)"
        if finishing:
            kept = f"the partial file is left at {self.partial_path}"
        elif self.frames_written:
            kept = f"the {self.frames_written} frame(s) written before are kept in {self.partial_path}"
        else:
            kept = "no frame was written before"
        return BackmapOutputError(exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO,
                                  f"{self.path}: {what} failed: {why}; {kept}")

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
        try:
            backend.finish(self.frames_written)
        except (OSError, RuntimeError) as exc:
            raise self._write_failed(exc, "finishing the file", finishing=True) from exc
        if self.atomic:
            commit(self.partial_path, self.path)

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
        Output file; extension in :data:`~backmap_plugin.io.paths.SUPPORTED_OUTPUT`.
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
