"""The one backmapping function that the CLI, the reporter and workflows call.

:func:`backmap` reads a coarse-grained (or all-atom) trajectory, finds one
bead per residue with the chosen mapping, builds every heavy atom of every
residue with the chosen method and writes the all-atom trajectory, streaming
in chunks so memory stays bounded.
"""

from __future__ import annotations

import functools
import numbers
import os
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field

import mdtraj as md
import numpy as np
import torch
from tqdm import tqdm

from backmap_plugin import __version__
from backmap_plugin.build.ideal import backmap_ideal, relieve_periodic_clashes
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.bead_fit import BeadFit
from backmap_plugin.core.beads import MIN_BEAD_DISTANCE, first_close_pair, first_non_finite
from backmap_plugin.core.detect import decide_mapping
from backmap_plugin.core.device import select_device
from backmap_plugin.core.errors import BackmapInputError, BeadsTooCloseError, CutShortWarning
from backmap_plugin.core.mappings import COMMapping, Mapping, get_mapping, model_beads
from backmap_plugin.core.pbc import box_matrices, make_whole
from backmap_plugin.core.topology import (
    ProteinTopology,
    ResidueRecord,
    bead_spacing,
    gather_slots,
    protein_topology,
    read_residues,
)
from backmap_plugin.io.frames import FrameChunk, bonds_from_openmm, frames_from_openmm, frames_of_shape, open_frames
from backmap_plugin.io.lock import OutputLock
from backmap_plugin.io.martini import BEAD_NAMES
from backmap_plugin.io.paths import check_output_path
from backmap_plugin.io.progress import ProgressRecord
from backmap_plugin.io.trajectory import TrajectoryWriter

#: Typical distance of consecutive C-alpha atoms (Angstrom); beads of other
#: mappings are spaced similarly.
_BEAD_SPACING_RANGE = (2.0, 8.0)

#: Median distance of bonded beads (Angstrom) below which a one-bead-per-residue trace is taken for Martini
#: BB beads (train structures mapped to Martini 3: medians 3.14-3.55 per structure; C-alpha traces 3.76-3.88,
#: centres of mass about 4.7).
MAX_BB_SPACING = 3.62

#: Default ``break_distance`` (Angstrom) per kind of bead. Bonded C-alpha
#: atoms are 3.8 (trans) or 2.9 (cis) apart; bonded residue centres of mass
#: are 2.8 to 8.7 apart (99.9 % below 7.9, 60 training files), so a COM trace
#: needs a much larger threshold or every long side chain splits the chain.
BREAK_DISTANCE_CA = 4.5
BREAK_DISTANCE_OTHER = 10.0
#: Slack (Angstrom) of :func:`bonded_bead_limits` for the beads' noise in CG dynamics.
BONDED_LIMIT_SLACK = 0.3


def _decision_is(decision, given: Mapping) -> bool:
    """Whether what the beads' distances say (``decision``) is the mapping ``given``: both C-alpha beads, or both
    centres of mass, where C-alpha regions found (a CALVADOS 3 chain's linkers and tails) are those given (none
    for ``--mapping com``, which builds every bead as a centre of mass)."""
    if (decision.name == "ca") != given.bead_is_ca:
        return False
    if decision.name == "ca":
        return True
    return np.array_equal(np.asarray(decision.ca_residues, bool), given.is_ca(len(decision.ca_residues)))


def bonded_bead_limits(mapping: COMMapping, records: list[ResidueRecord], break_distance: float) -> np.ndarray:
    """(R - 1,) bead distance above which two consecutive residues are not bonded (a chain break).

    ``break_distance``, and where the residue numbers skip (residues
    missing in between) the farthest two bonded residues' beads can be
    apart: 3.8 Angstrom between their C-alpha atoms plus each bead's reach
    from its C-alpha atom (:meth:`~backmap_plugin.core.mappings.COMMapping.bead_reach`),
    plus :data:`BONDED_LIMIT_SLACK`. Numbering alone does not break a
    chain: antibody and alignment numberings skip numbers of bonded
    residues (half of the numbering gaps in the train structures are
    bonded, C-alpha atoms 3.8 Angstrom apart).

    Parameters
    ----------
    mapping : COMMapping
        Residue centres of mass, C-alpha beads among them or not.
    records : list of ResidueRecord
        The residues, in order.
    break_distance : float
        The limit where the numbers run on.

    Returns
    -------
    numpy.ndarray
    """
    res_seq = np.array([r.res_seq for r in records])
    reach = mapping.bead_reach(np.array([chem.RESIDUE_INDEX[r.name] for r in records]))
    farthest = chem.BOND_CA_CA_TRANS + reach[1:] + reach[:-1] + BONDED_LIMIT_SLACK
    return np.where(np.diff(res_seq) > 1, np.minimum(farthest, break_distance), break_distance)


#: Residues (frames x residues) a builder gets at once (:meth:`Backmapper.build`): this bounds the
#: memory of a chunk of frames. While a residue of a frame is built it holds about 30 KB in the
#: Martini 3 fit, about 10 KB in the model, about 5 KB in the ideal builder; beyond a few thousand
#: residues per pass none of them gets faster.
RESIDUES_PER_PASS = 10000

#: Leading frames of an input whose bond distances the mapping detection averages (``mapping='auto'``).
#: On the real CALVADOS 3 run of TIA1 (20 frames), labels right: 98.5-100 % of residues from one frame,
#: 99.6-100 % from the mean of 2-20.
DETECTION_FRAMES = 10


class BeadReader:
    """Extracts one bead per residue from input frames.

    A residue with a single (non-hydrogen) atom is a CG bead and used as
    it is; a residue with atoms named like an all-atom residue is mapped to
    its bead by the mapping (so all-atom input can be backmapped too).

    A C-alpha mapping (``ca``) takes a CG file (every residue one bead)
    only when its beads are named CA: a trace of beads named otherwise (CB,
    BB, SC ...) sits elsewhere in the residue, most likely at its centre of
    mass, and is refused with the names found. Other mappings (``com``)
    take any bead name. In an all-atom file, a truncated residue left with
    one atom (say a C-terminal N) still stands for its bead.

    Parameters
    ----------
    records : list of ResidueRecord
        Residues of the input topology.
    mapping : Mapping
    source : str
        File name for messages.
    atom_names : list of str, optional
        Atom names of the input topology as written (by atom index), for
        messages; standard names are used where not given.

    Raises
    ------
    BackmapInputError
        An all-atom residue lacks the atoms the mapping needs. (A bead's
        name says nothing: CG programs name them CA, C, B or after their
        residue; the geometry tells, see :func:`resolve_mapping`.)
    """

    def __init__(self, records: list[ResidueRecord], mapping: Mapping, source: str,
                 atom_names: list[str] | None = None):
        self.records = records
        self.mapping = mapping
        bead_index = np.full(len(records), -1, dtype=np.int64)
        for i, rec in enumerate(records):
            atoms = list(rec.atoms.values()) + rec.other_atoms
            if len(atoms) == 1:
                bead_index[i] = atoms[0]
                continue
            missing = [a for a in mapping.required_atoms() if a not in rec.atoms]
            if missing:
                other = [atom_names[a].strip() if atom_names is not None else f"#{a}" for a in rec.other_atoms]
                names = ", ".join(sorted(rec.atoms) + other)
                raise BackmapInputError(
                    f"{source}: {rec.label()} has no {' or '.join(missing)} atom "
                    f"(atoms: {names}); mapping '{mapping.name}' needs one bead per residue "
                    "or an all-atom residue with a CA"
                )
        self.bead_index = bead_index
        self.all_atom = np.nonzero(bead_index < 0)[0]
        self.res_type = np.array([chem.RESIDUE_INDEX[r.name] for r in records])

    def beads(self, xyz: np.ndarray) -> np.ndarray:
        """Bead positions of input frames.

        Parameters
        ----------
        xyz : numpy.ndarray
            (F, n_atoms, 3) input coordinates, Angstrom.

        Returns
        -------
        numpy.ndarray
            (F, R, 3) float32 bead positions: single beads as they are,
            all-atom residues through the mapping. Not checked here (see
            :func:`check_beads`).
        """
        out = np.empty((xyz.shape[0], len(self.records), 3), dtype=np.float32)
        cg = self.bead_index >= 0
        out[:, cg] = xyz[:, self.bead_index[cg]]
        if len(self.all_atom):
            recs = [self.records[i] for i in self.all_atom]
            slots, present = gather_slots(xyz, recs)
            out[:, self.all_atom] = self.mapping.bead_positions(slots, present, self.res_type[self.all_atom])
        return out


def _reads_martini(mapping, topology, source: str) -> bool:
    """Whether the input is read as Martini 3 beads: ``auto`` or ``martini3`` and Martini protein beads present."""
    name = mapping.name if isinstance(mapping, Mapping) else mapping
    if name not in ("auto", "martini3"):
        return False
    from backmap_plugin.io.martini import has_martini_beads

    if has_martini_beads(topology):
        return True
    if name == "martini3":
        raise BackmapInputError(f"{source}: no Martini protein beads (atoms named BB in amino-acid residues)")
    return False


def resolve_mapping(mapping: str | Mapping, records: list[ResidueRecord], atom_names: list[str], frames: np.ndarray,
                    box, source: str, frame: int = 0, springs=None) -> tuple[Mapping, str]:
    """The mapping of an input: the one given, or for ``auto`` the one its beads show.

    ``auto`` reads all-atom input (no residue of one bead) through the
    C-alpha mapping, refuses Martini beads (named BB, SC1 ...) with a clear
    message, and decides a one-bead-per-residue trace from its geometry
    (:func:`backmap_plugin.core.detect.decide_mapping`): C-alpha beads,
    residue centres of mass, or centres of mass with C-alpha regions
    (CALVADOS 3 domains and linkers).

    Parameters
    ----------
    mapping : str or Mapping
        ``auto``, a mapping name or instance.
    records : list of ResidueRecord
    atom_names : list of str
        Input atom names by index.
    frames : numpy.ndarray
        (F, n_atoms, 3) or (n_atoms, 3) coordinates of the input's first
        frame(s), Angstrom: the detection averages each bond's distance over
        them (a spring's vibration averages out, a centre-of-mass distance
        stays).
    box : numpy.ndarray or None
        Periodic boxes of the frames, (F, 3, 3) or None.
    source : str
        Input name for messages.
    frame : int
        Index of the first of ``frames`` in the input.
    springs : tuple of numpy.ndarray, optional
        The force field's bonds: (P, 2) atom indices and (P,) equilibrium
        lengths, Angstrom (see :func:`backmap_plugin.io.frames.springs_from_openmm`);
        those between consecutive residues are evidence for the detection.

    Returns
    -------
    mapping : Mapping
    evidence : str
        What was decided and why, with the beads' names where they are not
        CA; for a mapping given, '' where the beads agree with it, else what
        they look like.

    Raises
    ------
    BackmapInputError
        Martini beads, or a trace whose geometry cannot tell (the message
        names the ``--mapping`` to pass).
    """
    given = None if isinstance(mapping, str) and mapping == "auto" else get_mapping(mapping)
    names = {atom_names[a].strip().upper() for r in records for a in list(r.atoms.values()) + r.other_atoms}
    if given is None and "BB" in names and names <= set(BEAD_NAMES) | {"CA"}:
        raise BackmapInputError(
            f"{source}: the beads are named {', '.join(sorted(names))} but their residues are not Martini 3 "
            "protein residues; beads of one per residue named so by another CG model are read with --mapping ca "
            "(at the C-alpha atoms) or --mapping com (at the residues' centres of mass)"
        )
    single = [len(r.atoms) + len(r.other_atoms) == 1 for r in records]
    if not all(single):
        return (given, "") if given is not None else (get_mapping("ca"), _all_atom_evidence(records, atom_names))
    try:
        decision = _decide_from_geometry(records, atom_names, frames, box, source, frame, springs, given is None)
    except BackmapInputError:
        if given is not None:  # (what was given is read; the checks of the trace say what does not fit)
            return given, ""
        raise
    if decision is None:  # a unit error: check_trace says so
        return given or get_mapping("ca"), ""
    named = "" if names == {"CA"} else f" (beads named {', '.join(sorted(names)[:5])}{' ...' * (len(names) > 5)})"
    if given is not None:
        if _decision_is(decision, given):
            return given, ""
        return given, f"as given ({given.name}), though the beads look otherwise: {decision.evidence}{named}"
    if decision.name == "ca":
        return get_mapping("ca"), decision.evidence + named
    return COMMapping(decision.ca_residues), decision.evidence + named


