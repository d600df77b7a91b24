"""BackmapReporter: write an all-atom trajectory while a CG simulation runs."""

from __future__ import annotations

import atexit
import numbers
import os
import re
import warnings
import weakref

import mdtraj as md
import numpy as np
from openmm import unit

from backmap_plugin.api import Backmapper, check_backmap_options
from backmap_plugin.core.errors import BackmapInputError, BeadsTooCloseError
from backmap_plugin.io.chains import topology_from_openmm, topology_to_openmm
from backmap_plugin.io.lock import OutputLock
from backmap_plugin.io.paths import check_output_path, match_extension
from backmap_plugin.io.pdb import check_pdb_topology
from backmap_plugin.io.trajectory import TrajectoryWriter


def _refiner():
    """The :class:`~backmap_plugin.openmm.refine.Refiner` of ``refine=True`` (its defaults; OpenMM's
    PDBFixer loaded only then)."""
    from backmap_plugin.openmm.refine import Refiner

    return Refiner(platform="auto")


#: The engine's advice in command-line words (``backmap run``) and in the reporter's: its options, and a periodic
#: box that comes from the simulation, not from a file.
_REPORTER_WORDS = (
    (re.compile(r"--break-distance"), "breakDistance"),
    (re.compile(r"--mapping (\w+)"), r"mapping='\1'"),
    (re.compile(r"--no-disulfides"), "disulfides=False"),
    (re.compile(r"give the box, a --top with it \(CRYST1 in P 1, \.gro\), or unwrap them"),
     "make the system periodic (simulation.system's forces and box), or unwrap the starting positions"),
    (re.compile(r"give a trajectory with its boxes, a --top with the box: CRYST1 in P 1, \.gro; or unwrap it "
                r"first"), "make the system periodic, or unwrap the starting positions"),
)


def _in_reporter_words(message: str) -> str:
    """An engine message with its command-line advice in the reporter's words (:data:`_REPORTER_WORDS`)."""
    for pattern, words in _REPORTER_WORDS:
        message = pattern.sub(words, message)
    return message


def _periodic(simulation) -> bool:
    """Whether the simulation is periodic: its topology has a box (as OpenMM's reporters tell), or its system uses
    periodic boundary conditions (a hand-built system may set its box there only)."""
    system = getattr(simulation, "system", None)
    return simulation.topology.getPeriodicBoxVectors() is not None or (
        system is not None and system.usesPeriodicBoundaryConditions())


