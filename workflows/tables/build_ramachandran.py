"""Derive the Ramachandran table of :mod:`backmap_plugin.core.ramachandran` from the training corpus.

Only crystal structures of the train split are read (``kind == crystal`` in
``manifest.csv`` next to the data folder; default ``../shared/data/train``
relative to the repository root); the visible test set is never touched. Of
every file the first frame is used; residue names are normalised with
:func:`backmap_plugin.core.topology.read_residues`. Files that fail to load
are skipped and counted.

What is measured
----------------
phi and psi of every residue peptide-bonded on both sides (C-N at most 2.0
Angstrom, same chain; :func:`backmap_plugin.core.ramachandran.peptide_bonds`),
its class (:func:`~backmap_plugin.core.ramachandran.residue_classes`:
general, glycine, trans-/cis-proline by the omega before it, pre-proline) and
a quality flag: residues whose backbone atoms (N, CA, C, O) have a B-factor
above ``--max-b`` (default 40 A^2) are left out, as MolProbity's reference
sets leave out high-B residues (Lovell et al. 2003 used B < 30 on a
hand-picked high-resolution set; this corpus has no resolution filter, so the
cut is looser). Every residue is weighted ``1 / (train files in its
cluster30)`` (as ``build_rotamers.py``), so large families count about as
one structure.

Density and contours
--------------------
Per class a weighted 2-D histogram on a 2-degree grid (180 x 180 cells,
cell centres at -179, -177, ...), smoothed with a wrapped (periodic)
Gaussian of ``sigma`` degrees (per class, wider for the smaller classes),
normalised, stored as log10 density in float16. The contour levels are
measured on the stored grid with the lookup the package uses
(:func:`backmap_plugin.core.dihedral_density.lookup`, bilinear, periodic):
*favoured* at the level that 98 % of the (weighted) reference residues
reach, *allowed* at 99.95 % (Lovell et al., Proteins 50, 437 (2003)). A
residue's own kernel is part of the density it is scored on (in-sample); with
thousands of residues per class the effect on the levels is small.

cis-proline gets its own table when at least ``--min-cis`` (default 400)
cis-prolines are measured; otherwise cis and trans prolines share one
``proline`` table (the JSON's ``class_of_table`` says which).

Usage::

    python workflows/tables/build_ramachandran.py --data ../shared/data/train \
        -o backmap_plugin/core/tables/ramachandran.npz
"""

from __future__ import annotations

import argparse
import csv
import datetime
import glob
import gzip
import json
import os
import sys
import time
import warnings

import mdtraj as md
import numpy as np

from backmap_plugin.core import ramachandran as rama
from backmap_plugin.core import rotamer_density as rot
from backmap_plugin.core.checks import dihedral_values
from backmap_plugin.core.dihedral_density import enclosing_level, lookup, smoothed_histogram
from backmap_plugin.core.topology import read_residues

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_rotamers import cluster_weights  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Grid of the Ramachandran table.
GRID = {"start": [-180.0, -180.0], "period": [360.0, 360.0], "shape": [180, 180]}
#: Kernel width per table (degrees).
SIGMA = {"general": 4.0, "glycine": 6.0, "trans-proline": 5.0, "cis-proline": 8.0, "proline": 5.0,
         "pre-proline": 6.0}
FAVOURED_FRACTION = 0.98
ALLOWED_FRACTION = 0.9995
_BACKBONE = ("N", "CA", "C", "O")


def crystal_files(data: str) -> list:
    """The crystal-structure files of a train folder (every file where no manifest is found).

    Parameters
    ----------
    data : str
        The train folder; ``manifest.csv`` is looked for in its parent.

    Returns
    -------
    list of str
        Sorted paths.
    """
    data = os.path.normpath(data)
    if "visible_test" in os.path.abspath(data).split(os.sep):
        raise SystemExit(f"refusing to build from {data}: use the train split only")
    files = sorted(glob.glob(os.path.join(data, "*.pdb.gz")) + glob.glob(os.path.join(data, "*.pdb")))
    manifest = os.path.join(os.path.dirname(os.path.abspath(data)), "manifest.csv")
    if os.path.exists(manifest):
        with open(manifest, newline="") as handle:
            crystal = {r["entry_id"] for r in csv.DictReader(handle) if r["split"] == "train" and r["kind"] == "crystal"}
        files = [f for f in files if os.path.basename(f).split(".pdb")[0] in crystal]
    return files


