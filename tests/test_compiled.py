"""The generated kernels of every target (NumPy, Numba on the CPU, CUDA through CuPy) against the
float64 oracle, every model, every method; the NumPy-printed kernels keep float32."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ift_snn
from ift_snn.codegen.ir import build_kernel
from ift_snn.backends import compiled, cpu, reference
from ift_snn.neurons.surrogates import exponential

from .conftest import assert_close, assert_params_close, rel_err

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")
needs_numba = pytest.mark.skipif(not cpu.available(), reason="Numba is not installed")
#: Every target of backends/compiled.py, as ops' backend names (cupy needs a GPU).
TARGETS = ["numpy", pytest.param("cpu", marks=needs_numba), pytest.param("cupy", marks=pytest.mark.gpu)]

CUSTOM = {
    "custom_double_exp": lambda: ift_snn.srm("alpha**n - beta**n", "theta*gamma**(n+1)", 1.0,
                                             params={"alpha": 0.9, "beta": 0.6, "gamma": 0.8},
                                             surrogate="fast_sigmoid", name="custom_double_exp"),
}
MODELS = {**ift_snn.BUILTIN_MODELS, **CUSTOM}
CASES = [("exodus", None), ("exodus", 7), ("slayer", None), ("slayer", 7), ("bptt", None)]


def _problem(seed, T=80, M=37):
    rng = np.random.default_rng(seed)
    return rng.normal(0.35, 0.5, (T, M)), rng.normal(size=(T, M)), rng.normal(0, 0.3, M)


def _device(target: str, *arrays):
    """The arrays as the target takes them (CuPy arrays for "cupy"); None stays None."""
    if target != "cupy":
        return arrays
    cupy = pytest.importorskip("cupy")
    return tuple(None if x is None else cupy.asarray(x) for x in arrays)


def _host(x):
    return x.get() if type(x).__module__.startswith("cupy") else x


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_generated_kernels_equal_the_oracle(name, target):
    model = MODELS[name]()
    a, g, u0 = _problem(0)
    a_t, g_t, u0_t = _device(target, a, g, u0)
    trace = ift_snn.forward(model, a_t, u0_t, backend=target)
    assert trace.backend == target
    u, s, _ = reference.simulate(model, a, u0)
    assert_close(_host(trace.u), u, what="u")
    np.testing.assert_array_equal(_host(trace.s), s)
    for method, K in CASES:
        if method == "bptt" and target == "cupy":
            continue  # the float64 CPU reference
        got = ift_snn.backward(model, trace, g_t, method=method, truncation=K)
        want = reference.bptt(model, a, g, u0, truncation=K, detach_reset=method == "slayer")
        assert_close(_host(got.a), want.a, what=f"{method} K={K} dL/da")
        assert_close(_host(got.u0), want.u0, what=f"{method} K={K} dL/du0")
        assert_params_close(got.params, want.params)


#: float32 compiled against float32 NumPy, one model of each kind of scan (membrane, synaptic filter, reset
#: to zero, clip, finite taps); float64 covers every model.
FLOAT32_MODELS = ("lif", "cuba_lif", "lif_reset_zero", "lif_clip", "taps4_srm")


@needs_numba
@pytest.mark.parametrize("name", FLOAT32_MODELS)
def test_cpu_equals_numpy_in_float32(name):
    model = MODELS[name]()
    a, g, u0 = (x.astype(np.float32) for x in _problem(1))
    compiled_ = ift_snn.forward(model, a, u0, backend="cpu")
    plain = ift_snn.forward(model, a, u0, backend="numpy")
    assert compiled_.u.dtype == plain.u.dtype == np.float32
    assert rel_err(compiled_.u, plain.u) < 1e-5  # float32 rounding, relative to the largest |u|
    if not np.array_equal(compiled_.s, plain.s):
        pytest.skip("a float32 spike flipped at threshold between the two evaluation orders")
    for method in ("exodus", "slayer"):
        gc = ift_snn.backward(model, compiled_, g, method=method)
        gp = ift_snn.backward(model, plain, g, method=method)
        assert gc.a.dtype == gp.a.dtype == np.float32
        assert rel_err(gc.a, gp.a) < 1e-4


#: Built-in structures the property test draws from: a membrane (LIF), integrate-and-fire, a synaptic
#: current (CUBA), an SRM with an alpha kernel, reset to zero, a clip at u_min, several spikes per step.
PROPERTY_MODELS = ("lif", "if", "cuba_lif", "alpha_srm", "lif_reset_zero", "lif_clip", "lif_multi")


def _drawn_model(name: str, data) -> ift_snn.NeuronModel:
    """A built-in structure with drawn parameter values and surrogate constants (kernel arguments: no compile)."""
    model = ift_snn.get_model(name)
    draw = lambda lo, hi: data.draw(st.floats(lo, hi))  # noqa: E731
    values = {"theta": draw(0.5, 1.5)}
    if name == "cuba_lif":
        values["alpha_mem"] = draw(0.6, 0.97)
        values["alpha_syn"] = draw(0.3, values["alpha_mem"] - 0.05)
    elif name == "alpha_srm":
        values.update(alpha=draw(0.3, 0.9), beta=draw(0.5, 0.97))
    elif "alpha" in dict(model.params):
        values["alpha"] = draw(0.5, 0.99)
    model = model.with_params(**values)
    return dataclasses.replace(model, surrogate=exponential(scale=draw(0.2, 1.0), width=draw(0.3, 1.0)))


@pytest.mark.parametrize("target", TARGETS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(PROPERTY_MODELS), data=st.data(), seed=st.integers(0, 2**31 - 1),
       T=st.integers(1, 40), M=st.integers(1, 6), K=st.sampled_from([None, 1, 3, 16]),
       method=st.sampled_from(["exodus", "slayer"]), with_u0=st.booleans())
def test_property_every_target_equals_the_oracle(target, name, data, seed, T, M, K, method, with_u0):
    """Forward, dL/da, dL/du0 and every dL/dp at 1e-10 of the float64 oracle; the diagnostics equal the NumPy
    target's. Parameters and surrogate constants are kernel arguments: new values reuse the kernels."""
    model = _drawn_model(name, data)
    rng = np.random.default_rng(seed)
    a, g = rng.normal(0.35, 0.5, (T, M)), rng.normal(size=(T, M))
    u0 = rng.normal(0, 0.3, M) if with_u0 else None
    a_t, g_t, u0_t = _device(target, a, g, u0)
    builds = compiled.CACHE_STATS["builds"]
    trace = ift_snn.forward(model, a_t, u0_t, backend=target)
    u, s, _ = reference.simulate(model, a, u0)
    assert_close(_host(trace.u), u, what="u")
    np.testing.assert_array_equal(_host(trace.s), s)
    got = ift_snn.backward(model, trace, g_t, method=method, truncation=K)
    want = reference.bptt(model, a, g, u0, truncation=K, detach_reset=method == "slayer")
    assert_close(_host(got.a), want.a, what="dL/da")
    assert_close(_host(got.u0), want.u0, what="dL/du0")
    assert_params_close(got.params, want.params)
    # this structure's first forward and backward only (on the cpu target the forward is its scan and its map)
    assert compiled.CACHE_STATS["builds"] <= builds + (3 if target == "cpu" else 2)
    if target != "numpy":
        plain = ift_snn.backward(model, ift_snn.forward(model, a, u0, backend="numpy"), g, method=method,
                                 truncation=K)
        assert got.max_step_factor == pytest.approx(plain.max_step_factor, rel=1e-12)
        assert got.longest_unstable_run == plain.longest_unstable_run
        assert got.max_growth == pytest.approx(plain.max_growth, rel=1e-9)


