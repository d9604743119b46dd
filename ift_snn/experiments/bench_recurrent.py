"""One RECURRENT spiking LIF layer against the libraries users run, measured in one process.

The layer: N neurons whose spikes feed back into their own input one step later,

    a[n] = W x[n] + V s[n-1],   W, V (N x N), no bias,   s[-1] = 0,

the input x (batch, time, N) ~ N(0.3, 0.5^2), the incoming gradient g ~ N(0, 1), W and V drawn once per size
as ``nn.Linear``'s weight, U(-1/sqrt(N), 1/sqrt(N)), V with a zero diagonal (Norse's default, autapses=False,
forbids self-connections), and copied into every contestant, so that all of them hold the SAME weights (Norse
holds them times :data:`NORSE_GAIN`, below). Contestants (float32, CPU, ``torch.set_num_threads(2)``), each in
its own native layout (prepared outside the timed region), every W and V trainable (the backward computes
dL/dx, dL/dW and dL/dV):

==============  ==================================================================  ======================
contestant      configured as                                                       gradient
==============  ==================================================================  ======================
ift_snn exodus  ``integrations.torch_recurrent.RLIF(0.9, N, in_features=N,           exact (= BPTT)
                method="exodus", surrogate=exponential(0.5, 0.5))``, (B, T, N):
                W one GEMM over the sequence, then one recurrent scan
ift_snn slayer  the same with ``method="slayer"``                                   reset detached
snnTorch        ``nn.Linear(N, N, bias=False)`` on the whole (T, B, N) input, then   reset detached
                ``snn.RLeaky(beta=0.9, linear_features=N, threshold=1,              (= ift_snn slayer)
                reset_mechanism="subtract", spike_grad=<ift_snn's exponential>)``
                looped over time (spk, mem carried), ``recurrent.weight`` = V,
                ``recurrent.bias`` = 0
SpikingJelly    ``layer.LinearRecurrentContainer(neuron.LIFNode(tau=10,             exact (= exodus)
                decay_input=False, v_reset=None, detach_reset=False,
                surrogate_function=PiecewiseExp(alpha=2)), N, N, bias=False)`` in
                its default single-step mode (the child must be single-step),
                looped over time, ``rc.weight`` = [W | V]
Norse           ``LIFRecurrent(N, N, LIFParameters(), dt=0.001)``: Norse's defaults  reset detached
                (tau_syn_inv=200, tau_mem_inv=100, v_th=1, v_reset=0,               (= ift_snn slayer of
                method="super", autapses=False), (T, B, N), input_weights = 10 W,    its dynamics)
                recurrent_weights = 10 V (W applied inside, per step)
==============  ==================================================================  ======================

Dynamics, read from the installed sources.

- ift_snn ``lif`` (reset after decay): u[n] = alpha u[n-1] + a[n] - theta s[n-1], s = H(u - theta), alpha 0.9,
  theta 1. snnTorch's ``RLeaky`` is exactly this: U = beta U + x + V(S[t-1]) - R threshold, where its reset
  R = H(U[t-1] - threshold) is ``.detach()``-ed, so its gradient is the reset-detached one (ift_snn slayer),
  the recurrent path V S[t-1] kept.
- SpikingJelly's container feeds ``rc(cat(x[t], y[t-1]))`` = W x[t] + V s[t-1] to the LIF node, which charges
  v = v - v / tau + a (alpha = 1 - 1/tau = 0.9), fires, then resets in the same step by v -= s theta with the
  spike not detached: u[n] = alpha (u[n-1] - theta s[n-1]) + a[n], ift_snn ``lif(reset_before_decay=True)``
  with the exact gradient. Surrogate alpha/2 exp(-alpha |x|) = exp(-2 |u - 1|) = ift_snn exponential(0.5, 0.5).
- Norse's ``lif_step`` (``norse/torch/functional/lif.py``), one Euler step of dt: j = i + W_n x[n] + V_n z[n-1],
  v' = v + dt tau_mem_inv (v_leak - v + j), i = (1 - dt tau_syn_inv) j, z = H(v' - v_th) (strict >),
  v = (1 - z.detach()) v' + z.detach() v_reset. With alpha_mem = 1 - dt tau_mem_inv = 0.9 and
  alpha_syn = 1 - dt tau_syn_inv = 0.8 this is current-based with reset to ZERO:
  j[n] = alpha_syn j[n-1] + a[n], u[n] = alpha_mem (1 - s[n-1]) u[n-1] + (1 - alpha_mem) j[n],
  i.e. ift_snn ``cuba_lif(0.9, 0.8, reset="zero")`` on (1 - alpha_mem) a: with Norse's weights
  10 W and 10 V (:data:`NORSE_GAIN` = 1/(1 - 0.9), as in :mod:`.bench_peers`) the ift_snn layer holds W and V.
  The reset's spike is detached, the recurrent one is not: its gradient is ift_snn's ``"slayer"`` of that model
  (the (1 - s) factor kept, the reset's surrogate path dropped), NOT the exact one. Its ``"super"`` surrogate's
  backward is 1/(1 + |u - 1|)^2 whatever its alpha (ift_snn ``fast_sigmoid(scale=1, slope=1)``). Norse's
  autapse hook zeroes the diagonal of dL/dV (V's diagonal is not a parameter there): its dL/dV is compared
  off the diagonal.

The timings run each library's own dynamics above (ift_snn: lif, reset after decay; Norse: its current-based
default, which also differs in the surrogate, so its row compares each library's own layer, not one model);
the agreement checks run, for each peer, the ift_snn layer of the same dynamics and gradient.

A reference row, not a contestant: "input layer alone", ``torch.nn.Linear(N, N, bias=False)`` holding W on the
same input and gradient, the part of every contestant that no spiking kernel speeds up.

Measurements (as :mod:`.bench_peers`): per size one warm-up call per contestant, one memory call, then ``rounds``
rounds, each running every contestant once in an order shuffled per round (seeded). Forward = the call building
the autograd graph (W x included), backward = ``out.backward(g)`` (dL/dx, dL/dW, dL/dV); fwd+bwd is their sum in
the same round, and the table shows the round whose sum is the median over rounds (its forward and backward; the
medians of each and every round's times are in the JSON). Peak memory: :func:`.bench_peers.peak_rss_delta` of
the memory call (peak resident size during the call above the resident size before it). ``spikes``: the
fraction of (sample, step, neuron) that fired (one untimed forward; ift_snn's forward sums V over the spikes
that fired, O(spikes x N) per step, so its cost follows it). Ratios: ift_snn exodus
fwd+bwd over the fastest peer's (target <= 1/3), exodus backward over slayer backward (target <= 1.2), ift_snn
exodus peak memory over the leanest peer's (target <= 1).

Agreement (:func:`recurrent_agreement`, float64, B, T, N = 4, 100, 16): spikes that differ, and
max |d_peer - d_ift| / max |d_ift| of dL/dx, dL/dW and dL/dV against the matching ift_snn layer (slayer for
snnTorch and Norse, exodus for SpikingJelly).
"""

