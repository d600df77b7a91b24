"""Scores for heavy-atom protein structures.

One scoring code for every tool (our builders, PULCHRA, the reference
structures), so numbers from tests and benchmark scripts are comparable.

Conventions
-----------
* Lengths are in Angstrom.
* Coordinates are float arrays shaped ``(n_frames, n_atoms, 3)``. Every
  function also accepts a single structure ``(n_atoms, 3)``, which is treated
  as one frame; per-frame results then have length 1.
* Topology is passed as plain arrays: ``bonds`` is an int array
  ``(n_bonds, 2)`` of atom indices; per-residue index arrays ``n_idx``,
  ``ca_idx``, ``c_idx``, ``cb_idx`` hold one atom index per residue, or -1
  where the atom is absent (GLY has no CB).

All functions are pure: inputs are never modified.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "bond_lengths",
    "fraction_bonds_off",
    "chirality",
    "count_d_residues",
    "bonded_exclusions",
    "clashes",
    "clashes_per_100_residues",
    "kabsch_rmsd",
    "match_equivalent_atoms",
    "rmsd_no_superposition",
    "sample_diversity",
]


# ---------------------------------------------------------------- helpers


def _as_frames(xyz, name="xyz"):
    """Return coordinates as float64 ``(n_frames, n_atoms, 3)``.

    A single structure ``(n_atoms, 3)`` becomes one frame.
    """
    arr = np.asarray(xyz, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(
            f"{name} must be shaped (n_frames, n_atoms, 3) or (n_atoms, 3), "
            f"got {np.shape(xyz)}"
        )
    return arr


def _as_bonds(bonds, n_atoms):
    """Return bonds as int64 ``(n_bonds, 2)``, checking the atom indices."""
    arr = np.asarray(bonds)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"bonds must be shaped (n_bonds, 2), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"bonds must hold integer atom indices, got {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n_atoms:
        raise ValueError(
            f"bond atom indices must lie in [0, {n_atoms}), "
            f"got range [{arr.min()}, {arr.max()}]"
        )
    return arr


def _as_mask(mask, n_atoms):
    """Return a boolean atom mask ``(n_atoms,)``; None selects all atoms."""
    if mask is None:
        return np.ones(n_atoms, dtype=bool)
    arr = np.asarray(mask)
    if arr.dtype != bool or arr.shape != (n_atoms,):
        raise ValueError(
            f"mask must be a boolean array shaped ({n_atoms},), "
            f"got dtype {arr.dtype} shape {arr.shape}"
        )
    if not arr.any():
        raise ValueError("mask selects no atoms")
    return arr


def _paired_frames(xyz, ref, mask):
    """Return masked ``(n_frames, n_sel, 3)`` views of xyz and ref.

    ``ref`` with one frame is broadcast over the frames of ``xyz``.
    """
    x = _as_frames(xyz, "xyz")
    r = _as_frames(ref, "ref")
    if x.shape[1] != r.shape[1]:
        raise ValueError(
            f"xyz has {x.shape[1]} atoms but ref has {r.shape[1]}"
        )
    if r.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"ref must have 1 frame or as many as xyz ({x.shape[0]}), "
            f"got {r.shape[0]}"
        )
    sel = _as_mask(mask, x.shape[1])
    x = x[:, sel]
    r = np.broadcast_to(r[:, sel], x.shape)
    return x, r


def _rms_deviation(a, b):
    """Root mean square distance over atoms of matched ``(..., n, 3)`` arrays."""
    return np.sqrt(np.mean(np.sum((a - b) ** 2, axis=-1), axis=-1))


# ---------------------------------------------------------------- bonds


def bond_lengths(xyz, bonds):
    """Bond lengths per frame.

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates in Angstrom.
    bonds : array_like of int, shape (n_bonds, 2)
        Atom index pairs.

    Returns
    -------
    numpy.ndarray, shape (n_frames, n_bonds)
        Distance between the two atoms of each bond, in Angstrom.
    """
    x = _as_frames(xyz)
    b = _as_bonds(bonds, x.shape[1])
    return np.linalg.norm(x[:, b[:, 0]] - x[:, b[:, 1]], axis=-1)


def fraction_bonds_off(xyz, bonds, reference, tol=0.1):
    """Fraction of bonds whose length is off the reference by more than tol.

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates to score, in Angstrom.
    bonds : array_like of int, shape (n_bonds, 2)
        Atom index pairs.
    reference : array_like
        Either ideal bond lengths shaped ``(n_bonds,)`` (one dimension), or
        reference coordinates shaped like ``xyz`` (or ``(n_atoms, 3)``,
        broadcast over frames) from which reference lengths are computed
        frame by frame.
    tol : float, optional
        Allowed absolute deviation in Angstrom; a bond counts as off when
        ``|d - d_ref| > tol`` (strictly).

    Returns
    -------
    float
        Off bonds divided by ``n_frames * n_bonds``.

    Raises
    ------
    ValueError
        If there are no bonds, or ``reference`` does not match.
    """
    d = bond_lengths(xyz, bonds)
    if d.shape[1] == 0:
        raise ValueError("no bonds to score")
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim == 1:
        if ref.shape[0] != d.shape[1]:
            raise ValueError(
                f"reference lengths have {ref.shape[0]} entries for "
                f"{d.shape[1]} bonds"
            )
        d_ref = ref[None, :]
    else:
        d_ref = bond_lengths(ref, bonds)
        if d_ref.shape[0] not in (1, d.shape[0]):
            raise ValueError(
                f"reference coordinates have {d_ref.shape[0]} frames, "
                f"xyz has {d.shape[0]}"
            )
    return float(np.mean(np.abs(d - d_ref) > tol))


# ---------------------------------------------------------------- chirality


def chirality(xyz, n_idx, ca_idx, c_idx, cb_idx):
    """Signed volume at each CA, the chirality of each residue.

    ``V = (N - CA) . ((C - CA) x (CB - CA))``

    With this definition every L-amino acid has ``V > 0`` (about +2.5
    Angstrom^3 for ideal geometry) and every D-amino acid ``V < 0``; the
    mirror image of a structure flips every sign. (Checked on real
    L-proteins, e.g. PDB 1L2Y, where all non-GLY residues come out positive.)

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates in Angstrom.
    n_idx, ca_idx, c_idx, cb_idx : array_like of int, shape (n_res,)
        Atom index of N, CA, C and CB of each residue; -1 where absent.

    Returns
    -------
    numpy.ndarray, shape (n_frames, n_res)
        Signed volume in Angstrom^3; NaN for residues lacking any of the
        four atoms (e.g. GLY, which has no CB).
    """
    x = _as_frames(xyz)
    idx = np.stack(
        [np.asarray(a, dtype=np.int64).reshape(-1) for a in (n_idx, ca_idx, c_idx, cb_idx)]
    )
    if idx.size and idx.max() >= x.shape[1]:
        raise ValueError(
            f"residue atom index {idx.max()} out of range for {x.shape[1]} atoms"
        )
    present = np.all(idx >= 0, axis=0)
    safe = np.where(idx >= 0, idx, 0)
    n, ca, c, cb = (x[:, safe[k]] for k in range(4))
    vol = np.einsum("fri,fri->fr", n - ca, np.cross(c - ca, cb - ca))
    vol[:, ~present] = np.nan
    return vol


def count_d_residues(xyz, n_idx, ca_idx, c_idx, cb_idx):
    """Number of D residues, summed over frames.

    A residue is D when its :func:`chirality` volume is strictly negative;
    residues without CB (NaN volume) never count.

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates in Angstrom.
    n_idx, ca_idx, c_idx, cb_idx : array_like of int, shape (n_res,)
        Atom index of N, CA, C and CB of each residue; -1 where absent.

    Returns
    -------
    int
        Count of (frame, residue) pairs with D chirality.
    """
    vol = chirality(xyz, n_idx, ca_idx, c_idx, cb_idx)
    return int(np.count_nonzero(vol < 0))


# ---------------------------------------------------------------- clashes


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a 1-D array (sort and compare: faster than numpy 2's hashing ``np.unique``)."""
    keys = np.sort(keys)
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys


