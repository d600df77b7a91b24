"""Choice of the OpenMM platform: CUDA when present, else CPU.

The one place where the package decides where OpenMM computes, so that
refinement, validation and the CG force-field helpers behave alike.
"""

from __future__ import annotations

import copy

__all__ = ["PLATFORM_PREFERENCE", "available_platforms", "create_context", "select_platform"]

#: Platforms tried by ``"auto"``, fastest first. OpenCL is usable when named
#: but never chosen automatically; Reference is the slow last resort.
PLATFORM_PREFERENCE = ("CUDA", "CPU", "Reference")

#: Platform properties applied when a platform is selected: mixed precision
#: on GPUs (single-precision forces, double-precision integration), which is
#: what OpenMM recommends for minimisation and dynamics.
_DEFAULT_PROPERTIES = {
    "CUDA": {"Precision": "mixed"},
    "OpenCL": {"Precision": "mixed"},
    "HIP": {"Precision": "mixed"},
}


def available_platforms() -> list[str]:
    """Names of the OpenMM platforms that can be loaded here.

    Returns
    -------
    list of str
        Platform names, e.g. ``['Reference', 'CPU', 'CUDA']``.
    """
    import openmm

    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def select_platform(name: str | None = "auto"):
    """Return an OpenMM platform and the properties to create a Context with.

    Parameters
    ----------
    name : str or None, optional
        ``"auto"`` (or None) picks the first available of
        :data:`PLATFORM_PREFERENCE` (CUDA, then CPU, then Reference). Any
        other value names a platform (case-insensitive: ``cuda``, ``cpu``,
        ``reference``, ``opencl``, ``hip``).

    Returns
    -------
    platform : openmm.Platform
        The selected platform.
    properties : dict
        Platform properties (``{"Precision": "mixed"}`` on GPU platforms,
        empty otherwise), for ``openmm.Context(system, integrator, platform,
        properties)``.

    Raises
    ------
    ValueError
        When a named platform is not available; the message lists those that
        are.
    """
    import openmm

    available = available_platforms()
    if name is None or str(name).lower() == "auto":
        chosen = next((p for p in PLATFORM_PREFERENCE if p in available), available[0])
    else:
        lookup = {p.lower(): p for p in available}
        chosen = lookup.get(str(name).lower())
        if chosen is None:
            raise ValueError(f"OpenMM platform '{name}' is not available; available: {', '.join(available)}")
    return openmm.Platform.getPlatformByName(chosen), dict(_DEFAULT_PROPERTIES.get(chosen, {}))


def create_context(system, integrator, platform: str | None = "auto"):
    """Create an OpenMM Context on the selected platform.

    With ``"auto"`` a platform whose Context cannot be created (e.g. the
    CUDA plugin loads but no GPU is usable) is skipped and the next one in
    :data:`PLATFORM_PREFERENCE` is tried; a named platform is used or fails.

    Parameters
    ----------
    system : openmm.System
        The system.
    integrator : openmm.Integrator
        A fresh integrator (a Context takes ownership of one integrator).
        When a fallback platform is used the Context holds a copy of it:
        use ``context.getIntegrator()``.
    platform : str or None, optional
        As for :func:`select_platform`.

    Returns
    -------
    openmm.Context
        The context; ``context.getPlatform().getName()`` tells which platform.

    Raises
    ------
    ValueError
        A named platform is not available.
    openmm.OpenMMException
        The Context could not be created on any candidate platform.
    """
    import openmm

    if platform is not None and str(platform).lower() != "auto":
        chosen, properties = select_platform(platform)
        return openmm.Context(system, integrator, chosen, properties)
    available = available_platforms()
    candidates = [p for p in PLATFORM_PREFERENCE if p in available] or available[:1]
    error = None
    for k, name in enumerate(candidates):
        chosen, properties = select_platform(name)
        # a failed attempt may leave the integrator bound: retry with a copy
        attempt = integrator if k == 0 else copy.deepcopy(integrator)
        try:
            return openmm.Context(system, attempt, chosen, properties)
        except openmm.OpenMMException as exc:  # e.g. CUDA plugin without a usable GPU
            error = exc
    raise error
