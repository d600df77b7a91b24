"""The Python API :func:`backmap_plugin.api.backmap`, end to end on real traces.

Every test reads the written file back (with mdtraj, independently of the
package's reader) and checks it against the residue-level topology the
package derives from the input: every frame, every residue, every heavy atom,
OXT at every chain end, chain ids and residue numbers kept.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from backmap_plugin.api import BackmapResult, backmap
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import metrics
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.topology import ProteinTopology, protein_topology, read_residues

#: Readback tolerance (Angstrom) per output format: PDB/mmCIF store 3
#: decimals, XTC 1e-3 nm.
TOLERANCE = {".pdb": 1.5e-3, ".cif": 1.5e-3, ".dcd": 1e-4, ".h5": 1e-4, ".xtc": 1.5e-2}


# --------------------------------------------------------------------------- helpers


def ca_only(traj: md.Trajectory) -> md.Trajectory:
    """The C-alpha atoms of an all-atom trajectory (a CA-only CG trace)."""
    return traj.atom_slice(traj.topology.select("name CA"))


def expected_protein(ca_traj: md.Trajectory, break_distance: float = 4.5) -> ProteinTopology:
    """Residue-level topology the output must have, from a CA-only trace (frame 0)."""
    records, _ = read_residues(ca_traj.topology, "expected")
    return protein_topology(records, ca_traj.xyz[0] * 10.0, break_distance)


def read_output(path, protein: ProteinTopology) -> md.Trajectory:
    """Load a written file with mdtraj (coordinate-only formats get the expected topology)."""
    path = str(path)
    if path.endswith((".dcd", ".xtc")):
        return md.load(path, top=protein.to_mdtraj())
    return md.load(path)


def assert_complete(out: md.Trajectory, protein: ProteinTopology, n_frames: int, chain_ids=None) -> None:
    """Every frame, residue and heavy atom of ``protein`` is in ``out``, in order.

    Checks residue names and numbers, the atom names of every residue
    (against :mod:`backmap_plugin.core.chemistry`, OXT only at segment ends), the
    atom count of :class:`ProteinTopology`, one output chain per segment with
    the input chain id, and finite coordinates.
    """
    assert out.n_frames == n_frames
    assert out.n_residues == protein.n_residues
    assert out.n_atoms == protein.n_atoms
    residues = list(out.topology.residues)
    assert [r.resSeq for r in residues] == protein.res_seq.tolist()
    assert [r.name for r in residues] == list(protein.names)
    for i, residue in enumerate(residues):
        names = [a.name for a in residue.atoms]
        want = list(chem.residue_atom_names(protein.names[i], bool(protein.c_terminal[i])))
        assert names == want, f"{protein.labels[i]}: atoms {names} != {want}"
        assert int(protein.slot_mask[i].sum()) == len(names)
        assert ("OXT" in names) == bool(protein.c_terminal[i])
    n_segments = int(protein.segment.max()) + 1
    chains = list(out.topology.chains)
    assert len(chains) == n_segments
    for chain in chains:  # each segment ends in OXT, and only there
        oxt = [r.index for r in chain.residues if any(a.name == "OXT" for a in r.atoms)]
        assert oxt == [list(chain.residues)[-1].index]
    if chain_ids is not None:
        assert [c.chain_id for c in chains] == list(chain_ids)
    assert np.isfinite(out.xyz).all()


def chemistry_report(xyz_angstrom: np.ndarray, protein: ProteinTopology) -> tuple[int, float]:
    """(number of D residues, fraction of bonds > 0.1 A off ideal) of built coordinates."""
    pairs, ideal = protein.bonds()
    index = protein.atom_index
    n_d = metrics.count_d_residues(
        xyz_angstrom, index[:, chem.SLOT_N], index[:, chem.SLOT_CA], index[:, chem.SLOT_C], index[:, chem.SLOT_CB]
    )
    return n_d, metrics.fraction_bonds_off(xyz_angstrom, pairs, ideal, tol=0.1)


def output_ca(out: md.Trajectory) -> np.ndarray:
    """C-alpha coordinates (Angstrom) of a written file."""
    return out.xyz[:, out.topology.select("name CA")] * 10.0


def residue_coms(traj: md.Trajectory) -> np.ndarray:
    """(F, R, 3) heavy-atom centre of mass of every residue, OXT excluded, Angstrom."""
    out = []
    for residue in traj.topology.residues:
        atoms = [a for a in residue.atoms if a.name != "OXT" and a.element.symbol != "H"]
        mass = np.array([a.element.mass for a in atoms])
        xyz = traj.xyz[:, [a.index for a in atoms]] * 10.0
        out.append((xyz * mass[None, :, None]).sum(1) / mass.sum())
    return np.stack(out, axis=1)


def first_models(path: Path, n: int, dest: Path) -> Path:
    """Copy the first ``n`` models of a (gzipped) multi-model PDB to ``dest``."""
    lines, seen = [], 0
    with gzip.open(path, "rt") as handle:
        for line in handle:
            lines.append(line)
            if line.startswith("ENDMDL"):
                seen += 1
                if seen == n:
                    break
    dest.write_text("".join(lines) + "END\n")
    return dest


def write_ca_pair(traj: md.Trajectory, directory: Path, stem: str) -> tuple[Path, Path]:
    """CA-only DCD + PDB (first frame) of an all-atom trajectory."""
    ca = ca_only(traj)
    top, dcd = directory / f"{stem}_ca.pdb", directory / f"{stem}_ca.dcd"
    ca[0].save_pdb(str(top))
    ca.save_dcd(str(dcd))
    return dcd, top


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def trp(fixture_pdb, tmp_path_factory):
    """CA-only versions of the 1L2Y ensemble: PDB (frame 0), DCD (38 frames), GRO+XTC."""
    d = tmp_path_factory.mktemp("trp")
    aa = md.load(str(fixture_pdb))
    ca = ca_only(aa)
    files = {"aa": aa, "ca": ca, "dir": d}
    files["dcd"], files["pdb"] = write_ca_pair(aa, d, "trp")
    files["gro"] = d / "trp_ca.gro"
    files["xtc"] = d / "trp_ca.xtc"
    ca[0].save_gro(str(files["gro"]))
    ca[:10].save_xtc(str(files["xtc"]))
    files["dcd5"] = d / "trp5_ca.dcd"
    ca[:5].save_dcd(str(files["dcd5"]))
    files["protein"] = expected_protein(ca)
    return files


@pytest.fixture(scope="module")
def trp_dcd_out(trp):
    """The 38-frame CA-only DCD backmapped once to DCD, with its result."""
    out = trp["dir"] / "trp_aa.dcd"
    result = backmap(str(trp["dcd"]), str(out), top=str(trp["pdb"]), progress=False)
    return out, result


# --------------------------------------------------------------------------- tests


def test_ca_pdb_every_heavy_atom_and_result(trp, tmp_path):
    out = tmp_path / "aa.pdb"
    result = backmap(str(trp["pdb"]), str(out), progress=False)
    assert isinstance(result, BackmapResult)
    protein = trp["protein"]
    assert (result.output, result.n_frames, result.n_samples) == (str(out), 1, 1)
    assert (result.n_residues, result.n_chains, result.n_segments) == (20, 1, 1)
    assert result.n_atoms == protein.n_atoms == 154  # 1L2Y: 153 heavy atoms + OXT
    back = read_output(out, protein)
    assert_complete(back, protein, 1, chain_ids=["A"])
    # the C-alpha atoms sit on the beads
    np.testing.assert_allclose(output_ca(back)[0], trp["ca"].xyz[0] * 10.0, atol=2e-3)


def test_ca_dcd_with_pdb_top_every_frame(trp, trp_dcd_out):
    out, result = trp_dcd_out
    protein = trp["protein"]
    assert result.n_frames == 38
    back = read_output(out, protein)
    assert_complete(back, protein, 38)
    np.testing.assert_allclose(output_ca(back), trp["ca"].xyz * 10.0, atol=1e-3)


def test_summary_line(trp_dcd_out):
    out, result = trp_dcd_out
    line = result.summary()
    assert "\n" not in line
    pattern = (
        r"backmapped 38 frame\(s\) x 1 sample\(s\), 20 residues in 1 chain\(s\) / 1 segment\(s\), "
        r"154 heavy atoms -> (?P<out>\S+) in [0-9.]+ s \([0-9.]+ ms per structure\)"
    )
    match = re.fullmatch(pattern, line)
    assert match, line
    assert match["out"] == str(out)


def test_ideal_is_chemically_valid_on_fixture(trp, trp_dcd_out):
    out, _ = trp_dcd_out
    protein = trp["protein"]
    back = read_output(out, protein)
    n_d, off = chemistry_report(back.xyz * 10.0, protein)
    print(f"1L2Y, 38 frames: {n_d} D residues, {100 * off:.2f} % bonds off > 0.1 A")
    assert n_d == 0
    assert off <= 0.01


def test_gromacs_xtc_with_gro(trp, tmp_path):
    """GROMACS input: nm on disk, no chain ids in the .gro."""
    out = tmp_path / "aa.pdb"
    result = backmap(str(trp["xtc"]), str(out), top=str(trp["gro"]), progress=False)
    assert result.n_frames == 10
    gro_top = md.load(str(trp["gro"])).topology
    assert not any(c.chain_id for c in gro_top.chains)  # the point of the test
    protein = trp["protein"]
    back = md.load(str(out))
    assert_complete(back, expected_protein(md.load(str(trp["gro"]))), 10)
    assert [r.resSeq for r in back.topology.residues] == protein.res_seq.tolist()
    # read as nm and converted: the CAs match the DCD (Angstrom) trace to XTC precision
    np.testing.assert_allclose(output_ca(back), trp["ca"].xyz[:10] * 10.0, atol=1.5e-2)


@pytest.fixture(scope="module")
def format_reference(trp):
    """The 5-frame trace backmapped to DCD: the coordinates every format must hold."""
    out = trp["dir"] / "ref5.dcd"
    backmap(str(trp["dcd5"]), str(out), top=str(trp["pdb"]), progress=False)
    return md.load(str(out), top=trp["protein"].to_mdtraj()).xyz * 10.0


@pytest.mark.parametrize("ext", [".pdb", ".cif", ".dcd", ".xtc", ".h5"])
def test_output_format_by_extension(trp, format_reference, tmp_path, ext):
    out = tmp_path / f"aa{ext}"
    backmap(str(trp["dcd5"]), str(out), top=str(trp["pdb"]), progress=False)
    assert out.exists() and not list(tmp_path.glob(".*partial*"))
    protein = trp["protein"]
    back = read_output(out, protein)
    assert_complete(back, protein, 5, chain_ids=["A"] if ext in (".pdb", ".cif", ".h5") else None)
    np.testing.assert_allclose(back.xyz * 10.0, format_reference, atol=TOLERANCE[ext])
    if ext == ".pdb":
        head = out.read_text()
        assert head.startswith("MODEL") and head.count("ENDMDL") == 5 and "OXT" in head
    if ext == ".cif":
        assert out.read_text().startswith("data_")


def test_com_mapping_beads_match(fixture_pdb, tmp_path):
    """COM beads made from the all-atom fixture: the built residues' COMs sit on them."""
    aa = md.load(str(fixture_pdb))[:5]
    beads = residue_coms(aa)  # Angstrom
    top = md.Topology()
    chain = top.add_chain("A")
    for residue in aa.topology.residues:
        bead = top.add_residue(residue.name, chain, resSeq=residue.resSeq)
        top.add_atom("BB", md.element.carbon, bead)  # any bead name
    cg = tmp_path / "com.pdb"
    md.Trajectory(beads / 10.0, top).save_pdb(str(cg))
    out = tmp_path / "com_aa.pdb"
    result = backmap(str(cg), str(out), mapping="com", progress=False)
    assert (result.n_frames, result.n_segments) == (5, 1)
    back = md.load(str(out))
    protein = expected_protein(ca_only(aa))
    assert_complete(back, protein, 5, chain_ids=["A"])
    deviation = np.linalg.norm(residue_coms(back) - beads, axis=-1)
    print(f"COM mapping: mean deviation {deviation.mean():.3f} A, max {deviation.max():.3f} A")
    assert deviation.mean() < 0.5
    n_d, off = chemistry_report(back.xyz * 10.0, protein)
    assert n_d == 0 and off <= 0.01