from __future__ import annotations

import math
import os
import platform
import random
import sys
import warnings

import numpy as np

from .bench_peers import (
    INSTALL_HINT,
    SG_SCALE,
    SG_WIDTH,
    Contestant,
    _exp_spike,
    _Progress,
    _rel,
    _torch_timer,
    _version,
    _write_json,
    available_peers,
    check_sizes,
    measure,
    timing_row,
)

__all__ = ["DEFAULT_SIZES", "AGREE_SIZE", "NORSE_GAIN", "run_recurrent_peers", "recurrent_agreement",
           "format_recurrent_table"]

#: (batch, T, neurons) of the default run.
DEFAULT_SIZES = ((64, 250, 256), (32, 1000, 512))
AGREE_SIZE = (4, 100, 16)
#: The row of the input layer alone (nn.Linear with W): a reference, not a contestant.
INPUT_LAYER = "input layer alone"
ALPHA, THETA = 0.9, 1.0
#: Norse's defaults: dt 1e-3, tau_mem_inv 100, tau_syn_inv 200 -> alpha_mem 0.9, alpha_syn 0.8.
NORSE_DT, NORSE_TAU_MEM_INV, NORSE_TAU_SYN_INV = 1e-3, 100.0, 200.0
NORSE_ALPHA_MEM = 1.0 - NORSE_DT * NORSE_TAU_MEM_INV
NORSE_ALPHA_SYN = 1.0 - NORSE_DT * NORSE_TAU_SYN_INV
#: Norse integrates dt tau_mem_inv (j - v): its weights are 1 / (1 - alpha_mem) times the others'.
NORSE_GAIN = 1.0 / (1.0 - ALPHA)
#: Targets of the ratios.
TARGET_FWD_BWD, TARGET_BACKWARD, TARGET_MEMORY = 1.0 / 3.0, 1.2, 1.0
SURROGATE_EXP = "exp(-2|u-1|) (= ift_snn exponential(0.5, 0.5))"
SURROGATE_SUPER = "SuperSpike 1/(1+|u-1|)^2 (Norse's default 'super')"


