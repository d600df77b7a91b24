"""The ``backmap`` command: ``backmap run`` end to end, options, stdout/stderr, help."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from backmap_plugin import __version__
from backmap_plugin.cli.command import main
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.topology import ProteinTopology, protein_topology, read_residues

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_PDB = EXAMPLES / "trpcage_ca.pdb"
EXAMPLE_DCD = EXAMPLES / "trpcage_ca.dcd"


def expected_protein(ca_traj: md.Trajectory, break_distance: float = 4.5) -> ProteinTopology:
    """Residue-level topology the output must have, from a CA-only trace (frame 0)."""
    records, _ = read_residues(ca_traj.topology, "expected")
    return protein_topology(records, ca_traj.xyz[0] * 10.0, break_distance)


def assert_complete(out: md.Trajectory, protein: ProteinTopology, n_frames: int) -> None:
    """Every frame, residue (name, number, chain) and heavy atom of ``protein`` is in ``out``."""
    assert (out.n_frames, out.n_residues, out.n_atoms) == (n_frames, protein.n_residues, protein.n_atoms)
    residues = list(out.topology.residues)
    assert [(r.name, r.resSeq) for r in residues] == list(zip(protein.names, protein.res_seq.tolist()))
    for i, residue in enumerate(residues):
        want = chem.residue_atom_names(protein.names[i], bool(protein.c_terminal[i]))
        assert tuple(a.name for a in residue.atoms) == tuple(want), protein.labels[i]
    assert np.isfinite(out.xyz).all()


def run_cli(capfd, *argv) -> tuple[int, str, str]:
    """``backmap *argv`` in this process; (exit status, stdout, stderr) at file-descriptor level."""
    status = main([str(a) for a in argv])
    captured = capfd.readouterr()
    return status, captured.out, captured.err


def ca_xyz(traj: md.Trajectory) -> np.ndarray:
    """C-alpha coordinates in Angstrom."""
    return traj.xyz[:, traj.topology.select("name CA")] * 10.0


@pytest.fixture(scope="module")
def example():
    """The shipped CA-only example: trajectory (38 frames) and expected topology."""
    traj = md.load(str(EXAMPLE_DCD), top=str(EXAMPLE_PDB))
    return traj, expected_protein(traj)


@pytest.fixture(scope="module")
def short_dcd(example, tmp_path_factory):
    """The first 4 frames of the example trajectory."""
    path = tmp_path_factory.mktemp("short") / "short_ca.dcd"
    example[0][:4].save_dcd(str(path))
    return path


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"backmap_plugin {__version__}"


def test_run_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text
    assert "backmap run examples/trpcage_ca.pdb -o" in text
    for option in ("--top", "--mapping", "--samples", "--stride", "--chunk", "--break-distance", "--debug"):
        assert option in text


def _subcommands(parser, prefix=("backmap",)):
    """(command words, parser) of every subcommand, nested groups included."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subcommands(sub, (*prefix, name))


def test_every_subcommand_help_shows_an_example():
    from backmap_plugin.cli.command import build_parser

    found = dict(_subcommands(build_parser()))
    assert {"run", "refine", "validate", "export", "report", "data", "train"} <= {words[1] for words in found}
    for words, sub in found.items():
        help_text = sub.format_help()
        assert "example:" in help_text, " ".join(words)
        assert " ".join(words) in help_text.split("example:", 1)[1], " ".join(words)


def test_every_parser_takes_long_options_only_in_full():
    from backmap_plugin.cli.command import build_parser

    parser = build_parser()
    found = dict(_subcommands(parser))
    assert parser.allow_abbrev is False
    assert [" ".join(words) for words, sub in found.items() if sub.allow_abbrev] == []


