"""Heavy atoms fitted to Martini 3 beads (deterministic).

The input is what ``martinize2`` makes of a protein (force field
``martini3001``): per residue a backbone bead ``BB`` (the mass-weighted
centre of N, CA, C, O, and of OXT at a C terminus) and up to five
side-chain beads ``SC1`` ... (:mod:`backmap_plugin.core.martini3`). The
builder makes heavy atoms with ideal bond lengths and angles whose beads,
computed by the same mapping, lie on the input beads:

1. **Start of the C-alpha trace** (:func:`initial_trace`). The BB beads,
   bonded C-alpha atoms held 3.8 Angstrom apart
   (:func:`backmap_plugin.build.ideal.constrain_trace`), then damped
   fixed-point steps that move every C-alpha by what the BB bead of the
   built backbone (:func:`backmap_plugin.build.backbone.build_backbone`,
   OXT included) misses.
2. **Side-chain candidates** (:func:`side_chain_candidates`). Every rotamer
   of the library (:func:`backmap_plugin.build.rotamers.load_rotamers`) is a
   start; the :data:`CANDIDATES_FITTED` cheapest of a residue (bead misfit
   and rotamer frequency) go on: Levenberg-Marquardt steps on their chi
   angles (:func:`fit_chis`, all candidates of all residues at once,
   analytic derivatives of rigid turns about the chi bonds) pull their
   side-chain beads onto the input. A
   candidate's cost is :data:`BEAD_WEIGHT` times the squared distance its
   beads still miss by plus the rotamer-frequency cost of the ideal builder.
3. **Joint fit** (:func:`fit_beads`), :data:`FIT_ROUNDS` rounds: each
   residue takes its cheapest candidate (the previous round's fit is one
   more), then Adam steps move the C-alpha atoms, the peptide-plane
   rotations, the terminal torsions and the chi angles together so that all
   beads lie on the input, with restraints that keep bonded C-alpha atoms
   3.8 Angstrom apart and N-CA-C near its ideal angle (the peptide planes
   are rigid and ideal, so N-CA-C is the one backbone angle the fit can
   spoil; it comes out with an rms deviation of about 3 degrees, as in
   crystal structures).
4. **Placement.** The C-alpha trace is constrained to 3.8 Angstrom (a
   model's cis X-Pro peptides to the cis length); a
   peptide unit that leaves the next proline's phi positive turns to phi
   -65 degrees (:func:`~backmap_plugin.build.backbone.turn_proline_units`:
   the ring could not close); the
   joint fit's side chains are fitted again on the final backbone, and
   where one of them overlaps (by more than
   :data:`~backmap_plugin.build.ideal.ACTIVE_OVERLAP`, in the structure
   they make, :func:`~backmap_plugin.build.ideal.placement_start`) the
   residue's :data:`CANDIDATES_FITTED` cheapest library rotamers are fitted
   too and are candidates beside it;
   :func:`backmap_plugin.build.ideal.place_side_chains` starts from that
   structure (its contacts are searched once), picks for the overlapping
   residues so that side chains do not overlap, and relieves the clashes
   left by small chi turns. (Offering every residue its
   rotamers, as before session 19, took 0.086 ms per residue of a Martini 3
   model's 0.37 in the fit, against 0.060 with the overlap check, train MD
   profile; on the val clusters it left the crystal medians as they are and
   the MD / NMR ensembles' heavy atoms 0.002 A closer, side chains 0.005 A.
   Until session 22 the overlaps were those of the side chains before they
   were fitted again, and the placement searched the contacts a second
   time.) (The backbone is not passed through
   :func:`~backmap_plugin.build.backbone.fit_backbone`: that moves N and C,
   hence CB and every side-chain bead, off the fit.)

A Martini 3 model (:mod:`backmap_plugin.model.method`) replaces steps 1-3's
candidate search: :func:`fit_to_beads` takes its structure (with its cis
X-Pro peptides, which stay cis), moves each
residue rigidly towards its beads (:func:`align_residues`,
:data:`ALIGN_STEPS` fixed-point steps without gradients), then runs one
joint-fit round of :data:`START_FIT_STEPS` Adam steps, then step 4. That
round also holds phi / psi in the favoured Ramachandran region
(:data:`RAMA_WEIGHT`) and backbone atoms and C-beta more than three bonds
apart from overlapping (:data:`CONTACT_WEIGHT`): the thermal noise of real
CG dynamics would pull the model's dihedrals out of that region and lay
carbonyl oxygens onto each other. Last, each side chain turns rigidly about its
C-alpha atom towards its beads by at most :data:`TILT_LIMIT`
(:func:`tilt_side_chains`).

Bond lengths and angles are ideal throughout, but for N-CA-C (the joint fit
restrains it) and, after a model's fit, N-CA-CB and C-CA-CB (within
:data:`TILT_LIMIT` of ideal): side chains turn about their chi bonds
(proline keeps its library puckers, which close the ring),
the peptide planes are rigid. Every peptide of the fitted builder comes out
trans (the trace is held at 3.8 Angstrom); a model's structure keeps the cis
X-Pro peptides its locator found. Everything is torch, batched over frames and
vectorised over residues. The fit runs in float64 (:data:`FIT_DTYPE`) with
element-wise Adam updates, so a frame's result does not depend on the other
frames of the batch. Lengths are Angstrom, angles radians.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from backmap_plugin.build import relax
from backmap_plugin.build.backbone import (
    backbone_atoms,
    backbone_dofs,
    build_backbone,
    oxt_position,
    peptide_lengths,
    turn_planes_towards,
    turn_proline_units,
)
from backmap_plugin.build.backbone_contacts import backbone_contact_loss, backbone_contact_pairs
from backmap_plugin.build.carry import CarriedSideChains, residue_frame
from backmap_plugin.build.chi_turns import ChiLevers, ChiTurner
from backmap_plugin.build.disulfides import close_bonded
from backmap_plugin.build.ideal import (
    ACTIVE_OVERLAP,
    FREQUENCY_WEIGHT,
    constrain_trace,
    place_side_chains,
    placement_start,
    side_chain_internal,
)
from backmap_plugin.build.rama_prior import RamachandranPrior
from backmap_plugin.build.rotamers import load_rotamers
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import martini3 as m3
from backmap_plugin.core.adam import Adam, decaying_size
from backmap_plugin.core.geometry import (
    bond_angle,
    build_residues,
    chi_angles,
    rigid_fit,
    rotate_about_axis,
    rotation_axis_angle,
)
from backmap_plugin.core.topology import ProteinTopology

#: BB-BB distance (Angstrom) above which consecutive residues are not bonded (chain break). Bonded BB
#: beads of train crystal structures lie 2.5-4.0 Angstrom apart (99.9 % below 3.95; the largest seen 5.0).
BREAK_DISTANCE = 5.0

#: Start of the C-alpha trace: damped fixed-point steps on the BB beads.
TRACE_STEPS = 10
TRACE_DAMPING = 0.7

#: Weight of the side-chain bead misfit (per Angstrom^2) in a candidate's cost; the rotamer-frequency
#: cost and the overlap term of :func:`~backmap_plugin.build.ideal.place_side_chains` are in the same units.
BEAD_WEIGHT = 1.0
#: Levenberg-Marquardt fit of the chi angles (:func:`fit_chis`): iterations, the start of the damping,
#: the restraint to the start (Angstrom^2 per rad^2: it settles the chi angles the beads leave free,
#: e.g. lysine's chi3, chi4) and the largest turn per iteration (rad).
CHI_STEPS = 10
CHI_DAMPING = 0.1
CHI_RESTRAINT = 0.05
CHI_MAX_TURN = 0.6
#: Iterations of the chi fit of the candidates placed at the end (step 4), whose first one, the joint fit's
#: side chain, is fitted already. Train split (16 crystal structures / 6 MD trajectories, Martini 3 model): 4
#: iterations instead of CHI_STEPS (10) moved every score by at most 0.002 A, and the fitted builder's too.
PLACEMENT_CHI_STEPS = 4
#: Candidates of a residue fitted: the cheapest by misfit and frequency cost before the fit (0: all).
#: On 28 train crystal structures, 2 with 30 joint-fit steps against all 8-9 with 50: side-chain RMSD
#: 0.84 -> 0.82 A, heavy atoms 0.58 -> 0.58, bead RMSD 0.19 -> 0.21 A, clashes equal; less than half the time.
CANDIDATES_FITTED = 2

#: Joint fit (:func:`fit_beads`): rounds of candidate choice, Adam steps per round, step size
#: (Angstrom for C-alpha atoms, rad for angles), decaying linearly to FIT_FINAL_FRACTION of it.
FIT_ROUNDS = 2
FIT_STEPS = 30
FIT_STEP_SIZE = 0.1
FIT_FINAL_FRACTION = 0.1
#: A structure built for the beads (:func:`fit_to_beads` with ``start``, e.g. a Martini 3 model's) first
#: takes ALIGN_STEPS rigid alignment steps (:func:`align_residues`), then START_FIT_STEPS Adam steps of the
#: joint fit. Chosen on 16 crystal structures and 6 MD trajectories (20 frames) of the train split, from the
#: Martini 3 model (means): 60 Adam steps alone left the beads 0.21 / 0.24 A off (BB / side chain; crystal)
#: and 0.24 / 0.27 (MD), heavy atoms 0.573 / 0.562 A, side chains 0.813 / 0.763 A; 3 alignment steps and 15
#: Adam steps 0.20 / 0.21 and 0.22 / 0.25, heavy atoms 0.557 / 0.556 A, side chains 0.797 / 0.770 A, in about
#: half the time on trajectories (a third on single structures). 10 Adam steps were as good on these but left
#: 20-residue NMR models of trpcage up to 0.26 A off (60 steps: 0.24; 15: 0.24). With the trace of the model's
#: locator (session 18, :mod:`backmap_plugin.model.martini_locator`) the structure starts closer; on the val
#: clusters (15 crystal structures; 4 MD / NMR ensembles, 10 frames; medians) 15 / 10 / 8 / 5 Adam steps left
#: the side-chain beads 0.176 / 0.184 / 0.194 / 0.201 A (crystal) and 0.270 / 0.289 / 0.306 / 0.323 A
#: (ensembles) off, heavy atoms 0.456 / 0.455 / 0.457 / 0.467 A and 0.587 / 0.589 / 0.592 / 0.600 A; 10 is
#: the fewest that keeps the ensembles within 0.3 A.
ALIGN_STEPS = 3
START_FIT_STEPS = 10
#: Rigid alignment (:func:`align_residues`): preference of each residue's rigid fit for no rotation
#: (Angstrom^2; residues with one or two beads leave the rotation undetermined), the chi-angle
#: Levenberg-Marquardt iterations of a step, and the damping of the peptide-plane Gauss-Newton step.
ALIGN_BIAS = 0.5
ALIGN_CHI_STEPS = 2
ALIGN_PLANE_DAMPING = 0.01
#: Restraints of the joint fit: bonded C-alpha atoms 3.8 Angstrom apart (per Angstrom^2) and N-CA-C near its
#: ideal angle (per rad^2), against the squared bead misfit (Angstrom^2).
BOND_WEIGHT = 10.0
ANGLE_WEIGHT = 10.0
#: The fit of a built start (a Martini 3 model's structure: :func:`align_residues` and the Adam round) restrains
#: N-CA-C with START_ANGLE_WEIGHT instead, and phi / psi with RAMA_WEIGHT per log10 density unit below the
#: favoured contour (:class:`~backmap_plugin.build.rama_prior.RamachandranPrior`): on real Martini 3 dynamics
#: the beads' thermal noise pulled the dihedrals out of the favoured region. Chosen on Martini 3 MD made from
#: train structures (martinize2 + gmx; figures in the order: the 5zng dimer with an elastic network and with a
#: Go model, 100 ps each, 6B0S 8 ps; 36 frames, `backmap validate`; benchmarks/README.md, session 17): with
#: angle weight 10 and no Ramachandran restraint, Ramachandran
#: favoured 75 / 65 / 74 %, outliers 11 / 17 / 14 %, angle outliers 15 / 22 / 10 per structure; restraint 1 and
#: angle weight 10: 91 / 83 / 91 %, 3 / 5 / 3 %, 22 / 30 / 15; 1 and 15 (kept): 90 / 83 / 89 %, 3 / 5 / 2 %,
#: 15 / 22 / 12, beads 0.01 (BB) and 0.05 A (side chains) further from the noisy input. Mapped train structures
#: (10 crystal, medians): beads 0.196 / 0.218 -> 0.209 / 0.241 A, heavy atoms 0.576 -> 0.587 A; 5 MD
#: trajectories 0.515 -> 0.522 A. The fitted builder (from the BB beads, 60 steps) goes without both: with them
#: the exact beads of trp-cage and 6B0S came out 0.37 / 0.29 A off (BB; without 0.12 / 0.19), and angle weight
#: 15 alone took its train crystal beads from 0.178 to 0.210 A.
START_ANGLE_WEIGHT = 15.0
RAMA_WEIGHT = 1.0
#: The fit of a built start keeps backbone atoms and C-beta from overlapping
#: (:mod:`backmap_plugin.build.backbone_contacts`): pairs closer than CONTACT_SEARCH (Angstrom) when the Adam steps
#: start pay CONTACT_WEIGHT per Angstrom^2 of their shortfall below 2.6 A. Following the noisy beads of real
#: Martini 3 dynamics, the fit laid carbonyl oxygens onto the next residue's (O(i)-O(i+1) down to 1.4 A) and onto
#: N(i+2). Chosen on Martini 3 MD made from train structures (six proteins of 71-263 residues: martinize2 + gmx,
#: 400 ps, 21 frames each; means of heavy-atom pairs closer than 2 A per 100 residues / bead RMSD BB / SC, A), with
#: cis peptides kept and proline units turned (:func:`fit_to_beads`): weight 0: 1.79 / 0.438 / 0.630; 3: 0.58 /
#: 0.439 / 0.634; 10 (kept): 0.49 / 0.442 / 0.642; 30: 0.50 / 0.448 / 0.659 (before all three: 2.01 / 0.444 /
#: 0.636). A 3.0 or 4.5 A search gave the same figures as 3.2: pairs further apart as the steps start do not come
#: within 2.6 A. The fitted builder goes without: from its rough start the penalty held peptide planes from turning
#: to where they belong (trp-cage's exact beads came out 0.23 A off, BB; without it 0.12).
CONTACT_WEIGHT = 10.0
CONTACT_SEARCH = 3.2
#: Floating-point type of the fit (float64: a frame's result does not hinge on rounding that differs
#: with the batch).
FIT_DTYPE = torch.float64
#: Adam's epsilon: gradients much smaller than this (flat directions, e.g. a lysine's last chi angles)
#: take small steps instead of full ones of random sign.
FIT_EPS = 1e-3

#: Last step of a Martini 3 model's fit (:func:`tilt_side_chains`): each side chain turned rigidly about its C-alpha
#: atom towards its beads, by at most TILT_LIMIT (radians), with TILT_BIAS (Angstrom^2) towards no turn. 5 degrees
#: move N-CA-CB and C-CA-CB by at most 5 degrees (four Engh & Huber standard deviations are 6.8) and C-beta by at
#: most 0.13 Angstrom (MolProbity flags C-beta deviations from 0.25). Val clusters (15 crystal structures; 4 MD / NMR
#: ensembles, 10 frames; medians), without -> with: side-chain beads 0.186 -> 0.129 A and 0.256 -> 0.202 A, heavy
#: atoms 0.452 -> 0.446 A and 0.567 -> 0.555 A; real Martini 3 MD (session 17's three runs) side-chain beads 0.65 /
#: 0.66 / 0.61 -> 0.59 / 0.60 / 0.57 A, angle outliers per structure unchanged, C-beta deviations 0.4 / 0.4 / 0.0 ->
#: 0.6 / 0.7 / 0.0 per structure. With fewer fit steps (1 alignment, 3-5 Adam steps) and the tilt, val stayed as
#: close but the real MD's side-chain beads went 0.59 -> 0.88 A: the tilt does not replace the fit.
TILT_LIMIT = math.radians(5.0)
TILT_BIAS = 0.5

#: Disulfides: in each frame, cysteine pairs whose SC1 beads (CB + SG) lie closer than this (Angstrom; Martini 3
#: bonds them at 2.4) are bonded, their SG atoms pulled to the S-S bond length and the CB-SG-SG angles by the
#: joint fit (weight per Angstrom^2) and kept there when the side chains are placed. 433 disulfides of 400 train
#: crystal structures (SG-SG below 2.5 A) put their SC1 beads 1.3-2.8 A apart (99 % below 2.7); two free
#: cysteines of a train MD trajectory (prolif water_m2, C278/C282, SG 3.5-7.1 A apart) came within 4.3 A.
DISULFIDE_BEAD_DISTANCE = 3.5
#: Cysteine pairs left free whose SC1 beads come closer than this (Angstrom) are named in the run's note, as near
#: misses of :data:`DISULFIDE_BEAD_DISTANCE` (the free cysteines above came within 4.3 A).
DISULFIDE_NEAR_MISS = 4.5
DISULFIDE_WEIGHT = 10.0
#: CB(i)-SG(j) across a disulfide: S-S 2.04, CB-SG 1.81 Angstrom, CB-SG-SG 104 degrees
#: (:data:`~backmap_plugin.core.chemistry.BOND_SG_SG`, :data:`~backmap_plugin.core.chemistry.ANGLE_CB_SG_SG`).
CB_SG_SS = 3.04
_SG = chem.RESIDUES["CYS"].atoms.index("SG")


def cysteine_bead_distances(beads, protein: ProteinTopology) -> tuple[np.ndarray, np.ndarray]:
    """SC1-SC1 distances of every cysteine pair, frame by frame (what :func:`disulfide_pairs` decides on).

    Parameters
    ----------
    beads : torch.Tensor or numpy.ndarray
        (F, R, MAX_BEADS, 3), Angstrom.
    protein : ProteinTopology

    Returns
    -------
    pairs : numpy.ndarray
        (P, 2) int64 residue indices of the cysteine pairs, first residue
        first, in residue order.
    distance : numpy.ndarray
        (F, P) float64 SC1-SC1 distances, Angstrom.
    """
    cys = np.nonzero(protein.res_type == chem.RESIDUE_INDEX["CYS"])[0]
    beads = beads.detach().cpu().numpy() if isinstance(beads, torch.Tensor) else np.asarray(beads)
    sc1 = beads[:, cys, 1].astype(np.float64)
    i, j = np.triu_indices(len(cys), 1)
    pairs = np.stack([cys[i], cys[j]], 1).astype(np.int64).reshape(-1, 2)
    return pairs, np.linalg.norm(sc1[:, i] - sc1[:, j], axis=-1).reshape(len(sc1), len(pairs))


def disulfide_pairs(beads: torch.Tensor, protein: ProteinTopology) -> tuple[torch.Tensor, torch.Tensor]:
    """Cysteine pairs bonded in some frame, and in which frames.

    In each frame, pairs whose SC1 beads lie closer than
    :data:`DISULFIDE_BEAD_DISTANCE` are bonded, closest first, each cysteine
    once, so a frame's disulfides depend on its beads alone
    (:func:`cysteine_bead_distances`).

    Parameters
    ----------
    beads : torch.Tensor
        (F, R, MAX_BEADS, 3).
    protein : ProteinTopology

    Returns
    -------
    pairs : torch.Tensor
        (P, 2) residue indices of the pairs bonded in at least one frame.
    bonded : torch.Tensor
        (F, P) bool: the pair is bonded in the frame.
    """
    every, d = cysteine_bead_distances(beads, protein)  # (F, pairs)
    close = d < DISULFIDE_BEAD_DISTANCE
    keep = np.nonzero(close.any(0))[0]
    bonded = np.zeros((len(d), len(keep)), dtype=bool)
    for f in range(len(d)):
        taken = set()
        for k in np.argsort(d[f, keep], kind="stable"):
            a, b = (int(x) for x in every[keep[k]])
            if close[f, keep[k]] and a not in taken and b not in taken:
                taken.update((a, b))
                bonded[f, k] = True
    pairs = every[keep].reshape(-1, 2)
    return torch.as_tensor(pairs, device=beads.device), torch.as_tensor(bonded, device=beads.device)


def bead_weights(protein: ProteinTopology) -> np.ndarray:
    """Normalised Martini 3 weights of the atoms the builder makes.

    Parameters
    ----------
    protein : ProteinTopology

    Returns
    -------
    numpy.ndarray
        (R, MAX_BEADS, N_SLOTS): bead ``b`` of residue ``r`` is
        ``weights[r, b] @ slots[r]``, the same as
        :func:`backmap_plugin.core.martini3.martini3_bead_positions` with
        ``protein.slot_mask`` (OXT in BB at C termini). Rows of beads a
        residue does not have are 0.
    """
    w = m3.WEIGHTS[protein.res_type] * protein.slot_mask[:, None, :]
    total = w.sum(-1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def _with_oxt(backbone: torch.Tensor, protein: ProteinTopology) -> torch.Tensor:
    """``backbone`` (..., R, N_SLOTS, 3) with OXT placed at C termini as the ideal builder places it."""
    dev = backbone.device
    oxt = oxt_position(backbone[..., chem.SLOT_C, :], backbone[..., chem.SLOT_CA, :], backbone[..., chem.SLOT_O, :])
    terminal = torch.as_tensor(protein.c_terminal, device=dev)[:, None]
    oxt = torch.where(terminal, oxt, backbone[..., chem.SLOT_OXT, :])
    return torch.cat([backbone[..., : chem.SLOT_OXT, :], oxt[..., None, :]], -2)


def initial_trace(bb: torch.Tensor, protein: ProteinTopology, steps: int | None = None) -> torch.Tensor:
    """A C-alpha trace whose backbone's BB beads lie near the input's.

    Parameters
    ----------
    bb : torch.Tensor
        (F, R, 3) BB beads, Angstrom.
    protein : ProteinTopology
    steps : int, optional
        Damped fixed-point steps (:data:`TRACE_DAMPING`); default :data:`TRACE_STEPS`.

    Returns
    -------
    torch.Tensor
        (F, R, 3); bonded C-alpha atoms 3.8 Angstrom apart.
    """
    steps = TRACE_STEPS if steps is None else steps
    w_bb = torch.as_tensor(bead_weights(protein)[:, 0], dtype=bb.dtype, device=bb.device)  # (R, S)
    same = torch.as_tensor(protein.segment[1:] == protein.segment[:-1], device=bb.device)
    ca = constrain_trace(bb, same)
    for _ in range(steps):
        backbone = _with_oxt(build_backbone(ca, protein.backbone_layout, protein.res_type), protein)
        ca = constrain_trace(ca + TRACE_DAMPING * (bb - torch.einsum("rs,frsc->frc", w_bb, backbone)), same)
    return ca


def fit_chis(turner: ChiTurner, levers: ChiLevers, weights: torch.Tensor, target: torch.Tensor,
             movable: torch.Tensor, steps: int | None = None, start: torch.Tensor | None = None,
             turned: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn side chains about their chi bonds so that their beads lie on targets (Levenberg-Marquardt).

    Each row is one residue in one conformation, fitted on its own: the
    loss is the sum over its beads of the squared distance to the target
    plus :data:`CHI_RESTRAINT` times the squared chi turns. Derivatives are
    those of rigid turns (:class:`backmap_plugin.build.chi_turns.ChiLevers`);
    a step is taken only where it lowers the loss (the damping falls after a
    taken step and rises after a refused one). Atoms move by
    :class:`backmap_plugin.build.chi_turns.ChiTurner`, so bonds and angles stay
    as built.

    Parameters
    ----------
    turner : ChiTurner
        Turns of the N built residues (in any frame: the fit is the same in
        a residue's own frame, with the targets in it).
    levers : ChiLevers
        Of the residues' types and ``weights``.
    weights : torch.Tensor
        (N, B, N_SLOTS) normalised bead weights (rows of absent beads 0).
    target : torch.Tensor
        (N, B, 3) bead targets (0 where the bead is absent).
    movable : torch.Tensor
        (N, 4) bool, chi angles that may turn.
    steps : int, optional
        Iterations; default :data:`CHI_STEPS`.
    start : torch.Tensor, optional
        (N, 4) turns (radians) from which the fit starts (default 0); the
        restraint holds the chi angles near them.
    turned : torch.Tensor, optional
        ``turner(start)``, where the caller has it already.

    Returns
    -------
    delta : torch.Tensor
        (N, 4) chi turns (radians) from ``start``: ``turner(start + delta)`` are the fitted atoms.
    misfit : torch.Tensor
        (N,) sum of squared bead distances after the fit (Angstrom^2).
    """
    steps = CHI_STEPS if steps is None else steps
    atoms = turner.atoms
    dev, dtype = atoms.device, atoms.dtype
    free = movable.to(dtype)
    eye = torch.eye(4, dtype=dtype, device=dev)
    delta = atoms.new_zeros(len(atoms), 4)
    start = delta if start is None else start
    damping = torch.full((len(atoms),), CHI_DAMPING, dtype=dtype, device=dev)

    def residual(x):
        return torch.einsum("nbs,nsc->nbc", weights, x) - target

    x = turned if turned is not None else turner(start) if bool(start.any()) else atoms
    r = residual(x)
    loss = r.pow(2).sum((-1, -2))
    for _ in range(steps if bool(movable.any()) else 0):
        normal, grad = levers.normal_equations(x, r)
        diagonal = (CHI_RESTRAINT + damping)[:, None, None] + (1 - free)[:, :, None]  # fixed chis: step 0
        normal = normal * free[:, :, None] * free[:, None, :] + diagonal * eye
        grad = grad * free + CHI_RESTRAINT * delta
        step = (-torch.linalg.solve(normal, grad[..., None])[..., 0] * free).clamp(-CHI_MAX_TURN, CHI_MAX_TURN)
        trial = delta + step
        x_trial = turner(start + trial)
        r_trial = residual(x_trial)
        loss_trial = r_trial.pow(2).sum((-1, -2)) + CHI_RESTRAINT * trial.pow(2).sum(-1)
        better = loss_trial < loss + CHI_RESTRAINT * delta.pow(2).sum(-1)
        delta = torch.where(better[:, None], trial, delta)
        x = torch.where(better[:, None, None], x_trial, x)
        r = torch.where(better[:, None, None], r_trial, r)
        loss = r.pow(2).sum((-1, -2))
        damping = torch.where(better, damping * 0.3, damping * 10.0)
    return delta, loss


