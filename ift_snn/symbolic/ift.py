"""The Implicit Function Theorem on phi(u, s; a) = 0 (docs/MATH.md section 3), symbolically.

Invariant: phi(u, s; a) == 0 along the trajectory. With J = d phi/d(u, s)
in the interleaved order (u_0, s_0, u_1, ...) and J_x = d phi/dx for the
independent variables x (inputs a, parameters, u_init):

    d(u, s)/dx = -J^-1 J_x                (forward substitution, row by row)
    G = ds/da                              (the odd rows of that solution)
    dL/dx = -lambda^T J_x,  J^T lambda = dL/d(u, s) = (0, g_0, 0, g_1, ...)   (back substitution)

J is unit lower triangular for every causal model, so the IFT holds
unconditionally; :func:`check_unit_lower_triangular` says why when it is not.
The solves are substitutions over the nonzero entries, never a matrix
inverse: O(T^2) entries for a general kernel, O(T) for membrane models.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..neurons.surrogates import THETA
from .system import U_INIT, System

__all__ = ["Jacobians", "jacobians", "check_unit_lower_triangular", "NotTriangularError",
           "forward_substitution", "adjoint", "Adjoint"]


class NotTriangularError(ValueError):
    """d phi/d(u, s) is not unit lower triangular: the model is not causal as written."""


@dataclass(frozen=True, eq=False)
class Jacobians:
    """d phi/d(u, s) (2T x 2T), d phi/da (2T x T), d phi/dp (2T x P), d phi/du_init (2T x 1)."""

    dependent: sp.Matrix
    inputs: sp.Matrix
    params: sp.Matrix
    u_init: sp.Matrix
    param_names: tuple[str, ...]
    #: d phi/d x0 (2T x n) for a system built with ``state=True`` (else 2T x 0).
    state: sp.Matrix | None = None


def _diff(expr: sp.Expr, var: sp.Symbol, rules: dict) -> sp.Expr:
    d = sp.diff(expr, var)
    if d.has(sp.Derivative):
        d = d.xreplace(rules)
    return sp.expand(d)


def jacobians(system: System) -> Jacobians:
    """All partial derivatives of phi, the spike function's replaced by the surrogate."""
    rules = system.derivative_rules
    phi = system.phi
    dep = system.dependent
    J = sp.Matrix(len(phi), len(dep), lambda i, j: _diff(phi[i], dep[j], rules))
    Ja = sp.Matrix(len(phi), system.T, lambda i, j: _diff(phi[i], system.a[j], rules))
    Jp = sp.Matrix(len(phi), len(system.params), lambda i, j: _diff(phi[i], system.params[j], rules))
    Ju = sp.Matrix(len(phi), 1, lambda i, j: _diff(phi[i], U_INIT, rules))
    Js = sp.Matrix(len(phi), len(system.state), lambda i, j: _diff(phi[i], system.state[j], rules))
    return Jacobians(J, Ja, Jp, Ju, system.model.parameter_names, Js)


def check_unit_lower_triangular(J: sp.Matrix, names: tuple[sp.Symbol, ...] | None = None) -> None:
    """Raise NotTriangularError naming the first entry that breaks unit lower triangularity."""
    rows, cols = J.shape
    for i in range(rows):
        if sp.simplify(J[i, i] - 1) != 0:
            who = f" (d phi_{i} / d {names[i]})" if names else ""
            raise NotTriangularError(f"diagonal entry J[{i},{i}]{who} = {J[i, i]} is not 1")
        for j in range(i + 1, cols):
            if J[i, j] != 0 and sp.simplify(J[i, j]) != 0:
                who = f": equation {i} depends on the later variable {names[j]}" if names else ""
                raise NotTriangularError(
                    f"entry J[{i},{j}] = {J[i, j]} is above the diagonal{who}; a model must be causal "
                    "(u_n may depend on s_m only for m < n)"
                )


def _nonzero_rows(J: sp.Matrix) -> list[list[int]]:
    return [[j for j in range(i) if J[i, j] != 0] for i in range(J.rows)]


