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

Backward scan (exodus, n = T-1..0), docs/MATH.md section 4:
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

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..methods import get_method
from ..neurons.kernels import Kernel, trig_polynomial
from ..neurons.models import NeuronModel
from ..neurons.surrogates import THETA, U
from .filters import (
    decay,
    df2t as _df2t,
    filter_adjoint,
    filter_state_after,
    filter_step,
)
from . import identity
from .filters import free_response_tangent
from .system import STATE_IN, U_INIT

__all__ = ["Scan", "Recurrence", "derive_recurrence", "unroll", "prove", "evaluate", "spike_expr", "Proof",
           "STATE_OUT", "STATE_GRAD", "STATE_WHOLE", "initial_state",
           "u_init_parameter_terms"]


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

    def without_parameter_sums(self, keep: tuple[str, ...] = ()) -> Scan:
        """This scan for dL/da (and dL/d(initial state), the diagnostics) alone: without the parameter sums
        ``acc_<p>`` (:data:`PARAMETER`) and whatever state and assignments only they needed (an SRM's parameter
        filters, the raw adjoint), so that the kernel no longer reads the inputs only they read (u and s for a
        LIF). Every remaining assignment and update is the same expression: dL/da is the same number.
        ``keep``: parameter names whose sums stay (a LIF keeping alpha's reads u, not s)."""
        kept = {PARAMETER + k for k in keep}
        finals = tuple((l, r) for l, r in self.finals if not l.name.startswith(PARAMETER) or l.name in kept)
        assigned = dict(self.assignments)
        updates = dict(zip(self.state, self.update))
        needed: set[sp.Symbol] = set(self.outputs)
        for _, rhs in finals:
            needed |= rhs.free_symbols
        todo = list(needed)
        while todo:
            sym = todo.pop()
            for expr in (assigned.get(sym), updates.get(sym)):
                if expr is not None:
                    new = sp.sympify(expr).free_symbols - needed
                    needed |= new
                    todo.extend(new)
        keep = [i for i, st in enumerate(self.state) if st in needed]
        return Scan(self.name, self.direction, self.inputs, tuple(self.state[i] for i in keep),
                    tuple(self.init[i] for i in keep),
                    tuple((l, r) for l, r in self.assignments if l in needed), self.outputs,
                    tuple(self.update[i] for i in keep), finals,
                    tuple(p for p in self.persistent if p in needed))

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
        rhs = sp.Add(*[-self.den[j] * h(k - j) for j in range(1, len(self.den))])
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
    #: The forward state x0 an initial membrane u_init stands for (expressions in u_init and the
    #: parameters), in the order of ``forward.state``; the scans themselves start from x0_<state>.
    initial: tuple[sp.Expr, ...] = ()

    @property
    def state_in(self) -> tuple[sp.Symbol, ...]:
        """The initial-state vectors x0_<state> the forward scan starts from (and the backward reads)."""
        return tuple(sp.Symbol(STATE_IN + st.name, real=True) for st in self.forward.state)

    def from_u_init(self) -> dict[str, sp.Expr]:
        """How the finals of the backward scan become those of an initial membrane u_init:
        dL/du_init = sum_k dL/dx0_k dx0_k/du_init (the final ``grad_u_init``, already generated)
        and dL/dp gains sum_k dL/dx0_k dx0_k/dp where x0 depends on p (e.g. an SRM's
        w_eps0 = eps[1] u_init). Returns {parameter: that extra term} for the parameters it is not zero
        for, in the finals gw_<state>: dL/dx0 without truncation (d phi/dp stays whole), which the
        backward scans carry for exactly these states."""
        out = {}
        for name, p in zip(self.model.parameter_names, self.model.symbols):
            term = sp.Add(*[sp.diff(x, p) * sp.Symbol(STATE_WHOLE + st.name, real=True)
                            for x, st in zip(self.initial, self.forward.state)])
            if term != 0:
                out[name] = term
        return out

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


@dataclass(frozen=True)
class _InitialState:
    """dL/dp through a filter's initial state w0 (one entry of ``_parameter_sums``' filters): w0 enters the
    output through its free response C A^n w0, so dL/dp gains sum_i weights[i] nu_i, nu the tangent in p of the
    filter's adjoint driven by ``x`` (:func:`~ift_snn.symbolic.filters.free_response_tangent`), in whichever
    form the scan runs the kernel."""

    p: sp.Symbol
    kernel: Kernel
    x: sp.Expr
    weights: tuple


