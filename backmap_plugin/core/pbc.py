"""Making chains whole across periodic boundaries (pure numpy).

Periodic simulations (GROMACS XTC frames, CALVADOS DCD files) often store
each bead wrapped into the unit cell, so a chain that crosses the cell
boundary appears cut in two, with one "bond" as long as the box. Backmapping
needs every chain in one piece: :func:`make_whole` moves each bead by whole
box vectors so that it lies at the nearest periodic image of the bead before
it in the same chain (the first bead of every chain stays where it is).
:func:`unwrap_needed` tells, per frame, whether that changes anything, and
:func:`box_around` makes a rectangular box around a structure (for writing
a periodic file such as a GROMACS ``.gro``).

Boxes are given per frame, in Angstrom, either as three orthorhombic edge
lengths ``(F, 3)`` or as box vectors ``(F, 3, 3)`` (one vector per row, as
``mdtraj.Trajectory.unitcell_vectors`` and GROMACS store them) for
triclinic cells. A frame whose box is missing (None), zero or not finite is
left as it is.
"""

from __future__ import annotations

import itertools

import numpy as np

from backmap_plugin.core.errors import BackmapInputError

__all__ = ["bond_images", "box_around", "box_matrices", "cell_heights", "cell_shifts", "image_gap",
           "images_near_cell", "make_whole", "unwrap_needed"]

#: Neighbouring lattice translations searched for the nearest image in a
#: triclinic cell, after the shift by rounded fractional coordinates.
_NEIGHBOURS = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)


def box_matrices(box, n_frames: int) -> np.ndarray | None:
    """Per-frame box vectors (rows) from edge lengths or box vectors.

    Parameters
    ----------
    box : array_like or None
        ``(F, 3)`` orthorhombic edge lengths, ``(F, 3, 3)`` box vectors (one
        vector per row), ``(3,)`` edge lengths used for every frame, or None
        for no box.
    n_frames : int
        Number of frames ``F``.

    Returns
    -------
    numpy.ndarray or None
        ``(F, 3, 3)`` float64 box vectors, rows of zeros for frames without a
        usable box (zero, negative or non-finite lengths, zero volume); None
        when ``box`` is None.

    Raises
    ------
    ValueError
        For a box of any other shape.
    """
    if box is None:
        return None
    box = np.asarray(box, dtype=np.float64)
    if box.shape == (3,):
        box = np.broadcast_to(box, (n_frames, 3))
    if box.shape == (n_frames, 3):
        vectors = box[:, :, None] * np.eye(3)
    elif box.shape == (n_frames, 3, 3):
        vectors = box.copy()
    else:
        raise ValueError(
            f"box must be shaped (3,) or ({n_frames}, 3) (edge lengths) or ({n_frames}, 3, 3) (box vectors), "
            f"got {box.shape}"
        )
    with np.errstate(invalid="ignore"):
        volume = np.abs(np.linalg.det(np.where(np.isfinite(vectors), vectors, 0.0)))
    usable = np.isfinite(vectors).all(axis=(1, 2)) & (volume > 1e-6)
    if box.ndim == 2:
        usable &= (box > 0).all(axis=1)
    vectors[~usable] = 0.0
    return vectors


def _half_widths(vectors: np.ndarray) -> np.ndarray:
    """Half the smallest distance between opposite faces of each cell, (F,)."""
    volume = np.abs(np.linalg.det(vectors))
    cross = np.stack([np.cross(vectors[:, 1], vectors[:, 2]),
                      np.cross(vectors[:, 2], vectors[:, 0]),
                      np.cross(vectors[:, 0], vectors[:, 1])], axis=1)
    area = np.linalg.norm(cross, axis=-1).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, 0.5 * volume / np.where(area > 0, area, 1.0), 0.0)


