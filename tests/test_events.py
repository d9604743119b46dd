"""Continuous time (ift_snn.events): exact forward, IFT spike-time gradients against finite differences.

The gradient oracle here is central finite differences in float64 (the
function of the weights is smooth wherever the spike counts do not change;
every check asserts the counts are unchanged under the perturbation).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ift_snn.events import (
    EventLIF,
    EventNetwork,
    SpikeTrain,
    count_mse,
    first_crossing,
    layer_backward,
    membrane,
    simulate,
    ttfs_cross_entropy,
)

RATIOS = [(2.0, 1.0), (3.0, 1.0)]  # tau = 2 tau_s (closed form) and tau = 3 tau_s (bracketed root finder)


def make_problem(sizes, tau, tau_s, seed, B=2, S=8, t_max=10.0, max_spikes=24):
    """A network whose neurons fire 4-15 spikes: weights scaled by 1/sqrt(tau tau_s), less in deeper layers."""
    rng = np.random.default_rng(seed)
    model = EventLIF(tau=tau, tau_s=tau_s, theta=1.0, max_spikes=max_spikes)
    t = np.sort(rng.uniform(0, t_max, size=(B, sizes[0], S)), axis=2)
    x = SpikeTrain(t, np.full((B, sizes[0]), S))
    net = EventNetwork(sizes, model, seed=seed)
    scale = 2.0 / np.sqrt(2.0 * tau * tau_s)
    shrink = 0.8 if tau == 2 * tau_s else 0.92  # deeper layers see more input spikes
    net.weights = [rng.uniform(0.1, 0.5, size=(a, b)) * scale * shrink**layer
                   for layer, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    return net, x, rng


def rel(got, want) -> float:
    got, want = np.asarray(got, float), np.asarray(want, float)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def left_limit_u(model, w, x, out):
    """u at every recorded spike time, before that spike's reset: (B, M, S) (NaN on padding)."""
    B, M, S = out.times.shape
    t = np.where(np.isfinite(out.times), out.times, 0.0).reshape(B, M * S)
    u = membrane(model, w, x, out, t).reshape(B, M, M, S)
    u = np.stack([u[:, m, m, :] for m in range(M)], axis=1)
    return np.where(np.isfinite(out.times), u, np.nan)


# ---------------------------------------------------------------------- forward
@pytest.mark.parametrize("tau,tau_s", RATIOS + [(1.0, 2.0)])
def test_spikes_sit_on_threshold_and_no_crossing_is_missed(tau, tau_s):
    net, x, _ = make_problem([6, 5], tau, tau_s, seed=0, max_spikes=60)
    model, w = net.models[0], net.weights[0]
    trace = simulate(model, w, x)
    out = trace.out
    assert out.dropped.sum() == 0 and out.counts.min() >= 4
    # every recorded spike satisfies u(t_k) = theta (the global sum of docs/MATH.md section 7, not the simulator's state)
    u_k = left_limit_u(model, w, x, out)
    valid = np.isfinite(out.times)
    assert np.max(np.abs(u_k[valid] - model.theta)) <= 1e-12 * model.theta
    # spike times increase per neuron and du/dt > 0 at each crossing
    with np.errstate(invalid="ignore"):
        assert np.all(np.diff(out.times, axis=2)[valid[:, :, 1:]] > 0)
    assert np.all(trace.udot[valid] > 0)
    # a dense grid of 10^4 points per sample: u never exceeds theta (a missed crossing would)
    grid = np.linspace(0.0, 16.0, 10_000)[None, :].repeat(x.shape[0], axis=0)
    u = membrane(model, w, x, out, grid)
    assert u.max() <= model.theta * (1 + 1e-12)
    # and it comes close to theta before each spike: just before t_k, u is below theta by about u'(t_k) dt
    dt = 1e-7
    t_b = np.where(valid, out.times - dt, 0.0)
    B, M, S = out.times.shape
    ub = membrane(model, w, x, out, t_b.reshape(B, M * S)).reshape(B, M, M, S)
    ub = np.stack([ub[:, m, m, :] for m in range(M)], axis=1)
    gap = (model.theta - ub)[valid]
    assert np.all(gap > 0)
    np.testing.assert_allclose(gap, trace.udot[valid] * dt, rtol=1e-4)


