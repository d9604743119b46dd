"""Neuron models: the discrete Spike Response Model (SRM) and its LIF family.

Every model is an SRM (docs/MATH.md section 1), one neuron, time n = 0..T-1:

    u[n] = sum_k eps[k] a[n-k]  -  sum_k nu[k] s[n-1-k]       (membrane, pre-spike)
    s[n] = f(u[n])                                            (spike function)

with spike-response kernel eps and reset kernel nu (the reset acts with a one
step delay). The LIF family is also held in its first-order membrane form

    I[n] = (syn * a)[n]                               (syn = delta for LIF, alpha_syn^k for CUBA)
    u[n] = alpha u[n-1] + I[n] - rho s[n-1]           (reset="subtract")
    u[n] = alpha u[n-1] (1 - s[n-1]) + I[n]           (reset="zero")
    u[n] <- max(u[n], u_min)                          (optional clip, before spiking)

which is what reset-to-zero and the clip need (they are not fixed kernels).
rho is theta_r for the "reset after decay" convention (docs/MATH.md section 1, the
default) and alpha theta_r for "reset before decay" (sinabs, sinabs-exodus).

Spike functions (theta > 0): ``"single"`` 1[u >= theta]; ``"multi"``
max(floor(u/theta), 0); an int k: min(max(floor(u/theta), 0), k);
``"smooth"`` F(u), the primitive of the surrogate (differentiable, for
finite-difference checks). In the backward pass f'(u) is replaced by the
surrogate sigma(u), and df/dtheta by -kappa(u) sigma(u) with kappa = 1 for
single and smooth, u/theta for multi and max-spike (the chain rule through
f(u - theta) and f(u/theta) respectively).

Initial state u0 (``forward(..., u0=)``): for the membrane form it is u[-1];
for a general SRM it enters as an input at time -1, u[n] += eps[n+1] u0, which
is the same thing for LIF and IF.

Parameters are named symbols (``alpha``, ``theta``, ``theta_r``,
``alpha_mem``, ``alpha_syn`` or the user's kernel parameters) with numeric
values; ``backward`` returns dL/dp for each of them.

Stable by default (docs/MATH.md section 6): the constructors :func:`lif`, :func:`if_neuron`,
:func:`cuba_lif` and :func:`srm` give a surrogate named by a string (the default ``"exponential"``) the
scale min(1, largest stable scale), so that the exact gradient's worst-case step factor is at most 1
(LIF(0.9): exponential(scale=0.95, width=0.5)); a Surrogate object is used as given, and they warn
:class:`ift_snn.symbolic.stability.UnstableModelWarning`, once per model, when its worst factor is above
``stability.WARN_ABOVE`` (1), naming the largest stable scale.
"""

from __future__ import annotations

import dataclasses
import inspect
import keyword
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .expressions import CONSTANTS, FUNCTIONS, parse_expression
from .kernels import (
    _for_arrays,
    MAX_TAPS,
    N,
    Kernel,
    KernelError,
    NoRecurrenceError,
)
from .surrogates import (
    THETA,
    Surrogate,
    exponential,
    get_surrogate,
    parse_surrogate_constants,
)

__all__ = [
    "NeuronModel",
    "Membrane",
    "param_symbol",
    "lif",
    "if_neuron",
    "cuba_lif",
    "srm",
    "alif",
    "resonate_and_fire",
    "BUILTIN_MODELS",
    "BUILTINS",
    "builtin_model",
    "get_model",
    "model_to_dict",
    "model_from_dict",
    "check_identifier",
    "CONVENTIONS",
]

SPIKE_NAMES = ("single", "multi", "smooth")
RESETS = ("subtract", "zero")
#: The conventions a model may declare (shown in its repr; "" for none).
CONVENTIONS = ("", "reset after decay", "reset before decay")
#: Model names: lower-case identifiers of bounded length. They become part of generated
#: kernel names, so nothing else is ever accepted (checked in every constructor and loader).
NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_]*")
MAX_NAME_LENGTH = 40
#: Parameter names: ASCII identifiers (they become ``p_<name>`` in generated code).
PARAM_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
MAX_PARAM_LENGTH = 32


