"""BackmapReporter on real OpenMM CG simulations (Reference platform)."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm
import openmm.app as app
import pytest
import torch
from openmm import unit

from backmap_plugin.api import Backmapper, backmap
from backmap_plugin.build.ideal import even_noisy_traces
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.io import dcd, mdtraj_formats
from backmap_plugin.reporter import BackmapReporter

DATA = Path(__file__).parent / "data"


def cg_simulation(extra_ion: bool = False, box: bool = False, wrapped: bool = False,
                  unbonded: tuple = (), topology_box: bool = True, custom_bonds: bool = False) -> app.Simulation:
    """A CA-bead model of trp-cage: harmonic CA-CA bonds, soft repulsion; optional ion and box (``wrapped``: its
    bonds periodic and its beads wrapped into it one by one, the molecule cut by its faces; ``topology_box``
    False: the box set on the System only); no bond after the residues of index ``unbonded``; ``custom_bonds``:
    the bonds a ``CustomBondForce`` (per-bond r0 and k)."""
    aa = md.load(str(DATA / "1l2y.pdb.gz"))[0]
    ca = aa.atom_slice(aa.topology.select("name CA"))
    top = ca.topology.to_openmm()
    positions = list(ca.xyz[0])
    if wrapped:  # the molecule's middle on a corner of the 2.5 nm box
        positions = list((ca.xyz[0] - ca.xyz[0].mean(0)) % 2.5)
    system = openmm.System()
    for _ in range(ca.n_atoms):
        system.addParticle(110.0)
    bonds = openmm.HarmonicBondForce()
    if custom_bonds:
        bonds = openmm.CustomBondForce("0.5*k*(r-r0)^2")
        bonds.addPerBondParameter("r0")
        bonds.addPerBondParameter("k")
    bonds.setUsesPeriodicBoundaryConditions(wrapped)
    for i in range(ca.n_atoms - 1):
        if i not in unbonded:
            bonds.addBond(i, i + 1, [0.38, 8000.0]) if custom_bonds else bonds.addBond(i, i + 1, 0.38, 8000.0)
    system.addForce(bonds)
    if extra_ion:
        chain = top.addChain("I")
        residue = top.addResidue("NA", chain)
        top.addAtom("NA", app.element.sodium, residue)
        system.addParticle(23.0)
        positions.append(np.array([3.0, 3.0, 3.0], dtype=np.float32))
    if box or wrapped:
        system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*v) for v in np.eye(3) * 2.5))
        if topology_box:
            top.setPeriodicBoxVectors(np.eye(3) * 2.5 * unit.nanometer)
    integrator = openmm.LangevinMiddleIntegrator(150 * unit.kelvin, 1.0 / unit.picosecond, 0.005 * unit.picoseconds)
    integrator.setRandomNumberSeed(7)  # (the same run every time)
    simulation = app.Simulation(top, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(np.array(positions) * unit.nanometer)
    return simulation


def test_every_reported_frame_is_written_with_all_atoms(tmp_path):
    simulation = cg_simulation()
    out, first = tmp_path / "aa.pdb", tmp_path / "first.pdb"
    with BackmapReporter(str(out), 10, batchFrames=4, firstFrameFile=str(first)) as reporter:
        simulation.reporters.append(reporter)
        reporter.reportInitial(simulation)
        simulation.step(90)
        assert first.exists()  # written at the first report
        assert reporter.framesReported == 10 and reporter.framesWritten == 8  # two full batches
    traj = md.load(str(out))
    assert traj.n_frames == 10
    assert traj.n_residues == 20 and traj.n_atoms == 154
    assert [a.name for a in traj.topology.residue(19).atoms][-1] == "OXT"
    # the CA atoms follow the CG beads of the run, brought to 3.8 A apart where the bonds fluctuate
    ca = traj.atom_slice(traj.topology.select("name CA")).xyz[-1]
    beads = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    evened = even_noisy_traces(torch.as_tensor(beads[None] * 10.0, dtype=torch.float32),
                               torch.ones(len(beads) - 1, dtype=torch.bool))[0][0].numpy() / 10.0
    np.testing.assert_allclose(ca, evened, atol=2e-3)
    assert md.load(str(first)).n_frames == 1


def test_ions_and_periodic_box_are_handled(tmp_path):
    simulation = cg_simulation(extra_ion=True, box=True)
    out = tmp_path / "aa.xtc"
    reporter = BackmapReporter(str(out), 5, batchFrames=3)
    simulation.reporters.append(reporter)
    simulation.step(20)
    reporter.close()
    reporter.close()  # twice is fine
    traj = md.load(str(out), top=reporter.topology)
    assert traj.n_frames == 4 and traj.n_residues == 20  # the ion is not a residue of the output
    # the simulation's times (5 steps of 5 fs a report) and box go with the frames
    np.testing.assert_allclose(traj.time, [0.025, 0.05, 0.075, 0.1], atol=1e-6)
    np.testing.assert_allclose(traj.unitcell_vectors, np.broadcast_to(np.eye(3) * 2.5, (4, 3, 3)), atol=1e-6)


def test_unmappable_topology_fails_at_the_first_report(tmp_path):
    simulation = cg_simulation()
    top = simulation.topology
    residue = list(top.residues())[4]
    residue.name = "XYZ"
    reporter = BackmapReporter(str(tmp_path / "aa.pdb"), 5)
    simulation.reporters.append(reporter)
    with pytest.raises(BackmapInputError, match="XYZ"):
        simulation.step(5)
    assert not (tmp_path / "aa.pdb").exists()


def test_bad_options_and_outputs_are_refused_before_the_run(tmp_path):
    """Checked when the reporter is made (they failed at the first report, a report interval into the run)."""
    with pytest.raises(BackmapInputError, match="does not exist"):
        BackmapReporter(str(tmp_path / "missing" / "aa.pdb"), 5)
    with pytest.raises(BackmapInputError, match="unsupported output file extension"):
        BackmapReporter(str(tmp_path / "aa.gro"), 5)
    with pytest.raises(ValueError, match="unknown method 'foo'"):
        BackmapReporter(str(tmp_path / "aa.pdb"), 5, method="foo")
    with pytest.raises(ValueError, match="samples must be a whole number, at least 1, got 0"):
        BackmapReporter(str(tmp_path / "aa.pdb"), 5, samples=0)
    # (a quantity or 10.5 steps failed in OpenMM or ran, a seed "a" failed at the first report)
    for options, message in (({"reportInterval": 10 * unit.picosecond}, "reportInterval must be a whole number of "
                              "steps, at least 1, got 10 ps"), ({"reportInterval": 10.5}, "got 10.5"),
                             ({"reportInterval": 5, "seed": "a"}, "seed must be a whole number, at least 0, got 'a'"),
                             ({"reportInterval": 5, "batchFrames": 0}, "batchFrames must be a whole number, at "
                              "least 1, got 0"),
                             # (names that need no topology: they stopped the run at the first report)
                             ({"reportInterval": 5, "device": "gpu"}, "unknown device 'gpu'"),
                             ({"reportInterval": 5, "mapping": "CA"}, "unknown mapping 'CA'")):
        with pytest.raises(ValueError, match=re.escape(message)):
            BackmapReporter(str(tmp_path / "aa.pdb"), **options)
    with pytest.raises(BackmapInputError, match="firstFrameFile is the output file"):
        BackmapReporter(str(tmp_path / "aa.pdb"), 5, firstFrameFile=str(tmp_path / "." / "aa.pdb"))
    with pytest.raises(ValueError, match=r"break distance must be a positive number of Angstrom .* got 5 A"):
        backmap(str(DATA / "1l2y.pdb.gz"), str(tmp_path / "x.pdb"), break_distance=5 * unit.angstrom)
    # OpenMM-facing: a break distance may be a quantity (it failed in the first report)
    simulation = cg_simulation()
    reporter = BackmapReporter(str(tmp_path / "aa.pdb"), 5, breakDistance=0.2 * unit.nanometer)
    simulation.reporters.append(reporter)
    simulation.step(5)
    reporter.close()
    assert md.load(str(tmp_path / "aa.pdb")).n_residues == 20  # every 3.8 A bond longer than 2 A: 20 segments
    assert sum(1 for a in md.load(str(tmp_path / "aa.pdb")).topology.atoms if a.name == "OXT") == 20


def test_hdf5_output_keeps_buffered_frames_at_exit(tmp_path):
    """A script that ends without close(): the buffered frames are written at exit (HDF5 lost them, PyTables
    closing its files first)."""
    out = tmp_path / "aa.h5"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_reporter import cg_simulation
        from backmap_plugin.reporter import BackmapReporter
        simulation = cg_simulation()
        simulation.reporters.append(BackmapReporter({str(out)!r}, 5, batchFrames=3))
        simulation.step(35)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert md.load(str(out)).n_frames == 7


def test_killed_run_keeps_reported_frames(tmp_path):
    """SIGKILL mid-run: the frames written so far are on disk and readable."""
    out = tmp_path / "aa.xtc"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_reporter import cg_simulation
        from backmap_plugin.reporter import BackmapReporter
        simulation = cg_simulation()
        reporter = BackmapReporter({str(out)!r}, 5, batchFrames=1)
        simulation.reporters.append(reporter)
        for block in range(1000):
            simulation.step(5)
            print(reporter.framesWritten, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    written = 0
    deadline = time.time() + 120
    while written < 6 and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        written = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert written >= 6
    traj = md.load(str(out), top=_topology_of_trpcage(tmp_path))
    assert traj.n_frames >= written
    assert np.isfinite(traj.xyz).all()


def _topology_of_trpcage(tmp_path):
    """The all-atom topology the reporter writes for the trp-cage CG model."""
    simulation = cg_simulation()
    state = simulation.context.getState(getPositions=True)
    path = tmp_path / "top.pdb"
    engine = Backmapper.from_openmm(simulation.topology, state.getPositions(asNumpy=True))
    md.Trajectory(engine.build(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[None]) / 10.0,
                  engine.topology).save_pdb(str(path))
    return str(path)


def test_all_atom_simulation_is_refused(tmp_path):
    pdb = app.PDBFile(str(DATA.parent.parent / "examples" / "trpcage.pdb"))
    system = openmm.System()
    for atom in pdb.topology.atoms():
        system.addParticle(12.0)
    integrator = openmm.VerletIntegrator(0.001)
    simulation = app.Simulation(pdb.topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(pdb.positions)
    simulation.reporters.append(BackmapReporter(str(tmp_path / "aa.pdb"), 1))
    with pytest.raises(BackmapInputError, match="not coarse-grained"):
        simulation.step(1)


def _beads_of_trpcage(side_chain_beads: bool):
    """An OpenMM topology, system and positions (nm) of trp-cage as beads: one per residue at its heavy-atom centre
    of mass, or (``side_chain_beads``) a CA bead and, but for glycine, a CB bead at its side chain's centroid;
    harmonic bonds between consecutive residues' first beads and from each CA to its CB."""
    aa = md.load(str(DATA / "1l2y.pdb.gz"))[0]
    top, system, bonds, positions = app.Topology(), openmm.System(), openmm.HarmonicBondForce(), []
    chain = top.addChain("A")
    first = []
    for residue in aa.topology.residues:
        heavy = [a.index for a in residue.atoms if a.element.symbol != "H"]
        side = [i for i in heavy if aa.topology.atom(i).name not in ("N", "CA", "C", "O", "OXT")]
        masses = np.array([aa.topology.atom(i).element.mass for i in heavy])
        res = top.addResidue(residue.name, chain, id=str(residue.resSeq))
        first.append(len(positions))
        if side_chain_beads:
            top.addAtom("CA", app.element.carbon, res)
            positions.append(aa.xyz[0, [a.index for a in residue.atoms if a.name == "CA"][0]])
            if side:
                top.addAtom("CB", app.element.carbon, res)
                positions.append(aa.xyz[0, side].mean(0))
                bonds.addBond(len(positions) - 2, len(positions) - 1, 0.2, 5000.0)
        else:
            top.addAtom("CA", app.element.carbon, res)
            positions.append((aa.xyz[0, heavy] * masses[:, None]).sum(0) / masses.sum())
    for particle in range(len(positions)):
        system.addParticle(100.0)
    for a, b in zip(first[:-1], first[1:]):
        bonds.addBond(a, b, float(np.linalg.norm(positions[a] - positions[b])), 8000.0)
    system.addForce(bonds)
    return top, system, np.array(positions, dtype=np.float64)


