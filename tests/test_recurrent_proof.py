"""The recurrent layer's derivation (symbolic/recurrent_layer.py): the neurons' scans run time-outer with the
recurrent error added to g equal the IFT adjoint of the coupled system of N neurons (docs/MATH.md section 9), for
every built-in family, exodus, SLAYER and truncated; and the check fails when the scan or the adjoint is wrong."""

from __future__ import annotations

import pytest

import ift_snn
from ift_snn.cli import main
from ift_snn.symbolic import recurrent_layer
from ift_snn.symbolic.recurrent_layer import prove_recurrent

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning", "ignore::ift_snn.UnstableModelWarning")

FAST = ["lif", "lif_reset_zero", "lif_clip", "lif_multi", "lif_before_decay", "if", "cuba_lif", "alpha_srm",
        "taps4_srm"]


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("kw", [{}, {"method": "slayer"}, {"truncation": 2}], ids=["exodus", "slayer", "K2"])
def test_the_time_outer_scans_equal_the_coupled_ift_adjoint(name, kw):
    proof = prove_recurrent(ift_snn.get_model(name), 3, 2, **kw)
    assert proof.ok, proof.detail


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alif", "rf", "cuba_lif"])
def test_t4_n2_for_the_multi_state_families(name):
    for kw in ({}, {"method": "slayer"}, {"truncation": 2}):
        proof = prove_recurrent(ift_snn.get_model(name), 4, 2, **kw)
        assert proof.ok, proof.detail


def test_three_neurons():
    assert prove_recurrent(ift_snn.lif(0.8, reset="zero"), 3, 3).ok


def test_the_proof_fails_when_the_adjoint_keeps_the_reset_slayer_drops(monkeypatch):
    """SLAYER's scan against the exact adjoint (the cut made a no-op): a difference is found."""
    monkeypatch.setattr(recurrent_layer, "_cut", lambda jac, *args: jac)
    proof = prove_recurrent(ift_snn.lif(0.8), 3, 2, method="slayer")
    assert not proof.ok and "differ" in proof.detail


def test_the_proof_fails_when_the_scan_is_another_neurons(monkeypatch):
    """The scans of a LIF that resets to zero against the adjoint of one that subtracts: dL/dc differs."""
    other = recurrent_layer.derive_recurrence(recurrent_layer.exact_model(ift_snn.lif(0.8, reset="zero")))
    monkeypatch.setattr(recurrent_layer, "derive_recurrence", lambda model: other)
    proof = prove_recurrent(ift_snn.lif(0.8), 3, 2)
    assert not proof.ok and "dL/dc" in proof.detail


def test_bad_sizes_and_methods_are_refused():
    with pytest.raises(ValueError, match="1 <= N <= 4"):
        prove_recurrent(ift_snn.lif(0.8), 3, 9)
    with pytest.raises(ValueError, match="'bptt'"):
        prove_recurrent(ift_snn.lif(0.8), 3, 2, method="bptt")


def test_derive_recurrent_shows_the_coupling_and_its_proofs(capsys):
    assert main(["derive", "lif", "--T", "3", "--recurrent"]) == 0
    out = capsys.readouterr().out
    assert "a[n] = c[n] + V s[n-1]" in out and "g_j[n] <- g_j[n] + sum_i V_ij dL/da_i[n+1]" in out
    assert "IFT adjoint of the coupled system" in out and ": passed" in out.split("recurrent layer")[1]
    assert "generated kernels vs the float64 oracle" in out
