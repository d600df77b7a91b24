"""Settling a built structure onto its beads without changing its chemistry.

A structure built for beads that are not its C-alpha atoms (centres of
mass, Martini beads) misses them by a few tenths of an Angstrom: its side
chains come in discrete rotamers, and its C-alpha trace was placed before
they were chosen. :func:`settle_on_beads` keeps what the builder chose -
the peptide-plane orientations and terminal torsions (measured with
:func:`~backmap_plugin.build.backbone.backbone_dofs`), every bond length and
bond angle, each side chain's rotamer - and moves only the C-alpha trace and
the chi angles, by damped Gauss-Newton steps on the distance of each
residue's bead to its input bead (the bead's derivatives in closed form),
with the trace's bonded C-alpha distances kept; of the steps, the one whose
beads fit best with backbone atoms of residues apart in sequence kept from
overlapping is taken. The structure is rebuilt from those variables at
every step, so its chemistry stays exact.
Lengths in Angstrom, angles in radians.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from backmap_plugin.build.backbone import backbone_dofs, build_backbone, fit_backbone
from backmap_plugin.build.backbone_contacts import (
    CONTACT_DISTANCE,
    SLOTS,
    backbone_contact_loss,
    backbone_contact_pairs,
)
from backmap_plugin.build.chi_turns import ChiLevers
from backmap_plugin.build.ideal import constrain_trace, relieve_clashes, side_chain_internal
from backmap_plugin.build.relax import TURNABLE_CHIS
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.geometry import build_residues, chi_angles
from backmap_plugin.core.topology import ProteinTopology

#: Gauss-Newton steps; their damping per Angstrom^2 of a residue's translation and per radian^2 of a chi
#: turn (relative to a bead's weight of 1); sweeps that bring bonded C-alpha atoms back to their distances.
SETTLE_STEPS = 5
TRANSLATION_DAMPING = 1.0
CHI_DAMPING = 0.3
BOND_SWEEPS = 5
#: Backbone contacts (:mod:`backmap_plugin.build.backbone_contacts`): pairs closer than
#: :data:`~backmap_plugin.build.backbone_contacts.CONTACT_DISTANCE` pay CONTACT_WEIGHT per Angstrom^2 of the
#: shortfall. Pairs are those closer than CONTACT_SEARCH in the structure as built (the steps move atoms by
#: tenths).
CONTACT_WEIGHT = 30.0
CONTACT_SEARCH = 4.5


def _contact_terms(atoms: torch.Tensor, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal-equation terms (F, R, 3, 3) and (F, R, 3) of the residues' translations from backbone contacts.

    Each pair closer than :data:`CONTACT_DISTANCE` asks its two residues to
    move apart along the pair's direction by half the shortfall each, at
    :data:`CONTACT_WEIGHT` (the other residue held where it is).
    """
    n_frames, n_res = atoms.shape[:2]
    backbone = atoms[:, :, SLOTS].reshape(n_frames, -1, 3)
    f, i, j = pairs
    v = backbone[f, i] - backbone[f, j]
    d = v.norm(dim=-1)
    close = d < CONTACT_DISTANCE  # (the others add nothing)
    f, i, j, v, d = f[close], i[close], j[close], v[close], d[close]
    short = CONTACT_DISTANCE - d
    e = v / d.clamp(min=1e-9)[:, None]
    outer = CONTACT_WEIGHT * e[:, :, None] * e[:, None, :]
    push = (CONTACT_WEIGHT * short / 2)[:, None] * e
    k = len(SLOTS)
    row_i = f * n_res + torch.div(i, k, rounding_mode="floor")
    row_j = f * n_res + torch.div(j, k, rounding_mode="floor")
    normal = atoms.new_zeros(n_frames * n_res, 3, 3).index_add(0, row_i, outer).index_add(0, row_j, outer)
    rhs = atoms.new_zeros(n_frames * n_res, 3).index_add(0, row_i, push).index_add(0, row_j, -push)
    return normal.view(n_frames, n_res, 3, 3), rhs.view(n_frames, n_res, 3)


def slot_weights(bead_positions: Callable[[torch.Tensor], torch.Tensor], atoms: torch.Tensor) -> torch.Tensor:
    """(R, N_SLOTS) weight of each atom slot in its residue's bead (``bead_positions`` is linear in the atoms)."""
    n_res, n_slots = atoms.shape[1:3]
    probe = torch.zeros((n_slots, n_res, n_slots, 3), dtype=atoms.dtype, device=atoms.device)
    probe[torch.arange(n_slots), :, torch.arange(n_slots), 0] = 1.0
    return bead_positions(probe)[..., 0].T  # (R, N_SLOTS)


