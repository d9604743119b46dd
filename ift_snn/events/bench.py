"""Cost of the event method against the number of spikes, and of the discrete method against time steps.

:func:`spike_scaling` times one dense layer (B samples, C inputs, M neurons)
forward and backward with the compiled event kernels while the number of
input spikes per channel grows, and :func:`steps_scaling` times the same
spikes in both methods while the time resolution grows: the event method's
cost follows the spikes and does not depend on T; the discrete-time EXODUS
layer (``ift_snn.ops``, a (T, B, C) raster times W, forward, backward) grows
with T. :func:`print_tables` prints both (``python -m ift_snn.events.bench``).
Medians of ``repeats`` runs after one warm-up (which also compiles).
"""

from __future__ import annotations

import time

import numpy as np

from .kernels import backward_compiled, simulate_compiled
from .model import EventLIF, SpikeTrain

__all__ = ["spike_scaling", "steps_scaling", "print_tables"]


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return float(np.median(times))


def _inputs(rng, B, C, per_channel, t_max):
    t = np.sort(rng.uniform(0, t_max, size=(B, C, per_channel)), axis=2)
    return SpikeTrain(t, np.full((B, C), per_channel))


def _event_layer(model, w, x, repeats):
    trace = simulate_compiled(model, w, x)
    g = np.where(np.isfinite(trace.out.times), 1.0, 0.0)
    fwd = _median_ms(lambda: simulate_compiled(model, w, x), repeats)
    bwd = _median_ms(lambda: backward_compiled(trace, g), repeats)
    return fwd, bwd, int(trace.out.counts.sum())


def spike_scaling(per_channel=(1, 2, 4, 8, 16, 32), B: int = 32, C: int = 64, M: int = 64, t_max: float = 8.0,
                  repeats: int = 5, seed: int = 0) -> list[dict]:
    """Rows {input_spikes, output_spikes, forward_ms, backward_ms} of one event layer."""
    rng = np.random.default_rng(seed)
    model = EventLIF(tau=2.0, tau_s=1.0, max_spikes=64)
    rows = []
    for k in per_channel:
        w = rng.normal(1.0, 1.0, size=(C, M)) * 4.0 / (C * k)  # about the same drive per neuron
        x = _inputs(rng, B, C, k, t_max)
        fwd, bwd, n_out = _event_layer(model, w, x, repeats)
        rows.append(dict(input_spikes=B * C * k, output_spikes=n_out, forward_ms=fwd, backward_ms=bwd))
    return rows


def _discrete_layer(T, x: SpikeTrain, w, t_max, repeats):
    from ..neurons.models import lif
    from ..ops import backward, forward

    B, C, _ = x.shape
    raster = np.zeros((T, B, C))
    steps = np.minimum((x.times / t_max * T).astype(np.int64), T - 1)
    b, c, k = np.nonzero(np.isfinite(x.times))
    np.add.at(raster, (steps[b, c, k], b, c), 1.0)
    alpha = float(np.exp(-(t_max / T) / 2.0))
    model = lif(alpha, 1.0)

    a = raster @ w
    trace = forward(model, a)
    g = np.ones_like(a)

    def back():  # the backward of the same forward, and the weight gradient it feeds
        gr = backward(model, trace, g, parameters=False)
        return np.einsum("tbc,tbm->cm", raster, gr.a)

    # each timed by itself (the backward was total - forward of two medians, which could come out negative)
    return _median_ms(lambda: forward(model, raster @ w), repeats), _median_ms(back, repeats)


def steps_scaling(steps=(100, 1000, 10000), B: int = 32, C: int = 64, M: int = 64, per_channel: int = 4,
                  t_max: float = 8.0, repeats: int = 3, seed: int = 0) -> list[dict]:
    """Rows {T, event_forward_ms, event_backward_ms, discrete_forward_ms, discrete_backward_ms}: same spikes."""
    rng = np.random.default_rng(seed)
    model = EventLIF(tau=2.0, tau_s=1.0, max_spikes=64)
    w = rng.normal(1.0, 1.0, size=(C, M)) * 4.0 / (C * per_channel)
    x = _inputs(rng, B, C, per_channel, t_max)
    e_fwd, e_bwd, _ = _event_layer(model, w, x, repeats)
    rows = []
    for T in steps:
        d_fwd, d_bwd = _discrete_layer(T, x, w, t_max, repeats)
        rows.append(dict(T=T, event_forward_ms=e_fwd, event_backward_ms=e_bwd, discrete_forward_ms=d_fwd,
                         discrete_backward_ms=d_bwd))
    return rows


