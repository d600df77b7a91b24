"""Martini 3 beads (core/martini3.py): the table against vermouth's mapping files,
the beads against real martinize2 output, numpy against torch.

Fixtures: ``tests/data/martini3/`` (README.md there: corpus entry abbench__6B0S_l_u
and trp-cage through martinize2 0.15.0, a short solvated GROMACS run)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import martini3 as m3
from backmap_plugin.core.topology import gather_slots, read_residues

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "martini3"
TABLE = ROOT / "backmap_plugin" / "core" / "tables" / "martini3.json"
BUILDER = ROOT / "workflows" / "tables" / "build_martini3.py"
MARTINI3_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "martini3"
#: martinize2 writes coordinates with 3 decimals (Angstrom): up to 0.0009 off per bead
TOLERANCE = 0.02


def _builder():
    spec = importlib.util.spec_from_file_location("build_martini3", BUILDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _all_atom(path, frame=0):
    """Slots, present mask and residue types of one frame of an all-atom file (Angstrom)."""
    traj = md.load(str(path))[frame]
    records, _ = read_residues(traj.topology, str(path))
    slots, present = gather_slots(traj.xyz.astype(np.float64) * 10.0, records)
    res_type = np.array([chem.RESIDUE_INDEX[r.name] for r in records])
    return slots[0], present, res_type, records


def _martinize2_beads(path):
    """{(residue number, residue name): {bead name: xyz (Angstrom)}} of a martinize2 CG file, and the other atoms."""
    traj = md.load(str(path))
    beads, others = {}, []
    for atom in traj.topology.atoms:
        if atom.name == "BB" or atom.name.startswith("SC"):
            beads.setdefault((atom.residue.resSeq, atom.residue.name), {})[atom.name] = traj.xyz[0, atom.index] * 10.0
        else:
            others.append(atom)
    return beads, others, traj


def _deviations(aa_path, cg_path, frame=0):
    slots, present, res_type, records = _all_atom(aa_path, frame)
    ours = m3.martini3_bead_positions(slots, present, res_type)
    mask = m3.martini3_bead_mask(present, res_type)
    theirs, _, _ = _martinize2_beads(cg_path)
    assert len(theirs) == len(records)
    deviations = []
    for i, (rec, names) in enumerate(zip(records, m3.martini3_bead_names(res_type))):
        ref = theirs[(rec.res_seq, rec.input_name)]
        assert tuple(ref) == names, f"{rec.label()}: martinize2 wrote beads {tuple(ref)}"
        for b, name in enumerate(names):
            assert mask[i, b]
            deviations.append(np.linalg.norm(ours[i, b] - ref[name]))
    return np.array(deviations)


# ---------------------------------------------------------------- the table


def test_table_layout():
    assert m3.MAX_BEADS == 6
    assert m3.WEIGHTS.shape == (20, m3.MAX_BEADS, chem.N_SLOTS)
    assert m3.BEAD_EXISTS.shape == (20, m3.MAX_BEADS)
    assert m3.MARTINI3_BEADS[chem.RESIDUE_INDEX["TRP"]] == ("BB", "SC1", "SC2", "SC3", "SC4", "SC5")
    assert m3.MARTINI3_BEADS[chem.RESIDUE_INDEX["GLY"]] == ("BB",)
    masses = {"C": 12.0, "N": 14.0, "O": 16.0, "S": 32.0}
    for t, name in enumerate(chem.RESIDUE_NAMES):
        spec = chem.RESIDUES[name]
        w = m3.WEIGHTS[t]
        assert (w[~m3.BEAD_EXISTS[t]] == 0).all()
        assert (w[m3.BEAD_EXISTS[t]].sum(-1) > 0).all(), f"{name}: a bead without atoms"
        # every heavy atom's weights over its beads sum to 1 (x its mass); only PHE shares atoms between beads
        for s, element in enumerate(spec.elements):
            assert np.isclose(w[:, s].sum(), masses[element]), (name, spec.atoms[s])
        shared = [spec.atoms[s] for s in range(spec.n_atoms) if np.count_nonzero(w[:, s]) > 1]
        assert shared == (["CD1", "CD2", "CZ"] if name == "PHE" else []), name
        assert (w[1:, chem.SLOT_OXT] == 0).all() and w[0, chem.SLOT_OXT] == 16.0  # OXT in BB
        assert (w[:, spec.n_atoms:chem.SLOT_OXT] == 0).all()
    phe = m3.WEIGHTS[chem.RESIDUE_INDEX["PHE"]]
    cd1, cz = chem.RESIDUES["PHE"].atoms.index("CD1"), chem.RESIDUES["PHE"].atoms.index("CZ")
    np.testing.assert_allclose(phe[1:4, cd1], [4.0, 8.0, 0.0])  # CD1: SC1 SC2 SC2 in phe.charmm36.map
    np.testing.assert_allclose(phe[1:4, cz], [0.0, 6.0, 6.0])  # CZ: SC3 SC2
    ile = chem.RESIDUE_INDEX["ILE"]
    assert m3.WEIGHTS[ile, 1, chem.RESIDUES["ILE"].atoms.index("CD1")] == 12.0  # CHARMM CD -> CD1


def test_variants_share_their_parents_beads_except_hid():
    for name, parent in m3.MARTINI3_RESIDUES.items():
        same = np.array_equal(m3.residue_weights(name), m3.WEIGHTS[chem.RESIDUE_INDEX[parent]])
        assert same == (name != "HID"), name
    info = json.loads(TABLE.read_text(encoding="utf-8"))
    assert info["center_weight"] == "mass" and info["hydrogens_in_beads"] is True
    assert set(m3.MARTINI3_RESIDUES) >= {"HSD", "HSE", "HSP", "HIE", "HIP", "ASPP", "GLUP", "LSN"}


@pytest.fixture(scope="module")
def vermouth_table():
    """The table built in memory from the installed vermouth (skips without vermouth)."""
    pytest.importorskip("vermouth", reason="vermouth not installed (pip install vermouth)")
    table, _ = _builder().build_table()
    return table


def test_json_matches_installed_vermouth(vermouth_table):
    shipped = json.loads(TABLE.read_text(encoding="utf-8"))
    for key in ("residues", "termini", "oxt", "masses", "center_weight", "variants", "hydrogens_in_beads"):
        assert vermouth_table[key] == shipped[key], key
    if vermouth_table["provenance"]["vermouth_version"] == shipped["provenance"]["vermouth_version"]:
        assert vermouth_table == shipped


def test_builder_reads_the_maps_as_vermouth_does(vermouth_table):
    """Heavy-atom weights of every residue equal those of vermouth's own mapping reader."""
    import vermouth
    import vermouth.forcefield as vff
    from vermouth.map_input import read_mapping_directory

    data = Path(vermouth.__file__).resolve().parent / "data"
    ffs = {n: vff.ForceField(str(data / "force_fields" / n)) for n in ("charmm", "amber", "martini3001")}
    maps = read_mapping_directory(str(data / "mappings" / "martini3001"), ffs)
    for name, res in vermouth_table["residues"].items():
        mapping = maps[res["from_force_field"]]["martini3001"][name]
        theirs = {}
        for src, targets in mapping.mapping.items():
            atom = chem.standard_atom_name(res["standard"], mapping.block_from.nodes[src]["atomname"])
            if atom is None:
                continue
            for dst, weight in targets.items():
                theirs.setdefault(mapping.block_to.nodes[dst]["atomname"], {})[atom] = float(weight)
        ours = {bead: dict(map(tuple, pairs)) for bead, pairs in res["atoms"].items()}
        assert ours == theirs, name
        assert res["beads"] == [mapping.block_to.nodes[n]["atomname"] for n in mapping.block_to.nodes], name


