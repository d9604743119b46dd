"""The step-factor diagnostic of docs/MATH.md section 6: reported, warned about, never a silent inf/NaN."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import ift_snn
from ift_snn.neurons.surrogates import exponential


def test_max_step_factor_is_reported(rng):
    model = ift_snn.lif(0.9, 1.0, theta_r=0.8)
    a = rng.normal(0.3, 0.5, (50, 8))
    trace = ift_snn.forward(model, a)
    grads = ift_snn.backward(model, trace, np.ones_like(a))
    by_hand = np.max(np.abs(0.9 - 0.8 * model.sigma(trace.u)))
    assert grads.max_step_factor == pytest.approx(by_hand, rel=1e-12)
    slayer = ift_snn.backward(model, trace, np.ones_like(a), method="slayer")
    assert slayer.max_step_factor == pytest.approx(0.9)


def _near_threshold(T, M, alpha=0.9, level=0.97):
    # Constant input holding u just under theta: sigma stays large, no spike resets it.
    return np.full((T, M), (1 - alpha) * level)


def test_long_unstable_run_warns_once():
    model = ift_snn.lif(0.9, 1.0, surrogate=exponential(scale=3.0, width=0.5))
    a = _near_threshold(60, 4)
    trace = ift_snn.forward(model, a)
    assert trace.s.sum() == 0
    with pytest.warns(ift_snn.StabilityWarning, match="step factor") as record:
        grads = ift_snn.backward(model, trace, np.ones_like(a))
    assert len(record) == 1
    assert grads.longest_unstable_run >= 40
    assert grads.max_step_factor > 1


def test_stable_run_does_not_warn(rng):
    model = ift_snn.lif(0.9, 1.0, surrogate=exponential(scale=0.3, width=1.0))
    a = rng.normal(0.3, 0.5, (200, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grads = ift_snn.backward(model, ift_snn.forward(model, a), np.ones_like(a))
    assert grads.max_step_factor <= 1


def test_overflow_raises_instead_of_returning_inf():
    model = ift_snn.lif(0.9, 1.0, surrogate=exponential(scale=20.0, width=0.5))
    a = _near_threshold(400, 2).astype(np.float32)
    trace = ift_snn.forward(model, a)
    with pytest.raises(ift_snn.GradientOverflowError, match="step factor"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ift_snn.StabilityWarning)
            ift_snn.backward(model, trace, np.ones_like(a))


def test_short_runs_that_multiply_to_a_blow_up_warn():
    """Runs shorter than STABILITY_RUN, but whose factors multiply past GROWTH_LIMIT, still warn."""
    model = ift_snn.lif(0.9, 1.0, surrogate=exponential(scale=2.268, width=0.5))
    a = np.random.default_rng(0).normal(0.3, 0.5, (300, 256))
    trace = ift_snn.forward(model, a)
    with pytest.warns(ift_snn.StabilityWarning, match="multiplying to"):
        grads = ift_snn.backward(model, trace, np.ones_like(a))
    assert grads.longest_unstable_run < ift_snn.ops.STABILITY_RUN
    assert grads.max_growth > ift_snn.ops.GROWTH_LIMIT
    slayer = ift_snn.backward(model, trace, np.ones_like(a), method="slayer")
    assert np.linalg.norm(grads.a) > 10 * np.linalg.norm(slayer.a)  # the exact gradient did grow
