"""Settling a built structure onto its beads without changing its chemistry.

A structure built for beads that are not its C-alpha atoms (centres of
mass, Martini beads) misses them by a few tenths of an Angstrom: its side
chains come in discrete rotamers, and its C-alpha trace was placed before
they were chosen. :func:`settle_on_beads` keeps what the builder chose -
the peptide-plane orientations and terminal torsions (measured with
:func:`~backmap_plugin.build.backbone.backbone_dofs`), every bond length and
bond angle, each side chain's rotamer - and moves only the C-alpha trace and
the chi angles, by gradient steps (Adam) on the squared distance of the
structure's beads to the input beads, with the trace's bonded C-alpha
distances and the chi angles held near where they started and backbone
atoms of residues apart in sequence kept from overlapping. The structure
is rebuilt from those variables at every step, so its chemistry stays exact.
Lengths in Angstrom, angles in radians.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from backmap_plugin.build.backbone import backbone_dofs, build_backbone, fit_backbone
from backmap_plugin.build.ideal import relieve_clashes, side_chain_internal
from backmap_plugin.build.relax import TURNABLE_CHIS
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.adam import Adam
from backmap_plugin.core.geometry import build_residues, chi_angles
from backmap_plugin.core.topology import ProteinTopology

#: Gradient steps and their size (Adam; Angstrom for the trace, radians for chi angles).
SETTLE_STEPS = 25
SETTLE_STEP_SIZE = 0.1
#: Penalty per Angstrom^2 by which a bonded C-alpha distance leaves its
#: starting value, and per unit of (1 - cos) by which a chi angle turns.
TRACE_STIFFNESS = 20.0
CHI_RESTRAINT = 1.0
#: Backbone contacts: heavy backbone atoms (N, CA, C, O, OXT) more than three
#: bonds apart (residues two or more apart, of different segments, or
#: neighbours: :data:`_NEIGHBOUR_PAIRS`) closer than CONTACT_DISTANCE pay
#: CONTACT_WEIGHT per Angstrom^2 of the shortfall. Pairs are those closer than
#: CONTACT_SEARCH in the structure as built (the steps move atoms by tenths).
CONTACT_DISTANCE = 2.6
CONTACT_WEIGHT = 10.0
CONTACT_SEARCH = 4.5
_BACKBONE = [chem.SLOT_N, chem.SLOT_CA, chem.SLOT_C, chem.SLOT_O, chem.SLOT_OXT]
#: Atom pairs compared at once by :func:`backbone_contact_pairs`.
_BLOCK_ENTRIES = 1 << 22
#: (5, 5) bool: atom pairs of residue i (rows) and i + 1 (columns) of one
#: segment more than three bonds apart (O(i)-O(i+1) is five; C(i)-N(i+1) is
#: the peptide bond; OXT only ends a segment).
_NEIGHBOUR_PAIRS = torch.tensor([
    # N'     CA'    C'     O'     OXT'
    [False, True, True, True, False],  # N
    [False, False, True, True, False],  # CA
    [False, False, False, True, False],  # C
    [False, False, True, True, False],  # O
    [False, False, False, False, False],  # OXT
])


def backbone_contact_pairs(atoms: torch.Tensor, protein: ProteinTopology, search: float = CONTACT_SEARCH):
    """Backbone atom pairs that may overlap: (3, P) indices (frame, atom, atom) into (F, 5 R) backbone atoms.

    Atom ``5 r + k`` is backbone atom ``k`` (:data:`_BACKBONE`) of residue
    ``r``; pairs of atoms that exist, more than three bonds apart, within
    ``search`` Angstrom of each other. Rows of atoms are compared in blocks
    of about :data:`_BLOCK_ENTRIES` pairs, so memory stays bounded for large
    proteins.
    """
    n_res, dev = atoms.shape[1], atoms.device
    k = len(_BACKBONE)
    n_atoms = k * n_res
    backbone = atoms[:, :, _BACKBONE].reshape(atoms.shape[0], n_atoms, 3)
    residue = torch.arange(n_res, device=dev).repeat_interleave(k)
    kind = torch.arange(k, device=dev).repeat(n_res)
    segment = torch.as_tensor(protein.segment, device=dev).repeat_interleave(k)
    exists = torch.as_tensor(protein.slot_mask[:, _BACKBONE], device=dev).reshape(-1)
    neighbours = _NEIGHBOUR_PAIRS.to(dev)
    block = max(1, _BLOCK_ENTRIES // n_atoms)
    found = []
    for first in range(0, n_atoms, block):
        rows = slice(first, first + block)
        step = residue[None, :] - residue[rows, None]
        apart = (step >= 2) | ((step >= 1) & (segment[rows, None] != segment[None, :]))
        apart |= (step == 1) & neighbours[kind[rows, None], kind[None, :]]
        apart &= exists[rows, None] & exists[None, :]
        for f in range(backbone.shape[0]):
            i, j = torch.nonzero((torch.cdist(backbone[f, rows], backbone[f]) < search) & apart, as_tuple=True)
            found.append(torch.stack([torch.full_like(i, f), i + first, j]))
    return torch.cat(found, 1)


def backbone_contact_loss(atoms: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(F,) sum over the pairs of :data:`CONTACT_WEIGHT` x (shortfall below :data:`CONTACT_DISTANCE`)^2."""
    backbone = atoms[:, :, _BACKBONE].reshape(atoms.shape[0], -1, 3)
    f, i, j = pairs
    d = (backbone[f, i] - backbone[f, j]).norm(dim=-1)
    penalty = CONTACT_WEIGHT * torch.relu(CONTACT_DISTANCE - d) ** 2
    return torch.zeros(atoms.shape[0], dtype=atoms.dtype, device=atoms.device).index_add(0, f, penalty)


