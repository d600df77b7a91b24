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

Rigid planes on a real trace cannot also give every residue its ideal
N-CA-C angle (6 degrees rms off where experimental structures are 3), so
the builders then call :func:`fit_backbone`, which moves N, C and O a
little to meet all backbone bonds and angles together around the fixed
C-alpha atoms.

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
    o = place_atom(c, n, ca1, t(chem.BOND_C_O), t(o_angle), t(omega - math.pi))  # CA(i+1)-N-C-O = omega - 180
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


#: Restrained fit of the backbone (:func:`fit_backbone`): Gauss-Newton steps, how far N, C and O may
#: leave the places the peptide planes gave them (Angstrom, the sigma of a harmonic tether), and the
#: sigma of bond lengths (Angstrom).
FIT_STEPS = 6
FIT_TETHER = 0.15
FIT_BOND_SIGMA = 0.01
#: Largest move of one atom in one step (Angstrom): where the planes left an atom far off, it gets there in steps.
FIT_MAX_STEP = 0.1


def _distance_restraint(a: float, b: float, theta: float, sigma: float) -> tuple[float, float]:
    """A bond angle ``theta`` (degrees, sigma in degrees) between bonds ``a`` and ``b`` as a 1-3 distance and its sigma."""
    t = math.radians(theta)
    d = math.sqrt(a * a + b * b - 2 * a * b * math.cos(t))
    return d, a * b * math.sin(t) / d * math.radians(sigma)


_N, _CA, _C, _O = range(4)
#: Within a residue: (atom, atom, distance, sigma); angle sigmas of Engh & Huber (1991).
_FIT_INTRA = (
    (_N, _CA, chem.BOND_N_CA, FIT_BOND_SIGMA),
    (_CA, _C, chem.BOND_CA_C, FIT_BOND_SIGMA),
    (_C, _O, chem.BOND_C_O, FIT_BOND_SIGMA),
    (_N, _C) + _distance_restraint(chem.BOND_N_CA, chem.BOND_CA_C, chem.ANGLE_N_CA_C, 2.8),
    (_CA, _O) + _distance_restraint(chem.BOND_CA_C, chem.BOND_C_O, chem.ANGLE_CA_C_O, 2.1),
)


#: Sigma (Angstrom) of the O(i)...CA(i+1) distance, which holds the peptide planar (omega).
FIT_PLANE_SIGMA = 0.05


def _fit_inter(ca_c_n: float, c_n_ca: float, unit: dict) -> tuple:
    """Across a peptide bond: (atom of i, atom of i+1, distance, sigma); ``unit`` is the ideal peptide's layout."""
    o_c_n = 360.0 - ca_c_n - chem.ANGLE_CA_C_O
    o_ca = math.hypot(unit["length"] - unit["C_u"] - unit["O_u"], unit["C_w"] + unit["O_w"])
    return (
        (_C, _N, chem.BOND_C_N, FIT_BOND_SIGMA),
        (_CA, _N) + _distance_restraint(chem.BOND_CA_C, chem.BOND_C_N, ca_c_n, 2.0),
        (_C, _CA) + _distance_restraint(chem.BOND_C_N, chem.BOND_N_CA, c_n_ca, 1.8),
        (_O, _N) + _distance_restraint(chem.BOND_C_O, chem.BOND_C_N, o_c_n, 1.6),
        (_O, _CA, o_ca, FIT_PLANE_SIGMA),
    )


_FIT_TRANS = _fit_inter(chem.ANGLE_CA_C_N, chem.ANGLE_C_N_CA, PEPTIDE)
_FIT_CIS = _fit_inter(chem.ANGLE_CA_C_N_CIS, chem.ANGLE_C_N_CA_CIS, CIS_PEPTIDE)


