"""Opening files with mdtraj's compiled XTC, TRR and DCD code.

That code prints to the C library's stdout and stderr
(:func:`~backmap_plugin.io.c_stdout.c_stdout_to_stderr` moves it), and it
encodes file names in ASCII: a path with any other character (a folder
named ``Müller``) fails with a ``UnicodeEncodeError``. :func:`ascii_path`
gives such a file an ASCII name, a symbolic link in a temporary folder of
its own, for as long as the file is opened. Readers and writers of this
package open these formats through this module only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.io.c_stdout import c_stdout_to_stderr

#: Extensions whose mdtraj code encodes file names in ASCII.
COMPILED = (".xtc", ".trr", ".dcd")


@contextlib.contextmanager
def ascii_path(path, write: bool = False) -> Iterator[str]:
    """An ASCII path to the file ``path`` names, valid inside the block.

    ``path`` itself where it is ASCII or not a :data:`COMPILED` format.
    Otherwise a temporary folder holds a link to the file's folder, and the
    path goes through it, so the file is read, created or replaced in its
    own folder; where the file's own name is not ASCII, the link is to the
    file itself, which is enough to read it (mdtraj's writers replace a file
    by removing it first: they would replace the link). The folder is
    removed at the end of the block; files opened in it stay open.

    Parameters
    ----------
    path : str or os.PathLike
    write : bool
        The file is to be written.

    Yields
    ------
    str

    Raises
    ------
    BackmapInputError
        ``write`` of a file whose own name is not ASCII.
    """
    path = os.fspath(path)
    if path.isascii() or not path.lower().endswith(COMPILED):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="backmap-")
    try:
        directory, name = os.path.split(os.path.abspath(path))
        if name.isascii():
            os.symlink(directory, os.path.join(folder, "folder"))
            yield os.path.join(folder, "folder", name)
        elif write:
            raise BackmapInputError(f"{path}: mdtraj writes {os.path.splitext(name)[1].lower()} files under ASCII "
                                    "names only: name the file in ASCII (its folder may have any name)")
        else:
            alias = os.path.join(folder, "file" + os.path.splitext(name)[1].lower())
            os.symlink(os.path.abspath(path), alias)
            yield alias
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # (removes the links, not what they name)


@contextlib.contextmanager
def open_file(path, mode: str = "r", opener=None, **kwargs):
    """mdtraj's file object for ``path`` (``mdtraj.open``, or ``opener``: a class of ``mdtraj.formats``), its C
    output sent to stderr (:func:`~backmap_plugin.io.c_stdout.c_stdout_to_stderr`), through :func:`ascii_path`.

    Parameters
    ----------
    path : str or os.PathLike
    mode : {"r", "w"}
    opener : callable, optional
        ``opener(path, mode, **kwargs)`` gives the file object.
    **kwargs
        Passed on to the opener.

    Yields
    ------
    file object
    """
    import mdtraj as md

    with c_stdout_to_stderr(), ascii_path(path, mode != "r") as alias, \
            (opener or md.open)(alias, mode, **kwargs) as handle:
        yield handle


def iterload(path, **kwargs) -> Iterator:
    """``mdtraj.iterload`` of ``path`` through :func:`ascii_path` (the link lasts as long as the iteration).

    Parameters
    ----------
    path : str or os.PathLike
    **kwargs
        Passed on to ``mdtraj.iterload``.

    Yields
    ------
    mdtraj.Trajectory
    """
    import mdtraj as md

    with ascii_path(path) as alias:
        yield from md.iterload(alias, **kwargs)


def load_frame(path, index: int, **kwargs):
    """``mdtraj.load_frame`` of ``path`` through :func:`ascii_path`.

    Parameters
    ----------
    path : str or os.PathLike
    index : int
    **kwargs
        Passed on to ``mdtraj.load_frame``.

    Returns
    -------
    mdtraj.Trajectory
    """
    import mdtraj as md

    with ascii_path(path) as alias:
        return md.load_frame(alias, index, **kwargs)
