"""Precision of the generated scans against the float64 oracle, on the same spikes.

A float32 run and the float64 oracle can part ways at one spike whose membrane sits within rounding of
the threshold; after that flip they are different trajectories and their difference says nothing about
the scans' rounding. So the oracle (:func:`ift_snn.backends.reference.bptt`, written by hand) is run on
the spikes of the run being measured (``spikes=``): the membrane it computes is the exact membrane of
that spike train, and its gradients the exact gradients along it. The errors reported are relative in
the max-norm: max |x - x_oracle| / max |x_oracle|, per quantity (membrane u, dL/da, dL/du0 and every dL/dp).
Used by the tests (every family, float32 and float64, T = 2000) and by ``ift-snn bench --precision``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..methods import get_method
from ..neurons.models import NeuronModel

G_MEAN = 0.0

__all__ = ["PrecisionResult", "measure", "sensitivity", "drive", "FAMILIES", "family_model", "format_precision_table", "rel_error"]


@dataclass(frozen=True)
class PrecisionResult:
    """Relative max-norm errors of one run against the oracle on the run's own spikes."""

    model: str
    dtype: str
    T: int
    u: float  # membrane
    a: float  # dL/da
    u0: float  # dL/du0
    params: dict = field(default_factory=dict)  # {name: relative error of dL/dp}
    spike_rate: float = 0.0
    flips: int = 0  # spikes where the run and the oracle's own simulation differ (information only)

    @property
    def worst_gradient(self) -> float:
        return max([self.a, self.u0, *self.params.values()])


def rel_error(x, ref) -> float:
    """max |x - ref| / max |ref| (the absolute error where ref is all zero), in float64."""
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    err = float(np.max(np.abs(x - ref))) if ref.size else 0.0
    if scale == 0.0:
        return err
    return err / scale


def drive(model: NeuronModel, T: int, M: int, seed: int = 0, rate: float = 0.1, backend: str = "auto") -> np.ndarray:
    """A (T, M) float64 input that makes ``model`` fire at about ``rate`` spikes per step and neuron:
    white noise with a positive mean, scaled (by bisection on a log scale, float64 forward over the first
    400 steps) to the rate."""
    from .. import ops

    rng = np.random.default_rng(seed)
    base = rng.normal(0.3, 1.0, size=(T, M))
    head = base[:400]
    lo, hi = -40.0, 10.0  # log2 of the scale

    def fired(log_scale: float) -> float:
        return float(np.mean(ops.forward(model, head * 2.0**log_scale, backend=backend).s > 0))

    for _ in range(18):
        mid = 0.5 * (lo + hi)
        if fired(mid) < rate:
            lo = mid
        else:
            hi = mid
    return base * 2.0 ** (0.5 * (lo + hi))


def measure(model: NeuronModel, T: int = 2000, M: int = 4, dtype=np.float32, seed: int = 0,
            a: np.ndarray | None = None, u0: np.ndarray | None = None, method: str = "exodus",
            backend: str = "auto") -> PrecisionResult:
    """Run ``model`` forward and backward (``method``) in ``dtype`` and compare with the float64 oracle
    on the same spikes: the membrane, dL/da, dL/du0 and every dL/dp (L = sum g s, g fixed random).
    ``backend``: "auto", "cpu" (Numba), "numpy" (the NumPy-printed kernels) or "cupy" (CUDA, on a GPU)."""
    from .. import ops
    from ..backends import reference

    dtype = np.dtype(dtype)
    a64, g64, u064 = _inputs(model, T, M, dtype, seed, a, u0, backend)
    if backend == "cupy":  # the CUDA kernels: device arrays in, host copies of the results out
        import cupy

        put, get = cupy.asarray, cupy.asnumpy
    else:
        put = get = np.asarray
    trace = ops.forward(model, put(a64.astype(dtype)), put(u064.astype(dtype)), backend=backend)
    grads = ops.backward(model, trace, put(g64.astype(dtype)), method=method)
    s = get(trace.s).astype(np.float64)
    # and the model's parameters as the kernels hold them (a pole 0.999 rounded to float32 is another pole:
    # over T steps its powers differ by about T times that rounding, a different model, not a scan's error)
    exact = model.with_params(**{k: float(dtype.type(v)) for k, v in model.params})
    want = reference.bptt(exact, a64, g64, u064, spikes=s, detach_reset=get_method(method).detach_reset)
    own = reference.simulate(exact, a64, u064)[1]
    params = {k: rel_error(get(grads.params[k]), v) for k, v in want.params.items()}
    return PrecisionResult(model=model.name, dtype=dtype.name, T=T, u=rel_error(get(trace.u), want.u),
                           a=rel_error(get(grads.a), want.a), u0=rel_error(get(grads.u0), want.u0), params=params,
                           spike_rate=float(np.mean(s > 0)),
                           flips=int(np.sum(own != s)))


def _inputs(model: NeuronModel, T: int, M: int, dtype, seed: int, a, u0, backend: str = "auto"):
    """(a, g, u0) in float64 of :func:`measure`: the drive (or ``a``), g and u0 drawn from ``seed + 1``; all
    rounded to ``dtype``: the oracle sees the same numbers the run sees, so that what is measured is the
    scans' rounding, not the inputs' representation."""
    a64 = drive(model, T, M, seed, backend=backend) if a is None else np.asarray(a, dtype=np.float64)
    T, M = a64.shape
    rng = np.random.default_rng(seed + 1)
    g64 = rng.normal(G_MEAN, 1.0, size=(T, M))
    u064 = rng.normal(0.0, 0.3 * model.theta, size=M) if u0 is None else np.asarray(u0, dtype=np.float64)
    return tuple(x.astype(dtype).astype(np.float64) for x in (a64, g64, u064))