# ----------------------------------------------------------------- weights
def _weights(torch, N: int, seed: int, dtype):
    """(W, V): U(-1/sqrt(N), 1/sqrt(N)) (nn.Linear's initialisation), V's diagonal zero (Norse's autapses=False)."""
    gen = torch.Generator().manual_seed(seed + 1)
    bound = 1.0 / math.sqrt(N)
    W = torch.empty(N, N, dtype=torch.float64).uniform_(-bound, bound, generator=gen)
    V = torch.empty(N, N, dtype=torch.float64).uniform_(-bound, bound, generator=gen)
    V.fill_diagonal_(0.0)
    return W.to(dtype), V.to(dtype)


# ------------------------------------------------------------------- layers
# Each builder returns (fn, params): fn(x) -> spikes in the contestant's layout, params {"W": .., "V": ..} the
# tensors whose .grad is dL/dW and dL/dV (Norse's in its units, SpikingJelly's the one [W | V] matrix).
def _ift_layer(torch, W, V, method: str, model=None):
    from ..integrations.torch_recurrent import RLIF, RecurrentSpikingLayer
    from ..neurons.surrogates import exponential

    N = W.shape[0]
    if model is None:
        layer = RLIF(ALPHA, N, in_features=N, theta=THETA, method=method,
                     surrogate=exponential(SG_SCALE, SG_WIDTH), dtype=W.dtype)
    else:
        layer = RecurrentSpikingLayer(model, N, in_features=N, method=method, dtype=W.dtype)
    with torch.no_grad():
        layer.fc.weight.copy_(W)
        layer.V.copy_(V)
    return layer, {"W": layer.fc.weight, "V": layer.V}


def _snntorch_fn(torch, W, V):
    import snntorch as snn
    from torch import nn

    N, dtype = W.shape[0], W.dtype
    fc = nn.Linear(N, N, bias=False, dtype=dtype)
    # beta a tensor of the dtype: a float becomes a float32 buffer (0.8999999762 in float64)
    rl = snn.RLeaky(beta=torch.tensor(ALPHA, dtype=dtype), linear_features=N, threshold=THETA,
                    spike_grad=_exp_spike(torch), reset_mechanism="subtract").to(dtype)
    with torch.no_grad():
        fc.weight.copy_(W)
        rl.recurrent.weight.copy_(V)
        rl.recurrent.bias.zero_()

    def f(x):  # (T, B, N)
        cur = fc(x)
        spk, mem = rl.init_rleaky()
        out = []
        for ct in cur.unbind(0):
            spk, mem = rl(ct, spk, mem)
            out.append(spk)
        return torch.stack(out)

    return f, {"W": fc.weight, "V": rl.recurrent.weight}


def _spikingjelly_fn(torch, W, V):
    from spikingjelly.activation_based import functional, neuron, surrogate
    from spikingjelly.activation_based.layer import LinearRecurrentContainer

    N, dtype = W.shape[0], W.dtype
    node = neuron.LIFNode(tau=1.0 / (1.0 - ALPHA), decay_input=False, v_threshold=THETA, v_reset=None,
                          detach_reset=False, surrogate_function=surrogate.PiecewiseExp(alpha=1.0 / SG_WIDTH))
    net = LinearRecurrentContainer(node, N, N, bias=False).to(dtype)
    with torch.no_grad():
        net.rc.weight.copy_(torch.cat([W, V], dim=1))  # rc(cat(x[t], y[t-1])) = W x[t] + V y[t-1]

    def f(x):  # (T, B, N)
        functional.reset_net(net)
        return torch.stack([net(xt) for xt in x.unbind(0)])

    return f, {"WV": net.rc.weight}


