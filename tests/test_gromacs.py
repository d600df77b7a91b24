"""GROMACS interoperability: .gro chains, export to GROMACS and OpenMM, ``backmap export``.

The GROMACS checks run the real ``gmx`` (Debian package ``gromacs``, which
``.ci/run`` installs) and are skipped when it is not on PATH: ``gmx grompp``
must accept the exported topology and coordinates with a minimal mdp and a
zero-step ``gmx mdrun`` must run; its bonded energies must equal amber14's in
OpenMM for the same coordinates.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from backmap_plugin.cli.command import main as backmap_main
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.gromacs.export import export
from backmap_plugin.io.chains import chain_starts, split_chains

GMX = shutil.which("gmx")
needs_gmx = pytest.mark.skipif(GMX is None, reason="GROMACS (gmx) is not on PATH; apt-get install gromacs")

#: Zero-step run in a periodic box: vacuum (plain cut-off) or solvated (PME).
#: Cut-offs of 1 nm stay below half of the exported boxes (>= 2 nm padding).
MDP = """integrator      = md
nsteps          = 0
cutoff-scheme   = Verlet
pbc             = xyz
coulombtype     = {coulomb}
rcoulomb        = 1.0
rvdw            = 1.0
constraints     = none
"""


def _gmx(args, cwd):
    run = subprocess.run([GMX, "-quiet", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"gmx {args[0]} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


def _grompp_and_mdrun(out_dir, coulomb="Cut-off") -> dict:
    """grompp + a zero-step mdrun of an exported directory; returns its energies (kJ/mol) by name."""
    (out_dir / "run.mdp").write_text(MDP.format(coulomb=coulomb))
    _gmx(["grompp", "-f", "run.mdp", "-c", "conf.gro", "-p", "topol.top", "-o", "run.tpr"], out_dir)
    _gmx(["mdrun", "-s", "run.tpr", "-deffnm", "run", "-nt", "1"], out_dir)
    log = (out_dir / "run.log").read_text()
    # the energies block: lines of names and lines of values, 15 characters per field
    block = log.split("   Energies (kJ/mol)\n", 1)[1].split("\n\n", 1)[0].splitlines()
    energies = {}
    for names, values in zip(block[0::2], block[1::2]):
        for k in range(0, len(values), 15):
            energies[names[k:k + 15].strip()] = float(values[k:k + 15])
    return energies


def _openmm_bonded_energies(out_dir) -> dict:
    """amber14 bonded energies (kJ/mol) in OpenMM of conf.gro, topology read from topol.top."""
    import openmm
    from openmm import app

    gro = app.GromacsGroFile(str(out_dir / "conf.gro"))
    top = app.GromacsTopFile(str(out_dir / "topol.top"), periodicBoxVectors=gro.getPeriodicBoxVectors())
    system = app.ForceField("amber14-all.xml").createSystem(top.topology, constraints=None)
    names = {"HarmonicBondForce": "Bond", "HarmonicAngleForce": "Angle", "PeriodicTorsionForce": "Dihedrals"}
    for i, force in enumerate(system.getForces()):
        force.setForceGroup(i)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(gro.getPositions())
    return {
        names[type(f).__name__]: context.getState(energy=True, groups={i}).getPotentialEnergy()._value
        for i, f in enumerate(system.getForces()) if type(f).__name__ in names
    }


# ---------------------------------------------------------------- chains of .gro files


def test_chain_starts_from_residue_numbers():
    assert chain_starts([1, 2, 3, 1, 2, 5, 4, 99998, 99999, 0, 1, 9999, 0]).tolist() == [
        True, False, False, True, False, False, True, False, False, False, False, False, False
    ]
    # equal numbers are residues a file without insertion codes numbers alike (54, 54A, 54B)
    assert chain_starts([53, 54, 54, 54, 55]).tolist() == [True, False, False, False, False]
    assert chain_starts([]).tolist() == []


def test_gro_chains_from_numbering_restarts(fixture_pdb, tmp_path):
    traj = md.load(str(fixture_pdb))[0]
    ca = traj.atom_slice(traj.topology.select("name CA"))
    two = md.Trajectory(np.concatenate([ca.xyz, ca.xyz + 3.0], axis=1), ca.topology.join(ca.topology),
                        unitcell_lengths=[[6.0, 6.0, 6.0]], unitcell_angles=[[90.0, 90.0, 90.0]])
    two.save_gro(str(tmp_path / "two.gro"))
    read = md.load(str(tmp_path / "two.gro")).topology
    assert read.n_chains == 1  # what mdtraj makes of a .gro file
    split = split_chains(read)
    assert [c.chain_id for c in split.chains] == ["A", "B"]
    assert [c.n_residues for c in split.chains] == [20, 20]
    assert [a.name for a in split.atoms] == [a.name for a in read.atoms]
    assert [r.resSeq for r in split.residues] == [r.resSeq for r in read.residues]
    assert split.n_bonds == read.n_bonds


# ---------------------------------------------------------------- export


@needs_gmx
def test_export_to_gromacs_runs_in_gromacs(fixture_pdb, tmp_path):
    result = export(fixture_pdb, tmp_path / "gmx")
    assert sorted(os.path.basename(f) for f in result.files) == ["conf.gro", "topol.top"]
    assert result.n_atoms == 304 and result.n_residues == 20 and result.n_waters == 0
    assert "input has 38 models; exported the first" in result.notes
    assert min(result.box) > 2.0
    gromacs = _grompp_and_mdrun(tmp_path / "gmx")
    assert math.isfinite(gromacs["Potential"])
    gromacs["Dihedrals"] = gromacs["Proper Dih."] + gromacs["Per. Imp. Dih."]
    openmm_energies = _openmm_bonded_energies(tmp_path / "gmx")
    assert sorted(openmm_energies) == ["Angle", "Bond", "Dihedrals"]
    for term, value in openmm_energies.items():
        assert gromacs[term] == pytest.approx(value, rel=1e-4, abs=0.05), term
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging directory left
    assert "partial" not in (tmp_path / "gmx" / "topol.top").read_text()  # ParmEd's header named the staging dir


@needs_gmx
def test_export_solvated_to_gromacs_runs_in_gromacs(fixture_pdb, tmp_path):
    result = export(fixture_pdb, tmp_path / "wet", water="tip3p", padding=0.6)
    assert result.n_waters > 100
    assert "[ settles ]" in (tmp_path / "wet" / "topol.top").read_text()
    assert math.isfinite(_grompp_and_mdrun(tmp_path / "wet", coulomb="PME")["Potential"])


def test_solvated_export_counts_the_protein_chains(fixture_pdb, tmp_path):
    """With water, the line counts the structure's residues and chains, and the waters and ions apart (OpenMM puts
    the water and the ions in chains of their own: trp-cage came out '... residues in 3 chain(s)')."""
    result = export(fixture_pdb, tmp_path / "wet", to="openmm", water="tip3p", padding=0.5)
    assert f"(20 residues in 1 chain(s), {result.n_waters} waters, 1 ions, box " in result.summary()
    assert (result.n_residues, result.n_chains, result.n_ions) == (20, 1, 1)  # trp-cage is +1: one Cl-
    model = md.load_topology(str(tmp_path / "wet" / "model.pdb"))
    assert model.n_residues == 20 + result.n_waters + 1 and model.n_chains == 3
    assert ", vacuum, box" in export(fixture_pdb, tmp_path / "dry", to="openmm").summary()


def test_export_to_openmm_loads_and_has_finite_energy(fixture_pdb, tmp_path):
    import openmm
    from openmm.app import PDBFile

    result = export(fixture_pdb, tmp_path / "omm", to="openmm")
    names = sorted(os.path.basename(f) for f in result.files)
    assert names == ["model.pdb", "state.xml", "system.xml"]
    system = openmm.XmlSerializer.deserialize((tmp_path / "omm" / "system.xml").read_text())
    state = openmm.XmlSerializer.deserialize((tmp_path / "omm" / "state.xml").read_text())
    pdb = PDBFile(str(tmp_path / "omm" / "model.pdb"))
    assert system.getNumParticles() == pdb.topology.getNumAtoms() == result.n_atoms == 304
    assert any(a.element.symbol == "H" for a in pdb.topology.atoms())
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setState(state)
    energy = context.getState(energy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    assert math.isfinite(energy)

    # a structure with hydrogens keeps them
    again = export(tmp_path / "omm" / "model.pdb", tmp_path / "omm2", to="openmm")
    assert again.n_atoms == 304 and "input hydrogens kept" in again.notes
    np.testing.assert_allclose(PDBFile(str(tmp_path / "omm2" / "model.pdb")).getPositions(asNumpy=True)._value,
                               pdb.getPositions(asNumpy=True)._value, atol=2e-4)

    # ... unless the force field cannot use them (here: OXT missing): then the structure is completed
    lines = (tmp_path / "omm" / "model.pdb").read_text().splitlines(keepends=True)
    (tmp_path / "no_oxt.pdb").write_text("".join(line for line in lines if " OXT " not in line))
    completed = export(tmp_path / "no_oxt.pdb", tmp_path / "omm3", to="openmm")
    assert completed.n_atoms == 304
    assert any(n.startswith("input hydrogens dropped and rebuilt") for n in completed.notes)
    assert "1 missing heavy atom(s) added" in completed.notes


#: Real 1NCB protein rows (tests/data/README.md): chains N (81-85) and H (81, 82, 82A, 82B, 82C, 83, 84).
NCB = Path(__file__).resolve().parent / "data" / "1ncb_n81-85_h81-84_protein.pdb.gz"
NCB_IDS = ["81", "82", "83", "84", "85", "81", "82", "82A", "82B", "82C", "83", "84"]


def _top_residue_ids(path, atom: str = "CA") -> list:
    """The resnr of each ``atom`` row of the ``[ atoms ]`` sections of a GROMACS topology, in order."""
    ids, section = [], None
    for line in open(path):
        fields = line.split(";")[0].split()
        if line.lstrip().startswith("["):
            section = line.strip().strip("[]").strip()
        elif section == "atoms" and len(fields) > 4 and fields[4] == atom:
            ids.append(fields[2])
    return ids


def test_export_keeps_residue_numbers_and_insertion_codes(tmp_path, capsys):
    """Real 1NCB rows: ParmEd numbered conf.gro's residues 1-12 and each chain's in topol.top from 1 (chain H's 81,
    82, 82A ... came out 6, 7, 8 ... and 1, 2, 3 ...). topol.top holds the input's numbers and insertion codes
    (resnr 82A, as pdb2gmx writes them); conf.gro, which holds no codes, the numbers; model.pdb both."""
    assert backmap_main(["export", str(NCB), "-o", str(tmp_path / "gmx")]) == 0
    assert _top_residue_ids(tmp_path / "gmx" / "topol.top") == NCB_IDS
    gro = (tmp_path / "gmx" / "conf.gro").read_text().splitlines()[2:-1]
    assert [line[:5].strip() for line in gro if line[10:15].strip() == "CA"] == [i.rstrip("ABC") for i in NCB_IDS]
    assert ("note: conf.gro: 3 residue(s) with insertion codes (first H:ASN82A) written with their numbers alone (a "
            ".gro holds none); topol.top keeps the codes") in capsys.readouterr().err
    export(NCB, tmp_path / "omm", to="openmm")
    model = [line for line in open(tmp_path / "omm" / "model.pdb") if line[12:16] == " CA "]
    assert [line[22:27].strip() for line in model] == NCB_IDS


def test_export_says_when_identical_chains_share_numbers(tmp_path):
    """Chain H of 1NCB and a copy of it numbered from 181 (and moved 3 nm) are one molecule type of topol.top, whose
    numbers are chain H's: the note says so; conf.gro keeps each chain's numbers."""
    import gzip

    rows = [line for line in gzip.open(NCB, "rt") if line.startswith("ATOM") and line[21] == "H"]
    copy = [f"{line[:21]}K{int(line[22:26]) + 100:4d}{line[26:30]}{float(line[30:38]) + 30:8.3f}{line[38:]}"
            for line in rows]
    (tmp_path / "dimer.pdb").write_text("".join(rows + ["TER\n"] + copy + ["TER\nEND\n"]))
    result = export(tmp_path / "dimer.pdb", tmp_path / "gmx")
    assert ("topol.top: chains of the same atoms share a molecule type, and so its residue numbers (chain K as H); "
            "conf.gro keeps each chain's") in result.notes
    assert _top_residue_ids(tmp_path / "gmx" / "topol.top") == NCB_IDS[5:]
    gro = (tmp_path / "gmx" / "conf.gro").read_text().splitlines()[2:-1]
    assert [line[:5].strip() for line in gro if line[10:15].strip() == "CA"][7:] == [
        "181", "182", "182", "182", "182", "183", "184"]


@needs_gmx
def test_gromacs_reads_the_exported_insertion_codes(tmp_path):
    """The run input GROMACS makes of the export numbers chain H's residues 82, 82A, 82B, 82C as the input does."""
    export(NCB, tmp_path / "gmx")
    (tmp_path / "gmx" / "run.mdp").write_text(MDP.format(coulomb="Cut-off"))
    _gmx(["grompp", "-f", "run.mdp", "-c", "conf.gro", "-p", "topol.top", "-o", "run.tpr"], tmp_path / "gmx")
    _gmx(["editconf", "-f", "run.tpr", "-o", "run.pdb"], tmp_path / "gmx")
    model = [line for line in open(tmp_path / "gmx" / "run.pdb") if line[12:16] == " CA "]
    assert [line[22:27].strip() for line in model] == NCB_IDS


