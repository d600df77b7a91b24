"""The partial file of the text writers (PDB, mmCIF): opened fresh, or reopened
after its last complete frame to resume an interrupted run. Standard library only."""

from __future__ import annotations

import os
from typing import Optional, TextIO

from backmap_plugin.core.errors import BackmapInputError


def open_partial_text(partial: str, encoding: str, resume: Optional[dict] = None) -> TextIO:
    """Open a text writer's partial file: new and empty, or cut back to resume it.

    Parameters
    ----------
    partial : str
        The partial file.
    encoding : str
        Its text encoding (lines end in ``\\n``).
    resume : dict, optional
        The writer's saved state; ``resume['offset']`` is the byte offset
        after the last complete frame. None starts a new, empty file.

    Returns
    -------
    file object
        Open for writing at the end of the kept frames.

    Raises
    ------
    BackmapInputError
        Resuming a partial file that is missing or shorter than the offset.
    """
    if resume is None:
        return open(partial, "w", encoding=encoding, newline="\n")
    offset = resume.get("offset")
    size = os.path.getsize(partial) if os.path.exists(partial) else None
    if offset is None or size is None or size < offset:
        raise BackmapInputError(
            f"{partial}: cannot resume: the partial file is missing or shorter than the progress record says; "
            "start over with overwrite=True"
        )
    handle = open(partial, "r+", encoding=encoding, newline="\n")
    handle.seek(offset)
    handle.truncate()
    return handle


class TextBackend:
    """What the PDB and mmCIF back ends of
    :class:`backmap_plugin.io.trajectory.TrajectoryWriter` share: an open
    partial text file ``_file`` whose position is the resume state."""

    _file: TextIO

    def state(self) -> dict:
        """Where the file is complete, for resuming.

        Returns
        -------
        dict
            ``offset``: the byte offset after the last complete frame.
        """
        return {"offset": self._file.tell()}

    def abort(self) -> None:
        """Close the partial file as it is (a close that fails, flushing onto a full disk, is let go: the error
        that stopped the writer is the one to tell)."""
        try:
            self._file.close()
        except OSError:
            pass
