"""The report's HTML page and :func:`write_report`.

The page is self-contained: the plots of :mod:`.plots` are embedded as
base64 PNG images, the style sheet inline.
"""

from __future__ import annotations

import html
import math
import os

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.report.ensemble import Ensemble
from backmap_plugin.report.plots import (
    plot_chi,
    plot_diversity,
    plot_ramachandran,
    plot_refinement,
    require_matplotlib,
)
from backmap_plugin.report.summary import FILES, VALIDATION_COLUMNS, collect, dump_summary

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
    head1 += "".join(f"<th colspan={len(labels)}>{_e(title)}</th>" for title, _, _ in VALIDATION_COLUMNS)
    head1 += f"<th colspan={len(labels)}>verdict</th></tr>"
    head2 = "<tr>" + "".join(f"<th>{_e(w)}</th>" for _ in range(len(VALIDATION_COLUMNS) + 1) for w in labels)
    head2 += "</tr>"
    by_model = [{m["model"]: m for m in v["models"]} for _, v in present]
    models = sorted(set().union(*by_model))
    rows = []
    for model in models[:MAX_TABLE_ROWS]:
        first = next(t[model] for t in by_model if model in t)
        cells = [str(model), str(first["frame"]), str(first["sample"])]
        for _, key, fmt in VALIDATION_COLUMNS:
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


def _render_html(summary: dict, ensemble: Ensemble) -> str:
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
        As :func:`~.summary.summarize`, or an output directory that does not exist.
    ImportError
        matplotlib is not installed (``pip install backmap_plugin[report]``).
    """
    from backmap_plugin.io.legacy import write_text    # mdtraj behind it: imported on first use

    output_html = os.fspath(output_html)
    directory = os.path.dirname(os.path.abspath(output_html))
    if not os.path.isdir(directory):
        raise BackmapInputError(f"{output_html}: cannot write: directory {directory} does not exist")
    require_matplotlib()  # fail on a missing matplotlib before any work
    summary, ensemble = collect(run_dir)
    dump_summary(summary)
    write_text(output_html, _render_html(summary, ensemble))
    return output_html
