"""OpenMM tools for backmapped structures: refinement, validation, platform choice.

* :func:`refine_structure` / :class:`Refiner`: complete (hydrogens, missing
  atoms, disulfides) and minimise with amber14 + implicit solvent under
  heavy-atom restraints, after a soft-core clash-removal stage.
* :func:`validate_structure` / :func:`validate_frames`: energy, clashes,
  clashscore, bond/angle outliers, cis peptides, D residues, Ramachandran,
  missing atoms.
* :func:`select_platform` / :func:`create_context`: CUDA when present, else
  CPU.
* :class:`BackmapReporter`: backmap a running CG simulation as it goes.
* :mod:`~backmap_plugin.openmm.sampling`: high-temperature Langevin runs of
  one structure (amber14 + implicit solvent), for the training-data
  augmentation.

The command-line subcommands live in :mod:`backmap_plugin.openmm.cli`.
"""

from .platforms import available_platforms, create_context, select_platform
from .refine import RefinementResult, Refiner, refine_structure
from .structure import complete_structure, read_structure
from .validate import ValidationResult, validate_frames, validate_structure

__all__ = [
    "BackmapReporter",
    "RefinementResult",
    "Refiner",
    "ValidationResult",
    "available_platforms",
    "complete_structure",
    "create_context",
    "read_structure",
    "refine_structure",
    "select_platform",
    "validate_frames",
    "validate_structure",
]


def __getattr__(name):
    # the reporter pulls in torch: import it on first use
    if name == "BackmapReporter":
        from .reporter import BackmapReporter

        return BackmapReporter
    raise AttributeError(name)
