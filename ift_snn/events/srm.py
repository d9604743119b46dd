"""Continuous time for any neuron: generated event kernels for the SRM of :mod:`ift_snn.symbolic.continuous`.

A layer of ``M`` neurons, ``C`` input channels, weights ``w`` (C, M),
synaptic delays ``d`` (C, M, >= 0) and axonal delays ``d_ax`` (M,, >= 0)::

    u_m(t) = sum_i w_im sum_j eps(t - t_i^j - d_im) + sum_{t_k < t} nu(t - t_k),   spikes at u_m(t_k) = theta
    output times t_k + d_ax_m

Forward, per (sample, neuron) lane: the lane's arrivals t_i^j + d_im (+ the
kernel's own delays) in time order; between two arrivals the potential is
the exponential polynomial u(t0 + s) = sum_m X_m s^p_m e^{r_m s}, and every
crossing in the interval is found by the bracket of the derivation (the
zeros of each level f_j isolated between those of f_{j+1}; at most D - 1 - j
of them, D the number of terms of u - theta; none missed), refined by
Newton's method kept inside its bracket. Backward: the reverse scan of the
derivation's readouts (docs/MATH.md section 7): dL/dw, dL/d(input times),
dL/dd (synaptic and axonal) and dL/dp for every kernel parameter and theta.

Every expression of the kernels (the state update, an arrival, the reset,
the levels, the reverse update and the readouts) is printed from the
derivation; the control flow (walk the arrivals, bracket, Newton inside the
bracket, the reverse walk) is the template below. The same source runs under
``numba.njit`` (``backend="numba"``, lanes in parallel) or as plain Python
(``backend="python"``, for small checks). Names: ``ift_snn_srm_<sha8>`` of the
source text; :func:`srm_source` returns it.

Cost: O((E + K) D + crossings D^2 log(1/eps)) per lane for E arrivals and K
spikes; independent of the length of the time axis (no grid).
Preconditions (checked before any work, :meth:`EventSRM.check`): the kernel's
rates are <= 0 (nothing grows), eps is continuous at each of its delays (a
jump would make a spike time a non-differentiable function of the inputs),
nu(0) < 0 (a spike lowers u), delays >= 0.
"""

from __future__ import annotations

import hashlib
import linecache
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
import sympy as sp

from ..codegen.printers import NumbaPrinter
from ..symbolic.continuous import CONTINUOUS_MODELS, ContinuousDerivation, T, derive_continuous
from .kernels import _stream  # the sample's input spikes merged in time order: (t, channel, flat, count)
from .model import SpikeTrain, check_weights

__all__ = ["EventSRM", "SRMTrace", "SRMGradients", "simulate_srm", "backward_srm", "srm_source", "RUNAWAY"]

#: More crossings than this between two arrivals marks a lane as runaway (an error naming the weights).
RUNAWAY = 100_000


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}={value!r}: expected a real number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: expected a finite number")
    return value


@lru_cache(maxsize=32)
def _derive(eps: str, nu: str, names: tuple[str, ...]) -> ContinuousDerivation:
    return derive_continuous(eps, nu, names)


@dataclass(frozen=True)
class EventSRM:
    """A continuous-time neuron of any exponential-polynomial kernels ``eps`` (PSP) and ``nu`` (reset).

    ``params``: a value for every parameter the kernels name, and ``theta``
    (the threshold). ``max_spikes``: spikes recorded per neuron; later
    crossings are simulated and counted in ``dropped``, never silently lost.
    Built-ins: :meth:`named` (``lif``, ``alpha``, ``adaptive``).
    """

    eps: str
    nu: str
    params: Mapping[str, float]
    max_spikes: int = 8
    backend: str = "numba"
    _values: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.params, Mapping):
            raise TypeError(f"params is a {type(self.params).__name__}; expected a mapping name -> value")
        if isinstance(self.max_spikes, bool) or not isinstance(self.max_spikes, (int, np.integer)) \
                or self.max_spikes < 1:
            raise ValueError(f"max_spikes={self.max_spikes!r}: expected an int >= 1")
        if self.backend not in ("numba", "python"):
            raise ValueError(f"backend={self.backend!r}: expected 'numba' or 'python'")
        d = self.derivation
        names = [p.name for p in d.params]
        missing = [n for n in names if n not in self.params]
        if missing:
            raise ValueError(f"no value for parameter(s) {', '.join(missing)} of eps = {self.eps!r}, "
                             f"nu = {self.nu!r}: expected params with {', '.join(names)}")
        extra = sorted(set(self.params) - set(names))
        if extra:
            raise ValueError(f"params {', '.join(extra)} appear in neither eps nor nu (expected {', '.join(names)})")
        values = tuple(_number(n, self.params[n]) for n in names)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "max_spikes", int(self.max_spikes))
        self.check()

    @classmethod
    def named(cls, name: str, *, max_spikes: int = 8, backend: str = "numba", **params: float) -> EventSRM:
        """A built-in neuron (``lif``, ``alpha``, ``adaptive``) with its default parameters, any overridden."""
        if name not in CONTINUOUS_MODELS:
            raise ValueError(f"model {name!r}: expected one of {', '.join(CONTINUOUS_MODELS)}")
        eps, nu, defaults = CONTINUOUS_MODELS[name]
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ValueError(f"{name} has no parameter(s) {', '.join(unknown)}; expected {', '.join(defaults)}")
        return cls(eps, nu, {**defaults, **params}, max_spikes=max_spikes, backend=backend)

    @property
    def derivation(self) -> ContinuousDerivation:
        return _derive(self.eps, self.nu, tuple(sorted(self.params)))

    @property
    def values(self) -> np.ndarray:
        """The parameter values in the derivation's order (``derivation.params``, theta last)."""
        return np.array(self._values, dtype=np.float64)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.derivation.params)

    def with_(self, **changes) -> EventSRM:
        params = dict(self.params)
        for k in list(changes):
            if k in params:
                params[k] = changes.pop(k)
        kw = dict(eps=self.eps, nu=self.nu, params=params, max_spikes=self.max_spikes, backend=self.backend)
        kw.update(changes)
        return EventSRM(**kw)

    def _subs(self) -> dict[sp.Symbol, float]:
        return dict(zip(self.derivation.params, self._values))

    def check(self) -> None:
        """The preconditions of the module docstring at these parameter values (a ValueError naming the value)."""
        d, values = self.derivation, self._subs()
        where = f"eps = {self.eps!r}, nu = {self.nu!r} at {dict(zip(self.names, self._values))}"
        for r in d.rates + d.back_rates:
            v = float(r.subs(values))
            if not math.isfinite(v) or v > 0:
                raise ValueError(f"the kernel rate {r} = {v!r} at {where}: expected a finite rate <= 0 "
                                 "(a term exp(r t) with r > 0 grows without bound)")
        for g, group in enumerate(d.groups):
            delay = float(group.delay.subs(values))
            if not (math.isfinite(delay) and delay >= 0):
                raise ValueError(f"eps's delay {group.delay} = {delay!r} at {where}: expected a finite delay >= 0")
            coefs = [complex(c.subs(values)) for _, _, c in group.terms]
            if not all(math.isfinite(abs(c)) for c in coefs):
                raise ValueError(f"eps's coefficients {[str(c) for _, _, c in group.terms]} are not finite at {where} "
                                 "(a division by zero, e.g. tau = tau_s)")
            jump = float(group.expr(T).subs(T, 0).subs(values))
            if abs(jump) > 1e-12 * max(1.0, max(abs(c) for c in coefs)):
                raise ValueError(f"eps jumps by {jump!r} at t = {group.delay} ({where}): expected a continuous "
                                 "potential (eps(0) = 0 at each delay, e.g. a synaptic current "
                                 "exp(-t/tau) - exp(-t/tau_s)); a jump makes spike times non-differentiable")
        nu0 = float(d.nu_terms.expr(T).subs(T, 0).subs(values))
        if not (math.isfinite(nu0) and nu0 < 0):
            raise ValueError(f"nu(0) = {nu0!r} at {where}: expected nu(0) < 0 (a spike must lower u below theta)")

    @cached_property
    def kernels(self):
        """The compiled (forward, backward) functions and the index tables of the readouts."""
        return _kernels(self.derivation, self.backend)