def cell_heights(vectors) -> np.ndarray:
    """Distances between opposite faces of a cell.

    Parameters
    ----------
    vectors : array_like
        ``(3, 3)`` box vectors (rows), Angstrom.

    Returns
    -------
    numpy.ndarray
        ``(3,)`` the cell's height along each vector: the distance between
        the two faces the other two vectors span (the edge lengths of an
        orthorhombic cell).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    volume = abs(np.linalg.det(vectors))
    cross = np.cross(vectors[[1, 2, 0]], vectors[[2, 0, 1]])
    return volume / np.linalg.norm(cross, axis=-1)


#: Lattice vectors n . box (n_i in -2 ... 2, not all zero) whose images :func:`image_gap` bounds by their length.
_NEAR_LATTICE = np.array([n for n in itertools.product(range(-2, 3), repeat=3) if any(n)], dtype=np.float64)


def image_gap(points, vectors) -> float:
    """How close the periodic images of a set of points can come to the set, at least.

    An image moved by the lattice vector ``L`` lies at least ``|L| - w``
    from the set, where ``w`` is the set's width along ``L``; one moved by
    ``n_i`` box vectors ``i`` lies at least ``(|n_i| - s_i) h_i`` away,
    where ``s_i`` is the set's spread in fractional coordinate ``i`` and
    ``h_i`` the cell's height (:func:`cell_heights`). The first bound is
    taken for the lattice vectors of up to two box vectors each way (in a
    skewed cell, e.g. GROMACS's rhombic dodecahedron, it is far the
    tighter: a solvated protein's images 19-21 A away were bounded at 3-4 A
    by the faces alone), the second for the rest.

    Parameters
    ----------
    points : array_like
        ``(N, 3)`` positions, Angstrom (a molecule made whole, or several).
    vectors : array_like
        ``(3, 3)`` box vectors (rows) of a usable box.

    Returns
    -------
    float
        Angstrom; zero or less where the set spans the cell in some direction.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    fractional = points @ np.linalg.inv(vectors)
    spread = fractional.max(axis=0) - fractional.min(axis=0)
    lattice = _NEAR_LATTICE @ vectors  # (124, 3)
    length = np.linalg.norm(lattice, axis=-1)
    along = points @ (lattice / length[:, None]).T  # (N, 124)
    near = (length - (along.max(axis=0) - along.min(axis=0))).min()
    far = ((3.0 - spread) * cell_heights(vectors)).min()
    return float(min(near, far))


def cell_shifts(points, vectors) -> np.ndarray:
    """Whole box vectors that move each point into the cell.

    Parameters
    ----------
    points : array_like
        ``(N, 3)`` positions, Angstrom.
    vectors : array_like
        ``(3, 3)`` box vectors (rows) of a usable box.

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` float64 shifts: ``points + shifts`` have fractional
        coordinates in ``[0, 1)`` (up to rounding).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    fractional = np.asarray(points, dtype=np.float64) @ np.linalg.inv(vectors)
    return -np.floor(fractional) @ vectors


def images_near_cell(points, vectors, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The periodic images of points in a cell that lie within ``margin`` of the cell.

    Parameters
    ----------
    points : array_like
        ``(N, 3)`` positions inside the cell (e.g. moved there by
        :func:`cell_shifts`), Angstrom.
    vectors : array_like
        ``(3, 3)`` box vectors (rows) of a usable box.
    margin : float
        Angstrom; images in the 26 neighbouring cells are kept where their
        fractional coordinates lie within ``margin`` (as a share of the
        cell's heights, :func:`cell_heights`) of the cell: every image
        closer than ``margin`` to a point of the cell, and in a triclinic
        cell some farther ones.

    Returns
    -------
    index : numpy.ndarray
        ``(K,)`` int64, the point each image is of.
    shift : numpy.ndarray
        ``(K, 3)`` float64, the box vectors that make it: the image is
        ``points[index] + shift``.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    fractional = np.asarray(points, dtype=np.float64) @ np.linalg.inv(vectors)
    reach = float(margin) / cell_heights(vectors)
    lattice = _NEIGHBOURS[_NEIGHBOURS.any(axis=1)]
    moved = fractional[None] + lattice[:, None]  # (26, N, 3)
    which, index = np.nonzero(((moved >= -reach) & (moved < 1.0 + reach)).all(axis=-1))
    return index.astype(np.int64), lattice[which] @ vectors


def _is_orthorhombic(vectors: np.ndarray) -> bool:
    off = vectors - vectors * np.eye(3)
    return bool(np.all(off == 0.0))


def bond_images(delta: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Lattice shifts that bring bond vectors to their nearest periodic image.

    Parameters
    ----------
    delta : numpy.ndarray
        ``(F, P, 3)`` bond vectors (position of a bead minus that of its
        predecessor), Angstrom.
    vectors : numpy.ndarray
        ``(F, 3, 3)`` box vectors per frame (rows; from :func:`box_matrices`).
        Frames whose box is all zeros get no shift.

    Returns
    -------
    numpy.ndarray
        ``(F, P, 3)`` float64 integer counts ``n`` of box vectors such that
        ``delta + n @ vectors`` is the shortest image of each bond.
    """
    delta = np.asarray(delta, dtype=np.float64)
    usable = np.abs(np.linalg.det(vectors)) > 0
    inverse = np.zeros_like(vectors)
    inverse[usable] = np.linalg.inv(vectors[usable])
    counts = -np.round(delta @ inverse)
    if _is_orthorhombic(vectors):  # rounding fractional coordinates is exact
        return counts + 0.0
    # triclinic: the nearest image is within one lattice step of the rounded one
    shifted = delta + counts @ vectors
    best = np.zeros_like(counts)
    best_norm = np.einsum("fpi,fpi->fp", shifted, shifted)
    for step in _NEIGHBOURS:
        if not step.any():
            continue
        candidate = shifted + (step @ vectors)[:, None, :]
        norm = np.einsum("fpi,fpi->fp", candidate, candidate)
        better = norm < best_norm - 1e-9
        best[better] = step
        best_norm = np.where(better, norm, best_norm)
    best[~usable] = 0.0
    return counts + best + 0.0


