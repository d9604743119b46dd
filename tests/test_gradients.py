"""Every gradient path against the independent float64 oracle, on random models and inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import ift_snn
from ift_snn.backends import reference

from .conftest import assert_close, assert_params_close, models, problems, rel_err

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")
# Random model structures: the generated kernels printed as NumPy (a Numba compile per random
# structure would take most of the suite's time). The Numba and CUDA printings are checked in test_compiled.py.
BACKEND = "numpy"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_against(got: ift_snn.Gradients, want: reference.RefResult, dtype=np.float64):
    assert_close(got.a, want.a, dtype, "dL/da")
    assert_close(got.u0, want.u0, dtype, "dL/du0")
    assert_params_close(got.params, want.params, dtype)


@SETTINGS
@given(models(), problems())
def test_forward_equals_reference(model, problem):
    a, _, u0 = problem
    trace = ift_snn.forward(model, a, u0, backend=BACKEND)
    u, s, _ = reference.simulate(model, a, u0)
    assert_close(trace.u, u, what="u")
    np.testing.assert_array_equal(trace.s, s)


@SETTINGS
@given(models(), problems())
def test_exodus_equals_bptt_oracle(model, problem):
    a, g, u0 = problem
    got = ift_snn.backward(model, ift_snn.forward(model, a, u0, backend=BACKEND), g, method="exodus")
    _check_against(got, reference.bptt(model, a, g, u0))


@SETTINGS
@given(models(), problems(max_T=25, max_M=3))
def test_dense_ift_solve_equals_bptt_oracle(model, problem):
    a, g, u0 = problem
    dense = reference.dense_ift(model, a, g, u0)
    want = reference.bptt(model, a, g, u0)
    assert rel_err(dense.a, want.a) <= 1e-10
    assert rel_err(dense.u0, want.u0) <= 1e-10
    assert_params_close(dense.params, want.params)


@SETTINGS
@given(models(), problems())
def test_slayer_is_bptt_with_reset_detached(model, problem):
    a, g, u0 = problem
    got = ift_snn.backward(model, ift_snn.forward(model, a, u0, backend=BACKEND), g, method="slayer")
    _check_against(got, reference.bptt(model, a, g, u0, detach_reset=True))


@SETTINGS
@given(models(families=("lif", "if", "cuba", "alpha_srm")), problems())
def test_slayer_differs_from_exact_when_spikes_occur(model, problem):
    a, g, u0 = problem
    trace = ift_snn.forward(model, a, u0, backend=BACKEND)
    # The reset path exists only if a spike is followed by a step, and for reset to
    # zero the dropped term alpha u sigma needs u away from 0.
    assume(np.any(trace.s[:-1] != 0))
    if trace.mask is not None:  # a clipped step after the spike cuts the reset path (d pre/d s_prev times 0)
        assume(np.any(trace.mask[1:][trace.s[:-1] != 0]))
    if model.reset == "zero":
        assume(np.max(np.abs(trace.u[:-1] * (trace.s[:-1] != 0))) > 1e-3)
    exact = ift_snn.backward(model, trace, g, method="exodus")
    slayer = ift_snn.backward(model, trace, g, method="slayer")
    assert rel_err(slayer.a, exact.a) > 1e-8


@SETTINGS
@given(models(), problems(), st.data())
def test_truncation_of_length_T_or_more_is_exodus(model, problem, data):
    a, g, u0 = problem
    trace = ift_snn.forward(model, a, u0, backend=BACKEND)
    full = ift_snn.backward(model, trace, g)
    K = data.draw(st.integers(a.shape[0], a.shape[0] + 5))
    cut = ift_snn.backward(model, trace, g, truncation=K)
    np.testing.assert_array_equal(cut.a, full.a)
    assert cut.params == full.params


@SETTINGS
@given(models(), problems(max_T=30, max_M=3), st.integers(1, 12), st.sampled_from(["exodus", "slayer"]))
def test_truncated_gradient_equals_truncated_oracles(model, problem, K, method):
    a, g, u0 = problem
    detach = method == "slayer"
    trace = ift_snn.forward(model, a, u0, backend=BACKEND)
    got = ift_snn.backward(model, trace, g, method=method, truncation=K)
    want = reference.bptt(model, a, g, u0, truncation=K, detach_reset=detach)
    _check_against(got, want)
    dense = reference.dense_ift(model, a, g, u0, truncation=K, detach_reset=detach)
    assert rel_err(dense.a, want.a) <= 1e-10
    assert_params_close(dense.params, want.params)


@SETTINGS
@given(models(), problems(), st.sampled_from([None, 5]))
def test_bptt_method_equals_exodus(model, problem, K):
    a, g, u0 = problem
    trace = ift_snn.forward(model, a, u0, backend=BACKEND)
    bptt = ift_snn.backward(model, trace, g, method="bptt", truncation=K)
    exodus = ift_snn.backward(model, trace, g, method="exodus", truncation=K)
    assert_close(exodus.a, bptt.a)
    assert_params_close(exodus.params, bptt.params)


@SETTINGS
@given(models(families=("lif", "if", "cuba", "alpha_srm")), problems())
def test_float32_agrees_with_float64(model, problem):
    a, g, u0 = problem
    t64 = ift_snn.forward(model, a, u0, backend=BACKEND)
    t32 = ift_snn.forward(model, a.astype(np.float32), None if u0 is None else u0.astype(np.float32),
                          backend=BACKEND)
    assert t32.u.dtype == np.float32 and t32.s.dtype == np.float32
    # A spike that flips at the threshold changes the trajectory itself; compare where it did not.
    assume(np.array_equal(t32.s, t64.s))
    # ...and where no membrane sits within rounding of a spike-count boundary k * theta or the clip.
    x = t64.u / model.theta
    assume(np.min(np.abs(x - np.round(x))) * model.theta > 1e-4)
    if model.u_min is not None:
        assume(np.min(np.abs(t64.u - model.u_min)[t64.u > model.u_min], initial=1.0) > 1e-4)
    g64 = ift_snn.backward(model, t64, g)
    g32 = ift_snn.backward(model, t32, g.astype(np.float32))
    assert g32.a.dtype == np.float32 and g32.u0.dtype == np.float32
    assert_close(g32.a, g64.a, np.float32, "dL/da float32")
    # dL/dp is a float32 sum over T M terms that cancel in part: 1.03e-4 relative was seen (an alpha-kernel
    # SRM, CI's derandomized examples), so the sums get 3e-4; dL/da keeps 1e-4
    assert_params_close(g32.params, g64.params, np.float32, rtol=3e-4)


@SETTINGS
@given(st.floats(0.5, 1.0), st.floats(0.5, 1.5), st.booleans(), problems())
def test_lif_as_general_srm_equals_membrane_form(alpha, theta, before, problem):
    """Two code paths: the first-order membrane scan and the general kernel scan."""
    a, g, u0 = problem
    membrane = ift_snn.lif(alpha, theta, reset_before_decay=before)
    nu = "theta*alpha**(n+1)" if before else "theta*alpha**n"
    general = ift_snn.srm("alpha**n", nu, theta, params={"alpha": alpha})
    tm, tg = ift_snn.forward(membrane, a, u0, backend=BACKEND), ift_snn.forward(general, a, u0, backend=BACKEND)
    np.testing.assert_array_equal(tm.s, tg.s)
    gm, gg = ift_snn.backward(membrane, tm, g), ift_snn.backward(general, tg, g)
    assert_close(gg.a, gm.a)
    assert_close(gg.u0, gm.u0)
    assert_params_close(gg.params, gm.params)


def test_neuron_shape_is_kept(rng):
    model = ift_snn.lif(0.9)
    a = rng.normal(0.4, 0.6, size=(20, 3, 4, 2))
    trace = ift_snn.forward(model, a, u0=np.zeros((3, 4, 2)))  # the default backend
    grads = ift_snn.backward(model, trace, np.ones_like(a))
    assert trace.s.shape == trace.u.shape == grads.a.shape == a.shape
    assert grads.u0.shape == (3, 4, 2)
    flat = ift_snn.backward(model, ift_snn.forward(model, a.reshape(20, -1)), np.ones((20, 24)))
    np.testing.assert_array_equal(grads.a.reshape(20, -1), flat.a)


def test_parameter_gradients_can_be_skipped(rng):
    model = ift_snn.cuba_lif(0.9, 0.7)
    a, g = rng.normal(0.4, 0.5, (40, 6)), rng.normal(size=(40, 6))
    trace = ift_snn.forward(model, a)
    full = ift_snn.backward(model, trace, g)
    lean = ift_snn.backward(model, trace, g, parameters=False)
    assert lean.params == {} and set(full.params) == {"alpha_mem", "alpha_syn", "theta"}
    np.testing.assert_array_equal(lean.a, full.a)
    np.testing.assert_array_equal(lean.u0, full.u0)