# ---------------------------------------------------------------- against martinize2


def test_beads_reproduce_martinize2_elastic():
    deviations = _deviations(DATA / "aa.pdb.gz", DATA / "cg.pdb")
    assert len(deviations) == 169
    assert deviations.max() < TOLERANCE, deviations.max()


def test_beads_reproduce_martinize2_with_oxt():
    """Trp-cage (model 1, ends with OXT): the C-terminal OXT counts in BB, as martinize2's C-ter mapping says."""
    deviations = _deviations(ROOT / "tests" / "data" / "1l2y.pdb.gz", DATA / "cg_1l2y.pdb")
    assert deviations.max() < TOLERANCE, deviations.max()
    slots, present, res_type, _ = _all_atom(ROOT / "tests" / "data" / "1l2y.pdb.gz")
    assert present[-1, chem.SLOT_OXT]
    without = present.copy()
    without[-1, chem.SLOT_OXT] = False
    moved = m3.martini3_bead_positions(slots, without, res_type) - m3.martini3_bead_positions(slots, present, res_type)
    assert np.linalg.norm(moved[-1, 0]) > 10 * TOLERANCE  # the test would see a missing OXT
    assert np.abs(moved[:-1]).max() == 0 and np.abs(moved[-1, 1:]).max() == 0


def test_go_model_beads_and_virtual_sites():
    """martinize2 -go: the same beads, plus one virtual site CA per residue at its BB, written after all beads."""
    deviations = _deviations(DATA / "aa.pdb.gz", DATA / "cg_go.pdb")
    assert deviations.max() < TOLERANCE
    beads, others, traj = _martinize2_beads(DATA / "cg_go.pdb")
    assert [a.name for a in others] == ["CA"] * len(beads)
    assert min(a.index for a in others) == traj.n_atoms - len(beads)  # a block at the end
    for atom in others:
        bb = beads[(atom.residue.resSeq, atom.residue.name)]["BB"]
        assert np.linalg.norm(traj.xyz[0, atom.index] * 10.0 - bb) < 1e-3
    assert traj.topology.n_residues == 2 * len(beads)  # readers see every residue twice
    itp = (DATA / "go.itp").read_text(encoding="utf-8")
    assert "[ virtual_sitesn ]" in itp and "; Virtual go site" in itp


