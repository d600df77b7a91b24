"""CALVADOS 3 (force_fields/calvados3.py): parameters, beads, bonds, restraints, energies; a real CALVADOS run."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

openmm = pytest.importorskip("openmm")
from openmm import app, unit  # noqa: E402

from backmap_plugin.core import chemistry as chem  # noqa: E402
from backmap_plugin.core.errors import BackmapInputError  # noqa: E402
from backmap_plugin.force_fields.calvados3 import (  # noqa: E402
    CALVADOS3_FORCE_GROUPS,
    RESTRAINT_K,
    create_calvados3_system,
    histidine_charge,
    load_calvados3_parameters,
    read_domains,
)
from backmap_plugin.force_fields.hps import (  # noqa: E402
    AH_CUTOFF,
    BOND_K,
    DH_CUTOFF,
    ashbaugh_hatch_energy,
    debye_huckel_energy,
    debye_huckel_parameters,
)

ROOT = Path(__file__).resolve().parents[1]
#: The example's input: HIV-1 capsid protein, residues 11-220 of PDB 1E6J, heavy atoms only.
CAPSID = ROOT / "examples" / "hiv1_capsid.pdb"
CAPSID_DOMAINS = [[1, 135], [140, 210]]
#: Trp-cage (1L2Y), 20 residues with hydrogens.
TRPCAGE = ROOT / "tests" / "data" / "1l2y.pdb.gz"
#: A real CALVADOS 3 run (calvados 0.8.0): see its README.md.
TIA1 = ROOT.parent / "shared" / "data" / "calvados3" / "TIA1"
KT_293 = 293.0 * 0.0083144626  # kJ/mol


def _forces(system):
    return {f.getName(): f for f in system.getForces()}


def _context(system, positions, platform="Reference"):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    return context


def _energies(context):
    return {name: context.getState(getEnergy=True, groups={group}).getPotentialEnergy()
            .value_in_unit(unit.kilojoule_per_mole) for name, group in CALVADOS3_FORCE_GROUPS.items()}


def _nm(positions):
    return np.asarray(positions.value_in_unit(unit.nanometer), dtype=np.float64)


def _bonds(force):
    rows = [force.getBondParameters(k) for k in range(force.getNumBonds())]
    return ([(i, j) for i, j, _, _ in rows], np.array([b.value_in_unit(unit.nanometer) for _, _, b, _ in rows]),
            np.array([k.value_in_unit(unit.kilojoule_per_mole / unit.nanometer**2) for _, _, _, k in rows]))


@pytest.fixture(scope="module")
def tia1():
    """TIA1: (folder, domains, topology, system, positions) built from input_aa.pdb at the run's settings."""
    if not TIA1.is_dir():
        pytest.skip("CALVADOS 3 sample ../shared/data/calvados3/TIA1 not present")
    domains = read_domains(TIA1 / "domains.yaml", "TIA1")
    top, system, positions = create_calvados3_system(TIA1 / "input_aa.pdb", domains, temperature=293.0,
                                                     ionicStrength=0.15, pH=7.0, box=123.0)
    return domains, top, system, positions


@pytest.fixture(scope="module")
def capsid():
    return create_calvados3_system(CAPSID, CAPSID_DOMAINS, temperature=293.0)


# ---------------------------------------------------------------- parameters


def test_parameters_are_the_calvados3_table():
    table = load_calvados3_parameters()
    assert sorted(table) == sorted(chem.ONE_TO_THREE)
    assert all(chem.ONE_TO_THREE[k] == v.three for k, v in table.items())
    assert table["W"].lambda_ == pytest.approx(1.033450123574512)  # CALVADOS 3 (CALVADOS 2: 0.989)
    assert table["E"].lambda_ == pytest.approx(0.000249590539426)
    assert table["G"].sigma == pytest.approx(0.45) and table["W"].sigma == pytest.approx(0.678)
    assert table["R"].charge == 1 and table["D"].charge == -1 and table["H"].charge == 0
    assert histidine_charge(7.0) == pytest.approx(1 / 11) and histidine_charge(6.0) == pytest.approx(0.5)


