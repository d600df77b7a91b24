"""Coarse-grained mappings: where each residue's bead sits.

A mapping turns all-atom residues into bead positions (used to make
training data, and to accept all-atom input) and names the CG topology it
expects: one bead per residue, identified by residue name, chain and number.
Adding a mapping is one subclass of :class:`Mapping` registered in
:data:`MAPPINGS`.
"""

from __future__ import annotations

import numpy as np
import torch

from backmap_plugin.core import chemistry as chem

_MASS = {"C": 12.011, "N": 14.007, "O": 15.999, "S": 32.06}


def _slot_masses() -> np.ndarray:
    masses = np.zeros((len(chem.RESIDUE_NAMES), chem.N_SLOTS))
    for t, name in enumerate(chem.RESIDUE_NAMES):
        for s, element in enumerate(chem.RESIDUES[name].elements):
            masses[t, s] = _MASS[element]
    return masses


SLOT_MASSES = _slot_masses()
"""(20, N_SLOTS) heavy-atom masses in slot order; OXT (not part of a bead) is 0."""


#: The farthest (Angstrom) a residue's heavy-atom centre of mass lies from its C-alpha atom, per residue type: the
#: largest of about 150,000 residues in 300 train crystal structures (every 6th of the split's crystal entries).
COM_REACH = {
    "ALA": 1.07, "ARG": 3.07, "ASN": 1.51, "ASP": 1.52, "CYS": 1.34, "GLN": 2.04, "GLU": 2.05, "GLY": 1.17,
    "HIS": 2.07, "ILE": 1.20, "LEU": 1.43, "LYS": 2.19, "MET": 2.19, "PHE": 2.28, "PRO": 1.10, "SER": 1.08,
    "THR": 1.01, "TRP": 3.01, "TYR": 2.81, "VAL": 1.00,
}
_COM_REACH = np.array([COM_REACH[name] for name in chem.RESIDUE_NAMES])


class Mapping:
    """Base class of CG mappings (one bead per residue).

    Attributes
    ----------
    name : str
        Registry name (``--mapping``).
    bead_name : str
        Atom name of the bead in the CG topology this mapping writes.
    """

    name = ""
    bead_name = "CA"
    #: True when the bead is the C-alpha itself (builders need no fitting).
    bead_is_ca = False

    def bead_positions(self, slots, present, res_type):
        """Bead positions from residue atom slots.

        Parameters
        ----------
        slots : numpy.ndarray or torch.Tensor
            (..., R, N_SLOTS, 3) heavy-atom coordinates.
        present : array
            (R, N_SLOTS) bool, the atom exists.
        res_type : array
            (R,) residue types.

        Returns
        -------
        Same type as ``slots``, shape (..., R, 3).
        """
        raise NotImplementedError

    def required_atoms(self) -> tuple[str, ...]:
        """Atoms an all-atom residue needs for its bead to be defined."""
        return ()

    def is_ca(self, n_residues: int) -> np.ndarray:
        """(R,) bool: the residues whose bead is their C-alpha atom."""
        return np.full(n_residues, self.bead_is_ca)

    def bead_groups(self, res_type) -> dict[str, np.ndarray]:
        """Kinds of bead whose fit is reported apart.

        Parameters
        ----------
        res_type : array
            (R,) residue types.

        Returns
        -------
        dict
            Name -> bool mask over the beads of :meth:`bead_positions`
            ((R,) for one bead per residue); kinds with no bead are left out.
        """
        is_ca = self.is_ca(len(res_type))
        groups = {"C-alpha": is_ca, "centre of mass": ~is_ca}
        return {name: mask for name, mask in groups.items() if mask.any()}


class CAMapping(Mapping):
    """Bead at the C-alpha atom."""

    name = "ca"
    bead_is_ca = True

    def bead_positions(self, slots, present, res_type):  # noqa: D102
        return slots[..., chem.SLOT_CA, :]

    def required_atoms(self):  # noqa: D102
        return ("CA",)


class COMMapping(Mapping):
    """Bead at the centre of mass of the residue's heavy atoms (OXT excluded).

    Parameters
    ----------
    ca_residues : array of bool, optional
        (R,) residues whose bead is their C-alpha instead (the beads of
        CALVADOS 3 linkers and tails, 3.8 Angstrom apart, between folded
        domains of centre-of-mass beads). None: every bead a centre of mass.
    """

    name = "com"

    def __init__(self, ca_residues=None):
        self.ca_residues = None if ca_residues is None or not np.any(ca_residues) else np.asarray(ca_residues, bool)

    def is_ca(self, n_residues: int) -> np.ndarray:  # noqa: D102
        if self.ca_residues is None:
            return np.zeros(n_residues, bool)
        if len(self.ca_residues) != n_residues:
            raise ValueError(f"mapping has {len(self.ca_residues)} residues, the structure {n_residues}")
        return self.ca_residues

    def bead_reach(self, res_type) -> np.ndarray:
        """(R,) the farthest each residue's bead can lie from its C-alpha atom (Angstrom; 0 for C-alpha beads).

        Parameters
        ----------
        res_type : array
            (R,) residue types.
        """
        return np.where(self.is_ca(len(res_type)), 0.0, _COM_REACH[np.asarray(res_type)])

    def bead_positions(self, slots, present, res_type):  # noqa: D102
        weights = SLOT_MASSES[np.asarray(res_type)] * np.asarray(present)
        weights = weights / weights.sum(-1, keepdims=True)
        ca = self.is_ca(weights.shape[-2]) if self.ca_residues is not None else None
        if ca is not None:
            weights = np.where(ca[:, None], np.eye(chem.N_SLOTS)[chem.SLOT_CA], weights)
        if isinstance(slots, torch.Tensor):
            weights = torch.as_tensor(weights, dtype=slots.dtype, device=slots.device)
        return (slots * weights[..., None]).sum(-2)

    def required_atoms(self):  # noqa: D102
        return ("CA",)


class Martini3Mapping(Mapping):
    """Martini 3 protein beads (BB, SC1 ...) as martinize2 places them (:mod:`backmap_plugin.core.martini3`).

    ``bead_positions`` returns (..., R, MAX_BEADS, 3), one row per bead of
    :data:`~backmap_plugin.core.martini3.MARTINI3_BEADS` (zeros where a
    residue type has no such bead).
    """

    name = "martini3"

    def bead_positions(self, slots, present, res_type):  # noqa: D102
        from backmap_plugin.core.martini3 import martini3_bead_positions

        return martini3_bead_positions(slots, present, res_type)

    def bead_groups(self, res_type):  # noqa: D102
        from backmap_plugin.core.martini3 import BEAD_EXISTS

        exists = BEAD_EXISTS[np.asarray(res_type)]
        backbone = np.zeros_like(exists)
        backbone[:, 0] = True
        groups = {"BB": backbone, "SC": exists & ~backbone}
        return {name: mask for name, mask in groups.items() if mask.any()}


MAPPINGS = {m.name: m for m in (CAMapping(), COMMapping(), Martini3Mapping())}


def model_beads(mapping: Mapping) -> str:
    """The kind of model a mapping's beads need: ``ca`` (C-alpha trace), ``com`` (centres of mass, mixed) or ``martini3``."""
    if mapping.name == "martini3":
        return "martini3"
    return "ca" if mapping.bead_is_ca else "com"


def get_mapping(name: str | Mapping) -> Mapping:
    """Look up a mapping by name (or pass an instance through).

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    if isinstance(name, Mapping):
        return name
    try:
        return MAPPINGS[name]
    except KeyError:
        raise ValueError(f"unknown mapping '{name}'; known: {', '.join(MAPPINGS)}") from None