def settle_on_beads(atoms: torch.Tensor, protein: ProteinTopology, beads: torch.Tensor,
                    bead_positions: Callable[[torch.Tensor], torch.Tensor], steps: int = SETTLE_STEPS) -> torch.Tensor:
    """Move the C-alpha trace and chi angles until the structure's beads lie on ``beads``.

    Parameters
    ----------
    atoms : torch.Tensor
        (F, R, N_SLOTS, 3) built heavy atoms (side chains in ideal geometry,
        as the builders make them).
    protein : ProteinTopology
    beads : torch.Tensor
        (F, R, 3) the input beads.
    bead_positions : callable
        (F, R, N_SLOTS, 3) atoms -> (F, R, 3) beads, as the input was made
        (differentiable).
    steps : int
        Gradient steps.

    Returns
    -------
    torch.Tensor
        (F, R, N_SLOTS, 3): per frame the step (the input included) whose
        beads lie closest to ``beads`` (sum of squares) with the least backbone
        contact penalty (:func:`backbone_contact_loss`) added, with its backbone
        fitted (:func:`~backmap_plugin.build.backbone.fit_backbone`) and the
        side-chain clashes the moves made relieved
        (:func:`~backmap_plugin.build.ideal.relieve_clashes`).
    """
    layout = protein.backbone_layout
    dev = atoms.device
    side = [s for s in chem.BUILD_ORDER if s >= chem.SLOT_CB]
    # (tensors of the autograd graph must not be made in inference mode, which the builders run in)
    with torch.inference_mode(False), torch.enable_grad():
        rt = torch.as_tensor(protein.res_type, device=dev)
        mask = torch.as_tensor(protein.slot_mask, device=dev)
        same = torch.as_tensor(protein.segment[1:] == protein.segment[:-1], device=dev)
        turnable = torch.as_tensor(TURNABLE_CHIS[protein.res_type], device=dev)
        start = atoms.detach().clone()
        target = beads.detach().clone()
        dofs = {k: v.detach() for k, v in backbone_dofs(start, layout).items()}
        chis = torch.nan_to_num(chi_angles(start, rt)).detach()
        ca0 = start[..., chem.SLOT_CA, :]
        bond0 = (ca0[:, 1:] - ca0[:, :-1]).norm(dim=-1)
        ca, turn = ca0.clone(), torch.zeros_like(chis)
        adam = Adam([ca, turn])
        best_ca, best_turn = ca0.clone(), torch.zeros_like(chis)
        best = torch.full(atoms.shape[:1], float("inf"), dtype=atoms.dtype, device=dev)
        pairs = backbone_contact_pairs(start, protein)

        def rebuild(trace, turned, fit):
            backbone = build_backbone(trace, layout, protein.res_type, dofs)
            if fit:
                backbone = fit_backbone(backbone, layout)
            internal = side_chain_internal(protein.res_type, chis + turned * turnable)
            return build_residues(backbone, internal, rt, slots=side)[..., : chem.N_SLOTS, :] * mask[..., None]

        # the backbone fit moves N, C, O by hundredths: left out of the steps (its gradient is most of their
        # cost) and applied to the result
        for _ in range(steps + 1):
            ca.requires_grad_(True)
            turn.requires_grad_(True)
            built = rebuild(ca, turn, fit=False)
            miss = (target - bead_positions(built)).pow(2).sum(-1)  # (F, R)
            contact = backbone_contact_loss(built, pairs)
            score = (miss.sum(-1) + contact).detach()
            better = score < best
            best = torch.where(better, score, best)
            best_ca = torch.where(better[:, None, None], ca.detach(), best_ca)
            best_turn = torch.where(better[:, None, None], turn.detach(), best_turn)
            bond = (ca[:, 1:] - ca[:, :-1]).norm(dim=-1)
            loss = (miss.sum(-1) + contact + TRACE_STIFFNESS * ((bond - bond0) ** 2 * same).sum(-1)
                    + CHI_RESTRAINT * ((1 - torch.cos(turn)) * turnable).sum((-1, -2)))
            adam.step(torch.autograd.grad(loss.sum(), [ca, turn]), SETTLE_STEP_SIZE)
        with torch.no_grad():
            kept = relieve_clashes(rebuild(best_ca, best_turn, fit=True), protein)
    return kept