def check_identifier(value: object, what: str = "model name") -> str:
    """``value`` if it is a lower-case identifier ``[a-z_][a-z0-9_]*`` of at most 40 characters.

    Model names end up in generated source (kernel names), so this is the
    only text of a user's that may; anything else raises ValueError naming it.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}: {value!r:.80}")
    if len(value) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what} {value!r:.80} is not allowed: expected a lower-case identifier [a-z_][a-z0-9_]* "
            f"of at most {MAX_NAME_LENGTH} characters"
        )
    return value


#: Names the derivations use for their own variables; a parameter may not take them.
#: Names the math module and the printers use in generated code.
_MATH_NAMES = frozenset("math np numba prange floor ceil pow fabs fmax fmin expf logf e inf nan".split())

RESERVED_NAMES = frozenset(
    "n u s a g m f k x y I pre z r q d c sigma dl_ds grad_a u_prev s_prev d_next u_init grad_u_init".split()
)


def param_symbol(name: str) -> sp.Symbol:
    """The SymPy symbol of a model parameter; ``theta`` is shared with the surrogates."""
    if name == "theta":
        return THETA
    if not isinstance(name, str):
        raise TypeError(f"a parameter name must be a string, got {type(name).__name__}: {name!r:.80}")
    if len(name) > MAX_PARAM_LENGTH or not PARAM_PATTERN.fullmatch(name) or keyword.iskeyword(name):
        raise ValueError(
            f"{name!r:.80} cannot be a parameter name: expected an ASCII identifier [A-Za-z][A-Za-z0-9_]* "
            f"of at most {MAX_PARAM_LENGTH} characters (not a Python keyword)"
        )
    if name in FUNCTIONS or name in CONSTANTS or name in _MATH_NAMES:
        raise ValueError(
            f"{name!r} cannot be a parameter name: it is the name of a function or constant of the "
            f"expression language; rename it (e.g. --param {name}_0=VALUE or params={{'{name}_0': ...}})"
        )
    if name in RESERVED_NAMES or name.startswith(("w_", "v_", "sg_")):
        raise ValueError(
            f"{name!r} cannot be a parameter name: it is reserved for the "
            f"derivation's own variables ({', '.join(sorted(RESERVED_NAMES))}, w_*, v_*, sg_*)"
        )
    return sp.Symbol(name, positive=True)


@dataclass(frozen=True)
class Membrane:
    """First-order membrane form: u[n] = alpha u[n-1] + (syn * a)[n] - rho s[n-1]."""

    alpha: sp.Expr
    rho: sp.Expr
    syn: Kernel


@dataclass(frozen=True, repr=False)
class NeuronModel:
    """An immutable, hashable neuron definition (see the module docstring).

    Build one with :func:`lif`, :func:`if_neuron`, :func:`cuba_lif` or
    :func:`srm` rather than directly: they validate ranges and set the kernels.
    """

    name: str
    eps: Kernel
    nu: Kernel | None
    params: tuple[tuple[str, float], ...]
    spike: str | int = "single"
    surrogate: Surrogate = field(default_factory=exponential)
    reset: str = "subtract"
    u_min: float | None = None
    membrane: Membrane | None = None
    convention: str = ""

    def __post_init__(self) -> None:
        check_identifier(self.name, "model name")
        if self.convention not in CONVENTIONS:
            raise ValueError(f"convention={self.convention!r:.80} is not known; expected one of {CONVENTIONS}")
        if not isinstance(self.surrogate, Surrogate):
            raise TypeError(f"surrogate must be a Surrogate, got {type(self.surrogate).__name__}")
        if not isinstance(self.params, tuple):
            raise TypeError(f"params must be a tuple of (name, value) pairs, got {type(self.params).__name__}")
        for item in self.params:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"params must be (name, value) pairs, got {item!r:.80}")
            param_symbol(item[0])
        if len({k for k, _ in self.params}) != len(self.params):
            raise ValueError(f"parameter names repeat: {[k for k, _ in self.params]}")
        if self.u_min is not None and (isinstance(self.u_min, bool) or not isinstance(self.u_min, float)):
            raise TypeError(f"u_min must be a float or None, got {self.u_min!r:.80}")
        _check_spike(self.spike)
        if self.reset not in RESETS:
            raise ValueError(f"reset={self.reset!r} is not known; expected one of {RESETS}")
        names = [k for k, _ in self.params]
        if "theta" not in names:
            raise ValueError("a model needs a threshold parameter 'theta'")
        for k, v in self.params:
            if not isinstance(v, float) or not math.isfinite(v):
                raise ValueError(f"parameter {k}={v!r} must be a finite float")
        _check_positive("theta", self.theta)
        if self.reset == "zero":
            if self.membrane is None:
                raise ValueError("reset='zero' needs a first-order membrane model (lif, if_neuron, cuba_lif)")
            if self.spike not in ("single", "smooth"):
                raise ValueError(f"reset='zero' needs spike='single' or 'smooth', got spike={self.spike!r}")
        elif self.nu is None:
            raise ValueError("reset='subtract' needs a reset kernel nu")
        if self.u_min is not None:
            if self.membrane is None:
                raise ValueError("u_min (clip) needs a first-order membrane model (lif, if_neuron, cuba_lif)")
            if not math.isfinite(self.u_min) or self.u_min >= self.theta:
                raise ValueError(f"u_min={self.u_min!r} is out of range: expected a finite number below theta")
        if self.spike == "smooth":
            if self.surrogate.primitive is None or not self.surrogate.shift_invariant:
                raise ValueError(
                    f"spike='smooth' needs a shift-invariant surrogate with a primitive (sigmoid, arctan, "
                    f"gaussian), got {self.surrogate!r}"
                )
        known = set(self.symbols)
        for kname, kernel in (("eps", self.eps), ("nu", self.nu)):
            if kernel is None:
                continue
            missing = kernel.parameters - known
            if missing:
                raise ValueError(
                    f"kernel {kname} = {kernel} uses {sorted(map(str, missing))} with no value; "
                    f"give them in params"
                )
            if self.membrane is None:  # (a membrane model runs its synaptic filter, not eps and nu)
                kernel.check_defined(self.values, f"kernel {kname}")
        if self.membrane is not None:
            self.membrane.syn.check_defined(self.values, "the synaptic kernel")

    # ------------------------------------------------------------ parameters
    @property
    def theta(self) -> float:
        """Firing threshold."""
        return dict(self.params)["theta"]

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.params)

    @property
    def structure(self) -> tuple:
        """Everything but the parameter values: the key of compiled kernels (values are kernel arguments)."""
        surrogate = self.surrogate if self.spike == "smooth" else self.surrogate.structure
        return (self.name, self.eps, self.nu, self.parameter_names, self.spike, surrogate, self.reset,
                self.u_min, self.membrane)

    @property
    def surrogate_arguments(self) -> tuple[tuple[sp.Symbol, float], ...]:
        """The surrogate constants generated kernels take as arguments (sg_scale, ...), with values.

        Empty for custom surrogates and for the smooth spike (whose primitive is baked in).
        """
        return () if self.spike == "smooth" else self.surrogate.arguments

    @property
    def symbols(self) -> tuple[sp.Symbol, ...]:
        """Parameter symbols, in the order of ``params``."""
        return tuple(param_symbol(k) for k, _ in self.params)

    @property
    def values(self) -> dict[sp.Symbol, float]:
        """{symbol: value} for numeric evaluation of kernels."""
        return {param_symbol(k): v for k, v in self.params}

    def with_params(self, **values: float) -> NeuronModel:
        """A copy with some parameter values replaced (for finite differences, training)."""
        unknown = set(values) - set(self.parameter_names)
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}; this model has {self.parameter_names}")
        params = tuple((k, _as_float(k, values[k]) if k in values else v) for k, v in self.params)
        new = NeuronModel(
            self.name, self.eps, self.nu, params, self.spike, self.surrogate, self.reset, self.u_min,
            self.membrane, self.convention,
        )
        _check_model_ranges(new)
        return new

    # ---------------------------------------------------------- spike function
    def spike_fn(self, u: np.ndarray) -> np.ndarray:
        """s = f(u), elementwise, same dtype as u."""
        theta = u.dtype.type(self.theta)
        if self.spike == "single":
            return (u >= theta).astype(u.dtype)
        if self.spike == "smooth":
            return self.surrogate.antiderivative(u, self.theta)
        counts = np.maximum(np.floor(u / theta), 0).astype(u.dtype)
        if isinstance(self.spike, int):
            counts = np.minimum(counts, u.dtype.type(self.spike))
        return counts

    def sigma(self, u: np.ndarray) -> np.ndarray:
        """Surrogate derivative sigma(u) that replaces f'(u)."""
        return self.surrogate(u, self.theta)

    def theta_factor(self, u: np.ndarray) -> np.ndarray | float:
        """kappa(u) with df/dtheta := -kappa(u) sigma(u)."""
        if self.spike in ("single", "smooth"):
            return 1.0
        return u / u.dtype.type(self.theta)

    # ----------------------------------------------------------------- display
    def __repr__(self) -> str:
        parts = [f"{k}={v:g}" for k, v in self.params]
        if self.membrane is None or self.name not in ("lif", "if", "cuba_lif"):
            parts = [f"eps={self.eps}", f"nu={self.nu}"] + parts
        parts.append(f"spike={self.spike!r}")
        parts.append(f"surrogate={self.surrogate!r}")
        parts.append(f"reset={self.reset!r}")
        if self.u_min is not None:
            parts.append(f"u_min={self.u_min:g}")
        if self.convention:
            parts.append(f"convention={self.convention!r}")
        return f"NeuronModel({self.name}: " + ", ".join(parts) + ")"


