"""The "cupy" target: the generated CUDA source run by CuPy (see :mod:`ift_snn.backends.compiled`).

One thread per neuron, 256 threads a block, launched on CuPy's current
stream (the PyTorch integration makes that PyTorch's stream). Kernels are
memoised per (structure fingerprint, dtype, device); the parameter sums stay
on the device until ops.backward reduces them.
"""

from __future__ import annotations

from . import compiled
from .compiled import is_cupy_array, require_cupy

__all__ = ["require_cupy", "is_cupy_array", "get_kernel", "forward", "backward"]


def get_kernel(model, quantity: str, dtype):
    """(IR, cupy.RawKernel) for one scan, built once per structure, dtype and device."""
    return compiled.get_kernel(model, quantity, dtype, "cupy")


def forward(model, a, u0=None):
    """(u, s, sigma, mask) on the device, see :func:`ift_snn.backends.compiled.forward`."""
    return compiled.forward(model, a, u0, "cupy")


def backward(model, method, g, u, s, sigma, mask, truncation, a=None, u0=None):
    """(dL/da, finals by name) on the device, see :func:`ift_snn.backends.compiled.backward`."""
    return compiled.backward(model, method, g, u, s, sigma, mask, truncation, a, u0, "cupy")
