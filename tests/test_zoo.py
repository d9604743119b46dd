"""The zoo (ift_snn/experiments/zoo.py): every neuron through derive (proof), codegen (CUDA to PTX, NumPy and Numba run)
and gradients against the independent float64 BPTT oracle, from Python and from the command line.

Timings of each member's first call are a benchmark (``ift-snn bench --zoo``), not a test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ift_snn import ops
from ift_snn.backends import reference
from ift_snn.cli import main
from ift_snn.codegen.cuda import compile_ptx, cuda_source
from ift_snn.codegen.ir import QUANTITIES, build_kernel
from ift_snn.neurons.models import BUILTIN_MODELS, get_model, model_to_dict
from ift_snn.neurons.spec import save_model_file
from ift_snn.symbolic.recurrence import derive_recurrence, prove
from ift_snn.experiments.zoo import ZOO, zoo_model

from .conftest import rel_err

NAMES = sorted(ZOO)


def test_the_zoo_has_at_least_twelve_distinct_neurons():
    structures = {zoo_model(name).structure for name in ZOO}
    assert len(ZOO) >= 12 and len(structures) == len(ZOO)


@pytest.mark.parametrize("name", NAMES)
def test_zoo_member_is_proved(name):
    """exodus and SLAYER scans equal the IFT adjoint symbolically (T = 3), and truncated (K = 2, T = 3)."""
    model = zoo_model(name)
    rec = derive_recurrence(model)
    for proof in (prove(model, 3, rec), prove(model, 3, rec, method="slayer"), prove(model, 3, rec, truncation=2)):
        assert proof.ok, f"{name} {proof.label}: {proof.detail}"


def _case(name: str, T: int = 48, M: int = 6):
    model = zoo_model(name)
    rng = np.random.default_rng(sorted(ZOO).index(name))
    a = rng.normal(0.35, 0.6, (T, M))
    g = rng.normal(size=(T, M))
    u0 = rng.normal(0.0, 0.3, M)
    return model, a, g, u0


def _assert_equals_oracle(model, a, g, u0, backend: str, method: str = "exodus", truncation=None, rtol=1e-10):
    trace = ops.forward(model, a, u0, backend=backend)
    grads = ops.backward(model, trace, g, method=method, truncation=truncation)
    oracle = (reference.slayer if method == "slayer" else reference.bptt)(model, a, g, u0, truncation=truncation)
    assert np.array_equal(trace.s, oracle.s) and rel_err(trace.u, oracle.u) < 1e-10
    assert np.any(trace.s > 0), "the input makes no spike: the test would not see the reset"
    assert rel_err(grads.a, oracle.a) < rtol, f"dL/da ({backend}, {method})"
    assert rel_err(grads.u0, oracle.u0) < rtol, f"dL/du0 ({backend}, {method})"
    scale = max(abs(v) for v in oracle.params.values())
    for k, want in oracle.params.items():
        assert abs(grads.params[k] - want) <= rtol * scale, f"dL/d{k} ({backend}, {method}): {grads.params[k]} vs {want}"


@pytest.mark.parametrize("name", NAMES)
def test_zoo_generated_numpy_gradients_equal_the_oracle(name):
    """The generated NumPy kernels: exact (exodus, also truncated) and SLAYER, every gradient, 1e-10."""
    model, a, g, u0 = _case(name)
    _assert_equals_oracle(model, a, g, u0, "numpy")
    _assert_equals_oracle(model, a, g, u0, "numpy", truncation=7)
    _assert_equals_oracle(model, a, g, u0, "numpy", method="slayer")


#: Members run through the compiled CPU (Numba) kernels too: a slow reset kernel, the resonators (trigonometric
#: coefficients, one of order 8) and a tap list (a ring buffer with a table). The Numba and NumPy printers print
#: the same loop tree (codegen/tree.py) and every member runs on the generated NumPy; multi-spike and reset to
#: zero run compiled in test_compiled.py, ring buffers in test_rings.py (a 24-tap list: a table and a shifting
#: adjoint). Each compile is 1-4 s.
COMPILED = ("alif", "resonate_and_fire", "damped_chirp", "fir12")


@pytest.mark.parametrize("name", COMPILED)
def test_zoo_generated_cpu_gradients_equal_the_oracle(name):
    """The compiled CPU (Numba) kernels, float64, every gradient at 1e-10."""
    model, a, g, u0 = _case(name)
    _assert_equals_oracle(model, a, g, u0, "cpu")


def test_every_zoo_kernel_compiles_to_ptx():
    """forward, backward and SLAYER of every member, float32 (float64 differs only in the type names and
    the math functions' suffix; the built-ins compile in both, rf's trigonometry included, in
    test_codegen.py::test_every_generated_cuda_source_compiles, as do members of a built-in's structure),
    compiled as one unit (names are distinct hashes) for sm_80."""
    builtins = {get_model(b).structure for b in BUILTIN_MODELS}
    own = [name for name in NAMES if zoo_model(name).structure not in builtins]
    assert len(own) >= 10
    sources = [cuda_source(build_kernel(zoo_model(name), q, "f32")) for name in own for q in QUANTITIES]
    unit = dataclasses.replace(sources[0], name="ift_snn_zoo", code="\n\n".join(s.code for s in sources))
    ptx = compile_ptx(unit, "sm_80")
    for s in sources:
        assert f".entry {s.name}(" in ptx


#: Members derived from the command line (derive's numeric check against the oracle takes 1-3 s each): one
#: of each kind of kernel; every member goes through codegen from its model file.
CLI_DERIVE = ("resonate_and_fire", "delayed_alpha", "fir12")


@pytest.mark.parametrize("name", NAMES)
def test_zoo_member_from_the_command_line(name, tmp_path, capsys):
    """The same neuron written as a model file: codegen prints the kernels Python builds (from the spec
    and from the stored form); for one member of each kind of kernel, derive proves it and checks it
    against the oracle (exit 0)."""
    model = zoo_model(name)
    path = tmp_path / f"{name}.toml"
    save_model_file(ZOO[name], path)
    if name in CLI_DERIVE:
        assert main(["derive", "--model-file", str(path), "--T", "2"]) == 0
        out = capsys.readouterr().out
        assert "passed" in out and "FAILED" not in out
    assert main(["codegen", "--model-file", str(path), "--target", "numpy", "--quantity", "backward"]) == 0
    assert build_kernel(model, "backward", "f32").name in capsys.readouterr().out
    stored = tmp_path / f"{name}.json"
    save_model_file(model_to_dict(model), stored)
    assert main(["codegen", "--model-file", str(stored), "--quantity", "forward"]) == 0
    assert build_kernel(model, "forward", "f32").name in capsys.readouterr().out


def test_models_of_one_structure_with_different_values_in_one_process():
    """Kernels and derived scans are shared by every model of a structure; each model's own parameter values
    must reach every term (the dL/dp path through an initial membrane once used the first model's values)."""
    rng = np.random.default_rng(3)
    a, g, u0 = rng.normal(0.35, 0.6, (48, 6)), rng.normal(size=(48, 6)), rng.normal(0.0, 0.3, 6)
    for omega in (0.4, 0.5, 0.9):
        _assert_equals_oracle(zoo_model("resonate_and_fire").with_params(omega=omega), a, g, u0, "numpy")
