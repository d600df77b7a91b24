"""Side chains built once and carried with their residues' frames while a fit moves the backbone.

Everything NeRF builds on a residue's (CA, N, C) with fixed internal
coordinates is rigid in the frame in which it places CB
(:func:`backmap_plugin.core.geometry.nerf_frame`), whatever N-CA-C's angle;
proline's CD, which hangs on N, is the one exception. A fit that moves
the C-alpha trace and turns chi angles (the joint fit of
:mod:`backmap_plugin.build.martini`) therefore builds the side chains once,
and at each step turns them about their chi bonds
(:class:`backmap_plugin.build.chi_turns.ChiTurner`) and carries them with the
frame: the atoms that building them again would give (to rounding), at a
fraction of the cost of NeRF's slot-by-slot build and its gradient. (The
centre-of-mass settling, :mod:`backmap_plugin.build.settle`, was tried
with it: slower there, in float32, so it rebuilds.)
Lengths in Angstrom, angles in radians.
"""

from __future__ import annotations

import numpy as np
import torch

from backmap_plugin.build.chi_turns import ChiTurner
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.geometry import build_residues, nerf_frame, place_atom
from backmap_plugin.core.topology import ProteinTopology


def residue_frame(n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(..., R, 3, 3): the frame of (CA, N, C) (each (..., R, 3)) in which NeRF places CB, hence every side-chain
    atom."""
    return torch.stack(nerf_frame(ca, n, c), -2)


class CarriedSideChains:
    """Side chains of a built structure, turned and carried onto other backbones.

    Parameters
    ----------
    backbone : torch.Tensor
        (F, R, N_SLOTS, 3) with N, CA, C placed.
    protein : ProteinTopology
    internal : torch.Tensor
        (F, R, N_SLOTS, 3) internal coordinates of the side chains
        (:func:`backmap_plugin.build.ideal.side_chain_internal`).
    """

    def __init__(self, backbone: torch.Tensor, protein: ProteinTopology, internal: torch.Tensor):
        dev = backbone.device
        rt = torch.as_tensor(protein.res_type, device=dev)
        built = build_residues(backbone, internal, rt, slots=chem.SIDE_CHAIN_BUILD_ORDER)[..., : chem.N_SLOTS, :]
        offset = built - built[..., chem.SLOT_CA, None, :]
        self.shape = built.shape
        self.local = torch.einsum("frkc,frsc->frsk", self.frame(backbone), offset).flatten(0, 1)
        self.turner = ChiTurner(self.local, rt.repeat(built.shape[0]))
        self.side = torch.as_tensor(chem.SIDE_CHAIN_SLOTS, device=dev)
        # slots placed from N (proline's CD): placed again on every backbone
        side_slots = np.asarray(chem.SIDE_CHAIN_BUILD_ORDER, dtype=np.int64)
        res, slot = np.nonzero(chem.ZMATRIX_PARENTS[protein.res_type][:, side_slots, 0] == chem.SLOT_N)
        slot = side_slots[slot]
        self.ring_parents = torch.as_tensor(chem.ZMATRIX_PARENTS[protein.res_type[res], slot], device=dev)
        self.ring_internal = internal[:, res, slot]  # (F, P, 3)
        self.ring_res = torch.as_tensor(res, device=dev)
        self.ring_slot = torch.as_tensor(slot, device=dev)
        carried = np.broadcast_to(chem.SIDE_CHAIN_SLOTS, protein.res_type.shape + (chem.N_SLOTS,)).copy()
        carried[res, slot] = False
        self.carried = torch.as_tensor(carried, device=dev)  # (R, N_SLOTS): side-chain slots carried rigidly

    @staticmethod
    def frame(backbone: torch.Tensor) -> torch.Tensor:
        """(F, R, 3, 3): the frames of ``backbone`` (F, R, N_SLOTS, 3) in which the side chains are carried
        (:func:`residue_frame`): a side chain's atoms are ``CA + local @ frame``."""
        atom = backbone.unbind(-2)
        return residue_frame(atom[chem.SLOT_N], atom[chem.SLOT_CA], atom[chem.SLOT_C])

    def turn(self, turn: torch.Tensor) -> torch.Tensor:
        """(F, R, N_SLOTS, 3) the side chains in their residues' frames, turned by ``turn`` (F, R, 4) radians."""
        return self.turner(turn.flatten(0, 1)).view(self.shape)

    def carry(self, backbone: torch.Tensor, turned: torch.Tensor) -> torch.Tensor:
        """Atoms (F, R, N_SLOTS, 3): ``backbone``'s N, CA, C, O (and what else it holds outside the side chain)
        with the side chains ``turned`` (from :meth:`turn`) carried onto it. Differentiable in both.

        A fit that differentiates only in the backbone (its chi derivatives in
        closed form, :class:`backmap_plugin.build.chi_turns.ChiLevers`) turns
        without gradients and carries with them; one turn serves every
        backbone the side chains are carried onto."""
        moved = backbone[..., chem.SLOT_CA, None, :] + torch.einsum("frsk,frkc->frsc", turned, self.frame(backbone))
        atoms = torch.where(self.side[:, None], moved, backbone[..., : chem.N_SLOTS, :])
        if len(self.ring_res):
            abc = atoms[:, self.ring_res[:, None], self.ring_parents]  # (F, P, 3, 3)
            ring = place_atom(abc[..., 0, :], abc[..., 1, :], abc[..., 2, :], *self.ring_internal.unbind(-1))
            atoms = atoms.clone()
            atoms[:, self.ring_res, self.ring_slot] = ring
        return atoms

    def means(self, n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor, frame: torch.Tensor, turned: torch.Tensor,
              weights: torch.Tensor) -> torch.Tensor:
        """Weighted sums (F, R, B, 3) of the side-chain atoms ``turned`` (from :meth:`turn`) carried onto a backbone.

        The same as ``einsum("rbs,frsc->frbc", weights, carry(backbone, turned))``
        over the side-chain slots, without making the atoms: a carried slot's
        share is its residue's frame applied to the weighted sum of the turned
        atoms, so a fit differentiates through (F, R, B, 3) sums instead of
        (F, R, N_SLOTS, 3) atoms.

        Parameters
        ----------
        n, ca, c : torch.Tensor
            (F, R, 3) backbone atoms (e.g. from
            :func:`~backmap_plugin.build.backbone.backbone_atoms`); differentiable.
        frame : torch.Tensor
            (F, R, 3, 3) their :func:`residue_frame`.
        turned : torch.Tensor
            (F, R, N_SLOTS, 3).
        weights : torch.Tensor
            (R, B, N_SLOTS); weights of slots outside the side chain are ignored.
        """
        w = weights * self.carried[:, None].to(weights.dtype)
        local = torch.einsum("rbs,frsk->frbk", w, turned)
        out = w.sum(-1)[..., None] * ca[..., None, :] + torch.einsum("frbk,frkc->frbc", local, frame)
        if len(self.ring_res):
            r = self.ring_res
            side = self.side[self.ring_parents]  # (P, 3)
            on_backbone = torch.stack([n, ca, c], -2)[:, r[:, None], self.ring_parents.clamp(max=chem.SLOT_C)]
            carried = ca[:, r, None] + torch.einsum("fpqk,fpkc->fpqc", turned[:, r[:, None], self.ring_parents],
                                                    frame[:, r])
            abc = torch.where(side[..., None], carried, on_backbone)  # (F, P, 3, 3)
            ring = place_atom(abc[..., 0, :], abc[..., 1, :], abc[..., 2, :], *self.ring_internal.unbind(-1))
            share = weights[r, :, self.ring_slot]  # (P, B)
            out = out.index_add(1, r, share[..., None] * ring[:, :, None, :])
        return out
