"""NumPy scan backend: vectorised over neurons, a Python loop over time.

This is the reference implementation of the O(T) scans that compiled
kernels must reproduce, and the fallback when none is available. Arrays are
(T, M), time-major, in float32 or float64 (preserved).

Forward. The linear part is one IIR filter over the whole sequence (no loop):
z = eps * a (general SRM) or I = syn * a (membrane form). Only the reset
needs the time loop.

Backward, method ``"exodus"`` (MATH section 4). Membrane form, d = dL/du_pre:

    d_n = m_n [ sigma_n g_n + c_n d_{n+1} ],  d_T = 0
    c_n = alpha - rho sigma_n                      (subtract)
    c_n = alpha (1 - s_n - u_n sigma_n)            (reset to zero, MATH section 5)

with m_n the not-clipped mask, then dL/da = syn^T d. General SRM:

    d_n = sigma_n (g_n - q_n),  q_n = sum_j nu[j] d_{n+1+j}  (reverse IIR, state = order of nu)
    dL/da = E^T d                                         (reverse IIR with eps)

``"slayer"`` drops the reset: c_n = alpha (alpha (1 - s_n) for reset to zero)
and q = 0. ``truncation=K`` zeroes the carried adjoint at chunk boundaries.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from .lowered import Filter, Lowered

__all__ = ["forward", "backward", "parameter_gradients", "anticausal", "step_factors"]


# ---------------------------------------------------------------- filters
def _causal(f: Filter, x: np.ndarray) -> np.ndarray:
    b, a = f
    return lfilter(b, a, x, axis=0).astype(x.dtype, copy=False)


def anticausal(f: Filter, x: np.ndarray, truncation: int | None = None) -> np.ndarray:
    """y[n] = sum_k h[k] x[n+k] (correlation with the kernel), within chunks of K steps."""
    T = x.shape[0]
    if truncation is None or truncation >= T:
        return _causal(f, x[::-1])[::-1].copy()
    out = np.empty_like(x)
    for start in range(0, T, truncation):
        stop = min(start + truncation, T)
        out[start:stop] = _causal(f, x[start:stop][::-1])[::-1]
    return out


class _DF2T:
    """Transposed direct-form-II state of one IIR filter per neuron (the scan state)."""

    def __init__(self, f: Filter, M: int, dtype: np.dtype):
        b, a = f
        order = max(len(b), len(a)) - 1
        self.b = np.zeros(order + 1)
        self.a = np.zeros(order + 1)
        self.b[: len(b)] = b / a[0]
        self.a[: len(a)] = a / a[0]
        self.b = self.b.astype(dtype)
        self.a = self.a.astype(dtype)
        self.order = order
        self.w = np.zeros((order, M), dtype=dtype)

    def reset(self) -> None:
        self.w[...] = 0

    def step(self, x: np.ndarray) -> np.ndarray:
        y = self.b[0] * x + (self.w[0] if self.order else 0)
        for i in range(self.order - 1):
            self.w[i] = self.b[i + 1] * x - self.a[i + 1] * y + self.w[i + 1]
        if self.order:
            self.w[self.order - 1] = self.b[self.order] * x - self.a[self.order] * y
        return y


# ---------------------------------------------------------------- forward
def forward(low: Lowered, a: np.ndarray, u0: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Simulate; returns (u, s, mask) with mask = not clipped (None without clip)."""
    model = low.model
    T, M = a.shape
    dtype = a.dtype
    u = np.empty_like(a)
    s = np.empty_like(a)
    if low.kind == "membrane":
        current = a if low.syn is None else _causal(low.syn, a)
        clip = model.u_min is not None
        mask = np.empty((T, M), dtype=bool) if clip else None
        alpha, rho = dtype.type(low.alpha), dtype.type(low.rho)
        u_prev = np.zeros(M, dtype) if u0 is None else u0
        s_prev = np.zeros(M, dtype)
        for n in range(T):
            if model.reset == "zero":
                pre = alpha * u_prev * (1 - s_prev) + current[n]
            else:
                pre = alpha * u_prev + current[n] - rho * s_prev
            if clip:
                mask[n] = pre > model.u_min
                pre = np.maximum(pre, dtype.type(model.u_min))
            u[n] = pre
            s[n] = model.spike_fn(pre)
            u_prev, s_prev = u[n], s[n]
        return u, s, mask
    if u0 is None:
        drive = _causal(low.eps, a)
    else:
        drive = _causal(low.eps, np.concatenate([u0[None, :], a]))[1:]
    reset = _DF2T(low.nu, M, dtype)
    s_prev = np.zeros(M, dtype)
    for n in range(T):
        u[n] = drive[n] - reset.step(s_prev)
        s[n] = model.spike_fn(u[n])
        s_prev = s[n]
    return u, s, None


# --------------------------------------------------------------- backward
def _boundary(T: int, truncation: int | None) -> np.ndarray:
    """cut[n] is True when the adjoint from n+1 must not reach n."""
    cut = np.zeros(T, dtype=bool)
    cut[T - 1] = True
    if truncation is not None:
        cut[truncation - 1 :: truncation] = True
    return cut


