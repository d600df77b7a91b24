"""Side-chain contacts and clash relief in torsion space.

The pieces of :func:`backmap_plugin.build.ideal.place_side_chains`:

* :func:`structure_contacts` and :func:`side_chain_contacts`: close atom
  pairs that involve side chains (the atoms beyond CB), in a structure or
  between side chains in conformations of their own (candidates) and a
  structure. They are found sparsely: every residue is split into two atom
  groups, its backbone (N, CA, C, O, CB, OXT) and its side chain, each
  bounded by a sphere; only groups whose spheres come within the cutoff are
  compared atom by atom, and close spheres (or residues within reach,
  :func:`residue_neighbours`) come from
  :mod:`backmap_plugin.core.cell_list`, in time linear in the system's size.
  Pairs at most three bonds apart (the exclusion of
  :func:`backmap_plugin.core.metrics.clashes`) are left out.
* :func:`relieve_clashes`: a few gradient steps on a soft clash penalty
  over the chi angles of the residues in contact. Atoms move by rigid
  rotations about their chi bonds
  (:func:`backmap_plugin.build.chi_turns.turn_chis`), so bond lengths and
  angles stay exactly as built; a harmonic restraint keeps the chi angles
  near their start.

Everything is batched over frames and residues, deterministic and local to
a frame: the result for one frame does not depend on the other frames of
the batch. Lengths are Angstrom, angles radians.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from backmap_plugin.build.chi_turns import ChiTurner, chi_bonds, chi_tables, chi_torques
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.cell_list import close_pairs
from backmap_plugin.core.metrics import bonded_exclusions
from backmap_plugin.core.pbc import cell_heights, cell_shifts, images_near_cell

#: Side-chain slots (atoms beyond CB, OXT excluded): the atoms that move.
SIDE_SLOTS = np.arange(chem.SLOT_CB + 1, chem.SLOT_OXT)
#: Backbone group of a residue: atoms that never move (CB included).
BACKBONE_SLOTS = np.array([chem.SLOT_N, chem.SLOT_CA, chem.SLOT_C, chem.SLOT_O, chem.SLOT_CB, chem.SLOT_OXT])
_GROUP = len(SIDE_SLOTS)  # atoms per group (the backbone group is padded)
#: Bond separation above which atom pairs interact (as in the clash metric).
MAX_EXCLUDED_BONDS = 3
# distances computed pair by pair (not by matrix products), so they do not
# depend on how many frames are batched together
_EXACT = "donot_use_mm_for_euclid_dist"
#: Contacts are searched in float32 whatever the atoms' type: distances to about 1e-6 Angstrom, and in float64
#: (the Martini 3 fit's atoms) the search took twice as long.
CONTACT_DTYPE = torch.float32


@dataclass(frozen=True)
class _Tables:
    """Per residue type tables (torch, CPU); see :func:`_tables`."""

    separation: torch.Tensor  # (T, S, S) bonds between slots, capped at 4
    to_c: torch.Tensor  # (T, S) bonds from each slot to C, capped at 4
    to_n: torch.Tensor  # (T, S) bonds from each slot to N, capped at 4
    group_slots: torch.Tensor  # (2, G) slots of the backbone / side-chain group (padding: slot 0)
    group_real: torch.Tensor  # (2, G) bool, real entry of a group
    movable: torch.Tensor  # (T, 4) bool: chi k is relieved (exists, not proline)


#: (20, 4) bool: the chi angles gradient steps may turn: those that exist, none of proline's (its ring
#: closes only for the library puckers).
TURNABLE_CHIS = chem.CHI_EXISTS & (np.arange(len(chem.RESIDUE_NAMES)) != chem.RESIDUE_INDEX["PRO"])[:, None]


@functools.cache
def _tables() -> _Tables:
    """Bond separations, atom groups and the chi angles relief may turn, per residue type.

    Separations come from :func:`backmap_plugin.core.metrics.bonded_exclusions`
    on each residue's bond graph (OXT bonded to C), so "more than three bonds
    apart" means here what it means in the clash score.
    """
    n_types, s = len(chem.RESIDUE_NAMES), chem.N_SLOTS
    cap = MAX_EXCLUDED_BONDS + 1
    separation = np.full((n_types, s, s), cap, dtype=np.int64)
    for t, name in enumerate(chem.RESIDUE_NAMES):
        spec = chem.RESIDUES[name]
        slot = {a: i for i, a in enumerate(spec.atoms)}
        slot["OXT"] = chem.SLOT_OXT
        bonds = np.array([(slot[a], slot[b]) for a, b in list(spec.bonds) + [("C", "OXT")]])
        for sep in range(MAX_EXCLUDED_BONDS, 0, -1):  # nearer separations overwrite farther ones
            pairs = bonded_exclusions(s, bonds, sep)
            separation[t, pairs[:, 0], pairs[:, 1]] = sep
            separation[t, pairs[:, 1], pairs[:, 0]] = sep
        np.fill_diagonal(separation[t], 0)
    group_slots = np.zeros((2, _GROUP), dtype=np.int64)
    group_real = np.zeros((2, _GROUP), bool)
    group_slots[0, : len(BACKBONE_SLOTS)] = BACKBONE_SLOTS
    group_real[0, : len(BACKBONE_SLOTS)] = True
    group_slots[1] = SIDE_SLOTS
    group_real[1] = True
    t = torch.as_tensor
    return _Tables(
        separation=t(separation), to_c=t(separation[:, :, chem.SLOT_C]), to_n=t(separation[:, :, chem.SLOT_N]),
        group_slots=t(group_slots), group_real=t(group_real), movable=t(TURNABLE_CHIS),
    )


def _spheres(xyz: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and radius of point sets: xyz (..., A, 3), mask (..., A) -> (..., 3), (...).

    Empty sets get radius -inf (they never come close to anything).
    """
    m = mask.to(xyz.dtype)[..., None]
    centre = (xyz * m).sum(-2) / m.sum(-2).clamp(min=1)
    radius = ((xyz - centre[..., None, :]).norm(dim=-1)).masked_fill(~mask, -float("inf")).amax(-1)
    return centre, radius


