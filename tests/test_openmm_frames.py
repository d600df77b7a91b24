"""Reading all-atom structures and trajectories frame by frame for OpenMM (:mod:`backmap_plugin.openmm.frames`)."""

from __future__ import annotations

import gzip
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

pytest.importorskip("openmm")

from openmm import app, unit  # noqa: E402

from backmap_plugin.core.errors import BackmapInputError  # noqa: E402
from backmap_plugin.io.trajectory import TrajectoryWriter  # noqa: E402
from backmap_plugin.openmm.frames import open_structure  # noqa: E402


def _nm(positions) -> np.ndarray:
    return np.array([[v[0], v[1], v[2]] for v in positions.value_in_unit(unit.nanometer)])


@pytest.fixture(scope="module")
def ensemble(fixture_pdb, tmp_path_factory) -> tuple[Path, md.Trajectory]:
    """Five models of the 1l2y NMR ensemble, each in its own box (a CRYST1 before each model), written by the
    package's writer (SSBOND / CONECT-free: trp-cage has no cysteine)."""
    traj = md.load(str(fixture_pdb))[:5]
    path = tmp_path_factory.mktemp("frames") / "five.pdb"
    boxes = np.eye(3, dtype=np.float32) * np.array([30.0, 31.0, 32.0, 33.0, 34.0])[:, None, None]
    with TrajectoryWriter(str(path), traj.topology) as writer:
        writer.write(traj.xyz * 10.0, box=boxes)
    return path, traj


def test_pdb_models_are_read_one_by_one_as_openmm_reads_them(ensemble):
    """Every model's positions equal OpenMM's reader's; each model keeps its own CRYST1 box (OpenMM gives every
    model the file's last one); the topology is OpenMM's, with its bonds."""
    path, _ = ensemble
    frames = open_structure(path)
    whole = app.PDBFile(str(path))
    assert len(frames) == 5 and frames.topology.getNumAtoms() == whole.topology.getNumAtoms()
    assert frames.topology.getNumBonds() == whole.topology.getNumBonds()
    read = list(frames)
    for k, (positions, box, time) in enumerate(read):
        np.testing.assert_allclose(_nm(positions), _nm(whole.getPositions(frame=k)), atol=1e-9)
        np.testing.assert_allclose(_nm(box), np.eye(3) * (3.0 + 0.1 * k), atol=1e-6)
    assert len(list(frames)) == 5  # iterated again


def test_gzipped_pdb_and_mmcif(fixture_pdb, tmp_path):
    """A gzipped ensemble (the fixture itself, no box) and an mmCIF file read as OpenMM reads them."""
    frames = open_structure(fixture_pdb)
    with gzip.open(fixture_pdb, "rt") as handle:
        whole = app.PDBFile(handle)
    assert len(frames) == whole.getNumFrames() == 38
    last = list(frames)[-1]
    np.testing.assert_allclose(_nm(last[0]), _nm(whole.getPositions(frame=37)), atol=1e-9)
    assert last[1] is None
    cif = tmp_path / "one.cif"
    with open(cif, "w") as handle:
        app.PDBxFile.writeFile(whole.topology, whole.getPositions(frame=3), handle)
    (positions, _, _), = list(open_structure(cif))
    np.testing.assert_allclose(_nm(positions), _nm(whole.getPositions(frame=3)), atol=1e-4)