def _is_identity(k: KernelRecurrence) -> bool:
    return k.num == (1,) and k.den == (1,)


#: Cap of the diagnostic's running product of |step factors| (finite in float32).
GROWTH_CAP = sp.Float(1e30)
#: Prefix of the diagnostic state and finals; of the parameter-gradient sums.
DIAGNOSTIC, PARAMETER = "dg_", "acc_"
#: Prefix of the forward finals (the state after the last step) and of the backward finals dL/dx0.
STATE_OUT, STATE_GRAD = "xT_", "gx_"
#: Prefix of the finals dL/dx0 over the whole sequence (un-truncated), for parameters x0 depends on.
STATE_WHOLE = "gw_"


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
    """Per-neuron sums acc_p with dL/dp = sum over neurons of acc_p (docs/MATH.md section 5: the IFT with p
    as an extra independent variable, dL/dp = -lambda^T d phi/dp).

    ``explicit[p]`` is the per-step term contracting the adjoint with d phi_u/dp in the symbols of
    step n; ``filters`` lists (p, kernel, x, weight, w0_weight): the correlation y of the input x
    with the derivative kernel d kernel/dp, run as a persistent reverse filter, each step adding
    weight * y, and w0_weight times the filter's first state after the last step (the correlation
    at n = -1); ``boundary[p]`` the term at n = -1 (initial state). The spike path of theta adds
    -dL/ds_n kappa_n sigma_n (df/dtheta = -kappa sigma).
    """
    states, inits, assigns, updates, finals, persistent = [], [], [], [], [], []
    adjoints: dict = {}  # (kernel, input) -> the persistent adjoint the free-response tangents read
    placed: set = set()
    kappa = sp.Integer(1) if model.spike in ("single", "smooth") else S["u"] / THETA
    for idx, (name, p) in enumerate(zip(model.parameter_names, model.symbols)):
        acc = sp.Symbol(f"{PARAMETER}{name}", real=True)
        term = explicit.get(p, sp.Integer(0))
        last = boundary.get(p, sp.Integer(0))
        for j, entry in enumerate(filters):
            if isinstance(entry, _InitialState):
                if entry.p != p:
                    continue
                # the free response of w0: the tangent of the filter's adjoint, run persistently (one adjoint
                # per filter and input, shared by its parameters)
                key = (entry.kernel, entry.x)
                if key not in adjoints:
                    mu, _, before = filter_adjoint(f"k{len(adjoints)}_mu", entry.kernel, entry.x)
                    adjoints[key] = (mu, before, len(adjoints))
                mu, before, number = adjoints[key]
                nu, more_updates = free_response_tangent(mu, before, p, f"k{number}_{idx}_nu")
                if not nu:
                    continue
                if key not in placed:  # the adjoint's states go in once, where a tangent first needs them
                    placed.add(key)
                    states += list(mu)
                    inits += [sp.Integer(0)] * len(mu)
                    updates += list(before)
                    persistent += list(mu)
                states += list(nu.values())
                inits += [sp.Integer(0)] * len(nu)
                updates += list(more_updates)
                persistent += list(nu.values())
                last = last + sp.Add(*[entry.weights[i] * v for i, v in nu.items()])
                continue
            q, kernel, x, weight, w0_weight = entry[:5]
            x_last = entry[5] if len(entry) > 5 else sp.Integer(0)
            if q != p:
                continue
            derivative = kernel.diff(p)
            if all(c == 0 for c in derivative.num):
                continue
            w, y_expr, w_update = filter_step(f"vd{idx}_{j}_", derivative, x, sp.Symbol(f"yd{idx}_{j}", real=True))
            y = sp.Symbol(f"yd{idx}_{j}", real=True)
            states += list(w)
            inits += [sp.Integer(0)] * len(w)
            updates += list(w_update)
            persistent += list(w)
            if weight != 0:
                assigns.append((y, y_expr))
                term = term + weight * y
            else:  # only the correlation at n = -1 is read: y needs no variable of its own
                w_update = tuple(e.xreplace({y: y_expr}) for e in w_update)
                updates[len(updates) - len(w):] = list(w_update)
            if w0_weight != 0:
                # the correlation at n = -1: y with the input x at step -1 (0 for d, d_0 for d_raw)
                last = last + w0_weight * y_expr.xreplace({x: x_last})
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
@functools.lru_cache(maxsize=128)
def derive_recurrence(model: NeuronModel) -> Recurrence:
    """The scans of ``model`` (symbolic parameters; numbers enter at evaluation). Cached per model
    (models are immutable and hashed by value)."""
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
        w, current, w_update = filter_step("w_syn", mem.syn, S["a"], S["I"])
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
        state = (S["u_prev"], S["s_prev"]) + w
        x0 = _state_in(state)
        forward = Scan("forward", "forward", (S["a"],), state, x0, tuple(assigns), tuple(outputs),
                       (S["u"], S["s"]) + w_update, _state_out(state))
        initial = (U_INIT, zero) + (zero,) * len(w)
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
        # at step n it contracts with d_{n+1} (d_raw, not truncated); pre_0 reads the initial state x0.
        shift = {S["u_prev"]: S["u"], S["s_prev"]: S["s"]}
        at_start = {S["u_prev"]: x0[0], S["s_prev"]: x0[1]}
        explicit = {p: sp.diff(pre, p).xreplace(shift) * S["d_raw"] for p in model.symbols}
        boundary = {p: sp.diff(pre, p).xreplace(at_start) * S["d_raw"] for p in model.symbols}
        syn_filters = [(p, mem.syn, S["d"], S["a"], zero) for p in model.symbols if p in mem.syn.parameters]
        # the synaptic state w_syn0 enters I_n through its free response; dL/dp sees its p-dependence
        syn_filters += [_InitialState(p, mem.syn, S["d"], tuple(x0[2:2 + len(w)]))
                        for p in model.symbols if p in mem.syn.parameters and len(w)]
        scans = []
        for name, factor, ds in (("backward", exact, S["g"] + dropped), ("slayer", loose, S["g"])):
            lam, grad_a, lam_update = filter_adjoint("l_syn", mem.syn, S["d"])
            assigns = ((S["c"], factor), (S["dl_ds"], ds),
                       (S["d"], mask * (S["sigma"] * S["g"] + S["c"] * S["d_next"])), (S["grad_a"], grad_a))
            # dL/dx0: pre_0 reads u_prev, s_prev of x0 (the latter through the reset, which SLAYER drops);
            # the synaptic state's gradient is the adjoint filter's state after step 0
            grads = [sp.diff(pre, S["u_prev"]).xreplace(at_start) * S["d_next"],
                     sp.diff(pre, S["s_prev"]).xreplace(at_start) * S["d_next"] if name == "backward" else zero,
                     *lam]
            scan = Scan(name, "reverse", inputs, (S["d_next"],) + lam, (zero,) * (1 + len(lam)), assigns,
                        (S["d"], S["grad_a"], S["dl_ds"]), (S["d"],) + lam_update,
                        _state_grads(state, grads, initial))
            scans.append(_with_gradients(scan, model, S, explicit, syn_filters, boundary, S["c"], raw=True))
        return Recurrence(model, "membrane", kernels, forward, scans[0], scans[1], exact, dropped, initial)

    eps = KernelRecurrence("eps", model.eps, model.eps.num, model.eps.den)
    nu = KernelRecurrence("nu", model.nu, model.nu.num, model.nu.den)
    we, z, we_update = filter_step("w_eps", model.eps, S["a"], S["z"])
    wn, r, wn_update = filter_step("w_nu", model.nu, S["s_prev"], S["r"])
    assigns = ((S["z"], z), (S["r"], r), (S["u"], S["z"] - S["r"]), (S["s"], f),
               (S["sigma"], sigma_u.subs(U, S["u"])))
    state = (S["s_prev"],) + we + wn
    x0 = _state_in(state)
    forward = Scan("forward", "forward", (S["a"],), state, x0, assigns, (S["u"], S["s"], S["sigma"]),
                   (S["s"],) + we_update + wn_update, _state_out(state))
    # u_init is an input at time -1: it enters the eps filter state, w <- update(x = u_init).
    initial = (zero,) + filter_state_after("t", model.eps, U_INIT) + (zero,) * len(wn)
    x0_s, x0_eps, x0_nu = x0[0], x0[1:1 + len(we)], x0[1 + len(we):]
    scans = []
    for name in ("backward", "slayer"):
        # the reset filter in reverse: at step n its state is lam_{n+2}; dL/dr_{n+1} = -d_{n+1}
        ln, dx_reset, ln_update = filter_adjoint("l_nu", model.nu, -S["d_next"])
        le, grad_a, le_update = filter_adjoint("l_eps", model.eps, S["d"])
        ds = S["g"] - S["q"] if name == "backward" else S["g"]
        assigns = ((S["q"], -dx_reset), (S["dl_ds"], ds), (S["d"], S["sigma"] * S["dl_ds"]), (S["grad_a"], grad_a))
        if name == "slayer":
            assigns = assigns[1:]
            ln, ln_update = (), ()
        factor = decay(model.nu) - nu.num[0] * S["sigma"] if name == "backward" else decay(model.nu)
        # dL/dx0 after step 0: s_prev is the reset filter's input at step 0, w_nu its state (both dropped
        # by SLAYER); w_eps's gradient is the adjoint filter's state
        if name == "backward":
            grads = [dx_reset, *le, *ln_update]
        else:
            grads = [zero, *le] + [zero] * len(wn)
        scan = Scan(name, "reverse", (S["g"], S["sigma"]), (S["d_next"],) + ln + le,
                    (zero,) * (1 + len(ln) + len(le)), assigns + ((S["c"], factor),),
                    (S["d"], S["grad_a"], S["dl_ds"]),
                    (S["d"],) + ln_update + le_update, _state_grads(state, grads, initial))
        # Parameter gradients: sum_n d_n [(deps/dp * a)[n] - (dnu/dp * s_prev)[n]] as correlations of the
        # adjoint with the derivative kernels (persistent reverse filters); s_prev at step 0 is x0_s_prev
        # (the correlation at n = -1, where d_raw is d_0), and the filter states of x0 enter through
        # their free responses.
        filters = [(p, model.eps, S["d"], S["a"], zero) for p in model.symbols if p in model.eps.parameters]
        filters += [(p, model.nu, S["d_raw"], -S["s"], -x0_s, S["d_raw"])
                    for p in model.symbols if p in model.nu.parameters]
        filters += [_InitialState(p, model.eps, S["d"], tuple(x0_eps))
                    for p in model.symbols if p in model.eps.parameters and len(we)]
        filters += [_InitialState(p, model.nu, S["d"], tuple(-x for x in x0_nu))
                    for p in model.symbols if p in model.nu.parameters and len(wn)]
        scan = _with_gradients(scan, model, S, {}, filters, {}, S["c"], raw=True)
        # dL/dw_eps0 over the whole sequence where u_init's state depends on a parameter: the eps filter's
        # adjoint driven by d, run persistently (truncation does not cut it); its state after step 0 is dL/dw0
        whole = [i for i in range(len(we)) if initial[1 + i].free_symbols & set(model.symbols)]
        states, updates, fins = [], [], []
        if whole:
            mu, _, before = filter_adjoint("wmu", model.eps, S["d"])
            states, updates = list(mu), list(before)
            fins = [(sp.Symbol(STATE_WHOLE + we[i].name, real=True), mu[i]) for i in whole]
        scans.append(_extend(scan, states, [zero] * len(states), [], updates, fins, states))
    return Recurrence(model, "srm", (eps, nu), forward, scans[0], scans[1], None, -S["q"], initial)


