"""Truncated and local training (Guo et al.) with only ONE chunk's traces in memory at a time.

:meth:`Network.step` keeps the traces of every layer over the whole sequence and then runs the
backward pass; ``truncation=K`` there cuts the gradient at chunk boundaries but not the memory.
:func:`chunked_step` runs the sequence in chunks of ``K`` steps instead, and for each chunk:

1. forwards every layer on the chunk from the states the previous chunk left
   (``ops.forward(..., state=carried)``: the spikes are exactly those of one whole-sequence run);
2. takes the chunk's loss (below) and runs the backward pass of the chunk, adding its weight
   gradient to the accumulated one;
3. keeps only each layer's final state (a forward quantity: its gradient is cut, dL/dx0 of the
   chunk is dropped) and frees the chunk's traces.

With local blocks (``Network(..., blocks=b)``: an auxiliary linear readout at the end of every
block of ``b`` layers but the last) the blocks of a chunk run one after the other: forward the
block, its own loss, its backward, free its traces, hand its output spikes (detached) to the next
block. Peak memory is then one block's traces of one chunk, plus weights, gradients, Adam's moments
and the (n_state, B, n) states.

The loss per chunk (a choice; Guo et al. use a loss per truncation window, docs/MATH.md section 8
is a reconstruction from their abstract). For chunk ``c`` of ``K_c`` steps, weight
``w_c = K_c / T`` (= 1/n_chunks when K divides T)::

    L = sum_c w_c L_c

* ``"max_ce"``: L_c = CE(max_{n in c} r[n]) with r the low-pass readout of the output spikes,
  r[n] = 0.9 r[n-1] + s[n] (as in ``network.loss_and_grad``); r is CARRIED across chunks like a
  membrane (detached: no gradient reaches earlier chunks through it);
* ``"sum_ce"``: L_c = CE of the chunk's spike counts;
* ``"count_mse"``: L_c = MSE of the chunk's counts against ``COUNT_TARGET * K_c / T`` for the
  right class (the whole-sequence target spread evenly over the chunks);
* auxiliary readouts (blocks): L_c = CE of the chunk's time-mean readout logits (``Network.step``
  uses the whole sequence's mean); the readouts' gradient is ``w_c`` times the chunk's.

With K = T (one chunk, w = 1) every L_c is Network.step's loss and the gradients are Network.step's
to rounding (tests/test_local_training.py checks 1e-10 in float64, with and without blocks).

With K < T this is NOT ``Network.step(truncation=K)``: that one truncates the gradient of the
WHOLE-sequence loss, whose dL/ds at step n depends on the spikes of later chunks (the max over all
time, the total counts), which a chunk-by-chunk pass cannot know when it frees the chunk. What IS
equal: give :func:`chunked_step` a callable ``loss`` that returns, for each chunk, the restriction of
the whole-sequence dL/ds; the weight gradients are then ``Network.step(truncation=K)``'s (the test
checks it): the chunked backward is the truncated backward, chunk by chunk, from carried states.

The prediction reported (``StepResult.correct``) is the whole sequence's, as ``Network.predict``
makes it (the running max of the carried r, or the counts summed over the chunks).

Memory: :func:`measure_memory` measures the peak bytes NumPy allocates during one training step with
``tracemalloc`` (NumPy reports its buffers to it; the compiled kernels' outputs are allocated by
NumPy in Python), against the floor of weights + gradients + the stored arrays of one chunk's
(one block's) traces. :func:`memory_experiment` runs the comparison on the SHD-like task and trains
every configuration from the same initial weights and batch order.

Methods: ``"exodus"`` (exact within a chunk) and ``"slayer"``; ``"bptt"`` (the float64 reference)
starts from u0, not from a carried state, so it is refused with more than one chunk.
"""

from __future__ import annotations

