"""Hostile and careless input to the core: each test failed on the code before the hardening issue.

Names never reach generated source unchecked; compiled spike counts stay
floating point; forward names the first non-finite membrane or surrogate;
files validate like constructors; the reference BPTT is O(T) for membrane
models and refuses what cannot fit; the Trace owns its input; the kernel
cache is bounded and keyed on structure, not on surrogate constants; the
stability diagnostic counts what the adjoint carries.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import sympy as sp

import ift_snn
from ift_snn import ops
from ift_snn.neurons import surrogates
from ift_snn.backends import cpu, reference
from ift_snn.codegen.cpu import python_source
from ift_snn.codegen.cuda import cuda_source
from ift_snn.codegen.ir import build_kernel, comment_lines
from ift_snn.neurons.expressions import ExpressionError, parse_expression
from ift_snn.neurons.kernels import MAX_TAPS, KernelError
from ift_snn.neurons.models import model_from_dict, model_to_dict
from ift_snn.training.network import Network

HOSTILE_NAME = 'x(a=open("canary","w").write("pwned")) -> (lambda *q: 0) or y'

FUZZ_NAMES = [
    HOSTILE_NAME,
    'a"b',
    "a'b",
    "a\nb",
    "lif\n__import__('os').system('echo pwned')",
    "a(b)",
    "a#b",
    'a"""b',
    "",
    "A",
    "1abc",
    "lif ",
    "x" * 41,
    "déjà",
    "a\\b",
    "a\rb",
    "None",
]


# ------------------------------------------------------------------ names
@pytest.mark.parametrize("name", FUZZ_NAMES)
def test_model_names_must_be_identifiers(name):
    with pytest.raises((ValueError, TypeError), match="model name"):
        ift_snn.srm("alpha**n", "theta*alpha**n", params={"alpha": 0.8}, name=name)
    data = model_to_dict(ift_snn.lif(0.9))
    data["name"] = name
    with pytest.raises((ValueError, TypeError), match="name"):
        model_from_dict(data)


