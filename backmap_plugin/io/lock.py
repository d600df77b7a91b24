"""One run per output: a lock held while :func:`backmap_plugin.api.backmap` writes a file.

Two runs to the same output (a cluster job submitted twice, a workflow
retried while the first attempt still runs) replace each other's partial
file and progress record. The lock is an advisory ``flock`` on a hidden
``.<output name>.lock`` file next to the output: the system releases it
when its process ends, however it ends, so a killed run never leaves a
lock that blocks the next one. Where ``fcntl`` is missing (Windows) there
is no lock.
"""

from __future__ import annotations

import contextlib
import os
import socket

from backmap_plugin.core.errors import BackmapInputError


def lock_path(output) -> str:
    """Path of the lock file of ``output`` (hidden file in its directory)."""
    output = os.path.abspath(os.fspath(output))
    return os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.lock")


@contextlib.contextmanager
def output_lock(output):
    """Hold the lock of ``output`` for the block; the lock file is removed after it.

    Parameters
    ----------
    output : str or os.PathLike
        The output file.

    Raises
    ------
    BackmapInputError
        Another process holds the lock (the message says which, as it wrote
        itself into the file).
    """
    try:
        import fcntl
    except ImportError:  # no advisory locks here
        yield
        return
    path = lock_path(output)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            raise BackmapInputError(f"{os.fspath(output)}: another backmap run is writing this output ({holder}); "
                                    "wait for it to end, or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.remove(path)
    finally:
        os.close(fd)
