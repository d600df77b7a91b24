"""Tests for backmap_plugin.core.metrics on a real heavy-atom protein (PDB 1L2Y)."""

from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
from scipy.sparse.csgraph import shortest_path

from backmap_plugin.core import metrics

DATA = Path(__file__).resolve().parent / "data"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data"
FIXTURE = DATA / "1l2y.pdb.gz"
CORPUS_CRYSTAL = CORPUS / "train" / "abbench__1AHW_l_b.pdb.gz"


def _load(path):
    """Return (xyz in Angstrom, bonds, dict of per-residue N/CA/C/CB indices, traj)."""
    traj = md.load(str(path))
    top = traj.topology
    bonds = np.array([[b.atom1.index, b.atom2.index] for b in top.bonds], dtype=np.int64)

    def index_of(name):
        return np.array(
            [next((a.index for a in res.atoms if a.name == name), -1) for res in top.residues]
        )

    res_idx = {name: index_of(name) for name in ("N", "CA", "C", "CB")}
    return traj.xyz.astype(np.float64) * 10.0, bonds, res_idx, traj


@pytest.fixture(scope="module")
def protein():
    return _load(FIXTURE)


def _res_args(res_idx):
    return res_idx["N"], res_idx["CA"], res_idx["C"], res_idx["CB"]


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


# ---------------------------------------------------------------- bonds


def test_bond_lengths_shape_and_values(protein):
    xyz, bonds, _, _ = protein
    d = metrics.bond_lengths(xyz, bonds)
    assert d.shape == (xyz.shape[0], len(bonds))
    # heavy-atom covalent bonds in proteins lie between ~1.2 and ~1.9 A
    assert d.min() > 1.15 and d.max() < 1.9
    np.testing.assert_allclose(metrics.bond_lengths(xyz[0], bonds), d[:1])


def test_fraction_bonds_off_self_is_zero(protein):
    xyz, bonds, _, _ = protein
    assert metrics.fraction_bonds_off(xyz, bonds, xyz) == 0.0
    assert metrics.fraction_bonds_off(xyz, bonds, xyz[0]) >= 0.0  # broadcast ref
    ideal = metrics.bond_lengths(xyz, bonds).mean(axis=0)
    assert metrics.fraction_bonds_off(xyz, bonds, ideal, tol=0.5) == 0.0


def _stretch_terminal_atoms(xyz, bonds, k, stretch):
    """Move k degree-1 atoms away from their only neighbour by ``stretch``."""
    degree = np.bincount(bonds.ravel(), minlength=xyz.shape[1])
    terminal = np.flatnonzero(degree == 1)[:k]
    assert len(terminal) == k
    out = xyz.copy()
    stretched_bonds = []
    for atom in terminal:
        b = np.flatnonzero((bonds == atom).any(axis=1))[0]
        other = bonds[b, 0] if bonds[b, 1] == atom else bonds[b, 1]
        vec = xyz[:, atom] - xyz[:, other]
        unit = vec / np.linalg.norm(vec, axis=-1, keepdims=True)
        out[:, atom] += stretch * unit
        stretched_bonds.append(b)
    return out, np.array(stretched_bonds)


@pytest.mark.parametrize("k", [1, 5])
def test_fraction_bonds_off_counts_stretched_bonds(protein, k):
    xyz, bonds, _, _ = protein
    stretched, which = _stretch_terminal_atoms(xyz, bonds, k, 0.2)
    frac = metrics.fraction_bonds_off(stretched, bonds, xyz, tol=0.1)
    assert frac == pytest.approx(k / len(bonds), abs=1e-12)
    # against ideal lengths taken from the unstretched structure, frame 0
    ideal = metrics.bond_lengths(xyz[0], bonds)[0]
    single = metrics.fraction_bonds_off(stretched[0], bonds, ideal, tol=0.1)
    assert single == pytest.approx(k / len(bonds), abs=1e-12)
    d = metrics.bond_lengths(stretched, bonds) - metrics.bond_lengths(xyz, bonds)
    np.testing.assert_allclose(d[:, which], 0.2, atol=1e-9)


def test_fraction_bonds_off_rejects_mismatch(protein):
    xyz, bonds, _, _ = protein
    with pytest.raises(ValueError):
        metrics.fraction_bonds_off(xyz, bonds, np.ones(len(bonds) - 1))
    with pytest.raises(ValueError):
        metrics.fraction_bonds_off(xyz, np.zeros((0, 2), dtype=int), np.ones(0))


# ---------------------------------------------------------------- chirality