# ----------------------------------------------------------------- validation
def _check_spike(spike: object) -> None:
    if isinstance(spike, bool):
        raise TypeError(f"spike={spike!r}: expected 'single', 'multi', 'smooth' or an int >= 1")
    if isinstance(spike, (int, np.integer)):
        if spike < 1:
            raise ValueError(f"spike={spike!r} is out of range: the maximum spikes per step must be >= 1")
        return
    if spike not in SPIKE_NAMES:
        raise ValueError(f"spike={spike!r} is not known; expected 'single', 'multi', 'smooth' or an int >= 1")


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name}={str(value)[:20]}... ({len(str(value))} digits) is out of range: expected a "
                         "finite float") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is out of range: expected a finite number")
    return value


#: Smallest threshold: the surrogate's 1/(width theta) must stay finite in float32 (theta 1e-320, a subnormal,
#: made every surrogate NaN).
MIN_THETA = 1e-30


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}={value!r} is out of range: expected {name} > 0")
    if name == "theta" and not value >= MIN_THETA:
        raise ValueError(f"theta={value!r} is out of range: expected theta >= {MIN_THETA:g} (the surrogate's "
                         "1/(width theta) overflows below it; rescale the membrane instead)")


def _check_alpha(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"{name}={value!r} is out of range: expected 0 < {name} <= 1")


def _check_model_ranges(model: NeuronModel) -> None:
    for k, v in model.params:
        if k.startswith("alpha"):
            _check_alpha(k, v)
        elif k == "theta_r" and v < 0:
            raise ValueError(f"theta_r={v!r} is out of range: expected theta_r >= 0")


def chooses_scale(surrogate: str | Surrogate) -> bool:
    """Whether the constructors choose the surrogate's scale (the largest stable one, at most the family's
    default: :func:`ift_snn.symbolic.stability.stable_default`): for a built-in surrogate given as text without a
    scale (the default ``"exponential"``, ``"exponential(width=0.3)"``), not for a Surrogate object."""
    return isinstance(surrogate, str) and _parsed(surrogate)[1]


def _parsed(surrogate: str) -> tuple[Surrogate, bool]:
    parsed, given = parse_surrogate_constants(surrogate)
    return parsed, parsed.template is not None and "scale" not in given


def _spike_and_surrogate(spike, surrogate) -> tuple[str | int, Surrogate, bool]:
    """(spike, surrogate, :func:`chooses_scale`)."""
    _check_spike(spike)
    if isinstance(spike, np.integer):
        spike = int(spike)
    if isinstance(surrogate, str):
        return (spike, *_parsed(surrogate))
    return spike, get_surrogate(surrogate), False


def _clip(u_min) -> float | None:
    return None if u_min is None else _as_float("u_min", u_min)


def _reset_amount(theta_r, params: list[tuple[str, float]]) -> sp.Expr:
    """The symbol of the reset amount: theta itself, or a parameter theta_r >= 0 of its own."""
    if theta_r is None:
        return THETA
    theta_r = _as_float("theta_r", theta_r)
    if theta_r < 0:
        raise ValueError(f"theta_r={theta_r!r} is out of range: expected theta_r >= 0")
    params.append(("theta_r", theta_r))
    return param_symbol("theta_r")


#: What the public constructors apply to every model they build, ``hook(model, named) -> model``: the stable
#: default of :mod:`ift_snn.symbolic.stability`, which installs it when imported (``import ift_snn`` imports it before any
#: model can be built). Stability reads a model's derivation (``symbolic/``), a layer above these definitions:
#: installing it from there keeps the imports pointing down (no models -> stability -> symbolic -> models cycle).
_ON_CONSTRUCTION: list = []


def on_construction(hook) -> None:
    """Install ``hook(model, named) -> model`` as what the constructors apply (replacing any before it)."""
    _ON_CONSTRUCTION[:] = [hook]


def _checked(model: NeuronModel, named: bool) -> NeuronModel:
    """``model`` stable by default: a surrogate given by name (``named``) gets the scale
    min(1, largest stable scale) (:func:`ift_snn.symbolic.stability.stable_default`); then
    :func:`ift_snn.symbolic.stability.warn_if_unstable`: an UnstableModelWarning, once per model, when the worst-case
    step factor of its exact gradient is above ``stability.WARN_ABOVE`` (1). Only the public constructors
    call it (not ``with_params``, which training calls every step). Installed by :func:`on_construction`."""
    if not _ON_CONSTRUCTION:
        raise RuntimeError("ift_snn.symbolic.stability is not imported: import ift_snn (the package) before building models")
    for hook in _ON_CONSTRUCTION:
        model = hook(model, named)
    return model