# ---------------------------------------------------------------- construction, no corpus needed


def test_capsid_beads_bonds_restraints_and_topology(capsid):
    top, system, positions = capsid
    xyz = _nm(positions)
    assert system.getNumParticles() == top.getNumAtoms() == 210
    residues = list(top.residues())
    assert [r.id for r in residues] == [str(k) for k in range(11, 221)]
    assert [c.id for c in top.chains()] == ["P"]
    assert all(len(list(r.atoms())) == 1 and next(r.atoms()).name == "CA" for r in residues)

    # beads: heavy-atom centre of mass of each residue, in the input's frame
    pdb = app.PDBFile(str(CAPSID))
    aa = _nm(pdb.getPositions(asNumpy=True))
    for k, residue in enumerate(pdb.topology.residues()):
        atoms = list(residue.atoms())
        mass = np.array([a.element.mass.value_in_unit(unit.dalton) for a in atoms])
        com = (aa[[a.index for a in atoms]] * mass[:, None]).sum(axis=0) / mass.sum()
        np.testing.assert_allclose(xyz[k], com, atol=1e-9)

    forces = _forces(system)
    pairs, lengths, ks = _bonds(forces["CALVADOS3Bonds"])
    assert pairs == [(i, i + 1) for i in range(209)]
    assert np.all(ks == BOND_K)
    inside = np.zeros(210, bool)
    for a, b in CAPSID_DOMAINS:
        inside[a - 1:b] = True
    touches = inside[:-1] | inside[1:]  # a bond with a residue in a domain keeps the input distance
    np.testing.assert_allclose(lengths[touches], np.linalg.norm(np.diff(xyz, axis=0), axis=1)[touches], atol=1e-12)
    np.testing.assert_allclose(lengths[~touches], 0.38)
    assert (~touches).sum() == 3  # linker positions 136-139: bonds 136-137, 137-138, 138-139

    rpairs, rlengths, rks = _bonds(forces["CALVADOS3Restraints"])
    expected = [(i, j) for a, b in CAPSID_DOMAINS for i in range(a - 1, b) for j in range(i + 2, b)
                if np.linalg.norm(xyz[i] - xyz[j]) <= 0.9]
    assert sorted(rpairs) == expected
    assert np.all(rks == RESTRAINT_K)
    np.testing.assert_allclose(rlengths, [np.linalg.norm(xyz[i] - xyz[j]) for i, j in rpairs], atol=1e-12)

    excluded = {tuple(sorted(forces["AshbaughHatch"].getExclusionParticles(k)))
                for k in range(forces["AshbaughHatch"].getNumExclusions())}
    assert excluded == set(pairs) | set(rpairs)
    assert forces["DebyeHueckel"].getNumExclusions() == len(excluded)

    energies = _energies(_context(system, positions))
    assert energies["restraints"] == pytest.approx(0.0, abs=1e-6)  # every restraint at its input distance


def test_charges_and_masses_follow_ph_and_termini(capsid):
    top, system, _ = capsid
    names = [r.name for r in top.residues()]
    table = {p.three: p for p in load_calvados3_parameters().values()}
    charges = np.array([_forces(system)["DebyeHueckel"].getParticleParameters(i)[0] for i in range(len(names))])
    expected = np.array([histidine_charge(7.0) if n == "HIS" else table[n].charge for n in names])
    expected[0] += 1
    expected[-1] -= 1
    np.testing.assert_allclose(charges, expected)
    assert names.count("HIS") == 4 and charges[names.index("HIS")] == pytest.approx(1 / 11)
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(names))])
    extra = masses - [table[n].mass for n in names]
    np.testing.assert_allclose(extra, np.r_[2.0, np.zeros(len(names) - 2), 16.0])

    _, plain, _ = create_calvados3_system(CAPSID, CAPSID_DOMAINS, pH=5.0, terminalCharges=False)
    q = [_forces(plain)["DebyeHueckel"].getParticleParameters(i)[0] for i in range(len(names))]
    assert q[0] == table[names[0]].charge and q[-1] == table[names[-1]].charge
    assert q[names.index("HIS")] == pytest.approx(1 / (1 + 10**-1))


