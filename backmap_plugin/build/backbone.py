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
the builders then call :func:`fit_backbone`, which turns the peptides about
their CA-CA axes and moves N, C and O a little to meet all backbone bonds
and angles together, with planar peptides (omega near 180, or 0 where the
C-alpha atoms are close enough for a cis peptide), around the fixed C-alpha
atoms.

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
from backmap_plugin.core.geometry import bond_angle, dihedral, place_atom, rotate_about_axis, wrap_angle
from backmap_plugin.core.topology import BackboneLayout
from backmap_plugin.core.tridiagonal import solve_tridiagonal

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


#: C-alpha traces whose bonded C-alpha atoms lie 3.4-4.3 Angstrom apart with a robust spread (1.4826 times the
#: median absolute deviation) above this are brought to the distances rigid peptides hold them at before building
#: (:func:`~backmap_plugin.build.ideal.even_noisy_traces`): a coarse-grained simulation's bonds fluctuate (a HPS /
#: CALVADOS run: 0.17 A), an all-atom trajectory's C-alpha atoms less (train MD frames: median 0.058), a crystal
#: structure's least (median 0.022; 13 of 150 above 0.05; NMR models 0.012, up to 0.10). On the C-alpha traces of 5
#: train MD trajectories, evened: heavy-atom RMSD 1.468 -> 1.469 A, angle outliers 8.7 -> 0.9 per frame; with
#: 0.17 A of noise added: 1.509 -> 1.507 A, 153 -> 0.9 angle outliers, 0.4 -> 0 cis non-proline peptides.
NOISY_TRACE_SPREAD = 0.05
#: In such traces a peptide is cis only where its C-alpha atoms are closer than this (Angstrom), not
#: MIN_PEPTIDE_LENGTH: a fluctuating bond reaches 3.3-3.4 A now and then (0.5 % of a HPS run's bonds, each built
#: cis), 3.1 A about once in 80,000; a Go model's native cis peptide sits near 2.95. Cis peptides of train crystal
#: structures: X-Pro 2.71-3.27 A (458), others 2.59-3.40 (60; 44 below 3.1), trans 3.34 and up.
NOISY_CIS_LENGTH = 3.1
#: Bonded C-alpha pairs a frame needs for its spread to be judged.
_MIN_SPREAD_PAIRS = 5


def noisy_traces(ca: torch.Tensor, same_segment: torch.Tensor) -> torch.Tensor:
    """(F,) bool: the frames of traces ``ca`` (F, R, 3) whose bonded C-alpha distances (``same_segment``, (R - 1,)
    bool) spread more than :data:`NOISY_TRACE_SPREAD` (:func:`trace_spread`): a coarse-grained simulation's beads,
    or an all-atom trajectory's C-alpha atoms."""
    return trace_spread(ca, same_segment) > NOISY_TRACE_SPREAD


def trace_spread(ca: torch.Tensor, same_segment: torch.Tensor) -> torch.Tensor:
    """(F,) robust standard deviation (1.4826 times the median absolute deviation) of the bonded C-alpha distances
    (``same_segment``, (R - 1,) bool) of traces ``ca`` (F, R, 3) from :data:`MIN_PEPTIDE_LENGTH` to 4.3 Angstrom;
    0 for frames with fewer than five such pairs."""
    distance = torch.linalg.vector_norm(ca[:, 1:] - ca[:, :-1], dim=-1)
    usual = same_segment[None, :] & (distance >= MIN_PEPTIDE_LENGTH) & (distance <= 4.3)
    centred = torch.where(usual, distance, torch.nan)
    median = torch.nanmedian(centred, dim=1, keepdim=True).values
    spread = 1.4826 * torch.nanmedian((centred - median).abs(), dim=1).values
    return torch.where(usual.sum(1) >= _MIN_SPREAD_PAIRS, spread, torch.zeros_like(spread))


def noisy_trace_lengths(ca: torch.Tensor) -> torch.Tensor:
    """(F, R - 1, 1): the CA(i)-CA(i+1) distance at which each peptide of noisy traces ``ca`` (F, R, 3) is held:
    the cis length (:data:`CIS_PEPTIDE`) where its C-alpha atoms are closer than :data:`NOISY_CIS_LENGTH`, 3.8
    Angstrom (trans) elsewhere."""
    distance = torch.linalg.vector_norm(ca[:, 1:] - ca[:, :-1], dim=-1, keepdim=True)
    cis = torch.tensor(CIS_PEPTIDE["length"], dtype=ca.dtype, device=ca.device)
    return torch.where(distance < NOISY_CIS_LENGTH, cis, torch.tensor(chem.BOND_CA_CA_TRANS, dtype=ca.dtype,
                                                                      device=ca.device))