def _com_bead_pdb(aa: md.Trajectory, residues: list, numbers: list, path: Path) -> Path:
    """Centre-of-mass bead PDB of ``residues`` of ``aa`` (beads named CA, as CALVADOS writes them), numbered
    ``numbers``."""
    top = md.Topology()
    chain = top.add_chain("A")
    for residue, number in zip(residues, numbers):
        top.add_atom("CA", md.element.carbon, top.add_residue(residue.name, chain, resSeq=number))
    beads = residue_coms(aa)[:, [r.index for r in residues]]
    md.Trajectory(beads / 10.0, top).save_pdb(str(path))
    return path


def test_com_gap_of_missing_residues_breaks_the_chain(fixture_pdb, tmp_path):
    """Trp-cage without residues 10-11: ASP9's and PRO12's centres of mass are 9.2 A apart, under the 10 A break
    distance but farther than a bonded ASP and PRO can be, so the chain breaks there (it was bridged by a peptide
    bond); the whole chain numbered with a jump stays one segment, with a note naming the pair."""
    aa = md.load(str(fixture_pdb))[:2]
    residues = [r for r in aa.topology.residues if r.index not in (9, 10)]
    cg = _com_bead_pdb(aa, residues, [r.resSeq for r in residues], tmp_path / "gap.pdb")
    result = backmap(str(cg), str(tmp_path / "gap_aa.pdb"), mapping="com", progress=False)
    assert (result.n_chains, result.n_segments) == (1, 2)
    assert any(line.startswith("chain break between chain A residue ASP 9 and chain A residue PRO 12")
               for line in result.report)
    back = md.load(str(tmp_path / "gap_aa.pdb"))
    c9, n12 = (back.topology.select(f"resSeq {n} and name {a}")[0] for n, a in ((9, "C"), (12, "N")))
    assert np.linalg.norm(back.xyz[:, c9] - back.xyz[:, n12], axis=-1).min() > 0.3  # nm: no bond across the gap
    residues = list(aa.topology.residues)
    numbers = [r.resSeq + (5 if r.index >= 10 else 0) for r in residues]  # bonded residues 10 and 16
    cg = _com_bead_pdb(aa, residues, numbers, tmp_path / "renumbered.pdb")
    result = backmap(str(cg), str(tmp_path / "renumbered_aa.pdb"), mapping="com", progress=False)
    assert result.n_segments == 1 and not any("chain break" in line for line in result.report)
    joined = [line for line in result.report if line.startswith("bonded where residue numbers skip")]
    assert len(joined) == 1 and ": chain A residue GLY 10 - GLY 16 (" in joined[0]  # said: a gap bonded silently


