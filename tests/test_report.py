"""``backmap report``: summary.json and the self-contained HTML page of a run directory.

The run directory is made for real from the shipped trp-cage C-alpha
trajectory: backmap (2 frames x 2 samples), refine (vacuum, few iterations, CPU) and
validate, with the file names the pipeline uses.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("openmm")
pytest.importorskip("pdbfixer")

from backmap_plugin import report
from backmap_plugin.api import backmap
from backmap_plugin.cli.command import main as backmap_main
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.openmm.refine import refine_structure
from backmap_plugin.openmm.validate import validate_structure

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG_HEADER = b"\x89PNG\r\n\x1a\n"
REQUIRED = ("backmapped.pdb", "backmap.json")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A complete run directory: backmapped (2 frames x 2 samples), refined and validated (vacuum)."""
    run = tmp_path_factory.mktemp("report") / "trpcage"
    run.mkdir()
    settings = {"input": str(EXAMPLES / "trpcage_ca.dcd"), "top": str(EXAMPLES / "trpcage_ca.pdb"),
                "method": "model", "mapping": "ca", "seed": 0, "temperature": None}
    result = backmap(settings["input"], run / "backmapped.pdb", top=settings["top"], samples=2, stride=19,
                     method=settings["method"], mapping=settings["mapping"], seed=settings["seed"], progress=False)
    info = {**dataclasses.asdict(result), **settings}
    (run / "backmap.json").write_text(json.dumps(info))
    # vacuum and few iterations keep it fast; the report reads whatever the files hold
    refine_structure(run / "backmapped.pdb", run / "refined.pdb", maxIterations=20, platform="CPU",
                     solvent="vacuum", progress=False, report=run / "refined.json")  # (the pipeline's name)
    for name in ("backmapped", "refined"):
        checked = validate_structure(run / f"{name}.pdb", platform="CPU", solvent="vacuum")
        (run / f"validate_{name}.json").write_text(json.dumps(checked.to_dict(), allow_nan=False))
    return run


@pytest.fixture(scope="module")
def cli_report(run_dir) -> tuple:
    """``backmap report RUN_DIR -o report.html`` on the full run directory: (status, HTML path, stdout)."""
    output = run_dir.parent / "report.html"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = backmap_main(["report", str(run_dir), "-o", str(output)])
    return status, output, stdout.getvalue()


def _copy(run_dir: Path, target: Path, names) -> Path:
    target.mkdir()
    for name in names:
        shutil.copy(run_dir / name, target / name)
    return target


def _images(page: str) -> list:
    return re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def _table_rows(page: str) -> int:
    return len(re.findall(r"<tr data-model=", page))


