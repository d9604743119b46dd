"""The recurrent continuous-time SRM oracle of :mod:`ift_snn.backends.reference` against independent checks.

``event_srm_simulate_recurrent`` / ``event_srm_gradients_recurrent`` (the global sums of the recurrent model,
all neurons of a sample scanned together on a grid, one dense implicit-function solve per sample) against:
the feed-forward oracle at V = 0, central finite differences of its own simulation, and a closed form (a
neuron driven only through one recurrent connection).
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from ift_snn.backends.reference import (event_srm_gradients, event_srm_gradients_recurrent, event_srm_simulate,
                                        event_srm_simulate_recurrent)

from .conftest import rel_err

T = sp.Symbol("t", real=True)
TAU, TAU_S, THETA = sp.symbols("tau tau_s theta", positive=True)
EPS = TAU * TAU_S / (TAU - TAU_S) * (sp.exp(-T / TAU) - sp.exp(-T / TAU_S))
NU = -THETA * sp.exp(-T / TAU)
VALUES = {TAU: 2.0, TAU_S: 1.0, THETA: 1.0}
GRID = 2e-3
T_END = 40.0  # every test problem is silent long before: the last spike is checked to be 10 tau earlier
CHUNK = 512


def problem(seed: int, B: int = 2, C: int = 3, M: int = 3, S: int = 4, vscale: float = 0.8):
    """(inputs (B, C, S) +inf padded, w, delays, axonal, V mixed sign, Dr in [0.5, 2])."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, S + 1, size=(B, C))
    x = np.full((B, C, S), np.inf)
    for b in range(B):
        for c in range(C):
            x[b, c, :counts[b, c]] = np.sort(rng.uniform(0.0, 6.0, counts[b, c]))
    w = rng.normal(1.5, 1.0, size=(C, M)) * 0.5
    d = rng.uniform(0.0, 2.0, size=(C, M))
    ax = rng.uniform(0.0, 2.0, size=M)
    V = rng.uniform(-vscale, vscale, size=(M, M))
    Dr = rng.uniform(0.5, 2.0, size=(M, M))
    return x, w, d, ax, V, Dr


def sim(w, x, d, ax, V, Dr, values=VALUES):
    out = event_srm_simulate_recurrent(EPS, NU, values, w, x, d, ax, T_END, GRID, recurrent=V, recurrent_delays=Dr,
                                       t=T, chunk=CHUNK)
    last = max((float(s.max()) for row in out.spikes for s in row if s.size), default=0.0)
    assert last < T_END - 20.0, f"a spike at {last} is too close to t_end = {T_END}"
    return out


def grads(w, x, d, ax, V, Dr, out, g, values=VALUES):
    return event_srm_gradients_recurrent(EPS, NU, values, w, x, out, g, d, ax, recurrent=V, recurrent_delays=Dr,
                                         t=T)


def loss(out, g) -> float:
    valid = np.arange(out.times.shape[2])[None, None, :] < out.counts[:, :, None]
    return float(np.sum(np.where(valid, g[:, :, :out.times.shape[2]] * out.times, 0.0)))


def test_refuses_non_positive_recurrent_delays():
    x, w, d, ax, V, Dr = problem(0, B=1)
    for bad in (0.0, -0.5):
        Dr_bad = Dr.copy()
        Dr_bad[1, 1] = bad
        with pytest.raises(ValueError, match="recurrent_delays"):
            event_srm_simulate_recurrent(EPS, NU, VALUES, w, x, d, ax, recurrent=V, recurrent_delays=Dr_bad, t=T)
        with pytest.raises(ValueError, match="recurrent_delays"):
            event_srm_gradients_recurrent(EPS, NU, VALUES, w, x, [[np.zeros(0)] * 3], np.zeros((1, 3, 1)), d, ax,
                                          recurrent=V, recurrent_delays=Dr_bad, t=T)
    with pytest.raises(ValueError, match="recurrent has shape"):
        event_srm_simulate_recurrent(EPS, NU, VALUES, w, x, d, ax, recurrent=V[:2], recurrent_delays=Dr, t=T)


