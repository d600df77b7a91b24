"""Installation script for backmap_plugin."""

from setuptools import find_packages, setup

setup(
    name="backmap_plugin",
    version="0.1.0",
    description="Generative backmapping of coarse-grained protein simulations to all-atom structures",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["backmap_plugin", "backmap_plugin.*"]),
    package_data={"backmap_plugin": ["build/tables/*.npz", "build/tables/*.json", "core/tables/*.npz", "core/tables/*.json", "weights/*", "force_fields/*.csv"]},
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "torch>=2.1",
        "e3nn>=0.5",
        "openmm>=8.2",
        "openmmtools>=0.23",
        "pdbfixer>=1.9",
        "mdtraj>=1.10",
        "parmed>=4.2",
        "tqdm>=4.60",
        "tables>=3.8",
    ],
    extras_require={
        # plots for ``backmap report``
        "report": ["matplotlib>=3.7"],
        # ``workflows/Snakefile`` (Snakemake 8+; cluster executors are Snakemake plugins)
        "workflow": ["snakemake>=8", "matplotlib>=3.7"],
        # GROMACS .tpr topologies (read with MDAnalysis)
        "gromacs": ["MDAnalysis>=2.7"],
        # vermouth: the Martini 3 mapping files (tests/test_martini3_table.py; skipped without it)
        "test": ["pytest>=7", "matplotlib>=3.7", "snakemake>=8", "MDAnalysis>=2.7", "vermouth>=0.15"],
    },
    entry_points={"console_scripts": ["backmap=backmap_plugin.cli:console_main"]},
)
