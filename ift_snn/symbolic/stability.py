"""The worst-case step factor of the exact gradient, and surrogates stable by construction (docs/MATH.md section 6).

    worst_step_factor(model) = max over u of |c(u)|

where c is the step factor of the exact (EXODUS) reverse scan, d_n = m_n (sigma_n g_n + c_n d_{n+1}),
read from the model's own derivation (``Recurrence.step_factor`` of :mod:`ift_snn.symbolic.recurrence`):

    reset by subtraction       c(u) = alpha - rho sigma(u)         rho = theta_r; alpha theta_r reset before decay
    reset to zero              c(u) = alpha (1 - f(u) - u sigma(u))
    general SRM (no membrane)  c(u) = pole(nu) - nu[0] sigma(u)     the factor of the backward's diagnostics

Where |c| > 1 persists over steps near threshold the carried adjoint, and so the exact gradient, grows
like the product of the factors; SLAYER's factor is alpha (its gradient grows instead like the surrogate
scale to the power of the depth). sigma >= 0 peaks at u = theta for the built-in surrogates, so for reset
by subtraction the extremes are |alpha| (sigma = 0) and |alpha - rho sigma_max|; the maximum is taken
numerically over a dense grid of u (log-spaced offsets from theta of 1e-9 to 1e3 thresholds, a linear
grid of theta +- 8 thresholds, theta itself and its left neighbour, u >= u_min), each of the three
largest local maxima refined by zooming, so that custom surrogates, reset to zero (where f(u) jumps at
theta) and the smooth spike are covered too.

Every built-in surrogate is linear in its ``scale``, so |c| <= 1 holds for all scales up to
:func:`largest_stable_scale` (a root of the same evaluation); :func:`stabilized` and
:func:`stable_surrogate` lower the scale to it (4 significant digits, rounded down). At scale 1, width 0.5
(peak 2/theta), LIF(0.9) has worst factor 1.1 (stable up to scale 0.95), IF 1 (up to 1), reset before
decay 0.9 (up to 1.056), reset to zero 1.8 (up to 0.5555).

Stable by default: the constructors (:func:`~ift_snn.neurons.models.lif`, :func:`~ift_snn.neurons.models.if_neuron`,
:func:`~ift_snn.neurons.models.cuba_lif`, :func:`~ift_snn.neurons.models.srm` and those built on them) give a surrogate named
by a string (the default ``"exponential"``) the scale min(1, largest stable scale) (:func:`stable_default`):
LIF(0.9) gets exponential(scale=0.95, width=0.5), IF keeps scale 1, reset to zero gets 0.5555. A Surrogate
object (``exponential(scale=3)``) is used as given, and the constructors call :func:`warn_if_unstable`: an
:class:`UnstableModelWarning`, once per model, when its worst factor exceeds :data:`WARN_ABOVE` (1),
naming the largest stable scale.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping

import numpy as np
import sympy as sp
from scipy.optimize import brentq

from ..neurons import models
from ..neurons.models import NeuronModel
from ..neurons.surrogates import THETA, U, Surrogate, constant_symbol

__all__ = [
    "StabilityWarning",
    "UnstableModelWarning",
    "WARN_ABOVE",
    "step_factor_expression",
    "worst_step_factor",
    "largest_stable_scale",
    "stable_scale",
    "stable_surrogate",
    "stabilized",
    "stable_default",
    "warn_if_unstable",
]


class StabilityWarning(RuntimeWarning):
    """The exact gradient may grow geometrically (docs/MATH.md section 6); ``ift_snn.ops.backward`` warns it
    from the step factors it saw (re-exported there and as ``ift_snn.StabilityWarning``)."""


class UnstableModelWarning(StabilityWarning):
    """A model whose exact gradient can grow geometrically: its worst-case step factor is above
    :data:`WARN_ABOVE` (docs/MATH.md section 6). Warned once per model, at construction (a
    :class:`StabilityWarning`: filters of that silence it too)."""


#: The constructors warn when worst_step_factor(model) > WARN_ABOVE: a factor above 1 lets the exact gradient
#: grow geometrically over steps near threshold. A surrogate given by name (the default) never warns where a
#: stable scale exists, since the constructors lower its scale (stable_default); a scale chosen by hand
#: above the largest stable one does (e.g. exponential(scale=1) on LIF(0.9): 1.1, scale 3: 5.1). ops.backward
#: warns separately, from the factors a run actually saw (a growth of ops.GROWTH_LIMIT over
#: ops.STABILITY_RUN steps).
WARN_ABOVE: float = 1.0

#: Models already warned about (by value: structure and numbers); bounded, cleared when full.
_WARNED: set[NeuronModel] = set()
_MAX_WARNED = 4096


# ------------------------------------------------------------------ the factor
def step_factor_expression(model: NeuronModel) -> sp.Expr:
    """c, the step factor of the exact reverse scan of ``model``, from its derivation: ``step_factor`` of
    :func:`~ift_snn.symbolic.recurrence.derive_recurrence` for a membrane model, else the factor ``c`` the
    backward scan's diagnostics read (pole(nu) - nu[0] sigma). An expression in u, s (the spike f(u)),
    sigma (the surrogate at u) and the model's parameters."""
    return _factor(model)[0]


