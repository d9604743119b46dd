"""Continuous time for any neuron: the SRM of exponential-polynomial kernels, derived and proved.

Model (docs/MATH.md section 7): a neuron with input weights w_i, input spike
times t_i^j, synaptic delays d_i and own spikes t_k has the potential ::

    u(t) = sum_i w_i sum_j eps(t - t_i^j - d_i) + sum_{t_k < t} nu(t - t_k)

and spikes at every upward crossing u(t_k) = theta. ``eps`` and ``nu`` are
finite sums of terms ``c t^p exp(r t) heaviside(t - d)`` (exponential
polynomials, each term possibly delayed), given as text over the whitelist of
:mod:`ift_snn.neurons.expressions`.

What is derived here, from the kernels alone (no formula of a neuron is
written by hand):

- the **decomposition** of each kernel into delay groups, ``eps(t) = sum_g
  f_g(t - d_g) H(t - d_g)``, ``f_g(t) = sum c_{r,p} t^p e^{r t}`` (proved:
  the groups sum to the kernel beyond the last delay);
- the **local state**: u(t0 + s) = sum_m X_m s^{p_m} e^{r_m s}; the update over
  a gap dt (expanding (s + dt)^p, proved: u(s + dt; X) = u(s; advance(X)));
  an arrival adds ``w c_g`` to X, a spike adds the coefficients of nu;
- the **root bracket**: f_0 = u - theta (a sum of D terms, the threshold the
  term of rate 0) and f_{j+1} = e^{rho s} d/ds (e^{-rho s} f_j) with rho one
  rate of f_j: each level has one term fewer, so f_j has at most D - 1 - j
  zeros (Polya and Szego, Problems and Theorems in Analysis II, part V,
  problem 75: an exponential polynomial whose polynomials have degrees d_k
  has at most sum (d_k + 1) - 1 real zeros), and f_j is monotone between
  consecutive zeros of f_{j+1}. Bracketing bottom-up finds every zero of every
  level and the earliest crossing of u, none missed. The first rho is 0, so
  f_1 = du/ds (used for Newton and stored as u'(t_k));
- the **IFT adjoint**: t_k is the implicit function u(t_k; x) = theta, so
  dt_k/dx = -(du(t_k)/dx) / u'(t_k). With lambda_k = total dL/dt_k / u'(t_k) and
  total_k = dL/dt_k + sum_{n > k} lambda_n nu'(t_n - t_k) (the reset of spike
  k moves every later spike) ::

      dL/dw_i   = -sum_k lambda_k sum_j eps(t_k - a_ij)        a_ij = t_i^j + d_i
      dL/da_ij  =  w_i sum_k lambda_k eps'(t_k - a_ij)        (= dL/dt_i^j, and dL/dd_i summed over j)
      dL/dp     = -sum_k lambda_k du(t_k)/dp,  dL/dtheta = sum_k lambda_k (1 - du(t_k)/dtheta)

  proved against the chain rule of implicit differentiation for one input
  and two output spikes (every parameter, weight, input time);
- the **reverse scan**: every sum above is a readout ``sum_m c_m Q_m`` of
  states Q_m = sum_{t_k > t} lambda_k (t_k - t)^{p_m} e^{r_m (t_k - t)}, moved back
  in time by a derived update (proved like the forward one).

Cost: O(E + K) per (sample, neuron) lane for E arrivals and K spikes, plus
the bracketing, O(D^2) function evaluations per interval. The derivation takes
about a second for the built-in kernels (SymPy).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from math import comb

import sympy as sp

from ..neurons.expressions import ExpressionError, parse_expression
from ..neurons.kernels import MAX_TERMS, _expanded_size

__all__ = ["ContinuousKernelError", "Group", "ContinuousDerivation", "derive_continuous", "decompose",
           "render_continuous_text", "T", "S", "DT", "THETA", "MAX_MODES", "CONTINUOUS_MODELS"]

T = sp.Symbol("t", real=True)
S = sp.Symbol("s", real=True)
DT = sp.Symbol("dt", real=True)
THETA = sp.Symbol("theta", positive=True)
#: At most this many state terms (rate, power) per neuron: each is a state of every lane and a level of the bracket.
MAX_MODES = 8

#: Built-in continuous neurons: (eps, nu, default parameters).
CONTINUOUS_MODELS: dict[str, tuple[str, str, dict[str, float]]] = {
    # current-based LIF (exponential synapse, subtractive reset): du/dt = -u/tau + I, dI/dt = -I/tau_s
    "lif": ("tau*tau_s/(tau - tau_s)*(exp(-t/tau) - exp(-t/tau_s))", "-theta*exp(-t/tau)",
            {"tau": 2.0, "tau_s": 1.0, "theta": 1.0}),
    # alpha synapse on a LIF membrane (the limit tau_s -> tau of lif): a repeated pole
    "alpha": ("t*exp(-t/tau)/tau", "-theta*exp(-t/tau)", {"tau": 2.0, "theta": 1.0}),
    # adaptive: the reset is two exponentials, a fast membrane reset and a slow threshold rise
    "adaptive": ("tau*tau_s/(tau - tau_s)*(exp(-t/tau) - exp(-t/tau_s))",
                 "-theta*exp(-t/tau) - beta*exp(-t/tau_a)",
                 {"tau": 2.0, "tau_s": 1.0, "tau_a": 10.0, "beta": 0.3, "theta": 1.0}),
}


class ContinuousKernelError(ValueError):
    """A continuous kernel is not a finite sum of exponential-polynomial terms (the message says which term)."""


@dataclass(frozen=True)
class Group:
    """One delayed part ``f(t - delay) H(t - delay)`` of a kernel, ``f(t) = sum coef t^power e^{rate t}``."""

    delay: sp.Expr
    terms: tuple[tuple[sp.Expr, int, sp.Expr], ...]  # (rate, power, coefficient)

    def expr(self, var: sp.Symbol = T) -> sp.Expr:
        return sum((c * var**p * sp.exp(r * var) for r, p, c in self.terms), sp.Integer(0))


def _linear(expr: sp.Expr, var: sp.Symbol) -> tuple[sp.Expr, sp.Expr] | None:
    """(slope, constant) of an expression linear in var, else None."""
    expr = sp.expand(expr)
    if not expr.is_polynomial(var):
        return None
    poly = sp.Poly(expr, var)
    if poly.degree() > 1:
        return None
    return poly.coeff_monomial(var), poly.coeff_monomial(1)


def _same(a: sp.Expr, b: sp.Expr) -> bool:
    return a == b or sp.simplify(a - b) == 0


def _term(term: sp.Expr, var: sp.Symbol, what: str) -> tuple[sp.Expr, int, sp.Expr, sp.Expr]:
    """(delay, power, rate, coefficient) of one term c var^p e^{r var} H(var - d)."""
    rate, power, coef, delay = sp.Integer(0), 0, sp.Integer(1), None
    for factor in sp.Mul.make_args(term):
        if not factor.has(var):
            coef *= factor
            continue
        if isinstance(factor, sp.Heaviside):
            lin = _linear(factor.args[0], var)
            if lin is None or not (lin[0].is_number and lin[0] > 0) or delay is not None:
                raise ContinuousKernelError(f"{what}: factor {factor} must be one heaviside(t - d) per term, d >= 0")
            delay = sp.simplify(-lin[1] / lin[0])
            continue
        if isinstance(factor, sp.exp):
            lin = _linear(factor.args[0], var)
            if lin is None:
                raise ContinuousKernelError(f"{what}: factor {factor} has an exponent that is not linear in t; "
                                            "expected a finite sum of terms c t^p exp(-t/tau)")
            rate += lin[0]
            coef *= sp.exp(lin[1])
            continue
        base, exponent = factor.as_base_exp()
        if base == var and exponent.is_Integer and exponent >= 0:
            power += int(exponent)
            continue
        if not base.has(var):
            lin = _linear(exponent, var)
            if lin is not None:
                rate += lin[0] * sp.log(base)
                coef *= base ** lin[1]
                continue
        if isinstance(factor, (sp.sin, sp.cos)):
            raise ContinuousKernelError(f"{what}: factor {factor} oscillates; continuous kernels here are sums of "
                                        "c t^p exp(-t/tau) with real rates (the root bracket needs real exponents)")
        raise ContinuousKernelError(f"{what}: factor {factor} is not t^p, exp(linear in t) or heaviside(t - d); "
                                    "expected a finite sum of terms c t^p exp(-t/tau)")
    if rate.has(sp.I) or (rate.is_real is False):
        raise ContinuousKernelError(f"{what}: term {term} has the complex rate {rate}; expected real rates")
    return (sp.Integer(0) if delay is None else delay), power, sp.simplify(rate), coef


def _products(expr: sp.Expr, var: sp.Symbol) -> list[sp.Expr]:
    """expr as a list of products (whose sum it is), distributing only over the factors that hold ``var``:
    the parameters' own fractions, e.g. tau tau_s/(tau - tau_s), stay as they are."""
    if not expr.has(var):
        return [expr]
    if expr.is_Add:
        return [p for a in expr.args for p in _products(a, var)]
    if expr.is_Mul:
        out = [sp.Integer(1)]
        for a in expr.args:
            out = [x * y for x in out for y in _products(a, var)]
        return out
    if expr.is_Pow and expr.exp.is_Integer and expr.exp > 0 and expr.base.is_Add:
        out = [sp.Integer(1)]
        for _ in range(int(expr.exp)):
            out = [x * y for x in out for y in _products(expr.base, var)]
        return out
    return [expr]


