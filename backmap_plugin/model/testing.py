"""Test helpers for the networks: invariance under rigid motions."""

from __future__ import annotations

import torch

from backmap_plugin.model.networks import o3  # e3nn, imported the way the package does


def random_rigid_motion(dtype=torch.float64):
    """A random rotation matrix (3, 3) and translation (3,) (global torch RNG)."""
    rotation = o3.rand_matrix(dtype=dtype)
    translation = 10.0 * torch.randn(3, dtype=dtype)
    return rotation, translation


def assert_invariant(function, coordinates: list[torch.Tensor], n_motions: int = 4, atol: float = 1e-6) -> None:
    """Assert that ``function(*coordinates)`` does not change under rigid motions.

    Parameters
    ----------
    function : callable
        Takes the coordinate tensors (each ``(..., 3)``, all moved by the
        same motion) and returns a tensor or a tuple/list/dict of tensors.
    coordinates : list of torch.Tensor
        Inputs in Angstrom.
    n_motions : int
        Random rotations + translations tried.
    atol : float
        Largest absolute difference allowed.

    Raises
    ------
    AssertionError
        Naming the output and the difference.
    """
    reference = _flatten(function(*coordinates))
    for _ in range(n_motions):
        rotation, translation = random_rigid_motion(coordinates[0].dtype)
        moved = [x @ rotation.T.to(x) + translation.to(x) for x in coordinates]
        result = _flatten(function(*moved))
        for name, ref in reference.items():
            diff = (result[name] - ref).abs().max().item() if ref.numel() else 0.0
            assert diff <= atol, f"output {name} changed by {diff:.3g} under a rigid motion (atol {atol})"


def _flatten(output) -> dict:
    if isinstance(output, torch.Tensor):
        return {"output": output.detach()}
    if isinstance(output, dict):
        return {k: v.detach() for k, v in output.items() if isinstance(v, torch.Tensor)}
    return {str(i): v.detach() for i, v in enumerate(output)}
