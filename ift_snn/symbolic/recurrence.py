"""The O(T) scans that training runs, derived from the kernels and proved against the IFT.

Each kernel h with transfer function b(x)/a(x) (``kernels.py``) is one IIR
filter; in transposed direct form II its state w has ``order`` entries:

    y_n = b_0 x_n + w_0,   w_i <- b_{i+1} x_n - a_{i+1} y_n + w_{i+1}

Run forward in time it computes (h * x)[n]; run backward in time it computes
the correlation sum_k h[k] x[n+k] that the adjoint needs (E^T d, N^T d).

Forward scan (per neuron, n = 0..T-1):
    membrane:  I = syn(a); pre = alpha u_prev + I - rho s_prev  (or alpha u_prev (1 - s_prev) + I)
               u = max(pre, u_min); s = f(u)
    SRM:       z = eps(a); r = nu(s_prev); u = z - r; s = f(u)

Backward scan (exodus, n = T-1..0), MATH section 4:
    membrane:  d = m (sigma g + c d_next),  c = alpha - rho sigma  (alpha (1 - s - u sigma) for reset to zero)
               dL/da = syn^T(d)
    SRM:       q = nu^T(d_next); dL/ds = g - q; d = sigma dL/ds; dL/da = eps^T(d)
SLAYER drops the reset: c = alpha (alpha (1 - s)), q = 0.

:func:`prove` unrolls the backward scan for T steps and checks, symbolically,
that dL/da and dL/du_init equal the IFT adjoint of ``ift.py``, whose kernels
enter by their closed-form values: the recurrence and the closed form are two
independent descriptions of the same kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..kernels import Kernel
from ..models import NeuronModel
from ..surrogates import THETA, U
from .system import U_INIT

__all__ = ["Scan", "Recurrence", "derive_recurrence", "unroll", "prove", "evaluate", "spike_expr", "Proof"]


@dataclass(frozen=True, eq=False)
class Scan:
    """One scan over time: per step read ``inputs``, run ``assignments`` in order,
    write ``outputs``, then replace ``state`` by ``update``. ``finals`` are
    values read from the state after the last step (e.g. dL/du_init)."""

    name: str
    direction: str  # "forward" or "reverse"
    inputs: tuple[sp.Symbol, ...]
    state: tuple[sp.Symbol, ...]
    init: tuple[sp.Expr, ...]
    assignments: tuple[tuple[sp.Symbol, sp.Expr], ...]
    outputs: tuple[sp.Symbol, ...]
    update: tuple[sp.Expr, ...]
    finals: tuple[tuple[sp.Symbol, sp.Expr], ...] = ()
    #: State that truncation does not restart: parameter-gradient sums, the filters of the
    #: full-history explicit partials, and the diagnostics' running maxima.
    persistent: tuple[sp.Symbol, ...] = ()

    def without(self, prefix: str) -> Scan:
        """This scan without the state, assignments and finals whose names start with ``prefix``."""
        keep = [i for i, st in enumerate(self.state) if not st.name.startswith(prefix)]
        return Scan(self.name, self.direction, self.inputs, tuple(self.state[i] for i in keep),
                    tuple(self.init[i] for i in keep),
                    tuple((l, r) for l, r in self.assignments if not l.name.startswith(prefix)), self.outputs,
                    tuple(self.update[i] for i in keep),
                    tuple((l, r) for l, r in self.finals if not l.name.startswith(prefix)),
                    tuple(p for p in self.persistent if not p.name.startswith(prefix)))

    def __str__(self) -> str:
        lines = [f"{self.name} scan ({self.direction} in time)"]
        lines.append("  state: " + ", ".join(f"{s} = {i}" for s, i in zip(self.state, self.init)))
        for lhs, rhs in self.assignments:
            lines.append(f"  {lhs} = {rhs}")
        for s, e in zip(self.state, self.update):
            lines.append(f"  {s} <- {e}")
        for lhs, rhs in self.finals:
            lines.append(f"  after the last step: {lhs} = {rhs}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class KernelRecurrence:
    """h[k] = -a_1 h[k-1] - ... - a_p h[k-p] for k >= len(b), i.e. H(x) = b(x)/a(x)."""

    name: str
    kernel: Kernel
    num: tuple[sp.Expr, ...]
    den: tuple[sp.Expr, ...]

    @property
    def order(self) -> int:
        return len(self.den) - 1

    def relation(self) -> str:
        """The recurrence in words: h[k] = sum_j c_j h[k-j] for k >= len(b), or the finite taps."""
        if self.order == 0:
            return f"finite: {len(self.num)} tap(s), {self.name}[k] = 0 for k >= {len(self.num)}"
        k = sp.Symbol("k", integer=True)
        h = sp.Function(self.name)
        rhs = sum((-self.den[j] * h(k - j) for j in range(1, len(self.den))), sp.Integer(0))
        return f"{sp.sstr(h(k))} = {sp.sstr(rhs)} for k >= {len(self.num)}"


@dataclass(frozen=True, eq=False)
class Recurrence:
    """Kernel recurrences and the forward / backward / SLAYER scans of a model."""

    model: NeuronModel
    kind: str
    kernels: tuple[KernelRecurrence, ...]
    forward: Scan
    backward: Scan
    slayer: Scan
    step_factor: sp.Expr | None  # c_n of the membrane scan (None for a general SRM)
    dropped: sp.Expr  # the term SLAYER drops from dL/ds_n (in the per-step symbols)

    @property
    def state_size(self) -> int:
        """Values the carried adjoint needs per neuron (d_next and the reverse filters of eps and nu),
        not counting the parameter sums, their filters and the diagnostics."""
        scan = self.backward
        return sum(1 for st in scan.state if st not in scan.persistent and not st.name.startswith(DIAGNOSTIC))


# ------------------------------------------------------------------ pieces
def spike_expr(model: NeuronModel, u: sp.Expr = U) -> sp.Expr:
    """The spike function f(u) as an expression (for forward scans and code generation)."""
    theta = THETA
    if model.spike == "single":
        return sp.Heaviside(u - theta, 1)
    if model.spike == "smooth":
        return model.surrogate.primitive.subs(U, u)
    count = sp.Max(sp.floor(u / theta), 0)
    if isinstance(model.spike, int):
        count = sp.Min(count, model.spike)
    return count


def _df2t(prefix: str, num: tuple[sp.Expr, ...], den: tuple[sp.Expr, ...], x: sp.Expr, y: sp.Symbol):
    """State symbols, the output expression y = b0 x + w0, and the state update of one filter."""
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


def _is_identity(k: KernelRecurrence) -> bool:
    return k.num == (1,) and k.den == (1,)


#: Cap of the diagnostic's running product of |step factors| (finite in float32).
GROWTH_CAP = sp.Float(1e30)
#: Prefix of the diagnostic state and finals; of the parameter-gradient sums.
DIAGNOSTIC, PARAMETER = "dg_", "acc_"


def pole(den: tuple[sp.Expr, ...]) -> sp.Expr:
    """The decay of a kernel's recurrence that multiplies the carried adjoint (for the diagnostics).

    0 for finite taps; the pole -a_1 for one pole; the spectral radius max |root| of
    x^2 + a_1 x + a_2 for two (real or complex pair); sum |a_i|, a bound on it, for more.
    """
    if len(den) == 1:
        return sp.Integer(0)
    if len(den) == 2:
        return -den[1]
    if len(den) == 3:
        a1, a2 = den[1], den[2]
        disc = a1**2 - 4 * a2
        real = sp.Max(sp.Abs(-a1 + sp.sqrt(sp.Max(disc, 0))), sp.Abs(-a1 - sp.sqrt(sp.Max(disc, 0)))) / 2
        return sp.Piecewise((real, disc >= 0), (sp.sqrt(sp.Abs(a2)), True))
    return sum((sp.Abs(c) for c in den[1:]), sp.Integer(0))


def _extend(scan: Scan, states, inits, assigns, updates, finals, persistent) -> Scan:
    return Scan(scan.name, scan.direction, scan.inputs + tuple(i for i in _extra_inputs(assigns, updates, finals)
                                                               if i not in scan.inputs),
                scan.state + tuple(states), scan.init + tuple(inits), scan.assignments + tuple(assigns),
                scan.outputs, scan.update + tuple(updates), scan.finals + tuple(finals),
                scan.persistent + tuple(persistent))


def _extra_inputs(assigns, updates, finals):
    """Per-step inputs the gradient terms read beyond the scan's own (a, s, u, in this order)."""
    used = set().union(*(sp.sympify(e).free_symbols for _, e in assigns), *(sp.sympify(e).free_symbols for e in updates))
    return tuple(x for x in (sp.Symbol(n, real=True) for n in ("a", "s", "u")) if x in used)


