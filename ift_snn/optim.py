"""Optimisers over lists of arrays (NumPy or CuPy), for the discrete networks (``network.py``) and the
continuous-time ones (``events/``): below both, so that neither imports the other's layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Adam"]


def _xp(x):
    return np if isinstance(x, np.ndarray) else __import__("cupy")


@dataclass
class Adam:
    """Adam (Kingma and Ba) over a list of arrays, updated in place."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    t: int = 0
    m: list = field(default_factory=list)
    v: list = field(default_factory=list)

    def step(self, params: list, grads: list) -> None:
        if not self.m:
            # moments in float64: g*g of a large float32 gradient would overflow
            self.m = [_xp(p).zeros(p.shape, dtype=np.float64) for p in params]
            self.v = [m.copy() for m in self.m]
        self.t += 1
        c1, c2 = 1 - self.beta1**self.t, 1 - self.beta2**self.t
        for p, g, m, v in zip(params, grads, self.m, self.v):
            g = g.astype(np.float64)  # a float32 g*g overflows from |g| ~ 2e19 (a Python float keeps float32)
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            p -= (self.lr * (m / c1) / (_xp(v).sqrt(v / c2) + self.eps)).astype(p.dtype)
