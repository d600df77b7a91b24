"""The report's plots: matplotlib figures returned as base64-encoded PNG.

matplotlib is an optional dependency (``pip install backmap_plugin[report]``)
imported only when a figure is made; without it :func:`require_matplotlib`
and the ``plot_*`` functions raise ImportError with that install hint.
Figures are drawn by the Agg canvas (no pyplot, no global state).
"""

from __future__ import annotations

import base64
import math
from io import BytesIO

import numpy as np

from backmap_plugin.report.numeric import angle_histogram, bulk_range, ramachandran_histogram, wrap_degrees

#: Most points drawn individually on top of the Ramachandran histogram.
MAX_SCATTER_POINTS = 5000

_MATPLOTLIB_HINT = "backmap report needs matplotlib for its plots: pip install backmap_plugin[report]"


def _figure_classes() -> tuple:
    """matplotlib's Figure and Agg canvas classes; ImportError with the install hint when missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(_MATPLOTLIB_HINT) from exc
    return Figure, FigureCanvasAgg


def require_matplotlib() -> None:
    """Check that matplotlib can be imported, before any work is done.

    Raises
    ------
    ImportError
        matplotlib is not installed; the message says how to install it.
    """
    _figure_classes()


def _new_figure(width: float, height: float):
    """A matplotlib Figure drawn by the Agg canvas (no pyplot, no global state)."""
    Figure, FigureCanvasAgg = _figure_classes()
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


def _energy_panel(ax, x, energies, title: str, color: str) -> None:
    """One stage's energies on a linear axis; values off the bulk drawn at the edge with their value."""
    from matplotlib.ticker import ScalarFormatter

    (low, high), outside = bulk_range(energies)
    inside = np.isfinite(energies) & ~outside
    ax.plot(x, np.where(inside, energies, np.nan), marker="o", ms=4, lw=0.8, color=color)
    ax.set_ylim(low, high)
    for xi, value in zip(x[outside], energies[outside]):
        edge, marker, va = (high, "^", "top") if value > high else (low, "v", "bottom")
        ax.plot([xi], [edge], marker=marker, ms=8, color="tab:red", clip_on=False, zorder=3)
        ax.annotate(f"{value:,.0f}", (xi, edge), xytext=(6, -3 if va == "top" else 3), textcoords="offset points",
                    fontsize=7, color="tab:red", va=va)
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    ax.yaxis.set_major_formatter(formatter)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("amber14 energy (kJ/mol)")
    if not np.isfinite(energies).any():
        ax.text(0.5, 0.5, "no finite energy", transform=ax.transAxes, ha="center", va="center", color="0.4")


def refinement_figure(refinement: dict):
    """The matplotlib Figure of :func:`plot_refinement` (axes: clashes, energy before, energy after)."""
    models = refinement["models"]
    x = np.array([m["model"] for m in models])
    fig = _new_figure(11.0, 3.6)
    ax_clash, ax_before, ax_after = fig.subplots(1, 3)
    for key, marker, label in (("before", "o", "before refinement"), ("after", "s", "after refinement")):
        ax_clash.plot(x, _nan(m[f"clashes_{key}"] for m in models), marker=marker, ms=4, lw=0.8, label=label)
    ax_clash.set_ylabel("heavy-atom clashes")
    ax_clash.set_title("clashes (< 2.0 A)", fontsize=10)
    ax_clash.legend(fontsize=8)
    _integer_axis(ax_clash.yaxis)
    _energy_panel(ax_before, x, _nan(m["energy_before_kj_mol"] for m in models),
                  "energy before refinement", "tab:blue")
    _energy_panel(ax_after, x, _nan(m["energy_after_kj_mol"] for m in models),
                  "energy after refinement", "tab:orange")
    for ax in (ax_clash, ax_before, ax_after):
        _integer_axis(ax.xaxis)
        ax.set_xlabel("structure (frame x samples + sample)")
        ax.grid(alpha=0.3)
    return fig


def plot_refinement(refinement: dict) -> str:
    """Heavy-atom clashes and energy of each structure before and after refinement.

    Three panels: clashes (before and after), the energy before refinement
    and the energy after it, each energy on its own linear axis in kJ/mol:
    the two differ by thousands of kJ/mol, and a shared (or symlog) axis
    hides the spread between structures. Values far off the others (a
    structure with an overlapping atom pair before refinement, say) do not
    set the axis (:func:`~.numeric.bulk_range`); they are drawn as red
    triangles at the edge with their value written beside them.

    Parameters
    ----------
    refinement : dict
        The ``refinement`` entry of a summary (not None).

    Returns
    -------
    str
        PNG image, base64-encoded.
    """
    return _png_base64(refinement_figure(refinement))


def plot_ramachandran(phi, psi) -> str:
    """Ramachandran plot: phi/psi histogram, with the points on top when there are few.

    Parameters
    ----------
    phi, psi : numpy.ndarray
        Backbone dihedrals in degrees, same shape, NaN where missing.

    Returns
    -------
    str
        PNG image, base64-encoded.
    """
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
        ax.scatter(wrap_degrees(phi[keep]), wrap_degrees(psi[keep]), s=5, c="k", alpha=0.6, lw=0)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-180, 180)
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(-180, 181, 60))
    ax.set_xlabel("phi (degrees)")
    ax.set_ylabel("psi (degrees)")
    ax.set_aspect("equal")
    return _png_base64(fig)


def plot_chi(chi: dict) -> str:
    """chi1/chi2 histograms, one panel per residue type.

    Parameters
    ----------
    chi : dict
        Residue name -> ``(n, n_chi)`` angles in degrees (not empty).

    Returns
    -------
    str
        PNG image, base64-encoded.
    """
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


def plot_diversity(per_frame) -> str:
    """Histogram of the per-frame sample diversity.

    Parameters
    ----------
    per_frame : array_like
        Mean pairwise RMSD of each frame's samples, Angstrom.

    Returns
    -------
    str
        PNG image, base64-encoded.
    """
    values = np.asarray(per_frame, dtype=np.float64)
    fig = _new_figure(5.2, 3.4)
    ax = fig.subplots()
    ax.hist(values, bins=max(5, min(30, len(values) // 2)), color="tab:green")
    ax.set_xlabel("mean pairwise heavy-atom RMSD of a frame's samples (A)")
    ax.set_ylabel("frames")
    _integer_axis(ax.yaxis)
    return _png_base64(fig)
