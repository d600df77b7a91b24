"""The deterministic geometric builder (``--method ideal``).

Backbone from the C-alpha trace with rigid ideal peptide planes
(:mod:`backmap_plugin.build.backbone`); side chains from Engh & Huber geometry with
the most common rotamer of the residue type, switching to another common
rotamer where that removes overlaps, then turned out of the clashes that
remain by a few steps on their chi angles (:func:`place_side_chains`, which
the ``model`` method shares). Every residue is built, termini and OXT
included. It is the baseline the generative model must beat
and the fallback when no model is available.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from backmap_plugin.build import relax
from backmap_plugin.build.backbone import (
    build_backbone,
    fit_backbone,
    noisy_trace_lengths,
    noisy_traces,
)
from backmap_plugin.build.backbone_contacts import separate_planes
from backmap_plugin.build.rotamers import load_rotamers
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.geometry import build_residues, ideal_internal
from backmap_plugin.core.mappings import Mapping
from backmap_plugin.core.pbc import image_gap
from backmap_plugin.core.topology import ProteinTopology

#: Rotamers tried per residue (most frequent first).
MAX_CANDIDATES = 4
#: Overlap penalty: sum of (OVERLAP_DISTANCE - d)^2 over close atom pairs.
OVERLAP_DISTANCE = 3.0
#: Cost of choosing a less frequent rotamer, per unit of -log(frequency).
FREQUENCY_WEIGHT = 0.05
#: Rounds of candidate choice in :func:`place_side_chains`, and the overlap
#: above which a residue's side chain is reconsidered.
PASSES = 2
ACTIVE_OVERLAP = 0.5
#: Candidates are scored only while their cost is below that of the first
#: candidate plus PRUNE_MARGIN times the first one's overlap.
PRUNE_MARGIN = 1.0
#: Clash relief (:func:`backmap_plugin.build.relax.relieve_clashes`): steps, the
#: distance below which atom pairs are pushed apart, the chi restraint
#: (per rad^2), the step size (rad per unit gradient) and the largest turn
#: per step (rad).
RELIEF_STEPS = 10
RELIEF_DISTANCE = 2.8
RELIEF_RESTRAINT = 1.0
RELIEF_STEP_SIZE = 0.05
RELIEF_MAX_TURN = 0.2
#: The relief lists its contacts once, up to RELIEF_DISTANCE + RELIEF_MARGIN: a side chain it turns farther than the
#: margin meets atoms it does not see. At 1.0, 2FD6's TYR195 turned 68 degrees about chi1 onto a backbone 4.15 A
#: away (OH 1.05 A from N); at 1.5, on 16 train crystal C-alpha traces (model): clashes 0.91 -> 0.54 per 100
#: residues (mean), heavy-atom RMSD 1.386 -> 1.384 A, the side-chain placement 3 % slower.
RELIEF_MARGIN = 1.5
RELIEF_TRIGGER = 2.5
#: Contacts listed for a placement: those its choice and its relief look at.
_LIST_CUTOFF = max(OVERLAP_DISTANCE, RELIEF_DISTANCE + RELIEF_MARGIN)
_BACKBONE_REACH = 2.6  # N, C, O, CB and OXT lie within this of their CA


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


#: Largest distance (Angstrom) of any atom of a residue type from its CA, over all chi angles, plus
#: 0.3 for the grid spacing, at least the backbone's reach: what :func:`derive_reach` computes (a 0.2 s
#: grid search that every process would repeat; tests check that the two agree).
REACH = {
    'ALA': 2.5999999046325684,
    'ARG': 7.614047050476074,
    'ASN': 4.045735836029053,
    'ASP': 3.985842704772949,
    'CYS': 3.1098499298095703,
    'GLN': 5.274022579193115,
    'GLU': 5.229616641998291,
    'GLY': 2.5999999046325684,
    'HIS': 5.012315273284912,
    'ILE': 4.194155216217041,
    'LEU': 4.217502117156982,
    'LYS': 6.6535139083862305,
    'MET': 5.628072261810303,
    'PHE': 5.396975517272949,
    'PRO': 2.7312662601470947,
    'SER': 2.7309961318969727,
    'THR': 2.81508469581604,
    'TRP': 6.992961406707764,
    'TYR': 6.746281623840332,
    'VAL': 2.81508469581604,
}


def derive_reach() -> torch.Tensor:
    """Derive :data:`REACH`: (20,) float32 reach of every residue type, in ``chem.RESIDUE_NAMES`` order.

    The largest distance of any atom from CA is found on a grid of
    chi2..chi4 (chi1 turns about the CA-CB bond and moves no atom nearer or
    farther from CA), plus a margin for the grid spacing.
    """
    n_types = len(chem.RESIDUE_NAMES)
    grid = torch.meshgrid(*(torch.linspace(-np.pi, np.pi, n + 1, dtype=torch.float64)[:-1] for n in (1, 24, 12, 12)),
                          indexing="ij")
    chis = torch.stack([g.flatten() for g in grid], -1)[:, None].expand(-1, n_types, -1)  # (M, T, 4)
    atoms = _on_standard_backbone(chis)
    exists = torch.tensor(chem.SLOT_EXISTS)
    far = (atoms.norm(dim=-1) * exists).amax((0, 2))
    return torch.clamp(far + 0.3, min=_BACKBONE_REACH).float()


@functools.cache
def _reach_table() -> torch.Tensor:
    return torch.tensor([REACH[name] for name in chem.RESIDUE_NAMES], dtype=torch.float32)


def _on_standard_backbone(chis: torch.Tensor) -> torch.Tensor:
    """Side chains of every residue type with chi angles ``chis`` (M, T, 4) on one fixed backbone, CA at the origin.

    Returns (M, T, N_SLOTS, 3) float64 coordinates (OXT not built).
    """
    n_types = chis.shape[1]
    res_type = np.arange(n_types)
    ics = side_chain_internal(res_type, chis.to(torch.float64))
    backbone = torch.zeros(1, n_types, chem.N_SLOTS, 3, dtype=torch.float64)
    backbone[..., chem.SLOT_N, :] = torch.tensor([-0.53, 1.36, 0.0], dtype=torch.float64)
    backbone[..., chem.SLOT_C, :] = torch.tensor([1.53, 0.0, 0.0], dtype=torch.float64)
    return build_residues(backbone, ics, torch.as_tensor(res_type), slots=chem.SIDE_CHAIN_BUILD_ORDER)


@functools.cache
def rotamer_deviation_table() -> torch.Tensor:
    """Squared deviation between the library rotamers of each residue type.

    Returns
    -------
    torch.Tensor
        (n_types, K, K) float32: the sum over side-chain atoms (beyond CB)
        of the squared distance (Angstrom^2) between rotamers ``i`` and
        ``j`` of a type, built on one fixed backbone; K as in
        :func:`backmap_plugin.build.rotamers.load_rotamers` (entries of rotamers
        a type does not have are meaningless).
    """
    chis = torch.as_tensor(np.nan_to_num(load_rotamers().chis)).transpose(0, 1)  # (K, T, 4)
    atoms = _on_standard_backbone(chis)
    side = torch.tensor(chem.SLOT_EXISTS)  # a copy
    side[:, : chem.SLOT_CB + 1] = False
    side[:, chem.SLOT_OXT] = False
    d2 = ((atoms[:, None] - atoms[None]) ** 2).sum(-1) * side  # (K, K, T, S)
    return d2.sum(-1).permute(2, 0, 1).float()


def _reach(device, dtype) -> torch.Tensor:
    return _reach_table().to(device=device, dtype=dtype)


def build_ideal(ca: torch.Tensor, protein: ProteinTopology) -> torch.Tensor:
    """All heavy atoms from a C-alpha trace by ideal geometry.

    The backbone's peptide planes take the shipped table's angles; planes
    whose atoms overlap other backbone atoms are turned apart
    (:func:`~backmap_plugin.build.backbone_contacts.separate_planes`; train
    val clusters: clashes 1.42 -> 1.09 per 100 residues); then the side
    chains are placed (:func:`place_side_chains`).

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
    backbone = fit_backbone(build_backbone(ca, protein.backbone_layout, protein.res_type), protein.backbone_layout)
    backbone = separate_planes(backbone, protein)
    ics, cost = _candidate_internal(protein.res_type, ca.dtype, ca.device)  # (K, R, S, 3), (K, R)
    return place_side_chains(backbone, protein, ics, cost)


