"""A recurrent spiking layer for PyTorch: a[n] = c[n] + b + V s[n-1], c = W x (docs/MATH.md section 9).

:class:`RecurrentSpikingLayer` runs a whole sequence in two generated kernels (:mod:`ift_snn.recurrent`: the
neurons of a sample step together, the coupling a sparse sum over the spikes that fired), with the exact
gradient through reset and recurrence (``method="exodus"``), SLAYER's (``"slayer"``: the reset detached, the
recurrent path kept) or the float64 oracle's (``"bptt"``). Input (batch, time, features) like the other layers;
V ``(N, N)`` (``connectivity="all_to_all"``) or one weight per neuron (``"one_to_one"``, snnTorch's
``all_to_all=False``); W inside (``in_features=``) or the input already the current.
:func:`from_snntorch_recurrent` converts an ``snntorch.RLeaky`` or ``RSynaptic``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .. import recurrent
from ..ops import state_names
from ..methods import EXODUS, get_method
from ..neurons.models import NeuronModel, lif
from .torch import (
    _OP_MODELS,
    COMPILABLE,
    _as_array,
    _as_tensor,
    _check_method,
    _check_model,
    _check_state,
    _check_tensor,
    _op_key,
    _op_model,
    _on_device,
    _with_params,
    spike_scan,
)

__all__ = ["RecurrentScan", "RecurrentSpikingLayer", "RLIF", "from_snntorch_recurrent"]


class RecurrentScan(torch.autograd.Function):
    """``apply(c, V, x0, model, method, truncation, names, *params)``: c (batch, time, N) the input current, V
    (N, N), x0 the initial state (n_state, batch, N) or None (zeros); returns (spikes (batch, time, N), the state
    after the last step (not differentiable)). Gradients: dL/dc, dL/dV, dL/dx0 and dL/dp of the one-element
    ``params`` (the model holds their values)."""

    @staticmethod
    def forward(ctx, c, V, x0, model, method, truncation, names, *params):
        c_in = c.detach().contiguous()
        with _on_device(c):
            trace = recurrent.forward(model, _as_array(c_in), _as_array(V.detach().contiguous()),
                                      state=None if x0 is None else _as_array(x0.detach().contiguous()),
                                      time_axis=1, copy=False)
            s = _as_tensor(trace.s)
            final = _as_tensor(trace.state)
        ctx.trace, ctx.model, ctx.method, ctx.truncation, ctx.names = trace, model, method, truncation, names
        ctx.param_like = [(p.dtype, p.device, p.shape) for p in params]
        ctx.save_for_backward(c_in, s)  # (the trace holds views of these: in-place edits are refused by PyTorch)
        ctx.mark_non_differentiable(final)
        ctx.set_materialize_grads(False)
        return s, final

    @staticmethod
    def backward(ctx, grad_s, grad_final):
        if torch.is_grad_enabled():
            raise RuntimeError("ift_snn's recurrent scan has first derivatives only (no create_graph=True)")
        return RecurrentScan._first_order(ctx, grad_s, grad_final)

    @staticmethod
    @once_differentiable
    def _first_order(ctx, grad_s, grad_final):
        c_in, _ = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if grad_s is None:
            return (None,) * (7 + len(ctx.names))
        with _on_device(grad_s):
            grads = recurrent.backward(ctx.model, ctx.trace, _as_array(grad_s.contiguous()), ctx.method,
                                       ctx.truncation, parameters=[k for k, n in zip(ctx.names, needs[7:]) if n])
            grad_c = _as_tensor(grads.c) if needs[0] else None
            grad_V = _as_tensor(grads.V) if needs[1] else None
            grad_x0 = _as_tensor(grads.state) if needs[2] else None
        grad_p = [torch.tensor(grads.params[k], dtype=dtype, device=device).reshape(shape) if need else None
                  for k, (dtype, device, shape), need in zip(ctx.names, ctx.param_like, needs[7:])]
        return (grad_c, grad_V, grad_x0, None, None, None, None, *grad_p)


class RecurrentSpikingLayer(nn.Module):
    """A layer of N spiking neurons of any model whose spikes feed back into its own input one step later.

        c[n] = W x[n] (with ``in_features``; else x is the current),  a[n] = c[n] + b + V s[n-1],  s = model(a)

    ``forward(x)``: x (batch, time, in_features or N) -> spikes (batch, time, N) (``batch_first=False``: time
    first). V is an ``nn.Parameter`` (N, N) initialised as ``nn.Linear``'s weight, U(-1/sqrt(N), 1/sqrt(N)),
    scaled by ``recurrent_gain``; ``connectivity="one_to_one"`` keeps one weight per neuron (its own spike
    only: V = diag(v), v initialised to ``recurrent_gain`` / sqrt(N)...). ``bias=True`` adds b (N,), the
    bias a recurrent ``nn.Linear`` carries in snnTorch. ``train_alpha`` / ``train_theta`` make the model's
    alpha parameters / theta trainable (one value per layer). ``stateful=True`` carries the state (spikes
    included) to the next call, detached; :meth:`step` runs one step with the state carried and keeps its
    history (BPTT through the steps); :meth:`reset_states` forgets both.

    Cost per call: O(batch time (N + spikes N)) forward, O(batch time N^2) backward (V^T dL/da per step is
    dense) plus one GEMM for dL/dV. Under torch.compile the scan is the custom op ``ift_snn::recurrent_scan``
    (opaque to the compiler, its shapes and autograd registered; ``fullgraph=True`` captures the layer); a
    stateful layer, method "bptt" and half types run uncompiled there (a graph break).
    """

    def __init__(self, model: NeuronModel, neurons: int, in_features: int | None = None, *,
                 method: str = "exodus", truncation: int | None = None, connectivity: str = "all_to_all",
                 bias: bool = False, recurrent_gain: float = 1.0, train_alpha: bool = False,
                 train_theta: bool = False, stateful: bool = False, batch_first: bool = True,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        model = _check_model(model)
        if isinstance(neurons, bool) or not isinstance(neurons, int) or neurons < 1:
            raise ValueError(f"neurons={neurons!r}: expected the number of neurons N >= 1")
        if in_features is not None and (isinstance(in_features, bool) or not isinstance(in_features, int)
                                        or in_features < 1):
            raise ValueError(f"in_features={in_features!r}: expected None (the input is the current) or an int >= 1")
        if connectivity not in ("all_to_all", "one_to_one"):
            raise ValueError(f"connectivity={connectivity!r}: expected 'all_to_all' (V is N x N) or 'one_to_one' "
                             "(each neuron's own spike only)")
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first={batch_first!r} must be True or False")
        if not (isinstance(recurrent_gain, (int, float)) and math.isfinite(recurrent_gain)):
            raise ValueError(f"recurrent_gain={recurrent_gain!r}: expected a finite number")
        self.truncation = _check_method(method, truncation)
        if stateful and get_method(method).reference:
            raise ValueError("stateful=True needs method='exodus' or 'slayer' ('bptt' starts every call from zero)")
        self.model, self.method, self.neurons, self.connectivity = model, method, neurons, connectivity
        self.batch_first, self.stateful = batch_first, bool(stateful)
        dtype = dtype or torch.get_default_dtype()
        self.fc = None if in_features is None else nn.Linear(in_features, neurons, bias=False, dtype=dtype)
        bound = recurrent_gain / math.sqrt(neurons)
        if connectivity == "all_to_all":
            self.V = nn.Parameter(torch.empty(neurons, neurons, dtype=dtype).uniform_(-bound, bound))
        else:
            self.v = nn.Parameter(torch.full((neurons,), bound, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(neurons, dtype=dtype)) if bias else None
        names = [k for k in model.parameter_names if k.startswith("alpha")] if train_alpha else []
        if train_alpha and not names:
            raise ValueError(f"train_alpha=True but the {model.name} model has no alpha parameter")
        names += ["theta"] if train_theta else []
        self.trainable = tuple(names)
        for k in names:
            self.register_parameter(k, nn.Parameter(torch.tensor(dict(model.params)[k], dtype=dtype)))
        self._state: torch.Tensor | None = None
        self._step_state: torch.Tensor | None = None
        #: The custom op's registry key of (model, trainable names), made here: the compiler does not trace the
        #: hashing of a model.
        self._op_key = _op_key(self.model, self.trainable)

    @property
    def weight(self) -> torch.Tensor:
        """V as an (N, N) tensor (diag(v) for one-to-one connectivity)."""
        return self.V if self.connectivity == "all_to_all" else torch.diag(self.v)

    @property
    def state(self) -> torch.Tensor | None:
        return self._state

    def current_model(self) -> NeuronModel:
        return _with_params(self.model, {k: float(getattr(self, k).detach()) for k in self.trainable})

    def reset_states(self) -> None:
        self._state = None
        self._step_state = None

    def detach_states(self) -> None:
        if self._step_state is not None:
            self._step_state = self._step_state.detach()

    def extra_repr(self) -> str:
        parts = [repr(self.model), f"neurons={self.neurons}", f"method={self.method!r}",
                 f"connectivity={self.connectivity!r}"]
        if self.fc is not None:
            parts.append(f"in_features={self.fc.in_features}")
        if self.truncation is not None:
            parts.append(f"truncation={self.truncation}")
        if self.stateful:
            parts.append("stateful=True")
        return ", ".join(parts)

    def _current(self, x: torch.Tensor) -> torch.Tensor:
        want = self.neurons if self.fc is None else self.fc.in_features
        if x.shape[-1] != want:
            raise ValueError(f"RecurrentSpikingLayer: the input's last dimension is {x.shape[-1]}, expected "
                             f"{'N = ' if self.fc is None else 'in_features = '}{want}")
        c = x if self.fc is None else self.fc(x)
        return c if self.bias is None else c + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            if (not COMPILABLE or self.stateful or get_method(self.method).reference
                    or getattr(x, "dtype", None) not in (torch.float32, torch.float64)):
                return _run_uncompiled(self, x)
            return self._compiled_forward(x)
        return self._eager_forward(x)

    def _compiled_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer as the custom op ``ift_snn::recurrent_scan`` (under torch.compile)."""
        if not self.batch_first:
            x = x.transpose(0, 1)
        c = self._current(x)
        params = (torch.stack([getattr(self, k).reshape(()) for k in self.trainable]).to(c.dtype)
                  if self.trainable else c.new_zeros(0))
        spikes = torch.ops.ift_snn.recurrent_scan(c.contiguous(), self.weight.to(c.dtype), params, self._op_key,
                                                  self.method, self.truncation or 0)
        return spikes if self.batch_first else spikes.transpose(0, 1)

    def __setstate__(self, state: dict) -> None:  # unpickled in another process: register the model there
        super().__setstate__(state)
        _OP_MODELS.setdefault(self._op_key, (self.model, self.trainable, ()))

    def _eager_forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_tensor("input", x, 3, "(batch, time, features)" if self.batch_first else "(time, batch, features)")
        if x.dim() != 3:
            raise ValueError(f"RecurrentSpikingLayer takes a 3-D input (batch, time, features), got {tuple(x.shape)}")
        if not self.batch_first:
            x = x.transpose(0, 1)
        c = self._current(x)
        V = self.weight
        if V.dtype != c.dtype:
            raise TypeError(f"the recurrent weights are {V.dtype} but the input current is {c.dtype}: give both in one "
                            "dtype (layer.to(x.dtype))")
        state = None
        if self.stateful and self._state is not None:
            state = _check_state(self.model, self._state, c, "carried state")
        model = self.current_model()
        params = [getattr(self, k) for k in self.trainable]
        spikes, final = RecurrentScan.apply(c.contiguous(), V, state, model, self.method, self.truncation,
                                            self.trainable, *params)
        if self.stateful:
            self._state = final.detach()
        return spikes if self.batch_first else spikes.transpose(0, 1)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One time step: x (batch, features) -> spikes (batch, N), the state (the last spikes included) carried
        with its history, so that a loss over the steps back-propagates through all of them (exact for
        "exodus": the coupling V s[n-1] is an autograd op, the neuron's step its derived vector-Jacobian
        product). Steps t = 0, 1, ... give exactly the spikes of one call on the sequence."""
        x = _check_tensor("input", x, 2, "(batch, features)")
        c = self._current(x)
        state = self._step_state
        if state is not None:
            s_prev = state[state_names(self.model).index("s_prev")]
            c = c + s_prev @ self.weight.T
        method = EXODUS if get_method(self.method).reference else self.method
        live = {k: getattr(self, k) for k in self.trainable}
        spikes, final = spike_scan(self.model, c.unsqueeze(1), state=state, params=live, method=method)
        self._step_state = final
        return spikes.squeeze(1)


def _register_ops() -> bool:
    """``ift_snn::recurrent_scan`` and its backward as torch.library custom ops (as ``ift_snn::spike_scan``, see
    :mod:`ift_snn.integrations.torch`: the model by registry key, the trainable values as one tensor, the
    backward op recomputing the forward scan)."""
    if not COMPILABLE or hasattr(torch.ops.ift_snn, "recurrent_scan"):
        return COMPILABLE

    def trace_of(c, V, params, key):
        with _on_device(c):
            return recurrent.forward(_op_model(key, params), _as_array(c), _as_array(V.contiguous()), time_axis=1,
                                     copy=False)

    @torch.library.custom_op("ift_snn::recurrent_scan", mutates_args=())
    def _op(c: torch.Tensor, V: torch.Tensor, params: torch.Tensor, key: str, method: str,
            truncation: int) -> torch.Tensor:
        return _as_tensor(trace_of(c, V, params, key).s).clone()

    @_op.register_fake
    def _(c, V, params, key, method, truncation):
        return c.new_empty(c.shape)

    @torch.library.custom_op("ift_snn::recurrent_scan_backward", mutates_args=())
    def _backward_op(grad_s: torch.Tensor, c: torch.Tensor, V: torch.Tensor, params: torch.Tensor, key: str,
                     method: str, truncation: int) -> list[torch.Tensor]:
        trace = trace_of(c, V, params, key)
        names = _OP_MODELS[key][1]
        with _on_device(grad_s):
            grads = recurrent.backward(trace.model, trace, _as_array(grad_s.contiguous()), method,
                                       truncation or None, parameters=list(names))
            grad_c, grad_V = _as_tensor(grads.c).clone(), _as_tensor(grads.V).clone()
        grad_p = torch.tensor([grads.params[k] for k in names], dtype=params.dtype, device=params.device)
        return [grad_c, grad_V, grad_p]

    @_backward_op.register_fake
    def _(grad_s, c, V, params, key, method, truncation):
        return [c.new_empty(c.shape), V.new_empty(V.shape), params.new_empty(params.shape)]

    def setup(ctx, inputs, output):
        c, V, params, key, method, truncation = inputs
        ctx.key, ctx.method, ctx.truncation = key, method, truncation
        ctx.save_for_backward(c, V, params)

    def backward(ctx, grad_s):
        c, V, params = ctx.saved_tensors
        grad_c, grad_V, grad_p = torch.ops.ift_snn.recurrent_scan_backward(grad_s, c, V, params, ctx.key, ctx.method,
                                                                           ctx.truncation)
        return grad_c, grad_V, grad_p, None, None, None

    torch.library.register_autograd("ift_snn::recurrent_scan", backward, setup_context=setup)
    return True


_register_ops()


@torch.compiler.disable
def _run_uncompiled(layer: RecurrentSpikingLayer, x):
    """The recurrent layer under torch.compile: eager, a graph break here (fullgraph=True refuses, naming this)."""
    return layer._eager_forward(x)


def RLIF(alpha: float, neurons: int, in_features: int | None = None, theta: float = 1.0,  # noqa: N802
         **kw) -> RecurrentSpikingLayer:
    """A :class:`RecurrentSpikingLayer` of :func:`ift_snn.lif` neurons (snnTorch's RLeaky; Norse's LIFRecurrent
    without its input weights when ``in_features`` is None). Model keywords (reset, surrogate, theta_r, spike,
    u_min) go to the model, the rest to the layer."""
    model_kw = {k: kw.pop(k) for k in ("reset", "surrogate", "theta_r", "spike", "u_min", "reset_before_decay")
                if k in kw}
    return RecurrentSpikingLayer(lif(alpha, theta, **model_kw), neurons, in_features, **kw)


def from_snntorch_recurrent(neuron, *, method: str = "exodus") -> RecurrentSpikingLayer:
    """The :class:`RecurrentSpikingLayer` of an ``snntorch.RLeaky`` or ``snntorch.RSynaptic`` (reset by subtraction,
    ``all_to_all`` with ``linear_features`` or one-to-one), V a recurrent ``nn.Linear`` (weight and bias) or one
    weight per neuron:

        RLeaky      U[t] = beta U[t-1] + x[t] + V(S[t-1]) - R threshold                  ift_snn lif(beta)
        RSynaptic   I[t] = alpha I[t-1] + x[t] + V(S[t-1]),  U[t] = beta U[t-1] + I[t] - R threshold
                                                                   ift_snn cuba_lif(alpha_mem=beta, alpha_syn=alpha)

    The same spikes; snnTorch's gradient with ``method="slayer"`` (it detaches the reset R), the exact one by
    default. Their reset to zero also zeroes the step's input and recurrent current (neither ift_snn's models nor
    snnTorch's own Leaky), and convolutional recurrence have no equal here: refused."""
    from ..neurons.models import cuba_lif
    from .torch import snntorch_surrogate

    kind = type(neuron).__name__
    if kind not in ("RLeaky", "RSynaptic"):
        raise TypeError(f"from_snntorch_recurrent converts an snntorch.RLeaky or RSynaptic, got {kind}")
    if neuron.reset_mechanism != "subtract":
        raise ValueError(f"snntorch.{kind} reset_mechanism={neuron.reset_mechanism!r}: its reset to zero zeroes "
                         "the step's input and recurrent current too, which ift_snn's models do not; use 'subtract'")
    surrogate = snntorch_surrogate(neuron)
    rec = neuron.recurrent
    one_to_one = type(rec).__name__ == "RecurrentOneToOne"
    if not one_to_one and not isinstance(rec, nn.Linear):
        raise ValueError(f"snntorch.{kind} with a {type(rec).__name__} recurrence (convolutional) has no equal here")
    clamp = lambda v: min(max(float(torch.as_tensor(v)), 0.0), 1.0)  # noqa: E731  (snnTorch clamps its decays)
    theta = float(torch.as_tensor(neuron.threshold))
    if kind == "RLeaky":
        model = lif(clamp(neuron.beta), theta, surrogate=surrogate)
    else:
        model = cuba_lif(clamp(neuron.beta), clamp(neuron.alpha), theta, surrogate=surrogate)
    if one_to_one:
        V = torch.as_tensor(rec.V).detach().reshape(-1)
        n = V.numel()
        if n == 1:
            raise ValueError(f"snntorch.{kind} one-to-one with a scalar V: give the layer's size, e.g. "
                             "V=torch.full((N,), v), so that the number of neurons is known")
    else:
        n = rec.weight.shape[0]
    dtype = (V if one_to_one else rec.weight).dtype
    layer = RecurrentSpikingLayer(model, n, method=method, connectivity="one_to_one" if one_to_one else "all_to_all",
                                  bias=(not one_to_one) and rec.bias is not None, dtype=dtype)
    with torch.no_grad():
        if one_to_one:
            layer.v.copy_(V)
        else:
            layer.V.copy_(rec.weight.detach())
            if rec.bias is not None:
                layer.bias.copy_(rec.bias.detach())
    return layer
