"""Out-of-equilibrium training data: high-temperature MD frames of corpus structures.

Coarse-grained simulations visit conformations that no deposited structure
shows. :func:`run_augmentation` takes structures of a corpus cache (one
frame each), heats them through a temperature ladder with amber14 and
implicit solvent (:func:`backmap_plugin.openmm.sampling.sample_structure`)
and writes the saved frames, heavy atoms only, as files that
:func:`backmap_plugin.training.cache.build_cache` reads (kind ``md-aug``, the
parent's ``cluster30`` and split). :func:`append_to_cache` adds them to a
cache. The recipe is ``workflows/augment/`` (README and config).

Input
-----
A structure's input is its cached arrays (``Cache.load``): names already
normalised by the cache build, residues without backbone and unknown amino
acids already dropped, segments (chain breaks, crystal gaps) already found.
Each segment becomes its own chain, so termini are built at gaps instead of
a stretched peptide bond; one-residue segments, which amber14 has no
template for, are left out. Missing heavy atoms are added by PDBFixer
(never missing residues or loops).

Output folder
-------------
``AUG_DIR/config.json``
    The recipe of the folder; a later run with another recipe is refused.
``AUG_DIR/frames/mdaug__<parent>.pdb.gz``
    Multi-model PDB, heavy atoms in the package's standard names and order,
    the parent's residue numbers; written when the structure finishes
    (staged outside the folder, then moved into place).
``AUG_DIR/logs/mdaug__<parent>.json``
    Per-structure log, written last: the *done marker*. ``status`` is
    ``done`` or ``failed`` (with ``stage`` and ``error``); per saved frame
    the target and kinetic temperature, potential energy, C-alpha RMSD to
    the parent frame and the number of D residues; timings and ns/day.
``AUG_DIR/manifest.csv``, ``AUG_DIR/failures.csv``
    Rebuilt from the logs after every structure. The manifest gives
    ``build_cache`` the kind, cluster, split and parent of each file.
``AUG_DIR/summary.json``, ``AUG_DIR/runs.jsonl``
    Figures of the last run and totals of the folder; one line per run.

A run skips structures whose log says ``done`` (and whose frames file
exists) and, unless asked to retry, those that failed; a killed run loses
only the structure in progress.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.io.atomic import atomic_write
from backmap_plugin.training.cache import _write_csv, _write_json

__all__ = [
    "AUG_KIND",
    "AugmentConfig",
    "AugmentSummary",
    "StructureInput",
    "append_to_cache",
    "augment_id",
    "load_config",
    "read_logs",
    "run_augmentation",
    "select_structures",
    "structure_input",
    "write_manifest",
]

#: ``kind`` of augmented entries in the manifest and the cache index.
AUG_KIND = "md-aug"
#: Prefix of augmented entry ids (``mdaug__<parent entry id>``).
AUG_PREFIX = "mdaug__"
CONFIG_FILE = "config.json"
FRAMES_DIR = "frames"
LOGS_DIR = "logs"
MANIFEST_FILE = "manifest.csv"
FAILURES_FILE = "failures.csv"
SUMMARY_FILE = "summary.json"
RUNS_FILE = "runs.jsonl"
MANIFEST_COLUMNS = ("entry_id", "split", "kind", "cluster30", "parent", "parent_source", "n_residues", "n_frames")
FAILURE_COLUMNS = ("entry_id", "parent", "n_residues", "stage", "error")
#: Config keys that choose structures; they may change between runs of a folder.
_SELECTION_KEYS = ("max_residues", "splits")


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    """The augmentation recipe (``workflows/augment/config.json``).

    Attributes
    ----------
    protocol : backmap_plugin.openmm.sampling.SamplingProtocol
        MD settings (temperatures, stage length, save interval, time step,
        hydrogen mass, friction, solvent, pH, minimiser).
    seed : int
        Base seed; each structure's seed is derived from it and the
        parent's hash.
    source_frame : int
        Frame of the cached parent used as the start (the last one if the
        parent has fewer frames).
    max_residues : int
        Largest parent (residues) simulated.
    splits : tuple of str
        Cache splits whose entries are augmented (``train`` only, so the
        validation and test sets stay free of augmented copies).
    description : str
        Free text.
    """

    protocol: object
    seed: int = 0
    source_frame: int = 0
    max_residues: int = 400
    splits: tuple = ("train",)
    description: str = ""

    def recipe(self) -> dict:
        """The settings that make the frames (everything but the structure choice)."""
        out = self.to_dict()
        for key in _SELECTION_KEYS + ("description",):
            out.pop(key, None)
        return out

    def to_dict(self) -> dict:
        """The config as written to ``config.json`` (flat keys)."""
        from backmap_plugin.openmm.sampling import protocol_dict

        return {"description": self.description, **protocol_dict(self.protocol), "seed": self.seed,
                "source_frame": self.source_frame, "max_residues": self.max_residues, "splits": list(self.splits)}


def load_config(config) -> AugmentConfig:
    """Read an augmentation config.

    Parameters
    ----------
    config : str, os.PathLike or dict
        A JSON file or its content: the fields of
        :class:`~backmap_plugin.openmm.sampling.SamplingProtocol` and of
        :class:`AugmentConfig` as flat keys; keys starting with ``_`` are
        comments.

    Returns
    -------
    AugmentConfig

    Raises
    ------
    BackmapInputError
        Unreadable file, unknown keys or invalid values.
    """
    from backmap_plugin.openmm.sampling import SamplingProtocol

    if not isinstance(config, dict):
        try:
            config = json.loads(Path(config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BackmapInputError(f"{config}: cannot read the augmentation config: {exc}") from exc
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    protocol_keys = {f.name for f in fields(SamplingProtocol)}
    own_keys = {f.name for f in fields(AugmentConfig)} - {"protocol"}
    unknown = sorted(set(config) - protocol_keys - own_keys)
    if unknown:
        raise BackmapInputError(f"unknown augmentation config key(s): {', '.join(unknown)}")
    try:
        protocol = SamplingProtocol(**{k: v for k, v in config.items() if k in protocol_keys})
        own = {k: v for k, v in config.items() if k in own_keys}
        if "splits" in own:
            own["splits"] = tuple(own["splits"])
        result = AugmentConfig(protocol=protocol, **own)
    except (TypeError, ValueError) as exc:
        raise BackmapInputError(f"invalid augmentation config: {exc}") from exc
    if result.max_residues < 1 or result.source_frame < 0:
        raise BackmapInputError("max_residues must be >= 1 and source_frame >= 0")
    return result


# --------------------------------------------------------------------------
# Choosing structures and preparing their input
# --------------------------------------------------------------------------


def augment_id(parent_entry_id: str) -> str:
    """Entry id of the augmented frames of a parent entry."""
    return f"{AUG_PREFIX}{parent_entry_id}"


def select_structures(cache, config: AugmentConfig, max_structures: int | None = None,
                      shard: tuple = (0, 1)) -> list:
    """Parents to augment, in the order they are run.

    Entries of ``config.splits`` with at most ``config.max_residues``
    residues, never augmented entries themselves. The order covers clusters
    first: every cluster's smallest entry (smallest clusters' first), then
    every cluster's second smallest, and so on, so a short run spreads over
    as many clusters as it can and runs the cheap structures first.

    Parameters
    ----------
    cache : backmap_plugin.training.cache.Cache
    config : AugmentConfig
    max_structures : int, optional
        Keep the first N of the order (before sharding).
    shard : tuple of int
        ``(k, n)``: keep every n-th structure starting at k, to split the
        work between n processes.

    Returns
    -------
    list of CacheEntry
    """
    candidates = [e for e in cache.entries
                  if e.split in config.splits and e.kind != AUG_KIND and e.n_residues <= config.max_residues]
    by_cluster = defaultdict(list)
    for entry in candidates:
        by_cluster[entry.cluster30].append(entry)
    rank = {}
    for members in by_cluster.values():
        for r, entry in enumerate(sorted(members, key=lambda e: (e.n_residues, e.entry_id))):
            rank[entry.entry_id] = r
    order = sorted(candidates, key=lambda e: (rank[e.entry_id], e.n_residues, e.entry_id))
    if max_structures is not None:
        order = order[: max(0, int(max_structures))]
    k, n = shard
    if not (n >= 1 and 0 <= k < n):
        raise BackmapInputError(f"shard must be K/N with 0 <= K < N, got {k}/{n}")
    return order[k::n]


@dataclass
class StructureInput:
    """A cached entry prepared as simulation input (:func:`structure_input`).

    Attributes
    ----------
    protein : backmap_plugin.core.topology.ProteinTopology
        The residues kept (one-residue segments left out), one chain per
        segment; its ``to_mdtraj()`` is the output layout.
    topology : openmm.app.Topology
        Heavy atoms present in the cache, residues numbered 1..R (so
        insertion codes, which the cache does not keep, cannot merge
        residues); each segment is a chain.
    positions : openmm.unit.Quantity
        Their positions.
    frame : int
        The cached frame used.
    reference : numpy.ndarray
        ``(R, N_SLOTS, 3)`` slots of that frame for the kept residues, Angstrom.
    present : numpy.ndarray
        ``(R, N_SLOTS)`` bool, the slot holds a cached atom.
    """

    protein: object
    topology: object
    positions: object
    frame: int
    reference: np.ndarray
    present: np.ndarray


def structure_input(cache, entry, frame: int = 0) -> StructureInput:
    """A cached entry as simulation input.

    Parameters
    ----------
    cache : backmap_plugin.training.cache.Cache
    entry : CacheEntry
    frame : int
        Cached frame (clipped to the last one).

    Returns
    -------
    StructureInput

    Raises
    ------
    BackmapInputError
        Fewer than two residues left.
    """
    from backmap_plugin.core.topology import ProteinTopology
    from backmap_plugin.io.chains import generated_chain_id
    from backmap_plugin.openmm.structure import array_to_positions

    arrays = cache.load(entry)
    frame = min(int(frame), arrays.xyz.shape[0] - 1)
    segment = np.asarray(arrays.segment)
    sizes = np.bincount(segment)
    keep = sizes[segment] >= 2
    if keep.sum() < 2:
        raise BackmapInputError(f"{entry.entry_id}: fewer than two residues in segments of two or more")
    res_type = np.asarray(arrays.res_type)[keep].astype(np.int64)
    chain = np.asarray(arrays.chain)[keep]
    protein = ProteinTopology(
        names=[chem.RESIDUE_NAMES[t] for t in res_type],
        chain_ids=[generated_chain_id(int(c) % 26) for c in chain],
        res_seq=np.asarray(arrays.res_seq)[keep],
        segment=np.unique(segment[keep], return_inverse=True)[1],
    )
    present = np.asarray(arrays.present)[keep] & protein.slot_mask
    slots = np.asarray(arrays.xyz[frame], dtype=np.float64)[keep]
    md_top = protein.to_mdtraj()
    for number, residue in enumerate(md_top.residues, start=1):
        residue.resSeq = number
    res, slot = protein.atom_order()
    atoms = np.flatnonzero(present[res, slot])
    heavy = md_top.subset(atoms)
    xyz = slots[res[atoms], slot[atoms]] / 10.0
    return StructureInput(protein, heavy.to_openmm(), array_to_positions(xyz), frame, slots, present)


def _output_frames(protein, result) -> np.ndarray:
    """Heavy-atom frames of a sampling result in the layout of ``protein.to_mdtraj()``."""
    position = {}
    for atom in result.topology.atoms():
        position[(atom.residue.index, atom.name)] = atom.index
    res, slot = protein.atom_order()
    index = np.empty(len(res), dtype=np.int64)
    for k, (i, s) in enumerate(zip(res.tolist(), slot.tolist())):
        name = "OXT" if s == chem.SLOT_OXT else chem.RESIDUES[protein.names[i]].atoms[s]
        found = position.get((i, name))
        if found is None:
            raise BackmapInputError(f"atom {name} of residue {i + 1} ({protein.names[i]}) missing after completion")
        index[k] = found
    return result.xyz[:, index]


def _d_residues(xyz: np.ndarray, index: np.ndarray) -> np.ndarray:
    """D residues per frame; ``index`` is (R, N_SLOTS) atom indices, -1 where absent."""
    from backmap_plugin.core.metrics import chirality

    slots = (chem.SLOT_N, chem.SLOT_CA, chem.SLOT_C, chem.SLOT_CB)
    volume = chirality(xyz, *(index[:, s] for s in slots))
    return np.count_nonzero(volume < 0, axis=1)


def _frame_checks(start: StructureInput, frames: np.ndarray) -> tuple:
    """Per frame: C-alpha RMSD (Angstrom) to the start and D residues; D residues of the start."""
    from backmap_plugin.core.metrics import kabsch_rmsd

    protein = start.protein
    index = protein.atom_index
    rmsd = kabsch_rmsd(frames[:, index[:, chem.SLOT_CA]], start.reference[:, chem.SLOT_CA])
    cached = np.where(start.present, index, -1)
    return rmsd, _d_residues(frames, index), int(_d_residues(protein.scatter(start.reference), cached)[0])


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def _write_frames(path: Path, topology, xyz: np.ndarray) -> None:
    """Multi-model PDB, gzipped, moved into place in one step."""
    from backmap_plugin.io.trajectory import write_trajectory

    with tempfile.TemporaryDirectory(prefix="backmap-augment-") as staging:
        plain = os.path.join(staging, "frames.pdb")
        write_trajectory(plain, topology, xyz)
        with open(plain, "rb") as source, atomic_write(path, "wb") as packed, \
                gzip.GzipFile(fileobj=packed, mode="wb", compresslevel=6) as target:
            shutil.copyfileobj(source, target)


def _finite(value):
    return float(value) if value is not None and math.isfinite(value) else None


def read_logs(out_dir) -> dict:
    """Per-structure logs of an augmentation folder, by augmented entry id.

    Parameters
    ----------
    out_dir : str or os.PathLike

    Returns
    -------
    dict
        Entry id -> log dict (unreadable logs are left out).
    """
    logs = {}
    folder = Path(out_dir) / LOGS_DIR
    if not folder.is_dir():
        return logs
    for path in sorted(folder.glob("*.json")):
        try:
            log = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        logs[log.get("entry_id", path.stem)] = log
    return logs


def _is_done(out_dir: Path, log: dict | None) -> bool:
    return bool(log) and log.get("status") == "done" and (out_dir / log.get("output", "-")).is_file()


def write_manifest(out_dir, logs: dict | None = None) -> tuple[int, int]:
    """Rebuild ``manifest.csv`` and ``failures.csv`` from the logs.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Augmentation folder.
    logs : dict, optional
        From :func:`read_logs` (read when None).

    Returns
    -------
    tuple of int
        Structures done and failed.
    """
    out_dir = Path(out_dir)
    logs = read_logs(out_dir) if logs is None else logs
    done = [log for log in logs.values() if _is_done(out_dir, log)]
    failed = [log for log in logs.values() if log.get("status") == "failed"]
    rows = [{"kind": AUG_KIND, **{k: log.get(k, "") for k in MANIFEST_COLUMNS if k != "kind"}} for log in done]
    _write_csv(out_dir / MANIFEST_FILE, MANIFEST_COLUMNS, sorted(rows, key=lambda r: r["entry_id"]))
    _write_csv(out_dir / FAILURES_FILE, FAILURE_COLUMNS, sorted(failed, key=lambda r: r["entry_id"]))
    return len(done), len(failed)


def _check_folder_config(out_dir: Path, config: AugmentConfig) -> None:
    """Write ``config.json`` or check that the folder was made with the same recipe."""
    path = out_dir / CONFIG_FILE
    if path.is_file():
        saved = load_config(path)
        if saved.recipe() != config.recipe():
            changed = sorted(k for k in config.recipe() if saved.recipe().get(k) != config.recipe()[k])
            raise BackmapInputError(
                f"{out_dir} was made with another recipe (differs in {', '.join(changed)}); "
                f"use a new output folder"
            )
    _write_json(path, config.to_dict())


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


def _structure_seed(base: int, parent_hash: str) -> int:
    return int(hashlib.sha256(f"{int(base)}:{parent_hash}".encode()).hexdigest()[:8], 16)


def _augment_one(cache, entry, config: AugmentConfig, out_dir: Path, platform: str) -> dict:
    """Simulate one parent, write its frames and return its log (done or failed)."""
    from backmap_plugin.openmm.sampling import SamplingError, protocol_dict, sample_structure

    started = time.perf_counter()
    aug = augment_id(entry.entry_id)
    seed = _structure_seed(config.seed, entry.hash)
    log = {
        "entry_id": aug, "parent": entry.entry_id, "parent_source": entry.source, "parent_hash": entry.hash,
        "parent_kind": entry.kind, "cluster30": entry.cluster30, "split": entry.split, "kind": AUG_KIND,
        "n_residues_parent": entry.n_residues, "seed": seed, "protocol": protocol_dict(config.protocol),
    }
    try:
        start = structure_input(cache, entry, config.source_frame)
        protein = start.protein
        log.update(source_frame=start.frame, n_residues=protein.n_residues,
                   residues_left_out=entry.n_residues - protein.n_residues)
        result = sample_structure(start.topology, start.positions, config.protocol, seed=seed, platform=platform)
        xyz = _output_frames(protein, result)
        rmsd, d_residues, d_start = _frame_checks(start, xyz)
        if d_residues.max() > d_start:
            raise SamplingError("check", f"{int(d_residues.max())} D residue(s) in the frames, {d_start} at the start: "
                                         f"a C-alpha was inverted")
        log["d_residues_start"] = d_start
    except SamplingError as exc:
        return dict(log, status="failed", stage=exc.stage, error=exc.message,
                    seconds={"total": time.perf_counter() - started})
    except BackmapInputError as exc:
        return dict(log, status="failed", stage="input", error=str(exc),
                    seconds={"total": time.perf_counter() - started})
    except Exception as exc:  # one bad system must never stop the run
        return dict(log, status="failed", stage="error", error=f"{type(exc).__name__}: {exc}",
                    seconds={"total": time.perf_counter() - started})
    output = Path(FRAMES_DIR) / f"{aug}.pdb.gz"
    _write_frames(out_dir / output, protein.to_mdtraj(), xyz)
    frames = [
        dict(record, potential_kj_mol=_finite(record["potential_kj_mol"]),
             kinetic_temperature_k=_finite(record["kinetic_temperature_k"]),
             ca_rmsd_angstrom=round(float(r), 4), d_residues=int(d))
        for record, r, d in zip(result.frames, rmsd, d_residues)
    ]
    seconds = dict(result.seconds, total=time.perf_counter() - started)
    simulated_ns = config.protocol.simulated_ps / 1000.0
    log.update(
        status="done", output=str(output), n_frames=len(frames), platform=result.platform,
        n_atoms=result.n_atoms, n_heavy_atoms=int(xyz.shape[1]), added_heavy_atoms=result.n_added_heavy,
        disulfides=result.n_disulfides, minimized_energy_kj_mol=_finite(result.minimized_energy_kj_mol),
        simulated_ns=simulated_ns, seconds=seconds,
        ns_per_day=simulated_ns / (seconds["dynamics"] / 86400.0) if seconds["dynamics"] > 0 else None,
        frames=frames,
    )
    return log


@dataclass
class AugmentSummary:
    """What :func:`run_augmentation` did.

    Attributes
    ----------
    out_dir : str
    selected : int
        Parents chosen for this run (after ``max_structures`` and sharding).
    done, failed : int
        Structures finished and failed in this run.
    skipped : int
        Selected structures already finished or failed before.
    not_started : int
        Selected structures left for a later run (time limit).
    frames : int
        Frames written in this run.
    simulated_ns : float
        Simulated time of this run's finished structures.
    dynamics_seconds, wall_seconds : float
        Time in MD steps; wall time of the run.
    total_done, total_failed, total_frames, total_clusters : int
        Totals of the folder.
    failures : list of dict
        ``entry_id``, ``stage``, ``error`` of this run's failures.
    platform : str
        Platform of the last finished structure.
    """

    out_dir: str
    selected: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    not_started: int = 0
    frames: int = 0
    simulated_ns: float = 0.0
    dynamics_seconds: float = 0.0
    wall_seconds: float = 0.0
    total_done: int = 0
    total_failed: int = 0
    total_frames: int = 0
    total_clusters: int = 0
    failures: list = field(default_factory=list)
    platform: str = ""

    @property
    def ns_per_day(self) -> float:
        """Simulated ns per day of MD steps (minimisation and set-up excluded)."""
        return self.simulated_ns / (self.dynamics_seconds / 86400.0) if self.dynamics_seconds > 0 else 0.0

    @property
    def frames_per_hour(self) -> float:
        """Frames written per hour of wall time (everything included)."""
        return self.frames / (self.wall_seconds / 3600.0) if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        """JSON-ready dict with the derived rates."""
        return dict(asdict(self), ns_per_day=self.ns_per_day, frames_per_hour=self.frames_per_hour)

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            (f"{self.out_dir}: {self.done} structure(s) done, {self.failed} failed, {self.skipped} skipped "
             f"(finished before), {self.not_started} left; {self.frames} frames, {self.simulated_ns:.3f} ns "
             f"on {self.platform or '-'}: {self.ns_per_day:.1f} ns/day, {self.frames_per_hour:.0f} frames/hour "
             f"in {self.wall_seconds:.0f} s"),
            (f"folder total: {self.total_done} structures, {self.total_frames} frames, "
             f"{self.total_clusters} clusters, {self.total_failed} failed"),
        ]
        lines += [f"  failed {f['entry_id']}: {f['stage']}: {f['error'][:200]}" for f in self.failures]
        return "\n".join(lines)


def run_augmentation(cache_dir, out_dir, config, max_structures: int | None = None, platform: str = "auto",
                     max_residues: int | None = None, shard: tuple = (0, 1), retry_failed: bool = False,
                     max_minutes: float | None = None, progress: bool = False, on_structure=None) -> AugmentSummary:
    """Augment the structures of a cache with high-temperature MD frames.

    Parameters
    ----------
    cache_dir : str or os.PathLike
        Corpus cache (:func:`~backmap_plugin.training.cache.build_cache`).
    out_dir : str or os.PathLike
        Augmentation folder (created); see the module notes for its layout.
    config : str, os.PathLike, dict or AugmentConfig
        The recipe (:func:`load_config`).
    max_structures : int, optional
        Run at most the first N parents of :func:`select_structures`.
    platform : str
        OpenMM platform: ``auto`` (CUDA when present, else CPU), ``CUDA``,
        ``CPU``, ``Reference`` or ``OpenCL``.
    max_residues : int, optional
        Overrides ``config.max_residues`` (structure choice only).
    shard : tuple of int
        ``(k, n)``: this process runs every n-th parent from k.
    retry_failed : bool
        Run structures that failed before again.
    max_minutes : float, optional
        Start no new structure after this many minutes.
    progress : bool
        Progress bar on stderr.
    on_structure : callable, optional
        Called as ``on_structure(log)`` after each structure's files are
        written.

    Returns
    -------
    AugmentSummary

    Raises
    ------
    BackmapInputError
        No cache, a bad config, an output folder made with another recipe.
    ValueError
        A named platform that is not available.
    """
    from tqdm import tqdm

    from backmap_plugin.openmm.platforms import select_platform
    from backmap_plugin.training.cache import open_cache

    started = time.perf_counter()
    config = config if isinstance(config, AugmentConfig) else load_config(config)
    if max_residues is not None:
        config = AugmentConfig(**{**{f.name: getattr(config, f.name) for f in fields(config)},
                                  "max_residues": int(max_residues)})
    select_platform(platform)  # a platform that is not there fails here, not per structure
    cache = open_cache(cache_dir)
    out_dir = Path(out_dir)
    (out_dir / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    _check_folder_config(out_dir, config)

    logs = read_logs(out_dir)
    chosen = select_structures(cache, config, max_structures, shard)
    todo = []
    for entry in chosen:
        log = logs.get(augment_id(entry.entry_id))
        finished = _is_done(out_dir, log) or (log is not None and log.get("status") == "failed" and not retry_failed)
        if not finished:
            todo.append(entry)
    summary = AugmentSummary(out_dir=str(out_dir), selected=len(chosen), skipped=len(chosen) - len(todo))
    bar = tqdm(total=len(todo), desc="augment", unit="structure", file=sys.stderr, disable=not progress or not todo)
    try:
        for position, entry in enumerate(todo):
            if max_minutes is not None and time.perf_counter() - started > 60.0 * max_minutes:
                summary.not_started = len(todo) - position
                break
            bar.set_postfix_str(f"{entry.entry_id} ({entry.n_residues} res)")
            log = _augment_one(cache, entry, config, out_dir, platform)
            _write_json(out_dir / LOGS_DIR / f"{log['entry_id']}.json", log)
            write_manifest(out_dir)  # from the folder: other shards' structures too
            if log["status"] == "done":
                summary.done += 1
                summary.frames += log["n_frames"]
                summary.simulated_ns += log["simulated_ns"]
                summary.dynamics_seconds += log["seconds"]["dynamics"]
                summary.platform = log["platform"]
            else:
                summary.failed += 1
                summary.failures.append({k: log[k] for k in ("entry_id", "stage", "error")})
            bar.update()
            if on_structure is not None:
                on_structure(log)
    finally:
        bar.close()
        summary.wall_seconds = time.perf_counter() - started
        logs = read_logs(out_dir)
        done = [log for log in logs.values() if _is_done(out_dir, log)]
        summary.total_done = len(done)
        summary.total_failed = sum(log.get("status") == "failed" for log in logs.values())
        summary.total_frames = sum(log["n_frames"] for log in done)
        summary.total_clusters = len({log["cluster30"] for log in done})
        write_manifest(out_dir, logs)
        record = dict(summary.to_dict(), finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), platform_asked=platform)
        _write_json(out_dir / SUMMARY_FILE, record)
        with open(out_dir / RUNS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    return summary


def append_to_cache(out_dir, cache_dir, workers: int = 2, progress: bool = False) -> dict:
    """Add an augmentation folder's frames to a cache, keeping everything else.

    ``build_cache`` keeps only the sources it is given, so the cache is
    rebuilt from the sources of its last build (its report) plus
    ``out_dir/frames``, with its own settings; unchanged files are reused,
    only the new frames are parsed. To rebuild such a cache from scratch,
    name the augmentation folder with the other sources:
    ``backmap data build CORPUS AUG_DIR -o CACHE``.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Augmentation folder.
    cache_dir : str or os.PathLike
        Cache to add to.
    workers : int
        Processes parsing files.
    progress : bool
        Progress bar on stderr.

    Returns
    -------
    dict
        :func:`~backmap_plugin.training.cache.build_cache`'s summary plus
        ``missing_sources`` (sources of the last build that no longer exist
        and are dropped).

    Raises
    ------
    BackmapInputError
        ``cache_dir`` is not a cache, or ``out_dir`` is not an augmentation
        folder (no ``frames/`` folder).
    """
    from backmap_plugin.training.cache import build_cache, open_cache

    out_dir = Path(out_dir).resolve()
    cache = open_cache(cache_dir)
    frames = out_dir / FRAMES_DIR
    if not frames.is_dir():
        what = "not an augmentation folder (no frames/)" if out_dir.is_dir() else "no such folder"
        raise BackmapInputError(f"{out_dir}: {what}; nothing to append: make its frames first with "
                                f"'backmap data augment {cache_dir} --config RECIPE -o {out_dir}'")
    write_manifest(out_dir)
    previous = {row["source"] for row in cache.report()} | {e.source for e in cache.entries}
    previous = {p for p in previous if p and frames not in Path(p).resolve().parents}
    missing = sorted(p for p in previous if not os.path.isfile(p))
    sources = sorted(previous - set(missing)) + [str(frames)]
    settings = cache.settings
    summary = build_cache(sources, cache_dir, mapping=settings["mapping"], max_frames=settings["max_frames"],
                          workers=workers, val_fraction=settings.get("val_fraction", 0.1), progress=progress)
    summary["missing_sources"] = missing
    return summary
