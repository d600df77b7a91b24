"""OpenMM refinement of backmapped structures (real OpenMM, CPU/Reference platform)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

pytest.importorskip("openmm")
pytest.importorskip("pdbfixer")

from backmap_plugin.api import backmap  # noqa: E402
from backmap_plugin.cli import refine as refine_cli  # noqa: E402
from backmap_plugin.cli import validate as validate_cli
from backmap_plugin.cli.command import main as backmap_main  # noqa: E402
from backmap_plugin.core import metrics  # noqa: E402
from backmap_plugin.core.errors import BackmapInputError, CutShortWarning  # noqa: E402
from backmap_plugin.io.loaders import pdb_model_boxes  # noqa: E402
from backmap_plugin.openmm.platforms import select_platform  # noqa: E402
from backmap_plugin.openmm.refine import refine_structure  # noqa: E402
from backmap_plugin.openmm.structure import create_disulfide_bonds, read_structure  # noqa: E402
from backmap_plugin.openmm.validate import validate_frames  # noqa: E402

EXAMPLE_CA = Path(__file__).resolve().parents[1] / "examples" / "trpcage_ca.pdb"
#: A frame of the real CALVADOS 3 TIA1 run backmapped by the centre-of-mass model (tests/data/README.md)
TIA1_FRAME = Path(__file__).resolve().parent / "data" / "tia1_calvados3_frame_aa.pdb.gz"
#: C-alpha trace of residues 6P-38P and 1-13 of train loopmodel__1deu (tests/data/README.md)
PROPEPTIDE = Path(__file__).resolve().parent / "data" / "1deu_ca_propeptide.pdb.gz"


def _heavy(traj: md.Trajectory) -> md.Trajectory:
    return traj.atom_slice(traj.topology.select("not element H"))


def _heavy_clashes(traj: md.Trajectory) -> np.ndarray:
    heavy = _heavy(traj)
    bonds = np.array([[b[0].index, b[1].index] for b in heavy.topology.bonds])
    return metrics.clashes(heavy.xyz * 10.0, bonds)


@pytest.fixture(scope="module")
def backmapped(tmp_path_factory) -> Path:
    """The example C-alpha trace backmapped with the ideal builder."""
    path = tmp_path_factory.mktemp("refine") / "trpcage_aa.pdb"
    backmap(str(EXAMPLE_CA), str(path), method="ideal", progress=False)
    return path


@pytest.fixture(scope="module")
def refined(backmapped):
    """Default refinement (amber14, electrostatics screened by a dielectric of 4) of the backmapped trp-cage."""
    output = backmapped.with_name("trpcage_refined.pdb")
    result = refine_structure(backmapped, output, platform="CPU", progress=False)
    return backmapped, output, result


def test_refine_removes_clashes_and_adds_hydrogens(refined):
    source, output, result = refined
    frame = result.frames[0]
    assert frame["clashes_after"] == 0
    assert frame["converged"]
    assert frame["energy_after_finite"]
    assert frame["energy_after_kj_mol"] < frame["energy_before_kj_mol"]
    # the minimum found is a low-energy structure in implicit solvent as well, and validates clean: the ideal
    # builder's raw output has clashscore 52.6 (hydrogens added), the refined frame 0.0 (measured)
    topology, frames = read_structure(str(output))
    checked = validate_frames(topology, frames, solvent="gbn2", platform="CPU").frames[0]
    assert checked["energy_kj_mol"] < -2000.0
    assert checked["clashscore"] < 3.5  # one clash would be 3.3 per 304 atoms
    assert checked["heavy_clashes"] == checked["bond_outliers"] == checked["angle_outliers"] == 0
    assert checked["twisted_peptides"] == 0
    assert frame["rmsd_shift_angstrom"] < 0.6
    assert frame["max_bond_strain_angstrom"] < 0.2
    out = md.load(str(output))
    n_h = sum(1 for a in out.topology.atoms if a.element.symbol == "H")
    assert n_h > 100  # 150 hydrogens on trp-cage at pH 7
    assert _heavy_clashes(out)[0] == 0
    assert not any(p.name.endswith(".partial.pdb") for p in output.parent.iterdir())


def test_refine_json_report_is_consistent(refined):
    source, output, result = refined
    report_path = output.parent / (output.name + ".json")
    assert result.report_path == str(report_path)
    report = json.loads(report_path.read_text())
    assert report["all_converged"] is True
    assert report["settings"]["force_field"] == ["amber14-all.xml", "Coulomb / 4 (screened)"]
    assert len(report["frames"]) == 1
    frame = report["frames"][0]
    assert frame == result.frames[0]  # JSON floats round-trip exactly
    # the reported shift matches the files (heavy atoms, same order, no superposition)
    before = md.load(str(source))
    after = _heavy(md.load(str(output)))
    assert after.n_atoms == before.n_atoms
    rmsd = metrics.rmsd_no_superposition(after.xyz * 10.0, before.xyz * 10.0)[0]
    assert rmsd == pytest.approx(frame["rmsd_shift_angstrom"], abs=0.01)
    assert frame["clashes_before"] == _heavy_clashes(before)[0]


def _rotate_into_clash(traj: md.Trajectory, residue_index: int) -> tuple[md.Trajectory, int]:
    """Rotate a side chain about CA-CB to the angle with the most heavy-atom clashes."""
    residue = traj.topology.residue(residue_index)
    names = {a.name: a.index for a in residue.atoms}
    moving = [a.index for a in residue.atoms if a.name not in ("N", "CA", "C", "O", "CB", "OXT")]
    bonds = np.array([[b[0].index, b[1].index] for b in traj.topology.bonds])
    x0 = traj.xyz[0].astype(np.float64) * 10.0
    axis_origin = x0[names["CB"]]
    k = axis_origin - x0[names["CA"]]
    k /= np.linalg.norm(k)
    best, best_xyz = -1, None
    for angle in np.radians(np.arange(0, 360, 10)):
        v = x0[moving] - axis_origin
        rotated = v * np.cos(angle) + np.cross(k, v) * np.sin(angle) + np.outer(v @ k, k) * (1 - np.cos(angle))
        x = x0.copy()
        x[moving] = axis_origin + rotated
        count = metrics.clashes(x, bonds)[0]
        if count > best:
            best, best_xyz = count, x
    out = traj[:1]
    out.xyz = (best_xyz / 10.0)[None].astype(np.float32)
    return out, int(best)


def test_refine_survives_overlapping_side_chains(backmapped, tmp_path):
    traj = md.load(str(backmapped))
    trp = next(r.index for r in traj.topology.residues if r.name == "TRP")
    clashing, n_clashes = _rotate_into_clash(traj, trp)
    assert n_clashes >= 15  # the Trp ring sits inside its neighbours
    source = tmp_path / "clashing.pdb"
    clashing.save(str(source))
    # counted again on the file as written: PDB's 0.001 A columns can move a pair across 2.0 A
    saved = md.load(str(source))
    bonds = np.array([[b[0].index, b[1].index] for b in saved.topology.bonds])
    n_clashes = int(metrics.clashes(saved.xyz[0].astype(np.float64) * 10.0, bonds)[0])
    result = refine_structure(source, tmp_path / "out.pdb", solvent="vacuum", platform="CPU", progress=False)
    frame = result.frames[0]
    assert frame["clashes_before"] == n_clashes
    assert frame["energy_before_kj_mol"] is None or frame["energy_before_kj_mol"] > 1e6
    assert frame["energy_after_finite"] and frame["energy_after_kj_mol"] < 0.0
    assert frame["clashes_after"] == 0
    assert frame["max_bond_strain_angstrom"] < 0.2  # no bond threaded through a ring
    assert frame["converged"]


def _d_residues(path) -> int:
    traj = md.load(str(path))
    index = [[next((a.index for a in r.atoms if a.name == name), -1) for r in traj.topology.residues]
             for name in ("N", "CA", "C", "CB")]
    return metrics.count_d_residues(traj.xyz * 10.0, *index)


def test_refine_keeps_every_c_alpha_chirality(tmp_path):
    """In this frame ARG168's guanidinium sits in ASP102's backbone (17 clashes); the soft-core stage
    pushes ILE167's C-beta through its N-CA-C plane (an L residue made D, bonds unstrained), so the
    structure is minimised directly too and that route, which keeps every residue L, is taken."""
    assert _d_residues(TIA1_FRAME) == 0
    result = refine_structure(TIA1_FRAME, tmp_path / "refined.pdb", platform="CPU", progress=False)
    frame = result.frames[0]
    assert frame["clashes_before"] >= 15
    assert frame["routes_tried"] == ["soft_core", "direct"] and frame["route"] == "direct"
    assert frame["chirality_inverted"] == [] and frame["converged"] and frame["clashes_after"] == 0
    assert _d_residues(tmp_path / "refined.pdb") == 0


def test_non_convergence_is_reported_and_written(backmapped, tmp_path, capsys):
    output = tmp_path / "limited.pdb"
    status = backmap_main([
        "refine", str(backmapped), "-o", str(output), "--steps", "1", "--solvent", "vacuum",
        "--platform", "CPU", "--quiet",
    ])
    assert status == 0
    captured = capsys.readouterr()
    assert "warning: frame 0 did not converge" in captured.err
    assert "iteration limit reached" in captured.err
    assert output.exists()
    report = json.loads((tmp_path / "limited.pdb.json").read_text())  # (the default report: OUTPUT.json)
    frame = report["frames"][0]
    assert frame["converged"] is False
    assert frame["hit_iteration_limit"] is True
    assert report["all_converged"] is False
    assert md.load(str(output)).n_atoms == frame["n_atoms"]


def test_refine_every_model_of_an_ensemble(fixture_pdb, tmp_path):
    models = md.load(str(fixture_pdb))[:2]
    source = tmp_path / "two_models.pdb"
    models.save(str(source))
    output = tmp_path / "two_refined.pdb"
    report = tmp_path / "custom_report.json"
    result = refine_structure(source, output, solvent="vacuum", platform="CPU", report=report, progress=False)
    assert len(result.frames) == 2
    assert [f["frame"] for f in result.frames] == [0, 1]
    assert all(f["converged"] and f["clashes_after"] == 0 for f in result.frames)
    assert all(f["rmsd_shift_angstrom"] < 0.5 for f in result.frames)
    text = output.read_text()
    assert text.count("MODEL") == 2 and text.count("ENDMDL") == 2
    assert md.load(str(output)).n_frames == 2
    assert len(json.loads(report.read_text())["frames"]) == 2


def test_refine_h5_whose_residues_share_numbers(tmp_path):
    """An .h5 holds no insertion codes (GLY 6, 6A and 6B are three glycines numbered 6); PDBFixer read them as
    one ("PDBFixer changed the number of residues"); now they stay apart, with codes, as in the .pdb output."""
    import gzip

    lines = [line for line in gzip.open(PROPEPTIDE, "rt") if line.startswith("ATOM")]
    lines[:3] = [line[:17] + "GLY" + line[20:22] + "   6" + code + line[27:] for line, code in zip(lines[:3], " AB")]
    (tmp_path / "codes.pdb").write_text("".join(lines) + "END\n")
    source = tmp_path / "codes.h5"
    backmap(str(tmp_path / "codes.pdb"), str(source), method="ideal", progress=False)
    result = refine_structure(source, tmp_path / "refined.pdb", solvent="vacuum", platform="CPU",
                              maxIterations=20, progress=False)
    assert len(result.frames) == 1
    ids = [line[22:27] for line in open(tmp_path / "refined.pdb") if line[12:16] == " CA "]
    assert len(ids) == 46 and ids[:4] == ["   6 ", "   6A", "   6B", "   9 "]


def test_refine_keeps_the_pieces_of_a_broken_chain_apart(tmp_path):
    """A chain broken in two (martinize2 -merge, Go models of complexes) is written as two chains of one id, each
    with its TER and OXT; PDBFixer read them as one chain and bonded the ends across the break ("No template found
    for residue ... (VAL) ... externally bonded atoms has 1 C atom too many"). Each piece is refined as its own
    chain now, under the id it came with."""
    lines = [line for line in open(EXAMPLE_CA) if line.startswith("ATOM")]
    moved = [line[:30] + f"{float(line[30:38]) + 25.0:8.3f}" + line[38:] if int(line[22:26]) > 10 else line
             for line in lines]
    (tmp_path / "broken_ca.pdb").write_text("".join(moved) + "END\n")
    source = tmp_path / "broken.pdb"
    backmap(str(tmp_path / "broken_ca.pdb"), str(source), method="ideal", break_distance=10.0, progress=False)
    assert sum(line.startswith("TER") for line in open(source)) == 2
    result = refine_structure(source, tmp_path / "refined.pdb", solvent="vacuum", platform="CPU",
                              maxIterations=20, progress=False)
    assert len(result.frames) == 1
    atoms = [line for line in open(tmp_path / "refined.pdb") if line.startswith("ATOM")]
    assert {line[21] for line in atoms} == {"A"}
    assert [int(line[22:26]) for line in atoms if line[12:16] == " OXT"] == [10, 20]
    assert sum(line.startswith("TER") for line in open(tmp_path / "refined.pdb")) == 2


def test_refine_keeps_chain_ids_and_numbers_that_pdb_cannot_hold(wide_ids_backmapped, tmp_path):
    """mmCIF in, mmCIF out: a chain id of several characters and numbers of five digits stay as they are (the
    structure went to PDBFixer as PDB text, which made them A and serial numbers)."""
    from openmm.app import PDBxFile

    refine_structure(wide_ids_backmapped, tmp_path / "refined.cif", solvent="vacuum", platform="CPU",
                     maxIterations=20, progress=False)
    residues = list(PDBxFile(str(tmp_path / "refined.cif")).topology.residues())
    assert {r.chain.id for r in residues} == {"HEAVY"}
    assert [r.id for r in residues] == [str(10001 + k) for k in range(46)]


def test_refine_missing_input_is_one_line_error(tmp_path, capsys):
    status = backmap_main(["refine", str(tmp_path / "missing.pdb"), "-o", str(tmp_path / "out.pdb")])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("backmap: error:") and "missing.pdb: no such file" in err[0]
    assert not (tmp_path / "out.pdb").exists()


@pytest.mark.parametrize("command", ["refine", "validate", "export"])
def test_an_empty_input_is_named_as_empty(tmp_path, capsys, command):
    """(It was "cannot read structure: list index out of range".)"""
    (tmp_path / "empty.pdb").write_text("")
    status = backmap_main([command, str(tmp_path / "empty.pdb"), "-o", str(tmp_path / "out.pdb")])
    assert status == 2
    assert capsys.readouterr().err.strip() == f"backmap: error: {tmp_path / 'empty.pdb'}: the file is empty"


@pytest.mark.parametrize("command", ["refine", "validate"])
def test_a_frame_with_a_non_finite_coordinate_is_named(backmapped, tmp_path, capsys, command):
    """The atom, residue and frame (it was "the CB-CG bond of A:TRP6 is nan A long ...: the frame's atoms are not
    the topology's")."""
    atoms = [line for line in open(backmapped) if line.startswith("ATOM")]
    bad = [line[:30] + "     nan" + line[38:] if line[12:16] == " CG " and line[22:26] == "   6" else line
           for line in atoms]
    models = [f"MODEL     {k + 1:4d}\n" + "".join(lines) + "ENDMDL\n" for k, lines in enumerate((atoms, bad))]
    (tmp_path / "nan.pdb").write_text("".join(models) + "END\n")
    status = backmap_main([command, str(tmp_path / "nan.pdb"), "-o", str(tmp_path / "out.pdb"), "--no-energy"]
                          if command == "validate" else [command, str(tmp_path / "nan.pdb"), "-o",
                                                         str(tmp_path / "out.pdb"), "--solvent", "vacuum"])
    assert status == 2
    assert capsys.readouterr().err.strip().endswith(
        "nan.pdb: frame 1: atom CG of A:TRP6 has a non-finite coordinate (1 such atom(s) in the frame)")


def test_refine_rejects_bad_output_before_any_work(backmapped, tmp_path, capsys):
    status = backmap_main(["refine", str(backmapped), "-o", str(tmp_path / "out.txt")])
    assert status == 2
    assert "unsupported output file extension" in capsys.readouterr().err
    status = backmap_main(["refine", str(backmapped), "-o", str(tmp_path / "no" / "out.pdb")])
    assert status == 2
    assert "does not exist" in capsys.readouterr().err


def test_refine_keeps_an_existing_output_unless_told(backmapped, tmp_path, capsys):
    """As ``backmap run``: an existing output is replaced only with --overwrite (refine replaced it silently); the
    command's messages name the option alone (they said "pass overwrite=True (--overwrite)"). The default report
    is the output's whole name plus .json: out.cif after out.pdb gets its own (both were out.json, and the second
    refine was refused); a report path given that exists is kept unless told."""
    output = tmp_path / "out.pdb"
    output.write_text("earlier work\n")
    argv = ["refine", str(backmapped), "-o", str(output), "--steps", "1", "--solvent", "vacuum", "--quiet"]
    assert backmap_main(argv) == 2
    err = capsys.readouterr().err
    assert "output file exists; pass --overwrite to replace it" in err and "overwrite=True" not in err
    assert output.read_text() == "earlier work\n"
    assert backmap_main(argv + ["--overwrite"]) == 0 and output.read_text().startswith(("ATOM", "REMARK", "CRYST1"))
    report = tmp_path / "out.pdb.json"
    before = report.read_text()
    assert json.loads(before)["output"].endswith("out.pdb") and not (tmp_path / "out.json").exists()
    argv_cif = ["refine", str(backmapped), "-o", str(tmp_path / "out.cif"), "--steps", "1", "--solvent", "vacuum",
                "--quiet"]
    assert backmap_main(argv_cif) == 0
    assert json.loads((tmp_path / "out.cif.json").read_text())["output"].endswith("out.cif")
    assert report.read_text() == before
    other = ["refine", str(backmapped), "-o", str(tmp_path / "other.pdb"), "--report", str(report), "--quiet"]
    assert backmap_main(other) == 2  # (before any work)
    err = capsys.readouterr().err
    assert f"{report}: the report file exists; pass --overwrite to replace it, or another report path" in err
    assert "overwrite=True" not in err and report.read_text() == before


def _stop_refining_at(monkeypatch, call: int) -> None:
    """Make the ``call``-th frame refinement raise KeyboardInterrupt (Ctrl-C)."""
    from backmap_plugin.openmm import refine as refine_module

    calls = []
    real = refine_module.Refiner.refine

    def stopped(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(refine_module.Refiner, "refine", stopped)


def test_refine_stopped_leaves_the_output_and_its_report_as_they_were(fixture_pdb, tmp_path, monkeypatch):
    """Stopped in its second frame, an --overwrite refine leaves the earlier output and its report as they were
    (the report was the new run's, of one frame, beside the old output); the frames done are reported beside the
    partial output. Refining the output onto its input is refused before any work."""
    source = tmp_path / "two_models.pdb"
    md.load(str(fixture_pdb))[:2].save(str(source))
    output, report = tmp_path / "out.pdb", tmp_path / "out.pdb.json"
    output.write_text("earlier work\n")
    report.write_text("{}")
    _stop_refining_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        refine_structure(source, output, solvent="vacuum", platform="CPU", maxIterations=1, overwrite=True,
                         progress=False)
    assert output.read_text() == "earlier work\n" and report.read_text() == "{}"
    assert len(json.loads((tmp_path / ".out.pdb.json.partial.json").read_text())["frames"]) == 1
    with pytest.raises(BackmapInputError, match="the output is the input file"):
        refine_structure(source, source, platform="CPU", overwrite=True, progress=False)


@pytest.mark.parametrize("name", ["out.xtc", "OUT.DCD"])
def test_refine_to_coordinates_only_says_where_the_topology_is(backmapped, tmp_path, capsys, name):
    """An .xtc (or ``.DCD``) of refined frames (hydrogens added) has no topology anywhere: the command says how to
    get one."""
    argv = ["refine", str(backmapped), "-o", str(tmp_path / name), "--steps", "1", "--solvent", "vacuum",
            "--quiet"]
    assert backmap_main(argv) == 0
    assert "an .xtc / .dcd holds no topology: refine the first model to .pdb for it" in capsys.readouterr().err


def test_refine_says_what_it_added(tmp_path, capsys):
    """A C-alpha trace given to refine is completed by PDBFixer: the command says so (it was silent)."""
    status = backmap_main(["refine", str(EXAMPLE_CA), "-o", str(tmp_path / "out.pdb"), "--quiet", "--steps", "50"])
    assert status == 0
    assert "note: 134 missing heavy atom(s) added (PDBFixer" in capsys.readouterr().err


def test_disulfide_bonds_need_sg_closer_than_2_5_angstrom_in_most_frames():
    from openmm import Vec3, unit
    from openmm.app import Topology, element

    def two_cysteines(distance):
        top = Topology()
        chain = top.addChain("A")
        atoms = []
        for k in range(2):
            residue = top.addResidue("CYS", chain, str(k + 1))
            atoms.append(top.addAtom("CB", element.carbon, residue))
            atoms.append(top.addAtom("SG", element.sulfur, residue))
        top.addBond(atoms[0], atoms[1])
        top.addBond(atoms[2], atoms[3])
        top.addBond(atoms[1], atoms[3])  # as OpenMM's reader makes it up to 3 Angstrom
        # CB, SG of residue 1, then CB, SG of residue 2 with the SG atoms `distance` apart
        xyz = [Vec3(-0.18, 0, 0), Vec3(0, 0, 0), Vec3(distance / 10.0 + 0.18, 0, 0), Vec3(distance / 10.0, 0, 0)]
        return top, unit.Quantity(xyz, unit.nanometer)

    bonded, n = create_disulfide_bonds(*two_cysteines(2.05))
    assert n == 1 and sum(1 for b in bonded.bonds() if b[0].name == b[1].name == "SG") == 1
    loose, n = create_disulfide_bonds(*two_cysteines(2.8))
    assert n == 0 and sum(1 for b in loose.bonds() if b[0].name == b[1].name == "SG") == 0
    assert loose.getNumBonds() == 2
    # a trajectory's disulfides: bonded in at least half of its first frames, then bonded in every frame (the
    # first frame alone decided: a pair apart in it was left free in all, its cysteines pushed apart)
    from backmap_plugin.openmm.refine import trajectory_disulfides

    class Frames:
        def __init__(self, distances):
            self.topology = two_cysteines(2.0)[0]
            self.distances = distances

        def __iter__(self):
            return ((two_cysteines(d)[1], None, None) for d in self.distances)

    assert trajectory_disulfides(Frames([3.5, 2.05, 2.05])) == [(0, 1)]
    assert trajectory_disulfides(Frames([3.5, 3.5, 2.05])) == []
    apart, n = create_disulfide_bonds(*two_cysteines(3.5), pairs=[(0, 1)])
    assert n == 1 and sum(1 for b in apart.bonds() if b[0].name == b[1].name == "SG") == 1


def test_platform_choice():
    platform, properties = select_platform("auto")
    from backmap_plugin.openmm.platforms import available_platforms

    expected = "CUDA" if "CUDA" in available_platforms() else "CPU"
    assert platform.getName() == expected
    assert properties == ({"Precision": "mixed"} if expected == "CUDA" else {})
    assert select_platform("reference")[0].getName() == "Reference"
    with pytest.raises(ValueError, match="not available"):
        select_platform("no-such-platform")


def test_add_parser_registers_refine_and_validate():
    import argparse

    parser = argparse.ArgumentParser(prog="backmap")
    subparsers = parser.add_subparsers(dest="command")
    refine_cli.add_parser(subparsers)
    validate_cli.add_parser(subparsers)
    args = parser.parse_args(["refine", "in.pdb", "-o", "out.pdb", "--restraint-k", "500", "--steps", "10"])
    assert args.func is refine_cli.run and args.restraint_k == 500.0 and args.steps == 10
    assert args.solvent == "screened" and args.platform == "auto"
    args = parser.parse_args(["validate", "in.pdb", "--json", "--strict"])
    assert args.func is validate_cli.run and args.json and args.strict


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory) -> Path:
    """Three frames of the example C-alpha trajectory backmapped with the ideal builder, each in its own box (a
    CRYST1 record before each model, 40, 42 and 44 Angstrom cubes, as a constant-pressure run gives them)."""
    from backmap_plugin.io.trajectory import TrajectoryWriter

    workdir = tmp_path_factory.mktemp("refine_traj")
    ca = md.load(str(EXAMPLE_CA.with_suffix(".dcd")), top=str(EXAMPLE_CA))[::12][:3]
    with TrajectoryWriter(str(workdir / "ca3.pdb"), ca.topology) as writer:
        writer.write(ca.xyz * 10.0, box=np.eye(3, dtype=np.float32) * np.array([40.0, 42.0, 44.0])[:, None, None])
    path = workdir / "aa3.pdb"
    backmap(str(workdir / "ca3.pdb"), str(path), method="ideal", progress=False)
    return path


def test_trajectory_builds_one_system_and_places_hydrogens_by_template(trajectory):
    from openmm import unit

    from backmap_plugin.openmm.refine import Refiner
    from backmap_plugin.openmm.structure import complete_structure, is_hydrogen, positions_to_array, read_structure

    topology, frames = read_structure(trajectory)
    assert len(frames) == 3
    refiner = Refiner(solvent="vacuum", platform="CPU")
    results = [refiner.refine(topology, positions) for positions in frames]
    assert refiner.buildCount == 1  # one System and Context set for all frames
    names = [[(a.residue.name, a.name) for a in top.atoms()] for top, _, _ in results]
    assert names[1] == names[0] and names[2] == names[0]
    assert all(r["converged"] and r["clashes_after"] == 0 for _, _, r in results)
    # hydrogens of a later frame, placed by the template before minimisation: force-field bond lengths
    placed = positions_to_array(refiner._template.complete(frames[2]).positions)
    pairs, lengths = [], []
    for force in refiner.system.getForces():
        if force.__class__.__name__ == "HarmonicBondForce":
            for k in range(force.getNumBonds()):
                i, j, length, _ = force.getBondParameters(k)
                pairs.append((i, j))
                lengths.append(length.value_in_unit(unit.angstrom))
    atoms = list(results[0][0].atoms())
    h_bonds = [k for k, (i, j) in enumerate(pairs) if is_hydrogen(atoms[i]) != is_hydrogen(atoms[j])]
    assert len(h_bonds) > 100
    pairs, lengths = np.array(pairs)[h_bonds], np.array(lengths)[h_bonds]
    measured = np.linalg.norm(placed[pairs[:, 0]] - placed[pairs[:, 1]], axis=1) * 10.0
    assert np.abs(measured - lengths).max() < 0.02
    # same atoms as PDBFixer + addHydrogens would give the frame
    fresh = complete_structure(topology, frames[2], variants=refiner.variants)
    assert [(a.residue.name, a.name) for a in fresh.topology.atoms()] == names[0]


def test_multi_frame_output_matches_frame_by_frame(trajectory, tmp_path):
    together = refine_structure(trajectory, tmp_path / "all.pdb", solvent="vacuum", platform="Reference",
                                progress=False)  # Reference: deterministic sums
    assert together.all_converged and sum(f["clashes_after"] for f in together.frames) == 0
    assert json.loads((tmp_path / "all.pdb.json").read_text())["settings"]["template"] is True
    for path in (trajectory, tmp_path / "all.pdb"):  # each model keeps its box (mdtraj and OpenMM read the last one)
        np.testing.assert_allclose(pdb_model_boxes(str(path), 3)[:, 0, 0], [40.0, 42.0, 44.0])
    heavy_all = _heavy(md.load(str(tmp_path / "all.pdb")))
    models = trajectory.read_text().split("ENDMDL\n")[:-1]  # the same bytes, one model per file
    assert len(models) == 3
    for k, model in enumerate(models):
        single = tmp_path / f"frame{k}.pdb"
        single.write_text(model.split("MODEL", 1)[0] + model[model.index("\n", model.index("MODEL")) + 1 :] + "END\n")
        alone = refine_structure(single, tmp_path / f"out{k}.pdb", solvent="vacuum", platform="Reference",
                                 progress=False)
        heavy_one = _heavy(md.load(str(tmp_path / f"out{k}.pdb")))
        rmsd = metrics.rmsd_no_superposition(heavy_all.xyz[k : k + 1] * 10.0, heavy_one.xyz * 10.0)[0]
        # not tight: PDBFixer + addHydrogens alone give the same frame different hydrogens run to run
        # (0.17 Angstrom heavy-atom RMSD after refinement seen for frame 0), so the bound is that spread
        assert rmsd < 0.3, (k, rmsd)
        assert alone.frames[0]["converged"]


def test_screened_model_divides_coulomb_by_four(refined):
    """``screened``: amber14 with every charge scaled by 1/2 and every 1-4 charge product by 1/4 (Coulomb / 4),
    Lennard-Jones unchanged, nonbonded terms cut off at 1.2 nm (no periodic box)."""
    import openmm

    from backmap_plugin.openmm.systems import SCREENED_CUTOFF_NM, SCREENED_DIELECTRIC, create_system, load_force_field

    topology, _ = read_structure(str(refined[1]))
    systems = {s: create_system(load_force_field(s), topology, s) for s in ("vacuum", "screened")}  # (kept alive)
    forces = {s: next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
              for s, system in systems.items()}
    vacuum, screened = forces["vacuum"], forces["screened"]
    assert SCREENED_DIELECTRIC == 4.0 and SCREENED_CUTOFF_NM == 1.2
    assert screened.getNonbondedMethod() == openmm.NonbondedForce.CutoffNonPeriodic
    assert vacuum.getNonbondedMethod() == openmm.NonbondedForce.NoCutoff
    assert screened.getCutoffDistance()._value == pytest.approx(1.2)
    for i in range(vacuum.getNumParticles()):
        (q0, s0, e0), (q1, s1, e1) = vacuum.getParticleParameters(i), screened.getParticleParameters(i)
        assert q1._value == pytest.approx(q0._value / 2.0) and s1 == s0 and e1 == e0
    for k in range(vacuum.getNumExceptions()):
        (*_, qq0, s0, e0), (*_, qq1, s1, e1) = vacuum.getExceptionParameters(k), screened.getExceptionParameters(k)
        assert qq1._value == pytest.approx(qq0._value / 4.0) and s1 == s0 and e1 == e0


def test_refine_resumes_where_it_stopped(trajectory, tmp_path, monkeypatch):
    """Stopped in its third frame, a refinement keeps the two finished ones with a progress record; a rerun is
    refused without --resume or --overwrite, and with other settings; --resume refines the first frame again (for
    its protonation states and template, not written) and then the third: the output and its report are the
    uninterrupted run's."""
    from backmap_plugin.openmm import refine as refine_module

    options = dict(solvent="vacuum", platform="Reference", progress=False)  # Reference: deterministic sums
    whole = refine_structure(trajectory, tmp_path / "whole.pdb", **options)
    output = tmp_path / "out.pdb"
    real = refine_module.Refiner.refine
    _stop_refining_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        refine_structure(trajectory, output, overwrite=False, **options)
    monkeypatch.undo()
    assert not output.exists() and (tmp_path / ".out.pdb.progress.json").exists()
    earlier = json.loads((tmp_path / ".out.pdb.progress.json").read_text())["tallies"]["seconds"]
    with pytest.raises(BackmapInputError, match="an unfinished run of this output was found"):
        refine_structure(trajectory, output, overwrite=False, **options)
    with pytest.raises(BackmapInputError, match="cannot resume: the unfinished run used tolerance_kj_mol_nm = 20.0"):
        refine_structure(trajectory, output, overwrite=False, resume=True, tolerance=10.0, **options)
    counted = []
    monkeypatch.setattr(refine_module.Refiner, "refine", lambda self, *a, **k: counted.append(1) or real(self, *a, **k))
    started = time.perf_counter()
    resumed = refine_structure(trajectory, output, overwrite=False, resume=True, **options)
    this_run = time.perf_counter() - started
    assert resumed.resumed_from == 2 and len(counted) == 2 and resumed.summary().endswith("; resumed at frame 2")
    # the time is the whole refinement's: the stopped run's up to its second frame (its record) and the resumed one's
    assert earlier > 0 and resumed.seconds_before_resume == earlier
    assert earlier + 0.5 * this_run < resumed.seconds < earlier + this_run
    assert f"in {resumed.seconds:.1f} s ({earlier:.1f} s of them before the resume); resumed at frame 2" \
        in resumed.summary()
    assert output.read_text() == (tmp_path / "whole.pdb").read_text()
    drop = ("seconds",)
    assert [{k: v for k, v in f.items() if k not in drop} for f in resumed.frames] == \
        [{k: v for k, v in f.items() if k not in drop} for f in whole.frames]
    report = json.loads((tmp_path / "out.pdb.json").read_text())
    assert [f["frame"] for f in report["frames"]] == [0, 1, 2]
    assert (report["seconds"], report["seconds_before_resume"], report["resumed_from"]) == \
        (resumed.seconds, earlier, 2)
    assert not (tmp_path / ".out.pdb.progress.json").exists() and not (tmp_path / ".out.pdb.json.partial.json").exists()
    with pytest.raises(BackmapInputError, match="nothing to resume: the output is complete"):
        refine_structure(trajectory, output, overwrite=False, resume=True, **options)


def test_refine_a_trajectory_with_its_topology(trajectory, tmp_path, capsys):
    """`backmap refine traj.xtc --top first.pdb` refines the XTC's frames one by one, as it refines the same
    frames from a multi-model PDB file, boxes included (XTC coordinates are rounded to 0.001 nm)."""
    traj = md.load(str(trajectory))
    traj.unitcell_vectors = pdb_model_boxes(str(trajectory), 3) / 10.0  # (mdtraj reads the last CRYST1 for all)
    traj.time = np.array([10.0, 12.0, 14.0])
    first = tmp_path / "first.pdb"
    traj[0].save(str(first))
    traj.save(str(tmp_path / "aa3.xtc"))
    argv = ["refine", str(tmp_path / "aa3.xtc"), "--top", str(first), "-o", str(tmp_path / "out.h5"),
            "--solvent", "vacuum", "--platform", "Reference", "--quiet"]
    assert backmap_main(argv) == 0, capsys.readouterr().err
    from_pdb = refine_structure(trajectory, tmp_path / "from_pdb.pdb", solvent="vacuum", platform="Reference",
                                progress=False)
    refined, expected = md.load(str(tmp_path / "out.h5")), md.load(str(tmp_path / "from_pdb.pdb"))
    assert refined.n_frames == 3 and refined.n_atoms == expected.n_atoms and from_pdb.all_converged
    heavy = refined.topology.select("not element H")
    rmsd = metrics.rmsd_no_superposition(refined.xyz[:, heavy] * 10.0, expected.xyz[:, heavy] * 10.0)
    # minimised from starts 0.001 nm apart (0.10 Angstrom seen for frame 0); frames out of order would be Angstroms
    assert rmsd.max() < 0.3, rmsd
    np.testing.assert_allclose(refined.unitcell_lengths[:, 0], [4.0, 4.2, 4.4], atol=1e-5)
    np.testing.assert_allclose(refined.time, [10.0, 12.0, 14.0])  # (the frames' times were lost)
    report = json.loads((tmp_path / "out.h5.json").read_text())  # (the command's default report: OUTPUT.json)
    assert report["top"] == str(first) and len(report["frames"]) == 3
    data = (tmp_path / "aa3.xtc").read_bytes()
    (tmp_path / "cut.xtc").write_bytes(data[: len(data) - 100])  # (cut in its last frame)
    argv = ["refine", str(tmp_path / "cut.xtc"), "--top", str(first), "-o", str(tmp_path / "cut.pdb"), "--solvent",
            "vacuum", "--platform", "Reference", "--quiet"]
    assert backmap_main(argv) == 2  # every whole frame refined and written, then the error (the run looked finished)
    err = capsys.readouterr().err
    assert "note: " + str(tmp_path / "cut.xtc") + ": 2 whole frame(s) of the 3 it holds: cut short in a frame?" in err
    assert err.strip().splitlines()[-1].endswith(f"{tmp_path / 'cut.pdb'} holds the 2 frame(s) refined")
    assert md.load(str(tmp_path / "cut.pdb")).n_frames == 2
    assert json.loads((tmp_path / "cut.pdb.json").read_text())["cut_short"].startswith(str(tmp_path / "cut.xtc"))
    with pytest.warns(CutShortWarning, match="cut.xtc: 2 whole frame.*holds the 2 frame"):
        result = refine_structure(tmp_path / "cut.xtc", tmp_path / "api.pdb", top=first, solvent="vacuum",
                                  platform="Reference", progress=False)
    assert result.cut_short and len(result.frames) == 2


def test_refine_says_when_completing_a_large_structure_takes_minutes(backmapped, tmp_path, capsys, monkeypatch):
    """From LARGE_STRUCTURE residues the bar would sit at 0 for minutes in OpenMM's addHydrogens: a line says so."""
    from backmap_plugin.openmm import structure

    monkeypatch.setattr(structure, "LARGE_STRUCTURE", 20)  # (trp-cage: 20 residues)
    refine_structure(backmapped, tmp_path / "out.pdb", solvent="vacuum", platform="CPU", maxIterations=1)
    assert "refine: 20 residues: completing the first frame (PDBFixer, hydrogens) takes minutes" in \
        capsys.readouterr().err
    refine_structure(backmapped, tmp_path / "out.pdb", solvent="vacuum", platform="CPU", maxIterations=1,
                     progress=False)
    assert "completing the first frame" not in capsys.readouterr().err


def test_one_refinement_writes_an_output_at_a_time(backmapped, tmp_path):
    """A second refinement to an output being refined is refused (they replaced each other's partial frames)."""
    from backmap_plugin.io.lock import OutputLock

    output = tmp_path / "out.pdb"
    with OutputLock(output, who="backmap refine"):
        with pytest.raises(BackmapInputError, match="another writer is writing this output"):
            refine_structure(backmapped, output, solvent="vacuum", platform="CPU", maxIterations=1, progress=False)
    assert not output.exists()


def test_a_residue_without_a_template_is_named_as_the_file_names_it(backmapped, tmp_path, capsys):
    """A LEU named ILE: amber14 has no template for it; the error names A:ILE2 (OpenMM says residue 1)."""
    lines = [line[:17] + "ILE" + line[20:] if line.startswith("ATOM") and line[17:26] == "LEU A   2" else line
             for line in backmapped.read_text().splitlines(keepends=True)]
    renamed = tmp_path / "renamed.pdb"
    renamed.write_text("".join(lines))
    argv = ["refine", str(renamed), "-o", str(tmp_path / "out.pdb"), "--solvent", "vacuum", "--quiet"]
    assert backmap_main(argv) == 2
    assert "cannot parametrise the structure: A:ILE2: No template found for residue 1 (ILE)" in \
        capsys.readouterr().err


def test_a_chain_of_one_residue_is_named_with_why_and_what_to_do(tmp_path, capsys):
    """A chain of one residue (the example trace's SER20 as chain B) builds, but amber14 has no template for a free
    amino acid: the error names B:SER20 and says why and what to do (it gave OpenMM's words alone: "No template
    found ... matches CSER, but the residue has 2 H atoms too many")."""
    lines = [line[:21] + "B" + line[22:] if line.startswith("ATOM") and line[17:26] == "SER A  20" else line
             for line in EXAMPLE_CA.read_text().splitlines(keepends=True)]
    (tmp_path / "ca.pdb").write_text("".join(line for line in lines if not line.startswith("TER")))
    backmap(str(tmp_path / "ca.pdb"), str(tmp_path / "aa.pdb"), method="ideal", progress=False)
    argv = ["refine", str(tmp_path / "aa.pdb"), "-o", str(tmp_path / "out.pdb"), "--solvent", "vacuum", "--quiet"]
    assert backmap_main(argv) == 2
    err = capsys.readouterr().err
    assert ("cannot parametrise the structure: B:SER20 is bonded to no other residue: a chain of one residue (or a "
            "piece of one between two breaks), a free amino acid, which amber14 has no template for") in err
    assert "leave it out of the structure, or give it the residues it is bonded to (OpenMM: No template found" in err


#: Real mmCIF rows of PDB 1NCB and 3U7T (tests/data/README.md)
NCB = Path(__file__).resolve().parent / "data" / "1ncb_n81-85_h81-84.cif.gz"
CRAMBIN = Path(__file__).resolve().parent / "data" / "3u7t_20-26_altloc.cif.gz"


def test_refine_names_mmcif_chains_and_conformers_as_run_does(tmp_path, capsys):
    """1NCB's protein and water rows (label ids A, C, H, I, J; author ids N, H, L): refine wrote chains N and H as
    A and C (OpenMM's reader took label ids), run writes N and H. 3U7T's SER/PRO 22 and ILE/LEU 25: refine stopped
    ("amber14 cannot parametrise the structure: A:SER22", OpenMM had put PRO's CG and CD into it); now each residue
    keeps its conformer of highest occupancy, with run's note."""
    import gzip

    lines = gzip.open(NCB, "rt").read().splitlines(keepends=True)
    (tmp_path / "ncb.cif").write_text("".join(line for line in lines if " NAG " not in line and " CA  G " not in line))
    run_out, refine_out = tmp_path / "run.pdb", tmp_path / "refined.pdb"
    backmap(str(tmp_path / "ncb.cif"), str(run_out), method="ideal", progress=False)
    assert backmap_main(["refine", str(tmp_path / "ncb.cif"), "-o", str(refine_out), "--steps", "1", "--solvent",
                         "vacuum", "--platform", "CPU", "--threads", "1", "--quiet"]) == 0

    def chains(path):
        return [c.chain_id for c in md.load(str(path)).topology.chains if c.residue(0).name != "HOH"]

    assert chains(refine_out) == chains(run_out) == ["N", "H"]
    codes = [line[22:27] for line in open(refine_out) if line[12:16] == " CA " and line[21] == "H"]
    assert codes[1:5] == ["  82 ", "  82A", "  82B", "  82C"]
    # written to .h5, which holds no codes: the report says so (refine kept its writer's notes to itself)
    pdb = Path(__file__).resolve().parent / "data" / "1ncb_n81-85_h81-84_protein.pdb.gz"
    result = refine_structure(pdb, tmp_path / "refined.h5", maxIterations=1, solvent="vacuum", platform="CPU",
                              progress=False)
    assert any("3 residue(s) with insertion codes (first: chain H residue ASN 82A) written without them" in note
               for note in result.notes)
    capsys.readouterr()
    assert backmap_main(["refine", str(CRAMBIN), "-o", str(tmp_path / "crambin.pdb"), "--steps", "1", "--solvent",
                         "vacuum", "--platform", "CPU", "--threads", "1"]) == 0
    assert "chain A residue 22: A SER 0.53, B PRO 0.47" in capsys.readouterr().err
    residues = list(md.load(str(tmp_path / "crambin.pdb")).topology.residues)
    assert [r.name for r in residues] == ["GLY", "THR", "SER", "GLU", "ALA", "ILE", "CYS"]


@pytest.mark.parametrize("command", ["refine", "validate", "export"])
def test_bead_files_are_refused_with_a_pointer_to_run(tmp_path, capsys, command):
    """Residue centres of mass named CA (a CALVADOS 3 top.pdb) and Martini beads are no all-atom input: refine,
    validate and export refuse them, naming `backmap run` (they were read as C-alpha atoms and built around, or
    failed in OpenMM's templates); a C-alpha trace is still completed (test_refine_says_what_it_added)."""
    truth = md.load(str(Path(__file__).parent / "data" / "1l2y.pdb.gz"))[0]
    heavy = truth.atom_slice(truth.topology.select("not element H"))
    ca = heavy.atom_slice(heavy.topology.select("name CA"))
    masses = {"C": 12.011, "N": 14.007, "O": 15.999, "S": 32.06}
    beads = []
    for residue in heavy.topology.residues:
        atoms = [a for a in residue.atoms if a.name != "OXT"]
        w = np.array([masses[a.element.symbol] for a in atoms])
        beads.append((heavy.xyz[0, [a.index for a in atoms]] * w[:, None]).sum(0) / w.sum())
    ca.xyz[0] = np.array(beads)
    com_trace = tmp_path / "com_trace.pdb"
    ca.save_pdb(str(com_trace))
    martini = Path(__file__).parent / "data" / "martini3" / "cg.pdb"
    for path, kind in ((com_trace, "not at the C-alpha atoms: residue centres of mass"), (martini, "Martini beads")):
        args = {"refine": ["refine", str(path), "-o", str(tmp_path / f"{command}_{path.stem}"), "--quiet"],
                "validate": ["validate", str(path)],
                "export": ["export", str(path), "-o", str(tmp_path / f"{command}_{path.stem}")]}[command]
        assert backmap_main(args) != 0
        err = capsys.readouterr().err
        assert kind in err and "`backmap run` builds the atoms of beads" in err, err
        assert not (tmp_path / f"{command}_{path.stem}").exists()
