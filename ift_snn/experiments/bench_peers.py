"""``ift-snn bench --peers``: one LIF layer against the libraries users run, measured in one process.

Contestants (float32, CPU, ``torch.set_num_threads(2)``), every one on the same
input currents x ~ N(0.3, 0.5^2) and the same incoming gradient g ~ N(0, 1),
each in its own native layout (prepared outside the timed region):

==========================  ====================================================  ==========================
contestant                  configured as                                          gradient
==========================  ====================================================  ==========================
ift_snn exodus              ``integrations.torch.LIF(0.9, method="exodus",         exact (= BPTT)
                            train_alpha=True)``, (batch, time, N)
ift_snn slayer              the same with ``method="slayer"``                      reset detached
snnTorch                    ``snn.Leaky(beta=0.9, threshold=1, reset_mechanism=    reset detached
                            "subtract")`` looped over ``x.unbind(0)``, spike_grad  (= ift_snn slayer)
                            an autograd Function with ift_snn's surrogate
SpikingJelly                ``neuron.LIFNode(tau=1/(1-0.9), decay_input=False,    exact (= ift_snn exodus)
                            v_reset=None, detach_reset=False, step_mode="m",
                            surrogate_function=PiecewiseExp(alpha=2))``, (T, B, N)
SpikingJelly, default       the same with its default surrogate (Sigmoid(alpha=4)),  exact (= ift_snn exodus)
                            as its users run it (no agreement row)
snnTorch, default           ``snn.Leaky(beta=0.9)``, every other argument its          reset detached
                            default (ATan surrogate; no agreement row)
Norse, default              ``LIFBoxCell()``: its default parameters and dt (decay     exact
                            0.9, reset to zero, SuperSpike; no agreement row)
Norse                       ``LIFBoxCell(LIFBoxParameters(tau_mem_inv=0.1,         exact (= ift_snn exodus)
                            reset_method=reset_subtract, method="super"), dt=1)``
                            looped over ``(x / 0.1).unbind(0)``
sinabs (``--with-sinabs``)  ``layers.LIF(tau_mem=-1/ln 0.9, norm_input=False,      exact (= ift_snn exodus)
                            spike_fn=SingleSpike, SingleExponential(0.5, 0.5))``
==========================  ====================================================  ==========================

Dynamics. ift_snn's ``lif`` resets after the decay, u[n] = alpha u[n-1] + x[n]
- theta s[n-1] (snnTorch's ``Leaky``); SpikingJelly, Norse and sinabs reset
before it, u[n] = alpha (u[n-1] - theta s[n-1]) + x[n] (ift_snn
``lif(reset_before_decay=True)``). The timings use the ift_snn default; the
agreement checks use, for each peer, the ift_snn model with its convention
(the cost of the scans does not depend on it). Surrogate: sigma(u) =
exp(-2 |u - theta|), i.e. ift_snn ``exponential(scale=0.5, width=0.5)`` =
SpikingJelly ``PiecewiseExp(alpha=2)`` = sinabs ``SingleExponential(0.5, 0.5)``
= snnTorch with that function as ``spike_grad``. Norse offers no exponential
surrogate: it runs ``"super"``, whose backward in Norse 1.1 is 1/(1 + |x|)^2
whatever its alpha (ift_snn ``fast_sigmoid(scale=1, slope=1)``, used for its
agreement check). With scale 0.5 the exact gradient's step factor
|alpha - theta sigma| stays below 1 (docs/MATH.md section 6) at every length.

Measurements. Each size runs one warm-up call per contestant (compilation,
first touch), one memory call, a second warm-up call (the memory call let go
of what it could), then ``rounds`` rounds; each round runs every
contestant once, in an order shuffled per round (seeded), so machine noise
hits all of them alike. Forward = the call building the autograd graph,
backward = ``out.backward(g)``; fwd+bwd is their sum in the same round, and the
table shows the round whose sum is the median over rounds (its forward and
backward, so that the columns add up; the medians of each are in the JSON). Peak memory over the inputs: before the memory call,
``gc.collect(1)`` and glibc ``malloc_trim(0)`` hand freed memory back, the
kernel's peak-RSS counter is reset (``echo 5 > /proc/self/clear_refs``), then
the peak (``VmHWM``) after the call minus the resident size (``VmRSS``) before
it is reported: every byte the call touched beyond the inputs, outputs and
gradients included (PyTorch has no allocator statistics on the CPU, and
tracemalloc does not see its allocations). Where ``clear_refs`` cannot be
written, /proc/self/statm is sampled every millisecond in a thread instead (a
lower bound).

Also per size: the bare ift_snn kernels (``ift_snn.forward`` / ``backward`` on
NumPy (T, B*N) arrays, EXODUS, dL/da and dL/dalpha: the scans the exodus layer runs) and
the memory floor (the 8 arrays of B*T*N floats those two scans must move,
:data:`FLOOR_ARRAYS`, over the measured copy bandwidth). Each round starts with the
machine probe (:func:`machine_probe`): fixed work on one core, which tells a slowed
machine from a slow contestant. Ratios: ift_snn exodus fwd+bwd over the fastest peer's, exodus
backward over slayer backward, kernels fwd+bwd over the floor.

Agreement (float64 and float32, B=4, T=200, N=32): spikes that differ and
max |dL/dx_peer - dL/dx_ift| / max |dL/dx_ift| against the matching ift_snn
layer (exodus for SpikingJelly, Norse, sinabs; slayer for snnTorch).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import math
import os
import platform
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["DEFAULT_SIZES", "INSTALL_HINT", "Contestant", "run_peers", "format_peers_table", "agreement",
           "peak_rss_delta", "available_peers", "machine_probe", "fresh_memory", "format_fresh_memory"]

#: (batch, T, neurons) of the default run.
DEFAULT_SIZES = ((64, 300, 256), (16, 500, 4096), (16, 2000, 1024))
INSTALL_HINT = "pip install -e '.[bench]' in the ift_snn checkout"
ALPHA, THETA = 0.9, 1.0
#: ift_snn exponential surrogate: scale / (width theta) exp(-|u - theta| / (width theta)) = exp(-2 |u - 1|).
SG_SCALE, SG_WIDTH = 0.5, 0.5
PEERS = ("snntorch", "spikingjelly", "norse")
#: The exodus layer with alpha not trained (the peers' setting).
FIXED = "ift_snn exodus, fixed alpha"
#: Module each peer is imported from (lazily).
_PEER_MODULES = {"snntorch": "snntorch", "spikingjelly": "spikingjelly.activation_based.neuron",
                 "norse": "norse.torch", "sinabs": "sinabs.layers"}
AGREE_SIZE = (4, 200, 32)
#: Arrays of B*T*N floats the exodus layer's two scans must move at least: the forward reads a and writes u, s
#: and sigma; the backward (dL/da and dL/dalpha) reads g, sigma and u and writes dL/da.
FLOOR_ARRAYS = 8


# ------------------------------------------------------------------ memory
def _status_kb(*keys: str) -> dict:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0])
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    gc.collect(1)  # the young generations: a full collection costs ~1 s with SymPy and PyTorch loaded
    with contextlib.suppress(Exception):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _clear_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_delta(fn: Callable[[], object]) -> tuple[int, str]:
    """(bytes, method): peak resident memory during ``fn()`` above the resident size before it. ift_snn's output
    workspace is emptied first, so the call allocates its outputs as the first call of a run would."""
    from ..backends import compiled

    compiled.workspace.clear()
    _trim()
    if sys.platform.startswith("linux") and _clear_peak():
        before = _status_kb("VmRSS")["VmRSS"]
        fn()
        peak = _status_kb("VmHWM")["VmHWM"]
        return max(0, peak - before) * 1024, "VmHWM after clear_refs - VmRSS before"
    before = _rss_bytes()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(1e-3)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        fn()
    finally:
        done.set()
        th.join()
    peak[0] = max(peak[0], _rss_bytes())
    return max(0, peak[0] - before), "statm sampled every 1 ms (lower bound)"


# ------------------------------------------------------------- contestants
@dataclass
class Contestant:
    """One timed implementation. ``prepare(x_bt, g_bt)`` -> (input, grad) in its layout (untimed);
    ``run(inp, grad)`` -> (forward ms, backward ms)."""

    name: str
    library: str
    config: str
    surrogate: str
    gradient: str
    is_peer: bool
    prepare: Callable
    run: Callable
    version: str = ""
    notes: list = field(default_factory=list)


def _import(name: str):
    """The peer's module, or None if it is not installed (other import failures are reported)."""
    try:
        return importlib.import_module(_PEER_MODULES[name])
    except ImportError:
        return None


