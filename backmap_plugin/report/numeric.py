"""Numerical helpers of the report: pure numpy functions over arrays.

Dihedral-angle histograms (angles in degrees); sample diversity per frame
is :func:`backmap_plugin.core.metrics.frame_diversity`, re-exported here.
"""

from __future__ import annotations

import numpy as np

from backmap_plugin.core.metrics import frame_diversity

__all__ = ["angle_histogram", "frame_diversity", "ramachandran_histogram", "wrap_degrees"]


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