def place_side_chains(
    backbone: torch.Tensor,
    protein: ProteinTopology,
    ics: torch.Tensor,
    cost: torch.Tensor,
    passes: int | None = None,
    relief_steps: int | None = None,
    start: tuple | None = None,
) -> torch.Tensor:
    """Choose each residue's side chain among candidates so that overlaps are avoided, then relieve clashes.

    Every residue starts in its first candidate. Overlap is the sum of
    (OVERLAP_DISTANCE - d)^2 over the atom pairs of a side chain with
    anything (backbone, CB or side chains of any residue, its own backbone
    included; pairs more than three bonds apart). The residues whose first
    candidate overlaps by more than ACTIVE_OVERLAP, or is not their cheapest
    (candidates drawn at a temperature), choose again: each scores
    its candidates (those whose cost is below the first one's cost plus
    PRUNE_MARGIN times its overlap: the others cannot win) against the
    current structure and takes the one with the lowest overlap plus
    ``cost``; the others keep their first. Choices are made all at once, so
    up to ``passes - 1`` more passes let the residues in contact with a
    side chain that switched choose again, until no choice changes. Then
    ``relief_steps`` gradient steps on the chi angles of residues still in
    contact (:func:`backmap_plugin.build.relax.relieve_clashes`) push apart what
    the discrete choice left. OXT is built at C termini. Each frame is
    handled on its own and deterministically.

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
    passes : int, optional
        Rounds of candidate choice (0: every residue keeps its first
        candidate); default :data:`PASSES`.
    relief_steps : int, optional
        Gradient steps of the clash relief (0: none); default
        :data:`RELIEF_STEPS`.
    start : tuple, optional
        :func:`placement_start` of the first candidates, when the caller
        has it already (its atoms are not changed).

    Returns
    -------
    torch.Tensor
        (F, R, N_SLOTS, 3); slots a residue does not have are zero.
    """
    passes = PASSES if passes is None else passes
    relief_steps = RELIEF_STEPS if relief_steps is None else relief_steps
    if ics.dim() == 4:
        ics, cost = ics[None], cost[None]
    dev = backbone.device
    n_frames, n_res = backbone.shape[:2]
    rt = torch.as_tensor(protein.res_type, device=dev)
    segment = torch.as_tensor(protein.segment, device=dev)
    mask = torch.as_tensor(protein.slot_mask, device=dev)
    side_mask = mask[:, relax.SIDE_SLOTS]
    if start is None:
        atoms, pairs, overlap = placement_start(backbone, protein, ics[:, 0])
    else:
        atoms, pairs, overlap = start
        atoms = atoms.clone()  # the caller's stay as they are

    neighbours = relax.residue_neighbours(backbone[..., chem.SLOT_CA, :], _reach(dev, backbone.dtype)[rt], _LIST_CUTOFF)
    side_idx = torch.as_tensor(relax.SIDE_SLOTS, device=dev)
    choosable = ((torch.isfinite(cost).sum(1) > 1) & side_mask.any(1)).expand(n_frames, -1)  # (F, R)
    dearer = (cost[:, 0] > cost.amin(1)).expand(n_frames, -1)  # first candidate not the cheapest (sampling)
    frame, residue = torch.nonzero(((overlap > ACTIVE_OVERLAP) | dearer) & choosable, as_tuple=True)
    changed = torch.zeros(n_frames, n_res, dtype=torch.bool, device=dev)
    if passes > 0 and len(frame) > 0:
        # candidates that can beat the first one: cost below its cost plus its overlap
        source = frame if ics.shape[0] > 1 else torch.zeros_like(frame)
        cand_cost = cost[source, :, residue]  # (A, K)
        bound = cand_cost[:, :1] + PRUNE_MARGIN * overlap[frame, residue][:, None]
        first = torch.arange(cand_cost.shape[1], device=dev) == 0
        a, k = torch.nonzero(torch.isfinite(cand_cost) & ((cand_cost < bound) | first), as_tuple=True)
        f, r = frame[a], residue[a]
        candidates = build_residues(backbone[f, r], ics[source[a], k, r], rt[r],
                                    slots=chem.SIDE_CHAIN_BUILD_ORDER)[..., relax.SIDE_SLOTS, :] * side_mask[r][..., None]
        active = torch.full((n_frames, n_res), -1, dtype=torch.long, device=dev)
        active[frame, residue] = torch.arange(len(frame), device=dev)
        choice = torch.zeros(len(frame), dtype=torch.long, device=dev)
        todo = torch.ones(len(frame), dtype=torch.bool, device=dev)
        for _ in range(passes):
            rows = torch.nonzero(todo[a])[:, 0]  # candidates of the residues to (re)score
            contacts = relax.side_chain_contacts(candidates[rows], side_mask[r[rows]], f[rows], r[rows], atoms, mask,
                                                 rt, segment, neighbours, OVERLAP_DISTANCE)
            score = torch.full_like(cand_cost, float("inf"))
            score[a[rows], k[rows]] = relax.overlap_score(contacts, len(rows), OVERLAP_DISTANCE) + cand_cost[a[rows], k[rows]]
            best = torch.where(todo, score.argmin(1), choice)
            switched = best != choice
            if not switched.any():
                break
            choice = best
            pick = (k == best[a]).nonzero()[:, 0]  # one candidate per residue, in residue order
            atoms[frame[:, None], residue[:, None], side_idx[None, :]] = candidates[pick]
            # next pass: the residues in contact with a side chain that switched
            now = torch.zeros_like(changed)
            now[frame[switched], residue[switched]] = True
            query = a[rows][contacts.query]
            hit = now[contacts.frame, contacts.residue_b] & relax.is_side(contacts.slot_b)
            touched = switched[query] & (k[rows][contacts.query] == best[query])
            todo = torch.zeros_like(todo)
            todo[query[hit]] = True
            other = active[contacts.frame[touched], contacts.residue_b[touched]]
            todo[other[other >= 0]] = True
        changed[frame, residue] = choice != 0
    if relief_steps > 0:
        # contacts for the relief: those found before the choice, unless a side chain in them switched
        stale = (relax.is_side(pairs.slot_a) & changed[pairs.frame, pairs.residue_a]) | (
            relax.is_side(pairs.slot_b) & changed[pairs.frame, pairs.residue_b])
        cf, cr = torch.nonzero(changed, as_tuple=True)
        fresh = relax.side_chain_contacts(atoms[cf, cr][:, relax.SIDE_SLOTS], side_mask[cr], cf, cr, atoms, mask, rt,
                                          segment, neighbours, _LIST_CUTOFF)
        twice = relax.is_side(fresh.slot_b) & changed[fresh.frame, fresh.residue_b] & (fresh.residue_b < fresh.residue_a)
        pairs = relax.AtomPairs.cat([pairs.select(~stale), fresh.select(~twice)])
        atoms = relax.relieve_clashes(atoms, mask, rt, segment, relief_steps, RELIEF_DISTANCE, RELIEF_RESTRAINT,
                                      RELIEF_STEP_SIZE, RELIEF_MAX_TURN, RELIEF_MARGIN, RELIEF_TRIGGER, pairs=pairs)
    return atoms * mask[..., None]