@pytest.mark.parametrize("tau,tau_s", RATIOS + [(1.0, 3.0)])
def test_a_crossing_that_barely_reaches_threshold_is_found(tau, tau_s):
    """One input whose PSP peaks at theta (1 +- 1e-9): a grid search would miss it, the bracket cannot."""
    model = EventLIF(tau=tau, tau_s=tau_s, theta=1.0)
    s_peak = np.log(tau / tau_s) / (1 / tau_s - 1 / tau)
    peak = model.c * (np.exp(-s_peak / tau) - np.exp(-s_peak / tau_s))
    x = SpikeTrain.from_lists([[[0.5]], [[0.5]]])
    w = np.array([[(1 + 1e-9) / peak, (1 - 1e-9) / peak]])
    out = simulate(model, w, x).out
    assert out.counts[0].tolist() == [1, 0] and out.counts[1].tolist() == [1, 0]
    assert abs(out.times[0, 0, 0] - (0.5 + s_peak)) < 1e-3


def test_closed_form_and_root_finder_agree():
    net, x, rng = make_problem([6, 5, 4], 2.0, 1.0, seed=1)
    model = net.models[0]
    for w in net.weights[:1]:
        a = simulate(model.with_(solver="closed"), w, x)
        b = simulate(model.with_(solver="bracketed"), w, x)
        assert np.array_equal(a.out.counts, b.out.counts) and a.out.counts.min() >= 4
        valid = np.isfinite(a.out.times)
        assert np.max(np.abs(a.out.times[valid] - b.out.times[valid])) <= 1e-12 * np.max(a.out.times[valid])
        assert rel(a.udot[valid], b.udot[valid]) <= 1e-12
    # and directly, on random states
    I = rng.uniform(-2, 4, 2000)
    V = rng.uniform(-2, 4, 2000)
    L = rng.uniform(0, 5, 2000)
    u0 = model.c * (V - I)
    keep = u0 < model.theta
    s1 = first_crossing(model, I[keep], V[keep], L[keep], closed=True)
    s2 = first_crossing(model, I[keep], V[keep], L[keep], closed=False)
    assert np.array_equal(np.isnan(s1), np.isnan(s2)) and np.sum(~np.isnan(s1)) > 100
    ok = ~np.isnan(s1)
    assert np.max(np.abs(s1[ok] - s2[ok])) <= 1e-12 * max(1.0, np.max(s1[ok]))


def test_the_cap_reports_dropped_spikes_and_keeps_the_first_ones():
    net, x, _ = make_problem([6, 4], 2.0, 1.0, seed=2, max_spikes=60)
    full = simulate(net.models[0], net.weights[0], x).out
    capped = simulate(net.models[0].with_(max_spikes=3), net.weights[0], x).out
    assert full.counts.min() > 3
    assert np.array_equal(capped.counts, np.minimum(full.counts, 3))
    assert np.array_equal(capped.dropped, full.counts - 3)
    assert np.array_equal(capped.times, full.times[:, :, :3])


# ---------------------------------------------------------------------- gradients
def _loss_fn(net, kind, labels, fixed_g=None):
    def loss(weights, x):
        saved = net.weights
        net.weights = weights
        try:
            traces = net.forward(x)
        finally:
            net.weights = saved
        out = traces[-1].out
        counts = [tr.out.counts for tr in traces]
        if kind == "ttfs":
            value, g, _ = ttfs_cross_entropy(out, labels, tau_L=2.0)
        else:  # the count loss's pseudo-derivative, held fixed: sum_k g_k t_k is what backward differentiates
            value = float(np.sum(fixed_g * np.where(np.isfinite(out.times), out.times, 0.0)))
            g = fixed_g
        return value, g, counts, traces
    return loss


