"""Opening files with mdtraj: under names it reads, and with its compiled XTC, TRR and DCD code's output on stderr.

mdtraj picks a file's format by its exact, lower-case extension
(``PROTEIN.PDB``, ``TRAJ.XTC`` are unknown formats to it), and its compiled
XTC, TRR and DCD code prints to the C library's stdout and stderr
(:func:`~backmap_plugin.io.c_stdout.c_stdout_to_stderr` moves it) and
encodes file names in ASCII: a path with any other character (a folder
named ``Müller``) fails with a ``UnicodeEncodeError``. :func:`mdtraj_path`
gives such a file a name mdtraj reads, a symbolic link in a temporary folder
of its own, for as long as the file is opened. Readers and writers of this
package open files with mdtraj through this module only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.io.c_stdout import c_stdout_to_stderr
from backmap_plugin.io.paths import SUPPORTED_INPUT, match_extension

#: Extensions whose mdtraj code encodes file names in ASCII.
COMPILED = (".xtc", ".trr", ".dcd")
#: Extensions whose frames carry their step numbers (:func:`iterload_with_steps`).
STEPPED = (".xtc", ".trr")


@contextlib.contextmanager
def mdtraj_path(path, write: bool = False) -> Iterator[str]:
    """A path to the file ``path`` names that mdtraj opens, valid inside the block.

    ``path`` itself where its extension (one of
    :data:`~backmap_plugin.io.paths.SUPPORTED_INPUT`, matched by
    :func:`~backmap_plugin.io.paths.match_extension`) is written in lower
    case and it is ASCII or not a :data:`COMPILED` format. Otherwise a
    temporary folder holds a link, and the path goes through it: to the
    file's folder, so the file is read, created or replaced in its own
    folder, where only the folder's name is not ASCII; to the file itself,
    under its own name with the extension in lower case (``file<ext>``
    where the name is not ASCII), where its own name is not ASCII or its
    extension not lower case, which is enough to read it (mdtraj's writers
    replace a file by removing it first: they would replace the link). A file to be written keeps its extension: the
    writers of this package name their format (a class of
    ``mdtraj.formats``). The folder is removed at the end of the block;
    files opened in it stay open.

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
        ``write`` of a :data:`COMPILED` file whose own name is not ASCII.
    """
    path = os.fspath(path)
    ext = match_extension(path, SUPPORTED_INPUT)
    renamed = not write and ext is not None and not path.endswith(ext)  # (mdtraj: PROTEIN.PDB is no .pdb)
    if not renamed and (path.isascii() or ext not in COMPILED):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="backmap-")
    try:
        directory, name = os.path.split(os.path.abspath(path))
        if name.isascii() and not renamed:
            os.symlink(directory, os.path.join(folder, "folder"))
            yield os.path.join(folder, "folder", name)
        elif write:
            raise BackmapInputError(f"{path}: mdtraj writes {ext} files under ASCII names only: name the file in "
                                    "ASCII (its folder may have any name)")
        else:
            alias = os.path.join(folder, (name[: -len(ext)] if name.isascii() else "file") + ext)
            os.symlink(os.path.abspath(path), alias)
            yield alias
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # (removes the links, not what they name)


@contextlib.contextmanager
def open_file(path, mode: str = "r", opener=None, **kwargs):
    """mdtraj's file object for ``path`` (``mdtraj.open``, or ``opener``: a class of ``mdtraj.formats``), its C
    output sent to stderr (:func:`~backmap_plugin.io.c_stdout.c_stdout_to_stderr`), through :func:`mdtraj_path`.

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

    with c_stdout_to_stderr(), mdtraj_path(path, mode != "r") as alias, \
            (opener or md.open)(alias, mode, **kwargs) as handle:
        yield handle


def iterload(path, **kwargs) -> Iterator:
    """``mdtraj.iterload`` of ``path`` through :func:`mdtraj_path` (the link lasts as long as the iteration).

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

    with mdtraj_path(path) as alias:
        yield from md.iterload(alias, **kwargs)


def iterload_with_steps(path, chunk: int, stride: int, top) -> Iterator[tuple]:
    """``(trajectory, steps)`` of an XTC or TRR file (:data:`STEPPED`), ``chunk`` frames at a time: what
    :func:`iterload` gives, and the step numbers of its frames, which ``mdtraj.iterload`` drops.

    Parameters
    ----------
    path : str or os.PathLike
    chunk : int
        Frames per trajectory.
    stride : int
        Read every ``stride``-th frame.
    top : mdtraj.Topology
        The frames' topology.

    Yields
    ------
    trajectory : mdtraj.Trajectory
        Coordinates (nm), times (ps) and boxes, as ``mdtraj.iterload`` reads them.
    steps : numpy.ndarray
        ``(n_frames,)`` int64 step numbers.
    """
    import mdtraj as md
    import numpy as np

    with mdtraj_path(path) as alias, md.open(alias) as handle:
        while True:
            xyz, time, step, box = handle.read(n_frames=chunk, stride=stride)[:4]  # (TRR: lambda after them)
            if len(xyz) == 0:
                return
            traj = md.Trajectory(xyz, top, time=time)
            traj.unitcell_vectors = box
            yield traj, np.asarray(step, dtype=np.int64)


def load_frame(path, index: int, **kwargs):
    """``mdtraj.load_frame`` of ``path`` through :func:`mdtraj_path`.

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

    with mdtraj_path(path) as alias:
        return md.load_frame(alias, index, **kwargs)


def load_topology(path, **kwargs):
    """``mdtraj.load_topology`` of ``path`` through :func:`mdtraj_path`.

    Parameters
    ----------
    path : str or os.PathLike
    **kwargs
        Passed on to ``mdtraj.load_topology``.

    Returns
    -------
    mdtraj.Topology
    """
    import mdtraj as md

    with mdtraj_path(path) as alias:
        return md.load_topology(alias, **kwargs)
