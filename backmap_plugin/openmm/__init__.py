"""OpenMM tools for backmapped structures: refinement, validation, platform choice.

* :func:`refine_structure` / :class:`Refiner`: complete (hydrogens, missing
  atoms, disulfides) and minimise with amber14 + implicit solvent under
  heavy-atom restraints, after a soft-core clash-removal stage.
* :func:`validate_structure` / :func:`validate_frames`: energy, clashes,
  clashscore, bond/angle outliers, cis peptides, D residues, Ramachandran,
  missing atoms.
* :func:`select_platform` / :func:`create_context`: CUDA when present, else
  CPU.
* :mod:`~backmap_plugin.openmm.sampling`: high-temperature Langevin runs of
  one structure (amber14 + implicit solvent), for the training-data
  augmentation.

Layer 3 (engine): imports only core, io, build and model. The reporter that
attaches to a running simulation is :class:`backmap_plugin.BackmapReporter`;
the subcommands are in :mod:`backmap_plugin.cli`.
"""

#: public name -> submodule that defines it (imported on first use: OpenMM is heavy)
_EXPORTS = {
    "available_platforms": "platforms", "create_context": "platforms", "select_platform": "platforms",
    "RefinementResult": "refine", "Refiner": "refine", "refine_structure": "refine",
    "complete_structure": "structure", "read_structure": "structure",
    "ValidationResult": "validate", "validate_frames": "validate", "validate_structure": "validate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