def test_real_protein_is_all_l(protein):
    xyz, _, res_idx, traj = protein
    vol = metrics.chirality(xyz, *_res_args(res_idx))
    assert vol.shape == (xyz.shape[0], traj.n_residues)
    is_gly = np.array([r.name == "GLY" for r in traj.topology.residues])
    assert np.all(np.isnan(vol[:, is_gly]))
    assert np.all(vol[:, ~is_gly] > 1.5)  # L-amino acids: positive volume
    assert metrics.count_d_residues(xyz, *_res_args(res_idx)) == 0


def test_mirror_image_is_all_d(protein):
    xyz, _, res_idx, traj = protein
    mirror = xyz * np.array([-1.0, 1.0, 1.0])
    n_non_gly = sum(r.name != "GLY" for r in traj.topology.residues)
    assert n_non_gly == 17
    count = metrics.count_d_residues(mirror, *_res_args(res_idx))
    assert count == n_non_gly * xyz.shape[0]
    np.testing.assert_allclose(
        metrics.chirality(mirror, *_res_args(res_idx)),
        -metrics.chirality(xyz, *_res_args(res_idx)),
    )


def test_chirality_invariant_under_rigid_motion(protein):
    xyz, _, res_idx, _ = protein
    rng = np.random.default_rng(0)
    moved = xyz @ _random_rotation(rng).T + rng.normal(size=3) * 20
    np.testing.assert_allclose(
        metrics.chirality(moved, *_res_args(res_idx)),
        metrics.chirality(xyz, *_res_args(res_idx)),
        atol=1e-9,
    )


@pytest.mark.skipif(not CORPUS_CRYSTAL.exists(), reason="project corpus not available")
def test_crystal_structure_from_corpus_is_all_l():
    xyz, bonds, res_idx, traj = _load(CORPUS_CRYSTAL)
    assert metrics.count_d_residues(xyz, *_res_args(res_idx)) == 0
    assert metrics.clashes(xyz, bonds).tolist() == [0]
    mirror = xyz * np.array([1.0, -1.0, 1.0])
    n_cb = int(np.count_nonzero(res_idx["CB"] >= 0))
    assert metrics.count_d_residues(mirror, *_res_args(res_idx)) == n_cb


# ---------------------------------------------------------------- exclusions


def test_bonded_exclusions_hand_made_graph():
    # 0-1-2-3-4-5 with a branch 2-6 and a bond given twice / reversed
    bonds = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [2, 6], [1, 0]])
    expected_12 = {(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (2, 6)}
    expected_13 = {(0, 2), (1, 3), (2, 4), (3, 5), (1, 6), (3, 6)}
    expected_14 = {(0, 3), (1, 4), (2, 5), (0, 6), (4, 6)}
    got = metrics.bonded_exclusions(8, bonds, max_sep=3)  # atom 7 is isolated
    assert got.dtype.kind == "i"
    assert set(map(tuple, got.tolist())) == expected_12 | expected_13 | expected_14
    assert len(got) == len(expected_12 | expected_13 | expected_14)
    assert np.all(got[:, 0] < got[:, 1])
    assert got.tolist() == sorted(got.tolist())
    got2 = metrics.bonded_exclusions(8, bonds, max_sep=2)
    assert set(map(tuple, got2.tolist())) == expected_12 | expected_13
    assert metrics.bonded_exclusions(8, bonds, max_sep=0).shape == (0, 2)


def test_bonded_exclusions_ring():
    # five-membered ring (like proline): every pair is within 2 bonds
    bonds = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]])
    got = metrics.bonded_exclusions(5, bonds, max_sep=3)
    assert len(got) == 10


def test_bonded_exclusions_matches_shortest_paths(protein):
    xyz, bonds, _, traj = protein
    n = traj.n_atoms
    adj = np.zeros((n, n))
    adj[bonds[:, 0], bonds[:, 1]] = adj[bonds[:, 1], bonds[:, 0]] = 1
    dist = shortest_path(adj, unweighted=True, directed=False)
    i, j = np.nonzero(np.triu(dist <= 3, k=1))
    got = metrics.bonded_exclusions(n, bonds, max_sep=3)
    np.testing.assert_array_equal(got, np.stack([i, j], axis=1))


def test_bonded_exclusions_large_chain_is_fast():
    import time

    n = 10_000
    bonds = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1)
    start = time.perf_counter()
    got = metrics.bonded_exclusions(n, bonds, max_sep=3)
    assert time.perf_counter() - start < 2.0
    assert len(got) == (n - 1) + (n - 2) + (n - 3)


# ---------------------------------------------------------------- clashes


def _brute_force_clashes(xyz, bonds, cutoff, max_sep):
    n = xyz.shape[1]
    adj = np.zeros((n, n))
    adj[bonds[:, 0], bonds[:, 1]] = adj[bonds[:, 1], bonds[:, 0]] = 1
    sep = shortest_path(adj, unweighted=True, directed=False)
    upper = np.triu(np.ones((n, n), dtype=bool), k=1) & (sep > max_sep)
    d = np.linalg.norm(xyz[:, :, None] - xyz[:, None, :], axis=-1)
    return ((d < cutoff) & upper).sum(axis=(1, 2))


