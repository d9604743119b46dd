"""The reverse scans without the parameter sums (``parameters=False``: quantities backward_a, slayer_a; derived
by ``Scan.without_parameter_sums``) give the same dL/da, dL/du0, dL/d(state) and diagnostics as the full scans
(to rounding: common subexpressions are chosen over fewer expressions, so the same value may be computed in
another order), on every target, every model, both methods, truncated or not, with per-neuron values; and
they read less."""

from __future__ import annotations

import numpy as np
import pytest

import ift_snn
from ift_snn.backends import cpu
from ift_snn.codegen.ir import build_kernel
from ift_snn.experiments.zoo import zoo_model

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")
needs_numba = pytest.mark.skipif(not cpu.available(), reason="Numba is not installed")
TARGETS = ["numpy", pytest.param("cpu", marks=needs_numba), pytest.param("cupy", marks=pytest.mark.gpu)]
MODELS = sorted(ift_snn.BUILTIN_MODELS)
RTOL = {"float64": 1e-12, "float32": 1e-5}


def _arrays(target, *xs):
    if target != "cupy":
        return xs
    cupy = pytest.importorskip("cupy")
    return tuple(cupy.asarray(x) for x in xs)


def _host(x):
    return x.get() if type(x).__module__.startswith("cupy") else np.asarray(x)


def _compare(model, target, dtype=np.float64, per=None, seed=0):
    rng = np.random.default_rng(seed)
    T, M = 60, 23
    a, g, u0 = rng.normal(0.4, 0.6, (T, M)).astype(dtype), rng.normal(size=(T, M)).astype(dtype), \
        rng.normal(0, 0.3, M).astype(dtype)
    a, g, u0 = _arrays(target, a, g, u0)
    trace = ift_snn.forward(model, a, u0, backend=target, params=per)
    assert _host(trace.s).any()
    for method in ("exodus", "slayer"):
        for truncation in (None, 9):
            full = ift_snn.backward(model, trace, g, method=method, truncation=truncation)
            lean = ift_snn.backward(model, trace, g, method=method, truncation=truncation, parameters=False)
            what = f"{model.name} {method} K={truncation} {target}"
            for k in ("a", "u0", "state"):
                want = _host(getattr(full, k))
                tol = RTOL[np.dtype(dtype).name] * max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
                np.testing.assert_allclose(_host(getattr(lean, k)), want, rtol=0, atol=tol, err_msg=f"{what}: {k}")
            assert lean.max_step_factor == pytest.approx(full.max_step_factor, rel=RTOL[np.dtype(dtype).name])
            assert lean.longest_unstable_run == full.longest_unstable_run, what
            assert lean.params == {} and set(full.params) == set(model.parameter_names)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", MODELS)
def test_without_parameter_sums_the_gradients_are_the_same_numbers(name, target):
    _compare(ift_snn.get_model(name), target)


@pytest.mark.parametrize("target", TARGETS)
def test_float32_and_per_neuron_values_and_the_zoo(target):
    _compare(ift_snn.get_model("lif"), target, np.float32)
    _compare(ift_snn.get_model("alif"), target, per={"alpha": np.linspace(0.85, 0.95, 23)})
    # (the zoo on the NumPy-printed kernels, whose build is cheap: the Numba target compiles each scan)
    for name in ("dexp_3tap_reset", "fir12", "srm_reset_zero") if target == "numpy" else ("dexp_3tap_reset",):
        _compare(zoo_model(name), target)


def test_the_lean_scans_read_less():
    """A LIF's dL/da needs g and sigma only; u and s were read for dL/dalpha and dL/dtheta."""
    for quantity in ("backward", "slayer"):
        full = build_kernel(ift_snn.get_model("lif"), quantity, "f32")
        lean = build_kernel(ift_snn.get_model("lif"), quantity + "_a", "f32")
        assert [i.name for i in lean.inputs] == ["g", "sigma"]
        assert {"u", "s"} <= {i.name for i in full.inputs}
        assert not any(st.name.startswith("acc_") for st in lean.state)
        assert lean.name != full.name and f"_{quantity}_a_f32_" in lean.name
    alif = build_kernel(ift_snn.get_model("alif"), "backward_a", "f64")
    assert len(alif.state) < len(build_kernel(ift_snn.get_model("alif"), "backward", "f64").state)