def _bonds(segment, n_beads: int) -> np.ndarray:
    """Boolean (R-1,): bead i+1 continues the chain of bead i."""
    segment = np.asarray(segment)
    if segment.shape != (n_beads,):
        raise ValueError(f"segment must be shaped ({n_beads},), got {segment.shape}")
    return segment[1:] == segment[:-1]


def _check_beads(beads) -> np.ndarray:
    beads = np.asarray(beads)
    if beads.ndim != 3 or beads.shape[-1] != 3:
        raise ValueError(f"beads must be shaped (n_frames, n_beads, 3), got {beads.shape}")
    return beads


def _bond_shifts(beads: np.ndarray, box, segment, max_bond):
    """Bonds of the chains and their lattice shifts to the nearest image.

    Returns None when there is nothing to unwrap (no box, no bond); else
    ``(pairs, counts, length, half, vectors)``: bond ``k`` joins beads
    ``pairs[k]`` and ``pairs[k] + 1``; ``counts`` (F, P, 3) box-vector
    counts (zero for chain breaks longer than ``max_bond``), ``length``
    (F, P) nearest-image bond lengths, ``half`` (F, 1) half the smallest
    cell width (0 without a usable box).
    """
    vectors = box_matrices(box, beads.shape[0])
    bonded = _bonds(segment, beads.shape[1])
    if vectors is None or not bonded.any():
        return None
    pairs = np.nonzero(bonded)[0]
    delta = np.diff(beads.astype(np.float64), axis=1)[:, pairs]
    counts = bond_images(delta, vectors)
    length = np.linalg.norm(delta + counts @ vectors, axis=-1)
    if max_bond is not None:
        counts[length > max_bond] = 0.0
    return pairs, counts, length, _half_widths(vectors)[:, None], vectors


def unwrap_needed(beads, box, segment, max_bond: float | None = None) -> np.ndarray:
    """Which frames have a chain cut by the periodic boundary.

    Parameters
    ----------
    beads : array_like
        ``(F, R, 3)`` bead positions, Angstrom.
    box : array_like or None
        Box per frame (see :func:`box_matrices`), Angstrom.
    segment : array_like
        ``(R,)`` chain (or segment) id of each bead; consecutive beads with
        the same id are bonded.
    max_bond : float, optional
        As for :func:`make_whole`: longer nearest-image distances are chain
        breaks, not bonds.

    Returns
    -------
    numpy.ndarray
        ``(F,)`` bool: True where :func:`make_whole` would move a bead.
    """
    beads = _check_beads(beads)
    found = _bond_shifts(beads, box, segment, max_bond)
    if found is None:
        return np.zeros(beads.shape[0], dtype=bool)
    return found[1].any(axis=(1, 2))