def bonded_exclusions(n_atoms, bonds, max_sep=3):
    """Atom pairs at most ``max_sep`` bonds apart in the bond graph.

    With the default ``max_sep=3`` these are the 1-2, 1-3 and 1-4 pairs.
    Paths are extended one bond at a time over the bond list (a join of
    pair lists), so it scales with the number of pairs, not ``n_atoms ** 2``.

    Parameters
    ----------
    n_atoms : int
        Number of atoms (graph nodes).
    bonds : array_like of int, shape (n_bonds, 2)
        Atom index pairs; direction, duplicates and self-bonds are ignored.
    max_sep : int, optional
        Largest graph distance (number of bonds) to include.

    Returns
    -------
    numpy.ndarray of int64, shape (n_pairs, 2)
        Pairs ``(i, j)`` with ``i < j``, sorted lexicographically.
    """
    b = _as_bonds(bonds, n_atoms)
    b = b[b[:, 0] != b[:, 1]]
    if max_sep < 1 or len(b) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    # pairs as one int64 key (i * n_atoms + j), so that sorting orders them by first atom, then second.
    # directed: both directions of every bond; the neighbours of atom a are directed[start[a]:start[a + 1]]
    keys = _sorted_unique(np.concatenate([b[:, 0] * n_atoms + b[:, 1], b[:, 1] * n_atoms + b[:, 0]]))
    directed = np.stack([keys // n_atoms, keys % n_atoms], axis=1)
    start = np.searchsorted(directed[:, 0], np.arange(n_atoms + 1))
    degree = np.diff(start)
    reach, frontier = keys, directed
    for _ in range(max_sep - 1):
        # every walk (i .. j) of the frontier extended by each bond (j, k)
        count = degree[frontier[:, 1]]
        offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        first = np.repeat(frontier[:, 0], count)
        k = directed[np.repeat(start[frontier[:, 1]], count) + offset, 1]
        walk = first != k
        step = _sorted_unique(first[walk] * n_atoms + k[walk])
        grown = _sorted_unique(np.concatenate([reach, step]))
        if len(grown) == len(reach):
            break
        reach, frontier = grown, np.stack([step // n_atoms, step % n_atoms], axis=1)
    pairs = np.stack([reach // n_atoms, reach % n_atoms], axis=1)
    return pairs[pairs[:, 0] < pairs[:, 1]]


def _close_pairs(frame, cutoff):
    """Pairs ``(i, j)``, ``i < j``, of one frame closer than ``cutoff``."""
    from scipy.spatial import cKDTree  # (here: the build path imports this module and never calls it)

    pairs = cKDTree(frame).query_pairs(cutoff, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.sort(pairs.astype(np.int64), axis=1)
    d = np.linalg.norm(frame[pairs[:, 0]] - frame[pairs[:, 1]], axis=1)
    return pairs[d < cutoff]


def clashes(xyz, bonds, cutoff=2.0, max_sep=3):
    """Number of clashing atom pairs in each frame.

    A clash is a pair of atoms closer than ``cutoff`` that are more than
    ``max_sep`` bonds apart (so by default 1-2, 1-3 and 1-4 pairs are
    excluded). Atoms in different connected components (e.g. separate
    chains) are never excluded.

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates in Angstrom; must be finite.
    bonds : array_like of int, shape (n_bonds, 2)
        Atom index pairs.
    cutoff : float, optional
        Distance in Angstrom below which (strictly) a pair clashes.
    max_sep : int, optional
        Pairs at most this many bonds apart are not counted.

    Returns
    -------
    numpy.ndarray of int64, shape (n_frames,)
        Clash count per frame.
    """
    x = _as_frames(xyz)
    if not np.all(np.isfinite(x)):
        raise ValueError("xyz holds non-finite coordinates")
    n_atoms = x.shape[1]
    excl = bonded_exclusions(n_atoms, bonds, max_sep)
    excl_codes = excl[:, 0] * n_atoms + excl[:, 1]  # sorted: excl is lexsorted
    counts = np.zeros(x.shape[0], dtype=np.int64)
    for f in range(x.shape[0]):
        pairs = _close_pairs(x[f], cutoff)
        codes = pairs[:, 0] * n_atoms + pairs[:, 1]
        counts[f] = np.count_nonzero(
            ~np.isin(codes, excl_codes, assume_unique=True)
        )
    return counts


def clashes_per_100_residues(xyz, bonds, n_residues, cutoff=2.0, max_sep=3):
    """Mean clash count over frames, per 100 residues.

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates in Angstrom.
    bonds : array_like of int, shape (n_bonds, 2)
        Atom index pairs.
    n_residues : int
        Number of residues in the structure (positive).
    cutoff, max_sep : optional
        As in :func:`clashes`.

    Returns
    -------
    float
        ``mean(clashes) * 100 / n_residues``.
    """
    if n_residues <= 0:
        raise ValueError(f"n_residues must be positive, got {n_residues}")
    counts = clashes(xyz, bonds, cutoff=cutoff, max_sep=max_sep)
    return float(np.mean(counts) * 100.0 / n_residues)


# ---------------------------------------------------------------- RMSD


def kabsch_rotation_of(h):
    """Proper rotations ``R`` (..., 3, 3) from covariance matrices ``h = sum p^T q`` (..., 3, 3).

    ``R`` minimises ``|p @ R - q|`` over proper rotations (no reflection)
    for the centred point sets that ``h`` sums over.
    """
    u, _, vt = np.linalg.svd(h)
    sign = np.sign(np.linalg.det(u @ vt))
    sign[sign == 0] = 1.0
    u = u.copy()
    u[..., :, -1] *= sign[..., None]  # no reflection
    return u @ vt


def _kabsch_rotation(p, q):
    """Proper rotations ``R`` (n_frames, 3, 3) minimising ``|p @ R - q|``.

    ``p`` and ``q`` are centred ``(n_frames, n, 3)`` arrays.
    """
    return kabsch_rotation_of(np.einsum("fni,fnj->fij", p, q))


def kabsch_rmsd(xyz, ref, mask=None):
    """RMSD after optimal superposition (rotation and translation).

    The superposition is a proper rotation (no reflection), so a mirror
    image does not superpose onto the original. The fit and the RMSD both
    use only the atoms selected by ``mask``.

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates in Angstrom.
    ref : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Reference coordinates; one frame is broadcast over all frames.
    mask : array_like of bool, shape (n_atoms,), optional
        Atoms to fit and score; all atoms when None.

    Returns
    -------
    numpy.ndarray, shape (n_frames,)
        RMSD in Angstrom per frame.
    """
    x, r = _paired_frames(xyz, ref, mask)
    p = x - x.mean(axis=1, keepdims=True)
    q = r - r.mean(axis=1, keepdims=True)
    rot = _kabsch_rotation(p, q)
    return _rms_deviation(p @ rot, q)


def match_equivalent_atoms(xyz, ref, pairs, group, mask=None):
    """Relabel chemically equivalent atoms the way ``ref`` labels them.

    Which of two equivalent atoms (ASP OD1/OD2, a PHE ring's CD1/CD2 and
    CE1/CE2 ...) gets which name is a convention that structures do not all
    follow, so an RMSD over names counts a correct side chain whose names
    are the other way round as wrong. Per frame, ``xyz`` is superposed on
    ``ref`` (over ``mask``, as :func:`kabsch_rmsd` does), and each group of
    pairs is swapped where swapping brings its atoms closer to ``ref``
    (sum of squared distances); every pair of a group swaps together (a
    ring's two pairs are one group).

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates in Angstrom.
    ref : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Reference coordinates; one frame is broadcast over all frames.
    pairs : array_like of int, shape (n_pairs, 2)
        Atom indices of the equivalent pairs.
    group : array_like of int, shape (n_pairs,)
        Group of each pair (0 .. n_groups - 1).
    mask : array_like of bool, shape (n_atoms,), optional
        Atoms of the superposition; all atoms when None.

    Returns
    -------
    numpy.ndarray, shape (n_frames, n_atoms, 3)
        ``xyz`` with the chosen pairs swapped (a copy, in ``xyz``'s frame).
    """
    x = np.array(_as_frames(xyz, "xyz"))
    r = np.broadcast_to(_as_frames(ref, "ref"), x.shape)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    group = np.asarray(group, dtype=np.int64).reshape(-1)
    if len(pairs) == 0:
        return x
    p, q = _paired_frames(x, r, mask)
    rot = _kabsch_rotation(p - p.mean(axis=1, keepdims=True), q - q.mean(axis=1, keepdims=True))
    fitted = (x - p.mean(axis=1, keepdims=True)) @ rot + q.mean(axis=1, keepdims=True)
    a, b = fitted[:, pairs[:, 0]], fitted[:, pairs[:, 1]]
    ra, rb = r[:, pairs[:, 0]], r[:, pairs[:, 1]]
    gain = (np.sum((a - ra) ** 2 + (b - rb) ** 2, axis=-1) - np.sum((b - ra) ** 2 + (a - rb) ** 2, axis=-1))
    n_groups = int(group.max()) + 1
    per_group = np.zeros((x.shape[0], n_groups))
    for f in range(x.shape[0]):
        per_group[f] = np.bincount(group, weights=gain[f], minlength=n_groups)
    frame, pair = np.nonzero(per_group[:, group] > 0)
    first, second = pairs[pair, 0], pairs[pair, 1]
    x[frame, first], x[frame, second] = x[frame, second], x[frame, first].copy()
    return x


def rmsd_no_superposition(xyz, ref, mask=None):
    """RMSD in the given frame, without any superposition.

    Parameters
    ----------
    xyz : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Coordinates in Angstrom.
    ref : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Reference coordinates; one frame is broadcast over all frames.
    mask : array_like of bool, shape (n_atoms,), optional
        Atoms to score; all atoms when None.

    Returns
    -------
    numpy.ndarray, shape (n_frames,)
        RMSD in Angstrom per frame; never below :func:`kabsch_rmsd`.
    """
    x, r = _paired_frames(xyz, ref, mask)
    return _rms_deviation(x, r)


def frame_diversity(samples, mask=None) -> np.ndarray:
    """Mean pairwise RMSD between the samples of each CG frame.

    No superposition: all samples of a frame are built on the same
    coarse-grained frame, so they share one coordinate system.

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
        raise ValueError(
            f"samples must be shaped (n_frames, n_samples, n_atoms, 3), got {s.shape}"
        )
    n_samples = s.shape[1]
    if n_samples < 2:
        return np.zeros(s.shape[0])
    s = s[:, :, _as_mask(mask, s.shape[2])]
    i_idx, j_idx = np.triu_indices(n_samples, k=1)
    per_pair = np.stack(
        [_rms_deviation(s[:, i], s[:, j]) for i, j in zip(i_idx, j_idx)], axis=1
    )  # (n_frames, n_pairs)
    return per_pair.mean(axis=1)


def sample_diversity(samples, mask=None):
    """Mean over frames of :func:`frame_diversity`.

    Parameters
    ----------
    samples, mask
        As for :func:`frame_diversity`.

    Returns
    -------
    float
        0.0 when ``n_samples == 1``.
    """
    return float(np.mean(frame_diversity(samples, mask)))