def _fd_check(net, x, kind, rng, n_entries=6, h=1e-6):
    B, n_out = x.shape[0], net.sizes[-1]
    labels = rng.integers(0, n_out, size=B)
    fixed = None
    if kind == "count":
        out = net.forward(x)[-1].out
        _, fixed, _ = count_mse(out, np.full(out.counts.shape, 6.0))
        fixed = fixed + np.where(np.isfinite(out.times), 0.1 * rng.normal(size=fixed.shape), 0.0)
    loss = _loss_fn(net, kind, labels, fixed)
    _, g, counts, traces = loss(net.weights, x)
    assert all(c.min() >= 4 and c.max() <= 15 for c in counts), [(c.min(), c.max()) for c in counts]
    dWs, dx = net.backward(traces, g)
    got, want = [], []
    for layer, w in enumerate(net.weights):
        for _ in range(n_entries):
            i, j = rng.integers(w.shape[0]), rng.integers(w.shape[1])
            plus = [v.copy() for v in net.weights]
            minus = [v.copy() for v in net.weights]
            plus[layer][i, j] += h
            minus[layer][i, j] -= h
            lp, _, cp, _ = loss(plus, x)
            lm, _, cm, _ = loss(minus, x)
            assert all(np.array_equal(a, b) for a, b in zip(cp, cm)), "a spike appeared: choose another problem"
            got.append(dWs[layer][i, j])
            want.append((lp - lm) / (2 * h))
    got_x, want_x = [], []
    # half the input times among those the loss depends on (TTFS ignores inputs after the first output spike)
    live = np.argwhere(dx != 0)
    picks = [tuple(live[i]) for i in rng.choice(len(live), size=n_entries // 2, replace=False)]
    picks += [tuple(rng.integers(n) for n in x.shape) for _ in range(n_entries - len(picks))]
    for b, c, k in picks:
        tp, tm = x.times.copy(), x.times.copy()
        tp[b, c, k] += h
        tm[b, c, k] -= h
        lp, _, cp, _ = loss(net.weights, SpikeTrain(np.sort(tp, axis=2), x.counts))
        lm, _, cm, _ = loss(net.weights, SpikeTrain(np.sort(tm, axis=2), x.counts))
        assert all(np.array_equal(a, b) for a, b in zip(cp, cm))
        got_x.append(dx[b, c, k])
        want_x.append((lp - lm) / (2 * h))
    return np.array(got), np.array(want), np.array(got_x), np.array(want_x), traces, g


@pytest.mark.parametrize("tau,tau_s", RATIOS)
@pytest.mark.parametrize("sizes", [[6, 5, 3], [6, 5, 4, 3]])
@pytest.mark.parametrize("kind", ["ttfs", "count"])
def test_gradients_equal_finite_differences(tau, tau_s, sizes, kind):
    net, x, rng = make_problem(sizes, tau, tau_s, seed=len(sizes))
    got, want, got_x, want_x, _, _ = _fd_check(net, x, kind, rng)
    assert rel(got, want) <= 1e-6, (got, want)
    assert rel(got_x, want_x) <= 1e-6, (got_x, want_x)
    assert np.max(np.abs(want)) > 1e-3 and np.max(np.abs(want_x)) > 1e-3  # not a vacuous comparison


@pytest.mark.parametrize("tau,tau_s", RATIOS)
def test_dropping_the_reset_term_is_wrong(tau, tau_s):
    net, x, rng = make_problem([6, 5, 3], tau, tau_s, seed=3)
    got, want, _, _, traces, g = _fd_check(net, x, "ttfs", rng, n_entries=8)
    assert rel(got, want) <= 1e-6
    wrong, _ = net.backward(traces, g, reset_term=False)
    exact, _ = net.backward(traces, g)
    err = max(rel(a, b) for a, b in zip(wrong, exact))
    assert err > 0.1, f"without the own-spike term the gradient is only {err:.3g} off"


def test_ttfs_loss_gradient_is_the_softmax_formula():
    out = SpikeTrain.from_lists([[[1.0, 2.0], [0.5], [3.0]], [[0.2], [0.1, 0.4], [0.3]]])
    loss, g, pred = ttfs_cross_entropy(out, np.array([2, 1]), tau_L=0.5)
    t = out.times[:, :, 0]
    p = np.exp(-t / 0.5) / np.exp(-t / 0.5).sum(axis=1, keepdims=True)
    assert np.isclose(loss, -np.mean(np.log(p[[0, 1], [2, 1]])))
    onehot = np.eye(3)[[2, 1]]
    np.testing.assert_allclose(g[:, :, 0], (onehot - p) / (0.5 * 2), rtol=1e-14)
    assert np.all(g[:, :, 1:] == 0) and pred.tolist() == [1, 1]
    # silent neurons: substituted, documented t_absent gets probability but no gradient
    silent = SpikeTrain.from_lists([[[1.0], [], [2.0]]])
    loss2, g2, _ = ttfs_cross_entropy(silent, np.array([0]), t_absent=10.0)
    assert np.isfinite(loss2) and g2[0, 1, 0] == 0 and g2[0, 0, 0] > 0  # later label spike: larger loss


def test_count_pseudo_derivative_is_bats_error_on_every_spike():
    out = SpikeTrain.from_lists([[[1.0, 2.0, 3.0], [0.5]]])
    loss, g, pred = count_mse(out, np.array([[1.0, 4.0]]))
    assert loss == pytest.approx(0.5 * (2.0**2 + 3.0**2))
    assert g[0, 0].tolist() == [-2.0, -2.0, -2.0] and g[0, 1].tolist() == [3.0, 0.0, 0.0]
    assert pred.tolist() == [0]


# ---------------------------------------------------------------------- properties
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), ratio=st.sampled_from([2.0, 2.5, 3.0, 0.5]), layers=st.integers(1, 2),
       n_in=st.integers(2, 5), n_hidden=st.integers(1, 4))
