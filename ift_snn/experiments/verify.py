"""A derivation checked against the float64 oracle on random inputs: what ``ift-snn derive`` prints as its
numeric check. It sits above the backends (it runs the hand-written oracle of ``backends/reference.py``), so
that the derivations of ``symbolic/`` depend on no array code (docs/ARCHITECTURE.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends import reference
from ..symbolic.recurrence import PARAMETER, evaluate, u_init_parameter_terms
from ..symbolic.report import Derivation
from .precision import rel_error

__all__ = ["NumericCheck", "verify_numerically", "verify_recurrent"]


@dataclass(frozen=True)
class NumericCheck:
    """Largest relative errors of the derived scans against the float64 oracle."""

    forward: float
    grad_a: float
    grad_u_init: float
    slayer_vs_exact: float
    slayer_vs_oracle: float
    spike_rate: float
    params: float = 0.0  # largest relative error of the generated per-neuron parameter sums, summed


def verify_numerically(d: Derivation, *, T: int = 200, M: int = 16, seeds: int = 3) -> NumericCheck:
    """Run the derived scans (from their expressions) against ``backends.reference`` on random inputs."""
    worst = dict(forward=0.0, grad_a=0.0, grad_u_init=0.0, slayer_vs_exact=0.0, slayer_vs_oracle=0.0, params=0.0)
    rate = []
    rel = rel_error
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        a = rng.normal(0.3, 0.5, (T, M))
        g = rng.normal(size=(T, M))
        u0 = rng.normal(0, 0.3, M)
        fw = evaluate(d.recurrence.forward, d.model, {"a": a}, u0)
        want = reference.bptt(d.model, a, g, u0)
        slayer_ref = reference.slayer(d.model, a, g, u0)
        inputs = {"g": g, "sigma": fw["sigma"], "s": fw["s"], "u": fw["u"], "a": a}
        if "m" in fw:
            inputs["m"] = fw["m"]
        bw = evaluate(d.recurrence.backward, d.model, inputs, u0)
        sl = evaluate(d.recurrence.slayer, d.model, inputs, u0)
        worst["forward"] = max(worst["forward"], rel(fw["u"], want.u))
        worst["grad_a"] = max(worst["grad_a"], rel(bw["grad_a"], want.a))
        worst["grad_u_init"] = max(worst["grad_u_init"], rel(bw["grad_u_init"], want.u0))
        worst["slayer_vs_exact"] = max(worst["slayer_vs_exact"], rel(sl["grad_a"], want.a))
        worst["slayer_vs_oracle"] = max(worst["slayer_vs_oracle"], rel(sl["grad_a"], slayer_ref.a))
        extra = u_init_parameter_terms(d.recurrence, bw, u0, np, d.model)  # x0 stands for u0, may depend on p
        for name, value in want.params.items():
            got = float(np.sum(bw[PARAMETER + name])) + extra.get(name, 0.0)
            worst["params"] = max(worst["params"], abs(got - value) / max(abs(value), 1e-300))
        rate.append(float(np.mean(fw["s"] > 0)))
    return NumericCheck(spike_rate=float(np.mean(rate)), **worst)




def verify_recurrent(model, *, T: int = 100, B: int = 2, N: int = 8, seeds: int = 3) -> dict:
    """The generated recurrent-layer kernels (NumPy printing: no compile) against the hand-written float64 oracle
    ``reference.bptt_recurrent`` on random inputs, exodus and SLAYER: the largest relative error of the spikes'
    membrane and of dL/dc, dL/dV, dL/ds0, dL/du0 and every dL/dp, over ``seeds`` draws (what ``derive
    --recurrent`` prints), and the spike rate."""
    import warnings

    from .. import recurrent
    from ..methods import EXODUS, SLAYER

    rel = rel_error
    worst = {"u": 0.0, "exodus": 0.0, "slayer": 0.0}
    rates = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        c = rng.normal(0.3, 0.6, (T, B, N))
        V = rng.normal(0, 1.0 / np.sqrt(N), (N, N))
        g = rng.normal(size=(T, B, N))
        s0 = (rng.random((B, N)) < 0.3).astype(float)
        u0 = rng.normal(0, 0.3, (B, N))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trace = recurrent.forward(model, c, V, s0=s0, u0=u0, backend="numpy")
            rates.append(float(trace.s.mean()))
            worst["u"] = max(worst["u"], rel(trace.u, reference.simulate_recurrent(model, c, V, s0, u0)[0]))
            for method in (EXODUS, SLAYER):
                got = recurrent.backward(model, trace, g, method)
                ref = reference.bptt_recurrent(model, c, V, g, s0, u0, detach_reset=method.detach_reset)
                errs = [rel(getattr(got, k), getattr(ref, k)) for k in ("c", "V", "s0", "u0")]
                errs += [abs(got.params[k] - v) / max(abs(v), 1.0) for k, v in ref.params.items()]
                worst[method.name] = max(worst[method.name], *errs)
    return {**worst, "spike_rate": float(np.mean(rates))}
