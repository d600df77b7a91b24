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

A model file that cannot be used is refused when it is loaded, with one
line naming the file and what is wrong (:class:`BackmapInputError`): a
folder given for the file, a file torch cannot read, a broken config,
weights that do not match their config or are not finite (a diverged
training).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import stat
import sys
import types
import warnings
from importlib import resources

import torch

from backmap_plugin import __version__
from backmap_plugin.core.errors import BackmapInputError, last_line
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


def _cache_file(weights: bytes, config_text: str) -> str | None:
    """The cache entry of a weights file (its bytes): named by a hash of everything that shapes the built model."""
    folder = model_cache_dir()
    if folder is None:
        return None
    import e3nn

    digest = hashlib.sha256(weights)
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


def _trusted(cached: str) -> bool:
    """Whether a cache entry may be unpickled (unpickling runs code: a file planted in a cache folder others can
    write, such as a shared ``BACKMAP_CACHE_DIR``, must not be): it and its folder belong to this user and no one
    else can write them (POSIX; elsewhere every entry is)."""
    if not hasattr(os, "getuid"):
        return True
    for path in (cached, os.path.dirname(cached)):
        info = os.stat(path)
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def _read_cached(cached: str | None) -> BackmapVAE | None:
    """The built model kept in ``cached``, or None (absent, unreadable, or not this user's alone
    (:func:`_trusted`): built again)."""
    if cached is None or not os.path.exists(cached) or not _trusted(cached):
        return None
    try:
        with _no_dynamo_import():
            model = torch.load(cached, map_location="cpu", weights_only=False)  # written by _keep_built, below
    except Exception:  # noqa: BLE001 - any unreadable entry is rebuilt and rewritten
        return None
    return model if isinstance(model, BackmapVAE) else None


def _keep_built(model: BackmapVAE, cached: str | None) -> None:
    """Keep a built model in the cache, readable and writable by this user alone (a new folder too); a folder that
    cannot be written is skipped."""
    if cached is None:
        return
    try:
        os.makedirs(os.path.dirname(cached), mode=0o700, exist_ok=True)
        with atomic_path(cached) as tmp, _no_dynamo_import():  # pickling e3nn's modules asks the same
            torch.save(model, tmp)
            os.chmod(tmp, 0o600)  # (this user's alone, whatever the umask: _trusted)
    except OSError:
        pass


def _read_bytes(path: str) -> bytes:
    """The bytes of a model's file; one that cannot be read is refused, named."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise BackmapInputError(f"{path}: cannot be read ({exc.strerror or last_line(exc)})") from exc


def _read_config(path: str) -> tuple[dict, str]:
    """The parsed JSON config of the weights file ``path`` and its text."""
    json_path = _json_path(path)
    try:
        text = _read_bytes(json_path).decode("utf-8")
        info = json.loads(text)
    except UnicodeDecodeError as exc:
        raise BackmapInputError(f"{json_path}: the config of the model {path} is not text (JSON)") from exc
    except json.JSONDecodeError as exc:
        raise BackmapInputError(f"{json_path}: the config of the model {path} is broken JSON at line {exc.lineno} "
                                f"column {exc.colno} ({exc.msg})") from exc
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        raise BackmapInputError(f"{json_path}: not the config of a model (no \"config\" object; save_model and "
                                "backmap train write it beside the weights)")
    return info, text


def _build_network(path: str, config: dict) -> BackmapVAE:
    """The untrained network the config describes; a config it cannot be built from is refused, named."""
    try:
        model_config = ModelConfig(**config)
        generator_ready()  # e3nn's gates draw samples with a torch.Generator while they are built
        return BackmapVAE(model_config)
    except (TypeError, ValueError, KeyError) as exc:
        raise BackmapInputError(f"{_json_path(path)}: not the config of a model this version reads "
                                f"({last_line(exc)})") from exc


def _unreadable_kind(weights: bytes) -> str:
    """What a weights file torch cannot read looks like: empty, a damaged archive, or other data."""
    if not weights:
        return "an empty file"
    if weights.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive
        return "a damaged archive, cut short or changed"
    return "other data"


def _read_state(path: str, weights: bytes) -> dict:
    """The ``state_dict`` in a weights file's bytes; a file torch cannot read, or one without weights, is refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (torch's notes on the pickle protocol of other data)
            state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises anything (IndexError, UnpicklingError ...)
        raise BackmapInputError(f"{path}: not a model file (torch cannot read it: "
                                f"{_unreadable_kind(weights)})") from exc
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackmapInputError(f"{path}: not a model file (it holds no model weights; save_model and backmap train "
                                "write them)")
    return state


def _load_weights(model: BackmapVAE, path: str, state: dict) -> None:
    """Put ``state`` into ``model``; weights of another model, or not finite ones, are refused, named."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        config = model.config
        raise BackmapInputError(
            f"{path}: its weights do not match its config {_json_path(path)} (the json says mapping "
            f"'{config.mapping}', hidden {config.hidden}, z_dim {config.z_dim}); the two files come from different "
            "runs or a file was changed"
        ) from exc
    if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
        raise BackmapInputError(f"{path}: its weights are not finite (NaN/inf): a diverged training? Use a model "
                                "saved before it diverged")


def _build(path: str, weights: bytes, info: dict) -> BackmapVAE:
    """The generation model of a weights file (its bytes) and its parsed config, checked."""
    model = _build_network(path, info["config"])
    _load_weights(model, path, _read_state(path, weights))
    model.drop_encoder()
    return model


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str) -> BackmapVAE:
    info, config_text = _read_config(path)
    weights = _read_bytes(path)
    cached = _cache_file(weights, config_text)
    model = _read_cached(cached)
    if model is None:
        model = _build(path, weights, info)
        _keep_built(model, cached)
    model.info = info
    return model.to(device).eval()


def check_model_path(path) -> None:
    """Refuse a model path that names no saved model, before anything is read.

    Parameters
    ----------
    path : str or os.PathLike
        A weights file (``model.pt``), its JSON config beside it.

    Raises
    ------
    FileNotFoundError
        No such file, or its config is missing.
    BackmapInputError
        ``path`` is a folder (a run folder of ``backmap train``, say).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise BackmapInputError(f"{path} is a directory; pass the model file inside it "
                                f"(e.g. {os.path.join(path, 'model.pt')})")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no trained model at {path}")
    if not os.path.exists(_json_path(path)):
        raise FileNotFoundError(f"{path}: its config {_json_path(path)} is missing")


def load_model(path: str | None = None, device: str | torch.device = "cpu") -> BackmapVAE:
    """Load a model saved by :func:`save_model` (default: the shipped one), for generation.

    The encoder (the posterior network, which only training uses) is left
    out: a third of the model's generated e3nn code, so the model loads
    faster (:meth:`BackmapVAE.drop_encoder`). Training builds its own
    :class:`BackmapVAE` from the weights.

    Parameters
    ----------
    path : str, optional
        Weights file (``model.pt``, its ``model.json`` beside it); default:
        the shipped C-alpha model.
    device : str or torch.device

    Returns
    -------
    BackmapVAE
        In eval mode on ``device``; ``info`` holds its JSON config.

    Raises
    ------
    FileNotFoundError
        No such model, or the package ships none.
    BackmapInputError
        A folder, a file that is not a model or cannot be read, a broken
        config, weights that do not match the config or are not finite;
        the message names the file.
    """
    path = path or shipped_model_path()
    if path is None:
        raise FileNotFoundError("no trained model at backmap_plugin/weights/model.pt")
    check_model_path(path)
    return _load(os.path.abspath(path), str(device))