#: The locals of a float32 kernel that are float64 because they read a wide (parallel-form) state, per model.
FROM_WIDE = {"alpha_srm": {"d", "dl_ds", "grad_a", "q", "r", "sigma", "u", "z", "yd0_0", "yd1_1", "yd2_2",
                           *(f"x{k}" for k in range(11))}}


@pytest.mark.parametrize("name", ["lif", "cuba_lif", "alpha_srm", "lif_clip", "lif_multi", "taps4_srm"])
def test_numpy_kernels_keep_float32(name):
    """Every float the NumPy-printed kernels hold (locals, state, literals) is float32 in a float32 kernel."""
    model = ift_snn.get_model(name)
    a, g, u0 = (x.astype(np.float32) for x in _problem(2, T=30, M=6))
    seen: dict[str, set] = {}

    def lines(frame, event, arg):
        for k, v in frame.f_locals.items():
            if isinstance(v, (float, np.floating, np.ndarray)):
                seen.setdefault(k, set()).add(v.dtype if isinstance(v, (np.floating, np.ndarray)) else type(v))
        return lines

    previous = sys.gettrace()
    sys.settrace(lambda frame, event, arg: lines if frame.f_code.co_name.startswith("ift_snn_") else None)
    try:
        trace = ift_snn.forward(model, a, u0, backend="numpy")
        grads = [ift_snn.backward(model, trace, g, method=m, truncation=7) for m in ("exodus", "slayer")]
    finally:
        sys.settrace(previous)
    assert len(seen) > 10
    # float64 only where the derivation asks for it: the parameter sums acc_<p> (and their next values), and,
    # for a model whose filters run in the parallel form, the scan states and what is computed from them
    wide = {s.name for q in ("forward", "backward", "slayer") for s in build_kernel(model, q, "f32").wide}
    widened = {k for k, v in seen.items() if v != {np.dtype(np.float32)}}
    assert all(v <= {np.dtype(np.float32), np.dtype(np.float64)} for v in seen.values())
    assert not {k for k in widened if k.startswith(("in_", "out_", "fin_"))}  # the arrays stay float32
    if not wide:
        assert {k for k in widened if not k.removeprefix("next_").startswith("acc_")} == set()
    else:
        # the wide states and exactly the locals computed from them (pinned: a new float64 leak fails here)
        assert wide <= widened
        assert widened - wide - {"next_" + w for w in wide} == FROM_WIDE[name]
    assert trace.u.dtype == trace.s.dtype == trace.sigma.dtype == np.float32
    assert all(gr.a.dtype == gr.u0.dtype == np.float32 for gr in grads)
    t64 = ift_snn.forward(model, a.astype(np.float64), u0.astype(np.float64), backend="numpy")
    if np.array_equal(trace.s, t64.s):  # else a float32 spike flipped at threshold
        assert rel_err(grads[0].a, ift_snn.backward(model, t64, g.astype(np.float64), truncation=7).a) < 1e-4


