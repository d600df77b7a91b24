"""Disulfide bonds closed in built structures: cysteine pairs whose SG atoms can meet.

A C-alpha trace or residue centres of mass say nothing of disulfides, and
the builders choose each cysteine's rotamer alone, so bonded cysteines
come out with their SG atoms 3-4 Angstrom apart and a later refinement
(:mod:`backmap_plugin.openmm.structure`, SG-SG below 2.5 Angstrom) makes
free thiols of them. :func:`close_disulfides` turns the SG atoms of
cysteine pairs about their CA-CB bonds (bond lengths and angles kept)
until they meet at the S-S bond length with CB-SG-SG near its angle, where
they can.

The rule, measured on 425 train crystal structures (cysteine pairs with
C-alpha atoms within 8 Angstrom: 918, of them 597 disulfides): every
disulfide's C-alpha atoms lie within 7.2 Angstrom, and whether the SG
atoms can meet is a matter of the CB atoms: CB-CB below 4.0 Angstrom 97 %
disulfides, 4.0-4.5 83 %, 4.5-5.0 33 %, beyond 5.0 none (pairs with
C-alpha atoms within 6.8). Lengths in Angstrom, angles in radians.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from backmap_plugin.build.ideal import RELIEF_TRIGGER, relieve_clashes
from backmap_plugin.build.relax import is_side
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.checks import ANGLE_SIGMA, BOND_SIGMA
from backmap_plugin.core.geometry import rotate_about_axis
from backmap_plugin.core.topology import ProteinTopology

#: Cysteine pairs whose C-alpha atoms lie farther apart than this are never bonded.
MAX_CA_DISTANCE = 7.2
#: SG turns tried per cysteine (a full turn about CA-CB in this many steps).
TURNS = 72
#: Turns tried again about the best two, over one step of :data:`TURNS` (the S-S bond to about 0.01 Angstrom; at the
#: coarse steps alone it missed by up to 0.08, validation's limit).
FINE_TURNS = 11
#: Turns close a disulfide where they put the SG atoms within this of the S-S bond length
#: (:data:`~backmap_plugin.core.chemistry.BOND_SG_SG`) and both CB-SG-SG angles in :data:`ANGLE_RANGE`.
BOND_TOLERANCE = 0.3
ANGLE_RANGE = (math.radians(90.0), math.radians(125.0))
#: Weight of the squared CB-SG-SG angle deviations (radians^2) against the squared S-S deviation (Angstrom^2): the
#: deviations in the units of validation's sigmas (:data:`~backmap_plugin.core.checks.BOND_SIGMA`, ``ANGLE_SIGMA``).
ANGLE_WEIGHT = (BOND_SIGMA / math.radians(ANGLE_SIGMA)) ** 2
#: Weight per Angstrom^2 an SG atom moves from where it was (:func:`close_bonded`: where a fit to Martini 3 beads put
#: it, its side-chain bead's share), against the squared S-S deviation: small, it picks among closures alike (without
#: it, SG atoms turned away from their beads: side-chain beads of a real martinize2 file 0.31 A off, 0.14 with it;
#: at 1.0 the S-S bond gave way, 1.75-2.27 A).
STAY_WEIGHT = 0.003
#: Share of a trajectory's leading structures in which a pair must be bonded to be bonded in all
#: (:func:`common_disulfides`).
COMMON_SHARE = 0.5
#: Pairs of turns searched at a time (a few hundred MB of float32 work arrays).
TURN_PAIRS_PER_BLOCK = 2_000_000
#: SG atoms of cysteines not bonded to each other are kept at least this far apart where the turns allow
#: (refinement bonds SG atoms closer than 2.5 Angstrom; in cystine knots the four SG atoms of two disulfides
#: crowd together, and the first closures left a third pair 1.96 Angstrom apart).
CLEARANCE = 3.2
#: Weight of the squared shortfall from :data:`CLEARANCE` (Angstrom^2) in the score of a closure.
CLEARANCE_WEIGHT = 10.0
_SG = chem.RESIDUES["CYS"].atoms.index("SG")


def close_disulfides(atoms: torch.Tensor, protein: ProteinTopology,
                     pairs: np.ndarray | None = None) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Turn the SG atoms of cysteine pairs that can meet onto a disulfide, structure by structure.

    For every cysteine pair whose C-alpha atoms lie within
    :data:`MAX_CA_DISTANCE`, each SG is turned about its CA-CB bond in
    :data:`TURNS` steps; the pairs of turns that close the bond (S-S within
    :data:`BOND_TOLERANCE` of the bond length, both CB-SG-SG angles in
    :data:`ANGLE_RANGE`) are scored by
    ``(SG-SG - BOND_SG_SG)^2 + ANGLE_WEIGHT * sum (CB-SG-SG - ANGLE_CB_SG_SG)^2``
    and the least taken. Pairs that can close are bonded from the least
    score on, each cysteine at most once. Side chains the turned SG atoms
    came to overlap are then turned away (:func:`_relieve_closed`).

    Parameters
    ----------
    atoms : torch.Tensor
        (N, R, N_SLOTS, 3) heavy atoms of N structures.
    protein : ProteinTopology
    pairs : numpy.ndarray, optional
        (P, 2) residue indices of the only cysteine pairs to consider (no
        cysteine in two), e.g. :func:`common_disulfides` of a trajectory's
        leading frames; default every pair.

    Returns
    -------
    atoms : torch.Tensor
        (N, R, N_SLOTS, 3), the SG atoms of the bonded pairs moved (and the
        side chains they overlapped).
    pairs : numpy.ndarray
        (P, 2) residue indices of the cysteine pairs considered.
    bonded : numpy.ndarray
        (N, P) bool: the pairs bonded in each structure.
    """
    pairs, can, bonded, sg_a, sg_b = _closures(atoms, protein, pairs)
    out = atoms.clone()
    for n, p in zip(*np.nonzero(bonded)):
        out[n, pairs[p, 0], _SG] = sg_a[n, p]
        out[n, pairs[p, 1], _SG] = sg_b[n, p]
    _clear_all_crowded(out, protein, pairs, bonded)
    return _relieve_closed(out, protein, pairs, bonded), pairs, bonded


