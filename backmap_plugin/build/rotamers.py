"""Side-chain rotamer library derived from the training corpus.

The library (``tables/rotamers.json``) is built by
``workflows/tables/build_rotamers.py`` from the train split of the corpus
only. Every residue type with chi angles has up to K rotamers: the circular
mean chi angles of one combination of chi sectors and its frequency. See the
build script for the binning. The last chi of ASP, GLU, PHE and TYR is
symmetric by 180 degrees (:attr:`RotamerLibrary.period`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from backmap_plugin.core import chemistry as chem

_SYMMETRIC_LAST = {"ASP": 1, "GLU": 2, "PHE": 1, "TYR": 1}


@dataclass(frozen=True)
class RotamerLibrary:
    """Rotamers per residue type, indexed like :data:`chemistry.RESIDUE_NAMES`.

    Attributes
    ----------
    chis : numpy.ndarray
        (n_types, K, 4) chi angles in radians, NaN for absent chis and
        rotamers.
    freq : numpy.ndarray
        (n_types, K) frequencies, summing to 1 over the rotamers of a type
        that has any, 0 for padding.
    count : numpy.ndarray
        (n_types,) number of rotamers of each type (0 for ALA and GLY).
    sd : numpy.ndarray
        (n_types, K, 4) circular standard deviation of each chi inside its
        rotamer, radians (NaN padded).
    period : numpy.ndarray
        (n_types, 4) period of each chi in radians: pi for the symmetric last
        chi of ASP, GLU, PHE and TYR, else 2 pi.
    pro_cd_torsion : dict
        Median ``dihedral(CD, N, CA, CB)`` of proline in degrees per pucker
        (``"endo"``: chi1 > 0, ``"exo"``), over the corpus.
    source : str
        Where the library comes from (train split only).
    """

    chis: np.ndarray
    freq: np.ndarray
    count: np.ndarray
    sd: np.ndarray
    period: np.ndarray
    pro_cd_torsion: dict
    source: str


def _read_json() -> dict:
    text = resources.files("backmap_plugin.build").joinpath("tables").joinpath("rotamers.json").read_text()
    return json.loads(text)


@functools.lru_cache(maxsize=None)
def load_rotamers() -> RotamerLibrary:
    """Load the shipped rotamer library (cached; arrays are read-only).

    Returns
    -------
    RotamerLibrary
        Arrays indexed by residue type (:data:`chemistry.RESIDUE_INDEX`):
        ``chis`` (n_types, K, 4) radians NaN padded, ``freq`` (n_types, K),
        ``count`` (n_types,), with K the largest number of rotamers of any
        type.

    Raises
    ------
    FileNotFoundError
        When the package data file is missing.
    """
    data = _read_json()
    residues = data["residues"]
    n_types = len(chem.RESIDUE_NAMES)
    k_max = max((len(v) for v in residues.values()), default=0)
    chis = np.full((n_types, k_max, chem.MAX_CHIS), np.nan)
    sd = np.full((n_types, k_max, chem.MAX_CHIS), np.nan)
    freq = np.zeros((n_types, k_max))
    count = np.zeros(n_types, dtype=np.int64)
    period = np.full((n_types, chem.MAX_CHIS), 2.0 * np.pi)
    for name, k in _SYMMETRIC_LAST.items():
        period[chem.RESIDUE_INDEX[name], k] = np.pi
    for name, rotamers in residues.items():
        t = chem.RESIDUE_INDEX[name]
        count[t] = len(rotamers)
        for j, rot in enumerate(rotamers):
            values = np.deg2rad(np.asarray(rot["chi"], dtype=float))
            chis[t, j, : len(values)] = values
            if "sd" in rot:
                sd[t, j, : len(values)] = np.deg2rad(np.asarray(rot["sd"], dtype=float))
            freq[t, j] = rot["freq"]
        total = freq[t].sum()
        if total > 0:
            freq[t] /= total
    for array in (chis, sd, freq, count, period):
        array.setflags(write=False)
    return RotamerLibrary(
        chis=chis,
        freq=freq,
        count=count,
        sd=sd,
        period=period,
        pro_cd_torsion=dict(data.get("pro_cd_torsion", {})),
        source=str(data.get("source", "")),
    )