# --------------------------------------------------------------- constructors
def lif(
    alpha: float,
    theta: float = 1.0,
    *,
    theta_r: float | None = None,
    reset_before_decay: bool = False,
    spike: str | int = "single",
    surrogate: str | Surrogate = "exponential",
    reset: str = "subtract",
    u_min: float | None = None,
) -> NeuronModel:
    """Leaky integrate-and-fire neuron, 0 < alpha <= 1 (alpha = exp(-dt/tau)).

    Reset after decay (default, docs/MATH.md section 1):
        u[n] = alpha u[n-1] + a[n] - theta_r s[n-1],   eps[k] = alpha^k, nu[k] = theta_r alpha^k
    ``reset_before_decay=True`` (sinabs / sinabs-exodus):
        u[n] = alpha (u[n-1] - theta_r s[n-1]) + a[n], nu[k] = theta_r alpha^(k+1)
    ``reset="zero"``: u[n] = alpha u[n-1] (1 - s[n-1]) + a[n] (state dependent, no nu).
    theta_r defaults to theta and is then the same parameter (dL/dtheta includes
    the reset path); pass it to make it a parameter of its own.
    """
    alpha = _as_float("alpha", alpha)
    theta = _as_float("theta", theta)
    _check_alpha("alpha", alpha)
    _check_positive("theta", theta)
    params: list[tuple[str, float]] = [("alpha", alpha), ("theta", theta)]
    a_sym = param_symbol("alpha")
    r_sym = _reset_amount(theta_r, params)
    rho = a_sym * r_sym if reset_before_decay else r_sym
    spike, surrogate, named = _spike_and_surrogate(spike, surrogate)
    convention = "reset before decay" if reset_before_decay else "reset after decay"
    return _checked(NeuronModel(
        name="lif",
        eps=Kernel.closed_form(a_sym**N),
        nu=Kernel.closed_form(rho * a_sym**N) if reset == "subtract" else None,
        params=tuple(params),
        spike=spike,
        surrogate=surrogate,
        reset=reset,
        u_min=_clip(u_min),
        membrane=Membrane(alpha=a_sym, rho=rho if reset == "subtract" else sp.Integer(0),
                          syn=Kernel.from_taps([1.0])),
        convention=convention,
    ), named)


def if_neuron(
    theta: float = 1.0,
    *,
    theta_r: float | None = None,
    spike: str | int = "single",
    surrogate: str | Surrogate = "exponential",
    reset: str = "subtract",
    u_min: float | None = None,
) -> NeuronModel:
    """Integrate-and-fire (no leak, alpha = 1): u[n] = u[n-1] + a[n] - theta_r s[n-1]."""
    theta = _as_float("theta", theta)
    _check_positive("theta", theta)
    params: list[tuple[str, float]] = [("theta", theta)]
    rho = _reset_amount(theta_r, params)
    spike, surrogate, named = _spike_and_surrogate(spike, surrogate)
    one = sp.Integer(1)
    return _checked(NeuronModel(
        name="if",
        eps=Kernel.closed_form(one),
        nu=Kernel.closed_form(rho) if reset == "subtract" else None,
        params=tuple(params),
        spike=spike,
        surrogate=surrogate,
        reset=reset,
        u_min=_clip(u_min),
        membrane=Membrane(alpha=one, rho=rho if reset == "subtract" else sp.Integer(0),
                          syn=Kernel.from_taps([1.0])),
        convention="reset after decay",
    ), named)


def cuba_lif(
    alpha_mem: float,
    alpha_syn: float,
    theta: float = 1.0,
    *,
    theta_r: float | None = None,
    spike: str | int = "single",
    surrogate: str | Surrogate = "exponential",
    reset: str = "subtract",
    u_min: float | None = None,
) -> NeuronModel:
    """Current-based LIF with a synaptic current:

        i[n] = alpha_syn i[n-1] + a[n]
        u[n] = alpha_mem u[n-1] + i[n] - theta_r s[n-1]

    As an SRM: eps[k] = sum_j alpha_syn^j alpha_mem^(k-j), nu[k] = theta_r alpha_mem^k.
    u0 is the initial membrane (the synaptic current starts at 0).
    """
    alpha_mem = _as_float("alpha_mem", alpha_mem)
    alpha_syn = _as_float("alpha_syn", alpha_syn)
    theta = _as_float("theta", theta)
    _check_alpha("alpha_mem", alpha_mem)
    _check_alpha("alpha_syn", alpha_syn)
    _check_positive("theta", theta)
    params: list[tuple[str, float]] = [("alpha_mem", alpha_mem), ("alpha_syn", alpha_syn), ("theta", theta)]
    am, asyn = param_symbol("alpha_mem"), param_symbol("alpha_syn")
    rho = _reset_amount(theta_r, params)
    if alpha_mem == alpha_syn:
        raise ValueError(
            f"cuba_lif needs alpha_mem != alpha_syn (got both {alpha_mem}); the double-exponential "
            "kernel degenerates to (n+1) alpha^n: use srm(eps='(n+1)*alpha**n', ...) for that case"
        )
    eps = (am ** (N + 1) - asyn ** (N + 1)) / (am - asyn)
    spike, surrogate, named = _spike_and_surrogate(spike, surrogate)
    return _checked(NeuronModel(
        name="cuba_lif",
        eps=Kernel.closed_form(eps),
        nu=Kernel.closed_form(rho * am**N) if reset == "subtract" else None,
        params=tuple(params),
        spike=spike,
        surrogate=surrogate,
        reset=reset,
        u_min=_clip(u_min),
        membrane=Membrane(alpha=am, rho=rho if reset == "subtract" else sp.Integer(0),
                          syn=Kernel.closed_form(asyn**N)),
        convention="reset after decay",
    ), named)