def test_property_directional_derivative_equals_finite_difference(seed, ratio, layers, n_in, n_hidden):
    """For random dense networks, <dL/dW, V> = (L(W + hV) - L(W - hV)) / 2h along a random V."""
    rng = np.random.default_rng(seed)
    tau_s = 1.0
    tau = ratio * tau_s
    sizes = [n_in] + [n_hidden] * layers + [2]
    model = EventLIF(tau=tau, tau_s=tau_s, theta=rng.uniform(0.5, 1.5), dtheta=rng.uniform(0.3, 1.5),
                     max_spikes=30)
    S = int(rng.integers(1, 6))
    x = SpikeTrain(np.sort(rng.uniform(0, 8, size=(2, n_in, S)), axis=2), np.full((2, n_in), S))
    net = EventNetwork(sizes, model)
    net.weights = [rng.normal(1.5, 1.0, size=(a, b)) * model.theta / (tau * tau_s) for a, b in
                   zip(sizes[:-1], sizes[1:])]
    traces = net.forward(x)
    out = traces[-1].out
    g = np.where(np.isfinite(out.times), rng.normal(size=out.times.shape), 0.0)
    dWs, _ = net.backward(traces, g)
    V = [rng.normal(size=w.shape) for w in net.weights]
    h = 1e-6

    def L(weights):
        other = EventNetwork(sizes, model)
        other.weights = weights
        tr = other.forward(x)
        o = tr[-1].out
        return float(np.sum(g * np.where(np.isfinite(o.times), o.times, 0.0))), [t.out.counts for t in tr]

    base = [t.out.counts for t in traces]
    fds = []
    for step in (h, h / 2):
        lp, cp = L([w + step * v for w, v in zip(net.weights, V)])
        lm, cm = L([w - step * v for w, v in zip(net.weights, V)])
        if not all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(cp, cm, base)):
            return  # a spike appeared or vanished within h: the loss is not differentiable here
        fds.append((lp - lm) / (2 * step))
    # Richardson: O(h^4) truncation error, needed near a barely-reached threshold (u' small, curvature large)
    fd = (4 * fds[1] - fds[0]) / 3
    got = sum(float(np.sum(d * v)) for d, v in zip(dWs, V))
    assert abs(got - fd) <= 1e-6 * max(1.0, abs(fd)) + 1e-7 * sum(np.abs(d).sum() for d in dWs)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), ratio=st.sampled_from([2.0, 3.0, 0.4]))
def test_property_every_spike_is_a_crossing_and_none_is_missed(seed, ratio):
    rng = np.random.default_rng(seed)
    model = EventLIF(tau=ratio, tau_s=1.0, theta=1.0, dtheta=rng.uniform(0.2, 2.0), max_spikes=200)
    C = int(rng.integers(1, 5))
    S = int(rng.integers(1, 6))
    x = SpikeTrain(np.sort(rng.uniform(0, 5, size=(1, C, S)), axis=2), np.full((1, C), S))
    w = rng.normal(0.5, 1.5, size=(C, 3)) / ratio
    out = simulate(model, w, x).out
    assert out.dropped.sum() == 0
    valid = np.isfinite(out.times)
    if valid.any():
        assert np.max(np.abs(left_limit_u(model, w, x, out)[valid] - 1.0)) <= 1e-12
    u = membrane(model, w, x, out, np.linspace(0, 12, 2000)[None])
    assert u.max() <= 1.0 + 1e-12


