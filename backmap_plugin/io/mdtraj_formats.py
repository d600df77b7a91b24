"""The DCD, XTC and HDF5 writer of :class:`backmap_plugin.io.trajectory.TrajectoryWriter`,
through mdtraj's file objects (DCD stores Angstrom, XTC and H5 nm)."""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Optional

import mdtraj as md
import numpy as np

from backmap_plugin.core.errors import BackmapInputError, last_line
from backmap_plugin.core.pbc import box_lengths_and_angles
from backmap_plugin.core.topology import insertion_code, residue_number
from backmap_plugin.io import dcd
from backmap_plugin.io.c_stdout import c_stdout_to_stderr
from backmap_plugin.io.mdtraj_files import mdtraj_path, open_file

COPY_CHUNK = 100
"""Frames read at a time from a file being appended to (:class:`MdtrajBackend` with ``append``)."""
TIME_TOLERANCE = 1e-3
"""ps: frames of a file being appended to at the new frames' first time, less this, are left out (XTC stores times
in float32)."""


def codes_left_out(topology: md.Topology, path: str) -> list:
    """A note where residues of a topology written to an H5 file have insertion codes, which it cannot hold (read
    back, the residues of a propeptide's 6P ... 38P are numbered 6 ... 38).

    Parameters
    ----------
    topology : mdtraj.Topology
        The topology written.
    path : str
        The output, for the note.

    Returns
    -------
    list of str
        One note, or none.
    """
    coded = [residue for residue in topology.residues if insertion_code(residue)]
    if not coded:
        return []
    first = coded[0]
    return [f"{path}: {len(coded)} residue(s) with insertion codes (first: chain {first.chain.chain_id or '?'} "
            f"residue {first.name} {residue_number(first)}) written without them (an .h5 topology holds none); "
            "write .pdb or .cif to keep them"]


