"""Martini 3 benchmark: all-atom structures mapped to Martini 3 beads, rebuilt by the fitted builder.

Every structure is mapped to Martini 3 beads with
:func:`backmap_plugin.core.martini3.martini3_bead_positions` (heavy atoms,
as ``martinize2`` does for an input without hydrogens; OXT in BB where the
structure has it) and rebuilt with
:func:`backmap_plugin.build.martini.backmap_martini3`. The output is scored
against the structure by the package's scoring code
(:mod:`backmap_plugin.core.metrics`):

* ``bead_bb`` / ``bead_sc``: RMSD (no superposition) between the output's
  beads (mapped back with ``martini3_bead_positions``, the output's OXT in
  BB) and the input beads, backbone beads and side-chain beads apart;
* ``rmsd_all`` / ``rmsd_sc``: heavy-atom RMSD after optimal superposition
  (:func:`~backmap_plugin.core.metrics.kabsch_rmsd`) over the atoms present
  in both (OXT left out), and over the side-chain atoms beyond CB alone;
* ``rmsd_all_sym`` / ``rmsd_sc_sym``: the same after chemically
  equivalent atoms (ASP OD1/OD2 ...) take the truth's labelling
  (``accuracy.matched_rmsd``; why: ``benchmarks/accuracy.py``);
* ``clashes``: heavy-atom pairs closer than 2.0 Angstrom, more than three
  bonds apart, per 100 residues
  (:func:`~backmap_plugin.core.metrics.clashes_per_100_residues`);
* ``bonds_off``: fraction of bonds more than 0.1 Angstrom off their ideal
  length; ``d_residues``: residues with D chirality at CA;
* ``seconds`` / ``cpu_seconds``: wall and CPU (process) time of ``backmap_martini3`` (one warm-up run
  first); on a shared machine the CPU time is the steadier figure.

A multi-frame file (``--kind md``) keeps ``--max-frames`` frames, evenly
spread, rebuilt as one batch as ``backmap run`` builds a trajectory chunk;
its row holds the means over its frames, and the time per residue counts
every frame.

Residues missing a heavy atom (OXT aside) are left out of input and scoring
(noted); the chain is cut there (``BREAK_DISTANCE`` on BB beads).

Default set: a fixed random sample of crystal structures of the ``train``
split (tuning). ``--split visible_test`` measures on the held-out crystal set
(measurement only: never tune on it). Run with ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import mdtraj as md
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import frame_indices, matched_rmsd  # noqa: E402  (the benchmarks' one frame selection and scoring)
from corpus import add_data_option, corpus  # noqa: E402

from backmap_plugin.build.martini import BREAK_DISTANCE, backmap_martini3
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import martini3 as m3
from backmap_plugin.core import metrics
from backmap_plugin.core.topology import gather_slots, protein_topology, read_residues

_REPO = Path(__file__).resolve().parents[1]
SIDE_CHAIN_SLOTS = np.arange(chem.SLOT_CB + 1, chem.SLOT_OXT)


def pick_entries(data: Path, split: str, count: int, seed: int, max_residues: int, kind: str) -> list[str]:
    """Entry ids of ``split`` and ``kind`` from ``manifest.csv``: a fixed random sample of ``count`` (0: all)."""
    with open(data / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle)
                if r["split"] == split and r["kind"] == kind and int(r["n_residues"]) <= max_residues]
    rows.sort(key=lambda r: r["entry_id"])
    if 0 < count < len(rows):
        pick = np.random.default_rng(seed).choice(len(rows), count, replace=False)
        rows = [rows[i] for i in sorted(pick)]
    return [r["entry_id"] for r in rows]


def load_structure(path: Path, max_frames: int = 1):
    """Frames of an all-atom file: complete residues in slots, their topology and notes.

    Parameters
    ----------
    path : Path
    max_frames : int
        Frames kept, evenly spread over the file (:func:`accuracy.frame_indices`; 0: all).

    Returns
    -------
    protein : ProteinTopology
        Segments from the BB beads (:data:`BREAK_DISTANCE`).
    slots : numpy.ndarray
        (F, R, N_SLOTS, 3) float64, Angstrom.
    present : numpy.ndarray
        (R, N_SLOTS) bool.
    beads : numpy.ndarray
        (F, R, MAX_BEADS, 3) Martini 3 beads of the frames.
    notes : list of str
    """
    traj = md.load(str(path))
    traj = traj[frame_indices(traj.n_frames, max_frames)]
    records, notes = read_residues(traj.topology, path.name)
    slots, present = gather_slots(traj.xyz.astype(np.float64) * 10.0, records)
    res_type = np.array([chem.RESIDUE_INDEX[r.name] for r in records])
    need = chem.SLOT_EXISTS[res_type].copy()
    need[:, chem.SLOT_OXT] = False
    complete = (present | ~need).all(1)
    if not complete.all():
        notes.append(f"{int((~complete).sum())} incomplete residue(s) left out")
    chain = np.array([r.chain for r in records])
    alone = np.array([(chain == c).sum() == 1 for c in chain])
    if (alone & complete).any():
        notes.append(f"{int((alone & complete).sum())} one-residue chain(s) left out")
    complete &= ~alone
    records = [r for r, ok in zip(records, complete) if ok]
    slots, present, res_type = slots[:, complete], present[complete], res_type[complete]
    beads = np.stack([m3.martini3_bead_positions(frame, present, res_type) for frame in slots])
    protein = protein_topology(records, beads[0, :, 0], BREAK_DISTANCE)
    # OXT only where the structure has it at the end of a segment: elsewhere it is not scored
    present = present.copy()
    present[:, chem.SLOT_OXT] &= protein.c_terminal
    return protein, slots, present, beads, notes


def score(protein, truth, present, out, beads) -> dict:
    """Scores of one rebuilt structure (see the module docstring)."""
    exists = m3.BEAD_EXISTS[protein.res_type]
    out_beads = m3.martini3_bead_positions(out, protein.slot_mask, protein.res_type)
    miss = np.linalg.norm(out_beads - beads, axis=-1)
    bb, sc = miss[:, 0], miss[:, 1:][exists[:, 1:]]
    common = present & protein.slot_mask
    common[:, chem.SLOT_OXT] = False
    side = common.copy()
    side[:, : chem.SLOT_CB + 1] = False
    atoms = protein.scatter(out)
    pairs, ideal = protein.bonds()
    idx = protein.atom_index
    names = [chem.RESIDUE_NAMES[t] for t in protein.res_type]
    return {
        "n_residues": protein.n_residues,
        "bead_bb": float(np.sqrt((bb ** 2).mean())),
        "bead_sc": float(np.sqrt((sc ** 2).mean())) if sc.size else math.nan,
        "bead_max": float(miss[exists].max()),
        "rmsd_all": float(metrics.kabsch_rmsd(out[common], truth[common])[0]),
        "rmsd_sc": float(metrics.kabsch_rmsd(out[side], truth[side])[0]) if side.any() else math.nan,
        **dict(zip(("rmsd_all_sym", "rmsd_sc_sym"), matched_rmsd(out, truth, common, side, names))),
        "clashes": float(metrics.clashes_per_100_residues(atoms, pairs, protein.n_residues)),
        "bonds_off": float(metrics.fraction_bonds_off(atoms, pairs, ideal)),
        "d_residues": int(metrics.count_d_residues(atoms, idx[:, chem.SLOT_N], idx[:, chem.SLOT_CA],
                                                   idx[:, chem.SLOT_C], idx[:, chem.SLOT_CB])),
    }


def make_builder(method: str, model: str | None = None):
    """The builder of ``--method``: ``fit`` (``backmap_martini3``) or ``model`` (a Martini 3 model at temperature 0)."""
    if method == "fit":
        return backmap_martini3
    from backmap_plugin.core.mappings import get_mapping
    from backmap_plugin.model.method import ModelMethod
    from backmap_plugin.model.weights import shipped_model_path

    path = model or shipped_model_path("martini3")
    if path is None:
        raise SystemExit("no Martini 3 model: pass --model")
    method = ModelMethod(path, torch.device("cpu"), temperature=0.0)
    mapping = get_mapping("martini3")
    return lambda beads, protein: method(beads, protein, mapping, 1, np.zeros(len(beads), dtype=np.int64))


def run(path: Path, max_frames: int = 1, dtype=torch.float32, build=backmap_martini3) -> tuple[dict, list[str]]:
    """Map, rebuild (all frames in one batch) and score one structure file; scores are means over its frames."""
    protein, truth, present, beads, notes = load_structure(path, max_frames)
    x = torch.as_tensor(beads, dtype=dtype)
    t0, c0 = time.perf_counter(), time.process_time()
    out = build(x, protein)[:, 0].double().numpy()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = [score(protein, t, present, o, b) for t, o, b in zip(truth, out, beads)]
    row = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    row["n_residues"], row["n_frames"] = protein.n_residues, len(rows)
    row["seconds"], row["cpu_seconds"] = seconds, cpu
    return row, notes


KEYS = ("bead_bb", "bead_sc", "bead_max", "rmsd_all", "rmsd_sc", "rmsd_all_sym", "rmsd_sc_sym", "clashes", "bonds_off",
        "d_residues", "seconds", "cpu_seconds")
HEADER = ("| entry | res | bead BB | bead SC | bead max | RMSD all | RMSD sc | RMSD all sym. | RMSD sc sym. | "
          "clashes/100 | bonds off % | D | s | CPU s |\n|---|" + "---:|" * 13)


def table_row(label: str, n_residues, row: dict) -> str:
    """One markdown line of the table (``row`` holds the :data:`KEYS`)."""
    cells = [label, str(n_residues), f"{row['bead_bb']:.3f}", f"{row['bead_sc']:.3f}", f"{row['bead_max']:.2f}",
             f"{row['rmsd_all']:.3f}", f"{row['rmsd_sc']:.3f}", f"{row['rmsd_all_sym']:.3f}",
             f"{row['rmsd_sc_sym']:.3f}", f"{row['clashes']:.1f}",
             f"{100 * row['bonds_off']:.2f}", f"{row['d_residues']:g}", f"{row['seconds']:.2f}",
             f"{row['cpu_seconds']:.2f}"]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_option(parser)
    parser.add_argument("--split", default="train", help="split to draw from (train; visible_test to measure)")
    parser.add_argument("--kind", default="crystal", help="manifest kind (crystal, model, nmr, md)")
    parser.add_argument("--count", type=int, default=25, help="structures drawn (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    parser.add_argument("--max-residues", type=int, default=400, help="leave out larger entries")
    parser.add_argument("--entries", nargs="*", help="entry ids instead of a draw")
    parser.add_argument("--max-frames", type=int, default=1,
                        help="frames of a multi-frame file (evenly spread), rebuilt as one batch (0: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path, help="write per-structure rows, medians and worst values here")
    parser.add_argument("--method", choices=("fit", "model"), default="fit",
                        help="the fitted builder, or a Martini 3 model and one fit round (default: %(default)s)")
    parser.add_argument("--model", help="model file for --method model (default: the shipped one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    build = make_builder(args.method, args.model)
    data = corpus(args.data)
    entries = args.entries or pick_entries(data, args.split, args.count, args.seed, args.max_residues, args.kind)
    if not entries:
        print(f"{data}: no {args.kind} entries in {args.split} (of at most {args.max_residues} residues)",
              file=sys.stderr)
        return 1
    folder = data / args.split
    run(_REPO / "tests" / "data" / "1l2y.pdb.gz", build=build)  # warm-up
    rows = []
    print(HEADER)
    for entry in entries:
        try:
            row, notes = run(folder / f"{entry}.pdb.gz", args.max_frames, build=build)
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"| {entry} | failed: {type(exc).__name__}: {exc} |")
            continue
        row["entry"], row["notes"] = entry, notes
        rows.append(row)
        print(table_row(entry, row["n_residues"], row), flush=True)
    if not rows:
        return 1
    median = {k: float(np.median([r[k] for r in rows])) for k in KEYS}
    worst = {k: float(np.max([r[k] for r in rows])) for k in KEYS}
    print(table_row(f"**median** ({len(rows)})", "", median))
    print(table_row("**worst**", "", worst))
    n_res = sum(r["n_residues"] * r["n_frames"] for r in rows)
    ms_per_res = 1000.0 * sum(r["seconds"] for r in rows) / n_res
    cpu_ms_per_res = 1000.0 * sum(r["cpu_seconds"] for r in rows) / n_res
    print(f"\n{n_res} residues (frames included): {ms_per_res:.2f} ms per residue wall, {cpu_ms_per_res:.2f} ms CPU "
          f"(torch threads: {args.threads}); D residues in all: {sum(r['d_residues'] for r in rows)}")
    for row in rows:
        for note in row["notes"]:
            print(f"note: {row['entry']}: {note}")
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "rows": rows, "median": median, "worst": worst,
                                         "ms_per_residue": ms_per_res, "cpu_ms_per_residue": cpu_ms_per_res},
                                        indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