def test_alternate_locations_are_read_by_openmm(ensemble, tmp_path):
    """A PDB file whose atoms have alternate locations (two lines for one atom) is read whole by OpenMM, which
    keeps one location of each atom: the same atoms as without them."""
    path, traj = ensemble
    lines = path.read_text().splitlines(keepends=True)
    altered = []
    for line in lines:
        if line.startswith("ATOM") and line[12:16].strip() == "OG":  # the SER side chains: locations A and B
            altered.append(line[:16] + "A" + line[17:])
            moved = f"{float(line[30:38]) + 0.5:8.3f}"
            altered.append(line[:16] + "B" + line[17:30] + moved + line[38:])
        else:
            altered.append(line)
    altlocs = tmp_path / "altlocs.pdb"
    altlocs.write_text("".join(altered))
    assert sum(line[16:17] == "B" for line in altered) == 3 * 5  # (OG1 of THR, which trp-cage has not, made none)
    frames = open_structure(altlocs)
    assert frames.topology.getNumAtoms() == traj.n_atoms and len(frames) == 5
    np.testing.assert_allclose(_nm(list(frames)[4][0]), traj.xyz[4], atol=1e-4)
    # B listed first with the lower occupancy: A, the higher, is kept (OpenMM kept the first), with a note
    swapped = []
    for line in altered:
        if line.startswith("ATOM") and line[16] in "AB":
            line = line[:54] + ("  0.70" if line[16] == "A" else "  0.30") + line[60:]
            if line[16] == "B":
                swapped.insert(len(swapped) - 1, line)
                continue
        swapped.append(line)
    altlocs.write_text("".join(swapped))
    frames = open_structure(altlocs)
    assert frames.topology.getNumAtoms() == traj.n_atoms and len(frames) == 5
    np.testing.assert_allclose(_nm(list(frames)[4][0]), traj.xyz[4], atol=1e-4)
    assert len(frames.notes) == 1 and "have alternate locations" in frames.notes[0] and "kept A in" in frames.notes[0]


def test_a_model_with_other_atoms_is_refused_by_number(ensemble, tmp_path):
    """A model of other atoms is named as the frame it is, counted from 0 as every message counts frames (it was
    "model 5" for frame 4), with the line of its MODEL record; so too where the models have no ENDMDL records
    (read one at a time: "model 3 has 153 atoms, the first 154" named frame 2)."""
    path, _ = ensemble
    text = path.read_text()
    cut = text.rsplit("ATOM", 3)[0] + "TER\nENDMDL\nEND\n"  # the last model loses atoms
    short = tmp_path / "short.pdb"
    short.write_text(cut)
    models = [n for n, line in enumerate(cut.splitlines(), start=1) if line.startswith("MODEL")]
    with pytest.raises(BackmapInputError, match=r"short.pdb: its models hold different numbers of atoms \(frame 0: "
                                                rf"154, frame 4: 151, the MODEL on line {models[4]}\)"):
        open_structure(short)  # (before any frame is read)
    lines = [line for line in text.splitlines(keepends=True) if not line.startswith("ENDMDL")]
    models = [k for k, line in enumerate(lines) if line.startswith("MODEL")]
    del lines[models[2] + 1]  # frame 2's first atom
    (tmp_path / "no_endmdl.pdb").write_text("".join(lines))
    frames = open_structure(tmp_path / "no_endmdl.pdb")
    with pytest.raises(BackmapInputError, match=rf"no_endmdl.pdb: frame 2 \(the MODEL on line {models[2] + 1}\) has "
                                                r"153 atoms, frame 0 154; every model must hold the same atoms"):
        list(frames)


def test_trajectory_with_its_topology(ensemble, tmp_path):
    """An XTC with the first model as PDB topology, and an HDF5 file alone, give the PDB ensemble's frames and
    boxes; an XTC without a topology, or with another protein's, is refused by name."""
    path, traj = ensemble
    pdb_frames = [(_nm(p), _nm(b)) for p, b, _ in open_structure(path)]
    first = tmp_path / "first.pdb"
    md.load_frame(str(path), 0).save(str(first))
    boxes = np.eye(3, dtype=np.float32) * np.array([30.0, 31.0, 32.0, 33.0, 34.0])[:, None, None]
    for name in ("five.xtc", "five.h5", "five.dcd"):
        with TrajectoryWriter(str(tmp_path / name), traj.topology) as writer:
            writer.write(traj.xyz * 10.0, box=boxes)
    for name, top in (("five.xtc", first), ("five.h5", None), ("five.dcd", tmp_path / "five.h5")):
        frames = open_structure(tmp_path / name, top)
        assert len(frames) == 5 and frames.topology.getNumAtoms() == traj.n_atoms, name
        for (positions, box, _), (want, want_box) in zip(frames, pdb_frames):
            np.testing.assert_allclose(_nm(positions), want, atol=2e-3)  # (XTC: 0.001 nm precision)
            np.testing.assert_allclose(_nm(box), want_box, atol=1e-5)
    with pytest.raises(BackmapInputError, match=r"five.xtc: a \.xtc trajectory holds no topology"):
        open_structure(tmp_path / "five.xtc")
    other = tmp_path / "other.pdb"
    traj[0].atom_slice(range(50)).save(str(other))
    with pytest.raises(BackmapInputError, match=r"five.xtc: \d+ atoms, its topology .*other.pdb 50"):
        open_structure(tmp_path / "five.xtc", other)
    with pytest.raises(BackmapInputError, match="holds its own topology"):
        open_structure(path, first)
    with pytest.raises(BackmapInputError, match="five.xtc: a trajectory is no topology"):
        open_structure(tmp_path / "five.xtc", tmp_path / "five.xtc")
    traj[0].save(str(tmp_path / "five.gro"))
    with pytest.raises(BackmapInputError, match="five.gro: unsupported input extension"):
        open_structure(tmp_path / "five.gro")


