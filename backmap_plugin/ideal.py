"""The deterministic geometric builder (``--method ideal``).

Backbone from the C-alpha trace with rigid ideal peptide planes
(:mod:`backmap_plugin.backbone`); side chains from Engh & Huber geometry with
the most common rotamer of the residue type, switching to another common
rotamer where that removes overlaps with the backbone and, in a second pass,
with the side chains chosen for the neighbours. Every residue is built,
termini and OXT included. It is the baseline the generative model must beat
and the fallback when no model is available.
"""

from __future__ import annotations

import numpy as np
import torch

from . import chemistry as chem
from .backbone import build_backbone
from .geometry import build_residues, extend_with_context, ideal_internal
from .rotamers import load_rotamers
from .mappings import Mapping
from .topology import ProteinTopology

#: Rotamers tried per residue (most frequent first).
MAX_CANDIDATES = 4
#: Overlap penalty: sum of (OVERLAP_DISTANCE - d)^2 over close atom pairs.
OVERLAP_DISTANCE = 3.0
#: Cost of choosing a less frequent rotamer, per unit of -log(frequency).
FREQUENCY_WEIGHT = 0.05
_SIDE = list(range(chem.SLOT_CB + 1, chem.SLOT_OXT))  # rotatable side-chain atoms
_FIXED = [chem.SLOT_N, chem.SLOT_CA, chem.SLOT_C, chem.SLOT_O, chem.SLOT_CB]
_FIXED_REACH = 2.5  # the backbone atoms and CB lie within this of their CA


def side_chain_internal(res_type: np.ndarray, chis: torch.Tensor) -> torch.Tensor:
    """Internal coordinates of side chains with given chi angles, ideal otherwise.

    Parameters
    ----------
    res_type : numpy.ndarray
        (R,) residue types.
    chis : torch.Tensor
        (..., R, 4) chi angles in radians (NaN or anything where absent).

    Returns
    -------
    torch.Tensor
        (..., R, N_SLOTS, 3); the proline CD torsion follows the pucker
        (sign of chi1) so the ring closes; absent slots hold zeros.
        Differentiable in ``chis``.
    """
    rot = load_rotamers()
    device, dtype = chis.device, chis.dtype
    ideal = ideal_internal(torch.as_tensor(res_type, device=device), dtype)  # (R, S, 3)
    chi_of = torch.as_tensor(chem.ZMATRIX_CHI[res_type], device=device)  # (R, S)
    index = chi_of.clamp(min=0).expand(chis.shape[:-1] + chi_of.shape[-1:])
    torsion = torch.where(chi_of >= 0, torch.gather(chis, -1, index), ideal[..., 2])
    pro = torch.as_tensor(res_type == chem.RESIDUE_INDEX["PRO"], device=device)
    pucker = torch.where(chis[..., 0] > 0, rot.pro_cd_torsion["endo"], rot.pro_cd_torsion["exo"])
    pro_cd = chem.RESIDUES["PRO"].atoms.index("CD")
    cd = torch.where(pro, torch.deg2rad(pucker), torsion[..., pro_cd])
    torsion = torch.cat([torsion[..., :pro_cd], cd[..., None], torsion[..., pro_cd + 1 :]], -1)
    ic = torch.stack([ideal[..., 0].expand_as(torsion), ideal[..., 1].expand_as(torsion), torsion], -1)
    return torch.nan_to_num(ic)


