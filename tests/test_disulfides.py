"""Disulfides closed by the builders (build/disulfides.py), from the C-alpha trace and the centres of mass of
6B0S chain A (tests/data/martini3/aa.pdb.gz: C334-C369 and C338-C374, SG-SG 2.04 / 2.06 A, two free cysteines
none), through backmap and refine."""

from __future__ import annotations

from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch

from backmap_plugin.api import Backmapper, backmap
from backmap_plugin.build.disulfides import CLEARANCE, close_disulfides
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.geometry import bond_angle
from backmap_plugin.core.topology import gather_slots, protein_topology, read_residues

AA = Path(__file__).resolve().parent / "data" / "martini3" / "aa.pdb.gz"
#: The C-alpha trace of an antibody chain: 5CBA chain B (tests/data/README.md), disulfide C23-C88.
FV_TRACE = Path(__file__).resolve().parent / "data" / "5cba_chain_b_ca.pdb.gz"
BONDED = {("CYS334", "CYS369"), ("CYS338", "CYS374")}


def _sg_pairs(path: Path, cutoff: float = 2.5) -> dict:
    """{(residue, residue): SG-SG distance} of the SG pairs closer than ``cutoff``."""
    traj = md.load(str(path))
    sg = [a for a in traj.topology.atoms if a.name == "SG"]
    xyz = traj.xyz[0][[a.index for a in sg]] * 10
    return {(str(sg[i].residue), str(sg[j].residue)): float(np.linalg.norm(xyz[i] - xyz[j]))
            for i in range(len(sg)) for j in range(i + 1, len(sg)) if np.linalg.norm(xyz[i] - xyz[j]) < cutoff}


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """The C-alpha trace of 6B0S chain A."""
    aa = md.load(str(AA))
    path = tmp_path_factory.mktemp("ss") / "ca.pdb"
    aa.atom_slice(aa.topology.select("name CA")).save_pdb(str(path))
    return path


def test_a_trace_gets_its_disulfides(tmp_path, trace):
    """The two disulfides of the crystal, S-S at its bond length (they came out 3-4 A apart, and refine made four
    free thiols); none with disulfides=False."""
    result = backmap(trace, tmp_path / "aa.pdb", progress=False)
    made = _sg_pairs(tmp_path / "aa.pdb")
    assert set(made) == BONDED
    assert all(abs(d - chem.BOND_SG_SG) < 0.15 for d in made.values())
    assert "disulfides closed (cysteine pairs whose SG atoms can meet): A CYS 334 - A CYS 369, A CYS 338 - A CYS 374" \
        in result.report
    free = backmap(trace, tmp_path / "free.pdb", progress=False, disulfides=False)
    assert not _sg_pairs(tmp_path / "free.pdb") and not any("disulfides" in line for line in free.report)


@pytest.mark.parametrize("method", ["model", "ideal"])
def test_martini_beads_give_disulfides_at_their_bond_length(tmp_path, method):
    """The real Martini 3 run of 6B0S (tests/data/martini3, 5 frames): its two disulfides in every frame with S-S
    and CB-SG-SG as a disulfide has them (the Martini 3 model left 1.43-2.45 A and 76-141 degrees: its fit pulled the
    SG atoms together without closing the bond; validate did not see it)."""
    out = tmp_path / "aa.pdb"
    backmap(str(AA.parent / "md.xtc"), str(out), top=str(AA.parent / "md.gro"), method=method, progress=False)
    traj = md.load(str(out))
    pairs = [(a, b) for a, b in traj.topology.bonds if a.name == b.name == "SG"]
    assert {(str(a.residue), str(b.residue)) for a, b in pairs} == BONDED
    length = md.compute_distances(traj, [(a.index, b.index) for a, b in pairs]) * 10.0
    assert np.abs(length - chem.BOND_SG_SG).max() < 0.15
    cb = {a.residue.index: a.index for a in traj.topology.atoms if a.name == "CB"}
    triples = [(cb[x.residue.index], x.index, y.index) for a, b in pairs for x, y in ((a, b), (b, a))]
    angle = np.degrees(md.compute_angles(traj, triples))
    assert angle.min() > 90.0 and angle.max() < 125.0


