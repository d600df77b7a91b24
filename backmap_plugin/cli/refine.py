"""``backmap refine``: a thin layer over :func:`backmap_plugin.openmm.refine.refine_structure`."""

from __future__ import annotations

import sys

from backmap_plugin.cli import options

__all__ = ["add_parser", "run"]

_EXAMPLE = """example:
  backmap run examples/trpcage_ca.pdb -o trpcage_aa.pdb
  backmap refine trpcage_aa.pdb -o trpcage_refined.pdb      # also writes trpcage_refined.pdb.json
  backmap refine traj_aa.pdb -o traj_refined.pdb --solvent gbn2 --tolerance 10   # implicit solvent, slower
  backmap refine traj_aa.xtc --top first_aa.pdb -o traj_refined.xtc      # a trajectory, frame by frame
  backmap refine traj_aa.xtc --top first_aa.pdb -o traj_refined.xtc --resume   # after Ctrl-C or a kill
"""


def add_parser(subparsers) -> None:
    """Add the ``refine`` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``ArgumentParser.add_subparsers``. The subcommand sets ``func``
        (:func:`run`): call ``args.func(args)`` to run it and get the exit status.
    """
    p = options.add_command(
        subparsers, "refine",
        help="add hydrogens and minimise a backmapped structure with OpenMM (amber14, restrained)",
        description=(
            "Complete a heavy-atom structure (missing atoms, disulfides, hydrogens at pH 7), remove clashes "
            "with a soft-core stage, then minimise with amber14 (electrostatics screened by a dielectric of 4, "
            "or an implicit solvent) under heavy-atom position restraints. Every frame of the input is refined, "
            "one at a time; a JSON report goes next to the output (OUTPUT.json: the output's whole name and .json)."
        ),
        epilog=_EXAMPLE,
    )
    options.add_all_atom_input(p)
    options.add_output(p, "refined structure: .pdb, .cif, .dcd, .xtc or .h5")
    options.add_minimiser(p)
    options.add_platform(p)
    options.add_threads(p)
    options.add_solvent(p, default="screened")
    options.add_ph(p)
    p.add_argument("--no-soft-core", action="store_true", help="skip the soft-core clash-removal stage")
    p.add_argument("--complete-every-frame", action="store_true",
                   help="run PDBFixer and add hydrogens on every model (default: on the first model only; later "
                        "models get its hydrogens placed by their own heavy atoms)")
    p.add_argument("--report", default=None,
                   help="JSON report path (default: OUTPUT.json, e.g. refined.pdb.json: refining to refined.pdb and "
                        "refined.xtc writes two reports)")
    options.add_overwrite(p, "replace an existing output (or start an unfinished run over)")
    options.add_resume(p)
    options.add_quiet(p)
    options.add_debug(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Refine ``args.input`` into ``args.output``; warn (stderr) about frames that did not converge.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by the parser of :func:`add_parser`.

    Returns
    -------
    int
        The exit status, 0 (frames that did not converge are written anyway).

    Raises
    ------
    BackmapInputError
        The input is cut short (:class:`~backmap_plugin.core.errors.CutShortWarning`):
        raised once the output, its report and the notes are written (the
        command's status 2).
    """
    import warnings

    from backmap_plugin.core.errors import BackmapInputError, CutShortWarning
    from backmap_plugin.io.paths import match_extension
    from backmap_plugin.openmm.refine import BOND_STRAIN_LIMIT, refine_structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CutShortWarning)  # (said below, as the command's error)
        result = refine_structure(
            args.input,
            args.output,
            restraintK=args.restraint_k,
            maxIterations=args.steps,
            tolerance=args.tolerance,
            platform=args.platform,
            solvent=args.solvent,
            pH=args.ph,
            softCore=not args.no_soft_core,
            report=args.report,
            progress=not args.quiet,
            template=not args.complete_every_frame,
            overwrite=args.overwrite,
            top=args.top,
            resume=args.resume,
        )
    for frame in result.frames:
        if not frame["converged"]:
            reasons = []
            if not frame["energy_after_finite"]:
                reasons.append("energy not finite")
            if frame["clashes_after"]:
                reasons.append(f"{frame['clashes_after']} heavy-atom clash(es) left")
            if frame["hit_iteration_limit"]:
                reasons.append("iteration limit reached")
            strain = frame["max_bond_strain_angstrom"]
            if strain is not None and strain > 10.0 * BOND_STRAIN_LIMIT:
                reasons.append(f"a bond {strain:.2f} A off its length")
            if frame["chirality_inverted"]:
                reasons.append(f"chirality inverted at {', '.join(frame['chirality_inverted'])}")
            print(f"warning: frame {frame['frame']} did not converge ({', '.join(reasons)}); written anyway",
                  file=sys.stderr)
    if match_extension(args.output, (".xtc", ".dcd")):  # coordinates only, and refine adds atoms
        print("note: the refined frames have hydrogens and the added atoms; an .xtc / .dcd holds no topology: "
              "refine the first model to .pdb for it (the same atoms in the same order), or write .pdb / .cif / .h5",
              file=sys.stderr)
    added = max(frame["added_heavy_atoms"] for frame in result.frames)
    if added:  # as `backmap export` says; a C-alpha trace given here is completed by PDBFixer, not by a model
        print(f"note: {added} missing heavy atom(s) added (PDBFixer; `backmap run` builds a CG input's atoms)",
              file=sys.stderr)
    for note in result.notes:
        print(f"note: {options.in_option_words(note)}", file=sys.stderr)
    print(result.summary())
    if result.cut_short:  # every whole frame is refined and written; the run is not the whole trajectory
        raise BackmapInputError(result.cut_short)
    return 0

