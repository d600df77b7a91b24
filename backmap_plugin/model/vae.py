"""The generative backmapping model: a conditional VAE over internal coordinates.

* prior p(z | CG) and posterior q(z | all-atom, CG): :class:`EquivariantNet`
  (e3nn) with invariant read-outs, so the per-residue latent ``z`` is
  exactly invariant to rotations and translations;
* decoder: :class:`InvariantNet` on [z, residue type, CG geometry] with
  heads for every degree of freedom of every residue: the rotation of each
  rigid peptide plane, the terminal torsions of every segment (N of the
  first residue, C, O and OXT of the last), and per residue a categorical
  choice among library rotamers with continuous chi offsets. Backbone and
  plane angles are categorical over bins plus an offset, so samples can
  differ where the chemistry allows several modes. Bond lengths and angles
  are Engh & Huber constants, so the chemistry is valid by construction.

All lengths are Angstrom and angles radians.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from backmap_plugin.build.backbone import build_backbone, fit_backbone
from backmap_plugin.build.ideal import rotamer_deviation_table, side_chain_internal
from backmap_plugin.build.rotamers import load_rotamers
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.geometry import build_residues, extend_with_context
from backmap_plugin.core.torch_import import seeded_generator
from backmap_plugin.model import graph as G
from backmap_plugin.model.locator import BeadLocator, PerceptronLocator
from backmap_plugin.model.martini_locator import MartiniLocator
from backmap_plugin.model.networks import EquivariantNet, InvariantNet, mlp
from backmap_plugin.model.targets import Targets, chi_periods

TERMINAL = ("psi_first", "phi_last", "psi_last")
ENCODER_SCALARS = 18
ENCODER_VECTORS = 3


@dataclass
class ModelConfig:
    """Sizes and loss weights of :class:`BackmapVAE`."""

    z_dim: int = 8
    type_dim: int = 16
    hidden: int = 48
    decoder_layers: int = 2
    encoder_layers: int = 1
    prior_layers: int = 1
    equivariant_scalars: int = 16
    equivariant_vectors: int = 4
    k_equivariant: int = 8
    k_invariant: int = 12
    cutoff: float = 14.0
    bins: int = 36
    max_rotamers: int = 8
    chi_offset_max: float = math.radians(40.0)
    free_bits: float = 0.05
    prior_weight: float = 0.5
    w_angle: float = 1.0
    w_rotamer: float = 1.0
    w_offset: float = 2.0
    w_kl: float = 0.05
    w_cartesian: float = 0.2
    w_clash: float = 1.0
    clash_distance: float = 2.7
    #: Beads the model reads: ``ca`` (C-alpha trace) or ``com`` (residue
    #: centres of mass, with C-alpha beads where the mapping says so; a
    #: :class:`~backmap_plugin.model.locator.BeadLocator` finds the C-alpha
    #: trace and the beads' offsets from it are input features) or
    #: ``martini3`` (Martini 3 BB and side-chain beads: the trace comes from
    #: the beads (``martini_locator_hidden``) and every bead's offset from it
    #: is an input feature).
    mapping: str = "ca"
    locator_scalars: int = 32
    locator_vectors: int = 8
    locator_layers: int = 3
    #: Centre-of-mass models: hidden units of a
    #: :class:`~backmap_plugin.model.locator.PerceptronLocator`; 0: the
    #: equivariant :class:`~backmap_plugin.model.locator.BeadLocator`
    #: (``locator_scalars``, ``locator_vectors``, ``locator_layers``).
    com_locator_hidden: int = 0
    w_locate: float = 1.0
    #: Martini 3 models: hidden units of the
    #: :class:`~backmap_plugin.model.martini_locator.MartiniLocator` that
    #: finds the C-alpha trace; 0: none, the trace comes from the BB beads
    #: alone (:func:`backmap_plugin.build.martini.initial_trace`).
    martini_locator_hidden: int = 0

    def __post_init__(self):
        if self.mapping not in ("ca", "com", "martini3"):
            raise ValueError(f"model mapping must be 'ca', 'com' or 'martini3', got {self.mapping!r}")

    def to_dict(self) -> dict:
        """Plain dict (for JSON)."""
        return asdict(self)


def _bond_distance_tables() -> np.ndarray:
    """(20, N_SLOTS, N_SLOTS) bond-graph distance between atom slots of a residue (OXT included), capped at 9."""
    out = np.full((len(chem.RESIDUE_NAMES), chem.N_SLOTS, chem.N_SLOTS), 9, dtype=np.int64)
    for t, name in enumerate(chem.RESIDUE_NAMES):
        spec = chem.RESIDUES[name]
        slot = {a: i for i, a in enumerate(spec.atoms)}
        slot["OXT"] = chem.SLOT_OXT
        adj = np.zeros((chem.N_SLOTS, chem.N_SLOTS), bool)
        for a, b in list(spec.bonds) + [("C", "OXT")]:
            adj[slot[a], slot[b]] = adj[slot[b], slot[a]] = True
        d = out[t]
        np.fill_diagonal(d, 0)
        reach = np.eye(chem.N_SLOTS, dtype=bool)
        for step in range(1, 9):
            reach_next = reach | (reach.astype(int) @ adj.astype(int) > 0)
            d[(reach_next & ~reach)] = step
            reach = reach_next
    return out


BOND_DISTANCE = _bond_distance_tables()


def _gaussian(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a read-out into mean and a log-sigma bounded to [-3, 1]."""
    mu, raw = out.chunk(2, -1)
    return mu, -1.0 + 2.0 * torch.tanh(raw / 2.0)