@pytest.mark.parametrize("method", ["model", "ideal"])
def test_com_gap_bonded_across_missing_residues_has_a_peptide_bond_of_proper_length(fixture_pdb, tmp_path, method):
    """Trp-cage without GLY10: ASP9's and GLY11's centres of mass lie as close as bonded residues' can, so the
    chain stays one segment (a note names the pair); the bond made there is a peptide bond of proper length in
    every frame, not one stretched across the missing residue (a report of a 7 A C-N bond, not reproduced)."""
    aa = md.load(str(fixture_pdb))[:4]
    residues = [r for r in aa.topology.residues if r.index != 9]
    cg = _com_bead_pdb(aa, residues, [r.resSeq for r in residues], tmp_path / "gap.pdb")
    out = tmp_path / "gap_aa.pdb"
    result = backmap(str(cg), str(out), mapping="com", method=method, progress=False)
    assert result.n_segments == 1
    assert any(line.startswith("bonded where residue numbers skip") and "ASP 9 - GLY 11" in line
               for line in result.report)
    back = md.load(str(out))
    c9, n11 = (back.topology.select(f"resSeq {n} and name {a}")[0] for n, a in ((9, "C"), (11, "N")))
    length = 10.0 * np.linalg.norm(back.xyz[:, c9] - back.xyz[:, n11], axis=-1)
    assert ((length > 1.25) & (length < 1.45)).all(), length


def test_all_atom_input_with_ca_mapping(fixture_pdb, trp, tmp_path):
    out = tmp_path / "aa.h5"
    result = backmap(str(fixture_pdb), str(out), mapping="ca", progress=False)
    assert result.n_frames == 38
    back = md.load(str(out))
    assert_complete(back, trp["protein"], 38, chain_ids=["A"])
    np.testing.assert_allclose(output_ca(back), trp["ca"].xyz * 10.0, atol=1e-3)


def _two_chain_ca(ca: md.Trajectory, shift_nm: float = 3.0) -> md.Trajectory:
    """The CA trace twice: chain A as is and chain B shifted by 30 Angstrom."""
    top = ca.topology.copy()
    top = top.join(ca.topology)
    chains = list(top.chains)
    chains[0].chain_id, chains[1].chain_id = "A", "B"
    xyz = np.concatenate([ca.xyz, ca.xyz + np.float32(shift_nm)], axis=1)
    return md.Trajectory(xyz, top)


def test_a_fluctuating_trace_gets_trans_peptides_and_relaxed_angles(trp, tmp_path):
    """C-alpha beads of a CG simulation (bonds 3.8 +- 0.17 A: trp-cage's trace shaken, one bond 3.3 A) are moved to
    3.8 A apart before building, with a note: every non-proline peptide trans (the 3.3 A one was cis) and no
    twisted peptide; the beads are missed by about 0.1 A. The exact trace is built on its beads."""
    ca = trp["ca"][:3]
    rng = np.random.default_rng(5)
    xyz = ca.xyz + rng.normal(0.0, 0.01, ca.xyz.shape).astype(np.float32)  # nm
    axis = xyz[:, 8] - xyz[:, 7]
    xyz[:, 8:] -= (axis * (1 - 0.33 / np.linalg.norm(axis, axis=-1, keepdims=True)))[:, None]
    path = tmp_path / "shaken.pdb"
    md.Trajectory(xyz, ca.topology).save_pdb(str(path))
    result = backmap(path, tmp_path / "aa.pdb", progress=False)
    assert any(line.startswith("3 of 3 structure(s) built on C-alpha beads whose bonded distances spread") and
               "3 peptide(s) whose beads were 3.1-3.4 A apart built trans" in line for line in result.report)
    out = md.load(str(tmp_path / "aa.pdb"))
    omega = np.degrees(np.abs(md.compute_omega(out)[1]))
    assert (omega > 150).all(), omega.min()
    assert 0.02 < result.bead_rmsd["C-alpha"]["median"] < 0.2, result.bead_rmsd
    exact = backmap(trp["pdb"], tmp_path / "exact.pdb", progress=False)
    assert not any("C-alpha beads whose bonded distances spread" in line for line in exact.report)


