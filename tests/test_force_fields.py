"""CG force fields: hand-computed energies per term, dynamics, backmapping of their output."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

openmm = pytest.importorskip("openmm")
from openmm import unit  # noqa: E402
from openmm.app import PDBFile  # noqa: E402

from backmap_plugin.api import backmap  # noqa: E402
from backmap_plugin.core import chemistry as chem  # noqa: E402
from backmap_plugin.force_fields import (  # noqa: E402
    GO_FORCE_GROUPS,
    HPS_FORCE_GROUPS,
    create_go_system,
    create_hps_system,
    load_hps_parameters,
)
from backmap_plugin.force_fields.hps import debye_huckel_parameters, water_relative_permittivity  # noqa: E402


def _context(system, positions, platform="Reference"):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    return context


def _group_energy(context, group):
    state = context.getState(energy=True, groups={group})
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _positions(xyz_nm):
    return unit.Quantity([openmm.Vec3(*row) for row in np.asarray(xyz_nm, float).tolist()], unit.nanometer)


def _assert_cg_topology(topology, names, chain_ids=None):
    assert [r.name for r in topology.residues()] == names
    assert all(len(list(r.atoms())) == 1 for r in topology.residues())
    assert all(a.name == "CA" and a.element.symbol == "C" for a in topology.atoms())
    if chain_ids is not None:
        assert [c.id for c in topology.chains()] == chain_ids


# ---------------------------------------------------------------- HPS


def test_hps_parameters_match_the_residue_table():
    table = load_hps_parameters()
    assert sorted(table) == sorted(chem.ONE_TO_THREE)
    assert all(chem.ONE_TO_THREE[k] == v.three for k, v in table.items())
    assert table["W"].lambda_ == pytest.approx(0.989376474037)  # CALVADOS 2
    assert table["K"].charge == 1 and table["E"].charge == -1 and table["H"].charge == 0


def test_water_dielectric_and_debye_length():
    assert water_relative_permittivity(298.0) == pytest.approx(78.4, abs=0.3)
    prefactor, kappa = debye_huckel_parameters(298.0, 0.15)
    assert prefactor == pytest.approx(138.935 / water_relative_permittivity(298.0), rel=1e-4)
    assert 1.0 / kappa == pytest.approx(0.785, abs=0.01)  # Debye length at 150 mM, 25 C


def test_hps_energies_by_hand_for_four_beads():
    sequence = "KAEW"
    top, system, _ = create_hps_system(sequence, ionicStrength=0.1, temperature=300.0)
    xyz = np.array([[0.0, 0.0, 0.0], [0.38, 0.0, 0.0], [0.38, 0.38, 0.0], [1.2, 0.38, 0.0]])
    context = _context(system, _positions(xyz))
    table = load_hps_parameters()
    p = [table[c] for c in sequence]
    dist = lambda i, j: float(np.linalg.norm(xyz[i] - xyz[j]))  # noqa: E731

    # bonds: 0.5 k (r - 0.38)^2; only 2-3 is stretched (0.82 nm)
    bonds = sum(0.5 * 8033.0 * (dist(i, i + 1) - 0.38) ** 2 for i in range(3))
    assert _group_energy(context, HPS_FORCE_GROUPS["bonds"]) == pytest.approx(bonds, rel=1e-6)

    # Ashbaugh-Hatch over the non-bonded pairs (0,2) (1,3) (0,3)
    eps, rc = 0.8368, 2.0
    ah = 0.0
    for i, j in [(0, 2), (1, 3), (0, 3)]:
        s = 0.5 * (p[i].sigma + p[j].sigma)
        lam = 0.5 * (p[i].lambda_ + p[j].lambda_)
        r = dist(i, j)
        lj = lambda x: 4 * eps * ((s / x) ** 12 - (s / x) ** 6)  # noqa: E731
        if r <= 2 ** (1 / 6) * s:
            ah += lj(r) - lam * lj(rc) + eps * (1 - lam)
        else:
            ah += lam * (lj(r) - lj(rc))
    assert dist(0, 2) < 2 ** (1 / 6) * 0.5 * (p[0].sigma + p[2].sigma)  # both branches are tested
    assert _group_energy(context, HPS_FORCE_GROUPS["ashbaugh_hatch"]) == pytest.approx(ah, rel=1e-6)

    # Debye-Hueckel: Bjerrum length and Debye length from SI constants
    temperature, ionic = 300.0, 0.1
    eps_r = 5321 / temperature + 233.76 - 0.9297 * temperature + 0.1417e-2 * temperature**2 - 0.8292e-6 * temperature**3
    e, eps0, kb, na = 1.602176634e-19, 8.8541878128e-12, 1.380649e-23, 6.02214076e23
    bjerrum = e**2 / (4 * math.pi * eps0 * eps_r * kb * temperature) * 1e9  # nm
    kt = kb * temperature * na / 1000.0  # kJ/mol
    kappa = math.sqrt(8 * math.pi * bjerrum * ionic * na * 1e-24)  # 1/nm (mol/L -> 1/nm^3)
    charges = [1 + 1, 0, -1, 0 - 1]  # K and W carry the terminal charges (+1, -1)
    rc_dh = 4.0
    screened = lambda r: math.exp(-kappa * r) / r  # noqa: E731
    dh = sum(
        charges[i] * charges[j] * bjerrum * kt * (screened(dist(i, j)) - screened(rc_dh))
        for i, j in [(0, 2), (1, 3), (0, 3)]
    )
    assert _group_energy(context, HPS_FORCE_GROUPS["debye_huckel"]) == pytest.approx(dh, rel=1e-5)
    _assert_cg_topology(top, ["LYS", "ALA", "GLU", "TRP"], ["A"])
    assert [r.id for r in top.residues()] == ["1", "2", "3", "4"]


def test_hps_positions_are_a_clean_coil_and_dynamics_stay_finite():
    sequence = "MDEKSTRGLPYWFHAQNIVC" * 2
    top, system, positions = create_hps_system(sequence, box=12.0)
    xyz = np.array(positions.value_in_unit(unit.nanometer))
    steps = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
    assert np.allclose(steps, 0.38, atol=1e-9)
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    far = np.abs(np.subtract.outer(np.arange(len(xyz)), np.arange(len(xyz)))) > 1
    assert d[far].min() >= 0.6 - 1e-9
    assert system.usesPeriodicBoundaryConditions()
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 0.01 / unit.picosecond, 0.01 * unit.picosecond)
    integrator.setRandomNumberSeed(1)  # (the same run every time)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    integrator.step(2000)
    state = context.getState(energy=True, positions=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert np.all(np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)))
    with pytest.raises(ValueError, match="shorter than twice"):
        create_hps_system("KKKK", box=5.0)
    # the topology's box is one OpenMM writers read: a PDB of the system gets its CRYST1 record
    buffer = io.StringIO()
    PDBFile.writeFile(top, positions, buffer)
    assert "CRYST1  120.000  120.000  120.000  90.00  90.00  90.00" in buffer.getvalue()
    with pytest.raises(ValueError, match="unknown residue letter"):
        create_hps_system("KXB")


def _write_frames(path, topology, context, integrator, n_frames, steps):
    with open(path, "w") as handle:
        PDBFile.writeHeader(topology, handle)
        for k in range(n_frames):
            integrator.step(steps)
            positions = context.getState(positions=True).getPositions()
            PDBFile.writeModel(topology, positions, handle, modelIndex=k + 1)
        PDBFile.writeFooter(topology, handle)


def test_hps_trajectory_backmaps(tmp_path):
    sequence = "GSMEEPQSDPSVEPPLSQETFSDLWKLL"
    top, system, positions = create_hps_system(sequence)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 0.01 / unit.picosecond, 0.01 * unit.picosecond)
    integrator.setRandomNumberSeed(1)  # (the same run every time)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    cg = tmp_path / "hps_cg.pdb"
    _write_frames(cg, top, context, integrator, n_frames=3, steps=200)
    result = backmap(str(cg), str(tmp_path / "hps_aa.pdb"), method="ideal", progress=False)
    assert result.n_frames == 3 and result.n_residues == len(sequence) and result.n_segments == 1
    aa = md.load(str(tmp_path / "hps_aa.pdb"))
    expected = sum(len(chem.RESIDUES[chem.ONE_TO_THREE[c]].atoms) for c in sequence) + 1  # + OXT
    assert aa.n_frames == 3 and aa.n_atoms == expected


def test_hps_chains_are_no_mirror_images(tmp_path):
    """A disordered chain of an HPS run has helical windows of either hand now and then (no handedness): neither its
    frames nor their mirror images are said to be mirror images (the note is for traces whose helices are mostly
    left-handed)."""
    from backmap_plugin.api import Backmapper, helical_windows

    sequence = "MASNDYTQQATQSYGAYPTQPGQGYSQQSSQPYGQQSYSGYSQSTDTSGYGQSSYSSYGQSQNTGYGTQSTPQGYGSTGGYGSSQSSQSSYGQQSSYP" * 2
    top, system, positions = create_hps_system(sequence)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 0.01 / unit.picosecond, 0.01 * unit.picosecond)
    integrator.setRandomNumberSeed(1)  # (the same run every time: an unseeded one failed once in CI)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context)
    integrator.step(3000)
    frames = []
    for _ in range(10):
        integrator.step(300)
        frames.append(context.getState(positions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    xyz = np.array(frames, dtype=np.float32)
    topology = md.Topology.from_openmm(top)
    for beads in (xyz, xyz * np.float32([-1.0, 1.0, 1.0])):
        engine = Backmapper(topology, beads, method="ideal")
        assert engine.mapping.name == "ca" and not any("left-handed" in note for note in engine.report)
        for frame in beads:  # (a frame alone, too)
            assert not any("left-handed" in note for note in Backmapper(topology, frame, method="ideal").report)
    counts = helical_windows(engine.protein, np.zeros(len(sequence), dtype=int), xyz)
    assert counts.shape == (1, 2) and counts.sum() <= 10  # few windows of two helical turns, of either hand


# ---------------------------------------------------------------- Go


def _native_piece(fixture_pdb, path, chains):
    """Residues of model 1 of 1L2Y as a PDB with the given chains {chain id: residue indices}."""
    traj = md.load(str(fixture_pdb))[0]
    picked = [i for ids in chains.values() for i in ids]
    piece = traj.atom_slice(traj.topology.select(" or ".join(f"resid {i}" for i in picked)))
    piece.save(str(path))
    chain_of = {traj.topology.residue(i).resSeq: cid for cid, ids in chains.items() for i in ids}
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith(("ATOM", "HETATM")):
            line = line[:21] + chain_of[int(line[22:26])] + line[22:]
        if line.startswith("TER"):
            continue
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return traj


def _angle(a, b, c):
    u, v = a - b, c - b
    return math.acos(float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))))


def _dihedral(a, b, c, d):
    b0, b1, b2 = a - b, c - b, d - c
    n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
    m = np.cross(n1, b1 / np.linalg.norm(b1))
    return math.atan2(float(np.dot(m, n2)), float(np.dot(n1, n2)))


def test_go_bonded_terms_by_hand_for_four_beads(fixture_pdb, tmp_path):
    native_file = tmp_path / "four.pdb"
    _native_piece(fixture_pdb, native_file, {"A": [2, 3, 4, 5]})
    eps = 2.0
    top, system, positions = create_go_system(native_file, epsilon=eps)
    _assert_cg_topology(top, ["TYR", "ILE", "GLN", "TRP"], ["A"])
    native = np.array(positions.value_in_unit(unit.nanometer))
    context = _context(system, positions)
    for group in GO_FORCE_GROUPS.values():
        assert _group_energy(context, group) == pytest.approx(0.0, abs=1e-9)  # no contact within |i-j| < 4
    rng = np.random.default_rng(1)
    moved = native + rng.normal(scale=0.03, size=native.shape)
    context.setPositions(_positions(moved))
    length = lambda x, i: np.linalg.norm(x[i + 1] - x[i])  # noqa: E731
    bonds = sum(100 * 100 * eps * (length(moved, i) - length(native, i)) ** 2 for i in range(3))  # 100 eps/A^2
    angles = sum(20 * eps * (_angle(*moved[i:i + 3]) - _angle(*native[i:i + 3])) ** 2 for i in range(2))
    dphi = _dihedral(*moved) - _dihedral(*native)
    dihedral = eps * (1 - math.cos(dphi)) + 0.5 * eps * (1 - math.cos(3 * dphi))
    assert _group_energy(context, GO_FORCE_GROUPS["bonds"]) == pytest.approx(bonds, rel=1e-6)
    assert _group_energy(context, GO_FORCE_GROUPS["angles"]) == pytest.approx(angles, rel=1e-6)
    assert _group_energy(context, GO_FORCE_GROUPS["dihedrals"]) == pytest.approx(dihedral, rel=1e-6)


def test_go_native_structure_may_be_an_ent_file(fixture_pdb, tmp_path):
    """A native structure named as wwPDB names PDB text (``.ent``) gives the Go model of the same file as ``.pdb``."""
    pdb, ent = tmp_path / "four.pdb", tmp_path / "pdb_four.ent"
    _native_piece(fixture_pdb, pdb, {"A": [2, 3, 4, 5]})
    shutil.copy(pdb, ent)
    (_, _, want), (_, _, got) = create_go_system(pdb), create_go_system(ent)
    np.testing.assert_array_equal(np.array(got.value_in_unit(unit.nanometer)),
                                  np.array(want.value_in_unit(unit.nanometer)))


def test_go_native_mmcif_chains_are_named_as_backmap_run_names_them():
    """Real 1NCB rows (tests/data/README.md): mdtraj's mmCIF reader named chains N and H by their label ids, A and
    C; the Go model reads the file as backmap run, refine and validate do."""
    native = Path(__file__).resolve().parent / "data" / "1ncb_n81-85_h81-84.cif.gz"
    top, _, _ = create_go_system(native)
    assert [c.id for c in top.chains()] == ["N", "H"]
    assert [r.id for r in top.residues()][:5] == ["81", "82", "83", "84", "85"]


@pytest.mark.parametrize("name", ["1ncb_n81-85_h81-84.cif.gz", "1ncb_n81-85_h81-84_protein.pdb.gz"])
def test_go_beads_keep_the_insertion_codes(name):
    """Real 1NCB rows (tests/data/README.md): the beads of chain H's 82A, 82B and 82C were numbered 82, their codes
    dropped."""
    top, _, _ = create_go_system(Path(__file__).resolve().parent / "data" / name)
    assert [f"{r.id}{r.insertionCode.strip()}" for r in top.residues()][5:] == [
        "81", "82", "82A", "82B", "82C", "83", "84"]


def test_go_chains_without_ids_are_lettered_apart(fixture_pdb, tmp_path):
    """Two chains with blank chain ids (split by TER) became two chains both named A."""
    native_file = tmp_path / "blank_ids.pdb"
    _native_piece(fixture_pdb, native_file, {"A": [2, 3], "B": [17, 18]})
    lines = []
    for line in native_file.read_text().splitlines():
        if line.startswith("ATOM") and line[21] == "B" and lines[-1][21] == "A":
            lines.append("TER")
        lines.append(line)
    native_file.write_text("\n".join(line[:21] + " " + line[22:] if line.startswith("ATOM") else line
                                     for line in lines) + "\n")
    top, _, _ = create_go_system(native_file)
    _assert_cg_topology(top, ["TYR", "ILE", "PRO", "PRO"], ["A", "B"])


def test_go_contacts_and_repulsion_by_hand_for_two_chains(fixture_pdb, tmp_path):
    # Tyr3-Ile4 (chain A) packs against Pro18-Pro19 (chain B) in trp-cage
    native_file = tmp_path / "two_chains.pdb"
    traj = _native_piece(fixture_pdb, native_file, {"A": [2, 3], "B": [17, 18]})
    top, system, positions = create_go_system(native_file, epsilon=1.0)
    _assert_cg_topology(top, ["TYR", "ILE", "PRO", "PRO"], ["A", "B"])
    native = np.array(positions.value_in_unit(unit.nanometer))
    heavy = {k: traj.xyz[0, [a.index for a in traj.topology.residue(r).atoms if a.element.symbol != "H"]]
             for k, r in enumerate([2, 3, 17, 18])}
    inter = [(i, j) for i in (0, 1) for j in (2, 3)]
    contact = {(i, j) for i, j in inter
               if np.min(np.linalg.norm(heavy[i][:, None] - heavy[j][None], axis=-1)) < 0.45}
    assert contact and len(contact) < 4  # both terms are exercised
    moved = native * 1.05  # stretch everything by 5 %
    context = _context(system, _positions(moved))
    e_contact, e_repulsion = 0.0, 0.0
    for i, j in inter:
        r, s = np.linalg.norm(moved[i] - moved[j]), np.linalg.norm(native[i] - native[j])
        if (i, j) in contact:
            e_contact += 5 * (s / r) ** 12 - 6 * (s / r) ** 10
        elif r < 1.0:
            e_repulsion += (0.4 / r) ** 12
    assert _group_energy(context, GO_FORCE_GROUPS["contacts"]) == pytest.approx(e_contact, rel=1e-6)
    assert _group_energy(context, GO_FORCE_GROUPS["repulsion"]) == pytest.approx(e_repulsion, rel=1e-6, abs=1e-12)
    context.setPositions(positions)
    assert _group_energy(context, GO_FORCE_GROUPS["contacts"]) == pytest.approx(-len(contact))


def test_go_dynamics_finite_and_trajectory_backmaps(fixture_pdb, tmp_path):
    top, system, positions = create_go_system(fixture_pdb, epsilon=2.5)
    _assert_cg_topology(top, [r.name for r in md.load_topology(str(fixture_pdb)).residues], ["A"])
    integrator = openmm.LangevinMiddleIntegrator(120 * unit.kelvin, 1.0 / unit.picosecond, 0.005 * unit.picosecond)
    integrator.setRandomNumberSeed(1)  # (the same run every time)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    cg = tmp_path / "go_cg.pdb"
    _write_frames(cg, top, context, integrator, n_frames=2, steps=500)
    state = context.getState(energy=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    result = backmap(str(cg), str(tmp_path / "go_aa.pdb"), method="ideal", progress=False)
    assert result.n_frames == 2 and result.n_residues == 20 and result.n_atoms == 154
