"""File names: the formats read and written, and checks of input and output paths.

The format of a file is chosen by its extension, in any case (``TRAJ.XTC``,
``PROTEIN.PDB.GZ``): :func:`match_extension` is where every such decision is
made. These checks run before any work is done, so a wrong name fails at once
with a clear message. Standard library only.
"""

from __future__ import annotations

import os
from typing import Optional

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.io.atomic import hidden_path, is_stream, target_path

#: PDB-format text: ``.pdb`` and wwPDB's name for it, ``.ent`` (``pdb1abc.ent.gz``), each also gzipped. Every
#: reader of this package takes these names as PDB files.
PDB = (".pdb", ".pdb.gz", ".ent", ".ent.gz")

#: mmCIF extensions.
MMCIF = (".cif", ".cif.gz", ".mmcif", ".mmcif.gz")

#: Input formats that hold coordinates only and need a ``top`` file.
NEEDS_TOPOLOGY = (".dcd", ".xtc", ".trr", ".nc", ".netcdf")

#: Small single-structure / ensemble formats that are loaded whole.
LOADED_WHOLE = PDB + MMCIF + (".gro",)

#: Extensions :func:`backmap_plugin.io.frames.open_frames` reads (lower case, matched in any case:
#: :func:`match_extension`; ``.gz`` only where the reader decompresses it itself).
SUPPORTED_INPUT = LOADED_WHOLE + (".h5",) + NEEDS_TOPOLOGY

#: Extensions :class:`backmap_plugin.io.trajectory.TrajectoryWriter` writes.
SUPPORTED_OUTPUT = (".pdb", ".cif", ".dcd", ".xtc", ".h5")

#: Input formats that hold a topology and can be passed as ``top`` (``.tpr``
#: through MDAnalysis, an optional dependency).
TOPOLOGY_FORMATS = LOADED_WHOLE + (".h5", ".tpr")


def match_extension(path, choices: tuple) -> Optional[str]:
    """The longest extension in ``choices`` that ``path`` ends with, in any case (``PROTEIN.PDB`` is a ``.pdb``).

    Every decision of this package made from a file's name goes through
    here, so that ``TRAJ.XTC`` is read (and ``OUT.DCD`` written) as its
    lower-case twin.

    Parameters
    ----------
    path : str or os.PathLike
        A file name.
    choices : tuple of str
        Lower-case extensions, dot included.

    Returns
    -------
    str or None
        The matching extension (lower case, as in ``choices``), None when none matches.
    """
    lower = os.fspath(path).lower()
    hits = [ext for ext in choices if lower.endswith(ext)]
    return max(hits, key=len) if hits else None


def check_input_file(path: str, choices: tuple, role: str) -> str:
    """Check that a file exists, is non-empty and has an extension in ``choices``.

    Parameters
    ----------
    path : str
        The file.
    choices : tuple of str
        Extensions accepted.
    role : str
        What the file is (``"input"``, ``"topology"``), for messages.

    Returns
    -------
    str
        The file's extension, lower case (one of ``choices``).

    Raises
    ------
    BackmapInputError
        Missing file, a directory, an unsupported extension (in any case:
        :func:`match_extension`), an empty file.
    """
    if not os.path.exists(path):
        raise BackmapInputError(f"{path}: {role} file does not exist")
    if os.path.isdir(path):
        raise BackmapInputError(f"{path}: {role} file is a directory")
    ext = match_extension(path, choices)
    if ext is None:
        raise BackmapInputError(
            f"{path}: unsupported {role} file extension; supported: {', '.join(choices)}"
        )
    if os.path.getsize(path) == 0:
        raise BackmapInputError(f"{path}: {role} file is empty")
    return ext