def test_two_chains_kept(trp, tmp_path):
    two = _two_chain_ca(trp["ca"][:3])
    cg = tmp_path / "two.pdb"
    two.save_pdb(str(cg))
    out = tmp_path / "two_aa.cif"
    result = backmap(str(cg), str(out), progress=False)
    assert (result.n_chains, result.n_segments, result.n_residues) == (2, 2, 40)
    protein = expected_protein(two)
    back = md.load(str(out))
    assert_complete(back, protein, 3, chain_ids=["A", "B"])
    ca = output_ca(back)
    np.testing.assert_allclose(ca[:, 20:] - ca[:, :20], 30.0, atol=2e-3)


def test_two_chains_from_corpus(corpus, tmp_path):
    path = corpus / "visible_test" / "shiftx2__A007_2D3GB.pdb.gz"
    if not path.exists():
        pytest.skip(f"{path} not in the corpus")
    aa = md.load(str(path))
    ca = ca_only(aa)
    cg = tmp_path / "2d3g_ca.pdb"
    ca.save_pdb(str(cg))
    out = tmp_path / "2d3g_aa.pdb"
    result = backmap(str(cg), str(out), progress=False)
    protein = expected_protein(ca)
    ids = [c.chain_id for c in ca.topology.chains]
    assert len(ids) == 2 and result.n_chains == 2
    back = md.load(str(out))
    segment_ids = [protein.chain_ids[i] for i in np.unique(protein.segment, return_index=True)[1]]
    assert_complete(back, protein, 1, chain_ids=segment_ids)
    assert set(segment_ids) == set(ids)


def test_chain_break_gives_two_segments(trp, tmp_path):
    """Second half of the chain moved 10 A away: two segments, each with its termini."""
    ca = trp["ca"][:2]
    xyz = ca.xyz.copy()
    xyz[:, 10:] += np.float32([1.0, 0.0, 0.0])  # 10 Angstrom
    cg = tmp_path / "break.pdb"
    md.Trajectory(xyz, ca.topology).save_pdb(str(cg))
    out = tmp_path / "break_aa.h5"
    result = backmap(str(cg), str(out), progress=False)
    assert (result.n_chains, result.n_segments) == (1, 2)
    protein = expected_protein(md.Trajectory(xyz, ca.topology))
    assert protein.segment.tolist() == [0] * 10 + [1] * 10
    back = md.load(str(out))
    assert_complete(back, protein, 2, chain_ids=["A", "A"])
    residues = list(back.topology.residues)
    assert any(a.name == "OXT" for a in residues[9].atoms) and any(a.name == "OXT" for a in residues[19].atoms)
    # no peptide bond across the break, in the written topology or in space
    c9 = next(a for a in residues[9].atoms if a.name == "C")
    n10 = next(a for a in residues[10].atoms if a.name == "N")
    bonded = {frozenset((a.index, b.index)) for a, b in back.topology.bonds}
    assert frozenset((c9.index, n10.index)) not in bonded
    assert any(a.residue.index == 8 and b.residue.index == 9 for a, b in back.topology.bonds)  # bonds are there
    assert np.linalg.norm(back.xyz[:, c9.index] - back.xyz[:, n10.index], axis=-1).min() * 10.0 > 5.0
    n_d, off = chemistry_report(back.xyz * 10.0, protein)
    assert n_d == 0 and off <= 0.01


#: visible_test files (first frames) for the chemistry check on real traces.
CORPUS_CASES = [
    ("shiftx2__A001_1KF3A", 1),  # crystal
    ("mdcath__2hbaA00_320_0_xtc", 20),
    ("mdatests__adk_oplsaa_xtc", 5),  # adenylate kinase
]


@pytest.mark.parametrize("entry,n_frames", CORPUS_CASES)
def test_ideal_is_chemically_valid_on_corpus(corpus, tmp_path, entry, n_frames):
    path = corpus / "visible_test" / f"{entry}.pdb.gz"
    if not path.exists():
        pytest.skip(f"{path} not in the corpus")
    aa = md.load(str(first_models(path, n_frames, tmp_path / "first.pdb")))
    assert aa.n_frames == n_frames
    dcd, top = write_ca_pair(aa, tmp_path, entry)
    out = tmp_path / "aa.dcd"
    result = backmap(str(dcd), str(out), top=str(top), progress=False)
    protein = expected_protein(ca_only(aa))
    assert result.n_frames == n_frames
    back = read_output(out, protein)
    assert_complete(back, protein, n_frames)
    n_d, off = chemistry_report(back.xyz * 10.0, protein)
    print(f"{entry}: {n_frames} frame(s), {protein.n_residues} residues, {n_d} D, {100 * off:.2f} % bonds off")
    assert n_d == 0
    assert off <= 0.01


def test_progress_goes_to_stderr_only(trp, tmp_path, capfd):
    backmap(str(trp["dcd5"]), str(tmp_path / "aa.xtc"), top=str(trp["pdb"]), progress=True)
    captured = capfd.readouterr()
    assert "frame" in captured.err and "backmap" in captured.err
    assert "backmap" not in captured.out and "%" not in captured.out and "frame/s" not in captured.out


