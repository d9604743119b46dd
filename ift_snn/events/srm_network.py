"""Networks of continuous-time layers of any neuron, trained on spike times with exact gradients.

:class:`SRMNetwork` stacks dense layers of one :class:`~ift_snn.events.srm.EventSRM`
model, ``sizes = [C, H_1, ..., K]``; each layer has weights W (n_in, n_out),
optionally learnable synaptic delays D (n_in, n_out) and, for hidden layers,
a recurrent connection V (H, H) with learnable delays Dr (H, H) > 0
(docs/MATH.md section 7). Forward: :func:`simulate_srm` layer by layer (the
output times of one layer are the input times of the next). Backward:
:func:`backward_srm` from the last layer down; the input-time gradient of a
layer is the dL/d(spike times) of the layer below. Exact wherever spike
counts do not change.

Delays are kept in range by projection after every optimiser step
(D >= 0, Dr >= ``min_recurrent_delay``): the projected gradient method, not a
gradient of the clamp.

:func:`train_srm` trains it on (SpikeTrain, labels) pairs with the
time-to-first-spike cross-entropy of :mod:`ift_snn.events.losses` and the two
documented training aids of :mod:`ift_snn.events.train` (a spike-count floor
on the outputs and a push for silent neurons; neither is a gradient).
:func:`shd_spike_times` reads an SHD-format file (the real SHD, or the
SHD-like task of :mod:`ift_snn.training.shd_like`) as spike times, not bins.

Cost per batch: O(sum over layers of B M (E + K)) for E input and K output
spikes per neuron; a recurrent layer adds O(M) per event of a sample.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..optim import Adam
from .losses import ttfs_cross_entropy
from .model import SpikeTrain, check_weights
from .srm import EventSRM, ReadoutTrace, SRMTrace, backward_srm, readout_backward, readout_max, simulate_srm

__all__ = ["SRMNetwork", "SRMTrainConfig", "train_srm", "shd_spike_times", "subset"]


def subset(x: SpikeTrain, idx) -> SpikeTrain:
    """Samples ``idx`` of a SpikeTrain (slots trimmed to the largest count among them)."""
    times, counts = x.times[idx], x.counts[idx]
    S = max(int(counts.max()) if counts.size else 0, 1)
    return SpikeTrain(np.ascontiguousarray(times[:, :, :S]), counts)


def shd_spike_times(path, n_channels: int = 64, t_max: float = 1.0, time_unit: float = 0.01,
                    max_samples: int | None = None) -> tuple[SpikeTrain, np.ndarray, int]:
    """An SHD-format file as (SpikeTrain of times in units of ``time_unit`` seconds, labels, n_classes).

    Units go to channel ``u * n_channels // 700`` (as :func:`ift_snn.training.data.load_shd` bins them);
    spikes at or after ``t_max`` seconds are dropped. Reading checks everything ``load_shd`` checks.
    """
    from ..training.data import load_shd_times

    if not (isinstance(time_unit, (int, float)) and np.isfinite(time_unit) and time_unit > 0):
        raise ValueError(f"time_unit={time_unit!r}: expected a finite number of seconds > 0")
    samples, labels, n_classes = load_shd_times(path, n_channels=n_channels, t_max=t_max, max_samples=max_samples)
    B = len(samples)
    counts = np.zeros((B, n_channels), np.int64)
    for b, (_, c) in enumerate(samples):
        counts[b] = np.bincount(c, minlength=n_channels)
    S = max(int(counts.max()) if counts.size else 0, 1)
    times = np.full((B, n_channels, S), np.inf)
    for b, (t, c) in enumerate(samples):
        order = np.lexsort((t, c))
        t, c = t[order] / time_unit, c[order]
        first = np.searchsorted(c, np.arange(n_channels))
        slot = np.arange(c.size) - first[c]
        times[b, c, slot] = t
    return SpikeTrain(times, counts), labels, n_classes


class SRMNetwork:
    """Dense layers of ``model`` neurons with optional learned delays and recurrent hidden layers (module doc)."""

    def __init__(self, sizes: list[int], model: EventSRM, *, delays: bool = False, recurrent: bool = False,
                 max_delay: float = 5.0, min_recurrent_delay: float = 0.5, seed: int = 0,
                 recurrent_std: float = 0.1, readout: str = "ttfs", t_end: float | None = None):
        if len(sizes) < 2 or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in sizes):
            raise ValueError(f"sizes={sizes!r}: expected at least [n_in, n_out] with positive ints")
        if not isinstance(model, EventSRM):
            raise TypeError(f"model is a {type(model).__name__}; expected an EventSRM")
        for name, v, low in (("max_delay", max_delay, 0.0), ("min_recurrent_delay", min_recurrent_delay, 0.0)):
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= low) or \
                    (name == "min_recurrent_delay" and v <= 0):
                raise ValueError(f"{name}={v!r}: expected a finite number {'>' if name != 'max_delay' else '>='} 0")
        if readout not in ("ttfs", "max"):
            raise ValueError(f"readout={readout!r}: expected 'ttfs' (spiking outputs, first-spike loss) or 'max' "
                             "(non-spiking outputs, the max over time of their potential)")
        if readout == "max" and not (isinstance(t_end, (int, float)) and np.isfinite(t_end) and t_end > 0):
            raise ValueError(f"t_end={t_end!r}: the max readout needs the end of the window, a number > 0")
        self.readout, self.t_end = readout, t_end
        self.sizes = [int(k) for k in sizes]
        self.model = model
        self.min_recurrent_delay = float(min_recurrent_delay)
        rng = np.random.default_rng(seed)
        self.layers: list[dict[str, np.ndarray]] = []
        for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            last = i == len(self.sizes) - 2
            layer = {"w": rng.normal(0.0, 1.0, size=(a, b)) / np.sqrt(a) if last and readout == "max"
                     else rng.normal(1.0, 1.0, size=(a, b)) / a}
            if delays:
                layer["delays"] = rng.uniform(0.0, max_delay, size=(a, b))
            if recurrent and i < len(self.sizes) - 2:
                layer["recurrent"] = rng.normal(0.0, recurrent_std, size=(b, b))
                layer["recurrent_delays"] = min_recurrent_delay + rng.uniform(0.0, max_delay, size=(b, b))
            self.layers.append(layer)

    def parameters(self) -> list[np.ndarray]:
        """Every trained array, layer by layer in the order w, delays, recurrent, recurrent_delays."""
        return [arr for layer in self.layers for arr in layer.values()]

    def forward(self, x: SpikeTrain) -> list[SRMTrace]:
        if not isinstance(x, SpikeTrain):
            raise TypeError(f"x is a {type(x).__name__}; expected ift_snn.events.SpikeTrain")
        if x.shape[1] != self.sizes[0]:
            raise ValueError(f"x has {x.shape[1]} channels; expected {self.sizes[0]}")
        traces = []
        for i, layer in enumerate(self.layers):
            check_weights(layer["w"])
            if self.readout == "max" and i == len(self.layers) - 1:
                traces.append(readout_max(self.model, layer["w"], x, self.t_end, delays=layer.get("delays")))
                break
            traces.append(simulate_srm(self.model, layer["w"], x, **{k: v for k, v in layer.items() if k != "w"}))
            x = traces[-1].out
        return traces

    def backward(self, traces: list[SRMTrace | ReadoutTrace], grad_out: np.ndarray) -> list[np.ndarray]:
        """dL/d(every parameter), in the order of :meth:`parameters`; ``grad_out`` is dL/d(output times)
        (B, K, S), or dL/du_max (B, K) with the max readout."""
        per_layer = []
        g = grad_out
        for trace, layer in zip(reversed(traces), reversed(self.layers)):
            gr = readout_backward(trace, g) if isinstance(trace, ReadoutTrace) else backward_srm(trace, g)
            per_layer.append([getattr(gr, k) for k in layer])
            g = gr.inputs
        return [arr for grads in reversed(per_layer) for arr in grads]

    def project(self) -> None:
        """Delays back into range after an optimiser step: D >= 0, Dr >= min_recurrent_delay."""
        for layer in self.layers:
            if "delays" in layer:
                np.maximum(layer["delays"], 0.0, out=layer["delays"])
            if "recurrent_delays" in layer:
                np.maximum(layer["recurrent_delays"], self.min_recurrent_delay, out=layer["recurrent_delays"])

    def predict(self, x: SpikeTrain, t_absent: float) -> np.ndarray:
        if self.readout == "max":
            return np.argmax(self.forward(x)[-1].u_max, axis=1)
        out = self.forward(x)[-1].out
        return np.argmin(np.where(out.counts > 0, out.times[:, :, 0], t_absent), axis=1)

    def calibrate(self, x: SpikeTrain, rates=(4.0, 2.0), iterations: int = 20) -> list[float]:
        """Scale each layer's W (geometric bisection in [1e-3, 1e3]) so its neurons fire about ``rates`` spikes
        per sample on ``x`` (first entry: hidden layers, last: the output layer). A data-dependent
        initialisation, not training."""
        want = [rates[0]] * (len(self.layers) - 1) + [rates[-1]]
        scales = []
        spiking = self.layers[:-1] if self.readout == "max" else self.layers
        for layer, target in zip(spiking, want):
            base, lo, hi = layer["w"].copy(), 1e-3, 1e3
            for _ in range(iterations):
                mid = (lo * hi) ** 0.5
                layer["w"] = base * mid
                rate = self._layer(layer, x).out.counts.mean()
                lo, hi = (mid, hi) if rate < target else (lo, mid)
            layer["w"] = base * (lo * hi) ** 0.5
            scales.append((lo * hi) ** 0.5)
            x = self._layer(layer, x).out
        return scales

    def _layer(self, layer, x):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # dropped spikes while searching the scale
            return simulate_srm(self.model, layer["w"], x, **{k: v for k, v in layer.items() if k != "w"})


def _loss(net: SRMNetwork, traces, labels, cfg, t_absent: float):
    """(loss, dL/d(network output), predictions): first-spike cross-entropy, or the cross-entropy of the
    outputs' max potentials (the potential is the logit)."""
    if net.readout == "ttfs":
        return ttfs_cross_entropy(traces[-1].out, labels, tau_L=cfg.tau_L, t_absent=t_absent)
    u = traces[-1].u_max
    B = u.shape[0]
    z = u - u.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    y = np.asarray(labels)
    loss = float(-np.mean(np.log(p[np.arange(B), y] + 1e-300)))
    g = p.copy()
    g[np.arange(B), y] -= 1.0
    return loss, g / B, np.argmax(u, axis=1)