def _diagnostics(c: sp.Expr):
    """Per neuron: max |c|, the longest run of |c| > 1 and the largest product of |c| over a run.

    The run and the product restart at truncation boundaries (what the adjoint carries); the
    product is Kadane's maximum in the linear domain, max(growth |c|, 1), capped at GROWTH_CAP.
    """
    mag = sp.Symbol(f"{DIAGNOSTIC}abs_c", real=True)
    run_now, growth_now = sp.Symbol(f"{DIAGNOSTIC}run_now", real=True), sp.Symbol(f"{DIAGNOSTIC}growth_now", real=True)
    st = {k: sp.Symbol(f"{DIAGNOSTIC}{k}", real=True) for k in ("max", "run", "best_run", "growth", "best_growth")}
    assigns = [(mag, sp.Abs(c)), (run_now, (st["run"] + 1) * sp.Heaviside(mag - 1, 0)),
               (growth_now, sp.Min(sp.Max(st["growth"] * mag, 1), GROWTH_CAP))]
    states = [st["max"], st["run"], st["best_run"], st["growth"], st["best_growth"]]
    inits = [sp.Integer(0), sp.Integer(0), sp.Integer(0), sp.Integer(1), sp.Integer(1)]
    updates = [sp.Max(st["max"], mag), run_now, sp.Max(st["best_run"], run_now), growth_now,
               sp.Max(st["best_growth"], growth_now)]
    finals = [(sp.Symbol(f"{DIAGNOSTIC}max_factor"), st["max"]), (sp.Symbol(f"{DIAGNOSTIC}longest_run"), st["best_run"]),
              (sp.Symbol(f"{DIAGNOSTIC}max_growth"), st["best_growth"])]
    return states, inits, assigns, updates, finals, [st["max"], st["best_run"], st["best_growth"]]


