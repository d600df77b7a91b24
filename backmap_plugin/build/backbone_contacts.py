"""Overlapping backbone atoms: the pairs that may overlap and their penalty.

The backbone atoms and C-beta (N, CA, C, O, OXT, CB; :data:`SLOTS`) of a
structure are never moved one by one, so the clash relief of side chains
(:mod:`backmap_plugin.build.relax`) cannot separate them: the fits that move
the backbone onto beads keep them apart themselves. The centre-of-mass
settling (:func:`backmap_plugin.build.settle.settle_on_beads`) and the
Martini 3 joint fit (:func:`backmap_plugin.build.martini.fit_beads`) find the
pairs once (:func:`backbone_contact_pairs`; their steps move atoms by
tenths of an Angstrom) and pay for each pair closer than
:data:`CONTACT_DISTANCE` (:func:`backbone_contact_loss`). On a C-alpha
trace, which stays where it is, :func:`separate_planes` turns the peptide
planes of overlapping atoms apart.
Lengths in Angstrom.
"""

from __future__ import annotations

import torch

from backmap_plugin.build.backbone import backbone_dofs, build_backbone, fit_backbone, turn_planes_towards
from backmap_plugin.build.relax import residue_neighbours
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.topology import ProteinTopology

#: The atoms of a residue that take part, in the order of the (F, R, 6, 3) stacks :func:`backbone_contact_loss`
#: reads.
SLOTS = [chem.SLOT_N, chem.SLOT_CA, chem.SLOT_C, chem.SLOT_O, chem.SLOT_OXT, chem.SLOT_CB]
#: Pairs closer than this pay.
CONTACT_DISTANCE = 2.6
#: (6, 6) bool: atom pairs of residue i (rows) and i + 1 (columns) of one
#: segment more than three bonds apart (O(i)-O(i+1) is five; C(i)-N(i+1) is
#: the peptide bond; OXT only ends a segment; CB(i)-N(i+1) and C(i)-CB(i+1) are three).
_NEIGHBOUR_PAIRS = torch.tensor([
    # N'     CA'    C'     O'     OXT'   CB'
    [False, True, True, True, False, True],  # N
    [False, False, True, True, False, True],  # CA
    [False, False, False, True, False, False],  # C
    [False, False, True, True, False, True],  # O
    [False, False, False, False, False, False],  # OXT
    [False, True, True, True, False, True],  # CB
])


def backbone_contact_pairs(atoms: torch.Tensor, protein: ProteinTopology, search: float,
                           exists: torch.Tensor | None = None) -> torch.Tensor:
    """Backbone and C-beta atom pairs that may overlap: (3, P) indices (frame, atom, atom) into (F, 6 R) atoms.

    Atom ``6 r + k`` is atom ``k`` of :data:`SLOTS` of residue ``r``;
    pairs of atoms that exist, more than three bonds apart (residues two or
    more apart, of different segments, or neighbours:
    :data:`_NEIGHBOUR_PAIRS`), within ``search`` Angstrom of each other,
    the lower atom index first, sorted by frame and atoms. Only residues
    whose atoms can come that close
    (:func:`backmap_plugin.build.relax.residue_neighbours`) are compared atom
    by atom, so the work grows with the number of residues, not its square.

    Parameters
    ----------
    atoms : torch.Tensor
        (F, R, N_SLOTS, 3).
    protein : ProteinTopology
    search : float
        Pairs closer than this (Angstrom) are listed.
    exists : torch.Tensor, optional
        (R, 6) bool, the atoms of :data:`SLOTS` that take part (default:
        those the residues have).
    """
    n_frames, n_res = atoms.shape[:2]
    dev = atoms.device
    k = len(SLOTS)
    backbone = atoms[:, :, SLOTS]  # (F, R, 6, 3)
    if exists is None:
        exists = torch.as_tensor(protein.slot_mask[:, SLOTS], device=dev)  # (R, 6)
    ca = atoms[:, :, chem.SLOT_CA]
    reach = ((backbone - ca[:, :, None]).norm(dim=-1) * exists).amax(-1).amax(0)  # (R,)
    neighbours = residue_neighbours(ca, reach, search)
    key = torch.repeat_interleave(torch.arange(n_frames * n_res, device=dev), neighbours.start.diff())
    f, ri, rj = key // n_res, key % n_res, neighbours.residue
    segment = torch.as_tensor(protein.segment, device=dev)
    later = rj > ri
    f, ri, rj = f[later], ri[later], rj[later]
    step = (rj - ri)[:, None, None]
    apart = (step >= 2) | (segment[ri] != segment[rj])[:, None, None] | _NEIGHBOUR_PAIRS.to(dev)
    apart = apart & exists[ri, :, None] & exists[rj, None, :]
    close = (backbone[f, ri][:, :, None] - backbone[f, rj][:, None, :]).norm(dim=-1) < search
    p, a, b = torch.nonzero(close & apart, as_tuple=True)
    f, i, j = f[p], k * ri[p] + a, k * rj[p] + b
    order = torch.argsort((f * n_res * k + i) * n_res * k + j)
    return torch.stack([f, i, j])[:, order]