def test_hostile_network_file_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    """A saved network whose model name is Python code: refused at load, no canary written."""
    monkeypatch.chdir(tmp_path)
    net = Network([3, 4, 2], ift_snn.lif(0.9), seed=0)
    path = tmp_path / "net.npz"
    net.save(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    for m in meta["models"]:
        m["name"] = HOSTILE_NAME
    hostile = tmp_path / "hostile.npz"
    np.savez(hostile, meta=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(ValueError, match="not allowed"):
        Network.load(hostile)
    assert not (tmp_path / "canary").exists()


@pytest.mark.parametrize("field,value", [
    ("convention", "reset after decay\nimport os"),
    ("convention", 3),
    ("spike", "single\n"),
    ("reset", ["zero"]),
])
def test_other_stored_text_fields_are_validated(field, value):
    data = model_to_dict(ift_snn.lif(0.9))
    data[field] = value
    with pytest.raises((ValueError, TypeError)):
        model_from_dict(data)


@pytest.mark.parametrize("pname", ["exp", "log", "pi", "E", "math", "np", "a b", "x\ny", "lambda", "déjà",
                                   "sg_scale", "v" * 40])
def test_parameter_names_are_refused_when_unsafe(pname):
    with pytest.raises((ValueError, TypeError)):
        ift_snn.srm(f"alpha**n", "theta*beta**n", params={"alpha": 0.8, "beta": 0.9, pname: 0.5})
    data = model_to_dict(ift_snn.lif(0.9))
    data["params"].append([pname, 0.5])
    with pytest.raises((ValueError, TypeError)):
        model_from_dict(data)


def test_custom_surrogate_constant_names_are_checked():
    with pytest.raises(ValueError, match="constant name"):
        surrogates.custom("u", **{"a\nb": 1.0})


def test_comments_in_generated_source_cannot_end_the_comment():
    hostile = "x\n__import__('os').system('echo pwned')\r\nprint(1) \\\n\u2028y ??/"
    lines = comment_lines(hostile)
    assert all("\n" not in l and "\r" not in l and "\\" not in l and "?" not in l and "\u2028" not in l
               for l in lines)
    kernel = build_kernel(ift_snn.lif(0.9), "forward", "f64")
    src = python_source(kernel, header=hostile).code
    assert "\n__import__" not in src and "\nprint(1)" not in src
    compile(src, "<test>", "exec")  # still valid Python: the hostile text stayed in comments
    cu = cuda_source(kernel, header=hostile).code
    assert all(line.startswith(("//", "extern", "    ", "{", "}")) or not line for line in cu.splitlines())


def test_generated_kernel_names_come_from_identifiers_and_hashes():
    for name in ("lif", "cuba_lif", "alpha_srm"):
        model = ift_snn.get_model(name)
        for quantity in ("forward", "backward", "slayer"):
            kernel = build_kernel(model, quantity, "f32")
            assert kernel.name.startswith(f"ift_snn_{model.name}_{quantity}_f32_")
            assert kernel.name.isidentifier()


def test_stored_alpha_out_of_range_is_refused():
    data = model_to_dict(ift_snn.lif(0.9))
    data["params"] = [["alpha", 2.5], ["theta", 1.0]]
    with pytest.raises(ValueError, match="alpha=2.5"):
        model_from_dict(data)
    data = model_to_dict(ift_snn.lif(0.9))
    data["membrane"]["alpha"] = "alpha*3"
    with pytest.raises(ValueError, match="decay alpha"):
        model_from_dict(data)


# ---------------------------------------------------------- spike counts
SPIKES = ["single", "multi", 2, 3, 7]


@pytest.mark.parametrize("spike", SPIKES)
@pytest.mark.parametrize("theta,value", [(1e-19, 1.0), (1.0, 9e18), (1e-30, 5.0), (1.0, 1e300)])
def test_compiled_spike_counts_at_huge_u_over_theta(spike, theta, value):
    """math.floor returned int64 in Numba and overflowed past 2**63: counts must stay floating point."""
    model = ift_snn.lif(0.9, theta=theta, spike=spike)
    a = np.full((3, 2), value)
    compiled = ops.forward(model, a, backend="cpu").s
    numpy = ops.forward(model, a, backend="numpy").s
    np.testing.assert_allclose(compiled, numpy, rtol=1e-12)
    assert np.all(compiled > 0)


def test_printers_keep_floor_in_floating_point():
    model = ift_snn.lif(0.9, spike="multi")
    py = python_source(build_kernel(model, "forward", "f32")).code
    assert "math.floor" not in py and "np.floor" in py
    cu = cuda_source(build_kernel(model, "forward", "f32")).code
    assert "floorf(" in cu
    cu64 = cuda_source(build_kernel(model, "forward", "f64")).code
    assert "fmax(0.0, floor(" in cu64 and "(int)floor" not in cu64 and "(long long)floor" not in cu64


# ------------------------------------------------- forward checks itself
@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_forward_names_membrane_overflow(backend):
    with pytest.raises(ops.NonFiniteError, match=r"membrane overflow at step 1, neuron \(0,\)"):
        ops.forward(ift_snn.lif(0.9), np.full((5, 2), 3e38, np.float32), backend=backend)
    growing = ift_snn.srm("alpha**n", "theta*beta**n", params={"alpha": 1.5, "beta": 0.9})
    with pytest.raises(ops.NonFiniteError, match="membrane overflow at step"):
        ops.forward(growing, np.ones((2000, 3)), backend=backend)


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_forward_names_a_nan_surrogate(backend):
    model = ift_snn.lif(0.9, surrogate=surrogates.custom("log(u)"))
    a = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ops.NonFiniteError, match=r"surrogate custom\('log\(u\)'\) is nan at u = "):
        ops.forward(model, a, backend=backend)


def test_backward_overflow_does_not_blame_small_step_factors():
    model = ift_snn.lif(0.5)
    a = np.random.default_rng(0).normal(0.5, 0.5, size=(30, 4)).astype(np.float32)
    trace = ops.forward(model, a)
    g = np.full_like(a, 3e38)
    with pytest.raises(ops.GradientOverflowError, match="step factors are not the cause"):
        ops.backward(model, trace, g)


# --------------------------------------------------------------- numbers
def test_decimal_literals_are_proved_exactly():
    from ift_snn.symbolic.report import derive

    model = ift_snn.srm("alpha**n", "theta*0.9**n", params={"alpha": 0.8})
    d = derive(model, 6)  # in floating point, T=6 left a residual of 1e-16 at dL/da_0
    assert d.proved, [p.detail for p in d.proofs]
    # the kernels still print the float literal
    kernel = build_kernel(model, "backward", "f64")
    assert "0.9" in python_source(kernel).code


@pytest.mark.parametrize("text", ["1e309", "0/0", "1/0", "n*(1/0)", "-1e400*n"])
def test_non_finite_constants_are_refused(text):
    with pytest.raises(ExpressionError, match="finite|zero"):
        parse_expression(text, {"n": sp.Symbol("n")})


def test_big_endian_arrays_are_converted():
    a = np.random.default_rng(0).normal(0.4, 0.5, size=(50, 3))
    big = a.astype(">f8")
    model = ift_snn.lif(0.9)
    t_big, t = ops.forward(model, big), ops.forward(model, a)
    np.testing.assert_array_equal(t_big.s, t.s)
    g = ops.backward(model, t_big, np.ones((50, 3), ">f4").astype(">f8"))
    np.testing.assert_allclose(g.a, ops.backward(model, t, np.ones((50, 3))).a)


def test_truncate_and_taps_are_bounded():
    with pytest.raises(ValueError, match="truncate=1000000 is out of range"):
        ift_snn.srm("heaviside(n-3)*0.8**(n-3)", "theta*0.9**n", truncate=10**6)
    with pytest.raises(KernelError, match=f"at most {MAX_TAPS}"):
        ift_snn.srm(np.ones(MAX_TAPS + 1), [1.0])


def test_trace_owns_its_input():
    """a *= 3 after forward must not change later gradients."""
    rng = np.random.default_rng(0)
    a = rng.normal(0.5, 0.5, size=(50, 4))
    u0 = rng.normal(size=4)
    model = ift_snn.get_model("alpha_srm")
    trace = ops.forward(model, a, u0)
    g = np.ones_like(a)
    before = ops.backward(model, trace, g).params["alpha"]
    a *= 3
    u0 *= 3
    assert ops.backward(model, trace, g).params["alpha"] == before
    assert not trace.a.flags.writeable


def test_bptt_is_linear_in_T_for_membrane_models_and_refuses_what_cannot_fit():
    rng = np.random.default_rng(0)
    model = ift_snn.cuba_lif(0.9, 0.8)
    # 20000 steps: the old dense T x T matrices would need 3.2 GB each
    a = rng.normal(0.3, 0.5, size=(20000, 2))
    trace = ops.forward(model, a)
    exact = ops.backward(model, trace, np.ones_like(a))
    bptt = ops.backward(model, trace, np.ones_like(a), method="bptt")
    np.testing.assert_allclose(bptt.a, exact.a, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="would need .* GiB"):
        reference.bptt(ift_snn.lif(0.9), np.zeros((10**6, 64)), np.zeros((10**6, 64)))
    with pytest.raises(ValueError, match="T x T matrices"):
        reference.bptt(ift_snn.get_model("alpha_srm"), np.zeros((20000, 1)), np.zeros((20000, 1)))


# ----------------------------------------------------------------- caches
def test_surrogate_constants_are_kernel_arguments_and_the_cache_is_bounded():
    rng = np.random.default_rng(0)
    a = rng.normal(0.4, 0.5, size=(40, 3))
    base = ift_snn.lif(0.9, surrogate=surrogates.exponential(scale=0.37, width=0.41))
    ops.backward(base, ops.forward(base, a), np.ones_like(a))
    builds = cpu.CACHE_STATS["builds"]
    for scale in np.linspace(0.1, 1.5, 15):
        model = ift_snn.lif(0.9, surrogate=surrogates.exponential(scale=float(scale), width=0.41))
        trace = ops.forward(model, a)
        np.testing.assert_allclose(trace.sigma, model.sigma(trace.u), rtol=1e-12)
        got = ops.backward(model, trace, np.ones_like(a))
        want = reference.bptt(model, a, np.ones_like(a))
        np.testing.assert_allclose(got.a, want.a, rtol=1e-10, atol=1e-12)
    assert cpu.CACHE_STATS["builds"] == builds  # 15 scales, no new compile
    from ift_snn.backends import compiled

    assert all(len(cache) <= cache.maxsize for cache in compiled._compiled.values())


def test_lru_drops_the_least_recently_used():
    from ift_snn.backends.cache import LRU

    cache = LRU(2)
    cache["a"], cache["b"] = 1, 2
    assert cache["a"] == 1
    cache["c"] = 3
    assert "b" not in cache and "a" in cache and "c" in cache and len(cache) == 2


# -------------------------------------------------------------- stability
def _trace(scale, T=2000, M=64, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.2, 0.5, size=(T, M))
    g = rng.normal(size=a.shape)
    model = ift_snn.lif(0.9, surrogate=surrogates.exponential(scale=scale))
    return model, ops.forward(model, a), g


def test_stability_diagnostic_respects_truncation():
    model, trace, g = _trace(3.0, T=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = ops.backward(model, trace, g)
        cut = ops.backward(model, trace, g, truncation=5)
    assert cut.max_growth <= full.max_step_factor ** 5 * (1 + 1e-9)
    assert cut.longest_unstable_run <= 5
    assert cut.max_growth < full.max_growth


def test_stability_warns_on_real_growth_below_the_old_thresholds():
    """Surrogate scale 2, T=2000: gradients 1e4 times larger than at scale 1; the old check was silent."""
    model, trace, g = _trace(2.0)
    with pytest.warns(ops.StabilityWarning):
        grads = ops.backward(model, trace, g)
    model1, trace1, _ = _trace(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calm = ops.backward(model1, trace1, g)  # scale 1: no warning
    assert np.abs(grads.a).max() > 100 * np.abs(calm.a).max()
