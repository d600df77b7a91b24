"""Saving and loading model weights: a ``state_dict`` plus a JSON config.

The package ships its trained model as ``backmap_plugin/weights/model.pt``
and ``model.json``; any other model saved by :func:`save_model` (for
example ``RUN_DIR/model.pt`` from ``backmap train``) loads the same way.
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources

import torch

from backmap_plugin import __version__
from backmap_plugin.model.vae import BackmapVAE, ModelConfig


def _json_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def save_model(model: BackmapVAE, path: str, meta: dict | None = None) -> None:
    """Write ``path`` (state_dict) and the JSON config beside it (same stem, ``.json``).

    Parameters
    ----------
    model : BackmapVAE
    path : str
        ``.pt`` file.
    meta : dict, optional
        Training summary to record (data, step, validation figures).
    """
    tmp = path + ".tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    info = {"config": model.config.to_dict(), "code_version": __version__, "meta": meta or {}}
    with open(_json_path(path) + ".tmp", "w") as f:
        json.dump(info, f, indent=1, default=float)
    os.replace(_json_path(path) + ".tmp", _json_path(path))


def shipped_model_path() -> str | None:
    """Path of the shipped weights, or None when the package has none."""
    path = resources.files("backmap_plugin") / "weights" / "model.pt"
    return str(path) if path.is_file() else None


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str) -> BackmapVAE:
    with open(_json_path(path)) as f:
        info = json.load(f)
    model = BackmapVAE(ModelConfig(**info["config"]))
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    model.info = info
    return model.to(device).eval()


def load_model(path: str | None = None, device: str | torch.device = "cpu") -> BackmapVAE:
    """Load a model saved by :func:`save_model` (default: the shipped one).

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
