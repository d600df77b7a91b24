"""Training targets from all-atom structures: backbone angles, chi angles, rotamers.

The model predicts, per peptide unit, the rotation of the rigid peptide plane
about the CA-CA axis; per segment end the free terminal torsions; and per
residue a rotamer of the library (:mod:`backmap_plugin.build.rotamers`) plus chi
offsets. This module measures all of them on real structures (with masks for
what cannot be measured) and puts chemically equivalent atoms (OD1/OD2,
CD1/CD2 ...) in the labelling the rotamer library uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from backmap_plugin.build.backbone import backbone_dofs
from backmap_plugin.build.rotamers import load_rotamers
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.geometry import chi_angles, dihedral
from backmap_plugin.core.topology import BackboneLayout


def _symmetric_swaps() -> list[tuple[int, int, list[tuple[int, int]], int]]:
    """(residue type, chi index or -1, slot pairs to swap, reference slot) per symmetric residue."""
    swaps = []
    for name, pairs in chem.SYMMETRIC_PAIRS.items():
        spec = chem.RESIDUES[name]
        slots = [(spec.atoms.index(a), spec.atoms.index(b)) for a, b in pairs]
        first = slots[0][0]
        chi = int(chem.ZMATRIX_CHI[chem.RESIDUE_INDEX[name], first])
        swaps.append((chem.RESIDUE_INDEX[name], chi, slots, first))
    return swaps


_SWAPS = _symmetric_swaps()


def canonical_labels(slots: torch.Tensor, res_type: np.ndarray) -> torch.Tensor:
    """Swap chemically equivalent atoms into the labelling of the rotamer library.

    For ASP, GLU, PHE, TYR the labelling is the one whose symmetric chi lies
    in the library's half-period range; for ARG the one with NH1 cis to CD.

    Parameters
    ----------
    slots : torch.Tensor
        (..., R, N_SLOTS, 3) coordinates.
    res_type : numpy.ndarray
        (R,) residue types.
    """
    rot = load_rotamers()
    out = slots.clone()
    res_type = np.asarray(res_type)
    for t, chi, pairs, first in _SWAPS:
        rows = np.nonzero(res_type == t)[0]
        if len(rows) == 0:
            continue
        idx = torch.as_tensor(rows, device=slots.device)
        parents = chem.ZMATRIX_PARENTS[t, first]
        x = slots[..., idx, :, :]
        torsion = dihedral(x[..., first, :], x[..., parents[0], :], x[..., parents[1], :], x[..., parents[2], :])
        if chi >= 0:
            lo = float(np.nanmin(rot.chis[t, : rot.count[t], chi]))
            centre = lo + math.pi / 2 - 0.25  # library values span [lo, lo + pi)
            swap = torch.cos(torsion - centre) < 0
        else:
            swap = torch.cos(torsion - float(chem.ZMATRIX_IDEAL[t, first, 2])) < 0
        y = x.clone()
        for a, b in pairs:
            y[..., a, :] = torch.where(swap[..., None], x[..., b, :], x[..., a, :])
            y[..., b, :] = torch.where(swap[..., None], x[..., a, :], x[..., b, :])
        out[..., idx, :, :] = y
    return out


@dataclass
class Targets:
    """Measured degrees of freedom and their masks (flat residues)."""

    dofs: dict
    dof_masks: dict
    chi: torch.Tensor
    chi_mask: torch.Tensor
    rotamer: torch.Tensor
    rotamer_mask: torch.Tensor
    slots: torch.Tensor
    present: torch.Tensor


def chi_periods(res_type: np.ndarray, device=None) -> torch.Tensor:
    """(R, 4) period of each chi (pi for symmetric ones)."""
    return torch.as_tensor(load_rotamers().period[np.asarray(res_type)], device=device, dtype=torch.float32)


def assign_rotamers(chi: torch.Tensor, chi_mask: torch.Tensor, res_type: np.ndarray) -> torch.Tensor:
    """Nearest library rotamer of every residue: (R,) long (0 where none)."""
    rot = load_rotamers()
    lib = torch.as_tensor(rot.chis[res_type], dtype=chi.dtype, device=chi.device)  # (R, K, 4)
    period = chi_periods(res_type, chi.device).to(chi.dtype)[:, None, :]
    diff = 1 - torch.cos((chi[:, None, :] - lib) * 2 * math.pi / period)
    diff = torch.where(chi_mask[:, None, :] & torch.isfinite(lib), diff, torch.zeros_like(diff)).sum(-1)
    valid = torch.arange(lib.shape[1], device=chi.device)[None] < torch.as_tensor(rot.count[res_type], device=chi.device)[:, None]
    diff = torch.where(valid, diff, torch.full_like(diff, float("inf")))
    return diff.argmin(-1)


def measure(slots: torch.Tensor, present: torch.Tensor, res_type: np.ndarray, layout: BackboneLayout) -> Targets:
    """Targets for one batch of flat residues.

    Parameters
    ----------
    slots : torch.Tensor
        (R, N_SLOTS, 3) real coordinates.
    present : torch.Tensor
        (R, N_SLOTS) bool, atoms present.
    res_type : numpy.ndarray
        (R,).
    layout : BackboneLayout
        Of the flat residues.
    """
    slots = canonical_labels(slots, res_type)
    dofs = backbone_dofs(slots, layout)
    bb = present[:, [chem.SLOT_N, chem.SLOT_CA, chem.SLOT_C]].all(-1)
    has_o = present[:, chem.SLOT_O]
    first = torch.as_tensor(layout.first, device=slots.device)
    s = torch.as_tensor(layout.starts, device=slots.device)
    e = torch.as_tensor(layout.ends, device=slots.device)
    n_res = slots.shape[0]
    after, before = (s + 1).clamp(max=n_res - 1), (e - 1).clamp(min=0)
    long_start = torch.as_tensor(~np.isin(layout.starts, layout.ends), device=slots.device)
    long_end = torch.as_tensor(~np.isin(layout.ends, layout.starts), device=slots.device)
    masks = {
        "angle": bb[first] & bb[first + 1] & torch.as_tensor(layout.bonded, device=slots.device),
        "psi_first": bb[s] & bb[after] & long_start,
        "phi_last": bb[e] & bb[before] & long_end,
        "psi_last": bb[e] & has_o[e],
    }
    chi = chi_angles(slots, torch.as_tensor(res_type, device=slots.device))
    chi_atoms = torch.as_tensor(chem.CHI_ATOMS[res_type], device=slots.device)  # (R, 4, 4)
    atoms_ok = torch.gather(present, 1, chi_atoms.flatten(1)).view(n_res, 4, 4).all(-1)
    chi_mask = atoms_ok & torch.as_tensor(chem.CHI_EXISTS[res_type], device=slots.device)
    rotamer = assign_rotamers(chi, chi_mask, res_type)
    count = torch.as_tensor(load_rotamers().count[res_type], device=slots.device)
    rotamer_mask = (count > 0) & (chi_mask | ~torch.as_tensor(chem.CHI_EXISTS[res_type], device=slots.device)).all(-1)
    return Targets(dofs, masks, chi, chi_mask, rotamer, rotamer_mask, slots, present)