class MdtrajBackend:
    """DCD (Angstrom), XTC and H5 (nm) through mdtraj's file objects.

    XTC frames carry the step numbers given (``backmap run``: the input's),
    else their frame index, and their frame index as time where no times
    are given, so a file does not depend on how its frames were cut into
    writes. Periodic boxes go into all three formats, times into XTC and H5,
    and into a DCD file's header where its frames are evenly spaced
    (:class:`~backmap_plugin.io.dcd.EvenClock`; DCD has no time per frame).
    Resuming and appending rewrite the kept frames of the old file into a
    fresh one (mdtraj cannot append to these formats); the values read back
    (coordinates, boxes, times) are written identically.

    Parameters
    ----------
    partial : str
        The file to write frames into.
    topology : mdtraj.Topology
        Topology of every frame (stored in H5 files).
    path : str
        The final output, for messages.
    ext : {".dcd", ".xtc", ".h5"}
        The format.
    resume : dict, optional
        State of an interrupted writer to continue (``frames``).
    append : bool, optional
        Continue the finished file ``partial`` (its frames must have the
        topology's number of atoms; in H5 its atoms and residues): it is
        moved aside, its frames are written into the new file
        ``COPY_CHUNK`` at a time, and it is removed; if copying fails it is
        put back, and if the process stops while copying, the next append
        starts from it again.
    before_time : float, optional
        With ``append``, the time (ps) of the first frame to come: the old
        file's frames at or after it are left out (a simulation restarted
        from a checkpoint older than them writes them again).

    Attributes
    ----------
    kept : int
        Frames kept from the resumed or appended file.
    dropped : int
        Frames of the appended file left out by ``before_time``.
    last_time : float or None
        Time (ps) of the last frame kept from the appended file.
    notes : list of str
        What the format could not hold: a DCD file's times where its
        frames' times are not evenly spaced, an H5 topology's insertion
        codes (one note each).
    """

    _CLASSES = {".h5": "HDF5TrajectoryFile", ".xtc": "XTCTrajectoryFile", ".dcd": "DCDTrajectoryFile"}

    def __init__(self, partial: str, topology: md.Topology, path: str, ext: str, resume: Optional[dict] = None,
                 append: bool = False, before_time: Optional[float] = None):
        self._ext = ext
        self._partial = partial
        self._path = path
        self.notes: list = []
        self._before_time = before_time
        self.dropped = 0
        self.last_time = None
        self._cls = getattr(md.formats, self._CLASSES[ext])
        self._clock = dcd.EvenClock() if ext == ".dcd" else None
        if ext == ".h5":
            self.notes += codes_left_out(topology, path)
        # the DCD writer opens its file at its first write: an ASCII path as long as the writer lives
        self._alias = contextlib.ExitStack()
        alias = self._alias.enter_context(mdtraj_path(partial, write=True))
        try:
            self._open(partial, alias, topology, path, resume, append)
        except BaseException:
            self._alias.close()
            raise

    def _open(self, partial: str, alias: str, topology: md.Topology, path: str, resume: Optional[dict],
              append: bool) -> None:
        """Open the new file (at ``alias``, :func:`~backmap_plugin.io.mdtraj_files.mdtraj_path` of ``partial``)
        with the frames kept from a resumed or appended file."""
        kept = None
        if resume is not None and resume["frames"]:
            kept = self._read_kept(partial, resume["frames"], path)
        if append:
            moved = os.path.join(os.path.dirname(partial), f".{os.path.basename(partial)}.appending{self._ext}")
            if os.path.exists(moved):  # an append stopped while copying: the whole old file is there, not at partial
                os.replace(moved, partial)
            self._check_atoms(partial, topology, path)
            os.replace(partial, moved)
        with c_stdout_to_stderr():
            self._file = self._cls(alias, "w", force_overwrite=True)
        if self._ext == ".h5":
            self._file.topology = topology
        self.kept = 0
        if kept is not None:
            self._write_native(kept, 0)
            self.kept = len(kept["xyz"])
        if append:
            self._copy_frames(moved, partial, path)

    def _check_atoms(self, partial: str, topology: md.Topology, path: str) -> None:
        """Refuse to append to a file whose frames have another number of atoms (or, in H5, another topology)."""
        try:
            with open_file(partial, opener=self._cls) as handle:
                found = self._native(handle.read(n_frames=1))["xyz"].shape[1]
                stored = handle.topology if self._ext == ".h5" else None
        except Exception as exc:
            raise BackmapInputError(f"{path}: cannot append: the file is unreadable: {last_line(exc)}") from exc
        if found != topology.n_atoms:
            raise BackmapInputError(f"{path}: cannot append: its frames have {found} atoms, the topology written now "
                                    f"{topology.n_atoms}")
        if stored is not None:
            for old, new in zip(stored.atoms, topology.atoms):
                if (old.name, old.residue.name) != (new.name, new.residue.name):
                    raise BackmapInputError(f"{path}: cannot append: atom {old.index + 1} is {old.residue.name} "
                                            f"{old.name} in the file and {new.residue.name} {new.name} in the "
                                            "topology written now")

    def _copy_frames(self, moved: str, partial: str, path: str) -> None:
        """Write the frames of the file being appended to (moved aside to ``moved``) into the new one, then remove
        ``moved``; if that fails, the old file is put back.

        A last frame that cannot be read (torn when the process writing it
        was killed) is left out; an unreadable frame before the last stops
        the append.
        """
        try:
            clock = dcd.clock(moved) if self._ext == ".dcd" else None
            with open_file(moved, opener=self._cls) as handle:
                n_frames, read = len(handle), 0
                while read < n_frames:
                    try:
                        found = handle.read(n_frames=min(COPY_CHUNK, n_frames - read))
                    except Exception:
                        handle.seek(read)
                        n_frames -= 1  # the last frame, torn: the ones before it are read one at a time
                        for index in range(read, n_frames):
                            self._copy(self._native(handle.read(n_frames=1), clock, index))
                        break
                    frames = self._native(found, clock, read)
                    if len(frames["xyz"]) == 0:  # (fewer frames than the file's length said)
                        break
                    read += len(frames["xyz"])
                    self._copy(frames)
        except BaseException as exc:
            self._close()
            os.replace(moved, partial)
            raise BackmapInputError(f"{path}: cannot append: copying its frames failed ({exc}); the file is as it "
                                    "was") from exc
        os.remove(moved)

    def _close(self) -> None:
        """Close the file, and end its ASCII path (:func:`~backmap_plugin.io.mdtraj_files.mdtraj_path`)."""
        try:
            self._file.close()
        finally:
            self._alias.close()

    def _copy(self, frames: dict) -> None:
        """Write frames of the file being appended to (:meth:`_native`) after those kept (those before
        ``before_time``)."""
        time = frames.get("time")
        if self._before_time is not None and time is not None:
            keep = np.asarray(time) < self._before_time - TIME_TOLERANCE
            self.dropped += int((~keep).sum())
            frames = {key: None if value is None else value[keep] for key, value in frames.items()}
            time = frames["time"]
        if len(frames["xyz"]):
            self._write_native(frames, self.kept)
            self.kept += len(frames["xyz"])
            self.last_time = None if time is None else float(time[-1])

    def _native(self, found, clock: Optional[tuple] = None, first: int = 0) -> dict:
        """What a file object's ``read`` returned, in the file's units (see :meth:`_write_native`); DCD frames
        (``first``, ...) get their times from the file header's ``clock`` (:func:`backmap_plugin.io.dcd.clock`)."""
        if self._ext == ".h5":
            return {"xyz": found.coordinates, "time": found.time, "lengths": found.cell_lengths,
                    "angles": found.cell_angles}
        if self._ext == ".xtc":
            return {"xyz": found[0], "time": found[1], "step": found[2], "box": found[3]}
        time = None if clock is None else clock[0] + clock[1] * np.arange(first, first + len(found[0]))
        return {"xyz": found[0], "time": time, "lengths": found[1], "angles": found[2]}

    def _read_kept(self, partial: str, n_frames: int, path: str) -> dict:
        """The first ``n_frames`` frames of the old partial file, in the file's units (see :meth:`_write_native`)."""
        try:
            clock = dcd.clock(partial) if self._ext == ".dcd" else None
            with open_file(partial, opener=self._cls) as handle:
                kept = self._native(handle.read(n_frames=n_frames), clock)
        except Exception as exc:
            raise BackmapInputError(f"{path}: cannot resume: partial file {partial} is unreadable ({last_line(exc)}); "
                                    "start over with overwrite=True") from exc
        xyz = kept["xyz"]
        if xyz is None or len(xyz) < n_frames:
            raise BackmapInputError(
                f"{path}: cannot resume: partial file {partial} holds {0 if xyz is None else len(xyz)} complete "
                f"frame(s), the progress record says {n_frames}; start over with overwrite=True"
            )
        return kept

    def state(self) -> dict:
        """Nothing beyond the frame count is needed to resume these formats."""
        return {}

    def check(self, xyz, topology, first_frame) -> None:
        """Binary formats have no column limits."""

    def write(self, xyz: np.ndarray, first_frame: int, box: Optional[np.ndarray] = None,
              time: Optional[np.ndarray] = None, step: Optional[np.ndarray] = None) -> None:
        """Append frames ``first_frame, ...`` (Angstrom), their boxes (Angstrom vectors), times (ps) and step
        numbers (XTC), and flush."""
        frames = {"xyz": xyz if self._ext == ".dcd" else xyz / np.float32(10.0), "time": time,  # DCD stores Angstrom
                  "step": step}
        if box is not None:
            if self._ext == ".xtc":
                frames["box"] = box / np.float32(10.0)
            else:
                lengths, angles = box_lengths_and_angles(box)
                frames["lengths"] = (lengths if self._ext == ".dcd" else lengths / 10.0).astype(np.float32)
                frames["angles"] = angles.astype(np.float32)
        self._write_native(frames, first_frame)

    def _write_native(self, frames: dict, first_frame: int) -> None:
        """Append ``frames`` (``xyz``, and ``time``, ``step``, ``box`` or ``lengths`` / ``angles`` where present, in
        the file's units: nm, or Angstrom for DCD) and flush."""
        if self._ext == ".dcd":  # mdtraj writes DCD unbuffered, and its header without times
            self._file.write(frames["xyz"], cell_lengths=frames.get("lengths"), cell_angles=frames.get("angles"))
            self._clock.add(frames.get("time"), len(frames["xyz"]))
            dcd.write_clock(self._partial, self._clock.header())
            if self._clock.times_lost and not self.notes:
                self.notes.append(
                    f"{self._path}: the frames' times do not fit a DCD header, which gives all frames one first time "
                    "and one interval (they are not evenly spaced, e.g. where several samples of a frame share its "
                    "time, or the first is on no step of the interval): the file gives no times (readers take its "
                    f"frames as 1 AKMA, {dcd.AKMA_PS:.3f} ps, apart); write .xtc or .h5 to keep them"
                )
        elif self._ext == ".xtc":
            index = np.arange(first_frame, first_frame + len(frames["xyz"]), dtype=np.int32)
            step = index if frames.get("step") is None else np.asarray(frames["step"], dtype=np.int32)
            time = index.astype(np.float32) if frames.get("time") is None else frames["time"]
            self._file.write(frames["xyz"], time=time, step=step, box=frames.get("box"))
            self._file.flush()
        else:
            self._file.write(coordinates=frames["xyz"], time=frames.get("time"), cell_lengths=frames.get("lengths"),
                             cell_angles=frames.get("angles"))
            self._file.flush()

    def finish(self, n_frames: int) -> None:
        """Close the file (nothing to add at the end), and check that an H5 file holds its ``n_frames`` frames.

        HDF5 writes past a file size limit (``ulimit -f``, a batch system's
        ``h_fsize``) fail without an error: the file is cut short and
        unreadable.
        """
        self._close()
        if self._ext != ".h5":  # (XTC and DCD writes that fail raise)
            return
        try:
            with open_file(self._partial, opener=self._cls) as handle:
                found = len(handle)
        except Exception as exc:
            raise OSError(errno.EIO, f"the file cannot be read back ({last_line(exc)})") from exc
        if found != n_frames:
            raise OSError(errno.EIO, f"the file holds {found} of the {n_frames} frames written")

    def abort(self) -> None:
        """Close the partial file as it is (a close that fails is let go: the error that stopped the writer is the
        one to tell)."""
        try:
            self._close()
        except (OSError, RuntimeError):
            pass
