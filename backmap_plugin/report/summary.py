"""Reading a pipeline run directory into a summary, and writing summary.json.

A run directory holds the files the pipeline writes for one system (all
names fixed, :data:`FILES`):

* ``backmapped.pdb`` - heavy-atom structures, frame-major (frame 0 samples
  0..S-1, then frame 1 ...), and ``backmap.json`` - what ``backmap run
  --json`` wrote (``n_frames``, ``n_samples``, ``seconds``, ``method`` ...).
  Both are required.
* ``refined.pdb`` and ``refined.json`` - ``backmap refine`` and its report.
* ``validate_backmapped.json`` and ``validate_refined.json`` - ``backmap
  validate --json`` of the two structures.

The optional files may be missing (a run without refinement); their
sections of the summary are then None.

:func:`summarize` reads the files and returns a JSON-ready summary,
:func:`write_summary` writes it to ``RUN_DIR/summary.json`` and
:func:`summary_line` makes one line of it for the terminal.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.io.paths import file_digest
from backmap_plugin.report.ensemble import Ensemble, load_ensemble
from backmap_plugin.report.numeric import frame_diversity

#: File names of a run directory, by role.
FILES = {
    "backmapped_pdb": "backmapped.pdb",
    "backmap_json": "backmap.json",
    "refined_pdb": "refined.pdb",
    "refined_json": "refined.json",
    "validate_backmapped_json": "validate_backmapped.json",
    "validate_refined_json": "validate_refined.json",
}
#: The file each report of a run directory was made from (its ``input_sha256``).
MADE_FROM = {
    "refined_json": "backmapped_pdb",
    "validate_backmapped_json": "backmapped_pdb",
    "validate_refined_json": "refined_pdb",
}
#: Name of the summary written into the run directory.
SUMMARY_NAME = "summary.json"
#: Version tag of the summary layout.
SUMMARY_FORMAT = "backmap_plugin.report/1"
_DIVERSITY_NOTE = (
    "Mean pairwise heavy-atom RMSD between the samples of each frame, without superposition: "
    "all samples of a frame are built on the same coarse-grained frame, so they share one frame of reference."
)
#: Validation columns of the table: (title, key in the validate JSON frames, format).
VALIDATION_COLUMNS = (
    ("energy (kJ/mol)", "energy_kj_mol", "{:.1f}"),
    ("heavy clashes", "heavy_clashes", "{}"),
    ("clash\u00adscore", "clashscore", "{:.1f}"),
    ("bonds > 4 sd", "bond_outliers", "{}"),
    ("angles > 4 sd", "angle_outliers", "{}"),
    ("cis non-Pro", "cis_non_pro", "{}"),
    ("twisted pep\u00adtides", "twisted_peptides", "{}"),
    ("D-residues", "d_residues", "{}"),
    ("Rama. favoured %", "ramachandran_favoured_pct", "{:.1f}"),
    ("Rama. outliers", "ramachandran_outliers", "{}"),
    ("rotamer outliers %", "rotamer_outliers_pct", "{:.1f}"),
    ("C\u03b2 dev. > 0.25 \u00c5", "cbeta_deviations", "{}"),
    ("missing atoms", "missing_atoms", "{}"),
)
#: Keys of :data:`VALIDATION_COLUMNS` that hold floats (NaN read as None).
_FLOAT_KEYS = ("energy_kj_mol", "clashscore", "ramachandran_favoured_pct", "rotamer_outliers_pct")


#: Settings of ``backmap run`` read from backmap.json into the summary's ``backmap`` entry
#: (None where the file does not record one; ``model``, ``device`` and ``version`` are read when present).
BACKMAP_SETTINGS = ("input", "top", "stride", "mapping", "method", "model", "seed", "temperature", "device",
                    "version")


def _path(run_dir: str, role: str) -> str:
    return os.path.join(run_dir, FILES[role])


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise BackmapInputError(f"{path}: not valid JSON: {exc}") from exc
    except OSError as exc:
        raise BackmapInputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not isinstance(data, dict):
        raise BackmapInputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _frames_list(data: dict, path: str) -> list:
    frames = data.get("frames")
    if not isinstance(frames, list) or not all(isinstance(f, dict) for f in frames):
        raise BackmapInputError(f"{path}: no 'frames' list of per-structure objects")
    return frames


def _positive_int(data: dict, key: str, path: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BackmapInputError(f"{path}: '{key}' must be a positive integer, got {value!r}")
    return value


def _number(value):
    """A finite float, or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _model_index(model: int, n_samples: int) -> dict:
    return {"model": model, "frame": model // n_samples, "sample": model % n_samples}


def _refinement(data: dict, path: str, n_samples: int, n_models: int) -> dict:
    """Per-structure figures of a refine report."""
    frames = _frames_list(data, path)
    models = []
    for k, f in enumerate(frames):
        models.append({
            **_model_index(int(f.get("frame", k)), n_samples),
            "clashes_before": f.get("clashes_before"),
            "clashes_after": f.get("clashes_after"),
            "energy_before_kj_mol": _number(f.get("energy_before_kj_mol")),
            "energy_after_kj_mol": _number(f.get("energy_after_kj_mol")),
            "rmsd_shift_angstrom": _number(f.get("rmsd_shift_angstrom")),
            "converged": bool(f.get("converged", False)),
        })
    notes = []
    if len(models) != n_models:
        notes.append(f"{FILES['refined_json']} covers {len(models)} of {n_models} structure(s)")
    return {
        "n_models": len(models),
        "n_converged": sum(m["converged"] for m in models),
        "clashes_before_total": sum(m["clashes_before"] or 0 for m in models),
        "clashes_after_total": sum(m["clashes_after"] or 0 for m in models),
        "platform": data.get("platform"),
        "settings": data.get("settings", {}),
        "seconds": _number(data.get("seconds")),
        "notes": notes,
        "models": models,
    }


def _failed_checks(data: dict, frame: dict) -> list:
    """Names of the failing checks of one structure (the verdict of ``backmap validate``)."""
    from backmap_plugin.openmm.validate import ValidationResult

    names = []
    for line in ValidationResult(input=str(data.get("input", "")), frames=[frame]).failures:
        name = line.split(": ")[1].split(" (")[0]  # "frame 3: heavy clashes: 2" -> "heavy clashes"
        if name not in names:
            names.append(name)
    return names


def _validation(data: dict, path: str, n_samples: int, n_models: int) -> dict:
    """Pass/fail counts, failing checks and per-structure rows of a validate report."""
    frames = _frames_list(data, path)
    models, failing = [], {}
    for k, f in enumerate(frames):
        try:
            failed = _failed_checks(data, f)
        except KeyError as exc:
            raise BackmapInputError(f"{path}: structure {k} lacks the field {exc}") from exc
        for name in failed:
            failing[name] = failing.get(name, 0) + 1
        row = {**_model_index(int(f.get("frame", k)), n_samples), "passed": not failed, "failed": failed}
        for _, key, _ in VALIDATION_COLUMNS:
            row[key] = _number(f.get(key)) if key in _FLOAT_KEYS else f.get(key)
        models.append(row)
    notes = []
    if len(models) != n_models:
        notes.append(f"{os.path.basename(path)} covers {len(models)} of {n_models} structure(s)")
    n_passed = sum(m["passed"] for m in models)
    return {
        "n_models": len(models),
        "n_passed": n_passed,
        "n_failed": len(models) - n_passed,
        "passed": n_passed == len(models),
        "failing_checks": dict(sorted(failing.items())),
        "settings": data.get("settings", {}),
        "seconds": _number(data.get("seconds")),
        "notes": notes,
        "models": models,
    }


def _diversity(ensemble: Ensemble, n_frames: int, n_samples: int) -> dict:
    if n_samples < 2:
        return {"n_samples": n_samples, "per_frame_rmsd_angstrom": None, "mean_rmsd_angstrom": None,
                "max_rmsd_angstrom": None,
                "note": "One sample per frame: there is no diversity between samples to measure."}
    samples = ensemble.xyz.reshape(n_frames, n_samples, -1, 3)
    per_frame = frame_diversity(samples, mask=ensemble.heavy)
    return {"n_samples": n_samples, "per_frame_rmsd_angstrom": [float(x) for x in per_frame],
            "mean_rmsd_angstrom": float(per_frame.mean()), "max_rmsd_angstrom": float(per_frame.max()),
            "note": _DIVERSITY_NOTE}


def _current(files: dict, role: str, notes: list, stale: set, digests: dict) -> dict | None:
    """The report of ``role``, or None where it is missing or was made from another file than the one now under
    its input's name (``input_sha256``; a run done again into the directory, a refinement stopped), said in
    ``notes``; ``stale`` collects the files of an earlier run (refined.pdb with its refined.json), ``digests``
    the files' SHA-256 (each file read once)."""
    path = files[role]
    if path is None:
        return None
    data = _read_json(path)
    made_from = MADE_FROM[role]
    recorded = data.get("input_sha256")
    if files[made_from] is None:
        notes.append(f"{FILES[role]} is left out: it was made from {FILES[made_from]}, which is missing")
    elif made_from in stale or recorded is not None and recorded != _digest(files[made_from], digests):
        notes.append(f"{FILES[role]} is left out: it was made from another {FILES[made_from]} than the one there now "
                     "(an earlier run)")
        if role == "refined_json":
            stale.add("refined_pdb")
    else:
        return data
    return None


def _digest(path: str, digests: dict) -> str:
    """SHA-256 of the file ``path``, read once (``digests`` keeps them)."""
    if path not in digests:
        digests[path] = file_digest(path)
    return digests[path]


def run_directory(run_dir) -> str:
    """The absolute path of an existing run directory.

    Raises
    ------
    BackmapInputError
        It does not exist.
    """
    run_dir = os.path.abspath(os.fspath(run_dir))
    if not os.path.isdir(run_dir):
        raise BackmapInputError(f"{run_dir}: run directory not found")
    return run_dir


def collect(run_dir) -> tuple:
    """Summary and structures of a run directory: :func:`summarize` and the ensemble it read.

    Returns
    -------
    summary : dict
        As :func:`summarize` (parameters and errors as there too).
    ensemble : Ensemble
        ``backmapped.pdb`` read by :func:`~.ensemble.load_ensemble`; the
        HTML page plots its angles.
    """
    run_dir = run_directory(run_dir)
    for role in ("backmapped_pdb", "backmap_json"):
        if not os.path.isfile(_path(run_dir, role)):
            raise BackmapInputError(f"{run_dir}: required file {FILES[role]} is missing")
    json_path = _path(run_dir, "backmap_json")
    info = _read_json(json_path)
    n_frames = _positive_int(info, "n_frames", json_path)
    n_samples = _positive_int(info, "n_samples", json_path)
    pdb_path = _path(run_dir, "backmapped_pdb")
    ensemble = load_ensemble(pdb_path)
    n_models = len(ensemble.xyz)
    if n_models != n_frames * n_samples:
        raise BackmapInputError(
            f"{pdb_path}: {n_models} model(s), but {json_path} gives {n_frames} frame(s) x {n_samples} sample(s)")
    files = {role: (_path(run_dir, role) if os.path.isfile(_path(run_dir, role)) else None) for role in FILES}
    notes, stale, digests = [], set(), {}
    reports = {role: _current(files, role, notes, stale, digests) for role in MADE_FROM}
    refinement = None
    if reports["refined_json"] is not None:
        refinement = _refinement(reports["refined_json"], files["refined_json"], n_samples, n_models)
    validation = {}
    for which in ("backmapped", "refined"):
        data, path = reports[f"validate_{which}_json"], files[f"validate_{which}_json"]
        validation[which] = None if data is None else _validation(data, path, n_samples, n_models)
    summary = {
        "format": SUMMARY_FORMAT,
        "system": os.path.basename(run_dir),
        "run_dir": run_dir,
        "files": files,
        "notes": notes,
        "n_frames": n_frames,
        "n_samples": n_samples,
        "n_models": n_models,
        "n_residues": info.get("n_residues"),
        "n_chains": info.get("n_chains"),
        "n_segments": info.get("n_segments"),
        "n_atoms": info.get("n_atoms", int(ensemble.xyz.shape[1])),
        "backmap": {key: info.get(key) for key in BACKMAP_SETTINGS + ("report",)},
        "timings_seconds": {
            "backmap": _number(info.get("seconds")),
            "refine": refinement["seconds"] if refinement else None,
            "validate_backmapped": validation["backmapped"]["seconds"] if validation["backmapped"] else None,
            "validate_refined": validation["refined"]["seconds"] if validation["refined"] else None,
        },
        "refinement": refinement,
        "validation": validation,
        "diversity": _diversity(ensemble, n_frames, n_samples),
        "ramachandran": {"n_angle_pairs": int(np.sum(np.isfinite(ensemble.phi) & np.isfinite(ensemble.psi)))},
        "chi": {name: len(values) for name, values in ensemble.chi.items()},
    }
    return summary, ensemble


def summarize(run_dir) -> dict:
    """Summary of a pipeline run directory.

    Parameters
    ----------
    run_dir : str or os.PathLike
        Directory with ``backmapped.pdb`` and ``backmap.json`` and
        optionally ``refined.json``, ``validate_backmapped.json`` and
        ``validate_refined.json`` (see the module notes).

    Returns
    -------
    dict
        JSON-ready: ``system`` (the directory name), ``run_dir``, ``files``
        (role -> absolute path, None when absent), ``notes`` (reports left
        out: made from another structure than the one there), ``n_frames``,
        ``n_samples``, ``n_models`` (frames x samples), ``n_residues``,
        ``n_chains``, ``n_segments``, ``n_atoms``, ``backmap`` (input and
        settings of ``backmap run``), ``timings_seconds``, ``refinement``
        (None without ``refined.json``; else per-structure clashes, energies
        in kJ/mol and RMSD shift before/after, totals, convergence),
        ``validation`` (``backmapped`` / ``refined``, each None when absent;
        else pass/fail counts, ``failing_checks`` (check -> structures
        failing it) and per-structure rows), ``diversity`` (per-frame mean
        pairwise heavy-atom RMSD between samples, Angstrom, no
        superposition; None values for one sample), ``ramachandran`` and
        ``chi`` (counts of the angles plotted). Structures are numbered
        frame-major: ``model = frame * n_samples + sample``.

    Raises
    ------
    BackmapInputError
        Missing directory or required file, unreadable or inconsistent
        files; the message names the file.
    """
    return collect(run_dir)[0]


def summary_line(summary: dict) -> str:
    """One line for the terminal from a :func:`summarize` dictionary.

    Parameters
    ----------
    summary : dict
        As returned by :func:`summarize` (or read back from summary.json).

    Returns
    -------
    str
    """
    parts = [f"report {summary['system']}: {summary['n_frames']} frame(s) x {summary['n_samples']} sample(s)"]
    ref = summary["refinement"]
    if ref is None:
        parts.append("not refined")
    else:
        parts.append(f"refined {ref['n_converged']}/{ref['n_models']} converged, heavy-atom clashes "
                     f"{ref['clashes_before_total']} -> {ref['clashes_after_total']}")
    checks = [f"{which} {v['n_passed']}/{v['n_models']} pass" for which, v in summary["validation"].items() if v]
    parts.append("validation: " + (", ".join(checks) if checks else "none"))
    if summary["diversity"]["mean_rmsd_angstrom"] is not None:
        parts.append(f"sample diversity {summary['diversity']['mean_rmsd_angstrom']:.2f} A")
    # files that cover part of the run (an interrupted refinement, another run's report) are said here too
    notes = [note for part in [ref, *summary["validation"].values()] if part for note in part.get("notes", [])]
    if notes:
        parts.append("NOTE " + "; ".join(notes))
    return "; ".join(parts)



def dump_summary(summary: dict) -> str:
    """Write a summary to ``summary.json`` in its run directory (atomically).

    Parameters
    ----------
    summary : dict
        As returned by :func:`summarize`.

    Returns
    -------
    str
        Path of the summary file.
    """
    from backmap_plugin.io.atomic import write_json

    path = os.path.join(summary["run_dir"], SUMMARY_NAME)
    write_json(path, summary)
    return path


def write_summary(run_dir) -> str:
    """Write ``RUN_DIR/summary.json`` (atomically) from :func:`summarize`.

    Parameters
    ----------
    run_dir : str or os.PathLike
        The run directory.

    Returns
    -------
    str
        Path of the summary file.

    Raises
    ------
    BackmapInputError
        As :func:`summarize`.
    """
    return dump_summary(summarize(run_dir))
