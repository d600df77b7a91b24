"""Adam steps on plain tensors, element by element.

The builders fit coordinates and angles with a few dozen gradient steps.
``torch.optim.Adam`` would do, but constructing any ``torch.optim``
optimiser imports ``torch._dynamo`` (0.7 s of start-up on a 2-core CPU),
so the update is written out here. Element-wise, so the frames of a batch
stay independent of each other.
"""

from __future__ import annotations

import torch

BETA1, BETA2 = 0.9, 0.999


class Adam:
    """First and second moments of a list of tensors, updated in place by :meth:`step`.

    Parameters
    ----------
    params : list of torch.Tensor
        The tensors moved (updated in place; not differentiable leaves).
    eps : float
        Added to the root of the second moment.
    """

    def __init__(self, params: list[torch.Tensor], eps: float = 1e-8):
        self.params = params
        self.eps = eps
        self.first = [torch.zeros_like(p) for p in params]
        self.second = [torch.zeros_like(p) for p in params]
        self.count = 0

    @torch.no_grad()
    def step(self, grads, size: float) -> None:
        """One bias-corrected Adam step of ``size`` along ``grads`` (same order as the parameters)."""
        self.count += 1
        c1, c2 = 1 - BETA1**self.count, 1 - BETA2**self.count
        for p, g, m, v in zip(self.params, grads, self.first, self.second):
            m.mul_(BETA1).add_(g, alpha=1 - BETA1)
            v.mul_(BETA2).addcmul_(g, g, value=1 - BETA2)
            p.sub_(size * (m / c1) / ((v / c2).sqrt() + self.eps))


def decaying_size(size: float, final_fraction: float, step: int, steps: int) -> float:
    """Step size of step ``step`` of ``steps``: ``size`` decaying linearly to ``final_fraction`` of it."""
    return size * (1.0 - (1.0 - final_fraction) * step / max(1, steps - 1))