def test_residue_isolated_by_breaks_is_built(tmp_path, fixture_pdb):
    """GLY 11 cut off by breaks on both sides: built, with its own termini (as PULCHRA does)."""
    aa = md.load(str(fixture_pdb))
    ca = aa.atom_slice(aa.topology.select("name CA"))[:2]
    xyz = ca.xyz.copy()
    xyz[:, 10:] += np.float32([0.3, 0.0, 0.0])  # nm: break before GLY 11 ...
    xyz[:, 11:] += np.float32([0.3, 0.0, 0.0])  # ... and after it
    cut = tmp_path / "cut.pdb"
    md.Trajectory(xyz, ca.topology).save_pdb(str(cut))
    out = tmp_path / "out.pdb"
    result = backmap(str(cut), str(out), progress=False)
    assert result.n_segments == 3
    built = md.load(str(out))
    assert built.n_chains == 3  # one chain per segment
    gly = [r for r in built.topology.residues if r.resSeq == 11][0]
    assert sorted(a.name for a in gly.atoms) == ["C", "CA", "N", "O", "OXT"]
    # its bonds have ideal lengths although no neighbour is bonded
    x = built.xyz[:, [a.index for a in gly.atoms], :] * 10.0
    names = [a.name for a in gly.atoms]
    for a, b, ideal in (("N", "CA", 1.451), ("CA", "C", 1.516), ("C", "O", 1.231), ("C", "OXT", 1.25)):
        d = np.linalg.norm(x[:, names.index(a)] - x[:, names.index(b)], axis=-1)
        assert np.all(np.abs(d - ideal) < 0.05), (a, b, d)


def test_backmapper_from_openmm_matches_file_path(tmp_path, fixture_pdb):
    """The engine takes an OpenMM Topology + positions and gives what backmap() writes."""
    import openmm.app as app

    from backmap_plugin.api import Backmapper

    aa = md.load(str(fixture_pdb))
    ca = aa.atom_slice(aa.topology.select("name CA"))
    ca_pdb = tmp_path / "ca.pdb"
    ca[0].save_pdb(str(ca_pdb))
    pdb = app.PDBFile(str(ca_pdb))
    engine = Backmapper.from_openmm(pdb.topology, pdb.positions)
    assert engine.topology.n_residues == 20 and engine.n_atoms == 154  # heavy atoms, OXT included
    out = tmp_path / "aa.pdb"
    backmap(str(ca_pdb), str(out), progress=False)
    expected = md.load(str(out)).xyz[0] * 10.0
    xyz = np.array(pdb.getPositions(asNumpy=True)._value)[None] * 10.0
    np.testing.assert_allclose(engine.build(xyz)[0], expected, atol=2e-3)
    # batches: the same frames give the same structures however they are cut
    frames = ca.xyz[:6] * 10.0
    whole = engine.build(frames)
    parts = np.concatenate([engine.build(frames[:2], 0), engine.build(frames[2:], 2)])
    np.testing.assert_allclose(whole, parts, atol=1e-4)  # same seeds; float32 sums may differ in the last bit


def test_chain_cut_by_a_triclinic_box_is_made_whole(tmp_path, trp):
    """A C-alpha trace wrapped into a rhombic dodecahedron (as GROMACS writes it) backmaps whole."""
    ca = md.load(str(trp["pdb"]))
    a = 2.0  # nm: smaller than the protein, so the chain is cut in several places
    vectors = np.array([[a, 0, 0], [0, a, 0], [a / 2, a / 2, a * np.sqrt(0.5)]], dtype=np.float32)
    frac = ca.xyz[0] @ np.linalg.inv(vectors)
    wrapped = ((frac - np.floor(frac)) @ vectors)[None]
    assert np.linalg.norm(np.diff(wrapped[0], axis=0), axis=-1).max() > 1.0  # nm: really cut
    traj = md.Trajectory(wrapped, ca.topology)
    traj.unitcell_vectors = vectors[None]
    traj.save_xtc(str(tmp_path / "tric.xtc"))
    backmap(str(tmp_path / "tric.xtc"), str(tmp_path / "aa.pdb"), top=str(trp["pdb"]), method="ideal",
            progress=False)
    out = md.load(str(tmp_path / "aa.pdb"))
    ca_out = out.xyz[0, out.topology.select("name CA")] * 10.0
    steps = np.linalg.norm(np.diff(ca_out, axis=0), axis=-1)
    assert steps.max() < 4.2 and out.n_chains == 1
    # the same structure as from the unwrapped trace, up to a lattice translation of the whole
    backmap(str(trp["pdb"]), str(tmp_path / "ref.pdb"), method="ideal", progress=False)
    ref = md.load(str(tmp_path / "ref.pdb"))
    shift = (out.xyz[0] - ref.xyz[0]).mean(axis=0)
    np.testing.assert_allclose(out.xyz[0] - shift, ref.xyz[0], atol=2e-3)


def test_a_cyclic_peptide_is_said_to_be_built_linear(tmp_path, trp):
    """PDB 5VAV, a head-to-tail cyclic peptide (first and last C-alpha atoms 3.70 A apart), and its C-alpha trace:
    a note names the chain's ends and says it is built linear with free termini (it was built so without a word);
    the trp-cage ensemble (38 models, its ends 11-16 A apart) gets no such note."""
    cyclic = Path(__file__).resolve().parent / "data" / "5vav_cyclic_peptide.pdb.gz"
    aa = md.load(str(cyclic))
    aa.atom_slice(aa.topology.select("name CA")).save_pdb(str(tmp_path / "cyclic_ca.pdb"))
    for path in (cyclic, tmp_path / "cyclic_ca.pdb"):
        result = backmap(str(path), str(tmp_path / "aa.pdb"), method="ideal", progress=False)
        notes = [note for note in result.report if "cyclic peptide" in note]
        assert notes == ["chain A residue GLY 1 and ASP 14, the first and last residues of their chain, have beads "
                         "3.70 A apart, as bonded ones (3.80 A): a cyclic peptide? It is built linear, with free "
                         "termini (an N terminus and a C-terminal OXT, which may clash): no head-to-tail bond is built"]
    result = backmap(str(trp["dcd"]), str(tmp_path / "trp.pdb"), top=str(trp["pdb"]), method="ideal",
                     progress=False)
    assert not any("cyclic" in note for note in result.report)