# --------------------------------------------------------------------------- generated source
_NAME = "__KERNEL_NAME__"

_TEMPLATE = '''
@jit
def __N_lev(C, j, s, R, TR, TP):
    f = 0.0
    for k in range(C.shape[1]):
        c = C[j, k]
        if c != 0.0:
            term = c*math.exp(R[TR[k]]*s)
            pw = TP[k]
            for _ in range(pw):
                term *= s
            f += term
    return f


@jit
def __N_limsign(C, j, R, TR, TP):
    # sign of f_j(s) as s -> inf: the terms of the largest rate, then of the largest power, decide
    best_r = -math.inf
    best_p = -1
    acc = 0.0
    for k in range(C.shape[1]):
        c = C[j, k]
        if c != 0.0:
            r = R[TR[k]]
            if r > best_r or (r == best_r and TP[k] > best_p):
                best_r = r
                best_p = TP[k]
                acc = c
            elif r == best_r and TP[k] == best_p:
                acc += c
    return 1.0 if acc > 0.0 else (-1.0 if acc < 0.0 else 0.0)


@jit
def __N_solve(C, j, a, b, fa, fb, R, TR, TP, ELIM):
    # the zero of f_j in (a, b], f_j(a) and f_j(b) of opposite signs or f_j(b) = 0; f_j monotone there.
    # Newton with f_j' = f_{j+1} + rho_j f_j, kept inside the bracket, else bisection.
    if fb == 0.0:
        return b
    lo = a
    hi = b
    neg_lo = fa < 0.0
    x = 0.5*(lo + hi)
    for _ in range(200):
        f = __N_lev(C, j, x, R, TR, TP)
        if f == 0.0:
            return x
        if (f < 0.0) == neg_lo:
            lo = x
        else:
            hi = x
        nxt = 0.5*(lo + hi)
        d = __N_lev(C, j + 1, x, R, TR, TP) + R[ELIM[j]]*f
        if d != 0.0:
            newton = x - f/d
            if newton > lo and newton < hi:
                nxt = newton
        if abs(nxt - x) <= 4e-16*abs(x) or hi - lo <= 4e-16*abs(hi):
            return nxt
        x = nxt
    return x


@jit
def __N_zeros(C, L, jlow, R, TR, TP, ELIM, roots, found):
    # the zeros of the levels bottom up (each level's between those of the level above, none missed), down to
    # level jlow: for jlow = 0 the earliest s in (0, L] with u(t0 + s) >= theta (f_0(0) < 0) or -1.0; for
    # jlow >= 1 the number of zeros of f_jlow in (0, L], left in roots
    NL = C.shape[0]
    nr = 0
    for j in range(NL - 2, jlow - 1, -1):
        nn = 0
        a = 0.0
        fa = __N_lev(C, j, 0.0, R, TR, TP)
        for q in range(nr + 1):
            b = roots[q] if q < nr else L
            if b <= a:
                continue
            root = -1.0
            if b == math.inf:
                sb = __N_limsign(C, j, R, TR, TP)
                if fa != 0.0 and sb != 0.0 and (sb > 0.0) != (fa > 0.0):
                    h = max(1.0, a)
                    bb = a + h
                    fb = __N_lev(C, j, bb, R, TR, TP)
                    for _ in range(2100):
                        if fb == 0.0 or (fb > 0.0) != (fa > 0.0):
                            break
                        h *= 2.0
                        bb = a + h
                        fb = __N_lev(C, j, bb, R, TR, TP)
                    if bb < math.inf and (fb == 0.0 or (fb > 0.0) != (fa > 0.0)):
                        root = __N_solve(C, j, a, bb, fa, fb, R, TR, TP, ELIM)
                fb = sb
            else:
                fb = __N_lev(C, j, b, R, TR, TP)
                if fa != 0.0 and (fb == 0.0 or (fb > 0.0) != (fa > 0.0)):
                    root = __N_solve(C, j, a, b, fa, fb, R, TR, TP, ELIM)
            if root >= 0.0:
                if j == 0:
                    return root
                found[nn] = root
                nn += 1
            a = b
            fa = fb
        for q in range(nn):
            roots[q] = found[q]
        nr = nn
    return -1.0 if jlow == 0 else float(nr)


@jit
def __N_crossing(C, L, R, TR, TP, ELIM, roots, found):
    return __N_zeros(C, L, 0, R, TR, TP, ELIM, roots, found)


@jit
def __N_peaks(R, MR, MQ):
    # max over s >= 0 of s^q e^{r s} per state term: 1 for q = 0, (q/|r|)^q e^{-q} for r < 0, inf for r = 0 < q
    PK = np.empty(MR.shape[0])
    for m in range(MR.shape[0]):
        r = R[MR[m]]
        q = MQ[m]
        if q == 0:
            PK[m] = 1.0
        elif r < 0.0:
            PK[m] = (q/(-r))**q*math.exp(-q)
        else:
            PK[m] = math.inf
    return PK


@jit
def __N_horizon(X, R, MR, MQ, theta):
    # an s beyond which u(t0 + s) < theta for sure: past s0 = max q/|r| every term s^q e^{r s} decreases, so
    # sum_m |X_m| s^q e^{r s} < theta at some s >= s0 bounds u from there on (inf with a term of rate 0)
    s0 = 0.0
    for m in range(X.shape[0]):
        if X[m] != 0.0:
            r = R[MR[m]]
            if r >= 0.0:
                return math.inf
            s0 = max(s0, MQ[m]/(-r))
    s = max(s0, 1.0)
    for _ in range(64):
        bound = 0.0
        for m in range(X.shape[0]):
            if X[m] != 0.0:
                term = abs(X[m])*math.exp(R[MR[m]]*s)
                for _ in range(MQ[m]):
                    term *= s
                bound += term
        if bound < theta:
            return s
        s *= 2.0
    return math.inf


@jit
def __N_below(X, PK, theta):
    # u(t0 + s) <= sum_m |X_m| max_s s^q e^{r s} < theta for every s >= 0: no crossing, skip the bracket
    bound = 0.0
    for m in range(X.shape[0]):
        if X[m] != 0.0:
            bound += abs(X[m])*PK[m]
    return bound < theta


@jit
def __N_scratch():
    # a lane's state and the bracket's work arrays
    return np.zeros(__N_NX), np.zeros((__N_NL, __N_NT)), np.zeros(__N_NT), np.zeros(__N_NT)


@jit
def __N_arrivals(t_in, ch_in, n, b, m, dsyn, gd, G, sort):
    E = n*G
    at = np.empty(E)
    for e in range(n):
        for g in range(G):
            at[e*G + g] = t_in[b, e] + dsyn[ch_in[b, e], m] + gd[g]
    if sort:
        order = np.argsort(at, kind="mergesort")
    else:
        order = np.arange(E)
    return at, order


@jit(parallel=True)
def __N_forward(t_in, ch_in, n_in, w, dsyn, p, sort, out_t, out_udot, out_int, out_cnt, out_drop, TR, TP, ELIM,
                MR, MQ):
    B = t_in.shape[0]
    M = w.shape[1]
    S = out_t.shape[2]
    G = __N_G
    R = np.empty(__N_NR)
    __N_rates(p, R)
    PK = __N_peaks(R, MR, MQ)
    theta = p[p.shape[0] - 1]
    gd = np.empty(G)
    __N_gdelays(p, gd)
    for lane in prange(B*M):
        b = lane // M
        m = lane - b*M
        at, order = __N_arrivals(t_in, ch_in, n_in[b], b, m, dsyn, gd, G, sort)
        E = at.shape[0]
        X, C, roots, found = __N_scratch()
        t0 = 0.0
        cnt = 0
        drop = 0
        for k in range(E + 1):
            t1 = at[order[k]] if k < E else math.inf
            n_here = 0
            while True:
                if __N_below(X, PK, theta):
                    break
                __N_levels(X, p, C)
                # no crossing beyond the horizon: the bracket's work does not grow with the gap
                s = __N_crossing(C, min(t1 - t0, __N_horizon(X, R, MR, MQ, theta)), R, TR, TP, ELIM, roots, found)
                if s < 0.0:
                    break
                n_here += 1
                if n_here > __N_RUNAWAY:
                    drop = -1
                    break
                if cnt < S:
                    out_t[b, m, cnt] = t0 + s
                    out_udot[b, m, cnt] = __N_lev(C, 1, s, R, TR, TP)
                    out_int[b, m, cnt] = k
                    cnt += 1
                else:
                    drop += 1
                __N_advance(X, s, p)
                __N_reset(X, p)
                t0 = t0 + s
            if drop < 0:
                break
            if k < E:
                idx = order[k]
                e = idx // G
                __N_advance(X, t1 - t0, p)
                t0 = t1
                __N_arrive(X, idx - e*G, w[ch_in[b, e], m], p)
        out_cnt[b, m] = cnt
        out_drop[b, m] = drop


@jit(parallel=True)
def __N_backward(t_in, ch_in, n_in, w, dsyn, p, sort, times, udot, interval, count, gk,
                 dW, dD, d_in, dP, SPIKE, I_EPS, I_DEPS, I_EPS_P, I_DNU, I_NU_P):
    B = t_in.shape[0]
    M = w.shape[1]
    G = __N_G
    NP = p.shape[0]
    gd = np.empty(G)
    __N_gdelays(p, gd)
    for b in prange(B):
        for m in range(M):
            at, order = __N_arrivals(t_in, ch_in, n_in[b], b, m, dsyn, gd, G, sort)
            E = at.shape[0]
            Q = np.zeros(__N_NQ)
            RO = np.zeros(__N_NO)
            tq = 0.0
            have = False
            k = count[b, m] - 1
            for e in range(E, -1, -1):
                while k >= 0 and interval[b, m, k] == e:
                    tk = times[b, m, k]
                    if have:
                        __N_badvance(Q, tq - tk, p)
                    tq = tk
                    have = True
                    __N_readouts(Q, p, RO)
                    lam = (gk[b, m, k] + RO[I_DNU])/udot[b, m, k]
                    for i in range(NP):
                        dP[b, i] -= RO[I_NU_P[i]]
                    dP[b, NP - 1] += lam
                    for i in range(SPIKE.shape[0]):
                        Q[SPIKE[i]] += lam
                    k -= 1
                if e == 0:
                    break
                if not have:
                    continue
                idx = order[e - 1]
                ev = idx // G
                g = idx - ev*G
                a = at[idx]
                c = ch_in[b, ev]
                __N_badvance(Q, tq - a, p)
                tq = a
                __N_readouts(Q, p, RO)
                wi = w[c, m]
                dW[b, c, m] -= RO[I_EPS[g]]
                gt = wi*RO[I_DEPS[g]]
                d_in[b, ev] += gt
                dD[b, c, m] += gt
                for i in range(NP):
                    dP[b, i] -= wi*RO[I_EPS_P[g, i]]


@jit(parallel=True)
def __N_umax(t_in, ch_in, n_in, w, dsyn, p, sort, t_end, out_u, out_t, out_int, out_kink, out_slope, TR, TP, ELIM):
    # a non-spiking readout: max of u(t) = sum_i w_i sum_j eps(t - a_ij) over [0, t_end], at an interval's end
    # or at a zero of f_1 = du/ds inside it (the bracket's level 1)
    B = t_in.shape[0]
    M = w.shape[1]
    G = __N_G
    NP = p.shape[0]
    theta = p[NP - 1]
    R = np.empty(__N_NR)
    __N_rates(p, R)
    gd = np.empty(G)
    __N_gdelays(p, gd)
    for lane in prange(B*M):
        b = lane // M
        m = lane - b*M
        at, order = __N_arrivals(t_in, ch_in, n_in[b], b, m, dsyn, gd, G, sort)
        E = at.shape[0]
        X, C, roots, found = __N_scratch()
        t0 = 0.0
        best = 0.0
        bt = 0.0
        bk = 0
        kink = -1
        slope = 0.0
        for k in range(E + 1):
            t1 = t_end
            if k < E and at[order[k]] < t_end:
                t1 = at[order[k]]
            if t1 > t0:
                __N_levels(X, p, C)
                nc = int(__N_zeros(C, t1 - t0, 1, R, TR, TP, ELIM, roots, found))
                for q in range(nc):
                    u = __N_lev(C, 0, roots[q], R, TR, TP) + theta
                    if u > best:
                        best = u
                        bt = t0 + roots[q]
                        bk = k
                        kink = -1
                u = __N_lev(C, 0, t1 - t0, R, TR, TP) + theta
                if u > best:
                    best = u
                    bt = t1
                    bk = k
                    # a max at an arrival (a kink: u' jumps there) moves with that arrival: du_max/da = u'(a-)
                    kink = order[k] if (k < E and t1 < t_end) else -1
                    slope = __N_lev(C, 1, t1 - t0, R, TR, TP)
            if k == E or at[order[k]] >= t_end:
                break
            idx = order[k]
            e = idx // G
            __N_advance(X, t1 - t0, p)
            t0 = t1
            __N_arrive(X, idx - e*G, w[ch_in[b, e], m], p)
        out_u[b, m] = best
        out_t[b, m] = bt
        out_int[b, m] = bk
        out_kink[b, m] = kink
        out_slope[b, m] = slope if kink >= 0 else 0.0


@jit
def __N_hpush(ht, hq, hp, hn, m, t, q, pay):
    # binary min-heap of neuron m's pending recurrent arrivals, key (time, insertion number)
    i = hn[m]
    hn[m] = i + 1
    while i > 0:
        par = (i - 1) // 2
        if ht[m, par] < t or (ht[m, par] == t and hq[m, par] < q):
            break
        ht[m, i] = ht[m, par]
        hq[m, i] = hq[m, par]
        hp[m, i] = hp[m, par]
        i = par
    ht[m, i] = t
    hq[m, i] = q
    hp[m, i] = pay


@jit
def __N_hpop(ht, hq, hp, hn, m):
    pay = hp[m, 0]
    n = hn[m] - 1
    hn[m] = n
    t = ht[m, n]
    q = hq[m, n]
    pl = hp[m, n]
    i = 0
    while True:
        c = 2*i + 1
        if c >= n:
            break
        if c + 1 < n and (ht[m, c + 1] < ht[m, c] or (ht[m, c + 1] == ht[m, c] and hq[m, c + 1] < hq[m, c])):
            c += 1
        if t < ht[m, c] or (t == ht[m, c] and q < hq[m, c]):
            break
        ht[m, i] = ht[m, c]
        hq[m, i] = hq[m, c]
        hp[m, i] = hp[m, c]
        i = c
    ht[m, i] = t
    hq[m, i] = q
    hp[m, i] = pl
    return pay


@jit
def __N_ext(t_in, ch_in, n, b, M, dsyn, gd, G, sort):
    E = n*G
    ext_t = np.empty((M, E + 1))
    ext_o = np.zeros((M, E + 1), np.int64)
    for m in range(M):
        at, order = __N_arrivals(t_in, ch_in, n, b, m, dsyn, gd, G, sort)
        for q in range(E):
            ext_o[m, q] = order[q]
            ext_t[m, q] = at[order[q]]
        ext_t[m, E] = math.inf
    return ext_t, ext_o


@jit(parallel=True)
def __N_rforward(t_in, ch_in, n_in, w, dsyn, V, dr, p, sort, out_t, out_udot, out_int, out_cnt, out_drop,
                 sp_t, sp_n, sp_slot, sp_tot, TR, TP, ELIM, MR, MQ):
    # a recurrent layer: the neurons of a sample are coupled (a spike of j arrives at m after dr[j, m] > 0),
    # so a sample runs event by event in time order: the earliest of every neuron's next arrival and next crossing
    B = t_in.shape[0]
    M = w.shape[1]
    S = out_t.shape[2]
    G = __N_G
    R = np.empty(__N_NR)
    __N_rates(p, R)
    gd = np.empty(G)
    __N_gdelays(p, gd)
    PK = __N_peaks(R, MR, MQ)
    theta = p[p.shape[0] - 1]
    for b in prange(B):
        n = n_in[b]
        E = n*G
        ext_t, ext_o = __N_ext(t_in, ch_in, n, b, M, dsyn, gd, G, sort)
        ep = np.zeros(M, np.int64)
        capR = M*S*G + 1
        ht = np.empty((M, capR))
        hq = np.zeros((M, capR), np.int64)
        hp = np.zeros((M, capR), np.int64)
        hn = np.zeros(M, np.int64)
        X = np.zeros((M, __N_NX))
        t0 = np.zeros(M)
        cnt = np.zeros(M, np.int64)
        narr = np.zeros(M, np.int64)
        cand = np.full(M, math.inf)
        cand_s = np.zeros(M)
        valid = np.zeros(M, np.bool_)
        C = np.zeros((__N_NL, __N_NT))
        roots = np.zeros(__N_NT)
        found = np.zeros(__N_NT)
        K = 0
        seq = 0
        capped = np.zeros(M, np.bool_)
        while True:
            best = math.inf
            bm = -1
            spike = False
            for m in range(M):
                a = ext_t[m, ep[m]]
                if hn[m] > 0 and ht[m, 0] < a:
                    a = ht[m, 0]
                if not valid[m] and not capped[m]:
                    s = -1.0
                    if not __N_below(X[m], PK, theta):
                        __N_levels(X[m], p, C)
                        s = __N_crossing(C, min(a - t0[m], __N_horizon(X[m], R, MR, MQ, theta)), R, TR, TP, ELIM,
                                         roots, found)
                    cand[m] = t0[m] + s if s >= 0.0 else math.inf
                    cand_s[m] = s
                    valid[m] = True
                # a crossing was searched in (t0, a]: when there is one it comes first (at a: before the arrival)
                ev = cand[m] if cand[m] < math.inf else a
                if ev < best:
                    best = ev
                    bm = m
                    spike = cand[m] < math.inf
            if bm < 0:
                break
            m = bm
            if spike:
                if cnt[m] >= S:
                    # the cap: the neuron is silent for the rest of the sample (no spike, no reset, no arrivals)
                    capped[m] = True
                    cand[m] = math.inf
                    continue
                s = cand_s[m]
                __N_levels(X[m], p, C)
                out_t[b, m, cnt[m]] = t0[m] + s
                out_udot[b, m, cnt[m]] = __N_lev(C, 1, s, R, TR, TP)
                out_int[b, m, cnt[m]] = narr[m]
                sp_t[b, K] = t0[m] + s
                sp_n[b, K] = m
                sp_slot[b, K] = cnt[m]
                cnt[m] += 1
                __N_advance(X[m], s, p)
                __N_reset(X[m], p)
                t0[m] = t0[m] + s
                valid[m] = False
                for m2 in range(M):
                    for g in range(G):
                        __N_hpush(ht, hq, hp, hn, m2, (t0[m] + dr[m, m2]) + gd[g], seq, K*G + g)
                        seq += 1
                K += 1
            else:
                if ext_t[m, ep[m]] <= best:
                    idx = ext_o[m, ep[m]]
                    ep[m] += 1
                    e = idx // G
                    __N_advance(X[m], best - t0[m], p)
                    __N_arrive(X[m], idx - e*G, w[ch_in[b, e], m], p)
                else:
                    pay = __N_hpop(ht, hq, hp, hn, m)
                    k = pay // G
                    __N_advance(X[m], best - t0[m], p)
                    __N_arrive(X[m], pay - k*G, V[sp_n[b, k], m], p)
                t0[m] = best
                narr[m] += 1
                valid[m] = False
        for m in range(M):
            out_cnt[b, m] = cnt[m]
            out_drop[b, m] = 1 if capped[m] else 0
        sp_tot[b] = K


@jit
def __N_rarrive_back(b, m, q, arr_t, arr_c, Q, tq, have, p, RO, ch_in, w, V, sp_n, G, dW, dD, dV, dR, d_in, dP,
                     pend, I_EPS, I_DEPS, I_EPS_P):
    if not have[m]:
        return
    a = arr_t[m, q]
    __N_badvance(Q[m], tq[m] - a, p)
    tq[m] = a
    __N_readouts(Q[m], p, RO)
    code = arr_c[m, q]
    NP = p.shape[0]
    if code >= 0:
        ev = code // G
        g = code - ev*G
        c = ch_in[b, ev]
        wi = w[c, m]
        dW[b, c, m] -= RO[I_EPS[g]]
        gt = wi*RO[I_DEPS[g]]
        d_in[b, ev] += gt
        dD[b, c, m] += gt
    else:
        pay = -code - 1
        k = pay // G
        g = pay - k*G
        j = sp_n[b, k]
        wi = V[j, m]
        dV[b, j, m] -= RO[I_EPS[g]]
        gt = wi*RO[I_DEPS[g]]
        pend[k] += gt
        dR[b, j, m] += gt
    for i in range(NP):
        dP[b, i] -= wi*RO[I_EPS_P[g, i]]


@jit(parallel=True)
def __N_rbackward(t_in, ch_in, n_in, w, dsyn, V, dr, p, sort, udot, interval, sp_t, sp_n, sp_slot, sp_tot, gk,
                  dW, dD, dV, dR, d_in, dP, SPIKE, I_EPS, I_DEPS, I_EPS_P, I_DNU, I_NU_P):
    B = t_in.shape[0]
    M = w.shape[1]
    G = __N_G
    NP = p.shape[0]
    gd = np.empty(G)
    __N_gdelays(p, gd)
    for b in prange(B):
        n = n_in[b]
        E = n*G
        K = sp_tot[b]
        ext_t, ext_o = __N_ext(t_in, ch_in, n, b, M, dsyn, gd, G, sort)
        # each neuron's arrivals in the forward's order: external and recurrent merged by time, external first on
        # ties, recurrent by (time, spike, group) as the forward's heap popped them
        A = E + K*G
        arr_t = np.empty((M, A + 1))
        arr_c = np.zeros((M, A + 1), np.int64)
        rt = np.empty(K*G)
        for m in range(M):
            for k in range(K):
                for g in range(G):
                    rt[k*G + g] = (sp_t[b, k] + dr[sp_n[b, k], m]) + gd[g]
            ro = np.argsort(rt, kind="mergesort")
            i = 0
            r = 0
            for q in range(A):
                if i < E and (r >= K*G or ext_t[m, i] <= rt[ro[r]]):
                    arr_t[m, q] = ext_t[m, i]
                    arr_c[m, q] = ext_o[m, i]
                    i += 1
                else:
                    arr_t[m, q] = rt[ro[r]]
                    arr_c[m, q] = -1 - ro[r]
                    r += 1
        ptr = np.full(M, A, np.int64)
        Q = np.zeros((M, __N_NQ))
        RO = np.zeros(__N_NO)
        tq = np.zeros(M)
        have = np.zeros(M, np.bool_)
        pend = np.zeros(K + 1)
        for kk in range(K - 1, -1, -1):
            j = sp_n[b, kk]
            slot = sp_slot[b, kk]
            tk = sp_t[b, kk]
            for m in range(M):
                while ptr[m] > 0:
                    q = ptr[m] - 1
                    if m == j:
                        if q < interval[b, j, slot]:
                            break
                    elif arr_t[m, q] <= tk:
                        break
                    __N_rarrive_back(b, m, q, arr_t, arr_c, Q, tq, have, p, RO, ch_in, w, V, sp_n, G, dW, dD, dV,
                                     dR, d_in, dP, pend, I_EPS, I_DEPS, I_EPS_P)
                    ptr[m] -= 1
            if have[j]:
                __N_badvance(Q[j], tq[j] - tk, p)
            tq[j] = tk
            have[j] = True
            __N_readouts(Q[j], p, RO)
            lam = (gk[b, j, slot] + pend[kk] + RO[I_DNU])/udot[b, j, slot]
            for i in range(NP):
                dP[b, i] -= RO[I_NU_P[i]]
            dP[b, NP - 1] += lam
            for i in range(SPIKE.shape[0]):
                Q[j, SPIKE[i]] += lam
        for m in range(M):
            while ptr[m] > 0:
                q = ptr[m] - 1
                __N_rarrive_back(b, m, q, arr_t, arr_c, Q, tq, have, p, RO, ch_in, w, V, sp_n, G, dW, dD, dV, dR,
                                 d_in, dP, pend, I_EPS, I_DEPS, I_EPS_P)
                ptr[m] -= 1
'''