def side_chain_candidates(backbone: torch.Tensor, protein: ProteinTopology, target: torch.Tensor,
                          extra: torch.Tensor | None = None, steps: int | None = None,
                          residues: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every library rotamer of every residue (or of some), its chi angles fitted to the side-chain beads.

    Parameters
    ----------
    backbone : torch.Tensor
        (F, R, N_SLOTS, 3) with N, CA, C placed.
    protein : ProteinTopology
    target : torch.Tensor
        (F, R, MAX_BEADS - 1, 3) input side-chain beads.
    extra : torch.Tensor, optional
        (F, R, 4) chi angles of one more candidate per residue (e.g. a
        previous fit), frequency cost that of the residue's commonest
        rotamer.
    steps : int, optional
        Iterations of :func:`fit_chis`; default :data:`CHI_STEPS`.
    residues : torch.Tensor, optional
        (F, R) bool: the residues whose library rotamers are candidates
        (default: all); the others have ``extra`` alone (or none).

    Returns
    -------
    chis : torch.Tensor
        (F, K, R, 4) fitted chi angles, radians.
    cost : torch.Tensor
        (F, K, R) :data:`BEAD_WEIGHT` times the squared bead misfit plus the
        rotamer-frequency cost; inf for candidates a residue does not have.
    """
    n_frames = backbone.shape[0]
    dev, dtype = backbone.device, backbone.dtype
    rot = load_rotamers()
    rt = protein.res_type
    k_max = max(1, int(rot.count[rt].max(initial=1)))
    chis = torch.as_tensor(np.nan_to_num(rot.chis[rt, :k_max]), dtype=dtype, device=dev).transpose(0, 1)  # (K, R, 4)
    freq = torch.as_tensor(rot.freq[rt, :k_max], dtype=dtype, device=dev).T  # (K, R)
    k = torch.arange(k_max, device=dev)[:, None]
    has = (torch.as_tensor(rot.count[rt], device=dev)[None] > k) | (k == 0)
    freq_cost = torch.where(has, -FREQUENCY_WEIGHT * torch.log(freq.clamp(min=1e-3)), float("inf"))
    chis = chis[None].expand(n_frames, -1, -1, -1)
    freq_cost = freq_cost[None].expand(n_frames, -1, -1)
    extra_cost = freq_cost[:, :1]
    if residues is not None:
        freq_cost = torch.where(residues[:, None], freq_cost, float("inf"))
    if extra is not None:
        chis = torch.cat([extra[:, None], chis], 1)
        freq_cost = torch.cat([extra_cost, freq_cost], 1)
    f, c, r = torch.nonzero(torch.isfinite(freq_cost), as_tuple=True)
    rt_t = torch.as_tensor(rt, device=dev)
    atoms = build_residues(backbone[f, r], side_chain_internal(rt[r.cpu().numpy()], chis[f, c, r]), rt_t[r],
                           slots=chem.SIDE_CHAIN_BUILD_ORDER)
    weights = torch.as_tensor(bead_weights(protein)[:, 1:], dtype=dtype, device=dev)
    if CANDIDATES_FITTED and k_max + (extra is not None) > CANDIDATES_FITTED:
        # only the residue's cheapest candidates before the fit are fitted
        start = torch.full(freq_cost.shape, float("inf"), dtype=dtype, device=dev)
        miss = torch.einsum("nbs,nsc->nbc", weights[r], atoms) - target[f, r]
        start[f, c, r] = BEAD_WEIGHT * miss.pow(2).sum((-1, -2)) + freq_cost[f, c, r]
        rank = torch.argsort(torch.argsort(start, dim=1, stable=True), dim=1)
        keep = (rank[f, c, r] < CANDIDATES_FITTED).nonzero()[:, 0]
        f, c, r, atoms = f[keep], c[keep], r[keep], atoms[keep]
    movable = torch.as_tensor(relax.TURNABLE_CHIS[rt], device=dev)
    delta, misfit = fit_chis(ChiTurner(atoms, rt_t[r]), ChiLevers(rt_t[r], weights[r]), weights[r], target[f, r],
                             movable[r], steps)
    fitted = chis.clone()
    fitted[f, c, r] = chis[f, c, r] + delta
    cost = torch.full(freq_cost.shape, float("inf"), dtype=dtype, device=dev)
    cost[f, c, r] = BEAD_WEIGHT * misfit + freq_cost[f, c, r]
    return fitted, cost


def _cheapest(chis: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """(F, R, 4) chi angles of each residue's cheapest candidate."""
    best = cost.argmin(1)
    return torch.gather(chis, 1, best[:, None, :, None].expand(-1, 1, -1, chis.shape[-1]))[:, 0]


def fit_beads(ca: torch.Tensor, dofs: dict, chis: torch.Tensor, beads: torch.Tensor, protein: ProteinTopology,
              steps: int | None = None, disulfides: tuple[torch.Tensor, torch.Tensor] | None = None,
              angle_weight: float = ANGLE_WEIGHT, rama_weight: float = 0.0, contact_weight: float = 0.0,
              peptide_length: torch.Tensor | None = None) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """Adam steps on the C-alpha trace, peptide planes and chi angles so that all beads lie on the input.

    The loss is the squared distance of every bead (OXT in BB at C
    termini) to the input, plus :data:`BOND_WEIGHT` times the squared
    deviation of bonded C-alpha distances from ``peptide_length`` and
    ``angle_weight`` times the squared deviation of N-CA-C from its
    ideal angle, plus ``rama_weight`` times the Ramachandran restraint
    (:class:`~backmap_plugin.build.rama_prior.RamachandranPrior`: phi / psi
    outside the favoured region), plus ``contact_weight`` times the
    squared shortfall below 2.6 Angstrom of the backbone and C-beta atom
    pairs (more than three bonds apart) that lie within
    :data:`CONTACT_SEARCH` as the steps start
    (:mod:`~backmap_plugin.build.backbone_contacts`). The backbone is that of
    :func:`~backmap_plugin.build.backbone.backbone_atoms` with the plane
    rotations and terminal torsions ``dofs``; side chains are built once
    from the start chi angles and then turned about their chi bonds
    (proline's stay) and carried in their residues' (CA, N, C) frames,
    which gives the atoms that building them again would; the side-chain
    beads, SG and CB are weighted sums of the carried atoms
    (:meth:`~backmap_plugin.build.carry.CarriedSideChains.means`), so the
    atoms themselves are never made. The loss's derivative in the backbone
    variables comes from autograd, in the chi turns in closed form (the
    torques of :meth:`~backmap_plugin.build.chi_turns.ChiLevers.gradient`
    on the side-chain beads and SG), so no gradient runs back through the
    turns.

    Parameters
    ----------
    ca : torch.Tensor
        (F, R, 3) start trace.
    dofs : dict
        Start backbone degrees of freedom (:func:`~backmap_plugin.build.backbone.backbone_dofs`).
    chis : torch.Tensor
        (F, R, 4) start chi angles.
    beads : torch.Tensor
        (F, R, MAX_BEADS, 3) input beads (0 where absent).
    protein : ProteinTopology
    steps : int, optional
        Default :data:`FIT_STEPS`.
    disulfides : tuple of torch.Tensor, optional
        Cysteine pairs (P, 2) and the frames (F, P) in which they are bonded
        (:func:`disulfide_pairs`): there their SG-SG distance is pulled to
        :data:`~backmap_plugin.core.chemistry.BOND_SG_SG` (weight :data:`DISULFIDE_WEIGHT`).
    angle_weight : float, optional
        Default :data:`ANGLE_WEIGHT`.
    rama_weight : float, optional
        Weight of the Ramachandran restraint (default 0: none). The fit of a
        built start (:func:`fit_to_beads`) takes :data:`START_ANGLE_WEIGHT`
        and :data:`RAMA_WEIGHT`.
    contact_weight : float, optional
        Weight of the backbone contacts (default 0: none); the fit of a
        built start takes :data:`CONTACT_WEIGHT`.
    peptide_length : torch.Tensor, optional
        (F, R - 1, 1) C-alpha distance each peptide is pulled to
        (:func:`~backmap_plugin.build.backbone.peptide_lengths`: cis ones
        shorter); default 3.8 Angstrom (trans) for all.

    Returns
    -------
    ca, dofs, chis
        Fitted, same shapes (not differentiable).
    """
    steps = FIT_STEPS if steps is None else steps
    dev, dtype = ca.device, ca.dtype
    n_frames = ca.shape[0]
    layout = protein.backbone_layout
    weights = torch.as_tensor(bead_weights(protein), dtype=dtype, device=dev)
    exists = torch.as_tensor(m3.BEAD_EXISTS[protein.res_type], device=dev).to(dtype)
    bonded = torch.as_tensor(protein.segment[1:] == protein.segment[:-1], device=dev).to(dtype)
    free = torch.as_tensor(relax.TURNABLE_CHIS[protein.res_type], device=dev).to(dtype)
    ideal_angle = math.radians(chem.ANGLE_N_CA_C)
    bond_length = chem.BOND_CA_CA_TRANS if peptide_length is None else peptide_length[..., 0]
    rama = RamachandranPrior(protein, dtype, dev) if rama_weight else None
    has_disulfides = disulfides is not None and len(disulfides[0]) > 0
    # the side-chain beads, SG and CB as sums over the side chains' atoms (CarriedSideChains.means); chi derivatives
    # in closed form of the beads and SG (its disulfide restraint)
    one_atom = torch.zeros_like(weights[:, :2])
    one_atom[torch.as_tensor(protein.res_type == chem.RESIDUE_INDEX["CYS"], device=dev), 0, _SG] = 1.0
    one_atom[:, 1, chem.SLOT_CB] = 1.0
    side_rows = torch.cat([weights[:, 1:], one_atom], 1)  # (R, MAX_BEADS + 1, N_SLOTS): SC1 ..., SG, CB
    n_levers = side_rows.shape[1] - 1
    rt = torch.as_tensor(protein.res_type, device=dev)
    levers = ChiLevers(rt.repeat(n_frames), side_rows[:, :n_levers].repeat(n_frames, 1, 1))
    # BB: N, CA, C, O and OXT at C termini
    w_bb = weights[:, 0, : chem.SLOT_O + 1].T[..., None]  # (4, R, 1)
    term = torch.as_tensor(np.nonzero(protein.c_terminal)[0], device=dev)
    w_oxt = weights[term, 0, chem.SLOT_OXT][:, None]
    start = chis.detach()
    names = list(dofs)
    params = [ca.detach().clone(), torch.zeros_like(start)] + [dofs[k].detach().clone() for k in names]
    backbone = build_backbone(params[0], layout, protein.res_type, dict(zip(names, params[2:])))
    carried = CarriedSideChains(backbone, protein, side_chain_internal(protein.res_type, start))
    if contact_weight:  # backbone atoms (and CB) that may come to overlap, as the fit starts
        contacts = backbone_contact_pairs(_with_oxt(carried.carry(backbone, carried.turn(torch.zeros_like(start))),
                                                    protein), protein, CONTACT_SEARCH)
        no_oxt = torch.zeros_like(ca)
    adam = Adam(params, eps=FIT_EPS)
    for step in range(steps):
        turn = params[1] * free
        turned = carried.turn(turn)
        with torch.enable_grad():
            trace, *rest = leaves = [params[0].requires_grad_()] + [p.requires_grad_() for p in params[2:]]
            n, _, c, o = backbone_atoms(trace, layout, protein.res_type, dict(zip(names, rest)))
            frame = residue_frame(n, trace, c)
            side = carried.means(n, trace, c, frame, turned, side_rows)  # (F, R, MAX_BEADS + 1, 3)
            bb = w_bb[0] * n + w_bb[1] * trace + w_bb[2] * c + w_bb[3] * o
            if len(term):
                oxt = oxt_position(c[:, term], trace[:, term], o[:, term])
                bb = bb.index_add(1, term, w_oxt * oxt)
            predicted = torch.cat([bb[:, :, None], side[:, :, : n_levers - 1]], 2)
            loss = ((predicted - beads).pow(2).sum(-1) * exists).sum()
            distance = (trace[:, 1:] - trace[:, :-1]).norm(dim=-1)
            loss = loss + BOND_WEIGHT * ((distance - bond_length).pow(2) * bonded).sum()
            angle = bond_angle(n, trace, c)
            loss = loss + angle_weight * (angle - ideal_angle).pow(2).sum()
            if rama_weight:
                loss = loss + rama_weight * rama(n, trace, c).sum()
            if has_disulfides:
                sg, cb = side[:, :, n_levers - 1], side[:, :, n_levers]
                (a, b), in_frame = disulfides[0].T, disulfides[1].to(dtype)
                ss = (sg[:, a] - sg[:, b]).norm(dim=-1)
                # CB-SG-SG angles as CB-SG' distances
                cb_sg = torch.stack([(cb[:, a] - sg[:, b]).norm(dim=-1), (cb[:, b] - sg[:, a]).norm(dim=-1)])
                strain = (ss - chem.BOND_SG_SG).pow(2) + (cb_sg - CB_SG_SS).pow(2).sum(0)
                loss = loss + DISULFIDE_WEIGHT * (strain * in_frame).sum()
            if contact_weight and contacts.shape[1]:
                oxt_all = no_oxt.index_add(1, term, oxt) if len(term) else no_oxt
                stack = torch.stack([n, trace, c, o, oxt_all, side[:, :, n_levers]], 2)  # backbone_contacts.SLOTS
                loss = loss + backbone_contact_loss(stack, contacts, contact_weight).sum()
            *grads, on_side = torch.autograd.grad(loss, leaves + [side])
        # the loss's derivative in the chi turns: through the beads and SG, which the turns move rigidly; their
        # levers are taken on the turned side chains in their residues' frames, so the derivatives turn into them
        on_local = torch.einsum("frkc,frbc->frbk", frame.detach(), on_side[:, :, :n_levers])
        on_chis = levers.gradient(turned.flatten(0, 1), on_local.flatten(0, 1)).view_as(turn)
        chi_grad = (on_chis + 2 * CHI_RESTRAINT * turn) * free
        adam.step([grads[0], chi_grad, *grads[1:]],
                  decaying_size(FIT_STEP_SIZE, FIT_FINAL_FRACTION, step, steps))
    params = [p.detach() for p in params]
    ca, turn = params[0], params[1]
    return ca, dict(zip(names, params[2:])), start + turn * free


_TERMINAL_DOFS = ("psi_first", "phi_last", "psi_last")


def align_residues(ca: torch.Tensor, dofs: dict, chis: torch.Tensor, beads: torch.Tensor, protein: ProteinTopology,
                   steps: int | None = None,
                   peptide_length: torch.Tensor | None = None) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """Fixed-point steps that move each residue, rigidly, towards its beads (no gradients).

    A step computes every residue's beads (OXT in BB at C termini) and the
    rotation and translation that lay them best on the input beads
    (:func:`backmap_plugin.core.geometry.rigid_fit`, weighted by bead,
    :data:`ALIGN_BIAS` towards no rotation). The C-alpha atoms go where their
    residue's fit takes them (bonded ones then held ``peptide_length`` apart); the
    peptide planes turn towards where the fits take C, O and N, with N-CA-C
    restrained (:func:`backmap_plugin.build.backbone.turn_planes_towards`,
    :data:`START_ANGLE_WEIGHT`), and the terminal torsions take the values of the
    moved N, C and O at segment ends; the chi angles take :data:`ALIGN_CHI_STEPS`
    iterations of :func:`fit_chis` on the moved backbone. A step costs about
    as much as two or three Adam steps of :func:`fit_beads`, and three of them
    bring the beads most of the way from a model's structure; the Adam steps
    after them settle what the residues' rigid fits cannot agree on.

    Parameters
    ----------
    ca, dofs, chis, beads, protein
        As for :func:`fit_beads`.
    steps : int, optional
        Default :data:`ALIGN_STEPS`.
    peptide_length : torch.Tensor, optional
        As for :func:`fit_beads`.

    Returns
    -------
    ca, dofs, chis
        Moved, same shapes.
    """
    steps = ALIGN_STEPS if steps is None else steps
    dev, dtype = ca.device, ca.dtype
    layout, rt = protein.backbone_layout, torch.as_tensor(protein.res_type, device=dev)
    n_frames, n_res = ca.shape[:2]
    weights = torch.as_tensor(bead_weights(protein), dtype=dtype, device=dev)
    exists = torch.as_tensor(m3.BEAD_EXISTS[protein.res_type], device=dev).to(dtype).expand(n_frames, -1, -1)
    same = torch.as_tensor(protein.segment[1:] == protein.segment[:-1], device=dev)
    bond_length = chem.BOND_CA_CA_TRANS if peptide_length is None else peptide_length
    movable = torch.as_tensor(relax.TURNABLE_CHIS[protein.res_type], device=dev)
    dofs = dict(dofs)
    ends = torch.zeros(n_res, chem.N_SLOTS, 1, dtype=torch.bool, device=dev)
    ends[layout.starts, chem.SLOT_N] = True
    ends[layout.ends, chem.SLOT_C] = ends[layout.ends, chem.SLOT_O] = True
    backbone = build_backbone(ca, layout, protein.res_type, dofs)
    carried = CarriedSideChains(backbone, protein, side_chain_internal(protein.res_type, chis))
    # the chi angles are fitted where the carried side chains are built, in their residues' frames
    side_weights = weights[:, 1:].repeat(n_frames, 1, 1)
    levers = ChiLevers(rt.repeat(n_frames), side_weights)
    turn = torch.zeros_like(chis)
    for _ in range(steps):
        turned = carried.turn(turn)
        atoms = _with_oxt(carried.carry(backbone, turned), protein)
        rotation, centre, target_centre = rigid_fit(torch.einsum("rbs,frsc->frbc", weights, atoms), beads, exists,
                                                    ALIGN_BIAS)
        moved = torch.einsum("frij,frsj->frsi", rotation, atoms - centre[..., None, :]) + target_centre[..., None, :]
        ca = constrain_trace(moved[..., chem.SLOT_CA, :], same, length=bond_length)
        dofs["angle"] = turn_planes_towards(ca, dofs, layout, protein.res_type, moved, START_ANGLE_WEIGHT,
                                            ALIGN_PLANE_DAMPING)
        # the terminal torsions (N of a segment's first residue, C and O of its last) measured on the moved atoms
        backbone = build_backbone(ca, layout, protein.res_type, dofs)
        measured = backbone_dofs(torch.where(ends, moved[..., : chem.N_SLOTS, :], backbone), layout)
        dofs.update({k: measured[k] for k in _TERMINAL_DOFS})
        backbone = build_backbone(ca, layout, protein.res_type, dofs)
        target = torch.einsum("frkc,frbc->frbk", carried.frame(backbone),
                              beads[:, :, 1:] - backbone[..., chem.SLOT_CA, None, :]) * exists[..., 1:, None]
        delta, _ = fit_chis(carried.turner, levers, side_weights, target.flatten(0, 1), movable.repeat(n_frames, 1),
                            ALIGN_CHI_STEPS, turn.flatten(0, 1), turned.flatten(0, 1))
        turn = turn + delta.view_as(turn)
    return ca, dofs, chis + turn


def tilt_side_chains(atoms: torch.Tensor, beads: torch.Tensor, protein: ProteinTopology,
                     free: torch.Tensor) -> torch.Tensor:
    """Turn each side chain (C-beta onward) rigidly about its C-alpha atom towards its side-chain beads.

    The turn is the rotation about C-alpha that lays the residue's
    side-chain beads best on the input's (:func:`~backmap_plugin.core.geometry.rigid_fit`
    about C-alpha, :data:`TILT_BIAS` towards no turn), cut to at most
    :data:`TILT_LIMIT`. Bond lengths and the side chain's own angles stay as
    built; N-CA-CB and C-CA-CB change by at most the turn.

    Parameters
    ----------
    atoms : torch.Tensor
        (F, R, N_SLOTS, 3) heavy atoms.
    beads : torch.Tensor
        (F, R, MAX_BEADS, 3) input beads (0 where absent).
    protein : ProteinTopology
    free : torch.Tensor
        (F, R) bool: residues that may turn. Proline (its ring closes on N)
        and residues without side-chain beads never do.

    Returns
    -------
    torch.Tensor
        (F, R, N_SLOTS, 3).
    """
    dev, dtype = atoms.device, atoms.dtype
    rt = protein.res_type
    weights = torch.as_tensor(bead_weights(protein)[:, 1:], dtype=dtype, device=dev)  # (R, B - 1, S)
    exists = torch.as_tensor(m3.BEAD_EXISTS[rt][:, 1:], device=dev)
    ca = atoms[..., chem.SLOT_CA, :]
    rotation, _, _ = rigid_fit(torch.einsum("rbs,frsc->frbc", weights, atoms), beads[..., 1:, :].to(dtype),
                               exists.to(dtype).expand(atoms.shape[0], -1, -1), TILT_BIAS, centre=ca)
    axis, angle = rotation_axis_angle(rotation)
    turns = free & torch.as_tensor(m3.BEAD_EXISTS[rt][:, 1:].any(1) & (rt != chem.RESIDUE_INDEX["PRO"]), device=dev)
    angle = torch.where(turns, angle.clamp(max=TILT_LIMIT), torch.zeros((), dtype=dtype, device=dev))
    turned = rotate_about_axis(atoms, ca, axis, angle)
    side = torch.as_tensor(chem.SIDE_CHAIN_SLOTS & protein.slot_mask, device=dev)
    return torch.where(side[..., None] & turns[..., None, None], turned, atoms)


def backmap_martini3(beads: torch.Tensor, protein: ProteinTopology, mapping=None, samples: int = 1,
                     seeds=None, disulfides: bool = True) -> torch.Tensor:
    """All heavy atoms fitted to Martini 3 protein beads.

    Parameters
    ----------
    beads : torch.Tensor
        (F, R, MAX_BEADS, 3) bead positions, Angstrom: ``BB``, ``SC1`` ...
        in the order of :data:`backmap_plugin.core.martini3.MARTINI3_BEADS`;
        beads a residue type does not have
        (:data:`~backmap_plugin.core.martini3.BEAD_EXISTS`) are ignored
        (zero, NaN or anything).
    protein : ProteinTopology
        Residue types, segments (found on BB beads, e.g. with
        :data:`BREAK_DISTANCE`), C termini.
    mapping : Mapping, optional
        Unused (the beads are Martini 3's); the builder signature of
        :func:`backmap_plugin.api.backmap`.
    samples : int
        Copies per frame (the method is deterministic).
    seeds : array, optional
        Per-frame seeds (unused: deterministic).
    disulfides : bool
        Bond the cysteine pairs whose SC1 beads are close, frame by frame
        (:func:`disulfide_pairs`); False leaves every cysteine free.

    Returns
    -------
    torch.Tensor
        (F, samples, R, N_SLOTS, 3); slots a residue does not have are zero.

    Notes
    -----
    All frames are fitted at once (a residue of a frame holds about 30 KB
    while it is fitted); a frame's result does not depend on the others.
    """
    return fit_to_beads(beads, protein, disulfides=disulfides)[:, None].expand(-1, samples, -1, -1, -1)


def fit_to_beads(beads: torch.Tensor, protein: ProteinTopology, start: torch.Tensor | None = None,
                 disulfides: bool = True) -> torch.Tensor:
    """Heavy atoms (F, R, N_SLOTS, 3) fitted to Martini 3 beads, from the BB beads or from a built structure.

    Without ``start`` this is the whole fit of the module docstring
    (:data:`FIT_ROUNDS` rounds). With ``start`` (a structure built for the
    beads, e.g. by a Martini 3 model) its C-alpha trace, peptide planes and
    chi angles begin one joint-fit round (no candidate search before it),
    then step 4 places the side chains as in the whole fit. Its cis X-Pro
    peptides (C-alpha atoms closer than
    :data:`~backmap_plugin.build.backbone.MIN_PEPTIDE_LENGTH`) stay cis
    (:func:`~backmap_plugin.build.backbone.peptide_lengths`).

    Parameters
    ----------
    beads : torch.Tensor
        (F, R, MAX_BEADS, 3), as for :func:`backmap_martini3`.
    protein : ProteinTopology
    start : torch.Tensor, optional
        (F, R, N_SLOTS, 3) heavy atoms in ideal geometry (N, CA, C, O and
        the side chains).
    disulfides : bool
        Bond the cysteine pairs whose SC1 beads are close, frame by frame
        (:func:`disulfide_pairs`); False leaves every cysteine free.
    """
    # the joint fit differentiates: tensors made in inference mode (a model's output) are copied out of it
    with torch.inference_mode(False):
        return _fit_to_beads(beads.clone(), protein, None if start is None else start.clone(), disulfides)


def _fit_to_beads(beads: torch.Tensor, protein: ProteinTopology, start: torch.Tensor | None,
                  bond_cysteines: bool) -> torch.Tensor:
    dtype = beads.dtype
    exists = torch.as_tensor(m3.BEAD_EXISTS[protein.res_type], device=beads.device)
    beads = torch.where(exists[..., None], beads, torch.zeros((), dtype=beads.dtype, device=beads.device))
    beads = beads.to(FIT_DTYPE)
    target = beads[..., 1:, :]
    layout = protein.backbone_layout
    disulfides = disulfide_pairs(beads, protein) if bond_cysteines else (  # (no pair, in no frame)
        torch.zeros((0, 2), dtype=torch.int64, device=beads.device),
        torch.zeros((len(beads), 0), dtype=torch.bool, device=beads.device))
    rt = torch.as_tensor(protein.res_type, device=beads.device)
    with torch.no_grad():
        if start is None:
            ca = initial_trace(beads[..., 0, :], protein)
            dofs = backbone_dofs(build_backbone(ca, layout, protein.res_type), layout)
            chis, rounds, fit_options = None, FIT_ROUNDS, {}
            length = chem.BOND_CA_CA_TRANS
        else:
            start = start.to(FIT_DTYPE)
            ca, dofs = start[..., chem.SLOT_CA, :], backbone_dofs(start, layout)
            chis, rounds = torch.nan_to_num(chi_angles(start, rt)), 1
            length = peptide_lengths(ca, protein.res_type)  # the start's cis X-Pro peptides stay cis
            fit_options = dict(steps=START_FIT_STEPS, angle_weight=START_ANGLE_WEIGHT, rama_weight=RAMA_WEIGHT,
                               contact_weight=CONTACT_WEIGHT, peptide_length=length)
    for _ in range(rounds):
        with torch.no_grad():
            if start is None:
                backbone = build_backbone(ca, layout, protein.res_type, dofs)
                chis = _cheapest(*side_chain_candidates(backbone, protein, target, chis))
            else:  # a built start has its side chains chosen already: it is aligned onto the beads
                ca, dofs, chis = align_residues(ca, dofs, chis, beads, protein, peptide_length=length)
        ca, dofs, chis = fit_beads(ca, dofs, chis, beads, protein, disulfides=disulfides, **fit_options)
    with torch.no_grad():
        ca = constrain_trace(ca, torch.as_tensor(protein.segment[1:] == protein.segment[:-1], device=ca.device),
                             length=length)
        backbone = turn_proline_units(build_backbone(ca, layout, protein.res_type, dofs), layout)
        # the fit's side chains fitted again on this backbone; library rotamers only where they overlap (step 4 of
        # the module docstring), the placement starting from them
        none = torch.zeros(backbone.shape[:2], dtype=torch.bool, device=backbone.device)
        refitted, refitted_cost = (x[:, :1] for x in side_chain_candidates(backbone, protein, target, chis,
                                                                             PLACEMENT_CHI_STEPS, none))
        start = placement_start(backbone, protein, side_chain_internal(protein.res_type, refitted[:, 0]))
        crowded = start[2] > ACTIVE_OVERLAP
        candidates, cost = refitted, refitted_cost
        if bool(crowded.any()):
            library, library_cost = side_chain_candidates(backbone, protein, target, None, PLACEMENT_CHI_STEPS, crowded)
            order = torch.argsort(library_cost, dim=1, stable=True)
            candidates = torch.cat([refitted, torch.gather(library, 1, order[..., None].expand_as(library))], 1)
            cost = torch.cat([refitted_cost, torch.gather(library_cost, 1, order)], 1)
        atoms = place_side_chains(backbone, protein, side_chain_internal(protein.res_type, candidates), cost,
                                  start=start)
        pairs, in_frame = disulfides
        bonded = torch.zeros(atoms.shape[:2], dtype=torch.bool, device=atoms.device)
        if len(pairs):
            # overlap avoidance sees a disulfide as a clash: bonded cysteines start from their fitted SG, then
            # are put on the bond
            fitted = build_residues(backbone, side_chain_internal(protein.res_type, chis), rt,
                                    slots=chem.SIDE_CHAIN_BUILD_ORDER)
            frame, pair = in_frame.nonzero(as_tuple=True)
            for side in (0, 1):
                residue = pairs[pair, side]
                atoms[frame, residue, _SG] = fitted[frame, residue, _SG].to(atoms.dtype)
                bonded[frame, residue] = True
            atoms = close_bonded(atoms, protein, pairs.cpu().numpy(), in_frame.cpu().numpy())
        if start is not None:
            atoms = tilt_side_chains(atoms, beads, protein, ~bonded)
    return atoms.to(dtype)