def _norse_fn(torch, W, V, exact_params: bool = False):
    from norse.torch import LIFParameters, LIFRecurrent
    from torch import nn

    N, dtype = W.shape[0], W.dtype
    if exact_params:  # the defaults' values as tensors of the dtype (Norse's are float32 0-d tensors)
        t = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
        p = LIFParameters(tau_syn_inv=t(NORSE_TAU_SYN_INV), tau_mem_inv=t(NORSE_TAU_MEM_INV), v_leak=t(0.0),
                          v_th=t(THETA), v_reset=t(0.0), method="super", alpha=t(100.0))
    else:
        p = LIFParameters()
    Wn = nn.Parameter((NORSE_GAIN * W).clone())
    Vn = nn.Parameter((NORSE_GAIN * V).clone())
    layer = LIFRecurrent(N, N, p=p, input_weights=Wn, recurrent_weights=Vn, dt=NORSE_DT)

    def f(x):  # (T, B, N)
        z, _ = layer(x)
        return z

    return f, {"W": Wn, "V": Vn}


# -------------------------------------------------------------- contestants
def _keep(fns: dict, name: str, fn):
    fns[name] = fn
    return fn


def _contestants(torch, peers: list[str], W, V) -> tuple[list[Contestant], dict]:
    """(contestants, {name: fn(x) -> spikes in its layout}) holding W and V."""
    bt = lambda x, g: (x, g)  # noqa: E731
    tb = lambda x, g: (x.transpose(0, 1).contiguous(), g.transpose(0, 1).contiguous())  # noqa: E731
    out, fns = [], {}
    for method, gradient in (("exodus", "exact (= BPTT)"), ("slayer", "reset detached")):
        layer, _ = _ift_layer(torch, W, V, method)
        fns[f"ift_snn {method}"] = layer
        out.append(Contestant(
            f"ift_snn {method}", "ift_snn", f"integrations.torch_recurrent.RLIF(0.9, N, in_features=N, "
            f"method={method!r}, surrogate=exponential(0.5, 0.5)): lif reset after decay, W one GEMM, one "
            "recurrent scan, (B, T, N)", SURROGATE_EXP, gradient, False, bt, _torch_timer(torch, layer),
            version=_version("ift-snn")))
    # not a contestant: the input layer W x alone, which every contestant runs (the part no spiking kernel speeds)
    linear = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(W)
    fns[INPUT_LAYER] = linear
    out.append(Contestant(
        INPUT_LAYER, "torch", "torch.nn.Linear(N, N, bias=False) with W, (B, T, N): the input layer every contestant "
        "runs, alone (no spiking layer)", "-", "-", False, bt, _torch_timer(torch, linear),
        version=_version("torch")))
    if "snntorch" in peers:
        out.append(Contestant(
            "snnTorch", "snntorch", "nn.Linear(N, N, bias=False) on (T, B, N), then snn.RLeaky(beta=0.9, "
            "linear_features=N, threshold=1, reset_mechanism='subtract') over time, recurrent bias 0: reset "
            "after decay", SURROGATE_EXP + " as spike_grad", "reset detached (= slayer)", True, tb,
            _torch_timer(torch, _keep(fns, "snnTorch", _snntorch_fn(torch, W, V)[0])),
            version=_version("snntorch")))
    if "spikingjelly" in peers:
        out.append(Contestant(
            "SpikingJelly", "spikingjelly", "layer.LinearRecurrentContainer(neuron.LIFNode(tau=10, "
            "decay_input=False, v_reset=None, detach_reset=False), N, N, bias=False), single-step (default) "
            "over time, rc.weight = [W | V]: reset before decay, (T, B, N)",
            "PiecewiseExp(alpha=2) = " + SURROGATE_EXP, "exact (= exodus)", True, tb,
            _torch_timer(torch, _keep(fns, "SpikingJelly", _spikingjelly_fn(torch, W, V)[0])),
            version=_version("spikingjelly")))
    if "norse" in peers:
        out.append(Contestant(
            "Norse", "norse", "LIFRecurrent(N, N, LIFParameters() (defaults: tau_syn_inv=200, tau_mem_inv=100, "
            "v_reset=0, 'super'), dt=0.001, autapses=False), weights 10 W, 10 V: current-based (alpha_mem 0.9, "
            "alpha_syn 0.8), reset to zero, (T, B, N)", SURROGATE_SUPER, "reset detached (= slayer)", True,
            tb, _torch_timer(torch, _keep(fns, "Norse", _norse_fn(torch, W, V)[0])), version=_version("norse")))
    return out, fns