def test_pair_energies_match_the_formulas_with_exclusions():
    """Trp-cage with hydrogens, one domain 3-18: AH and DH by hand over the pairs that are not excluded."""
    table = {p.three: p for p in load_calvados3_parameters().values()}
    top, system, positions = create_calvados3_system(TRPCAGE, [[3, 18]], temperature=300.0, ionicStrength=0.1)
    xyz = _nm(positions)
    names = [r.name for r in top.residues()]
    n = len(names)
    forces = _forces(system)
    excluded = {tuple(sorted(forces["AshbaughHatch"].getExclusionParticles(k)))
                for k in range(forces["AshbaughHatch"].getNumExclusions())}
    i, j = np.triu_indices(n, 1)
    keep = np.array([(a, b) not in excluded for a, b in zip(i, j)])
    i, j = i[keep], j[keep]
    r = np.linalg.norm(xyz[i] - xyz[j], axis=1)
    sig = np.array([table[x].sigma for x in names])
    lam = np.array([table[x].lambda_ for x in names])
    q = np.array([forces["DebyeHueckel"].getParticleParameters(k)[0] for k in range(n)])
    prefactor, kappa = debye_huckel_parameters(300.0, 0.1)
    ah = ashbaugh_hatch_energy(r, 0.5 * (sig[i] + sig[j]), 0.5 * (lam[i] + lam[j]), cutoff=AH_CUTOFF).sum()
    dh = debye_huckel_energy(r, q[i] * q[j], prefactor, kappa, cutoff=DH_CUTOFF).sum()
    energies = _energies(_context(system, positions))
    assert energies["ashbaugh_hatch"] == pytest.approx(ah, rel=1e-6, abs=1e-6)
    assert energies["debye_huckel"] == pytest.approx(dh, rel=1e-6, abs=1e-6)
    assert len(excluded) > n - 1  # restrained pairs are excluded besides the bonds


def test_topology_and_positions_input_and_chains():
    """Two chains from an OpenMM Topology: no bond between them, termini charged per chain."""
    with gzip.open(TRPCAGE, "rt") as handle:
        pdb = app.PDBFile(handle)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    shifted = [p + openmm.Vec3(3.0, 0, 0) * unit.nanometer for p in pdb.positions]
    modeller.add(pdb.topology, shifted)
    top, system, _ = create_calvados3_system(modeller.topology, [[2, 19], [22, 39]],
                                             positions=modeller.positions)
    assert [len(list(c.residues())) for c in top.chains()] == [20, 20]
    pairs, _, _ = _bonds(_forces(system)["CALVADOS3Bonds"])
    assert (19, 20) not in pairs and len(pairs) == 38
    q = [_forces(system)["DebyeHueckel"].getParticleParameters(k)[0] for k in range(40)]
    assert q[0] == q[20] == 1.0 and q[19] == q[39] == -1.0  # N: ASN, C: SER
    rpairs, _, _ = _bonds(_forces(system)["CALVADOS3Restraints"])
    assert all((i < 20) == (j < 20) for i, j in rpairs)
    same, _, _ = create_calvados3_system(modeller, [[2, 19], [22, 39]])  # any object with topology/positions
    assert same.getNumAtoms() == 40


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not within residues 1-210"):
        create_calvados3_system(CAPSID, [[1, 211]])
    with pytest.raises(ValueError, match="overlaps domain 1"):
        create_calvados3_system(CAPSID, [[1, 100], [[150, 160], [90, 95]]])
    with pytest.raises(ValueError, match="positions are needed"):
        create_calvados3_system(app.PDBFile(str(CAPSID)).topology, [])
    with pytest.raises(BackmapInputError, match="no such file"):
        create_calvados3_system(tmp_path / "missing.pdb")
    with pytest.raises(ValueError, match="shorter than twice"):
        create_calvados3_system(CAPSID, CAPSID_DOMAINS, box=5.0)
    (tmp_path / "domains.yaml").write_text("A:\n - [1, 5]\nB:\n - [2, 3]\n - [[5, 6], [8, 9]]\n")
    assert read_domains(tmp_path / "domains.yaml", "B") == [[2, 3], [[5, 6], [8, 9]]]
    with pytest.raises(BackmapInputError, match="pass name="):
        read_domains(tmp_path / "domains.yaml")