def available_peers(with_sinabs: bool = False) -> tuple[list[str], dict]:
    """(installed peer names, {name: why not} for the rest)."""
    names = PEERS + (("sinabs",) if with_sinabs else ())
    found, missing = [], {}
    for name in names:
        try:
            mod = _import(name)
        except Exception as exc:  # noqa: BLE001 - a broken install is reported, not fatal
            missing[name] = f"import failed: {type(exc).__name__}: {exc}"
            continue
        if mod is None:
            missing[name] = "not installed"
        else:
            found.append(name)
    return found, missing


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001
        return "?"


def _torch_timer(torch, fn):
    """(forward ms, backward ms) of fn(x) then out.backward(g) on a fresh leaf copy of x."""

    def run(inp, grad):
        x = inp.detach().requires_grad_(True)
        t0 = time.perf_counter()
        out = fn(x)
        t1 = time.perf_counter()
        out.backward(grad)
        t2 = time.perf_counter()
        return 1e3 * (t1 - t0), 1e3 * (t2 - t1)

    return run


def _exp_spike(torch, scale: float = SG_SCALE, width: float = SG_WIDTH, theta: float = THETA):
    """snnTorch ``spike_grad``: H(x) forward (x = mem - threshold), ift_snn's exponential surrogate backward."""
    w = width * theta
    c = scale / w

    class ExpSpike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x >= 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * c * torch.exp(-x.abs() / w)

    return ExpSpike.apply


def _ift_layer(torch, method: str, reset_before_decay: bool = False, surrogate=None, alpha: float = ALPHA,
               train_alpha: bool = True, dtype=None):
    from ..integrations.torch import LIF
    from ..neurons.surrogates import exponential

    layer = LIF(alpha, THETA, method=method, train_alpha=train_alpha, reset_before_decay=reset_before_decay,
                surrogate=surrogate or exponential(SG_SCALE, SG_WIDTH))
    if dtype is not None:
        layer.to(dtype)
    return layer


def _snntorch_fn(torch, dtype, default: bool = False):
    """snnTorch's Leaky over the steps; ``default``: every argument but beta left at snnTorch's default."""
    import snntorch as snn

    if default:
        lif = snn.Leaky(beta=torch.tensor(ALPHA, dtype=dtype))
    else:
        lif = snn.Leaky(beta=torch.tensor(ALPHA, dtype=dtype), threshold=THETA, spike_grad=_exp_spike(torch),
                        reset_mechanism="subtract")

    def f(x):  # (T, B, N)
        mem = lif.init_leaky()
        out = []
        for xt in x.unbind(0):
            spk, mem = lif(xt, mem)
            out.append(spk)
        return torch.stack(out)

    return f


def _spikingjelly_fn(torch, dtype, default_surrogate: bool = False):
    """SpikingJelly's LIFNode; ``default_surrogate``: its own default (Sigmoid(alpha=4)), as its users run it."""
    from spikingjelly.activation_based import neuron, surrogate

    sg = {} if default_surrogate else {"surrogate_function": surrogate.PiecewiseExp(alpha=1.0 / SG_WIDTH)}
    node = neuron.LIFNode(tau=1.0 / (1.0 - ALPHA), decay_input=False, v_threshold=THETA, v_reset=None,
                          detach_reset=False, step_mode="m", **sg)

    def f(x):  # (T, B, N)
        node.reset()
        return node(x)

    return f


