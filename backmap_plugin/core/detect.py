"""Which mapping a one-bead-per-residue trace was made with, decided from its geometry.

Bonded C-alpha atoms are 3.80 Angstrom apart (2.95 in a cis peptide), with
a spread of a few hundredths in structures and about 0.17 in CG models that
bond residues with a stiff 0.38 nm spring (HPS, CALVADOS); bonded residue
centres of mass lie 2.8-8.7 apart, and how far depends on the two residue
types (a glycine's centre of mass is near its C-alpha, a tryptophan's is
not). Each bond's distance is scored under both (a Gaussian for C-alpha
beads, the corpus's per-pair density for centres of mass,
``core/tables/com_bonds.npz`` made by ``workflows/tables/build_com_bonds.py``),
and a two-state chain model (Viterbi) labels every residue, changing kind
only where the evidence pays for it. The spread of the C-alpha bonds is then
re-estimated from the bonds read as C-alpha (a noisy trace or a soft spring
widens it) and the chain labelled again. That finds the CALVADOS 3 mix: folded
domains of centre-of-mass beads joined by linkers of beads 3.8 apart.

When the force field is at hand (a live OpenMM run), the equilibrium lengths
of its bonds are stronger evidence than any frame: one-bead-per-residue
models (HPS, CALVADOS) give the bonds between residue beads 0.38 nm, and a
bond of exactly that length is read as C-alpha spacing (its density
:data:`SPRING_LOG_DENSITY`), while CALVADOS 3 gives bonds in and at the edge
of a folded domain the input's centre-to-centre distance, which falls on
3.80 by chance only. Short linkers of small residues, whose distances alone
cannot tell (a serine-proline centre-of-mass bond is as likely 3.8 A long as
a C-alpha one), are then found. Pure numpy; lengths in Angstrom.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np

from backmap_plugin.core.errors import BackmapInputError

#: Distance bins of the centre-of-mass table, Angstrom.
D_MIN, D_MAX, BIN_WIDTH = 2.0, 10.0, 0.1
#: Lowest density (per Angstrom) the table gives any distance.
DENSITY_FLOOR = 1e-4
#: C-alpha beads: bonded distance (trans), its spread (wide enough for CG
#: springs), and the cis-peptide distance with its share.
CA_BOND, CA_SPREAD = 3.82, 0.20
#: Widest spread of C-alpha bonds re-estimated from a trace (noisy traces,
#: soft CG springs), and the distance from :data:`CA_BOND` within which a
#: bond read as C-alpha counts for that estimate (cis peptides left out).
CA_SPREAD_MAX, CA_SPREAD_WINDOW = 0.5, 1.0
CIS_BOND, CIS_SPREAD, CIS_SHARE = 2.95, 0.15, 0.005
#: Equilibrium length (Angstrom) of the bonds of one-bead-per-residue force fields (HPS, CALVADOS:
#: 0.38 nm), the tolerance within which a force field's bond counts as one, and the log-density
#: (per Angstrom) of such a bond read as C-alpha: uniform over the tolerance window.
SPRING_LENGTH, SPRING_TOLERANCE = 3.80, 0.01
SPRING_LOG_DENSITY = -math.log(2 * SPRING_TOLERANCE)
#: Log-probability of a change of bead kind between two bonded residues.
SWITCH_LOG_PROB = math.log(1e-2)
#: Least total log-likelihood margin (nats) for a decision; below it the
#: trace is too short or too ambiguous to tell, and ``--mapping`` must say.
MIN_MARGIN = 8.0


@functools.lru_cache(maxsize=1)
def com_bond_table() -> np.ndarray:
    """(20, 20, bins) natural-log density per Angstrom of bonded centre-of-mass distances."""
    path = resources.files("backmap_plugin") / "core" / "tables" / "com_bonds.npz"
    with path.open("rb") as f:
        return np.load(f)["log_density"].astype(np.float64)


def _normal_log_pdf(d: np.ndarray, mean: float, sd: float) -> np.ndarray:
    return -0.5 * ((d - mean) / sd) ** 2 - math.log(sd * math.sqrt(2 * math.pi))


def bond_log_likelihoods(d: np.ndarray, first: np.ndarray, second: np.ndarray,
                         ca_spread: float = CA_SPREAD) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood of bonded bead distances as C-alpha beads and as centres of mass.

    Parameters
    ----------
    d : numpy.ndarray
        (B,) distances, Angstrom.
    first, second : numpy.ndarray
        (B,) residue types of the two residues (chemistry order).
    ca_spread : float
        Standard deviation of trans C-alpha bonds, Angstrom.

    Returns
    -------
    ca, com : numpy.ndarray
        (B,) log densities per Angstrom.
    """
    d = np.asarray(d, dtype=np.float64)
    ca = np.logaddexp(math.log(1 - CIS_SHARE) + _normal_log_pdf(d, CA_BOND, ca_spread),
                      math.log(CIS_SHARE) + _normal_log_pdf(d, CIS_BOND, CIS_SPREAD))
    ca = np.maximum(ca, math.log(DENSITY_FLOOR))
    table = com_bond_table()
    k = np.clip(np.floor((d - D_MIN) / BIN_WIDTH).astype(int), 0, table.shape[-1] - 1)
    inside = (d >= D_MIN) & (d < D_MAX)
    com = np.where(inside, table[first, second, k], math.log(DENSITY_FLOOR))
    return ca, com


