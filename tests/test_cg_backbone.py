"""Backbones for the C-alpha traces of coarse-grained simulations (build/cg_backbone.py), alone and in `backmap`."""

import itertools
import math
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch
from conftest import CORPUS, load_truth

from backmap_plugin import backmap
from backmap_plugin.build import cg_backbone as cg
from backmap_plugin.build.backbone import backbone_atoms, backbone_dofs, noisy_trace_lengths
from backmap_plugin.build.ideal import build_ideal, constrain_trace
from backmap_plugin.build.rama_prior import RamachandranPrior
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import metrics
from backmap_plugin.core.geometry import bond_angle, dihedral, rotate_about_axis
from backmap_plugin.core.mappings import COMMapping, get_mapping
from backmap_plugin.core.ramachandran import FAVOURED, OUTLIER, classify, residue_classes
from backmap_plugin.core.topology import ProteinTopology

DATA = Path(__file__).parent / "data"
#: Three frames of a CALVADOS 2 (HPS) run of p53 residues 1-60 made with this package (tests/data/README.md).
HPS = DATA / "p53_tad_hps.pdb.gz"


@pytest.fixture(scope="module")
def hps():
    traj = md.load(str(HPS))
    names = [r.name for r in traj.topology.residues]
    n = len(names)
    protein = ProteinTopology(names=names, chain_ids=["A"] * n, res_seq=np.arange(1, n + 1), segment=np.zeros(n))
    return protein, torch.as_tensor(traj.xyz * 10.0, dtype=torch.float64)


def test_the_fixture_is_a_coarse_grained_trace(hps):
    protein, beads = hps
    same = torch.ones(protein.n_residues - 1, dtype=torch.bool)
    assert cg.coarse_grained_traces(beads, same).all()
    truth = md.load(str(DATA / "1l2y.pdb.gz"))
    ca = torch.as_tensor(truth.xyz[:, truth.topology.select("name CA")] * 10.0, dtype=torch.float64)
    assert not cg.coarse_grained_traces(ca, torch.ones(ca.shape[1] - 1, dtype=torch.bool)).any()


def test_pair_costs_are_those_of_the_built_backbone(hps):
    """Each entry of the cost table is the N-CA-C and Ramachandran cost of the shared residue of a backbone built
    with the two planes so turned."""
    protein, beads = hps
    same = torch.ones(protein.n_residues - 1, dtype=torch.bool)
    ca = constrain_trace(beads[:2], same)
    dofs = backbone_dofs(build_ideal(ca, protein), protein.backbone_layout)
    prior = RamachandranPrior(protein, margin=cg.RAMA_MARGIN)
    cost, coupled = cg.plane_pair_costs(ca, dofs, protein, prior)
    assert coupled[1:].all() and not coupled[0]
    turns = cg.plane_turns()
    rows = {int(r): k for k, r in enumerate(prior.index)}
    rng = np.random.default_rng(0)
    picks = zip(rng.integers(0, 2, 40), rng.integers(1, cost.shape[1], 40), rng.integers(0, cg.PLANE_TURNS, 40),
                rng.integers(0, cg.PLANE_TURNS, 40))
    for f, p, a, b in picks:
        turned = {k: v[f : f + 1].clone() for k, v in dofs.items()}
        turned["angle"][0, p - 1] += turns[a]
        turned["angle"][0, p] += turns[b]
        n, c_alpha, c, _ = backbone_atoms(ca[f : f + 1], protein.backbone_layout, protein.res_type, turned)
        i = int(protein.backbone_layout.first[p])
        want = cg.CHOICE_ANGLE_WEIGHT * (bond_angle(n[0, i], c_alpha[0, i], c[0, i]) - math.radians(
            chem.ANGLE_N_CA_C)) ** 2
        if i in rows:
            phi = dihedral(c[0, i - 1], n[0, i], c_alpha[0, i], c[0, i])
            psi = dihedral(n[0, i], c_alpha[0, i], c[0, i], n[0, i + 1])
            want = want + cg.CHOICE_RAMA_WEIGHT * prior.penalty_of(phi[None], psi[None], torch.tensor([rows[i]]))[0]
        assert float(cost[f, p, a, b]) == pytest.approx(float(want), abs=1e-9)


