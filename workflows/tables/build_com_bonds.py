"""Derive the table of centre-of-mass bead distances of :mod:`backmap_plugin.core.detect` from the training corpus.

Reads a corpus cache of the train data (``backmap data build
../shared/data/train -o cache/train``; default ``cache/train``), and for up
to ``--frames`` frames of every entry measures the distance between the
heavy-atom centres of mass (:class:`backmap_plugin.core.mappings.COMMapping`,
the mapping the package uses) of every pair of consecutive residues of one
segment. The visible test set is never read.

Per pair of residue types (20 x 20) a histogram of these distances on
``BIN_WIDTH`` bins from ``D_MIN`` to ``D_MAX`` Angstrom is mixed with the
histogram of all pairs (a prior of ``--prior`` counts, so rare pairs lean on
the overall shape), smoothed by a Gaussian of ``--sigma`` Angstrom,
normalised to a density per Angstrom with a floor, and stored as natural log
in ``backmap_plugin/core/tables/com_bonds.npz`` with its provenance in
``com_bonds.json``.

    python workflows/tables/build_com_bonds.py [--cache cache/train]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.detect import BIN_WIDTH, D_MAX, D_MIN, DENSITY_FLOOR
from backmap_plugin.core.mappings import COMMapping
from backmap_plugin.training.cache import open_cache

OUT = Path(__file__).resolve().parents[2] / "backmap_plugin" / "core" / "tables"


def measure(cache_dir: str, frames: int) -> tuple[np.ndarray, int, int]:
    """(20, 20, bins) counts of consecutive centre-of-mass distances, entries and distances used."""
    cache = open_cache(cache_dir)
    bins = int(round((D_MAX - D_MIN) / BIN_WIDTH))
    counts = np.zeros((20, 20, bins))
    mapping = COMMapping()
    n_entries = n_pairs = 0
    for index in range(len(cache.entries)):
        e = cache.load(index)
        n_entries += 1
        same = e.segment[1:] == e.segment[:-1]
        a, b = e.res_type[:-1][same], e.res_type[1:][same]
        for f in range(min(frames, e.xyz.shape[0])):
            beads = mapping.bead_positions(np.asarray(e.xyz[f], dtype=np.float64), e.present, e.res_type)
            d = np.linalg.norm(np.diff(beads, axis=0), axis=-1)[same]
            k = np.floor((d - D_MIN) / BIN_WIDTH).astype(int)
            ok = (k >= 0) & (k < bins)
            np.add.at(counts, (a[ok], b[ok], k[ok]), 1.0)
            n_pairs += int(ok.sum())
    return counts, n_entries, n_pairs


def log_density(counts: np.ndarray, prior: float, sigma: float) -> np.ndarray:
    """Smoothed natural-log densities per Angstrom, (20, 20, bins) float32."""
    overall = counts.sum((0, 1))
    overall = overall / overall.sum()
    n = counts.sum(-1, keepdims=True)
    p = (counts + prior * overall) / (n + prior)
    width = sigma / BIN_WIDTH
    offsets = np.arange(-int(4 * width) - 1, int(4 * width) + 2)
    kernel = np.exp(-0.5 * (offsets / width) ** 2)
    kernel /= kernel.sum()
    smooth = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), -1, p)
    smooth /= smooth.sum(-1, keepdims=True) * BIN_WIDTH
    return np.log(np.maximum(smooth, DENSITY_FLOOR)).astype(np.float32)


def main() -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default="cache/train")
    parser.add_argument("--frames", type=int, default=5, help="frames per entry (MD entries have many)")
    parser.add_argument("--prior", type=float, default=50.0, help="pseudo-counts of the all-pairs histogram")
    parser.add_argument("--sigma", type=float, default=0.15, help="smoothing, Angstrom")
    args = parser.parse_args()
    counts, n_entries, n_pairs = measure(args.cache, args.frames)
    table = log_density(counts, args.prior, args.sigma)
    np.savez_compressed(OUT / "com_bonds.npz", log_density=table)
    info = {
        "what": "natural log of the density (per Angstrom) of the distance between heavy-atom centres of mass "
                "of consecutive residues, per pair of residue types (first, second), bins of "
                f"{BIN_WIDTH} Angstrom from {D_MIN} to {D_MAX}",
        "residue_order": list(chem.RESIDUE_NAMES),
        "source": "corpus cache of ../shared/data/train (train split only; visible_test never read)",
        "cache": Path(args.cache).name, "frames_per_entry": args.frames, "entries": n_entries, "distances": n_pairs,
        "prior_counts": args.prior, "sigma": args.sigma, "floor": DENSITY_FLOOR,
        "script": "workflows/tables/build_com_bonds.py",
    }
    (OUT / "com_bonds.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"{n_entries} entries, {n_pairs} distances -> {OUT / 'com_bonds.npz'}")


if __name__ == "__main__":
    main()
