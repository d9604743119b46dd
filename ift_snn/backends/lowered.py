"""Numeric view of a NeuronModel for the scan backends.

Evaluates, once per model (cached; models are hashable), the filter
coefficients (b, a) of every kernel, the membrane constants alpha and rho and
the partial derivatives of all of them with respect to each parameter, which
the parameter gradients contract with the adjoint.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..kernels import Kernel
from ..models import NeuronModel

__all__ = ["Filter", "Lowered", "lower"]

Filter = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class Lowered:
    """Numbers a scan needs; ``kind`` is ``"membrane"`` or ``"srm"``."""

    model: NeuronModel
    kind: str
    alpha: float
    rho: float
    syn: Filter | None  # None when the input filter is the identity
    eps: Filter
    nu: Filter | None
    d_alpha: dict[str, float]
    d_rho: dict[str, float]
    d_syn: dict[str, Filter]  # only the parameters syn depends on
    d_eps: dict[str, Filter]
    d_nu: dict[str, Filter]
    nu0: float  # nu[0], the reset weight of the last spike
    nu_pole: float  # largest |pole| of nu: the step factor is nu_pole - nu0 sigma


def _filter(kernel: Kernel, model: NeuronModel) -> Filter:
    return kernel.coefficients(model.values)


@functools.lru_cache(maxsize=512)
def _kernel_diff(kernel: Kernel, symbol: sp.Symbol) -> Kernel:
    # Symbolic, independent of parameter values: a trained alpha reuses it every step.
    return kernel.diff(symbol)


def _d_filters(kernel: Kernel, model: NeuronModel) -> dict[str, Filter]:
    out = {}
    for name, sym in zip(model.parameter_names, model.symbols):
        if sym in kernel.parameters:
            out[name] = _filter(_kernel_diff(kernel, sym), model)
    return out


def _value(expr: sp.Expr, model: NeuronModel) -> float:
    return float(sp.N(sp.sympify(expr).subs(model.values)))


def _is_identity(f: Filter) -> bool:
    b, a = f
    return len(a) == 1 and len(b) == 1 and b[0] == 1.0 and a[0] == 1.0


@functools.lru_cache(maxsize=256)
def lower(model: NeuronModel) -> Lowered:
    """The cached numeric view of ``model``."""
    eps = _filter(model.eps, model)
    nu = _filter(model.nu, model) if model.nu is not None else None
    if nu is not None:
        from ..symbolic.recurrence import pole

        nu_pole = _value(pole(model.nu.den), model)  # the same decay the generated kernels use
        nu0 = float(nu[0][0] / nu[1][0])
    else:
        nu_pole, nu0 = 0.0, 0.0
    if model.membrane is not None:
        mem = model.membrane
        names = model.parameter_names
        syn = _filter(mem.syn, model)
        return Lowered(
            model=model,
            kind="membrane",
            alpha=_value(mem.alpha, model),
            rho=_value(mem.rho, model),
            syn=None if _is_identity(syn) else syn,
            eps=eps,
            nu=nu,
            d_alpha={k: _value(sp.diff(mem.alpha, s), model) for k, s in zip(names, model.symbols)},
            d_rho={k: _value(sp.diff(mem.rho, s), model) for k, s in zip(names, model.symbols)},
            d_syn=_d_filters(mem.syn, model),
            d_eps={},
            d_nu={},
            nu0=nu0,
            nu_pole=nu_pole,
        )
    assert nu is not None
    return Lowered(
        model=model,
        kind="srm",
        alpha=0.0,
        rho=0.0,
        syn=None,
        eps=eps,
        nu=nu,
        d_alpha={},
        d_rho={},
        d_syn={},
        d_eps=_d_filters(model.eps, model),
        d_nu=_d_filters(model.nu, model),
        nu0=nu0,
        nu_pole=nu_pole,
    )