def _sparse_residues(records: list[ResidueRecord]) -> list[ResidueRecord]:
    """The residues that hold fewer than half their heavy atoms (the beads of a CG model)."""
    return [r for r in records if len(r.atoms) + len(r.other_atoms) < len(chem.RESIDUES[r.name].atoms) / 2]


def holds_all_atoms(records: list[ResidueRecord]) -> bool:
    """Whether an input is all-atom: most of its residues hold at least half their heavy atoms (not a CG model
    of one bead per residue, nor of several: AWSEM's CA, CB and O, UNRES's CA and side-chain centroid)."""
    return len(_sparse_residues(records)) <= len(records) / 2


def _all_atom_evidence(records: list[ResidueRecord], atom_names: list[str]) -> str:
    """What ``auto`` says of residues of several atoms: all-atom residues read at their C-alpha atoms; where most
    lack most of their heavy atoms (a multi-bead CG model: AWSEM's CA, CB and O, UNRES's CA and side-chain
    centroid), which atoms they hold, and that those other than CA are not used."""
    evidence = "all-atom residues: beads at their C-alpha atoms"
    sparse = _sparse_residues(records)
    if len(sparse) <= len(records) / 2:
        return evidence
    held = Counter(", ".join(sorted(atom_names[a].strip() for a in list(r.atoms.values()) + r.other_atoms))
                   for r in sparse)
    kinds = "; ".join(f"{names} ({n})" for names, n in held.most_common(3)) + ("; ..." if len(held) > 3 else "")
    return (f"{evidence}; but {len(sparse)} of {len(records)} residues hold fewer than half their heavy atoms "
            f"(a CG model of several beads per residue? they hold {kinds}): only their CA atoms are read, the "
            "other atoms are not used")


def _decide_from_geometry(records: list[ResidueRecord], atom_names: list[str], frames: np.ndarray, box,
                          source: str, frame: int, springs, refuse_bb: bool):
    """:func:`backmap_plugin.core.detect.decide_mapping` on the leading frames of a one-bead-per-residue input;
    None when its beads are so close or far apart that the unit must be wrong; beads as close as Martini BB beads
    are refused where ``refuse_bb``."""
    reader = BeadReader(records, get_mapping("com"), source, atom_names)
    chain = np.array([r.chain for r in records])
    frames = np.asarray(frames, dtype=np.float32)
    beads = reader.beads(frames[None] if frames.ndim == 2 else frames)
    labels = [r.label() for r in records]
    _check_finite_beads(beads, labels, source, frame)
    beads = make_whole(beads, box, chain, max_bond=BREAK_DISTANCE_OTHER, labels=labels, first_frame=frame,
                       source=source)
    same_chain = chain[1:] == chain[:-1]
    if same_chain.any():
        spacing = float(np.median(np.linalg.norm(np.diff(beads[0], axis=0), axis=-1)[same_chain]))
        if not _BEAD_SPACING_RANGE[0] <= spacing <= _BEAD_SPACING_RANGE[1]:
            return None
        if refuse_bb and spacing < MAX_BB_SPACING:
            raise BackmapInputError(
                f"{source}: frame {frame}: consecutive beads are {spacing:.2f} A apart (median); C-alpha atoms are "
                f"3.80 A apart and residue centres of mass farther: these look like Martini BB beads, or a Go "
                "model's virtual sites (named CA, on the BB beads) without the protein beads: give the whole "
                "Martini file (BB and SC beads), or pass --mapping ca to read them as C-alpha atoms"
            )
    read = f"frame {frame}" if len(beads) == 1 else f"frames {frame}-{frame + len(beads) - 1}"
    return decide_mapping(beads, reader.res_type, chain, [r.chain_id for r in records],
                          [r.res_seq for r in records], source=f"{source}: {read}",
                          max_bond=BREAK_DISTANCE_OTHER, springs=_residue_springs(springs, records))


def _numbering_gap_notes(records: list[ResidueRecord], distance: np.ndarray, limits, break_distance: float,
                         segment: np.ndarray) -> list:
    """Notes on the numbering gaps of centre-of-mass chains (``distance``: (R - 1,) between consecutive beads):
    broken where residues are missing but the beads are closer than ``break_distance``, and joined where the beads
    are as close as bonded ones can be (one note)."""
    chain = np.array([r.chain for r in records])
    broken = (chain[1:] == chain[:-1]) & (distance > limits) & (distance <= break_distance)
    notes = [f"chain break between {records[i].label()} and {records[i + 1].label()}: residues missing between "
             f"them, beads {distance[i]:.1f} A apart, bonded ones at most {limits[i]:.1f}"
             for i in np.nonzero(broken)[0]]
    skips = np.diff([r.res_seq for r in records]) > 1
    joined = np.nonzero(skips & (segment[1:] == segment[:-1]))[0]
    if len(joined):
        pairs = ", ".join(f"{records[i].label()} - {records[i + 1].name} {records[i + 1].res_seq}"
                          f"{records[i + 1].insertion_code or ''} ({distance[i]:.1f} A)" for i in joined)
        notes.append(f"bonded where residue numbers skip (beads as close as bonded residues' can be; antibody "
                     f"numberings skip numbers, and a CG model bonds its beads in order): {pairs}; if residues are "
                     "missing there, a TER record between them in the topology breaks the chain")
    return notes


def _consecutive_springs(springs, records: list[ResidueRecord]) -> np.ndarray:
    """(R-1,) index in ``springs`` of a bond between residues i and i+1 of one chain (-1: none), the last of known
    length where there is one."""
    residue = {a: k for k, r in enumerate(records) for a in list(r.atoms.values()) + r.other_atoms}
    out = np.full(max(len(records) - 1, 0), -1, dtype=np.int64)
    known = ~np.isnan(np.asarray(springs[1], dtype=np.float64))
    for k, (a, b) in enumerate(np.asarray(springs[0]).reshape(-1, 2)):
        i, j = sorted((residue.get(int(a), -1), residue.get(int(b), -1)))
        if i >= 0 and j == i + 1 and records[i].chain == records[j].chain and (known[k] or out[i] < 0):
            out[i] = k
    return out


def _residue_springs(springs, records: list[ResidueRecord]) -> np.ndarray | None:
    """(R-1,) equilibrium length of the bond between the beads of residues i and i+1 (NaN: none), or None."""
    if springs is None:
        return None
    index = _consecutive_springs(springs, records)
    lengths = np.append(np.asarray(springs[1], dtype=np.float64), np.nan)
    return lengths[index]  # (-1: the NaN appended)


def _bonded_by_force_field(springs, records: list[ResidueRecord]) -> np.ndarray | None:
    """(R-1,) True where the force field bonds residues i and i+1 of one chain (None without springs)."""
    return None if springs is None else _consecutive_springs(springs, records) >= 0


def _unbonded_by_force_field(springs, records: list[ResidueRecord]) -> np.ndarray | None:
    """(R-1,) True where residues i and i+1 of one chain have no force-field bond while the force field bonds
    other consecutive residues of that chain: molecules one after another in a chain (None without springs)."""
    if springs is None:
        return None
    chain = np.array([r.chain for r in records])
    bonded = _bonded_by_force_field(springs, records)
    same = chain[1:] == chain[:-1]
    chains_bonded = np.unique(chain[:-1][bonded])
    return same & ~bonded & np.isin(chain[:-1], chains_bonded)


#: How a note says to leave the cysteines free (``backmap run --no-disulfides``, ``disulfides=False``).
_ALL_FREE = "--no-disulfides leaves every cysteine free"


def _cystine_bonds(topology, bead_index: np.ndarray, res_type: np.ndarray) -> set | None:
    """The cysteine pairs whose SC1 beads a Martini 3 topology bonds (martinize2 writes a cystine as an SC1-SC1
    bond or constraint: a ``.tpr`` holds them, its ``.pdb`` has them as CONECT records).

    Parameters
    ----------
    topology : mdtraj.Topology
        The CG topology as read.
    bead_index : numpy.ndarray
        (R, MAX_BEADS) input atom index of each residue's beads, -1 where it has none
        (:class:`~backmap_plugin.io.martini.MartiniIntake`).
    res_type : numpy.ndarray
        (R,) residue types.

    Returns
    -------
    set of tuple of int or None
        ``(i, j)`` residue indices, ``i < j``; None where the topology bonds
        no two protein beads at all (a ``.gro``: it does not say).
    """
    bonds = np.array([(a.index, b.index) for a, b in topology.bonds], dtype=np.int64).reshape(-1, 2)
    if not np.isin(bonds, bead_index[bead_index >= 0]).all(1).any():
        return None
    cys = np.nonzero(res_type == chem.RESIDUE_INDEX["CYS"])[0]
    residue_of = dict(zip(bead_index[cys, 1].tolist(), cys.tolist()))
    return {tuple(sorted((residue_of[a], residue_of[b]))) for a, b in bonds.tolist()
            if a in residue_of and b in residue_of}


class MartiniBeadReader:
    """Martini 3 protein beads of input frames, as :class:`BeadReader` reads one bead per residue.

    Parameters
    ----------
    intake : backmap_plugin.io.martini.MartiniIntake
        The protein residues and their bead atoms (solvent, ions, lipids and
        Go virtual sites left out).
    """

    def __init__(self, intake):
        self.records = intake.records
        self.bead_index = intake.bead_index
        self.res_type = np.array([chem.RESIDUE_INDEX[r.name] for r in intake.records])

    def beads(self, xyz: np.ndarray) -> np.ndarray:
        """(F, R, MAX_BEADS, 3) float32 beads of (F, n_atoms, 3) frames, Angstrom; zeros where a residue has no such bead."""
        from backmap_plugin.io.martini import martini_beads

        return martini_beads(np.asarray(xyz, dtype=np.float32), self.bead_index)


def _check_finite_beads(beads: np.ndarray, labels: list, source: str, first_frame: int) -> None:
    """Raise at the first NaN / infinite bead (see :func:`check_beads`)."""
    found = first_non_finite(beads)
    if found is not None:
        frame, r = found
        position = ", ".join(f"{v:g}" for v in np.asarray(beads[frame, r], dtype=np.float64))
        raise BackmapInputError(
            f"{source}: frame {first_frame + frame}: the bead of {labels[r]} is not finite "
            f"({position}): NaN or infinite coordinates (did the simulation blow up?)"
        )


def _check_close_beads(beads: np.ndarray, protein: ProteinTopology, source: str, first_frame: int) -> None:
    """Raise at the first pair of beads closer than :data:`MIN_BEAD_DISTANCE` (see :func:`check_beads`)."""
    found = first_close_pair(beads, MIN_BEAD_DISTANCE)
    if found is not None:
        frame, i, j, distance = found
        consecutive = j == i + 1 and protein.chain_ids[i] == protein.chain_ids[j]
        raise BeadsTooCloseError(
            f"{source}: frame {first_frame + frame}: the beads of {protein.labels[i]} and {protein.labels[j]}"
            f"{' (consecutive)' if consecutive else ''} are {distance:.2f} Angstrom apart; no two beads of a "
            f"protein can be closer than {MIN_BEAD_DISTANCE:g} Angstrom: duplicated or collapsed coordinates"
        )


def check_beads(beads: np.ndarray, protein: ProteinTopology, source: str, first_frame: int = 0) -> None:
    """Reject frames with non-finite or coincident beads, naming file, frame, chain and residues.

    Called on every chunk of frames before anything of it is built, so a bad
    frame stops a run with a message about the input rather than a NaN error
    about the output.

    Parameters
    ----------
    beads : numpy.ndarray
        (F, R, 3) bead positions, Angstrom (chains made whole).
    protein : ProteinTopology
        Residue-level topology; its ``labels`` name the residues.
    source : str
        Name of the input for messages.
    first_frame : int
        Index of ``beads[0]`` in the whole input.

    Raises
    ------
    BackmapInputError
        A bead with a NaN or infinite coordinate, or two beads (consecutive
        or not, of one chain or two) closer than :data:`MIN_BEAD_DISTANCE`.
    """
    _check_finite_beads(beads, protein.labels, source, first_frame)
    _check_close_beads(beads, protein, source, first_frame)


#: Factors by which coordinates are too small or too large that are read as nm and Angstrom mixed up (ten times).
_TEN_TIMES = (8.0, 12.5)
#: Beads spaced more than this many times 3.8 A apart: no unit is that far off (nm against pm is 1000), a run blew up.
_BLOWN_UP = 2000.0


