"""Compiled CPU kernels: generated from the derivation, compiled by Numba, memoised.

Kernels are keyed by the model's structure (kernels, spike function,
surrogate, reset, clip; not the parameter values, which are scalar
arguments) and dtype, so a trained alpha never triggers a recompile.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..codegen.cpu import CHUNK, compile_numba, numba_available, python_source
from ..codegen.ir import ScanKernel, argument_values, build_kernel, structure_header
from ..models import NeuronModel
from .cache import LRU

__all__ = ["available", "get_kernel", "forward", "backward", "CACHE_STATS"]

_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_lock = threading.Lock()
_ir = LRU()
_compiled = LRU()
#: Counters of the kernel cache: builds (codegen + compile) and hits, with the seconds spent building.
CACHE_STATS = {"builds": 0, "hits": 0, "build_seconds": 0.0}


def available() -> bool:
    return numba_available()


def get_kernel(model: NeuronModel, quantity: str, dtype: np.dtype) -> tuple[ScanKernel, object]:
    """(IR, compiled function) for one scan of ``model``; built once per structure and dtype."""
    key = (model.structure, quantity, _DTYPES[np.dtype(dtype)])
    with _lock:
        hit = _ir.get(key)
        if hit is not None and hit.fingerprint in _compiled:
            CACHE_STATS["hits"] += 1
            return hit, _compiled[hit.fingerprint]
        start = time.perf_counter()
        kernel = hit or build_kernel(model, quantity, key[2])
        _ir[key] = kernel
        if kernel.fingerprint not in _compiled:
            source = python_source(kernel, header=structure_header(model))
            fn = compile_numba(source)
            _warm_up(kernel, fn, np.dtype(dtype))  # Numba compiles on the first call: do it here
            _compiled[kernel.fingerprint] = fn
        CACHE_STATS["builds"] += 1
        CACHE_STATS["build_seconds"] += time.perf_counter() - start
        return kernel, _compiled[kernel.fingerprint]


def _warm_up(kernel: ScanKernel, fn, dtype: np.dtype) -> None:
    """Call the kernel once on 1 x 1 arrays of the real types, so that the compile is counted here."""
    one = lambda: np.full((1, 1), 0.5, dtype)  # noqa: E731
    args = [one() for _ in kernel.inputs]
    if kernel.uses_u_init:
        args.append(np.zeros(1, dtype))
    args += [one() for _ in kernel.outputs] + [np.zeros(1, dtype) for _ in kernel.finals]
    args += [dtype.type(0.5) for _ in kernel.params] + [1, 1, 0, CHUNK, 0, 1]
    fn(*args)


def threads() -> int:
    """Threads the kernels run on: $IFT_SNN_NUM_THREADS, else Numba's NUMBA_NUM_THREADS (the cores)."""
    env = os.environ.get("IFT_SNN_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"IFT_SNN_NUM_THREADS={env!r}: expected a positive integer") from None
    import numba

    return max(1, int(numba.config.NUMBA_NUM_THREADS))


_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def launch(fn, args: list, M: int) -> None:
    """Run a compiled kernel over neurons 0..M-1, split into ranges of whole chunks, one per thread.

    The kernels release the GIL (``nogil=True``), so the ranges run in parallel; neurons are
    independent, so the split changes nothing in the result.
    """
    global _pool, _pool_size
    n = min(threads(), max(1, -(-M // CHUNK)))
    if n == 1:
        fn(*args, 0, M)
        return
    chunks = -(-M // CHUNK)
    bounds = [min(M, (chunks * i // n) * CHUNK) for i in range(n + 1)]
    with _lock:
        if _pool is None or _pool_size < n:
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="ift_snn")
            _pool_size = n
        pool = _pool
    futures = [pool.submit(fn, *args, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    for f in futures:
        f.result()


def _params(model: NeuronModel, dtype: np.dtype) -> list:
    return [dtype.type(v) for v in argument_values(model)]


def forward(model: NeuronModel, a: np.ndarray, u0: np.ndarray | None):
    """(u, s, sigma, mask) for (T, M) contiguous ``a``; mask is None without a clip."""
    kernel, fn = get_kernel(model, "forward", a.dtype)
    T, M = a.shape
    outs = {o.name: np.empty_like(a) for o in kernel.outputs}
    args = [a]
    if kernel.uses_u_init:
        args.append(np.zeros(M, a.dtype) if u0 is None else u0)
    args += [outs[o.name] for o in kernel.outputs]
    args += _params(model, a.dtype) + [T, M, 0, CHUNK]
    launch(fn, args, M)
    mask = outs["m"].astype(bool) if "m" in outs else None
    return outs["u"], outs["s"], outs["sigma"], mask


def backward(model: NeuronModel, method: str, g: np.ndarray, u: np.ndarray, s: np.ndarray,
             sigma: np.ndarray, mask: np.ndarray | None, truncation: int | None,
             a: np.ndarray | None = None, u0: np.ndarray | None = None):
    """(dL/da, finals) by the compiled exodus or slayer scan.

    finals maps the kernel's per-neuron results by name: ``grad_u_init``, the parameter sums
    ``acc_<name>`` and the diagnostics ``dg_max_factor``, ``dg_longest_run``, ``dg_max_growth``.
    """
    quantity = "backward" if method == "exodus" else "slayer"
    kernel, fn = get_kernel(model, quantity, g.dtype)
    T, M = g.shape
    named = {"g": g, "sigma": sigma, "s": s, "u": u, "a": a}
    if mask is not None:
        named["m"] = mask.astype(g.dtype)
    outs = {o.name: np.empty_like(g) for o in kernel.outputs}
    fins = {lhs.name: np.empty(M, g.dtype) for lhs, _ in kernel.finals}
    args = [named[i.name] for i in kernel.inputs]
    if kernel.uses_u_init:
        args.append(np.zeros(M, g.dtype) if u0 is None else u0)
    args += [outs[o.name] for o in kernel.outputs] + [fins[f] for f in fins]
    args += _params(model, g.dtype) + [T, M, truncation or 0, CHUNK]
    launch(fn, args, M)
    return outs["grad_a"], fins