_FACTORS: OrderedDict = OrderedDict()
_FACTORS_LOCK = threading.Lock()


def _factor(model: NeuronModel) -> tuple[sp.Expr, tuple[str, ...], Callable]:
    """(c, the names of its arguments, c lambdified over them): one derivation per model structure
    (c reads the parameters as symbols; a new value is a new argument, not a new derivation)."""
    key = model.structure
    with _FACTORS_LOCK:
        hit = _FACTORS.get(key)
        if hit is not None:
            _FACTORS.move_to_end(key)
            return hit
    from .recurrence import derive_recurrence

    rec = derive_recurrence(model)
    expr = rec.step_factor
    if expr is None:
        expr = next(rhs for lhs, rhs in rec.backward.assignments if lhs.name == "c")
    expr = sp.sympify(expr)
    symbols = sorted(expr.free_symbols, key=lambda x: x.name)
    names = tuple(x.name for x in symbols)
    allowed = {"u", "s", "sigma"} | set(model.parameter_names)
    if not set(names) <= allowed:
        raise ValueError(f"the step factor c = {expr} of {model!r} reads {sorted(set(names) - allowed)}, "
                         "which is neither u, s, sigma nor a parameter")
    hit = (expr, names, sp.lambdify(symbols, expr, modules=["numpy", "scipy"]))
    with _FACTORS_LOCK:
        _FACTORS[key] = hit
        while len(_FACTORS) > 256:
            _FACTORS.popitem(last=False)
    return hit


@functools.lru_cache(maxsize=64)
def _template_function(template: sp.Expr, names: tuple[str, ...]) -> Callable:
    return sp.lambdify([U, THETA, *(constant_symbol(k) for k in names)], template, modules=["numpy", "scipy"])


def _surrogate_functions(surrogate: Surrogate, constants: Mapping[str, float]):
    """(sigma(u, theta), F(u, theta) or None) at ``constants``: through the built-in's template (so a new
    scale costs no SymPy work), or the custom surrogate's own expressions."""
    if surrogate.template is None:
        return surrogate.__call__, (surrogate.antiderivative if surrogate.primitive is not None else None)
    names = tuple(k for k, _ in surrogate.constants)
    values = [float(constants[k]) for k in names]

    def bind(template):
        fn = _template_function(template, names)
        return lambda u, theta: np.broadcast_to(np.asarray(fn(u, theta, *values), dtype=float), u.shape)

    prim = surrogate.primitive_template
    return bind(surrogate.template), (bind(prim) if prim is not None else None)


