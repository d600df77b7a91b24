"""Periodic density grids of dihedral angles: smoothing, lookup, contour levels.

The Ramachandran (:mod:`~backmap_plugin.core.ramachandran`) and rotamer
(:mod:`~backmap_plugin.core.rotamer_density`) checks score angles against a
reference density on a regular, periodic grid in degrees. The builders in
``workflows/tables/`` make the grids with :func:`smoothed_histogram` and the
contour levels with :func:`enclosing_level`; the checks read them with
:func:`lookup`. Grid cell ``i`` of an axis is centred on
``start + (i + 0.5) * period / n``. Pure numpy (and scipy for the smoothing).
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["ALLOWED", "FAVOURED", "OUTLIER", "enclosing_level", "grade", "load_grids", "lookup", "smoothed_histogram"]

#: Grades returned by :func:`grade`.
FAVOURED, ALLOWED, OUTLIER = 0, 1, 2


def smoothed_histogram(points, weights, shape, start, period, sigma):
    """Weighted histogram of angles on a periodic grid, smoothed with a wrapped Gaussian.

    Parameters
    ----------
    points : array_like, shape (n, d)
        Angles in degrees (any range; reduced modulo ``period``).
    weights : array_like, shape (n,)
        Non-negative weight of every point.
    shape : tuple of int, length d
        Number of cells per axis.
    start, period : sequence of float, length d
        Lower edge and period of every axis (degrees).
    sigma : float
        Standard deviation of the Gaussian kernel in degrees (the same on
        every axis), wrapped around the period.

    Returns
    -------
    numpy.ndarray, shape ``shape``
        Density normalised to a total of 1 over the grid (per cell, not per
        square degree).
    """
    from scipy.ndimage import gaussian_filter

    pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
    shape = tuple(int(n) for n in shape)
    index = []
    for k, n in enumerate(shape):
        u = np.mod(pts[:, k] - start[k], period[k]) / period[k] * n
        index.append(np.minimum(u.astype(np.int64), n - 1))
    hist = np.zeros(shape)
    np.add.at(hist, tuple(index), np.asarray(weights, dtype=np.float64))
    cells = [sigma / (period[k] / n) for k, n in enumerate(shape)]
    smooth = gaussian_filter(hist, sigma=cells, mode="wrap", truncate=5.0)
    return smooth / smooth.sum()


def lookup(grid, points, start, period):
    """Multilinear, periodic interpolation of a grid at angles.

    Parameters
    ----------
    grid : array_like, shape (n_1, ..., n_d)
        Values at the cell centres.
    points : array_like, shape (..., d)
        Angles in degrees (any range).
    start, period : sequence of float, length d
        As for :func:`smoothed_histogram`.

    Returns
    -------
    numpy.ndarray, shape ``points.shape[:-1]``
    """
    grid = np.asarray(grid, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64)
    lead = pts.shape[:-1]
    pts = pts.reshape(-1, grid.ndim)
    lower, fraction = [], []
    for k, n in enumerate(grid.shape):
        u = np.mod(pts[:, k] - start[k], period[k]) / period[k] * n - 0.5
        i0 = np.floor(u)
        lower.append(i0.astype(np.int64))
        fraction.append(u - i0)
    out = np.zeros(len(pts))
    for corner in range(2 ** grid.ndim):
        weight = np.ones(len(pts))
        index = []
        for k, n in enumerate(grid.shape):
            up = (corner >> k) & 1
            weight = weight * (fraction[k] if up else 1.0 - fraction[k])
            index.append(np.mod(lower[k] + up, n))
        out += weight * grid[tuple(index)]
    return out.reshape(lead)


def enclosing_level(values, weights, fraction):
    """The density level whose super-level set holds ``fraction`` of the reference points.

    A point is inside the contour when its density is at least the level:
    the (weighted) fraction of reference points inside is ``fraction`` (the
    lowest level that reaches it).

    Parameters
    ----------
    values : array_like, shape (n,)
        Density (or log density) at every reference point.
    weights : array_like, shape (n,)
        Weights of the points.
    fraction : float
        Fraction of the weight to enclose, in (0, 1].

    Returns
    -------
    float
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(-v, kind="stable")
    cumulative = np.cumsum(w[order]) / w.sum()
    k = min(int(np.searchsorted(cumulative, fraction - 1e-12)), len(v) - 1)
    return float(v[order][k])


def load_grids(directory, name):
    """A table of grids and its provenance: ``name.npz`` and ``name.json`` in ``directory``.

    Parameters
    ----------
    directory : str
        Folder of the table.
    name : str
        File name without extension.

    Returns
    -------
    grids : dict
        Array name -> grid (float64).
    info : dict
        The JSON file.
    """
    with np.load(os.path.join(directory, f"{name}.npz")) as data:
        grids = {key: data[key].astype(np.float64) for key in data.files}
    with open(os.path.join(directory, f"{name}.json"), encoding="utf-8") as handle:
        info = json.load(handle)
    return grids, info


def grade(density, favoured_level, allowed_level):
    """Favoured / allowed / outlier grade of densities against two contour levels.

    Parameters
    ----------
    density : array_like
        Density (or log density) at the scored points.
    favoured_level, allowed_level : float
        Levels (same scale as ``density``) at and above which a point is
        favoured, allowed.

    Returns
    -------
    numpy.ndarray of int8, same shape
        :data:`FAVOURED`, :data:`ALLOWED` or :data:`OUTLIER`.
    """
    d = np.asarray(density)
    return np.where(d >= favoured_level, FAVOURED, np.where(d >= allowed_level, ALLOWED, OUTLIER)).astype(np.int8)
