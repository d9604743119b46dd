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
        return len(self.backward.state)


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


# --------------------------------------------------------------- the scans
def derive_recurrence(model: NeuronModel) -> Recurrence:
    """The scans of ``model`` (symbolic parameters; numbers enter at evaluation)."""
    sym = {name: sp.Symbol(name, real=True) for name in
           ("a", "g", "sigma", "s", "u", "m", "I", "pre", "z", "r", "q", "d", "dl_ds", "grad_a", "c",
            "u_prev", "s_prev", "d_next")}
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
        scans = []
        for name, factor, ds in (("backward", exact, S["g"] + dropped), ("slayer", loose, S["g"])):
            v, grad_a, v_update = _df2t("v_syn", syn.num, syn.den, S["d"], S["grad_a"])
            assigns = ((S["c"], factor), (S["dl_ds"], ds),
                       (S["d"], mask * (S["sigma"] * S["g"] + S["c"] * S["d_next"])), (S["grad_a"], grad_a))
            scans.append(Scan(name, "reverse", inputs, (S["d_next"],) + v, (zero,) * (1 + len(v)), assigns,
                              (S["d"], S["grad_a"], S["dl_ds"]), (S["d"],) + v_update,
                              ((sp.Symbol("grad_u_init"), mem.alpha * S["d_next"]),)))
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
        scans.append(Scan(name, "reverse", (S["g"], S["sigma"]), (S["d_next"],) + vn + ve,
                          (zero,) * (1 + len(vn) + len(ve)), assigns, (S["d"], S["grad_a"], S["dl_ds"]),
                          (S["d"],) + vn_update + ve_update, ((sp.Symbol("grad_u_init"), grad_u),)))
    return Recurrence(model, "srm", (eps, nu), forward, scans[0], scans[1], None, -S["q"])


def _filter_state_after(k: KernelRecurrence, x: sp.Expr) -> tuple[sp.Expr, ...]:
    """The DF2T state after filtering the single input x from rest (u_init at time -1)."""
    y = sp.Symbol("y")
    w, out, update = _df2t("t", k.num, k.den, x, y)
    rest = {wi: 0 for wi in w}
    return tuple(sp.expand(e.subs(y, out).subs(rest)) for e in update)


# --------------------------------------------------------------- unrolling
def unroll(scan: Scan, T: int, inputs: Mapping[sp.Symbol, list]) -> tuple[dict[sp.Symbol, list], dict]:
    """Run ``scan`` symbolically (or on numbers) for T steps.

    ``inputs`` maps each input symbol to a list of T values (symbols or
    arrays). Returns ({output: values per step}, {final: value}).
    """
    state = dict(zip(scan.state, scan.init))
    out: dict[sp.Symbol, list] = {o: [None] * T for o in scan.outputs}
    steps = range(T) if scan.direction == "forward" else range(T - 1, -1, -1)
    for n in steps:
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


def prove(model: NeuronModel, T: int, recurrence: Recurrence | None = None) -> Proof:
    """Unroll the exodus backward scan for T steps; check dL/da and dL/du_init against the IFT adjoint.

    Decimal literals are proved as the exact rationals they denote (:func:`exact_model`).
    """
    from . import ift
    from .system import build_system

    exact = exact_model(model)
    if exact is not model:
        model, recurrence = exact, None
    rec = recurrence or derive_recurrence(model)
    system = build_system(model, T)
    adj = ift.adjoint(system)
    names = {s.name: s for s in rec.backward.inputs}
    inputs = {names["g"]: list(system.g), names["sigma"]: list(system.sigma)}
    if "s" in names:
        inputs[names["s"]] = list(system.s)
        inputs[names["u"]] = list(system.u)
    if "m" in names:
        inputs[names["m"]] = list(system.mask)
    out, finals = unroll(rec.backward, T, inputs)
    grad_a = out[next(o for o in rec.backward.outputs if o.name == "grad_a")]
    for n in range(T):
        diff = sp.expand(grad_a[n] - adj.grad_a[n])
        if diff != 0 and sp.simplify(diff) != 0:
            return Proof(T, False, f"dL/da_{n}: recurrence and IFT adjoint differ by {diff}")
    grad_u = next(iter(finals.values()))
    diff = sp.expand(grad_u - adj.grad_u_init)
    if diff != 0 and sp.simplify(diff) != 0:
        return Proof(T, False, f"dL/du_init: recurrence and IFT adjoint differ by {diff}")
    return Proof(T, True, f"dL/da_0..{T - 1} and dL/du_init equal the IFT adjoint")


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
        fn = sp.lambdify(list(scan.state), sp.sympify(rhs).subs(values), modules="numpy")
        fin[lhs.name] = np.broadcast_to(np.asarray(fn(*state), dtype=float), (M,))
    outs.update(fin)
    return outs
