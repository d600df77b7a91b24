"""Residue graphs of C-alpha traces: dense batches, local frames, invariant features.

Networks work on dense batches ``(G, L)`` (G graphs - crops in training,
frames at inference - of up to L residues, with a mask); geometry works on
the flat list of real residues. :class:`ResidueBatch` holds both views.

Every feature here is invariant to rotations and translations of the
trace: distances, angles, torsions and neighbour positions expressed in
each residue's local frame. Vectors for the equivariant networks are given
separately (``node_vectors``, ``edge_vectors``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from backmap_plugin.core import martini3 as m3
from backmap_plugin.core.cell_list import nearest_neighbours
from backmap_plugin.core.geometry import bond_angle, dihedral
from backmap_plugin.core.topology import BackboneLayout, backbone_layout, frame_segments

N_RBF = 16
RBF_MAX = 16.0
SEQ_CLASSES = 11  # |i-j| = 1..4 either direction (8), farther same segment, other segment, self
NODE_GEOMETRY = 12
BEAD_FEATURES = 5
#: Martini 3 bead features per residue: the offsets of BB, SC1 ... SC5 from the C-alpha (6 x 3).
MARTINI_BEAD_FEATURES = 18


@dataclass
class ResidueBatch:
    """A batch of residue graphs in dense and flat form.

    Attributes
    ----------
    beads : torch.Tensor
        (G, L, 3) C-alpha positions (Angstrom); zeros at padding.
    res_type : torch.Tensor
        (G, L) long residue types (0 at padding).
    mask : torch.Tensor
        (G, L) bool, real residues.
    segment : torch.Tensor
        (G, L) long segment ids, unique over the whole batch (-1 at padding).
    flat_res_type, flat_segment : numpy.ndarray
        (R,) over the real residues in (g, i) order.
    layout : BackboneLayout
        Peptide units and segment ends of the flat residues.
    bead_features : torch.Tensor or None
        (G, L, BEAD_FEATURES) where the CG beads sit relative to the C-alpha
        trace (:func:`bead_features`), for models that read beads other than
        C-alpha atoms; None for C-alpha beads.
    """

    beads: torch.Tensor
    res_type: torch.Tensor
    mask: torch.Tensor
    segment: torch.Tensor
    flat_res_type: np.ndarray
    flat_segment: np.ndarray
    layout: BackboneLayout
    bead_features: torch.Tensor | None = None

    @property
    def n_real(self) -> int:
        """Number of real residues."""
        return len(self.flat_res_type)

    def to_flat(self, x: torch.Tensor) -> torch.Tensor:
        """(G, L, ...) -> (R, ...) over real residues."""
        return x[self.mask]

    def to_dense(self, x: torch.Tensor) -> torch.Tensor:
        """(R, ...) -> (G, L, ...) with zeros at padding."""
        out = x.new_zeros(self.mask.shape + x.shape[1:])
        out[self.mask] = x
        return out


def _tensor(x, device) -> torch.Tensor:
    """A tensor on ``device`` from a tensor or any (possibly read-only) array."""
    return x.to(device) if torch.is_tensor(x) else torch.as_tensor(np.array(x), device=device)


def make_batch(beads: torch.Tensor, res_type, mask, segment) -> ResidueBatch:
    """Assemble a :class:`ResidueBatch`.

    Parameters
    ----------
    beads : torch.Tensor
        (G, L, 3) C-alpha positions.
    res_type, mask, segment : array
        (G, L) residue types, real-residue mask and segment ids (any ids;
        residues of one segment consecutive inside a graph).
    """
    device = beads.device
    res_type, mask, segment = (_tensor(x, device) for x in (res_type, mask, segment))
    res_type, mask, segment = res_type.long(), mask.bool(), segment.long()
    g_index = torch.arange(mask.shape[0], device=device)[:, None].expand_as(mask)
    # unique segment ids over the batch: (graph, segment) pairs
    key = (g_index * (int(segment.max().item()) + 2) + segment + 1)[mask].cpu().numpy()
    flat_graph = g_index[mask].cpu().numpy()
    change = np.ones(len(key), bool)
    change[1:] = key[1:] != key[:-1]
    flat_segment = np.cumsum(change) - 1
    frame = frame_segments(flat_segment, list(flat_graph))
    unique = torch.full(mask.shape, -1, dtype=torch.long, device=device)
    unique[mask] = torch.as_tensor(flat_segment, device=device)
    return ResidueBatch(
        beads=beads * mask[..., None],
        res_type=res_type * mask,
        mask=mask,
        segment=unique,
        flat_res_type=res_type[mask].cpu().numpy(),
        flat_segment=flat_segment,
        layout=backbone_layout(flat_segment, frame, res_type[mask].cpu().numpy()),
    )


def neighbour_along(batch: ResidueBatch, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of residue i+offset in the same segment (else i) and whether it exists."""
    length = batch.mask.shape[1]
    idx = torch.arange(length, device=batch.mask.device) + offset
    ok = (idx >= 0) & (idx < length)
    idx = idx.clamp(0, length - 1)
    same = (batch.segment[:, idx] == batch.segment) & batch.mask & ok
    idx = torch.where(same, idx.expand_as(batch.segment), torch.arange(length, device=idx.device).expand_as(batch.segment))
    return idx, same


