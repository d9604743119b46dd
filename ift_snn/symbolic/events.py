"""Continuous time, derived: u(t), the threshold condition and spike-time derivatives by the IFT.

Model (docs/MATH.md section 7, any tau != tau_s; c = tau tau_s/(tau - tau_s), c = tau at tau = 2 tau_s)::

    u(t) = c sum_i w_i [exp(-(t - t_i)/tau) - exp(-(t - t_i)/tau_s)] - dtheta exp(-(t - t_m)/tau)

with two inputs (w_1, t_1), (w_2, t_2) and one earlier own spike t_m (what
the general case needs: u is linear in every w_i and a sum of such terms).
The threshold condition ``F(t, x) = u(t) - theta = 0`` defines the spike time
t_k implicitly; the IFT gives ``dt_k/dx = -(dF/dx)/(dF/dt)``.

At tau = 2 tau_s, with z = exp(t/tau), u = tau (B/z - A/z^2) and the spike
time is the earlier root of ``c z^2 - B z + A = 0`` (c = theta/tau here, as
in docs/MATH.md section 7): ``z_k = 2A/(B + x)``, ``x = sqrt(B^2 - 4 A c)``. The
closed forms ``dt_k/dA = (tau/A)(1 + c z_k/x)``, ``dt_k/dB = -tau/x`` and
``dt_k/dt_m = dtheta z_m/(tau x)`` are proved equal to the implicit
derivative: the difference is a rational function of (A, B, c, x) whose
numerator is reduced modulo ``x^2 - (B^2 - 4 A c)`` to 0 (an exact
algebraic proof, not a numeric one), and the root itself is proved to
satisfy the quadratic the same way.

Also derived here, and printed into the generated kernels
(:mod:`ift_snn.events.kernels`): the per-event state update in the local
frame, the closed-form spike time, the critical point that brackets the
root, u and du/dt, and the reverse-scan coefficients (obtained by
differentiating u and reading off the coefficients of the two exponentials).

Cost: the derivation and proofs take well under a second (SymPy).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import sympy as sp

__all__ = ["EventsDerivation", "derive_events", "render_events_text", "kernel_expressions", "SYMBOLS"]

tau, tau_s, theta, dtheta = sp.symbols("tau tau_s theta dtheta", positive=True)
t, t1, t2, tm = sp.symbols("t t_1 t_2 t_m", real=True)
w1, w2 = sp.symbols("w_1 w_2", real=True)
A, B, cq, x, z, zm = sp.symbols("A B c x z z_m", positive=True)
# local-frame (kernel) symbols
I, V, s, dt, add, P_tau, P_s, g, udot, lam, w, total = sp.symbols("I V s dt w_add P_tau P_s g udot lam w total",
                                                                  real=True)
E_tau, E_s = sp.symbols("E_tau E_s", positive=True)

SYMBOLS = dict(tau=tau, tau_s=tau_s, theta=theta, dtheta=dtheta, t=t, t_1=t1, t_2=t2, t_m=tm, w_1=w1, w_2=w2)


def _c(tau_, tau_s_):
    return tau_ * tau_s_ / (tau_ - tau_s_)


def _K(lag, tau_=tau, tau_s_=tau_s):
    return sp.exp(-lag / tau_) - sp.exp(-lag / tau_s_)


def membrane(tau_=tau, tau_s_=tau_s):
    """u(t) for t after t_1, t_2, t_m (SymPy)."""
    c = _c(tau_, tau_s_)
    return c * (w1 * _K(t - t1, tau_, tau_s_) + w2 * _K(t - t2, tau_, tau_s_)) - dtheta * sp.exp(-(t - tm) / tau_)


def implicit_derivatives(u: sp.Expr) -> dict[str, sp.Expr]:
    """dt/dx = -(du/dx)/(du/dt) for x in w_1, t_1, t_m (t_2, w_2 are the same by symmetry)."""
    ut = sp.diff(u, t)
    return {name: -sp.diff(u, var) / ut for name, var in (("w_1", w1), ("t_1", t1), ("t_m", tm))}


@dataclass(frozen=True)
class Proof:
    claim: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class NumericCheck:
    quantity: str
    analytic: float
    finite_difference: float

    @property
    def rel_error(self) -> float:
        return abs(self.analytic - self.finite_difference) / max(abs(self.finite_difference), 1e-300)


@dataclass(frozen=True, eq=False)
class EventsDerivation:
    """Everything derived for the continuous-time LIF: equations, derivatives, proofs, numeric checks."""

    u: sp.Expr
    condition: sp.Eq
    implicit: dict
    u_closed: sp.Expr
    closed: dict
    proofs: tuple
    numeric: tuple
    kernels: dict
    values: dict = field(default_factory=dict)

    @property
    def proved(self) -> bool:
        return all(p.ok for p in self.proofs)

    @property
    def numeric_ok(self) -> bool:
        return all(n.rel_error < 1e-6 for n in self.numeric)

    @cached_property
    def fingerprint(self) -> str:
        text = sp.srepr((self.u, tuple(self.implicit.values()), tuple(self.closed.values()),
                         tuple(self.kernels.values())))
        return hashlib.sha256(text.encode()).hexdigest()


def _zero_mod_quadratic(expr: sp.Expr) -> tuple[bool, str]:
    """expr (rational in A, B, c, x) vanishes when x^2 = B^2 - 4 A c: numerator remainder is 0."""
    num, _ = sp.fraction(sp.together(sp.expand(expr)))
    rem = sp.rem(sp.expand(num), x**2 - (B**2 - 4 * A * cq), x)
    rem = sp.expand(rem)
    return rem == 0, f"remainder {sp.sstr(rem)}"


def _closed_form():
    """Closed-form spike time and derivatives at tau = 2 tau_s, and the proofs that they are right."""
    zk = 2 * A / (B + x)
    tk = tau * sp.log(zk)
    # u in the (A, B) form, as a function of t: tau (B e^{-t/tau} - A e^{-2t/tau}); condition u = theta, c = theta/tau
    u_ab = tau * (B * sp.exp(-t / tau) - A * sp.exp(-2 * t / tau))
    F = u_ab - cq * tau  # theta = c tau
    Ft, FA, FB = sp.diff(F, t), sp.diff(F, A), sp.diff(F, B)
    at_root = {sp.exp(-t / tau): 1 / zk, sp.exp(-2 * t / tau): 1 / zk**2}
    implicit_A = (-FA / Ft).subs(at_root)
    implicit_B = (-FB / Ft).subs(at_root)
    closed = {
        "z_k": zk,
        "t_k": tk,
        "dt_k/dA": tau / A * (1 + cq * zk / x),
        "dt_k/dB": -tau / x,
        # B contains -(dtheta/tau) z_m with z_m = exp(t_m/tau): dB/dt_m = -(dtheta/tau^2) z_m
        "dt_k/dt_m": dtheta * zm / (tau * x),
    }
    proofs = []
    ok, det = _zero_mod_quadratic(cq * zk**2 - B * zk + A)
    proofs.append(Proof("z_k = 2A/(B + x) solves c z^2 - B z + A = 0", ok, det))
    ok, det = _zero_mod_quadratic(closed["dt_k/dA"] - implicit_A)
    proofs.append(Proof("dt_k/dA = (tau/A)(1 + c z_k/x) equals the implicit -(dF/dA)/(dF/dt)", ok, det))
    ok, det = _zero_mod_quadratic(closed["dt_k/dB"] - implicit_B)
    proofs.append(Proof("dt_k/dB = -tau/x equals the implicit -(dF/dB)/(dF/dt)", ok, det))
    dB_dtm = sp.diff(-(dtheta / tau) * sp.exp(tm / tau), tm).subs(sp.exp(tm / tau), zm)
    ok, det = _zero_mod_quadratic(closed["dt_k/dt_m"] - implicit_B * dB_dtm)
    proofs.append(Proof("dt_k/dt_m = dtheta z_m/(tau x) equals (dt_k/dB)(dB/dt_m), the implicit derivative", ok, det))
    # the explicit derivative of the closed-form root agrees too (x depends on A and B)
    xs = sp.sqrt(B**2 - 4 * A * cq)
    for name, var in (("dt_k/dA", A), ("dt_k/dB", B)):
        direct = sp.diff(tk.subs(x, xs), var)
        diff = sp.simplify(direct - closed[name].subs(x, xs))
        proofs.append(Proof(f"{name} equals the derivative of t_k = tau ln(2A/(B + x))", diff == 0,
                            f"simplify -> {sp.sstr(diff)}"))
    # the general model at tau = 2 tau_s is the (A, B) form with c = tau
    u2 = membrane(2 * tau_s, tau_s).subs(tau_s, tau / 2)
    Av = w1 * sp.exp(t1 / (tau / 2)) + w2 * sp.exp(t2 / (tau / 2))
    Bv = w1 * sp.exp(t1 / tau) + w2 * sp.exp(t2 / tau) - (dtheta / tau) * sp.exp(tm / tau)
    diff = sp.simplify(sp.expand(u2 - tau * (Bv * sp.exp(-t / tau) - Av * sp.exp(-2 * t / tau))))
    proofs.append(Proof("at tau = 2 tau_s, u(t) = tau (B/z - A/z^2) with docs/MATH.md section 7's A and B", diff == 0,
                        f"simplify -> {sp.sstr(diff)}"))
    return closed, proofs, tau * (B / z - A / z**2)


def kernel_expressions() -> dict[str, sp.Expr]:
    """Per-event expressions of the simulation and the reverse scan, in the local frame.

    State (I, V) at the last event; s = time since then. Derived from the
    model: u_local is u with the exponentials of past events folded into I
    and V; the reverse-scan coefficients are read off du/dw, du/dt_i and
    du/dt_m as the coefficients of exp(-lag/tau) and exp(-lag/tau_s).
    """
    return dict(_kernel_expressions())


@lru_cache(maxsize=1)
def _kernel_expressions() -> dict[str, sp.Expr]:
    c = _c(tau, tau_s)
    u_local = c * (V * sp.exp(-s / tau) - I * sp.exp(-s / tau_s))
    du_local = sp.diff(u_local, s)
    # critical point: du/ds = 0 solved for s (one solution: a difference of two exponentials)
    crit = sp.solve(sp.Eq(V / tau * sp.exp(-s / tau), I / tau_s * sp.exp(-s / tau_s)), s)
    s_crit = sp.simplify(crit[0]) if crit else sp.nan
    # closed form at tau = 2 tau_s: earlier root of (theta/c) y^2 - V y + I = 0, y = exp(s/tau)
    c2 = _c(tau, tau / 2)
    k = theta / c2
    disc = V**2 - 4 * I * k
    root = sp.Symbol("sqrt_disc", nonnegative=True)
    y_minus = 2 * I / (V + root)
    s_closed = tau * sp.log(y_minus.subs(root, sp.sqrt(disc)))
    # reverse-scan coefficients from the derivatives of u at a later time (lag = t - t_1 > 0)
    u = membrane()
    sub = {sp.exp(-(t - t1) / tau): E_tau, sp.exp(-(t - t1) / tau_s): E_s, sp.exp(-(t - tm) / tau): E_tau}

    def coeffs(expr):
        expr = sp.expand(expr.subs({sp.exp((t1 - t) / tau): E_tau, sp.exp((t1 - t) / tau_s): E_s,
                                    sp.exp((tm - t) / tau): E_tau}).subs(sub))
        return sp.simplify(expr.coeff(E_tau)), sp.simplify(expr.coeff(E_s))

    dw_tau, dw_s = coeffs(sp.diff(u, w1))
    dti_tau, dti_s = coeffs(sp.diff(u, t1).subs(w1, w))
    dtm_tau, _ = coeffs(sp.diff(u, tm))
    return {
        "I_next": I * sp.exp(-dt / tau_s) + add,
        "V_next": V * sp.exp(-dt / tau) + add,
        "u_local": u_local,
        "du_local": du_local,
        "s_crit": s_crit,
        "s_closed": s_closed,
        "closed_disc": disc,
        "closed_den": V + root,
        "closed_y": y_minus,
        "V_reset": V - dtheta / c,
        "total": g - dtm_tau * P_tau,  # -(du/dt_m) coefficient: + (dtheta/tau) P_tau
        "lam": total / udot,
        "grad_w": -(dw_tau * P_tau + dw_s * P_s),
        "grad_t_in": -(dti_tau * P_tau + dti_s * P_s),
        "P_tau_decay": P_tau * sp.exp(-dt / tau),
        "P_s_decay": P_s * sp.exp(-dt / tau_s),
    }


def _numeric(values: dict) -> list[NumericCheck]:
    """Implicit derivatives of the general model and the tau = 2 tau_s closed forms vs central differences."""
    import numpy as np
    from scipy.optimize import brentq

    out = []
    for ratio in (2.0, 3.0):
        vals = dict(values, tau=ratio * values["tau_s"])
        u = membrane()
        num = {tau: vals["tau"], tau_s: vals["tau_s"], theta: vals["theta"], dtheta: vals["dtheta"],
               t1: vals["t_1"], t2: vals["t_2"], tm: vals["t_m"], w1: vals["w_1"], w2: vals["w_2"]}
        F = sp.lambdify((t, w1, t1, tm), (u - theta).subs({k: v for k, v in num.items() if k not in (w1, t1, tm)}))

        def spike(w_1, t_1, t_m):
            # earliest crossing after t_m: bracket on a fine grid up to the first sign change, then Brent
            grid = np.linspace(t_m + 1e-9, t_m + 20.0, 20001)
            f = np.array([F(q, w_1, t_1, t_m) for q in grid])
            j = int(np.argmax(f >= 0))
            return brentq(lambda q: F(q, w_1, t_1, t_m), grid[j - 1], grid[j], xtol=1e-15, rtol=1e-15)

        tk = spike(vals["w_1"], vals["t_1"], vals["t_m"])
        imp = implicit_derivatives(u)
        h = 1e-6
        for name, idx in (("w_1", 0), ("t_1", 1), ("t_m", 2)):
            analytic = float(imp[name].subs(num).subs(t, tk))
            base = [vals["w_1"], vals["t_1"], vals["t_m"]]
            plus, minus = list(base), list(base)
            plus[idx] += h
            minus[idx] -= h
            fd = (spike(*plus) - spike(*minus)) / (2 * h)
            out.append(NumericCheck(f"tau={ratio:g} tau_s: dt_k/d{name} (IFT)", analytic, fd))
        if ratio == 2.0:
            # closed forms in (A, B), evaluated at the same spike
            T = vals["tau"]
            Av = vals["w_1"] * math.exp(2 * vals["t_1"] / T) + vals["w_2"] * math.exp(2 * vals["t_2"] / T)
            zmv = math.exp(vals["t_m"] / T)

            def Bv(t_m):
                return (vals["w_1"] * math.exp(vals["t_1"] / T) + vals["w_2"] * math.exp(vals["t_2"] / T)
                        - vals["dtheta"] / T * math.exp(t_m / T))

            cv = vals["theta"] / T

            def t_closed(a, b):
                xx = math.sqrt(b * b - 4 * a * cv)
                return T * math.log(2 * a / (b + xx))

            b0 = Bv(vals["t_m"])
            xv = math.sqrt(b0 * b0 - 4 * Av * cv)
            zkv = 2 * Av / (b0 + xv)
            out.append(NumericCheck("tau=2 tau_s: closed-form t_k vs root of u = theta", T * math.log(zkv), tk))
            hA, hB = 1e-6 * Av, 1e-6 * abs(b0)
            out.append(NumericCheck("tau=2 tau_s: dt_k/dA = (tau/A)(1 + c z_k/x)", T / Av * (1 + cv * zkv / xv),
                                    (t_closed(Av + hA, b0) - t_closed(Av - hA, b0)) / (2 * hA)))
            out.append(NumericCheck("tau=2 tau_s: dt_k/dB = -tau/x", -T / xv,
                                    (t_closed(Av, b0 + hB) - t_closed(Av, b0 - hB)) / (2 * hB)))
            out.append(NumericCheck("tau=2 tau_s: dt_k/dt_m = dtheta z_m/(tau x)", vals["dtheta"] * zmv / (T * xv),
                                    (t_closed(Av, Bv(vals["t_m"] + h)) - t_closed(Av, Bv(vals["t_m"] - h))) / (2 * h)))
    return out


DEFAULT_VALUES = dict(tau_s=1.0, theta=1.0, dtheta=1.0, t_1=0.0, t_2=0.3, t_m=0.9, w_1=2.2, w_2=1.6)


def derive_events(values: dict | None = None, *, numeric: bool = True) -> EventsDerivation:
    """Derive u(t), the threshold condition and dt_k/dx by the IFT; prove the tau = 2 tau_s closed forms.

    ``values``: numbers for the numeric check (defaults: DEFAULT_VALUES, an
    own spike at t_m followed by a second crossing). Raises ValueError on a
    value that is not a finite number or a missing key.
    """
    vals = dict(DEFAULT_VALUES)
    for key, value in (values or {}).items():
        if key not in DEFAULT_VALUES:
            raise ValueError(f"values: unknown name {key!r}; expected some of {sorted(DEFAULT_VALUES)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"values[{key!r}] = {value!r}: expected a finite number")
        vals[key] = float(value)
    u = membrane()
    condition = sp.Eq(u, theta)
    implicit = implicit_derivatives(u)
    closed, proofs, u_closed = _closed_form()
    kernels = kernel_expressions()
    # the kernels' reset coefficient must be docs/MATH.md section 7's dtheta/tau
    reset_ok = sp.simplify(kernels["total"] - (g + dtheta / tau * P_tau)) == 0
    proofs.append(Proof("reverse scan: total_k = g_k + (dtheta/tau) P_tau, read off -du/dt_m", reset_ok))
    checks = _numeric(vals) if numeric else []
    return EventsDerivation(u, condition, implicit, u_closed, closed, tuple(proofs), tuple(checks), kernels, vals)


def render_events_text(d: EventsDerivation) -> str:
    """Plain-text report: equations, derivatives, proof status, numeric check against central differences."""
    out = ["continuous-time LIF (current-based, subtractive reset dtheta), docs/MATH.md section 7",
           f"fingerprint  {d.fingerprint}", "",
           "membrane potential (two inputs, one earlier own spike t_m), c = tau tau_s/(tau - tau_s):",
           f"  u(t) = {sp.sstr(d.u)}", "",
           "threshold condition (defines the spike time t_k implicitly):",
           f"  F(t_k) = u(t_k) - theta = 0", "",
           "implicit derivatives (IFT: dt_k/dx = -(dF/dx)/(dF/dt) at t = t_k):"]
    for name, expr in d.implicit.items():
        out.append(f"  dt_k/d{name} = {sp.sstr(sp.simplify(expr))}")
    out += ["", "tau = 2 tau_s: z = exp(t/tau), u = tau (B/z - A/z^2),",
            "  A = sum w_i exp(t_i/tau_s), B = sum w_i exp(t_i/tau) - (dtheta/tau) sum_k exp(t_k/tau), c = theta/tau,",
            "  x = sqrt(B^2 - 4 A c):"]
    for name, expr in d.closed.items():
        out.append(f"  {name} = {sp.sstr(expr)}")
    out += ["", "reverse scan over a neuron's own spikes (lambda_k = total_k / u'(t_k)):"]
    for name in ("total", "lam", "grad_w", "grad_t_in"):
        out.append(f"  {name} = {sp.sstr(d.kernels[name])}")
    out += ["", "per-event kernel expressions (local frame: state I, V at the last event, s since then):"]
    for name in ("I_next", "V_next", "u_local", "du_local", "s_crit", "s_closed", "V_reset"):
        out.append(f"  {name} = {sp.sstr(d.kernels[name])}")
    out += ["", "proofs (symbolic):"]
    for p in d.proofs:
        out.append(f"  [{'proved' if p.ok else 'FAILED'}] {p.claim}" + ("" if p.ok else f"  ({p.detail})"))
    if d.numeric:
        vals = ", ".join(f"{k}={v:g}" for k, v in d.values.items())
        out += ["", f"numeric check against central finite differences (h = 1e-6, float64; {vals}):",
                f"  {'quantity':<52} {'analytic':>16} {'finite diff.':>16} {'rel. error':>11}"]
        for n in d.numeric:
            out.append(f"  {n.quantity:<52} {n.analytic:>16.10g} {n.finite_difference:>16.10g} {n.rel_error:>11.2e}")
    out += ["", f"status: {'all proofs passed' if d.proved else 'PROOF FAILED'}; numeric "
            f"{'agrees (rel < 1e-6)' if d.numeric_ok else 'DISAGREES'}"]
    return "\n".join(out)
