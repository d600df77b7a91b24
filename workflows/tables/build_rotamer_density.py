"""Derive the rotamer table of :mod:`backmap_plugin.core.rotamer_density` from the training corpus.

The same files, weighting and B-factor cut as ``build_ramachandran.py``
(crystal structures of the train split only, first frame, residues weighted
``1 / (train files in cluster30)``, here the side-chain atoms' B-factors at
most ``--max-b``), measured with its ``measure_corpus``.

Per residue type with a chi angle, the weighted histogram of chi1 (SER, THR,
VAL, CYS, PRO) or of (chi1, chi2) (all others; chi3 and chi4 are not used)
on a 5-degree periodic grid (ASP, PHE, TYR chi2 modulo 180 degrees on
[0, 180)), smoothed with a wrapped Gaussian of ``--sigma`` degrees (default
8), stored as log10 density in float16. Levels, measured on the stored grid
with the package's lookup: ``favoured_level`` reached by 98 % of the weighted
reference residues, ``outlier_level`` by 99.7 % (MolProbity's rotamer
outliers lie below 0.3 % of the distribution; Chen et al., Acta Cryst. D66,
12 (2010)).

Usage::

    python workflows/tables/build_rotamer_density.py --data ../shared/data/train \
        -o backmap_plugin/core/tables/rotamer_density.npz
"""

from __future__ import annotations

import os
import sys

import numpy as np

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import rotamer_density as rot
from backmap_plugin.core.ramachandran import TABLE_DIR

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_ramachandran import corpus_parser, density_table, measure_corpus, provenance, write_table  # noqa: E402

CELL_DEG = 5.0
FAVOURED_FRACTION = 0.98
OUTLIER_FRACTION = 0.997


def main(argv=None) -> None:
    """Command-line entry point."""
    parser = corpus_parser(__doc__.splitlines()[0], "side-chain", os.path.join(TABLE_DIR, "rotamer_density.npz"))
    parser.add_argument("--sigma", type=float, default=8.0, help="kernel width (degrees)")
    args = parser.parse_args(argv)

    results, failed = measure_corpus(args.data, args.max_files, args.max_b)
    grids, residues = {}, {}
    for name in chem.RESIDUE_NAMES:
        period = list(rot.chi_axes(name))
        if not period:
            continue
        rows = [(c1, c2, w) for _, m, w in results for c1, c2, ok in m["chi"].get(name, []) if ok]
        points = np.array([r[:2] for r in rows])[:, : len(period)]
        weights = np.array([r[2] for r in rows])
        start = [0.0 if p == 180.0 else -180.0 for p in period]
        shape = [int(round(p / CELL_DEG)) for p in period]
        grid, (favoured, outlier) = density_table(points, weights, shape, start, period, args.sigma,
                                                  (FAVOURED_FRACTION, OUTLIER_FRACTION))
        grids[name] = grid
        residues[name] = {"chis": ["chi1", "chi2"][: len(period)], "start": start, "period": period,
                          "shape": shape, "n_residues": len(rows), "weighted_residues": round(float(weights.sum()), 1),
                          "favoured_level": favoured, "outlier_level": outlier}
        print(f"{name}: {len(rows)} residues ({weights.sum():.0f} weighted), levels {favoured} {outlier}")
    info = {
        **provenance(args.data, results, failed, args.max_b, "workflows/tables/build_rotamer_density.py"),
        "grid": {"cell_deg": CELL_DEG, "values": "log10 of the density per cell (sums to 1), float16",
                 "lookup": "multilinear, periodic, between cell centres (backmap_plugin.core.dihedral_density.lookup)"},
        "kernel": f"wrapped Gaussian on the weighted histogram, sigma {args.sigma} degrees, truncated at 5 sigma",
        "sigma_deg": args.sigma,
        "levels": f"favoured_level: log10 density reached by {FAVOURED_FRACTION:.0%} of the weighted reference "
                  f"residues; outlier_level: by {OUTLIER_FRACTION:.1%} (below it: rotamer outlier, "
                  "MolProbity's 0.3 % cut)",
        "scored": "chi1 for SER THR VAL CYS PRO; chi1 and chi2 for the others; ASP/PHE/TYR chi2 modulo 180",
        "residues": residues,
    }
    write_table(args.output, grids, info)


if __name__ == "__main__":
    main()
