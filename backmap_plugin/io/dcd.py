"""The times a DCD file's header gives its frames: reading them, and writing them into a DCD file mdtraj wrote.

A DCD file (CHARMM / NAMD / OpenMM) has no time per frame. Its first
record (84 bytes, ``CORD``) gives the frame count NSET (byte 8), the first
frame's step ISTART (12), the steps between frames NSAVC (16), the last step
NSTEP (20) and the time step DELTA in AKMA units (a float, byte 44): frame
``i`` is at ``(ISTART + i NSAVC) DELTA``, as OpenMM's DCD writer puts it and
MDAnalysis reads it. mdtraj writes ISTART 0, NSAVC 1, DELTA 1 (no times)
and reads frame indices. Times in ps.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from typing import Optional

import numpy as np

from backmap_plugin.io.atoms import CutShortNote
from backmap_plugin.io.mdtraj_files import open_file

#: ps per AKMA time unit (CHARMM's, in which DCD headers give their time step).
AKMA_PS = 0.04888821
#: The header mdtraj writes: (ISTART, NSAVC, DELTA) that give no times.
NO_CLOCK = (0, 1, 1.0)
#: Largest NSAVC :class:`EvenClock` uses to put a first frame between two multiples of the frame interval.
MAX_STEPS_BETWEEN = 1000
#: Frames whose times miss an even clock by more than this (ps, plus :data:`RELATIVE_TOLERANCE` of the time) are not
#: evenly spaced (XTC stores times in float32).
TIME_TOLERANCE = 1e-3
RELATIVE_TOLERANCE = 1e-6


def read_header(path: str) -> Optional[tuple]:
    """``(NSET, ISTART, NSAVC, DELTA)`` of a DCD file's first record, in either byte order; None where the file does
    not start with one.

    Parameters
    ----------
    path : str

    Returns
    -------
    tuple or None
    """
    with open(path, "rb") as handle:
        head = handle.read(48)
    order = _byte_order(head)
    if order is None:
        return None
    return (*struct.unpack(order + "3i", head[8:20]), struct.unpack(order + "f", head[44:48])[0])


def _byte_order(head: bytes) -> Optional[str]:
    """``"<"`` or ``">"``: the byte order of a DCD file's first 48 bytes, None where they are no DCD header."""
    order = next((o for o in ("<", ">") if len(head) == 48 and struct.unpack(o + "i", head[:4])[0] == 84), None)
    return None if order is None or head[4:8] != b"CORD" else order


def frames_missing(path: str) -> Optional[CutShortNote]:
    """A note when a DCD file holds fewer whole frames than its header announces (a truncated file), else None.

    Parameters
    ----------
    path : str

    Returns
    -------
    CutShortNote or None
    """
    header = read_header(path)
    if header is None:
        return None
    announced = header[0]
    with open_file(path) as handle:
        whole = len(handle)
    if 0 < whole < announced:
        return CutShortNote(f"{path}: {whole} whole frame(s) of the {announced} its header announces: a truncated "
                            "file?")
    return None


def clock(path: str) -> Optional[tuple]:
    """``(t0, dt)``: the time of a DCD file's first frame and between frames, from its header; None for a header
    without times (:data:`NO_CLOCK`, or steps that cannot be) or a file that does not start with one.

    Parameters
    ----------
    path : str

    Returns
    -------
    tuple of float or None
    """
    header = read_header(path)
    if header is None:
        return None
    _, istart, nsavc, delta = header
    if (istart, nsavc, delta) == NO_CLOCK or nsavc <= 0 or not delta > 0:
        return None
    return istart * delta * AKMA_PS, nsavc * delta * AKMA_PS


def steps(path: str) -> Optional[tuple]:
    """``(first, between)``: the step of a DCD file's first frame (ISTART) and the steps between frames (NSAVC), from
    its header; None for a header whose NSAVC is not positive or a file that does not start with one.

    Parameters
    ----------
    path : str

    Returns
    -------
    tuple of int or None
        Frame ``i`` of the file is at step ``first + i * between`` (mdtraj's header, :data:`NO_CLOCK`: its index).
    """
    header = read_header(path)
    if header is None or header[2] <= 0:
        return None
    return header[1], header[2]


