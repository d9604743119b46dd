"""PyTorch layer of continuous-time neurons: spike times in, spike times out, exact gradients.

A layer of :class:`ift_snn.events.EventSRM` neurons (any exponential-polynomial
kernels) with weights ``W`` (n_in, n_out), optional learnable synaptic delays
``d`` (n_in, n_out) and axonal delays (n_out,), and learnable kernel
parameters (docs/MATH.md section 7)::

    u_m(t) = sum_i W_im sum_j eps(t - t_i^j - d_im) + sum_{t_k < t} nu(t - t_k),   spikes at u_m(t_k) = theta

Tensors of spike times are padded: (batch, channels, slots), each channel's
times ascending, ``+inf`` for "no spike" in the remaining slots. The backward
is the derived reverse scan (:func:`ift_snn.events.srm.backward_srm`): the
exact gradient of the output times with respect to the input times, the
weights, the delays and every kernel parameter, wherever the spike counts do
not change (where they do, a spike time jumps to or from +inf and has no
derivative; its gradient is 0, as in EventProp).

Delays are clamped at 0 in the forward (``d = clamp(raw, min=0)``): a raw
delay below 0 acts as 0 and gets gradient 0 from the clamp. Computation runs
in float64 on the CPU (NumPy arrays shared with the tensors); the outputs
have the input's dtype.

Time bins and spike times: :func:`bins_to_times` turns a (batch, time,
channels) 0/1 (or count) raster into spike times ``(n + offset) dt``;
:func:`times_to_bins` counts spike times into bins (not differentiable: use
the times for gradients).

Cost: forward and backward O(B M (E + K)) for E input spikes and K output
spikes per neuron (no time grid).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..events.model import SpikeTrain
from ..events.srm import EventSRM, backward_srm, simulate_srm

__all__ = ["EventSRMLayer", "SpikeTimes", "bins_to_times", "times_to_bins"]


def _train(times: torch.Tensor, name: str = "input") -> SpikeTrain:
    if not isinstance(times, torch.Tensor):
        raise TypeError(f"{name} is a {type(times).__name__}; expected a tensor of spike times (batch, channels, "
                        "slots), +inf for no spike")
    if times.dim() != 3:
        raise ValueError(f"{name} has shape {tuple(times.shape)}; expected (batch, channels, slots) of spike times")
    if not times.is_floating_point():
        raise TypeError(f"{name} has dtype {times.dtype}; expected floating point spike times (+inf padding)")
    t = times.detach().cpu().double().numpy()
    counts = np.isfinite(t).sum(axis=2)
    return SpikeTrain(np.ascontiguousarray(t), counts.astype(np.int64))  # checks sorted, NaN, padding, >= 0


class SpikeTimes(torch.autograd.Function):
    """times_out = the layer's spike times (forward :func:`simulate_srm`, backward :func:`backward_srm`)."""

    @staticmethod
    def forward(ctx, times, weight, delays, axonal, params, model, recurrent=None, recurrent_delays=None):
        train = _train(times)
        values = params.detach().cpu().double().numpy()
        if values.size:
            model = model.with_(**dict(zip(model.names, values.tolist())))
        w = weight.detach().cpu().double().numpy()
        d = None if delays is None else delays.detach().cpu().double().numpy()
        a = None if axonal is None else axonal.detach().cpu().double().numpy()
        rec = {}
        if recurrent is not None:
            rec = dict(recurrent=recurrent.detach().cpu().double().numpy(),
                       recurrent_delays=recurrent_delays.detach().cpu().double().numpy())
        trace = simulate_srm(model, w, train, delays=d, axonal=a, **rec)
        ctx.trace = trace
        ctx.dtypes = (times.dtype, weight.dtype)
        ctx.has = (delays is not None, axonal is not None, recurrent is not None)
        out = torch.from_numpy(trace.out.times).to(dtype=times.dtype, device=times.device)
        return out

    @staticmethod
    def backward(ctx, grad):
        trace = ctx.trace
        g = grad.detach().cpu().double().numpy()
        valid = np.isfinite(trace.out.times)
        grads = backward_srm(trace, np.where(valid, g, 0.0))
        t_dtype, w_dtype = ctx.dtypes
        d_times = torch.from_numpy(grads.inputs).to(t_dtype)
        d_w = torch.from_numpy(grads.w).to(w_dtype)
        d_d = torch.from_numpy(grads.delays).to(w_dtype) if ctx.has[0] else None
        d_a = torch.from_numpy(grads.axonal).to(w_dtype) if ctx.has[1] else None
        d_p = torch.tensor([grads.params[n] for n in trace.model.names], dtype=torch.float64)
        if not ctx.has[2]:
            return d_times, d_w, d_d, d_a, d_p, None, None, None
        return (d_times, d_w, d_d, d_a, d_p, None, torch.from_numpy(grads.recurrent).to(w_dtype),
                torch.from_numpy(grads.recurrent_delays).to(w_dtype))


