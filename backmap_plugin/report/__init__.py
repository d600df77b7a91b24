"""Summary and HTML report of one pipeline run directory.

A run directory holds the files the pipeline writes for one system
(``backmapped.pdb`` and ``backmap.json`` required; ``refined.pdb``,
``refined.json``, ``validate_backmapped.json`` and
``validate_refined.json`` used when present; see :mod:`.summary`).

:func:`summarize` reads the files and returns a JSON-ready summary,
:func:`write_summary` writes it to ``RUN_DIR/summary.json`` and
:func:`write_report` writes the summary and a self-contained HTML page with
PNG plots (matplotlib, embedded as base64). The numerical helpers
(:func:`frame_diversity`, :func:`angle_histogram`,
:func:`ramachandran_histogram`) are pure numpy functions; lengths are in
Angstrom, angles in degrees.

Modules
-------
summary
    Reading the run directory: :func:`summarize`, :func:`write_summary`,
    :func:`summary_line`.
ensemble
    Coordinates and dihedral angles of ``backmapped.pdb``.
numeric
    Pure numpy helpers: sample diversity, angle histograms, plot ranges.
plots
    matplotlib figures as base64 PNG (matplotlib imported on first use).
html
    The HTML page and :func:`write_report`.
"""

from backmap_plugin.report.html import MAX_TABLE_ROWS as MAX_TABLE_ROWS
from backmap_plugin.report.html import write_report
from backmap_plugin.report.numeric import angle_histogram, bulk_range, frame_diversity, ramachandran_histogram
from backmap_plugin.report.plots import MAX_SCATTER_POINTS as MAX_SCATTER_POINTS
from backmap_plugin.report.summary import FILES, SUMMARY_NAME, summarize, summary_line, write_summary
from backmap_plugin.report.summary import SUMMARY_FORMAT as SUMMARY_FORMAT

__all__ = [
    "FILES",
    "SUMMARY_NAME",
    "angle_histogram",
    "bulk_range",
    "frame_diversity",
    "ramachandran_histogram",
    "summarize",
    "summary_line",
    "write_report",
    "write_summary",
]
