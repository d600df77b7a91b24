"""The ``backmap`` command's allocator setting: freed memory is reused, not faulted in again."""

import subprocess
import sys

import pytest

from backmap_plugin.core import allocator

_PROBE = """
import resource, sys
import torch
from backmap_plugin.core.allocator import keep_freed_memory
torch.set_num_threads(1)
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
x = torch.ones(1 << 23)  # 32 MiB


def step():  # large temporaries, as a chunk of frames makes them
    y = x * 2
    return (torch.cat([y, x]).sum() + y.sum()).item()


step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings (Linux)")
def test_keep_freed_memory_reuses_large_blocks():
    """Ten rounds of 32-64 MiB temporaries: ~250,000 page faults by default, far fewer once freed memory is kept."""
    _, default = _faults("default")
    applied, kept = _faults("keep")
    if applied != "True":
        pytest.skip("the C library is not glibc")
    assert default > 100_000
    assert kept < default / 2


def test_cli_sets_the_allocator(monkeypatch):
    """``backmap`` applies the settings before running a subcommand."""
    from backmap_plugin.cli import command as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("malloc"))
    monkeypatch.setattr(cli, "collect_garbage_less_often", lambda: calls.append("gc"))
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert not calls  # argparse exits first
    assert cli.main(["validate", "/nonexistent.pdb"]) == 2
    assert calls == ["malloc", "gc"]


def test_garbage_is_still_collected():
    """The youngest generation is collected every GC_THRESHOLD allocations: cycles do not pile up."""
    import gc

    before, enabled = gc.get_threshold(), gc.isenabled()
    gc.enable()
    try:
        allocator.collect_garbage_less_often()
        assert gc.get_threshold() == (allocator.GC_THRESHOLD,) + before[1:]
        def collections():  # a collection of an older generation takes the youngest with it
            return sum(generation["collections"] for generation in gc.get_stats())

        collected = collections()
        for _ in range(3 * allocator.GC_THRESHOLD):
            cycle = []
            cycle.append(cycle)
        assert collections() >= collected + 2
    finally:
        gc.set_threshold(*before)
        if not enabled:
            gc.disable()


def test_keep_freed_memory_is_harmless_elsewhere(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
