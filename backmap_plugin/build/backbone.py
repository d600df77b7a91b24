"""Backbone N, C, O from a C-alpha trace with rigid ideal peptide planes.

Each peptide unit CA(i)-C(i)(=O(i))-N(i+1)-CA(i+1) is planar and trans with
Engh & Huber geometry, so once the two C-alpha atoms are known its atoms are
fixed up to one angle: the rotation of the plane about the CA-CA axis. That
angle is looked up in a table indexed by the local shape of the trace (the
virtual angles at CA(i) and CA(i+1) and the virtual torsion
CA(i-1)..CA(i+2)), the idea of the BBQ method (Gront, Kmiecik & Kolinski
2007). Where a neighbour is missing (segment ends) the table has an
"unknown" bin, so every peptide of every segment of two or more residues is
built. The table is derived from the training corpus by
``workflows/tables/build_backbone_table.py`` and ships as package data.

The N of a segment's first residue and the C and O of its last are placed
by NeRF with typical psi / phi values stored with the table.

Angles are radians, lengths Angstrom; all functions are torch and batched
over leading axes.
"""

from __future__ import annotations

import functools
import math
from importlib import resources

import numpy as np
import torch

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.geometry import bond_angle, dihedral, place_atom
from backmap_plugin.core.topology import BackboneLayout

THETA_MIN, THETA_MAX, THETA_BINS = math.radians(70.0), math.radians(155.0), 17
TORSION_BINS = 36
MIN_PEPTIDE_LENGTH = 3.4  # shorter CA-CA peptides are cis (ignored for the table)


def _peptide_unit(omega: float, ca_c_n: float, c_n_ca: float) -> dict[str, float]:
    """Coordinates of C, N, O in the peptide plane frame of CA(i), CA(i+1).

    The frame has u along CA(i)->CA(i+1) and w perpendicular in the plane,
    pointing to the side of C; ``omega`` is the CA-C-N-CA torsion and the
    two angles (degrees) those at C and N.
    """
    d = torch.float64
    ca0 = torch.tensor([0.0, 0.0, 0.0], dtype=d)
    x = torch.tensor([1.0, 0.0, 0.0], dtype=d)
    y = torch.tensor([0.0, 1.0, 0.0], dtype=d)
    t = lambda v: torch.tensor(v, dtype=d)  # noqa: E731
    c = ca0 + chem.BOND_CA_C * x
    n = place_atom(c, ca0, y, t(chem.BOND_C_N), t(math.radians(ca_c_n)), t(0.0))
    ca1 = place_atom(n, c, ca0, t(chem.BOND_N_CA), t(math.radians(c_n_ca)), t(omega))
    o_angle = 2 * math.pi - math.radians(chem.ANGLE_CA_C_O) - math.radians(ca_c_n)
    o = place_atom(c, n, ca1, t(chem.BOND_C_O), t(o_angle), t(0.0))
    e1 = (ca1 - ca0) / torch.linalg.norm(ca1 - ca0)
    cp = c - (c @ e1) * e1
    f = cp / torch.linalg.norm(cp)
    coords = {}
    for name, p in (("C", c), ("N", n - ca1), ("O", o - c)):
        coords[name + "_u"] = float(p @ e1)
        coords[name + "_w"] = float(p @ f)
    coords["length"] = float(torch.linalg.norm(ca1 - ca0))
    return coords


PEPTIDE = _peptide_unit(math.pi, chem.ANGLE_CA_C_N, chem.ANGLE_C_N_CA)
"""Rigid trans peptide: (u, w) of C relative to CA(i), of N relative to
CA(i+1), of O relative to C, and the ideal CA-CA length."""
CIS_PEPTIDE = _peptide_unit(0.0, chem.ANGLE_CA_C_N_CIS, chem.ANGLE_C_N_CA_CIS)
"""Rigid cis peptide (built where CA-CA is shorter than MIN_PEPTIDE_LENGTH)."""