def _peak(fn) -> int:
    """Peak bytes traced (tracemalloc) while ``fn()`` runs, above what was allocated before it."""
    import gc
    import warnings

    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@dataclass
class SRMTrainConfig:
    """The setting of :func:`train_srm` (checked before any work)."""

    model: str = "lif"
    params: dict = field(default_factory=lambda: {"tau": 2.0, "tau_s": 1.0})
    hidden: tuple = (64,)
    delays: bool = False
    recurrent: bool = False
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    max_spikes: int = 16
    tau_L: float = 2.0
    max_delay: float = 5.0
    count_floor: float = 1.0
    silent_push: float = 0.01
    rates: tuple = (4.0, 2.0)
    #: "ttfs": spiking outputs, first-spike cross-entropy; "max": non-spiking outputs, cross-entropy of the max
    #: over time of their potential (the discrete layers' max_ce)
    readout: str = "ttfs"
    #: "numba" (compiled, lanes in parallel) or "python" (the same generated source run as Python)
    backend: str = "numba"

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "max_spikes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r}: expected an int >= 1")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r}: expected a number > 0")
        if not self.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"hidden={self.hidden!r}: expected one or more ints >= 1")
        self.make_model()

    def make_model(self) -> EventSRM:
        return EventSRM.named(self.model, max_spikes=self.max_spikes, backend=self.backend, **self.params)