def backbone_contact_loss(backbone: torch.Tensor, pairs: torch.Tensor, weight: float) -> torch.Tensor:
    """(F,) sum over the pairs of ``weight`` x (shortfall below :data:`CONTACT_DISTANCE`)^2.

    Parameters
    ----------
    backbone : torch.Tensor
        (F, R, 6, 3) the atoms of :data:`SLOTS` of every residue (differentiable).
    pairs : torch.Tensor
        (3, P) from :func:`backbone_contact_pairs`.
    weight : float
        Per Angstrom^2.
    """
    flat = backbone.reshape(backbone.shape[0], -1, 3)
    f, i, j = pairs
    d = (flat[f, i] - flat[f, j]).norm(dim=-1)
    penalty = weight * torch.relu(CONTACT_DISTANCE - d) ** 2
    return torch.zeros(backbone.shape[0], dtype=backbone.dtype, device=backbone.device).index_add(0, f, penalty)


#: Turning peptide planes apart (:func:`separate_planes`): Gauss-Newton steps; the weight of the N-CA-C angles
#: between planes (per rad^2) and the damping (Angstrom^2 per rad^2) of
#: :func:`~backmap_plugin.build.backbone.turn_planes_towards`; pairs searched this far beyond
#: :data:`CONTACT_DISTANCE` (the turns bring atoms closer); planes turn where a pair is closer than
#: SEPARATE_TRIGGER (Angstrom; chosen on the val clusters of the train cache).
SEPARATE_STEPS = 8
SEPARATE_ANGLE_WEIGHT = 5.0
SEPARATE_DAMPING = 1.0
SEPARATE_MARGIN = 0.5
SEPARATE_TRIGGER = 2.2


def separate_planes(backbone: torch.Tensor, protein: ProteinTopology, steps: int = SEPARATE_STEPS) -> torch.Tensor:
    """Turn peptide planes about their C-alpha axes until their N, C and O atoms overlap no other backbone atom.

    A backbone built on a fixed C-alpha trace places each peptide's C, O
    and N by one rotation (:func:`~backmap_plugin.build.backbone.build_backbone`):
    two carbonyl oxygens can point at each other (neighbouring peptides,
    or residues apart in sequence packed close), which the side-chain
    relief cannot separate. In the structures with a pair of N, CA, C and
    O atoms closer than :data:`SEPARATE_TRIGGER`, the planes that hold
    such a pair's atoms, and their neighbours, turn
    (:func:`~backmap_plugin.build.backbone.turn_planes_towards` steps, the
    N-CA-C angles between planes restrained): every pair closer than
    :data:`CONTACT_DISTANCE` asks for half the shortfall each, every other
    atom to stay. The residues next to a plane that turned take the new
    atoms (fitted again, :func:`~backmap_plugin.build.backbone.fit_backbone`).

    Parameters
    ----------
    backbone : torch.Tensor
        (F, R, N_SLOTS, 3) with N, CA, C, O placed (as the model builds it).
    protein : ProteinTopology
    steps : int

    Returns
    -------
    torch.Tensor
        (F, R, N_SLOTS, 3): ``backbone`` itself where no pair is that close.
    """
    dev = backbone.device
    exists = torch.as_tensor(protein.slot_mask[:, SLOTS], device=dev).clone()
    exists[:, 4:] = False  # (OXT and CB are built later)
    f, i, j = backbone_contact_pairs(backbone, protein, CONTACT_DISTANCE + SEPARATE_MARGIN, exists)
    flat = backbone[:, :, SLOTS].reshape(backbone.shape[0], -1, 3)
    short = (flat[f, i] - flat[f, j]).norm(dim=-1) < SEPARATE_TRIGGER
    if not bool(short.any()):
        return backbone
    frames = torch.unique(f[short])  # (only these structures turn)
    index = torch.full((backbone.shape[0],), -1, dtype=torch.long, device=dev)
    index[frames] = torch.arange(len(frames), device=dev)
    keep = index[f] >= 0
    out = backbone.clone()
    out[frames] = _turn_apart(backbone[frames], protein, index[f[keep]], i[keep], j[keep], short[keep], steps)
    return out


