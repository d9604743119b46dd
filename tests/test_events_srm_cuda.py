"""The continuous-time CUDA kernels: compiled to PTX, run on the host (g++ and a shim, one call per lane) against
the CPU kernels of the same derivation, and on a GPU through CuPy (marker gpu)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from ift_snn.codegen.cuda import compile_ptx, nvrtc_available
from ift_snn.events import SpikeTrain
from ift_snn.events.srm import EventSRM, _stream, backward_srm, simulate_srm
from ift_snn.events.srm_cuda import lane_arrivals, srm_cuda_source

HAVE_COMPILER = nvrtc_available() or bool(shutil.which("nvcc"))
MODELS = ["lif", "alpha", "adaptive"]

SHIM = """
#include <math.h>
#define CUDART_INF INFINITY
struct ift_snn_dim3 { int x; };
static ift_snn_dim3 blockIdx, threadIdx, blockDim;
#define __global__
#define __device__
#define __restrict__
static double atomicAdd(double* a, double v) { double old = *a; *a += v; return old; }
extern "C" void ift_snn_set_thread(int j) { blockIdx.x = j; threadIdx.x = 0; blockDim.x = 1; }
"""


def _problem(seed, delays=True):
    rng = np.random.default_rng(seed)
    x = SpikeTrain(np.sort(rng.uniform(0, 6, (2, 4, 3)), axis=2), np.full((2, 4), 3))
    w = rng.normal(1.5, 1.0, (4, 3))
    d = rng.uniform(0, 1.5, (4, 3)) if delays else np.zeros((4, 3))
    return rng, x, w, d


@pytest.mark.skipif(not HAVE_COMPILER, reason="neither NVRTC (CuPy) nor nvcc is installed")
@pytest.mark.parametrize("name", MODELS)
def test_cuda_source_compiles_to_ptx(name):
    src = srm_cuda_source(EventSRM.named(name).derivation)
    ptx = compile_ptx(src, "sm_90")
    assert f".entry {src.name}_forward" in ptx and f".entry {src.name}_backward" in ptx
    assert srm_cuda_source(EventSRM.named(name).derivation).name == src.name  # deterministic


@pytest.mark.skipif(shutil.which("g++") is None, reason="no host C++ compiler (g++)")
@pytest.mark.parametrize("name", MODELS)
def test_cuda_source_run_on_the_host_equals_the_cpu_kernels(name, tmp_path):
    model = EventSRM.named(name, backend="python", max_spikes=32)
    rng, x, w, d = _problem(MODELS.index(name))
    ref = simulate_srm(model, w, x, delays=d)
    g = np.where(np.isfinite(ref.out.times), rng.normal(size=ref.out.times.shape), 0.0)
    gref = backward_srm(ref, g)
    src = srm_cuda_source(model.derivation)
    cpp = tmp_path / "k.cpp"
    cpp.write_text(SHIM + src.code.replace("#include <math_constants.h>", ""))
    lib = tmp_path / "k.so"
    subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", str(lib), str(cpp)], check=True, capture_output=True)
    so = ctypes.CDLL(str(lib))
    keep = []

    def ptr(a, dtype=np.float64):
        a = np.ascontiguousarray(a, dtype=dtype)
        keep.append(a)
        return a.ctypes.data_as(ctypes.c_void_p), a

    B, M, S = 2, 3, model.max_spikes
    stream = _stream(x)
    E = stream[0].shape[1]
    at, order = lane_arrivals(model, w, d, stream)
    tab = model.kernels.tables
    p_at, _ = ptr(at)
    p_order, _ = ptr(order, np.int64)
    p_n, _ = ptr(stream[3], np.int64)
    p_ch, _ = ptr(stream[1], np.int64)
    p_w, _ = ptr(w)
    p_p, _ = ptr(model.values)
    p_tab = {k: ptr(tab[k], np.int64)[0] for k in ("TR", "TP", "ELIM", "MR", "MQ", "SPIKE", "I_EPS", "I_DEPS",
                                                    "I_EPS_P", "I_NU_P")}
    p_t, times = ptr(np.full((B, M, S), np.inf))
    p_u, udot = ptr(np.zeros((B, M, S)))
    p_i, interval = ptr(np.full((B, M, S), -1), np.int64)
    p_c, count = ptr(np.zeros((B, M)), np.int64)
    p_d, drop = ptr(np.zeros((B, M)), np.int64)
    ints = [ctypes.c_int(v) for v in (B, M, E, at.shape[1], S)]
    fwd = getattr(so, src.name + "_forward")
    for lane in range(B * M):
        so.ift_snn_set_thread(lane)
        fwd(p_at, p_order, p_n, p_ch, p_w, p_p, p_t, p_u, p_i, p_c, p_d, p_tab["TR"], p_tab["TP"], p_tab["ELIM"],
            p_tab["MR"], p_tab["MQ"], *ints)
    np.testing.assert_array_equal(count, ref.out.counts)
    assert count.sum() >= 6
    np.testing.assert_array_equal(interval, ref.interval)
    np.testing.assert_allclose(times, ref.out.times, rtol=1e-13, atol=0)
    np.testing.assert_allclose(udot, ref.udot, rtol=1e-12, atol=1e-14)
    p_g, _ = ptr(g)
    p_dW, dW = ptr(np.zeros((4, M)))
    p_dD, dD = ptr(np.zeros((4, M)))
    p_dev, d_ev = ptr(np.zeros((B, E)))
    p_dP, dP = ptr(np.zeros(len(model.values)))
    bwd = getattr(so, src.name + "_backward")
    for lane in range(B * M):
        so.ift_snn_set_thread(lane)
        bwd(p_at, p_order, p_n, p_ch, p_w, p_p, p_t, p_u, p_i, p_c, p_g, p_dW, p_dD, p_dev, p_dP, p_tab["SPIKE"],
            ctypes.c_int(tab["SPIKE"].size), p_tab["I_EPS"], p_tab["I_DEPS"], p_tab["I_EPS_P"],
            ctypes.c_longlong(tab["I_DNU"]), p_tab["I_NU_P"], *ints)
    np.testing.assert_allclose(dW, gref.w, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(dD, gref.delays, rtol=1e-11, atol=1e-13)
    want = np.array([gref.params[k] for k in model.names])
    np.testing.assert_allclose(dP, want, rtol=1e-11, atol=1e-12)
    from ift_snn.events.srm import _inputs_grad

    np.testing.assert_allclose(_inputs_grad(ref, d_ev), gref.inputs, rtol=1e-11, atol=1e-13)


@pytest.mark.gpu
@pytest.mark.parametrize("name", MODELS)
def test_cupy_kernels_equal_the_cpu_kernels(name):
    pytest.importorskip("cupy")
    from ift_snn.events.srm_cuda import backward_srm_cuda, simulate_srm_cuda

    model = EventSRM.named(name, max_spikes=32)
    rng, x, w, d = _problem(7)
    ref = simulate_srm(model, w, x, delays=d, axonal=np.array([0.1, 0.0, 0.2]))
    got = simulate_srm_cuda(model, w, x, delays=d, axonal=np.array([0.1, 0.0, 0.2]))
    np.testing.assert_array_equal(got.out.counts, ref.out.counts)
    np.testing.assert_allclose(got.out.times, ref.out.times, rtol=1e-13, atol=0)
    g = np.where(np.isfinite(ref.out.times), rng.normal(size=ref.out.times.shape), 0.0)
    a, b = backward_srm_cuda(got, g), backward_srm(ref, g)
    for k in ("w", "inputs", "delays", "axonal"):
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-11, atol=1e-13)
    assert a.params == pytest.approx(b.params, rel=1e-11)
