"""``backmap report``: summary.json and an HTML page for one run directory.

A thin layer over :func:`backmap_plugin.report.write_report`.
"""

from __future__ import annotations

import json
import os
import sys

from backmap_plugin.cli import options

__all__ = ["add_parser", "run"]

_EXAMPLE = """example:
  backmap run traj_ca.dcd --top top_ca.pdb --samples 4 -o run/backmapped.pdb --json run/backmap.json
  backmap refine run/backmapped.pdb -o run/refined.pdb                  # also writes run/refined.json
  backmap validate run/backmapped.pdb --json > run/validate_backmapped.json
  backmap validate run/refined.pdb --json > run/validate_refined.json
  backmap report run -o run/report.html                                 # also writes run/summary.json
"""


def add_parser(subparsers) -> None:
    """Add the ``report`` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``ArgumentParser.add_subparsers``. The subcommand sets ``func``
        (:func:`run`): call ``args.func(args)`` to run it and get the exit status.
    """
    p = options.add_command(
        subparsers, "report",
        help="write summary.json and a self-contained HTML report of a run directory",
        description=(
            "Read the files of a run directory (backmapped.pdb and backmap.json required; refined.json, "
            "validate_backmapped.json and validate_refined.json used when present), write RUN_DIR/summary.json "
            "and an HTML page with embedded PNG plots: clashes and energy before/after refinement, "
            "Ramachandran plot, chi angles per residue type, sample diversity and the validation table. "
            "Needs matplotlib (pip install backmap_plugin[report])."
        ),
        epilog=_EXAMPLE,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory with backmapped.pdb, backmap.json and friends")
    options.add_output(p, "HTML file to write (default: RUN_DIR/report.html)", required=False)
    options.add_debug(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Write ``RUN_DIR/summary.json`` and the HTML report; print one line about the run.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by the parser of :func:`add_parser`.

    Returns
    -------
    int
        The exit status: 0, or 2 when matplotlib is missing (one line,
        like the errors of :func:`backmap_plugin.cli.command.handled_errors`;
        the traceback with ``--debug``).
    """
    from backmap_plugin.report import SUMMARY_NAME, summary_line, write_report

    output = args.output or os.path.join(args.run_dir, "report.html")
    try:
        write_report(args.run_dir, output)
    except ImportError as exc:  # matplotlib missing: one line, like the handled errors
        if getattr(args, "debug", False):
            raise
        print(f"backmap: error: {exc}", file=sys.stderr)
        return 2
    summary_path = os.path.join(args.run_dir, SUMMARY_NAME)
    with open(summary_path, encoding="utf-8") as handle:
        print(f"{summary_line(json.load(handle))} -> {output} (summary {summary_path})")
    return 0