import gc
import math
import time
import tracemalloc
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..methods import get_method
from .. import ops
from .network import (
    COUNT_TARGET,
    LOSSES,
    Adam,
    Network,
    NonFiniteLossError,
    StepResult,
    _softmax_ce,
    loss_and_grad,
    max_filter,
)
from .train import _write_json

__all__ = ["chunked_step", "chunked_forward", "fit_local", "measure_memory", "memory_experiment", "block_layout",
           "LocalHistory"]


def _xp(x):
    return np if isinstance(x, np.ndarray) else __import__("cupy")


def block_layout(net: Network) -> list[tuple[int, int, int | None]]:
    """The blocks of ``net`` as (first layer, last layer, readout key or None for the output block).

    A block ends at every layer with an auxiliary readout (``net.readouts``); without readouts the
    whole network is one block ending at the output layer.
    """
    n_layers = len(net.weights)
    layout, first = [], 0
    for end in sorted(net.readouts):
        layout.append((first, end, end))
        first = end + 1
    layout.append((first, n_layers - 1, None))
    return layout


def _chunks(T: int, K: int | None) -> list[tuple[int, int]]:
    if K is None:
        K = T
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"K={K!r}: expected an int >= 1 (the chunk length) or None (= T)")
    return [(start, min(start + int(K), T)) for start in range(0, T, int(K))]


class _Readout:
    """The output loss, chunk by chunk, and the whole sequence's prediction (carried (B, C) state)."""

    def __init__(self, kind, y, n_classes: int, T: int, predict: str | None):
        if not callable(kind) and kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; expected one of {', '.join(LOSSES)} or a callable")
        self.kind, self.y, self.n_classes, self.T = kind, y, n_classes, T
        self.predict = predict or (kind if isinstance(kind, str) else "sum_ce")
        self.r = None  # max_ce filter, carried
        self.best = None  # running max of r (prediction for max_ce)
        self.counts = None  # summed counts (prediction otherwise)

    def loss(self, s, start: int, stop: int):
        """(weighted loss of the chunk, weighted dL/ds of the chunk (K_c, B, C))."""
        xp = _xp(s)
        w = (stop - start) / self.T
        # prediction state, from the chunk's spikes (the max_ce filter carried from the chunk before)
        r = None
        if self.predict == "max_ce" or self.kind == "max_ce":
            r = max_filter(s, self.r)
            self.r = r[-1]
            top = r.max(axis=0)
            self.best = top if self.best is None else xp.maximum(self.best, top)
        counts = s.sum(axis=0)
        self.counts = counts if self.counts is None else self.counts + counts
        if callable(self.kind):
            value, g = self.kind(start, stop, s, self.y)
            return float(value), xp.asarray(g).astype(s.dtype)
        # the chunk's own loss (network.loss_and_grad; count_mse's target scaled to the chunk), weight K_c / T
        value, g, _ = loss_and_grad(self.kind, s, self.y, self.n_classes, r=r, count_target=COUNT_TARGET * w)
        return w * value, (w * g).astype(s.dtype)

    def predictions(self):
        if self.predict == "max_ce":
            return self.best.argmax(axis=1)
        return self.counts.argmax(axis=1)


def _check(net: Network, x, method: str, n_chunks: int) -> None:
    if getattr(net, "recurrent", None):
        raise ValueError("chunked training (K < T, local blocks) takes feed-forward layers; this network has "
                         "recurrent hidden layers: train it whole (Network.step, with truncation= if needed)")
    if x.ndim != 3 or x.shape[2] != net.sizes[0]:
        raise ValueError(f"input has shape {x.shape}; expected (T, batch, {net.sizes[0]})")
    if isinstance(x, np.ndarray) != isinstance(net.weights[0], np.ndarray):
        raise TypeError("the input and the weights must both be numpy or both cupy arrays")
    if get_method(method).reference and n_chunks > 1:
        raise ValueError("method='bptt' (the float64 reference) starts from u0, not from a carried state: "
                         "use 'exodus' (the same gradient) with K < T")


