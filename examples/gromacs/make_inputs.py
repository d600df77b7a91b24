"""Make the GROMACS-style CA-only example inputs from the test structure 1L2Y.

Two copies of the Trp-cage C-alpha trace (20 residues each, numbered from 1
in each copy as GROMACS tools write them; a .gro file has no chain ids) in a
5 nm cubic box, one frame per NMR model of 1L2Y:

* ``conf_ca.gro``: the first frame, both chains whole.
* ``traj_ca.xtc``: all 38 frames; in every odd frame the system is shifted
  and every bead put back into the box, as GROMACS writes trajectories, so
  each chain is cut by the box boundary.
* ``topol_ca.top`` and ``topol_ca.tpr``: a C-alpha-only GROMACS topology of
  the two chains (one molecule each; beads bonded along the chain, no other
  interactions: the run input of a CG simulation as far as backmapping
  needs it), compiled by ``gmx grompp`` when GROMACS is installed.

Run from anywhere: ``python examples/gromacs/make_inputs.py``.
"""

import shutil
import subprocess
from pathlib import Path

import mdtraj as md
import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / "tests" / "data" / "1l2y.pdb.gz"
BOX = 5.0  # nm


def main() -> None:
    ca = md.load(str(SOURCE))
    ca = ca.atom_slice(ca.topology.select("name CA"))
    second = ca.xyz + np.array([2.5, 0.0, 0.0], dtype=np.float32)  # the copy, 2.5 nm along x
    xyz = np.concatenate([ca.xyz, second], axis=1)
    xyz += BOX / 2 - xyz.mean(axis=1, keepdims=True)  # centred in the box
    topology = ca.topology.join(ca.topology)  # mdtraj keeps residue numbers 1..20 for both
    for atom in topology.atoms:
        atom.serial = atom.index + 1
    shift = np.array([2.4, 2.2, 2.6], dtype=np.float32)  # moves both chains across the faces
    xyz[1::2] = np.mod(xyz[1::2] + shift, BOX)
    traj = md.Trajectory(xyz, topology, unitcell_lengths=np.full((len(xyz), 3), BOX),
                         unitcell_angles=np.full((len(xyz), 3), 90.0))
    traj[0].save_gro(str(HERE / "conf_ca.gro"))
    traj.save_xtc(str(HERE / "traj_ca.xtc"))
    write_top(ca.topology, HERE / "topol_ca.top")
    if shutil.which("gmx"):
        subprocess.run(["gmx", "-quiet", "grompp", "-f", "em.mdp", "-c", "conf_ca.gro", "-p", "topol_ca.top",
                        "-o", "topol_ca.tpr", "-po", "/dev/null", "-maxwarn", "2"], cwd=HERE, check=True)
    else:
        print("gmx not found: topol_ca.tpr not made")


def write_top(chain: md.Topology, path: Path) -> None:
    """A C-alpha-only topology: one molecule type for the chain, two copies."""
    lines = ["; C-alpha-only Trp-cage (two copies), made by make_inputs.py", "[ defaults ]",
             "; nbfunc comb-rule gen-pairs", "  1       2         no", "", "[ atomtypes ]",
             "; name at.num   mass  charge ptype sigma epsilon", "  CA     6    110.0   0.0    A     0.4   0.0", "",
             "[ moleculetype ]", "  trpcage  1", "", "[ atoms ]", "; nr type resnr residue atom cgnr charge mass"]
    for atom in chain.atoms:
        r = atom.residue
        lines.append(f"  {atom.index + 1:3d}  CA  {r.resSeq:3d}  {r.name}  CA  {atom.index + 1:3d}  0.0  110.0")
    lines += ["", "[ bonds ]", "; i j funct length k"]
    lines += [f"  {i:3d} {i + 1:3d}  1  0.38  10000" for i in range(1, chain.n_atoms)]
    lines += ["", "[ system ]", "  C-alpha Trp-cage x 2", "", "[ molecules ]", "  trpcage  2", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
