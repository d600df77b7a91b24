"""Martini 3 beads of protein residues, as ``martinize2`` places them.

``martinize2`` (package ``vermouth``, force field ``martini3001``) puts every
bead at the weighted centre of mass of the atoms its mapping file assigns to
it: ``sum(w_a m_a x_a) / sum(w_a m_a)`` over the bead's atoms present in the
input, with the mapping weight ``w_a`` (1, a fraction for an atom shared by
beads, 0 for ``!`` entries) and vermouth's integer element mass ``m_a``
(C 12, N 14, O 16, S 32). The table is read from the package data
``core/tables/martini3.json``, generated from the installed vermouth's
mapping files by ``workflows/tables/build_martini3.py``; it holds heavy atoms
only, so the beads here equal martinize2's for an input without hydrogens
(martinize2 counts hydrogens that are present; ``martinize2 -ignh`` drops
them).

Per residue type (index into :data:`backmap_plugin.core.chemistry.RESIDUE_NAMES`)
the beads are ``BB`` then ``SC1`` ... in martinize2's order; a C-terminal
``OXT`` counts in ``BB`` (its ``C-ter`` modification). Residue names that
martinize2 writes for protonation states (HSD, HIE, ASPP, LSN ...) are in
:data:`MARTINI3_RESIDUES`; their heavy-atom beads are those of the standard
residue except vermouth's ``hid.amber.map`` (see :func:`residue_weights`).
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np

from backmap_plugin.core import chemistry as chem


def _load_table() -> dict:
    path = resources.files("backmap_plugin.core").joinpath("tables").joinpath("martini3.json")
    return json.loads(path.read_text(encoding="utf-8"))


TABLE: dict = _load_table()
"""The package table ``core/tables/martini3.json`` (provenance, masses, every residue name)."""

#: Beads of the largest residue (TRP: BB + SC1..SC5).
MAX_BEADS = max(len(r["beads"]) for r in TABLE["residues"].values())
#: Element masses martinize2 weights atoms with (vermouth ``ATOM_MASSES``).
MASSES: dict[str, float] = dict(TABLE["masses"])
#: Residue name as martinize2 writes it -> standard three-letter name.
MARTINI3_RESIDUES: dict[str, str] = {name: r["standard"] for name, r in TABLE["residues"].items()}
#: Bead names per residue type, in :data:`chem.RESIDUE_NAMES` order.
MARTINI3_BEADS: tuple[tuple[str, ...], ...] = tuple(
    tuple(TABLE["residues"][name]["beads"]) for name in chem.RESIDUE_NAMES
)


def _weights_of(name: str) -> np.ndarray:
    entry = TABLE["residues"][name]
    spec = chem.RESIDUES[entry["standard"]]
    out = np.zeros((MAX_BEADS, chem.N_SLOTS))
    for b, bead in enumerate(entry["beads"]):
        for atom, weight in entry["atoms"][bead]:
            s = spec.atoms.index(atom)
            out[b, s] += weight * MASSES[spec.elements[s]]
    oxt = TABLE["oxt"]
    out[entry["beads"].index(oxt["bead"]), chem.SLOT_OXT] = oxt["weight"] * MASSES["O"]
    return out


def residue_weights(name: str) -> np.ndarray:
    """Bead weights of one residue name as martinize2 writes it.

    Parameters
    ----------
    name : str
        A key of :data:`MARTINI3_RESIDUES` (standard names and variants such
        as HSD, HIE, ASPP). ``HID`` differs from ``HIS``: vermouth's
        ``hid.amber.map`` (used with ``martinize2 -from amber``) splits the
        ring as SC1 = CB, SC2 = CG ND1 CE1, SC3 = NE2 CD2.

    Returns
    -------
    numpy.ndarray
        (MAX_BEADS, N_SLOTS) mapping weight times mass, un-normalised, in the
        standard residue's slot layout (OXT in ``BB``).
    """
    return _weights_of(name).copy()


WEIGHTS = np.stack([_weights_of(name) for name in chem.RESIDUE_NAMES])
WEIGHTS.setflags(write=False)
"""(20, MAX_BEADS, N_SLOTS) mapping weight x mass per residue type, bead and atom slot (un-normalised)."""

BEAD_EXISTS = np.array([[b < len(beads) for b in range(MAX_BEADS)] for beads in MARTINI3_BEADS])
BEAD_EXISTS.setflags(write=False)
"""(20, MAX_BEADS) bool: the residue type has that bead."""


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach"):  # torch tensor
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _normalised_weights(present, res_type) -> np.ndarray:
    """(..., R, MAX_BEADS, N_SLOTS) weights over present atoms, each bead summing to 1 (0 for a bead with none)."""
    res_type = _as_numpy(res_type).astype(np.int64)
    present = _as_numpy(present).astype(bool)
    w = WEIGHTS[res_type] * present[..., None, :]
    total = w.sum(-1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def martini3_bead_positions(slots, present, res_type):
    """Martini 3 bead positions of residues given by their heavy-atom slots.

    Parameters
    ----------
    slots : numpy.ndarray or torch.Tensor
        (..., R, N_SLOTS, 3) heavy-atom coordinates (any length unit; the
        result is in the same one).
    present : array
        (R, N_SLOTS) or (..., R, N_SLOTS) bool, the atom exists. Absent
        slots are ignored whatever they hold (NaN included).
    res_type : array
        (R,) residue types (index into ``chem.RESIDUE_NAMES``).

    Returns
    -------
    Same type as ``slots`` (same dtype and device for torch; differentiable
    with respect to ``slots``), shape (..., R, MAX_BEADS, 3): each bead at
    the weighted centre of mass of its present atoms. Beads the residue type
    does not have (see :data:`BEAD_EXISTS`) and beads none of whose atoms
    is present (see :func:`martini3_bead_mask`) are 0.
    """
    weights = _normalised_weights(present, res_type)
    mask = _as_numpy(present).astype(bool)[..., None]
    if isinstance(slots, np.ndarray):
        x = np.where(mask, slots, 0.0)
        return np.matmul(weights.astype(slots.dtype), x).astype(slots.dtype, copy=False)
    import torch

    mask_t = torch.as_tensor(mask, device=slots.device)
    x = torch.where(mask_t, slots, torch.zeros((), dtype=slots.dtype, device=slots.device))
    return torch.matmul(torch.as_tensor(weights, dtype=slots.dtype, device=slots.device), x)


def martini3_bead_mask(present, res_type) -> np.ndarray:
    """Which beads :func:`martini3_bead_positions` defines.

    Parameters
    ----------
    present : array
        (R, N_SLOTS) or (..., R, N_SLOTS) bool, the atom exists.
    res_type : array
        (R,) residue types.

    Returns
    -------
    numpy.ndarray
        (..., R, MAX_BEADS) bool: the residue type has the bead and at least
        one of its weighted atoms is present.
    """
    res_type = _as_numpy(res_type).astype(np.int64)
    present = _as_numpy(present).astype(bool)
    return ((WEIGHTS[res_type] > 0) & present[..., None, :]).any(-1)


def martini3_bead_names(res_type) -> list[tuple[str, ...]]:
    """Bead names per residue, in the order of :func:`martini3_bead_positions`.

    Parameters
    ----------
    res_type : array
        (R,) residue types.

    Returns
    -------
    list of tuple of str
    """
    return [MARTINI3_BEADS[int(t)] for t in _as_numpy(res_type)]
