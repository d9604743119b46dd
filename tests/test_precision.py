"""Exact in float32 and float64 for every family (issue 25): kernels with close or repeated poles run in the
parallel form (docs/MATH.md section 10), measured against the hand-written float64 oracle on the same spikes,
inputs and (float32-rounded) parameters at T = 2000 (ift_snn/experiments/precision.py)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import ift_snn
from ift_snn.experiments import precision
from ift_snn.backends import reference
from ift_snn.neurons.kernels import N, Kernel, KernelError, parallel_impulse
from ift_snn.neurons.models import srm

#: The targets of issue 25 (relative, max-norm, against the oracle).
F64 = 1e-10
F32_MEMBRANE, F32_GRADIENT = 1e-5, 1e-4

FAMILIES = list(precision.FAMILIES)


def _check(r: precision.PrecisionResult, membrane: float, gradient: float) -> None:
    errors = {"u": r.u, "a": r.a, "u0": r.u0, **{f"d{k}": v for k, v in r.params.items()}}
    assert r.params, "every model has at least theta"
    assert 0.02 < r.spike_rate < 0.9, f"{r.model} barely fires ({r.spike_rate}): the check would be vacuous"
    assert r.u <= membrane, errors
    assert max(r.a, r.u0, *r.params.values()) <= gradient, errors


@pytest.mark.parametrize("name", FAMILIES)
def test_float64_every_gradient_matches_the_oracle_at_T2000(name):
    r = precision.measure(precision.family_model(name), T=2000, M=4, dtype=np.float64, backend="numpy")
    _check(r, F64, F64)
    assert r.flips == 0


@pytest.mark.parametrize("name", FAMILIES)
def test_float32_same_spikes_membrane_and_every_gradient_at_T2000(name):
    r = precision.measure(precision.family_model(name), T=2000, M=4, dtype=np.float32, backend="numpy")
    _check(r, F32_MEMBRANE, F32_GRADIENT)


@pytest.mark.parametrize("name", ["alif", "reset_4_poles", "dexp_0.999_0.9", "resonator"])
def test_float32_compiled_kernels_meet_the_same_targets(name):
    """The Numba target (what runs on the CPU) as well as the NumPy-printed one; CUDA prints the same tree
    (tests/test_gpu.py runs it where a GPU is)."""
    r = precision.measure(precision.family_model(name), T=2000, M=4, dtype=np.float32, backend="cpu")
    _check(r, F32_MEMBRANE, F32_GRADIENT)


@settings(max_examples=6, deadline=None)
@given(name=st.sampled_from(["alif", "alif_rho0.995", "reset_4_poles", "n2_pole0.95", "resonator",
                             "dexp_0.999_0.9", "delayed_alpha"]),
       seed=st.integers(0, 2**16), rate=st.sampled_from([0.05, 0.1, 0.2]))
def test_float32_on_random_inputs(name, seed, rate):
    """On random drives, float32 meets the targets; a parameter gradient whose sum cancels (ill-conditioned on
    this input: the float64 oracle's dL/dp moves by more than 1e-5 when a and g move by one float32 rounding,
    precision.sensitivity) may exceed 1e-4 by its condition, no more: err32 <= max(1e-4, 10 sensitivity), at
    most 1e-3; float64 within 1e-10 there. Found unseeded: the resonator's dL/drho at seed 329, rate 0.1,
    2.6e-4 in float32 (its sensitivity 0.8e-4..4.5e-4)."""
    model = precision.family_model(name)
    a = precision.drive(model, 2000, 3, seed=seed, rate=rate, backend="numpy")
    r = precision.measure(model, dtype=np.float32, seed=seed, a=a, backend="numpy")
    assert r.u <= F32_MEMBRANE and max(r.a, r.u0) <= F32_GRADIENT, r
    if max(r.params.values()) > F32_GRADIENT:
        r64 = precision.measure(model, dtype=np.float64, seed=seed, a=a, backend="numpy")
        cond = precision.sensitivity(model, dtype=np.float32, seed=seed, a=a)
        for k, err in r.params.items():
            assert r64.params[k] <= F64, (k, r64)
            assert err <= min(1e-3, max(F32_GRADIENT, 10 * cond[k])), (k, err, cond[k], r)


def test_the_cancelling_resonator_case_is_within_its_condition():
    """The case the random test found (see there), pinned: float32 dL/drho 2.6e-4 where moving a and g by one
    float32 rounding moves the float64 oracle's dL/drho by 1e-4 or more (ill-conditioned: a cancelling sum),
    while its dL/dtheta moves by about 1e-6. (The float64 run's own error is no measure of the condition: 2.7e-13
    on one machine, 2.9e-14 on another, with NumPy's SIMD functions chosen per CPU.)"""
    model = precision.family_model("resonator")
    a = precision.drive(model, 2000, 3, seed=329, rate=0.1, backend="numpy")
    r32 = precision.measure(model, dtype=np.float32, seed=329, a=a, backend="numpy")
    r64 = precision.measure(model, dtype=np.float64, seed=329, a=a, backend="numpy")
    cond = precision.sensitivity(model, dtype=np.float32, seed=329, a=a)
    assert cond["rho"] > 1e-5 and cond["theta"] < 1e-5  # ill-conditioned in rho, not in theta
    assert max(r64.params.values()) <= F64
    assert F32_GRADIENT < r32.params["rho"] <= 10 * cond["rho"]


def test_slayer_float32_multi_pole():
    r = precision.measure(precision.family_model("reset_4_poles"), T=2000, M=4, dtype=np.float32,
                          backend="numpy", method="slayer")
    _check(r, F32_MEMBRANE, F32_GRADIENT)


def test_same_spike_oracle_is_the_oracle_where_no_spike_flips():
    """Run on its own spikes the oracle gives what it gives without them (the harness changes nothing else)."""
    model = precision.family_model("alif")
    a = precision.drive(model, 300, 3, backend="numpy")
    g = np.random.default_rng(1).normal(size=a.shape)
    free = reference.bptt(model, a, g)
    pinned = reference.bptt(model, a, g, spikes=free.s)
    assert np.array_equal(free.u, pinned.u) and np.array_equal(free.a, pinned.a)
    assert free.params == pinned.params
    with pytest.raises(ValueError, match="spikes have shape"):
        reference.simulate(model, a, spikes=free.s[:-1])


# ------------------------------------------------------------------ the parallel form itself
@pytest.mark.parametrize("expr, sections, size", [
    ("alpha**n", None, 1),  # one pole: the direct form, which is the same thing
    ("theta*alpha**n + beta*rho**n", 2, 2),
    ("n**2*alpha**n", 1, 3),  # a repeated pole: one cascade of three sections
    ("rho**n*cos(omega*n)", 1, 2),  # a conjugate pair: one rotation
    ("n*rho**n*sin(omega*n + phi)", 1, 4),
    ("theta*alpha**n + 0.3*r1**n + 0.2*r2**n + 0.1*r3**n", 4, 4),
    ("step(n - 3)*(n - 3)*alpha**(n - 3)", 1, 6),  # the sections behind four leading taps
    ("cos(0.3*n)*cos(0.5*n)*0.9**n", 2, 4),  # a product of resonators: two pairs
])
def test_parallel_form_structure_and_impulse(expr, sections, size):
    from ift_snn.neurons.expressions import parse_expression

    names = {k: sp.Symbol(k, positive=True) for k in ("alpha", "beta", "rho", "omega", "phi", "theta", "r1", "r2", "r3")}
    k = Kernel.closed_form(parse_expression(expr, {"n": N, **names}, what="kernel"))
    assert k.size == size
    if sections is None:
        assert k.parallel is None
        return
    assert len(k.parallel.sections) == sections
    point = {s: v for s, v in zip(sorted(k.parameters, key=str), (0.93, 0.85, 0.97, 0.4, 0.3, 0.95, 0.99, 0.92))}
    assert np.allclose(parallel_impulse(k.parallel, 60, point), k.impulse(60, point), rtol=1e-12, atol=1e-12)


def test_parallel_form_separates_four_close_poles_exactly():
    """Four poles within 0.01: the direct form's coefficients are products of the poles; the parallel form keeps
    each pole and its amplitude as written."""
    m = precision.family_model("reset_4_poles")
    form = m.nu.parallel
    assert sorted(sp.sstr(s.pole) for s in form.sections) == ["alpha", "r1", "r2", "r3"]
    assert {sp.sstr(s.coeffs[0]) for s in form.sections} == {"theta", "0.300000000000000", "0.200000000000000",
                                                             "0.100000000000000"}


def test_derive_shows_the_parallel_form(capsys):
    from ift_snn.cli import main

    assert main(["derive", "alif", "--T", "2"]) == 0
    out = capsys.readouterr().out
    assert "run in the parallel form (2 state values: real pole alpha; real pole rho)" in out
    assert "run in the direct form" in out  # eps = alpha**n: one pole


def test_builtin_lif_kernels_are_unchanged_by_the_parallel_form():
    """One pole: the same transposed direct form II as before, and no widened state."""
    from ift_snn.codegen.ir import build_kernel

    for q in ("forward", "backward", "slayer"):
        assert build_kernel(ift_snn.lif(0.9), q, "f32").wide == ()
    assert ift_snn.lif(0.9).eps.parallel is None and ift_snn.lif(0.9).nu.parallel is None


def test_float32_kernels_widen_state_only_for_the_parallel_form():
    from ift_snn.codegen.cuda import generate_cuda

    code = generate_cuda(ift_snn.get_model("alif"), "backward", "f32").code
    assert "double d_next" in code and "double acc_alpha" in code
    lif = generate_cuda(ift_snn.lif(0.9), "backward", "f32").code
    assert "float d_next" in lif and "double acc_alpha" in lif  # the sums are float64 in every float32 kernel


# ------------------------------------------------------------------ the four defects of issue 25
def test_a_delayed_step_squared_by_the_membrane_form_is_one_step():
    m = srm("step(n)*alpha**n", "theta*alpha**n", params={"alpha": 0.9}, u_min=-0.5)
    a = np.random.default_rng(0).normal(0.3, 1, (50, 3))
    trace = ift_snn.forward(m, a)
    np.testing.assert_allclose(trace.u, reference.simulate(m, a)[0], rtol=1e-12, atol=1e-12)


def test_complex_exponentials_are_written_as_cos_and_sin():
    rho, om = sp.symbols("rho om", positive=True)
    m = srm((rho**N * sp.cos(om * N)).rewrite(sp.exp), "theta*rho**n", params={"rho": 0.9, "om": 0.3})
    plain = srm("rho**n*cos(om*n)", "theta*rho**n", params={"rho": 0.9, "om": 0.3})
    a = np.random.default_rng(0).normal(0.3, 1, (40, 2))
    np.testing.assert_allclose(ift_snn.forward(m, a).u, ift_snn.forward(plain, a).u, rtol=1e-13, atol=1e-13)
    with pytest.raises(KernelError, match="is not real: its imaginary part"):
        srm(sp.exp(sp.I * om * N) * rho**N, "theta*rho**n", params={"rho": 0.9, "om": 0.3})


def test_truncate_is_applied_or_refused_never_ignored():
    with pytest.raises(ValueError, match="truncate=8 has nothing to truncate"):
        srm("alpha**n", "theta*alpha**n", params={"alpha": 0.9}, truncate=8)
    m = srm("rho**n/(n + 1)", "theta*0.9**n", params={"rho": 0.9}, truncate=8)
    assert m.eps.order == 0 and len(m.eps.num) == 8


def test_stability_diagnostic_of_a_multi_pole_reset_kernel_reads_its_largest_pole():
    """The decay that multiplies the carried adjoint is the largest |pole| of the parallel form (it was the
    bound sum |a_i| of the direct form's coefficients for three or more poles: 6.47 for four poles near 1), and
    the step factor the diagnostics read is that decay minus nu[0] sigma."""
    from ift_snn.symbolic.filters import decay
    from ift_snn.symbolic.recurrence import derive_recurrence

    m = precision.family_model("reset_4_poles")
    assert float(decay(m.nu).subs(m.values)) == pytest.approx(0.999, abs=1e-15)
    c = next(rhs for lhs, rhs in derive_recurrence(m).backward.assignments if lhs.name == "c")
    sigma = sp.Symbol("sigma", real=True)
    assert float(c.subs(m.values).subs(sigma, 0)) == pytest.approx(0.999, abs=1e-15)
    assert float(c.subs(m.values).subs(sigma, 1)) == pytest.approx(0.999 - 1.6, abs=1e-12)  # nu[0] = theta + 0.6


@pytest.mark.parametrize("scale, grows", [(1.0, False), (2.0, True)])
def test_stability_warning_of_a_multi_pole_reset_fires_where_the_adjoint_grows(scale, grows):
    """Four reset poles within 0.01 (the issue's kernel): at scale 1 the oracle's largest |dL/da| is about 16
    and the backward stays quiet (it warned of 200 consecutive steps above 1 when the decay was read as
    sum |a_i| = 6.47); at scale 2 the exact gradient grows to about 1e5 and the warning fires, its measured
    growth of the same order as the oracle's."""
    import warnings

    from ift_snn.symbolic.stability import StabilityWarning
    from ift_snn.neurons.surrogates import exponential

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the constructor's warning about the explicit scale is not this test's
        m = srm("alpha**n", "theta*alpha**n + 0.3*r1**n + 0.2*r2**n + 0.1*r3**n",
                params={"alpha": 0.99, "r1": 0.993, "r2": 0.996, "r3": 0.999}, surrogate=exponential(scale=scale))
    a = precision.drive(m, 2000, 4, backend="numpy")
    g = np.random.default_rng(1).normal(size=a.shape)
    oracle = np.abs(reference.bptt(m, a, g).a).max()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grads = ift_snn.backward(m, ift_snn.forward(m, a), g)
    fired = any(issubclass(w.category, StabilityWarning) for w in caught)
    assert fired == grows
    if grows:
        assert oracle > 1e4 and grads.max_growth > 1e4
    else:
        assert oracle < 100 and grads.max_growth < 100 and grads.longest_unstable_run < 20


def test_bench_precision_cli(tmp_path, capsys, monkeypatch):
    import json

    from ift_snn.cli import main

    monkeypatch.setattr(precision, "FAMILIES", {k: precision.FAMILIES[k] for k in ("lif", "alif")})
    out = tmp_path / "precision.json"
    assert main(["bench", "--precision", "--T", "400", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| alif | float32 | 400 |" in text and "targets (float64 1e-10; float32 membrane 1e-5, gradients 1e-4): met" in text
    rows = json.loads(out.read_text())["precision"]
    assert [(r["name"], r["dtype"]) for r in rows] == [("lif", "float64"), ("lif", "float32"), ("alif", "float64"),
                                                        ("alif", "float32")]
    assert main(["bench", "--precision", "--peers"]) == 2
    assert "--precision measures neurons of its own" in capsys.readouterr().err


def test_a_kernel_with_two_or_more_poles_and_no_parallel_form_is_refused():
    """A transfer function given by its coefficients alone has poles nobody separated: refused naming it, never
    run in the direct form."""
    with pytest.raises(KernelError, match="has 2 poles but no parallel form"):
        Kernel(expr=None, taps=None, num=(sp.Integer(1),), den=(sp.Integer(1), sp.Float(-1.9), sp.Float(0.9025)))
    assert Kernel(expr=None, taps=None, num=(sp.Integer(1),), den=(sp.Integer(1), sp.Float(-0.9))).size == 1


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["alif", "reset_4_poles", "dexp_0.999_0.9", "resonator", "n2_pole0.95", "lif"])
def test_float32_cuda_kernels_meet_the_same_targets(name):
    """The CUDA kernels (float64 states declared double, locals read from them double) on a GPU."""
    pytest.importorskip("cupy")
    for dtype, membrane, gradient in ((np.float64, F64, F64), (np.float32, F32_MEMBRANE, F32_GRADIENT)):
        r = precision.measure(precision.family_model(name), T=2000, M=4, dtype=dtype, backend="cupy")
        _check(r, membrane, gradient)


def test_equal_poles_of_a_divided_difference_are_refused_by_name():
    """(alpha^n - beta^n)/(alpha - beta) is 0/0 at alpha = beta: a clear error at construction and in
    with_params (a training step), never a NaN in the scans."""
    m = srm("(alpha**n - beta**n)/(alpha - beta)", "theta*alpha**n", params={"alpha": 0.9, "beta": 0.8})
    with pytest.raises(KernelError, match=r"is undefined at alpha = 0.9, beta = 0.9"):
        m.with_params(beta=0.9)