def chunked_forward(net: Network, x, K: int | None = None) -> list:
    """Every layer's spikes (T, B, n_l), computed chunk by chunk with the states carried (inference)."""
    xp = _xp(x)
    chunks = _chunks(x.shape[0], K)
    _check(net, x, "exodus", len(chunks))
    states = [None] * len(net.weights)
    out = [[] for _ in net.weights]
    for start, stop in chunks:
        s = x[start:stop].astype(net.dtype, copy=False)
        for layer, (W, model) in enumerate(zip(net.weights, net.models)):
            trace = ops.forward(model, s @ W, state=states[layer], copy=False)
            states[layer] = trace.state
            s = trace.s
            out[layer].append(s)
    return [xp.concatenate(parts, axis=0) for parts in out]


def _block(net, s_in, y, first, last, key, readout, start, stop, T, states, grads_w, grads_r, factors, seconds,
           method, xp):
    """Forward, loss, backward of layers first..last on one chunk; returns (output spikes, the chunk's loss).

    Updates ``states`` (the layers' final states, detached), adds to ``grads_w``/``grads_r``, ``factors``
    (largest |step factor| per layer) and ``seconds``. Every trace is local and dies on return.
    """
    sync = (lambda: xp.cuda.Device().synchronize()) if xp is not np else (lambda: None)  # noqa: E731
    w = (stop - start) / T
    t0 = time.perf_counter()
    inputs, traces = [], []
    s = s_in
    for layer in range(first, last + 1):
        inputs.append(s)
        trace = ops.forward(net.models[layer], s @ net.weights[layer], state=states[layer], copy=False)
        states[layer] = trace.state  # detached: the chunk's dL/dx0 is dropped below
        traces.append(trace)
        s = trace.s
    del trace, s_in
    if key is None:
        value, g = readout.loss(s, start, stop)
    else:  # the block's auxiliary readout: CE of the chunk's time-mean logits, weight w
        R = net.readouts[key]
        value, dlog = _softmax_ce((s @ R).mean(axis=0), y)
        value *= w
        grads_r[key] += (s.sum(axis=0).T @ dlog) / T  # = w * (the chunk's dL/dR)
        g = xp.broadcast_to((dlog @ R.T) / T, s.shape).astype(net.dtype)
    if not math.isfinite(value):
        raise NonFiniteLossError(f"the loss became {value} (chunk {start}:{stop}): not training on it")
    sync()
    seconds["forward"] += time.perf_counter() - t0
    for i in range(len(traces) - 1, -1, -1):
        layer = first + i
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ops.StabilityWarning)
            try:
                grads = ops.backward(net.models[layer], traces[i], g, method=method, parameters=False)
            except ops.GradientOverflowError as exc:
                raise NonFiniteLossError(f"layer {layer}: {exc}") from None
        factors[layer] = max(factors[layer], grads.max_step_factor)
        da = grads.a
        traces[i] = grads = g = None  # this layer's trace is no longer needed
        sync()
        t1 = time.perf_counter()
        x_in = inputs[i]
        gw = x_in.reshape(-1, x_in.shape[-1]).T @ da.reshape(-1, da.shape[-1])
        if not bool(xp.all(xp.isfinite(gw))):
            raise NonFiniteLossError(f"layer {layer}: the weight gradient is not finite (largest |step "
                                     f"factor| {factors[layer]:.3g})")
        grads_w[layer] += gw
        del gw, x_in
        if i > 0:
            inputs[i] = None
        sync()
        t2 = time.perf_counter()
        if i > 0:
            g = (da @ net.weights[layer].T).astype(net.dtype)
        del da
        sync()
        seconds["backward"] += (t1 - t0) + (time.perf_counter() - t2)
        seconds["weight_grad"] += t2 - t1
    return s, value


