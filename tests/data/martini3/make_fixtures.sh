#!/usr/bin/env bash
# Makes the Martini 3 test fixtures of this folder (see README.md).
#
# Needs: martinize2 (pip install vermouth; this folder was made with 0.15.0,
# mdtraj importable for -dssp), GROMACS gmx (2022.5), gzip, and the project
# data folder next to the repository (../shared/data: the corpus entry and the
# Martini 3 force-field .itp files, which are not copied here).
#
#   SHARED=/path/to/shared/data bash tests/data/martini3/make_fixtures.sh
#
# Everything is written into this folder; intermediate files go to a
# temporary folder that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)

SHARED=${SHARED:-../../../../shared/data}        # the project data folder, relative to this folder
MARTINI3_DIR=${MARTINI3_DIR:-$SHARED/martini3}   # martini_v3.0.0.itp, _ions_v1.itp, _solvents_v1.itp
ENTRY=abbench__6B0S_l_u                          # corpus entry (train split): 71 residues, 2 disulfides
MARTINIZE2=${MARTINIZE2:-martinize2}
GMX=${GMX:-gmx}

MARTINI3_DIR=$(cd "$MARTINI3_DIR" && pwd)
export GMXLIB=$MARTINI3_DIR                      # grompp finds the #include'd Martini files there
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

run() {  # run a command quietly, its output in $WORK/log, shown on failure
    if ! "$@" >"$WORK/log" 2>&1; then
        tail -40 "$WORK/log" >&2
        echo "failed: $*" >&2
        exit 1
    fi
}

# martinize2 writes its full command, absolute path of the script included, into the .itp header
strip_path() { sed -i -E "s#^; [^ ]*/martinize2 #; martinize2 #" "$1"; }

# ---------------------------------------------------------------- all-atom input
# The corpus file as it is: heavy atoms only (no hydrogens), no OXT.
cp "$SHARED/train/$ENTRY.pdb.gz" aa.pdb.gz
gunzip -c aa.pdb.gz >"$WORK/aa.pdb"
gunzip -c ../1l2y.pdb.gz >"$WORK/1l2y.pdb"

# ---------------------------------------------------------------- martinize2: elastic network
mkdir "$WORK/en"
(cd "$WORK/en" && run "$MARTINIZE2" -f ../aa.pdb -x cg.pdb -o martinize2.top -ff martini3001 \
    -elastic -ef 700 -el 0.5 -eu 0.9 -dssp -resid input -name protein)
cp "$WORK/en/cg.pdb" "$WORK/en/protein_0.itp" .
strip_path protein_0.itp

# ---------------------------------------------------------------- martinize2: Go model (virtual sites CA)
mkdir "$WORK/go"
(cd "$WORK/go" && run "$MARTINIZE2" -f ../aa.pdb -x cg_go.pdb -o martinize2.top -ff martini3001 \
    -go -dssp -resid input -name go)
for f in cg_go.pdb go.itp go_atomtypes.itp go_nbparams.itp; do cp "$WORK/go/$f" .; done
strip_path go.itp
# the Go topology must pass grompp (protein in vacuum; the .tpr is not kept: 130 kB of LJ pairs)
cat >topol_go.top <<'EOF'
; Martini 3 Go model (martinize2 -go): the go_* atom types and their LJ pairs
; come after the Martini particle definitions
#define GO_VIRT
#include "martini_v3.0.0.itp"
#include "go_atomtypes.itp"
#include "go_nbparams.itp"
#include "go.itp"

[ system ]
abbench__6B0S_l_u, Martini 3 Go model (virtual sites CA on BB)

[ molecules ]
go    1
EOF
cp topol_go.top go.itp go_atomtypes.itp go_nbparams.itp em.mdp "$WORK/go/"
(cd "$WORK/go" && run "$GMX" editconf -f cg_go.pdb -o box.gro -d 1.0 -bt dodecahedron \
    && run "$GMX" grompp -f em.mdp -c box.gro -p topol_go.top -o go.tpr)

# ---------------------------------------------------------------- martinize2: trp-cage (C-terminal OXT)
mkdir "$WORK/tc"
(cd "$WORK/tc" && run "$MARTINIZE2" -f ../1l2y.pdb -model 1 -x cg_1l2y.pdb -o martinize2.top -ff martini3001 \
    -dssp -resid input -name trpcage)
cp "$WORK/tc/cg_1l2y.pdb" .

# ---------------------------------------------------------------- solvated elastic-network protein
cd "$WORK/en"
cp "$HERE/em.mdp" "$HERE/md.mdp" .
run "$GMX" editconf -f cg.pdb -o box.gro -d 0.7 -bt dodecahedron
# a cubic lattice of W beads at about Martini water density (8.3 / nm^3), then solvate
printf 'one Martini W bead\n1\n    1W        W    1   0.247   0.247   0.247\n   0.493   0.493   0.493\n' >w1.gro
run "$GMX" genconf -f w1.gro -o wbox.gro -nbox 10 10 10
run "$GMX" solvate -cp box.gro -cs wbox.gro -o solv.gro -radius 0.21
n_w=$(awk 'NR > 2 && substr($0, 6, 5) == "W    "' solv.gro | wc -l)
cat >topol.top <<EOF
; Martini 3 elastic-network protein (martinize2) in Martini W water with NaCl
#include "martini_v3.0.0.itp"
#include "protein_0.itp"
#include "martini_v3.0.0_solvents_v1.itp"
#include "martini_v3.0.0_ions_v1.itp"

[ system ]
abbench__6B0S_l_u, Martini 3 elastic network, W, NaCl

[ molecules ]
protein_0    1
W         $n_w
EOF
run "$GMX" grompp -f em.mdp -c solv.gro -p topol.top -o ions.tpr
echo W | run "$GMX" genion -s ions.tpr -o ions.gro -p topol.top -pname NA -nname CL -neutral -conc 0.15 -seed 7
run "$GMX" grompp -f em.mdp -c ions.gro -p topol.top -o em.tpr
run "$GMX" mdrun -deffnm em -ntmpi 1 -ntomp 1 -pin off
run "$GMX" grompp -f md.mdp -c em.gro -p topol.top -o md.tpr
run "$GMX" mdrun -deffnm md -ntmpi 1 -ntomp 1 -pin off
echo System | run "$GMX" trjconv -f md.gro -s md.tpr -o md_novel.gro -novel
cp topol.top md.tpr md.xtc "$HERE/"
cp md_novel.gro "$HERE/md.gro"
cd "$HERE"
sha256sum aa.pdb.gz cg.pdb protein_0.itp cg_go.pdb go.itp cg_1l2y.pdb md.tpr md.xtc md.gro
chmod 644 -- *
wc -c -- * | tail -1