def label_chain(ll_ca: np.ndarray, ll_com: np.ndarray) -> np.ndarray:
    """Viterbi labels (R,) bool, True = C-alpha bead, of one chain of R residues from its R-1 bond scores.

    A bond between two C-alpha beads scores ``ll_ca``; a bond with a centre
    of mass at either end ``ll_com`` (CALVADOS 3 gives a bond the input's
    centre-to-centre distance when either residue lies in a domain, so a
    domain's edge bond to its linker keeps it); each change of kind costs
    :data:`SWITCH_LOG_PROB`. Ties go to C-alpha.
    """
    n = len(ll_ca) + 1
    # score[s]: best log-likelihood of residues 0..i with residue i in state s (0 = CA, 1 = COM)
    score = np.zeros(2)
    back = np.zeros((n, 2), dtype=np.int8)
    for i in range(1, n):
        emit = np.array([[ll_ca[i - 1], ll_com[i - 1]], [ll_com[i - 1], ll_com[i - 1]]])  # [previous, current]
        total = score[:, None] + emit + np.array([[0.0, SWITCH_LOG_PROB], [SWITCH_LOG_PROB, 0.0]])
        back[i] = np.argmax(total, axis=0)
        score = total.max(axis=0)
    state = np.zeros(n, dtype=np.int8)
    state[-1] = int(np.argmax(score))
    for i in range(n - 1, 0, -1):
        state[i - 1] = back[i, state[i]]
    return state == 0


@dataclass
class MappingDecision:
    """What a trace's geometry says about its beads.

    Attributes
    ----------
    name : str
        ``ca`` (every bead a C-alpha), ``com`` (every bead a centre of mass),
        or ``com+ca`` (centres of mass with C-alpha regions).
    ca_residues : numpy.ndarray
        (R,) bool, the residues whose bead is read as their C-alpha.
    evidence : str
        One sentence: the decision and the distances behind it.
    """

    name: str
    ca_residues: np.ndarray
    evidence: str


