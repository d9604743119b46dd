"""CUDA for the continuous-time kernels of :mod:`ift_snn.events.srm`: printed from the same derivation.

One thread per (sample, neuron) lane, double precision. The expressions (the
state update, an arrival, the reset, the bracket's levels, the reverse update
and the readouts) are printed from :mod:`ift_snn.symbolic.continuous` by
:class:`~ift_snn.codegen.printers.CudaPrinter`; the control flow is the
template of :mod:`ift_snn.events.srm` written in C (walk the arrivals, skip a
lane that cannot reach theta, bracket the levels bottom up up to the horizon,
Newton inside the bracket, the reverse walk). A lane's arrivals in time order
come in as ``at`` and ``order`` ((B M, E G), sorted on the device by
``cupy.argsort``, on the host by NumPy); the backward adds into dW, dD,
dL/d(input times) and dL/dp with ``atomicAdd`` (double: sm_60 and newer).

Feed-forward layers only: the recurrent layer and the max readout run on the
CPU kernels (a recurrent sample is one sequential event loop, a poor fit for
one thread per lane). :func:`srm_cuda_source` returns the text (compiled to
PTX in the suite and run on the host through a small shim);
:func:`simulate_srm_cuda` / :func:`backward_srm_cuda` run it through CuPy.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp

from ..codegen.printers import CudaPrinter
from ..symbolic.continuous import ContinuousDerivation

__all__ = ["SRMCudaSource", "srm_cuda_source", "lane_arrivals", "simulate_srm_cuda", "backward_srm_cuda"]


@dataclass(frozen=True)
class SRMCudaSource:
    """The CUDA text (``code``), its base ``name`` (kernels ``<name>_forward``, ``<name>_backward``)."""

    name: str
    code: str
    options: tuple[str, ...] = ("--std=c++14",)

    def __str__(self) -> str:
        return self.code


_TEMPLATE = r"""
__device__ double N_lev(const double* C, int j, double s, const double* R, const long long* TR, const long long* TP)
{
    double f = 0.0;
    for (int k = 0; k < NT; ++k) {
        const double c = C[j * NT + k];
        if (c != 0.0) {
            double term = c * exp(R[TR[k]] * s);
            for (long long q = 0; q < TP[k]; ++q) term *= s;
            f += term;
        }
    }
    return f;
}

__device__ double N_limsign(const double* C, int j, const double* R, const long long* TR, const long long* TP)
{
    double best_r = -CUDART_INF, acc = 0.0;
    long long best_p = -1;
    for (int k = 0; k < NT; ++k) {
        const double c = C[j * NT + k];
        if (c == 0.0) continue;
        const double r = R[TR[k]];
        if (r > best_r || (r == best_r && TP[k] > best_p)) { best_r = r; best_p = TP[k]; acc = c; }
        else if (r == best_r && TP[k] == best_p) acc += c;
    }
    return acc > 0.0 ? 1.0 : (acc < 0.0 ? -1.0 : 0.0);
}

__device__ double N_solve(const double* C, int j, double a, double b, double fa, double fb, const double* R,
                          const long long* TR, const long long* TP, const long long* ELIM)
{
    if (fb == 0.0) return b;
    double lo = a, hi = b, x = 0.5 * (a + b);
    const bool neg_lo = fa < 0.0;
    for (int it = 0; it < 200; ++it) {
        const double f = N_lev(C, j, x, R, TR, TP);
        if (f == 0.0) return x;
        if ((f < 0.0) == neg_lo) lo = x; else hi = x;
        double nxt = 0.5 * (lo + hi);
        const double d = N_lev(C, j + 1, x, R, TR, TP) + R[ELIM[j]] * f;
        if (d != 0.0) { const double newton = x - f / d; if (newton > lo && newton < hi) nxt = newton; }
        if (fabs(nxt - x) <= 4e-16 * fabs(x) || hi - lo <= 4e-16 * fabs(hi)) return nxt;
        x = nxt;
    }
    return x;
}