def chunked_step(net: Network, x, y, *, K: int | None = None, loss="max_ce", method: str = "exodus",
                 predict: str | None = None):
    """One training step in chunks of ``K`` steps (None: K = T); returns (StepResult, grads_w, grads_r).

    Only one chunk's (with blocks: one block's) traces are alive at a time; see the module docstring
    for the loss per chunk and what equals :meth:`Network.step`. ``loss``: one of ``LOSSES`` or a
    callable ``(start, stop, s_chunk, y) -> (loss value, dL/ds_chunk)`` (no chunk weight applied);
    ``predict``: how the reported prediction is made ("max_ce" or counts), default from ``loss``.
    Blocks come from ``net.readouts`` (``Network(..., blocks=b)``). Gradients are summed over chunks
    into arrays shaped like ``net.weights`` and ``net.readouts``.
    """
    xp = _xp(x)
    T = x.shape[0]
    chunks = _chunks(T, K)
    _check(net, x, method, len(chunks))
    layout = block_layout(net)
    n_layers = len(net.weights)
    readout = _Readout(loss, y, net.n_classes, T, predict)
    states = [None] * n_layers
    grads_w = [xp.zeros_like(W) for W in net.weights]
    grads_r = {k: xp.zeros_like(R) for k, R in net.readouts.items()}
    factors = [0.0] * n_layers
    seconds = {"forward": 0.0, "backward": 0.0, "weight_grad": 0.0}
    total = 0.0
    for start, stop in chunks:
        s = x[start:stop].astype(net.dtype, copy=False)
        for first, last, key in layout:
            # one block of one chunk; its traces are freed when _block returns (only its output spikes and
            # the layers' final states survive it)
            s, value = _block(net, s, y, first, last, key, readout, start, stop, T, states, grads_w, grads_r,
                              factors, seconds, method, xp)
            total += value
        del s
    norms = [float(xp.linalg.norm(gw.astype(np.float64))) for gw in grads_w]
    correct = int((readout.predictions() == y).sum())
    return StepResult(total, correct, norms, factors, seconds), grads_w, grads_r


# ------------------------------------------------------------------ training
@dataclass
class LocalHistory:
    epochs: list = field(default_factory=list)
    stopped: str | None = None

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "stopped": self.stopped}


def _accuracy(net: Network, ds, loss: str) -> float:
    correct = 0
    for x, y in ds.time_major_batches(256, shuffle=False):
        correct += int((net.predict(x, loss) == y).sum())
    return correct / len(ds)


def fit_local(net: Network, train_ds, test_ds, cfg, *, K: int | None = None, end_to_end: bool = False,
              progress: bool = False, desc: str = "local", on_epoch=None) -> LocalHistory:
    """Adam (lr ``cfg.lr``) over ``cfg.epochs`` epochs of :func:`chunked_step` with chunks of ``K``.

    ``cfg``: a :class:`ift_snn.training.train.TrainConfig` (its loss, method, batch_size, lr, epochs and seed are
    used; its truncation and blocks are not: the blocks are ``net``'s, K is the argument). The batch
    order is ``train.fit``'s (``default_rng(cfg.seed)``). ``end_to_end=True`` trains with
    :meth:`Network.step` instead (the reference: all traces kept, the whole sequence's loss), with
    ``truncation=K`` when K is given and < T (the gradient truncated, the loss and memory unchanged).
    Stops (history.stopped) on a non-finite loss.
    """
    opt = Adam(lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    history = LocalHistory()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.epochs, desc=desc, unit="epoch", leave=False)
    try:
        for epoch in range(cfg.epochs):
            start = time.perf_counter()
            losses, correct, seen = [], 0, 0
            try:
                for x, y in train_ds.time_major_batches(cfg.batch_size, rng=rng):
                    if end_to_end:
                        cut = K if K is not None and K < x.shape[0] else None
                        result, gw, gr = net.step(x, y, loss=cfg.loss, method=cfg.method, truncation=cut)
                    else:
                        result, gw, gr = chunked_step(net, x, y, K=K, loss=cfg.loss, method=cfg.method)
                    opt.step(net.parameters(), gw + [gr[k] for k in sorted(gr)])
                    losses.append(result.loss)
                    correct += result.correct
                    seen += len(y)
            except NonFiniteLossError as exc:
                history.stopped = f"epoch {epoch}: {exc}"
                break
            row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_acc": correct / max(seen, 1),
                   "test_acc": _accuracy(net, test_ds, cfg.loss), "seconds": time.perf_counter() - start}
            history.epochs.append(row)
            if on_epoch is not None:
                on_epoch(history)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.3f}", test=f"{row['test_acc']:.2f}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return history


