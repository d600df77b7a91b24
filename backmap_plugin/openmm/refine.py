"""Restrained energy minimisation of backmapped structures with OpenMM.

The recipe, built from OpenMM's documented pieces (OpenMM User Guide,
"Running Simulations": force fields incl. ``amber14-all.xml`` with the
``implicit/gbn2.xml`` GBn2 implicit solvent, ``Modeller.addHydrogens``,
``LocalEnergyMinimizer``; PDBFixer's documentation for completing
structures; https://docs.openmm.org/latest/userguide/). The soft-core stage
(2) and the strained-bond check (4) are this package's own additions:

1. *Complete* the heavy-atom structure: PDBFixer adds missing heavy atoms
   (no loops are built), disulfide bonds are made between CYS SG atoms
   closer than 2.5 Angstrom (so amber14 uses CYX), and hydrogens
   are added at pH 7 (``Modeller.addHydrogens``, as PDBFixer's
   ``addMissingHydrogens`` does).
2. *Soft-core stage*: the nonbonded and implicit-solvent terms of amber14
   are replaced by a capped, purely repulsive pair term, and the structure
   is minimised with the bonded terms and the position restraints. Atoms
   that overlap (even exactly on top of each other in the backmapped model)
   are pushed apart without the infinite forces of Lennard-Jones.
3. *Restrained minimisation* with the real potential (amber14 with its
   electrostatics screened by a uniform dielectric of 4 and a 1.2 nm
   cut-off by default, or an implicit solvent: GBn2, OBC2) plus harmonic restraints that hold the
   heavy atoms near their backmapped positions.
4. *Check*: letting atoms pass through each other can thread a bond through
   an aromatic ring or push a C-beta through its residue's N-CA-C plane
   (an L residue made D); a result with a bond stretched beyond
   :data:`BOND_STRAIN_LIMIT` or a C-alpha whose chirality differs from the
   input's is minimised again directly (step 3 from the completed input)
   and the better of the two is kept.

:func:`refine_structure` does this for every model of a PDB/mmCIF file and
writes the refined models (with hydrogens) and a JSON report as it goes;
:class:`Refiner` is the in-memory, frame-by-frame engine it uses.
OpenMM-facing arguments are OpenMM style (camelCase, ``openmm.unit``
quantities or plain numbers in OpenMM's default units); the per-frame report
uses kJ/mol and Angstrom.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from backmap_plugin.core import metrics
from backmap_plugin.core.chemistry import DISULFIDE_CUTOFF, disulfide_pairs
from backmap_plugin.core.errors import BackmapInputError, CutShortWarning
from backmap_plugin.io.atomic import hidden_path, write_json
from backmap_plugin.io.atoms import CutShortNote
from backmap_plugin.io.frames import springs_from_openmm
from backmap_plugin.openmm.platforms import create_context
from backmap_plugin.openmm.structure import (
    AtomTemplate,
    CompletedStructure,
    array_to_positions,
    complete_structure,
    cysteine_sg,
    heavy_atom_bonds,
    large_structure_message,
    positions_to_array,
    residue_label,
)
from backmap_plugin.openmm.systems import (
    RESTRAINT_GROUP,
    add_position_restraints,
    create_system,
    force_field_parts,
    load_force_field,
    soft_core_system,
    template_error,
)

__all__ = ["BOND_STRAIN_LIMIT", "CLASH_CUTOFF", "RefinementResult", "Refiner", "refine_structure",
           "trajectory_disulfides"]

#: Frames of a trajectory that choose its disulfides (:func:`trajectory_disulfides`).
DISULFIDE_FRAMES = 10
#: Heavy-atom clash distance (Angstrom) used in the reports.
CLASH_CUTOFF = 2.0
#: A bond longer or shorter than its amber14 equilibrium length by more than
#: this (nm) after minimisation means a trapped structure (e.g. a bond through
#: an aromatic ring); minimised structures stay within a few hundredths of an
#: Angstrom.
BOND_STRAIN_LIMIT = 0.02


_COUNTER_CLASS = None


def _iteration_counter():
    """A MinimizationReporter that counts L-BFGS iterations (``.iterations``)."""
    global _COUNTER_CLASS
    if _COUNTER_CLASS is None:
        import openmm

        class IterationCounter(openmm.MinimizationReporter):
            def __init__(self):
                super().__init__()
                self.iterations = 0

            def report(self, iteration, x, grad, args):
                self.iterations += 1
                return False

        _COUNTER_CLASS = IterationCounter
    return _COUNTER_CLASS()


def _separate_coincident(xyz: np.ndarray, distance: float = 1e-3) -> np.ndarray:
    """Move atoms that sit on top of another atom (closer than ``distance`` nm) by ``distance``.

    A pair force has no direction at zero distance; a deterministic nudge
    along a fixed axis per atom gives the soft-core stage one.
    """
    from scipy.spatial import cKDTree

    pairs = cKDTree(xyz).query_pairs(distance, output_type="ndarray")
    if len(pairs) == 0:
        return xyz
    out = xyz.copy()
    axes = np.eye(3)
    for i, j in pairs.tolist():
        out[j] += distance * axes[j % 3] * (1 + i % 2)
    return out


def _finite_or_none(value: float):
    return float(value) if math.isfinite(value) else None


# ---------------------------------------------------------------- engine


class Refiner:
    """Frame-by-frame refinement engine (completion, soft core, minimisation).

    Systems and contexts are built for the first frame and reused while the
    completed topology stays the same (protonation variants of the first
    frame are kept for all later frames, so a trajectory gives identical
    atoms in every frame). With ``template`` on, only the first frame of an
    input topology is completed by PDBFixer and ``Modeller.addHydrogens``;
    later frames of the same input atoms get the first frame's added atoms
    (hydrogens, missing heavy atoms) placed by its refined local geometry
    (:class:`~backmap_plugin.openmm.structure.AtomTemplate`), so their
    atoms, disulfides and protonation are those of the first frame.

    Parameters
    ----------
    restraintK : float or openmm.unit.Quantity, optional
        Heavy-atom position restraint constant, kJ/mol/nm^2 (default 1000).
    solvent : {"screened", "gbn2", "obc2", "vacuum"}, optional
        Solvent model with amber14 (:data:`~backmap_plugin.openmm.systems.SOLVENTS`;
        default ``screened``: electrostatics divided by a dielectric of 4).
    tolerance : float or openmm.unit.Quantity, optional
        Minimiser tolerance: RMS force, kJ/mol/nm (default 20: in the
        refinement benchmark, frames minimised to 20 validate like those
        minimised to 10, in 60 % of the time).
    maxIterations : int, optional
        Largest number of L-BFGS iterations of each stage; 0 runs to
        convergence (default 5000).
    platform : str, optional
        ``auto`` (CUDA when present, else CPU), ``CUDA``, ``CPU``,
        ``Reference`` or ``OpenCL``.
    pH : float, optional
        pH for the protonation states (default 7.0).
    softCore : bool, optional
        Run the soft-core clash-removal stage first (default True).
    template : bool, optional
        Place the added atoms of later frames from the first refined frame
        instead of completing every frame anew (default True).

    Attributes
    ----------
    buildCount : int
        Number of times the OpenMM Systems and Contexts were built.
    disulfides : list of tuple of int or None
        Residue indices of the cysteine pairs to bond in every frame; None
        (the default): those whose SG atoms are close in the frame
        completed (:func:`~backmap_plugin.openmm.structure.create_disulfide_bonds`).
        :func:`refine_structure` sets it for a trajectory from its first
        :data:`DISULFIDE_FRAMES` frames.
    """

    def __init__(self, restraintK=1000.0, solvent="screened", tolerance=20.0, maxIterations=5000,
                 platform="auto", pH=7.0, softCore=True, template=True):
        from openmm import unit

        if unit.is_quantity(restraintK):
            restraintK = restraintK.value_in_unit(unit.kilojoule_per_mole / unit.nanometer**2)
        if unit.is_quantity(tolerance):
            tolerance = tolerance.value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        if restraintK < 0:
            raise ValueError(f"restraintK must not be negative, got {restraintK}")
        if tolerance <= 0:
            raise ValueError(f"tolerance must be positive, got {tolerance}")
        if maxIterations < 0:
            raise ValueError(f"maxIterations must be >= 0, got {maxIterations}")
        self.restraintK = float(restraintK)
        self.solvent = solvent
        self.tolerance = float(tolerance)
        self.maxIterations = int(maxIterations)
        self.platform = platform
        self.pH = pH
        self.softCore = softCore
        self.template = template
        self.buildCount = 0
        self._template, self._input_key = None, None
        self.forcefield = load_force_field(solvent)
        self.variants = None
        self.disulfides = None
        self._key = None
        self._contexts = None

    @property
    def platformName(self) -> str | None:
        """Name of the platform in use (None before the first frame)."""
        return None if self._contexts is None else self._contexts["real"].getPlatform().getName()

    def _build(self, completed: CompletedStructure, restrained: np.ndarray) -> None:
        import openmm

        try:
            system = create_system(self.forcefield, completed.topology, self.solvent)
        except Exception as exc:  # "No template found for residue ..."
            raise BackmapInputError("amber14 cannot parametrise the structure: "
                                    f"{template_error(exc, completed.topology)}") from exc
        contexts, forces = {}, {}
        stages = {"real": system}
        if self.softCore:
            stages["soft"] = soft_core_system(system)
        for name, stage in stages.items():
            forces[name] = add_position_restraints(stage, completed.positions, restrained, self.restraintK)
            contexts[name] = create_context(stage, openmm.VerletIntegrator(0.001), self.platform)
        self._contexts, self._restraints, self._restrained = contexts, forces, restrained
        pairs, lengths = springs_from_openmm(system)
        self._bond_table = (pairs, lengths / 10.0)  # nm, as positions in this module
        self._chiral = _chiral_centres(completed.topology)
        self.system = system
        self.buildCount += 1

    def _set_reference(self, positions) -> None:
        xyz = positions_to_array(positions)
        for name, force in self._restraints.items():
            for k, atom in enumerate(self._restrained.tolist()):
                force.setParticleParameters(k, atom, xyz[atom].tolist())
            force.updateParametersInContext(self._contexts[name])

    def _energies(self, positions) -> tuple:
        """(amber14 energy, restraint energy) in kJ/mol at positions (real system)."""
        from openmm import unit

        context = self._contexts["real"]
        context.setPositions(positions)
        groups = {g for g in range(32) if g != RESTRAINT_GROUP}
        energy = context.getState(energy=True, groups=groups).getPotentialEnergy()
        restraint = context.getState(energy=True, groups={RESTRAINT_GROUP}).getPotentialEnergy()
        return energy.value_in_unit(unit.kilojoule_per_mole), restraint.value_in_unit(unit.kilojoule_per_mole)

    def _minimize(self, context, positions):
        import openmm
        from openmm import unit

        context.setPositions(positions)
        counter = _iteration_counter()
        openmm.LocalEnergyMinimizer.minimize(context, self.tolerance, self.maxIterations, counter)
        state = context.getState(positions=True, forces=True)
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        rms = float(np.sqrt(np.mean(np.asarray(forces) ** 2)))
        return state.getPositions(asNumpy=True), counter.iterations, rms

    def _route(self, start, soft: bool) -> dict:
        """Minimise from start (nm array), through the soft-core stage or directly.

        ``inverted`` lists the residues whose C-alpha chirality the
        minimisation changed.
        """
        current = array_to_positions(_separate_coincident(start))
        iterations = {}
        if soft:
            current, iterations["soft_core"], _ = self._minimize(self._contexts["soft"], current)
        current, iterations["minimization"], rms = self._minimize(self._contexts["real"], current)
        xyz = positions_to_array(current)
        finite = bool(np.all(np.isfinite(xyz)))
        energy, restraint = self._energies(current) if finite else (math.nan, math.nan)
        strain = _max_bond_strain(self._bond_table, xyz) if finite else math.inf
        inverted = _inverted_residues(self._chiral, start, xyz) if finite else []
        return {"xyz": xyz, "finite": finite, "energy": energy, "restraint": restraint, "strain": strain,
                "inverted": inverted, "iterations": iterations, "rms_force": rms,
                "route": "soft_core" if soft else "direct"}

    def refine(self, topology, positions):
        """Refine one structure.

        The soft-core route (soft-core stage, then the real potential) is
        taken first; when it leaves a bond stretched by more than
        :data:`BOND_STRAIN_LIMIT` (atoms passed through a ring, say), changes
        the chirality of a C-alpha, or is switched off, the structure is also
        minimised directly with the real potential, and the result with the
        lower energy (amber14 plus restraints) among those without such
        strain or inversion is kept.

        Parameters
        ----------
        topology : openmm.app.Topology
            Heavy-atom (or all-atom) topology; hydrogens are rebuilt.
        positions : openmm.unit.Quantity
            Its positions.

        Returns
        -------
        topology : openmm.app.Topology
            The completed topology (hydrogens included).
        positions : openmm.unit.Quantity
            Refined positions (nm); the completed input positions when the
            minimisation gave non-finite coordinates.
        report : dict
            Figures of this frame (see :func:`refine_structure`).
        """
        t0 = time.perf_counter()
        input_key = tuple((a.residue.name, a.name) for a in topology.atoms())
        if self._template is not None and input_key == self._input_key:
            completed = self._template.complete(positions)
        else:
            completed = complete_structure(topology, positions, pH=self.pH, variants=self.variants,
                                           disulfides=self.disulfides)
        if self.variants is None:
            self.variants = completed.variants
        restrained = np.nonzero(completed.source_index >= 0)[0]
        key = (tuple((a.residue.name, a.name) for a in completed.topology.atoms()), tuple(restrained.tolist()))
        if key != self._key:
            if self._key is not None and self._key[0] != key[0]:
                raise BackmapInputError("frames differ in their atoms after completion; refine them separately")
            self._build(completed, restrained)
            self._key = key
        self._set_reference(completed.positions)
        start = positions_to_array(completed.positions)
        e_before, _ = self._energies(completed.positions)
        routes = [self._route(start, soft=True)] if self.softCore else []
        if not routes or not routes[0]["finite"] or routes[0]["strain"] > BOND_STRAIN_LIMIT or routes[0]["inverted"]:
            routes.append(self._route(start, soft=False))
        best = min(routes, key=_route_rank)
        finite_xyz = best["finite"] and math.isfinite(best["energy"])
        end = best["xyz"] if finite_xyz else start
        heavy, bonds = heavy_atom_bonds(completed.topology)
        clashes_before, clashes_after = metrics.clashes(
            np.stack([start[heavy], end[heavy]]) * 10.0, bonds, cutoff=CLASH_CUTOFF
        ).tolist()
        displacement = np.linalg.norm(end[restrained] - start[restrained], axis=1) * 10.0
        hit_limit = self.maxIterations > 0 and best["iterations"]["minimization"] >= self.maxIterations
        strained = best["strain"] > BOND_STRAIN_LIMIT
        inverted = best["inverted"] if finite_xyz else []
        converged = finite_xyz and clashes_after == 0 and not hit_limit and not strained and not inverted
        report = {
            "energy_before_kj_mol": _finite_or_none(e_before),
            "energy_after_kj_mol": _finite_or_none(best["energy"]),
            "energy_before_finite": math.isfinite(e_before),
            "energy_after_finite": math.isfinite(best["energy"]),
            "restraint_energy_kj_mol": _finite_or_none(best["restraint"]),
            "rmsd_shift_angstrom": float(np.sqrt(np.mean(displacement**2))) if len(displacement) else 0.0,
            "max_shift_angstrom": float(displacement.max()) if len(displacement) else 0.0,
            "clashes_before": int(clashes_before),
            "clashes_after": int(clashes_after),
            "max_bond_strain_angstrom": _finite_or_none(best["strain"] * 10.0),
            "chirality_inverted": inverted,
            "route": best["route"],
            "routes_tried": [r["route"] for r in routes],
            "iterations": best["iterations"],
            "rms_force_kj_mol_nm": _finite_or_none(best["rms_force"]),
            "hit_iteration_limit": bool(hit_limit),
            "converged": bool(converged),
            "n_atoms": completed.topology.getNumAtoms(),
            "n_restrained": int(len(restrained)),
            "added_heavy_atoms": completed.n_added_heavy,
            "disulfides": completed.n_disulfides,
            "disulfides_apart": _disulfides_apart(completed.topology, start),
            "platform": self.platformName,
            "seconds": time.perf_counter() - t0,
        }
        if self.template and self._template is None:
            self._template, self._input_key = AtomTemplate(completed, end, self._bond_table), input_key
        if not finite_xyz:
            report["note"] = "minimisation gave non-finite coordinates; the completed input was written instead"
        return completed.topology, array_to_positions(end), report


def _route_rank(route: dict) -> tuple:
    """Sort key of minimisation results: finite, unstrained, fewest inverted C-alpha atoms, then lowest objective."""
    objective = route["energy"] + route["restraint"]
    usable = route["finite"] and math.isfinite(objective)
    return (not usable, route["strain"] > BOND_STRAIN_LIMIT, len(route["inverted"]), objective if usable else math.inf)


def _chiral_centres(topology) -> tuple[np.ndarray, list]:
    """(4, n) atom indices of N, CA, C and CB of every residue that has all four, and their labels (``A:ILE167``)."""
    columns, labels = [], []
    for residue in topology.residues():
        index = {atom.name: atom.index for atom in residue.atoms()}
        if all(name in index for name in ("N", "CA", "C", "CB")):
            columns.append([index[name] for name in ("N", "CA", "C", "CB")])
            labels.append(residue_label(residue))
    return np.array(columns, dtype=np.int64).reshape(-1, 4).T, labels


def _inverted_residues(centres: tuple[np.ndarray, list], before: np.ndarray, after: np.ndarray) -> list:
    """Labels of the residues whose C-alpha chirality (sign of :func:`metrics.chirality`) differs between two frames."""
    index, labels = centres
    volume = metrics.chirality(np.stack([before, after]), *index)
    changed = volume[0] * volume[1] < 0  # (a side of zero kept, or a residue without CB: not a change)
    return [labels[k] for k in np.nonzero(changed)[0]]


def _max_bond_strain(table, xyz) -> float:
    """Largest |bond length - equilibrium length| (nm)."""
    pairs, lengths = table
    if len(pairs) == 0:
        return 0.0
    return float(np.max(np.abs(np.linalg.norm(xyz[pairs[:, 0]] - xyz[pairs[:, 1]], axis=1) - lengths)))


# ---------------------------------------------------------------- files


@dataclass
class RefinementResult:
    """What :func:`refine_structure` did.

    Attributes
    ----------
    output : str
        Refined structure file.
    report_path : str
        JSON report file.
    frames : list of dict
        Per-frame figures (as in the JSON ``frames`` list).
    seconds : float
        Wall time of the whole refinement: where it continued an interrupted
        run, that run's time up to its last finished frame (from the
        progress record) plus this call's.
    platform : str
        OpenMM platform used.
    resumed_from : int
        First frame refined by this call (0 unless it continued an
        interrupted run; the frames before came from that run).
    seconds_before_resume : float or None
        The interrupted runs' part of :attr:`seconds` (0 for a refinement
        not resumed); None where their record does not hold it (one written
        by an older version), and :attr:`seconds` is then this call's alone.
    notes : list of str
        What the user should know (an input cut short).
    cut_short : str or None
        Where the input ends inside a frame: the message naming the file and
        the frames refined up to it
        (:class:`~backmap_plugin.core.errors.CutShortWarning`); None for an
        input read to its end.
    """

    output: str
    report_path: str
    frames: list = field(default_factory=list)
    seconds: float = 0.0
    platform: str = ""
    resumed_from: int = 0
    seconds_before_resume: float | None = 0.0
    notes: list = field(default_factory=list)
    cut_short: str | None = None

    @property
    def all_converged(self) -> bool:
        """Every frame converged."""
        return all(f["converged"] for f in self.frames)

    def summary(self) -> str:
        """One line for the terminal.

        Returns
        -------
        str
        """
        n = len(self.frames)
        ok = sum(f["converged"] for f in self.frames)
        clashes = sum(f["clashes_after"] for f in self.frames)
        shifts = [f["rmsd_shift_angstrom"] for f in self.frames]
        disulfides = self.frames[0].get("disulfides", 0) if self.frames else 0
        apart = sum(1 for f in self.frames if f.get("disulfides_apart"))
        return (
            f"refined {n} frame(s) on {self.platform}: {ok}/{n} converged, {clashes} heavy-atom clash(es) left, "
            f"{disulfides} disulfide(s)"
            + (f" ({apart} frame(s) had SG atoms of them more than {DISULFIDE_CUTOFF:g} A apart, pulled together)"
               if apart else "")
            + f", RMSD shift max {max(shifts):.2f} A -> {self.output} (report {self.report_path}) in "
            f"{self.seconds:.1f} s" + self._resume_said()
        )

    def _resume_said(self) -> str:
        """What the summary says of a resumed refinement's time."""
        if not self.resumed_from:
            return ""
        if self.seconds_before_resume is None:
            return f" (this run alone: the earlier run's record holds no time); resumed at frame {self.resumed_from}"
        return f" ({self.seconds_before_resume:.1f} s of them before the resume); resumed at frame {self.resumed_from}"


