"""How far a run's output lies from its input beads, per kind of bead.

Every structure built is mapped back to beads the way the input was made
(:meth:`backmap_plugin.core.mappings.Mapping.bead_positions`, the output's
OXT in Martini 3 BB beads) and compared with the input beads it was built
from, without superposition: the RMS distance per kind of bead
(:meth:`~backmap_plugin.core.mappings.Mapping.bead_groups`: Martini 3 BB
and SC beads, centre-of-mass and C-alpha beads). Angstrom.
"""

from __future__ import annotations

import numpy as np

from backmap_plugin.core.mappings import Mapping
from backmap_plugin.core.metrics import rmsd_no_superposition
from backmap_plugin.core.topology import ProteinTopology


class BeadFit:
    """Tally of the bead RMSD of every structure built in a run.

    Parameters
    ----------
    mapping : Mapping
        How the input beads were made.
    protein : ProteinTopology
        The output's residues.

    Attributes
    ----------
    rmsd : dict
        Kind of bead -> list of RMS distances (Angstrom), one per structure.
    frames : list of int
        Input frame of each structure.
    """

    def __init__(self, mapping: Mapping, protein: ProteinTopology):
        self._mapping = mapping
        self._present, self._res_type = protein.slot_mask, protein.res_type
        self._groups = {name: mask.reshape(-1) for name, mask in mapping.bead_groups(protein.res_type).items()}
        self.rmsd = {name: [] for name in self._groups}
        self.frames = []

    def add(self, atoms, beads, first_index: int) -> None:
        """Score a batch.

        Parameters
        ----------
        atoms : numpy.ndarray or torch.Tensor
            (F, samples, R, N_SLOTS, 3) structures built, slots as the builders return them.
        beads : numpy.ndarray or torch.Tensor
            (F, R, 3) or (F, R, MAX_BEADS, 3) input beads they were built from
            (beads a residue does not have are ignored, whatever they hold).
        first_index : int
            Index of the first of the batch among the frames backmapped
            (input frame ``first_index * stride`` of a run with a stride).
        """
        atoms = atoms.detach().cpu().numpy() if hasattr(atoms, "detach") else np.asarray(atoms)
        beads = beads.detach().cpu().numpy() if hasattr(beads, "detach") else np.asarray(beads)
        n_frames, samples = atoms.shape[:2]
        built = self._mapping.bead_positions(atoms.astype(np.float64), self._present, self._res_type)
        built = built.reshape(n_frames * samples, -1, 3)
        target = np.repeat(beads.reshape(n_frames, -1, 3), samples, axis=0)
        for name, mask in self._groups.items():
            self.rmsd[name].extend(rmsd_no_superposition(built, target, mask).tolist())
        self.frames.extend(np.repeat(first_index + np.arange(n_frames), samples).tolist())

    def state(self) -> dict:
        """The RMSDs so far (rounded to 0.1 mA) and their frames, for :meth:`restore` in a resumed run."""
        return {"rmsd": {name: [round(v, 4) for v in values] for name, values in self.rmsd.items()},
                "frames": list(self.frames)}

    def restore(self, state: dict, before_frame: int) -> None:
        """Take back the RMSDs of :meth:`state` of the input frames before ``before_frame`` (an interrupted run's)."""
        keep = [k for k, frame in enumerate(state["frames"]) if frame < before_frame]
        self.frames = [state["frames"][k] for k in keep] + self.frames
        for name in self.rmsd:
            old = state["rmsd"].get(name, [])
            self.rmsd[name] = [old[k] for k in keep if k < len(old)] + self.rmsd[name]

    def summary(self, stride: int = 1) -> dict:
        """Kind of bead -> ``{"median": A, "max": A, "worst_frame": input frame}`` over the structures scored.

        Parameters
        ----------
        stride : int, optional
            The run's read stride: frame ``k`` of those scored is input frame
            ``k * stride``.
        """
        out = {}
        for name, values in self.rmsd.items():
            if values:
                worst = int(np.argmax(values))
                out[name] = {"median": float(np.median(values)), "max": float(values[worst]),
                             "worst_frame": int(self.frames[worst]) * stride}
        return out


def describe(summary: dict) -> str:
    """One line for the terminal from :meth:`BeadFit.summary` ('' when empty)."""
    if not summary:
        return ""
    parts = [f"{name} {s['median']:.2f} (worst {s['max']:.2f}, frame {s['worst_frame']})" for name, s in summary.items()]
    return "output beads vs input beads, RMSD in A (median over structures): " + "; ".join(parts)
