"""The generative model: invariance, valid chemistry of samples, training and resume."""

import json
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch
from conftest import load_truth

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import metrics
from backmap_plugin.core.topology import gather_slots, protein_topology, read_residues
from backmap_plugin.model import graph as G
from backmap_plugin.model.targets import measure
from backmap_plugin.model.testing import assert_invariant, random_rigid_motion
from backmap_plugin.model.vae import BackmapVAE, ModelConfig

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def trpcage():
    protein, slots, present = load_truth(DATA / "1l2y.pdb.gz", slice(0, 3))
    return protein, torch.as_tensor(slots, dtype=torch.float64), torch.as_tensor(present)


def _batch(protein, ca):
    g, n = ca.shape[:2]
    return G.make_batch(ca, np.broadcast_to(protein.res_type, (g, n)), np.ones((g, n), bool),
                        np.broadcast_to(protein.segment, (g, n)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return BackmapVAE(ModelConfig()).double().eval()


def test_latents_and_decoder_are_invariant(model, trpcage):
    protein, slots, present = trpcage

    def prior(ca):
        batch = _batch(protein, ca)
        return model.prior_params(batch, model.condition(batch))

    def posterior(ca, atoms):
        batch = _batch(protein, ca)
        flat = batch.to_flat(atoms)
        targets = measure(flat, batch.to_flat(present.expand(atoms.shape[:3])), batch.flat_res_type, batch.layout)
        return model.posterior_params(batch, model.condition(batch), targets)

    def decoder(ca):
        batch = _batch(protein, ca)
        cond = model.condition(batch)
        z = torch.linspace(-1, 1, batch.mask.numel() * model.config.z_dim, dtype=ca.dtype).view(*batch.mask.shape, -1)
        out = model.decode(batch, cond, z)
        return {"angle": out["angle"][0], "rotamer": out["rotamer_logits"], "chi": out["chi_offsets"]}

    ca = slots[..., chem.SLOT_CA, :]
    with torch.no_grad():
        assert_invariant(prior, [ca], atol=1e-5)
        assert_invariant(posterior, [ca, slots], atol=1e-5)
        assert_invariant(decoder, [ca], atol=1e-5)


def test_latent_is_not_mirror_blind(model, trpcage):
    """Chirality matters: the decoder sees a mirrored trace differently."""
    protein, slots, _ = trpcage
    ca = slots[:1, :, chem.SLOT_CA, :]
    with torch.no_grad():
        a = model.decode(_batch(protein, ca), model.condition(_batch(protein, ca)), torch.zeros(1, 20, 8, dtype=ca.dtype))
        b = model.decode(_batch(protein, -ca), model.condition(_batch(protein, -ca)), torch.zeros(1, 20, 8, dtype=ca.dtype))
    assert (a["rotamer_logits"] - b["rotamer_logits"]).abs().max() > 1e-4


def test_samples_are_complete_and_chemically_valid(model, trpcage):
    protein, slots, _ = trpcage
    ca = slots[..., chem.SLOT_CA, :]
    batch = _batch(protein, ca)
    atoms = model.sample(batch, seeds=[1, 2, 3]).view(3, 20, chem.N_SLOTS, 3)
    xyz = protein.scatter(atoms).numpy()
    assert np.all(np.linalg.norm(xyz, axis=-1) > 1e-3)  # every atom built, OXT included
    pairs, ideal = protein.bonds()
    assert metrics.fraction_bonds_off(xyz, pairs, ideal) <= 0.01
    res, slot = protein.atom_order()
    idx = {}
    for name, s in (("N", chem.SLOT_N), ("CA", chem.SLOT_CA), ("C", chem.SLOT_C), ("CB", chem.SLOT_CB)):
        idx[name] = np.full(protein.n_residues, -1)
        idx[name][res[slot == s]] = np.nonzero(slot == s)[0]
    assert metrics.count_d_residues(xyz, idx["N"], idx["CA"], idx["C"], idx["CB"]) == 0
    np.testing.assert_allclose(atoms[..., chem.SLOT_CA, :].numpy(), ca.numpy(), atol=1e-6)


def test_sampling_is_seeded_per_frame(model, trpcage):
    protein, slots, _ = trpcage
    ca = slots[..., chem.SLOT_CA, :]
    a = model.sample(_batch(protein, ca), seeds=[5, 6, 7]).view(3, 20, -1, 3)
    b = model.sample(_batch(protein, ca[1:2]), seeds=[6]).view(1, 20, -1, 3)
    c = model.sample(_batch(protein, ca), seeds=[5, 8, 7]).view(3, 20, -1, 3)
    torch.testing.assert_close(a[1], b[0])
    assert not torch.equal(a[1], c[1])


def test_training_runs_and_resume_equals_uninterrupted(tmp_path, fixture_cache):
    from backmap_plugin.model.weights import load_model
    from backmap_plugin.training.train import TrainConfig, train

    small = {"hidden": 16, "equivariant_scalars": 8, "equivariant_vectors": 2, "k_invariant": 8}
    cfg = {"cache": fixture_cache, "batch_size": 2, "crop": 16, "steps": 6, "validate_every": 3,
           "checkpoint_every": 3, "validation_batches": 1, "model": small, "threads": 1}
    train(TrainConfig(**cfg), str(tmp_path / "straight"), progress=False)
    train(TrainConfig(**dict(cfg, steps=3)), str(tmp_path / "resumed"), progress=False)
    # the command resumes with the run folder's config (steps from the command line), so the
    # small model is rebuilt without --config
    from backmap_plugin.cli.command import main
    assert main(["train", "-o", str(tmp_path / "resumed"), "--resume", "--steps", "6", "--quiet"]) == 0
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key])
    rows = (tmp_path / "straight" / "train.csv").read_text().splitlines()
    assert len(rows) == 7 and "clash" in rows[0] and "kl" in rows[0]
    loaded = load_model(str(tmp_path / "straight" / "model.pt"))
    assert json.loads((tmp_path / "straight" / "model.json").read_text())["config"]["hidden"] == 16
    assert isinstance(loaded, BackmapVAE)


