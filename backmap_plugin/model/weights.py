"""Saving and loading model weights: a ``state_dict`` plus a JSON config.

The package ships its trained model as ``backmap_plugin/weights/model.pt``
and ``model.json``; any other model saved by :func:`save_model` (for
example ``RUN_DIR/model.pt`` from ``backmap train``) loads the same way.

Building the network from its config costs about 0.7 s (e3nn generates and
compiles the code of every tensor product), most of a ``backmap run``'s
fixed cost. So the first load of a weights file also keeps the built model,
pickled, in a per-user cache folder (:func:`model_cache_dir`); later loads
unpickle it (about 0.1 s). The cache entry's name is a hash of the weights,
their config, the versions of Python, torch, e3nn and this package and the
source of the modules that define the model (this folder), so a changed
file, library or class never meets a stale entry; an entry that cannot be
read is rebuilt, and a cache folder that cannot be written is skipped.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import types
from importlib import resources

import torch

from backmap_plugin import __version__
from backmap_plugin.core.torch_import import generator_ready
from backmap_plugin.io.atomic import atomic_path, atomic_write
from backmap_plugin.model.vae import BackmapVAE, ModelConfig


def _json_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def save_model(model: BackmapVAE, path: str, meta: dict | None = None) -> None:
    """Write ``path`` (state_dict) and the JSON config beside it (same stem, ``.json``).

    Each file is written atomically (:mod:`backmap_plugin.io.atomic`).

    Parameters
    ----------
    model : BackmapVAE
    path : str
        ``.pt`` file.
    meta : dict, optional
        Training summary to record (data, step, validation figures).
    """
    # torch.save names the archive inside the file after the file's name: "<name>.tmp" keeps it "<name>"
    with atomic_path(path, temporary=path + ".tmp") as tmp:
        torch.save(model.state_dict(), tmp)
    info = {"config": model.config.to_dict(), "code_version": __version__, "meta": meta or {}}
    with atomic_write(_json_path(path)) as f:
        json.dump(info, f, indent=1, default=float)


#: Shipped weights file per kind of bead the model reads.
SHIPPED_MODELS = {"ca": "model.pt", "com": "model_com.pt", "martini3": "model_martini3.pt"}


def shipped_model_path(beads: str = "ca") -> str | None:
    """Path of the shipped weights for ``beads`` (``ca``, ``com`` ...), or None when the package has none."""
    if beads not in SHIPPED_MODELS:
        return None
    path = resources.files("backmap_plugin") / "weights" / SHIPPED_MODELS[beads]
    return str(path) if path.is_file() else None


def model_cache_dir() -> str | None:
    """Folder of the built-model cache, or None when it is switched off.

    ``$BACKMAP_CACHE_DIR`` when set (empty: no cache), else
    ``$XDG_CACHE_HOME/backmap_plugin``, else ``~/.cache/backmap_plugin``.
    """
    chosen = os.environ.get("BACKMAP_CACHE_DIR")
    if chosen is not None:
        return chosen or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "backmap_plugin")


def _cache_file(path: str, config_text: str) -> str | None:
    """The cache entry of a weights file: named by a hash of everything that shapes the built model."""
    folder = model_cache_dir()
    if folder is None:
        return None
    import e3nn

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read())
    for part in (config_text, sys.version, torch.__version__, e3nn.__version__, __version__, "generation"):
        digest.update(b"\0" + part.encode())
    here = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            with open(os.path.join(here, name), "rb") as f:
                digest.update(b"\0" + f.read())
    return os.path.join(folder, f"model-{digest.hexdigest()[:32]}.pt")


@contextlib.contextmanager
def _no_dynamo_import():
    """Answer e3nn's one look-up of ``torch._dynamo`` while a built model is pickled or unpickled.

    Pickling and unpickling e3nn's generated modules check ``isinstance(module,
    (fx.GraphModule, torch._dynamo.OptimizedModule))``, and touching
    ``torch._dynamo`` imports it (about 1 s; after the ``backmap`` command's
    lean import of torch it fails, a circular import). A module pickled by this file
    is never a ``torch.compile`` result, so while ``torch._dynamo`` is not
    imported a stand-in class that nothing is an instance of answers the
    look-up; it is removed afterwards (``torch._dynamo`` then imports as
    usual when something needs it).
    """
    if "torch._dynamo" in sys.modules:
        yield
        return

    class _NeverCompiled:
        pass

    torch._dynamo = types.SimpleNamespace(OptimizedModule=_NeverCompiled)
    try:
        yield
    finally:
        if isinstance(getattr(torch, "_dynamo", None), types.SimpleNamespace):
            del torch._dynamo


def _read_cached(cached: str | None) -> BackmapVAE | None:
    """The built model kept in ``cached``, or None (absent or unreadable: built again)."""
    if cached is None or not os.path.exists(cached):
        return None
    try:
        with _no_dynamo_import():
            model = torch.load(cached, map_location="cpu", weights_only=False)  # written by _keep_built, below
    except Exception:  # noqa: BLE001 - any unreadable entry is rebuilt and rewritten
        return None
    return model if isinstance(model, BackmapVAE) else None


def _keep_built(model: BackmapVAE, cached: str | None) -> None:
    """Keep a built model in the cache; a folder that cannot be written is skipped."""
    if cached is None:
        return
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        with atomic_path(cached) as tmp, _no_dynamo_import():  # pickling e3nn's modules asks the same
            torch.save(model, tmp)
    except OSError:
        pass


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str) -> BackmapVAE:
    with open(_json_path(path)) as f:
        config_text = f.read()
    info = json.loads(config_text)
    cached = _cache_file(path, config_text)
    model = _read_cached(cached)
    if model is None:
        generator_ready()  # e3nn's gates draw samples with a torch.Generator while they are built
        model = BackmapVAE(ModelConfig(**info["config"]))
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.drop_encoder()
        _keep_built(model, cached)
    model.info = info
    return model.to(device).eval()


def load_model(path: str | None = None, device: str | torch.device = "cpu") -> BackmapVAE:
    """Load a model saved by :func:`save_model` (default: the shipped one), for generation.

    The encoder (the posterior network, which only training uses) is left
    out: a third of the model's generated e3nn code, so the model loads
    faster (:meth:`BackmapVAE.drop_encoder`). Training builds its own
    :class:`BackmapVAE` from the weights.

    Raises
    ------
    FileNotFoundError
        No such model, or the package ships none.
    """
    path = path or shipped_model_path()
    if path is None or not os.path.exists(path):
        raise FileNotFoundError(f"no trained model at {path or 'backmap_plugin/weights/model.pt'}")
    if not os.path.exists(_json_path(path)):
        raise FileNotFoundError(f"{path}: its config {_json_path(path)} is missing")
    return _load(os.path.abspath(path), str(device))
