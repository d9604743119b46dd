"""Recurrent layers: a layer whose spikes feed back into its own input one step later (docs/MATH.md section 9).

    a[n] = c[n] + V s[n-1],   s[-1] = s0,        c = W x, the feed-forward current (given for every step)

with each neuron the model's own (any model of the library). The exact gradient runs the neurons' backward scan
time-outer with the recurrent error added to dL/ds (derived and proved in
:mod:`ift_snn.symbolic.recurrent_layer`), in one generated kernel per scan: the group of a sample's N neurons
steps together, the coupling V s[n-1] computed once per step from the spikes that fired (a sparse sum: spikes x N
per step, not N^2), V^T dL/da[n+1] in the backward likewise.

Layout: ``c`` is (T, B, N) time-major, (T, N) for one sample, or (B, T, N) with ``time_axis=1`` (PyTorch's
batch-first layers; read in place). V is (N, N): V[i, j] the weight from neuron j's spike to neuron i.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .backends import compiled
from .backends import cupy as cupy_backend
from .backends import reference
from .methods import Method, get_method
from .neurons.models import NeuronModel
from .ops import (
    STABILITY_RUN,
    GROWTH_LIMIT,
    GradientOverflowError,
    StabilityWarning,
    _check_array,
    _check_forward_finite,
    _check_model,
    _parameter_gradients,
    _per_neuron,
    _resolve_backend,
    _wanted_parameters,
    _xp_of,
    check_truncation,
    state_names,
)
from .symbolic.recurrence import DIAGNOSTIC, PARAMETER, STATE_GRAD
from .symbolic.system import STATE_IN

__all__ = ["RecurrentTrace", "RecurrentGradients", "forward", "backward"]

#: The coupling vector's name in the kernels (:data:`ift_snn.codegen.tree.COUPLING_INIT`).
_CP_INIT = "cp_init"
#: Largest group a CUDA block holds (one thread per neuron of a sample).
MAX_CUDA_GROUP = 1024


@dataclass(frozen=True, eq=False)
class RecurrentTrace:
    """What :func:`forward` returns and :func:`backward` needs: spikes ``s`` and membranes ``u`` like ``c``;
    ``V`` (a read-only copy) and ``s0``; ``x0`` the neurons' state at the start ((n_state, B, N), its
    ``s_prev`` row = s0) and ``state`` after the last step (its ``s_prev`` row the last spikes: pass it as
    ``forward(..., state=...)`` to continue the sequence)."""

    model: NeuronModel
    c: np.ndarray
    V: np.ndarray
    s: np.ndarray
    u: np.ndarray
    s0: np.ndarray
    u0: np.ndarray | None
    x0: np.ndarray = field(repr=False)
    state: np.ndarray = field(repr=False)
    sigma: np.ndarray | None = field(repr=False, default=None)
    mask: np.ndarray | None = field(repr=False, default=None)
    backend: str = "numpy"
    time_axis: int = 0
    from_state: bool = False
    params: dict = field(repr=False, default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.s.shape


@dataclass(frozen=True, eq=False)
class RecurrentGradients:
    """dL/dc (like c), dL/dV (N, N), dL/ds0 and dL/du0 (B, N; (N,) for a (T, N) input), dL/dx0 (n_state, B, N),
    {p: dL/dp}, and the step-factor diagnostics of the neurons' own scans (the recurrent coupling's growth is not
    in them)."""

    c: np.ndarray
    V: np.ndarray
    s0: np.ndarray
    u0: np.ndarray
    state: np.ndarray
    params: dict
    method: str
    max_step_factor: float
    longest_unstable_run: int
    max_growth: float


def _sizes(shape: tuple[int, ...], time_axis: int) -> tuple[int, int, int]:
    if len(shape) == 2 and time_axis == 0:
        return shape[0], 1, shape[1]
    if len(shape) != 3:
        want = "(T, B, N) or (T, N)" if time_axis == 0 else "(B, T, N) for time_axis=1"
        raise ValueError(f"c has shape {shape}; expected {want}")
    return (shape[0], shape[1], shape[2]) if time_axis == 0 else (shape[1], shape[0], shape[2])


def _kernel_view(x, T: int, B: int, N: int, time_axis: int):
    """(T, B N) time-major or (B, T, N) batch-major: the layouts the kernels read in place."""
    return x.reshape(T, B * N) if time_axis == 0 else x


def _check_V(V, N: int, like, backend: str):
    if cupy_backend.is_cupy_array(V) != cupy_backend.is_cupy_array(like):
        raise TypeError("V and c must both be numpy arrays or both cupy arrays")
    V = _check_array("V", V)
    if V.shape != (N, N):
        raise ValueError(f"V has shape {V.shape}; expected ({N}, {N}): the weights between the layer's N = {N} neurons")
    if V.dtype != like.dtype:
        raise TypeError(f"V is {V.dtype} but c is {like.dtype}: give both in one dtype")
    if backend == "cupy" and N > MAX_CUDA_GROUP:
        raise ValueError(f"N = {N} neurons: the CUDA kernel of a recurrent layer runs a sample's neurons in one block "
                         f"of at most {MAX_CUDA_GROUP} threads")
    return V


def forward(model: NeuronModel, c, V, *, s0=None, u0=None, state=None, backend: str = "auto", time_axis: int = 0,
            copy: bool = True, params=None) -> RecurrentTrace:
    """Simulate a recurrent layer: a[n] = c[n] + V s[n-1], then ``model``'s neuron on a (docs/MATH.md section 9).

    ``c``: (T, B, N) (or (T, N); (B, T, N) with ``time_axis=1``), float32/float64, finite; ``V``: (N, N) of the
    same dtype. ``s0``: the spikes before step 0 (B, N) ((N,) for a (T, N) input; default 0), which also reset the
    neurons at step 0 as their own previous spike; ``u0``: the initial membrane, likewise; ``state``: the whole
    initial state (n_state, B, N) instead of both (a Trace's ``state``: streaming). ``params``: per-neuron
    parameter values as in :func:`ift_snn.forward`. Cost O(T B (N + spikes x N)): one generated scan, the
    coupling a sparse sum over the neurons that fired.
    """
    model = _check_model(model)
    c_in = c
    c = _check_array("input c", c)
    backend = _resolve_backend(backend, c)
    xp = _xp_of(c)
    if time_axis not in (0, 1) or isinstance(time_axis, bool):
        raise ValueError(f"time_axis={time_axis!r}: expected 0 (c is (T, B, N)) or 1 (c is (B, T, N))")
    T, B, N = _sizes(c.shape, time_axis)
    if T < 1 or N < 1:
        raise ValueError(f"c has shape {c.shape}: expected at least one step and one neuron")
    M = B * N
    neurons = (B, N) if c.ndim == 3 else (N,)  # the shape of s0, u0 and the gradients' (one sample: (N,))
    V = _check_V(V, N, c, backend)
    names = state_names(model)
    k_s = names.index("s_prev")
    per = _per_neuron(model, params, (B, N), M, c)
    if state is not None:
        if s0 is not None or u0 is not None:
            raise ValueError("give state, or s0 and u0, not both: state holds the previous spikes and membrane")
        state = _check_array("state", state, dtype=c.dtype)
        if state.shape != (len(names), B, N):
            raise ValueError(f"state has shape {state.shape}; expected {(len(names), B, N)}: the {len(names)} state "
                             f"values {names} of {model.name} for B = {B} samples of N = {N} neurons")
        x0 = xp.array(state.reshape(len(names), M), copy=True)
    else:
        u0_2 = None
        if u0 is not None:
            u0 = _check_array("u0", u0, dtype=c.dtype)
            if u0.shape != neurons:
                raise ValueError(f"u0 has shape {u0.shape}; expected the neurons' shape {neurons} of c {c.shape}")
            u0_2 = xp.array(u0.reshape(M), copy=True)
        x0 = xp.array(compiled.initial_state(model, u0_2, M, c.dtype, xp, per), copy=True)
        if s0 is not None:
            s0 = _check_array("s0", s0, dtype=c.dtype)
            if s0.shape != neurons:
                raise ValueError(f"s0 has shape {s0.shape}; expected the neurons' shape {neurons} of c {c.shape}")
            x0[k_s] = s0.reshape(M)
    c_k = _kernel_view(c, T, B, N, time_axis)
    if copy and xp.may_share_memory(c_k, c_in):
        c_k = c_k.copy()
    V_own = xp.array(V, copy=True)
    vectors = {f"{STATE_IN}{n}": x0[k] for k, n in enumerate(names)}
    vectors[_CP_INIT] = x0[k_s]
    u, s, sigma, mask, final = compiled.forward(model, c_k, None, backend, vectors=vectors, with_state=True,
                                                per_neuron=per, coupling=(xp.ascontiguousarray(V_own.T), N))
    flat_blocks = None if time_axis == 0 else (B, N)
    sigma = _check_forward_finite(model, u, sigma, (B, N), T, flat_blocks)
    shape = lambda x: None if x is None else x.reshape(c.shape)  # noqa: E731
    for x in (c_k, V_own, x0):
        if isinstance(x, np.ndarray):
            x.flags.writeable = False
    x0_3 = x0.reshape(len(names), B, N)
    return RecurrentTrace(model=model, c=c_k.reshape(c.shape), V=V_own, s=shape(s), u=shape(u), s0=x0_3[k_s],
                          u0=None if state is not None or u0 is None else u0, x0=x0_3,
                          state=final.reshape(len(names), B, N), sigma=shape(sigma), mask=shape(mask),
                          backend=backend, time_axis=time_axis, from_state=state is not None, params=per)


def _time_major(x, time_axis: int):
    """(T, B, N) from the trace's layout (a view for time-major, a transposed view for batch-major)."""
    if x.ndim == 2:
        return x[:, None, :]
    return x if time_axis == 0 else x.transpose(1, 0, 2)


def _total_input(trace: RecurrentTrace, xp):
    """a = c + V s[n-1] in the kernels' layout (what a backward scan reading ``a`` needs: an input kernel's
    parameter sums)."""
    c, s = _time_major(trace.c, trace.time_axis), _time_major(trace.s, trace.time_axis)
    prev = xp.concatenate([trace.s0[None], s[:-1]])
    a = c + prev @ trace.V.T
    T, B, N = a.shape
    return xp.ascontiguousarray(a.reshape(T, B * N) if trace.time_axis == 0 else a.transpose(1, 0, 2))


def _grad_V(grad_a, trace: RecurrentTrace, xp):
    """dL/dV = sum_n dL/da[n] s[n-1]^T over the batch. NumPy: a sum over the spikes that fired (spikes x N,
    :func:`ift_snn.backends.sparse.spike_outer_sum`, float64 sums); CuPy: matrix products over contiguous slices."""
    s, s0 = trace.s, trace.s0
    N = trace.V.shape[0]
    g3 = grad_a if grad_a.ndim == 3 else grad_a.reshape(trace.shape)
    if xp is np:
        from .backends.sparse import spike_outer_sum

        s3 = s if s.ndim == 3 else s[:, None, :]
        g3 = g3 if g3.ndim == 3 else g3[:, None, :]
        if trace.time_axis == 0:
            pairs = [(g3[0], s0), (g3[1:].reshape(-1, N), s3[:-1].reshape(-1, N))]
        else:
            pairs = [(g3[:, 0], s0)] + [(g3[b, 1:], s3[b, :-1]) for b in range(g3.shape[0])]
        return spike_outer_sum(pairs, N, N, grad_a.dtype)
    g3 = _time_major(g3, trace.time_axis)
    s3 = _time_major(s, trace.time_axis)
    V = g3[0].T @ s0
    if trace.time_axis == 0 and g3.shape[0] > 1:
        return V + g3[1:].reshape(-1, N).T @ s3[:-1].reshape(-1, N)
    for t in range(1, g3.shape[0]):  # batch-major: one product per step
        V += g3[t].T @ s3[t - 1]
    return V


def backward(model: NeuronModel, trace: RecurrentTrace, grad_s, method: str | Method = "exodus",
             truncation: int | None = None, *, parameters=True) -> RecurrentGradients:
    """Gradients of the loss given g = dL/ds for a recurrent layer (docs/MATH.md section 9).

    The neurons' backward scan of ``method`` run time-outer with g[n] + V^T dL/da[n+1] (one generated kernel;
    "exodus" exact, "slayer" the reset detached and the recurrent path kept, "bptt" the hand-written float64
    oracle, refused beyond its memory before any work), then dL/dc = dL/da, dL/dV = sum_n dL/da[n] s[n-1]^T
    (one GEMM), dL/ds0 = V^T dL/da[0] + the neurons' own, dL/du0, dL/dx0 and every dL/dp. ``truncation=K``:
    no gradient crosses a chunk of K steps, the recurrent one included.
    """
    model = _check_model(model)
    if not isinstance(trace, RecurrentTrace):
        raise TypeError(f"trace must be the RecurrentTrace returned by recurrent.forward(), got {type(trace).__name__}")
    if trace.model != model:
        raise ValueError(f"trace was computed with {trace.model!r}, not with {model!r}")
    method = get_method(method)
    wanted = _wanted_parameters(model, parameters)
    truncation = check_truncation(truncation)
    if cupy_backend.is_cupy_array(grad_s) != cupy_backend.is_cupy_array(trace.s):
        raise TypeError("grad_s and the trace must both hold numpy arrays or both cupy arrays")
    g = _check_array("grad_s", grad_s)
    if g.shape != trace.shape:
        raise ValueError(f"grad_s has shape {g.shape}; expected the shape of the trace's spikes {trace.shape}")
    dtype = trace.c.dtype
    g = g.astype(dtype, copy=False)
    T, B, N = _sizes(trace.shape, trace.time_axis)
    M = B * N
    xp = _xp_of(trace.s)
    names = state_names(model)
    k_s = names.index("s_prev")
    view = lambda x: None if x is None else _kernel_view(x, T, B, N, trace.time_axis)  # noqa: E731
    if method.reference:
        if xp is not np:
            raise TypeError("method='bptt' is the float64 CPU reference: pass numpy arrays")
        if trace.params:
            raise ValueError("method='bptt' of a recurrent layer takes the model's scalar parameters; use 'exodus'")
        if trace.from_state:
            raise ValueError("method='bptt' (the float64 reference) starts from u0 and s0, not from a whole state; "
                             "use method='exodus' (the same gradient)")
        reference.check_size(model, T, M)
        ref = reference.bptt_recurrent(model, _time_major(trace.c, trace.time_axis), trace.V,
                                       _time_major(g, trace.time_axis), trace.s0,
                                       None if trace.u0 is None else trace.u0, truncation=truncation)
        grad_c = ref.c if trace.time_axis == 0 else ref.c.transpose(1, 0, 2)
        grad_c = np.ascontiguousarray(grad_c).reshape(trace.shape).astype(dtype)
        params = {k: v for k, v in ref.params.items() if k in wanted}
        shape = (N,) if trace.c.ndim == 2 else (B, N)
        return RecurrentGradients(c=grad_c, V=ref.V.astype(dtype), s0=ref.s0.reshape(shape).astype(dtype),
                                  u0=ref.u0.reshape(shape).astype(dtype),
                                  state=np.full((len(names), B, N), np.nan, dtype), params=params, method=method.name,
                                  max_step_factor=math.nan, longest_unstable_run=0, max_growth=math.nan)
    x0 = trace.x0.reshape(len(names), M)
    vectors = {f"{STATE_IN}{n}": x0[k] for k, n in enumerate(names)}
    vectors[_CP_INIT] = xp.zeros(M, dtype)  # dL/da[T]: nothing after the last step
    target = trace.backend if trace.backend in compiled.TARGETS else "numpy"
    with np.errstate(over="ignore", invalid="ignore"):
        sigma = model.sigma(view(trace.u)) if trace.sigma is None else view(trace.sigma)
        # (short of every parameter, the scan derived without the other parameter sums: it reads fewer inputs)
        sums = None if wanted == model.parameter_names else wanted
        quantity = method.scan + ("" if sums is None else "_a")
        kernel = compiled._get(model, quantity, dtype, target, tuple(trace.params), sums or (), recurrent=True).kernel
        a = _total_input(trace, xp) if any(x.name == "a" for x in kernel.inputs) else None
        grad_a, fins = compiled.backward(model, method, view(g), view(trace.u), view(trace.s), sigma,
                                         view(trace.mask), truncation, a, None, target, vectors=vectors,
                                         per_neuron=trace.params, coupling=(xp.ascontiguousarray(trace.V), N),
                                         sums=sums)
        grad_x0 = xp.stack([fins[STATE_GRAD + n] for n in names])
        # the kernel's coupling after step 0: (V^T dL/da[0])_j, the spike before step 0 through V
        grad_s0 = grad_x0[k_s].reshape(B, N) + fins["cp_last"].reshape(B, N)
        grad_x0[k_s] = grad_s0.reshape(M)
        grad_V = _grad_V(grad_a.reshape(trace.shape) if trace.time_axis == 0 else grad_a, trace, xp)
        record = _Record(params=trace.params, from_state=trace.from_state)
        u0 = None if trace.u0 is None else trace.u0.reshape(M)
        params = _parameter_gradients(model, record, fins, u0, M, (B, N), xp, dtype, wanted)
        grad_u0 = fins["grad_u_init"].reshape(B, N)
        max_factor = float(xp.max(fins[DIAGNOSTIC + "max_factor"]))
        longest = int(xp.max(fins[DIAGNOSTIC + "longest_run"]))
        growth = float(xp.max(fins[DIAGNOSTIC + "max_growth"]))
    results = {"dL/dc": grad_a, "dL/dV": grad_V, "dL/ds0": grad_s0, "dL/du0": grad_u0}
    bad = [k for k, v in results.items() if not bool(xp.isfinite(v).all())]
    bad += [f"dL/d{k}" for k, v in params.items() if not bool(np.all(np.isfinite(_host(v))))]
    if bad:
        raise GradientOverflowError(
            f"the {method} backward pass of the recurrent layer overflowed to inf/NaN in {', '.join(bad)}: the "
            f"neurons' largest |step factor| is {max_factor:.3g} ({longest} steps above 1); with the recurrent "
            "coupling the adjoint also grows with |V|: scale V or the loss, use a smaller surrogate scale, "
            "float64 or truncation")
    if longest >= STABILITY_RUN or growth > GROWTH_LIMIT:
        warnings.warn(f"exact gradient may grow geometrically: largest |step factor| {max_factor:.3g}, {longest} "
                      f"consecutive steps above 1, factors multiplying to {growth:.3g} (docs/MATH.md section 6)",
                      StabilityWarning, stacklevel=2)
    one = trace.c.ndim == 2  # (T, N): one sample, s0 and u0 (N,)
    return RecurrentGradients(c=grad_a.reshape(trace.shape), V=grad_V, s0=grad_s0.reshape(N) if one else grad_s0,
                              u0=grad_u0.reshape(N) if one else grad_u0,
                              state=grad_x0.reshape(len(names), B, N), params=params, method=method.name,
                              max_step_factor=max_factor, longest_unstable_run=longest, max_growth=growth)


@dataclass(frozen=True)
class _Record:
    """What :func:`ift_snn.ops._parameter_gradients` reads of a trace."""

    params: dict
    from_state: bool


def _host(v):
    return v.get() if hasattr(v, "get") else v