def _solve_symmetric_3x3(h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``h^-1 g`` for batched symmetric positive-definite 3x3 ``h`` (adjugate formula)."""
    a, b, c = h[..., 0, 0], h[..., 0, 1], h[..., 0, 2]
    d, e, f = h[..., 1, 1], h[..., 1, 2], h[..., 2, 2]
    ca, cb, cc = d * f - e * e, c * e - b * f, b * e - c * d
    cd, ce, cf = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * ca + b * cb + c * cc
    gx, gy, gz = g[..., 0], g[..., 1], g[..., 2]
    return torch.stack([ca * gx + cb * gy + cc * gz, cb * gx + cd * gy + ce * gz,
                        cc * gx + ce * gy + cf * gz], -1) / det[..., None]


def fit_backbone(slots: torch.Tensor, layout: BackboneLayout, steps: int = FIT_STEPS) -> torch.Tensor:
    """Fit N, C and O to Engh & Huber geometry around fixed C-alpha atoms.

    Rigid ideal peptide planes hung on a real C-alpha trace leave N-CA-C
    wherever two neighbouring planes meet (6 degrees rms, where experimental
    structures have 3). This fit lets N, C and O move a little from the
    planes' placement (harmonic tether of :data:`FIT_TETHER`) so that bond
    lengths, the N-CA-C, CA-C-O, CA-C-N, C-N-CA and O-C-N angles (written as
    1-3 distances with Engh & Huber sigmas) and the planarity of the peptide
    (the O(i)...CA(i+1) distance) are met together; cis peptides
    (C-alpha atoms closer than :data:`MIN_PEPTIDE_LENGTH`) use cis angles,
    and peptides across chain breaks are not restrained. Each step solves,
    per atom, the 3x3 Gauss-Newton system of its restraints.

    Parameters
    ----------
    slots : torch.Tensor
        (..., R, N_SLOTS, 3) with N, CA, C, O filled (:func:`build_backbone`).
    layout : BackboneLayout
    steps : int, optional

    Returns
    -------
    torch.Tensor
        A copy of ``slots`` with N, C and O moved; C-alpha atoms unchanged.
    """
    backbone = [chem.SLOT_N, chem.SLOT_CA, chem.SLOT_C, chem.SLOT_O]
    x0 = [slots[..., slot, :].contiguous() for slot in backbone]  # N, CA, C, O: (..., R, 3) each
    x = [p.clone() for p in x0]
    dtype, device = slots.dtype, slots.device
    # consecutive residues i, i+1 as slices; weight 0 where they are not a peptide bond
    bonded = torch.zeros(slots.shape[-3] - 1, dtype=dtype, device=device)
    bonded[torch.as_tensor(layout.first[layout.bonded], device=device)] = 1.0
    cis = torch.linalg.norm(x0[_CA][..., 1:, :] - x0[_CA][..., :-1, :], dim=-1) < MIN_PEPTIDE_LENGTH
    inter = [(a, b, torch.where(cis, dc, dt), torch.where(cis, 1.0 / sc ** 2, 1.0 / st ** 2) * bonded)
             for (a, b, dt, st), (_, _, dc, sc) in zip(_FIT_TRANS, _FIT_CIS)]
    k_tether = 1.0 / FIT_TETHER ** 2
    eye = torch.eye(3, dtype=dtype, device=device) * k_tether
    moving = (_N, _C, _O)

    def spring(xa, xb, d0, k):
        v = xb - xa
        d = torch.linalg.norm(v, dim=-1, keepdim=True).clamp(min=1e-6)
        u = v / d
        force = (k * (d[..., 0] - d0))[..., None] * u  # gradient of the energy on b (minus on a)
        return force, (k[..., None, None] if torch.is_tensor(k) else k) * u[..., :, None] * u[..., None, :]

    for _ in range(steps):
        grad = {m: k_tether * (x[m] - x0[m]) for m in moving}
        hess = {m: eye.expand(x[m].shape + (3,)).clone() for m in moving}
        for a, b, d0, sigma in _FIT_INTRA:
            force, uu = spring(x[a], x[b], d0, 1.0 / sigma ** 2)
            for atom, sign in ((a, -1.0), (b, 1.0)):
                if atom in grad:
                    grad[atom] += sign * force
                    hess[atom] += uu
        for a, b, d0, k in inter:
            force, uu = spring(x[a][..., :-1, :], x[b][..., 1:, :], d0, k)
            if a in grad:
                grad[a][..., :-1, :] -= force
                hess[a][..., :-1, :, :] += uu
            if b in grad:
                grad[b][..., 1:, :] += force
                hess[b][..., 1:, :, :] += uu
        for m in moving:
            step = _solve_symmetric_3x3(hess[m], grad[m])
            size = torch.linalg.norm(step, dim=-1, keepdim=True)
            x[m] = x[m] - step * (FIT_MAX_STEP / size.clamp(min=FIT_MAX_STEP))  # no atom jumps: steps stay Newton-sized
    out = slots.clone()
    for slot, atom in zip(backbone, x):
        out[..., slot, :] = atom
    return out