def _grid(theta: float, u_min: float | None) -> np.ndarray:
    """The membrane values searched: around theta on a log scale (any surrogate width from 1e-9 to 1e3
    thresholds) and a linear one, theta itself and its left neighbour (f jumps there), 0; u >= u_min."""
    logs = np.logspace(-9.0, 3.0, 241)
    offsets = np.concatenate([-logs, logs, np.linspace(-8.0, 8.0, 641)])
    u = np.concatenate([theta + theta * offsets, [theta, np.nextafter(theta, -np.inf), 0.0]])
    if u_min is not None:
        u = np.append(u[u >= u_min], u_min)
    return np.unique(u)


def _signed_factor(model: NeuronModel, constants: Mapping[str, float]) -> Callable[[np.ndarray], np.ndarray]:
    """u -> c(u) for ``model`` with its surrogate's constants replaced by ``constants`` (NaN where undefined)."""
    _, names, fn = _factor(model)
    sigma_fn, primitive = _surrogate_functions(model.surrogate, constants)
    theta = model.theta
    values = dict(model.params)

    def f(u: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            env = {"u": u}
            if "sigma" in names:
                env["sigma"] = sigma_fn(u, theta)
            if "s" in names:  # the spike f(u): floor counts for multi-spike, F(u) for the smooth spike
                env["s"] = primitive(u, theta) if model.spike == "smooth" else model.spike_fn(u)
            return np.broadcast_to(np.asarray(fn(*[env.get(n, values.get(n)) for n in names]), dtype=float),
                                   u.shape)

    return f


def _abs_factor(model: NeuronModel, constants: Mapping[str, float]) -> Callable[[np.ndarray], np.ndarray]:
    """u -> |c(u)| for ``model`` with its surrogate's constants replaced by ``constants``; -inf where undefined."""
    signed = _signed_factor(model, constants)

    def f(u: np.ndarray) -> np.ndarray:
        c = np.abs(signed(u))
        return np.where(np.isnan(c), -np.inf, c)

    return f


def _grid_stable_scale(model: NeuronModel, constants: Mapping[str, float]) -> float | None:
    """The largest stable scale on the grid of :func:`_grid`, in closed form: every built-in surrogate (and
    its primitive) is linear in the scale k and c is affine in them, so c(u; k) = A(u) + k B(u) with
    A = c(u; 0), B = c(u; 1) - A, and |A + k B| <= 1 at a grid point for all k up to (1 - A) / B where
    B > 0, (1 + A) / -B where B < 0. The minimum over the points is the largest scale stable on the grid
    (inf where no point binds). None where c is not affine in k at the grid (checked at k = 2), undefined
    somewhere, or |A| > 1 (no scale stable): the caller then searches."""
    u = _grid(model.theta, model.u_min)
    a = _signed_factor(model, {**constants, "scale": 0.0})(u)
    b = _signed_factor(model, {**constants, "scale": 1.0})(u) - a
    two = _signed_factor(model, {**constants, "scale": 2.0})(u)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(np.isfinite(two))):
        return None
    if not np.allclose(two, a + 2.0 * b, rtol=1e-9, atol=1e-12) or np.max(np.abs(a)) > 1:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        bounds = np.where(b > 0, (1.0 - a) / b, np.where(b < 0, (1.0 + a) / -b, np.inf))
    return float(max(np.min(bounds), 0.0))


def _sup(f: Callable[[np.ndarray], np.ndarray], u: np.ndarray, candidates: int = 3, rounds: int = 3) -> float:
    """max of f over the sorted grid ``u``, its largest local maxima refined by zooming between neighbours."""
    v = f(u)
    best = float(np.max(v))
    n = len(u)
    left = np.concatenate([[-np.inf], v[:-1]])
    right = np.concatenate([v[1:], [-np.inf]])
    peaks = np.flatnonzero((v >= left) & (v >= right))
    for i in peaks[np.argsort(v[peaks])[::-1][:candidates]]:
        lo, hi = u[max(i - 1, 0)], u[min(i + 1, n - 1)]
        for _ in range(rounds):
            sub = np.linspace(lo, hi, 65)
            w = f(sub)
            j = int(np.argmax(w))
            best = max(best, float(w[j]))
            lo, hi = sub[max(j - 1, 0)], sub[min(j + 1, 64)]
    return best