def take_along(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (G, L, D), idx (G, L) -> (G, L, D)."""
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


def local_frames(batch: ResidueBatch) -> torch.Tensor:
    """Orthonormal frame of every residue from its C-alpha neighbours: (G, L, 3, 3), rows e1, e2, e3.

    Inside a segment e1 points along CA(i-1) -> CA(i+1) and e2 to the
    bisector of the virtual angle; the first residue uses CA(i+1), CA(i+2)
    and the last CA(i-1), CA(i-2) (e1 along the chain, e2 towards the second
    neighbour). So frames rotate with the trace and flip handedness under
    reflection. Only residues of two-residue segments fall back to a fixed
    axis for e2.
    """
    x = batch.beads
    ip, hp = neighbour_along(batch, -1)
    ip2, hp2 = neighbour_along(batch, -2)
    inx, hn = neighbour_along(batch, +1)
    inx2, hn2 = neighbour_along(batch, +2)
    prev, prev2, nxt, nxt2 = take_along(x, ip), take_along(x, ip2), take_along(x, inx), take_along(x, inx2)
    mid = (hp & hn)[..., None]
    first = (~hp & hn)[..., None]
    axis = torch.where(mid, nxt - prev, torch.where(first, nxt - x, x - prev))
    fallback = torch.zeros_like(x)
    fallback[..., 0] = 1.0
    axis = torch.where(axis.norm(dim=-1, keepdim=True) > 1e-3, axis, fallback)
    e1 = axis / axis.norm(dim=-1, keepdim=True)
    side = torch.where(mid, prev + nxt - 2 * x, torch.where(first, nxt2 - nxt, prev2 - prev))
    has_side = torch.where(mid[..., 0], True, torch.where(first[..., 0], hn2, hp2))[..., None]
    other = torch.zeros_like(x)
    other[..., 1] = 1.0
    other = torch.where(e1[..., 1:2].abs() > 0.9, torch.roll(other, 1, -1), other)
    side = torch.where(has_side, side, other)
    side = side - (side * e1).sum(-1, keepdim=True) * e1
    side = torch.where(side.norm(dim=-1, keepdim=True) > 1e-6, side, other - (other * e1).sum(-1, keepdim=True) * e1)
    e2 = side / side.norm(dim=-1, keepdim=True)
    e3 = torch.linalg.cross(e1, e2, dim=-1)
    return torch.stack([e1, e2, e3], dim=-2)


def node_geometry(batch: ResidueBatch) -> torch.Tensor:
    """Invariant per-residue geometry: (G, L, NODE_GEOMETRY).

    sin/cos of the virtual angle at i and of the virtual torsions
    CA(i-2..i+1) and CA(i-1..i+2) (zeros where undefined), the distances to
    CA(i-1) and CA(i+1) (scaled), and flags: has previous, has next.
    """
    x = batch.beads
    i1, h1 = neighbour_along(batch, -1)
    i2, h2 = neighbour_along(batch, -2)
    j1, k1 = neighbour_along(batch, +1)
    j2, k2 = neighbour_along(batch, +2)
    p1, p2, n1, n2 = take_along(x, i1), take_along(x, i2), take_along(x, j1), take_along(x, j2)
    theta = bond_angle(p1, x, n1)
    t_prev = dihedral(p2, p1, x, n1)
    t_next = dihedral(p1, x, n1, n2)
    ok_t = (h1 & k1).float()
    ok_p = (h2 & h1 & k1).float()
    ok_n = (h1 & k1 & k2).float()
    feats = [
        torch.sin(theta) * ok_t, torch.cos(theta) * ok_t,
        torch.sin(t_prev) * ok_p, torch.cos(t_prev) * ok_p,
        torch.sin(t_next) * ok_n, torch.cos(t_next) * ok_n,
        (x - p1).norm(dim=-1) / 3.8 * h1, (n1 - x).norm(dim=-1) / 3.8 * k1,
        h1.float(), k1.float(), ok_p, ok_n,
    ]
    return torch.stack(feats, -1) * batch.mask[..., None]


@dataclass
class Neighbours:
    """k nearest residues of every residue (same graph).

    Attributes
    ----------
    index : torch.Tensor
        (G, L, K) neighbour positions in the graph.
    mask : torch.Tensor
        (G, L, K) bool, real edge.
    vectors : torch.Tensor
        (G, L, K, 3) CA(j) - CA(i).
    features : torch.Tensor
        (G, L, K, N_RBF + 3) invariant: radial basis of the distance and the
        neighbour's position in i's local frame (/10 Angstrom).
    seq_class : torch.Tensor
        (G, L, K) long sequence-separation class.
    """

    index: torch.Tensor
    mask: torch.Tensor
    vectors: torch.Tensor
    features: torch.Tensor
    seq_class: torch.Tensor

    def nearest(self, k: int) -> Neighbours:
        """The ``k`` nearest of these neighbours (they are sorted by distance)."""
        if k >= self.index.shape[-1]:
            return self
        return Neighbours(*(getattr(self, f.name)[:, :, :k] for f in fields(self)))


def radial_basis(d: torch.Tensor) -> torch.Tensor:
    """Gaussian radial basis (N_RBF centres on [0, RBF_MAX])."""
    centres = torch.linspace(0.0, RBF_MAX, N_RBF, device=d.device, dtype=d.dtype)
    width = RBF_MAX / N_RBF
    return torch.exp(-(((d[..., None] - centres) / width) ** 2))


def neighbours(batch: ResidueBatch, frames: torch.Tensor, k: int, cutoff: float) -> Neighbours:
    """k nearest residues within ``cutoff`` Angstrom (self excluded), nearest first."""
    x = batch.beads
    k = min(k, max(1, x.shape[1] - 1))
    index, dist, mask = nearest_neighbours(x, k, cutoff, batch.mask)
    xj = torch.gather(x[:, None].expand(-1, x.shape[1], -1, -1), 2, index[..., None].expand(-1, -1, -1, 3))
    vectors = (xj - x[:, :, None]) * mask[..., None]
    local = torch.einsum("glkc,gldc->glkd", vectors, frames) / 10.0
    dist = torch.where(mask, dist, torch.zeros_like(dist))
    features = torch.cat([radial_basis(dist) * mask[..., None], local], -1)
    seg_i = batch.segment[:, :, None]
    seg_j = torch.gather(batch.segment, 1, index.flatten(1)).view_as(index)
    sep = index - torch.arange(x.shape[1], device=x.device)[None, :, None]
    same = seg_i == seg_j
    near = same & (sep.abs() <= 4) & (sep != 0)
    cls = torch.where(near, torch.where(sep < 0, sep + 4, sep + 3), torch.where(same, 8, 9))
    cls = torch.where(mask, cls, 10)
    return Neighbours(index, mask, vectors, features, cls)


def gather_neighbours(h: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """h (G, L, D), index (G, L, K) -> (G, L, K, D)."""
    g, length, k = index.shape
    return torch.gather(h, 1, index.reshape(g, length * k)[..., None].expand(-1, -1, h.shape[-1])).view(g, length, k, -1)


def frame_vectors(frames: torch.Tensor) -> torch.Tensor:
    """The frame axes e1, e2 as equivariant node vectors (G, L, 2, 3)."""
    return frames[..., :2, :]


def bead_features(batch: ResidueBatch, beads: torch.Tensor, is_com: torch.Tensor) -> torch.Tensor:
    """Where each CG bead sits relative to its residue's C-alpha: (G, L, BEAD_FEATURES), invariant.

    The flag of a centre-of-mass bead, and for those the bead's offset from
    the C-alpha in the residue's local frame (:func:`local_frames` of the
    trace in ``batch``) and its length, in units of 3 Angstrom; zeros for
    C-alpha beads and padding.

    Parameters
    ----------
    batch : ResidueBatch
        The C-alpha trace.
    beads : torch.Tensor
        (G, L, 3) CG bead positions.
    is_com : torch.Tensor
        (G, L) bool, the bead is not the C-alpha.
    """
    frames = local_frames(batch)
    flag = (is_com & batch.mask).to(beads.dtype)[..., None]
    offset = torch.einsum("glc,gldc->gld", beads - batch.beads, frames) / 3.0
    return torch.cat([flag, offset, offset.norm(dim=-1, keepdim=True)], -1) * flag


def martini_bead_features(batch: ResidueBatch, beads: torch.Tensor) -> torch.Tensor:
    """Where each residue's Martini 3 beads sit relative to its C-alpha: (G, L, MARTINI_BEAD_FEATURES), invariant.

    The offsets of ``BB``, ``SC1`` ... ``SC5`` from the residue's C-alpha
    in its local frame (:func:`local_frames` of the trace in ``batch``), in
    units of 3 Angstrom; zeros for beads the residue type does not have and
    for padding.

    Parameters
    ----------
    batch : ResidueBatch
        The C-alpha trace.
    beads : torch.Tensor
        (G, L, 6, 3) bead positions in the order of
        :data:`backmap_plugin.core.martini3.MARTINI3_BEADS`; beads a
        residue type does not have are ignored.
    """
    frames = local_frames(batch)
    exists = torch.from_numpy(m3.BEAD_EXISTS.copy()).to(beads.device)[batch.res_type] & batch.mask[..., None]
    offset = torch.einsum("glbc,gldc->glbd", beads - batch.beads[..., None, :], frames) / 3.0
    return (offset * exists[..., None].to(beads.dtype)).flatten(-2)
