"""`backmap train` run folders: what is checked before a folder is touched, what a run leaves, resuming."""

from __future__ import annotations

import json
import math

import pytest
import torch

import backmap_plugin.training.train as T
from backmap_plugin.cli.command import main
from backmap_plugin.core.errors import BackmapInputError

SMALL = {"hidden": 16, "equivariant_scalars": 8, "equivariant_vectors": 2, "k_invariant": 8}


def _config(cache, **changes) -> T.TrainConfig:
    settings = dict(cache=cache, batch_size=2, crop=16, steps=4, validate_every=3, checkpoint_every=100,
                    validation_batches=1, model=SMALL, threads=1)
    return T.TrainConfig(**{**settings, **changes})


def test_a_run_resumed_within_a_block_trains_what_the_uninterrupted_one_does(tmp_path, fixture_cache, monkeypatch):
    """Stopped at step 4 of blocks of 3 (Ctrl-C or --steps), the resumed run's weights equal the uninterrupted
    run's (making the batch loader drew from torch's global random state, which the model's noise draws from too)."""
    T.train(_config(fixture_cache, steps=7), str(tmp_path / "straight"), progress=False)
    T.train(_config(fixture_cache, steps=4), str(tmp_path / "resumed"), progress=False)
    T.train(_config(fixture_cache, steps=7), str(tmp_path / "resumed"), resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 7
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)


def test_a_short_run_leaves_its_model(tmp_path, fixture_cache, capsys):
    """A run of fewer steps than validate_every (or stopped by max_minutes) saves model.pt at its end (it saved
    none and said `model: RUN/model.pt`); the run says what it trains first."""
    run = tmp_path / "run"
    argv = ["train", "-o", str(run), "--steps", "2", "--threads", "1"]
    (tmp_path / "cfg.json").write_text(json.dumps({**_config(fixture_cache).__dict__, "validate_every": 250}))
    assert main(argv + ["--config", str(tmp_path / "cfg.json")]) == 0
    out, err = capsys.readouterr()
    assert f"model: {run}/model.pt" in out and (run / "model.pt").exists()
    assert json.loads((run / "model.json").read_text())["meta"]["step"] == 2
    assert "train: ca model, 1 train / 0 validation entries" in err and "1 thread(s), steps 0 -> 2" in err
    assert json.loads((run / "config.json").read_text())["threads"] == 1