# --------------------------------------------------------------- agreement
def recurrent_agreement(dtype: str = "f64", size=AGREE_SIZE, seed: int = 0, *, peers=None) -> list[dict]:
    """Spikes and dL/dx, dL/dW, dL/dV of each installed peer (or of ``peers``) against the ift_snn recurrent layer
    of the same dynamics and gradient, on one small problem (``size`` (batch, T, neurons))."""
    import torch

    from ..neurons.models import cuba_lif, lif
    from ..neurons.surrogates import exponential, fast_sigmoid

    if dtype not in ("f64", "f32"):
        raise ValueError(f"dtype={dtype!r}: expected 'f64' or 'f32'")
    (size,) = check_sizes([size])
    if peers is None:
        peers, _ = available_peers()
    tdt = torch.float64 if dtype == "f64" else torch.float32
    B, T, N = size
    gen = torch.Generator().manual_seed(seed)
    x = (0.3 + 0.5 * torch.randn(B, T, N, generator=gen, dtype=torch.float64)).to(tdt)
    g = torch.randn(B, T, N, generator=gen, dtype=torch.float64).to(tdt)
    W, V = _weights(torch, N, seed, tdt)

    def run(fn, params, inp, gin):
        xi = inp.detach().clone().requires_grad_(True)
        out = fn(xi)
        out.backward(gin.to(out.dtype))
        return out.detach(), xi.grad, {k: p.grad for k, p in params.items()}

    def tm(t):
        return t.transpose(0, 1).contiguous()

    def ift(method, model=None, Wi=W, Vi=V):
        with warnings.catch_warnings():  # the StabilityWarning of Norse's surrogate (scale 1 > 0.89)
            warnings.simplefilter("ignore")
            layer, params = _ift_layer(torch, Wi, Vi, method, model)
            return run(layer, params, x, g)

    rows = []
    for name in peers:
        notes = []
        if name == "snntorch":
            s_ref, gx_ref, gp_ref = ift("slayer")
            s, gx, gp = run(*_snntorch_fn(torch, W, V), tm(x), tm(g))
            gW, gV, gW_ref, gV_ref = gp["W"], gp["V"], gp_ref["W"], gp_ref["V"]
            vs = "ift_snn slayer (lif, reset after decay)"
            if s.dtype != tdt:
                notes.append(f"snnTorch returned {s.dtype}")
        elif name == "spikingjelly":
            model = lif(ALPHA, THETA, reset_before_decay=True, surrogate=exponential(SG_SCALE, SG_WIDTH))
            s_ref, gx_ref, gp_ref = ift("exodus", model)
            s, gx, gp = run(*_spikingjelly_fn(torch, W, V), tm(x), tm(g))
            gW, gV = gp["WV"][:, :N], gp["WV"][:, N:]
            gW_ref, gV_ref = gp_ref["W"], gp_ref["V"]
            vs = "ift_snn exodus (lif, reset before decay)"
        elif name == "norse":
            # Norse holds G W, G V and integrates (1 - alpha_mem) of them: the ift_snn layer holds (1 - a) G W
            k = (1.0 - NORSE_ALPHA_MEM) * NORSE_GAIN
            with warnings.catch_warnings():  # scale 1 is above the largest stable scale (0.89): Norse's choice
                warnings.simplefilter("ignore")
                model = cuba_lif(NORSE_ALPHA_MEM, NORSE_ALPHA_SYN, THETA, reset="zero",
                                 surrogate=fast_sigmoid(scale=1.0, slope=1.0))
            s_ref, gx_ref, gp_ref = ift("slayer", model, k * W, k * V)
            s, gx, gp = run(*_norse_fn(torch, W, V, exact_params=True), tm(x), tm(g))
            # dL/dW_norse = (1 - alpha_mem) dL/dW_ift; Norse's hook zeroes dL/dV's diagonal (no autapses)
            gW, gV = gp["W"], gp["V"]
            gW_ref = (1.0 - NORSE_ALPHA_MEM) * gp_ref["W"]
            gV_ref = ((1.0 - NORSE_ALPHA_MEM) * gp_ref["V"]).fill_diagonal_(0.0)
            vs = "ift_snn slayer (cuba_lif(0.9, 0.8, reset='zero'), fast_sigmoid(1, 1))"
            notes.append("dL/dV off the diagonal (Norse: no autapses)")
        else:
            continue
        s, gx = tm(s), tm(gx)
        rows.append({"peer": name, "dtype": dtype, "versus": vs, "size": list(size),
                     "spikes_differ": int((s.to(s_ref.dtype) != s_ref).sum()), "spikes": int(s_ref.sum()),
                     "grad_rel_diff": _rel(gx, gx_ref), "grad_W_rel_diff": _rel(gW, gW_ref),
                     "grad_V_rel_diff": _rel(gV, gV_ref), "notes": notes})
    return rows