def _printer_subs(d: ContinuousDerivation) -> dict[sp.Symbol, sp.Symbol]:
    """Parameters as p[i], states as X[m] / Q[m]: no user text reaches the source (names are indices)."""
    subs: dict[sp.Symbol, sp.Symbol] = {s: sp.Symbol(f"p[{i}]") for i, s in enumerate(d.params)}
    subs.update({x: sp.Symbol(f"X[{m}]") for m, x in enumerate(d.X)})
    subs.update({q: sp.Symbol(f"Q[{m}]") for m, q in enumerate(d.Q)})
    return subs


def _fn(name: str, args: str, body: list[str]) -> list[str]:
    return ["", "", "@jit", f"def __N_{name}({args}):", *(f"    {line}" for line in (body or ["pass"]))]


@lru_cache(maxsize=32)
def _source(d: ContinuousDerivation) -> tuple[str, str]:
    """(name, source text) of the kernels of derivation ``d``."""
    P = NumbaPrinter("f64")
    subs = _printer_subs(d)

    def pr(e: sp.Expr) -> str:
        return P.doprint(sp.sympify(e).xreplace(subs))

    lines = [f"# Generated by ift_snn.events.srm from ift_snn.symbolic.continuous. Do not edit.",
             f"# kernel: {_NAME}", f"#   eps(t) = {sp.sstr(d.eps)}", f"#   nu(t)  = {sp.sstr(d.nu)}",
             f"#   parameters p = ({', '.join(p.name for p in d.params)})",
             "#   state u(t0 + s) = " + " + ".join(f"X[{m}] s^{q} exp(({sp.sstr(d.rates[i])}) s)"
                                               for m, (i, q) in enumerate(d.modes)),
             "import math", "import numpy as np"]
    lines += _fn("rates", "p, R", [f"R[{i}] = {pr(r)}" for i, r in enumerate(d.rates)])
    lines += _fn("gdelays", "p, gd", [f"gd[{g}] = {pr(grp.delay)}" for g, grp in enumerate(d.groups)])
    body = [f"x{m} = {pr(e)}" for m, e in enumerate(d.advance)] + [f"X[{m}] = x{m}" for m in range(len(d.X))]
    lines += _fn("advance", "X, dt, p", body)
    body = []
    for g, vec in enumerate(d.arrival):
        body.append(f"{'if' if g == 0 else 'elif'} g == {g}:")
        body += [f"    X[{m}] += w*({pr(c)})" for m, c in enumerate(vec) if c != 0] or ["    pass"]
    lines += _fn("arrive", "X, g, w, p", body)
    lines += _fn("reset", "X, p", [f"X[{m}] += {pr(c)}" for m, c in enumerate(d.reset) if c != 0])
    body = [f"C[{j}, {k}] = {pr(c)}" for j, row in enumerate(d.levels) for k, c in enumerate(row)]
    lines += _fn("levels", "X, p, C", body)
    body = [f"q{m} = {pr(e)}" for m, e in enumerate(d.back_advance)] + [f"Q[{m}] = q{m}" for m in range(len(d.Q))]
    lines += _fn("badvance", "Q, dt, p", body)
    body = []
    for o, name in enumerate(d.readouts):
        terms = [f"({pr(c)})*Q[{m}]" for m, c in enumerate(d.readout_vector(name)) if c != 0]
        body.append(f"RO[{o}] = {' + '.join(terms) if terms else '0.0'}")
    lines += _fn("readouts", "Q, p, RO", body)
    text = "\n".join(lines) + "\n" + _TEMPLATE
    consts = {"G": len(d.groups), "NR": len(d.rates), "NX": len(d.modes), "NL": len(d.levels), "NT": len(d.terms),
              "NQ": len(d.back_modes), "NO": len(d.readouts), "RUNAWAY": RUNAWAY}
    for k, v in consts.items():
        text = text.replace(f"__N_{k}", str(v))
    text = text.replace("__N_", _NAME + "_")
    name = "ift_snn_srm_" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return name, text.replace(_NAME, name)


