"""End-to-end speed of ``backmap run``: residues/s and frames/s.

For chains of 50, 200 and 1,000 residues and trajectories of 1, 100 and
1,000 frames, a CA-only DCD + PDB pair is made (a self-avoiding coil with
3.8 Angstrom spacing from the HPS force field's starting structure, plus
0.3 Angstrom of noise per frame), then backmapped through
:func:`backmap_plugin.api.backmap` (read, backmap, write XTC) with each
method on each device, with the memory allocator set as the ``backmap``
command sets it (:mod:`backmap_plugin.core.allocator`). Every configuration is run ``--repeats`` times; the
table gives medians.

Usage: ``python benchmarks/speed.py [--methods ideal,model] [--devices cpu,cuda]
[--sizes 50,200,1000] [--frames 1,100,1000] [--repeats 3] [--model PATH]
[--threads N]``

Absolute times depend on what else runs on the machine: compare methods or
versions within one run (ratios), not across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import mdtraj as md
import numpy as np
import torch
from corpus import choice_list, devices, positive_int

from backmap_plugin.api import backmap
from backmap_plugin.core.allocator import keep_freed_memory
from backmap_plugin.force_fields import create_hps_system

_SEQUENCE = "MDVFMKGLSKAKEGVVAAAEKTKQGVAEAAGKTKEGVLYVGSKTKEGVVHGVATVAEKTKEQVTNVGGAVVTGVTAVAQKTVEGAGSIAAATGFVKKDQ"


def make_input(workdir: str, n_res: int, n_frames: int, seed: int = 0) -> tuple[str, str]:
    """A CA-only PDB + DCD of ``n_frames`` frames of an ``n_res``-residue coil."""
    sequence = (_SEQUENCE * (n_res // len(_SEQUENCE) + 1))[:n_res]
    topology, _, positions = create_hps_system(sequence, seed=seed)
    xyz = np.asarray(positions.value_in_unit(positions.unit), dtype=np.float32)  # nm
    rng = np.random.default_rng(seed)
    frames = xyz[None] + rng.normal(0, 0.03, size=(n_frames,) + xyz.shape).astype(np.float32)
    traj = md.Trajectory(frames, md.Topology.from_openmm(topology))
    pdb, dcd = os.path.join(workdir, f"ca_{n_res}.pdb"), os.path.join(workdir, f"ca_{n_res}_{n_frames}.dcd")
    traj[0].save_pdb(pdb)
    traj.save_dcd(dcd)
    return pdb, dcd


def main(argv=None) -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", type=choice_list("ideal", "model"), default="ideal,model")
    parser.add_argument("--devices", type=devices, default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="50,200,1000")
    parser.add_argument("--frames", default="1,100,1000")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--model", default=None, help="model file for --methods model (default: shipped)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the backmap command does (backmap_plugin.core.allocator)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sizes = [int(x) for x in args.sizes.split(",")]
    frame_counts = [int(x) for x in args.frames.split(",")]
    print(f"torch threads {torch.get_num_threads()}, devices {args.devices}")
    print("| method | device | residues | frames | median s | residues/s | frames/s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as workdir:
        for n_res in sizes:
            for n_frames in frame_counts:
                pdb, dcd = make_input(workdir, n_res, n_frames)
                for method in args.methods.split(","):
                    for device in args.devices.split(","):
                        times = []
                        for _ in range(args.repeats):
                            out = os.path.join(workdir, "out.xtc")
                            start = time.perf_counter()
                            backmap(dcd, out, top=pdb, method=method, device=device, progress=False,
                                    model=args.model if method == "model" else None)
                            times.append(time.perf_counter() - start)
                        t = statistics.median(times)
                        print(f"| {method} | {device} | {n_res} | {n_frames} | {t:.2f} | "
                              f"{n_res * n_frames / t:,.0f} | {n_frames / t:,.1f} |", flush=True)


if __name__ == "__main__":
    main()
