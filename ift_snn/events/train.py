"""Training on scikit-learn digits with exact spike-time gradients: ``ift-snn train --task digits --method events``.

Data: :func:`ift_snn.training.data.digits` with the discrete tasks' sample order and
split (``ds.split(0.25, seed=seed)``, as :func:`ift_snn.training.train.make_task`).
Pixel v > 0 fires once at step ``round((1 - v/16)(T - 1))``; here that step
becomes the spike time ``step * t_window / (T - 1)`` (T = 50, t_window = 4
tau_s by default): the same spikes, on a continuous axis.

Network: :class:`EventNetwork` ``[64, *hidden, 10]``, tau = 2 tau_s (closed
form), Adam. Loss ``"ttfs"`` (default): time-to-first-spike softmax
cross-entropy, tau_L = 0.5, silent output neurons placed at ``t_absent`` (a
constant, no gradient); or ``"count"``: spike-count MSE with BATS' count
pseudo-derivative. Per epoch: loss, train and test accuracy, seconds,
spikes per neuron, dropped spikes; written to ``out/metrics.json`` after
every epoch.

What is exact and what is not: the gradient of the loss with respect to the
weights is exact (IFT, reverse scan) wherever spike counts do not change.
Three training aids are *not* gradients and are documented as such:

- :func:`calibrate`: the initial weights are scaled so that hidden neurons
  fire about 4 and output neurons about 2 spikes per sample;
- ``count_floor`` (default 2): a hinge 1/2 max(0, n_floor - n)^2 on each
  output neuron's count, with BATS' count pseudo-derivative, so that output
  neurons keep firing (the cross-entropy alone pushes the 9 wrong outputs
  later on every sample until they fall silent, and silent neurons get no
  gradient);
- ``silent_push`` (default 0.01): a neuron silent on a sample receives
  ``-silent_push/B`` on its weights from that sample's active inputs (a
  dead-neuron remedy in the spirit of Mostafa 2017).

Set ``count_floor=0, silent_push=0`` for the plain exact gradient.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..optim import Adam
from .model import EventLIF, SpikeTrain
from .network import EventNetwork

__all__ = ["digits_spike_times", "train_digits", "calibrate"]


def digits_spike_times(T: int = 50, seed: int = 0, t_window: float = 4.0):
    """(train, test) as (SpikeTrain, labels) pairs: the discrete digits task's samples and split, as times."""
    from ..training import data

    ds = data.digits(T=T, seed=seed)
    train, test = ds.split(0.25, seed=seed)
    dt = t_window / (T - 1)
    return ((SpikeTrain.from_raster(train.x, dt), train.y), (SpikeTrain.from_raster(test.x, dt), test.y))


def _subset(train: SpikeTrain, idx) -> SpikeTrain:
    return SpikeTrain(train.times[idx], train.counts[idx])


def calibrate(net: EventNetwork, x: SpikeTrain, target_rates=(4.0, 2.0), iterations: int = 24) -> list[float]:
    """Data-dependent initialisation: scale each layer's weights so its neurons fire about
    ``target_rates`` spikes per sample on ``x`` (the last entry for the output layer, the first for
    every hidden layer). Geometric bisection of the scale in [1e-3, 1e3], layer by layer (each layer
    sees the calibrated output of the one below); returns the scales. Cost: ``iterations`` layer
    simulations per layer."""
    rates = list(target_rates)
    want = [rates[0]] * (len(net.weights) - 1) + [rates[-1]]
    scales = []
    for layer, target in enumerate(want):
        lo, hi, base = 1e-3, 1e3, net.weights[layer].copy()
        for _ in range(iterations):
            mid = (lo * hi) ** 0.5
            rate = net._simulate(net.models[layer], base * mid, x).out.counts.mean()
            lo, hi = (mid, hi) if rate < target else (lo, mid)
        scales.append((lo * hi) ** 0.5)
        net.weights[layer] = base * scales[-1]
        x = net._simulate(net.models[layer], net.weights[layer], x).out
    return scales


