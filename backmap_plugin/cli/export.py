"""``backmap export``: a backmapped structure as a GROMACS or OpenMM system.

A thin layer over :func:`backmap_plugin.gromacs.export.export`; its choices
and defaults come from :mod:`backmap_plugin.gromacs.defaults`, which imports
nothing.
"""

from __future__ import annotations

import sys

from backmap_plugin.cli import options
from backmap_plugin.gromacs.defaults import DEFAULT_PADDING, WATER_MODELS

__all__ = ["add_parser", "run"]

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
        From ``ArgumentParser.add_subparsers``. The subcommand sets ``func``
        (:func:`run`): call ``args.func(args)`` to run it and get the exit status.
    """
    p = options.add_command(
        subparsers, "export",
        help="write a backmapped structure as a GROMACS (topol.top + conf.gro) or OpenMM system",
        description=(
            "Add hydrogens (pH 7, disulfides; hydrogens of the input are kept), apply amber14 with OpenMM and "
            "write the system for GROMACS (topol.top + conf.gro, converted by ParmEd) or OpenMM (system.xml + "
            "state.xml + model.pdb), in vacuum (periodic box with 1 nm padding) or solvated. The first model "
            "of the input is exported."
        ),
        epilog=_EXAMPLE,
    )
    p.add_argument("input", help="heavy-atom (or all-atom) PDB or mmCIF, optionally .gz")
    p.add_argument("--to", default="gromacs", choices=["gromacs", "openmm"], help="target (default: gromacs)")
    options.add_output(p, "output directory (must not exist unless --overwrite)")
    options.add_overwrite(p, "replace the files of an existing output directory")
    p.add_argument("--forcefield", nargs="+", default=["amber14-all.xml"], metavar="XML",
                   help="OpenMM force-field file(s) (default: amber14-all.xml)")
    p.add_argument("--water", default=None, choices=sorted(WATER_MODELS),
                   help="solvate with this water model and neutralise (default: vacuum)")
    p.add_argument("--padding", type=float, default=DEFAULT_PADDING,
                   help=f"space between the structure and the box faces in nm (default: {DEFAULT_PADDING:g})")
    options.add_ph(p)
    options.add_debug(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Export ``args.input`` into the folder ``args.output``; print the notes (stderr) and a summary (stdout).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by the parser of :func:`add_parser`.

    Returns
    -------
    int
        The exit status, 0.
    """
    from backmap_plugin.gromacs.export import export

    result = export(args.input, args.output, to=args.to, forcefield=args.forcefield, water=args.water,
                    overwrite=args.overwrite, pH=args.ph, padding=args.padding)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(result.summary())
    return 0
