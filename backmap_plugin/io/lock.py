"""One writer per output: a lock held while a run or a reporter writes a file.

Two runs to the same output (a cluster job submitted twice, a workflow
retried while the first attempt still runs), or two reporters given the
same file, replace or interleave each other's frames. The lock is an
advisory ``flock`` on a hidden ``.<output name>.lock`` file next to the
output: the system releases it when its process ends, however it ends, so
a killed run never leaves a lock that blocks the next one. Where ``fcntl``
is missing (Windows), or the file system has no advisory locks, there is
no lock.
"""

from __future__ import annotations

import contextlib
import os
import socket

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.io.atomic import hidden_path


def lock_path(output) -> str:
    """Path of the lock file of ``output`` (hidden file in its directory, symbolic links followed:
    :func:`~backmap_plugin.io.atomic.hidden_path`)."""
    return hidden_path(output, ".lock")


class OutputLock:
    """The lock of one output file, taken when made; :meth:`release` (or leaving the ``with`` block) gives it
    back and removes the lock file.

    Parameters
    ----------
    output : str or os.PathLike
        The output file.
    who : str, optional
        What writes it, for the message another writer gets.

    Raises
    ------
    BackmapInputError
        Another writer (process, or open lock in this one) holds the lock;
        the message says which, as it wrote itself into the file.
    """

    def __init__(self, output, who: str = "backmap run"):
        self._fd = None
        self._path = lock_path(output)
        try:
            import fcntl
        except ImportError:  # no advisory locks here
            return
        while True:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                mine = f"pid {os.getpid()} on {socket.gethostname()}" in holder
                raise BackmapInputError(
                    f"{os.fspath(output)}: another writer is writing this output ({holder}); "
                    + ("close the earlier one first" if mine else "wait for it to end, or stop it")) from None
            except OSError:  # a file system without advisory locks (some network ones): no lock
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.remove(self._path)
                return
            try:  # the holder before may have removed the file between our open and lock: lock the one in place
                same = os.path.samestat(os.fstat(fd), os.stat(self._path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{who}, pid {os.getpid()} on {socket.gethostname()}".encode())
        self._fd = fd

    def release(self) -> None:
        """Give the lock back (again: nothing)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.remove(self._path)
        os.close(fd)

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
