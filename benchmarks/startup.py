"""Start-up cost of the ``backmap`` command, and end to end against PULCHRA.

Three measurements, each the median of ``--repeats`` runs of a fresh
process (so every run pays Python's and the libraries' start-up), after one
run that is not counted (bytecode and model caches written, files read
once, as on a machine where ``backmap`` has run before):

* ``backmap --help`` and ``backmap run --help``: the parser alone (no heavy
  library may load);
* the fixed cost of ``backmap run``: the wall time of a run over ONE frame of
  ``--residues`` residues (start, imports, model set-up, read, build one
  frame, write), which is what every call pays before its first frame;
* end to end: ``backmap run`` over ``--frames`` frames of ``--residues``
  residues (DCD in, XTC out, shipped model, CPU), next to PULCHRA's C
  program (``pypulchra``) over the same frames in one warm process
  (reading the DCD, one call per frame, the all-atom PDB text of every frame
  written to one file). The ratio is PULCHRA's time over ours.

The input is the coil of :func:`speed.make_input` (a C-alpha-only PDB + DCD,
3.8 A spacing, 0.3 A noise per frame).

Usage: ``python benchmarks/startup.py [--residues 87] [--frames 1100]
[--repeats 5] [--skip-pulchra]``

Absolute times depend on what else runs on the machine: compare within one
run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import mdtraj as md
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import _pdb_ca_line  # noqa: E402  (the one C-alpha PDB record writer of the benchmarks)
from corpus import positive_int  # noqa: E402
from speed import make_input  # noqa: E402


def _command() -> list[str]:
    """The installed ``backmap`` command (else ``python -m backmap_plugin.cli``)."""
    found = shutil.which("backmap", path=os.path.dirname(sys.executable)) or shutil.which("backmap")
    return [found] if found else [sys.executable, "-m", "backmap_plugin.cli"]


def _wall(argv: list[str], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` runs of a fresh process, after one run that is not counted.

    The runs may write Python's bytecode caches (``PYTHONDONTWRITEBYTECODE`` is
    dropped from their environment): an installed package has them, and
    without them every run compiles the package's modules again.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return times[1:]


def pulchra_seconds(pdb: str, dcd: str, out: str) -> float:
    """PULCHRA over every frame of a C-alpha DCD, in this (warm) process."""
    import pypulchra

    start = time.perf_counter()
    traj = md.load(dcd, top=pdb)
    names = [r.name for r in traj.topology.residues]
    xyz = traj.xyz.astype(np.float64) * 10.0
    with open(out, "w") as handle:
        for f in range(traj.n_frames):
            lines = [_pdb_ca_line(i + 1, names[i], i + 1, xyz[f, i]) for i in range(len(names))]
            result = pypulchra.run_from_pdb_str("\n".join(lines) + "\nTER\nEND\n")
            handle.write(f"MODEL {f + 1:8d}\n{result.pdb_str}ENDMDL\n")
    return time.perf_counter() - start


def main(argv=None) -> None:
    """Run the measurements and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--residues", type=int, default=87)
    parser.add_argument("--frames", type=int, default=1100)
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--skip-pulchra", action="store_true", help="leave out the PULCHRA row (pypulchra)")
    args = parser.parse_args(argv)
    if not args.skip_pulchra and importlib.util.find_spec("pypulchra") is None:
        parser.error("pypulchra is not installed: pip install pypulchra, or pass --skip-pulchra")
    backmap = _command()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        pdb, dcd_one = make_input(work, args.residues, 1)
        _, dcd = make_input(work, args.residues, args.frames)
        out = os.path.join(work, "out.xtc")
        rows.append(("backmap --help", _wall(backmap + ["--help"], args.repeats)))
        rows.append(("backmap run --help", _wall(backmap + ["run", "--help"], args.repeats)))
        rows.append((f"backmap run, 1 frame x {args.residues} residues (fixed cost)",
                     _wall(backmap + ["run", dcd_one, "--top", pdb, "-o", out, "--overwrite", "--quiet",
                                      "--device", "cpu"], args.repeats)))
        ours = _wall(backmap + ["run", dcd, "--top", pdb, "-o", out, "--overwrite", "--quiet", "--device", "cpu"],
                     args.repeats)
        rows.append((f"backmap run, {args.frames} frames x {args.residues} residues", ours))
        if not args.skip_pulchra:
            theirs = [pulchra_seconds(pdb, dcd, os.path.join(work, "pulchra.pdb")) for _ in range(args.repeats)]
            rows.append((f"PULCHRA (pypulchra, warm process), {args.frames} frames", theirs))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, command {' '.join(backmap)}")
    print("| what | median s | min s | max s |")
    print("|---|---|---|---|")
    for name, times in rows:
        print(f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |")
    if not args.skip_pulchra:
        ratio = statistics.median(theirs) / statistics.median(ours)
        print(f"\nend to end, {args.frames} frames x {args.residues} residues: "
              f"backmap run is {ratio:.2f}x PULCHRA's speed (PULCHRA median / backmap median)")


if __name__ == "__main__":
    main()