# ---------------------------------------------------------------------- (1) V = 0 is the feed-forward oracle
@pytest.mark.parametrize("seed", [1, 2])
def test_zero_recurrence_equals_the_feed_forward_oracle(seed):
    x, w, d, ax, _, Dr = problem(seed)
    V0 = np.zeros_like(Dr)
    rec = sim(w, x, d, ax, V0, Dr)
    ff = event_srm_simulate(EPS, NU, VALUES, w, x, d, ax, T_END, GRID, t=T)
    np.testing.assert_array_equal(rec.counts, ff.counts)
    assert rec.counts.sum() >= 8
    fin = np.isfinite(ff.times)
    np.testing.assert_array_equal(np.isfinite(rec.times), fin)
    assert np.max(np.abs(rec.times[fin] - ff.times[fin])) <= 1e-12
    g = np.random.default_rng(seed + 100).normal(size=ff.times.shape)
    gr = grads(w, x, d, ax, V0, Dr, rec, g)
    gf = event_srm_gradients(EPS, NU, VALUES, w, x, ff, g, d, ax, t=T)
    for what in ("w", "inputs", "delays", "axonal"):
        e = rel_err(getattr(gr, what), getattr(gf, what))
        assert e <= 1e-10, f"dL/d{what}: relative error {e:.3g} against the feed-forward oracle"
    assert set(gr.params) == set(gf.params) == {"tau", "tau_s", "theta"}
    e = rel_err([gr.params[k] for k in sorted(gf.params)], [gf.params[k] for k in sorted(gf.params)])
    assert e <= 1e-10, f"dL/dp: {gr.params} vs {gf.params}"
    assert gr.recurrent.shape == gr.recurrent_delays.shape == (3, 3)
    assert np.all(gr.recurrent_delays == 0.0)  # no recurrent current to move
    assert np.all(np.isfinite(gr.recurrent)) and np.any(gr.recurrent != 0.0)  # but switching V on moves spikes


# ---------------------------------------------------------------------- (2) finite differences of itself
def central(f, x0: float, counts0):
    h = 1e-6 * max(abs(x0), 1.0)
    op, om = f(x0 + h), f(x0 - h)
    if not (np.array_equal(op.counts, counts0) and np.array_equal(om.counts, counts0)):
        return None
    return op, om, h


def test_gradients_equal_central_differences_of_the_oracle():
    x, w, d, ax, V, Dr = problem(3)
    out = sim(w, x, d, ax, V, Dr)
    ff = sim(w, x, d, ax, np.zeros_like(V), Dr)
    assert out.counts.min() >= 1 and out.counts.sum() >= 12
    assert not np.array_equal(out.counts, ff.counts)  # the recurrence is doing something here
    counts0 = out.counts
    g = np.random.default_rng(30).normal(size=out.times.shape)
    gr = grads(w, x, d, ax, V, Dr, out, g)
    checked = 0

    def fd(f, x0):
        r = central(f, x0, counts0)
        if r is None:
            return None
        op, om, h = r
        return (loss(op, g) - loss(om, g)) / (2 * h)

    def compare(analytic, numeric, what):
        nonlocal checked
        keep = [i for i, v in enumerate(numeric) if v is not None]
        assert len(keep) >= max(1, len(numeric) - 1), f"{what}: spike counts changed in the finite differences"
        e = rel_err(np.asarray(analytic)[keep], np.asarray([numeric[i] for i in keep]))
        assert e <= 1e-6, f"dL/d{what} = {analytic} vs central differences {numeric} (relative {e:.3g})"
        checked += len(keep)

    def put(a, idx, v):
        a = a.copy()
        a[idx] = v
        return a

    entries = [(i, m) for i in range(w.shape[0]) for m in range(w.shape[1])]
    compare([gr.w[e] for e in entries],
            [fd(lambda v, e=e: sim(put(w, e, v), x, d, ax, V, Dr), w[e]) for e in entries], "w")
    compare([gr.delays[e] for e in entries[:3]],
            [fd(lambda v, e=e: sim(w, x, put(d, e, v), ax, V, Dr), d[e]) for e in entries[:3]], "delays")
    pairs = [(j, m) for j in range(3) for m in range(3)]
    compare([gr.recurrent[e] for e in pairs],
            [fd(lambda v, e=e: sim(w, x, d, ax, put(V, e, v), Dr), V[e]) for e in pairs], "recurrent")
    compare([gr.recurrent_delays[e] for e in pairs],
            [fd(lambda v, e=e: sim(w, x, d, ax, V, put(Dr, e, v)), Dr[e]) for e in pairs], "recurrent_delays")
    s = tuple(int(k) for k in np.argwhere(np.isfinite(x))[1])
    compare([gr.inputs[s]], [fd(lambda v: sim(w, put(x, s, v), d, ax, V, Dr), x[s])], "inputs")
    names = ["tau", "tau_s", "theta"]
    sym = {"tau": TAU, "tau_s": TAU_S, "theta": THETA}
    compare([gr.params[k] for k in names],
            [fd(lambda v, k=k: sim(w, x, d, ax, V, Dr, {**VALUES, sym[k]: v}), VALUES[sym[k]]) for k in names],
            "params")
    compare(list(gr.axonal), [float(np.sum(np.where(np.isfinite(out.times[:, m]), g[:, m], 0.0))) for m in range(3)],
            "axonal")
    assert checked >= 30
    assert np.all(np.abs(gr.recurrent_delays) > 0)  # every recurrent connection carries spikes here


