"""Where the C-alpha atoms are, from beads that are not C-alpha atoms.

A :class:`BeadLocator` reads a trace of residue beads (centres of mass,
with C-alpha beads where a mapping says so), and returns the C-alpha trace
the all-atom structure is built on. The network is equivariant (e3nn): it
predicts each offset as coordinates in the residue's local frame of the
bead trace, so the located trace turns and moves with the beads. C-alpha
beads are returned as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from backmap_plugin.core import chemistry as chem
from backmap_plugin.model import graph as G
from backmap_plugin.model.networks import EquivariantNet


class BeadLocator(nn.Module):
    """Equivariant net: bead trace -> C-alpha trace.

    Parameters
    ----------
    type_dim : int
        Residue-type embedding size.
    scalars, vectors, layers : int
        Sizes of the :class:`~backmap_plugin.model.networks.EquivariantNet`.
    k : int
        Neighbours per residue.
    cutoff : float
        Neighbour cut-off, Angstrom.
    """

    def __init__(self, type_dim: int = 16, scalars: int = 32, vectors: int = 8, layers: int = 3, k: int = 12,
                 cutoff: float = 14.0):
        super().__init__()
        self.k, self.cutoff = k, cutoff
        self.type_embed = nn.Embedding(len(chem.RESIDUE_NAMES), type_dim)
        self.net = EquivariantNet(type_dim + G.NODE_GEOMETRY + 1, 2, 3, scalars=scalars, vectors=vectors, layers=layers)

    def forward(self, batch: G.ResidueBatch, is_com: torch.Tensor) -> torch.Tensor:
        """C-alpha positions (G, L, 3) of a batch whose ``beads`` are the CG beads.

        Parameters
        ----------
        batch : ResidueBatch
            Bead trace (``batch.beads``), residue types, segments.
        is_com : torch.Tensor
            (G, L) bool, the bead is not the C-alpha (it is moved); C-alpha
            beads are kept.
        """
        frames = G.local_frames(batch)
        flag = is_com.to(batch.beads.dtype)[..., None]
        scalars = torch.cat([self.type_embed(batch.res_type), G.node_geometry(batch), flag], -1)
        nb = G.neighbours(batch, frames, self.k, self.cutoff)
        local = self.net(scalars, G.frame_vectors(frames), nb)
        offset = torch.einsum("gld,gldc->glc", local, frames)
        return batch.beads + offset * flag * batch.mask[..., None]