def _parameter_sums(model: NeuronModel, S: Mapping[str, sp.Symbol], explicit: Mapping[sp.Symbol, sp.Expr],
                    filters, boundary: Mapping[sp.Symbol, sp.Expr]):
    """Per-neuron sums acc_p with dL/dp = sum over neurons of acc_p (MATH section 5: the IFT with p
    as an extra independent variable, dL/dp = -lambda^T d phi/dp).

    ``explicit[p]`` is the per-step term contracting the adjoint with d phi_u/dp in the symbols of
    step n; ``filters`` lists (p, kernel, x, weight, w0_weight): the correlation y of the input x
    with the derivative kernel d kernel/dp, run as a persistent reverse filter, each step adding
    weight * y, and w0_weight times the filter's first state after the last step (the correlation
    at n = -1); ``boundary[p]`` the term at n = -1 (initial state). The spike path of theta adds
    -dL/ds_n kappa_n sigma_n (df/dtheta = -kappa sigma).
    """
    states, inits, assigns, updates, finals, persistent = [], [], [], [], [], []
    kappa = sp.Integer(1) if model.spike in ("single", "smooth") else S["u"] / THETA
    for idx, (name, p) in enumerate(zip(model.parameter_names, model.symbols)):
        acc = sp.Symbol(f"{PARAMETER}{name}", real=True)
        term = explicit.get(p, sp.Integer(0))
        last = boundary.get(p, sp.Integer(0))
        for j, (q, kernel, x, weight, w0_weight) in enumerate(filters):
            if q != p:
                continue
            dk = kernel.diff(p)
            if all(c == 0 for c in dk.num):
                continue
            w, y_expr, w_update = _df2t(f"vd{idx}_{j}_", dk.num, dk.den, x, sp.Symbol(f"yd{idx}_{j}", real=True))
            y = sp.Symbol(f"yd{idx}_{j}", real=True)
            assigns.append((y, y_expr))
            states += list(w)
            inits += [sp.Integer(0)] * len(w)
            updates += list(w_update)
            persistent += list(w)
            term = term + weight * y
            if w:
                last = last + w0_weight * w[0]
        if p == THETA:
            term = term - S["dl_ds"] * kappa * S["sigma"]
        states.append(acc)
        inits.append(sp.Integer(0))
        updates.append(acc + term)
        persistent.append(acc)
        finals.append((acc, acc + last))
    return states, inits, assigns, updates, finals, persistent