def bin_centres(bins: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centres of ``bins`` equal angle bins on [-pi, pi)."""
    width = 2 * math.pi / bins
    return -math.pi + width * (torch.arange(bins, device=device, dtype=dtype) + 0.5)


def angle_bin(angle: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index of angles (radians)."""
    width = 2 * math.pi / bins
    return (torch.remainder(angle + math.pi, 2 * math.pi) / width).long().clamp(0, bins - 1)


class BackmapVAE(nn.Module):
    """Conditional VAE: CA trace -> all heavy atoms (see module docstring).

    Parameters
    ----------
    config : ModelConfig
    """

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = c = config or ModelConfig()
        self.type_embed = nn.Embedding(len(chem.RESIDUE_NAMES), c.type_dim)  # no padding index
        n_geo = c.type_dim + G.NODE_GEOMETRY
        eq = dict(scalars=c.equivariant_scalars, vectors=c.equivariant_vectors)
        self.prior = EquivariantNet(n_geo, 2, 2 * c.z_dim, layers=c.prior_layers, **eq)
        self.encoder = EquivariantNet(n_geo + ENCODER_SCALARS, 2 + ENCODER_VECTORS, 2 * c.z_dim,
                                      layers=c.encoder_layers, **eq)
        self.decoder = InvariantNet(n_geo + c.z_dim, G.N_RBF + 3, hidden=c.hidden, layers=c.decoder_layers)
        self.peptide_head = mlp([2 * c.hidden, c.hidden, 2 * c.bins])
        self.terminal_head = mlp([c.hidden, c.hidden, len(TERMINAL) * 2 * c.bins])
        self.rotamer_head = mlp([c.hidden, c.hidden, c.max_rotamers * 5])
        if c.mapping == "com" and c.com_locator_hidden:
            self.locator = PerceptronLocator(c.com_locator_hidden)
        elif c.mapping == "com":
            self.locator = BeadLocator(c.type_dim, c.locator_scalars, c.locator_vectors, c.locator_layers,
                                       c.k_invariant, c.cutoff)
        if c.mapping == "martini3" and c.martini_locator_hidden:
            self.locator = MartiniLocator(c.martini_locator_hidden)
        if c.mapping != "ca":
            # bead features enter beside the residue type; zero at first, so a
            # warm start from a C-alpha model begins as that model
            n_features = G.BEAD_FEATURES if c.mapping == "com" else G.MARTINI_BEAD_FEATURES
            self.bead_embed = nn.Linear(n_features, c.type_dim)
            nn.init.zeros_(self.bead_embed.weight)
            nn.init.zeros_(self.bead_embed.bias)

    # ------------------------------------------------------------------ parts
    def condition(self, batch: G.ResidueBatch) -> dict:
        """CG features shared by prior, encoder and decoder."""
        c = self.config
        frames = G.local_frames(batch)
        types = self.type_embed(batch.res_type)
        if c.mapping != "ca":
            if batch.bead_features is None:
                raise ValueError(f"a {c.mapping} model needs the batch's bead_features")
            types = types + self.bead_embed(batch.bead_features)
        scalars = torch.cat([types, G.node_geometry(batch)], -1)
        # one neighbour search: the nearest k of the larger list are the nearest k
        nb = G.neighbours(batch, frames, max(c.k_equivariant, c.k_invariant), c.cutoff)
        return {
            "frames": frames,
            "scalars": scalars,
            "eq_nb": nb.nearest(c.k_equivariant),
            "inv_nb": nb.nearest(c.k_invariant),
        }

    def prior_params(self, batch: G.ResidueBatch, cond: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-sigma of p(z | CG), (G, L, z) each."""
        out = self.prior(cond["scalars"], G.frame_vectors(cond["frames"]), cond["eq_nb"])
        return _gaussian(out)

    def drop_encoder(self) -> None:
        """Leave out the encoder (posterior network): generation samples from the prior alone."""
        self.encoder = None

    def posterior_params(self, batch: G.ResidueBatch, cond: dict, targets: Targets) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-sigma of q(z | all-atom, CG), (G, L, z) each."""
        if self.encoder is None:
            raise RuntimeError("this model was loaded for generation (load_model) without its encoder; "
                               "build a BackmapVAE and load the weights to train or score it")
        scalars, vectors = self._encoder_inputs(batch, targets)
        out = self.encoder(torch.cat([cond["scalars"], scalars], -1),
                           torch.cat([G.frame_vectors(cond["frames"]), vectors], -2), cond["eq_nb"])
        return _gaussian(out)

    def _encoder_inputs(self, batch: G.ResidueBatch, t: Targets):
        n = batch.n_real
        dev = batch.beads.device
        first = torch.as_tensor(batch.layout.first, device=dev)
        angle = t.dofs["angle"].float()
        ok = t.dof_masks["angle"].float()

        def trig(values, mask):
            return torch.stack([torch.sin(values) * mask, torch.cos(values) * mask, mask], -1)

        nxt = torch.zeros(n, 3, device=dev).index_copy(0, first, trig(angle, ok))
        prv = torch.zeros(n, 3, device=dev).index_copy(0, first + 1, trig(angle, ok))
        period = chi_periods(batch.flat_res_type, dev)
        chi = trig(t.chi.float() * 2 * math.pi / period, t.chi_mask.float()).flatten(1)
        scalars = torch.cat([nxt, prv, chi], -1)
        x = t.slots.float()
        ca = x[:, chem.SLOT_CA]
        side = torch.as_tensor(chem.SLOT_EXISTS[batch.flat_res_type], device=dev) & t.present
        side[:, : chem.SLOT_CB + 1] = False
        side[:, chem.SLOT_OXT] = False
        centroid = (x * side[..., None]).sum(1) / side.sum(1, keepdim=True).clamp(min=1)
        vectors = torch.stack([
            (x[:, chem.SLOT_O] - ca) * t.present[:, chem.SLOT_O, None],
            (x[:, chem.SLOT_CB] - ca) * t.present[:, chem.SLOT_CB, None],
            (centroid - ca) * side.any(1)[:, None],
        ], 1)
        return batch.to_dense(scalars), batch.to_dense(vectors)

    def decode(self, batch: G.ResidueBatch, cond: dict, z: torch.Tensor) -> dict:
        """Distribution parameters of every degree of freedom (flat residues / peptides / ends)."""
        c = self.config
        h = batch.to_flat(self.decoder(torch.cat([cond["scalars"], z], -1), cond["inv_nb"]))
        first = torch.as_tensor(batch.layout.first, device=h.device)
        pep = self.peptide_head(torch.cat([h[first], h[first + 1]], -1))
        out = {"angle": pep.split(c.bins, -1)}
        term = self.terminal_head(h).view(h.shape[0], len(TERMINAL), 2, c.bins)
        starts = torch.as_tensor(batch.layout.starts, device=h.device)
        ends = torch.as_tensor(batch.layout.ends, device=h.device)
        for k, name in enumerate(TERMINAL):
            rows = starts if name == "psi_first" else ends
            out[name] = (term[rows, k, 0], term[rows, k, 1])
        rot = self.rotamer_head(h)
        count = torch.as_tensor(load_rotamers().count[batch.flat_res_type], device=h.device)
        logits = rot[:, : c.max_rotamers]
        valid = torch.arange(c.max_rotamers, device=h.device)[None] < count.clamp(min=1)[:, None]
        out["rotamer_logits"] = logits.masked_fill(~valid, -1e4)
        out["chi_offsets"] = torch.tanh(rot[:, c.max_rotamers :].view(-1, c.max_rotamers, 4)) * c.chi_offset_max
        return out

    # ------------------------------------------------------------- selection
    def _angle_value(self, logits_offsets, choice: torch.Tensor) -> torch.Tensor:
        logits, offsets = logits_offsets
        width = 2 * math.pi / self.config.bins
        centre = bin_centres(self.config.bins, logits.device, logits.dtype)[choice]
        return centre + torch.tanh(offsets.gather(-1, choice[..., None])[..., 0]) * width

    def _central_angle(self, logits_offsets) -> torch.Tensor:
        """Circular mean of a decoded angle distribution over the half circle centred on its most likely bin.

        The circular mean minimises the expected 1 - cos of the error, i.e.
        the expected squared displacement of atoms the angle turns; keeping
        to the half circle of the mode does not average over separate modes.
        """
        logits, offsets = logits_offsets
        width = 2 * math.pi / self.config.bins
        values = bin_centres(self.config.bins, logits.device, logits.dtype) + torch.tanh(offsets) * width
        top = values.gather(-1, logits.argmax(-1, keepdim=True))
        weight = torch.softmax(logits, -1) * (torch.cos(values - top) > 0)
        return torch.atan2((weight * torch.sin(values)).sum(-1), (weight * torch.cos(values)).sum(-1))

    def _chis(self, out: dict, res_type: np.ndarray, rotamer: torch.Tensor) -> torch.Tensor:
        """Chi angles (..., R, 4) of rotamers ``rotamer`` (..., R): library value plus decoded offset."""
        lib = torch.as_tensor(load_rotamers().chis[res_type], device=rotamer.device)  # (R, K, 4)
        lib = torch.nan_to_num(lib).to(out["chi_offsets"].dtype)
        pick = rotamer[..., None, None].expand(*rotamer.shape, 1, 4)
        base = torch.gather(lib.expand(rotamer.shape + lib.shape[-2:]), -2, pick)[..., 0, :]
        offset = torch.gather(out["chi_offsets"].expand(rotamer.shape + lib.shape[-2:]), -2, pick)[..., 0, :]
        # proline keeps its library puckers exactly: the ring only closes for them
        pro = torch.as_tensor(np.asarray(res_type) == chem.RESIDUE_INDEX["PRO"], device=offset.device)
        return base + torch.where(pro[:, None], torch.zeros_like(offset), offset)

    def structure(self, batch: G.ResidueBatch, out: dict, choices: dict, beads_flat: torch.Tensor) -> torch.Tensor:
        """Heavy atoms (R, N_SLOTS, 3) for chosen bins / rotamers."""
        dofs = {name: self._angle_value(out[name], choices[name]) for name in ("angle",) + TERMINAL}
        backbone = build_backbone(beads_flat, batch.layout, batch.flat_res_type, dofs)
        chis = self._chis(out, batch.flat_res_type, choices["rotamer"])
        ics = side_chain_internal(batch.flat_res_type, chis)
        identity = np.repeat(np.arange(batch.n_real)[:, None], 4, axis=1)
        ext = extend_with_context(backbone, identity)
        slots = [s for s in chem.BUILD_ORDER if s >= chem.SLOT_CB]
        rt = torch.as_tensor(batch.flat_res_type, device=beads_flat.device)
        atoms = build_residues(ext, ics, rt, slots=slots)[..., : chem.N_SLOTS, :]
        exists = self._atom_mask(batch, atoms.device)
        return atoms * exists[..., None]

    # ------------------------------------------------------------------ train
    def loss(self, batch: G.ResidueBatch, targets: Targets) -> dict:
        """All loss terms (each a scalar tensor) and their weighted sum ``total``.

        The decoder is trained twice per batch: with z from the posterior
        (the VAE reconstruction) and with z drawn from the prior, which is
        what sampling uses (the hybrid objective of conditional VAEs, Sohn
        et al. 2015); without the second term the decoder learns to read the
        answer from the posterior's z and ignores the CG context. Cartesian
        and clash terms are computed on the prior-sample structure.
        """
        c = self.config
        cond = self.condition(batch)
        mu_p, ls_p = self.prior_params(batch, cond)
        mu_q, ls_q = self.posterior_params(batch, cond, targets)
        terms = {}
        # exact Gaussian KL(q || p) per residue and dimension, free bits per dimension
        kl = (ls_p - ls_q) + (torch.exp(2 * ls_q) + (mu_q - mu_p) ** 2) / (2 * torch.exp(2 * ls_p)) - 0.5
        kl = batch.to_flat(kl)
        terms["kl"] = kl.sum(-1).mean()
        kl_loss = torch.clamp(kl.mean(0), min=c.free_bits).sum()
        posterior = self._choice_terms(self.decode(batch, cond, mu_q + torch.randn_like(mu_q) * ls_q.exp()), batch, targets)
        out = self.decode(batch, cond, mu_p + torch.randn_like(mu_p) * ls_p.exp())
        prior = self._choice_terms(out, batch, targets)
        terms.update({f"{k}": v for k, v in posterior.items()})
        terms.update({f"prior_{k}": v for k, v in prior.items()})
        # the structure the decoder's most likely choices build from a prior sample, with the true trace
        choices = {name: out[name][0].argmax(-1).detach() for name in ("angle",) + TERMINAL}
        choices["rotamer"] = out["rotamer_logits"].argmax(-1).detach()
        atoms = self.structure(batch, out, choices, batch.to_flat(batch.beads))
        truth = targets.slots.to(atoms.dtype)
        present = targets.present & torch.as_tensor(chem.SLOT_EXISTS[batch.flat_res_type], device=atoms.device)
        d2 = ((atoms - truth) ** 2).sum(-1)
        terms["cartesian"] = d2[present].mean()
        terms["rmsd"] = d2[present].mean().sqrt().detach()
        terms["clash"] = self.clash_loss(batch, atoms, cond["inv_nb"])

        def choice_loss(t):
            return (c.w_angle * (t["angle_ce"] + c.w_offset * t["angle_offset"])
                    + c.w_rotamer * (t["rotamer_ce"] + c.w_offset * t["chi_offset"]))

        terms["total"] = (
            (1 - c.prior_weight) * choice_loss(posterior)
            + c.prior_weight * choice_loss(prior)
            + c.w_kl * kl_loss
            + c.w_cartesian * terms["cartesian"]
            + c.w_clash * terms["clash"]
        )
        return terms

    def _choice_terms(self, out: dict, batch: G.ResidueBatch, targets: Targets) -> dict:
        """Classification and offset losses of one decoding, with accuracies."""
        c = self.config
        terms = {}
        ce, off = [], []
        for name in ("angle",) + TERMINAL:
            logits, _ = out[name]
            mask = targets.dof_masks[name]
            if not mask.any():
                continue
            true = targets.dofs[name].to(logits.dtype)
            b = angle_bin(true, c.bins)
            ce.append(nn.functional.cross_entropy(logits[mask], b[mask], reduction="sum"))
            value = self._angle_value(out[name], b)
            off.append((1 - torch.cos(value - true))[mask].sum())
            terms[f"{name}_acc"] = (logits.argmax(-1) == b)[mask].float().mean().detach()
        n_dof = sum(int(targets.dof_masks[k].sum()) for k in ("angle",) + TERMINAL)
        terms["angle_ce"] = torch.stack(ce).sum() / max(1, n_dof)
        terms["angle_offset"] = torch.stack(off).sum() / max(1, n_dof)
        # rotamers: classification + chi offsets of the true rotamer
        rm = targets.rotamer_mask
        logits = out["rotamer_logits"]
        terms["rotamer_ce"] = nn.functional.cross_entropy(logits[rm], targets.rotamer[rm]) if rm.any() else logits.new_zeros(())
        terms["rotamer_acc"] = (logits.argmax(-1) == targets.rotamer)[rm].float().mean().detach()
        chis = self._chis(out, batch.flat_res_type, targets.rotamer)
        period = chi_periods(batch.flat_res_type, chis.device).to(chis.dtype)
        chi_err = 1 - torch.cos((chis - targets.chi.to(chis.dtype)) * 2 * math.pi / period)
        terms["chi_offset"] = chi_err[targets.chi_mask].mean() if targets.chi_mask.any() else logits.new_zeros(())
        return terms

    def clash_loss(self, batch: G.ResidueBatch, atoms: torch.Tensor, nb: G.Neighbours) -> torch.Tensor:
        """Mean squared overlap below ``clash_distance`` of atom pairs more than 3 bonds apart.

        Pairs come from the generated structure itself: atoms of each residue
        with each other and with the atoms of its graph neighbours.
        """
        c = self.config
        dense = batch.to_dense(atoms)  # (G, L, S, 3)
        rt = batch.res_type
        exists = torch.tensor(chem.SLOT_EXISTS, device=atoms.device)[rt] & batch.mask[..., None]
        exists = exists & (dense.abs().sum(-1) > 0)  # OXT only where built
        table = torch.as_tensor(BOND_DISTANCE, device=atoms.device)
        g, length, k = nb.index.shape
        other = G.gather_neighbours(dense.flatten(2), nb.index).view(g, length, k, chem.N_SLOTS, 3)
        other_exists = G.gather_neighbours(exists.float(), nb.index).view(g, length, k, chem.N_SLOTS) > 0
        d = torch.cdist(dense[:, :, None].expand(-1, -1, k, -1, -1).reshape(-1, chem.N_SLOTS, 3),
                        other.reshape(-1, chem.N_SLOTS, 3)).view(g, length, k, chem.N_SLOTS, chem.N_SLOTS)
        sep = nb.index - torch.arange(length, device=atoms.device)[None, :, None]
        seg_j = torch.gather(batch.segment, 1, nb.index.flatten(1)).view_as(nb.index)
        same = seg_j == batch.segment[..., None]
        ti, tj = rt[..., None].expand_as(nb.index), torch.gather(rt, 1, nb.index.flatten(1)).view_as(nb.index)
        # bonds between atom a of i and b of j through the peptide bond (j = i + 1 or i - 1)
        to_c = table[ti][..., :, chem.SLOT_C]  # (G, L, K, S)
        to_n = table[tj][..., chem.SLOT_N, :]
        fwd = to_c[..., :, None] + 1 + to_n[..., None, :]
        from_n = table[ti][..., :, chem.SLOT_N]
        to_cj = table[tj][..., chem.SLOT_C, :]
        bwd = from_n[..., :, None] + 1 + to_cj[..., None, :]
        bonds = torch.where((same & (sep == 1))[..., None, None], fwd,
                            torch.where((same & (sep == -1))[..., None, None], bwd, torch.full_like(fwd, 9)))
        pair = exists[:, :, None, :, None] & other_exists[..., None, :] & nb.mask[..., None, None] & (bonds > 3)
        inter = (torch.relu(c.clash_distance - d) ** 2 * pair).sum() / 2
        intra_d = torch.cdist(dense.reshape(-1, chem.N_SLOTS, 3), dense.reshape(-1, chem.N_SLOTS, 3)).view(g, length, chem.N_SLOTS, chem.N_SLOTS)
        intra_pair = exists[..., :, None] & exists[..., None, :] & (table[rt] > 3)
        intra = (torch.relu(c.clash_distance - intra_d) ** 2 * intra_pair).sum() / 2
        return (inter + intra) / max(1, batch.n_real)

    # ---------------------------------------------------------------- sample
    @torch.no_grad()
    def sample_candidates(self, batch: G.ResidueBatch, seeds, temperature: float = 1.0, mode: bool = False,
                          n_candidates: int = 4):
        """Backbone and side-chain candidates of one sample per graph.

        Parameters
        ----------
        batch : ResidueBatch
            One graph per frame.
        seeds : sequence of int
            One seed per graph: its latent and its choices depend only on it.
        temperature : float
            Scales the logits of the discrete choices.
        mode : bool
            The deterministic structure of least expected error instead of a
            sample: the latent at the prior mean, every backbone angle at the
            circular mean of its decoded distribution over the half circle
            centred on its most likely bin (:meth:`_central_angle`), and the
            rotamers ordered by ``risk``.
        n_candidates : int
            Side-chain candidates per residue: the rotamers drawn without
            replacement (Gumbel top-k) from the decoder's distribution, or
            in ``mode`` those of least risk.

        Returns
        -------
        backbone : torch.Tensor
            (R, N_SLOTS, 3) with N, CA, C, O placed.
        ics : torch.Tensor
            (K, R, N_SLOTS, 3) side-chain internal coordinates of the candidates.
        log_prob : torch.Tensor
            (K, R) log-probability of each candidate (-inf: not a candidate).
        risk : torch.Tensor
            (K, R) expected squared deviation (Angstrom^2, summed over the
            side-chain atoms) of each candidate from a rotamer drawn from
            the decoder's distribution (:func:`~backmap_plugin.build.ideal.rotamer_deviation_table`;
            inf: not a candidate). The candidate of least risk minimises the
            expected side-chain RMSD (minimum Bayes risk).
        """
        cond = self.condition(batch)
        mu, log_sigma = self.prior_params(batch, cond)
        n_graphs = mu.shape[0]
        sizes = batch.mask.sum(1).tolist()
        counts = {"angle": len(batch.layout.first), "psi_first": len(batch.layout.starts),
                  "phi_last": len(batch.layout.ends), "psi_last": len(batch.layout.ends)}
        per_graph = {k: v // n_graphs for k, v in counts.items()}
        k_max = self.config.max_rotamers
        eps = torch.zeros_like(mu)
        uniforms = {k: [] for k in counts}
        gumbel = []
        for g, seed in enumerate([] if mode else seeds):  # the mode draws nothing
            gen = seeded_generator(int(seed))
            eps[g, : sizes[g]] = torch.randn(sizes[g], mu.shape[-1], generator=gen).to(mu)
            for k in counts:
                uniforms[k].append(torch.rand(per_graph[k], generator=gen))
            gumbel.append(-torch.log(-torch.log(torch.rand(sizes[g], k_max, generator=gen).clamp(1e-12, 1 - 1e-7))))
        z = mu if mode else mu + eps * log_sigma.exp()
        out = self.decode(batch, cond, z)
        dofs = {}
        for k in counts:
            if mode:
                dofs[k] = self._central_angle(out[k])
                continue
            probs = torch.softmax(out[k][0] / temperature, -1)
            u = torch.cat(uniforms[k]).to(probs)[:, None]
            choice = (probs.cumsum(-1) < u).sum(-1).clamp(max=probs.shape[-1] - 1)
            dofs[k] = self._angle_value(out[k], choice)
        backbone = fit_backbone(build_backbone(batch.to_flat(batch.beads), batch.layout, batch.flat_res_type, dofs),
                                batch.layout)
        log_p = torch.log_softmax(out["rotamer_logits"], -1)
        count = torch.as_tensor(load_rotamers().count[batch.flat_res_type], device=log_p.device).clamp(min=1)
        exists = torch.arange(k_max, device=log_p.device)[None] < count[:, None]  # (R, k_max)
        deviation = rotamer_deviation_table().to(log_p)[batch.flat_res_type][:, :k_max, :k_max]
        risk = torch.einsum("ri,rij->rj", log_p.exp(), deviation).masked_fill(~exists, math.inf)
        key = -risk if mode else log_p / temperature + torch.cat(gumbel).to(log_p)
        k = min(n_candidates, k_max)
        order = key.topk(k, dim=-1).indices  # (R, K)
        ics = side_chain_internal(batch.flat_res_type, self._chis(out, batch.flat_res_type, order.T))
        valid = exists.gather(-1, order).T  # (K, R)
        log_prob = torch.where(valid, log_p.gather(-1, order).T, -math.inf)
        return backbone, ics, log_prob, torch.where(valid, risk.gather(-1, order).T, math.inf)

    @torch.no_grad()
    def sample(self, batch: G.ResidueBatch, seeds, temperature: float = 1.0, mode: bool = False) -> torch.Tensor:
        """One all-atom structure per graph, each residue in its first candidate rotamer.

        See :meth:`sample_candidates` for the parameters; returns (R, N_SLOTS, 3).
        """
        backbone, ics, _, _ = self.sample_candidates(batch, seeds, temperature, mode, n_candidates=1)
        identity = np.repeat(np.arange(batch.n_real)[:, None], 4, axis=1)
        ext = extend_with_context(backbone, identity)
        slots = [s for s in chem.BUILD_ORDER if s >= chem.SLOT_CB]
        rt = torch.as_tensor(batch.flat_res_type, device=backbone.device)
        atoms = build_residues(ext, ics[0], rt, slots=slots)[..., : chem.N_SLOTS, :]
        return atoms * self._atom_mask(batch, atoms.device)[..., None]

    def _atom_mask(self, batch: G.ResidueBatch, device) -> torch.Tensor:
        """(R, N_SLOTS) atoms that exist (OXT at segment ends)."""
        exists = torch.tensor(chem.SLOT_EXISTS[batch.flat_res_type], device=device)
        ends = np.r_[batch.flat_segment[1:] != batch.flat_segment[:-1], True]
        exists[:, chem.SLOT_OXT] = torch.as_tensor(ends, device=device)
        return exists