@needs_numba
def test_kernel_cache_hits_for_new_parameter_values():
    model = ift_snn.lif(0.9)
    a = np.random.default_rng(0).normal(0.3, 0.5, (20, 4))
    ift_snn.forward(model, a, backend="cpu")
    builds = cpu.CACHE_STATS["builds"]
    ift_snn.forward(model.with_params(alpha=0.7, theta=1.3), a, backend="cpu")
    assert cpu.CACHE_STATS["builds"] == builds


#: Surrogates whose maps print every kind of node the in-place printer meets: chains, a second buffer, a
#: comparison left as printed, a CSE local, a custom expression with a power and a maximum.
IN_PLACE_SURROGATES = ["exponential", "fast_sigmoid", "sigmoid", "triangle", "gaussian", "arctan", "boxcar",
                       "custom(exp(-abs(u - theta))*(u + 2)**1.5/(1 + max(u, theta)))"]


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("surrogate", IN_PLACE_SURROGATES)
def test_in_place_map_equals_the_printed_expression_bit_for_bit(surrogate, dtype):
    """The surrogate map computed in place (ufuncs with out=, codegen/printers._InPlace) gives the very values of
    the printed expression it comes from, over membranes from far below to far above threshold."""
    from ift_snn.codegen.cpu import NumpySource, compile_numpy
    from ift_snn.codegen.ir import argument_values
    from ift_snn.codegen.printers import print_numpy_map
    from ift_snn.codegen.tree import lower

    model = ift_snn.lif(0.9, surrogate=surrogate)
    kernel = build_kernel(model, "surrogate", dtype)
    fns = []
    for in_place in (True, False):
        code = print_numpy_map(lower(kernel), in_place=in_place)
        assert ("out=" in code) == in_place
        fns.append(compile_numpy(NumpySource(kernel.name, code, kernel)))
    np_dtype = np.float32 if dtype == "f32" else np.float64
    u = np.random.default_rng(0).normal(1.0, 3.0, 5000).astype(np_dtype)
    u[:4] = [-1e3, 1e3, 1.0, 0.0]
    params = [np_dtype(v) for v in argument_values(model)]
    outs = []
    for fn in fns:
        out = np.full_like(u, np.nan)
        with np.errstate(all="ignore"):
            fn(u, out, *params, 0, u.size)
        outs.append(out)
    assert outs[0].dtype == np_dtype
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("target", ["cpu", "numpy"])
@pytest.mark.parametrize("name", ["lif", "alpha_srm"])
def test_the_scans_finite_guard_sees_every_non_finite_value(name, target):
    """The guard final of the forward (a, u, sigma) and of the backward (g, dL/da) is 0 on finite values and not
    finite as soon as one watched value is inf or NaN; without a guard the caller is sent to its full check."""
    model = ift_snn.get_model(name)
    a, g, _ = (x.astype(np.float32) for x in _problem(1, T=30, M=6))
    assert compiled.forward(model, a, target=target, with_check=True)[-1] is True
    for bad in (np.inf, -np.inf, np.nan):
        a_bad = a.copy()
        a_bad[17, 4] = bad
        assert compiled.forward(model, a_bad, target=target, with_check=True)[-1] is False
    u, s, sigma, mask = compiled.forward(model, a, target=target)
    _, fins = compiled.backward(model, "exodus", g, u, s, sigma, mask, None, a, None, target)
    assert compiled.guard_finite(fins)
    g_bad = g.copy()
    g_bad[3, 1] = np.nan
    _, fins = compiled.backward(model, "exodus", g_bad, u, s, sigma, mask, None, a, None, target)
    assert not compiled.guard_finite(fins)
    assert compiled.guard_finite({}) is False
