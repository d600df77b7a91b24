"""The corpus cache: every structure file turned into memory-mappable arrays.

:func:`build_cache` reads structure files (PDB / mmCIF, gzipped or not,
multi-model files as ensembles), cleans them and stores, per file, the arrays
a generative backmapping model trains on; :func:`open_cache` opens the result
and :meth:`Cache.load` returns an entry's arrays memory-mapped.

Cleaning
--------
Names are normalised by :func:`backmap_plugin.core.topology.read_residues`, which
also drops water, ions, caps and other non-amino-acid residues (reported in
the ``notes`` column of the report). Then, per residue:

* a residue with a name that is not a known amino acid but has a carbon
  ``CA`` (a modified residue without a standard parent, e.g. ``BP5``) is
  dropped and counted; :func:`read_residues` would reject the whole file;
* a residue without ``N``, ``CA`` or ``C`` is dropped and counted;
* a residue missing other heavy atoms is kept, its absent atoms marked in
  ``present`` (never rebuilt) and counted as *masked*.

A file is skipped, with its reason in ``report.csv``, when it cannot be
parsed, has duplicate atoms, or keeps fewer than :data:`MIN_RESIDUES`
residues. Nothing else aborts a build.

Segments (runs of peptide-bonded residues) come from
:func:`backmap_plugin.core.topology.find_segments` on frame 0, with additional
breaks where a residue was dropped or where the C(i)-N(i+1) distance exceeds
:data:`PEPTIDE_BREAK` (crystal gaps can be shorter than the C-alpha
criterion).

Frames
------
A file with more than ``max_frames`` models keeps ``max_frames`` of them at
evenly spaced indices ``round(linspace(0, F - 1, max_frames))`` (first and
last frame included).

Layout on disk
--------------
``CACHE/entries/<hash>/`` per file, ``<hash>`` the sha256 of the file bytes
and the build settings: one ``.npy`` file per array (see
:class:`EntryArrays`) and ``meta.json`` (written last; a skipped file has
only ``meta.json``, so it is not parsed again either). ``CACHE/index.json``
lists the usable entries with their cluster and split, ``CACHE/report.csv``
has one row per source file.

Clusters and splits
-------------------
``cluster30`` and ``kind`` come from the nearest ``manifest.csv`` in the
folder of the source file or a parent folder, keyed by ``entry_id``, the
file name without its extension (columns :data:`MANIFEST_FIELDS`; only
``entry_id`` is required). A ``manifest.csv`` without an ``entry_id`` column
(a user's own table) is ignored with a note and the search goes on
upwards. Files without a manifest row are clustered here (see
:func:`sequence_clusters`) and get kind ``unknown``. The split is
``test`` for entries whose manifest split is ``visible_test`` and otherwise
``val`` or ``train`` by cluster (:func:`split_clusters`: big families train,
the others are drawn by a deterministic hash of the cluster id, and a
corpus of at least two clusters that draws none for validation holds out
its smallest), so a cluster is never on both sides.

Derived entries (augmentation)
------------------------------
A manifest row with a non-empty ``parent`` column (e.g. the ``md-aug``
frames of :mod:`backmap_plugin.training.augment`) describes data derived from
the entry of that id. When the parent is in the same build, the derived
entry takes the parent's ``cluster30`` and split; otherwise its manifest's
``cluster30`` and ``split`` (``train``, ``val`` or ``test``; the parent's at
the time it was made) are kept. Derived entries are not counted by the
big-cluster rule (:data:`BIG_CLUSTER_SHARE`), so adding them never moves
other entries between splits.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.io.atomic import atomic_write
from backmap_plugin.io.paths import LOADED_WHOLE, NEEDS_TOPOLOGY, match_extension

#: Version of the on-disk format; part of every entry hash.
CACHE_FORMAT = 1
#: A file with fewer usable residues is skipped.
MIN_RESIDUES = 10
#: C-alpha distance (Angstrom) that starts a new segment (as in ``backmap run``).
CA_BREAK = 4.5
#: C(i)-N(i+1) distance (Angstrom) above which residues are not bonded.
PEPTIDE_BREAK = 2.0
#: File name endings read from source folders: every format :func:`backmap_plugin.io.frames.open_frames`
#: reads that holds its own topology (PDB as ``.pdb`` or ``.ent``, mmCIF, GRO, gzipped where read so, and HDF5).
STRUCTURE_SUFFIXES = LOADED_WHOLE + (".h5",)
#: File name endings in source folders that are not read but counted in a note: trajectories without
#: a topology.
UNREAD_SUFFIXES = NEEDS_TOPOLOGY
#: How to use a trajectory (which holds no topology) for training: a step that exists.
TRAJECTORY_ADVICE = (
    "write its frames with their topology as one multi-model PDB, e.g. "
    "mdtraj.load(TRAJ, top=TOPOLOGY).save_pdb(FRAMES.pdb), and give that file to 'backmap data build'"
)
#: Report columns, one row per source file.
REPORT_COLUMNS = (
    "entry_id", "status", "reason", "residues_kept", "residues_masked",
    "residues_dropped", "frames", "source", "notes",
)
ENTRIES_DIR = "entries"
INDEX_FILE = "index.json"
REPORT_FILE = "report.csv"
_META_FILE = "meta.json"
_BACKBONE = ("N", "CA", "C")
#: Manifest splits whose entries are held out ("test" in the index).
_TEST_SPLITS = ("visible_test", "test")


@dataclass(frozen=True)
class CacheEntry:
    """One usable entry of the index.

    Attributes
    ----------
    entry_id : str
        Source file name without its extension.
    source : str
        Absolute path of the source file at build time.
    hash : str
        sha256 of the file bytes and the build settings.
    kind : str
        crystal, nmr, md, model, designed (from the manifest) or unknown.
    cluster30 : str
        Sequence cluster id.
    split : str
        ``train``, ``val`` or ``test``.
    n_frames, n_residues : int
        Array sizes.
    dir : str
        Entry folder, relative to the cache root.
    """

    entry_id: str
    source: str
    hash: str
    kind: str
    cluster30: str
    split: str
    n_frames: int
    n_residues: int
    dir: str


@dataclass
class EntryArrays:
    """Arrays of one entry (memory-mapped when loaded by :meth:`Cache.load`).

    ``F`` frames, ``R`` residues, ``S = chemistry.N_SLOTS`` atom slots;
    Angstrom and radians.

    Attributes
    ----------
    xyz : numpy.ndarray
        (F, R, S, 3) float32 heavy-atom coordinates, zero where absent.
    present : numpy.ndarray
        (R, S) bool, the atom is in the file.
    ic : numpy.ndarray
        (F, R, S, 3) float32 bond length, bond angle, torsion of every slot
        from its Z-matrix parents (:func:`backmap_plugin.core.geometry.cartesian_to_internal`
        with the context of :func:`~backmap_plugin.core.geometry.context_indices`
        on ``segment``); zero where the atom is absent.
    beads : numpy.ndarray
        (F, R, 3) float32 CG bead positions of the build's mapping.
    res_type : numpy.ndarray
        (R,) int8 index into :data:`backmap_plugin.core.chemistry.RESIDUE_NAMES`.
    chain : numpy.ndarray
        (R,) int32 chain index, counting from 0 in file order.
    segment : numpy.ndarray
        (R,) int32 segment index, counting from 0.
    res_seq : numpy.ndarray
        (R,) int32 residue numbers as in the file.
    ic_valid : numpy.ndarray
        (R,) bool: the residue is in a segment of at least 3 residues and
        every Z-matrix parent of each of its present atoms is present, so
        ``ic`` rebuilds its present atoms exactly.
    """

    xyz: np.ndarray
    present: np.ndarray
    ic: np.ndarray
    beads: np.ndarray
    res_type: np.ndarray
    chain: np.ndarray
    segment: np.ndarray
    res_seq: np.ndarray
    ic_valid: np.ndarray


_ARRAY_NAMES = tuple(f.name for f in fields(EntryArrays))


class SkipFile(Exception):
    """A file that cannot be used; the message is the report's reason."""