def _overlap(atoms: torch.Tensor, protein: ProteinTopology, cutoff: float):
    """Atom pairs closer than ``cutoff`` that involve a side chain, and each residue's overlap (F, R)."""
    dev = atoms.device
    pairs = relax.structure_contacts(atoms, torch.as_tensor(protein.slot_mask, device=dev),
                                     torch.as_tensor(protein.res_type, device=dev),
                                     torch.as_tensor(protein.segment, device=dev), cutoff)
    return pairs, relax.overlap_per_residue(pairs, atoms.shape[0], atoms.shape[1], OVERLAP_DISTANCE)


def placement_start(backbone: torch.Tensor, protein: ProteinTopology, ics: torch.Tensor):
    """Every residue in one side chain: atoms, their side-chain contacts and each residue's overlap.

    What :func:`place_side_chains` starts from (its first candidates). A
    caller that chooses candidates by the overlaps (residues overlapping by
    more than :data:`ACTIVE_OVERLAP` are the ones the placement reconsiders)
    passes it on, so the contacts are searched once.

    Parameters
    ----------
    backbone : torch.Tensor
        (F, R, N_SLOTS, 3) with N, CA, C, O placed.
    protein : ProteinTopology
    ics : torch.Tensor
        (F, R, N_SLOTS, 3) or (R, N_SLOTS, 3) side-chain internal coordinates.

    Returns
    -------
    atoms : torch.Tensor
        (F, R, N_SLOTS, 3) (:func:`build_side_chains`).
    pairs : AtomPairs
        Atom pairs involving a side chain closer than the placement's
        contact list cutoff.
    overlap : torch.Tensor
        (F, R) each residue's overlap.
    """
    atoms = build_side_chains(backbone, protein, ics)
    return (atoms, *_overlap(atoms, protein, _LIST_CUTOFF))