def srm_source(model: EventSRM | ContinuousDerivation) -> str:
    """The generated kernel source (Python for ``numba.njit``) of a model or derivation."""
    d = model.derivation if isinstance(model, EventSRM) else model
    return _source(d)[1]


@dataclass(frozen=True)
class _Kernels:
    forward: object
    backward: object
    rforward: object
    rbackward: object
    umax: object
    tables: dict


@lru_cache(maxsize=32)
def _kernels(d: ContinuousDerivation, backend: str) -> _Kernels:
    name, code = _source(d)
    filename = f"<ift_snn generated {name}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    namespace: dict = {}
    if backend == "numba":
        import numba

        def jit(fn=None, parallel=False):
            deco = numba.njit(parallel=parallel, fastmath=False, cache=False, nogil=True)
            return deco(fn) if fn is not None else deco

        namespace.update(jit=jit, prange=numba.prange)
    else:
        def jit(fn=None, parallel=False):
            return fn if fn is not None else (lambda f: f)

        namespace.update(jit=jit, prange=range)
    exec(compile(code, filename, "exec"), namespace)  # noqa: S102 - printed from SymPy; names are indices
    names = list(d.readouts)
    NP = len(d.params)
    tables = dict(
        TR=np.array([i for i, _ in d.terms], np.int64),
        TP=np.array([q for _, q in d.terms], np.int64),
        ELIM=np.array(_eliminated(d), np.int64),
        MR=np.array([i for i, _ in d.modes], np.int64),
        MQ=np.array([q for _, q in d.modes], np.int64),
        SPIKE=np.array([m for m, (_, q) in enumerate(d.back_modes) if q == 0], np.int64),
        I_EPS=np.array([names.index(f"eps{g}") for g in range(len(d.groups))], np.int64),
        I_DEPS=np.array([names.index(f"deps{g}") for g in range(len(d.groups))], np.int64),
        I_EPS_P=np.array([[names.index(f"eps{g}_{p.name}") for p in d.params] for g in range(len(d.groups))],
                         np.int64).reshape(len(d.groups), NP),
        I_DNU=names.index("dnu"),
        I_NU_P=np.array([names.index(f"nu_{p.name}") for p in d.params], np.int64),
    )
    return _Kernels(namespace[name + "_forward"], namespace[name + "_backward"], namespace[name + "_rforward"],
                    namespace[name + "_rbackward"], namespace[name + "_umax"], tables)


