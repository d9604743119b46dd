"""Continuous time for any neuron: the derivation (proofs, mutations), the root bracket against brute force,
bad kernels and bad input, the CLI (docs/MATH.md section 7)."""

from __future__ import annotations

import inspect
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ift_snn.events import SpikeTrain
from ift_snn.events.srm import EventSRM, backward_srm, simulate_srm, srm_source
from ift_snn.neurons.expressions import ExpressionError
from ift_snn.symbolic.continuous import (CONTINUOUS_MODELS, ContinuousKernelError, T, decompose,
                                         derive_continuous, render_continuous_text)

CUSTOM = [
    ("t^2*exp(-t/tau_s)", "-theta*exp(-t/tau)", {"tau": 3.0, "tau_s": 1.0, "theta": 1.0}),
    ("(exp(-(t - d)/tau) - exp(-(t - d)/tau_s))*heaviside(t - d)", "-theta*exp(-t/tau)",
     {"tau": 2.0, "tau_s": 0.5, "d": 0.7, "theta": 1.0}),
    ("exp(-t/3) - 3*exp(-t) + 2*exp(-2*t)", "-theta*exp(-t/tau) - 0.2*theta*t*exp(-t/tau)",
     {"tau": 2.0, "theta": 1.0}),
]


@pytest.mark.parametrize("name", sorted(CONTINUOUS_MODELS))
def test_builtin_models_are_proved(name):
    eps, nu, params = CONTINUOUS_MODELS[name]
    d = derive_continuous(eps, nu, params)
    assert [p.claim for p in d.proofs if not p.ok] == []
    assert len(d.proofs) == 7
    text = render_continuous_text(d)
    assert "all proofs passed" in text and "FAILED" not in text


@pytest.mark.parametrize("eps,nu,params", CUSTOM)
def test_custom_kernels_are_proved(eps, nu, params):
    d = derive_continuous(eps, nu, params)
    assert d.ok, [p.claim for p in d.proofs if not p.ok]
    # the level chain ends in one term: the bracket's depth is the number of terms of u - theta
    assert sum(1 for c in d.levels[-1] if c != 0) == 1
    assert len(d.levels) == len(d.terms)


def test_delay_groups_and_parameter_in_a_delay():
    groups = decompose(sp.sympify("exp(-t) * Heaviside(t - 2) + t*exp(-t)", locals={"t": T}), T)
    assert sorted(float(g.delay) for g in groups) == [0.0, 2.0]
    d = derive_continuous(*CUSTOM[1])
    # a parameter in the delay: its readout has the -d'(p) f' term
    f = d.groups[0].expr(T)
    assert sp.simplify(d.readout_functions["eps0_d"] + sp.diff(f, T)) == 0


def test_mutations_fail_the_proofs():
    eps, nu, params = CONTINUOUS_MODELS["lif"]
    d = derive_continuous(eps, nu, params)
    wrong = derive_continuous(eps, nu, params)
    wrong.__dict__["advance"] = (d.advance[0], d.advance[1] * 1.0001)
    assert not [p for p in wrong.proofs if "advance" in p.claim][0].ok
    wrong = derive_continuous(eps, nu, params)
    wrong.__dict__["readout_functions"] = {**d.readout_functions, "dnu": -d.readout_functions["dnu"]}
    assert not [p for p in wrong.proofs if "adjoint" in p.claim][0].ok
    wrong = derive_continuous(eps, nu, params)
    wrong.__dict__["readout_functions"] = {**d.readout_functions, "eps0_tau": 0 * T}
    assert not [p for p in wrong.proofs if "adjoint" in p.claim][0].ok


@pytest.mark.parametrize("eps,message", [
    ("cos(t)*exp(-t)", "oscillates"),
    ("exp(-t^2)", "not linear in t"),
    ("log(1 + t)", r"is not t\^p"),
    ("t^9*exp(-t/tau)", "state terms"),
    ("1/(1 + t)", r"is not t\^p"),
])
def test_kernels_outside_the_grammar_are_refused(eps, message):
    with pytest.raises(ContinuousKernelError, match=message):
        derive_continuous(eps, "-theta*exp(-t/tau)", {"tau": 2.0})


def test_text_outside_the_whitelist_is_refused():
    with pytest.raises(ExpressionError, match="call of '__import__' is not allowed"):
        derive_continuous("__import__('os')", "-theta*exp(-t/tau)", {"tau": 2.0})
    with pytest.raises(ExpressionError, match="parameter name"):
        derive_continuous("exp(-t/tau)", "-theta*exp(-t/tau)", {"t": 2.0, "tau": 1.0})


