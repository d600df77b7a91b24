"""Tests of the torch internal-coordinate geometry (:mod:`backmap_plugin.core.geometry`).

The central test is the round trip on real structures: heavy atoms are put in
residue slots (:func:`~backmap_plugin.core.topology.gather_slots`), converted to
internal coordinates (:func:`~backmap_plugin.core.geometry.cartesian_to_internal`)
and rebuilt by :func:`~backmap_plugin.core.geometry.build_residues` from nothing but
the C-alpha atoms and the context C-alpha slots; every heavy atom that the
input has must come back. It runs on the shipped fixture (1L2Y, 38 models)
always and on every frame of every file of the corpus's ``visible_test`` split
when the corpus is present. ``benchmarks/roundtrip.py`` runs the same
:func:`roundtrip` and prints the errors and timings per file.

Atoms left out of the comparison (counted in :class:`RoundTrip`):

- atoms whose placement depends on an atom the input lacks (a Z-matrix
  parent, a parent's parent ... or a context C-alpha), e.g. the side chain
  beyond a truncated CB of a crystal structure;
- atoms of residues in segments shorter than three residues (``valid`` is
  False in :func:`~backmap_plugin.core.geometry.context_indices`).
"""

from __future__ import annotations

import gzip
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import geometry as geo
from backmap_plugin.core import topology as tp

#: Largest allowed round-trip error (Angstrom) per dtype.
TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
_CORPUS_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "visible_test"


# --------------------------------------------------------------------------
# Helpers (also used by benchmarks/roundtrip.py)
# --------------------------------------------------------------------------


def _quiet_load_pdb(path: str) -> md.Trajectory:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return md.load_pdb(path)