KernelSpec = str | sp.Expr | Kernel | Sequence[float]


def _kernel(spec: KernelSpec, what: str, names: Mapping[str, sp.Symbol], truncate: int | None,
            values: Mapping[sp.Symbol, float], truncated: list | None = None) -> Kernel:
    """The kernel of ``spec``; a closed form without a finite recurrence as its first ``truncate`` taps (its
    name ``what`` then goes into ``truncated``)."""
    if isinstance(spec, Kernel):
        return spec
    if isinstance(spec, str):
        try:
            expr = parse_expression(spec, {"n": N, **names}, what=f"kernel {what}")
        except ValueError as exc:
            unknown = re.search(r"unknown name '(\w+)'", str(exc))
            if unknown is None:
                raise
            name = unknown.group(1)
            raise type(exc)(f"{exc}. If {name!r} is a parameter of the kernel, give its value: "
                            f"srm(..., params={{'{name}': VALUE}}) or, on the command line, --param {name}=VALUE") \
                from None
    elif isinstance(spec, sp.Expr):
        expr = spec
    elif isinstance(spec, (int, float)):
        expr = sp.sympify(spec)
    else:
        try:
            return Kernel.from_taps(spec)
        except KernelError as exc:
            raise KernelError(f"kernel {what}: {exc}") from None
    try:
        return Kernel.closed_form(expr)
    except NoRecurrenceError as exc:
        if truncate is None:
            raise NoRecurrenceError(f"kernel {what} = {expr}: {exc}") from None
        if truncated is not None:
            truncated.append(what)
        return _truncated(expr, truncate, what, values)


def _truncated(expr: sp.Expr, length: int, what: str, values: Mapping[sp.Symbol, float]) -> Kernel:
    """The first ``length`` values of ``expr`` as a finite kernel sum_k h[k] delta(n - k) that keeps the
    parameters (each tap an expression in them, so dL/dp stays exact for the truncated kernel)."""
    if not (expr.free_symbols - {N}):  # numbers only: evaluated at every n at once (1024 nested sin in ms)
        with np.errstate(all="ignore"):
            numbers = np.asarray(sp.lambdify(N, _for_arrays(expr), modules="numpy")(np.arange(length, dtype=np.float64)),
                                 dtype=np.complex128)
        numbers = np.broadcast_to(numbers, (length,))
        bad = np.flatnonzero(~np.isfinite(numbers) | (np.abs(numbers.imag) > 1e-12))
        if bad.size:
            raise KernelError(f"kernel {what} = {expr} is not a finite real number at n = {int(bad[0])}")
        return Kernel.from_taps(numbers.real.tolist())
    taps = [sp.simplify(expr.subs(N, k)) for k in range(length)]
    for k, tap in enumerate(taps):
        v = complex(sp.N(tap.subs(values)))
        if abs(v.imag) > 1e-12 or not math.isfinite(v.real):
            raise KernelError(f"kernel {what} = {expr} is not a finite real number at n = {k}")
    if not any(tap.free_symbols for tap in taps):
        return Kernel.from_taps([float(tap) for tap in taps])
    closed = sum((tap * sp.KroneckerDelta(N, k) for k, tap in enumerate(taps)), sp.Integer(0))
    while len(taps) > 1 and taps[-1] == 0:
        taps.pop()
    return Kernel(expr=closed, taps=None, num=tuple(taps), den=(sp.Integer(1),))


def _membrane_form(eps: Kernel, nu: Kernel, what: str) -> Membrane:
    """The first-order membrane u[n] = alpha u[n-1] + (syn * a)[n] - rho s[n-1] of an SRM, or an error.

    Defined when nu = rho alpha^n (one pole: the membrane's decay) and alpha is a pole of eps, so that
    eps = syn * alpha^n with syn(x) = eps(x) (1 - alpha x) (a finite kernel for eps = c alpha^n, the
    synaptic filter of a CUBA neuron for a difference of exponentials). Reset to zero and the clip
    u_min act on this membrane; a general SRM has none, and ``what`` is refused naming why.
    """
    if nu.order != 1 or len(nu.num) != 1:
        raise ValueError(f"{what} needs a first-order membrane: nu = rho*alpha**n (one pole, the membrane's "
                         f"decay), got nu = {nu} with {nu.order} pole(s); a general SRM has no membrane "
                         "state to reset or clip")
    alpha, rho = sp.simplify(-nu.den[1]), nu.num[0]
    x = sp.Symbol("x")
    den = sum((c * x**i for i, c in enumerate(eps.den)), sp.Integer(0))
    quotient, remainder = sp.div(sp.Poly(den, x), sp.Poly(1 - alpha * x, x))
    if eps.expr is None or eps.order == 0 or sp.simplify(remainder.as_expr()) != 0:
        raise ValueError(f"{what} needs eps to decay with the membrane's pole alpha = {alpha} of nu "
                         f"(eps = syn * alpha**n), got eps = {eps}")
    syn = Kernel.closed_form(eps.expr - alpha * eps.expr.subs(N, N - 1) * sp.Heaviside(N - 1, 1))
    return Membrane(alpha=alpha, rho=rho, syn=syn)


