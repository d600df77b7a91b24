"""Pure array checks of bead traces: non-finite and coincident beads.

Both functions take ``(F, R, 3)`` bead positions in Angstrom and return the
first offending place (frame first, then residue), or None; the caller turns
that into a message naming the file, frame, chain and residue.
"""

from __future__ import annotations

import numpy as np

#: Closest two beads of one protein can be (Angstrom). Bonded C-alpha atoms
#: are 2.9 (cis) to 3.8 apart, non-bonded ones more than 3; residue centres
#: of mass are at least about 2.8 apart: beads closer than this are
#: duplicated or collapsed coordinates, never a physical structure.
MIN_BEAD_DISTANCE = 0.5


#: Unit vector the close-pair search sorts beads along.
_SWEEP = np.array([1.0, 0.618034, 0.381966]) / np.linalg.norm([1.0, 0.618034, 0.381966])


def _frames(beads) -> np.ndarray:
    beads = np.asarray(beads)
    if beads.ndim != 3 or beads.shape[-1] != 3:
        raise ValueError(f"beads must be shaped (n_frames, n_beads, 3), got {beads.shape}")
    return beads


def first_non_finite(beads) -> tuple[int, int] | None:
    """The first bead with a NaN or infinite coordinate.

    Parameters
    ----------
    beads : array_like
        ``(F, R, 3)`` bead positions.

    Returns
    -------
    tuple of int or None
        ``(frame, bead)`` indices of the first non-finite bead (lowest
        frame, then lowest bead), or None when all are finite.

    Raises
    ------
    ValueError
        For an array of the wrong shape.
    """
    bad = ~np.isfinite(_frames(beads)).all(axis=-1)
    if not bad.any():
        return None
    frame, bead = np.argwhere(bad)[0]
    return int(frame), int(bead)


def first_close_pair(beads, min_distance: float = MIN_BEAD_DISTANCE) -> tuple[int, int, int, float] | None:
    """The first pair of beads closer than ``min_distance``.

    Every pair of beads of a frame is considered (consecutive ones and any
    other two, also of different chains): the beads of all frames are sorted
    along one direction (:data:`_SWEEP`, oblique so that no lattice of beads
    lines up across it) and each is compared with the next ones in that order
    while their projections lie within ``min_distance``, so the cost grows as
    ``R log R`` times the few beads that share a slab that thin. The beads must be finite (see
    :func:`first_non_finite`).

    Parameters
    ----------
    beads : array_like
        ``(F, R, 3)`` bead positions, Angstrom.
    min_distance : float, optional
        Smallest allowed distance (Angstrom).

    Returns
    -------
    tuple or None
        ``(frame, i, j, distance)`` with ``i < j``: in the lowest frame that
        has a close pair, the pair with the lowest ``i`` (then ``j``); None
        when no two beads are that close.

    Raises
    ------
    ValueError
        For an array of the wrong shape.
    """
    beads = _frames(beads).astype(np.float64)
    n_frames, n = beads.shape[:2]
    if n < 2:
        return None
    along = beads @ _SWEEP
    order = np.argsort(along, axis=1, kind="stable")
    along = np.take_along_axis(along, order, axis=1)
    sorted_beads = np.take_along_axis(beads, order[..., None], axis=1)
    found = []
    for k in range(1, n):
        near = along[:, k:] - along[:, :-k] < min_distance
        if not near.any():
            break
        frame, i = np.nonzero(near)
        distance = np.linalg.norm(sorted_beads[frame, i + k] - sorted_beads[frame, i], axis=-1)
        close = distance < min_distance
        a, b = order[frame[close], i[close]], order[frame[close], i[close] + k]
        found.append(np.stack([frame[close], np.minimum(a, b), np.maximum(a, b), distance[close]], axis=1))
    found = np.concatenate(found) if found else np.zeros((0, 4))
    if not len(found):
        return None
    first = found[np.lexsort((found[:, 2], found[:, 1], found[:, 0]))[0]]
    return int(first[0]), int(first[1]), int(first[2]), float(first[3])
