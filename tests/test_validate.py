"""Structure validation (real OpenMM for the energy, CPU platform)."""

from __future__ import annotations

import json

import mdtraj as md
import numpy as np
import pytest

pytest.importorskip("openmm")

from backmap_plugin.cli.command import main as backmap_main  # noqa: E402
from backmap_plugin.core.checks import (  # noqa: E402
    all_atom_clashes,
    angle_values,
    bond_outliers,
    dihedral_values,
    ramachandran_outliers,
)
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
        assert frame["energy_kj_mol"] is not None and np.isfinite(frame["energy_kj_mol"])
        assert frame["n_atoms"] == 154 and frame["n_atoms_with_h"] == 304
        # measured 3.3, 0.0, 6.6 (one clash adds 3.3 per 304 atoms): a third clash in any model fails
        assert 0.0 <= frame["clashscore"] < 8.0
        assert frame["details"]["missing_oxt"] == [] and frame["details"]["chain_breaks"] == []
    assert nmr_result.passed and nmr_result.failures == []
    assert "PASS" in nmr_result.table()


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


def test_validate_json_is_strict_json(nmr_models, capsys):
    assert backmap_main(["validate", str(nmr_models), "--json", "--no-energy", "--strict"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_frames"] == 3 and report["passed"] is True
    assert report["frames"][0]["energy_kj_mol"] is None
    assert "Bondi" in report["settings"]["vdw_radii"]


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


def test_ramachandran_regions():
    phi = [[-63.0, -120.0, 60.0, 60.0, 80.0, -60.0, 0.0]]
    psi = [[-43.0, 130.0, 40.0, -120.0, 180.0, 140.0, 0.0]]
    classes = ["general", "general", "general", "general", "GLY", "PRO", "GLY"]
    assert ramachandran_outliers(phi, psi, classes).tolist() == [[False, False, False, True, False, False, True]]


def test_all_atom_clashes_spare_hydrogen_bonds():
    # polar H 1.9 Angstrom from an O: a hydrogen bond, not a clash; a nonpolar
    # H at the same distance from a C clashes (1.2 + 1.7 - 1.9 = 1.0 > 0.4)
    xyz = np.array([[0.0, 0, 0], [1.9, 0, 0], [10.0, 0, 0], [11.9, 0, 0]])
    radii = [1.0, 1.52, 1.2, 1.7]
    kinds = [1, 2, 0, 0]
    assert all_atom_clashes(xyz, radii, np.zeros((0, 2), int), kinds).tolist() == [1]
    # bonded pairs (within three bonds) never count
    assert all_atom_clashes(xyz, radii, [[2, 3]], kinds).tolist() == [0]
