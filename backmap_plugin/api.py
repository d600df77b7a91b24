"""The one backmapping function that the CLI, the reporter and workflows call.

:func:`backmap` reads a coarse-grained (or all-atom) trajectory, finds one
bead per residue with the chosen mapping, builds every heavy atom of every
residue with the chosen method and writes the all-atom trajectory, streaming
in chunks so memory stays bounded.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from . import chemistry as chem
from .errors import BackmapInputError
from .ideal import build_ideal
from .io import TrajectoryWriter, check_output_path, open_frames
from .mappings import Mapping, get_mapping
from .topology import ProteinTopology, ResidueRecord, gather_slots, protein_topology, read_residues

#: Typical distance of consecutive C-alpha atoms (Angstrom); beads of other
#: mappings are spaced similarly.
_BEAD_SPACING_RANGE = (2.0, 8.0)

#: Default ``break_distance`` (Angstrom) per kind of bead. Bonded C-alpha
#: atoms are 3.8 (trans) or 2.9 (cis) apart; bonded residue centres of mass
#: are 2.8 to 8.7 apart (99.9 % below 7.9, 60 training files), so a COM trace
#: needs a much larger threshold or every long side chain splits the chain.
BREAK_DISTANCE_CA = 4.5
BREAK_DISTANCE_OTHER = 10.0


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise as given.

    Raises
    ------
    ValueError
        When CUDA is asked for but not available.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(device)


class BeadReader:
    """Extracts one bead per residue from input frames.

    A residue with a single (non-hydrogen) atom is a CG bead and used as
    it is; a residue with atoms named like an all-atom residue is mapped to
    its bead by the mapping (so all-atom input can be backmapped too).

    Parameters
    ----------
    records : list of ResidueRecord
        Residues of the input topology.
    mapping : Mapping
    source : str
        File name for messages.
    """

    def __init__(self, records: list[ResidueRecord], mapping: Mapping, source: str):
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
                names = ", ".join(sorted(rec.atoms) + [f"#{a}" for a in rec.other_atoms])
                raise BackmapInputError(
                    f"{source}: {rec.label()} has no {' or '.join(missing)} atom "
                    f"(atoms: {names}); mapping '{mapping.name}' needs one bead per residue "
                    "or an all-atom residue with a CA"
                )
        self.bead_index = bead_index
        self.all_atom = np.nonzero(bead_index < 0)[0]
        self.res_type = np.array([chem.RESIDUE_INDEX[r.name] for r in records])

    def beads(self, xyz: np.ndarray) -> np.ndarray:
        """(F, n_atoms, 3) input coordinates -> (F, R, 3) bead positions."""
        out = np.empty((xyz.shape[0], len(self.records), 3), dtype=np.float32)
        cg = self.bead_index >= 0
        out[:, cg] = xyz[:, self.bead_index[cg]]
        if len(self.all_atom):
            recs = [self.records[i] for i in self.all_atom]
            slots, present = gather_slots(xyz, recs)
            out[:, self.all_atom] = self.mapping.bead_positions(slots, present, self.res_type[self.all_atom])
        return out


def check_trace(beads: np.ndarray, protein: ProteinTopology, source: str, frame: int = 0) -> None:
    """Reject traces that cannot be backmapped, naming file, frame, chain and residue.

    Checks the unit (bead spacing ten times off) and chains of one residue.
    (A residue isolated by breaks on both sides is built, its backbone
    oriented by a neighbour of its chain.)

    Raises
    ------
    BackmapInputError
    """
    seg = protein.segment
    chain_change = np.array(protein.chain_ids[1:]) != np.array(protein.chain_ids[:-1])
    same_seg = seg[1:] == seg[:-1]
    d = np.linalg.norm(np.diff(beads, axis=0), axis=-1)
    spacing = d[same_seg] if same_seg.any() else d[~chain_change]
    if spacing.size:
        median = float(np.median(spacing))
        low, high = _BEAD_SPACING_RANGE
        if median < low or median > high:
            hint = "ten times too small (nm written as Angstrom?)" if median < low else "ten times too large?"
            raise BackmapInputError(
                f"{source}: frame {frame}: median distance between consecutive beads is "
                f"{median:.2f} Angstrom, expected about 3.8: coordinates look {hint}"
            )
    chain_ids = np.array(protein.chain_ids)
    for cid in dict.fromkeys(protein.chain_ids):
        members = np.nonzero(chain_ids == cid)[0]
        if len(members) == 1:
            raise BackmapInputError(
                f"{source}: chain {cid or '?'} has one residue ({protein.labels[members[0]]}); a chain needs at least two"
            )


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


def _ideal_method(beads: torch.Tensor, protein: ProteinTopology, mapping: Mapping, samples: int, generator) -> torch.Tensor:
    """Ideal builder; for non-CA mappings the C-alpha trace is fitted so the built beads match.

    The fit keeps, per frame, the structure of the iteration whose beads lie
    closest (mean distance) to the input beads.
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


