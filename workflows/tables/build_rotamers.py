"""Derive the side-chain rotamer library of :mod:`backmap_plugin.build.rotamers` from the training corpus.

Only the train split is read (default ``../shared/data/train`` relative to
the repository root); the visible test set is never touched. Of every file
the first frame is used. Residue names are normalised with
:func:`backmap_plugin.core.topology.read_residues`, atoms arranged in slots with
:func:`~backmap_plugin.core.topology.gather_slots` and the chi angles measured with
:func:`backmap_plugin.core.geometry.chi_angles`. A residue missing any atom of any
of its chi angles is left out. Files that fail to load or to normalise (e.g.
an unknown modified residue) are skipped and counted.

Weighting
---------
Large families (antibodies, kinase models, lactate dehydrogenases) hold many
near-identical files. Every residue is therefore weighted by
``1 / (number of train files in its cluster30)`` (from ``manifest.csv`` next
to the data folder; weight 1 where the manifest or the entry is missing), so
each sequence cluster counts about as much as one structure of it. The
frequencies of the library are weighted frequencies; the raw residue counts
are stored as well.

Rotamer definition (binning of each chi angle, degrees)
-------------------------------------------------------
* Rotation about a bond between two sp3 atoms (chi1 of every residue but
  PRO; chi2 of ILE, LEU, MET, GLU, GLN, LYS, ARG; chi3 of MET, LYS, ARG; chi4
  of LYS): three 120-degree sectors of ``chi mod 360``: g+ [0, 120),
  t [120, 240), g- [240, 360). The corpus distributions have their minima at
  0, 120 and 240.
* ARG chi4 (CD-NE, NE is sp2): the same three sectors; its modes lie at about
  +85, 180 and -85 degrees, well inside them.
* Symmetric last chi (ASP chi2, GLU chi3, PHE chi2, TYR chi2: swapping the two
  terminal atoms gives the same molecule): the angle is reduced mod 180 and
  binned into three 60-degree sectors centred on the dominant mode. Carboxylates
  (ASP, GLU): centres 0, 60, -60 (sectors [-30, 30), [30, 90), [-90, -30) mod
  180); aromatic rings (PHE, TYR): centres 90, 150, 30 (the ring perpendicular
  to the CA-CB bond at 90 is the mode). Thirty-degree sectors would split the
  broad modes into several rotamers. The stored value lies in [-90, 90) for
  the carboxylates and in [0, 180) for the rings; the angle plus 180 is the
  same conformation.
* Non-symmetric last chi to a planar group (ASN chi2, GLN chi3, HIS chi2,
  TRP chi2): six 60-degree sectors of ``chi mod 360`` starting at 0 (centres
  30, 90, ..., 330); the modes of HIS and TRP at about +-90 are centred.
* PRO chi1: two sectors by sign, ``endo`` (chi1 > 0, C-gamma endo, "down")
  and ``exo`` (chi1 <= 0, C-gamma exo, "up").

A rotamer is a combination of sectors. Rotamers with a (weighted) frequency
of at least ``--min-freq`` (default 2 %) are kept, at most ``--max-rotamers``
(default 8) per residue, sorted by frequency; frequencies are renormalised over
the kept set. The chi values of a rotamer are the (weighted) circular means
of its members (for the symmetric chi, of the doubled angle), ``sd`` their
circular standard deviations.

Also stored: the median over the corpus of the proline ring torsion
``dihedral(CD, N, CA, CB)`` per pucker (the Z-matrix builds CD with it).

Usage::

    python workflows/tables/build_rotamers.py --data ../shared/data/train \
        -o backmap_plugin/build/tables/rotamers.json
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import time
import warnings
from collections import Counter

import mdtraj as md
import numpy as np
import torch

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import geometry as geo
from backmap_plugin.core import topology as tp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SP3_BINS = ("g+", "t", "g-")
_SYMMETRIC_CENTRES = {"ASP": (0.0, 60.0, -60.0), "GLU": (0.0, 60.0, -60.0),
                      "PHE": (90.0, 150.0, 30.0), "TYR": (90.0, 150.0, 30.0)}
_SYMMETRIC_LAST = {"ASP": 1, "GLU": 2, "PHE": 1, "TYR": 1}
_PLANAR_LAST = {"ASN": 1, "GLN": 2, "HIS": 1, "TRP": 1}


def chi_kind(residue: str, k: int) -> str:
    """Binning scheme of chi ``k`` (0-based) of a residue.

    Parameters
    ----------
    residue : str
        Standard residue name.
    k : int
        Chi index, 0-based.

    Returns
    -------
    str
        ``"sp3"`` (three 120-degree sectors), ``"sym"`` (symmetric by 180,
        three 60-degree sectors of the angle mod 180), ``"planar"`` (six
        60-degree sectors) or ``"pucker"`` (PRO chi1, two sectors by sign).
    """
    if residue == "PRO":
        return "pucker"
    if _SYMMETRIC_LAST.get(residue) == k:
        return "sym"
    if _PLANAR_LAST.get(residue) == k:
        return "planar"
    return "sp3"


def chi_period(residue: str, k: int) -> float:
    """Period in degrees of chi ``k`` of a residue (180 for symmetric ends, else 360)."""
    return 180.0 if chi_kind(residue, k) == "sym" else 360.0


def bin_chi(residue: str, k: int, chi_deg: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Sector index of chi angles and the sector labels.

    Parameters
    ----------
    residue : str
        Standard residue name.
    k : int
        Chi index, 0-based.
    chi_deg : numpy.ndarray
        Angles in degrees, any range.

    Returns
    -------
    index : numpy.ndarray
        Sector index per angle (int).
    labels : list of str
        Label of every sector.
    """
    kind = chi_kind(residue, k)
    a = np.mod(chi_deg, 360.0)
    if kind == "sp3":
        return np.minimum((a // 120.0).astype(int), 2), list(SP3_BINS)
    if kind == "planar":
        labels = [f"{int(c)}" for c in range(30, 360, 60)]
        return np.minimum((a // 60.0).astype(int), 5), labels
    if kind == "pucker":
        signed = np.mod(chi_deg + 180.0, 360.0) - 180.0
        return np.where(signed > 0, 0, 1), ["endo", "exo"]
    centres = np.asarray(_SYMMETRIC_CENTRES[residue])
    a = np.mod(chi_deg, 180.0)
    # distance on the 180-periodic circle to every sector centre
    d = np.abs(np.mod(a[:, None] - centres[None, :] + 90.0, 180.0) - 90.0)
    return np.argmin(d, axis=1), [f"{int(c)}" for c in centres]


def circular_mean(chi_deg: np.ndarray, weight: np.ndarray, period: float) -> tuple[float, float]:
    """Weighted circular mean and circular standard deviation.

    Parameters
    ----------
    chi_deg : numpy.ndarray
        Angles in degrees.
    weight : numpy.ndarray
        Non-negative weights, same shape.
    period : float
        360 for ordinary angles, 180 for angles symmetric by 180 degrees.

    Returns
    -------
    mean, sd : float
        Degrees; the mean in [-period / 2, period / 2).
    """
    theta = np.deg2rad(chi_deg) * (360.0 / period)
    w = weight / weight.sum()
    c, s = (w * np.cos(theta)).sum(), (w * np.sin(theta)).sum()
    r = min(max(np.hypot(c, s), 1e-12), 1.0)
    mean = np.rad2deg(np.arctan2(s, c)) * (period / 360.0)
    sd = np.rad2deg(np.sqrt(-2.0 * np.log(r))) * (period / 360.0)
    mean = np.mod(mean + period / 2.0, period) - period / 2.0
    return float(mean), float(sd)


def _present_range(residue: str, k: int, mean: float) -> float:
    """Put a symmetric chi into its documented range ([-90, 90) or [0, 180))."""
    if chi_kind(residue, k) != "sym":
        return mean
    lo = -90.0 if residue in ("ASP", "GLU") else 0.0
    return float(np.mod(mean - lo, 180.0) + lo)


def cluster_weights(data_dir: str) -> dict[str, float]:
    """File name -> 1 / (train files in its cluster30), from ``manifest.csv``.

    Parameters
    ----------
    data_dir : str
        The train folder; the manifest is looked for in its parent.

    Returns
    -------
    dict
        Empty when no manifest is found.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(data_dir.rstrip("/"))), "manifest.csv")
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "train"]
    size = Counter(r["cluster30"] for r in rows)
    return {r["entry_id"] + ".pdb.gz": 1.0 / size[r["cluster30"]] for r in rows}


def measure_file(path: str):
    """Chi angles (degrees) and PRO ring torsions of the first frame of one file.

    Parameters
    ----------
    path : str
        Structure file readable by mdtraj.

    Returns
    -------
    chis : dict
        Residue name -> (n, n_chi) array of chi angles, complete residues only.
    pro_cd : numpy.ndarray
        (n_pro, 2): chi1 and dihedral(CD, N, CA, CB) of complete prolines.

    Raises
    ------
    Exception
        Whatever mdtraj or the normalisation raises for an unreadable file.
    """
    traj = md.load(path, frame=0)
    records, _ = tp.read_residues(traj.topology, os.path.basename(path))
    if not records:
        return {}, np.zeros((0, 2))
    slots, present = tp.gather_slots(traj.xyz[:1].astype(np.float64) * 10.0, records)
    res_type = np.array([chem.RESIDUE_INDEX[r.name] for r in records])
    atoms = torch.as_tensor(slots[0])
    chi = np.rad2deg(geo.chi_angles(atoms, torch.as_tensor(res_type)).numpy())
    chi_atoms = chem.CHI_ATOMS[res_type]  # (R, 4, 4)
    chi_ok = np.take_along_axis(present[:, None, :], chi_atoms.reshape(len(records), 1, 16), 2)
    chi_ok = chi_ok.reshape(len(records), 4, 4).all(-1) | ~chem.CHI_EXISTS[res_type]
    complete = chi_ok.all(-1) & chem.CHI_EXISTS[res_type].any(-1)
    out = {}
    for t in np.unique(res_type[complete]):
        name = chem.RESIDUE_NAMES[t]
        n_chi = int(chem.CHI_EXISTS[t].sum())
        out[name] = chi[(res_type == t) & complete, :n_chi]
    pro = np.nonzero(res_type == chem.RESIDUE_INDEX["PRO"])[0]
    spec = chem.RESIDUES["PRO"]
    need = [spec.atoms.index(a) for a in ("N", "CA", "CB", "CG", "CD")]
    pro = pro[present[pro][:, need].all(1)]
    cd = spec.atoms.index("CD")
    tor = geo.dihedral(
        atoms[pro, cd], atoms[pro, chem.SLOT_N], atoms[pro, chem.SLOT_CA], atoms[pro, chem.SLOT_CB]
    )
    pro_cd = np.stack([chi[pro, 0], np.rad2deg(tor.numpy())], axis=1)
    return out, pro_cd


def build_library(chis: dict, weights: dict, min_freq: float, max_rotamers: int) -> dict:
    """Rotamers of every residue from pooled chi angles.

    Parameters
    ----------
    chis : dict
        Residue name -> (n, n_chi) chi angles in degrees.
    weights : dict
        Residue name -> (n,) weights.
    min_freq : float
        Smallest kept (weighted) frequency, before renormalisation.
    max_rotamers : int
        Most rotamers kept per residue.

    Returns
    -------
    dict
        Residue name -> list of ``{"bins", "chi", "sd", "freq", "n"}`` sorted
        by frequency.
    """
    library = {}
    for name in chem.RESIDUE_NAMES:
        if name not in chis or len(chis[name]) == 0:
            continue
        x, w = chis[name], weights[name]
        n_chi = x.shape[1]
        index = np.zeros(len(x), dtype=np.int64)
        labels = []
        for k in range(n_chi):
            idx, lab = bin_chi(name, k, x[:, k])
            index = index * len(lab) + idx
            labels.append(lab)
        keys, inverse = np.unique(index, return_inverse=True)
        mass = np.bincount(inverse, weights=w) / w.sum()
        order = np.argsort(-mass)
        kept = [j for j in order if mass[j] >= min_freq][:max_rotamers]
        total = mass[kept].sum()
        rotamers = []
        for j in kept:
            member = inverse == j
            digits, key = [], int(keys[j])
            for lab in reversed(labels):
                digits.append(lab[key % len(lab)])
                key //= len(lab)
            values, spreads = [], []
            for k in range(n_chi):
                mean, sd = circular_mean(x[member, k], w[member], chi_period(name, k))
                values.append(round(_present_range(name, k, mean), 1))
                spreads.append(round(sd, 1))
            rotamers.append({
                "bins": list(reversed(digits)),
                "chi": values,
                "sd": spreads,
                "freq": round(float(mass[j] / total), 4),
                "n": int(member.sum()),
            })
        library[name] = rotamers
    return library


def _dumps(result: dict) -> str:
    """JSON text: indented, one line per rotamer."""
    residues = result["residues"]
    head = dict(result, residues="@RESIDUES@")
    text = json.dumps(head, indent=1)
    lines = []
    for name, rotamers in residues.items():
        body = ",\n".join("   " + json.dumps(r) for r in rotamers)
        lines.append(f'  "{name}": [\n{body}\n  ]')
    return text.replace('"@RESIDUES@"', "{\n" + ",\n".join(lines) + "\n }") + "\n"


def main(argv=None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"),
                        help="train folder of the corpus (never the test set)")
    parser.add_argument("--max-files", type=int, default=None, help="use only the first N files")
    parser.add_argument("--min-freq", type=float, default=0.02)
    parser.add_argument("--max-rotamers", type=int, default=8)
    parser.add_argument("-o", "--output", default=os.path.join(ROOT, "backmap_plugin", "tables", "rotamers.json"))
    args = parser.parse_args(argv)

    data = os.path.normpath(args.data)
    if "visible_test" in os.path.abspath(data).split(os.sep):
        raise SystemExit(f"refusing to build from {data}: use the train split only")
    files = sorted(glob.glob(os.path.join(data, "*.pdb.gz")) + glob.glob(os.path.join(data, "*.pdb")))
    if args.max_files:
        files = files[: args.max_files]
    file_weight = cluster_weights(data)

    chis: dict[str, list] = {}
    weights: dict[str, list] = {}
    pro_cd, failed = [], []
    start = time.time()
    warnings.filterwarnings("ignore")
    for i, path in enumerate(files):
        try:
            out, pro = measure_file(path)
        except Exception as err:  # noqa: BLE001 - any unreadable file is skipped and counted
            failed.append(f"{os.path.basename(path)}: {type(err).__name__}: {str(err)[:120]}")
            continue
        w = file_weight.get(os.path.basename(path), 1.0)
        for name, x in out.items():
            chis.setdefault(name, []).append(x)
            weights.setdefault(name, []).append(np.full(len(x), w))
        pro_cd.append(pro)
        if (i + 1) % 100 == 0:
            print(f"{i + 1}/{len(files)} files, {time.time() - start:.0f} s", flush=True)
    chis = {k: np.concatenate(v) for k, v in chis.items()}
    weights = {k: np.concatenate(v) for k, v in weights.items()}
    library = build_library(chis, weights, args.min_freq, args.max_rotamers)

    pro_cd = np.concatenate(pro_cd) if pro_cd else np.zeros((0, 2))
    endo = pro_cd[:, 0] > 0
    pro_table = {
        "endo": round(float(np.median(pro_cd[endo, 1])), 1) if endo.any() else None,
        "exo": round(float(np.median(pro_cd[~endo, 1])), 1) if (~endo).any() else None,
        "n_endo": int(endo.sum()),
        "n_exo": int((~endo).sum()),
    }
    n_used = len(files) - len(failed)
    result = {
        "source": f"corpus train split only ({os.path.relpath(data, ROOT)}), first frame of each file, "
                  "residues weighted 1/(train files in cluster30)",
        "split": "train",
        "n_files": n_used,
        "n_failed": len(failed),
        "failed": failed,
        "binning": "sp3 chi: g+ [0,120) t [120,240) g- [240,360); ASP chi2/GLU chi3/PHE,TYR chi2 mod 180 "
                   "in 60-degree sectors (centres ASP/GLU 0,60,-60; PHE/TYR 90,150,30); ASN chi2/GLN chi3/"
                   "HIS chi2/TRP chi2: six 60-degree sectors from 0; PRO chi1 endo (>0) / exo; "
                   f"kept freq >= {args.min_freq}, at most {args.max_rotamers}; see build_rotamers.py",
        "pro_cd_torsion": pro_table,
        "n_residues": {k: int(len(v)) for k, v in chis.items()},
        "residues": library,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        handle.write(_dumps(result))
    print(f"{n_used} files used, {len(failed)} skipped, {time.time() - start:.0f} s -> {args.output}")
    for line in failed:
        print("  skipped", line)
    print("PRO dihedral(CD, N, CA, CB) medians:", pro_table)
    for name, rotamers in library.items():
        top = rotamers[0]
        print(f"{name}: {len(rotamers)} rotamers, top {top['bins']} {top['chi']} freq {top['freq']:.3f}")


if __name__ == "__main__":
    main()