def _disulfides_apart(topology, xyz_nm: np.ndarray) -> int:
    """Disulfide bonds of ``topology`` whose SG atoms lie more than :data:`DISULFIDE_CUTOFF` apart in ``xyz_nm``
    (a later frame given the first frame's bonds)."""
    pairs = [(a.index, b.index) for a, b in topology.bonds() if a.name == "SG" and b.name == "SG"]
    if not pairs:
        return 0
    i, j = np.array(pairs).T
    return int((np.linalg.norm(xyz_nm[i] - xyz_nm[j], axis=-1) * 10.0 > DISULFIDE_CUTOFF).sum())


def _default_report_path(output: str) -> str:
    """``output`` plus ``.json``: outputs that differ by their extension (``refined.pdb``, ``refined.xtc``) get reports
    of their own."""
    return output + ".json"


def _check_outputs(output: str, report: str, input: str, top: str | None) -> None:
    """Fail before any work on outputs that cannot be written (or that are an input, or the report the output);
    existing ones are the progress record's matter (:meth:`~backmap_plugin.io.progress.ProgressRecord.resume_point`)
    and :func:`_check_report`'s."""
    from backmap_plugin.io.paths import check_file_path, check_output_path

    check_output_path(output, True, inputs=(input, top))
    check_file_path(report, "the report", reads={"input": input, "--top": top, "output": output})


