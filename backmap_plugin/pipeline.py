"""One system through the whole pipeline: backmap, refine, validate, report.

:func:`run_pipeline` calls the package's functions in order and writes
every result into one run directory under fixed names (:data:`RUN_FILES`),
the same layout the Snakemake workflow (``workflows/Snakefile``) produces
with the ``backmap`` command, so ``backmap report RUN_DIR`` reads either.

* ``backmapped.pdb`` and ``backmap.json``: :func:`backmap_plugin.api.backmap`
  and its run summary (what ``backmap run --json`` writes);
* ``refined.pdb`` and ``refined.json``:
  :func:`backmap_plugin.openmm.refine_structure` and its report;
* ``validate_backmapped.json`` and ``validate_refined.json``:
  :func:`backmap_plugin.openmm.validate_structure` of the two structures
  (what ``backmap validate -o`` writes);
* ``report.html`` and ``summary.json``: :func:`backmap_plugin.report.write_report`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

from backmap_plugin.core.bead_fit import describe
from backmap_plugin.core.errors import BackmapInputError

__all__ = ["RUN_FILES", "PipelineResult", "run_pipeline"]

#: File names inside a run directory, by step output.
RUN_FILES = {
    "backmapped": "backmapped.pdb",
    "backmap_json": "backmap.json",
    "refined": "refined.pdb",
    "refined_json": "refined.json",
    "validate_backmapped": "validate_backmapped.json",
    "validate_refined": "validate_refined.json",
    "report": "report.html",
    "summary": "summary.json",
}


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` did.

    Attributes
    ----------
    run_dir : str
        The run directory.
    files : dict
        Written files by key of :data:`RUN_FILES` (only those written).
    backmap : BackmapResult
        Result of the backmapping step.
    refine : RefinementResult or None
        Result of the refinement (None when not refined).
    validation : dict
        :class:`~backmap_plugin.openmm.ValidationResult` by structure
        (``backmapped``, ``refined``); empty when not validated.
    skipped : list of str
        One line per step that did not run, with the reason.
    seconds : float
        Wall time of the whole pipeline.
    """

    run_dir: str
    files: dict = field(default_factory=dict)
    backmap: object = None
    refine: object = None
    validation: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """A few lines for the terminal: one per step, then the skipped steps.

        Returns
        -------
        str
        """
        lines = [self.backmap.summary()]
        if self.backmap.bead_rmsd:
            lines.append(describe(self.backmap.bead_rmsd))
        if self.refine is not None:
            lines.append(self.refine.summary())
        for name, result in self.validation.items():
            verdict = "PASS" if result.passed else f"FAIL ({len(result.failures)} failing check(s))"
            lines.append(f"validated {name}: {len(result.frames)} frame(s): {verdict} -> "
                         f"{self.files['validate_' + name]}")
        if "report" in self.files:
            lines.append(f"report -> {self.files['report']}")
        lines.extend(f"skipped: {line}" for line in self.skipped)
        lines.append(f"pipeline finished in {self.seconds:.1f} s -> {self.run_dir}")
        return "\n".join(lines)


def _prepare_run_dir(run_dir: str, overwrite: bool) -> None:
    """Create the run directory; refuse a non-empty one unless ``overwrite``.

    With ``overwrite`` the files of an earlier run (:data:`RUN_FILES`) are
    removed first, so no result of an earlier run is mistaken for one of
    this run; other files are left alone.
    """
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise BackmapInputError(f"{run_dir}: run directory path exists and is not a directory")
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        if not overwrite:
            raise BackmapInputError(
                f"{run_dir}: run directory is not empty; choose a new one or pass overwrite=True"
            )
        for name in RUN_FILES.values():
            path = os.path.join(run_dir, name)
            if os.path.isfile(path):
                os.remove(path)
    os.makedirs(run_dir, exist_ok=True)


def _check_options(samples: int, stride: int, refine_steps: int, solvent: str, platform: str | None) -> None:
    """Reject bad values before any work is done (``platform`` None: OpenMM is not used)."""
    from backmap_plugin.openmm.systems import SOLVENTS

    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    if refine_steps < 0:
        raise ValueError(f"refine_steps must be >= 0, got {refine_steps}")
    if solvent not in SOLVENTS:
        raise ValueError(f"unknown solvent '{solvent}'; known: {', '.join(SOLVENTS)}")
    if platform is not None:
        from backmap_plugin.openmm.platforms import select_platform

        select_platform(platform)  # an OpenMM platform that is not there


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"pipeline: {message}", file=sys.stderr)