def load_structure(path) -> tuple[md.Topology, np.ndarray]:
    """Topology and every frame of a (gzipped) PDB file.

    mdtraj parses all models of a multi-model PDB in Python (several seconds
    for a few hundred frames of a 200-residue protein), so the topology is
    read by mdtraj from the first model only and the coordinates of all
    models are read from the fixed PDB columns; the first model's
    coordinates must agree with mdtraj's. Files whose ATOM/HETATM records do
    not form whole models of the topology (e.g. alternate locations, which
    mdtraj drops) are loaded by mdtraj entirely.

    Parameters
    ----------
    path : str or os.PathLike
        ``.pdb`` or ``.pdb.gz`` file.

    Returns
    -------
    topology : mdtraj.Topology
    xyz : numpy.ndarray
        (F, n_atoms, 3) float64 coordinates in Angstrom.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as handle:
        lines = handle.read().splitlines()
    first_model = []
    for line in lines:
        if line.startswith("ENDMDL"):
            break
        first_model.append(line)
    with tempfile.TemporaryDirectory() as tmp:
        first = os.path.join(tmp, "first.pdb")
        with open(first, "w") as handle:
            handle.write("\n".join(first_model + ["END", ""]))
        traj0 = _quiet_load_pdb(first)
    records = [line for line in lines if line.startswith(("ATOM  ", "HETATM"))]
    n_atoms = traj0.n_atoms
    if n_atoms and len(records) % n_atoms == 0:
        xyz = np.array([(r[30:38], r[38:46], r[46:54]) for r in records], dtype=np.float64)
        xyz = xyz.reshape(-1, n_atoms, 3)
        if np.abs(xyz[0] - 10.0 * traj0.xyz[0]).max() < 1e-4:
            return traj0.topology, xyz
    traj = _quiet_load_pdb(path)
    return traj.topology, traj.xyz.astype(np.float64) * 10.0


def buildable_slots(present: np.ndarray, refs: np.ndarray, res_type: np.ndarray) -> np.ndarray:
    """Atom slots whose whole Z-matrix ancestry is in the input.

    Parameters
    ----------
    present : numpy.ndarray
        (R, N_SLOTS) bool, the atom is in the input.
    refs : numpy.ndarray
        (R, 4) context residues from :func:`~backmap_plugin.core.geometry.context_indices`.
    res_type : numpy.ndarray
        (R,) residue types.

    Returns
    -------
    numpy.ndarray
        (R, N_SLOTS) bool: the atom is present and so are its parents, their
        parents ... down to its C-alpha and the context C-alpha atoms.
    """
    ok = np.concatenate([present, present[refs, chem.SLOT_CA]], axis=1)
    parents = chem.ZMATRIX_PARENTS[res_type]
    rows = np.arange(len(present))[:, None]
    for s in chem.BUILD_ORDER:
        ok[:, s] &= ok[rows, parents[:, s]].all(axis=1)
    return ok[:, : chem.N_SLOTS]


@dataclass
class RoundTrip:
    """Result of :func:`roundtrip`.

    Attributes
    ----------
    records : list of ResidueRecord
    segment, valid : numpy.ndarray
        (R,) segment index and context validity per residue.
    present : numpy.ndarray
        (R, N_SLOTS) atoms in the input.
    checked : numpy.ndarray
        (R, N_SLOTS) atoms compared: present, buildable and in a valid residue.
    reference, rebuilt : torch.Tensor
        (F, R, N_SLOTS, 3) input slots and slots rebuilt from C-alpha atoms.
    seconds : float
        Time of the conversion and the rebuild (synchronised on CUDA).
    """

    records: list
    segment: np.ndarray
    valid: np.ndarray
    present: np.ndarray
    checked: np.ndarray
    reference: torch.Tensor
    rebuilt: torch.Tensor
    seconds: float

    @property
    def errors(self) -> torch.Tensor:
        """(F, n_checked) distance of every checked atom from its input position."""
        mask = torch.as_tensor(self.checked, device=self.rebuilt.device)
        return (self.rebuilt - self.reference).norm(dim=-1)[:, mask]

    @property
    def max_error(self) -> float:
        """Largest error over all frames and checked atoms (Angstrom)."""
        return float(self.errors.max())

    @property
    def n_excluded_parents(self) -> int:
        """Input atoms per frame left out because an atom they are built from is missing."""
        buildable = self.checked | (self.present & ~self.valid[:, None])
        return int((self.present & ~buildable).sum())

    @property
    def n_excluded_invalid(self) -> int:
        """Input atoms per frame left out because their segment is shorter than 3 residues."""
        return int((self.present & ~self.valid[:, None]).sum())


def roundtrip(
    topology: md.Topology,
    xyz: np.ndarray,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    break_distance: float = 4.5,
) -> RoundTrip:
    """Cartesian -> internal -> Cartesian on a real structure.

    The rebuild starts from a tensor that holds only the C-alpha slot and the
    context slots; every other slot is NaN, so any slot read before it is
    built shows up as NaN in the result.

    Parameters
    ----------
    topology : mdtraj.Topology
        Input topology (read with :func:`~backmap_plugin.core.topology.read_residues`).
    xyz : numpy.ndarray
        (F, n_atoms, 3) coordinates, Angstrom.
    dtype : torch.dtype
        Precision of the whole computation.
    device : str or torch.device
    break_distance : float
        Chain-break distance for :func:`~backmap_plugin.core.topology.find_segments`.

    Returns
    -------
    RoundTrip
    """
    records, _ = tp.read_residues(topology, "roundtrip")
    slots, present = tp.gather_slots(np.asarray(xyz, dtype=np.float64), records)
    chain = np.array([r.chain for r in records])
    segment = tp.find_segments(chain, slots[0, :, chem.SLOT_CA], break_distance)
    refs, valid = geo.context_indices(segment)
    res_type_np = np.array([chem.RESIDUE_INDEX[r.name] for r in records])
    res_type = torch.as_tensor(res_type_np, device=device)
    reference = torch.as_tensor(slots, dtype=dtype, device=device)

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    ext = geo.extend_with_context(reference, refs)
    internal = geo.cartesian_to_internal(ext, res_type)
    start = torch.full_like(ext, float("nan"))
    start[..., chem.SLOT_CA, :] = ext[..., chem.SLOT_CA, :]
    start[..., chem.N_SLOTS:, :] = ext[..., chem.N_SLOTS:, :]
    rebuilt = geo.build_residues(start, internal, res_type)[..., : chem.N_SLOTS, :]
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0

    checked = buildable_slots(present, refs, res_type_np) & valid[:, None]
    return RoundTrip(records, segment, valid, present, checked, reference, rebuilt, seconds)


def _res_type(records) -> torch.Tensor:
    return torch.tensor([chem.RESIDUE_INDEX[r.name] for r in records])


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def l2y(fixture_pdb):
    """(topology, xyz in Angstrom) of all 38 models of 1L2Y."""
    return load_structure(fixture_pdb)


@pytest.fixture(scope="module")
def l2y_slots(l2y):
    """(records, slots float64, present, res_type) of 1L2Y."""
    topology, xyz = l2y
    records, _ = tp.read_residues(topology)
    slots, present = tp.gather_slots(xyz, records)
    return records, slots, present, _res_type(records)


# --------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------


def test_load_structure_matches_mdtraj(fixture_pdb, l2y):
    topology, xyz = l2y
    traj = _quiet_load_pdb(str(fixture_pdb))
    assert xyz.shape == (38, 154, 3) == (traj.n_frames, traj.n_atoms, 3)
    assert [str(a) for a in topology.atoms] == [str(a) for a in traj.topology.atoms]
    np.testing.assert_allclose(xyz, traj.xyz * 10.0, atol=1e-4)


def _points(xyz: np.ndarray) -> md.Trajectory:
    """mdtraj trajectory of bare points, (F, n, 3) Angstrom."""
    top = md.Topology()
    residue = top.add_residue("UNK", top.add_chain())
    for _ in range(xyz.shape[1]):
        top.add_atom("C", md.element.carbon, residue)
    return md.Trajectory(xyz / 10.0, top)


# --------------------------------------------------------------------------
# Elementary functions against hand-made values and mdtraj
# --------------------------------------------------------------------------


@pytest.mark.parametrize("degrees", [0.0, 60.0, -60.0, 90.0, -90.0, 120.0, 180.0, -179.0])
def test_dihedral_hand_made(degrees):
    # b at the origin, c on +z, a on +x; d turned by `degrees` about z. Seen
    # from b towards c a positive angle turns the near bond clockwise onto the
    # far one (IUPAC), which is x towards y here.
    phi = np.deg2rad(degrees)
    pts = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.5], [2.0 * np.cos(phi), 2.0 * np.sin(phi), 1.5]],
        dtype=torch.float64,
    )
    got = float(geo.dihedral(*pts))
    diff = (got - phi + np.pi) % (2 * np.pi) - np.pi
    assert abs(diff) < 1e-12
    assert -np.pi < got <= np.pi
    traj = _points(pts.numpy()[None])
    assert abs((float(md.compute_dihedrals(traj, [[0, 1, 2, 3]])[0, 0]) - got + np.pi) % (2 * np.pi) - np.pi) < 1e-6


def test_dihedral_known_configurations():
    # butane-like: trans (anti) = 180, gauche+ = +60, gauche- = -60
    a, b, c = torch.tensor([[-1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.5, 0.0, 0.0]], dtype=torch.float64)
    s, h = np.sin(np.pi / 3), np.cos(np.pi / 3)
    anti = torch.tensor([2.5, -1.0, 0.0], dtype=torch.float64)
    # seen from b towards c (along +x) y turns clockwise onto z: a sits at +y,
    # so d at +60 degrees from it (towards +z) is gauche+
    gplus = torch.tensor([2.5, h, s], dtype=torch.float64)
    gminus = torch.tensor([2.5, h, -s], dtype=torch.float64)
    assert float(geo.dihedral(a, b, c, anti)) == pytest.approx(np.pi)
    assert float(geo.dihedral(a, b, c, gplus)) == pytest.approx(np.pi / 3)
    assert float(geo.dihedral(a, b, c, gminus)) == pytest.approx(-np.pi / 3)
    # batched over leading axes
    d = torch.stack([anti, gplus, gminus])
    got = geo.dihedral(a.expand(3, 3), b.expand(3, 3), c.expand(3, 3), d)
    np.testing.assert_allclose(np.abs(got.numpy()), [np.pi, np.pi / 3, np.pi / 3], atol=1e-12)


def test_dihedral_sign_matches_mdtraj_phi(l2y):
    topology, xyz = l2y
    traj = md.Trajectory(xyz / 10.0, topology)
    indices, phi = md.compute_phi(traj)
    assert len(indices) == 19
    pts = torch.as_tensor(xyz[:, indices], dtype=torch.float64)  # (F, 19, 4, 3)
    ours = geo.dihedral(pts[..., 0, :], pts[..., 1, :], pts[..., 2, :], pts[..., 3, :]).numpy()
    diff = (ours - phi + np.pi) % (2 * np.pi) - np.pi
    assert np.abs(diff).max() < 1e-5
    # a helical peptide: phi mostly negative (about -60); the sign convention matters
    assert (ours < 0).mean() > 0.8


def test_bond_angle_hand_made():
    f64 = dict(dtype=torch.float64)
    o = torch.zeros(3, **f64)
    x, y = torch.tensor([1.0, 0.0, 0.0], **f64), torch.tensor([0.0, 2.0, 0.0], **f64)
    assert float(geo.bond_angle(x, o, y)) == pytest.approx(np.pi / 2, abs=1e-12)
    assert float(geo.bond_angle(x, o, -x)) == pytest.approx(np.pi, abs=1e-5)
    assert float(geo.bond_angle(x, o, 3 * x)) == pytest.approx(0.0, abs=1e-5)
    tetra = geo.bond_angle(torch.tensor([1.0, 1.0, 1.0], **f64), o, torch.tensor([1.0, -1.0, -1.0], **f64))
    assert float(tetra) == pytest.approx(np.arccos(-1.0 / 3.0), abs=1e-12)
    # near-linear angles keep their precision (atan2, not acos)
    eps = 1e-3
    near = geo.bond_angle(x, o, torch.tensor([-1.0, eps, 0.0], **f64))
    assert float(near) == pytest.approx(np.pi - np.arctan(eps), abs=1e-9)
    assert float(geo.distance(x, y)) == pytest.approx(np.sqrt(5.0))


def test_place_atom_hand_made():
    f64 = dict(dtype=torch.float64)
    a = torch.zeros(3, **f64)
    b = torch.tensor([1.0, 0.0, 0.0], **f64)
    c = torch.tensor([1.0, 1.0, 0.0], **f64)

    def place(angle, torsion):
        return geo.place_atom(a, b, c, torch.tensor(1.5, **f64), torch.tensor(np.deg2rad(angle), **f64),
                              torch.tensor(np.deg2rad(torsion), **f64)).numpy()

    np.testing.assert_allclose(place(90, 0), [0.0, 1.5, 0.0], atol=1e-12)  # cis: on the side of c
    np.testing.assert_allclose(place(90, 180), [0.0, -1.5, 0.0], atol=1e-12)  # trans
    np.testing.assert_allclose(place(90, 90), [0.0, 0.0, -1.5], atol=1e-12)  # seen along a->b, clockwise onto c
    np.testing.assert_allclose(place(90, -90), [0.0, 0.0, 1.5], atol=1e-12)
    np.testing.assert_allclose(place(180, 37), [-1.5, 0.0, 0.0], atol=1e-12)  # linear
    np.testing.assert_allclose(place(120, 0), [-0.75, 1.5 * np.sin(np.deg2rad(120)), 0.0], atol=1e-12)


def test_place_atom_inverts_measurements():
    gen = torch.Generator().manual_seed(1)
    a, b, c = (torch.randn(1000, 3, generator=gen, dtype=torch.float64) * 3 for _ in range(3))
    bond = 1.0 + torch.rand(1000, generator=gen, dtype=torch.float64)
    angle = 0.2 + 2.7 * torch.rand(1000, generator=gen, dtype=torch.float64)
    torsion = (2 * torch.rand(1000, generator=gen, dtype=torch.float64) - 1) * np.pi
    x = geo.place_atom(a, b, c, bond, angle, torsion)
    np.testing.assert_allclose(geo.distance(x, a).numpy(), bond.numpy(), atol=1e-9)
    np.testing.assert_allclose(geo.bond_angle(x, a, b).numpy(), angle.numpy(), atol=1e-9)
    diff = (geo.dihedral(x, a, b, c) - torsion + np.pi) % (2 * np.pi) - np.pi
    assert float(diff.abs().max()) < 1e-9
    traj = _points(torch.stack([x, a, b, c], 1).numpy())
    ref = md.compute_dihedrals(traj, [[0, 1, 2, 3]])[:, 0]
    assert np.abs((ref - torsion.numpy() + np.pi) % (2 * np.pi) - np.pi).max() < 1e-4


def test_chi_angles_match_mdtraj(l2y, l2y_slots):
    topology, xyz = l2y
    records, slots, present, res_type = l2y_slots
    assert len(records) == topology.n_residues == 20
    traj = md.Trajectory(xyz / 10.0, topology)
    chi = geo.chi_angles(torch.as_tensor(slots), res_type).numpy()  # (F, R, 4)
    has = chem.CHI_EXISTS[res_type.numpy()]
    compute = [md.compute_chi1, md.compute_chi2, md.compute_chi3, md.compute_chi4]
    for k, fn in enumerate(compute):
        indices, ref = fn(traj)
        residues = [topology.atom(int(i[1])).residue.index for i in indices]
        if k == 0:
            # chi1: every residue with one (all but GLY and ALA) and the same atoms
            assert residues == list(np.nonzero(has[:, 0])[0])
            assert len(residues) == 17  # 20 residues, 3 GLY
        else:
            # mdtraj also counts the ring torsions of PRO (chi2, chi3), which
            # are fixed in the Z-matrix here
            ours = set(np.nonzero(has[:, k])[0])
            assert ours <= set(residues)
            assert {topology.residue(i).name for i in set(residues) - ours} <= {"PRO"}
            keep = [j for j, i in enumerate(residues) if i in ours]
            residues, ref = [residues[j] for j in keep], ref[:, keep]
        diff = (chi[:, residues, k] - ref + np.pi) % (2 * np.pi) - np.pi
        assert np.abs(diff).max() < 1e-5, (k, np.abs(diff).max())


# --------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------


def _check_roundtrip(rt: RoundTrip, dtype) -> None:
    err = rt.errors
    assert torch.isfinite(err).all()
    assert rt.max_error < TOLERANCE[dtype], f"max error {rt.max_error:.3g} A >= {TOLERANCE[dtype]:g} ({dtype})"


def _assert_termini_rebuilt(rt: RoundTrip, dtype) -> None:
    """N, C and O of the first and last residue of every segment are checked and within tolerance."""
    seg = rt.segment
    starts = np.nonzero(np.r_[True, seg[1:] != seg[:-1]])[0]
    ends = np.r_[starts[1:] - 1, len(seg) - 1]
    n = 0
    for i in np.r_[starts, ends]:
        if not rt.valid[i]:
            continue
        for s in (chem.SLOT_N, chem.SLOT_C, chem.SLOT_O):
            if rt.present[i, s] and rt.present[i, chem.SLOT_CA]:
                assert rt.checked[i, s], (i, s)
                err = float((rt.rebuilt[:, i, s] - rt.reference[:, i, s]).norm(dim=-1).max())
                assert err < TOLERANCE[dtype], (i, s, err)
                n += 1
    assert n > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roundtrip_fixture(l2y, dtype):
    topology, xyz = l2y
    rt = roundtrip(topology, xyz, dtype)
    assert rt.rebuilt.dtype == dtype and rt.rebuilt.shape == (38, 20, chem.N_SLOTS, 3)
    # complete structure: nothing excluded, every heavy atom (OXT included) compared
    assert rt.n_excluded_parents == 0 and rt.n_excluded_invalid == 0
    assert rt.checked.sum() == rt.present.sum() == 154
    _check_roundtrip(rt, dtype)
    # the termini explicitly: N, C, O of residues 1 and 20 and the OXT
    for i in (0, 19):
        for s in (chem.SLOT_N, chem.SLOT_CA, chem.SLOT_C, chem.SLOT_O, chem.SLOT_CB):
            assert rt.checked[i, s]
            np.testing.assert_allclose(rt.rebuilt[:, i, s].numpy(), rt.reference[:, i, s].numpy(),
                                       atol=TOLERANCE[dtype], rtol=0)
    assert rt.checked[19, chem.SLOT_OXT]
    _assert_termini_rebuilt(rt, dtype)
    # slots a residue does not have are rebuilt finite (from their placeholder frame)
    assert torch.isfinite(rt.rebuilt).all()


def test_roundtrip_excludes_missing_parents(l2y):
    topology, xyz = l2y
    # drop the CB of TRP 6 and the CA of LYS 8: the side chain of TRP 6 and
    # everything of LYS 8 (and N / C of its neighbours, built from it) is
    # excluded; the rest still rebuilds.
    drop = {a.index for a in topology.atoms
            if (a.residue.resSeq, a.name) in ((6, "CB"), (8, "CA"))}
    keep = [i for i in range(topology.n_atoms) if i not in drop]
    sub = topology.subset(keep)
    # one segment despite the missing CA (else LYS 8 would be cut off by breaks)
    rt = roundtrip(sub, xyz[:, keep], torch.float64, break_distance=1e6)
    trp, lys = 5, 7
    assert not rt.checked[trp, chem.SLOT_CB:chem.SLOT_OXT].any()
    assert rt.checked[trp, : chem.SLOT_CB].all()
    assert not rt.checked[lys].any()
    for i in (lys - 1, lys + 1):
        assert not rt.checked[i, [chem.SLOT_N, chem.SLOT_C, chem.SLOT_O]].any()
        assert rt.checked[i, chem.SLOT_CA]
    assert rt.n_excluded_parents > 0 and rt.n_excluded_invalid == 0
    _check_roundtrip(rt, torch.float64)


def test_roundtrip_short_segments_are_invalid(l2y):
    topology, xyz = l2y
    # a break after residue 2 (move the rest 50 A away): residues 1-2 form a
    # segment of two, which context_indices marks invalid
    moved = xyz.copy()
    later = [a.index for a in topology.atoms if a.residue.index >= 2]
    moved[:, later] += 50.0
    rt = roundtrip(topology, moved, torch.float64)
    assert list(rt.valid[:3]) == [False, False, True]
    assert rt.n_excluded_invalid == sum(rt.present[:2].sum(1))
    assert torch.isfinite(rt.rebuilt).all()
    _check_roundtrip(rt, torch.float64)
    _assert_termini_rebuilt(rt, torch.float64)



def _corpus_params():
    files = sorted(p.name for p in _CORPUS_TEST.glob("*.pdb.gz")) if _CORPUS_TEST.is_dir() else []
    return files or [None]


@pytest.mark.parametrize("name", _corpus_params())
def test_roundtrip_corpus(corpus, name):
    """Every frame of every visible_test file, float32 and float64."""
    if name is None:
        pytest.skip("no .pdb.gz files in visible_test")
    path = corpus / "visible_test" / name
    topology, xyz = load_structure(path)
    for dtype in (torch.float32, torch.float64):
        rt = roundtrip(topology, xyz, dtype)
        _check_roundtrip(rt, dtype)
        _assert_termini_rebuilt(rt, dtype)
        # exclusions stay rare (crystal structures with truncated side chains)
        assert rt.checked.sum() >= 0.95 * rt.present.sum()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roundtrip_cuda(l2y, dtype):
    topology, xyz = l2y
    rt = roundtrip(topology, xyz, dtype, device="cuda")
    assert rt.rebuilt.device.type == "cuda"
    _check_roundtrip(rt, dtype)
    _assert_termini_rebuilt(rt, dtype)
    cpu = roundtrip(topology, xyz, dtype)
    assert float((rt.rebuilt.cpu() - cpu.rebuilt).abs().max()) < TOLERANCE[dtype]


# --------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------


def _from_ca(ca: torch.Tensor, refs) -> torch.Tensor:
    """Extended slots holding only the C-alpha atoms (zeros elsewhere) and the context."""
    before = torch.zeros(ca.shape[:-1] + (chem.SLOT_CA, 3), dtype=ca.dtype)
    after = torch.zeros(ca.shape[:-1] + (chem.N_SLOTS - chem.SLOT_CA - 1, 3), dtype=ca.dtype)
    atoms = torch.cat([before, ca.unsqueeze(-2), after], dim=-2)
    return geo.extend_with_context(atoms, refs)


def _gradient_setup(l2y_slots, frames=slice(0, 3)):
    records, slots, present, res_type = l2y_slots
    x = torch.as_tensor(slots[frames])
    refs, _ = geo.context_indices(np.zeros(len(records), int))
    internal = geo.cartesian_to_internal(geo.extend_with_context(x, refs), res_type)
    return x, refs, internal, res_type, present


def test_gradients_reach_internal_and_ca(l2y_slots):
    x, refs, internal, res_type, present = _gradient_setup(l2y_slots)
    gen = torch.Generator().manual_seed(0)
    internal = (internal + 0.05 * torch.randn(internal.shape, generator=gen, dtype=internal.dtype)).requires_grad_()
    ca = (x[..., chem.SLOT_CA, :] + 0.1 * torch.randn(x.shape[:-2] + (3,), generator=gen, dtype=x.dtype)).requires_grad_()
    rebuilt = geo.build_residues(_from_ca(ca, refs), internal, res_type)[..., : chem.N_SLOTS, :]
    mask = torch.as_tensor(present, dtype=x.dtype)[..., None]
    loss = (((rebuilt - x) * mask) ** 2).sum()
    loss.backward()
    assert torch.isfinite(internal.grad).all() and torch.isfinite(ca.grad).all()
    # every existing slot's internal coordinates (bond, angle, torsion) get a gradient
    names = [r.name for r in l2y_slots[0]]
    exists = chem.SLOT_EXISTS[res_type.numpy()].copy()
    exists[:-1, chem.SLOT_OXT] = False
    g = internal.grad.abs().sum(0)  # (R, N_SLOTS, 3)
    built = exists.copy()
    built[:, chem.SLOT_CA] = False  # CA is given, not built
    assert (g[torch.as_tensor(built)] > 0).all()
    # absent slots (GLY side chain, non-terminal OXT, padding) get exactly zero
    assert (g[torch.as_tensor(~exists)] == 0).all()
    assert "GLY" in names
    assert (ca.grad.abs().sum(-1) > 0).all()


def test_gradients_finite_with_padded_slots(l2y_slots):
    """An unmasked loss over every slot, padding included: gradients stay finite.

    Covers GLY (no side chain), ALA, non-terminal OXT slots, the chain ends,
    and the path Cartesian -> internal -> Cartesian as a whole.
    """
    x, refs, _, res_type, _ = _gradient_setup(l2y_slots)
    x = x.clone().requires_grad_()
    ext = geo.extend_with_context(x, refs)
    internal = geo.cartesian_to_internal(ext, res_type)
    internal.retain_grad()
    start = torch.zeros_like(ext)
    start[..., chem.SLOT_CA, :] = ext[..., chem.SLOT_CA, :]
    start[..., chem.N_SLOTS:, :] = ext[..., chem.N_SLOTS:, :]
    rebuilt = geo.build_residues(start, internal, res_type)
    loss = (rebuilt ** 2).sum() + geo.chi_angles(rebuilt[..., : chem.N_SLOTS, :], res_type).sum()
    loss.backward()
    assert torch.isfinite(internal.grad).all()
    assert torch.isfinite(x.grad).all()
    gly = [i for i, r in enumerate(l2y_slots[0]) if r.name == "GLY"]
    assert torch.isfinite(x.grad[:, gly]).all() and x.grad[:, gly].abs().sum() > 0


def test_gradients_finite_for_invalid_segment():
    """Residues of a segment shorter than 3 (refs point to themselves) give finite gradients."""
    res_type = torch.tensor([chem.RESIDUE_INDEX["GLY"], chem.RESIDUE_INDEX["ALA"]])
    refs, valid = geo.context_indices(np.array([0, 0]))
    assert not valid.any()
    ca = torch.tensor([[0.0, 0.0, 0.0], [3.8, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    internal = geo.ideal_internal(res_type, torch.float64).nan_to_num(1.0).requires_grad_()
    rebuilt = geo.build_residues(_from_ca(ca, refs), internal, res_type)
    assert torch.isfinite(rebuilt).all()
    rebuilt.sum().backward()
    assert torch.isfinite(ca.grad).all() and torch.isfinite(internal.grad).all()


def test_gradcheck_build_residues(l2y_slots):
    """Analytic gradients of the rebuild equal finite differences (float64)."""
    records, slots, _, res_type = l2y_slots
    sel = slice(7, 13)  # LYS ASP GLY GLY PRO SER: GLY and PRO inside
    sub_types = res_type[sel]
    refs, _ = geo.context_indices(np.zeros(6, int))
    x = torch.as_tensor(slots[0, sel])
    internal = geo.cartesian_to_internal(geo.extend_with_context(x, refs), sub_types)
    internal = internal.clone().requires_grad_()
    ca = x[:, chem.SLOT_CA].clone().requires_grad_()

    def fn(internal, ca):
        return geo.build_residues(_from_ca(ca, refs), internal, sub_types)[..., : chem.N_SLOTS, :]

    assert [r.name for r in records[sel]] == ["LYS", "ASP", "GLY", "GLY", "PRO", "SER"]
    assert torch.autograd.gradcheck(fn, (internal, ca), eps=1e-6, atol=1e-5, fast_mode=True)


def test_carried_side_chains_are_the_ones_a_rebuild_gives(l2y_slots):
    """build/carry.CarriedSideChains (the Martini 3 joint fit's side chains) against NeRF on a moved backbone:
    N-CA-C opened by up to 10 degrees, the plane turned, N-CA stretched, chi angles turned; 1L2Y has a
    proline, whose CD hangs on N and is placed again."""
    from backmap_plugin.build import relax
    from backmap_plugin.build.carry import CarriedSideChains
    from backmap_plugin.build.ideal import side_chain_internal

    records, slots, _, res_type = l2y_slots
    protein = tp.protein_topology(records, slots[0, :, chem.SLOT_CA])
    rt = torch.as_tensor(res_type)
    start = torch.as_tensor(slots[:2])
    chis = torch.nan_to_num(geo.chi_angles(start, rt))
    carried = CarriedSideChains(start, protein, side_chain_internal(res_type, chis))

    moved = start.clone()
    turn = torch.linspace(-0.17, 0.17, len(res_type), dtype=moved.dtype).expand(len(moved), -1)  # radians
    ca, n, c = moved[..., chem.SLOT_CA, :], moved[..., chem.SLOT_N, :], moved[..., chem.SLOT_C, :]
    normal = geo.cross(n - ca, c - ca)
    c = geo.rotate_about_axis(c[..., None, :], ca, normal / normal.norm(dim=-1, keepdim=True), turn)
    c = geo.rotate_about_axis(c, ca, (n - ca) / (n - ca).norm(dim=-1, keepdim=True), 2 * turn)[..., 0, :]
    moved[..., chem.SLOT_C, :] = c
    moved[..., chem.SLOT_N, :] = ca + (n - ca) * (1.0 + turn[..., None] / 4)
    chi_turn = torch.as_tensor(relax.TURNABLE_CHIS[res_type]) * 0.3 * turn[..., None].flip(1)

    got = carried.carry(moved, carried.turn(chi_turn))
    want = geo.build_residues(moved, side_chain_internal(res_type, chis + chi_turn), rt,
                              slots=chem.SIDE_CHAIN_BUILD_ORDER)
    exists = torch.as_tensor(chem.SLOT_EXISTS[res_type])
    difference = (got - want[..., : chem.N_SLOTS, :]).norm(dim=-1)[:, exists]
    assert difference.max() < 1e-9
    assert "PRO" in [r.name for r in records] and chi_turn.abs().max() > 0.04

    # the weighted sums a fit differentiates through, without making the atoms: the same as summing the atoms
    from backmap_plugin.build.carry import residue_frame
    from backmap_plugin.build.martini import bead_weights

    weights = torch.as_tensor(bead_weights(protein)[:, 1:])  # Martini 3 side-chain beads
    weights[:, 0, chem.SLOT_CB] += 1.0  # and a weight on an atom in no bead
    n, c = moved[..., chem.SLOT_N, :].requires_grad_(), moved[..., chem.SLOT_C, :]
    frame = residue_frame(n, ca, c)
    sums = carried.means(n, ca, c, frame, carried.turn(chi_turn), weights)
    side = torch.as_tensor(chem.SIDE_CHAIN_SLOTS)
    assert (sums.detach() - torch.einsum("rbs,frsc->frbc", weights * side, got)).abs().max() < 1e-9
    # proline's SC1 holds its CD, placed from N: the sums follow N
    pro = [r.name for r in records].index("PRO")
    (grad,) = torch.autograd.grad(sums[:, pro].sum(), n)
    assert grad[:, pro].abs().max() > 0.01


def test_rigid_fit_recovers_a_motion_and_turns_undetermined_sets_least():
    """Kabsch with weights: a known rotation and shift come back; a two-point set turns only to align its axis."""
    from backmap_plugin.core.geometry import rigid_fit

    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    rot = q * torch.sign(torch.det(q))
    p = torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = p @ rot.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    r, c, tc = rigid_fit(p, t, torch.ones(5, dtype=torch.float64))
    assert torch.allclose(r, rot, atol=1e-10)
    assert torch.allclose((p - c) @ r.T + tc, t, atol=1e-10)
    assert torch.allclose(torch.det(r), torch.tensor(1.0, dtype=torch.float64))
    # two points along x moved along y: any turn about x fits equally; the bias picks none
    two = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    r, c, tc = rigid_fit(two, two + torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), torch.ones(2, dtype=torch.float64),
                         bias=0.5)
    assert torch.allclose(r, torch.eye(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(tc - c, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))


def test_rigid_fit_about_a_point_and_the_axis_angle_of_its_rotation():
    """A rotation about a fixed point comes back with no translation; its axis and angle come back too."""
    from backmap_plugin.core.geometry import rigid_fit, rotate_about_axis, rotation_axis_angle

    g = torch.Generator().manual_seed(5)
    origin = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    axis = torch.nn.functional.normalize(torch.randn(3, generator=g, dtype=torch.float64), dim=0)
    p = torch.randn(4, 3, generator=g, dtype=torch.float64) + origin
    t = rotate_about_axis(p, origin, axis, torch.tensor(0.3, dtype=torch.float64))
    r, c, tc = rigid_fit(p, t, torch.ones(4, dtype=torch.float64), centre=origin)
    assert torch.equal(c, origin) and torch.equal(tc, origin)
    assert torch.allclose((p - origin) @ r.T + origin, t, atol=1e-10)
    got_axis, got_angle = rotation_axis_angle(r)
    assert torch.allclose(got_axis, axis, atol=1e-10) and abs(float(got_angle) - 0.3) < 1e-10
    assert float(rotation_axis_angle(torch.eye(3, dtype=torch.float64))[1]) == 0.0