def test_only_sg_moves_bond_lengths_and_angles_kept():
    """The crystal's own structure with its SG atoms turned away: closing turns them back about CA-CB, moving
    nothing else and keeping CB-SG and CA-CB-SG."""
    aa = md.load(str(AA))
    records, _ = read_residues(aa.topology, "aa")
    xyz, _ = gather_slots(aa.xyz * 10, records)
    protein = protein_topology(records, xyz[0, :, chem.SLOT_CA])
    atoms = torch.as_tensor(xyz, dtype=torch.float64)
    sg = chem.RESIDUES["CYS"].atoms.index("SG")
    cys = np.nonzero(protein.res_type == chem.RESIDUE_INDEX["CYS"])[0]
    # turn every SG by 120 degrees about its CA-CB bond
    from backmap_plugin.core.geometry import rotate_about_axis
    ca, cb = atoms[0, cys, chem.SLOT_CA], atoms[0, cys, chem.SLOT_CB]
    axis = (cb - ca) / (cb - ca).norm(dim=-1, keepdim=True)
    turned = atoms.clone()
    turned[0, cys, sg] = rotate_about_axis(atoms[0, cys, sg][:, None], cb, axis,
                                           torch.full((len(cys),), 2.0944, dtype=torch.float64))[:, 0]
    closed, pairs, bonded = close_disulfides(turned, protein)
    assert bonded.sum() == 2
    moved = (closed - turned).norm(dim=-1) > 1e-9
    assert set(np.argwhere(moved[0].numpy())[:, 1].tolist()) == {sg}
    length = lambda x: (x[0, cys, sg] - x[0, cys, chem.SLOT_CB]).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(length(closed), length(atoms))
    torch.testing.assert_close(bond_angle(closed[0, cys, chem.SLOT_CA], closed[0, cys, chem.SLOT_CB],
                                          closed[0, cys, sg]),
                               bond_angle(atoms[0, cys, chem.SLOT_CA], atoms[0, cys, chem.SLOT_CB], atoms[0, cys, sg]))
    ss = {(int(a), int(b)) for (a, b), k in zip(pairs, bonded[0]) if k}
    assert {(protein.res_seq[a], protein.res_seq[b]) for a, b in ss} == {(334, 369), (338, 374)}


def test_side_chains_the_closing_overlaps_are_turned_away(tmp_path):
    """Turning CYS88's SG onto the S-S bond put it 1.04 A from GLN6's NE2 (and CYS23's 1.76 A), which the model had
    placed around the SG as built: the side chains a closed SG overlaps are relieved after the closing, the
    bonded cysteines held (S-S as closed); no other residue's atom is left within 2.5 A of an SG."""
    backmap(FV_TRACE, tmp_path / "fv.pdb", progress=False)
    made = _sg_pairs(tmp_path / "fv.pdb")
    assert set(made) == {("CYS23", "CYS88")} and abs(made[("CYS23", "CYS88")] - chem.BOND_SG_SG) < 0.05
    traj = md.load(str(tmp_path / "fv.pdb"))
    xyz = traj.xyz[0] * 10
    cysteines = {r.index for r in traj.topology.residues if r.name == "CYS"}
    others = [a.index for a in traj.topology.atoms if a.residue.index not in cysteines]
    for sg in traj.topology.select("name SG"):
        assert np.linalg.norm(xyz[others] - xyz[sg], axis=-1).min() > 2.5


def test_refine_makes_the_bonds(tmp_path, trace):
    """What refine then makes of them: two disulfides, no free thiol (HG) on those cysteines."""
    pytest.importorskip("pdbfixer")
    from backmap_plugin.openmm.refine import refine_structure

    backmap(trace, tmp_path / "aa.pdb", progress=False)
    result = refine_structure(str(tmp_path / "aa.pdb"), str(tmp_path / "refined.pdb"), platform="CPU", progress=False)
    assert result.frames[0]["disulfides"] == 2 and "2 disulfide(s)" in result.summary()
    refined = md.load(str(tmp_path / "refined.pdb")).topology
    assert not [a for a in refined.atoms if a.name == "HG" and a.residue.resSeq in (334, 369, 338, 374)]