def check_file_path(path, what: str = "the file", reads: dict | None = None) -> None:
    """Check, before any work, that a file (a report, a summary) can be written at ``path``.

    A symbolic link is followed (the file it names is written); a stream
    (``/dev/stdout``, a FIFO: :func:`~backmap_plugin.io.atomic.is_stream`)
    is written in place, so it needs write permission itself, not its
    directory.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    what : str
        What it is, with its article, for the message (``cannot write the report: ...``).
    reads : dict, optional
        The files of the job it must not be: ``{"input": path, "--top": path, "output": path, ...}`` (None values
        skipped), for the message.

    Raises
    ------
    BackmapInputError
        Its directory does not exist or cannot be written in (no
        permission, a read-only file system), a directory is in its way, or
        it is one of ``reads``.
    """
    path = os.fspath(path)
    for role, other in (reads or {}).items():
        if other is not None and same_file(path, other):
            raise BackmapInputError(f"{path}: {what} would overwrite the {role} file {os.fspath(other)}; "
                                    "choose another path")
    if is_stream(path):
        if not os.access(path, os.W_OK):
            raise BackmapInputError(f"{path}: cannot write {what}: no permission to write it")
        return
    directory = os.path.dirname(target_path(path))
    if not os.path.isdir(directory):
        raise BackmapInputError(f"{path}: cannot write {what}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise BackmapInputError(f"{path}: cannot write {what}: it is a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BackmapInputError(f"{path}: cannot write {what}: no permission to write in {directory}")


def same_file(path, other) -> bool:
    """Whether two paths name one file (links followed; also where neither exists yet).

    Parameters
    ----------
    path, other : str or os.PathLike

    Returns
    -------
    bool
    """
    if target_path(path) == target_path(other):
        return True
    return os.path.exists(path) and os.path.exists(other) and os.path.samefile(path, other)


def check_output_path(path, overwrite: bool = True, inputs=()) -> str:
    """Check that ``path`` can be written as a trajectory, before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    overwrite : bool
        Whether an existing file may be replaced.
    inputs : sequence of str or os.PathLike or None, optional
        Files the job reads, which the output must not be.

    Returns
    -------
    str
        The output format's extension.

    Raises
    ------
    BackmapInputError
        Unsupported extension, missing directory, a directory in the way,
        an existing file with ``overwrite=False``, no write permission, the
        output is one of ``inputs``, a stream (a device, a FIFO: the
        output is written to a partial file and moved into place).

    Notes
    -----
    A symbolic link is followed: the file it names is written (a dangling
    link: created, as a new output).
    """
    path = os.fspath(path)
    for read in inputs:
        if read is not None and same_file(path, read):
            raise BackmapInputError(f"{path}: the output is the input file {os.fspath(read)}: writing it would "
                                    "destroy the input; choose another output name")
    ext = match_extension(path, SUPPORTED_OUTPUT)
    if ext is None:
        raise BackmapInputError(f"{path}: unsupported output file extension; supported: {', '.join(SUPPORTED_OUTPUT)}")
    directory = os.path.dirname(target_path(path))
    if not os.path.isdir(directory):
        raise BackmapInputError(f"{path}: cannot write output: directory {directory} does not exist")
    if os.path.isdir(path):
        raise BackmapInputError(f"{path}: cannot write output: it is a directory")
    if is_stream(path):
        raise BackmapInputError(f"{path}: cannot write output: not a regular file (a device or FIFO); the output is "
                                "written beside it and moved into place: give a file name")
    if os.path.exists(path) and not overwrite:
        raise BackmapInputError(f"{path}: output file exists; pass overwrite=True to replace it")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BackmapInputError(f"{path}: cannot write output: no permission to write in {directory}")
    return ext


def partial_path(output) -> str:
    """The partial file an output is written to until it is complete (``.<name>.partial<ext>`` beside it,
    :func:`~backmap_plugin.io.atomic.hidden_path`).

    Parameters
    ----------
    output : str or os.PathLike
        An output file, extension in :data:`SUPPORTED_OUTPUT`.

    Returns
    -------
    str
    """
    return hidden_path(output, f".partial{match_extension(os.fspath(output), SUPPORTED_OUTPUT) or ''}")


def file_digest(path) -> str:
    """SHA-256 (hex) of a file's bytes: what a report was made from, so a later one can tell (``report``).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    str
    """
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
