"""Tests of the CG mappings (:mod:`backmap_plugin.core.mappings`) on the real 1L2Y ensemble.

Beads are checked against mdtraj: the C-alpha positions for ``ca`` and
``mdtraj.compute_center_of_mass`` over each residue's heavy atoms (OXT
excluded) for ``com``, with numpy and torch inputs. A mapping defined in this
file (bead at CB, CA for GLY) shows that adding one is a single subclass.
"""

from __future__ import annotations

import warnings

import mdtraj as md
import numpy as np
import pytest
import torch

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import mappings as mp
from backmap_plugin.core import topology as tp


@pytest.fixture(scope="module")
def l2y(fixture_pdb):
    """(trajectory, records, slots in Angstrom, present, res_type) of all 38 models of 1L2Y."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = md.load(str(fixture_pdb))
    records, _ = tp.read_residues(traj.topology)
    slots, present = tp.gather_slots(traj.xyz.astype(np.float64) * 10.0, records)
    res_type = np.array([chem.RESIDUE_INDEX[r.name] for r in records])
    return traj, records, slots, present, res_type


def _mdtraj_com(traj, atoms_per_residue):
    """(F, R, 3) centre of mass (Angstrom) of each residue's listed atoms, by mdtraj."""
    return np.stack([md.compute_center_of_mass(traj.atom_slice(idx)) for idx in atoms_per_residue], axis=1) * 10.0


def _as(slots, kind):
    if kind == "numpy":
        return slots
    return torch.as_tensor(slots, dtype=torch.float32 if kind == "torch32" else torch.float64)


def _numpy(x):
    return x.numpy() if isinstance(x, torch.Tensor) else x


@pytest.mark.parametrize("kind", ["numpy", "torch32", "torch64"])
def test_ca_mapping(l2y, kind):
    traj, _, slots, present, res_type = l2y
    mapping = mp.get_mapping("ca")
    assert isinstance(mapping, mp.CAMapping) and mapping.bead_is_ca and mapping.required_atoms() == ("CA",)
    beads = mapping.bead_positions(_as(slots, kind), present, res_type)
    assert type(beads) is type(_as(slots, kind)) and beads.shape == (38, 20, 3)
    ca = traj.xyz[:, traj.topology.select("name CA")] * 10.0
    np.testing.assert_allclose(_numpy(beads), ca, atol=1e-5)


@pytest.mark.parametrize("kind", ["numpy", "torch32", "torch64"])
def test_com_mapping_matches_mdtraj(l2y, kind):
    traj, records, slots, present, res_type = l2y
    mapping = mp.get_mapping("com")
    assert not mapping.bead_is_ca
    beads = mapping.bead_positions(_as(slots, kind), present, res_type)
    assert beads.shape == (38, 20, 3)
    if kind != "numpy":
        assert beads.dtype == _as(slots, kind).dtype
    # the last residue has an OXT in the input; it is not part of the bead
    assert "OXT" in records[-1].atoms
    heavy = [[i for name, i in rec.atoms.items() if name != "OXT"] for rec in records]
    ref = _mdtraj_com(traj, heavy)
    # masses differ in the 4th digit from mdtraj's (12.011 vs 12.0107 ...)
    np.testing.assert_allclose(_numpy(beads), ref, atol=1e-3)
    with_oxt = _mdtraj_com(traj, [list(rec.atoms.values()) for rec in records])
    assert np.linalg.norm(with_oxt[:, -1] - _numpy(beads)[:, -1], axis=-1).min() > 0.1  # OXT would move it
    # the bead is not the C-alpha: side chains pull it away
    gly = res_type == chem.RESIDUE_INDEX["GLY"]
    off = np.linalg.norm(_numpy(beads) - slots[..., chem.SLOT_CA, :], axis=-1)
    assert (off[:, ~gly] > 0.1).all() and off[:, ~gly].mean() > 1.0


def test_com_mapping_uses_present_atoms_only(l2y):
    traj, records, slots, present, res_type = l2y
    # a truncated side chain: TRP 6 without its ring, LYS 8 without NZ
    partial = present.copy()
    partial[5, chem.SLOT_CB + 2:] = False
    partial[7, chem.RESIDUES["LYS"].atoms.index("NZ")] = False
    masked = np.where(partial[None, ..., None], slots, 1e4)  # absent atoms far away: must not count
    beads = mp.get_mapping("com").bead_positions(masked, partial, res_type)
    keep = []
    for i, rec in enumerate(records):
        spec = chem.RESIDUES[rec.name]
        keep.append([idx for name, idx in rec.atoms.items() if name != "OXT" and partial[i, spec.atoms.index(name)]])
    np.testing.assert_allclose(beads, _mdtraj_com(traj, keep), atol=1e-3)


