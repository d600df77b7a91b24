"""Layer 4, GROMACS engine: export of refined structures as GROMACS
(``topol.top`` + ``conf.gro``) or OpenMM (``system.xml``) inputs."""
