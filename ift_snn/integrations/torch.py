"""PyTorch layers over ift_snn's scans: :class:`SpikingLayer`, :class:`SpikeScan`, :func:`spike_scan`.

Invariant: the layer's spikes are those of :func:`ift_snn.ops.forward` and its
gradients those of :func:`ift_snn.ops.backward` (``method="exodus"`` = BPTT
through the time loop with the same surrogate; ``"slayer"`` = the reset
detached; ``"bptt"`` = the float64 reference sweep, CPU only). Cost: one O(T)
scan per neuron each way; nothing is copied or transposed around them.

Layout. Tensors here are batch-major like sinabs: input currents
``(batch, time, *neurons)``, spikes of the same shape, initial membrane
``(batch, *neurons)``. The kernels read that layout in place
(:func:`ift_snn.ops.forward` with ``time_axis=1``: each batch element is a
C-contiguous (time, neurons) block, scanned as its own call), and the spikes
and gradients come back in it: no transposed copy of the input, of the spikes
or of the incoming gradient. A non-contiguous input is made contiguous once.

Arrays. CPU tensors go to the compiled CPU kernels as zero-copy NumPy views
(``tensor.detach().contiguous().numpy()``, back with ``torch.from_numpy``).
CUDA tensors go to the CuPy kernels as zero-copy CuPy arrays via DLPack
(``cupy.from_dlpack`` / ``torch.from_dlpack``), with CuPy's current stream
bound to PyTorch's current stream of that device (``cupy.cuda.ExternalStream``),
so nothing is copied to the host but the parameter-gradient scalars and the
finiteness checks. CUDA tensors need CuPy: ``pip install -e '.[gpu]' in the ift_snn checkout``.

After ``nn.Linear``: ``nn.Linear`` acts on the last axis, so ``(B, T, N_in) ->
Linear -> (B, T, N) -> SpikingLayer -> (B, T, N)`` needs nothing else.

After ``nn.Conv2d``: fold time into the batch for the convolution, unfold for
the spiking layer::

    x = ...                                   # (B, T, C, H, W) spikes or frames
    B, T = x.shape[:2]
    z = conv(x.flatten(0, 1))                 # (B*T, C, H, W) -> (B*T, C', H', W')
    z = z.unflatten(0, (B, T))                # (B, T, C', H', W')
    s = layer(z)                              # SpikingLayer: (B, T, C', H', W') spikes

Streaming state (``stateful=True``, every model). A call returns, besides the
spikes, the scan's state after its last step, (n_state, batch, *neurons) in the
order of :func:`ift_snn.state_names` (for LIF the last membrane u[T-1] and
spike s[T-1], whose reset is still pending; plus the synaptic filter state for
``cuba_lif``; the kernels' filter states for an SRM). The next call starts from
that state (:func:`ift_snn.ops.forward` with ``state=``), so two calls of T/2
give exactly the spikes of one call of T, for every model. The carried state is
detached: it is held fixed in the next call's backward (truncated BPTT at call
boundaries, like a detached hidden state in snnTorch or Norse). Its dL/dx0 is
derived and proved with the rest (:class:`ift_snn.ops.Gradients` ``state``);
:func:`spike_scan` takes a ``state`` tensor with gradient for whoever wants to
route it. Parameter gradients of a call hold its starting state fixed: for the
membrane models this equals one call with ``truncation`` at the call boundary;
for a filter parameter that the carried state depends on (``alpha_syn`` of
``cuba_lif``) it leaves out that dependence, as any detached state does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import numpy as np

try:
    import torch
    from torch import nn
    from torch.autograd.function import once_differentiable
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("ift_snn.integrations.torch needs PyTorch: pip install -e '.[torch]' in the ift_snn checkout") from exc

from ..methods import EXODUS, get_method
from .. import ops
from ..backends import cupy as cupy_backend
from ..neurons.models import (
    NeuronModel,
    chooses_scale,
    cuba_lif,
    if_neuron,
    lif,
)
from ..symbolic.stability import stable_default

__all__ = ["SpikeScan", "spike_scan", "SpikingLayer", "TimeFold", "LIF", "IF", "CUBALIF", "from_snntorch"]

_FLOATS = (torch.float32, torch.float64)
#: Half types: computed in float32 (the kernels' narrowest type), spikes returned in the input's type.
_HALVES = (torch.float16, torch.bfloat16)
_DEVICES = ("cpu", "cuda")
#: Keyword arguments of SpikingLayer (the rest of a constructor's keywords go to the model).
_LAYER_KW = ("method", "truncation", "train_alpha", "train_theta", "stateful", "record_states", "values",
             "batch_first", "neurons")


# ------------------------------------------------------------------ arrays
def _require_cupy():
    """CuPy, or an ImportError that says how to install it."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(
            "CUDA tensors need CuPy for the ift_snn GPU kernels: pip install -e '.[gpu]' in the ift_snn checkout (CuPy for CUDA 12), "
            "or move the tensors to the CPU"
        ) from exc
    return cupy


def _as_array(t: torch.Tensor):
    """Zero-copy NumPy (CPU) or CuPy (CUDA) view of a contiguous tensor."""
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    if t.device.type == "cuda":
        return _require_cupy().from_dlpack(t)
    return t.numpy()


def _as_tensor(x) -> torch.Tensor:
    """Zero-copy tensor of a NumPy or CuPy array."""
    if cupy_backend.is_cupy_array(x):
        return torch.from_dlpack(x)
    return torch.from_numpy(np.ascontiguousarray(x))


@contextlib.contextmanager
def _on_device(t: torch.Tensor):
    """For a CUDA tensor: CuPy on its device, on PyTorch's current stream there. Else nothing."""
    if t.device.type != "cuda":
        yield
        return
    cupy = _require_cupy()
    index = t.device.index if t.device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(index)
    with cupy.cuda.Device(index), cupy.cuda.ExternalStream(stream.cuda_stream, index):
        yield


# ------------------------------------------------------------------ checks
def _check_model(model: object) -> NeuronModel:
    if not isinstance(model, NeuronModel):
        raise TypeError(f"model must be a NeuronModel (e.g. ift_snn.lif(0.9)), got {type(model).__name__}")
    return model


def _check_method(method: object, truncation: object) -> int | None:
    get_method(method)  # a name or a Method; ValueError naming the methods otherwise
    return ops.check_truncation(truncation)


