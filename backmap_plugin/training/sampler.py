"""Cluster-balanced, cropped training batches from a corpus cache.

A :class:`ClusterSampler` draws what to train on: a sequence cluster
uniformly, an entry of that cluster uniformly, a frame of that entry
uniformly, and how to crop it (contiguous window or spatial neighbourhood,
with a random anchor). A :class:`CropDataset` turns such a
:class:`CropKey` into arrays, reading only the needed frame of the
memory-mapped entry, and :func:`collate_crops` pads samples to fixed-size
batches. :func:`make_loader` puts the three into a ``DataLoader``.

All randomness is drawn by the sampler from one seeded ``torch.Generator``
(the bead-noise seed included), so a run is reproducible with any number of
loader workers.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.geometry import context_indices
from backmap_plugin.core.torch_import import seeded_generator
from backmap_plugin.training.cache import Cache


class CropKey(NamedTuple):
    """What one sample is made of (drawn by :class:`ClusterSampler`).

    Attributes
    ----------
    entry : int
        Index into ``Cache.entries``.
    frame : int
        Frame of the entry.
    spatial : bool
        Spatial crop (residues nearest a centre) instead of a sequence window.
    anchor : float
        In [0, 1): where the window starts / which residue is the centre.
    noise_seed : int
        Seed of the bead noise.
    """

    entry: int
    frame: int
    spatial: bool
    anchor: float
    noise_seed: int


class ClusterSampler(torch.utils.data.Sampler):
    """Draw :class:`CropKey` items uniformly over sequence clusters.

    Parameters
    ----------
    cache : Cache
        An opened cache.
    split : str
        ``train``, ``val`` or ``test``: only entries of this split are drawn.
    epoch_size : int, optional
        Samples per iteration (default: number of clusters in the split).
    spatial_prob : float
        Probability of a spatial crop instead of a contiguous window.
    seed : int
        Seed of the sampler's ``torch.Generator``. Every iteration continues
        the generator's stream: two samplers with the same seed give the
        same sequence of epochs.

    Raises
    ------
    ValueError
        The split has no entries, or a parameter is out of range.
    """

    def __init__(self, cache: Cache, split: str = "train", epoch_size: int | None = None,
                 spatial_prob: float = 0.5, seed: int = 0):
        members = cache.select(split)
        if not members:
            raise ValueError(f"{cache.root}: no entries in split '{split}'")
        if not 0.0 <= spatial_prob <= 1.0:
            raise ValueError(f"spatial_prob must be in [0, 1], got {spatial_prob}")
        clusters: dict[str, list[int]] = {}
        for i in members:
            clusters.setdefault(cache.entries[i].cluster30, []).append(i)
        self.clusters = [clusters[c] for c in sorted(clusters)]
        self.n_frames = [e.n_frames for e in cache.entries]
        self.epoch_size = len(self.clusters) if epoch_size is None else int(epoch_size)
        if self.epoch_size < 1:
            raise ValueError(f"epoch_size must be positive, got {epoch_size}")
        self.spatial_prob = float(spatial_prob)
        self.generator = seeded_generator(int(seed))

    def __len__(self) -> int:
        return self.epoch_size

    def __iter__(self):
        n, g = self.epoch_size, self.generator
        cluster = torch.randint(len(self.clusters), (n,), generator=g).tolist()
        pick_entry = torch.rand(n, generator=g, dtype=torch.float64).tolist()
        pick_frame = torch.rand(n, generator=g, dtype=torch.float64).tolist()
        spatial = (torch.rand(n, generator=g) < self.spatial_prob).tolist()
        anchor = torch.rand(n, generator=g, dtype=torch.float64).tolist()
        noise_seed = torch.randint(2**31 - 1, (n,), generator=g).tolist()
        for k in range(n):
            members = self.clusters[cluster[k]]
            entry = members[int(pick_entry[k] * len(members))]
            frame = int(pick_frame[k] * self.n_frames[entry])
            yield CropKey(entry, frame, spatial[k], anchor[k], noise_seed[k])


def crop_indices(n_residues: int, crop: int, spatial: bool, anchor: float,
                 beads: np.ndarray | None = None) -> np.ndarray:
    """Residues of a crop, in sequence order.

    Parameters
    ----------
    n_residues : int
        Residues of the entry.
    crop : int
        Residues kept; all of them when the entry is not longer.
    spatial : bool
        Keep the ``crop`` residues whose beads are nearest the bead of the
        centre residue ``floor(anchor * n_residues)`` (needs ``beads``);
        otherwise the window starting at ``floor(anchor * (n_residues - crop + 1))``.
    anchor : float
        In [0, 1).
    beads : numpy.ndarray, optional
        (R, 3) bead positions of the frame.

    Returns
    -------
    numpy.ndarray
        Sorted residue indices.
    """
    if n_residues <= crop:
        return np.arange(n_residues)
    if not spatial:
        start = int(anchor * (n_residues - crop + 1))
        return np.arange(start, start + crop)
    beads = np.asarray(beads, dtype=np.float32)
    centre = beads[int(anchor * n_residues)]
    distance = ((beads - centre) ** 2).sum(-1)
    return np.sort(np.argpartition(distance, crop - 1)[:crop])


def renumber_segments(segment: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Segment ids of the residues ``index`` (sorted), from 0, new at every break or crop gap."""
    new = np.ones(len(index), bool)
    new[1:] = (segment[index[1:]] != segment[index[:-1]]) | (np.diff(index) != 1)
    return np.cumsum(new) - 1


