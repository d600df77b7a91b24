"""Summary and HTML report of one pipeline run directory.

A run directory holds the files the pipeline writes for one system (all
names fixed):

* ``backmapped.pdb`` - heavy-atom structures, frame-major (frame 0 samples
  0..S-1, then frame 1 ...), and ``backmap.json`` - what ``backmap run
  --json`` wrote (``n_frames``, ``n_samples``, ``seconds``, ``method`` ...).
  Both are required.
* ``refined.pdb`` and ``refined.json`` - ``backmap refine`` and its report.
* ``validate_backmapped.json`` and ``validate_refined.json`` - ``backmap
  validate --json`` of the two structures.

The optional files may be missing (a run without refinement); their
sections are then left out with a sentence saying so.

:func:`summarize` reads the files and returns a JSON-ready summary,
:func:`write_summary` writes it to ``RUN_DIR/summary.json`` and
:func:`write_report` writes the summary and a self-contained HTML page with
PNG plots (matplotlib, embedded as base64). The numerical helpers
(:func:`frame_diversity`, :func:`angle_histogram`,
:func:`ramachandran_histogram`) are pure numpy functions; lengths are in
Angstrom, angles in degrees.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from dataclasses import dataclass, field
from io import BytesIO

import numpy as np

from . import chemistry as chem
from . import metrics
from .errors import BackmapInputError

__all__ = [
    "FILES",
    "SUMMARY_NAME",
    "angle_histogram",
    "frame_diversity",
    "ramachandran_histogram",
    "summarize",
    "summary_line",
    "write_report",
    "write_summary",
]

#: File names of a run directory, by role.
FILES = {
    "backmapped_pdb": "backmapped.pdb",
    "backmap_json": "backmap.json",
    "refined_pdb": "refined.pdb",
    "refined_json": "refined.json",
    "validate_backmapped_json": "validate_backmapped.json",
    "validate_refined_json": "validate_refined.json",
}
#: Name of the summary written into the run directory.
SUMMARY_NAME = "summary.json"
#: Version tag of the summary layout.
SUMMARY_FORMAT = "backmap_plugin.report/1"
#: Largest number of structure rows in the HTML validation table.
MAX_TABLE_ROWS = 500
#: Most points drawn individually on top of the Ramachandran histogram.
MAX_SCATTER_POINTS = 5000

_MATPLOTLIB_HINT = "backmap report needs matplotlib for its plots: pip install backmap_plugin[report]"
_DIVERSITY_NOTE = (
    "Mean pairwise heavy-atom RMSD between the samples of each frame, without superposition: "
    "all samples of a frame are built on the same coarse-grained frame, so they share one frame of reference."
)
#: Validation columns of the table: (title, key in the validate JSON frames, format).
_VALIDATION_COLUMNS = (
    ("energy kJ/mol", "energy_kj_mol", "{:.1f}"),
    ("heavy clashes", "heavy_clashes", "{}"),
    ("clashscore", "clashscore", "{:.1f}"),
    ("bond > 4 sd", "bond_outliers", "{}"),
    ("angle > 4 sd", "angle_outliers", "{}"),
    ("cis non-Pro", "cis_non_pro", "{}"),
    ("D residues", "d_residues", "{}"),
    ("Rama outliers", "ramachandran_outliers", "{}"),
    ("missing atoms", "missing_atoms", "{}"),
)


# ---------------------------------------------------------------- numerical helpers


def frame_diversity(samples, mask=None) -> np.ndarray:
    """Mean pairwise RMSD between the samples of each frame.

    No superposition: all samples of a frame are built on the same
    coarse-grained frame, so they share one frame of reference. Each frame
    is scored with :func:`backmap_plugin.metrics.sample_diversity`.

    Parameters
    ----------
    samples : array_like, shape (n_frames, n_samples, n_atoms, 3)
        Coordinates in Angstrom.
    mask : array_like of bool, shape (n_atoms,), optional
        Atoms to score; all atoms when None.

    Returns
    -------
    numpy.ndarray, shape (n_frames,)
        Mean RMSD over the sample pairs ``i < j`` of each frame, Angstrom;
        zeros when there is one sample per frame.
    """
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 4 or s.shape[-1] != 3:
        raise ValueError(f"samples must be shaped (n_frames, n_samples, n_atoms, 3), got {s.shape}")
    return np.array([metrics.sample_diversity(s[f : f + 1], mask=mask) for f in range(s.shape[0])])


def _wrap_degrees(angles) -> np.ndarray:
    """Angles in degrees wrapped to [-180, 180); NaN dropped, flattened."""
    a = np.asarray(angles, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    return (a + 180.0) % 360.0 - 180.0


def angle_histogram(angles, n_bins: int = 36) -> tuple:
    """Histogram of dihedral angles over the full circle.

    Parameters
    ----------
    angles : array_like
        Angles in degrees, any shape; NaN values are ignored and the rest
        wrapped to [-180, 180).
    n_bins : int, optional
        Number of equal bins over [-180, 180] (default 36, 10 degrees each).

    Returns
    -------
    counts : numpy.ndarray of int64, shape (n_bins,)
    edges : numpy.ndarray, shape (n_bins + 1,)
        Bin edges in degrees, from -180 to 180.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    edges = np.linspace(-180.0, 180.0, n_bins + 1)
    counts, _ = np.histogram(_wrap_degrees(angles), bins=edges)
    return counts.astype(np.int64), edges


