"""Make the GROMACS-style CA-only example inputs from the test structure 1L2Y.

Two copies of the Trp-cage C-alpha trace (20 residues each, numbered from 1
in each copy as GROMACS tools write them; a .gro file has no chain ids) in a
5 nm cubic box, one frame per NMR model of 1L2Y:

* ``conf_ca.gro``: the first frame, both chains whole.
* ``traj_ca.xtc``: all 38 frames; in every odd frame the system is shifted
  and every bead put back into the box, as GROMACS writes trajectories, so
  each chain is cut by the box boundary.

Run from anywhere: ``python examples/gromacs/make_inputs.py``.
"""

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


if __name__ == "__main__":
    main()