def sensitivity(model: NeuronModel, T: int = 2000, M: int = 4, dtype=np.float32, seed: int = 0,
                a: np.ndarray | None = None, u0: np.ndarray | None = None, repeats: int = 4) -> dict:
    """The condition of each dL/dp of :func:`measure`'s problem at ``dtype``'s resolution: the largest relative
    change of the float64 oracle's dL/dp when every entry of a and g is moved by one unit of ``dtype``'s
    rounding (x (1 +- eps), random signs, ``repeats`` draws), on the same spikes. A sum that cancels (dL/dp of
    terms much larger than itself) changes by far more than eps: no scan in ``dtype`` can do better than
    about this. {name: relative change}."""
    from ..backends import reference

    dtype = np.dtype(dtype)
    a64, g64, u064 = _inputs(model, T, M, dtype, seed, a, u0)
    exact = model.with_params(**{k: float(dtype.type(v)) for k, v in model.params})
    spikes = reference.simulate(exact, a64, u064)[1]
    base = reference.bptt(exact, a64, g64, u064, spikes=spikes).params
    eps = float(np.finfo(dtype).eps)
    rng = np.random.default_rng(seed + 2)
    worst = dict.fromkeys(base, 0.0)
    for _ in range(repeats):
        moved = [x * (1 + eps * rng.choice([-1.0, 1.0], size=x.shape)) for x in (a64, g64)]
        got = reference.bptt(exact, *moved, u064, spikes=spikes).params
        for k, v in got.items():
            worst[k] = max(worst[k], rel_error(v, base[k]))
    return worst


#: The families of issue 25: name -> spec (the model grammar of :func:`ift_snn.neurons.spec.model_from_spec`).
FAMILIES: dict[str, dict] = {
    "lif": {"builtin": "lif"},
    "if": {"builtin": "if"},
    "cuba_lif": {"builtin": "cuba_lif"},
    "alif": {"builtin": "alif"},
    "alif_rho0.995": {"builtin": "alif", "params": {"rho": 0.995}},
    "resonator": {"builtin": "rf", "params": {"omega": 0.5}},
    "alpha_kernel": {"name": "alpha_kernel", "eps": "n*alpha**n", "nu": "theta*beta**n",
                     "params": {"alpha": 0.8, "beta": 0.9}},
    "n2_pole0.95": {"name": "n2_pole", "eps": "n**2*alpha**n", "nu": "theta*beta**n",
                    "params": {"alpha": 0.95, "beta": 0.9}},
    "n3_pole0.99": {"name": "n3_pole", "eps": "n**3*alpha**n/1000000", "nu": "theta*beta**n",
                    "params": {"alpha": 0.99, "beta": 0.9}},
    "dexp_0.999_0.9": {"name": "dexp", "eps": "(alpha**n - beta**n)/(alpha - beta)", "nu": "theta*rho**n",
                       "params": {"alpha": 0.999, "beta": 0.9, "rho": 0.95}},
    "reset_4_poles": {"name": "reset4", "eps": "alpha**n",
                      "nu": "theta*alpha**n + 0.3*r1**n + 0.2*r2**n + 0.1*r3**n",
                      "params": {"alpha": 0.99, "r1": 0.993, "r2": 0.996, "r3": 0.999}},
    "delayed_alpha": {"name": "delayed_alpha", "eps": "step(n - 3)*(n - 3)*alpha**(n - 3)",
                      "nu": "theta*beta**n", "params": {"alpha": 0.8, "beta": 0.9}},
    "taps": {"name": "fir12", "eps": [0.1, 0.3, 0.6, 0.9, 1.0, 0.9, 0.7, 0.5, 0.35, 0.2, 0.1, 0.05],
             "nu": "theta*0.9**n"},
    "cuba_clip": {"builtin": "cuba_lif", "u_min": -0.5, "theta_r": 0.8},
    "if_reset_zero": {"builtin": "if", "reset": "zero"},
    "lif_reset_zero": {"builtin": "lif", "reset": "zero"},
    "alpha_multi_spike": {"name": "alpha_multi_spike", "eps": "n*alpha**n", "nu": "theta*beta**n",
                          "params": {"alpha": 0.8, "beta": 0.9}, "spike": "multi"},
}


def family_model(name: str) -> NeuronModel:
    """The model of precision family ``name`` (:data:`FAMILIES`)."""
    from ..neurons.spec import model_from_spec

    if name not in FAMILIES:
        raise ValueError(f"unknown precision family {name!r}; expected one of {', '.join(FAMILIES)}")
    return model_from_spec(FAMILIES[name])


def format_precision_table(rows: list[Mapping]) -> str:
    """A Markdown table of :func:`measure` results (dicts with the fields of :class:`PrecisionResult`)."""
    lines = ["| model | dtype | T | membrane | dL/da | dL/du0 | worst dL/dp | spike rate |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        worst_p = max(r["params"].values()) if r["params"] else 0.0
        lines.append(f"| {r['name']} | {r['dtype']} | {r['T']} | {r['u']:.1e} | {r['a']:.1e} | {r['u0']:.1e} | "
                     f"{worst_p:.1e} | {r['spike_rate']:.3f} |")
    return "\n".join(lines)