def _scale_hint(median: float) -> str:
    """What the median bead spacing ``median`` (Angstrom; outside :data:`_BEAD_SPACING_RANGE`) says of the unit: ten
    times off (nm and Angstrom mixed up), else the factor measured against 3.8 A (reduced units: a bond of 1 in
    Lennard-Jones units is 3.8 times too small)."""
    factor = chem.BOND_CA_CA_TRANS / median if median > 0 else float("inf")
    small = factor > 1
    times = factor if small else 1.0 / factor
    if _TEN_TIMES[0] <= times <= _TEN_TIMES[1]:
        return f"ten times too {'small (nm written as Angstrom?)' if small else 'large (Angstrom written as nm?)'}"
    if not small and times > _BLOWN_UP:
        return f"{times:.3g} times too large: beads flown apart (a run that blew up?) or another unit"
    why = "reduced units (bonds of 1 in Lennard-Jones units?)" if small else "another unit?"
    return f"{times:.1f} times too {'small' if small else 'large'}: {why}; scale them to Angstrom"


def check_trace(beads: np.ndarray, protein: ProteinTopology, source: str, frame: int = 0) -> None:
    """Reject traces that cannot be backmapped, naming file, frame, chain and residue.

    Checks, on one frame, non-finite beads, the unit (bead spacing far from
    3.8 A: ten times off, or the factor measured), and beads closer than
    :data:`MIN_BEAD_DISTANCE` (after the unit, so a trace in nm is called
    that). A residue isolated by breaks on both sides is built, its
    backbone oriented by a neighbour of its chain (a chain of one residue:
    by the residue before or after it in the input).

    Parameters
    ----------
    beads : numpy.ndarray
        (R, 3) bead positions of one frame, Angstrom.
    protein : ProteinTopology
    source : str
        Name of the input for messages.
    frame : int
        Index of the frame in the input, for messages.

    Raises
    ------
    BackmapInputError
    """
    _check_finite_beads(beads[None], protein.labels, source, frame)
    seg = protein.segment
    chain_change = np.array(protein.chain_ids[1:]) != np.array(protein.chain_ids[:-1])
    same_seg = seg[1:] == seg[:-1]
    d = np.linalg.norm(np.diff(beads, axis=0), axis=-1)
    spacing = d[same_seg] if same_seg.any() else d[~chain_change]
    if spacing.size:
        median = float(np.median(spacing))
        low, high = _BEAD_SPACING_RANGE
        if median < low or median > high:
            raise BackmapInputError(
                f"{source}: frame {frame}: median distance between consecutive beads is "
                f"{median:.2f} Angstrom, expected about 3.8: coordinates look {_scale_hint(median)}"
            )
    _check_close_beads(beads[None], protein, source, frame)


#: Cysteines whose beads lie farther apart than this (Angstrom) in every leading frame cannot be bonded (C-alpha
#: atoms of disulfides within 7.2 A, a centre of mass at most 2.5 A from its C-alpha atom): no disulfide search.
DISULFIDE_BEAD_REACH = 12.5
#: Residues taken as bonded (from the leading frames) whose beads lie farther apart than this many times the break
#: distance in any frame stop the run: they are not bonded, or the frame is broken (5.9 A for C-alpha beads: a
#: soft CG bond of 3.8 +- 0.24 A never gets there; two molecules numbered on, their ends touching in most leading
#: frames and 6.5 A apart later, were built with a C-N bond of 1.9 A at twice the break distance).
STRETCH_FACTOR = 1.3
#: Fraction of the consecutive residues of the chains (numbers that do not skip) whose beads may lie farther apart
#: than bonded ones (chain breaks) before an input is refused as coordinates that do not belong to their topology
#: (at least :data:`MIN_BROKEN_PAIRS` of them).
MAX_BROKEN_FRACTION = 0.2
MIN_BROKEN_PAIRS = 5
#: Chain breaks between residues whose numbers run on that a note names (it counts the rest).
MAX_BREAKS_NAMED = 5
#: Beads farther apart than this many times the mapping's default break distance are no stretched bond: a note
#: advises no ``--break-distance`` that would bond them (wrapped beads of a trajectory without its box lie a box
#: length apart, 51-74 A in a 55 A box: the note advised a break distance above 74 A).
MAX_STRETCH_ADVISED = 2.0
#: Inputs of at least this many residues, all of one type, get a note (CG programs that name every bead alike).
HOMOPOLYMER_NOTE_LENGTH = 10


