"""The public array API: ``forward`` and ``backward`` with one method switch.

Layout: time on axis 0, ``a.shape == (T, *neurons)``; neurons are
independent once their input is known and are flattened internally to
(T, M), time-major and neuron-contiguous, which is what scans want. Or
batch-major with ``forward(..., time_axis=1)``: ``a.shape == (B, T, *rest)``,
read in place as B blocks of (T, prod(rest)).
float32 and float64 are preserved; other dtypes are refused.

Methods of :func:`backward` (all for the loss L with dL/ds = ``grad_s``):

``"exodus"``  exact (= BPTT) by the Implicit Function Theorem: one O(T)
              reverse scan per neuron (docs/MATH.md section 4).
``"slayer"``  SLAYER: the reset term dropped from the backward pass, i.e.
              BPTT with the reset detached. Not exact when spikes occur.
``"bptt"``    reverse-mode through the time loop, by the float64 reference
              sweep (``backends/reference.py``); O(T) for membrane models,
              O(T^2) for general kernels. The baseline the others are checked
              against.

``truncation=K`` (any method): the state crosses chunk boundaries of K
steps, its gradient does not (docs/MATH.md section 8, truncated BPTT).

Backends, chosen by the array type (``backend="auto"``): NumPy arrays run
the compiled CPU kernels generated from the derivation (Numba); CuPy arrays
the generated CUDA kernels; ``backend="numpy"`` (also the fallback without
Numba) the same generated kernels printed as vectorised NumPy. Every backend
runs one launcher (``backends/compiled.py``) and gets the same per-neuron
finals from the backward kernel: dL/du0, the parameter sums and the
stability diagnostics.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .methods import EXODUS, Method, get_method
from .methods import METHODS as _METHODS
from .backends import compiled, cpu, reference
from .backends import cupy as cupy_backend
from .neurons.models import NeuronModel
from .symbolic.stability import StabilityWarning
from .symbolic.recurrence import (
    DIAGNOSTIC,
    PARAMETER,
    STATE_GRAD,
    STATE_WHOLE,
    u_init_parameter_terms,
)
from .symbolic.system import STATE_IN

__all__ = [
    "Trace",
    "Gradients",
    "StabilityWarning",
    "GradientOverflowError",
    "NonFiniteError",
    "forward",
    "backward",
    "state_names",
    "METHODS",
    "BACKENDS",
    "STABILITY_RUN",
    "GROWTH_LIMIT",
]

BACKENDS = ("auto", "cpu", "numpy", "cupy")

#: The methods' names (:mod:`ift_snn.methods` holds them as objects; every function takes either).
METHODS = tuple(_METHODS)
#: A run of this many consecutive steps with |step factor| > 1 triggers a StabilityWarning...
STABILITY_RUN = 20
#: ...and so does a run of steps whose factors multiply to more than this (the carried adjoint
#: amplified 100x; LIF(0.9) with the exponential surrogate at scale 2 over 2000 steps reaches 1e4).
GROWTH_LIMIT = 100.0


class NonFiniteError(FloatingPointError):
    """forward produced a non-finite membrane or surrogate; the message names the step and neuron."""


class GradientOverflowError(FloatingPointError):
    """A backward pass produced inf or NaN; the message gives the step-factor diagnostic."""


@dataclass(frozen=True, eq=False)
class Trace:
    """What :func:`forward` returns and :func:`backward` needs.

    ``s`` spikes and ``u`` the membrane the spike function saw, both
    (T, *neurons) in the input dtype; ``a`` and ``u0`` are the inputs;
    ``mask`` is 1[not clipped] for models with ``u_min`` (else None).
    ``state`` is the forward scan's state after the last step, (n_state, *neurons) in the
    order of :func:`state_names` (pass it as ``forward(..., state=...)`` to continue the
    sequence); ``x0`` the state the scan started from (given, or the one u0 stands for).
    """

    model: NeuronModel
    a: np.ndarray
    s: np.ndarray
    u: np.ndarray
    u0: np.ndarray | None
    mask: np.ndarray | None = field(repr=False, default=None)
    sigma: np.ndarray | None = field(repr=False, default=None)
    backend: str = "numpy"
    state: np.ndarray | None = field(repr=False, default=None)
    x0: np.ndarray | None = field(repr=False, default=None)
    from_state: bool = False  # x0 was given (held fixed), not derived from u0
    #: 0: arrays are (T, *neurons); 1: batch-major (B, T, *rest), the neurons being (B, *rest).
    time_axis: int = 0
    #: Parameters given one value per neuron (``forward(..., params=...)``): {name: (M,) values}, flat.
    params: dict = field(repr=False, default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.s.shape


@dataclass(frozen=True, eq=False)
class Gradients:
    """Gradients of the loss: ``a`` (like the input), ``params`` {name: dL/dp} (a float; for a parameter
    given per neuron, an array of the neuron shape: dL/dp of each neuron's value),
    ``u0`` (*neurons), and the stability diagnostic: the largest |step factor|
    seen, the longest run of consecutive steps with |factor| > 1, and the
    largest product of |factors| over consecutive steps (the growth of the
    carried adjoint)."""

    a: np.ndarray
    params: dict
    u0: np.ndarray
    method: str
    max_step_factor: float
    longest_unstable_run: int
    max_growth: float = 1.0  # largest product of |step factors| over consecutive steps
    #: dL/dx0, the gradient of the initial state (n_state, *neurons), in the order of :func:`state_names`.
    state: np.ndarray | None = None


# ----------------------------------------------------------------- checks
def _all_finite(x) -> bool:
    """True when every entry of ``x`` is finite: its max and min are (NaN and inf propagate to them).

    Two reductions and no full-size temporary (0.6 ms for 4.9M float32 values on the 2-core machine,
    against 0.75 ms for isfinite().all() and 2.3 ms for a float64 sum).
    """
    if x.size == 0:
        return True
    return math.isfinite(float(x.max())) and math.isfinite(float(x.min()))


def _check_array(name: str, x: object, *, dtype: np.dtype | None = None, finite: bool = True):
    """x as a float32/float64 array (NumPy or CuPy), or a clear error. ``finite=False`` leaves the finiteness
    to the caller (a scan's guard, then :func:`_check_finite`): no pass over x here."""
    if cupy_backend.is_cupy_array(x):
        xp = cupy_backend.require_cupy()
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} has dtype {x.dtype}; expected float32 or float64 (cast it first)")
        if dtype is not None and x.dtype != dtype:
            x = x.astype(dtype)
        if finite:
            _check_finite(name, x)
        return x
    if not isinstance(x, np.ndarray):
        if type(x).__module__.split(".")[0] == "torch":
            raise TypeError(
                f"{name} is a torch.Tensor; use ift_snn.integrations.torch (SpikingLayer) for tensors, "
                "or pass a numpy / cupy array"
            )
        try:
            x = np.asarray(x)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise TypeError(f"{name} must be an array of floats, got {type(x).__name__}: {exc}") from None
    if x.dtype.kind == "f" and x.dtype.itemsize in (4, 8) and not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))  # big-endian (e.g. from a file): same values, native byte order
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} has dtype {x.dtype}; expected float32 or float64 (cast it first)")
    if dtype is not None and x.dtype != dtype:
        x = x.astype(dtype)
    if finite:
        _check_finite(name, x)
    return x