def train_srm(cfg: SRMTrainConfig, train: tuple[SpikeTrain, np.ndarray], test: tuple[SpikeTrain, np.ndarray],
              n_classes: int, out: str | Path | None = None, *, t_absent: float | None = None,
              progress: bool = True) -> dict:
    """Train an :class:`SRMNetwork` [C, *hidden, n_classes]; returns (and writes to ``out/metrics.json``, with
    the parameters in ``out/weights.npz`` as w0, delays0, recurrent0, ..., after every epoch) loss, train and test accuracy, seconds and dropped spikes per epoch, and the peak NumPy memory
    of one training step (``peak_step_mb``, tracemalloc: the kernels' per-lane scratch is not included)."""
    cfg.validate()
    (xtr, ytr), (xte, yte) = train, test
    end = float(np.max(np.where(np.isfinite(xtr.times), xtr.times, 0.0))) if xtr.times.size else 1.0
    t_absent = 1.5 * end if t_absent is None else t_absent
    net = SRMNetwork([xtr.shape[1], *cfg.hidden, n_classes], cfg.make_model(), delays=cfg.delays,
                     recurrent=cfg.recurrent, max_delay=cfg.max_delay, seed=cfg.seed, readout=cfg.readout,
                     t_end=t_absent)
    rng = np.random.default_rng(cfg.seed)
    net.calibrate(subset(xtr, slice(0, min(64, len(ytr)))), cfg.rates)
    opt = Adam(lr=cfg.lr)
    xb0, yb0 = subset(xtr, slice(0, cfg.batch_size)), ytr[:cfg.batch_size]
    def step():
        traces = net.forward(xb0)
        net.backward(traces, _loss(net, traces, yb0, cfg, t_absent)[1])

    _peak(step)  # the first call compiles the kernels (allocations that are not the step's)
    peak = _peak(step)
    metrics = {"config": {**asdict(cfg), "hidden": list(cfg.hidden), "rates": list(cfg.rates), "t_absent": t_absent,
                          "train_samples": len(ytr), "test_samples": len(yte), "sizes": net.sizes},
               "peak_step_mb": peak / 2**20,
               "epochs": [], "stopped": None}
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    import warnings

    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        order = rng.permutation(len(ytr))
        losses, correct, dropped = [], 0, 0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            xb = subset(xtr, idx)
            with warnings.catch_warnings():  # dropped spikes and capped neurons: counted below, not warned per batch
                warnings.simplefilter("ignore", RuntimeWarning)
                traces = net.forward(xb)
            dropped += sum(int(tr.out.dropped.sum()) for tr in traces if isinstance(tr, SRMTrace))
            value, g, pred = _loss(net, traces, ytr[idx], cfg, t_absent)
            if cfg.count_floor > 0 and net.readout == "ttfs":  # training aid (documented): keep the outputs firing
                o = traces[-1].out
                short = np.maximum(cfg.count_floor - o.counts, 0.0)
                valid = np.arange(o.times.shape[2])[None, None, :] < o.counts[:, :, None]
                g = g + np.where(valid, (short / len(idx))[:, :, None], 0.0)
            grads = net.backward(traces, g)
            if cfg.silent_push > 0:  # training aid (documented): silent neurons raise their active inputs' weights
                k = 0
                for layer, tr in zip(net.layers, traces):
                    if isinstance(tr, ReadoutTrace):
                        break
                    silent = (tr.out.counts == 0).astype(np.float64)
                    active = (tr.inputs.counts > 0).astype(np.float64)
                    grads[k] = grads[k] - cfg.silent_push * active.T @ silent / len(idx)
                    k += len(layer)
            if not np.isfinite(value) or not all(np.all(np.isfinite(d)) for d in grads):
                metrics["stopped"] = f"epoch {epoch + 1}: non-finite loss or gradient"
                break
            opt.step(net.parameters(), grads)
            net.project()
            losses.append(value)
            correct += int(np.sum(pred == ytr[idx]))
        if metrics["stopped"]:
            break
        seconds = time.perf_counter() - start
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pred = np.concatenate([net.predict(subset(xte, slice(i, i + 128)), t_absent)
                                   for i in range(0, len(yte), 128)])
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_acc": correct / len(ytr),
               "test_acc": float(np.mean(pred == yte)), "seconds": seconds, "dropped_spikes": dropped}
        metrics["epochs"].append(row)
        if progress:
            print(f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  train {row['train_acc']:.3f}  "
                  f"test {row['test_acc']:.3f}  {seconds:.1f} s  dropped {dropped}", flush=True)
        if out is not None:  # after every epoch, each file atomically: an interrupted run keeps the last pair
            from ..files import write_atomically

            arrays = {f"{k}{i}": arr for i, layer in enumerate(net.layers) for k, arr in layer.items()}
            write_atomically(out / "weights.npz", lambda fh: np.savez(fh, **arrays))
            write_atomically(out / "metrics.json", lambda fh: fh.write(json.dumps(metrics, indent=2).encode()))
    return metrics