@pytest.mark.parametrize("kw,message", [
    (dict(eps="exp(-t/tau)", nu="-theta*exp(-t/tau)", params={"tau": 2.0, "theta": 1.0}), "eps jumps by 1.0"),
    (dict(eps="exp(-t/tau) - exp(-t/tau_s)", nu="theta*exp(-t/tau)", params={"tau": 2.0, "tau_s": 1.0,
                                                                              "theta": 1.0}), r"nu\(0\) = 1.0"),
    (dict(eps="exp(t/tau) - exp(-t/tau)", nu="-theta*exp(-t/tau)", params={"tau": 2.0, "theta": 1.0}),
     "rate 1/tau = 0.5"),
    (dict(eps="tau*tau_s/(tau - tau_s)*(exp(-t/tau) - exp(-t/tau_s))", nu="-theta*exp(-t/tau)",
          params={"tau": 1.0, "tau_s": 1.0, "theta": 1.0}), "not finite"),
    (dict(eps="exp(-t/tau) - exp(-t/tau_s)", nu="-theta*exp(-t/tau)", params={"tau": 2.0, "theta": 1.0}),
     "unknown name 'tau_s'; allowed names are t, tau, theta"),
    (dict(eps="exp(-t/tau) - exp(-t/tau_s)", nu="-theta*exp(-t/tau)",
          params={"tau": 2.0, "tau_s": 1.0, "theta": 1.0, "beta": 2.0}), "appear in neither"),
    (dict(eps="exp(-t/tau) - exp(-t/tau_s)", nu="-theta*exp(-t/tau)",
          params={"tau": 2.0, "tau_s": float("nan"), "theta": 1.0}), "tau_s=nan"),
])
def test_bad_models_are_refused_with_the_value(kw, message):
    with pytest.raises(ValueError, match=message):
        EventSRM(**kw)


def test_bad_input_is_refused_before_any_work():
    m = EventSRM.named("lif", backend="python")
    x = SpikeTrain.from_lists([[[0.5, 1.0], [0.2]]])
    with pytest.raises(ValueError, match=r"delays\[1, 0\] = -0.5: expected a finite delay >= 0"):
        simulate_srm(m, np.ones((2, 1)), x, delays=np.array([[0.0], [-0.5]]))
    with pytest.raises(ValueError, match=r"axonal\[0\] = nan"):
        simulate_srm(m, np.ones((2, 1)), x, axonal=np.array([np.nan]))
    with pytest.raises(ValueError, match="not sorted"):
        SpikeTrain(np.array([[[2.0, 1.0]]]), np.array([[2]]))
    with pytest.raises(ValueError, match="is NaN"):
        SpikeTrain(np.array([[[np.nan]]]), np.array([[1]]))
    with pytest.raises(ValueError, match="expected 2 rows"):
        simulate_srm(m, np.ones((3, 1)), x)
    tr = simulate_srm(m, np.full((2, 1), 3.0), x)
    with pytest.raises(ValueError, match="grad_times has shape"):
        backward_srm(tr, np.ones((1, 1, 3)))


def test_dropped_spikes_are_counted_and_warned():
    m = EventSRM.named("lif", backend="python", max_spikes=2)
    x = SpikeTrain.from_lists([[[0.1, 0.2, 0.3]]])
    with pytest.warns(RuntimeWarning, match=r"spikes beyond max_spikes=2 were dropped"):
        tr = simulate_srm(m, np.array([[8.0]]), x)
    full = simulate_srm(m.with_(max_spikes=64), np.array([[8.0]]), x)
    assert tr.out.counts[0, 0] == 2 and tr.out.dropped[0, 0] == full.out.counts[0, 0] - 2 > 0
    np.testing.assert_array_equal(tr.out.times[0, 0], full.out.times[0, 0, :2])


def _brute_force(model: EventSRM, w: float, t_in: list[float], t_end: float, h: float = 1e-3) -> list[float]:
    """Every upward crossing of u(t) = w sum_j eps(t - t_j) + sum_k nu(t - t_k) on a grid of step h (NumPy),
    refined by bisection; the kernels lambdified from the user's text (not from the derivation's state)."""
    vals = dict(zip(model.derivation.params, model.values))
    eps = sp.lambdify(T, model.derivation.eps.subs(vals), "numpy")
    nu = sp.lambdify(T, model.derivation.nu.subs(vals), "numpy")
    theta = model.params["theta"]
    spikes: list[float] = []

    def u(t):
        t = np.asarray(t, dtype=np.float64)
        total = np.zeros_like(t)
        for a in t_in:
            total += np.where(t > a, w * eps(np.maximum(t - a, 0.0)), 0.0)
        for k in spikes:
            total += np.where(t > k, nu(np.maximum(t - k, 0.0)), 0.0)
        return total - theta

    start = 0.0
    while True:
        grid = start + h * np.arange(1, int((t_end - start) / h) + 2)
        f = u(np.r_[start, grid])
        up = np.nonzero((f[:-1] < 0) & (f[1:] >= 0))[0]
        if up.size == 0:
            return spikes
        lo, hi = (start if up[0] == 0 else grid[up[0] - 1]), grid[up[0]]
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if u(mid) < 0:
                lo = mid
            else:
                hi = mid
            if hi - lo <= 1e-15 * hi:
                break
        spikes.append(float(hi))
        start = float(hi)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(0.3, 3.0), min_size=4, max_size=4, unique=True), st.integers(0, 2**31 - 1))