METHODS = {"ideal": _ideal_method}


@dataclass
class BackmapResult:
    """What :func:`backmap` did."""

    output: str
    n_frames: int
    n_samples: int
    n_residues: int
    n_chains: int
    n_segments: int
    n_atoms: int
    seconds: float
    report: list = field(default_factory=list)

    def summary(self) -> str:
        """One line for the terminal."""
        per = 1000.0 * self.seconds / max(1, self.n_frames * self.n_samples)
        return (
            f"backmapped {self.n_frames} frame(s) x {self.n_samples} sample(s), {self.n_residues} residues "
            f"in {self.n_chains} chain(s) / {self.n_segments} segment(s), {self.n_atoms} heavy atoms -> "
            f"{self.output} in {self.seconds:.2f} s ({per:.1f} ms per structure)"
        )


def backmap(
    input: str,
    output: str,
    top: str | None = None,
    mapping: str | Mapping = "ca",
    method: str = "ideal",
    samples: int = 1,
    seed: int = 0,
    device: str = "auto",
    stride: int = 1,
    chunk: int = 1000,
    break_distance: float | None = None,
    progress: bool = True,
) -> BackmapResult:
    """Backmap a coarse-grained trajectory to all heavy atoms.

    Parameters
    ----------
    input : str or os.PathLike
        CG (one bead per residue) or all-atom structure / trajectory; any
        format of :mod:`backmap_plugin.io`.
    output : str or os.PathLike
        Output file; format by extension (.pdb, .cif, .dcd, .xtc, .h5).
        Written to a temporary file and moved into place when complete.
    top : str or os.PathLike, optional
        Topology file for trajectory formats without one (DCD, XTC ...).
    mapping : str or Mapping
        ``ca`` (bead at C-alpha) or ``com`` (bead at heavy-atom centre of mass).
    method : str
        ``ideal`` (deterministic geometric builder).
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
        8.7 apart).
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    BackmapResult

    Raises
    ------
    BackmapInputError
        For input that cannot be backmapped; the message names the file and
        where it applies the frame, chain and residue.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; known: {', '.join(METHODS)}")
    if samples < 1:
        raise ValueError("samples must be at least 1")
    t0 = time.perf_counter()
    input, output = os.fspath(input), os.fspath(output)
    top = None if top is None else os.fspath(top)
    mapping = get_mapping(mapping)
    if break_distance is None:
        break_distance = BREAK_DISTANCE_CA if mapping.bead_is_ca else BREAK_DISTANCE_OTHER
    dev = select_device(device)
    check_output_path(output)
    source = open_frames(input, top=top, chunk=chunk, stride=stride)
    records, report = read_residues(source.topology, input)
    if not records:
        raise BackmapInputError(f"{input}: no protein residues found")
    reader = BeadReader(records, mapping, input)
    build = METHODS[method]
    protein = None
    writer = None
    n_frames = 0
    bar = tqdm(total=getattr(source, "n_frames", None), unit="frame", file=sys.stderr, disable=not progress, desc="backmap")
    try:
        for frames in source:
            beads = reader.beads(frames.xyz)
            if protein is None:
                protein = protein_topology(records, beads[0], break_distance)
                check_trace(beads[0], protein, input, frames.start)
                writer = TrajectoryWriter(output, protein.to_mdtraj())
            generator = torch.Generator(device=dev).manual_seed(seed + frames.start)
            with torch.no_grad():
                atoms = build(torch.as_tensor(beads, device=dev), protein, mapping, samples, generator)
            xyz = protein.scatter(atoms).reshape(-1, protein.n_atoms, 3)
            writer.write(xyz.cpu().numpy())
            n_frames += beads.shape[0]
            bar.update(beads.shape[0])
    except BaseException:
        if writer is not None:
            writer.__exit__(*sys.exc_info())
        raise
    finally:
        bar.close()
    if writer is None:
        raise BackmapInputError(f"{input}: no frames to backmap")
    writer.close()
    return BackmapResult(
        output=output,
        n_frames=n_frames,
        n_samples=samples,
        n_residues=protein.n_residues,
        n_chains=len(dict.fromkeys(protein.chain_ids)),
        n_segments=int(protein.segment.max()) + 1,
        n_atoms=protein.n_atoms,
        seconds=time.perf_counter() - t0,
        report=report,
    )