def test_centres_of_mass_get_their_disulfides_and_stay_on_their_beads(tmp_path):
    """From residue centres of mass (named CA, as CALVADOS 3 writes them): the same two disulfides, the output's
    beads still within 0.3 A of the input's."""
    aa = md.load(str(AA))
    mass = np.array([a.element.mass for a in aa.topology.atoms])
    residues = [r for r in aa.topology.residues if any(a.name == "CA" for a in r.atoms)]
    com = np.array([(aa.xyz[0, [a.index for a in r.atoms]] * mass[[a.index for a in r.atoms], None]).sum(0)
                    / mass[[a.index for a in r.atoms]].sum() for r in residues])
    ca = aa.atom_slice(aa.topology.select("name CA"))
    path = tmp_path / "com.pdb"
    md.Trajectory(com[None], ca.topology).save_pdb(str(path))
    result = backmap(path, tmp_path / "aa.pdb", progress=False)
    assert result.mapping == "com"
    assert set(_sg_pairs(tmp_path / "aa.pdb")) == BONDED
    # the SG atoms carry a third of their cysteines' beads: those move (0.15 A over all beads without closing)
    assert result.bead_rmsd["centre of mass"]["median"] < 0.25


def test_the_search_in_blocks_gives_what_one_block_gives(monkeypatch):
    """Structures are searched a block at a time (memory); five noisy copies of 6B0S, one per block, as all at once."""
    import backmap_plugin.build.disulfides as module

    aa = md.load(str(AA))
    records, _ = read_residues(aa.topology, "aa")
    noise = np.random.default_rng(0).normal(0.0, 0.3, (5, aa.n_atoms, 3))
    xyz, _ = gather_slots(np.repeat(aa.xyz * 10, 5, axis=0) + noise, records)
    protein = protein_topology(records, xyz[0, :, chem.SLOT_CA])
    atoms = torch.as_tensor(xyz, dtype=torch.float32)
    whole, _, bonded = close_disulfides(atoms, protein)
    monkeypatch.setattr(module, "TURN_PAIRS_PER_BLOCK", 1)
    blocks, _, bonded_blocks = close_disulfides(atoms, protein)
    torch.testing.assert_close(blocks, whole)
    assert (bonded_blocks == bonded).all() and (bonded.sum(1) == 2).all()


def test_a_trajectory_gets_one_set_of_disulfides(tmp_path, trace):
    """Frames of a trajectory are bonded from one set of pairs, chosen on its leading frames (each NMR model of a
    three-disulfide peptide alone paired its cysteines five ways); refine says where a later frame's pair was
    apart and it pulled the SG atoms together."""
    pytest.importorskip("pdbfixer")
    from backmap_plugin.openmm.refine import refine_structure

    ca = md.load(str(trace))
    # (frames that differ a little, as an all-atom trajectory's C-alpha atoms do; not a CG run's fluctuating bonds)
    noise = np.random.default_rng(1).normal(0.0, 0.002, (12, ca.n_atoms, 3)).astype(np.float32)  # nm
    frames = md.Trajectory(ca.xyz + noise, ca.topology)
    frames.save_pdb(str(tmp_path / "noisy.pdb"))
    result = backmap(tmp_path / "noisy.pdb", tmp_path / "aa.pdb", progress=False)
    bonded = [line for line in result.report if line.startswith("disulfides closed")]
    assert len(bonded) == 1 and bonded[0].count(" - ") == 2
    assert "A CYS 334 - A CYS 369" in bonded[0] and "A CYS 338 - A CYS 374" in bonded[0]
    out = md.load(str(tmp_path / "aa.pdb"))
    sg = [a.index for a in out.topology.atoms if a.name == "SG"]
    names = [str(out.topology.atom(k).residue) for k in sg]
    for xyz in out.xyz[:, sg] * 10:
        d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
        made = {(names[i], names[j]) for i in range(len(sg)) for j in range(i + 1, len(sg)) if d[i, j] < 2.5}
        assert made <= BONDED
    # a later frame with one pair apart: refine (bonds from the first frame) says so
    two = out[:2]
    ca_, cb, sg = (two.topology.select(f"resSeq 334 and name {name}")[0] for name in ("CA", "CB", "SG"))
    axis = (two.xyz[1, cb] - two.xyz[1, ca_]) / np.linalg.norm(two.xyz[1, cb] - two.xyz[1, ca_])
    arm = two.xyz[1, sg] - two.xyz[1, cb]  # SG turned -120 degrees about CA-CB (chi1, bonds kept), from its partner
    along = axis * (arm @ axis)
    turned = along + (arm - along) * np.cos(-2.1) + np.cross(axis, arm) * np.sin(-2.1)
    two.xyz[1, sg] = two.xyz[1, cb] + turned
    two.save_pdb(str(tmp_path / "two.pdb"))
    refined = refine_structure(str(tmp_path / "two.pdb"), str(tmp_path / "two_ref.pdb"), platform="CPU",
                               progress=False)
    assert [f["disulfides_apart"] for f in refined.frames] == [0, 1]
    assert "2 disulfide(s) (1 frame(s) had SG atoms of them more than 2.5 A apart, pulled together)" \
        in refined.summary()