def srm(
    eps: KernelSpec,
    nu: KernelSpec,
    theta: float = 1.0,
    *,
    params: Mapping[str, float] | None = None,
    spike: str | int = "single",
    surrogate: str | Surrogate = "exponential",
    truncate: int | None = None,
    name: str = "srm",
    theta_r: float | None = None,
    reset: str = "subtract",
    u_min: float | None = None,
) -> NeuronModel:
    """A Spike Response Model with any causal kernels eps and nu:

        u[n] = (eps * a)[n] - (nu * s)[n-1],   s[n] = f(u[n])

    Each kernel is a closed form in ``n`` (string, parsed over a whitelist, or
    SymPy expression), a :class:`~ift_snn.neurons.kernels.Kernel`, or a sequence of
    taps h[0], h[1], .... Free names of closed forms are parameters whose
    values come from ``params`` (``theta`` is the threshold and may appear in
    nu). A closed form without a finite linear recurrence raises
    :class:`~ift_snn.neurons.kernels.NoRecurrenceError` unless ``truncate=K`` asks for
    its first K taps instead (each tap keeps its parameters).

    Options, each exact in every combination it is accepted in (tested against the BPTT oracle):

    - ``theta_r``: the reset amount as a parameter of its own; it replaces ``theta`` in nu (nu must
      use theta), as ``lif(theta_r=...)`` does.
    - ``reset="zero"``: the spike sets the membrane to zero, u[n] = alpha u[n-1] (1 - s[n-1]) + (syn * a)[n].
      Defined for a first-order membrane: nu = rho*alpha**n names the membrane's decay alpha (its
      amplitude is replaced by the membrane itself) and eps must decay with alpha (eps = syn * alpha**n).
      Needs spike='single' or 'smooth'.
    - ``u_min``: the membrane is clipped from below, u[n] = max(u[n], u_min), for the same first-order
      membranes. A general SRM has no membrane state: both are refused there with a message naming why.

    Example: ``srm("n*alpha**n", "theta*beta**n", params={"alpha": 0.8, "beta": 0.9})``.
    """
    theta = _as_float("theta", theta)
    _check_positive("theta", theta)
    params = dict(params or {})
    if "theta" in params:
        raise ValueError("give the threshold as theta=..., not in params")
    if "theta_r" in params:
        raise ValueError("give the reset amount as theta_r=..., not in params")
    if reset not in RESETS:
        raise ValueError(f"reset={reset!r:.40} is not known; expected one of {RESETS}")
    values = {}
    for k, v in params.items():
        values[k] = _as_float(k, v)
    names = {k: param_symbol(k) for k in values}
    names["theta"] = THETA
    numeric = {names[k]: v for k, v in values.items()} | {THETA: theta}
    if truncate is not None:
        if isinstance(truncate, (bool, np.bool_)) or not isinstance(truncate, (int, np.integer)):
            raise TypeError(f"truncate={truncate!r} must be an int >= 1 or None")
        if not 1 <= truncate <= MAX_TAPS:
            raise ValueError(f"truncate={truncate!r} is out of range: expected an int from 1 to {MAX_TAPS}")
        truncate = int(truncate)
    truncated: list[str] = []
    eps_k = _kernel(eps, "eps", names, truncate, numeric, truncated)
    nu_k = _kernel(nu, "nu", names, truncate, numeric, truncated)
    if truncate is not None and not truncated:
        raise ValueError(f"truncate={truncate} has nothing to truncate: eps = {eps_k} and nu = {nu_k} each have a "
                         "finite recurrence (truncate=K replaces a closed form without one by its first K taps); "
                         "drop truncate, or give the kernel as a list of taps")
    if all(v == 0 for v in eps_k.num):
        raise KernelError(f"kernel eps = {eps_k} is identically zero")
    used = (eps_k.parameters | nu_k.parameters) - {THETA}
    unused = set(names.values()) - used - {THETA}
    if unused:
        raise ValueError(f"params {sorted(map(str, unused))} do not appear in eps or nu")
    if theta_r is not None:
        theta_r = _as_float("theta_r", theta_r)
        if theta_r < 0:
            raise ValueError(f"theta_r={theta_r!r} is out of range: expected theta_r >= 0")
        if THETA not in nu_k.parameters or nu_k.expr is None:
            raise ValueError(f"theta_r does not apply: nu = {nu_k} does not use theta (write the reset amount "
                             "into nu, e.g. nu='theta*beta**n', to make theta_r replace it)")
        nu_k = Kernel.closed_form(nu_k.expr.subs(THETA, param_symbol("theta_r")))
        values["theta_r"] = theta_r
    spike, surrogate, named = _spike_and_surrogate(spike, surrogate)
    ordered = [(k, values[k]) for k in sorted(values)] + [("theta", theta)]
    membrane = None
    if reset == "zero" or u_min is not None:
        what = " and ".join(w for w, on in (("reset='zero'", reset == "zero"), ("u_min (clip)", u_min is not None))
                            if on)
        membrane = _membrane_form(eps_k, nu_k, what)
        if reset == "zero":
            if "theta_r" in values:
                raise ValueError("theta_r does not apply with reset='zero': the reset amount is the membrane itself")
            unused = membrane.rho.free_symbols - eps_k.parameters - {THETA}
            if unused:
                raise ValueError(f"with reset='zero' the amplitude of nu = {nu_k} is not used (the membrane itself "
                                 f"is the reset amount), so {sorted(map(str, unused))} would have no effect: "
                                 "write nu as theta*alpha**n")
            membrane = dataclasses.replace(membrane, rho=sp.Integer(0))
            nu_k = None
    model = NeuronModel(
        name=name,
        eps=eps_k,
        nu=nu_k,
        params=tuple(ordered),
        spike=spike,
        surrogate=surrogate,
        reset=reset,
        u_min=_clip(u_min),
        membrane=membrane,
    )
    # A general SRM's step factor comes from its recurrence's derivation (50-120 ms per structure, cached: the
    # kernels derive it too).
    return _checked(model, named)


def alif(
    alpha: float = 0.9,
    rho: float = 0.97,
    beta: float = 0.2,
    theta: float = 1.0,
    *,
    spike: str | int = "single",
    surrogate: str | Surrogate = "exponential",
) -> NeuronModel:
    """Adaptive-threshold LIF (ALIF, Bellec et al. 2018), the threshold adaptation as a slow reset kernel:

        u[n] = alpha u[n-1] + a[n] - theta s[n-1] - b[n],   b[n] = rho b[n-1] + beta s[n-1]

    i.e. eps = alpha^n, nu = theta alpha^n + beta rho^n (the adaptive threshold b acts on u as a second,
    slower reset with time constant rho, 0 < rho <= 1, strength beta >= 0). Every parameter is trainable.
    """
    for name, value in (("alpha", alpha), ("rho", rho)):
        _check_alpha(name, _as_float(name, value))
    if not _as_float("beta", beta) >= 0:
        raise ValueError(f"beta={beta!r} is out of range: expected beta >= 0")
    return srm("alpha**n", "theta*alpha**n + beta*rho**n", theta,
               params={"alpha": alpha, "rho": rho, "beta": beta}, spike=spike, surrogate=surrogate, name="alif")


