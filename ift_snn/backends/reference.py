"""The float64 oracle: hand-written BPTT and the dense IFT solve.

Written independently of the derived scans and the code generated from them
(``symbolic/recurrence.py``, ``codegen/``): kernels enter as explicit taps
evaluated from their closed forms (no recurrences, no filters), the forward
is a plain time loop, and the gradients come from

* :func:`bptt`: a reverse sweep through the time loop, adjoint by adjoint
  (O(T^2) per neuron for general kernels, O(T) for membrane models);
* :func:`dense_ift`: the Implicit Function Theorem of docs/MATH.md section 3, the
  2T x 2T unit lower-triangular Jacobian d phi/d(u, s) in the interleaved
  order (u0, s0, u1, s1, ...) built explicitly per neuron and solved by
  ``scipy.linalg.solve_triangular``;
* :func:`slayer`: BPTT with the reset detached (s treated as a constant in
  the reset term), which is what SLAYER computes.

Truncation (``truncation=K``): the state crosses a chunk boundary of K steps
but its gradient does not; in the dense solve the couplings between chunks
are removed from both Jacobians. Parameter gradients contract the truncated
adjoint with the full explicit partials du[n]/dp.

All arrays are (T, M): time on axis 0, M neurons. Everything is float64.

Continuous time (the event SRM of ``events/srm.py``), written independently
of ``symbolic/continuous.py``'s local state and reverse scan: kernels enter as
their SymPy expressions, lambdified, and

* :func:`event_srm_simulate`: the global sums of u(t) on a fine grid, each
  crossing refined by ``scipy.optimize.brentq``, one spike after another;
* :func:`event_srm_gradients`: the implicit function theorem on
  F_k = u(t_k) - theta = 0, the K x K lower-triangular dF/dt and dF/dx built
  explicitly per neuron and solved by ``numpy.linalg.solve``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp
from scipy.linalg import solve_triangular

from ..neurons.kernels import Kernel
from ..neurons.models import NeuronModel

__all__ = ["RefResult", "simulate", "bptt", "slayer", "dense_ift", "RecurrentResult", "simulate_recurrent",
           "bptt_recurrent", "EventSRMResult", "EventSRMGradients", "event_srm_simulate", "event_srm_gradients"]


@dataclass
class RefResult:
    """Reference gradients of L = sum(g * s) and the trajectory they came from."""

    a: np.ndarray  # dL/da, (T, M)
    params: dict[str, float]  # dL/dp for each model parameter
    u0: np.ndarray  # dL/du0, (M,)
    u: np.ndarray  # membrane the spike function saw, (T, M)
    s: np.ndarray  # spikes, (T, M)


# ----------------------------------------------------------------- helpers
def _toeplitz(taps: np.ndarray, T: int) -> np.ndarray:
    """Lower-triangular Toeplitz K[n, m] = taps[n - m]."""
    idx = np.subtract.outer(np.arange(T), np.arange(T))
    out = np.where(idx >= 0, taps[np.clip(idx, 0, T - 1)], 0.0)
    return out


def _delayed_toeplitz(taps: np.ndarray, T: int) -> np.ndarray:
    """Strictly lower-triangular N[n, m] = taps[n - 1 - m] for m < n (the delayed reset)."""
    return _toeplitz(np.concatenate([[0.0], taps[: T - 1]]), T)


def _conv(taps: np.ndarray, x: np.ndarray, K: int | None = None) -> np.ndarray:
    """y[n] = sum_m taps[n - m] x[m] over m <= n in the chunk of n: Toeplitz(taps) @ x without the T x T matrix.

    Chunks of K steps (truncation) do not see each other. O(T log T) memory O(T) per column
    (scipy.signal.convolve picks direct or FFT); for the membrane models' input filter.
    """
    from scipy.signal import convolve

    T = x.shape[0]
    support = np.flatnonzero(taps[:T])
    if support.size == 0:
        return np.zeros_like(x)
    length = int(support[-1]) + 1
    out = np.empty_like(x)
    step = T if K is None else K
    for start in range(0, T, step):
        stop = min(start + step, T)
        h = taps[: min(length, stop - start)]
        out[start:stop] = convolve(x[start:stop], h[:, None])[: stop - start]
    return out


def _conv_t(taps: np.ndarray, x: np.ndarray, K: int | None = None) -> np.ndarray:
    """The transpose of :func:`_conv`: y[m] = sum_n taps[n - m] x[n] over n >= m in the chunk of m."""
    if K is None:
        return _conv(taps, x[::-1])[::-1]
    out = np.empty_like(x)
    for start in range(0, x.shape[0], K):
        stop = min(start + K, x.shape[0])
        out[start:stop] = _conv(taps, x[start:stop][::-1])[::-1]
    return out


#: The oracle refuses work whose arrays would exceed this many bytes (general kernels build T x T matrices).
MAX_BYTES = 4 * 2**30


def check_size(model: NeuronModel, T: int, M: int) -> None:
    """Raise ValueError before any allocation when the oracle's arrays would exceed :data:`MAX_BYTES`.

    Membrane models (lif, if, cuba_lif) need about 16 arrays of T x M float64;
    general SRM kernels also about 6 dense T x T matrices.
    """
    need = 16 * 8 * T * M
    if model.membrane is None:
        need += 6 * 8 * T * T
    if need > MAX_BYTES:
        raise ValueError(
            f"the float64 BPTT reference (method='bptt') for T={T}, {M} neurons would need {need / 2**30:.3g} GiB "
            f"({'O(T) per neuron' if model.membrane is not None else 'T x T matrices for a general SRM kernel'}); "
            f"at most {MAX_BYTES / 2**30:g} GiB. Use method='exodus' (the same gradient, O(T)) or fewer steps"
        )


def _chunk_mask(T: int, K: int | None) -> np.ndarray:
    """mask[n, m] = 1 when n and m lie in the same chunk of K steps."""
    if K is None:
        return np.ones((T, T))
    c = np.arange(T) // K
    return (c[:, None] == c[None, :]).astype(float)


def _scalar(expr: sp.Expr, model: NeuronModel) -> float:
    return float(sp.N(sp.sympify(expr).subs(model.values)))


def _partials(expr: sp.Expr, model: NeuronModel) -> dict[str, float]:
    return {name: _scalar(sp.diff(expr, sym), model) for name, sym in zip(model.parameter_names, model.symbols)}


def _taps(kernel: Kernel, length: int, model: NeuronModel) -> np.ndarray:
    return kernel.impulse(length, model.values)


def _dtaps(kernel: Kernel, length: int, model: NeuronModel) -> dict[str, np.ndarray]:
    out = {}
    for name, sym in zip(model.parameter_names, model.symbols):
        if sym in kernel.parameters:
            out[name] = kernel.diff(sym).impulse(length, model.values)
        else:
            out[name] = np.zeros(length)
    return out


def _prepare(model: NeuronModel, a: np.ndarray, u0: np.ndarray | None):
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"reference expects a (T, M) array, got shape {a.shape}")
    u0 = np.zeros(a.shape[1]) if u0 is None else np.asarray(u0, dtype=np.float64).reshape(a.shape[1])
    return a, u0


# ----------------------------------------------------------------- forward
def simulate(model: NeuronModel, a: np.ndarray, u0: np.ndarray | None = None,
             spikes: np.ndarray | None = None):
    """Plain time loop; returns (u, s, mask) with mask = 1[not clipped].

    ``spikes`` (T, M): use these spikes instead of f(u) (the membrane and gradients on another run's spikes,
    e.g. a float32 run's, so that precision is compared on the same trajectory, not across a flipped spike)."""
    a, u0 = _prepare(model, a, u0)
    T, M = a.shape
    fire = model.spike_fn
    if spikes is not None:
        given = np.asarray(spikes, dtype=np.float64)
        if given.shape != (T, M):
            raise ValueError(f"spikes have shape {given.shape}; expected {(T, M)} like a")
        step = iter(range(T))
        fire = lambda u: given[next(step)]  # noqa: E731  (called once per step, in order)
    u = np.zeros((T, M))
    s = np.zeros((T, M))
    mask = np.ones((T, M))
    if model.membrane is not None:
        mem = model.membrane
        alpha, rho = _scalar(mem.alpha, model), _scalar(mem.rho, model)
        current = _conv(_taps(mem.syn, T, model), a)
        u_prev, s_prev = u0.copy(), np.zeros(M)
        for n in range(T):
            if model.reset == "zero":
                pre = alpha * u_prev * (1.0 - s_prev) + current[n]
            else:
                pre = alpha * u_prev + current[n] - rho * s_prev
            if model.u_min is not None:
                mask[n] = pre > model.u_min
                pre = np.maximum(pre, model.u_min)
            u[n] = pre
            s[n] = fire(pre)
            u_prev, s_prev = u[n], s[n]
        return u, s, mask
    eps = _taps(model.eps, T + 1, model)
    nu = _taps(model.nu, T, model)
    drive = _toeplitz(eps[:T], T) @ a + eps[1:, None] * u0[None, :]
    for n in range(T):
        reset = nu[:n][::-1] @ s[:n] if n else 0.0  # sum_k nu[k] s[n-1-k]
        u[n] = drive[n] - reset
        s[n] = fire(u[n])
    return u, s, mask


# -------------------------------------------------------------------- BPTT
def bptt(
    model: NeuronModel,
    a: np.ndarray,
    g: np.ndarray,
    u0: np.ndarray | None = None,
    *,
    truncation: int | None = None,
    detach_reset: bool = False,
    spikes: np.ndarray | None = None,
) -> RefResult:
    """dL/da, dL/dp, dL/du0 for L = sum(g * s) by a reverse sweep through the loop (``spikes``: on these
    spikes instead of the simulated ones, :func:`simulate`)."""
    a, u0 = _prepare(model, a, u0)
    g = np.asarray(g, dtype=np.float64)
    T, M = a.shape
    check_size(model, T, M)
    K = truncation
    u, s, mask = simulate(model, a, u0, spikes)
    sigma = model.sigma(u)
    kappa = model.theta_factor(u) * np.ones_like(u)
    names = model.parameter_names
    pbar = {k: 0.0 for k in names}
    sbar = g.copy()
    theta_spike = 0.0

    if model.membrane is not None:
        mem = model.membrane
        alpha, rho = _scalar(mem.alpha, model), _scalar(mem.rho, model)
        d_alpha, d_rho = _partials(mem.alpha, model), _partials(mem.rho, model)
        syn = _taps(mem.syn, T, model)
        d_syn = _dtaps(mem.syn, T, model)
        ubar = np.zeros((T, M))
        cbar = np.zeros((T, M))  # adjoint of the input current
        u0bar = np.zeros(M)
        for n in range(T - 1, -1, -1):
            ubar[n] += sbar[n] * sigma[n]
            theta_spike += np.sum(sbar[n] * -kappa[n] * sigma[n])
            prebar = ubar[n] * mask[n]
            cbar[n] = prebar
            u_prev = u[n - 1] if n else u0
            s_prev = s[n - 1] if n else np.zeros(M)
            if model.reset == "zero":
                state_partial = u_prev * (1.0 - s_prev)
                for k in names:
                    pbar[k] += d_alpha[k] * np.sum(prebar * state_partial)
                to_u, to_s = alpha * (1.0 - s_prev), -alpha * u_prev
            else:
                for k in names:
                    pbar[k] += np.sum(prebar * (d_alpha[k] * u_prev - d_rho[k] * s_prev))
                to_u, to_s = alpha, -rho
            if n == 0:
                u0bar = prebar * to_u
            elif K is None or n % K != 0:
                ubar[n - 1] += prebar * to_u
                if not detach_reset:
                    sbar[n - 1] += prebar * to_s
        abar = _conv_t(syn, cbar, K)
        for k in names:
            pbar[k] += np.sum(cbar * _conv(d_syn[k], a))
        ubar_total = cbar
    else:
        eps = _taps(model.eps, T + 1, model)
        nu = _taps(model.nu, T, model)
        d_eps = _dtaps(model.eps, T + 1, model)
        d_nu = _dtaps(model.nu, T, model)
        chunks = _chunk_mask(T, K)
        reset_matrix = _delayed_toeplitz(nu, T) * chunks
        ubar = np.zeros((T, M))
        for n in range(T - 1, -1, -1):
            ubar[n] = sbar[n] * sigma[n]
            theta_spike += np.sum(sbar[n] * -kappa[n] * sigma[n])
            if not detach_reset and n:
                # u[n] = ... - sum_m N[n, m] s[m]
                sbar[:n] -= reset_matrix[n, :n, None] * ubar[n][None, :]
        abar = (_toeplitz(eps[:T], T) * chunks).T @ ubar
        first_chunk = np.ones(T) if K is None else (np.arange(T) < K).astype(float)
        u0bar = (eps[1:] * first_chunk) @ ubar
        for k in names:
            explicit = _toeplitz(d_eps[k][:T], T) @ a + d_eps[k][1:, None] * u0[None, :]
            explicit -= _delayed_toeplitz(d_nu[k], T) @ s
            pbar[k] += np.sum(ubar * explicit)
        ubar_total = ubar
    if "theta" in pbar:
        pbar["theta"] += theta_spike
    del ubar_total
    return RefResult(a=abar, params={k: float(v) for k, v in pbar.items()}, u0=u0bar, u=u, s=s)


def slayer(model: NeuronModel, a: np.ndarray, g: np.ndarray, u0: np.ndarray | None = None,
           *, truncation: int | None = None) -> RefResult:
    """SLAYER's gradient: BPTT with the reset term detached (N dropped)."""
    return bptt(model, a, g, u0, truncation=truncation, detach_reset=True)


# --------------------------------------------------------------- dense IFT
def dense_ift(
    model: NeuronModel,
    a: np.ndarray,
    g: np.ndarray,
    u0: np.ndarray | None = None,
    *,
    truncation: int | None = None,
    detach_reset: bool = False,
) -> RefResult:
    """The IFT solve of docs/MATH.md section 3, one dense triangular system per neuron.

    phi(u, s; a) = 0 along the trajectory; with J = d phi/d(u, s) (unit lower
    triangular in the order u0, s0, u1, s1, ...) and L = g . s,
    J^T lambda = dL/d(u, s) and dL/dx = -lambda^T d phi/dx for x = a, p, u0.
    Cost O(T^2) per neuron plus O(T^2) to build; for testing only.
    """
    a, u0 = _prepare(model, a, u0)
    g = np.asarray(g, dtype=np.float64)
    T, M = a.shape
    if 8 * 12 * T * T > MAX_BYTES:
        raise ValueError(f"dense_ift builds 2T x 2T matrices: T={T} would need {96 * T * T / 2**30:.3g} GiB; "
                         f"at most {MAX_BYTES / 2**30:g} GiB (it is a test oracle: use bptt for long runs)")
    K = truncation
    u, s, mask = simulate(model, a, u0)
    sigma = model.sigma(u)
    kappa = model.theta_factor(u) * np.ones_like(u)
    names = model.parameter_names
    chunks = _chunk_mask(T, K)
    iu, is_ = 2 * np.arange(T), 2 * np.arange(T) + 1

    grads_a = np.zeros((T, M))
    grads_u0 = np.zeros(M)
    grads_p = {k: 0.0 for k in names}

    if model.membrane is not None:
        mem = model.membrane
        alpha, rho = _scalar(mem.alpha, model), _scalar(mem.rho, model)
        d_alpha, d_rho = _partials(mem.alpha, model), _partials(mem.rho, model)
        syn_matrix = _toeplitz(_taps(mem.syn, T, model), T)
        d_syn = {k: _toeplitz(v, T) for k, v in _dtaps(mem.syn, T, model).items()}
    else:
        eps = _taps(model.eps, T + 1, model)
        nu = _taps(model.nu, T, model)
        eps_matrix = _toeplitz(eps[:T], T)
        reset_matrix = _delayed_toeplitz(nu, T)
        d_eps = _dtaps(model.eps, T + 1, model)
        d_nu = _dtaps(model.nu, T, model)
        d_reset = {k: _delayed_toeplitz(d_nu[k], T) for k in names}

    for m in range(M):
        J = np.eye(2 * T)
        J[is_, iu] = -sigma[:, m]
        dphi_da = np.zeros((2 * T, T))
        dphi_du0 = np.zeros(2 * T)
        dphi_dp = {k: np.zeros(2 * T) for k in names}
        if "theta" in dphi_dp:
            dphi_dp["theta"][is_] = kappa[:, m] * sigma[:, m]  # phi_s = s - f(u; theta)
        if model.membrane is not None:
            u_prev = np.concatenate([[u0[m]], u[:-1, m]])
            s_prev = np.concatenate([[0.0], s[:-1, m]])
            for n in range(1, T):
                if K is not None and n % K == 0:
                    continue  # state detached at the chunk boundary
                if model.reset == "zero":
                    J[iu[n], iu[n - 1]] = -mask[n, m] * alpha * (1.0 - s_prev[n])
                    if not detach_reset:
                        J[iu[n], is_[n - 1]] = mask[n, m] * alpha * u_prev[n]
                else:
                    J[iu[n], iu[n - 1]] = -mask[n, m] * alpha
                    if not detach_reset:
                        J[iu[n], is_[n - 1]] = mask[n, m] * rho
            dphi_da[iu] = -mask[:, m, None] * (syn_matrix * chunks)
            dphi_du0[iu[0]] = -mask[0, m] * alpha
            state = u_prev * (1.0 - s_prev) if model.reset == "zero" else u_prev
            for k in names:
                explicit = d_alpha[k] * state - d_rho[k] * s_prev + d_syn[k] @ a[:, m]
                dphi_dp[k][iu] += -mask[:, m] * explicit
        else:
            if not detach_reset:
                J[np.ix_(iu, is_)] = reset_matrix * chunks
            dphi_da[iu] = -(eps_matrix * chunks)
            first_chunk = np.ones(T) if K is None else (np.arange(T) < K).astype(float)
            dphi_du0[iu] = -eps[1:] * first_chunk
            for k in names:
                explicit = (_toeplitz(d_eps[k][:T], T) @ a[:, m] + d_eps[k][1:] * u0[m]
                            - d_reset[k] @ s[:, m])
                dphi_dp[k][iu] += -explicit
        rhs = np.zeros(2 * T)
        rhs[is_] = g[:, m]
        lam = solve_triangular(J, rhs, lower=True, trans="T", unit_diagonal=True)
        grads_a[:, m] = -lam @ dphi_da
        grads_u0[m] = -lam @ dphi_du0
        for k in names:
            grads_p[k] += float(-lam @ dphi_dp[k])
    return RefResult(a=grads_a, params=grads_p, u0=grads_u0, u=u, s=s)


# ------------------------------------------------------------ recurrent layers
@dataclass
class RecurrentResult:
    """Reference gradients of L = sum(g * s) for a recurrent layer (docs/MATH.md section 9)."""

    c: np.ndarray  # dL/dc, (T, B, N): the feed-forward current's gradient (= dL/da)
    V: np.ndarray  # dL/dV, (N, N)
    s0: np.ndarray  # dL/ds0, (B, N): the spike before step 0 (the recurrence's and the reset's)
    u0: np.ndarray  # dL/du0, (B, N)
    params: dict[str, float]
    u: np.ndarray  # (T, B, N)
    s: np.ndarray  # (T, B, N)
    a: np.ndarray  # the total input c + V s[n-1], (T, B, N)


def _recurrent_arrays(model: NeuronModel, c, V, s0, u0):
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 3:
        raise ValueError(f"the recurrent reference expects c of shape (T, B, N), got {c.shape}")
    T, B, N = c.shape
    V = np.asarray(V, dtype=np.float64)
    if V.shape != (N, N):
        raise ValueError(f"V has shape {V.shape}; expected ({N}, {N}) for N = {N} neurons")
    s0 = np.zeros((B, N)) if s0 is None else np.asarray(s0, dtype=np.float64).reshape(B, N)
    u0 = np.zeros((B, N)) if u0 is None else np.asarray(u0, dtype=np.float64).reshape(B, N)
    check_size(model, T, B * N)
    return c, V, s0, u0


def simulate_recurrent(model: NeuronModel, c, V, s0=None, u0=None):
    """The recurrent layer stepped by hand: a[n] = c[n] + V s[n-1] (s[-1] = s0), then the neuron of
    :func:`simulate` on a; s0 is also the spike the neuron's own reset sees before step 0 (its state),
    u0 its membrane. Kernels as explicit taps (O(T^2) per neuron). Returns (u, s, a, mask), each (T, B, N)."""
    c, V, s0, u0 = _recurrent_arrays(model, c, V, s0, u0)
    T, B, N = c.shape
    fire = model.spike_fn
    u, s, a, mask = (np.zeros((T, B, N)) for _ in range(4))
    mask[:] = 1.0
    if model.membrane is not None:
        mem = model.membrane
        alpha, rho = _scalar(mem.alpha, model), _scalar(mem.rho, model)
        syn = _taps(mem.syn, T, model)
    else:
        eps = _taps(model.eps, T + 1, model)
        nu = _taps(model.nu, T + 1, model)
    for n in range(T):
        s_prev = s[n - 1] if n else s0
        a[n] = c[n] + s_prev @ V.T
        if model.membrane is not None:
            current = np.einsum("k,kbn->bn", syn[n::-1], a[:n + 1])
            u_prev = u[n - 1] if n else u0
            if model.reset == "zero":
                pre = alpha * u_prev * (1.0 - s_prev) + current
            else:
                pre = alpha * u_prev + current - rho * s_prev
            if model.u_min is not None:
                mask[n] = pre > model.u_min
                pre = np.maximum(pre, model.u_min)
            u[n] = pre
        else:
            drive = np.einsum("k,kbn->bn", eps[n::-1], a[:n + 1]) + eps[n + 1] * u0
            reset = np.einsum("k,kbn->bn", nu[n - 1::-1], s[:n]) if n else 0.0  # sum_k nu[k] s[n-1-k]
            u[n] = drive - reset - nu[n] * s0
        s[n] = fire(u[n])
    return u, s, a, mask


def bptt_recurrent(model: NeuronModel, c, V, g, s0=None, u0=None, *, truncation: int | None = None,
                   detach_reset: bool = False) -> RecurrentResult:
    """dL/dc, dL/dV, dL/ds0, dL/du0 and dL/dp of L = sum(g * s) for the recurrent layer of
    :func:`simulate_recurrent`, by a reverse sweep through its time loop, written by hand.

    At step n (reverse) the spike's adjoint is complete once the adjoint of a[n + 1] is: sbar[n] = g[n] +
    V^T abar[n + 1] + the later membranes' reset terms; then ubar[n] = sigma[n] sbar[n] goes back into a[m]
    (m <= n, through the input kernel), the earlier state and spikes (the reset), u0 and s0. ``detach_reset``:
    the reset's path dropped (SLAYER), the recurrent path kept (a synapse). ``truncation=K``: no adjoint crosses
    a chunk boundary of K steps, the recurrent one included. O(T^2) per neuron.
    """
    c, V, s0, u0 = _recurrent_arrays(model, c, V, s0, u0)
    g = np.asarray(g, dtype=np.float64)
    T, B, N = c.shape
    if g.shape != c.shape:
        raise ValueError(f"g has shape {g.shape}; expected {c.shape} like c")
    K = truncation
    chunk = (lambda n: n // K) if K else (lambda n: 0)  # noqa: E731
    u, s, a, mask = simulate_recurrent(model, c, V, s0, u0)
    sigma = model.sigma(u)
    kappa = model.theta_factor(u) * np.ones_like(u)
    names = model.parameter_names
    pbar = {k: 0.0 for k in names}
    sbar = g.copy()
    ubar = np.zeros((T, B, N))
    abar = np.zeros((T, B, N))
    s0bar, u0bar = np.zeros((B, N)), np.zeros((B, N))
    Vbar = np.zeros((N, N))
    if model.membrane is not None:
        mem = model.membrane
        alpha, rho = _scalar(mem.alpha, model), _scalar(mem.rho, model)
        d_alpha, d_rho = _partials(mem.alpha, model), _partials(mem.rho, model)
        syn = _taps(mem.syn, T, model)
        d_syn = _dtaps(mem.syn, T, model)
    else:
        eps = _taps(model.eps, T + 1, model)
        nu = _taps(model.nu, T + 1, model)
        d_eps = _dtaps(model.eps, T + 1, model)
        d_nu = _dtaps(model.nu, T + 1, model)
    for n in range(T - 1, -1, -1):
        # abar[n + 1] is complete: every membrane after n has sent its adjoint back
        if n + 1 < T and chunk(n + 1) == chunk(n):
            sbar[n] += abar[n + 1] @ V
        ubar[n] += sbar[n] * sigma[n]
        if "theta" in pbar:
            pbar["theta"] += float(np.sum(sbar[n] * -kappa[n] * sigma[n]))
        s_prev = s[n - 1] if n else s0
        same = [m for m in range(n + 1) if chunk(m) == chunk(n)]
        if model.membrane is not None:
            prebar = ubar[n] * mask[n]
            for m in same:
                abar[m] += syn[n - m] * prebar
            for k in names:
                pbar[k] += float(np.sum(prebar * np.einsum("j,jbn->bn", d_syn[k][n::-1], a[:n + 1])))
            u_prev = u[n - 1] if n else u0
            if model.reset == "zero":
                for k in names:
                    pbar[k] += d_alpha[k] * float(np.sum(prebar * u_prev * (1.0 - s_prev)))
                to_u, to_s = alpha * (1.0 - s_prev), -alpha * u_prev
            else:
                for k in names:
                    pbar[k] += float(np.sum(prebar * (d_alpha[k] * u_prev - d_rho[k] * s_prev)))
                to_u, to_s = alpha, -rho
            if n == 0:
                u0bar += prebar * to_u
                if not detach_reset:
                    s0bar += prebar * to_s
            elif chunk(n - 1) == chunk(n):
                ubar[n - 1] += prebar * to_u
                if not detach_reset:
                    sbar[n - 1] += prebar * to_s
        else:
            for m in same:
                abar[m] += eps[n - m] * ubar[n]
            for k in names:
                explicit = (np.einsum("j,jbn->bn", d_eps[k][n::-1], a[:n + 1]) + d_eps[k][n + 1] * u0
                            - d_nu[k][n] * s0)
                if n:
                    explicit -= np.einsum("j,jbn->bn", d_nu[k][n - 1::-1], s[:n])
                pbar[k] += float(np.sum(ubar[n] * explicit))
            if chunk(n) == 0:
                u0bar += eps[n + 1] * ubar[n]
            if not detach_reset:
                for m in same[:-1]:  # u[n] = ... - nu[n - 1 - m] s[m], m < n
                    sbar[m] -= nu[n - 1 - m] * ubar[n]
                if chunk(n) == 0:
                    s0bar -= nu[n] * ubar[n]
    # a[n] = c[n] + V s[n-1]: dL/dc = abar, dL/dV = sum_n abar[n] s[n-1]^T, s0 through a[0]
    Vbar += np.einsum("tbi,tbj->ij", abar[1:], s[:-1]) + abar[0].T @ s0
    s0bar += abar[0] @ V
    return RecurrentResult(c=abar, V=Vbar, s0=s0bar, u0=u0bar, params={k: float(v) for k, v in pbar.items()},
                           u=u, s=s, a=a)


# ------------------------------------------------------- continuous time (event SRM)
@dataclass
class EventSRMResult:
    """Output spikes of :func:`event_srm_simulate`."""

    spikes: list[list[np.ndarray]]  # [b][m]: the spike times t_k of neuron m of sample b, before the axonal delay
    times: np.ndarray  # (B, M, S): t_k + axonal[m], +inf beyond counts (S = the largest count, at least 1)
    counts: np.ndarray  # (B, M)


@dataclass
class EventSRMGradients:
    """dL/dx of :func:`event_srm_gradients`, shaped like those of ``ift_snn.events.srm.backward_srm``."""

    w: np.ndarray  # (C, M)
    inputs: np.ndarray  # (B, C, S_in), 0 on padding
    delays: np.ndarray  # (C, M) synaptic
    axonal: np.ndarray  # (M,)
    params: dict[str, float]  # by parameter name, theta included


def _ref_heaviside(x):
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, 1.0, np.where(x < 0, 0.0, 0.5))


_HEAVISIDE = sp.Function("ref_heaviside")


def _lag_function(expr: sp.Expr, t: sp.Symbol, values: dict):
    """f(lag) as a numpy function: expr at t = lag for lag > 0 and 0 for lag <= 0 (the kernel acts after its
    cause). Heaviside factors are evaluated as written; DiracDelta terms (the derivative of a Heaviside at a
    delay where the kernel is continuous) are 0."""
    expr = sp.sympify(expr).replace(sp.DiracDelta, lambda *a: sp.Integer(0))
    expr = expr.replace(sp.Heaviside, lambda *a: _HEAVISIDE(a[0])).subs(values)
    fn = sp.lambdify(t, expr, modules=[{"ref_heaviside": _ref_heaviside}, "numpy"])

    def f(lag):
        lag = np.asarray(lag, dtype=np.float64)
        pos = lag > 0
        with np.errstate(over="ignore", invalid="ignore"):
            val = np.broadcast_to(np.asarray(fn(np.where(pos, lag, 0.0)), dtype=np.float64), lag.shape)
        return np.where(pos, val, 0.0)

    return f


def _theta_symbol(values: dict) -> sp.Symbol:
    found = [s for s in values if getattr(s, "name", None) == "theta"]
    if len(found) != 1:
        raise ValueError(f"values has no symbol named theta (keys {sorted(map(str, values))}); expected the "
                         "threshold among the parameter values")
    return found[0]


def _horizon(eps: sp.Expr, nu: sp.Expr, t: sp.Symbol, values: dict) -> tuple[float, float]:
    """(largest time constant -1/r over the terms exp(r t + c) of eps and nu, largest Heaviside delay of eps),
    read from the expressions at these values (1.0 and 0.0 where there are none)."""
    taus, delays = [1.0], [0.0]
    for e in (eps, nu):
        e = sp.sympify(e).subs(values)
        for atom in e.atoms(sp.exp):
            rate = sp.diff(atom.args[0], t)
            if rate.is_number and float(rate) < 0:
                taus.append(-1.0 / float(rate))
        for atom in e.atoms(sp.Heaviside):
            slope = sp.diff(atom.args[0], t)
            if slope.is_number and float(slope) > 0:
                delays.append(float(-atom.args[0].subs(t, 0) / slope))
    return max(taus), max(delays)


def _ref_inputs(inputs_times, w, delays, axonal):
    times = np.asarray(getattr(inputs_times, "times", inputs_times), dtype=np.float64)
    if times.ndim != 3:
        raise ValueError(f"inputs_times has shape {times.shape}; expected (batch, channels, slots), +inf padding")
    w = np.asarray(w, dtype=np.float64)
    B, C, _ = times.shape
    if w.ndim != 2 or w.shape[0] != C:
        raise ValueError(f"w has shape {w.shape}; expected ({C}, M)")
    M = w.shape[1]
    d = np.zeros((C, M)) if delays is None else np.asarray(delays, dtype=np.float64).reshape(C, M)
    dax = np.zeros(M) if axonal is None else np.asarray(axonal, dtype=np.float64).reshape(M)
    return times, w, d, dax


def _lane_arrivals(times, w, d, b, m):
    """(arrival times a_ij = t_i^j + d_im, their weights w_im, channel i, slot j) of lane (b, m), finite only."""
    ch, slot = np.nonzero(np.isfinite(times[b]))
    return times[b, ch, slot] + d[ch, m], w[ch, m], ch, slot


def event_srm_simulate(eps: sp.Expr, nu: sp.Expr, values: dict, w: np.ndarray, inputs_times, delays=None,
                       axonal=None, t_end: float | None = None, grid: float = 1e-3, *, t: sp.Symbol | None = None,
                       max_spikes: int = 1000, chunk: int = 4096) -> EventSRMResult:
    """Spikes of the continuous SRM layer by direct evaluation of the global sums, one spike after another::

        u_m(t) = sum_i w[i, m] sum_j eps(t - t_i^j - d[i, m]) + sum_{t_k < t} nu(t - t_k)

    spikes t_k at every upward crossing u_m(t_k) = theta, outputs t_k + axonal[m]. ``eps``, ``nu``: SymPy
    expressions in ``t`` (default ``Symbol("t", real=True)``, i.e. ``ift_snn.symbolic.continuous.T``);
    ``values`` {Symbol: float} for every parameter, ``theta`` included. eps(lag) and nu(lag) are 0 for
    lag <= 0; a ``Heaviside(t - d)`` inside eps is evaluated as written. ``inputs_times`` (B, C, S) padded
    with +inf (or anything with ``.times``); ``delays`` (C, M), ``axonal`` (M,), default 0.

    Per (b, m) lane, from the first arrival (or the previous spike): u on the grid t + grid * (1, 2, ...),
    the first point with u >= theta brackets the crossing with the point before it, and
    ``scipy.optimize.brentq`` refines it to full float64 precision; the spike's nu term then joins the sum.
    Stops at ``t_end`` (default: last arrival + largest Heaviside delay of eps + 50 times the largest time
    constant -1/r of the terms exp(r t) of eps and nu).

    Cost: O((t_end - first arrival) / grid * (E + K)) kernel evaluations per lane for E arrivals and K
    spikes; for tests only. Preconditions: theta > 0 (u = 0 before the first arrival), nu(0) < 0 (a spike
    lowers u, so the next crossing lies beyond the first grid point), and no crossing whose excursion above
    theta is shorter than ``grid`` (such a crossing is missed). A lane with more than ``max_spikes`` spikes
    raises ValueError.
    """
    from scipy.optimize import brentq

    t = sp.Symbol("t", real=True) if t is None else t
    times, w, d, dax = _ref_inputs(inputs_times, w, delays, axonal)
    B, _, _ = times.shape
    M = w.shape[1]
    theta = float(values[_theta_symbol(values)])
    eps_f, nu_f = _lag_function(eps, t, values), _lag_function(nu, t, values)
    tau_max, delay_max = _horizon(eps, nu, t, values)
    spikes: list[list[np.ndarray]] = []
    for b in range(B):
        row = []
        for m in range(M):
            a, wa, _, _ = _lane_arrivals(times, w, d, b, m)
            lane: list[float] = []
            if a.size:
                stop = (float(a.max()) + delay_max + 50.0 * tau_max) if t_end is None else float(t_end)

                def u(x, a=a, wa=wa, lane=lane):
                    x = np.asarray(x, dtype=np.float64)[..., None]
                    total = np.sum(wa * eps_f(x - a), axis=-1)
                    if lane:
                        total = total + np.sum(nu_f(x - np.array(lane)), axis=-1)
                    return total

                now, after_spike = float(a.min()), False
                while now < stop:
                    n = int(min(chunk, max(1, np.ceil((stop - now) / grid))))
                    pts = now + grid * np.arange(1, n + 1)
                    above = np.flatnonzero(u(pts) >= theta)
                    if above.size == 0:
                        now, after_spike = float(pts[-1]), False
                        continue
                    i = int(above[0])
                    if i == 0 and after_spike:
                        raise ValueError(f"lane ({b}, {m}): u >= theta one grid step ({grid}) after the spike at "
                                         f"{now!r}; expected nu(0) < 0 (or a finer grid)")
                    lo = float(pts[i - 1]) if i else now
                    tk = brentq(lambda x: float(u(x)) - theta, lo, float(pts[i]), xtol=1e-15,
                                rtol=4 * np.finfo(float).eps, maxiter=500)
                    lane.append(tk)
                    if len(lane) > max_spikes:
                        raise ValueError(f"lane ({b}, {m}) spiked more than {max_spikes} times before t = {tk!r}")
                    now, after_spike = tk, True
            row.append(np.array(lane, dtype=np.float64))
        spikes.append(row)
    counts = np.array([[len(s) for s in row] for row in spikes], dtype=np.int64).reshape(B, M)
    S = max(1, int(counts.max()) if counts.size else 1)
    out = np.full((B, M, S), np.inf)
    for b in range(B):
        for m in range(M):
            out[b, m, :counts[b, m]] = spikes[b][m] + dax[m]
    return EventSRMResult(spikes=spikes, times=out, counts=counts)


def _ref_kernel_functions(eps, nu, values, t):
    """(parameters with theta last, eps, nu, eps', nu', [d eps/dp], [d nu/dp]) as functions of the lag
    (SymPy's own diff of the user's kernels, lambdified)."""
    theta_sym = _theta_symbol(values)
    params = sorted((s for s in values if s != theta_sym), key=lambda s: s.name) + [theta_sym]
    eps, nu = sp.sympify(eps), sp.sympify(nu)
    eps_f, nu_f = _lag_function(eps, t, values), _lag_function(nu, t, values)
    deps_f, dnu_f = _lag_function(sp.diff(eps, t), t, values), _lag_function(sp.diff(nu, t), t, values)
    eps_p = [_lag_function(sp.diff(eps, p), t, values) for p in params]
    nu_p = [_lag_function(sp.diff(nu, p), t, values) for p in params]
    return params, eps_f, nu_f, deps_f, dnu_f, eps_p, nu_p


def event_srm_gradients(eps: sp.Expr, nu: sp.Expr, values: dict, w: np.ndarray, inputs_times, spikes,
                        grad_times: np.ndarray, delays=None, axonal=None, *,
                        t: sp.Symbol | None = None) -> EventSRMGradients:
    """dL/dx of L = sum g_k (t_k + axonal) by the implicit function theorem, one dense K x K system per lane.

    Per (b, m) lane with spikes t_1 < ... < t_K (``spikes``: an :class:`EventSRMResult` or the nested lists
    [b][m] of :func:`event_srm_simulate`, before the axonal delay) the unknowns t_k solve ::

        F_k = sum_{i,j} w_i eps(t_k - t_i^j - d_i) + sum_{n < k} nu(t_k - t_n) - theta = 0

    so dt/dx = -(dF/dt)^{-1} dF/dx with dF/dt lower triangular: dF_k/dt_k = u'(t_k), dF_k/dt_n = -nu'(t_k - t_n)
    (n < k). dF/dx for x = every weight w_i (sum_j eps), input time t_i^j (-w_i eps'), synaptic delay d_i
    (-w_i sum_j eps'), kernel parameter p (sum w eps_p + sum nu_p) and theta (the same, minus 1), from
    ``sympy.diff`` of eps and nu, lambdified. ``numpy.linalg.solve`` gives dt/dx, contracted with dL/dt_k =
    ``grad_times[b, m, k]`` (B, M, >= K); dL/d axonal[m] = sum_k g_k. Arguments otherwise as in
    :func:`event_srm_simulate`.

    Cost: O(K^2 + K E) kernel evaluations and one K x K solve with O(C S_in + P) right-hand sides per lane;
    for tests only. Preconditions: u'(t_k) != 0 at every spike (a transversal crossing), no input arriving
    exactly at a spike.
    """
    t = sp.Symbol("t", real=True) if t is None else t
    times, w, d, dax = _ref_inputs(inputs_times, w, delays, axonal)
    B, C, S_in = times.shape
    M = w.shape[1]
    lists = spikes.spikes if isinstance(spikes, EventSRMResult) else spikes
    g_all = np.asarray(grad_times, dtype=np.float64)
    params, eps_f, nu_f, deps_f, dnu_f, eps_p, nu_p = _ref_kernel_functions(eps, nu, values, t)
    theta_sym = params[-1]
    P = len(params)
    gw, gin, gd, gax, gp = np.zeros((C, M)), np.zeros((B, C, S_in)), np.zeros((C, M)), np.zeros(M), np.zeros(P)
    for b in range(B):
        for m in range(M):
            tk = np.asarray(lists[b][m], dtype=np.float64)
            K = tk.size
            if K == 0:
                continue
            g = g_all[b, m, :K]
            gax[m] += g.sum()
            a, wa, ch, slot = _lane_arrivals(times, w, d, b, m)
            lag_in = tk[:, None] - a[None, :]  # (K, E)
            lag_sp = tk[:, None] - tk[None, :]  # (K, K), positive below the diagonal
            below = np.tril(np.ones((K, K), dtype=bool), -1)
            J = -np.where(below, dnu_f(lag_sp), 0.0)
            J[np.arange(K), np.arange(K)] = (deps_f(lag_in) @ wa) + np.where(below, dnu_f(lag_sp), 0.0).sum(axis=1)
            E = a.size
            # columns: w_i (C), arrivals (E; t_i^j and d_i both enter through a_ij), parameters (P)
            dF = np.zeros((K, C + E + P))
            ev = eps_f(lag_in)
            for e in range(E):
                dF[:, ch[e]] += ev[:, e]
            dF[:, C:C + E] = -wa[None, :] * deps_f(lag_in)
            for q, p in enumerate(params):
                col = eps_p[q](lag_in) @ wa + np.where(below, nu_p[q](lag_sp), 0.0).sum(axis=1)
                dF[:, C + E + q] = col - (1.0 if p == theta_sym else 0.0)
            dtdx = -np.linalg.solve(J, dF)
            grad = g @ dtdx
            gw[:, m] += grad[:C]
            for e in range(E):
                gin[b, ch[e], slot[e]] += grad[C + e]
                gd[ch[e], m] += grad[C + e]
            gp += grad[C + E:]
    return EventSRMGradients(w=gw, inputs=gin, delays=gd, axonal=gax,
                             params={p.name: float(v) for p, v in zip(params, gp)})


# ------------------------------------------------------- continuous time, recurrent (event SRM with V, Dr)
__all__ += ["EventSRMRecurrentGradients", "event_srm_simulate_recurrent", "event_srm_gradients_recurrent"]


@dataclass
class EventSRMRecurrentGradients(EventSRMGradients):
    """dL/dx of :func:`event_srm_gradients_recurrent`: those of :class:`EventSRMGradients` and the recurrent
    weights and delays."""

    recurrent: np.ndarray  # (M, M): dL/dV[j, m], j the sending neuron, m the receiving one
    recurrent_delays: np.ndarray  # (M, M): dL/dDr[j, m]


def _ref_recurrent(recurrent, recurrent_delays, M: int):
    V = np.asarray(recurrent, dtype=np.float64)
    Dr = np.asarray(recurrent_delays, dtype=np.float64)
    if V.shape != (M, M):
        raise ValueError(f"recurrent has shape {V.shape}; expected ({M}, {M}) (sender, receiver)")
    if Dr.shape != (M, M):
        raise ValueError(f"recurrent_delays has shape {Dr.shape}; expected ({M}, {M}) (sender, receiver)")
    if not np.all(np.isfinite(V)):
        raise ValueError("recurrent has a non-finite entry")
    if not np.all(np.isfinite(Dr)) or np.any(Dr <= 0):
        raise ValueError(f"recurrent_delays must be finite and > 0 everywhere (smallest {Dr.min()!r}): a spike "
                         "reaches the other neurons (itself included) strictly after it happens")
    return V, Dr


def _sample_arrivals(times, w, d, b, M):
    """Per neuron m of sample b: (arrival times, weights, channel, slot) of its input spikes, finite only."""
    return [_lane_arrivals(times, w, d, b, m) for m in range(M)]


def event_srm_simulate_recurrent(eps: sp.Expr, nu: sp.Expr, values: dict, w: np.ndarray, inputs_times,
                                 delays=None, axonal=None, t_end: float | None = None, grid: float = 1e-3, *,
                                 recurrent, recurrent_delays, t: sp.Symbol | None = None, max_spikes: int = 1000,
                                 chunk: int = 4096) -> EventSRMResult:
    """Spikes of the continuous SRM layer with recurrent connections, by direct evaluation of the global sums::

        u_m(t) = sum_i w[i, m] sum_j eps(t - t_i^j - d[i, m])
               + sum_j V[j, m] sum_{spikes t_k of neuron j} eps(t - t_k - Dr[j, m])
               + sum_{own spikes t_k < t} nu(t - t_k)

    ``recurrent`` V (M, M) and ``recurrent_delays`` Dr (M, M), indexed [sender j, receiver m], the diagonal a
    self-connection; every Dr > 0 (ValueError otherwise). Axonal delays shift only the reported times, not
    the recurrent arrivals. Everything else as in :func:`event_srm_simulate`, which this equals for V = 0.

    The neurons of a sample are coupled, so they advance together: from the last event (the first input
    arrival of the sample, a spike, or the end of the previous grid chunk) u of every neuron on the grid
    t + grid * (1, 2, ...); at the first point where some neuron has u >= theta, each such neuron's crossing
    is refined by ``scipy.optimize.brentq`` in the bracket (previous point, this point), the earliest one is
    recorded, its reset and its recurrent arrivals join the sums, and the scan restarts from it. A spike's
    recurrent arrivals come min(Dr) or more later, so with min(Dr) > grid they cannot fall inside the bracket
    that found it. Stops at ``t_end`` (default: the last input arrival + largest Heaviside delay of eps +
    50 times the largest time constant, pushed to the last spike + max(Dr) + the same margin after each spike).

    Preconditions as in :func:`event_srm_simulate`; in addition no two neurons crossing within one grid
    step of a spike of one of them at the same instant. A lane (b, m) with more than ``max_spikes`` spikes
    raises ValueError (runaway recurrent excitation).
    """
    from scipy.optimize import brentq

    t = sp.Symbol("t", real=True) if t is None else t
    times, w, d, dax = _ref_inputs(inputs_times, w, delays, axonal)
    B, _, _ = times.shape
    M = w.shape[1]
    V, Dr = _ref_recurrent(recurrent, recurrent_delays, M)
    theta = float(values[_theta_symbol(values)])
    eps_f, nu_f = _lag_function(eps, t, values), _lag_function(nu, t, values)
    tau_max, delay_max = _horizon(eps, nu, t, values)
    margin = delay_max + 50.0 * tau_max
    spikes: list[list[np.ndarray]] = []
    for b in range(B):
        arr = _sample_arrivals(times, w, d, b, M)
        sp_t: list[float] = []  # every spike of the sample, in time order
        sp_n: list[int] = []  # its neuron

        def u_one(x, m, arr=arr, sp_t=sp_t, sp_n=sp_n):
            """u_m at the points x (any shape)."""
            x = np.asarray(x, dtype=np.float64)[..., None]
            a, wa, _, _ = arr[m]
            total = np.sum(wa * eps_f(x - a), axis=-1) if a.size else np.zeros(x.shape[:-1])
            if sp_t:
                tn, jn = np.array(sp_t), np.array(sp_n)
                total = total + np.sum(V[jn, m] * eps_f(x - tn - Dr[jn, m]), axis=-1)
                own = tn[jn == m]
                if own.size:
                    total = total + np.sum(nu_f(x - own), axis=-1)
            return total

        first = [float(a.min()) for a, _, _, _ in arr if a.size]
        if first:
            stop = (max(float(a.max()) for a, _, _, _ in arr if a.size) + margin) if t_end is None else float(t_end)
            now, last = min(first), -1  # last: the neuron that spiked at `now`, -1 when `now` is no spike
            while now < stop:
                n = int(min(chunk, max(1, np.ceil((stop - now) / grid))))
                pts = now + grid * np.arange(1, n + 1)
                ug = np.stack([u_one(pts, m) for m in range(M)], axis=1)  # (n, M)
                rows = np.flatnonzero(np.any(ug >= theta, axis=1))
                if rows.size == 0:
                    now, last = float(pts[-1]), -1
                    continue
                i = int(rows[0])
                cand = np.flatnonzero(ug[i] >= theta)
                if i == 0 and last in cand:
                    raise ValueError(f"sample {b}, neuron {last}: u >= theta one grid step ({grid}) after its spike "
                                     f"at {now!r}; expected nu(0) < 0 (or a finer grid)")
                lo, hi = (float(pts[i - 1]) if i else now), float(pts[i])
                best, who = np.inf, -1
                for m in cand:
                    if float(u_one(lo, m)) >= theta:
                        raise ValueError(f"sample {b}, neuron {m}: u >= theta already at {lo!r} (two crossings at "
                                         "one instant, or a crossing missed by the grid)")
                    tk = brentq(lambda x, m=m: float(u_one(x, m)) - theta, lo, hi, xtol=1e-15,
                                rtol=4 * np.finfo(float).eps, maxiter=500)
                    if tk < best:
                        best, who = tk, int(m)
                sp_t.append(best)
                sp_n.append(who)
                if sp_n.count(who) > max_spikes:
                    raise ValueError(f"lane ({b}, {who}) spiked more than {max_spikes} times before t = {best!r}")
                if t_end is None:
                    stop = max(stop, best + float(Dr[who].max()) + margin)
                now, last = best, who
        tn, jn = np.array(sp_t, dtype=np.float64), np.array(sp_n, dtype=np.int64)
        spikes.append([tn[jn == m] for m in range(M)])
    counts = np.array([[len(s) for s in row] for row in spikes], dtype=np.int64).reshape(B, M)
    S = max(1, int(counts.max()) if counts.size else 1)
    out = np.full((B, M, S), np.inf)
    for b in range(B):
        for m in range(M):
            out[b, m, :counts[b, m]] = spikes[b][m] + dax[m]
    return EventSRMResult(spikes=spikes, times=out, counts=counts)


def event_srm_gradients_recurrent(eps: sp.Expr, nu: sp.Expr, values: dict, w: np.ndarray, inputs_times, spikes,
                                  grad_times: np.ndarray, delays=None, axonal=None, *, recurrent,
                                  recurrent_delays, t: sp.Symbol | None = None) -> EventSRMRecurrentGradients:
    """dL/dx of L = sum g_k (t_k + axonal) for the recurrent layer of :func:`event_srm_simulate_recurrent`, by the
    implicit function theorem: one dense K x K system per SAMPLE over all K spikes of all its neurons.

    Spikes (t_k, neuron m_k) of sample b in time order solve ::

        F_k = sum_{i,j} w[i, m_k] eps(t_k - t_i^j - d[i, m_k]) + sum_n V[m_n, m_k] eps(t_k - t_n - Dr[m_n, m_k])
              + sum_{n: m_n = m_k} nu(t_k - t_n) - theta = 0

    (eps and nu 0 at lags <= 0, so only earlier spikes enter). dF/dt: dF_k/dt_k = u'_{m_k}(t_k), and for n != k
    dF_k/dt_n = -V[m_n, m_k] eps'(t_k - t_n - Dr[m_n, m_k]) - [m_n = m_k] nu'(t_k - t_n) (lower triangular in
    time order). dF/dx, in rows k of receiver m = m_k: w[i, m] (sum_j eps), each input arrival t_i^j + d[i, m]
    (-w eps'; it is both the input time's and the synaptic delay's column), V[j, m] (sum over spikes of j of
    eps), Dr[j, m] (-V[j, m] sum over spikes of j of eps'), every kernel parameter (sum w eps_p + sum V eps_p +
    sum nu_p) and theta (the same, minus 1), from ``sympy.diff``, lambdified; ``numpy.linalg.solve``.
    ``grad_times`` (B, M, >= K_m) is dL/d(output time) per lane; dL/d axonal[m] = sum of its g. ``spikes``: an
    :class:`EventSRMResult` or nested lists [b][m] (before the axonal delay). Arguments otherwise as in
    :func:`event_srm_simulate_recurrent`; equals :func:`event_srm_gradients` for V = 0 (where dL/dDr = 0).

    Preconditions: u'(t_k) != 0 at every spike, no input or recurrent arrival exactly at a spike.
    """
    t = sp.Symbol("t", real=True) if t is None else t
    times, w, d, dax = _ref_inputs(inputs_times, w, delays, axonal)
    B, C, S_in = times.shape
    M = w.shape[1]
    V, Dr = _ref_recurrent(recurrent, recurrent_delays, M)
    lists = spikes.spikes if isinstance(spikes, EventSRMResult) else spikes
    g_all = np.asarray(grad_times, dtype=np.float64)
    params, eps_f, nu_f, deps_f, dnu_f, eps_p, nu_p = _ref_kernel_functions(eps, nu, values, t)
    theta_sym = params[-1]
    P = len(params)
    gw, gin, gd, gax, gp = np.zeros((C, M)), np.zeros((B, C, S_in)), np.zeros((C, M)), np.zeros(M), np.zeros(P)
    gV, gDr = np.zeros((M, M)), np.zeros((M, M))
    for b in range(B):
        per = [np.asarray(lists[b][m], dtype=np.float64) for m in range(M)]
        tk = np.concatenate(per) if M else np.zeros(0)
        mk = np.concatenate([np.full(p.size, m, dtype=np.int64) for m, p in enumerate(per)]) if M else tk
        idx = np.concatenate([np.arange(p.size) for p in per]) if M else tk  # slot within its lane
        order = np.argsort(tk, kind="stable")
        tk, mk, idx = tk[order], mk[order].astype(np.int64), idx[order].astype(np.int64)
        K = tk.size
        if K == 0:
            continue
        g = g_all[b, mk, idx]
        np.add.at(gax, mk, g)
        arr = _sample_arrivals(times, w, d, b, M)
        offs = np.cumsum([0] + [a.size for a, _, _, _ in arr])  # input-arrival columns per receiver
        E = int(offs[-1])
        # columns: w[i, m] (C*M), input arrivals (E), V[j, m] (M*M), Dr[j, m] (M*M), parameters (P)
        cW, cA, cV, cD, cP = 0, C * M, C * M + E, C * M + E + M * M, C * M + E + 2 * M * M
        dF = np.zeros((K, cP + P))
        J = np.zeros((K, K))
        lag_sp = tk[:, None] - tk[None, :]  # (K, K): t_k - t_n
        for k in range(K):
            m = int(mk[k])
            a, wa, ch, _ = arr[m]
            lag_in = tk[k] - a
            ev, dev = eps_f(lag_in), deps_f(lag_in)
            # recurrent arrivals from every spike n (own included: the self-connection), lags <= 0 vanish
            lag_rec = lag_sp[k] - Dr[mk, m]
            Vn = V[mk, m]
            er, der = eps_f(lag_rec), deps_f(lag_rec)
            own = (mk == m) & (lag_sp[k] > 0)
            dnu = np.where(own, dnu_f(lag_sp[k]), 0.0)
            row = -(Vn * der) - dnu
            row[k] = 0.0
            J[k] = row
            J[k, k] = float(dev @ wa) + float(Vn @ der) + float(dnu.sum())
            np.add.at(dF[k], cW + ch * M + m, ev)
            dF[k, cA + offs[m]:cA + offs[m + 1]] = -wa * dev
            np.add.at(dF[k], cV + mk * M + m, er)
            np.add.at(dF[k], cD + mk * M + m, -Vn * der)
            for q, p in enumerate(params):
                val = float(eps_p[q](lag_in) @ wa) + float(Vn @ eps_p[q](lag_rec))
                val += float(np.where(own, nu_p[q](lag_sp[k]), 0.0).sum())
                dF[k, cP + q] = val - (1.0 if p == theta_sym else 0.0)
        dtdx = -np.linalg.solve(J, dF)
        grad = g @ dtdx
        gw += grad[cW:cA].reshape(C, M)
        for m in range(M):
            _, _, ch, slot = arr[m]
            ga = grad[cA + offs[m]:cA + offs[m + 1]]
            np.add.at(gin[b], (ch, slot), ga)
            np.add.at(gd[:, m], ch, ga)
        gV += grad[cV:cD].reshape(M, M)
        gDr += grad[cD:cP].reshape(M, M)
        gp += grad[cP:]
    return EventSRMRecurrentGradients(w=gw, inputs=gin, delays=gd, axonal=gax,
                                      params={p.name: float(v) for p, v in zip(params, gp)},
                                      recurrent=gV, recurrent_delays=gDr)