def test_summary_matches_the_files(run_dir):
    summary = report.summarize(run_dir)
    refined = json.loads((run_dir / "refined.json").read_text())
    validated = json.loads((run_dir / "validate_refined.json").read_text())
    assert summary["system"] == "trpcage"
    assert (summary["n_frames"], summary["n_samples"], summary["n_models"]) == (2, 2, 4)
    assert (summary["n_residues"], summary["n_chains"]) == (20, 1)
    assert summary["backmap"]["method"] == "model"
    ref = summary["refinement"]
    assert [m["clashes_before"] for m in ref["models"]] == [f["clashes_before"] for f in refined["frames"]]
    assert [m["clashes_after"] for m in ref["models"]] == [f["clashes_after"] for f in refined["frames"]]
    assert [m["energy_after_kj_mol"] for m in ref["models"]] == [f["energy_after_kj_mol"] for f in refined["frames"]]
    assert [(m["frame"], m["sample"]) for m in ref["models"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert ref["clashes_after_total"] == sum(f["clashes_after"] for f in refined["frames"])
    assert summary["timings_seconds"]["refine"] == pytest.approx(refined["seconds"])
    for which in ("backmapped", "refined"):
        v = summary["validation"][which]
        raw = json.loads((run_dir / f"validate_{which}.json").read_text())
        assert v["n_models"] == 4
        assert v["passed"] == raw["passed"]
        assert v["n_passed"] + v["n_failed"] == 4
        assert sum(v["failing_checks"].values()) == sum(len(m["failed"]) for m in v["models"])
        assert bool(raw["failures"]) == (v["n_failed"] > 0)
    assert [m["heavy_clashes"] for m in summary["validation"]["refined"]["models"]] == [
        f["heavy_clashes"] for f in validated["frames"]]
    diversity = summary["diversity"]["per_frame_rmsd_angstrom"]
    assert len(diversity) == 2 and all(0.0 < d < 5.0 for d in diversity)
    assert summary["ramachandran"]["n_angle_pairs"] == 4 * 18  # 20 residues, termini lack phi or psi
    assert summary["chi"]["PRO"] == 4 * 4  # four prolines per structure
    assert summary["files"]["refined_json"] == str(run_dir / "refined.json")
    json.dumps(summary, allow_nan=False)


def test_write_summary_is_the_summary(run_dir):
    path = report.write_summary(run_dir)
    assert Path(path) == run_dir / "summary.json"
    assert json.loads(Path(path).read_text()) == report.summarize(run_dir)
    assert not list(run_dir.glob(".*partial"))


def test_report_is_self_contained(run_dir, cli_report):
    status, output, _ = cli_report
    assert status == 0
    page = output.read_text()
    assert (run_dir / "summary.json").is_file()
    assert "http://" not in page and "https://" not in page
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page))
    images = _images(page)
    assert len(images) == 4  # refinement, Ramachandran, chi, diversity
    for data in images:
        assert base64.b64decode(data, validate=True).startswith(PNG_HEADER)
    assert _table_rows(page) == 4  # one row per structure (2 frames x 2 samples)
    assert "without superposition" in page


def _section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}</h2>")
    end = page.find("<h2>", start + 1)
    return page[start:end if end > 0 else len(page)]


def test_report_starts_with_the_settings(run_dir, cli_report):
    page = cli_report[1].read_text()
    assert re.findall(r"<h2>([^<]*)</h2>", page)[0] == "Settings"
    settings = _section(page, "Settings")
    info = json.loads((run_dir / "backmap.json").read_text())
    refined = json.loads((run_dir / "refined.json").read_text())
    for label, value in (("input", info["input"]), ("topology", info["top"]), ("mapping", "ca"),
                         ("method", "model"), ("samples per frame", "2"), ("seed", "0"),
                         ("temperature", "method default"), ("max iterations", "20"),
                         ("OpenMM platform", "CPU"), ("force field", "amber14-all.xml"),
                         ("input frames", "every 19th (frame k is input frame k x 19)")):  # (not recorded before)
        assert re.search(rf"<th>{re.escape(label)}</th><td>{re.escape(value)}", settings), label
    assert refined["settings"]["max_iterations"] == 20
    # backmap run --json records the weights, device and version (the shipped model, on the CPU here)
    assert info["model"].endswith("model.pt") and info["device"] == "cpu" and info["version"]
    for label, value in (("model weights", info["model"]), ("device", "cpu"),
                         ("backmap_plugin version", info["version"])):
        assert f"<th>{label}</th><td>{value}</td>" in settings
    assert "Report made with backmap_plugin " in settings


def test_settings_read_when_recorded(run_dir, tmp_path):
    recorded = _copy(run_dir, tmp_path / "recorded", REQUIRED)
    info = json.loads((recorded / "backmap.json").read_text())
    extra = {"model": "weights/v2.pt", "device": "cuda", "version": "9.9.9", "temperature": 0.5}
    (recorded / "backmap.json").write_text(json.dumps({**info, **extra}))
    summary = report.summarize(recorded)
    assert {k: summary["backmap"][k] for k in extra} == extra
    settings = _section(Path(report.write_report(recorded, recorded / "r.html")).read_text(), "Settings")
    for label, value in (("model weights", "weights/v2.pt"), ("device", "cuda"),
                         ("backmap_plugin version", "9.9.9"), ("temperature", "0.5")):
        assert f"<th>{label}</th><td>{value}</td>" in settings
    assert "No refined.json: not refined." in settings
    # what an older backmap.json does not record is said so, not left out
    for key in ("model", "device", "version", "stride"):
        info.pop(key, None)
    (recorded / "backmap.json").write_text(json.dumps(info))
    settings = _section(Path(report.write_report(recorded, recorded / "r.html")).read_text(), "Settings")
    for label in ("model weights", "device", "backmap_plugin version", "input frames"):
        assert f"<th>{label}</th><td>not recorded in backmap.json</td>" in settings


