"""Continuous-time SRM of any exponential-polynomial kernel (ift_snn.events.srm) against independent checks.

Oracles: the float64 grid-scan + brentq forward and the dense implicit-function solve of
:mod:`ift_snn.backends.reference` (``event_srm_simulate``, ``event_srm_gradients``: the global sums of the
model evaluated directly, no local state, no reverse scan), and central finite differences of the library's
own simulation (one layer and two layers chained through ``.inputs``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ift_snn.backends.reference import event_srm_gradients, event_srm_simulate
from ift_snn.events import SpikeTrain
from ift_snn.events.srm import EventSRM, backward_srm, simulate_srm

from .conftest import rel_err

MAX_SPIKES = 48
CUSTOM = ("exp(-t/tau) - exp(-t/tau_s) + 2*(exp(-(t - dl)/tau) - exp(-(t - dl)/tau_s))*heaviside(t - dl)",
          "-theta*exp(-t/tau)", {"tau": 2.0, "tau_s": 0.5, "dl": 0.7, "theta": 1.0})


def make_model(name: str, backend: str = "python") -> EventSRM:
    if name.startswith("lif"):
        ratio = float(name[3:])
        return EventSRM.named("lif", tau=ratio, tau_s=1.0, max_spikes=MAX_SPIKES, backend=backend)
    if name == "custom":
        eps, nu, params = CUSTOM
        return EventSRM(eps, nu, params, max_spikes=MAX_SPIKES, backend=backend)
    return EventSRM.named(name, max_spikes=MAX_SPIKES, backend=backend)


#: lif at tau/tau_s = 2, 3, 1.5; alpha (a repeated pole); adaptive (two reset exponentials); custom: two delay
#: groups, the second's delay dl a parameter (its gradient included)
MODELS = ["lif2", "lif3", "lif1.5", "alpha", "adaptive", "custom"]
#: weights N(1.5, 1) times this: a PSP of peak about theta / 4 per unit weight, so that with up to 16 arrivals
#: a neuron spikes about 5 times on average (at most about 25)
WSCALE = {"lif2": 0.5, "lif3": 0.45, "lif1.5": 0.55, "alpha": 0.55, "adaptive": 0.6, "custom": 0.2}


def problem(rng, model: str, B: int, C: int, M: int, S: int = 4, with_delays: bool = True, t_max: float = 6.0):
    """(inputs, w, delays, axonal): 1..S input spikes per channel in [0, t_max], delays in [0, 2] or None."""
    counts = rng.integers(1, S + 1, size=(B, C))
    times = np.full((B, C, S), np.inf)
    for b in range(B):
        for c in range(C):
            times[b, c, :counts[b, c]] = np.sort(rng.uniform(0.0, t_max, counts[b, c]))
    w = rng.normal(1.5, 1.0, size=(C, M)) * WSCALE[model]
    d = rng.uniform(0.0, 2.0, size=(C, M)) if with_delays else None
    ax = rng.uniform(0.0, 2.0, size=M) if with_delays else None
    return SpikeTrain(times, counts), w, d, ax


def oracle(model: EventSRM, w, x: SpikeTrain, d, ax, g):
    """The reference forward and gradients of ``model`` (its SymPy kernels and parameter values only)."""
    der = model.derivation
    values = dict(zip(der.params, model.values))
    out = event_srm_simulate(der.eps, der.nu, values, w, x.times, d, ax, grid=2e-3)
    grads = event_srm_gradients(der.eps, der.nu, values, w, x.times, out, g, d, ax) if g is not None else None
    return out, grads


def assert_equals_oracle(model: EventSRM, w, x, d, ax, rng):
    trace = simulate_srm(model, w, x, delays=d, axonal=ax)
    out = trace.out
    assert out.dropped.sum() == 0
    g = rng.normal(size=out.times.shape)
    ref, ref_g = oracle(model, w, x, d, ax, g)
    np.testing.assert_array_equal(out.counts, ref.counts)
    valid = np.arange(out.times.shape[2])[None, None, :] < out.counts[:, :, None]
    S = ref.times.shape[2]
    assert np.all(out.times[:, :, S:] == np.inf)
    err = np.max(np.abs(out.times[:, :, :S][valid[:, :, :S]] - ref.times[valid[:, :, :S]]), initial=0.0)
    assert err <= 1e-9, f"spike times differ from the oracle by {err:.3g}"
    grads = backward_srm(trace, g)
    for what in ("w", "inputs", "delays", "axonal"):
        e = rel_err(getattr(grads, what), getattr(ref_g, what))
        assert e <= 1e-7, f"dL/d{what}: relative error {e:.3g} against the dense IFT oracle"
    assert set(grads.params) == set(ref_g.params) == set(model.names)
    names = sorted(ref_g.params)
    e = rel_err([grads.params[k] for k in names], [ref_g.params[k] for k in names])
    assert e <= 1e-7, f"dL/dp: {grads.params} vs oracle {ref_g.params} (relative {e:.3g})"
    return trace, grads


# ---------------------------------------------------------------------- the library equals the oracle
@pytest.mark.parametrize("with_delays", [False, True], ids=["no_delays", "delays"])
@pytest.mark.parametrize("name", MODELS)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(seed=st.integers(0, 2**32 - 1), B=st.integers(1, 2), C=st.integers(1, 4), M=st.integers(1, 3))
def test_library_equals_the_grid_and_dense_ift_oracle(name, with_delays, seed, B, C, M):
    rng = np.random.default_rng(seed)
    model = make_model(name)
    x, w, d, ax = problem(rng, name, B, C, M, with_delays=with_delays)
    trace = simulate_srm(model, w, x, delays=d, axonal=ax)
    assume(trace.out.counts.sum() > 0)  # a silent layer has nothing to compare
    assert_equals_oracle(model, w, x, d, ax, rng)


def test_numba_backend_equals_oracle_and_python_backend():
    rng = np.random.default_rng(7)
    x, w, d, ax = problem(rng, "lif3", 2, 4, 3)
    fast = make_model("lif3", backend="numba")
    trace, grads = assert_equals_oracle(fast, w, x, d, ax, np.random.default_rng(1))
    assert trace.out.counts.min() >= 1 and trace.out.counts.sum() >= 12
    slow = make_model("lif3")
    trace_py = simulate_srm(slow, w, x, delays=d, axonal=ax)
    np.testing.assert_array_equal(trace.out.counts, trace_py.out.counts)
    valid = np.isfinite(trace.out.times)
    assert np.array_equal(valid, np.isfinite(trace_py.out.times))
    assert np.max(np.abs(trace.out.times[valid] - trace_py.out.times[valid])) <= 1e-12
    g = np.random.default_rng(1).normal(size=trace.out.times.shape)
    grads_py = backward_srm(trace_py, g)
    for what in ("w", "inputs", "delays", "axonal"):
        assert rel_err(getattr(grads, what), getattr(grads_py, what)) <= 1e-12, what


# ---------------------------------------------------------------------- finite differences of the library
def loss(model, w, x, d, ax, g):
    """(L = sum g * output times over valid spikes, counts)."""
    out = simulate_srm(model, w, x, delays=d, axonal=ax).out
    valid = np.arange(out.times.shape[2])[None, None, :] < out.counts[:, :, None]
    return float(np.sum(np.where(valid, g * out.times, 0.0))), out.counts


def central(f, x0: float, counts0) -> float | None:
    """(f(x0 + h) - f(x0 - h)) / 2h, h = 1e-6 relative; None when a spike count changes in either run."""
    h = 1e-6 * max(abs(x0), 1.0)
    lp, cp = f(x0 + h)
    lm, cm = f(x0 - h)
    if not (np.array_equal(cp, counts0) and np.array_equal(cm, counts0)):
        return None
    return (lp - lm) / (2 * h)


def with_time(x: SpikeTrain, idx, value) -> SpikeTrain:
    t = x.times.copy()
    t[idx] = value
    return SpikeTrain(t, x.counts)


@pytest.mark.parametrize("name,seed", [("lif3", 1), ("alpha", 2), ("adaptive", 3), ("custom", 5)])
def test_gradients_equal_central_differences(name, seed):
    rng = np.random.default_rng(seed)
    model = make_model(name)
    x, w, d, ax = problem(rng, name, 2, 3, 2)
    trace = simulate_srm(model, w, x, delays=d, axonal=ax)
    counts0 = trace.out.counts
    assert counts0.min() >= 1
    g = rng.normal(size=trace.out.times.shape)
    grads = backward_srm(trace, g)
    checked = 0

    def compare(analytic, numeric, what):
        nonlocal checked
        keep = [i for i, v in enumerate(numeric) if v is not None]
        assert len(keep) >= max(1, len(numeric) // 2), f"{what}: spike counts changed in most finite differences"
        e = rel_err(np.asarray(analytic)[keep], np.asarray([numeric[i] for i in keep]))
        assert e <= 1e-6, f"dL/d{what} = {analytic} vs central differences {numeric} (relative {e:.3g})"
        checked += len(keep)

    def wf(i, m):
        return lambda v: loss(model, np.where((np.arange(w.shape[0])[:, None] == i) & (np.arange(w.shape[1]) == m),
                                              v, w), x, d, ax, g)

    def df(i, m):
        return lambda v: loss(model, w, x, np.where((np.arange(d.shape[0])[:, None] == i) & (np.arange(d.shape[1])
                                                                                           == m), v, d), ax, g)

    entries = [(i, m) for i in range(w.shape[0]) for m in range(w.shape[1])]
    compare([grads.w[e] for e in entries], [central(wf(*e), w[e], counts0) for e in entries], "w")
    compare([grads.delays[e] for e in entries], [central(df(*e), d[e], counts0) for e in entries], "delays")
    slots = [tuple(int(k) for k in s) for s in np.argwhere(np.isfinite(x.times))[:6]]
    compare([grads.inputs[s] for s in slots],
            [central(lambda v, s=s: loss(model, w, with_time(x, s, v), d, ax, g), x.times[s], counts0) for s in slots],
            "inputs")
    compare(list(grads.axonal),
            [central(lambda v, m=m: loss(model, w, x, d, np.where(np.arange(ax.size) == m, v, ax), g), ax[m], counts0)
             for m in range(ax.size)], "axonal")
    names = list(model.names)
    compare([grads.params[k] for k in names],
            [central(lambda v, k=k: loss(model.with_(**{k: v}), w, x, d, ax, g), model.params[k], counts0)
             for k in names], "params")
    assert checked >= 10


# ---------------------------------------------------------------------- cost in spikes, not in T
@pytest.mark.parametrize("name", ["lif2", "adaptive", "custom"])
def test_shift_by_1e5_keeps_spikes_and_gradients(name):
    rng = np.random.default_rng(12)
    model = make_model(name)
    x, w, d, ax = problem(rng, name, 2, 4, 3)
    shift = 1e5
    xs = SpikeTrain(np.where(np.isfinite(x.times), x.times + shift, np.inf), x.counts)
    a = simulate_srm(model, w, x, delays=d, axonal=ax)
    b = simulate_srm(model, w, xs, delays=d, axonal=ax)
    np.testing.assert_array_equal(a.out.counts, b.out.counts)
    valid = np.isfinite(a.out.times)
    assert valid.sum() >= 6
    diff = np.max(np.abs((b.out.times[valid] - shift) - a.out.times[valid]))
    assert diff <= 1e-8 * np.max(np.abs(a.out.times[valid])), f"shifted spike times moved by {diff:.3g}"
    g = rng.normal(size=a.out.times.shape)
    ga, gb = backward_srm(a, g), backward_srm(b, g)
    for what in ("w", "inputs", "delays", "axonal"):
        e = rel_err(getattr(gb, what), getattr(ga, what))
        assert e <= 1e-6, f"dL/d{what} after a shift of {shift:g}: relative error {e:.3g}"
    names = list(model.names)
    e = rel_err([gb.params[k] for k in names], [ga.params[k] for k in names])
    assert e <= 1e-6, f"dL/dp after a shift of {shift:g}: {gb.params} vs {ga.params}"


# ---------------------------------------------------------------------- two layers
def test_two_layers_chain_equals_finite_differences():
    rng = np.random.default_rng(6)
    m1, m2 = make_model("lif3"), make_model("adaptive")
    x, w1, d1, ax1 = problem(rng, "lif3", 2, 4, 3)
    w2 = rng.normal(1.0, 0.5, size=(3, 2)) * 0.6
    d2 = rng.uniform(0.0, 2.0, size=(3, 2))
    ax2 = rng.uniform(0.0, 2.0, size=2)

    def run(w1_):
        t1 = simulate_srm(m1, w1_, x, delays=d1, axonal=ax1)
        t2 = simulate_srm(m2, w2, t1.out, delays=d2, axonal=ax2)
        return t1, t2

    t1, t2 = run(w1)
    assert t1.out.dropped.sum() == 0 and t2.out.dropped.sum() == 0
    assert t1.out.counts.min() >= 1 and t2.out.counts.min() >= 1
    g = rng.normal(size=t2.out.times.shape)
    g2 = backward_srm(t2, g)
    assert g2.inputs.shape == t1.out.times.shape
    g1 = backward_srm(t1, g2.inputs)

    def f(i, m):
        def loss2(v):
            t1_, t2_ = run(np.where((np.arange(w1.shape[0])[:, None] == i) & (np.arange(w1.shape[1]) == m), v, w1))
            valid = np.arange(t2_.out.times.shape[2])[None, None, :] < t2_.out.counts[:, :, None]
            return float(np.sum(np.where(valid, g * t2_.out.times, 0.0))), (t1_.out.counts, t2_.out.counts)
        return loss2

    counts0 = (t1.out.counts, t2.out.counts)
    got, want = [], []
    for i in range(w1.shape[0]):
        for m in range(w1.shape[1]):
            h = 1e-6 * max(abs(w1[i, m]), 1.0)
            (lp, cp), (lm, cm) = f(i, m)(w1[i, m] + h), f(i, m)(w1[i, m] - h)
            if all(np.array_equal(a, b) for a, b in zip(cp + cm, counts0 + counts0)):
                got.append(g1.w[i, m])
                want.append((lp - lm) / (2 * h))
    assert len(got) >= 6
    e = rel_err(got, want)
    assert e <= 1e-6, f"dL/dW1 through layer 2: {got} vs central differences {want} (relative {e:.3g})"