@pytest.mark.parametrize("argv, said", [
    (["run", EXAMPLE_PDB, "--out", "aa.pdb"], "backmap run: error: the following arguments are required: -o/--output"),
    (["run", EXAMPLE_PDB, "-o", "aa.pdb", "--over"], "backmap: error: unrecognized arguments: --over"),
    (["data", "info", "cache", "--deb"], "backmap: error: unrecognized arguments: --deb"),
])
def test_abbreviated_long_options_are_refused(tmp_path, capsys, monkeypatch, argv, said):
    """``--out`` is not taken for ``--output`` (nor ``--over`` for ``--overwrite``): an option added later would
    change what such a command line means. argparse's usual error, exit status 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code == 2
    assert said in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_python_m_backmap_plugin_is_the_command():
    """``python -m backmap_plugin`` runs the ``backmap`` command (as ``python -m backmap_plugin.cli``)."""
    proc = subprocess.run([sys.executable, "-m", "backmap_plugin", "run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "backmap run: error: the following arguments are required: input" in proc.stderr


def test_console_script_end_to_end(tmp_path, capfd, example):
    """The installed ``backmap`` command: summary alone on stdout, progress on stderr; its torch import
    (compiler front end left out, core/torch_import.py) gives the same structures as this process."""
    script = shutil.which("backmap", path=os.path.dirname(sys.executable)) or shutil.which("backmap")
    if script is None:
        pytest.skip("the backmap console script is not installed")
    out = tmp_path / "aa.xtc"
    proc = subprocess.run(
        [script, "run", str(EXAMPLE_DCD), "--top", str(EXAMPLE_PDB), "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("backmapped 38 frame(s) x 1 sample(s), 20 residues"), proc.stdout
    assert lines[0].endswith("ms per structure)") and str(out) in lines[0]
    assert "backmap:" in proc.stderr and "frame" in proc.stderr  # the progress bar
    assert "Traceback" not in proc.stderr
    traj, protein = example
    written = md.load(str(out), top=protein.to_mdtraj())
    assert_complete(written, protein, 38)
    here = tmp_path / "here.xtc"
    assert run_cli(capfd, "run", EXAMPLE_DCD, "--top", EXAMPLE_PDB, "-o", here)[0] == 0
    np.testing.assert_array_equal(written.xyz, md.load(str(here), top=protein.to_mdtraj()).xyz)


def test_run_ca_pdb(tmp_path, capfd, example):
    out = tmp_path / "aa.pdb"
    status, stdout, stderr = run_cli(capfd, "run", EXAMPLE_PDB, "-o", out)
    assert status == 0
    assert stdout.count("\n") == 1 and stdout.startswith("backmapped 1 frame(s) x 1 sample(s), 20 residues in 1 chain(s)")
    assert "backmap" in stderr
    assert "method: model (model.pt, shipped)" in stderr.splitlines()  # what built it, beside the mapping line
    # C-alpha beads: the model puts every C-alpha atom on its bead
    assert "beads: output beads vs input beads, RMSD in A (median over structures): C-alpha 0.00 (worst 0.00, frame 0)" \
        in stderr.splitlines()
    traj, protein = example
    back = md.load(str(out))
    assert_complete(back, protein, 1)
    assert [c.chain_id for c in back.topology.chains] == ["A"]
    assert [a.name for a in list(back.topology.residues)[-1].atoms][-1] == "OXT"
    np.testing.assert_allclose(ca_xyz(back)[0], ca_xyz(md.load(str(EXAMPLE_PDB)))[0], atol=2e-3)


def test_run_reads_ent_as_pdb(tmp_path, capfd, example):
    """``backmap run`` takes a wwPDB ``.ent`` / ``.ent.gz`` file as the PDB text it is (refine already did)."""
    ent = tmp_path / "trpcage_ca.ent.gz"
    with open(EXAMPLE_PDB, "rb") as src, gzip.open(ent, "wb") as dst:
        dst.write(src.read())
    out = tmp_path / "aa.pdb"
    status, stdout, stderr = run_cli(capfd, "run", ent, "-o", out, "--quiet")
    assert status == 0, stderr
    assert stdout.startswith("backmapped 1 frame(s) x 1 sample(s), 20 residues in 1 chain(s)")
    np.testing.assert_allclose(ca_xyz(md.load(str(out)))[0], ca_xyz(md.load(str(EXAMPLE_PDB)))[0], atol=2e-3)


def test_run_upper_case_pdb_to_upper_case_pdb(tmp_path, capfd, example):
    """``backmap run TRPCAGE_CA.PDB -o OUT.PDB``: the names Windows programs write are the formats of their
    lower-case twins, and the messages name the files as given."""
    upper = tmp_path / "TRPCAGE_CA.PDB"
    shutil.copy(EXAMPLE_PDB, upper)
    out = tmp_path / "OUT.PDB"
    status, stdout, stderr = run_cli(capfd, "run", upper, "-o", out, "--quiet")
    assert status == 0, stderr
    assert stdout.startswith("backmapped 1 frame(s) x 1 sample(s), 20 residues") and f"-> {out} " in stdout
    assert sorted(os.listdir(tmp_path)) == ["OUT.PDB", "TRPCAGE_CA.PDB"]
    assert out.read_text().startswith(("ATOM", "CRYST1", "MODEL", "REMARK"))
    shutil.copy(out, tmp_path / "twin.pdb")
    back = md.load(str(tmp_path / "twin.pdb"))
    assert_complete(back, example[1], 1)
    np.testing.assert_allclose(ca_xyz(back)[0], ca_xyz(md.load(str(EXAMPLE_PDB)))[0], atol=2e-3)


@pytest.mark.parametrize("source, top, output", [
    (EXAMPLE_DCD, EXAMPLE_PDB, "OUT.DCD"),
    (EXAMPLES / "gromacs" / "traj_ca.xtc", EXAMPLES / "gromacs" / "conf_ca.gro", "OUT.XTC"),
])
def test_run_reads_an_upper_case_trajectory(tmp_path, capfd, source, top, output):
    """``backmap run TRAJ.DCD --top TOP.PDB`` (``TRAJ.XTC --top TOP.GRO``) writes the structures that the
    lower-case names give, in the format of the output's extension."""
    upper = tmp_path / f"TRAJ{source.suffix.upper()}"
    upper_top = tmp_path / f"TOP{top.suffix.upper()}"
    shutil.copy(source, upper)
    shutil.copy(top, upper_top)
    lower_out = tmp_path / output.lower()
    assert run_cli(capfd, "run", source, "--top", top, "-o", lower_out, "--method", "ideal", "--quiet")[0] == 0
    status, stdout, stderr = run_cli(capfd, "run", upper, "--top", upper_top, "-o", tmp_path / output,
                                     "--method", "ideal", "--quiet")
    assert status == 0, stderr
    assert stdout.startswith("backmapped 38 frame(s)") and f"-> {tmp_path / output} " in stdout
    reader = {"OUT.DCD": md.formats.DCDTrajectoryFile, "OUT.XTC": md.formats.XTCTrajectoryFile}[output]
    with reader(str(tmp_path / output)) as got, reader(str(lower_out)) as want:  # (a DCD header has the time)
        np.testing.assert_array_equal(got.read()[0], want.read()[0])


