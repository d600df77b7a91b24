"""Side-chain contacts and clash relief (backmap_plugin.build.relax), and the side-chain placement built on them."""

from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch
from conftest import load_truth
from scipy.spatial import cKDTree

from backmap_plugin.build import ideal, relax
from backmap_plugin.build.chi_turns import turn_chis
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import metrics
from backmap_plugin.core.geometry import build_residues, chi_angles

DATA = Path(__file__).parent / "data"
#: The C-alpha trace of 2FD6 chain U (tests/data/README.md).
TRACE_2FD6 = DATA / "2fd6_ca.pdb.gz"


@pytest.fixture(scope="module")
def trpcage():
    protein, slots, _ = load_truth(DATA / "1l2y.pdb.gz", slice(0, 4))
    x = torch.as_tensor(np.nan_to_num(slots), dtype=torch.float64) * torch.as_tensor(protein.slot_mask)[..., None]
    return protein, x


def _tensors(protein):
    mask = torch.as_tensor(protein.slot_mask)
    return mask, torch.as_tensor(protein.res_type), torch.as_tensor(protein.segment)


def _bonded_geometry(x, protein):
    """Lengths of every bond and 1-3 distance of the all-atom model, (F, n)."""
    xyz = protein.scatter(x).numpy()
    pairs, _ = protein.bonds()
    pairs13 = metrics.bonded_exclusions(xyz.shape[1], pairs, 2)
    return np.linalg.norm(xyz[:, pairs13[:, 0]] - xyz[:, pairs13[:, 1]], axis=-1)


def _clash_pairs(x, protein, cutoff):
    """Metric clash pairs (as in metrics.clashes) of each frame, as sets of atom index pairs."""
    xyz = protein.scatter(x).numpy()
    pairs, _ = protein.bonds()
    excluded = {tuple(p) for p in metrics.bonded_exclusions(xyz.shape[1], pairs, 3)}
    out = []
    for frame in xyz:
        close = cKDTree(frame).query_pairs(cutoff - 1e-6, output_type="ndarray")
        out.append({tuple(sorted(p)) for p in close.tolist()} - excluded)
    return out