def test_validation_table_fits_the_page(cli_report):
    page = cli_report[1].read_text()
    css = re.search(r"<style>(.*)</style>", page, re.S).group(1)
    assert re.search(r"table\.validation \{[^}]*table-layout: fixed;[^}]*width: 100%", css)
    assert re.search(r"div\.table-wrap \{[^}]*overflow-x: auto", css)
    table = re.search(r'<table id="validation" class="validation">(.*?)</table>', page, re.S).group(1)
    # stages stacked as rows, not side by side: one header row of 18 columns whose widths add up to 100 %
    assert len(re.findall(r"<tr>", table.split("<tbody>")[0])) == 1
    headers = re.findall(r"<th>", table)
    widths = [float(w) for w in re.findall(r'<col style="width:([0-9.]+)%">', table)]
    assert len(headers) == len(widths) == 18 and sum(widths) == pytest.approx(100.0)
    assert min(widths) >= 4.0
    assert len(re.findall(r'<tr data-stage="refined">', table)) == 4
    for title in ("energy (kJ/mol)", "Rama. favoured %", "Rama. outliers", "rotamer outliers %",
                  "C\u03b2 dev. &gt; 0.25 \u00c5", "twisted pep\u00adtides", "clash\u00adscore"):
        assert f"<th>{title}</th>" in table, title
    # every structure row carries a Ramachandran favoured percentage (20-residue trp-cage: 18 scored)
    favoured = re.findall(r'<td class="stage">refined</td>(?:<td[^>]*>[^<]*</td>){8}<td>([0-9.]+)</td>', table)
    assert len(favoured) == 4 and all(0.0 <= float(x) <= 100.0 for x in favoured)


def test_energy_axes_are_linear_in_kj_mol():
    from backmap_plugin.report.plots import refinement_figure

    before = [4270.0, 4766.0, 1.0e6, 3924.0]
    after = [-2661.0, -2675.0, -2646.0, -2673.0]
    models = [{"model": k, "clashes_before": int(b > 1e5), "clashes_after": 0, "energy_before_kj_mol": b,
               "energy_after_kj_mol": a} for k, (b, a) in enumerate(zip(before, after))]
    fig = refinement_figure({"models": models})
    clash, ax_before, ax_after = fig.axes
    for ax, values in ((ax_before, before), (ax_after, after)):
        assert ax.get_yscale() == "linear"
        assert "kJ/mol" in ax.get_ylabel()
    low, high = ax_before.get_ylim()
    assert low < 3924.0 and 4766.0 < high < 1.0e4  # the 1e6 outlier does not flatten the others
    assert any("1,000,000" in t.get_text() for t in ax_before.texts)  # ... it is written out instead
    low, high = ax_after.get_ylim()
    assert low < -2675.0 and -2646.0 < high and high - low < 100.0  # the spread after refinement is readable


def test_bulk_range():
    (low, high), outside = report.bulk_range([4270.0, 4766.0, 1.0e6, 3924.0, np.nan])
    assert outside.tolist() == [False, False, True, False, False]
    assert 3800.0 < low < 3924.0 and 4766.0 < high < 4900.0
    (low, high), outside = report.bulk_range([-2660.0, -2660.0, -2660.0, -2500.0])
    assert not outside.any() and low < -2660.0 and high > -2500.0  # near-equal values stay together
    assert report.bulk_range([np.nan])[0] == (-1.0, 1.0)


