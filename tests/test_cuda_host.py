"""The printed CUDA, run on the host: the kernel source compiled as C++ by g++ with a small shim (no GPU
needed), one call per thread index, against the generated NumPy kernels of the same loop tree (a membrane with a clip, a resonator, a delay
line, a tap table).

This checks what the CUDA printer decides on its own (indexing of (rows, M) arguments and ring buffers,
constant tables, the restart block, float literals and math functions) on every CI run; the GPU tests
(marker gpu) run the same source through CuPy on a device.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

import ift_snn
from ift_snn.backends import compiled
from ift_snn.codegen.cuda import cuda_source
from ift_snn.codegen.ir import argument_values, build_kernel
from ift_snn.codegen.tree import FINAL, INPUT, OUTPUT, PARAM, VECTOR, WORK, lower
from ift_snn.experiments.zoo import zoo_model

from .test_rings import MODELS as RING_MODELS

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no host C++ compiler (g++)")

SHIM = """
#include <math.h>
struct ift_snn_dim3 { int x; };
static ift_snn_dim3 blockIdx, threadIdx, blockDim;
#define __global__
#define __constant__ static const
#define __restrict__
extern "C" void ift_snn_set_thread(int j) { blockIdx.x = j; threadIdx.x = 0; blockDim.x = 1; }
"""

#: A membrane with its clip mask, a resonator (trigonometry), a delay line and a tap table (rings).
MODELS = {
    "cuba_lif_clip": lambda: ift_snn.cuba_lif(0.9, 0.8, u_min=-0.4),
    "rf": lambda: ift_snn.get_model("rf"),
    "delay70": RING_MODELS["delay70"],
    "taps24": RING_MODELS["taps24"],
}


def _host_run(model, quantity, tmp_path, T, M, inputs, vectors, truncation, per_neuron=()):
    """Compile the CUDA source of one scan (float64) with g++ and run it once per neuron j."""
    kernel = build_kernel(model, quantity, "f64", per_neuron=per_neuron)
    fn = lower(kernel)
    src = tmp_path / f"{kernel.name}.cpp"
    src.write_text(SHIM + cuda_source(kernel).code)
    lib = tmp_path / f"{kernel.name}.so"
    subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, capture_output=True)
    so = ctypes.CDLL(str(lib))
    args, outs, fins, keep = [], {}, {}, []

    def pointer(x):
        x = np.ascontiguousarray(x, dtype=np.float64)
        keep.append(x)
        return x.ctypes.data_as(ctypes.c_void_p)

    values = iter(argument_values(model, per_neuron))
    for a in fn.args:
        if a.kind == INPUT:
            args.append(pointer(inputs[a.symbol.name]))
        elif a.kind == VECTOR:
            rows = [vectors.get(r.name, np.zeros(M)) for r in a.rows] if a.rows else None
            args.append(pointer(np.stack(rows) if rows else vectors.get(a.symbol.name, np.zeros(M))))
        elif a.kind == OUTPUT:
            outs[a.symbol.name] = np.zeros((T, M))
            args.append(pointer(outs[a.symbol.name]))
        elif a.kind == FINAL:
            arr = np.zeros((len(a.rows), M) if a.rows else M)
            fins.update(zip((r.name for r in a.rows), arr) if a.rows else [(a.symbol.name, arr)])
            args.append(pointer(arr))
        elif a.kind == PARAM:
            args.append(ctypes.c_double(next(values)))
        elif a.kind == WORK:
            args.append(pointer(np.full((a.length, M), np.nan)))
    args += [ctypes.c_int(T), ctypes.c_int(M), ctypes.c_int(truncation)]
    call = getattr(so, kernel.name)
    for j in range(M):
        so.ift_snn_set_thread(j)
        call(*args)
    return outs, fins  # written through the pointers (C-contiguous float64 arrays are passed as they are)


#: Models with parameters given per neuron (vectors in_pv_<name>, per-thread invariants).
PER_NEURON = {"alif": ("alpha", "beta", "theta")}


@pytest.mark.parametrize("name", sorted(MODELS) + [f"{k}/per-neuron" for k in sorted(PER_NEURON)])
def test_cuda_source_run_on_the_host_equals_the_numpy_kernels(name, tmp_path):
    name, _, per = name.partition("/")
    model = MODELS[name]() if name in MODELS else zoo_model(name)
    rng = np.random.default_rng(7)
    T, M = 90, 3
    a = rng.normal(0.5, 0.7, (T, M))
    u0 = rng.normal(0.0, 0.3, M)
    names = PER_NEURON[name] if per else ()
    per_neuron = {k: dict(model.params)[k] * rng.uniform(0.9, 1.0, M) for k in names}
    vectors = compiled._vectors(model, None, u0, M, np.dtype(np.float64), np, per_neuron)
    vectors.update({f"pv_{k}": v for k, v in per_neuron.items()})
    run = lambda *args: compiled._run(*args, per_neuron=per_neuron)  # noqa: E731
    want, want_fins = run(model, "forward", "numpy", np.dtype(np.float64), T, M, {"a": a}, vectors, 0)
    got, got_fins = _host_run(model, "forward", tmp_path, T, M, {"a": a}, vectors, 0, names)
    assert want["s"].any(), "no spikes: the reset path would go untested"
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-13, atol=1e-13, err_msg=f"forward {k}")
    for k in want_fins:
        np.testing.assert_allclose(got_fins[k], want_fins[k], rtol=1e-13, atol=1e-13, err_msg=f"forward final {k}")
    named = {"g": rng.normal(size=(T, M)), "sigma": want["sigma"], "s": want["s"], "u": want["u"], "a": a}
    if "m" in want:
        named["m"] = want["m"]
    # one step's vector-Jacobian product (the gradient through a carried state), from a random state and dL/dx1
    x0 = {f"x0_{n}": rng.normal(0, 0.4, M) for n in ift_snn.state_names(model)}
    lam = {f"lT_{n}": rng.normal(0, 1.0, M) for n in ift_snn.state_names(model)}
    one = {"a": a[:1], "g": named["g"][:1]}
    for quantity in ("step", "step_slayer") if name in ("rf", "taps24", "alif") else ():  # (a state of each kind)
        want_s, _ = run(model, quantity, "numpy", np.dtype(np.float64), 1, M, one, {**vectors, **x0, **lam}, 0)
        got_s, _ = _host_run(model, quantity, tmp_path, 1, M, one, {**vectors, **x0, **lam}, 0, names)
        assert {"grad_a", "gx_" + ift_snn.state_names(model)[0]} <= set(want_s)
        for k in want_s:  # dL/da, dL/dx0 per state, dL/dp per parameter
            np.testing.assert_allclose(got_s[k], want_s[k], rtol=1e-12, atol=1e-12, err_msg=f"{quantity} {k}")
    for quantity, K in (("backward", 0), ("backward", 11), ("slayer", 0), ("backward_a", 11), ("slayer_a", 0)):
        want_b, want_bf = run(model, quantity, "numpy", np.dtype(np.float64), T, M, named, vectors, K)
        got_b, got_bf = _host_run(model, quantity, tmp_path, T, M, named, vectors, K, names)
        np.testing.assert_allclose(got_b["grad_a"], want_b["grad_a"], rtol=1e-12, atol=1e-13,
                                   err_msg=f"{quantity} K={K} dL/da")
        for k in want_bf:
            np.testing.assert_allclose(got_bf[k], want_bf[k], rtol=1e-12, atol=1e-12, err_msg=f"{quantity} K={K} {k}")
