"""The ``report`` subcommand: summary.json and an HTML page for one run directory.

:func:`add_parser` adds it to the ``backmap`` command's subparsers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["add_parser"]

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
        The object returned by ``parser.add_subparsers()``. The subcommand
        sets ``func``: call ``args.func(args)`` to run it and get the exit
        status.
    """
    p = subparsers.add_parser(
        "report",
        help="write summary.json and a self-contained HTML report of a run directory",
        description=(
            "Read the files of a run directory (backmapped.pdb and backmap.json required; refined.json, "
            "validate_backmapped.json and validate_refined.json used when present), write RUN_DIR/summary.json "
            "and an HTML page with embedded PNG plots: clashes and energy before/after refinement, "
            "Ramachandran plot, chi angles per residue type, sample diversity and the validation table. "
            "Needs matplotlib (pip install backmap_plugin[report])."
        ),
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory with backmapped.pdb, backmap.json and friends")
    p.add_argument("-o", "--output", default=None, help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors")
    p.set_defaults(func=_report)


def _report(args) -> int:
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