def _worst(model: NeuronModel, constants: Mapping[str, float]) -> float:
    return _sup(_abs_factor(model, constants), _grid(model.theta, model.u_min))


@functools.lru_cache(maxsize=1024)
def _worst_cached(model: NeuronModel) -> float:
    return _worst(model, dict(model.surrogate.constants))


def worst_step_factor(model: NeuronModel) -> float:
    """max over u of |c(u)|, c the step factor of the exact reverse scan (module docstring):
    alpha - rho sigma(u) for reset by subtraction (rho = theta_r, or alpha theta_r reset before decay),
    alpha (1 - f(u) - u sigma(u)) for reset to zero, pole(nu) - nu[0] sigma(u) for a general SRM.

    c is read from the model's derivation and evaluated with its surrogate over a dense grid of u
    around theta (refined at the maxima); the backward's running diagnostic
    ``Gradients.max_step_factor`` never exceeds it. Above 1 the exact gradient can grow geometrically.
    Cached per model (structure and values); the derivation once per structure.
    """
    if not isinstance(model, NeuronModel):
        raise TypeError(f"model must be a NeuronModel, got {type(model).__name__}")
    return _worst_cached(model)


def _scale_of(model: NeuronModel) -> float:
    surrogate = model.surrogate
    constants = dict(surrogate.constants)
    if surrogate.template is None or "scale" not in constants:
        raise ValueError(f"surrogate {surrogate!r} has no scale constant: the stable scale is defined for the "
                         "built-in surrogates (exponential, fast_sigmoid, sigmoid, arctan, gaussian, triangle, "
                         "boxcar); make a custom surrogate smaller or wider by hand")
    return constants["scale"]


@functools.lru_cache(maxsize=1024)
def _largest_stable_scale(model: NeuronModel) -> float:
    """The grid's closed form (:func:`_grid_stable_scale`, two evaluations of c) where the refined maximum,
    between grid points too, agrees with it; else the search (:func:`_searched_stable_scale`)."""
    constants = dict(model.surrogate.constants)
    k = _grid_stable_scale(model, constants)
    if k is None:
        return _searched_stable_scale(model)
    if math.isinf(k) or k > 1e12 * constants["scale"]:
        return math.inf
    if k == 0.0:
        return 0.0
    worst = _worst(model, {**constants, "scale": k})
    if worst > 1 + 1e-12:  # a higher peak between grid points: search below it
        return _searched_stable_scale(model)
    while worst > 1 and k > 0:  # 1 + rounding at the touching point
        k *= 1 - 1e-14
        worst = _worst(model, {**constants, "scale": k})
    return k


def _searched_stable_scale(model: NeuronModel) -> float:
    """The root of worst(k) = 1 by search over k (doubling, then Brent's method or bisection)."""
    constants = dict(model.surrogate.constants)
    worst = lambda k: _worst(model, {**constants, "scale": k})  # noqa: E731
    if worst(0.0) > 1:
        return 0.0
    lo, hi = 0.0, _scale_of(model)
    while worst(hi) <= 1:
        lo, hi = hi, 2 * hi
        if hi > 1e12 * constants["scale"]:
            return math.inf
    # worst(k) = max_u |A(u) + k B(u)| is convex in k, so {k : worst(k) <= 1} is the interval [0, k*].
    # Below 1 at lo, k* is the one root in (lo, hi): Brent's method, then to the stable side of rounding.
    # Exactly 1 at lo (IF: |c| = 1 where sigma = 0) the root is not unique: bisection keeps the largest,
    # unless every scale above 0 is unstable (IF with reset to zero: |c| = 1 + |u| sigma(u) at u < 0).
    if lo == 0 and worst(1e-9 * hi) > 1:
        return 0.0
    if worst(lo) < 1:
        k = brentq(lambda k: worst(k) - 1, lo, hi, xtol=1e-15 * hi, rtol=8 * np.finfo(float).eps)
        while worst(k) > 1 and k > lo:
            k = max(lo, k * (1 - 1e-14))
        return k
    while hi - lo > 4 * np.finfo(float).eps * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if worst(mid) <= 1 else (lo, mid)
    return lo