def _subset_problem(model, target, seed=1):
    rng = np.random.default_rng(seed)
    a, g, u0 = rng.normal(0.4, 0.6, (50, 19)), rng.normal(size=(50, 19)), rng.normal(0, 0.3, 19)
    a, g, u0 = _arrays(target, a, g, u0)
    return ift_snn.forward(model, a, u0, backend=target), g


#: Every subset kernel is a compile on the Numba target: there two models, on NumPy five.
SUBSETS = [(name, "numpy") for name in ("lif", "cuba_lif", "alpha_srm", "alif", "lif_reset_zero")] + \
    [pytest.param(name, "cpu", marks=needs_numba) for name in ("lif", "cuba_lif")] + \
    [pytest.param(name, "cupy", marks=pytest.mark.gpu) for name in ("lif", "alif")]


@pytest.mark.parametrize("name, target", SUBSETS)
def test_a_subset_of_the_parameters_gets_the_same_gradients(name, target):
    """parameters=(p,): only dL/dp, from a scan keeping only p's sum (and what it needs): the same numbers."""
    model = ift_snn.get_model(name)
    trace, g = _subset_problem(model, target)
    for method, truncation in (("exodus", None), ("slayer", 7)):
        full = ift_snn.backward(model, trace, g, method=method, truncation=truncation)
        for p in model.parameter_names:
            one = ift_snn.backward(model, trace, g, method=method, truncation=truncation, parameters=[p])
            assert set(one.params) == {p}
            assert one.params[p] == pytest.approx(full.params[p], rel=1e-12, abs=1e-12 * abs(full.params[p]) + 1e-300)
            np.testing.assert_allclose(_host(one.a), _host(full.a), rtol=0,
                                       atol=1e-12 * float(np.max(np.abs(_host(full.a)))))
        both = ift_snn.backward(model, trace, g, method=method, truncation=truncation,
                                parameters=model.parameter_names[::-1])  # every name, in any order: the full scan
        assert both.params == full.params


def test_a_lif_keeping_alpha_reads_u_and_not_s():
    lean = build_kernel(ift_snn.get_model("lif"), "backward_a", "f32", sums=("alpha",))
    assert [i.name for i in lean.inputs] == ["g", "sigma", "u"]
    theta = build_kernel(ift_snn.get_model("lif"), "backward_a", "f32", sums=("theta",))
    assert [i.name for i in theta.inputs] == ["g", "sigma", "s"]
    assert len({lean.name, theta.name, build_kernel(ift_snn.get_model("lif"), "backward_a", "f32").name}) == 3
    with pytest.raises(ValueError, match=r"sums \['beta'\] are not parameters of lif"):
        build_kernel(ift_snn.get_model("lif"), "backward_a", "f32", sums=("beta",))
    with pytest.raises(ValueError, match="not of 'backward'"):
        build_kernel(ift_snn.get_model("lif"), "backward", "f32", sums=("alpha",))


def test_bad_parameter_selections_are_refused_by_name():
    model = ift_snn.get_model("lif")
    trace, g = _subset_problem(model, "numpy")
    with pytest.raises(ValueError, match=r"parameters \['beta'\] are not parameters of lif; it has alpha, theta"):
        ift_snn.backward(model, trace, g, parameters=["beta"])
    with pytest.raises(TypeError, match="expected True, False or a collection of parameter names"):
        ift_snn.backward(model, trace, g, parameters="alpha")
    assert ift_snn.backward(model, trace, g, parameters=[]).params == {}