__device__ double N_crossing(const double* C, double L, const double* R, const long long* TR, const long long* TP,
                             const long long* ELIM)
{
    double roots[NT], found[NT];
    int nr = 0;
    for (int j = NL - 2; j >= 0; --j) {
        int nn = 0;
        double a = 0.0, fa = N_lev(C, j, 0.0, R, TR, TP);
        for (int q = 0; q <= nr; ++q) {
            const double b = q < nr ? roots[q] : L;
            if (b <= a) continue;
            double root = -1.0, fb;
            if (isinf(b)) {
                const double sb = N_limsign(C, j, R, TR, TP);
                if (fa != 0.0 && sb != 0.0 && (sb > 0.0) != (fa > 0.0)) {
                    double h = fmax(1.0, a), bb = a + h, fbb = N_lev(C, j, bb, R, TR, TP);
                    for (int it = 0; it < 2100; ++it) {
                        if (fbb == 0.0 || (fbb > 0.0) != (fa > 0.0)) break;
                        h *= 2.0; bb = a + h; fbb = N_lev(C, j, bb, R, TR, TP);
                    }
                    if (!isinf(bb) && (fbb == 0.0 || (fbb > 0.0) != (fa > 0.0)))
                        root = N_solve(C, j, a, bb, fa, fbb, R, TR, TP, ELIM);
                }
                fb = sb;
            } else {
                fb = N_lev(C, j, b, R, TR, TP);
                if (fa != 0.0 && (fb == 0.0 || (fb > 0.0) != (fa > 0.0)))
                    root = N_solve(C, j, a, b, fa, fb, R, TR, TP, ELIM);
            }
            if (root >= 0.0) {
                if (j == 0) return root;
                found[nn++] = root;
            }
            a = b; fa = fb;
        }
        for (int q = 0; q < nn; ++q) roots[q] = found[q];
        nr = nn;
    }
    return -1.0;
}

__device__ bool N_below(const double* X, const double* PK, double theta)
{
    double bound = 0.0;
    for (int m = 0; m < NX; ++m) if (X[m] != 0.0) bound += fabs(X[m]) * PK[m];
    return bound < theta;
}

__device__ double N_horizon(const double* X, const double* R, const long long* MR, const long long* MQ, double theta)
{
    double s0 = 0.0;
    for (int m = 0; m < NX; ++m) {
        if (X[m] == 0.0) continue;
        const double r = R[MR[m]];
        if (r >= 0.0) return CUDART_INF;
        s0 = fmax(s0, (double)MQ[m] / (-r));
    }
    double s = fmax(s0, 1.0);
    for (int it = 0; it < 64; ++it) {
        double bound = 0.0;
        for (int m = 0; m < NX; ++m) {
            if (X[m] == 0.0) continue;
            double term = fabs(X[m]) * exp(R[MR[m]] * s);
            for (long long q = 0; q < MQ[m]; ++q) term *= s;
            bound += term;
        }
        if (bound < theta) return s;
        s *= 2.0;
    }
    return CUDART_INF;
}

extern "C" __global__ void N_forward(const double* __restrict__ at, const long long* __restrict__ order,
    const long long* __restrict__ n_arr, const long long* __restrict__ ch_in, const double* __restrict__ w,
    const double* __restrict__ p, double* __restrict__ out_t, double* __restrict__ out_udot,
    long long* __restrict__ out_int, long long* __restrict__ out_cnt, long long* __restrict__ out_drop,
    const long long* __restrict__ TR, const long long* __restrict__ TP, const long long* __restrict__ ELIM,
    const long long* __restrict__ MR, const long long* __restrict__ MQ,
    const int B, const int M, const int E, const int EG, const int S)
{
    const long long lane = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (lane >= (long long)B * M) return;
    const int b = (int)(lane / M), m = (int)(lane - (long long)b * M);
    double R[NR], PK[NX], X[NX], C[NL * NT];
    N_rates(p, R);
    const double theta = p[NP - 1];
    for (int k = 0; k < NX; ++k) {
        const double r = R[MR[k]];
        const long long q = MQ[k];
        PK[k] = q == 0 ? 1.0 : (r < 0.0 ? pow((double)q / (-r), (double)q) * exp(-(double)q) : CUDART_INF);
        X[k] = 0.0;
    }
    const long long n = n_arr[b] * G;
    double t0 = 0.0;
    long long cnt = 0, drop = 0;
    for (long long k = 0; k <= n; ++k) {
        const long long idx = k < n ? order[lane * EG + k] : 0;
        const double t1 = k < n ? at[lane * EG + idx] : CUDART_INF;
        long long n_here = 0;
        while (true) {
            if (N_below(X, PK, theta)) break;
            N_levels(X, p, C);
            const double s = N_crossing(C, fmin(t1 - t0, N_horizon(X, R, MR, MQ, theta)), R, TR, TP, ELIM);
            if (s < 0.0) break;
            if (++n_here > RUNAWAY) { drop = -1; break; }
            if (cnt < S) {
                const long long o = lane * S + cnt;
                out_t[o] = t0 + s;
                out_udot[o] = N_lev(C, 1, s, R, TR, TP);
                out_int[o] = k;
                ++cnt;
            } else ++drop;
            N_advance(X, s, p);
            N_reset(X, p);
            t0 = t0 + s;
        }
        if (drop < 0) break;
        if (k < n) {
            const long long e = idx / G;
            N_advance(X, t1 - t0, p);
            t0 = t1;
            N_arrive(X, (int)(idx - e * G), w[ch_in[(long long)b * E + e] * M + m], p);
        }
    }
    out_cnt[lane] = cnt;
    out_drop[lane] = drop;
}

