"""Exact event-by-event simulation of a dense layer of :class:`EventLIF` neurons (NumPy reference).

Between two input events a neuron's potential is a sum of two exponentials.
Written from the state (I, V) held at the last event time t0::

    u(t0 + s) = c (V exp(-s/tau) - I exp(-s/tau_s))
    I = sum_{t_i^j <= t0} w_i exp(-(t0 - t_i^j)/tau_s)
    V = sum_{t_i^j <= t0} w_i exp(-(t0 - t_i^j)/tau) - (dtheta/c) sum_{t_k <= t0} exp(-(t0 - t_k)/tau)

u'(s) = 0 has at most one solution, so every interval splits into at most
two monotone pieces: the earliest crossing is bracketed on the first piece
whose end is at or above theta (no crossing can be missed) and found by
Newton's method safeguarded by bisection. At ``tau = 2 tau_s`` the crossing
is the earlier root of ``(theta/c) y^2 - V y + I = 0``, ``y = exp(s/tau)``:
``y = 2 I / (V + sqrt(V^2 - 4 I theta/c))`` (docs/MATH.md section 7 in the local
frame). After a spike ``V -= dtheta/c`` and the search repeats in the same
interval.

Cost: O(E + K) sequential steps per (sample, neuron) lane for E input events
and K output spikes; lanes run in parallel (vectorised over the batch and the
neurons here, one thread or loop iteration per lane in the kernels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import EventLIF, SpikeTrain, check_weights

__all__ = ["LayerTrace", "simulate", "event_stream", "first_crossing", "membrane", "MAX_SPIKES_PER_INTERVAL"]

#: Safety net for a runaway lane (a huge weight): more crossings than this in one interval is an error.
MAX_SPIKES_PER_INTERVAL = 100_000
NEWTON_ITERATIONS = 100


def event_stream(train: SpikeTrain) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample, all input spikes merged in time order.

    Returns ``(t, channel, flat)`` of shape (B, E), E the largest number of
    spikes in a sample: times (+inf padding), channel index, and the index into
    ``times.reshape(B, C*S)``. Ties keep channel order (stable sort).
    """
    B, C, S = train.shape
    t = train.times.reshape(B, C * S)
    order = np.argsort(t, axis=1, kind="stable")
    E = int(train.counts.sum(axis=1).max()) if B and C else 0
    order = order[:, :E]
    return np.take_along_axis(t, order, axis=1), order // S, order


def _u(model: EventLIF, I, V, s):
    return model.c * (V * np.exp(-s / model.tau) - I * np.exp(-s / model.tau_s))


def _du(model: EventLIF, I, V, s):
    return model.c * (-V / model.tau * np.exp(-s / model.tau) + I / model.tau_s * np.exp(-s / model.tau_s))


def first_crossing(model: EventLIF, I: np.ndarray, V: np.ndarray, L: np.ndarray, *,
                   closed: bool | None = None) -> np.ndarray:
    """Earliest s in (0, L] with c (V e^{-s/tau} - I e^{-s/tau_s}) = theta, NaN where there is none.

    Precondition: u(0) < theta (true after a reset and at every event).
    ``closed`` forces the quadratic (needs tau = 2 tau_s) or the bracketed
    finder; default: the model's choice. O(1) closed form, O(log) Newton steps.
    """
    closed = model.use_closed_form if closed is None else closed
    I, V, L = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (I, V, L)))
    theta = model.theta
    if closed:
        if not model.closed_form:
            raise ValueError(f"the closed form needs tau == 2 tau_s; got tau={model.tau}, tau_s={model.tau_s}")
        k = theta / model.c
        disc = V * V - 4.0 * I * k
        x = np.sqrt(np.maximum(disc, 0.0))
        den = V + x
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(den > 0, 2.0 * I / np.where(den > 0, den, 1.0), -1.0)
            s = model.tau * np.log(np.where(y > 1.0, y, 2.0))
        ok = (disc >= 0) & (den > 0) & (y > 1.0) & (s <= L)
        return np.where(ok, s, np.nan)

    tau, tau_s = model.tau, model.tau_s
    # the one critical point: (I/tau_s) e^{-s/tau_s} = (V/tau) e^{-s/tau}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (V * tau_s) / (I * tau)
        s_crit = np.log(np.where(ratio > 0, ratio, 1.0)) / (1.0 / tau - 1.0 / tau_s)
    has_crit = (I != 0) & (ratio > 0) & (s_crit > 0) & (s_crit < L)
    end1 = np.where(has_crit, s_crit, L)
    f1 = _u(model, I, V, end1) - theta
    in1 = f1 >= 0
    f2 = _u(model, I, V, L) - theta
    in2 = ~in1 & has_crit & (f2 >= 0)
    found = in1 | in2
    out = np.full(I.shape, np.nan)
    if not found.any():
        return out
    idx = np.nonzero(found)
    Ii, Vi = I[idx], V[idx]
    lo = np.where(in1[idx], 0.0, s_crit[idx])
    hi = np.where(in1[idx], end1[idx], L[idx])
    x = 0.5 * (lo + hi)
    conv = np.zeros(x.shape, bool)
    for _ in range(NEWTON_ITERATIONS):
        f = _u(model, Ii, Vi, x) - theta
        lo = np.where(f < 0, x, lo)
        hi = np.where(f < 0, hi, x)
        d = _du(model, Ii, Vi, x)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = x - f / d
        good = (d > 0) & (newton >= lo) & (newton <= hi)
        nxt = np.where(good, newton, 0.5 * (lo + hi))
        # converged lanes stay put: a Newton step onto the bracket's end must not become a bisection
        conv |= (f == 0) | (np.abs(nxt - x) <= 4e-16 * np.abs(x)) | (hi - lo <= 4e-16 * hi)
        x = np.where(conv, x, nxt)
        if conv.all():
            break
    out[idx] = x
    return out