def _b_factors(path: str, n_atoms: int):
    """B-factor of every atom of the first model in file order, or None when they do not line up."""
    opener = gzip.open if path.endswith(".gz") else open
    values = []
    with opener(path, "rt") as handle:
        for line in handle:
            if line.startswith(("ATOM", "HETATM")):
                values.append(float(line[60:66]) if line[60:66].strip() else 0.0)
            elif line.startswith("ENDMDL"):
                break
    return np.array(values) if len(values) == n_atoms else None


def measure_file(path: str, max_b: float) -> dict:
    """Backbone and side-chain dihedrals (degrees) of the first frame of one file.

    Parameters
    ----------
    path : str
        Structure file readable by mdtraj.
    max_b : float
        Residues with a backbone B-factor above this are flagged not ``ok``.

    Returns
    -------
    dict
        ``rama``: list of (class, phi, psi, ok); ``chi``: residue name ->
        list of (chi1, chi2, ok) (chi2 0 for one-chi residues; side-chain
        B-factors flag those).
    """
    traj = md.load(path, frame=0)
    records, _ = read_residues(traj.topology, os.path.basename(path))
    xyz = traj.xyz[0].astype(np.float64) * 10.0
    atoms = [r.atoms for r in records]
    names = [r.name for r in records]
    b = _b_factors(path, traj.n_atoms)

    def ok(atom_dict, which):
        if b is None:
            return True
        idx = [atom_dict[a] for a in which if a in atom_dict]
        return bool(idx) and float(b[idx].max()) <= max_b

    bonded = rama.peptide_bonds(atoms, [r.chain for r in records], xyz)
    phi_q, psi_q, omega_q = rama.backbone_dihedral_atoms(atoms, bonded)
    angle = {}
    for key, quads in (("phi", phi_q), ("psi", psi_q), ("omega", omega_q)):
        values = np.full(len(quads), np.nan)
        valid = quads[:, 0] >= 0
        values[valid] = dihedral_values(xyz, quads[valid])[0]
        angle[key] = values
    classes = rama.residue_classes(names, bonded, angle["omega"])
    out = {"rama": [], "chi": {}}
    for i, name in enumerate(names):
        if np.isfinite(angle["phi"][i]) and np.isfinite(angle["psi"][i]):
            out["rama"].append((classes[i], angle["phi"][i], angle["psi"][i], ok(atoms[i], _BACKBONE)))
        if not rot.chi_axes(name):
            continue
        quads = rot.chi_atoms(name, atoms[i])
        if quads is None:
            continue
        chi = dihedral_values(xyz, quads)[0]
        side = [a for a in atoms[i] if a not in _BACKBONE]
        out["chi"].setdefault(name, []).append((chi[0], chi[1] if len(chi) > 1 else 0.0, ok(atoms[i], side)))
    return out


def measure_corpus(data: str, max_files, max_b: float):
    """:func:`measure_file` over the crystal files of a train folder.

    Returns
    -------
    results : list of (str, dict, float)
        File name, measurement and cluster weight of every file read.
    failed : list of str
        One line per skipped file.
    """
    files = crystal_files(data)[:max_files]
    weight = cluster_weights(data)
    results, failed = [], []
    start = time.time()
    warnings.filterwarnings("ignore")
    for i, path in enumerate(files):
        name = os.path.basename(path)
        try:
            results.append((name, measure_file(path, max_b), weight.get(name, 1.0)))
        except Exception as err:  # noqa: BLE001 - any unreadable file is skipped and counted
            failed.append(f"{name}: {type(err).__name__}: {str(err)[:120]}")
        if (i + 1) % 200 == 0:
            print(f"{i + 1}/{len(files)} files, {time.time() - start:.0f} s", flush=True)
    return results, failed


def density_table(points, weights, shape, start, period, sigma, fractions):
    """Quantised log10 density grid and the levels enclosing ``fractions`` of the points.

    Parameters
    ----------
    points : numpy.ndarray, shape (n, d)
        Reference angles in degrees.
    weights : numpy.ndarray, shape (n,)
        Their weights.
    shape, start, period : sequence, length d
        The grid (:func:`~backmap_plugin.core.dihedral_density.smoothed_histogram`).
    sigma : float
        Kernel width in degrees.
    fractions : sequence of float
        Fractions of the weight to enclose.

    Returns
    -------
    grid : numpy.ndarray of float16
        log10 density per cell.
    levels : list of float
        log10 density levels, one per fraction, measured on ``grid``.
    """
    density = smoothed_histogram(points, weights, shape, start, period, sigma)
    grid = np.log10(np.maximum(density, 1e-30)).astype(np.float16)
    at_points = lookup(grid.astype(np.float64), points, start, period)
    return grid, [round(enclosing_level(at_points, weights, f), 4) for f in fractions]


