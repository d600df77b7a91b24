"""The Martini 3 model's parts: bead features, training beads and loss, the fit that finishes its structures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_truth

from backmap_plugin.build.martini import fit_to_beads
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import martini3 as m3
from backmap_plugin.core import metrics
from backmap_plugin.model import graph as G
from backmap_plugin.model.vae import BackmapVAE, ModelConfig


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trpcage():
    """Topology, heavy atoms (3 NMR models of 1L2Y, Angstrom) and their Martini 3 beads (OXT in the last BB)."""
    protein, slots, present = load_truth(frames=slice(0, 3))
    beads = m3.martini3_bead_positions(slots, present, protein.res_type)
    return protein, slots, present, beads


def _batch(protein, trace):
    g, n = trace.shape[:2]
    return G.make_batch(trace, np.broadcast_to(protein.res_type, (g, n)), np.ones((g, n), bool),
                        np.broadcast_to(protein.segment, (g, n)))


def _rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.det(q))


def test_bead_features_are_invariant_and_zero_for_absent_beads(trpcage):
    protein, slots, _, beads = trpcage
    ca = torch.as_tensor(slots[..., chem.SLOT_CA, :], dtype=torch.float64)
    x = torch.as_tensor(beads, dtype=torch.float64)
    features = G.martini_bead_features(_batch(protein, ca), x)
    assert features.shape == (3, protein.n_residues, G.MARTINI_BEAD_FEATURES)
    rot, shift = _rotation(1), torch.tensor([4.0, -2.0, 7.0], dtype=torch.float64)
    moved = G.martini_bead_features(_batch(protein, ca @ rot.T + shift), x @ rot.T + shift)
    torch.testing.assert_close(moved, features)
    absent = ~m3.BEAD_EXISTS[protein.res_type]  # e.g. glycine: BB alone
    per_bead = features.view(3, protein.n_residues, m3.MAX_BEADS, 3)
    assert absent.any() and (per_bead[:, torch.as_tensor(absent)] == 0).all()
    # present beads: the BB bead sits within 1.5 A of its C-alpha (offsets in units of 3 A)
    assert float(per_bead[..., 0, :].norm(dim=-1).max()) * 3.0 < 1.5
    # garbage in absent beads changes nothing
    noisy = x.clone()
    noisy[:, torch.as_tensor(absent)] = 99.0
    torch.testing.assert_close(G.martini_bead_features(_batch(protein, ca), noisy), features)


def test_training_beads_and_loss_reach_the_bead_features(fixture_cache):
    from backmap_plugin.training.cache import open_cache
    from backmap_plugin.training.sampler import make_loader
    from backmap_plugin.training.train import TrainConfig, batch_terms, martini_training_beads

    raw = next(iter(make_loader(open_cache(fixture_cache), split="train", batch_size=2, crop=12,
                                spatial_prob=0.0, bead_noise=0.0, epoch_size=2, seed=0)))
    beads = martini_training_beads(raw, 0.0, torch.Generator().manual_seed(0))
    mask = raw["residue_mask"]
    exists = torch.from_numpy(m3.BEAD_EXISTS.copy())[raw["res_type"]] & mask[..., None]
    expected = m3.martini3_bead_positions(raw["xyz"].float(), raw["present"], raw["res_type"].numpy())
    torch.testing.assert_close(beads[exists], expected[exists])
    assert (beads[~exists] == 0).all()

    torch.manual_seed(0)
    small = {"hidden": 16, "equivariant_scalars": 8, "equivariant_vectors": 2, "k_invariant": 8, "mapping": "martini3"}
    model = BackmapVAE(ModelConfig(**small))
    assert (model.bead_embed.weight == 0).all()  # a warm start from a C-alpha model begins as that model
    terms = batch_terms(model, raw, torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                        cfg=TrainConfig(martini_trace_noise=0.25))
    assert math.isfinite(float(terms["total"].detach()))
    terms["total"].backward()
    assert float(model.bead_embed.weight.grad.abs().sum()) > 0
    assert "locate" not in terms

    # with a locator: its C-alpha error joins the loss; the decoder reads the located trace, detached, so the
    # decoder's terms send no gradient into the locator
    torch.manual_seed(0)
    located = BackmapVAE(ModelConfig(**small, martini_locator_hidden=16))
    located.load_state_dict(model.state_dict(), strict=False)
    terms = batch_terms(located, raw, torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                        cfg=TrainConfig(martini_trace_noise=0.25))
    assert float(terms["locate"].detach()) > 0 and math.isfinite(float(terms["total"].detach()))
    terms["locate"].backward(retain_graph=True)
    assert float(located.locator.net[0].weight.grad.abs().sum()) > 0
    located.zero_grad()
    (terms["total"] - terms["locate"]).backward()
    assert located.locator.net[0].weight.grad is None or float(located.locator.net[0].weight.grad.abs().sum()) == 0


def test_fit_from_a_structure_lands_on_the_beads(trpcage):
    """One fit round from the true structure keeps it (RMSD ~0.3 A) and puts its beads on the input's."""
    protein, slots, present, beads = trpcage
    x = torch.as_tensor(beads, dtype=torch.float32)
    start = torch.as_tensor(slots, dtype=torch.float32) * torch.as_tensor(protein.slot_mask)[..., None]
    out = fit_to_beads(x, protein, start=start).double().numpy()
    assert out.shape == slots.shape
    exists = m3.BEAD_EXISTS[protein.res_type]
    miss = np.linalg.norm(m3.martini3_bead_positions(out, protein.slot_mask, protein.res_type) - beads, axis=-1)
    assert float(np.sqrt((miss[:, exists] ** 2).mean())) < 0.2
    common = present & protein.slot_mask
    rmsd = [metrics.kabsch_rmsd(o[common], t[common])[0] for o, t in zip(out, slots)]
    assert max(rmsd) < 0.5


