"""Layer 1, the deterministic builders: backbone from a C-alpha trace,
rotamer library, side-chain clash relief and the ideal-geometry builder.
Imports only :mod:`backmap_plugin.core`."""
