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

from backmap_plugin.report.numeric import angle_histogram, ramachandran_histogram, wrap_degrees

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


def plot_refinement(refinement: dict) -> str:
    """Heavy-atom clashes and energy of each structure before and after refinement.

    Parameters
    ----------
    refinement : dict
        The ``refinement`` entry of a summary (not None).

    Returns
    -------
    str
        PNG image, base64-encoded.
    """
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