class EvenClock:
    """The DCD header that gives the frames written so far their times, where they are evenly spaced.

    Frames ``t0 + i dt`` (``dt > 0``) get DELTA ``dt / NSAVC`` (AKMA), with
    NSAVC the smallest number of steps (up to :data:`MAX_STEPS_BETWEEN`)
    that puts the first frame on a step: frames at 150, 900, 1650 ps give
    ISTART 1, NSAVC 5, DELTA 150 ps. One frame at ``t0`` gives ISTART 1,
    NSAVC 1, DELTA ``t0``. Frames without times, times not evenly spaced
    (each frame, and the last one before it, within :data:`TIME_TOLERANCE`
    and :data:`RELATIVE_TOLERANCE` of the spacing of the frames up to it),
    not increasing, or a first frame
    off every step give :data:`NO_CLOCK`, for good.
    """

    def __init__(self):
        self._t0 = None
        self._dt = None
        self._last = None
        self._n = 0
        self._even = True
        self._timed = False  # frames came with times

    def add(self, times: Optional[np.ndarray], n_frames: int) -> None:
        """Follow ``n_frames`` more frames, at ``times`` (ps; None: frames without times)."""
        self._timed |= times is not None and n_frames > 0
        if not self._even or n_frames == 0:
            return
        if times is None:
            self._even = False
            return
        times = np.asarray(times, dtype=np.float64)
        first = self._n
        if first == 0:
            self._t0 = float(times[0])
        else:  # the last frame so far checked again against the spacing up to the new ones
            times, first = np.concatenate([[self._last], times]), first - 1
        n = self._n + len(times) - (first < self._n)
        if n > 1:
            dt = (float(times[-1]) - self._t0) / (n - 1)
            expected = self._t0 + dt * np.arange(first, n)
            tolerance = TIME_TOLERANCE + RELATIVE_TOLERANCE * np.abs(times)
            if not dt > 0 or not (np.abs(times - expected) <= tolerance).all():
                self._even = False
                return
            self._dt = dt
        self._n, self._last = n, float(times[-1])

    def header(self) -> tuple:
        """``(ISTART, NSAVC, DELTA)`` for :func:`write_clock`."""
        return self._header() or NO_CLOCK

    @property
    def times_lost(self) -> bool:
        """Whether frames came with times that :meth:`header` cannot give (the file then gives none)."""
        return self._timed and self._header() is None

    def _header(self) -> Optional[tuple]:
        """:meth:`header`; None where the frames' times cannot be given (not evenly spaced, not increasing, frames
        without times, a first frame off every step)."""
        if not self._even:
            return None
        if self._n == 0 or self._t0 == 0 and self._n == 1:
            return NO_CLOCK
        if self._n == 1:
            return (1, 1, self._t0 / AKMA_PS) if self._t0 > 0 else (-1, 1, -self._t0 / AKMA_PS)
        offset = Fraction(self._t0 / self._dt).limit_denominator(MAX_STEPS_BETWEEN)
        if abs(float(offset) * self._dt - self._t0) > TIME_TOLERANCE + RELATIVE_TOLERANCE * abs(self._t0):
            return None
        return offset.numerator, offset.denominator, self._dt / offset.denominator / AKMA_PS


def write_clock(path: str, header: tuple) -> None:
    """Write ``(ISTART, NSAVC, DELTA)`` into the first record of the DCD file ``path`` (NSTEP to match its frames).

    Parameters
    ----------
    path : str
        A DCD file (its first record as mdtraj or OpenMM writes it).
    header : tuple
        ``(ISTART, NSAVC, DELTA)``, e.g. from :meth:`EvenClock.header`.
    """
    istart, nsavc, delta = header
    with open(path, "r+b") as handle:
        head = handle.read(48)
        order = _byte_order(head)
        if order is None:
            raise OSError(f"{path}: no DCD header to write times into")
        nset = struct.unpack(order + "i", head[8:12])[0]
        handle.seek(12)
        handle.write(struct.pack(order + "3i", istart, nsavc, istart + nsavc * nset))  # (NSTEP as OpenMM writes it)
        handle.seek(44)
        handle.write(struct.pack(order + "f", delta))
