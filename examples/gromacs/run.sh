#!/usr/bin/env bash
# GROMACS CA-only trajectory -> all heavy atoms -> refined structure -> GROMACS system.
# Run from anywhere: bash examples/gromacs/run.sh (outputs are written next to it).
set -euo pipefail
cd "$(dirname "$0")"

# backmap a whole trajectory (.xtc frames in nm, topology from the .gro)
backmap run traj_ca.xtc --top conf_ca.gro -o traj_aa.xtc --quiet --overwrite
# backmap one structure, then add hydrogens and minimise it with OpenMM (amber14)
backmap run conf_ca.gro -o conf_aa.pdb --quiet --overwrite
backmap refine conf_aa.pdb -o conf_refined.pdb --quiet --overwrite
# amber14 topology + coordinates for GROMACS (gmx_out/topol.top, gmx_out/conf.gro)
backmap export conf_refined.pdb --to gromacs -o gmx_out --overwrite

if command -v gmx >/dev/null; then
    cd gmx_out
    gmx -quiet grompp -f ../em.mdp -c conf.gro -p topol.top -o em.tpr
    gmx -quiet mdrun -deffnm em -nt 1
else
    echo "gmx not found (Debian: apt-get install gromacs); skipped grompp/mdrun" >&2
fi
