"""Numerical helpers of the report: pure numpy functions over arrays.

Dihedral-angle histograms (angles in degrees), axis ranges that keep a few
far-off values from flattening a plot (:func:`bulk_range`); sample
diversity per frame is :func:`backmap_plugin.core.metrics.frame_diversity`,
re-exported here.
"""

from __future__ import annotations

import numpy as np

from backmap_plugin.core.metrics import frame_diversity

__all__ = ["angle_histogram", "bulk_range", "frame_diversity", "ramachandran_histogram", "wrap_degrees"]


def wrap_degrees(angles) -> np.ndarray:
    """Angles in degrees wrapped to [-180, 180); NaN dropped, flattened.

    Parameters
    ----------
    angles : array_like
        Angles in degrees, any shape.

    Returns
    -------
    numpy.ndarray, shape (n_finite,)
    """
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
    counts, _ = np.histogram(wrap_degrees(angles), bins=edges)
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
    counts, _, _ = np.histogram2d(wrap_degrees(phi[keep]), wrap_degrees(psi[keep]), bins=[edges, edges])
    return counts.astype(np.int64), edges


def bonded_dihedrals(xyz, quads, pair, max_distance: float) -> np.ndarray:
    """Which dihedrals of each frame have two given atoms bonded (close enough).

    Parameters
    ----------
    xyz : numpy.ndarray, shape (n_frames, n_atoms, 3)
        Coordinates in Angstrom.
    quads : numpy.ndarray of int, shape (n_quads, 4)
        Atom indices of the dihedrals.
    pair : tuple of int
        Positions (0-3) within a quad of the two atoms to check.
    max_distance : float
        Largest distance, Angstrom, that counts as bonded.

    Returns
    -------
    numpy.ndarray of bool, shape (n_frames, n_quads)
        True where the atoms ``pair`` of the quad are at most
        ``max_distance`` apart.
    """
    if len(quads) == 0:
        return np.zeros((len(xyz), 0), dtype=bool)
    a, b = quads[:, pair[0]], quads[:, pair[1]]
    return np.linalg.norm(xyz[:, a] - xyz[:, b], axis=-1) <= max_distance


def bulk_range(values, k: float = 5.0, pad: float = 0.08) -> tuple:
    """Linear axis limits that hold the bulk of the values, and the values left outside.

    A freshly backmapped structure with one overlapping atom pair can have an
    amber14 energy of 1e6 kJ/mol while the others sit near 4e3 kJ/mol; on one
    linear axis that single value flattens all others. Values more than
    ``k`` robust standard deviations (1.4826 x the median absolute
    deviation) from the median are *outliers*: the limits are set by the
    rest, and a plot marks the outliers at the edge with their value written
    out. The median and its deviation are not moved by a few far values,
    even among four. The deviation is taken as at least 25 % of the
    median's magnitude (and at least 1), so nearly equal values are never
    split into bulk and outliers.

    Parameters
    ----------
    values : array_like
        Any shape; NaN and infinite values are ignored (never outliers).
    k : float
        Largest distance from the median, in robust standard deviations.
    pad : float
        Margin added on either side, as a fraction of the bulk's span.

    Returns
    -------
    (low, high) : tuple of float
        Axis limits, ``low < high``; ``(-1.0, 1.0)`` without a finite value.
    outside : numpy.ndarray of bool
        Same shape as ``values``: True where a finite value lies outside
        ``[low, high]``.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return (-1.0, 1.0), np.zeros(v.shape, dtype=bool)
    x = v[finite]
    median = float(np.median(x))
    scale = max(1.4826 * float(np.median(np.abs(x - median))), 0.25 * abs(median), 1.0)
    with np.errstate(invalid="ignore"):
        inside = finite & (np.abs(v - median) <= k * scale)
    lo, hi = float(v[inside].min()), float(v[inside].max())
    margin = pad * max(hi - lo, 0.02 * abs(median), 1.0)
    return (float(lo - margin), float(hi + margin)), finite & ~inside
