"""Bad input is refused early, with the right exception type and a message that
names the offending value and/or the accepted range.

Every check asserts the exception TYPE with ``pytest.raises(..., match=...)``.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ift_snn
from ift_snn.neurons import surrogates
from ift_snn.neurons.expressions import ExpressionError
from ift_snn.neurons.kernels import Kernel, KernelError, NoRecurrenceError

BAD_ALPHAS = [0, -0.1, 1.5, math.nan, math.inf]


def _value_re(value) -> str:
    """The library prints values as ``name={float(value)!r}``."""
    return re.escape(repr(float(value)))


def _alpha_match(name: str, value) -> str:
    if math.isfinite(value):
        return rf"{name}={_value_re(value)} is out of range: expected 0 < {name} <= 1"
    return rf"{name}={_value_re(value)} is out of range"


@pytest.fixture(scope="module")
def lif_model():
    return ift_snn.lif(0.9)


@pytest.fixture(scope="module")
def trace(lif_model):
    a = np.random.default_rng(0).normal(0.4, 0.6, size=(6, 2))
    return ift_snn.forward(lif_model, a)


# --------------------------------------------------------------- parameters
@pytest.mark.parametrize("alpha", BAD_ALPHAS)
def test_lif_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match=_alpha_match("alpha", alpha)):
        ift_snn.lif(alpha)


@pytest.mark.parametrize("alpha", BAD_ALPHAS)
def test_cuba_alpha_mem_out_of_range(alpha):
    with pytest.raises(ValueError, match=_alpha_match("alpha_mem", alpha)):
        ift_snn.cuba_lif(alpha, 0.8)


@pytest.mark.parametrize("alpha", BAD_ALPHAS)
def test_cuba_alpha_syn_out_of_range(alpha):
    with pytest.raises(ValueError, match=_alpha_match("alpha_syn", alpha)):
        ift_snn.cuba_lif(0.9, alpha)


@settings(max_examples=50, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0 < x <= 1))
def test_lif_any_alpha_outside_unit_interval_is_refused(alpha):
    with pytest.raises(ValueError, match=r"alpha=.* is out of range"):
        ift_snn.lif(alpha)


def test_cuba_equal_alphas_refused():
    with pytest.raises(ValueError, match=r"alpha_mem != alpha_syn \(got both 0\.9\)"):
        ift_snn.cuba_lif(0.9, 0.9)


THETA_CONSTRUCTORS = {
    "lif": lambda theta: ift_snn.lif(0.9, theta),
    "if_neuron": lambda theta: ift_snn.if_neuron(theta),
    "cuba_lif": lambda theta: ift_snn.cuba_lif(0.9, 0.8, theta),
    "srm": lambda theta: ift_snn.srm([1.0], [1.0], theta),
}


@pytest.mark.parametrize("theta", [0, -1])
@pytest.mark.parametrize("family", sorted(THETA_CONSTRUCTORS))
def test_theta_not_positive(family, theta):
    with pytest.raises(ValueError, match=rf"theta={_value_re(theta)} is out of range: expected theta > 0"):
        THETA_CONSTRUCTORS[family](theta)


@pytest.mark.parametrize("family", sorted(THETA_CONSTRUCTORS))
def test_theta_nan_refused(family):
    with pytest.raises(ValueError, match=r"theta=nan is out of range"):
        THETA_CONSTRUCTORS[family](math.nan)


THETA_R_CONSTRUCTORS = {
    "lif": lambda r: ift_snn.lif(0.9, theta_r=r),
    "if_neuron": lambda r: ift_snn.if_neuron(theta_r=r),
    "cuba_lif": lambda r: ift_snn.cuba_lif(0.9, 0.8, theta_r=r),
}


@pytest.mark.parametrize("family", sorted(THETA_R_CONSTRUCTORS))
def test_theta_r_negative(family):
    with pytest.raises(ValueError, match=r"theta_r=-0\.5 is out of range: expected theta_r >= 0"):
        THETA_R_CONSTRUCTORS[family](-0.5)


def test_theta_r_zero_is_allowed():
    assert dict(ift_snn.lif(0.9, theta_r=0.0).params)["theta_r"] == 0.0


def test_with_params_checks_ranges():
    model = ift_snn.lif(0.9, theta_r=0.5)
    with pytest.raises(ValueError, match=r"alpha=1\.5 is out of range: expected 0 < alpha <= 1"):
        model.with_params(alpha=1.5)
    with pytest.raises(ValueError, match=r"theta=-1\.0 is out of range: expected theta > 0"):
        model.with_params(theta=-1.0)
    with pytest.raises(ValueError, match=r"theta_r=-1\.0 is out of range: expected theta_r >= 0"):
        model.with_params(theta_r=-1.0)
    with pytest.raises(ValueError, match=r"alpha=nan is out of range: expected a finite number"):
        model.with_params(alpha=math.nan)
    with pytest.raises(ValueError, match=r"unknown parameters \['beta'\]"):
        model.with_params(beta=0.5)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ift_snn.lif(True), r"alpha must be a real number, got True \(bool\)"),
        (lambda: ift_snn.lif(False), r"alpha must be a real number, got False \(bool\)"),
        (lambda: ift_snn.lif("0.9"), r"alpha must be a real number, got '0\.9' \(str\)"),
        (lambda: ift_snn.lif(np.bool_(True)), r"alpha must be a real number"),
        (lambda: ift_snn.cuba_lif(True, 0.5), r"alpha_mem must be a real number, got True"),
        (lambda: ift_snn.cuba_lif(0.9, "0.5"), r"alpha_syn must be a real number, got '0\.5'"),
        (lambda: ift_snn.lif(0.9, "1"), r"theta must be a real number, got '1'"),
        (lambda: ift_snn.lif(0.9, theta_r=True), r"theta_r must be a real number, got True"),
        (lambda: ift_snn.lif(0.9, u_min="0"), r"u_min must be a real number, got '0'"),
        (lambda: ift_snn.srm("n*alpha**n", [1.0], params={"alpha": True}), r"alpha must be a real number"),
    ],
    ids=["lif-True", "lif-False", "lif-str", "lif-np.bool_", "cuba-mem-bool", "cuba-syn-str", "theta-str",
         "theta_r-bool", "u_min-str", "srm-param-bool"],
)
def test_bool_or_str_parameter_is_type_error(build, match):
    with pytest.raises(TypeError, match=match):
        build()


@pytest.mark.parametrize("value", ["0.5", True], ids=["str", "bool"])
def test_with_params_bool_or_str_is_type_error(value):
    with pytest.raises(TypeError, match=r"alpha must be a real number"):
        ift_snn.lif(0.9).with_params(alpha=value)


# ------------------------------------------------------------------- arrays
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_input_a(lif_model, bad):
    a = np.full((5, 3), 0.2)
    a[2, 1] = bad
    with pytest.raises(ValueError, match=r"input a contains NaN or inf \(first at index \(2, 1\)\)"):
        ift_snn.forward(lif_model, a)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 6), st.integers(0, 3), st.sampled_from([math.nan, math.inf, -math.inf]),
       st.sampled_from([np.float32, np.float64]))
def test_nonfinite_input_a_names_its_first_index(lif_model, t, m, bad, dtype):
    a = np.zeros((7, 4), dtype=dtype)
    a[t, m] = bad
    with pytest.raises(ValueError, match=rf"input a contains NaN or inf \(first at index \({t}, {m}\)\)"):
        ift_snn.forward(lif_model, a)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_u0(lif_model, bad):
    with pytest.raises(ValueError, match=r"u0 contains NaN or inf \(first at index \(1,\)\)"):
        ift_snn.forward(lif_model, np.zeros((4, 2)), u0=np.array([0.0, bad]))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_grad_s(lif_model, trace, bad):
    g = np.ones(trace.shape)
    g[3, 0] = bad
    with pytest.raises(ValueError, match=r"grad_s contains NaN or inf \(first at index \(3, 0\)\)"):
        ift_snn.backward(lif_model, trace, g)


INT_DTYPES = [np.int32, np.int64, np.bool_]


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_integer_input_a_is_type_error(lif_model, dtype):
    a = np.ones((4, 2), dtype=dtype)
    with pytest.raises(TypeError, match=rf"input a has dtype {np.dtype(dtype).name}; expected float32 or float64"):
        ift_snn.forward(lif_model, a)


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_integer_grad_s_is_type_error(lif_model, trace, dtype):
    g = np.ones(trace.shape, dtype=dtype)
    with pytest.raises(TypeError, match=rf"grad_s has dtype {np.dtype(dtype).name}; expected float32 or float64"):
        ift_snn.backward(lif_model, trace, g)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex128], ids=lambda d: np.dtype(d).name)
def test_other_dtypes_for_u0_and_a_are_type_errors(lif_model, dtype):
    with pytest.raises(TypeError, match=r"u0 has dtype .*; expected float32 or float64"):
        ift_snn.forward(lif_model, np.zeros((3, 2)), u0=np.zeros(2, dtype=dtype))
    with pytest.raises(TypeError, match=r"input a has dtype .*; expected float32 or float64"):
        ift_snn.forward(lif_model, np.zeros((3, 2), dtype=dtype))


@pytest.mark.parametrize("shape", [(6, 3), (2, 6), (6,), (6, 2, 1), (5, 2)])
def test_grad_s_shape_mismatch(lif_model, trace, shape):
    pattern = rf"grad_s has shape {re.escape(str(shape))}; expected .*{re.escape(str(trace.shape))}"
    with pytest.raises(ValueError, match=pattern):
        ift_snn.backward(lif_model, trace, np.ones(shape))


@pytest.mark.parametrize("shape", [(3,), (2, 1), (), (1, 2)])
def test_u0_wrong_shape(lif_model, shape):
    pattern = rf"u0 has shape {re.escape(str(shape))}; expected the neuron shape \(2,\)"
    with pytest.raises(ValueError, match=pattern):
        ift_snn.forward(lif_model, np.zeros((4, 2)), u0=np.zeros(shape))


@pytest.mark.parametrize("a", [np.float64(1.0), np.zeros((0, 3))], ids=["0-d", "T=0"])
def test_input_without_time_steps(lif_model, a):
    with pytest.raises(ValueError, match=rf"input a has shape {re.escape(str(a.shape))}; expected \(T, \*neurons\)"):
        ift_snn.forward(lif_model, a)


# ------------------------------------------------------------ method options
@pytest.mark.parametrize("method", ["foo", "EXODUS", "", None])
def test_unknown_method(lif_model, trace, method):
    with pytest.raises(ValueError, match=rf"unknown method {re.escape(repr(method))}; expected one of "
                                         r"exodus, slayer, bptt"):
        ift_snn.backward(lif_model, trace, np.ones(trace.shape), method=method)


@pytest.mark.parametrize("truncation", [0, -3])
def test_truncation_out_of_range(lif_model, trace, truncation):
    with pytest.raises(ValueError, match=rf"truncation={truncation} is out of range: expected an int >= 1"):
        ift_snn.backward(lif_model, trace, np.ones(trace.shape), truncation=truncation)


@pytest.mark.parametrize("truncation", [2.5, True, "3"])
def test_truncation_wrong_type(lif_model, trace, truncation):
    with pytest.raises(TypeError, match=rf"truncation must be an int >= 1 or None, got {re.escape(repr(truncation))}"):
        ift_snn.backward(lif_model, trace, np.ones(trace.shape), truncation=truncation)


def test_truncation_numpy_int_accepted(lif_model, trace):
    g = np.ones(trace.shape)
    want = ift_snn.backward(lif_model, trace, g, truncation=2)
    got = ift_snn.backward(lif_model, trace, g, truncation=np.int64(2))
    np.testing.assert_array_equal(got.a, want.a)


# ------------------------------------------------------------------ kernels
def test_kernel_without_taps():
    assert issubclass(KernelError, ValueError)
    with pytest.raises(KernelError, match=r"kernel has no taps"):
        ift_snn.Kernel.from_taps([])


def test_kernel_not_causal():
    with pytest.raises(KernelError, match=r"not causal: it starts at n = -1"):
        ift_snn.Kernel.from_taps([1.0], start=-1)


@pytest.mark.parametrize("taps", [[1.0, math.nan], [math.inf]])
def test_kernel_nonfinite_taps(taps):
    with pytest.raises(KernelError, match=r"contain NaN or inf"):
        Kernel.from_taps(taps)


def test_kernel_non_numeric_taps():
    with pytest.raises(KernelError, match=r"must be real numbers"):
        Kernel.from_taps(["a", "b"])


def test_kernel_2d_taps_message_names_the_shape():
    with pytest.raises(KernelError, match=r"1-D|one-dimensional|shape"):
        Kernel.from_taps([[1.0, 2.0]])


def test_srm_empty_taps():
    with pytest.raises(KernelError, match=r"kernel eps: kernel has no taps"):
        ift_snn.srm([], [1.0])
    with pytest.raises(KernelError, match=r"kernel nu: kernel has no taps"):
        ift_snn.srm([1.0], [])


def test_srm_identically_zero_eps():
    with pytest.raises(KernelError, match=r"identically zero"):
        ift_snn.srm([0.0, 0.0], [1.0])


def test_kernel_without_recurrence_names_the_factor():
    assert issubclass(NoRecurrenceError, KernelError)
    with pytest.raises(NoRecurrenceError, match=r"factor 1/\(n \+ 1\) is neither polynomial, exponential"):
        ift_snn.srm("1/(n+1)", [1.0])


def test_kernel_without_recurrence_truncated():
    model = ift_snn.srm("1/(n+1)", [1.0], truncate=8)
    assert model.eps.taps is not None and len(model.eps.taps) == 8
    np.testing.assert_allclose(model.eps.taps, 1.0 / np.arange(1, 9), rtol=1e-15)
    assert model.eps.is_finite
    trace = ift_snn.forward(model, np.full((10, 1), 0.3))
    assert trace.s.shape == (10, 1)


@pytest.mark.parametrize("truncate", [0, -3])
def test_srm_truncate_out_of_range(truncate):
    with pytest.raises(ValueError, match=rf"truncate={re.escape(repr(truncate))} is out of range"):
        ift_snn.srm("1/(n+1)", [1.0], truncate=truncate)


def test_srm_truncate_not_an_int():
    with pytest.raises(TypeError, match=r"truncate=2.5 must be an int"):
        ift_snn.srm("1/(n+1)", [1.0], truncate=2.5)


def test_srm_truncate_bool_refused():
    with pytest.raises(TypeError, match=r"truncate"):
        ift_snn.srm("1/(n+1)", [1.0], truncate=True)


def test_srm_truncate_numpy_int_accepted():
    model = ift_snn.srm("1/(n+1)", [1.0], truncate=np.int64(8))
    assert len(model.eps.taps) == 8


# --------------------------------------------------------------- surrogates
def test_unknown_surrogate_name():
    known = ", ".join(surrogates.SURROGATES)
    with pytest.raises(ValueError, match=rf"unknown surrogate 'nope'; expected one of {known}"):
        ift_snn.lif(0.9, surrogate="nope")
    with pytest.raises(ValueError, match=r"unknown surrogate 'nope'"):
        ift_snn.get_surrogate("nope")


def test_surrogate_wrong_type():
    with pytest.raises(TypeError, match=r"surrogate must be a name or a Surrogate, got int"):
        ift_snn.lif(0.9, surrogate=3)


SURROGATE_PARAMS = [(name, p) for name in surrogates.SURROGATES
                    for p in ("scale", "slope" if name in ("fast_sigmoid", "sigmoid", "arctan") else "width")]


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf])
@pytest.mark.parametrize("name, param", SURROGATE_PARAMS)
def test_surrogate_parameter_out_of_range(name, param, value):
    pattern = rf"{name} surrogate {param}={_value_re(value)} is out of range: expected a finite number > 0"
    with pytest.raises(ValueError, match=pattern):
        surrogates.SURROGATES[name](**{param: value})


def test_exponential_width_zero():
    with pytest.raises(ValueError, match=r"width=0\.0 is out of range: expected a finite number > 0"):
        surrogates.exponential(width=0)


def test_surrogate_parameter_not_a_number():
    with pytest.raises(TypeError, match=r"exponential surrogate width must be a real number, got 'wide'"):
        surrogates.exponential(width="wide")
    with pytest.raises(TypeError, match=r"must be a real number, got None"):
        surrogates.gaussian(scale=None)


@pytest.mark.parametrize("kwargs", [{"width": "0.5"}, {"scale": True}], ids=["str", "bool"])
def test_surrogate_parameter_str_or_bool_is_type_error(kwargs):
    with pytest.raises(TypeError, match=r"must be a real number"):
        surrogates.exponential(**kwargs)


# ---------------------------------------------------------- user kernel names
def test_unknown_name_in_kernel():
    assert issubclass(ExpressionError, ValueError)
    with pytest.raises(ExpressionError, match=r"kernel eps 'n\*gamma\*\*n': unknown name 'gamma'; allowed names "
                                              r"are n, theta"):
        ift_snn.srm("n*gamma**n", [1.0])


def test_unused_kernel_parameter():
    with pytest.raises(ValueError, match=r"params \['beta'\] do not appear in eps or nu"):
        ift_snn.srm("n*alpha**n", [1.0], params={"alpha": 0.5, "beta": 0.5})


@pytest.mark.parametrize("name", ["n", "u"])
def test_reserved_parameter_name(name):
    with pytest.raises(ValueError, match=rf"'{name}' cannot be a parameter name"):
        ift_snn.srm("n*alpha**n", [1.0], params={"alpha": 0.5, name: 0.5})


def test_theta_in_params_refused():
    with pytest.raises(ValueError, match=r"give the threshold as theta=\.\.\., not in params"):
        ift_snn.srm([1.0], [1.0], params={"theta": 1.0})


# ------------------------------------------------------------ option clashes
def test_reset_zero_needs_single_spike():
    with pytest.raises(ValueError, match=r"reset='zero' needs spike='single' or 'smooth', got spike='multi'"):
        ift_snn.lif(0.9, reset="zero", spike="multi")
    with pytest.raises(ValueError, match=r"reset='zero' needs .* got spike=2"):
        ift_snn.lif(0.9, reset="zero", spike=2)


def test_unknown_reset():
    with pytest.raises(ValueError, match=r"reset='foo' is not known; expected one of \('subtract', 'zero'\)"):
        ift_snn.lif(0.9, reset="foo")


def test_srm_u_min_needs_a_membrane():
    """The clip acts on a membrane state: an SRM without a first-order membrane is refused, naming why."""
    with pytest.raises(ValueError, match=r"u_min \(clip\) needs a first-order membrane"):
        ift_snn.srm([1.0], [1.0], u_min=0.0)
    with pytest.raises(ValueError, match=r"reset='zero' needs eps to decay with the membrane's pole"):
        ift_snn.srm("n*alpha**n", "theta*beta**n", params={"alpha": 0.8, "beta": 0.9}, reset="zero")


@pytest.mark.parametrize("u_min", [2.0, 1.0])
def test_u_min_not_below_theta(u_min):
    with pytest.raises(ValueError, match=rf"u_min={_value_re(u_min)} is out of range: expected a finite number "
                                         r"below theta"):
        ift_snn.lif(0.9, u_min=u_min)


def test_u_min_not_finite():
    with pytest.raises(ValueError, match=r"u_min=-inf is out of range"):
        ift_snn.lif(0.9, u_min=-math.inf)


@pytest.mark.parametrize("spike", [0, -2])
def test_spike_count_out_of_range(spike):
    with pytest.raises(ValueError, match=rf"spike={spike} is out of range: the maximum spikes per step must be >= 1"):
        ift_snn.lif(0.9, spike=spike)


@pytest.mark.parametrize("spike", ["double", 2.0, None])
def test_spike_unknown(spike):
    with pytest.raises(ValueError, match=rf"spike={re.escape(repr(spike))} is not known; expected 'single', "
                                         r"'multi', 'smooth' or an int >= 1"):
        ift_snn.lif(0.9, spike=spike)


def test_spike_bool_is_type_error():
    # bool is refused as a type (like a bool alpha), not silently taken as 1
    with pytest.raises(TypeError, match=r"spike=True: expected 'single', 'multi', 'smooth' or an int >= 1"):
        ift_snn.lif(0.9, spike=True)


def test_smooth_spike_needs_primitive():
    with pytest.raises(ValueError, match=r"spike='smooth' needs a shift-invariant surrogate with a primitive"):
        ift_snn.lif(0.9, spike="smooth")  # default surrogate: exponential, no primitive


# ------------------------------------------------------------- forward/backward
def test_backward_with_record_of_other_model(trace):
    other = ift_snn.lif(0.8)
    with pytest.raises(ValueError, match=r"record was computed with NeuronModel\(lif: alpha=0\.9.*not with "
                                         r"NeuronModel\(lif: alpha=0\.8"):
        ift_snn.backward(other, trace, np.ones(trace.shape))


def test_backward_with_record_of_equal_model(trace):
    grads = ift_snn.backward(ift_snn.lif(0.9), trace, np.ones(trace.shape))
    assert grads.a.shape == trace.shape


def test_backward_record_not_a_trace(lif_model):
    with pytest.raises(TypeError, match=r"record must be the Trace returned by forward\(\), got ndarray"):
        ift_snn.backward(lif_model, np.zeros((3, 2)), np.ones((3, 2)))


def test_model_not_a_neuron_model():
    with pytest.raises(TypeError, match=r"model must be a NeuronModel .*got str"):
        ift_snn.forward("lif", np.zeros((3, 2)))


def test_list_of_lists_input_is_converted(lif_model):
    rows = [[0.5, 1.2], [0.7, 0.1], [0.9, -0.3]]
    got = ift_snn.forward(lif_model, rows)
    want = ift_snn.forward(lif_model, np.array(rows))
    assert got.a.dtype == np.float64
    np.testing.assert_array_equal(got.s, want.s)
    np.testing.assert_array_equal(got.u, want.u)
    grads = ift_snn.backward(lif_model, got, [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert grads.a.shape == (3, 2)


@pytest.mark.parametrize("a", ["abc", "1.0"])
def test_string_input_is_type_error(lif_model, a):
    with pytest.raises(TypeError, match=r"input a has dtype <U\d+; expected float32 or float64"):
        ift_snn.forward(lif_model, a)