def _check_report(report: str, replace: bool) -> None:
    """An existing report is replaced only with ``replace`` (a report given twice, ``--report``)."""
    if os.path.exists(report) and not replace:
        raise BackmapInputError(f"{report}: the report file exists; pass overwrite=True to replace it, or another "
                                "report path (--report)")


def refine_structure(input, output, restraintK=1000.0, maxIterations=5000, tolerance=20.0, platform="auto",
                     solvent="screened", pH=7.0, softCore=True, report=None, progress=True,
                     template=True, overwrite=True, top=None, resume=False) -> RefinementResult:
    """Refine every frame of a backmapped structure or trajectory file with OpenMM.

    Each frame is completed (missing heavy atoms, disulfides, hydrogens),
    relieved by the soft-core stage and minimised with amber14 + implicit
    solvent under heavy-atom position restraints (see the module notes).
    Frames are read one at a time
    (:func:`~backmap_plugin.openmm.frames.open_structure`) and written as
    they finish (to a ``.partial`` file moved into place at the end), with
    a progress record (:mod:`backmap_plugin.io.progress`) and the JSON
    report rewritten after each, so an interrupted run keeps every finished
    frame and ``resume=True`` continues it. A frame that does not converge
    is reported (``converged: false``) and written anyway.

    Parameters
    ----------
    input : str or os.PathLike
        Heavy-atom PDB or mmCIF (optionally gzipped) or ``.h5``, one or more
        frames; or a trajectory (``.xtc``, ``.dcd``, ``.trr``, ``.nc``)
        with ``top``.
    output : str or os.PathLike
        Refined structure with hydrogens: ``.pdb`` (multi-model when the
        input has several), ``.cif``, ``.dcd``, ``.xtc`` or ``.h5``.
    restraintK : float or openmm.unit.Quantity, optional
        Heavy-atom restraint constant, kJ/mol/nm^2 (default 1000).
    maxIterations : int, optional
        Iteration limit of each minimisation stage; 0 for no limit.
    tolerance : float or openmm.unit.Quantity, optional
        RMS force at which minimisation stops, kJ/mol/nm (default 20).
    platform : str, optional
        ``auto`` (CUDA when present, else CPU), ``CUDA``, ``CPU``,
        ``Reference`` or ``OpenCL``.
    solvent : {"screened", "gbn2", "obc2", "vacuum"}, optional
        Solvent model with amber14 (default ``screened``, see :class:`Refiner`).
    pH : float, optional
        pH for protonation states (default 7.0).
    softCore : bool, optional
        Run the soft-core clash-removal stage (default True).
    report : str, optional
        JSON report path; default: ``output`` plus ``.json``
        (``refined.pdb.json``). Written with the output, at the end; the frames
        done so far are reported in a hidden ``.<report>.partial.json``
        next to it (kept if the run stops).
    progress : bool, optional
        Progress bar on stderr.
    template : bool, optional
        Complete the first model only (PDBFixer, hydrogens) and place the
        added atoms of the later models from the refined first one
        (default True); False completes every model anew.
    overwrite : bool, optional
        Replace an existing output, or start an unfinished run over (default
        True, like mdtraj's ``save``; the ``backmap refine`` command refuses
        unless given ``--overwrite``).
    top : str or os.PathLike, optional
        Topology of a trajectory ``input``: a PDB / mmCIF file (its first
        model) or an ``.h5`` file with the same atoms in the same order.
    resume : bool, optional
        Continue an interrupted run of the same output with the same input
        and settings: the finished frames are kept, the first frame is
        refined again (not written) for its protonation states and the
        template of the later frames, and the run goes on after the last
        finished one. The frames after it match an uninterrupted run's up
        to the minimiser's floating-point summation order on multi-threaded
        platforms. With ``overwrite`` too: continue where the settings
        match, else start over; without it an unfinished run is refused
        unless ``resume``. The report's ``seconds`` cover the whole
        refinement: the interrupted run's time up to its last finished frame
        (kept in the progress record) plus this call's, the first part also
        given as ``seconds_before_resume``.

    Returns
    -------
    RefinementResult

    Raises
    ------
    BackmapInputError
        Unreadable input, unwritable output, or a structure amber14 cannot
        parametrise.

    Warns
    -----
    CutShortWarning
        The input ends inside a frame: its whole frames are refined and the
        output and report written before the warning
        (:attr:`RefinementResult.cut_short`, the report's ``cut_short``).

    Notes
    -----
    Per-frame JSON fields: ``frame``, ``energy_before_kj_mol`` and
    ``energy_after_kj_mol`` (amber14 + solvent, restraints excluded; null
    when not finite) with ``energy_*_finite``, ``restraint_energy_kj_mol``,
    ``rmsd_shift_angstrom`` and ``max_shift_angstrom`` (input heavy atoms,
    no superposition), ``clashes_before`` / ``clashes_after`` (heavy atoms
    closer than 2.0 Angstrom and more than 3 bonds apart,
    :func:`backmap_plugin.core.metrics.clashes`), ``iterations`` per stage,
    ``max_bond_strain_angstrom`` (largest deviation of a bond from its
    amber14 length), ``chirality_inverted`` (residues whose C-alpha
    chirality the minimisation changed, e.g. ``A:ILE167``), ``route``
    (``soft_core`` or ``direct``) and ``routes_tried``,
    ``rms_force_kj_mol_nm``, ``hit_iteration_limit``, ``converged`` (finite
    energy, no heavy-atom clash left, no bond strained beyond
    :data:`BOND_STRAIN_LIMIT`, no chirality inverted and the minimiser
    stopped before the iteration limit), atom counts, ``added_heavy_atoms``, ``disulfides``,
    ``platform`` and ``seconds``; the report's own ``seconds`` are those of the whole refinement
    (:attr:`RefinementResult.seconds`), with ``resumed_from`` and ``seconds_before_resume``. The energy before refinement includes the
    freshly built, unminimised hydrogens, so it is often very large.
    """
    from backmap_plugin import __version__
    from backmap_plugin.io.lock import OutputLock
    from backmap_plugin.io.paths import file_digest
    from backmap_plugin.io.progress import ProgressRecord, input_fingerprint
    from backmap_plugin.openmm.frames import open_structure

    t0 = time.perf_counter()
    input, output = os.fspath(input), os.fspath(output)
    top = None if top is None else os.fspath(top)
    report = _default_report_path(output) if report is None else os.fspath(report)
    refiner = Refiner(restraintK=restraintK, solvent=solvent, tolerance=tolerance, maxIterations=maxIterations,
                      platform=platform, pH=pH, softCore=softCore, template=template)
    source = open_structure(input, top)
    if len(source) > 1:
        refiner.disulfides = trajectory_disulfides(source)
    payload = {
        "input": input,
        "input_sha256": file_digest(input),
        "output": output,
        "settings": {
            "force_field": force_field_parts(solvent),
            "restraint_k_kj_mol_nm2": refiner.restraintK,
            "tolerance_kj_mol_nm": refiner.tolerance,
            "max_iterations": refiner.maxIterations,
            "soft_core": softCore,
            "template": template,
            "pH": pH,
            "clash_cutoff_angstrom": CLASH_CUTOFF,
        },
        "frames": [],
    }
    if top is not None:
        payload["top"] = top
    record = ProgressRecord(output, {"input": input_fingerprint(input), "top": input_fingerprint(top),
                                     "report": os.path.abspath(report), "platform": platform,
                                     **payload["settings"], "version": __version__})
    _check_outputs(output, report, input, top)
    with OutputLock(output, who="backmap refine"):  # one refinement per output: two replaced each other's frames
        saved = record.resume_point(overwrite, resume)
        _check_report(report, overwrite or saved is not None)  # (resuming a run that was to replace them)
        return _refine_frames(source, refiner, output, report, payload, record, saved, overwrite, progress, t0)


