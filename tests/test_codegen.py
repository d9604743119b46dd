"""Printers (exact-string snapshots), kernel names, CUDA compilation without a GPU, inspectability."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import ift_snn
from ift_snn.backends import reference
from ift_snn.codegen import tree
from ift_snn.codegen.cpu import compile_numba, compile_numpy, numba_available, numpy_source, python_source
from ift_snn.codegen.cuda import KernelSource, compile_ptx, cuda_source, generate_cuda, nvrtc_available
from ift_snn.codegen.ir import CodegenError, build_kernel
from ift_snn.codegen.printers import cuda_code, numpy_code, python_code
from ift_snn.neurons.surrogates import SURROGATES, THETA, U
from ift_snn.symbolic.system import U_INIT

GOLDEN = Path(__file__).resolve().parents[1] / "derivations"
x = sp.Symbol("x", real=True)
HAVE_COMPILER = nvrtc_available() or bool(__import__("shutil").which("nvcc"))


@pytest.mark.parametrize("expr,f32,f64,py", [
    (sp.exp(-2 * x) / THETA, "expf(-2*x)/theta", "exp(-2*x)/theta", "math.exp(-2.0*x)/theta"),
    (sp.Float(0.5) * x, "0.5F*x", "0.5*x", "0.5*x"),
    (x**2 / THETA**3, "(x*x)/(theta*theta*theta)", "(x*x)/(theta*theta*theta)", "(x*x)/(theta*theta*theta)"),
    (x**-2, "(1.0F/(x*x))", "(1.0/(x*x))", "(1.0/(x*x))"),
    (sp.Heaviside(x - THETA, 1), "((float)(-theta + x >= 0))", "((double)(-theta + x >= 0))",
     "((-theta + x >= 0) * 1.0)"),
    (sp.Abs(x), "fabsf(x)", "fabs(x)", "abs(x)"),
    (sp.Max(sp.floor(x / THETA), 0), "fmaxf(0.0F, floorf(x/theta))", "fmax(0.0, floor(x/theta))",
     "max(0.0, np.floor(x/theta))"),
    (sp.Piecewise((1 - sp.Abs(x), sp.Abs(x) < 1), (0, True)),
     "(((float)(fabsf(x) < 1))*(1 - fabsf(x)))", "(((double)(fabs(x) < 1))*(1 - fabs(x)))",
     "((((abs(x) < 1.0)) * 1.0)*(1.0 - abs(x)))"),
])
def test_printer_snapshots(expr, f32, f64, py):
    assert cuda_code(expr, "f32") == f32
    assert cuda_code(expr, "f64") == f64
    assert python_code(expr) == py


def test_piecewise_chain_becomes_exclusive_masks():
    expr = sp.Piecewise((1, x < 0), (2, x < 1), (3, True))
    py = python_code(expr)
    for value in (-0.5, 0.5, 1.5):  # the printed Python evaluates like the expression itself
        assert eval(py, {"math": __import__("math")}, {"x": value}) == float(expr.subs(x, value))  # noqa: S307
    code = cuda_code(expr, "f32")
    assert "?" not in code
    assert code == ("(((float)(x < 0))*(1) + ((float)(x >= 0 && x < 1))*(2) + ((float)(x >= 0 && x >= 1))*(3))")


y = sp.Symbol("y", real=True)


@pytest.mark.parametrize("expr,f32,f64", [
    (sp.exp(-2 * x) / THETA, "np.exp(-np.float32(2.0)*x)/theta", "np.exp(-2.0*x)/theta"),
    (sp.Max(x, 0, y), "np.maximum(np.maximum(np.float32(0.0), x), y)", "np.maximum(np.maximum(0.0, x), y)"),
    (sp.Min(sp.Abs(x), 1), "np.minimum(np.float32(1.0), np.abs(x))", "np.minimum(1.0, np.abs(x))"),
    (sp.Heaviside(x - THETA, 1), "((-theta + x >= 0) * np.float32(1.0))", "((-theta + x >= 0) * 1.0)"),
    (sp.floor(x / THETA), "np.floor(x/theta)", "np.floor(x/theta)"),
    (sp.sqrt(x) * sp.pi, "np.float32(3.141592653589793)*np.sqrt(x)", "3.141592653589793*np.sqrt(x)"),
    (sp.erf(x) + sp.atan(x), "np.arctan(x) + scipy.special.erf(x)", "np.arctan(x) + scipy.special.erf(x)"),
])
def test_numpy_printer_snapshots(expr, f32, f64):
    assert numpy_code(expr, "f32") == f32
    assert numpy_code(expr, "f64") == f64


def test_numpy_printer_evaluates_piecewise_and_conditions_on_arrays():
    import scipy.special

    expr = sp.Piecewise((1, x < 0), (2, sp.And(x < 1, y > 0)), (3, True)) + sp.erf(x) * sp.Heaviside(-x, 0)
    code = numpy_code(expr)
    assert " and " not in code and " or " not in code and "&" in code
    xs, ys = np.linspace(-1.5, 1.5, 7), np.array([1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0])
    got = eval(code, {"np": np, "scipy": scipy}, {"x": xs, "y": ys})  # noqa: S307
    want = [float(expr.subs({x: xv, y: yv})) for xv, yv in zip(xs, ys)]
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_kernel_names_are_deterministic_sha256():
    kernel = build_kernel(ift_snn.lif(0.9), "backward", "f32")
    assert re.fullmatch(r"ift_snn_lif_backward_f32_[0-9a-f]{8}", kernel.name)
    code = ("import ift_snn; from ift_snn.codegen.ir import build_kernel; "
            "print(build_kernel(ift_snn.lif(0.5, 2.0), 'backward', 'f32').name)")
    names = {subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONHASHSEED=seed),
                            capture_output=True, text=True, check=True).stdout.strip() for seed in ("1", "2")}
    assert names == {kernel.name}  # parameter values are arguments: same kernel


def test_arguments_keep_their_meaningful_order():
    kernel = build_kernel(ift_snn.cuba_lif(0.9, 0.8), "forward", "f64")
    source = cuda_source(kernel).code
    signature = source[source.index("__global__"):source.index("{")]
    order = [m.group(1) for m in re.finditer(r"(\w+)[,)]", signature)]
    # per-step inputs, the initial state, outputs, the final state and the finite guard, parameters, sizes
    assert order == ["in_a", "in_x0_u_prev", "in_x0_s_prev", "in_x0_w_syn0", "out_u", "out_s", "out_sigma",
                     "fin_xT_u_prev", "fin_xT_s_prev", "fin_xT_w_syn0", "fin_dg_nonfinite", "p_alpha_mem", "p_alpha_syn",
                     "p_theta", "p_sg_scale", "p_sg_width", "n_steps", "n_neurons", "truncation"]


def test_header_records_model_fingerprint_and_expressions():
    source = generate_cuda(ift_snn.lif(0.9), "backward", "f32")
    assert source.code.startswith("// Generated by ift_snn")
    assert "// model: NeuronModel(lif: alpha=0.9" in source.code
    assert f"// structure fingerprint: {source.kernel.fingerprint}" in source.code
    assert "// c = alpha - sigma*theta" in source.code


def test_no_fast_math_unless_asked():
    kernel = build_kernel(ift_snn.lif(0.9), "forward", "f32")
    assert "--use_fast_math" not in cuda_source(kernel).options
    assert "--use_fast_math" in cuda_source(kernel, fast_math=True).options


@pytest.mark.skipif(not numba_available(), reason="Numba is not installed")
def test_numba_kernels_declare_their_arrays_disjoint_and_the_launcher_checks_it(tmp_path, monkeypatch):
    """Every pointer argument of a compiled scan is ``noalias`` in its LLVM IR (no runtime overlap checks in the
    vectorised step loop), and the launcher refuses output buffers that overlap another argument."""
    from ift_snn.backends import compiled

    monkeypatch.setenv("IFT_SNN_CACHE_DIR", str(tmp_path))  # compiled here: Numba shows no IR of cached code
    compiled.clear()
    model = ift_snn.lif(0.9)
    a = np.random.default_rng(0).normal(0.5, 0.5, (20, 8))
    compiled.forward(model, a, None, "cpu")
    _, fn = compiled.get_kernel(model, "forward_core", np.dtype(np.float64), "cpu")
    ir = next(iter(fn.inspect_llvm().values()))
    name = python_source(build_kernel(model, "forward_core", "f64")).name
    header = next(line for line in ir.splitlines() if line.startswith("define") and name in line)
    assert header.count("noalias") >= 6, header  # in_a, the state in, out_u, out_s, the finals
    buf = np.zeros((4, 10))
    compiled._check_disjoint([buf[:2], buf[2:]], [np.zeros(3)])  # disjoint halves of one buffer: fine
    with pytest.raises(RuntimeError, match="overlaps another argument"):
        compiled._check_disjoint([buf[:3]], [buf[2:]])
    with pytest.raises(RuntimeError, match="overlaps another argument"):
        compiled._check_disjoint([buf, buf[1]], [])


#: Every built-in for sm_90 (the H200 the GPU tests run on); sm_80 for one membrane and one resonator (the
#: same source; PTX for sm_80 also runs on later GPUs).
ARCHS = [(name, "sm_90") for name in sorted(ift_snn.BUILTIN_MODELS)] + [("lif", "sm_80"), ("rf", "sm_80")]


@pytest.mark.skipif(not HAVE_COMPILER, reason="neither NVRTC (CuPy) nor nvcc is installed")
@pytest.mark.parametrize("name, arch", ARCHS)
def test_every_generated_cuda_source_compiles(name, arch):
    """All scans of a model, float32 and float64, in one translation unit."""
    files = sorted((GOLDEN / name).glob("*.cu"))
    assert len(files) == 6
    unit = "\n".join(f.read_text() for f in files)
    fresh = [generate_cuda(ift_snn.get_model(name), q, d).code for q in ("forward", "backward", "slayer")
             for d in ("f32", "f64")]
    assert sorted(fresh) == sorted(f.read_text() for f in files)
    kernel = build_kernel(ift_snn.get_model(name), "forward", "f32")
    ptx = compile_ptx(KernelSource(f"{name}_all", unit, ("--std=c++14",), kernel), arch)
    assert ".entry" in ptx and ptx.count(".entry") == 6


@pytest.mark.skipif(not HAVE_COMPILER, reason="neither NVRTC (CuPy) nor nvcc is installed")
def test_a_broken_source_fails_with_the_compiler_log():
    kernel = build_kernel(ift_snn.lif(0.9), "forward", "f32")
    good = cuda_source(kernel)
    bad = KernelSource(good.name, good.code.replace("expf(", "no_such_function("), good.options, kernel)
    with pytest.raises(CodegenError, match="(?s)does not compile.*no_such_function"):
        compile_ptx(bad, "sm_90")


def test_dump_dir_receives_every_source(tmp_path, monkeypatch):
    monkeypatch.setenv("IFT_SNN_DUMP_DIR", str(tmp_path))
    source = generate_cuda(ift_snn.if_neuron(), "forward", "f64")
    assert (tmp_path / f"{source.name}.cu").read_text() == source.code
    kernel = build_kernel(ift_snn.if_neuron(), "backward", "f64")
    py = python_source(kernel)
    compile_numba(py)
    assert (tmp_path / f"{py.name}.py").read_text() == py.code
    vec = numpy_source(kernel)
    compile_numpy(vec)
    assert (tmp_path / f"{vec.name}.numpy.py").read_text() == vec.code


def test_compiled_cpu_kernel_source_is_inspectable():
    py = python_source(build_kernel(ift_snn.lif(0.9), "backward", "f64"))
    fn = compile_numba(py)
    assert inspect.getsource(fn.py_func).startswith(f"def {py.name}(")
    vec = numpy_source(py.kernel)
    assert inspect.getsource(compile_numpy(vec)).startswith(f"def {vec.name}(")


def test_codegen_cli_prints_every_target(capsys):
    from ift_snn.cli import main

    assert main(["codegen", "cuba_lif", "--target", "cuda", "--dtype", "f64", "--quantity", "backward"]) == 0
    out = capsys.readouterr().out
    assert "__global__ void ift_snn_cuba_lif_backward_f64_" in out and "double" in out
    assert main(["codegen", "lif", "--target", "cpu"]) == 0
    out = capsys.readouterr().out
    # the cpu target's forward: the scan without the surrogate, and the surrogate as a NumPy map
    assert out.count("\ndef ift_snn_lif_") == 4 and "j_begin, j_end" in out
    assert "\ndef ift_snn_lif_forward_core_f32_" in out and "\ndef ift_snn_lif_surrogate_f32_" in out
    assert "np.exp(" in out.split("def ift_snn_lif_surrogate_f32_")[1]
    assert "exp(" not in out.split("def ift_snn_lif_forward_core_f32_")[1].split("\n\n\n")[0]
    assert main(["codegen", "lif", "--target", "numpy", "--quantity", "backward"]) == 0
    out = capsys.readouterr().out
    assert out.count("\ndef ift_snn_lif_backward_f32_") == 1 and "[j_begin:j_end]" in out
    assert "regenerate with `ift-snn codegen --target numpy`" in out


def test_the_forward_split_keeps_every_value():
    """forward_core + surrogate map (the cpu target) give the forward scan's u, s and sigma, for models
    whose sigma is pointwise; s (read by the state update) stays in the scan."""
    from ift_snn.backends import compiled

    rng = np.random.default_rng(3)
    for model in (ift_snn.lif(0.9), ift_snn.cuba_lif(0.9, 0.7), ift_snn.lif(0.9, u_min=-0.2),
                  ift_snn.lif(0.9, spike="smooth", surrogate=ift_snn.neurons.surrogates.sigmoid(slope=4.0)),
                  ift_snn.srm("n*alpha**n", "theta*beta**n", params={"alpha": 0.8, "beta": 0.9})):
        core, point = (build_kernel(model, q, "f64") for q in ("forward_core", "surrogate"))
        assert [o.name for o in point.outputs] == ["sigma"] and point.direction == "map"
        assert "sigma" not in [o.name for o in core.outputs] and "s" in [o.name for o in core.outputs]
        a = rng.normal(0.4, 0.6, (50, 7))
        split = compiled.forward(model, a, None, "cpu")
        whole = compiled.forward(model, a, None, "numpy")
        for x, y in zip(split[:3], whole[:3]):
            np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------ the loop tree
def test_one_tree_decides_the_structure_every_printer_follows():
    kernel = build_kernel(ift_snn.cuba_lif(0.9, 0.8), "backward", "f64")
    fn = tree.lower(kernel)
    kinds = [type(st).__name__ for st in fn.body]
    assert kinds == (["Invariant"] * len(kernel.invariants) + ["InitState"] * len(kernel.state) + ["TimeLoop"]
                     + ["Final"] * len(kernel.finals))
    (loop,) = [st for st in fn.body if isinstance(st, tree.TimeLoop)]
    assert loop.direction == "reverse" and [st.state for st in loop.restart] == [s for s, _ in kernel.restarted]
    order = [type(st).__name__ for st in loop.body]
    assert order == ["Load"] * len(kernel.inputs) + ["Assign"] * len(kernel.body) + ["Store", "UpdateState"]
    assert [a.name for a in fn.args][-3:] == ["n_steps", "n_neurons", "truncation"]
    assert sorted(a.name for a in fn.vectors) == ["in_x0_s_prev", "in_x0_u_prev", "in_x0_w_syn0"]
    forward = tree.lower(build_kernel(ift_snn.lif(0.9), "forward", "f64"))
    assert next(st for st in forward.body if isinstance(st, tree.TimeLoop)).restart is None
    import dataclasses

    twice = dataclasses.replace(kernel, body=kernel.body + kernel.body[:1])
    with pytest.raises(CodegenError, match="assigned twice"):
        tree.lower(twice)
    for name in ("max", "j", "next_d", "in_a", "float", "lambda"):
        clash = dataclasses.replace(kernel, body=kernel.body + ((sp.Symbol(name, real=True), sp.Integer(1)),))
        with pytest.raises(CodegenError, match="cannot be a local of generated code"):
            tree.lower(clash)


def test_a_new_vector_needs_no_printer_or_launcher_change(monkeypatch):
    """A kernel whose initial state reads a second per-neuron vector: every printer takes it as in_<name>
    right after the per-step inputs and the initial state, and the launcher binds it by name."""
    import dataclasses

    from ift_snn.backends import compiled

    model = ift_snn.lif(0.9)
    base = build_kernel(model, "forward", "f64")
    extra = sp.Symbol("x0_shift", real=True)
    u_prev = sp.Symbol("x0_u_prev", real=True)
    init = tuple(i + extra if i == u_prev else i for i in base.init)
    kernel = dataclasses.replace(base, init=init, vectors=base.vectors + (extra,), fingerprint="f" * 64)
    assert not kernel.uses_u_init and kernel.name.endswith("_ffffffff")
    cu, py, vec = cuda_source(kernel).code, python_source(kernel).code, numpy_source(kernel).code
    assert "in_x0_s_prev,\n    const double* __restrict__ in_x0_shift," in cu and "in_x0_shift[j]" in cu
    assert "in_x0_s_prev, in_x0_shift, out_u" in py and "in_x0_shift[_j0 + _jj]" in py
    assert "in_x0_s_prev, in_x0_shift, out_u" in vec and "in_x0_shift[j_begin:j_end]" in vec
    if HAVE_COMPILER:
        compile_ptx(cuda_source(kernel), "sm_80")
    rng = np.random.default_rng(0)
    a, u0, shift = rng.normal(0.3, 0.5, (25, 4)), rng.normal(0, 0.3, 4), rng.normal(0, 0.3, 4)
    key = (model.structure, "forward", "f64", (), (), False)  # (no per-neuron parameters, no kept sums, not recurrent)
    monkeypatch.setattr(compiled, "_ir", compiled.LRU())
    compiled._ir[key] = kernel
    u, s, _, _ = compiled.forward(model, a, None, "numpy", vectors={"x0_u_prev": u0, "x0_shift": shift})
    want_u, want_s, _ = reference.simulate(model, a, u0 + shift)
    np.testing.assert_allclose(u, want_u, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(s, want_s)


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_every_surrogate_prints_as_numpy(name):
    """The catalogue through the NumPy printer: sigma as the kernel computes it equals the lambdified
    expression, and the smooth spike's primitive (sigmoid, arctan, gaussian) equals the oracle's."""
    surrogate = SURROGATES[name]()
    a = np.random.default_rng(1).normal(0.4, 0.6, (30, 5))
    model = ift_snn.lif(0.8, surrogate=surrogate)
    trace = ift_snn.forward(model, a, backend="numpy")
    np.testing.assert_allclose(trace.sigma, model.sigma(trace.u), rtol=1e-12, atol=1e-14)
    if surrogate.primitive is not None:
        smooth = ift_snn.lif(0.8, spike="smooth", surrogate=surrogate)
        trace = ift_snn.forward(smooth, a, backend="numpy")
        u, s, _ = reference.simulate(smooth, a)
        np.testing.assert_allclose(trace.s, s, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(trace.u, u, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ bad input
def test_kernel_too_long_for_codegen_names_the_kernel(monkeypatch):
    """The limits of the generated kernels, named in the message before any derivation: the ring buffers'
    length (at the real limit a kernel is refused when it is built, see test_rings.py) and the scalar state."""
    from ift_snn.codegen import ir

    model = ift_snn.srm(list(np.linspace(1, 0.1, 100)), [1.0])
    monkeypatch.setattr(ir, "MAX_RING", 50)
    with pytest.raises(CodegenError, match=r"kernel eps = taps\(1, .*100 taps\) needs a scan state of 99 values per "
                                           r"neuron .* rings of at most 50 values"):
        build_kernel(model, "forward", "f32")
    monkeypatch.setattr(ir, "MAX_STATE", 3)
    with pytest.raises(CodegenError, match=r"cuba_lif backward: the scan carries \d+ scalar state values per neuron "
                                           r"besides its ring buffers; the generated kernels carry at most 3"):
        build_kernel(ift_snn.get_model("cuba_lif"), "backward", "f32")


def test_unsupported_function_names_the_construct():
    model = ift_snn.lif(0.9, surrogate=ift_snn.neurons.surrogates.custom(sp.besselj(0, U - THETA)))
    with pytest.raises(CodegenError, match="cannot print besselj"):
        build_kernel(model, "forward", "f32")


def test_unknown_quantity_and_dtype():
    with pytest.raises(ValueError, match="quantity 'loss'"):
        build_kernel(ift_snn.lif(0.9), "loss", "f32")
    with pytest.raises(ValueError, match="dtype='f16'"):
        build_kernel(ift_snn.lif(0.9), "forward", "f16")


def test_non_contiguous_input_is_copied():
    model = ift_snn.lif(0.9)
    base = np.random.default_rng(0).normal(0.4, 0.5, (30, 16))
    strided = base[:, ::2]
    assert not strided.flags.c_contiguous
    got = ift_snn.forward(model, strided)
    want = ift_snn.forward(model, np.ascontiguousarray(strided))
    np.testing.assert_array_equal(got.u, want.u)
    grads = ift_snn.backward(model, got, np.ones((30, 8))[:, :])
    assert grads.a.shape == (30, 8)


class _FakeCupyArray:
    """Looks like a CuPy array by its module, for the dispatch checks (no CuPy needed)."""

    __module__ = "cupy._core.core"
    dtype = np.dtype(np.float32)
    shape = (10, 2)


def test_mixed_numpy_and_cupy_is_a_type_error():
    model = ift_snn.lif(0.9)
    trace = ift_snn.forward(model, np.zeros((10, 2), np.float32))
    with pytest.raises(TypeError, match="grad_s is a cupy"):
        ift_snn.backward(model, trace, _FakeCupyArray())


@pytest.mark.skipif(__import__("importlib").util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_missing_cupy_is_an_actionable_import_error():
    with pytest.raises(ImportError, match=r"pip install -e '\.\[gpu\]' in the ift_snn checkout"):
        ift_snn.forward(ift_snn.lif(0.9), _FakeCupyArray())


@pytest.mark.skipif(not numba_available(), reason="Numba is not installed")
@pytest.mark.parametrize("model, sums, needs_options", [
    (ift_snn.lif(0.9, 1.0, reset_before_decay=True), ("alpha",), False),  # four inputs: noalias is enough
    (ift_snn.alif(), ("alpha",), True),  # two states' arrays: more runtime checks than LLVM's default allows
])
def test_the_step_loop_of_the_exact_backward_is_vectorised(model, sums, needs_options):
    """Compiled as compiled.py compiles every Numba kernel (arguments ``noalias``, inside vectorizer_options), the
    step loop of the exact backward has vector multiplies: for a LIF that resets before its decay, with dL/dalpha
    (inputs g, sigma, s, u), the noalias arguments alone do it; for ALIF, whose state arrays LLVM cannot prove
    apart, only with the raised limit of runtime checks (at LLVM's default it stays scalar)."""
    import inspect
    import re

    import numba

    from ift_snn.codegen.cpu import _no_alias_compiler, vectorizer_options

    kernel = build_kernel(model, "backward_a", "f32", sums=sums)
    code = python_source(kernel).code

    def vector_ops(with_options: bool) -> int:
        namespace: dict = {}
        exec(compile(code, "<kernel>", "exec"), namespace)  # noqa: S102 - our own printer's output
        fn = numba.njit(nogil=True, pipeline_class=_no_alias_compiler())(namespace[kernel.name])
        args = []
        for p in inspect.signature(namespace[kernel.name]).parameters:
            if p.startswith(("in_x0", "fin_")):
                args.append(np.zeros(8, np.float32))
            elif p.startswith(("in_", "out_")):
                args.append(np.zeros((4, 8), np.float32))
            elif p.startswith("p_"):
                args.append(np.float32(0.5))
            else:
                args.append({"n_steps": 4, "n_neurons": 8, "truncation": 0, "chunk": 8, "j_begin": 0, "j_end": 8}[p])
        if with_options:
            with vectorizer_options():
                fn(*args)
        else:
            fn(*args)
        return len(re.findall(r"= fmul <\d+ x float>", fn.inspect_llvm(fn.signatures[0])))

    assert vector_ops(True) > 0
    assert (vector_ops(False) == 0) == needs_options
