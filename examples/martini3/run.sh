#!/usr/bin/env bash
# Martini 3 end to end: all-atom protein -> martinize2 -> solvated Martini 3 system
# -> energy minimisation + short MD (GROMACS) -> backmap -> refine -> export for an
# all-atom GROMACS continuation. See README.md (this folder).
#
# From the repository root:
#
#   bash examples/martini3/run.sh                 # writes examples/martini3/out/
#   MARTINI3_ITP_DIR=/path/to/martini3 bash examples/martini3/run.sh
#   bash examples/martini3/run.sh /tmp/m3         # another output folder (new or empty)
#   AA_INPUT=protein.pdb bash examples/martini3/run.sh /tmp/mine   # another protein (.pdb or .pdb.gz; one
#                                                                  # martinize2 molecule per chain)
#
# Needs on PATH: martinize2 (pip install vermouth mdtraj), gmx (GROMACS 2022 or
# newer), backmap (this package, with its gromacs extra for the .tpr and OpenMM
# for refine/export). MARTINI3_ITP_DIR holds martini_v3.0.0.itp,
# martini_v3.0.0_solvents_v1.itp and martini_v3.0.0_ions_v1.itp (the Martini
# 3.0.0 release, not shipped here).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

AA_INPUT=${AA_INPUT:-$REPO/tests/data/martini3/aa.pdb.gz}   # 6B0S chain A, 71 residues, heavy atoms only
NT=${NT:-${OMP_NUM_THREADS:-2}}                   # CPU threads for gmx mdrun (mdrun refuses an -ntomp other than OMP_NUM_THREADS)
GMX=${GMX:-gmx}
MARTINIZE2=${MARTINIZE2:-martinize2}
BACKMAP=${BACKMAP:-backmap}

# ------------------------------------------------------------------ checks
MARTINI3_ITP_DIR=${MARTINI3_ITP_DIR:-$REPO/../shared/data/martini3}
for f in martini_v3.0.0.itp martini_v3.0.0_solvents_v1.itp martini_v3.0.0_ions_v1.itp; do
    if [[ ! -f $MARTINI3_ITP_DIR/$f ]]; then
        cat >&2 <<EOF
error: $MARTINI3_ITP_DIR/$f not found.
The Martini 3.0.0 force-field files are not shipped with this repository (the
particle file is 16 MB). Download the Martini 3.0.0 release from
https://cgmartini.nl (Downloads > Force field parameters > Martini 3), put
martini_v3.0.0.itp, martini_v3.0.0_solvents_v1.itp and martini_v3.0.0_ions_v1.itp
in one folder and run again with
    MARTINI3_ITP_DIR=/that/folder bash examples/martini3/run.sh
EOF
        exit 1
    fi
done
MARTINI3_ITP_DIR=$(cd "$MARTINI3_ITP_DIR" && pwd)
for tool in "$MARTINIZE2" "$GMX" "$BACKMAP"; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: '$tool' not found on PATH (see examples/martini3/README.md, Prerequisites)" >&2
        exit 1
    fi
done

