"""Internal-coordinate geometry in torch: batched, differentiable, any device.

Coordinates are Angstrom, angles radians. Residue-level arrays use the slot
layout of :mod:`backmap_plugin.core.chemistry`: ``(..., R, N_SLOTS, 3)`` atom
coordinates, extended to ``(..., R, N_EXTENDED_SLOTS, 3)`` with the context
C-alpha atoms that the backbone N and C are built from. Internal coordinates
are ``(..., R, N_SLOTS, 3)``: bond length, bond angle and torsion of every
slot with respect to its Z-matrix parents.

Everything is vectorised over frames and residues; :func:`build_residues` is
sequential only over the atom slots inside a residue.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from backmap_plugin.core import chemistry as chem

_EPS = 1e-12


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.sqrt((v * v).sum(-1, keepdim=True) + _EPS)


def cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross product over the last axis, element by element (faster than ``torch.linalg.cross`` on small axes)."""
    a1, a2, a3 = a.unbind(-1)
    b1, b2, b3 = b.unbind(-1)
    return torch.stack([a2 * b3 - a3 * b2, a3 * b1 - a1 * b3, a1 * b2 - a2 * b1], -1)


def rotate_about_axis(points: torch.Tensor, origin: torch.Tensor, axis: torch.Tensor,
                      angle: torch.Tensor) -> torch.Tensor:
    """Rotate points about a line (Rodrigues' formula); leading axes broadcast.

    Parameters
    ----------
    points : torch.Tensor
        (..., A, 3).
    origin, axis : torch.Tensor
        (..., 3): a point of the line and its unit direction.
    angle : torch.Tensor
        (...) radians, right-handed about ``axis``.

    Returns
    -------
    torch.Tensor
        (..., A, 3).
    """
    v = points - origin[..., None, :]
    u = axis[..., None, :].expand_as(v)
    cos, sin = torch.cos(angle)[..., None, None], torch.sin(angle)[..., None, None]
    along = (u * v).sum(-1, keepdim=True) * u
    return origin[..., None, :] + v * cos + cross(u, v) * sin + along * (1 - cos)


def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance between points ``a`` and ``b`` (broadcast over leading axes)."""
    d = a - b
    return torch.sqrt((d * d).sum(-1) + _EPS)


def bond_angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Angle a-b-c at ``b`` in radians, computed with atan2 (accurate near 0 and pi)."""
    u, v = a - b, c - b
    cross = torch.linalg.cross(u, v, dim=-1)
    return torch.atan2(torch.sqrt((cross * cross).sum(-1) + _EPS), (u * v).sum(-1))