def _with_gradients(scan: Scan, model: NeuronModel, S, explicit, filters, boundary, c: sp.Expr,
                    raw: bool) -> Scan:
    """Add the parameter sums and the diagnostics to a reverse scan (``raw``: carry d_n un-truncated)."""
    parts = [_parameter_sums(model, S, explicit, filters, boundary), _diagnostics(c)]
    states, inits, assigns, updates, finals, persistent = ([] for _ in range(6))
    if raw:  # d_{n+1} regardless of truncation: the full-history explicit partials contract with it
        states.append(S["d_raw"])
        inits.append(sp.Integer(0))
        updates.append(S["d"])
        persistent.append(S["d_raw"])
    for part in parts:
        for acc, new in zip((states, inits, assigns, updates, finals, persistent), part):
            acc.extend(new)
    # the assignments of the filters read d, which the scan assigns: they go after the scan's own
    return _extend(scan, states, inits, assigns, updates, finals, persistent)


# --------------------------------------------------------------- the scans
def derive_recurrence(model: NeuronModel) -> Recurrence:
    """The scans of ``model`` (symbolic parameters; numbers enter at evaluation)."""
    sym = {name: sp.Symbol(name, real=True) for name in
           ("a", "g", "sigma", "s", "u", "m", "I", "pre", "z", "r", "q", "d", "dl_ds", "grad_a", "c",
            "u_prev", "s_prev", "d_next", "d_raw")}
    S = sym
    zero = sp.Integer(0)
    sigma_u = model.surrogate.expr
    f = spike_expr(model, S["u"])
    if model.membrane is not None:
        mem = model.membrane
        syn = KernelRecurrence("syn", mem.syn, mem.syn.num, mem.syn.den)
        kernels = (KernelRecurrence("eps", model.eps, model.eps.num, model.eps.den),)
        if model.nu is not None:
            kernels += (KernelRecurrence("nu", model.nu, model.nu.num, model.nu.den),)
        kernels += (syn,)
        # forward
        w, current, w_update = _df2t("w_syn", syn.num, syn.den, S["a"], S["I"])
        if model.reset == "zero":
            pre = mem.alpha * S["u_prev"] * (1 - S["s_prev"]) + S["I"]
        else:
            pre = mem.alpha * S["u_prev"] + S["I"] - mem.rho * S["s_prev"]
        assigns: list[tuple[sp.Symbol, sp.Expr]] = [(S["I"], current), (S["pre"], pre)]
        outputs = [S["u"], S["s"], S["sigma"]]
        if model.u_min is not None:
            u_min = sp.Float(model.u_min)
            assigns += [(S["m"], sp.Heaviside(S["pre"] - u_min, 0)), (S["u"], sp.Max(S["pre"], u_min))]
            outputs.append(S["m"])
        else:
            assigns.append((S["u"], S["pre"]))
        assigns += [(S["s"], f), (S["sigma"], sigma_u.subs(U, S["u"]))]
        forward = Scan("forward", "forward", (S["a"],), (S["u_prev"], S["s_prev"]) + w,
                       (U_INIT, zero) + (zero,) * len(w), tuple(assigns), tuple(outputs),
                       (S["u"], S["s"]) + w_update)
        # backward
        mask = S["m"] if model.u_min is not None else sp.Integer(1)
        if model.reset == "zero":
            exact = mem.alpha * (1 - S["s"] - S["u"] * S["sigma"])
            loose = mem.alpha * (1 - S["s"])
            dropped = -mem.alpha * S["u"] * S["d_next"]
        else:
            exact = mem.alpha - mem.rho * S["sigma"]
            loose = mem.alpha
            dropped = -mem.rho * S["d_next"]
        inputs = (S["g"], S["sigma"], S["s"], S["u"]) + ((S["m"],) if model.u_min is not None else ())
        # Parameter gradients: sum_n d_n d pre_n/dp. The explicit partial of pre_{n+1} reads u_n, s_n:
        # at step n it contracts with d_{n+1} (d_raw, not truncated); pre_0 reads u_init, s_{-1} = 0.
        shift = {S["u_prev"]: S["u"], S["s_prev"]: S["s"]}
        explicit = {p: sp.diff(pre, p).xreplace(shift) * S["d_raw"] for p in model.symbols}
        boundary = {p: sp.diff(pre, p).xreplace({S["u_prev"]: U_INIT, S["s_prev"]: zero}) * S["d_raw"]
                    for p in model.symbols}
        syn_filters = [(p, mem.syn, S["d"], S["a"], zero) for p in model.symbols if p in mem.syn.parameters]
        scans = []
        for name, factor, ds in (("backward", exact, S["g"] + dropped), ("slayer", loose, S["g"])):
            v, grad_a, v_update = _df2t("v_syn", syn.num, syn.den, S["d"], S["grad_a"])
            assigns = ((S["c"], factor), (S["dl_ds"], ds),
                       (S["d"], mask * (S["sigma"] * S["g"] + S["c"] * S["d_next"])), (S["grad_a"], grad_a))
            scan = Scan(name, "reverse", inputs, (S["d_next"],) + v, (zero,) * (1 + len(v)), assigns,
                        (S["d"], S["grad_a"], S["dl_ds"]), (S["d"],) + v_update,
                        ((sp.Symbol("grad_u_init"), mem.alpha * S["d_next"]),))
            scans.append(_with_gradients(scan, model, S, explicit, syn_filters, boundary, S["c"], raw=True))
        return Recurrence(model, "membrane", kernels, forward, scans[0], scans[1], exact, dropped)

    eps = KernelRecurrence("eps", model.eps, model.eps.num, model.eps.den)
    nu = KernelRecurrence("nu", model.nu, model.nu.num, model.nu.den)
    we, z, we_update = _df2t("w_eps", eps.num, eps.den, S["a"], S["z"])
    wn, r, wn_update = _df2t("w_nu", nu.num, nu.den, S["s_prev"], S["r"])
    assigns = ((S["z"], z), (S["r"], r), (S["u"], S["z"] - S["r"]), (S["s"], f),
               (S["sigma"], sigma_u.subs(U, S["u"])))
    # u_init is an input at time -1: it enters the eps filter state, w <- update(x = u_init).
    init_eps = _filter_state_after(eps, U_INIT)
    forward = Scan("forward", "forward", (S["a"],), (S["s_prev"],) + we + wn, (zero,) + init_eps + (zero,) * len(wn),
                   assigns, (S["u"], S["s"], S["sigma"]), (S["s"],) + we_update + wn_update)
    scans = []
    for name in ("backward", "slayer"):
        vn, q, vn_update = _df2t("v_nu", nu.num, nu.den, S["d_next"], S["q"])
        ve, grad_a, ve_update = _df2t("v_eps", eps.num, eps.den, S["d"], S["grad_a"])
        ds = S["g"] - S["q"] if name == "backward" else S["g"]
        assigns = ((S["q"], q), (S["dl_ds"], ds), (S["d"], S["sigma"] * S["dl_ds"]), (S["grad_a"], grad_a))
        if name == "slayer":
            assigns = assigns[1:]
            vn, vn_update = (), ()
        grad_u = ve[0] if ve else zero
        decay = pole(nu.den)
        factor = decay - nu.num[0] * S["sigma"] if name == "backward" else decay
        scan = Scan(name, "reverse", (S["g"], S["sigma"]), (S["d_next"],) + vn + ve,
                    (zero,) * (1 + len(vn) + len(ve)), assigns + ((S["c"], factor),),
                    (S["d"], S["grad_a"], S["dl_ds"]),
                    (S["d"],) + vn_update + ve_update, ((sp.Symbol("grad_u_init"), grad_u),))
        # Parameter gradients: sum_n d_n [(deps/dp * a)[n] + deps/dp[n+1] u_init - (dnu/dp * s_prev)[n]],
        # as correlations of the adjoint with the derivative kernels (persistent reverse filters).
        # u_init enters at time -1: dL/dp gains u_init sum_k deps/dp[k+1] d_k, the state w_0 after the last step.
        filters = [(p, model.eps, S["d"], S["a"], U_INIT) for p in model.symbols if p in model.eps.parameters]
        filters += [(p, model.nu, S["d_raw"], -S["s"], zero) for p in model.symbols if p in model.nu.parameters]
        scans.append(_with_gradients(scan, model, S, {}, filters, {}, S["c"], raw=True))
    return Recurrence(model, "srm", (eps, nu), forward, scans[0], scans[1], None, -S["q"])