# ------------------------------------------------------------------ output folder
if [[ $# -ge 1 ]]; then
    OUT=$1
    if [[ -e $OUT && -n $(ls -A "$OUT") ]]; then
        echo "error: output folder $OUT exists and is not empty" >&2
        exit 1
    fi
else
    OUT=$HERE/out                      # the default folder is made afresh on every run
    rm -rf "$OUT"
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$OUT"
mkdir logs
export GMXLIB=$MARTINI3_ITP_DIR       # grompp finds the #include'd Martini 3 files there
echo "output folder: $OUT"
echo "Martini 3 files: $MARTINI3_ITP_DIR"

# ------------------------------------------------------------------ helpers
STEP_NAMES=()
STEP_TIMES=()
T_STEP=0
N_STEP=0
step() {   # step "title": close the previous step's timer, print the title
    local now
    now=$(date +%s.%N)
    if [[ $N_STEP -gt 0 ]]; then STEP_TIMES+=("$(awk -v a="$now" -v b="$T_STEP" 'BEGIN {print a - b}')"); fi
    N_STEP=$((N_STEP + 1))
    STEP_NAMES+=("$1")
    T_STEP=$now
    printf '\n== %d. %s\n' "$N_STEP" "$1"
}
quiet() {  # quiet LOGNAME CMD...: print the command, run it with its output in logs/LOGNAME.log
    local log=logs/$1.log
    shift
    echo "+ $*"
    if ! "$@" >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "failed: $* (full output: $OUT/$log)" >&2
        exit 1
    fi
}
loud() {   # loud CMD...: print the command, run it with its output shown
    echo "+ $*"
    "$@"
}

T_START=$(date +%s.%N)

# ------------------------------------------------------------------ 1. martinize2
step "martinize2: all-atom protein -> Martini 3 beads + topology"
gunzip -cf "$AA_INPUT" >aa.pdb     # (-f: a plain .pdb passes through)
# Side-chain corrections (the old -scfix) are on by default since vermouth 0.11,
# and vermouth 0.15 refuses the deprecated -scfix flag (a warning, fatal without
# -maxwarn); termini are charged by default (-nt would make them neutral).
# -dssp without a program uses mdtraj; -resid input keeps the PDB numbers (306-376).
quiet martinize2 "$MARTINIZE2" -f aa.pdb -x cg.pdb -o martinize2.top -ff martini3001 \
    -elastic -ef 700 -el 0.5 -eu 0.9 -dssp -resid input -name protein
echo "   $(grep -c '^ATOM' cg.pdb) beads -> cg.pdb, molecule(s) $(ls protein_*.itp | tr '\n' ' ')"

# ------------------------------------------------------------------ 2. box, water, ions
step "box, Martini water (W) and 0.15 M NaCl"
quiet editconf "$GMX" editconf -f cg.pdb -o box.gro -d 1.0 -bt dodecahedron
# a cubic lattice of W beads at Martini water density (0.493 nm spacing, 8.3 / nm^3)
printf 'one Martini W bead\n1\n    1W        W    1   0.247   0.247   0.247\n   0.493   0.493   0.493\n' >w1.gro
quiet genconf "$GMX" genconf -f w1.gro -o wbox.gro -nbox 12 12 12
quiet solvate "$GMX" solvate -cp box.gro -cs wbox.gro -o solv.gro -radius 0.21
n_w=$(awk 'NR > 2 && substr($0, 6, 5) == "W    "' solv.gro | wc -l)
# the protein molecules as martinize2 wrote them (one protein_N.itp per chain it did not merge), in its order
protein_itps=$(grep '^#include "protein_' martinize2.top)
protein_molecules=$(awk '/^\[ *molecules *\]/ {on = 1; next} on && NF == 2' martinize2.top)
cat >topol.top <<EOF
; Martini 3 elastic-network protein (martinize2) in Martini W water with NaCl
#include "martini_v3.0.0.itp"
$protein_itps
#include "martini_v3.0.0_solvents_v1.itp"
#include "martini_v3.0.0_ions_v1.itp"

[ system ]
protein of $(basename "$AA_INPUT"), Martini 3 elastic network, W, NaCl

[ molecules ]
$protein_molecules
W         $n_w
EOF
quiet grompp_ions "$GMX" grompp -f "$HERE/cg_em.mdp" -c solv.gro -p topol.top -o ions.tpr
echo W | quiet genion "$GMX" genion -s ions.tpr -o ions.gro -p topol.top \
    -pname NA -nname CL -neutral -conc 0.15 -seed 7
awk '/^\[ *molecules *\]/ {m = 1; next} m && NF == 2 {printf "   %s %s", $1, $2} END {print ""}' topol.top

# ------------------------------------------------------------------ 3. energy minimisation
step "energy minimisation (steepest descent)"
quiet grompp_em "$GMX" grompp -f "$HERE/cg_em.mdp" -c ions.gro -p topol.top -o em.tpr
quiet mdrun_em "$GMX" mdrun -deffnm em -ntmpi 1 -ntomp "$NT" -pin off
grep -E '^(Steepest Descents|Potential Energy|Maximum force)' em.log | sed 's/^/   /' || true

# ------------------------------------------------------------------ 4. short MD
step "short Martini 3 MD (2000 x 20 fs, 6 frames)"
quiet grompp_md "$GMX" grompp -f "$HERE/cg_md.mdp" -c em.gro -p topol.top -o md.tpr
quiet mdrun_md "$GMX" mdrun -deffnm md -ntmpi 1 -ntomp "$NT" -pin off
grep -A1 -E '^ +Core t \(s\)' md.log | sed 's/^/   /' || true

# ------------------------------------------------------------------ 5. backmap
step "backmap run: Martini 3 trajectory -> all heavy atoms (topology from md.tpr)"
loud "$BACKMAP" run md.xtc --top md.tpr -o protein_aa.pdb --quiet
step "backmap run: the same with the topology from md.gro"
loud "$BACKMAP" run md.xtc --top md.gro -o protein_aa_gro.pdb --quiet

# ------------------------------------------------------------------ 6. refine the first frame
step "backmap refine: hydrogens + restrained amber14 minimisation of frame 0"
awk '/^ENDMDL/ {print "END"; exit} /^MODEL/ {next} {print}' protein_aa.pdb >frame0_aa.pdb
loud "$BACKMAP" refine frame0_aa.pdb -o frame0_refined.pdb --quiet
# 6B0S has two disulfides (CYS334-CYS369, CYS338-CYS374; in the Martini model SC1-SC1
# constraints of 0.24 nm). Show their SG-SG distances after backmapping and refinement.
sg_sg() {  # sg_sg FILE: SG-SG distances below 5 A (first model)
    awk '/^ENDMDL/ {exit} /^(ATOM|HETATM)/ && substr($0, 13, 4) == " SG " {
            n++; r[n] = substr($0, 18, 3) substr($0, 23, 4) + 0
            x[n] = substr($0, 31, 8); y[n] = substr($0, 39, 8); z[n] = substr($0, 47, 8) }
         END { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) {
                   d = sqrt((x[i]-x[j])^2 + (y[i]-y[j])^2 + (z[i]-z[j])^2)
                   if (d < 5) printf " %s-%s %.2f A", r[i], r[j], d } }' "$1"
}
echo "   SG-SG, backmapped frame 0:$(sg_sg frame0_aa.pdb)"
echo "   SG-SG, refined:           $(sg_sg frame0_refined.pdb)"
echo "   disulfide bonds made by refine: $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["frames"][0]["disulfides"])' frame0_refined.pdb.json)"

