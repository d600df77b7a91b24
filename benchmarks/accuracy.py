"""Accuracy benchmark: C-alpha trace in, heavy atoms out, scored against the truth.

Every tool in the registry (:data:`TOOLS`) gets the same C-alpha-only input
made from a reference structure of ``visible_test`` and rebuilds all heavy
atoms; every output is scored against the reference by the one scoring code
of the package (:mod:`backmap_plugin.core.metrics`). Measurement only: nothing
here is tuned on the test set.

Groups
------
* ``crystal``: the SHIFTX2 crystal set (all ``shiftx2__*`` entries of the
  manifest), one frame each.
* one group per MD trajectory file (``kind == md`` in the manifest), with at
  most ``--max-frames`` frames, evenly spread over the file.

``--split val`` scores the tuning set instead: the ``train`` files whose
``cluster30`` cluster the corpus cache (``--cache``) holds out as ``val``
(clusters the shipped model never trained on). Single-frame files form the
``crystal`` group; each ensemble is a group of kind ``md`` or ``nmr``; files
above ``--max-residues`` are left out (noted). Tune on it; keep
``visible_test`` for the final measurement.

Per structure (one frame of a group) and tool
---------------------------------------------
* ``rmsd_all`` / ``rmsd_sc``: heavy-atom RMSD after optimal superposition
  (:func:`~backmap_plugin.core.metrics.kabsch_rmsd`) over the atoms present both in
  the truth and in the output; ``sc`` = side-chain atoms beyond CB. Fit and
  score use the same atoms.
* ``rmsd_all_sym`` / ``rmsd_sc_sym``: the same after each residue's
  chemically equivalent atoms (ASP OD1/OD2, GLU OE1/OE2, ARG NH1/NH2, the
  PHE and TYR ring pairs) take the labelling closer to the truth
  (:func:`~backmap_plugin.core.metrics.match_equivalent_atoms`): which of
  the two gets which name is a convention that the truth files do not all
  follow (in the visible crystal structures about 80 % of PHE, TYR, ASP and
  GLU side chains are named with their symmetric chi within +-90 degrees,
  the IUPAC rule, the others the other way), so the plain RMSD counts a
  correctly placed side chain named the other way as misplaced. The plain
  numbers stay the primary ones (comparable with earlier figures).
* ``bonds_off``: fraction of the output's bonds whose length is more than
  0.1 A off the ideal (Engh & Huber) length of
  :meth:`~backmap_plugin.core.topology.ProteinTopology.bonds`, the same table for
  every tool. The topology is made from the output's residue names
  (normalised by :func:`~backmap_plugin.core.topology.read_residues`) and the
  chain segments of the input trace.
* ``clashes``: heavy-atom pairs closer than 2.0 A and more than three bonds
  apart, per 100 residues, with the output's bonds.
* ``d_residues``: residues with D chirality at CA.
* ``built``: % of the truth residues whose every truth heavy atom is in the
  output (with the same residue type).
* ``diversity``: mean pairwise RMSD between samples of one frame (0 for a
  deterministic tool).

Aggregation (table and JSON)
----------------------------
* Group row: mean over the group's structures (each structure's numbers
  are first averaged over its samples); ``D residues`` is the sum over the
  structures; a structure a tool failed on counts as 0 % built and is left
  out of the other numbers (``failed`` column). A tool whose module is
  not installed (``pypulchra``) is left out, with a line saying so (stderr,
  and the notes), rather than counted as failing every structure.
* ``crystal (median)``: median over the crystal structures.
* ``MD (mean of trajectories)``: mean over the MD groups of the group means,
  so each trajectory weighs the same (``NMR (mean of ensembles)`` alike).
* Time: the tool's own wall time (file or text in, file or text out; reading
  the output back for scoring is not counted), per structure (frame x
  sample) and per 1,000 residues built. Each tool runs once on a small
  structure before timing (warm-up), all in one process.

Run ``python benchmarks/accuracy.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mdtraj as md
import numpy as np
from corpus import add_data_option, corpus
from tqdm import tqdm

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import metrics
from backmap_plugin.core.topology import (
    ProteinTopology,
    equivalent_slot_pairs,
    gather_slots,
    protein_topology,
    read_residues,
)

#: C-alpha distance (Angstrom) that splits a chain into segments; passed to
#: every tool that takes one, and used to cut the PULCHRA input.
BREAK_DISTANCE = 4.5

#: What the input beads are (``--beads``): ``ca`` (C-alpha atoms) or ``com``
#: (residue heavy-atom centres of mass, still named CA as CALVADOS writes
#: them; package tools are told ``mapping='com'``, break distance 10 A).
BEADS = {"kind": "ca"}

#: Side-chain slots beyond CB (OXT excluded).
SIDE_CHAIN_SLOTS = np.arange(chem.SLOT_CB + 1, chem.SLOT_OXT)

_REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- inputs


@dataclass
class Truth:
    """One reference file, reduced to the frames that are scored.

    Attributes
    ----------
    entry_id : str
    names : list of str
        Standard residue names of the residues that have a CA (input order).
    chain_ids : list of str
        Chain identifier per residue.
    slots : numpy.ndarray
        (F, R, N_SLOTS, 3) heavy atoms in residue slots, Angstrom.
    present : numpy.ndarray
        (R, N_SLOTS) bool, atom exists in the reference.
    segment : numpy.ndarray
        (R,) chain segment per residue (from the first frame's CA trace).
    ca : mdtraj.Trajectory
        C-alpha-only trajectory (standard residue names, residues numbered
        1..R), the input every tool sees.
    notes : list of str
        What was dropped or renamed on the way.
    """

    entry_id: str
    names: list
    chain_ids: list
    slots: np.ndarray
    present: np.ndarray
    segment: np.ndarray
    ca: md.Trajectory
    notes: list = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        """Number of scored frames."""
        return self.slots.shape[0]

    @property
    def n_residues(self) -> int:
        """Number of residues in the input trace."""
        return len(self.names)


def frame_indices(n_frames: int, max_frames: int) -> np.ndarray:
    """At most ``max_frames`` frame indices evenly spread over ``n_frames``.

    Parameters
    ----------
    n_frames : int
        Frames in the file.
    max_frames : int
        Upper bound; 0 or less keeps every frame.

    Returns
    -------
    numpy.ndarray
        Sorted unique indices, first and last frame included.
    """
    if max_frames <= 0 or n_frames <= max_frames:
        return np.arange(n_frames)
    return np.unique(np.linspace(0, n_frames - 1, max_frames).round().astype(np.int64))


def _chain_per_segment(top: md.Topology, segment: np.ndarray) -> md.Topology:
    """``top`` (one atom per residue) with a chain of its own for every segment.

    Centre-of-mass beads of bonded residues lie up to about 9 A apart, as far
    as the beads on both sides of a missing residue, so their distances do
    not show where the truth lacks residues; a real coarse-grained topology
    says which beads are bonded. The input PDB says it with one chain (TER)
    per segment of the truth.
    """
    out = md.Topology()
    chain = None
    for atom, seg in zip(top.atoms, segment):
        if atom.index == 0 or seg != segment[atom.index - 1]:
            chain = out.add_chain(chain_id=atom.residue.chain.chain_id)
        residue = out.add_residue(atom.residue.name, chain, resSeq=atom.residue.resSeq)
        out.add_atom(atom.name, atom.element, residue)
    return out


def load_truth(path: Path, max_frames: int) -> Truth:
    """Read a reference file and make the C-alpha input from it.

    Residue names are normalised by the package (modified residues as their
    parent); residues without a CA atom are left out of input and scoring
    (noted).

    Parameters
    ----------
    path : pathlib.Path
        A ``visible_test`` file (gzip PDB, possibly multi-model).
    max_frames : int
        See :func:`frame_indices`.

    Returns
    -------
    Truth
    """
    entry_id = path.name.split(".pdb")[0]
    traj = md.load(str(path))
    traj = traj[frame_indices(traj.n_frames, max_frames)]
    records, notes = read_residues(traj.topology, entry_id)
    missing_ca = [r for r in records if "CA" not in r.atoms]
    if missing_ca:
        notes.append("no CA, left out: " + ", ".join(r.label() for r in missing_ca))
    records = [r for r in records if "CA" in r.atoms]
    xyz = traj.xyz * 10.0
    slots, present = gather_slots(xyz, records)
    ca_index = [r.atoms["CA"] for r in records]
    ca = traj.atom_slice(ca_index)
    ca_residues = list(ca.topology.residues)
    if len(ca_residues) != len(records):
        raise RuntimeError(f"{entry_id}: C-alpha slice has {len(ca_residues)} residues for {len(records)} records")
    for i, (residue, rec) in enumerate(zip(ca_residues, records)):
        residue.name = rec.name
        residue.resSeq = i + 1  # unique numbers: no insertion codes, no repeats across chains
    segment = protein_topology(records, slots[0, :, chem.SLOT_CA], BREAK_DISTANCE).segment
    if BEADS["kind"] == "com":
        res_type = np.array([chem.RESIDUE_INDEX[r.name] for r in records])
        ca = md.Trajectory((bead_positions(slots, present, res_type) / 10.0).astype(np.float32),
                           _chain_per_segment(ca.topology, segment))
    return Truth(
        entry_id=entry_id,
        names=[r.name for r in records],
        chain_ids=[r.chain_id for r in records],
        slots=slots.astype(np.float64),
        present=present,
        segment=segment,
        ca=ca,
        notes=notes,
    )


@dataclass
class Group:
    """Structures scored together: the crystal set, or one MD trajectory."""

    name: str
    kind: str  # "crystal", "md" or "nmr"
    files: list


def discover_groups(data: Path) -> list[Group]:
    """Groups of ``visible_test`` from ``manifest.csv``.

    Parameters
    ----------
    data : pathlib.Path
        Folder holding ``manifest.csv`` and ``visible_test/``.

    Returns
    -------
    list of Group
        ``crystal`` first, then the MD trajectories by name.
    """
    crystal, md_groups = [], []
    with open(data / "manifest.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["split"] != "visible_test":
                continue
            path = data / "visible_test" / f"{row['entry_id']}.pdb.gz"
            if row["subset"] == "shiftx2":
                crystal.append(path)
            elif row["kind"] == "md":
                md_groups.append(Group(row["entry_id"], "md", [path]))
    groups = [Group("crystal", "crystal", sorted(crystal))] if crystal else []
    return groups + sorted(md_groups, key=lambda g: g.name)


def discover_val_groups(cache: Path, max_residues: int = 0) -> tuple[list[Group], list[str]]:
    """The tuning set: ``train`` files whose cluster is in the ``val`` split of a corpus cache.

    The cache (``backmap data build``) assigns whole ``cluster30`` clusters
    to ``train`` or ``val``; the shipped model never trained on ``val``
    clusters, so they are the set to tune inference on (``visible_test``
    stays for the final measurement).

    Parameters
    ----------
    cache : pathlib.Path
        Cache folder holding ``index.json``.
    max_residues : int
        Entries with more residues are left out (0: keep all).

    Returns
    -------
    groups : list of Group
        ``crystal`` (every single-frame entry) first, then one group per
        multi-frame entry, of kind ``md`` or ``nmr`` (its manifest kind).
    notes : list of str
        Entries left out, and why.
    """
    index = json.loads((cache / "index.json").read_text(encoding="utf-8"))
    crystal, ensembles, notes = [], [], []
    for entry in index["entries"]:
        if entry["split"] != "val":
            continue
        if max_residues > 0 and entry["n_residues"] > max_residues:
            notes.append(f"{entry['entry_id']}: {entry['n_residues']} residues > --max-residues, left out")
            continue
        path = Path(entry["source"])
        if entry["n_frames"] == 1:
            crystal.append(path)
        else:
            ensembles.append(Group(entry["entry_id"], "md" if entry["kind"] == "md" else "nmr", [path]))
    groups = [Group("crystal", "crystal", sorted(crystal))] if crystal else []
    return groups + sorted(ensembles, key=lambda g: (g.kind, g.name)), notes


def select_groups(groups: list[Group], spec: str | None) -> list[Group]:
    """Keep groups named by ``spec``.

    Parameters
    ----------
    groups : list of Group
    spec : str or None
        Comma-separated tokens; a group is kept when a token is its kind
        (``crystal``, ``md``) or a substring of its name (``adk``). None
        keeps all.
    """
    if not spec:
        return groups
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    keep = [g for g in groups if any(t == g.kind or t in g.name for t in tokens)]
    if not keep:
        raise SystemExit(f"--groups {spec!r} matches none of: {', '.join(g.name for g in groups)}")
    return keep


# ---------------------------------------------------------------- tools


@dataclass
class ToolRequest:
    """What a tool gets.

    Attributes
    ----------
    ca_pdb : str
        C-alpha-only PDB (multi-model for trajectories): standard residue
        names, residues numbered 1..R in input order, input chain IDs.
    segment : numpy.ndarray
        (R,) chain segment per residue (breaks at :data:`BREAK_DISTANCE`).
    workdir : str
        Scratch folder for the tool's files.
    samples : int
        Structures wanted per frame (1 for deterministic tools).
    seed : int
    device : str
    """

    ca_pdb: str
    segment: np.ndarray
    workdir: str
    samples: int = 1
    seed: int = 0
    device: str = "cpu"


@dataclass
class ToolOutput:
    """What a tool returns.

    Attributes
    ----------
    topology : mdtraj.Topology
        All-atom output topology with one residue per input residue, in
        input order (any naming that :func:`read_residues` understands).
    xyz : numpy.ndarray
        (F, S, n_atoms, 3) coordinates in Angstrom, frame-major; NaN for an
        atom the tool did not build in that frame.
    seconds : float
        Wall time of the tool itself (not counting reading its output back).
    notes : list of str
        Anything odd the tool reported.
    """

    topology: md.Topology
    xyz: np.ndarray
    seconds: float
    notes: list = field(default_factory=list)


@dataclass
class Tool:
    """Entry of the tool registry.

    Attributes
    ----------
    name : str
    run : callable
        ``run(request: ToolRequest, truth: Truth) -> ToolOutput``. Real tools
        must use only ``request`` (the C-alpha file); ``truth`` exists for the
        reference row.
    stochastic : bool
        Draws ``--samples`` structures per frame (diversity is scored).
    timed : bool
        Whether its wall time means anything.
    needs : str or None
        A module it imports that is not a dependency of the package
        (``pypulchra``): without it the tool is left out (:func:`installed_tools`).
    """

    name: str
    run: Callable[[ToolRequest, Truth], ToolOutput]
    stochastic: bool = False
    timed: bool = True
    needs: str | None = None


#: Options of the package's ``model`` method, set from the command line
#: (``--model``, ``--temperature``).
MODEL_OPTIONS: dict = {}


def package_tool(method: str, options: dict | None = None) -> Callable[[ToolRequest, Truth], ToolOutput]:
    """A tool that runs :func:`backmap_plugin.backmap` with ``method``.

    The C-alpha PDB goes in, an all-atom PDB comes out (as with the CLI);
    the output is read back with mdtraj. ``options`` (read at run time) are
    passed on to ``backmap``.
    """

    def run(request: ToolRequest, truth: Truth) -> ToolOutput:
        from backmap_plugin import backmap

        out = os.path.join(request.workdir, f"{method}.pdb")
        t0 = time.perf_counter()
        com = BEADS["kind"] == "com"
        result = backmap(
            request.ca_pdb,
            out,
            method=method,
            mapping=BEADS["kind"],
            samples=request.samples,
            seed=request.seed,
            device=request.device,
            break_distance=10.0 if com else BREAK_DISTANCE,
            progress=False,
            **(options or {}),
        )
        seconds = time.perf_counter() - t0
        traj = md.load(out)
        xyz = traj.xyz.astype(np.float64) * 10.0
        xyz = xyz.reshape(-1, request.samples, traj.n_atoms, 3)
        return ToolOutput(traj.topology, xyz, seconds, list(result.report))

    return run


def _pdb_ca_line(serial: int, name: str, res_seq: int, xyz) -> str:
    """One ATOM record of a C-alpha."""
    return (
        f"ATOM  {serial:5d}  CA  {name:>3s} A{res_seq:4d}    "
        f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}  1.00  0.00           C  "
    )


def _topology_from_atoms(res_names: list, atom_names: list) -> md.Topology:
    """A one-chain topology with the given residues and atom names (elements from the names)."""
    top = md.Topology()
    chain = top.add_chain()
    for i, (res_name, names) in enumerate(zip(res_names, atom_names)):
        residue = top.add_residue(res_name, chain, resSeq=i + 1)
        for name in names:
            element = md.element.get_by_symbol(name[0]) if name[0] in "CNOS" else md.element.virtual
            top.add_atom(name, element, residue)
    return top


def run_pulchra(request: ToolRequest, truth: Truth) -> ToolOutput:
    """PULCHRA (C code through ``pypulchra``), one chain segment and frame per call.

    PULCHRA stops at the first TER, so each segment of each frame is sent
    as its own PDB text; residues are numbered by their input index, so the
    output maps back by (residue number, atom name).
    """
    import pypulchra

    t0 = time.perf_counter()
    ca = md.load(request.ca_pdb)
    names = [r.name for r in ca.topology.residues]
    xyz = ca.xyz.astype(np.float64) * 10.0
    bounds = np.flatnonzero(np.diff(request.segment)) + 1
    pieces = np.split(np.arange(len(names)), bounds)
    texts = []
    for f in range(ca.n_frames):
        frame_texts = []
        for piece in pieces:
            lines = [_pdb_ca_line(k + 1, names[i], i + 1, xyz[f, i]) for k, i in enumerate(piece)]
            result = pypulchra.run_from_pdb_str("\n".join(lines) + "\nTER\nEND\n")
            frame_texts.append(result.pdb_str)
        texts.append(frame_texts)
    seconds = time.perf_counter() - t0

    notes = []
    per_frame = []  # (residue index, atom name) -> xyz, per frame
    out_names = list(names)
    order: list[dict] = [{} for _ in names]  # atom names per residue in first-seen order
    for f, frame_texts in enumerate(texts):
        atoms = {}
        for p, text in enumerate(frame_texts):
            if not text:
                notes.append(f"frame {f}: segment {p}: PULCHRA returned nothing")
                continue
            for line in text.splitlines():
                if not line.startswith(("ATOM", "HETATM")):
                    continue
                name = line[12:16].strip()
                i = int(line[22:26]) - 1
                if not 0 <= i < len(names):
                    notes.append(f"frame {f}: PULCHRA wrote residue number {i + 1} not in the input")
                    continue
                out_names[i] = line[17:20].strip()
                atoms[(i, name)] = (float(line[30:38]), float(line[38:46]), float(line[46:54]))
                order[i].setdefault(name, None)
        per_frame.append(atoms)
    atom_names = [list(o) for o in order]
    top = _topology_from_atoms(out_names, atom_names)
    keys = [(i, name) for i, names_i in enumerate(atom_names) for name in names_i]
    out = np.full((len(per_frame), 1, len(keys), 3), np.nan)
    for f, atoms in enumerate(per_frame):
        for k, key in enumerate(keys):
            if key in atoms:
                out[f, 0, k] = atoms[key]
    return ToolOutput(top, out, seconds, notes)


def run_truth(request: ToolRequest, truth: Truth) -> ToolOutput:
    """The reference structure itself, scored like a tool (RMSD 0 by construction)."""
    atom_names, index = [], []
    for i, name in enumerate(truth.names):
        spec = chem.RESIDUES[name]
        slot_names = list(spec.atoms) + [None] * (chem.N_SLOTS - len(spec.atoms))
        slot_names[chem.SLOT_OXT] = "OXT"
        here = [s for s in range(chem.N_SLOTS) if truth.present[i, s]]
        atom_names.append([slot_names[s] for s in here])
        index += [(i, s) for s in here]
    res, slot = np.array(index).T
    xyz = truth.slots[:, res, slot][:, None]
    return ToolOutput(_topology_from_atoms(truth.names, atom_names), xyz, 0.0)


#: Tool registry: name -> Tool.
TOOLS: dict[str, Tool] = {
    "ideal": Tool("ideal", package_tool("ideal")),
    "model": Tool("model", package_tool("model", MODEL_OPTIONS), stochastic=True),
    "pulchra": Tool("pulchra", run_pulchra, needs="pypulchra"),
    "truth": Tool("truth", run_truth, timed=False),
}


def installed_tools(tools: list[Tool]) -> tuple[list[Tool], list[str]]:
    """The tools whose modules are installed, and a line for each one left out (not a structure it failed on).

    Parameters
    ----------
    tools : list of Tool

    Returns
    -------
    kept : list of Tool
    lines : list of str
        ``pulchra: not installed (no module pypulchra; pip install pypulchra): left out``.
    """
    kept, lines = [], []
    for tool in tools:
        if tool.needs is not None and importlib.util.find_spec(tool.needs) is None:
            lines.append(f"{tool.name}: not installed (no module {tool.needs}; pip install {tool.needs}): left out")
        else:
            kept.append(tool)
    return kept, lines


# ---------------------------------------------------------------- scoring


def bead_positions(slots: np.ndarray, present: np.ndarray, res_type: np.ndarray) -> np.ndarray:
    """(..., R, 3) beads of the ``--beads`` kind from heavy atoms in slots (OXT not part of a bead)."""
    from backmap_plugin.core.mappings import get_mapping

    present = present.copy()
    present[:, chem.SLOT_OXT] = False
    return get_mapping(BEADS["kind"]).bead_positions(slots, present, res_type)


def _nan_mean(values) -> float:
    """Mean of the finite values, NaN when there are none."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


def _nan_median(values) -> float:
    """Median of the finite values, NaN when there are none."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(np.median(arr)) if arr.size else math.nan


def matched_rmsd(x: np.ndarray, t: np.ndarray, common: np.ndarray, side: np.ndarray,
                 names: list[str]) -> tuple[float, float]:
    """Heavy-atom and side-chain RMSD (as ``rmsd_all``, ``rmsd_sc``) after equivalent atoms are matched.

    ``x`` and ``t`` are (R, N_SLOTS, 3) slots of output and truth,
    ``common`` and ``side`` the (R, N_SLOTS) atoms of the two RMSDs,
    ``names`` the residue names; NaN where an RMSD has no atoms.
    """
    if not common.any():
        return math.nan, math.nan
    matched = metrics.match_equivalent_atoms(x.reshape(-1, 3), t.reshape(-1, 3), *equivalent_slot_pairs(names, common),
                                             mask=common.ravel())[0].reshape(x.shape)
    rmsd_all = float(metrics.kabsch_rmsd(matched[common], t[common])[0])
    return rmsd_all, float(metrics.kabsch_rmsd(matched[side], t[side])[0]) if side.any() else math.nan


def score_output(truth: Truth, output: ToolOutput) -> tuple[list[dict], list[str]]:
    """Score every frame of a tool's output against the truth.

    Parameters
    ----------
    truth : Truth
    output : ToolOutput

    Returns
    -------
    frames : list of dict
        One dict per frame (numbers averaged over samples; see the module
        docstring for the keys).
    notes : list of str
        Residue-name mismatches and extra atoms.

    Raises
    ------
    ValueError
        When the output does not hold one residue per input residue.
    """
    n_frames, n_samples = output.xyz.shape[:2]
    if n_frames != truth.n_frames:
        raise ValueError(f"tool wrote {n_frames} frames for {truth.n_frames} input frames")
    records, _ = read_residues(output.topology, "output")
    if len(records) != truth.n_residues:
        raise ValueError(f"tool wrote {len(records)} residues for {truth.n_residues} input residues")
    notes = []
    flat = output.xyz.reshape(n_frames * n_samples, -1, 3)
    slots, present = gather_slots(flat, records)
    slots = slots.reshape(n_frames, n_samples, *slots.shape[1:])
    extra = sum(len(r.other_atoms) for r in records)
    if extra:
        notes.append(f"{extra} output atom(s) with non-standard names not scored")
    out_names = [r.name for r in records]
    same_type = np.array(out_names) == np.array(truth.names)
    if not same_type.all():
        notes.append(f"{int((~same_type).sum())} residue(s) written with another residue type")

    protein = ProteinTopology(out_names, truth.chain_ids, np.arange(1, truth.n_residues + 1), truth.segment)
    res, slot = protein.atom_order()
    pairs, ideal = protein.bonds()
    layout_present = present[res, slot]
    outside = int(present.sum() - layout_present.sum())
    if outside:
        notes.append(f"{outside} output atom(s) outside the layout (e.g. OXT inside a segment) not scored")

    comparable = truth.present & present
    comparable[~same_type, chem.SLOT_CB:chem.SLOT_OXT] = False
    side_chain = np.zeros(chem.N_SLOTS, bool)
    side_chain[SIDE_CHAIN_SLOTS] = True
    truth_atoms = truth.present.copy()

    frames = []
    input_beads = truth.ca.xyz.astype(np.float64) * 10.0
    out_types = np.array([chem.RESIDUE_INDEX[n] for n in out_names])
    for f in range(n_frames):
        acc: dict[str, list] = {k: [] for k in ("rmsd_all", "rmsd_sc", "rmsd_all_sym", "rmsd_sc_sym", "bonds_off", "clashes", "d_residues", "built",
                                                "bead_rmsd")}
        finite_all = np.ones((truth.n_residues, chem.N_SLOTS), bool)
        for s in range(n_samples):
            x = slots[f, s]
            finite = present & np.all(np.isfinite(x), axis=-1)
            finite_all &= finite
            common = comparable & finite
            t = truth.slots[f]
            acc["rmsd_all"].append(float(metrics.kabsch_rmsd(x[common], t[common])[0]) if common.any() else math.nan)
            sc = common & side_chain[None, :]
            acc["rmsd_sc"].append(float(metrics.kabsch_rmsd(x[sc], t[sc])[0]) if sc.any() else math.nan)
            for key, value in zip(("rmsd_all_sym", "rmsd_sc_sym"), matched_rmsd(x, t, common, sc, truth.names)):
                acc[key].append(value)

            avail = finite[res, slot]
            new_index = np.cumsum(avail) - 1
            keep = avail[pairs].all(axis=1)
            bonds = new_index[pairs[keep]]
            coords = x[res[avail], slot[avail]]
            acc["bonds_off"].append(metrics.fraction_bonds_off(coords, bonds, ideal[keep]) if keep.any() else math.nan)
            acc["clashes"].append(metrics.clashes_per_100_residues(coords, bonds, truth.n_residues))
            atom_of = np.full((truth.n_residues, chem.N_SLOTS), -1, dtype=np.int64)
            atom_of[res[avail], slot[avail]] = new_index[avail]
            acc["d_residues"].append(
                metrics.count_d_residues(
                    coords, atom_of[:, chem.SLOT_N], atom_of[:, chem.SLOT_CA], atom_of[:, chem.SLOT_C], atom_of[:, chem.SLOT_CB]
                )
            )
            built = np.all(finite | ~truth_atoms, axis=1) & same_type
            acc["built"].append(100.0 * float(built.mean()))
            whole = np.all(finite[:, : chem.SLOT_OXT] | ~present[:, : chem.SLOT_OXT], axis=1) & finite[:, chem.SLOT_CA]
            beads = bead_positions(np.nan_to_num(x), present & finite, out_types)
            miss = np.linalg.norm(beads - input_beads[f], axis=-1)[whole]
            acc["bead_rmsd"].append(float(np.sqrt((miss**2).mean())) if miss.size else math.nan)
        common_all = comparable & finite_all
        if n_samples > 1 and common_all.any():
            diversity = metrics.sample_diversity(slots[f][:, common_all][None])
        else:
            diversity = 0.0
        row = {k: _nan_mean(v) for k, v in acc.items() if k != "d_residues"}
        row["d_residues"] = float(np.mean(acc["d_residues"]))
        row["diversity"] = float(diversity)
        row["n_residues"] = truth.n_residues
        frames.append(row)
    return frames, notes


# ---------------------------------------------------------------- aggregation

#: Per-structure metrics averaged in group rows.
METRICS = ("rmsd_all", "rmsd_sc", "rmsd_all_sym", "rmsd_sc_sym", "bonds_off", "clashes", "built", "diversity", "bead_rmsd")


def aggregate(structures: list[dict], seconds: float, n_samples: int, timed: bool, how: str = "mean") -> dict:
    """Summary numbers of a set of structures.

    Parameters
    ----------
    structures : list of dict
        Per-structure rows (``failed`` rows carry only ``built = 0``).
    seconds : float
        Tool wall time summed over these structures.
    n_samples : int
        Samples per frame.
    timed : bool
        False for tools without a meaningful time.
    how : str
        ``mean`` or ``median``.
    """
    ok = [s for s in structures if not s.get("failed")]
    stat = _nan_mean if how == "mean" else _nan_median
    out = {"structures": len(structures), "failed": len(structures) - len(ok)}
    for key in METRICS:
        values = [s[key] for s in (structures if key == "built" else ok)]
        out[key] = stat(values)
    out["d_residues"] = float(sum(s["d_residues"] for s in ok))
    n_struct = sum(n_samples for _ in ok)
    n_res = sum(s["n_residues"] * n_samples for s in ok)
    out["seconds"] = seconds if timed else math.nan
    out["s_per_structure"] = seconds / n_struct if timed and n_struct else math.nan
    out["s_per_1000_res"] = 1000.0 * seconds / n_res if timed and n_res else math.nan
    return out


def _fmt(value, digits=2, pct=False) -> str:
    """Number for the table; ``-`` for None and NaN; ``pct`` multiplies by 100."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if pct:
        return f"{100.0 * value:.{digits}f}"
    return f"{value:.{digits}f}"


def markdown_table(rows: list[tuple[str, str, dict]]) -> str:
    """The result table, one line per (group, tool)."""
    head = (
        "| group | tool | structures | failed | RMSD all (A) | RMSD side chain (A) | RMSD all, sym. (A) | "
        "RMSD side chain, sym. (A) | bonds off (%) | "
        "clashes /100 res | D residues | residues built (%) | diversity (A) | bead RMSD (A) | s / structure | "
        "s / 1000 res |"
    )
    lines = [head, "|" + "---|" * 16]
    for group, tool, s in rows:
        time_digits = 4 if math.isfinite(s["s_per_structure"]) and s["s_per_structure"] < 0.1 else 3
        lines.append(
            f"| {group} | {tool} | {s['structures']} | {s['failed']} | {_fmt(s['rmsd_all'])} | {_fmt(s['rmsd_sc'])} | "
            f"{_fmt(s['rmsd_all_sym'])} | {_fmt(s['rmsd_sc_sym'])} | "
            f"{_fmt(s['bonds_off'], 2, pct=True)} | {_fmt(s['clashes'], 1)} | {int(s['d_residues'])} | "
            f"{_fmt(s['built'], 1)} | {_fmt(s['diversity'])} | {_fmt(s['bead_rmsd'])} | "
            f"{_fmt(s['s_per_structure'], time_digits)} | "
            f"{_fmt(s['s_per_1000_res'], 3)} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- driver


def run_tool(tool: Tool, truth: Truth, args, workdir: str) -> tuple[list[dict], float, list[str]]:
    """Run one tool on one truth and score it.

    Parameters
    ----------
    tool : Tool
    truth : Truth
    args : argparse.Namespace
        ``samples``, ``seed`` and ``device`` are used.
    workdir : str
        Folder holding ``ca.pdb``.

    Returns
    -------
    frames : list of dict
        Per-frame scores; a failure gives rows with ``failed: True``.
    seconds : float
        Tool wall time (0 on failure).
    notes : list of str
    """
    samples = args.samples if tool.stochastic else 1
    request = ToolRequest(
        ca_pdb=os.path.join(workdir, "ca.pdb"), segment=truth.segment, workdir=workdir,
        samples=samples, seed=args.seed, device=args.device,
    )
    try:
        output = tool.run(request, truth)
        frames, notes = score_output(truth, output)
        return frames, output.seconds, output.notes + notes
    except Exception as exc:  # noqa: BLE001  (a tool failing is a result, not a crash of the benchmark)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        failed = [
            {"failed": True, "built": 0.0, "n_residues": truth.n_residues, "d_residues": 0.0} for _ in range(truth.n_frames)
        ]
        return failed, 0.0, [f"FAILED: {type(exc).__name__}: {message}"]


def main(argv=None) -> int:
    """Command-line entry point.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_option(parser)
    parser.add_argument("--split", choices=("visible_test", "val"), default="visible_test",
                        help="visible_test (final measurement) or val: the train files of the cache's held-out "
                             "clusters, the set to tune on (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=_REPO / "cache" / "train",
                        help="corpus cache whose val split --split val uses (default: %(default)s)")
    parser.add_argument("--max-residues", type=int, default=2000,
                        help="--split val: leave out entries with more residues; 0 keeps all (default: %(default)s)")
    parser.add_argument("--tools", default="ideal,pulchra,truth", help=f"comma-separated, from: {', '.join(TOOLS)} (default: %(default)s)")
    parser.add_argument("--groups", default=None, help="comma-separated group kinds (crystal, md) or name parts (adk, 1u19); default all")
    parser.add_argument("--max-files", type=int, default=0,
                        help="files per group at most, evenly spread over the sorted list (0 = all; for quick looks)")
    parser.add_argument("--max-frames", type=int, default=20, help="frames per MD trajectory, evenly spread; 0 = all (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=4, help="samples per frame for stochastic tools (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="device for package tools (default: %(default)s)")
    parser.add_argument("--beads", choices=("ca", "com"), default="ca",
                        help="input beads: C-alpha atoms (default) or residue centres of mass (package tools only)")
    parser.add_argument("--json", type=Path, default=None, help="write all numbers (per structure too) to this file")
    parser.add_argument("--model", default=None, help="model file for the model tool (default: the shipped one)")
    parser.add_argument("--temperature", type=float, default=1.0, help="model sampling temperature (default: 1)")
    args = parser.parse_args(argv)
    MODEL_OPTIONS.update(model=args.model, temperature=args.temperature)
    BEADS["kind"] = args.beads

    names = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in names if t not in TOOLS]
    if unknown:
        parser.error(f"unknown tool(s) {', '.join(unknown)}; known: {', '.join(TOOLS)}")
    tools, left_out = installed_tools([TOOLS[t] for t in names])
    for line in left_out:
        print(line, file=sys.stderr)
    if not tools:
        parser.error("none of the tools asked for is installed")
    if args.split == "val":
        if not (args.cache / "index.json").is_file():
            parser.error(f"--split val: {args.cache} is no corpus cache (no index.json): make it with "
                         f"'backmap data build ../shared/data/train -o {args.cache}' or pass --cache")
        groups, skipped = discover_val_groups(args.cache, args.max_residues)
    else:
        groups, skipped = discover_groups(corpus(args.data)), []
    groups = select_groups(groups, args.groups)
    if args.max_files:
        for group in groups:
            keep = frame_indices(len(group.files), args.max_files)
            group.files = [group.files[i] for i in keep]

    per_structure: list[dict] = []
    group_rows: dict[str, dict[str, list]] = {}
    group_seconds: dict[tuple[str, str], float] = {}
    notes: dict[str, list] = {"tuning set": skipped} if skipped else {}
    if left_out:
        notes["tools"] = left_out
    t_start = time.perf_counter()
    warmed = False
    jobs = [(g, p) for g in groups for p in g.files]
    bar = tqdm(jobs, desc="benchmark", unit="file", file=sys.stderr)
    for group, path in bar:
        bar.set_postfix_str(path.name.split(".pdb")[0][:30])
        truth = load_truth(path, 1 if group.kind == "crystal" else args.max_frames)
        if truth.notes:
            notes.setdefault(truth.entry_id, []).extend(f"input: {n}" for n in truth.notes)
        with tempfile.TemporaryDirectory(prefix="bench_") as workdir:
            truth.ca.save_pdb(os.path.join(workdir, "ca.pdb"))
            if not warmed:  # first call of a tool pays imports and start-up; not timed
                for tool in tools:
                    run_tool(tool, truth, args, workdir)
                warmed = True
            for tool in tools:
                frames, seconds, tool_notes = run_tool(tool, truth, args, workdir)
                for f, row in enumerate(frames):
                    per_structure.append({
                        "group": group.name, "entry": truth.entry_id, "frame": f, "tool": tool.name,
                        "seconds": seconds / len(frames) if tool.timed else None, **row,
                    })
                group_rows.setdefault(group.name, {}).setdefault(tool.name, []).extend(frames)
                group_seconds[(group.name, tool.name)] = group_seconds.get((group.name, tool.name), 0.0) + seconds
                if tool_notes:
                    notes.setdefault(truth.entry_id, []).extend(f"{tool.name}: {n}" for n in dict.fromkeys(tool_notes))
    bar.close()

    table_rows, summary = [], {"groups": {}, "overall": {}}
    for group in groups:
        for tool in tools:
            samples = args.samples if tool.stochastic else 1
            s = aggregate(group_rows[group.name][tool.name], group_seconds[(group.name, tool.name)], samples, tool.timed)
            summary["groups"].setdefault(group.name, {})[tool.name] = s
            table_rows.append((group.name, tool.name, s))
    for tool in tools:
        samples = args.samples if tool.stochastic else 1
        crystal = [g for g in groups if g.kind == "crystal"]
        if crystal:
            rows = [r for g in crystal for r in group_rows[g.name][tool.name]]
            secs = sum(group_seconds[(g.name, tool.name)] for g in crystal)
            s = aggregate(rows, secs, samples, tool.timed, how="median")
            s["mean"] = aggregate(rows, secs, samples, tool.timed, how="mean")
            summary["overall"].setdefault("crystal", {})[tool.name] = s
            table_rows.append(("**crystal (median)**", tool.name, s))
    ensemble_rows = (("md", "**MD (mean of trajectories)**"), ("nmr", "**NMR (mean of ensembles)**"))
    for (kind, label), tool in ((k, t) for k in ensemble_rows for t in tools):
        samples = args.samples if tool.stochastic else 1
        md_groups = [g for g in groups if g.kind == kind]
        if md_groups:
            means = [summary["groups"][g.name][tool.name] for g in md_groups]
            s = {"structures": sum(m["structures"] for m in means), "failed": sum(m["failed"] for m in means)}
            for key in METRICS:
                s[key] = _nan_mean([m[key] for m in means])
            s["d_residues"] = float(sum(m["d_residues"] for m in means))
            rows = [r for g in md_groups for r in group_rows[g.name][tool.name]]
            pooled = aggregate(rows, sum(group_seconds[(g.name, tool.name)] for g in md_groups), samples, tool.timed)
            for key in ("seconds", "s_per_structure", "s_per_1000_res"):
                s[key] = pooled[key]
            summary["overall"].setdefault(kind, {})[tool.name] = s
            table_rows.append((label, tool.name, s))

    elapsed = time.perf_counter() - t_start
    print(markdown_table(table_rows))
    n_structures = sum(len(group_rows[g.name][tools[0].name]) for g in groups)
    print(f"\n{len(jobs)} file(s), {n_structures} structure(s) per tool, {elapsed:.0f} s in all; torch threads: {_torch_threads()}.")
    if notes:
        print("\nNotes:")
        for entry, lines in notes.items():
            for line in lines:
                print(f"- {entry}: {line}")
    if args.json:
        payload = {
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "elapsed_s": elapsed,
            **summary,
            "per_structure": per_structure,
            "notes": notes,
        }
        args.json.write_text(json.dumps(_json_safe(payload), indent=1) + "\n", encoding="utf-8")
    return 0


def _torch_threads() -> int:
    """Threads torch uses (for the record of the timing conditions)."""
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:  # pragma: no cover
        return 0


def _json_safe(value):
    """Plain-JSON copy: numpy scalars as numbers, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    sys.exit(main())