def _check_tensor(name: str, x: object, min_dim: int, layout: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.layout != torch.strided:
        raise TypeError(f"{name} is a {x.layout} tensor; ift_snn's kernels read dense tensors: pass x.to_dense()")
    if x.dtype not in _FLOATS + _HALVES:
        raise TypeError(f"{name} has dtype {x.dtype}; expected a floating type: float32 or float64 (float16 and "
                        "bfloat16 are computed in float32)")
    if x.dim() < min_dim:
        raise ValueError(f"{name} has shape {tuple(x.shape)} ({x.dim()} dims); expected {layout}")
    if x.device.type not in _DEVICES:
        raise ValueError(f"{name} is on device {x.device}; ift_snn runs on cpu (Numba) and cuda (CuPy) tensors")
    return x


def _check_input(a: object, u0: object) -> tuple[torch.Tensor, torch.Tensor | None]:
    a = _check_tensor("input", a, 2, "(batch, time, *neurons) with at least 2 dims")
    if a.shape[1] < 1:
        raise ValueError(f"input has shape {tuple(a.shape)}: the time axis (dim 1) is empty; expected T >= 1")
    if a.device.type == "cuda":
        _require_cupy()
    if u0 is None:
        return a, None
    if not isinstance(u0, torch.Tensor):
        raise TypeError(f"u0 must be a torch.Tensor (batch, *neurons) or None, got {type(u0).__name__}")
    if u0.device != a.device:
        raise ValueError(f"u0 is on device {u0.device} but the input is on {a.device}; put both on one device")
    u0 = _check_tensor("u0", u0, 0, "(batch, *neurons)")
    want = (a.shape[0], *a.shape[2:])
    if tuple(u0.shape) != want:
        raise ValueError(f"u0 has shape {tuple(u0.shape)}; expected (batch, *neurons) = {want} "
                         f"for an input of shape {tuple(a.shape)}")
    return a, u0.to(a.dtype)


def _layer_values(model: NeuronModel, values: Mapping | None) -> dict[str, torch.Tensor]:
    """{name: floating tensor} of a layer's ``values`` (numbers become 0-d tensors of the default dtype),
    each in the model's range (a per-neuron tensor at its least and largest value)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise TypeError(f"values must be a mapping {{parameter: number or tensor}}, got {type(values).__name__}")
    out = {}
    for k, v in values.items():
        if k not in model.parameter_names:
            raise ValueError(f"values has {k!r}, which is not a parameter of the {model.name} model "
                             f"(its parameters are {model.parameter_names})")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = torch.tensor(float(v), dtype=torch.get_default_dtype())
        elif isinstance(v, np.ndarray):
            v = torch.from_numpy(v)
        if not isinstance(v, torch.Tensor) or v.numel() == 0:
            raise TypeError(f"values[{k!r}] must be a number or a non-empty tensor, got {v!r:.80}")
        if not v.is_floating_point():
            v = v.to(torch.get_default_dtype())
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"values[{k!r}] holds NaN or inf; expected finite values")
        _with_params(model, {k: float(v.min())})
        _with_params(model, {k: float(v.max())})
        out[k] = v
    return out


def _with_params(model: NeuronModel, values: Mapping[str, float]) -> NeuronModel:
    """``model.with_params`` with an error that says where the values came from and what to do."""
    if not values:
        return model
    try:
        return model.with_params(**values)
    except (TypeError, ValueError) as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        raise type(exc)(
            f"the parameter values ({shown}) are not valid for the {model.name} model: {exc}. Keep trainable "
            "parameters in range, e.g. after each optimiser step: with torch.no_grad(): layer.alpha.clamp_(1e-3, 1.0)"
        ) from exc


def _check_params(model: NeuronModel, params: Mapping[str, torch.Tensor] | None, like: torch.Tensor):
    """(names, tensors) of ``params``: each a one-element tensor (one value for the layer) or one value per
    neuron, a tensor whose shape broadcasts to the neuron shape ``like.shape[2:]`` (shared over the batch)."""
    if not params:
        return (), ()
    unknown = set(params) - set(model.parameter_names)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}; the {model.name} model has {model.parameter_names}")
    names = tuple(params)
    tensors = []
    neurons = tuple(like.shape[2:])
    for k in names:
        p = params[k]
        if not isinstance(p, torch.Tensor) or not p.is_floating_point():
            raise TypeError(f"parameter {k} must be a floating torch.Tensor (one value, or one per neuron), got {p!r}")
        if p.device != like.device:
            raise ValueError(f"parameter {k} is on device {p.device} but the input is on {like.device}")
        if p.numel() != 1:
            try:
                fits = len(p.shape) <= len(neurons) and torch.broadcast_shapes(tuple(p.shape), neurons) == neurons
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(f"parameter {k} has shape {tuple(p.shape)}, which does not broadcast to the neuron "
                                 f"shape {neurons} of the input {tuple(like.shape)} (batch, time, *neurons); expected "
                                 "one value, or one per neuron")
        tensors.append(p)
    return names, tuple(tensors)


# ---------------------------------------------------------------- function
def _forward_trace(model: NeuronModel, a: torch.Tensor, u0, x0, per_neuron=None) -> ops.Trace:
    """ops.forward on zero-copy views of the batch-major tensors (time_axis=1), on a's device and stream;
    ``per_neuron``: {name: tensor of values per neuron (broadcasting to a.shape[2:])}."""
    with _on_device(a):
        per = {k: _as_array(v.to(a.dtype)) for k, v in (per_neuron or {}).items()}
        return ops.forward(model, _as_array(a), None if u0 is None else _as_array(u0), copy=False,
                           state=None if x0 is None else _as_array(x0), time_axis=1, params=per or None)


class SpikeScan(torch.autograd.Function):
    """One spiking layer as an autograd Function (use :func:`spike_scan` rather than ``apply``).

    ``apply(a, u0, x0, model, method, truncation, names, *params)``: ``a`` (batch,
    time, *neurons), ``u0`` (batch, *neurons) or None, ``x0`` the whole initial
    state (n_state, batch, *neurons) or None (not both), ``model`` already
    holding the values of the one-element ``params`` (these only route dL/dp);
    a param with more values holds one per neuron (broadcasting to ``a.shape[2:]``),
    read by the kernels as a per-neuron vector, its dL/dp summed over the batch
    (and over whatever it broadcasts along). ``names`` name ``params``. Returns (spikes (batch, time, *neurons), the state after
    the last step (n_state, batch, *neurons), the membrane u (batch, time,
    *neurons)); the last two not differentiable.
    """

    @staticmethod
    def forward(ctx, a, u0, x0, model, method, truncation, names, *params):
        a_in = a.detach().contiguous()  # (batch, time, *neurons): read in place by the kernels (time_axis=1)
        per = {k: p.detach() for k, p in zip(names, params) if p.numel() != 1}
        trace = _forward_trace(model, a_in, u0, x0, per)
        with _on_device(a):
            s = _as_tensor(trace.s)
            final = _as_tensor(trace.state)
            u = _as_tensor(trace.u)
        ctx.trace, ctx.model, ctx.method, ctx.truncation = trace, model, method, truncation
        ctx.param_like = [(p.dtype, p.device, p.shape) for p in params]
        ctx.names = names
        # the trace holds views of these (no copy of the input): saving them makes PyTorch refuse a
        # backward after in-place edits of the input or the spikes
        ctx.save_for_backward(a_in, s)
        # the state after a one-step call carries the gradient to the step before it (stepping a layer: BPTT
        # through the chain of steps, symbolic/step.py); after a longer call it is detached (truncated BPTT)
        ctx.mark_non_differentiable(*((u,) if a.shape[1] == 1 else (final, u)))
        # the state and the membrane have no gradient: no zero tensors of their size made for them in backward
        # (materialising the (batch, time, *neurons) membrane's cost 15-20% of a backward)
        ctx.set_materialize_grads(False)
        return s, final, u

    @staticmethod
    def backward(ctx, grad_s, grad_final, grad_u):
        if torch.is_grad_enabled():  # create_graph=True: the gradient would silently have no graph of its own
            raise RuntimeError("ift_snn's spike scan has first derivatives only: its backward is not differentiable "
                               "(double backward, create_graph=True, e.g. gradient penalties or MAML, is not "
                               "supported); call backward() / autograd.grad without create_graph")
        return SpikeScan._first_order(ctx, grad_s, grad_final, grad_u)

    @staticmethod
    @once_differentiable
    def _first_order(ctx, grad_s, grad_final, grad_u):
        a_in, _ = ctx.saved_tensors  # (the version check)
        needs = ctx.needs_input_grad
        if grad_s is None and grad_final is None:  # neither reached a loss (grads are not materialised)
            return (None,) * (7 + len(ctx.names))
        if grad_s is None:
            grad_s = torch.zeros_like(a_in)
        with _on_device(grad_s):
            g = _as_array(grad_s.contiguous())
            lam = None if grad_final is None else _as_array(grad_final.to(grad_s.dtype).contiguous())
            grads = ops.backward(ctx.model, ctx.trace, g, method=ctx.method, truncation=ctx.truncation,
                                 parameters=[k for k, need in zip(ctx.names, needs[7:]) if need], grad_state=lam)
            grad_a = _as_tensor(grads.a) if needs[0] else None
            grad_u0 = _as_tensor(grads.u0) if needs[1] else None
            grad_x0 = _as_tensor(grads.state) if needs[2] else None
        grad_p = [_param_grad(grads.params[k], dtype, device, shape) if need else None
                  for k, (dtype, device, shape), need in zip(ctx.names, ctx.param_like, needs[7:])]
        return (grad_a, grad_u0, grad_x0, None, None, None, None, *grad_p)


def _param_grad(value, dtype, device, shape) -> torch.Tensor:
    """dL/dp as a tensor of the parameter's shape: a float (a one-element parameter), or the per-(batch,
    neuron) array of a per-neuron one, summed over what the parameter broadcasts along (the batch)."""
    if isinstance(value, float):
        return torch.tensor(value, dtype=dtype, device=device).reshape(shape)
    return _as_tensor(value).sum_to_size(shape).to(dtype)  # float64 (batch, *neurons), summed


def _check_state(model: NeuronModel, x0: object, a: torch.Tensor, what: str = "state") -> torch.Tensor:
    """x0 as (n_state, batch, *neurons) in a's dtype, or an error naming both shapes."""
    names = ops.state_names(model)
    want = (len(names), a.shape[0], *a.shape[2:])
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor {want} (rows {names}) or None, got {type(x0).__name__}")
    if x0.device != a.device:
        raise ValueError(f"{what} is on device {x0.device} but the input is on {a.device}; put both on one device")
    x0 = _check_tensor(what, x0, 1, f"(n_state, batch, *neurons) = {want}")
    if tuple(x0.shape) != want:
        raise ValueError(
            f"{what} has shape {tuple(x0.shape)}; expected (n_state, batch, *neurons) = {want}: the {len(names)} "
            f"state values {names} of {model.name} for an input of shape {tuple(a.shape)}"
        )
    return x0.to(a.dtype)


