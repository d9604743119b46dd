"""One step of the forward scan and its vector-Jacobian product: the gradient through a carried state.

A call of one step maps (x0, a; p) to (s, x1): the spike of the step and the state after it (the
forward scan of :mod:`ift_snn.symbolic.recurrence` run for T = 1). Stepping a layer t = 0, 1, ... with
the state carried (the cells of snnTorch and Norse) chains these maps; back-propagating through the
chain is BPTT, and it needs, per step, the vector-Jacobian product

    dL/dv = g ds/dv + lam . dx1/dv,     v in (a, x0, p),

with g = dL/ds of the step and lam = dL/dx1 from the steps after it. It is derived here from the
forward scan's own expressions, by the chain rule over its assignments, with the spike function's
partials replaced by the surrogate as everywhere else (df/du := sigma(u), df/dtheta := -kappa sigma,
kappa = 1 for single and smooth spikes, u / theta for counts; :class:`~ift_snn.symbolic.system.System`).
SLAYER's variant detaches the reset as its backward scan does: the previous spike ``s_prev`` is a constant
everywhere, and so is the step's spike in the reset path (an SRM's reset ``r`` and the updates of its
reset-filter states ``w_nu*``), whose parameters keep their explicit derivatives (dL/dp of a reset kernel's
parameter with the spikes held fixed, as the SLAYER scan's correlations compute it). The gradient of an
SRM's reset-filter state is then that spikes-held-fixed derivative (what the next step needs for dL/dp);
the whole-sequence SLAYER scan reports 0 for it at x0.

The result is a :class:`~ift_snn.symbolic.recurrence.Scan` of one step (direction "forward") that the code
generator prints like any other: per-step inputs a and g, per-neuron vectors x0_<state> and
lT_<state> (= lam), and per-step outputs (one row: T = 1) grad_a (dL/da), gx_<state> (dL/dx0) and acc_<p>
(dL/dp of the step); its state is the forward's (a ring buffer for a long delay). Proved numerically: chained steps equal the exact (and the SLAYER) gradient of the whole
sequence (tests/test_step_gradients.py).
"""

from __future__ import annotations

import functools

import sympy as sp

from ..neurons.models import NeuronModel
from ..neurons.surrogates import THETA
from .recurrence import PARAMETER, STATE_GRAD, Recurrence, Scan

__all__ = ["step_scans", "STATE_COTANGENT"]

#: Prefix of the per-neuron vectors lam = dL/dx1, the gradient of the state after the step.
STATE_COTANGENT = "lT_"


def _is_reset(sym: sp.Symbol) -> bool:
    """An assignment or state of the reset path: an SRM's reset r and its reset-filter states w_nu*."""
    return sym.name == "r" or sym.name.startswith("w_nu")


def _vjp_scan(rec: Recurrence, name: str, slayer: bool) -> Scan:
    model: NeuronModel = rec.model
    fwd = rec.forward
    a = sp.Symbol("a", real=True)
    g = sp.Symbol("g", real=True)
    u, s = sp.Symbol("u", real=True), sp.Symbol("s", real=True)
    sigma = sp.Symbol("sigma", real=True)
    kappa = sp.Integer(1) if model.spike in ("single", "smooth") else u / THETA
    variables = (a, *fwd.state, *model.symbols)
    # the forward step, its spike kept as a symbol whose partials are the surrogate's
    assigns: list[tuple[sp.Symbol, sp.Expr]] = []
    grads: dict[sp.Symbol, dict[sp.Symbol, sp.Expr]] = {}

    def diff(expr, v):
        # the clip's derivative d max(pre, u_min)/d pre is the mask Heaviside(pre - u_min, 0), as the forward's m
        d = sp.diff(expr, v)
        return d.replace(lambda e: isinstance(e, sp.Heaviside) and len(e.args) == 1,
                         lambda e: sp.Heaviside(e.args[0], 0))

    s_prev = [st for st in fwd.state if st.name == "s_prev"]

    def partials(expr, reset: bool = False) -> dict[sp.Symbol, sp.Expr]:
        """d expr / dv for every v, through the assigned symbols (chain rule); SLAYER's constants give 0
        (s_prev; and s in the reset path)."""
        expr = sp.sympify(expr)
        frozen = set(s_prev) | ({s} if reset else set()) if slayer else set()
        out = {}
        for v in variables:
            d = sp.Integer(0) if v in frozen else diff(expr, v)
            for z, dz in grads.items():
                if z in expr.free_symbols and z not in frozen and dz.get(v, 0) != 0:
                    d += diff(expr, z) * dz[v]
            out[v] = d
        return out

    # (every forward scan assigns sigma, the surrogate at u: also the smooth spike's exact derivative)
    for lhs, rhs in fwd.assignments:
        assigns.append((lhs, rhs))
        if lhs == s:  # s = f(u): df/du := sigma, df/dtheta := -kappa sigma
            du = grads[u]
            grads[s] = {v: sigma * du[v] - (kappa * sigma if v == THETA else 0) for v in variables}
        elif lhs == sigma or lhs.name == "m":
            continue  # the surrogate and the clip mask are values, not paths (as in the backward scans)
        else:
            grads[lhs] = partials(rhs, _is_reset(lhs))
    # lam = dL/dx1 is read from the per-neuron vectors lT_<state>; one step: the gradients are its outputs
    lam = tuple(sp.Symbol(STATE_COTANGENT + st.name, real=True) for st in fwd.state)
    update = [partials(e, _is_reset(st)) for st, e in zip(fwd.state, fwd.update)]
    total = {v: g * grads[s][v] + sp.Add(*[lm * du[v] for lm, du in zip(lam, update)]) for v in variables}
    outputs = [sp.Symbol("grad_a", real=True)]
    outputs += [sp.Symbol(STATE_GRAD + st.name, real=True) for st in fwd.state]
    outputs += [sp.Symbol(PARAMETER + k, real=True) for k in model.parameter_names]
    assigns += list(zip(outputs, [total[v] for v in variables]))
    return Scan(name, "forward", (a, g), tuple(fwd.state), tuple(fwd.init), tuple(assigns), tuple(outputs),
                tuple(fwd.update), ())


@functools.lru_cache(maxsize=64)
def step_scans(rec: Recurrence) -> tuple[Scan, Scan]:
    """(exact, SLAYER) one-step vector-Jacobian products of ``rec``'s forward scan (module docstring)."""
    return _vjp_scan(rec, "step", False), _vjp_scan(rec, "step_slayer", True)