def test_martini3_beads_take_the_shipped_model_by_default():
    from backmap_plugin.api import default_method, make_builder
    from backmap_plugin.build.martini import backmap_martini3
    from backmap_plugin.core.mappings import get_mapping
    from backmap_plugin.model.method import ModelMethod

    mapping = get_mapping("martini3")
    assert default_method(mapping) == "model"
    builder = make_builder("model", mapping=mapping)
    assert isinstance(builder, ModelMethod) and builder.model.config.mapping == "martini3"
    assert make_builder("ideal", mapping=mapping) is backmap_martini3  # the fitted builder stays one option away


def test_run_says_which_model_built_martini3_beads(capfd, tmp_path):
    from pathlib import Path

    from backmap_plugin.cli.command import main

    data = Path(__file__).parent / "data" / "martini3"
    out = tmp_path / "aa.pdb"
    assert main(["run", str(data / "cg.pdb"), "-o", str(out)]) == 0
    stderr = capfd.readouterr().err
    assert "method: model (model_martini3.pt, shipped)" in stderr.splitlines()
    assert main(["run", str(data / "cg.pdb"), "-o", str(out), "--overwrite", "--method", "ideal"]) == 0
    assert "method: ideal" in capfd.readouterr().err.splitlines()


def test_rigid_alignment_brings_a_disturbed_structure_onto_its_beads(trpcage):
    """align_residues: from trpcage with its trace shaken (0.5 A), planes and chi angles turned, three steps
    more than halve the bead misfit, with N-CA-C kept near ideal."""
    from backmap_plugin.build import martini as M
    from backmap_plugin.build.backbone import backbone_dofs, build_backbone
    from backmap_plugin.build.ideal import side_chain_internal
    from backmap_plugin.core.geometry import bond_angle, build_residues, chi_angles

    protein, slots, present, beads = trpcage
    x = torch.as_tensor(slots, dtype=torch.float64) * torch.as_tensor(protein.slot_mask)[..., None]
    layout, rt = protein.backbone_layout, torch.as_tensor(protein.res_type)
    g = torch.Generator().manual_seed(0)
    ca = x[..., chem.SLOT_CA, :] + 0.5 * torch.randn(x.shape[:2] + (3,), generator=g, dtype=torch.float64)
    dofs = backbone_dofs(x, layout)
    dofs["angle"] = dofs["angle"] + 0.3 * torch.randn(dofs["angle"].shape, generator=g, dtype=torch.float64)
    chis = torch.nan_to_num(chi_angles(x, rt)) + 0.3 * torch.randn(x.shape[:2] + (4,), generator=g, dtype=torch.float64)
    target = torch.as_tensor(beads, dtype=torch.float64)
    exists = torch.as_tensor(m3.BEAD_EXISTS[protein.res_type])

    def misfit(ca, dofs, chis):
        backbone = build_backbone(ca, layout, protein.res_type, dofs)
        atoms = build_residues(backbone, side_chain_internal(protein.res_type, chis), rt, slots=chem.SIDE_CHAIN_BUILD_ORDER)
        got = M._with_oxt(atoms, protein)
        miss = torch.einsum("rbs,frsc->frbc", torch.as_tensor(M.bead_weights(protein)), got) - target
        angle = torch.rad2deg(bond_angle(backbone[..., chem.SLOT_N, :], ca, backbone[..., chem.SLOT_C, :]))
        return float(miss.norm(dim=-1)[:, exists].pow(2).mean().sqrt()), float((angle - chem.ANGLE_N_CA_C).pow(2).mean().sqrt())

    before, _ = misfit(ca, dofs, chis)
    after, n_ca_c = misfit(*M.align_residues(ca, dofs, chis, target, protein, steps=3))
    assert after < 0.5 * before, (before, after)
    assert n_ca_c < 6.0


