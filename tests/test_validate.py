"""Structure validation (real OpenMM for the energy, CPU platform)."""

from __future__ import annotations

import json
import os

import mdtraj as md
import numpy as np
import pytest

pytest.importorskip("openmm")

from backmap_plugin.cli.command import main as backmap_main  # noqa: E402
from backmap_plugin.core import ramachandran as rama  # noqa: E402
from backmap_plugin.core import rotamer_density  # noqa: E402
from backmap_plugin.core.checks import (  # noqa: E402
    CBETA_DEVIATION,
    all_atom_clashes,
    angle_values,
    bond_outliers,
    cbeta_deviations,
    dihedral_values,
    ideal_cbeta,
    peptide_conformations,
)
from backmap_plugin.core.dihedral_density import ALLOWED, FAVOURED, OUTLIER  # noqa: E402
from backmap_plugin.openmm.validate import validate_structure  # noqa: E402


@pytest.fixture(scope="module")
def nmr_models(fixture_pdb, tmp_path_factory):
    """The first three models of the real trp-cage NMR ensemble (heavy atoms)."""
    path = tmp_path_factory.mktemp("validate") / "1l2y_3.pdb"
    md.load(str(fixture_pdb))[:3].save(str(path))
    return path


@pytest.fixture(scope="module")
def nmr_result(nmr_models):
    return validate_structure(nmr_models, platform="CPU")


def test_real_nmr_structure_is_clean(nmr_result):
    assert len(nmr_result.frames) == 3
    for frame in nmr_result.frames:
        assert frame["d_residues"] == 0
        assert frame["cis_non_pro"] == 0
        assert frame["heavy_clashes"] == 0
        assert frame["missing_atoms"] == 0
        assert frame["bond_outliers"] == 0
        assert frame["angle_outliers"] == 0
        assert frame["ramachandran_outliers"] == 0
        assert frame["ramachandran_scored"] == 18  # 20 residues minus the two chain ends
        assert frame["ramachandran_favoured"] + frame["ramachandran_allowed"] == 18
        assert frame["cbeta_deviations"] == 0 and frame["cbeta_scored"] == 17  # 3 glycines
        assert frame["twisted_peptides"] == 0 and frame["cis_pro"] == 0 and frame["peptides_scored"] == 19
        assert frame["rotamer_scored"] == 17  # every residue but the 3 glycines
        assert frame["energy_kj_mol"] is not None and np.isfinite(frame["energy_kj_mol"])
        assert frame["n_atoms"] == 154 and frame["n_atoms_with_h"] == 304
        # measured 0.0 in all three with Probe radii (one clash adds 3.3 per 304 atoms): a third clash fails
        assert 0.0 <= frame["clashscore"] < 8.0
        assert frame["details"]["missing_oxt"] == [] and frame["details"]["chain_breaks"] == []
    assert nmr_result.passed and nmr_result.failures == []
    assert "PASS" in nmr_result.table()
    # the energy's model is named (validate's default gbn2 is not refine's default, screened)
    assert "(energy: amber14-all.xml + implicit/gbn2.xml)" in nmr_result.table().splitlines()


def test_mirrored_structure_has_d_residues(nmr_models, tmp_path, capsys):
    traj = md.load(str(nmr_models))[:1]
    traj.xyz[..., 0] *= -1.0
    mirrored = tmp_path / "mirrored.pdb"
    traj.save(str(mirrored))
    result = validate_structure(mirrored, solvent="vacuum", platform="CPU")
    n_chiral = sum(1 for r in traj.topology.residues if r.name != "GLY")
    assert result.frames[0]["d_residues"] == n_chiral
    assert result.frames[0]["ramachandran_outliers"] > 0  # mirrored phi/psi
    assert not result.passed
    assert backmap_main(["validate", str(mirrored), "--strict", "--no-energy"]) == 1
    assert "d residues" in capsys.readouterr().out
    assert backmap_main(["validate", str(mirrored), "--no-energy"]) == 0
    frame_row = capsys.readouterr().out.splitlines()[1].split()
    assert frame_row[:2] == ["0", "-"]  # the energy not measured, as the summary shows it (it printed NaN)


