"""Settling a built structure onto centre-of-mass beads (build/settle.py), on a real structure."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_truth

from backmap_plugin.build.backbone import backbone_dofs, build_backbone
from backmap_plugin.build.ideal import side_chain_internal
from backmap_plugin.build.relax import TURNABLE_CHIS
from backmap_plugin.build.settle import settle_on_beads, slot_weights
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.geometry import build_residues, chi_angles
from backmap_plugin.core.mappings import SLOT_MASSES, COMMapping

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def trpcage():
    return load_truth(DATA / "1l2y.pdb.gz", slice(0, 6))


def _beads(protein, mapping):
    present = protein.slot_mask.copy()
    present[:, chem.SLOT_OXT] = False
    return lambda x: mapping.bead_positions(x, present, protein.res_type)


def test_slot_weights_are_the_mappings(trpcage):
    """The weights read off the bead function: masses for centres of mass, the C-alpha alone for C-alpha beads."""
    protein, slots, _ = trpcage
    ca_residues = np.zeros(protein.n_residues, bool)
    ca_residues[5:9] = True
    weight = slot_weights(_beads(protein, COMMapping(ca_residues)), torch.as_tensor(slots, dtype=torch.float64))
    mass = SLOT_MASSES[protein.res_type] * protein.slot_mask
    mass[:, chem.SLOT_OXT] = 0
    expected = mass / mass.sum(-1, keepdims=True)
    expected[5:9] = np.eye(chem.N_SLOTS)[chem.SLOT_CA]
    np.testing.assert_allclose(weight.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("steps", [0, 5])
def test_settling_puts_a_disturbed_structure_on_its_beads(trpcage, steps):
    """The chain moved by 0.41 A, chi angles turned by 0.25 rad (rms): Gauss-Newton steps bring the beads back."""
    protein, slots, _ = trpcage
    truth = torch.as_tensor(slots, dtype=torch.float32)
    rt = torch.as_tensor(protein.res_type)
    beads_of = _beads(protein, COMMapping())
    beads = beads_of(truth)
    gen = torch.Generator().manual_seed(0)
    ca = truth[..., chem.SLOT_CA, :] + torch.tensor([0.3, -0.2, 0.2])  # (bonded distances kept)
    noise = 0.25 * torch.randn(truth.shape[0], truth.shape[1], 4, generator=gen)
    chis = torch.nan_to_num(chi_angles(truth, rt)) + noise
    backbone = build_backbone(ca, protein.backbone_layout, protein.res_type,
                              backbone_dofs(truth, protein.backbone_layout))
    side = [s for s in chem.BUILD_ORDER if s >= chem.SLOT_CB]
    start = build_residues(backbone, side_chain_internal(protein.res_type, chis), rt,
                           slots=side)[..., : chem.N_SLOTS, :] * torch.as_tensor(protein.slot_mask)[..., None]

    def miss(x):
        return float((beads_of(x) - beads).pow(2).sum(-1).mean().sqrt())

    out = settle_on_beads(start, protein, beads, beads_of, steps=steps)
    assert miss(start) > 0.3
    if steps == 0:
        assert miss(out) > 0.3
        return
    assert miss(out) < 0.4 * miss(start), (miss(start), miss(out))
    # chemistry exact: bonded C-alpha distances as they started, chi angles turned only where they can turn
    bond = (out[:, 1:, chem.SLOT_CA] - out[:, :-1, chem.SLOT_CA]).norm(dim=-1)
    bond0 = (start[:, 1:, chem.SLOT_CA] - start[:, :-1, chem.SLOT_CA]).norm(dim=-1)
    assert (bond - bond0).abs().max() < 0.05
    fixed = ~torch.as_tensor(TURNABLE_CHIS[protein.res_type]) & torch.isfinite(chi_angles(start, rt))
    turned = torch.remainder(chi_angles(out, rt) - chi_angles(start, rt) + np.pi, 2 * np.pi) - np.pi
    assert turned[fixed.expand_as(turned)].abs().max() < 0.05


def test_backbone_contact_pairs_are_every_close_pair(trpcage):
    """The residue-filtered pair search finds what comparing every backbone and C-beta atom pair finds:
    trp-cage (6 models, atoms moved by 0.6 A rms so that contacts vary) cut into two segments after residue 9."""
    import dataclasses

    from backmap_plugin.build.backbone_contacts import _NEIGHBOUR_PAIRS, SLOTS, backbone_contact_pairs

    protein, slots, _ = trpcage
    segment = protein.segment.copy()
    segment[10:] += 1
    protein = dataclasses.replace(protein, segment=segment)
    atoms = torch.as_tensor(slots, dtype=torch.float64)
    atoms = atoms + 0.35 * torch.randn(atoms.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = backbone_contact_pairs(atoms, protein, search=4.5)
    n_res, k = protein.n_residues, len(SLOTS)
    residue, kind = np.repeat(np.arange(n_res), k), np.tile(np.arange(k), n_res)
    exists = protein.slot_mask[:, SLOTS].reshape(-1)
    step = residue[None, :] - residue[:, None]
    apart = (step >= 2) | ((step >= 1) & (segment[residue][:, None] != segment[residue][None, :]))
    apart |= (step == 1) & _NEIGHBOUR_PAIRS.numpy()[kind[:, None], kind[None, :]]
    apart &= exists[:, None] & exists[None, :]
    backbone = atoms[:, :, SLOTS].reshape(len(atoms), -1, 3).numpy()
    expected = [(f, i, j) for f in range(len(atoms))
                for i, j in zip(*np.nonzero(apart & (np.linalg.norm(backbone[f][:, None] - backbone[f][None], axis=-1)
                                                     < 4.5)))]
    assert len(expected) > 1000
    assert got.T.tolist() == [list(map(int, e)) for e in expected]


def test_separate_planes_turns_overlapping_peptides_apart(trpcage):
    """Trp-cage's backbone (its planes' own angles, models 1-2) with the plane of GLY11-PRO12 turned until its O
    comes within 1.5 A of a neighbouring O (a flipped peptide, as the C-alpha model builds about one in 600): that
    plane and its neighbours turn apart, nothing else moves, N-CA-C stays near ideal; structures without such a
    pair are returned as they are."""
    from backmap_plugin.build.backbone_contacts import separate_planes

    protein, slots, _ = trpcage
    layout, rt = protein.backbone_layout, protein.res_type
    truth = torch.as_tensor(slots[:2], dtype=torch.float64)
    ca = truth[..., chem.SLOT_CA, :]
    dofs = backbone_dofs(truth, layout)
    backbone = build_backbone(ca, layout, rt, dofs)
    assert separate_planes(backbone, protein) is backbone
    plane = int(np.flatnonzero(np.asarray(layout.first) == 10)[0])

    def oo(b):
        return min(float((b[0, 10, chem.SLOT_O] - b[0, other, chem.SLOT_O]).norm()) for other in (9, 11))

    turns = torch.linspace(-np.pi, np.pi, 73, dtype=torch.float64)
    tried = []
    for turn in turns:
        angle = dofs["angle"].clone()
        angle[0, plane] += turn
        tried.append(oo(build_backbone(ca, layout, rt, {**dofs, "angle": angle})))
    angle = dofs["angle"].clone()
    angle[0, plane] += turns[int(np.argmin(tried))]
    flipped = build_backbone(ca, layout, rt, {**dofs, "angle": angle})
    assert oo(flipped) < 1.5
    out = separate_planes(flipped, protein)
    assert oo(out) > 2.0 and oo(out) > oo(flipped) + 0.5
    assert torch.equal(out[1], flipped[1])
    moved = (out[0] - flipped[0]).norm(dim=-1).amax(-1) > 1e-6
    assert moved.any() and not moved[:8].any() and not moved[14:].any()  # (the planes of the pair, and neighbours)
    u, v = out[0, :, chem.SLOT_N] - ca[0], out[0, :, chem.SLOT_C] - ca[0]
    n_ca_c = torch.rad2deg(torch.acos((u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))))
    assert (n_ca_c[moved] - chem.ANGLE_N_CA_C).abs().max() < 10.0