def peptide_lengths(ca: torch.Tensor, res_type: np.ndarray) -> torch.Tensor:
    """CA(i)-CA(i+1) distance (F, R - 1, 1) at which each peptide of traces ``ca`` (F, R, 3) is held.

    The cis length (:data:`CIS_PEPTIDE`) where the next residue is a
    proline and the trace's C-alpha atoms are closer than
    :data:`MIN_PEPTIDE_LENGTH` (the builder makes those peptides cis), 3.8
    Angstrom (trans) elsewhere; for
    :func:`~backmap_plugin.build.ideal.constrain_trace` and fits that keep a
    located trace's cis peptides. Cis peptides are X-Pro peptides but for
    about 0.2 % of the others (train crystal structures: 322 of 3,027 X-Pro
    peptides, 95 of 59,149 others), and a trace located from noisy beads
    comes out short elsewhere now and then.
    """
    distance = torch.linalg.vector_norm(ca[:, 1:] - ca[:, :-1], dim=-1, keepdim=True)
    before_proline = torch.as_tensor(np.asarray(res_type)[1:] == chem.RESIDUE_INDEX["PRO"], device=ca.device)
    cis = torch.tensor(CIS_PEPTIDE["length"], dtype=ca.dtype, device=ca.device)
    trans = torch.tensor(chem.BOND_CA_CA_TRANS, dtype=ca.dtype, device=ca.device)
    return torch.where((distance < MIN_PEPTIDE_LENGTH) & before_proline[:, None], cis, trans)