@dataclass(frozen=True)
class LayerTrace:
    """What the backward pass of one layer needs.

    ``out``: output spikes (B, M, max_spikes) with ``out.dropped`` the crossings
    beyond the cap; ``udot``: du/dt at each recorded spike (just before it);
    ``interval``: how many input events precede each spike; ``t_in``, ``ch_in``,
    ``flat_in``: the merged input stream (see :func:`event_stream`).
    """

    model: EventLIF
    w: np.ndarray
    inputs: SpikeTrain
    out: SpikeTrain
    udot: np.ndarray
    interval: np.ndarray
    t_in: np.ndarray
    ch_in: np.ndarray
    flat_in: np.ndarray

    @property
    def dropped(self) -> np.ndarray:
        return self.out.dropped


def simulate(model: EventLIF, w: np.ndarray, inputs: SpikeTrain, *, closed: bool | None = None) -> LayerTrace:
    """Output spikes of a dense layer ``u_m = sum_i w[i, m] PSP(inputs_i) - resets``; exact, no time grid.

    Formula: see the module docstring. Cost O(B M (E + K)) with E input and K
    output spikes per lane. Preconditions: ``w`` finite with shape (C, M),
    ``inputs`` a valid :class:`SpikeTrain` with C channels.
    """
    if not isinstance(model, EventLIF):
        raise TypeError(f"model is a {type(model).__name__}; expected ift_snn.events.EventLIF")
    if not isinstance(inputs, SpikeTrain):
        raise TypeError(f"inputs is a {type(inputs).__name__}; expected ift_snn.events.SpikeTrain")
    B, C, _ = inputs.shape
    w = check_weights(w, C)
    M = w.shape[1]
    S = model.max_spikes
    t_ev, ch, flat = event_stream(inputs)
    E = t_ev.shape[1]
    n = B * M
    I = np.zeros(n)
    V = np.zeros(n)
    t0 = np.zeros(n)
    times = np.full((n, S), np.inf)
    udot = np.zeros((n, S))
    interval = np.full((n, S), -1, np.int64)
    count = np.zeros(n, np.int64)
    dropped = np.zeros(n, np.int64)
    lane = np.arange(n)
    reset = model.dtheta / model.c
    for e in range(E + 1):
        t1 = np.repeat(t_ev[:, e], M) if e < E else np.full(n, np.inf)
        active = lane
        for _ in range(MAX_SPIKES_PER_INTERVAL):
            s = first_crossing(model, I[active], V[active], t1[active] - t0[active], closed=closed)
            hit = ~np.isnan(s)
            if not hit.any():
                break
            active, s = active[hit], s[hit]
            eI, eV = np.exp(-s / model.tau_s), np.exp(-s / model.tau)
            d = model.c * (-V[active] / model.tau * eV + I[active] / model.tau_s * eI)
            tk = t0[active] + s
            rec = count[active] < S
            r = active[rec]
            times[r, count[r]] = tk[rec]
            udot[r, count[r]] = d[rec]
            interval[r, count[r]] = e
            count[r] += 1
            dropped[active[~rec]] += 1
            I[active] *= eI
            V[active] = V[active] * eV - reset
            t0[active] = tk
        else:  # pragma: no cover - needs an absurd weight
            raise ValueError(f"more than {MAX_SPIKES_PER_INTERVAL} spikes between two input events: "
                             f"weights too large (max |w| = {np.max(np.abs(w))!r})")
        if e < E:
            live = np.isfinite(t1)
            dt = np.where(live, t1 - t0, 0.0)
            I = I * np.exp(-dt / model.tau_s)
            V = V * np.exp(-dt / model.tau)
            add = w[ch[:, e], :].reshape(n)  # row of the event's channel, per sample
            I = np.where(live, I + add, I)
            V = np.where(live, V + add, V)
            t0 = np.where(live, t1, t0)
    out = SpikeTrain(times.reshape(B, M, S), count.reshape(B, M), dropped.reshape(B, M))
    return LayerTrace(model, w, inputs, out, udot.reshape(B, M, S), interval.reshape(B, M, S), t_ev, ch, flat)


def membrane(model: EventLIF, w: np.ndarray, inputs: SpikeTrain, out: SpikeTrain, t: np.ndarray) -> np.ndarray:
    """u at times ``t`` (B, T) by the global sum of docs/MATH.md section 7 (independent of :func:`simulate`).

    Returns (B, M, T). Spikes at exactly ``t`` are not yet counted (u is left-continuous).
    Cost O(B M T (C S + K)).
    """
    t = np.asarray(t, dtype=np.float64)
    ti = inputs.times[:, :, :, None]  # (B, C, S, 1)
    lag = t[:, None, None, :] - ti
    with np.errstate(invalid="ignore", over="ignore"):
        K = np.where(lag > 0, np.exp(-np.where(lag > 0, lag, 0) / model.tau)
                     - np.exp(-np.where(lag > 0, lag, 0) / model.tau_s), 0.0)
    psp = K.sum(axis=2)  # (B, C, T)
    u = model.c * np.einsum("bct,cm->bmt", psp, w)
    lag_o = t[:, None, None, :] - out.times[:, :, :, None]  # (B, M, K, T)
    with np.errstate(invalid="ignore", over="ignore"):
        R = np.where(lag_o > 0, np.exp(-np.where(lag_o > 0, lag_o, 0) / model.tau), 0.0).sum(axis=2)
    return u - model.dtheta * R
