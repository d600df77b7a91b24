"""Overlapping backbone atoms: the pairs that may overlap and their penalty.

The backbone atoms and C-beta (N, CA, C, O, OXT, CB; :data:`SLOTS`) of a
structure are never moved one by one, so the clash relief of side chains
(:mod:`backmap_plugin.build.relax`) cannot separate them: the fits that move
the backbone onto beads keep them apart themselves. The centre-of-mass
settling (:func:`backmap_plugin.build.settle.settle_on_beads`) and the
Martini 3 joint fit (:func:`backmap_plugin.build.martini.fit_beads`) find the
pairs once (:func:`backbone_contact_pairs`; their steps move atoms by
tenths of an Angstrom) and pay for each pair closer than
:data:`CONTACT_DISTANCE` (:func:`backbone_contact_loss`).
Lengths in Angstrom.
"""

from __future__ import annotations

import torch

from backmap_plugin.build.relax import residue_neighbours
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.topology import ProteinTopology

#: The atoms of a residue that take part, in the order of the (F, R, 6, 3) stacks :func:`backbone_contact_loss`
#: reads.
SLOTS = [chem.SLOT_N, chem.SLOT_CA, chem.SLOT_C, chem.SLOT_O, chem.SLOT_OXT, chem.SLOT_CB]
#: Pairs closer than this pay.
CONTACT_DISTANCE = 2.6
#: (6, 6) bool: atom pairs of residue i (rows) and i + 1 (columns) of one
#: segment more than three bonds apart (O(i)-O(i+1) is five; C(i)-N(i+1) is
#: the peptide bond; OXT only ends a segment; CB(i)-N(i+1) and C(i)-CB(i+1) are three).
_NEIGHBOUR_PAIRS = torch.tensor([
    # N'     CA'    C'     O'     OXT'   CB'
    [False, True, True, True, False, True],  # N
    [False, False, True, True, False, True],  # CA
    [False, False, False, True, False, False],  # C
    [False, False, True, True, False, True],  # O
    [False, False, False, False, False, False],  # OXT
    [False, True, True, True, False, True],  # CB
])


def backbone_contact_pairs(atoms: torch.Tensor, protein: ProteinTopology, search: float) -> torch.Tensor:
    """Backbone and C-beta atom pairs that may overlap: (3, P) indices (frame, atom, atom) into (F, 6 R) atoms.

    Atom ``6 r + k`` is atom ``k`` of :data:`SLOTS` of residue ``r``;
    pairs of atoms that exist, more than three bonds apart (residues two or
    more apart, of different segments, or neighbours:
    :data:`_NEIGHBOUR_PAIRS`), within ``search`` Angstrom of each other,
    the lower atom index first, sorted by frame and atoms. Only residues
    whose atoms can come that close
    (:func:`backmap_plugin.build.relax.residue_neighbours`) are compared atom
    by atom, so the work grows with the number of residues, not its square.

    Parameters
    ----------
    atoms : torch.Tensor
        (F, R, N_SLOTS, 3).
    protein : ProteinTopology
    search : float
        Pairs closer than this (Angstrom) are listed.
    """
    n_frames, n_res = atoms.shape[:2]
    dev = atoms.device
    k = len(SLOTS)
    backbone = atoms[:, :, SLOTS]  # (F, R, 6, 3)
    exists = torch.as_tensor(protein.slot_mask[:, SLOTS], device=dev)  # (R, 6)
    ca = atoms[:, :, chem.SLOT_CA]
    reach = ((backbone - ca[:, :, None]).norm(dim=-1) * exists).amax(-1).amax(0)  # (R,)
    neighbours = residue_neighbours(ca, reach, search)
    key = torch.repeat_interleave(torch.arange(n_frames * n_res, device=dev), neighbours.start.diff())
    f, ri, rj = key // n_res, key % n_res, neighbours.residue
    segment = torch.as_tensor(protein.segment, device=dev)
    later = rj > ri
    f, ri, rj = f[later], ri[later], rj[later]
    step = (rj - ri)[:, None, None]
    apart = (step >= 2) | (segment[ri] != segment[rj])[:, None, None] | _NEIGHBOUR_PAIRS.to(dev)
    apart = apart & exists[ri, :, None] & exists[rj, None, :]
    close = (backbone[f, ri][:, :, None] - backbone[f, rj][:, None, :]).norm(dim=-1) < search
    p, a, b = torch.nonzero(close & apart, as_tuple=True)
    f, i, j = f[p], k * ri[p] + a, k * rj[p] + b
    order = torch.argsort((f * n_res * k + i) * n_res * k + j)
    return torch.stack([f, i, j])[:, order]


def backbone_contact_loss(backbone: torch.Tensor, pairs: torch.Tensor, weight: float) -> torch.Tensor:
    """(F,) sum over the pairs of ``weight`` x (shortfall below :data:`CONTACT_DISTANCE`)^2.

    Parameters
    ----------
    backbone : torch.Tensor
        (F, R, 6, 3) the atoms of :data:`SLOTS` of every residue (differentiable).
    pairs : torch.Tensor
        (3, P) from :func:`backbone_contact_pairs`.
    weight : float
        Per Angstrom^2.
    """
    flat = backbone.reshape(backbone.shape[0], -1, 3)
    f, i, j = pairs
    d = (flat[f, i] - flat[f, j]).norm(dim=-1)
    penalty = weight * torch.relu(CONTACT_DISTANCE - d) ** 2
    return torch.zeros(backbone.shape[0], dtype=backbone.dtype, device=backbone.device).index_add(0, f, penalty)