def _check_finite(name: str, x) -> None:
    """ValueError naming the first non-finite entry of the array ``x`` (the argument ``name``), if any."""
    if _all_finite(x):
        return
    if cupy_backend.is_cupy_array(x):
        raise ValueError(f"{name} contains NaN or inf; expected finite values")
    bad = np.argwhere(~np.isfinite(x))[0]
    raise ValueError(f"{name} contains NaN or inf (first at index {tuple(int(i) for i in bad)}); "
                     "expected finite values")


def _check_model(model: object) -> NeuronModel:
    if not isinstance(model, NeuronModel):
        raise TypeError(f"model must be a NeuronModel (e.g. ift_snn.lif(0.9)), got {type(model).__name__}")
    return model


# ---------------------------------------------------------------- forward
def _xp_of(x):
    return cupy_backend.require_cupy() if cupy_backend.is_cupy_array(x) else np


def _resolve_backend(backend: str, x) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    on_gpu = cupy_backend.is_cupy_array(x)
    if backend == "auto":
        return "cupy" if on_gpu else ("cpu" if cpu.available() else "numpy")
    if (backend == "cupy") != on_gpu:
        raise TypeError(f"backend={backend!r} needs {'cupy' if backend == 'cupy' else 'numpy'} arrays, "
                        f"got {type(x).__module__}.{type(x).__name__}")
    if backend == "cpu" and not cpu.available():
        raise ImportError("backend='cpu' needs Numba: pip install numba")
    return backend