def _relieve_closed(atoms: torch.Tensor, protein: ProteinTopology, pairs: np.ndarray,
                    bonded: np.ndarray) -> torch.Tensor:
    """``atoms`` (N, R, N_SLOTS, 3) with the side chains that the SG atoms of the bonded pairs (``bonded``: (N, P))
    overlap, nearer than :data:`~backmap_plugin.build.ideal.RELIEF_TRIGGER`, turned away by the builders' clash
    relief (:func:`~backmap_plugin.build.ideal.relieve_clashes`), the bonded cysteines held: the builders placed
    the side chains around each SG as they built it, and the turns onto the S-S bond took no account of them (an
    Fv, 5CBA: a GLN NE2 1.04 A from a closed SG)."""
    dev = atoms.device
    slots = torch.arange(atoms.shape[2], device=dev)
    side = (torch.as_tensor(protein.slot_mask, device=dev) & is_side(slots)).flatten()  # (R * N_SLOTS,)
    frames, turning = [], []
    for n in np.nonzero(bonded.any(1))[0]:
        cys = torch.as_tensor(pairs[bonded[n]].ravel(), device=dev)
        distance = torch.cdist(atoms[n, cys, _SG], atoms[n].flatten(0, 1), compute_mode="donot_use_mm_for_euclid_dist")
        near = ((distance < RELIEF_TRIGGER) & side).any(0).view(atoms.shape[1:3]).any(1)  # (R,)
        near[cys] = False
        if near.any():
            frames.append(int(n))
            turning.append(near)
    if not frames:
        return atoms
    index = torch.as_tensor(frames, device=dev)
    out = atoms.clone()
    out[index] = relieve_clashes(atoms[index], protein, may_turn=torch.stack(turning))
    return out


