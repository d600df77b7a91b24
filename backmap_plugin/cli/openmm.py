"""The ``refine`` and ``validate`` subcommands (thin wrappers over the API).

:func:`add_parsers` adds both to the ``backmap`` command's subparsers;
:func:`main` runs them on their own (``python -m backmap_plugin.cli.openmm``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["add_parsers"]

_REFINE_EXAMPLE = """example:
  backmap run examples/trpcage_ca.pdb -o trpcage_aa.pdb
  backmap refine trpcage_aa.pdb -o trpcage_refined.pdb      # also writes trpcage_refined.json
  backmap refine traj_aa.pdb -o traj_refined.pdb --solvent vacuum --steps 1000
"""

_VALIDATE_EXAMPLE = """example:
  backmap validate trpcage_refined.pdb
  backmap validate traj_refined.pdb -o report.json      # JSON report to a file, table on stdout
  backmap validate traj_refined.pdb --json              # JSON report on stdout
  backmap validate model.pdb --strict || echo "model has problems"
"""


def _add_refine(sub) -> None:
    p = sub.add_parser(
        "refine",
        help="add hydrogens and minimise a backmapped structure with OpenMM (amber14, restrained)",
        description=(
            "Complete a heavy-atom structure (missing atoms, disulfides, hydrogens at pH 7), remove clashes "
            "with a soft-core stage, then minimise with amber14 + implicit solvent under heavy-atom position "
            "restraints. Every model of the input is refined; a JSON report goes next to the output."
        ),
        epilog=_REFINE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="heavy-atom PDB or mmCIF (optionally .gz), one or more models")
    p.add_argument("-o", "--output", required=True, help="refined structure: .pdb, .cif, .dcd, .xtc or .h5")
    p.add_argument("--restraint-k", type=float, default=1000.0,
                   help="heavy-atom restraint constant in kJ/mol/nm^2 (default: 1000)")
    p.add_argument("--steps", type=int, default=5000,
                   help="maximum minimiser iterations per stage, 0 for no limit (default: 5000)")
    p.add_argument("--tolerance", type=float, default=10.0,
                   help="minimiser tolerance, RMS force in kJ/mol/nm (default: 10)")
    p.add_argument("--platform", default="auto",
                   help="OpenMM platform: auto (CUDA if present, else CPU), CUDA, CPU, Reference, OpenCL")
    p.add_argument("--solvent", default="gbn2", choices=["gbn2", "obc2", "vacuum"],
                   help="implicit solvent with amber14 (default: gbn2)")
    p.add_argument("--ph", type=float, default=7.0, help="pH for protonation states (default: 7.0)")
    p.add_argument("--no-soft-core", action="store_true", help="skip the soft-core clash-removal stage")
    p.add_argument("--report", default=None, help="JSON report path (default: OUTPUT with extension .json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors")
    p.set_defaults(func=_refine)


def _add_validate(sub) -> None:
    p = sub.add_parser(
        "validate",
        help="check an all-atom structure: energy, clashes, geometry, chirality, Ramachandran",
        description=(
            "Per model: amber14 energy (hydrogens added if absent), heavy-atom clashes, all-atom clashscore, "
            "bond/angle outliers (> 4 sigma from Engh & Huber), cis non-proline peptides, D-amino acids, "
            "Ramachandran outliers and missing heavy atoms."
        ),
        epilog=_VALIDATE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="PDB or mmCIF (optionally .gz), one or more models")
    p.add_argument("--json", action="store_true", help="print the full report as JSON instead of a table")
    p.add_argument("-o", "--output", default=None,
                   help="also write the full JSON report to this file (replaced atomically, only when "
                        "validation finished)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any check fails (clashes, outliers, D residues, "
                        "missing atoms, cis non-Pro, non-finite energy)")
    p.add_argument("--solvent", default="gbn2", choices=["gbn2", "obc2", "vacuum"],
                   help="implicit solvent for the energy (default: gbn2)")
    p.add_argument("--platform", default="auto", help="OpenMM platform for the energy (default: auto)")
    p.add_argument("--no-energy", action="store_true", help="skip the energy (fastest)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors")
    p.set_defaults(func=_validate)


def add_parsers(subparsers) -> None:
    """Add the ``refine`` and ``validate`` subcommands.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The object returned by ``parser.add_subparsers()``. Each subcommand
        sets ``func``: call ``args.func(args)`` to run it and get the exit
        status.
    """
    _add_refine(subparsers)
    _add_validate(subparsers)


def _refine(args) -> int:
    from backmap_plugin.openmm.refine import refine_structure

    result = refine_structure(
        args.input,
        args.output,
        restraintK=args.restraint_k,
        maxIterations=args.steps,
        tolerance=args.tolerance,
        platform=args.platform,
        solvent=args.solvent,
        pH=args.ph,
        softCore=not args.no_soft_core,
        report=args.report,
        progress=not args.quiet,
    )
    for frame in result.frames:
        if not frame["converged"]:
            reasons = []
            if not frame["energy_after_finite"]:
                reasons.append("energy not finite")
            if frame["clashes_after"]:
                reasons.append(f"{frame['clashes_after']} heavy-atom clash(es) left")
            if frame["hit_iteration_limit"]:
                reasons.append("iteration limit reached")
            print(f"warning: frame {frame['frame']} did not converge ({', '.join(reasons)}); written anyway",
                  file=sys.stderr)
    print(result.summary())
    return 0


def _check_report_path(path: str, input: str) -> None:
    """Fail before any work when the JSON report cannot be written at ``path``."""
    from backmap_plugin.core.errors import BackmapInputError

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise BackmapInputError(f"{path}: cannot write report: directory {directory} does not exist")
    if os.path.isdir(path):
        raise BackmapInputError(f"{path}: cannot write report: it is a directory")
    if os.path.exists(input) and os.path.exists(path) and os.path.samefile(path, input):
        raise BackmapInputError(f"{path}: the report would overwrite the input structure; choose another path")


def _validate(args) -> int:
    from backmap_plugin.io.legacy import write_json
    from backmap_plugin.openmm.validate import validate_structure

    if args.output is not None:
        _check_report_path(args.output, args.input)
    result = validate_structure(args.input, solvent=args.solvent, platform=args.platform,
                                energy=not args.no_energy)
    if args.output is not None:
        write_json(args.output, result.to_dict())
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        print(result.table())
    return 1 if args.strict and not result.passed else 0
