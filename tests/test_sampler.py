"""Tests for the cluster-balanced crop sampler (backmap_plugin.training.sampler) on real corpus entries."""

from __future__ import annotations

import csv
import os
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import geometry
from backmap_plugin.training.cache import build_cache, open_cache
from backmap_plugin.training.sampler import (
    ClusterSampler,
    CropDataset,
    CropKey,
    collate_crops,
    crop_indices,
    make_loader,
)

#: One cluster of ten entries (c0004) ...
BIG_CLUSTER = "c0004"
#: ... and single-entry clusters; with val_fraction 0.3 the pymol/5znf ones
#: are validation clusters, the rest train.
SINGLES = [
    "pymol__pept", "pymol__helix_amber", "mustang__5znf", "mustang__1bboN", "biopython__3JQH",
    "mustang__3znf", "bioemu__HHH_rd1_0335", "pdb2pqr__1AJJ", "pymol__3al1", "loopmodel__1df6",
]
VAL_FRACTION = 0.3
CROP = 16


@pytest.fixture(scope="module")
def cache(corpus, tmp_path_factory):
    """Cache of 20 small train entries in 11 clusters, with their manifest."""
    root = tmp_path_factory.mktemp("sampler")
    data = root / "data" / "train"
    data.mkdir(parents=True)
    shutil.copy(corpus / "manifest.csv", root / "data")
    with open(corpus / "manifest.csv", newline="") as handle:
        big = [r["entry_id"] for r in csv.DictReader(handle) if r["cluster30"] == BIG_CLUSTER]
    big = sorted(big, key=lambda e: os.path.getsize(corpus / "train" / f"{e}.pdb.gz"))[:10]
    for name in big + SINGLES:
        shutil.copy(corpus / "train" / f"{name}.pdb.gz", data)
    build_cache([data], root / "cache", workers=1, val_fraction=VAL_FRACTION)
    return open_cache(root / "cache")


def _index(cache, entry_id) -> int:
    return [e.entry_id for e in cache.entries].index(entry_id)


def test_cache_layout(cache):
    clusters = Counter(e.cluster30 for e in cache.entries)
    assert clusters[BIG_CLUSTER] == 10 and len(clusters) == 11
    splits = {e.cluster30: e.split for e in cache.entries}
    assert splits[BIG_CLUSTER] == "train" and {"train", "val"} == set(splits.values())


def test_batch_shapes_and_masks(cache):
    loader = make_loader(cache, "train", batch_size=4, crop=CROP, epoch_size=12, seed=1)
    batches = list(loader)
    assert len(batches) == 3
    s = chem.N_SLOTS
    for batch in batches:
        shapes = {k: tuple(v.shape) for k, v in batch.items()}
        assert shapes == {
            "res_type": (4, CROP), "xyz": (4, CROP, s, 3), "present": (4, CROP, s), "ic": (4, CROP, s, 3),
            "ic_valid": (4, CROP), "beads": (4, CROP, 3), "segment": (4, CROP), "residue_mask": (4, CROP),
            "entry": (4,), "frame": (4,),
        }
        assert batch["res_type"].dtype == batch["segment"].dtype == torch.long
        assert batch["xyz"].dtype == batch["ic"].dtype == batch["beads"].dtype == torch.float32
        assert batch["present"].dtype == batch["ic_valid"].dtype == batch["residue_mask"].dtype == torch.bool
        mask = batch["residue_mask"]
        assert torch.equal(mask, batch["segment"] >= 0)
        assert not batch["present"][~mask].any() and not batch["ic_valid"][~mask].any()
        assert not batch["xyz"][~mask].any() and not batch["beads"][~mask].any()
        assert batch["present"][mask][:, chem.SLOT_CA].all()
        # residues of a row come first, then padding
        assert torch.equal(mask, torch.sort(mask.int(), dim=1, descending=True).values.bool())


def _sample(cache, entry_id, spatial, anchor, crop=CROP, frame=0):
    dataset = CropDataset(cache, crop=crop)
    return dataset[CropKey(_index(cache, entry_id), frame, spatial, anchor, 0)], cache.load(_index(cache, entry_id))


def test_contiguous_crop_is_a_window(cache):
    sample, arrays = _sample(cache, "bioemu__HHH_rd1_0335", spatial=False, anchor=0.5)
    n = len(arrays.res_type)
    start = int(0.5 * (n - CROP + 1))
    np.testing.assert_array_equal(sample["xyz"], arrays.xyz[0, start:start + CROP])
    np.testing.assert_array_equal(sample["beads"], arrays.beads[0, start:start + CROP])
    np.testing.assert_array_equal(sample["segment"], 0)
    # the window cuts the segment: edge residues lose their context
    assert not sample["ic_valid"][0] and not sample["ic_valid"][-1]
    assert sample["ic_valid"][1:-1].all()


