"""GPU checks (marker gpu): the CuPy kernels against the oracle, and DLPack sharing with PyTorch.

Skipped without a CUDA GPU and CuPy (see conftest.py); run them on a GPU machine with
``python -m pytest -m gpu``.
"""

from __future__ import annotations

import numpy as np
import pytest

import ift_snn
from ift_snn.backends import reference

from .conftest import assert_close, assert_params_close
from .test_compiled import CASES, MODELS

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cupy_kernels_equal_the_oracle(name):
    cupy = pytest.importorskip("cupy")
    model = MODELS[name]()
    rng = np.random.default_rng(0)
    a, g, u0 = rng.normal(0.35, 0.5, (80, 300)), rng.normal(size=(80, 300)), rng.normal(0, 0.3, 300)
    trace = ift_snn.forward(model, cupy.asarray(a), cupy.asarray(u0))
    assert trace.backend == "cupy" and isinstance(trace.u, cupy.ndarray)
    u, s, _ = reference.simulate(model, a, u0)
    assert_close(trace.u.get(), u, what="u")
    np.testing.assert_array_equal(trace.s.get(), s)
    for method, K in CASES:
        if method == "bptt":
            continue
        got = ift_snn.backward(model, trace, cupy.asarray(g), method=method, truncation=K)
        want = reference.bptt(model, a, g, u0, truncation=K, detach_reset=method == "slayer")
        assert isinstance(got.a, cupy.ndarray)
        assert_close(got.a.get(), want.a, what=f"{method} K={K}")
        assert_close(got.u0.get(), want.u0)
        assert_params_close(got.params, want.params)


def test_float32_on_the_gpu_agrees_with_float64():
    cupy = pytest.importorskip("cupy")
    model = ift_snn.lif(0.9)
    rng = np.random.default_rng(1)
    a, g = rng.normal(0.35, 0.5, (100, 1000)), rng.normal(size=(100, 1000))
    t32 = ift_snn.forward(model, cupy.asarray(a, dtype=cupy.float32))
    t64 = ift_snn.forward(model, cupy.asarray(a))
    if not bool((t32.s == t64.s.astype(cupy.float32)).all()):
        pytest.skip("a float32 spike flipped at threshold")
    g32 = ift_snn.backward(model, t32, cupy.asarray(g, dtype=cupy.float32))
    g64 = ift_snn.backward(model, t64, cupy.asarray(g))
    assert g32.a.dtype == cupy.float32
    assert_close(g32.a.get(), g64.a.get(), np.float32)


def test_torch_and_cupy_share_memory_through_dlpack():
    cupy = pytest.importorskip("cupy")
    torch = pytest.importorskip("torch")
    tensor = torch.zeros(4, 3, device="cuda")
    view = cupy.from_dlpack(tensor)
    view[1, 2] = 5.0
    assert float(tensor[1, 2]) == 5.0
    assert view.data.ptr == tensor.data_ptr()
