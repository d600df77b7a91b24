"""The one way this package writes a file atomically.

A file is written to a temporary file in the target's own directory
(:func:`temporary_path`), flushed and ``fsync``-ed, and then moved onto its
name with ``os.replace`` (:func:`commit`), so a reader sees either the old
file or the complete new one, never a half-written one, and a crash leaves
the old file in place. If writing fails, the temporary file is removed and
the target is left as it was.

A symbolic link is followed: the file it names is replaced (a dangling
link: created) and the link is kept (:func:`target_path`). A target that is
there and is not a regular file (a character device such as a terminal or
``/dev/null``, a FIFO) is written in place: never renamed over
(:func:`is_stream`).

* :func:`atomic_write`: a context manager that yields the open temporary
  file (text or binary) and commits it when the block ends normally;
* :func:`atomic_path`: the same for writers that open the file themselves
  (``torch.save``, ``numpy.save`` by name ...): it yields the temporary path;
* :func:`write_text` and :func:`write_json`: one call on top of them;
* :func:`commit`: the final step alone, for a writer that keeps its
  temporary file on failure to continue it later (``TrajectoryWriter``);
* :func:`remove_stale_temporaries`: the temporary files that a process
  killed while writing (``SIGKILL``: no cleanup runs) left behind.

Standard library only: importing this module loads no numerical library.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from typing import IO, Iterator, Optional


def target_path(path) -> str:
    """The file a write of ``path`` replaces: symbolic links followed (a dangling link: the file it names).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    str
        An absolute path.
    """
    return os.path.realpath(os.fspath(path))


def is_stream(path) -> bool:
    """Whether ``path`` is there and is neither a regular file nor a directory (a character device, a FIFO, a socket;
    links followed by the system, so ``/dev/stdout`` is its stream): written in place, never replaced.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    bool
    """
    try:
        mode = os.stat(os.fspath(path)).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _name_max(directory: str) -> int:
    """The longest file name (bytes) ``directory``'s file system allows; 255 where it does not say."""
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def hidden_path(path, suffix: str) -> str:
    """A hidden file beside the file ``path`` names (:func:`target_path`): ``.<name><suffix>``.

    Where that name is longer than the file system allows (a file name of
    about 240 characters or more) or is not ASCII (mdtraj writes XTC, TRR
    and DCD files under ASCII names only,
    :func:`~backmap_plugin.io.mdtraj_files.mdtraj_path`), ``<name>`` is
    replaced by the first 32 hex digits of its SHA-256: the same path for
    the same ``path``, so a later run finds the file again.

    Parameters
    ----------
    path : str or os.PathLike
        The file it belongs to.
    suffix : str
        What the hidden file is (``.partial.pdb``, ``.lock`` ...).

    Returns
    -------
    str
    """
    directory, name = os.path.split(target_path(path))
    hidden = f".{name}{suffix}"
    if not hidden.isascii() or len(os.fsencode(hidden)) > _name_max(directory):
        hidden = f".{_hashed(name)}{suffix}"
    return os.path.join(directory, hidden)


def _hashed(name: str) -> str:
    """What :func:`hidden_path` puts for a file name too long or not ASCII: the first 32 hex digits of its SHA-256."""
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:32]


def temporary_path(path) -> str:
    """The temporary file :func:`atomic_write` uses for ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.

    Returns
    -------
    str
        ``.<name>.<pid>.partial`` beside the file ``path`` names
        (:func:`hidden_path`): hidden, in the same file system (so
        ``os.replace`` is atomic), and one per process, so processes writing
        into one folder never share one.
    """
    return hidden_path(path, f".{os.getpid()}.partial")


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (another user's too); True where that cannot be told (Windows,
    where ``os.kill`` would end it)."""
    if os.name == "nt" or pid <= 0 or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (PermissionError: another user's process)
        return True
    return True


def remove_stale_temporaries(path) -> list:
    """Remove the temporary files (:func:`temporary_path`) of ``path`` whose process no longer runs.

    A process killed while it wrote ``path`` atomically (``SIGKILL``, the
    machine's out-of-memory killer: no cleanup runs) leaves its
    ``.<name>.<pid>.partial`` behind, empty or half written; the file it was
    to replace is as it was. A temporary file whose process runs (a write
    in progress) is never touched. Call it where no process of another
    machine writes ``path`` (under the lock of the output it belongs to:
    :class:`~backmap_plugin.io.lock.OutputLock`): the process ids are this
    machine's.

    Parameters
    ----------
    path : str or os.PathLike
        The file whose temporary files are looked for (links followed, as
        :func:`temporary_path` names them).

    Returns
    -------
    list of str
        The files removed.
    """
    directory, name = os.path.split(target_path(path))
    prefixes = {f".{name}.", f".{_hashed(name)}."}  # (the name hidden_path gives depends on its length)
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for entry in entries:
        pid = next((entry[len(p):-len(".partial")] for p in prefixes if entry.startswith(p)), "")
        if entry.endswith(".partial") and pid.isdigit() and not _running(int(pid)):
            _remove(os.path.join(directory, entry))
            removed.append(os.path.join(directory, entry))
    return removed


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
    old contents or the complete new ones. A symbolic link ``path`` is kept:
    the file it names is replaced (:func:`target_path`).

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
    os.replace(temporary, target_path(path))


@contextlib.contextmanager
def atomic_path(path, temporary=None) -> Iterator[str]:
    """Context manager: a temporary path to write, moved onto ``path`` on success.

    For writers that open the file themselves. When the block ends
    normally the temporary file is committed (:func:`commit`); when it
    raises, the temporary file is removed, ``path`` is left untouched and
    the exception propagates. A ``path`` that is a stream (:func:`is_stream`:
    ``/dev/stdout``, a FIFO) is yielded itself, to be written in place.

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
    if is_stream(path):
        yield path
        return
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
