"""The continuous-time derivation: SymPy proofs of the tau = 2 tau_s closed forms, the report, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from ift_snn.symbolic import events as sym


@pytest.fixture(scope="module")
def derivation():
    return sym.derive_events()


def test_every_closed_form_is_proved_equal_to_the_implicit_derivative(derivation):
    claims = [p.claim for p in derivation.proofs]
    assert derivation.proved, [p for p in derivation.proofs if not p.ok]
    for needle in ("dt_k/dA", "dt_k/dB", "dt_k/dt_m", "solves c z^2", "tau (B/z - A/z^2)"):
        assert any(needle in c for c in claims), needle
    assert len(claims) >= 8


def test_the_proof_machinery_rejects_a_wrong_closed_form():
    # a wrong dt/dB (sign flipped) must leave a nonzero remainder modulo x^2 = B^2 - 4 A c
    ok, detail = sym._zero_mod_quadratic(sym.tau / sym.x - (-sym.tau / sym.x))
    assert not ok and "remainder" in detail
    ok, _ = sym._zero_mod_quadratic(sym.x**2 - sym.B**2 + 4 * sym.A * sym.cq)
    assert ok


def test_implicit_derivative_is_minus_du_dx_over_du_dt(derivation):
    u = derivation.u
    for name, var in (("w_1", sym.w1), ("t_1", sym.t1), ("t_m", sym.tm)):
        want = -sp.diff(u, var) / sp.diff(u, sym.t)
        assert sp.simplify(derivation.implicit[name] - want) == 0


def test_numeric_check_agrees_with_central_differences(derivation):
    assert derivation.numeric and derivation.numeric_ok
    assert all(n.rel_error < 1e-6 for n in derivation.numeric)
    names = " ".join(n.quantity for n in derivation.numeric)
    assert "tau=3 tau_s" in names and "dt_k/dt_m = dtheta z_m/(tau x)" in names


def test_kernel_coefficients_are_the_reverse_scan_of_math_section_7():
    k = sym.kernel_expressions()
    tau, tau_s, dtheta = sym.tau, sym.tau_s, sym.dtheta
    c = tau * tau_s / (tau - tau_s)
    assert sp.simplify(k["total"] - (sym.g + dtheta / tau * sym.P_tau)) == 0
    assert sp.simplify(k["grad_w"] - (-c * (sym.P_tau - sym.P_s))) == 0
    assert sp.simplify(k["grad_t_in"] - c * sym.w * (-sym.P_tau / tau + sym.P_s / tau_s)) == 0
    # the critical point zeroes du/ds
    crit = k["du_local"].subs(sym.s, k["s_crit"])
    vals = {sym.I: 1.3, sym.V: 2.1, tau: 3.0, tau_s: 1.0}
    assert abs(float(crit.subs(vals))) < 1e-12


def test_report_and_fingerprint(derivation):
    text = sym.render_events_text(derivation)
    for needle in ("u(t) =", "threshold condition", "dt_k/dw_1 =", "[proved]", "finite differences",
                   "all proofs passed", "z_k = 2*A/(B + x)"):
        assert needle in text, needle
    assert "FAILED" not in text and "DISAGREES" not in text
    assert len(derivation.fingerprint) == 64
    assert sym.derive_events(numeric=False).fingerprint == derivation.fingerprint


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="unknown name 'tau'"):
        sym.derive_events({"tau": 2.0})
    with pytest.raises(ValueError, match="nan"):
        sym.derive_events({"w_1": float("nan")})


def test_cli_derive_events_lif(capsys):
    from ift_snn.cli import main

    assert main(["derive", "events_lif"]) == 0
    out = capsys.readouterr().out
    assert "all proofs passed" in out and "dt_k/dt_m" in out
    np.testing.assert_(out.count("[proved]") >= 8)