def _closures(atoms: torch.Tensor, protein: ProteinTopology, pairs: np.ndarray | None) -> tuple:
    """The search of :func:`close_disulfides`: the pairs considered (P, 2), those that can close in each
    structure (N, P), those bonded there (N, P; least score first, each cysteine once) and their SG atoms
    (N, P, 3) twice."""
    if pairs is None:
        cys = np.nonzero(protein.res_type == chem.RESIDUE_INDEX["CYS"])[0]
        pairs = np.array([(a, b) for k, a in enumerate(cys) for b in cys[k + 1:]], dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    ca = atoms[..., chem.SLOT_CA, :]
    if len(pairs):
        near = ((ca[:, pairs[:, 0]] - ca[:, pairs[:, 1]]).norm(dim=-1) <= MAX_CA_DISTANCE).cpu().numpy()
        pairs = pairs[near.any(0)]
    bonded = np.zeros((len(atoms), len(pairs)), dtype=bool)
    if not len(pairs):
        return pairs, bonded.copy(), bonded, None, None
    a, b = (torch.as_tensor(pairs[:, k], device=atoms.device) for k in (0, 1))
    score, sg_a, sg_b = _best_turns(atoms, a, b)
    can = torch.isfinite(score) & ((ca[:, a] - ca[:, b]).norm(dim=-1) <= MAX_CA_DISTANCE)
    can, score = can.cpu().numpy(), score.cpu().numpy()
    for n in range(len(atoms)):
        used = set()
        for p in np.argsort(score[n], kind="stable"):
            if can[n, p] and not used & set(pairs[p].tolist()):
                used.update(pairs[p].tolist())
                bonded[n, p] = True
    return pairs, can, bonded, sg_a, sg_b


def _clear_crowded(out: torch.Tensor, n: int, bonded: np.ndarray, cys: np.ndarray) -> None:
    """Close again, in structure ``n`` of ``out`` (in place), each bonded pair (``bonded``: (B, 2) residues) with an
    SG atom nearer than :data:`CLEARANCE` to the SG of a cysteine it is not bonded to, scoring the closures with
    the shortfall from the clearance too: where disulfides crowd (cystine knots), closing each pair alone left
    SG atoms of different pairs as close as bonded ones. Two rounds, pair by pair."""
    for _ in range(2):
        moved = False
        for a, b in bonded:
            others = torch.as_tensor(cys[(cys != a) & (cys != b)], device=out.device)
            if not len(others):
                continue
            sg_others = out[n, others, _SG]  # (C, 3)
            ends = out[n, [a, b], _SG]
            if (torch.cdist(ends, sg_others) >= CLEARANCE).all():
                continue
            index = torch.as_tensor([a], device=out.device), torch.as_tensor([b], device=out.device)

            def crowding(ring_a, ring_b):
                """(1, 1, T, T) the closures' shortfall from the clearance to the other SG atoms."""
                short_a, short_b = ((CLEARANCE - torch.cdist(ring.reshape(-1, 3), sg_others)).clamp(min=0).pow(2)
                                    .sum(-1).reshape(ring.shape[:-1]) for ring in (ring_a, ring_b))
                return CLEARANCE_WEIGHT * (short_a[..., :, None] + short_b[..., None, :])

            score, sg_a, sg_b = _closing_turns(out[n : n + 1], *index, crowding)
            if not torch.isfinite(score[0, 0]):
                continue
            out[n, a, _SG] = sg_a[0, 0]
            out[n, b, _SG] = sg_b[0, 0]
            moved = True
        if not moved:
            return


def common_disulfides(atoms: torch.Tensor, protein: ProteinTopology,
                      share: float = COMMON_SHARE) -> tuple[np.ndarray, dict]:
    """The cysteine pairs :func:`close_disulfides` bonds in at least ``share`` of the structures, most often
    bonded first, no cysteine in two: one set of bonds for the frames of a trajectory; and where the choice was
    a guess.

    Each structure alone may pair its cysteines otherwise where they crowd
    together (a three-disulfide peptide's 24 NMR models: five pairings,
    none in every model); refinement and MD need one topology.

    Parameters
    ----------
    atoms : torch.Tensor
        (N, R, N_SLOTS, 3) heavy atoms of N structures.
    protein : ProteinTopology
    share : float
        Smallest share of the structures a pair must be bonded in.

    Returns
    -------
    pairs : numpy.ndarray
        (P, 2) residue indices.
    other_partners : dict
        Residue of a chosen pair -> residues it could bond as well (in at
        least ``share`` of the structures): where cysteines crowd (cystine
        knots), the pairing is a guess.
    """
    pairs, can, bonded, _, _ = _closures(atoms, protein, None)
    count = bonded.sum(0)
    chosen, used = [], set()
    for p in np.argsort(-count, kind="stable"):
        if count[p] >= share * len(atoms) and not used & set(pairs[p].tolist()):
            chosen.append(pairs[p])
            used.update(pairs[p].tolist())
    chosen = np.array(chosen, dtype=np.int64).reshape(-1, 2)
    could = pairs[can.mean(0) >= share] if len(pairs) else pairs
    other_partners = {}
    for a, b in chosen:
        for cys, partner in ((a, b), (b, a)):
            others = sorted(int(x) for x in could[(could == cys).any(1)].ravel() if x not in (cys, partner))
            if others:
                other_partners[int(cys)] = others
    return chosen, other_partners


def close_bonded(atoms: torch.Tensor, protein: ProteinTopology, pairs: np.ndarray, bonded: np.ndarray) -> torch.Tensor:
    """Put cysteine pairs on the S-S bond in the structures where they are bonded (decided elsewhere: Martini 3
    beads).

    Each SG is turned about its CA-CB bond to the best closure of the pair
    (as :func:`close_disulfides` scores them, and by how far the SG atoms
    move, :data:`STAY_WEIGHT`; bond lengths and angles kept), where a turn
    closes it (else it stays), and pairs crowding another
    cysteine are closed again keeping clearance. A fit that only pulled the
    SG atoms together left S-S bonds of 1.4-2.5 Angstrom.

    Parameters
    ----------
    atoms : torch.Tensor
        (N, R, N_SLOTS, 3) heavy atoms of N structures.
    protein : ProteinTopology
    pairs : numpy.ndarray
        (P, 2) residue indices of cysteine pairs.
    bonded : numpy.ndarray
        (N, P) bool: the pair is bonded in the structure.

    Returns
    -------
    torch.Tensor
        (N, R, N_SLOTS, 3), the SG atoms of the bonded pairs moved.
    """
    out = atoms.clone()
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    for p, (a, b) in enumerate(pairs):
        frames = np.nonzero(bonded[:, p])[0]
        if not len(frames):
            continue
        index = [torch.as_tensor([x], device=atoms.device) for x in (a, b)]
        part = atoms[torch.as_tensor(frames, device=atoms.device)]
        score, sg_a, sg_b = _best_turns(part, *index, stay=part[:, [a, b], _SG][:, None])
        closes = torch.isfinite(score[:, 0])
        where = torch.as_tensor(frames, device=atoms.device)[closes]
        out[where, a, _SG] = sg_a[closes, 0]
        out[where, b, _SG] = sg_b[closes, 0]
    _clear_all_crowded(out, protein, pairs, bonded)
    return out


def _clear_all_crowded(out: torch.Tensor, protein: ProteinTopology, pairs: np.ndarray, bonded: np.ndarray) -> None:
    """:func:`_clear_crowded` in each structure of ``out`` (in place) with pairs bonded (``bonded``: (N, P))."""
    cys = np.nonzero(protein.res_type == chem.RESIDUE_INDEX["CYS"])[0]
    for n in np.nonzero(bonded.any(1))[0]:
        _clear_crowded(out, int(n), pairs[bonded[n]], cys)


def _best_turns(atoms: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                stay: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Of the SG turns of cysteines ``a`` and ``b`` (P,) in structures (N, R, N_SLOTS, 3), those that close each
    pair best (:func:`_closing_turns`), searched :data:`TURN_PAIRS_PER_BLOCK` pairs of turns at a time; with
    ``stay`` (N, P, 2, 3), SG positions to keep near (:data:`STAY_WEIGHT`)."""
    block = max(1, TURN_PAIRS_PER_BLOCK // (len(a) * TURNS * TURNS))  # structures searched at a time
    found = []
    for k in range(0, len(atoms), block):
        penalty = None
        if stay is not None:
            near = stay[k : k + block]

            def penalty(sg_a, sg_b, near=near):
                away_a = (sg_a - near[:, :, None, 0]).pow(2).sum(-1)  # (n, P, T)
                away_b = (sg_b - near[:, :, None, 1]).pow(2).sum(-1)
                return STAY_WEIGHT * (away_a[..., :, None] + away_b[..., None, :])
        found.append(_closing_turns(atoms[k : k + block], a, b, penalty))
    return tuple(torch.cat(x) for x in zip(*found))


def _closing_turns(atoms: torch.Tensor, a: torch.Tensor, b: torch.Tensor, penalty=None) -> tuple[torch.Tensor, ...]:
    """The SG turns of cysteines ``a`` and ``b`` (P,) in structures (N, R, N_SLOTS, 3) that close each pair best:
    score (N, P) (inf where none closes it) and the two SG positions (N, P, 3). The best of :data:`TURNS` turns
    each, then of :data:`FINE_TURNS` about it; ``penalty(sg_a, sg_b)`` ((N, P, T, 3) twice -> (N, P, T, T)), if
    given, is added to the score."""
    step = 2 * math.pi / TURNS
    grid = (torch.arange(TURNS, device=atoms.device, dtype=atoms.dtype) * step).expand(len(atoms), len(a), TURNS)
    fine = torch.linspace(-step / 2, step / 2, FINE_TURNS, device=atoms.device, dtype=atoms.dtype)

    def scored(turns_a, turns_b):
        score, sg_a, sg_b = _turn_grid(atoms, a, b, turns_a, turns_b)
        return (score if penalty is None else score + penalty(sg_a, sg_b)), sg_a, sg_b

    best = scored(grid, grid)[0].flatten(2).argmin(-1)  # (N, P)
    score, sg_a, sg_b = scored((best // TURNS * step)[..., None] + fine, (best % TURNS * step)[..., None] + fine)
    score, best = score.flatten(2).min(-1)
    pick = lambda sg, i: torch.gather(sg, 2, i[..., None, None].expand(-1, -1, 1, 3))[:, :, 0]  # noqa: E731
    return score, pick(sg_a, best // FINE_TURNS), pick(sg_b, best % FINE_TURNS)


def _turn_grid(atoms: torch.Tensor, a: torch.Tensor, b: torch.Tensor, turns_a: torch.Tensor,
               turns_b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every pair of SG turns of cysteines ``a`` and ``b`` (P,) in structures (N, R, N_SLOTS, 3), by the angles
    ``turns_a`` and ``turns_b`` (N, P, T): the closure's score (N, P, T, T; inf where it does not close the bond)
    and the turned SG atoms of each (N, P, T, 3)."""
    dtype, dev = atoms.dtype, atoms.device

    def circle(residue, turns):
        """(N, P, T, 3) SG of ``residue`` turned about its CA-CB bond; (N, P, 3) its CB."""
        cb, sg = atoms[:, residue, chem.SLOT_CB], atoms[:, residue, _SG]
        axis = cb - atoms[:, residue, chem.SLOT_CA]
        axis = axis / axis.norm(dim=-1, keepdim=True)
        n, p, t = turns.shape
        turned = rotate_about_axis(sg[:, :, None, None].expand(n, p, t, 1, 3),
                                   cb[:, :, None].expand(n, p, t, 3), axis[:, :, None].expand(n, p, t, 3), turns)
        return turned[..., 0, :], cb

    sg_a, cb_a = circle(a, turns_a)
    sg_b, cb_b = circle(b, turns_b)
    bond = sg_b[:, :, None] - sg_a[:, :, :, None]  # (N, P, TURNS, TURNS, 3): SG(a) -> SG(b)
    length = bond.norm(dim=-1)
    angle_a = _angle(cb_a[:, :, None, None] - sg_a[:, :, :, None], bond)
    angle_b = _angle(cb_b[:, :, None, None] - sg_b[:, :, None], -bond)
    ideal = math.radians(chem.ANGLE_CB_SG_SG)
    low, high = ANGLE_RANGE
    closes = ((length - chem.BOND_SG_SG).abs() <= BOND_TOLERANCE) & (angle_a >= low) & (angle_a <= high)
    closes &= (angle_b >= low) & (angle_b <= high)
    score = (length - chem.BOND_SG_SG) ** 2 + ANGLE_WEIGHT * ((angle_a - ideal) ** 2 + (angle_b - ideal) ** 2)
    return torch.where(closes, score, torch.full((), float("inf"), dtype=dtype, device=dev)), sg_a, sg_b


def _angle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Angle between vectors ``u`` and ``v`` (broadcast), radians."""
    cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1)).clamp(min=1e-9)
    return torch.arccos(cos.clamp(-1.0, 1.0))