def step_factors(low: Lowered, u: np.ndarray, s: np.ndarray, sigma: np.ndarray, method: str) -> np.ndarray:
    """c_n, the factor multiplying the carried adjoint (MATH section 6)."""
    if low.kind == "membrane":
        alpha = u.dtype.type(low.alpha)
        if low.model.reset == "zero":
            if method == "slayer":
                return alpha * (1 - s)
            return alpha * (1 - s - u * sigma)
        if method == "slayer":
            return np.full_like(u, alpha)
        return alpha - u.dtype.type(low.rho) * sigma
    if method == "slayer":
        return np.full_like(u, u.dtype.type(low.nu_pole))
    return u.dtype.type(low.nu_pole) - u.dtype.type(low.nu0) * sigma


def backward(
    low: Lowered,
    a: np.ndarray,
    u0: np.ndarray | None,
    u: np.ndarray,
    s: np.ndarray,
    mask: np.ndarray | None,
    g: np.ndarray,
    method: str,
    truncation: int | None,
    sigma: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The reverse scan; returns (d = dL/du_pre, dL/ds, dL/da, dL/du0, step factors c)."""
    model = low.model
    T, M = a.shape
    dtype = a.dtype
    sigma = model.sigma(u) if sigma is None else sigma
    factors = step_factors(low, u, s, sigma, method)
    cut = _boundary(T, truncation)
    d = np.empty_like(a)
    zero = np.zeros(M, dtype)
    if low.kind == "membrane":
        drive = sigma * g
        carried = zero
        for n in range(T - 1, -1, -1):
            if cut[n]:
                carried = zero
            dn = drive[n] + factors[n] * carried
            if mask is not None:
                dn = np.where(mask[n], dn, 0)
            d[n] = dn
            carried = dn
        d_next = np.zeros_like(d)
        d_next[:-1] = d[1:]
        d_next[cut] = 0
        if method == "slayer":
            dl_ds = g
        elif model.reset == "zero":
            dl_ds = g - dtype.type(low.alpha) * u * d_next
        else:
            dl_ds = g - dtype.type(low.rho) * d_next
        grad_a = d.copy() if low.syn is None else anticausal(low.syn, d, truncation)
        grad_u0 = dtype.type(low.alpha) * d[0]
    else:
        reset = _DF2T(low.nu, M, dtype)
        dl_ds = np.empty_like(a)
        carried = zero
        for n in range(T - 1, -1, -1):
            if cut[n]:
                reset.reset()
                carried = zero
            if method == "slayer":
                dl_ds[n] = g[n]
            else:
                dl_ds[n] = g[n] - reset.step(carried)
            d[n] = sigma[n] * dl_ds[n]
            carried = d[n]
        grad_a = anticausal(low.eps, d, truncation)
        first = d[: truncation or T]
        grad_u0 = anticausal(low.eps, np.concatenate([zero[None, :], first]))[0]
    return d, dl_ds, grad_a, grad_u0, factors


def parameter_gradients(
    low: Lowered,
    a: np.ndarray,
    u0: np.ndarray | None,
    u: np.ndarray,
    s: np.ndarray,
    sigma: np.ndarray,
    d: np.ndarray,
    dl_ds: np.ndarray,
    xp=np,
    filt=None,
) -> dict[str, float]:
    """dL/dp = sum_n d_n du_n/dp|explicit - sum_n dL/ds_n kappa_n sigma_n [p = theta].

    d = dL/du_pre and dL/ds come from any backward scan (NumPy or compiled);
    the explicit partials use the derivative kernels' filters over the full
    history. Reductions are accumulated in float64. ``xp`` and ``filt`` (a
    causal filter ``filt((b, a), x)``) let the same code run on CuPy arrays.
    """
    model = low.model
    M = a.shape[1]
    causal = filt or _causal
    zero = xp.zeros(M, a.dtype)
    params = {}

    def dot(x, y) -> float:
        # one pass, float64 accumulation, no temporaries for the shifted views
        return float(xp.sum(x * y, dtype=xp.float64))

    if low.kind == "membrane":
        # explicit partials use u[n-1] and s[n-1]: shifted views, u[-1] = u0, s[-1] = 0
        d_later = d[1:]
        for k in model.parameter_names:
            total = 0.0
            if low.d_alpha[k]:
                if model.reset == "zero":
                    total += low.d_alpha[k] * dot(d_later, u[:-1] * (1 - s[:-1]))
                else:
                    total += low.d_alpha[k] * dot(d_later, u[:-1])
                if u0 is not None:
                    total += low.d_alpha[k] * dot(d[0], u0)
            if low.d_rho[k]:
                total -= low.d_rho[k] * dot(d_later, s[:-1])
            if k in low.d_syn:
                total += dot(d, causal(low.d_syn[k], a))
            params[k] = float(total)
    else:
        s_prev = xp.concatenate([zero[None, :], s[:-1]])
        a_ext = a if u0 is None else xp.concatenate([u0[None, :], a])
        for k in model.parameter_names:
            total = 0.0
            if k in low.d_eps:
                explicit = causal(low.d_eps[k], a_ext)
                explicit = explicit if u0 is None else explicit[1:]
                total += dot(d, explicit)
            if k in low.d_nu:
                total -= dot(d, causal(low.d_nu[k], s_prev))
            params[k] = float(total)
    if "theta" in params:
        kappa = model.theta_factor(u)
        spike_path = dl_ds * sigma if isinstance(kappa, float) else dl_ds * kappa * sigma
        params["theta"] -= float(xp.sum(spike_path, dtype=xp.float64))
    return params
