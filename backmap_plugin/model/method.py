"""The ``model`` method of :func:`backmap_plugin.api.backmap`: sampling a trained model."""

from __future__ import annotations

import numpy as np
import torch

from backmap_plugin.build.ideal import constrain_trace, place_side_chains
from backmap_plugin.build.settle import settle_on_beads
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.geometry import build_residues
from backmap_plugin.core.mappings import Mapping
from backmap_plugin.core.topology import ProteinTopology
from backmap_plugin.model import graph as G
from backmap_plugin.model.weights import load_model

#: Side-chain candidates per residue (drawn from the decoder) among which
#: overlaps are avoided, and the cost of a candidate: per unit of -log p
#: when sampling, per Angstrom^2 of its expected deviation (``risk`` of
#: :meth:`~backmap_plugin.model.vae.BackmapVAE.sample_candidates`) at
#: temperature 0 (see :func:`backmap_plugin.build.ideal.place_side_chains`, which
#: also relieves the clashes the choice leaves).
CANDIDATES = 8
COST_WEIGHT = 0.3
RISK_WEIGHT = 0.02
#: Centre-of-mass models: cost of a side-chain candidate per Angstrom^2 by
#: which the residue's centre of mass misses its bead.
BEAD_WEIGHT = 1.0


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
        self.path = path or "(shipped)"
        self.temperature = temperature

    def __call__(self, beads: torch.Tensor, protein: ProteinTopology, mapping: Mapping, samples: int, seeds) -> torch.Tensor:
        """(F, R, 3) C-alpha beads -> (F, samples, R, N_SLOTS, 3); frame f sample s seeded by (seeds[f], s).

        A frame's structures depend only on its beads and seed, not on the
        other frames of the call.
        """
        reads_com = self.model.config.mapping == "com"
        if not mapping.bead_is_ca and not reads_com:
            raise BackmapInputError(
                f"the model {self.path} reads C-alpha beads; beads at residue centres of mass need a "
                "centre-of-mass model (the shipped one unless --model is given) or --method ideal"
            )
        with torch.inference_mode():
            if reads_com:
                out = self._sample_com(beads, protein, mapping, samples, np.asarray(seeds, dtype=np.int64))
            else:
                out = self._sample(beads, protein, samples, np.asarray(seeds, dtype=np.int64))
        return out.to(beads.dtype)

    def _candidates(self, batch: G.ResidueBatch, frame_seeds: np.ndarray):
        """Backbone (g, R, S, 3), side-chain candidates (g, K, R, S, 3) and their cost (g, K, R) of one sample."""
        g, n_res = batch.mask.shape
        mode = self.temperature == 0
        backbone, ics, log_p, risk = self.model.sample_candidates(
            batch, frame_seeds, temperature=max(self.temperature, 1e-3), mode=mode, n_candidates=CANDIDATES,
        )
        k = ics.shape[0]
        cost = RISK_WEIGHT * risk if mode else -COST_WEIGHT * log_p
        return (backbone.view(g, n_res, *backbone.shape[1:]), ics.view(k, g, n_res, *ics.shape[2:]).transpose(0, 1),
                cost.view(k, g, n_res).transpose(0, 1))

    def _sample_com(self, beads: torch.Tensor, protein: ProteinTopology, mapping: Mapping, samples: int,
                    seeds: np.ndarray) -> torch.Tensor:
        """(F, samples, R, N_SLOTS, 3) from beads that are (mostly) not C-alpha atoms.

        The locator finds the C-alpha trace (kept 3.8 Angstrom apart); the
        decoder reads it with the beads' offsets; side-chain candidates pay
        for missing their residue's bead (:data:`BEAD_WEIGHT`); then the
        structure settles onto the beads
        (:func:`~backmap_plugin.build.settle.settle_on_beads`).
        """
        g, n_res, _ = beads.shape
        dev = beads.device
        same = torch.as_tensor(protein.segment[1:] == protein.segment[:-1], device=dev)
        present = protein.slot_mask.copy()
        present[:, chem.SLOT_OXT] = False
        beads = beads.float()
        dense = [np.broadcast_to(a, (g, n_res)) for a in (protein.res_type, np.ones(n_res, bool), protein.segment)]
        com = torch.as_tensor(~mapping.is_ca(n_res), device=dev).expand(g, -1)
        batch = G.make_batch(constrain_trace(self.model.locator(G.make_batch(beads, *dense), com), same), *dense)
        batch.bead_features = G.bead_features(batch, beads, com)
        per_sample = []
        for s in range(samples):
            backbone, ics, cost = self._candidates(batch, seeds * 7919 + s)
            cost = cost + BEAD_WEIGHT * candidate_bead_miss(backbone, ics, protein, beads, com, mapping, present)
            atoms = place_side_chains(backbone, protein, ics, cost)
            per_sample.append(settle_on_beads(atoms, protein, beads,
                                              lambda x: mapping.bead_positions(x, present, protein.res_type)))
        return torch.stack(per_sample, 1)

    def _sample(self, beads: torch.Tensor, protein: ProteinTopology, samples: int, seeds: np.ndarray) -> torch.Tensor:
        """(F, samples, R, N_SLOTS, 3), float32."""
        g, n_res, _ = beads.shape
        batch = G.make_batch(
            beads.float(),
            np.broadcast_to(protein.res_type, (g, n_res)),
            np.ones((g, n_res), bool),
            np.broadcast_to(protein.segment, (g, n_res)),
        )
        per_sample = []
        for s in range(samples):
            backbone, ics, cost = self._candidates(batch, seeds * 7919 + s)
            per_sample.append(place_side_chains(backbone, protein, ics, cost))
        return torch.stack(per_sample, 1)


def candidate_bead_miss(backbone: torch.Tensor, ics: torch.Tensor, protein: ProteinTopology, beads: torch.Tensor,
                        is_com: torch.Tensor, mapping: Mapping, present: np.ndarray) -> torch.Tensor:
    """Squared distance (g, K, R) by which each side-chain candidate's residue centre of mass misses its bead.

    Parameters
    ----------
    backbone : torch.Tensor
        (g, R, N_SLOTS, 3) with N, CA, C, O placed.
    ics : torch.Tensor
        (g, K, R, N_SLOTS, 3) candidates' internal coordinates.
    protein : ProteinTopology
    beads : torch.Tensor
        (g, R, 3) bead positions.
    is_com : torch.Tensor
        (g, R) bool, the bead is a centre of mass (C-alpha beads cost 0).
    mapping : Mapping
        How the beads were made.
    present : numpy.ndarray
        (R, N_SLOTS) atoms that count in a bead (OXT left out).
    """
    g, k, n_res = ics.shape[:3]
    rt = torch.as_tensor(protein.res_type, device=backbone.device)
    slots = [s for s in chem.BUILD_ORDER if chem.SLOT_CB <= s < chem.SLOT_OXT]
    context = backbone[:, None].expand(-1, k, -1, -1, -1).reshape(g * k, n_res, *backbone.shape[2:])
    atoms = build_residues(context, ics.reshape(g * k, n_res, *ics.shape[3:]), rt, slots=slots)[..., : chem.N_SLOTS, :]
    centre = mapping.bead_positions(atoms, present, protein.res_type).view(g, k, n_res, 3)
    return ((centre - beads[:, None]) ** 2).sum(-1) * is_com[:, None]