def test_a_mirror_image_trace_is_said_to_be_one(tmp_path):
    """The C-alpha trace of TIA1 (a real CALVADOS 3 frame backmapped: two RRM domains with their helices, and
    disordered linkers) with x flipped, as a converter or a Go model with its dihedral sign wrong writes it: a note
    says its helices turn left (it was built without a word); the trace as it is gets none."""
    aa = md.load(str(Path(__file__).resolve().parent / "data" / "tia1_calvados3_frame_aa.pdb.gz"))
    ca = aa.atom_slice(aa.topology.select("name CA"))
    ca.save_pdb(str(tmp_path / "ca.pdb"))
    md.Trajectory(ca.xyz * np.float32([-1.0, 1.0, 1.0]), ca.topology).save_pdb(str(tmp_path / "mirror.pdb"))
    result = backmap(str(tmp_path / "ca.pdb"), str(tmp_path / "aa.pdb"), method="ideal", progress=False)
    assert not any("left-handed" in note for note in result.report)
    result = backmap(str(tmp_path / "mirror.pdb"), str(tmp_path / "mirror_aa.pdb"), method="ideal", progress=False)
    notes = [note for note in result.report if "left-handed" in note]
    assert len(notes) == 1 and notes[0].startswith("the trace's helices are left-handed: ")
    assert "a mirror image" in notes[0]


def test_a_trajectory_without_a_box_takes_the_topology_box(tmp_path, trp):
    """A DCD written without a unit cell (catdcd, mdconvert from a LAMMPS dump) whose beads are wrapped into the box
    of the --top PDB (CRYST1, P 1): the chain is made whole in that box, with a note that it is taken to be
    constant (the chain was cut into pieces a box length apart, and the note advised a --break-distance above
    them). Without a box anywhere, the note advises no break distance that long and says why."""
    ca = trp["ca"]
    a = 2.0  # nm: the chain is cut in three places
    wrapped = np.mod(ca.xyz[:3] + 0.65, a)
    md.Trajectory(wrapped, ca.topology).save_dcd(str(tmp_path / "nocell.dcd"))
    md.Trajectory(ca.xyz[:1], ca.topology, unitcell_lengths=[[a, a, a]], unitcell_angles=[[90.0] * 3]).save_pdb(
        str(tmp_path / "boxed.pdb"))
    result = backmap(str(tmp_path / "nocell.dcd"), str(tmp_path / "aa.pdb"), top=str(tmp_path / "boxed.pdb"),
                     method="ideal", progress=False)
    assert result.n_segments == 1
    assert any("nocell.dcd gives no periodic box: every frame takes the box of" in note
               and "(20.0 x 20.0 x 20.0 A)" in note and "constant" in note for note in result.report)
    out = md.load(str(tmp_path / "aa.pdb"))
    ca_out = out.xyz[:, out.topology.select("name CA")] * 10.0
    assert np.linalg.norm(np.diff(ca_out, axis=1), axis=-1).max() < 4.2
    np.testing.assert_allclose(out.unitcell_lengths, a, atol=1e-4)  # the box taken is the one written
    # the same frames with a topology that has no box: pieces, and no advice to bond beads a box length apart
    ca[0].save_pdb(str(tmp_path / "nobox.pdb"))
    result = backmap(str(tmp_path / "nocell.dcd"), str(tmp_path / "pieces.pdb"), top=str(tmp_path / "nobox.pdb"),
                     method="ideal", progress=False)
    assert result.n_segments > 1
    note = next(note for note in result.report if note.startswith("chain broken where residue numbers run on"))
    assert "a --break-distance above those distances" not in note
    assert "no --break-distance should bond" in note and "wrapped into a periodic box" in note
    # cut in more places than a chain breaks: refused, naming the box as a cause
    md.Trajectory(np.mod(ca.xyz[:3], a), ca.topology).save_dcd(str(tmp_path / "cut_often.dcd"))
    with pytest.raises(BackmapInputError, match="wrapped into a periodic box that the input does not give"):
        backmap(str(tmp_path / "cut_often.dcd"), str(tmp_path / "refused.pdb"), top=str(tmp_path / "nobox.pdb"),
                method="ideal", progress=False)


def test_a_huge_box_is_left_out_of_a_pdb_output_with_a_note(tmp_path, trp):
    """A DCD of one chain in a 1e4 nm box (a run made all but non-periodic) backmapped to .pdb: the box does not fit
    the CRYST1 record, so the output has none and the run says so (the file could not be read again); .cif keeps
    it."""
    huge = md.Trajectory(trp["ca"].xyz[:2], trp["ca"].topology, unitcell_lengths=np.full((2, 3), 1e4),
                         unitcell_angles=np.full((2, 3), 90.0))
    huge.save_dcd(str(tmp_path / "huge.dcd"))
    result = backmap(str(tmp_path / "huge.dcd"), str(tmp_path / "aa.pdb"), top=str(trp["pdb"]), method="ideal",
                     progress=False)
    assert any("does not fit the PDB CRYST1 record" in note for note in result.report)
    out = md.load(str(tmp_path / "aa.pdb"))
    assert out.n_frames == 2 and out.unitcell_vectors is None
    backmap(str(tmp_path / "huge.dcd"), str(tmp_path / "aa.cif"), top=str(trp["pdb"]), method="ideal",
            progress=False)
    np.testing.assert_allclose(md.load(str(tmp_path / "aa.cif")).unitcell_lengths[0], 1e4, rtol=1e-6)


def test_chains_of_a_complex_stay_together_across_the_box(tmp_path, trp):
    """Two chains in contact (trp-cage cut in two), wrapped into a small box: each is made whole and the second
    is gathered to the first, so the output is the complex, not two chains a box vector apart."""
    ca = md.load(str(trp["pdb"]))
    top = md.Topology()
    for name, residues in (("A", range(0, 10)), ("B", range(10, 20))):
        chain = top.add_chain(chain_id=name)
        for i in residues:
            old = ca.topology.residue(i)
            top.add_atom("CA", md.element.carbon, top.add_residue(old.name, chain, resSeq=old.resSeq))
    two = md.Trajectory(ca.xyz[:1], top)
    two.save_pdb(str(tmp_path / "two.pdb"))
    a = 2.0  # nm: smaller than the complex (1.8 nm across), more than twice the chains' centroids apart (0.84)
    vectors = np.diag([a, a, a]).astype(np.float32)
    wrapped = np.mod(ca.xyz[0], a)[None]  # whole, chain B would sit a box vector away from chain A
    traj = md.Trajectory(wrapped.astype(np.float32), top)
    traj.unitcell_vectors = vectors[None]
    traj.save_xtc(str(tmp_path / "two.xtc"))
    backmap(str(tmp_path / "two.xtc"), str(tmp_path / "aa.pdb"), top=str(tmp_path / "two.pdb"), method="ideal",
            progress=False)
    out = md.load(str(tmp_path / "aa.pdb"))
    assert out.n_chains == 2
    backmap(str(tmp_path / "two.pdb"), str(tmp_path / "ref.pdb"), method="ideal", progress=False)
    ref = md.load(str(tmp_path / "ref.pdb"))
    shift = out.xyz[0] - ref.xyz[0]
    # the same structure up to one lattice translation of the whole: both chains moved alike
    np.testing.assert_allclose(shift - shift.mean(axis=0), 0.0, atol=2e-3)


