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

The defaults are those of the functions (``exponential()`` is scale 1). A neuron constructor given a
surrogate as text without a scale (its default ``"exponential"``, or ``"exponential(width=0.3)"``) lowers
the scale to the largest stable one (``ift_snn.symbolic.stability.stable_default``, docs/MATH.md section 6).
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass, field

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
    "constant_symbol",
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
    ``template`` (built-ins only) is ``expr`` with each constant a symbol
    ``sg_<name>``: generated kernels take the constants as arguments, so a
    new scale or width reuses the compiled kernel; ``primitive_template`` is
    ``primitive`` written the same way (None without a primitive).
    """

    name: str
    expr: sp.Expr
    constants: tuple[tuple[str, float], ...] = ()
    primitive: sp.Expr | None = None
    template: sp.Expr | None = field(default=None, compare=False, repr=False)
    primitive_template: sp.Expr | None = field(default=None, compare=False, repr=False)

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

    @property
    def arguments(self) -> tuple[tuple[sp.Symbol, float], ...]:
        """(symbol sg_<name>, value) of each constant of ``template``; () without a template."""
        if self.template is None:
            return ()
        return tuple((constant_symbol(k), v) for k, v in self.constants)

    def with_constants(self, **values: float) -> Surrogate:
        """The same catalogue surrogate with some constants replaced, e.g. ``with_constants(scale=0.5)``.

        Raises ValueError for a custom surrogate (its constants are baked into its expression) and for a
        name the surrogate does not take.
        """
        if self.template is None or self.name not in SURROGATES:
            raise ValueError(f"surrogate {self!r} is not from the catalogue: its constants cannot be replaced "
                             f"(built-ins: {', '.join(SURROGATES)})")
        known = dict(self.constants)
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"surrogate {self!r} has no constant {', '.join(sorted(unknown))}; "
                             f"it takes {', '.join(known)}")
        return SURROGATES[self.name](**{**known, **values})

    @property
    def structure(self) -> tuple:
        """What a compiled kernel depends on: the template (not the constants' values) when there is one."""
        if self.template is None:
            return (self.name, self.expr, self.primitive)
        return (self.name, self.template)

    def __repr__(self) -> str:
        if self.name == "custom":
            return f"custom({sp.sstr(self.expr)!r})"
        inner = ", ".join(f"{k}={v:g}" for k, v in self.constants)
        return f"{self.name}({inner})"


def constant_symbol(name: str) -> sp.Symbol:
    """The symbol ``sg_<name>`` of a built-in surrogate's constant in its template."""
    return sp.Symbol(f"sg_{name}", positive=True)


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


def _builtin(name: str, build, **constants: float) -> Surrogate:
    """A catalogue surrogate: ``build(**constants)`` -> (sigma, primitive or None), numeric and as a template."""
    values = {k: _positive(k, v, f"{name} surrogate") for k, v in constants.items()}
    return _built(name, build, tuple(values.items()))


@functools.lru_cache(maxsize=1024)
def _built(name: str, build, values: tuple[tuple[str, float], ...]) -> Surrogate:
    """The Surrogate of checked ``values`` (immutable: one SymPy build per name and values)."""
    expr, primitive = build(**{k: _number(v) for k, v in values})
    template, primitive_template = _template_of(build, tuple(k for k, _ in values))
    return Surrogate(name, expr, values, primitive, template, primitive_template)


@functools.lru_cache(maxsize=64)
def _template_of(build, names: tuple[str, ...]):
    return build(**{k: constant_symbol(k) for k in names})


def _exponential(scale, width):
    w = width * THETA
    return scale / w * sp.exp(-sp.Abs(X) / w), None


def _fast_sigmoid(scale, slope):
    return scale / (1 + slope * sp.Abs(X)) ** 2, None


def _sigmoid(scale, slope):
    logistic = 1 / (1 + sp.exp(-slope * X))
    return scale * slope * logistic * (1 - logistic), scale * logistic


def _arctan(scale, slope):
    expr = scale * (slope / 2) / (1 + (sp.pi / 2 * slope * X) ** 2)
    return expr, scale * (sp.atan(sp.pi / 2 * slope * X) / sp.pi + sp.Rational(1, 2))


def _gaussian(scale, width):
    expr = scale * sp.exp(-(X**2) / (2 * width**2)) / (sp.sqrt(2 * sp.pi) * width)
    return expr, scale * (1 + sp.erf(X / (sp.sqrt(2) * width))) / 2


def _triangle(scale, width):
    return sp.Piecewise((scale * (1 - sp.Abs(X) / width), sp.Abs(X) < width), (0, True)), None


def _boxcar(scale, width):
    return sp.Piecewise((scale / width, sp.Abs(X) < width / 2), (0, True)), None


def exponential(scale: float = 1.0, width: float = 0.5) -> Surrogate:
    """SLAYER / sinabs exponential (Laplace) surrogate, width relative to theta."""
    return _builtin("exponential", _exponential, scale=scale, width=width)


def fast_sigmoid(scale: float = 1.0, slope: float = 10.0) -> Surrogate:
    """SuperSpike fast sigmoid derivative scale / (1 + slope |u - theta|)^2."""
    return _builtin("fast_sigmoid", _fast_sigmoid, scale=scale, slope=slope)


def sigmoid(scale: float = 1.0, slope: float = 5.0) -> Surrogate:
    """Derivative of scale * logistic(slope (u - theta))."""
    return _builtin("sigmoid", _sigmoid, scale=scale, slope=slope)


def arctan(scale: float = 1.0, slope: float = 2.0) -> Surrogate:
    """SpikingJelly ATan: derivative of scale (atan(pi/2 slope x)/pi + 1/2)."""
    return _builtin("arctan", _arctan, scale=scale, slope=slope)


def gaussian(scale: float = 1.0, width: float = 0.5) -> Surrogate:
    """Normal density of standard deviation ``width`` around theta, times scale."""
    return _builtin("gaussian", _gaussian, scale=scale, width=width)


def triangle(scale: float = 1.0, width: float = 1.0) -> Surrogate:
    """Piecewise-linear bump scale * max(0, 1 - |u - theta| / width)."""
    return _builtin("triangle", _triangle, scale=scale, width=width)


def boxcar(scale: float = 1.0, width: float = 1.0) -> Surrogate:
    """Rectangle of area ``scale``: scale/width on |u - theta| < width/2."""
    return _builtin("boxcar", _boxcar, scale=scale, width=width)


def custom(expr: str | sp.Expr, **constants: float) -> Surrogate:
    """Any expression in ``u`` and ``theta`` (and the named ``constants``).

    A string is parsed over a whitelist (see :mod:`ift_snn.neurons.expressions`).
    """
    names = {"u": U, "theta": THETA}
    for k in constants:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,31}", k):
            raise ValueError(f"custom surrogate constant name {k!r:.80} is not allowed: expected an identifier "
                             "[A-Za-z][A-Za-z0-9_]* of at most 32 characters")
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
    """A surrogate by name (``"exponential"``), by text with constants (``"exponential(width=0.3)"``,
    ``"custom(EXPR)"``: :func:`parse_surrogate`) or the Surrogate itself; ``kwargs`` are constants for a name."""
    if isinstance(spec, Surrogate):
        if kwargs:
            raise ValueError("surrogate parameters can only be given with a surrogate name")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"surrogate must be a name or a Surrogate, got {type(spec).__name__}")
    if spec not in SURROGATES:
        if kwargs or "(" not in spec:
            raise ValueError(f"unknown surrogate {spec!r:.80}; expected one of {', '.join(SURROGATES)} or "
                             "custom(expr)")
        return parse_surrogate(spec)
    return SURROGATES[spec](**kwargs)