# -------------------------------------------------------------------- memory
def _with_blocks(net: Network, blocks: int | None) -> Network:
    """A network with ``net``'s weights (copied) and ``blocks``; readouts drawn as Network draws them."""
    if blocks == net.blocks:
        return net
    other = Network(net.sizes, net.models, seed=getattr(net, "seed", 0) or 0, dtype=net.dtype, blocks=blocks,
                    n_classes=net.n_classes, init_gain=getattr(net, "init_gain", 2.0))
    other.weights = [W.copy() for W in net.weights]
    return other


def _trace_bytes(net: Network, x, K: int, whole: bool = False) -> int:
    """Bytes of the arrays one chunk of K steps stores for its backward pass, for the largest block
    (``whole``: for all layers, as Network.step keeps them)."""
    s = x[:K].astype(net.dtype, copy=False)
    per_layer = []
    for W, model in zip(net.weights, net.models):
        trace = ops.forward(model, s @ W, copy=False)
        seen, size = set(), 0
        for arr in (trace.a, trace.s, trace.u, trace.sigma, trace.mask):
            if arr is not None:
                base = arr if arr.base is None else arr.base
                if id(base) not in seen:
                    seen.add(id(base))
                    size += arr.nbytes
        per_layer.append(size)
        s = trace.s
    # the block's input (the first layer's: x's chunk is a view of the batch, a block's input is held spikes)
    best = 0
    for first, last, key in ([(0, len(net.weights) - 1, None)] if whole else block_layout(net)):
        size = sum(per_layer[first:last + 1])
        if first > 0:
            size += K * x.shape[1] * net.sizes[first] * net.dtype.itemsize
        best = max(best, size)
    return best


def _peak(fn) -> int:
    """Peak bytes traced while ``fn()`` runs, above what was allocated before it (ift_snn's output workspace
    emptied first, so reused buffers count as the first call's would)."""
    from ..backends import compiled

    compiled.workspace.clear()
    gc.collect()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        if started:
            tracemalloc.stop()