# --------------------------------------------------------------------------
# Reading and cleaning one file
# --------------------------------------------------------------------------


def _frame_indices(n_frames: int, max_frames: int) -> np.ndarray:
    """Evenly spaced frame indices, at most ``max_frames`` of them."""
    if n_frames <= max_frames:
        return np.arange(n_frames)
    return np.unique(np.round(np.linspace(0, n_frames - 1, max_frames)).astype(np.int64))


def _unknown_amino_acids(topology) -> list:
    """Residues with an unknown name and a carbon ``CA``: modified amino acids without a parent."""
    unknown = []
    for residue in topology.residues:
        key = residue.name.strip().upper()
        if len(key) > 1 and chem.standard_residue_name(key) is not None:
            continue
        atoms = list(residue.atoms)
        ca = [a for a in atoms if a.name.strip().upper() == "CA"]
        if len(atoms) > 1 and ca and all(a.element is None or a.element.symbol == "C" for a in ca):
            unknown.append(residue)
    return unknown


def _read_file(path: str, max_frames: int):
    """Load a file and normalise its residues.

    Returns
    -------
    xyz : numpy.ndarray
        (F, n_atoms, 3) float32, the selected frames.
    records : list of ResidueRecord
    notes : list of str
    n_unknown : int
        Residues dropped as unknown amino acids.
    n_file_frames : int
    """
    from backmap_plugin.core.topology import read_residues
    from backmap_plugin.io.frames import open_frames

    trajectory = match_extension(path, NEEDS_TOPOLOGY)
    if trajectory:
        raise SkipFile(f"trajectory without topology: {trajectory} files hold coordinates only; {TRAJECTORY_ADVICE}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = open_frames(path)
            xyz = np.concatenate([chunk.xyz for chunk in source], axis=0)
    except BackmapInputError as exc:
        text = str(exc).replace(f"{path}: ", "")
        kind = "duplicate atoms" if "duplicate atom" in text else "parse error"
        raise SkipFile(f"{kind}: {text}") from exc
    n_file_frames = len(xyz)
    xyz = xyz[_frame_indices(n_file_frames, max_frames)]
    topology = source.topology
    notes = []
    unknown = _unknown_amino_acids(topology)
    if unknown:
        names = sorted({r.name for r in unknown})
        notes.append(f"dropped {len(unknown)} unknown amino acid(s) {' '.join(names)}")
        drop = {r.index for r in unknown}
        keep = np.array([a.index for a in topology.atoms if a.residue.index not in drop], dtype=np.int64)
        topology = topology.subset(keep)
        xyz = xyz[:, keep]
    try:
        records, report = read_residues(topology, os.path.basename(path))
    except BackmapInputError as exc:
        text = str(exc)
        kind = "duplicate atoms" if "duplicate atom" in text else "residue error"
        raise SkipFile(f"{kind}: {text}") from exc
    return xyz, records, notes + report, len(unknown), n_file_frames


def _segments(chain: np.ndarray, slots0: np.ndarray, after_drop: np.ndarray) -> np.ndarray:
    """Segment index per residue: chains, C-alpha gaps, C-N gaps and dropped residues."""
    from backmap_plugin.core.topology import find_segments

    c_to_n = np.linalg.norm(slots0[1:, chem.SLOT_N] - slots0[:-1, chem.SLOT_C], axis=-1)
    new = np.zeros(len(chain), bool)
    new[1:] = (chain[1:] != chain[:-1]) | (c_to_n > PEPTIDE_BREAK) | after_drop[1:]
    return find_segments(np.cumsum(new), slots0[:, chem.SLOT_CA], CA_BREAK).astype(np.int32)


def _ic_valid(present: np.ndarray, res_type: np.ndarray, long_enough: np.ndarray) -> np.ndarray:
    """Residues whose present atoms all have their Z-matrix parents present."""
    parents = chem.ZMATRIX_PARENTS[res_type]  # (R, S, 3) extended slot indices
    in_residue = parents < chem.N_SLOTS
    parent_present = np.take_along_axis(
        present[:, :, None].repeat(3, 2), np.minimum(parents, chem.N_SLOTS - 1), axis=1
    )
    # context slots hold neighbouring C-alphas, present in every kept residue
    ok = ~present[:, :, None] | ~in_residue | parent_present
    return long_enough & ok.all(axis=(1, 2))


def _internal_coordinates(slots: np.ndarray, present: np.ndarray, res_type: np.ndarray, segment: np.ndarray):
    """(F, R, S, 3) internal coordinates in float64 (zero where absent) and ic_valid."""
    import torch

    from backmap_plugin.core import geometry

    refs, long_enough = geometry.context_indices(segment)
    ext = geometry.extend_with_context(torch.from_numpy(slots.astype(np.float64)), refs)
    ic = geometry.cartesian_to_internal(ext, torch.from_numpy(res_type.astype(np.int64))).numpy()
    ic = np.where(present[None, :, :, None], ic, 0.0)
    return ic, _ic_valid(present, res_type, long_enough)


def process_file(path: str, mapping: str = "ca", max_frames: int = 50) -> tuple[EntryArrays, dict]:
    """Read, clean and convert one structure file.

    Parameters
    ----------
    path : str
        PDB or mmCIF file (gzipped or not); several models are frames.
    mapping : str
        CG mapping of the beads (:func:`backmap_plugin.core.mappings.get_mapping`).
    max_frames : int
        Frames kept, evenly spaced.

    Returns
    -------
    arrays : EntryArrays
    stats : dict
        ``residues_kept``, ``residues_masked``, ``residues_dropped``,
        ``frames``, ``file_frames``, ``notes`` (list of str) and
        ``chains`` (one-letter sequence per chain).

    Raises
    ------
    SkipFile
        The file cannot be used; the message says why.
    """
    from backmap_plugin.core.mappings import get_mapping
    from backmap_plugin.core.topology import gather_slots

    xyz, records, notes, n_unknown, n_file_frames = _read_file(path, max_frames)
    complete = np.array([all(a in r.atoms for a in _BACKBONE) for r in records], dtype=bool)
    n_incomplete = int((~complete).sum())
    if n_incomplete:
        notes.append(f"dropped {n_incomplete} residue(s) without N, CA or C")
    kept = [r for r, ok in zip(records, complete) if ok]
    if len(kept) < MIN_RESIDUES:
        raise SkipFile(f"too few residues: {len(kept)} usable residue(s), need {MIN_RESIDUES}")
    # a kept residue right after a dropped one starts a new segment
    after_drop = np.zeros(len(records), bool)
    after_drop[1:] = ~complete[:-1]
    after_drop = after_drop[complete]

    slots, present = gather_slots(xyz, kept)
    res_type = np.array([chem.RESIDUE_INDEX[r.name] for r in kept], dtype=np.int64)
    _, chain = np.unique([r.chain for r in kept], return_inverse=True)
    chain = chain.astype(np.int32)
    segment = _segments(chain, slots[0], after_drop)
    ic, ic_valid = _internal_coordinates(slots, present, res_type, segment)
    beads = get_mapping(mapping).bead_positions(slots, present, res_type)
    expected = chem.SLOT_EXISTS[res_type][:, : chem.SLOT_OXT]
    masked = (expected & ~present[:, : chem.SLOT_OXT]).any(axis=1)

    arrays = EntryArrays(
        xyz=slots.astype(np.float32),
        present=present,
        ic=ic.astype(np.float32),
        beads=np.asarray(beads, dtype=np.float32),
        res_type=res_type.astype(np.int8),
        chain=chain,
        segment=segment,
        res_seq=np.array([r.res_seq for r in kept], dtype=np.int32),
        ic_valid=ic_valid,
    )
    sequences = ["".join(chem.THREE_TO_ONE[kept[i].name] for i in np.flatnonzero(chain == c))
                 for c in range(int(chain.max()) + 1)]
    stats = {
        "residues_kept": len(kept),
        "residues_masked": int(masked.sum()),
        "residues_dropped": n_incomplete + n_unknown,
        "frames": int(len(slots)),
        "file_frames": n_file_frames,
        "notes": notes,
        "chains": sequences,
    }
    return arrays, stats


# --------------------------------------------------------------------------
# Hashing, storage
# --------------------------------------------------------------------------


def entry_id_of(path) -> str:
    """Entry id of a source file: its name without the structure (or trajectory) extension."""
    name = Path(path).name
    suffix = match_extension(name, STRUCTURE_SUFFIXES + UNREAD_SUFFIXES)
    return name[: -len(suffix)] if suffix else name


def scan_sources(sources) -> tuple[list[Path], list[Path]]:
    """Structure files named by ``sources``, and the files in its folders that are not read.

    Parameters
    ----------
    sources : sequence of str or path-like
        Files (each is read, whatever its name) and folders, searched
        recursively for names ending in one of :data:`STRUCTURE_SUFFIXES`
        (any case).

    Returns
    -------
    structures : list of pathlib.Path
        Resolved, sorted, without duplicates.
    unread : list of pathlib.Path
        Files in the folders ending in one of :data:`UNREAD_SUFFIXES`.

    Raises
    ------
    BackmapInputError
        A source that does not exist.
    """
    found, unread = [], []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            files = [p for p in src.rglob("*") if p.is_file()]
            found += [p for p in files if match_extension(p.name, STRUCTURE_SUFFIXES)]
            unread += [p for p in files if match_extension(p.name, UNREAD_SUFFIXES)]
        elif src.is_file():
            found.append(src)
        else:
            raise BackmapInputError(f"{src}: no such file or folder")
    return sorted({p.resolve() for p in found}), sorted({p.resolve() for p in unread})


def _unread_notes(unread: list[Path]) -> list[str]:
    """Notes on the files of the source folders that are not read (trajectories)."""
    if not unread:
        return []
    return [f"{len(unread)} trajectory file(s) in the source folders not read (e.g. {unread[0]}): they hold no "
            f"topology; for each, {TRAJECTORY_ADVICE}"]


def _settings(mapping: str, max_frames: int) -> dict:
    return {"format": CACHE_FORMAT, "mapping": mapping, "max_frames": int(max_frames),
            "ca_break": CA_BREAK, "peptide_break": PEPTIDE_BREAK, "min_residues": MIN_RESIDUES}


def file_hash(path, settings: dict) -> str:
    """sha256 (hex) of a file's bytes followed by the JSON of the build settings."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def _entry_dir(cache_dir: Path, digest: str) -> Path:
    return cache_dir / ENTRIES_DIR / digest[:24]


def _read_meta(directory: Path) -> dict | None:
    try:
        with open(directory / _META_FILE, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _build_entry(task) -> dict:
    """Worker: process one file into its entry folder; returns the entry's meta."""
    path, digest, directory, mapping, max_frames = task
    directory = Path(directory)
    started = time.perf_counter()
    meta = {"hash": digest, "source": path}
    try:
        arrays, stats = process_file(path, mapping, max_frames)
        meta.update(status="ok", reason="", **stats)
    except SkipFile as exc:
        arrays, meta = None, dict(meta, status="skipped", reason=str(exc).splitlines()[0])
    except Exception as exc:  # a bad file must never abort the build
        arrays = None
        first_line = (str(exc).splitlines() or [""])[0]
        meta.update(status="skipped", reason=f"parse error: {type(exc).__name__}: {first_line}")
    meta["seconds"] = round(time.perf_counter() - started, 3)
    tmp = directory.with_name(f".tmp-{directory.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if arrays is not None:
        for name in _ARRAY_NAMES:
            with atomic_write(tmp / f"{name}.npy", "wb") as handle:  # synced before the folder moves
                np.save(handle, getattr(arrays, name))
    with atomic_write(tmp / _META_FILE) as handle:
        json.dump(meta, handle)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return meta


def _init_worker() -> None:
    """A parsing process: one thread, and SIGTERM (the pool's end) ends it as by default, not as the ``backmap``
    command's handler, inherited through ``fork``, does (a traceback per process)."""
    import signal

    import torch

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)


def _run_tasks(tasks: list, workers: int, progress: bool) -> list[dict]:
    """Run :func:`_build_entry` over tasks (largest files first) with a progress bar."""
    from tqdm import tqdm

    tasks = sorted(tasks, key=lambda t: os.path.getsize(t[0]), reverse=True)
    bar = tqdm(total=len(tasks), desc="building cache", unit="file", file=sys.stderr,
               disable=not progress or not tasks)
    results = []
    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                results.append(_build_entry(task))
                bar.update()
        else:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
                for meta in pool.imap_unordered(_build_entry, tasks):
                    results.append(meta)
                    bar.update()
    finally:
        bar.close()
    return results


# --------------------------------------------------------------------------
# Manifest, clusters, splits
# --------------------------------------------------------------------------


#: Name of the manifest looked for in the folder of each source file and its parent folders.
MANIFEST_FILE = "manifest.csv"
#: Manifest columns read (``entry_id`` required, the others optional).
MANIFEST_FIELDS = ("entry_id", "cluster30", "kind", "split", "parent")


def _read_manifest(path: Path) -> tuple[dict | None, str]:
    """Rows of a manifest keyed by ``entry_id``, or None and why it is not one."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if "entry_id" not in (reader.fieldnames or ()):
                return None, "it has no entry_id column"
            return {row["entry_id"]: row for row in reader}, ""
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return None, f"it cannot be read as CSV ({type(exc).__name__}: {exc})"


def _folder_manifest(folder: Path, found: dict, notes: list) -> dict | None:
    """Rows of the manifest of one folder (None: none there, or ignored with a note); cached in ``found``."""
    if folder not in found:
        rows, why = None, ""
        if (folder / MANIFEST_FILE).is_file():
            rows, why = _read_manifest(folder / MANIFEST_FILE)
        if why:
            notes.append(f"ignored {folder / MANIFEST_FILE}: {why} (a build manifest has the columns "
                         f"{', '.join(MANIFEST_FIELDS)})")
        found[folder] = rows
    return found[folder]


def _find_manifest(path: Path, found: dict, notes: list) -> dict:
    """Rows of the nearest manifest in the folder of ``path`` or a parent folder ({} for none).

    A ``manifest.csv`` without an ``entry_id`` column, or one that cannot be
    read, is ignored with a note in ``notes`` and the search goes on upwards.
    """
    for folder in path.parents:
        rows = _folder_manifest(folder, found, notes)
        if rows is not None:
            return rows
    return {}


def _kmers(sequence: str, k: int) -> set:
    return {sequence[i:i + k] for i in range(len(sequence) - k + 1)}


def sequence_clusters(chains: dict, k: int = 3, min_shared: float = 0.3) -> dict:
    """Cluster entries by chain sequence similarity (fallback without a manifest).

    Greedy single linkage over chains: two chains link when they are
    identical or when at least ``min_shared`` of the distinct ``k``-mers of
    the shorter chain occur in the longer one; entries link when any of
    their chains link. This alignment-free proxy links identical and close
    homologues (roughly >= 60 % identity for the defaults), less than the
    manifest's mmseqs2 30 % identity clustering; prefer a manifest.

    Parameters
    ----------
    chains : dict
        Key (entry) -> list of one-letter chain sequences.
    k : int
        k-mer length.
    min_shared : float
        Fraction of shared k-mers that links two chains.

    Returns
    -------
    dict
        Key -> cluster id ``auto-<10 hex>``, a hash of the cluster's
        smallest chain sequence (stable while membership is).
    """
    keys = sorted(chains)
    parent = {key: key for key in keys}

    def root(key):
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    items = sorted(((seq, key) for key in keys for seq in set(chains[key]) if seq),
                   key=lambda item: (-len(item[0]), item[0], item[1]))
    representatives: list[tuple[str, set, str]] = []  # (sequence, k-mers, entry)
    for seq, key in items:
        kmers = _kmers(seq, k)
        for rep_seq, rep_kmers, rep_key in representatives:
            shorter = min(len(kmers), len(rep_kmers)) or 1
            if seq == rep_seq or len(kmers & rep_kmers) / shorter >= min_shared:
                parent[root(key)] = root(rep_key)
                break
        else:
            representatives.append((seq, kmers, key))
    members: dict = {}
    for key in keys:
        members.setdefault(root(key), []).append(key)
    out = {}
    for group in members.values():
        smallest = min((s for key in group for s in chains[key] if s), default="|".join(sorted(group)))
        cluster = "auto-" + hashlib.sha256(smallest.encode()).hexdigest()[:10]
        out.update({key: cluster for key in group})
    return out


#: Clusters of more than one entry and more than this share of the entries are never drawn for validation.
BIG_CLUSTER_SHARE = 0.05


def _split_value(cluster: str) -> float:
    """A deterministic number in [0, 1) from the cluster id."""
    return int.from_bytes(hashlib.sha256(f"split:{cluster}".encode()).digest()[:8], "big") / 2.0**64


def cluster_split(cluster: str, val_fraction: float) -> str:
    """``val`` or ``train`` from a deterministic hash of the cluster id."""
    return "val" if _split_value(cluster) < val_fraction else "train"


def is_big_cluster(size: int, n_entries: int) -> bool:
    """The big-cluster rule: more than :data:`BIG_CLUSTER_SHARE` of ``n_entries``, and more than one entry.

    A family that large (antibodies) always trains: held out, it would take
    a large part of the data away. A single entry is never big, so the
    rule leaves the clusters of a corpus of fewer than 20 entries to the
    hash draw too.
    """
    return size > max(1.0, BIG_CLUSTER_SHARE * n_entries)


def split_clusters(sizes: dict, n_entries: int, val_fraction: float) -> tuple[dict, str | None]:
    """Split (``train`` or ``val``) of each cluster, deterministic.

    A big cluster (:func:`is_big_cluster`) trains; the others are drawn by
    :func:`cluster_split`. Two corrections make a small corpus usable, and
    leave a draw with both splits unchanged (every large corpus):

    * when every cluster is drawn for validation (a single cluster, or a
      fraction near 1), the largest one (ties: the highest hash) trains;
    * when ``val_fraction > 0`` and at least two clusters draw none for
      validation (a small corpus, or a small fraction), the one with the
      fewest entries (ties: the hash nearest to being drawn) is held out,
      so that asking for a validation split gives one.

    Parameters
    ----------
    sizes : dict
        Cluster id -> number of entries (of the whole build) in it; the
        clusters to split.
    n_entries : int
        Entries the big-cluster rule counts.
    val_fraction : float
        Expected fraction of clusters in the validation split.

    Returns
    -------
    splits : dict
        Cluster id -> ``train`` or ``val``.
    held_out : str or None
        The cluster held out because none was drawn, None otherwise.
    """
    splits = {c: "train" if is_big_cluster(n, n_entries) else cluster_split(c, val_fraction)
              for c, n in sizes.items()}
    if splits and "train" not in splits.values():
        splits[max(splits, key=lambda c: (sizes[c], _split_value(c)))] = "train"
    if val_fraction <= 0 or len(splits) < 2 or "val" in splits.values():
        return splits, None
    held_out = min(splits, key=lambda c: (sizes[c], _split_value(c)))
    splits[held_out] = "val"
    return splits, held_out


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _split_notes(splits: dict, held_out: str | None, sizes: dict, val_fraction: float) -> list[str]:
    """Notes on a validation split that was not drawn (:func:`split_clusters`)."""
    if held_out is not None:
        return [f"no cluster was drawn for validation at val_fraction {val_fraction:g}, so the smallest one, "
                f"{held_out} ({_entries(sizes[held_out])}), is held out for validation"]
    if val_fraction > 0 and len(splits) == 1:
        return [f"no validation split: the train/val entries form a single sequence cluster, {next(iter(splits))}, "
                "and a cluster is never on both sides; val_fraction needs at least 2 clusters "
                "(training runs without validation)"]
    return []


# --------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------


def _write_csv(path: Path, columns, rows: list) -> None:
    """Write a CSV table atomically (:func:`backmap_plugin.io.atomic.atomic_write`)."""
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _write_report(cache_dir: Path, rows: list[dict]) -> None:
    _write_csv(cache_dir / REPORT_FILE, REPORT_COLUMNS, rows)


def _write_json(path: Path, data) -> None:
    """Write compact JSON (indent 1) atomically (:func:`backmap_plugin.io.atomic.atomic_write`)."""
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=1)


def _report_row(entry_id: str, meta: dict) -> dict:
    return {
        "entry_id": entry_id,
        "status": meta["status"],
        "reason": meta.get("reason", ""),
        "residues_kept": meta.get("residues_kept", 0),
        "residues_masked": meta.get("residues_masked", 0),
        "residues_dropped": meta.get("residues_dropped", 0),
        "frames": meta.get("frames", 0),
        "source": meta["source"],
        "notes": "; ".join(meta.get("notes", [])),
    }


def _assign_splits(primary: list[dict], val_fraction: float) -> list[str]:
    """Set the split of the entries without one (:func:`split_clusters`); notes on the validation split."""
    all_sizes = Counter(entry["cluster30"] for entry in primary)
    sizes = {entry["cluster30"]: all_sizes[entry["cluster30"]] for entry in primary if entry["split"] is None}
    splits, held_out = split_clusters(sizes, len(primary), val_fraction)
    for entry in primary:
        if entry["split"] is None:
            entry["split"] = splits[entry["cluster30"]]
    return _split_notes(splits, held_out, sizes, val_fraction)


def _inherit_from_parents(entries: list, derived: dict, val_fraction: float) -> None:
    """Cluster and split of derived entries: the parent's, else their manifest's."""
    by_id = {entry["entry_id"]: entry for k, entry in enumerate(entries) if k not in derived}
    for k, info in derived.items():
        entry, parent = entries[k], by_id.get(info["parent"])
        if parent is not None:
            entry["cluster30"], entry["split"] = parent["cluster30"], parent["split"]
        elif info.get("split") in ("train", "val"):
            entry["split"] = info["split"]
        elif entry["split"] is None:
            entry["split"] = cluster_split(entry["cluster30"], val_fraction)


def build_cache(
    sources,
    cache_dir,
    mapping: str = "ca",
    max_frames: int = 50,
    workers: int = 2,
    val_fraction: float = 0.1,
    progress: bool = False,
) -> dict:
    """Build or update a corpus cache.

    Only files whose hash (bytes + settings) has no finished entry folder
    are parsed; entries of files that are no longer among the sources are
    dropped from the index and their folders removed.

    Parameters
    ----------
    sources : sequence of str or path-like
        Structure files and folders (searched recursively for the names of
        :data:`STRUCTURE_SUFFIXES`; trajectories there are counted in a
        note, see :func:`scan_sources`).
    cache_dir : str or path-like
        Cache folder (created).
    mapping : str
        CG mapping of the stored beads (``ca`` or ``com``).
    max_frames : int
        Frames kept per file, evenly spaced.
    workers : int
        Processes parsing files.
    val_fraction : float
        Expected fraction of clusters in the validation split.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    dict
        ``files``, ``built``, ``reused``, ``skipped`` (files not usable),
        ``removed`` (folders of vanished or changed sources deleted),
        ``entries``, ``clusters``, ``splits`` (entries per split),
        ``up_to_date`` (nothing parsed and index unchanged), ``seconds``,
        ``report`` (path of ``report.csv``) and ``notes`` (list of str: files
        of the folders not read, manifests ignored, how the validation
        split came about when it was not drawn).

    Raises
    ------
    BackmapInputError
        A source that does not exist, invalid settings, no structure file
        among the sources, or no usable entry (the message says why the
        files were skipped; nothing is written: an existing ``cache_dir`` is
        left as it was, one that the build created is removed).
    """
    from backmap_plugin.core.mappings import get_mapping

    start = time.perf_counter()
    get_mapping(mapping)  # raises for an unknown name
    if isinstance(max_frames, bool) or int(max_frames) < 1:
        raise BackmapInputError(f"max_frames must be a positive integer, got {max_frames!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise BackmapInputError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    paths, unread = scan_sources(sources)
    notes = _unread_notes(unread)
    if not paths:
        raise BackmapInputError(_no_files_message(sources, notes))
    cache_dir = Path(cache_dir)
    created = _first_missing(cache_dir / ENTRIES_DIR)
    (cache_dir / ENTRIES_DIR).mkdir(parents=True, exist_ok=True)
    settings = _settings(mapping, max_frames)
    hashes = {path: file_hash(path, settings) for path in paths}

    metas: dict[str, dict] = {}
    tasks = []
    for path, digest in hashes.items():
        if digest in metas:
            continue
        directory = _entry_dir(cache_dir, digest)
        meta = _read_meta(directory)
        if meta is not None and meta.get("hash") == digest:
            metas[digest] = meta
        else:
            metas[digest] = None
            tasks.append((str(path), digest, str(directory), mapping, int(max_frames)))
    for meta in _run_tasks(tasks, workers, progress):
        metas[meta["hash"]] = meta

    # index: usable entries with clusters and splits
    manifests: dict = {}
    rows, entries, unclustered = [], [], {}
    derived: dict = {}  # entry position -> manifest row naming a parent
    for path, digest in hashes.items():
        meta = metas[digest]
        entry_id = entry_id_of(path)
        rows.append(_report_row(entry_id, dict(meta, source=str(path))))
        if meta["status"] != "ok":
            continue
        info = _find_manifest(path, manifests, notes).get(entry_id)
        entry = {
            "entry_id": entry_id, "source": str(path), "hash": digest,
            "kind": (info or {}).get("kind") or "unknown",
            "cluster30": (info or {}).get("cluster30") or None,
            "split": "test" if info and info.get("split") in _TEST_SPLITS else None,
            "n_frames": meta["frames"], "n_residues": meta["residues_kept"],
            "dir": str(_entry_dir(cache_dir, digest).relative_to(cache_dir)),
        }
        if entry["cluster30"] is None:
            unclustered[str(path)] = meta["chains"]
        if info and info.get("parent"):
            derived[len(entries)] = info
        entries.append(entry)
    if not entries:
        _leave_as_it_was(created, tasks)
        raise BackmapInputError(_nothing_usable(cache_dir, rows, created))
    computed = sequence_clusters(unclustered) if unclustered else {}
    for entry in entries:
        if entry["cluster30"] is None:
            entry["cluster30"] = computed[entry["source"]]
    notes += _assign_splits([entry for k, entry in enumerate(entries) if k not in derived], val_fraction)
    _inherit_from_parents(entries, derived, val_fraction)
    index = {"format": CACHE_FORMAT, "settings": dict(settings, val_fraction=val_fraction),
             "entries": entries}

    old_index = None
    if (cache_dir / INDEX_FILE).is_file():
        try:
            old_index = json.loads((cache_dir / INDEX_FILE).read_text(encoding="utf-8"))
        except ValueError:
            old_index = None
    _write_json(cache_dir / INDEX_FILE, index)
    _write_report(cache_dir, rows)

    keep = {_entry_dir(cache_dir, d).name for d in hashes.values()}
    removed = 0
    for child in (cache_dir / ENTRIES_DIR).iterdir():
        if child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)
            removed += not child.name.startswith(".tmp-")

    splits: dict = {}
    for entry in entries:
        splits[entry["split"]] = splits.get(entry["split"], 0) + 1
    return {
        "cache_dir": str(cache_dir),
        "files": len(paths),
        "built": len(tasks),
        "reused": len(paths) - len(tasks),
        "skipped": sum(row["status"] != "ok" for row in rows),
        "removed": removed,
        "entries": len(entries),
        "clusters": len({e["cluster30"] for e in entries}),
        "splits": splits,
        "up_to_date": not tasks and removed == 0 and old_index == index,
        "seconds": time.perf_counter() - start,
        "report": str(cache_dir / REPORT_FILE),
        "notes": notes,
    }


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder on the path to ``folder`` that is not there (what making ``folder`` creates), else
    None."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _leave_as_it_was(created: Path | None, tasks: list) -> None:
    """Undo a build that keeps no structure: remove the folder it created (``created``: the outermost, see
    :func:`_first_missing`), else the entry folders its ``tasks`` wrote into the earlier build's cache."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    for task in tasks:
        shutil.rmtree(task[2], ignore_errors=True)


def _nothing_usable(cache_dir: Path, rows: list[dict], created: Path | None) -> str:
    """The error of a build whose every file was skipped (``rows``: its report's), which wrote nothing: how many
    files each kind of reason skipped, one file's reason, and what became of the folder."""
    kinds = Counter(row["reason"].split(":")[0] for row in rows)
    reasons = ", ".join(f"{reason}: {n}" for reason, n in kinds.most_common())
    made = created is not None and created != cache_dir / ENTRIES_DIR
    kept = f"{created}, which this build created, was removed" if made else f"{cache_dir} is left as it was"
    return (f"{cache_dir}: no usable structure: all {len(rows)} file(s) were skipped (files by reason: {reasons}), "
            f"e.g. {rows[0]['source']}: {rows[0]['reason']}; nothing was cached: {kept}")


def _no_files_message(sources, notes: list[str]) -> str:
    """The error for sources without a structure file."""
    names = ", ".join(str(src) for src in sources)
    suffixes = ", ".join(STRUCTURE_SUFFIXES)
    return "; ".join([f"{names}: no structure file found (the folders are searched for {suffixes})"] + notes)


# --------------------------------------------------------------------------
# Reading a cache
# --------------------------------------------------------------------------


class Cache:
    """A built corpus cache (see :func:`open_cache`).

    Attributes
    ----------
    root : pathlib.Path
        Cache folder.
    settings : dict
        Build settings (mapping, max_frames, val_fraction ...).
    entries : list of CacheEntry
        Usable entries in index order.
    """

    def __init__(self, root):
        self.root = Path(root)
        path = self.root / INDEX_FILE
        if not path.is_file():
            raise BackmapInputError(f"{self.root}: not a corpus cache (no {INDEX_FILE}); run 'backmap data build'")
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("format") != CACHE_FORMAT:
            raise BackmapInputError(
                f"{self.root}: cache format {index.get('format')} is not {CACHE_FORMAT}; rebuild it"
            )
        self.settings = index["settings"]
        self.entries = [CacheEntry(**entry) for entry in index["entries"]]

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r}, entries={len(self.entries)})"

    def select(self, split: str | None = None) -> list[int]:
        """Indices of the entries of one split (all entries for None)."""
        return [i for i, e in enumerate(self.entries) if split is None or e.split == split]

    def load(self, entry: CacheEntry | int, mmap: bool = True) -> EntryArrays:
        """Arrays of one entry.

        Parameters
        ----------
        entry : CacheEntry or int
            An entry of :attr:`entries` or its index.
        mmap : bool
            Memory-map the arrays read-only (default) instead of reading them.
        """
        if not isinstance(entry, CacheEntry):
            entry = self.entries[entry]
        directory = self.root / entry.dir
        mode = "r" if mmap else None
        return EntryArrays(**{name: np.load(directory / f"{name}.npy", mmap_mode=mode) for name in _ARRAY_NAMES})

    def report(self) -> list[dict]:
        """Rows of ``report.csv`` (one per source file of the last build)."""
        path = self.root / REPORT_FILE
        if not path.is_file():
            return []
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))


def open_cache(cache_dir) -> Cache:
    """Open a cache made by :func:`build_cache`.

    Raises
    ------
    BackmapInputError
        The folder has no index or one of another format version.
    """
    return Cache(cache_dir)

