"""backmap_plugin: turn coarse-grained protein simulations back into all-atom structures.

The package's one internal length unit is the Angstrom; readers and writers
convert at the file boundary (mdtraj and OpenMM use nm). Angles are radians
inside the code.

The public names below are imported on first use, so ``import
backmap_plugin`` (and the ``backmap`` command's start) loads no heavy
library. The layers of the package are described in ARCHITECTURE.md.
"""

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "backmap": "backmap_plugin.api",
    "Backmapper": "backmap_plugin.api",
    "BackmapResult": "backmap_plugin.api",
    "BackmapReporter": "backmap_plugin.reporter",
    "BackmapInputError": "backmap_plugin.core.errors",
    "BackmapOutputError": "backmap_plugin.core.errors",
    "CutShortWarning": "backmap_plugin.core.errors",
    "run_pipeline": "backmap_plugin.pipeline",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    """The module's names with the public ones not imported yet (tab completion in IPython and Jupyter)."""
    return sorted(set(globals()) | set(_EXPORTS))