def _groups(atoms: torch.Tensor, atom_mask: torch.Tensor):
    """Atom groups of every residue: backbone (part 0) and side chain (part 1).

    Returns groups (F, R, 2, G, 3), their mask (R, 2, G), and bounding
    spheres: centres (F, R, 2, 3) and radii (F, R, 2).
    """
    tb = _tables()
    gs, gr = tb.group_slots.to(atoms.device), tb.group_real.to(atoms.device)
    groups = atoms[:, :, gs]
    group_mask = atom_mask[:, gs] & gr
    centre, radius = _spheres(groups, group_mask.expand(atoms.shape[0], -1, -1, -1))
    return groups, group_mask, centre, radius


def _bonds_apart(res_a, slot_a, res_b, slot_b, res_type, segment) -> torch.Tensor:
    """Bonds between two atoms of one frame (capped at MAX_EXCLUDED_BONDS + 1).

    Inside a residue, or through the peptide bond between neighbours of one
    segment; farther residues are never bonded.
    """
    tb = _tables()
    dev = res_type.device
    ta, tb_ = res_type[res_a], res_type[res_b]
    step = torch.where(segment[res_b] == segment[res_a], res_b - res_a, 2)
    far = torch.full_like(slot_a, MAX_EXCLUDED_BONDS + 1)
    sep = torch.where(step == 0, tb.separation.to(dev)[ta, slot_a, slot_b], far)
    sep = torch.where(step == 1, tb.to_c.to(dev)[ta, slot_a] + 1 + tb.to_n.to(dev)[tb_, slot_b], sep)
    return torch.where(step == -1, tb.to_n.to(dev)[ta, slot_a] + 1 + tb.to_c.to(dev)[tb_, slot_b], sep)


