"""OpenMM systems for refinement and validation: amber14 per solvent model, restraints, soft core.

Thin wrappers that build or change ``openmm.System`` objects; shared by
:mod:`~backmap_plugin.openmm.refine` and :mod:`~backmap_plugin.openmm.validate`.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from backmap_plugin.openmm.structure import positions_to_array

__all__ = [
    "RESTRAINT_GROUP",
    "SOFT_CORE_ENERGY",
    "SOFT_CORE_SIGMA_SCALE",
    "SOLVENTS",
    "SCREENED_CUTOFF_NM",
    "SCREENED_DIELECTRIC",
    "add_position_restraints",
    "create_system",
    "force_field_parts",
    "load_force_field",
    "screen_electrostatics",
    "soft_core_system",
    "use_native_obc2",
]

#: Implicit-solvent files used with ``amber14-all.xml``; ``screened`` and ``vacuum`` have none.
SOLVENTS = {"gbn2": "implicit/gbn2.xml", "obc2": "implicit/obc2.xml", "screened": None, "vacuum": None}
#: Relative permittivity of the ``screened`` model: amber14 in vacuum with every
#: Coulomb interaction divided by it (the classic uniform protein dielectric);
#: 20-70x cheaper than GB on the CPU, and refined frames validate like GBn2's
#: (benchmarks/README.md, refinement).
SCREENED_DIELECTRIC = 4.0
#: Cut-off of the ``screened`` model's nonbonded terms (OpenMM's CutoffNonPeriodic:
#: reaction field for Coulomb within it, nothing beyond); refined frames validate
#: as without it and refinement takes 27 % less time at 87 residues, 54 % at 349.
SCREENED_CUTOFF_NM = 1.2
#: Offset (nm) between the intrinsic radius and the offset radius of the
#: Amber GB models (``offset=0.009`` in OpenMM's ``customgbforces``).
_OBC_OFFSET = 0.009
#: Force group of the position restraints (everything else is group 0), so
#: energies can be reported without them.
RESTRAINT_GROUP = 1
#: Soft-core stage: energy of two fully overlapping atoms (kJ/mol) and the
#: fraction of the amber14 Lennard-Jones sigma below which atoms repel.
SOFT_CORE_ENERGY = 50.0
SOFT_CORE_SIGMA_SCALE = 0.8

_NONBONDED_FORCES = ("NonbondedForce", "GBSAOBCForce", "GBSAGBnForce", "GBSAGBn2Force", "CustomGBForce")


def force_field_parts(solvent: str) -> list[str]:
    """What a solvent model's system is made of, for reports: the force-field files, then the screening.

    Parameters
    ----------
    solvent : str
        A key of :data:`SOLVENTS`.

    Returns
    -------
    list of str
        E.g. ``["amber14-all.xml", "implicit/gbn2.xml"]`` or
        ``["amber14-all.xml", "Coulomb / 4 (screened)"]``.
    """
    parts = ["amber14-all.xml"] + ([SOLVENTS[solvent]] if SOLVENTS[solvent] else [])
    if solvent == "screened":
        parts.append(f"Coulomb / {SCREENED_DIELECTRIC:g} (screened)")
    return parts


def load_force_field(solvent: str = "gbn2"):
    """amber14 (``amber14-all.xml``) with the chosen implicit solvent.

    Parameters
    ----------
    solvent : {"gbn2", "obc2", "screened", "vacuum"}
        Solvent model (:data:`SOLVENTS`).

    Returns
    -------
    openmm.app.ForceField
    """
    from openmm.app import ForceField

    if solvent not in SOLVENTS:
        raise ValueError(f"unknown solvent '{solvent}'; choose one of {', '.join(SOLVENTS)}")
    files = ["amber14-all.xml"] + ([SOLVENTS[solvent]] if SOLVENTS[solvent] else [])
    return ForceField(*files)


def template_error(exc: Exception, topology) -> str:
    """What a failed ``ForceField.createSystem`` says, with the residue it names as the files name it.

    OpenMM names a residue without a template by its index counted from 0
    (``No template found for residue 1 (ILE)``); the message gets its chain,
    name and number too (``A:ILE2``); where that residue is bonded to no
    other (a chain of one residue: a free amino acid, which amber14 has no
    template for, its templates being for a chain's first, inner and last
    residues), the message says so and what to do, before OpenMM's words.

    Parameters
    ----------
    exc : Exception
        What ``createSystem`` raised.
    topology : openmm.app.Topology
        The topology it was given.

    Returns
    -------
    str
    """
    import re

    from backmap_plugin.openmm.structure import residue_label

    text = str(exc)
    found = re.search(r"No template found for residue (\d+) \(", text)
    residues = list(topology.residues())
    if found is None or int(found.group(1)) >= len(residues):
        return text
    residue = residues[int(found.group(1))]
    label = residue_label(residue)
    if next(residue.external_bonds(), None) is not None:
        return f"{label}: {text}"
    return (f"{label} is bonded to no other residue: a chain of one residue (or a piece of one between two "
            "breaks), a free amino acid, which amber14 has no template for (its templates are for a chain's first, "
            "inner and last residues); leave it out of the structure, or give it the residues it is bonded to "
            f"(OpenMM: {text})")


def create_system(forcefield, topology, solvent: str, **options):
    """The amber14 system of a topology for one solvent model.

    ``obc2`` runs on OpenMM's built-in ``GBSAOBCForce`` (:func:`use_native_obc2`,
    5x faster on the CPU than the custom force of ``implicit/obc2.xml``);
    ``screened`` divides the electrostatics by :data:`SCREENED_DIELECTRIC`
    (:func:`screen_electrostatics`) and cuts nonbonded terms off at
    :data:`SCREENED_CUTOFF_NM`; the others have no cut-off.

    Parameters
    ----------
    forcefield : openmm.app.ForceField
        From :func:`load_force_field` with the same ``solvent``.
    topology : openmm.app.Topology
        Topology with hydrogens.
    solvent : str
        A key of :data:`SOLVENTS`.
    **options
        More arguments of ``ForceField.createSystem`` (default: no constraints).

    Returns
    -------
    openmm.System
    """
    from openmm import unit
    from openmm.app import CutoffNonPeriodic, NoCutoff

    options = {"constraints": None, **options, "nonbondedMethod": NoCutoff}
    if solvent == "screened":
        options.update(nonbondedMethod=CutoffNonPeriodic, nonbondedCutoff=SCREENED_CUTOFF_NM * unit.nanometer)
    system = forcefield.createSystem(topology, **options)
    if solvent == "obc2":
        use_native_obc2(system)
    elif solvent == "screened":
        screen_electrostatics(system, SCREENED_DIELECTRIC)
    return system


def screen_electrostatics(system, dielectric: float) -> None:
    """Divide every Coulomb interaction of the system's ``NonbondedForce`` by ``dielectric``.

    Charges are scaled by ``1 / sqrt(dielectric)`` and the charge products of
    the exceptions (scaled 1-4 pairs) by ``1 / dielectric``; Lennard-Jones
    terms are unchanged.

    Parameters
    ----------
    system : openmm.System
        Modified in place.
    dielectric : float
        Relative permittivity, > 0.
    """
    import openmm

    if dielectric <= 0:
        raise ValueError(f"dielectric must be positive, got {dielectric}")
    scale = 1.0 / math.sqrt(dielectric)
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            for i in range(force.getNumParticles()):
                charge, sigma, epsilon = force.getParticleParameters(i)
                force.setParticleParameters(i, charge * scale, sigma, epsilon)
            for k in range(force.getNumExceptions()):
                i, j, product, sigma, epsilon = force.getExceptionParameters(k)
                force.setExceptionParameters(k, i, j, product / dielectric, sigma, epsilon)


def use_native_obc2(system) -> bool:
    """Replace the ``CustomGBForce`` of ``implicit/obc2.xml`` by ``GBSAOBCForce``.

    Both compute the same OBC2 energy (Amber ``igb=5``) with the ACE surface
    term: the custom force's per-particle ``(charge, or, sr)`` become
    ``(charge, or + 0.009 nm, sr / or)``. The built-in force has optimised
    kernels on every platform, notably the CPU one.

    Parameters
    ----------
    system : openmm.System
        A system built with ``implicit/obc2.xml`` and no cutoff; modified in
        place.

    Returns
    -------
    bool
        True if a force was replaced (False when the system has no
        ``CustomGBForce``).
    """
    import openmm

    custom = [k for k, f in enumerate(system.getForces()) if isinstance(f, openmm.CustomGBForce)]
    if not custom:
        return False
    if len(custom) > 1:
        raise ValueError(f"expected one CustomGBForce, found {len(custom)}")
    index = custom[0]
    old = system.getForce(index)
    if old.getNonbondedMethod() != openmm.CustomGBForce.NoCutoff:
        raise ValueError("use_native_obc2 supports NoCutoff systems only")
    names = [old.getPerParticleParameterName(i) for i in range(old.getNumPerParticleParameters())]
    if names != ["charge", "or", "sr"]:
        raise ValueError(f"not an Amber OBC force: per-particle parameters {names}")
    new = openmm.GBSAOBCForce()
    new.setNonbondedMethod(openmm.GBSAOBCForce.NoCutoff)
    # obc2.xml is used with its default dielectrics (solute 1, solvent 78.5)
    new.setSoluteDielectric(1.0)
    new.setSolventDielectric(78.5)
    for i in range(old.getNumParticles()):
        charge, offset_radius, scaled_radius = old.getParticleParameters(i)
        new.addParticle(charge, offset_radius + _OBC_OFFSET, scaled_radius / offset_radius)
    new.setForceGroup(old.getForceGroup())
    system.removeForce(index)
    system.addForce(new)
    return True


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
