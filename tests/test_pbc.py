"""Making chains whole across periodic boundaries (backmap_plugin.core.pbc)."""

from __future__ import annotations

import mdtraj as md
import numpy as np
import pytest

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.pbc import (
    box_around,
    box_matrices,
    cell_shifts,
    image_gap,
    images_near_cell,
    make_whole,
    unwrap_needed,
)

#: A triclinic cell (rows are box vectors, GROMACS lower-triangular form), Angstrom.
TRICLINIC = np.array([[20.0, 0.0, 0.0], [6.0, 19.0, 0.0], [-5.0, 4.0, 18.0]])


@pytest.fixture(scope="module")
def trace(fixture_pdb) -> np.ndarray:
    """(38, 20, 3) C-alpha trace of 1L2Y (all NMR models), Angstrom."""
    traj = md.load(str(fixture_pdb))
    return traj.xyz[:, traj.topology.select("name CA")].astype(np.float64) * 10.0


#: Two chains of ten residues each.
SEGMENT = np.repeat([0, 1], 10)


def _wrap(xyz: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Put every bead into the cell spanned by ``vectors`` (rows)."""
    fractional = xyz @ np.linalg.inv(vectors)
    return (fractional - np.floor(fractional)) @ vectors


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _assert_shifted_by_lattice(result, original, vectors, segment):
    """Each chain of each frame equals the original moved by one lattice vector."""
    inverse = np.linalg.inv(vectors)
    for frame in range(len(original)):
        for chain in np.unique(segment):
            shift = result[frame, segment == chain] - original[frame, segment == chain]
            np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-3)
            counts = shift[0] @ inverse
            np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)


def test_wrapped_orthorhombic_trace_is_whole_again(trace):
    lengths = np.array([18.0, 16.0, 17.0])
    wrapped = _wrap(trace, np.diag(lengths)).astype(np.float32)
    box = np.tile(lengths, (len(trace), 1)).astype(np.float32)
    assert unwrap_needed(wrapped, box, SEGMENT).all()  # the trace spans more than the box
    whole = make_whole(wrapped, box, SEGMENT)
    assert whole.dtype == np.float32 and whole.shape == wrapped.shape
    bonded = SEGMENT[1:] == SEGMENT[:-1]
    assert np.linalg.norm(np.diff(whole, axis=1), axis=-1)[:, bonded].max() < 4.5
    _assert_shifted_by_lattice(whole, trace, np.diag(lengths), SEGMENT)
    np.testing.assert_allclose(whole[:, [0, 10]], wrapped[:, [0, 10]])  # first bead of each chain stays
    assert not unwrap_needed(whole, box, SEGMENT).any()


def test_wrapped_triclinic_trace_is_whole_again(trace):
    wrapped = _wrap(trace, TRICLINIC)
    whole = make_whole(wrapped, np.broadcast_to(TRICLINIC, (len(trace), 3, 3)), SEGMENT)
    _assert_shifted_by_lattice(whole, trace, TRICLINIC, SEGMENT)


def test_no_box_or_unusable_box_leaves_frames_alone(trace):
    lengths = np.array([18.0, 16.0, 17.0])
    wrapped = _wrap(trace[:3], np.diag(lengths))
    np.testing.assert_array_equal(make_whole(wrapped, None, SEGMENT), wrapped)
    box = np.array([lengths, [0.0, 0.0, 0.0], [np.nan, 1.0, 1.0]])
    whole = make_whole(wrapped, box, SEGMENT)
    np.testing.assert_array_equal(whole[1:], wrapped[1:])
    assert np.linalg.norm(np.diff(whole[0], axis=0), axis=-1)[SEGMENT[1:] == SEGMENT[:-1]].max() < 4.5
    assert unwrap_needed(wrapped, box, SEGMENT).tolist() == [True, False, False]


def test_bond_longer_than_half_the_box_is_an_error(trace):
    labels = [f"chain A residue {i + 1}" for i in range(20)]
    beads = trace[:2].copy()
    beads[1, 12:] += 9.0  # frame 1: a 10+ Angstrom gap after residue 12
    with pytest.raises(BackmapInputError, match=r"traj\.xtc: frame 6: .*residue 12 and chain A residue 13"):
        make_whole(beads, [20.0, 20.0, 20.0], np.zeros(20), labels=labels, first_frame=5, source="traj.xtc")


def test_max_bond_makes_long_gaps_breaks(trace):
    lengths = np.array([30.0, 30.0, 30.0])
    beads = trace[:2].copy()
    beads[:, 12:] += 17.0  # a real gap (about 27 Angstrom), not a bond
    wrapped = _wrap(beads, np.diag(lengths))
    whole = make_whole(wrapped, lengths, np.zeros(20), max_bond=6.0)
    pieces = np.repeat([0, 1], [12, 8])
    _assert_shifted_by_lattice(whole, beads, np.diag(lengths), pieces)
    np.testing.assert_allclose(whole[:, 12], wrapped[:, 12])  # a piece starts where it is
    assert unwrap_needed(beads, lengths, np.zeros(20)).all()  # the gap's nearest image differs ...
    assert not unwrap_needed(beads, lengths, np.zeros(20), max_bond=6.0).any()  # ... but it is no bond


def test_single_frame_box_and_shapes(trace):
    box = box_matrices([10.0, 11.0, 12.0], 3)
    assert box.shape == (3, 3, 3) and np.allclose(box[2], np.diag([10.0, 11.0, 12.0]))
    assert np.allclose(box_matrices(np.full((3, 3), 5.0), 3), 5.0 * np.eye(3))  # (F, 3) lengths, F = 3
    with pytest.raises(ValueError, match="box must be shaped"):
        make_whole(trace[:2], np.ones((3, 3, 3)), SEGMENT)
    with pytest.raises(ValueError, match="segment must be shaped"):
        make_whole(trace[:2], [20.0, 20.0, 20.0], SEGMENT[:5])
    with pytest.raises(ValueError, match="beads must be shaped"):
        unwrap_needed(trace[0], [20.0, 20.0, 20.0], SEGMENT)


def test_box_around_centres_with_padding(trace):
    centred, box = box_around(trace[0], 10.0)
    extent = trace[0].max(axis=0) - trace[0].min(axis=0)
    np.testing.assert_allclose(box, extent + 20.0)
    np.testing.assert_allclose(centred.min(axis=0), 10.0)
    np.testing.assert_allclose(box - centred.max(axis=0), 10.0)
    with pytest.raises(ValueError, match="padding"):
        box_around(trace[0], -1.0)


def test_gather_keeps_chains_and_pieces_together(trace):
    """With gather, every chain (and the piece of a chain after a break) moves by the same lattice vector as the
    first: the complex of two chains in contact, and a chain with a gap, come out as they were."""
    lengths = np.array([20.0, 20.0, 20.0])  # the two chains' centroids are 8-10 A apart, less than half of it
    wrapped = _wrap(trace, np.diag(lengths))
    assert not np.allclose(make_whole(wrapped, lengths, SEGMENT) - trace, (wrapped - trace)[:, :1], atol=1e-3)
    gathered = make_whole(wrapped, lengths, SEGMENT, gather=True)
    _assert_shifted_by_lattice(gathered, trace, np.diag(lengths), np.zeros(20))  # one shift for all 20 beads
    beads = trace[:2].copy()
    beads[:, 12:] += [0.0, -5.0, 0.0]  # an 8.7 A gap after residue 12: a break; the pieces' centroids 7.4 A apart
    wrapped = _wrap(beads, np.diag(lengths))
    gathered = make_whole(wrapped, lengths, np.zeros(20), max_bond=6.0, gather=True)
    _assert_shifted_by_lattice(gathered, beads, np.diag(lengths), np.zeros(20))
    # chains whose nearest beads lie 10 A apart (centres of mass of residues whose atoms touch) are gathered too
    near = trace[:1].copy()
    near[:, 10:] += 8.0 * _unit(near[0, 10:].mean(0) - near[0, :10].mean(0))  # chain B moved away from A
    gap = np.linalg.norm(near[0, :10, None] - near[0, None, 10:], axis=-1).min()
    assert 8.0 < gap < 12.0
    split = near.copy()
    split[:, 10:] += [40.0, 0.0, 0.0]
    _assert_shifted_by_lattice(make_whole(split, [40.0, 40.0, 40.0], SEGMENT, gather=True), near,
                               np.diag([40.0, 40.0, 40.0]), np.zeros(20))
    # chains that touch nothing either way stay where they are (e.g. a crystal's chains in a small cell)
    apart = trace[:2].copy()
    apart[:, 10:] += [40.0, 0.0, 0.0]  # chain B's centroid half the box from A's, its nearest beads 30+ A away
    np.testing.assert_array_equal(make_whole(apart, [80.0, 80.0, 80.0], SEGMENT, gather=True), apart)
    # triclinic: the same
    wrapped = _wrap(trace, TRICLINIC * 1.2)
    gathered = make_whole(wrapped, np.broadcast_to(TRICLINIC * 1.2, (len(trace), 3, 3)), SEGMENT, gather=True)
    _assert_shifted_by_lattice(gathered, trace, TRICLINIC * 1.2, np.zeros(20))


@pytest.mark.parametrize("vectors", [np.diag([20.0, 24.0, 30.0]), TRICLINIC])
def test_images_near_cell_hold_every_image_within_the_margin(vectors):
    """Points moved into the cell stay there; every periodic image within the margin of a point of the cell (its
    nearest images, searched over two lattice steps) is listed, and no image is the point itself."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-40.0, 40.0, size=(300, 3))
    inside = points + cell_shifts(points, vectors)
    fractional = inside @ np.linalg.inv(vectors)
    assert (fractional > -1e-9).all() and (fractional < 1 + 1e-9).all()
    np.testing.assert_allclose((inside - points) @ np.linalg.inv(vectors),
                               np.round((inside - points) @ np.linalg.inv(vectors)), atol=1e-9)
    margin = 4.0
    index, shift = images_near_cell(inside, vectors, margin)
    listed = {(int(i), *np.round(s @ np.linalg.inv(vectors)).astype(int)) for i, s in zip(index, shift)}
    assert all(any(key[1:]) for key in listed)
    probe = rng.uniform(0.0, 1.0, size=(2000, 3)) @ vectors  # points of the cell
    steps = np.array([(a, b, c) for a in range(-2, 3) for b in range(-2, 3) for c in range(-2, 3) if a or b or c])
    for n in steps:
        image = inside + n @ vectors
        near = np.linalg.norm(image[:, None] - probe[None], axis=-1).min(1) < margin
        for i in np.flatnonzero(near):
            assert (int(i), *n) in listed


def test_image_gap_is_the_least_distance_to_an_image():
    """Points spanning 3 A of a 10 A cubic cell come 7 A from their images; in a triclinic cell no image comes
    closer than the gap (checked over two lattice steps); a set that spans the cell has none."""
    cube = np.eye(3) * 10.0
    points = np.array([[1.0, 1.0, 1.0], [4.0, 2.0, 2.5]])
    assert image_gap(points, cube) == pytest.approx(7.0)
    rng = np.random.default_rng(1)
    cloud = rng.uniform(0.0, 6.0, size=(200, 3))
    gap = image_gap(cloud, TRICLINIC)
    steps = np.array([(a, b, c) for a in range(-2, 3) for b in range(-2, 3) for c in range(-2, 3) if a or b or c])
    nearest = min(np.linalg.norm(cloud[:, None] - (cloud + n @ TRICLINIC)[None], axis=-1).min() for n in steps)
    assert 0 < gap <= nearest
    assert image_gap(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 10.5]]), cube) < 0


def test_image_gap_is_close_to_the_truth_in_a_rhombic_dodecahedron():
    """GROMACS's rhombic dodecahedron (editconf -bt dodecahedron) is a skewed cell: a ball of 30 A in one of 60 A
    comes 30 A from its images, which the faces' spreads alone bounded at 8 A (a solvated protein's images were
    said to come within 4 A of it)."""
    d = 60.0
    box = np.array([[d, 0.0, 0.0], [0.0, d, 0.0], [d / 2, d / 2, d * np.sqrt(2) / 2]])
    rng = np.random.default_rng(2)
    ball = rng.normal(size=(400, 3))
    ball = 15.0 * ball / np.linalg.norm(ball, axis=-1, keepdims=True) + box.sum(0) / 2
    steps = np.array([(a, b, c) for a in range(-2, 3) for b in range(-2, 3) for c in range(-2, 3) if a or b or c])
    nearest = min(np.linalg.norm(ball[:, None] - (ball + n @ box)[None], axis=-1).min() for n in steps)
    assert 0.9 * nearest <= image_gap(ball, box) <= nearest