def test_shipped_locator_finds_the_c_alpha_trace_and_turns_with_the_beads(trpcage):
    """The shipped Martini 3 model's locator puts trp-cage's C-alpha atoms closer to the truth than the BB-bead
    trace does and moves rigidly with the beads; its features ignore beads a residue does not have; residues of
    a two-residue segment are left to the BB-bead trace."""
    from backmap_plugin.build.martini import initial_trace
    from backmap_plugin.model.martini_locator import locator_features
    from backmap_plugin.model.method import ModelMethod
    from backmap_plugin.model.weights import shipped_model_path

    protein, slots, _, beads = trpcage
    method = ModelMethod(shipped_model_path("martini3"), torch.device("cpu"))
    assert hasattr(method.model, "locator")
    x = torch.as_tensor(beads, dtype=torch.float32)
    n = protein.n_residues
    dense = [np.broadcast_to(a, (3, n)) for a in (protein.res_type, np.ones(n, bool), protein.segment)]
    ca = torch.as_tensor(slots[..., chem.SLOT_CA, :], dtype=torch.float32)

    def rms(trace):
        return float((trace - ca).norm(dim=-1).pow(2).mean().sqrt())

    with torch.no_grad():
        located = method._martini_trace(x, protein, dense)
        from_bb = initial_trace(x[..., 0, :].double(), protein).float()
        assert rms(located) < 0.25 and rms(located) < 0.6 * rms(from_bb), (rms(located), rms(from_bb))
        rot, shift = _rotation(3).float(), torch.tensor([10.0, -3.0, 5.0])
        moved = method._martini_trace(x @ rot.T + shift, protein, dense)
        torch.testing.assert_close(moved, located @ rot.T + shift, atol=2e-4, rtol=0)

        features, _, found = locator_features(_batch(protein, x[..., 0, :]), x)
        assert found.all()
        noisy = x.clone()
        noisy[:, torch.as_tensor(~m3.BEAD_EXISTS[protein.res_type])] = 99.0
        torch.testing.assert_close(locator_features(_batch(protein, x[..., 0, :]), noisy)[0], features)

        two = _batch(protein, x[..., 0, :])
        two.segment[:, :2] = -5  # residues 0 and 1: a segment of their own
        found = locator_features(two, x)[2]
        assert not found[:, :2].any() and found[:, 2:].all()


