"""Benchmarks: every figure a ratio against a baseline measured in the same run.

CPU (LIF, float32, T = 300, 64 x 256 neurons by default):
- the generated Numba kernels (forward, EXODUS backward) against PyTorch
  autograd BPTT of the same model (a plain time loop with a custom surrogate
  ``autograd.Function``), when PyTorch is installed;
- against the memory floor: the bytes the scans must move (forward reads a,
  writes u, s, sigma; backward reads g, sigma, writes d, dL/da, dL/ds) over
  the copy bandwidth of a large array measured on this machine;
- the same kernels printed as vectorised NumPy (the fallback), and the derivation-to-first-kernel latency
  (codegen + compile + first call) against a cache hit.
GPU (CuPy arrays, when a GPU is present): the same against PyTorch CUDA
autograd BPTT and the device-to-device copy bandwidth.

Targets (reported, not asserted): CPU backward >= 30x faster than PyTorch
BPTT; CPU forward + backward within 3x of the memory floor; GPU forward +
backward >= 50 % of copy bandwidth and >= 20x faster than PyTorch BPTT.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import ops
from ..neurons.models import lif

__all__ = ["BenchResult", "run_cpu", "run_gpu", "format_table", "run", "torch_lif_bptt", "median_ms", "bench_layer"]


@dataclass
class BenchResult:
    device: str
    config: dict
    times_ms: dict = field(default_factory=dict)
    ratios: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


def _median_ms(fn, repeats: int, sync=lambda: None) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def _copy_bandwidth(xp, nbytes: int, repeats: int, sync=lambda: None) -> float:
    """Bytes per second moved (read + write) copying a large array."""
    src = xp.ones(nbytes // 4, dtype=xp.float32)
    dst = xp.empty_like(src)
    dst[:] = src  # first touch: page faults are not bandwidth
    sync()
    ms = _median_ms(lambda: dst.__setitem__(slice(None), src), repeats, sync)
    return 2 * src.nbytes / (ms / 1e3)


def median_ms(fn, repeats: int, sync=lambda: None) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` runs (``sync`` before and after each)."""
    return _median_ms(fn, repeats, sync)


def torch_lif_bptt(x, alpha: float, theta: float, width: float = 0.5, scale: float = 1.0):
    """The PyTorch baseline: autograd BPTT of LIF through a plain time loop.

    u[n] = alpha u[n-1] + x[n] - theta s[n-1], s[n] = H(u[n] - theta), with a
    custom ``autograd.Function`` whose backward is the exponential surrogate
    scale/(width theta) exp(-|u - theta|/(width theta)). ``x`` is time-major (T, ...).
    The loop runs over ``x.unbind(0)``: indexing ``x[n]`` would add, in the backward, a
    full-size gradient accumulation per step and slow the baseline by itself.
    """
    import torch

    w = width * theta

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u >= theta).to(u.dtype)

        @staticmethod
        def backward(ctx, grad):
            (u,) = ctx.saved_tensors
            return grad * (scale / w) * torch.exp(-(u - theta).abs() / w)

    u = torch.zeros_like(x[0])
    s = torch.zeros_like(x[0])
    out = []
    for xn in x.unbind(0):
        u = alpha * u + xn - theta * s
        s = Spike.apply(u)
        out.append(s)
    return torch.stack(out)


def _torch_bptt(torch, model, a, g, device: str):
    """(input tensor, dL/ds tensor, forward closure) of the baseline for ``model`` (a lif)."""
    alpha, theta = model.values[model.symbols[0]], model.theta
    constants = dict(model.surrogate.constants)
    at = torch.as_tensor(a, device=device).requires_grad_(True)
    gt = torch.as_tensor(g, device=device)
    return at, gt, lambda: torch_lif_bptt(at, alpha, theta, constants["width"], constants["scale"])


def check_args(T, batch, neurons, dtype, repeats) -> None:
    """ValueError/TypeError naming the first bad argument: sizes and repeats are ints >= 1, dtype f32/f64."""
    for name, value in (("T", T), ("batch", batch), ("neurons", neurons), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name}={value!r}: expected a positive int")
        if value < 1:
            raise ValueError(f"{name}={value!r} is out of range: expected a positive int")
    if dtype not in ("f32", "f64"):
        raise ValueError(f"dtype={dtype!r}: expected 'f32' or 'f64'")


