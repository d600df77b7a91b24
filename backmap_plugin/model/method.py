"""The ``model`` method of :func:`backmap_plugin.api.backmap`: sampling a trained model."""

from __future__ import annotations

import numpy as np
import torch

from backmap_plugin.build.backbone import peptide_lengths
from backmap_plugin.build.backbone_contacts import separate_planes
from backmap_plugin.build.ideal import build_side_chains, constrain_trace, place_side_chains
from backmap_plugin.build.martini import FIT_DTYPE, fit_to_beads, initial_trace
from backmap_plugin.build.settle import settle_on_beads
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import martini3 as m3
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.geometry import build_residues
from backmap_plugin.core.mappings import Mapping, model_beads
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
#: Centre-of-mass and Martini 3 models: cost of a side-chain candidate per
#: Angstrom^2 by which the residue misses its bead(s).
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
    disulfides : bool
        From Martini 3 beads: bond the cysteine pairs whose SC1 beads are
        close, frame by frame (:func:`~backmap_plugin.build.martini.fit_to_beads`);
        False leaves every cysteine free. (Other beads: the caller closes
        disulfides, :class:`~backmap_plugin.api.Backmapper`.)
    """

    def __init__(self, path: str | None, device, temperature: float = 1.0, disulfides: bool = True):
        self.model = load_model(path, device)
        self.path = path or "(shipped)"
        self.temperature = temperature
        self.disulfides = disulfides

    def __call__(self, beads: torch.Tensor, protein: ProteinTopology, mapping: Mapping, samples: int, seeds) -> torch.Tensor:
        """(F, R, 3) C-alpha beads -> (F, samples, R, N_SLOTS, 3); frame f sample s seeded by (seeds[f], s).

        A frame's structures depend only on its beads and seed, not on the
        other frames of the call.
        """
        reads = self.model.config.mapping
        given = model_beads(mapping)
        if given != reads and not (given == "ca" and reads == "com"):
            kinds = {"ca": "C-alpha beads", "com": "residue centres of mass", "martini3": "Martini 3 beads"}
            raise BackmapInputError(
                f"the model {self.path} reads {kinds[reads]}; {kinds[given]} need a model for them "
                "(the shipped one unless --model is given) or --method ideal"
            )
        seeds = np.asarray(seeds, dtype=np.int64)
        with torch.inference_mode():
            if reads == "com":
                out = self._sample_com(beads, protein, mapping, samples, seeds)
            elif reads == "martini3":
                out = self._sample_martini(beads, protein, mapping, samples, seeds)
            else:
                out = self._sample(beads, protein, samples, seeds)
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
        for missing their residue's bead (:data:`BEAD_WEIGHT`) and are chosen
        so that they do not overlap; then the structure settles onto the beads
        (:func:`~backmap_plugin.build.settle.settle_on_beads`), which relieves
        the clashes left (relieving them before it too turned side chains
        away from the decoder's: val crystal median side chains 1.39 -> 1.37 A,
        MD 1.55 -> 1.53 A, clashes 0.61 -> 0.54 per 100 residues on crystals).
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
            cost = cost + BEAD_WEIGHT * candidate_bead_miss(backbone, ics, protein, beads, com.float(), mapping, present)
            # no clash relief before the settling, which relieves the clashes left at its end
            atoms = place_side_chains(backbone, protein, ics, cost, relief_steps=0)
            per_sample.append(settle_on_beads(atoms, protein, beads,
                                              lambda x: mapping.bead_positions(x, present, protein.res_type)))
        return torch.stack(per_sample, 1)

    def _sample_martini(self, beads: torch.Tensor, protein: ProteinTopology, mapping: Mapping, samples: int,
                        seeds: np.ndarray) -> torch.Tensor:
        """(F, samples, R, N_SLOTS, 3) from Martini 3 beads (F, R, MAX_BEADS, 3).

        The C-alpha trace comes from the beads (:meth:`_martini_trace`); the decoder
        reads it with every bead's offset; side-chain candidates pay for
        missing their residue's beads (:data:`BEAD_WEIGHT`); then the Martini 3
        fit starts from each residue's cheapest candidate
        (:func:`~backmap_plugin.build.martini.fit_to_beads`: rigid alignment
        steps, a short joint fit, side chains placed so that they do not
        overlap, then tilted about C-alpha towards their beads), so the
        output's beads lie on the input's. Placing the
        start's side chains so that they did not overlap cost 10 % of the time and
        turned them from the beads (val clusters, medians: side-chain beads
        0.184 / 0.289 A, crystal / MD and NMR ensembles, against 0.189 / 0.261 A
        from the cheapest; heavy atoms 0.455 / 0.589 against 0.462 / 0.582 A).
        """
        g, n_res = beads.shape[:2]
        dev = beads.device
        exists = torch.as_tensor(m3.BEAD_EXISTS[protein.res_type], device=dev)
        beads = torch.where(exists[..., None], beads, torch.zeros((), dtype=beads.dtype, device=dev)).float()
        present = protein.slot_mask.copy()
        present[:, chem.SLOT_OXT] = False
        dense = [np.broadcast_to(a, (g, n_res)) for a in (protein.res_type, np.ones(n_res, bool), protein.segment)]
        batch = G.make_batch(self._martini_trace(beads, protein, dense), *dense)
        batch.bead_features = G.martini_bead_features(batch, beads)
        weight = torch.ones((g, n_res), device=dev)
        per_sample = []
        for s in range(samples):
            backbone, ics, cost = self._candidates(batch, seeds * 7919 + s)
            cost = cost + BEAD_WEIGHT * candidate_bead_miss(backbone, ics, protein, beads, weight, mapping, present)
            best = cost.argmin(1)[:, None, :, None, None].expand(-1, 1, -1, *ics.shape[3:])
            start = build_side_chains(backbone, protein, torch.gather(ics, 1, best)[:, 0])
            per_sample.append(fit_to_beads(beads, protein, start=start, disulfides=self.disulfides))
        return torch.stack(per_sample, 1)

    def _martini_trace(self, beads: torch.Tensor, protein: ProteinTopology, dense: list) -> torch.Tensor:
        """C-alpha trace (F, R, 3), float32, from Martini 3 beads (F, R, MAX_BEADS, 3).

        The model's :class:`~backmap_plugin.model.martini_locator.MartiniLocator`
        places the C-alpha atoms; residues it does not place (segments of
        one or two residues), and all of them for a model without one, take
        the trace whose ideal backbone's BB beads lie on the input's
        (:func:`~backmap_plugin.build.martini.initial_trace`). Bonded
        C-alpha atoms are kept 3.8 Angstrom apart, or at the cis length
        before a proline where the locator put them closer than
        :data:`~backmap_plugin.build.backbone.MIN_PEPTIDE_LENGTH`
        (:func:`~backmap_plugin.build.backbone.peptide_lengths`; on 250
        train crystal structures it puts 318 of 320 cis X-Pro peptides
        there and 2 of 2,705 trans ones).
        """
        bb = beads[..., 0, :]
        if not hasattr(self.model, "locator"):
            return initial_trace(bb.to(FIT_DTYPE), protein).float()
        ca, located = self.model.locator(G.make_batch(bb, *dense), beads)
        if not bool(located.all()):
            ca = torch.where(located[..., None], ca, initial_trace(bb.to(FIT_DTYPE), protein).float())
        same = torch.as_tensor(protein.segment[1:] == protein.segment[:-1], device=bb.device)
        return constrain_trace(ca, same, length=peptide_lengths(ca, protein.res_type))

    def _sample(self, beads: torch.Tensor, protein: ProteinTopology, samples: int, seeds: np.ndarray) -> torch.Tensor:
        """(F, samples, R, N_SLOTS, 3), float32, from C-alpha beads.

        Peptide planes whose atoms overlap other backbone atoms are turned
        apart (:func:`~backmap_plugin.build.backbone_contacts.separate_planes`:
        train val clusters, crystal structures: clashes 0.71 -> 0.61 per 100
        residues, heavy-atom RMSD mean 1.368 -> 1.367 A; about 10 % of the
        time) before the side chains are placed.
        """
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
            per_sample.append(place_side_chains(separate_planes(backbone, protein), protein, ics, cost))
        return torch.stack(per_sample, 1)


def candidate_bead_miss(backbone: torch.Tensor, ics: torch.Tensor, protein: ProteinTopology, beads: torch.Tensor,
                        weight: torch.Tensor, mapping: Mapping, present: np.ndarray) -> torch.Tensor:
    """Squared distance (g, K, R) by which each side-chain candidate's residue misses its bead(s), weighted.

    Parameters
    ----------
    backbone : torch.Tensor
        (g, R, N_SLOTS, 3) with N, CA, C, O placed.
    ics : torch.Tensor
        (g, K, R, N_SLOTS, 3) candidates' internal coordinates.
    protein : ProteinTopology
    beads : torch.Tensor
        (g, R, 3) bead positions, or (g, R, B, 3) for mappings with several
        beads per residue (Martini 3; a bead the residue does not have is
        zero, as ``mapping`` makes it).
    weight : torch.Tensor
        (g, R) weight of a residue's miss (e.g. 0 for C-alpha beads).
    mapping : Mapping
        How the beads were made.
    present : numpy.ndarray
        (R, N_SLOTS) atoms that count in a bead (OXT left out).
    """
    g, k, n_res = ics.shape[:3]
    rt = torch.as_tensor(protein.res_type, device=backbone.device)
    context = backbone[:, None].expand(-1, k, -1, -1, -1).reshape(g * k, n_res, *backbone.shape[2:])
    atoms = build_residues(context, ics.reshape(g * k, n_res, *ics.shape[3:]), rt,
                           slots=chem.SIDE_CHAIN_BUILD_ORDER)[..., : chem.N_SLOTS, :]
    centre = mapping.bead_positions(atoms, present, protein.res_type)
    miss = ((centre.view(g, k, *centre.shape[1:]) - beads[:, None]) ** 2).reshape(g, k, n_res, -1).sum(-1)
    return miss * weight[:, None]