def test_a_mistake_never_removes_an_earlier_run(tmp_path, fixture_cache, capsys):
    """--overwrite with a config that cannot train (a missing cache, batch_size 0) is refused before the earlier
    run's files are removed (they were removed first, then the error came); the same for a model setting."""
    run = tmp_path / "run"
    T.train(_config(fixture_cache, steps=1), str(run), progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    bad = {"missing_cache.json": {"cache": str(tmp_path / "nope")}, "batch.json": {"batch_size": 0},
           "model.json": {"model": {"hiden": 4}}, "lr.json": {"lr": "abc"}}
    messages = {"missing_cache.json": "nope", "batch.json": "batch_size must lie in [1, inf), got 0",
                "model.json": "model: unknown keys ['hiden']", "lr.json": "lr must be a number, got 'abc'"}
    for name, change in bad.items():
        (tmp_path / name).write_text(json.dumps({**_config(fixture_cache).__dict__, **change}))
        assert main(["train", "--config", str(tmp_path / name), "-o", str(run), "--overwrite", "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and messages[name] in err[0], (name, err)
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before, name
    (tmp_path / "broken.json").write_text('{"lr": ')
    assert main(["train", "--config", str(tmp_path / "broken.json"), "-o", str(run), "--quiet"]) == 2
    assert f"{tmp_path / 'broken.json'}: the training config is not valid JSON" in capsys.readouterr().err
    overridden = _config(fixture_cache)
    overridden.steps = -5  # (as the command's --steps sets it)
    with pytest.raises(ValueError, match=r"steps must lie in \[1, inf\), got -5"):
        T.train(overridden, str(run), overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_resumed_run_keeps_its_settings(tmp_path, fixture_cache):
    """--resume with another learning rate or model is refused by name (the lr was recorded but not used; a
    model change raised a state-dict traceback); steps, time limit, device and threads may change."""
    run = tmp_path / "run"
    T.train(_config(fixture_cache, steps=2), str(run), progress=False)
    with pytest.raises(ValueError, match=r"cannot resume with other settings .*lr 0.001 \(now 0.1\)"):
        T.train(_config(fixture_cache, steps=3, lr=0.1), str(run), resume=True, progress=False)
    with pytest.raises(ValueError, match=r"cannot resume with other settings .*model"):
        T.train(_config(fixture_cache, steps=3, model={**SMALL, "hidden": 32}), str(run), resume=True,
                progress=False)
    T.train(_config(fixture_cache, steps=3, max_minutes=5.0), str(run), resume=True, progress=False)
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 3


def test_a_diverged_training_stops_and_saves_no_model(tmp_path, fixture_cache, monkeypatch):
    """A loss that is not finite stops the run with a message (it went on and saved NaN weights as model.pt);
    the checkpoint of the step before it stays."""
    original = T.batch_terms
    calls = []

    def diverging(*args, **kwargs):
        terms = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            terms["total"] = terms["total"] * math.nan
        return terms

    monkeypatch.setattr(T, "batch_terms", diverging)
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="training diverged at step 2: the loss is not finite .*checkpoint of step 1"):
        T.train(_config(fixture_cache), str(run), progress=False)
    assert not (run / "model.pt").exists()
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_one_run_writes_a_folder_at_a_time(tmp_path, fixture_cache):
    """A second run into a folder being trained is refused (both ran, the second wiping the first's files)."""
    from backmap_plugin.io.lock import OutputLock

    run = tmp_path / "run"
    run.mkdir()
    with OutputLock(run, who="backmap train"):
        with pytest.raises(BackmapInputError, match="another writer is writing this output"):
            T.train(_config(fixture_cache, steps=1), str(run), overwrite=True, progress=False)
    assert not any(run.iterdir())


def test_interrupted_before_the_first_step_says_nothing_is_kept(tmp_path, fixture_cache, monkeypatch, capsys):
    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "open_cache", stopped)
    (tmp_path / "cfg.json").write_text(json.dumps(_config(fixture_cache).__dict__))
    assert main(["train", "--config", str(tmp_path / "cfg.json"), "-o", str(tmp_path / "run"), "--quiet"]) == 130
    assert "interrupted; no step was finished: nothing is kept" in capsys.readouterr().err


def test_a_run_stopped_half_way_through_a_step_resumes_as_if_it_went_on(tmp_path, fixture_cache, monkeypatch):
    """Ctrl-C inside a step, after the model drew some of its noise: the checkpoint keeps the random state at the
    end of the step before (it kept the half-drawn one, and the resumed run trained something else)."""
    T.train(_config(fixture_cache, steps=7), str(tmp_path / "straight"), progress=False)
    original, calls = T.batch_terms, []

    def stopped_in_the_fifth(*args, **kwargs):
        terms = original(*args, **kwargs)  # (draws the step's noise)
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return terms

    with monkeypatch.context() as patch:
        patch.setattr(T, "batch_terms", stopped_in_the_fifth)
        with pytest.raises(KeyboardInterrupt):
            T.train(_config(fixture_cache, steps=7), str(tmp_path / "resumed"), progress=False)
    T.train(_config(fixture_cache, steps=7), str(tmp_path / "resumed"), resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)


def test_resuming_takes_model_defaults_spelt_out_and_refuses_a_rebuilt_cache(tmp_path, fixture_cache):
    """A config that spells out a model default is the same config (it was refused); a cache rebuilt since the
    checkpoint is refused (the run went on with other data)."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(fixture_cache, cache)
    run = tmp_path / "run"
    T.train(_config(str(cache), steps=2), str(run), progress=False)
    T.train(_config(str(cache), steps=3, model={**SMALL, "z_dim": 8}), str(run), resume=True, progress=False)
    index = cache / "index.json"
    index.write_text(index.read_text() + "\n")  # (as a rebuild with other files rewrites it)
    with pytest.raises(ValueError, match="cache changed since .*checkpoint.pt was saved"):
        T.train(_config(str(cache), steps=4), str(run), resume=True, progress=False)


def test_init_names_the_shipped_weights_wherever_the_package_is(tmp_path, fixture_cache, monkeypatch, capsys):
    """``"init": "shipped:ca"`` is the package's C-alpha model from any folder (the shipped configs named
    backmap_plugin/weights/model.pt, found only from the repository's root); an unknown one is refused by name."""
    from backmap_plugin.model.weights import shipped_model_path

    assert T.init_path("shipped:ca") == shipped_model_path("ca")
    with pytest.raises(ValueError, match="init: the package ships no model 'shipped:martini2' .*shipped:ca"):
        T.init_path("shipped:martini2")
    monkeypatch.chdir(tmp_path)
    assert T.init_path("runs/model.pt") == str(tmp_path / "runs" / "model.pt")
    T.train(_config(fixture_cache, steps=1, model={}, init="shipped:ca"), str(tmp_path / "run"), progress=False)
    assert f"from {shipped_model_path('ca')}" in capsys.readouterr().err