def _state_in(state) -> tuple[sp.Symbol, ...]:
    return tuple(sp.Symbol(STATE_IN + st.name, real=True) for st in state)


def _state_out(state) -> tuple[tuple[sp.Symbol, sp.Expr], ...]:
    """The forward scan's finals: its state after the last step, xT_<state> (what a next call starts from)."""
    return tuple((sp.Symbol(STATE_OUT + st.name, real=True), st) for st in state)


def _state_grads(state, grads, initial) -> tuple[tuple[sp.Symbol, sp.Expr], ...]:
    """The backward finals dL/dx0 (gx_<state>), and dL/du_init = sum_k dL/dx0_k dx0_k/du_init."""
    finals = [(sp.Symbol(STATE_GRAD + st.name, real=True), sp.sympify(g)) for st, g in zip(state, grads)]
    grad_u = sp.Add(*[sp.diff(x, U_INIT) * g for x, (_, g) in zip(initial, finals)])
    return ((sp.Symbol("grad_u_init"), grad_u),) + tuple(finals)


def initial_state(recurrence: Recurrence, values, u0, xp=np):
    """The forward state x0 that an initial membrane ``u0`` (M,) stands for: (n_state, M), from the
    derived expressions ``recurrence.initial`` (linear in u_init) at the parameter ``values``."""
    scalar = {k: v for k, v in values.items() if isinstance(v, (int, float))}
    coefs = _initial_coefficients(recurrence.initial, tuple(sorted(scalar.items(), key=lambda kv: kv[0].name)))
    varying = {k: v for k, v in values.items() if k not in scalar}  # per-neuron values (M,)
    rows = []
    for c in coefs:
        if not isinstance(c, sp.Expr):
            rows.append(u0 * u0.dtype.type(c) if c else xp.zeros_like(u0))
            continue
        syms = sorted(c.free_symbols, key=lambda x: x.name)
        missing = [x for x in syms if x not in varying]
        if missing:
            raise ValueError(f"the initial state needs the values of {missing}")
        fn = sp.lambdify(syms, c, modules="numpy")  # (NumPy's ufuncs dispatch CuPy arrays to CuPy)
        rows.append(u0 * xp.asarray(fn(*[varying[x] for x in syms]), dtype=u0.dtype))
    return xp.stack(rows) if rows else xp.zeros((0,) + u0.shape, u0.dtype)