def dihedral(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Torsion angle a-b-c-d in radians (IUPAC sign, range (-pi, pi])."""
    b0, b1, b2 = a - b, c - b, d - c
    b1u = _unit(b1)
    v = b0 - (b0 * b1u).sum(-1, keepdim=True) * b1u
    w = b2 - (b2 * b1u).sum(-1, keepdim=True) * b1u
    x = (v * w).sum(-1)
    y = (torch.linalg.cross(b1u, v, dim=-1) * w).sum(-1)
    return torch.atan2(y, x)


def wrap_angle(angle: torch.Tensor) -> torch.Tensor:
    """Angles (radians) wrapped to [-pi, pi)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def place_atom(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    bond: torch.Tensor,
    angle: torch.Tensor,
    torsion: torch.Tensor,
) -> torch.Tensor:
    """Place X from parents by NeRF: ``|X-a| = bond``, ``angle(X,a,b)``, ``dihedral(X,a,b,c)``.

    Parameters
    ----------
    a, b, c : torch.Tensor
        Parent positions, shape (..., 3).
    bond, angle, torsion : torch.Tensor
        Shape (...): Angstrom and radians.

    Returns
    -------
    torch.Tensor
        Position of X, shape (..., 3).
    """
    bc, m, n = nerf_frame(a, b, c)
    sin_angle = torch.sin(angle)
    dx = -bond * torch.cos(angle)
    dy = bond * sin_angle * torch.cos(torsion)
    dz = bond * sin_angle * torch.sin(torsion)
    return a + dx[..., None] * bc + dy[..., None] * m + dz[..., None] * n


def nerf_frame(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The orthonormal axes in which :func:`place_atom` places a child of ``a`` (parents a, b, c).

    Everything built from (a, b, c) with fixed internal coordinates is
    ``a + sum_k local_k axis_k`` with ``local`` fixed: e.g. a residue's side
    chain in the frame of (CA, N, C), whatever its N-CA-C angle (proline's
    CD aside, which hangs on N).

    Parameters
    ----------
    a, b, c : torch.Tensor
        (..., 3).

    Returns
    -------
    tuple of torch.Tensor
        Three (..., 3) unit vectors: along a - b, the in-plane normal, the plane normal.
    """
    bc = _unit(a - b)
    n = _unit(torch.linalg.cross(b - c, bc, dim=-1))
    return bc, torch.linalg.cross(n, bc, dim=-1), n


def rigid_fit(points: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, bias: float = 0.0,
              centre: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted least-squares rotation and translation of point sets onto targets (Kabsch).

    Minimises ``sum_i w_i |rot (p_i - centre) + target_centre - t_i|^2 - bias
    trace(rot)``: the ``bias`` favours small rotations, so that sets that
    leave the rotation undetermined (one or two points, collinear points)
    are moved without turning, or turned least.

    Parameters
    ----------
    points, targets : torch.Tensor
        (..., N, 3).
    weights : torch.Tensor
        (..., N), not negative; a set needs a positive total (or ``bias``
        positive when ``centre`` is given).
    bias : float
        Weight (Angstrom^2) of the preference for the identity.
    centre : torch.Tensor, optional
        (..., 3) a point the motion keeps: a rotation about it, no
        translation (default: rotation about the weighted centre, which
        goes to the targets' weighted centre).

    Returns
    -------
    rotation : torch.Tensor
        (..., 3, 3) proper rotations.
    centre, target_centre : torch.Tensor
        (..., 3) weighted centres (or ``centre`` twice); a point moves to
        ``rotation @ (p - centre) + target_centre``.
    """
    if centre is None:
        total = weights.sum(-1, keepdim=True)
        centre = (weights[..., None] * points).sum(-2) / total
        target_centre = (weights[..., None] * targets).sum(-2) / total
    else:
        target_centre = centre
    h = torch.einsum("...n,...ni,...nj->...ij", weights, points - centre[..., None, :], targets - target_centre[..., None, :])
    h = h + bias * torch.eye(3, dtype=h.dtype, device=h.device)
    u, _, vt = torch.linalg.svd(h)
    v_ut = vt.transpose(-1, -2) @ u.transpose(-1, -2)
    flip = torch.ones(h.shape[:-1], dtype=h.dtype, device=h.device)
    flip[..., 2] = torch.sign(torch.linalg.det(v_ut))  # a reflection is turned into the nearest rotation
    return vt.transpose(-1, -2) @ (flip[..., None] * u.transpose(-1, -2)), centre, target_centre


def rotation_axis_angle(rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit axes (..., 3) and angles (...) in [0, pi] of rotations (..., 3, 3) (right-handed about the axis).

    The axis of a rotation by (nearly) 0 or pi is not determined by this formula; its angle is exact.
    """
    r = rotation
    skew = torch.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    sin = skew.norm(dim=-1) / 2
    cos = (r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return skew / (2 * sin).clamp(min=1e-12)[..., None], torch.atan2(sin, cos)


def context_indices(segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C-alpha neighbours that a residue's backbone N and C are built from.

    Within a segment, residue i uses CA(i-1) and CA(i+1); the first residue
    uses CA(i+1), CA(i+2); the last uses CA(i-1), CA(i-2). So every residue,
    termini included, has a full frame.

    Parameters
    ----------
    segment : numpy.ndarray
        (R,) segment index of every residue (residues of one segment are
        consecutive).

    Returns
    -------
    refs : numpy.ndarray
        (R, 4) residue indices for the context slots
        ``REF_N1, REF_N2, REF_C1, REF_C2``.
    valid : numpy.ndarray
        (R,) False for residues of segments shorter than 3 residues (their
        refs point to themselves and must not be used).
    """
    segment = np.asarray(segment)
    n = len(segment)
    idx = np.arange(n)
    same_prev = np.zeros(n, bool)
    same_prev[1:] = segment[1:] == segment[:-1]
    same_next = np.zeros(n, bool)
    same_next[:-1] = segment[1:] == segment[:-1]
    _, inverse, counts = np.unique(segment, return_inverse=True, return_counts=True)
    length = counts[inverse]
    valid = length >= 3
    refs = np.stack([idx, idx, idx, idx], axis=1)
    mid = same_prev & same_next & valid
    first = ~same_prev & valid
    last = ~same_next & valid
    refs[mid] = np.stack([idx - 1, idx + 1, idx + 1, idx - 1], 1)[mid]
    refs[first] = np.stack([idx + 1, idx + 2, idx + 1, idx + 2], 1)[first]
    refs[last] = np.stack([idx - 1, idx - 2, idx - 1, idx - 2], 1)[last]
    return refs, valid


def extend_with_context(atoms: torch.Tensor, refs: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Append the context C-alpha slots to residue atom coordinates.

    Parameters
    ----------
    atoms : torch.Tensor
        (..., R, N_SLOTS, 3); only the CA slot is read for the context.
    refs : array
        (R, 4) residue indices from :func:`context_indices`.

    Returns
    -------
    torch.Tensor
        (..., R, N_EXTENDED_SLOTS, 3).
    """
    refs = torch.as_tensor(refs, device=atoms.device, dtype=torch.long)
    ca = atoms[..., chem.SLOT_CA, :]  # (..., R, 3)
    context = ca[..., refs, :]  # (..., R, 4, 3)
    return torch.cat([atoms, context], dim=-2)


def _zmatrix(res_type: torch.Tensor, dtype: torch.dtype):
    device = res_type.device
    parents = torch.tensor(chem.ZMATRIX_PARENTS, device=device)[res_type]
    ideal = torch.tensor(chem.ZMATRIX_IDEAL, device=device, dtype=dtype)[res_type]
    return parents, ideal  # (R, N_SLOTS, 3) each


def _gather_slots(ext: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """ext (..., R, S, 3), index (R, K) -> (..., R, K, 3)."""
    idx = index.expand(ext.shape[:-2] + index.shape[-1:])[..., None].expand(
        ext.shape[:-2] + (index.shape[-1], 3)
    )
    return torch.gather(ext, -2, idx)


def cartesian_to_internal(ext: torch.Tensor, res_type: torch.Tensor) -> torch.Tensor:
    """Internal coordinates of every atom slot from extended coordinates.

    Parameters
    ----------
    ext : torch.Tensor
        (..., R, N_EXTENDED_SLOTS, 3), see :func:`extend_with_context`.
    res_type : torch.Tensor
        (R,) residue type indices (:data:`chemistry.RESIDUE_INDEX`).

    Returns
    -------
    torch.Tensor
        (..., R, N_SLOTS, 3): bond length, bond angle, torsion. Slots that a
        residue does not have hold values computed from placeholder parents;
        mask them with :data:`chemistry.SLOT_EXISTS`.
    """
    parents, _ = _zmatrix(res_type, ext.dtype)
    x = ext[..., : chem.N_SLOTS, :]
    a = _gather_slots(ext, parents[..., 0])
    b = _gather_slots(ext, parents[..., 1])
    c = _gather_slots(ext, parents[..., 2])
    return torch.stack(
        [distance(x, a), bond_angle(x, a, b), dihedral(x, a, b, c)], dim=-1
    )


def build_residues(
    ext: torch.Tensor,
    internal: torch.Tensor,
    res_type: torch.Tensor,
    slots=chem.BUILD_ORDER,
) -> torch.Tensor:
    """Build atom slots from internal coordinates (NeRF), all residues at once.

    Parameters
    ----------
    ext : torch.Tensor
        (..., R, N_EXTENDED_SLOTS, 3) with every parent of the built slots
        already placed (at least CA and the context slots).
    internal : torch.Tensor
        (..., R, N_SLOTS, 3) bond, angle, torsion per slot; leading axes
        broadcast against those of ``ext``.
    res_type : torch.Tensor
        (R,) residue types.
    slots : sequence of int
        Slots to build, in an order where parents come first (default: all
        of :data:`chemistry.BUILD_ORDER`).

    Returns
    -------
    torch.Tensor
        New (..., R, N_EXTENDED_SLOTS, 3) tensor; differentiable in ``ext``
        and ``internal``.
    """
    parents = chem.ZMATRIX_PARENTS[np.asarray(res_type.cpu() if torch.is_tensor(res_type) else res_type)]
    batch = torch.Size(np.broadcast_shapes(ext.shape[:-2], internal.shape[:-2]))
    ext = ext.expand(batch + ext.shape[-2:])
    internal = internal.expand(batch + internal.shape[-2:])
    # per-slot views (unbind, not indexing: the gradient of an indexed slot would be a full-size tensor each)
    columns = list(ext.unbind(-2))
    values = internal.unbind(-2)
    for s in slots:
        a, b, c = (_parent_column(columns, parents[:, s, k]) for k in range(3))
        columns[s] = place_atom(a, b, c, *values[s].unbind(-1))
    return torch.stack(columns, dim=-2)


def _parent_column(columns: list, index: np.ndarray) -> torch.Tensor:
    """(..., R, 3): residue r's atom in slot ``index[r]``, from per-slot columns (..., R, 3).

    Only the slots that occur in ``index`` are read (most often one for all
    residues), so building a slot costs the same whatever the residue's size.
    """
    used, local = np.unique(index, return_inverse=True)
    if len(used) == 1:
        return columns[used[0]]
    stacked = torch.stack([columns[u] for u in used], dim=-2)  # (..., R, U, 3)
    pick = torch.as_tensor(local.reshape(-1), device=stacked.device)[:, None, None]
    return torch.gather(stacked, -2, pick.expand(stacked.shape[:-2] + (1, 3))).squeeze(-2)


def ideal_internal(res_type: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Ideal internal coordinates per slot, NaN where conformation-dependent.

    Parameters
    ----------
    res_type : torch.Tensor
        (R,) residue types.

    Returns
    -------
    torch.Tensor
        (R, N_SLOTS, 3) bond, angle, torsion.
    """
    return _zmatrix(res_type, dtype)[1].clone()


def chi_angles(atoms: torch.Tensor, res_type: torch.Tensor) -> torch.Tensor:
    """Chi angles of every residue.

    Parameters
    ----------
    atoms : torch.Tensor
        (..., R, N_SLOTS, 3).
    res_type : torch.Tensor
        (R,).

    Returns
    -------
    torch.Tensor
        (..., R, 4); mask with :data:`chemistry.CHI_EXISTS`.
    """
    idx = torch.tensor(chem.CHI_ATOMS, device=atoms.device)[res_type]  # (R,4,4)
    pts = [_gather_slots(atoms, idx[..., k]) for k in range(4)]
    return dihedral(*pts)