def test_cheapest_turns_is_the_cheapest_choice():
    """The dynamic programming finds the choice that trying every one finds, across an uncoupled plane too."""
    rng = np.random.default_rng(1)
    k, coupled = 3, torch.tensor([False, True, True, False, True])
    cost = torch.as_tensor(rng.random((2, 5, k, k)))
    leave = torch.as_tensor(rng.random(k))
    chosen = cg.cheapest_turns(cost, coupled, leave)

    def total(f, choice):
        return sum(float(leave[c]) for c in choice) + sum(
            float(cost[f, p, choice[p - 1], choice[p]]) for p in range(1, 5) if coupled[p])

    for f in range(2):
        best = min(itertools.product(range(k), repeat=5), key=lambda choice: total(f, choice))
        assert tuple(chosen[f].tolist()) == best


def _quality(path: str, beads: torch.Tensor) -> dict:
    traj = md.load(path)
    top = traj.topology
    xyz = traj.xyz * 10.0
    _, phi = md.compute_phi(traj)
    _, psi = md.compute_psi(traj)
    names = [r.name for r in top.residues]
    classes = residue_classes(names, np.ones(len(names), bool), np.full(len(names), 180.0))[1:-1]
    favoured = classify(np.degrees(phi[:, :-1]), np.degrees(psi[:, 1:]), classes) == FAVOURED
    index = {name: np.array([r.atom(name).index if name != "CB" or r.name != "GLY" else -1 for r in top.residues])
             for name in ("N", "CA", "C", "CB")}
    n, ca, c = (xyz[:, index[k]] for k in ("N", "CA", "C"))
    u, v = n - ca, c - ca
    angle = np.degrees(np.arccos((u * v).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)))
    volume = metrics.chirality(xyz, index["N"], index["CA"], index["C"], index["CB"])
    return {
        "favoured": float(favoured.mean()),
        "angle_outliers": float((np.abs(angle - chem.ANGLE_N_CA_C) > 4 * 2.8).mean()),
        "ca_from_beads": np.linalg.norm(ca - beads.numpy(), axis=-1),
        "bonds": np.linalg.norm(ca[:, 1:] - ca[:, :-1], axis=-1),
        "d_residues": int((volume < 0).sum()),
        "ca": ca,
    }


def test_backmap_fits_coarse_grained_backbones(hps, tmp_path, monkeypatch):
    """On a CG run's trace the model's structures keep phi / psi in the favoured region and N-CA-C ideal, their
    C-alpha atoms near the beads; without the fit they do not. A frame's structure does not depend on the others."""
    protein, beads = hps
    fitted = backmap(str(HPS), str(tmp_path / "fitted.pdb"), progress=False)
    assert any("with backbones fitted" in line for line in fitted.report)
    with monkeypatch.context() as patch:
        patch.setattr(cg, "CG_TRACE_SPREAD", 10.0)
        plain = backmap(str(HPS), str(tmp_path / "plain.pdb"), progress=False)
    assert not any("with backbones fitted" in line for line in plain.report)
    new, old = _quality(str(tmp_path / "fitted.pdb"), beads), _quality(str(tmp_path / "plain.pdb"), beads)
    assert new["favoured"] > old["favoured"] + 0.15 and new["favoured"] > 0.7
    assert new["angle_outliers"] < 0.03 < old["angle_outliers"]
    assert np.sqrt(np.mean(new["ca_from_beads"] ** 2)) < 0.9 and new["ca_from_beads"].max() < 2.0
    lengths = noisy_trace_lengths(beads)[..., 0].numpy()
    np.testing.assert_allclose(new["bonds"], lengths, atol=0.02)
    assert new["d_residues"] == 0
    one = md.load(str(HPS))[1]
    one.save_pdb(str(tmp_path / "one.pdb"))
    backmap(str(tmp_path / "one.pdb"), str(tmp_path / "one_aa.pdb"), progress=False)
    np.testing.assert_allclose(_quality(str(tmp_path / "one_aa.pdb"), beads[1:2])["ca"], new["ca"][1:2], atol=2e-3)