_NUMBER = r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_CONSTANT = re.compile(rf"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*({_NUMBER})\s*")


def parse_surrogate_constants(spec: str | Surrogate) -> tuple[Surrogate, frozenset[str]]:
    """(the surrogate of ``spec``, the names of the constants the text gives): ``spec`` a name, ``name(CONSTANT=NUMBER,
    ...)`` with the surrogate's own keyword names, ``custom(EXPR)`` in u and theta (parsed over a whitelist),
    or a Surrogate (every constant given). ValueError saying what is wrong."""
    if isinstance(spec, Surrogate):
        return spec, frozenset(k for k, _ in spec.constants)
    if not isinstance(spec, str):
        raise ValueError(f"expected a surrogate such as exponential or custom(EXPR), got {spec!r:.80}")
    text = spec.strip()
    match = re.fullmatch(r"custom\s*\((.*)\)", text, re.S)
    if match:
        return custom(match.group(1)), frozenset()
    match = re.fullmatch(r"([a-z_]+)\s*(?:\((.*)\))?", text, re.S)
    if not match or match.group(1) not in SURROGATES:
        raise ValueError(f"unknown surrogate {spec!r:.80}; expected one of {', '.join(SURROGATES)}, one with "
                         "constants such as exponential(scale=2, width=0.3), or custom(EXPR) in u and theta")
    name, inner = match.groups()
    takes = list(inspect.signature(SURROGATES[name]).parameters)
    constants: dict[str, float] = {}
    for item in (inner.split(",") if inner and inner.strip() else []):
        constant = _CONSTANT.fullmatch(item)
        if not constant:
            raise ValueError(f"surrogate {spec!r:.80}: {item.strip()!r:.40} is not CONSTANT=NUMBER "
                             f"(e.g. {name}({takes[0]}=2))")
        key, number = constant.groups()
        if key not in takes:
            raise ValueError(f"surrogate {name} has no constant {key!r}; it takes {', '.join(takes)}")
        if key in constants:
            raise ValueError(f"surrogate {spec!r:.80}: {key} is given twice")
        constants[key] = float(number)
    return SURROGATES[name](**constants), frozenset(constants)


def parse_surrogate(spec: str | Surrogate) -> Surrogate:
    """The surrogate of ``spec``: a name, ``name(CONSTANT=NUMBER, ...)`` or ``custom(EXPR)``
    (:func:`parse_surrogate_constants`)."""
    return parse_surrogate_constants(spec)[0]


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