def _perpendicular(v: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    p = v - (v * axis).sum(-1, keepdim=True) * axis
    return p / torch.sqrt((p * p).sum(-1, keepdim=True) + 1e-12)


def _peptide_points(ca: torch.Tensor, first: np.ndarray) -> tuple[torch.Tensor, ...]:
    """CA(i-1), CA(i), CA(i+1), CA(i+2) of each peptide i -> i+1 (clamped at the chain's ends)."""
    n = ca.shape[-2]
    ip = torch.as_tensor(first, device=ca.device)
    return (ca[..., torch.clamp(ip - 1, min=0), :], ca[..., ip, :], ca[..., ip + 1, :],
            ca[..., torch.clamp(ip + 2, max=n - 1), :])


def peptide_frames(ca: torch.Tensor, first: np.ndarray, has_prev: np.ndarray, has_next: np.ndarray) -> torch.Tensor:
    """Frames of peptide units.

    Parameters
    ----------
    ca : torch.Tensor
        (..., R, 3) C-alpha positions.
    first, has_prev, has_next : numpy.ndarray
        From :func:`backmap_plugin.core.topology.peptide_neighbours` (the table builder also passes
        masked copies to fill the bins of segment ends).

    Returns
    -------
    torch.Tensor
        (..., P, 3, 3) orthonormal frames: rows e1 (CA(i)->CA(i+1)), e2
        (reference perpendicular: towards CA(i-1), else CA(i+2), else a
        fixed axis), e3 = e1 x e2.
    """
    prev, p, q, nxt = _peptide_points(ca, first)
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
    return torch.stack([e1, e2, e3], dim=-2)


def peptide_keys(ca: torch.Tensor, first: np.ndarray, has_prev: np.ndarray, has_next: np.ndarray) -> torch.Tensor:
    """(..., P) integer bin of each peptide in the plane-angle table: the trace's angles at CA(i) and CA(i+1)
    and its torsion about the peptide (arguments as for :func:`peptide_frames`)."""
    prev, p, q, nxt = _peptide_points(ca, first)
    hp = torch.as_tensor(has_prev, device=ca.device)
    hn = torch.as_tensor(has_next, device=ca.device)

    def theta_bin(a, b, c, has):
        t = bond_angle(a, b, c)
        k = ((t - THETA_MIN) / (THETA_MAX - THETA_MIN) * THETA_BINS).long()
        return torch.where(has, k.clamp(0, THETA_BINS - 1), THETA_BINS)

    k1 = theta_bin(prev, p, q, hp)
    k2 = theta_bin(p, q, nxt, hn)
    tau = dihedral(prev, p, q, nxt)
    kt = ((tau + math.pi) / (2 * math.pi) * TORSION_BINS).long().clamp(0, TORSION_BINS - 1)
    kt = torch.where(hp & hn, kt, TORSION_BINS)
    return (k1 * (THETA_BINS + 1) + k2) * (TORSION_BINS + 1) + kt


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
    frame = peptide_frames(ca, layout.first, layout.has_prev, layout.has_next)
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


def build_backbone(ca: torch.Tensor, layout: BackboneLayout, res_type: np.ndarray,
                   dofs: dict | None = None) -> torch.Tensor:
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
        (..., R, N_SLOTS, 3) with N, CA, C, O filled (other slots zero):
        :func:`backbone_atoms` in the slot layout.
    """
    atoms = torch.stack(backbone_atoms(ca, layout, res_type, dofs), -2)  # N, CA, C, O are slots 0-3
    return torch.cat([atoms, atoms.new_zeros(atoms.shape[:-2] + (chem.N_SLOTS - 4, 3))], -2)


def backbone_atoms(ca: torch.Tensor, layout: BackboneLayout, res_type: np.ndarray,
                   dofs: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backbone N, CA, C, O (each (..., R, 3)) from a C-alpha trace, as :func:`build_backbone` places them.

    Apart, they keep a fit's autograd graph to (..., R, 3) tensors: a slot
    taken from the (..., R, N_SLOTS, 3) layout has a gradient of that full
    size. Parameters as for :func:`build_backbone`.
    """
    table = backbone_table()
    dofs = dict(dofs or {})
    dtype, device = ca.dtype, ca.device
    first = layout.first
    frame = peptide_frames(ca, first, layout.has_prev, layout.has_next)
    angle = dofs.get("angle")
    if angle is None:
        key = peptide_keys(ca, first, layout.has_prev, layout.has_next)
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
    c_pep = p + pep["C_u"] * scale * e1 + pep["C_w"] * f
    n_pep = q + pep["N_u"] * scale * e1 + pep["N_w"] * f
    o_pep = c_pep + pep["O_u"] * e1 + pep["O_w"] * f

    n, c, o = (torch.zeros_like(ca) for _ in range(3))
    c[..., ip, :] = c_pep
    o[..., ip, :] = o_pep
    n[..., ip + 1, :] = n_pep

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
    n[..., s, :] = place_atom(ca[..., s, :], c[..., s, :], n[..., s + 1, :], ideal[s, chem.SLOT_N, 0],
                              nca_c.expand(len(s)), torsion("psi_first", len(s)))
    # C of the last residue: phi = dihedral(C(i-1), N, CA, C).
    c_last = place_atom(ca[..., e, :], n[..., e, :], c[..., e - 1, :], ideal[e, chem.SLOT_C, 0],
                        nca_c.expand(len(e)), torsion("phi_last", len(e)))
    c[..., e, :] = c_last
    # O of the last residue in the carboxylate plane: dihedral(O, C, CA, N) = psi + 180.
    o[..., e, :] = place_atom(c_last, ca[..., e, :], n[..., e, :], ideal[e, chem.SLOT_O, 0],
                              ideal[e, chem.SLOT_O, 1], torsion("psi_last", len(e)) + math.pi)
    return n, ca, c, o


def oxt_position(c: torch.Tensor, ca: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """OXT (..., 3) on C, CA, O (..., 3) as the ideal builder places it (differentiable)."""
    dtype, dev = c.dtype, c.device
    return place_atom(c, ca, o, *(torch.tensor(v, dtype=dtype, device=dev)
                                  for v in (chem.BOND_C_OXT, math.radians(chem.ANGLE_CA_C_OXT), math.pi)))


def turn_planes_towards(ca: torch.Tensor, dofs: dict, layout: BackboneLayout, res_type: np.ndarray,
                        targets: torch.Tensor, angle_weight: float, damping: float) -> torch.Tensor:
    """One Gauss-Newton step on the peptide-plane rotations towards target atoms, N-CA-C restrained.

    Each peptide turns about its CA(i)-CA(i+1) axis (``dofs["angle"]`` of
    :func:`build_backbone`), which moves its C(i), O(i) and N(i+1) on circles.
    The loss is the squared distance of those atoms to their targets plus
    ``angle_weight`` times the squared deviation of every N-CA-C angle
    between two planes from its ideal value; the angle couples neighbouring
    planes, so the step solves a tridiagonal system
    (:func:`backmap_plugin.core.tridiagonal.solve_tridiagonal`).

    Parameters
    ----------
    ca : torch.Tensor
        (F, R, 3) C-alpha trace.
    dofs : dict
        Backbone degrees of freedom (:func:`backbone_dofs`), ``angle`` (F, P) included.
    layout : BackboneLayout
    res_type : numpy.ndarray
        (R,) residue types.
    targets : torch.Tensor
        (F, R, N_SLOTS, 3): where N, C and O should be.
    angle_weight : float
        Per rad^2, against Angstrom^2.
    damping : float
        Added to the diagonal (Angstrom^2 per rad^2).

    Returns
    -------
    torch.Tensor
        (F, P) plane rotations after the step (radians).
    """
    theta = dofs["angle"]
    frame = peptide_frames(ca, layout.first, layout.has_prev, layout.has_next)
    cos, sin = torch.cos(theta)[..., None], torch.sin(theta)[..., None]
    f = cos * frame[..., 1, :] + sin * frame[..., 2, :]  # where the plane points now
    turn = -sin * frame[..., 1, :] + cos * frame[..., 2, :]  # d f / d angle
    backbone = build_backbone(ca, layout, res_type, dofs)
    ip = torch.as_tensor(layout.first, device=ca.device)
    grad, diagonal, reach = torch.zeros_like(theta), torch.zeros_like(theta), {}
    for slot, res in ((chem.SLOT_C, ip), (chem.SLOT_O, ip), (chem.SLOT_N, ip + 1)):
        x = backbone[:, res, slot]
        reach[slot] = ((x - ca[:, res]) * f).sum(-1)  # radius of the atom's circle (signed)
        grad = grad + reach[slot] * ((x - targets[:, res, slot]) * turn).sum(-1)
        diagonal = diagonal + reach[slot] ** 2
    # N-CA-C of residues between two planes: N from the plane before, C from the plane after
    n_res, n_planes = ca.shape[-2], len(layout.first)
    after, before = np.full(n_res, -1), np.full(n_res, -1)
    after[layout.first], before[np.asarray(layout.first) + 1] = np.arange(n_planes), np.arange(n_planes)
    inner = np.nonzero((after >= 0) & (before >= 0))[0]
    pa, pb = torch.as_tensor(after[inner], device=ca.device), torch.as_tensor(before[inner], device=ca.device)
    res = torch.as_tensor(inner, device=ca.device)
    u, v = backbone[:, res, chem.SLOT_N] - ca[:, res], backbone[:, res, chem.SLOT_C] - ca[:, res]
    lu, lv = u.norm(dim=-1), v.norm(dim=-1)
    cos_a = ((u * v).sum(-1) / (lu * lv)).clamp(-1.0, 1.0)
    sin_a = torch.sqrt(1.0 - cos_a ** 2).clamp(min=1e-6)
    # d angle = -d cos / sin; d cos / d v = (u / |u| - cos v / |v|) / |v|
    d_after = -((u / lu[..., None] - cos_a[..., None] * v / lv[..., None]) * turn[:, pa]).sum(-1) \
        * reach[chem.SLOT_C][:, pa] / (lv * sin_a)
    d_before = -((v / lv[..., None] - cos_a[..., None] * u / lu[..., None]) * turn[:, pb]).sum(-1) \
        * reach[chem.SLOT_N][:, pb] / (lu * sin_a)
    deviation = torch.acos(cos_a) - math.radians(chem.ANGLE_N_CA_C)
    grad = grad.index_add(1, pa, angle_weight * deviation * d_after)
    grad = grad.index_add(1, pb, angle_weight * deviation * d_before)
    diagonal = diagonal.index_add(1, pa, angle_weight * d_after ** 2).index_add(1, pb, angle_weight * d_before ** 2)
    upper = torch.zeros_like(theta).index_add(1, pb, angle_weight * d_after * d_before)  # planes pb, pb + 1 = pa
    lower = upper.roll(1, -1)
    return theta + solve_tridiagonal(lower, diagonal + damping, upper, -grad)


#: Restrained fit of the backbone (:func:`fit_backbone`): Gauss-Newton steps, how far N, C and O may
#: leave the places the peptide planes gave them (Angstrom, the sigma of a harmonic tether), and the
#: sigma of bond lengths (Angstrom).
FIT_STEPS = 6
FIT_TETHER = 0.15
FIT_BOND_SIGMA = 0.01
#: Largest move of one atom in one step (Angstrom): where the planes left an atom far off, it gets there in steps.
FIT_MAX_STEP = 0.1
#: Sigma (degrees) of omega, the torsion CA(i)-C-N-CA(i+1), about 180 (trans) or 0 (cis). Trans omega
#: spreads by 5.0-5.4 degrees (sd) in train crystal structures, but the fit cannot move the C-alpha
#: atoms and starts from plane angles 8 degrees off (median): a small twist is its cheapest way to
#: absorb that, as real peptides do. Tuned on train crystal structures: 5-7 hold omega tighter (0.05 %
#: beyond 20 degrees) but raised the Ramachandran outliers of the model's output (0.92 -> 1.01-1.08 %);
#: 10 keeps 0.1-0.2 % beyond 20 degrees (experimental structures: 0.3-0.6 %) and the outliers near
#: the old level.
FIT_OMEGA_SIGMA = 10.0
#: The same for cis peptides, which turn freely (below) and so need no twist to meet N-CA-C: the
#: spread of omega itself.
FIT_CIS_OMEGA_SIGMA = 5.0
#: Sigma (Angstrom) of O's distance from the plane of CA(i), C(i), N(i+1). In train crystal structures
#: O lies 0.04-0.055 A rms out of that plane, 4-6 % of them beyond 0.1 A; with 0.08 the fit gives the
#: same (0.05 A, 5.5 %; 0.02 gave 0.02 A, and without the term 0.15 A, 45 %).
FIT_O_PLANE_SIGMA = 0.08
#: Sigma (degrees) of the turn of a trans peptide about its CA-CA axis away from the plane angle it was
#: built with. Turning meets N-CA-C without twisting, but it follows N-CA-C alone: wider priors (6-10)
#: gave N-CA-C a little better and more Ramachandran outliers. Cis peptides turn freely: the shipped
#: table has none (its angle is off by 60 degrees there) and the model has seen few. Largest turn of
#: one step (radians).
FIT_TURN_SIGMA = 3.0
FIT_MAX_TURN = 0.3
#: Gauss-Newton share of a term between two moving atoms (or two turning peptides): both step at once,
#: so each takes half of what it alone would need (1 made the fit oscillate, 0.02 A rms a step).
FIT_SHARE = 2.0


def _distance_restraint(a: float, b: float, theta: float, sigma: float) -> tuple[float, float]:
    """A bond angle ``theta`` (degrees, sigma in degrees) between bonds ``a`` and ``b`` as a 1-3 distance and its
    sigma."""
    t = math.radians(theta)
    d = math.sqrt(a * a + b * b - 2 * a * b * math.cos(t))
    return d, a * b * math.sin(t) / d * math.radians(sigma)


#: Within a residue, (distance, sigma) of N-CA, CA-C, C=O, N..C (N-CA-C) and CA..O (CA-C-O); angle
#: sigmas of Engh & Huber (1991).
_FIT_INTRA = (
    (chem.BOND_N_CA, FIT_BOND_SIGMA),
    (chem.BOND_CA_C, FIT_BOND_SIGMA),
    (chem.BOND_C_O, FIT_BOND_SIGMA),
    _distance_restraint(chem.BOND_N_CA, chem.BOND_CA_C, chem.ANGLE_N_CA_C, 2.8),
    _distance_restraint(chem.BOND_CA_C, chem.BOND_C_O, chem.ANGLE_CA_C_O, 2.1),
)
#: Sigma (Angstrom) of the O(i)...CA(i+1) distance (where O lies within the peptide plane).
FIT_O_CA_SIGMA = 0.05


def _fit_inter(ca_c_n: float, c_n_ca: float, unit: dict) -> tuple:
    """Across a peptide bond, (distance, sigma) of C-N, CA(i)..N (CA-C-N), C..CA(i+1) (C-N-CA), O..N
    (O-C-N) and O..CA(i+1); ``unit`` is the ideal peptide's layout."""
    o_c_n = 360.0 - ca_c_n - chem.ANGLE_CA_C_O
    o_ca = math.hypot(unit["length"] - unit["C_u"] - unit["O_u"], unit["C_w"] + unit["O_w"])
    return (
        (chem.BOND_C_N, FIT_BOND_SIGMA),
        _distance_restraint(chem.BOND_CA_C, chem.BOND_C_N, ca_c_n, 2.0),
        _distance_restraint(chem.BOND_C_N, chem.BOND_N_CA, c_n_ca, 1.8),
        _distance_restraint(chem.BOND_C_O, chem.BOND_C_N, o_c_n, 1.6),
        (o_ca, FIT_O_CA_SIGMA),
    )


_FIT_TRANS = _fit_inter(chem.ANGLE_CA_C_N, chem.ANGLE_C_N_CA, PEPTIDE)
_FIT_CIS = _fit_inter(chem.ANGLE_CA_C_N_CIS, chem.ANGLE_C_N_CA_CIS, CIS_PEPTIDE)

# The fit keeps vectors coordinate-first, (3, ...), and symmetric 3x3 matrices as two such tensors, the
# diagonal (xx, yy, zz) and the off-diagonal (xy, yz, zx): every operation then runs over whole
# contiguous rows instead of broadcasting over small trailing axes (several times faster on CPUs). The
# moving atoms are stacked as (3, 3, ..., R): coordinate, then N, C, O.
_MN, _MC, _MO = range(3)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(0)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _outer(u: torch.Tensor, scale: torch.Tensor, diagonal=0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale * u u^T + diagonal * I`` as its diagonal (xx, yy, zz) and off-diagonal (xy, yz, zx) parts."""
    return scale * (u * u) + diagonal, scale * (u * u.roll(-1, 0))


def _solve(diagonal: torch.Tensor, off: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``h^-1 g`` for symmetric positive-definite ``h`` (diagonal, off-diagonal parts as :func:`_outer`
    gives them) and vectors ``g`` (adjugate formula)."""
    (a, d, f), (b, e, c) = diagonal, off
    ca, cb, cc = d * f - e * e, c * e - b * f, b * e - c * d
    cd, ce, cf = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * ca + b * cb + c * cc
    gx, gy, gz = g
    return torch.stack([ca * gx + cb * gy + cc * gz, cb * gx + cd * gy + ce * gz, cc * gx + ce * gy + cf * gz]) / det


def _springs(xa: torch.Tensor, xb: torch.Tensor, d0: torch.Tensor, k: torch.Tensor, share: torch.Tensor):
    """Harmonic distance terms between ``xa`` and ``xb``.

    Returns the energy gradient on ``xb`` (minus that on ``xa``), (3, ...), and the Hessian block of
    either atom (as :func:`_outer`): Gauss-Newton plus the positive transverse part of a stretched term (without
    it an atom pulled sideways overshoots), times ``share``.
    """
    v = xb - xa
    d = torch.sqrt(_dot(v, v)).clamp(min=1e-6)
    u = v / d
    side = k * (1 - d0 / d).clamp(min=0)
    return (k * (d - d0)) * u, _outer(u, share * (k - side), share * side)


def _column(values, like: torch.Tensor) -> torch.Tensor:
    """``values`` as a (len, 1, ..., 1) tensor that broadcasts over the axes of ``like`` after the first."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).reshape((len(values),) + (1,) * (like.dim() - 1))


#: Proline's phi, held near -65 degrees by its ring (-90 to -45 in experimental structures, never
#: positive), and the turns of a peptide unit tried to reach it (:func:`turn_proline_units`).
PROLINE_PHI = math.radians(-65.0)
PROLINE_TURNS = 72


def turn_proline_units(slots: torch.Tensor, layout: BackboneLayout) -> torch.Tensor:
    """Turn the peptide units before prolines whose phi came out positive until phi is near -65 degrees.

    With phi positive, the unit's C(i) and O(i) lie where the proline ring
    closes (O(i) about 1 A from CD(i+1)): the ring cannot be built. The
    unit C(i), O(i), N(i+1) turns rigidly about its CA(i)-CA(i+1) axis to
    the one of :data:`PROLINE_TURNS` angles that brings phi(i+1) closest to
    :data:`PROLINE_PHI`; other units are returned unchanged.

    Parameters
    ----------
    slots : torch.Tensor
        (..., R, N_SLOTS, 3) with N, CA, C, O filled.
    layout : BackboneLayout
        Its ``proline`` flags say which units come before a proline.

    Returns
    -------
    torch.Tensor
        ``slots``, or a copy with those units turned.
    """
    units = np.nonzero(layout.proline & layout.bonded)[0]
    if not len(units):
        return slots
    i = torch.as_tensor(layout.first[units], device=slots.device)
    ca_i, ca_j = slots[..., i, chem.SLOT_CA, :], slots[..., i + 1, chem.SLOT_CA, :]
    c_j = slots[..., i + 1, chem.SLOT_C, :]
    moving = torch.stack([slots[..., i, chem.SLOT_C, :], slots[..., i, chem.SLOT_O, :],
                          slots[..., i + 1, chem.SLOT_N, :]], -2)  # (..., U, 3 atoms, 3)
    phi = dihedral(moving[..., 0, :], moving[..., 2, :], ca_j, c_j)  # (..., U)
    if not bool((phi > 0).any()):
        return slots
    axis = ca_j - ca_i
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    angles = torch.arange(PROLINE_TURNS, dtype=slots.dtype, device=slots.device) * (2 * math.pi / PROLINE_TURNS)
    tried = rotate_about_axis(moving, ca_i, axis, angles.reshape(-1, *([1] * phi.dim())))  # (A, ..., U, 3, 3)
    miss = wrap_angle(dihedral(tried[..., 0, :], tried[..., 2, :], ca_j, c_j) - PROLINE_PHI)
    best = angles[miss.abs().argmin(0)]
    moved = torch.where((phi > 0)[..., None, None], rotate_about_axis(moving, ca_i, axis, best), moving)
    out = slots.clone()
    out[..., i, chem.SLOT_C, :] = moved[..., 0, :]
    out[..., i, chem.SLOT_O, :] = moved[..., 1, :]
    out[..., i + 1, chem.SLOT_N, :] = moved[..., 2, :]
    return out


def fit_backbone(slots: torch.Tensor, layout: BackboneLayout, steps: int = FIT_STEPS) -> torch.Tensor:
    """Fit N, C and O to Engh & Huber geometry and planar peptides around fixed C-alpha atoms.

    Rigid ideal peptide planes hung on a real C-alpha trace leave N-CA-C
    wherever two neighbouring planes meet (6 degrees rms, where experimental
    structures have 3). This fit lets N, C and O move from the planes'
    placement (harmonic tether of :data:`FIT_TETHER`) so that bond lengths,
    the N-CA-C, CA-C-O, CA-C-N, C-N-CA and O-C-N angles (1-3 distances with
    Engh & Huber sigmas), the O(i)...CA(i+1) distance, omega
    (:data:`FIT_OMEGA_SIGMA`) and O in the peptide plane
    (:data:`FIT_O_PLANE_SIGMA`) are met together. Cis peptides (C-alpha
    atoms closer than :data:`MIN_PEPTIDE_LENGTH`) use cis angles and omega
    0 (:data:`FIT_CIS_OMEGA_SIGMA`); peptides across chain breaks are not
    restrained.

    Omega needs its own harmonic term: distances alone hold a peptide planar
    only to fourth order in its twist, so a peptide whose C-alpha atoms are
    closer than the ideal 3.80 A buckled out of plane, and the fit relieved
    N-CA-C by twisting peptides, worst at cis peptides, whose plane angle
    the table does not know. With omega held, N-CA-C is met by turning
    whole peptides about their CA-CA axes instead.

    Each step (1) turns every peptide unit C(i), O(i), N(i+1) rigidly about
    its CA-CA axis by one Newton step of the N-CA-C terms at both ends and
    a prior on the turn (:data:`FIT_TURN_SIGMA`; none for cis peptides),
    then (2) moves each of N, C and O by one Gauss-Newton step of its own
    terms (3x3 system), the other atoms held; terms between two moving atoms
    count twice in each one's system (:data:`FIT_SHARE`), so that their
    simultaneous steps do not overshoot.

    Differentiable (the builders' bead fits take gradients through it).

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
    slots = turn_proline_units(slots, layout)
    dtype, device = slots.dtype, slots.device
    nco = [chem.SLOT_N, chem.SLOT_C, chem.SLOT_O]
    ca = slots[..., chem.SLOT_CA, :].movedim(-1, 0)  # (3, ..., R)
    x = slots[..., nco, :].movedim((-1, -2), (0, 1)).contiguous()  # (3, N/C/O, ..., R)
    moved = torch.zeros_like(x)  # by the atoms' own steps (not the turns of their peptide): the tether's
    bonded = torch.zeros(slots.shape[-3] - 1, dtype=dtype, device=device)
    bonded[torch.as_tensor(layout.first[layout.bonded], device=device)] = 1.0
    ca_i, ca_j = ca[..., :-1], ca[..., 1:]
    axis = ca_j - ca_i
    length = torch.sqrt(_dot(axis, axis))
    axis = axis / length.clamp(min=1e-6)
    cis = length < MIN_PEPTIDE_LENGTH  # (..., P)
    # the axis each atom turns about (N(i+1), C(i), O(i) with peptide i; the first N and the last C and O
    # with none: by 0, about any axis)
    other = torch.zeros_like(ca[..., :1])
    other[0] = 1.0
    axes = torch.stack([torch.cat([other, axis], -1), torch.cat([axis, other], -1)], 1)[:, [0, 1, 1]]
    def col(values):
        return _column(values, ca)

    intra = (col([d for d, _ in _FIT_INTRA]), col([1.0 / s ** 2 for _, s in _FIT_INTRA]),
             col([1.0, 1.0, FIT_SHARE, FIT_SHARE, 1.0]))
    inter = (torch.where(cis, col([d for d, _ in _FIT_CIS]), col([d for d, _ in _FIT_TRANS])),
             bonded * torch.where(cis, col([1 / s ** 2 for _, s in _FIT_CIS]),
                                  col([1 / s ** 2 for _, s in _FIT_TRANS])),
             col([FIT_SHARE, 1.0, 1.0, FIT_SHARE, 1.0]))
    # atoms of the terms within a residue, out of N, C, O, CA: N-CA, CA-C, C=O, N..C, CA..O
    intra_a = torch.tensor([0, 3, 1, 0, 3], device=device)
    intra_b = torch.tensor([3, 1, 2, 1, 2], device=device)
    k_tether = 1.0 / FIT_TETHER ** 2
    k_omega = bonded * torch.where(cis, 1.0 / math.radians(FIT_CIS_OMEGA_SIGMA) ** 2,
                                   1.0 / math.radians(FIT_OMEGA_SIGMA) ** 2)
    omega0 = torch.where(cis, 0.0, math.pi).to(dtype)
    k_plane = bonded / FIT_O_PLANE_SIGMA ** 2
    k_turn = torch.where(cis, 0.0, 1.0 / math.radians(FIT_TURN_SIGMA) ** 2).to(dtype)
    turned = torch.zeros_like(length)
    d_nc, k_nc = _FIT_INTRA[3][0], 1.0 / _FIT_INTRA[3][1] ** 2

    for _ in range(steps):
        # 1. every peptide turns about its CA-CA axis: one Newton step of what the turn changes, its
        # prior and N-CA-C at both ends (N(i)..C(i), C(i+1)..N(i+1))
        r = x - ca[:, None]
        t = _cross(axes, r)  # d r / d turn
        v_c, v_n = x[:, _MC, ..., :-1] - x[:, _MN, ..., :-1], x[:, _MN, ..., 1:] - x[:, _MC, ..., 1:]
        d_c, d_n = torch.sqrt(_dot(v_c, v_c)).clamp(min=1e-6), torch.sqrt(_dot(v_n, v_n)).clamp(min=1e-6)
        u_c, u_n = _dot(v_c, t[:, _MC, ..., :-1]) / d_c, _dot(v_n, t[:, _MN, ..., 1:]) / d_n
        g = k_turn * turned + k_nc * ((d_c - d_nc) * u_c + (d_n - d_nc) * u_n)
        h = k_turn + FIT_SHARE * k_nc * (u_c * u_c + u_n * u_n) + 1e-6
        delta = (-g / h * bonded).clamp(-FIT_MAX_TURN, FIT_MAX_TURN)
        turned = turned + delta
        zero = delta.new_zeros(delta.shape[:-1] + (1,))
        angle = torch.stack([torch.cat([zero, delta], -1), torch.cat([delta, zero], -1)])[[0, 1, 1]]
        cos, sin = torch.cos(angle), torch.sin(angle)
        x = ca[:, None] + r * cos + t * sin + axes * (_dot(axes, r) * (1 - cos))

        # 2. N, C and O: each one Gauss-Newton step of its own terms, the other atoms held
        full = torch.cat([x, ca[:, None]], 1)  # N, C, O, CA
        f, (hd, ho) = _springs(full.index_select(1, intra_a), full.index_select(1, intra_b), *intra)
        grad = k_tether * moved + torch.stack([-f[:, 0] - f[:, 3], f[:, 1] - f[:, 2] + f[:, 3], f[:, 2] + f[:, 4]], 1)
        hess_d = k_tether + torch.stack([hd[:, 0] + hd[:, 3], hd[:, 1] + hd[:, 2] + hd[:, 3], hd[:, 2] + hd[:, 4]], 1)
        hess_o = torch.stack([ho[:, 0] + ho[:, 3], ho[:, 1] + ho[:, 2] + ho[:, 3], ho[:, 2] + ho[:, 4]], 1)
        # across peptide bonds: C-N, CA(i)..N, C..CA(i+1), O..N, O..CA(i+1)
        c, o, n = x[:, _MC, ..., :-1], x[:, _MO, ..., :-1], x[:, _MN, ..., 1:]
        f, hh = _springs(torch.stack([c, ca_i, c, o, o], 1), torch.stack([n, n, ca_j, n, ca_j], 1), *inter)
        g_c, g_o, g_n = -f[:, 0] - f[:, 2], -f[:, 3] - f[:, 4], f[:, 0] + f[:, 1] + f[:, 3]
        h_c, h_o, h_n = ([h[:, 0] + h[:, 2] for h in hh], [h[:, 3] + h[:, 4] for h in hh],
                         [h[:, 0] + h[:, 1] + h[:, 3] for h in hh])
        # omega, the torsion CA(i)-C-N-CA(i+1), on C and N (gradient of Blondel & Karplus 1996)
        f, gg, hh = ca_i - c, c - n, ca_j - n
        a, b = _cross(f, gg), _cross(hh, gg)
        aa, bb = _dot(a, a).clamp(min=1e-12), _dot(b, b).clamp(min=1e-12)
        gn = torch.sqrt(_dot(gg, gg)).clamp(min=1e-6)
        omega = torch.atan2(_dot(_cross(b, a), gg) / gn, _dot(a, b))
        dev = k_omega * wrap_angle(omega - omega0)
        fg, hg = _dot(f, gg) / gn, _dot(hh, gg) / gn
        normal = a / torch.sqrt(aa)  # of the plane CA(i), C, N(i+1)
        a, b = a / aa, b / bb
        w_c, w_n = (gn + fg) * a - hg * b, (hg - gn) * b - fg * a
        g_c, g_n, g_o = g_c + dev * w_c, g_n + dev * w_n, g_o + (k_plane * _dot(o - c, normal)) * normal
        # O in that plane (above): a term on O alone, which follows the plane
        for h, (d_, o_) in ((h_c, _outer(w_c, FIT_SHARE * k_omega)), (h_n, _outer(w_n, FIT_SHARE * k_omega)),
                            (h_o, _outer(normal, k_plane))):
            h[0], h[1] = h[0] + d_, h[1] + o_
        # (grad and hess are new tensors: adding to them in place is safe for autograd)
        grad[:, _MN, ..., 1:] += g_n
        grad[:, _MC, ..., :-1] += g_c
        grad[:, _MO, ..., :-1] += g_o
        for hess, part in ((hess_d, 0), (hess_o, 1)):
            hess[:, _MN, ..., 1:] += h_n[part]
            hess[:, _MC, ..., :-1] += h_c[part]
            hess[:, _MO, ..., :-1] += h_o[part]
        step = _solve(hess_d, hess_o, grad)
        step = step * (FIT_MAX_STEP / torch.sqrt(_dot(step, step)).clamp(min=FIT_MAX_STEP))  # no atom jumps
        x, moved = x - step, moved - step
    out = slots.clone()
    out[..., nco, :] = x.movedim((0, 1), (-1, -2))
    return out
