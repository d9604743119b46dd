"""Losses on output spike times, with dL/d(spike times) for :func:`layer_backward`.

- :func:`ttfs_cross_entropy`: time-to-first-spike softmax cross-entropy.
  Logits ``-t_first / tau_L``; ``L = mean_b -log softmax(-t_first/tau_L)[label]``;
  ``dL/dt_first = (onehot - softmax) / (tau_L B)`` (docs/MATH.md section 7). An output
  neuron with no spike has no first spike: by default that is an error
  (ValueError naming the sample and neuron). With ``t_absent=T`` such a neuron
  is treated as firing at ``T`` (a constant: no gradient reaches it).
- :func:`count_mse`: ``L = mean_b 1/2 sum_m (n_m - n*_m)^2`` on spike counts.
  Counts are piecewise constant, so their true derivative is 0 almost
  everywhere. Training uses BATS' *count pseudo-derivative* instead (Bacho and
  Chu): every recorded spike of neuron m receives ``dL/dt_k := (n*_m - n_m)/B``
  (too few spikes: move them earlier, making room for more). It is a
  pseudo-derivative, not the derivative of L; what is exact is its
  propagation through the network.
"""

from __future__ import annotations

import numpy as np

from .model import SpikeTrain

__all__ = ["ttfs_cross_entropy", "count_mse", "first_spike_times"]


def _labels(labels, B: int, M: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (B,) or y.dtype.kind not in "iu":
        raise ValueError(f"labels has shape {y.shape} and dtype {y.dtype}; expected ({B},) integers")
    if B and (y.min() < 0 or y.max() >= M):
        raise ValueError(f"labels span [{y.min()}, {y.max()}]; expected 0..{M - 1} (one output neuron per class)")
    return y.astype(np.int64)


def first_spike_times(out: SpikeTrain, t_absent: float | None = None) -> np.ndarray:
    """(B, M) first spike per neuron; silent neurons get ``t_absent`` or raise ValueError."""
    silent = out.counts == 0
    if silent.any() and t_absent is None:
        b, m = np.argwhere(silent)[0]
        raise ValueError(f"output neuron {m} of sample {b} has no spike ({int(silent.sum())} silent output "
                         "neurons in all): the time-to-first-spike loss needs a first spike; pass "
                         "t_absent=T to treat silent neurons as firing at T")
    if t_absent is not None and not np.isfinite(t_absent):
        raise ValueError(f"t_absent={t_absent!r}: expected a finite time")
    return np.where(silent, t_absent if t_absent is not None else 0.0, out.times[:, :, 0])


def ttfs_cross_entropy(out: SpikeTrain, labels, *, tau_L: float = 1.0,
                       t_absent: float | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """(loss, dL/d(output times) shaped like ``out.times``, predicted class = earliest neuron)."""
    if not tau_L > 0:
        raise ValueError(f"tau_L={tau_L!r} is out of range: expected > 0")
    B, M, _ = out.shape
    y = _labels(labels, B, M)
    t = first_spike_times(out, t_absent)
    z = -t / tau_L
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.mean(np.log(p[np.arange(B), y])))
    onehot = np.zeros((B, M))
    onehot[np.arange(B), y] = 1.0
    g = np.zeros(out.times.shape)
    g[:, :, 0] = np.where(out.counts > 0, (onehot - p) / (tau_L * B), 0.0)
    return loss, g, np.argmin(t, axis=1)


def count_mse(out: SpikeTrain, targets) -> tuple[float, np.ndarray, np.ndarray]:
    """(loss, BATS count pseudo-derivative on every recorded spike, predicted class = most spikes)."""
    B, M, S = out.shape
    n_star = np.asarray(targets, dtype=np.float64)
    if n_star.shape != (B, M) or not np.all(np.isfinite(n_star)):
        raise ValueError(f"targets has shape {n_star.shape}; expected ({B}, {M}) finite target counts")
    n = out.counts.astype(np.float64)
    loss = float(0.5 * np.mean(np.sum((n - n_star) ** 2, axis=1)))
    valid = np.arange(S)[None, None, :] < out.counts[:, :, None]
    g = np.where(valid, ((n_star - n) / B)[:, :, None], 0.0)
    return loss, g, np.argmax(out.counts, axis=1)
