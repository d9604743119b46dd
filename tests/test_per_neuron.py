"""Parameters given one value per neuron (``forward(..., params=...)``): the generated kernels read them as
per-neuron vectors; spikes equal those of one scalar model per neuron, and every gradient (dL/da, dL/du0,
dL/dp per neuron for the per-neuron parameters, summed for the shared ones) equals the float64 oracle run
neuron by neuron with that neuron's values, and central finite differences (smooth spike)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ift_snn
from ift_snn import ops
from ift_snn.backends import reference
from ift_snn.codegen.ir import CodegenError, build_kernel
from ift_snn.experiments.zoo import zoo_model

from .conftest import RTOL, models, problems, rel_err

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _values(model, names, M, rng):
    """Per-neuron values within 10% below each parameter's (inside every model's range)."""
    return {k: dict(model.params)[k] * rng.uniform(0.9, 1.0, M) for k in names}


def _oracle_per_neuron(model, a, g, u0, per, truncation=None):
    """The float64 reference, one neuron at a time with that neuron's scalar model (independent of the
    per-neuron kernels)."""
    T, M = a.shape
    grad_a, grad_u0 = np.empty((T, M)), np.empty(M)
    params = {k: np.zeros(M) if k in per else 0.0 for k in model.parameter_names}
    spikes = np.empty((T, M))
    for j in range(M):
        mj = model.with_params(**{k: float(v[j]) for k, v in per.items()})
        col = lambda x: x[:, j:j + 1]  # noqa: E731
        u0j = None if u0 is None else u0[j:j + 1]
        spikes[:, j] = reference.simulate(mj, col(a), u0j)[1][:, 0]
        ref = reference.bptt(mj, col(a), col(g), u0j, truncation=truncation)
        grad_a[:, j], grad_u0[j] = ref.a[:, 0], ref.u0[0]
        for k, v in ref.params.items():
            if k in per:
                params[k][j] = v
            else:
                params[k] += v
    return spikes, grad_a, grad_u0, params


def _check(model, a, g, u0, per, backend, truncation=None, dtype=np.float64):
    trace = ops.forward(model, a.astype(dtype), None if u0 is None else u0.astype(dtype), params=per,
                        backend=backend)
    grads = ops.backward(model, trace, g.astype(dtype), truncation=truncation)
    spikes, grad_a, grad_u0, params = _oracle_per_neuron(model, a, g, u0, per, truncation)
    if dtype == np.float64:
        np.testing.assert_array_equal(trace.s, spikes)
    tol = RTOL[dtype]
    assert rel_err(grads.a, grad_a) <= tol, "dL/da"
    assert rel_err(grads.u0, grad_u0) <= tol, "dL/du0"
    scale = max(float(np.max(np.abs(v))) for v in params.values()) or 1.0
    for k, want in params.items():
        got = grads.params[k]
        assert np.shape(got) == np.shape(want), k
        err = float(np.max(np.abs(np.asarray(got) - want))) / scale
        assert err <= tol, f"dL/d{k}: relative {err:.3g}"
    return trace, grads


@SETTINGS
@given(models(), problems(max_T=30, max_M=3), st.data())
def test_random_models_with_per_neuron_parameters_equal_the_oracle(model, problem, data):
    a, g, u0 = problem
    names = data.draw(st.lists(st.sampled_from(model.parameter_names), min_size=1, unique=True))
    per = _values(model, names, a.shape[1], np.random.default_rng(data.draw(st.integers(0, 2**31))))
    K = data.draw(st.sampled_from([None, 7]))
    _check(model, a, g, u0, per, "numpy", truncation=K)


@pytest.mark.parametrize("name, names", [("lif", ("alpha", "theta")), ("alif", ("alpha", "beta"))])
def test_compiled_cpu_kernels_with_per_neuron_parameters(name, names):
    """The Numba printing (per-neuron invariants kept in arrays per chunk: alif), with u0 (the initial state's
    parameter term), in float64 (float32: the PyTorch layer's tests)."""
    model = zoo_model(name)
    rng = np.random.default_rng(3)
    T, M = 40, 70  # more neurons than... one chunk is enough; two ranges of threads
    a, g, u0 = rng.normal(0.5, 0.8, (T, M)), rng.normal(size=(T, M)), rng.normal(0, 0.3, M)
    per = _values(model, names, M, rng)
    trace, _ = _check(model, a, g, u0, per, "cpu")
    assert trace.s.any()


def test_per_neuron_gradients_equal_finite_differences():
    model = ift_snn.lif(0.9, 1.0, surrogate=ift_snn.neurons.surrogates.sigmoid(slope=2.0), spike="smooth")
    rng = np.random.default_rng(5)
    T, M, h = 30, 3, 1e-6
    a, g = rng.normal(0.5, 0.7, (T, M)), rng.normal(size=(T, M))
    per = {"alpha": np.array([0.8, 0.9, 0.95]), "theta": np.array([0.7, 1.0, 1.2])}
    grads = ops.backward(model, ops.forward(model, a, params=per, backend="numpy"), g)
    loss = lambda p: float(np.sum(g * ops.forward(model, a, params=p, backend="numpy").s))  # noqa: E731
    for k in per:
        for j in range(M):
            up, down = {n: v.copy() for n, v in per.items()}, {n: v.copy() for n, v in per.items()}
            up[k][j] += h
            down[k][j] -= h
            fd = (loss(up) - loss(down)) / (2 * h)
            assert abs(grads.params[k][j] - fd) <= 1e-6 * max(1.0, abs(fd)), (k, j, grads.params[k][j], fd)


def test_batch_major_values_broadcast_over_the_batch():
    """time_axis=1: values of shape (*rest) are each neuron's, shared over the batch; dL/dp comes back per
    (batch, neuron), whose sum over the batch is the gradient of the shared per-neuron value."""
    model = ift_snn.lif(0.9)
    rng = np.random.default_rng(2)
    B, T, N = 3, 25, 4
    a, g = rng.normal(0.5, 0.8, (B, T, N)), rng.normal(size=(B, T, N))
    alpha = rng.uniform(0.7, 1.0, N)
    trace = ops.forward(model, a, params={"alpha": alpha}, time_axis=1)
    grads = ops.backward(model, trace, g)
    assert grads.params["alpha"].shape == (B, N)
    time_major = ops.forward(model, a.transpose(1, 0, 2), params={"alpha": np.broadcast_to(alpha, (B, N))})
    want = ops.backward(model, time_major, g.transpose(1, 0, 2))
    np.testing.assert_array_equal(trace.s, time_major.s.transpose(1, 0, 2))
    np.testing.assert_allclose(grads.params["alpha"], want.params["alpha"], rtol=1e-12)
    np.testing.assert_allclose(grads.a, want.a.transpose(1, 0, 2), rtol=1e-12, atol=1e-14)


def test_bptt_method_with_per_neuron_parameters_equals_exodus():
    model = ift_snn.cuba_lif(0.9, 0.7)
    rng = np.random.default_rng(4)
    a, g = rng.normal(0.5, 0.8, (30, 3)), rng.normal(size=(30, 3))
    trace = ops.forward(model, a, params={"alpha_syn": np.array([0.6, 0.7, 0.8])}, backend="numpy")
    exact, ref = ops.backward(model, trace, g), ops.backward(model, trace, g, method="bptt")
    np.testing.assert_allclose(exact.params["alpha_syn"], ref.params["alpha_syn"], rtol=1e-10)
    assert abs(exact.params["theta"] - ref.params["theta"]) <= 1e-10 * abs(ref.params["theta"])


def test_bad_per_neuron_values_are_named():
    model = ift_snn.lif(0.9)
    a = np.ones((5, 3))
    with pytest.raises(ValueError, match=r"params\['alpha'\] holds 1.5, out of range"):
        ops.forward(model, a, params={"alpha": np.array([0.5, 0.9, 1.5])})
    with pytest.raises(ValueError, match=r"params\['theta'\] has shape \(2,\), which does not broadcast"):
        ops.forward(model, a, params={"theta": np.ones(2)})
    with pytest.raises(ValueError, match="'tau' , which is not|'tau', which is not a parameter"):
        ops.forward(model, a, params={"tau": np.ones(3)})
    with pytest.raises(ValueError, match=r"params\['theta'\] contains NaN"):
        ops.forward(model, a, params={"theta": np.array([1.0, np.nan, 1.0])})
    with pytest.raises(ValueError, match="not parameters of the lif model"):
        build_kernel(model, "forward", "f64", per_neuron=("tau",))
    with pytest.raises(CodegenError, match="surrogate map"):
        build_kernel(model, "surrogate", "f64", per_neuron=("theta",))


def test_per_neuron_kernels_are_their_own_structure():
    """A per-neuron kernel has its own fingerprint; the scalar kernels' stay as they were."""
    model = ift_snn.lif(0.9)
    scalar = build_kernel(model, "backward", "f64")
    per = build_kernel(model, "backward", "f64", per_neuron=("alpha",))
    assert scalar.fingerprint != per.fingerprint
    assert [p.name for p in per.params] == ["theta", "sg_scale", "sg_width"]
    assert [v.name for v in per.vectors][-1] == "pv_alpha"
