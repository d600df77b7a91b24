"""The one way this package writes a file atomically.

A file is written to a temporary file in the target's own directory
(:func:`temporary_path`), flushed and ``fsync``-ed, and then moved onto its
name with ``os.replace`` (:func:`commit`), so a reader sees either the old
file or the complete new one, never a half-written one, and a crash leaves
the old file in place. If writing fails, the temporary file is removed and
the target is left as it was.

* :func:`atomic_write`: a context manager that yields the open temporary
  file (text or binary) and commits it when the block ends normally;
* :func:`atomic_path`: the same for writers that open the file themselves
  (``torch.save``, ``numpy.save`` by name ...): it yields the temporary path;
* :func:`write_text` and :func:`write_json`: one call on top of them;
* :func:`commit`: the final step alone, for a writer that keeps its
  temporary file on failure to continue it later (``TrajectoryWriter``).

Standard library only: importing this module loads no numerical library.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import IO, Iterator, Optional


def temporary_path(path) -> str:
    """The temporary file :func:`atomic_write` uses for ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.

    Returns
    -------
    str
        ``.<name>.<pid>.partial`` in the directory of ``path``: hidden, in
        the same file system (so ``os.replace`` is atomic), and one per
        process, so processes writing into one folder never share one.
    """
    path = os.path.abspath(os.fspath(path))
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.partial")


def _fsync(path: str) -> None:
    """Flush the operating system's buffers of a closed file to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    """Remove a file if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def commit(temporary, path) -> None:
    """Move a complete, closed temporary file onto ``path``.

    The temporary file's data are synced to the disk (``fsync``) before
    ``os.replace`` renames it, so after a crash ``path`` holds either its
    old contents or the complete new ones.

    Parameters
    ----------
    temporary : str or os.PathLike
        The written file; it must be closed (or flushed) by its writer and
        lie in the same file system as ``path``.
    path : str or os.PathLike
        The name it gets.
    """
    temporary = os.fspath(temporary)
    _fsync(temporary)
    os.replace(temporary, os.fspath(path))


@contextlib.contextmanager
def atomic_path(path, temporary=None) -> Iterator[str]:
    """Context manager: a temporary path to write, moved onto ``path`` on success.

    For writers that open the file themselves. When the block ends
    normally the temporary file is committed (:func:`commit`); when it
    raises, the temporary file is removed, ``path`` is left untouched and
    the exception propagates.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its directory must exist.
    temporary : str or os.PathLike, optional
        Name of the temporary file, in the directory of ``path``; default
        :func:`temporary_path`. (A writer may need its own: ``torch.save``
        names its archive after the file.)

    Yields
    ------
    str
        The temporary path to write.
    """
    path = os.fspath(path)
    temporary = temporary_path(path) if temporary is None else os.fspath(temporary)
    try:
        yield temporary
        commit(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", *, encoding: Optional[str] = "utf-8",
                 newline: Optional[str] = None, temporary=None) -> Iterator[IO]:
    """Context manager: an open temporary file, moved onto ``path`` on success.

    The file is opened with ``open(temporary, mode, ...)``. When the block
    ends normally it is closed (flushed), ``fsync``-ed and moved onto
    ``path`` with ``os.replace`` (:func:`commit`); when the block raises, it is closed and
    removed, ``path`` is left untouched and the exception propagates.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its directory must exist.
    mode : {"w", "wb"}, optional
        Text or binary.
    encoding : str or None, optional
        Text encoding (ignored for ``"wb"``).
    newline : str or None, optional
        As for :func:`open` (``""`` for the :mod:`csv` module).
    temporary : str or os.PathLike, optional
        Name of the temporary file (see :func:`atomic_path`).

    Yields
    ------
    file object
        The open temporary file.

    Raises
    ------
    ValueError
        ``mode`` is not ``"w"`` or ``"wb"``.

    Examples
    --------
    >>> with atomic_write("table.csv", newline="") as handle:  # doctest: +SKIP
    ...     csv.writer(handle).writerows(rows)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    options = {} if mode == "wb" else {"encoding": encoding, "newline": newline}
    with atomic_path(path, temporary) as name:
        with open(name, mode, **options) as handle:
            yield handle


def write_text(path, text: str) -> None:
    """Write a UTF-8 text file atomically (:func:`atomic_write`).

    Parameters
    ----------
    path : str or os.PathLike
        File to write; its directory must exist.
    text : str
        The whole contents.
    """
    with atomic_write(path) as handle:
        handle.write(text)


def write_json(path, payload) -> None:
    """Write a JSON file atomically (:func:`write_text`); NaN is refused.

    The text is ``json.dumps(payload, indent=2)`` plus a newline.

    Parameters
    ----------
    path : str or os.PathLike
        File to write; its directory must exist.
    payload : JSON-serialisable object
        What to write.

    Raises
    ------
    ValueError
        ``payload`` holds NaN or infinity (nothing is written then).
    """
    write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
