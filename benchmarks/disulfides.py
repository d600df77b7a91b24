"""Disulfides from C-alpha traces and residue centres of mass: the pairs the package bonds against the truth's.

Each structure of the split (every model up to ``--max-frames``, evenly spread) is reduced to its C-alpha atoms or
its residues' heavy-atom centres of mass and backmapped with the package's defaults (``Backmapper``, the shipped
model); a cysteine pair is a disulfide in the truth where its SG atoms lie within 2.5 Angstrom (the refinement's
rule, ``openmm/structure.py``), and in the output where the package bonded it (``Backmapper.disulfides``).
Structures are counted frame by frame; pairs whose truth has no SG are left out.

    python benchmarks/disulfides.py --beads ca
    python benchmarks/disulfides.py --beads com --split train --every 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mdtraj as md
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import frame_indices  # noqa: E402  (the benchmarks' one frame selection)
from corpus import add_data_option, corpus, positive_int  # noqa: E402

from backmap_plugin.api import Backmapper  # noqa: E402
from backmap_plugin.core.errors import BackmapInputError  # noqa: E402

#: SG-SG distance (Angstrom) below which the truth's cysteines are bonded.
TRUTH_CUTOFF = 2.5


def beads_of(traj: md.Trajectory, residues: list, kind: str) -> np.ndarray:
    """(F, R, 3) Angstrom: each residue's C-alpha atom or heavy-atom centre of mass."""
    if kind == "ca":
        return traj.xyz[:, [next(a.index for a in r.atoms if a.name == "CA") for r in residues]] * 10
    mass = np.array([a.element.mass for a in traj.topology.atoms])
    out = []
    for r in residues:
        index = [a.index for a in r.atoms]
        out.append((traj.xyz[:, index] * mass[index, None]).sum(1) / mass[index].sum())
    return np.stack(out, 1) * 10


def score_file(path: Path, kind: str, max_frames: int) -> tuple[int, int, int, int, list] | None:
    """(true positives, false positives, false negatives, crowded pairs, the truth's SG-SG distances of the false
    positives) over the frames of one file; None if it has no pair. Crowded pairs are SG atoms of the output
    within 2.5 Angstrom that the package did not bond (a refinement would bond them)."""
    traj = md.load(str(path))
    traj = traj[frame_indices(traj.n_frames, max_frames)]
    traj = traj.atom_slice(traj.topology.select("protein and not element H"))
    residues = [r for r in traj.topology.residues if any(a.name == "CA" for a in r.atoms)]
    cys = [k for k, r in enumerate(residues) if r.name in ("CYS", "CYX") and any(a.name == "SG" for a in r.atoms)]
    if len(cys) < 2:
        return None
    sg = traj.xyz[:, [next(a.index for a in residues[k].atoms if a.name == "SG") for k in cys]] * 10
    beads = beads_of(traj, residues, kind).astype(np.float32)
    top = traj.atom_slice([next(a.index for a in r.atoms if a.name == "CA") for r in residues]).topology
    tp = fp = fn = crowded = 0
    apart = []
    for f in range(traj.n_frames):
        engine = Backmapper(top, beads[f], mapping=kind, method="model", device="cpu", source=path.name,
                            break_distance=10.0 if kind == "com" else 4.5)
        built = engine.build(beads[f][None])[0]
        label = {f"{engine.protein.chain_ids[k] or '?'} {engine.protein.names[k]} {engine.protein.res_seq[k]}": k
                 for k in range(engine.protein.n_residues)}
        made = {tuple(sorted(label[x] for x in pair)) for pair in engine.disulfides}
        out_sg = [(a.residue.index, a.index) for a in engine.topology.atoms if a.name == "SG"]
        close = np.linalg.norm(built[[i for _, i in out_sg]][:, None] - built[[i for _, i in out_sg]][None], axis=-1)
        crowded += sum(1 for i in range(len(out_sg)) for j in range(i + 1, len(out_sg))
                       if close[i, j] < TRUTH_CUTOFF and (out_sg[i][0], out_sg[j][0]) not in made)
        d = np.linalg.norm(sg[f][:, None] - sg[f][None], axis=-1)
        truth = {(cys[i], cys[j]) for i in range(len(cys)) for j in range(i + 1, len(cys)) if d[i, j] < TRUTH_CUTOFF}
        with_sg = set(cys)
        made = {p for p in made if p[0] in with_sg and p[1] in with_sg}
        tp, fp, fn = tp + len(made & truth), fp + len(made - truth), fn + len(truth - made)
        apart += [float(d[cys.index(a), cys.index(b)]) for a, b in made - truth]
    return tp, fp, fn, crowded, apart


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beads", choices=("ca", "com"), default="ca")
    parser.add_argument("--split", choices=("visible_test", "train"), default="visible_test",
                        help="folder of the corpus (default visible_test)")
    parser.add_argument("--every", type=positive_int, default=1, help="every N-th file (default 1)")
    add_data_option(parser)
    parser.add_argument("--max-frames", type=int, default=5, help="frames per file, evenly spread (default 5)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    files = sorted((corpus(args.data) / args.split).glob("*.pdb.gz"))[:: args.every]
    t0 = time.perf_counter()
    totals, n_files, apart = np.zeros(4, dtype=int), 0, []
    for path in files:
        try:
            found = score_file(path, args.beads, args.max_frames)
        except (BackmapInputError, ValueError) as exc:
            print(f"{path.name}: skipped ({exc})")
            continue
        if found is None:
            continue
        n_files += 1
        totals += found[:4]
        apart += found[4]
        if found[1] or found[2] or found[3]:
            print(f"{path.name}: {found[0]} bonded as in the truth, {found[1]} not disulfides there (SG-SG "
                  f"{', '.join(f'{x:.2f}' for x in found[4])} A), {found[2]} missed, {found[3]} crowded")
    tp, fp, fn, crowded = (int(x) for x in totals)
    if not n_files:
        print(f"{args.split}: no file with two or more cysteines was scored")
        return 1
    print(f"{args.beads} beads, {args.split}: {n_files} files with two or more cysteines; disulfides in the truth "
          f"{tp + fn}, bonded {tp + fp}: {tp} right, {fp} not disulfides in the truth, {fn} missed; recall "
          f"{tp / max(1, tp + fn):.3f}, precision {tp / max(1, tp + fp):.3f}; of the {fp} not disulfides, "
          f"{sum(x < 3.5 for x in apart)} have SG atoms within 3.5 A in the truth; {crowded} pairs of SG atoms not "
          f"bonded but within {TRUTH_CUTOFF} A in the output ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
