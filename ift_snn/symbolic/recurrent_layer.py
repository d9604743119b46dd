"""Recurrent layers (docs/MATH.md section 9): the coupled system of N neurons and the proof of its scans.

A layer whose spikes feed back into its own input one step later,

    a_i[n] = c_i[n] + sum_j V_ij s_j[n-1],      s_j[-1] = x0_s_prev_j (the spike before step 0),

stacked over neurons and time (order u_0[0], s_0[0], u_1[0], s_1[0], ..., u_0[1], ...) keeps d phi/d(u, s)
unit lower triangular: the coupling reaches u[n] from s[n-1] only. Its exact gradient is the neuron's own
backward scan (:mod:`ift_snn.symbolic.recurrence`) run time-outer over the neurons, with the error reaching
s_j[n] augmented by the recurrent path,

    g_j[n]  ->  g_j[n] + sum_i V_ij (dL/da_i)[n+1]        (0 at n = T - 1, and across a truncation boundary),

and dL/dc = dL/da, dL/dV_ij = sum_n (dL/da_i)[n] s_j[n-1], dL/dx0_s_prev_j += sum_i V_ij (dL/da_i)[0]. SLAYER
detaches the reset and keeps the recurrent path (a synapse); truncation cuts every path across a chunk
boundary, the recurrent one included. :func:`prove_recurrent` checks all of it symbolically against the IFT
adjoint of the coupled system for small T and N; the generated kernels print exactly this coupling
(:mod:`ift_snn.codegen.tree`).
"""

from __future__ import annotations

import sympy as sp

from ..methods import get_method
from ..neurons.models import NeuronModel
from .recurrence import (
    DIAGNOSTIC,
    PARAMETER,
    STATE_GRAD,
    Proof,
    _cut,
    _differ,
    derive_recurrence,
    exact_model,
)
from .system import STATE_IN, build_system

__all__ = ["prove_recurrent", "COUPLING_RULES"]

#: What the recurrence changes in the scans, as `derive --recurrent` shows it.
COUPLING_RULES = (
    "forward:  a_i[n] = c_i[n] + sum_j V_ij s_j[n-1]   (s_j[-1] = x0_s_prev_j), then the neuron's forward step",
    "backward: g_j[n] <- g_j[n] + sum_i V_ij dL/da_i[n+1]   (0 at n = T-1 and across a truncation boundary), "
    "then the neuron's backward step",
    "dL/dc = dL/da,  dL/dV_ij = sum_n dL/da_i[n] s_j[n-1],  dL/dx0_s_prev_j += sum_i V_ij dL/da_i[0]",
    "slayer: the reset path detached, the recurrent path kept (a synapse)",
)


def _renamed(sym, i: int) -> sp.Symbol:
    return sp.Symbol(f"{sym.name}_n{i}", real=True)