def print_tables(repeats: int = 9) -> tuple[list[dict], list[dict]]:
    """Print both tables; returns their rows."""
    a = spike_scaling(repeats=repeats)
    print("event layer (B=32, C=64 inputs, M=64 neurons, tau=2 tau_s, compiled Numba, float64), medians:")
    print(f"{'input spikes':>13} {'output spikes':>14} {'forward ms':>11} {'backward ms':>12}")
    for r in a:
        print(f"{r['input_spikes']:>13} {r['output_spikes']:>14} {r['forward_ms']:>11.2f} {r['backward_ms']:>12.2f}")
    b = steps_scaling(repeats=repeats)
    print("\nsame layer and spikes (8192 input spikes), event method vs discrete EXODUS with T steps:")
    print(f"{'T':>7} {'events fwd ms':>14} {'events bwd ms':>14} {'discrete fwd ms':>16} {'discrete bwd ms':>16}")
    for r in b:
        print(f"{r['T']:>7} {r['event_forward_ms']:>14.2f} {r['event_backward_ms']:>14.2f} "
              f"{r['discrete_forward_ms']:>16.2f} {r['discrete_backward_ms']:>16.2f}")
    return a, b


if __name__ == "__main__":  # pragma: no cover
    print_tables()


def horizon_scaling(horizons=(100.0, 1e3, 1e4, 1e5), models=("lif", "alpha", "adaptive"), B: int = 64,
                    C: int = 32, M: int = 32, per_channel: int = 4, rounds: int = 5, seed: int = 0) -> list[dict]:
    """Forward + backward of one continuous layer (:mod:`ift_snn.events.srm`, compiled) at a FIXED number of
    input spikes (B C per_channel) spread uniformly over [0, T], for each horizon T and neuron model.

    Neuron m listens to channel m mod C with w = U(0.75, 1.5) theta / peak of eps: most input spikes alone lift
    it over threshold, so the output count stays
    about the same however far apart the spikes are. Rows {model, T, input_spikes, output_spikes, median_ms,
    min_ms, max_ms} over ``rounds`` timed rounds after a warm-up (which compiles)."""
    from .srm import EventSRM, backward_srm, simulate_srm

    rows = []
    for name in models:
        model = EventSRM.named(name, max_spikes=64)
        ts = np.linspace(0.0, 40.0, 4001)
        import sympy as sp

        from ..symbolic.continuous import T as t_sym

        eps = sp.lambdify(t_sym, model.derivation.eps.subs(dict(zip(model.derivation.params, model.values))),
                          "numpy")
        peak = float(np.max(eps(ts)))
        for horizon in horizons:
            rng = np.random.default_rng(seed)
            x = _inputs(rng, B, C, per_channel, horizon)
            # neuron m listens to channel m mod C: its B per_channel spikes, each (mostly) firing it once
            w = np.zeros((C, M))
            w[np.arange(M) % C, np.arange(M)] = rng.uniform(0.75, 1.5, size=M) * model.params["theta"] / peak

            def step():
                tr = simulate_srm(model, w, x)
                backward_srm(tr, np.where(np.isfinite(tr.out.times), 1.0, 0.0))
                return tr

            tr = step()
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                step()
                times.append(1e3 * (time.perf_counter() - start))
            rows.append(dict(model=name, T=horizon, input_spikes=B * C * per_channel,
                             output_spikes=int(tr.out.counts.sum()), median_ms=float(np.median(times)),
                             min_ms=float(np.min(times)), max_ms=float(np.max(times))))
    return rows


def format_horizon(rows: list[dict]) -> str:
    """The table of :func:`horizon_scaling`, with each model's largest / smallest median."""
    lines = [f"{'model':<9} {'T':>8} {'input spikes':>13} {'output spikes':>14} {'fwd+bwd ms (min-max)':>24}"]
    for r in rows:
        lines.append(f"{r['model']:<9} {r['T']:>8.0f} {r['input_spikes']:>13} {r['output_spikes']:>14} "
                     f"{r['median_ms']:>9.2f} ({r['min_ms']:.2f}-{r['max_ms']:.2f})")
    for name in dict.fromkeys(r["model"] for r in rows):
        med = [r["median_ms"] for r in rows if r["model"] == name]
        lines.append(f"{name}: largest / smallest median over T = {max(med) / min(med):.2f} (target <= 1.5)")
    return "\n".join(lines)
