"""Exceptions raised by backmap_plugin."""


class BackmapInputError(ValueError):
    """Input that cannot be backmapped.

    The message always names what is wrong and where: the file, and where it
    applies the frame, chain, residue and atom.
    """


class BeadsTooCloseError(BackmapInputError):
    """Two beads closer than any two of a protein
    (:data:`~backmap_plugin.core.beads.MIN_BEAD_DISTANCE`): duplicated or
    collapsed coordinates in a file; in a running simulation, a CG model
    that lets beads overlap (the reporter leaves such frames out)."""


class BackmapOutputError(OSError):
    """Output that cannot be written (disk full, I/O error, lost file).

    The message names the file and how many frames before the failure are
    kept; ``str()`` gives it alone (without OSError's ``[Errno N]``).
    """

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class CutShortWarning(UserWarning):
    """An input ended inside a frame (a run killed while writing it, or one still writing it): every whole frame
    was processed and the output written, but it is not the whole trajectory. The message names the file and its
    last whole frame read; ``backmap run`` and ``backmap refine`` then exit with their input-error status, 2.
    ``warnings.simplefilter("error", CutShortWarning)`` makes it an exception (raised once the output is
    written)."""


def last_line(exc: BaseException) -> str:
    """The last line of an exception's message (HDF5's is its library's back trace, whose last line says why),
    or its type's name when the message is empty."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