def test_structures_to_fit_follow_the_beads():
    """C-alpha traces by their spread; centre-of-mass chains when they mix in C-alpha beads (CALVADOS 3), or where
    the structure built on them is strained or misses them; never Martini 3 beads."""
    protein, slots, present = load_truth(DATA / "1l2y.pdb.gz", slice(0, 2))
    atoms = torch.as_tensor(slots, dtype=torch.float64)[:, None]  # (2 frames, 1 sample): the NMR models themselves
    beads = atoms[:, 0, :, chem.SLOT_CA]
    assert not cg.structures_to_fit(atoms, beads, protein, get_mapping("ca")).any()
    kept = present.copy()
    kept[:, chem.SLOT_OXT] = False
    com = get_mapping("com")
    centres = com.bead_positions(atoms[:, 0], kept, protein.res_type)
    assert not cg.structures_to_fit(atoms, centres, protein, com).any()
    linker = np.zeros(protein.n_residues, bool)
    linker[8:12] = True
    assert cg.structures_to_fit(atoms, beads, protein, COMMapping(linker)).all()
    assert not cg.structures_to_fit(atoms, beads, protein, get_mapping("martini3")).any()
    # centres of mass 0.4 A off in one frame: that frame's structure misses them and is fitted
    off = centres.clone()
    off[1] += torch.tensor([0.4, 0.0, 0.0], dtype=off.dtype)
    assert cg.structures_to_fit(atoms, off, protein, com)[:, 0].tolist() == [False, True]
    # psi of residues 3-6 turned by 100 degrees (O and all that follows turned about CA-C): strained, fitted
    assert not cg.strained_backbones(atoms[:, 0], protein).any()
    turned = atoms[:, 0].clone()
    turn = torch.tensor(math.radians(100.0), dtype=turned.dtype)
    for r in range(2, 6):
        ca, c = turned[:, r, chem.SLOT_CA], turned[:, r, chem.SLOT_C]
        axis = (c - ca) / (c - ca).norm(dim=-1, keepdim=True)
        after = turned[:, r + 1 :]
        turned[:, r + 1 :] = rotate_about_axis(after.flatten(1, 2), c, axis, turn.expand(2)).view_as(after)
        turned[:, r, chem.SLOT_O] = rotate_about_axis(turned[:, r, chem.SLOT_O][:, None], c, axis, turn.expand(2))[:, 0]
    assert cg.strained_backbones(turned, protein).all()
    assert cg.structures_to_fit(turned[:, None], centres, protein, com).all()


def test_mixed_chain_fit_keeps_its_beads_and_mends_its_backbone():
    """A real CALVADOS 3 frame as an early model backmapped it (tests/data: N-CA-C and phi / psi strained), fitted to
    its own beads (TIA1's domains as centres of mass, the rest C-alpha): the beads stay within 0.3 A, N-CA-C and the
    Ramachandran penalties come down, and the C-alpha atoms stay L."""
    protein, slots, present = load_truth(DATA / "tia1_calvados3_frame_aa.pdb.gz")
    atoms = torch.as_tensor(slots, dtype=torch.float64)
    linker = np.ones(protein.n_residues, bool)
    for first, last in ((5, 81), (94, 171), (189, 274)):  # TIA1's domains, 0-based (tests/data/README.md)
        linker[first : last + 1] = False
    mapping = COMMapping(linker)
    kept = present.copy()
    kept[:, chem.SLOT_OXT] = False
    beads = mapping.bead_positions(atoms, kept, protein.res_type)
    weights, bead_weight = cg.fit_settings(mapping, protein)
    fitted = cg.fit_backbone_to_beads(atoms, beads, protein, weights, bead_weight)
    miss = (mapping.bead_positions(fitted, kept, protein.res_type) - beads).norm(dim=-1)
    assert float(miss.pow(2).mean().sqrt()) < 0.3

    def strain(x):
        n, ca, c = (x[..., s, :] for s in (chem.SLOT_N, chem.SLOT_CA, chem.SLOT_C))
        angle = torch.rad2deg(bond_angle(n, ca, c)) - chem.ANGLE_N_CA_C
        return int((angle.abs() > 4 * 2.8).sum()), float(RamachandranPrior(protein).penalties(n, ca, c).sum())

    (angles_before, rama_before), (angles_after, rama_after) = strain(atoms), strain(fitted)
    assert angles_after < 0.6 * angles_before and rama_after < 0.6 * rama_before
    index = {s: np.where(present[:, slot], protein.atom_index[:, slot], -1) for s, slot in
             (("N", chem.SLOT_N), ("CA", chem.SLOT_CA), ("C", chem.SLOT_C), ("CB", chem.SLOT_CB))}
    flat = protein.scatter(fitted).numpy()
    assert not (metrics.chirality(flat, index["N"], index["CA"], index["C"], index["CB"]) < 0).any()