def prove_recurrent(model: NeuronModel, T: int = 4, N: int = 2, *, method: str = "exodus",
                    truncation: int | None = None) -> Proof:
    """The time-outer backward scan of a recurrent layer of ``N`` neurons against the IFT adjoint of the coupled
    system over ``T`` steps, symbolically (V, c, the spikes, membranes and surrogate values all symbols).

    Checked: dL/dc_i[n], dL/dV_ij, dL/dx0 of every neuron's state (the spike before step 0 through the
    recurrence too) and dL/dp summed over the neurons. ``method="slayer"``: the adjoint with the reset detached;
    ``truncation=K``: without couplings across chunks of K steps. Cost: a 2TN x 2TN triangular solve.
    """
    m = get_method(method)
    if m.reference:
        raise ValueError(f"method={method!r}: expected 'exodus' or 'slayer' (a derived scan; 'bptt' is the oracle)")
    if not (isinstance(N, int) and 1 <= N <= 4 and isinstance(T, int) and 1 <= T <= 6):
        raise ValueError(f"T={T!r}, N={N!r}: the symbolic proof of a recurrent layer takes 1 <= T <= 6, 1 <= N <= 4")
    model = exact_model(model)
    rec = derive_recurrence(model)
    base = build_system(model, T, state=True)
    from . import ift

    jac = ift.jacobians(base)
    jac = _cut(jac, T, m.detach_reset, truncation, tuple(x.name for x in base.state))
    chunk = (lambda n: n // truncation) if truncation else (lambda n: 0)  # noqa: E731
    V = sp.Matrix(N, N, lambda i, j: sp.Symbol(f"V_{i}{j}", real=True))
    c = [[sp.Symbol(f"c_{n}_n{i}", real=True) for n in range(T)] for i in range(N)]
    own = list(base.u) + list(base.s) + list(base.a) + list(base.sigma) + list(base.g) + list(base.state)
    own += [x for x in base.mask if isinstance(x, sp.Symbol)]
    names = {i: {x: _renamed(x, i) for x in own} for i in range(N)}
    u = [[names[i][x] for x in base.u] for i in range(N)]
    s = [[names[i][x] for x in base.s] for i in range(N)]
    x0 = [{x.name: names[i][x] for x in base.state} for i in range(N)]
    s_prev0 = [x0[j][STATE_IN + "s_prev"] for j in range(N)]

    def spike(j: int, n: int) -> sp.Expr:  # s_j[n], s_j[-1] = x0_s_prev_j
        return s[j][n] if n >= 0 else s_prev0[j]

    # the total input of every neuron and step, in the renamed symbols
    a = [[c[i][n] + sum((V[i, j] * spike(j, n - 1) for j in range(N)), sp.Integer(0)) for n in range(T)]
         for i in range(N)]

    def local(expr, i: int) -> sp.Expr:
        return sp.sympify(expr).xreplace(names[i]).xreplace({names[i][x]: a[i][n] for n, x in enumerate(base.a)})

    # d phi/d(u, s) of the coupled system, time-major: index (n, i, 0 = u | 1 = s)
    size = 2 * T * N
    pos = lambda n, i, k: (n * N + i) * 2 + k  # noqa: E731
    J = sp.zeros(size, size)
    for i in range(N):
        for r in range(2 * T):
            for col in range(2 * T):
                if jac.dependent[r, col] != 0:
                    J[pos(r // 2, i, r % 2), pos(col // 2, i, col % 2)] += local(jac.dependent[r, col], i)
            if r % 2:
                continue
            n = r // 2
            for mm in range(1, T):  # phi_u_i[n] -> a_i[mm] -> s_j[mm - 1]: the recurrent path
                if jac.inputs[r, mm] == 0 or chunk(mm - 1) != chunk(mm):
                    continue
                for j in range(N):
                    J[pos(n, i, 0), pos(mm - 1, j, 1)] += local(jac.inputs[r, mm], i) * V[i, j]
    lam = [sp.Integer(0)] * size
    rhs = [sp.Integer(0)] * size
    for n in range(T):
        for i in range(N):
            rhs[pos(n, i, 1)] = names[i][base.g[n]]
    for k in range(size - 1, -1, -1):
        value = rhs[k]
        for r in range(k + 1, size):
            if J[r, k] != 0:
                value -= J[r, k] * lam[r]
        lam[k] = value  # (not expanded: _differ compares as polynomials, expanding each value cost most of the proof)

    def minus_dot(column: dict) -> sp.Expr:
        return -sp.Add(*[lam[k] * v for k, v in column.items()])

    def rows_of(i: int, values) -> dict:  # a column of the base system's rows, placed at neuron i
        return {pos(r // 2, i, r % 2): local(v, i) for r, v in enumerate(values) if v != 0}

    want_c = [[minus_dot(rows_of(i, jac.inputs[:, n])) for n in range(T)] for i in range(N)]
    want_V = {}
    for i in range(N):
        for j in range(N):
            column = {}
            for r in range(0, 2 * T, 2):
                value = sum((jac.inputs[r, mm] * spike(j, mm - 1) for mm in range(T) if jac.inputs[r, mm] != 0),
                            sp.Integer(0))
                if value != 0:
                    column[pos(r // 2, i, 0)] = local(value, i)
            want_V[i, j] = minus_dot(column)
    want_x0 = []
    for i in range(N):
        grads = {}
        for k, x in enumerate(base.state):
            column = rows_of(i, jac.state[:, k])
            if x.name == STATE_IN + "s_prev":  # the spike before step 0 also drives every a_q[0]
                for q in range(N):
                    for r in range(0, 2 * T, 2):
                        if jac.inputs[r, 0] != 0:
                            key = pos(r // 2, q, 0)
                            column[key] = column.get(key, 0) + local(jac.inputs[r, 0], q) * V[q, i]
            grads[x.name] = minus_dot(column)
        want_x0.append(grads)
    want_p = {name: sum((minus_dot(rows_of(i, jac.params[:, p])) for i in range(N)), sp.Integer(0))
              for p, name in enumerate(jac.param_names)}

    # the scans, time-outer over the neurons, the recurrent error added to g
    scan = (rec.slayer if m.detach_reset else rec.backward).without(DIAGNOSTIC)
    inputs = {x.name: x for x in scan.inputs}
    state = [{st: local(init, i) for st, init in zip(scan.state, scan.init)} for i in range(N)]
    grad_a = [[None] * T for _ in range(N)]
    out = next(o for o in scan.outputs if o.name == "grad_a")
    for n in range(T - 1, -1, -1):
        restart = truncation and (n + 1) % truncation == 0
        for i in range(N):
            if restart:
                state[i].update({st: local(init, i) for st, init in zip(scan.state, scan.init)
                                 if st not in scan.persistent})
            env = dict(state[i])
            coupled = sp.Integer(0)
            if n + 1 < T and not restart:
                coupled = sum((V[q, i] * grad_a[q][n + 1] for q in range(N)), sp.Integer(0))
            per_step = {"g": names[i][base.g[n]] + coupled, "sigma": names[i][base.sigma[n]], "s": s[i][n],
                        "u": u[i][n], "a": a[i][n]}
            if isinstance(base.mask[n], sp.Symbol):
                per_step["m"] = names[i][base.mask[n]]
            for name, sym in inputs.items():
                env[sym] = per_step[name]
            for lhs, rhs_ in scan.assignments:
                env[lhs] = local(rhs_, i).xreplace(env)
            grad_a[i][n] = env[out]
            state[i] = {st: local(e, i).xreplace(env) for st, e in zip(scan.state, scan.update)}
    finals = [{lhs.name: local(rhs_, i).xreplace(state[i]) for lhs, rhs_ in scan.finals} for i in range(N)]

    label = f"{m.name} T={T} N={N}" + (f" K={truncation}" if truncation else "")
    fail = lambda detail: Proof(T, False, f"{label}: {detail}", m.name, truncation)  # noqa: E731
    for i in range(N):
        for n in range(T):
            if (diff := _differ(grad_a[i][n], want_c[i][n])) is not None:
                return fail(f"dL/dc_{i}[{n}]: the time-outer scan and the IFT adjoint differ by {diff}")
    for (i, j), want in want_V.items():
        got = sum((grad_a[i][n] * spike(j, n - 1) for n in range(T)), sp.Integer(0))
        if (diff := _differ(got, want)) is not None:
            return fail(f"dL/dV_{i}{j}: the scan's sum and the IFT adjoint differ by {diff}")
    for i in range(N):
        for st in rec.forward.state:
            got = finals[i][STATE_GRAD + st.name]
            if st.name == "s_prev":
                got = got + sum((V[q, i] * grad_a[q][0] for q in range(N)), sp.Integer(0))
            if (diff := _differ(got, want_x0[i][STATE_IN + st.name])) is not None:
                return fail(f"dL/dx0_{st.name} of neuron {i}: the scan and the IFT adjoint differ by {diff}")
    for name in model.parameter_names:
        got = sum((finals[i][PARAMETER + name] for i in range(N)), sp.Integer(0))
        if (diff := _differ(got, want_p[name])) is not None:
            return fail(f"dL/d{name}: the scans' sums and the IFT adjoint differ by {diff}")
    return Proof(T, True, f"{label}: dL/dc, dL/dV, dL/d(initial state) and dL/d({', '.join(model.parameter_names)}) "
                          "equal the IFT adjoint of the coupled system", m.name, truncation)
