"""A two-domain protein simulated with CALVADOS 3, backmapped to all atoms while it runs.

HIV-1 capsid protein (``hiv1_capsid.pdb``: residues 11-220 of PDB 1E6J, an
N-terminal and a C-terminal domain joined by a flexible linker) -> CALVADOS 3
system (one bead per residue at the residue's heavy-atom centre of mass, both
domains held by harmonic restraints, the linker free) -> Langevin dynamics at
293 K with the settings of the CALVADOS package (10 fs step, friction
0.01/ps) -> all-atom trajectory written by ``BackmapReporter`` as the run goes,
beside the CG trajectory. Seconds to a minute on a laptop CPU with the
defaults. Run from anywhere::

    python examples/calvados3.py [--steps 5000] [--output calvados3_out/capsid_aa.pdb] [--platform CPU]
"""

import argparse
import os
import time

import numpy as np
import openmm
from openmm import app, unit

from backmap_plugin import BackmapReporter
from backmap_plugin.core.bead_fit import describe
from backmap_plugin.force_fields.calvados3 import create_calvados3_system

HERE = os.path.dirname(os.path.abspath(__file__))
STRUCTURE = os.path.join(HERE, "hiv1_capsid.pdb")
#: Folded domains as in a CALVADOS domains.yaml: 1-based, inclusive positions along the chain
#: (the file starts at residue 11): residues 11-145 and 150-220; 146-149 is the linker.
DOMAINS = [[1, 135], [140, 210]]
TEMPERATURE = 293.0 * unit.kelvin


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5000, help="MD steps of 10 fs (default 5000)")
    parser.add_argument("--interval", type=int, default=1000, help="steps between written frames (default 1000)")
    parser.add_argument("--output", default=os.path.join("calvados3_out", "capsid_aa.pdb"),
                        help="all-atom trajectory (.pdb, .dcd, .xtc, .h5); the CG files go beside it")
    parser.add_argument("--platform", default="CPU", help="OpenMM platform of the CG run (default CPU)")
    parser.add_argument("--mapping", choices=("ca", "com"), default=None,
                        help="bead mapping for BackmapReporter (default: the reporter's own default)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the integrator and velocities")
    return parser.parse_args(argv)


def domain_distance(positions):
    """Distance (nm) between the bead centroids of the two domains."""
    xyz = np.asarray(positions.value_in_unit(unit.nanometer))
    first, second = (np.arange(a - 1, b) for a, b in DOMAINS)
    return float(np.linalg.norm(xyz[first].mean(axis=0) - xyz[second].mean(axis=0)))


def main(argv=None) -> None:
    args = parse_args(argv)
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.output))[0]

    topology, system, positions = create_calvados3_system(
        STRUCTURE, DOMAINS, temperature=TEMPERATURE, ionicStrength=0.15 * unit.molar, pH=7.0)
    restraints = next(f for f in system.getForces() if f.getName() == "CALVADOS3Restraints")
    print(f"{topology.getNumAtoms()} beads, {restraints.getNumBonds()} domain restraints")
    with open(os.path.join(out_dir, f"{stem}_cg_start.pdb"), "w") as handle:
        app.PDBFile.writeFile(topology, positions, handle)

    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, 0.01 / unit.picosecond, 0.01 * unit.picoseconds)
    integrator.setRandomNumberSeed(args.seed)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(args.platform))
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(TEMPERATURE, args.seed)
    start = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)

    options = {} if args.mapping is None else {"mapping": args.mapping}
    first_frame = os.path.join(out_dir, f"{stem}_first.pdb")
    clock = time.perf_counter()
    with BackmapReporter(args.output, args.interval, batchFrames=5, firstFrameFile=first_frame,
                         **options) as reporter:
        simulation.reporters.append(reporter)
        simulation.reporters.append(app.DCDReporter(os.path.join(out_dir, f"{stem}_cg.dcd"), args.interval))
        simulation.step(args.steps)
    seconds = time.perf_counter() - clock
    end = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
    print(f"{args.steps} steps ({args.steps * 0.01:.0f} ps) on {args.platform} with backmapping: {seconds:.1f} s; "
          f"{reporter.framesWritten} all-atom frames in {args.output} (first frame: {first_frame})")
    evidence = getattr(reporter, "mappingEvidence", "")  # what the automatic mapping detection decided
    if evidence:
        print(f"bead mapping: {evidence}")
    fit = describe(getattr(reporter, "beadRmsd", {}))  # the frames written, mapped back to beads
    if fit:
        print(f"beads: {fit}")
    for note in getattr(reporter, "notes", []):  # chain breaks, disulfides closed, ...
        print(f"note: {note}")
    print(f"domain centroid distance {domain_distance(start):.2f} nm after minimisation, "
          f"{domain_distance(end):.2f} nm at the end")


if __name__ == "__main__":
    main()