def _flat(expr: sp.Expr, var: sp.Symbol) -> list[sp.Expr]:
    """The terms of expr, exp(a + b) split into exp(a) exp(b) (power_exp), nothing else expanded."""
    return [sp.expand(p, power_exp=True, mul=False, multinomial=False, log=False, basic=False)
            for p in _products(expr, var) if p != 0]


def decompose(expr: sp.Expr, var: sp.Symbol = T, what: str = "kernel") -> tuple[Group, ...]:
    """The delay groups of an exponential polynomial in ``var`` (see :class:`Group`), terms merged by (rate, power).

    Raises ContinuousKernelError naming the first factor that is not t^p, exp(a t + b), b^(a t) or
    heaviside(t - d). Cost: one SymPy expansion.
    """
    size = _expanded_size(sp.sympify(expr))
    if size > MAX_TERMS:
        raise ContinuousKernelError(f"{what} would expand to about {size:.3g} terms; at most {MAX_TERMS} are accepted")
    groups: list[tuple[sp.Expr, dict[tuple[int, int], sp.Expr], list[sp.Expr]]] = []
    rates: list[sp.Expr] = []
    for term in _flat(sp.sympify(expr), var):
        delay, power, rate, coef = _term(term, var, what)
        for i, known in enumerate(rates):
            if _same(rate, known):
                ri = i
                break
        else:
            rates.append(rate)
            ri = len(rates) - 1
        for d, terms, _ in groups:
            if _same(d, delay):
                break
        else:
            groups.append((delay, {}, []))
            d, terms, _ = groups[-1]
        # c (tau + d)^p e^{r (tau + d)}: the term in the group's own clock tau = t - d
        for q in range(power + 1):
            piece = coef * comb(power, q) * delay ** (power - q) * sp.exp(rate * delay)
            terms[(ri, q)] = terms.get((ri, q), sp.Integer(0)) + piece
    out = []
    for delay, terms, _ in groups:
        kept = tuple((rates[ri], q, sp.simplify(c)) for (ri, q), c in sorted(terms.items()))
        kept = tuple(t for t in kept if t[2] != 0)
        if kept:
            out.append(Group(delay, kept))
    return tuple(out)