def test_injected_clash_is_caught(nmr_models, tmp_path, capsys):
    traj = md.load(str(nmr_models))[:1]
    top = traj.topology
    a = top.select("resid 5 and name CZ2")[0]
    b = top.select("resid 11 and name CA")[0]
    direction = traj.xyz[0, a] - traj.xyz[0, b]
    traj.xyz[0, a] = traj.xyz[0, b] + 0.12 * direction / np.linalg.norm(direction)  # 1.2 Angstrom away
    clashing = tmp_path / "clash.pdb"
    traj.save(str(clashing))
    assert backmap_main(["validate", str(clashing), "--json", "--solvent", "vacuum", "--platform", "CPU"]) == 0
    report = json.loads(capsys.readouterr().out)
    frame = report["frames"][0]
    assert frame["heavy_clashes"] >= 1
    assert frame["all_atom_clashes"] >= 1
    assert report["passed"] is False
    assert any("heavy clashes" in line for line in report["failures"])
    assert backmap_main(["validate", str(clashing), "--strict", "--no-energy"]) == 1


def test_missing_atom_is_reported_and_energy_is_nan(nmr_models, tmp_path):
    traj = md.load(str(nmr_models))[:1]
    keep = traj.topology.select("not (resid 5 and name CZ2)")
    incomplete = tmp_path / "incomplete.pdb"
    traj.atom_slice(keep).save(str(incomplete))
    frame = validate_structure(incomplete, solvent="vacuum", platform="CPU").frames[0]
    assert frame["missing_atoms"] == 1
    assert frame["details"]["missing_atoms"] == ["A:TRP6: CZ2"]
    assert frame["energy_kj_mol"] is None and frame["energy_error"]


def test_hydrogens_not_added_is_no_energy_failure_without_energy(capsys):
    """A structure amber14's hydrogen templates do not fit (a C-alpha trace with HIS), validated with --no-energy:
    the failure says the hydrogens were not added and the clashscore lacks them (it said "energy not finite", for an
    energy not asked for); with the energy, the energy line says why, once."""
    from pathlib import Path

    trace = Path(__file__).resolve().parent / "data" / "5cba_chain_b_ca.pdb.gz"
    failures = validate_structure(trace, energy=False).failures
    assert not any("energy" in line for line in failures), failures
    assert any(line.startswith("frame 0: hydrogens not added (cannot add hydrogens: HIS residue")
               and line.endswith("clashscore of heavy atoms only") for line in failures), failures
    assert backmap_main(["validate", str(trace), "--no-energy"]) == 0
    assert "frame 0: hydrogens not added" in capsys.readouterr().out
    with_energy = validate_structure(trace, solvent="vacuum", platform="CPU").failures
    assert [line for line in with_energy if "hydrogens" in line] == [
        "frame 0: energy not finite (cannot add hydrogens: HIS residue (40) has the wrong set of atoms)"]