def _ranges(mask: np.ndarray, chain_ids, res_seq) -> str:
    """'A:1-5, A:83-94' for the runs of True in ``mask`` (per chain)."""
    out, i, n = [], 0, len(mask)
    while i < n:
        if not mask[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and mask[j + 1] and chain_ids[j + 1] == chain_ids[i]:
            j += 1
        cid = chain_ids[i] or "?"
        out.append(f"{cid}:{res_seq[i]}" + (f"-{res_seq[j]}" if j > i else ""))
        i = j + 1
    if len(out) > 8:
        out = out[:8] + [f"... ({len(out) - 8} more)"]
    return ", ".join(out)


def _spread(d: np.ndarray) -> str:
    if d.size == 0:
        return "no bonded pairs"
    if d.size == 1:
        return f"{d[0]:.2f} A"
    return f"{d.mean():.2f} +- {d.std():.2f} A"


def decide_mapping(beads: np.ndarray, res_type: np.ndarray, chain: np.ndarray, chain_ids, res_seq,
                   source: str = "input", max_bond: float = D_MAX, springs: np.ndarray | None = None
                   ) -> MappingDecision:
    """Decide between C-alpha beads, centres of mass, and the mix, from one frame or several.

    Parameters
    ----------
    beads : numpy.ndarray
        (R, 3) bead positions of one frame or (F, R, 3) of several (chains
        whole), Angstrom: each bond's distance is averaged over the frames.
    res_type : numpy.ndarray
        (R,) residue types.
    chain : numpy.ndarray
        (R,) chain index; consecutive residues of one chain closer than
        ``max_bond`` whose numbers do not skip count as bonded.
    chain_ids, res_seq : sequence
        (R,) chain identifiers and residue numbers (for the message too).
    source : str
        Input name for messages.
    max_bond : float
        Longest distance of two bonded beads.
    springs : numpy.ndarray, optional
        (R-1,) equilibrium length of the force field's bond between residue
        i and i+1, Angstrom (NaN where there is none or it is not known). A
        bond of :data:`SPRING_LENGTH` scores :data:`SPRING_LOG_DENSITY` as
        C-alpha spacing instead of its distance in the frame.

    Returns
    -------
    MappingDecision

    Raises
    ------
    BackmapInputError
        When the distances cannot tell (too few bonded pairs, or a margin
        below :data:`MIN_MARGIN`); the message names the ``--mapping`` to pass.
    """
    beads = np.asarray(beads, dtype=np.float64)
    frames = beads[None] if beads.ndim == 2 else beads
    res_type = np.asarray(res_type)
    n = frames.shape[1]
    d = np.linalg.norm(np.diff(frames, axis=1), axis=-1).mean(0)
    # residues missing between two (numbers that skip) leave no bond to judge by: a residue stranded between two
    # gaps of a C-alpha trace lies 5-7 A from its neighbours, as a centre of mass would
    bonded = (np.asarray(chain)[1:] == np.asarray(chain)[:-1]) & (d < max_bond) & (np.diff(np.asarray(res_seq)) <= 1)
    starts = np.r_[0, np.nonzero(~bonded)[0] + 1]
    ends = np.r_[starts[1:], n]
    spring = np.zeros(n - 1, bool) if springs is None else \
        np.abs(np.asarray(springs, dtype=np.float64) - SPRING_LENGTH) <= SPRING_TOLERANCE
    spring_com = bond_log_likelihoods(np.full(n - 1, SPRING_LENGTH), res_type[:-1], res_type[1:])[1]

    def label(spread):
        ll_ca, ll_com = bond_log_likelihoods(d, res_type[:-1], res_type[1:], spread)
        ll_ca, ll_com = np.where(spring, SPRING_LOG_DENSITY, ll_ca), np.where(spring, spring_com, ll_com)
        ll_ca, ll_com = np.where(bonded, ll_ca, 0.0), np.where(bonded, ll_com, 0.0)
        is_ca = np.ones(n, bool)
        for a, b in zip(starts, ends):
            if b - a > 1:
                is_ca[a:b] = label_chain(ll_ca[a : b - 1], ll_com[a : b - 1])
        return ll_ca, ll_com, is_ca

    ll_ca, ll_com, is_ca = label(CA_SPREAD)
    # the spread of the bonds read as C-alpha, estimated from the trace itself (one EM step): a noisy
    # C-alpha trace is not taken for centres of mass where its bonds stray from 3.8 A
    trans = bonded & is_ca[:-1] & is_ca[1:] & (np.abs(d - CA_BOND) < CA_SPREAD_WINDOW)
    if trans.sum() >= 2:
        spread = min(CA_SPREAD_MAX, float(np.sqrt(np.mean((d[trans] - CA_BOND) ** 2))))
        if spread > CA_SPREAD:
            ll_ca, ll_com, is_ca = label(spread)
    # every bond scored under the labels found and under the other uniform reading
    com_bond = ~is_ca[:-1] | ~is_ca[1:]  # scored as a centre-of-mass bond (see label_chain)
    chosen = np.where(com_bond, ll_com, ll_ca)[bonded].sum()
    margin = chosen - max(ll_ca[bonded].sum(), ll_com[bonded].sum()) if is_ca.any() and not is_ca.all() else \
        abs(ll_ca[bonded].sum() - ll_com[bonded].sum())
    n_bonds = int(bonded.sum())
    ca_d, com_d = d[bonded & ~com_bond], d[bonded & com_bond]
    reference = "C-alpha traces are 3.80 +- 0.05 A apart"
    if n_bonds == 0 or margin < MIN_MARGIN:
        raise BackmapInputError(
            f"{source}: cannot tell where the beads sit from {n_bonds} bonded pair(s) of beads "
            f"({_spread(d[bonded])}; {reference}, residue centres of mass 2.8-8.7 A): pass --mapping ca "
            "(beads at C-alpha atoms) or --mapping com (beads at residue centres of mass)"
        )
    springs_note = f"; force field: {int((spring & bonded).sum())} bonds of {SPRING_LENGTH:.2f} A" if spring.any() else ""
    if is_ca.all():
        return MappingDecision("ca", is_ca, f"C-alpha trace: consecutive beads {_spread(ca_d)} apart ({n_bonds} pairs)"
                               + springs_note)
    if not is_ca.any():
        low, high = np.percentile(com_d, [5, 95])
        return MappingDecision(
            "com", is_ca,
            f"residue centres of mass: consecutive beads {low:.1f}-{high:.1f} A apart (5-95 %, {n_bonds} pairs); "
            f"{reference}" + springs_note,
        )
    low, high = np.percentile(com_d, [5, 95]) if com_d.size else (float("nan"),) * 2
    return MappingDecision(
        "com+ca", is_ca,
        f"residue centres of mass with C-alpha beads (CALVADOS 3 domains and linkers): centres of mass in "
        f"{_ranges(~is_ca, chain_ids, res_seq)} ({low:.1f}-{high:.1f} A apart, 5-95 %), C-alpha beads in "
        f"{_ranges(is_ca, chain_ids, res_seq)} ({_spread(ca_d)} apart)" + springs_note,
    )