def _candidate_internal(res_type: np.ndarray, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Internal coordinates of each residue's candidate rotamers.

    Returns (K, R, N_SLOTS, 3) internal coordinates and (K, R) cost (inf for
    candidates a residue does not have).
    """
    rot = load_rotamers()
    chis = torch.as_tensor(rot.chis[res_type, :MAX_CANDIDATES], dtype=dtype, device=device)  # (R, K, 4)
    freq = torch.as_tensor(rot.freq[res_type, :MAX_CANDIDATES], dtype=dtype, device=device)
    n_cand = max(1, min(MAX_CANDIDATES, int(rot.count[res_type].max(initial=1))))
    ics = side_chain_internal(res_type, chis[:, :n_cand].transpose(0, 1))  # (K, R, S, 3)
    k = torch.arange(n_cand, device=device)[:, None]
    has = (torch.as_tensor(rot.count[res_type], device=device)[None] > k) | (k == 0)
    cost = -FREQUENCY_WEIGHT * torch.log(freq[:, :n_cand].T.clamp(min=1e-3))
    return ics, torch.where(has, cost, float("inf"))


def _neighbour_pairs(ca: torch.Tensor, owner: torch.Tensor, cutoff: torch.Tensor):
    """Residue pairs (i, j), i != j, with CA-CA below ``cutoff[i, j]`` in any frame.

    Only residues with ``owner`` True appear as i. Returns two (P,) tensors.
    """
    close = (torch.cdist(ca, ca).amin(0) < cutoff) & owner[:, None]
    close.fill_diagonal_(False)
    return torch.nonzero(close, as_tuple=True)


def _overlap(side, env, side_mask, env_mask, pi, pj, n_res, frames_per_batch=8) -> torch.Tensor:
    """Overlap score of every residue's side chain with its neighbours' atoms.

    side (F, K, R, A, 3), env (F, R, B, 3) -> (F, K, R); pairs (pi, pj).
    """
    mask = (side_mask[pi][:, :, None] & env_mask[pj][:, None, :]).to(side.dtype)  # (P, A, B)
    out = torch.zeros(side.shape[:2] + (n_res,), dtype=side.dtype, device=side.device)
    if len(pi) == 0:
        return out
    for f in range(0, side.shape[0], frames_per_batch):
        a = side[f : f + frames_per_batch][:, :, pi]  # (f, K, P, A, 3)
        b = env[f : f + frames_per_batch][:, None, pj]  # (f, 1, P, B, 3)
        d = torch.cdist(a, b)  # (f, K, P, A, B)
        per_pair = ((torch.relu(OVERLAP_DISTANCE - d) ** 2) * mask).sum((-1, -2))
        out[f : f + frames_per_batch].index_add_(2, pi, per_pair)
    return out


def build_ideal(ca: torch.Tensor, protein: ProteinTopology) -> torch.Tensor:
    """All heavy atoms from a C-alpha trace by ideal geometry.

    Parameters
    ----------
    ca : torch.Tensor
        (F, R, 3) C-alpha positions, Angstrom.
    protein : ProteinTopology
        Residue types, segments (every chain at least two residues) and C
        termini.

    Returns
    -------
    torch.Tensor
        (F, R, N_SLOTS, 3) coordinates; slots a residue does not have are
        zero.
    """
    backbone = build_backbone(ca, protein.backbone_layout, protein.res_type)  # (F, R, S, 3)
    ics, cost = _candidate_internal(protein.res_type, ca.dtype, ca.device)  # (K, R, S, 3), (K, R)
    return place_side_chains(backbone, protein, ics, cost)


def place_side_chains(backbone: torch.Tensor, protein: ProteinTopology, ics: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """Choose each residue's side chain among candidates so that overlaps are avoided.

    A candidate's score is its ``cost`` plus its overlap with the backbone
    (N, CA, C, O, CB) of neighbouring residues; a second pass adds the
    overlap with the side chains chosen for the neighbours. OXT is built at
    C termini.

    Parameters
    ----------
    backbone : torch.Tensor
        (F, R, N_SLOTS, 3) with N, CA, C, O placed.
    protein : ProteinTopology
    ics : torch.Tensor
        (K, R, N_SLOTS, 3) or (F, K, R, N_SLOTS, 3) internal coordinates of
        the candidates (side-chain slots used).
    cost : torch.Tensor
        (K, R) or (F, K, R) cost of each candidate (inf: not a candidate).

    Returns
    -------
    torch.Tensor
        (F, R, N_SLOTS, 3); slots a residue does not have are zero.
    """
    if ics.dim() == 4:
        ics, cost = ics[None], cost[None]
    res_type = protein.res_type
    ca = backbone[..., chem.SLOT_CA, :]
    n_res = ca.shape[-2]
    rt = torch.as_tensor(res_type, device=ca.device)
    identity = np.repeat(np.arange(n_res)[:, None], 4, axis=1)
    ext = extend_with_context(backbone, identity)
    slots = [s for s in chem.BUILD_ORDER if s >= chem.SLOT_CB and s != chem.SLOT_OXT]
    cand = build_residues(ext[:, None], ics, rt, slots=slots)[..., : chem.N_SLOTS, :]  # (F,K,R,S,3)

    exists = torch.as_tensor(chem.SLOT_EXISTS[res_type], device=ca.device)
    side_mask = exists[:, _SIDE]
    fixed_mask = exists[:, _FIXED]
    side = cand[..., _SIDE, :]
    # how far each residue's side chain reaches from its CA (over candidates)
    reach = ((side - ca[:, None, :, None, :]).norm(dim=-1) * side_mask).amax((0, 1, 3))  # (R,)
    owner = (torch.isfinite(cost).sum(-2) > 1).any(0)  # residues with a choice to make
    pi, pj = _neighbour_pairs(ca, owner, reach[:, None] + _FIXED_REACH + OVERLAP_DISTANCE)
    score = _overlap(side, backbone[..., _FIXED, :], side_mask, fixed_mask, pi, pj, n_res) + cost
    choice = score.argmin(1)  # (F, R)
    frames = torch.arange(ca.shape[0], device=ca.device)[:, None]
    residues = torch.arange(n_res, device=ca.device)[None, :]
    chosen = cand[frames, choice, residues]  # (F, R, S, 3)
    # second pass: against the neighbours' chosen side chains as well
    pi, pj = _neighbour_pairs(ca, owner, reach[:, None] + reach[None, :] + OVERLAP_DISTANCE)
    score = score + _overlap(side, chosen[..., _SIDE, :], side_mask, side_mask, pi, pj, n_res)
    choice = score.argmin(1)
    out = cand[frames, choice, residues]

    oxt_ic = ics[:, 0].expand(ca.shape[0], -1, -1, -1)
    ext = extend_with_context(out, identity)
    out = build_residues(ext, oxt_ic, rt, slots=(chem.SLOT_OXT,))[..., : chem.N_SLOTS, :]
    mask = exists.clone()
    mask[:, chem.SLOT_OXT] = torch.as_tensor(protein.c_terminal, device=ca.device)
    return out * mask[..., None]


#: Fitting a C-alpha trace to non-CA beads: damped fixed-point steps, and
#: constraint sweeps that keep bonded C-alpha atoms 3.8 Angstrom apart (the
#: builder's peptide planes assume it; without them ~20 % of bonds come out
#: off ideal). Undamped steps oscillate as side-chain rotamers flip.
_FIT_STEPS = 16
_FIT_DAMPING = 0.5
_FIT_SWEEPS = 30


def _constrain_trace(ca: torch.Tensor, same_segment: torch.Tensor, sweeps: int = _FIT_SWEEPS) -> torch.Tensor:
    """Move bonded C-alpha atoms (``same_segment``, (R-1,) bool) towards 3.8 Angstrom apart."""
    ca = ca.clone()
    weight = same_segment.to(ca.dtype)[None, :, None]
    for _ in range(sweeps):
        v = ca[:, 1:] - ca[:, :-1]
        d = v.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        corr = 0.5 * (d - chem.BOND_CA_CA_TRANS) / d * v * weight
        ca[:, :-1] += corr
        ca[:, 1:] -= corr
    return ca


def backmap_ideal(beads: torch.Tensor, protein: ProteinTopology, mapping: Mapping, samples: int, seeds=None) -> torch.Tensor:
    """The ``ideal`` method: all heavy atoms from one bead per residue.

    For C-alpha beads this is :func:`build_ideal`. For other mappings the
    C-alpha trace is fitted so that the built structure's beads match the
    input: damped fixed-point steps, keeping per frame the iteration whose
    beads lie closest (mean distance) to the input.

    Parameters
    ----------
    beads : torch.Tensor
        (F, R, 3) bead positions, Angstrom.
    protein : ProteinTopology
    mapping : Mapping
    samples : int
        Copies per frame (the method is deterministic).
    seeds : array, optional
        Per-frame seeds (unused: deterministic).

    Returns
    -------
    torch.Tensor
        (F, samples, R, N_SLOTS, 3).
    """
    build = lambda trace: build_ideal(trace, protein)  # noqa: E731
    if mapping.bead_is_ca:
        atoms = build(beads)
    else:
        present = protein.slot_mask.copy()
        present[:, chem.SLOT_OXT] = False
        same = torch.as_tensor(protein.segment[1:] == protein.segment[:-1], device=beads.device)
        ca = _constrain_trace(beads, same)
        atoms = build(ca)
        kept = atoms.clone()
        best = torch.full(beads.shape[:1], float("inf"), dtype=beads.dtype, device=beads.device)
        for step in range(_FIT_STEPS + 1):
            deviation = beads - mapping.bead_positions(atoms, present, protein.res_type)
            mean = deviation.norm(dim=-1).mean(-1)
            better = mean < best
            best = torch.where(better, mean, best)
            kept[better] = atoms[better]
            if step == _FIT_STEPS:
                break
            ca = _constrain_trace(ca + _FIT_DAMPING * deviation, same)
            atoms = build(ca)
        atoms = kept
    return atoms[:, None].expand(-1, samples, -1, -1, -1)
