"""``use_threads``: torch's and OpenMM's CPU threads, whether they are loaded before it or after."""

from __future__ import annotations

import os
import subprocess
import sys

import openmm
import pytest
import torch

from backmap_plugin.core.threads import use_threads


def test_loaded_libraries_are_told(restored_threads):
    torch.set_num_threads(2)
    use_threads(1)
    assert torch.get_num_threads() == 1
    system = openmm.System()
    system.addParticle(1.0)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    assert context.getPlatform().getPropertyValue(context, "Threads") == "1"


def test_libraries_loaded_later_read_it():
    code = ("from backmap_plugin.core.threads import use_threads; use_threads(1); import torch, openmm; "
            "cpu = openmm.Platform.getPlatformByName('CPU'); "
            "print(torch.get_num_threads(), cpu.getPropertyDefaultValue('Threads'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENMM_CPU_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1"]


def test_at_least_one():
    with pytest.raises(ValueError, match="at least 1"):
        use_threads(0)
