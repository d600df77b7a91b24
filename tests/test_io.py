"""Tests for the readers and writers of backmap_plugin.io on a real NMR ensemble (PDB 1L2Y, 38 models),
and for the atomic-write helper."""

import gzip
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.io import atomic, loaders, paths
from backmap_plugin.io.atoms import CutShortNote
from backmap_plugin.io.frames import frames_from_openmm, open_frames
from backmap_plugin.io.paths import SUPPORTED_OUTPUT
from backmap_plugin.io.trajectory import TrajectoryWriter, write_trajectory

DATA = Path(__file__).resolve().parent / "data"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data"
FIXTURE = DATA / "1l2y.pdb.gz"

#: Round-trip tolerance in Angstrom per output format.
TOLERANCE = {".pdb": 1.5e-3, ".cif": 1.5e-3, ".dcd": 1e-4, ".h5": 1e-4, ".xtc": 1.5e-2}


def _read_all(path, **kwargs):
    """(topology, xyz) of every frame of a file, through open_frames."""
    source = open_frames(path, **kwargs)
    return source.topology, np.concatenate([c.xyz for c in source])


def _labels(topology):
    """(chain id, resSeq, residue name, atom name) of every atom."""
    return [(a.residue.chain.chain_id, a.residue.resSeq, a.residue.name, a.name) for a in topology.atoms]


@pytest.fixture(scope="module")
def l2y():
    """Topology and all 38 frames (Angstrom) of the fixture."""
    return _read_all(FIXTURE)


def _two_chain_topology(template, chain_ids=("H", "L"), numbers=None):
    """Copy of ``template`` split into two chains with chosen ids and residue numbers.

    Default numbers cover negative numbers, repeats (written as insertion
    codes) and numbers above 999.
    """
    if numbers is None:
        numbers = [-2, -1, 0, 1, 82, 82, 82, 100, 100, 101] + list(range(1000, 1010))
    top = md.Topology()
    residues = list(template.residues)
    half = len(residues) // 2
    for chain_id, block in zip(chain_ids, (residues[:half], residues[half:])):
        chain = top.add_chain(chain_id)
        for residue in block:
            new = top.add_residue(residue.name, chain, resSeq=numbers[residue.index])
            for atom in residue.atoms:
                top.add_atom(atom.name, atom.element, new)
    return top


# --------------------------------------------------------------------------- reading

def test_read_fixture_pdb_gz(l2y):
    top, xyz = l2y
    assert xyz.dtype == np.float32 and xyz.shape == (38, 154, 3)
    assert top.n_residues == 20 and [c.chain_id for c in top.chains] == ["A"]
    assert [r.resSeq for r in top.residues] == list(range(1, 21))
    # first ATOM record of the file: N ASN A 1 at (-8.901, 4.127, -0.555) Angstrom
    np.testing.assert_allclose(xyz[0, 0], [-8.901, 4.127, -0.555], atol=1e-4)
    source = open_frames(str(FIXTURE))
    assert source.path == str(FIXTURE) and source.n_atoms == 154
    assert all(chunk.box is None for chunk in source)


def test_pdb_chunks_and_stride(l2y):
    _, xyz = l2y
    chunks = list(open_frames(FIXTURE, chunk=5, stride=2))
    assert [c.start for c in chunks] == [0, 5, 10, 15]
    np.testing.assert_array_equal(np.concatenate([c.xyz for c in chunks]), xyz[::2])


@pytest.mark.parametrize("ext", [".dcd", ".h5"])
def test_chunked_read_matches_whole_read_and_stride(tmp_path, l2y, ext):
    top, xyz = l2y
    path = tmp_path / f"traj{ext}"
    write_trajectory(path, top, xyz)
    whole = list(open_frames(path, top=FIXTURE, chunk=1000))
    assert len(whole) == 1 and whole[0].start == 0
    np.testing.assert_allclose(whole[0].xyz, xyz, atol=1e-4)
    chunks = list(open_frames(path, top=FIXTURE, chunk=4, stride=3))
    assert [c.start for c in chunks] == [0, 4, 8, 12]
    assert [len(c.xyz) for c in chunks] == [4, 4, 4, 1]
    assert all(c.xyz.dtype == np.float32 for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.xyz for c in chunks]), whole[0].xyz[::3])


