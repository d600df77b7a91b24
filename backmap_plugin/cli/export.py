"""The ``export`` subcommand: a backmapped structure as a GROMACS or OpenMM system.

:func:`add_parser` adds it to the ``backmap`` command's subparsers;
:func:`main` runs it on its own (``python -m backmap_plugin.cli.export``).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser"]

_EXAMPLE = """example:
  backmap refine conf_aa.pdb -o conf_refined.pdb
  backmap export conf_refined.pdb --to gromacs -o gmx_out          # gmx_out/topol.top + conf.gro
  backmap export conf_refined.pdb --to openmm -o omm_out           # system.xml + state.xml + model.pdb
  backmap export conf_aa.pdb --to gromacs --water tip3p -o solvated --overwrite
"""


def add_parser(subparsers) -> None:
    """Add the ``export`` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The object returned by ``parser.add_subparsers()``. The subcommand
        sets ``func``: call ``args.func(args)`` to run it and get the exit
        status.
    """
    from backmap_plugin.gromacs.export import DEFAULT_PADDING, WATER_MODELS

    p = subparsers.add_parser(
        "export",
        help="write a backmapped structure as a GROMACS (topol.top + conf.gro) or OpenMM system",
        description=(
            "Add hydrogens (pH 7, disulfides; hydrogens of the input are kept), apply amber14 with OpenMM and "
            "write the system for GROMACS (topol.top + conf.gro, converted by ParmEd) or OpenMM (system.xml + "
            "state.xml + model.pdb), in vacuum (periodic box with 1 nm padding) or solvated. The first model "
            "of the input is exported."
        ),
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="heavy-atom (or all-atom) PDB or mmCIF, optionally .gz")
    p.add_argument("--to", default="gromacs", choices=["gromacs", "openmm"], help="target (default: gromacs)")
    p.add_argument("-o", "--output", required=True, help="output directory (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing output directory")
    p.add_argument("--forcefield", nargs="+", default=["amber14-all.xml"], metavar="XML",
                   help="OpenMM force-field file(s) (default: amber14-all.xml)")
    p.add_argument("--water", default=None, choices=sorted(WATER_MODELS),
                   help="solvate with this water model and neutralise (default: vacuum)")
    p.add_argument("--padding", type=float, default=DEFAULT_PADDING,
                   help=f"space between the structure and the box faces in nm (default: {DEFAULT_PADDING:g})")
    p.add_argument("--ph", type=float, default=7.0, help="pH for the hydrogens added (default: 7.0)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from backmap_plugin.gromacs.export import export

    result = export(args.input, args.output, to=args.to, forcefield=args.forcefield, water=args.water,
                    overwrite=args.overwrite, pH=args.ph, padding=args.padding)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(result.summary())
    return 0