def build_side_chains(backbone: torch.Tensor, protein: ProteinTopology, ics: torch.Tensor) -> torch.Tensor:
    """Heavy atoms (F, R, N_SLOTS, 3): ``backbone``'s N, CA, C, O with the side chains of internal coordinates
    ``ics`` (F, R, N_SLOTS, 3) and OXT at C termini; slots a residue does not have are zero."""
    # side chains and OXT are built from N, CA, C, O and each other: no context slots needed
    rt = torch.as_tensor(protein.res_type, device=backbone.device)
    atoms = build_residues(backbone, ics, rt, slots=chem.SIDE_CHAIN_BUILD_ORDER + (chem.SLOT_OXT,))
    return atoms * torch.as_tensor(protein.slot_mask, device=backbone.device)[..., None]


def relieve_clashes(atoms: torch.Tensor, protein: ProteinTopology,
                    may_turn: torch.Tensor | None = None) -> torch.Tensor:
    """Relieve side-chain clashes of built structures (F, R, N_SLOTS, 3) by chi-angle steps, as
    :func:`place_side_chains` ends; ``may_turn`` (F, R) bool: the residues that may turn (default all)."""
    dev = atoms.device
    rt = torch.as_tensor(protein.res_type, device=dev)
    mask = torch.as_tensor(protein.slot_mask, device=dev)
    segment = torch.as_tensor(protein.segment, device=dev)
    return relax.relieve_clashes(atoms, mask, rt, segment, RELIEF_STEPS, RELIEF_DISTANCE, RELIEF_RESTRAINT,
                                 RELIEF_STEP_SIZE, RELIEF_MAX_TURN, RELIEF_MARGIN, RELIEF_TRIGGER,
                                 may_turn=may_turn) * mask[..., None]


