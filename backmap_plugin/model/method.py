"""The ``model`` method of :func:`backmap_plugin.api.backmap`: sampling a trained model."""

from __future__ import annotations

import numpy as np
import torch

from backmap_plugin.build.ideal import place_side_chains
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.mappings import Mapping
from backmap_plugin.core.topology import ProteinTopology
from backmap_plugin.model import graph as G
from backmap_plugin.model.weights import load_model

#: Residue-frames decoded at once (bounds memory).
RESIDUES_PER_PASS = 20000
#: Side-chain candidates per residue (drawn from the decoder) among which
#: overlaps are avoided, and the cost of a candidate: per unit of -log p
#: when sampling, per Angstrom^2 of its expected deviation (``risk`` of
#: :meth:`~backmap_plugin.model.vae.BackmapVAE.sample_candidates`) at
#: temperature 0 (see :func:`backmap_plugin.build.ideal.place_side_chains`, which
#: also relieves the clashes the choice leaves).
CANDIDATES = 8
COST_WEIGHT = 0.3
RISK_WEIGHT = 0.02


class ModelMethod:
    """Backmap with a trained :class:`~backmap_plugin.model.vae.BackmapVAE`.

    Parameters
    ----------
    path : str, optional
        Model file (``model.pt`` with its ``model.json``); default: the
        shipped model.
    device : torch.device
    temperature : float
        Sampling temperature of the discrete choices; 0 gives one
        deterministic structure, the one of least expected error (see
        ``mode`` of :meth:`~backmap_plugin.model.vae.BackmapVAE.sample_candidates`).
    """

    def __init__(self, path: str | None, device, temperature: float = 1.0):
        self.model = load_model(path, device)
        self.temperature = temperature

    def __call__(self, beads: torch.Tensor, protein: ProteinTopology, mapping: Mapping, samples: int, seeds) -> torch.Tensor:
        """(F, R, 3) C-alpha beads -> (F, samples, R, N_SLOTS, 3); frame f sample s seeded by (seeds[f], s).

        A frame's structures depend only on its beads and seed, not on the
        other frames of the call.
        """
        if not mapping.bead_is_ca:
            raise BackmapInputError(
                f"the trained model backmaps C-alpha beads; mapping '{mapping.name}' needs --method ideal"
            )
        with torch.inference_mode():
            out = self._sample(beads, protein, samples, np.asarray(seeds, dtype=np.int64))
        return torch.cat(out).to(beads.dtype)

    def _sample(self, beads: torch.Tensor, protein: ProteinTopology, samples: int, seeds: np.ndarray) -> list:
        """Chunks of (f, samples, R, N_SLOTS, 3), float32."""
        n_frames, n_res, _ = beads.shape
        per_pass = max(1, RESIDUES_PER_PASS // n_res)
        out = []
        for start in range(0, n_frames, per_pass):
            chunk = beads[start : start + per_pass].float()
            g = chunk.shape[0]
            batch = G.make_batch(
                chunk,
                np.broadcast_to(protein.res_type, (g, n_res)),
                np.ones((g, n_res), bool),
                np.broadcast_to(protein.segment, (g, n_res)),
            )
            per_sample = []
            for s in range(samples):
                frame_seeds = seeds[start : start + g] * 7919 + s
                mode = self.temperature == 0
                backbone, ics, log_p, risk = self.model.sample_candidates(
                    batch, frame_seeds, temperature=max(self.temperature, 1e-3), mode=mode, n_candidates=CANDIDATES,
                )
                k = ics.shape[0]
                cost = RISK_WEIGHT * risk if mode else -COST_WEIGHT * log_p
                atoms = place_side_chains(
                    backbone.view(g, n_res, *backbone.shape[1:]),
                    protein,
                    ics.view(k, g, n_res, *ics.shape[2:]).transpose(0, 1),
                    cost.view(k, g, n_res).transpose(0, 1),
                )
                per_sample.append(atoms)
            out.append(torch.stack(per_sample, 1))
        return out