@dataclass
class AtomPairs:
    """Close atom pairs of one frame each, more than three bonds apart.

    Attributes
    ----------
    frame : torch.Tensor
        (P,) frame of the pair.
    residue_a, slot_a, residue_b, slot_b : torch.Tensor
        (P,) the two atoms.
    distance : torch.Tensor
        (P,) Angstrom.
    query : torch.Tensor or None
        (P,) the query atom ``a`` belongs to (:func:`side_chain_contacts`).
    shift : torch.Tensor or None
        (P, 3) box vectors that bring atom ``b`` to the periodic image of it
        that is ``distance`` from atom ``a`` (:func:`periodic_contacts`);
        None: no shift, the pairs of one structure as it is.
    """

    frame: torch.Tensor
    residue_a: torch.Tensor
    slot_a: torch.Tensor
    residue_b: torch.Tensor
    slot_b: torch.Tensor
    distance: torch.Tensor
    query: torch.Tensor | None = None
    shift: torch.Tensor | None = None

    def select(self, keep: torch.Tensor) -> AtomPairs:
        """The pairs where ``keep`` is True."""
        return AtomPairs(*(None if v is None else v[keep] for v in vars(self).values()))

    @staticmethod
    def cat(parts: list) -> AtomPairs:
        """All pairs of ``parts`` (``query`` dropped; ``shift`` kept where a part has one, zero for the others)."""
        fields = ("frame", "residue_a", "slot_a", "residue_b", "slot_b", "distance")
        out = AtomPairs(*(torch.cat([getattr(p, name) for p in parts]) for name in fields))
        if any(p.shift is not None for p in parts):
            out.shift = torch.cat([p.distance.new_zeros(len(p.distance), 3) if p.shift is None else p.shift
                                   for p in parts])
        return out


def _atom_pairs(xa, ma, xb, mb, slots_a, slots_b, frame, res_a, res_b, query, res_type, segment, cutoff,
                chunk: int = 1 << 16) -> AtomPairs:
    """Atom pairs closer than ``cutoff`` (and more than three bonds apart) between paired groups.

    ``xa`` (P, G, 3) with mask ``ma`` (P, G) and slots ``slots_a`` (P, G)
    against ``xb``, ``mb``, ``slots_b`` alike; ``frame``, ``res_a``,
    ``res_b`` (and ``query`` or None) are (P,) labels of the group pairs.
    """
    out = []
    for start in range(0, len(xa), chunk):
        c = slice(start, start + chunk)
        d = torch.cdist(xa[c], xb[c], compute_mode=_EXACT)
        close = (d < cutoff) & ma[c][:, :, None] & mb[c][:, None, :]
        p, a, b = torch.nonzero(close, as_tuple=True)
        p_all = p + start
        out.append((frame[p_all], res_a[p_all], slots_a[p_all, a], res_b[p_all], slots_b[p_all, b], d[p, a, b],
                    None if query is None else query[p_all]))
    if not out:
        empty = torch.zeros(0, dtype=torch.long, device=res_type.device)
        pairs = AtomPairs(empty, empty, empty, empty, empty, xa.new_zeros(0), None if query is None else empty)
    else:
        pairs = AtomPairs(*(None if query is None and k == 6 else torch.cat([o[k] for o in out]) for k in range(7)))
    sep = _bonds_apart(pairs.residue_a, pairs.slot_a, pairs.residue_b, pairs.slot_b, res_type, segment)
    return pairs.select(sep > MAX_EXCLUDED_BONDS)


def structure_contacts(atoms: torch.Tensor, atom_mask: torch.Tensor, res_type: torch.Tensor, segment: torch.Tensor,
                       cutoff: float) -> AtomPairs:
    """Every atom pair closer than ``cutoff`` that involves a side chain, once.

    Each residue is split into two atom groups, its backbone (N, CA, C, O,
    CB, OXT) and its side chain (:data:`SIDE_SLOTS`), each bounded by a
    sphere; only groups whose spheres come within ``cutoff`` are compared
    atom by atom. The close spheres come from
    :func:`backmap_plugin.core.cell_list.close_pairs` (distance matrices for
    small systems, a cell list for large ones). Pairs inside one side chain
    and pairs of two backbone groups are not listed.

    Parameters
    ----------
    atoms : torch.Tensor
        (F, R, N_SLOTS, 3).
    atom_mask : torch.Tensor
        (R, N_SLOTS) bool, atoms that exist (OXT only at C termini).
    res_type, segment : torch.Tensor
        (R,) long; residues of one segment are peptide-bonded in order.
    cutoff : float
        Angstrom.

    Returns
    -------
    AtomPairs
        Pairs more than three bonds apart, ordered by frame, then by group
        pair (group ``2 r + part`` of residue ``r``; atom ``a`` in the lower
        group).
    """
    dev = atoms.device
    groups, group_mask, centre, radius = _groups(atoms.to(CONTACT_DTYPE), atom_mask)
    centre, radius = centre.flatten(1, 2), radius.flatten(1)  # (F, 2R, 3), (F, 2R): group g = 2 * residue + part
    real = torch.isfinite(radius)  # an empty group's radius is -inf
    f, g1, g2, _ = close_pairs(centre, cutoff, real, torch.where(real, radius, 0.0))
    side = (g1 % 2 == 1) | (g2 % 2 == 1)
    f, g1, g2 = f[side], g1[side], g2[side]
    i, pi, j, pj = g1 // 2, g1 % 2, g2 // 2, g2 % 2
    gs = _tables().group_slots.to(dev)
    return _atom_pairs(groups[f, i, pi], group_mask[i, pi], groups[f, j, pj], group_mask[j, pj], gs[pi], gs[pj],
                       f, i, j, None, res_type, segment, cutoff)


