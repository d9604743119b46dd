"""The vectorised SRM as an equation system phi(u, s; a) = 0 over T steps (docs/MATH.md section 3).

Dependent variables, interleaved in causal order: (u_0, s_0, u_1, s_1, ...).
Independent variables: the inputs a_0..a_{T-1}, the parameters (alpha, theta,
theta_r, kernel parameters) and the initial state u_init.

General SRM:
    phi_u[n] = u_n - sum_{k<=n} eps[k] a_{n-k} - eps[n+1] u_init + sum_{k<n} nu[k] s_{n-1-k}
First-order membrane (LIF, IF, CUBA), with I_n = sum_k syn[k] a_{n-k}:
    phi_u[n] = u_n - m_n (alpha u_{n-1} + I_n - rho s_{n-1}) - (1 - m_n) u_min     (subtract)
    phi_u[n] = u_n - m_n (alpha u_{n-1} (1 - s_{n-1}) + I_n) - (1 - m_n) u_min     (reset to zero)
with u_{-1} = u_init, s_{-1} = 0 and m_n the not-clipped mask (m_n = 1 without a clip).
Spikes:
    phi_s[n] = s_n - f(u_n, theta)
where f is kept opaque: its partial derivatives are the surrogate,
df/du_n = sigma_n and df/dtheta = -kappa_n sigma_n (kappa = 1, or u/theta for
multi and max-spike), exactly as in the numeric code.

Kernels enter by their closed-form values eps[k], nu[k] (or taps); the
recurrences are derived separately (recurrence.py) and proved equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import sympy as sp

from ..neurons.models import NeuronModel
from .filters import free_response as _free_response

__all__ = ["System", "build_system", "SPIKE", "U_INIT", "STATE_IN", "state_names"]

#: The opaque spike function f(u, theta).
SPIKE = sp.Function("f")
#: The initial membrane u[-1] (an input at time -1 for a general SRM).
U_INIT = sp.Symbol("u_init", real=True)

MAX_T = 12
#: Prefix of the initial-state symbols x0_<state> (the forward scan's state before step 0).
STATE_IN = "x0_"


def _seq(name: str, T: int, **assumptions) -> tuple[sp.Symbol, ...]:
    return tuple(sp.Symbol(f"{name}_{n}", **assumptions) for n in range(T))


@dataclass(frozen=True, eq=False)
class System:
    """phi(u, s; a) = 0 for ``model`` over ``T`` steps, with every symbol it uses."""

    model: NeuronModel
    T: int
    u: tuple[sp.Symbol, ...]
    s: tuple[sp.Symbol, ...]
    a: tuple[sp.Symbol, ...]
    sigma: tuple[sp.Symbol, ...]
    kappa: tuple[sp.Expr, ...]
    mask: tuple[sp.Expr, ...]
    g: tuple[sp.Symbol, ...]
    params: tuple[sp.Symbol, ...]
    phi_u: tuple[sp.Expr, ...]
    phi_s: tuple[sp.Expr, ...]
    #: The initial-state symbols x0_<state> (``state=True``), else () and u_init is the initial state.
    state: tuple[sp.Symbol, ...] = ()

    @property
    def dependent(self) -> tuple[sp.Symbol, ...]:
        """(u_0, s_0, u_1, s_1, ...): the order in which d phi/d(u, s) is unit lower triangular."""
        return tuple(v for pair in zip(self.u, self.s) for v in pair)

    @property
    def phi(self) -> tuple[sp.Expr, ...]:
        """(phi_u[0], phi_s[0], phi_u[1], ...)."""
        return tuple(e for pair in zip(self.phi_u, self.phi_s) for e in pair)

    @cached_property
    def derivative_rules(self) -> dict[sp.Expr, sp.Expr]:
        """Replacements of the opaque spike function's partials by the surrogate."""
        from ..neurons.surrogates import THETA

        rules: dict[sp.Expr, sp.Expr] = {}
        for u, sig, kap in zip(self.u, self.sigma, self.kappa):
            rules[sp.Derivative(SPIKE(u, THETA), u)] = sig
            rules[sp.Derivative(SPIKE(u, THETA), THETA)] = -kap * sig
        return rules


