"""CuPy kernels on a GPU: the generated CUDA source, compiled by CuPy, memoised.

One thread per neuron, 256 threads a block, launched on CuPy's current
stream (the PyTorch integration makes that PyTorch's stream). Kernels are
memoised per (structure fingerprint, dtype, device). Parameter gradients are
reduced on the device (cupyx.scipy.signal.lfilter for the kernel derivative
filters), so nothing is copied to the host but the scalar sums.
"""

from __future__ import annotations

import threading

from ..codegen.cuda import cuda_source
from ..codegen.ir import ScanKernel, argument_values, build_kernel, structure_header
from ..models import NeuronModel
from .cache import LRU

__all__ = ["require_cupy", "is_cupy_array", "get_kernel", "forward", "backward", "causal_filter"]

THREADS = 256
_lock = threading.Lock()
_ir = LRU()
_compiled = LRU()


def require_cupy():
    """Import CuPy or say how to install it."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError("GPU arrays need CuPy: pip install 'ift-snn[gpu]' (CuPy for CUDA 12)") from exc
    return cupy


def is_cupy_array(x) -> bool:
    return type(x).__module__.startswith("cupy")


def _dtype_name(dtype) -> str:
    import numpy as np

    return {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}[np.dtype(dtype)]


def get_kernel(model: NeuronModel, quantity: str, dtype) -> tuple[ScanKernel, object]:
    """(IR, cupy.RawKernel) for one scan, built once per structure, dtype and device."""
    cupy = require_cupy()
    device = cupy.cuda.Device().id
    key = (model.structure, quantity, _dtype_name(dtype))
    with _lock:
        kernel = _ir.get(key)
        if kernel is None:
            kernel = build_kernel(model, quantity, key[2])
            _ir[key] = kernel
        ckey = (kernel.fingerprint, device)
        if ckey not in _compiled:
            source = cuda_source(kernel, header=structure_header(model))
            _compiled[ckey] = cupy.RawKernel(source.code, source.name, options=source.options)
        return kernel, _compiled[ckey]


def _launch(fn, M: int, args: list) -> None:
    grid = ((M + THREADS - 1) // THREADS,)
    fn(grid, (THREADS,), tuple(args))


def _scalars(model: NeuronModel, dtype) -> list:
    return [dtype.type(v) for v in argument_values(model)]


def forward(model: NeuronModel, a, u0):
    cupy = require_cupy()
    import numpy as np

    kernel, fn = get_kernel(model, "forward", a.dtype)
    T, M = a.shape
    outs = {o.name: cupy.empty_like(a) for o in kernel.outputs}
    args = [a]
    if kernel.uses_u_init:
        args.append(cupy.zeros(M, a.dtype) if u0 is None else u0)
    args += [outs[o.name] for o in kernel.outputs]
    args += _scalars(model, np.dtype(a.dtype)) + [np.int32(T), np.int32(M), np.int32(0)]
    _launch(fn, M, args)
    mask = outs["m"].astype(bool) if "m" in outs else None
    return outs["u"], outs["s"], outs["sigma"], mask


def backward(model: NeuronModel, method: str, g, u, s, sigma, mask, truncation, a=None, u0=None):
    """(dL/da, finals by name) on the device; see :func:`ift_snn.backends.cpu.backward`."""
    cupy = require_cupy()
    import numpy as np

    quantity = "backward" if method == "exodus" else "slayer"
    kernel, fn = get_kernel(model, quantity, g.dtype)
    T, M = g.shape
    named = {"g": g, "sigma": sigma, "s": s, "u": u, "a": a}
    if mask is not None:
        named["m"] = mask.astype(g.dtype)
    outs = {o.name: cupy.empty_like(g) for o in kernel.outputs}
    fins = {lhs.name: cupy.empty(M, g.dtype) for lhs, _ in kernel.finals}
    args = [named[i.name] for i in kernel.inputs]
    if kernel.uses_u_init:
        args.append(cupy.zeros(M, g.dtype) if u0 is None else u0)
    args += [outs[o.name] for o in kernel.outputs] + [fins[f] for f in fins]
    args += _scalars(model, np.dtype(g.dtype)) + [np.int32(T), np.int32(M), np.int32(truncation or 0)]
    _launch(fn, M, args)
    return outs["grad_a"], fins


def causal_filter(f, x):
    """lfilter along time on the device."""
    cupy = require_cupy()
    from cupyx.scipy.signal import lfilter

    b, a = f
    return lfilter(cupy.asarray(b, dtype=x.dtype), cupy.asarray(a, dtype=x.dtype), x, axis=0)