# ------------------------------------------------------------------- run
def _environment(torch, threads: int) -> dict:
    return {"device": f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": np.__version__, "threads": torch.get_num_threads(), "requested_threads": threads,
            "ift_snn": _version("ift-snn")}


def run_recurrent_peers(sizes=DEFAULT_SIZES, rounds: int = 5, *, json_path=None, seed: int = 0,
                        progress: bool = True, threads: int = 2, agree: bool = True) -> dict:
    """Run the recurrent-layer peer benchmark; returns (and, with ``json_path``, rewrites after every step) the
    results. Peers that are not installed are listed in ``missing`` (their ratios are then None)."""
    sizes = check_sizes(sizes)
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds={rounds!r}: expected a positive int")
    try:
        import torch
    except ImportError:
        raise ImportError(f"the recurrent peer benchmark needs PyTorch: {INSTALL_HINT}") from None
    peers, missing = available_peers()
    torch.set_num_threads(threads)
    env = _environment(torch, threads)
    described, _ = _contestants(torch, peers, *_weights(torch, 2, seed, torch.float32))
    result = {
        "device": env["device"],
        "environment": env,
        "config": {"torch": torch.__version__, "threads": torch.get_num_threads(), "dtype": "float32",
                   "alpha": ALPHA, "theta": THETA, "rounds": rounds, "seed": seed, "sizes": [list(s) for s in sizes],
                   "weights": "W, V ~ U(-1/sqrt(N), 1/sqrt(N)), diag(V) = 0, the same in every contestant "
                              f"(Norse: {NORSE_GAIN:g} W, {NORSE_GAIN:g} V)",
                   "memory_method": None,
                   "targets": {"exodus_over_fastest_peer": TARGET_FWD_BWD,
                               "exodus_over_slayer_backward": TARGET_BACKWARD,
                               "exodus_memory_over_leanest_peer": TARGET_MEMORY},
                   "timing": "the round whose forward + backward is the median (its fwd and bwd shown; the medians of "
                             "each in forward_median_ms, backward_median_ms); order shuffled per round"},
        "contestants": [{"name": c.name, "library": c.library, "version": c.version, "config": c.config,
                         "surrogate": c.surrogate, "gradient": c.gradient, "peer": c.is_peer} for c in described],
        "missing": missing,
        "agreement": [],
        "rows": [],
        "summary": [],
        "notes": [f"{k}: {v}" for k, v in missing.items()],
    }
    if "norse" in peers:
        result["notes"].append("Norse times its own default model (current-based, reset to zero, SuperSpike; "
                               "gradient reset-detached), not ift_snn's lif; its agreement row checks that model")
    del described
    if json_path:
        _write_json(json_path, result)
    prog = _Progress(len(sizes) * (rounds + 2) * (2 + len(peers)), progress)
    try:
        if agree and peers:
            for dt in ("f64", "f32"):
                result["agreement"] += recurrent_agreement(dt, seed=seed, peers=peers)
            for a in result["agreement"]:
                prog.line(f"agreement {a['dtype']} {a['peer']:<13} vs {a['versus']}: spikes differ "
                          f"{a['spikes_differ']}/{a['spikes']}, max rel diff dL/dx {a['grad_rel_diff']:.2e}, "
                          f"dL/dW {a['grad_W_rel_diff']:.2e}, dL/dV {a['grad_V_rel_diff']:.2e}")
            if json_path:
                _write_json(json_path, result)
        rng = random.Random(seed)
        for size in sizes:
            _one_size(torch, peers, size, rounds, rng, seed, result, prog)
            if json_path:
                _write_json(json_path, result)
    finally:
        prog.close()
    return result


