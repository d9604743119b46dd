"""Delay lines and long tap lists as ring buffers (codegen/ir.py ``rings``, codegen/tree.py ``Ring``).

A shift chain of the scan state (a filter in transposed direct form II, its adjoint, a shift register) of
RING_MIN or more values is carried in a (slots, M) work array, element i at slot (rb_h + i) % slots: a delay
of d steps costs one write per step instead of d moves, and no longer meets the 64-value limit of the
scalar state. Families of vectors and finals (x0_w_eps0, x0_w_eps1, ...) become one (rows, M) argument.

Checked here, against the independent float64 BPTT oracle at 1e-10 (every gradient: dL/da, dL/du0, every
dL/dp; exact, truncated and SLAYER): delays past the old limit, a delayed alpha kernel, a tap list (whose
ring carries an increment in every slot), on the generated NumPy and the compiled Numba kernels; streaming
through the grouped state; batch-major blocks; dL/d(initial state) against finite differences; the time
loop's size independent of the delay; CUDA compiled to PTX; the delay limit refused up front.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

import ift_snn
from ift_snn import ops
from ift_snn.backends import compiled
from ift_snn.codegen import ir
from ift_snn.codegen.cuda import compile_ptx, cuda_source, nvrtc_available
from ift_snn.codegen.ir import QUANTITIES, build_kernel, rings
from ift_snn.codegen.printers import print_numba
from ift_snn.codegen.tree import lower
from ift_snn.neurons.kernels import MAX_DELAY, KernelError
from ift_snn.neurons.kernels import Kernel
from ift_snn.symbolic.filters import filter_adjoint
from ift_snn.symbolic.recurrence import _df2t

from .conftest import rel_err
from .test_state import assert_state_and_parameter_gradients_equal_fd
from .test_zoo import _assert_equals_oracle

TARGETS = ["numpy"] + (["cpu"] if compiled.available() else [])
HAVE_COMPILER = nvrtc_available() or bool(__import__("shutil").which("nvcc"))


def delayed(d: int, name: str = "delayed", **kw) -> ift_snn.NeuronModel:
    """An exponential synapse delayed by d steps, a trainable reset kernel."""
    return ift_snn.srm(f"step(n - {d})*alpha**(n - {d})", "theta*beta**n", params={"alpha": 0.85, "beta": 0.8},
                       name=name, **kw)


MODELS = {
    "delay70": lambda: delayed(70, "delay70"),  # past the old limit of 64 state values
    "delayed_alpha12": lambda: ift_snn.srm("step(n - 12)*(n - 12)*alpha**(n - 12)", "theta*0.8**n",
                                           params={"alpha": 0.7}, name="delayed_alpha12"),
    "taps24": lambda: ift_snn.srm([0.05 * (1 + (7 * k) % 5) for k in range(24)], "theta*beta**n",
                                  params={"beta": 0.75}, name="taps24"),
}


def _data(T: int, M: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(0.5, 0.7, (T, M)), rng.normal(size=(T, M)), rng.normal(0.0, 0.3, M)


def test_a_delay_line_is_one_chain_and_its_adjoint_another():
    x, y, dy = sp.symbols("x y dy")
    alpha = sp.Symbol("alpha")
    num = (0,) * 10 + (1,)
    den = (1, -alpha)
    w, _, update = _df2t("w", num, den, x, y)
    assert rings(w, update) == (w,)  # w_i <- w_(i+1) + ...: w_0 first
    delay = Kernel.closed_form(sp.sympify("alpha**(n-10)*Heaviside(n-10, 1)",
                                          locals={"n": sp.Symbol("n", integer=True)}))
    assert (delay.num, delay.den) == (num, den)
    lam, _, lam_update = filter_adjoint("l", delay, dy)  # the adjoint, derived from the step
    assert rings(lam, lam_update) == (lam[::-1],)  # lam_j <- lam_(j-1): the last one first
    short, _, short_update = _df2t("v", (0, 0, 1), den, x, y)
    assert rings(short, short_update) == ()  # below RING_MIN: stays in scalars
    # a state taken by two others is in no chain; a chain of one persistence only
    a = sp.symbols("a0:9")
    assert rings(a, [a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], x]) == (a,)
    # a1 taken by a0 and by a8: neither edge is a shift, a1..a8 still are (a8's whole update reads a1)
    assert rings(a, [a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[1]]) == (a[1:],)
    assert rings(a, [a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], x], persistent=a[:4]) == ()


#: Every model on the generated NumPy; the tap list (a ring with an increment in every slot, and a table) on the
#: compiled target too: the same loop tree (codegen/tree.py), each compile 2-4 s.
CASES = [(name, "numpy") for name in sorted(MODELS)]
CASES += [("taps24", "cpu")] if "cpu" in TARGETS else []


@pytest.mark.parametrize("name, target", CASES)
def test_ring_kernels_equal_the_oracle(name, target):
    model = MODELS[name]()
    assert build_kernel(model, "backward", "f64").rings, "the test would not exercise a ring"
    a, g, u0 = _data(110)
    _assert_equals_oracle(model, a, g, u0, target)
    _assert_equals_oracle(model, a, g, u0, target, truncation=9)
    _assert_equals_oracle(model, a, g, u0, target, method="slayer")


def test_the_time_loop_does_not_grow_with_the_delay():
    """A delay of d steps is one write per step: the printed time loop of d = 20 and d = 200 has the same
    statements (only slot numbers differ), and the signature the same arguments (grouped families)."""
    def loop(d, quantity):
        fn = lower(build_kernel(delayed(d, f"d{d}"), quantity, "f32"))
        code = print_numba(fn)
        body = code[code.index("for _t in range"):code.index("rb_h += 1")]
        return [re.sub(r"\d+", "N", line) for line in body.splitlines()], [a.name for a in fn.args]

    for quantity in ("forward", "backward"):
        (short, args_short), (long, args_long) = loop(20, quantity), loop(200, quantity)
        assert short == long and args_short == args_long and len(args_long) < 35


@pytest.mark.parametrize("target", ["numpy"])
def test_streaming_through_the_ring_state(target):
    """Two calls of T/2, the second from the first's state (the delay line in flight included), equal one."""
    model = MODELS["delayed_alpha12"]()
    a, g, u0 = _data(60)
    h = 29
    whole = ops.forward(model, a, u0, backend=target)
    first = ops.forward(model, a[:h], u0, backend=target)
    second = ops.forward(model, a[h:], state=first.state, backend=target)
    assert first.state.shape[0] == len(ops.state_names(model)) > ir.RING_MIN
    np.testing.assert_array_equal(np.concatenate([first.s, second.s]), whole.s)
    np.testing.assert_allclose(np.concatenate([first.u, second.u]), whole.u, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ops.backward(model, second, g[h:]).a, ops.backward(model, whole, g).a[h:],
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("target", ["numpy"])  # the launcher's binding, shared by every target
def test_batch_major_blocks_with_rings(target):
    """(B, T, N) runs one call per block: the grouped (rows, M) vectors and finals are split and joined."""
    model = MODELS["delayed_alpha12"]()
    rng = np.random.default_rng(4)
    a = rng.normal(0.5, 0.7, (3, 40, 4))
    g = rng.normal(size=a.shape)
    tm = lambda x: np.ascontiguousarray(np.moveaxis(x, 1, 0))  # noqa: E731
    bm = ops.forward(model, a, backend=target, time_axis=1)
    t = ops.forward(model, tm(a), backend=target)
    np.testing.assert_array_equal(tm(bm.s), t.s)
    assert rel_err(bm.state, t.state) <= 1e-12
    gb, gt = ops.backward(model, bm, g), ops.backward(model, t, tm(g))
    assert rel_err(tm(gb.a), gt.a) <= 1e-12 and rel_err(gb.state, gt.state) <= 1e-12
    for k, v in gt.params.items():
        assert abs(gb.params[k] - v) <= 1e-12 * max(1.0, abs(v)), k


def test_initial_state_gradient_through_the_ring_equals_finite_differences():
    """dL/dx0 of every value of the delay line (a grouped final of the backward) and dL/dp with the state
    held, against central differences of the loss (smooth spike: the surrogate is the exact derivative)."""
    model = delayed(9, "delay9_smooth", spike="smooth", surrogate="sigmoid")
    rng = np.random.default_rng(1)
    a, g = rng.normal(0.4, 0.6, (30, 2)), rng.normal(size=(30, 2))
    x0 = rng.normal(0.2, 0.3, (len(ops.state_names(model)), 2))
    assert len(x0) > ir.RING_MIN
    assert_state_and_parameter_gradients_equal_fd(model, a, g, x0, "numpy")


@pytest.mark.skipif(not HAVE_COMPILER, reason="neither NVRTC (CuPy) nor nvcc is installed")
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_ring_kernels_compile_to_ptx(dtype):
    for name in ("delay70", "taps24"):
        for quantity in QUANTITIES:
            source = cuda_source(build_kernel(MODELS[name](), quantity, dtype))
            assert "rb_h" in source.code
            assert f".entry {source.name}(" in compile_ptx(source, "sm_80")


def test_a_delay_past_the_limit_is_refused_before_any_work():
    with pytest.raises(KernelError, match=f"delayed by {MAX_DELAY + 1} steps; at most {MAX_DELAY}"):
        ift_snn.srm(f"step(n - {MAX_DELAY + 1})*0.9**(n - {MAX_DELAY + 1})", "theta*0.8**n")


@pytest.mark.gpu
@pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_ring_kernels_on_the_gpu_equal_the_oracle(name):
    """The CUDA kernels (rings in global work arrays, element (slot, j) at slot * M + j): every gradient."""
    cupy = pytest.importorskip("cupy")
    model = MODELS[name]()
    a, g, u0 = _data(110, M=300)
    trace = ops.forward(model, cupy.asarray(a), cupy.asarray(u0))
    assert trace.backend == "cupy"
    cpu = ops.forward(model, a, u0, backend="numpy")
    np.testing.assert_array_equal(trace.s.get(), cpu.s)
    for method, K in (("exodus", None), ("exodus", 9), ("slayer", None)):
        got = ops.backward(model, trace, cupy.asarray(g), method=method, truncation=K)
        want = ops.backward(model, cpu, g, method=method, truncation=K)
        assert rel_err(got.a.get(), want.a) < 1e-10 and rel_err(got.u0.get(), want.u0) < 1e-10
        for k, v in want.params.items():
            assert abs(got.params[k] - v) <= 1e-10 * max(1.0, abs(v)), k


def test_bench_delays_arguments_are_checked(capsys):
    """``ift-snn bench --delays`` (the first call of delay lines, a benchmark) refuses a delay past the limit
    and a second benchmark at once, before any work."""
    from ift_snn.cli import main

    assert main(["bench", "--delays", f"30,{MAX_DELAY + 1}"]) == 2
    assert f"delay {MAX_DELAY + 1} is out of range: at most {MAX_DELAY}" in capsys.readouterr().err
    assert main(["bench", "--taps", "0"]) == 2
    assert "--taps: expected a positive integer, got 0" in capsys.readouterr().err
    assert main(["bench", "--delays", "30", "--zoo"]) == 2
    assert "--zoo and --delays/--taps are two benchmarks" in capsys.readouterr().err