def test_validate_json_is_strict_json(nmr_models, capsys):
    assert backmap_main(["validate", str(nmr_models), "--json", "--no-energy", "--strict"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_frames"] == 3 and report["passed"] is True
    assert report["frames"][0]["energy_kj_mol"] is None
    assert "Probe" in report["settings"]["vdw_radii"]


def test_validate_missing_input_is_one_line_error(tmp_path, capsys):
    assert backmap_main(["validate", str(tmp_path / "nope.pdb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.pdb: no such file" in err[0]


# ---------------------------------------------------------------- array functions


def test_angle_dihedral_and_bond_outliers():
    xyz = np.array([[1.0, 0, 0], [0, 0, 0], [0, 1.0, 0]])
    assert angle_values(xyz, [[0, 1, 2]])[0, 0] == pytest.approx(90.0)
    cis = np.array([[1.0, 0, 0], [0, 0, 0], [0, 1.5, 0], [1.0, 1.5, 0]])
    trans = np.array([[1.0, 0, 0], [0, 0, 0], [0, 1.5, 0], [-1.0, 1.5, 0]])
    gauche = np.array([[1.0, 0, 0], [0, 0, 0], [0, 1.5, 0], [0, 1.5, 1.0]])
    assert dihedral_values(np.stack([cis, trans, gauche]), [[0, 1, 2, 3]])[:, 0] == pytest.approx([0.0, 180.0, -90.0])
    bad = bond_outliers(xyz, [[0, 1], [1, 2]], ideal=[1.05, 1.09], sigma=0.02)
    assert bad.tolist() == [[False, True]]  # 0.05 < 0.08 <= 0.09


def test_ramachandran_classes_use_their_own_tables():
    # values read off the shipped table (workflows/tables/build_ramachandran.py), each far from a contour
    phi = [-63.0, -120.0, 0.0, -160.0, 80.0, 0.0, -60.0, 60.0, -90.0, -90.0, 60.0, -75.0]
    psi = [-43.0, 130.0, 0.0, -60.0, 0.0, 180.0, 140.0, 60.0, 0.0, 0.0, 45.0, 150.0]
    classes = ["general", "general", "general", "general", "glycine", "glycine", "trans-proline",
               "trans-proline", "pre-proline", "general", "general", "cis-proline"]
    grades = rama.classify(phi, psi, classes).tolist()
    assert grades == [FAVOURED, FAVOURED, OUTLIER, OUTLIER, FAVOURED, OUTLIER, FAVOURED, OUTLIER, OUTLIER,
                      FAVOURED, FAVOURED, FAVOURED]
    # the left-handed helix: favoured for a general residue and glycine, outlier for proline
    assert rama.classify([60.0] * 2, [45.0] * 2, ["glycine", "trans-proline"]).tolist() == [FAVOURED, OUTLIER]
    assert ALLOWED not in grades  # cases on the 98-99.95 % rim are left out on purpose


def test_ramachandran_classes_of_a_sequence():
    names = ["ALA", "GLY", "SER", "PRO", "PRO", "GLY", "PRO", "VAL"]
    bonded = [True] * 7 + [False]
    omega = [np.nan, 180.0, 180.0, 179.0, -5.0, 180.0, 175.0, 180.0]
    assert rama.residue_classes(names, bonded, omega) == [
        "general", "glycine", "pre-proline", "trans-proline", "cis-proline", "glycine", "trans-proline", "general"]
    # no bond to the proline (chain break): not pre-proline
    assert rama.residue_classes(["ALA", "PRO"], [False, False], [np.nan, np.nan])[0] == "general"


def test_helix_of_a_real_structure_is_favoured(nmr_models):
    """Trp-cage (1L2Y) residues 2-8 form an alpha helix: favoured."""
    traj = md.load(str(nmr_models))[:1]
    _, phi = md.compute_phi(traj)  # residues 2-20
    _, psi = md.compute_psi(traj)  # residues 1-19
    grades = rama.classify(np.degrees(phi[0, 0:6]), np.degrees(psi[0, 1:7]), ["general"] * 6)  # residues 2-7
    assert (grades == FAVOURED).all()


def _table_checks(info, n_grids, grids):
    assert info["split"] == "train" and "crystal" in info["source"]
    assert info["n_files"] == len(info["files"]) > 500
    assert not any("visible_test" in f or f.startswith("shiftx2__") for f in info["files"])
    for key in ("date", "kernel", "levels", "weighting", "made_by", "max_b_factor"):
        assert info[key]
    assert len(grids) == n_grids


def test_ramachandran_table_ships_with_provenance():
    grids, info = rama.load_table()
    _table_checks(info, 5, grids)
    assert set(info["class_of_table"]) == set(rama.CLASSES)
    assert info["grid"]["shape"] == [180, 180] and info["grid"]["cell_deg"] == 2.0
    for name, entry in info["tables"].items():
        assert grids[name].shape == (180, 180)
        assert entry["n_residues"] >= 1000 and entry["weighted_residues"] > 0 and entry["sigma_deg"] > 0
        assert entry["favoured_level"] > entry["allowed_level"]
    assert info["tables"]["general"]["n_residues"] > 100000
    files = [os.path.join(rama.TABLE_DIR, f) for f in ("ramachandran.npz", "ramachandran.json")]
    assert sum(os.path.getsize(f) for f in files) < 400_000


def test_rotamer_table_ships_with_provenance():
    grids, info = rotamer_density.load_table()
    _table_checks(info, 18, grids)  # the 20 amino acids but GLY and ALA
    for name, entry in info["residues"].items():
        assert grids[name].shape == tuple(entry["shape"]) and len(entry["period"]) == grids[name].ndim
        assert entry["n_residues"] >= 500
        assert entry["favoured_level"] > entry["outlier_level"]
    assert info["residues"]["PHE"]["period"] == [360.0, 180.0]
    assert info["residues"]["SER"]["chis"] == ["chi1"]


def test_rotamer_outlier_on_a_wrong_chi(nmr_models, tmp_path):
    # LEU mt (chi1 -65, chi2 175) is the common rotamer; eclipsed chi1 = 0 is not one
    grades = rotamer_density.classify_rotamers(["LEU", "LEU", "SER", "SER"],
                                               [[-65.0, 175.0], [0.0, 175.0], [62.0, 0.0], [120.0, 0.0]])
    assert grades.tolist() == [FAVOURED, OUTLIER, FAVOURED, OUTLIER]
    # on a real structure: turn the side chain of LEU2 about CA-CB to chi1 = 0
    traj = md.load(str(nmr_models))[:1]
    top = traj.topology
    before = validate_structure(nmr_models, energy=False).frames[0]
    n, ca, cb, cg = (top.select(f"resid 1 and name {a}")[0] for a in ("N", "CA", "CB", "CG"))
    side = top.select("resid 1 and name CG CD1 CD2")
    xyz = traj.xyz[0].astype(np.float64)
    chi1 = dihedral_values(xyz, [[n, ca, cb, cg]])[0, 0]
    axis = (xyz[cb] - xyz[ca]) / np.linalg.norm(xyz[cb] - xyz[ca])
    turn = np.radians(-chi1)
    rel = xyz[side] - xyz[cb]
    rotated = (rel * np.cos(turn) + np.cross(axis, rel) * np.sin(turn)
               + np.outer(rel @ axis, axis) * (1.0 - np.cos(turn)))
    traj.xyz[0, side] = (xyz[cb] + rotated).astype(np.float32)
    assert abs(dihedral_values(traj.xyz[0] * 10.0, [[n, ca, cb, cg]])[0, 0]) < 0.5
    path = tmp_path / "wrong_chi.pdb"
    traj.save(str(path))
    after = validate_structure(path, energy=False).frames[0]
    assert "A:LEU2" not in before["details"]["rotamer_outliers"]
    assert "A:LEU2" in after["details"]["rotamer_outliers"]
    assert after["rotamer_outliers"] == before["rotamer_outliers"] + 1


def test_cbeta_deviation():
    # an ideal residue built from the residue table: no deviation; its CB moved by 0.5 A: flagged
    n, ca, c = np.array([1.458, 0.0, 0.0]), np.zeros(3), np.array([-0.551, 1.422, 0.0])
    cb = ideal_cbeta(n, ca, c, 1.530, 110.5, -122.6)
    xyz = np.stack([n, ca, c, cb, cb + [0.0, 0.0, 0.5], cb + [0.0, 0.2, 0.0]])
    dev = cbeta_deviations(xyz, [0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 4, 5], [1.53] * 3, [110.5] * 3, [-122.6] * 3)
    assert dev[0] == pytest.approx([0.0, 0.5, 0.2], abs=1e-6)
    assert (dev[0] > CBETA_DEVIATION).tolist() == [False, True, False]
    # a strained N-CA-C angle moves the two placements in opposite directions: their mean stays close
    wide_c = np.array([-0.74, 1.33, 0.0])  # N-CA-C about 119 degrees
    assert np.linalg.norm(ideal_cbeta(n, ca, wide_c, 1.53, 110.5, -122.6) - cb) < 0.1


def test_cbeta_moved_in_a_real_structure_is_flagged(nmr_models, tmp_path):
    traj = md.load(str(nmr_models))[:1]
    cb = traj.topology.select("resid 3 and name CB")[0]  # ILE4
    traj.xyz[0, cb] += np.array([0.05, 0.0, 0.0], dtype=np.float32)  # 0.5 Angstrom
    path = tmp_path / "cb.pdb"
    traj.save(str(path))
    frame = validate_structure(path, energy=False).frames[0]
    assert frame["cbeta_deviations"] == 1
    assert frame["details"]["cbeta_deviations"][0].startswith("A:ILE4 (0.")


def test_disulfide_bond_and_angles_are_checked(tmp_path):
    """The crystal of 6B0S (tests/data/martini3/aa.pdb.gz, S-S 2.04 and 2.06 A) has no disulfide outlier; with the
    S-S bond of C334-C369 stretched to 2.45 A by moving both SG atoms along it, the bond is an outlier; with the SG
    of C369 moved across the bond instead, its CB-SG-SG angle is (validation skipped disulfides: S-S of 1.4-2.5 A
    passed)."""
    traj = md.load(str(os.path.join(os.path.dirname(__file__), "data", "martini3", "aa.pdb.gz")))
    traj.save(str(tmp_path / "crystal.pdb"))
    frame = validate_structure(tmp_path / "crystal.pdb", energy=False).frames[0]
    assert not [x for x in frame["details"]["bond_outliers"] + frame["details"]["angle_outliers"] if "disulfide" in x]
    a, b = (traj.topology.select(f"resSeq {n} and name SG")[0] for n in (334, 369))
    axis = (traj.xyz[0, b] - traj.xyz[0, a]) / np.linalg.norm(traj.xyz[0, b] - traj.xyz[0, a])
    traj.xyz[0, a] -= 0.0205 * axis
    traj.xyz[0, b] += 0.0205 * axis
    traj.save(str(tmp_path / "stretched.pdb"))  # (mdtraj writes CONECT for the S-S bond: OpenMM bonds up to 3 A)
    frame = validate_structure(tmp_path / "stretched.pdb", energy=False).frames[0]
    assert frame["details"]["bond_outliers"] == ["A:CYS334-A:CYS369 SG-SG (disulfide)"]
    traj.xyz[0, a] += 0.0205 * axis  # back, then the other SG 0.3 A across the bond, in the CB-SG-SG plane
    traj.xyz[0, b] -= 0.0205 * axis
    cb = traj.xyz[0, traj.topology.select("resSeq 369 and name CB")[0]] - traj.xyz[0, b]
    across = cb - cb.dot(axis) * axis
    traj.xyz[0, b] += 0.03 * across / np.linalg.norm(across)
    traj.save(str(tmp_path / "bent.pdb"))
    frame = validate_structure(tmp_path / "bent.pdb", energy=False).frames[0]
    assert "A:CYS369 CB-SG-SG (disulfide)" in frame["details"]["angle_outliers"]


def test_cis_and_twisted_peptides():
    cis, twisted = peptide_conformations([180.0, -178.0, 0.0, 25.0, -35.0, 90.0, 149.0, 155.0])
    assert cis.tolist() == [False, False, True, True, False, False, False, False]
    assert twisted.tolist() == [False, False, False, False, True, True, True, False]


def test_twisted_peptide_in_a_real_structure(nmr_models, tmp_path):
    """Turn residues 11-20 of trp-cage about the GLY10-GLY11 C-N bond: omega 180 -> 90."""
    traj = md.load(str(nmr_models))[:1]
    top = traj.topology
    c = top.select("resid 9 and name C")[0]
    n = top.select("resid 10 and name N")[0]
    moving = np.array([a.index for a in top.atoms if a.residue.index >= 10 and a.index != n])
    xyz = traj.xyz[0].astype(np.float64) * 10.0
    axis = (xyz[n] - xyz[c]) / np.linalg.norm(xyz[n] - xyz[c])
    turn = np.radians(90.0)
    rel = xyz[moving] - xyz[n]
    xyz[moving] = xyz[n] + (rel * np.cos(turn) + np.cross(axis, rel) * np.sin(turn)
                            + np.outer(rel @ axis, axis) * (1.0 - np.cos(turn)))
    traj.xyz[0] = (xyz / 10.0).astype(np.float32)
    path = tmp_path / "twisted.pdb"
    traj.save(str(path))
    frame = validate_structure(path, energy=False).frames[0]
    assert frame["twisted_peptides"] == 1 and frame["cis_non_pro"] == 0
    assert frame["details"]["twisted_peptides"][0].startswith("A:GLY10-A:GLY11")


def test_reference_shows_both_structures(nmr_models, fixture_pdb, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert backmap_main(["validate", str(nmr_models), "--reference", str(fixture_pdb), "--no-energy",
                         "-o", str(out)]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("figure"))
    assert "1l2y_3.pdb (3 frame(s))" in header and "1l2y.pdb.gz (38 frame(s))" in header
    for label in ("clashscore (all atoms, per 1,000)", "Ramachandran favoured %", "Ramachandran outliers %",
                  "rotamer outliers %", "C-beta deviations > 0.25 A", "cis peptides, Pro", "twisted peptides",
                  "D residues (CA chirality)", "bond outliers > 4 sd", "angle outliers > 4 sd"):
        row = next(line for line in text.splitlines() if line.startswith(label))
        assert len(row[len(label):].split()) == 2, row  # one value per structure
    report = json.loads(out.read_text())
    assert report["reference"]["n_frames"] == 38 and report["summary"]["n_frames"] == 3
    assert report["summary"]["ramachandran_scored"] == 18.0
    assert report["reference"]["summary"]["cbeta_deviations"] == 0.0
    assert backmap_main(["validate", str(nmr_models), "--reference", str(tmp_path / "nope.pdb")]) == 2
    assert "nope.pdb: no such file" in capsys.readouterr().err


def test_train_crystal_structure_scores_like_molprobity(corpus):
    """A crystal structure of the train split (1TG0, skipped without the corpus): most residues favoured."""
    path = corpus / "train" / "bioemu__1TG0.pdb.gz"
    if not path.is_file():
        pytest.skip(f"{path} not in the corpus")
    frame = validate_structure(path, energy=False).frames[0]
    # measured: 61 of 62 favoured, no outlier
    assert frame["ramachandran_favoured_pct"] > 95.0 and frame["ramachandran_outliers"] == 0


def test_all_atom_clashes_spare_hydrogen_bonds():
    # polar H 1.9 Angstrom from an O: a hydrogen bond, not a clash; a nonpolar
    # H at the same distance from a C clashes (1.2 + 1.7 - 1.9 = 1.0 > 0.4)
    xyz = np.array([[0.0, 0, 0], [1.9, 0, 0], [10.0, 0, 0], [11.9, 0, 0]])
    radii = [1.0, 1.52, 1.2, 1.7]
    kinds = [1, 2, 0, 0]
    assert all_atom_clashes(xyz, radii, np.zeros((0, 2), int), kinds).tolist() == [1]
    # bonded pairs (within three bonds) never count
    assert all_atom_clashes(xyz, radii, [[2, 3]], kinds).tolist() == [0]


def test_selenomethionine_energy_as_methionine():
    """A crystal fragment with selenomethionines (1A8O 151-158, HETATM MSE with SE): hydrogens and the amber14
    energy come from its methionine form (amber14 has no selenium); before, the energy was NaN."""
    path = os.path.join(os.path.dirname(__file__), "data", "1a8o_mse_151-158.pdb.gz")
    frame = validate_structure(path, platform="CPU").frames[0]
    assert np.isfinite(frame["energy_kj_mol"]) and frame["energy_error"] is None
    assert frame["bond_outliers"] == 0 and frame["missing_atoms"] == 0
    assert frame["clashscore"] < 20.0  # hydrogens on the MSE residues, bonded as MET


def test_hydrogens_do_not_hang_on_the_global_random_state(nmr_models):
    """Modeller.addHydrogens starts hydrogens at random positions (Python's random) and minimises them on a
    multi-threaded platform: seeded and on one thread, the same structure validates the same whatever drew random
    numbers before (without either, frames of 1L2Y scored 0 or 3.3 on clashscore from one run to the next)."""
    import random

    import openmm

    cpu = openmm.Platform.getPlatformByName("CPU")
    threads = cpu.getPropertyDefaultValue("Threads")
    scores = []
    for seed in (1, 2, 3, 4):
        random.seed(seed)
        result = validate_structure(nmr_models, platform="Reference", energy=False)
        scores.append([f["clashscore"] for f in result.frames])
    assert scores[0] == scores[1] == scores[2] == scores[3]
    assert random.random() == random.Random(4).random()  # the caller's random state is left as it was
    assert cpu.getPropertyDefaultValue("Threads") == threads  # and the CPU platform's thread count


def test_energy_of_a_heavy_atom_structure_is_that_with_its_own_hydrogens(fixture_pdb, tmp_path):
    """Hydrogens added to a heavy-atom structure sit at the force field's bond lengths before the energy is taken:
    1L2Y model 1 without its hydrogens scores as with them (-244 kJ/mol); it scored +3,806, bond strain of the
    added hydrogens (a crystal structure of 223 residues +46,654)."""
    model = md.load(str(fixture_pdb))[0]
    heavy = tmp_path / "heavy.pdb"
    model.atom_slice(model.topology.select("not element H")).save_pdb(str(heavy))
    full = tmp_path / "full.pdb"
    model.save_pdb(str(full))
    e_heavy, e_full = (validate_structure(path, platform="CPU").frames[0]["energy_kj_mol"] for path in (heavy, full))
    assert e_full < 0 and abs(e_heavy - e_full) < 50.0


def test_a_trajectory_is_validated_with_its_topology(nmr_models, tmp_path, capsys):
    """`backmap validate traj.dcd --top first.pdb` scores the frames as it scores the same models of a PDB file."""
    traj = md.load(str(nmr_models))
    traj.save(str(tmp_path / "three.dcd"))
    traj[0].save(str(tmp_path / "first.pdb"))
    argv = ["validate", str(tmp_path / "three.dcd"), "--top", str(tmp_path / "first.pdb"), "--no-energy", "--json"]
    assert backmap_main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    expected = validate_structure(nmr_models, energy=False)
    assert report["n_frames"] == 3
    for key in ("clashscore", "ramachandran_outliers", "rotamer_outliers", "angle_outliers", "bond_outliers"):
        assert [f[key] for f in report["frames"]] == [f[key] for f in expected.frames], key


def test_frames_are_validated_a_chunk_at_a_time(nmr_models, monkeypatch):
    """Validated two frames at a time (memory bounded on long trajectories), three models score as validated
    together, frame numbers included."""
    from backmap_plugin.openmm import validate as validate_module

    together = validate_structure(nmr_models, energy=False)
    monkeypatch.setattr(validate_module, "VALIDATE_CHUNK", 2)
    chunked = validate_structure(nmr_models, energy=False)
    assert [f["frame"] for f in chunked.frames] == [0, 1, 2]
    assert chunked.frames == together.frames


@pytest.mark.parametrize("cut", ["line", "mid-line"])
def test_a_pdb_cut_in_its_last_model_is_validated_with_a_note(nmr_models, tmp_path, capsys, cut):
    """Three models, the third cut short (a killed writer; at a line end or inside a line): its two whole models
    are validated, and the note that says so is printed and in the JSON report (validate stopped with "model 3 has
    12 atoms, the first 154" or "cannot read coordinates: could not convert string to float")."""
    lines = nmr_models.read_text().splitlines(keepends=True)
    third = [i for i, line in enumerate(lines) if line.startswith("MODEL")][2]
    text = "".join(lines[:third + 13])
    path = tmp_path / "cut.pdb"
    path.write_text(text if cut == "line" else text[:-40])
    assert backmap_main(["validate", str(path), "--no-energy", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    note = (f"{path}: read 2 whole model(s) (frames 0-1); frame 2 (the MODEL on line {third + 1}) is cut short (12 of "
            "154 atoms): a truncated file, or one still being written?")
    assert report["n_frames"] == 2 and report["notes"] == [note]
    assert f"note: {note}" in captured.err


def test_validate_names_mmcif_residues_as_run_does(capsys):
    """Real 1NCB rows (tests/data/README.md): the report named chain N's residues A:ILE81 ... and chain H's C:ASN84
    (OpenMM's reader took label chain ids, which outnumber author ids there); run calls those chains N and H."""
    from pathlib import Path

    path = Path(__file__).resolve().parent / "data" / "1ncb_n81-85_h81-84.cif.gz"
    assert backmap_main(["validate", str(path), "--json", "--no-energy"]) == 0
    details = json.loads(capsys.readouterr().out)["frames"][0]["details"]
    assert details["missing_oxt"] == ["N:ASN85", "H:ASN84"]
    assert details["bond_outliers"] == ["N:ILE81 CA-CB"]


def test_energy_error_names_the_residue(capsys):
    """Real 1NCB rows (tests/data/README.md) lack the OXT of N:ASN85 and H:ASN84: the energy error named the
    residue by OpenMM's count from 0 ('No template found for residue 4 (ASN)'); now by chain, name and number."""
    from pathlib import Path

    path = Path(__file__).resolve().parent / "data" / "1ncb_n81-85_h81-84_protein.pdb.gz"
    assert backmap_main(["validate", str(path), "--json", "--solvent", "vacuum"]) == 0
    error = json.loads(capsys.readouterr().out)["frames"][0]["energy_error"]
    assert error.startswith("N:ASN85: No template found for residue 4 (ASN).")