# ---------------------------------------------------------------------- bad input
def test_bad_spike_times_are_refused_with_the_value():
    ok = np.array([[[0.0, 1.0, np.inf]]])
    n = np.array([[2]])
    SpikeTrain(ok, n)
    with pytest.raises(ValueError, match="not sorted"):
        SpikeTrain(np.array([[[2.0, 1.0]]]), np.array([[2]]))
    with pytest.raises(ValueError, match="NaN"):
        SpikeTrain(np.array([[[np.nan, 1.0]]]), np.array([[2]]))
    with pytest.raises(ValueError, match=r"-1\.0"):
        SpikeTrain(np.array([[[-1.0, 1.0]]]), np.array([[2]]))
    with pytest.raises(ValueError, match="inf"):
        SpikeTrain(np.array([[[np.inf, 1.0]]]), np.array([[2]]))
    with pytest.raises(ValueError, match="padding"):
        SpikeTrain(np.array([[[1.0, 2.0]]]), np.array([[1]]))
    with pytest.raises(ValueError, match="counts"):
        SpikeTrain(np.array([[[1.0, 2.0]]]), np.array([[3]]))
    with pytest.raises(TypeError, match="floating"):
        SpikeTrain(np.array([[[1, 2]]]), np.array([[2]]))
    with pytest.raises(TypeError, match="list"):
        SpikeTrain([[[1.0]]], np.array([[1]]))


@pytest.mark.parametrize("kw,match", [
    (dict(tau=0.0), "tau=0.0"), (dict(tau=-2.0), "tau=-2.0"), (dict(tau_s=0.0), "tau_s=0.0"),
    (dict(tau_s=-1.0), "tau_s=-1.0"), (dict(tau=1.0, tau_s=1.0), "equals tau_s"),
    (dict(tau=float("nan")), "tau=nan"), (dict(theta=0.0), "theta=0.0"), (dict(dtheta=-1.0), "dtheta=-1.0"),
    (dict(max_spikes=0), "max_spikes=0"), (dict(tau=3.0, solver="closed"), "tau == 2 tau_s"),
    (dict(solver="newton"), "solver='newton'"),
])
def test_bad_model_parameters_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        EventLIF(**kw)


def test_bad_types_and_weights_are_refused():
    with pytest.raises(TypeError, match="max_spikes=2.5"):
        EventLIF(max_spikes=2.5)
    with pytest.raises(TypeError, match="tau='2'"):
        EventLIF(tau="2")
    x = SpikeTrain.from_lists([[[0.1], [0.2]]])
    model = EventLIF()
    with pytest.raises(ValueError, match=r"w\[1, 0\] = nan"):
        simulate(model, np.array([[1.0], [np.nan]]), x)
    with pytest.raises(ValueError, match=r"w\[0, 0\] = inf"):
        simulate(model, np.array([[np.inf], [1.0]]), x)
    with pytest.raises(ValueError, match="expected 2 rows"):
        simulate(model, np.ones((3, 1)), x)
    with pytest.raises(TypeError, match="list"):
        simulate(model, [[1.0], [1.0]], x)
    net = EventNetwork([2, 3])
    net.weights[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="nan"):
        net.forward(x)


def test_ttfs_of_a_silent_output_is_an_error_not_a_nan():
    model = EventLIF()
    x = SpikeTrain.from_lists([[[0.1], [0.2]]])
    out = simulate(model, np.array([[5.0, 0.01], [5.0, 0.01]]), x).out
    assert out.counts[0].tolist()[1] == 0 and out.counts[0, 0] > 0
    with pytest.raises(ValueError, match="output neuron 1 of sample 0 has no spike"):
        ttfs_cross_entropy(out, np.array([0]))
    with pytest.raises(ValueError, match="t_absent=inf"):
        ttfs_cross_entropy(out, np.array([0]), t_absent=np.inf)


def test_backward_refuses_bad_gradients():
    net, x, _ = make_problem([6, 3], 2.0, 1.0, seed=0)
    trace = net.forward(x)[0]
    with pytest.raises(ValueError, match="expected"):
        layer_backward(trace, np.zeros((1, 1, 1)))
    g = np.zeros(trace.out.times.shape)
    g[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"grad_times\[0, 0, 0\] = nan"):
        layer_backward(trace, g)
