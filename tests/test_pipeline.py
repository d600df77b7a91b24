"""Pipelines: run_pipeline, workflows/pipeline.py, backmap validate -o and the Snakemake workflow.

Everything runs for real (the shipped model, OpenMM on the CPU platform with
few minimiser steps, snakemake in a subprocess) on the shipped examples cut
to one or two frames.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import mdtraj as md
import pytest

pytest.importorskip("openmm")
pytest.importorskip("pdbfixer")

from backmap_plugin.cli.command import main as backmap_main
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.pipeline import RUN_FILES, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EXAMPLE_PDB = EXAMPLES / "trpcage_ca.pdb"
EXAMPLE_DCD = EXAMPLES / "trpcage_ca.dcd"
GMX_XTC = EXAMPLES / "gromacs" / "traj_ca.xtc"
GMX_GRO = EXAMPLES / "gromacs" / "conf_ca.gro"
SNAKEFILE = ROOT / "workflows" / "Snakefile"
SCRIPT = ROOT / "workflows" / "pipeline.py"
#: Minimiser iterations per refinement stage: every stage runs, but briefly (GBn2 costs ~50 ms an iteration on a CPU).
STEPS = 30
HAS_REPORT = importlib.util.find_spec("matplotlib") is not None


def _json(path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _script():
    """``workflows/pipeline.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("workflow_pipeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_run_dir(run_dir: Path, n_structures: int, input: Path, n_chains: int = 1, cwd: Path | None = None) -> None:
    """Every file of a complete run directory is there and the files agree with each other.

    Paths recorded in the JSON files may be relative to ``cwd``, the directory the steps ran in
    (default: this process's working directory).
    """

    def resolved(path) -> Path:
        return ((cwd or Path.cwd()) / path).resolve()

    expected = set(RUN_FILES.values()) if HAS_REPORT else set(RUN_FILES.values()) - {"report.html", "summary.json"}
    present = {p.name for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert expected <= present, f"missing: {expected - present}"
    assert not [p.name for p in run_dir.iterdir() if "partial" in p.name or "progress" in p.name]
    run = _json(run_dir / "backmap.json")
    assert run["n_frames"] * run["n_samples"] == n_structures
    assert resolved(run["input"]) == input.resolve() and run["n_chains"] == n_chains
    backmapped = md.load(str(run_dir / "backmapped.pdb"))
    assert (backmapped.n_frames, backmapped.n_atoms) == (n_structures, run["n_atoms"])
    refined_report = _json(run_dir / "refined.json")
    assert resolved(refined_report["input"]) == (run_dir / "backmapped.pdb").resolve()
    assert [f["frame"] for f in refined_report["frames"]] == list(range(n_structures))
    refined = md.load(str(run_dir / "refined.pdb"))
    assert refined.n_frames == n_structures
    assert refined.n_atoms == refined_report["frames"][0]["n_atoms"] > backmapped.n_atoms  # hydrogens added
    for name, structure in (("backmapped", "backmapped.pdb"), ("refined", "refined.pdb")):
        report = _json(run_dir / f"validate_{name}.json")
        assert resolved(report["input"]) == (run_dir / structure).resolve()
        assert report["n_frames"] == len(report["frames"]) == n_structures
        assert report["passed"] == (not report["failures"])
        assert all(f["energy_kj_mol"] is not None for f in report["frames"])  # energies were computed
    if HAS_REPORT:
        summary = _json(run_dir / "summary.json")
        assert summary["n_frames"] * summary["n_samples"] == n_structures
        assert summary["n_atoms"] == run["n_atoms"]
        assert (run_dir / "report.html").read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")


# ---------------------------------------------------------------- run_pipeline


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """The trp-cage trajectory, two frames (stride 19), through every step."""
    run_dir = tmp_path_factory.mktemp("pipeline") / "trpcage"
    result = run_pipeline(EXAMPLE_DCD, run_dir, top=EXAMPLE_PDB, stride=19, platform="CPU",
                          refine_steps=STEPS, progress=False)
    return run_dir, result


def test_run_pipeline_writes_every_file_consistently(pipeline_run):
    run_dir, result = pipeline_run
    check_run_dir(run_dir, n_structures=2, input=EXAMPLE_DCD)
    written = set(RUN_FILES) if HAS_REPORT else set(RUN_FILES) - {"report", "summary"}
    assert set(result.files) == written
    assert all(Path(path).is_file() for path in result.files.values())
    assert result.skipped == ([] if HAS_REPORT else [result.skipped[0]])
    assert result.backmap.n_frames == 2 and len(result.refine.frames) == 2
    assert result.refine.platform == "CPU"
    assert set(result.validation) == {"backmapped", "refined"}
    assert result.validation["refined"].to_dict() | {"seconds": 0} == (
        _json(run_dir / "validate_refined.json") | {"seconds": 0})
    summary = result.summary()
    assert "refined 2 frame(s)" in summary and str(run_dir) in summary.splitlines()[-1]
    assert summary.splitlines()[1].startswith("output beads vs input beads") and "C-alpha 0.00" in summary


def test_run_pipeline_refuses_a_non_empty_run_dir(pipeline_run):
    run_dir, _ = pipeline_run
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    with pytest.raises(BackmapInputError, match="run directory is not empty") as info:
        run_pipeline(EXAMPLE_PDB, run_dir, progress=False)
    assert str(run_dir) in str(info.value) and "\n" not in str(info.value)
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_run_pipeline_overwrite_removes_results_of_the_earlier_run(pipeline_run, tmp_path):
    earlier, _ = pipeline_run
    run_dir = tmp_path / "again"
    run_dir.mkdir()
    for name in RUN_FILES.values():
        if (earlier / name).exists():
            (run_dir / name).write_bytes((earlier / name).read_bytes())
    (run_dir / "notes.txt").write_text("mine\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_pipeline(EXAMPLE_PDB, run_dir, method="ideal", refine=False, validate=False, report=False,
                              overwrite=True, progress=False)
    assert not [w for w in caught if str(run_dir) in str(w.message)]  # steps switched off on purpose: no warning
    names = {p.name for p in run_dir.iterdir()}
    assert names == {"backmapped.pdb", "backmap.json", "notes.txt"}  # no stale refined/validate/report files
    assert _json(run_dir / "backmap.json")["n_frames"] == 1
    assert set(result.files) == {"backmapped", "backmap_json"}
    assert [line.split(":")[0] for line in result.skipped] == ["refine", "validate", "report"]
    assert result.refine is None and result.validation == {}


def test_run_pipeline_rejects_bad_options_before_any_work(tmp_path):
    run_dir = tmp_path / "bad"
    with pytest.raises(ValueError, match="unknown solvent 'water'"):
        run_pipeline(EXAMPLE_PDB, run_dir, solvent="water", progress=False)
    with pytest.raises(ValueError, match="refine_steps"):
        run_pipeline(EXAMPLE_PDB, run_dir, refine_steps=-1, progress=False)
    # an OpenMM platform that is not there (it failed after the backmapping, the run directory then refused)
    with pytest.raises(ValueError, match="OpenMM platform 'nope' is not available"):
        run_pipeline(EXAMPLE_PDB, run_dir, platform="nope", progress=False)
    assert not run_dir.exists()


# ---------------------------------------------------------------- workflows/pipeline.py


def test_pipeline_script_reports_a_non_empty_run_dir_in_one_line(pipeline_run, capsys):
    run_dir, _ = pipeline_run
    assert _script().main([str(EXAMPLE_PDB), "-o", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pipeline.py: error: ") and str(run_dir) in err[0]


def test_pipeline_script_runs_one_system(tmp_path, capsys):
    run_dir = tmp_path / "run"
    status = _script().main([str(EXAMPLE_PDB), "-o", str(run_dir), "--method", "ideal", "--no-refine",
                             "--no-report", "--platform", "CPU", "--solvent", "vacuum", "--quiet"])
    assert status == 0
    out = capsys.readouterr().out
    assert "validated backmapped: 1 frame(s)" in out and "skipped: refine: not requested" in out
    assert sorted(p.name for p in run_dir.iterdir()) == ["backmap.json", "backmapped.pdb", "validate_backmapped.json"]
    assert _json(run_dir / "validate_backmapped.json")["settings"]["force_field"] == "amber14-all.xml"  # vacuum


# ---------------------------------------------------------------- backmap validate -o


def test_validate_output_writes_the_json_report(pipeline_run, tmp_path, capsys):
    run_dir, _ = pipeline_run
    structure = run_dir / "refined.pdb"
    out = tmp_path / "report.json"
    assert backmap_main(["validate", str(structure), "-o", str(out), "--no-energy"]) == 0
    printed = capsys.readouterr().out
    assert "frame(s):" in printed  # the table still goes to stdout
    written = _json(out)
    assert written["n_frames"] == 2 and written["input"] == str(structure)
    assert backmap_main(["validate", str(structure), "--json", "--no-energy"]) == 0
    assert json.loads(capsys.readouterr().out) | {"seconds": 0} == written | {"seconds": 0}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


def test_validate_output_failures_leave_no_file(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert backmap_main(["validate", str(tmp_path / "nope.pdb"), "-o", str(out)]) == 2
    assert "nope.pdb" in capsys.readouterr().err and not out.exists()
    missing_dir = tmp_path / "no_such_dir" / "report.json"
    assert backmap_main(["validate", str(EXAMPLE_PDB), "-o", str(missing_dir), "--no-energy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing_dir) in err[0] and "does not exist" in err[0]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- Snakemake


def test_snakemake_workflow_runs_two_systems(tmp_path):
    if importlib.util.find_spec("snakemake") is None:
        pytest.skip("snakemake is not installed (pip install backmap_plugin[workflow])")
    config = {
        "results": "results",
        "backmap_command": f"{shlex.quote(sys.executable)} -m backmap_plugin.cli",
        "systems": {
            # one C-alpha structure, the shipped model
            "trpcage": {"input": str(EXAMPLE_PDB)},
            # GROMACS: two chains in a periodic box, first frame only, ideal builder
            "dimer": {"input": str(GMX_XTC), "top": str(GMX_GRO), "stride": 38, "method": "ideal"},
        },
        "refine": {"steps": STEPS, "solvent": "vacuum"},
        "report": {"enabled": HAS_REPORT},
        "platform": "CPU",
        "threads": {"backmap": 1, "refine": 1, "validate": 1, "report": 1},
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--configfile", str(config_path),
               "--directory", str(tmp_path), "-c2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=600)
    logs = "\n".join(f"--- {p}\n{p.read_text()}" for p in sorted(tmp_path.glob("results/*/logs/*.log")))
    assert done.returncode == 0, done.stderr[-4000:] + logs[-4000:]
    results = tmp_path / "results"
    check_run_dir(results / "trpcage", n_structures=1, input=EXAMPLE_PDB, cwd=tmp_path)
    check_run_dir(results / "dimer", n_structures=1, input=GMX_XTC, n_chains=2, cwd=tmp_path)
    assert _json(results / "dimer" / "backmap.json")["method"] == "ideal"
    assert _json(results / "trpcage" / "backmap.json")["method"] == "model"
    settings = _json(results / "trpcage" / "refined.json")["settings"]
    assert settings["max_iterations"] == STEPS and settings["force_field"] == ["amber14-all.xml"]  # vacuum
    assert _json(results / "dimer" / "validate_refined.json")["settings"]["force_field"] == "amber14-all.xml"
    for system in ("trpcage", "dimer"):
        logs = {p.name for p in (results / system / "logs").iterdir()}
        rules = {"backmap", "refine", "validate_backmapped", "validate_refined"} | ({"report"} if HAS_REPORT else set())
        assert logs == {f"{rule}.log" for rule in rules}
    # complete: a second run has nothing to do
    again = subprocess.run(command + ["-n"], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_snakemake_config_typos_and_numeric_names(tmp_path):
    """A misspelt key outside `systems:` (ignored without a word), a quoted "false" (read as true) are refused in
    a dry run, naming the key; a system named 101 runs (it failed with KeyError '101')."""
    if importlib.util.find_spec("snakemake") is None:
        pytest.skip("snakemake is not installed (pip install backmap_plugin[workflow])")
    import yaml  # (snakemake's)

    base = {"results": "results", "systems": {101: {"input": str(EXAMPLE_PDB)}}}
    cases = (
        ({"backmap": {"sampels": 4}}, "config: 'backmap': unknown key(s) sampels; known: device, extra, mapping"),
        ({"refin": {"enabled": False}}, "config: unknown key(s) refin; known: backmap, backmap_command"),
        ({"validate": {"strict": "false"}}, "config: 'validate': strict must be true or false (unquoted), got "
                                            "'false'"),
        ({}, None),
    )
    for extra, message in cases:
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump({**base, **extra}))  # (YAML: the name stays a number)
        command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--configfile", str(config_path),
                   "--directory", str(tmp_path), "-c1", "-n"]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
        if message is None:
            assert done.returncode == 0 and "results/101/backmapped.pdb" in done.stdout, done.stderr[-2000:]
        else:
            assert done.returncode != 0 and message in done.stdout + done.stderr, (extra, done.stderr[-2000:])
