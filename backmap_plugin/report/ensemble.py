"""Coordinates and dihedral angles of a run's ``backmapped.pdb``.

:func:`load_ensemble` reads the structures (all models) into an
:class:`Ensemble`: coordinates in Angstrom, the heavy-atom mask, phi/psi
of every residue that has both, and chi1/chi2 per residue type, in degrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.report.numeric import bonded_dihedrals


@dataclass
class Ensemble:
    """Coordinates and dihedrals of backmapped.pdb (Angstrom, degrees)."""

    xyz: np.ndarray  # (n_models, n_atoms, 3)
    heavy: np.ndarray  # (n_atoms,) bool
    phi: np.ndarray  # (n_models * n_residues_scored,) flattened, NaN where broken
    psi: np.ndarray
    chi: dict = field(default_factory=dict)  # residue name -> (n, n_chi) degrees, n_chi <= 2


def _ramachandran(traj) -> tuple:
    """phi and psi (degrees) of residues that have both, NaN across chain breaks."""
    import mdtraj as md

    from backmap_plugin.openmm.validate import PEPTIDE_BOND_MAX

    xyz = traj.xyz.astype(np.float64) * 10.0
    phi_idx, phi = md.compute_phi(traj)
    psi_idx, psi = md.compute_psi(traj)
    phi = np.where(bonded_dihedrals(xyz, phi_idx, (0, 1), PEPTIDE_BOND_MAX), np.degrees(phi), np.nan)
    psi = np.where(bonded_dihedrals(xyz, psi_idx, (2, 3), PEPTIDE_BOND_MAX), np.degrees(psi), np.nan)
    atoms = list(traj.topology.atoms)
    phi_res = {atoms[int(i)].residue.index: k for k, i in enumerate(phi_idx[:, 1])}
    psi_res = {atoms[int(i)].residue.index: k for k, i in enumerate(psi_idx[:, 1])}
    both = sorted(set(phi_res) & set(psi_res))
    phi = phi[:, [phi_res[r] for r in both]]
    psi = psi[:, [psi_res[r] for r in both]]
    return phi.ravel(), psi.ravel()


def _chi_by_residue(traj, path: str) -> dict:
    """chi1 and chi2 (degrees) per residue type, residues with every atom of those chis."""
    import torch

    from backmap_plugin.core.geometry import chi_angles
    from backmap_plugin.core.topology import gather_slots, read_residues

    records, _ = read_residues(traj.topology, path)
    if not records:
        return {}
    slots, present = gather_slots(traj.xyz.astype(np.float64) * 10.0, records)
    res_type = np.array([chem.RESIDUE_INDEX[r.name] for r in records])
    chi = np.degrees(chi_angles(torch.as_tensor(slots), torch.as_tensor(res_type)).numpy())  # (F, R, 4)
    atoms = chem.CHI_ATOMS[res_type]  # (R, 4, 4)
    complete = np.take_along_axis(present[:, None, :], atoms.reshape(len(records), 1, 16), 2)
    complete = complete.reshape(len(records), 4, 4).all(-1) & chem.CHI_EXISTS[res_type]  # (R, 4)
    out = {}
    for t in np.unique(res_type):
        n_chi = min(2, int(chem.CHI_EXISTS[t].sum()))
        if n_chi == 0:
            continue
        rows = (res_type == t) & complete[:, :n_chi].all(-1)
        if rows.any():
            out[chem.RESIDUE_NAMES[t]] = chi[:, rows, :n_chi].reshape(-1, n_chi)
    return dict(sorted(out.items()))


def load_ensemble(path: str) -> Ensemble:
    """Read every model of a backmapped PDB file.

    Parameters
    ----------
    path : str
        The run's ``backmapped.pdb``.

    Returns
    -------
    Ensemble

    Raises
    ------
    BackmapInputError
        The file cannot be read; the message names it.
    """
    import mdtraj as md

    try:
        traj = md.load(path)
    except Exception as exc:  # mdtraj raises many kinds for a bad file
        raise BackmapInputError(f"{path}: cannot read: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    heavy = np.array([a.element is None or a.element.symbol not in ("H", "D") for a in traj.topology.atoms])
    phi, psi = _ramachandran(traj)
    return Ensemble(xyz=traj.xyz.astype(np.float64) * 10.0, heavy=heavy, phi=phi, psi=psi,
                    chi=_chi_by_residue(traj, path))