def test_solvated_run_fixture():
    traj = md.load(str(DATA / "md.xtc"), top=str(DATA / "md.gro"))
    assert traj.n_frames == 5
    names = {r.name for r in traj.topology.residues}
    assert {"W", "NA", "CL"} <= names
    assert sum(1 for a in traj.topology.atoms if a.name == "BB") == 71
    assert np.allclose(traj.unitcell_angles[0], [60.0, 60.0, 90.0], atol=1e-3)  # rhombic dodecahedron


@pytest.mark.skipif(shutil.which("gmx") is None, reason="GROMACS gmx not installed")
@pytest.mark.skipif(not MARTINI3_DIR.is_dir(), reason="../shared/data/martini3 not present")
@pytest.mark.parametrize("top, conf", [("topol.top", "md.gro"), ("topol_go.top", "cg_go.pdb")])
def test_fixture_topologies_pass_grompp(tmp_path, top, conf):
    """The kept topologies (elastic network with solvent and ions; Go model) are complete for grompp."""
    for f in DATA.iterdir():
        shutil.copy(f, tmp_path)
    env = dict(os.environ, GMXLIB=str(MARTINI3_DIR))
    if conf.endswith(".pdb"):  # martinize2 output has no box
        subprocess.run(["gmx", "-quiet", "editconf", "-f", conf, "-o", "box.gro", "-d", "1.0"],
                       cwd=tmp_path, check=True, capture_output=True)
        conf = "box.gro"
    out = subprocess.run(["gmx", "-quiet", "grompp", "-f", "em.mdp", "-c", conf, "-p", top, "-o", "x.tpr"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]


# ---------------------------------------------------------------- numpy / torch


def test_torch_matches_numpy_and_is_differentiable():
    slots, present, res_type, _ = _all_atom(DATA / "aa.pdb.gz")
    rng = np.random.default_rng(0)
    frames = slots[None] + rng.normal(scale=0.3, size=(3,) + slots.shape) * present[None, ..., None]
    present = present.copy()
    present[5, chem.RESIDUES[chem.RESIDUE_NAMES[res_type[5]]].n_atoms - 1] = False  # a missing side-chain atom
    frames[:, ~present] = np.nan  # absent slots are ignored whatever they hold
    expected = m3.martini3_bead_positions(frames, present, res_type)
    assert expected.shape == (3, len(res_type), m3.MAX_BEADS, 3) and np.isfinite(expected).all()

    x = torch.tensor(frames, dtype=torch.float64, requires_grad=True)
    got = m3.martini3_bead_positions(x, torch.as_tensor(present), torch.as_tensor(res_type))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=1e-12)
    got.square().sum().backward()
    grad = x.grad.numpy()
    assert np.isfinite(grad).all()
    assert (grad[:, ~present] == 0).all()
    weighted = (m3.WEIGHTS[res_type] > 0).any(1) & present
    assert (np.abs(grad[:, weighted]).sum(-1) > 0).all()

    x32 = torch.tensor(frames, dtype=torch.float32)
    np.testing.assert_allclose(m3.martini3_bead_positions(x32, present, res_type).numpy(), expected, atol=1e-3)

    small = torch.tensor(np.nan_to_num(frames[:1, :4]), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: m3.martini3_bead_positions(s, present[:4], res_type[:4]), (small,))


def test_missing_and_nonexistent_beads_are_zero():
    slots, present, res_type, _ = _all_atom(DATA / "aa.pdb.gz")
    gly = int(np.nonzero(res_type == chem.RESIDUE_INDEX["GLY"])[0][0])
    lys = int(np.nonzero(res_type == chem.RESIDUE_INDEX["LYS"])[0][0])
    present = present.copy()
    present[lys, chem.RESIDUES["LYS"].atoms.index("CE")] = False
    present[lys, chem.RESIDUES["LYS"].atoms.index("NZ")] = False  # SC2 = CE + NZ
    beads = m3.martini3_bead_positions(slots, present, res_type)
    mask = m3.martini3_bead_mask(present, res_type)
    assert not mask[gly, 1:].any() and (beads[gly, 1:] == 0).all()
    assert mask[lys].tolist() == [True, True, False, False, False, False]
    assert (beads[lys, 2] == 0).all()
    assert m3.martini3_bead_names(res_type[[gly, lys]]) == [("BB",), ("BB", "SC1", "SC2")]