def test_slot_masses():
    for t, name in enumerate(chem.RESIDUE_NAMES):
        spec = chem.RESIDUES[name]
        expected = [md.element.get_by_symbol(e).mass for e in spec.elements]
        np.testing.assert_allclose(mp.SLOT_MASSES[t, : spec.n_atoms], expected, rtol=1e-3)
        assert (mp.SLOT_MASSES[t, spec.n_atoms:] == 0).all()  # padding and OXT


def test_get_mapping_names_and_errors():
    assert set(mp.MAPPINGS) >= {"ca", "com"}
    for name, mapping in mp.MAPPINGS.items():
        assert mp.get_mapping(name) is mapping and mapping.name == name
    with pytest.raises(ValueError, match=r"unknown mapping 'martini'; known: .*ca.*com") as info:
        mp.get_mapping("martini")
    for name in mp.MAPPINGS:
        assert name in str(info.value)


class CBMapping(mp.Mapping):
    """Bead at CB; CA for glycine (which has no CB)."""

    name = "cb"
    bead_name = "CB"

    def bead_positions(self, slots, present, res_type):
        gly = np.asarray(res_type) == chem.RESIDUE_INDEX["GLY"]
        slot = np.where(gly, chem.SLOT_CA, chem.SLOT_CB)
        return slots[..., np.arange(len(slot)), slot, :]

    def required_atoms(self):
        return ("CA", "CB")


@pytest.mark.parametrize("kind", ["numpy", "torch64"])
def test_new_mapping_is_one_subclass(l2y, kind):
    traj, records, slots, present, res_type = l2y
    mapping = CBMapping()
    assert mp.get_mapping(mapping) is mapping
    assert "cb" not in mp.MAPPINGS  # nothing registered behind the scenes
    beads = mp.get_mapping(mapping).bead_positions(_as(slots, kind), present, res_type)
    assert beads.shape == (38, 20, 3)
    top = traj.topology
    expected = [top.select(f"resid {r.index} and name {'CA' if r.name == 'GLY' else 'CB'}")[0]
                for r in top.residues]
    np.testing.assert_allclose(_numpy(beads), traj.xyz[:, expected] * 10.0, atol=1e-5)
    # and it differs from both built-in mappings
    for other in ("ca", "com"):
        assert not np.allclose(_numpy(beads), _numpy(mp.get_mapping(other).bead_positions(slots, present, res_type)))


def test_bead_fit_reports_each_kind_of_bead_apart(l2y):
    """BeadFit: exact structures score 0; a bead moved by 2 A in one frame shows in its kind only, at that frame."""
    from backmap_plugin.core.bead_fit import BeadFit, describe

    _, records, slots, present, res_type = l2y
    protein = tp.protein_topology(records, slots[0, :, chem.SLOT_CA], 4.5)
    atoms = np.where(protein.slot_mask[..., None], slots[:4], 0.0)  # the structures "built": 4 frames, as read
    # CALVADOS 3 style: residues 8-12 a C-alpha linker, the rest centres of mass
    linker = np.zeros(len(records), bool)
    linker[7:12] = True
    mapping = mp.COMMapping(linker)
    beads = mapping.bead_positions(atoms, protein.slot_mask, res_type)
    beads[2, 9] += [2.0, 0.0, 0.0]  # frame 2: one linker bead 2 A off
    fit = BeadFit(mapping, protein)
    fit.add(atoms[:, None], beads, first_index=10)
    summary = fit.summary()
    assert set(summary) == {"C-alpha", "centre of mass"}
    assert summary["centre of mass"]["max"] < 1e-9
    assert summary["C-alpha"]["median"] < 1e-9
    assert summary["C-alpha"]["max"] == pytest.approx(2.0 / np.sqrt(5))  # 2 A on one of 5 beads
    assert summary["C-alpha"]["worst_frame"] == 12
    assert "C-alpha 0.00 (worst 0.89, frame 12)" in describe(summary)
    assert fit.summary(stride=4)["C-alpha"]["worst_frame"] == 48  # frame 12 of those read every 4th: input frame 48
    # Martini 3: BB and SC beads apart; beads a residue does not have are ignored whatever they hold
    martini = mp.get_mapping("martini3")
    beads = martini.bead_positions(atoms, protein.slot_mask, res_type)
    beads[:, :, 5] = np.nan  # no residue of trp-cage has SC5 but TRP6 (moved below)
    trp = next(i for i, t in enumerate(res_type) if chem.RESIDUE_NAMES[t] == "TRP")
    beads[:, trp, 5] = martini.bead_positions(atoms, protein.slot_mask, res_type)[:, trp, 5]
    beads[0, 0, 0] += [0.0, 3.0, 0.0]  # frame 0: the first BB bead 3 A off
    fit = BeadFit(martini, protein)
    fit.add(atoms[:, None], beads, first_index=0)
    summary = fit.summary()
    assert summary["BB"]["max"] == pytest.approx(3.0 / np.sqrt(len(records))) and summary["BB"]["worst_frame"] == 0
    assert summary["SC"]["max"] < 1e-9
