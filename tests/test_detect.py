"""Mapping detection (``mapping='auto'``): C-alpha traces, centres of mass, the CALVADOS 3 mix, bad input.

Real structures: the shipped 1L2Y fixture (mapped to C-alpha and to
centre-of-mass beads), the real CALVADOS 3 run of TIA1 in the corpus
(skipped without ../shared) and real martinize2 output (tests/data/martini3).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch
from conftest import CORPUS, load_truth

from backmap_plugin import backmap
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import metrics
from backmap_plugin.core.detect import decide_mapping
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.mappings import COMMapping, get_mapping
from backmap_plugin.core.topology import read_residues

MARTINI = Path(__file__).resolve().parent / "data" / "martini3"
TIA1 = CORPUS / "calvados3" / "TIA1"


@pytest.fixture(scope="module")
def trp_cage():
    """(protein, slots, present) of the first 1L2Y model."""
    return load_truth(frames=slice(0, 1))


def _com(protein, slots, present, ca_residues=None):
    present = present.copy()
    present[:, chem.SLOT_OXT] = False
    return COMMapping(ca_residues).bead_positions(slots, present, protein.res_type)


def _decide(beads, protein, chain=None):
    n = len(beads)
    chain = np.zeros(n, int) if chain is None else chain
    return decide_mapping(beads, protein.res_type if len(protein.res_type) == n else np.resize(protein.res_type, n),
                          chain, ["A"] * n, list(range(1, n + 1)))


def test_c_alpha_trace_and_centres_of_mass_are_told_apart(trp_cage):
    protein, slots, present = trp_cage
    ca = _decide(slots[0, :, chem.SLOT_CA], protein)
    assert ca.name == "ca" and ca.ca_residues.all()
    assert "C-alpha trace" in ca.evidence and "19 pairs" in ca.evidence
    com = _decide(_com(protein, slots, present)[0], protein)
    assert com.name == "com" and not com.ca_residues.any()
    assert "centres of mass" in com.evidence and "3.80 +- 0.05" in com.evidence


def _linker(start: np.ndarray, direction: np.ndarray, n: int, rng) -> np.ndarray:
    """A chain of n beads 3.8 +- 0.17 Angstrom apart (a CALVADOS linker), heading roughly along ``direction``."""
    out, x = [], start
    for _ in range(n):
        step = direction + rng.normal(0, 0.8, 3)
        x = x + step / np.linalg.norm(step) * rng.normal(3.8, 0.17)
        out.append(x)
    return np.array(out)


def test_calvados_like_mix_finds_the_linker(trp_cage):
    """Two trp-cage 'domains' of centre-of-mass beads joined by a 15-bead linker 3.8 A apart."""
    protein, slots, present = trp_cage
    domain = _com(protein, slots, present)[0]
    rng = np.random.default_rng(0)
    linker = _linker(domain[-1], np.array([1.0, 0, 0]), 15, rng)
    second = domain - domain[0] + linker[-1] + np.array([3.8, 0, 0])
    beads = np.concatenate([domain, linker, second])
    types = np.concatenate([protein.res_type, np.full(15, chem.RESIDUE_INDEX["GLY"]), protein.res_type])
    n = len(beads)
    d = decide_mapping(beads, types, np.zeros(n, int), ["A"] * n, list(range(1, n + 1)))
    truth = np.zeros(n, bool)
    truth[20:35] = True
    assert d.name == "com+ca"
    assert (d.ca_residues == truth).mean() >= 0.9
    assert "A:" in d.evidence and "C-alpha beads in" in d.evidence


def test_noisy_c_alpha_trace_stays_c_alpha():
    """C-alpha beads with 0.3 A of noise each (bonds 3.8 +- 0.4 A, the speed benchmarks' input) are read as
    C-alpha throughout: the C-alpha spread is re-estimated from the trace (with the fixed 0.20 A spread a
    stretch of 10 residues of the 87 was taken for centres of mass)."""
    rng = np.random.default_rng(0)
    n = 87
    types = rng.integers(0, 20, n)
    for trial in range(5):
        steps = np.array([1.0, 0, 0]) + rng.normal(0, 0.8, (n - 1, 3))
        trace = np.cumsum(np.r_[[np.zeros(3)], steps / np.linalg.norm(steps, axis=-1, keepdims=True) * 3.8], axis=0)
        beads = trace + rng.normal(0, 0.3, (n, 3))
        d = decide_mapping(beads, types, np.zeros(n, int), ["A"] * n, list(range(1, n + 1)))
        assert d.name == "ca", d.evidence


def test_too_short_to_tell_names_the_option(trp_cage):
    protein, slots, present = trp_cage
    with pytest.raises(BackmapInputError, match="--mapping ca .* --mapping com"):
        _decide(slots[0, :3, chem.SLOT_CA], protein)


@pytest.mark.skipif(not TIA1.is_dir(), reason="corpus ../shared/data/calvados3 not present")
def test_real_calvados3_run_domains_and_linkers():
    traj = md.load(str(TIA1 / "traj.dcd"), top=str(TIA1 / "top.pdb"))
    records, _ = read_residues(traj.topology)
    types = np.array([chem.RESIDUE_INDEX[r.name] for r in records])
    truth = np.ones(len(records), bool)  # 0-based domains of TIA1/README.md
    for a, b in ((5, 81), (94, 171), (189, 274)):
        truth[a : b + 1] = False
    agreement = []
    for frame in range(traj.n_frames):
        d = decide_mapping(traj.xyz[frame] * 10, types, np.zeros(len(types), int), ["A"] * len(types),
                           [r.res_seq for r in records])
        assert d.name == "com+ca"
        agreement.append((d.ca_residues == truth).mean())
    assert np.mean(agreement) >= 0.99 and min(agreement) >= 0.98  # measured 0.995, 0.985
    # averaged over frames (as backmap run reads its first DETECTION_FRAMES): one boundary residue off
    for start in range(0, traj.n_frames, 5):
        d = decide_mapping(traj.xyz[start : start + 5] * 10, types, np.zeros(len(types), int), ["A"] * len(types),
                           [r.res_seq for r in records])
        assert (d.ca_residues == truth).sum() >= len(truth) - 1, d.evidence
    # the starting beads (top.pdb) are all centres of mass
    start = md.load(str(TIA1 / "top.pdb"))
    assert decide_mapping(start.xyz[0] * 10, types, np.zeros(len(types), int), ["A"] * len(types),
                          [r.res_seq for r in records]).name == "com"


def test_detection_frames_read_past_a_short_first_chunk():
    from backmap_plugin.api import _leading_frames
    from backmap_plugin.io.frames import FrameChunk

    xyz = np.arange(15 * 2 * 3, dtype=np.float32).reshape(15, 2, 3)
    chunks = [FrameChunk(k, xyz[k : k + 4], None) for k in range(0, 15, 4)]  # 4, 4, 4, 3 frames
    leading = _leading_frames(chunks, chunks[0], 10)
    assert leading.start == 0 and leading.box is None
    np.testing.assert_array_equal(leading.xyz, xyz[:10])
    assert len(_leading_frames(chunks[:2], chunks[0], 10).xyz) == 8  # fewer frames than asked: all
    whole = FrameChunk(0, xyz, np.ones((15, 3, 3), np.float32))
    assert _leading_frames([], whole, 10).box.shape == (10, 3, 3)  # a long first chunk: its first frames


@pytest.mark.skipif(not TIA1.is_dir(), reason="corpus ../shared/data/calvados3 not present")
def test_real_calvados3_run_detected_alike_for_every_chunk(tmp_path):
    """--chunk 2 had detected the domains from 2 frames, not 10 (another domain boundary, structures 0.58 A apart)."""
    from backmap_plugin.api import backmap

    runs = [backmap(TIA1 / "traj.dcd", tmp_path / f"c{chunk}.xtc", top=TIA1 / "top.pdb", chunk=chunk, progress=False)
            for chunk in (2, 1000)]
    assert runs[0].mapping_evidence == runs[1].mapping_evidence


@pytest.mark.skipif(not TIA1.is_dir(), reason="corpus ../shared/data/calvados3 not present")
def test_mapping_com_given_for_a_calvados3_chain_says_what_the_beads_look_like(tmp_path):
    """--mapping com on a CALVADOS 3 chain builds every bead as a centre of mass, and the evidence says the beads
    look like centres of mass with C-alpha linkers (it said nothing: only C-alpha against centre-of-mass beads
    counted as another look)."""
    told = backmap(TIA1 / "traj.dcd", tmp_path / "com.pdb", top=TIA1 / "top.pdb", mapping="com", stride=10,
                   progress=False)
    assert told.mapping == "com"
    assert told.mapping_evidence.startswith("as given (com), though the beads look otherwise: residue centres of "
                                            "mass with C-alpha beads"), told.mapping_evidence
    assert "C-alpha beads in A:1-5" in told.mapping_evidence


def _write_beads(path, protein, beads):
    """A one-bead-per-residue PDB with beads named CA (as CALVADOS writes them)."""
    top = md.Topology()
    chain = top.add_chain()
    for i, name in enumerate(protein.names):
        top.add_atom("CA", md.element.carbon, top.add_residue(name, chain, resSeq=i + 1))
    md.Trajectory(np.asarray(beads, np.float32)[None] / 10.0, top).save_pdb(str(path))


def test_backmap_auto_reads_centres_of_mass_and_lands_on_them(trp_cage, tmp_path):
    """Default options on a centre-of-mass trace: decided, said, one chain, output beads on the input beads."""
    protein, slots, present = trp_cage
    beads = _com(protein, slots, present)[0]
    _write_beads(tmp_path / "com.pdb", protein, beads)
    result = backmap(tmp_path / "com.pdb", tmp_path / "out.pdb", progress=False)
    assert result.mapping == "com" and "centres of mass" in result.mapping_evidence
    assert result.n_segments == 1
    out = load_truth(tmp_path / "out.pdb")
    built = _com(out[0], out[1], out[2])[0]
    bead_rmsd = np.sqrt(((built - beads) ** 2).sum(-1).mean())
    assert bead_rmsd < 0.3
    common = present[0:1].any(0) & out[2]
    rmsd = metrics.kabsch_rmsd(out[1][0][common], slots[0][common])[0]
    assert rmsd < 1.5


def test_cli_says_what_it_decided(trp_cage, tmp_path):
    protein, slots, _ = trp_cage
    _write_beads(tmp_path / "ca.pdb", protein, slots[0, :, chem.SLOT_CA])
    run = subprocess.run([sys.executable, "-m", "backmap_plugin.cli", "run", str(tmp_path / "ca.pdb"), "-o",
                          str(tmp_path / "out.pdb"), "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "mapping: C-alpha trace: consecutive beads" in run.stderr


@pytest.mark.parametrize("top", ["md.gro", "md.tpr"])
def test_martini3_run_with_default_options(tmp_path, top):
    """Real martinize2 + gmx output (.xtc with .gro or .tpr): recognised, solvent left out, output near the beads.

    The bead offsets from their residue's BB bead (nearest image) are compared, so the test needs no unwrapping.
    """
    pytest.importorskip("MDAnalysis") if top.endswith(".tpr") else None
    from backmap_plugin.core.martini3 import BEAD_EXISTS, martini3_bead_positions
    from backmap_plugin.core.pbc import bond_images, box_matrices
    from backmap_plugin.io.martini import martini_beads, martini_residues

    torch.set_num_threads(1)
    result = backmap(MARTINI / "md.xtc", tmp_path / "out.pdb", top=MARTINI / top, stride=4, progress=False)
    assert result.mapping == "martini3" and result.n_residues == 71 and result.n_segments == 1
    assert "W 1151" in result.mapping_evidence
    gro = md.load(str(MARTINI / "md.xtc"), top=str(MARTINI / "md.gro"))[::4]
    intake = martini_residues(gro.topology, "md.gro", gro.xyz[0] * 10)
    beads = martini_beads(gro.xyz * 10, intake.bead_index)
    out = load_truth(tmp_path / "out.pdb")
    built = martini3_bead_positions(out[1], out[2] & (np.arange(chem.N_SLOTS) != chem.SLOT_OXT) | out[2], out[0].res_type)
    exists = BEAD_EXISTS[out[0].res_type]
    # the input frames are not whole across the box: compare bead offsets from the residue's BB (nearest image)
    vectors = box_matrices(gro.unitcell_vectors * 10, len(beads))
    for f in range(len(beads)):
        delta = (beads[f, :, 1:] - beads[f, :, :1]).reshape(1, -1, 3)
        delta = (delta + bond_images(delta, vectors[f : f + 1]) @ vectors[f]).reshape(beads[f, :, 1:].shape)
        miss = np.linalg.norm(built[f, :, 1:] - built[f, :, :1] - delta, axis=-1)[exists[:, 1:]]
        # measured 0.92 and 0.75 A (Martini 3 model and one fit round, the default; the fitted builder alone:
        # 0.77, 0.79): Martini 3's own bonded geometry in MD frames is not that of any all-atom structure
        # (martinize2's beads of an all-atom structure are met within 0.2 A: tests/test_martini_intake.py)
        assert np.sqrt((miss**2).mean()) < 0.95


def test_go_virtual_sites_alone_are_refused(tmp_path):
    """A Go model's virtual CA sites (on the BB beads) cut out of a real martinize2 file: not a C-alpha trace."""
    lines = (MARTINI / "cg_go.pdb").read_text().splitlines()
    go_only = [ln for ln in lines if not ln.startswith(("ATOM", "HETATM")) or ln[12:16].strip() == "CA"]
    (tmp_path / "go_only.pdb").write_text("\n".join(go_only) + "\n")
    with pytest.raises(BackmapInputError, match="virtual sites .* --mapping ca"):
        backmap(tmp_path / "go_only.pdb", tmp_path / "out.pdb", progress=False)
    assert not (tmp_path / "out.pdb").exists()
    backmap(tmp_path / "go_only.pdb", tmp_path / "out.pdb", mapping="ca", progress=False)  # when insisted on


def test_com_mapping_with_c_alpha_regions(trp_cage):
    protein, slots, present = trp_cage
    regions = np.zeros(protein.n_residues, bool)
    regions[5:9] = True
    mixed = _com(protein, slots, present, regions)[0]
    pure = _com(protein, slots, present)[0]
    assert np.allclose(mixed[5:9], slots[0, 5:9, chem.SLOT_CA])
    assert np.allclose(mixed[~regions], pure[~regions])
    no_oxt = present & (np.arange(chem.N_SLOTS) != chem.SLOT_OXT)
    torch_mixed = COMMapping(regions).bead_positions(torch.as_tensor(slots), no_oxt, protein.res_type)[0]
    assert np.allclose(torch_mixed.numpy(), mixed, atol=1e-5)
    assert get_mapping("ca").is_ca(3).all() and not COMMapping().is_ca(3).any()


def test_a_residue_stranded_between_two_gaps_of_a_c_alpha_trace(tmp_path):
    """1L2Y's C-alpha trace without residues 8 and 10: residue 9 lies 5-7 A from its neighbours, as centres of mass
    would; pairs whose numbers skip are no evidence, so the trace stays C-alpha, in three segments (residue 9 was
    read as a centre of mass and peptide-bonded across both gaps)."""
    from conftest import FIXTURE_PDB

    model = md.load(str(FIXTURE_PDB))[0]
    keep = [a.index for a in model.topology.atoms if a.name == "CA" and a.residue.resSeq not in (8, 10)]
    path = tmp_path / "gaps.pdb"
    model.atom_slice(keep).save_pdb(str(path))
    result = backmap(str(path), str(tmp_path / "aa.pdb"), progress=False)
    assert result.mapping == "ca" and result.n_segments == 3