def test_real_structure_has_no_clashes(protein):
    xyz, bonds, _, traj = protein
    counts = metrics.clashes(xyz, bonds)
    assert counts.shape == (xyz.shape[0],)
    assert counts.tolist() == [0] * xyz.shape[0]
    assert metrics.clashes_per_100_residues(xyz, bonds, traj.n_residues) == 0.0


def test_clashes_match_brute_force(protein):
    xyz, bonds, _, _ = protein
    for cutoff, max_sep in [(3.0, 3), (3.2, 2), (2.6, 1)]:
        np.testing.assert_array_equal(
            metrics.clashes(xyz, bonds, cutoff=cutoff, max_sep=max_sep),
            _brute_force_clashes(xyz, bonds, cutoff, max_sep),
        )
    assert metrics.clashes(xyz, bonds, cutoff=3.0).sum() > 0


def test_pulling_two_atoms_together_adds_one_clash(protein):
    xyz, bonds, _, traj = protein
    frame = xyz[0].copy()
    n = traj.n_atoms
    # anchor: side-chain tip ND2 of ASN 1; mover: OXT of the last residue
    # (both terminal atoms, far apart in the bond graph)
    anchor = traj.topology.select("resid 0 and name ND2")[0]
    mover = traj.topology.select("resid 19 and name OXT")[0]
    others = np.setdiff1d(np.arange(n), [anchor, mover])
    rng = np.random.default_rng(1)
    for _ in range(1000):
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        pos = frame[anchor] + 1.5 * u
        if np.linalg.norm(frame[others] - pos, axis=1).min() > 2.2:
            break
    else:
        pytest.fail("no free direction found")
    moved = frame.copy()
    moved[mover] = pos
    before = metrics.clashes(frame, bonds)[0]
    after = metrics.clashes(moved, bonds)[0]
    assert before == 0 and after == 1
    per100 = metrics.clashes_per_100_residues(moved, bonds, traj.n_residues)
    assert per100 == pytest.approx(100.0 / traj.n_residues)


def test_bonded_pair_at_short_distance_is_not_a_clash():
    # 1-4 pair at 1.0 A is excluded; 1-5 pair is counted
    xyz = np.array([[0, 0, 0], [1.5, 0, 0], [3, 0, 0], [0.5, 0.5, 0], [0, 1, 0]], float)
    bonds = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    assert d[0, 4] < 2.0 and d[0, 3] < 2.0
    got = metrics.clashes(xyz, bonds, cutoff=2.0, max_sep=3)
    expected = _brute_force_clashes(xyz[None], bonds, 2.0, 3)
    assert got.tolist() == expected.tolist() == [1]


# ---------------------------------------------------------------- RMSD


def test_kabsch_rmsd_of_rigidly_moved_copy_is_zero(protein):
    xyz, _, _, _ = protein
    rng = np.random.default_rng(2)
    moved = np.stack(
        [f @ _random_rotation(rng).T + rng.normal(size=3) * 30 for f in xyz]
    )
    rmsd = metrics.kabsch_rmsd(moved, xyz)
    assert rmsd.shape == (xyz.shape[0],)
    assert np.all(rmsd < 1e-4)
    assert np.all(metrics.rmsd_no_superposition(moved, xyz) > 1.0)


def test_kabsch_rmsd_does_not_reflect(protein):
    xyz, _, _, _ = protein
    mirror = xyz * np.array([-1.0, 1.0, 1.0])
    assert np.all(metrics.kabsch_rmsd(mirror, xyz) > 1.0)


def test_kabsch_is_lower_bound_of_plain_rmsd(protein):
    xyz, _, _, _ = protein
    rng = np.random.default_rng(3)
    perturbed = xyz + rng.normal(scale=0.5, size=xyz.shape)
    fit = metrics.kabsch_rmsd(perturbed, xyz)
    plain = metrics.rmsd_no_superposition(perturbed, xyz)
    assert np.all(fit <= plain + 1e-12)
    assert np.all(fit > 0.5)  # noise is not removable by a rigid motion
    # pure translation: plain RMSD is the shift, fitted RMSD is zero
    shift = np.array([1.0, -2.0, 2.0])
    np.testing.assert_allclose(metrics.rmsd_no_superposition(xyz + shift, xyz), 3.0)
    np.testing.assert_allclose(metrics.kabsch_rmsd(xyz + shift, xyz), 0.0, atol=1e-6)


