"""The ``backmap`` command's torch import without torch's compiler front end (core/torch_import.py)."""

import subprocess
import sys
import textwrap

import torch

from backmap_plugin.core.torch_import import defer_torch_compiler_imports


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_first_import_leaves_out_the_deferred_modules_and_later_imports_get_them():
    out = _python("""
        import sys
        from backmap_plugin.core.torch_import import DEFERRED, defer_torch_compiler_imports
        assert defer_torch_compiler_imports()
        import torch
        print(sorted(name for name in DEFERRED if name in sys.modules))
        from backmap_plugin.core.torch_import import seeded_generator
        g = seeded_generator(3)
        print(torch.rand(2, generator=g).tolist() == torch.rand(2, generator=torch.Generator().manual_seed(3)).tolist())
        print(callable(torch.export.export))  # through the stand-in: loads the real module
        import torch.export
        print(type(torch.export).__name__, "torch.export" in sys.modules)
        import torch._meta_registrations
        print(torch.empty(3, 4, device="meta").sum(0).shape)
    """)
    assert out.splitlines() == ["[]", "True", "True", "module True", "torch.Size([4])"]


def test_without_the_hook_or_after_torch_nothing_changes():
    assert "torch" in sys.modules and torch.export is not None
    assert not defer_torch_compiler_imports()  # torch is imported already: no hook
    out = _python("""
        import sys
        import torch
        from backmap_plugin.core.torch_import import DEFERRED
        print(all(name in sys.modules for name in DEFERRED))
    """)
    assert out.split() == ["True"]  # the modules deferred are ones a plain import loads