NORSE_GAIN = 1.0 / (1.0 - ALPHA)  # Norse integrates dt tau_mem_inv (i - v): input i = x / (1 - alpha)


def _norse_fn(torch, dtype, default: bool = False):
    """Norse's LIFBoxCell over the steps; ``default``: its default parameters and dt (decay 1 - 100 * 0.001 =
    0.9 as well, reset to 0)."""
    from norse.torch import LIFBoxCell, LIFBoxParameters
    from norse.torch.functional.reset import reset_subtract

    def t(v):
        return torch.tensor(v, dtype=dtype)

    if default:
        cell = LIFBoxCell()
    else:
        p = LIFBoxParameters(tau_mem_inv=t(1.0 - ALPHA), v_leak=t(0.0), v_th=t(THETA), v_reset=t(0.0),
                             method="super", alpha=t(100.0), reset_method=reset_subtract)
        cell = LIFBoxCell(p, dt=1.0)

    def f(x):  # (T, B, N), already multiplied by NORSE_GAIN
        state = None
        out = []
        for xt in x.unbind(0):
            z, state = cell(xt, state)
            out.append(z)
        return torch.stack(out)

    return f


def _sinabs_layer(torch, dtype):
    import sinabs.layers as sl
    from sinabs.activation import MembraneSubtract, SingleExponential, SingleSpike

    layer = sl.LIF(tau_mem=-1.0 / math.log(ALPHA), spike_threshold=torch.tensor(THETA), spike_fn=SingleSpike,
                   reset_fn=MembraneSubtract(), surrogate_grad_fn=SingleExponential(SG_WIDTH, SG_SCALE),
                   norm_input=False)

    def f(x):  # (B, T, N)
        layer.reset_states()
        return layer(x)

    f.alpha = float(layer.alpha_mem_calculated.detach())
    return f


SURROGATE_EXP = "exp(-2|u-1|) (= ift_snn exponential(0.5, 0.5))"


def _config_contestants(torch) -> list[Contestant]:
    """``--configs``: the exodus layer (trainable alpha) with every built-in surrogate by name (its default
    constants, the scale lowered to the largest stable one, as the constructors make it) and with the reset before
    the decay (the convention of sinabs, SpikingJelly and Norse)."""
    from ..neurons.surrogates import SURROGATES

    bt = lambda x, g: (x, g)  # noqa: E731
    out = [Contestant(
        f"ift_snn exodus, {name}", "ift_snn", f"integrations.torch.LIF(0.9, method='exodus', train_alpha=True, "
        f"surrogate={name!r}), reset after decay, (B, T, N)", f"{name} (its defaults, stable scale)",
        "exact (= BPTT)", False, bt, _torch_timer(torch, _ift_layer(torch, "exodus", surrogate=name)),
        version=_version("ift-snn")) for name in SURROGATES]
    out.append(Contestant(
        "ift_snn exodus, reset before decay", "ift_snn", "integrations.torch.LIF(0.9, method='exodus', "
        "train_alpha=True, reset_before_decay=True), (B, T, N)", SURROGATE_EXP, "exact (= BPTT)", False, bt,
        _torch_timer(torch, _ift_layer(torch, "exodus", reset_before_decay=True)), version=_version("ift-snn")))
    return out