def state_names(model: NeuronModel) -> tuple[str, ...]:
    """Names of the forward scan's state, in its order: (u_prev, s_prev, w_syn0, ...) for a membrane
    model, (s_prev, w_eps0, ..., w_nu0, ...) for a general SRM (w: the filter states, transposed direct
    form II or the parallel form, ``symbolic/filters.py``)."""
    if model.membrane is not None:
        syn = model.membrane.syn
        return ("u_prev", "s_prev") + tuple(f"w_syn{i}" for i in range(syn.size))
    return (("s_prev",) + tuple(f"w_eps{i}" for i in range(model.eps.size))
            + tuple(f"w_nu{i}" for i in range(model.nu.size)))


def build_system(model: NeuronModel, T: int, *, state: bool = False) -> System:
    """Build phi for ``model`` over ``T`` steps (1 <= T <= 12; symbolic work is meant for T <= 8).

    ``state=True``: the initial condition is the forward scan's whole state x0 (membrane, spike
    and filter states, :func:`state_names`) instead of the initial membrane u_init; a filter
    state w_i enters through its zero-input response :func:`~ift_snn.symbolic.filters.free_response`.
    """
    from ..neurons.surrogates import THETA

    if not isinstance(model, NeuronModel):
        raise TypeError(f"model must be a NeuronModel, got {type(model).__name__}")
    if isinstance(T, bool) or not isinstance(T, int) or not 1 <= T <= MAX_T:
        raise ValueError(f"T={T!r} is out of range: the symbolic horizon must be an int in 1..{MAX_T}")
    u = _seq("u", T, real=True)
    s = _seq("s", T, real=True)
    a = _seq("a", T, real=True)
    sigma = _seq("sigma", T, real=True)
    g = _seq("g", T, real=True)
    if model.spike in ("single", "smooth"):
        kappa = tuple(sp.Integer(1) for _ in range(T))
    else:
        kappa = tuple(un / THETA for un in u)
    mask: tuple[sp.Expr, ...]
    if model.u_min is not None:
        mask = _seq("m", T, real=True)
    else:
        mask = tuple(sp.Integer(1) for _ in range(T))
    phi_u = []
    x0 = {name: sp.Symbol(STATE_IN + name, real=True) for name in state_names(model)} if state else {}

    def free_response(prefix: str, kernel) -> list[sp.Expr]:
        out = [sp.Integer(0)] * T
        for i in range(kernel.size):
            for n, r in enumerate(_free_response(kernel, i, T)):
                out[n] += x0[f"{prefix}{i}"] * r
        return out

    if model.membrane is not None:
        mem = model.membrane
        syn = [mem.syn.value(k) for k in range(T)]
        u_min = sp.Float(model.u_min) if model.u_min is not None else sp.Integer(0)
        free = free_response("w_syn", mem.syn) if state else [sp.Integer(0)] * T
        for n in range(T):
            u_prev = u[n - 1] if n else (x0["u_prev"] if state else U_INIT)
            s_prev = s[n - 1] if n else (x0["s_prev"] if state else sp.Integer(0))
            current = sum((syn[k] * a[n - k] for k in range(n + 1)), sp.Integer(0)) + free[n]
            if model.reset == "zero":
                pre = mem.alpha * u_prev * (1 - s_prev) + current
            else:
                pre = mem.alpha * u_prev + current - mem.rho * s_prev
            phi_u.append(u[n] - mask[n] * pre - (1 - mask[n]) * u_min)
    else:
        eps = [model.eps.value(k) for k in range(T + 1)]
        nu = [model.nu.value(k) for k in range(T)]
        if state:
            free_eps, free_nu = free_response("w_eps", model.eps), free_response("w_nu", model.nu)
        for n in range(T):
            drive = sum((eps[k] * a[n - k] for k in range(n + 1)), sp.Integer(0))
            reset = sum((nu[k] * s[n - 1 - k] for k in range(n)), sp.Integer(0))
            if state:  # s_{-1} = x0_s_prev enters the reset kernel like every earlier spike
                drive += free_eps[n]
                reset += nu[n] * x0["s_prev"] + free_nu[n]
            else:
                drive += eps[n + 1] * U_INIT
            phi_u.append(u[n] - drive + reset)
    phi_s = tuple(s[n] - SPIKE(u[n], THETA) for n in range(T))
    return System(
        model=model,
        T=T,
        u=u,
        s=s,
        a=a,
        sigma=sigma,
        kappa=kappa,
        mask=mask,
        g=g,
        params=model.symbols,
        phi_u=tuple(phi_u),
        phi_s=phi_s,
        state=tuple(x0.values()),
    )