def largest_stable_scale(model: NeuronModel) -> float:
    """The largest surrogate ``scale`` k with worst_step_factor <= 1, all else as in ``model``.

    For reset by subtraction with sigma = k sigma_1 (sigma_1 the surrogate at scale 1) this is
    k = (1 + alpha) / (rho max sigma_1). It is computed as the root of worst_step_factor(k) = 1 on the
    same evaluation (the factor is convex in k, so the stable scales are the interval from 0 to it),
    so it holds for every step factor the derivation gives: reset to zero, reset before decay, SRMs.
    inf when no scale makes the model unstable (no reset through sigma); 0.0 when no scale above 0 is
    stable (IF with reset to zero, whose factor 1 - u sigma(u) exceeds 1 at every u < 0, or a decay
    above 1). Raises ValueError naming the surrogate when it has no scale constant (custom surrogates).
    """
    if not isinstance(model, NeuronModel):
        raise TypeError(f"model must be a NeuronModel, got {type(model).__name__}")
    _scale_of(model)
    return _largest_stable_scale(model)


def _corners(model: NeuronModel, per_neuron: Mapping[str, object] | None) -> list[NeuronModel]:
    """``model`` at every corner of the ranges of its per-neuron values (each parameter at its smallest and
    largest value): 2^k models for k per-neuron parameters, ``[model]`` without any."""
    models = [model]
    for name, values in sorted((per_neuron or {}).items()):
        v = np.asarray(values, dtype=float).reshape(-1)
        if v.size == 0:
            continue
        lo, hi = float(v.min()), float(v.max())
        models = [m.with_params(**{name: x}) for m in models for x in dict.fromkeys((lo, hi))]
    return models


def stable_scale(model: NeuronModel, per_neuron: Mapping[str, object] | None = None) -> float:
    """The scale :func:`stabilized` gives ``model``'s surrogate: min(scale, k), k the largest stable scale
    (over the corners of the per-neuron ranges in ``per_neuron``, {name: values}) rounded down to 4
    significant digits and lowered further by a unit of the last digit while rounding leaves the worst factor
    above 1, so that it prints as it is and worst_step_factor <= 1 holds exactly. The corners suffice for the
    built-in neurons, whose largest stable scale is monotone in each parameter ((1 + alpha) width theta /
    theta_r for reset by subtraction). Raises ValueError for a surrogate without a scale, or when no scale
    above 0 is stable."""
    scale = _scale_of(model)
    corners = _corners(model, per_neuron)
    largest = min(largest_stable_scale(m) for m in corners)
    if scale <= largest:
        return scale
    if largest <= 0:
        raise ValueError(f"no surrogate scale makes {model!r} stable: its step factor "
                         f"{sp.sstr(step_factor_expression(model))} exceeds 1 in magnitude somewhere for every scale")
    k = _rounded_down(largest)
    constants = dict(model.surrogate.constants)
    while k > 0 and any(_worst(m, {**constants, "scale": k}) > 1 for m in corners):
        k = _rounded_down(k * (1 - 1e-4))
    return k


def stable_surrogate(model: NeuronModel, per_neuron: Mapping[str, object] | None = None) -> Surrogate:
    """``model``'s surrogate with its scale lowered to :func:`stable_scale` where it is above it (unchanged
    otherwise): worst_step_factor <= 1 by construction. Raises ValueError for a surrogate without a scale, or
    when no scale is stable."""
    scale = stable_scale(model, per_neuron)
    return model.surrogate if scale == _scale_of(model) else model.surrogate.with_constants(scale=scale)