@pytest.mark.parametrize("chunk", [5, 1000])
def test_the_leading_frames_are_built_once(tmp_path, trace, monkeypatch, chunk):
    """The leading frames the pairs are chosen on are built once: their structures are the output's (every frame
    was built twice up to the 10th: 22 frames for a 12-frame trace)."""
    from backmap_plugin.model.method import ModelMethod

    built = []
    call = ModelMethod.__call__
    monkeypatch.setattr(ModelMethod, "__call__", lambda self, beads, *args: built.append(len(beads))
                        or call(self, beads, *args))
    ca = md.load(str(trace))
    noise = np.random.default_rng(2).normal(0.0, 0.012, (12, ca.n_atoms, 3)).astype(np.float32)  # nm
    md.Trajectory(ca.xyz + noise, ca.topology).save_pdb(str(tmp_path / "noisy.pdb"))
    result = backmap(tmp_path / "noisy.pdb", tmp_path / "aa.xtc", progress=False, chunk=chunk)
    assert any(line.startswith("disulfides closed") for line in result.report)
    assert sum(built) == 12


def test_the_reporter_names_its_disulfides_and_notes(tmp_path, trace):
    """A CG simulation of the trace, backmapped as it runs: the reporter names the pairs it bonded (``disulfides``)
    and carries the notes ``backmap run`` prints (``notes``; a reporter's user saw none of them)."""
    import openmm
    import openmm.app as app
    from openmm import unit

    from backmap_plugin.reporter import BackmapReporter

    ca = md.load(str(trace))
    system = openmm.System()
    bonds = openmm.HarmonicBondForce()
    for i in range(ca.n_atoms):
        system.addParticle(110.0)
        if i:
            bonds.addBond(i - 1, i, float(np.linalg.norm(ca.xyz[0, i] - ca.xyz[0, i - 1])), 8000.0)
    system.addForce(bonds)
    integrator = openmm.VerletIntegrator(0.001 * unit.picoseconds)
    simulation = app.Simulation(ca.topology.to_openmm(), system, integrator,
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(ca.xyz[0] * unit.nanometer)
    with BackmapReporter(str(tmp_path / "aa.pdb"), 2, batchFrames=2) as reporter:
        assert reporter.notes == [] and reporter.disulfides == {}
        simulation.reporters.append(reporter)
        simulation.step(4)
    assert set(reporter.disulfides) == {("A CYS 334", "A CYS 369"), ("A CYS 338", "A CYS 374")}
    assert [note for note in reporter.notes if note.startswith("disulfides closed")] == [
        "disulfides closed (cysteine pairs whose SG atoms can meet): A CYS 334 - A CYS 369, A CYS 338 - A CYS 374"]
    assert _sg_pairs(tmp_path / "aa.pdb").keys() == BONDED


def test_a_cystine_knot_keeps_its_free_sulfurs_apart(tmp_path, corpus):
    """VEGF's cystine knots (train 2FJG, chain V: C26-C68 and C57-C102 with their four SG atoms together): closing
    each pair alone left C57's SG 1.96 A from C68's, and refinement then bonded C57-C68 and lost both true bonds.
    No SG atoms but bonded ones lie within the clearance, from centres of mass or the C-alpha trace."""
    aa = md.load(str(corpus / "train" / "abbench__2FJG_l_b.pdb.gz"))
    aa = aa.atom_slice(aa.topology.select("protein and not element H"))
    residues = [r for r in aa.topology.residues if any(a.name == "CA" for a in r.atoms)]
    top = aa.atom_slice([next(a.index for a in r.atoms if a.name == "CA") for r in residues]).topology
    mass = np.array([a.element.mass for a in aa.topology.atoms])
    com = np.stack([(aa.xyz[0, [a.index for a in r.atoms]] * mass[[a.index for a in r.atoms], None]).sum(0)
                    / mass[[a.index for a in r.atoms]].sum() for r in residues]) * 10
    ca = aa.xyz[0, [next(a.index for a in r.atoms if a.name == "CA") for r in residues]] * 10
    for kind, beads in (("com", com), ("ca", ca)):
        engine = Backmapper(top, beads, mapping=kind, source="2fjg")
        built = engine.build(beads[None])[0]
        sg = [a for a in engine.topology.atoms if a.name == "SG"]
        label = {f"{a.residue.chain.chain_id} CYS {a.residue.resSeq}": a.index for a in sg}
        bonded = {frozenset((label[x], label[y])) for x, y in engine.disulfides}
        xyz = built[[a.index for a in sg]]
        d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
        close = {frozenset((sg[i].index, sg[j].index)) for i in range(len(sg)) for j in range(i + 1, len(sg))
                 if d[i, j] < CLEARANCE}
        assert close <= bonded, kind
        assert ("V CYS 26", "V CYS 68") in engine.disulfides and ("V CYS 57", "V CYS 102") in engine.disulfides
        # the knots' cysteines could bond each other's partners: the note says the pairing is a guess (chain W's
        # centres of mass were paired 26-102 and 57-68 without a word)
        guess = [line for line in engine.disulfide_note() if line.startswith("disulfide pairing a guess")]
        assert len(guess) == 1 and "V CYS 26, 57, 68, 102" in guess[0] and "W CYS 26, 57, 68, 102" in guess[0], guess


MARTINI = AA.parent


def _martini_note(report: list) -> list:
    """The lines of a report on Martini 3 disulfides."""
    return [line for line in report if "disulfide" in line or "cysteine" in line]


@pytest.mark.parametrize("top", ["md.gro", "md.tpr"])
def test_a_martini_run_names_its_disulfides(tmp_path, top):
    """The real Martini 3 run of 6B0S: the note names the two pairs bonded, their SC1-SC1 distances in the 5
    leading frames and in how many of them they lie within the cutoff (nothing was said); with the .tpr, whose
    bonds include martinize2's SC1-SC1 constraints, that the topology bonds the same pairs."""
    if top.endswith(".tpr"):
        pytest.importorskip("MDAnalysis")
    result = backmap(str(MARTINI / "md.xtc"), str(tmp_path / "aa.pdb"), top=str(MARTINI / top), progress=False)
    first, second = ("CYS 334", "CYS 369"), ("CYS 338", "CYS 374")  # the file's numbers, .tpr too
    assert _martini_note(result.report) == [
        "disulfides closed (Martini 3 cysteine pairs whose SC1 beads lie within 3.5 A in at least 50% of the first 5 "
        f"frames; SC1-SC1 distance there, frames within 3.5 A): A {first[0]} - A {first[1]} (2.40 A, 5 of 5), "
        f"A {second[0]} - A {second[1]} (2.39-2.40 A, 5 of 5)"
        + ("; the input topology bonds the same pairs (SC1-SC1)" if top.endswith(".tpr") else "")]


def _without_cystine_bonds(topology: md.Topology) -> md.Topology:
    """``topology`` less its bonds between cysteine SC1 beads (a martinize2 -cys none model's)."""
    atoms, bonds = topology.to_dataframe()
    sc1 = {a.index for a in topology.atoms if a.name == "SC1" and a.residue.name == "CYS"}
    keep = [b for b in bonds if not {int(b[0]), int(b[1])} <= sc1]
    assert len(keep) == len(bonds) - 2
    return md.Topology.from_dataframe(atoms, np.array(keep))


def test_martini_near_misses_and_the_topology_are_named(tmp_path):
    """martinize2's 6B0S beads (cg.pdb, its CONECT records bond the cystines' SC1 beads) with the SC1 bead of CYS369
    moved to 3.6 A from CYS334's: that pair is left free and named as a near miss, with what can be done; the note
    says the topology bonds it; a topology without cystine bonds (martinize2 -cys none) is named as bonding none.
    Nothing is said before a structure is built, nor with disulfides=False."""
    cg = md.load(str(MARTINI / "cg.pdb"))
    xyz = cg.xyz * 10.0
    sc1 = {a.residue.resSeq: a.index for a in cg.topology.atoms if a.name == "SC1" and a.residue.name == "CYS"}
    away = xyz[0, sc1[369]] - xyz[0, sc1[334]]
    xyz[0, sc1[369]] = xyz[0, sc1[334]] + away / np.linalg.norm(away) * 3.6
    closed = ("disulfides closed (Martini 3 cysteine pairs whose SC1 beads lie within 3.5 A; SC1-SC1 distance): "
              "A CYS 338 - A CYS 374 (2.41 A)")
    near = ("free cysteine pairs whose SC1 beads come within 4.5 A (SC1-SC1 distance): A CYS 334 - A CYS 369 "
            "(3.60 A): the 3.5 A cutoff decided, not the protein's disulfides; compare with its known ones (no option "
            "bonds a pair the cutoff leaves free; --no-disulfides leaves every cysteine free)")
    engine = Backmapper(cg.topology, xyz, method="ideal", source="cg.pdb")
    assert engine.disulfide_note() == []
    engine.build(xyz)
    assert engine.disulfide_note() == [
        closed, near,
        "the disulfides closed differ from the input topology's cystine bonds (SC1-SC1): in the topology, not "
        "closed: A CYS 334 - A CYS 369; the SC1 bead distance decides, not the topology (--no-disulfides leaves "
        "every cysteine free; no option bonds a pair)"]
    assert {(a.residue.resSeq, b.residue.resSeq) for a, b in engine.topology.bonds if a.name == b.name == "SG"} \
        == {(338, 374)}
    assert engine.disulfides == {("A CYS 338", "A CYS 374"): 1}
    engine = Backmapper(_without_cystine_bonds(cg.topology), xyz, method="ideal", source="cg.pdb")
    engine.build(xyz)
    assert engine.disulfide_note() == [
        closed, near,
        "the input topology bonds no cysteine pair (made without disulfides, e.g. martinize2 -cys none), but the SC1 "
        "bead distance closed A CYS 338 - A CYS 374 (--no-disulfides leaves every cysteine free)"]
    free = Backmapper(cg.topology, xyz, method="ideal", source="cg.pdb", disulfides=False)
    free.build(xyz)
    assert free.disulfide_note() == [] and free.disulfides == {}


@pytest.mark.parametrize("method", ["model", "ideal"])
def test_martini_beads_without_disulfides_leave_cysteines_free(tmp_path, method):
    """disulfides=False (backmap run --no-disulfides) from Martini 3 beads: no S-S bond in the output, and the fit
    does not pull the SG atoms onto one (the option did nothing there: both disulfides bonded, SSBOND written)."""
    out = tmp_path / "free.pdb"
    result = backmap(str(MARTINI / "md.xtc"), str(out), top=str(MARTINI / "md.gro"), method=method, progress=False,
                     disulfides=False)
    assert _martini_note(result.report) == [] and "SSBOND" not in out.read_text()
    traj = md.load(str(out))
    assert not [b for b in traj.topology.bonds if b[0].name == b[1].name == "SG"]
    sg = {a.residue.resSeq: a.index for a in traj.topology.atoms if a.name == "SG"}
    length = md.compute_distances(traj, [(sg[334], sg[369]), (sg[338], sg[374])]) * 10.0
    assert np.abs(length - chem.BOND_SG_SG).min() > 0.2, length
