"""Keeping stdout clean of the C library's output: mdtraj's compiled DCD plugin
prints ``dcdplugin) ...`` lines to the C stdout, its XTC / TRR readers bare
error codes to the C stderr. Standard library only."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile


def _flush_c_stdio() -> None:
    """Flush the C library's stdio buffers (printf output of compiled readers)."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


#: The XTC / TRR readers' bare error codes (``(xdrfile error) Undocumented error 3``), printed with no line end
#: before the exception that says what failed: left out.
_XDRFILE_CODE = re.compile(r"\(xdrfile error\) Undocumented error -?\d+")
#: What the DCD plugin prints on every open (the file's kind) and on a short or damaged file, which the reader's
#: own notes and errors say (``dcd_frames_missing``, ``FrameSource``): left out.
_DCD_CHATTER = re.compile(
    r"dcdplugin\) (detected standard 32-bit DCD file of \w+ endianness|CHARMM format DCD file \(also NAMD 2\.1 and "
    r"later\)|Warning: DCD header claims \d+ frames, but |file size \(\d+\) indicates there are actually |"
    r"read_dcdstep: (corruption or unrecognized file structure|error during read))\s*"
    r"|\d+ frames of size \(\d+\)"
)


@contextlib.contextmanager
def c_stdout_to_stderr():
    """Send what compiled readers print during the block to stderr, as whole lines, after it.

    mdtraj's compiled DCD plugin prints ``dcdplugin) ...`` lines to the C
    stdout whenever it opens a file, and its XTC / TRR readers print bare
    error codes without a line end to the C stderr. Both are collected in a
    temporary file and written to stderr when the block ends, as whole
    lines and without the bare error codes, so that stdout stays for the
    program's own output and nothing runs into the next line. The DCD
    plugin's lines that say what the reader's own notes and errors say are
    left out (:data:`_DCD_CHATTER`).

    Yields
    ------
    None
    """
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:  # no file descriptor 1 or 2
        yield
        return
    _flush_c_stdio()
    with tempfile.TemporaryFile() as caught:
        try:  # (a Ctrl-C right after the redirection must find the finally that undoes it)
            os.dup2(caught.fileno(), 1)
            os.dup2(caught.fileno(), 2)
            yield
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
                _flush_c_stdio()
            finally:  # restored even when Ctrl-C comes while flushing: the program's messages must get out
                for fd, old in zip((1, 2), saved):
                    os.dup2(old, fd)
                    os.close(old)
            caught.seek(0)
            text = _XDRFILE_CODE.sub("", caught.read().decode(errors="replace"))
            text = "".join(line for line in text.splitlines(keepends=True)
                           if not _DCD_CHATTER.fullmatch(line.rstrip("\n")))
            if text.strip():
                sys.stderr.write(text if text.endswith("\n") else text + "\n")
                sys.stderr.flush()
