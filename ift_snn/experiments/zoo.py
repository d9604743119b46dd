"""A zoo of neurons, each written once in the model grammar and run through everything.

Every member is a spec (the mapping a model file holds, :func:`ift_snn.neurons.spec.model_from_spec`): a
built-in with overrides or custom kernels. The tests take each one through the derivation and its
symbolic proof, the generated CUDA (compiled to PTX), the generated CPU kernels and the gradients
against the float64 BPTT oracle, from Python and from the command line; :func:`bench_zoo` times the
first call of each (derive, generate, compile) -- ``ift-snn bench --zoo``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

__all__ = ["ZOO", "zoo_model", "delay_line", "tap_list", "bench_zoo", "format_zoo_table"]

#: name -> spec. Chosen to cover what a computational neuroscientist writes: leaky, synaptic and
#: adaptive neurons, resonators, delays, finite taps, every reset and clip option, exact decimals,
#: multi-spike and custom surrogates.
ZOO: dict[str, dict] = {
    "lif": {"builtin": "lif"},
    "if_zero_reset": {"builtin": "if", "reset": "zero"},
    "cuba_lif_clip": {"builtin": "cuba_lif", "u_min": -0.5, "theta_r": 0.8},
    "alif": {"builtin": "alif"},
    "resonate_and_fire": {"builtin": "rf", "params": {"omega": 0.5}},
    "phase_resonator": {"name": "phase_resonator", "eps": "rho**n*sin(omega*n + phi)",
                        "nu": "theta*0.9**n", "params": {"rho": 0.9, "omega": 0.6, "phi": 0.4}},
    "damped_chirp": {"name": "damped_chirp", "eps": "n*rho**n*cos(omega*n)", "nu": "theta*rho**n",
                     "params": {"rho": 0.85, "omega": 0.3}},
    "dexp_3tap_reset": {"name": "dexp_3tap_reset", "eps": "alpha**n - beta**n", "nu": [1.0, 0.5, 0.25],
                        "params": {"alpha": 0.9, "beta": 0.6}},
    "delayed_alpha": {"name": "delayed_alpha", "eps": "step(n - 3)*(n - 3)*alpha**(n - 3)",
                      "nu": "theta*beta**n", "params": {"alpha": 0.8, "beta": 0.9}},
    "fir12": {"name": "fir12", "eps": [0.1, 0.3, 0.6, 0.9, 1.0, 0.9, 0.7, 0.5, 0.35, 0.2, 0.1, 0.05],
              "nu": "theta*0.9**n"},
    "decimal_resonator": {"name": "decimal_resonator", "eps": "0.8**n*cos(0.3*n)", "nu": "theta*0.9**n"},
    "srm_reset_zero": {"name": "srm_reset_zero", "eps": "(alpha**(n + 1) - beta**(n + 1))/(alpha - beta)",
                       "nu": "theta*alpha**n", "params": {"alpha": 0.9, "beta": 0.7}, "reset": "zero"},
    "alpha_multi_spike": {"name": "alpha_multi_spike", "eps": "n*alpha**n", "nu": "theta*beta**n",
                          "params": {"alpha": 0.8, "beta": 0.9}, "spike": "multi"},
    "lif_custom_surrogate": {"builtin": "lif", "params": {"alpha": 0.85},
                             "surrogate": "custom(1/(1 + abs(5*(u - theta)))**2)"},
    "truncated_power_law": {"name": "truncated_power_law", "eps": "rho**n/(n + 1)", "nu": "theta*0.9**n",
                            "params": {"rho": 0.95}, "truncate": 8},
    "lif_fast_sigmoid_max2": {"builtin": "lif", "surrogate": "fast_sigmoid(scale=1, slope=5)", "spike": 2,
                              "theta": 0.8},
}


def zoo_model(name: str):
    """The model of zoo member ``name``."""
    from ..neurons.spec import model_from_spec

    if name not in ZOO:
        raise ValueError(f"unknown zoo member {name!r}; the zoo has {', '.join(ZOO)}")
    return model_from_spec(ZOO[name])


def delay_line(d: int) -> dict:
    """The spec of an exponential synapse delayed by ``d`` steps (a trainable reset kernel): the delay line of
    ``ift-snn bench --delays``, carried in ring buffers by the generated kernels."""
    return {"name": f"delay{d}", "eps": f"step(n - {d})*alpha**(n - {d})", "nu": "theta*beta**n",
            "params": {"alpha": 0.85, "beta": 0.8}}


def tap_list(length: int) -> dict:
    """The spec of a synapse written as ``length`` taps 0.9^(k/8) (a long FIR list, ``ift-snn bench --taps``)."""
    return {"name": f"taps{length}", "eps": [round(0.9 ** (k / 8), 6) for k in range(length)], "nu": "theta*0.9**n"}


def bench_zoo(names=None, *, specs: Mapping[str, dict] | None = None, T_proof: int = 4, T: int = 200,
              M: int = 1024, progress=None) -> list[dict]:
    """Time every zoo member (or each of ``specs``, name -> spec, instead), in seconds (run in a process whose
    kernel cache folder is fresh: ``ift-snn bench --zoo`` makes one, so that nothing was compiled before):

    ``first_call``: the model built from its spec, then ``ops.forward`` + ``ops.backward`` (exodus) on the CPU,
    float32, (T, M): derive, generate and compile (Numba) included -- what a user waits for the first time
    (target < 5 s); ``derive``: the scans alone (symbolic, the kernels' recurrences already found); ``generate``: every kernel (forward, backward, SLAYER) printed
    as CUDA and CPU source; ``run``: the same call warm; ``prove``: the symbolic proofs (exodus and SLAYER
    for T = 2..``T_proof``, truncated K = 2 at T_proof).
    """
    import numpy as np

    from .. import ops
    from ..backends import compiled
    from ..codegen.cpu import python_source
    from ..codegen.cuda import cuda_source
    from ..codegen.ir import QUANTITIES, build_kernel
    from ..symbolic.recurrence import derive_recurrence, prove

    rows = []
    from ..neurons.kernels import _diff

    from ..neurons.spec import model_from_spec

    members = dict(specs) if specs is not None else {name: ZOO[name] for name in names or ZOO}
    for name, spec in members.items():
        rng = np.random.default_rng(0)
        a = rng.normal(0.3, 0.6, (T, M)).astype(np.float32)
        g = rng.normal(size=(T, M)).astype(np.float32)
        derive_recurrence.cache_clear()
        _diff.cache_clear()
        compiled.clear()
        start = time.perf_counter()
        model = model_from_spec(spec)  # the kernels' recurrences are found here
        ops.backward(model, ops.forward(model, a, backend="cpu"), g)
        row: dict = {"name": name, "model": repr(model), "first_call_s": time.perf_counter() - start}
        start = time.perf_counter()
        ops.backward(model, ops.forward(model, a, backend="cpu"), g)
        row["run_s"] = time.perf_counter() - start
        derive_recurrence.cache_clear()
        _diff.cache_clear()
        start = time.perf_counter()
        rec = derive_recurrence(model)
        row["derive_s"] = time.perf_counter() - start
        start = time.perf_counter()
        for k in (build_kernel(model, q, "f32", rec) for q in QUANTITIES):
            cuda_source(k)
            python_source(k)
        row["generate_s"] = time.perf_counter() - start
        start = time.perf_counter()
        ok = all(prove(model, t, rec, method=m).ok for t in range(2, T_proof + 1) for m in ("exodus", "slayer"))
        row["proved"] = ok and prove(model, T_proof, rec, truncation=2).ok
        row["prove_s"] = time.perf_counter() - start
        row["state"] = len(rec.forward.state)
        row["backward_state"] = len(rec.backward.state)
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def format_zoo_table(rows: list[Mapping], target: bool = True) -> str:
    """The rows of :func:`bench_zoo` as a table (seconds; state = forward / backward scan values per neuron);
    ``target``: name the zoo's target for the slowest first call."""
    head = (f"{'neuron':<22} {'state':>7} {'first call':>10} {'derive':>7} {'generate':>8} {'run':>7} {'prove':>7}"
            "  proved")
    lines = [head, "-" * len(head)]
    for r in rows:
        state = f"{r['state']}/{r['backward_state']}"
        lines.append(f"{r['name']:<22} {state:>7} {r['first_call_s']:>9.2f}s {r['derive_s']:>6.2f}s "
                     f"{r['generate_s']:>7.2f}s {r['run_s']:>6.2f}s {r['prove_s']:>6.2f}s  "
                     f"{'yes' if r['proved'] else 'NO'}")
    worst = max(rows, key=lambda r: r["first_call_s"])
    lines.append(f"slowest first call: {worst['name']} {worst['first_call_s']:.2f} s"
                 + (" (target < 5 s on 2 cores)" if target else ""))
    return "\n".join(lines)
