# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. From a derivation to kernels: CUDA and compiled CPU code
#
# Notebook 2 derived the exact backward pass of the LIF neuron as a reverse
# scan. Here we follow that scan through the code generator:
#
#     derivation (SymPy)  ->  ScanKernel IR (hoisting, CSE)  ->  CUDA C source  -> PTX (NVRTC or nvcc)
#                                                            ->  Python source  -> Numba (CPU)
#
# We then check the compiled CPU kernels against the float64 oracle, time them
# against a plain PyTorch autograd BPTT loop of the same neuron, and run the
# CUDA kernels where a GPU is present. The GPU cells skip themselves and say
# so on a machine without one.

# %%
import os
import shutil
import statistics
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import ift_snn
from ift_snn.backends import cpu as cpu_backend
from ift_snn.backends import reference
from ift_snn.codegen.cpu import compile_numba, numpy_source, python_source
from ift_snn.codegen.cuda import compile_ptx, generate_cuda, nvrtc_available
from ift_snn.codegen.ir import CodegenError, argument_values, build_kernel
from ift_snn.symbolic.report import derive

FIGURES = Path(os.environ.get("IFT_SNN_FIGURE_DIR", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)


def save(fig, name):
    """Write the figure to FIGURES/name.png; every axes must have both labels."""
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: an axes has no label"
    fig.savefig(FIGURES / f"{name}.png", dpi=110, bbox_inches="tight")


def rel(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# %% [markdown]
# ## 1. The derivation
#
# `derive` builds the equation system, solves it by the IFT, derives the
# scans from the kernel recurrences, and proves symbolically that the
# unrolled backward scan equals the IFT adjoint for T = 2..6.

# %%
model = ift_snn.lif(alpha=0.9, theta=1.0)
d = derive(model)
assert d.proved
print(d.recurrence.forward)
print()
print(d.recurrence.backward)
print()
print("step factor c =", d.recurrence.step_factor, "   SLAYER drops", d.recurrence.dropped, "from dL/ds")

# %% [markdown]
# ## 2. The IR: one scan, ready to print
#
# `build_kernel` turns one scan into a `ScanKernel`. Parameters stay symbolic
# and become kernel arguments, so training alpha never recompiles.
# Sub-expressions of parameters only are hoisted out of the time loop, and
# common sub-expressions are shared. The kernel's name carries a sha256 of
# its structure.

# %%
ir_bwd = build_kernel(model, "backward", "f32")
print(ir_bwd.name)
print(ir_bwd.describe())
assert build_kernel(ift_snn.lif(0.5, 2.0), "backward", "f32").name == ir_bwd.name  # values are arguments
assert build_kernel(model, "backward", "f64").name != ir_bwd.name  # dtype is structure

# %% [markdown]
# ## 3. CUDA source
#
# One thread per neuron loops over time. Arrays are time-major (T, M), so
# neighbouring threads read neighbouring addresses. The forward kernel also
# stores sigma, so the backward kernel never recomputes the surrogate's exp.
# The backward kernel restarts its state at truncation boundaries.

# %%
cuda_fwd = generate_cuda(model, "forward", "f32")
cuda_bwd = generate_cuda(model, "backward", "f32")
print(cuda_fwd.code)
print(cuda_bwd.code)
assert f'extern "C" __global__ void {cuda_bwd.name}(' in cuda_bwd.code
assert "p_alpha - p_theta*sigma" in cuda_bwd.code  # the exact step factor, in the kernel

# %% [markdown]
# ### Compiling to PTX (no GPU needed)
#
# `compile_ptx` uses NVRTC through CuPy when it is installed, otherwise
# `nvcc --ptx`. With neither, this cell says it skipped.

# %%
if nvrtc_available() or shutil.which("nvcc"):
    try:
        ptx = compile_ptx(cuda_bwd, arch="sm_80")
    except CodegenError as exc:  # a compiler is present but cannot target this architecture
        print("PTX compilation skipped:", str(exc).splitlines()[0])
    else:
        lines = ptx.splitlines()
        entry = next(i for i, line in enumerate(lines) if ".entry" in line)
        via = "NVRTC" if nvrtc_available() else "nvcc"
        print(f"{len(lines)} lines of PTX (by {via}); the header and the entry point:")
        print("\n".join(lines[:12] + ["..."] + lines[entry:entry + 8] + ["..."]))
        assert f".entry {cuda_bwd.name}(" in ptx
else:
    print("PTX compilation skipped: neither NVRTC (pip install -e '.[gpu]' in the ift_snn checkout) nor nvcc is available")

# %% [markdown]
# ## 4. The CPU kernel: generated Python, compiled by Numba
#
# The IR is lowered once to a loop tree (`ift_snn.codegen.tree`), which the
# CUDA printer above, a Numba printer and a NumPy printer only spell out. For
# Numba (`numba.njit(nogil=True)`) time is the outer loop and the contiguous
# neurons the inner loop, in chunks that run on threads.

# %%
ir_fwd64 = build_kernel(model, "forward", "f64")
ir_bwd64 = build_kernel(model, "backward", "f64")
src_bwd64 = python_source(ir_bwd64)
print(src_bwd64.code)

# %% [markdown]
# We compile both kernels ourselves and call them with plain arrays, in the
# argument order the IR fixes: per-step inputs, `u_init`, per-step outputs,
# finals, parameters, then T, M, the truncation (0 = none) and the chunk
# width.

# %%
fwd_kernel = compile_numba(python_source(ir_fwd64))
bwd_kernel = compile_numba(src_bwd64)

T, M = 200, 64
rng = np.random.default_rng(0)
a = rng.normal(0.3, 0.5, (T, M))
g = rng.normal(size=(T, M))
u0 = rng.normal(0.0, 0.3, M)
params = argument_values(model)  # alpha, theta, then the surrogate's scale and width: all kernel arguments
print("forward arguments :", [f"in_{s}" for s in ir_fwd64.inputs] + [f"in_{v}" for v in ir_fwd64.vectors]
      + [f"out_{s}" for s in ir_fwd64.outputs] + [p.name for p in ir_fwd64.params])
print("backward arguments:", [f"in_{s}" for s in ir_bwd64.inputs] + [f"in_{v}" for v in ir_bwd64.vectors]
      + [f"out_{s}" for s in ir_bwd64.outputs] + [f"fin_{s}" for s, _ in ir_bwd64.finals]
      + [p.name for p in ir_bwd64.params])

out = {s.name: np.empty((T, M)) for s in ir_fwd64.outputs}  # u, s, sigma
# per-neuron vectors: the initial state x0 (LIF: u_prev = u0, s_prev = 0); the forward's finals are its last state
vec = {"u_init": u0, "x0_u_prev": u0}
vectors = lambda ir: [vec.get(v.name, np.zeros(M)) for v in ir.vectors]  # noqa: E731
last = {s.name: np.empty(M) for s, _ in ir_fwd64.finals}
fwd_kernel(a, *vectors(ir_fwd64), out["u"], out["s"], out["sigma"], *last.values(), *params, T, M, 0, 1024, 0, M)
named = {"g": g, "a": a, **out}
back = {s.name: np.empty((T, M)) for s in ir_bwd64.outputs}  # grad_a: the only full-size output
fins = {s.name: np.empty(M) for s, _ in ir_bwd64.finals}  # per neuron: dL/du0, parameter sums, diagnostics
bwd_kernel(*[named[s.name] for s in ir_bwd64.inputs], *vectors(ir_bwd64),
           *back.values(), *fins.values(), *params, T, M, 0, 1024, 0, M)
grad_u0 = fins["grad_u_init"]

oracle = reference.bptt(model, a, g, u0)
print(f"u      vs oracle: {rel(out['u'], oracle.u):.1e}")
print(f"dL/da  vs oracle: {rel(back['grad_a'], oracle.a):.1e}")
print(f"dL/du0 vs oracle: {rel(grad_u0, oracle.u0):.1e}")
assert np.array_equal(out["s"], oracle.s)
assert rel(out["u"], oracle.u) < 1e-10
assert rel(back["grad_a"], oracle.a) < 1e-10
assert rel(grad_u0, oracle.u0) < 1e-10
for k, v in oracle.params.items():  # dL/dp: the per-neuron sums the kernel carries, summed over neurons
    print(f"dL/d{k}: kernel {fins['acc_' + k].sum():.12g}, oracle {v:.12g}")
    assert abs(fins["acc_" + k].sum() - v) < 1e-10 * max(1.0, abs(v))

# %% [markdown]
# The NumPy printer spells the same tree with whole neuron vectors: the loop
# over time stays, every statement acts on `[j_begin:j_end]` at once, and no
# compiler is needed. It is `backend="numpy"` and the fallback without Numba.

# %%
vec_bwd64 = numpy_source(ir_bwd64)
print("\n".join(line for line in vec_bwd64.code.splitlines() if not line.startswith("#"))[:1500])
trace_np = ift_snn.forward(model, a, u0, backend="numpy")
grads_np = ift_snn.backward(model, trace_np, g)
assert rel(trace_np.u, oracle.u) < 1e-10 and rel(grads_np.a, oracle.a) < 1e-10

# %% [markdown]
# That is what `ift_snn.forward(..., backend="cpu")` and `ift_snn.backward`
# do for you. They also memoise the compiled kernels per structure (not per
# parameter value) and add the parameter gradients and the stability
# diagnostic:

# %%
trace = ift_snn.forward(model, a, u0, backend="cpu")
grads = ift_snn.backward(model, trace, g, method="exodus")
assert trace.backend == "cpu"
assert rel(trace.u, oracle.u) < 1e-10 and rel(grads.a, oracle.a) < 1e-10
assert all(abs(grads.params[k] - oracle.params[k]) < 1e-10 * max(map(abs, oracle.params.values()))
           for k in oracle.params)
print("dL/dalpha, dL/dtheta:", grads.params, " oracle:", oracle.params)

builds = cpu_backend.CACHE_STATS["builds"]
for alpha in (0.5, 0.7, 0.95):  # new parameter values: no new kernels
    m = ift_snn.lif(alpha, 1.0)
    ift_snn.backward(m, ift_snn.forward(m, a, u0, backend="cpu"), g)
assert cpu_backend.CACHE_STATS["builds"] == builds
print("kernel cache:", cpu_backend.CACHE_STATS)

# %% [markdown]
# ## 5. Against PyTorch autograd BPTT
#
# The baseline is the usual way to train this neuron: a Python time loop in
# PyTorch with a custom autograd function for the spike and its exponential
# surrogate. Autograd records every step and replays the loop backwards.
# First we check that it computes the same gradient (float64, small), then we
# time forward + backward in float32. The ratio depends on the machine and is
# reported, not asserted.

# %%
try:
    import torch
except ImportError:
    torch = None
    print("PyTorch not installed: the baseline is skipped (pip install -e '.[torch]' in the ift_snn checkout)")

if torch is not None:
    torch.set_num_threads(os.cpu_count() or 1)
    ALPHA, THETA = 0.9, 1.0
    SCALE, WIDTH = dict(model.surrogate.constants).values()  # the model above: exponential(scale=0.95, width=0.5)

    class Spike(torch.autograd.Function):
        """H(u - theta) forward; the exponential surrogate backward."""

        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u >= THETA).to(u.dtype)

        @staticmethod
        def backward(ctx, grad):
            (u,) = ctx.saved_tensors
            return grad * SCALE * torch.exp(-(u - THETA).abs() / (WIDTH * THETA)) / (WIDTH * THETA)

    def torch_lif(a_t, u0_t):
        """u[n] = alpha u[n-1] + a[n] - theta s[n-1], s[n] = H(u[n] - theta): a plain time loop."""
        u, s, out = u0_t, torch.zeros_like(u0_t), []
        for n in range(a_t.shape[0]):
            u = ALPHA * u + a_t[n] - THETA * s
            s = Spike.apply(u)
            out.append(s)
        return torch.stack(out)

    a_t = torch.tensor(a, requires_grad=True)
    u0_t = torch.tensor(u0, requires_grad=True)
    torch_lif(a_t, u0_t).backward(torch.tensor(g))
    print(f"PyTorch BPTT vs oracle: dL/da {rel(a_t.grad.numpy(), oracle.a):.1e}, "
          f"dL/du0 {rel(u0_t.grad.numpy(), oracle.u0):.1e}")
    assert rel(a_t.grad.numpy(), oracle.a) < 1e-10 and rel(u0_t.grad.numpy(), oracle.u0) < 1e-10

# %%
def median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


TB, MB = 200, 8192  # 200 steps, 8192 neurons (e.g. batch 32 x 256), float32
rb = np.random.default_rng(1)
a32 = rb.normal(0.3, 0.5, (TB, MB)).astype(np.float32)
g32 = rb.normal(size=(TB, MB)).astype(np.float32)


def ours():
    tr = ift_snn.forward(model, a32, backend="cpu")
    return ift_snn.backward(model, tr, g32).a


ours()  # compile the float32 kernels outside the timing
timings = {"ift_snn (generated kernels)": median_ms(ours, 5)}
if torch is not None:
    g32_t = torch.from_numpy(g32)

    def torch_step():
        at = torch.tensor(a32, requires_grad=True)
        torch_lif(at, torch.zeros(MB)).backward(g32_t)
        return at.grad

    timings["PyTorch autograd BPTT"] = median_ms(torch_step, 3)
for k, v in timings.items():
    print(f"{k:<30} forward + backward: {v:8.1f} ms")
if torch is not None:
    ratio = timings["PyTorch autograd BPTT"] / timings["ift_snn (generated kernels)"]
    print(f"PyTorch / ift_snn: {ratio:.0f}x on {os.cpu_count()} cores (T = {TB}, {MB} neurons, float32)")

fig, ax = plt.subplots(figsize=(6, 2.6))
names = list(timings)
ax.barh(names, [timings[k] for k in names], color=["tab:blue", "tab:gray"][: len(names)])
ax.set_xlabel("forward + backward time (ms, median)")
ax.set_ylabel("implementation")
ax.set_title(f"LIF layer, T = {TB}, {MB} neurons, float32, {os.cpu_count()} CPU cores")
save(fig, "04_timing")

# %% [markdown]
# ## 6. On a GPU
#
# With CuPy arrays the same calls run the generated CUDA kernels (the source
# printed above), compiled by CuPy and memoised per device. This cell runs
# only where CuPy finds a GPU.

# %%
try:
    import cupy

    has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # noqa: BLE001 - no CuPy, no driver or no device all mean "no GPU"
    cupy, has_gpu = None, False

if not has_gpu:
    print("GPU cells skipped: no CuPy with a CUDA GPU on this machine (pip install -e '.[gpu]' in the ift_snn checkout)")
else:
    tr_gpu = ift_snn.forward(model, cupy.asarray(a), cupy.asarray(u0))
    gr_gpu = ift_snn.backward(model, tr_gpu, cupy.asarray(g))
    assert tr_gpu.backend == "cupy"
    print(f"GPU vs oracle: u {rel(tr_gpu.u.get(), oracle.u):.1e}, dL/da {rel(gr_gpu.a.get(), oracle.a):.1e}")
    assert rel(tr_gpu.u.get(), oracle.u) < 1e-10 and rel(gr_gpu.a.get(), oracle.a) < 1e-10

    a_gpu, g_gpu = cupy.asarray(a32), cupy.asarray(g32)

    def ours_gpu():
        out = ift_snn.backward(model, ift_snn.forward(model, a_gpu), g_gpu).a
        cupy.cuda.get_current_stream().synchronize()
        return out

    ours_gpu()
    gpu_ms = median_ms(ours_gpu, 10)
    print(f"ift_snn on the GPU, forward + backward: {gpu_ms:.2f} ms")
    if torch is not None and torch.cuda.is_available():
        g_t = torch.as_tensor(g32, device="cuda")

        def torch_gpu():
            at = torch.tensor(a32, device="cuda", requires_grad=True)
            torch_lif(at, torch.zeros(MB, device="cuda")).backward(g_t)
            torch.cuda.synchronize()

        torch_gpu()
        torch_ms = median_ms(torch_gpu, 3)
        print(f"PyTorch CUDA autograd BPTT: {torch_ms:.1f} ms, ratio {torch_ms / gpu_ms:.0f}x")