extern "C" __global__ void N_backward(const double* __restrict__ at, const long long* __restrict__ order,
    const long long* __restrict__ n_arr, const long long* __restrict__ ch_in, const double* __restrict__ w,
    const double* __restrict__ p, const double* __restrict__ times, const double* __restrict__ udot,
    const long long* __restrict__ interval, const long long* __restrict__ count, const double* __restrict__ gk,
    double* __restrict__ dW, double* __restrict__ dD, double* __restrict__ d_ev, double* __restrict__ dP,
    const long long* __restrict__ SPIKE, const int n_spike, const long long* __restrict__ I_EPS,
    const long long* __restrict__ I_DEPS, const long long* __restrict__ I_EPS_P, const long long I_DNU,
    const long long* __restrict__ I_NU_P, const int B, const int M, const int E, const int EG, const int S)
{
    const long long lane = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (lane >= (long long)B * M) return;
    const int b = (int)(lane / M), m = (int)(lane - (long long)b * M);
    double Q[NQ], RO[NO];
    for (int k = 0; k < NQ; ++k) Q[k] = 0.0;
    const long long n = n_arr[b] * G;
    double tq = 0.0;
    bool have = false;
    long long k = count[lane] - 1;
    for (long long e = n; e >= 0; --e) {
        while (k >= 0 && interval[lane * S + k] == e) {
            const double tk = times[lane * S + k];
            if (have) N_badvance(Q, tq - tk, p);
            tq = tk;
            have = true;
            N_readouts(Q, p, RO);
            const double lam = (gk[lane * S + k] + RO[I_DNU]) / udot[lane * S + k];
            for (int i = 0; i < NP; ++i) atomicAdd(&dP[i], -RO[I_NU_P[i]]);
            atomicAdd(&dP[NP - 1], lam);
            for (int i = 0; i < n_spike; ++i) Q[SPIKE[i]] += lam;
            --k;
        }
        if (e == 0) break;
        if (!have) continue;
        const long long idx = order[lane * EG + e - 1];
        const long long ev = idx / G;
        const int g = (int)(idx - ev * G);
        const double a = at[lane * EG + idx];
        const long long c = ch_in[(long long)b * E + ev];
        N_badvance(Q, tq - a, p);
        tq = a;
        N_readouts(Q, p, RO);
        const double wi = w[c * M + m];
        atomicAdd(&dW[c * M + m], -RO[I_EPS[g]]);
        const double gt = wi * RO[I_DEPS[g]];
        atomicAdd(&d_ev[(long long)b * E + ev], gt);
        atomicAdd(&dD[c * M + m], gt);
        for (int i = 0; i < NP; ++i) atomicAdd(&dP[i], -wi * RO[I_EPS_P[g * NP + i]]);
    }
}
"""


def _fn(name: str, args: str, body: list[str]) -> list[str]:
    return ["", f"__device__ void N_{name}({args})", "{", *(f"    {line}" for line in body), "}"]


@lru_cache(maxsize=32)
def srm_cuda_source(d: ContinuousDerivation) -> SRMCudaSource:
    """The CUDA text of derivation ``d`` (module docstring); the name is ``ift_snn_srm_cuda_<sha8>`` of it."""
    from .srm import RUNAWAY, _printer_subs

    P = CudaPrinter("f64")
    subs = _printer_subs(d)

    def pr(e: sp.Expr) -> str:
        return P.doprint(sp.sympify(e).xreplace(subs))

    lines = ["// Generated by ift_snn.events.srm_cuda from ift_snn.symbolic.continuous. Do not edit.",
             f"//   eps(t) = {sp.sstr(d.eps)}", f"//   nu(t)  = {sp.sstr(d.nu)}",
             f"//   parameters p = ({', '.join(p.name for p in d.params)})",
             "#include <math_constants.h>"]
    consts = {"G": len(d.groups), "NR": len(d.rates), "NX": len(d.modes), "NL": len(d.levels), "NT": len(d.terms),
              "NQ": len(d.back_modes), "NO": len(d.readouts), "NP": len(d.params), "RUNAWAY": RUNAWAY}
    lines += [f"#define {k} {v}" for k, v in consts.items()]
    lines += _fn("rates", "const double* p, double* R", [f"R[{i}] = {pr(r)};" for i, r in enumerate(d.rates)])
    body = [f"const double x{m} = {pr(e)};" for m, e in enumerate(d.advance)]
    body += [f"X[{m}] = x{m};" for m in range(len(d.X))]
    lines += _fn("advance", "double* X, const double dt, const double* p", body)
    body = []
    for g, vec in enumerate(d.arrival):
        body.append(f"{'if' if g == 0 else 'else if'} (g == {g}) {{")
        body += [f"    X[{m}] += w * ({pr(c)});" for m, c in enumerate(vec) if c != 0]
        body.append("}")
    lines += _fn("arrive", "double* X, const int g, const double w, const double* p", body)
    lines += _fn("reset", "double* X, const double* p", [f"X[{m}] += {pr(c)};" for m, c in enumerate(d.reset) if c != 0])
    T_ = len(d.terms)
    lines += _fn("levels", "const double* X, const double* p, double* C",
                 [f"C[{j * T_ + k}] = {pr(c)};" for j, row in enumerate(d.levels) for k, c in enumerate(row)])
    body = [f"const double q{m} = {pr(e)};" for m, e in enumerate(d.back_advance)]
    body += [f"Q[{m}] = q{m};" for m in range(len(d.Q))]
    lines += _fn("badvance", "double* Q, const double dt, const double* p", body)
    body = []
    for o, name in enumerate(d.readouts):
        terms = [f"({pr(c)}) * Q[{m}]" for m, c in enumerate(d.readout_vector(name)) if c != 0]
        body.append(f"RO[{o}] = {' + '.join(terms) if terms else '0.0'};")
    lines += _fn("readouts", "const double* Q, const double* p, double* RO", body)
    text = "\n".join(lines) + "\n" + _TEMPLATE
    name = "ift_snn_srm_cuda_" + hashlib.sha256(text.encode()).hexdigest()[:8]
    text = re.sub(r"\bN_", name + "_", text)
    return SRMCudaSource(name, text)


def lane_arrivals(model, w: np.ndarray, dsyn: np.ndarray, stream, xp=np):
    """(at, order): every lane's arrival times (B M, E G) and their stable time order, as the CPU kernels
    take them (``xp``: numpy, or cupy on a device)."""
    t_ev, ch, _, n = stream
    B, E = t_ev.shape
    M = w.shape[1]
    d = model.derivation
    gd = np.array([float(g.delay.subs(dict(zip(d.params, model.values)))) for g in d.groups])
    G = gd.size
    t = xp.asarray(t_ev)[:, :, None, None] + xp.asarray(dsyn)[xp.asarray(ch)][:, :, :, None] + xp.asarray(gd)
    at = xp.transpose(t, (0, 2, 1, 3)).reshape(B * M, E * G)  # (b, m) lanes, (e, g) arrivals
    live = xp.arange(E * G)[None, :] < (xp.asarray(n) * G).repeat(M)[:, None]
    key = xp.where(live, at, xp.inf)
    order = xp.argsort(key, axis=1, kind="stable") if xp is np else xp.argsort(key, axis=1)
    return xp.ascontiguousarray(at), xp.ascontiguousarray(order.astype(np.int64))


@lru_cache(maxsize=32)
def _raw(d: ContinuousDerivation):
    import cupy

    src = srm_cuda_source(d)
    module = cupy.RawModule(code=src.code, options=src.options)
    return module.get_function(src.name + "_forward"), module.get_function(src.name + "_backward")


def simulate_srm_cuda(model, w: np.ndarray, inputs, *, delays=None, axonal=None):
    """:func:`ift_snn.events.srm.simulate_srm` (feed-forward) on a GPU through CuPy; float64, one thread per lane."""
    import cupy

    from .srm import SRMTrace, _delays, _stream, check_weights
    from .model import SpikeTrain

    B, C, _ = inputs.shape
    w = np.ascontiguousarray(check_weights(w, C))
    M, S = w.shape[1], model.max_spikes
    dsyn = np.ascontiguousarray(_delays(delays, (C, M), "delays"))
    dax = _delays(axonal, (M,), "axonal")
    stream = _stream(inputs)
    at, order = lane_arrivals(model, w, dsyn, stream, cupy)
    tab = model.kernels.tables
    dev = {k: cupy.asarray(np.ascontiguousarray(v)) for k, v in dict(
        n=stream[3], ch=stream[1], w=w, p=model.values, TR=tab["TR"], TP=tab["TP"], ELIM=tab["ELIM"], MR=tab["MR"],
        MQ=tab["MQ"]).items()}
    times = cupy.full((B, M, S), cupy.inf)
    udot = cupy.zeros((B, M, S))
    interval = cupy.full((B, M, S), -1, dtype=cupy.int64)
    count = cupy.zeros((B, M), dtype=cupy.int64)
    drop = cupy.zeros((B, M), dtype=cupy.int64)
    fwd, _ = _raw(model.derivation)
    threads = 128
    E = stream[0].shape[1]
    fwd(((B * M + threads - 1) // threads,), (threads,), (
        at, order, dev["n"], dev["ch"], dev["w"], dev["p"], times, udot, interval, count, drop, dev["TR"],
        dev["TP"], dev["ELIM"], dev["MR"], dev["MQ"], np.int32(B), np.int32(M), np.int32(E),
        np.int32(at.shape[1]), np.int32(S)))
    drop, count = cupy.asnumpy(drop), cupy.asnumpy(count)
    if (drop < 0).any():
        raise ValueError("a neuron crossed theta more than RUNAWAY times between two arrivals: weights too large")
    times = cupy.asnumpy(times)
    times = times + np.where(np.arange(S)[None, None, :] < count[:, :, None], dax[None, :, None], 0.0)
    return SRMTrace(model, w, dsyn, dax, inputs, SpikeTrain(times, count, drop), cupy.asnumpy(udot),
                    cupy.asnumpy(interval), stream)


def backward_srm_cuda(trace, grad_times: np.ndarray):
    """:func:`ift_snn.events.srm.backward_srm` (feed-forward) on a GPU through CuPy."""
    import cupy

    from .srm import SRMGradients, _inputs_grad

    model = trace.model
    B, M, S = trace.out.times.shape
    valid = np.arange(S)[None, None, :] < trace.out.counts[:, :, None]
    g = np.where(valid, np.asarray(grad_times, dtype=np.float64), 0.0)
    at, order = lane_arrivals(model, trace.w, trace.delays, trace.stream, cupy)
    tab = model.kernels.tables
    C = trace.w.shape[0]
    E = trace.stream[0].shape[1]
    NP = len(model.values)
    a = [cupy.asarray(np.ascontiguousarray(v)) for v in (
        trace.stream[3], trace.stream[1], trace.w, model.values,
        trace.out.times - np.where(valid, trace.axonal[None, :, None], 0.0), trace.udot, trace.interval,
        trace.out.counts, g)]
    dW, dD, d_ev, dP = cupy.zeros((C, M)), cupy.zeros((C, M)), cupy.zeros((B, E)), cupy.zeros(NP)
    t = [cupy.asarray(tab[k]) for k in ("SPIKE", "I_EPS", "I_DEPS", "I_EPS_P", "I_NU_P")]
    _, bwd = _raw(model.derivation)
    threads = 128
    bwd(((B * M + threads - 1) // threads,), (threads,), (
        at, order, *a, dW, dD, d_ev, dP, t[0], np.int32(t[0].size), t[1], t[2], t[3], np.int64(tab["I_DNU"]), t[4],
        np.int32(B), np.int32(M), np.int32(E), np.int32(at.shape[1]), np.int32(S)))
    return SRMGradients(cupy.asnumpy(dW), _inputs_grad(trace, cupy.asnumpy(d_ev)), cupy.asnumpy(dD),
                        g.sum(axis=(0, 2)), dict(zip(model.names, cupy.asnumpy(dP))))