def resonate_and_fire(
    rho: float = 0.95,
    omega: float = 0.4,
    theta: float = 1.0,
    *,
    spike: str | int = "single",
    surrogate: str | Surrogate = "exponential",
) -> NeuronModel:
    """Resonate-and-fire neuron (Izhikevich 2001; lava-dl's RF): a damped oscillator read at its real part,

        z[n] = rho e^(i omega) z[n-1] + a[n] - theta s[n-1],   u[n] = Re z[n]

    i.e. eps = rho^n cos(omega n) and nu = theta rho^n cos(omega n) (the reset is a kick of -theta into
    the oscillator). Its recurrence is real and of order 2: h[k] = 2 rho cos(omega) h[k-1] - rho^2 h[k-2].
    0 < rho <= 1 (damping), omega (radians per step) and theta are trainable.
    """
    _check_alpha("rho", _as_float("rho", rho))
    omega = _as_float("omega", omega)
    if not 0 < omega < math.pi:
        raise ValueError(f"omega={omega!r} is out of range: expected 0 < omega < pi (radians per step)")
    return srm("rho**n*cos(omega*n)", "theta*rho**n*cos(omega*n)", theta, params={"rho": rho, "omega": omega},
               spike=spike, surrogate=surrogate, name="rf")


@dataclass(frozen=True)
class Builtin:
    """A named model: its constructor and the keyword arguments that define it (overridable by name)."""

    constructor: object
    kwargs: tuple[tuple[str, object], ...] = ()

    def build(self, **overrides) -> NeuronModel:
        """The model with some arguments or kernel parameters replaced (see :func:`builtin_model`)."""
        kwargs = dict(self.kwargs)
        if not overrides:
            return self.constructor(**kwargs)
        params = dict(kwargs.get("params") or {})
        accepted = [k for k, p in inspect.signature(self.constructor).parameters.items()
                    if p.kind is not p.VAR_KEYWORD and k not in ("eps", "nu", "params", "name", "truncate")]
        for key, value in overrides.items():
            if key in params:
                params[key] = value
            elif key in accepted:
                kwargs[key] = value
            else:
                names = sorted(set(accepted) | set(params))
                raise ValueError(f"{key}={value!r:.40} does not apply to this model: it takes {', '.join(names)}")
        if params:
            kwargs["params"] = params
        return self.constructor(**kwargs)


def _builtin(constructor, **kwargs) -> Builtin:
    return Builtin(constructor, tuple(kwargs.items()))


BUILTINS: dict[str, Builtin] = {
    "lif": _builtin(lif, alpha=0.9),
    "lif_before_decay": _builtin(lif, alpha=0.9, reset_before_decay=True),
    "if": _builtin(if_neuron, theta=1.0),
    "lif_multi": _builtin(lif, alpha=0.9, spike="multi"),
    "lif_max2": _builtin(lif, alpha=0.9, spike=2),
    "lif_clip": _builtin(lif, alpha=0.9, u_min=-0.5),
    "lif_reset_zero": _builtin(lif, alpha=0.9, reset="zero"),
    "cuba_lif": _builtin(cuba_lif, alpha_mem=0.9, alpha_syn=0.8),
    "alpha_srm": _builtin(srm, eps="n*alpha**n", nu="theta*beta**n", params={"alpha": 0.8, "beta": 0.9},
                             name="alpha_srm"),
    "taps4_srm": _builtin(srm, eps=[0.5, 1.0, 0.6, 0.2], nu=[1.0, 0.5, 0.25, 0.125], name="taps4_srm"),
    "alif": _builtin(alif),
    "rf": _builtin(resonate_and_fire),
}

#: {name: zero-argument constructor} of the built-in models (see :data:`BUILTINS` for their arguments).
BUILTIN_MODELS = {name: b.build for name, b in BUILTINS.items()}