@dataclass(frozen=True)
class Proof:
    claim: str
    ok: bool


def _poly_in(expr: sp.Expr, var: sp.Symbol, rates: list[sp.Expr], max_power: dict[int, int],
             what: str) -> dict[tuple[int, int], sp.Expr]:
    """Coefficients {(rate index, power): c} of an expression sum c var^p e^{rate var} over known rates."""
    out: dict[tuple[int, int], sp.Expr] = {}
    for term in _flat(sp.sympify(expr), var):
        delay, power, rate, coef = _term(term, var, what)
        for i, known in enumerate(rates):
            if _same(rate, known):
                key = (i, power)
                break
        else:  # pragma: no cover - the bases are built to contain every rate
            raise AssertionError(f"{what}: rate {rate} not in the basis")
        out[key] = out.get(key, sp.Integer(0)) + coef
    return {k: c for k, c in out.items() if sp.expand(c) != 0}


@dataclass(frozen=True)
class ContinuousDerivation:
    """Everything the continuous kernels run, derived from ``eps`` and ``nu`` (module docstring)."""

    eps_text: str
    nu_text: str
    eps: sp.Expr
    nu: sp.Expr
    params: tuple[sp.Symbol, ...]  # the kernels' parameters, theta last

    # ------------------------------------------------------------------ decomposition
    @cached_property
    def groups(self) -> tuple[Group, ...]:
        groups = decompose(self.eps, T, "eps")
        if not groups:
            raise ContinuousKernelError("eps is 0: expected a post-synaptic potential kernel")
        return groups

    @cached_property
    def nu_terms(self) -> Group:
        groups = decompose(self.nu, T, "nu")
        if len(groups) != 1 or groups[0].delay != 0:
            raise ContinuousKernelError(f"nu = {self.nu}: expected a reset kernel without delays "
                                        "(a sum of c t^p exp(-t/tau) acting from the spike on)")
        return groups[0]

    @cached_property
    def rates(self) -> tuple[sp.Expr, ...]:
        """The distinct rates r of the forward state, threshold's rate 0 first."""
        out: list[sp.Expr] = [sp.Integer(0)]
        for g in (*self.groups, self.nu_terms):
            for r, _, _ in g.terms:
                if not any(_same(r, k) for k in out):
                    out.append(r)
        return tuple(out)

    def _rate_index(self, r: sp.Expr, rates: tuple[sp.Expr, ...] | None = None) -> int:
        rates = self.rates if rates is None else rates
        return next(i for i, k in enumerate(rates) if _same(r, k))

    @cached_property
    def modes(self) -> tuple[tuple[int, int], ...]:
        """Forward state (rate index, power): every power up to the largest of each kernel rate."""
        top: dict[int, int] = {}
        for g in (*self.groups, self.nu_terms):
            for r, p, _ in g.terms:
                i = self._rate_index(r)
                top[i] = max(top.get(i, -1), p)
        modes = tuple((i, p) for i in sorted(top) for p in range(top[i] + 1))
        if len(modes) > MAX_MODES:
            raise ContinuousKernelError(f"eps and nu need {len(modes)} state terms; at most {MAX_MODES} are accepted")
        return modes

    @cached_property
    def X(self) -> tuple[sp.Symbol, ...]:
        return tuple(sp.Symbol(f"x{m}", real=True) for m in range(len(self.modes)))

    def _vector(self, group: Group) -> tuple[sp.Expr, ...]:
        coef = {(self._rate_index(r), p): c for r, p, c in group.terms}
        return tuple(coef.get(m, sp.Integer(0)) for m in self.modes)

    @cached_property
    def arrival(self) -> tuple[tuple[sp.Expr, ...], ...]:
        """Per delay group, what an arrival of weight 1 adds to X."""
        return tuple(self._vector(g) for g in self.groups)

    @cached_property
    def reset(self) -> tuple[sp.Expr, ...]:
        """What a spike adds to X (the coefficients of nu)."""
        return self._vector(self.nu_terms)

    def u_local(self, var: sp.Symbol = S, X=None) -> sp.Expr:
        X = self.X if X is None else X
        return sum((x * var**p * sp.exp(self.rates[i] * var) for x, (i, p) in zip(X, self.modes)), sp.Integer(0))

    @cached_property
    def advance(self) -> tuple[sp.Expr, ...]:
        """X after a gap dt: the coefficients of u_local(s + dt) in s (expanded, not written by hand)."""
        shifted = sp.expand(self.u_local(S + DT), power_exp=True, mul=True)
        coef = _poly_in(shifted, S, list(self.rates), {}, "advance")
        return tuple(sp.factor_terms(sp.expand(coef.get(m, sp.Integer(0)))) for m in self.modes)

    # ------------------------------------------------------------------ the root bracket
    @cached_property
    def terms(self) -> tuple[tuple[int, int], ...]:
        """The terms (rate index, power) of f_0 = u - theta: the modes and the threshold's (0, 0)."""
        return self.modes if (0, 0) in self.modes else ((0, 0), *self.modes)

    @cached_property
    def levels(self) -> tuple[tuple[sp.Expr, ...], ...]:
        """Coefficients over :attr:`terms` of f_0 = u - theta, f_1 = du/ds, ..., each with one term fewer."""
        f = self.u_local() - THETA
        out = []
        order = list(range(len(self.rates)))  # eliminate rate 0 first: f_1 = du/ds
        for _ in range(len(self.terms)):
            coef = _poly_in(f, S, list(self.rates), {}, "level")
            row = tuple(coef.get(k, sp.Integer(0)) for k in self.terms)
            out.append(row)
            present = [i for i in order if any(k[0] == i and c != 0 for k, c in zip(self.terms, row))]
            if not present:
                break
            rho = self.rates[present[0]]
            f = sp.expand(sp.exp(rho * S) * sp.diff(sp.exp(-rho * S) * f, S), power_exp=True)
        return tuple(out)

    # ------------------------------------------------------------------ the backward
    @cached_property
    def readout_functions(self) -> dict[str, sp.Expr]:
        """The functions of the lag L (as ``t``) the reverse scan reads at arrivals and spikes."""
        out: dict[str, sp.Expr] = {}
        for g, group in enumerate(self.groups):
            f = group.expr(T)
            out[f"eps{g}"] = f
            out[f"deps{g}"] = sp.diff(f, T)
            for p in self.params:
                dp = sp.diff(f, p) - sp.diff(group.delay, p) * sp.diff(f, T)
                out[f"eps{g}_{p.name}"] = dp
        nu = self.nu_terms.expr(T)
        out["dnu"] = sp.diff(nu, T)
        for p in self.params:
            out[f"nu_{p.name}"] = sp.diff(nu, p)
        return out

    @cached_property
    def back_rates(self) -> tuple[sp.Expr, ...]:
        out: list[sp.Expr] = []
        for f in self.readout_functions.values():
            for term in _flat(f, T):
                rate = _term(term, T, "readout")[2]
                if not any(_same(rate, k) for k in out):
                    out.append(rate)
        return tuple(out)

    @cached_property
    def readouts(self) -> dict[str, dict[tuple[int, int], sp.Expr]]:
        return {k: _poly_in(f, T, list(self.back_rates), {}, k) for k, f in self.readout_functions.items()}

    @cached_property
    def back_modes(self) -> tuple[tuple[int, int], ...]:
        top = {i: 0 for i in range(len(self.back_rates))}  # power 0 of every rate: where a spike adds lambda
        for coef in self.readouts.values():
            for i, p in coef:
                top[i] = max(top[i], p)
        return tuple((i, p) for i in sorted(top) for p in range(top[i] + 1))

    @cached_property
    def Q(self) -> tuple[sp.Symbol, ...]:
        return tuple(sp.Symbol(f"q{m}", real=True) for m in range(len(self.back_modes)))

    def readout_vector(self, name: str) -> tuple[sp.Expr, ...]:
        coef = self.readouts[name]
        return tuple(coef.get(m, sp.Integer(0)) for m in self.back_modes)

    @cached_property
    def back_advance(self) -> tuple[sp.Expr, ...]:
        """Q moved back by dt: the basis L^p e^{r L} at L + dt, re-expanded over the basis at L."""
        L = T
        new = []
        for i, p in self.back_modes:
            r = self.back_rates[i]
            shifted = sp.expand((L + DT) ** p * sp.exp(r * DT))
            row = sp.Integer(0)
            for (j, q), qsym in zip(self.back_modes, self.Q):
                if j == i and q <= p:
                    row += sp.expand(shifted).coeff(L, q) * qsym
            new.append(sp.factor_terms(row))
        return tuple(new)

    # ------------------------------------------------------------------ proofs
    @cached_property
    def proofs(self) -> tuple[Proof, ...]:
        out = []
        # 1. the groups sum to eps beyond the last delay
        beyond = self.eps.replace(sp.Heaviside, lambda *a: sp.Integer(1))
        total = sum((g.expr(T - g.delay) for g in self.groups), sp.Integer(0))
        out.append(Proof("eps = sum_g f_g(t - d_g) beyond the last delay",
                         sp.simplify(sp.expand(total - beyond, power_exp=True)) == 0))
        out.append(Proof("nu = its exponential-polynomial terms",
                         sp.simplify(sp.expand(self.nu_terms.expr(T) - self.nu, power_exp=True)) == 0))
        # 2. the state update: u(s + dt; X) = u(s; advance(X))
        lhs = self.u_local(S + DT)
        rhs = self.u_local(S, self.advance)
        out.append(Proof("u_local(s + dt; X) = u_local(s; advance(X, dt))",
                         sp.simplify(sp.expand(lhs - rhs, power_exp=True)) == 0))
        # 3. the levels: one term fewer each; f_1 = du/ds
        counts = [sum(1 for c in row if c != 0) for row in self.levels]
        full = len(self.terms)
        out.append(Proof(f"f_j has at most {full} - j terms (so at most {full} - 1 - j zeros) for every level j",
                         all(c <= full - j for j, c in enumerate(counts))))
        f0 = sum((c * S**p * sp.exp(self.rates[i] * S) for c, (i, p) in zip(self.levels[0], self.terms)),
                 sp.Integer(0))
        f1 = sum((c * S**p * sp.exp(self.rates[i] * S) for c, (i, p) in zip(self.levels[1], self.terms)),
                 sp.Integer(0)) if len(self.levels) > 1 else sp.Integer(0)
        out.append(Proof("f_0 = u_local - theta and f_1 = du_local/ds",
                         sp.simplify(sp.expand(f0 - self.u_local() + THETA, power_exp=True)) == 0
                         and sp.simplify(sp.expand(f1 - sp.diff(self.u_local(), S), power_exp=True)) == 0))
        # 4. the reverse update: a readout at L + dt from Q equals the readout at L from back_advance(Q)
        ok = True
        for name in self.readouts:
            vec = self.readout_vector(name)
            basis_at = lambda lag: [lag**p * sp.exp(self.back_rates[i] * lag) for i, p in self.back_modes]  # noqa: E731
            # one spike lambda = 1 at lag L from the earlier frame: Q = basis(L + dt); after advance: Q' s.t.
            # readout(Q') = f(L + dt) for Q = basis(L)
            Qv = dict(zip(self.Q, basis_at(T)))
            moved = [e.subs(Qv) for e in self.back_advance]
            lhs = sum((c * q for c, q in zip(vec, moved)), sp.Integer(0))
            rhs = self.readout_functions[name].subs(T, T + DT)
            ok &= sp.simplify(sp.expand(lhs - rhs, power_exp=True)) == 0
        out.append(Proof("sum_m c_m Q_m moved back by dt = the readout f(L + dt), every readout", bool(ok)))
        # 5. the IFT adjoint against implicit differentiation: one input (w, a), spikes t1 < t2
        out.append(Proof("adjoint = chain rule of implicit differentiation (weight, input time, every parameter)",
                         self._adjoint_proof()))
        return tuple(out)

    def _adjoint_proof(self) -> bool:
        """Two parts. (a) The chain rule of implicit differentiation through u(t_1) = u(t_2) = theta (one input
        (w, a), the reset of t_1 acting on t_2) equals the adjoint for every variable, with eps and nu
        abstract functions of (lag, parameters). (b) The readouts are the derivatives that adjoint needs, of the
        concrete kernels: sum_g eps_g = eps, deps = d eps/d lag, eps_p = d eps/dp, dnu = d nu/d lag,
        nu_p = d nu/dp (beyond the last delay)."""
        w, a, t1, t2, g1, g2 = sp.symbols("w a t_1 t_2 g_1 g_2", real=True)
        P = self.params
        E, N = sp.Function("eps"), sp.Function("nu")
        u1 = w * E(t1 - a, *P)
        u2 = w * E(t2 - a, *P) + N(t2 - t1, *P)
        F1, F2 = u1 - THETA, u2 - THETA

        ok = True
        lam2 = g2 / sp.diff(u2, t2)
        lam1 = (g1 - lam2 * sp.diff(N(t2 - t1, *P), t1)) / sp.diff(u1, t1)  # + lambda_2 nu'(t2 - t1)
        for x in (w, a, *P):
            dt1 = -sp.diff(F1, x) / sp.diff(F1, t1)
            dt2 = -(sp.diff(F2, x) + sp.diff(F2, t1) * dt1) / sp.diff(F2, t2)
            chain = g1 * dt1 + g2 * dt2
            adj = -(lam1 * sp.diff(u1, x) + lam2 * sp.diff(u2, x)) + ((lam1 + lam2) if x == THETA else 0)
            ok &= sp.simplify(sp.together(chain - adj)) == 0
        # (b) the readouts the kernels use are those derivatives of the concrete kernels
        R = self.readout_functions
        eps = sum((g.expr(T - g.delay) for g in self.groups), sp.Integer(0))
        nu = self.nu_terms.expr(T)
        ours = {"eps": R_sum(R, "eps", T, self.groups), "deps": R_sum(R, "deps", T, self.groups), "dnu": R["dnu"]}
        want = {"eps": eps, "deps": sp.diff(eps, T), "dnu": sp.diff(nu, T)}
        for p in P:
            ours[p.name] = R_sum(R, "eps", T, self.groups, p.name)
            want[p.name] = sp.diff(eps, p)
            ours["nu_" + p.name] = R[f"nu_{p.name}"]
            want["nu_" + p.name] = sp.diff(nu, p)
        for k in ours:
            ok &= sp.simplify(sp.expand(ours[k] - want[k], power_exp=True)) == 0
        return bool(ok)

    # ------------------------------------------------------------------ identity
    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(f"{sp.srepr(self.eps)}|{sp.srepr(self.nu)}".encode()).hexdigest()[:8]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.proofs)