def default_configs(T: int) -> list[dict]:
    """end-to-end, chunked K = T (the implementation alone), K = T/2, T/5, T/10, blocks of 1 and 2 (K = T, T/10),
    and Network.step(truncation=K) for K = T/2, T/10 (the gradient truncated, the whole loss: what truncation
    alone costs, apart from the per-chunk loss; no memory saved)."""
    k10 = max(T // 10, 1)
    return [
        {"name": "end-to-end", "K": None, "blocks": None, "end_to_end": True},
        {"name": f"whole loss, grad cut K={max(T // 2, 1)}", "K": max(T // 2, 1), "blocks": None, "end_to_end": True},
        {"name": f"whole loss, grad cut K={k10}", "K": k10, "blocks": None, "end_to_end": True},
        {"name": f"chunked K={T}", "K": T, "blocks": None},
        {"name": f"K={max(T // 2, 1)}", "K": max(T // 2, 1), "blocks": None},
        {"name": f"K={max(T // 5, 1)}", "K": max(T // 5, 1), "blocks": None},
        {"name": f"K={k10}", "K": k10, "blocks": None},
        {"name": f"b=1 K={T}", "K": T, "blocks": 1},
        {"name": f"b=2 K={T}", "K": T, "blocks": 2},
        {"name": f"b=1 K={k10}", "K": k10, "blocks": 1},
        {"name": f"b=2 K={k10}", "K": k10, "blocks": 2},
    ]


def measure_memory(net: Network, x, y, *, configs: list[dict] | None = None, loss: str = "max_ce",
                   method: str = "exodus", reference_bytes: int | None = None) -> dict:
    """Peak NumPy bytes of one training step per configuration (tracemalloc), with the floor.

    ``configs``: dicts with ``name``, ``K`` (None = T), ``blocks`` (None or b) and optionally
    ``end_to_end`` (use :meth:`Network.step`, with ``truncation=K`` if K < T); default
    :func:`default_configs`. Each step runs twice untraced first (kernels compiled, caches warm; the faster
    is ``step_seconds``), then once traced. Returns {name: {"peak_bytes", "floor_bytes", "trace_bytes",
    "param_bytes", "ratio" (to ``reference_bytes``, default the first configuration's peak), "K",
    "blocks", "end_to_end", "step_seconds"}}. The floor is parameters + their gradients + the stored
    arrays (a, s, u, sigma and the block's input spikes) of one chunk's traces of the largest block (of
    every layer over T for Network.step): what the backward pass must hold at once. Not in the peak:
    Adam's moments and the data (allocated outside the step). The peak above the floor is the backward
    pass's working arrays (dL/ds, dL/da, the kernels' outputs: about three arrays of one layer's chunk).
    """
    T = x.shape[0]
    configs = default_configs(T) if configs is None else configs
    out, first = {}, None
    for cfg in configs:
        K = T if cfg.get("K") is None else cfg["K"]
        model = _with_blocks(net, cfg.get("blocks"))
        if cfg.get("end_to_end"):
            cut = K if K < T else None
            run = lambda m=model, cut=cut: m.step(x, y, loss=loss, method=method, truncation=cut)  # noqa: E731
        else:
            run = lambda m=model, K=K: chunked_step(m, x, y, K=K, loss=loss, method=method)  # noqa: E731
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ops.StabilityWarning)
            seconds = []
            for _ in range(2):  # warm-up (compile, caches) and the step's time, untraced
                t0 = time.perf_counter()
                run()
                seconds.append(time.perf_counter() - t0)
            peak = _peak(run)
        params = sum(int(p.nbytes) for p in model.parameters())
        traces = _trace_bytes(model, x, T, whole=True) if cfg.get("end_to_end") else _trace_bytes(model, x, K)
        first = (peak if reference_bytes is None else reference_bytes) if first is None else first
        out[cfg["name"]] = {"K": K, "blocks": cfg.get("blocks"), "end_to_end": bool(cfg.get("end_to_end")),
                            "peak_bytes": int(peak), "param_bytes": params, "trace_bytes": traces,
                            "floor_bytes": 2 * params + traces, "ratio": peak / first,
                            "step_seconds": min(seconds)}
    return out


# ---------------------------------------------------------------- experiment


def memory_experiment(out, *, quick: bool = False, epochs: int | None = None, n_train: int | None = None,
                      n_test: int | None = None, seed: int = 0, neuron: str = "if", loss: str = "max_ce",
                      lr: float = 2e-3, batch_size: int = 32, T: int = 250, init_gain: float = 1.5,
                      configs: list[dict] | None = None, train_configs: list[str] | None = None,
                      blas_threads: int | None = 1, progress: bool = True) -> dict:
    """Peak memory and accuracy against K and b on the SHD-like task; writes memory.json and memory.png.

    Task: :func:`ift_snn.training.shd_like.make_task` into ``out/data`` (64 channels, ``T`` = 250 bins), network
    [64, 128, 128, 128, 10] of IF neurons (``neuron="lif"``: lif(0.9)) with the exponential surrogate
    (scale 1, width 0.5), loss ``loss``, Adam ``lr``, batch ``batch_size``, float32, weights
    N(0, (init_gain / sqrt(fan-in))^2). ``init_gain=1.5``: with IF neurons Network's default 2.0 drives the
    output layer to a 37% spike rate and stayed at chance (10%) for 8 epochs in a pilot; 1.0 plateaued at
    35-75%; 1.5 reached 96% in 10 epochs (end-to-end, 800 samples). Every configuration starts from the
    same weights (seed) and sees the same batches. ``train_configs``: the names trained (default: all but
    "chunked K=T", whose gradient is end-to-end's to rounding; the tests check it). Default: 800 train /
    200 test samples, 12 epochs; ``quick``: 160 / 80 and 2 epochs. ``blas_threads``: BLAS threads during
    the run (threadpoolctl, if installed; None leaves them): OpenBLAS's spinning threads and the kernels'
    threads compete on 2 cores, which made a small step 5-7x slower. memory.json is rewritten
    (atomically) after every measurement and every epoch.

    The default run (seed 0, 2 busy cores, ~4 min): peak of one step 64.1 MiB end-to-end; K = T/2, T/5,
    T/10: 0.44, 0.18, 0.095 of it; blocks of 1 / 2 layers: 0.50 / 0.68 (K = T), 0.057 / 0.076 (K = T/10).
    Test accuracy after 12 epochs: end-to-end 94.5% (best 96.5%); every truncated or local configuration
    0.10-0.37 (best epoch 0.12-0.62), and Network.step(truncation=K) with the whole loss as bad (0.12-0.13):
    on this task, whose class is the ORDER of phonemes over the whole word, cutting the gradient at K steps
    removes what the network must learn.
    """
    from .train import blas_threads as limited_blas

    with limited_blas(blas_threads):
        return _memory_experiment(out, quick=quick, epochs=epochs, n_train=n_train, n_test=n_test, seed=seed,
                                  neuron=neuron, loss=loss, lr=lr, batch_size=batch_size, T=T,
                                  init_gain=init_gain, configs=configs, train_configs=train_configs,
                                  progress=progress)


def _memory_experiment(out, *, quick, epochs, n_train, n_test, seed, neuron, loss, lr, batch_size, T, init_gain,
                       configs, train_configs, progress) -> dict:
    from . import data, shd_like
    from ..neurons.models import if_neuron, lif
    from ..neurons.surrogates import exponential
    from .train import TrainConfig, prepare_out_dir

    out = prepare_out_dir(out, "out")
    n_train = n_train or (160 if quick else 800)
    n_test = n_test or (80 if quick else 200)
    epochs = epochs if epochs is not None else (2 if quick else 12)
    started = time.perf_counter()
    train_path, test_path = shd_like.make_task(out / "data", n_train=n_train, n_test=n_test, seed=seed)
    train_ds = data.load_shd(train_path, T=T, n_channels=64)
    test_ds = data.load_shd(test_path, T=T, n_channels=64)
    surrogate = exponential(1.0, 0.5)
    model = if_neuron(1.0, surrogate=surrogate) if neuron == "if" else lif(0.9, 1.0, surrogate=surrogate)
    sizes = [64, 128, 128, 128, train_ds.n_classes]
    configs = default_configs(T) if configs is None else configs
    names = [c["name"] for c in configs]
    trained = [n for n in names if not n.startswith("chunked K=")] if train_configs is None else list(train_configs)
    cfg = TrainConfig(task="shd", method="exodus", epochs=epochs, batch_size=batch_size, lr=lr, loss=loss, seed=seed)
    result = {"task": {"n_train": len(train_ds), "n_test": len(test_ds), "T": T, "n_channels": 64, "seed": seed,
                       "neuron": repr(model), "sizes": sizes, "loss": loss, "lr": lr, "batch_size": batch_size,
                       "epochs": epochs, "method": "exodus", "dtype": "float32", "init_gain": init_gain},
              "memory": {}, "training": {}, "complete": False, "seconds": None}

    def save():
        result["seconds"] = time.perf_counter() - started
        _write_json(out / "memory.json", result)

    base = Network(sizes, model, seed=seed, dtype=np.float32, n_classes=train_ds.n_classes, init_gain=init_gain)
    x, y = next(iter(train_ds.time_major_batches(batch_size, shuffle=False)))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(configs) + len(trained) * epochs, desc="memory experiment", unit="task")
    try:
        for c in configs:
            ref = next(iter(result["memory"].values()))["peak_bytes"] if result["memory"] else None
            result["memory"].update(measure_memory(base, x, y, configs=[c], loss=loss, reference_bytes=ref))
            save()
            if bar is not None:
                bar.update(1)
        for c in configs:
            if c["name"] not in trained:
                continue
            net = _with_blocks(Network(sizes, model, seed=seed, dtype=np.float32, n_classes=train_ds.n_classes,
                                       init_gain=init_gain), c.get("blocks"))
            row = result["training"].setdefault(c["name"], {"K": c.get("K") or T, "blocks": c.get("blocks")})

            def on_epoch(history, row=row):
                row.update(history.to_dict())
                row["test_acc"] = [e["test_acc"] for e in history.epochs]
                row["final_test_acc"] = row["test_acc"][-1]
                save()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(config=row.get("name", ""), test=f"{row['final_test_acc']:.2f}")

            row["name"] = c["name"]
            history = fit_local(net, train_ds, test_ds, cfg, K=c.get("K"), end_to_end=bool(c.get("end_to_end")),
                                on_epoch=on_epoch)
            row.update(history.to_dict())
            save()
    finally:
        if bar is not None:
            bar.close()
    result["complete"] = True
    save()
    _plot(result, out)
    return result


def _plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mem = result["memory"]
    names = list(mem)
    peak = [mem[n]["peak_bytes"] / 2**20 for n in names]
    floor = [mem[n]["floor_bytes"] / 2**20 for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    ax = axes[0]
    pos = np.arange(len(names))
    ax.bar(pos, peak, color="tab:blue", label="peak (tracemalloc)")
    ax.scatter(pos, floor, color="k", marker="_", s=400, zorder=3, label="floor: params + grads + one chunk's traces")
    for p, v, n in zip(pos, peak, names):
        ax.text(p, v, f"{v:.1f}\n({mem[n]['ratio']:.2f}x)", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(pos, names, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("peak memory of one step (MiB)")
    ax.set_yscale("log")
    ax.set_ylim(min(floor + peak) / 1.5, max(peak) * 6)
    ax.set_title("Peak memory of one step per configuration")
    ax.legend(fontsize=7, loc="upper right")
    train = result["training"]
    tn = [n for n in names if n in train and train[n].get("test_acc")]
    ax = axes[1]
    acc = [train[n]["test_acc"][-1] for n in tn]
    best = [max(train[n]["test_acc"]) for n in tn]
    ax.bar(np.arange(len(tn)), acc, color="tab:green", label="final")
    ax.scatter(np.arange(len(tn)), best, color="k", marker="_", s=300, zorder=3, label="best epoch")
    for p, v in enumerate(acc):
        ax.text(p, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_xticks(np.arange(len(tn)), tn, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel(f"test accuracy after {result['task']['epochs']} epochs")
    ax.set_ylim(0, 1)
    ax.axhline(1 / 10, color="gray", ls=":", lw=1)
    ax.set_title("Final accuracy per configuration")
    ax = axes[2]
    for n in tn:
        a = train[n]["test_acc"]
        ax.plot(np.arange(1, len(a) + 1), a, marker="o", ms=3, label=n)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, loc="upper left", ncol=2)
    ax.grid(alpha=0.3)
    ax.set_title("Test accuracy per epoch")
    t = result["task"]
    fig.suptitle(f"Truncated / local training, SHD-like (T={t['T']}, {t['n_train']} train), "
                 f"{t['sizes']}, {t['loss']}")
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=110)
    plt.close(fig)