def spike_scan(
    model: NeuronModel,
    a: torch.Tensor,
    u0: torch.Tensor | None = None,
    *,
    state: torch.Tensor | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
    method: str = "exodus",
    truncation: int | None = None,
    record: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Spikes of one layer of ``model`` neurons, differentiable by ``method``.

    s = f(u), u the membrane of ``model`` driven by ``a`` (docs/MATH.md section 1);
    dL/da, dL/du0 (or dL/dx0) and dL/dp for each tensor in ``params`` by
    :func:`ift_snn.ops.backward`. Cost O(T) per neuron each way.

    ``a``: (batch, time, *neurons) float32/float64 on cpu or cuda (float16 and bfloat16 are computed in
    float32 and the spikes returned in the input's type, the state in float32); ``u0``:
    initial membrane (batch, *neurons) on the same device (default 0);
    ``state``: instead of u0, the whole initial state (n_state, batch, *neurons)
    in the order of :func:`ift_snn.state_names`, e.g. the state a previous call
    returned; ``params``: {name: tensor} values that replace the model's,
    with gradients: a one-element tensor, or one value per neuron (a tensor whose shape broadcasts to
    ``a.shape[2:]``, shared over the batch; its gradient has its shape). Returns (spikes like ``a``, the state
    after the last step (n_state, batch, *neurons): pass it as the next call's ``state`` to continue the
    sequence; after a call of one step (T = 1) it carries the gradient back into that step (stepping with
    the state carried is BPTT, :meth:`SpikingLayer.step`), after a longer call it has none (the next call
    holds it fixed: truncated BPTT at call boundaries)). ``record=True`` appends the membrane
    u (batch, time, *neurons), without gradient: u[n] is the value compared with
    theta at step n (before that step's spike resets it).
    """
    model = _check_model(model)
    truncation = _check_method(method, truncation)
    if isinstance(a, torch.Tensor) and a.dtype in _HALVES:
        # float16 / bfloat16: the scan in float32 (a half membrane would lose the threshold crossings and the
        # exact gradient), the spikes (0, 1 or counts: exact in either) back in the input's type; the state
        # stays float32, so a carried membrane is not rounded between calls
        single = lambda t: t.float() if isinstance(t, torch.Tensor) and t.dtype in _HALVES else t  # noqa: E731
        out = spike_scan(model, a.float(), single(u0), state=single(state), params=params, method=method,
                         truncation=truncation, record=record)
        return (out[0].to(a.dtype), *out[1:])
    a, u0 = _check_input(a, u0)
    if state is not None:
        if u0 is not None:
            raise ValueError("give u0 or state, not both: state already holds the initial membrane")
        state = _check_state(model, state, a)
        if get_method(method).reference:
            raise ValueError("method='bptt' (the float64 reference) starts from u0, not from a whole state; "
                             "use method='exodus' (the same gradient)")
    if get_method(method).reference and a.device.type != "cpu":
        raise TypeError(f"method='bptt' is the float64 CPU reference; the input is on {a.device}: "
                        "use method='exodus' (the same gradient) or CPU tensors")
    names, tensors = _check_params(model, params, a)
    # (per-neuron values are checked by ops.forward, which names the parameter and the value out of range)
    model = _with_params(model, {k: float(p.detach()) for k, p in zip(names, tensors) if p.numel() == 1})
    spikes, final, u = SpikeScan.apply(a, u0, state, model, method, truncation, names, *tensors)
    # u is a view of what the backward reads: a copy for the caller, who may change it in place
    return (spikes, final, u.clone()) if record else (spikes, final)


# ------------------------------------------------------- torch.compile
# Under torch.compile the scan is a torch.library custom op: opaque to the compiler (it runs the same
# generated kernels through ops.forward / ops.backward), with a fake-tensor shape function and its autograd
# formula registered, so that ``torch.compile(layer, fullgraph=True)`` captures a whole network. The model
# reaches the op as a string key of a registry (ops take tensors, numbers and strings); the trainable
# parameters as one tensor, whose values rebuild the model inside the op. The backward op recomputes the
# forward scan (a Trace is not a tensor) before the reverse scan: one extra forward per backward, only
# under torch.compile; eager calls keep :class:`SpikeScan`.
_OP_MODELS: dict[str, tuple[NeuronModel, tuple[str, ...], tuple[str, ...]]] = {}


def _op_key(model: NeuronModel, names: tuple[str, ...], vector_names: tuple[str, ...] = ()) -> str:
    """The registry key of (model, trainable one-value names, per-neuron names): a sha256 of them, the model
    kept under it."""
    import hashlib
    import json

    from ..neurons.models import model_to_dict

    parts = [model_to_dict(model), list(names)] + ([list(vector_names)] if vector_names else [])
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    _OP_MODELS[key] = (model, tuple(names), tuple(vector_names))
    return key


def _op_model(key: str, params: torch.Tensor) -> NeuronModel:
    model, names, _ = _OP_MODELS[key]
    return _with_params(model, dict(zip(names, params.detach().double().tolist())))


def _op_trace(a, u0, x0, params, per, key):
    return _forward_trace(_op_model(key, params), a, u0, x0, dict(zip(_OP_MODELS[key][2], per)))


def _register_ops() -> bool:
    """Register the custom ops (torch.library.custom_op, PyTorch 2.4 and later); False where it is missing."""
    if not hasattr(torch.library, "custom_op") or hasattr(torch.ops.ift_snn, "spike_scan"):
        return hasattr(torch.library, "custom_op")

    @torch.library.custom_op("ift_snn::spike_scan", mutates_args=())
    def _scan_op(a: torch.Tensor, u0: torch.Tensor | None, x0: torch.Tensor | None, params: torch.Tensor,
                 per: list[torch.Tensor], key: str, method: str, truncation: int) -> tuple[torch.Tensor, torch.Tensor]:
        trace = _op_trace(a, u0, x0, params, per, key)
        return _as_tensor(trace.s).clone(), _as_tensor(trace.state).clone()

    @_scan_op.register_fake
    def _(a, u0, x0, params, per, key, method, truncation):
        n_state = len(ops.state_names(_OP_MODELS[key][0]))
        return a.new_empty(a.shape), a.new_empty((n_state, a.shape[0], *a.shape[2:]))

    @torch.library.custom_op("ift_snn::spike_scan_backward", mutates_args=())
    def _scan_backward_op(grad_s: torch.Tensor, a: torch.Tensor, u0: torch.Tensor | None, x0: torch.Tensor | None,
                          params: torch.Tensor, per: list[torch.Tensor], key: str, method: str,
                          truncation: int) -> list[torch.Tensor]:
        trace = _op_trace(a, u0, x0, params, per, key)
        _, names, vector_names = _OP_MODELS[key]
        with _on_device(grad_s):
            grads = ops.backward(trace.model, trace, _as_array(grad_s.contiguous()), method=method,
                                 truncation=truncation or None, parameters=[*names, *vector_names])
            grad_a = _as_tensor(grads.a).clone()
            grad_u0 = _as_tensor(grads.u0).clone() if u0 is not None else a.new_empty(0)
            grad_x0 = _as_tensor(grads.state).clone() if x0 is not None else a.new_empty(0)
        grad_p = torch.tensor([grads.params[k] for k in names], dtype=params.dtype, device=params.device)
        grad_per = [_param_grad(grads.params[k], p.dtype, p.device, p.shape) for k, p in zip(vector_names, per)]
        return [grad_a, grad_u0, grad_x0, grad_p, *grad_per]

    @_scan_backward_op.register_fake
    def _(grad_s, a, u0, x0, params, per, key, method, truncation):
        return [a.new_empty(a.shape), a.new_empty(u0.shape if u0 is not None else (0,)),
                a.new_empty(x0.shape if x0 is not None else (0,)), params.new_empty(params.shape),
                *[p.new_empty(p.shape) for p in per]]

    def _scan_setup(ctx, inputs, output):
        a, u0, x0, params, per, key, method, truncation = inputs
        ctx.key, ctx.method, ctx.truncation = key, method, truncation
        ctx.has_u0, ctx.has_x0, ctx.n_per = u0 is not None, x0 is not None, len(per)
        ctx.save_for_backward(a, params, *per, *([u0] if u0 is not None else []), *([x0] if x0 is not None else []))

    def _scan_backward(ctx, grad_s, grad_final):
        a, params, *rest = ctx.saved_tensors
        per, rest = rest[:ctx.n_per], rest[ctx.n_per:]
        u0 = rest.pop(0) if ctx.has_u0 else None
        x0 = rest.pop(0) if ctx.has_x0 else None
        grad_a, grad_u0, grad_x0, grad_p, *grad_per = torch.ops.ift_snn.spike_scan_backward(
            grad_s, a, u0, x0, params, list(per), ctx.key, ctx.method, ctx.truncation)
        return (grad_a, grad_u0 if ctx.has_u0 else None, grad_x0 if ctx.has_x0 else None, grad_p, list(grad_per),
                None, None, None)

    torch.library.register_autograd("ift_snn::spike_scan", _scan_backward, setup_context=_scan_setup)
    return True


#: Whether the layer can run under torch.compile (the custom ops need PyTorch 2.4 or later).
COMPILABLE = _register_ops()


# ------------------------------------------------------------------- layer
class SpikingLayer(nn.Module):
    """A layer of spiking neurons of any :class:`~ift_snn.neurons.models.NeuronModel`.

    ``forward(x, u0=None)``: x (batch, time, *neurons) input currents ->
    spikes of the same shape, differentiable by ``method`` ("exodus" exact =
    BPTT, "slayer", "bptt"), with ``truncation`` passed to
    :func:`ift_snn.ops.backward`. ``train_alpha`` makes every parameter whose
    name starts with "alpha" an ``nn.Parameter`` (``layer.alpha`` or
    ``layer.alpha_mem`` / ``layer.alpha_syn``), ``train_theta`` the threshold
    (``layer.theta``; the reset amount follows it unless the model has its own
    theta_r). Their values rebuild the model before each call; values out of
    range raise a ValueError naming them.

    ``values``: {parameter: value} replacing the model's: a number, or a tensor with one value per neuron
    (its shape broadcasting to the input's neuron shape ``x.shape[2:]``, shared over the batch; e.g.
    ``values={"alpha": torch.full((128,), 0.9)}``, or ``LIF(torch.full((128,), 0.9))``). A trainable
    per-neuron parameter is an ``nn.Parameter`` of that shape, with dL/dp per neuron; a fixed one a buffer.
    The kernels read per-neuron values as vectors (built once per set of such parameters).

    ``record_states=True`` keeps the membrane of the last call in ``layer.recordings["v_mem"]``
    (batch, time, *neurons), without gradient.

    ``stateful=True`` carries the scan's whole state from one call to the next
    (every model; exact, detached at the boundary, see the module docstring);
    ``layer.state`` is the carried state (n_state, batch, *neurons) or None,
    :meth:`reset_states` forgets it. An explicit ``u0`` starts a call from that
    membrane (and zero filter states) instead.

    Layout, declared as in ``nn.RNN``: ``batch_first=True`` (the default) reads x as (batch, time, *neurons),
    ``batch_first=False`` as (time, batch, *neurons), the layout of SpikingJelly's multi-step mode and of
    ``nn.RNN``; spikes come back in the input's layout. ``neurons``: the neuron shape (e.g. ``(128,)`` or
    ``(16, 8, 8)``), checked on every call: an input whose trailing dimensions are not it is refused naming
    both readings. Without it a 4-D input, which is also what one frame of a ``Conv2d`` (batch, channels, H, W)
    looks like, is read as (batch, time, H, W) with a warning once per layer: wrap frame-wise layers in
    :class:`TimeFold` and declare ``neurons``.
    """

    def __init__(
        self,
        model: NeuronModel,
        method: str = "exodus",
        truncation: int | None = None,
        train_alpha: bool = False,
        train_theta: bool = False,
        stateful: bool = False,
        record_states: bool = False,
        values: Mapping[str, float | torch.Tensor] | None = None,
        batch_first: bool = True,
        neurons: tuple[int, ...] | int | None = None,
    ) -> None:
        super().__init__()
        model = _check_model(model)
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first={batch_first!r} must be True ((batch, time, *neurons)) or False "
                            "((time, batch, *neurons))")
        self.batch_first = batch_first
        if neurons is not None:
            shape = (neurons,) if isinstance(neurons, int) else tuple(neurons)
            if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
                raise ValueError(f"neurons={neurons!r} must be the neuron shape: positive ints, e.g. (128,)")
            neurons = shape
        self.neurons = neurons
        self._warned_4d = False
        given = _layer_values(model, values)
        model = _with_params(model, {k: float(v) for k, v in given.items() if v.numel() == 1})
        self.model = model
        self.truncation = _check_method(method, truncation)
        self.method = method
        names = []
        if train_alpha:
            alphas = [k for k in model.parameter_names if k.startswith("alpha")]
            if not alphas:
                raise ValueError(f"train_alpha=True but the {model.name} model has no alpha parameter "
                                 f"(its parameters are {model.parameter_names})")
            names += alphas
        if train_theta:
            names.append("theta")
        self.trainable = tuple(names)
        scalars = dict(model.params)
        for k in names:
            start = given[k] if k in given else torch.tensor(scalars[k], dtype=torch.get_default_dtype())
            self.register_parameter(k, nn.Parameter(start.detach().clone()))
        #: Parameters with fixed values per neuron (buffers); the trainable ones are in ``trainable``.
        self.per_neuron = tuple(k for k, v in given.items() if v.numel() != 1 and k not in names)
        for k in self.per_neuron:
            self.register_buffer(k, given[k].detach().clone())
        if stateful and get_method(method).reference:
            raise ValueError("stateful=True needs method='exodus' or 'slayer': method='bptt' (the float64 "
                             "reference) starts every call from u0, not from a carried state")
        self.stateful = bool(stateful)
        self._state: torch.Tensor | None = None
        self._step_state: torch.Tensor | None = None  # the state :meth:`step` carries
        self.record_states = bool(record_states)
        #: The key of (model, trainable names) in the custom op's registry, for torch.compile (made here: the
        #: compiler does not trace the hashing of a model).
        self._op_scalar, self._op_vector = self._op_names()
        self._op_key = _op_key(self.model, self._op_scalar, self._op_vector)
        #: ``record_states=True``: {"v_mem": the membrane (batch, time, *neurons) of the last call}, without
        #: gradient (as sinabs' ``recordings``; u[n] is the value compared with theta at step n).
        self.recordings: dict[str, torch.Tensor] = {}

    def __setstate__(self, state: dict) -> None:  # unpickled in another process: register the model there
        super().__setstate__(state)
        _OP_MODELS.setdefault(self._op_key, (self.model, *self._op_names()))

    def _op_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(trainable one-value parameters, per-neuron parameters) as the custom op takes them."""
        vector = tuple(k for k in self.trainable + self.per_neuron if getattr(self, k).numel() != 1)
        return tuple(k for k in self.trainable if k not in vector), vector

    @property
    def state(self) -> torch.Tensor | None:
        """The carried state (n_state, batch, *neurons), rows :func:`ift_snn.state_names` of the model; or None."""
        return self._state

    def current_model(self) -> NeuronModel:
        """The model with the trainable parameters' present values (those given per neuron: see
        :meth:`parameter_values`)."""
        shared = {k: float(getattr(self, k).detach()) for k in self.trainable if getattr(self, k).numel() == 1}
        return _with_params(self.model, shared)

    def parameter_values(self) -> dict[str, torch.Tensor]:
        """{name: value} of every parameter of the model, detached: a 0-d tensor, or the tensor of values per
        neuron of a per-neuron parameter."""
        own = self.trainable + self.per_neuron
        return {k: (getattr(self, k).detach() if k in own else torch.tensor(v)) for k, v in self.model.params}

    def _live(self) -> dict[str, torch.Tensor]:
        """The tensors that replace the model's values in a call: trainable and per-neuron parameters."""
        return {k: getattr(self, k) for k in self.trainable + self.per_neuron}

    def reset_states(self) -> None:
        """Forget the carried state (of ``stateful=True`` calls and of :meth:`step`): the next call starts from
        u0 = 0 (and zero filter states)."""
        self._state = None
        self._step_state = None

    def extra_repr(self) -> str:
        parts = [repr(self.model), f"method={self.method!r}"]
        if self.truncation is not None:
            parts.append(f"truncation={self.truncation}")
        if self.trainable:
            parts.append(f"trainable={self.trainable}")
        if self.stateful:
            parts.append("stateful=True")
        if not self.batch_first:
            parts.append("batch_first=False")
        if self.neurons is not None:
            parts.append(f"neurons={self.neurons}")
        return ", ".join(parts)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """x as (batch, time, *neurons): checked against the declared layout and neuron shape."""
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            return x  # (the input checks say what is wrong)
        order = "(batch, time, *neurons)" if self.batch_first else "(time, batch, *neurons)"
        if self.neurons is not None and tuple(x.shape[2:]) != self.neurons:
            other = tuple(x.shape[1:])
            hint = (f"; it would fit as one step of {tuple(x.shape)} = (batch, *neurons): use layer.step(x), or "
                    "TimeFold for frame-wise layers before it") if other == self.neurons else ""
            raise ValueError(f"SpikingLayer declared neurons={self.neurons} and layout {order}, but the input has shape "
                             f"{tuple(x.shape)}: read that way its neurons are {tuple(x.shape[2:])}{hint}")
        if self.neurons is None and x.dim() == 4 and not self._warned_4d:
            import warnings

            self._warned_4d = True
            b, t = (0, 1) if self.batch_first else (1, 0)
            warnings.warn(f"SpikingLayer reads the 4-D input {tuple(x.shape)} as {order} with batch {x.shape[b]}, "
                          f"time {x.shape[t]} and neurons {tuple(x.shape[2:])}; if it is one frame of a Conv2d "
                          f"(batch, channels, H, W), the channels are being read as time: give the layer a time "
                          "axis (TimeFold(conv) on (batch, time, channels, H, W)) and declare neurons=(C, H, W)",
                          stacklevel=3)
        return x if self.batch_first else x.transpose(0, 1)

    def forward(self, x: torch.Tensor, u0: torch.Tensor | None = None) -> torch.Tensor:
        if torch.compiler.is_compiling():
            if (self.stateful or self.record_states or get_method(self.method).reference
                    or getattr(x, "dtype", None) not in _FLOATS):
                # what the custom op does not take (a carried state, recordings, the float64 reference, half
                # types) runs uncompiled: a graph break around this layer, instead of Dynamo tracing its Python
                return _run_uncompiled(self, x, u0)
            x = self._layout(x)
            out = self._compiled_forward(x, u0)
            return out if self.batch_first else out.transpose(0, 1)
        return self._eager_forward(x, u0)

    def _eager_forward(self, x: torch.Tensor, u0: torch.Tensor | None = None) -> torch.Tensor:
        x = self._layout(x)
        x, _ = _check_input(x, None)
        if x.dim() == 2:
            import warnings

            warnings.warn(f"SpikingLayer reads the 2-D input {tuple(x.shape)} as (batch, time) of one neuron each; "
                          "for one time step of many neurons (batch, neurons) use layer.step(x)", stacklevel=2)
        live = self._live()
        state = None
        if self.stateful and u0 is None and self._state is not None:
            want = (x.shape[0], *x.shape[2:])
            have = tuple(self._state.shape[1:])
            if have != want or self._state.device != x.device:
                raise ValueError(
                    f"stateful SpikingLayer: the input has (batch, *neurons) = {want} on {x.device} but the "
                    f"carried state is for (batch, *neurons) = {have} on {self._state.device}; call "
                    "reset_states() to start a new stream"
                )
            state = self._state
        spikes, final, *u = spike_scan(self.model, x, u0, state=state, params=live, method=self.method,
                                       truncation=self.truncation, record=self.record_states)
        if self.stateful:
            self._state = final
        if self.record_states:
            self.recordings = {"v_mem": u[0] if self.batch_first else u[0].transpose(0, 1)}
        return spikes if self.batch_first else spikes.transpose(0, 1)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One time step, as the cells of snnTorch and Norse run: x (batch, *neurons) -> spikes (batch, *neurons),
        the whole scan state carried to the next call (``reset_states()`` starts over), so that steps t = 0, 1,
        ... give exactly the spikes of one call on the sequence.

        Differentiable: the carried state keeps its autograd history, so a loss over the steps
        back-propagates through all of them (BPTT: each step's vector-Jacobian product is derived from the
        forward step, :mod:`ift_snn.symbolic.step`; exact for method "exodus", the reset detached for "slayer";
        "bptt" steps as "exodus", the same gradient). As with a hidden state in snnTorch or Norse, the
        history grows with the steps: :meth:`detach_states` cuts it (truncated BPTT), :meth:`reset_states`
        starts over. On whole sequences ``forward`` is faster (one scan per call instead of one per step)."""
        x = _check_tensor("input", x, 1, "(batch, *neurons) with at least 1 dim")
        a = x.unsqueeze(1)
        state = self._step_state
        if state is not None and (tuple(state.shape[1:]) != (a.shape[0], *a.shape[2:]) or state.device != x.device):
            raise ValueError(f"SpikingLayer.step: the input has (batch, *neurons) = {tuple(x.shape)} but the carried "
                             f"state is for {tuple(state.shape[1:])}; call reset_states() to start a new stream")
        method = EXODUS if get_method(self.method).reference else self.method  # (the same gradient, stepped)
        spikes, final = spike_scan(self.model, a, state=state, params=self._live(), method=method)
        self._step_state = final
        return spikes.squeeze(1)

    def detach_states(self) -> None:
        """Keep the carried states' values but cut their autograd history (truncated BPTT at this step)."""
        if self._step_state is not None:
            self._step_state = self._step_state.detach()
        if self._state is not None:
            self._state = self._state.detach()

    def _compiled_forward(self, x: torch.Tensor, u0: torch.Tensor | None) -> torch.Tensor:
        """The layer as the custom op ``ift_snn::spike_scan`` (under torch.compile; module docstring there)."""
        if not COMPILABLE:
            raise NotImplementedError(f"torch.compile of the layer needs torch.library.custom_op (PyTorch 2.4 or "
                                      f"later); this is PyTorch {torch.__version__}")
        if self.stateful or self.record_states or get_method(self.method).reference or x.dtype not in _FLOATS:
            raise NotImplementedError(
                "under torch.compile the layer runs without stateful=True or record_states=True, with "
                "method 'exodus' or 'slayer', on float32/float64 inputs; use it uncompiled for those")
        params = (torch.stack([getattr(self, k).reshape(()) for k in self._op_scalar]).to(x.dtype)
                  if self._op_scalar else x.new_zeros(0))
        per = [getattr(self, k) for k in self._op_vector]
        spikes, _ = torch.ops.ift_snn.spike_scan(x.contiguous(), None if u0 is None else u0.to(x.dtype), None, params,
                                                 per, self._op_key, self.method, self.truncation or 0)
        return spikes


# ------------------------------------------------------------ constructors
@torch.compiler.disable
def _run_uncompiled(layer: SpikingLayer, x, u0):
    """A stateful or recording SpikingLayer (or method 'bptt', half inputs) under torch.compile: run eagerly, the
    compiler breaking its graph here (with fullgraph=True it refuses, naming this function)."""
    return layer._eager_forward(x, u0)


class TimeFold(nn.Module):
    """A frame-wise layer (``nn.Conv2d``, pooling, ``nn.BatchNorm2d`` ...) applied to every time step of a
    sequence: x (batch, time, *frame) -> module(x as (batch * time, *frame)) -> (batch, time, *out), or with
    ``batch_first=False`` (time, batch, *frame) likewise (SpikingJelly's ``SeqToANNContainer``). One call of
    ``module`` on all frames at once; exact (the module is applied to each frame independently)."""

    def __init__(self, module: nn.Module, batch_first: bool = True) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"TimeFold wraps an nn.Module, got {type(module).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first={batch_first!r} must be True or False")
        self.module = module
        self.batch_first = batch_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < 3:
            layout = "(batch, time, *frame)" if self.batch_first else "(time, batch, *frame)"
            raise ValueError(f"TimeFold expects {layout} with at least 3 dimensions, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        a, b = x.shape[:2]
        out = self.module(x.reshape(a * b, *x.shape[2:]))
        return out.reshape(a, b, *out.shape[1:])

    def extra_repr(self) -> str:
        return "" if self.batch_first else "batch_first=False"


#: What users of the peers write, and what it is called here.
_ALIASES = {"threshold": "theta", "spike_threshold": "theta", "beta": "alpha", "tau_mem": "alpha (= exp(-dt/tau))",
            "tau": "alpha (= exp(-dt/tau), or 1 - dt/tau as SpikingJelly and NIR step it)", "v_threshold": "theta",
            "decay_input": "a synaptic filter: CUBALIF(alpha_mem, alpha_syn)", "v_reset": "reset ('zero')",
            "reset_mechanism": "reset ('subtract' or 'zero')", "learn_beta": "train_alpha",
            "learn_threshold": "train_theta", "store_v_seq": "record_states (layer.recordings['v_mem'])"}


def _split(kw: dict, constructor, where: str) -> tuple[dict, dict]:
    """(layer keywords, model keywords: the keyword-only ones of ``constructor``); an unknown keyword raises a
    TypeError naming ``where``, the keywords it takes and, for a name of snnTorch or sinabs, the one to use."""
    import inspect

    model_kw = tuple(name for name, p in inspect.signature(constructor).parameters.items()
                     if p.kind is p.KEYWORD_ONLY)
    unknown = [k for k in kw if k not in _LAYER_KW + model_kw]
    if unknown:
        hints = [f"{k}: use {_ALIASES[k]}" for k in unknown if k in _ALIASES]
        raise TypeError(f"{where} got unexpected keyword(s) {', '.join(unknown)}"
                        + (f" ({'; '.join(hints)})" if hints else "")
                        + f"; it takes {', '.join(_LAYER_KW)} (the layer) and {', '.join(model_kw)} (the model)")
    layer = {k: kw.pop(k) for k in _LAYER_KW if k in kw}
    return layer, kw


def _build(constructor, where: str, positional: dict, kw: dict) -> SpikingLayer:
    """A SpikingLayer of ``constructor``'s model. A parameter given as a tensor (or array) of more than one
    value is per neuron: the model gets its first value, the layer all of them (``values``); a surrogate
    whose scale the constructor chooses gets the largest scale stable for every neuron's values."""
    layer, model_kw = _split(dict(kw), constructor, where)
    per = {}
    args = {**positional, **{k: v for k, v in model_kw.items() if k == "theta_r"}}
    for k, v in args.items():
        if isinstance(v, (torch.Tensor, np.ndarray)):
            t = torch.as_tensor(v)
            per[k] = t
            args[k] = float(t.reshape(-1)[0]) if t.numel() else v
    model_kw.update({k: v for k, v in args.items() if k == "theta_r"})
    model = constructor(*[args[k] for k in positional], **model_kw)
    values = {**per, **(layer.pop("values", None) or {})}
    if values and chooses_scale(model_kw.get("surrogate", "exponential")):
        model = stable_default(model, {k: torch.as_tensor(v).detach().cpu().double().numpy() for k, v in values.items()})
    return SpikingLayer(model, **layer, values=values or None)


def _needs(where: str, name: str, value, kw: dict, what: str = "the membrane's decay per step") -> None:
    """A TypeError naming ``name`` when it was not given, with the peers' spelling the caller used (``beta``,
    ``tau``) answered by the name used here."""
    if value is not None:
        return
    used = [k for k in kw if k in _ALIASES]
    hint = f" ({'; '.join(f'{k}: use {_ALIASES[k]}' for k in used)})" if used else ""
    raise TypeError(f"{where} needs {name}, {what} (0 < {name} <= 1; snnTorch's beta, exp(-dt/tau) for a time "
                    f"constant tau){hint}, e.g. {where[:-1]}{name}=0.9)")


def LIF(alpha: float | torch.Tensor | None = None, theta: float | torch.Tensor = 1.0, **kw) -> SpikingLayer:  # noqa: N802
    """SpikingLayer of :func:`ift_snn.lif` neurons; keywords go to the layer (method, truncation,
    train_alpha, train_theta, stateful, record_states, values, batch_first, neurons) or to the model (theta_r,
    reset_before_decay, spike, surrogate, reset, u_min). ``alpha``, ``theta`` (and ``theta_r``) may be tensors of
    one value per neuron (e.g. ``LIF(torch.full((128,), 0.9), train_alpha=True)``, as snnTorch's per-neuron
    ``beta``). The peers' keywords (``beta``, ``tau``, ``threshold``, ``learn_beta`` ...) are answered with the
    name used here."""
    _needs("LIF()", "alpha", alpha, kw)
    return _build(lif, "LIF()", {"alpha": alpha, "theta": theta}, kw)


def IF(theta: float | torch.Tensor = 1.0, **kw) -> SpikingLayer:  # noqa: N802
    """SpikingLayer of :func:`ift_snn.if_neuron` neurons (keywords and per-neuron tensors as for :func:`LIF`)."""
    return _build(if_neuron, "IF()", {"theta": theta}, kw)


def CUBALIF(alpha_mem: float | torch.Tensor | None = None, alpha_syn: float | torch.Tensor | None = None,  # noqa: N802
            theta: float | torch.Tensor = 1.0, **kw) -> SpikingLayer:
    """SpikingLayer of :func:`ift_snn.cuba_lif` neurons (keywords and per-neuron tensors as for :func:`LIF`)."""
    _needs("CUBALIF()", "alpha_mem", alpha_mem, kw)
    _needs("CUBALIF()", "alpha_syn", alpha_syn, kw, "the synaptic current's decay per step")
    return _build(cuba_lif, "CUBALIF()", {"alpha_mem": alpha_mem, "alpha_syn": alpha_syn, "theta": theta}, kw)


# -------------------------------------------------------------- conversion
#: snnTorch's surrogates (the closures snntorch.surrogate.<name>(...) returns) and their ift_snn equals: the same
#: derivative, checked in tests/test_torch.py against snnTorch's own backward.
_SNNTORCH_SURROGATES = {"atan": ("arctan", "alpha"), "fast_sigmoid": ("fast_sigmoid", "slope"),
                        "sigmoid": ("sigmoid", "slope")}


def snntorch_surrogate(neuron):
    """The ift_snn surrogate of an snnTorch neuron's ``spike_grad`` (``_SNNTORCH_SURROGATES``), after refusing,
    by name, the options that have no equal here (graded spikes, inhibition, state quantisation, the reset within
    the spiking step). Shared by :func:`from_snntorch` and the recurrent converter."""
    from ..neurons.surrogates import SURROGATES

    kind = type(neuron).__name__
    checks = {"graded spikes": float(torch.as_tensor(neuron.graded_spikes_factor)) != 1.0,
              "inhibition=True": bool(getattr(neuron, "inhibition", False)),
              "state_quant": bool(getattr(neuron, "state_quant", False)),
              "reset_delay=False (the reset within the spiking step)": not getattr(neuron, "reset_delay", True)}
    for what, present in checks.items():
        if present:
            raise ValueError(f"snntorch.{kind} with {what} has no equal in ift_snn's neurons")
    grad = neuron.spike_grad
    name = getattr(grad, "__qualname__", "").split(".")[0]
    if name not in _SNNTORCH_SURROGATES or not getattr(grad, "__closure__", None):
        raise ValueError(f"snntorch.{kind}'s surrogate {getattr(grad, '__qualname__', grad)!r} has no equal here; "
                         f"snnTorch's {', '.join(_SNNTORCH_SURROGATES)} have")
    ours, slope_name = _SNNTORCH_SURROGATES[name]
    constants = dict(zip(grad.__code__.co_freevars, (c.cell_contents for c in grad.__closure__)))
    return SURROGATES[ours](scale=1.0, slope=float(constants[slope_name]))


def from_snntorch(leaky, *, method: str = "exodus", stateful: bool = False) -> SpikingLayer:
    """A :class:`SpikingLayer` of the LIF neuron an ``snntorch.Leaky`` describes, for the whole time axis at once.

    snnTorch steps ``mem[t] = beta mem[t-1] + x[t] - R threshold`` with R = 1[mem[t-1] > threshold] (reset by
    subtraction) or ``mem[t] = beta (1 - R) mem[t-1] + x[t]`` (reset to zero), and ``spk[t] = 1[mem[t] >
    threshold]``: :func:`ift_snn.lif` with alpha = beta, theta = threshold, reset after decay. Its surrogate
    (``atan``, ``fast_sigmoid`` or ``sigmoid``) becomes ift_snn's ``arctan``, ``fast_sigmoid`` or ``sigmoid``
    of the same slope; ``learn_beta`` / ``learn_threshold`` become ``train_alpha`` / ``train_theta``. The
    layer takes (batch, time, *neurons) where snnTorch is called once per step. snnTorch's backward detaches
    the reset (its ``mem_reset`` is ``.detach()``-ed): that is ``method="slayer"`` here, which reproduces its
    gradients; the default ``"exodus"`` is the exact gradient of the same spikes. A per-neuron ``beta`` or
    ``threshold`` (a tensor of the neuron shape) becomes per-neuron values of the layer. Options with no equal
    here (graded spikes, inhibition, state quantisation, ``reset_delay=False``, another
    surrogate, ``reset_mechanism="none"``) raise ValueError naming them.
    """
    kind = type(leaky).__name__
    if kind != "Leaky" or not hasattr(leaky, "beta"):
        raise TypeError(f"from_snntorch converts an snntorch.Leaky, got {kind}")

    def value(name):  # a float, or a tensor of values per neuron
        t = torch.as_tensor(getattr(leaky, name)).detach()
        return float(t) if t.numel() == 1 else t.clone()

    if leaky.reset_mechanism not in ("subtract", "zero"):
        raise ValueError(f"snntorch.Leaky reset_mechanism={leaky.reset_mechanism!r}: ift_snn's LIF resets by "
                         "'subtract' or to 'zero'")
    surrogate = snntorch_surrogate(leaky)
    beta = value("beta")
    beta = min(max(beta, 0.0), 1.0) if isinstance(beta, float) else beta.clamp(0.0, 1.0)  # snnTorch clamps beta
    return LIF(beta, value("threshold"), reset=leaky.reset_mechanism, surrogate=surrogate, method=method,
               stateful=stateful, train_alpha=isinstance(leaky.beta, nn.Parameter),  # learn_beta=True
               train_theta=isinstance(leaky.threshold, nn.Parameter))
