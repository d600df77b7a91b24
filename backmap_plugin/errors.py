"""Exceptions raised by backmap_plugin."""


class BackmapInputError(ValueError):
    """Input that cannot be backmapped.

    The message always names what is wrong and where: the file, and where it
    applies the frame, chain, residue and atom.
    """