def provenance(data: str, results, failed, max_b: float, script: str) -> dict:
    """The provenance entries both tables share."""
    return {
        "made_by": script,
        "date": datetime.date.today().isoformat(),
        "source": f"corpus train split only ({os.path.relpath(os.path.abspath(data), ROOT)}), crystal structures "
                  "(manifest kind == crystal), first frame of each file",
        "split": "train",
        "weighting": "each residue weighted 1 / (train files in its cluster30)",
        "max_b_factor": max_b,
        "n_files": len(results),
        "n_failed": len(failed),
        "failed": failed,
        "files": [name for name, _, _ in results],
    }


def write_table(output: str, grids: dict, info: dict) -> None:
    """Write the grids (``output``, compressed npz) and the provenance (same name, ``.json``)."""
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    np.savez_compressed(output, **grids)
    with open(os.path.splitext(output)[0] + ".json", "w") as handle:
        json.dump(info, handle, indent=1)
        handle.write("\n")
    print(f"{info['n_files']} files used, {info['n_failed']} skipped -> {output}")


def corpus_parser(description: str, atoms: str, output: str) -> argparse.ArgumentParser:
    """The options both table builders share (``--data``, ``--max-files``, ``--max-b``, ``-o``).

    Parameters
    ----------
    description : str
        Parser description.
    atoms : str
        Which atoms' B-factors ``--max-b`` limits (for the help).
    output : str
        Default output file.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"),
                        help="train folder of the corpus (never the test set)")
    parser.add_argument("--max-files", type=int, default=None, help="use only the first N files")
    parser.add_argument("--max-b", type=float, default=40.0, help=f"largest {atoms} B-factor used (A^2)")
    parser.add_argument("-o", "--output", default=output)
    return parser


def main(argv=None) -> None:
    """Command-line entry point."""
    parser = corpus_parser(__doc__.splitlines()[0], "backbone", os.path.join(rama.TABLE_DIR, "ramachandran.npz"))
    parser.add_argument("--min-cis", type=int, default=400, help="fewest cis-prolines for a table of their own")
    args = parser.parse_args(argv)

    results, failed = measure_corpus(args.data, args.max_files, args.max_b)
    rows = [(c, phi, psi, w) for _, m, w in results for c, phi, psi, ok in m["rama"] if ok]
    n_dropped = sum(1 for _, m, _ in results for *_, ok in m["rama"] if not ok)
    classes = np.array([r[0] for r in rows])
    points = np.array([(r[1], r[2]) for r in rows])
    weights = np.array([r[3] for r in rows])
    n_cis = int(np.sum(classes == "cis-proline"))
    merge = n_cis < args.min_cis
    class_of_table = {c: c for c in rama.CLASSES}
    if merge:
        class_of_table["trans-proline"] = class_of_table["cis-proline"] = "proline"
    grids, tables = {}, {}
    for table in sorted(set(class_of_table.values())):
        members = [c for c, t in class_of_table.items() if t == table]
        sel = np.isin(classes, members)
        grid, (favoured, allowed) = density_table(points[sel], weights[sel], GRID["shape"], GRID["start"],
                                                  GRID["period"], SIGMA[table], (FAVOURED_FRACTION, ALLOWED_FRACTION))
        grids[table] = grid
        tables[table] = {"classes": members, "n_residues": int(sel.sum()),
                         "weighted_residues": round(float(weights[sel].sum()), 1), "sigma_deg": SIGMA[table],
                         "favoured_level": favoured, "allowed_level": allowed}
        print(f"{table}: {sel.sum()} residues ({weights[sel].sum():.0f} weighted), levels {favoured} {allowed}")
    info = {
        **provenance(args.data, results, failed, args.max_b, "workflows/tables/build_ramachandran.py"),
        "n_residues_dropped_high_b": n_dropped,
        "n_cis_proline": n_cis,
        "proline_tables": "cis and trans merged (too few cis-prolines)" if merge else "cis and trans separate",
        "grid": {**GRID, "cell_deg": 2.0, "values": "log10 of the density per cell (sums to 1), float16",
                 "lookup": "bilinear, periodic, between cell centres (backmap_plugin.core.dihedral_density.lookup)"},
        "kernel": "wrapped Gaussian on the weighted histogram, sigma_deg per table, truncated at 5 sigma",
        "levels": f"favoured_level: log10 density reached by {FAVOURED_FRACTION:.0%} of the weighted reference "
                  f"residues; allowed_level: by {ALLOWED_FRACTION:.2%} (Lovell et al., Proteins 50, 437 (2003))",
        "class_of_table": class_of_table,
        "tables": tables,
    }
    write_table(args.output, grids, info)


if __name__ == "__main__":
    main()