def test_linker_is_read_from_the_force_field(capsid):
    """Four small linker residues (SPTS): their 0.38 nm bonds tell, where the start's distances cannot."""
    from backmap_plugin.api import Backmapper

    top, system, positions = capsid
    linker = np.zeros(top.getNumAtoms(), bool)
    linker[CAPSID_DOMAINS[0][1]:CAPSID_DOMAINS[1][0] - 1] = True
    told = Backmapper.from_openmm(top, positions, system=system, method="ideal")
    assert np.array_equal(told.mapping.ca_residues, linker), told.mapping_evidence
    assert "C-alpha beads in P:146-149" in told.mapping_evidence and "3 bonds of 3.80 A" in told.mapping_evidence
    # the starting beads all sit at centres of mass: from their distances alone, every residue is one
    alone = Backmapper.from_openmm(top, positions, method="ideal")
    assert alone.mapping.name == "com" and alone.mapping.ca_residues is None, alone.mapping_evidence


def test_short_langevin_run_stays_finite(capsid, tmp_path):
    from backmap_plugin import BackmapReporter

    top, system, positions = capsid
    integrator = openmm.LangevinMiddleIntegrator(293.0 * unit.kelvin, 0.01 / unit.picosecond, 0.01 * unit.picosecond)
    integrator.setRandomNumberSeed(7)
    simulation = app.Simulation(top, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(293.0 * unit.kelvin, 7)
    reporter = BackmapReporter(str(tmp_path / "aa.pdb"), 50, batchFrames=2, method="ideal")
    simulation.reporters.append(reporter)
    simulation.step(100)
    assert reporter.framesWritten == 2 and "C-alpha beads in P:146-149 " in reporter.mappingEvidence
    reporter.close()
    state = simulation.context.getState(getPositions=True, getEnergy=True)
    xyz = _nm(state.getPositions(asNumpy=True))
    assert np.isfinite(xyz).all()
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    restraints = _energies(simulation.context)["restraints"]
    assert restraints / _forces(system)["CALVADOS3Restraints"].getNumBonds() < KT_293  # domains held


# ---------------------------------------------------------------- the real CALVADOS 3 run (TIA1)


def test_tia1_beads_equal_the_calvados_topology(tia1):
    md = pytest.importorskip("mdtraj")
    _, top, _, positions = tia1
    reference = md.load(str(TIA1 / "top.pdb"))
    ours = _nm(positions) * 10.0
    theirs = reference.xyz[0].astype(np.float64) * 10.0
    offset = (theirs - ours).mean(axis=0)  # CALVADOS moves the protein to the box centre, no rotation
    deviation = np.linalg.norm(theirs - ours - offset, axis=1)
    assert np.sqrt((deviation**2).mean()) < 0.002 and deviation.max() < 0.002  # Angstrom (PDB rounding)
    assert [r.name for r in top.residues()] == [r.name for r in reference.topology.residues]
    assert top.getNumAtoms() == 275


def test_tia1_restraints_and_bonds(tia1):
    domains, _, system, positions = tia1
    forces = _forces(system)
    assert forces["CALVADOS3Restraints"].getNumBonds() == 1277  # as the CALVADOS run reported
    xyz = _nm(positions)
    inside = np.zeros(275, bool)
    for a, b in domains:
        inside[a - 1:b] = True
    pairs, lengths, _ = _bonds(forces["CALVADOS3Bonds"])
    assert len(pairs) == 274
    touches = inside[:-1] | inside[1:]
    np.testing.assert_allclose(lengths[touches], np.linalg.norm(np.diff(xyz, axis=0), axis=1)[touches], atol=1e-12)
    np.testing.assert_allclose(lengths[~touches], 0.38)
    assert (~touches).sum() == 31


def test_tia1_trajectory_energies(tia1):
    """Frames of the real run: finite energies, restraints and bonds near equipartition (the run was stable)."""
    md = pytest.importorskip("mdtraj")
    _, _, system, positions = tia1
    n_restraints = _forces(system)["CALVADOS3Restraints"].getNumBonds()
    traj = md.load(str(TIA1 / "traj.dcd"), top=str(TIA1 / "top.pdb"))
    assert traj.n_frames == 20
    context = _context(system, positions, platform="CPU")
    for frame in traj.xyz:
        context.setPositions(frame.astype(np.float64))
        energies = _energies(context)
        assert all(np.isfinite(v) for v in energies.values())
        # 0.5 kT per bond at equilibrium; measured 0.37-0.53 kT: bond lengths are the run's
        assert energies["bonds"] / 274 < KT_293
        # measured 0.15-0.22 kT per restraint: restraint set and rest lengths are the run's
        assert energies["restraints"] / n_restraints < 0.5 * KT_293
        assert energies["ashbaugh_hatch"] < 0  # compact, no clashes


def test_mmcif_chains_are_named_as_backmap_run_names_them():
    """Real 1NCB rows (tests/data/README.md): the beads of chains N and H came out in chains A and C (OpenMM's PDBx
    reader took label chain ids, which outnumber author ids there), which backmap run, refine and validate call N
    and H."""
    path = Path(__file__).resolve().parent / "data" / "1ncb_n81-85_h81-84.cif.gz"
    topology, _, _ = create_calvados3_system(path)
    assert [c.id for c in topology.chains()] == ["N", "H"]
    assert [f"{r.chain.id}:{r.name}{r.id}" for r in topology.residues()][5:7] == ["H:GLN81", "H:ILE82"]


#: Real rows of 1NCB (chain H: 82, 82A, 82B, 82C) and 1DEU (residues 6P ... 38P of the propeptide, then 1 ... 13 of
#: the mature enzyme), tests/data/README.md.
NCB = ROOT / "tests" / "data" / "1ncb_n81-85_h81-84.cif.gz"
NCB_PDB = ROOT / "tests" / "data" / "1ncb_n81-85_h81-84_protein.pdb.gz"
PROPEPTIDE = ROOT / "tests" / "data" / "1deu_ca_propeptide.pdb.gz"


def _residue_ids(topology) -> list:
    """Number and insertion code of each residue of an OpenMM topology (``82A``)."""
    return [f"{r.id}{r.insertionCode.strip()}" for r in topology.residues()]


@pytest.mark.parametrize("path", [NCB, NCB_PDB], ids=["mmcif", "pdb"])
def test_beads_keep_the_insertion_codes(path):
    """The beads of 1NCB's chain H were numbered 82, 82, 82, 82 (the codes A, B, C of the structure dropped)."""
    topology, _, _ = create_calvados3_system(path)
    assert _residue_ids(topology)[5:] == ["81", "82", "82A", "82B", "82C", "83", "84"]


def test_backmapped_beads_are_numbered_as_the_structure(tmp_path):
    """1DEU's propeptide (6P ... 38P, then 1 ... 13): its beads lost the code P, and a run's frames backmapped came
    out numbered 6 ... 38, 1 ... 13, its residues 6-13 named as the mature enzyme's (written with OpenMM's PDB
    writer, keepIds, and handed to backmap; or to the reporter's Backmapper.from_openmm)."""
    from backmap_plugin.api import Backmapper, backmap

    with gzip.open(PROPEPTIDE, "rt") as handle:
        structure = app.PDBFile(handle)
    topology, _, positions = create_calvados3_system(structure)
    assert _residue_ids(topology) == _residue_ids(structure.topology)
    with open(tmp_path / "cg.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, positions, handle, keepIds=True)
    backmap(tmp_path / "cg.pdb", output=tmp_path / "aa.pdb", method="ideal", progress=False)
    with open(tmp_path / "aa.pdb") as handle:
        assert [f"{r.id}{r.insertionCode.strip()}" for r in app.PDBFile(handle).topology.residues()] == \
            _residue_ids(structure.topology)
    engine = Backmapper.from_openmm(topology, positions, method="ideal")
    assert [engine.protein.residue_id(k) for k in (0, 32, 33)] == ["6P", "38P", "1"]
