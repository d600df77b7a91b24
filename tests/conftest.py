"""Shared pytest fixtures: the shipped test structure and the project corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The shipped fixture: PDB 1L2Y (Trp-cage), 20 residues, 38 NMR models.
FIXTURE_PDB = Path(__file__).resolve().parent / "data" / "1l2y.pdb.gz"
#: The project corpus (train / visible_test), next to the repository.
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """Path of the corpus ``../shared/data``; skips the test when it is absent."""
    if not CORPUS.is_dir():
        pytest.skip("corpus ../shared/data not present")
    return CORPUS


@pytest.fixture(scope="session")
def fixture_pdb() -> Path:
    """Path of ``tests/data/1l2y.pdb.gz`` (real 20-residue, 38-model NMR ensemble, train split)."""
    return FIXTURE_PDB