def test_upper_case_extensions_read_as_their_lower_case_twins(ensemble, tmp_path):
    """``FIVE.PDB``, ``FIVE.H5``, and ``FIVE.XTC`` / ``FIVE.DCD`` with a ``FIRST.PDB`` topology (refine's and
    validate's input) give the frames, boxes and times of the lower-case names."""
    path, traj = ensemble
    md.load_frame(str(path), 0).save(str(tmp_path / "first.pdb"))
    (tmp_path / "FIRST.PDB").write_bytes((tmp_path / "first.pdb").read_bytes())
    (tmp_path / "FIVE.PDB").write_bytes(path.read_bytes())
    for ext in (".xtc", ".h5", ".dcd"):
        with TrajectoryWriter(str(tmp_path / f"five{ext}"), traj.topology) as writer:
            writer.write(traj.xyz * 10.0, box=np.repeat(np.eye(3, dtype=np.float32)[None] * 30.0, 5, axis=0),
                         time=np.arange(5, dtype=np.float32) * 2.0)
        (tmp_path / f"FIVE{ext.upper()}").write_bytes((tmp_path / f"five{ext}").read_bytes())
    for lower, upper, top in ((path, "FIVE.PDB", None), ("five.h5", "FIVE.H5", None),
                              ("five.xtc", "FIVE.XTC", "FIRST.PDB"), ("five.dcd", "FIVE.DCD", "FIRST.PDB")):
        want = open_structure(tmp_path / lower, None if top is None else tmp_path / top.lower())
        got = open_structure(tmp_path / upper, None if top is None else tmp_path / top)
        assert got.path == str(tmp_path / upper) and len(got) == len(want) == 5, upper
        assert got.notes == [note.replace(str(tmp_path / lower), str(tmp_path / upper)) for note in want.notes]
        for (positions, box, time), (p_want, b_want, t_want) in zip(got, want):
            np.testing.assert_array_equal(_nm(positions), _nm(p_want))
            np.testing.assert_array_equal(_nm(box), _nm(b_want))
            assert time == t_want, upper


def test_hdf5_without_bonds_gets_its_disulfides_by_distance(tmp_path):
    """An HDF5 topology without an SG-SG bond gets the disulfides of its first frame, as OpenMM's PDB reader
    bonds them (SG atoms within 0.3 nm)."""
    top = md.Topology()
    chain = top.add_chain()
    for k in range(2):
        residue = top.add_residue("CYS", chain, resSeq=k + 1)
        for name, element in (("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"), ("CB", "C"), ("SG", "S")):
            top.add_atom(name, md.element.get_by_symbol(element), residue)
    xyz = np.zeros((1, 12, 3), dtype=np.float32)
    xyz[0, :6, 0] = np.arange(6) * 0.15
    xyz[0, 6:, 0] = np.arange(6) * 0.15
    xyz[0, 6:, 1] = 0.5
    xyz[0, 11] = xyz[0, 5] + [0, 0.2, 0]  # SG-SG 0.2 nm
    path = tmp_path / "cys.h5"
    md.Trajectory(xyz, top).save_hdf5(str(path))
    frames = open_structure(path)
    assert [(a.name, b.name) for a, b in frames.topology.bonds() if a.name == b.name == "SG"] == [("SG", "SG")]