def R_sum(R: dict[str, sp.Expr], kind: str, lag: sp.Expr, groups, param: str | None = None) -> sp.Expr:
    """Sum over the delay groups of readout ``kind`` (eps or deps, or eps_<param>) at ``lag`` (beyond the delays)."""
    total = sp.Integer(0)
    for g, group in enumerate(groups):
        name = f"{kind}{g}" if param is None else f"{kind}{g}_{param}"
        total += R[name].subs(T, lag - group.delay)
    return total


def derive_continuous(eps: str, nu: str, params: dict[str, float] | tuple[str, ...]) -> ContinuousDerivation:
    """Parse ``eps`` and ``nu`` (text in ``t``, the parameter names and ``theta``) and derive the model.

    ``params``: the parameter names (or {name: value}); ``theta`` is always one. Raises ExpressionError
    (a ValueError) for text outside the whitelist and ContinuousKernelError for a kernel that is not a finite
    sum of exponential-polynomial terms, before any derivation.
    """
    names = [n for n in params if n != "theta"]
    for n in names:
        if not (isinstance(n, str) and n.isidentifier() and n.isascii()) or n in ("t", "exp", "pi", "E"):
            raise ExpressionError(f"parameter name {n!r}: expected an identifier other than t, exp, pi and E")
    symbols = {n: sp.Symbol(n, positive=True) for n in sorted(names)}
    symbols["theta"] = THETA
    symbols["t"] = T
    # decimal numbers as exact rationals: the rates' arithmetic of the levels (r - rho + rho) stays exact
    e = _exact(parse_expression(eps, symbols, what="eps"))
    v = _exact(parse_expression(nu, symbols, what="nu"))
    used = (e.free_symbols | v.free_symbols) - {T}
    params = tuple(sorted((s for s in used if s != THETA), key=lambda s: s.name)) + (THETA,)
    derivation = ContinuousDerivation(eps, nu, e, v, params)
    derivation.modes  # noqa: B018 - decomposes both kernels now: bad kernels fail here, before any work
    return derivation