def test_turning_chis_equals_building_with_turned_chis(trpcage):
    protein, x = trpcage
    rt = torch.as_tensor(protein.res_type)
    chis = chi_angles(x, rt)
    delta = torch.randn(chis.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    slots = [s for s in chem.BUILD_ORDER if s > chem.SLOT_CB and s != chem.SLOT_OXT]
    base = build_residues(x, ideal.side_chain_internal(protein.res_type, chis), rt, slots=slots)
    want = build_residues(x, ideal.side_chain_internal(protein.res_type, chis + delta), rt, slots=slots)
    got = turn_chis(base.flatten(0, 1), rt.repeat(x.shape[0]), delta.flatten(0, 1)).view_as(base)
    keep = torch.as_tensor(protein.slot_mask) & torch.as_tensor(protein.res_type != chem.RESIDUE_INDEX["PRO"])[:, None]
    assert ((got - want).norm(dim=-1) * keep).max() < 1e-9


def test_chi_levers_are_the_derivatives_of_turned_beads(trpcage):
    """ChiLevers against finite differences of turn_chis: the jacobian of two weighted means per residue, and the
    gradient of a linear function of them (the Martini 3 joint fit's chi derivatives)."""
    from backmap_plugin.build.chi_turns import ChiLevers

    protein, x = trpcage
    rt = torch.as_tensor(protein.res_type).repeat(x.shape[0])
    atoms = x.flatten(0, 1)
    g = torch.Generator().manual_seed(1)
    weights = torch.rand(len(atoms), 2, chem.N_SLOTS, generator=g, dtype=x.dtype) * torch.as_tensor(
        protein.slot_mask).repeat(x.shape[0], 1)[:, None]
    levers = ChiLevers(rt, weights)
    jacobian = levers.jacobian(atoms)  # (N, 2, 4, 3)
    h = 1e-6
    for k in range(4):
        step = torch.zeros(len(atoms), 4, dtype=x.dtype)
        step[:, k] = h
        moved = (torch.einsum("nbs,nsc->nbc", weights, turn_chis(atoms, rt, step))
                 - torch.einsum("nbs,nsc->nbc", weights, turn_chis(atoms, rt, -step))) / (2 * h)
        assert (moved - jacobian[:, :, k]).abs().max() < 1e-6
    pull = torch.randn(len(atoms), 2, 3, generator=g, dtype=x.dtype)
    want = torch.einsum("nbkc,nbc->nk", jacobian, pull)
    assert (levers.gradient(atoms, pull) - want).abs().max() < 1e-9
    assert want.abs().max() > 1.0
    # the normal equations of the chi fits, summed over the levers that are not zero
    normal, rhs = levers.normal_equations(atoms, pull)
    assert (normal - torch.einsum("nbkc,nbjc->nkj", jacobian, jacobian)).abs().max() < 1e-9
    assert (rhs - want).abs().max() < 1e-9
    assert len(levers.entry) < jacobian[..., 0].numel() / 2  # half the table or more is zero: those are skipped


def test_structure_contacts_are_the_metric_pairs_with_a_side_chain(trpcage):
    """Same exclusions as the clash score: every metric pair that involves a side chain, found once."""
    protein, x = trpcage
    mask, rt, seg = _tensors(protein)
    found = relax.structure_contacts(x, mask, rt, seg, cutoff=3.5)
    index = torch.as_tensor(protein.atom_index)
    res, slot = protein.atom_order()
    side = (slot > chem.SLOT_CB) & (slot != chem.SLOT_OXT)
    for f, want in enumerate(_clash_pairs(x, protein, 3.5)):
        sel = found.frame == f
        a = index[found.residue_a[sel], found.slot_a[sel]].tolist()
        b = index[found.residue_b[sel], found.slot_b[sel]].tolist()
        got = [tuple(sorted(p)) for p in zip(a, b)]
        assert len(got) == len(set(got))  # once each
        # the metric pairs with a side-chain atom, other than pairs inside one side chain
        want = {p for p in want if (side[p[0]] or side[p[1]]) and not (side[p[0]] and side[p[1]] and res[p[0]] == res[p[1]])}
        assert set(got) == want


def test_query_contacts_match_structure_contacts(trpcage):
    """Scoring each residue's own side chain as a query gives the structure's per-residue overlap."""
    protein, x = trpcage
    mask, rt, seg = _tensors(protein)
    n_frames, n_res = x.shape[:2]
    overlap = relax.overlap_per_residue(relax.structure_contacts(x, mask, rt, seg, 3.0), n_frames, n_res, 3.0)
    frame, residue = torch.nonzero(mask[:, relax.SIDE_SLOTS].any(1).expand(n_frames, -1), as_tuple=True)
    reach = ideal._reach(x.device, x.dtype)[rt]
    neighbours = relax.residue_neighbours(x[..., chem.SLOT_CA, :], reach, 3.0)
    side = x[frame, residue][:, relax.SIDE_SLOTS]
    contacts = relax.side_chain_contacts(side, mask[residue][:, relax.SIDE_SLOTS], frame, residue, x, mask, rt, seg,
                                         neighbours, 3.0)
    score = relax.overlap_score(contacts, len(frame), 3.0)
    torch.testing.assert_close(score, overlap[frame, residue])
    assert score.sum() > 0


def test_reach_bounds_every_built_atom(trpcage):
    protein, x = trpcage
    reach = ideal._reach(x.device, x.dtype)[torch.as_tensor(protein.res_type)]
    far = (x - x[..., chem.SLOT_CA : chem.SLOT_CA + 1, :]).norm(dim=-1) * torch.as_tensor(protein.slot_mask)
    assert (far.amax(-1) <= reach).all()


def _with_clash(x, protein):
    """Turn chi1 of one residue until its side chain clashes; returns the structure and the residue."""
    rt = torch.as_tensor(protein.res_type)
    target = protein.names.index("TRP")
    for angle in np.linspace(0.2, 2 * np.pi - 0.2, 60):
        delta = torch.zeros(x.shape[0] * x.shape[1], 4, dtype=x.dtype)
        delta.view(x.shape[0], x.shape[1], 4)[:, target, 0] = angle
        y = turn_chis(x.flatten(0, 1), rt.repeat(x.shape[0]), delta).view_as(x)
        if all(len(p) > 0 for p in _clash_pairs(y, protein, 2.0)):
            return y, target
    raise AssertionError("no clash made")


def test_relief_removes_a_clash_and_keeps_bonds_and_angles(trpcage):
    protein, x = trpcage
    mask, rt, seg = _tensors(protein)
    y, target = _with_clash(x, protein)
    before = sum(len(p) for p in _clash_pairs(y, protein, 2.0))
    out = relax.relieve_clashes(y, mask, rt, seg, steps=20, distance=2.8, restraint=1.0, step_size=0.05, max_turn=0.2)
    after = sum(len(p) for p in _clash_pairs(out, protein, 2.0))
    assert after < before
    np.testing.assert_allclose(_bonded_geometry(out, protein), _bonded_geometry(y, protein), atol=1e-8)
    # only side-chain atoms beyond CB move
    moved = (out - y).norm(dim=-1) > 1e-9
    assert not moved[..., : chem.SLOT_CB + 1].any() and not moved[..., chem.SLOT_OXT].any()
    assert moved[:, target].any()
    # nothing to relieve: unchanged
    calm = relax.relieve_clashes(out, mask, rt, seg, steps=20, distance=0.5, restraint=1.0, step_size=0.05,
                                 max_turn=0.2)
    assert torch.equal(calm, out)


def test_relief_turns_only_the_residues_it_may(trpcage):
    """``may_turn`` holds the residues it leaves out: none free, nothing moves; the clashing residue alone free,
    nothing else moves."""
    protein, x = trpcage
    mask, rt, seg = _tensors(protein)
    y, target = _with_clash(x, protein)
    options = dict(steps=20, distance=2.8, restraint=1.0, step_size=0.05, max_turn=0.2)
    none = torch.zeros(x.shape[:2], dtype=torch.bool)
    assert torch.equal(relax.relieve_clashes(y, mask, rt, seg, **options, may_turn=none), y)
    alone = none.clone()
    alone[:, target] = True
    moved = (relax.relieve_clashes(y, mask, rt, seg, **options, may_turn=alone) - y).norm(dim=-1) > 1e-9
    assert moved[:, target].any() and not moved[:, np.arange(x.shape[1]) != target].any()


def test_a_relieved_side_chain_sees_the_atoms_it_turns_towards(tmp_path):
    """The C-alpha trace of 2FD6 chain U: TYR195's side chain, placed on HIS273's, was turned 68 degrees about chi1
    by the relief onto the backbone of CYS271 / ASN272 (OH 1.05 A from N; 14 clashes), which lay 4.15 A from the
    ring when the contacts were listed (up to RELIEF_DISTANCE + RELIEF_MARGIN, 3.8 A then): the relief did not see
    it. Listed, it is kept off: no heavy atoms closer than 1.5 A."""
    from backmap_plugin.api import backmap

    backmap(TRACE_2FD6, tmp_path / "aa.pdb", progress=False)
    traj = md.load(str(tmp_path / "aa.pdb"))
    bonds = np.array([[a.index, b.index] for a, b in traj.topology.bonds])
    assert metrics.clashes(traj.xyz * 10, bonds, cutoff=1.5)[0] == 0


def test_side_chain_placement_is_deterministic_and_frame_local(trpcage):
    """A frame's side chains do not depend on the other frames of the batch."""
    protein, x = trpcage
    ca = x[..., chem.SLOT_CA, :].float()
    noisy = ca + 0.4 * torch.randn(ca.shape, generator=torch.Generator().manual_seed(1))
    both = torch.cat([ca, noisy])
    together = ideal.build_ideal(both, protein)
    alone = torch.cat([ideal.build_ideal(both[f : f + 1], protein) for f in range(len(both))])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    assert torch.equal(together, ideal.build_ideal(both, protein))


def test_choice_and_relief_reduce_clashes(trpcage):
    """On a perturbed trace, candidate choice and then relief each lower the clash count."""
    protein, x = trpcage
    ca = x[..., chem.SLOT_CA, :].float()
    ca = torch.cat([ca + 0.5 * torch.randn(ca.shape, generator=torch.Generator().manual_seed(s)) for s in range(6)])
    pairs, _ = protein.bonds()
    backbone = ideal.build_backbone(ca, protein.backbone_layout, protein.res_type)
    ics, cost = ideal._candidate_internal(protein.res_type, ca.dtype, ca.device)

    def clashes(**options):
        out = ideal.place_side_chains(backbone, protein, ics, cost, **options)
        return metrics.clashes(protein.scatter(out).numpy(), pairs).sum()

    first = clashes(passes=0, relief_steps=0)
    chosen = clashes(relief_steps=0)
    relieved = clashes()
    assert relieved < chosen < first


def _pair_keys(pairs):
    """(frame, residue, slot, residue, slot) of each pair, as a set."""
    return set(zip(*(t.tolist() for t in (pairs.frame, pairs.residue_a, pairs.slot_a, pairs.residue_b,
                                            pairs.slot_b))))


def test_periodic_contacts_of_a_structure_cut_by_the_cell_are_its_own(trpcage):
    """Trp-cage straddling the faces of a cell far wider than it (its residues moved into the cell on both sides):
    the periodic contacts are the structure's, bonded pairs left out as before, none shifted."""
    protein, x = trpcage
    mask, rt, seg = _tensors(protein)
    centred = x - x[:, :, chem.SLOT_CA].mean(1)[:, None, None]  # the origin, a corner of the cell, inside it
    box = np.repeat(np.diag([60.0, 60.0, 60.0])[None], len(x), axis=0)
    periodic = relax.periodic_contacts(centred, mask, rt, seg, 4.3, box)
    plain = relax.structure_contacts(centred, mask, rt, seg, 4.3)
    assert _pair_keys(periodic) == _pair_keys(plain) and len(periodic.frame) == len(plain.frame)
    assert not periodic.shift.any()


def test_side_chains_are_kept_off_the_periodic_images_of_chains():
    """The C-alpha trace of 2FD6 chain U in a cell 44 A long in x, where its C-alpha atoms come 4.6 A from those
    of its image (chains packed in a slab): built without the box, 14 heavy-atom pairs between the two lie closer
    than 2 A; built with it, the side chains are turned off the image too."""
    from backmap_plugin.api import Backmapper

    traj = md.load(str(TRACE_2FD6))
    beads = traj.xyz[:1] * 10.0
    length = 44.0
    box = np.array([[length, 100.0, 100.0]], dtype=np.float32)

    def with_image(box):
        atoms = Backmapper(traj.topology, beads, box=box).build(beads, box=box)[0]
        return cKDTree(atoms).count_neighbors(cKDTree(atoms + [length, 0.0, 0.0]), 2.0)

    assert with_image(None) > 5
    assert with_image(box) <= 2


def test_a_protein_far_from_its_images_is_not_searched(trpcage, monkeypatch):
    """A protein in a box of solvent (its images at least the contact reach away, core/pbc.image_gap) is returned
    as built, without the periodic search (which doubled such runs' time); in a cell it nearly fills, its frames
    are searched."""
    from backmap_plugin.build.ideal import relieve_periodic_clashes

    protein, x = trpcage
    searched = []
    search = relax.periodic_contacts
    monkeypatch.setattr(relax, "periodic_contacts", lambda atoms, *args: searched.append(len(atoms)) or
                        search(atoms, *args))
    big = np.repeat(np.diag([80.0, 80.0, 80.0])[None], len(x), axis=0)
    assert relieve_periodic_clashes(x, protein, big) is x and searched == []
    extent = float((x[..., chem.SLOT_CA, :].amax(1) - x[..., chem.SLOT_CA, :].amin(1)).max())
    tight = np.repeat(np.eye(3)[None] * (extent + 3.0), len(x), axis=0)
    relieve_periodic_clashes(x, protein, tight)
    assert searched == [len(x)]
