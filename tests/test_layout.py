"""Batch-major arrays (``time_axis=1``): the kernels read (batch, T, *rest) in place, and every output
equals the time-major call on the transposed arrays (spikes exactly; membranes and gradients to 1e-12 in
float64): forward, final state, dL/da, dL/du0, dL/dx0, every dL/dp, the diagnostics, for every built-in model
on the numpy and cpu targets and for method="bptt"."""

from __future__ import annotations

import numpy as np
import pytest

import ift_snn
from ift_snn import ops
from ift_snn.backends import compiled
from ift_snn.neurons.models import BUILTIN_MODELS, get_model

from .conftest import rel_err

TARGETS = ["numpy"] + (["cpu"] if compiled.available() else [])


def _tm(x):
    """(B, T, *rest) -> (T, B, *rest)."""
    return np.ascontiguousarray(np.moveaxis(x, 1, 0))


@pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", sorted(BUILTIN_MODELS))
def test_batch_major_equals_time_major(name, target):
    model = get_model(name)
    rng = np.random.default_rng(5)
    B, T, rest = 3, 30, (2, 5)
    a = rng.normal(0.35, 0.6, (B, T, *rest))
    g = rng.normal(size=a.shape)
    u0 = rng.normal(0, 0.3, (B, *rest))
    bm = ops.forward(model, a, u0, backend=target, time_axis=1)
    tm = ops.forward(model, _tm(a), u0, backend=target)
    assert bm.s.shape == a.shape and bm.state.shape == tm.state.shape
    np.testing.assert_array_equal(_tm(bm.s), tm.s)
    assert float(bm.s.sum()) > 0
    assert rel_err(_tm(bm.u), tm.u) <= 1e-12 and rel_err(bm.state, tm.state) <= 1e-12
    for method, K in (("exodus", None), ("slayer", 7), ("exodus", 7)):
        gb = ops.backward(model, bm, g, method=method, truncation=K)
        gt = ops.backward(model, tm, _tm(g), method=method, truncation=K)
        assert rel_err(_tm(gb.a), gt.a) <= 1e-12 and rel_err(gb.u0, gt.u0) <= 1e-12
        assert rel_err(gb.state, gt.state) <= 1e-12
        for k, v in gt.params.items():
            assert abs(gb.params[k] - v) <= 1e-12 * max(1.0, abs(v)), k
        assert (gb.max_step_factor, gb.longest_unstable_run) == (gt.max_step_factor, gt.longest_unstable_run)
    # continuing from the state, batch-major
    b2 = ops.forward(model, a, state=bm.state, backend=target, time_axis=1)
    t2 = ops.forward(model, _tm(a), state=tm.state, backend=target)
    np.testing.assert_array_equal(_tm(b2.s), t2.s)


def test_bptt_reference_reads_batch_major():
    model = ift_snn.lif(0.9)
    rng = np.random.default_rng(2)
    a, g = rng.normal(0.35, 0.6, (4, 25, 3)), rng.normal(size=(4, 25, 3))
    tr = ops.forward(model, a, time_axis=1)
    ref = ops.backward(model, tr, g, method="bptt")
    ex = ops.backward(model, tr, g, method="exodus")
    assert ref.a.shape == a.shape and rel_err(ex.a, ref.a) <= 1e-10


def test_bad_time_axis():
    with pytest.raises(ValueError, match=r"time_axis=2: expected 0 .* or 1"):
        ops.forward(ift_snn.lif(0.9), np.zeros((2, 3, 4)), time_axis=2)
    with pytest.raises(ValueError, match=r"input a has shape \(5,\); expected \(batch, T, \*neurons\) for time_axis=1"):
        ops.forward(ift_snn.lif(0.9), np.zeros(5), time_axis=1)


def test_overflow_message_names_step_and_neuron_in_batch_major():
    a = np.zeros((2, 6, 3), np.float32)
    a[1, 4, 2] = 3e38
    a[1, 5, 2] = 3e38
    with pytest.raises(ops.NonFiniteError, match=r"membrane overflow at step 5, neuron \(1, 2\)"):
        ops.forward(ift_snn.if_neuron(1.0), a, time_axis=1)