def _eliminated(d: ContinuousDerivation) -> list[int]:
    """Per level j, the rate index rho_j with f_{j+1} = e^{rho s} (e^{-rho s} f_j)' (as in ``d.levels``)."""
    out = []
    for row in d.levels:
        present = [i for i in range(len(d.rates)) if any(k[0] == i and c != 0 for k, c in zip(d.terms, row))]
        out.append(present[0] if present else 0)
    return out


# --------------------------------------------------------------------------- the API
@dataclass(frozen=True)
class SRMTrace:
    """What the backward pass needs: the output spikes (with ``out.dropped``), u'(t_k), the arrival interval of
    each spike, and the inputs, weights and delays of the layer."""

    model: EventSRM
    w: np.ndarray
    delays: np.ndarray
    axonal: np.ndarray
    inputs: SpikeTrain
    out: SpikeTrain
    udot: np.ndarray
    interval: np.ndarray
    stream: tuple
    recurrent: np.ndarray | None = None
    recurrent_delays: np.ndarray | None = None
    spikes: tuple | None = None  # recurrent: (times, neuron, slot, count) of every spike of a sample in time order


@dataclass(frozen=True)
class SRMGradients:
    """dL/dW (C, M), dL/d(input times) (B, C, S_in; 0 on padding), dL/d(synaptic delays) (C, M),
    dL/d(axonal delays) (M,), dL/dp {name: value} for every kernel parameter and theta; for a recurrent layer
    also dL/dV and dL/d(recurrent delays) (M, M), else None."""

    w: np.ndarray
    inputs: np.ndarray
    delays: np.ndarray
    axonal: np.ndarray
    params: dict
    recurrent: np.ndarray | None = None
    recurrent_delays: np.ndarray | None = None