def _contestants(torch, peers: list[str]) -> list[Contestant]:
    bt = lambda x, g: (x, g)  # noqa: E731
    tb = lambda x, g: (x.transpose(0, 1).contiguous(), g.transpose(0, 1).contiguous())  # noqa: E731
    f32 = torch.float32
    out = []
    for method, gradient in (("exodus", "exact (= BPTT)"), ("slayer", "reset detached")):
        layer = _ift_layer(torch, method)
        out.append(Contestant(
            f"ift_snn {method}", "ift_snn", f"integrations.torch.LIF(0.9, method={method!r}, train_alpha=True), "
            "reset after decay, (B, T, N)", SURROGATE_EXP, gradient, False, bt, _torch_timer(torch, layer),
            version=_version("ift-snn")))
    # the peers' own setting: a decay that is not trained (snnTorch's learn_beta=False, SpikingJelly's fixed tau),
    # where the layer's backward skips the parameter sums (ops.backward(..., parameters=False))
    out.append(Contestant(
        FIXED, "ift_snn", "integrations.torch.LIF(0.9, method='exodus'), alpha fixed as the peers', reset after "
        "decay, (B, T, N)", SURROGATE_EXP, "exact (= BPTT)", False, bt,
        _torch_timer(torch, _ift_layer(torch, "exodus", train_alpha=False)), version=_version("ift-snn")))
    if "snntorch" in peers:
        out.append(Contestant(
            "snnTorch", "snntorch", "snn.Leaky(beta=0.9, threshold=1, reset_mechanism='subtract') over "
            "x.unbind(0), reset after decay, (T, B, N)", SURROGATE_EXP + " as spike_grad",
            "reset detached (= slayer)", True, tb, _torch_timer(torch, _snntorch_fn(torch, f32)),
            version=_version("snntorch")))
        out.append(Contestant(
            "snnTorch, default", "snntorch (defaults)", "snn.Leaky(beta=0.9) with every other argument its default "
            "(threshold 1, reset by subtraction, its default surrogate) over x.unbind(0), (T, B, N)",
            "ATan (snnTorch's default spike_grad)", "reset detached (= slayer)", True, tb,
            _torch_timer(torch, _snntorch_fn(torch, f32, default=True)), version=_version("snntorch")))
    if "spikingjelly" in peers:
        out.append(Contestant(
            "SpikingJelly", "spikingjelly", "neuron.LIFNode(tau=10, decay_input=False, v_reset=None, "
            "detach_reset=False, step_mode='m'), reset before decay, (T, B, N), registered CPU op",
            "PiecewiseExp(alpha=2) = " + SURROGATE_EXP, "exact (= exodus)", True, tb,
            _torch_timer(torch, _spikingjelly_fn(torch, f32)), version=_version("spikingjelly")))
        # as its users run it: the default surrogate (no agreement row: no ift_snn surrogate is set to match it)
        out.append(Contestant(
            "SpikingJelly, default", "spikingjelly (default surrogate)", "neuron.LIFNode(tau=10, decay_input=False, "
            "v_reset=None, detach_reset=False, step_mode='m'), its default surrogate, reset before decay, (T, B, N), "
            "registered CPU op", "Sigmoid(alpha=4) (SpikingJelly's default)", "exact (= exodus)", True, tb,
            _torch_timer(torch, _spikingjelly_fn(torch, f32, default_surrogate=True)),
            version=_version("spikingjelly")))
    if "norse" in peers:
        out.append(Contestant(
            "Norse", "norse", "LIFBoxCell(tau_mem_inv=0.1, dt=1, reset_subtract) over (10 x).unbind(0), "
            "reset before decay, (T, B, N)", "SuperSpike 1/(1+|u-1|)^2 (no exponential in Norse)",
            "exact (= exodus)", True, _norse_prepare(tb),
            _torch_timer(torch, _norse_fn(torch, f32)), version=_version("norse")))
        out.append(Contestant(
            "Norse, default", "norse (defaults)", "LIFBoxCell() with its default parameters (tau_mem_inv 100, dt "
            "0.001: decay 0.9; reset to 0; SuperSpike alpha 100) over (10 x).unbind(0), (T, B, N)",
            "SuperSpike (Norse's default)", "exact (= exodus, reset to zero)", True, _norse_prepare(tb),
            _torch_timer(torch, _norse_fn(torch, f32, default=True)), version=_version("norse")))
    if "sinabs" in peers:
        out.append(Contestant(
            "sinabs", "sinabs", "layers.LIF(tau_mem=-1/ln 0.9, norm_input=False, SingleSpike, MembraneSubtract), "
            "reset before decay, (B, T, N)", "SingleExponential(0.5, 0.5) = " + SURROGATE_EXP,
            "exact (= exodus)", True, bt, _torch_timer(torch, _sinabs_layer(torch, f32)),
            version=_version("sinabs")))
    out.append(_kernels_contestant())
    return out


def _norse_prepare(tb):
    def prepare(x, g):
        xt, gt = tb(x, g)
        return xt * NORSE_GAIN, gt

    return prepare


def _kernels_contestant() -> Contestant:
    from .. import ops
    from ..neurons.models import lif
    from ..neurons.surrogates import exponential

    model = lif(ALPHA, THETA, surrogate=exponential(SG_SCALE, SG_WIDTH))

    def prepare(x, g):
        T = x.shape[1]
        return (np.ascontiguousarray(x.transpose(0, 1).reshape(T, -1).numpy()),
                np.ascontiguousarray(g.transpose(0, 1).reshape(T, -1).numpy()))

    def run(a, g):
        t0 = time.perf_counter()
        trace = ops.forward(model, a, copy=False)  # (as the layer: the input is not changed)
        t1 = time.perf_counter()
        ops.backward(model, trace, g, method="exodus", parameters=("alpha",))
        t2 = time.perf_counter()
        return 1e3 * (t1 - t0), 1e3 * (t2 - t1)

    return Contestant("ift_snn kernels", "ift_snn", "ift_snn.forward / backward(parameters=('alpha',)) on NumPy "
                      "(T, B*N), exodus: the scans the exodus layer runs", SURROGATE_EXP, "exact (= BPTT)", False,
                      prepare, run, version=_version("ift-snn"))


# --------------------------------------------------------------- agreement
def _rel(got, want) -> float:
    got, want = got.detach().double(), want.detach().double()
    scale = float(want.abs().max()) or 1.0
    return float((got - want).abs().max()) / scale


def agreement(peers: list[str], dtype: str = "f64", size=None, seed: int = 0) -> list[dict]:
    """Spikes and dL/dx of each installed peer against the matching ift_snn layer on one small problem
    (``size`` (batch, T, neurons), default :data:`AGREE_SIZE`)."""
    import torch

    size = tuple(size or AGREE_SIZE)

    from ..neurons.surrogates import fast_sigmoid

    tdt = torch.float64 if dtype == "f64" else torch.float32
    B, T, N = size
    gen = torch.Generator().manual_seed(seed)
    x = (0.3 + 0.5 * torch.randn(B, T, N, generator=gen, dtype=torch.float64)).to(tdt)
    g = torch.randn(B, T, N, generator=gen, dtype=torch.float64).to(tdt)

    def grad_of(fn, inp, gin):
        xi = inp.detach().clone().requires_grad_(True)
        out = fn(xi)
        out.backward(gin)
        return out.detach(), xi.grad

    def ift(method, reset_before_decay, surrogate=None, alpha=ALPHA):
        layer = _ift_layer(torch, method, reset_before_decay, surrogate, alpha, train_alpha=False)
        return grad_of(layer, x, g)

    def tm(t):
        return t.transpose(0, 1).contiguous()

    rows = []
    for name in peers:
        if name == "snntorch":
            ref = ift("slayer", False)
            s, gx = grad_of(_snntorch_fn(torch, tdt), tm(x), tm(g))
            s, gx, vs = tm(s), tm(gx), "ift_snn slayer (reset after decay)"
        elif name == "spikingjelly":
            ref = ift("exodus", True)
            s, gx = grad_of(_spikingjelly_fn(torch, tdt), tm(x), tm(g))
            s, gx, vs = tm(s), tm(gx), "ift_snn exodus (reset before decay)"
        elif name == "norse":
            ref = ift("exodus", True, fast_sigmoid(scale=1.0, slope=1.0))
            s, gx = grad_of(_norse_fn(torch, tdt), tm(x) * NORSE_GAIN, tm(g))
            s, gx = tm(s), tm(gx) * NORSE_GAIN  # dL/dx = dL/di * di/dx
            vs = "ift_snn exodus (reset before decay, fast_sigmoid(1, 1))"
        elif name == "sinabs":
            fn = _sinabs_layer(torch, tdt)
            ref = ift("exodus", True, alpha=fn.alpha)
            s, gx = grad_of(fn, x, g)
            vs = f"ift_snn exodus (reset before decay, alpha={fn.alpha:.9g} as sinabs computes it)"
        else:
            continue
        s_ref, g_ref = ref
        rows.append({"peer": name, "dtype": dtype, "versus": vs, "size": list(size),
                     "spikes_differ": int((s.to(s_ref.dtype) != s_ref).sum()), "spikes": int(s_ref.sum()),
                     "grad_rel_diff": _rel(gx, g_ref)})
    return rows


