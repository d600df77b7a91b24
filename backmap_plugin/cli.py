"""The ``backmap`` command: thin subcommands over the Python API."""

from __future__ import annotations

import argparse
import sys
import traceback

from . import __version__
from .errors import BackmapInputError

_RUN_EXAMPLE = """example:
  backmap run examples/trpcage_ca.pdb -o trpcage_aa.pdb
  backmap run traj_ca.dcd --top top_ca.pdb -o traj_aa.xtc --stride 10
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
    p.add_argument("--top", help="topology file for DCD/XTC/TRR/NetCDF input")
    p.add_argument("-o", "--output", required=True, help="output file: .pdb, .cif, .dcd, .xtc or .h5")
    p.add_argument("--mapping", default="ca", choices=["ca", "com"], help="where the bead sits (default: ca)")
    p.add_argument("--method", default="ideal", choices=["ideal"], help="builder (default: ideal)")
    p.add_argument("--samples", type=int, default=1, help="structures per input frame, frame-major (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--stride", type=int, default=1, help="use every K-th frame (default: 1)")
    p.add_argument("--chunk", type=int, default=1000, help="frames processed at a time (default: 1000)")
    p.add_argument(
        "--break-distance", type=float, default=4.5,
        help="bead distance in Angstrom that splits a chain into segments (default: 4.5)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from .api import backmap

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
    )
    for line in result.report:
        print(f"note: {line}", file=sys.stderr)
    print(result.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``backmap`` command."""
    parser = argparse.ArgumentParser(prog="backmap", description="Backmap coarse-grained protein simulations to all-atom structures.")
    parser.add_argument("--version", action="version", version=f"backmap_plugin {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``backmap`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (BackmapInputError, ValueError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"backmap: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("backmap: interrupted; finished output kept as a .partial file", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