def _delays(value, shape, name: str) -> np.ndarray:
    if value is None:
        return np.zeros(shape)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} is a {type(value).__name__}; expected a numpy array of shape {shape}")
    if value.shape != shape:
        raise ValueError(f"{name} has shape {value.shape}; expected {shape}")
    v = np.asarray(value, dtype=np.float64)
    bad = ~(np.isfinite(v) & (v >= 0))
    if bad.any():
        i = tuple(int(k) for k in np.argwhere(bad)[0])
        raise ValueError(f"{name}{list(i)} = {float(v[i])!r}: expected a finite delay >= 0")
    return v


def _recurrent(V, dr, M: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(V, np.ndarray):
        raise TypeError(f"recurrent is a {type(V).__name__}; expected a numpy array of shape ({M}, {M})")
    if V.shape != (M, M):
        raise ValueError(f"recurrent has shape {V.shape}; expected ({M}, {M}) (from neuron j to neuron m)")
    V = check_weights(V, M, "recurrent")
    if dr is None:
        raise ValueError("a recurrent layer needs recurrent_delays (M, M), every entry > 0: a spike cannot act on "
                         "its own layer at the instant it is emitted")
    dr = _delays(dr, (M, M), "recurrent_delays")
    if (dr <= 0).any():
        i = tuple(int(k) for k in np.argwhere(dr <= 0)[0])
        raise ValueError(f"recurrent_delays{list(i)} = {float(dr[i])!r}: expected a delay > 0")
    return np.ascontiguousarray(V), np.ascontiguousarray(dr)


def simulate_srm(model: EventSRM, w: np.ndarray, inputs: SpikeTrain, *, delays: np.ndarray | None = None,
                 axonal: np.ndarray | None = None, recurrent: np.ndarray | None = None,
                 recurrent_delays: np.ndarray | None = None) -> SRMTrace:
    """Output spikes of a dense layer of ``model`` neurons (module docstring); exact, no time grid.

    ``w`` (C, M); ``delays`` (C, M) synaptic, ``axonal`` (M,), both >= 0 (default 0). Spikes beyond
    ``model.max_spikes`` are counted in ``out.dropped`` and a warning says how many. Cost O(B M (E + K)).

    Recurrent layer: ``recurrent`` V (M, M) and ``recurrent_delays`` (M, M, every entry > 0): a spike of
    neuron j at t arrives at neuron m (j included) at t + recurrent_delays[j, m] with weight V[j, m] through
    eps, like an input. The neurons of a sample are then coupled and run event by event in time order
    (O(M) per event). Every spike feeds the layer, so none can be dropped silently: a neuron that reaches
    ``max_spikes`` is silenced for the rest of its sample (no further spike, reset or arrival; ``out.dropped``
    is 1 for it and a warning counts them), and the gradient is exact for that capped network. The axonal
    delays shift the reported times only.
    """
    if not isinstance(model, EventSRM):
        raise TypeError(f"model is a {type(model).__name__}; expected ift_snn.events.EventSRM")
    if not isinstance(inputs, SpikeTrain):
        raise TypeError(f"inputs is a {type(inputs).__name__}; expected ift_snn.events.SpikeTrain")
    B, C, _ = inputs.shape
    w = np.ascontiguousarray(check_weights(w, C))
    M = w.shape[1]
    dsyn = np.ascontiguousarray(_delays(delays, (C, M), "delays"))
    dax = _delays(axonal, (M,), "axonal")
    kern, tab = model.kernels, model.kernels.tables
    stream = _stream(inputs)
    t_ev, ch, _, n = stream
    sort = bool(np.any(dsyn != 0) or len(model.derivation.groups) > 1)
    S = model.max_spikes
    times = np.full((B, M, S), np.inf)
    udot = np.zeros((B, M, S))
    interval = np.full((B, M, S), -1, np.int64)
    count = np.zeros((B, M), np.int64)
    dropped = np.zeros((B, M), np.int64)
    if recurrent is not None or recurrent_delays is not None:
        V, dr = _recurrent(recurrent, recurrent_delays, M)
        sp = (np.full((B, M * S), np.inf), np.zeros((B, M * S), np.int64), np.zeros((B, M * S), np.int64),
              np.zeros(B, np.int64))
        kern.rforward(t_ev, ch, n, w, dsyn, V, dr, model.values, sort, times, udot, interval, count, dropped, *sp,
                      tab["TR"], tab["TP"], tab["ELIM"], tab["MR"], tab["MQ"])
        if dropped.any():
            warnings.warn(f"{int(dropped.sum())} of {B * M} neurons of a recurrent layer reached max_spikes={S} and "
                          "were silenced for the rest of their sample (every spike feeds the layer, so a capped "
                          "neuron stops: the gradient is exact for that capped network); raise max_spikes to keep "
                          "more spikes", RuntimeWarning, stacklevel=2)
        times = times + np.where(np.arange(S)[None, None, :] < count[:, :, None], dax[None, :, None], 0.0)
        return SRMTrace(model, w, dsyn, dax, inputs, SpikeTrain(times, count, dropped), udot, interval, stream,
                        V, dr, sp)
    kern.forward(t_ev, ch, n, w, dsyn, model.values, sort, times, udot, interval, count, dropped,
                 tab["TR"], tab["TP"], tab["ELIM"], tab["MR"], tab["MQ"])
    if (dropped < 0).any():
        b, m = np.argwhere(dropped < 0)[0]
        raise ValueError(f"neuron {m} of sample {b} crossed theta more than {RUNAWAY} times between two arrivals: "
                         f"weights too large (max |w| = {np.max(np.abs(w))!r})")
    if dropped.any():
        warnings.warn(f"{int(dropped.sum())} spikes beyond max_spikes={S} were dropped (in "
                      f"{int((dropped > 0).sum())} of {B * M} neurons); raise max_spikes to keep them",
                      RuntimeWarning, stacklevel=2)
    times = times + np.where(np.arange(S)[None, None, :] < count[:, :, None], dax[None, :, None], 0.0)
    out = SpikeTrain(times, count, dropped)
    return SRMTrace(model, w, dsyn, dax, inputs, out, udot, interval, stream)


def backward_srm(trace: SRMTrace, grad_times: np.ndarray) -> SRMGradients:
    """Every gradient from dL/d(output times) by the reverse scan (docs/MATH.md section 7); O(B M (E + K))."""
    if not isinstance(grad_times, np.ndarray) or grad_times.shape != trace.out.times.shape:
        raise ValueError(f"grad_times has shape {getattr(grad_times, 'shape', None)}; expected "
                         f"{trace.out.times.shape} (batch, neurons, max_spikes), like the output times")
    valid = np.arange(grad_times.shape[2])[None, None, :] < trace.out.counts[:, :, None]
    g = np.where(valid, np.asarray(grad_times, dtype=np.float64), 0.0)
    if not np.all(np.isfinite(g)):
        b, m, k = np.argwhere(~np.isfinite(g))[0]
        raise ValueError(f"grad_times[{b}, {m}, {k}] = {float(g[b, m, k])!r}: expected finite gradients at spikes")
    model, kern = trace.model, trace.model.kernels
    tab = kern.tables
    t_ev, ch, flat, n = trace.stream
    B, C, S_in = trace.inputs.shape
    M = trace.w.shape[1]
    NP = len(model.values)
    dW = np.zeros((B, C, M))
    dD = np.zeros((B, C, M))
    d_ev = np.zeros(t_ev.shape)
    dP = np.zeros((B, NP))
    sort = bool(np.any(trace.delays != 0) or len(model.derivation.groups) > 1)
    if trace.recurrent is not None:
        dV = np.zeros((B, M, M))
        dR = np.zeros((B, M, M))
        kern.rbackward(t_ev, ch, n, trace.w, trace.delays, trace.recurrent, trace.recurrent_delays, model.values,
                       sort, trace.udot, trace.interval, *trace.spikes, g, dW, dD, dV, dR, d_ev, dP, tab["SPIKE"],
                       tab["I_EPS"], tab["I_DEPS"], tab["I_EPS_P"], tab["I_DNU"], tab["I_NU_P"])
        return SRMGradients(dW.sum(axis=0), _inputs_grad(trace, d_ev), dD.sum(axis=0), g.sum(axis=(0, 2)),
                            dict(zip(model.names, dP.sum(axis=0))), dV.sum(axis=0), dR.sum(axis=0))
    kern.backward(t_ev, ch, n, trace.w, trace.delays, model.values, sort, trace.out.times - np.where(
        valid, trace.axonal[None, :, None], 0.0), trace.udot, trace.interval, trace.out.counts, g,
        dW, dD, d_ev, dP, tab["SPIKE"], tab["I_EPS"], tab["I_DEPS"], tab["I_EPS_P"], tab["I_DNU"], tab["I_NU_P"])
    return SRMGradients(dW.sum(axis=0), _inputs_grad(trace, d_ev), dD.sum(axis=0), g.sum(axis=(0, 2)),
                        dict(zip(model.names, dP.sum(axis=0))))


def _inputs_grad(trace: SRMTrace, d_ev: np.ndarray) -> np.ndarray:
    """dL/d(input times) (B, C, S_in) from the per-event sums of the merged stream."""
    t_ev, _, flat, _ = trace.stream
    B, C, S_in = trace.inputs.shape
    d_in = np.zeros((B, C * S_in))
    rows = np.repeat(np.arange(B), t_ev.shape[1])
    live = np.isfinite(t_ev).reshape(-1)
    np.add.at(d_in, (rows[live], flat.reshape(-1)[live]), d_ev.reshape(-1)[live])
    return d_in.reshape(B, C, S_in)


# --------------------------------------------------------------------------- a non-spiking max readout
@dataclass(frozen=True)
class ReadoutTrace:
    """``u_max`` (B, M): max over [0, t_end] of u_m(t) = sum_i w_im sum_j eps(t - t_i^j - d_im) (no threshold,
    no reset; 0 at t = 0), reached at ``t_max`` (B, M); what :func:`readout_backward` needs."""

    model: EventSRM
    w: np.ndarray
    delays: np.ndarray
    inputs: SpikeTrain
    t_end: float
    u_max: np.ndarray
    t_max: np.ndarray
    interval: np.ndarray
    kink: np.ndarray
    slope: np.ndarray
    stream: tuple


def readout_max(model: EventSRM, w: np.ndarray, inputs: SpikeTrain, t_end: float, *,
                delays: np.ndarray | None = None) -> ReadoutTrace:
    """The max-over-time readout (as the discrete layers' ``max_ce`` loss reads its output layer).

    Formula: u_max = max(0, max over [0, t_end] of u(t)), attained at an arrival interval's end or at a zero of
    du/dt inside it (found by the derivation's bracket, level 1: none missed). Its gradient needs no dt*/dx:
    du/dt = 0 at an interior max (envelope theorem), so du_max/dx = du(t*)/dx; a max at an arrival (a kink of u)
    moves with it, du_max/da = u'(a-). Cost O(B M E D^2).
    """
    if not isinstance(model, EventSRM):
        raise TypeError(f"model is a {type(model).__name__}; expected ift_snn.events.EventSRM")
    if not isinstance(inputs, SpikeTrain):
        raise TypeError(f"inputs is a {type(inputs).__name__}; expected ift_snn.events.SpikeTrain")
    t_end = _number("t_end", t_end)
    if t_end <= 0:
        raise ValueError(f"t_end={t_end!r}: expected the end of the window, > 0")
    B, C, _ = inputs.shape
    w = np.ascontiguousarray(check_weights(w, C))
    M = w.shape[1]
    dsyn = np.ascontiguousarray(_delays(delays, (C, M), "delays"))
    kern, tab = model.kernels, model.kernels.tables
    stream = _stream(inputs)
    t_ev, ch, _, n = stream
    sort = bool(np.any(dsyn != 0) or len(model.derivation.groups) > 1)
    u = np.zeros((B, M))
    t = np.zeros((B, M))
    k = np.zeros((B, M), np.int64)
    kink = np.full((B, M), -1, np.int64)
    slope = np.zeros((B, M))
    kern.umax(t_ev, ch, n, w, dsyn, model.values, sort, t_end, u, t, k, kink, slope, tab["TR"], tab["TP"],
              tab["ELIM"])
    return ReadoutTrace(model, w, dsyn, inputs, t_end, u, t, k, kink, slope, stream)


def readout_backward(trace: ReadoutTrace, grad_u: np.ndarray) -> SRMGradients:
    """dL/dW, dL/d(input times), dL/d(delays) and dL/d(eps's parameters) from dL/du_max: the reverse scan of
    :func:`backward_srm` with one event at t* per neuron carrying lambda = -dL/du_max (theta and nu have no part
    in a readout: the scan's threshold term is taken back, nu's readouts see no spike after t*)."""
    B, M = trace.u_max.shape
    if not isinstance(grad_u, np.ndarray) or grad_u.shape != (B, M) or not np.all(np.isfinite(grad_u)):
        raise ValueError(f"grad_u has shape {getattr(grad_u, 'shape', None)}; expected ({B}, {M}) finite values")
    model, kern = trace.model, trace.model.kernels
    tab = kern.tables
    t_ev, ch, flat, n = trace.stream
    C = trace.inputs.shape[1]
    NP = len(model.values)
    dW, dD, d_ev, dP = np.zeros((B, C, M)), np.zeros((B, C, M)), np.zeros(t_ev.shape), np.zeros((B, NP))
    sort = bool(np.any(trace.delays != 0) or len(model.derivation.groups) > 1)
    kern.backward(t_ev, ch, n, trace.w, trace.delays, model.values, sort, trace.t_max[:, :, None].copy(),
                  np.ones((B, M, 1)), trace.interval[:, :, None].copy(), np.ones((B, M), np.int64),
                  -np.asarray(grad_u, np.float64)[:, :, None], dW, dD, d_ev, dP, tab["SPIKE"], tab["I_EPS"],
                  tab["I_DEPS"], tab["I_EPS_P"], tab["I_DNU"], tab["I_NU_P"])
    G = len(model.derivation.groups)
    for b, m in zip(*np.nonzero(trace.kink >= 0)):  # the max sits on arrival `kink`: it moves with it
        e = trace.kink[b, m] // G
        moved = grad_u[b, m] * trace.slope[b, m]
        d_ev[b, e] += moved
        dD[b, ch[b, e], m] += moved
    dP = dP.sum(axis=0)
    dP[-1] += float(np.sum(grad_u))  # the scan's threshold term (lambda per spike) is no part of a readout
    params = dict(zip(model.names, dP))  # nu's parameters read an empty reverse state: 0
    return SRMGradients(dW.sum(axis=0), _inputs_grad(trace, d_ev), dD.sum(axis=0), np.zeros(M), params)
