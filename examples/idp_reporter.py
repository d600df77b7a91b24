"""An IDP simulated with the CALVADOS 2 (HPS) CG model, backmapped while it runs.

CG Langevin dynamics of alpha-synuclein's first 40 residues -> all-atom
trajectory written by BackmapReporter -> the last frame refined with amber14
(hydrogens, restrained minimisation) -> validated. A few minutes on a laptop
CPU. Run from anywhere: ``python examples/idp_reporter.py [OUTDIR]``.
"""

import argparse
import os

import mdtraj as md
import openmm
from openmm import app, unit

from backmap_plugin import BackmapReporter
from backmap_plugin.force_fields import create_hps_system
from backmap_plugin.openmm import refine_structure, validate_structure

SEQUENCE = "MDVFMKGLSKAKEGVVAAAEKTKQGVAEAAGKTKEGVLYV"


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    topology, system, positions = create_hps_system(SEQUENCE, ionicStrength=0.15, temperature=298.0)
    integrator = openmm.LangevinMiddleIntegrator(298 * unit.kelvin, 0.01 / unit.picosecond, 0.01 * unit.picoseconds)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(298 * unit.kelvin, 1)

    aa = os.path.join(out, "idp_aa.xtc")
    with BackmapReporter(aa, 1000, batchFrames=10, firstFrameFile=os.path.join(out, "idp_first_aa.pdb")) as reporter:
        simulation.reporters.append(reporter)
        simulation.reporters.append(app.DCDReporter(os.path.join(out, "idp_cg.dcd"), 1000))
        simulation.step(50_000)
    print(f"{reporter.framesWritten} all-atom frames in {aa} (topology: idp_first_aa.pdb)")

    last = md.load(aa, top=os.path.join(out, "idp_first_aa.pdb"))[-1]
    last_pdb = os.path.join(out, "idp_last_aa.pdb")
    last.save_pdb(last_pdb)
    refined = os.path.join(out, "idp_last_refined.pdb")
    result = refine_structure(last_pdb, refined, solvent="gbn2", progress=False)
    print(result.frames[0] if hasattr(result, "frames") else result)
    report = validate_structure(refined)
    print(report.table())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", nargs="?", default="idp_example", help="output folder (default: idp_example)")
    main(parser.parse_args().outdir)
