"""Where the C-alpha atoms are, from Martini 3 beads.

A Martini 3 ``BB`` bead is the centre of mass of N, CA, C and O, so it
misses its C-alpha by about 0.8 Angstrom, in a direction set by the
backbone's conformation. :class:`MartiniLocator` reads each residue's
beads and those of its neighbours in the residue's local frame of the BB
trace (:func:`backmap_plugin.model.graph.local_frames`) and predicts the
C-alpha's offset from its BB bead in that frame, so the located trace turns
and moves with the beads. It is a small multilayer perceptron: a few
microseconds per residue.

Residues whose frame is not defined by the beads (segments of one or two
residues) get no prediction (``located`` is False); the caller places them
another way.
"""

from __future__ import annotations

import torch
from torch import nn

from backmap_plugin.core import martini3 as m3
from backmap_plugin.model import graph as G
from backmap_plugin.model.locator import CONTEXT, FEATURE_SCALE, chain_context, perceptron

#: BB beads either side of a residue whose offsets are features.
NEIGHBOURS = (-2, -1, 1, 2)
FEATURES = 4 * len(NEIGHBOURS) + 3 * (m3.MAX_BEADS - 1) + 2 * 3 + CONTEXT


def locator_features(bb_trace: G.ResidueBatch, beads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Invariant features of every residue, its local frame and whether the frame is defined.

    Parameters
    ----------
    bb_trace : ResidueBatch
        The BB beads as the trace (``beads`` (G, L, 3)), residue types,
        mask and segments.
    beads : torch.Tensor
        (G, L, MAX_BEADS, 3) all beads in the order of
        :data:`backmap_plugin.core.martini3.MARTINI3_BEADS`; beads a residue
        type does not have are ignored.

    Returns
    -------
    features : torch.Tensor
        (G, L, FEATURES): offsets of the BB beads in :data:`NEIGHBOURS`
        (with a flag each), of the residue's side-chain beads and of its
        neighbours' first side-chain beads from the residue's BB bead, in
        its frame, in units of :data:`~backmap_plugin.model.locator.FEATURE_SCALE`;
        :func:`~backmap_plugin.model.locator.chain_context`.
    frames : torch.Tensor
        (G, L, 3, 3) rows e1, e2, e3.
    located : torch.Tensor
        (G, L) bool: a real residue whose frame comes from its segment's beads
        (:func:`~backmap_plugin.model.locator.chain_context`).
    """
    bb = bb_trace.beads
    frames = G.local_frames(bb_trace)
    exists = torch.from_numpy(m3.BEAD_EXISTS.copy()).to(bb.device)[bb_trace.res_type] & bb_trace.mask[..., None]

    def local(vectors, keep):
        return torch.einsum("glc,gldc->gld", vectors, frames) / FEATURE_SCALE * keep[..., None].to(bb.dtype)

    parts, near = [], {}
    for k in NEIGHBOURS:
        idx, has = G.neighbour_along(bb_trace, k)
        near[k] = (idx, has)
        parts += [local(G.take_along(bb, idx) - bb, has), has[..., None].to(bb.dtype)]
    for b in range(1, m3.MAX_BEADS):
        parts.append(local(beads[..., b, :] - bb, exists[..., b]))
    for k in (-1, 1):
        idx, has = near[k]
        side = G.take_along(beads[..., 1, :], idx)
        parts.append(local(side - bb, has & torch.gather(exists[..., 1], 1, idx)))
    context, located = chain_context(bb_trace)
    return torch.cat(parts + [context], -1), frames, located


class MartiniLocator(nn.Module):
    """Perceptron: Martini 3 beads -> C-alpha trace (see the module docstring).

    Parameters
    ----------
    hidden : int
        Units of each of the two hidden layers.
    """

    def __init__(self, hidden: int = 256):
        super().__init__()
        self.net = perceptron(FEATURES, hidden)

    def forward(self, bb_trace: G.ResidueBatch, beads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """C-alpha positions (G, L, 3) and ``located`` (G, L) (see :func:`locator_features`).

        Where ``located`` is False the BB bead is returned.
        """
        features, frames, located = locator_features(bb_trace, beads)
        offset = torch.einsum("gld,gldc->glc", self.net(features), frames)
        return bb_trace.beads + offset * located[..., None].to(offset.dtype), located
