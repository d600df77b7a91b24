"""``backmap validate``: a thin layer over :func:`backmap_plugin.openmm.validate.validate_structure`."""

from __future__ import annotations

import json
import os
import sys

from backmap_plugin.cli import options

__all__ = ["add_parser", "run"]

_EXAMPLE = """example:
  backmap validate trpcage_refined.pdb
  backmap validate traj_refined.pdb -o report.json      # JSON report to a file, table on stdout
  backmap validate traj_refined.pdb --json              # JSON report on stdout
  backmap validate model.pdb --strict || echo "model has problems"
  backmap validate refined.pdb --reference experimental.pdb   # the figures of both, side by side
"""


def add_parser(subparsers) -> None:
    """Add the ``validate`` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``ArgumentParser.add_subparsers``. The subcommand sets ``func``
        (:func:`run`): call ``args.func(args)`` to run it and get the exit status.
    """
    p = options.add_command(
        subparsers, "validate",
        help="check an all-atom structure: energy, clashes, geometry, chirality, Ramachandran",
        description=(
            "Per model: amber14 energy (hydrogens added if absent), heavy-atom clashes, all-atom clashscore, "
            "bond/angle outliers (> 4 sigma from Engh & Huber), cis and twisted peptides, D-amino acids, "
            "Ramachandran favoured/allowed/outliers and rotamer outliers (contours from the corpus's crystal "
            "structures), C-beta deviations > 0.25 A and missing heavy atoms; then the MolProbity-style "
            "summary (mean over models)."
        ),
        epilog=_EXAMPLE,
    )
    options.add_all_atom_input(p)
    p.add_argument("--json", action="store_true", help="print the full report as JSON instead of a table")
    p.add_argument("--reference", metavar="REF",
                   help="also validate this structure (e.g. the experimental one) and show its summary figures "
                        "beside the input's; in the JSON report under 'reference'")
    options.add_output(p, "also write the full JSON report to this file (replaced atomically, only when "
                          "validation finished)", required=False)
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any check fails (clashes, outliers, D residues, "
                        "missing atoms, cis non-Pro, non-finite energy)")
    options.add_solvent(p, default="gbn2")
    options.add_platform(p)
    options.add_threads(p)
    p.add_argument("--no-energy", action="store_true", help="skip the energy (fastest)")
    options.add_debug(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Validate ``args.input``; print a table or the JSON report, write it to ``args.output`` if given.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by the parser of :func:`add_parser`.

    Returns
    -------
    int
        The exit status: 1 with ``--strict`` when a check failed, else 0.
    """
    from backmap_plugin.io.atomic import write_json
    from backmap_plugin.io.paths import check_file_path
    from backmap_plugin.openmm.validate import validate_structure

    if args.output is not None:  # before any work
        check_file_path(args.output, "the report", reads={"input": args.input, "--top": args.top,
                                                      "--reference": args.reference})
    if args.reference is not None and not os.path.isfile(args.reference):
        from backmap_plugin.core.errors import BackmapInputError

        raise BackmapInputError(f"{args.reference}: no such file (--reference)")
    result = validate_structure(args.input, top=args.top, solvent=args.solvent, platform=args.platform,
                                energy=not args.no_energy)
    reference = None
    if args.reference is not None:
        reference = validate_structure(args.reference, solvent=args.solvent, platform=args.platform,
                                       energy=not args.no_energy)
    report = result.to_dict()
    if reference is not None:
        report["reference"] = reference.to_dict()
    if args.output is not None:
        write_json(args.output, report)
    for note in result.notes + ([] if reference is None else reference.notes):
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        print(result.table(reference=reference))
    return 1 if args.strict and not result.passed else 0