def test_run_ca_dcd_with_top_every_frame(tmp_path, capfd, example):
    out = tmp_path / "aa.pdb"
    status, stdout, stderr = run_cli(capfd, "run", EXAMPLE_DCD, "--top", EXAMPLE_PDB, "-o", out)
    assert status == 0
    # the DCD reader's C-level chatter goes to stderr, not into the summary stream
    assert stdout.splitlines() == [stdout.strip()] and stdout.startswith("backmapped 38 frame(s)")
    assert "dcdplugin" not in stdout
    traj, protein = example
    back = md.load(str(out))
    assert_complete(back, protein, 38)
    np.testing.assert_allclose(ca_xyz(back), ca_xyz(traj), atol=2e-3)


def test_threads_option(tmp_path, capfd, restored_threads):
    import torch

    torch.set_num_threads(2)
    status, _, _ = run_cli(capfd, "run", EXAMPLE_PDB, "-o", tmp_path / "aa.pdb", "--threads", "1")
    assert status == 0 and torch.get_num_threads() == 1
    assert os.environ["OPENMM_CPU_THREADS"] == "1"  # for refine / validate, whose OpenMM loads later
    with pytest.raises(SystemExit):
        main(["run", str(EXAMPLE_PDB), "-o", str(tmp_path / "b.pdb"), "--threads", "0"])
    assert "argument --threads: must be at least 1, got 0" in capfd.readouterr().err