class EventSRMLayer(nn.Module):
    """A dense layer of continuous-time neurons (module docstring).

    ``model``: an :class:`EventSRM` or a built-in name (``lif``, ``alpha``,
    ``adaptive``). ``delays``: learn synaptic delays (initialised uniformly in
    [0, ``max_delay``]); ``axonal``: learn a delay per output neuron.
    ``learn``: names of kernel parameters (or ``theta``) to train, each an
    ``nn.Parameter`` (a value that makes the kernel invalid, e.g. tau <= 0, is
    refused at the next forward with the value named). ``weight_mean`` /
    ``weight_std``: the weights' normal initialisation (std default
    1/sqrt(n_in)).

    ``recurrent=True``: the layer's spikes arrive back at its own neurons
    through learnable weights ``V`` (n_out, n_out; normal, std
    ``recurrent_std``, default 0.5/sqrt(n_out)) after learnable delays
    (uniform in [``min_recurrent_delay``, ``min_recurrent_delay`` +
    ``max_delay``], clamped at ``min_recurrent_delay`` > 0 in the forward).
    Every spike feeds the layer: a neuron that reaches ``max_spikes`` is
    silenced for the rest of its sample (warned and counted; the gradient is
    that of the capped network).
    """

    def __init__(self, n_in: int, n_out: int, model: EventSRM | str = "lif", *, delays: bool = False,
                 axonal: bool = False, max_delay: float = 1.0, learn: tuple[str, ...] = (),
                 max_spikes: int | None = None, weight_mean: float = 0.0, weight_std: float | None = None,
                 recurrent: bool = False, recurrent_std: float | None = None, min_recurrent_delay: float = 0.1,
                 seed: int | None = None, **params: float):
        super().__init__()
        for name, v in (("n_in", n_in), ("n_out", n_out)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r}: expected an int >= 1")
        if isinstance(model, str):
            model = EventSRM.named(model, **params, **({"max_spikes": max_spikes} if max_spikes else {}))
        elif not isinstance(model, EventSRM):
            raise TypeError(f"model is a {type(model).__name__}; expected an EventSRM or a built-in name")
        elif params or max_spikes:
            model = model.with_(**params, **({"max_spikes": max_spikes} if max_spikes else {}))
        if not (isinstance(max_delay, (int, float)) and math.isfinite(max_delay) and max_delay >= 0):
            raise ValueError(f"max_delay={max_delay!r}: expected a finite number >= 0")
        unknown = [n for n in learn if n not in model.names]
        if unknown:
            raise ValueError(f"learn={tuple(learn)!r}: {', '.join(unknown)} not among the model's parameters "
                             f"{', '.join(model.names)}")
        self.model = model
        self.n_in, self.n_out = n_in, n_out
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = weight_std if weight_std is not None else 1.0 / math.sqrt(n_in)
        self.weight = nn.Parameter(torch.randn(n_in, n_out, generator=gen, dtype=torch.float64) * std + weight_mean)
        self.delay = nn.Parameter(torch.rand(n_in, n_out, generator=gen, dtype=torch.float64) * max_delay) \
            if delays else None
        self.axonal_delay = nn.Parameter(torch.rand(n_out, generator=gen, dtype=torch.float64) * max_delay) \
            if axonal else None
        if recurrent and not (isinstance(min_recurrent_delay, (int, float)) and math.isfinite(min_recurrent_delay)
                              and min_recurrent_delay > 0):
            raise ValueError(f"min_recurrent_delay={min_recurrent_delay!r}: expected a finite number > 0 (a spike "
                             "cannot act on its own layer at the instant it is emitted)")
        self.min_recurrent_delay = float(min_recurrent_delay)
        if recurrent:
            rstd = recurrent_std if recurrent_std is not None else 0.5 / math.sqrt(n_out)
            self.recurrent_weight = nn.Parameter(torch.randn(n_out, n_out, generator=gen, dtype=torch.float64) * rstd)
            self.recurrent_delay = nn.Parameter(min_recurrent_delay + torch.rand(n_out, n_out, generator=gen,
                                                                                  dtype=torch.float64) * max_delay)
        else:
            self.recurrent_weight = self.recurrent_delay = None
        self.learn = tuple(learn)
        for name in self.learn:
            self.register_parameter(name, nn.Parameter(torch.tensor(float(model.params[name]), dtype=torch.float64)))

    def kernel_params(self) -> torch.Tensor:
        """The values of every model parameter in the model's order (learned ones from their Parameters)."""
        vals = [getattr(self, n) if n in self.learn else torch.tensor(float(self.model.params[n]), dtype=torch.float64)
                for n in self.model.names]
        return torch.stack([v.reshape(()) for v in vals]).double()

    def forward(self, times: torch.Tensor) -> torch.Tensor:
        """(batch, n_in, slots) spike times -> (batch, n_out, max_spikes) spike times, +inf padded."""
        if isinstance(times, torch.Tensor) and times.dim() == 3 and times.shape[1] != self.n_in:
            raise ValueError(f"input has {times.shape[1]} channels (shape {tuple(times.shape)}); expected "
                             f"{self.n_in}: (batch, channels, slots) of spike times")
        d = None if self.delay is None else self.delay.clamp(min=0.0)
        a = None if self.axonal_delay is None else self.axonal_delay.clamp(min=0.0)
        if self.recurrent_weight is None:
            return SpikeTimes.apply(times, self.weight, d, a, self.kernel_params(), self.model)
        dr = self.recurrent_delay.clamp(min=self.min_recurrent_delay)
        return SpikeTimes.apply(times, self.weight, d, a, self.kernel_params(), self.model, self.recurrent_weight, dr)

    def extra_repr(self) -> str:
        return (f"{self.n_in}, {self.n_out}, eps={self.model.eps!r}, nu={self.model.nu!r}, "
                f"delays={self.delay is not None}, axonal={self.axonal_delay is not None}, "
                f"recurrent={self.recurrent_weight is not None}, learn={self.learn}")


