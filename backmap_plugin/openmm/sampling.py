"""High-temperature Langevin sampling of one protein (amber14 + implicit solvent).

Used by the out-of-equilibrium data augmentation
(:mod:`backmap_plugin.training.augment`): a structure is completed for amber14
(:func:`~backmap_plugin.openmm.structure.complete_structure`: missing heavy
atoms, disulfides, hydrogens; no loops), minimised, and then heated through a
ladder of temperatures in one continuous Langevin trajectory, saving a frame
every ``save_ps``. Each stage continues from the end of the previous one,
so later (hotter) stages move further from the deposited structure.

Protocol and the literature it follows
--------------------------------------
* Force field amber14 (ff14SB; Maier et al., J. Chem. Theory Comput. 11,
  3696, 2015) with Generalized Born implicit solvent: OBC2 (Onufriev,
  Bashford & Case, Proteins 55, 383, 2004; Amber ``igb=5``) or GBn2 (Nguyen,
  Roe & Simmerling, J. Chem. Theory Comput. 9, 2020, 2013; Amber ``igb=8``),
  no cutoff.
* Raised temperatures to leave the native basin quickly, as in
  high-temperature unfolding simulations started from the native structure
  (Daggett & Levitt, J. Mol. Biol. 232, 600, 1993, at 498 K; Day, Bennion,
  Ham & Daggett, J. Mol. Biol. 322, 189, 2002, who showed that 373-498 K
  speeds up unfolding without changing its pathway) and as in the
  multi-temperature mdCATH data set (Mirarchi et al., Sci. Data 11, 1299,
  2024; 320-450 K).
* ``LangevinMiddleIntegrator`` (Zhang et al., J. Phys. Chem. A 123, 6056,
  2019), bonds to hydrogen constrained; 2 fs, or 4 fs with hydrogen mass
  repartitioning (Hopkins, Le Grand, Walker & Roitberg, J. Chem. Theory
  Comput. 11, 1864, 2015).

OBC2 runs on OpenMM's built-in ``GBSAOBCForce`` (:func:`~backmap_plugin.openmm.systems.use_native_obc2`):
``implicit/obc2.xml`` builds the same model as a ``CustomGBForce``, which the
CPU platform evaluates several times slower.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.openmm.platforms import create_context
from backmap_plugin.openmm.structure import complete_structure
from backmap_plugin.openmm.systems import (
    SOLVENTS,
    create_system,
    load_force_field,
    soft_core_system,
    template_error,
)

__all__ = [
    "SamplingError",
    "SamplingProtocol",
    "SamplingResult",
    "build_system",
    "kinetic_temperature",
    "protocol_dict",
    "sample_structure",
]

#: Boltzmann constant, kJ/mol/K.
_KB = 0.00831446261815324


class SamplingError(Exception):
    """A structure that cannot be simulated; ``stage`` says where it failed.

    Parameters
    ----------
    stage : str
        ``prepare`` (PDBFixer, hydrogens), ``parametrise`` (no amber14
        template), ``minimise`` or ``dynamics`` (non-finite energy or
        coordinates, OpenMM error); ``check`` for frames rejected by a
        caller (e.g. an inverted C-alpha).
    message : str
        What went wrong.
    """

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


@dataclass(frozen=True)
class SamplingProtocol:
    """Settings of a heating-ladder run (OpenMM units: ps, fs, K, amu).

    Attributes
    ----------
    temperatures : tuple of float
        Temperature of each stage, K, run in this order.
    stage_ps : float
        Length of each stage, ps.
    save_ps : float
        Interval between saved frames, ps (a multiple of the time step;
        ``stage_ps`` a multiple of it). A stage saves ``stage_ps / save_ps``
        frames, the last at its end.
    timestep_fs : float
        Integration time step, fs.
    hydrogen_mass : float or None
        Hydrogen mass (amu) for hydrogen mass repartitioning; None keeps
        the standard masses.
    friction_per_ps : float
        Langevin friction, 1/ps.
    solvent : str
        ``obc2``, ``gbn2`` or ``vacuum`` (see
        :data:`backmap_plugin.openmm.systems.SOLVENTS`).
    pH : float
        pH for the protonation states.
    minimize_tolerance : float
        Minimiser tolerance (RMS force), kJ/mol/nm.
    minimize_iterations : int
        Largest number of minimiser iterations (0: until converged).
    soft_core : bool
        Minimise first with the nonbonded terms replaced by a capped
        repulsion (:func:`~backmap_plugin.openmm.systems.soft_core_system`,
        as ``backmap refine`` does). PDBFixer can put a terminal OXT on top
        of the next segment's N (cyclic peptides, short gaps); minimised
        directly with Lennard-Jones, such a clash can invert the C-alpha.
    """

    temperatures: tuple = (350.0, 400.0, 450.0, 500.0)
    stage_ps: float = 25.0
    save_ps: float = 2.5
    timestep_fs: float = 2.0
    hydrogen_mass: float | None = None
    friction_per_ps: float = 1.0
    solvent: str = "obc2"
    pH: float = 7.0
    minimize_tolerance: float = 10.0
    minimize_iterations: int = 1000
    soft_core: bool = True

    def __post_init__(self):
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
        if not self.temperatures or min(self.temperatures) <= 0:
            raise ValueError(f"temperatures must be a non-empty list of positive values, got {self.temperatures}")
        if self.solvent not in SOLVENTS:
            raise ValueError(f"unknown solvent '{self.solvent}'; choose one of {', '.join(SOLVENTS)}")
        for name in ("stage_ps", "save_ps", "timestep_fs", "friction_per_ps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hydrogen_mass is not None and not self.hydrogen_mass > 0:
            raise ValueError(f"hydrogen_mass must be positive or null, got {self.hydrogen_mass}")
        if self.minimize_iterations < 0:
            raise ValueError(f"minimize_iterations must be >= 0, got {self.minimize_iterations}")
        for name, value in (("save_ps", self.save_ps), ("stage_ps", self.stage_ps)):
            steps = value * 1000.0 / self.timestep_fs
            if abs(steps - round(steps)) > 1e-6:
                raise ValueError(f"{name} = {value} ps is not a whole number of {self.timestep_fs} fs steps")
        ratio = self.stage_ps / self.save_ps
        if abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(f"stage_ps ({self.stage_ps}) must be a multiple of save_ps ({self.save_ps})")

    @property
    def steps_per_save(self) -> int:
        """Integration steps between saved frames."""
        return round(self.save_ps * 1000.0 / self.timestep_fs)

    @property
    def saves_per_stage(self) -> int:
        """Frames saved per temperature stage."""
        return round(self.stage_ps / self.save_ps)

    @property
    def n_frames(self) -> int:
        """Frames saved per structure."""
        return self.saves_per_stage * len(self.temperatures)

    @property
    def simulated_ps(self) -> float:
        """Simulated time per structure, ps."""
        return self.stage_ps * len(self.temperatures)


@dataclass
class SamplingResult:
    """Frames and figures of one :func:`sample_structure` run.

    Attributes
    ----------
    topology : openmm.app.Topology
        The completed topology (hydrogens included).
    xyz : numpy.ndarray
        ``(n_frames, n_atoms, 3)`` float32 coordinates of every saved frame,
        Angstrom, all atoms of ``topology``.
    frames : list of dict
        Per saved frame: ``frame``, ``stage``, ``temperature_k`` (target),
        ``time_ps``, ``potential_kj_mol``, ``kinetic_temperature_k``.
    minimized_energy_kj_mol : float
        Potential energy after minimisation.
    platform : str
        OpenMM platform used.
    n_atoms, n_added_heavy, n_disulfides : int
        Atom counts of the completed structure.
    seconds : dict
        Wall time of ``prepare``, ``minimise`` and ``dynamics``.
    """

    topology: object
    xyz: np.ndarray
    frames: list = field(default_factory=list)
    minimized_energy_kj_mol: float = math.nan
    platform: str = ""
    n_atoms: int = 0
    n_added_heavy: int = 0
    n_disulfides: int = 0
    seconds: dict = field(default_factory=dict)


def build_system(topology, protocol: SamplingProtocol):
    """amber14 + implicit solvent system for a completed topology.

    No cutoff, bonds to hydrogen constrained, hydrogen masses repartitioned
    when ``protocol.hydrogen_mass`` is set; OBC2 on ``GBSAOBCForce``
    (:func:`~backmap_plugin.openmm.systems.use_native_obc2`).

    Parameters
    ----------
    topology : openmm.app.Topology
        Topology with hydrogens.
    protocol : SamplingProtocol

    Returns
    -------
    openmm.System

    Raises
    ------
    SamplingError
        amber14 has no template for a residue (stage ``parametrise``).
    """
    from openmm import unit
    from openmm.app import HBonds, NoCutoff

    options = {"nonbondedMethod": NoCutoff, "constraints": HBonds}
    if protocol.hydrogen_mass is not None:
        options["hydrogenMass"] = protocol.hydrogen_mass * unit.amu
    try:
        return create_system(load_force_field(protocol.solvent), topology, protocol.solvent, **options)
    except Exception as exc:  # "No template found for residue ..."
        raise SamplingError("parametrise", "amber14 cannot parametrise the structure: "
                                           f"{template_error(exc, topology)}") from exc


def kinetic_temperature(kinetic_energy: float, system) -> float:
    """Instantaneous temperature (K) from the kinetic energy (kJ/mol).

    Degrees of freedom: 3 per massive particle, minus constraints, minus 3
    when a ``CMMotionRemover`` is present.

    Parameters
    ----------
    kinetic_energy : float
    system : openmm.System

    Returns
    -------
    float
    """
    import openmm

    massive = sum(system.getParticleMass(i)._value > 0 for i in range(system.getNumParticles()))
    dof = 3 * massive - system.getNumConstraints()
    if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
        dof -= 3
    return 2.0 * kinetic_energy / (dof * _KB) if dof > 0 else math.nan


def _state(context, positions: bool = False):
    from openmm import unit

    state = context.getState(getEnergy=True, getPositions=positions)
    potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) if positions else None
    return potential, kinetic, xyz


def sample_structure(topology, positions, protocol: SamplingProtocol, seed: int = 0, platform: str = "auto",
                     on_frame=None) -> SamplingResult:
    """Complete, minimise (soft core, then amber14) and heat one structure; return the saved frames.

    Parameters
    ----------
    topology : openmm.app.Topology
        Heavy-atom (or all-atom) protein topology; hydrogens are rebuilt.
        Every chain is a bonded segment (termini are built at chain ends).
    positions : openmm.unit.Quantity
        Its positions.
    protocol : SamplingProtocol
    seed : int
        Seed of the initial velocities and of the Langevin noise (a
        positive 31-bit integer is used; the same seed reproduces a run on
        the same platform and thread count).
    platform : str
        ``auto`` (CUDA when present, else CPU), ``CUDA``, ``CPU``,
        ``Reference`` or ``OpenCL``.
    on_frame : callable, optional
        Called as ``on_frame(record)`` after each saved frame (progress).

    Returns
    -------
    SamplingResult

    Raises
    ------
    SamplingError
        PDBFixer or amber14 cannot handle the structure, or the energy or
        coordinates become non-finite (NaN) while minimising or running.
    """
    import openmm
    from openmm import unit

    seconds = {}
    t0 = time.perf_counter()
    try:
        completed = complete_structure(topology, positions, pH=protocol.pH)
    except BackmapInputError as exc:
        raise SamplingError("prepare", str(exc)) from exc
    except Exception as exc:  # PDBFixer / Modeller internals
        raise SamplingError("prepare", f"{type(exc).__name__}: {exc}") from exc
    system = build_system(completed.topology, protocol)
    seed = int(seed) % (2**31 - 1) + 1  # 0 would ask OpenMM for a random seed
    integrator = openmm.LangevinMiddleIntegrator(
        protocol.temperatures[0] * unit.kelvin, protocol.friction_per_ps / unit.picosecond,
        protocol.timestep_fs * unit.femtoseconds,
    )
    integrator.setRandomNumberSeed(seed)
    try:
        context = create_context(system, integrator, platform)
    except ValueError:
        raise
    except Exception as exc:
        raise SamplingError("prepare", f"cannot create an OpenMM context: {exc}") from exc
    integrator = context.getIntegrator()
    context.setPositions(completed.positions)
    seconds["prepare"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        if protocol.soft_core:
            soft = create_context(soft_core_system(system), openmm.VerletIntegrator(0.001), platform)
            soft.setPositions(completed.positions)
            openmm.LocalEnergyMinimizer.minimize(soft, protocol.minimize_tolerance, protocol.minimize_iterations)
            context.setPositions(soft.getState(getPositions=True).getPositions())
            del soft
        openmm.LocalEnergyMinimizer.minimize(context, protocol.minimize_tolerance, protocol.minimize_iterations)
        minimized, _, xyz = _state(context, positions=True)
    except openmm.OpenMMException as exc:
        raise SamplingError("minimise", str(exc)) from exc
    if not (math.isfinite(minimized) and np.all(np.isfinite(xyz))):
        raise SamplingError("minimise", f"non-finite energy or coordinates after minimisation (E = {minimized})")
    seconds["minimise"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    context.setVelocitiesToTemperature(protocol.temperatures[0] * unit.kelvin, seed)
    frames, records = [], []
    time_ps = 0.0
    for stage, temperature in enumerate(protocol.temperatures):
        integrator.setTemperature(temperature * unit.kelvin)
        for _ in range(protocol.saves_per_stage):
            try:
                integrator.step(protocol.steps_per_save)
                potential, kinetic, xyz = _state(context, positions=True)
            except openmm.OpenMMException as exc:  # "Particle coordinate is NaN"
                raise SamplingError("dynamics", f"at {time_ps:.1f} ps, {temperature:g} K: {exc}") from exc
            time_ps += protocol.save_ps
            if not (math.isfinite(potential) and math.isfinite(kinetic) and np.all(np.isfinite(xyz))):
                raise SamplingError(
                    "dynamics", f"non-finite energy or coordinates at {time_ps:.1f} ps, {temperature:g} K"
                )
            record = {
                "frame": len(frames), "stage": stage, "temperature_k": temperature, "time_ps": round(time_ps, 6),
                "potential_kj_mol": potential, "kinetic_temperature_k": kinetic_temperature(kinetic, system),
            }
            frames.append(np.asarray(xyz, dtype=np.float64) * 10.0)
            records.append(record)
            if on_frame is not None:
                on_frame(record)
    seconds["dynamics"] = time.perf_counter() - t0
    return SamplingResult(
        topology=completed.topology,
        xyz=np.stack(frames).astype(np.float32),
        frames=records,
        minimized_energy_kj_mol=minimized,
        platform=context.getPlatform().getName(),
        n_atoms=completed.topology.getNumAtoms(),
        n_added_heavy=completed.n_added_heavy,
        n_disulfides=completed.n_disulfides,
        seconds=seconds,
    )


def protocol_dict(protocol: SamplingProtocol) -> dict:
    """The protocol as a JSON-ready dict (temperatures as a list).

    Parameters
    ----------
    protocol : SamplingProtocol

    Returns
    -------
    dict
    """
    out = asdict(protocol)
    out["temperatures"] = list(protocol.temperatures)
    return out
