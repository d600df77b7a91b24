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
    other two, also of different chains), with a k-d tree per frame, so the
    cost grows as ``R log R``. The beads must be finite (see
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
    if beads.shape[1] < 2:
        return None
    from scipy.spatial import cKDTree

    for frame, xyz in enumerate(beads):
        pairs = cKDTree(xyz).query_pairs(min_distance, output_type="ndarray")
        if len(pairs):
            pairs = np.sort(pairs, axis=1)
            distance = np.linalg.norm(xyz[pairs[:, 1]] - xyz[pairs[:, 0]], axis=-1)
            pairs, distance = pairs[distance < min_distance], distance[distance < min_distance]  # tree: <=
        if len(pairs):
            k = np.lexsort((pairs[:, 1], pairs[:, 0]))[0]
            return frame, int(pairs[k, 0]), int(pairs[k, 1]), float(distance[k])
    return None
