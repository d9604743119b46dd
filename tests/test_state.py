"""Streaming state (issue 11 item 3): the forward scan takes its whole state and returns its final state;
the backward returns dL/d(initial state).

Claims checked, for every built-in model, on the NumPy-printed and the compiled target (float64):
- two calls of T/2, the second started from the first's ``Trace.state``, give the membrane and the
  spikes of one call of T, and the second call's dL/da equals the one call's (causal);
- dL/dx0 and dL/dp with the state held equal central finite differences of the loss, for models with
  the smooth spike (whose surrogate is the exact derivative), LIF, CUBA and a general SRM;
- a state of the wrong shape is refused with both shapes named.
"""

from __future__ import annotations

import numpy as np
import pytest

import ift_snn
from ift_snn import ops

TARGETS = ["numpy", "cpu"]


def _data(model, T=40, M=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0.45, 0.6, (T, M)), rng.normal(size=(T, M)), rng.normal(0, 0.3, M)


@pytest.mark.parametrize("backend", TARGETS)
@pytest.mark.parametrize("name", sorted(ift_snn.BUILTIN_MODELS))
def test_two_calls_equal_one_call(name, backend):
    model = ift_snn.get_model(name)
    a, g, u0 = _data(model)
    h = 17
    whole = ops.forward(model, a, u0, backend=backend)
    first = ops.forward(model, a[:h], u0, backend=backend)
    second = ops.forward(model, a[h:], state=first.state, backend=backend)
    assert first.state.shape == (len(ops.state_names(model)), a.shape[1])
    np.testing.assert_array_equal(np.concatenate([first.s, second.s]), whole.s)
    np.testing.assert_allclose(np.concatenate([first.u, second.u]), whole.u, rtol=1e-12, atol=1e-12)
    assert np.any(first.s[-1] != 0) or np.any(first.s[:-1] != 0), "no spikes: the carried reset goes untested"
    gw = ops.backward(model, whole, g)
    g2 = ops.backward(model, second, g[h:])
    np.testing.assert_allclose(g2.a, gw.a[h:], rtol=1e-10, atol=1e-12)
    assert g2.state.shape == first.state.shape


def _smooth_models():
    return {
        "lif": ift_snn.lif(0.85, spike="smooth", surrogate="sigmoid"),
        "lif_zero": ift_snn.lif(0.85, spike="smooth", surrogate="sigmoid", reset="zero"),
        "cuba": ift_snn.cuba_lif(0.85, 0.7, spike="smooth", surrogate="sigmoid"),
        "srm": ift_snn.srm("n*alpha**n", "theta*beta**n", params={"alpha": 0.7, "beta": 0.8}, spike="smooth", surrogate="sigmoid"),
    }


@pytest.mark.parametrize("backend", TARGETS)
@pytest.mark.parametrize("key", ["lif", "lif_zero", "cuba", "srm"])
def test_state_and_parameter_gradients_equal_finite_differences(key, backend):
    model = _smooth_models()[key]
    a, g, _ = _data(model, T=25, M=3, seed=1)
    names = ops.state_names(model)
    rng = np.random.default_rng(2)
    x0 = rng.normal(0.2, 0.3, (len(names), 3))
    if "s_prev" in names:
        x0[names.index("s_prev")] = rng.uniform(0.2, 0.9, 3)
    assert_state_and_parameter_gradients_equal_fd(model, a, g, x0, backend)


def assert_state_and_parameter_gradients_equal_fd(model, a, g, x0, backend: str) -> None:
    """dL/dx0 (every state value of every neuron) and every dL/dp with the state ``x0`` held, for the loss
    sum(g * s), against central differences (1e-6 and 1e-5 relative; ``model`` with a smooth spike)."""
    names = ops.state_names(model)
    loss = lambda m, x: float(np.sum(g * ops.forward(m, a, state=x, backend=backend).s))  # noqa: E731
    grads = ops.backward(model, ops.forward(model, a, state=x0, backend=backend), g)
    eps = 1e-6
    for k in range(len(names)):
        for j in range(x0.shape[1]):
            up, down = x0.copy(), x0.copy()
            up[k, j] += eps
            down[k, j] -= eps
            fd = (loss(model, up) - loss(model, down)) / (2 * eps)
            assert abs(grads.state[k, j] - fd) <= 1e-6 * max(1.0, abs(fd)), f"dL/d{names[k]}[{j}]"
    for p, v in model.params:
        step = 1e-6 * max(1.0, abs(v))
        fd = (loss(model.with_params(**{p: v + step}), x0) - loss(model.with_params(**{p: v - step}), x0)) / (2 * step)
        assert abs(grads.params[p] - fd) <= 1e-5 * max(1.0, abs(fd)), f"dL/d{p}"


def test_state_of_the_wrong_shape_is_refused():
    model = ift_snn.lif(0.9)
    a = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"state has shape \(3, 3\); expected \(2, 3\).*u_prev"):
        ops.forward(model, a, state=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="u0 or state, not both"):
        ops.forward(model, a, np.zeros(3), state=np.zeros((2, 3)))
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.forward(model, a, state=np.zeros((2, 3), dtype=np.int64))
