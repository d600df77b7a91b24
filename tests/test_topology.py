"""Tests of the residue-level topology (:mod:`backmap_plugin.core.topology`).

Structures are real: the shipped 1L2Y ensemble, rearranged into a two-chain
PDB file with a chain break (model 1 as chain H, model 2 moved 40 Angstrom
away as chain L without residue 11), and, when the corpus is present, a
four-chain crystal structure of visible_test. Files are written as PDB text
and read back with mdtraj, the way the package reads its input.
"""

from __future__ import annotations

import warnings

import mdtraj as md
import numpy as np
import pytest

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import topology as tp
from backmap_plugin.core.errors import BackmapInputError

#: Residue (0-based index in chain L) removed to make a chain break.
_GAP = 10


def _load(path) -> md.Trajectory:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return md.load(str(path))


def pdb_line(serial, name, resname, chain, resseq, xyz, element, het=False) -> str:
    """One ATOM / HETATM record (coordinates in Angstrom)."""
    padded = name if len(name) == 4 else f" {name:<3}"
    record = "HETATM" if het else "ATOM  "
    x, y, z = xyz
    return (f"{record}{serial:>5} {padded:<4} {resname:>3} {chain}{resseq:>4}    "
            f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {element:>2}")


def _residue_lines(traj, frame, chain, skip=(), shift=(0.0, 0.0, 0.0), start=1):
    """PDB records of every residue of ``traj`` (frame ``frame``) as chain ``chain``."""
    lines, serial = [], start
    for residue in traj.topology.residues:
        if residue.index in skip:
            continue
        for atom in residue.atoms:
            xyz = traj.xyz[frame, atom.index] * 10.0 + np.asarray(shift)
            lines.append(pdb_line(serial, atom.name, residue.name, chain, residue.resSeq, xyz,
                                  atom.element.symbol))
            serial += 1
    return lines, serial


@pytest.fixture(scope="module")
def l2y(fixture_pdb):
    return _load(fixture_pdb)


@pytest.fixture(scope="module")
def two_chains(l2y, tmp_path_factory):
    """(trajectory, records, protein) of the two-chain file with a break in chain L."""
    h, serial = _residue_lines(l2y, 0, "H")
    l, _ = _residue_lines(l2y, 1, "L", skip={_GAP}, shift=(40.0, 0.0, 0.0), start=serial)
    path = tmp_path_factory.mktemp("two_chains") / "two_chains.pdb"
    path.write_text("\n".join(h + ["TER"] + l + ["TER", "END", ""]))
    traj = _load(path)
    records, report = tp.read_residues(traj.topology, str(path))
    assert report == []
    protein = tp.protein_topology(records, traj.xyz[0, [r.atoms["CA"] for r in records]] * 10.0)
    return traj, records, protein


# --------------------------------------------------------------------------
# find_segments
# --------------------------------------------------------------------------


def test_find_segments_real_trace(l2y):
    ca = l2y.xyz[0, l2y.topology.select("name CA")] * 10.0
    one_chain = np.zeros(20, int)
    np.testing.assert_array_equal(tp.find_segments(one_chain, ca), np.zeros(20))
    # a chain change splits, whatever the distance
    chains = np.r_[np.zeros(10, int), np.ones(10, int)]
    np.testing.assert_array_equal(tp.find_segments(chains, ca), chains)
    # a gap splits: residues 15.. moved 10 A away
    moved = ca.copy()
    moved[15:] += [10.0, 0.0, 0.0]
    np.testing.assert_array_equal(tp.find_segments(one_chain, moved), np.r_[np.zeros(15), np.ones(5)])
    # both at once, numbered consecutively
    np.testing.assert_array_equal(tp.find_segments(chains, moved), np.r_[[0] * 10, [1] * 5, [2] * 5])
    # the distance is configurable: 20 A bridges the gap, 3 A splits everything
    np.testing.assert_array_equal(tp.find_segments(one_chain, moved, break_distance=20.0), np.zeros(20))
    d = np.linalg.norm(np.diff(ca, axis=0), axis=1)
    assert d.min() > 3.0 and d.max() < 4.5  # all trans peptides, no break in the real trace
    np.testing.assert_array_equal(tp.find_segments(one_chain, ca, break_distance=3.0), np.arange(20))


def test_find_segments_threshold_is_strict():
    ca = np.array([[0.0, 0, 0], [4.0, 0, 0], [8.0, 0, 0], [12.5, 0, 0]])
    chain = np.zeros(4, int)
    np.testing.assert_array_equal(tp.find_segments(chain, ca, 4.5), [0, 0, 0, 0])  # 4.5 is not above 4.5
    np.testing.assert_array_equal(tp.find_segments(chain, ca, 4.49), [0, 0, 0, 1])
    np.testing.assert_array_equal(tp.find_segments(chain, ca, 3.99), [0, 1, 2, 3])
    assert tp.find_segments(chain[:1], ca[:1]).tolist() == [0]


# --------------------------------------------------------------------------
# ProteinTopology
# --------------------------------------------------------------------------


def test_two_chain_segments_and_atoms(two_chains):
    traj, records, protein = two_chains
    assert protein.n_residues == 39
    assert [r.chain_id for r in records[:1] + records[-1:]] == ["H", "L"]
    np.testing.assert_array_equal(protein.segment, [0] * 20 + [1] * 10 + [2] * 9)
    np.testing.assert_array_equal(np.nonzero(protein.c_terminal)[0], [19, 29, 38])
    # every heavy atom of the input, plus the OXT that the new C terminus
    # before the break gets (chain ends H 20 and L 20 have one in the input)
    assert protein.n_atoms == traj.n_atoms + 1
    expected = sum(chem.RESIDUES[n].n_atoms for n in protein.names) + 3
    assert protein.n_atoms == expected
    res, slot = protein.atom_order()
    assert len(res) == protein.n_atoms and np.all(np.diff(res) >= 0)
    assert (slot == chem.SLOT_OXT).sum() == 3


def test_to_mdtraj_chains_numbers_and_oxt(two_chains):
    traj, records, protein = two_chains
    top = protein.to_mdtraj()
    assert top.n_atoms == protein.n_atoms and top.n_residues == 39
    # one chain per segment, input chain ids, input residue numbers
    assert [c.chain_id for c in top.chains] == ["H", "L", "L"]
    assert [c.n_residues for c in top.chains] == [20, 10, 9]
    assert [r.resSeq for r in top.residues] == [r.res_seq for r in records]
    assert [r.resSeq for r in top.residues][20:] == [n for n in range(1, 21) if n != _GAP + 1]
    assert [r.name for r in top.residues] == [r.name for r in traj.topology.residues]
    # OXT exactly once per segment, on its last residue
    oxt = [a.residue for a in top.atoms if a.name == "OXT"]
    assert [r.index for r in oxt] == [19, 29, 38]
    assert all(r is list(r.chain.residues)[-1] for r in oxt)
    # atom names per residue equal the input's (plus the new OXT)
    for ours, theirs in zip(top.residues, traj.topology.residues):
        names = {a.name for a in theirs.atoms} | ({"OXT"} if ours.index == 29 else set())
        assert {a.name for a in ours.atoms} == names
        assert [a.element.symbol for a in ours.atoms] == [chem.element_of(ours.name, a.name) for a in ours.atoms]


def test_bonds_peptide_only_inside_segments(two_chains):
    _, _, protein = two_chains
    top = protein.to_mdtraj()
    pairs, ideal = protein.bonds()
    assert len(pairs) == len(ideal) == top.n_bonds
    assert {frozenset(p) for p in pairs.tolist()} == {frozenset((a.index, b.index)) for a, b in top.bonds}
    inter = [(a, b) for a, b in top.bonds if a.residue is not b.residue]
    for a, b in inter:
        first, second = sorted((a, b), key=lambda x: x.index)
        assert (first.name, second.name) == ("C", "N")
        assert second.residue.index == first.residue.index + 1
        assert first.residue.chain is second.residue.chain
    linked = sorted(min(a.residue.index, b.residue.index) for a, b in inter)
    # every consecutive pair inside a segment, none across H|L or the break
    assert linked == [i for i in range(38) if protein.segment[i] == protein.segment[i + 1]]
    assert 19 not in linked and 29 not in linked
    assert len(linked) == 19 + 9 + 8
    # C-OXT bonds at the three C termini
    oxt = [(a, b) for a, b in top.bonds if "OXT" in (a.name, b.name)]
    assert len(oxt) == 3 and all({a.name, b.name} == {"C", "OXT"} for a, b in oxt)
    # every atom is bonded, and intra-residue bonds follow the residue table
    assert {a.index for bond in top.bonds for a in bond} == set(range(top.n_atoms))


def _real_bond_deviation(protein, records, xyz):
    """|real - ideal| of every bond whose two atoms are in the input (Angstrom), and the count left out."""
    slots, present = tp.gather_slots(xyz, records)
    atom_xyz = protein.scatter(slots[0])
    atom_present = protein.scatter(present[..., None])[:, 0]
    pairs, ideal = protein.bonds()
    have = atom_present[pairs].all(axis=1)
    length = np.linalg.norm(atom_xyz[pairs[:, 0]] - atom_xyz[pairs[:, 1]], axis=1)
    return np.abs(length - ideal)[have], int((~have).sum())


def test_bond_ideal_lengths_match_real_structure(two_chains):
    traj, records, protein = two_chains
    dev, missing = _real_bond_deviation(protein, records, traj.xyz.astype(np.float64) * 10.0)
    assert missing == 1  # C-OXT of L 10, which the input lacks
    assert len(dev) == len(protein.bonds()[0]) - 1
    assert (dev < 0.1).mean() > 0.99, np.sort(dev)[-5:]
    assert dev.max() < 0.2


def test_bond_lengths_multichain_crystal(corpus):
    path = corpus / "visible_test" / "shiftx2__A061_1SGZA.pdb.gz"
    if not path.exists():
        pytest.skip(f"{path.name} not in the corpus")
    traj = _load(path)
    records, _ = tp.read_residues(traj.topology, str(path))
    ca = traj.xyz[0, [r.atoms["CA"] for r in records]] * 10.0
    protein = tp.protein_topology(records, ca)
    top = protein.to_mdtraj()
    assert len({c.chain_id for c in top.chains}) == 4
    assert top.n_chains == int(protein.segment.max()) + 1 >= 4
    # no bond between chains or segments
    for a, b in top.bonds:
        assert a.residue.chain is b.residue.chain
    dev, _ = _real_bond_deviation(protein, records, traj.xyz.astype(np.float64) * 10.0)
    assert (dev < 0.1).mean() > 0.99


# --------------------------------------------------------------------------
# read_residues
# --------------------------------------------------------------------------


def _capped_peptide(l2y, tmp_path, extra=()):
    """Model 1 of 1L2Y between ACE and NME caps, with hydrogens, three waters and a Na+ ion."""
    xyz = l2y.xyz[0] * 10.0
    n1, c20 = xyz[0], xyz[l2y.topology.select("resSeq 20 and name C")[0]]
    lines = [
        pdb_line(1, "CH3", "ACE", "A", 0, n1 + [-2.5, 0.5, 0.0], "C"),
        pdb_line(2, "C", "ACE", "A", 0, n1 + [-1.3, 0.0, 0.0], "C"),
        pdb_line(3, "O", "ACE", "A", 0, n1 + [-1.3, -1.2, 0.0], "O"),
        pdb_line(4, "H1", "ACE", "A", 0, n1 + [-2.8, 1.5, 0.0], "H"),
    ]
    body, serial = _residue_lines(l2y, 0, "A", start=5)
    # a hydrogen on the N of LEU 2 (ignored), inside that residue's records
    last_leu = max(i for i, line in enumerate(body) if line[17:26] == "LEU A   2")
    body.insert(last_leu + 1, pdb_line(serial, "H", "LEU", "A", 2,
                                       xyz[l2y.topology.select("resSeq 2 and name N")[0]] + [0, 1.0, 0], "H"))
    serial += 1
    lines += body
    lines += [
        pdb_line(serial, "N", "NME", "A", 21, c20 + [1.3, 0.0, 0.0], "N"),
        pdb_line(serial + 1, "C", "NME", "A", 21, c20 + [2.6, 0.5, 0.0], "C"),
        "TER",
    ]
    serial += 2
    for k in range(3):
        o = np.array([15.0 + 3 * k, 0.0, 0.0])
        lines += [pdb_line(serial, "O", "HOH", "W", k + 1, o, "O", het=True),
                  pdb_line(serial + 1, "H1", "HOH", "W", k + 1, o + [0.96, 0, 0], "H", het=True),
                  pdb_line(serial + 2, "H2", "HOH", "W", k + 1, o + [-0.24, 0.93, 0], "H", het=True)]
        serial += 3
    lines.append(pdb_line(serial, "NA", "NA", "I", 1, (0.0, 20.0, 0.0), "NA", het=True))
    lines += list(extra) + ["END", ""]
    path = tmp_path / "capped.pdb"
    path.write_text("\n".join(lines))
    return _load(path), path


def test_read_residues_drops_caps_water_ions(l2y, tmp_path):
    traj, path = _capped_peptide(l2y, tmp_path)
    assert traj.topology.n_residues == 20 + 2 + 3 + 1
    records, report = tp.read_residues(traj.topology, str(path))
    assert [r.name for r in records] == [r.name for r in l2y.topology.residues]
    assert [r.res_seq for r in records] == list(range(1, 21))
    assert {r.chain_id for r in records} == {"A"}
    assert sorted(report) == sorted([
        "dropped 1 non-protein residue(s) ACE",
        "dropped 1 non-protein residue(s) NME",
        "dropped 3 non-protein residue(s) HOH",
        "dropped 1 non-protein residue(s) NA",
    ])
    # every heavy atom in its standard name, nothing else (the hydrogen is ignored)
    for rec, residue in zip(records, l2y.topology.residues):
        assert set(rec.atoms) == {a.name for a in residue.atoms}
        assert rec.other_atoms == []
        for name, index in rec.atoms.items():
            assert traj.topology.atom(index).name == name
            assert traj.topology.atom(index).residue.resSeq == rec.res_seq


def test_read_residues_unknown_residue_with_ca_raises(l2y, tmp_path):
    base = l2y.xyz[0, 0] * 10.0
    xyz_res = [pdb_line(900 + k, name, "XYZ", "B", 7, base + [30.0 + 1.5 * k, 0, 0], el, het=True)
               for k, (name, el) in enumerate([("N", "N"), ("CA", "C"), ("C", "C")])]
    traj, path = _capped_peptide(l2y, tmp_path, extra=xyz_res)
    with pytest.raises(BackmapInputError, match=r"chain B residue XYZ 7: unknown residue 'XYZ'") as info:
        tp.read_residues(traj.topology, str(path))
    assert str(path) in str(info.value) and "ALA" in str(info.value)


def test_read_residues_unknown_residue_without_ca_is_dropped(l2y, tmp_path):
    ligand = [pdb_line(900, "C1", "LIG", "B", 1, (30.0, 0, 0), "C", het=True),
              pdb_line(901, "O1", "LIG", "B", 1, (31.2, 0, 0), "O", het=True)]
    traj, path = _capped_peptide(l2y, tmp_path, extra=ligand)
    records, report = tp.read_residues(traj.topology, str(path))
    assert len(records) == 20
    assert "dropped 1 non-protein residue(s) LIG" in report


def _topology(residues):
    """md.Topology from [(chain id, resname, resSeq, [(atom, element)])]."""
    top = md.Topology()
    chains = {}
    for chain_id, name, seq, atoms in residues:
        if chain_id not in chains:
            chains[chain_id] = top.add_chain(chain_id=chain_id)
        residue = top.add_residue(name, chains[chain_id], resSeq=seq)
        for atom, element in atoms:
            top.add_atom(atom, md.element.get_by_symbol(element) if element else None, residue)
    return top


_GLY = [("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O")]


@pytest.mark.parametrize("atoms, duplicate", [
    (_GLY + [("CA", "C")], "CA"),
    (_GLY + [("OT1", "O")], "OT1"),  # OT1 is O
    (_GLY + [("OXT", "O"), ("OT2", "O")], "OT2"),  # OT2 is OXT
])
def test_read_residues_duplicate_atoms_raise(atoms, duplicate):
    top = _topology([("A", "GLY", 1, _GLY), ("A", "GLY", 2, atoms), ("A", "GLY", 3, _GLY)])
    with pytest.raises(BackmapInputError, match=rf"in.pdb: chain A residue GLY 2: duplicate atom {duplicate}"):
        tp.read_residues(top, "in.pdb")


def test_read_residues_names():
    # variants, Amber terminal names, CHARMM atom names, a CA-only residue;
    # in a file with all-atom residues the one-letter K is potassium
    top = _topology([
        ("A", "NALA", 1, [("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"), ("CB", "C")]),
        ("A", "HSD", 2, [("CA", "C")]),
        ("A", "ILE", 3, [("N", "N"), ("CA", "C"), ("CB", "C"), ("CG1", "C"), ("CG2", "C"), ("CD", "C"),
                         ("C", "C"), ("OT1", "O"), ("OT2", "O"), ("HA", "H")]),
        ("B", "K", 10, [("K", "K")]),
    ])
    records, report = tp.read_residues(top, "in.pdb")
    assert [r.name for r in records] == ["ALA", "HIS", "ILE"]
    assert [(r.chain, r.chain_id, r.res_seq) for r in records] == [(0, "A", 1), (0, "A", 2), (0, "A", 3)]
    assert set(records[2].atoms) == {"N", "CA", "CB", "CG1", "CG2", "CD1", "C", "O", "OXT"}
    assert "renamed HSD -> HIS" in report and "renamed NALA -> ALA" in report
    assert "dropped 1 non-protein residue(s) K" in report
    assert records[1].label() == "chain A residue HSD 2"


def test_read_residues_one_letter_beads():
    # one bead per residue (CALVADOS 2 style): one-letter names are amino acids
    top = _topology([("A", name, i + 1, [("BB", "C")]) for i, name in enumerate("KANDC")])
    records, report = tp.read_residues(top, "cg.pdb")
    assert [r.name for r in records] == ["LYS", "ALA", "ASN", "ASP", "CYS"]
    assert all(r.atoms == {} and len(r.other_atoms) == 1 for r in records)
    assert report == []


def test_read_residues_one_letter_beads_beside_ions_and_crowders():
    """One-letter protein beads bonded in a chain, potassium ions named K (element K) and crowders named C that no
    bond joins: the ions and crowders are dropped, noted (they were built as free lysines and cysteines); without
    any bond in the topology, the ions are dropped by their element, and a bead named C is a cysteine still."""
    top = _topology([("A", name, i + 1, [("CA", "C")]) for i, name in enumerate("KANDC")]
                    + [("B", "K", 1, [("K", "K")]), ("B", "K", 2, [("K", "K")]), ("C", "C", 1, [("C", None)])])
    records, _ = tp.read_residues(top, "cg.pdb")
    assert [r.name for r in records] == ["LYS", "ALA", "ASN", "ASP", "CYS", "CYS"]
    atoms = list(top.atoms)
    for a, b in zip(atoms[:4], atoms[1:5]):
        top.add_bond(a, b)
    records, report = tp.read_residues(top, "cg.pdb")
    assert [r.name for r in records] == ["LYS", "ALA", "ASN", "ASP", "CYS"]
    assert report == ["dropped 1 non-protein residue(s) C", "dropped 2 non-protein residue(s) K"]


def test_read_residues_one_letter_bead_beside_three_letter_protein():
    """A bead named W (Martini water) beside a C-alpha trace named in three letters is not TRP: dropped, noted."""
    top = _topology([("A", name, i + 1, [("CA", "C")]) for i, name in enumerate(["LYS", "ALA", "ASN"])]
                    + [("B", "W", 1, [("W", "O")])])
    records, report = tp.read_residues(top, "cg.pdb")
    assert [r.name for r in records] == ["LYS", "ALA", "ASN"]
    assert report == ["dropped 1 non-protein residue(s) W"]


def test_read_residues_one_letter_all_atom_raises():
    top = _topology([("A", "GLY", 1, _GLY), ("A", "A", 2, _GLY + [("CB", "C")]), ("A", "GLY", 3, _GLY)])
    with pytest.raises(BackmapInputError, match=r"in.pdb: chain A residue A 2: one-letter residue name"):
        tp.read_residues(top, "in.pdb")


# --------------------------------------------------------------------------
# equivalent_slot_pairs
# --------------------------------------------------------------------------


def test_equivalent_slot_pairs_of_trp_cage(l2y):
    records, _ = tp.read_residues(l2y.topology, "1l2y")
    names = [r.name for r in records]
    slots, present = tp.gather_slots(l2y.xyz[:1] * 10.0, records)
    pairs, group = tp.equivalent_slot_pairs(names, present)
    residue, slot = np.divmod(pairs, chem.N_SLOTS)
    assert np.all(residue[:, 0] == residue[:, 1])
    found = {(names[r], chem.RESIDUES[names[r]].atoms[a], chem.RESIDUES[names[r]].atoms[b])
             for r, (a, b) in zip(residue[:, 0], slot)}
    # trp-cage NLYIQWLKDGGPSSGRPPPS: TYR 3 (a ring: two pairs, one group), ASP 9, ARG 16
    assert found == {("TYR", "CD1", "CD2"), ("TYR", "CE1", "CE2"), ("ASP", "OD1", "OD2"), ("ARG", "NH1", "NH2")}
    assert group.tolist() == [0, 0, 1, 2]
    # a pair counts only where both atoms are there: without TYR's CE2 the ring is left out
    tyr = names.index("TYR")
    present[tyr, chem.RESIDUES["TYR"].atoms.index("CE2")] = False
    pairs, group = tp.equivalent_slot_pairs(names, present)
    assert len(pairs) == 2 and group.tolist() == [0, 1]


def test_cg_crowders_named_ca_in_chains_of_their_own_are_dropped(l2y):
    """A CG system with crowder beads (atom CA, residue CRW, a chain of their own; the package's own CG topologies
    name every bead CA): they are left out with a count (the run stopped: "unknown residue 'CRW'"); the same name
    inside the protein's chain is refused, and a one-letter name among three-letter ones says so (it said "a file
    with all-atom residues")."""
    ca = l2y.atom_slice(l2y.topology.select("name CA")).topology
    for chain_id, name in (("C", "CRW"), ("D", "CRW")):
        chain = ca.add_chain(chain_id=chain_id)
        ca.add_atom("CA", md.element.carbon, ca.add_residue(name, chain, resSeq=1))
    records, report = tp.read_residues(ca, "box.pdb")
    assert len(records) == 20 and report == ["dropped 2 non-protein residue(s) CRW"]
    ca.add_atom("CA", md.element.carbon, ca.add_residue("CRW", ca.chain(0), resSeq=21))
    with pytest.raises(BackmapInputError, match=r"box.pdb: chain A residue CRW 21: unknown residue 'CRW'"):
        tp.read_residues(ca, "box.pdb")
    mixed = l2y.atom_slice(l2y.topology.select("name CA")).topology
    mixed.residue(4).name = "Q"
    with pytest.raises(BackmapInputError, match=r"chain A residue Q 5: one-letter residue name 'Q' among three-letter "
                                                r"ones; one-letter codes are read only"):
        tp.read_residues(mixed, "mixed.pdb")
