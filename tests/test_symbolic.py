"""The symbolic IFT engine: hand-derived closed forms, structure, proofs, numerics, idiff."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import ift_snn
from ift_snn.neurons.models import param_symbol
from ift_snn.neurons.surrogates import THETA
from ift_snn.symbolic import ift
from ift_snn.symbolic.recurrence import Recurrence, derive_recurrence, prove
from ift_snn.symbolic.report import derive
from ift_snn.experiments.verify import verify_numerically
from ift_snn.symbolic.system import build_system

ALPHA = param_symbol("alpha")


@pytest.mark.parametrize("before", [False, True])
def test_lif_product_formula(before):
    """docs/MATH.md section 3: dS[n]/da[m] = sigma_n prod_{k=m}^{n-1} (alpha - theta_r sigma_k)."""
    T = 5
    model = ift_snn.lif(0.9, reset_before_decay=before)
    system = build_system(model, T)
    G = ift.ds_da(system)
    rho = ALPHA * THETA if before else THETA  # before decay: the factor is alpha (1 - theta sigma)
    for n in range(T):
        for m in range(T):
            if n < m:
                want = 0
            else:
                want = system.sigma[n] * sp.prod([ALPHA - rho * system.sigma[k] for k in range(m, n)])
            assert sp.expand(G[n, m] - want) == 0, (n, m, G[n, m])


def test_forward_substitution_equals_a_dense_solve():
    model = ift_snn.cuba_lif(0.9, 0.7)
    system = build_system(model, 3)
    jac = ift.jacobians(system)
    X = ift.forward_substitution(jac.dependent, jac.inputs)
    dense = -jac.dependent.LUsolve(jac.inputs)
    assert (X - dense).applyfunc(sp.simplify) == sp.zeros(*X.shape)


@pytest.mark.parametrize("name", sorted(ift_snn.BUILTIN_MODELS))
def test_jacobian_is_unit_lower_triangular(name):
    system = build_system(ift_snn.get_model(name), 4)
    ift.check_unit_lower_triangular(ift.jacobians(system).dependent, system.dependent)


def test_non_triangular_jacobian_is_reported_with_the_reason():
    u0, s0, u1, s1 = sp.symbols("u_0 s_0 u_1 s_1")
    J = sp.Matrix([[1, 0, 0, 2], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    with pytest.raises(ift.NotTriangularError, match="later variable s_1"):
        ift.check_unit_lower_triangular(J, (u0, s0, u1, s1))
    with pytest.raises(ift.NotTriangularError, match="diagonal"):
        ift.check_unit_lower_triangular(sp.Matrix([[2, 0], [0, 1]]))


# Every built-in's proofs for T = 2..6 (exodus, SLAYER, truncated) are re-run by
# test_derive_cli.py::test_golden_derivations_are_up_to_date, which compares them with the stored,
# all-passing derivations/<model>/recurrence.json; here only models that are not built in.
@pytest.mark.parametrize("model", [ift_snn.srm("0.9**n*cos(0.3*n)", "theta*0.8**n"),
                                   ift_snn.srm("step(n - 2)*alpha**(n - 2)", "theta*beta**n + delta(n - 1)",
                                               params={"alpha": 0.8, "beta": 0.9})],
                         ids=["decimal_resonator", "delay_and_tap"])
def test_recurrence_is_proved_for_T_2_to_5(model):
    rec = derive_recurrence(model)
    for T in range(2, 6):
        proof = prove(model, T, rec)
        assert proof.ok, proof.detail


def test_a_wrong_recurrence_fails_the_proof():
    """The proof has teeth: SLAYER's scan used as if it were exact is refuted."""
    model = ift_snn.lif(0.9)
    rec = derive_recurrence(model)
    wrong = Recurrence(model, rec.kind, rec.kernels, rec.forward, rec.slayer, rec.slayer, rec.step_factor,
                       rec.dropped)
    proof = prove(model, 3, wrong)
    assert not proof.ok and "differ" in proof.detail


@pytest.mark.parametrize("name", sorted(ift_snn.BUILTIN_MODELS))
def test_recurrence_equals_the_oracle_numerically(name):
    d = derive(ift_snn.get_model(name), T=3)
    check = verify_numerically(d, T=120, M=8, seeds=2)
    assert check.forward < 1e-10
    assert check.grad_a < 1e-10
    assert check.grad_u_init < 1e-10
    assert check.slayer_vs_oracle < 1e-10
    assert check.slayer_vs_exact > 1e-3  # spikes happen, so SLAYER is not exact


def test_reset_to_zero_step_factor_is_state_dependent():
    rec = derive_recurrence(ift_snn.lif(0.9, reset="zero"))
    s, u, sigma = sp.symbols("s u sigma", real=True)
    assert sp.expand(rec.step_factor - ALPHA * (1 - s - u * sigma)) == 0


def test_textbook_ift_matches_idiff():
    x, y = sp.symbols("x y")
    for F in (x**2 + y**2 - 1, x * sp.exp(y) + y**3 - x, sp.sin(x * y) + y - x**2):
        got = ift.implicit_derivative([F], [y], [x])[0, 0]
        assert sp.simplify(got - sp.idiff(F, y, x)) == 0


def test_singular_jacobian_is_refused():
    x, y = sp.symbols("x y")
    with pytest.raises(ValueError, match="singular"):
        ift.implicit_derivative([x**2 - 1], [y], [x])


def test_user_kernel_without_recurrence_truncates_when_asked():
    with pytest.raises(ift_snn.NoRecurrenceError, match="1/\\(n \\+ 1\\)"):
        ift_snn.srm("1/(n+1)", "theta*beta**n", params={"beta": 0.8})
    model = ift_snn.srm("1/(n+1)", "theta*beta**n", params={"beta": 0.8}, truncate=6)
    assert model.eps.impulse(8, model.values) == pytest.approx([1 / (k + 1) for k in range(6)] + [0, 0])
    d = derive(model, T=4)
    assert d.proved


def test_parameter_gradients_of_the_ift_equal_the_oracle():
    """dL/dp from the symbolic adjoint, evaluated, equals the oracle's dL/dp."""
    from ift_snn.backends import reference

    model = ift_snn.lif(0.85, 1.0, theta_r=0.7)
    T = 5
    system = build_system(model, T)
    adj = ift.adjoint(system)
    rng = np.random.default_rng(0)
    a, g = rng.normal(0.5, 0.5, (T, 1)), rng.normal(size=(T, 1))
    want = reference.bptt(model, a, g)
    subs = dict(model.values)
    subs.update({sym: want.u[n, 0] for n, sym in enumerate(system.u)})
    subs.update({sym: want.s[n, 0] for n, sym in enumerate(system.s)})
    subs.update({sym: g[n, 0] for n, sym in enumerate(system.g)})
    subs.update({sym: a[n, 0] for n, sym in enumerate(system.a)})
    sig = model.sigma(want.u[:, 0])
    subs.update({sym: sig[n] for n, sym in enumerate(system.sigma)})
    subs[sp.Symbol("u_init", real=True)] = 0.0
    for name in model.parameter_names:
        assert float(adj.grad_params[name].subs(subs)) == pytest.approx(want.params[name], rel=1e-12)
    for n in range(T):
        assert float(adj.grad_a[n].subs(subs)) == pytest.approx(want.a[n, 0], rel=1e-12)