# ------------------------------------------------------------------- run
def _median(values):
    return statistics.median(values) if values else float("nan")


def _median_round(values) -> int:
    """The index of the median value (the lower middle one for an even count); 0 for none."""
    if not values:
        return 0
    order = sorted(range(len(values)), key=values.__getitem__)
    return order[(len(values) - 1) // 2]


def _write_json(path, result: dict) -> None:
    from ..files import write_atomically

    write_atomically(path, lambda fh: fh.write(json.dumps(result, indent=2, default=str).encode()))


class _Progress:
    """tqdm on stderr when installed, else one line per step."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, file=sys.stderr, unit="call", dynamic_ncols=True)
            except ImportError:
                pass

    def step(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text[:60])
            self.bar.update(1)

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_sizes(sizes) -> list[tuple[int, int, int]]:
    out = []
    for s in sizes:
        if len(s) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in s):
            raise ValueError(f"size {s!r}: expected (batch, T, neurons), positive ints")
        out.append(tuple(int(v) for v in s))
    if not out:
        raise ValueError("no sizes given")
    return out


def run_peers(sizes=DEFAULT_SIZES, rounds: int = 5, *, with_sinabs: bool = False, json_path=None,
              threads: int = 2, seed: int = 0, progress: bool = True, agree: bool = True,
              configs: bool = False) -> dict:
    """Run the peer benchmark; returns (and, with ``json_path``, rewrites after every step) the results.
    ``configs``: also the exodus layer with every built-in surrogate and with the reset before the decay."""
    sizes = check_sizes(sizes)
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds={rounds!r}: expected a positive int")
    try:
        import torch
    except ImportError:
        raise ImportError(f"the peer benchmark needs PyTorch and a peer library: {INSTALL_HINT}") from None
    peers, missing = available_peers(with_sinabs)
    if not peers:
        raise ImportError(f"no peer library is installed ({', '.join(missing)}): {INSTALL_HINT}")

    from ..backends import compiled

    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads={threads!r}: expected a positive int")
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    ift_threads = compiled.set_threads(int(threads))  # (both restored at the end)
    try:
        return _run_peers(torch, sizes, rounds, peers, missing, json_path, seed, progress, agree, configs)
    finally:
        compiled.set_threads(ift_threads)
        torch.set_num_threads(torch_threads)


def _ift_threads() -> int:
    from ..backends import compiled

    return compiled.threads()


def _run_peers(torch, sizes, rounds, peers, missing, json_path, seed, progress, agree, configs=False) -> dict:
    from .bench import _copy_bandwidth

    contestants = _contestants(torch, peers) + (_config_contestants(torch) if configs else [])
    # a copy larger than the caches: 256 MiB, less for small runs (tests), at least 32 MiB
    bandwidth = _copy_bandwidth(np, int(min(256 * 2**20, max(32 * 2**20, 9 * 4 * max(math.prod(s) for s in sizes)))), 5)
    result = {
        "device": f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "config": {"torch": torch.__version__, "threads": torch.get_num_threads(), "ift_snn_threads": _ift_threads(),
                   "dtype": "float32",
                   "alpha": ALPHA, "theta": THETA, "rounds": rounds, "seed": seed, "sizes": [list(s) for s in sizes],
                   "copy_bandwidth_GBps": bandwidth / 1e9, "memory_method": None,
                   "timing": "the round whose forward + backward is the median (its fwd and bwd shown; the medians of each "
                             "in forward_median_ms, backward_median_ms); order shuffled per round"},
        "contestants": [{"name": c.name, "library": c.library, "version": c.version, "config": c.config,
                         "surrogate": c.surrogate, "gradient": c.gradient, "peer": c.is_peer} for c in contestants],
        "missing": missing,
        "agreement": [],
        "rows": [],
        "summary": [],
        "notes": [f"{k}: {v}" for k, v in missing.items()],
    }
    if json_path:
        _write_json(json_path, result)
    prog = _Progress(len(sizes) * (rounds + 3) * len(contestants), progress)
    try:
        if agree:
            for dt in ("f64", "f32"):
                result["agreement"] += agreement(peers, dt)
            for a in result["agreement"]:
                prog.line(f"agreement {a['dtype']} {a['peer']:<13} vs {a['versus']}: spikes differ "
                          f"{a['spikes_differ']}/{a['spikes']}, dL/dx max rel diff {a['grad_rel_diff']:.2e}")
            if json_path:
                _write_json(json_path, result)
        rng = random.Random(seed)
        for B, T, N in sizes:
            _one_size(torch, contestants, (B, T, N), rounds, rng, seed, bandwidth, result, prog)
            if json_path:
                _write_json(json_path, result)
    finally:
        prog.close()
    return result


def measure(contestants, prepared: dict, rounds: int, rng, label: str, result: dict, prog, after_warm_up=None):
    """Warm-up, memory and timed rounds of ``contestants`` on their ``prepared`` inputs (module docstring):
    ({name: [(forward ms, backward ms) per round]}, {name: peak bytes}); ``after_warm_up(c)`` runs untimed after
    each warm-up call."""
    times = {c.name: [] for c in contestants}
    peak = {}
    for c in contestants:  # warm-up: compilation, first touch
        prog.step(f"{label} warm-up {c.name}")
        c.run(*prepared[c.name])
        if after_warm_up is not None:
            after_warm_up(c)
    for c in contestants:
        prog.step(f"{label} memory {c.name}")
        nbytes, method = peak_rss_delta(lambda c=c: c.run(*prepared[c.name]))
        peak[c.name] = nbytes
        result["config"]["memory_method"] = method
    for c in contestants:  # warm again: the memory call let go of everything it could (ift_snn's workspace too)
        prog.step(f"{label} warm-up {c.name}")
        c.run(*prepared[c.name])
    probe = result.setdefault("probe_ms", {}).setdefault(label, [])
    orders = result.setdefault("order", {}).setdefault(label, [])
    usage = result.setdefault("usage", {}).setdefault(label, {})  # per contestant, per round: _usage_since
    for r in range(rounds):
        order = list(contestants)
        rng.shuffle(order)
        orders.append([c.name for c in order])
        probe.append(machine_probe())
        for c in order:
            prog.step(f"{label} round {r + 1}/{rounds} {c.name}")
            before = _usage()
            times[c.name].append(c.run(*prepared[c.name]))
            usage.setdefault(c.name, []).append(_usage_since(before))
    return times, peak


def _usage() -> tuple:
    """(this process's CPU seconds, its involuntary context switches, its minor page faults, CPU clock ticks the
    whole machine and this process have been busy): what :func:`_usage_since` subtracts. The ticks are None off
    Linux."""
    try:
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu, preempted, faults = ru.ru_utime + ru.ru_stime, ru.ru_nivcsw, ru.ru_minflt
    except ImportError:  # (not on Windows)
        cpu, preempted, faults = time.process_time(), 0, 0
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = (sum(v) - v[3] - v[4], int(fields[11]) + int(fields[12]))  # busy = all but idle and iowait
    except (OSError, ValueError, IndexError):
        ticks = None
    return cpu, preempted, faults, ticks


def _usage_since(before: tuple) -> dict:
    """What one timed call cost besides its wall time: ``cpu_ms`` of this process (every thread; the same work
    taking more CPU time means slower cores), ``preempted`` (involuntary context switches of its threads),
    ``faults`` (minor page faults: fresh memory) and ``others_ms`` (CPU time the rest of the machine used
    meanwhile, to the clock tick: 10 ms)."""
    now = _usage()
    others = None
    if before[3] is not None and now[3] is not None:
        tick_ms = 1e3 / os.sysconf("SC_CLK_TCK")
        others = ((now[3][0] - before[3][0]) - (now[3][1] - before[3][1])) * tick_ms
    return {"cpu_ms": 1e3 * (now[0] - before[0]), "preempted": now[1] - before[1], "faults": now[2] - before[2],
            "others_ms": others}


#: The machine probe's work: np.exp over this many float32 values held in cache, :data:`PROBE_REPEATS` times.
PROBE_SIZE, PROBE_REPEATS = 1 << 16, 100
_probe_buffers: list = []


def machine_probe() -> float:
    """Milliseconds of a fixed piece of work on one core that touches no new memory (np.exp over 64k float32
    values in cache, 100 times: about 3 ms): how fast this core is right now. Timed at the start of every
    round, it tells a slow round of the machine (a slowed core: another process, or the host of a virtual
    machine, which these report as no steal time) from a slow round of a contestant."""
    if not _probe_buffers:
        _probe_buffers[:] = [np.linspace(-1, 1, PROBE_SIZE, dtype=np.float32), np.empty(PROBE_SIZE, np.float32)]
    x, out = _probe_buffers
    np.exp(x, out=out)
    t0 = time.perf_counter()
    for _ in range(PROBE_REPEATS):
        np.exp(x, out=out)
    return 1e3 * (time.perf_counter() - t0)


def timing_row(size, c: Contestant, times: list, peak: int) -> dict:
    """One contestant's row: the round whose forward + backward is the median gives the forward and backward
    columns, so that fwd + bwd is fwd+bwd (medians of each, in bimodal rounds, added to 525 against a sum of
    937); the medians of each, the range of the sums and every round are kept too."""
    fw = [t[0] for t in times]
    bw = [t[1] for t in times]
    sums = [f + b for f, b in zip(fw, bw)]
    mid = _median_round(sums)
    nan = float("nan")
    median = _median(sums)
    return {"size": list(size), "contestant": c.name, "library": c.library, "peer": c.is_peer,
            "forward_ms": fw[mid] if fw else nan, "backward_ms": bw[mid] if bw else nan,
            "fwd_bwd_ms": sums[mid] if fw else nan,
            "forward_median_ms": _median(fw), "backward_median_ms": _median(bw),
            "fwd_bwd_min_ms": min(sums) if sums else nan, "fwd_bwd_max_ms": max(sums) if sums else nan,
            "fwd_bwd_mean_ms": statistics.fmean(sums) if sums else nan,
            "slowest_over_median": max(sums) / median if sums else nan,
            "peak_mb": peak / 1e6, "surrogate": c.surrogate, "gradient": c.gradient, "times_ms": times}


def _one_size(torch, contestants, size, rounds, rng, seed, bandwidth, result, prog) -> None:
    B, T, N = size
    gen = torch.Generator().manual_seed(seed)
    x = (0.3 + 0.5 * torch.randn(B, T, N, generator=gen)).contiguous()
    g = torch.randn(B, T, N, generator=gen).contiguous()
    label = f"{B}x{T}x{N}"
    prepared = {c.name: c.prepare(x, g) for c in contestants}
    times, peak = measure(contestants, prepared, rounds, rng, label, result, prog)
    rows = [timing_row(size, c, times[c.name], peak[c.name]) for c in contestants]
    by = {r["contestant"]: r for r in rows}
    peers = [r for r in rows if r["peer"]]
    fastest = min(peers, key=lambda r: r["fwd_bwd_ms"])
    moved = FLOOR_ARRAYS * B * T * N * 4
    floor_ms = 1e3 * moved / bandwidth
    kern = by["ift_snn kernels"]
    agree = {(a["peer"], a["dtype"]): a["grad_rel_diff"] for a in result["agreement"]}
    for r in rows:
        r["agreement_f64"] = agree.get((r["library"], "f64"))
        r["agreement_f32"] = agree.get((r["library"], "f32"))
        r["over_fastest_peer"] = r["fwd_bwd_ms"] / fastest["fwd_bwd_ms"]
    summary = {
        "size": [B, T, N], "fastest_peer": fastest["contestant"], "fastest_peer_fwd_bwd_ms": fastest["fwd_bwd_ms"],
        "exodus_over_fastest_peer": by["ift_snn exodus"]["fwd_bwd_ms"] / fastest["fwd_bwd_ms"],
        "slayer_over_fastest_peer": by["ift_snn slayer"]["fwd_bwd_ms"] / fastest["fwd_bwd_ms"],
        "exodus_over_slayer_backward": by["ift_snn exodus"]["backward_ms"] / by["ift_snn slayer"]["backward_ms"],
        "exodus_fixed_alpha_over_fastest_peer": by[FIXED]["fwd_bwd_ms"] / fastest["fwd_bwd_ms"],
        "memory_floor_ms": floor_ms, "bytes_moved_MB": moved / 1e6,
        "kernels_fwd_bwd_ms": kern["fwd_bwd_ms"], "kernels_over_memory_floor": kern["fwd_bwd_ms"] / floor_ms,
        "layer_exodus_over_kernels": by["ift_snn exodus"]["fwd_bwd_ms"] / kern["fwd_bwd_ms"],
        "exodus_mean_over_fastest_peer_mean": by["ift_snn exodus"]["fwd_bwd_mean_ms"] / fastest["fwd_bwd_mean_ms"],
        **_probe_summary(result.get("probe_ms", {}).get(label, []), by["ift_snn exodus"]["times_ms"]),
        **_slowest_round(by["ift_snn exodus"]["times_ms"], result.get("usage", {}).get(label, {}).get("ift_snn exodus")),
    }
    result["rows"] += rows
    result["summary"].append(summary)
    prog.line(f"{label}: ift_snn exodus {by['ift_snn exodus']['fwd_bwd_ms']:.1f} ms fwd+bwd, fastest peer "
              f"{fastest['contestant']} {fastest['fwd_bwd_ms']:.1f} ms, ratio {summary['exodus_over_fastest_peer']:.3f}")


#: Pauses (s) between freeing an array and filling a fresh one, and its size (MB), in :func:`fresh_memory`.
FRESH_PAUSES = (0.0, 0.5, 1.0, 2.0, 3.0)
FRESH_MB = 512


def fresh_memory(mb: int | None = None, pauses=None, repeats: int = 3) -> dict:
    """The slow mode's measurement: ms to fill a fresh ``mb`` MB float32 array (``np.ones``) right after the
    previous one was freed and after each pause in ``pauses`` (s), and to refill one buffer kept throughout
    (defaults :data:`FRESH_MB`, :data:`FRESH_PAUSES`).

    On a virtual machine whose kernel reports free memory to the host (virtio-balloon free page reporting:
    "Free page reporting enabled" in the kernel log), memory freed for about a second is handed back and the next
    array there faults every page in from the host again: the fill takes several times longer after a pause.
    {"pause_s": [...], "fresh_ms": [[ms per repeat] per pause], "reused_ms": [...], "page_reporting": bool}."""
    mb = FRESH_MB if mb is None else mb
    pauses = FRESH_PAUSES if pauses is None else pauses
    n = (int(mb) << 20) // 4
    kept = np.ones(n, np.float32)

    def fill(pause: float) -> float:
        time.sleep(pause)
        t0 = time.perf_counter()
        a = np.ones(n, np.float32)
        dt = time.perf_counter() - t0
        del a
        return 1e3 * dt

    fill(0.0)
    fresh = [[fill(p) for _ in range(repeats)] for p in pauses]
    reused = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        kept.fill(1.0)
        reused.append(1e3 * (time.perf_counter() - t0))
    return {"mb": int(mb), "pause_s": list(pauses), "fresh_ms": fresh, "reused_ms": reused,
            "page_reporting": _page_reporting()}


def _page_reporting() -> bool | None:
    """Whether this Linux kernel reports free pages to a hypervisor (None: cannot tell)."""
    try:
        return Path("/sys/module/page_reporting").exists() or "page_reporting" in Path("/proc/cmdline").read_text()
    except OSError:
        return None


def format_fresh_memory(r: dict) -> str:
    lines = [f"fill a fresh {r['mb']} MB float32 array (np.ones), ms, {len(r['reused_ms'])} repeats each; free page "
             f"reporting to a hypervisor: {'yes' if r['page_reporting'] else 'no' if r['page_reporting'] is False else '?'}"]
    for p, ms in zip(r["pause_s"], r["fresh_ms"]):
        lines.append(f"   {p:4.1f} s after the previous array was freed: " + ", ".join(f"{v:7.1f}" for v in ms))
    lines.append("   the same buffer filled again (no fresh page):  " + ", ".join(f"{v:7.1f}" for v in r["reused_ms"]))
    return "\n".join(lines)


def _probe_summary(probe: list, times: list) -> dict:
    """The machine probe of one size's rounds (:func:`machine_probe`): its median and slowest/median, and the
    correlation of its per-round times with the exact layer's fwd+bwd (near 1: the layer's slow rounds are the
    machine's)."""
    if len(probe) < 2:
        return {}
    sums = [f + b for f, b in times]
    med = _median(probe)
    flat = len(set(probe)) < 2 or len(set(sums)) < 2
    return {"probe_median_ms": med, "probe_slowest_over_median": max(probe) / med,
            "probe_exodus_correlation": float("nan") if flat else float(np.corrcoef(probe, sums)[0, 1])}


def _slowest_round(times: list, usage: list | None) -> dict:
    """What the exact layer's slowest round cost besides wall time, beside its median round (:func:`_usage_since`):
    its CPU time (more for the same work: slower cores), its threads' involuntary switches and the CPU time the
    rest of the machine took meanwhile (another process, or the kernel's own work, on our cores)."""
    if not usage or len(usage) != len(times) or len(times) < 2:
        return {}
    sums = [f + b for f, b in times]
    slow, mid = max(range(len(sums)), key=sums.__getitem__), _median_round(sums)
    return {"exodus_slowest_round": {"ms": sums[slow], **usage[slow]},
            "exodus_median_round": {"ms": sums[mid], **usage[mid]}}


def _fmt(v, spec):
    return format("-", ">9") if v is None else format(v, spec)


def format_peers_table(result: dict) -> str:
    cfg = result["config"]
    lines = [f"== one LIF layer (alpha {cfg['alpha']}, theta {cfg['theta']}), {cfg['dtype']}, {result['device']}, "
             f"torch {cfg['torch']} on {cfg['threads']} threads, ift_snn's kernels on {cfg.get('ift_snn_threads', '?')}; "
             f"median of {cfg['rounds']} interleaved rounds",
             f"   copy bandwidth {cfg['copy_bandwidth_GBps']:.2f} GB/s; peak memory: {cfg['memory_method']}"]
    if result["agreement"]:
        lines.append(f"   agreement (B, T, N = {tuple(result['agreement'][0]['size'])}): spikes differing, "
                     "max |dL/dx - ift_snn| / max |ift_snn|")
        for a in result["agreement"]:
            lines.append(f"     {a['dtype']} {a['peer']:<13} vs {a['versus']:<58} spikes differ "
                         f"{a['spikes_differ']}/{a['spikes']:<6} dL/dx {a['grad_rel_diff']:.1e}")
    head = (f"   {'contestant':<27} {'fwd ms':>10} {'bwd ms':>10} {'fwd+bwd ms':>11} {'x fastest':>9} "
            f"{'mean ms':>9} {'max/med':>7} {'peak MB':>9} {'agree f64':>9} {'agree f32':>9}  {'gradient':<20} "
            "surrogate")
    for s in result["summary"]:
        B, T, N = s["size"]
        lines.append(f"-- batch {B}, T {T}, neurons {N}")
        lines.append(head)
        for r in result["rows"]:
            if r["size"] != s["size"]:
                continue
            lines.append(f"   {r['contestant']:<27} {r['forward_ms']:>10.1f} {r['backward_ms']:>10.1f} "
                         f"{r['fwd_bwd_ms']:>11.1f} {r['over_fastest_peer']:>9.3f} "
                         f"{r.get('fwd_bwd_mean_ms', float('nan')):>9.1f} {r.get('slowest_over_median', float('nan')):>7.2f} "
                         f"{r['peak_mb']:>9.0f} "
                         f"{_fmt(r['agreement_f64'], '>9.1e')} {_fmt(r['agreement_f32'], '>9.1e')}  "
                         f"{r['gradient']:<20} {r['surrogate']}")
        lines.append(f"   ift_snn exodus fwd+bwd / fastest peer ({s['fastest_peer']}): "
                     f"{s['exodus_over_fastest_peer']:.3f}; slayer {s['slayer_over_fastest_peer']:.3f}; "
                     f"exodus / slayer backward: {s['exodus_over_slayer_backward']:.2f}")
        if "exodus_fixed_alpha_over_fastest_peer" in s:
            lines.append(f"   ift_snn exodus with alpha fixed, as the peers run it: "
                         f"{s['exodus_fixed_alpha_over_fastest_peer']:.3f} of the fastest peer")
        if "exodus_slowest_round" in s:
            slow, mid = s["exodus_slowest_round"], s["exodus_median_round"]
            others = lambda r: "?" if r["others_ms"] is None else f"{r['others_ms']:.0f}"  # noqa: E731
            lines.append(f"   exodus' slowest round {slow['ms']:.1f} ms: CPU time {slow['cpu_ms']:.0f} ms, "
                         f"{slow['preempted']} involuntary switches, {slow['faults']} page faults, others' CPU "
                         f"{others(slow)} ms; its median round {mid['ms']:.1f} ms: {mid['cpu_ms']:.0f} ms, "
                         f"{mid['preempted']}, {mid['faults']}, {others(mid)} ms")
        if "probe_median_ms" in s:
            lines.append(f"   machine probe (fixed work on one core, each round): median {s['probe_median_ms']:.2f} ms, "
                         f"slowest/median {s['probe_slowest_over_median']:.2f}, correlation with exodus' rounds "
                         f"{s['probe_exodus_correlation']:.2f}; exodus mean / fastest peer's mean "
                         f"{s['exodus_mean_over_fastest_peer_mean']:.3f}")
        lines.append(f"   memory floor {s['memory_floor_ms']:.1f} ms ({s['bytes_moved_MB']:.0f} MB); kernels fwd+bwd "
                     f"{s['kernels_fwd_bwd_ms']:.1f} ms = {s['kernels_over_memory_floor']:.2f}x floor; "
                     f"layer exodus / kernels {s['layer_exodus_over_kernels']:.2f}")
    for c in result["contestants"]:
        lines.append(f"   {c['name']:<27} {c['library']} {c['version']}: {c['config']}")
    lines += [f"   note: {n}" for n in result["notes"]]
    return "\n".join(lines)