def _turn_apart(backbone: torch.Tensor, protein: ProteinTopology, f: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                short: torch.Tensor, steps: int) -> torch.Tensor:
    """:func:`separate_planes` of structures with close pairs (frame, atom, atom; ``short``: closer than the
    trigger)."""
    dev = backbone.device
    layout = protein.backbone_layout
    ca = backbone[..., chem.SLOT_CA, :]
    dofs = backbone_dofs(backbone, layout)
    start = dofs["angle"].clone()
    k = len(SLOTS)
    # the planes that hold an atom of a short pair (C and O of residue r: the plane starting at r; N: the one
    # ending at r) and their neighbours turn; the others keep their angles
    n_planes = len(layout.first)
    first = torch.as_tensor(layout.first, device=dev)
    plane_of = torch.full((ca.shape[1], 3), -1, dtype=torch.long, device=dev)  # residue, (N, C, O) -> plane
    plane_of[first, 1] = plane_of[first, 2] = torch.arange(n_planes, device=dev)
    plane_of[first + 1, 0] = torch.arange(n_planes, device=dev)
    free = torch.zeros(ca.shape[0], n_planes + 2, dtype=torch.bool, device=dev)  # (padded: planes -1 and P)
    for atom in (i[short], j[short]):
        slot = atom % k
        held = plane_of[atom // k, torch.where(slot == 0, 0, slot - 1).clamp(max=2)]
        held = torch.where((slot == 1) | (slot > 3), -1, held)  # (CA is on no plane)
        for shift in (-1, 0, 1):
            free[f[short], (held + shift).clamp(min=-1) + 1] |= held >= 0
    free = free[:, 1:-1]
    built = backbone
    for _ in range(steps):
        atoms = built[:, :, SLOTS].reshape(built.shape[0], -1, 3)
        v = atoms[f, i] - atoms[f, j]
        d = v.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        push = torch.relu(CONTACT_DISTANCE - d) / 2 * v / d
        targets = atoms.clone().index_put_((f, i), push, accumulate=True).index_put_((f, j), -push, accumulate=True)
        targets = torch.cat([targets.view(built.shape[0], -1, k, 3)[:, :, :4], built[:, :, 4:]], -2)
        turned = turn_planes_towards(ca, dofs, layout, protein.res_type, targets, SEPARATE_ANGLE_WEIGHT,
                                     SEPARATE_DAMPING)
        dofs["angle"] = torch.where(free, turned, start)
        built = build_backbone(ca, layout, protein.res_type, dofs)
    turned = free & ((dofs["angle"] - start).abs() > 1e-3)  # (F, P)
    moved = torch.zeros(ca.shape[:2], dtype=torch.bool, device=dev)
    moved[:, first] |= turned
    moved[:, first + 1] |= turned
    return torch.where(moved[..., None, None], fit_backbone(built, layout), backbone)