def contact_reach(atoms: torch.Tensor, atom_mask: torch.Tensor, cutoff: float) -> float:
    """How far apart two residues' C-alpha atoms can lie and still have atoms closer than ``cutoff``: ``cutoff``
    plus twice the farthest atom from its C-alpha (Angstrom).

    Parameters
    ----------
    atoms : torch.Tensor
        (..., R, N_SLOTS, 3).
    atom_mask : torch.Tensor
        (R, N_SLOTS) bool, atoms that exist.
    cutoff : float

    Returns
    -------
    float
    """
    return cutoff + 2 * float((atoms - atoms[..., chem.SLOT_CA, None, :]).norm(dim=-1)[..., atom_mask].max())


def periodic_contacts(atoms: torch.Tensor, atom_mask: torch.Tensor, res_type: torch.Tensor, segment: torch.Tensor,
                      cutoff: float, box) -> AtomPairs:
    """:func:`structure_contacts` of periodic structures: every pair at its nearest periodic image.

    Each residue is moved by whole box vectors into the cell (by its
    C-alpha atom), the images of the residues that come within reach of the
    cell (:func:`~backmap_plugin.core.pbc.images_near_cell`) are added, and
    the contacts of that set are mapped back to the residues: pairs of the
    structure as it is (their shift zero; bonded atoms left out as in
    :func:`structure_contacts`) and pairs that only periodic images bring
    together (chains packed against each other across the boundary), each
    once. Frames without a usable box get :func:`structure_contacts`.

    Parameters
    ----------
    atoms : torch.Tensor
        (F, R, N_SLOTS, 3).
    atom_mask : torch.Tensor
        (R, N_SLOTS) bool, atoms that exist.
    res_type, segment : torch.Tensor
        (R,) long; residues of one segment are peptide-bonded in order.
    cutoff : float
        Angstrom.
    box : numpy.ndarray
        (F, 3, 3) box vectors (rows) of each frame, Angstrom; rows of zeros
        for a frame without one (:func:`~backmap_plugin.core.pbc.box_matrices`).
        A cell less than twice the reach (:func:`contact_reach`) high has
        its pairs found without images.

    Returns
    -------
    AtomPairs
        With ``shift`` (P, 3): ``atoms[f, residue_b, slot_b] + shift`` is the
        image of atom ``b`` ``distance`` from atom ``a``.
    """
    dev = atoms.device
    n_res = atoms.shape[1]
    x_all = atoms.to(CONTACT_DTYPE)
    parts = []
    for f in range(atoms.shape[0]):
        x = x_all[f]
        vectors = np.asarray(box[f], dtype=np.float64)
        reach = contact_reach(x, atom_mask, cutoff)
        if not np.abs(vectors).any() or cell_heights(vectors).min() < 2 * reach:
            found = structure_contacts(x[None], atom_mask, res_type, segment, cutoff)
            found.frame[:] = f
            parts.append(found)
            continue
        ca = x[:, chem.SLOT_CA].double().cpu().numpy()
        into = cell_shifts(ca, vectors)
        index, shift = images_near_cell(ca + into, vectors, reach)
        origin = torch.as_tensor(np.concatenate([np.arange(n_res), index]), device=dev)
        place = torch.as_tensor(np.concatenate([into, into[index] + shift]), dtype=x.dtype, device=dev)
        # images are residues of their own segments: bonded atoms are told apart below, by the original residues
        apart = segment.max() + 1 + torch.arange(len(index), device=dev)
        found = structure_contacts((x[origin] + place[:, None])[None], atom_mask[origin], res_type[origin],
                                   torch.cat([segment, apart]), cutoff)
        a, b = found.residue_a, found.residue_b  # a < b: a pair with an image has it as b
        ra, rb = origin[a], origin[b]
        relative = place[b] - place[a]
        own = relative.abs().amax(-1) < 0.5  # the two atoms as the structure holds them
        # a pair with an image, and its mirror (b's residue with the image of a's), listed once
        keep = (a < n_res) & ((b < n_res) | (ra < rb))
        bonded = _bonds_apart(ra, found.slot_a, rb, found.slot_b, res_type, segment) <= MAX_EXCLUDED_BONDS
        keep &= ~(own & bonded) & (own | (ra != rb))
        found = AtomPairs(torch.full_like(a, f), ra, found.slot_a, rb, found.slot_b, found.distance, None,
                          relative.to(atoms.dtype)).select(keep)
        parts.append(found)
    return AtomPairs.cat(parts) if parts else structure_contacts(atoms, atom_mask, res_type, segment, cutoff)