def _refine_frames(source, refiner: Refiner, output: str, report: str, payload: dict, record, saved: dict | None,
                   overwrite: bool, progress: bool, t0: float) -> RefinementResult:
    """The frame loop of :func:`refine_structure`: refine, write and record each frame (resuming ``saved``)."""
    import json

    from tqdm import tqdm

    from backmap_plugin.io.chains import topology_from_openmm

    # the report of the frames so far goes beside the partial output; the report itself is written with the output
    # (an interrupted run with overwrite left the old output beside a new, partial report)
    partial_report = hidden_path(report, ".partial.json")
    earlier = []
    if saved is not None:
        try:
            with open(partial_report, encoding="utf-8") as handle:
                earlier = json.load(handle)["frames"][: saved["frames_done"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if not overwrite:
                raise BackmapInputError(f"{output}: cannot resume: the report of the frames done, {partial_report}, "
                                        f"is unreadable ({exc}); start over with overwrite=True") from exc
            record.remove()
            saved = None
    writer, done, before = None, 0, 0.0
    result = RefinementResult(output=output, report_path=report)
    bar = tqdm(total=len(source), unit="frame", desc="refine", file=sys.stderr, disable=not progress)
    large = large_structure_message(source.topology.getNumResidues(), "refine", "the first frame")
    if progress and large:
        bar.write(large, file=sys.stderr)
    try:
        for index, (positions, box, when) in enumerate(source):
            if index < done:  # kept from the run resumed
                bar.update(1)
                continue
            new_top, refined, frame_report = refiner.refine(source.topology, positions)
            if writer is None:
                writer, done = _open_writer(output, topology_from_openmm(new_top), saved, overwrite, record)
                before = _seconds_before(saved, done)
                payload["frames"] = earlier[:done]
                if done:  # the first frame, refined again for its protonation states and template, is kept
                    bar.update(1)
                    continue
            box = None if box is None else positions_to_array(box)[None] * 10.0
            writer.write(positions_to_array(refined)[None] * 10.0, box=box, time=None if when is None else [when])
            payload["frames"].append({"frame": index, **frame_report})
            payload["platform"] = refiner.platformName
            write_json(partial_report, payload)
            record.save(index + 1, writer.frames_written, writer.state(), {"seconds": _seconds_so_far(before, t0)})
            bar.update(1)
    except BaseException:
        if writer is not None:
            writer.__exit__(*sys.exc_info())
        raise
    finally:
        bar.close()
    if writer is None:
        raise BackmapInputError(f"{source.path}: no frames to refine")
    result.notes += source.read_notes("refined") + writer.notes
    if result.notes:
        payload["notes"] = result.notes
    cut = next((note for note in result.notes if isinstance(note, CutShortNote)), None)
    if cut is not None:
        result.cut_short = payload["cut_short"] = f"{cut}; {output} holds the {len(payload['frames'])} frame(s) refined"
    writer.close()
    record.remove()
    result.frames = payload["frames"]
    result.platform = refiner.platformName or ""
    result.resumed_from = done
    result.seconds = (before or 0.0) + time.perf_counter() - t0
    result.seconds_before_resume = before
    payload["seconds"] = result.seconds
    payload["resumed_from"] = done
    payload["seconds_before_resume"] = before
    payload["all_converged"] = result.all_converged
    write_json(report, payload)
    os.remove(partial_report)
    if result.cut_short:
        warnings.warn(result.cut_short, CutShortWarning, stacklevel=3)
    return result


def _seconds_before(saved: dict | None, done: int) -> float | None:
    """Seconds the interrupted runs spent up to their last finished frame, from their progress record (``saved``):
    0 where none of their frames is kept (``done``), None where the record does not say."""
    if not done:
        return 0.0
    seconds = ((saved or {}).get("tallies") or {}).get("seconds")
    return None if seconds is None else float(seconds)


def _seconds_so_far(before: float | None, t0: float) -> float | None:
    """The whole refinement's seconds: the interrupted runs' (``before``; None: unknown) and this call's since
    ``t0``."""
    return None if before is None else before + time.perf_counter() - t0


def trajectory_disulfides(source) -> list:
    """The disulfides of a trajectory: cysteine pairs whose SG atoms are bonded in at least half of its first
    :data:`DISULFIDE_FRAMES` frames (:func:`~backmap_plugin.core.chemistry.disulfide_pairs`).

    The first frame completes the others (:class:`Refiner`'s template), so its
    own distances alone decided: a disulfide whose SG atoms were apart in it
    (a backmapped frame where they could not meet) was left free in every
    frame, its cysteines pushed apart where the frames had them bonded.

    Parameters
    ----------
    source : StructureFrames
        From :func:`~backmap_plugin.openmm.frames.open_structure`.

    Returns
    -------
    list of tuple of int
        Residue indices of the bonded pairs (``Refiner.disulfides``).
    """
    sg = cysteine_sg(source.topology)
    if len(sg) < 2:
        return []
    frames = [positions_to_array(positions)[sg] * 10.0
              for positions, _, _ in itertools.islice(source, DISULFIDE_FRAMES)]
    atoms = list(source.topology.atoms())
    residues = [atoms[index].residue.index for index in sg]
    return [(residues[i], residues[j]) for i, j in disulfide_pairs(np.stack(frames))]


def _open_writer(output: str, topology, saved: dict | None, overwrite: bool, record):
    """``(writer, frames kept)`` of a refinement's output: new, or continuing the partial file of ``saved``.

    A partial file that cannot be continued is refused, or started over
    with ``overwrite``.
    """
    from backmap_plugin.io.trajectory import TrajectoryWriter

    if saved is not None:
        try:
            writer = TrajectoryWriter(output, topology, resume=saved["writer"])
            return writer, writer.frames_written
        except BackmapInputError:
            if not overwrite:
                raise
            record.remove()
    return TrajectoryWriter(output, topology), 0