def run_pipeline(
    input,
    run_dir,
    top=None,
    samples: int = 1,
    stride: int = 1,
    seed: int = 0,
    mapping: str = "auto",
    method: str | None = None,
    temperature: float | None = None,
    device: str = "auto",
    refine: bool = True,
    validate: bool = True,
    report: bool = True,
    overwrite: bool = False,
    platform: str = "auto",
    solvent: str = "screened",
    refine_steps: int = 5000,
    tolerance: float = 20.0,
    restraint_k: float = 1000.0,
    progress: bool = True,
) -> PipelineResult:
    """Backmap one system, refine, validate and report, into one run directory.

    Steps, in order (files named as in :data:`RUN_FILES`):

    1. :func:`~backmap_plugin.api.backmap` writes ``backmapped.pdb`` (all
       frames x samples, one model each) and ``backmap.json``;
    2. :func:`~backmap_plugin.openmm.refine_structure` writes
       ``refined.pdb`` (hydrogens added, restrained amber14 minimisation)
       and ``refined.json``;
    3. :func:`~backmap_plugin.openmm.validate_structure` writes
       ``validate_backmapped.json`` and ``validate_refined.json`` (failing
       checks are reported, they do not stop the pipeline);
    4. :func:`backmap_plugin.report.write_report` writes ``report.html``
       and ``summary.json`` (needs matplotlib).

    Parameters
    ----------
    input : str or os.PathLike
        CG structure or trajectory (any format :func:`~backmap_plugin.api.backmap` reads).
    run_dir : str or os.PathLike
        Directory for every output; created if missing. A non-empty
        directory is refused unless ``overwrite``.
    top : str or os.PathLike, optional
        Topology for trajectory formats without one (DCD, XTC ...).
    samples, stride, seed, mapping, method, temperature, device
        As in :func:`~backmap_plugin.api.backmap`.
    refine : bool, optional
        Run the refinement (and validate its result).
    validate : bool, optional
        Validate the backmapped (and refined) structures.
    report : bool, optional
        Write the HTML report and summary (needs matplotlib; without it the
        step is skipped with a warning).
    overwrite : bool, optional
        Reuse a non-empty run directory: the files of an earlier run are
        removed first, other files are kept.
    platform : str, optional
        OpenMM platform for refinement and validation energies: ``auto``
        (CUDA when present, else CPU), ``CUDA``, ``CPU``, ``Reference``,
        ``OpenCL``.
    solvent : {"screened", "gbn2", "obc2", "vacuum"}, optional
        Solvent model with amber14, for refinement and validation energies
        (:data:`backmap_plugin.openmm.systems.SOLVENTS`).
    refine_steps : int, optional
        Largest number of minimiser iterations per refinement stage; 0 for
        no limit.
    tolerance : float, optional
        Minimiser tolerance, RMS force in kJ/mol/nm.
    restraint_k : float, optional
        Heavy-atom restraint constant during refinement, kJ/mol/nm^2.
    progress : bool, optional
        Progress bars and one line per step on stderr.

    Returns
    -------
    PipelineResult

    Raises
    ------
    BackmapInputError
        Bad input, a non-empty run directory without ``overwrite``, or a
        structure that cannot be refined; the message names the file.
    ValueError
        Bad option values (checked before any work).

    Warns
    -----
    UserWarning
        When a requested step cannot run (the report without matplotlib);
        the reason is also in :attr:`PipelineResult.skipped`.
    """
    from backmap_plugin.api import backmap
    from backmap_plugin.io.atomic import write_json

    t0 = time.perf_counter()
    _check_options(samples, stride, refine_steps, solvent, platform if refine or validate else None)
    run_dir = os.fspath(run_dir)
    _prepare_run_dir(run_dir, overwrite)
    paths = {key: os.path.join(run_dir, name) for key, name in RUN_FILES.items()}
    result = PipelineResult(run_dir=run_dir)
    if not refine:
        result.skipped.append("refine: not requested")
    if not validate:
        result.skipped.append("validate: not requested")
    if not report:
        result.skipped.append("report: not requested")
    elif importlib.util.find_spec("matplotlib") is None:
        report = False
        line = "report: matplotlib is not installed (pip install backmap_plugin[report])"
        result.skipped.append(line)
        warnings.warn(f"{run_dir}: {line}", stacklevel=2)

    _say(progress, f"backmap {os.fspath(input)} -> {paths['backmapped']}")
    result.backmap = backmap(input, paths["backmapped"], top=top, mapping=mapping, method=method, samples=samples,
                             seed=seed, device=device, stride=stride, progress=progress, temperature=temperature,
                             overwrite=overwrite)
    write_json(paths["backmap_json"], result.backmap.to_dict())
    result.files.update(backmapped=paths["backmapped"], backmap_json=paths["backmap_json"])

    structures = {"backmapped": paths["backmapped"]}
    if refine:
        from backmap_plugin.openmm.refine import refine_structure

        _say(progress, f"refine -> {paths['refined']}")
        result.refine = refine_structure(paths["backmapped"], paths["refined"], restraintK=restraint_k,
                                         maxIterations=refine_steps, tolerance=tolerance, platform=platform,
                                         solvent=solvent, report=paths["refined_json"], progress=progress)
        result.files.update(refined=paths["refined"], refined_json=paths["refined_json"])
        structures["refined"] = paths["refined"]

    if validate:
        from backmap_plugin.openmm.validate import validate_structure

        for name, path in structures.items():
            key = f"validate_{name}"
            _say(progress, f"validate {path} -> {paths[key]}")
            checked = validate_structure(path, solvent=solvent, platform=platform)
            write_json(paths[key], checked.to_dict())
            result.validation[name] = checked
            result.files[key] = paths[key]

    if report:
        from backmap_plugin.report import write_report

        _say(progress, f"report -> {paths['report']}")
        write_report(run_dir, paths["report"])
        result.files.update(report=paths["report"], summary=paths["summary"])

    result.seconds = time.perf_counter() - t0
    return result