# ---------------------------------------------------------------------- (3) the recurrence matters
def test_recurrence_changes_spikes():
    x, w, d, ax, V, Dr = problem(4)
    rec, ff = sim(w, x, d, ax, V, Dr), sim(w, x, d, ax, np.zeros_like(V), Dr)
    assert ff.counts.sum() >= 6
    same = np.array_equal(rec.counts, ff.counts) and np.allclose(rec.times[np.isfinite(rec.times)],
                                                                 ff.times[np.isfinite(ff.times)], atol=1e-6)
    assert not same


def first_crossing(weight: float) -> float:
    """The first lag s > 0 with weight * eps(s) = theta = 1 for eps = 2 (exp(-s/2) - exp(-s)) (tau 2, tau_s 1)."""
    y = (1.0 + np.sqrt(1.0 - 2.0 / weight)) / 2.0
    return -2.0 * np.log(y)


def test_spike_relayed_through_one_recurrent_connection_matches_closed_form():
    """Input -> neuron 0 (w = 3, one spike); neuron 1 has no input and spikes only through V[0, 1] = 3 after
    Dr[0, 1]; neuron 2 receives nothing it can cross with. Times and gradients in closed form."""
    t_in, w0, v01, dr01 = 0.4, 3.0, 3.0, 0.8
    x = np.array([[[t_in]]])
    w = np.array([[w0, 0.0, 0.2]])
    d = np.array([[0.3, 0.0, 0.0]])
    V = np.zeros((3, 3))
    V[0, 1], V[1, 2], V[2, 0] = v01, 0.4, -1.0
    Dr = np.full((3, 3), 1.5)
    Dr[0, 1] = dr01
    out = sim(w, x, d, None, V, Dr)
    np.testing.assert_array_equal(out.counts, [[1, 1, 0]])
    t0 = t_in + 0.3 + first_crossing(w0)
    t1 = t0 + dr01 + first_crossing(v01)
    assert abs(out.times[0, 0, 0] - t0) <= 1e-12 and abs(out.times[0, 1, 0] - t1) <= 1e-12
    ff = sim(w, x, d, None, np.zeros((3, 3)), Dr)
    np.testing.assert_array_equal(ff.counts, [[1, 0, 0]])
    # L = t1: dt1/dt_in = dt1/dDr[0,1] = 1 (shifts), dt1/dV[0,1] = -eps(s) / (V eps'(s)) at s = t1 - t0 - Dr
    g = np.zeros((1, 3, 1))
    g[0, 1, 0] = 1.0
    gr = grads(w, x, d, None, V, Dr, out, g)
    s = first_crossing(v01)
    eps, deps = 2 * (np.exp(-s / 2) - np.exp(-s)), 2 * (-np.exp(-s / 2) / 2 + np.exp(-s))
    assert abs(gr.inputs[0, 0, 0] - 1.0) <= 1e-10 and abs(gr.delays[0, 0] - 1.0) <= 1e-10
    assert abs(gr.recurrent_delays[0, 1] - 1.0) <= 1e-10
    assert abs(gr.recurrent[0, 1] - (-eps / (v01 * deps))) <= 1e-10
    assert np.count_nonzero(gr.recurrent_delays) == 1
    assert np.count_nonzero(gr.recurrent) == 1  # V[0, 1]: every other arrival comes after t1 or never