def test_report_without_refinement(run_dir, tmp_path):
    partial = _copy(run_dir, tmp_path / "norefine", REQUIRED + ("validate_backmapped.json",))
    summary = report.summarize(partial)
    assert summary["refinement"] is None
    assert summary["validation"]["refined"] is None
    assert summary["files"]["refined_pdb"] is None
    written = report.write_report(partial, partial / "report.html")
    assert Path(written) == partial / "report.html" and (partial / "summary.json").is_file()
    page = Path(written).read_text()
    assert "No refinement in this run" in page
    assert "validate_refined.json not found" in page
    assert len(_images(page)) == 3
    assert _table_rows(page) == 4


def test_reports_of_other_structures_are_left_out(run_dir, tmp_path):
    """A run directory backmapped again (another backmapped.pdb), or whose refinement was stopped (refined.pdb
    gone): the reports made from the structures that were there are left out, with a note, and so is the refined
    structure of the old one (the report showed another protein's validation, and 'refined 4/4 pass' beside 'not
    refined')."""
    again = _copy(run_dir, tmp_path / "again", [p.name for p in run_dir.iterdir() if p.is_file()])
    (again / "backmapped.pdb").write_text("REMARK   1 BACKMAPPED AGAIN\n" + (again / "backmapped.pdb").read_text())
    summary = report.summarize(again)
    assert summary["refinement"] is None and summary["validation"] == {"backmapped": None, "refined": None}
    assert summary["notes"] == [
        "refined.json is left out: it was made from another backmapped.pdb than the one there now (an earlier run)",
        "validate_backmapped.json is left out: it was made from another backmapped.pdb than the one there now (an "
        "earlier run)",
        "validate_refined.json is left out: it was made from another refined.pdb than the one there now (an earlier "
        "run)"]
    stopped = _copy(run_dir, tmp_path / "stopped", REQUIRED + ("validate_backmapped.json", "validate_refined.json"))
    summary = report.summarize(stopped)
    assert summary["validation"]["refined"] is None and summary["validation"]["backmapped"] is not None
    assert summary["notes"] == ["validate_refined.json is left out: it was made from refined.pdb, which is missing"]
    page = Path(report.write_report(stopped, stopped / "report.html")).read_text()
    assert "validate_refined.json is left out: it was made from refined.pdb, which is missing" in page


def test_partial_refinement_is_said_on_the_terminal(run_dir, tmp_path):
    """refined.json of an interrupted refinement (3 of 4 models): the command's line says so (only summary.json and
    the page did)."""
    partial = _copy(run_dir, tmp_path / "partial", REQUIRED + ("refined.json",))
    refined = json.loads((partial / "refined.json").read_text())
    (partial / "refined.json").write_text(json.dumps({**refined, "frames": refined["frames"][:3]}))
    line = report.summary_line(report.summarize(partial))
    assert line.endswith("NOTE refined.json covers 3 of 4 structure(s)"), line


def test_report_with_required_files_only_and_one_sample(run_dir, tmp_path):
    bare = _copy(run_dir, tmp_path / "bare", REQUIRED)
    # the same 4 models read as 4 frames of one sample each
    info = json.loads((bare / "backmap.json").read_text())
    (bare / "backmap.json").write_text(json.dumps({**info, "n_frames": 4, "n_samples": 1}))
    summary = report.summarize(bare)
    assert summary["diversity"]["per_frame_rmsd_angstrom"] is None
    page = Path(report.write_report(bare, bare / "out.html")).read_text()
    assert "One sample per frame" in page
    assert "No validation in this run" in page
    assert len(_images(page)) == 2  # Ramachandran, chi
    assert _table_rows(page) == 0


def test_missing_backmapped_pdb_is_named(run_dir, tmp_path):
    partial = _copy(run_dir, tmp_path / "nopdb", ("backmap.json", "refined.json"))
    with pytest.raises(BackmapInputError, match=r"nopdb: required file backmapped.pdb is missing"):
        report.summarize(partial)
    with pytest.raises(BackmapInputError, match="not found"):
        report.summarize(tmp_path / "nowhere")