def _torch_baseline_applies(model) -> bool:
    """True when ``model`` is what torch_lif_bptt computes: LIF, subtractive reset after decay, one spike,
    no clip, the exponential surrogate."""
    return (model.name == "lif" and model.parameter_names == ("alpha", "theta") and model.spike == "single"
            and model.reset == "subtract" and model.u_min is None and model.convention == "reset after decay"
            and model.surrogate.name == "exponential")


def _no_torch_baseline(res: BenchResult, model) -> bool:
    if _torch_baseline_applies(model):
        return False
    res.notes.append("the PyTorch BPTT baseline is a plain LIF loop (subtractive reset, one spike, no clip, "
                     "exponential surrogate): not measured for this model")
    return True


def run_cpu(T: int = 300, batch: int = 64, neurons: int = 256, dtype: str = "f32", repeats: int = 5,
            model=None) -> BenchResult:
    check_args(T, batch, neurons, dtype, repeats)
    from ..backends import compiled

    np_dtype = np.float32 if dtype == "f32" else np.float64
    model = lif(0.9) if model is None else model
    rng = np.random.default_rng(0)
    a = rng.normal(0.3, 0.5, (T, batch, neurons)).astype(np_dtype)
    g = rng.normal(size=a.shape).astype(np_dtype)
    res = BenchResult(device=f"CPU: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
                      config={"model": repr(model), "T": T, "batch": batch, "neurons": neurons, "dtype": dtype,
                              "repeats": repeats})
    t = res.times_ms
    # derivation to first kernel: codegen + Numba compile + first call, then a cache hit
    compiled.clear()
    start = time.perf_counter()
    trace = ops.forward(model, a, backend="cpu")
    ops.backward(model, trace, g)
    t["first_kernels_codegen_compile_run"] = 1e3 * (time.perf_counter() - start)
    start = time.perf_counter()
    compiled.get_kernel(model, "backward", np.dtype(np_dtype), "cpu")
    t["kernel_cache_hit"] = 1e3 * (time.perf_counter() - start)

    a2, g2 = a.reshape(T, -1), g.reshape(T, -1)
    fwd_out = compiled.forward(model, a2, None, "cpu")
    t["forward_kernel"] = _median_ms(lambda: compiled.forward(model, a2, None, "cpu"), repeats)
    t["backward_kernel"] = _median_ms(
        lambda: compiled.backward(model, "exodus", g2, *fwd_out[:4], None, a2), repeats)
    t["forward_api"] = _median_ms(lambda: ops.forward(model, a, backend="cpu"), repeats)
    t["backward_api"] = _median_ms(lambda: ops.backward(model, trace, g), repeats)
    # without the parameter sums (training the weights only; a layer without trainable parameters): the scan
    # derived without them reads g and sigma only
    ops.backward(model, trace, g, parameters=False)  # its kernel is built on first use: not timed
    t["backward_api_no_parameters"] = _median_ms(lambda: ops.backward(model, trace, g, parameters=False), repeats)
    numpy_trace = ops.forward(model, a, backend="numpy")
    ops.backward(model, numpy_trace, g)  # the NumPy-printed kernels are built on first use: not timed
    t["forward_numpy_scan"] = _median_ms(lambda: ops.forward(model, a, backend="numpy"), max(1, repeats // 2))
    t["backward_numpy_scan"] = _median_ms(lambda: ops.backward(model, numpy_trace, g), max(1, repeats // 2))

    itemsize = np.dtype(np_dtype).itemsize
    moved = (4 + 5) * a.size * itemsize  # forward: a -> u, s, sigma; backward: g, sigma -> d, dL/da, dL/ds
    bandwidth = _copy_bandwidth(np, 256 * 2**20, repeats)
    t["memory_floor"] = 1e3 * moved / bandwidth
    res.config["copy_bandwidth_GBps"] = bandwidth / 1e9
    res.config["bytes_moved_MB"] = moved / 1e6
    fb = t["forward_kernel"] + t["backward_kernel"]
    res.ratios["kernels_fwd_bwd_over_memory_floor"] = fb / t["memory_floor"]
    res.ratios["api_fwd_bwd_over_memory_floor"] = (t["forward_api"] + t["backward_api"]) / t["memory_floor"]
    res.ratios["numpy_scan_backward_over_kernel"] = t["backward_numpy_scan"] / t["backward_kernel"]
    res.ratios["backward_api_no_parameters_over_with"] = t["backward_api_no_parameters"] / t["backward_api"]
    res.ratios["first_kernel_over_cache_hit"] = t["first_kernels_codegen_compile_run"] / max(t["kernel_cache_hit"], 1e-6)
    if _no_torch_baseline(res, model):
        return res
    try:
        import torch
    except ImportError:
        res.notes.append("PyTorch not installed: no BPTT baseline (pip install -e '.[torch]' in the ift_snn checkout)")
        return res
    torch.set_num_threads(__import__("os").cpu_count() or 1)
    at, gt, forward = _torch_bptt(torch, model, a, g, "cpu")
    t["torch_bptt_forward"] = _median_ms(forward, max(1, repeats // 2))

    def backward_only():
        out = forward()
        start = time.perf_counter()
        (out * gt).sum().backward()
        return 1e3 * (time.perf_counter() - start)

    t["torch_bptt_backward"] = statistics.median(backward_only() for _ in range(max(1, repeats // 2)))
    res.ratios["torch_backward_over_exodus_backward_kernel"] = t["torch_bptt_backward"] / t["backward_kernel"]
    res.ratios["torch_backward_over_exodus_backward_api"] = t["torch_bptt_backward"] / t["backward_api"]
    res.ratios["torch_fwd_bwd_over_exodus_fwd_bwd_api"] = (
        (t["torch_bptt_forward"] + t["torch_bptt_backward"]) / (t["forward_api"] + t["backward_api"]))
    res.config["torch"] = torch.__version__
    return res


def run_gpu(T: int = 300, batch: int = 64, neurons: int = 256, dtype: str = "f32", repeats: int = 20,
            model=None) -> BenchResult | None:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() == 0:
            return None
    except Exception:  # noqa: BLE001 - no CuPy or no device: no GPU benchmark
        return None
    check_args(T, batch, neurons, dtype, repeats)
    from ..backends import cupy as gpu

    np_dtype = np.float32 if dtype == "f32" else np.float64
    model = lif(0.9) if model is None else model
    rng = np.random.default_rng(0)
    a = cupy.asarray(rng.normal(0.3, 0.5, (T, batch * neurons)).astype(np_dtype))
    g = cupy.asarray(rng.normal(size=a.shape).astype(np_dtype))
    sync = cupy.cuda.Device().synchronize
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    res = BenchResult(device=f"GPU: {name}", config={"model": repr(model), "T": T, "batch": batch,
                                                     "neurons": neurons, "dtype": dtype, "repeats": repeats})
    t = res.times_ms
    start = time.perf_counter()
    fwd = gpu.forward(model, a, None)
    gpu.backward(model, "exodus", g, *fwd[:4], None, a)
    sync()
    t["first_kernels_codegen_compile_run"] = 1e3 * (time.perf_counter() - start)
    t["forward_kernel"] = _median_ms(lambda: gpu.forward(model, a, None), repeats, sync)
    t["backward_kernel"] = _median_ms(
        lambda: gpu.backward(model, "exodus", g, *fwd[:4], None, a), repeats, sync)
    trace = ops.forward(model, a)
    t["forward_api"] = _median_ms(lambda: ops.forward(model, a), repeats, sync)
    t["backward_api"] = _median_ms(lambda: ops.backward(model, trace, g), repeats, sync)
    itemsize = np.dtype(np_dtype).itemsize
    moved = 9 * a.size * itemsize
    bandwidth = _copy_bandwidth(cupy, 1024 * 2**20, repeats, sync)
    res.config["copy_bandwidth_GBps"] = bandwidth / 1e9
    fb = t["forward_kernel"] + t["backward_kernel"]
    res.ratios["kernels_fraction_of_copy_bandwidth"] = (moved / (fb / 1e3)) / bandwidth
    if _no_torch_baseline(res, model):
        return res
    try:
        import torch
    except ImportError:
        res.notes.append("PyTorch not installed: no CUDA BPTT baseline")
        return res
    at, gt, forward = _torch_bptt(torch, model, a.get(), g.get(), "cuda")
    tsync = torch.cuda.synchronize
    t["torch_bptt_fwd_bwd"] = _median_ms(lambda: (forward() * gt).sum().backward(), max(3, repeats // 4), tsync)
    res.ratios["torch_fwd_bwd_over_exodus_fwd_bwd_kernels"] = t["torch_bptt_fwd_bwd"] / fb
    res.ratios["torch_fwd_bwd_over_exodus_fwd_bwd_api"] = t["torch_bptt_fwd_bwd"] / (t["forward_api"] + t["backward_api"])
    return res


def format_table(results: list[BenchResult]) -> str:
    lines = []
    for r in results:
        lines.append(f"== {r.device}")
        lines.append("   " + ", ".join(f"{k}={v}" for k, v in r.config.items() if k != "model"))
        lines.append(f"   {'time':<44} {'ms':>10}")
        for k, v in r.times_ms.items():
            lines.append(f"   {k:<44} {v:>10.3f}")
        lines.append(f"   {'ratio':<44} {'x':>10}")
        for k, v in r.ratios.items():
            lines.append(f"   {k:<44} {v:>10.2f}")
        lines += [f"   note: {n}" for n in r.notes]
    return "\n".join(lines)


def run(*, T=300, batch=64, neurons=256, dtype="f32", repeats=5, json_path=None, model=None) -> list[BenchResult]:
    """CPU and (when present) GPU benchmarks of ``model`` (default: lif(0.9)); optionally written as JSON."""
    check_args(T, batch, neurons, dtype, repeats)
    results = [run_cpu(T, batch, neurons, dtype, repeats, model)]
    gpu = run_gpu(T, batch, neurons, dtype, model=model)
    if gpu is None:
        results[0].notes.append("no GPU with CuPy here: GPU benchmark skipped")
    else:
        results.append(gpu)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump([asdict(r) for r in results], fh, indent=2)
    return results


# ------------------------------------------------- the PyTorch layer against a PyTorch BPTT loop
def bench_layer(T: int = 300, batch: int = 64, neurons: int = 256, dtype=None,
                device: str = "cpu", repeats: int = 5) -> dict:
    """Median ms of SpikingLayer forward + backward (LIF alpha 0.9, EXODUS) against a plain PyTorch autograd
    BPTT loop of the same model on the same input, measured in this run; ``ratio`` = torch / layer
    (``dtype``: a torch dtype, float32 by default)."""
    import torch

    from ..integrations.torch import SpikingLayer

    dtype = torch.float32 if dtype is None else dtype
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    x = (0.3 + 0.5 * torch.randn(batch, T, neurons, generator=gen, dtype=torch.float64)).to(dtype).to(device)
    g = torch.randn(batch, T, neurons, generator=gen, dtype=torch.float64).to(dtype).to(device)
    model = lif(0.9)
    layer = SpikingLayer(model)
    surrogate = dict(model.surrogate.constants)

    def run_layer():
        xi = x.detach().requires_grad_(True)
        s = layer(xi)
        (s * g).sum().backward()
        return s, xi.grad

    def run_torch():
        xi = x.detach().requires_grad_(True)
        s = torch_lif_bptt(xi.transpose(0, 1), 0.9, model.theta, surrogate["width"], surrogate["scale"])
        s = s.transpose(0, 1)
        (s * g).sum().backward()
        return s, xi.grad

    s_layer, g_layer = run_layer()  # warm-up: compiles (or loads) the kernels
    s_torch, g_torch = run_torch()
    layer_ms = median_ms(run_layer, repeats, sync)
    torch_ms = median_ms(run_torch, max(1, repeats), sync)
    scale = float(g_torch.abs().max()) or 1.0
    return {
        "config": {"model": repr(model), "T": T, "batch": batch, "neurons": neurons, "dtype": str(dtype),
                   "device": str(device), "repeats": repeats, "torch": torch.__version__,
                   "threads": torch.get_num_threads()},
        "layer_fwd_bwd_ms": layer_ms,
        "torch_bptt_fwd_bwd_ms": torch_ms,
        "ratio_torch_over_layer": torch_ms / layer_ms,
        "spikes_equal": bool(torch.equal(s_layer, s_torch)),
        "grad_rel_diff": float((g_layer - g_torch).abs().max()) / scale,
    }
