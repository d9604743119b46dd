"""The state representations the scans run a kernel in: one step of a filter, its reverse mode, its tangent.

A kernel h (``kernels.py``) is run either

* in the direct form, transposed direct form II of b(x)/a(x) (one pole, or finite taps: the two forms
  are then the same thing):

      y_n = b_0 x_n + w_0,   w_i <- b_{i+1} x_n - a_{i+1} y_n + w_{i+1}

* or in the parallel form (two or more poles, docs/MATH.md section 10): a cascade of first-order
  sections per distinct pole, a rotation per conjugate pair, the sections' sum delayed behind the
  kernel's leading taps in a shift chain (:class:`~ift_snn.neurons.kernels.Parallel`). Rounding the direct
  form's coefficients (the elementary symmetric polynomials of the poles) moves close poles by about
  eps / (product of pole gaps); each section's state is as accurate as one LIF membrane.

Both are linear state-space steps, w' = A w + B x, y = C w + D x (state before the step). Run forward in
time a step computes (h * x)[n]; run backward in time, sum_k h[k] x[n+k]. The reverse mode
(:func:`filter_adjoint`) runs lam = dL/dw' backward: dL/dx = D dy + B^T lam, lam <- A^T lam + C^T dy,
whose state after step 0 is dL/dw_0. Its tangent in a parameter p (:func:`free_response_tangent`)
nu <- A^T nu + A_p^T lam + C_p^T dy ends at sum_n dy_n d/dp (C A^n): the parameter derivative of the
free response of the initial state, which dL/dp needs when that state is not zero.
"""

from __future__ import annotations

import sympy as sp

from ..neurons.kernels import Kernel, Parallel

__all__ = ["filter_step", "filter_adjoint", "filter_state_after", "free_response", "free_response_tangent",
           "decay", "df2t"]


def df2t(prefix: str, num: tuple[sp.Expr, ...], den: tuple[sp.Expr, ...], x: sp.Expr, y: sp.Symbol):
    """State symbols, the output expression y = b0 x + w0, and the state update of one filter in
    transposed direct form II."""
    order = max(len(num), len(den)) - 1
    b = list(num) + [sp.Integer(0)] * (order + 1 - len(num))
    a = list(den) + [sp.Integer(0)] * (order + 1 - len(den))
    w = tuple(sp.Symbol(f"{prefix}{i}", real=True) for i in range(order))
    out = b[0] * x + (w[0] if order else 0)
    update = []
    for i in range(order):
        nxt = w[i + 1] if i + 1 < order else 0
        update.append(b[i + 1] * x - a[i + 1] * y + nxt)
    return w, out, tuple(update)


def _parallel_step(prefix: str, form: Parallel, x: sp.Expr):
    """(states, output, updates) of one step of a parallel form (see :class:`~ift_snn.neurons.kernels.Parallel`).

    States: the shift chain c_1..c_d of the delay first (c_j <- c_(j+1) + t_j x, c_d <- q; y = t_0 x + c_1),
    then each section's levels (a pair: real, imaginary part per level). q is the sections' output on the
    undelayed input: v_1 = r w_1 + x, v_j = r w_j + v_(j-1), q = sum_j c_j v_j (a pair: the rotation
    r (cos f, sin f) on (Re, Im), q = sum_j A_j Re v_j + B_j Im v_j)."""
    count = iter(range(form.size))

    def new():
        return sp.Symbol(f"{prefix}{next(count)}", real=True)

    chain = [new() for _ in range(form.delay)]
    states: list[sp.Symbol] = list(chain)
    updates: list[sp.Expr] = [sp.Integer(0)] * len(chain)
    q = sp.Integer(0)
    for sec in form.sections:
        if sec.frequency == 0:
            prev = x
            for c in sec.coeffs:
                w = new()
                v = sec.pole * w + prev
                states.append(w)
                updates.append(v)
                q += c * v
                prev = v
        else:
            rc, rs = sec.pole * sp.cos(sec.frequency), sec.pole * sp.sin(sec.frequency)
            prev_re, prev_im = x, sp.Integer(0)
            for ca, cb in sec.coeffs:
                wr, wi = new(), new()
                vr = rc * wr - rs * wi + prev_re
                vi = rs * wr + rc * wi + prev_im
                states += [wr, wi]
                updates += [vr, vi]
                q += ca * vr + cb * vi
                prev_re, prev_im = vr, vi
    if not chain:
        return tuple(states), q, tuple(updates)
    for j in range(len(chain) - 1):
        updates[j] = chain[j + 1] + form.taps[j + 1] * x
    updates[len(chain) - 1] = q
    return tuple(states), form.taps[0] * x + chain[0], tuple(updates)


