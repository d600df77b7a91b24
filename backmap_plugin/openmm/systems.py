"""OpenMM systems for refinement: amber14 + implicit solvent, restraints, soft core.

Thin wrappers that build or change ``openmm.System`` objects; shared by
:mod:`~backmap_plugin.openmm.refine` and :mod:`~backmap_plugin.openmm.validate`.
"""

from __future__ import annotations

import copy

import numpy as np

from backmap_plugin.openmm.structure import positions_to_array

__all__ = [
    "RESTRAINT_GROUP",
    "SOFT_CORE_ENERGY",
    "SOFT_CORE_SIGMA_SCALE",
    "SOLVENTS",
    "add_position_restraints",
    "load_force_field",
    "soft_core_system",
]

#: Implicit-solvent files used with ``amber14-all.xml``; ``vacuum`` has none.
SOLVENTS = {"gbn2": "implicit/gbn2.xml", "obc2": "implicit/obc2.xml", "vacuum": None}
#: Force group of the position restraints (everything else is group 0), so
#: energies can be reported without them.
RESTRAINT_GROUP = 1
#: Soft-core stage: energy of two fully overlapping atoms (kJ/mol) and the
#: fraction of the amber14 Lennard-Jones sigma below which atoms repel.
SOFT_CORE_ENERGY = 50.0
SOFT_CORE_SIGMA_SCALE = 0.8

_NONBONDED_FORCES = ("NonbondedForce", "GBSAOBCForce", "GBSAGBnForce", "GBSAGBn2Force", "CustomGBForce")


def load_force_field(solvent: str = "gbn2"):
    """amber14 (``amber14-all.xml``) with the chosen implicit solvent.

    Parameters
    ----------
    solvent : {"gbn2", "obc2", "vacuum"}
        Implicit-solvent model (:data:`SOLVENTS`).

    Returns
    -------
    openmm.app.ForceField
    """
    from openmm.app import ForceField

    if solvent not in SOLVENTS:
        raise ValueError(f"unknown solvent '{solvent}'; choose one of {', '.join(SOLVENTS)}")
    files = ["amber14-all.xml"] + ([SOLVENTS[solvent]] if SOLVENTS[solvent] else [])
    return ForceField(*files)


def add_position_restraints(system, positions, atoms, restraintK):
    """Add harmonic position restraints ``0.5*k*|r - r0|^2`` to a system.

    Parameters
    ----------
    system : openmm.System
        Modified in place.
    positions : openmm.unit.Quantity
        Reference positions of all particles.
    atoms : array_like of int
        Restrained particle indices.
    restraintK : float or openmm.unit.Quantity
        Force constant, kJ/mol/nm^2 when a plain number. It is the global
        context parameter ``k`` of the force, so it can be changed later.

    Returns
    -------
    openmm.CustomExternalForce
        The force, in force group :data:`RESTRAINT_GROUP`.
    """
    import openmm
    from openmm import unit

    if unit.is_quantity(restraintK):
        restraintK = restraintK.value_in_unit(unit.kilojoule_per_mole / unit.nanometer**2)
    force = openmm.CustomExternalForce("0.5*k*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    force.setName("PositionRestraints")
    force.addGlobalParameter("k", float(restraintK))
    for name in ("x0", "y0", "z0"):
        force.addPerParticleParameter(name)
    xyz = positions_to_array(positions)
    for i in np.asarray(atoms, dtype=np.int64).tolist():
        force.addParticle(i, xyz[i].tolist())
    force.setForceGroup(RESTRAINT_GROUP)
    system.addForce(force)
    return force


def soft_core_system(system, energy=SOFT_CORE_ENERGY, sigmaScale=SOFT_CORE_SIGMA_SCALE):
    """Copy of an amber system with a capped repulsion as the only nonbonded term.

    The ``NonbondedForce`` and implicit-solvent forces are removed and
    replaced by ``E0*(1 - r/s)^2`` for ``r < s``, with ``E0`` = ``energy``
    and ``s`` = ``sigmaScale`` times the Lorentz-Berthelot sigma of the pair
    (at least 0.1 nm). The energy stays finite and smooth even for atoms on
    top of each other. Pairs that are exceptions of the ``NonbondedForce``
    (1-2, 1-3, 1-4) are excluded. Bonded terms and any other force are kept.

    Parameters
    ----------
    system : openmm.System
        System from ``ForceField.createSystem`` (not modified).
    energy : float, optional
        Energy of two fully overlapping atoms, kJ/mol.
    sigmaScale : float, optional
        Fraction of the pair's Lennard-Jones sigma where the repulsion starts.

    Returns
    -------
    openmm.System
    """
    import openmm

    nonbonded = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    if len(nonbonded) != 1:
        raise ValueError(f"expected one NonbondedForce to soften, found {len(nonbonded)}")
    nonbonded = nonbonded[0]
    soft = copy.deepcopy(system)
    for i in reversed(range(soft.getNumForces())):
        if soft.getForce(i).__class__.__name__ in _NONBONDED_FORCES:
            soft.removeForce(i)
    repulsion = openmm.CustomNonbondedForce(
        f"{float(energy)}*step(s-r)*(1-r/s)^2; s=max(0.1, {float(sigmaScale)}*0.5*(s1+s2))"
    )
    repulsion.setName("SoftCoreRepulsion")
    repulsion.addPerParticleParameter("s")
    largest = 0.1
    for i in range(nonbonded.getNumParticles()):
        _, sigma, _ = nonbonded.getParticleParameters(i)
        s = sigma.value_in_unit(openmm.unit.nanometer)
        largest = max(largest, s)
        repulsion.addParticle([s])
    for k in range(nonbonded.getNumExceptions()):
        i, j, *_ = nonbonded.getExceptionParameters(k)
        repulsion.addExclusion(i, j)
    repulsion.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffNonPeriodic)
    repulsion.setCutoffDistance(max(0.1, sigmaScale * largest) + 0.01)
    soft.addForce(repulsion)
    return soft