def get_model(name: str) -> NeuronModel:
    """A built-in model by name (see :data:`BUILTIN_MODELS`)."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown model {name!r}; built-ins are {', '.join(BUILTIN_MODELS)}")
    return BUILTIN_MODELS[name]()


def builtin_model(name: str, **overrides) -> NeuronModel:
    """A built-in model with overrides: constructor arguments (``theta=2``, ``surrogate="fast_sigmoid"``,
    ``spike="multi"``, ``reset="zero"``, ``u_min=-1``, ``theta_r=0.5``, ``alpha=0.8``) or the values of its
    kernel parameters (``beta=0.95`` of alpha_srm). An override the model does not take is an error naming
    what it takes, never ignored."""
    if name not in BUILTINS:
        raise ValueError(f"unknown model {name!r}; built-ins are {', '.join(BUILTINS)}")
    return BUILTINS[name].build(**overrides)


# ------------------------------------------------------------ serialisation
def _kernel_to_dict(kernel: Kernel | None):
    if kernel is None:
        return None
    if kernel.taps is not None:
        return {"taps": list(kernel.taps)}
    return {"expr": sp.sstr(kernel.expr)}


def _kernel_from_dict(data, names: Mapping[str, sp.Symbol]) -> Kernel | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise TypeError(f"a stored kernel must be a mapping with 'taps' or 'expr', got {data!r:.80}")
    if "taps" in data:
        return Kernel.from_taps(data["taps"])
    return Kernel.closed_form(parse_expression(data["expr"], {"n": N, **names}, what="stored kernel"))


def model_to_dict(model: NeuronModel) -> dict:
    """A JSON-able description of ``model`` (for saving networks); see :func:`model_from_dict`."""
    from .surrogates import SURROGATES

    surrogate = model.surrogate
    if surrogate.name in SURROGATES:
        sur = {"name": surrogate.name, "constants": dict(surrogate.constants)}
    else:
        sur = {"name": "custom", "expr": sp.sstr(surrogate.expr)}
    mem = model.membrane
    return {
        "name": model.name,
        "params": [[k, v] for k, v in model.params],
        "eps": _kernel_to_dict(model.eps),
        "nu": _kernel_to_dict(model.nu),
        "spike": model.spike,
        "surrogate": sur,
        "reset": model.reset,
        "u_min": model.u_min,
        "convention": model.convention,
        "membrane": None if mem is None else {"alpha": sp.sstr(mem.alpha), "rho": sp.sstr(mem.rho),
                                               "syn": _kernel_to_dict(mem.syn)},
    }


def model_from_dict(data: Mapping) -> NeuronModel:
    """Rebuild a model saved by :func:`model_to_dict`, validated like the constructors.

    Every field is type-checked, the name must be an identifier (it becomes
    part of kernel names), parameter values pass the constructors' range
    checks (0 < alpha <= 1, theta > 0, theta_r >= 0), expressions are parsed
    over a whitelist, and a membrane form must decay (0 < alpha <= 1, rho >= 0
    at the stored values). Raises ValueError or TypeError naming the field.
    """
    from .surrogates import SURROGATES, custom

    if not isinstance(data, Mapping):
        raise TypeError(f"a stored model must be a mapping (what model_to_dict writes), got {type(data).__name__}")
    try:
        name = check_identifier(data["name"], "stored model name")
        raw_params = data["params"]
        if not isinstance(raw_params, (list, tuple)):
            raise TypeError(f"field 'params' must be a list of [name, value], got {type(raw_params).__name__}")
        params = []
        for item in raw_params:
            if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str):
                raise TypeError(f"field 'params': expected [name, value] pairs, got {item!r:.80}")
            params.append((item[0], _as_float(f"parameter {item[0]!r:.40}", item[1])))
        params = tuple(params)
        names = {k: param_symbol(k) for k, _ in params}
        sur = data["surrogate"]
        if not isinstance(sur, Mapping) or not isinstance(sur.get("name"), str):
            raise TypeError(f"field 'surrogate' must be a mapping with a 'name', got {sur!r:.80}")
        if sur["name"] == "custom":
            surrogate = custom(sur["expr"])
        elif sur["name"] in SURROGATES:
            constants = sur.get("constants", {})
            if not isinstance(constants, Mapping) or not all(isinstance(k, str) for k in constants):
                raise TypeError(f"field 'surrogate.constants' must map names to numbers, got {constants!r:.80}")
            surrogate = get_surrogate(sur["name"], **constants)
        else:
            raise ValueError(f"field 'surrogate.name' {sur['name']!r:.80} is not known; expected one of "
                             f"{', '.join(SURROGATES)} or custom")
        spike = data["spike"]
        if isinstance(spike, float) and spike.is_integer():
            spike = int(spike)
        reset = data["reset"]
        if not isinstance(reset, str):
            raise TypeError(f"field 'reset' must be a string, got {reset!r:.80}")
        u_min = data["u_min"]
        u_min = None if u_min is None else _as_float("u_min", u_min)
        convention = data.get("convention", "")
        if not isinstance(convention, str):
            raise TypeError(f"field 'convention' must be a string, got {convention!r:.80}")
        mem = data["membrane"]
        membrane = None
        if mem is not None:
            if not isinstance(mem, Mapping):
                raise TypeError(f"field 'membrane' must be a mapping or null, got {type(mem).__name__}")
            membrane = Membrane(alpha=parse_expression(mem["alpha"], names, what="stored alpha"),
                                rho=parse_expression(mem["rho"], names, what="stored rho"),
                                syn=_kernel_from_dict(mem["syn"], names))
        model = NeuronModel(
            name=name,
            eps=_kernel_from_dict(data["eps"], names),
            nu=_kernel_from_dict(data["nu"], names),
            params=params,
            spike=spike,
            surrogate=surrogate,
            reset=reset,
            u_min=u_min,
            membrane=membrane,
            convention=convention,
        )
    except KeyError as exc:
        raise ValueError(f"stored model is missing the field {exc}; expected what model_to_dict writes") from None
    _check_model_ranges(model)
    if membrane is not None:
        values = model.values
        alpha = complex(sp.N(membrane.alpha.subs(values)))
        rho = complex(sp.N(membrane.rho.subs(values)))
        if alpha.imag or not 0 < alpha.real <= 1:
            raise ValueError(f"stored model {name}: membrane decay alpha = {membrane.alpha} = {alpha.real:g} is out "
                             "of range: expected 0 < alpha <= 1")
        if rho.imag or not rho.real >= 0:
            raise ValueError(f"stored model {name}: reset amount rho = {membrane.rho} = {rho.real:g} is out of "
                             "range: expected rho >= 0")
        _check_membrane_matches(model, alpha.real, rho.real)
    return model


def _check_membrane_matches(model: NeuronModel, alpha: float, rho: float, length: int = 24) -> None:
    """A stored membrane form must be the one its kernels define (the scans run the membrane, the oracle and the
    stability analysis read eps and nu): eps = syn * alpha^n and, with a subtractive reset, nu = rho alpha^n, compared
    on the first ``length`` taps at the stored values."""
    values = model.values
    powers = alpha ** np.arange(length)
    want_eps = np.convolve(model.membrane.syn.impulse(length, values), powers)[:length]
    eps = model.eps.impulse(length, values)
    pairs = [("eps", eps, want_eps, "syn * alpha^n")]
    if model.nu is not None and model.reset == "subtract":
        pairs.append(("nu", model.nu.impulse(length, values), rho * powers, "rho alpha^n"))
    for kname, got, want, form in pairs:
        scale = max(1.0, float(np.max(np.abs(want))))
        bad = np.flatnonzero(~np.isclose(got, want, rtol=1e-9, atol=1e-12 * scale))
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"stored model {model.name}: its membrane form (alpha = {alpha:g}, rho = {rho:g}, syn = "
                             f"{model.membrane.syn}) gives {kname}[{k}] = {want[k]:.6g} ({form}), but the stored "
                             f"{kname} = {getattr(model, kname)} has {got[k]:.6g}: the two descriptions disagree")