def settle_on_beads(atoms: torch.Tensor, protein: ProteinTopology, beads: torch.Tensor,
                    bead_positions: Callable[[torch.Tensor], torch.Tensor], steps: int = SETTLE_STEPS) -> torch.Tensor:
    """Move the C-alpha trace and chi angles until the structure's beads lie on ``beads``.

    Each step is a Gauss-Newton step per residue on its bead's miss, with
    its bead's derivatives in closed form: a translation of the residue
    moves the bead with it, a turn of a chi angle moves the bead by
    ``w u x (c - o)`` (``w`` the bead's weight of the atoms beyond the chi
    bond, ``c`` their weighted centre, ``u`` and ``o`` the bond's direction
    and end). The C-alpha atoms move by the translations (damped by
    :data:`TRANSLATION_DAMPING`), bonded ones are then brought back to their
    starting distances, the chi angles turn (damped by :data:`CHI_DAMPING`),
    and the structure is rebuilt, so its chemistry stays exact.

    Parameters
    ----------
    atoms : torch.Tensor
        (F, R, N_SLOTS, 3) built heavy atoms (side chains in ideal geometry,
        as the builders make them).
    protein : ProteinTopology
    beads : torch.Tensor
        (F, R, 3) the input beads.
    bead_positions : callable
        (F, R, N_SLOTS, 3) atoms -> (F, R, 3) beads, as the input was made:
        a weighted mean of each residue's atoms (centre of mass, C-alpha).
    steps : int
        Gauss-Newton steps.

    Returns
    -------
    torch.Tensor
        (F, R, N_SLOTS, 3): per frame the step (the input included) whose
        beads lie closest to ``beads`` (sum of squares) with the least backbone
        contact penalty
        (:func:`~backmap_plugin.build.backbone_contacts.backbone_contact_loss`) added, with its backbone
        fitted (:func:`~backmap_plugin.build.backbone.fit_backbone`) and the
        side-chain clashes the moves made relieved
        (:func:`~backmap_plugin.build.ideal.relieve_clashes`).
    """
    layout = protein.backbone_layout
    dev, dtype = atoms.device, atoms.dtype
    n_frames, n_res = atoms.shape[:2]
    side = [s for s in chem.BUILD_ORDER if s >= chem.SLOT_CB]
    rt = torch.as_tensor(protein.res_type, device=dev)
    mask = torch.as_tensor(protein.slot_mask, device=dev)
    same = torch.as_tensor(protein.segment[1:] == protein.segment[:-1], device=dev)
    turnable = torch.as_tensor(TURNABLE_CHIS[protein.res_type], device=dev)
    weight = slot_weights(bead_positions, atoms)  # (R, S)
    levers = ChiLevers(rt.repeat(n_frames), weight.repeat(n_frames, 1)[:, None])
    damping = torch.diag(torch.tensor([TRANSLATION_DAMPING] * 3 + [CHI_DAMPING] * 4, dtype=dtype, device=dev))
    eye = torch.eye(3, dtype=dtype, device=dev).expand(n_frames, n_res, 3, 3)

    dofs = backbone_dofs(atoms, layout)
    chis = torch.nan_to_num(chi_angles(atoms, rt))
    ca = atoms[..., chem.SLOT_CA, :]
    bond0 = (ca[:, 1:] - ca[:, :-1]).norm(dim=-1, keepdim=True)
    pairs = backbone_contact_pairs(atoms, protein, CONTACT_SEARCH)

    def rebuild(trace, angles, fit):
        backbone = build_backbone(trace, layout, protein.res_type, dofs)
        if fit:
            backbone = fit_backbone(backbone, layout)
        internal = side_chain_internal(protein.res_type, angles)
        return build_residues(backbone, internal, rt, slots=side)[..., : chem.N_SLOTS, :] * mask[..., None]

    def beads_of(built):
        return (built * weight[..., None]).sum(-2)

    def score(built):
        contact = backbone_contact_loss(built[:, :, SLOTS], pairs, CONTACT_WEIGHT)
        return (beads - beads_of(built)).pow(2).sum((-1, -2)) + contact

    best, best_ca, best_chis = score(atoms), ca, chis
    built = atoms
    for _ in range(steps):
        miss = beads - beads_of(built)  # (F, R, 3)
        contact_normal, contact_rhs = _contact_terms(built, pairs)
        jac = levers.jacobian(built.flatten(0, 1)).view(n_frames, n_res, 4, 3)
        jac = jac * turnable[None, ..., None]  # (F, R, 4, 3): bead's move per radian
        a = torch.cat([eye, jac.transpose(-1, -2)], -1)  # (F, R, 3, 7)
        normal = a.transpose(-1, -2) @ a + damping
        rhs = (a.transpose(-1, -2) @ miss[..., None])[..., 0]
        normal[..., :3, :3] += contact_normal
        rhs[..., :3] += contact_rhs
        step = torch.linalg.solve(normal, rhs[..., None])[..., 0]
        ca = constrain_trace(ca + step[..., :3], same, BOND_SWEEPS, bond0)  # bonded distances as they started
        chis = chis + step[..., 3:] * turnable
        built = rebuild(ca, chis, fit=False)
        now = score(built)
        better = now < best
        best = torch.where(better, now, best)
        best_ca = torch.where(better[:, None, None], ca, best_ca)
        best_chis = torch.where(better[:, None, None], chis, best_chis)
    return relieve_clashes(rebuild(best_ca, best_chis, fit=True), protein)
