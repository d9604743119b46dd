"""The continuous-time neuron (current-based LIF, subtractive reset) and spike trains as arrays.

Membrane potential of one neuron with input weights ``w_i`` (docs/MATH.md section 7)::

    u(t) = c sum_i w_i sum_{t_i^j < t} K(t - t_i^j)  -  dtheta sum_{t_k < t} exp(-(t - t_k)/tau)
    K(s) = exp(-s/tau) - exp(-s/tau_s),        c = tau tau_s / (tau - tau_s)

A spike is emitted at every upward crossing u(t_k) = theta; it lowers u by
``dtheta`` (subtractive reset, continuous in the potential's derivative
otherwise). ``c`` makes ``c K`` positive for either ordering of tau and
tau_s, and equals ``tau`` at ``tau = 2 tau_s``: there the model is exactly
the one of docs/MATH.md section 7 (Bacho and Chu), whose spike times solve a
quadratic in ``z = exp(t/tau)``. ``tau == tau_s`` is refused (K would
vanish; the limit is the alpha kernel, not modelled here).

Spike trains are padded arrays: ``times`` of shape (batch, channels, slots),
each channel's times sorted ascending in its first ``counts[b, c]`` slots and
``+inf`` in the rest. Times are non-negative and finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["EventLIF", "SpikeTrain", "check_weights"]


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}={value!r}: expected a real number")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} is out of range: expected a finite number > 0")
    return value


@dataclass(frozen=True)
class EventLIF:
    """Current-based LIF in continuous time: ``tau`` (membrane), ``tau_s`` (synapse), threshold, reset.

    ``max_spikes`` caps the spikes recorded per neuron; later crossings are
    still simulated (they only count) and reported as ``dropped`` on the
    result, never silently lost. ``solver``: ``"auto"`` uses the closed form
    when ``tau == 2 tau_s`` and the bracketed root finder otherwise;
    ``"closed"`` insists on the closed form, ``"bracketed"`` on the finder.
    """

    tau: float = 2.0
    tau_s: float = 1.0
    theta: float = 1.0
    dtheta: float | None = None
    max_spikes: int = 8
    solver: str = "auto"
    _c: float = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        tau = _positive("tau", self.tau)
        tau_s = _positive("tau_s", self.tau_s)
        if abs(tau - tau_s) <= 1e-9 * max(tau, tau_s):
            raise ValueError(f"tau={tau!r} equals tau_s={tau_s!r}: expected tau != tau_s "
                             "(the PSP K(s) = exp(-s/tau) - exp(-s/tau_s) would vanish)")
        theta = _positive("theta", self.theta)
        dtheta = theta if self.dtheta is None else _positive("dtheta", self.dtheta)
        if isinstance(self.max_spikes, bool) or not isinstance(self.max_spikes, (int, np.integer)):
            raise TypeError(f"max_spikes={self.max_spikes!r}: expected an int >= 1")
        if self.max_spikes < 1:
            raise ValueError(f"max_spikes={self.max_spikes!r} is out of range: expected an int >= 1")
        if self.solver not in ("auto", "closed", "bracketed"):
            raise ValueError(f"solver={self.solver!r}: expected 'auto', 'closed' or 'bracketed'")
        if self.solver == "closed" and not self.closed_form:
            raise ValueError(f"solver='closed' needs tau == 2 tau_s; got tau={tau!r}, tau_s={tau_s!r}")
        for name, value in (("tau", tau), ("tau_s", tau_s), ("theta", theta), ("dtheta", dtheta),
                            ("max_spikes", int(self.max_spikes))):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_c", tau * tau_s / (tau - tau_s))

    @property
    def c(self) -> float:
        """PSP scale ``tau tau_s / (tau - tau_s)`` (= tau at tau = 2 tau_s)."""
        return self._c

    @property
    def closed_form(self) -> bool:
        """True when ``tau == 2 tau_s`` (to 1e-12 relative): spike times solve a quadratic."""
        return abs(self.tau - 2.0 * self.tau_s) <= 1e-12 * self.tau

    @property
    def use_closed_form(self) -> bool:
        return self.solver == "closed" or (self.solver == "auto" and self.closed_form)

    def with_(self, **changes) -> EventLIF:
        kw = dict(tau=self.tau, tau_s=self.tau_s, theta=self.theta, dtheta=self.dtheta,
                  max_spikes=self.max_spikes, solver=self.solver)
        kw.update(changes)
        return EventLIF(**kw)


def check_weights(w: object, n_in: int | None = None, name: str = "w") -> np.ndarray:
    """``w`` as a finite float64 array of shape (n_in, n_out)."""
    if not isinstance(w, np.ndarray):
        raise TypeError(f"{name} is a {type(w).__name__}; expected a numpy array of shape (n_in, n_out)")
    if w.ndim != 2:
        raise ValueError(f"{name} has shape {w.shape}; expected (n_in, n_out)")
    if w.dtype.kind not in "fiu":
        raise TypeError(f"{name} has dtype {w.dtype}; expected real numbers")
    w = np.asarray(w, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        bad = np.argwhere(~np.isfinite(w))[0]
        raise ValueError(f"{name}[{bad[0]}, {bad[1]}] = {float(w[tuple(bad)])!r}: expected finite weights")
    if n_in is not None and w.shape[0] != n_in:
        raise ValueError(f"{name} has shape {w.shape}; expected {n_in} rows, one per input channel")
    return w


@dataclass(frozen=True)
class SpikeTrain:
    """Padded spike times ``times`` (B, C, S), float64, +inf beyond ``counts`` (B, C).

    Preconditions (checked): in every channel the first ``counts`` times are
    finite, >= 0 and non-decreasing; the remaining slots are +inf. ``dropped``
    (B, C) counts the spikes a ``max_spikes`` cap left out (0 for inputs).
    """

    times: np.ndarray
    counts: np.ndarray
    dropped: np.ndarray | None = None

    def __post_init__(self):
        times, counts = self.times, self.counts
        if not isinstance(times, np.ndarray) or not isinstance(counts, np.ndarray):
            raise TypeError(f"times and counts must be numpy arrays; got {type(times).__name__} and "
                            f"{type(counts).__name__}")
        if times.ndim != 3:
            raise ValueError(f"times has shape {times.shape}; expected (batch, channels, slots)")
        if counts.shape != times.shape[:2]:
            raise ValueError(f"counts has shape {counts.shape}; expected {times.shape[:2]} (batch, channels)")
        if times.dtype.kind != "f":
            raise TypeError(f"times has dtype {times.dtype}; expected floating point (padding is +inf)")
        if counts.dtype.kind not in "iu":
            raise TypeError(f"counts has dtype {counts.dtype}; expected integers")
        times = np.asarray(times, dtype=np.float64)
        counts = counts.astype(np.int64)
        S = times.shape[2]
        if counts.size and (counts.min() < 0 or counts.max() > S):
            raise ValueError(f"counts span [{counts.min()}, {counts.max()}]; expected 0..{S} (the number of slots)")
        valid = np.arange(S)[None, None, :] < counts[:, :, None]
        if np.isnan(times).any():
            b, c, k = np.argwhere(np.isnan(times))[0]
            raise ValueError(f"times[{b}, {c}, {k}] is NaN: expected finite spike times >= 0 (padding +inf)")
        bad = valid & ~(np.isfinite(times) & (times >= 0))
        if bad.any():
            b, c, k = np.argwhere(bad)[0]
            raise ValueError(f"times[{b}, {c}, {k}] = {float(times[b, c, k])!r}: expected a finite spike time >= 0")
        if (~valid & (times != np.inf)).any():
            b, c, k = np.argwhere(~valid & (times != np.inf))[0]
            raise ValueError(f"times[{b}, {c}, {k}] = {float(times[b, c, k])!r} lies beyond counts[{b}, {c}] = "
                             f"{counts[b, c]}: expected +inf padding")
        if S > 1:
            with np.errstate(invalid="ignore"):  # inf - inf in the padding
                dec = valid[:, :, 1:] & (np.diff(times, axis=2) < 0)
            if dec.any():
                b, c, k = np.argwhere(dec)[0]
                raise ValueError(f"times[{b}, {c}] is not sorted: {float(times[b, c, k])!r} then "
                                 f"{float(times[b, c, k + 1])!r}; "
                                 "expected each channel's spike times in ascending order")
        dropped = np.zeros(counts.shape, np.int64) if self.dropped is None else np.asarray(self.dropped, np.int64)
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "dropped", dropped)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.times.shape

    @classmethod
    def from_lists(cls, trains: list[list[list[float]]]) -> SpikeTrain:
        """``trains[b][c]`` = the spike times of channel c in sample b (any length, sorted)."""
        B = len(trains)
        C = len(trains[0]) if B else 0
        S = max([len(ts) for sample in trains for ts in sample] + [1])
        times = np.full((B, C, S), np.inf)
        counts = np.zeros((B, C), np.int64)
        for b, sample in enumerate(trains):
            if len(sample) != C:
                raise ValueError(f"sample {b} has {len(sample)} channels; expected {C}")
            for c, ts in enumerate(sample):
                times[b, c, :len(ts)] = ts
                counts[b, c] = len(ts)
        return cls(times, counts)

    @classmethod
    def from_raster(cls, x: np.ndarray, dt: float = 1.0) -> SpikeTrain:
        """A (B, T, C) 0/1 raster (at most one spike per step) -> spike times ``n dt``."""
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"x has shape {x.shape}; expected (batch, time, channels)")
        dt = _positive("dt", dt)
        on = np.transpose(x, (0, 2, 1)) > 0  # (B, C, T)
        counts = on.sum(axis=2).astype(np.int64)
        S = max(int(counts.max()) if counts.size else 0, 1)
        times = np.full(on.shape[:2] + (S,), np.inf)
        b, c, n = np.nonzero(on)  # row-major order: n ascending within (b, c)
        slot = np.zeros_like(n)
        if n.size:
            first = np.r_[True, (b[1:] != b[:-1]) | (c[1:] != c[:-1])]
            start = np.maximum.accumulate(np.where(first, np.arange(n.size), 0))
            slot = np.arange(n.size) - start
        times[b, c, slot] = n * dt
        return cls(times, counts)
