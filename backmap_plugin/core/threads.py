"""CPU threads of the libraries that compute: torch (generation) and OpenMM's CPU platform (refinement, validation)."""

from __future__ import annotations

import os
import sys

__all__ = ["use_threads"]


def use_threads(count: int) -> None:
    """Compute on ``count`` CPU threads from now on, in torch and in OpenMM's CPU platform.

    Both take every core unless told otherwise. Fewer threads are faster
    when other work shares the cores (a running simulation, other jobs):
    two torch threads on two cores, one of them busy, made ``backmap run``
    4.4 times slower than one thread (benchmarks/README.md, "Threads").
    A library not loaded yet reads the count from ``OMP_NUM_THREADS`` /
    ``OPENMM_CPU_THREADS`` when it loads; one already loaded is told
    directly (OpenMM: the default for new contexts).

    Parameters
    ----------
    count : int
        Threads, at least 1.

    Raises
    ------
    ValueError
        For a count below 1.
    """
    if count < 1:
        raise ValueError(f"threads must be at least 1, got {count}")
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENMM_CPU_THREADS"] = str(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
    if "openmm" in sys.modules:
        sys.modules["openmm"].Platform.getPlatformByName("CPU").setPropertyDefaultValue("Threads", str(count))
