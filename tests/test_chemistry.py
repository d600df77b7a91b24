"""Tests of the residue table, name normalisation, ideal geometry and the rotamer library.

The residue table (:mod:`backmap_plugin.core.chemistry`) is checked against
OpenMM's amber14 templates and against the geometry of real structures of the
corpus (train split only); name normalisation on strings, on a synthetic
topology and on real files written by CHARMM, Amber and with selenomethionine.
Tests that need the corpus are skipped when it is absent.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch

from backmap_plugin.build.rotamers import load_rotamers
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import geometry as geo
from backmap_plugin.core import topology as tp
from backmap_plugin.core.errors import BackmapInputError

openmm = pytest.importorskip("openmm")
from openmm import app, unit  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
FIXTURE = DATA / "1l2y.pdb.gz"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAIN = CORPUS / "train"

needs_corpus = pytest.mark.skipif(not TRAIN.is_dir(), reason=f"corpus not found at {CORPUS}")

# amber14 template names of our residues (neutral HIS is HIE there)
_AMBER_NAME = {"HIS": "HIE"}


@pytest.fixture(scope="module")
def forcefield():
    return app.ForceField("amber14-all.xml")


def _load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kwargs:
            return md.load_pdb(str(path), frame=0, **kwargs)
        return md.load(str(path), frame=0)


def _heavy(template):
    """Heavy atoms (name -> element) and heavy-heavy bonds of an OpenMM template."""
    atoms = {a.name: a.element.symbol for a in template.atoms if a.element.symbol != "H"}
    bonds = set()
    for i, j in template.bonds:
        a, b = template.atoms[i].name, template.atoms[j].name
        if a in atoms and b in atoms:
            bonds.add(frozenset((a, b)))
    external = {template.atoms[i].name for i in template.externalBonds}
    return atoms, bonds, external


# --------------------------------------------------------------------------
# The table against OpenMM amber14
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", chem.RESIDUE_NAMES)
def test_residue_matches_amber14_template(forcefield, name):
    spec = chem.RESIDUES[name]
    ours = dict(zip(spec.atoms, spec.elements))
    our_bonds = {frozenset(b) for b in spec.bonds}
    tname = _AMBER_NAME.get(name, name)

    atoms, bonds, external = _heavy(forcefield._templates[tname])
    assert ours == atoms
    assert our_bonds == bonds
    assert external == {"N", "C"}
    # N-terminal form: same heavy atoms
    atoms, bonds, _ = _heavy(forcefield._templates["N" + tname])
    assert ours == atoms and our_bonds == bonds
    # C-terminal form: our atoms plus OXT bonded to C
    atoms, bonds, _ = _heavy(forcefield._templates["C" + tname])
    assert dict(ours, OXT="O") == atoms
    assert our_bonds | {frozenset(("C", "OXT"))} == bonds
    assert chem.residue_atom_names(name, c_terminal=True) == spec.atoms + ("OXT",)
    assert all(chem.element_of(name, a) == e for a, e in atoms.items())


def test_slot_layout_and_zmatrix_order():
    built = {chem.SLOT_CA, chem.REF_N1, chem.REF_N2, chem.REF_C1, chem.REF_C2}
    order = {s: i for i, s in enumerate(chem.BUILD_ORDER)}
    for t, name in enumerate(chem.RESIDUE_NAMES):
        spec = chem.RESIDUES[name]
        assert spec.atoms[:4] == ("N", "CA", "C", "O")
        assert spec.n_atoms <= chem.SLOT_OXT  # TRP fills slots 0-13
        if name != "GLY":
            assert spec.atoms[chem.SLOT_CB] == "CB"
        exists = np.zeros(chem.N_SLOTS, bool)
        exists[: spec.n_atoms] = True
        exists[chem.SLOT_OXT] = True
        assert (chem.SLOT_EXISTS[t] == exists).all()
        for s in np.nonzero(exists)[0]:
            if s == chem.SLOT_CA:
                continue  # given, not built
            for p in chem.ZMATRIX_PARENTS[t, s]:
                # every parent is given or built before the slot
                assert p in built or order[p] < order[s], (name, s, p)
        # chi atoms are a bonded chain, and the chi's last atom is built from it
        bonds = {frozenset(b) for b in spec.bonds}
        for k, chi in enumerate(spec.chis):
            assert all(frozenset(chi[i : i + 2]) in bonds for i in range(3)), (name, chi)
            s = spec.atoms.index(chi[3])
            assert chem.ZMATRIX_CHI[t, s] == k
        assert chem.CHI_EXISTS[t].sum() == len(spec.chis)
    assert {n for n in chem.RESIDUE_NAMES if chem.CHI_EXISTS[chem.RESIDUE_INDEX[n]].any()} == set(
        chem.RESIDUE_NAMES
    ) - {"ALA", "GLY"}


# --------------------------------------------------------------------------
# OpenMM accepts our output as it is
# --------------------------------------------------------------------------


def _add_hydrogens_and_parametrise(forcefield, top: tp.ProteinTopology, xyz_angstrom):
    omm_top = top.to_mdtraj().to_openmm()
    modeller = app.Modeller(omm_top, np.asarray(xyz_angstrom, dtype=float) * 0.1 * unit.nanometer)
    modeller.addHydrogens(forcefield)
    system = forcefield.createSystem(modeller.topology)  # raises on any template mismatch
    return modeller, system


def test_openmm_adds_hydrogens_to_real_structure(forcefield):
    traj = _load(FIXTURE)
    records, report = tp.read_residues(traj.topology, FIXTURE.name)
    assert report == []
    slots, present = tp.gather_slots(traj.xyz * 10.0, records)
    top = tp.protein_topology(records, slots[0, :, chem.SLOT_CA])
    assert (present == top.slot_mask).all()  # every heavy atom of the file, none missing
    modeller, system = _add_hydrogens_and_parametrise(forcefield, top, top.scatter(slots[0]))
    names = [r.name for r in modeller.topology.residues()]
    assert names == top.names  # no renaming needed
    # the deposited 1L2Y (NMR, with hydrogens) has 304 atoms
    assert system.getNumParticles() == modeller.topology.getNumAtoms() == 304


def test_openmm_accepts_every_residue_type(forcefield):
    """All 20 types in one chain plus a 3-residue chain, side chains built by NeRF.

    The backbone is that of 1L2Y (20 residues); side chains and OXT are built
    from the ideal Z-matrix with the most common rotamer of each type.
    """
    traj = _load(FIXTURE)
    records, _ = tp.read_residues(traj.topology)
    slots, _ = tp.gather_slots(traj.xyz * 10.0, records)
    backbone = np.zeros((23, chem.N_SLOTS, 3))
    backbone[:20, :4] = slots[0, :, :4]
    backbone[20:, :4] = slots[0, :3, :4] + np.array([30.0, 0.0, 0.0])
    names = list(chem.RESIDUE_NAMES) + ["CYS", "HIS", "PRO"]
    segment = np.array([0] * 20 + [1] * 3)
    top = tp.ProteinTopology(names, ["A"] * 20 + ["B"] * 3, np.r_[1:21, 1:4], segment)
    res_type = torch.as_tensor(top.res_type)

    lib = load_rotamers()
    internal = geo.ideal_internal(res_type, torch.float64)
    chi_index = torch.as_tensor(chem.ZMATRIX_CHI[top.res_type])
    top_chis = torch.as_tensor(np.nan_to_num(lib.chis[top.res_type, 0]))  # (R, 4)
    has_chi = chi_index >= 0
    internal[..., 2] = torch.where(
        has_chi, torch.gather(top_chis, 1, chi_index.clamp(min=0)), internal[..., 2]
    )
    # proline CD closes the ring: use the corpus torsion of the rotamer's pucker
    cd = chem.RESIDUES["PRO"].atoms.index("CD")
    for i in np.nonzero(np.array(names) == "PRO")[0]:
        pucker = "endo" if top_chis[i, 0] > 0 else "exo"
        internal[i, cd, 2] = np.deg2rad(lib.pro_cd_torsion[pucker])
    refs, valid = geo.context_indices(segment)
    assert valid.all()
    ext = geo.extend_with_context(torch.as_tensor(backbone), refs)
    side = [s for s in chem.BUILD_ORDER if s >= chem.SLOT_CB]
    atoms = geo.build_residues(ext, internal, res_type, side)[:, : chem.N_SLOTS]
    assert torch.isfinite(atoms).all()

    # the requested chi angles come back
    chi = geo.chi_angles(atoms, res_type)
    mask = torch.as_tensor(chem.CHI_EXISTS[top.res_type])
    diff = torch.remainder(chi - top_chis + np.pi, 2 * np.pi) - np.pi
    assert diff[mask].abs().max() < 1e-6

    xyz = top.scatter(atoms.numpy())
    pairs, ideal = top.bonds()
    length = np.linalg.norm(xyz[pairs[:, 0]] - xyz[pairs[:, 1]], axis=1)
    # built bonds exact; ring closures and the (NMR) backbone close to ideal
    assert np.abs(length - ideal).max() < 0.04, np.abs(length - ideal).max()
    modeller, system = _add_hydrogens_and_parametrise(forcefield, top, xyz)
    assert system.getNumParticles() == modeller.topology.getNumAtoms()
    assert modeller.topology.getNumChains() == 2
    heavy = [a for a in modeller.topology.atoms() if a.element.symbol != "H"]
    assert len(heavy) == top.n_atoms


@needs_corpus
def test_openmm_disulfides_on_our_topology(forcefield):
    """Three disulfides (crystal 2ERL): after OpenMM's own disulfide detection
    on our topology, amber14 builds CYX (no thiol hydrogen) and parametrises."""
    path = TRAIN / "cctbx__2ERL.pdb.gz"
    traj = _load(path)
    records, _ = tp.read_residues(traj.topology, path.name)
    slots, present = tp.gather_slots(traj.xyz * 10.0, records)
    top = tp.protein_topology(records, slots[0, :, chem.SLOT_CA])
    assert (present == top.slot_mask).all()
    omm_top = top.to_mdtraj().to_openmm()
    positions = top.scatter(slots[0]) * 0.1 * unit.nanometer
    omm_top.createDisulfideBonds(positions)
    modeller = app.Modeller(omm_top, positions)
    modeller.addHydrogens(forcefield)
    system = forcefield.createSystem(modeller.topology)
    cys = [r for r in modeller.topology.residues() if r.name == "CYS"]
    assert len(cys) == 6
    assert not any(a.name == "HG" for r in cys for a in r.atoms())
    assert system.getNumParticles() == modeller.topology.getNumAtoms()


# --------------------------------------------------------------------------
# Name normalisation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written, standard",
    [
        ("HSD", "HIS"), ("HSE", "HIS"), ("HSP", "HIS"), ("HID", "HIS"), ("HIE", "HIS"),
        ("HIP", "HIS"), ("CYX", "CYS"), ("CYM", "CYS"), ("ASH", "ASP"), ("GLH", "GLU"),
        ("LYN", "LYS"), ("MSE", "MET"), ("NALA", "ALA"), ("CLYS", "LYS"), ("NHIE", "HIS"),
        ("CCYX", "CYS"), ("ala", "ALA"), (" GLY ", "GLY"), ("A", "ALA"), ("W", "TRP"),
        ("H", "HIS"), ("k", "LYS"), ("SEP", "SER"), ("TPO", "THR"),
    ],
)
def test_standard_residue_name(written, standard):
    assert chem.standard_residue_name(written) == standard
    assert chem.require_residue_name(written, "here") == standard


@pytest.mark.parametrize("name", ["HOH", "XYZ", "BP5", "CA", "NXYZ", "B"])
def test_unknown_residue_names(name):
    assert chem.standard_residue_name(name) is None
    with pytest.raises(BackmapInputError) as err:
        chem.require_residue_name(name, "model.pdb: chain A residue 7")
    message = str(err.value)
    assert "model.pdb: chain A residue 7" in message and name in message
    for standard in chem.RESIDUE_NAMES:
        assert standard in message


def test_unk_residue_asks_for_the_sequence():
    """UNK, the PDB's unknown amino acid (HOOMD / LAMMPS converters name every bead so), says how to give the
    sequence, not the list of supported names."""
    with pytest.raises(BackmapInputError, match="residue 'UNK' is an unknown amino acid: the residue names must "
                                                "give the sequence") as err:
        chem.require_residue_name("UNK", "cg.pdb: chain A residue 1")
    assert "--top" in str(err.value) and "Supported" not in str(err.value)


def test_cg_program_residue_names_are_read_only_on_backbone_atoms():
    """openAWSEM names glycine IGL and proline IPR (N, CA, C, O, CB atoms): read as GLY / PRO there, and from one
    bead; not a residue of other atoms (the PDB's chemical components of those codes)."""
    assert chem.cg_program_residue_name("IGL", ["N", "CA", "C", "O"]) == "GLY"
    assert chem.cg_program_residue_name(" ipr", ["N", "CA", "C", "O", "CB"]) == "PRO"
    assert chem.cg_program_residue_name("IPR", ["B1"]) == "PRO"
    assert chem.cg_program_residue_name("IPR", ["C1", "C2", "CA"]) is None
    assert chem.cg_program_residue_name("GLY", ["CA"]) is None
    assert chem.standard_residue_name("IGL") is None  # (the name alone says nothing)


@pytest.mark.parametrize("name", ["X", "Z", "x"])
def test_placeholder_residue_asks_for_sequence(name):
    with pytest.raises(BackmapInputError, match="sequence"):
        chem.require_residue_name(name, "cg.pdb: chain A residue 1")


@pytest.mark.parametrize(
    "residue, written, standard",
    [
        ("ILE", "CD", "CD1"), ("ILE", "CD1", "CD1"), ("LEU", "CD", None), ("LYS", "CD", "CD"),
        ("ALA", "OT1", "O"), ("ALA", "OT2", "OXT"), ("GLY", "OC1", "O"), ("GLY", "OC2", "OXT"),
        ("SER", "OXT", "OXT"), ("MET", "SE", "SD"), ("MET", "SD", "SD"), ("ALA", "H", None),
        ("ALA", "HB1", None), ("SER", "OG", "OG"), ("THR", "OG", None), ("ARG", " NH1", "NH1"),
    ],
)
def test_standard_atom_name(residue, written, standard):
    assert chem.standard_atom_name(residue, written) == standard


def _synthetic_topology(residues):
    """mdtraj topology from [(residue name, [(atom name, element), ...]), ...]."""
    top = md.Topology()
    chain = top.add_chain()
    for i, (rname, atoms) in enumerate(residues):
        res = top.add_residue(rname, chain, resSeq=i + 1)
        for aname, elem in atoms:
            top.add_atom(aname, md.element.get_by_symbol(elem), res)
    return top


def test_read_residues_normalises_program_names():
    bb = [("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"), ("H", "H"), ("HA", "H")]
    his = [("CB", "C"), ("CG", "C"), ("ND1", "N"), ("CD2", "C"), ("CE1", "C"), ("NE2", "N")]
    residues = [
        ("ACE", [("C", "C"), ("O", "O"), ("CH3", "C")]),
        ("NALA", bb + [("CB", "C"), ("H1", "H")]),
        ("HSD", bb + his),
        ("HIP", bb + his),
        ("CYX", bb + [("CB", "C"), ("SG", "S")]),
        ("ASH", bb + [("CB", "C"), ("CG", "C"), ("OD1", "O"), ("OD2", "O"), ("HD2", "H")]),
        ("MSE", bb + [("CB", "C"), ("CG", "C"), ("SE", "Se"), ("CE", "C")]),
        ("ILE", bb + [("CB", "C"), ("CG1", "C"), ("CG2", "C"), ("CD", "C")]),
        ("LYN", bb + [("CB", "C"), ("CG", "C"), ("CD", "C"), ("CE", "C"), ("NZ", "N")]),
        ("CLYS", [("N", "N"), ("CA", "C"), ("C", "C"), ("OC1", "O"), ("OC2", "O"), ("CB", "C")]),
        ("HOH", [("O", "O")]),
        ("NME", [("N", "N"), ("CH3", "C")]),
    ]
    records, report = tp.read_residues(_synthetic_topology(residues), "synthetic")
    assert [r.name for r in records] == ["ALA", "HIS", "HIS", "CYS", "ASP", "MET", "ILE", "LYS", "LYS"]
    for rec in records:
        assert rec.other_atoms == []
        assert set(rec.atoms) <= set(chem.residue_atom_names(rec.name, True))
    assert set(records[5].atoms) == set(chem.RESIDUES["MET"].atoms)
    assert set(records[6].atoms) == set(chem.RESIDUES["ILE"].atoms)
    assert set(records[8].atoms) == {"N", "CA", "C", "O", "OXT", "CB"}
    assert any("ACE" in line for line in report) and any("HOH" in line for line in report)
    assert any("MSE -> MET" in line for line in report)


def test_read_residues_rejects_unknown_amino_acid():
    top = _synthetic_topology([("ALA", [("N", "N"), ("CA", "C")]), ("BP5", [("N", "N"), ("CA", "C")])])
    with pytest.raises(BackmapInputError, match="BP5"):
        tp.read_residues(top, "file.pdb")


def _check_complete(path, expect_names, expect_input, oxt_min):
    """Load with and without mdtraj's own renaming: every residue standard and complete."""
    results = []
    for kwargs in ({}, {"standard_names": False}):
        traj = _load(path, **kwargs)
        records, _ = tp.read_residues(traj.topology, path.name)
        assert len(records) == traj.topology.n_residues
        n_oxt = 0
        for rec in records:
            assert rec.name in chem.RESIDUE_INDEX
            assert rec.other_atoms == [], rec.label()
            assert set(rec.atoms) - {"OXT"} == set(chem.RESIDUES[rec.name].atoms), rec.label()
            n_oxt += "OXT" in rec.atoms
        assert n_oxt >= oxt_min
        assert expect_names <= {r.name for r in records}
        results.append((traj, records))
    # both loaders agree residue by residue and atom by atom
    (t1, r1), (t2, r2) = results
    assert [r.name for r in r1] == [r.name for r in r2]
    for a, b in zip(r1, r2):
        assert set(a.atoms) == set(b.atoms)
        ia, ib = sorted(a.atoms), sorted(b.atoms)
        np.testing.assert_allclose(
            t1.xyz[0, [a.atoms[k] for k in ia]], t2.xyz[0, [b.atoms[k] for k in ib]]
        )
    raw_input_names = {r.input_name for r in r2}
    assert expect_input <= raw_input_names
    return results[1]


@needs_corpus
def test_charmm_names_from_corpus():
    path = TRAIN / "mdatests__YiiP_lipids_xtc.pdb.gz"
    traj, records = _check_complete(path, {"ILE", "HIS"}, {"ILE"}, oxt_min=2)
    # CHARMM writes ILE CD and OT1/OT2: they became CD1 and O/OXT
    raw = {traj.topology.atom(i).name for r in records for k, i in r.atoms.items() if k in ("CD1", "O", "OXT")}
    assert {"CD", "OT1", "OT2"} <= raw


@needs_corpus
def test_amber_names_from_corpus():
    path = TRAIN / "pymol__helix_amber.pdb.gz"
    _, records = _check_complete(path, {"HIS", "CYS"}, {"HIE", "HID", "HIP", "CYX"}, oxt_min=0)
    assert {r.input_name for r in records if r.name == "HIS"} == {"HIE", "HID", "HIP"}


@needs_corpus
def test_selenomethionine_from_corpus():
    path = TRAIN / "biopython__1A8O.pdb.gz"
    traj, records = _check_complete(path, {"MET"}, {"MSE"}, oxt_min=1)
    mse = [r for r in records if r.input_name == "MSE"]
    assert mse and all(r.name == "MET" for r in mse)
    for rec in mse:
        atom = traj.topology.atom(rec.atoms["SD"])
        assert atom.name == "SE" and atom.element.symbol == "Se"


# --------------------------------------------------------------------------
# Ideal geometry against the corpus
# --------------------------------------------------------------------------


def _corpus_sample(n_files=45):
    """One single-frame crystal structure per cluster, 40-300 residues, train only."""
    manifest = CORPUS / "manifest.csv"
    if not manifest.exists():
        pytest.skip("corpus manifest not found")
    with open(manifest, newline="") as handle:
        rows = [
            r for r in csv.DictReader(handle)
            if r["split"] == "train" and r["kind"] == "crystal" and r["n_frames"] == "1"
            and 40 <= int(r["n_residues"]) <= 300
        ]
    seen, files = set(), []
    for row in sorted(rows, key=lambda r: r["entry_id"]):
        path = TRAIN / (row["entry_id"] + ".pdb.gz")
        if row["cluster30"] in seen or not path.exists():
            continue
        seen.add(row["cluster30"])
        files.append(path)
    return files[:n_files]


@needs_corpus
def test_ideal_geometry_matches_corpus():
    values, types, usable, coords, found = [], [], [], [], []
    for path in _corpus_sample():
        traj = _load(path)
        try:
            records, _ = tp.read_residues(traj.topology, path.name)
        except BackmapInputError:
            continue
        slots, present = tp.gather_slots(traj.xyz[:1] * 10.0, records)
        top = tp.protein_topology(records, slots[0, :, chem.SLOT_CA])
        refs, valid = geo.context_indices(top.segment)
        ext = geo.extend_with_context(torch.as_tensor(slots[0], dtype=torch.float64), refs)
        internal = geo.cartesian_to_internal(ext, torch.as_tensor(top.res_type)).numpy()
        # parents present: context slots are the CA of the reference residues
        present_ext = np.concatenate([present, present[refs, chem.SLOT_CA]], axis=1)
        parents = chem.ZMATRIX_PARENTS[top.res_type]  # (R, S, 3)
        parent_ok = np.take_along_axis(
            np.repeat(present_ext[:, None, :], chem.N_SLOTS, 1), parents, 2
        ).all(-1)
        values.append(internal)
        types.append(top.res_type)
        coords.append(slots[0])
        found.append(present & valid[:, None])
        usable.append(present & parent_ok & valid[:, None] & chem.SLOT_EXISTS[top.res_type])
    assert len(values) >= 30
    internal, res_type, usable = np.concatenate(values), np.concatenate(types), np.concatenate(usable)

    def wrap(x):
        return np.remainder(x + np.pi, 2 * np.pi) - np.pi

    failures, checked = [], 0
    groups = [(t, s) for t in range(len(chem.RESIDUE_NAMES)) for s in range(chem.SLOT_O, chem.SLOT_OXT)]
    for t, s in groups + [(None, chem.SLOT_OXT)]:
        if t is None:  # OXT pooled over residue types (few per file)
            rows = usable[:, s]
            ideal = chem.ZMATRIX_IDEAL[0, s]
            label = "OXT"
        else:
            if not chem.SLOT_EXISTS[t, s]:
                continue
            rows = (res_type == t) & usable[:, s]
            ideal = chem.ZMATRIX_IDEAL[t, s]
            label = f"{chem.RESIDUE_NAMES[t]} {chem.RESIDUES[chem.RESIDUE_NAMES[t]].atoms[s]}"
        if rows.sum() < 10:
            continue
        checked += 1
        x = internal[rows, s]
        bond = np.median(x[:, 0])
        angle = np.degrees(np.median(x[:, 1]))
        if abs(bond - ideal[0]) > 0.03:
            failures.append(f"{label} bond {bond:.3f} vs {ideal[0]:.3f}")
        if not np.isnan(ideal[1]) and abs(angle - np.degrees(ideal[1])) > 3.0:
            failures.append(f"{label} angle {angle:.1f} vs {np.degrees(ideal[1]):.1f}")
        if not np.isnan(ideal[2]):
            dev = np.degrees(np.median(wrap(x[:, 2] - ideal[2])))
            if abs(dev) > 10.0:
                failures.append(f"{label} torsion off by {dev:.1f}")
    # every bond of the table, ring closures included, by its median length
    coords, found = np.concatenate(coords), np.concatenate(found)
    for t, name in enumerate(chem.RESIDUE_NAMES):
        spec = chem.RESIDUES[name]
        for (a, b), ideal in zip(spec.bonds, spec.bond_lengths):
            i, j = spec.atoms.index(a), spec.atoms.index(b)
            rows = (res_type == t) & found[:, i] & found[:, j]
            assert rows.sum() >= 10, (name, a, b)
            length = np.median(np.linalg.norm(coords[rows, i] - coords[rows, j], axis=-1))
            if abs(length - ideal) > 0.03:
                failures.append(f"{name} {a}-{b} length {length:.3f} vs {ideal:.3f}")
    # every (type, slot) from O on, and OXT, had enough samples
    assert checked == sum(spec.n_atoms - chem.SLOT_O for spec in chem.RESIDUES.values()) + 1
    assert not failures, failures


# --------------------------------------------------------------------------
# Rotamer library
# --------------------------------------------------------------------------


def test_rotamer_library_shapes_and_frequencies():
    lib = load_rotamers()
    assert lib is load_rotamers()  # cached
    n_types = len(chem.RESIDUE_NAMES)
    k = lib.chis.shape[1]
    assert lib.chis.shape == (n_types, k, 4) and lib.sd.shape == (n_types, k, 4)
    assert lib.freq.shape == (n_types, k) and lib.count.shape == (n_types,)
    assert 1 <= k <= 8 and lib.count.max() == k
    for t, name in enumerate(chem.RESIDUE_NAMES):
        n = lib.count[t]
        n_chi = int(chem.CHI_EXISTS[t].sum())
        if n_chi == 0:
            assert n == 0
            continue
        assert n >= 2, name
        np.testing.assert_allclose(lib.freq[t, :n].sum(), 1.0, atol=1e-9)
        assert (lib.freq[t, n:] == 0).all()
        assert (np.diff(lib.freq[t, :n]) <= 1e-12).all()  # sorted by frequency
        assert (lib.freq[t, :n] >= 0.02).all()
        assert np.isfinite(lib.chis[t, :n, :n_chi]).all()
        assert np.isnan(lib.chis[t, :n, n_chi:]).all() and np.isnan(lib.chis[t, n:]).all()
        assert (np.abs(lib.chis[t, :n, :n_chi]) <= np.pi + 1e-9).all()
    assert not lib.chis.flags.writeable


def test_rotamer_library_content():
    lib = load_rotamers()

    def top(name):
        return np.degrees(lib.chis[chem.RESIDUE_INDEX[name], 0])

    def close(a, b, tol=20.0):
        return abs((a - b + 180.0) % 360.0 - 180.0) < tol

    leu = top("LEU")
    assert close(leu[0], -60.0) and close(leu[1], 180.0)
    assert close(top("ILE")[0], -60.0) and close(top("ILE")[1], 170.0)
    assert close(top("VAL")[0], 180.0)
    assert close(top("LYS")[0], -65.0) and all(close(x, 180.0) for x in top("LYS")[1:4])
    # aromatic rings perpendicular to CA-CB; their chi2 is symmetric by 180
    assert close(top("PHE")[1], 90.0) and close(top("TYR")[1], 90.0)
    p = lib.period[chem.RESIDUE_INDEX["PHE"]]
    assert p[1] == pytest.approx(np.pi) and p[0] == pytest.approx(2 * np.pi)
    # proline: both puckers, chi1 of opposite signs
    pro = chem.RESIDUE_INDEX["PRO"]
    assert lib.count[pro] == 2
    assert np.sign(lib.chis[pro, 0, 0]) != np.sign(lib.chis[pro, 1, 0])
    assert lib.pro_cd_torsion["endo"] < 0 < lib.pro_cd_torsion["exo"]
    # derived from the train split only
    assert "train" in lib.source and "visible_test" not in lib.source and "test" not in lib.source


def test_terminal_placeholders_advise_no_option_that_does_not_exist():
    """X and Z (CALVADOS 2 terminal placeholders): the message advised --sequence, which no command has."""
    from backmap_plugin.core.errors import BackmapInputError

    with pytest.raises(BackmapInputError, match=r"terminal placeholder .*rename the residues") as error:
        chem.require_residue_name("X", "cg.pdb: chain A residue X 1")
    assert "--sequence" not in str(error.value)