def u_init_parameter_terms(recurrence: Recurrence, finals: Mapping[str, np.ndarray], u0, xp,
                           model: NeuronModel, per_neuron: Mapping | None = None) -> dict:
    """{parameter: sum over neurons of ``Recurrence.from_u_init``}: the part of dL/dp that flows through
    x0 when x0 stands for u0 (an SRM's eps state eps[1] u0 depends on the eps parameters), evaluated on
    the backward's per-neuron finals gw_<state>; {} when no initial state depends on a parameter.
    ``per_neuron``: {parameter: (M,) values}; the term of such a parameter is per neuron (M,), not summed."""
    per_neuron = per_neuron or {}
    # the values come from ``model``: a recurrence is shared by every model of its structure (compiled
    # caches it per structure), and its own ``model`` holds the values of whichever came first
    out = {}
    for name, fn in _u_init_functions(recurrence).items():
        M = len(u0)
        args = [finals.get(STATE_WHOLE + st.name, xp.zeros(M)) for st in recurrence.forward.state]
        term = fn(*args, u0, *[per_neuron.get(k, v) for k, v in model.params])
        term = xp.asarray(term, dtype=xp.float64)
        out[name] = xp.broadcast_to(term, (M,)).copy() if name in per_neuron else float(xp.sum(term))
    return out