def test_training_keeps_runs_and_interrupted_steps(tmp_path, fixture_cache, monkeypatch, capsys):
    """A run folder that holds a run is not trained over without --resume or --overwrite (it was wiped); Ctrl-C
    before the first checkpoint keeps a checkpoint of the steps done (they were lost), and the resumed run logs
    each step once; a C-alpha model refuses a cache of centres of mass (it trained on them as a C-alpha trace)."""
    import shutil

    import backmap_plugin.training.train as T
    from backmap_plugin.cli.command import main

    small = {"hidden": 16, "equivariant_scalars": 8, "equivariant_vectors": 2, "k_invariant": 8}
    cfg = T.TrainConfig(cache=fixture_cache, batch_size=2, crop=16, steps=5, validate_every=5, checkpoint_every=100,
                        validation_batches=1, model=small, threads=1)
    run = tmp_path / "run"
    original, calls = T.batch_terms, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(T, "batch_terms", interrupted)
        with pytest.raises(KeyboardInterrupt):
            T.train(cfg, str(run), progress=False)
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 2
    assert "has no validation entries" in capsys.readouterr().err  # the fixture cache has no val split
    with pytest.raises(ValueError, match="holds a training run .*checkpoint.pt.*resume=True .* overwrite=True"):
        T.train(cfg, str(run), progress=False)
    assert main(["train", "-o", str(run), "--quiet"]) == 2
    assert "pass --resume to continue it or --overwrite to start over" in capsys.readouterr().err
    assert main(["train", "-o", str(run), "--resume", "--quiet"]) == 0
    steps = [int(line.split(",")[0]) for line in (run / "train.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4, 5]
    T.train(cfg, str(run), progress=False, overwrite=True)  # starts over: one log of its own
    assert [int(line.split(",")[0]) for line in (run / "train.csv").read_text().splitlines()[1:]] == [1, 2, 3, 4, 5]
    com_cache = tmp_path / "com_cache"
    shutil.copytree(fixture_cache, com_cache)
    index = json.loads((com_cache / "index.json").read_text())
    index["settings"]["mapping"] = "com"
    (com_cache / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="holds com beads; a C-alpha model"):
        T.train(T.TrainConfig(**{**cfg.__dict__, "cache": str(com_cache)}), str(tmp_path / "ca"), progress=False)


def test_perceptron_locator_moves_only_centre_of_mass_beads_and_turns_with_them(trpcage):
    """A :class:`PerceptronLocator` moves centre-of-mass beads, keeps C-alpha beads and the residues of a
    two-residue segment (no frame) where they are, and its trace moves rigidly with the beads."""
    from backmap_plugin.core.mappings import get_mapping
    from backmap_plugin.model.locator import PerceptronLocator

    protein, slots, present = trpcage
    torch.manual_seed(1)
    locator = PerceptronLocator(16).double()
    beads = torch.as_tensor(get_mapping("com").bead_positions(slots.numpy(), present.numpy(), protein.res_type))
    n = protein.n_residues
    is_com = torch.ones(3, n, dtype=torch.bool)
    is_com[:, 12:16] = False  # a C-alpha linker
    segment = protein.segment.copy()
    segment[:2] = -5  # residues 0 and 1: a segment of their own
    dense = [np.broadcast_to(a, (3, n)) for a in (protein.res_type, np.ones(n, bool), segment)]
    with torch.no_grad():
        located = locator(G.make_batch(beads, *dense), is_com)
        kept = ~is_com
        kept[:, :2] = True
        torch.testing.assert_close(located[kept], beads[kept], rtol=0, atol=0)
        assert bool(((located - beads).norm(dim=-1)[~kept] > 1e-3).all())
        rotation, translation = random_rigid_motion()
        moved = locator(G.make_batch(beads @ rotation.T + translation, *dense), is_com)
        torch.testing.assert_close(moved, located @ rotation.T + translation)


def test_locator_alone_trains_and_the_rest_stays_as_initialised(tmp_path, fixture_cache):
    """``train_only: locator``: a smaller locator learns on its C-alpha error; every other tensor is the init's."""
    from backmap_plugin.training.train import TrainConfig, train

    small = {"hidden": 16, "equivariant_scalars": 8, "equivariant_vectors": 2, "k_invariant": 8, "mapping": "com"}
    cfg = {"cache": fixture_cache, "batch_size": 2, "crop": 16, "steps": 3, "validate_every": 3,
           "checkpoint_every": 3, "validation_batches": 1, "threads": 1, "locator_warmup": 0}
    train(TrainConfig(**dict(cfg, model=small)), str(tmp_path / "init"), progress=False)
    init = torch.load(tmp_path / "init" / "model.pt", weights_only=True)
    smaller = dict(small, locator_scalars=8, locator_vectors=2, locator_layers=1)
    train(TrainConfig(**dict(cfg, model=smaller, train_only="locator", init=str(tmp_path / "init" / "model.pt"))),
          str(tmp_path / "locator"), progress=False)
    state = torch.load(tmp_path / "locator" / "checkpoint.pt", weights_only=False)["model"]
    assert state["locator.type_embed.weight"].shape[0] == init["locator.type_embed.weight"].shape[0]
    for key, value in state.items():
        if not key.startswith("locator."):
            torch.testing.assert_close(value, init[key], msg=key)
    moved = [k for k, v in state.items() if k.startswith("locator.") and (k not in init or v.shape != init[k].shape
                                                                          or not torch.equal(v, init[k]))]
    assert len(moved) > 10
    header = (tmp_path / "locator" / "train.csv").read_text().splitlines()[0].split(",")
    assert header == ["step", "lr", "total", "locate", "locate_rmsd"]
    with pytest.raises(ValueError, match="needs a model with a locator"):
        train(TrainConfig(**dict(cfg, model={**small, "mapping": "ca"}, train_only="locator")),
              str(tmp_path / "ca"), progress=False)


def test_warm_start_copies_the_matching_tensors_of_a_shallower_model():
    from backmap_plugin.model.weights import shipped_model_path
    from backmap_plugin.training.train import warm_start

    path = shipped_model_path()
    config = json.loads(Path(path).with_suffix(".json").read_text())["config"]
    deeper = BackmapVAE(ModelConfig(**dict(config, prior_layers=config["prior_layers"] + 1)))
    fresh = {k: v.clone() for k, v in deeper.state_dict().items()}
    copied = warm_start(deeper, path)
    source = torch.load(path, weights_only=True)
    assert copied == sorted(source)
    state = deeper.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(value, source[key] if key in source else fresh[key])
    new_layer = [k for k in state if k.startswith(f"prior.products.{config['prior_layers']}.")]
    assert new_layer and not set(new_layer) & set(copied)


def test_shipped_model_is_the_default_and_valid(tmp_path):
    """backmap run uses the shipped weights for CA input; samples differ, chemistry holds."""
    from backmap_plugin.api import backmap
    from backmap_plugin.model.weights import load_model, shipped_model_path

    assert shipped_model_path() is not None
    model = load_model()
    assert model.info["meta"]["step"] > 0 and model.info["config"]["z_dim"] == model.config.z_dim
    out = tmp_path / "aa.pdb"
    result = backmap(str(DATA.parent.parent / "examples" / "trpcage_ca.dcd"), str(out),
                     top=str(DATA.parent.parent / "examples" / "trpcage_ca.pdb"), samples=3, stride=10, progress=False)
    assert result.n_frames == 4 and result.n_samples == 3
    traj = md.load(str(out))
    assert traj.n_frames == 12 and traj.n_atoms == 154
    records, _ = read_residues(traj.topology, "out")
    slots, present = gather_slots(traj.xyz * 10.0, records)
    protein = protein_topology(records, slots[0, :, chem.SLOT_CA])
    pairs, ideal = protein.bonds()
    assert present.all() or present[:, : chem.SLOT_OXT].sum() == protein.slot_mask[:, : chem.SLOT_OXT].sum()
    assert metrics.fraction_bonds_off(traj.xyz * 10.0, pairs, ideal) <= 0.01
    samples = (traj.xyz * 10.0).reshape(4, 3, traj.n_atoms, 3)
    assert metrics.sample_diversity(samples) > 0.05  # samples of one frame genuinely differ


def test_built_model_cache_gives_the_same_structures(tmp_path, monkeypatch, trpcage):
    """The first load keeps the built model in the cache folder; a load from it builds the same structures,
    an unreadable entry is rebuilt, and BACKMAP_CACHE_DIR="" switches the cache off."""
    from backmap_plugin.core.mappings import get_mapping
    from backmap_plugin.model import weights
    from backmap_plugin.model.method import ModelMethod

    protein, slots, _ = trpcage
    ca, mapping, seeds = slots[..., chem.SLOT_CA, :].float(), get_mapping("ca"), np.array([1, 2, 3])

    def structures():
        weights._load.cache_clear()
        return ModelMethod(None, "cpu", temperature=0.0)(ca, protein, mapping, 1, seeds)

    monkeypatch.setenv("BACKMAP_CACHE_DIR", "")
    assert weights.model_cache_dir() is None
    built = structures()
    monkeypatch.setenv("BACKMAP_CACHE_DIR", str(tmp_path))
    assert torch.equal(structures(), built)  # built again, and kept
    (entry,) = tmp_path.glob("model-*.pt")
    read = weights._read_cached(str(entry))
    assert isinstance(read, BackmapVAE)
    assert torch.equal(structures(), built)  # from the cache
    entry.write_bytes(b"not a pickle")
    assert weights._read_cached(str(entry)) is None
    assert torch.equal(structures(), built)  # rebuilt and rewritten
    assert weights._read_cached(str(entry)) is not None
    assert entry.stat().st_mode & 0o777 == 0o600
    weights._load.cache_clear()


def test_a_cache_entry_others_can_write_is_not_unpickled(tmp_path, monkeypatch):
    """Unpickling runs code: an entry in a folder others can write (a shared BACKMAP_CACHE_DIR), or one others can
    write, is built again rather than loaded (a planted file ran its code, and the run reported success)."""
    import pickle

    from backmap_plugin.model import weights

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    planted = shared / "model-planted.pt"
    ran = tmp_path / "ran"
    planted.write_bytes(pickle.dumps(_Planted(str(ran))))
    assert weights._read_cached(str(planted)) is None and not ran.exists()
    shared.chmod(0o700)
    planted.chmod(0o666)
    assert weights._read_cached(str(planted)) is None and not ran.exists()
    planted.chmod(0o600)  # this user's alone: trusted (and, not being a model, not taken)
    assert weights._read_cached(str(planted)) is None and ran.exists()


class _Planted:
    """A pickle that leaves a mark when it is loaded."""

    def __init__(self, mark: str):
        self.mark = mark

    def __reduce__(self):
        return (open, (self.mark, "w"))


def test_generation_model_leaves_out_the_encoder_and_samples_the_same(trpcage):
    """load_model drops the posterior network; sampling equals the full model's, training it says why not."""
    from backmap_plugin.model.weights import _json_path, load_model, shipped_model_path

    protein, slots, present = trpcage
    loaded = load_model()
    assert loaded.encoder is None
    path = shipped_model_path()
    full = BackmapVAE(ModelConfig(**json.loads(open(_json_path(path)).read())["config"]))
    full.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    full.eval()
    ca = slots[..., chem.SLOT_CA, :].float()
    with torch.no_grad():
        torch.testing.assert_close(loaded.sample(_batch(protein, ca), seeds=[1, 2, 3], mode=True),
                                   full.sample(_batch(protein, ca), seeds=[1, 2, 3], mode=True), rtol=0, atol=0)
    batch = _batch(protein, ca)
    targets = measure(batch.to_flat(slots.float()), batch.to_flat(present.expand(slots.shape[:3])),
                      batch.flat_res_type, batch.layout)
    with pytest.raises(RuntimeError, match="without its encoder"):
        loaded.loss(batch, targets)


def test_model_method_frames_are_independent_and_seeded(trpcage):
    """A frame's structures depend only on its beads and seed; temperature 0 ignores the seed."""
    from backmap_plugin.core.mappings import get_mapping
    from backmap_plugin.model.method import ModelMethod

    protein, slots, _ = trpcage
    ca, mapping = slots[..., chem.SLOT_CA, :], get_mapping("ca")
    seeds = np.array([11, 12, 13])
    method = ModelMethod(None, "cpu", temperature=1.0)
    together = method(ca, protein, mapping, 2, seeds)
    alone = torch.cat([method(ca[f : f + 1], protein, mapping, 2, seeds[f : f + 1]) for f in range(3)])
    assert together.shape == (3, 2, 20, chem.N_SLOTS, 3) and together.dtype == ca.dtype
    # float32 sums depend on the batch size, and the chi relief steps amplify that to ~1e-3 A at side-chain
    # tips; anything one frame took from another (a shared draw, a neighbour) moves atoms by tenths of an A
    torch.testing.assert_close(together, alone, atol=5e-3, rtol=0)
    assert not torch.equal(together[:, 0], together[:, 1])
    mode = ModelMethod(None, "cpu", temperature=0.0)
    assert torch.equal(mode(ca, protein, mapping, 1, seeds), mode(ca, protein, mapping, 1, seeds + 5))


def test_model_method_avoids_clashes(monkeypatch):
    """Shipped model on the 38 NMR frames of 1L2Y: at most 2 clashes per 100 residues (1.4 with the two-layer
    prior, 1.6 and 0.5 with earlier weights), 30-47 without the overlap-aware choice and the chi relief."""
    from backmap_plugin.build import ideal
    from backmap_plugin.core.mappings import get_mapping
    from backmap_plugin.model.method import ModelMethod

    traj = md.load(str(DATA / "1l2y.pdb.gz"))
    records, _ = read_residues(traj.topology, "1l2y")
    slots, _ = gather_slots(traj.xyz * 10.0, records)
    protein = protein_topology(records, slots[0, :, chem.SLOT_CA])
    ca = torch.as_tensor(slots[..., chem.SLOT_CA, :])
    method = ModelMethod(None, "cpu", temperature=0.0)
    pairs, lengths = protein.bonds()

    def clashes():
        xyz = protein.scatter(method(ca, protein, get_mapping("ca"), 1, np.arange(len(ca)))[:, 0]).numpy()
        assert metrics.fraction_bonds_off(xyz, pairs, lengths) <= 0.01
        return metrics.clashes_per_100_residues(xyz, pairs, protein.n_residues)

    placed = clashes()
    monkeypatch.setattr(ideal, "PASSES", 0)
    monkeypatch.setattr(ideal, "RELIEF_STEPS", 0)
    assert placed <= 2.0 and clashes() > 10.0


def test_mode_is_the_least_risk_choice(model, trpcage):
    """Temperature 0: candidates in order of expected deviation, the first of least risk; angles at central means."""
    from backmap_plugin.build.ideal import rotamer_deviation_table
    from backmap_plugin.build.rotamers import load_rotamers

    protein, slots, _ = trpcage
    batch = _batch(protein, slots[:1, :, chem.SLOT_CA])
    _, _, log_p, risk = model.sample_candidates(batch, [0], mode=True, n_candidates=8)
    cond = model.condition(batch)
    out = model.decode(batch, cond, model.prior_params(batch, cond)[0])
    probs = torch.softmax(out["rotamer_logits"], -1)
    table = rotamer_deviation_table().double()[protein.res_type]
    expected = torch.einsum("ri,rij->rj", probs, table)
    count = load_rotamers().count[protein.res_type]
    for r, n in enumerate(count):
        if n == 0:
            continue
        assert torch.isfinite(risk[:n, r]).all() and torch.isinf(risk[n:, r]).all()
        assert torch.all(risk[1:n, r] >= risk[: n - 1, r])  # ascending
        torch.testing.assert_close(risk[0, r], expected[r, :n].min())
        assert torch.isfinite(log_p[:n, r]).all()


def test_central_angle_keeps_to_the_mode(model):
    """Circular mean of the half circle around the most likely bin: one mode is averaged, a far one ignored."""
    bins = model.config.bins
    width = 2 * np.pi / bins
    logits = torch.full((2, bins), -30.0, dtype=torch.float64)
    logits[0, 10] = logits[0, 11] = 0.0  # two neighbouring bins: the mean lies between them
    logits[1, 10], logits[1, 28] = 0.0, -0.1  # two opposite modes: the likelier one wins, unaveraged
    offsets = torch.zeros_like(logits)
    angle = model._central_angle((logits, offsets))
    centre = -np.pi + width * (np.arange(bins) + 0.5)
    assert angle[0].item() == pytest.approx((centre[10] + centre[11]) / 2)
    assert angle[1].item() == pytest.approx(centre[10])


def test_nearest_neighbours_of_a_longer_list_equal_a_direct_search(trpcage):
    """condition() searches once with the larger k; the first k of that list are the k-nearest search."""
    protein, slots, _ = trpcage
    batch = _batch(protein, slots[:, :, chem.SLOT_CA])
    frames = G.local_frames(batch)
    long, short = G.neighbours(batch, frames, 12, 14.0), G.neighbours(batch, frames, 8, 14.0)
    for name in ("index", "mask", "vectors", "features", "seq_class"):
        torch.testing.assert_close(getattr(long.nearest(8), name), getattr(short, name))
    assert long.nearest(20) is long


def test_folded_messages_equal_the_tensor_product_with_radial_weights():
    """Folded evaluation (inference) = e3nn's product of neighbour features weighted by the radial MLP (training)."""
    from e3nn import o3

    from backmap_plugin.model.graph import Neighbours, gather_neighbours
    from backmap_plugin.model.networks import EquivariantNet, _edge_matrix, _folded_messages

    torch.manual_seed(0)
    net = EquivariantNet(5, 2, 3, scalars=8, vectors=3, layers=1)
    product, radial = net.products[0], net.radials[0]
    g, length, k = 2, 7, 4
    h = torch.randn(g, length, net.irreps_hidden.dim)
    index = torch.randint(0, length, (g, length, k))
    mask = torch.rand(g, length, k) > 0.3
    mask[0, 0] = False  # a node without edges
    sh = o3.spherical_harmonics(net.irreps_sh, torch.randn(g, length, k, 3), normalize=True, normalization="component")
    radial_in = torch.randn(g, length, k, radial[0].in_features)
    weight = mask.float() / mask.sum(-1, keepdim=True).clamp(min=1)

    plain = (product(gather_neighbours(h, index), sh, radial(radial_in)) * weight[..., None]).sum(2)
    folded = _folded_messages(net.paths[0], radial[-1], h, radial[:-1](radial_in), weight, sh,
                              _edge_matrix(index, radial[-1].in_features + 1), product.irreps_out.dim)
    torch.testing.assert_close(folded, plain, atol=1e-5, rtol=1e-5)
    assert plain.abs().max() > 0.1 and torch.all(folded[0, 0] == 0)
    # the whole net: the same outputs with gradients (the product) and without (folded)
    nb = Neighbours(index, mask, torch.randn(g, length, k, 3), torch.randn(g, length, k, radial[0].in_features),
                    torch.randint(0, 11, (g, length, k)))
    inputs = torch.randn(g, length, 5), torch.randn(g, length, 2, 3), nb
    with torch.no_grad():
        folded_net = net(*inputs)
    torch.testing.assert_close(folded_net, net(*inputs), atol=1e-5, rtol=1e-5)


def test_tensor_products_without_unused_steps_are_unchanged():
    """Dropping the steps e3nn's generated code never uses leaves the product's result as it was."""
    from e3nn import o3

    from backmap_plugin.model.networks import _drop_unused_steps

    args = (o3.Irreps("16x0e + 4x1o"), o3.Irreps.spherical_harmonics(1), o3.Irreps("20x0e + 4x1o"))
    plain, pruned = (o3.FullyConnectedTensorProduct(*args, shared_weights=False) for _ in range(2))
    _drop_unused_steps(pruned)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 28, generator=gen), torch.randn(50, 4, generator=gen)
    w = torch.randn(50, plain.weight_numel, generator=gen)
    assert torch.equal(plain(x, y, w), pruned(x, y, w))


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "workflows" / "train").glob("*.json")),
                         ids=lambda p: p.name)
def test_shipped_training_configs_are_valid(path):
    """Every config in workflows/train reads as a TrainConfig whose model keys build a model."""
    from backmap_plugin.training.train import load_config

    cfg = load_config(str(path))
    config = ModelConfig(**cfg.model)
    assert cfg.train_only in (None, "locator")
    if cfg.train_only:
        assert hasattr(BackmapVAE(config), "locator") and cfg.init
