"""Shared pytest fixtures: the shipped test structure and the project corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The shipped fixture: PDB 1L2Y (Trp-cage), 20 residues, 38 NMR models.
FIXTURE_PDB = Path(__file__).resolve().parent / "data" / "1l2y.pdb.gz"
#: The project corpus (train / visible_test), next to the repository.
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_truth(path=FIXTURE_PDB, frames=slice(None)):
    """A structure file as the tests use it: (ProteinTopology, slots (F, R, N_SLOTS, 3) Angstrom, present mask)."""
    import mdtraj as md

    from backmap_plugin.core import chemistry as chem
    from backmap_plugin.core.topology import gather_slots, protein_topology, read_residues

    traj = md.load(str(path))[frames]
    records, _ = read_residues(traj.topology, str(path))
    slots, present = gather_slots(traj.xyz * 10.0, records)
    return protein_topology(records, slots[0, :, chem.SLOT_CA]), slots, present


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


@pytest.fixture(scope="session")
def wide_ids_backmapped(tmp_path_factory) -> Path:
    """``tests/data/1deu_ca_propeptide.pdb.gz`` as mmCIF with what PDB cannot hold (chain HEAVY, residues numbered
    10001 on), backmapped by the ideal builder to ``aa.cif``."""
    import gzip

    from openmm.app import PDBFile, PDBxFile

    from backmap_plugin.api import backmap

    folder = tmp_path_factory.mktemp("wide_ids")
    pdb = PDBFile(gzip.open(Path(__file__).resolve().parent / "data" / "1deu_ca_propeptide.pdb.gz", "rt"))
    for chain in pdb.topology.chains():
        chain.id = "HEAVY"
    for k, residue in enumerate(pdb.topology.residues()):
        residue.id, residue.insertionCode = str(10001 + k), ""
    with open(folder / "in.cif", "w") as handle:
        PDBxFile.writeFile(pdb.topology, pdb.positions, handle, keepIds=True)
    backmap(str(folder / "in.cif"), str(folder / "aa.cif"), method="ideal", progress=False)
    return folder / "aa.cif"


@pytest.fixture(scope="session")
def fixture_cache(tmp_path_factory) -> str:
    """A corpus cache (``backmap data build``) of the shipped fixture alone, no val split; read-only for tests."""
    from backmap_plugin.training.cache import build_cache

    root = tmp_path_factory.mktemp("fixture_cache")
    (root / "src").mkdir()
    (root / "src" / FIXTURE_PDB.name).write_bytes(FIXTURE_PDB.read_bytes())
    build_cache([str(root / "src")], str(root / "cache"), workers=1, val_fraction=0.0)
    return str(root / "cache")


@pytest.fixture
def restored_threads():
    """Put torch's threads, OpenMM's CPU default and their environment variables back after the test."""
    import os

    import openmm
    import torch

    cpu = openmm.Platform.getPlatformByName("CPU")
    variables = ("OMP_NUM_THREADS", "OPENMM_CPU_THREADS")
    threads, default, environment = torch.get_num_threads(), cpu.getPropertyDefaultValue("Threads"), {
        k: os.environ.get(k) for k in variables}
    yield
    torch.set_num_threads(threads)
    cpu.setPropertyDefaultValue("Threads", default)
    for key, value in environment.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class FakeState:
    """What a BackmapReporter reads of an OpenMM ``State``: positions (nm) and time (ps), no box."""

    def __init__(self, xyz_nm, time_ps=0.0):
        from openmm import unit

        self._positions = xyz_nm * unit.nanometer
        self._time = time_ps

    def getPositions(self, asNumpy=False):
        return self._positions

    def getTime(self):
        from openmm import unit

        return self._time * unit.picosecond


class FakeSimulation:
    """What a BackmapReporter reads of an OpenMM ``Simulation``: a topology without a box, the current step."""

    def __init__(self, topology):
        self.topology = topology
        self.currentStep = 0