def test_quiet_has_no_progress_bar(tmp_path, capfd):
    status, stdout, stderr = run_cli(capfd, "run", EXAMPLE_PDB, "-o", tmp_path / "aa.pdb", "--quiet")
    assert status == 0 and stdout.startswith("backmapped")
    assert "frame/s" not in stderr


def test_samples_are_frame_major(tmp_path, capfd, short_dcd, example):
    one, three = tmp_path / "one.dcd", tmp_path / "three.dcd"
    assert run_cli(capfd, "run", short_dcd, "--top", EXAMPLE_PDB, "-o", one, "--method", "ideal")[0] == 0
    status, stdout, stderr = run_cli(capfd, "run", short_dcd, "--top", EXAMPLE_PDB, "-o", three, "--samples", "3",
                                     "--method", "ideal")
    assert status == 0 and "backmapped 4 frame(s) x 3 sample(s)" in stdout
    assert "note: the 3 samples of a frame are the same structure: the ideal builder is deterministic" in stderr
    traj, protein = example
    top = protein.to_mdtraj()
    single = md.load(str(one), top=top).xyz
    multi = md.load(str(three), top=top).xyz
    assert multi.shape[0] == 12
    ca_in = ca_xyz(traj[:4])
    ca_out = multi[:, top.select("name CA")] * 10.0
    for k in range(12):  # output frames 0, 1, 2 are samples of input frame 0, ...
        np.testing.assert_allclose(ca_out[k], ca_in[k // 3], atol=1e-3)
        # the ideal method is deterministic: every sample is the one-sample structure
        np.testing.assert_allclose(multi[k], single[k // 3], atol=1e-6)


def test_stride_and_chunk_give_the_same_structures(tmp_path, capfd, example):
    big, chunked, every = tmp_path / "big.dcd", tmp_path / "chunked.dcd", tmp_path / "every.dcd"
    common = (EXAMPLE_DCD, "--top", EXAMPLE_PDB, "--quiet")
    assert run_cli(capfd, "run", *common, "-o", big, "--stride", "5")[0] == 0
    status, stdout, _ = run_cli(capfd, "run", *common, "-o", chunked, "--stride", "5", "--chunk", "7")
    assert status == 0 and "backmapped 8 frame(s)" in stdout  # frames 0, 5, ..., 35
    assert run_cli(capfd, "run", *common, "-o", every, "--chunk", "3")[0] == 0
    traj, protein = example
    top = protein.to_mdtraj()
    a = md.load(str(big), top=top).xyz
    b = md.load(str(chunked), top=top).xyz
    c = md.load(str(every), top=top).xyz
    assert a.shape[0] == b.shape[0] == 8 and c.shape[0] == 38
    np.testing.assert_allclose(b, a, atol=1e-5)
    np.testing.assert_allclose(c[::5], a, atol=1e-5)
    np.testing.assert_allclose(ca_xyz(md.load(str(big), top=top)), ca_xyz(traj[::5]), atol=1e-3)


def test_break_distance_option(tmp_path, capfd, example):
    traj, _ = example
    xyz = traj.xyz[:1].copy()
    xyz[:, 10:] += np.float32([0.8, 0.0, 0.0])  # an 8 Angstrom gap
    cg = tmp_path / "gap.pdb"
    md.Trajectory(xyz, traj.topology).save_pdb(str(cg))
    status, stdout, _ = run_cli(capfd, "run", cg, "-o", tmp_path / "split.pdb")
    assert status == 0 and "1 chain(s) / 2 segment(s)" in stdout
    status, stdout, _ = run_cli(capfd, "run", cg, "-o", tmp_path / "joined.pdb", "--break-distance", "20")
    assert status == 0 and "1 chain(s) / 1 segment(s)" in stdout


def test_notes_go_to_stderr(tmp_path, capfd, example):
    """Dropped residues (water here) are reported on stderr; stdout keeps the summary alone."""
    traj, _ = example
    top = traj.topology.copy()
    water = top.add_residue("HOH", top.add_chain("W"), resSeq=100)
    top.add_atom("O", md.element.oxygen, water)
    xyz = np.concatenate([traj.xyz[:1], np.full((1, 1, 3), 5.0, np.float32)], axis=1)
    cg = tmp_path / "water.pdb"
    md.Trajectory(xyz, top).save_pdb(str(cg))
    status, stdout, stderr = run_cli(capfd, "run", cg, "-o", tmp_path / "aa.pdb", "--quiet")
    assert status == 0
    assert stdout.startswith("backmapped 1 frame(s) x 1 sample(s), 20 residues in 1 chain(s)")
    assert "note: dropped 1 non-protein residue(s) HOH" in stderr


@pytest.mark.parametrize("argv, kept", [
    (["data", "augment", "cache", "--config", "c.json", "-o", "aug"], "finished files and structures are kept"),
    (["export", "in.pdb", "-o", "out.gro"], None),
    (["refine", "in.pdb", "-o", "out.pdb"], "the refined frames so far are in a hidden .partial file"),
    (["refine", "in.pdb", "-o", "none.pdb"], "no frame was finished: nothing is kept"),
    (["run", "in.pdb", "-o", "none.xtc"], "no frame was finished: nothing is kept"),
])
def test_interrupt_says_what_is_kept(monkeypatch, capsys, tmp_path, argv, kept):
    """Ctrl-C: exit status 130 and a line about what the interrupted command keeps (nothing claimed for others;
    a run or refine stopped before its first frame said its frames were kept)."""
    import backmap_plugin.api as api
    import backmap_plugin.cli.export as export_cli
    import backmap_plugin.openmm.refine as refine
    import backmap_plugin.training.augment as augment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(augment, "run_augmentation", interrupted)
    monkeypatch.setattr(export_cli, "run", interrupted)
    monkeypatch.setattr(refine, "refine_structure", interrupted)
    monkeypatch.setattr(api, "backmap", interrupted)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".out.pdb.partial.pdb").write_text("MODEL        1\n")  # (refine's frames so far)
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("backmap: interrupted")
    assert (kept in err) if kept else err == "backmap: interrupted"


def test_mapping_martini3_option(tmp_path, capfd):
    """``--mapping martini3`` reads Martini 3 beads (the real martinize2 file) and refuses a C-alpha trace."""
    martini = Path(__file__).resolve().parent / "data" / "martini3" / "cg.pdb"
    out = tmp_path / "aa.pdb"
    assert main(["run", str(martini), "-o", str(out), "--mapping", "martini3", "--quiet", "--json", str(tmp_path / "r.json")]) == 0
    assert md.load(str(out)).topology.n_residues == 71
    # the output mapped back lies on the martinize2 beads, backbone and side-chain beads reported apart
    fit = json.loads((tmp_path / "r.json").read_text())["bead_rmsd"]
    assert set(fit) == {"BB", "SC"} and fit["BB"]["median"] < 0.3 and fit["SC"]["median"] < 0.3, fit
    assert "beads: output beads vs input beads" in capfd.readouterr().err
    assert main(["run", str(EXAMPLE_PDB), "-o", str(tmp_path / "x.pdb"), "--mapping", "martini3", "--quiet"]) == 2  # bad input
    assert "no Martini protein beads" in capfd.readouterr().err
    assert not (tmp_path / "x.pdb").exists()


def test_run_json_never_replaces_an_input_or_the_output(tmp_path, capfd):
    """``--json`` naming the input, the topology or the output is refused before any work, naming both files;
    an existing summary is replaced only with --overwrite, as refine's report."""
    cg = tmp_path / "ca.pdb"
    shutil.copy(EXAMPLE_PDB, cg)
    out = tmp_path / "aa.pdb"
    for json_path, role in ((cg, "input"), (out, "output")):
        status, _, err = run_cli(capfd, "run", cg, "-o", out, "--json", json_path, "--quiet")
        assert status == 2 and f"{json_path}: the run summary would overwrite the {role} file" in err
    assert cg.read_bytes() == EXAMPLE_PDB.read_bytes() and not out.exists()
    summary = tmp_path / "run.json"
    summary.write_text("keep")
    status, _, err = run_cli(capfd, "run", cg, "-o", out, "--json", summary, "--quiet")
    assert status == 2 and "run.json: the run summary file exists; pass --overwrite" in err and not out.exists()
    assert summary.read_text() == "keep"
    assert run_cli(capfd, "run", cg, "-o", out, "--json", summary, "--quiet", "--overwrite")[0] == 0
    assert json.loads(summary.read_text())["output"] == str(out)


def test_run_json_dash_is_standard_output(tmp_path, capfd, monkeypatch):
    """``--json -``: the summary as JSON on stdout (alone), the summary line on stderr; no file named '-'."""
    monkeypatch.chdir(tmp_path)
    status, out, err = run_cli(capfd, "run", EXAMPLE_PDB, "-o", tmp_path / "aa.pdb", "--json", "-", "--quiet")
    assert status == 0 and json.loads(out)["output"] == str(tmp_path / "aa.pdb")
    assert "backmapped 1 frame(s)" in err and not (tmp_path / "-").exists()


@pytest.mark.parametrize("argv, role", [
    (["validate", "aa.pdb", "--reference", "ref.pdb", "--no-energy", "-o", "ref.pdb"], "--reference"),
    (["validate", "aa.pdb", "--top", "ref.pdb", "--no-energy", "-o", "ref.pdb"], "--top"),
    (["refine", "aa.pdb", "-o", "r.pdb", "--report", "aa.pdb", "--overwrite"], "input"),
    (["refine", "aa.pdb", "-o", "r.pdb", "--report", "r.pdb", "--overwrite"], "output"),
])
def test_report_never_replaces_a_file_the_command_reads(tmp_path, capfd, monkeypatch, argv, role):
    """``validate -o`` and ``refine --report`` naming a file the command reads or writes: refused, both named."""
    monkeypatch.chdir(tmp_path)
    for name in ("aa.pdb", "ref.pdb"):
        shutil.copy(EXAMPLE_PDB, tmp_path / name)
    status, _, err = run_cli(capfd, *argv)
    assert status == 2 and f"the report would overwrite the {role} file" in err, err
    assert (tmp_path / "aa.pdb").read_bytes() == (tmp_path / "ref.pdb").read_bytes() == EXAMPLE_PDB.read_bytes()
    assert not (tmp_path / "r.pdb").exists()


def test_the_command_names_options_where_the_api_names_keywords(tmp_path, capsys):
    """The Python API names a flag by its keyword (``pass overwrite=True``), the command by its option (``pass
    --overwrite``): both said "pass overwrite=True (--overwrite)"; the command says so of messages still written
    that way too (refine's report, export's folder), and of ``resume=True``."""
    import argparse

    from backmap_plugin.cli.command import call
    from backmap_plugin.cli.options import in_option_words
    from backmap_plugin.core.errors import BackmapInputError
    from backmap_plugin.pipeline import _prepare_run_dir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine\n")
    with pytest.raises(BackmapInputError, match=r"not empty; choose a new one or pass overwrite=True$"):
        _prepare_run_dir(str(run_dir), False)
    assert call(lambda args: _prepare_run_dir(str(run_dir), False), argparse.Namespace()) == 2
    assert capsys.readouterr().err == (f"backmap: error: {run_dir}: run directory is not empty; choose a new one or "
                                       "pass --overwrite\n")
    assert in_option_words("r.json: the report file exists; pass overwrite=True to replace it") == (
        "r.json: the report file exists; pass --overwrite to replace it")
    assert in_option_words("pass resume=True to continue it or overwrite=True to start over") == (
        "pass --resume to continue it or --overwrite to start over")