#: Rounds of :func:`relieve_periodic_clashes`, the contacts found again before each (a 30-chain CALVADOS 3 slab,
#: heavy-atom pairs closer than 2 A between chains over 5 frames: 1 round 175, 2 rounds 142, 3 rounds 127).
PERIODIC_ROUNDS = 3


def relieve_periodic_clashes(atoms: torch.Tensor, protein: ProteinTopology, box) -> torch.Tensor:
    """Relieve the side-chain clashes that only periodic images make, by chi-angle steps.

    The builders see each structure as it is; in a periodic box (a
    condensate or slab of many chains) chains also pack against the images
    of others across the boundary, where nothing kept them apart. Every
    contact is taken at its nearest image
    (:func:`backmap_plugin.build.relax.periodic_contacts`), and the residues
    in a clash that crosses the boundary are relieved as
    :func:`relieve_clashes` does, with all their contacts in view, in up to
    :data:`PERIODIC_ROUNDS` rounds (the contacts found again before each).

    Parameters
    ----------
    atoms : torch.Tensor
        (F, R, N_SLOTS, 3) built structures, Angstrom.
    protein : ProteinTopology
    box : numpy.ndarray
        (F, 3, 3) box vectors (rows) of each structure, Angstrom; rows of
        zeros where there is none (:func:`~backmap_plugin.core.pbc.box_matrices`).

    Returns
    -------
    torch.Tensor
        (F, R, N_SLOTS, 3): ``atoms`` itself where no clash crosses the
        boundary, else a new tensor with only the residues in such clashes
        (and none of a structure without a box) turned.

    Notes
    -----
    Only structures whose images can come within reach of them
    (:func:`~backmap_plugin.core.pbc.image_gap` of the C-alpha atoms less
    than the contact distance and twice the farthest atom from its C-alpha)
    are searched: a protein in a box of solvent is not (the search doubled
    the time of such runs).
    """
    dev = atoms.device
    rt = torch.as_tensor(protein.res_type, device=dev)
    mask = torch.as_tensor(protein.slot_mask, device=dev)
    segment = torch.as_tensor(protein.segment, device=dev)
    cutoff = RELIEF_DISTANCE + RELIEF_MARGIN
    reach = relax.contact_reach(atoms, mask, cutoff)
    ca = atoms[:, :, chem.SLOT_CA].double().cpu().numpy()
    near = [f for f in range(len(atoms)) if np.abs(box[f]).any() and image_gap(ca[f], box[f]) < reach]
    if not near:
        return atoms
    some, cells = atoms[near], np.asarray(box)[near]
    relieved = False
    for _ in range(PERIODIC_ROUNDS):
        pairs = relax.periodic_contacts(some, mask, rt, segment, cutoff, cells)
        if pairs.shift is None:  # (cells too small to search for images in)
            break
        across = (pairs.shift.abs().amax(-1) > 0.5) & (pairs.distance < RELIEF_TRIGGER)
        if not across.any():
            break
        may_turn = torch.zeros(some.shape[:2], dtype=torch.bool, device=dev)
        may_turn[pairs.frame[across], pairs.residue_a[across]] = True
        may_turn[pairs.frame[across], pairs.residue_b[across]] = True
        some = relax.relieve_clashes(some, mask, rt, segment, RELIEF_STEPS, RELIEF_DISTANCE, RELIEF_RESTRAINT,
                                     RELIEF_STEP_SIZE, RELIEF_MAX_TURN, RELIEF_MARGIN, RELIEF_TRIGGER, pairs=pairs,
                                     may_turn=may_turn) * mask[..., None]
        relieved = True
    if not relieved:
        return atoms
    out = atoms.clone()
    out[near] = some
    return out