def test_existing_output_directory_is_refused(fixture_pdb, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BackmapInputError, match="output directory exists"):
        export(fixture_pdb, out, to="openmm")
    assert os.listdir(out) == ["keep.txt"]
    export(fixture_pdb, out, to="openmm", overwrite=True)
    assert sorted(os.listdir(out)) == ["keep.txt", "model.pdb", "state.xml", "system.xml"]
    (tmp_path / "file").write_text("")
    with pytest.raises(BackmapInputError, match="not a directory"):
        export(fixture_pdb, tmp_path / "file", overwrite=True)
    with pytest.raises(ValueError, match="unknown export target"):
        export(fixture_pdb, tmp_path / "x", to="amber")
    with pytest.raises(ValueError, match="unknown water model"):
        export(fixture_pdb, tmp_path / "x", water="tip9p")


# ---------------------------------------------------------------- backmap export


def test_cli_errors_are_one_line(fixture_pdb, tmp_path, capsys):
    assert backmap_main(["export", str(tmp_path / "missing.pdb"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("backmap: error: ") and "no such file" in err and err.count("\n") == 1
    (tmp_path / "o").mkdir()
    assert backmap_main(["export", str(fixture_pdb), "--to", "openmm", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "output directory exists" in err and "--overwrite" in err and err.count("\n") == 1
    assert backmap_main(["export", str(fixture_pdb), "--forcefield", "nope.xml", "-o", str(tmp_path / "p")]) == 2
    assert "cannot load force field nope.xml" in capsys.readouterr().err
    # CHARMM36's NBFIX and Urey-Bradley terms are forces ParmEd drops on the way to GROMACS: refused, nothing written
    assert backmap_main(["export", str(fixture_pdb), "--forcefield", "charmm36.xml", "-o", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "cannot write this force field's system to GROMACS without dropping terms" in err and "CustomNonbondedForce" in err
    assert not (tmp_path / "c").exists()


def test_cli_refuses_a_trajectory_without_asking_for_top(tmp_path, capsys):
    """A trajectory given to export (which has no --top) is refused as one, before the output folder is made: the
    error asked for --top, which export then refused as an unrecognised argument."""
    example = Path(__file__).resolve().parents[1] / "examples" / "trpcage_ca.dcd"
    assert backmap_main(["export", str(example), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "a .dcd trajectory holds no topology, and export takes one structure" in err and "--top" not in err
    assert err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_cli_exports(fixture_pdb, tmp_path, capsys):
    rc = backmap_main(["export", str(fixture_pdb), "--to", "openmm", "-o", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    assert rc == 0 and out.startswith("exported 304 atoms") and "note: input has 38 models" in err
    assert sorted(os.listdir(tmp_path / "o")) == ["model.pdb", "state.xml", "system.xml"]


def test_export_says_when_completing_a_large_structure_takes_minutes(fixture_pdb, tmp_path, capsys, monkeypatch):
    """From LARGE_STRUCTURE residues OpenMM's addHydrogens works for minutes without a word: export says so first,
    with refine's line (its own name and what it completes), and not with progress=False."""
    from backmap_plugin.gromacs import export as export_module
    from backmap_plugin.openmm import structure

    monkeypatch.setattr(structure, "LARGE_STRUCTURE", 20)  # (trp-cage: 20 residues)
    said_before = []
    complete = export_module._with_hydrogens

    def completing(*args):
        said_before.append(capsys.readouterr().err)
        return complete(*args)

    monkeypatch.setattr(export_module, "_with_hydrogens", completing)
    assert backmap_main(["export", str(fixture_pdb), "--to", "openmm", "-o", str(tmp_path / "o")]) == 0
    line = "export: 20 residues: completing the structure (PDBFixer, hydrogens) takes minutes at this size"
    assert line in said_before[0]
    export(fixture_pdb, tmp_path / "quiet", to="openmm", progress=False)
    assert "completing the structure" not in said_before[1] + capsys.readouterr().err


def test_merged_residues_split_into_the_runs_they_hold():
    """A residue whose atoms run BB SC1 BB SC1 is two residues; BB BB (two glycines, or one bead listed twice)
    only for files without insertion codes; an atom listed twice inside a run is never split."""
    from backmap_plugin.io.chains import split_merged_residues

    top = md.Topology()
    chain = top.add_chain("A")
    for name, number, beads in (("THR", 1, ["BB", "SC1"]), ("ALA", 2, ["BB", "SC1", "BB", "SC1"]),
                                ("GLY", 3, ["BB", "BB"]), ("LYS", 4, ["BB", "SC1", "SC1", "SC2"])):
        residue = top.add_residue(name, chain, resSeq=number)
        for bead in beads:
            top.add_atom(bead, md.element.carbon, residue)
    top.add_bond(top.atom(0), top.atom(2))
    split, merged = split_merged_residues(top)
    assert [r.name for r in merged] == ["ALA"]
    assert [(r.name, r.resSeq, [a.name for a in r.atoms]) for r in split.residues] == [
        ("THR", 1, ["BB", "SC1"]), ("ALA", 2, ["BB", "SC1"]), ("ALA", 2, ["BB", "SC1"]), ("GLY", 3, ["BB", "BB"]),
        ("LYS", 4, ["BB", "SC1", "SC1", "SC2"])]
    assert [a.name for a in split.atoms] == [a.name for a in top.atoms] and split.n_bonds == 1
    split, merged = split_merged_residues(top, single_atoms=True)
    assert [r.name for r in merged] == ["ALA", "GLY"] and split.n_residues == 6
    same, merged = split_merged_residues(split)
    assert same is split and merged == []


def test_export_to_openmm_says_what_model_pdb_cannot_hold(wide_ids_backmapped, tmp_path):
    """A chain id of several characters and five-digit numbers (mmCIF input): OpenMM's PDB writer makes them A and
    new numbers in model.pdb; a note says so (it did so silently)."""
    result = export(wide_ids_backmapped, tmp_path / "omm", to="openmm", progress=False)
    assert [note for note in result.notes if note.startswith("model.pdb")] == [
        "model.pdb: chain id(s) HEAVY do not fit PDB's one-character column: OpenMM's writer gives chains A, B ... "
        "instead",
        "model.pdb: 46 residue number(s) past 4 digits (first ARG 10001): OpenMM's writer numbers them anew"]


def test_export_folder_gets_the_mode_of_a_new_folder(fixture_pdb, tmp_path):
    """The output folder has the mode ``mkdir`` gives under the umask (it was always 0700: ``mkdtemp``)."""
    umask = os.umask(0o027)
    try:
        export(fixture_pdb, tmp_path / "omm", to="openmm", progress=False)
    finally:
        os.umask(umask)
    assert (tmp_path / "omm").stat().st_mode & 0o777 == 0o750
