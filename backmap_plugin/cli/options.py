"""Options that several subcommands (and ``workflows/pipeline.py``) share, declared once.

Each ``add_*`` function adds one option (or one fixed group) to an
:class:`argparse.ArgumentParser`; its flag, type, default and help are
written here only. Messages of the Python API name the keyword of a flag
(``pass overwrite=True``); :func:`in_option_words` says them as the command
does (``pass --overwrite``). The module imports nothing heavy: building
every parser of the ``backmap`` command costs no numpy, torch or OpenMM.
"""

from __future__ import annotations

import argparse
import re

__all__ = [
    "add_backmap_options",
    "add_command",
    "add_debug",
    "add_device",
    "add_mapping",
    "add_minimiser",
    "add_output",
    "add_overwrite",
    "add_ph",
    "add_platform",
    "add_quiet",
    "add_solvent",
    "add_threads",
    "add_top",
    "in_option_words",
]

#: Solvent models of the amber14 systems (refine, validate, the pipeline;
#: ``backmap_plugin.openmm.systems.SOLVENTS``, not imported here: no OpenMM at parser build).
SOLVENTS = ("screened", "gbn2", "obc2", "vacuum")


def add_command(subparsers, name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """Add one subcommand whose help ends with its example lines, kept as written, and whose long options are taken
    only in full (``allow_abbrev=False``: ``--out`` is no ``--output``).

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``ArgumentParser.add_subparsers``.
    name, help, description : str
        The subcommand's name, its line in the parent's help and its description.
    epilog : str
        The ``example:`` block shown after the options (line breaks kept).

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser.
    """
    return subparsers.add_parser(name, help=help, description=description, epilog=epilog, allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def add_debug(parser: argparse.ArgumentParser, top_level: bool = False) -> None:
    """Add ``--debug``: the full traceback on errors.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    top_level : bool
        True for the top-level parser (``backmap --debug run ...``), whose
        default is False. A subcommand's flag (``backmap run ... --debug``)
        has no default, so that it keeps the top-level value when absent.
    """
    default = False if top_level else argparse.SUPPRESS
    parser.add_argument("--debug", action="store_true", default=default, help="show the full traceback on errors")


def add_quiet(parser: argparse.ArgumentParser, help: str = "no progress bar") -> None:
    """Add ``--quiet``: no progress output (``args.quiet``; callers pass ``progress=not args.quiet``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    help : str
        The help line.
    """
    parser.add_argument("--quiet", action="store_true", help=help)


def add_overwrite(parser: argparse.ArgumentParser, help: str) -> None:
    """Add ``--overwrite``: replace what an earlier run left at the output.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    help : str
        What is replaced, in the subcommand's words.
    """
    parser.add_argument("--overwrite", action="store_true", help=help)


#: The flags that messages of the Python API name by their keyword, ``NAME=True``.
_KEYWORD_FLAGS = re.compile(r"\b(overwrite|resume)=True")


def in_option_words(message: str) -> str:
    """A message of the Python API as the ``backmap`` command says it: each flag's keyword as its option.

    Parameters
    ----------
    message : str
        E.g. ``out.pdb: output file exists; pass overwrite=True to replace it``.

    Returns
    -------
    str
        E.g. ``out.pdb: output file exists; pass --overwrite to replace it``
        (``resume=True``: ``--resume``).
    """
    return _KEYWORD_FLAGS.sub(lambda found: f"--{found.group(1)}", message)


def add_output(parser: argparse.ArgumentParser, help: str, required: bool = True, metavar: str | None = None) -> None:
    """Add ``-o/--output`` (``args.output``): where the subcommand writes.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    help : str
        What the output is (file, folder, format).
    required : bool
        Whether the option must be given; an optional one defaults to None.
    metavar : str, optional
        The placeholder in the usage line (default: ``OUTPUT``).
    """
    parser.add_argument("-o", "--output", required=required, default=None, metavar=metavar, help=help)


def add_device(parser: argparse.ArgumentParser, override: bool = False) -> None:
    """Add ``--device``: the torch device (``auto``, ``cpu``, ``cuda``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    override : bool
        False: default ``auto``. True: default None, overriding a
        configuration's device when given (``backmap train``).
    """
    if override:
        parser.add_argument("--device", help="override the device (auto, cpu, cuda)")
    else:
        parser.add_argument("--device", default="auto", help="torch device: auto, cpu or cuda (default: auto)")


def positive_int(text: str) -> int:
    """An option's value that counts something (``--threads``, ``--workers``): a whole number, at least 1."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {count}")
    return count


def add_threads(parser: argparse.ArgumentParser, default: str = "every core") -> None:
    """Add ``--threads``: CPU threads of torch and of OpenMM's CPU platform (default: every core).

    :func:`backmap_plugin.cli.command.main` applies it
    (:func:`backmap_plugin.core.threads.use_threads`) before the subcommand runs.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    default : str
        What the help says is used without it.
    """
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help=f"CPU threads (torch and OpenMM's CPU platform; default: {default}). Fewer is faster "
                             "when other jobs share the cores, e.g. a running simulation")


def add_platform(parser: argparse.ArgumentParser) -> None:
    """Add ``--platform``: the OpenMM platform (default ``auto``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    """
    parser.add_argument("--platform", default="auto",
                        help="OpenMM platform: auto (CUDA if present, else CPU), CUDA, CPU, Reference, OpenCL")


def add_solvent(parser: argparse.ArgumentParser, default: str) -> None:
    """Add ``--solvent``: the solvent model used with amber14.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    default : str
        One of :data:`SOLVENTS`.
    """
    parser.add_argument("--solvent", default=default, choices=list(SOLVENTS),
                        help="solvent model with amber14: screened (Coulomb divided by a dielectric of 4, fast), "
                             f"implicit solvent gbn2 or obc2, or vacuum (default: {default})")


def add_ph(parser: argparse.ArgumentParser) -> None:
    """Add ``--ph`` (``args.ph``): the pH at which hydrogens are added (default 7).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    """
    parser.add_argument("--ph", type=float, default=7.0, help="pH for the hydrogens added (default: 7.0)")


def add_mapping(parser: argparse.ArgumentParser, auto: bool = True) -> None:
    """Add ``--mapping``: where a residue's beads sit: ``auto`` (default), ``ca``, ``com`` or ``martini3``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    auto : bool
        Offer ``auto`` (decided from the input) as the default; otherwise
        (making training data from all-atom files) the default is ``ca``.
    """
    if auto:
        parser.add_argument("--mapping", default="auto", choices=["auto", "ca", "com", "martini3"],
                            help="where the beads sit: auto (default: decided from bead names and distances, "
                                 "and said), ca (C-alpha atoms), com (residue centres of mass) or martini3 "
                                 "(Martini 3 BB and SC beads)")
    else:
        parser.add_argument("--mapping", default="ca", choices=["ca", "com"],
                            help="where the beads sit (default: ca)")


def add_resume(parser: argparse.ArgumentParser) -> None:
    """Add ``--resume``: continue an interrupted run of the same output (:mod:`backmap_plugin.io.progress`).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    """
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run of the same command (same output and options); "
                             "with --overwrite: continue if possible, else start over (for workflows)")


def add_all_atom_input(parser: argparse.ArgumentParser) -> None:
    """Add ``input`` and ``--top``: an all-atom structure or trajectory (``refine``, ``validate``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    """
    parser.add_argument("input", help="PDB (.pdb or .ent) or mmCIF (optionally .gz) or .h5, one or more frames; "
                                      "or a trajectory (.xtc, .dcd, .trr, .nc) with --top")
    parser.add_argument("--top", help="topology of a trajectory input: PDB or mmCIF (its first model) or .h5, the "
                                      "same atoms in the same order (e.g. the first frame written as .pdb)")


def add_top(parser: argparse.ArgumentParser) -> None:
    """Add ``--top``: the topology of a coordinates-only trajectory.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    """
    parser.add_argument(
        "--top", help="topology file for DCD/XTC/TRR/NetCDF input: PDB, mmCIF, GRO, H5 or TPR (needs MDAnalysis)")


def add_backmap_options(parser: argparse.ArgumentParser, model: bool = False) -> None:
    """Add the options of :func:`backmap_plugin.api.backmap` shared by ``backmap run`` and the pipeline.

    In this order: ``--mapping``, ``--method``, (``--model``),
    ``--temperature``, ``--samples``, ``--seed``, ``--device``, ``--stride``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    model : bool, optional
        Also ``--model`` (a trained model file), as ``backmap run`` takes it.
    """
    add_mapping(parser)
    parser.add_argument("--method", default=None, choices=["ideal", "model"],
                        help="builder (default: model, the trained model shipped for the mapping's beads; "
                             "ideal: geometric build fitted to the beads)")
    if model:
        parser.add_argument("--model", help="trained model file for --method model (default: the shipped model)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="model sampling temperature; 0 = the deterministic structure of least expected error "
                             "(default: 0 for one sample, 1 for several)")
    parser.add_argument("--samples", type=int, default=1, help="structures per input frame, frame-major (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_device(parser)
    parser.add_argument("--stride", type=int, default=1, help="use every K-th frame (default: 1)")


def add_minimiser(parser: argparse.ArgumentParser) -> None:
    """Add the refinement's minimiser options: ``--restraint-k``, ``--steps``, ``--tolerance``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    """
    parser.add_argument("--restraint-k", type=float, default=1000.0,
                        help="heavy-atom restraint constant in kJ/mol/nm^2 (default: 1000)")
    parser.add_argument("--steps", type=int, default=5000,
                        help="maximum minimiser iterations per stage, 0 for no limit (default: 5000)")
    parser.add_argument("--tolerance", type=float, default=20.0,
                        help="minimiser tolerance, RMS force in kJ/mol/nm (default: 20)")
