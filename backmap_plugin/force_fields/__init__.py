"""Coarse-grained (one bead per residue) force fields as OpenMM Systems.

* :func:`create_hps_system`: HPS / CALVADOS 2 model of intrinsically
  disordered proteins from a sequence (:mod:`.hps`, parameters in
  ``hps_parameters.csv``).
* :func:`create_go_system`: C-alpha structure-based (Go) model from a native
  structure (:mod:`.go`).

Both return ``(topology, system, positions)`` with the CA-only topology
style that ``backmap run`` reads (one residue per bead, atom ``CA``,
element carbon, three-letter names), so their trajectories backmap as they
are.
"""

from backmap_plugin.force_fields.go import GO_FORCE_GROUPS, create_go_system
from backmap_plugin.force_fields.hps import HPS_FORCE_GROUPS, create_hps_system, load_hps_parameters

__all__ = ["GO_FORCE_GROUPS", "HPS_FORCE_GROUPS", "create_go_system", "create_hps_system", "load_hps_parameters"]
