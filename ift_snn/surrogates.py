"""Surrogate derivatives sigma(u) of the spike function, as SymPy expressions.

The backward pass replaces f'(u), the derivative of the spike function, by a
smooth sigma(u) around the threshold theta. Each surrogate is a SymPy
expression in the symbols ``u`` and ``theta`` (its own constants substituted
as numbers), evaluated numerically through a cached ``lambdify``. Gradients
called "exact" in ift_snn are exact given this replacement.

Catalogue (x = u - theta):

==============  ===========================================================  =========================
name            sigma(u)                                                     defaults
==============  ===========================================================  =========================
exponential     scale/(width theta) exp(-|x|/(width theta))  (SLAYER/sinabs)  scale=1, width=0.5
fast_sigmoid    scale/(1 + slope |x|)^2                      (SuperSpike)     scale=1, slope=10
sigmoid         scale slope S(slope x)(1 - S(slope x)), S = logistic          scale=1, slope=5
arctan          scale (slope/2) / (1 + (pi/2 slope x)^2)     (SpikingJelly)   scale=1, slope=2
gaussian        scale exp(-x^2/(2 width^2)) / (sqrt(2 pi) width)              scale=1, width=0.5
triangle        scale max(0, 1 - |x|/width)                                   scale=1, width=1
boxcar          scale/width 1[|x| < width/2]                                  scale=1, width=1
custom(expr)    any expression in u and theta (parsed over a whitelist)
==============  ===========================================================  =========================

``sigmoid``, ``arctan`` and ``gaussian`` also carry their primitive F with
F' = sigma and F(-inf) = 0, which the ``"smooth"`` spike function uses: a
differentiable spike whose true derivative is exactly the surrogate, so that
finite differences can check every gradient.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import sympy as sp

from .expressions import parse_expression

__all__ = [
    "U",
    "THETA",
    "Surrogate",
    "SURROGATES",
    "exponential",
    "fast_sigmoid",
    "sigmoid",
    "arctan",
    "gaussian",
    "triangle",
    "boxcar",
    "custom",
    "get_surrogate",
]

#: Membrane potential symbol of surrogate expressions.
U = sp.Symbol("u", real=True)
#: Threshold symbol of surrogate expressions.
THETA = sp.Symbol("theta", positive=True)


@dataclass(frozen=True)
class Surrogate:
    """A surrogate derivative sigma(u; theta) with an optional primitive.

    ``expr`` is a SymPy expression in :data:`U` and :data:`THETA` only;
    ``constants`` records the values that were substituted (for display).
    ``primitive`` is F(u; theta) with dF/du = sigma and F -> 0 as u -> -inf,
    or None; ``shift_invariant`` says F depends on u - theta only.
    """

    name: str
    expr: sp.Expr
    constants: tuple[tuple[str, float], ...] = ()
    primitive: sp.Expr | None = None

    def __call__(self, u: np.ndarray, theta: float) -> np.ndarray:
        """sigma(u) elementwise, in the dtype of ``u``."""
        return _evaluate(self.expr, u, theta)

    def antiderivative(self, u: np.ndarray, theta: float) -> np.ndarray:
        """F(u) elementwise (the smooth spike); requires a primitive."""
        if self.primitive is None:
            raise ValueError(f"surrogate {self!r} has no primitive; the smooth spike function needs one of "
                             "sigmoid, arctan, gaussian")
        return _evaluate(self.primitive, u, theta)

    @property
    def shift_invariant(self) -> bool:
        """True when sigma depends on u - theta only (so dF/dtheta = -sigma)."""
        shifted = self.expr.subs(U, U + THETA)
        return not shifted.has(THETA)

    def __repr__(self) -> str:
        if self.name == "custom":
            return f"custom({sp.sstr(self.expr)!r})"
        inner = ", ".join(f"{k}={v:g}" for k, v in self.constants)
        return f"{self.name}({inner})"


def _positive(name: str, value: float, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} {name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{what} {name}={value!r} is out of range: expected a finite number > 0")
    return value


def _number(value: float) -> sp.Expr:
    # Rationals print as exact literals in generated code and keep SymPy exact.
    return sp.nsimplify(value, rational=True) if float(value).is_integer() else sp.Float(value)


X = U - THETA


def exponential(scale: float = 1.0, width: float = 0.5) -> Surrogate:
    """SLAYER / sinabs exponential (Laplace) surrogate, width relative to theta."""
    scale = _positive("scale", scale, "exponential surrogate")
    width = _positive("width", width, "exponential surrogate")
    w = _number(width) * THETA
    expr = _number(scale) / w * sp.exp(-sp.Abs(X) / w)
    return Surrogate("exponential", expr, (("scale", scale), ("width", width)))


def fast_sigmoid(scale: float = 1.0, slope: float = 10.0) -> Surrogate:
    """SuperSpike fast sigmoid derivative scale / (1 + slope |u - theta|)^2."""
    scale = _positive("scale", scale, "fast_sigmoid surrogate")
    slope = _positive("slope", slope, "fast_sigmoid surrogate")
    expr = _number(scale) / (1 + _number(slope) * sp.Abs(X)) ** 2
    return Surrogate("fast_sigmoid", expr, (("scale", scale), ("slope", slope)))


def sigmoid(scale: float = 1.0, slope: float = 5.0) -> Surrogate:
    """Derivative of scale * logistic(slope (u - theta))."""
    scale = _positive("scale", scale, "sigmoid surrogate")
    slope = _positive("slope", slope, "sigmoid surrogate")
    k = _number(slope)
    logistic = 1 / (1 + sp.exp(-k * X))
    expr = _number(scale) * k * logistic * (1 - logistic)
    return Surrogate("sigmoid", expr, (("scale", scale), ("slope", slope)), _number(scale) * logistic)


def arctan(scale: float = 1.0, slope: float = 2.0) -> Surrogate:
    """SpikingJelly ATan: derivative of scale (atan(pi/2 slope x)/pi + 1/2)."""
    scale = _positive("scale", scale, "arctan surrogate")
    slope = _positive("slope", slope, "arctan surrogate")
    k = _number(slope)
    expr = _number(scale) * (k / 2) / (1 + (sp.pi / 2 * k * X) ** 2)
    primitive = _number(scale) * (sp.atan(sp.pi / 2 * k * X) / sp.pi + sp.Rational(1, 2))
    return Surrogate("arctan", expr, (("scale", scale), ("slope", slope)), primitive)


def gaussian(scale: float = 1.0, width: float = 0.5) -> Surrogate:
    """Normal density of standard deviation ``width`` around theta, times scale."""
    scale = _positive("scale", scale, "gaussian surrogate")
    width = _positive("width", width, "gaussian surrogate")
    w = _number(width)
    expr = _number(scale) * sp.exp(-(X**2) / (2 * w**2)) / (sp.sqrt(2 * sp.pi) * w)
    primitive = _number(scale) * (1 + sp.erf(X / (sp.sqrt(2) * w))) / 2
    return Surrogate("gaussian", expr, (("scale", scale), ("width", width)), primitive)


def triangle(scale: float = 1.0, width: float = 1.0) -> Surrogate:
    """Piecewise-linear bump scale * max(0, 1 - |u - theta| / width)."""
    scale = _positive("scale", scale, "triangle surrogate")
    width = _positive("width", width, "triangle surrogate")
    w = _number(width)
    expr = sp.Piecewise((_number(scale) * (1 - sp.Abs(X) / w), sp.Abs(X) < w), (0, True))
    return Surrogate("triangle", expr, (("scale", scale), ("width", width)))


def boxcar(scale: float = 1.0, width: float = 1.0) -> Surrogate:
    """Rectangle of area ``scale``: scale/width on |u - theta| < width/2."""
    scale = _positive("scale", scale, "boxcar surrogate")
    width = _positive("width", width, "boxcar surrogate")
    w = _number(width)
    expr = sp.Piecewise((_number(scale) / w, sp.Abs(X) < w / 2), (0, True))
    return Surrogate("boxcar", expr, (("scale", scale), ("width", width)))


def custom(expr: str | sp.Expr, **constants: float) -> Surrogate:
    """Any expression in ``u`` and ``theta`` (and the named ``constants``).

    A string is parsed over a whitelist (see :mod:`ift_snn.expressions`).
    """
    names = {"u": U, "theta": THETA}
    extra = {k: sp.Symbol(k, real=True) for k in constants}
    clash = set(extra) & set(names)
    if clash:
        raise ValueError(f"custom surrogate constants {sorted(clash)} clash with the variables u and theta")
    if isinstance(expr, str):
        parsed = parse_expression(expr, {**names, **extra}, what="surrogate")
    elif isinstance(expr, sp.Expr):
        by_name = {s.name: s for s in expr.free_symbols}
        parsed = expr.subs({s: names.get(k, extra.get(k, s)) for k, s in by_name.items()})
    else:
        raise TypeError(f"custom surrogate must be a string or a SymPy expression, got {type(expr).__name__}")
    parsed = parsed.subs({extra[k]: _number(v) for k, v in constants.items()})
    unknown = parsed.free_symbols - {U, THETA}
    if unknown:
        raise ValueError(
            f"custom surrogate {sp.sstr(parsed)!r} uses unknown names {sorted(map(str, unknown))}; "
            "allowed: u, theta and the constants passed as keywords"
        )
    return Surrogate("custom", sp.sympify(parsed), tuple((k, float(v)) for k, v in constants.items()))


SURROGATES = {
    "exponential": exponential,
    "fast_sigmoid": fast_sigmoid,
    "sigmoid": sigmoid,
    "arctan": arctan,
    "gaussian": gaussian,
    "triangle": triangle,
    "boxcar": boxcar,
}


def get_surrogate(spec: str | Surrogate, **kwargs: float) -> Surrogate:
    """A surrogate by name (``"exponential"``, ...) or the Surrogate itself."""
    if isinstance(spec, Surrogate):
        if kwargs:
            raise ValueError("surrogate parameters can only be given with a surrogate name")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"surrogate must be a name or a Surrogate, got {type(spec).__name__}")
    if spec not in SURROGATES:
        raise ValueError(f"unknown surrogate {spec!r}; expected one of {', '.join(SURROGATES)} or custom(expr)")
    return SURROGATES[spec](**kwargs)


@functools.lru_cache(maxsize=256)
def _compiled(expr: sp.Expr, gpu: bool = False):
    return sp.lambdify((U, THETA), expr, modules=["cupy", "cupyx.scipy.special"] if gpu else ["numpy", "scipy"])


def _evaluate(expr: sp.Expr, u, theta: float):
    gpu = type(u).__module__.startswith("cupy")
    if gpu:
        import cupy as xp
    else:
        xp = np
        u = np.asarray(u)
    with np.errstate(over="ignore", under="ignore"):
        out = _compiled(expr, gpu)(u, u.dtype.type(theta))
    out = xp.asarray(out, dtype=u.dtype)
    if out.shape != u.shape:
        out = xp.broadcast_to(out, u.shape).copy()
    return out