def _filter_state_after(k: KernelRecurrence, x: sp.Expr) -> tuple[sp.Expr, ...]:
    """The DF2T state after filtering the single input x from rest (u_init at time -1)."""
    y = sp.Symbol("y")
    w, out, update = _df2t("t", k.num, k.den, x, y)
    rest = {wi: 0 for wi in w}
    return tuple(sp.expand(e.subs(y, out).subs(rest)) for e in update)


# --------------------------------------------------------------- unrolling
def unroll(scan: Scan, T: int, inputs: Mapping[sp.Symbol, list],
           truncation: int | None = None) -> tuple[dict[sp.Symbol, list], dict]:
    """Run ``scan`` symbolically (or on numbers) for T steps.

    ``inputs`` maps each input symbol to a list of T values (symbols or
    arrays). A reverse scan with ``truncation=K`` restarts its non-persistent
    state at the end of every chunk of K steps, as the generated kernels do.
    Returns ({output: values per step}, {final: value}).
    """
    state = dict(zip(scan.state, scan.init))
    out: dict[sp.Symbol, list] = {o: [None] * T for o in scan.outputs}
    steps = range(T) if scan.direction == "forward" else range(T - 1, -1, -1)
    for n in steps:
        if truncation and scan.direction == "reverse" and (n + 1) % truncation == 0:
            state.update({st: init for st, init in zip(scan.state, scan.init) if st not in scan.persistent})
        env = dict(state)
        for sym, values in inputs.items():
            env[sym] = values[n]
        for lhs, rhs in scan.assignments:
            env[lhs] = sp.expand(rhs.xreplace(env))
        for o in scan.outputs:
            out[o][n] = env[o]
        state = {s: sp.expand(e.xreplace(env)) for s, e in zip(scan.state, scan.update)}
    finals = {lhs: sp.expand(rhs.xreplace(state)) for lhs, rhs in scan.finals}
    return out, finals


