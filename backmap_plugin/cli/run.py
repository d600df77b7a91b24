"""``backmap run``: a thin layer over :func:`backmap_plugin.api.backmap`."""

from __future__ import annotations

import json
import os
import sys
import warnings

from backmap_plugin.cli import options

__all__ = ["add_parser", "run"]

_EXAMPLE = """example:
  backmap run examples/trpcage_ca.pdb -o trpcage_aa.pdb
  backmap run traj_ca.dcd --top top_ca.pdb -o traj_aa.xtc --stride 10 --json run.json
  backmap run traj_ca.xtc --top conf_ca.gro -o traj_aa.xtc --resume     # after Ctrl-C or a kill
"""


def add_parser(subparsers) -> None:
    """Add the ``run`` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``ArgumentParser.add_subparsers``. The subcommand sets ``func``
        (:func:`run`): call ``args.func(args)`` to run it and get the exit status.
    """
    p = options.add_command(
        subparsers, "run",
        help="backmap a CG structure or trajectory to all heavy atoms",
        description="Backmap a coarse-grained structure or trajectory (C-alpha, residue centre-of-mass or Martini 3 "
                    "beads) to all heavy atoms.",
        epilog=_EXAMPLE,
    )
    p.add_argument("input", help="CG input: PDB (.pdb or .ent), mmCIF, GRO, DCD, XTC, TRR, NetCDF, HDF5")
    options.add_top(p)
    options.add_output(p, "output file: .pdb, .cif, .dcd, .xtc or .h5")
    options.add_backmap_options(p, model=True)
    options.add_threads(p)
    p.add_argument("--chunk", type=int, default=1000, help="frames processed at a time (default: 1000)")
    p.add_argument(
        "--break-distance", type=float, default=None,
        help="bead distance in Angstrom that splits a chain into segments (default: 4.5 for ca, 5 between BB beads "
             "for martini3, 10 for com, and for com where residue numbers skip, the farthest bonded residues' "
             "centres of mass can be); giving it also builds chains that are mostly breaks",
    )
    p.add_argument("--no-disulfides", action="store_true",
                   help="leave cysteines free; by default cysteine pairs whose SG atoms can meet are bonded (from "
                        "Martini 3 beads: whose SC1 beads lie within 3.5 A), with a note naming them")
    options.add_overwrite(p, "replace an existing output (or start an unfinished run over)")
    options.add_resume(p)
    p.add_argument("--json", metavar="PATH",
                   help="also write the run summary as JSON to PATH ('-': standard output, and the summary line to "
                        "stderr); an existing file is replaced only with --overwrite (or when resuming)")
    options.add_quiet(p)
    options.add_debug(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Backmap ``args.input`` to ``args.output``; print the notes (stderr) and the summary line (stdout).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by the parser of :func:`add_parser`.

    Returns
    -------
    int
        The exit status, 0.

    Raises
    ------
    BackmapInputError
        The input is cut short (:class:`~backmap_plugin.api.CutShortWarning`):
        raised once the output, the run summary and the notes are written,
        naming the file and its last whole frame (the command's status 2).
    """
    from backmap_plugin.api import CutShortWarning, backmap
    from backmap_plugin.core.bead_fit import describe
    from backmap_plugin.core.errors import BackmapInputError
    from backmap_plugin.io.atomic import write_json

    if args.json and args.json != "-":
        _check_json_path(args)  # before the run, not after it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CutShortWarning)  # (said below, as the command's error)
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
            disulfides=not args.no_disulfides,
        )
    if args.json == "-":
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    elif args.json:
        write_json(args.json, result.to_dict())
    if result.mapping_evidence:
        print(f"mapping: {result.mapping_evidence}", file=sys.stderr)
    print(f"method: {method_line(result.method, result.model, args.model)}", file=sys.stderr)
    for line in result.report:
        print(f"note: {options.in_option_words(line)}", file=sys.stderr)
    if result.bead_rmsd:
        print(f"beads: {describe(result.bead_rmsd)}", file=sys.stderr)
    print(result.summary(), file=sys.stderr if args.json == "-" else sys.stdout)
    if result.cut_short:  # every whole frame is written; the run is not the whole trajectory
        raise BackmapInputError(result.cut_short)
    return 0


def _check_json_path(args) -> None:
    """Refuse a ``--json`` path that cannot be written, that is a file the run reads or writes, or that exists
    without ``--overwrite`` (or a run to resume, which was to replace it), as ``refine`` its report."""
    from backmap_plugin.core.errors import BackmapInputError
    from backmap_plugin.io.atomic import is_stream
    from backmap_plugin.io.paths import check_file_path
    from backmap_plugin.io.progress import record_path

    check_file_path(args.json, "the run summary", reads={"input": args.input, "--top": args.top, "output": args.output})
    resuming = args.resume and os.path.exists(record_path(args.output))
    if os.path.exists(args.json) and not is_stream(args.json) and not (args.overwrite or resuming):
        raise BackmapInputError(f"{args.json}: the run summary file exists; pass --overwrite to replace it, or "
                                "another path (--json)")


def method_line(method: str, model_file: str | None, model_option: str | None) -> str:
    """What built the structures, for the terminal: the method, and for ``model`` the weights file it used."""
    if method != "model":
        return method
    return f"model ({os.path.basename(str(model_file))}{'' if model_option else ', shipped'})"
