"""The conformance vectors of ../shared/testdata (an independent PyTorch BPTT) pin docs/MATH.md's conventions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ift_snn
from ift_snn.backends import reference
from ift_snn.neurons.surrogates import exponential

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"
CASES = json.loads((DATA / "lif_vectors.json").read_text()) if (DATA / "lif_vectors.json").exists() else {}
pytestmark = pytest.mark.skipif(not CASES, reason=f"conformance vectors not found in {DATA}")
TOL = 1e-12


def _model(p: dict) -> ift_snn.NeuronModel:
    return ift_snn.lif(
        p["alpha"], p["theta"], theta_r=p["theta_r"], reset_before_decay=p["before_decay"], spike=p["spike"],
        surrogate=exponential(p["scale"], p["width"]), reset=p["reset"], u_min=p["u_min"],
    )


def _rel(got, want):
    return np.max(np.abs(got - want)) / np.max(np.abs(want))


@pytest.fixture(scope="module")
def vectors():
    return np.load(DATA / "lif_vectors.npz")


def test_all_cases_present():
    assert len(CASES) >= 9


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_reproduces_vectors(case, vectors):
    trace = ift_snn.forward(_model(CASES[case]), vectors[f"{case}/a"])
    np.testing.assert_array_equal(trace.s, vectors[f"{case}/s"])
    assert _rel(trace.u, vectors[f"{case}/u"]) < TOL
    assert (trace.s > 0).mean() == pytest.approx(CASES[case]["spike_rate"])


@pytest.mark.parametrize("method", ["exodus", "bptt", "dense"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_exact_gradient_reproduces_vectors(case, method, vectors):
    model, p = _model(CASES[case]), CASES[case]
    a, g = vectors[f"{case}/a"], vectors[f"{case}/g"]
    if method == "dense":
        got = reference.dense_ift(model, a, g)
    else:
        got = ift_snn.backward(model, ift_snn.forward(model, a), g, method=method)
    assert _rel(got.a, vectors[f"{case}/grad_a_exact"]) < TOL
    assert got.params["alpha"] == pytest.approx(p["grad_alpha_exact"], rel=TOL)


@pytest.mark.parametrize("case", sorted(CASES))
def test_slayer_reproduces_vectors(case, vectors):
    model = _model(CASES[case])
    a, g = vectors[f"{case}/a"], vectors[f"{case}/g"]
    got = ift_snn.backward(model, ift_snn.forward(model, a), g, method="slayer")
    want = vectors[f"{case}/grad_a_slayer"]
    assert _rel(got.a, want) < TOL
    # ...and SLAYER is not the exact gradient on these spiking inputs.
    assert _rel(got.a, vectors[f"{case}/grad_a_exact"]) > 1e-3