def train_digits(epochs: int = 10, seed: int = 0, out: str | Path | None = None, *, hidden=(64,),
                 batch_size: int = 32, lr: float = 2e-3, loss: str = "ttfs", tau_s: float = 1.0,
                 max_spikes: int = 8, t_window: float = 4.0, t_absent: float | None = None, tau_L: float = 0.5,
                 backend: str = "auto", limit: int | None = None, target_rates=(4.0, 2.0),
                 silent_push: float = 0.01, count_floor: float = 2.0, count_weight: float = 1.0,
                 progress: bool = True) -> dict:
    """Train an :class:`EventNetwork` ``[64, *hidden, 10]`` on digits; returns (and writes per epoch) the metrics.

    Adam on the exact gradient of the loss (module docstring), plus the
    documented training aids ``count_floor``/``count_weight`` and
    ``silent_push`` (0 switches each off) after :func:`calibrate` to
    ``target_rates``. ``limit`` keeps only the first ``limit`` train and test
    samples (tests, quick looks). ``backend``: ``"numba"`` (generated
    kernels), ``"numpy"`` (reference) or ``"auto"`` (numba when it imports).
    Cost per epoch: O(samples x neurons x (input + output spikes)).
    Raises ValueError on a non-positive ``epochs``, ``batch_size``,
    ``max_spikes`` or ``lr`` and on an unknown ``loss``.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("max_spikes", max_spikes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is out of range: expected an int >= 1")
    if not lr > 0:
        raise ValueError(f"lr={lr!r} is out of range: expected > 0")
    if loss not in ("ttfs", "count"):
        raise ValueError(f"loss={loss!r}: expected 'ttfs' or 'count'")
    if backend == "auto":
        try:
            import numba  # noqa: F401

            backend = "numba"
        except ImportError:
            backend = "numpy"
    (xtr, ytr), (xte, yte) = digits_spike_times(seed=seed, t_window=t_window)
    if limit is not None:
        xtr, ytr = _subset(xtr, slice(0, limit)), ytr[:limit]
        xte, yte = _subset(xte, slice(0, limit)), yte[:limit]
    t_absent = 3.0 * t_window if t_absent is None else t_absent
    model = EventLIF(tau=2.0 * tau_s, tau_s=tau_s, theta=1.0, max_spikes=max_spikes)
    sizes = [64, *[int(h) for h in hidden], 10]
    net = EventNetwork(sizes, model, seed=seed, backend=backend)
    rng = np.random.default_rng(seed)
    net.weights = [rng.normal(1.0, 1.0, size=(a, b)) / a for a, b in zip(sizes[:-1], sizes[1:])]
    calibrate(net, _subset(xtr, slice(0, 128)), target_rates)
    opt = Adam(lr=lr)
    kw = dict(t_absent=t_absent, tau_L=tau_L) if loss == "ttfs" else {}
    metrics = {"config": dict(task="digits", method="events", epochs=epochs, seed=seed, hidden=list(hidden),
                              batch_size=batch_size, lr=lr, loss=loss, tau=model.tau, tau_s=tau_s,
                              theta=model.theta, max_spikes=max_spikes, t_window=t_window, t_absent=t_absent,
                              backend=backend, target_rates=list(target_rates), silent_push=silent_push,
                              count_floor=count_floor,
                              count_weight=count_weight, train_samples=len(ytr), test_samples=len(yte)),
               "sizes": sizes, "epochs": [], "stopped": None}
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    try:
        _epochs(net, opt, metrics, out, epochs, rng, xtr, ytr, xte, yte, sizes, batch_size, loss, kw, count_floor,
                count_weight, silent_push, t_absent, progress)
    except KeyboardInterrupt:
        done = len(metrics["epochs"])
        metrics["stopped"] = f"interrupted (Ctrl-C) during epoch {done + 1}; kept the {done} finished epoch(s)"
        if out is not None:
            _save(out, metrics, net.weights)
        raise
    if out is not None:
        _save(out, metrics, net.weights)
    return metrics


def _save(out: Path, metrics: dict, weights) -> None:
    """metrics.json and weights.npz, each written atomically (a temporary file renamed into place, with the mode
    the user's umask gives), so that an interrupted run leaves the last complete pair."""
    from ..files import write_atomically

    write_atomically(out / "weights.npz", lambda fh: np.savez(fh, *weights))
    write_atomically(out / "metrics.json", lambda fh: fh.write(json.dumps(metrics, indent=2).encode()))


def _epochs(net, opt, metrics, out, epochs, rng, xtr, ytr, xte, yte, sizes, batch_size, loss, kw, count_floor,
            count_weight, silent_push, t_absent, progress) -> None:
    """The training epochs of :func:`train_digits` (metrics and weights saved after each)."""
    for epoch in range(epochs):
        start = time.perf_counter()
        order = rng.permutation(len(ytr))
        losses, correct, spikes, dropped = [], 0, np.zeros(len(sizes) - 1), np.zeros(len(sizes) - 1, np.int64)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            xb = _subset(xtr, idx)
            traces = net.forward(xb)
            value, g, pred = net.loss(traces[-1].out, ytr[idx], loss, **kw)
            if count_floor > 0:
                # keep every output neuron firing about count_floor spikes: the hinge 1/2 max(0, n_floor - n)^2
                # with BATS' count pseudo-derivative (documented; not part of the exact loss gradient)
                out_tr = traces[-1].out
                short = np.maximum(count_floor - out_tr.counts, 0.0)
                valid = np.arange(out_tr.times.shape[2])[None, None, :] < out_tr.counts[:, :, None]
                g = g + np.where(valid, (count_weight * short / len(idx))[:, :, None], 0.0)
            dW, _ = net.backward(traces, g)
            if silent_push > 0:
                # heuristic, not a gradient (documented): raise the weights from active inputs of silent neurons
                for l, tr in enumerate(traces):
                    silent = (tr.out.counts == 0).astype(np.float64)
                    active = (tr.inputs.counts > 0).astype(np.float64)
                    dW[l] = dW[l] - silent_push * active.T @ silent / len(idx)
            if not all(np.all(np.isfinite(d)) for d in dW) or not np.isfinite(value):
                metrics["stopped"] = f"epoch {epoch + 1}: non-finite loss or gradient"
                break
            opt.step(net.weights, dW)
            losses.append(value)
            correct += int(np.sum(pred == ytr[idx]))
            spikes += [tr.out.counts.mean() * len(idx) for tr in traces]
            dropped += [int(tr.dropped.sum()) for tr in traces]
        if metrics["stopped"]:
            break
        train_seconds = time.perf_counter() - start
        test_pred = np.concatenate([net.predict(_subset(xte, slice(i, i + 256)), loss, t_absent)
                                    for i in range(0, len(yte), 256)])
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_acc": correct / len(ytr),
               "test_acc": float(np.mean(test_pred == yte)), "seconds": train_seconds,
               "spikes_per_neuron": (spikes / len(ytr)).tolist(), "dropped_spikes": dropped.tolist()}
        metrics["epochs"].append(row)
        if progress:
            print(f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  train {row['train_acc']:.3f}  "
                  f"test {row['test_acc']:.3f}  {row['seconds']:.1f} s  spikes/neuron "
                  + " ".join(f"{v:.2f}" for v in row["spikes_per_neuron"]), flush=True)
        if out is not None:
            _save(out, metrics, net.weights)
