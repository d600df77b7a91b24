"""The ``backmap`` command: the top-level parser, error and interrupt handling, :func:`main`.

Each subcommand lives in its own module (``cli/run.py``, ``cli/refine.py``,
...) with ``add_parser(subparsers)`` and a run function; options shared by
several are declared once in :mod:`backmap_plugin.cli.options`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback

from backmap_plugin import __version__
from backmap_plugin.cli import data, export, options, refine, report, run, train, validate
from backmap_plugin.core.allocator import collect_garbage_less_often, keep_freed_memory
from backmap_plugin.core.threads import use_threads
from backmap_plugin.core.torch_import import defer_torch_compiler_imports

__all__ = ["build_parser", "call", "handled_errors", "main"]

#: The subcommand modules, in the order of ``backmap --help``.
SUBCOMMANDS = (run, refine, validate, export, data, train, report)

#: What Ctrl-C leaves behind, per command (``data`` and ``train`` keep finished work; others just stop).
_AFTER_INTERRUPT = {
    "run": "the finished frames are kept in a hidden .partial file next to the output; "
           "rerun the same command with --resume to continue",
    "data": "finished files and structures are kept; rerun the same command to continue",
    "train": "a checkpoint of the steps done is kept; rerun the same command with --resume to continue",
    "refine": "the refined frames so far are in a hidden .partial file next to the output, and their report in "
              "one next to the JSON report; rerun the same command with --resume to continue",
}


def handled_errors() -> tuple:
    """Exception types reported as one line (``backmap: error: ...``).

    Bad input, bad values, files, and OpenMM errors (e.g. a platform that
    cannot create a context). OpenMM is imported here, when an error is
    being reported, not when the command starts.

    Returns
    -------
    tuple of type
        For ``except`` and ``isinstance``.
    """
    import openmm

    from backmap_plugin.core.errors import BackmapInputError

    return (BackmapInputError, ValueError, OSError, openmm.OpenMMException)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``backmap`` command.

    Returns
    -------
    argparse.ArgumentParser
        Parsing sets ``func`` (the subcommand's run function) and
        ``command`` (its name) on the namespace. It and every subcommand's
        parser (:func:`~backmap_plugin.cli.options.add_command`) take long
        options only in full (``allow_abbrev=False``): ``--out`` is not
        ``--output``, so an option added later cannot change what an old
        command line means.
    """
    parser = argparse.ArgumentParser(prog="backmap", allow_abbrev=False,
                                     description="Backmap coarse-grained protein simulations to all-atom structures.")
    parser.add_argument("--version", action="version", version=f"backmap_plugin {__version__}")
    options.add_debug(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def call(func, args, prog: str = "backmap") -> int:
    """Run ``func(args)`` as the ``backmap`` command does: one line for a handled error, for Ctrl-C.

    Parameters
    ----------
    func : callable
        Takes ``args`` and returns the exit status.
    args : argparse.Namespace
        ``args.debug`` (if set) adds the traceback to a handled error;
        ``args.command`` (if set) chooses what Ctrl-C says is kept.
    prog : str
        The name the messages start with.

    Returns
    -------
    int
        ``func``'s status; 2 after a :func:`handled_errors` exception
        (``PROG: error: ...`` on stderr, the flags of the Python API's
        message as options:
        :func:`~backmap_plugin.cli.options.in_option_words`), 130 after
        Ctrl-C (``PROG: interrupted``), 143 after SIGTERM (``PROG:
        terminated``). Other exceptions propagate.
    """
    try:
        return func(args)
    except Exception as exc:
        if not isinstance(exc, handled_errors()):
            raise
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"{prog}: error: {options.in_option_words(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        after = _AFTER_INTERRUPT.get(getattr(args, "command", None))
        if after and not _kept_anything(args):
            after = f"no {'step' if args.command == 'train' else 'frame'} was finished: nothing is kept"
        stopped = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{prog}: {stopped}" + (f"; {after}" if after else ""), file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def _kept_anything(args) -> bool:
    """Whether a stopped ``run`` or ``refine`` left its finished frames behind (a progress record, a partial
    report), a stopped ``train`` a checkpoint; other commands: as they say."""
    output = getattr(args, "output", None)
    if args.command not in ("run", "refine", "train") or not isinstance(output, str):
        return True
    from backmap_plugin.io.paths import partial_path
    from backmap_plugin.io.progress import record_path

    if args.command == "train":
        return os.path.exists(os.path.join(output, "checkpoint.pt"))
    if args.command == "run":
        return os.path.exists(record_path(output))
    return os.path.exists(partial_path(output))


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's time limit, ``kill``), raised where the command is so that it stops as after
    Ctrl-C: finished work kept, a line that says so, exit status 143."""


def _terminate(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_stops_like_ctrl_c():
    """SIGTERM raises :class:`Terminated` during the block (main thread only), then its handler is as before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    """Entry point of the ``backmap`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (argparse exits with 2 itself on a bad command line).
    """
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None) is not None:
        use_threads(args.threads)
    keep_freed_memory()
    collect_garbage_less_often()
    if args.command != "train":  # training's optimiser may need the compiler front end
        defer_torch_compiler_imports()
    with _sigterm_stops_like_ctrl_c():
        return call(args.func, args)


def console_main() -> None:
    """The installed ``backmap`` script and ``python -m backmap_plugin.cli``: :func:`main`, then exit at once.

    Once the command has finished (every output written and closed, stdout
    and stderr flushed), the process ends with ``os._exit``: tearing down
    torch's, e3nn's and OpenMM's modules at interpreter exit takes about
    0.5 s and does nothing a finished command needs. An exception that
    :func:`main` does not handle (a bug) leaves the usual way, with its
    traceback and a normal interpreter exit.
    """
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
