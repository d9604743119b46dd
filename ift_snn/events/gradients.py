"""Exact spike-time gradients of a layer by the Implicit Function Theorem (docs/MATH.md section 7).

Invariant: u(t_k; w, t_in, t_1..t_{k-1}) = theta at every recorded spike. The IFT gives

    dt_k/dx = -(du/dx)(t_k) / u'(t_k)            for x = w_i, t_i^j, and own earlier spikes t_m
    du(t_k)/dw_i   = c sum_{t_i^j < t_k} K(t_k - t_i^j)
    du(t_k)/dt_i^j = -c w_i K'(t_k - t_i^j),       K'(s) = -e^{-s/tau}/tau + e^{-s/tau_s}/tau_s
    du(t_k)/dt_m   = -(dtheta/tau) e^{-(t_k - t_m)/tau}     (the reset of spike m < k)

Adjoint (g_k = dL/dt_k given; lambda_k = total dL/dt_k / u'(t_k)):

    total_k  = g_k + (dtheta/tau) sum_{n>k} lambda_n e^{-(t_n - t_k)/tau}
    dL/dw_i  = -c sum_j sum_{t_k > t_i^j} lambda_k K(t_k - t_i^j)
    dL/dt_i^j = c w_i sum_{t_k > t_i^j} lambda_k K'(t_k - t_i^j)

All three sums are exponentials in the later spike times, so one reverse scan
per (sample, neuron) over its merged input events and own spikes, holding
P_tau = sum lambda_k e^{-(t_k - t)/tau} and P_s (the same with tau_s),
computes them. At tau = 2 tau_s this is docs/MATH.md section 7's scan (C = P_tau,
u'(t_k) = x_k / z_k). ``reset_term=False`` drops the own-spike term (wrong:
for the tests that show it).

Cost: O(E + K) per lane, like the forward. Preconditions: ``trace`` from
:func:`simulate`; ``grad_times`` finite, shaped like ``trace.out.times``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .simulate import LayerTrace

__all__ = ["LayerGradients", "layer_backward"]


@dataclass(frozen=True)
class LayerGradients:
    """``w``: dL/dW (C, M); ``inputs``: dL/d(input times) (B, C, S_in), 0 on padding;
    ``total``: total dL/dt_k of the layer's own spikes (B, M, S), through later spikes."""

    w: np.ndarray
    inputs: np.ndarray
    total: np.ndarray


def _check_grad(trace: LayerTrace, grad_times) -> np.ndarray:
    if not isinstance(grad_times, np.ndarray):
        raise TypeError(f"grad_times is a {type(grad_times).__name__}; expected a numpy array")
    if grad_times.shape != trace.out.times.shape:
        raise ValueError(f"grad_times has shape {grad_times.shape}; expected {trace.out.times.shape} "
                         "(batch, neurons, max_spikes), like the layer's output times")
    g = np.asarray(grad_times, dtype=np.float64)
    valid = np.arange(g.shape[2])[None, None, :] < trace.out.counts[:, :, None]
    g = np.where(valid, g, 0.0)
    if not np.all(np.isfinite(g)):
        b, m, k = np.argwhere(~np.isfinite(g))[0]
        raise ValueError(f"grad_times[{b}, {m}, {k}] = {float(g[b, m, k])!r}: expected finite gradients at spikes")
    return g


def layer_backward(trace: LayerTrace, grad_times: np.ndarray, *, reset_term: bool = True) -> LayerGradients:
    """dL/dW and dL/d(input times) from dL/d(output times) by the reverse scan (module docstring)."""
    g = _check_grad(trace, grad_times)
    model, w = trace.model, trace.w
    tau, tau_s, c = model.tau, model.tau_s, model.c
    B, M, S = trace.out.times.shape
    C, S_in = trace.inputs.shape[1], trace.inputs.shape[2]
    n = B * M
    times = trace.out.times.reshape(n, S)
    udot = trace.udot.reshape(n, S)
    interval = trace.interval.reshape(n, S)
    gl = g.reshape(n, S)
    total = np.zeros((n, S))
    p = trace.out.counts.reshape(n) - 1
    P_tau = np.zeros(n)
    P_s = np.zeros(n)
    tp = np.full(n, np.inf)
    t_ev, ch, flat = trace.t_in, trace.ch_in, trace.flat_in
    E = t_ev.shape[1]
    dW = np.zeros((C, M))
    d_in = np.zeros((B, C * S_in))
    k_reset = model.dtheta / tau if reset_term else 0.0
    m_idx = np.tile(np.arange(M), B)

    def decay(sel, t):
        lag = np.where(np.isfinite(tp[sel]), tp[sel] - t, 0.0)
        P_tau[sel] *= np.exp(-lag / tau)
        P_s[sel] *= np.exp(-lag / tau_s)
        tp[sel] = t

    for e in range(E, -1, -1):
        while True:
            cur = np.where(p >= 0, interval[np.arange(n), np.maximum(p, 0)], -2)
            sel = np.nonzero(cur == e)[0]
            if sel.size == 0:
                break
            k = p[sel]
            tk = times[sel, k]
            decay(sel, tk)
            tot = gl[sel, k] + k_reset * P_tau[sel]
            total[sel, k] = tot
            lam = tot / udot[sel, k]
            P_tau[sel] += lam
            P_s[sel] += lam
            p[sel] -= 1
        if e == 0:
            break
        te = np.repeat(t_ev[:, e - 1], M)
        live = np.nonzero(np.isfinite(te))[0]
        if live.size == 0:
            continue
        decay(live, te[live])
        che = np.repeat(ch[:, e - 1], M)[live]
        np.add.at(dW, (che, m_idx[live]), -c * (P_tau[live] - P_s[live]))
        contrib = np.zeros(n)
        contrib[live] = c * w[che, m_idx[live]] * (-P_tau[live] / tau + P_s[live] / tau_s)
        per_sample = contrib.reshape(B, M).sum(axis=1)
        rows = np.nonzero(np.isfinite(t_ev[:, e - 1]))[0]
        d_in[rows, flat[rows, e - 1]] += per_sample[rows]
    return LayerGradients(dW, d_in.reshape(B, C, S_in), total.reshape(B, M, S))