def _ratio(a, b):
    return a / b if b else None


def _one_size(torch, peers, size, rounds, rng, seed, result, prog) -> None:
    B, T, N = size
    gen = torch.Generator().manual_seed(seed)
    x = (0.3 + 0.5 * torch.randn(B, T, N, generator=gen)).contiguous()
    g = torch.randn(B, T, N, generator=gen).contiguous()
    W, V = _weights(torch, N, seed, torch.float32)
    contestants, fns = _contestants(torch, peers, W, V)
    label = f"{B}x{T}x{N}"
    prepared = {c.name: c.prepare(x, g) for c in contestants}
    rate = {}

    def spike_rate(c):  # untimed, after the warm-up
        with torch.no_grad():
            rate[c.name] = (None if c.name == INPUT_LAYER
                            else float(fns[c.name](prepared[c.name][0]).float().mean()))

    times, peak = measure(contestants, prepared, rounds, rng, label, result, prog, spike_rate)
    rows = [{**timing_row(size, c, times[c.name], peak[c.name]), "spike_rate": rate[c.name]} for c in contestants]
    by = {r["contestant"]: r for r in rows}
    peer_rows = [r for r in rows if r["peer"]]
    ex, sl = by["ift_snn exodus"], by["ift_snn slayer"]
    fastest = min(peer_rows, key=lambda r: r["fwd_bwd_ms"]) if peer_rows else None
    leanest = min(peer_rows, key=lambda r: r["peak_mb"]) if peer_rows else None
    agree = {(a["peer"], a["dtype"]): a["grad_rel_diff"] for a in result["agreement"]}
    for r in rows:
        r["agreement_f64"] = agree.get((r["library"], "f64"))
        r["agreement_f32"] = agree.get((r["library"], "f32"))
        r["over_fastest_peer"] = _ratio(r["fwd_bwd_ms"], fastest["fwd_bwd_ms"]) if fastest else None
    summary = {
        "size": [B, T, N],
        "fastest_peer": fastest and fastest["contestant"],
        "fastest_peer_fwd_bwd_ms": fastest and fastest["fwd_bwd_ms"],
        "exodus_over_fastest_peer": _ratio(ex["fwd_bwd_ms"], fastest["fwd_bwd_ms"]) if fastest else None,
        "slayer_over_fastest_peer": _ratio(sl["fwd_bwd_ms"], fastest["fwd_bwd_ms"]) if fastest else None,
        "exodus_over_slayer_backward": _ratio(ex["backward_ms"], sl["backward_ms"]),
        "leanest_peer": leanest and leanest["contestant"],
        "leanest_peer_peak_mb": leanest and leanest["peak_mb"],
        "exodus_memory_over_leanest_peer": _ratio(ex["peak_mb"], leanest["peak_mb"]) if leanest else None,
    }
    for key, target in (("exodus_over_fastest_peer", TARGET_FWD_BWD),
                        ("exodus_over_slayer_backward", TARGET_BACKWARD),
                        ("exodus_memory_over_leanest_peer", TARGET_MEMORY)):
        summary[key + "_met"] = (
            None if summary[key] is None else bool(summary[key] <= target))
    result["rows"] += rows
    result["summary"].append(summary)
    if fastest:
        prog.line(f"{label}: ift_snn exodus {ex['fwd_bwd_ms']:.1f} ms fwd+bwd, fastest peer "
                  f"{fastest['contestant']} {fastest['fwd_bwd_ms']:.1f} ms, ratio "
                  f"{summary['exodus_over_fastest_peer']:.3f}")


