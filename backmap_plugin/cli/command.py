"""The ``backmap`` command: thin subcommands over the Python API."""

from __future__ import annotations

import argparse
import sys
import traceback

from backmap_plugin import __version__
from backmap_plugin.core.allocator import keep_freed_memory
from backmap_plugin.cli.data import add_parser as add_data_parser
from backmap_plugin.cli.export import add_parser as add_export_parser
from backmap_plugin.cli.train import add_parser as add_train_parser
from backmap_plugin.cli.openmm import add_parsers as add_openmm_parsers
from backmap_plugin.cli.report import add_parser as add_report_parser

_RUN_EXAMPLE = """example:
  backmap run examples/trpcage_ca.pdb -o trpcage_aa.pdb
  backmap run traj_ca.dcd --top top_ca.pdb -o traj_aa.xtc --stride 10 --json run.json
  backmap run traj_ca.xtc --top conf_ca.gro -o traj_aa.xtc --resume     # after Ctrl-C or a kill
"""


def _add_run(sub) -> None:
    p = sub.add_parser(
        "run",
        help="backmap a CG structure or trajectory to all heavy atoms",
        description="Backmap a coarse-grained (one bead per residue) structure or trajectory to all heavy atoms.",
        epilog=_RUN_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="CG input: PDB, mmCIF, GRO, DCD, XTC, TRR, NetCDF, HDF5")
    p.add_argument("--top", help="topology file for DCD/XTC/TRR/NetCDF input: PDB, mmCIF, GRO, H5 or TPR (needs MDAnalysis)")
    p.add_argument("-o", "--output", required=True, help="output file: .pdb, .cif, .dcd, .xtc or .h5")
    p.add_argument("--mapping", default="ca", choices=["ca", "com"], help="where the bead sits (default: ca)")
    p.add_argument("--method", default=None, choices=["ideal", "model"],
                   help="builder (default: model for --mapping ca, ideal otherwise)")
    p.add_argument("--model", help="trained model file for --method model (default: the shipped model)")
    p.add_argument("--temperature", type=float, default=None,
                   help="model sampling temperature; 0 = the deterministic structure of least expected error (default: 0 for one sample, 1 for several)")
    p.add_argument("--samples", type=int, default=1, help="structures per input frame, frame-major (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--stride", type=int, default=1, help="use every K-th frame (default: 1)")
    p.add_argument("--chunk", type=int, default=1000, help="frames processed at a time (default: 1000)")
    p.add_argument(
        "--break-distance", type=float, default=None,
        help="bead distance in Angstrom that splits a chain into segments (default: 4.5 for ca, 10 for com)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (or start an unfinished run over)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same command (same output and options); "
                        "with --overwrite: continue if possible, else start over (for workflows)")
    p.add_argument("--json", metavar="PATH", help="also write the run summary as JSON to PATH")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # also accepted after the subcommand; SUPPRESS keeps the top-level value otherwise
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from backmap_plugin.api import backmap
    from backmap_plugin.io.legacy import write_json

    result = backmap(
        args.input,
        args.output,
        top=args.top,
        mapping=args.mapping,
        method=args.method,
        samples=args.samples,
        seed=args.seed,
        device=args.device,
        stride=args.stride,
        chunk=args.chunk,
        break_distance=args.break_distance,
        progress=not args.quiet,
        model=args.model,
        temperature=args.temperature,
        overwrite=args.overwrite,
        resume=args.resume,
    )
    if args.json:
        write_json(args.json, result.to_dict())
    for line in result.report:
        print(f"note: {line}", file=sys.stderr)
    print(result.summary())
    return 0


def handled_errors() -> tuple:
    """Exception types reported as one line (``backmap: error: ...``): bad
    input, bad values, files, and OpenMM errors (e.g. a platform that cannot
    create a context)."""
    import openmm

    from backmap_plugin.core.errors import BackmapInputError

    return (BackmapInputError, ValueError, OSError, openmm.OpenMMException)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``backmap`` command."""
    parser = argparse.ArgumentParser(prog="backmap", description="Backmap coarse-grained protein simulations to all-atom structures.")
    parser.add_argument("--version", action="version", version=f"backmap_plugin {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    add_openmm_parsers(sub)
    add_export_parser(sub)
    add_data_parser(sub)
    add_train_parser(sub)
    add_report_parser(sub)
    return parser


#: What Ctrl-C leaves behind, per command (``data`` and ``train`` keep finished work; others just stop).
_AFTER_INTERRUPT = {
    "run": "the finished frames are kept in a hidden .partial file next to the output; "
           "rerun the same command with --resume to continue",
    "data": "finished files and structures are kept; rerun the same command to continue",
    "train": "the last checkpoint is kept; rerun the same command with --resume to continue",
}


def main(argv=None) -> int:
    """Entry point of the ``backmap`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        return args.func(args)
    except Exception as exc:
        if not isinstance(exc, handled_errors()):
            raise
        if args.debug:
            traceback.print_exc()
        print(f"backmap: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        after = _AFTER_INTERRUPT.get(args.command)
        print("backmap: interrupted" + (f"; {after}" if after else ""), file=sys.stderr)
        return 130