def test_martini_locator_trains_alone_under_a_kept_decoder(tmp_path, fixture_cache):
    """``train_only: locator`` on a Martini 3 model: a locator added to a trained model learns on its C-alpha
    error (it falls); every other tensor stays the init's."""
    from backmap_plugin.training.train import TrainConfig, train

    small = {"hidden": 16, "equivariant_scalars": 8, "equivariant_vectors": 2, "k_invariant": 8, "mapping": "martini3"}
    cfg = {"cache": fixture_cache, "batch_size": 4, "crop": 24, "spatial_prob": 0.0, "steps": 2,
           "validate_every": 2, "checkpoint_every": 2, "validation_batches": 1, "threads": 1}
    train(TrainConfig(**dict(cfg, model=small)), str(tmp_path / "init"), progress=False)
    init = torch.load(tmp_path / "init" / "model.pt", weights_only=True)
    assert not any(k.startswith("locator.") for k in init)
    train(TrainConfig(**dict(cfg, steps=40, lr=3e-3, model=dict(small, martini_locator_hidden=32), train_only="locator",
                             init=str(tmp_path / "init" / "model.pt"))), str(tmp_path / "locator"), progress=False)
    state = torch.load(tmp_path / "locator" / "checkpoint.pt", weights_only=False)["model"]
    for key, value in init.items():
        torch.testing.assert_close(state[key], value, msg=key)
    assert sum(k.startswith("locator.") for k in state) == 6
    rows = (tmp_path / "locator" / "train.csv").read_text().splitlines()
    assert rows[0].split(",") == ["step", "lr", "total", "locate", "locate_rmsd"]
    error = [float(r.split(",")[-1]) for r in rows[1:]]
    assert np.mean(error[-5:]) < 0.7 * np.mean(error[:5]), error


def test_a_cis_peptide_the_locator_finds_is_built_cis():
    """VEGF residues 40-58 (LYS48-PRO49 cis in the crystal) mapped to Martini 3 beads: the shipped model's locator
    puts those two C-alpha atoms closer than a trans peptide allows, and the structure keeps the peptide cis with
    N-CA-C of both residues near ideal; every other peptide stays trans. (The trace used to be held 3.8 A apart:
    the peptide came out trans and N-CA-C of LYS48 at 99 degrees.)"""
    from backmap_plugin.core.geometry import bond_angle, dihedral
    from backmap_plugin.core.mappings import get_mapping
    from backmap_plugin.model.method import ModelMethod
    from backmap_plugin.model.weights import shipped_model_path

    protein, slots, present = load_truth(Path(__file__).resolve().parent / "data" / "2fjg_cis_pro_40-58.pdb.gz")
    beads = torch.as_tensor(m3.martini3_bead_positions(slots, present, protein.res_type), dtype=torch.float32)
    method = ModelMethod(shipped_model_path("martini3"), torch.device("cpu"), temperature=0.0)
    x = method(beads, protein, get_mapping("martini3"), 1, np.zeros(1, dtype=np.int64))[0, 0].double()
    omega = torch.rad2deg(dihedral(x[:-1, chem.SLOT_CA], x[:-1, chem.SLOT_C], x[1:, chem.SLOT_N], x[1:, chem.SLOT_CA]))
    cis = 8  # LYS48-PRO49
    assert protein.res_type[cis + 1] == chem.RESIDUE_INDEX["PRO"] and abs(float(omega[cis])) < 20
    assert (omega.abs()[torch.arange(len(omega)) != cis] > 160).all()
    n_ca_c = torch.rad2deg(bond_angle(x[:, chem.SLOT_N], x[:, chem.SLOT_CA], x[:, chem.SLOT_C]))
    assert (n_ca_c[cis:cis + 2] - chem.ANGLE_N_CA_C).abs().max() < 8, n_ca_c[cis:cis + 2]


def test_backbone_atoms_of_real_dynamics_do_not_overlap(tmp_path):
    """The Martini 3 fixture's real GROMACS run (6B0S, 5 frames) backmapped with default options: no two backbone
    atoms or C-beta of the structures, more than three bonds apart, come closer than 2 A. Following the beads'
    thermal noise the fit used to lay carbonyl oxygens onto each other (GLU330 O - TRP331 O 1.64 A in frame 1);
    the joint fit now keeps them apart (``martini.CONTACT_WEIGHT``)."""
    from backmap_plugin.api import backmap
    from backmap_plugin.build.backbone_contacts import backbone_contact_pairs

    data = Path(__file__).resolve().parent / "data" / "martini3"
    backmap(data / "md.xtc", tmp_path / "out.pdb", top=data / "md.gro", progress=False)
    protein, slots, present = load_truth(tmp_path / "out.pdb")
    assert len(slots) == 5 and present[:, : chem.SLOT_O + 1].all()
    close = backbone_contact_pairs(torch.as_tensor(slots, dtype=torch.float64), protein, search=2.0)
    assert close.shape[1] == 0, close.T.tolist()