@dataclass(frozen=True)
class Proof:
    """Outcome of the symbolic check for one horizon T."""

    T: int
    ok: bool
    detail: str
    method: str = "exodus"  # exodus | slayer
    truncation: int | None = None

    @property
    def label(self) -> str:
        return f"{self.method} T={self.T}" + (f" K={self.truncation}" if self.truncation else "")


def _rational(expr):
    """expr with every Float replaced by the decimal it was written as (0.9 -> 9/10), exactly."""
    if expr is None:
        return None
    expr = sp.sympify(expr)
    floats = expr.atoms(sp.Float)
    if not floats:
        return expr
    return expr.xreplace({f: sp.Rational(repr(float(f))) for f in floats})


def exact_model(model: NeuronModel) -> NeuronModel:
    """The same model with decimal literals as exact rationals (for proofs; kernels print floats).

    A proof in floating point fails on rounding residuals such as 1e-16 that
    are not errors of the derivation; with rationals both sides are exact.
    """
    import dataclasses

    from ..kernels import Kernel

    def kernel(k):
        if k is None:
            return None
        if k.expr is not None and k.expr.atoms(sp.Float):
            # re-derive the recurrence from the exact closed form (the float coefficients carry rounding)
            return Kernel.closed_form(_rational(k.expr))
        num = tuple(_rational(c) for c in k.num)
        den = tuple(_rational(c) for c in k.den)
        expr = _rational(k.expr)
        if num == k.num and den == k.den and expr == k.expr:
            return k
        return dataclasses.replace(k, expr=expr, num=num, den=den)

    eps, nu = kernel(model.eps), kernel(model.nu)
    membrane = model.membrane
    if membrane is not None:
        membrane = dataclasses.replace(membrane, alpha=_rational(membrane.alpha), rho=_rational(membrane.rho),
                                       syn=kernel(membrane.syn))
    if eps is model.eps and nu is model.nu and membrane == model.membrane:
        return model
    return dataclasses.replace(model, eps=eps, nu=nu, membrane=membrane)


