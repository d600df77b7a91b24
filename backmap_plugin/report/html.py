"""The report's HTML page and :func:`write_report`.

The page is self-contained: the plots of :mod:`.plots` are embedded as
base64 PNG images, the style sheet inline.
"""

from __future__ import annotations

import html
import math
import os

from backmap_plugin.report.ensemble import Ensemble
from backmap_plugin.report.plots import (
    plot_chi,
    plot_diversity,
    plot_ramachandran,
    plot_refinement,
    require_matplotlib,
)
from backmap_plugin.report.summary import (
    FILES,
    SUMMARY_NAME,
    VALIDATION_COLUMNS,
    collect,
    dump_summary,
    run_directory,
)

#: Largest number of structure rows in the HTML validation table.
MAX_TABLE_ROWS = 500

_CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: right; }
th { background: #eee; }
td.fail { background: #fbe3e3; }
td.pass { background: #e3f5e3; }
img { max-width: 100%; }
p.note { color: #555; }
div.settings { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
div.settings h3 { font-size: 1em; margin: 0.5em 0 0 0; }
table.kv th, table.kv td { text-align: left; }
table.kv td { max-width: 40em; overflow-wrap: anywhere; }
div.table-wrap { max-width: 100%; overflow-x: auto; }
table.validation { table-layout: fixed; width: 100%; font-size: 0.8em; }
table.validation th { vertical-align: bottom; white-space: normal; overflow-wrap: anywhere; hyphens: auto;
                      font-weight: 600; padding: 0.2em 0.25em; text-align: center; }
table.validation td { overflow-wrap: anywhere; padding: 0.15em 0.3em; }
table.validation td.stage, table.validation td.verdict { text-align: left; }
table.validation tr.first td { border-top: 2px solid #888; }
@media (max-width: 50em) { body { margin: 0.5em; } table.validation { font-size: 0.75em; } }
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


def _kv_table(rows) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _report_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("backmap_plugin")
    except PackageNotFoundError:
        return "unknown"


#: Readable names (with units) of the refinement settings ``refined.json`` records.
_REFINE_LABELS = {
    "force_field": "force field",
    "restraint_k_kj_mol_nm2": "restraint k (kJ/mol/nm\u00b2)",
    "tolerance_kj_mol_nm": "tolerance (kJ/mol/nm)",
    "max_iterations": "max iterations",
    "soft_core": "soft-core stage",
    "pH": "pH (hydrogens)",
    "clash_cutoff_angstrom": "clash cutoff (A)",
}
_NOT_RECORDED = "not recorded in backmap.json"


def _setting(value) -> str:
    if isinstance(value, (list, tuple)):
        return " + ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _fmt(value)


def _settings_section(summary: dict) -> str:
    """The settings of the run: backmapping (backmap.json) and refinement (refined.json)."""
    info = summary["backmap"]
    method = info.get("method")
    model = info.get("model")
    if model is None:
        model = "-" if method not in (None, "model") else _NOT_RECORDED
    temperature = info.get("temperature")
    backmap_rows = [
        ("input", _fmt(info.get("input"))),
        ("topology", _fmt(info.get("top"))),
        ("input frames", _NOT_RECORDED if info.get("stride") is None
         else "every one" if info["stride"] == 1 else f"every {info['stride']}th (frame k is input frame k x "
         f"{info['stride']})"),
        ("mapping", _fmt(info.get("mapping"))),
        ("method", _fmt(method)),
        ("model weights", model),
        ("samples per frame", _fmt(summary["n_samples"])),
        ("seed", _fmt(info.get("seed"))),
        ("temperature", "method default" if temperature is None else _fmt(temperature)),
        ("device", _fmt(info.get("device")) if info.get("device") is not None else _NOT_RECORDED),
        ("backmap_plugin version",
         _fmt(info.get("version")) if info.get("version") is not None else _NOT_RECORDED),
    ]
    out = '<div class="settings" id="settings">'
    out += f"<div><h3>Backmapping (backmap.json)</h3>{_kv_table(backmap_rows)}</div>"
    ref = summary["refinement"]
    if ref is not None:
        settings = dict(ref.get("settings") or {})
        rows = [(_REFINE_LABELS.get(key, key.replace("_", " ")), _setting(value)) for key, value in settings.items()]
        rows.append(("OpenMM platform", _fmt(ref.get("platform"))))
        out += f"<div><h3>Refinement (refined.json)</h3>{_kv_table(rows)}</div>"
    else:
        out += '<div><h3>Refinement</h3><p class="note">No refined.json: not refined.</p></div>'
    validation = next((v for v in summary["validation"].values() if v is not None), None)
    if validation is not None and validation.get("settings"):
        keep = ("force_field", "heavy_clash_cutoff_angstrom", "n_sigma", "ramachandran", "rotamers")
        labels = {"force_field": "force field", "heavy_clash_cutoff_angstrom": "heavy clash cutoff (A)",
                  "n_sigma": "outlier threshold (sd)", "ramachandran": "Ramachandran contours",
                  "rotamers": "rotamer outliers"}
        rows = [(labels[k], _setting(validation["settings"][k])) for k in keep if k in validation["settings"]]
        if rows:
            out += f"<div><h3>Validation</h3>{_kv_table(rows)}</div>"
    out += "</div>"
    return out + f'<p class="note">Report made with backmap_plugin {_e(_report_version())}.</p>'


def _overview(summary: dict) -> str:
    info = summary["backmap"]
    times = summary["timings_seconds"]
    rows = [
        ("system", summary["system"]),
        ("frames x samples", f"{summary['n_frames']} x {summary['n_samples']} = {summary['n_models']} structure(s)"),
        ("residues / chains / segments",
         f"{_fmt(summary['n_residues'])} / {_fmt(summary['n_chains'])} / {_fmt(summary['n_segments'])}"),
        ("heavy atoms", _fmt(summary["n_atoms"])),
    ]
    for step, seconds in times.items():
        rows.append((f"time: {step.replace('_', ' ')}", "-" if seconds is None else f"{seconds:.1f} s"))
    notes = "".join(f"<li>{_e(n)}</li>" for n in info.get("report") or [])
    files = "".join(f"<li>{_e(FILES[role])}: {'present' if path else 'missing'}</li>"
                    for role, path in summary["files"].items())
    out = _kv_table(rows)
    out += "".join(f'<p class="note">{_e(n)}</p>' for n in summary.get("notes") or [])
    if notes:
        out += f"<p>Notes of the backmapping:</p><ul>{notes}</ul>"
    return out + f"<p>Files in {_e(summary['run_dir'])}:</p><ul>{files}</ul>"


def _energy_line(models: list) -> str:
    """Median amber14 energies before and after refinement, in kJ/mol, as a sentence."""
    parts = []
    for key in ("before", "after"):
        values = [m[f"energy_{key}_kj_mol"] for m in models if m[f"energy_{key}_kj_mol"] is not None]
        if values:
            values.sort()
            mid = len(values) // 2
            median = values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])
            parts.append(f"{key} refinement median {median:.0f} kJ/mol (range {values[0]:.0f} to {values[-1]:.0f})")
    if not parts:
        return ""
    return (f"<p>amber14 energy per structure: {_e('; '.join(parts))}. Each energy panel has its own linear "
            "axis; values far off the others are red triangles at the panel edge, with their value.</p>")


def _refinement_section(summary: dict) -> str:
    ref = summary["refinement"]
    if ref is None:
        return ('<p class="note">No refinement in this run (refined.json not found, or left out: see the overview): '
                "clashes and energies before/after refinement are not shown.</p>")
    text = (f"<p>{ref['n_converged']} of {ref['n_models']} structure(s) converged on {_e(ref['platform'])}; "
            f"heavy-atom clashes (pairs closer than 2.0 A, more than 3 bonds apart) "
            f"{ref['clashes_before_total']} before, {ref['clashes_after_total']} after. "
            "The energy before refinement includes the freshly built, unminimised hydrogens.</p>")
    text += _energy_line(ref["models"])
    text += "".join(f'<p class="note">{_e(n)}</p>' for n in ref["notes"])
    if not ref["models"]:
        return text
    return text + _img(plot_refinement(ref), "clashes and energy before/after refinement")


def _ramachandran_section(summary: dict, ensemble: Ensemble) -> str:
    n = summary["ramachandran"]["n_angle_pairs"]
    if n == 0:
        return '<p class="note">No residue has both phi and psi: no Ramachandran plot.</p>'
    return (f"<p>{n} phi/psi pair(s): every residue with both angles in every structure of backmapped.pdb "
            "(mdtraj compute_phi / compute_psi; angles across chain breaks left out).</p>"
            + _img(plot_ramachandran(ensemble.phi, ensemble.psi), "Ramachandran plot"))


def _chi_section(ensemble: Ensemble) -> str:
    if not ensemble.chi:
        return '<p class="note">No residue with side-chain chi angles: no chi distributions.</p>'
    return ("<p>chi1 and chi2 of backmapped.pdb per residue type (10 degree bins), residues with every "
            "atom of the angle.</p>" + _img(plot_chi(ensemble.chi), "chi angle distributions"))


def _diversity_section(summary: dict) -> str:
    div = summary["diversity"]
    if div["per_frame_rmsd_angstrom"] is None:
        return f'<p class="note">{_e(div["note"])}</p>'
    return (f"<p>{_e(div['note'])} Mean {div['mean_rmsd_angstrom']:.2f} A, "
            f"largest {div['max_rmsd_angstrom']:.2f} A over {summary['n_frames']} frame(s).</p>"
            + _img(plot_diversity(div["per_frame_rmsd_angstrom"]), "sample diversity"))


def _verdict(v: dict) -> str:
    checks = ", ".join(f"{name} ({n})" for name, n in v["failing_checks"].items())
    return f"{v['n_passed']} of {v['n_models']} structure(s) pass" + (f"; failing checks: {checks}" if checks else "")


def _validation_section(summary: dict) -> str:
    present = [(k, v) for k, v in summary["validation"].items() if v is not None]
    if not present:
        return ('<p class="note">No validation in this run (validate_backmapped.json and validate_refined.json '
                "not found, or left out: see the overview).</p>")
    text = ""
    for which, v in summary["validation"].items():
        if v is None:
            text += f'<p class="note">validate_{which}.json not found or left out: no {which} rows.</p>'
        else:
            text += f"<p>{_e(which)}: {_e(_verdict(v))}.</p>"
            text += "".join(f'<p class="note">{_e(n)}</p>' for n in v["notes"])
    by_stage = [(which, {m["model"]: m for m in v["models"]}) for which, v in present]
    models = sorted(set().union(*(t for _, t in by_stage)))
    # one row per structure and stage (stages stacked, not side by side): 18 columns that fit the page
    # (structure, frame, sample, stage, energy, the other figures, verdict)
    widths = [5.0, 4.0, 4.0, 7.0, 7.0] + [5.0] * (len(VALIDATION_COLUMNS) - 1)
    widths.append(100.0 - sum(widths))
    widths = [f"{w:g}%" for w in widths]
    cols = "<colgroup>" + "".join(f'<col style="width:{w}">' for w in widths) + "</colgroup>"
    head = ("<tr><th>struc\u00adture</th><th>frame</th><th>sample</th><th>stage</th>"
            + "".join(f"<th>{_e(title)}</th>" for title, _, _ in VALIDATION_COLUMNS)
            + "<th>verdict</th></tr>")
    rows = []
    for model in models[:MAX_TABLE_ROWS]:
        first = next(t[model] for _, t in by_stage if model in t)
        span = f' rowspan="{len(by_stage)}"' if len(by_stage) > 1 else ""
        lead = "".join(f"<td{span}>{_e(c)}</td>" for c in (model, first["frame"], first["sample"]))
        for k, (which, t) in enumerate(by_stage):
            m = t.get(model)
            cells = [f'<td class="stage">{_e(which)}</td>']
            if m is None:
                cells += ["<td>-</td>"] * len(VALIDATION_COLUMNS) + ['<td class="verdict">-</td>']
            else:
                failed = set(m["failed"])
                for _, key, fmt in VALIDATION_COLUMNS:
                    bad = key.replace("_", " ") in failed or (key == "energy_kj_mol" and "energy not finite" in failed)
                    cells.append(('<td class="fail">' if bad else "<td>") + f"{_e(_fmt(m[key], fmt))}</td>")
                cells.append('<td class="verdict pass">pass</td>' if m["passed"] else
                             f'<td class="verdict fail">{_e(", ".join(m["failed"]))}</td>')
            if k == 0:
                rows.append(f'<tr data-model="{model}" class="first">{lead}{"".join(cells)}</tr>')
            else:
                rows.append(f'<tr data-stage="{_e(which)}">{"".join(cells)}</tr>')
    table = (f'<div class="table-wrap"><table id="validation" class="validation">{cols}'
             f'<thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div>')
    if len(models) > MAX_TABLE_ROWS:
        table += f'<p class="note">... {len(models) - MAX_TABLE_ROWS} more structure(s) in summary.json.</p>'
    return text + table


def _render_html(summary: dict, ensemble: Ensemble) -> str:
    """The HTML page of a summary; the plots also need the ensemble's angles."""
    sections = [
        ("Settings", _settings_section(summary)),
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

    The page has the run's settings (backmap.json, refined.json), the run
    overview, per-structure heavy-atom clashes and energy before/after
    refinement (linear kJ/mol axes), a Ramachandran plot and chi1/chi2
    distributions per residue type of the backmapped ensemble, the sample
    diversity and the validation table (before vs after refinement). Plots
    are PNG images embedded as base64 (no external files); sections whose
    files are missing are replaced by a sentence saying so.

    Parameters
    ----------
    run_dir : str or os.PathLike
        The run directory (see :func:`~.summary.summarize`).
    output_html : str or os.PathLike
        HTML file to write (atomically); its directory must exist.

    Returns
    -------
    str
        Path of the HTML file.

    Raises
    ------
    BackmapInputError
        As :func:`~.summary.summarize`, an output directory that does not
        exist, or a run directory where ``summary.json`` cannot be written
        (before any work).
    ImportError
        matplotlib is not installed (``pip install backmap_plugin[report]``).
    """
    from backmap_plugin.io.atomic import write_text
    from backmap_plugin.io.paths import check_file_path

    output_html = os.fspath(output_html)
    run_directory(run_dir)  # before the output's directory, which is often inside it
    check_file_path(output_html, "the report")
    # (the summary goes into the run directory: one that cannot be written, another user's run, is said before the work)
    check_file_path(os.path.join(os.fspath(run_dir), SUMMARY_NAME), "the run's summary")
    require_matplotlib()  # fail on a missing matplotlib before any work
    summary, ensemble = collect(run_dir)
    dump_summary(summary)
    write_text(output_html, _render_html(summary, ensemble))
    return output_html