def test_a_virtual_site_is_no_bead():
    """One virtual site in one residue of a centre-of-mass model made the whole protein read as all-atom
    residues at their C-alpha atoms, silently; the system's virtual sites are left out, with a note."""
    top, system, positions = _beads_of_trpcage(side_chain_beads=False)
    residue = list(top.residues())[-1]
    top.addAtom("CB", app.element.carbon, residue)
    system.addParticle(0.0)
    system.setVirtualSite(system.getNumParticles() - 1, openmm.TwoParticleAverageSite(18, 19, 0.5, 0.5))
    positions = np.vstack([positions, positions[18:20].mean(0)])
    engine = Backmapper.from_openmm(top, positions * unit.nanometer, system=system, method="ideal")
    assert engine.mapping.name == "com" and engine.mapping_evidence.startswith("residue centres of mass")
    assert "left out 1 virtual site(s) (particles the system places from others: no beads)" in engine.report
    assert not engine.all_atom


def test_a_model_of_two_beads_per_residue_is_coarse_grained(tmp_path):
    """A model of C-alpha and side-chain beads (Go / UNRES-like) was refused by the reporter as "not
    coarse-grained", while backmap() reads the same topology at its C-alpha beads; the reporter reads it too."""
    top, system, positions = _beads_of_trpcage(side_chain_beads=True)
    integrator = openmm.LangevinMiddleIntegrator(150 * unit.kelvin, 1.0 / unit.picosecond, 0.002 * unit.picoseconds)
    integrator.setRandomNumberSeed(7)
    simulation = app.Simulation(top, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(positions * unit.nanometer)
    with BackmapReporter(str(tmp_path / "two_beads.pdb"), 5, batchFrames=2, method="ideal") as reporter:
        simulation.reporters.append(reporter)
        simulation.step(10)
    assert reporter.framesWritten == 2
    assert "only their CA atoms are read" in reporter.mappingEvidence
    assert md.load(str(tmp_path / "two_beads.pdb")).topology.n_residues == 20


def test_refined_frames_have_hydrogens_and_no_clashes(tmp_path):
    """refine=True: every written structure is completed with H and minimised."""
    from backmap_plugin.core import metrics

    simulation = cg_simulation()
    out = tmp_path / "aa_refined.pdb"
    with BackmapReporter(str(out), 10, batchFrames=2, refine=True) as reporter:
        simulation.reporters.append(reporter)
        simulation.step(20)
    traj = md.load(str(out))
    assert traj.n_frames == 2
    assert any(a.element.symbol == "H" for a in traj.topology.atoms)
    heavy = traj.atom_slice([a.index for a in traj.topology.atoms if a.element.symbol != "H"])
    bonds = np.array([[b[0].index, b[1].index] for b in heavy.topology.bonds])
    assert metrics.clashes(heavy.xyz * 10.0, bonds).sum() == 0


def test_martini3_simulation_topology(tmp_path):
    """A Martini 3 OpenMM topology (the real martinize2 beads of 6B0S, tests/data/martini3/cg.pdb): the reporter
    reads the BB and SC beads (it used to refuse them as not coarse-grained), writes every reported frame, and
    the frames are 6B0S's heavy atoms fitted to the beads (0.56 A from the all-atom structure, as from the file)."""
    from backmap_plugin.core import chemistry as chem
    from backmap_plugin.core import martini3 as m3
    from backmap_plugin.core import metrics
    from backmap_plugin.core.topology import gather_slots, read_residues
    from backmap_plugin.io.martini import martini_beads, martini_residues

    pdb = app.PDBFile(str(DATA / "martini3" / "cg.pdb"))
    system = openmm.System()
    for _ in pdb.topology.atoms():
        system.addParticle(72.0)  # no forces: the beads stay where they are
    simulation = app.Simulation(pdb.topology, system, openmm.VerletIntegrator(0.001),
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(pdb.positions)
    out = tmp_path / "aa.pdb"
    reporter = BackmapReporter(str(out), 5, batchFrames=2)
    simulation.reporters.append(reporter)
    reporter.reportInitial(simulation)
    simulation.step(10)
    reporter.close()
    assert reporter.mappingEvidence.startswith("Martini 3 protein beads")
    built = md.load(str(out))
    assert built.n_frames == 3 and built.topology.n_residues == 71
    truth = md.load(str(DATA / "martini3" / "aa.pdb.gz"))
    records, _ = read_residues(truth.topology, "aa.pdb.gz")
    ref, present = gather_slots(truth.xyz.astype(np.float64) * 10.0, records)
    got, got_present = gather_slots(built.xyz.astype(np.float64) * 10.0, read_residues(built.topology, "aa.pdb")[0])
    common = present & got_present
    rmsd = metrics.kabsch_rmsd(got[:, common], np.repeat(ref[:, common], 3, axis=0))
    assert np.all(rmsd < 0.65), rmsd
    # the output mapped to Martini 3 beads lies on the input beads (backbone and side-chain beads)
    cg = md.load(str(DATA / "martini3" / "cg.pdb"))
    intake = martini_residues(cg.topology, "cg.pdb")
    given = martini_beads(cg.xyz.astype(np.float64) * 10.0, intake.bead_index)[0]
    res_type = np.array([chem.RESIDUE_INDEX[r.name] for r in records])
    miss = np.linalg.norm(m3.martini3_bead_positions(got[0], got_present, res_type) - given, axis=-1)
    exists = m3.BEAD_EXISTS[res_type]
    assert np.sqrt((miss[exists] ** 2).mean()) < 0.3
    # the reporter tallies the same, each written frame once (the first one is built twice)
    tally = reporter.beadRmsd
    assert set(tally) == {"BB", "SC"}
    assert tally["BB"]["median"] == pytest.approx(np.sqrt((miss[:, 0] ** 2).mean()), abs=1e-4)
    assert tally["SC"]["median"] == pytest.approx(np.sqrt((miss[:, 1:][exists[:, 1:]] ** 2).mean()), abs=1e-4)
    assert len(reporter._engine.bead_fit.frames) == 3
    # its notes name the disulfides as backmap run does (chosen from the first batch, 2 frames; the topology's
    # bonds, from cg.pdb's CONECT records, hold the same pairs), and it counts them in every structure written
    assert [note for note in reporter.notes if "disulfide" in note or "cysteine" in note] == [
        "disulfides closed (Martini 3 cysteine pairs whose SC1 beads lie within 3.5 A in at least 50% of the first 2 "
        "frames; SC1-SC1 distance there, frames within 3.5 A): A CYS 334 - A CYS 369 (2.39 A, 2 of 2), A CYS 338 - "
        "A CYS 374 (2.41 A, 2 of 2); the input topology bonds the same pairs (SC1-SC1)"]
    assert reporter.disulfides == {("A CYS 334", "A CYS 369"): 3, ("A CYS 338", "A CYS 374"): 3}


@pytest.mark.parametrize("topology_box", [True, False])
def test_molecules_cut_by_the_box_are_made_whole(tmp_path, topology_box):
    """Beads wrapped into the box one by one (a LAMMPS or GROMACS snapshot; OpenMM simulates it with periodic
    bonds): the reporter builds the molecule whole (it got C-N bonds of 20 A and a bead RMSD it called 0), also
    where the box is set on the System only (it built 50 A peptides then, without a word)."""
    simulation = cg_simulation(wrapped=True, topology_box=topology_box)
    with BackmapReporter(str(tmp_path / "aa.xtc"), 5, batchFrames=2) as reporter:
        simulation.reporters.append(reporter)
        simulation.step(20)
    traj = md.load(str(tmp_path / "aa.xtc"), top=reporter.topology)
    pairs = [(a.index, b.index) for a, b in reporter.topology.bonds]
    lengths = md.compute_distances(traj, pairs) * 10.0
    assert lengths.max() < 1.7 and reporter.framesWritten == 4
    ca = traj.atom_slice(traj.topology.select("name CA")).xyz[-1]  # on the beads, whole images of them
    beads = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    shift = (ca - beads) / 2.5
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-3)
    np.testing.assert_allclose(traj.unitcell_lengths, 2.5, atol=1e-4)


def test_an_interrupt_while_a_batch_is_built_keeps_its_frames(tmp_path):
    """Ctrl-C while a batch is built (the slow part of a report), caught in a notebook that runs on: the batch's
    frames stay buffered and are written with the next (they were lost without a word)."""
    simulation = cg_simulation()
    with BackmapReporter(str(tmp_path / "aa.xtc"), 5, batchFrames=2, method="ideal") as reporter:
        simulation.reporters.append(reporter)
        simulation.step(10)
        build, calls = reporter._engine.build, []

        def interrupted(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise KeyboardInterrupt
            return build(*args, **kwargs)

        reporter._engine.build = interrupted
        with pytest.raises(KeyboardInterrupt):
            simulation.step(10)
        simulation.step(10)
    assert reporter.framesReported == reporter.framesWritten == 6
    assert md.load(str(tmp_path / "aa.xtc"), top=reporter.topology).time.tolist() == pytest.approx(
        [0.025 * k for k in range(1, 7)])


def test_chain_ids_that_pdb_cannot_hold_stop_the_first_report(tmp_path):
    """A chain id of four characters (a CHARMM segment) with .pdb output: refused at the first report (it was at the
    first batch write, batchFrames reports into the run); .cif output takes it."""
    simulation = cg_simulation()
    next(simulation.topology.chains()).id = "PROA"
    reporter = BackmapReporter(str(tmp_path / "aa.pdb"), 5, batchFrames=10)
    with pytest.raises(BackmapInputError, match=r"aa.pdb: chain id 'PROA' \(chain #0\) does not fit the "
                                                r"one-character PDB chain column; write .cif instead"):
        reporter.reportInitial(simulation)
    with BackmapReporter(str(tmp_path / "aa.cif"), 5, batchFrames=1, method="ideal") as reporter:
        reporter.reportInitial(simulation)
    assert [c.chain_id for c in md.load(str(tmp_path / "aa.cif")).topology.chains] == ["PROA"]


def _stretch_start(simulation, pairs, length: float = 0.5) -> None:
    """Set the simulation's beads with the bonds after the beads of index ``pairs`` stretched to ``length`` nm."""
    xyz = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    for i in pairs:
        bond = xyz[i + 1] - xyz[i]
        xyz[i + 1:] += bond * (length / np.linalg.norm(bond) - 1.0)
    simulation.context.setPositions(xyz * unit.nanometer)


def test_every_command_line_phrase_the_reporter_rewords_is_in_the_engine():
    """The reporter rewords the engine's command-line advice by pattern: a pattern that no longer matches a
    message of the engine (its wording changed) would let command-line advice through unnoticed."""
    import backmap_plugin.api as api
    from backmap_plugin.reporter import _REPORTER_WORDS

    # the engine's string literals run together, as Python joins a message's adjacent pieces
    source = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', Path(api.__file__).read_text()))
    for pattern, _ in _REPORTER_WORDS:
        assert pattern.search(source), pattern.pattern


def test_custom_bond_forces_bond_and_errors_name_the_reporters_options(tmp_path):
    """Bonds stretched to 5 A in six places: written as a ``CustomBondForce`` they are bonds as a
    ``HarmonicBondForce``'s are (the run was stopped at the first report); without bonds the error advises the
    reporter's ``breakDistance``, not the command line's ``--break-distance``."""
    simulation = cg_simulation(custom_bonds=True)
    _stretch_start(simulation, (1, 4, 7, 10, 13, 16))
    with BackmapReporter(str(tmp_path / "aa.pdb"), 5, batchFrames=1, mapping="ca", method="ideal") as reporter:
        reporter.reportInitial(simulation)
    assert reporter.framesWritten == 1 and sum(a.name == "OXT" for a in reporter.topology.atoms) == 1
    simulation = cg_simulation(unbonded=tuple(range(19)))
    _stretch_start(simulation, (1, 4, 7, 10, 13, 16))
    reporter = BackmapReporter(str(tmp_path / "none.pdb"), 5, mapping="ca", method="ideal")
    with pytest.raises(BackmapInputError, match="pass breakDistance") as error:
        reporter.reportInitial(simulation)
    assert "--" not in str(error.value)


def test_molecules_one_after_another_in_a_chain_are_apart_where_the_force_field_bonds_none(tmp_path):
    """Two molecules in one Topology chain, numbered on, the end of one 3.8 A from the start of the other: the
    force field bonds no pair across, so they are built apart (they were peptide-bonded without a word), with a
    note; a chain of molecules each of two residues is not refused as falling apart."""
    simulation = cg_simulation(unbonded=(9,))
    with BackmapReporter(str(tmp_path / "aa.pdb"), 5, batchFrames=1) as reporter:
        simulation.reporters.append(reporter)
        simulation.step(5)
    assert sum(a.name == "OXT" for a in reporter.topology.atoms) == 2
    assert ("chain broken where the force field bonds no consecutive residues (molecules one after another in a "
            "chain): chain A residue GLY 10 - GLY 11") in reporter.notes
    simulation = cg_simulation(unbonded=tuple(range(1, 19, 2)))
    with BackmapReporter(str(tmp_path / "pairs.xtc"), 5, batchFrames=1) as reporter:
        simulation.reporters.append(reporter)
        simulation.step(5)
    assert sum(a.name == "OXT" for a in reporter.topology.atoms) == 10


def test_disulfides_are_chosen_from_the_first_batch(tmp_path):
    """The cysteines of residues 1 and 4 of an NMR ensemble (trp-cage, 1L2Y) can meet in its first model and in 2
    of its next 9: the reporter bonds them nowhere, as backmap() on the same 10 frames (it bonded them from the
    first frame alone, wherever they could meet)."""
    from conftest import FakeSimulation, FakeState

    ca = md.load(str(DATA / "1l2y.pdb.gz"))[:10]
    ca = ca.atom_slice(ca.topology.select("name CA"))
    for k in (0, 3):
        ca.topology.residue(k).name = "CYS"
    ca.save_pdb(str(tmp_path / "cys.pdb"))
    result = backmap(str(tmp_path / "cys.pdb"), str(tmp_path / "run.xtc"), method="ideal", progress=False)
    assert not any("disulfides closed" in line for line in result.report)
    simulation = FakeSimulation(ca.topology.to_openmm())
    with BackmapReporter(str(tmp_path / "aa.xtc"), 10, batchFrames=10, method="ideal",
                         firstFrameFile=str(tmp_path / "first.pdb")) as reporter:
        for xyz in ca.xyz:
            reporter.report(simulation, FakeState(xyz))
    assert reporter.disulfides == {} and not [b for b in reporter.topology.bonds if b[0].name == "SG"]
    assert "SSBOND" in (tmp_path / "first.pdb").read_text()  # (the first frame's own pairs, a preview)
    # refined too: the frames get free thiols (HG), not the first frame's disulfide
    with BackmapReporter(str(tmp_path / "refined.pdb"), 10, batchFrames=10, method="ideal", refine=True,
                         firstFrameFile=str(tmp_path / "first_refined.pdb")) as reporter:
        for xyz in ca.xyz:
            reporter.report(simulation, FakeState(xyz))
    refined = md.load(str(tmp_path / "refined.pdb")).topology
    assert sorted(a.residue.resSeq for a in refined.atoms if a.name == "HG" and a.residue.name == "CYS") == [1, 4]


def test_closed_before_the_first_report_stays_closed(tmp_path):
    """close() before any report: later reports raise, no file is made (it started writing)."""
    simulation = cg_simulation()
    reporter = BackmapReporter(str(tmp_path / "aa.pdb"), 5)
    reporter.close()
    simulation.reporters.append(reporter)
    with pytest.raises(ValueError, match="is closed"):
        simulation.step(5)
    assert not (tmp_path / "aa.pdb").exists()


@pytest.mark.parametrize("ext", [".pdb", ".cif", ".xtc", ".dcd", ".h5"])
def test_append_continues_the_file_of_a_restarted_simulation(tmp_path, monkeypatch, ext):
    """append=True (OpenMM's reporters' option): the first run's frames are kept as written, the new ones follow."""
    monkeypatch.setattr(mdtraj_formats, "COPY_CHUNK", 2)  # the binary formats' kept frames copied in two reads
    out = str(tmp_path / f"aa{ext}")
    simulation = cg_simulation(box=True)
    with BackmapReporter(out, 5, batchFrames=2) as reporter:
        simulation.reporters.append(reporter)
        simulation.step(15)
    load = {} if ext == ".h5" else {"top": reporter.topology}
    before = md.load(out, **load)
    simulation.reporters.clear()
    with BackmapReporter(out, 5, batchFrames=2, append=True) as restarted:
        simulation.reporters.append(restarted)
        simulation.step(10)
    after = md.load(out, **load)
    assert after.n_frames == 5 and restarted.framesWritten == 2
    np.testing.assert_array_equal(after.xyz[:3], before.xyz)
    if ext in (".xtc", ".h5"):
        np.testing.assert_allclose(after.time, [0.025, 0.05, 0.075, 0.1, 0.125], atol=1e-6)
    if ext == ".dcd":  # (in its header, where mdtraj does not read them)
        np.testing.assert_allclose(dcd.clock(out), (0.025, 0.025), rtol=1e-6)
    if ext not in (".pdb", ".cif"):
        np.testing.assert_allclose(after.unitcell_vectors[3:], np.broadcast_to(np.eye(3) * 2.5, (2, 3, 3)),
                                   atol=1e-6)
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no copy left behind


@pytest.mark.parametrize("ext", [".xtc", ".h5", ".dcd"])
def test_append_after_a_restart_from_an_older_checkpoint(tmp_path, ext):
    """A run checkpointed at 0.075 ps and stopped at 0.15 ps, restarted from the checkpoint: the frames after it
    come again, and the old ones at those times are left out, with a warning (times ran 0.025 ... 0.15, then 0.1
    ... again; DCD: the frames came twice, its header held no times); a restart whose frames were still in the
    batch when the run stopped says which times are missing (DCD: the header then gives no times, they are not
    evenly spaced)."""
    out = str(tmp_path / f"aa{ext}")
    simulation = cg_simulation(box=True)
    with BackmapReporter(out, 5, batchFrames=2) as reporter:
        simulation.reporters.append(reporter)
        simulation.step(15)
        checkpoint = simulation.context.createCheckpoint()
        simulation.step(15)
    simulation.reporters.clear()
    simulation.context.loadCheckpoint(checkpoint)
    with pytest.warns(UserWarning, match=r"3 frame\(s\) at or after 0.1 ps, the restarted run's first, were left"):
        with BackmapReporter(out, 5, batchFrames=2, append=True) as restarted:
            simulation.reporters.append(restarted)
            simulation.step(15)
    after = md.load(out, **({} if ext == ".h5" else {"top": reporter.topology}))
    if ext == ".dcd":
        assert after.n_frames == 6
        np.testing.assert_allclose(dcd.clock(out), (0.025, 0.025), rtol=1e-6)
    else:
        np.testing.assert_allclose(after.time, 0.025 * np.arange(1, 7), atol=1e-6)
    assert restarted.notes[0].startswith(f"{out}: 3 frame(s) at or after 0.1 ps")
    simulation.reporters.clear()
    simulation.step(20)  # four reports' worth never written (a run stopped with them in its batch)
    with pytest.warns(UserWarning, match=r"no frames between 0.15 and 0.275 ps: the run stopped with them"):
        with BackmapReporter(out, 5, batchFrames=2, append=True) as later:
            simulation.reporters.append(later)
            simulation.step(5)
    assert later.notes[0].endswith("(a checkpoint every reportInterval x batchFrames = 10 steps loses none)")
    if ext == ".dcd":
        assert dcd.clock(out) is None


def test_append_to_a_single_structure_and_refusals(tmp_path):
    """A one-frame PDB becomes model 1; a file of another system, or none, is refused and left as it was."""
    out = tmp_path / "aa.pdb"
    simulation = cg_simulation()
    with BackmapReporter(str(out), 5) as reporter:
        simulation.reporters.append(reporter)
        simulation.step(5)
    assert "MODEL" not in out.read_text()
    simulation.reporters.clear()
    with BackmapReporter(str(out), 5, append=True) as restarted:
        simulation.reporters.append(restarted)
        simulation.step(5)
    assert md.load(str(out)).n_frames == 2 and out.read_text().count("MODEL ") == 2
    with pytest.raises(BackmapInputError, match="append=True, but the file does not exist"):
        BackmapReporter(str(tmp_path / "none.xtc"), 5, append=True)
    # the same beads read as 20 one-residue chains (a 2 A break distance): other atoms than the file holds
    for name in ("aa.pdb", "aa.cif", "aa.xtc"):
        if name != "aa.pdb":
            with BackmapReporter(str(tmp_path / name), 5) as reporter:
                simulation.reporters[:] = [reporter]
                simulation.step(5)
        text = (tmp_path / name).read_bytes()
        other = BackmapReporter(str(tmp_path / name), 5, append=True, breakDistance=2.0, batchFrames=1)
        simulation.reporters[:] = [other]
        with pytest.raises(BackmapInputError, match="cannot append"):
            simulation.step(5)
        assert (tmp_path / name).read_bytes() == text
        with pytest.raises(ValueError, match="is closed"):
            simulation.step(5)


def test_two_reporters_on_one_file_are_refused(tmp_path):
    """A second reporter given a file another writes (two reporters in one script, a backmap run beside it) is
    refused when made (XTC kept 10 of 30 frames, DCD 6); the file is free again once the first is closed."""
    simulation = cg_simulation()
    out = tmp_path / "aa.xtc"
    with BackmapReporter(str(out), 5) as first:
        with pytest.raises(BackmapInputError, match=r"aa.xtc: another writer is writing this output \(a "
                                                    r"BackmapReporter, pid \d+ on .+\); close the earlier one"):
            BackmapReporter(str(out), 5)
        simulation.reporters.append(first)
        simulation.step(10)
    with BackmapReporter(str(out), 5, append=True) as second:
        simulation.reporters[:] = [second]
        simulation.step(10)
    assert md.load(str(out), top=first.topology).n_frames == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aa.xtc"]