def test_bracket_finds_every_crossing_of_a_four_exponential_kernel(taus, seed):
    """A random kernel of four exponentials (continuous at 0: coefficients summing to 0) can rise and fall several
    times between two arrivals; the bracket must find every crossing a fine grid finds, at the same time."""
    rng = np.random.default_rng(seed)
    c = np.round(rng.normal(size=4), 6)
    c[3] = -c[:3].sum()  # exactly 0 at t = 0 in six decimals
    eps = " + ".join(f"({ci:.6f})*exp(-t/{tau:.6f})" for ci, tau in zip(c, taus))
    model = EventSRM(eps, "-theta*exp(-t/2)", {"theta": 0.5}, backend="python", max_spikes=256)
    t_in = sorted(rng.uniform(0.0, 3.0, 2).tolist())
    w = float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 4.0))
    tr = simulate_srm(model, np.array([[w]]), SpikeTrain.from_lists([[t_in]]))
    got = tr.out.times[0, 0, :tr.out.counts[0, 0]].tolist()
    assert tr.out.dropped[0, 0] == 0
    want = _brute_force(model, w, t_in, max(got + t_in) + 15.0)
    assert len(got) == len(want), (got, want)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_source_is_inspectable_deterministic_and_holds_no_user_names():
    m = EventSRM("(exp(-t/mytau) - exp(-t/tau_s))", "-theta*exp(-t/mytau)", {"mytau": 2.0, "tau_s": 1.0,
                                                                               "theta": 1.0}, backend="python")
    src = srm_source(m)
    assert src != srm_source(EventSRM.named("lif", backend="python"))  # the kernels differ: names differ
    name = src.split("kernel: ")[1].split("\n")[0]
    assert name.startswith("ift_snn_srm_") and len(name) == len("ift_snn_srm_") + 8
    code_lines = [line for line in src.splitlines() if not line.startswith("#")]
    assert not any("mytau" in line for line in code_lines)  # parameters are p[i] in the code
    assert srm_source(m) == src  # deterministic
    fwd = m.kernels.forward
    assert "def " + name + "_forward" in inspect.getsource(fwd)


def test_layer_gradients_equal_central_differences_cli_check():
    from ift_snn.events.commands import numeric_check

    for name in sorted(CONTINUOUS_MODELS):
        err = numeric_check(EventSRM.named(name, backend="python"))
        assert err < 1e-6, (name, err)


def test_cli_derive_continuous(capsys):
    """The command in a process of its own (as users run it), then its refusals in this one (each a clear
    message and exit status 2, no exception)."""
    from ift_snn.cli import main

    run = lambda *a: subprocess.run([sys.executable, "-m", "ift_snn.cli", "derive", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    r = run("alpha", "--continuous")
    assert r.returncode == 0, r.stderr
    assert "all proofs passed" in r.stdout and "max relative error" in r.stdout
    assert main(["derive", "--continuous", "--eps", "t*exp(-t/tau)", "--nu=-theta*exp(-t/tau)", "--param",
                 "tau=2"]) == 0
    capsys.readouterr()
    for args, message in [(("adaptive",), "adaptive is a continuous-time neuron: add --continuous"),
                          (("--continuous", "--eps", "t*exp(-t)"), "both --eps and --nu"),
                          (("lif", "--continuous", "--surrogate", "fast_sigmoid"), "--surrogate belong"),
                          (("lif", "--continuous", "--recurrent"), "takes no --recurrent"),
                          (("--continuous", "--eps", "cos(t)", "--nu=-theta"), "oscillates")]:
        try:
            code = main(["derive", *args])
        except SystemExit as exc:  # (argparse's own errors exit)
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and message in err, (args, err)


def test_numba_and_python_backends_agree():
    rng = np.random.default_rng(3)
    x = SpikeTrain(np.sort(rng.uniform(0, 6, (2, 3, 3)), axis=2), np.full((2, 3), 3))
    w = rng.normal(1.5, 1.0, (3, 2))
    dl = rng.uniform(0, 1, (3, 2))
    traces = []
    for backend in ("python", "numba"):
        m = EventSRM.named("adaptive", backend=backend, max_spikes=32)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tr = simulate_srm(m, w, x, delays=dl, axonal=np.array([0.1, 0.0]))
        g = np.cos(np.where(np.isfinite(tr.out.times), tr.out.times, 0.0))
        traces.append((tr, backward_srm(tr, g)))
    (a, ga), (b, gb) = traces
    np.testing.assert_array_equal(a.out.counts, b.out.counts)
    assert a.out.counts.sum() > 4
    np.testing.assert_array_equal(a.out.times, b.out.times)
    for k in ("w", "inputs", "delays", "axonal"):
        np.testing.assert_allclose(getattr(ga, k), getattr(gb, k), rtol=1e-12, atol=1e-12)
    assert ga.params == pytest.approx(gb.params, rel=1e-12)
    assert math.isfinite(sum(ga.params.values()))