def stabilized(model: NeuronModel, per_neuron: Mapping[str, object] | None = None) -> NeuronModel:
    """``model`` with :func:`stable_surrogate`: the surrogate's scale set to min(scale, largest stable scale)
    (4 significant digits, rounded down), so that worst_step_factor(stabilized(model)) <= 1 (the same model
    where it already is); with ``per_neuron`` ({name: values}) at every neuron's values."""
    surrogate = stable_surrogate(model, per_neuron)
    return model if surrogate is model.surrogate else dataclasses.replace(model, surrogate=surrogate)


def stable_default(model: NeuronModel, per_neuron: Mapping[str, object] | None = None) -> NeuronModel:
    """What the constructors make of a surrogate given by name (the default ``"exponential"``): the
    family's default constants with the scale lowered to the largest stable one (:func:`stabilized`), so
    that a model whose scale nobody chose is stable by construction. ``model`` itself where no scale above 0
    is stable (IF with reset to zero: the constructor's warning then says so) or the surrogate has none."""
    try:
        return stabilized(model, per_neuron)
    except Exception:  # noqa: BLE001 - no stable scale, no scale, or a model the derivation refuses (it fails
        return model  # where it is used, with that error): the scale stays, and warn_if_unstable says what it can


# ------------------------------------------------------------------ the warning
def _message(model: NeuronModel, worst: float) -> str:
    c = sp.sstr(step_factor_expression(model))
    text = (f"{model!r}: the exact gradient's worst-case step factor max_u |{c}| is {worst:.4g} > 1, so it "
            f"can grow geometrically (like {worst:.3g}^n over n steps near threshold; docs/MATH.md section 6)")
    try:
        largest = largest_stable_scale(model)
    except ValueError as exc:  # a custom surrogate: no scale to lower
        return f"{text}. {exc}"
    if largest <= 0:
        return f"{text}. No surrogate scale above 0 makes the worst factor 1 or less"
    if math.isinf(largest):
        return text
    sur = model.surrogate
    shown = stable_scale(model)
    inner = ", ".join(f"{k}={shown:g}" if k == "scale" else f"{k}={v:g}" for k, v in sur.constants)
    return (f"{text}. The largest stable scale is {shown:g}: use surrogate={sur.name}({inner}), "
            "or ift_snn.symbolic.stability.stabilized(model)")


def _rounded_down(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits, never above it by more than rounding (so a scale that is
    printed and copied stays stable: 0.5555555 -> 0.5555, 0.9499999999999997 -> 0.95)."""
    shown = float(f"{x:.{digits}g}")
    if shown <= x * (1 + 1e-12):
        return shown
    step = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return float(f"{math.floor(x / step) * step:.{digits}g}")


def _stacklevel() -> int:
    """The stacklevel of the first frame outside the ift_snn package (the user's call)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # ift_snn/
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def warn_if_unstable(model: NeuronModel) -> None:
    """Warn :class:`UnstableModelWarning` when worst_step_factor(model) > :data:`WARN_ABOVE`, once per model
    (structure and values), naming the factor and the largest stable scale. Called by the public
    constructors, not by ``with_params`` (training steps); cached, so repeated calls are cheap."""
    if model in _WARNED:
        return
    try:
        worst = worst_step_factor(model)
    except Exception:  # noqa: BLE001 - advisory: a model the derivation refuses fails where it is used, with that error
        return
    if not worst > WARN_ABOVE:
        return
    warnings.warn(_message(model, worst), UnstableModelWarning, stacklevel=_stacklevel())
    if len(_WARNED) >= _MAX_WARNED:
        _WARNED.clear()
    _WARNED.add(model)


def _on_construction(model: NeuronModel, named: bool) -> NeuronModel:
    """What every public constructor of :mod:`ift_snn.neurons.models` applies (installed below): the stable default
    scale for a surrogate given by name, then the warning above 1."""
    if named:
        model = stable_default(model)
    warn_if_unstable(model)
    return model


models.on_construction(_on_construction)
