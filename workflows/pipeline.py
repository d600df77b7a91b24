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
import traceback


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of this script."""
    p = argparse.ArgumentParser(
        prog="pipeline.py",
        description="Backmap one CG structure or trajectory, refine, validate and report into one run directory "
                    "(backmapped.pdb, backmap.json, refined.pdb, refined.json, validate_*.json, report.html).",
    )
    p.add_argument("input", help="CG input: PDB, mmCIF, GRO, DCD, XTC, TRR, NetCDF, HDF5")
    p.add_argument("-o", "--run-dir", required=True, help="run directory (created; refused when not empty)")
    p.add_argument("--top", help="topology file for DCD/XTC/TRR/NetCDF input")
    p.add_argument("--samples", type=int, default=1, help="structures per input frame (default: 1)")
    p.add_argument("--stride", type=int, default=1, help="use every K-th frame (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--mapping", default="ca", choices=["ca", "com"], help="where the bead sits (default: ca)")
    p.add_argument("--method", default=None, choices=["ideal", "model"],
                   help="builder (default: model for --mapping ca, ideal otherwise)")
    p.add_argument("--temperature", type=float, default=None, help="model sampling temperature")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu or cuda (default: auto)")
    p.add_argument("--platform", default="auto",
                   help="OpenMM platform for refine and validate: auto, CUDA, CPU, Reference, OpenCL")
    p.add_argument("--solvent", default="gbn2", choices=["gbn2", "obc2", "vacuum"],
                   help="implicit solvent with amber14 (default: gbn2)")
    p.add_argument("--steps", type=int, default=5000,
                   help="maximum minimiser iterations per refinement stage, 0 for no limit (default: 5000)")
    p.add_argument("--tolerance", type=float, default=10.0, help="minimiser tolerance in kJ/mol/nm (default: 10)")
    p.add_argument("--restraint-k", type=float, default=1000.0,
                   help="heavy-atom restraint constant in kJ/mol/nm^2 (default: 1000)")
    p.add_argument("--no-refine", action="store_true", help="skip the refinement")
    p.add_argument("--no-validate", action="store_true", help="skip the validation")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty run directory")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return p


def main(argv=None) -> int:
    """Run the pipeline for the command line ``argv``; returns the exit status."""
    args = build_parser().parse_args(argv)
    from backmap_plugin.cli.command import handled_errors
    from backmap_plugin.pipeline import run_pipeline

    try:
        result = run_pipeline(
            args.input, args.run_dir, top=args.top, samples=args.samples, stride=args.stride, seed=args.seed,
            mapping=args.mapping, method=args.method, temperature=args.temperature, device=args.device,
            refine=not args.no_refine, validate=not args.no_validate, report=not args.no_report,
            overwrite=args.overwrite, platform=args.platform, solvent=args.solvent, refine_steps=args.steps,
            tolerance=args.tolerance, restraint_k=args.restraint_k, progress=not args.quiet,
        )
    except handled_errors() as exc:
        if args.debug:
            traceback.print_exc()
        print(f"pipeline.py: error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