def test_frames_whose_atoms_are_not_the_topologys_are_refused(ensemble, tmp_path):
    """A topology with the same number of atoms in another order, or a PDB model with two atoms swapped, is
    refused at the frame, naming the bond (both were refined as they came: a D residue, a wrong side chain)."""
    path, traj = ensemble
    lines = path.read_text().splitlines(keepends=True)
    atom_lines = [k for k, line in enumerate(lines) if line.startswith("ATOM")]
    n_atoms = traj.n_atoms
    # model 3 (frame 2): the coordinates of the first residue's N and CA swapped
    n, ca = atom_lines[2 * n_atoms], atom_lines[2 * n_atoms + 1]
    swapped = list(lines)
    swapped[n] = lines[n][:30] + lines[ca][30:54] + lines[n][54:]
    swapped[ca] = lines[ca][:30] + lines[n][30:54] + lines[ca][54:]
    (tmp_path / "swapped.pdb").write_text("".join(swapped))
    frames = open_structure(tmp_path / "swapped.pdb")
    with pytest.raises(BackmapInputError, match=r"swapped.pdb: frame 2: the .* bond of A:ASN1 is .* A long, .* in the "
                                                r"first frame: the frame's atoms are not the topology's"):
        list(frames)
    assert frames.frames_read == 2
    # a topology whose first residue lists CA before N (same atoms, same count)
    first = tmp_path / "first.pdb"
    md.load_frame(str(path), 0).save(str(first))
    top_lines = first.read_text().splitlines(keepends=True)
    k = next(i for i, line in enumerate(top_lines) if line.startswith("ATOM"))
    top_lines[k], top_lines[k + 1] = top_lines[k + 1], top_lines[k]
    (tmp_path / "reordered.pdb").write_text("".join(top_lines))
    traj.save(str(tmp_path / "five.xtc"))
    with pytest.raises(BackmapInputError, match=r"five.xtc: frame 0: the .* bond of A:ASN1 .* in .*reordered.pdb"):
        list(open_structure(tmp_path / "five.xtc", tmp_path / "reordered.pdb"))


def test_a_trajectory_cut_short_is_read_as_far_as_it_goes_with_its_times(ensemble, tmp_path):
    """An XTC cut in the middle of a frame gives every whole frame before it (a RuntimeError traceback: the read
    of 20 frames failed) and says how many (``frames_read`` of ``len``), as a DCD cut short does; times come with
    the frames."""
    _, traj = ensemble
    traj = traj[[0, 1, 2, 3, 4] * 8]  # 40 frames: more than one read of READ_CHUNK
    traj.time = np.arange(40) * 2.0
    first = tmp_path / "first.pdb"
    traj[0].save(str(first))
    for name in ("t.xtc", "t.dcd"):
        traj.save(str(tmp_path / name))
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut{name}").write_bytes(data[: len(data) * 9 // 10])
        whole = list(open_structure(tmp_path / name, first))
        cut = open_structure(tmp_path / f"cut{name}", first)
        read = list(cut)
        assert 30 < cut.frames_read == len(read) < 40, name
        assert cut.frames_read < len(cut) if name == "t.xtc" else "of the 40 its header announces" in cut.notes[0]
        for (a, _, t), (b, _, u) in zip(read, whole):
            np.testing.assert_allclose(_nm(a), _nm(b))
            assert t == u
    assert [t for _, _, t in whole] == [None] * 40  # (mdtraj's DCD holds no times; OpenMM's header does)
    assert [t for _, _, t in open_structure(tmp_path / "t.xtc", first)] == list(np.arange(40) * 2.0)


def test_a_strained_bond_is_no_mismatch(ensemble, tmp_path):
    """A frame whose one bond is stretched by 0.55 A (a noisy or strained input, which refine is for) is read; it
    was refused as atoms out of order."""
    path, traj = ensemble
    lines = path.read_text().splitlines(keepends=True)
    atom_lines = [k for k, line in enumerate(lines) if line.startswith("ATOM")]
    names = [lines[k][12:16].strip() for k in atom_lines[: traj.n_atoms]]
    od1, cg = names.index("OD1"), names.index("CG")  # ASN1's OD1, bonded to its CG alone
    k, c = atom_lines[2 * traj.n_atoms + od1], atom_lines[2 * traj.n_atoms + cg]
    xyz = np.array([float(lines[k][i:i + 8]) for i in (30, 38, 46)])
    centre = np.array([float(lines[c][i:i + 8]) for i in (30, 38, 46)])
    moved = xyz + 0.55 * (xyz - centre) / np.linalg.norm(xyz - centre)
    lines[k] = lines[k][:30] + "".join(f"{v:8.3f}" for v in moved) + lines[k][54:]
    (tmp_path / "strained.pdb").write_text("".join(lines))
    assert len(list(open_structure(tmp_path / "strained.pdb"))) == 5