@pytest.mark.parametrize("ext", [".dcd", ".h5"])
def test_chunks_of_many_atoms_hold_fewer_frames(tmp_path, l2y, ext, monkeypatch):
    """A read holds at most ATOM_FRAMES_PER_READ frames x atoms: big systems get smaller chunks, same frames."""
    import backmap_plugin.io.frames as frames

    top, xyz = l2y
    path = tmp_path / f"traj{ext}"
    write_trajectory(path, top, xyz)
    whole = list(open_frames(path, top=FIXTURE, chunk=1000, stride=2))[0].xyz
    monkeypatch.setattr(frames, "ATOM_FRAMES_PER_READ", 3 * top.n_atoms)
    chunks = list(open_frames(path, top=FIXTURE, chunk=1000, stride=2))
    assert [len(c.xyz) for c in chunks] == [3] * (len(whole) // 3) + ([len(whole) % 3] if len(whole) % 3 else [])
    assert [c.start for c in chunks] == list(range(0, len(whole), 3))
    np.testing.assert_array_equal(np.concatenate([c.xyz for c in chunks]), whole)


@pytest.mark.parametrize("ext", [".xtc", ".trr", ".nc"])
def test_other_trajectory_inputs(tmp_path, l2y, ext):
    top, xyz = l2y
    traj = md.Trajectory(xyz[:6] / 10.0, top)
    path = tmp_path / f"traj{ext}"
    traj.save(str(path))
    _, got = _read_all(path, top=FIXTURE, chunk=4)
    np.testing.assert_allclose(got, xyz[:6], atol=TOLERANCE[".xtc"])


def test_ent_files_are_read_as_pdb(tmp_path, l2y):
    """wwPDB names PDB text ``.ent`` (``pdb1l2y.ent.gz``): read as a PDB file, as a structure and as ``--top``."""
    top, xyz = l2y
    with gzip.open(FIXTURE, "rb") as handle:
        text = handle.read()
    (tmp_path / "pdb1l2y.ent").write_bytes(text)
    shutil.copy(FIXTURE, tmp_path / "pdb1l2y.ent.gz")
    for name in ("pdb1l2y.ent", "pdb1l2y.ent.gz"):
        got_top, got = _read_all(tmp_path / name)
        assert _labels(got_top) == _labels(top)
        np.testing.assert_array_equal(got, xyz)
    md.Trajectory(xyz[:3] / 10.0, top).save_dcd(str(tmp_path / "three.dcd"))
    _, got = _read_all(tmp_path / "three.dcd", top=tmp_path / "pdb1l2y.ent.gz")
    np.testing.assert_allclose(got, xyz[:3], atol=TOLERANCE[".dcd"])


def test_gro_input(tmp_path, l2y):
    top, xyz = l2y
    md.Trajectory(xyz[:2] / 10.0, top).save_gro(str(tmp_path / "two.gro"))
    got_top, got = _read_all(tmp_path / "two.gro")
    assert got_top.n_atoms == 154
    np.testing.assert_allclose(got, xyz[:2], atol=1e-2)  # GRO stores 0.001 nm


def test_box_in_angstrom(tmp_path, l2y):
    top, xyz = l2y
    traj = md.Trajectory(xyz[:3] / 10.0, top, unitcell_lengths=np.full((3, 3), 5.0),
                         unitcell_angles=np.full((3, 3), 90.0))
    traj.save_dcd(str(tmp_path / "box.dcd"))
    chunks = list(open_frames(tmp_path / "box.dcd", top=FIXTURE))
    np.testing.assert_allclose(chunks[0].box, np.broadcast_to(np.eye(3) * 50.0, (3, 3, 3)), atol=1e-4)


def test_frames_without_a_box_take_a_simulation_box_of_the_topology(tmp_path, l2y):
    """A DCD without a unit cell takes the box of its --top: a .gro's, a PDB's CRYST1 in P 1 (as MD programs write
    it), for every frame, with one note; not a crystal's unit cell (another space group), and not where the
    frames have boxes of their own."""
    top, xyz = l2y
    md.Trajectory(xyz[:3] / 10.0, top).save_dcd(str(tmp_path / "nocell.dcd"))
    boxed = md.Trajectory(xyz[:1] / 10.0, top, unitcell_lengths=[[5.0, 6.0, 7.0]], unitcell_angles=[[90.0] * 3])
    boxed.save_pdb(str(tmp_path / "top.pdb"))
    boxed.save_gro(str(tmp_path / "top.gro"))
    for name in ("top.pdb", "top.gro"):
        source = open_frames(tmp_path / "nocell.dcd", top=tmp_path / name, chunk=2)
        chunks = list(source)
        assert [len(c.box) for c in chunks] == [2, 1]
        np.testing.assert_allclose(np.concatenate([c.box for c in chunks]),
                                   np.broadcast_to(np.diag([50.0, 60.0, 70.0]), (3, 3, 3)), atol=1e-3)
        assert [note for note in source.notes if "gives no periodic box" in note] == [
            f"{tmp_path / 'nocell.dcd'} gives no periodic box: every frame takes the box of {tmp_path / name} "
            "(50.0 x 60.0 x 70.0 A), in which chains cut by its faces are made whole; this takes the box to be "
            "constant (a constant-volume run): frames of a constant-pressure run need their own boxes in the "
            "trajectory"]
    text = (tmp_path / "top.pdb").read_text()
    assert "P 1 " in text
    (tmp_path / "crystal.pdb").write_text(text.replace("P 1          ", "P 21 21 21   "))
    source = open_frames(tmp_path / "nocell.dcd", top=tmp_path / "crystal.pdb")
    assert all(c.box is None for c in source) and not any("periodic box" in note for note in source.notes)
    boxed = md.Trajectory(xyz[:3] / 10.0, top, unitcell_lengths=np.full((3, 3), 4.0),
                          unitcell_angles=np.full((3, 3), 90.0))
    boxed.save_dcd(str(tmp_path / "cell.dcd"))
    source = open_frames(tmp_path / "cell.dcd", top=tmp_path / "top.gro")
    np.testing.assert_allclose(next(iter(source)).box, np.broadcast_to(np.eye(3) * 40.0, (3, 3, 3)), atol=1e-3)
    assert not any("periodic box" in note for note in source.notes)


def test_a_crystal_unit_cell_is_no_box_of_the_frames(tmp_path, l2y):
    """A PDB input whose CRYST1 is a crystal's unit cell (1RDQ's, P 21 21 21) gives its frames no periodic box, with a
    note, and the output no CRYST1 (it was written in P 1, which made the crystal's cell a simulation's box); in
    P 1 it stays the frames' box. An mmCIF input alike (its _cell a crystal's where _symmetry names a space group
    other than P 1; OpenMM and this package write a _cell alone)."""
    from openmm.app import PDBxFile

    from backmap_plugin.api import backmap

    top, xyz = l2y
    frame = md.Trajectory(xyz[:1] / 10.0, top, unitcell_lengths=[[5.776, 7.9513, 9.7739]],
                          unitcell_angles=[[90.0] * 3])
    ca = frame.atom_slice(top.select("name CA"))
    ca.save_pdb(str(tmp_path / "p1.pdb"))
    text = (tmp_path / "p1.pdb").read_text()
    assert "P 1 " in text
    (tmp_path / "crystal.pdb").write_text(text.replace("P 1          ", "P 21 21 21   "))
    note = (f"{tmp_path / 'crystal.pdb'}: its CRYST1 record is a crystal's unit cell (space group P 21 21 21), not "
            "a simulation's box: the frames have no periodic box (chains are not made whole across it, and the output "
            "gets none)")
    source = open_frames(tmp_path / "crystal.pdb")
    assert all(c.box is None for c in source) and note in source.notes
    result = backmap(str(tmp_path / "crystal.pdb"), str(tmp_path / "out.pdb"), progress=False)
    assert note in result.report and "CRYST1" not in (tmp_path / "out.pdb").read_text()
    result = backmap(str(tmp_path / "p1.pdb"), str(tmp_path / "out_p1.pdb"), progress=False)
    assert not any("crystal" in line for line in result.report)
    assert "CRYST1   57.760   79.513   97.739  90.00  90.00  90.00 P 1 " in (tmp_path / "out_p1.pdb").read_text()
    with open(tmp_path / "cell.cif", "w") as handle:
        PDBxFile.writeFile(ca.topology.to_openmm(ca), ca.openmm_positions(0), handle)
    text = (tmp_path / "cell.cif").read_text()
    assert "_cell.length_a" in text and "_symmetry" not in text
    np.testing.assert_allclose(next(iter(open_frames(tmp_path / "cell.cif"))).box[0], np.diag([57.76, 79.513, 97.739]),
                               atol=1e-3)
    (tmp_path / "crystal.cif").write_text(text.replace("_cell.angle_gamma", "_symmetry.space_group_name_H-M   "
                                                       "'P 21 21 21'\n_cell.angle_gamma"))
    source = open_frames(tmp_path / "crystal.cif")
    assert all(c.box is None for c in source)
    assert [n for n in source.notes if "crystal" in n] == [
        f"{tmp_path / 'crystal.cif'}: its _cell is a crystal's unit cell (space group P 21 21 21), not a simulation's "
        "box: the frames have no periodic box (chains are not made whole across it, and the output gets none)"]


def test_triclinic_box_vectors_kept(tmp_path, l2y):
    """A GROMACS rhombic dodecahedron reaches the reader as its three box vectors, not as lengths."""
    top, xyz = l2y
    a = 5.0
    vectors = np.array([[a, 0, 0], [0, a, 0], [a / 2, a / 2, a * np.sqrt(0.5)]])
    traj = md.Trajectory(xyz[:2] / 10.0, top)
    traj.unitcell_vectors = np.broadcast_to(vectors, (2, 3, 3)).astype(np.float32)
    traj.save_xtc(str(tmp_path / "tric.xtc"))
    chunks = list(open_frames(tmp_path / "tric.xtc", top=FIXTURE))
    np.testing.assert_allclose(chunks[0].box, np.broadcast_to(vectors * 10.0, (2, 3, 3)), atol=1e-3)


def test_altlocs_keep_first_and_are_not_duplicates(tmp_path):
    lines = gzip.open(FIXTURE, "rt").read().split("ENDMDL")[0].splitlines(keepends=True)[1:]
    out = []
    for line in lines:
        if line.startswith("ATOM") and line[12:16].strip() in ("CB", "CG") and line[22:26].strip() == "2":
            shifted = line[:30] + f"{float(line[30:38]) + 1.0:8.3f}" + line[38:]
            out.append(line[:16] + "A" + line[17:54] + "  0.60" + line[60:])
            out.append(shifted[:16] + "B" + shifted[17:54] + "  0.40" + shifted[60:])
        else:
            out.append(line)
    path = tmp_path / "altloc.pdb"
    path.write_text("".join(out) + "END\n")
    assert sum(line[16] == "B" for line in out) == 2
    top, xyz = _read_all(path)
    _, ref = _read_all(FIXTURE)
    assert top.n_atoms == 154  # B locations merged, not added
    np.testing.assert_allclose(xyz[0], ref[0], atol=1e-4)  # A (first listed) kept


def test_altlocs_keep_the_conformer_of_highest_occupancy(tmp_path):
    """Alternate locations of 1L2Y's first model: each residue keeps its conformer of highest occupancy, wherever it
    is listed (mdtraj kept the first listed: a B of 0.40 before an A of 0.60 was read), A where they tie, the
    same one in every model; a note counts them. Microheterogeneity (A LEU, B ILE) keeps one residue."""
    models = gzip.open(FIXTURE, "rt").read().split("ENDMDL")
    _, ref = _read_all(FIXTURE)
    out = []
    for model in models[:2]:
        for line in model.splitlines(keepends=True):
            if not line.startswith("ATOM"):
                out.append(line)
                continue
            number = int(line[22:26])
            moved = line[:30] + f"{float(line[30:38]) + 1.5:8.3f}" + line[38:]
            if number in (3, 4, 5):  # B (true, 0.60) listed before A (moved, 0.40), and the other way round
                first, second = (("B", line, "0.60"), ("A", moved, "0.40")) if number != 4 else (
                    ("A", moved, "0.30"), ("B", line, "0.70"))
                out += [text[:16] + loc + text[17:54] + f"  {occ}" + text[60:] for loc, text, occ in (first, second)]
            elif number == 6:  # a tie: A kept, though listed second
                out += [moved[:16] + "B" + moved[17:54] + "  0.50" + moved[60:],
                        line[:16] + "A" + line[17:54] + "  0.50" + line[60:]]
            else:
                out.append(line)
        out.append("ENDMDL\n")
    path = tmp_path / "altloc.pdb"
    path.write_text("".join(out) + "END\n")  # (the models' MODEL records are the fixture's)
    source = open_frames(path)
    xyz = np.concatenate([c.xyz for c in source])
    assert source.topology.n_atoms == 154 and len(xyz) == 2
    np.testing.assert_allclose(xyz, ref[:2], atol=1e-3)  # every residue at its true place
    assert [note for note in source.notes if "alternate" in note] == [
        f"{path}: 4 residue(s) have alternate locations (first: chain A residue 3: A TYR 0.40, B TYR 0.60, mean "
        "occupancy): each keeps its conformer of highest occupancy (A where they tie), kept A in 1, B in 3"]
    # microheterogeneity: residue 2 as A LEU (0.5) and B ILE (0.5, listed first): A kept, one residue
    lines = gzip.open(FIXTURE, "rt").read().split("ENDMDL")[0].splitlines(keepends=True)[1:]
    leu = [line for line in lines if line.startswith("ATOM") and int(line[22:26]) == 2]
    at = lines.index(leu[0])
    micro = (lines[:at] + [line[:16] + "BILE" + line[20:54] + "  0.50" + line[60:] for line in leu]
             + [line[:16] + "A" + line[17:54] + "  0.50" + line[60:] for line in leu] + lines[at + len(leu):])
    (tmp_path / "micro.pdb").write_text("".join(micro) + "END\n")
    top, _ = _read_all(tmp_path / "micro.pdb")
    assert [r.name for r in top.residues][:3] == ["ASN", "LEU", "TYR"] and top.n_residues == 20


def test_corpus_three_frame_file():
    path = CORPUS / "train" / "mdtraj__1vii_3frames.pdb.gz"
    if not path.exists():
        pytest.skip("project corpus ../shared/data not available")
    top, xyz = _read_all(path, chunk=2)
    assert xyz.shape[0] == 3 and top.residue(0).resSeq == 41


def test_corpus_insertion_codes_survive_pdb_and_cif(tmp_path):
    """mdtraj drops insertion codes; the writers must not merge 82/82A/82B."""
    path = CORPUS / "train" / "abbench__2DD8_r_b.pdb.gz"
    if not path.exists():
        pytest.skip("project corpus ../shared/data not available")
    top, xyz = _read_all(path)
    for ext in (".pdb", ".cif"):
        out = tmp_path / f"ab{ext}"
        write_trajectory(out, top, np.stack([xyz[0], xyz[0] + 1.0]))
        got_top, got = _read_all(out)
        assert _labels(got_top) == _labels(top)
        np.testing.assert_allclose(got[1], xyz[0] + 1.0, atol=TOLERANCE[ext])
    original = {line[17:27] for line in gzip.open(path, "rt") if line.startswith("ATOM")}
    written = {line[17:27] for line in open(tmp_path / "ab.pdb") if line.startswith("ATOM")}
    assert written == original


PROPEPTIDE = DATA / "1deu_ca_propeptide.pdb.gz"  # residues 6P-38P, then 1-13: numbers 6-13 twice, told apart by P


def _residue_ids(path):
    """(chain, number and insertion code, name) of each residue of a PDB file's CA atoms."""
    opener = gzip.open if str(path).endswith(".gz") else open
    return [(line[21], line[22:27].strip(), line[17:20]) for line in opener(path, "rt")
            if line.startswith("ATOM") and line[12:16] == " CA "]


def test_insertion_codes_of_the_input_are_written_back(tmp_path):
    """The output keeps the input's codes (6P ... 38P, then 1 ... 13), in PDB and mmCIF; made-up codes from
    repeated numbers (' ', A, B ...) gave the propeptide's residues 6-13 the mature ones' ids."""
    from backmap_plugin.api import backmap

    ids = _residue_ids(PROPEPTIDE)
    assert ids[0] == ("A", "6P", "ARG") and ids[33] == ("A", "1", "LEU") and len(set(ids)) == len(ids) == 46
    backmap(PROPEPTIDE, output=tmp_path / "out.pdb", method="ideal", progress=False)
    assert _residue_ids(tmp_path / "out.pdb") == ids
    backmap(PROPEPTIDE, output=tmp_path / "out.cif", method="ideal", progress=False)
    top, _ = _read_all(tmp_path / "out.cif")  # read back: the codes come with it
    write_trajectory(tmp_path / "again.pdb", top, _read_all(tmp_path / "out.cif")[1])
    assert _residue_ids(tmp_path / "again.pdb") == ids
    # an OpenMM topology (the reporter's, Backmapper.from_openmm) holds them too
    from openmm.app import PDBFile

    from backmap_plugin.api import Backmapper

    pdb = PDBFile(gzip.open(PROPEPTIDE, "rt"))
    engine = Backmapper.from_openmm(pdb.topology, pdb.positions, method="ideal")
    assert [engine.protein.residue_id(k) for k in (0, 32, 33)] == ["6P", "38P", "1"]


def test_h5_output_says_it_holds_no_insertion_codes(tmp_path):
    """An .h5 topology holds no insertion codes: the propeptide's 6P ... 38P were written as 6 ... 38 without a
    word (read back, numbered as the mature enzyme's residues 6-13); now a note says so."""
    from backmap_plugin.api import backmap

    result = backmap(PROPEPTIDE, output=tmp_path / "out.h5", method="ideal", progress=False)
    note = (f"{tmp_path / 'out.h5'}: 33 residue(s) with insertion codes (first: chain A residue ARG 6P) written "
            "without them (an .h5 topology holds none); write .pdb or .cif to keep them")
    assert note in result.report
    assert [r.resSeq for r in md.load_topology(str(tmp_path / "out.h5")).residues][:2] == [6, 7]


def test_mmcif_insertion_codes_do_not_cut_the_chain(tmp_path):
    """mdtraj's mmCIF reader puts insertion codes into segment ids, and a new segment id started a new chain:
    the propeptide came out as 2 chains with a C terminus (OXT) at 38P; now one chain, codes kept."""
    from openmm.app import PDBFile, PDBxFile

    from backmap_plugin.api import backmap

    pdb = PDBFile(gzip.open(PROPEPTIDE, "rt"))
    with open(tmp_path / "in.cif", "w") as handle:
        PDBxFile.writeFile(pdb.topology, pdb.positions, handle, keepIds=True)
    result = backmap(tmp_path / "in.cif", output=tmp_path / "out.pdb", method="ideal", progress=False)
    assert result.n_chains == 1 and result.n_segments == 1
    assert _residue_ids(tmp_path / "out.pdb") == _residue_ids(PROPEPTIDE)


def test_protein_trajectory_of_a_system_keeps_the_topologys_insertion_codes(tmp_path):
    """An .xtc of the protein alone (a Protein output group) read with the whole system's PDB (the propeptide and
    three waters): the protein part of the topology lost its codes (mdtraj's subset), and the propeptide's 6P ...
    38P came out 6 ... 38, numbered as the mature enzyme's residues."""
    from backmap_plugin.api import backmap

    rows = [line for line in gzip.open(PROPEPTIDE, "rt") if line.startswith("ATOM")]
    water = [f"HETATM{900 + k:5d}  O   HOH W{k + 1:4d}    {10.0 + 3 * k:8.3f}{0.0:8.3f}{0.0:8.3f}  1.00  0.00"
             "           O\n" for k in range(3)]
    (tmp_path / "system.pdb").write_text("".join(rows + ["TER\n"] + water + ["END\n"]))
    md.load(str(PROPEPTIDE)).save_xtc(str(tmp_path / "protein.xtc"))
    result = backmap(tmp_path / "protein.xtc", top=tmp_path / "system.pdb", output=tmp_path / "out.pdb",
                     method="ideal", progress=False)
    assert any("holds 46 of the 49 atoms of" in line for line in result.report)
    assert _residue_ids(tmp_path / "out.pdb") == _residue_ids(PROPEPTIDE)


def test_openmm_residue_ids_that_are_no_numbers_are_refused():
    """An OpenMM topology whose ids hold the insertion codes (1NCB's 82A as id '82A', no insertionCode; OpenMM's
    readers keep the two apart): mdtraj numbered such residues by their index, and chain H's 82A, 82B and 82C came
    out 7, 8 and 9; now the residue is named."""
    from openmm.app import Modeller, PDBFile

    pdb = PDBFile(gzip.open(DATA / "1ncb_n81-85_h81-84_protein.pdb.gz", "rt"))
    trace = Modeller(pdb.topology, pdb.positions)
    trace.delete([atom for atom in pdb.topology.atoms() if atom.name != "CA"])
    for residue in trace.topology.residues():
        residue.id, residue.insertionCode = residue.id + residue.insertionCode.strip(), ""
    with pytest.raises(BackmapInputError, match=re.escape(
            "reporter.pdb: chain 'H' residue ASN '82A': the residue id is no whole number")):
        frames_from_openmm(trace.topology, trace.positions, source="reporter.pdb")


def test_distinct_insertion_codes():
    from backmap_plugin.io.chains import distinct_insertion_codes

    # an input's codes as they came (chymotrypsin numbering 1D ... 1A, 1), even out of alphabetical order
    assert distinct_insertion_codes([1, 1, 1, 1, 1, 2], ["D", "C", "B", "A", "", ""], "x") == \
        ["D", "C", "B", "A", " ", " "]
    # a file without codes (None): repeated numbers get A, B ...; so do residues that repeat number and code
    assert distinct_insertion_codes([82, 82, 82, 83], [None] * 4, "x") == [" ", "A", "B", " "]
    assert distinct_insertion_codes([29, 29, 30], ["", "", ""], "x") == [" ", "A", " "]
    assert distinct_insertion_codes([52, 52, 52], ["", "A", "A"], "x") == [" ", "A", "B"]
    assert distinct_insertion_codes([6, 6, 6, 7], ["", "", "", ""], "x") == [" ", "A", "B", " "]
    with pytest.raises(BackmapInputError, match="x: more than 27 consecutive residues numbered 5"):
        distinct_insertion_codes([5] * 28, [None] * 28, "x")
    with pytest.raises(BackmapInputError, match="x residue 7: insertion code 'AB' is longer than the one character"):
        distinct_insertion_codes([6, 7], ["", "AB"], "x")


def test_pdb_insertion_codes_follow_mdtraj_residues(tmp_path):
    """Codes read from the text in mdtraj's residue order; a digit in the code column (a five-digit number written
    past its columns) is no code."""
    codes = loaders.pdb_insertion_codes(str(PROPEPTIDE), 46)
    assert codes[:2] == ["P", "P"] and codes[33:] == [""] * 13
    assert loaders.pdb_insertion_codes(str(PROPEPTIDE), 45) is None  # another count: not these residues
    lines = [line for line in gzip.open(PROPEPTIDE, "rt") if line.startswith("ATOM")][:3]
    (tmp_path / "digits.pdb").write_text("".join(line[:26] + str(k) + line[27:] for k, line in enumerate(lines)))
    assert loaders.pdb_insertion_codes(str(tmp_path / "digits.pdb"), 3) is None  # no letter: no codes


def _cif(rows, cell="", columns=("group_PDB", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id",
                                   "label_asym_id", "label_seq_id", "pdbx_PDB_ins_code", "Cartn_x", "Cartn_y",
                                   "Cartn_z", "occupancy", "auth_seq_id", "auth_asym_id", "pdbx_PDB_model_num")):
    """An mmCIF text of one atom_site loop (``rows``: one string of values per atom) and a ``_cell``."""
    return ("data_test\n#\n" + cell + "loop_\n" + "".join(f"_atom_site.{c}\n" for c in columns)
            + "".join(row + "\n" for row in rows) + "#\n")


#: Three C-alpha atoms 3.8 A apart: label id A, author id E, the second residue 52A (its code), the third with two
#: conformers; then a water of the same author id, another label id (as every PDB crystal entry has).
_CIF_ROWS = [
    "ATOM C CA ? GLY A 1 ? 0.000 0.000 0.000 1.00 52 E 1",
    "ATOM C CA ? SER A 2 A 3.800 0.000 0.000 1.00 52 E 1",
    "ATOM C CA A ALA A 3 ? 7.600 0.000 0.000 0.30 53 E 1",
    "ATOM C CA B ALA A 3 ? 7.600 1.000 0.000 0.70 53 E 1",
    "HETATM O O . HOH C . ? 20.0 20.0 20.0 1.00 301 E 1",
]


def test_mmcif_is_read_by_author_ids_with_codes_and_one_conformer(tmp_path):
    """Author chain ids (mdtraj and OpenMM took label ids where a file has more of them: chains E and I came out
    A and B), residues with codes kept (with label_alt_id '?', mdtraj took 52A's atoms for alternate locations of
    52 and dropped them), the conformer of highest occupancy with a note (mdtraj kept the first listed)."""
    (tmp_path / "e.cif").write_text(_cif(_CIF_ROWS))
    notes = []
    traj = loaders.load_whole(str(tmp_path / "e.cif"), ".cif", notes)
    residues = list(traj.topology.residues)
    assert [(r.chain.chain_id, r.name, r.resSeq, r.insertion_code) for r in residues] == [
        ("E", "GLY", 52, ""), ("E", "SER", 52, "A"), ("E", "ALA", 53, ""), ("E", "HOH", 301, "")]
    np.testing.assert_allclose(traj.xyz[0, 2] * 10.0, [7.6, 1.0, 0.0], atol=1e-4)  # B, occupancy 0.70
    assert notes == [f"{tmp_path / 'e.cif'}: 1 residue(s) have alternate locations (first: chain E residue 53: A ALA "
                     "0.30, B ALA 0.70, mean occupancy): each keeps its conformer of highest occupancy (A where they "
                     "tie), kept B in 1"]


def test_mmcif_cells_models_and_damage(tmp_path):
    path = str(tmp_path / "m.cif")
    monoclinic = "_cell.length_a 50.0\n_cell.length_b 60.0\n_cell.length_c 70.0\n_cell.angle_alpha 90.0\n" \
                 "_cell.angle_beta 105.0\n_cell.angle_gamma 90.0\n"
    one = _CIF_ROWS[:2] + [_CIF_ROWS[2].replace("CA A ALA", "CA . ALA")]
    two_models = one + [row[:-1] + "2" for row in one]
    open(path, "w").write(_cif(two_models, cell=monoclinic))
    traj = loaders.load_whole(path, ".cif")
    assert traj.n_frames == 2
    np.testing.assert_allclose(traj.unitcell_lengths[0] * 10.0, [50, 60, 70], atol=1e-3)  # (angles were read as 90)
    np.testing.assert_allclose(traj.unitcell_angles[0], [90, 105, 90], atol=1e-3)
    placeholder = monoclinic.replace("50.0", "1.0").replace("60.0", "1.0").replace("70.0", "1.0")
    open(path, "w").write(_cif(two_models, cell=placeholder))  # the wwPDB's cell of NMR and cryo-EM entries
    assert loaders.load_whole(path, ".cif").unitcell_vectors is None
    # a last model cut short (a killed writer): the whole ones, with a note
    open(path, "w").write(_cif(two_models)[:-len(two_models[-1]) - 12])
    notes = []
    assert loaders.load_whole(path, ".cif", notes).n_frames == 1
    assert notes == [f"{path}: read 1 whole model(s); model 2 is cut short (1 of 3 atoms): a truncated file, or one "
                     "still being written?"]
    assert isinstance(notes[0], CutShortNote)  # (what tells backmap run that frames are missing)
    for text, message in (
        (_cif(_CIF_ROWS[:3])[:-30], "the atom_site loop ends inside a row"),
        (_cif(_CIF_ROWS[:3]).replace("_atom_site.Cartn_z\n", ""), "has no Cartn_z column"),  # (z read from another)
        (_cif([_CIF_ROWS[0], _CIF_ROWS[1].replace("3.800", "3.8x0")]),
         "line 20 (model 1, chain E residue SER 52A, atom CA): coordinates 3.8x0 0.000 0.000 are no numbers"),
        ("data_x\n_cell.length_a 10\n", "no atom_site records"),
    ):
        open(path, "w").write(text)
        with pytest.raises(BackmapInputError, match=re.escape(f"{path}: ") + ".*" + re.escape(message)):
            loaders.load_whole(path, ".cif")


# --------------------------------------------------------------------------- reading errors

def test_error_missing_file(tmp_path):
    with pytest.raises(BackmapInputError, match="nothere.pdb.*does not exist"):
        open_frames(tmp_path / "nothere.pdb")


def test_error_empty_file(tmp_path):
    (tmp_path / "empty.pdb").write_text("")
    with pytest.raises(BackmapInputError, match="empty.pdb.*empty"):
        open_frames(tmp_path / "empty.pdb")
    with gzip.open(tmp_path / "nothing.pdb.gz", "wt") as handle:
        handle.write("REMARK no coordinates\nEND\n")
    with pytest.raises(BackmapInputError, match="nothing.pdb.gz: is empty: no ATOM/HETATM records"):
        open_frames(tmp_path / "nothing.pdb.gz")


def test_error_atom_line_cut_short(tmp_path, fixture_pdb):
    """A PDB file cut in the middle of an atom record names the line (it was "AssertionError: " from mdtraj)."""
    lines = gzip.open(fixture_pdb, "rt").read().splitlines(keepends=True)
    first_atom = next(k for k, line in enumerate(lines) if line.startswith("ATOM"))
    (tmp_path / "cut.pdb").write_text("".join(lines[: first_atom + 5]) + lines[first_atom + 5][:20])
    with pytest.raises(BackmapInputError, match=rf"cut.pdb: line {first_atom + 6} is an atom record cut short"):
        open_frames(tmp_path / "cut.pdb")


def test_error_unsupported_extension(tmp_path):
    (tmp_path / "coords.txt").write_text("1 2 3\n")
    with pytest.raises(BackmapInputError, match=r"coords.txt.*unsupported.*\.pdb.*\.dcd"):
        open_frames(tmp_path / "coords.txt")


def test_match_extension_is_case_insensitive():
    """The one test of a file's name: the longest extension of ``choices`` it ends with, in any case, given as
    written there (lower case); path-like names too."""
    assert paths.match_extension("PROTEIN.PDB", paths.SUPPORTED_INPUT) == ".pdb"
    assert paths.match_extension("x.PDB.GZ", paths.SUPPORTED_INPUT) == ".pdb.gz"
    assert paths.match_extension(Path("run.pdb") / "TRAJ.Xtc", paths.SUPPORTED_INPUT) == ".xtc"
    assert paths.match_extension("topol.TPR", paths.TOPOLOGY_FORMATS) == ".tpr"
    assert paths.match_extension("model.CIF", paths.SUPPORTED_OUTPUT) == ".cif"
    assert paths.match_extension("conf.gro", paths.SUPPORTED_OUTPUT) is None
    assert paths.match_extension("SHOUT.TXT", paths.SUPPORTED_INPUT) is None


def test_upper_case_extensions_are_read(tmp_path, l2y):
    """``SHOUT.PDB`` and ``SHOUT.PDB.GZ``, a ``CONF.GRO`` topology of ``TRAJ.TRR`` and ``TRAJ.NC``: the frames of
    their lower-case twins (mdtraj takes lower-case extensions only: it opens them through links), under the names
    given."""
    top, xyz = l2y
    (tmp_path / "SHOUT.PDB").write_bytes(gzip.open(FIXTURE).read())
    shutil.copy(FIXTURE, tmp_path / "SHOUT.PDB.GZ")
    for name in ("SHOUT.PDB", "SHOUT.PDB.GZ"):
        source = open_frames(tmp_path / name)
        assert source.path == str(tmp_path / name) and _labels(source.topology) == _labels(top)
        np.testing.assert_array_equal(np.concatenate([c.xyz for c in source]), xyz)
    traj = md.Trajectory(xyz[:4] / 10.0, top)
    traj[0].save_gro(str(tmp_path / "conf.gro"))
    os.rename(tmp_path / "conf.gro", tmp_path / "CONF.GRO")
    for ext in (".trr", ".nc"):
        traj.save(str(tmp_path / f"traj{ext}"))
        os.rename(tmp_path / f"traj{ext}", tmp_path / f"TRAJ{ext.upper()}")
        source = open_frames(tmp_path / f"TRAJ{ext.upper()}", top=tmp_path / "CONF.GRO", chunk=3)
        assert source.n_frames == 4 and source.topology.n_atoms == 154
        np.testing.assert_allclose(np.concatenate([c.xyz for c in source]), xyz[:4], atol=TOLERANCE[".xtc"])
    (tmp_path / "BAD.XTC").write_bytes(b"not an xtc file" * 10)
    with pytest.raises(BackmapInputError, match=r"BAD.XTC: cannot be read as \.xtc"):
        open_frames(tmp_path / "BAD.XTC", top=tmp_path / "CONF.GRO")


def test_mdtraj_path_names_upper_case_extensions_in_lower_case(tmp_path, monkeypatch):
    """A file mdtraj reads is opened under a link of its name with the extension in lower case where it has another
    case (in a temporary folder, removed after); a lower-case name, an unknown extension and a file to be written
    (whose format its writer names) keep their names."""
    from backmap_plugin.io.mdtraj_files import mdtraj_path

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    shutil.copy(FIXTURE, tmp_path / "X.Pdb.GZ")
    with mdtraj_path(tmp_path / "X.Pdb.GZ") as alias:
        assert os.path.basename(alias) == "X.pdb.gz" and os.path.samefile(alias, tmp_path / "X.Pdb.GZ")
    for name, write in (("x.pdb.gz", False), ("NOTES.TXT", False), ("OUT.DCD", True)):
        with mdtraj_path(tmp_path / name, write=write) as alias:
            assert alias == str(tmp_path / name)
    assert os.listdir(scratch) == []


@pytest.mark.parametrize("ext", SUPPORTED_OUTPUT)
def test_upper_case_output_extensions_choose_the_format(tmp_path, l2y, ext):
    """``OUT.PDB``, ``OUT.CIF``, ``OUT.DCD``, ``OUT.XTC``, ``OUT.H5`` are written in their format (as a copy
    under the lower-case name reads with mdtraj), and read back (a trajectory with a ``PROTEIN.PDB.GZ`` topology)."""
    top, xyz = l2y
    path = tmp_path / f"OUT{ext.upper()}"
    with TrajectoryWriter(path, top) as writer:
        writer.write(xyz[:3])
    assert os.listdir(tmp_path) == [path.name]  # (no partial file left)
    shutil.copy(path, tmp_path / f"twin{ext}")
    shutil.copy(FIXTURE, tmp_path / "PROTEIN.PDB.GZ")
    needs_top = ext in paths.NEEDS_TOPOLOGY
    twin = md.load(str(tmp_path / f"twin{ext}"), **({"top": str(FIXTURE)} if needs_top else {}))
    np.testing.assert_allclose(twin.xyz * 10.0, xyz[:3], atol=TOLERANCE[ext])
    got_top, got = _read_all(path, top=tmp_path / "PROTEIN.PDB.GZ" if needs_top else None)
    np.testing.assert_allclose(got, xyz[:3], atol=TOLERANCE[ext])
    assert _labels(got_top) == _labels(top)


def test_error_trajectory_without_top(tmp_path, l2y):
    top, xyz = l2y
    write_trajectory(tmp_path / "t.dcd", top, xyz[:2])
    with pytest.raises(BackmapInputError, match="t.dcd.*needs a topology file: pass --top"):
        open_frames(tmp_path / "t.dcd")


def test_error_atom_count_mismatch(tmp_path, l2y):
    top, xyz = l2y
    write_trajectory(tmp_path / "t.dcd", top, xyz[:2])
    sub = top.subset(range(100))
    write_trajectory(tmp_path / "small.pdb", sub, xyz[0, :100])
    with pytest.raises(BackmapInputError) as info:
        open_frames(tmp_path / "t.dcd", top=tmp_path / "small.pdb")
    message = str(info.value)
    assert "100" in message and "154" in message and "small.pdb" in message and "t.dcd" in message


def test_error_all_atom_top_for_a_trajectory_of_one_bead_per_residue():
    """The all-atom structure a coarse-grained run started from, given as --top of its trajectory (one bead per
    residue): the error says so and asks for the coarse-grained topology (it spoke of a trajectory of part of a
    system and gmx trjconv)."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    with pytest.raises(BackmapInputError) as info:
        open_frames(examples / "trpcage_ca.dcd", top=examples / "trpcage.pdb")
    message = str(info.value)
    assert "has 154 atoms" in message and "have 20" in message
    assert "its 20 protein residues are as many as the coordinates' atoms" in message
    assert "coarse-grained topology" in message and "trjconv" not in message


def test_error_top_of_other_residues_for_a_structure(tmp_path):
    """A structure file holds its own residues: a --top of as many atoms but other residues (another structure's
    trace) is refused, naming the first atom whose residues differ (the output carried the --top's sequence on the
    input's coordinates, silently). The same topology, and a .gro with its run's .tpr, still read."""
    trace = Path(__file__).resolve().parents[1] / "examples" / "trpcage_ca.pdb"
    lines = trace.read_text().splitlines(keepends=True)
    first = next(k for k, line in enumerate(lines) if line.startswith("ATOM"))
    lines[first] = lines[first][:17] + "GLY" + lines[first][20:]  # ASN 1 -> GLY 1
    (tmp_path / "other.pdb").write_text("".join(lines))
    with pytest.raises(BackmapInputError, match=r"trpcage_ca.pdb: its residues are not those of --top .*other.pdb: "
                                                r"atom 1 is in ASN 1 there, in GLY 1 in the topology"):
        open_frames(trace, top=tmp_path / "other.pdb")
    assert open_frames(trace, top=trace).topology.n_residues == 20
    martini = DATA / "martini3"
    assert open_frames(martini / "md.gro", top=martini / "md.tpr").n_atoms == 1350


def test_error_nan_coordinates(tmp_path):
    lines = gzip.open(FIXTURE, "rt").read().splitlines(keepends=True)
    models = 0
    for i, line in enumerate(lines):
        models += line.startswith("MODEL")
        if models == 3 and line.startswith("ATOM") and line[12:16] == " CA " and line[22:26] == "   5":
            lines[i] = line[:30] + "     nan" + line[38:]
            break
    (tmp_path / "nan.pdb").write_text("".join(lines))
    with pytest.raises(BackmapInputError, match=r"nan.pdb: frame 2 .*chain 'A' residue GLN5 atom CA"):
        open_frames(tmp_path / "nan.pdb")


def test_error_nan_in_trajectory_reported_while_iterating(tmp_path, l2y):
    top, xyz = l2y
    bad = xyz[:6].copy()
    bad[4, 10, 1] = np.inf
    md.formats.DCDTrajectoryFile(str(tmp_path / "bad.dcd"), "w").write(bad)
    source = open_frames(tmp_path / "bad.dcd", top=FIXTURE, chunk=3, stride=2)
    with pytest.raises(BackmapInputError, match=r"bad.dcd: frame 2 \(frame 4 of the file, stride 2\).*atom"):
        list(source)


def test_error_unparsable_file_keeps_message(tmp_path):
    (tmp_path / "junk.dcd").write_bytes(b"this is not a dcd file" * 10)
    with pytest.raises(BackmapInputError,
                       match=r"junk.dcd: cannot be read as .dcd \(a truncated or damaged file\?\): ") as info:
        open_frames(tmp_path / "junk.dcd", top=FIXTURE)
    assert info.value.__cause__ is not None


def test_error_duplicate_atoms(tmp_path):
    lines = gzip.open(FIXTURE, "rt").read().split("ENDMDL")[0].splitlines(keepends=True)[1:]
    ca = next(i for i, line in enumerate(lines) if line[12:16] == " CA " and line[22:26] == "   3")
    lines.insert(ca + 1, lines[ca])
    (tmp_path / "dup.pdb").write_text("".join(lines) + "END\n")
    with pytest.raises(BackmapInputError, match=r"dup.pdb: duplicate atom: chain 'A' residue TYR3 atom CA"):
        open_frames(tmp_path / "dup.pdb")


def test_error_bad_topology_extension_and_chunk(tmp_path, l2y):
    top, xyz = l2y
    write_trajectory(tmp_path / "t.dcd", top, xyz[:2])
    with pytest.raises(BackmapInputError, match="t.dcd: unsupported topology file extension"):
        open_frames(tmp_path / "t.dcd", top=tmp_path / "t.dcd")
    with pytest.raises(BackmapInputError, match="chunk must be a positive integer"):
        open_frames(FIXTURE, chunk=0)


# --------------------------------------------------------------------------- writing

@pytest.mark.parametrize("ext", SUPPORTED_OUTPUT)
def test_round_trip_every_output_format(tmp_path, l2y, ext):
    top, xyz = l2y
    path = tmp_path / f"out{ext}"
    with TrajectoryWriter(path, top) as writer:
        writer.write(xyz[:3])       # streaming: several calls
        writer.write(xyz[3:5])
        writer.write(xyz[5])        # a single (n_atoms, 3) frame
    assert writer.frames_written == 6
    top_file = FIXTURE if ext in (".dcd", ".xtc") else None
    got_top, got = _read_all(path, top=top_file)
    assert got.shape == (6, 154, 3)
    np.testing.assert_allclose(got, xyz[:6], atol=TOLERANCE[ext])
    assert _labels(got_top) == _labels(top)


@pytest.mark.parametrize("ext", [".pdb", ".cif"])
def test_chain_ids_and_residue_numbers_preserved(tmp_path, l2y, ext):
    top, xyz = l2y
    two = _two_chain_topology(top)
    path = tmp_path / f"two{ext}"
    write_trajectory(path, two, xyz[:2])
    got_top, got = _read_all(path)
    assert [c.chain_id for c in got_top.chains] == ["H", "L"]
    assert [r.resSeq for r in got_top.residues] == [r.resSeq for r in two.residues]
    assert _labels(got_top) == _labels(two)
    np.testing.assert_allclose(got, xyz[:2], atol=TOLERANCE[ext])


def test_pdb_layout_ter_model_end_no_conect(tmp_path, l2y):
    top, xyz = l2y
    two = _two_chain_topology(top, chain_ids=("A", "A"))  # two chains sharing one id
    write_trajectory(tmp_path / "multi.pdb", two, xyz[:3])
    text = (tmp_path / "multi.pdb").read_text().splitlines()
    assert sum(line.startswith("MODEL") for line in text) == 3
    assert sum(line.startswith("ENDMDL") for line in text) == 3
    assert sum(line.startswith("TER") for line in text) == 6  # each chain ends with TER
    assert not any(line.startswith("CONECT") for line in text)
    assert text[-1] == "END"
    assert all(len(line) == 80 for line in text if line.startswith("ATOM"))
    assert any(line[17:27] == "TRP A  82A" for line in text)
    got_top, _ = _read_all(tmp_path / "multi.pdb")
    assert [c.chain_id for c in got_top.chains] == ["A", "A"]
    assert _labels(got_top) == _labels(two)
    # a single frame has no MODEL record
    write_trajectory(tmp_path / "one.pdb", two, xyz[:1])
    one = (tmp_path / "one.pdb").read_text().splitlines()
    assert not any(line.startswith(("MODEL", "ENDMDL")) for line in one) and one[-1] == "END"


def test_pdb_residue_numbers_past_four_columns_are_written_wrapped_with_a_note(tmp_path, l2y):
    """Numbers outside -999 ... 9999 are written modulo 10000 (as VMD and OpenMM do): a note says so."""
    top, xyz = l2y
    top = top.copy()
    for k, residue in enumerate(top.residues):
        residue.resSeq = 9998 + k
    with TrajectoryWriter(tmp_path / "wrapped.pdb", top) as writer:
        writer.write(xyz[:1])
    assert writer.notes == [f"{tmp_path / 'wrapped.pdb'}: 18 residue number(s) outside -999 ... 9999 (first: chain "
                            "A residue TYR 10000) written modulo 10000, as the PDB format's 4 columns hold; write .cif "
                            "to keep them"]
    numbers = [line[22:26] for line in (tmp_path / "wrapped.pdb").read_text().splitlines() if line[12:16] == " CA "]
    assert numbers[:4] == ["9998", "9999", "   0", "   1"]
    with TrajectoryWriter(tmp_path / "fits.pdb", l2y[0]) as writer:
        writer.write(xyz[:1])
    assert writer.notes == []


def test_pdb_box_too_large_for_cryst1_is_left_out_with_a_note(tmp_path, l2y):
    """A box of 100,000 A or more (HOOMD / LAMMPS runs of one chain in a huge box) overflowed the CRYST1 columns
    and no reader could parse the file: its CRYST1 record is left out, with a note; 99,999 A still fits."""
    top, xyz = l2y
    boxes = np.stack([np.eye(3) * 99999.0, np.eye(3) * 1e5, np.eye(3) * 1e6]).astype(np.float32)
    path = tmp_path / "huge_box.pdb"
    with TrajectoryWriter(path, top) as writer:
        writer.write(xyz[:3], box=boxes)
    assert len(writer.notes) == 1
    assert "does not fit the PDB CRYST1 record" in writer.notes[0] and "first in frame 1" in writer.notes[0]
    assert "100000 x 100000 x 100000 A" in writer.notes[0] and ".cif" in writer.notes[0]
    cryst1 = [line for line in path.read_text().splitlines() if line.startswith("CRYST1")]
    assert cryst1 == ["CRYST199999.00099999.00099999.000  90.00  90.00  90.00 P 1           1"]
    got = md.load(str(path))  # (it raised: could not convert string to float: '000  90')
    assert got.n_frames == 3
    np.testing.assert_allclose(got.xyz * 10.0, xyz[:3], atol=1.5e-3)
    with TrajectoryWriter(tmp_path / "one.pdb", top) as writer:  # a single structure
        writer.write(xyz[:1], box=boxes[2:])
    assert len(writer.notes) == 1 and "CRYST1" not in (tmp_path / "one.pdb").read_text()
    md.load(str(tmp_path / "one.pdb"))


def test_cif_repeated_chain_ids_keep_chain_boundaries(tmp_path, l2y):
    top, xyz = l2y
    two = _two_chain_topology(top, chain_ids=("A", "A"))
    write_trajectory(tmp_path / "same.cif", two, xyz[:2])
    got_top, got = _read_all(tmp_path / "same.cif")
    assert got_top.n_chains == 2 and [c.n_residues for c in got_top.chains] == [10, 10]
    np.testing.assert_allclose(got, xyz[:2], atol=TOLERANCE[".cif"])
    rows = [line.split() for line in open(tmp_path / "same.cif") if line.startswith("ATOM")]
    assert {row[17] for row in rows} == {"A"}  # auth_asym_id keeps the original id


def test_partial_file_kept_on_exception(tmp_path, l2y):
    top, xyz = l2y
    path = tmp_path / "crash.pdb"
    with pytest.raises(RuntimeError, match="boom"):
        with TrajectoryWriter(path, top) as writer:
            writer.write(xyz[:2])
            raise RuntimeError("boom")
    assert not path.exists()
    partial = Path(writer.partial_path)
    assert partial.exists() and ".partial" in partial.name
    text = partial.read_text()
    assert text.count("MODEL") == 2 and text.count("ENDMDL") == 2


def test_atomic_replace_on_success(tmp_path, l2y, monkeypatch):
    top, xyz = l2y
    path = tmp_path / "final.dcd"
    path.write_text("old contents")
    calls = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append((a, b)), real_replace(a, b)))
    with TrajectoryWriter(path, top) as writer:
        writer.write(xyz[:2])
        assert path.read_text() == "old contents"  # untouched while writing
        assert os.path.getsize(writer.partial_path) > 0  # flushed after write
    assert calls == [(writer.partial_path, str(path))]
    assert not os.path.exists(writer.partial_path)
    _, got = _read_all(path, top=FIXTURE)
    np.testing.assert_allclose(got, xyz[:2], atol=1e-4)


def test_flush_after_each_write(tmp_path, l2y):
    top, xyz = l2y
    with TrajectoryWriter(tmp_path / "live.pdb", top) as writer:
        writer.write(xyz[:1])
        assert Path(writer.partial_path).read_text().count("ATOM") == 154
        writer.write(xyz[1:2])
        assert Path(writer.partial_path).read_text().count("ATOM") == 308


# --------------------------------------------------------------------------- writing errors

def test_error_unsupported_output_extension(tmp_path, l2y):
    with pytest.raises(BackmapInputError, match=r"out.gro: unsupported output.*\.pdb, \.cif, \.dcd, \.xtc, \.h5"):
        TrajectoryWriter(tmp_path / "out.gro", l2y[0])


def test_paths_that_are_not_ascii(tmp_path, l2y, monkeypatch):
    """mdtraj's XTC, TRR and DCD code takes ASCII paths only (a UnicodeEncodeError): files in a folder with any name,
    and under names of any characters, are read and written (through links in a temporary folder, removed after);
    only a file written in place (no partial file: the reporter's append) needs an ASCII name of its own."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    top, xyz = l2y
    folder = tmp_path / "Müller ü"
    folder.mkdir()
    md.Trajectory(xyz[:4] / 10.0, top).save(str(tmp_path / "made.trr"))
    shutil.move(tmp_path / "made.trr", folder / "ß.trr")
    got = _read_all(folder / "ß.trr", top=FIXTURE)[1]
    np.testing.assert_allclose(got, xyz[:4], atol=1e-3)
    for name in ("plain.dcd", "plain.xtc", "é.dcd", "é.xtc"):
        with TrajectoryWriter(folder / name, top) as writer:
            writer.write(xyz[:3])
            writer.write(xyz[3:5])
        source = open_frames(folder / name, top=FIXTURE)
        assert source.n_frames == 5
        np.testing.assert_allclose(np.concatenate([c.xyz for c in source]), xyz[:5], atol=TOLERANCE[name[-4:]])
    assert sorted(os.listdir(folder)) == sorted(["ß.trr", "plain.dcd", "plain.xtc", "é.dcd", "é.xtc"])  # no partial
    with TrajectoryWriter(folder / "live.xtc", top, atomic=False) as writer:
        writer.write(xyz[:2])
    assert open_frames(folder / "live.xtc", top=FIXTURE).n_frames == 2
    with pytest.raises(BackmapInputError, match=r"ü/ö\.xtc: mdtraj writes \.xtc files under ASCII names only"):
        TrajectoryWriter(folder / "ö.xtc", top, atomic=False)
    assert not (folder / "ö.xtc").exists()
    assert os.listdir(scratch) == []  # the links' folders are gone


def test_error_output_directory_missing(tmp_path, l2y):
    with pytest.raises(BackmapInputError, match="missing/out.pdb.*does not exist"):
        TrajectoryWriter(tmp_path / "missing" / "out.pdb", l2y[0])
    assert not (tmp_path / "missing").exists()


def test_error_output_parent_is_a_file(tmp_path, l2y):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BackmapInputError, match="afile/out.dcd"):
        TrajectoryWriter(tmp_path / "afile" / "out.dcd", l2y[0])


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_error_output_no_permission(tmp_path, l2y):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(BackmapInputError, match="locked/out.pdb.*permission"):
            TrajectoryWriter(locked / "out.pdb", l2y[0])
    finally:
        locked.chmod(0o700)


def test_error_output_no_permission_simulated(tmp_path, l2y, monkeypatch):
    """Same check as above, runnable as root: the directory reports no write access."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(BackmapInputError, match="out.pdb.*no permission"):
        TrajectoryWriter(tmp_path / "out.pdb", l2y[0])
    assert list(tmp_path.iterdir()) == []


def test_error_overwrite_false(tmp_path, l2y):
    (tmp_path / "exists.pdb").write_text("keep me")
    with pytest.raises(BackmapInputError, match="exists.pdb.*exists"):
        TrajectoryWriter(tmp_path / "exists.pdb", l2y[0], overwrite=False)
    assert (tmp_path / "exists.pdb").read_text() == "keep me"


def test_error_write_bad_frames(tmp_path, l2y):
    top, xyz = l2y
    bad = xyz[:2].copy()
    bad[1, 7, 0] = np.nan
    with pytest.raises(BackmapInputError, match=r"frame 1 .*residue ASN1 atom ND2"):
        with TrajectoryWriter(tmp_path / "nan.xtc", top) as writer:
            writer.write(bad)
    with pytest.raises(BackmapInputError, match=r"expected coordinates shaped \(n_frames, 154, 3\)"):
        write_trajectory(tmp_path / "shape.dcd", top, xyz[:, :100])
    with pytest.raises(BackmapInputError, match="does not fit the PDB coordinate columns"):
        write_trajectory(tmp_path / "far.pdb", top, xyz[:1] + 20000.0)
    with pytest.raises(BackmapInputError, match="chain id 'AB'.*write .cif"):
        TrajectoryWriter(tmp_path / "long.pdb", _two_chain_topology(top, chain_ids=("AB", "C")))


# --------------------------------------------------------------------------- atomic writes

def _fsynced(monkeypatch):
    """Record the paths whose data ``os.fsync`` flushed."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_atomic_write_replaces_whole_file_after_fsync(tmp_path, monkeypatch):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    synced = _fsynced(monkeypatch)
    with atomic.atomic_write(target, newline="") as handle:
        handle.write("a,b\r\n1,2\r\n")
        temporary = handle.name
        assert os.path.dirname(temporary) == str(tmp_path)  # same folder: os.replace is atomic
        assert target.read_text() == "old\n"  # untouched while writing
    assert target.read_bytes() == b"a,b\r\n1,2\r\n"
    assert synced and synced[-1] in (temporary, str(target))  # synced before the move
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_atomic_write_failure_keeps_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("keep me")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_write(target) as handle:
            handle.write("half a fi")
            raise RuntimeError("boom")
    assert target.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_atomic_write_failure_before_any_file_existed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_write(tmp_path / "new.bin", "wb") as handle:
            handle.write(b"\x00" * 10)
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_commit_failure_removes_temporary(tmp_path):
    """A failing move (e.g. a directory in the way) leaves no temporary file behind."""
    (tmp_path / "out.json").mkdir()
    with pytest.raises(OSError):
        atomic.write_json(tmp_path / "out.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_json_refuses_nan_and_keeps_target(tmp_path):
    target = tmp_path / "summary.json"
    atomic.write_json(target, {"a": 1.5, "b": [1, 2]})
    assert target.read_text() == '{\n  "a": 1.5,\n  "b": [\n    1,\n    2\n  ]\n}\n'
    with pytest.raises(ValueError):
        atomic.write_json(target, {"a": float("nan")})
    assert target.read_text().startswith('{\n  "a": 1.5')
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_atomic_path_for_writers_that_open_by_name(tmp_path, monkeypatch):
    synced = _fsynced(monkeypatch)
    target = tmp_path / "model.pt"
    with atomic.atomic_path(target, temporary=tmp_path / "model.pt.tmp") as name:
        assert name == str(tmp_path / "model.pt.tmp")
        Path(name).write_bytes(b"weights")
    assert target.read_bytes() == b"weights" and synced
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_atomic_write_refuses_append_mode(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic.atomic_write(tmp_path / "log.txt", "a"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_trajectory_writer_syncs_before_the_move(tmp_path, l2y, monkeypatch):
    top, xyz = l2y
    synced = _fsynced(monkeypatch)
    with TrajectoryWriter(tmp_path / "out.pdb", top) as writer:
        writer.write(xyz[:2])
        assert not synced
    assert synced
    assert [p.name for p in tmp_path.iterdir()] == ["out.pdb"]


def test_importing_atomic_loads_no_numerical_library():
    import subprocess

    code = ("import sys, backmap_plugin.io.atomic, backmap_plugin.io.paths\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'mdtraj', 'torch', 'openmm'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- OpenMM

def test_frames_from_openmm_quantity_and_array(l2y):
    from openmm import unit

    top, xyz = l2y
    omm_top = top.to_openmm()
    frame = xyz[0].astype(np.float64)
    for positions in (
        frame * unit.angstrom,
        (frame / 10.0) * unit.nanometer,
        [unit.Quantity(tuple(p), unit.angstrom).value_in_unit(unit.nanometer) for p in frame] * unit.nanometer,
        frame / 10.0,  # plain array: nm
    ):
        got_top, got = frames_from_openmm(omm_top, positions)
        assert got.dtype == np.float32 and got.shape == (1, 154, 3)
        np.testing.assert_allclose(got[0], frame, atol=1e-4)
        assert _labels(got_top) == _labels(top)
    _, many = frames_from_openmm(omm_top, xyz[:3] / 10.0)
    assert many.shape == (3, 154, 3)
    with pytest.raises(BackmapInputError, match="100 positions for a topology of 154 atoms"):
        frames_from_openmm(omm_top, frame[:100] * unit.angstrom)


# --------------------------------------------------------------------------- GROMACS .tpr topologies

GMX_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gromacs"


def test_tpr_numbers_kept_and_mdanalysis_left_as_found(tmp_path):
    """The residue numbers come from the file while MDAnalysis reads it (its reader is patched for that read
    alone and put back, also when the read fails)."""
    pytest.importorskip("MDAnalysis", reason="the gromacs extra (MDAnalysis) is not installed")
    from MDAnalysis.topology.tpr import utils

    from backmap_plugin.io.tpr import load_tpr_topology

    before = utils.do_resinfo, utils.do_moltype
    topology = load_tpr_topology(str(DATA / "martini3" / "md.tpr"))
    assert [r.resSeq for r in topology.residues][:3] == [306, 307, 308]
    (tmp_path / "bad.tpr").write_bytes(b"not a tpr")
    with pytest.raises(BackmapInputError, match="cannot be read as .tpr"):
        load_tpr_topology(str(tmp_path / "bad.tpr"))
    assert (utils.do_resinfo, utils.do_moltype) == before


def test_tpr_topology_matches_the_gro(tmp_path):
    """``--top topol.tpr`` (MDAnalysis) gives the chains of the molecules, the residue numbers (MDAnalysis gives
    1..N; the file's are kept) and the same frames as the .gro."""
    pytest.importorskip("MDAnalysis", reason="the gromacs extra (MDAnalysis) is not installed")
    tpr = open_frames(GMX_EXAMPLE / "traj_ca.xtc", top=GMX_EXAMPLE / "topol_ca.tpr")
    gro = open_frames(GMX_EXAMPLE / "traj_ca.xtc", top=GMX_EXAMPLE / "conf_ca.gro")
    assert [c.chain_id for c in tpr.topology.chains] == ["A", "B"]
    assert [c.n_residues for c in tpr.topology.chains] == [20, 20]
    assert [r.name for r in tpr.topology.residues] == [r.name for r in gro.topology.residues]
    assert [r.resSeq for r in tpr.topology.residues] == [r.resSeq for r in gro.topology.residues]  # the file's
    assert {a.name for a in tpr.topology.atoms} == {"CA"} and tpr.topology.atom(0).element.symbol == "C"
    np.testing.assert_array_equal(next(iter(tpr)).xyz, next(iter(gro)).xyz)


def test_tpr_topology_has_the_bonds_of_the_run(tmp_path):
    """A .tpr topology carries the run's bonds and constraints, as martinize2's .pdb its CONECT records: the real
    Martini 3 run of 6B0S (tests/data/martini3) holds its two cystines as SC1-SC1 constraints (it had no bonds)."""
    pytest.importorskip("MDAnalysis", reason="the gromacs extra (MDAnalysis) is not installed")
    tpr = loaders.load_topology(str(DATA / "martini3" / "md.tpr"), ".tpr")
    pdb = md.load_topology(str(DATA / "martini3" / "cg.pdb"))
    assert tpr.n_bonds > 169  # the protein's bonds, its elastic network, its constraints (not those of W, NA, CL)

    def cystines(topology):
        return sorted((a.index, b.index) for a, b in topology.bonds
                      if a.name == b.name == "SC1" and a.residue.name == b.residue.name == "CYS")

    assert len(cystines(tpr)) == 2 and cystines(tpr) == cystines(pdb)


def test_upper_case_tpr_and_xtc_are_read_as_their_lower_case_twins(tmp_path):
    pytest.importorskip("MDAnalysis", reason="the gromacs extra (MDAnalysis) is not installed")
    shutil.copy(GMX_EXAMPLE / "topol_ca.tpr", tmp_path / "TOPOL.TPR")
    shutil.copy(GMX_EXAMPLE / "traj_ca.xtc", tmp_path / "TRAJ.XTC")
    upper = open_frames(tmp_path / "TRAJ.XTC", top=tmp_path / "TOPOL.TPR")
    lower = open_frames(GMX_EXAMPLE / "traj_ca.xtc", top=GMX_EXAMPLE / "topol_ca.tpr")
    assert _labels(upper.topology) == _labels(lower.topology) and upper.n_frames == lower.n_frames == 38
    np.testing.assert_array_equal(np.concatenate([c.xyz for c in upper]), np.concatenate([c.xyz for c in lower]))


def test_tpr_without_mdanalysis_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "MDAnalysis", None)  # import fails as if not installed
    with pytest.raises(BackmapInputError, match=r"topol_ca.tpr: reading .tpr files needs MDAnalysis: "
                                                r"pip install 'backmap_plugin\[gromacs\]'"):
        open_frames(GMX_EXAMPLE / "traj_ca.xtc", top=GMX_EXAMPLE / "topol_ca.tpr")


def test_broken_tpr_is_named(tmp_path):
    pytest.importorskip("MDAnalysis", reason="the gromacs extra (MDAnalysis) is not installed")
    bad = tmp_path / "broken.tpr"
    bad.write_bytes((GMX_EXAMPLE / "topol_ca.tpr").read_bytes()[:300])
    with pytest.raises(BackmapInputError, match="broken.tpr: cannot be read as .tpr"):
        open_frames(GMX_EXAMPLE / "traj_ca.xtc", top=bad)


@pytest.mark.parametrize("name, top, stride", [("traj_ca.xtc", "conf_ca.gro", 1), ("traj_ca.xtc", "conf_ca.gro", 5),
                                               ("conf_ca.gro", None, 1)])
def test_n_frames_is_what_iterating_yields(name, top, stride):
    """The length behind the progress bar's ETA, without reading the frames."""
    source = open_frames(GMX_EXAMPLE / name, top=None if top is None else GMX_EXAMPLE / top, chunk=7,
                         stride=stride)
    assert source.n_frames == sum(len(c.xyz) for c in source)


def test_protonation_names_dropped_on_reading_are_noted(tmp_path):
    """HIE / HIP / CYX say a protonation state or a disulfide; mdtraj reads them as HIS / CYS without a word."""
    model = md.load(str(FIXTURE))[0]
    ca = model.atom_slice(model.topology.select("name CA"))
    ca.save_pdb(str(tmp_path / "plain.pdb"))
    lines = (tmp_path / "plain.pdb").read_text().splitlines(keepends=True)
    text = "".join(line.replace("TRP A   6", "HIE A   6").replace("TYR A   3", "HIP A   3") for line in lines)
    (tmp_path / "named.pdb").write_text(text)
    source = open_frames(tmp_path / "named.pdb")
    assert [r.name for r in source.topology.residues][2:6] == ["HIS", "ILE", "GLN", "HIS"]
    assert source.notes == [f"{tmp_path / 'named.pdb'}: residue names that say a protonation state or a disulfide "
                            "are read as standard residues (HIE as HIS, HIP as HIS): the output names standard "
                            "residues, and refine protonates at its pH (--ph)"]
    assert open_frames(tmp_path / "plain.pdb").notes == []


def test_c_output_capture_gives_the_descriptors_back_on_ctrl_c(monkeypatch, capfd):
    """Ctrl-C inside the block, or while it flushes at its end: stdout and stderr are the terminal's again (a
    Ctrl-C that left stderr on the capture file lost the message that says how to resume)."""
    from backmap_plugin.io import c_stdout

    def files():
        return [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)]

    before = files()
    with pytest.raises(KeyboardInterrupt):
        with c_stdout.c_stdout_to_stderr():
            os.write(2, b"(xdrfile error) Undocumented error 3")
            os.write(1, b"dcdplugin) a line")
            raise KeyboardInterrupt
    assert files() == before
    err = capfd.readouterr().err
    assert "dcdplugin) a line\n" in err and "xdrfile" not in err
    calls = []

    def interrupted_flush():
        calls.append(1)
        if len(calls) == 2:  # the flush at the end of the block
            raise KeyboardInterrupt

    monkeypatch.setattr(c_stdout, "_flush_c_stdio", interrupted_flush)
    with pytest.raises(KeyboardInterrupt):
        with c_stdout.c_stdout_to_stderr():
            pass
    assert files() == before


def test_append_after_a_copy_that_was_stopped_starts_from_the_whole_old_file(tmp_path):
    """An append to XTC copies the old frames into a new file; a process killed while copying leaves the whole old
    file aside and a part of it in place: the next append starts from the whole one (it moved the part over the
    whole, and 197,000 of 300,000 frames were lost), and an H5 file of another topology is refused."""
    traj = md.load(str(FIXTURE))
    top = traj.topology
    out = tmp_path / "aa.xtc"
    write_trajectory(out, top, traj.xyz[:10] * 10)
    aside = tmp_path / ".aa.xtc.appending.xtc"
    os.replace(out, aside)  # as the killed append left them: the old file aside, three of its frames copied
    write_trajectory(out, top, traj.xyz[:3] * 10)
    writer = TrajectoryWriter(out, top, atomic=False, append=True)
    assert writer.frames_written == 10
    writer.write(traj.xyz[10:12] * 10)
    writer.close()
    np.testing.assert_allclose(md.load(str(out), top=top).xyz, traj.xyz[:12], atol=2e-3)
    assert not aside.exists()
    h5 = tmp_path / "aa.h5"
    write_trajectory(h5, top, traj.xyz[:2] * 10)
    other = md.load(str(FIXTURE)).topology
    other.residue(0).name = "GLN"
    with pytest.raises(BackmapInputError, match="cannot append: atom 1 is ASN N in the file and GLN N"):
        TrajectoryWriter(h5, other, atomic=False, append=True)


@pytest.mark.parametrize("ext, end", [(".pdb", "END\n"), (".cif", "#\n")])
def test_append_to_a_file_that_a_killed_reporter_left(tmp_path, ext, end):
    """A reporter killed between batches leaves its PDB without END (mmCIF without its closing #), or with a model
    cut short: appending keeps the whole models (it was refused as "not a finished PDB trajectory written for this
    topology")."""
    traj = md.load(str(FIXTURE))
    ca = traj.atom_slice(traj.topology.select("name CA"))
    out = tmp_path / f"aa{ext}"
    write_trajectory(out, ca.topology, ca.xyz[:3] * 10)
    text = out.read_text()
    lines = text.splitlines(True)
    torn = "MODEL        4\n" + lines[1] if ext == ".pdb" else lines[-3]  # the start of a fourth model
    for left in (text[: -len(end)], text[: -len(end)] + torn):
        out.write_text(left)
        writer = TrajectoryWriter(out, ca.topology, atomic=False, append=True)
        assert writer.frames_written == 3
        writer.write(ca.xyz[3:5] * 10)
        writer.close()
        np.testing.assert_allclose(md.load(str(out)).xyz, ca.xyz[:5], atol=1e-3)


def test_append_leaves_out_a_torn_last_xtc_frame(tmp_path):
    """A run killed while writing an XTC frame leaves it torn: appending keeps the whole frames before it (it was
    refused, "copying its frames failed"); a damaged frame before the last still stops the append, file kept."""
    traj = md.load(str(FIXTURE))
    top = traj.topology
    out = tmp_path / "aa.xtc"
    write_trajectory(out, top, traj.xyz[:5] * 10)
    whole = out.read_bytes()
    out.write_bytes(whole[:-40])
    writer = TrajectoryWriter(out, top, atomic=False, append=True)
    assert writer.frames_written == 4
    writer.write(traj.xyz[5:7] * 10)
    writer.close()
    np.testing.assert_allclose(md.load(str(out), top=top).xyz, traj.xyz[[0, 1, 2, 3, 5, 6]], atol=2e-3)
    write_trajectory(out, top, traj.xyz[:5] * 10)
    with md.formats.XTCTrajectoryFile(str(tmp_path / "aa.xtc")) as handle:
        third = int(handle.offsets[2])
    damaged = whole[:third] + bytes(4) + whole[third + 4:]  # the third frame's magic number gone
    out.write_bytes(damaged)
    with pytest.raises(BackmapInputError, match="cannot append: copying its frames failed"):
        TrajectoryWriter(out, top, atomic=False, append=True)
    assert out.read_bytes() == damaged
    h5 = tmp_path / "aa.h5"
    write_trajectory(h5, top, traj.xyz[:2] * 10)
    h5.write_bytes(h5.read_bytes()[:-20])
    with pytest.raises(BackmapInputError, match=r"cannot append: the file is unreadable: [^\n]*\Z"):
        TrajectoryWriter(h5, top, atomic=False, append=True)


def _molecules_pdb(path: Path, xyz: np.ndarray, names: list, chain: str, segments: list, numbers: list) -> None:
    """A C-alpha PDB of molecules written one after another without TER records, as VMD, psfgen and LAMMPS
    converters write them: ``chain`` for every atom, a segment id and a residue number per residue."""
    lines = [f"ATOM  {k + 1:5d}  CA  {name:3s} {chain:1s}{number:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00      "
             f"{segment:4s} C" for k, ((x, y, z), name, segment, number) in enumerate(zip(xyz, names, segments,
                                                                                         numbers))]
    path.write_text("\n".join(lines) + "\nEND\n")


def test_molecules_told_apart_by_numbers_or_segment_ids_in_a_pdb(tmp_path):
    """Three copies of a peptide whose ends touch (3.8 A, as in a condensate), in one PDB without TER records: with
    blank chain ids and numbers that start again, or with CHARMM segment ids, each is its own chain (they were
    joined by peptide bonds, the numbers and segment ids unread); a named chain whose numbers go down stays one
    chain, bonded where its beads are (a propeptide numbered before the mature chain)."""
    from backmap_plugin.api import backmap

    traj = md.load(str(FIXTURE))[0]
    ca = traj.atom_slice(traj.topology.select("name CA")).xyz[0] * 10
    names = [r.name for r in traj.topology.residues]
    copies = [ca]
    for _ in range(2):
        end = copies[-1][-1]
        step = (end - copies[-1][-2]) / np.linalg.norm(end - copies[-1][-2]) * 3.8
        copies.append(ca - ca[0] + end + step)
    xyz = np.concatenate(copies)
    numbers = list(range(1, 21)) * 3
    for name, chain, segments in (("blank", " ", [""] * 60), ("segid", "X", ["P1"] * 20 + ["P2"] * 20 + ["P3"] * 20)):
        _molecules_pdb(tmp_path / f"{name}.pdb", xyz, names * 3, chain, segments, numbers)
        result = backmap(str(tmp_path / f"{name}.pdb"), str(tmp_path / f"{name}_aa.pdb"), progress=False)
        assert (result.n_chains, result.n_segments) == (3, 3), name
        assert not any("chain broken" in line for line in result.report)  # (chains, not breaks: ids repeat)
        assert sum(a.name == "OXT" for a in md.load(str(tmp_path / f"{name}_aa.pdb")).topology.atoms) == 3
    _molecules_pdb(tmp_path / "named.pdb", xyz[:40], names * 2, "A", [""] * 40, list(range(21, 41)) + numbers[:20])
    result = backmap(str(tmp_path / "named.pdb"), str(tmp_path / "named_aa.pdb"), progress=False)
    assert (result.n_chains, result.n_segments) == (1, 1)


def test_dcd_times_come_from_its_header(tmp_path):
    """A DCD written by OpenMM says when its frames are (the first frame's step, the steps between frames, the time
    step; as its DCDReporter writes them and MDAnalysis reads them): the output's XTC times are those (they were
    frame indices: a CALVADOS 3 run's 150, 900, 1650 ps with --stride 5 came out 0, 5, 10); a DCD without times
    in its header (mdtraj's) keeps frame indices."""
    import openmm.app as app
    from openmm import unit

    from backmap_plugin.api import backmap

    examples = Path(__file__).resolve().parents[1] / "examples"
    traj = md.load(str(examples / "trpcage_ca.dcd"), top=str(examples / "trpcage_ca.pdb"))[:6]
    top = traj.topology.to_openmm()
    with open(tmp_path / "openmm.dcd", "wb") as handle:
        dcd = app.DCDFile(handle, top, 0.002 * unit.picoseconds, firstStep=1000, interval=500)
        for xyz in traj.xyz:
            dcd.writeModel(xyz * unit.nanometer)
    backmap(str(tmp_path / "openmm.dcd"), str(tmp_path / "aa.xtc"), top=str(examples / "trpcage_ca.pdb"), stride=2,
            progress=False)
    with md.formats.XTCTrajectoryFile(str(tmp_path / "aa.xtc")) as handle:
        times = handle.read()[1]
    np.testing.assert_allclose(times, [2.0, 4.0, 6.0], atol=1e-3)  # steps 1000 + 500 i, i = 0, 2, 4, of 0.002 ps
    backmap(str(examples / "trpcage_ca.dcd"), str(tmp_path / "ex.xtc"), top=str(examples / "trpcage_ca.pdb"),
            stride=10, progress=False)
    with md.formats.XTCTrajectoryFile(str(tmp_path / "ex.xtc")) as handle:
        np.testing.assert_allclose(handle.read()[1], [0.0, 10.0, 20.0, 30.0])


def _xtc_steps_and_times(path) -> tuple[list, list]:
    with md.formats.XTCTrajectoryFile(str(path)) as handle:
        _, time, step, _ = handle.read()
    return step.tolist(), np.round(time, 3).tolist()


def test_xtc_output_keeps_the_input_step_numbers(tmp_path):
    """An .xtc output's frames keep their input frames' step numbers (they were numbered 0, 1, 2 ... whatever the
    input and --stride): a GROMACS .xtc's own (steps 0, 100, 200 ...: every 2nd frame with samples=2 gives 0, 0,
    200, 200, 400, 400), an OpenMM DCD header's (first step 1000, 500 between frames), else each frame's index in
    the input (mdtraj's DCD header, a PDB file) with the stride; times as before."""
    from backmap_plugin.api import backmap

    martini = DATA / "martini3"
    backmap(str(martini / "md.xtc"), str(tmp_path / "martini.xtc"), top=str(martini / "md.gro"), stride=2, samples=2,
            method="ideal", progress=False)
    assert _xtc_steps_and_times(tmp_path / "martini.xtc") == ([0, 0, 200, 200, 400, 400], [0, 0, 4, 4, 8, 8])
    examples = Path(__file__).resolve().parents[1] / "examples"
    ca = str(examples / "trpcage_ca.pdb")
    traj = md.load(str(examples / "trpcage_ca.dcd"), top=ca)[:6]
    with open(tmp_path / "openmm.dcd", "wb") as handle:
        import openmm.app as app
        from openmm import unit

        dcd = app.DCDFile(handle, traj.topology.to_openmm(), 0.002 * unit.picoseconds, firstStep=1000, interval=500)
        for xyz in traj.xyz:
            dcd.writeModel(xyz * unit.nanometer)
    backmap(str(tmp_path / "openmm.dcd"), str(tmp_path / "openmm.xtc"), top=ca, stride=2, method="ideal",
            progress=False)
    assert _xtc_steps_and_times(tmp_path / "openmm.xtc") == ([1000, 2000, 3000], [2, 4, 6])
    backmap(str(examples / "trpcage_ca.dcd"), str(tmp_path / "ex.xtc"), top=ca, stride=10, method="ideal",
            progress=False)
    assert _xtc_steps_and_times(tmp_path / "ex.xtc") == ([0, 10, 20, 30], [0, 10, 20, 30])
    traj.save_pdb(str(tmp_path / "six.pdb"))
    backmap(str(tmp_path / "six.pdb"), str(tmp_path / "six.xtc"), stride=4, method="ideal", progress=False)
    assert _xtc_steps_and_times(tmp_path / "six.xtc")[0] == [0, 4]


def test_dcd_output_gives_its_times_in_its_header(tmp_path):
    """A DCD output says when its frames are, in its header as OpenMM writes it (they were lost: readers such as
    MDAnalysis and our own reader got 1 AKMA time unit between frames, or frame indices): frames at 2, 4, 6 ps
    read back so; 150, 900, 1650 ps, written in two pieces, need 5 steps between frames (ISTART 1, NSAVC 5);
    frames not evenly spaced get no times."""
    import openmm.app as app
    from openmm import unit

    from backmap_plugin.api import backmap
    from backmap_plugin.io import dcd

    examples = Path(__file__).resolve().parents[1] / "examples"
    traj = md.load(str(examples / "trpcage_ca.dcd"), top=str(examples / "trpcage_ca.pdb"))[:6]
    with open(tmp_path / "openmm.dcd", "wb") as handle:
        writer = app.DCDFile(handle, traj.topology.to_openmm(), 0.002 * unit.picoseconds, firstStep=1000,
                             interval=500)
        for xyz in traj.xyz:
            writer.writeModel(xyz * unit.nanometer)
    backmap(str(tmp_path / "openmm.dcd"), str(tmp_path / "aa.dcd"), top=str(examples / "trpcage_ca.pdb"), stride=2,
            progress=False, samples=1)
    np.testing.assert_allclose(dcd.clock(str(tmp_path / "aa.dcd")), (2.0, 2.0), rtol=1e-6)
    writer = TrajectoryWriter(str(tmp_path / "spaced.dcd"), traj.topology)
    with writer:
        writer.write(traj.xyz[:1] * 10, time=np.array([150.0]))
        writer.write(traj.xyz[1:3] * 10, time=np.array([900.0, 1650.0]))
    assert dcd.read_header(str(tmp_path / "spaced.dcd"))[1:3] == (1, 5)
    np.testing.assert_allclose(dcd.clock(str(tmp_path / "spaced.dcd")), (150.0, 750.0), rtol=1e-6)
    with TrajectoryWriter(str(tmp_path / "uneven.dcd"), traj.topology) as writer:
        writer.write(traj.xyz[:3] * 10, time=np.array([0.0, 1.0, 3.0]))
    assert dcd.clock(str(tmp_path / "uneven.dcd")) is None


def test_dcd_output_says_where_it_gives_no_times(tmp_path):
    """Frames whose times a DCD header cannot give (not evenly spaced: the samples of a frame share its time, as
    --samples 2 writes them) get a note that the file gives no times (it gave readers a time axis of its own, 1 AKMA
    between frames, without a word); frames evenly spaced, or without times, none."""
    from backmap_plugin.api import backmap

    examples = Path(__file__).resolve().parents[1] / "examples"
    traj = md.load(str(examples / "trpcage_ca.pdb"))
    note = (f"{tmp_path / 'samples.dcd'}: the frames' times do not fit a DCD header, which gives all frames one "
            "first time and one interval (they are not evenly spaced, e.g. where several samples of a frame share its "
            "time, or the first is on no step of the interval): the file gives no times (readers take its frames as 1 "
            "AKMA, 0.049 ps, apart); write .xtc or .h5 to keep them")
    with TrajectoryWriter(str(tmp_path / "samples.dcd"), traj.topology) as writer:
        writer.write(np.repeat(traj.xyz * 10, 2, axis=0), time=np.array([150.0, 150.0]))
        writer.write(np.repeat(traj.xyz * 10, 2, axis=0), time=np.array([1200.0, 1200.0]))
    assert writer.notes == [note]
    for name, times in (("even.dcd", np.array([150.0, 900.0])), ("untimed.dcd", None)):
        with TrajectoryWriter(str(tmp_path / name), traj.topology) as writer:
            writer.write(np.repeat(traj.xyz * 10, 2, axis=0), time=times)
        assert writer.notes == []
    md.load(str(examples / "trpcage_ca.dcd"), top=str(examples / "trpcage_ca.pdb"))[:2].save_dcd(
        str(tmp_path / "ca.dcd"))
    result = backmap(str(tmp_path / "ca.dcd"), str(tmp_path / "samples.dcd"), top=str(examples / "trpcage_ca.pdb"),
                     samples=2, method="ideal", progress=False)
    assert note in result.report


def test_a_gro_of_many_chains_writes_a_pdb(tmp_path):
    """70 peptides in a .gro (no chain ids): read as 70 chains with one-character ids A ... Z, a ... z, 0 ... 9,
    then A again, so the PDB output holds them (the 27th got 'AA', which PDB's column refused), TER between."""
    from backmap_plugin.api import backmap

    traj = md.load(str(FIXTURE))[0]
    ca = traj.atom_slice(traj.topology.select("name CA and resid 0 to 3"))
    tops, xyz = [], []
    for k in range(70):
        tops.append(ca.topology)
        xyz.append(ca.xyz[0] + np.array([(k % 7) * 2.0, (k // 7) * 2.0, 0.0], dtype=np.float32))
    top = tops[0]
    for other in tops[1:]:
        top = top.join(other)
    md.Trajectory(np.concatenate(xyz)[None], top, unitcell_lengths=[[20.0, 20.0, 5.0]],
                  unitcell_angles=[[90.0, 90.0, 90.0]]).save_gro(str(tmp_path / "many.gro"))
    result = backmap(str(tmp_path / "many.gro"), str(tmp_path / "many.pdb"), progress=False)
    assert (result.n_chains, result.n_segments) == (70, 70)
    text = (tmp_path / "many.pdb").read_text()
    assert text.count("TER ") == 70 and text.count("OXT") == 70
    ids = [line[21] for line in text.splitlines() if line.startswith("TER ")]
    assert ids[:3] == ["A", "B", "C"] and ids[26] == "a" and ids[52] == "0" and ids[62] == "A"


def test_pdb_disulfide_records_and_no_conect_past_99999_atoms():
    """SSBOND names a disulfide's residues; CONECT joins its serials, except in files of more than 99,999 atoms,
    whose serials wrap (readers bonded the later atom of the same serial: 32 wrong bonds in a 106,340-atom file)."""
    from backmap_plugin.io.pdb import PdbBackend

    def topology(filler: int):
        top = md.Topology()
        chain = top.add_chain("A")
        sg = []
        for number in (22, 92):
            residue = top.add_residue("CYS", chain, resSeq=number)
            for name in ("N", "CA", "C", "O", "CB", "SG"):
                atom = top.add_atom(name, md.element.get_by_symbol(name[0]), residue)
            sg.append(atom)
        top.add_bond(*sg)
        water = top.add_chain("W")
        for _ in range(filler):
            top.add_atom("OW", md.element.oxygen, top.add_residue("HOH", water))
        return top

    for filler, conect in ((10, "CONECT    6   12\nCONECT   12    6\n"), (100_000, "")):
        top = topology(filler)
        where = {atom.index: (atom.index + 1, "A", atom.residue.resSeq, " ") for atom in top.atoms}
        ssbond, written = PdbBackend._disulfide_records(top, where)
        assert ssbond == "SSBOND   1 CYS A   22    CYS A   92 \n" and written == conect  # (the insertion code)


def test_placeholder_cryst1_is_no_box_and_no_warning(tmp_path):
    """The CRYST1 1 x 1 x 1 A record of NMR and cryo-EM entries: no box, and mdtraj's warning on it is not passed
    to the user (every run on such a file printed a UserWarning)."""
    import warnings

    lines = [line for line in gzip.open(FIXTURE, "rt").read().splitlines() if not line.startswith("CRYST1")]
    path = tmp_path / "placeholder.pdb"
    path.write_text("\n".join(["CRYST1    1.000    1.000    1.000  90.00  90.00  90.00 P 1           1"] + lines)
                    + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        topology, box = loaders.load_topology_and_box(str(path), ".pdb")
        assert box is None and topology.n_residues == 20
        assert next(iter(open_frames(str(path)))).box is None


def test_mmcif_disulfides_name_insertion_codes(tmp_path):
    """struct_conn names each cysteine with its insertion code too (CYS 88 and CYS 88A are two residues)."""
    from backmap_plugin.api import backmap
    from backmap_plugin.core.topology import set_insertion_code

    backmap(DATA / "5cba_chain_b_ca.pdb.gz", output=tmp_path / "fv.h5", method="ideal", progress=False)
    traj = md.load(str(tmp_path / "fv.h5"))
    sg = [bond for bond in traj.topology.bonds if bond[0].name == "SG" and bond[1].name == "SG"]
    assert len(sg) == 1
    set_insertion_code(sg[0][1].residue, "A")
    write_trajectory(tmp_path / "fv.cif", traj.topology, traj.xyz * 10.0)
    text = (tmp_path / "fv.cif").read_text()
    assert "_struct_conn.pdbx_ptnr2_PDB_ins_code" in text
    row = next(line for line in text.splitlines() if line.startswith("disulf1 "))
    assert row.split()[-2:] == ["?", "A"]


# --------------------------------------------------------------------------- links, streams, long names

def test_atomic_write_follows_a_link_and_keeps_it(tmp_path):
    """A linked target: the file it names is replaced and the link stays a link; a dangling link's file is made."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "old.json").write_text("old")
    (tmp_path / "link.json").symlink_to(tmp_path / "real" / "old.json")
    (tmp_path / "dangling.json").symlink_to(Path("real") / "new.json")
    atomic.write_json(tmp_path / "link.json", {"a": 1})
    atomic.write_json(tmp_path / "dangling.json", {"b": 2})
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "dangling.json").is_symlink()
    assert json.loads((tmp_path / "real" / "old.json").read_text()) == {"a": 1}
    assert json.loads((tmp_path / "real" / "new.json").read_text()) == {"b": 2}
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["new.json", "old.json"]


def test_atomic_write_to_a_fifo_writes_in_place(tmp_path):
    """A FIFO (as /dev/stdout or a device) is written to, never replaced by a file."""
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)  # (left blocked on failure)
    reader.start()
    atomic.write_json(fifo, {"a": 1})
    reader.join(timeout=20)
    assert not reader.is_alive() and json.loads(got[0]) == {"a": 1}
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe.json"]


def test_trajectory_writer_follows_a_link(tmp_path, l2y):
    """An output that is a link: written (new, no overwrite needed where it dangles) where it points, link kept."""
    top, xyz = l2y
    (tmp_path / "real").mkdir()
    link = tmp_path / "latest.pdb"
    link.symlink_to(Path("real") / "out.pdb")
    with TrajectoryWriter(link, top, overwrite=False) as writer:
        assert os.path.dirname(writer.partial_path) == str(tmp_path / "real")
        writer.write(xyz[:1])
    assert link.is_symlink() and (tmp_path / "real" / "out.pdb").read_text().count("ATOM") == 154
    with pytest.raises(BackmapInputError, match="output file exists"):
        TrajectoryWriter(link, top, overwrite=False)


def test_output_that_is_a_fifo_is_refused(tmp_path, l2y):
    os.mkfifo(tmp_path / "out.pdb")
    with pytest.raises(BackmapInputError, match="not a regular file"):
        TrajectoryWriter(tmp_path / "out.pdb", l2y[0])


def test_file_name_of_255_characters_is_written(tmp_path, l2y):
    """The hidden partial and temporary files of a name near the limit get a hash for a name, the same each time
    (a resumed run finds its partial file)."""
    top, xyz = l2y
    path = tmp_path / ("a" * 251 + ".pdb")
    with TrajectoryWriter(path, top) as writer:
        assert len(os.path.basename(writer.partial_path)) <= 255
        assert writer.partial_path == paths.partial_path(path) and writer.partial_path.endswith(".partial.pdb")
        writer.write(xyz[:1])
    assert path.read_text().count("ATOM") == 154
    atomic.write_json(tmp_path / ("b" * 250 + ".json"), {"a": 1})
    assert sorted(len(p.name) for p in tmp_path.iterdir()) == [255, 255]
    assert paths.partial_path(tmp_path / "short.pdb") == str(tmp_path / ".short.pdb.partial.pdb")


def test_check_file_path_refuses_a_file_the_job_reads(tmp_path):
    """A side file (report, summary) is never one of the job's inputs or its output, by any name."""
    (tmp_path / "in.pdb").write_text("ATOM")
    (tmp_path / "link.pdb").symlink_to(tmp_path / "in.pdb")
    reads = {"input": str(tmp_path / "in.pdb"), "--top": None, "output": str(tmp_path / "out.pdb")}
    for path, role in ((tmp_path / "link.pdb", "input"), (tmp_path / "out.pdb", "output")):
        with pytest.raises(BackmapInputError, match=f"the report would overwrite the {role} file {reads[role]}"):
            paths.check_file_path(path, "the report", reads=reads)
    paths.check_file_path(tmp_path / "report.json", "the report", reads=reads)