def test_kabsch_rmsd_matches_mdtraj_and_mask(protein):
    xyz, _, _, traj = protein
    ca = traj.topology.select("name CA")
    mask = np.zeros(traj.n_atoms, dtype=bool)
    mask[ca] = True
    ours = metrics.kabsch_rmsd(xyz, xyz[0], mask=mask)
    theirs = md.rmsd(traj, traj, 0, atom_indices=ca) * 10.0
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    ours_all = metrics.kabsch_rmsd(xyz, xyz[0])
    np.testing.assert_allclose(ours_all, md.rmsd(traj, traj, 0) * 10.0, atol=2e-3)
    assert ours[0] < 1e-6
    # single structures are one frame
    assert metrics.kabsch_rmsd(xyz[3], xyz[0], mask=mask).shape == (1,)
    with pytest.raises(ValueError):
        metrics.kabsch_rmsd(xyz, xyz[0], mask=ca)  # indices are not a mask


def test_rmsd_no_superposition_with_mask(protein):
    xyz, _, _, traj = protein
    moved = xyz.copy()
    moved[:, 0] += np.array([3.0, 4.0, 0.0])  # atom 0 moved by 5 A
    mask = np.zeros(traj.n_atoms, dtype=bool)
    mask[:2] = True
    np.testing.assert_allclose(
        metrics.rmsd_no_superposition(moved, xyz, mask=mask), np.sqrt(25.0 / 2)
    )
    mask[0] = False
    np.testing.assert_allclose(metrics.rmsd_no_superposition(moved, xyz, mask=mask), 0.0)


# ---------------------------------------------------------------- diversity


def test_sample_diversity(protein):
    xyz, _, _, _ = protein
    frames = xyz[:5]
    same = np.stack([frames, frames, frames], axis=1)
    assert metrics.sample_diversity(same) == 0.0
    assert metrics.sample_diversity(frames[:, None]) == 0.0  # one sample
    shift = np.array([0.0, 0.6, 0.8])  # |shift| = 1 A
    two = np.stack([frames, frames + shift], axis=1)
    assert metrics.sample_diversity(two) == pytest.approx(1.0)
    three = np.stack([frames, frames + shift, frames + 2 * shift], axis=1)
    assert metrics.sample_diversity(three) == pytest.approx(4.0 / 3.0)


# ---------------------------------------------------------------- equivalent atoms


def test_match_equivalent_atoms_undoes_relabelling(protein):
    """Trp-cage with TYR's ring pairs and ASP's oxygens named the other way: matched back exactly."""
    xyz, _, _, traj = protein
    top = traj.topology
    swaps = [("TYR", "CD1", "CD2"), ("TYR", "CE1", "CE2"), ("ASP", "OD1", "OD2")]
    pairs = np.array([[top.select(f"resname {r} and name {a}")[0], top.select(f"resname {r} and name {b}")[0]]
                      for r, a, b in swaps])
    group = np.array([0, 0, 1])
    relabelled = xyz.copy()
    relabelled[:, pairs[:, 0]], relabelled[:, pairs[:, 1]] = xyz[:, pairs[:, 1]], xyz[:, pairs[:, 0]]
    rng = np.random.default_rng(4)
    moved = np.stack([f @ _random_rotation(rng).T + rng.normal(size=3) * 30 for f in relabelled])
    assert np.all(metrics.kabsch_rmsd(moved, xyz) > 0.2)
    matched = metrics.match_equivalent_atoms(moved, xyz, pairs, group)
    assert np.all(metrics.kabsch_rmsd(matched, xyz) < 1e-4)
    # labelled as the reference already: nothing changes (also with a mask for the superposition)
    mask = np.zeros(xyz.shape[1], bool)
    mask[top.select("backbone")] = True
    assert np.array_equal(metrics.match_equivalent_atoms(xyz, xyz[0], pairs, group, mask=mask)[0], xyz[0])
    assert np.array_equal(metrics.match_equivalent_atoms(moved, xyz, pairs[:0], group[:0]), moved)


def test_match_equivalent_atoms_swaps_a_group_together():
    """Two pairs: swapping the first brings it 2 A^2 closer, swapping the second 6 A^2 further."""
    ref = np.array([[0.0, 0, 0], [1, 0, 0], [0, 5, 0], [np.sqrt(3), 5, 0], [0, 0, 7]])
    xyz = ref[[1, 0, 2, 3, 4]]  # first pair named the other way
    pairs = np.array([[0, 1], [2, 3]])
    # superposition over atoms that are not swapped: none of the rotation comes from the labels
    mask = np.array([False, False, True, True, True])
    together = metrics.match_equivalent_atoms(xyz, ref, pairs, np.array([0, 0]), mask=mask)[0]
    assert np.allclose(together, xyz)  # 2 - 6 < 0: the group keeps its names
    apart = metrics.match_equivalent_atoms(xyz, ref, pairs, np.array([0, 1]), mask=mask)[0]
    assert np.allclose(apart, ref)