def _exact(expr: sp.Expr) -> sp.Expr:
    return expr.xreplace({f: sp.Rational(str(f)) for f in expr.atoms(sp.Float)})


def render_continuous_text(d: ContinuousDerivation) -> str:
    """The derivation as text (what ``ift-snn derive --continuous`` prints)."""
    lines = [f"continuous SRM  eps(t) = {d.eps}", f"                nu(t)  = {d.nu}", ""]
    for g, group in enumerate(d.groups):
        lines.append(f"eps group {g}: delay {group.delay}, f(t) = {group.expr(T)}")
    lines.append(f"reset nu: {d.nu_terms.expr(T)}")
    lines.append("")
    lines.append("local state  u(t0 + s) = " + " + ".join(
        f"x{m} s^{p} exp({d.rates[i]} s)" for m, (i, p) in enumerate(d.modes)))
    for m, e in enumerate(d.advance):
        lines.append(f"  advance  x{m} <- {e}")
    for g, vec in enumerate(d.arrival):
        lines.append(f"  arrival (group {g}, weight w): x += w * ({', '.join(map(str, vec))})")
    lines.append(f"  spike: x += ({', '.join(map(str, d.reset))})")
    lines.append("")
    lines.append(f"root bracket: f_0 = u - theta has {len(d.terms)} terms, so at most {len(d.terms) - 1} crossings "
                 "per interval; levels (coefficients over " + ", ".join(
                     f"s^{p} e^({d.rates[i]} s)" for i, p in d.terms) + "):")
    for j, row in enumerate(d.levels):
        lines.append(f"  f_{j}: ({', '.join(map(str, row))})")
    lines.append("")
    lines.append("implicit function: dt_k/dx = -(du(t_k)/dx) / u'(t_k); reverse-scan readouts:")
    for name, f in d.readout_functions.items():
        lines.append(f"  {name}(L) = {sp.simplify(f)}")
    lines.append("")
    for p in d.proofs:
        lines.append(f"[{'proved' if p.ok else 'FAILED'}] {p.claim}")
    lines.append("")
    lines.append("all proofs passed" if d.ok else "SOME PROOFS FAILED")
    return "\n".join(lines)
