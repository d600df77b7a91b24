"""Local backbone chemistry of raw ``backmap run`` output next to the experimental structures.

For every SHIFTX2 crystal structure of ``visible_test`` (``shiftx2__*`` in
the manifest), or with ``--split train`` a random sample of the train
crystal structures (manifest ``kind`` crystal; ``--sample``, ``--seed``;
for tuning: never tune on ``visible_test``), the structure is backmapped
from its own C-alpha atoms with :func:`backmap_plugin.api.backmap` (default
method or ``--method``, one sample, no refinement), and the same figures are
measured on the output and on the experimental structure itself:

* the four backbone bond angles N-CA-C, CA-C-O, CA-C-N(+1), C-N(+1)-CA(+1):
  root-mean-square deviation from Engh & Huber
  (:mod:`backmap_plugin.core.chemistry`) and the percentage of angles more
  than 8 degrees from it;
* peptide planarity: percentage of peptide bonds with omega more than 20
  degrees from 180 (cis peptides counted apart, Pro and non-Pro);
* Ramachandran favoured / outlier percentages
  (:mod:`backmap_plugin.core.ramachandran`, the corpus contours);
* heavy-atom RMSD to the experimental structure (Kabsch fit, atoms present
  in both), mean and median over structures (output only).

Peptide bonds are those of the experimental structure (C(i)-N(i+1) at most
2 A), so both sides are scored on the same residues. Measurement only:
nothing is tuned on these files.

Usage: ``python benchmarks/backbone_geometry.py [--split visible_test|train] [--sample N] [--seed S]
[--method ideal|model] [--limit N] [--json PATH]``
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import tempfile
from pathlib import Path

import mdtraj as md
import numpy as np
from corpus import add_data_option, corpus, positive_int

from backmap_plugin.api import backmap
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import ramachandran as rama
from backmap_plugin.core.checks import angle_values, dihedral_values
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.metrics import kabsch_rmsd
from backmap_plugin.core.topology import gather_slots, read_residues

ENGH_HUBER = {"N-CA-C": chem.ANGLE_N_CA_C, "CA-C-O": chem.ANGLE_CA_C_O,
              "CA-C-N": chem.ANGLE_CA_C_N, "C-N-CA": chem.ANGLE_C_N_CA}
FAR = 8.0  # degrees
TWIST = 20.0  # degrees from planar


def _records(path: str):
    traj = md.load(path)
    records, _ = read_residues(traj.topology, path)
    return records, traj.xyz[0].astype(np.float64) * 10.0


def _triples(atoms, bonded):
    """Atom triples of the four angles (the peptide ones only across bonds of the experimental structure)."""
    out = {name: [] for name in ENGH_HUBER}
    for i, a in enumerate(atoms):
        if all(k in a for k in ("N", "CA", "C")):
            out["N-CA-C"].append((a["N"], a["CA"], a["C"]))
        if all(k in a for k in ("CA", "C", "O")):
            out["CA-C-O"].append((a["CA"], a["C"], a["O"]))
        if bonded[i] and "CA" in a and "CA" in atoms[i + 1]:
            out["CA-C-N"].append((a["CA"], a["C"], atoms[i + 1]["N"]))
            out["C-N-CA"].append((a["C"], atoms[i + 1]["N"], atoms[i + 1]["CA"]))
    return out


def measure(records, xyz, bonded) -> dict:
    """Angle deviations (degrees), omega and Ramachandran codes of one structure."""
    atoms = [r.atoms for r in records]
    names = [r.name for r in records]
    out = {}
    for name, triples in _triples(atoms, bonded).items():
        out[name] = angle_values(xyz, np.array(triples, dtype=np.int64).reshape(-1, 3))[0] - ENGH_HUBER[name]
    phi_q, psi_q, omega_q = rama.backbone_dihedral_atoms(atoms, bonded)
    ok = (phi_q >= 0).all(1) & (psi_q >= 0).all(1)
    has_omega = (omega_q >= 0).all(1)
    omega = np.full(len(records), np.nan)
    omega[has_omega] = dihedral_values(xyz, omega_q[has_omega])[0]
    classes = np.array(rama.residue_classes(names, bonded, omega), dtype=object)
    phi = dihedral_values(xyz, phi_q[ok])[0]
    psi = dihedral_values(xyz, psi_q[ok])[0]
    out["rama"] = rama.classify(phi, psi, classes[ok])
    out["omega"] = omega[has_omega]
    out["omega_pro"] = np.array([names[i] == "PRO" for i in np.nonzero(has_omega)[0]])
    return out


def heavy_rmsd(records, xyz, out_records, out_xyz) -> float:
    """Heavy-atom RMSD (Kabsch fit) over the atoms both structures have (same residues)."""
    truth, present = gather_slots(xyz[None], records)
    out, out_present = gather_slots(out_xyz[None], out_records)
    common = present & out_present
    return float(kabsch_rmsd(out[0][common], truth[0][common])[0])


def select_entries(data: Path, split: str, sample: int, seed: int) -> list[str]:
    """Entry ids: visible_test's SHIFTX2 crystal structures, or a seeded sample of train's crystal structures."""
    with open(data / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if split == "visible_test":
        return sorted({r["entry_id"] for r in rows if r["split"] == split and r["entry_id"].startswith("shiftx2__")})
    entries = sorted({r["entry_id"] for r in rows if r["split"] == split and r["kind"] == "crystal"})
    random.Random(seed).shuffle(entries)
    return entries[:sample]


def summarize(parts: list[dict]) -> dict:
    """Pooled figures over structures."""
    row = {}
    for name in ENGH_HUBER:
        d = np.concatenate([p[name] for p in parts])
        row[f"{name} rms dev"] = float(np.sqrt(np.mean(d ** 2)))
        row[f"{name} % > {FAR:g}"] = float(100 * np.mean(np.abs(d) > FAR))
    omega = np.concatenate([p["omega"] for p in parts])
    pro = np.concatenate([p["omega_pro"] for p in parts])
    dev = 180.0 - np.abs(omega)
    cis = dev > 150.0
    row["cis non-Pro"] = int((cis & ~pro).sum())
    row["cis Pro"] = int((cis & pro).sum())
    row[f"omega % > {TWIST:g} off (trans)"] = float(100 * np.mean(dev[~cis] > TWIST))
    codes = np.concatenate([p["rama"] for p in parts])
    row["Rama favoured %"] = float(100 * np.mean(codes == rama.FAVOURED))
    row["Rama outliers %"] = float(100 * np.mean(codes == rama.OUTLIER))
    rmsd = [p["rmsd"] for p in parts if "rmsd" in p]
    row["heavy-atom RMSD mean"] = float(np.mean(rmsd)) if rmsd else "-"
    row["heavy-atom RMSD median"] = float(np.median(rmsd)) if rmsd else "-"
    return row


def main(argv=None) -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("visible_test", "train"), default="visible_test",
                        help="visible_test: its SHIFTX2 crystal structures (final figures only); "
                             "train: a sample of its crystal structures (for tuning)")
    parser.add_argument("--sample", type=positive_int, default=60, help="train structures drawn (default 60)")
    parser.add_argument("--seed", type=int, default=17, help="seed of the train sample (default 17)")
    parser.add_argument("--method", choices=("ideal", "model"), help="builder (default: backmap's own choice)")
    parser.add_argument("--limit", type=int, default=0, help="first N structures only (default: all)")
    parser.add_argument("--json", help="also write the figures to this file")
    add_data_option(parser)
    args = parser.parse_args(argv)
    data = corpus(args.data)
    entries = select_entries(data, args.split, args.sample, args.seed)[: args.limit or None]
    truth_parts, output_parts = [], []
    with tempfile.TemporaryDirectory() as work:
        for entry in entries:
            path = str(data / args.split / f"{entry}.pdb.gz")
            records, xyz = _records(path)
            bonded = rama.peptide_bonds([r.atoms for r in records], [r.chain for r in records], xyz)
            out = os.path.join(work, f"{entry}.pdb")
            try:
                backmap(path, out, method=args.method, progress=False)
            except BackmapInputError as error:  # a structure the tool refuses is reported, not fatal
                print(f"note: {entry}: {type(error).__name__}: {error}; skipped")
                continue
            out_records, out_xyz = _records(out)
            if [r.name for r in out_records] != [r.name for r in records]:
                print(f"note: {entry}: residues differ between input and output; skipped")
                continue
            truth_parts.append(measure(records, xyz, bonded))
            output_parts.append(measure(out_records, out_xyz, bonded))
            output_parts[-1]["rmsd"] = heavy_rmsd(records, xyz, out_records, out_xyz)
    rows = {"experimental": summarize(truth_parts), "backmap run (raw)": summarize(output_parts)}
    keys = list(rows["experimental"])
    which = "SHIFTX2" if args.split == "visible_test" else f"sample {args.sample}, seed {args.seed}"
    print(f"{len(truth_parts)} crystal structures of {args.split} ({which}), "
          f"{sum(len(p['N-CA-C']) for p in truth_parts)} residues, method {args.method or 'default'}")
    print("| figure | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key in keys:
        cells = [f"{rows[r][key]:.2f}" if isinstance(rows[r][key], float) else str(rows[r][key]) for r in rows]
        print(f"| {key} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