class CropDataset(torch.utils.data.Dataset):
    """Samples of a cache, addressed by :class:`CropKey`.

    ``ic_valid`` of a sample additionally requires that the context of the
    residue (the neighbouring C-alphas its backbone N and C are built from,
    :func:`backmap_plugin.core.geometry.context_indices`) be the same inside the
    crop, with the crop's segments, as in the whole entry: then
    ``build_residues`` on the crop reproduces ``xyz`` from ``ic``.

    Parameters
    ----------
    cache : Cache
        An opened cache.
    crop : int
        Maximum residues per sample.
    bead_noise : float
        Standard deviation (Angstrom) of Gaussian noise added to the beads
        (only the beads).
    max_open : int
        Entries kept memory-mapped at a time (least recently used are closed).

    Notes
    -----
    A sample is a dict of numpy arrays, ``L <= crop`` residues: ``res_type``
    (L,) int64, ``xyz`` (L, S, 3) float32, ``present`` (L, S) bool, ``ic``
    (L, S, 3) float32, ``ic_valid`` (L,) bool, ``beads`` (L, 3) float32,
    ``segment`` (L,) int64, plus ``entry`` and ``frame``. Coordinates are as
    stored (not centred).
    """

    def __init__(self, cache: Cache, crop: int = 128, bead_noise: float = 0.0, max_open: int = 64):
        if crop < 1:
            raise ValueError(f"crop must be positive, got {crop}")
        if bead_noise < 0:
            raise ValueError(f"bead_noise must be >= 0, got {bead_noise}")
        self.cache = cache
        self.crop = int(crop)
        self.bead_noise = float(bead_noise)
        self.max_open = int(max_open)
        self._open: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self.cache.entries)

    def _arrays(self, entry: int):
        if entry in self._open:
            self._open.move_to_end(entry)
            return self._open[entry]
        arrays = self.cache.load(entry)
        refs, _ = context_indices(np.asarray(arrays.segment))
        self._open[entry] = (arrays, refs)
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return arrays, refs

    def __getitem__(self, key: CropKey) -> dict:
        key = CropKey(*key)
        arrays, refs = self._arrays(key.entry)
        beads = np.asarray(arrays.beads[key.frame])
        index = crop_indices(len(beads), self.crop, key.spatial, key.anchor, beads)
        segment = renumber_segments(np.asarray(arrays.segment), index)
        crop_refs, long_enough = context_indices(segment)
        same_context = (index[crop_refs] == refs[index]).all(axis=1)
        beads = beads[index]
        if self.bead_noise > 0:
            noise = np.random.default_rng(key.noise_seed).normal(0.0, self.bead_noise, beads.shape)
            beads = beads + noise.astype(np.float32)
        return {
            "res_type": np.asarray(arrays.res_type[index], dtype=np.int64),
            "xyz": np.asarray(arrays.xyz[key.frame, index]),
            "present": np.asarray(arrays.present[index]),
            "ic": np.asarray(arrays.ic[key.frame, index]),
            "ic_valid": np.asarray(arrays.ic_valid[index]) & long_enough & same_context,
            "beads": beads.astype(np.float32),
            "segment": segment.astype(np.int64),
            "entry": key.entry,
            "frame": key.frame,
        }