def make_whole(beads, box, segment, max_bond: float | None = None, labels=None,
               first_frame: int = 0, source: str = "input", gather: bool = False) -> np.ndarray:
    """Unwrap chains split by the periodic boundary.

    Every bead is moved by whole box vectors to the periodic image nearest
    to the (already moved) bead before it in the same chain; the first bead
    of each chain stays where it is, so every chain as a whole may still sit
    anywhere in (or around) the cell, unless ``gather``.

    Parameters
    ----------
    beads : array_like
        ``(F, R, 3)`` bead positions, Angstrom.
    box : array_like or None
        ``(F, 3)`` orthorhombic edge lengths, ``(F, 3, 3)`` box vectors
        (rows) or ``(3,)`` lengths for every frame, Angstrom; None (no box)
        returns the beads unchanged. Frames whose box is zero or not finite
        are left as they are.
    segment : array_like
        ``(R,)`` chain (or segment) id of each bead; consecutive beads with
        the same id are bonded.
    max_bond : float, optional
        Longest bond (Angstrom). A pair of consecutive beads farther apart
        than this at their nearest image is a chain break: the bead after it
        starts a new piece that is unwrapped on its own (its first bead
        stays). None (default): every consecutive pair of a chain is bonded.
    labels : sequence of str, optional
        ``(R,)`` description of each bead (e.g. ``chain A residue LYS 12``)
        for error messages; bead indices are used when None.
    first_frame : int, optional
        Index of the first frame in the whole input, for error messages.
    source : str, optional
        Name of the input, for error messages.
    gather : bool, optional
        Then the pieces (chains, and the parts of a chain after a break) are
        gathered too: each, in order, that touches none of the pieces before
        it in the frame (:data:`CONTACT_DISTANCE`) moves by whole box vectors
        to the periodic image of its centroid nearest theirs, if it lies
        closer to them there, within :data:`GATHER_DISTANCE` (the first
        piece stays). The chains of a
        complex, and the parts of a chain, then stay together as in the
        simulation (when the box is wider than twice the distance between
        their centroids); pieces that touch nothing stay where they are.

    Returns
    -------
    numpy.ndarray
        Unwrapped positions, same shape and dtype as ``beads`` (a copy).

    Raises
    ------
    BackmapInputError
        When a bond is at least half the box width long even at its nearest
        image (the periodic image it belongs to is ambiguous); the message
        names the input, frame and both residues. With ``max_bond`` this
        happens only when the box is narrower than twice ``max_bond``.
    ValueError
        For arrays of the wrong shape.
    """
    beads = _check_beads(beads)
    out = beads.copy()
    found = _bond_shifts(beads, box, segment, max_bond)
    if found is None:
        vectors = box_matrices(box, beads.shape[0])
        if gather and vectors is not None:  # no bond to unwrap: the beads of every chain are its pieces
            starts = np.ones(beads.shape[:2], dtype=bool)
            out[...] = _gather(beads.astype(np.float64), starts, vectors).astype(beads.dtype)
        return out
    pairs, counts, length, half, vectors = found
    broken = length > max_bond if max_bond is not None else np.zeros(length.shape, dtype=bool)
    ambiguous = (half > 0) & ~broken & (length >= half)
    if ambiguous.any():
        frame, k = (int(i) for i in np.argwhere(ambiguous)[0])
        i = int(pairs[k])
        names = labels if labels is not None else [f"bead {n}" for n in range(beads.shape[1])]
        raise BackmapInputError(
            f"{source}: frame {first_frame + frame}: cannot make the chain whole: {names[i]} and {names[i + 1]} "
            f"are {length[frame, k]:.1f} Angstrom apart even at their nearest periodic image, at least half "
            f"the box width ({half[frame, 0]:.1f} Angstrom), so the image they belong to is ambiguous: either "
            "the box is too small or the two are not bonded (then put them in different chains: chain ids, "
            "or residue numbers that restart at each molecule in a .gro file)"
        )
    # cumulative shift along each piece; a new chain or a break starts a piece
    step = np.zeros((beads.shape[0], beads.shape[1], 3))
    step[:, pairs + 1] = counts
    total = np.cumsum(step, axis=1)
    starts = np.ones(beads.shape[:2], dtype=bool)
    starts[:, pairs + 1] = broken
    first = np.maximum.accumulate(np.where(starts, np.arange(beads.shape[1]), 0), axis=1)
    total -= np.take_along_axis(total, first[:, :, None], axis=1)
    whole = beads.astype(np.float64) + total @ vectors
    out[...] = (_gather(whole, starts, vectors) if gather else whole).astype(beads.dtype)
    return out


