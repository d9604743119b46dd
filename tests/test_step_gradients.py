"""Gradients through a carried state (ift_snn/symbolic/step.py): one step's vector-Jacobian product, chained
over the steps of a sequence (ops.backward(..., grad_state=dL/dx1) per one-step record; SpikingLayer.step
with autograd), equals the gradient of the whole sequence by one scan: exact (exodus) and with the reset
detached (slayer), for every family of models, in dL/da, dL/du0, dL/dp (shared and per neuron) and dL/dx0.
The whole-sequence gradients are themselves proved against the float64 oracle (test_gradients.py); here the
chain is also checked against the oracle directly for exodus."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ift_snn
from ift_snn import ops
from ift_snn.backends import reference
from ift_snn.experiments.zoo import zoo_model

from .conftest import models, problems, rel_err

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _chain(model, a, g, u0, method, backend="numpy", params=None):
    """(dL/da, dL/du0, dL/dp, dL/dx0) by stepping: T one-step records, backward from the last with grad_state."""
    T = a.shape[0]
    traces, state = [], None
    for t in range(T):
        trace = ops.forward(model, a[t:t + 1], u0 if t == 0 else None, state=state, backend=backend, params=params)
        traces.append(trace)
        state = trace.state
    lam, grad_a = np.zeros_like(state), np.zeros_like(a)
    total = {k: 0.0 for k in model.parameter_names}
    for t in reversed(range(T)):
        grads = ops.backward(model, traces[t], g[t:t + 1], method=method, grad_state=lam)
        lam, grad_a[t] = grads.state, grads.a[0]
        total = {k: total[k] + v for k, v in grads.params.items()}
    return grad_a, grads.u0, total, lam


def _assert_chain_equals_whole(model, a, g, u0, method, backend="numpy", params=None, tol=1e-10):
    whole = ops.backward(model, ops.forward(model, a, u0, backend=backend, params=params), g, method=method)
    grad_a, grad_u0, grad_p, grad_x0 = _chain(model, a, g, u0, method, backend, params)
    assert rel_err(grad_a, whole.a) <= tol, "dL/da"
    assert rel_err(grad_u0, whole.u0) <= tol, "dL/du0"
    scale = max(float(np.max(np.abs(v))) for v in whole.params.values()) or 1.0
    for k, v in whole.params.items():
        assert float(np.max(np.abs(np.asarray(grad_p[k]) - v))) <= tol * scale, f"dL/d{k}"
    # dL/dx0: every row, except that the whole-sequence SLAYER scan of an SRM reports 0 for its reset path
    # (s_prev, w_nu*); the chain carries the spikes-held-fixed derivative there (symbolic/step.py)
    rows = [i for i, n in enumerate(ift_snn.state_names(model))
            if not (method == "slayer" and model.membrane is None and (n == "s_prev" or n.startswith("w_nu")))]
    assert rel_err(grad_x0[rows], whole.state[rows]) <= tol, "dL/dx0"


@SETTINGS
@given(models(), problems(max_T=15, max_M=3), st.sampled_from(["exodus", "slayer"]))
def test_chained_steps_equal_the_whole_sequence(model, problem, method):
    a, g, u0 = problem
    _assert_chain_equals_whole(model, a, g, u0, method)


@pytest.mark.parametrize("name", ["alif", "delayed_alpha"])
def test_chained_compiled_steps_equal_the_oracle(name):
    """The Numba kernels of a step, chained, against the float64 reference BPTT of the whole sequence."""
    model = zoo_model(name)
    rng = np.random.default_rng(11)
    a, g, u0 = rng.normal(0.6, 0.8, (20, 5)), rng.normal(size=(20, 5)), rng.normal(0, 0.3, 5)
    grad_a, grad_u0, grad_p, _ = _chain(model, a, g, u0, "exodus", backend="cpu")
    ref = reference.bptt(model, a, g, u0)
    assert rel_err(grad_a, ref.a) <= 1e-10 and rel_err(grad_u0, ref.u0) <= 1e-10
    scale = max(abs(v) for v in ref.params.values())
    assert all(abs(grad_p[k] - v) <= 1e-10 * scale for k, v in ref.params.items())


def test_chained_steps_with_per_neuron_parameters():
    model = ift_snn.cuba_lif(0.9, 0.7, u_min=-0.5)
    rng = np.random.default_rng(12)
    a, g = rng.normal(0.6, 0.8, (15, 4)), rng.normal(size=(15, 4))
    params = {"alpha_mem": np.array([0.7, 0.8, 0.9, 1.0]), "theta": np.array([0.8, 1.0, 1.1, 1.3])}
    for method in ("exodus", "slayer"):
        _assert_chain_equals_whole(model, a, g, None, method, params=params)


def test_grad_state_is_refused_where_it_does_not_apply():
    model = ift_snn.lif(0.9)
    a = np.ones((3, 2))
    trace = ops.forward(model, a)
    with pytest.raises(ValueError, match="one-step records .* T = 3"):
        ops.backward(model, trace, a, grad_state=np.zeros((2, 2)))
    one = ops.forward(model, a[:1])
    with pytest.raises(ValueError, match=r"grad_state has shape \(3, 2\); expected .* \(2, 2\)"):
        ops.backward(model, one, a[:1], grad_state=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="'bptt' is the reference sweep"):
        ops.backward(model, one, a[:1], method="bptt", grad_state=np.zeros((2, 2)))


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("case", ["lif_per_neuron", "srm", "slayer"])
def test_layer_steps_backpropagate_as_the_whole_sequence(case):
    """SpikingLayer.step with autograd through the carried state: the spikes and every gradient of forward()
    on the whole sequence (x, alpha / theta per neuron or shared)."""
    from ift_snn.integrations.torch import CUBALIF, LIF, SpikingLayer

    make = {"lif_per_neuron": lambda: LIF(torch.tensor([0.7, 0.8, 0.9, 1.0]), train_alpha=True, train_theta=True),
            "cuba": lambda: CUBALIF(0.9, 0.7, train_alpha=True),
            "srm": lambda: SpikingLayer(ift_snn.get_model("alpha_srm"), train_alpha=True),
            "slayer": lambda: LIF(0.9, method="slayer", train_alpha=True)}[case]
    gen = torch.Generator().manual_seed(13)
    x = 0.5 + 0.8 * torch.randn(3, 25, 4, dtype=torch.float64, generator=gen)
    g = torch.randn(3, 25, 4, dtype=torch.float64, generator=gen)
    whole, stepped = make().double(), make().double()
    xw, xs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    sw = whole(xw)
    (sw * g).sum().backward()
    ss = torch.stack([stepped.step(xs[:, t]) for t in range(x.shape[1])], 1)
    (ss * g).sum().backward()
    assert torch.equal(ss, sw) and sw.sum() > 0
    assert rel_err(xs.grad.numpy(), xw.grad.numpy()) <= 1e-10
    for k in whole.trainable:
        assert rel_err(getattr(stepped, k).grad.numpy(), getattr(whole, k).grad.numpy()) <= 1e-10, k


def test_detach_states_is_truncated_bptt():
    """Cutting the history every K steps (detach_states) gives forward() with truncation=K."""
    from ift_snn.integrations.torch import LIF

    gen = torch.Generator().manual_seed(14)
    x = 0.5 + 0.8 * torch.randn(2, 24, 3, dtype=torch.float64, generator=gen)
    g = torch.randn(2, 24, 3, dtype=torch.float64, generator=gen)
    K = 6
    whole, stepped = LIF(0.9, truncation=K).double(), LIF(0.9).double()
    xw, xs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (whole(xw) * g).sum().backward()
    out = []
    for t in range(x.shape[1]):
        if t and t % K == 0:
            stepped.detach_states()
        out.append(stepped.step(xs[:, t]))
    (torch.stack(out, 1) * g).sum().backward()
    assert rel_err(xs.grad.numpy(), xw.grad.numpy()) <= 1e-12