@pytest.mark.parametrize("method", ["model", "ideal"])
def test_builder_gets_bounded_passes_with_the_same_result(trp, monkeypatch, method):
    """A batch larger than RESIDUES_PER_PASS reaches the builder a pass at a time; the frames come out the same."""
    from backmap_plugin import api

    xyz = trp["ca"].xyz[:5] * 10.0
    engine = api.Backmapper(trp["ca"].topology, xyz, method=method, samples=2, temperature=1.0)
    together = engine.build(xyz, first_index=3)
    passes, build = [], engine._build
    monkeypatch.setattr(engine, "_build", lambda beads, *rest: passes.append(len(beads)) or build(beads, *rest))
    monkeypatch.setattr(api, "RESIDUES_PER_PASS", 2 * engine.protein.n_residues)
    apart = engine.build(xyz, first_index=3)
    assert passes == [2, 2, 1] and apart.shape == together.shape == (10, engine.n_atoms, 3)
    np.testing.assert_allclose(apart, together, atol=1e-3)


def test_coordinates_in_memory_are_pointed_to_the_backmapper(tmp_path):
    """backmap() takes files; given a trajectory object it says what takes coordinates (it raised os.fspath's
    TypeError)."""
    traj = md.load(str(Path(__file__).parent / "data" / "1l2y.pdb.gz"))
    with pytest.raises(TypeError, match=r"backmap\(\): input must be a file path, got Trajectory; .*Backmapper"):
        backmap(traj, tmp_path / "out.pdb")


def _stretch(xyz: np.ndarray, pair: int, length: float) -> np.ndarray:
    """(F, R, 3) C-alpha frames with the bond between residues ``pair`` and ``pair`` + 1 made ``length`` long (the
    residues after it moved along)."""
    out = xyz.copy()
    bond = out[:, pair + 1] - out[:, pair]
    shift = bond * (length / np.linalg.norm(bond, axis=-1, keepdims=True) - 1.0)
    out[:, pair + 1:] += shift[:, None]
    return out


def test_a_soft_bond_stretched_in_a_few_frames_stays_bonded(tmp_path, fixture_pdb):
    """Bonded or not by the median bead distance over the leading frames: a bond of a soft CG model (COCOMO's is 3.8
    +- 0.24 A) past the 4.5 A limit in 2 of 10 frames stays bonded (a pair apart in any frame was broken, a
    terminus written in the middle of the chain, with no note); a pair apart in most frames is broken, and a note
    names it; a force field that bonds the pair keeps it bonded whatever one frame says."""
    import openmm

    from backmap_plugin.api import Backmapper

    aa = md.load(str(fixture_pdb))[:10]
    ca = aa.atom_slice(aa.topology.select("name CA"))
    xyz = ca.xyz * 10.0
    xyz[[3, 7]] = _stretch(xyz[[3, 7]], 8, 4.8)
    md.Trajectory(xyz / 10.0, ca.topology).save_pdb(str(tmp_path / "soft.pdb"))
    result = backmap(str(tmp_path / "soft.pdb"), str(tmp_path / "soft_aa.pdb"), progress=False)
    assert result.n_segments == 1 and not any("chain broken" in line for line in result.report)
    xyz[:6] = _stretch(xyz[:6], 8, 4.8)
    md.Trajectory(xyz / 10.0, ca.topology).save_pdb(str(tmp_path / "apart.pdb"))
    result = backmap(str(tmp_path / "apart.pdb"), str(tmp_path / "apart_aa.pdb"), progress=False)
    assert result.n_segments == 2
    assert ("chain broken where residue numbers run on, beads farther apart than bonded ones (median of frames "
            "0-9): chain A residue ASP 9 - GLY 10 (4.8 A); a --break-distance above those distances (now 4.5 A) "
            "bonds them") in result.report
    top = ca.topology.to_openmm()
    system = openmm.System()
    bonds = openmm.HarmonicBondForce()
    for i in range(ca.n_atoms):
        system.addParticle(110.0)
        if i:
            bonds.addBond(i - 1, i, 0.38, 4184.0)
    system.addForce(bonds)
    one = xyz[:1] / 10.0
    assert Backmapper.from_openmm(top, one[0]).protein.segment.max() == 1
    assert Backmapper.from_openmm(top, one[0], system=system).protein.segment.max() == 0
    assert Backmapper.from_openmm(top, one[0], system=system, break_distance=4.5).protein.segment.max() == 1


