"""Coarse-grained (one bead per residue) force fields as OpenMM Systems.

* :func:`create_hps_system`: HPS / CALVADOS 2 model of intrinsically
  disordered proteins from a sequence (:mod:`.hps`, parameters in
  ``hps_parameters.csv``).
* :func:`create_go_system`: C-alpha structure-based (Go) model from a native
  structure (:mod:`.go`).
* :func:`create_calvados3_system`: CALVADOS 3 model of disordered and
  multi-domain proteins from an all-atom structure and its folded domains
  (:mod:`.calvados3`, parameters in ``calvados3_parameters.csv``); beads at
  residue centres of mass.

All return ``(topology, system, positions)`` with the CA-only topology
style that ``backmap run`` reads (one residue per bead, atom ``CA``,
element carbon, three-letter names), so their trajectories backmap as they
are (CALVADOS 3 beads sit at residue centres of mass: the ``com`` mapping).
"""

from backmap_plugin.force_fields.calvados3 import (
    CALVADOS3_FORCE_GROUPS,
    create_calvados3_system,
    load_calvados3_parameters,
    read_domains,
)
from backmap_plugin.force_fields.go import GO_FORCE_GROUPS, create_go_system
from backmap_plugin.force_fields.hps import HPS_FORCE_GROUPS, create_hps_system, load_hps_parameters

__all__ = [
    "CALVADOS3_FORCE_GROUPS",
    "GO_FORCE_GROUPS",
    "HPS_FORCE_GROUPS",
    "create_calvados3_system",
    "create_go_system",
    "create_hps_system",
    "load_calvados3_parameters",
    "load_hps_parameters",
    "read_domains",
]