def _perpendicular(v: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    p = v - (v * axis).sum(-1, keepdim=True) * axis
    return p / torch.sqrt((p * p).sum(-1, keepdim=True) + 1e-12)





def peptide_frames(ca: torch.Tensor, first: np.ndarray, has_prev: np.ndarray, has_next: np.ndarray):
    """Frames and table keys of peptide units.

    Parameters
    ----------
    ca : torch.Tensor
        (..., R, 3) C-alpha positions.
    first, has_prev, has_next : numpy.ndarray
        From :func:`backmap_plugin.core.topology.peptide_neighbours` (the table builder also passes
        masked copies to fill the bins of segment ends).

    Returns
    -------
    frame : torch.Tensor
        (..., P, 3, 3) orthonormal frames: rows e1 (CA(i)->CA(i+1)), e2
        (reference perpendicular: towards CA(i-1), else CA(i+2), else a
        fixed axis), e3 = e1 x e2.
    key : torch.Tensor
        (..., P) integer table bin of each peptide.
    """
    n = ca.shape[-2]
    ip = torch.as_tensor(first, device=ca.device)
    prev = ca[..., torch.clamp(ip - 1, min=0), :]
    p = ca[..., ip, :]
    q = ca[..., ip + 1, :]
    nxt = ca[..., torch.clamp(ip + 2, max=n - 1), :]
    e1 = q - p
    e1 = e1 / torch.sqrt((e1 * e1).sum(-1, keepdim=True))
    hp = torch.as_tensor(has_prev, device=ca.device)
    hn = torch.as_tensor(has_next, device=ca.device)
    axis_x = torch.zeros_like(e1)
    axis_x[..., 0] = 1.0
    fallback = torch.where(e1[..., :1].abs() > 0.9, torch.roll(axis_x, 1, -1), axis_x)
    ref = torch.where(hp[..., None], prev - p, torch.where(hn[..., None], nxt - q, fallback))
    e2 = _perpendicular(ref, e1)
    e3 = torch.linalg.cross(e1, e2, dim=-1)
    frame = torch.stack([e1, e2, e3], dim=-2)

    def theta_bin(a, b, c, has):
        t = bond_angle(a, b, c)
        k = ((t - THETA_MIN) / (THETA_MAX - THETA_MIN) * THETA_BINS).long()
        return torch.where(has, k.clamp(0, THETA_BINS - 1), THETA_BINS)

    k1 = theta_bin(prev, p, q, hp)
    k2 = theta_bin(p, q, nxt, hn)
    tau = dihedral(prev, p, q, nxt)
    kt = ((tau + math.pi) / (2 * math.pi) * TORSION_BINS).long().clamp(0, TORSION_BINS - 1)
    kt = torch.where(hp & hn, kt, TORSION_BINS)
    key = (k1 * (THETA_BINS + 1) + k2) * (TORSION_BINS + 1) + kt
    return frame, key


N_KEYS = (THETA_BINS + 1) ** 2 * (TORSION_BINS + 1)


def plane_angle(c: torch.Tensor, ca: torch.Tensor, first: np.ndarray, frame: torch.Tensor) -> torch.Tensor:
    """Measured plane rotation of each peptide from its real C(i) atom.

    Parameters
    ----------
    c : torch.Tensor
        (..., R, 3) backbone C positions.
    ca : torch.Tensor
        (..., R, 3) C-alpha positions.
    first : numpy.ndarray
        From :func:`backmap_plugin.core.topology.peptide_neighbours`.
    frame : torch.Tensor
        From :func:`peptide_frames`.
    """
    ip = torch.as_tensor(first, device=ca.device)
    v = c[..., ip, :] - ca[..., ip, :]
    return torch.atan2((v * frame[..., 2, :]).sum(-1), (v * frame[..., 1, :]).sum(-1))


@functools.lru_cache(maxsize=1)
def _load_table():
    path = resources.files("backmap_plugin.build") / "tables" / "backbone.npz"
    with resources.as_file(path) as p, np.load(p) as z:
        return {k: z[k] for k in z.files}


def backbone_table() -> dict:
    """The shipped plane-angle table (``angle`` per key) and terminal torsions."""
    return _load_table()








def backbone_dofs(slots: torch.Tensor, layout: BackboneLayout) -> dict:
    """Measure the backbone degrees of freedom that :func:`build_backbone` takes.

    Parameters
    ----------
    slots : torch.Tensor
        (..., R, N_SLOTS, 3) real coordinates (N, CA, C, O used).
    layout : BackboneLayout

    Returns
    -------
    dict
        ``angle`` (..., P) plane rotations; ``psi_first`` (..., S) at
        segment starts, ``phi_last`` and ``psi_last`` (..., E) at segment
        ends (radians; ``psi_last`` from O: dihedral(O, C, CA, N) - pi).
    """
    ca = slots[..., chem.SLOT_CA, :]
    n, c, o = slots[..., chem.SLOT_N, :], slots[..., chem.SLOT_C, :], slots[..., chem.SLOT_O, :]
    frame, _ = peptide_frames(ca, layout.first, layout.has_prev, layout.has_next)
    s = torch.as_tensor(layout.starts, device=ca.device)
    e = torch.as_tensor(layout.ends, device=ca.device)
    n_res = ca.shape[-2]
    # (one-residue segments, possible outside a ProteinTopology, give meaningless values)
    after, before = torch.clamp(s + 1, max=n_res - 1), torch.clamp(e - 1, min=0)
    return {
        "angle": plane_angle(c, ca, layout.first, frame),
        "psi_first": dihedral(n[..., s, :], ca[..., s, :], c[..., s, :], n[..., after, :]),
        "phi_last": dihedral(c[..., before, :], n[..., e, :], ca[..., e, :], c[..., e, :]),
        "psi_last": dihedral(o[..., e, :], c[..., e, :], ca[..., e, :], n[..., e, :]) - math.pi,
    }


def build_backbone(ca: torch.Tensor, layout: BackboneLayout, res_type: np.ndarray, dofs: dict | None = None) -> torch.Tensor:
    """Backbone N, C, O slots for every residue from a C-alpha trace.

    Parameters
    ----------
    ca : torch.Tensor
        (..., R, 3) C-alpha positions, Angstrom.
    layout : BackboneLayout
        From :func:`backmap_plugin.core.topology.backbone_layout`.
    res_type : numpy.ndarray
        (R,) residue types.
    dofs : dict, optional
        Degrees of freedom as :func:`backbone_dofs` returns them (a model's
        prediction); missing entries come from the shipped table.
        Differentiable in ``ca`` and ``dofs``.

    Returns
    -------
    torch.Tensor
        (..., R, N_SLOTS, 3) with N, CA, C, O filled (other slots zero).
    """
    table = backbone_table()
    dofs = dict(dofs or {})
    dtype, device = ca.dtype, ca.device
    first = layout.first
    frame, key = peptide_frames(ca, first, layout.has_prev, layout.has_next)
    angle = dofs.get("angle")
    if angle is None:
        angle = torch.as_tensor(table["angle"], dtype=dtype, device=device)[key]
    f = torch.cos(angle)[..., None] * frame[..., 1, :] + torch.sin(angle)[..., None] * frame[..., 2, :]
    e1 = frame[..., 0, :]
    ip = torch.as_tensor(first, device=device)
    p, q = ca[..., ip, :], ca[..., ip + 1, :]
    length = torch.linalg.norm(q - p, dim=-1)
    cis = length < MIN_PEPTIDE_LENGTH
    pep = {k: torch.where(cis, CIS_PEPTIDE[k], v)[..., None] for k, v in PEPTIDE.items()}
    # a trace spacing other than the ideal one is shared out along the axis
    # over the three bonds instead of stretching the C-N bond alone
    bonded = torch.as_tensor(layout.bonded, device=device)
    scale = torch.where(bonded[..., None], length[..., None] / pep["length"], 1.0)
    c = p + pep["C_u"] * scale * e1 + pep["C_w"] * f
    n = q + pep["N_u"] * scale * e1 + pep["N_w"] * f
    o = c + pep["O_u"] * e1 + pep["O_w"] * f

    shape = ca.shape[:-1] + (chem.N_SLOTS, 3)
    out = torch.zeros(shape, dtype=dtype, device=device)
    out[..., chem.SLOT_CA, :] = ca
    out[..., ip, chem.SLOT_C, :] = c
    out[..., ip, chem.SLOT_O, :] = o
    out[..., ip + 1, chem.SLOT_N, :] = n

    ideal = torch.as_tensor(chem.ZMATRIX_IDEAL[np.asarray(res_type)], dtype=dtype, device=device)
    nca_c = torch.tensor(math.radians(chem.ANGLE_N_CA_C), dtype=dtype, device=device)

    def torsion(name, count):
        value = dofs.get(name)
        if value is None:
            value = torch.tensor(float(table[name]), dtype=dtype, device=device).expand(count)
        return value

    s = torch.as_tensor(layout.starts, device=device)
    e = torch.as_tensor(layout.ends, device=device)
    # N of the first residue: psi = dihedral(N, CA, C, N(i+1)).
    out[..., s, chem.SLOT_N, :] = place_atom(
        out[..., s, chem.SLOT_CA, :], out[..., s, chem.SLOT_C, :], out[..., s + 1, chem.SLOT_N, :],
        ideal[s, chem.SLOT_N, 0], nca_c.expand(len(s)), torsion("psi_first", len(s)),
    )
    # C of the last residue: phi = dihedral(C(i-1), N, CA, C).
    c_last = place_atom(
        out[..., e, chem.SLOT_CA, :], out[..., e, chem.SLOT_N, :], out[..., e - 1, chem.SLOT_C, :],
        ideal[e, chem.SLOT_C, 0], nca_c.expand(len(e)), torsion("phi_last", len(e)),
    )
    out[..., e, chem.SLOT_C, :] = c_last
    # O of the last residue in the carboxylate plane: dihedral(O, C, CA, N) = psi + 180.
    out[..., e, chem.SLOT_O, :] = place_atom(
        c_last, out[..., e, chem.SLOT_CA, :], out[..., e, chem.SLOT_N, :],
        ideal[e, chem.SLOT_O, 0], ideal[e, chem.SLOT_O, 1], torsion("psi_last", len(e)) + math.pi,
    )
    return out
