"""Out-of-equilibrium augmentation: tiny high-temperature runs of Trp-cage (CPU platform)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from backmap_plugin.cli.command import main as backmap_main
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.training.augment import (
    AUG_KIND,
    FRAMES_DIR,
    LOGS_DIR,
    augment_id,
    load_config,
    read_logs,
    run_augmentation,
    select_structures,
)
from backmap_plugin.training.cache import build_cache, open_cache

#: Two 0.4 ps stages (200 steps each), one frame per stage.
TINY = {"temperatures": [400.0, 500.0], "stage_ps": 0.4, "save_ps": 0.4, "timestep_fs": 2.0,
        "minimize_iterations": 100, "seed": 7, "max_residues": 100}
PLATFORM = "CPU"


def _atom_lines(path, model: int = 1) -> list[str]:
    """ATOM lines of one model of a gzipped multi-model PDB."""
    lines, current = [], 0
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if line.startswith("MODEL"):
                current += 1
            elif line.startswith("ATOM") and current == model:
                lines.append(line)
    return lines


@pytest.fixture(scope="module")
def parents(tmp_path_factory, fixture_pdb):
    """A cache of three parents in one cluster: Trp-cage 1-12, Trp-cage, and a dimer
    of Trp-cage with both chains on the same coordinates (cannot be simulated)."""
    root = tmp_path_factory.mktemp("augment")
    src = root / "src"
    src.mkdir()
    atoms = _atom_lines(fixture_pdb)
    (src / "trp__short.pdb").write_text("".join(a for a in atoms if int(a[22:26]) <= 12) + "END\n")
    (src / "trp__full.pdb").write_text("".join(atoms) + "END\n")
    chain_b = [a[:21] + "B" + a[22:] for a in atoms]
    (src / "trp__overlap.pdb").write_text("".join(atoms) + "TER\n" + "".join(chain_b) + "END\n")
    build_cache([src], root / "cache", workers=1, val_fraction=0.0)
    return root


def test_native_obc2_matches_custom_force(fixture_pdb):
    import openmm

    from backmap_plugin.openmm.structure import complete_structure, read_structure
    from backmap_plugin.openmm.systems import load_force_field, use_native_obc2

    topology, frames = read_structure(fixture_pdb)
    completed = complete_structure(topology, frames[0])
    system = load_force_field("obc2").createSystem(completed.topology)
    energies = []
    for replace in (False, True):
        if replace:
            assert use_native_obc2(system)
            assert any(isinstance(f, openmm.GBSAOBCForce) for f in system.getForces())
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(completed.positions)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy()._value)
    assert energies[1] == pytest.approx(energies[0], abs=0.01)


def test_config_and_order(parents):
    config = load_config(TINY)
    assert config.protocol.n_frames == 2 and config.protocol.steps_per_save == 200
    with pytest.raises(BackmapInputError, match="unknown"):
        load_config(dict(TINY, temperature=300))
    with pytest.raises(BackmapInputError, match="multiple"):
        load_config(dict(TINY, stage_ps=1.0, save_ps=0.3))
    cache = open_cache(parents / "cache")
    order = [e.entry_id for e in select_structures(cache, config)]
    assert order == ["trp__short", "trp__full", "trp__overlap"]  # smallest first
    assert [e.entry_id for e in select_structures(cache, config, shard=(1, 2))] == ["trp__full"]


def test_inverted_chirality_is_caught(parents):
    from backmap_plugin.training.augment import _frame_checks, structure_input

    cache = open_cache(parents / "cache")
    start = structure_input(cache, next(e for e in cache.entries if e.entry_id == "trp__full"))
    frame = start.protein.scatter(start.reference)
    rmsd, d_frames, d_start = _frame_checks(start, np.stack([frame, frame * [-1.0, 1.0, 1.0]]))
    assert d_start == 0 and d_frames[0] == 0
    assert d_frames[1] == sum(name != "GLY" for name in start.protein.names)  # the mirror image
    assert rmsd[0] < 1e-3


def test_augment_resume_failure_and_append(parents, tmp_path):
    cache_dir, out = parents / "cache", tmp_path / "aug"

    class Interrupt(Exception):
        pass

    def stop_after_first(log):
        raise Interrupt(log["entry_id"])

    # 1. a run interrupted after its first structure keeps that structure
    with pytest.raises(Interrupt):
        run_augmentation(cache_dir, out, TINY, platform=PLATFORM, on_structure=stop_after_first)
    first = out / FRAMES_DIR / f"{augment_id('trp__short')}.pdb.gz"
    assert first.is_file() and read_logs(out)[augment_id("trp__short")]["status"] == "done"
    stamp = first.stat().st_mtime_ns

    # 2. the rerun skips it, finishes the rest and reports the system that cannot run
    summary = run_augmentation(cache_dir, out, TINY, platform=PLATFORM)
    assert (summary.skipped, summary.done, summary.failed) == (1, 1, 1)
    assert first.stat().st_mtime_ns == stamp
    assert [f["entry_id"] for f in summary.failures] == [augment_id("trp__overlap")]
    assert summary.failures[0]["stage"] in ("minimise", "dynamics")
    assert "trp__overlap" in (out / "failures.csv").read_text()
    assert (summary.total_done, summary.total_frames) == (2, 4)

    # logs: finite energies and temperatures for every saved frame
    log = read_logs(out)[augment_id("trp__full")]
    assert log["n_frames"] == 2 and [f["temperature_k"] for f in log["frames"]] == [400.0, 500.0]
    # 0.4 ps per stage is too short to equilibrate: the kinetic temperature was measured at 0.66-0.71 of the
    # target (263-270 K at 400 K, 339-348 K at 500 K; CPU runs are not bit-reproducible); a thermostat 20 %
    # off, or a wrong unit, falls outside these bounds
    for frame in log["frames"]:
        ratio = frame["kinetic_temperature_k"] / frame["temperature_k"]
        assert np.isfinite(frame["potential_kj_mol"]) and 0.55 < ratio < 0.85, ratio
        assert frame["d_residues"] == 0 and frame["ca_rmsd_angstrom"] < 1.6  # measured 0.50-0.67 A
    assert log["frames"][0]["kinetic_temperature_k"] < log["frames"][1]["kinetic_temperature_k"]
    # output: heavy atoms only, two models, the parent's residues
    frames = out / log["output"]
    with gzip.open(frames, "rt") as handle:
        text = handle.read()
    assert text.count("MODEL") == 2
    elements = {line[76:78].strip() for line in text.splitlines() if line.startswith("ATOM")}
    assert "H" not in elements and {"C", "N", "O"} <= elements

    # 3. nothing left to do; a different recipe is refused
    again = run_augmentation(cache_dir, out, TINY, platform=PLATFORM)
    assert (again.skipped, again.done, again.failed) == (3, 0, 0)
    with pytest.raises(BackmapInputError, match="another recipe"):
        run_augmentation(cache_dir, out, dict(TINY, seed=8), platform=PLATFORM)

    # 4. appended to the cache: kind md-aug, the parent's cluster and split
    status = backmap_main(["data", "augment", str(cache_dir), "--config", str(out / "config.json"), "-o", str(out),
                           "--platform", PLATFORM, "--append", "--quiet", "--workers", "1"])
    assert status == 0
    entries = {e.entry_id: e for e in open_cache(cache_dir).entries}
    assert len(entries) == 5
    for parent in ("trp__short", "trp__full"):
        aug = entries[augment_id(parent)]
        assert aug.kind == AUG_KIND and aug.n_frames == 2
        assert (aug.cluster30, aug.split) == (entries[parent].cluster30, entries[parent].split)
    assert json.loads((out / "summary.json").read_text())["total_clusters"] == 1
    assert not any(p.name.startswith(".") for p in (out / FRAMES_DIR).iterdir())
    assert sorted(p.name for p in (out / LOGS_DIR).iterdir()) == sorted(
        f"{augment_id(p)}.json" for p in ("trp__short", "trp__full", "trp__overlap"))


def test_shards_share_one_folder(parents, tmp_path):
    """Two shards running side by side in one folder: the manifest lists both shards' structures."""
    import subprocess
    import sys

    out = tmp_path / "aug"
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    command = [sys.executable, "-m", "backmap_plugin.cli", "data", "augment", str(parents / "cache"), "--config", str(config), "-o", str(out),
               "--platform", PLATFORM, "--quiet"]
    shards = [subprocess.Popen(command + ["--shard", f"{k}/2"], stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    for shard in shards:
        assert shard.wait(timeout=300) == 0, shard.stderr.read()
    manifest = (out / "manifest.csv").read_text()
    assert augment_id("trp__short") in manifest and augment_id("trp__full") in manifest
    assert augment_id("trp__overlap") in (out / "failures.csv").read_text()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_append_simulates_nothing(parents, tmp_path):
    """``--append`` adds the frames already made and starts no structure of its own."""
    import shutil

    cache_dir, out = tmp_path / "cache", tmp_path / "aug"
    shutil.copytree(parents / "cache", cache_dir)
    before = [e.kind for e in open_cache(cache_dir).entries]  # other tests may have appended to it
    run_augmentation(cache_dir, out, TINY, platform=PLATFORM, max_structures=1)
    status = backmap_main(["data", "augment", str(cache_dir), "--config", str(out / "config.json"), "-o", str(out),
                           "--platform", PLATFORM, "--append", "--quiet", "--workers", "1"])
    assert status == 0
    assert list(read_logs(out)) == [augment_id("trp__short")]
    kinds = [e.kind for e in open_cache(cache_dir).entries]
    assert kinds.count(AUG_KIND) == before.count(AUG_KIND) + 1 and len(kinds) == len(before) + 1