@pytest.mark.skipif(not (CORPUS / "calvados3" / "TIA1").is_dir(), reason="corpus ../shared/data/calvados3 not present")
def test_real_calvados3_run_beads_and_backbones(tmp_path):
    """The real CALVADOS 3 TIA1 run (5 of its frames), default options: its C-alpha and centre-of-mass beads met
    within 0.3 A, fewer Ramachandran outliers than without the fit."""
    tia1 = CORPUS / "calvados3" / "TIA1"
    run = backmap(tia1 / "traj.dcd", tmp_path / "aa.pdb", top=tia1 / "top.pdb", stride=4, progress=False)
    assert any(line.startswith("backbones fitted near the beads") for line in run.report)
    assert run.bead_rmsd["C-alpha"]["median"] < 0.3 and run.bead_rmsd["centre of mass"]["median"] < 0.3
    traj = md.load(str(tmp_path / "aa.pdb"))
    _, phi = md.compute_phi(traj)
    _, psi = md.compute_psi(traj)
    names = [r.name for r in traj.topology.residues]
    classes = residue_classes(names, np.ones(len(names), bool), np.full(len(names), 180.0))[1:-1]
    outliers = classify(np.degrees(phi[:, :-1]), np.degrees(psi[:, 1:]), classes) == OUTLIER
    assert outliers.mean() < 0.05


def test_centre_of_mass_run_gets_fitted_backbones(tmp_path):
    """A CALVADOS 3 run of the HIV-1 capsid made one domain (every bead a centre of mass; tests/data), default options:
    the model's backbones leave 6 % of residues Ramachandran outliers, 0.26 A from the beads; fitted (strained), 3 %
    and 0.21 A."""
    run = backmap(DATA / "capsid_com_calvados3.pdb.gz", tmp_path / "aa.pdb", progress=False)
    assert run.mapping == "com"
    assert any(line.startswith("3 of 3 structure(s) built on the centres of mass had more than 5 %")
               for line in run.report)
    assert run.bead_rmsd["centre of mass"]["median"] < 0.23
    traj = md.load(str(tmp_path / "aa.pdb"))
    _, phi = md.compute_phi(traj)
    _, psi = md.compute_psi(traj)
    names = [r.name for r in traj.topology.residues]
    classes = residue_classes(names, np.ones(len(names), bool), np.full(len(names), 180.0))[1:-1]
    assert (classify(np.degrees(phi[:, :-1]), np.degrees(psi[:, 1:]), classes) == OUTLIER).mean() < 0.04


def test_prolines_keep_the_phi_their_ring_allows(tmp_path):
    """Two frames of a HPS run of p53 1-93 (22 prolines; tests/data) where the fit left prolines at phi -140 to
    -172 degrees (the Ramachandran prior's penalty is capped out there, so it did not pull them back): every
    proline's phi now within 60 degrees of -65."""
    backmap(DATA / "p53_hps_prolines.pdb.gz", tmp_path / "aa.pdb", progress=False)
    traj = md.load(str(tmp_path / "aa.pdb"))
    index, phi = md.compute_phi(traj)
    proline = [k for k, atoms in enumerate(index) if traj.topology.atom(atoms[1]).residue.name == "PRO"]
    assert len(proline) == 22
    off = np.abs((np.degrees(phi[:, proline]) + 65.0 + 180.0) % 360.0 - 180.0)
    assert off.max() < 60.0


def test_a_frames_fit_does_not_depend_on_the_others(hps):
    """Fitted alone or with the other frames, each frame's structure is the same, to rounding: torch's atan2 (bond
    and dihedral angles) takes vectorised and scalar paths that differ in the last bit, and which elements take
    which depends on the batch's size (frames agreed to the bit or to 1e-13 A, by frame and weights)."""
    protein, beads = hps
    same = torch.ones(protein.n_residues - 1, dtype=torch.bool)
    atoms = build_ideal(constrain_trace(beads, same), protein)
    together = cg.fit_backbone_to_beads(atoms, beads, protein)
    for k in range(len(beads)):
        alone = cg.fit_backbone_to_beads(atoms[k : k + 1], beads[k : k + 1], protein)
        torch.testing.assert_close(together[k : k + 1], alone, rtol=0.0, atol=1e-9)
