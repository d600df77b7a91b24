"""Layer 5, training: the corpus cache, the cluster-balanced crop sampler,
MD augmentation and the training loop.

* :mod:`backmap_plugin.training.cache`: :func:`build_cache` turns structure files
  into memory-mappable arrays, :func:`open_cache` reads them back.
* :mod:`backmap_plugin.training.sampler`: :class:`ClusterSampler`,
  :class:`CropDataset` and :func:`make_loader` make fixed-size, cropped,
  cluster-balanced training batches.
* :mod:`backmap_plugin.training.augment`: :func:`run_augmentation` adds
  out-of-equilibrium (high-temperature MD) frames of cached structures,
  :func:`append_to_cache` puts them into a cache.
* :mod:`backmap_plugin.training.train`: the training loop (``backmap train``).

Names are imported on first use, so the command line starts without torch.
"""

_EXPORTS = {
    "build_cache": "cache", "open_cache": "cache", "Cache": "cache", "CacheEntry": "cache",
    "EntryArrays": "cache", "process_file": "cache",
    "ClusterSampler": "sampler", "CropDataset": "sampler", "CropKey": "sampler",
    "collate_crops": "sampler", "make_loader": "sampler",
    "run_augmentation": "augment", "append_to_cache": "augment",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
