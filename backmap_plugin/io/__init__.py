"""Layer 1, files: readers of coarse-grained input, one writer module per
written format, the one atomic-write helper, and resume records. Imports
only :mod:`backmap_plugin.core`."""
