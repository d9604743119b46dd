"""The "cpu" target: generated kernels compiled by Numba (see :mod:`ift_snn.backends.compiled`).

Kept for the names other code imports; the launcher, the cache and the
thread pool live in :mod:`ift_snn.backends.compiled`. Kernels are keyed by the
model's structure (kernels, spike function, surrogate, reset, clip; not the
parameter values, which are scalar arguments) and dtype, so a trained alpha
never triggers a recompile.
"""

from __future__ import annotations

from ..codegen.cpu import CHUNK
from . import compiled
from .compiled import CACHE_STATS, available, launch, threads

__all__ = ["available", "get_kernel", "forward", "backward", "CACHE_STATS", "threads", "launch", "CHUNK"]


def get_kernel(model, quantity: str, dtype):
    """(IR, compiled function) for one scan of ``model``; built once per structure and dtype."""
    return compiled.get_kernel(model, quantity, dtype, "cpu")


def forward(model, a, u0=None):
    """(u, s, sigma, mask) of the compiled forward scan, see :func:`ift_snn.backends.compiled.forward`."""
    return compiled.forward(model, a, u0, "cpu")


def backward(model, method, g, u, s, sigma, mask, truncation, a=None, u0=None):
    """(dL/da, finals) of the compiled reverse scan, see :func:`ift_snn.backends.compiled.backward`."""
    return compiled.backward(model, method, g, u, s, sigma, mask, truncation, a, u0, "cpu")