#: Fitting a C-alpha trace to non-CA beads: damped fixed-point steps, and
#: constraint sweeps that keep bonded C-alpha atoms 3.8 Angstrom apart (the
#: builder's peptide planes assume it; without them ~20 % of bonds come out
#: off ideal). Undamped steps oscillate as side-chain rotamers flip.
_FIT_STEPS = 16
_FIT_DAMPING = 0.5
_FIT_SWEEPS = 30


def constrain_trace(ca: torch.Tensor, same_segment: torch.Tensor, sweeps: int = _FIT_SWEEPS,
                    length: float | torch.Tensor = chem.BOND_CA_CA_TRANS) -> torch.Tensor:
    """Move bonded C-alpha atoms (``same_segment``, (R-1,) bool) of (F, R, 3) traces towards ``length`` apart.

    ``length``: Angstrom, one value or (F, R-1, 1); default 3.8 (trans peptides).
    """
    ca = ca.clone()
    weight = same_segment.to(ca.dtype)[None, :, None]
    for _ in range(sweeps):
        v = ca[:, 1:] - ca[:, :-1]
        d = v.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        corr = 0.5 * (d - length) / d * v * weight
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
    build = lambda trace: build_ideal(trace, protein)
    if mapping.bead_is_ca:
        atoms = build(beads)
    else:
        present = protein.slot_mask.copy()
        present[:, chem.SLOT_OXT] = False
        same = torch.as_tensor(protein.segment[1:] == protein.segment[:-1], device=beads.device)
        ca = constrain_trace(beads, same)
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
            ca = constrain_trace(ca + _FIT_DAMPING * deviation, same)
            atoms = build(ca)
        from backmap_plugin.build.settle import (
            settle_on_beads,  # (settle imports this module)
        )

        atoms = settle_on_beads(kept, protein, beads, lambda x: mapping.bead_positions(x, present, protein.res_type))
    return atoms[:, None].expand(-1, samples, -1, -1, -1)


def even_noisy_traces(ca: torch.Tensor, same_segment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """C-alpha traces (F, R, 3) with the frames whose bonds fluctuate brought to the distances peptides hold C-alpha
    atoms at, and those frames (F,).

    The frames are :func:`~backmap_plugin.build.backbone.noisy_traces`'s (a
    coarse-grained simulation's beads, or an all-atom trajectory's C-alpha
    atoms); :func:`constrain_trace` moves their bonded C-alpha atoms to
    :func:`~backmap_plugin.build.backbone.noisy_trace_lengths`.

    Rigid peptides on C-alpha atoms 3.3-4.3 Angstrom apart give strained
    angles and twisted planes, and the builders make a peptide cis wherever
    its C-alpha atoms are closer than
    :data:`~backmap_plugin.build.backbone.MIN_PEPTIDE_LENGTH`: a bond of a
    fluctuating trace reaches that now and then. Other frames are returned
    as they are.
    """
    noisy = noisy_traces(ca, same_segment)
    if not bool(noisy.any()):
        return ca, noisy
    ca = ca.clone()
    ca[noisy] = constrain_trace(ca[noisy], same_segment, length=noisy_trace_lengths(ca[noisy]))
    return ca, noisy
