"""Shared strategies and helpers: random models and inputs, tolerances by dtype."""

from __future__ import annotations

import os
from pathlib import Path

# Compiled kernels of the test suite go to a git-ignored folder of the checkout, not the user's cache:
# a second run (or a CI cache of the folder) loads them instead of compiling (2-5 s each).
os.environ.setdefault("IFT_SNN_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".kernel_cache"))

import numpy as np  # noqa: E402
import pytest
from hypothesis import settings  # noqa: E402
from hypothesis import strategies as st

import ift_snn
from ift_snn.neurons import surrogates

# CI runs a fixed, reproducible set of examples; locally every run explores new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

#: Relative tolerances against the float64 reference, keyed by dtype.
RTOL = {np.float64: 1e-10, np.float32: 1e-4}


def rel_err(got, want) -> float:
    """max |got - want| / max |want| (absolute when want is all zero)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    return float(np.max(np.abs(got - want))) / (scale if scale > 0 else 1.0) if want.size else 0.0


def assert_close(got, want, dtype=np.float64, what=""):
    err = rel_err(got, want)
    assert err <= RTOL[dtype], f"{what}: relative error {err:.3g} > {RTOL[dtype]:g}"


def assert_params_close(got: dict, want: dict, dtype=np.float64, rtol: float | None = None):
    assert set(got) == set(want)
    scale = max([abs(v) for v in want.values()] + [1e-300])
    rtol = RTOL[dtype] if rtol is None else rtol
    for k in want:
        err = abs(got[k] - want[k]) / scale
        assert err <= rtol, f"dL/d{k}: {got[k]!r} vs {want[k]!r} (relative {err:.3g})"


alphas = st.floats(0.5, 1.0)
thetas = st.floats(0.5, 1.5)


@st.composite
def exp_surrogates(draw):
    return surrogates.exponential(scale=draw(st.floats(0.2, 1.0)), width=draw(st.floats(0.3, 1.0)))


@st.composite
def models(draw, families=("lif", "if", "cuba", "alpha_srm", "taps_srm"), smooth=False):
    """Random models of every family; ``smooth`` gives the differentiable spike."""
    family = draw(st.sampled_from(families))
    surrogate = surrogates.sigmoid(slope=draw(st.floats(1.0, 4.0))) if smooth else draw(exp_surrogates())
    spike = "smooth" if smooth else draw(st.sampled_from(["single", "multi", 1, 2, 3]))
    theta = draw(thetas)
    theta_r = draw(st.one_of(st.none(), st.floats(0.2, 1.5)))
    if family in ("lif", "if", "cuba"):
        reset = draw(st.sampled_from(["subtract", "zero"])) if spike in ("single", "smooth") else "subtract"
        u_min = None if smooth else draw(st.one_of(st.none(), st.floats(-1.0, 0.0)))
        common = dict(theta_r=theta_r, spike=spike, surrogate=surrogate, reset=reset, u_min=u_min)
        if family == "lif":
            return ift_snn.lif(draw(alphas), theta, reset_before_decay=draw(st.booleans()), **common)
        if family == "if":
            return ift_snn.if_neuron(theta, **common)
        a_mem = draw(alphas)
        a_syn = draw(st.floats(0.3, 0.95).filter(lambda x: abs(x - a_mem) > 0.02))
        return ift_snn.cuba_lif(a_mem, a_syn, theta, **common)
    if family == "alpha_srm":
        return ift_snn.srm("n*alpha**n", "theta*beta**n", theta,
                           params={"alpha": draw(st.floats(0.3, 0.9)), "beta": draw(alphas)},
                           spike=spike, surrogate=surrogate)
    taps = draw(st.lists(st.floats(-0.5, 1.5), min_size=1, max_size=5).filter(any))
    reset_taps = draw(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4))
    return ift_snn.srm(taps, reset_taps, theta, spike=spike, surrogate=surrogate)


@st.composite
def problems(draw, max_T=40, max_M=4):
    """(a, g, u0) float64 arrays for one layer: (T, M), (T, M), (M,) or None."""
    T = draw(st.integers(1, max_T))
    M = draw(st.integers(1, max_M))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mean, std = draw(st.floats(-0.2, 0.8)), draw(st.floats(0.1, 1.0))
    a = rng.normal(mean, std, size=(T, M))
    g = rng.normal(size=(T, M))
    u0 = rng.normal(0, 0.5, size=M) if draw(st.booleans()) else None
    return a, g, u0


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver or no device all mean "no GPU"
        return False


def pytest_collection_modifyitems(config, items):
    if _gpu_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU with CuPy on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
