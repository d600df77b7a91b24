"""Importing torch for the ``backmap`` command without its compiler front end.

``import torch`` also loads ``torch.export`` and the Python meta kernels
(``torch._meta_registrations``; with them ``torch._decomp``,
``torch._prims`` and ``torch._refs``): about 0.3 s of the 1.2-1.6 s the
import takes on a 2-core machine, a fifth of a ``backmap run``'s fixed
cost. They serve ``torch.compile``, ``torch.export`` and tensors on the
``meta`` device (shape propagation without data), none of which the
command uses: it runs the model eagerly, on CPU or CUDA.

:func:`defer_torch_compiler_imports` lets the first ``import torch`` of
the process run with stand-ins for those two modules in ``sys.modules``
and takes them out when it is done, so a later ``import torch.export``
(or ``torch._meta_registrations``) loads the real module, and an
attribute of ``torch.export`` looked up through the stand-in loads it too.
Python meta kernels stay unregistered until something imports
``torch._meta_registrations``. Seeded generators come from
:func:`seeded_generator`: torch 2.13 gives ``torch.Generator`` its type in
a module the deferred ones import, which it imports on first use.

Only the ``backmap`` command calls this (before anything imports torch),
as it calls :mod:`backmap_plugin.core.allocator`: it changes the whole
process, so the library leaves a user's own process alone. ``backmap
train`` imports torch in full (its optimiser may go through
``torch._dynamo``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

#: Modules that ``import torch`` loads and an eager run never uses.
DEFERRED = ("torch.export", "torch._meta_registrations")
#: What gives ``torch.Generator`` its metaclass (torch 2.13: ``torch.Generator()`` raises before it is
#: imported); the deferred modules import it, so :func:`seeded_generator` does when they have not.
GENERATOR_SETUP = "torch._prims.rng_prims"


class _StandIn(types.ModuleType):
    """A module of :data:`DEFERRED` while torch imports: any attribute looked up imports the real module."""

    def __getattr__(self, name: str):
        if name.startswith("__"):  # the import system's and inspect's probes
            raise AttributeError(name)
        if sys.modules.get(self.__name__) is self:  # needed while torch imports: the real one replaces it
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


class _TorchFinder(importlib.abc.MetaPathFinder):
    """Finds torch's package the usual way, with a loader that puts the stand-ins in place around its import."""

    def find_spec(self, name, path, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)  # once: the first import of torch
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _StandInsWhileLoading(spec.loader)
        return spec


class _StandInsWhileLoading(importlib.abc.Loader):
    """torch's own loader, run with the :data:`DEFERRED` stand-ins in ``sys.modules``."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        stand_ins = {name: _StandIn(name) for name in DEFERRED if name not in sys.modules}
        sys.modules.update(stand_ins)
        module.__spec__.loader = module.__loader__ = self.loader
        try:
            self.loader.exec_module(module)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]

    def __getattr__(self, name):
        return getattr(self.loader, name)


def defer_torch_compiler_imports() -> bool:
    """Let the first ``import torch`` of this process leave out :data:`DEFERRED`.

    Nothing is imported here: a command that never needs torch does not pay
    for it.

    Returns
    -------
    bool
        True when set up; False when torch is imported already (or the hook
        is in place), which changes nothing.
    """
    if "torch" in sys.modules or any(isinstance(f, _TorchFinder) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _TorchFinder())
    return True


def generator_ready() -> None:
    """Make ``torch.Generator()`` work after the lean import (torch 2.13 sets its type up in a deferred module).

    Code outside the package calls ``torch.Generator()`` too: e3nn does when
    it builds a model (normalising its gate activations), which
    :func:`backmap_plugin.model.weights.load_model` does when its cache has
    no built copy. Costs about 0.2 s, once, and only after the lean import.
    """
    import torch

    try:
        torch.Generator()
    except RuntimeError:
        importlib.import_module(GENERATOR_SETUP)


def seeded_generator(seed: int):
    """A CPU ``torch.Generator`` seeded with ``seed``, also after the lean import.

    Parameters
    ----------
    seed : int

    Returns
    -------
    torch.Generator
    """
    import torch

    generator_ready()
    return torch.Generator().manual_seed(seed)