def state_names(model: NeuronModel) -> tuple[str, ...]:
    """The rows of a state (``Trace.state``, ``forward(state=...)``, ``Gradients.state``): the forward
    scan's state, e.g. ("u_prev", "s_prev") for LIF (the last membrane and spike: the reset is still
    pending), plus "w_syn0" for cuba_lif (synaptic filter state), ("s_prev", "w_eps0", ..., "w_nu0", ...)
    for a general SRM (transposed direct form II states of its kernels)."""
    return tuple(st.name for st in compiled.recurrence(_check_model(model)).forward.state)


def _layout(shape: tuple[int, ...], time_axis: int) -> tuple[int, tuple[int, ...], tuple[int, ...] | None]:
    """(T, neuron shape, blocks) of an array with time on ``time_axis``: blocks = (B, N) for batch-major
    (time_axis=1, neurons (B, *rest), N = prod(rest)), None for time-major."""
    T = shape[time_axis]
    neurons = shape[:time_axis] + shape[time_axis + 1:]
    return T, neurons, (None if time_axis == 0 else (shape[0], math.prod(shape[2:])))


def _flat(x, T: int, M: int, blocks, xp):
    """x as the kernels' C-contiguous (T, M) (time-major) or (B, T, N) (batch-major) array."""
    return xp.ascontiguousarray(x.reshape((T, M) if blocks is None else (blocks[0], T, blocks[1])))


def _time_major(x, T: int, blocks, xp):
    """A (T, M) array of a kernel array in either layout (a copy for batch-major; for messages and the oracle)."""
    return x if blocks is None else xp.ascontiguousarray(x.transpose(1, 0, 2)).reshape(T, -1)


