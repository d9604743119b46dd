"""Parameter, u0 and input gradients against central finite differences.

With the smooth spike function (the primitive of a sigmoid surrogate) the
network is differentiable and its true derivative is what every method
computes with the surrogate, so BPTT / EXODUS must equal finite differences
of the loss L = sum(g * s) up to the O(h^2) truncation error.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import ift_snn

from .conftest import models, problems

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")
# Random model structures: the generated kernels printed as NumPy (a Numba compile per random
# structure would take most of the suite's time). The Numba and CUDA printings are checked in test_compiled.py.
BACKEND = "numpy"
H = 1e-6
FD_RTOL = 1e-6


def _loss(model, a, g, u0):
    return float(np.sum(g * ift_snn.forward(model, a, u0, backend=BACKEND).s))


def _close(got, want, scale, what):
    assert abs(got - want) <= FD_RTOL * max(scale, 1e-3), f"{what}: analytic {got!r} vs finite difference {want!r}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models(smooth=True), problems(max_T=30, max_M=3))
def test_parameter_and_state_gradients_equal_finite_differences(model, problem):
    a, g, u0 = problem
    u0 = np.zeros(a.shape[1]) if u0 is None else u0
    grads = ift_snn.backward(model, ift_snn.forward(model, a, u0, backend=BACKEND), g, method="exodus")
    scale = max([abs(v) for v in grads.params.values()] + [float(np.max(np.abs(grads.a)))])
    for name, value in model.params:
        at = lambda v: _loss(model.with_params(**{name: v}), a, g, u0)  # noqa: E731
        if name.startswith("alpha") and value + H > 1:
            # alpha = 1 is the edge of the range: second-order one-sided difference.
            fd = (3 * at(value) - 4 * at(value - H) + at(value - 2 * H)) / (2 * H)
        else:
            fd = (at(value + H) - at(value - H)) / (2 * H)
        _close(grads.params[name], fd, scale, f"dL/d{name}")
    for i in range(a.shape[1]):
        e = np.zeros_like(u0)
        e[i] = H
        fd = (_loss(model, a, g, u0 + e) - _loss(model, a, g, u0 - e)) / (2 * H)
        _close(grads.u0[i], fd, scale, f"dL/du0[{i}]")
    for n in {0, a.shape[0] // 2, a.shape[0] - 1}:
        e = np.zeros_like(a)
        e[n, 0] = H
        fd = (_loss(model, a + e, g, u0) - _loss(model, a - e, g, u0)) / (2 * H)
        _close(grads.a[n, 0], fd, scale, f"dL/da[{n}, 0]")


def test_finite_differences_disagree_with_slayer():
    """The check has teeth: SLAYER's parameter gradient is not the derivative."""
    from ift_snn.neurons.surrogates import sigmoid

    model = ift_snn.lif(0.9, 1.0, spike="smooth", surrogate=sigmoid(slope=4.0))
    rng = np.random.default_rng(3)
    a, g = rng.normal(0.4, 0.5, (40, 3)), rng.normal(size=(40, 3))
    trace = ift_snn.forward(model, a, backend=BACKEND)
    fd = (_loss(model.with_params(alpha=0.9 + H), a, g, None)
          - _loss(model.with_params(alpha=0.9 - H), a, g, None)) / (2 * H)
    exact = ift_snn.backward(model, trace, g, method="exodus").params["alpha"]
    slayer = ift_snn.backward(model, trace, g, method="slayer").params["alpha"]
    assert exact == pytest.approx(fd, rel=1e-6)
    assert abs(slayer - fd) > 1e-3 * abs(fd)