def test_backmapper_names_wrong_shapes_atom_counts_units_and_topologies(fixture_pdb):
    """What :class:`Backmapper` (the class backmap()'s TypeError points to for coordinates in memory) says of wrong
    input: shapes, atom counts, no frames, a Quantity and an OpenMM Topology are named as ``from_openmm`` names them
    (numpy's broadcast and index errors came out, and a Quantity's unit was dropped)."""
    from openmm import unit

    from backmap_plugin.api import Backmapper

    aa = md.load(str(fixture_pdb))[0]
    ca = aa.atom_slice(aa.topology.select("name CA"))
    xyz = ca.xyz[0] * 10.0
    for bad, message in ((xyz[:, :2], r"expected shape \(n_atoms, 3\) or \(n_frames, n_atoms, 3\), n_frames at "
                          r"least 1, got \(1, 20, 2\)"), (xyz[:17], "17 positions for a topology of 20 atoms"),
                         (xyz[None, :0][:0], r"got \(0, 0, 3\)"),
                         (xyz * unit.angstrom,
                          r"coordinates with a unit \(angstrom\); Backmapper takes plain numbers")):
        with pytest.raises(BackmapInputError, match=message):
            Backmapper(ca.topology, bad, method="ideal", source="mine")
    with pytest.raises(TypeError, match=r"use Backmapper.from_openmm\(topology, positions\)"):
        Backmapper(ca.topology.to_openmm(), xyz, method="ideal")
    engine = Backmapper(ca.topology, xyz, method="ideal", source="mine")
    assert engine.build(xyz).shape == (1, engine.n_atoms, 3)  # one frame as (n_atoms, 3), as the constructor takes
    for bad, message in ((xyz[None, :17], "mine: 17 positions for a topology of 20 atoms"),
                         (xyz[None, :0][:0], r"mine: expected shape .* got \(0, 0, 3\)")):
        with pytest.raises(BackmapInputError, match=message):
            engine.build(bad)


def _ca_system(ca, bonds):
    """An OpenMM System of the beads of ``ca`` (an mdtraj C-alpha trajectory) with ``bonds``, a bond force whose
    bonds are added here between consecutive beads (its per-bond parameters: r0 and k)."""
    import openmm

    system = openmm.System()
    for i in range(ca.n_atoms):
        system.addParticle(110.0)
        if i:
            bonds.addBond(i - 1, i, [0.38, 1000.0]) if isinstance(bonds, openmm.CustomBondForce) else \
                bonds.addBond(i - 1, i, 0.38, 1000.0)
    system.addForce(bonds)
    return system


def test_from_openmm_takes_the_box_of_a_periodic_system_and_refuses_bonded_beads_far_apart(fixture_pdb):
    """Beads wrapped into a box that only the System gives (``setDefaultPeriodicBoxVectors``, hand-built systems):
    ``from_openmm`` makes them whole in it; without a periodic system, beads that the force field bonds 20 A apart
    are refused (both were built as peptides 20 A long, without a word)."""
    import openmm

    from backmap_plugin.api import Backmapper

    aa = md.load(str(fixture_pdb))[0]
    ca = aa.atom_slice(aa.topology.select("name CA"))
    wrapped = (ca.xyz[0] - ca.xyz[0].mean(0)) % 2.5  # nm, the middle of the molecule on a corner of the box
    bonds = openmm.HarmonicBondForce()
    system = _ca_system(ca, bonds)
    top = ca.topology.to_openmm()
    with pytest.raises(BackmapInputError, match=r"the force field bonds chain A residue \w+ \d+ and chain A residue "
                                                r"\w+ \d+, but their beads lie [\d.]+ A apart in frame 0, farther than "
                                                r"bonded beads stretch \(9 A; \d+ such pair\(s\)\): beads wrapped"):
        Backmapper.from_openmm(top, wrapped, system=system, method="ideal")
    bonds.setUsesPeriodicBoundaryConditions(True)
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*v) for v in np.eye(3) * 2.5))
    engine = Backmapper.from_openmm(top, wrapped, system=system, method="ideal")
    assert engine.protein.segment.max() == 0
    built = engine.build(wrapped[None] * 10.0, box=np.eye(3)[None] * 25.0)
    assert np.linalg.norm(np.diff(built[0, engine.topology.select("name CA")], axis=0), axis=-1).max() < 4.0


@pytest.mark.parametrize("bonded_by", ["custom", "topology"])
def test_custom_bonds_and_topology_bonds_are_bonds(fixture_pdb, bonded_by):
    """Soft bonds (k = 1000 kJ/mol/nm^2) stretched to 5 A in 6 places, written as a ``CustomBondForce`` or as the
    Topology's bonds: the chain is one, as with a ``HarmonicBondForce`` (they were refused as coordinates that do not
    fit the topology, advising a --break-distance)."""
    import openmm

    from backmap_plugin.api import Backmapper

    aa = md.load(str(fixture_pdb))[0]
    ca = aa.atom_slice(aa.topology.select("name CA"))
    xyz = ca.xyz[:1] * 10.0
    for pair in (1, 4, 7, 10, 13, 16):
        xyz = _stretch(xyz, pair, 5.0)
    top = ca.topology.to_openmm()
    bonds = openmm.CustomBondForce("0.5*k*(r-r0)^2")
    bonds.addPerBondParameter("r0")
    bonds.addPerBondParameter("k")
    system = _ca_system(ca, bonds)
    with pytest.raises(BackmapInputError, match="pass --break-distance"):
        Backmapper.from_openmm(top, xyz[0] / 10.0, mapping="ca", method="ideal")  # (no bonds: many breaks)
    if bonded_by == "topology":
        atoms = list(top.atoms())
        for a, b in zip(atoms[:-1], atoms[1:]):
            top.addBond(a, b)
        system.removeForce(0)
    engine = Backmapper.from_openmm(top, xyz[0] / 10.0, system=system, mapping="ca", method="ideal")
    assert engine.protein.segment.max() == 0


def test_molecules_that_touch_in_most_leading_frames_then_part_stop_the_run(tmp_path, fixture_pdb):
    """Two molecules numbered on in one chain, their ends touching in the first 7 frames (bonded by the median)
    and 6.5 A apart from frame 7 on: the run stops at frame 7, naming the residues (they were built with a C-N
    bond of 1.9 A, without a word: the later-frame check was at twice the break distance, 9 A)."""
    aa = md.load(str(fixture_pdb))[:12]
    ca = aa.atom_slice(aa.topology.select("name CA"))
    xyz = ca.xyz * 10.0
    xyz[7:] = _stretch(xyz[7:], 9, 6.5)
    md.Trajectory(xyz / 10.0, ca.topology).save_pdb(str(tmp_path / "parting.pdb"))
    with pytest.raises(BackmapInputError, match=r"frame 7: the beads of chain A residue GLY 10 and chain A residue "
                                                r"GLY 11 are 6.5 A apart, but were close enough to be bonded"):
        backmap(str(tmp_path / "parting.pdb"), str(tmp_path / "aa.pdb"), progress=False)
