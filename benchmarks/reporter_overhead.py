"""Overhead of BackmapReporter on a running CG simulation (CPU platform).

A 100-residue CALVADOS 2 (HPS) chain, reporting every 1,000 steps: wall time
of the run without reporters, with a DCDReporter (baseline CG output), and
with a BackmapReporter writing the all-atom XTC. Repeats each run and
prints medians and the ratio; the target is at most 2x the run without it.

Usage: ``python benchmarks/reporter_overhead.py [--steps 20000] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import openmm
from corpus import positive_int
from openmm import app, unit

from backmap_plugin import BackmapReporter
from backmap_plugin.force_fields import create_hps_system

SEQUENCE = ("MDVFMKGLSKAKEGVVAAAEKTKQGVAEAAGKTKEGVLYVGSKTKEGVVHGVATVAEKTKEQVTNVGGAVVTGVTAVAQKTVEGAGSIAAATGFVKKDQ")[:100]


def run(steps: int, interval: int, kind: str, workdir: str, method: str = "ideal") -> float:
    """Seconds for ``steps`` steps with the given reporter kind (none, dcd, backmap)."""
    topology, system, positions = create_hps_system(SEQUENCE)
    integrator = openmm.LangevinMiddleIntegrator(298 * unit.kelvin, 0.01 / unit.picosecond, 0.01 * unit.picoseconds)
    platform = openmm.Platform.getPlatformByName("CPU")
    simulation = app.Simulation(topology, system, integrator, platform, {"Threads": "2"})
    simulation.context.setPositions(positions)
    simulation.step(100)  # warm up
    reporter = None
    if kind == "dcd":
        simulation.reporters.append(app.DCDReporter(os.path.join(workdir, "cg.dcd"), interval))
    elif kind == "backmap":
        reporter = BackmapReporter(os.path.join(workdir, "aa.xtc"), interval, method=method, batchFrames=10)
        simulation.reporters.append(reporter)
    start = time.perf_counter()
    simulation.step(steps)
    if reporter is not None:
        reporter.close()
    return time.perf_counter() - start


def main(argv=None) -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--interval", type=int, default=1000)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--method", choices=("ideal", "model"), default="ideal")
    args = parser.parse_args(argv)
    times = {"none": [], "dcd": [], "backmap": []}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.repeats):
            for kind in times:
                times[kind].append(run(args.steps, args.interval, kind, workdir, args.method))
    base = statistics.median(times["none"])
    print(f"100-residue HPS chain, {args.steps} steps, report every {args.interval} (CPU platform, 2 threads)")
    print("| reporter | median s | ratio to none |")
    print("|---|---|---|")
    for kind, values in times.items():
        median = statistics.median(values)
        print(f"| {kind} | {median:.2f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