def test_mmcif_of_a_killed_writer_gives_its_whole_models(ensemble, tmp_path):
    """A multi-model mmCIF whose last model is cut short (what a killed run leaves): the whole models with a note,
    as for PDB (refine and validate stopped with an IndexError); the 1 A placeholder cell of NMR and cryo-EM
    entries is no periodic box (refine wrote it into its output)."""
    path, traj = ensemble
    whole = tmp_path / "models.cif"
    with TrajectoryWriter(whole, traj.topology) as writer:
        writer.write(traj.xyz[:3] * 10.0, box=np.repeat(np.eye(3, dtype=np.float32)[None], 3, axis=0))
    lines = whole.read_text().splitlines(keepends=True)
    atom_lines = [k for k, line in enumerate(lines) if line.startswith("ATOM")]
    cut = tmp_path / "cut.cif"
    cut.write_text("".join(lines[:atom_lines[-1] - 10]))  # model 3 without its last 11 atoms, and no closing lines
    source = open_structure(cut)
    frames = list(source)
    assert len(frames) == 2 and all(box is None for _, box, _ in frames)
    assert source.notes == [f"{cut}: read 2 whole model(s); model 3 is cut short ({traj.n_atoms - 11} of "
                            f"{traj.n_atoms} atoms): a truncated file, or one still being written?"]
    np.testing.assert_allclose(_nm(frames[1][0]), traj.xyz[1], atol=1e-4)


def test_a_file_of_no_protein_is_refused_by_name(tmp_path):
    """Water alone: refine and export said "PDBFixer could not complete the structure: 'NoneType' object has no
    attribute '_finalize'", validate passed it."""
    water = tmp_path / "water.pdb"
    water.write_text("HETATM    1  O   HOH A 301      20.000  20.000  20.000  1.00  0.00           O\nEND\n")
    with pytest.raises(BackmapInputError, match=f"{water}: no protein residues \\(it holds HOH\\)"):
        open_structure(water)


def test_residue_labels_name_insertion_codes():
    from backmap_plugin.openmm.structure import residue_label

    top = app.Topology()
    residue = top.addResidue("SER", top.addChain("H"), "82", "B")
    assert residue_label(residue) == "H:SER82B"
    assert residue_label(top.addResidue("GLY", top.addChain("L"), "83")) == "L:GLY83"


def test_trajectories_in_folders_that_are_not_ascii(ensemble, tmp_path):
    """refine / validate read DCD and XTC frames in a folder whose name is not ASCII (mdtraj's compiled readers
    take ASCII paths only: :func:`~backmap_plugin.io.mdtraj_files.mdtraj_path`)."""
    path, traj = ensemble
    folder = tmp_path / "Ångström"
    folder.mkdir()
    for name in ("frames.dcd", "frames.xtc"):
        with TrajectoryWriter(str(folder / name), traj.topology) as writer:
            writer.write(traj.xyz * 10.0)
        frames = open_structure(folder / name, top=path)
        read = list(frames)
        assert len(frames) == len(read) == 5
        np.testing.assert_allclose(_nm(read[4][0]), traj.xyz[4], atol=1e-3)


DATA = Path(__file__).resolve().parent / "data"
#: Real mmCIF rows of PDB 1NCB (chains N and H, glycan chain B, waters; tests/data/README.md)
NCB = DATA / "1ncb_n81-85_h81-84.cif.gz"
#: Real mmCIF rows of PDB 3U7T (SER/PRO 22 and ILE/LEU 25 as alternate locations; tests/data/README.md)
CRAMBIN = DATA / "3u7t_20-26_altloc.cif.gz"