def forward_substitution(J: sp.Matrix, B: sp.Matrix) -> sp.Matrix:
    """X with J X = -B for unit lower-triangular J, row by row (causal):

    X[i, :] = -B[i, :] - sum_{j < i} J[i, j] X[j, :].
    """
    X = sp.zeros(B.rows, B.cols)
    for i, js in enumerate(_nonzero_rows(J)):
        row = -B[i, :]
        for j in js:
            row = row - J[i, j] * X[j, :]
        X[i, :] = row.applyfunc(sp.expand)
    return X


@dataclass(frozen=True, eq=False)
class Adjoint:
    """lambda (2T), dL/da (T), dL/dp {name}, dL/du_init for L = sum g_n s_n."""

    lam: tuple[sp.Expr, ...]
    grad_a: tuple[sp.Expr, ...]
    grad_params: dict[str, sp.Expr]
    grad_u_init: sp.Expr
    #: dL/dx0 by state name (x0_<name>) for a system built with ``state=True``.
    grad_state: dict[str, sp.Expr] | None = None


def adjoint(system: System, jac: Jacobians | None = None, *, expand: bool = True) -> Adjoint:
    """Back substitution lambda_i = r_i - sum_{j > i} J[j, i] lambda_j, r = (0, g_0, 0, g_1, ...).

    ``expand=False``: each value as the sum of products it is computed as (sharing the lambda_j it reads), for
    a caller that compares it as a polynomial (:mod:`.identity`); expanding every value is most of a proof's
    cost otherwise."""
    tidy = sp.expand if expand else (lambda e: e)
    jac = jac or jacobians(system)
    J = jac.dependent
    n = J.rows
    rhs = [sp.Integer(0)] * n
    for k, gk in enumerate(system.g):
        rhs[2 * k + 1] = gk
    cols = [[j for j in range(i + 1, n) if J[j, i] != 0] for i in range(n)]
    lam = [sp.Integer(0)] * n
    for i in range(n - 1, -1, -1):
        value = rhs[i]
        for j in cols[i]:
            value = value - J[j, i] * lam[j]
        lam[i] = tidy(value)

    def minus_dot(column) -> sp.Expr:  # -lambda^T column, over the column's nonzero entries
        return tidy(-sp.Add(*[lam[i] * column[i] for i in range(n) if column[i] != 0]))

    grad_a = tuple(minus_dot(jac.inputs[:, m]) for m in range(system.T))
    grad_p = {k: minus_dot(jac.params[:, p]) for p, k in enumerate(jac.param_names)}
    grad_u = minus_dot(jac.u_init)
    Js = jac.state if jac.state is not None else sp.zeros(n, 0)
    grad_x = {x.name: minus_dot(Js[:, k]) for k, x in enumerate(system.state)}
    return Adjoint(tuple(lam), grad_a, grad_p, grad_u, grad_x)


def ds_da(system: System, jac: Jacobians | None = None) -> sp.Matrix:
    """G = ds/da (T x T) by forward substitution (docs/MATH.md section 3)."""
    jac = jac or jacobians(system)
    X = forward_substitution(jac.dependent, jac.inputs)
    return X.extract(list(range(1, 2 * system.T, 2)), list(range(system.T)))


def implicit_derivative(equations, dependent, independent) -> sp.Matrix:
    """dy/dx for F(y; x) = 0 by the IFT: -(dF/dy)^-1 dF/dx (dense; for small textbook systems).

    ``equations`` and ``dependent`` are sequences of equal length; ``independent``
    a sequence of symbols. Raises ValueError when dF/dy is singular, which is
    exactly when the IFT does not apply.
    """
    F = sp.Matrix(list(equations))
    Jy = F.jacobian(list(dependent))
    Jx = F.jacobian(list(independent))
    det = sp.simplify(Jy.det())
    if det == 0:
        raise ValueError(f"dF/dy = {Jy.tolist()} is singular: the implicit function theorem does not apply")
    return (-Jy.LUsolve(Jx)).applyfunc(sp.simplify)


__all__ += ["ds_da", "implicit_derivative"]