def _per_neuron(model: NeuronModel, params, neurons: tuple[int, ...], M: int, a):
    """{name: (M,) values in a's dtype and kind} of ``params``, each broadcast to the neuron shape; errors name
    the parameter, its shape or the value out of range (checked at each parameter's least and largest value:
    the ranges of the models are intervals)."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping {{name: values per neuron}}, got {type(params).__name__}")
    xp = _xp_of(a)
    out = {}
    for k, v in params.items():
        if k not in model.parameter_names:
            raise ValueError(f"params has {k!r}, which is not a parameter of the {model.name} model "
                             f"(its parameters are {model.parameter_names})")
        if cupy_backend.is_cupy_array(v) != cupy_backend.is_cupy_array(a):
            raise TypeError(f"params[{k!r}] and a must both be numpy arrays or both cupy arrays")
        v = _check_array(f"params[{k!r}]", v, dtype=a.dtype)
        try:
            b = xp.broadcast_to(v, neurons)
        except ValueError:
            raise ValueError(f"params[{k!r}] has shape {v.shape}, which does not broadcast to the neuron shape "
                             f"{neurons}; expected one value per neuron (or a shape that broadcasts to it)") from None
        out[k] = xp.ascontiguousarray(b).reshape(M)
        if M:
            for x in (float(out[k].min()), float(out[k].max())):
                try:
                    model.with_params(**{k: x})
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"params[{k!r}] holds {x!r}, out of range for the {model.name} model: {exc} "
                                     "(trained values: keep them in range, e.g. clamp them after each optimiser "
                                     "step)") from None
    return out


def forward(model: NeuronModel, a: np.ndarray, u0: np.ndarray | None = None, *, backend: str = "auto",
            copy: bool = True, state: np.ndarray | None = None, time_axis: int = 0,
            params: Mapping | None = None) -> Trace:
    """Simulate one layer of neurons over time. Layout first: ``a`` is time-major, (T, *neurons), unless
    ``time_axis=1`` says it is batch-first, (batch, T, *neurons) as in snnTorch, sinabs and PyTorch's
    batch-first layers; a batch-first array passed without it is read as T = batch steps.

    u[n] = sum_k eps[k] a[n-k] - sum_k nu[k] s[n-1-k], s[n] = f(u[n]) (or the
    membrane form with clip and reset to zero, see :mod:`ift_snn.neurons.models`).
    Cost O(T) per neuron: the linear part is one IIR filter, the reset one
    scan. ``a``: (T, *neurons) float32/float64, finite. ``u0``: initial
    membrane, shape ``neurons`` (default 0). The returned Trace keeps its own
    read-only copy of ``a`` (changing ``a`` later cannot change gradients);
    ``copy=False`` skips that copy for callers whose ``a`` is private and never
    modified (the PyTorch layer passes its input tensor, guarded by PyTorch's version
    counter). ``state``: the whole initial state (n_state, *neurons) instead of u0, e.g. the
    ``state`` of the previous call's Trace
    (streaming: two calls of T/2 give the spikes of one call of T); see :func:`state_names`.
    ``time_axis=1``: ``a`` is batch-major (B, T, *rest), as in PyTorch's batch-first layers; the
    neurons are then (B, *rest) (u0 of that shape, state (n_state, B, *rest)), the Trace's arrays
    keep the input's layout, and the kernels read it in place (no transposed copy).
    ``params``: {name: values} of parameters given one value per neuron, each an array that broadcasts to the
    neuron shape (``(*rest)`` broadcasts over the batch of a batch-major ``a``); they replace the model's
    value of that parameter, and :func:`backward` gives dL/dp per neuron. The kernels then read them as
    per-neuron vectors (one more kernel build per set of such parameters, not per value).
    """
    model = _check_model(model)
    a_in = a
    a = _check_array("input a", a, finite=False)  # (checked by the scan's guard, then _check_finite)
    backend = _resolve_backend(backend, a)
    xp = _xp_of(a)
    if time_axis not in (0, 1) or isinstance(time_axis, bool):
        raise ValueError(f"time_axis={time_axis!r}: expected 0 (a is (T, *neurons)) or 1 (a is (batch, T, ...))")
    if a.ndim < 1 + time_axis or a.shape[time_axis] < 1:
        want = "(T, *neurons)" if time_axis == 0 else "(batch, T, *neurons) for time_axis=1"
        raise ValueError(f"input a has shape {a.shape}; expected {want} with T >= 1")
    T, neurons, blocks = _layout(a.shape, time_axis)
    M = math.prod(neurons)
    a2 = _flat(a, T, M, blocks, xp)
    if copy and xp.may_share_memory(a2, a_in):
        # the Trace keeps its own copy: the caller may change a after forward (a *= 3); on the CPU in a buffer of
        # the workspace (no fresh pages to fault in each call, backends/compiled.Workspace)
        own = compiled.workspace.empty(a2.shape, a2.dtype) if xp is np else xp.empty_like(a2)
        own[...] = a2
        a2 = own
    u0_2 = None
    if u0 is not None:
        if cupy_backend.is_cupy_array(u0) != cupy_backend.is_cupy_array(a):
            raise TypeError("u0 and a must both be numpy arrays or both cupy arrays")
        u0 = _check_array("u0", u0, dtype=a.dtype)
        if u0.shape != neurons:
            raise ValueError(f"u0 has shape {u0.shape}; expected the neuron shape {neurons} of a {a.shape}")
        u0_2 = xp.array(u0.reshape(M), copy=True)
        u0 = u0_2.reshape(neurons)
    per = _per_neuron(model, params, neurons, M, a)
    names = state_names(model)
    if state is not None:
        if u0 is not None:
            raise ValueError("give u0 or state, not both: state already holds the initial membrane")
        if cupy_backend.is_cupy_array(state) != cupy_backend.is_cupy_array(a):
            raise TypeError("state and a must both be numpy arrays or both cupy arrays")
        state = _check_array("state", state, dtype=a.dtype)
        if state.shape != (len(names), *neurons):
            raise ValueError(f"state has shape {state.shape}; expected {(len(names), *neurons)}: the "
                             f"{len(names)} state values {names} of {model.name} for the neurons {neurons} of a "
                             f"{a.shape}")
        x0 = xp.array(state.reshape(len(names), M), copy=True)
    else:
        x0 = compiled.initial_state(model, u0_2, M, a.dtype, xp, per)
    vectors = {f"{STATE_IN}{n}": x0[k] for k, n in enumerate(names)}
    u, s, sigma, mask, final, finite = compiled.forward(model, a2, u0_2, backend, vectors=vectors, with_state=True,
                                                        per_neuron=per, with_check=True)
    if not finite:  # the guard saw inf or NaN: name the first, in a, else in u, else in sigma
        _check_finite("input a", a)
        sigma = _check_forward_finite(model, u, sigma, neurons, T, blocks)
    shape = lambda x: None if x is None else x.reshape(a.shape)  # noqa: E731
    record_a = a2.reshape(a.shape)
    for x in (record_a, u0):
        if isinstance(x, np.ndarray):
            x.flags.writeable = False
    x0 = x0.reshape(len(names), *neurons)
    if isinstance(x0, np.ndarray):
        x0.flags.writeable = False
    return Trace(model=model, a=record_a, s=shape(s), u=shape(u), u0=u0, mask=shape(mask), sigma=shape(sigma),
                 backend=backend, state=final.reshape(len(names), *neurons), x0=x0, from_state=state is not None,
                 time_axis=time_axis, params=per)


def _first_bad(x) -> tuple[int, int]:
    """(step, flat neuron) of the first non-finite entry of a (T, M) array."""
    xp = _xp_of(x)
    flat = int(xp.argmax(xp.logical_not(xp.isfinite(x)).reshape(-1)))
    return divmod(flat, x.shape[1])


def _check_forward_finite(model: NeuronModel, u, sigma, neurons, T: int, blocks=None):
    """sigma(u), after checking that it and the membrane are finite.

    Raises NonFiniteError naming the step and neuron of the first non-finite
    membrane (overflow) or surrogate value, so that nothing downstream sees
    inf or NaN. Cost: one pass over u and sigma. ``u`` and ``sigma`` are the kernels' arrays,
    (T, M) or batch-major (B, T, N) (``blocks`` = (B, N)); sigma comes back in that layout.
    """
    xp = _xp_of(u)
    if sigma is not None and _all_finite(u) and _all_finite(sigma):
        return sigma
    kernel_u = u
    u = _time_major(u, T, blocks, xp)  # the message names (step, neuron)
    where = lambda j: tuple(int(i) for i in np.unravel_index(j, neurons)) if neurons else ()  # noqa: E731
    if not bool(xp.isfinite(u).all()):
        n, j = _first_bad(u)
        raise NonFiniteError(
            f"membrane overflow at step {n}, neuron {where(j)}: u = {float(u[n, j])} in {u.dtype} (largest finite "
            f"{float(np.finfo(u.dtype).max):.3g}). The input is too large for the dtype or the kernels of "
            f"{model!r} grow over time; scale the input, use float64 or a decaying kernel"
        )
    if sigma is None:
        with np.errstate(all="ignore"):
            sigma = model.sigma(kernel_u)
    if not _all_finite(sigma):
        sigma_t = _time_major(sigma, T, blocks, xp)
        n, j = _first_bad(sigma_t)
        raise NonFiniteError(
            f"surrogate {model.surrogate!r} is {float(sigma_t[n, j])} at u = {float(u[n, j])!r} (step {n}, neuron "
            f"{where(j)}); a surrogate must be finite for every membrane value"
        )
    return sigma


# --------------------------------------------------------------- backward
def _parameter_gradients(model: NeuronModel, record: Trace, fins, u0, M: int, neurons, xp, dtype,
                         wanted: tuple[str, ...]) -> dict:
    """{p: dL/dp} for p in ``wanted`` from a backward kernel's per-neuron sums acc_<p>: summed over the neurons
    (a float) for a shared parameter, that neuron's sum (an array of the neuron shape) for one given per
    neuron; plus, when x0 stands for u0, the derived term through x0 (an SRM's eps state depends on its
    parameters)."""
    per = record.params
    params = {k: fins[PARAMETER + k].astype(xp.float64) if k in per
              else float(xp.sum(fins[PARAMETER + k], dtype=xp.float64)) for k in wanted}
    if not record.from_state and wanted:
        u_init = xp.zeros(M, dtype) if u0 is None else u0
        for k, v in u_init_parameter_terms(compiled.recurrence(model), fins, u_init, xp, model, per).items():
            if k in params:
                params[k] = params[k] + v
    return {k: v.reshape(neurons) if k in per else v for k, v in params.items()}


def check_truncation(truncation) -> int | None:
    """``truncation`` as the kernels take it: None, or an int >= 1 (TypeError / ValueError naming it otherwise),
    at most 2**31 - 1 (a chunk longer than any sequence is no truncation; the kernels take a 32-bit int, and
    10**30 overflowed)."""
    if truncation is None:
        return None
    if isinstance(truncation, bool) or not isinstance(truncation, (int, np.integer)):
        raise TypeError(f"truncation must be an int >= 1 or None, got {truncation!r}")
    if truncation < 1:
        raise ValueError(f"truncation={truncation} is out of range: expected an int >= 1 or None")
    return int(min(truncation, 2**31 - 1))


def _wanted_parameters(model: NeuronModel, parameters) -> tuple[str, ...]:
    """``backward``'s ``parameters`` as the tuple of names whose dL/dp is wanted (in the model's order)."""
    if parameters is True or parameters is False:
        return model.parameter_names if parameters else ()
    if isinstance(parameters, str) or not isinstance(parameters, Iterable):
        raise TypeError(f"parameters={parameters!r:.80}: expected True, False or a collection of parameter names "
                        f"(of {model.parameter_names})")
    names = list(parameters)
    unknown = [k for k in names if k not in model.parameter_names]
    if unknown:
        raise ValueError(f"parameters {unknown!r:.80} are not parameters of {model.name}; it has "
                         f"{', '.join(model.parameter_names)}")
    return tuple(k for k in model.parameter_names if k in names)


def _step_backward(model, record, g, method, grad_state, parameters, T, M, neurons, blocks, xp, dtype) -> Gradients:
    """backward of a one-step record with dL/dx1 = ``grad_state`` (see :func:`backward`)."""
    names = state_names(model)
    if T != 1:
        raise ValueError(f"grad_state (dL/d of the state after the last step) is taken for one-step records (T = 1, "
                         f"as SpikingLayer.step makes); this record has T = {T}. Over a sequence, the state after its "
                         "last step reaches no loss unless a next call reads it: step through it, or run one call")
    if method.reference:
        raise ValueError("grad_state needs method 'exodus' (exact) or 'slayer'; 'bptt' is the reference sweep of a "
                         "whole sequence")
    if cupy_backend.is_cupy_array(grad_state) != cupy_backend.is_cupy_array(record.s):
        raise TypeError("grad_state and the record must both hold numpy arrays or both cupy arrays")
    lam = _check_array("grad_state", grad_state, dtype=dtype)
    if lam.shape != (len(names), *neurons):
        raise ValueError(f"grad_state has shape {lam.shape}; expected (n_state, *neurons) = {(len(names), *neurons)} "
                         f"(the rows {names} of the record's state)")
    flat = lambda x: _flat(x, T, M, blocks, xp)  # noqa: E731
    u0 = None if record.u0 is None else record.u0.reshape(M)
    per = record.params
    x0 = (record.x0.reshape(len(names), M) if record.x0 is not None
          else compiled.initial_state(model, u0, M, dtype, xp, per))
    target = record.backend if record.backend in compiled.TARGETS else "numpy"
    with np.errstate(over="ignore", invalid="ignore"):
        grad_a, fins = compiled.step_backward(model, method, flat(record.a), flat(g), x0,
                                              xp.ascontiguousarray(lam.reshape(len(names), M)), target,
                                              per_neuron=per)
        grad_x0 = xp.stack([fins[STATE_GRAD + n] for n in names]) if names else xp.zeros((0, M), dtype)
        # dL/du0 = sum_k dL/dx0_k dx0_k/du0 (x0 is linear in u0: its coefficients are x0 of u0 = 1)
        coef = compiled.initial_state(model, xp.ones(M, dtype), M, dtype, xp, per)
        grad_u0 = (coef * grad_x0).sum(axis=0) if names else xp.zeros(M, dtype)
        # one step: nothing is truncated, so dL/dx0 is also the whole sequence's (the finals gw_<state>)
        whole = {**fins, **{STATE_WHOLE + n: fins[STATE_GRAD + n] for n in names}}
        params = _parameter_gradients(model, record, whole, u0, M, neurons, xp, dtype, parameters)
    bad = [k for k, v in (("dL/da", grad_a), ("dL/dx0", grad_x0)) if not _all_finite(v)]
    bad += [f"dL/d{k}" for k, v in params.items() if not (_all_finite(v) if k in per else math.isfinite(v))]
    if bad:
        raise GradientOverflowError(f"the {method} step's vector-Jacobian product overflowed to inf/NaN in "
                                    f"{', '.join(bad)}; the carried dL/dx1 (largest {float(xp.max(xp.abs(lam))):.3g}) "
                                    "or dL/ds is too large for the dtype: scale the loss or use float64")
    return Gradients(a=grad_a.reshape(record.shape), params=params, u0=grad_u0.reshape(neurons),
                     state=grad_x0.reshape(len(names), *neurons), method=method.name, max_step_factor=math.nan,
                     longest_unstable_run=0, max_growth=math.nan)


def _reference(model: NeuronModel, a, g, u0, truncation, per: Mapping):
    """(dL/da (T, M), {p: dL/dp}, dL/du0 (M,)) by the float64 reference sweep; with per-neuron parameters
    one sweep per neuron, each with that neuron's values (dL/dp per neuron for those, summed for the rest)."""
    if not per:
        ref = reference.bptt(model, a, g, u0, truncation=truncation)
        return ref.a, ref.params, ref.u0
    M = a.shape[1]
    grad_a, grad_u0 = np.empty((a.shape[0], M)), np.empty(M)
    params = {k: np.zeros(M) if k in per else 0.0 for k in model.parameter_names}
    for j in range(M):
        ref = reference.bptt(model.with_params(**{k: float(v[j]) for k, v in per.items()}), a[:, j:j + 1],
                             g[:, j:j + 1], None if u0 is None else u0[j:j + 1], truncation=truncation)
        grad_a[:, j], grad_u0[j] = ref.a[:, 0], ref.u0[0]
        for k, v in ref.params.items():
            if k in per:
                params[k][j] = v
            else:
                params[k] += v
    return grad_a, params, grad_u0