def _run_residues(path, notes=None):
    """(chain id, name, number, insertion code, atom names) of each residue as ``backmap run`` reads the file."""
    from backmap_plugin.io.loaders import load_whole

    traj = load_whole(str(path), ".cif", notes)
    return traj, [(r.chain.chain_id, r.name, str(r.resSeq), r.insertion_code, [a.name for a in r.atoms])
                  for r in traj.topology.residues]


def _refine_residues(structure):
    return [(r.chain.id, r.name, r.id, r.insertionCode, [a.name for a in r.atoms()])
            for r in structure.topology.residues()]


def test_mmcif_chains_are_named_as_backmap_run_names_them():
    """A crystal entry whose label chain ids (one per chain, ligand and water group) outnumber its author ids:
    refine and validate named chains N and H A and C (OpenMM's reader takes label ids then), and the glycan's
    chain B E, while run names them N, H and B; residues 82A-82C keep their codes."""
    structure = open_structure(NCB)
    _, expected = _run_residues(NCB)
    assert _refine_residues(structure) == expected
    chains = [(c.id, [r.name for r in c.residues()][0]) for c in structure.topology.chains()]
    assert chains[:3] == [("N", "ILE"), ("H", "GLN"), ("B", "NAG")]
    assert [f"{r.id}{r.insertionCode}" for r in structure.topology.residues() if r.chain.id == "H"][:6] == [
        "81", "82", "82A", "82B", "82C", "83"]
    assert structure.notes == [] and len(structure) == 1
    (positions, box, _), = list(structure)
    assert box is None  # (the rows come without the entry's _cell)
    np.testing.assert_allclose(_nm(positions)[0], [7.0707, 0.8303, 15.3578], atol=1e-9)  # ILE N 81 N, as written
    # standard bonds: the peptide bonds of both chains, none between them
    peptide = [(a.residue.id, b.residue.id) for a, b in structure.topology.bonds()
               if {a.name, b.name} == {"C", "N"} and a.residue is not b.residue]
    assert len(peptide) == 4 + 6


def test_mmcif_alternate_conformers_are_read_as_backmap_run_reads_them():
    """Microheterogeneity (SER or PRO 22, ILE or LEU 25, as alternate locations A and B): OpenMM's reader put the
    B atoms of other names into the A residue (SER22 with a CG and a CD, ILE25 with a CD2), which amber14 has no
    template for; now each residue is its conformer of highest occupancy (A: 0.53, 0.61), with run's note."""
    notes = []
    traj, expected = _run_residues(CRAMBIN, notes)
    structure = open_structure(CRAMBIN)
    assert _refine_residues(structure) == expected
    residues = {r.id: r for r in structure.topology.residues()}
    assert residues["22"].name == "SER" and {"CG", "CD"}.isdisjoint(a.name for a in residues["22"].atoms())
    assert residues["25"].name == "ILE" and "CD2" not in {a.name for a in residues["25"].atoms()}
    assert structure.notes == notes and len(notes) == 1
    assert "chain A residue 22: A SER 0.53, B PRO 0.47" in notes[0]
    (positions, _, _), = list(structure)
    np.testing.assert_allclose(_nm(positions), traj.xyz[0], atol=1e-6)


def test_frames_near_their_periodic_images_get_a_note(ensemble, tmp_path):
    """Trp-cage in a cell it nearly fills (its atoms within 4 A of their images: a slab's chains packed across the
    faces) is refined and validated without images, and a note says so; in a box of solvent around it, none."""
    _, traj = ensemble
    xyz = traj.xyz[:2] * 10.0
    extent = float((xyz.max(1) - xyz.min(1)).max())
    for name, edge, noted in (("tight.pdb", extent + 2.0, True), ("solvated.pdb", extent + 20.0, False)):
        path = tmp_path / name
        with TrajectoryWriter(str(path), traj.topology) as writer:
            writer.write(xyz, box=np.repeat(np.eye(3, dtype=np.float32)[None] * edge, 2, axis=0))
        structure = open_structure(path)
        assert len(list(structure)) == 2
        notes = structure.read_notes("validated")
        assert (notes == [f"{path}: its atoms come within 4 A of their periodic images (e.g. chains packed across "
                          "the box's faces), and the frames were validated without images: clashes across the faces "
                          "are not counted (nor, in refine, minimised away)"]) if noted else notes == []