def filter_step(prefix: str, kernel: Kernel, x: sp.Expr, y: sp.Symbol):
    """(states, output expression, state updates) of one step of ``kernel``'s filter on input ``x``; a
    direct-form update may read the output through the symbol ``y`` (assign y = output before it)."""
    if kernel.parallel is None:
        return df2t(prefix, kernel.num, kernel.den, x, y)
    return _parallel_step(prefix, kernel.parallel, x)


def filter_adjoint(prefix: str, kernel: Kernel, dy: sp.Expr):
    """Reverse mode of :func:`filter_step`: (lam, dL/dx, lam before the step), lam = dL/dw' (the state
    after the step); after a reverse run's last step lam is dL/dw_0."""
    x = sp.Dummy("x")
    if kernel.parallel is None:
        y = sp.Dummy("y")
        w, out, update = df2t("w", kernel.num, kernel.den, x, y)
        update = tuple(sp.sympify(u).xreplace({y: out}) for u in update)  # the step as a map of (w, x)
    else:
        w, out, update = _parallel_step("w", kernel.parallel, x)
    return _linear_adjoint(prefix, w, out, update, x, dy)


def _linear_adjoint(prefix: str, w, out, update, x, dy: sp.Expr):
    """The reverse mode of one linear step w' = update(w, x), y = out(w, x), by differentiating it:
    dL/dx = dy dy/dx + lam . dw'/dx and the adjoint before the step dL/dw = dy dy/dw + lam . dw'/dw."""
    lam = tuple(sp.Symbol(f"{prefix}{i}", real=True) for i in range(len(w)))
    variables = set(w) | {x}
    # the step is linear: read every expression's coefficient per variable in one pass over its terms (sparse;
    # one sp.diff per (expression, variable) pair made a 1024-tap delay line O(L^2) SymPy work: minutes)
    out_c = _linear_coefficients(out, variables)
    upd_c = [_linear_coefficients(u, variables) for u in update]
    acc: dict = {v: [] for v in variables}
    for v, c in out_c.items():
        acc[v].append(c * dy)
    for coef, li in zip(upd_c, lam):
        for v, c in coef.items():
            acc[v].append(c * li)
    dx = sp.Add(*acc[x])
    return lam, dx, tuple(sp.Add(*acc[wj]) for wj in w)


def _linear_coefficients(expr, variables: set) -> dict:
    """{v: d expr/dv} of an expression linear in ``variables`` (expanded; each term holds one of them)."""
    out: dict = {}
    for term in sp.Add.make_args(sp.expand(expr)):
        held = [f for f in sp.Mul.make_args(term) if f in variables]
        if not held:
            continue  # a term free of the variables: no derivative
        if len(held) != 1:  # pragma: no cover - a filter step is linear in its state and input
            raise ValueError(f"term {term} of a filter step is not linear in its state and input")
        v = held[0]
        out[v] = out.get(v, sp.Integer(0)) + sp.diff(term, v)
    return {v: sp.expand(c) for v, c in out.items() if c != 0}