def collate_crops(samples: list[dict], crop: int) -> dict:
    """Pad samples to ``crop`` residues and stack them.

    Parameters
    ----------
    samples : list of dict
        From :class:`CropDataset`.
    crop : int
        Padded length ``L``.

    Returns
    -------
    dict of torch.Tensor
        ``res_type`` (B, L) long, ``xyz`` (B, L, S, 3) float32, ``present``
        (B, L, S) bool, ``ic`` (B, L, S, 3) float32, ``ic_valid`` (B, L) bool,
        ``beads`` (B, L, 3) float32, ``segment`` (B, L) long (-1 on padding),
        ``residue_mask`` (B, L) bool (False on padding), ``entry`` and
        ``frame`` (B,) long. Padding is zero / False elsewhere.
    """
    b, s = len(samples), chem.N_SLOTS
    batch = {
        "res_type": torch.zeros(b, crop, dtype=torch.long),
        "xyz": torch.zeros(b, crop, s, 3),
        "present": torch.zeros(b, crop, s, dtype=torch.bool),
        "ic": torch.zeros(b, crop, s, 3),
        "ic_valid": torch.zeros(b, crop, dtype=torch.bool),
        "beads": torch.zeros(b, crop, 3),
        "segment": torch.full((b, crop), -1, dtype=torch.long),
        "residue_mask": torch.zeros(b, crop, dtype=torch.bool),
    }
    for i, sample in enumerate(samples):
        n = len(sample["res_type"])
        for name in ("res_type", "xyz", "present", "ic", "ic_valid", "beads", "segment"):
            batch[name][i, :n] = torch.from_numpy(sample[name])
        batch["residue_mask"][i, :n] = True
    batch["entry"] = torch.tensor([sample["entry"] for sample in samples], dtype=torch.long)
    batch["frame"] = torch.tensor([sample["frame"] for sample in samples], dtype=torch.long)
    return batch


class _Collate:
    """Picklable ``collate_fn`` (for loader worker processes)."""

    def __init__(self, crop: int):
        self.crop = crop

    def __call__(self, samples):
        return collate_crops(samples, self.crop)


def make_loader(
    cache: Cache,
    split: str = "train",
    batch_size: int = 8,
    crop: int = 128,
    spatial_prob: float = 0.5,
    bead_noise: float = 0.0,
    epoch_size: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` of fixed-size, cluster-balanced, cropped batches.

    Parameters
    ----------
    cache : Cache
        An opened cache.
    split : str
        ``train``, ``val`` or ``test``.
    batch_size : int
        Samples per batch (incomplete last batches are dropped).
    crop : int
        Residues per sample (padded length).
    spatial_prob : float
        Probability of a spatial crop.
    bead_noise : float
        Gaussian bead noise, Angstrom.
    epoch_size : int, optional
        Samples per epoch (default: clusters in the split); the loader yields
        ``epoch_size // batch_size`` batches.
    seed : int
        Sampler seed.
    num_workers : int
        Loader worker processes.

    Returns
    -------
    torch.utils.data.DataLoader
        Yields the dicts of :func:`collate_crops`.
    """
    sampler = ClusterSampler(cache, split, epoch_size, spatial_prob, seed)
    dataset = CropDataset(cache, crop, bead_noise)
    # (a generator of its own: making an iterator otherwise draws from torch's global random state, which the
    # model's sampling noise draws from too, so a run resumed within a block of batches drew other noise)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
        collate_fn=_Collate(crop), num_workers=num_workers, generator=seeded_generator(int(seed)),
    )