def _cut(jac, T: int, detach: bool, truncation: int | None):
    """The Jacobians of what SLAYER (reset detached) or truncated BPTT differentiate (MATH section 5):
    d phi_u/ds set to 0 (detach); couplings between chunks of K steps removed, in d phi/d(u, s),
    d phi/da and d phi/du_init (truncation). d phi/dp stays whole: parameter gradients contract the
    truncated adjoint with the full explicit partials."""
    import dataclasses

    J, Ja, Ju = jac.dependent.copy(), jac.inputs.copy(), jac.u_init.copy()
    chunk = (lambda n: n // truncation) if truncation else (lambda n: 0)
    for i in range(T):
        for j in range(T):
            if detach:
                J[2 * i, 2 * j + 1] = 0
            if chunk(i) != chunk(j):
                J[2 * i, 2 * j] = J[2 * i, 2 * j + 1] = Ja[2 * i, j] = 0
        if chunk(i) != 0:
            Ju[2 * i, 0] = 0
    return dataclasses.replace(jac, dependent=J, inputs=Ja, u_init=Ju)


def prove(model: NeuronModel, T: int, recurrence: Recurrence | None = None, *, method: str = "exodus",
          truncation: int | None = None) -> Proof:
    """Unroll a backward scan for T steps and check it against the IFT adjoint, symbolically.

    Checked: dL/da_n, dL/ds_n (the adjoint lambda_s), dL/du_init and the per-neuron sum of every
    parameter gradient. ``method="slayer"`` checks the SLAYER scan against the adjoint with the reset
    detached; ``truncation=K`` the truncated scan against the adjoint without cross-chunk couplings.
    Decimal literals are proved as the exact rationals they denote (:func:`exact_model`).
    """
    from . import ift
    from .system import build_system

    if method not in ("exodus", "slayer"):
        raise ValueError(f"method={method!r}: expected 'exodus' or 'slayer'")
    exact = exact_model(model)
    if exact is not model:
        model, recurrence = exact, None
    rec = recurrence or derive_recurrence(model)
    system = build_system(model, T)
    jac = ift.jacobians(system)
    if method == "slayer" or truncation:
        jac = _cut(jac, T, method == "slayer", truncation)
    adj = ift.adjoint(system, jac)
    scan = (rec.backward if method == "exodus" else rec.slayer).without(DIAGNOSTIC)  # diagnostics: not a gradient
    names = {s.name: s for s in scan.inputs}
    available = {"g": system.g, "sigma": system.sigma, "s": system.s, "u": system.u, "m": system.mask, "a": system.a}
    inputs = {sym: list(available[name]) for name, sym in names.items()}
    out, finals = unroll(scan, T, inputs, truncation)
    fail = lambda detail: Proof(T, False, detail, method, truncation)  # noqa: E731
    dl_ds = next((o for o in scan.outputs if o.name == "dl_ds"), None)
    for n in range(T if dl_ds is not None else 0):
        diff = sp.expand(out[dl_ds][n] - adj.lam[2 * n + 1])
        if diff != 0 and sp.simplify(diff) != 0:
            return fail(f"dL/ds_{n}: recurrence and IFT adjoint differ by {diff}")
    grad_a = out[next(o for o in scan.outputs if o.name == "grad_a")]
    for n in range(T):
        diff = sp.expand(grad_a[n] - adj.grad_a[n])
        if diff != 0 and sp.simplify(diff) != 0:
            return fail(f"dL/da_{n}: recurrence and IFT adjoint differ by {diff}")
    by_name = {lhs.name: value for lhs, value in finals.items()}
    diff = sp.expand(by_name["grad_u_init"] - adj.grad_u_init)
    if diff != 0 and sp.simplify(diff) != 0:
        return fail(f"dL/du_init: recurrence and IFT adjoint differ by {diff}")
    for name in model.parameter_names:
        diff = sp.expand(by_name[PARAMETER + name] - adj.grad_params[name])
        if diff != 0 and sp.simplify(diff) != 0:
            return fail(f"dL/d{name}: the scan's sum and the IFT adjoint differ by {diff}")
    return Proof(T, True, f"dL/da_0..{T - 1}, dL/ds, dL/du_init and dL/d({', '.join(model.parameter_names)}) "
                          "equal the IFT adjoint", method, truncation)


# -------------------------------------------------------------- numerics
def evaluate(scan: Scan, model: NeuronModel, arrays: Mapping[str, np.ndarray],
             u_init: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Run a derived scan numerically (float64, vectorised over neurons) from its expressions.

    ``arrays`` maps input names ("a", "g", "sigma", "s", "u", "m") to (T, M)
    arrays. Returns {output name: (T, M)} and the finals by name.
    """
    values = model.values
    first = next(iter(arrays.values()))
    T, M = first.shape
    args = list(scan.inputs) + list(scan.state) + [U_INIT]
    assigned = [lhs for lhs, _ in scan.assignments]
    env_syms = args + assigned
    funcs = []
    for i, (lhs, rhs) in enumerate(scan.assignments):
        funcs.append(sp.lambdify(env_syms[: len(args) + i], rhs.subs(values), modules=["numpy", "scipy"]))
    upd = sp.lambdify(env_syms, [e.subs(values) for e in scan.update], modules=["numpy", "scipy"])
    init = sp.lambdify([U_INIT], [sp.sympify(e).subs(values) for e in scan.init], modules="numpy")
    u0 = np.zeros(M) if u_init is None else u_init
    state = [np.broadcast_to(np.asarray(v, dtype=float), (M,)).copy() for v in init(u0)]
    outs = {o.name: np.zeros((T, M)) for o in scan.outputs}
    steps = range(T) if scan.direction == "forward" else range(T - 1, -1, -1)
    for n in steps:
        env = [arrays[s.name][n] for s in scan.inputs] + state + [u0]
        for fn in funcs:
            env.append(np.broadcast_to(np.asarray(fn(*env), dtype=float), (M,)))
        named = dict(zip([s.name for s in env_syms], env))
        for o in scan.outputs:
            outs[o.name][n] = named[o.name]
        state = [np.broadcast_to(np.asarray(v, dtype=float), (M,)).copy() for v in upd(*env)]
    fin = {}
    for lhs, rhs in scan.finals:
        fn = sp.lambdify(list(scan.state) + [U_INIT], sp.sympify(rhs).subs(values), modules="numpy")
        fin[lhs.name] = np.broadcast_to(np.asarray(fn(*state, u0), dtype=float), (M,))
    outs.update(fin)
    return outs
