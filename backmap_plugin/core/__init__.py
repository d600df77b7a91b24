"""Layer 0, the foundation: residue chemistry, geometry, topology, bead
mappings, periodic boxes, metrics, errors and device choice. Imports nothing
else of the package."""
