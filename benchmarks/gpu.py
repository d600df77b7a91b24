"""Generation on a GPU: frames per second by batch size, and CUDA output against CPU output.

Issue #15's device check, one script for the few minutes a GPU is lent:

* **speed**: the engine (:class:`backmap_plugin.api.Backmapper`, the
  builder alone: no file reading or writing) on batches of 1, 64 and 1,024
  frames of a ``--residues``-residue C-alpha coil (``speed.make_input``),
  per device and method; one warm-up batch first, CUDA synchronised before
  every clock reading, medians of ``--repeats``;
* **agreement**: the same ``--compare`` frames built on CUDA and on the CPU
  (temperature 0, the deterministic structure), and the largest and the
  99th-percentile atom distance between the two, per method. The issue
  asks for at most 0.01 Angstrom; the script exits with status 1 above
  ``--tolerance``.

On a machine without CUDA it measures the CPU alone (and says so), so it
can be tried anywhere first::

    python benchmarks/gpu.py                       # cuda and cpu, model and ideal
    python benchmarks/gpu.py --devices cpu --batches 1,8 --repeats 1   # a quick try on a laptop

Lengths in Angstrom. Absolute times depend on the machine: compare rows of
one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import mdtraj as md
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corpus import choice_list, positive_int  # noqa: E402
from speed import make_input  # noqa: E402  (the benchmarks' one C-alpha coil)

from backmap_plugin.api import Backmapper  # noqa: E402


def _seconds(engine: Backmapper, xyz: np.ndarray, device: str) -> float:
    """Wall seconds of one ``engine.build`` (CUDA synchronised)."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    engine.build(xyz)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def speed_rows(topology, frames: np.ndarray, methods, devices, batches, repeats: int) -> list[tuple]:
    """(method, device, batch, median s, frames/s) for every combination."""
    rows = []
    for method in methods:
        for device in devices:
            engine = Backmapper(topology, frames[0], method=method, device=device, temperature=0.0)
            engine.build(frames[:2])  # warm-up: model on the device, kernels chosen
            for batch in batches:
                xyz = frames[np.arange(batch) % len(frames)]
                median = statistics.median(_seconds(engine, xyz, device) for _ in range(repeats))
                rows.append((method, device, batch, median, batch / median))
    return rows


def agreement_rows(topology, frames: np.ndarray, methods, devices=("cpu", "cuda")) -> list[tuple]:
    """(method, frames, largest, 99th percentile) atom distance between the builds of two devices."""
    rows = []
    for method in methods:
        built = [Backmapper(topology, frames[0], method=method, device=device, temperature=0.0).build(frames)
                 for device in devices]
        distance = np.linalg.norm(built[0] - built[1], axis=-1)
        rows.append((method, len(frames), float(distance.max()), float(np.percentile(distance, 99))))
    return rows


def main(argv=None) -> int:
    """Run the measurements, print markdown tables; status 1 when CUDA and CPU disagree beyond the tolerance."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--residues", type=int, default=100)
    parser.add_argument("--batches", default="1,64,1024", help="frames per batch (default 1,64,1024)")
    parser.add_argument("--methods", type=choice_list("ideal", "model"), default="model,ideal")
    parser.add_argument("--devices", default="cuda,cpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--compare", type=int, default=64, help="frames built on both devices (default 64)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="largest CUDA-CPU distance allowed (A)")
    args = parser.parse_args(argv)
    methods, devices = args.methods.split(","), args.devices.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    if "cuda" in devices and not torch.cuda.is_available():
        print("no CUDA device: measuring the CPU alone")
        devices = [d for d in devices if d != "cuda"] or ["cpu"]
    with tempfile.TemporaryDirectory() as work:
        pdb, dcd = make_input(work, args.residues, max(batches + [args.compare]))
        traj = md.load(dcd, top=pdb)
    frames = traj.xyz * 10.0
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"torch {torch.__version__}, {name}, {os.cpu_count()} CPUs, {torch.get_num_threads()} CPU threads, "
          f"{args.residues} residues")
    print("\n| method | device | frames per batch | median s | frames/s | residues/s |\n|---|---|---|---|---|---|")
    for method, device, batch, seconds, fps in speed_rows(traj.topology, frames, methods, devices, batches,
                                                         args.repeats):
        print(f"| {method} | {device} | {batch} | {seconds:.3f} | {fps:,.1f} | {fps * args.residues:,.0f} |")
    if "cuda" not in devices:
        return 0
    rows = agreement_rows(traj.topology, frames[: args.compare], methods)
    print("\n| method | frames | largest CUDA-CPU distance (A) | 99th percentile (A) |\n|---|---|---|---|")
    for method, n, largest, p99 in rows:
        print(f"| {method} | {n} | {largest:.4f} | {p99:.4f} |")
    return int(any(largest > args.tolerance for _, _, largest, _ in rows))


if __name__ == "__main__":
    sys.exit(main())