# ------------------------------------------------------------------ table
def _fmt(v, spec, width=9):
    return format("-", f">{width}") if v is None else format(v, spec)


def _met(value, target, what):
    if value is None:
        return f"{what}: -"
    return f"{what}: {value:.3f} (target <= {target:.3g}: {'met' if value <= target else 'NOT met'})"


def format_recurrent_table(result: dict) -> str:
    cfg, env = result["config"], result.get("environment", {})
    lines = [f"== one recurrent LIF layer (a = W x + V s[n-1]; alpha {cfg['alpha']}, theta {cfg['theta']}), "
             f"{cfg['dtype']}, {result['device']}, torch {cfg['torch']} on {cfg['threads']} threads; "
             f"median of {cfg['rounds']} interleaved rounds",
             f"   {env.get('platform', '')}, Python {env.get('python', '')}; peak memory: {cfg['memory_method']}",
             f"   weights: {cfg['weights']}"]
    if result["agreement"]:
        lines.append(f"   agreement (B, T, N = {tuple(result['agreement'][0]['size'])}): spikes differing, "
                     "max |d_peer - d_ift| / max |d_ift| of dL/dx, dL/dW, dL/dV")
        for a in result["agreement"]:
            note = f"  ({'; '.join(a['notes'])})" if a.get("notes") else ""
            lines.append(f"     {a['dtype']} {a['peer']:<13} vs {a['versus']:<70} spikes differ "
                         f"{a['spikes_differ']}/{a['spikes']:<6} dL/dx {a['grad_rel_diff']:.1e}  "
                         f"dL/dW {a['grad_W_rel_diff']:.1e}  dL/dV {a['grad_V_rel_diff']:.1e}{note}")
    head = (f"   {'contestant':<16} {'fwd ms':>10} {'bwd ms':>10} {'fwd+bwd ms':>11} {'min-max ms':>19} "
            f"{'x fastest':>9} {'peak MB':>9} {'spikes':>7} {'agree f64':>9}  {'gradient':<26} surrogate")
    for s in result["summary"]:
        B, T, N = s["size"]
        lines.append(f"-- batch {B}, T {T}, neurons {N}")
        lines.append(head)
        for r in result["rows"]:
            if r["size"] != s["size"]:
                continue
            spread = f"{r['fwd_bwd_min_ms']:.1f}-{r['fwd_bwd_max_ms']:.1f}"
            lines.append(f"   {r['contestant']:<16} {r['forward_ms']:>10.1f} {r['backward_ms']:>10.1f} "
                         f"{r['fwd_bwd_ms']:>11.1f} {spread:>19} {_fmt(r['over_fastest_peer'], '>9.3f')} "
                         f"{r['peak_mb']:>9.1f} {_fmt(r['spike_rate'], '>7.3f', 7)} {_fmt(r['agreement_f64'], '>9.1e')}  "
                         f"{r['gradient']:<26} "
                         f"{r['surrogate']}")
        lines.append("   " + _met(s["exodus_over_fastest_peer"], TARGET_FWD_BWD,
                                  f"ift_snn exodus fwd+bwd / fastest peer ({s['fastest_peer'] or 'none installed'})")
                     + (f"; slayer {s['slayer_over_fastest_peer']:.3f}" if s["slayer_over_fastest_peer"] else ""))
        lines.append("   " + _met(s["exodus_over_slayer_backward"], TARGET_BACKWARD,
                                  "ift_snn exodus backward / slayer backward"))
        lines.append("   " + _met(s["exodus_memory_over_leanest_peer"], TARGET_MEMORY,
                                  f"ift_snn exodus peak memory / leanest peer ({s['leanest_peer'] or 'none installed'})"))
    for c in result["contestants"]:
        lines.append(f"   {c['name']:<16} {c['library']} {c['version']}: {c['config']}")
    lines += [f"   note: {n}" for n in result["notes"]]
    return "\n".join(lines)