def test_inconsistent_backmap_json_is_named(run_dir, tmp_path):
    bad = _copy(run_dir, tmp_path / "bad", REQUIRED)
    info = json.loads((bad / "backmap.json").read_text())
    (bad / "backmap.json").write_text(json.dumps({**info, "n_samples": 3}))
    with pytest.raises(BackmapInputError, match=r"backmapped.pdb: 4 model\(s\), but .*backmap.json gives 2"):
        report.summarize(bad)
    (bad / "backmap.json").write_text("{not json")
    with pytest.raises(BackmapInputError, match=r"backmap.json: not valid JSON"):
        report.summarize(bad)


def test_cli_prints_one_line(cli_report):
    status, output, stdout = cli_report
    lines = stdout.strip().splitlines()
    assert status == 0 and output.is_file()
    assert len(lines) == 1 and lines[0].startswith("report trpcage: 2 frame(s) x 2 sample(s); refined ")
    assert str(output) in lines[0]


def test_write_report_needs_an_existing_directory(run_dir, tmp_path):
    with pytest.raises(BackmapInputError, match="does not exist"):
        report.write_report(run_dir, tmp_path / "no" / "report.html")


def test_a_run_directory_that_cannot_be_written_is_said_before_the_work(run_dir, tmp_path, monkeypatch):
    """Another user's run, read-only: the summary it writes there failed after the work, naming a hidden temporary
    file; now before it, naming the summary and the folder (the root user passes permission bits: os.access says)."""
    import os

    from backmap_plugin.io import paths

    real = os.access
    monkeypatch.setattr(paths.os, "access", lambda path, mode: False if str(path) == str(run_dir) else real(path, mode))
    monkeypatch.setattr(report.html, "collect", lambda *args: pytest.fail("the work began"))
    with pytest.raises(BackmapInputError, match=re.escape(f"cannot write the run's summary: no permission to write "
                                                          f"in {run_dir}")):
        report.write_report(run_dir, tmp_path / "elsewhere.html")


def test_cli_error_is_one_line(tmp_path, capsys):
    assert backmap_main(["report", str(tmp_path), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"backmap: error: {tmp_path}: required file backmapped.pdb is missing"]
    assert not (tmp_path / "x.html").exists()
    # a run directory that does not exist is named as such (the message was about the report's directory)
    assert backmap_main(["report", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"backmap: error: {tmp_path / 'nope'}: run directory not found"


def test_frame_diversity_hand_made():
    base = np.random.default_rng(0).normal(size=(5, 3)) * 3.0
    shift = np.array([1.0, 0.0, 0.0])
    moved = np.stack([base, base + shift, base + 2 * shift])  # pair RMSDs 1, 2, 1
    same = np.stack([base, base, base])
    values = report.frame_diversity(np.stack([moved, same]))
    np.testing.assert_allclose(values, [4.0 / 3.0, 0.0])
    mask = np.array([True, True, False, False, False])
    np.testing.assert_allclose(report.frame_diversity(np.stack([moved]), mask=mask), [4.0 / 3.0])
    np.testing.assert_array_equal(report.frame_diversity(moved[None, :1].repeat(3, axis=0)), np.zeros(3))
    with pytest.raises(ValueError, match="n_frames, n_samples"):
        report.frame_diversity(moved)


def test_angle_histograms():
    counts, edges = report.angle_histogram([-175.0, 185.0, 5.0, np.nan], n_bins=36)
    assert edges[0] == -180.0 and edges[-1] == 180.0 and len(counts) == 36
    assert counts.sum() == 3 and counts[0] == 2 and counts[18] == 1  # 185 wraps to -175
    grid, edges = report.ramachandran_histogram([-60.0, -60.0, 60.0, np.nan], [-45.0, -45.0, 40.0, 0.0], n_bins=4)
    assert grid.shape == (4, 4) and grid.sum() == 3
    assert grid[1, 1] == 2 and grid[2, 2] == 1  # phi bin first, psi bin second
    with pytest.raises(ValueError, match="differ in size"):
        report.ramachandran_histogram([0.0], [0.0, 1.0])
