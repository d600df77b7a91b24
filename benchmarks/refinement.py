"""Speed of ``backmap refine`` on trajectories, against the ``backmap run`` that made them.

Three 20-frame all-atom trajectories are made with ``backmap run`` from
C-alpha traces: 46 residues (an IDP: HPS force field, short Langevin run),
87 residues (Go model of covariation__PF00076_2X1B_A from the corpus's train
split, short Langevin run) and 349 residues (rhodopsin, visible_test
``nglview__md_1u19_xtc``, its first 20 frames reduced to C-alpha). Each is
refined with the command line (wall time of the whole command, start-up
included) with the settings given by ``--after`` and, on the first
``--before-frames`` frames only, with the old settings (GBn2, tolerance 10,
PDBFixer + addHydrogens on every frame); before is given per frame and as
its 20-frame extrapolation. The refined frames are scored with the
package's own figures (JSON report: convergence, heavy-atom clashes, RMSD
to the input) and ``backmap_plugin.openmm.validate.validate_frames``
(amber14 + GBn2 energy, clashscore, outliers).

Usage: ``python benchmarks/refinement.py [--sizes 46,87,349] [--before-frames 1]
[--after "--solvent vacuum --tolerance 30"] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import mdtraj as md
import numpy as np
from corpus import DEFAULT_DATA

#: The corpus, next to the repository (``../shared/data``), or ``$BACKMAP_DATA``.
DATA = str(DEFAULT_DATA)
BACKMAP = os.path.join(os.path.dirname(sys.executable), "backmap")
N_FRAMES = 20


def _langevin(topology, system, positions, seed: int) -> np.ndarray:
    import openmm
    from openmm import unit

    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.005 * unit.picoseconds)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    frames = []
    for _ in range(N_FRAMES):
        integrator.step(250)
        frames.append(context.getState(positions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.array(frames, dtype=np.float32)


def make_ca(workdir: str, n_res: int) -> str:
    """A 20-frame C-alpha PDB of the system of ``n_res`` residues."""
    from backmap_plugin.force_fields import create_go_system, create_hps_system

    path = os.path.join(workdir, f"ca{n_res}.pdb")
    if n_res == 46:
        topology, system, positions = create_hps_system("MDVFMKGLSKAKEGVVAAAEKTKQGVAEAAGKTKEGVLYVGSKTKE", seed=0)
        traj = md.Trajectory(_langevin(topology, system, positions, 1), md.Topology.from_openmm(topology))
    elif n_res == 87:
        topology, system, positions = create_go_system(
            os.path.join(DATA, "train", "covariation__PF00076_2X1B_A.pdb.gz"))
        traj = md.Trajectory(_langevin(topology, system, positions, 1), md.Topology.from_openmm(topology))
    else:
        source = os.path.join(workdir, "md_1u19.pdb")
        with gzip.open(os.path.join(DATA, "visible_test", "nglview__md_1u19_xtc.pdb.gz"), "rb") as handle:
            open(source, "wb").write(handle.read())
        full = md.load(source)[:N_FRAMES]
        traj = full.atom_slice(full.topology.select("name CA"))
    traj.save_pdb(path)
    return path


def _timed(command: list) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _validation(path: str) -> str:
    try:
        from backmap_plugin.openmm.structure import read_structure
        from backmap_plugin.openmm.validate import validate_frames

        topology, frames = read_structure(path)
        result = validate_frames(topology, frames, solvent="gbn2", platform="CPU")
        mean = lambda key: float(np.mean([f[key] for f in result.frames]))  # noqa: E731
        return (f"{mean('energy_kj_mol'):,.0f} | {mean('clashscore'):.1f} | {mean('bond_outliers'):.1f} / "
                f"{mean('angle_outliers'):.1f} | {mean('ramachandran_outliers'):.1f}")
    except Exception as exc:  # validation is optional here
        return f"n/a ({type(exc).__name__}) | | |"


def main(argv=None) -> None:
    """Make the inputs, time ``backmap run`` and ``backmap refine`` and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="46,87,349",
                        help="systems, by size: 46 (HPS IDP), 87 (Go model), 349 (rhodopsin MD, 348 C-alpha beads); "
                             "rows are labelled with the residues built")
    parser.add_argument("--before-frames", type=int, default=1, help="frames refined with the old settings")
    parser.add_argument("--after", default="--solvent vacuum --tolerance 30", help="refine options measured")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")] if all(x.strip().isdigit() for x in args.sizes.split(",")) else []
    if not sizes or set(sizes) - {46, 87, 349}:
        parser.error(f"--sizes: a comma-separated list of 46, 87 and 349, got {args.sizes!r}")
    if not os.path.isfile(os.path.join(DATA, "manifest.csv")) and set(sizes) & {87, 349}:
        parser.error(f"{DATA}: no corpus here (no manifest.csv); set BACKMAP_DATA to the corpus folder")
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="refine_bench_") as workdir:
            _measure(args, sizes, workdir)
    else:
        _measure(args, sizes, args.workdir)


def _measure(args, sizes: list, workdir: str) -> None:
    print(f"after: backmap refine {args.after}; before: --complete-every-frame --solvent gbn2 --tolerance 10")
    print("| residues | run s | refine s before (per frame, x20) | refine s after | after / run | "
          "converged | heavy clashes after | RMSD to input A | E GBn2 kJ/mol | clashscore | bond / angle outliers "
          "| Rama outliers |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        ca = make_ca(workdir, size)
        n_res = md.load_topology(ca).n_residues
        aa = os.path.join(workdir, f"aa{n_res}.pdb")
        t_run = _timed([BACKMAP, "run", ca, "-o", aa, "--overwrite", "--quiet"])
        before = "-"
        if args.before_frames > 0:
            first = os.path.join(workdir, f"aa{n_res}_first.pdb")
            md.load(aa)[: args.before_frames].save_pdb(first)
            t_before = _timed([BACKMAP, "refine", first, "-o", os.path.join(workdir, f"before{n_res}.pdb"),
                               "--complete-every-frame", "--solvent", "gbn2", "--tolerance", "10", "--quiet"])
            per = t_before / args.before_frames
            before = f"{per:.1f} ({per * N_FRAMES:,.0f})"
        out = os.path.join(workdir, f"after{n_res}.pdb")
        t_after = _timed([BACKMAP, "refine", aa, "-o", out, "--quiet"] + shlex.split(args.after))
        report = json.load(open(os.path.join(workdir, f"after{n_res}.json")))
        frames = report["frames"]
        ok = sum(f["converged"] for f in frames)
        clashes = sum(f["clashes_after"] for f in frames)
        rmsd = np.mean([f["rmsd_shift_angstrom"] for f in frames])
        print(f"| {n_res} | {t_run:.1f} | {before} | {t_after:.1f} ({t_after / N_FRAMES:.2f}/frame) | "
              f"{t_after / t_run:.1f} | {ok}/{len(frames)} | {clashes} | {rmsd:.2f} | {_validation(out)} |", flush=True)


if __name__ == "__main__":
    main()
