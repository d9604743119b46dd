"""The CPU kernels' output workspace: a buffer is reused only when nobody else holds it; results are never
overwritten (issue 30: fresh large arrays cost page faults, and some calls paid 2-3x for them)."""

from __future__ import annotations

import numpy as np
import pytest

import ift_snn
from ift_snn import ops
from ift_snn.backends.compiled import Workspace, workspace


def test_reuse_only_when_free():
    ws = Workspace(max_bytes=1 << 20)
    a = ws.empty((10, 10), np.float32)
    assert ws.empty((10, 10), np.float32) is not a  # a is held here
    addr = a.ctypes.data
    del a
    b = ws.empty((10, 10), np.float32)
    assert b.ctypes.data == addr  # freed: reused
    view = b[2:]
    del b
    assert ws.empty((10, 10), np.float32).ctypes.data != addr  # a view keeps its base out of the pool
    del view
    assert ws.empty((10, 10), np.float64).dtype == np.float64  # keyed by dtype
    big = ws.empty((1 << 20,), np.float64)  # over max_bytes: handed out, not kept
    assert big.nbytes > ws.max_bytes and ws.nbytes <= ws.max_bytes
    ws.clear()
    assert ws.nbytes == 0


def test_results_held_by_the_caller_are_never_overwritten():
    model = ift_snn.lif(0.9, 1.0)
    rng = np.random.default_rng(0)
    a1 = rng.normal(0.35, 0.5, size=(50, 2, 64)).astype(np.float32)
    a2 = rng.normal(0.35, 0.5, size=(50, 2, 64)).astype(np.float32)
    first = ops.forward(model, a1)
    kept = first.u.copy(), first.s.copy()
    second = ops.forward(model, a2)
    assert np.array_equal(first.u, kept[0]) and np.array_equal(first.s, kept[1])
    assert not np.array_equal(second.u, first.u)
    g = np.ones_like(a1)
    want = ops.backward(model, first, g).a.copy()
    for _ in range(3):  # buffers recycled between calls: the same numbers each time
        np.testing.assert_array_equal(ops.backward(model, first, g).a, want)


def test_torch_tensors_keep_their_memory():
    torch = pytest.importorskip("torch")
    from ift_snn.integrations.torch import LIF

    layer = LIF(0.9)
    x = torch.rand(2, 40, 16)
    y1 = layer(x)
    kept = y1.clone()
    layer(torch.rand(2, 40, 16))
    assert torch.equal(y1, kept)
    workspace.clear()


def test_the_traces_own_copy_of_the_input_comes_from_the_workspace():
    """forward(copy=True) keeps a copy of a that later edits of a cannot reach; the copy is a workspace buffer,
    taken again once the trace is gone (no fresh pages each call), never while a trace holds it."""
    model = ift_snn.lif(0.9, 1.0)
    a = np.random.default_rng(1).normal(0.35, 0.5, size=(40, 3, 16)).astype(np.float32)
    trace = ops.forward(model, a, time_axis=1)
    want = a.copy()
    a *= 3
    np.testing.assert_array_equal(trace.a, want)
    assert not np.shares_memory(trace.a, a)
    addr = trace.a.ctypes.data
    other = ops.forward(model, a, time_axis=1)
    assert other.a.ctypes.data != addr  # held by the first trace
    np.testing.assert_array_equal(trace.a, want)
    del trace
    again = ops.forward(model, a, time_axis=1)
    assert again.a.ctypes.data == addr and np.array_equal(again.a, a)
    del other, again
