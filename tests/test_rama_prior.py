"""The Ramachandran restraint of the Martini 3 fit (backmap_plugin.build.rama_prior)."""

from __future__ import annotations

import warnings
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch

from backmap_plugin.build import martini
from backmap_plugin.build.rama_prior import RamachandranPrior
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.ramachandran import FAVOURED, classify, residue_classes
from backmap_plugin.core.topology import gather_slots, protein_topology, read_residues

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def trpcage():
    """(protein, slots) of the 38 NMR models of 1L2Y."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = md.load(str(DATA / "1l2y.pdb.gz"))
    records, _ = read_residues(traj.topology)
    slots, _ = gather_slots(traj.xyz.astype(np.float64) * 10.0, records)
    return protein_topology(records, slots[0, :, chem.SLOT_CA], 4.5), torch.as_tensor(slots)


def _n_ca_c(slots):
    return slots[..., chem.SLOT_N, :], slots[..., chem.SLOT_CA, :], slots[..., chem.SLOT_C, :]


def _grades(prior, protein, backbone):
    phi, psi = (np.degrees(a.detach().numpy()) for a in prior.dihedrals(*_n_ca_c(backbone)))
    names = [chem.RESIDUE_NAMES[t] for t in protein.res_type]
    classes = residue_classes(names, np.ones(len(names), bool), np.full(len(names), 180.0))
    return classify(phi, psi, [classes[i] for i in prior.index.tolist()])


def test_penalty_is_zero_exactly_where_the_check_says_favoured(trpcage):
    """Inner residues of every NMR model: penalty 0 where `backmap validate` grades favoured, positive elsewhere;
    a gradient step on the backbone lowers the penalty of the others."""
    protein, slots = trpcage
    prior = RamachandranPrior(protein)
    assert prior.index.tolist() == list(range(1, 19))  # both dihedrals: not the chain ends
    backbone = slots.clone().requires_grad_()
    penalty = prior(*_n_ca_c(backbone))
    grades = _grades(prior, protein, backbone)
    per_residue = prior.penalties(*_n_ca_c(backbone))
    favoured = grades == FAVOURED
    assert favoured.any() and (~favoured).any()  # NMR models have some residues outside
    assert torch.all(per_residue[torch.as_tensor(favoured)] == 0)
    assert torch.all(per_residue[torch.as_tensor(~favoured)] > 0)
    penalty.sum().backward()
    with torch.no_grad():
        moved = slots - 1e-3 * backbone.grad
    assert prior(*_n_ca_c(moved)).sum().item() < penalty.sum().item()


def test_fit_to_real_martini_dynamics_keeps_dihedrals_favoured(monkeypatch, tmp_path):
    """Real Martini 3 MD (tests/data/martini3/md.xtc, 8 ps): with the restraint the fit's structures have fewer
    inner residues outside the favoured region than without it, and still lie near the beads."""
    from backmap_plugin.api import backmap

    def not_favoured(path):
        built = md.load(str(path))
        records, _ = read_residues(built.topology)
        slots, _ = gather_slots(built.xyz.astype(np.float64) * 10.0, records)
        protein = protein_topology(records, slots[0, :, chem.SLOT_CA], 4.5)
        return float((_grades(RamachandranPrior(protein), protein, torch.as_tensor(slots)) != FAVOURED).mean())

    out = {}
    for weight in (0.0, martini.RAMA_WEIGHT):
        monkeypatch.setattr(martini, "RAMA_WEIGHT", weight)
        result = backmap(DATA / "martini3" / "md.xtc", tmp_path / f"aa_{weight}.pdb", top=DATA / "martini3" / "md.gro",
                         progress=False)
        out[weight] = not_favoured(result.output), result.bead_rmsd
    (without, _), (restrained, fit) = out[0.0], out[martini.RAMA_WEIGHT]
    assert restrained < 0.6 * without, (restrained, without)
    assert fit["BB"]["median"] < 0.6 and fit["SC"]["median"] < 0.8, fit
