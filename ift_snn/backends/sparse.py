"""Array primitives over spikes, model-independent (like a BLAS call), compiled with Numba on first use.

:func:`spike_outer_sum` is a recurrent layer's weight gradient (docs/MATH.md section 9)

    dL/dV = sum_n dL/da[n] s[n-1]^T        (summed over the batch)

as a sum over the spikes that fired: each spike s_j adds one row dL/da (N values) to row j of (dL/dV)^T, so the
cost is spikes x N, not T B N^2 as a dense matrix product; rows are split over the threads
(:func:`ift_snn.backends.compiled.threads`), each summing into its own float64 accumulator (a float32 gradient
sums its T B terms in float64), added at the end. Read-only inputs; no BLAS threads (which, spinning after a
call on a 2-core machine, slowed the scans running next to them).
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["spike_outer_sum"]

_lock = threading.Lock()
_kernel = None


def _compiled():
    global _kernel
    with _lock:
        if _kernel is None:
            import numba

            @numba.njit(nogil=True, cache=False)
            def rows(g, s, lo, hi, acc):  # acc[j, :] += s[r, j] g[r, :] for rows r in [lo, hi)
                n = g.shape[1]
                for r in range(lo, hi):
                    for j in range(s.shape[1]):
                        v = s[r, j]
                        if v != 0:
                            for i in range(n):
                                acc[j, i] += v * g[r, i]

            _kernel = rows
    return _kernel


def spike_outer_sum(pairs, n_out: int, n_in: int, dtype) -> np.ndarray:
    """sum over (g, s) in ``pairs`` of g^T s, i.e. sum_r outer(g[r], s[r]), as an (n_out, n_in) array of ``dtype``;
    each g is (R, n_out) and s (R, n_in), 2-D NumPy arrays (any strides), s mostly zeros (spikes)."""
    from .compiled import _in_threads, threads

    work = [(g, s, lo, min(lo + 512, g.shape[0])) for g, s in pairs for lo in range(0, g.shape[0], 512)]
    n = max(1, min(threads(), len(work)))
    accs = [np.zeros((n_in, n_out)) for _ in range(n)]
    kernel = _compiled()

    def run(part):
        k, items = part
        for g, s, lo, hi in items:
            kernel(g, s, lo, hi, accs[k])

    _in_threads(run, [(k, work[k::n]) for k in range(n)])
    total = accs[0]
    for acc in accs[1:]:
        total += acc
    return np.ascontiguousarray(total.T).astype(dtype, copy=False)
