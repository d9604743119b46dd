"""Parameter gradients and stability diagnostics are derived, proved and generated into the backward kernel.

dL/dp = -lambda^T d phi/dp is a per-neuron sum carried by the reverse scan
(symbolic/recurrence.py); the proof checks it, dL/ds, SLAYER (reset detached)
and truncation against the symbolic IFT adjoint; the compiled kernels then
equal the independent float64 oracle, their in-kernel diagnostics are equal
on every target and equal a by-hand count for LIF.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ift_snn
from ift_snn import ops
from ift_snn.backends import cpu, reference
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
def test_in_kernel_diagnostics_equal_across_targets(name, method, K):
    """The Numba and the NumPy printing of one loop tree report the same diagnostics (bptt: the exodus kernel's)."""
    model, a, g, u0 = _case(name, 2)
    a = 1.5 * a  # more spikes, longer unstable runs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ops.StabilityWarning)
        got = ops.backward(model, ops.forward(model, a, u0, backend="cpu"), g, method=method, truncation=K)
        numpy_trace = ops.forward(model, a, u0, backend="numpy")
        want = ops.backward(model, numpy_trace, g, method=method, truncation=K)
        if method == "exodus":
            bptt = ops.backward(model, numpy_trace, g, method="bptt", truncation=K)
            assert (bptt.max_step_factor, bptt.longest_unstable_run, bptt.max_growth) == (
                want.max_step_factor, want.longest_unstable_run, want.max_growth)
    assert got.max_step_factor == pytest.approx(want.max_step_factor, rel=1e-12)
    assert got.longest_unstable_run == want.longest_unstable_run
    assert got.max_growth == pytest.approx(want.max_growth, rel=1e-9)


def _lif_diagnostics_by_hand(c: np.ndarray, K: int | None) -> tuple[float, int, float]:
    """max |c|, the longest run of |c| > 1 and the largest product of |c| over consecutive steps, restarting
    at the chunk boundaries of K steps (what the adjoint carries); the product capped at 1e30."""
    T, M = c.shape
    mag = np.abs(c)
    longest, growth = 0, 1.0
    for j in range(M):
        run, prod = 0, 1.0
        for n in range(T):
            if K and n % K == 0:
                run, prod = 0, 1.0
            run = run + 1 if mag[n, j] > 1 else 0
            prod = min(max(prod * mag[n, j], 1.0), 1e30)
            longest, growth = max(longest, run), max(growth, prod)
    return float(mag.max()), longest, growth


@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=pytest.mark.skipif(
    not cpu.available(), reason="Numba is not installed"))])
@pytest.mark.parametrize("method,K", [("exodus", None), ("exodus", 6), ("slayer", None)])
def test_in_kernel_diagnostics_equal_a_count_by_hand(backend, method, K):
    """LIF: c = alpha - theta_r sigma (exodus) or alpha (slayer), counted here from the surrogate of u."""
    model = ift_snn.lif(0.9, 1.0, theta_r=0.8, surrogate=ift_snn.neurons.surrogates.exponential(scale=2.0, width=0.5))
    rng = np.random.default_rng(4)
    a = rng.normal(0.1, 0.3, size=(120, 5))
    trace = ops.forward(model, a, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ops.StabilityWarning)
        got = ops.backward(model, trace, rng.normal(size=a.shape), method=method, truncation=K)
    c = 0.9 - 0.8 * model.sigma(trace.u) if method == "exodus" else np.full(a.shape, 0.9)
    max_factor, longest, growth = _lif_diagnostics_by_hand(c, K)
    assert got.max_step_factor == pytest.approx(max_factor, rel=1e-12)
    assert got.longest_unstable_run == longest
    assert got.max_growth == pytest.approx(growth, rel=1e-9)
    if method == "exodus":
        assert longest > 3 and growth > 10  # the case has teeth


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), alpha=st.floats(0.3, 1.0), theta=st.floats(0.3, 2.0),
       scale=st.floats(0.2, 2.0), K=st.one_of(st.none(), st.integers(1, 30)))
def test_property_lif_parameters_equal_the_oracle(seed, alpha, theta, scale, K):
    rng = np.random.default_rng(seed)
    model = ift_snn.lif(alpha, theta, surrogate=ift_snn.neurons.surrogates.exponential(scale=scale))
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
