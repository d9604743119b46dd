"""Parameter gradients and stability diagnostics are derived, proved and generated into the backward kernel.

dL/dp = -lambda^T d phi/dp is a per-neuron sum carried by the reverse scan
(symbolic/recurrence.py); the proof checks it, dL/ds, SLAYER (reset detached)
and truncation against the symbolic IFT adjoint; the compiled kernels then
equal the independent float64 oracle, and their in-kernel diagnostics equal
those of the NumPy scan.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ift_snn
from ift_snn import ops
from ift_snn.backends import reference
from ift_snn.codegen.cpu import python_source
from ift_snn.codegen.ir import build_kernel
from ift_snn.symbolic.recurrence import DIAGNOSTIC, PARAMETER, derive_recurrence, prove

EXTRA = {
    "lif_theta_r": lambda: ift_snn.lif(0.9, theta_r=0.7),
    "cuba_clip_theta_r": lambda: ift_snn.cuba_lif(0.9, 0.7, theta_r=0.8, u_min=-0.3),
    "srm_two_pole_reset": lambda: ift_snn.srm("0.7**n - 0.4**n", "theta*beta**n + 0.3*gamma**n",
                                              params={"beta": 0.8, "gamma": 0.5}),
    "if_reset_zero": lambda: ift_snn.if_neuron(1.2, reset="zero"),
    "lif_before_decay_multi": lambda: ift_snn.lif(0.8, reset_before_decay=True, spike="multi"),
}
MODELS = {**{k: (lambda k=k: ift_snn.get_model(k)) for k in ift_snn.BUILTIN_MODELS}, **EXTRA}


@pytest.mark.parametrize("name", sorted(EXTRA))
@pytest.mark.parametrize("method", ["exodus", "slayer"])
def test_proof_covers_parameters_dl_ds_slayer_and_truncation(name, method):
    model = MODELS[name]()
    for T, K in ((3, None), (4, 2)):
        proof = prove(model, T, method=method, truncation=K)
        assert proof.ok, proof.detail
        assert "dL/ds" in proof.detail and all(f"{p}" in proof.detail for p in model.parameter_names)


def test_a_wrong_parameter_sum_fails_the_proof():
    import dataclasses

    model = ift_snn.lif(0.9)
    rec = derive_recurrence(model)
    finals = tuple((lhs, rhs * 2 if lhs.name == PARAMETER + "alpha" else rhs) for lhs, rhs in rec.backward.finals)
    wrong = dataclasses.replace(rec, backward=dataclasses.replace(rec.backward, finals=finals))
    proof = prove(model, 3, wrong)
    assert not proof.ok and "dL/dalpha" in proof.detail


def test_backward_kernels_write_only_dl_da():
    for name in ("lif", "cuba_lif", "alpha_srm"):
        kernel = build_kernel(ift_snn.get_model(name), "backward", "f32")
        assert [o.name for o in kernel.outputs] == ["grad_a"]
        names = {lhs.name for lhs, _ in kernel.finals}
        assert {PARAMETER + p for p in ift_snn.get_model(name).parameter_names} <= names
        assert {DIAGNOSTIC + k for k in ("max_factor", "longest_run", "max_growth")} <= names
        code = python_source(kernel).code
        assert "out_d[" not in code and "out_dl_ds[" not in code


def _case(name, seed, T=80, M=6):
    rng = np.random.default_rng(seed)
    model = MODELS[name]()
    a = rng.normal(0.4, 0.6, size=(T, M))
    return model, a, rng.normal(size=a.shape), rng.normal(0.2, 0.3, size=M)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method,K", [("exodus", None), ("exodus", 7), ("slayer", None), ("slayer", 7)])
def test_compiled_parameter_gradients_equal_the_oracle(name, method, K):
    model, a, g, u0 = _case(name, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ops.StabilityWarning)
        got = ops.backward(model, ops.forward(model, a, u0, backend="cpu"), g, method=method, truncation=K)
    want = (reference.bptt if method == "exodus" else reference.slayer)(model, a, g, u0, truncation=K)
    for k, v in want.params.items():
        assert abs(got.params[k] - v) <= 1e-10 * max(1.0, abs(v)), (k, got.params[k], v)
    np.testing.assert_allclose(got.u0, want.u0, rtol=1e-10, atol=1e-10 * max(1, np.abs(want.u0).max()))
    np.testing.assert_allclose(got.a, want.a, rtol=1e-10, atol=1e-10 * max(1, np.abs(want.a).max()))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method,K", [("exodus", None), ("exodus", 5), ("slayer", None)])
def test_in_kernel_diagnostics_equal_the_numpy_scan(name, method, K):
    model, a, g, u0 = _case(name, 2)
    a = 1.5 * a  # more spikes, longer unstable runs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ops.StabilityWarning)
        got = ops.backward(model, ops.forward(model, a, u0, backend="cpu"), g, method=method, truncation=K)
        want = ops.backward(model, ops.forward(model, a, u0, backend="numpy"), g, method=method, truncation=K)
    assert got.max_step_factor == pytest.approx(want.max_step_factor, rel=1e-12)
    assert got.longest_unstable_run == want.longest_unstable_run
    assert got.max_growth == pytest.approx(want.max_growth, rel=1e-9)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), alpha=st.floats(0.3, 1.0), theta=st.floats(0.3, 2.0),
       scale=st.floats(0.2, 2.0), K=st.one_of(st.none(), st.integers(1, 30)))
def test_property_lif_parameters_equal_the_oracle(seed, alpha, theta, scale, K):
    rng = np.random.default_rng(seed)
    model = ift_snn.lif(alpha, theta, surrogate=ift_snn.surrogates.exponential(scale=scale))
    a = rng.normal(0.3 * theta, 0.5 * theta, size=(60, 4))
    g, u0 = rng.normal(size=a.shape), rng.normal(0, 0.3, size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ops.StabilityWarning)
        got = ops.backward(model, ops.forward(model, a, u0), g, truncation=K)  # float64, 60 steps: no overflow
    want = reference.bptt(model, a, g, u0, truncation=K)
    for k, v in want.params.items():
        assert abs(got.params[k] - v) <= 1e-10 * max(1.0, abs(v), np.abs(want.a).max())


def test_threaded_launch_splits_neurons_without_changing_results(monkeypatch):
    """Ranges of whole chunks run on threads (the kernels release the GIL); the split is invisible."""
    from ift_snn.backends import cpu

    model = ift_snn.cuba_lif(0.9, 0.7)
    rng = np.random.default_rng(3)
    a = rng.normal(0.4, 0.6, size=(30, 3 * cpu.CHUNK + 17))
    g = rng.normal(size=a.shape)
    results = []
    for n in ("1", "2", "3"):
        monkeypatch.setenv("IFT_SNN_NUM_THREADS", n)
        trace = ops.forward(model, a)
        results.append((trace.u, ops.backward(model, trace, g)))
    for u, grads in results[1:]:
        np.testing.assert_array_equal(u, results[0][0])
        np.testing.assert_array_equal(grads.a, results[0][1].a)
        assert grads.params == pytest.approx(results[0][1].params, rel=1e-12)
    monkeypatch.setenv("IFT_SNN_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="IFT_SNN_NUM_THREADS"):
        ops.forward(model, a)
