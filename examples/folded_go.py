"""A folded protein with a C-alpha Go model, backmapped afterwards.

Go model of trp-cage from its native structure (examples/trpcage.pdb) ->
CG trajectory (DCD) -> `backmap run` on the finished trajectory -> the last
frame refined and validated. A minute or two on a laptop CPU.
Run: ``python examples/folded_go.py [OUTDIR]``.
"""

import argparse
import os

import openmm
from openmm import app, unit

from backmap_plugin import backmap
from backmap_plugin.force_fields import create_go_system
from backmap_plugin.openmm import refine_structure, validate_structure

HERE = os.path.dirname(os.path.abspath(__file__))


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    topology, system, positions = create_go_system(os.path.join(HERE, "trpcage.pdb"))
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1.0 / unit.picosecond, 0.005 * unit.picoseconds)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(positions)
    top_pdb, traj_dcd = os.path.join(out, "go_cg.pdb"), os.path.join(out, "go_cg.dcd")
    with open(top_pdb, "w") as handle:
        app.PDBFile.writeFile(topology, positions, handle)
    simulation.reporters.append(app.DCDReporter(traj_dcd, 500))
    simulation.step(20_000)

    aa = os.path.join(out, "go_aa.pdb")
    print(backmap(traj_dcd, aa, top=top_pdb, stride=4).summary())
    refined = os.path.join(out, "go_refined.pdb")
    refine_structure(aa, refined, solvent="vacuum", progress=False)
    print(validate_structure(refined, solvent="vacuum").table())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", nargs="?", default="go_example", help="output folder (default: go_example)")
    main(parser.parse_args().outdir)
