#!/usr/bin/env python
"""Backmap -> refine -> validate -> report for one system, without Snakemake.

A thin command line over :func:`backmap_plugin.pipeline.run_pipeline`; it
writes the same run directory as one system of ``workflows/Snakefile``::

    python workflows/pipeline.py examples/trpcage_ca.dcd --top examples/trpcage_ca.pdb \\
        -o results/trpcage --stride 10
"""

from __future__ import annotations

import argparse
import sys

from backmap_plugin.cli import call, options
from backmap_plugin.core.threads import use_threads


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of this script.

    The options it shares with ``backmap run`` and ``backmap refine`` are
    declared by :mod:`backmap_plugin.cli.options`, as for those commands.

    Returns
    -------
    argparse.ArgumentParser
        The parser; :func:`main` turns its namespace into a
        :func:`~backmap_plugin.pipeline.run_pipeline` call.
    """
    p = argparse.ArgumentParser(
        prog="pipeline.py",
        description="Backmap one CG structure or trajectory, refine, validate and report into one run directory "
                    "(backmapped.pdb, backmap.json, refined.pdb, refined.json, validate_*.json, report.html).",
    )
    p.add_argument("input", help="CG input: PDB, mmCIF, GRO, DCD, XTC, TRR, NetCDF, HDF5")
    p.add_argument("-o", "--run-dir", required=True, help="run directory (created; refused when not empty)")
    options.add_top(p)
    options.add_backmap_options(p)
    options.add_platform(p)
    options.add_threads(p)
    options.add_solvent(p, default="screened")
    options.add_minimiser(p)
    p.add_argument("--no-refine", action="store_true", help="skip the refinement")
    p.add_argument("--no-validate", action="store_true", help="skip the validation")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    options.add_overwrite(p, "reuse a non-empty run directory")
    options.add_quiet(p, "no progress output")
    options.add_debug(p, top_level=True)
    return p


def run(args) -> int:
    """Run the pipeline for parsed arguments and print its summary.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by :func:`build_parser`.

    Returns
    -------
    int
        The exit status, 0.
    """
    from backmap_plugin.pipeline import run_pipeline

    result = run_pipeline(
        args.input, args.run_dir, top=args.top, samples=args.samples, stride=args.stride, seed=args.seed,
        mapping=args.mapping, method=args.method, temperature=args.temperature, device=args.device,
        refine=not args.no_refine, validate=not args.no_validate, report=not args.no_report,
        overwrite=args.overwrite, platform=args.platform, solvent=args.solvent, refine_steps=args.steps,
        tolerance=args.tolerance, restraint_k=args.restraint_k, progress=not args.quiet,
    )
    print(result.summary())
    return 0


def main(argv=None) -> int:
    """Run the pipeline for the command line ``argv``, with the ``backmap`` command's error handling.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0; 2 after an error reported in one line
        (``pipeline.py: error: ...``); 130 after Ctrl-C.
    """
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        use_threads(args.threads)
    return call(run, args, prog="pipeline.py")


if __name__ == "__main__":
    sys.exit(main())
