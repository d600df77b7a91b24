"""Backbones for the beads of coarse-grained simulations.

A one-bead-per-residue CG model (HPS, CALVADOS) has no term for the local
shape of the chain, and its traces take shapes no protein backbone follows:
an alpha-synuclein HPS run straightens 14 % of its virtual angles beyond 150
degrees (train crystal structures: 0.25 %), and a backbone hung on every
bead keeps N-CA-C 10-40 degrees off and phi / psi where no protein has them.
:func:`fit_backbone_to_beads` gives the C-alpha atoms some room instead:

1. :func:`choose_planes`: each peptide plane is turned about its CA-CA axis
   by one of :data:`PLANE_TURNS` equal steps of a full turn. A residue's
   N-CA-C angle and its phi and psi depend on its two peptide planes only,
   so along a chain the turns that best meet the Ramachandran prior
   (:class:`~backmap_plugin.build.rama_prior.RamachandranPrior`,
   :data:`RAMA_MARGIN` inside the favoured contour, :data:`CHOICE_RAMA_WEIGHT`)
   and the ideal N-CA-C (:data:`CHOICE_ANGLE_WEIGHT`) are found exactly, by
   dynamic programming, at :data:`TURN_COST` times (1 - cos turn) for
   leaving the builder's plane.
2. :data:`STEPS` Adam steps on the trace, the plane turns and the terminal
   torsions: each bead's squared distance to its input bead (a bead is a
   weighted mean of its residue's atoms, the C-alpha atom by default; side
   chains move with their residues' frames), N-CA-C (:data:`ANGLE_WEIGHT`),
   the same prior (:data:`RAMA_WEIGHT`) and backbone contacts; bonded
   C-alpha atoms are brought back to their peptide lengths after each step.
3. N, C and O fitted to Engh & Huber geometry around the new trace
   (:func:`~backmap_plugin.build.backbone.fit_backbone`), the side chains
   built again with their chi angles, their clashes relieved.

:func:`structures_to_fit` says which structures get it; the API applies it
after any builder.
Lengths in Angstrom, angles in radians.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from backmap_plugin.build.backbone import (
    CIS_PEPTIDE,
    MIN_PEPTIDE_LENGTH,
    PROLINE_PHI,
    backbone_atoms,
    backbone_dofs,
    build_backbone,
    fit_backbone,
    oxt_position,
    trace_spread,
    turn_proline_units,
)
from backmap_plugin.build.backbone_contacts import SLOTS, backbone_contact_loss, backbone_contact_pairs
from backmap_plugin.build.carry import residue_frame
from backmap_plugin.build.ideal import build_side_chains, constrain_trace, relieve_clashes, side_chain_internal
from backmap_plugin.build.rama_prior import RamachandranPrior
from backmap_plugin.build.settle import slot_weights
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.adam import Adam, decaying_size
from backmap_plugin.core.geometry import bond_angle, chi_angles, dihedral, wrap_angle
from backmap_plugin.core.mappings import Mapping
from backmap_plugin.core.topology import ProteinTopology

#: Traces whose bonded C-alpha distances spread more than this (Angstrom; :func:`coarse_grained_traces`) get the
#: fit: HPS and CALVADOS runs 0.17-0.2 A, all-atom trajectories' C-alpha atoms up to 0.09 (train MD frames; median
#: 0.06), crystal structures and NMR models less. On all-atom MD C-alpha traces the fit costs accuracy (val MD
#: trajectories, heavy-atom RMSD 1.44 -> 1.50 A, clashes 0.3 -> 1.3 per 100 residues).
CG_TRACE_SPREAD = 0.1
#: Turns a plane may take in :func:`choose_planes` (equal steps of a full turn) and the cost of leaving the
#: builder's plane (times 1 - cos turn, per plane).
PLANE_TURNS = 12
TURN_COST = 0.1
#: Weights of the Ramachandran prior (log10 density units below :data:`RAMA_MARGIN` above the favoured contour)
#: and of N-CA-C (per radian^2) in the choice of planes.
RAMA_WEIGHT = 6.0
CHOICE_RAMA_WEIGHT = 10.0
RAMA_MARGIN = 0.5
CHOICE_ANGLE_WEIGHT = 30.0
#: The Adam steps: their number, step size (decaying linearly to FINAL_FRACTION of it), the weights of a bead's
#: squared distance to its input bead (per Angstrom^2; the default of :func:`fit_backbone_to_beads`) and of N-CA-C
#: (per radian^2), and the backbone contacts (:mod:`~backmap_plugin.build.backbone_contacts`: pairs within
#: CONTACT_SEARCH Angstrom as the steps start, and every CONTACT_REFRESH steps, pay CONTACT_WEIGHT per Angstrom^2
#: of their shortfall).
STEPS = 30
STEP_SIZE = 0.1
FINAL_FRACTION = 0.1
ANGLE_WEIGHT = 60.0
BEAD_WEIGHT = 1.0
#: The bead weights for chains that mix centre-of-mass and C-alpha beads (:func:`fit_settings`): centres of mass
#: (folded domains held near their structure) and C-alpha beads (linkers). At 40 for both the CALVADOS 3 TIA1
#: run's output beads lay closer to its beads than without the fit (4 frames: C-alpha 0.28 / 0.28 A, centres of
#: mass 0.32 -> 0.26), with Ramachandran outliers 9.5 -> 3.2 % and N-CA-C outliers 19 -> 11 per structure (at 1
#: the beads were missed by 0.73 / 0.48 A); 100 for the C-alpha beads: TIA1 0.24 A (outliers 3.6 %, N-CA-C 12),
#: the example's 4-residue linker 0.22 / 0.22 / 0.31 -> 0.19 / 0.18 / 0.19 A in three CG runs.
MIXED_BEAD_WEIGHT = 40.0
LINKER_BEAD_WEIGHT = 100.0
CONTACT_SEARCH = 4.0
CONTACT_WEIGHT = 10.0
#: Steps after which the backbone contacts are searched again: the steps move atoms by Angstroms (plane turns, and
#: short segments pulled onto their beads: in a val NMR ensemble of 36 residues in 20 segments an OXT 5.5 A from a
#: C atom as the steps started ended 1.5 A from it).
CONTACT_REFRESH = 10
#: Structures built on residue centres of mass alone are fitted where more than STRAINED_FRACTION of their residues
#: lie more than STRAINED_PENALTY (log10 density units) below the favoured Ramachandran contour
#: (:func:`strained_backbones`), or where their centres of mass miss the input's by more than MISSED_BEADS (Angstrom
#: rms; the limit the bead RMSD is held to). The centre-of-mass model leaves 5.8-10.6 % of residues that far out on
#: the beads of a CALVADOS 3 run of the HIV-1 capsid made one domain (20 frames; Ramachandran outliers 6.3 %, bead
#: RMSD 0.26 A; fitted: 2.2 %, 0.20 A), on structures' centres of mass a median of 2 % (train val clusters, 127
#: structures, 23 of them above 5 %: 17 of 20 models of a 28-residue tricyclic NMR peptide and 6 crystal
#: structures). With both criteria 8 of the 77 val files have a structure fitted: the crystal median (0.81 / 1.22 A
#: heavy atoms / side chains) and MD mean (0.99 / 1.46) stay as they were, the NMR ensembles go 1.74 / 2.33 -> 1.76 /
#: 2.34 A, clashes 1.4 -> 2.3 per 100 residues, beads 0.33 -> 0.27 A.
STRAINED_PENALTY = 1.0
STRAINED_FRACTION = 0.05
MISSED_BEADS = 0.3
#: A proline's phi, held by its ring near PROLINE_PHI (-65 degrees), pays PROLINE_WEIGHT per radian^2 beyond
#: PROLINE_TOLERANCE: the Ramachandran prior gives no pull to a phi far outside the trans-proline region (its penalty
#: is capped at :data:`~backmap_plugin.build.rama_prior.MAX_PENALTY`), where the fit left prolines of a HPS run at phi
#: -140 to -170 degrees. HPS p53 1-93 (22 prolines, 20 frames; weight 0 / 10 / 30 / 50 / 100): Ramachandran
#: outliers 6.4 / 5.4 / 5.2 / 5.5 / 5.7 %, angle outliers 2.0 / 1.1 / 1.4 / 1.7 / 2.1 per structure; at 50 no proline
#: of the test's two frames is more than 43 degrees off (at 10 two were at -160 and -166). Alpha-synuclein HPS 1.56
#: -> 1.52 %, CALVADOS 3 TIA1 3.57 -> 3.48 %.
PROLINE_WEIGHT = 50.0
PROLINE_TOLERANCE = math.radians(20.0)
#: Sweeps of :func:`~backmap_plugin.build.ideal.constrain_trace` after each step (bonded C-alpha atoms towards
#: their peptide lengths).
PROJECTION_SWEEPS = 3


def structures_to_fit(atoms: torch.Tensor, beads: torch.Tensor, protein: ProteinTopology,
                      mapping: Mapping) -> torch.Tensor:
    """(F, S) bool: the structures (F, S, R, N_SLOTS, 3) built on beads (F, R, 3) that :func:`fit_backbone_to_beads`
    should fit.

    The frames of C-alpha beads of a coarse-grained simulation
    (:func:`coarse_grained_traces`); chains that mix centre-of-mass and
    C-alpha beads (CALVADOS 3 domains and linkers, always a coarse-grained
    run's); structures built on centres of mass alone whose backbones are
    strained (:func:`strained_backbones`: a coarse-grained run's beads, or
    an unusual structure's). Not Martini 3 beads (their own fit holds
    N-CA-C and phi / psi).
    """
    n_frames, samples = atoms.shape[:2]
    if mapping.bead_is_ca:
        frames = coarse_grained_traces(beads, torch.as_tensor(protein.segment[1:] == protein.segment[:-1],
                                                              device=beads.device))
        return frames[:, None].expand(-1, samples)
    if mapping.name != "com":
        return torch.zeros((n_frames, samples), dtype=torch.bool, device=atoms.device)
    if mixes_beads(mapping, protein.n_residues):
        return torch.ones((n_frames, samples), dtype=torch.bool, device=atoms.device)
    flat = atoms.flatten(0, 1)
    present = protein.slot_mask.copy()
    present[:, chem.SLOT_OXT] = False
    built = mapping.bead_positions(flat.to(torch.float64), present, protein.res_type)
    target = beads.to(torch.float64).repeat_interleave(samples, 0)
    missed = (built - target).pow(2).sum(-1).mean(-1).sqrt() > MISSED_BEADS
    return (strained_backbones(flat, protein) | missed).view(n_frames, samples)


def strained_backbones(atoms: torch.Tensor, protein: ProteinTopology) -> torch.Tensor:
    """(N,) bool: the structures (N, R, N_SLOTS, 3) with more than :data:`STRAINED_FRACTION` of their residues (with
    phi and psi) more than :data:`STRAINED_PENALTY` below the favoured Ramachandran contour."""
    prior = RamachandranPrior(protein, torch.float64, atoms.device)
    if not len(prior.index):
        return torch.zeros(atoms.shape[0], dtype=torch.bool, device=atoms.device)
    work = atoms.to(torch.float64)
    penalty = prior.penalties(work[..., chem.SLOT_N, :], work[..., chem.SLOT_CA, :], work[..., chem.SLOT_C, :])
    return (penalty > STRAINED_PENALTY).to(torch.float64).mean(-1) > STRAINED_FRACTION


def mixes_beads(mapping: Mapping, n_residues: int) -> bool:
    """Whether ``mapping`` makes a chain of centre-of-mass and C-alpha beads (CALVADOS 3 domains and linkers)."""
    return mapping.name == "com" and bool(mapping.is_ca(n_residues).any())


def fit_settings(mapping: Mapping, protein: ProteinTopology) -> tuple[torch.Tensor | None, float | torch.Tensor]:
    """The ``weights`` and ``bead_weight`` of :func:`fit_backbone_to_beads` for beads of ``mapping``."""
    if mapping.bead_is_ca:
        return None, BEAD_WEIGHT
    present = protein.slot_mask.copy()
    present[:, chem.SLOT_OXT] = False
    probe = torch.zeros((1, protein.n_residues, chem.N_SLOTS, 3), dtype=torch.float64)
    weights = slot_weights(lambda x: mapping.bead_positions(x, present, protein.res_type), probe)
    linker = torch.as_tensor(mapping.is_ca(protein.n_residues))
    return weights, torch.where(linker, LINKER_BEAD_WEIGHT, MIXED_BEAD_WEIGHT).to(torch.float64)


def coarse_grained_traces(ca: torch.Tensor, same_segment: torch.Tensor) -> torch.Tensor:
    """(F,) bool: the frames of C-alpha traces ``ca`` (F, R, 3) whose bonded distances (``same_segment``, (R - 1,)
    bool) spread as a coarse-grained simulation's do (:data:`CG_TRACE_SPREAD`,
    :func:`~backmap_plugin.build.backbone.trace_spread`)."""
    return trace_spread(ca, same_segment) > CG_TRACE_SPREAD


def plane_turns(dtype=torch.float64, device=None) -> torch.Tensor:
    """(K,) the turns :func:`choose_planes` tries, radians: :data:`PLANE_TURNS` equal steps from 0."""
    return torch.arange(PLANE_TURNS, dtype=dtype, device=device) * (2 * math.pi / PLANE_TURNS)


def plane_pair_costs(ca: torch.Tensor, dofs: dict, protein: ProteinTopology,
                     prior: RamachandranPrior) -> tuple[torch.Tensor, torch.Tensor]:
    """The cost of each pair of turns of consecutive peptide planes, from the residue they share.

    Parameters
    ----------
    ca : torch.Tensor
        (F, R, 3) C-alpha trace.
    dofs : dict
        Its backbone degrees of freedom (:func:`~backmap_plugin.build.backbone.backbone_dofs`).
    protein : ProteinTopology
    prior : RamachandranPrior
        For ``protein``.

    Returns
    -------
    cost : torch.Tensor
        (F, P, K, K): for plane p turned by ``plane_turns()[b]`` and plane
        p - 1 by ``plane_turns()[a]``, :data:`CHOICE_ANGLE_WEIGHT` times the
        squared N-CA-C deviation of their shared residue plus
        :data:`CHOICE_RAMA_WEIGHT` times its Ramachandran penalty (where it
        has phi and psi); 0 where the planes share no residue.
    coupled : torch.Tensor
        (P,) bool: plane p shares a residue with plane p - 1.
    """
    layout = protein.backbone_layout
    first = torch.as_tensor(layout.first, device=ca.device)
    n_frames, n_planes = dofs["angle"].shape
    turns = plane_turns(ca.dtype, ca.device)
    # each plane's N(i+1) and C(i) at every turn: (F, P, K, 3)
    built = [backbone_atoms(ca, layout, protein.res_type, {**dofs, "angle": dofs["angle"] + t}) for t in turns]
    n_of = torch.stack([b[0][:, first + 1] for b in built], 2)
    c_of = torch.stack([b[2][:, first] for b in built], 2)
    coupled = torch.zeros(n_planes, dtype=torch.bool, device=ca.device)
    coupled[1:] = first[1:] == first[:-1] + 1
    p = torch.nonzero(coupled)[:, 0]
    residue = first[p]
    cost = ca.new_zeros(n_frames, n_planes, PLANE_TURNS, PLANE_TURNS)
    # residue i's N(i) (and C(i-1)) come with plane p - 1's turn a, its C(i) (and N(i+1)) with plane p's turn b: its
    # N-CA-C, phi and psi from dot products of a's vectors with b's ((F, M, K, 3) each)
    centre = ca[:, residue, None]
    to_n, to_c = n_of[:, p - 1] - centre, c_of[:, p] - centre
    # (element-wise, not einsum's batched products: a frame's choice does not depend on the batch it came in)
    pair = lambda u, v: (u[..., :, None, :] * v[..., None, :, :]).sum(-1)  # noqa: E731
    ideal = math.radians(chem.ANGLE_N_CA_C)
    cosine = pair(to_n, to_c) / (to_n.norm(dim=-1)[..., :, None] * to_c.norm(dim=-1)[..., None, :])
    block = CHOICE_ANGLE_WEIGHT * (torch.acos(cosine.clamp(-1.0, 1.0)) - ideal).pow(2)
    scored = torch.full((len(protein.res_type),), -1, dtype=torch.int64, device=ca.device)
    scored[prior.index] = torch.arange(len(prior.index), device=ca.device)
    rows = scored[residue]  # the residue's row in the prior, -1 without phi and psi
    k = torch.nonzero(rows >= 0)[:, 0]
    if len(k):
        # phi = dihedral(C(i-1), N(i), CA(i), C(i)) and psi = dihedral(N(i), CA(i), C(i), N(i+1)) as in
        # core.geometry.dihedral, with the projections that vanish left out so that each factor is one plane's
        axis = -to_n[:, k] / to_n[:, k].norm(dim=-1, keepdim=True)  # N(i) -> CA(i)
        back = c_of[:, p[k] - 1] - n_of[:, p[k] - 1]
        v = back - (back * axis).sum(-1, keepdim=True) * axis
        phi = torch.atan2(pair(torch.linalg.cross(axis, v, dim=-1), to_c[:, k]), pair(v, to_c[:, k]))
        bond = to_c[:, k] / to_c[:, k].norm(dim=-1, keepdim=True)  # CA(i) -> C(i)
        ahead = n_of[:, p[k]] - c_of[:, p[k]]
        w = ahead - (ahead * bond).sum(-1, keepdim=True) * bond
        psi = torch.atan2(pair(to_n[:, k], torch.linalg.cross(w, bond, dim=-1)), pair(to_n[:, k], w))
        rama = prior.penalty_of(phi.permute(0, 2, 3, 1), psi.permute(0, 2, 3, 1), rows[k])
        block[:, k] += CHOICE_RAMA_WEIGHT * rama.permute(0, 3, 1, 2)
    cost[:, p] = block
    return cost, coupled


def cheapest_turns(cost: torch.Tensor, coupled: torch.Tensor, leave: torch.Tensor) -> torch.Tensor:
    """(F, P) index of each plane's turn in the cheapest choice along the chain (dynamic programming, Viterbi).

    Parameters
    ----------
    cost : torch.Tensor
        (F, P, K, K) cost of plane p - 1's turn a with plane p's turn b
        (:func:`plane_pair_costs`).
    coupled : torch.Tensor
        (P,) bool: plane p shares a residue with plane p - 1 (else its choice
        is free of the one before).
    leave : torch.Tensor
        (K,) cost of each turn on its own.

    Returns
    -------
    torch.Tensor
        (F, P) int64: the choice minimising the sum of ``leave`` over the planes and ``cost`` over coupled pairs.
    """
    n_frames, n_planes = cost.shape[:2]
    best = leave.expand(n_frames, -1).clone()
    back = []
    links = coupled.tolist()  # (read once: on a GPU each element read would wait for the device)
    for p in range(1, n_planes):
        if links[p]:
            best, arg = (best[:, :, None] + cost[:, p]).min(1)
        else:
            lowest, arg = best.min(1, keepdim=True)
            best, arg = lowest.expand(-1, len(leave)), arg.expand(-1, len(leave))
        best = best + leave
        back.append(arg)
    chosen = [best.argmin(1)]
    for arg in reversed(back):
        chosen.append(torch.gather(arg, 1, chosen[-1][:, None])[:, 0])
    return torch.stack(chosen[::-1], 1)


def choose_planes(ca: torch.Tensor, dofs: dict, protein: ProteinTopology, prior: RamachandranPrior) -> dict:
    """The backbone degrees of freedom ``dofs`` of traces ``ca`` (F, R, 3) with each plane turned as step 1 of the
    module docstring chooses (:func:`plane_pair_costs`, :func:`cheapest_turns`; ``prior`` for ``protein``)."""
    turns = plane_turns(ca.dtype, ca.device)
    chosen = cheapest_turns(*plane_pair_costs(ca, dofs, protein, prior), TURN_COST * (1 - torch.cos(turns)))
    return {**dofs, "angle": dofs["angle"] + turns[chosen]}


def fit_backbone_to_beads(atoms: torch.Tensor, beads: torch.Tensor, protein: ProteinTopology,
                          weights: torch.Tensor | None = None,
                          bead_weight: float | torch.Tensor = BEAD_WEIGHT) -> torch.Tensor:
    """Structures (F, R, N_SLOTS, 3) built on coarse-grained beads, with backbones a protein can have.

    Parameters
    ----------
    atoms : torch.Tensor
        (F, R, N_SLOTS, 3) built heavy atoms. Their peptides stay cis or
        trans as built (bonded C-alpha atoms at the cis length where closer
        than :data:`~backmap_plugin.build.backbone.MIN_PEPTIDE_LENGTH`, 3.8
        Angstrom elsewhere).
    beads : torch.Tensor
        (F, R, 3) the beads they were built on.
    protein : ProteinTopology
    weights : torch.Tensor, optional
        (R, N_SLOTS) weight of each atom in its residue's bead (OXT not
        counted; e.g. a centre of mass); default the C-alpha atom. The
        side chains move with their residues' (CA, N, C) frames while the
        fit runs.
    bead_weight : float or torch.Tensor, optional
        Weight of a bead's squared distance to its input bead, per
        Angstrom^2: one value, or (R,) one per residue (default
        :data:`BEAD_WEIGHT`).

    Returns
    -------
    torch.Tensor
        (F, R, N_SLOTS, 3), the module docstring's steps done; ``atoms`` as
        they are for a protein without peptides.
    """
    if not len(protein.backbone_layout.first):
        return atoms
    if weights is None:
        weights = torch.zeros(protein.n_residues, chem.N_SLOTS, dtype=torch.float64, device=atoms.device)
        weights[:, chem.SLOT_CA] = 1.0
    # the fit differentiates: tensors made in inference mode (a model's output) are copied out of it
    with torch.inference_mode(False):
        bead_weight = torch.as_tensor(bead_weight, dtype=torch.float64, device=atoms.device)
        return _fit(atoms.clone(), beads.clone(), protein, weights.clone(),
                    bead_weight[:, None] if bead_weight.ndim else bead_weight)


def _fit(atoms: torch.Tensor, beads: torch.Tensor, protein: ProteinTopology, weights: torch.Tensor,
         bead_weight: torch.Tensor) -> torch.Tensor:
    layout = protein.backbone_layout
    dtype, dev = atoms.dtype, atoms.device
    rt = torch.as_tensor(protein.res_type, device=dev)
    work = torch.float64
    built, beads, weights = atoms.to(work), beads.to(work), weights.to(device=dev, dtype=work)
    same = torch.as_tensor(protein.segment[1:] == protein.segment[:-1], device=dev)
    prior = RamachandranPrior(protein, work, dev, margin=RAMA_MARGIN)
    ca = built[..., chem.SLOT_CA, :]
    cis = torch.tensor(CIS_PEPTIDE["length"], dtype=work, device=dev)
    length = torch.where((ca[:, 1:] - ca[:, :-1]).norm(dim=-1, keepdim=True) < MIN_PEPTIDE_LENGTH, cis,
                         torch.tensor(chem.BOND_CA_CA_TRANS, dtype=work, device=dev))
    # a bead: its backbone atoms', and its side chain's held in the residue's frame (moment about CA, frame axes);
    # products written out element-wise, not einsum's batched ones (a frame's fit then depends on the batch it came
    # in only through the last bit of atan2, whose vectorised and scalar paths differ)
    side = torch.as_tensor(chem.SIDE_CHAIN_SLOTS, device=dev)
    side_weights = weights * side
    start_frame = residue_frame(built[..., chem.SLOT_N, :], ca, built[..., chem.SLOT_C, :])
    local = (start_frame[:, :, None] * (built - ca[..., None, :])[..., None, :]).sum(-1)  # (F, R, S, 3) frame axes
    moment = (side_weights[None, :, :, None] * local).sum(2)
    on_ca = weights[:, chem.SLOT_CA] + side_weights.sum(-1)
    local_cb = local[:, :, chem.SLOT_CB]
    dofs = choose_planes(ca, backbone_dofs(built, layout), protein, prior)
    names = list(dofs)
    params = [ca.clone()] + [dofs[k].clone() for k in names]
    adam = Adam(params, eps=1e-3)
    ideal = math.radians(chem.ANGLE_N_CA_C)
    searched = torch.zeros_like(built)
    proline = torch.as_tensor(np.flatnonzero(np.r_[False, protein.segment[1:] == protein.segment[:-1]]
                                             & (protein.res_type == chem.RESIDUE_INDEX["PRO"])), device=dev)
    term = torch.as_tensor(np.flatnonzero(protein.c_terminal), device=dev)
    for step in range(STEPS):
        with torch.enable_grad():
            leaves = [p.requires_grad_() for p in params]
            n, trace, c, o = backbone_atoms(leaves[0], layout, protein.res_type, dict(zip(names, leaves[1:])))
            frame = residue_frame(n, trace, c)
            bead = (weights[:, chem.SLOT_N, None] * n + on_ca[:, None] * trace + weights[:, chem.SLOT_C, None] * c
                    + weights[:, chem.SLOT_O, None] * o + (frame * moment[..., None]).sum(-2))
            loss = (bead_weight * (bead - beads).pow(2)).sum()
            cb = trace + (frame * local_cb[..., None]).sum(-2)
            oxt = torch.zeros_like(c).index_copy(1, term, oxt_position(c[:, term], trace[:, term], o[:, term]))
            stack = torch.stack([n, trace, c, o, oxt, cb], 2)  # backbone_contacts.SLOTS
            if step % CONTACT_REFRESH == 0:  # the pairs near each other as the steps go (they move atoms by Angstroms)
                searched[:, :, SLOTS] = stack.detach()
                contacts = backbone_contact_pairs(searched, protein, CONTACT_SEARCH)
            if contacts.shape[1]:
                loss = loss + backbone_contact_loss(stack, contacts, CONTACT_WEIGHT).sum()
            loss = loss + ANGLE_WEIGHT * (bond_angle(n, trace, c) - ideal).pow(2).sum()
            loss = loss + RAMA_WEIGHT * prior(n, trace, c).sum()
            if len(proline):
                phi = dihedral(c[:, proline - 1], n[:, proline], trace[:, proline], c[:, proline])
                off = wrap_angle(phi - PROLINE_PHI)
                loss = loss + PROLINE_WEIGHT * torch.relu(off.abs() - PROLINE_TOLERANCE).pow(2).sum()
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        adam.step([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)],
                  decaying_size(STEP_SIZE, FINAL_FRACTION, step, STEPS))
        params = [p.detach() for p in params]
        params[0].copy_(constrain_trace(params[0], same, PROJECTION_SWEEPS, length))
    trace = constrain_trace(params[0], same, length=length)  # the peptides' lengths exact
    backbone = fit_backbone(build_backbone(trace, layout, protein.res_type, dict(zip(names, params[1:]))), layout)
    backbone = turn_proline_units(backbone, layout)
    internal = side_chain_internal(protein.res_type, torch.nan_to_num(chi_angles(built, rt)))
    return relieve_clashes(build_side_chains(backbone, protein, internal), protein).to(dtype)
