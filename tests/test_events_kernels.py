"""Generated event kernels: printed from the SymPy derivation, Numba equal to the NumPy reference, CUDA to PTX."""

from __future__ import annotations

import inspect
import re
import shutil

import numpy as np
import pytest

from ift_snn.codegen.cuda import compile_ptx, nvrtc_available
from ift_snn.codegen.printers import NumbaPrinter
from ift_snn.events import EventLIF, SpikeTrain, layer_backward, simulate
from ift_snn.events import kernels
from ift_snn.symbolic.events import kernel_expressions

HAVE_COMPILER = nvrtc_available() or bool(shutil.which("nvcc"))


def _problem(tau, seed=0, B=3, C=6, M=5, S=7, max_spikes=12):
    rng = np.random.default_rng(seed)
    model = EventLIF(tau=tau, tau_s=1.0, max_spikes=max_spikes)
    counts = rng.integers(0, S + 1, size=(B, C))
    t = np.sort(rng.uniform(0, 10, size=(B, C, S)), axis=2)
    t[np.arange(S)[None, None, :] >= counts[:, :, None]] = np.inf
    w = rng.uniform(-0.1, 0.6, size=(C, M)) * {2.0: 1.0, 3.0: 0.8, 0.5: 3.0}[tau]
    return model, w, SpikeTrain(t, counts), rng


@pytest.mark.parametrize("tau", [2.0, 3.0, 0.5])
def test_numba_kernels_equal_the_numpy_reference(tau):
    model, w, x, rng = _problem(tau, max_spikes=4)
    ref = simulate(model, w, x)
    got = kernels.simulate_compiled(model, w, x)
    assert ref.out.counts.sum() > 20 and ref.dropped.sum() > 0  # the cap is exercised too
    assert np.array_equal(got.out.counts, ref.out.counts) and np.array_equal(got.dropped, ref.dropped)
    assert np.array_equal(got.interval, ref.interval)
    valid = np.isfinite(ref.out.times)
    assert np.array_equal(np.isfinite(got.out.times), valid)
    assert np.max(np.abs(got.out.times[valid] - ref.out.times[valid])) <= 1e-12 * np.max(ref.out.times[valid])
    g = np.where(valid, rng.normal(size=valid.shape), 0.0)
    a, b = kernels.backward_compiled(got, g), layer_backward(ref, g)
    for name in ("w", "inputs", "total"):
        want = getattr(b, name)
        assert np.max(np.abs(getattr(a, name) - want)) <= 1e-11 * np.max(np.abs(want)), name


def test_sources_are_printed_from_the_derivation():
    fwd, bwd = kernels.numba_sources()
    printer = NumbaPrinter("f64")
    ex = kernel_expressions()
    for key in ("u_local", "du_local", "s_crit", "closed_y", "I_next", "V_reset"):
        assert printer.doprint(ex[key]) in fwd.code, key
    for key in ("total", "lam", "grad_w", "P_tau_decay"):
        assert printer.doprint(ex[key]) in bwd.code, key
    cu_fwd, cu_bwd = kernels.cuda_sources()
    assert "atomicAdd" in cu_bwd.code and "__global__" in cu_fwd.code
    for src in (fwd, bwd, cu_fwd, cu_bwd):
        assert re.fullmatch(r"ift_snn_events_lif_(forward|backward)_f64_[0-9a-f]{8}", src.name)
        assert src.name in src.code and "__KERNEL_NAME__" not in src.code
        assert str(src) == src.code
    # deterministic: rebuilding gives the same names (sha256 of the text, not hash())
    kernels.numba_sources.cache_clear()
    kernels.cuda_sources.cache_clear()
    assert kernels.numba_sources()[0].name == fwd.name and kernels.cuda_sources()[1].name == cu_bwd.name


def test_generated_python_is_inspectable():
    kernels.simulate_compiled(*_problem(2.0)[:3])
    fn = kernels._compiled("forward")
    assert "def ift_snn_events_lif_forward_f64_" in inspect.getsource(fn.py_func)


@pytest.mark.skipif(not HAVE_COMPILER, reason="neither NVRTC (CuPy) nor nvcc is installed")
def test_cuda_sources_compile_to_ptx():
    for src in kernels.cuda_sources():
        ptx = compile_ptx(src, "sm_90")
        assert f".entry {src.name}" in ptx


@pytest.mark.gpu
@pytest.mark.parametrize("tau", [2.0, 3.0])
def test_cuda_kernels_equal_the_numpy_reference(tau):
    model, w, x, rng = _problem(tau)
    ref = simulate(model, w, x)
    got = kernels.simulate_cuda(model, w, x)
    assert np.array_equal(got.out.counts, ref.out.counts) and np.array_equal(got.dropped, ref.dropped)
    valid = np.isfinite(ref.out.times)
    assert np.max(np.abs(got.out.times[valid] - ref.out.times[valid])) <= 1e-12 * np.max(ref.out.times[valid])
    g = np.where(valid, rng.normal(size=valid.shape), 0.0)
    a, b = kernels.backward_cuda(got, g), layer_backward(ref, g)
    for name in ("w", "inputs", "total"):
        want = getattr(b, name)
        assert np.max(np.abs(getattr(a, name) - want)) <= 1e-11 * np.max(np.abs(want)), name