def bins_to_times(x: torch.Tensor, dt: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    """A (batch, time, channels) raster of spike counts -> (batch, channels, slots) times (n + offset) dt.

    A bin holding k spikes gives k equal times. Slots = the largest count of a channel; +inf pads.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x has shape {tuple(getattr(x, 'shape', ()))}; expected (batch, time, channels)")
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt={dt!r}: expected a finite number > 0")
    xs = x.detach().cpu().numpy()
    if (xs < 0).any() or not np.all(np.isfinite(xs)) or np.any(xs != np.round(xs)):
        raise ValueError("x holds values that are not non-negative whole spike counts")
    counts = np.transpose(xs, (0, 2, 1)).astype(np.int64)  # (B, C, T)
    B, C, T = counts.shape
    per = counts.sum(axis=2)
    S = max(int(per.max()) if per.size else 0, 1)
    out = np.full((B, C, S), np.inf)
    for b, c in zip(*np.nonzero(per)):
        ts = np.repeat(np.arange(T), counts[b, c])
        out[b, c, :ts.size] = (ts + offset) * dt
    return torch.from_numpy(out).to(x.dtype if x.is_floating_point() else torch.float64)


def times_to_bins(times: torch.Tensor, T: int, dt: float = 1.0) -> torch.Tensor:
    """(batch, channels, slots) spike times -> (batch, T, channels) spike counts of bins [n dt, (n+1) dt)."""
    train = _train(times, "times")
    B, C, _ = train.shape
    out = np.zeros((B, T, C))
    b, c, k = np.nonzero(np.isfinite(train.times))
    n = np.floor(train.times[b, c, k] / dt).astype(np.int64)
    keep = n < T
    np.add.at(out, (b[keep], n[keep], c[keep]), 1.0)
    return torch.from_numpy(out).to(times.dtype)