def ramachandran_histogram(phi, psi, n_bins: int = 36) -> tuple:
    """Two-dimensional histogram of phi/psi pairs.

    Parameters
    ----------
    phi, psi : array_like
        Backbone dihedrals in degrees, same shape; pairs where either is
        NaN are ignored, the rest wrapped to [-180, 180).
    n_bins : int, optional
        Number of bins per axis over [-180, 180] (default 36).

    Returns
    -------
    counts : numpy.ndarray of int64, shape (n_bins, n_bins)
        ``counts[i, j]``: pairs with phi in bin i and psi in bin j.
    edges : numpy.ndarray, shape (n_bins + 1,)
        Bin edges in degrees (the same for both axes).
    """
    phi = np.asarray(phi, dtype=np.float64).ravel()
    psi = np.asarray(psi, dtype=np.float64).ravel()
    if phi.shape != psi.shape:
        raise ValueError(f"phi and psi differ in size: {phi.size} and {psi.size}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    keep = np.isfinite(phi) & np.isfinite(psi)
    edges = np.linspace(-180.0, 180.0, n_bins + 1)
    counts, _, _ = np.histogram2d(_wrap_degrees(phi[keep]), _wrap_degrees(psi[keep]), bins=[edges, edges])
    return counts.astype(np.int64), edges


def _bonded_dihedrals(xyz, quads, pair, max_distance: float) -> np.ndarray:
    """Mask (n_frames, n_quads): the atoms ``pair`` of each quad are closer than max_distance."""
    if len(quads) == 0:
        return np.zeros((len(xyz), 0), dtype=bool)
    a, b = quads[:, pair[0]], quads[:, pair[1]]
    return np.linalg.norm(xyz[:, a] - xyz[:, b], axis=-1) <= max_distance


# ---------------------------------------------------------------- reading the run directory


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


@dataclass
class _Ensemble:
    """Coordinates and dihedrals of backmapped.pdb (Angstrom, degrees)."""

    xyz: np.ndarray  # (n_models, n_atoms, 3)
    heavy: np.ndarray  # (n_atoms,) bool
    phi: np.ndarray  # (n_models * n_residues_scored,) flattened, NaN where broken
    psi: np.ndarray
    chi: dict = field(default_factory=dict)  # residue name -> (n, n_chi) degrees, n_chi <= 2


def _ramachandran(traj) -> tuple:
    """phi and psi (degrees) of residues that have both, NaN across chain breaks."""
    import mdtraj as md

    from .openmm.validate import PEPTIDE_BOND_MAX

    xyz = traj.xyz.astype(np.float64) * 10.0
    phi_idx, phi = md.compute_phi(traj)
    psi_idx, psi = md.compute_psi(traj)
    phi = np.where(_bonded_dihedrals(xyz, phi_idx, (0, 1), PEPTIDE_BOND_MAX), np.degrees(phi), np.nan)
    psi = np.where(_bonded_dihedrals(xyz, psi_idx, (2, 3), PEPTIDE_BOND_MAX), np.degrees(psi), np.nan)
    atoms = list(traj.topology.atoms)
    phi_res = {atoms[int(i)].residue.index: k for k, i in enumerate(phi_idx[:, 1])}
    psi_res = {atoms[int(i)].residue.index: k for k, i in enumerate(psi_idx[:, 1])}
    both = sorted(set(phi_res) & set(psi_res))
    phi = phi[:, [phi_res[r] for r in both]]
    psi = psi[:, [psi_res[r] for r in both]]
    return phi.ravel(), psi.ravel()


def _chi_by_residue(traj, path: str) -> dict:
    """chi1 and chi2 (degrees) per residue type, residues with every atom of those chis."""
    import torch

    from .geometry import chi_angles
    from .topology import gather_slots, read_residues

    records, _ = read_residues(traj.topology, path)
    if not records:
        return {}
    slots, present = gather_slots(traj.xyz.astype(np.float64) * 10.0, records)
    res_type = np.array([chem.RESIDUE_INDEX[r.name] for r in records])
    chi = np.degrees(chi_angles(torch.as_tensor(slots), torch.as_tensor(res_type)).numpy())  # (F, R, 4)
    atoms = chem.CHI_ATOMS[res_type]  # (R, 4, 4)
    complete = np.take_along_axis(present[:, None, :], atoms.reshape(len(records), 1, 16), 2)
    complete = complete.reshape(len(records), 4, 4).all(-1) & chem.CHI_EXISTS[res_type]  # (R, 4)
    out = {}
    for t in np.unique(res_type):
        n_chi = min(2, int(chem.CHI_EXISTS[t].sum()))
        if n_chi == 0:
            continue
        rows = (res_type == t) & complete[:, :n_chi].all(-1)
        if rows.any():
            out[chem.RESIDUE_NAMES[t]] = chi[:, rows, :n_chi].reshape(-1, n_chi)
    return dict(sorted(out.items()))


def _load_ensemble(path: str) -> _Ensemble:
    import mdtraj as md

    try:
        traj = md.load(path)
    except Exception as exc:  # mdtraj raises many kinds for a bad file
        raise BackmapInputError(f"{path}: cannot read: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    heavy = np.array([a.element is None or a.element.symbol not in ("H", "D") for a in traj.topology.atoms])
    phi, psi = _ramachandran(traj)
    return _Ensemble(xyz=traj.xyz.astype(np.float64) * 10.0, heavy=heavy, phi=phi, psi=psi,
                     chi=_chi_by_residue(traj, path))


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
    from .openmm.validate import ValidationResult

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
        for _, key, _ in _VALIDATION_COLUMNS:
            row[key] = _number(f.get(key)) if key in ("energy_kj_mol", "clashscore") else f.get(key)
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


def _diversity(ensemble: _Ensemble, n_frames: int, n_samples: int) -> dict:
    if n_samples < 2:
        return {"n_samples": n_samples, "per_frame_rmsd_angstrom": None, "mean_rmsd_angstrom": None,
                "max_rmsd_angstrom": None,
                "note": "One sample per frame: there is no diversity between samples to measure."}
    samples = ensemble.xyz.reshape(n_frames, n_samples, -1, 3)
    per_frame = frame_diversity(samples, mask=ensemble.heavy)
    return {"n_samples": n_samples, "per_frame_rmsd_angstrom": [float(x) for x in per_frame],
            "mean_rmsd_angstrom": float(per_frame.mean()), "max_rmsd_angstrom": float(per_frame.max()),
            "note": _DIVERSITY_NOTE}


def _collect(run_dir) -> tuple:
    """(summary dict, ensemble) of a run directory."""
    run_dir = os.path.abspath(os.fspath(run_dir))
    if not os.path.isdir(run_dir):
        raise BackmapInputError(f"{run_dir}: run directory not found")
    for role in ("backmapped_pdb", "backmap_json"):
        if not os.path.isfile(_path(run_dir, role)):
            raise BackmapInputError(f"{run_dir}: required file {FILES[role]} is missing")
    json_path = _path(run_dir, "backmap_json")
    info = _read_json(json_path)
    n_frames = _positive_int(info, "n_frames", json_path)
    n_samples = _positive_int(info, "n_samples", json_path)
    pdb_path = _path(run_dir, "backmapped_pdb")
    ensemble = _load_ensemble(pdb_path)
    n_models = len(ensemble.xyz)
    if n_models != n_frames * n_samples:
        raise BackmapInputError(
            f"{pdb_path}: {n_models} model(s), but {json_path} gives {n_frames} frame(s) x {n_samples} sample(s)")
    files = {role: (_path(run_dir, role) if os.path.isfile(_path(run_dir, role)) else None) for role in FILES}
    refinement = None
    if files["refined_json"]:
        refinement = _refinement(_read_json(files["refined_json"]), files["refined_json"], n_samples, n_models)
    validation = {}
    for which in ("backmapped", "refined"):
        path = files[f"validate_{which}_json"]
        validation[which] = None if path is None else _validation(_read_json(path), path, n_samples, n_models)
    summary = {
        "format": SUMMARY_FORMAT,
        "system": os.path.basename(run_dir),
        "run_dir": run_dir,
        "files": files,
        "n_frames": n_frames,
        "n_samples": n_samples,
        "n_models": n_models,
        "n_residues": info.get("n_residues"),
        "n_chains": info.get("n_chains"),
        "n_segments": info.get("n_segments"),
        "n_atoms": info.get("n_atoms", int(ensemble.xyz.shape[1])),
        "backmap": {key: info.get(key) for key in
                    ("input", "top", "method", "mapping", "seed", "temperature", "report")},
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
        (role -> absolute path, None when absent), ``n_frames``,
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
    return _collect(run_dir)[0]


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
    return "; ".join(parts)


def _write_atomic(path: str, text: str) -> None:
    """Write text to path through a temporary file in the same directory and os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise BackmapInputError(f"{path}: cannot write: directory {directory} does not exist")
    partial = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.partial")
    try:
        with open(partial, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def _dump_summary(summary: dict) -> str:
    path = os.path.join(summary["run_dir"], SUMMARY_NAME)
    _write_atomic(path, json.dumps(summary, indent=2, allow_nan=False) + "\n")
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
    return _dump_summary(summarize(run_dir))


# ---------------------------------------------------------------- plots


def _new_figure(width: float, height: float):
    """A matplotlib Figure drawn by the Agg canvas (no pyplot, no global state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(_MATPLOTLIB_HINT) from exc
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _integer_axis(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _png_base64(fig, tight: bool = True) -> str:
    if tight:
        fig.tight_layout()
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _nan(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values])


def _plot_refinement(refinement: dict) -> str:
    models = refinement["models"]
    x = np.array([m["model"] for m in models])
    fig = _new_figure(10.0, 3.6)
    ax_clash, ax_energy = fig.subplots(1, 2)
    for key, marker, label in (("before", "o", "before refinement"), ("after", "s", "after refinement")):
        ax_clash.plot(x, _nan(m[f"clashes_{key}"] for m in models), marker=marker, ms=4, label=label)
        ax_energy.plot(x, _nan(m[f"energy_{key}_kj_mol"] for m in models), marker=marker, ms=4, label=label)
    ax_clash.set_ylabel("heavy-atom clashes")
    ax_energy.set_ylabel("amber14 energy (kJ/mol)")
    energies = _nan([m["energy_before_kj_mol"] for m in models] + [m["energy_after_kj_mol"] for m in models])
    if np.any(np.isfinite(energies)) and np.nanmax(np.abs(energies)) > 1e5:
        ax_energy.set_yscale("symlog", linthresh=1e3)
    _integer_axis(ax_clash.yaxis)
    for ax in (ax_clash, ax_energy):
        _integer_axis(ax.xaxis)
        ax.set_xlabel("structure (frame x samples + sample)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _png_base64(fig)


def _plot_ramachandran(phi, psi) -> str:
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import NullFormatter

    counts, edges = ramachandran_histogram(phi, psi, n_bins=36)
    fig = _new_figure(5.2, 4.6)
    ax = fig.subplots()
    if counts.any():
        top = int(counts.max())
        norm = LogNorm(vmin=0.5, vmax=top) if top >= 20 else Normalize(vmin=0, vmax=top)
        mesh = ax.pcolormesh(edges, edges, np.ma.masked_equal(counts.T, 0), cmap="YlGnBu", norm=norm)
        bar = fig.colorbar(mesh, ax=ax, label="count per 10 x 10 degrees", format="%d")
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
    keep = np.isfinite(phi) & np.isfinite(psi)
    if keep.sum() <= MAX_SCATTER_POINTS:
        ax.scatter(_wrap_degrees(phi[keep]), _wrap_degrees(psi[keep]), s=5, c="k", alpha=0.6, lw=0)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-180, 180)
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(-180, 181, 60))
    ax.set_xlabel("phi (degrees)")
    ax.set_ylabel("psi (degrees)")
    ax.set_aspect("equal")
    return _png_base64(fig)


def _plot_chi(chi: dict) -> str:
    names = list(chi)
    ncols = min(5, len(names))
    nrows = math.ceil(len(names) / ncols)
    width, height = 2.4 * ncols, 2.0 * nrows + 0.4
    fig = _new_figure(width, height)
    # fixed margins: tight_layout takes seconds on a grid of axes
    fig.subplots_adjust(left=0.35 / width, right=1.0 - 0.2 / width, bottom=0.45 / height,
                        top=1.0 - 0.3 / height, wspace=0.3, hspace=0.55)
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        values = chi[name]
        for k, color in zip(range(values.shape[1]), ("tab:blue", "tab:orange")):
            counts, edges = angle_histogram(values[:, k], n_bins=36)
            ax.stairs(counts, edges, color=color, label=f"chi{k + 1}")
        ax.set_title(f"{name} (n={len(values)})", fontsize=9)
        ax.set_xlim(-180, 180)
        ax.set_xticks([-180, -60, 60, 180])
        ax.tick_params(labelsize=7, labelbottom=True)
        _integer_axis(ax.yaxis)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.supxlabel("degrees", fontsize=8)
    return _png_base64(fig, tight=False)


def _plot_diversity(per_frame) -> str:
    values = np.asarray(per_frame, dtype=np.float64)
    fig = _new_figure(5.2, 3.4)
    ax = fig.subplots()
    ax.hist(values, bins=max(5, min(30, len(values) // 2)), color="tab:green")
    ax.set_xlabel("mean pairwise heavy-atom RMSD of a frame's samples (A)")
    ax.set_ylabel("frames")
    _integer_axis(ax.yaxis)
    return _png_base64(fig)


# ---------------------------------------------------------------- HTML

_CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: right; }
th { background: #eee; }
td.fail { background: #fbe3e3; }
td.pass { background: #e3f5e3; }
img { max-width: 100%; }
p.note { color: #555; }
"""


def _e(value) -> str:
    return html.escape(str(value))


def _img(data: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _fmt(value, fmt: str = "{}") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN"
    return fmt.format(value)


def _overview(summary: dict) -> str:
    info = summary["backmap"]
    times = summary["timings_seconds"]
    rows = [
        ("system", summary["system"]),
        ("input", info.get("input")),
        ("frames x samples", f"{summary['n_frames']} x {summary['n_samples']} = {summary['n_models']} structure(s)"),
        ("residues / chains / segments",
         f"{_fmt(summary['n_residues'])} / {_fmt(summary['n_chains'])} / {_fmt(summary['n_segments'])}"),
        ("heavy atoms", _fmt(summary["n_atoms"])),
        ("method / mapping", f"{_fmt(info.get('method'))} / {_fmt(info.get('mapping'))}"),
        ("seed / temperature", f"{_fmt(info.get('seed'))} / {_fmt(info.get('temperature'))}"),
    ]
    for step, seconds in times.items():
        rows.append((f"time: {step.replace('_', ' ')}", "-" if seconds is None else f"{seconds:.1f} s"))
    body = "".join(f'<tr><th style="text-align:left">{_e(k)}</th><td style="text-align:left">{_e(v)}</td></tr>'
                   for k, v in rows)
    notes = "".join(f"<li>{_e(n)}</li>" for n in info.get("report") or [])
    files = "".join(f"<li>{_e(FILES[role])}: {'present' if path else 'missing'}</li>"
                    for role, path in summary["files"].items())
    out = f"<table>{body}</table>"
    if notes:
        out += f"<p>Notes of the backmapping:</p><ul>{notes}</ul>"
    return out + f"<p>Files in {_e(summary['run_dir'])}:</p><ul>{files}</ul>"


def _refinement_section(summary: dict) -> str:
    ref = summary["refinement"]
    if ref is None:
        return ('<p class="note">No refinement in this run (refined.json not found): '
                "clashes and energies before/after refinement are not shown.</p>")
    text = (f"<p>{ref['n_converged']} of {ref['n_models']} structure(s) converged on {_e(ref['platform'])}; "
            f"heavy-atom clashes (pairs closer than 2.0 A, more than 3 bonds apart) "
            f"{ref['clashes_before_total']} before, {ref['clashes_after_total']} after. "
            "The energy before refinement includes the freshly built, unminimised hydrogens.</p>")
    text += "".join(f'<p class="note">{_e(n)}</p>' for n in ref["notes"])
    if not ref["models"]:
        return text
    return text + _img(_plot_refinement(ref), "clashes and energy before/after refinement")


def _ramachandran_section(summary: dict, ensemble: _Ensemble) -> str:
    n = summary["ramachandran"]["n_angle_pairs"]
    if n == 0:
        return '<p class="note">No residue has both phi and psi: no Ramachandran plot.</p>'
    return (f"<p>{n} phi/psi pair(s): every residue with both angles in every structure of backmapped.pdb "
            "(mdtraj compute_phi / compute_psi; angles across chain breaks left out).</p>"
            + _img(_plot_ramachandran(ensemble.phi, ensemble.psi), "Ramachandran plot"))


def _chi_section(ensemble: _Ensemble) -> str:
    if not ensemble.chi:
        return '<p class="note">No residue with side-chain chi angles: no chi distributions.</p>'
    return ("<p>chi1 and chi2 of backmapped.pdb per residue type (10 degree bins), residues with every "
            "atom of the angle.</p>" + _img(_plot_chi(ensemble.chi), "chi angle distributions"))


def _diversity_section(summary: dict) -> str:
    div = summary["diversity"]
    if div["per_frame_rmsd_angstrom"] is None:
        return f'<p class="note">{_e(div["note"])}</p>'
    return (f"<p>{_e(div['note'])} Mean {div['mean_rmsd_angstrom']:.2f} A, "
            f"largest {div['max_rmsd_angstrom']:.2f} A over {summary['n_frames']} frame(s).</p>"
            + _img(_plot_diversity(div["per_frame_rmsd_angstrom"]), "sample diversity"))


def _verdict(v: dict) -> str:
    checks = ", ".join(f"{name} ({n})" for name, n in v["failing_checks"].items())
    return f"{v['n_passed']} of {v['n_models']} structure(s) pass" + (f"; failing checks: {checks}" if checks else "")


def _validation_section(summary: dict) -> str:
    present = [(k, v) for k, v in summary["validation"].items() if v is not None]
    if not present:
        return ('<p class="note">No validation in this run (validate_backmapped.json and validate_refined.json '
                "not found).</p>")
    text = ""
    for which, v in summary["validation"].items():
        if v is None:
            text += f'<p class="note">validate_{which}.json not found: no {which} columns.</p>'
        else:
            text += f"<p>{_e(which)}: {_e(_verdict(v))}.</p>"
            text += "".join(f'<p class="note">{_e(n)}</p>' for n in v["notes"])
    labels = [which for which, _ in present]
    head1 = "<tr><th rowspan=2>structure</th><th rowspan=2>frame</th><th rowspan=2>sample</th>"
    head1 += "".join(f"<th colspan={len(labels)}>{_e(title)}</th>" for title, _, _ in _VALIDATION_COLUMNS)
    head1 += f"<th colspan={len(labels)}>verdict</th></tr>"
    head2 = "<tr>" + "".join(f"<th>{_e(w)}</th>" for _ in range(len(_VALIDATION_COLUMNS) + 1) for w in labels)
    head2 += "</tr>"
    by_model = [{m["model"]: m for m in v["models"]} for _, v in present]
    models = sorted(set().union(*by_model))
    rows = []
    for model in models[:MAX_TABLE_ROWS]:
        first = next(t[model] for t in by_model if model in t)
        cells = [str(model), str(first["frame"]), str(first["sample"])]
        for _, key, fmt in _VALIDATION_COLUMNS:
            cells += [_fmt(t[model][key], fmt) if model in t else "-" for t in by_model]
        verdicts = []
        for t in by_model:
            m = t.get(model)
            if m is None:
                verdicts.append("<td>-</td>")
            elif m["passed"]:
                verdicts.append('<td class="pass">pass</td>')
            else:
                verdicts.append(f'<td class="fail">{_e(", ".join(m["failed"]))}</td>')
        rows.append(f'<tr data-model="{model}">' + "".join(f"<td>{_e(c)}</td>" for c in cells)
                    + "".join(verdicts) + "</tr>")
    table = f'<table id="validation">{head1}{head2}{"".join(rows)}</table>'
    if len(models) > MAX_TABLE_ROWS:
        table += f'<p class="note">... {len(models) - MAX_TABLE_ROWS} more structure(s) in summary.json.</p>'
    return text + table


def _render_html(summary: dict, ensemble: _Ensemble) -> str:
    """The HTML page of a summary; the plots also need the ensemble's angles."""
    sections = [
        ("Run", _overview(summary)),
        ("Refinement: clashes and energy", _refinement_section(summary)),
        ("Ramachandran plot (backmapped)", _ramachandran_section(summary, ensemble)),
        ("Side-chain chi angles (backmapped)", _chi_section(ensemble)),
        ("Sample diversity", _diversity_section(summary)),
        ("Validation", _validation_section(summary)),
    ]
    body = "".join(f"<h2>{_e(title)}</h2>\n{content}\n" for title, content in sections)
    title = f"backmap report: {summary['system']}"
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(title)}</title>\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n<h1>{_e(title)}</h1>\n{body}</body>\n</html>\n")


def write_report(run_dir, output_html) -> str:
    """Write ``RUN_DIR/summary.json`` and a self-contained HTML report.

    The page has the run overview, per-structure heavy-atom clashes and
    energy before/after refinement, a Ramachandran plot and chi1/chi2
    distributions per residue type of the backmapped ensemble, the sample
    diversity and the validation table (before vs after refinement). Plots
    are PNG images embedded as base64 (no external files); sections whose
    files are missing are replaced by a sentence saying so.

    Parameters
    ----------
    run_dir : str or os.PathLike
        The run directory (see :func:`summarize`).
    output_html : str or os.PathLike
        HTML file to write (atomically); its directory must exist.

    Returns
    -------
    str
        Path of the HTML file.

    Raises
    ------
    BackmapInputError
        As :func:`summarize`, or an output directory that does not exist.
    ImportError
        matplotlib is not installed (``pip install backmap_plugin[report]``).
    """
    output_html = os.fspath(output_html)
    directory = os.path.dirname(os.path.abspath(output_html))
    if not os.path.isdir(directory):
        raise BackmapInputError(f"{output_html}: cannot write: directory {directory} does not exist")
    _new_figure(1, 1)  # fail on a missing matplotlib before any work
    summary, ensemble = _collect(run_dir)
    _dump_summary(summary)
    _write_atomic(output_html, _render_html(summary, ensemble))
    return output_html
