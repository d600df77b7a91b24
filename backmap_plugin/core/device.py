"""Where tensors live: the torch device a run uses."""

from __future__ import annotations


def select_device(device="auto"):
    """The torch device for ``device``.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA when torch sees a GPU, else CPU), ``"cpu"``,
        ``"cuda"``/``"cuda:N"``, or a :class:`torch.device` (returned as is).

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        For a name other than those above, or when CUDA is asked for but
        not available.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for (--device), but torch sees no CUDA device")
    return torch.device(device)
