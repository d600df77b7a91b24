"""backmap_plugin: turn coarse-grained protein simulations back into all-atom structures.

The package's one internal length unit is the Angstrom; readers and writers
convert at the file boundary (mdtraj and OpenMM use nm). Angles are radians
inside the code.
"""

__version__ = "0.1.0"

from .errors import BackmapInputError  # noqa: E402

__all__ = ["BackmapInputError", "__version__", "backmap"]


def __getattr__(name):
    # the API pulls in torch and mdtraj: import it on first use
    if name == "backmap":
        from .api import backmap

        return backmap
    raise AttributeError(name)