def backward(
    model: NeuronModel,
    record: Trace,
    grad_s: np.ndarray,
    method: str | Method = "exodus",
    truncation: int | None = None,
    *,
    parameters: bool | Collection[str] = True,
    grad_state: np.ndarray | None = None,
) -> Gradients:
    """Gradients of the loss given g = dL/ds, by the chosen method.

    Exact for ``method="exodus"``: solves (I + N^T F') e = g by one reverse scan
    per neuron; for LIF delta_n = sigma_n g_n + (alpha - theta_r sigma_n) delta_{n+1},
    dL/da = delta (docs/MATH.md section 4). O(T) per neuron, parallel over neurons.

    Preconditions: ``record`` came from :func:`forward` with the same model;
    ``grad_s`` has the record's shape and is finite; ``truncation`` is None or
    an int >= 1. Warns :class:`StabilityWarning` when |step factor| > 1 for :data:`STABILITY_RUN`
    consecutive steps or when factors multiply to more than :data:`GROWTH_LIMIT`
    over a run of steps. Raises :class:`GradientOverflowError` instead of returning inf or NaN.

    ``parameters``: which dL/dp to compute: every one (True), none (False: ``params`` is empty) or the names
    given (e.g. ``("alpha",)``: a layer that trains alpha only). Short of all of them, the reverse scan is
    the one derived without the other parameter sums (``Scan.without_parameter_sums``; kernels
    ``backward_a`` / ``slayer_a``), which reads fewer inputs: a LIF's needs g and sigma, plus u for alpha
    and s for theta (without any: 0.67x the time at T = 300, 64 x 256).

    ``grad_state``: dL/dx1, the gradient of the state after the last step (``record.state``, e.g. from the
    next step's ``Gradients.state``), for a one-step record (T = 1: stepping a layer with the state
    carried, as :meth:`SpikingLayer.step` does). The step's vector-Jacobian product (derived in
    :mod:`ift_snn.symbolic.step`) then gives dL/da, dL/dx0 (``state``), dL/du0 and dL/dp of the step;
    chaining steps this way is BPTT through the whole sequence (exact for "exodus", the reset detached for
    "slayer"). The stability diagnostics are not computed there (nan).
    """
    model = _check_model(model)
    if not isinstance(record, Trace):
        raise TypeError(f"record must be the Trace returned by forward(), got {type(record).__name__}")
    if record.model != model:
        raise ValueError(f"record was computed with {record.model!r}, not with {model!r}")
    parameters = _wanted_parameters(model, parameters)
    method = get_method(method)
    truncation = check_truncation(truncation)
    if cupy_backend.is_cupy_array(grad_s) != cupy_backend.is_cupy_array(record.s):
        raise TypeError(
            f"grad_s is a {type(grad_s).__module__}.{type(grad_s).__name__} but the record holds "
            f"{type(record.s).__module__} arrays: pass both as numpy or both as cupy"
        )
    # (finite: the reverse scan's guard watches g; the float64 reference and the step's product check it here)
    g = _check_array("grad_s", grad_s, finite=method.reference or grad_state is not None)
    if g.shape != record.shape:
        raise ValueError(f"grad_s has shape {g.shape}; expected the shape of the record's spikes {record.shape}")
    dtype = record.a.dtype
    g = g.astype(dtype, copy=False)
    T, neurons, blocks = _layout(record.shape, record.time_axis)
    M = math.prod(neurons)
    xp = _xp_of(record.s)
    flat = lambda x: None if x is None else _flat(x, T, M, blocks, xp)  # noqa: E731
    a2, u2, s2, g2 = flat(record.a), flat(record.u), flat(record.s), flat(g)
    mask = flat(record.mask)
    u0 = None if record.u0 is None else record.u0.reshape(M)
    names = state_names(model)
    per = record.params
    if grad_state is not None:
        return _step_backward(model, record, g, method, grad_state, parameters, T, M, neurons, blocks, xp, dtype)
    x0 = (record.x0.reshape(len(names), M) if record.x0 is not None
          else compiled.initial_state(model, u0, M, dtype, xp, per))
    vectors = {f"{STATE_IN}{n}": x0[k] for k, n in enumerate(names)}
    if method.reference and record.from_state:
        raise ValueError("method='bptt' (the float64 reference) starts from u0, not from a whole state; "
                         "use method='exodus' (the same gradient) for a trace started from state=")
    with np.errstate(over="ignore", invalid="ignore"):
        sigma = model.sigma(u2) if record.sigma is None else flat(record.sigma)
        target = record.backend if record.backend in compiled.TARGETS else "numpy"
        if method.reference:
            if xp is not np:
                raise TypeError("method='bptt' is the float64 CPU reference: pass numpy arrays")
            grad_a, params, grad_u0 = _reference(model, _time_major(a2, T, blocks, xp), _time_major(g2, T, blocks, xp),
                                                 u0, truncation, per)
            grad_a, grad_u0 = grad_a.astype(dtype), grad_u0.astype(dtype)
            params = {k: v.reshape(neurons) if k in per else v for k, v in params.items()}
            if blocks is not None:
                grad_a = grad_a.reshape(T, blocks[0], blocks[1]).transpose(1, 0, 2)
            # the diagnostics of the exact gradient: the generated exodus kernel's (its gradients unused)
            _, fins = compiled.backward(model, EXODUS, g2, u2, s2, sigma, mask, truncation, a2, u0, target,
                                        vectors=vectors, per_neuron=per, sums=())
        else:
            # One generated reverse scan: dL/da, and per neuron dL/du0, the parameter sums and the
            # stability diagnostics (derived in symbolic/recurrence.py, proved against the IFT).
            grad_a, fins = compiled.backward(model, method, g2, u2, s2, sigma, mask, truncation, a2, u0, target,
                                             vectors=vectors, per_neuron=per,
                                             sums=None if parameters == model.parameter_names else parameters)
            grad_u0 = fins["grad_u_init"]
            params = _parameter_gradients(model, record, fins, u0, M, neurons, xp, dtype, parameters)
            if not compiled.guard_finite(fins):  # g or dL/da not finite: name g's first non-finite entry
                _check_finite("grad_s", g)
        grad_x0 = xp.stack([fins[STATE_GRAD + n] for n in names]) if names else xp.zeros((0, M), dtype)
        max_factor = float(xp.max(fins[DIAGNOSTIC + "max_factor"])) if M else 0.0
        longest = int(xp.max(fins[DIAGNOSTIC + "longest_run"])) if M else 0
        per_neuron = fins[DIAGNOSTIC + "max_growth"]
        worst = int(xp.argmax(per_neuron)) if M else 0
        growth = float(per_neuron[worst]) if M else 1.0
    diagnostic = (
        f"largest |step factor| {max_factor:.3g}, {longest} consecutive steps above 1, "
        f"factors multiplying to {growth:.3g} over one run (neuron {worst})"
    )
    finite = lambda k, v: _all_finite(v) if k in per else math.isfinite(v)  # noqa: E731
    # (dL/da: the scan's guard watched it, no second pass; the reference's is read)
    grad_a_finite = _all_finite(grad_a) if method.reference else compiled.guard_finite(fins) or _all_finite(grad_a)
    if not (grad_a_finite and _all_finite(grad_u0) and all(finite(k, v) for k, v in params.items())):
        bad = [k for k, v in (("dL/da", grad_a), ("dL/du0", grad_u0)) if not _all_finite(v)]
        bad += [f"dL/d{k}" for k, v in params.items() if not finite(k, v)]
        if growth > GROWTH_LIMIT or longest >= STABILITY_RUN:
            cause = (f"{diagnostic}. The exact gradient grows like the product of step factors (docs/MATH.md section 6); "
                     "use a smaller surrogate scale, a wider surrogate, float64, or truncation")
        else:
            largest_g = float(xp.max(xp.abs(g2))) if g2.size else 0.0
            cause = (f"the step factors are not the cause ({diagnostic}); the largest |grad_s| is {largest_g:.3g} "
                     f"in {dtype}, and the model's kernels or parameter derivatives may grow over time "
                     f"({model!r}); scale the loss or use float64")
        raise GradientOverflowError(f"the {method} backward pass overflowed to inf/NaN in {', '.join(bad)}: {cause}")
    if longest >= STABILITY_RUN or growth > GROWTH_LIMIT:
        warnings.warn(
            f"exact gradient may grow geometrically: {diagnostic}; consider a smaller surrogate scale "
            "or a wider surrogate (docs/MATH.md section 6)",
            StabilityWarning,
            stacklevel=2,
        )
    return Gradients(
        a=grad_a.reshape(record.shape),
        params=params,
        u0=grad_u0.reshape(neurons),
        state=grad_x0.reshape(len(names), *neurons),
        method=method.name,
        max_step_factor=max_factor,
        longest_unstable_run=longest,
        max_growth=growth,
    )
