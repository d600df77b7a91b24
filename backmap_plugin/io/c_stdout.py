"""Keeping stdout clean of the C library's output: mdtraj's compiled DCD plugin
prints ``dcdplugin) ...`` lines to the C stdout. Standard library only."""

from __future__ import annotations

import contextlib
import os
import sys


def _flush_c_stdio() -> None:
    """Flush the C library's stdio buffers (printf output of compiled readers)."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def c_stdout_to_stderr():
    """Send file descriptor 1 to stderr for the duration of the block.

    mdtraj's compiled DCD plugin prints ``dcdplugin) ...`` lines to the C
    stdout whenever it opens a file; they go to stderr so that stdout stays
    for the program's own output.

    Yields
    ------
    None
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1
        yield
        return
    _flush_c_stdio()
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        _flush_c_stdio()
        os.dup2(saved, 1)
        os.close(saved)
