"""Model files given to ``backmap run --model``, ``backmap(model=...)`` and ``BackmapReporter(model=...)``: a damaged
or mismatched one is refused with one line naming the file and what is wrong."""

import json
import shutil
from pathlib import Path

import mdtraj as md
import pytest
import torch
from conftest import FakeSimulation, FakeState

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.model.vae import BackmapVAE, ModelConfig
from backmap_plugin.model.weights import load_model, save_model

EXAMPLES = Path(__file__).parent.parent / "examples"
SMALL = {"hidden": 16, "equivariant_scalars": 8, "equivariant_vectors": 2, "k_invariant": 8}


@pytest.fixture(autouse=True)
def no_model_cache(monkeypatch):
    """No built-model cache: each load reads the files (and the user's cache folder is left alone)."""
    monkeypatch.setenv("BACKMAP_CACHE_DIR", "")


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    """A tiny C-alpha model saved by the package (``model.pt`` and ``model.json``); copy it to change it."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("small") / "model.pt"
    save_model(BackmapVAE(ModelConfig(**SMALL)), str(path), meta={"step": 1})
    return path


def _copy(model: Path, folder: Path) -> Path:
    """``model`` and its json in ``folder``; the copied ``model.pt``."""
    folder.mkdir(exist_ok=True)
    shutil.copy(model.with_suffix(".json"), folder)
    return Path(shutil.copy(model, folder))


def test_a_small_saved_model_loads(small_model):
    model = load_model(str(small_model))
    assert model.config.hidden == 16 and model.info["meta"]["step"] == 1


def test_a_file_that_is_not_a_model_is_refused(small_model, tmp_path):
    """A CSV renamed model.pt (it gave IndexError: pop from empty list), a truncated file, a file of other data."""
    path = _copy(small_model, tmp_path)
    for content, says in ((b"step,total,kl\n1,0.5,0.1\n", "other data"), (b"", "an empty file"),
                          (small_model.read_bytes()[:1000], "a damaged archive, cut short or changed")):
        path.write_bytes(content)
        with pytest.raises(BackmapInputError, match=f"^{path}: not a model file \\(torch cannot read it: {says}\\)$"):
            load_model(str(path))
    torch.save({"step": 3, "weights": [1.0, 2.0]}, path)
    with pytest.raises(BackmapInputError, match=f"^{path}: not a model file \\(it holds no model weights"):
        load_model(str(path))


def test_weights_that_do_not_match_their_config_are_refused(small_model, tmp_path):
    """The weights of a C-alpha model beside the json of a centre-of-mass one (it gave RuntimeError: Error(s) in
    loading state_dict) or of another size."""
    path = _copy(small_model, tmp_path)
    info = json.loads(path.with_suffix(".json").read_text())
    for change, says in (({"mapping": "com"}, "mapping 'com'"), ({"hidden": 24}, "hidden 24")):
        path.with_suffix(".json").write_text(json.dumps(dict(info, config=dict(info["config"], **change))))
        with pytest.raises(BackmapInputError, match=f"^{path}: its weights do not match its config "
                                                    f"{path.with_suffix('.json')} \\(the json says .*{says}"):
            load_model(str(path))


def test_a_broken_config_is_refused_with_its_file_and_line(small_model, tmp_path):
    """A json cut short (the message had no file name), one without the model's config, one with unknown settings."""
    path = _copy(small_model, tmp_path)
    config = path.with_suffix(".json")
    config.write_text('{"config": {\n')
    with pytest.raises(BackmapInputError, match=f"^{config}: the config of the model {path} is broken JSON at line 2"):
        load_model(str(path))
    config.write_text('["not", "a", "config"]')
    with pytest.raises(BackmapInputError, match=f"^{config}: not the config of a model"):
        load_model(str(path))
    config.write_text(json.dumps({"config": {"hidden": 16, "colour": "red"}}))
    with pytest.raises(BackmapInputError, match=f"^{config}: not the config of a model.*colour"):
        load_model(str(path))


def test_a_run_folder_is_refused_with_the_file_to_pass(small_model, tmp_path):
    """``--model runs/ca2`` said "its config runs/ca2.json is missing"."""
    _copy(small_model, tmp_path / "run")
    with pytest.raises(BackmapInputError, match=f"^{tmp_path / 'run'} is a directory; pass the model file inside it "
                                                f"\\(e.g. {tmp_path / 'run' / 'model.pt'}\\)"):
        load_model(str(tmp_path / "run"))


def test_weights_that_are_not_finite_are_refused(small_model, tmp_path):
    """A diverged training saved NaN weights; the run failed later, blaming a non-finite coordinate of its output."""
    path = _copy(small_model, tmp_path)
    state = torch.load(path, weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    torch.save(state, path)
    with pytest.raises(BackmapInputError, match=f"^{path}: its weights are not finite \\(NaN/inf\\): a diverged "
                                                "training?"):
        load_model(str(path))


def test_the_command_api_and_reporter_give_the_same_line(small_model, tmp_path, capsys):
    """``backmap run --model``, :func:`backmap` and :class:`BackmapReporter` (at construction for a folder, at the
    first report for damaged weights) give the loader's message."""
    from backmap_plugin.api import backmap
    from backmap_plugin.cli.command import main
    from backmap_plugin.reporter import BackmapReporter

    path = _copy(small_model, tmp_path / "run")
    path.write_text("not a model\n")
    top, out = str(EXAMPLES / "trpcage_ca.pdb"), tmp_path / "aa.pdb"
    for model, says in ((path, f"{path}: not a model file"), (path.parent, f"{path.parent} is a directory")):
        assert main(["run", top, "-o", str(out), "--model", str(model), "--quiet"]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"backmap: error: {says}")
        with pytest.raises(BackmapInputError, match=f"^{says}"):
            backmap(top, str(out), model=str(model), progress=False)
    assert not out.exists()
    with pytest.raises(BackmapInputError, match=f"^{path.parent} is a directory"):
        BackmapReporter(str(out), 10, model=str(path.parent))
    ca = md.load(top)
    with BackmapReporter(str(out), 10, batchFrames=1, model=str(path)) as reporter:
        with pytest.raises(BackmapInputError, match=f"{path}: not a model file"):
            reporter.report(FakeSimulation(ca.topology.to_openmm()), FakeState(ca.xyz[0]))