class BackmapReporter:
    """An OpenMM reporter that backmaps CG frames to all heavy atoms as the run goes.

    Append it to ``simulation.reporters`` like ``DCDReporter``. On its first
    report it derives the all-atom topology from ``simulation.topology`` (one
    bead per residue, at the CA or the residue centre of mass, named by
    residue, or Martini 3 beads; ions, walls and other non-protein particles
    are ignored) and
    checks it: a topology it cannot map raises a clear error there, not at
    the end. Frames are buffered and backmapped in batches of
    ``batchFrames``; every batch is written and flushed at once, and the rest
    on :meth:`close`, on leaving a ``with`` block and at interpreter exit.

    Parameters
    ----------
    file : str
        Output file; format by extension: .pdb, .dcd, .xtc, .h5 (or .cif).
        Every batch is flushed, so .xtc, .dcd and .pdb files can be read
        while the run goes on; an .h5 file stays open for writing until
        :meth:`close` (HDF5 refuses to open it again in this process, and
        its file lock refuses other processes unless they set
        ``HDF5_USE_FILE_LOCKING=FALSE``): to watch a run, write .xtc, or
        look at ``firstFrameFile``.
    reportInterval : int
        Steps between reports.
    mapping : str
        ``'auto'`` (decided from the first frame's bead names and
        distances and from the equilibrium lengths of the simulation's
        harmonic bonds, see :func:`backmap_plugin.core.detect.decide_mapping`;
        the decision is in ``mappingEvidence``), ``'ca'``, ``'com'`` or
        ``'martini3'``: where the beads sit.
    samples : int
        All-atom structures written per CG frame (frame-major).
    model : str, optional
        Trained model file (default: the shipped model).
    refine : bool
        Add hydrogens and minimise every written structure under heavy-atom
        restraints with the :class:`~backmap_plugin.openmm.refine.Refiner`'s
        defaults (amber14, screened electrostatics); the output then has
        hydrogens. Much slower than backmapping itself.
    device : str
        ``'auto'``, ``'cpu'`` or ``'cuda'`` for backmapping.
    batchFrames : int
        CG frames buffered before they are backmapped together.
    method : str, optional
        ``'model'`` or ``'ideal'`` (default: the model for CA beads).
    seed : int
        Random seed; frame k is seeded with (seed, k).
    firstFrameFile : str, optional
        Also write the first reported frame's all-atom model to this file
        (a PDB file, or any output format) right away, so the mapping can be
        checked while the run goes on.
    breakDistance : float or openmm.unit.Quantity, optional
        Bead distance that splits a chain (Angstrom when a plain number);
        default by mapping.
    disulfides : bool
        Bond cysteine pairs whose SG atoms can meet (see
        :func:`backmap_plugin.api.backmap`; the pairs bonded in at least half
        of the first batch's frames, as ``backmap run`` takes its first 10);
        :attr:`disulfides` names them. ``firstFrameFile`` has the pairs of
        the first frame.
    append : bool
        Continue ``file``, written by a BackmapReporter of the same system
        before (a simulation restarted from a checkpoint), as OpenMM's own
        reporters' ``append`` does: its frames are kept and the new ones
        follow. The file must exist; when the first batch is written it is
        checked to hold this system's atoms (its atom records for PDB and mmCIF, their
        number for DCD, XTC and H5), and left as it was if not. A last
        frame torn when the run that wrote it was killed is left out. XTC
        and H5 files hold times, DCD files in their header (evenly spaced
        frames): their frames at or after the restarted run's first are
        left out (the checkpoint is older than them, so they come again),
        and frames missing before it (still in the batch when the run
        stopped) are named; both are warnings and in :attr:`notes`. PDB and
        mmCIF hold no times: there, frames after the checkpoint come twice,
        as with OpenMM's reporters.

    The options and the output's name are checked here, before the
    simulation runs; what needs the topology (the mapping, the model's
    beads, chain ids that a .pdb output can hold) at the first report.

    Examples
    --------
    >>> reporter = BackmapReporter("aa.xtc", 1000, firstFrameFile="first_aa.pdb")  # doctest: +SKIP
    >>> simulation.reporters.append(reporter)  # doctest: +SKIP
    >>> simulation.step(100000)  # doctest: +SKIP
    >>> reporter.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        file,
        reportInterval: int,
        mapping: str = "auto",
        samples: int = 1,
        model=None,
        refine: bool = False,
        device: str = "auto",
        batchFrames: int = 10,
        method: str | None = None,
        seed: int = 0,
        firstFrameFile=None,
        breakDistance=None,
        append: bool = False,
        disulfides: bool = True,
    ):
        for name, value in (("reportInterval", reportInterval), ("batchFrames", batchFrames)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                steps = " of steps" if name == "reportInterval" else ""
                raise ValueError(f"BackmapReporter: {name} must be a whole number{steps}, at least 1, got {value!r}")
        if unit.is_quantity(breakDistance):
            breakDistance = breakDistance.value_in_unit(unit.angstrom)
        try:
            check_backmap_options(method, samples, model, None, breakDistance, seed, mapping, device)
        except BackmapInputError:  # (a model file's: the loader's message, as backmap run and backmap() give it)
            raise
        except ValueError as exc:
            raise ValueError(f"BackmapReporter: {exc}") from None
        check_output_path(file)
        if append and not os.path.isfile(file):
            raise BackmapInputError(f"BackmapReporter({file}): append=True, but the file does not exist")
        if firstFrameFile is not None:
            check_output_path(firstFrameFile)
            if os.path.abspath(firstFrameFile) == os.path.abspath(file):
                raise BackmapInputError(f"BackmapReporter({file}): firstFrameFile is the output file: the "
                                        "trajectory would overwrite it; give another file")
        self._file = file
        self._reportInterval = int(reportInterval)
        self._batchFrames = int(batchFrames)
        self._firstFrameFile = firstFrameFile
        self._append = bool(append)
        self._notes: list = []  # the reporter's own (appending), before the engine's
        self._options = dict(mapping=mapping, method=method, samples=samples, seed=seed, device=device,
                             break_distance=breakDistance, model=model, disulfides=disulfides)
        self._refiner = _refiner() if refine else None
        self._engine = None
        self._interval = None  # ps between reports
        self._openmmTopology = None
        self._writer = None
        self._writer_notes: list = []  # the output writer's (a box its format cannot hold), kept after it closes
        self._buffer: list[np.ndarray] = []
        self._times: list[float] = []  # ps, of the buffered frames
        self._boxes: list[np.ndarray] = []  # Angstrom box vectors of the buffered frames (periodic systems)
        self._framesReported = 0
        self._framesWritten = 0
        self._skipped: list = []  # (report index, time in ps) of frames left out: beads too close
        self._closed = False
        # flush at interpreter exit without keeping the reporter alive; exit handlers run last-registered
        # first, so PyTables (HDF5 output) is loaded before this one is registered: it closes its files after
        if match_extension(file, (".h5",)):
            import tables  # noqa: F401
        # one writer per file: two reporters given one file interleaved (XTC kept 10 of 30 frames, DCD 6)
        self._lock = OutputLock(file, who="a BackmapReporter")
        atexit.register(BackmapReporter._flush_at_exit, weakref.ref(self))

    @staticmethod
    def _flush_at_exit(ref) -> None:
        reporter = ref()
        if reporter is not None:
            reporter.close()

    @property
    def framesReported(self) -> int:
        """CG frames reported so far."""
        return self._framesReported

    @property
    def framesWritten(self) -> int:
        """CG frames backmapped and on disk so far."""
        return self._framesWritten

    @property
    def mappingEvidence(self) -> str:
        """What ``mapping='auto'`` decided from the first frame, and why ('' before it or when given)."""
        return "" if self._engine is None else self._engine.mapping_evidence

    @property
    def beadRmsd(self) -> dict:
        """How far the frames written lie from their CG beads ({} before the first).

        Per kind of bead, the median and largest bead RMSD (Angstrom) and the
        report index of the largest (:meth:`backmap_plugin.core.bead_fit.BeadFit.summary`).
        """
        return {} if self._engine is None else self._engine.bead_fit.summary()

    @property
    def disulfides(self) -> dict:
        """Cysteine pairs bonded so far: ``("A CYS 23", "A CYS 88") -> structures`` ({} before the first)."""
        return {} if self._engine is None else dict(self._engine.disulfides)

    @property
    def notes(self) -> list:
        """What ``backmap run`` would print of this system and the frames written so far: chain breaks, numbering
        gaps, names read as standard residues, disulfides closed; and what appending found ([] before the first
        report)."""
        skipped = []
        if self._skipped:
            index, time = self._skipped[0]
            skipped = [f"{self._file}: {len(self._skipped)} frame(s) left out, their beads closer than any two of a "
                       f"protein (the CG model lets beads overlap; first: report {index}, {time:g} ps)"]
        engine = [] if self._engine is None else [_in_reporter_words(note) for note in self._engine.report
                                                  + self._engine.notes()]
        return self._notes + skipped + engine + self._writer_notes

    @property
    def topology(self):
        """The all-atom mdtraj topology (after the first report; its disulfides from the first batch), else None."""
        return None if self._engine is None else self._engine.topology

    def describeNextReport(self, simulation) -> dict:
        """Ask for positions not wrapped into the box at the next report step (molecules the box cuts are made
        whole with it)."""
        steps = self._reportInterval - simulation.currentStep % self._reportInterval
        return {"steps": steps, "periodic": False, "include": ["positions"]}

    def report(self, simulation, state) -> None:
        """Buffer one frame; backmap and write when a batch is full."""
        if self._closed:
            raise ValueError(f"BackmapReporter({self._file!r}) is closed")
        xyz = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom), dtype=np.float32)
        box = None
        if _periodic(simulation):
            box = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom), dtype=np.float32)
        if self._engine is None:
            self._start(simulation, xyz, state.getTime().value_in_unit(unit.picosecond), box)
        self._buffer.append(xyz)
        self._times.append(state.getTime().value_in_unit(unit.picosecond))
        if box is not None:
            self._boxes.append(box)
        self._framesReported += 1
        if len(self._buffer) >= self._batchFrames:
            self.flush()

    def reportInitial(self, simulation) -> None:
        """Report the current state now (OpenMM never reports step 0)."""
        self.report(simulation, simulation.context.getState(getPositions=True, enforcePeriodicBox=False))

    def _start(self, simulation, first_frame: np.ndarray, time: float, box: np.ndarray | None) -> None:
        """Map the topology and write ``firstFrameFile`` (``time``: the first frame's, ps; ``box``: its periodic
        box, Angstrom, molecules cut by it made whole); if any of it fails, the reporter is closed (later reports
        raise ``ValueError``) and the output untouched. The output is opened with the first batch
        (:meth:`_open`)."""
        boxes = None if box is None else box[None]
        try:
            self._engine = Backmapper.from_openmm(simulation.topology, first_frame / 10.0,
                                                  system=getattr(simulation, "system", None),
                                                  source=f"BackmapReporter({self._file})", box=boxes, **self._options)
            if self._engine.all_atom:
                raise BackmapInputError(
                    f"BackmapReporter({self._file}): simulation.topology is not coarse-grained: most of its residues "
                    "hold at least half their heavy atoms (an all-atom simulation); the reporter is for CG runs: one "
                    "bead per residue, a few (e.g. C-alpha and side-chain beads), or Martini 3 beads (BB, SC1 ...)")
            if match_extension(self._file, (".pdb",)):  # (a batch later, the run went on for long)
                check_pdb_topology(self._engine.topology, self._file)
            try:
                self._interval = self._reportInterval * simulation.integrator.getStepSize().value_in_unit(
                    unit.picosecond)
            except AttributeError:  # (an integrator without one step size)
                self._interval = None
            if self._firstFrameFile is not None:  # (built again with its batch: its bead RMSD counts there)
                first_topology, first = self._finish(self._engine.build(first_frame[None], box=boxes,
                                                                        tally=False)[:1])
                with TrajectoryWriter(self._firstFrameFile, first_topology) as writer:
                    writer.write(first)
        except BaseException as exc:
            self._closed = True
            self._lock.release()
            if isinstance(exc, BackmapInputError):
                exc.args = (_in_reporter_words(str(exc)),)
            raise

    def _open(self, topology: md.Topology, time: float) -> None:
        """Open the output for frames of ``topology`` from ``time`` (ps) on (appending: checked, and the old
        frames at or after it left out); if that fails, the reporter is closed."""
        try:
            self._writer = TrajectoryWriter(self._file, topology, atomic=False, append=self._append,
                                            append_before=time if self._append else None)
        except BaseException:
            self._closed = True
            self._lock.release()
            raise
        self._writer_notes = self._writer.notes
        self._notes += self._append_notes(time)

    def _append_notes(self, time: float) -> list:
        """What appending found in the old file's times (XTC, H5, DCD): frames written again after a restart from an
        older checkpoint (left out), and frames missing before the first new one."""
        notes = []
        if self._writer.dropped:
            notes.append(f"{self._file}: {self._writer.dropped} frame(s) at or after {time:g} ps, the restarted "
                         "run's first, were left out: the checkpoint it restarted from is older than them, so "
                         "they are written again")
        last, interval = self._writer.last_time, self._interval
        if last is not None and interval and time - last > 1.5 * interval:
            notes.append(f"{self._file}: no frames between {last:g} and {time:g} ps: the run stopped with them "
                         f"in its batch, not yet written (a checkpoint every reportInterval x batchFrames = "
                         f"{self._reportInterval * self._batchFrames} steps loses none)")
        for note in notes:
            warnings.warn(note, stacklevel=4)
        return notes

    def _finish(self, xyz: np.ndarray):
        """Backmapped heavy atoms -> (mdtraj topology, coordinates) to write; refined if asked."""
        if self._refiner is None:
            return self._engine.topology, xyz
        if self._openmmTopology is None:  # converted once, reused for every batch
            self._openmmTopology = topology_to_openmm(self._engine.topology)
        top = self._openmmTopology
        frames = []
        for frame in xyz:
            refined_top, positions, _ = self._refiner.refine(top, frame / 10.0 * unit.nanometer)
            frames.append(np.asarray(positions.value_in_unit(unit.angstrom), dtype=np.float32))
        return topology_from_openmm(refined_top), np.stack(frames)

    def flush(self) -> None:
        """Backmap and write the buffered frames now.

        A frame with two beads closer than any two of a protein
        (:class:`~backmap_plugin.core.errors.BeadsTooCloseError`: a CG model
        that lets beads overlap) is left out, with a warning for the first and
        a count in :attr:`notes`; the others are written.

        Raises
        ------
        BackmapInputError
            A buffered frame has non-finite beads, or cannot be backmapped
            otherwise (the message names the frame by its report index, 0
            for the first report). The frames of the batch before it are
            written, and the reporter is closed: the output keeps the frames
            written (or is removed when there are none), and later reports
            raise ``ValueError``.
        """
        if not self._buffer or self._engine is None:
            return
        frames, times = np.stack(self._buffer), np.array(self._times)
        boxes = np.stack(self._boxes) if self._boxes else None
        first = self._framesReported - len(frames)  # report index of the batch's first frame (its seed)
        try:
            if self._writer is None:  # the first batch: the run's disulfides from its frames, as backmap() chooses
                self._engine.choose_disulfides(frames, first, boxes)
                if self._refiner is not None and self._openmmTopology is not None:  # (firstFrameFile refined with
                    # the first frame's: a refiner keeps its first structure's protonation and template)
                    self._refiner, self._openmmTopology = _refiner(), None
            self._write(self._engine.build(frames, first, box=boxes), times, boxes)
        except BackmapInputError:  # frame by frame: the frames that can be built are written
            for k in range(len(frames)):
                box = None if boxes is None else boxes[k:k + 1]
                try:
                    self._write(self._engine.build(frames[k:k + 1], first + k, box=box), times[k:k + 1], box)
                except BeadsTooCloseError as exc:
                    self._skip(str(exc), first + k, float(times[k]))
                except BackmapInputError as exc:
                    raise BackmapInputError(f"{_in_reporter_words(str(exc))}; {self._close_after_bad_frame()}") \
                        from exc
                self._unbuffer(1)
            return
        self._unbuffer(len(frames))

    def _unbuffer(self, n: int) -> None:
        """Let go of the first ``n`` buffered frames, once written or left out (a KeyboardInterrupt while a batch
        is built leaves it in the buffer, for the next flush: it was lost)."""
        del self._buffer[:n], self._times[:n], self._boxes[:n]

    def _write(self, built: np.ndarray, times: np.ndarray, boxes: np.ndarray | None) -> None:
        """Write the structures ``built`` of CG frames at ``times`` (ps) in ``boxes`` (the output opened first)."""
        samples = self._engine.samples
        topology, xyz = self._finish(built)
        if self._writer is None:
            self._open(topology, float(times[0]))
        self._writer.write(xyz, time=np.repeat(times, samples),
                           box=None if boxes is None else np.repeat(boxes, samples, axis=0))
        self._framesWritten += len(times)

    def _skip(self, why: str, index: int, time: float) -> None:
        """Leave out the frame of report ``index`` at ``time`` (ps): a warning for the first, a count in the notes."""
        if not self._skipped:
            warnings.warn(f"{why}; the frame (report {index}, {time:g} ps) is left out, as are later ones like "
                          "it (counted in the reporter's notes)", stacklevel=4)
        self._skipped.append((index, time))

    def _close_after_bad_frame(self) -> str:
        """Close the output after a bad frame; say what it keeps (a new file without frames is removed)."""
        self._closed = True
        self._unbuffer(len(self._buffer))  # (never written)
        writer, self._writer = self._writer, None
        try:
            if writer is not None and writer.frames_written:
                writer.close()
                return f"the reporter is closed; {self._file} keeps the {writer.frames_written} structure(s) written"
            if writer is not None:
                writer.abort()
                if os.path.exists(writer.path):
                    os.remove(writer.path)
            return f"the reporter is closed; nothing was written to {self._file}"
        finally:
            self._lock.release()

    def close(self) -> None:
        """Write what is buffered and close the file (safe to call twice; later reports raise ``ValueError``)."""
        self._closed = True
        try:
            try:
                self.flush()
            finally:
                writer, self._writer = self._writer, None
                if writer is not None:  # (None: never opened, or a bad frame in the flush closed it)
                    writer.close()
        finally:
            self._lock.release()

    def __enter__(self) -> "BackmapReporter":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # never raise from a destructor
            pass