def test_spatial_crop_takes_nearest_residues(cache):
    sample, arrays = _sample(cache, "pdb2pqr__1AJJ", spatial=True, anchor=0.4)
    beads = np.asarray(arrays.beads[0])
    centre = beads[int(0.4 * len(beads))]
    index = crop_indices(len(beads), CROP, True, 0.4, beads)
    distance = np.linalg.norm(beads - centre, axis=1)
    outside = np.setdiff1d(np.arange(len(beads)), index)
    assert len(index) == CROP and distance[index].max() <= distance[outside].min()
    np.testing.assert_array_equal(sample["beads"], beads[index])
    # a new segment wherever the picked residues are not consecutive
    gaps = np.diff(index) != 1
    assert gaps.any()
    np.testing.assert_array_equal(np.diff(sample["segment"]), gaps.astype(int))


def test_short_entry_whole_with_chain_breaks(cache):
    sample, arrays = _sample(cache, "pymol__3al1", spatial=True, anchor=0.9, crop=128)
    assert len(sample["res_type"]) == len(arrays.res_type) < 128
    np.testing.assert_array_equal(sample["segment"], arrays.segment)
    assert sample["segment"].max() >= 1  # two chains
    np.testing.assert_array_equal(sample["ic_valid"], arrays.ic_valid)


def test_crop_internal_coordinates_rebuild_xyz(cache):
    loader = make_loader(cache, "train", batch_size=8, crop=CROP, epoch_size=32, seed=3)
    checked = 0
    for batch in loader:
        for i in range(len(batch["entry"])):
            mask = batch["residue_mask"][i]
            segment = batch["segment"][i][mask].numpy()
            xyz = batch["xyz"][i][mask].double()
            ic = batch["ic"][i][mask].double()
            res_type = batch["res_type"][i][mask]
            refs, _ = geometry.context_indices(segment)
            built = geometry.build_residues(geometry.extend_with_context(xyz, refs), ic, res_type)
            ok = batch["present"][i][mask] & batch["ic_valid"][i][mask][:, None]
            error = (built[:, : chem.N_SLOTS] - xyz).norm(dim=-1)[ok]
            assert error.max() < 1e-3
            checked += int(ok.any(dim=1).sum())
    assert checked > 100


def test_clusters_sampled_uniformly(cache):
    sampler = ClusterSampler(cache, "train", epoch_size=8000, seed=0)
    counts = Counter(cache.entries[key.entry].cluster30 for key in sampler)
    assert len(counts) == 8
    # uniform over clusters: 1000 each (5 sigma ~ 150); by entry the big cluster would get ~4700
    assert all(850 < n < 1150 for n in counts.values()), counts
    within = Counter(key.entry for key in ClusterSampler(cache, "train", epoch_size=8000, seed=0)
                     if cache.entries[key.entry].cluster30 == BIG_CLUSTER)
    assert len(within) == 10 and max(within.values()) < 2 * min(within.values())


def test_crop_kind_probability_and_frames(cache):
    keys = list(ClusterSampler(cache, "train", epoch_size=2000, spatial_prob=0.25, seed=0))
    assert 0.2 < np.mean([k.spatial for k in keys]) < 0.3
    assert all(0 <= k.frame < cache.entries[k.entry].n_frames for k in keys)
    assert not any(k.spatial for k in ClusterSampler(cache, "train", epoch_size=200, spatial_prob=0.0))


def test_validation_batches_only_from_val_clusters(cache):
    val_clusters = {e.cluster30 for e in cache.entries if e.split == "val"}
    loader = make_loader(cache, "val", batch_size=5, crop=CROP, epoch_size=300, seed=0)
    drawn = set()
    for batch in loader:
        drawn |= {cache.entries[i].cluster30 for i in batch["entry"].tolist()}
    assert drawn == val_clusters and len(val_clusters) == 3
    with pytest.raises(ValueError, match="no entries in split 'test'"):
        ClusterSampler(cache, "test")


def test_seeded_and_bead_noise_on_beads_only(cache):
    def batches(seed, noise):
        return list(make_loader(cache, "train", batch_size=4, crop=CROP, epoch_size=16, seed=seed, bead_noise=noise))

    first, again, other = batches(5, 0.5), batches(5, 0.5), batches(6, 0.5)
    for a, b in zip(first, again):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a["beads"], b["beads"]) for a, b in zip(first, other))
    clean = batches(5, 0.0)
    noise = []
    for noisy, plain in zip(first, clean):
        for k in noisy:
            if k != "beads":
                assert torch.equal(noisy[k], plain[k])
        mask = plain["residue_mask"]
        noise.append((noisy["beads"] - plain["beads"])[mask])
        assert not noisy["beads"][~mask].any()
    assert abs(float(torch.cat(noise).std()) - 0.5) < 0.05


def test_collate_pads_short_samples(cache):
    dataset = CropDataset(cache, crop=128)
    samples = [dataset[CropKey(_index(cache, "pymol__pept"), 0, False, 0.0, 0)]]
    batch = collate_crops(samples, 128)
    n = len(samples[0]["res_type"])
    assert int(batch["residue_mask"].sum()) == n and (batch["segment"][0, n:] == -1).all()
