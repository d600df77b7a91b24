"""Bounded memory: peak memory of ``backmap run`` against trajectory length.

A 100-residue CA-only DCD of 1,000 and 10,000 frames (the coil of
``speed.py``) is backmapped by the real command in a fresh process each
(read in chunks, build, append to an XTC); the table gives wall time,
frames/s and the process's peak resident memory (``wait4`` rusage). With
streaming the peak memory must not grow with the number of frames.

Usage: ``python benchmarks/streaming.py [--frames 1000,10000] [--residues 100]
[--methods ideal,model] [--chunk 1000]``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

from corpus import choice_list, positive_int


def _make_input():
    """``make_input`` of the sibling ``speed.py`` (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("speed", os.path.join(os.path.dirname(__file__), "speed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_input


def run(args: list) -> tuple[float, float]:
    """Run a command; (wall seconds, peak resident memory in MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024.0


def main(argv=None) -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", default="1000,10000")
    parser.add_argument("--residues", type=int, default=100)
    parser.add_argument("--methods", type=choice_list("ideal", "model"), default="ideal,model")
    parser.add_argument("--chunk", type=positive_int, default=1000)
    args = parser.parse_args(argv)
    make_input = _make_input()
    print("| method | residues | frames | chunk | wall s | frames/s | peak memory MiB |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for n_frames in (int(x) for x in args.frames.split(",")):
            pdb, dcd = make_input(work, args.residues, n_frames)
            for method in args.methods.split(","):
                out = os.path.join(work, f"out_{method}_{n_frames}.xtc")
                seconds, peak = run([sys.executable, "-m", "backmap_plugin.cli", "run", dcd, "--top", pdb, "-o", out,
                                     "--method", method, "--chunk", str(args.chunk), "--quiet", "--overwrite"])
                print(f"| {method} | {args.residues} | {n_frames} | {args.chunk} | {seconds:.1f} | "
                      f"{n_frames / seconds:.0f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