#: Gathering moves a piece only from where it touches none of the pieces before it (no two beads closer than
#: CONTACT_DISTANCE, Angstrom) to where it lies closer to them, within GATHER_DISTANCE: a complex split by the box
#: is joined again, and pieces that touch nothing either way (e.g. chains of a crystal structure's asymmetric
#: unit, in a cell smaller than the molecule) stay where the file has them. Beads that are not C-alpha atoms lie
#: farther apart than their atoms: in a CALVADOS 3 run of a two-chain complex, frames whose chains came within
#: 4.8-5.4 A (atoms) had their nearest centres of mass 8.1-9.7 A apart, and with 8 A for both these two frames
#: were written split by the box.
CONTACT_DISTANCE = 8.0
GATHER_DISTANCE = 12.0
#: Beads per piece that the contact test compares (evenly spread; all of smaller pieces).
_CONTACT_SAMPLE = 64


def _closest(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest distance between two point sets, from at most :data:`_CONTACT_SAMPLE` points of each."""
    a = a[:: max(1, len(a) // _CONTACT_SAMPLE)]
    b = b[:: max(1, len(b) // _CONTACT_SAMPLE)]
    return float(np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1).min()))


def _gather(xyz: np.ndarray, starts: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Pieces (F, R) ``starts`` of ``xyz`` (F, R, 3) moved, one by one, next to those before them.

    A piece goes to the image of its centroid nearest the centroid of the
    pieces before it, if it touches none of them where it is
    (:data:`CONTACT_DISTANCE`) and lies closer to them there, within
    :data:`GATHER_DISTANCE`.
    """
    if starts.sum(1).max(initial=0) < 2:  # one piece per frame (a single whole chain): nothing to gather
        return xyz
    out = xyz.copy()
    for f in range(len(xyz)):
        bounds = np.flatnonzero(starts[f]).tolist() + [xyz.shape[1]]
        if len(bounds) < 3 or not np.abs(vectors[f]).any():
            continue
        for k in range(1, len(bounds) - 1):
            placed, piece = out[f, : bounds[k]], out[f, bounds[k] : bounds[k + 1]]
            delta = piece.mean(0) - placed.mean(0)
            shift = bond_images(delta[None, None], vectors[f][None])[0, 0] @ vectors[f]
            if not shift.any():
                continue
            here, there = _closest(piece, placed), _closest(piece + shift, placed)
            if here > CONTACT_DISTANCE and there <= GATHER_DISTANCE and there < here:
                out[f, bounds[k] : bounds[k + 1]] += shift
    return out


def box_around(xyz, padding: float):
    """A rectangular box around a structure, with the structure centred in it.

    Parameters
    ----------
    xyz : array_like
        ``(n_atoms, 3)`` positions (any length unit).
    padding : float
        Space between the structure's extent and each face of the box (same
        unit), so periodic images are at least ``2 * padding`` apart.

    Returns
    -------
    centred : numpy.ndarray
        ``(n_atoms, 3)`` float64 positions moved so that the structure's
        bounding box is centred in the box (all coordinates in ``[0, box)``).
    box : numpy.ndarray
        ``(3,)`` edge lengths: extent plus ``2 * padding`` in each direction.

    Raises
    ------
    ValueError
        For a negative padding, no atoms or non-finite positions.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    if padding < 0:
        raise ValueError(f"padding must not be negative, got {padding}")
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0:
        raise ValueError(f"xyz must be shaped (n_atoms, 3) with at least one atom, got {xyz.shape}")
    if not np.isfinite(xyz).all():
        raise ValueError("positions are not all finite")
    low, high = xyz.min(axis=0), xyz.max(axis=0)
    box = high - low + 2.0 * padding
    return xyz - low + padding, box


def box_lengths_and_angles(vectors) -> tuple[np.ndarray, np.ndarray]:
    """Cell lengths and angles of box vectors.

    Parameters
    ----------
    vectors : array_like
        ``(..., 3, 3)`` box vectors (rows a, b, c), any length unit.

    Returns
    -------
    lengths : numpy.ndarray
        ``(..., 3)`` |a|, |b|, |c| in the vectors' unit.
    angles : numpy.ndarray
        ``(..., 3)`` alpha (b, c), beta (a, c), gamma (a, b) in degrees.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    lengths = np.linalg.norm(vectors, axis=-1)

    def angle(i, j):
        cos = (vectors[..., i, :] * vectors[..., j, :]).sum(-1) / (lengths[..., i] * lengths[..., j])
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))

    return lengths, np.stack([angle(1, 2), angle(0, 2), angle(0, 1)], -1)