@functools.lru_cache(maxsize=64)
def _u_init_functions(recurrence: Recurrence) -> dict:
    args = [sp.Symbol(STATE_WHOLE + st.name, real=True) for st in recurrence.forward.state]
    args += [U_INIT, *recurrence.model.symbols]
    return {k: sp.lambdify(args, e, modules="numpy") for k, e in recurrence.from_u_init().items()}


@functools.lru_cache(maxsize=512)
def _initial_coefficients(initial, values) -> tuple:
    """d x0 / d u_init at the scalar ``values``: floats, or expressions where a parameter is not among them
    (one given per neuron)."""
    out = []
    for e in initial:
        c = sp.diff(e, U_INIT).subs(dict(values))
        out.append(float(sp.N(c)) if not c.free_symbols else c)
    return tuple(out)


# --------------------------------------------------------------- unrolling
def unroll(scan: Scan, T: int, inputs: Mapping[sp.Symbol, list],
           truncation: int | None = None) -> tuple[dict[sp.Symbol, list], dict]:
    """Run ``scan`` symbolically (or on numbers) for T steps.

    ``inputs`` maps each input symbol to a list of T values (symbols or
    arrays). A reverse scan with ``truncation=K`` restarts its non-persistent
    state at the end of every chunk of K steps, as the generated kernels do.
    Returns ({output: values per step}, {final: value}), as unexpanded expressions (substitution
    only: expanding every step cost twice the whole proof; :func:`prove` expands each difference once).
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
            env[lhs] = rhs.xreplace(env)
        for o in scan.outputs:
            out[o][n] = env[o]
        state = {s: e.xreplace(env) for s, e in zip(scan.state, scan.update)}
    finals = {lhs: rhs.xreplace(state) for lhs, rhs in scan.finals}
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

    from ..neurons.kernels import Kernel

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


def _cut(jac, T: int, detach: bool, truncation: int | None, names: tuple[str, ...] = ()):
    """The Jacobians of what SLAYER (reset detached) or truncated BPTT differentiate (docs/MATH.md section 5):
    d phi_u/ds set to 0 (detach), and so d phi_u/d(the initial spike and reset-filter state, ``names``
    x0_s_prev, x0_w_nu*); couplings between chunks of K steps removed, in d phi/d(u, s), d phi/da and
    d phi/d(u_init, x0) (truncation). d phi/dp stays whole: parameter gradients contract the
    truncated adjoint with the full explicit partials."""
    import dataclasses

    J, Ja, Ju = jac.dependent.copy(), jac.inputs.copy(), jac.u_init.copy()
    Js = jac.state.copy() if jac.state is not None else None
    chunk = (lambda n: n // truncation) if truncation else (lambda n: 0)
    for i in range(T):
        for j in range(T):
            if detach:
                J[2 * i, 2 * j + 1] = 0
            if chunk(i) != chunk(j):
                J[2 * i, 2 * j] = J[2 * i, 2 * j + 1] = Ja[2 * i, j] = 0
        if chunk(i) != 0:
            Ju[2 * i, 0] = 0
            if Js is not None:
                Js[2 * i, :] = sp.zeros(1, Js.cols)
        if detach and Js is not None:
            for k, name in enumerate(names):
                if name == STATE_IN + "s_prev" or name.startswith(STATE_IN + "w_nu"):
                    Js[2 * i, k] = 0
    return dataclasses.replace(jac, dependent=J, inputs=Ja, u_init=Ju, state=Js)


def _differ(a, b) -> sp.Expr | None:
    """None when a = b is shown (a polynomial identity first: :mod:`.identity`; then ``expand``, the trigonometric
    polynomial and ``simplify``), else the difference a - b, expanded."""
    if identity.equal(a, b):
        return None
    diff = sp.expand(a - b)
    if diff == 0 or trig_polynomial(diff) == 0:
        return None
    return None if sp.simplify(diff) == 0 else diff


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

    m = get_method(method)
    if m.reference:
        raise ValueError(f"method={method!r}: expected 'exodus' or 'slayer' (a derived scan; 'bptt' is the oracle)")
    method = m.name
    exact = exact_model(model)
    if exact is not model:
        model, recurrence = exact, None
    rec = recurrence or derive_recurrence(model)
    detach = m.detach_reset

    def solved(state: bool):
        system = build_system(model, T, state=state)
        jac = ift.jacobians(system)
        if detach or truncation:
            jac = _cut(jac, T, detach, truncation, tuple(x.name for x in system.state))
        return system, ift.adjoint(system, jac, expand=False)  # (compared as polynomials: _differ)

    system, adj = solved(True)
    scan = (rec.slayer if m.detach_reset else rec.backward).without(DIAGNOSTIC)  # diagnostics: not a gradient
    names = {s.name: s for s in scan.inputs}
    available = {"g": system.g, "sigma": system.sigma, "s": system.s, "u": system.u, "m": system.mask, "a": system.a}
    inputs = {sym: list(available[name]) for name, sym in names.items()}
    out, finals = unroll(scan, T, inputs, truncation)
    fail = lambda detail: Proof(T, False, detail, method, truncation)  # noqa: E731
    dl_ds = next((o for o in scan.outputs if o.name == "dl_ds"), None)
    for n in range(T if dl_ds is not None else 0):
        if (diff := _differ(out[dl_ds][n], adj.lam[2 * n + 1])) is not None:
            return fail(f"dL/ds_{n}: recurrence and IFT adjoint differ by {diff}")
    grad_a = out[next(o for o in scan.outputs if o.name == "grad_a")]
    for n in range(T):
        if (diff := _differ(grad_a[n], adj.grad_a[n])) is not None:
            return fail(f"dL/da_{n}: recurrence and IFT adjoint differ by {diff}")
    by_name = {lhs.name: value for lhs, value in finals.items()}
    for st in rec.forward.state:
        if (diff := _differ(by_name[STATE_GRAD + st.name], adj.grad_state[STATE_IN + st.name])) is not None:
            return fail(f"dL/dx0_{st.name}: recurrence and IFT adjoint differ by {diff}")
    for name in model.parameter_names:
        if (diff := _differ(by_name[PARAMETER + name], adj.grad_params[name])) is not None:
            return fail(f"dL/d{name} (initial state held): the scan's sum and the IFT adjoint differ by {diff}")
    # An initial membrane u_init: the same finals at x0 = initial(u_init), against the IFT of the system
    # written with u_init (for an SRM: eps[n+1] u_init, the kernel's closed form; independent of the state)
    _, adj0 = solved(False)
    at_u = {x: v for x, v in zip(rec.state_in, rec.initial)}
    grads = {sp.Symbol(STATE_WHOLE + st.name, real=True): by_name[STATE_WHOLE + st.name]
             for st in rec.forward.state if STATE_WHOLE + st.name in by_name}
    if (diff := _differ(by_name["grad_u_init"].xreplace(at_u), adj0.grad_u_init)) is not None:
        return fail(f"dL/du_init: recurrence and IFT adjoint differ by {diff}")
    extra = rec.from_u_init()
    for name in model.parameter_names:
        got = (by_name[PARAMETER + name] + extra.get(name, 0)).xreplace(grads).xreplace(at_u)
        if (diff := _differ(got, adj0.grad_params[name])) is not None:
            return fail(f"dL/d{name}: the scan's sum and the IFT adjoint differ by {diff}")
    return Proof(T, True, f"dL/da_0..{T - 1}, dL/ds, dL/d(initial state), dL/du_init and "
                          f"dL/d({', '.join(model.parameter_names)}) equal the IFT adjoint", method, truncation)


# -------------------------------------------------------------- numerics
def evaluate(scan: Scan, model: NeuronModel, arrays: Mapping[str, np.ndarray],
             u_init: np.ndarray | None = None, x0: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Run a derived scan numerically (float64, vectorised over neurons) from its expressions.

    ``arrays`` maps input names ("a", "g", "sigma", "s", "u", "m") to (T, M)
    arrays; ``x0`` (n_state, M) is the forward state at the start (default: the state
    ``u_init`` stands for, :func:`initial_state`). Returns {output name: (T, M)} and the finals by name.
    """
    values = model.values
    first = next(iter(arrays.values()))
    T, M = first.shape
    u0 = np.zeros(M) if u_init is None else u_init
    if x0 is None:
        x0 = initial_state(derive_recurrence(model), values, np.asarray(u0, dtype=float))
    x0_syms = _state_in(derive_recurrence(model).forward.state)
    vectors = [U_INIT, *x0_syms]
    vector_values = [u0, *x0]
    args = list(scan.inputs) + list(scan.state) + vectors
    assigned = [lhs for lhs, _ in scan.assignments]
    env_syms = args + assigned
    funcs = []
    for i, (lhs, rhs) in enumerate(scan.assignments):
        funcs.append(sp.lambdify(env_syms[: len(args) + i], rhs.subs(values), modules=["numpy", "scipy"]))
    upd = sp.lambdify(env_syms, [e.subs(values) for e in scan.update], modules=["numpy", "scipy"])
    init = sp.lambdify(vectors, [sp.sympify(e).subs(values) for e in scan.init], modules="numpy")
    state = [np.broadcast_to(np.asarray(v, dtype=float), (M,)).copy() for v in init(*vector_values)]
    outs = {o.name: np.zeros((T, M)) for o in scan.outputs}
    steps = range(T) if scan.direction == "forward" else range(T - 1, -1, -1)
    for n in steps:
        env = [arrays[s.name][n] for s in scan.inputs] + state + vector_values
        for fn in funcs:
            env.append(np.broadcast_to(np.asarray(fn(*env), dtype=float), (M,)))
        named = dict(zip([s.name for s in env_syms], env))
        for o in scan.outputs:
            outs[o.name][n] = named[o.name]
        state = [np.broadcast_to(np.asarray(v, dtype=float), (M,)).copy() for v in upd(*env)]
    fin = {}
    for lhs, rhs in scan.finals:
        fn = sp.lambdify(list(scan.state) + vectors, sp.sympify(rhs).subs(values), modules="numpy")
        fin[lhs.name] = np.broadcast_to(np.asarray(fn(*state, *vector_values), dtype=float), (M,))
    outs.update(fin)
    return outs