@dataclass
class Neighbours:
    """Residues within reach of each residue, per frame (compressed rows).

    The neighbours of residue ``i`` in frame ``f`` (itself included) are
    ``residue[start[k]:start[k + 1]]`` with ``k = f * R + i``.
    """

    start: torch.Tensor
    residue: torch.Tensor


def residue_neighbours(ca: torch.Tensor, reach: torch.Tensor, cutoff: float) -> Neighbours:
    """Residue pairs whose atoms can come closer than ``cutoff`` (a cell list on the C-alpha atoms).

    Parameters
    ----------
    ca : torch.Tensor
        (F, R, 3) C-alpha positions.
    reach : torch.Tensor
        (R,) largest distance of any atom of a residue from its CA.
    cutoff : float
        Angstrom.

    Returns
    -------
    Neighbours
        Pairs with CA-CA below ``reach_i + reach_j + cutoff``, self included.
    """
    n_frames, n_res = ca.shape[:2]
    f, i, residue, _ = close_pairs(ca, cutoff, radius=reach, ordered=True)
    count = torch.bincount(f * n_res + i, minlength=n_frames * n_res)
    return Neighbours(torch.cat([count.new_zeros(1), count.cumsum(0)]), residue)


def side_chain_contacts(
    side: torch.Tensor,
    side_mask: torch.Tensor,
    query_frame: torch.Tensor,
    query_residue: torch.Tensor,
    atoms: torch.Tensor,
    atom_mask: torch.Tensor,
    res_type: torch.Tensor,
    segment: torch.Tensor,
    neighbours: Neighbours,
    cutoff: float,
    chunk: int = 8192,
) -> AtomPairs:
    """Atom pairs closer than ``cutoff`` between query side chains and everything else.

    As :func:`structure_contacts`, for side chains in conformations of
    their own (e.g. candidates) against a structure.

    Parameters
    ----------
    side : torch.Tensor
        (Q, G, 3) side-chain atoms (slots :data:`SIDE_SLOTS`) of the queries:
        residue ``query_residue[q]`` of frame ``query_frame[q]`` in some
        conformation.
    side_mask : torch.Tensor
        (Q, G) bool, atoms that exist.
    query_frame, query_residue : torch.Tensor
        (Q,) long.
    atoms : torch.Tensor
        (F, R, N_SLOTS, 3) the surroundings: every residue of every frame.
        The query residue's own side chain in ``atoms`` is skipped; its own
        backbone and CB count.
    atom_mask : torch.Tensor
        (R, N_SLOTS) bool, atoms that exist (OXT only at C termini).
    res_type, segment : torch.Tensor
        (R,) long; residues of one segment are peptide-bonded in order.
    neighbours : Neighbours
        From :func:`residue_neighbours` with at least ``cutoff``.
    cutoff : float
        Angstrom.
    chunk : int
        Queries handled at once (bounds memory).

    Returns
    -------
    AtomPairs
        Atom ``a`` in the query side chain, ``query`` set.
    """
    dev = atoms.device
    n_res = atoms.shape[1]
    side = side.to(CONTACT_DTYPE)
    groups, group_mask, centre, radius = _groups(atoms.to(CONTACT_DTYPE), atom_mask)
    q_centre, q_radius = _spheres(side, side_mask)
    empty = torch.zeros(0, dtype=torch.long, device=dev)
    found = [(empty, empty, empty)]
    for start in range(0, len(side), chunk):
        stop = min(start + chunk, len(side))
        key = query_frame[start:stop] * n_res + query_residue[start:stop]
        first, count = neighbours.start[key], neighbours.start[key + 1] - neighbours.start[key]
        q = torch.repeat_interleave(torch.arange(start, stop, device=dev), count)
        offset = torch.arange(len(q), device=dev) - torch.repeat_interleave(count.cumsum(0) - count, count)
        j = neighbours.residue[torch.repeat_interleave(first, count) + offset]
        q, j = q.repeat(2), j.repeat(2)
        part = torch.arange(2, device=dev).repeat_interleave(len(q) // 2)
        f = query_frame[q]
        gap = (centre[f, j, part] - q_centre[q]).norm(dim=-1)
        near = (gap < q_radius[q] + radius[f, j, part] + cutoff) & ((j != query_residue[q]) | (part == 0))
        found.append((q[near], j[near], part[near]))
    q, j, part = (torch.cat(parts) for parts in zip(*found))
    f = query_frame[q]
    side_slots = torch.as_tensor(SIDE_SLOTS, device=dev).expand(len(q), -1)
    gs = _tables().group_slots.to(dev)
    return _atom_pairs(side[q], side_mask[q], groups[f, j, part], group_mask[j, part], side_slots, gs[part],
                       f, query_residue[q], j, q, res_type, segment, cutoff)


def is_side(slot: torch.Tensor) -> torch.Tensor:
    """Whether slots are side-chain atoms (beyond CB, not OXT)."""
    return (slot > chem.SLOT_CB) & (slot != chem.SLOT_OXT)


def overlap_per_residue(pairs: AtomPairs, n_frames: int, n_res: int, distance: float) -> torch.Tensor:
    """(F, R) sum of (distance - d)^2 over the pairs that involve each residue's side chain."""
    penalty = torch.relu(distance - pairs.distance) ** 2
    out = penalty.new_zeros(n_frames * n_res)
    for res, slot in ((pairs.residue_a, pairs.slot_a), (pairs.residue_b, pairs.slot_b)):
        side = is_side(slot)
        out.index_add_(0, (pairs.frame * n_res + res)[side], penalty[side])
    return out.view(n_frames, n_res)


def overlap_score(pairs: AtomPairs, n_queries: int, distance: float) -> torch.Tensor:
    """(Q,) sum of (distance - d)^2 over each query's pairs (:func:`side_chain_contacts`)."""
    penalty = torch.relu(distance - pairs.distance) ** 2
    return penalty.new_zeros(n_queries).index_add_(0, pairs.query, penalty)


def relieve_clashes(
    atoms: torch.Tensor,
    atom_mask: torch.Tensor,
    res_type: torch.Tensor,
    segment: torch.Tensor,
    steps: int,
    distance: float,
    restraint: float,
    step_size: float,
    max_turn: float,
    margin: float = 1.0,
    trigger: float | None = None,
    pairs: AtomPairs | None = None,
    may_turn: torch.Tensor | None = None,
) -> torch.Tensor:
    """Relieve side-chain clashes by gradient steps on the chi angles.

    The penalty is ``sum (distance - d)^2`` over atom pairs closer than
    ``distance`` that involve a side chain and are more than three bonds
    apart, plus ``restraint / 2 * sum dchi^2``. The residues that move are
    those with a side-chain atom in a pair closer than ``trigger`` (default
    ``distance``; proline excepted, and those ``may_turn`` leaves out); their
    pairs are listed once, up to ``distance + margin``. Each step turns every
    chi by ``-step_size * gradient`` (at most ``max_turn``); atoms move by
    :class:`~backmap_plugin.build.chi_turns.ChiTurner` from where they started, so bonds and angles stay exact.

    Parameters
    ----------
    atoms : torch.Tensor
        (F, R, N_SLOTS, 3) built residues.
    atom_mask : torch.Tensor
        (R, N_SLOTS) bool, atoms that exist.
    res_type, segment : torch.Tensor
        (R,) long.
    steps : int
    distance, restraint, step_size, max_turn, margin : float
    trigger : float, optional
    pairs : AtomPairs, optional
        Every pair closer than ``distance + margin`` that involves a side
        chain, once (default: :func:`structure_contacts`); with a ``shift``
        (:func:`periodic_contacts`), atom ``b`` is taken at that image.
    may_turn : torch.Tensor, optional
        (F, R) bool: the residues whose chi angles may turn (default all).

    Returns
    -------
    torch.Tensor
        (F, R, N_SLOTS, 3): a new tensor (or ``atoms`` when nothing
        clashes); residues out of contact unchanged.
    """
    tb = _tables()
    dev = atoms.device
    n_res, n_slots = atoms.shape[1:3]
    if steps <= 0:
        return atoms
    if pairs is None:
        pairs = structure_contacts(atoms, atom_mask, res_type, segment, distance + margin)
    f, i, j, slot_a, slot_b = pairs.frame, pairs.residue_a, pairs.residue_b, pairs.slot_a, pairs.slot_b
    movable = tb.movable.to(dev)[res_type].any(1)  # (R,)
    moves_a, moves_b = is_side(slot_a) & movable[i], is_side(slot_b) & movable[j]
    if may_turn is not None:
        moves_a, moves_b = moves_a & may_turn[f, i], moves_b & may_turn[f, j]
    clash = pairs.distance < (distance if trigger is None else trigger)
    key_a, key_b = f * n_res + i, f * n_res + j
    active = torch.unique(torch.cat([key_a[clash & moves_a], key_b[clash & moves_b]]))
    if len(active) == 0:
        return atoms
    moves_a &= torch.isin(key_a, active)
    moves_b &= torch.isin(key_b, active)
    keep = moves_a | moves_b
    f, i, j, slot_a, slot_b, moves_a, moves_b = (t[keep] for t in (f, i, j, slot_a, slot_b, moves_a, moves_b))
    # the moving residues, numbered compactly
    la = torch.where(moves_a, torch.searchsorted(active, f * n_res + i), -1)
    lb = torch.where(moves_b, torch.searchsorted(active, f * n_res + j), -1)
    af, ai = active // n_res, active % n_res
    start = atoms[af, ai]  # (N, S, 3)
    types = res_type[ai]
    shift = None if pairs.shift is None else pairs.shift[keep].to(atoms.dtype)
    fixed_a = atoms[f, i, slot_a]
    fixed_b = atoms[f, j, slot_b] if shift is None else atoms[f, j, slot_b] + shift
    chi_ok = tb.movable.to(dev)[types].to(atoms.dtype)  # (N, 4)
    chi = chi_tables()
    moved = chi.moved.to(dev)[types].to(atoms.dtype)  # (N, S, 4)
    axis = chi.axis.to(dev)[types]
    delta = atoms.new_zeros(len(active), 4)
    x = start
    turner = ChiTurner(start, types)
    for _ in range(steps):
        pa = torch.where((la >= 0)[:, None], x[la.clamp(min=0), slot_a], fixed_a)
        pb = torch.where((lb >= 0)[:, None], x[lb.clamp(min=0), slot_b] if shift is None else
                         x[lb.clamp(min=0), slot_b] + shift, fixed_b)
        diff = pa - pb
        d = diff.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        g = -2 * torch.relu(distance - d) * diff / d  # dE/dpa; dE/dpb = -g
        grad = atoms.new_zeros(len(active) * n_slots, 3)
        grad.index_add_(0, (la * n_slots + slot_a)[la >= 0], g[la >= 0])
        grad.index_add_(0, (lb * n_slots + slot_b)[lb >= 0], -g[lb >= 0])
        grad = grad.view(len(active), n_slots, 3)
        # dE/dchi_k = u_k . sum over the atoms chi_k moves of (x - o_k) x g
        gradient = chi_torques(x, grad, moved, *chi_bonds(x, axis)) + restraint * delta
        delta = delta - (step_size * gradient).clamp(-max_turn, max_turn) * chi_ok
        x = turner(delta)
    out = atoms.clone()
    out[af, ai] = x
    return out