def _breaks_where_numbers_run_on(protein: ProteinTopology, chain: np.ndarray,
                                 apart: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(R - 1,) bool: breaks within chains (``chain``: (R,) chain index; ids may repeat) between residues whose
    numbers run on (the same or the next: residues missing between two are a break), and how many such pairs the
    chains have; pairs ``apart`` (the force field bonds them not) left out of both."""
    step = np.diff(protein.res_seq)
    same_chain = (chain[1:] == chain[:-1]) & (step >= 0) & (step <= 1)
    if apart is not None:
        same_chain &= ~apart
    return same_chain & (protein.segment[1:] != protein.segment[:-1]), int(same_chain.sum())


def _frames_said(first: int, n_frames: int) -> str:
    """Which frames the distances between beads were taken from, for messages."""
    return f"in frame {first}" if n_frames == 1 else f"(median of frames {first}-{first + n_frames - 1})"


def _break_advice(distance: np.ndarray, break_distance: float, default_break: float, boxed: bool) -> str:
    """What to make of chain breaks ``distance`` (Angstrom) apart: a ``--break-distance`` above them bonds those up
    to :data:`MAX_STRETCH_ADVISED` times the mapping's ``default_break``; beads farther apart are no bond that any
    break distance should make (wrapped by a periodic box the input does not give, unless ``boxed``; molecules
    numbered on)."""
    far_from = MAX_STRETCH_ADVISED * default_break
    far = distance > far_from
    near = distance[~far]
    if not far.any():
        return f"a --break-distance above those distances (now {break_distance:g} A) bonds them"
    advice = [f"a --break-distance above {near.max():.1f} A (now {break_distance:g} A) bonds those closer than "
              f"{far_from:g} A"] if len(near) else []
    why = "molecules numbered on, or a broken frame" if boxed else (
        "coordinates wrapped into a periodic box that the input does not give (give a trajectory with its "
        "boxes, a --top with the box: CRYST1 in P 1, .gro; or unwrap it first), or molecules numbered on")
    advice.append(f"{int(far.sum())} of them {'is' if far.sum() == 1 else 'are'} more than {far_from:g} A "
                  f"apart, farther than bonded beads stretch, which no --break-distance should bond: {why}")
    return "; ".join(advice)


def _consecutive_break_notes(protein: ProteinTopology, chain: np.ndarray, distance: np.ndarray, first: int,
                             n_frames: int, break_distance: float, apart: np.ndarray | None = None,
                             default_break: float | None = None, boxed: bool = False) -> list:
    """Notes naming the chain breaks between residues whose numbers run on (``distance``: (R - 1,) between
    consecutive beads), at most :data:`MAX_BREAKS_NAMED` of them, with what to make of them (:func:`_break_advice`;
    ``default_break``: the mapping's default break distance, ``break_distance`` when None; ``boxed``: the frames
    have periodic boxes); those the force field decided (``apart``) apart."""
    notes = []
    if apart is not None and apart.any():
        where = np.nonzero(apart)[0]
        named = ", ".join(_pair_label(protein, i) for i in where[:MAX_BREAKS_NAMED])
        more = f" and {len(where) - MAX_BREAKS_NAMED} more" if len(where) > MAX_BREAKS_NAMED else ""
        notes.append(f"chain broken where the force field bonds no consecutive residues (molecules one after "
                     f"another in a chain): {named}{more}")
    broken = np.nonzero(_breaks_where_numbers_run_on(protein, chain, apart)[0])[0]
    if len(broken):
        named = ", ".join(f"{_pair_label(protein, i)} ({distance[i]:.1f} A)" for i in broken[:MAX_BREAKS_NAMED])
        more = f" and {len(broken) - MAX_BREAKS_NAMED} more" if len(broken) > MAX_BREAKS_NAMED else ""
        advice = _break_advice(distance[broken], break_distance, default_break or break_distance, boxed)
        notes.append(f"chain broken where residue numbers run on, beads farther apart than bonded ones "
                     f"{_frames_said(first, n_frames)}: {named}{more}; {advice}")
    return notes


#: Chains of fewer residues are not looked at for head-to-tail closure (:func:`_cyclic_chain_notes`).
MIN_CYCLIC_RESIDUES = 4
#: Least tolerance (Angstrom) of :func:`_cyclic_chain_notes` about the bonded beads' median distance (crystal
#: C-alpha traces: bonds 3.80 +- 0.02 A; 1 of 1,804 train chains has its ends 3.99 A apart, not bonded).
MIN_CYCLIC_TOLERANCE = 0.15


def _cyclic_chain_notes(protein: ProteinTopology, chain: np.ndarray, beads: np.ndarray) -> list:
    """Notes naming the chains (``chain``: (R,) chain index) whose first and last beads lie as far apart as bonded
    ones (``beads``: (F, R, 3) C-alpha or Martini BB beads of the leading frames; their median distance over the
    frames, within three robust standard deviations of the bonded beads' distances, at least
    :data:`MIN_CYCLIC_TOLERANCE`): a cyclic peptide, which is built linear, with free termini."""
    bonded = protein.segment[1:] == protein.segment[:-1]
    distance = np.linalg.norm(np.diff(beads, axis=1), axis=-1)[:, bonded]
    if not distance.size:
        return []
    centre = float(np.median(distance))
    tolerance = max(MIN_CYCLIC_TOLERANCE, 3.0 * 1.4826 * float(np.median(np.abs(distance - centre))))
    notes = []
    for c in np.unique(chain):
        members = np.flatnonzero(chain == c)
        if len(members) < MIN_CYCLIC_RESIDUES:
            continue
        first, last = int(members[0]), int(members[-1])
        ends = float(np.median(np.linalg.norm(beads[:, first] - beads[:, last], axis=-1)))
        if abs(ends - centre) <= tolerance:
            notes.append(
                f"{protein.labels[first]} and {protein.names[last]} {protein.residue_id(last)}, the first and last "
                f"residues of their chain, have beads {ends:.2f} A apart, as bonded ones ({centre:.2f} A): a cyclic "
                "peptide? It is built linear, with free termini (an N terminus and a C-terminal OXT, which may clash): "
                "no head-to-tail bond is built"
            )
    return notes


#: C-alpha virtual torsions (degrees) of helices: right-handed ones lie near +50, their mirror images near -50.
HELICAL_TORSIONS = (20.0, 80.0)
#: Consecutive helical torsions (of C-alpha atoms i ... i + 7: two turns) that make a helical window; a chain of
#: no handedness (HPS, CALVADOS) has three in a row now and then, five seldom.
HELICAL_WINDOW = 5
#: A mirror-image note needs a chain with at least this many left-handed helical windows per frame ...
MIN_MIRROR_WINDOWS = 3
#: ... and this fraction of all the helical windows left-handed. Train structures: 1 of their 64,440 windows is
#: left-handed, and their mirror images are found in 1,119 of 1,273 files (the others, beta proteins, have fewer
#: than three windows in each chain); of 120 frames of HPS runs (140 and 303 residues) none is taken for one.
MIRROR_FRACTION = 0.8


def helical_windows(protein: ProteinTopology, chain: np.ndarray, beads: np.ndarray) -> np.ndarray:
    """Right- and left-handed helical windows of each chain of C-alpha traces: :data:`HELICAL_WINDOW` consecutive
    virtual torsions of bonded C-alpha atoms within :data:`HELICAL_TORSIONS` (+50 degrees: right-handed; -50:
    left-handed).

    Parameters
    ----------
    protein : ProteinTopology
        Its segments say which beads are bonded.
    chain : numpy.ndarray
        (R,) chain index of each residue.
    beads : numpy.ndarray
        (F, R, 3) C-alpha positions, Angstrom.

    Returns
    -------
    numpy.ndarray
        (C, 2) int: right- and left-handed windows over the frames, per chain (in the order of
        ``numpy.unique(chain)``).
    """
    from backmap_plugin.core.checks import dihedral_values

    chains, index = np.unique(chain, return_inverse=True)
    counts = np.zeros((len(chains), 2), dtype=np.int64)
    n = protein.n_residues - 3
    if n < HELICAL_WINDOW:
        return counts
    start = np.arange(n)
    bonded = protein.segment[start] == protein.segment[start + 3]
    with np.errstate(invalid="ignore", divide="ignore"):  # (coincident beads, refused later: no helix)
        torsion = dihedral_values(beads, np.stack([start, start + 1, start + 2, start + 3], axis=1))
    low, high = HELICAL_TORSIONS
    for hand, sign in enumerate((1.0, -1.0)):
        helical = bonded & (sign * torsion > low) & (sign * torsion < high)
        window = np.ones((len(helical), n - HELICAL_WINDOW + 1), dtype=bool)
        for k in range(HELICAL_WINDOW):
            window &= helical[:, k:n - HELICAL_WINDOW + 1 + k]
        np.add.at(counts[:, hand], index[: n - HELICAL_WINDOW + 1], window.sum(axis=0))
    return counts


def _mirror_image_notes(protein: ProteinTopology, chain: np.ndarray, beads: np.ndarray) -> list:
    """A note where the helices of a C-alpha trace (``beads``: (F, R, 3), the leading frames) are mostly
    left-handed (:func:`helical_windows`: a chain with :data:`MIN_MIRROR_WINDOWS` left-handed windows a frame, and
    :data:`MIRROR_FRACTION` of them all): a mirror image. Disordered chains (HPS, CALVADOS) have few windows, of
    either hand."""
    counts = helical_windows(protein, chain, beads)
    right, left = (int(v) for v in counts.sum(axis=0))
    if counts[:, 1].max(initial=0) < MIN_MIRROR_WINDOWS * len(beads) or left < MIRROR_FRACTION * (left + right):
        return []
    return [f"the trace's helices are left-handed: {left} of its {left + right} helical windows (C-alpha virtual "
            f"torsions near -50 degrees, not +50{'' if len(beads) == 1 else f'; over {len(beads)} frames'}) "
            "turn left: a mirror image (an axis flipped by a converter, a Go model with its dihedral sign "
            "wrong)? It is built as it is, L residues on left-handed helices"]


def _pair_label(protein: ProteinTopology, i: int) -> str:
    """Residues i and i + 1 for messages, e.g. ``chain A residue PRO 375 - HIS 376``."""
    return f"{protein.labels[i]} - {protein.names[i + 1]} {protein.residue_id(i + 1)}"


def _check_chains_hold_together(distance: np.ndarray, protein: ProteinTopology, chain: np.ndarray, source: str,
                                first_frame: int, n_frames: int, break_distance: float,
                                apart: np.ndarray | None = None, boxed: bool = True) -> None:
    """Refuse chains that fall apart (``distance``: (R - 1,) between consecutive beads): more than
    :data:`MAX_BROKEN_FRACTION` of their consecutive residues (numbers that do not skip; not those the force field
    bonds not, ``apart``) are breaks (a topology of another system with the same number of beads, scrambled
    residues; unless ``boxed``, beads wrapped into a periodic box that the input does not give)."""
    broken, n_pairs = _breaks_where_numbers_run_on(protein, chain, apart)
    n_broken = int(broken.sum())
    if n_broken >= MIN_BROKEN_PAIRS and n_broken > MAX_BROKEN_FRACTION * n_pairs:
        i = int(np.nonzero(broken)[0][0])
        wrapped = "" if boxed else (", or are its beads wrapped into a periodic box that the input does not give: "
                                    "give the box, a --top with it (CRYST1 in P 1, .gro), or unwrap them")
        raise BackmapInputError(
            f"{source}: {n_broken} of the {n_pairs} consecutive residues of the chains lie farther apart than bonded "
            f"ones {_frames_said(first_frame, n_frames)} (first: {protein.labels[i]} and {protein.labels[i + 1]}, "
            f"{distance[i]:.1f} A): these coordinates do not fit the topology (is it another system's, are its "
            f"residues out of order, or are its bonds stretched{wrapped}?); pass --break-distance (default here "
            f"{break_distance:g} A) to build the pieces anyway"
        )


def _check_force_field_bonds(distance: np.ndarray, bonded: np.ndarray, reach: float, labels: list, source: str,
                             first_frame: int, n_frames: int, boxed: bool) -> None:
    """Refuse residues that the force field bonds (``bonded``: (R - 1,)) whose beads lie farther apart than bonded
    beads stretch (``distance``: (R - 1,) between consecutive beads; ``reach``): beads wrapped into a periodic
    box that the input does not give (unless ``boxed``), or a broken frame; built, they made peptides 50 A long."""
    far = np.nonzero(bonded & (distance > reach))[0]
    if len(far):
        i = int(far[0])
        why = "" if boxed else ("beads wrapped into a periodic box that the input does not give (give the box, or "
                                "unwrap them), or ")
        raise BackmapInputError(
            f"{source}: the force field bonds {labels[i]} and {labels[i + 1]}, but their beads lie "
            f"{distance[i]:.1f} A apart {_frames_said(first_frame, n_frames)}, farther than bonded beads stretch "
            f"({reach:g} A; {len(far)} such pair(s)): {why}a broken frame (a simulation that blew up?)"
        )


#: Builders: ``ideal`` (geometric) and ``model`` (a trained generative model).
#: A builder is called as ``build(beads, protein, mapping, samples, seeds)``
#: with beads (F, R, 3) and one random seed per frame, and returns
#: (F, samples, R, N_SLOTS, 3) heavy-atom slots.
METHODS = ("ideal", "model")


def default_method(mapping: Mapping, model: str | None = None) -> str:
    """``model`` when a model is given or the package ships one for the mapping's beads, else ``ideal``."""
    from backmap_plugin.model.weights import shipped_model_path  # imports e3nn: only when a model may be used

    return "model" if model is not None or shipped_model_path(model_beads(mapping)) is not None else "ideal"


def make_builder(method: str, model: str | None = None, device="cpu", temperature: float | None = None,
                 samples: int = 1, mapping: Mapping | None = None, disulfides: bool = True):
    """The builder callable of a method (see :data:`METHODS`).

    ``temperature`` None means 0 (one deterministic structure) for one sample per
    frame and 1 (draws from the model) for several. ``model`` None takes the
    shipped model for ``mapping``'s beads. ``disulfides`` False: the Martini 3
    fit leaves every cysteine free (it bonds those whose SC1 beads are close;
    the other builders bond none, :class:`Backmapper` closes them).
    """
    if method == "ideal":
        if mapping is not None and mapping.name == "martini3":
            from backmap_plugin.build.martini import backmap_martini3

            return backmap_martini3 if disulfides else functools.partial(backmap_martini3, disulfides=False)
        return backmap_ideal
    from backmap_plugin.model.method import ModelMethod

    if temperature is None:
        temperature = 0.0 if samples == 1 else 1.0
    return ModelMethod(_model_file(model, mapping), device, temperature, disulfides=disulfides)


@dataclass
class BackmapResult:
    """What :func:`backmap` did.

    Attributes
    ----------
    output : str
        The output file.
    n_frames, n_samples : int
        Input frames backmapped (after the stride; resumed runs count the
        frames of the earlier run too) and structures per frame.
    n_residues, n_chains, n_segments, n_atoms : int
        Size of each output structure.
    seconds : float
        Wall time of this call.
    report : list of str
        What was dropped or renamed in the input.
    method, mapping : str
        Builder and bead mapping used.
    mapping_evidence : str
        For ``mapping='auto'``: what the input's beads showed (one sentence).
    seed : int
    temperature : float or None
        As passed (None: the method's default).
    input, top : str or None
        Input files.
    resumed_from : int
        First input frame built by this call (0 unless resumed).
    stride : int
        Every ``stride``-th input frame was backmapped: frame ``k`` of the
        output is input frame ``k * stride``.
    model : str or None
        Weights file of the ``model`` method (None for ``ideal``).
    device : str
        Torch device type the structures were built on (``cpu``, ``cuda``).
    version : str
        backmap_plugin version.
    bead_rmsd : dict
        Per kind of bead (Martini 3 ``BB`` / ``SC``, ``centre of mass``,
        ``C-alpha``): the median, the largest and its frame (of the input,
        ``k * stride`` for the run's frame ``k``) of the bead
        RMSD (Angstrom, no superposition) between each structure of the
        output (those of the run it resumed too), mapped back to beads, and
        the input beads
        (:meth:`backmap_plugin.core.bead_fit.BeadFit.summary`).
    cut_short : str or None
        Where the input ends inside a frame (a run killed while writing it,
        or one still writing it): the message naming the file and its last
        whole frame read (:class:`CutShortWarning`); None for an input read
        to its end.
    """

    output: str
    n_frames: int
    n_samples: int
    n_residues: int
    n_chains: int
    n_segments: int
    n_atoms: int
    seconds: float
    report: list = field(default_factory=list)
    method: str = ""
    mapping: str = ""
    mapping_evidence: str = ""
    seed: int = 0
    temperature: float | None = None
    input: str | None = None
    top: str | None = None
    resumed_from: int = 0
    stride: int = 1
    model: str | None = None
    device: str = ""
    version: str = ""
    bead_rmsd: dict = field(default_factory=dict)
    cut_short: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready dictionary of the fields (what ``backmap run --json`` writes)."""
        return asdict(self)

    def summary(self) -> str:
        """One line for the terminal."""
        per = 1000.0 * self.seconds / max(1, (self.n_frames - self.resumed_from) * self.n_samples)  # built now
        return (
            f"backmapped {self.n_frames} frame(s) x {self.n_samples} sample(s), {self.n_residues} residues "
            f"in {self.n_chains} chain(s) / {self.n_segments} segment(s), {self.n_atoms} heavy atoms -> "
            f"{self.output} in {self.seconds:.2f} s ({per:.1f} ms per structure)"
            + (f"; resumed at frame {self.resumed_from}" if self.resumed_from else "")
        )


def check_backmap_options(method: str | None, samples: int, model: str | None = None,
                          temperature: float | None = None, break_distance: float | None = None, seed: int = 0,
                          mapping: str | Mapping = "auto", device="auto") -> None:
    """Refuse option values that cannot be meant, before any work (:func:`backmap`, :class:`Backmapper`, the reporter).

    Raises
    ------
    ValueError
        An unknown method, mapping or device (CUDA asked for where torch
        sees none), fewer than one sample, a seed that is not a whole number
        of at least 0, a model file for the ideal builder, a negative
        temperature, a break distance that is not a positive number.
    FileNotFoundError, BackmapInputError
        A model file that does not exist, has no config beside it, or is a
        folder (:func:`~backmap_plugin.model.weights.check_model_path`).
    """
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown method '{method}'; known: {', '.join(METHODS)}")
    for name, value, least in (("samples", samples, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"{name} must be a whole number, at least {least}, got {value!r}")
    if not (isinstance(mapping, str) and mapping == "auto"):
        get_mapping(mapping)
    select_device(device)
    if model is not None and method == "ideal":
        raise ValueError("a model file (--model) is for method 'model'; method 'ideal' uses none")
    if model is not None:
        from backmap_plugin.model.weights import check_model_path  # imports e3nn: only when a model is given

        check_model_path(model)
    if temperature is not None and not (_is_number(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be 0 or more, got {temperature!r}")
    if break_distance is not None and not (_is_number(break_distance) and 0 < break_distance < float("inf")):
        raise ValueError(f"break distance must be a positive number of Angstrom (a large one never splits), got "
                         f"{break_distance!r}")


def _is_number(value) -> bool:
    """A plain real number (not a bool, not an ``openmm.unit`` quantity)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Backmapper:
    """Backmaps the frames of one coarse-grained system.

    The engine behind :func:`backmap`, the OpenMM reporter and the
    workflows: it reads the CG topology once (names, chains, segments from
    the first frame), checks it, derives the all-atom topology, and then
    turns batches of CG frames into all-atom frames.

    Parameters
    ----------
    topology : mdtraj.Topology
        The CG (or all-atom) input topology.
    frames : numpy.ndarray
        (n_atoms, 3) coordinates of the input's first frame, or (F, n_atoms,
        3) of its first F frames, Angstrom: the checks come from the first;
        a chain breaks where its residues are too far apart for a bond in
        any of them, and with ``mapping='auto'`` the detection reads them all
        (:func:`resolve_mapping`). The chains are refused when more than
        :data:`MAX_BROKEN_FRACTION` of their consecutive residues are breaks
        (unless ``break_distance`` is given), and :meth:`build` stops at a
        frame where residues taken as bonded lie more than
        :data:`STRETCH_FACTOR` times the break distance apart.
    mapping, method, samples, seed, device, break_distance, model, temperature
        As in :func:`backmap`.
    source : str
        Name of the input for messages (file name).
    frame : int
        Index of the first of ``frames`` in the input, for messages.
    box : numpy.ndarray, optional
        (F, 3, 3) periodic boxes of ``frames``.
    springs : tuple of numpy.ndarray, optional
        The CG force field's bonds, evidence for ``mapping='auto'`` (see
        :func:`resolve_mapping`).
    disulfides : bool
        Bond the cysteine pairs whose SG atoms can meet (:meth:`build`); from
        Martini 3 beads those whose SC1 beads are close (the fit bonds them
        frame by frame, the output topology those of at least half of the
        leading frames). False leaves every cysteine free.
    virtual_sites : sequence of int
        Input particles that are no beads (an OpenMM System's virtual sites,
        placed from other particles: :meth:`from_openmm` gives them), left
        out of their residues, with a note (Martini 3 input: by their names).

    Attributes
    ----------
    protein : ProteinTopology
        Residue-level topology.
    all_atom : bool
        The input is all-atom (:func:`holds_all_atoms`), not coarse-grained.
    n_chains : int
        Chains of the input (chain ids may repeat).
    topology : mdtraj.Topology
        The all-atom (heavy-atom) output topology.
    report : list of str
        What was dropped or renamed in the input, and notes on chain breaks.
    bead_fit : BeadFit
        Bead RMSD of every structure :meth:`build` made (the output mapped
        back to beads against the input beads).
    disulfides : dict
        ``("A CYS 23", "A CYS 88") -> n``: cysteine pairs of the output
        topology bonded by :meth:`build` in ``n`` structures (from Martini 3
        beads: those in which the fit bonded them, their SC1 beads close).
    """

    def __init__(
        self,
        topology,
        frames: np.ndarray,
        mapping: str | Mapping = "auto",
        method: str | None = None,
        samples: int = 1,
        seed: int = 0,
        device: str = "auto",
        break_distance: float | None = None,
        source: str = "input",
        frame: int = 0,
        model: str | None = None,
        temperature: float | None = None,
        box=None,
        springs=None,
        disulfides: bool = True,
        virtual_sites=(),
    ):
        check_backmap_options(method, samples, model, temperature, break_distance, seed, mapping, device)
        if not isinstance(topology, md.Topology):
            raise TypeError(f"Backmapper: topology must be an mdtraj.Topology, got {type(topology).__name__}; for an "
                            "OpenMM Topology and positions use Backmapper.from_openmm(topology, positions)")
        self._n_input_atoms = topology.n_atoms
        frames = _frames_in_angstrom(frames, topology.n_atoms, source)
        atom_names = [a.name for a in topology.atoms]
        box = None if box is None else np.asarray(box)
        if _reads_martini(mapping, topology, source):
            from backmap_plugin.build.martini import BREAK_DISTANCE as BREAK_DISTANCE_MARTINI
            from backmap_plugin.io.martini import martini_residues

            intake = martini_residues(topology, source, frames[0])
            records, self.report = intake.records, list(intake.report)
            self.mapping = get_mapping("martini3")
            skipped = ", ".join(f"{k} {n}" for k, n in intake.skipped.items())
            self.mapping_evidence = (f"Martini 3 protein beads (BB, SC1 ...): {len(records)} residues"
                                     + (f"; left out: {skipped}" if skipped else ""))
            self._reader = MartiniBeadReader(intake)
            self._topology_cystines = _cystine_bonds(topology, intake.bead_index, self._reader.res_type)
            default_break = BREAK_DISTANCE_MARTINI
        else:
            records, self.report = read_residues(topology, source, ignored=virtual_sites)
            if len(virtual_sites):
                self.report.append(f"left out {len(virtual_sites)} virtual site(s) (particles the system places "
                                   "from others: no beads)")
            if not records:
                unknown = sorted({r.name for r in topology.residues
                                  if r.name.strip().upper() in chem.UNKNOWN_AMINO_ACID})
                hint = (f": residues named {', '.join(unknown)} do not say their amino acid; "
                        f"{chem.SEQUENCE_FROM_NAMES}") if unknown else ""
                raise BackmapInputError(f"{source}: no protein residues found"
                                        + (f" ({'; '.join(self.report)})" if self.report else "") + hint)
            if len(records) == 1:
                one = records[0]
                raise BackmapInputError(f"{source}: one residue in all ({one.label()}): a bead alone does not say "
                                        "how its backbone lies; at least two residues are needed")
            self.mapping, self.mapping_evidence = resolve_mapping(mapping, records, atom_names, frames, box,
                                                                  source, frame, springs)
            self._reader = BeadReader(records, self.mapping, source, atom_names)
            self._topology_cystines = None
            default_break = BREAK_DISTANCE_CA if self.mapping.bead_is_ca else BREAK_DISTANCE_OTHER
        self.all_atom = not self.mapping.name == "martini3" and holds_all_atoms(records)
        method = method or default_method(self.mapping, model)
        if samples > 1 and (method == "ideal" or temperature == 0):
            why = "the ideal builder is deterministic" if method == "ideal" else "temperature 0 gives one structure"
            self.report.append(f"the {samples} samples of a frame are the same structure: {why}")
        default_break_used = break_distance is None
        if default_break_used:
            break_distance = default_break
        self.method, self.samples, self.seed = method, samples, seed
        self.device = select_device(device)
        self.source = source
        self._build = make_builder(method, model, self.device, temperature, samples, self.mapping, disulfides)
        self._chain = np.array([r.chain for r in records])
        self.n_chains = len(np.unique(self._chain))  # (chain ids may repeat: mdtraj writes A-Z, then A again)
        self._labels = [r.label() for r in records]
        self._break_distance = break_distance
        leading_beads = self._reader.beads(frames)
        leading = self._anchors(leading_beads)
        _check_finite_beads(leading, self._labels, source, frame)
        leading = self._whole(leading, box, frame)
        beads = leading[0]
        limits = break_distance
        if default_break_used and self.mapping.name == "com":  # C-alpha and Martini BB beads: the distance tells
            limits = bonded_bead_limits(self.mapping, records, break_distance)
        limits = np.broadcast_to(np.asarray(limits, dtype=np.float32), (max(0, len(records) - 1),))
        ff_bonded = _bonded_by_force_field(springs, records) if default_break_used else None
        ff_apart = _unbonded_by_force_field(springs, records) if default_break_used else None
        reach = MAX_STRETCH_ADVISED * default_break  # (how far bonded beads stretch)
        if ff_bonded is not None:  # residues the force field bonds are bonded as far as a soft bond stretches;
            # those it does not bond in a chain it bonds are apart, however close (molecules one after another)
            limits = np.where(ff_bonded, reach, limits)
            limits = np.where(ff_apart, -np.inf, limits).astype(np.float32)
        self._limits = limits
        # bonded or not by the median distance over the leading frames (touching molecules numbered on lie apart
        # in most of them, a soft bond stretches past the limit now and then)
        spacing = bead_spacing(leading)
        if ff_bonded is not None:
            _check_force_field_bonds(spacing, ff_bonded, reach, self._labels, source, frame, len(leading),
                                     box is not None)
        self.protein = protein_topology(records, leading, limits)
        if self.mapping.name == "com":  # (C-alpha atoms and BB beads across a gap lie too far apart to bond)
            self.report += _numbering_gap_notes(records, spacing, limits, break_distance, self.protein.segment)
        self.report += _consecutive_break_notes(self.protein, self._chain, spacing, frame, len(leading),
                                                break_distance, ff_apart, default_break, box is not None)
        if self.mapping.name != "com":  # (bonded centres of mass lie 2.8-8.7 A apart: their distance tells not)
            self.report += _cyclic_chain_notes(self.protein, self._chain, leading)
        if self.mapping.name == "ca":
            self.report += _mirror_image_notes(self.protein, self._chain, leading)
        names = set(self.protein.names)
        if len(names) == 1 and self.protein.n_residues >= HOMOPOLYMER_NOTE_LENGTH:
            self.report.append(f"every one of the {self.protein.n_residues} residues is {names.pop()}: if the CG "
                               "program names all its beads alike, the side chains built are not the protein's "
                               "(give a topology with the sequence)")
        check_trace(beads, self.protein, source, frame)
        if default_break_used:
            _check_chains_hold_together(spacing, self.protein, self._chain, source, frame, len(leading),
                                        break_distance, ff_apart, box is not None)
        self.bead_fit = BeadFit(self.mapping, self.protein)
        self.disulfides: dict = {}  # (label, label) -> structures in which the pair was bonded
        self._structures_built = 0
        self._evened = None  # [structures, short peptides, largest C-alpha-to-bead distance in A, structures fitted]
        self._strained = 0  # structures built on centres of mass alone fitted for their strained backbones
        self._disulfides_wanted = disulfides
        self.choose_disulfides(frames, frame, box)

    @classmethod
    def from_openmm(cls, topology, positions, system=None, **kwargs) -> "Backmapper":
        """Make a Backmapper from an OpenMM ``Topology`` and positions.

        Parameters
        ----------
        topology : openmm.app.Topology
        positions : openmm.unit.Quantity or numpy.ndarray
            Positions of one frame (a numpy array is taken as nm).
        system : openmm.System, optional
            The CG system: the residues its bonds join are bonded, as far as
            bonded beads stretch, and the equilibrium lengths of its harmonic
            bonds are evidence for ``mapping='auto'``; with the topology's
            bonds (:func:`~backmap_plugin.io.frames.bonds_from_openmm`). Its
            default periodic box is the frames' box where it is periodic and
            the topology gives none; its virtual sites are no beads
            (``virtual_sites``).
        **kwargs
            As for :class:`Backmapper` (``box`` in Angstrom; default the
            topology's periodic box, else the system's).
        """
        kwargs.setdefault("source", "OpenMM topology")
        top, xyz = frames_from_openmm(topology, positions, source=kwargs["source"])
        kwargs.setdefault("springs", bonds_from_openmm(system, top))
        if system is not None:
            kwargs.setdefault("virtual_sites", [i for i in range(system.getNumParticles()) if system.isVirtualSite(i)])
        if "box" not in kwargs:
            kwargs["box"] = _openmm_box(topology, system, len(xyz))
        return cls(top, xyz, **kwargs)

    @staticmethod
    def _anchors(beads: np.ndarray) -> np.ndarray:
        """(F, R, 3): the beads, or of Martini beads (F, R, B, 3) the BB beads (NaN where any bead of the residue is not finite)."""
        if beads.ndim == 3:
            return beads
        finite = np.isfinite(beads).all(axis=(-1, -2))
        return np.where(finite[..., None], beads[:, :, 0], np.nan).astype(beads.dtype)

    def _whole_martini(self, beads: np.ndarray, box, first_index: int) -> np.ndarray:
        """Martini beads with chains whole: BB beads unwrapped along each chain, side-chain beads to the image nearest their BB."""
        from backmap_plugin.core.pbc import bond_images

        anchors = beads[:, :, 0]
        whole = self._whole(anchors, box, first_index)
        out = beads + (whole - anchors)[:, :, None]
        vectors = box_matrices(box, len(beads))
        if vectors is not None:
            delta = (out[:, :, 1:] - out[:, :, :1]).reshape(len(out), -1, 3)
            shift = (bond_images(delta, vectors) @ vectors).reshape(out[:, :, 1:].shape)
            out[:, :, 1:] += shift.astype(out.dtype)
        return out

    def _whole(self, beads: np.ndarray, box, first_index: int) -> np.ndarray:
        """Beads with every chain made whole across the periodic box and the chains gathered (see
        :func:`~backmap_plugin.core.pbc.make_whole`)."""
        return make_whole(beads, box, self._chain, max_bond=self._break_distance, labels=self._labels,
                          first_frame=first_index, source=self.source, gather=True)

    def _built(self, xyz: np.ndarray, first_index: int, box) -> tuple[torch.Tensor, torch.Tensor]:
        """The builder's (F, S, R, N_SLOTS, 3) structures of input frames (Angstrom), and their beads, checked and
        made whole."""
        beads = self._reader.beads(np.asarray(xyz, dtype=np.float32))
        _check_finite_beads(self._anchors(beads), self._labels, self.source, first_index)  # before unwrapping them
        if beads.ndim == 3:
            beads = self._whole(beads, box, first_index)
        else:
            beads = self._whole_martini(beads, box, first_index)
        _check_close_beads(self._anchors(beads), self.protein, self.source, first_index)
        self._check_bonded_beads(self._anchors(beads), first_index)
        beads = torch.as_tensor(beads, device=self.device)
        trace = self._even_trace(beads)[0] if self.mapping.bead_is_ca else beads
        seeds = self.seed * 1_000_003 + first_index + np.arange(len(beads))
        per_pass = max(1, RESIDUES_PER_PASS // self.protein.n_residues)
        with torch.no_grad():
            atoms = torch.cat([self._build(trace[k : k + per_pass], self.protein, self.mapping, self.samples,
                                           seeds[k : k + per_pass]) for k in range(0, len(beads), per_pass)])
            atoms = self._fit_coarse_grained(atoms, beads, per_pass)
            atoms = _relieve_across_box(atoms, self.protein, box_matrices(box, len(beads)))
        return atoms, beads

    def _fit_coarse_grained(self, atoms: torch.Tensor, beads: torch.Tensor, per_pass: int) -> torch.Tensor:
        """Structures (F, S, R, N_SLOTS, 3) with those built on a coarse-grained simulation's beads (F, R, 3), or
        strained on centres of mass, given backbones a protein can have near their beads
        (:func:`~backmap_plugin.build.cg_backbone.fit_backbone_to_beads`, the structures of
        :func:`~backmap_plugin.build.cg_backbone.structures_to_fit`)."""
        from backmap_plugin.build.cg_backbone import (
            fit_backbone_to_beads,
            fit_settings,
            mixes_beads,
            structures_to_fit,
        )

        chosen = structures_to_fit(atoms, beads, self.protein, self.mapping)  # (F, S)
        if not bool(chosen.any()):
            return atoms
        if self.mapping.name == "com" and not mixes_beads(self.mapping, self.protein.n_residues):
            self._strained += int(chosen.sum())
        weights, bead_weight = fit_settings(self.mapping, self.protein)
        picked = atoms[chosen]
        targets = beads[:, None].expand(-1, atoms.shape[1], -1, -1)[chosen]
        fitted = torch.cat([fit_backbone_to_beads(picked[k : k + per_pass], targets[k : k + per_pass], self.protein,
                                                  weights, bead_weight) for k in range(0, len(picked), per_pass)])
        atoms = atoms.clone()
        atoms[chosen] = fitted.to(atoms.dtype)
        return atoms

    def _even_trace(self, beads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """C-alpha beads (F, R, 3) with the frames whose bonds fluctuate brought to peptide distances, and those
        frames (F,) (:func:`~backmap_plugin.build.ideal.even_noisy_traces`)."""
        from backmap_plugin.build.ideal import even_noisy_traces

        same = torch.as_tensor(self.protein.segment[1:] == self.protein.segment[:-1], device=beads.device)
        return even_noisy_traces(beads, same)

    def choose_disulfides(self, xyz: np.ndarray, first_index: int = 0, box=None) -> None:
        """Choose the cysteine pairs of the run, and with them :attr:`topology`, from these leading frames.

        Made with the frames the Backmapper was made with; the OpenMM
        reporter chooses again with its first batch, before it writes.

        Parameters
        ----------
        xyz : numpy.ndarray
            (F, n_input_atoms, 3) input coordinates, Angstrom.
        first_index : int
            Index of ``xyz[0]`` in the whole input (seeds, messages).
        box : numpy.ndarray, optional
            Periodic box of each frame.
        """
        beads = self._reader.beads(np.asarray(xyz, dtype=np.float32))
        # residue of a chosen pair -> others it could bond (the pairing a guess)
        self._disulfide_pairs, self._other_partners = np.zeros((0, 2), dtype=np.int64), {}
        # Martini 3: the pairs the output bonds (the fit bonds the cysteines its beads bond, frame by frame), and
        # the leading frames' SC1-SC1 distances of every cysteine pair (for the note)
        self._bead_pairs, self._bead_distances = np.zeros((0, 2), dtype=np.int64), None
        self._leading = None
        if self._disulfides_wanted and self.mapping.name == "martini3":
            self._choose_bead_disulfides(self._whole_martini(beads, box, first_index))
        elif self._disulfides_wanted:
            anchors = self._whole(self._anchors(beads), box, first_index)
            self._disulfide_pairs, self._other_partners = self._choose_disulfides(xyz, first_index, box, anchors)
        self.topology = self.protein.to_mdtraj(self._bead_pairs if self.mapping.name == "martini3"
                                               else self._disulfide_pairs)

    def _choose_disulfides(self, frames: np.ndarray, first_index: int, box, anchors: np.ndarray) -> tuple:
        """(P, 2) the cysteine pairs every structure of the run may bond: those bonded in at least half of the
        leading frames' structures (:func:`~backmap_plugin.build.disulfides.common_disulfides`), so that all
        frames of a trajectory get the same bonds; none where no two cysteines' beads (``anchors``: (F, R, 3),
        the leading frames' beads made whole) lie within :data:`DISULFIDE_BEAD_REACH` (the frames are not built
        then); and the other partners of their cysteines (the pairing a guess there)."""
        from backmap_plugin.build.disulfides import common_disulfides

        cys = np.nonzero(self.protein.res_type == chem.RESIDUE_INDEX["CYS"])[0]
        anchors = anchors[:, cys]
        near = np.linalg.norm(anchors[:, :, None] - anchors[:, None], axis=-1) < DISULFIDE_BEAD_REACH
        if not (near & ~np.eye(len(cys), dtype=bool)).any():
            return np.zeros((0, 2), dtype=np.int64), {}
        xyz = np.asarray(frames, dtype=np.float32)
        atoms, beads = self._built(xyz, first_index, box)
        # :meth:`build` takes these structures again for these frames (they are built before the pairs are closed)
        self._leading = (first_index, xyz, box, atoms, beads)
        return common_disulfides(atoms.flatten(0, 1), self.protein)

    def _built_again(self, xyz: np.ndarray, first_index: int, box) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_built` of these frames, taking the structures of the leading frames that
        :meth:`_choose_disulfides` built where the batch starts with one of those same frames (the reporter and
        :func:`backmap` build them next, in one batch or several; a resumed run from where it stopped, so that
        its frames are those the uninterrupted run made to the last bit)."""
        leading, self._leading = self._leading, None
        xyz = np.asarray(xyz, dtype=np.float32)
        if leading is None or not 0 <= first_index - leading[0] < len(leading[1]):
            return self._built(xyz, first_index, box)
        start, known, known_box, atoms, beads = leading
        skip = first_index - start
        known, known_box, atoms, beads = known[skip:], _frames_of(known_box, skip), atoms[skip:], beads[skip:]
        n = min(len(known), len(xyz))
        if not (np.array_equal(known[:n], xyz[:n]) and _same_boxes(known_box, box, n)):
            return self._built(xyz, first_index, box)
        if n < len(known):  # the next batch may start with the others
            self._leading = (first_index + n, known[n:], _frames_of(known_box, n), atoms[n:], beads[n:])
        if n == len(xyz):
            return atoms[:n], beads[:n]
        rest_atoms, rest_beads = self._built(xyz[n:], first_index + n, _frames_of(box, n))
        return torch.cat([atoms[:n], rest_atoms]), torch.cat([beads[:n], rest_beads])

    def _choose_bead_disulfides(self, beads: np.ndarray) -> None:
        """Martini 3: the output topology bonds the cysteine pairs whose SC1 beads are bonded in at least
        :data:`~backmap_plugin.build.disulfides.COMMON_SHARE` of the leading frames (``beads``: theirs, made whole
        as the fit gets them) (:func:`~backmap_plugin.build.martini.disulfide_pairs`, as the fit bonds them frame
        by frame); every cysteine pair's SC1-SC1 distances there are kept for :meth:`disulfide_note`."""
        from backmap_plugin.build.disulfides import COMMON_SHARE
        from backmap_plugin.build.martini import cysteine_bead_distances, disulfide_pairs

        pairs, bonded = disulfide_pairs(torch.as_tensor(beads), self.protein)
        self._bead_pairs = np.asarray(pairs.cpu().numpy(), dtype=np.int64).reshape(-1, 2)[
            bonded.cpu().numpy().mean(0) >= COMMON_SHARE]
        self._bead_distances = cysteine_bead_distances(beads, self.protein)

    def _tally_bead_disulfides(self, beads: torch.Tensor, samples: int) -> None:
        """Count in :attr:`disulfides` the structures in which the Martini 3 fit bonded the output's pairs
        (``beads``: the frames' beads as the fit got them)."""
        from backmap_plugin.build.martini import disulfide_pairs

        pairs, bonded = disulfide_pairs(beads, self.protein)
        frames = dict(zip(map(tuple, pairs.tolist()), bonded.sum(0).tolist()))
        for a, b in self._bead_pairs.tolist():
            if frames.get((a, b), 0):
                key = (self._cysteine(a), self._cysteine(b))
                self.disulfides[key] = self.disulfides.get(key, 0) + frames[(a, b)] * samples

    def _close_disulfides(self, atoms: torch.Tensor, tally: bool) -> torch.Tensor:
        """(F, S, R, N_SLOTS, 3) with the run's cysteine pairs bonded where they can meet
        (:func:`~backmap_plugin.build.disulfides.close_disulfides`), counted in :attr:`disulfides`."""
        from backmap_plugin.build.disulfides import close_disulfides

        closed, pairs, bonded = close_disulfides(atoms.flatten(0, 1), self.protein, self._disulfide_pairs)
        if tally:
            for (a, b), count in zip(pairs.tolist(), bonded.sum(0).tolist()):
                if count:
                    key = (self._cysteine(a), self._cysteine(b))
                    self.disulfides[key] = self.disulfides.get(key, 0) + count
        return closed.view_as(atoms)

    def tallies(self) -> dict:
        """What :meth:`build` counted so far (bead RMSDs, disulfides closed), for :meth:`restore_tallies`."""
        return {"bead_fit": self.bead_fit.state(), "structures_built": self._structures_built,
                "disulfides": [[a, b, n] for (a, b), n in self.disulfides.items()],
                "evened": self._evened, "strained": self._strained}

    def restore_tallies(self, tallies: dict | None, before_frame: int, whole: bool) -> None:
        """Take back an interrupted run's :meth:`tallies` of the input frames before ``before_frame``; its
        disulfide counts only where it kept all its frames (``whole``)."""
        if not tallies:
            return
        self.bead_fit.restore(tallies["bead_fit"], before_frame)
        if whole:
            self._structures_built += tallies["structures_built"]
            self._evened = _merge_evened(self._evened, tallies.get("evened"))
            self._strained += tallies.get("strained", 0)
            for a, b, n in tallies["disulfides"]:
                self.disulfides[(a, b)] = self.disulfides.get((a, b), 0) + n

    def _cysteine(self, k: int) -> str:
        """Residue ``k`` as disulfides are named, e.g. ``A CYS 23`` (``A CYS 23A`` with an insertion code)."""
        return f"{self.protein.chain_ids[k] or '?'} {self.protein.names[k]} {self.protein.residue_id(k)}"

    def _tally_evened(self, beads: torch.Tensor, atoms: torch.Tensor) -> None:
        """Count the structures (F, S, R, N_SLOTS, 3) built on traces :meth:`_even_trace` evened, the peptides
        among them whose beads (F, R, 3) were close enough for the builders to make them cis, those whose backbones
        were fitted (:meth:`_fit_coarse_grained`), and the largest distance of a C-alpha atom from its bead."""
        from backmap_plugin.build.backbone import MIN_PEPTIDE_LENGTH, NOISY_CIS_LENGTH, NOISY_TRACE_SPREAD, trace_spread
        from backmap_plugin.build.cg_backbone import CG_TRACE_SPREAD

        same = torch.as_tensor(self.protein.segment[1:] == self.protein.segment[:-1], device=beads.device)
        spread = trace_spread(beads, same)  # (noisy_traces and coarse_grained_traces, computed once)
        noisy = spread > NOISY_TRACE_SPREAD
        if bool(noisy.any()):
            samples = atoms.shape[1]
            distance = torch.linalg.vector_norm(beads[noisy, 1:] - beads[noisy, :-1], dim=-1)
            short = same & (distance >= NOISY_CIS_LENGTH) & (distance < MIN_PEPTIDE_LENGTH)
            ca = atoms[noisy][..., chem.SLOT_CA, :].to(beads.dtype)
            moved = torch.linalg.vector_norm(ca - beads[noisy, None], dim=-1)
            fitted = int((spread > CG_TRACE_SPREAD).sum())
            now = [int(noisy.sum()) * samples, int(short.sum()) * samples, float(moved.max()), fitted * samples]
            self._evened = _merge_evened(self._evened, now)

    def notes(self) -> list[str]:
        """Notes on what :meth:`build` did so far: the disulfides (:meth:`disulfide_note`), the backbones fitted to
        a CALVADOS 3 chain's beads or strained on centres of mass, and the C-alpha traces whose bonds fluctuate that
        it evened ([] when none)."""
        from backmap_plugin.build.backbone import MIN_PEPTIDE_LENGTH, NOISY_CIS_LENGTH, NOISY_TRACE_SPREAD
        from backmap_plugin.build.cg_backbone import (
            CG_TRACE_SPREAD,
            MISSED_BEADS,
            STRAINED_FRACTION,
            STRAINED_PENALTY,
            mixes_beads,
        )

        notes = self.disulfide_note()
        if self._structures_built and mixes_beads(self.mapping, self.protein.n_residues):
            notes.append("backbones fitted near the beads (centres of mass and C-alpha beads in one chain: a "
                         "coarse-grained run's), to ideal N-CA-C angles and favoured Ramachandran dihedrals")
        if self._strained:
            notes.append(f"{self._strained} of {self._structures_built} structure(s) built on the centres of mass had "
                         f"more than {100 * STRAINED_FRACTION:g} % of their residues far outside the favoured "
                         f"Ramachandran region ({STRAINED_PENALTY:g} log10 density units below its contour) or missed "
                         f"the beads by more than {MISSED_BEADS:g} A (a coarse-grained run's beads leave them so): "
                         "their backbones fitted near the beads, to ideal N-CA-C angles and favoured Ramachandran "
                         "dihedrals")
        if self._evened:
            count, short, largest, fitted = self._evened
            notes.append(
                f"{count} of {self._structures_built} structure(s) built on C-alpha beads whose bonded distances "
                f"spread more than {NOISY_TRACE_SPREAD:g} A (an all-atom trajectory's up to about 0.09 A, a "
                f"coarse-grained simulation's 0.15-0.2): their C-alpha atoms held 3.8 A apart, as peptides hold them "
                f"(cis where the beads were closer than {NOISY_CIS_LENGTH:g} A)"
                + (f"; {fitted} of them, spread more than {CG_TRACE_SPREAD:g} A, with backbones fitted to ideal "
                   "N-CA-C angles and favoured Ramachandran dihedrals near the beads" if fitted else "")
                + f"; C-alpha atoms at most {largest:.2f} A from their beads"
                + (f"; {short} peptide(s) whose beads were {NOISY_CIS_LENGTH:g}-{MIN_PEPTIDE_LENGTH:g} A apart built "
                   "trans, not cis" if short else ""))
        return notes

    def disulfide_note(self) -> list[str]:
        """Notes on the disulfides :meth:`build` closed so far, and on cysteines that could have bonded another
        partner ([] when none); from Martini 3 beads (once :meth:`build` made a structure), the pairs the output
        bonds with their SC1-SC1 distances in the leading frames, the pairs left free whose beads come close,
        and whether the input topology bonds the same pairs."""
        if self._bead_distances is not None:
            return self._bead_disulfide_note() if self._structures_built else []
        if not self.disulfides:
            return []
        pairs = ", ".join(f"{a} - {b}"
                          + (f" (in {n} of {self._structures_built})" if n < self._structures_built else "")
                          for (a, b), n in self.disulfides.items())
        notes = [f"disulfides closed (cysteine pairs whose SG atoms can meet): {pairs}"]
        if self._other_partners:
            crowded = sorted(set(self._other_partners).union(*self._other_partners.values()))
            by_chain: dict = {}
            for k in crowded:
                by_chain.setdefault(self.protein.chain_ids[k] or "?", []).append(self.protein.residue_id(k))
            which = "; ".join(f"{chain} CYS {', '.join(numbers)}" for chain, numbers in by_chain.items())
            notes.append(f"disulfide pairing a guess where cysteines crowd (each of these could bond another of them "
                         f"as well): {which}; compare the pairs closed with the protein's known disulfides "
                         f"({_ALL_FREE})")
        return notes

    def _bead_disulfide_note(self) -> list[str]:
        """:meth:`disulfide_note` from Martini 3 beads."""
        from backmap_plugin.build.disulfides import COMMON_SHARE
        from backmap_plugin.build.martini import DISULFIDE_BEAD_DISTANCE as CUTOFF
        from backmap_plugin.build.martini import DISULFIDE_NEAR_MISS

        every, distance = self._bead_distances
        n = len(distance)
        within = (distance < CUTOFF).sum(0)
        closed = {tuple(p) for p in self._bead_pairs.tolist()}
        index = {tuple(p): k for k, p in enumerate(every.tolist())}

        def named(pairs) -> str:
            return ", ".join(f"{self._cysteine(a)} - {self._cysteine(b)}" for a, b in pairs)

        def measured(k: int, extra: str = "") -> str:
            a, b = every[k]
            d = distance[:, k]
            low, high = f"{d.min():.2f}", f"{d.max():.2f}"
            seen = f"{low} A" if low == high else f"{low}-{high} A"
            seen += "" if n == 1 else f", {within[k]} of {n}"
            return f"{named([(a, b)])} ({seen}{extra})"

        where = f"within {CUTOFF:g} A" + ("" if n == 1 else f" in at least {COMMON_SHARE:.0%} of the first {n} frames")
        shown = "SC1-SC1 distance" + ("" if n == 1 else f" there, frames within {CUTOFF:g} A")
        notes = []
        if closed:
            made = []
            for pair in sorted(closed):
                count = self.disulfides.get((self._cysteine(pair[0]), self._cysteine(pair[1])), 0)
                made.append(measured(index[pair], f"; bonded in {count} of {self._structures_built} structures"
                                     if count < self._structures_built else ""))
            notes.append(f"disulfides closed (Martini 3 cysteine pairs whose SC1 beads lie {where}; {shown}): "
                         + ", ".join(made))
        bonded = {k for pair in closed for k in pair}
        near = [k for k in np.argsort(distance.min(0), kind="stable")
                if distance[:, k].min() < DISULFIDE_NEAR_MISS and not bonded.intersection(every[k].tolist())]
        if near:
            notes.append(f"free cysteine pairs whose SC1 beads come within {DISULFIDE_NEAR_MISS:g} A "
                         f"({shown}): {', '.join(measured(k) for k in near)}: the {CUTOFF:g} A cutoff decided, "
                         "not the protein's disulfides; compare with its known ones (no option bonds a pair the "
                         f"cutoff leaves free; {_ALL_FREE})")
        known = self._topology_cystines
        if known is not None and closed and known == closed:
            notes[0] += "; the input topology bonds the same pairs (SC1-SC1)"
        elif known is not None and closed and not known:
            notes.append("the input topology bonds no cysteine pair (made without disulfides, e.g. martinize2 -cys "
                         f"none), but the SC1 bead distance closed {named(sorted(closed))} ({_ALL_FREE})")
        elif known is not None and known != closed:
            only_here, only_there = sorted(closed - known), sorted(known - closed)
            parts = ([f"closed, not in the topology: {named(only_here)}"] if only_here else []) + (
                [f"in the topology, not closed: {named(only_there)}"] if only_there else [])
            notes.append(f"the disulfides closed differ from the input topology's cystine bonds (SC1-SC1): "
                         f"{'; '.join(parts)}; the SC1 bead distance decides, not the topology ({_ALL_FREE}"
                         + ("; no option bonds a pair)" if only_there else ")"))
        return notes

    def _check_bonded_beads(self, anchors: np.ndarray, first_index: int) -> None:
        """Raise where two residues taken as bonded lie more than :data:`STRETCH_FACTOR` times the break distance
        apart: not bonded after all (two molecules that touched in the leading frames, numbered on)."""
        bonded = self.protein.segment[1:] == self.protein.segment[:-1]
        distance = np.linalg.norm(np.diff(anchors, axis=1), axis=-1)
        stretched = bonded & (distance > STRETCH_FACTOR * self._limits)
        if stretched.any():
            frame, i = (int(k) for k in np.argwhere(stretched)[0])
            raise BackmapInputError(
                f"{self.source}: frame {first_index + frame}: the beads of {self.protein.labels[i]} and "
                f"{self.protein.labels[i + 1]} are {distance[frame, i]:.1f} A apart, but were close enough to be "
                f"bonded in the first frames (at most {self._limits[i]:.1f} A): either the frame is broken (a "
                "simulation that blew up, a damaged file: look at it), or they are not bonded (molecules numbered "
                "on, that touched: give a topology with the molecules apart, by chain ids, numbers that restart or "
                "the run's .tpr, or a --break-distance that breaks them)"
            )

    @property
    def n_atoms(self) -> int:
        """Number of heavy atoms in each output structure."""
        return self.protein.n_atoms

    def build(self, xyz: np.ndarray, first_index: int = 0, box=None, tally: bool = True) -> np.ndarray:
        """Backmap a batch of input frames.

        Parameters
        ----------
        xyz : numpy.ndarray
            (F, n_input_atoms, 3) input coordinates, Angstrom (one frame may be
            given as (n_input_atoms, 3)).
        first_index : int
            Index of the first frame in the whole input: frame ``k`` is
            seeded with ``(seed, first_index + k)``, so results do not depend
            on how the input is cut into batches (the builder gets at most
            :data:`RESIDUES_PER_PASS` residues at a time).

        box : numpy.ndarray, optional
            Periodic box of each frame (see :func:`~backmap_plugin.core.pbc.make_whole`).
        tally : bool
            Add the structures' bead RMSD to :attr:`bead_fit` (False for a
            frame built twice, e.g. to start an output file).

        Returns
        -------
        numpy.ndarray
            (F * samples, n_atoms, 3) float32, frame-major (frame 0 samples
            0..N-1, then frame 1 ...).

        Raises
        ------
        BackmapInputError
            A frame with non-finite or coincident beads (:func:`check_beads`),
            before anything is built; the message names the input, the frame
            (``first_index`` + its place in the batch), chain and residues.
        """
        xyz = _frames_in_angstrom(xyz, self._n_input_atoms, self.source)
        atoms, beads = self._built_again(xyz, first_index, box)
        if len(self._disulfide_pairs):
            atoms = self._close_disulfides(atoms, tally)
        elif tally and len(self._bead_pairs):
            self._tally_bead_disulfides(beads, atoms.shape[1])
        if tally:
            self._structures_built += atoms.shape[0] * atoms.shape[1]
            self.bead_fit.add(atoms, beads, first_index)
            if self.mapping.bead_is_ca:
                self._tally_evened(beads, atoms)
        return self.protein.scatter(atoms).reshape(-1, self.n_atoms, 3).cpu().numpy()


def _relieve_across_box(atoms: torch.Tensor, protein: ProteinTopology, vectors: np.ndarray | None) -> torch.Tensor:
    """Structures (F, S, R, N_SLOTS, 3) with the clashes between periodic images relieved (F, 3, 3) ``vectors``
    (:func:`~backmap_plugin.build.ideal.relieve_periodic_clashes`); as they are without a box."""
    if vectors is None or not np.abs(vectors).any():
        return atoms
    flat = atoms.reshape(-1, *atoms.shape[2:])
    return relieve_periodic_clashes(flat, protein, np.repeat(vectors, atoms.shape[1], axis=0)).reshape(atoms.shape)


def _merge_evened(a: list | None, b: list | None) -> list | None:
    """Two tallies ``[structures, short peptides, largest move, structures fitted]`` of :meth:`Backmapper.notes` as
    one."""
    if not a or not b:
        return a or b
    return [a[0] + b[0], a[1] + b[1], max(a[2], b[2]), a[3] + b[3]]


def _frames_in_angstrom(xyz, n_atoms: int, source: str) -> np.ndarray:
    """(F, n_atoms, 3) float32 of the plain Angstrom coordinates :class:`Backmapper` takes, ``(n_atoms, 3)`` or
    ``(F, n_atoms, 3)`` (:func:`~backmap_plugin.io.frames.frames_of_shape`); a quantity with a unit refused."""
    if hasattr(xyz, "value_in_unit"):
        raise BackmapInputError(f"{source}: coordinates with a unit ({xyz.unit}); Backmapper takes plain numbers in "
                                "Angstrom: pass xyz.value_in_unit(openmm.unit.angstrom), or make it with "
                                "Backmapper.from_openmm")
    return frames_of_shape(xyz, n_atoms, source)


def _openmm_box(topology, system, n_frames: int) -> np.ndarray | None:
    """(n_frames, 3, 3) periodic box in Angstrom of an OpenMM topology (or mdtraj's), else of a periodic system
    (its default box: hand-built systems often set it there only), else None."""
    from openmm import unit

    vectors = topology.getPeriodicBoxVectors() if hasattr(topology, "getPeriodicBoxVectors") else None
    if vectors is None and system is not None and system.usesPeriodicBoundaryConditions():
        vectors = system.getDefaultPeriodicBoxVectors()
    if vectors is None:
        return None
    box = np.array([v.value_in_unit(unit.angstrom) for v in vectors], dtype=np.float32)
    return np.repeat(box[None], n_frames, axis=0)


def _frames_of(box, start: int):
    """The boxes of the frames from ``start`` on: ``box`` as :meth:`Backmapper.build` takes it (None, one ``(3,)``
    box for every frame, or one per frame)."""
    if box is None or np.ndim(box) == 1:
        return box
    return np.asarray(box)[start:]


def _same_boxes(a, b, n: int) -> bool:
    """Whether boxes ``a`` and ``b`` (as :meth:`Backmapper.build` takes them) are those of the same first ``n``
    frames (boxes given otherwise count as other boxes)."""
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 1 or b.ndim == 1:
        return np.array_equal(a, b)
    return np.array_equal(a[:n], b[:n])


def _leading_frames(source, first: FrameChunk, count: int) -> FrameChunk:
    """The source's first ``count`` frames (or all there are), read again only when its first chunk holds fewer.

    The mapping is detected on them, so that the detection, and with it the
    structures, are the same for every ``chunk`` size.
    """
    if len(first.xyz) >= count:
        return FrameChunk(first.start, first.xyz[:count], None if first.box is None else first.box[:count])
    chunks, n = [], 0
    for frames in source:
        chunks.append(frames)
        n += len(frames.xyz)
        if n >= count:
            break
    boxes = [f.box for f in chunks]
    box = None if any(b is None for b in boxes) else np.concatenate(boxes)[:count]  # (a file has a box or none)
    return FrameChunk(first.start, np.concatenate([f.xyz for f in chunks])[:count], box)


def _model_file(model: str | None, mapping: Mapping | None = None) -> str | None:
    """The weights file the ``model`` method uses: ``model``, else the shipped one for the mapping's beads."""
    from backmap_plugin.model.weights import shipped_model_path

    path = model if model is not None else shipped_model_path(model_beads(mapping or get_mapping("ca")))
    return None if path is None else str(path)


def _run_settings(input, top, mapping, method, model, samples, seed, stride, chunk, break_distance,
                  temperature, device, disulfides) -> dict:
    """What determines the output of :func:`backmap`: a resumed run must have the same (a default and the same value
    given count as one: ``method`` None and ``model`` where the default is the model, ``temperature`` None and its
    value for ``samples``)."""
    from backmap_plugin.io.progress import input_fingerprint

    if temperature is None:
        temperature = 0.0 if samples == 1 else 1.0
    if isinstance(mapping, str) and mapping == "auto":
        # decided from the input, which the fingerprint pins; so are the method and model it implies (the model
        # whatever the beads, where the package ships one for every kind)
        name, model_file = "auto", input_fingerprint(model)
        if method is None:
            from backmap_plugin.model.weights import SHIPPED_MODELS, shipped_model_path  # (imports the model code)

            if model is not None or all(shipped_model_path(k) for k in SHIPPED_MODELS):
                method = "model"
    else:
        mapping = get_mapping(mapping)
        name = mapping.name
        method = method or default_method(mapping, model)
        model_file = input_fingerprint(_model_file(model, mapping)) if method == "model" else None
    return {
        "input": input_fingerprint(input), "top": input_fingerprint(top), "mapping": name,
        "method": method, "model": model_file, "samples": samples, "seed": seed, "stride": stride,
        "chunk": chunk, "break_distance": break_distance, "temperature": temperature,
        "device": select_device(device).type, "disulfides": disulfides, "version": __version__,
    }


def _after_failure(writer, record, samples: int, fresh: bool) -> str:
    """Tidy up after a failed run; say what was kept for ``--resume`` ('' when nothing).

    A fresh run that wrote no frame leaves nothing behind: its empty partial
    file is removed (it has no progress record). Otherwise the partial file
    and the progress record of the finished frames stay.
    """
    if fresh and writer.frames_written == 0 and not record.exists():
        if os.path.exists(writer.partial_path):
            os.remove(writer.partial_path)
        return ""
    if writer.frames_written == 0:
        return ""
    done = writer.frames_written // samples
    return (f"the {done} frame(s) finished before were kept in {writer.partial_path} "
            f"(progress record {record.path})")


def backmap(
    input,
    output,
    top=None,
    mapping: str | Mapping = "auto",
    method: str | None = None,
    samples: int = 1,
    seed: int = 0,
    device: str = "auto",
    stride: int = 1,
    chunk: int = 1000,
    break_distance: float | None = None,
    progress: bool = True,
    model: str | None = None,
    temperature: float | None = None,
    overwrite: bool | None = None,
    resume: bool = False,
    disulfides: bool = True,
) -> BackmapResult:
    """Backmap a coarse-grained trajectory to all heavy atoms.

    Parameters
    ----------
    input : str or os.PathLike
        CG (C-alpha, residue centre-of-mass or Martini 3 beads) or all-atom
        structure / trajectory; any format of :mod:`backmap_plugin.io.frames`.
    output : str or os.PathLike
        Output file; format by extension (.pdb, .cif, .dcd, .xtc, .h5).
        Written to a temporary file and moved into place when complete.
    top : str or os.PathLike, optional
        Topology file for trajectory formats without one (DCD, XTC ...).
    mapping : str or Mapping
        ``auto`` (decided from the input's bead names and geometry, see
        :func:`resolve_mapping`; the decision and its evidence are in the
        result), ``ca`` (bead at C-alpha), ``com`` (bead at heavy-atom
        centre of mass) or ``martini3`` (Martini 3 BB and SC beads).
    method : str, optional
        ``model`` (the generative model) or ``ideal`` (deterministic
        geometric builder). Default: ``model`` when the package ships a
        model for the mapping's beads, else ``ideal``.
    samples : int
        Structures written per input frame, frame-major (frame 0 samples
        0..N-1, then frame 1 ...).
    seed : int
        Random seed (each frame seeded from ``seed`` and its index).
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    stride : int
        Use every ``stride``-th input frame.
    chunk : int
        Frames read and built at a time (bounds memory).
    break_distance : float, optional
        Bead distance (Angstrom) above which a chain is split into segments,
        each with its own termini. Default 4.5 for C-alpha beads and 10.0
        for other mappings (bonded residue centres of mass lie up to about
        8.7 apart); for centres of mass, where residue numbers skip, the
        farthest that bonded residues' beads can be (:func:`bonded_bead_limits`).
    progress : bool
        Show a progress bar on stderr.
    model : str, optional
        Trained model file for ``method='model'`` (default: the shipped one).
    temperature : float, optional
        Sampling temperature of the model: 0 gives one deterministic
        structure, the one of least expected error; default 0 for one sample
        per frame, 1 for several.
    overwrite : bool, optional
        Replace an existing output or start an unfinished run over. Default:
        True (like mdtraj's ``save``; the ``backmap run`` command refuses
        unless given ``--overwrite``), False with ``resume``.
    resume : bool
        Continue an interrupted run of the same output with the same
        settings (see :mod:`backmap_plugin.io.progress`); the result is the
        file an uninterrupted run would have written (byte for byte but for
        the creation time in DCD and HDF5 headers). With no output at all,
        start normally; a complete output is refused (nothing to resume).
        With ``overwrite=True`` too (as workflows call it): continue where
        the settings match, else start over, never refuse.
    disulfides : bool
        Bond cysteine pairs whose SG atoms can meet, turning them about their
        CA-CB bonds (:func:`~backmap_plugin.build.disulfides.close_disulfides`),
        with a note naming them; from Martini 3 beads the pairs whose SC1
        beads lie within :data:`~backmap_plugin.build.martini.DISULFIDE_BEAD_DISTANCE`
        in at least half of the leading frames, with a note naming them,
        their bead distances, the free pairs whose beads come close and
        whether the input topology bonds the same pairs; False leaves every
        cysteine free. A C-alpha trace or centres of mass do not say which cysteines
        are bonded: on train crystal structures this bonds 95 % of the
        disulfides, and 13 % of the pairs it bonds are not disulfides there.

    Returns
    -------
    BackmapResult

    Raises
    ------
    BackmapInputError
        For input that cannot be backmapped; the message names the file and
        where it applies the frame, chain and residue. Also for an existing
        output without ``overwrite`` / ``resume``.
    BackmapOutputError
        When writing fails (disk full ...); the frames finished before are
        kept in the partial file, and ``resume=True`` continues from there.

    Warns
    -----
    CutShortWarning
        The input ends inside a frame (cut short, or still being written):
        its whole frames are backmapped and the output is written (a resumed
        run's too) before the warning; :attr:`BackmapResult.cut_short` says
        the same. A later run of the whole file needs ``overwrite=True``.

    Notes
    -----
    While the run goes, finished frames are in a hidden partial file next to
    the output, with a progress record updated after every chunk; both stay
    when the run is interrupted or fails, and the output appears (moved into
    place) only when complete. Each structure of an ``.xtc`` output keeps its
    input frame's step number where the input gives them (XTC, TRR, a DCD
    header), else gets the frame's index in the input (``k * stride``).
    """
    t0 = time.perf_counter()
    check_backmap_options(method, samples, model, temperature, break_distance, seed, mapping, device)
    # numpy numbers (np.random.default_rng().integers() gives them) as Python's: the progress record is JSON
    samples, seed, stride, chunk, break_distance, temperature = (
        value.item() if isinstance(value, np.generic) else value
        for value in (samples, seed, stride, chunk, break_distance, temperature))
    for name, value in (("input", input), ("output", output)):
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"backmap(): {name} must be a file path, got {type(value).__name__}; for coordinates in "
                            "memory use Backmapper(topology, xyz).build(xyz) (xyz in Angstrom)")
    input, output = os.fspath(input), os.fspath(output)
    top = None if top is None else os.fspath(top)
    check_output_path(output, inputs=(input, top))
    with OutputLock(output):  # one run per output: two replaced each other's partial file
        source = open_frames(input, top=top, chunk=chunk, stride=stride)
        record = ProgressRecord(output, _run_settings(input, top, mapping, method, model, samples, seed, stride, chunk,
                                                      break_distance, temperature, device, disulfides))
        replace = (not resume) if overwrite is None else overwrite
        saved = record.resume_point(replace, resume)
        first_new, writer_state, tallies = (0, None, None) if saved is None else (
            saved["frames_done"], saved["writer"], saved.get("tallies"))
        engine = None
        writer = None
        n_frames = 0
        bar = tqdm(total=getattr(source, "n_frames", None), unit="frame", file=sys.stderr, disable=not progress,
                   desc="backmap")
        try:
            for frames in source:
                if engine is None:
                    leading = _leading_frames(source, frames, DETECTION_FRAMES)
                    engine = Backmapper(
                        source.topology, leading.xyz, mapping=mapping, method=method, samples=samples, seed=seed,
                        device=device, break_distance=break_distance, source=input, frame=leading.start, model=model,
                        temperature=temperature, box=leading.box, disulfides=disulfides,
                    )
                    try:
                        writer = TrajectoryWriter(output, engine.topology, resume=writer_state)
                    except BackmapInputError as exc:
                        if writer_state is None or not replace:
                            raise
                        engine.report.append(f"{exc}: started over, as overwrite=True says")  # (partial file gone)
                        record.remove()
                        writer_state, tallies = None, None
                        writer = TrajectoryWriter(output, engine.topology)
                    kept = writer.frames_written // samples  # a writer may keep fewer frames than recorded
                    engine.restore_tallies(tallies, kept, whole=kept == first_new)
                    first_new = kept
                n_frames = frames.start + len(frames.xyz)
                skip = min(max(first_new - frames.start, 0), len(frames.xyz))
                if skip < len(frames.xyz):
                    box = None if frames.box is None else frames.box[skip:]
                    boxes, times, steps = (None if values is None else np.repeat(values[skip:], samples, axis=0)
                                           for values in (frames.box, frames.time, frames.step))  # (per structure)
                    writer.write(engine.build(frames.xyz[skip:], frames.start + skip, box), box=boxes, time=times,
                                 step=steps)
                    record.save(n_frames, writer.frames_written, writer.state(), engine.tallies())
                bar.update(len(frames.xyz))
        except BaseException as exc:
            if writer is not None:
                writer.__exit__(*sys.exc_info())
                kept = _after_failure(writer, record, samples, fresh=writer_state is None)
                if kept and isinstance(exc, BackmapInputError):
                    raise BackmapInputError(f"{exc}; {kept}") from exc
            raise
        finally:
            bar.close()
        if writer is None:
            raise BackmapInputError(f"{input}: no frames to backmap")
        writer.close()
        record.remove()
        cut_short = source.cut_short
        if cut_short:
            cut_short += f"; {output} holds the {n_frames} frame(s) read up to it"
            warnings.warn(cut_short, CutShortWarning, stacklevel=2)
        protein = engine.protein
        return BackmapResult(
            output=output,
            n_frames=n_frames,
            n_samples=samples,
            n_residues=protein.n_residues,
            n_chains=engine.n_chains,
            n_segments=int(protein.segment.max()) + 1,
            n_atoms=protein.n_atoms,
            seconds=time.perf_counter() - t0,
            report=source.notes + engine.report + engine.notes() + writer.notes,
            method=engine.method,
            mapping=engine.mapping.name,
            mapping_evidence=engine.mapping_evidence,
            seed=seed,
            temperature=temperature,
            input=input,
            top=top,
            resumed_from=first_new,
            stride=stride,
            model=_model_file(model, engine.mapping) if engine.method == "model" else None,
            device=engine.device.type,
            version=__version__,
            bead_rmsd=engine.bead_fit.summary(stride),
            cut_short=cut_short,
        )