# ------------------------------------------------------------------ 7. export for GROMACS
step "backmap export: amber14 topology + coordinates for GROMACS (gmx_aa/)"
loud "$BACKMAP" export frame0_refined.pdb --to gromacs -o gmx_aa
quiet grompp_aa "$GMX" grompp -f "$HERE/aa_em.mdp" -c gmx_aa/conf.gro -p gmx_aa/topol.top \
    -o gmx_aa/em.tpr -po gmx_aa/mdout.mdp
quiet mdrun_aa "$GMX" mdrun -deffnm gmx_aa/em -ntmpi 1 -ntomp "$NT" -pin off
grep -E '^(Steepest Descents|Potential Energy|Maximum force)' gmx_aa/em.log | sed 's/^/   /' || true

# ------------------------------------------------------------------ summary
T_END=$(date +%s.%N)
STEP_TIMES+=("$(awk -v a="$T_END" -v b="$T_STEP" 'BEGIN {print a - b}')")
printf '\n== wall time per step (s)\n'
for i in "${!STEP_NAMES[@]}"; do
    printf '%7.1f  %d. %s\n' "${STEP_TIMES[$i]}" "$((i + 1))" "${STEP_NAMES[$i]}"
done
printf '%7.1f  total\n' "$(awk -v a="$T_END" -v b="$T_START" 'BEGIN {print a - b}')"
echo
echo "outputs in $OUT:"
echo "  cg.pdb, protein_*.itp, topol.top  martinize2 beads and the system topology"
echo "  md.tpr, md.xtc, md.gro             the Martini 3 run"
echo "  protein_aa.pdb                     backmapped heavy atoms, one model per frame"
echo "  frame0_refined.pdb (+ .pdb.json)   frame 0 with hydrogens, minimised (+ its report)"
echo "  gmx_aa/topol.top, gmx_aa/conf.gro  amber14 system for an all-atom GROMACS run"