def free_response_tangent(mu: tuple[sp.Symbol, ...], before: tuple[sp.Expr, ...], p: sp.Symbol, prefix: str):
    """The tangent in ``p`` of a filter's adjoint run persistently (``mu``, its update ``before`` from
    :func:`filter_adjoint`): states nu with nu <- A^T nu + A_p^T mu + C_p^T dy, whose values after the last
    step are sum_n dy_n d/dp (C A^n), the parameter derivative of the free response of each initial-state
    entry. Only the entries that can become nonzero are kept (a section whose pole and coefficients do not
    depend on p has a zero tangent). Returns ({entry index: nu symbol}, [their updates])."""
    held = [sp.diff(e, p) for e in before]  # A_p^T mu + C_p^T dy (before is linear in mu and dy)
    live = {j for j, h in enumerate(held) if h != 0}
    coupling = [{i for i, m in enumerate(mu) if sp.diff(e, m) != 0} for e in before]
    grew = True
    while grew:
        grew = False
        for j in range(len(before)):
            if j not in live and coupling[j] & live:
                live.add(j)
                grew = True
    nu = {j: sp.Symbol(f"{prefix}{j}", real=True) for j in sorted(live)}
    into = {mu[i]: nu.get(i, sp.Integer(0)) for i in range(len(mu))}
    rest = {m: sp.Integer(0) for m in mu}
    updates = [sp.sympify(before[j]).xreplace(into) - sp.sympify(before[j]).xreplace(rest) + held[j] for j in nu]
    return nu, updates


def filter_state_after(prefix: str, kernel: Kernel, x: sp.Expr) -> tuple[sp.Expr, ...]:
    """The state after filtering the single input x from rest (u_init at time -1)."""
    y = sp.Symbol("y")
    w, out, update = filter_step(prefix, kernel, x, y)
    rest = {wi: sp.Integer(0) for wi in w}
    rest[y] = sp.sympify(out).xreplace(rest)
    return tuple(sp.expand(sp.sympify(e).xreplace(rest)) for e in update)


def free_response(kernel: Kernel, i: int, T: int) -> list[sp.Expr]:
    """y[0..T-1] of ``kernel``'s filter with no input from a unit initial state w_i (the others 0): what an
    initial filter state stands for. Direct form: the power series of x^i / A(x), from the transfer
    function; parallel form: the realization's own steps (the state's meaning is the form's)."""
    if kernel.parallel is None:
        den = kernel.den
        r: list[sp.Expr] = []
        for k in range(T):
            value = sp.Integer(1 if k == i else 0)
            for j in range(1, min(len(den), k + 1)):
                value -= den[j] * r[k - j]
            r.append(sp.expand(value / den[0]))
        return r
    x = sp.Dummy("x")
    w, out, update = _parallel_step("w", kernel.parallel, x)
    state = {wj: sp.Integer(1 if j == i else 0) for j, wj in enumerate(w)}
    state[x] = sp.Integer(0)
    outs = []
    for _ in range(T):
        outs.append(sp.expand(sp.sympify(out).xreplace(state)))
        new = [sp.expand(sp.sympify(u).xreplace(state)) for u in update]
        state = dict(zip(w, new)) | {x: sp.Integer(0)}
    return outs


def decay(kernel: Kernel) -> sp.Expr:
    """The decay of a kernel's recurrence that multiplies the carried adjoint (for the diagnostics): 0 for
    finite taps; the pole -a_1 for one pole (the direct form); for the parallel form, which every kernel of two
    or more poles runs in, the largest |pole| of its sections (the spectral radius, exactly)."""
    if kernel.parallel is not None and kernel.parallel.sections:
        poles = [s.pole if s.pole.is_nonnegative else sp.Abs(s.pole) for s in kernel.parallel.sections]
        return poles[0] if len(poles) == 1 else sp.Max(*poles)
    den = kernel.den
    if len(den) > 2:
        raise ValueError(f"{kernel}: {len(den) - 1} poles in the direct form; kernels of two or more poles run in "
                         "the parallel form")
    return sp.Integer(0) if len(den) == 1 else -den[1]
