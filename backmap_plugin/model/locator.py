"""Where the C-alpha atoms are, from beads that are not C-alpha atoms.

A locator reads a trace of residue beads (centres of mass, with C-alpha
beads where a mapping says so), and returns the C-alpha trace the all-atom
structure is built on. It predicts each offset as coordinates in the
residue's local frame of the bead trace, so the located trace turns and
moves with the beads; C-alpha beads are returned as they are. Two kinds:
:class:`BeadLocator`, equivariant message passing (e3nn) over the residues
within a cut-off, and :class:`PerceptronLocator`, a small perceptron on
each residue's neighbours along the chain.
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



#: Beads either side of a residue whose offsets (and kinds) are features of :class:`PerceptronLocator`.
NEIGHBOURS = (-3, -2, -1, 1, 2, 3)
#: Length unit of the perceptron locators' features, Angstrom.
FEATURE_SCALE = 5.0
N_TYPES = len(chem.RESIDUE_NAMES)
#: Frame kinds: inside a segment, first residue, last residue.
N_KINDS = 3
#: Size of :func:`chain_context`.
CONTEXT = 3 * N_TYPES + N_KINDS
FEATURES = 5 * len(NEIGHBOURS) + 1 + CONTEXT


def perceptron(n_in: int, hidden: int) -> nn.Sequential:
    """Two hidden layers of ``hidden`` SiLU units and three outputs (an offset in a residue's local frame)."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3))


def chain_context(batch: G.ResidueBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Each residue's place in its chain, as the perceptron locators read it.

    Parameters
    ----------
    batch : ResidueBatch
        Trace, residue types, mask and segments.

    Returns
    -------
    context : torch.Tensor
        (G, L, CONTEXT): one-hot residue types of the residue and of its
        neighbours before and after (zero where there is none), one-hot
        frame kind (inside a segment, first, last).
    located : torch.Tensor
        (G, L) bool: a real residue whose local frame
        (:func:`~backmap_plugin.model.graph.local_frames`) comes from its
        segment's beads (segments of one or two residues have none).
    """
    dtype = batch.beads.dtype
    one_hot = nn.functional.one_hot(batch.res_type, N_TYPES).to(dtype) * batch.mask[..., None]
    parts, near = [one_hot], {}
    for k in (-1, 1):
        idx, near[k] = G.neighbour_along(batch, k)
        parts.append(G.take_along(one_hot, idx) * near[k][..., None])
    inside, first, last = near[-1] & near[1], ~near[-1] & near[1], near[-1] & ~near[1]
    parts.append(torch.stack([inside, first, last], -1).to(dtype))
    located = inside | (first & G.neighbour_along(batch, 2)[1]) | (last & G.neighbour_along(batch, -2)[1])
    return torch.cat(parts, -1), located


def trace_features(batch: G.ResidueBatch, is_com: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Invariant features of every residue of a bead trace, its local frame and whether the frame is defined.

    Parameters
    ----------
    batch : ResidueBatch
        Bead trace (``beads`` (G, L, 3)), residue types, mask and segments.
    is_com : torch.Tensor
        (G, L) bool, the bead is a centre of mass (else a C-alpha atom).

    Returns
    -------
    features : torch.Tensor
        (G, L, FEATURES): offsets of the beads in :data:`NEIGHBOURS` from the
        residue's bead in its frame (:func:`~backmap_plugin.model.graph.local_frames`),
        in units of :data:`FEATURE_SCALE`, each with a flag that it exists and
        its kind; the residue's own kind; :func:`chain_context`.
    frames : torch.Tensor
        (G, L, 3, 3) rows e1, e2, e3.
    located : torch.Tensor
        (G, L) bool, as :func:`chain_context` gives it.
    """
    x = batch.beads
    frames = G.local_frames(batch)
    kind = is_com.to(x.dtype)[..., None]
    parts = []
    for k in NEIGHBOURS:
        idx, has = G.neighbour_along(batch, k)
        keep = has[..., None].to(x.dtype)
        local = torch.einsum("glc,gldc->gld", G.take_along(x, idx) - x, frames) / FEATURE_SCALE
        parts += [local * keep, keep, G.take_along(kind, idx) * keep]
    context, located = chain_context(batch)
    return torch.cat(parts + [kind, context], -1), frames, located


class PerceptronLocator(nn.Module):
    """Perceptron: bead trace -> C-alpha trace, from each residue's neighbourhood along the chain.

    It predicts each centre-of-mass bead's C-alpha offset in the residue's
    local frame of the bead trace from :func:`trace_features` (the beads
    three residues either side, residue types), so the located trace turns
    and moves with the beads; C-alpha beads, and residues without a frame,
    are returned as they are. A few microseconds per residue, against the
    message passing of :class:`BeadLocator`.

    Parameters
    ----------
    hidden : int
        Units of each of the two hidden layers.
    """

    def __init__(self, hidden: int = 256):
        super().__init__()
        self.net = perceptron(FEATURES, hidden)

    def forward(self, batch: G.ResidueBatch, is_com: torch.Tensor) -> torch.Tensor:
        """C-alpha positions (G, L, 3) of a batch whose ``beads`` are the CG beads (as :meth:`BeadLocator.forward`)."""
        features, frames, located = trace_features(batch, is_com)
        offset = torch.einsum("gld,gldc->glc", self.net(features), frames)
        moves = (is_com & located & batch.mask)[..., None].to(offset.dtype)
        return batch.beads + offset * moves
