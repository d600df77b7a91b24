"""``benchmarks/accuracy.py`` on a one-file corpus made of the shipped fixture (no project corpus needed)."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import FIXTURE_PDB

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def accuracy(monkeypatch):
    """The benchmark script as a module (it imports its neighbour ``corpus``)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("accuracy")


@pytest.fixture
def one_crystal(tmp_path) -> Path:
    """A corpus folder whose visible_test holds 1L2Y as the one crystal entry (its first model is scored)."""
    data = tmp_path / "data"
    (data / "visible_test").mkdir(parents=True)
    shutil.copy(FIXTURE_PDB, data / "visible_test" / "shiftx2__1l2y.pdb.gz")
    (data / "manifest.csv").write_text("entry_id,split,subset,kind\nshiftx2__1l2y,visible_test,shiftx2,crystal\n")
    return data


def test_pulchra_not_installed_is_left_out_not_counted_as_failures(accuracy, one_crystal, tmp_path, monkeypatch,
                                                                   capsys):
    """Without pypulchra the PULCHRA row said its structures 'failed'; it is left out, with a line saying why."""
    monkeypatch.setitem(sys.modules, "pypulchra", None)  # (as where it is not installed)
    out = tmp_path / "accuracy.json"
    assert accuracy.main(["--data", str(one_crystal), "--tools", "pulchra,truth", "--json", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    line = "pulchra: not installed (no module pypulchra; pip install pypulchra): left out"
    assert line in stderr
    assert "| pulchra |" not in stdout and "FAILED" not in stdout and "| crystal | truth | 1 | 0 |" in stdout
    result = json.loads(out.read_text())
    assert set(result["groups"]["crystal"]) == {"truth"} and result["notes"]["tools"] == [line]
    assert {row["tool"] for row in result["per_structure"]} == {"truth"}
