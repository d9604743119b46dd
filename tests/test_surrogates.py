"""Every built-in surrogate against an independent numpy formula (the docstring table of
ift_snn/neurons/surrogates.py), its shape and dtype behaviour, and the primitives of the smooth spike."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ift_snn import Surrogate, get_surrogate

from ift_snn.neurons import surrogates
from ift_snn.neurons.surrogates import SURROGATES


def _logistic(z):
    return 1.0 / (1.0 + np.exp(-z))


# Hand-written from the catalogue table; x = u - theta.
def _exponential(u, theta, scale=1.0, width=0.5):
    w = width * theta
    return scale / w * np.exp(-np.abs(u - theta) / w)


def _fast_sigmoid(u, theta, scale=1.0, slope=10.0):
    return scale / (1.0 + slope * np.abs(u - theta)) ** 2


def _sigmoid(u, theta, scale=1.0, slope=5.0):
    s = _logistic(slope * (u - theta))
    return scale * slope * s * (1.0 - s)


def _arctan(u, theta, scale=1.0, slope=2.0):
    return scale * (slope / 2.0) / (1.0 + (np.pi / 2.0 * slope * (u - theta)) ** 2)


def _gaussian(u, theta, scale=1.0, width=0.5):
    x = u - theta
    return scale * np.exp(-(x**2) / (2.0 * width**2)) / (np.sqrt(2.0 * np.pi) * width)


def _triangle(u, theta, scale=1.0, width=1.0):
    return scale * np.maximum(0.0, 1.0 - np.abs(u - theta) / width)


def _boxcar(u, theta, scale=1.0, width=1.0):
    return scale / width * (np.abs(u - theta) < width / 2.0)


HAND = {
    "exponential": _exponential,
    "fast_sigmoid": _fast_sigmoid,
    "sigmoid": _sigmoid,
    "arctan": _arctan,
    "gaussian": _gaussian,
    "triangle": _triangle,
    "boxcar": _boxcar,
}
SHAPE_PARAM = {name: ("slope" if name in ("fast_sigmoid", "sigmoid", "arctan") else "width") for name in HAND}
DEFAULTS = {
    "exponential": {"scale": 1.0, "width": 0.5},
    "fast_sigmoid": {"scale": 1.0, "slope": 10.0},
    "sigmoid": {"scale": 1.0, "slope": 5.0},
    "arctan": {"scale": 1.0, "slope": 2.0},
    "gaussian": {"scale": 1.0, "width": 0.5},
    "triangle": {"scale": 1.0, "width": 1.0},
    "boxcar": {"scale": 1.0, "width": 1.0},
}
WITH_PRIMITIVE = ("sigmoid", "arctan", "gaussian")
NAMES = sorted(SURROGATES)

thetas = st.floats(0.25, 3.0)


@st.composite
def surrogate_params(draw, name):
    return {"scale": draw(st.floats(0.2, 3.0)), SHAPE_PARAM[name]: draw(st.floats(0.3, 4.0))}


def test_catalogue_is_covered():
    assert set(SURROGATES) == set(HAND)


@pytest.mark.parametrize("name", NAMES)
def test_defaults_match_the_table(name):
    assert dict(SURROGATES[name]().constants) == DEFAULTS[name]


# ----------------------------------------------------- values vs hand formulas
@pytest.mark.parametrize("name", NAMES)
def test_default_matches_hand_formula(name):
    theta = 1.0
    u = np.linspace(-4.0, 6.0, 2001)
    want = HAND[name](u, theta)
    got = SURROGATES[name]()(u, theta)
    # relative 1e-12, plus an absolute floor of 1e-12 of the peak for the cancellation
    # in 1 - S(x) of the sigmoid tail that both formulas share
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.max(want))


@pytest.mark.parametrize("name", NAMES)
def test_matches_hand_formula_random_parameters(name):
    @settings(max_examples=15, deadline=None)
    @given(params=surrogate_params(name), theta=thetas)
    def check(params, theta):
        u = theta + np.linspace(-3.0, 3.0, 301)
        want = HAND[name](u, theta, **params)
        got = SURROGATES[name](**params)(u, theta)
        if name == "boxcar":  # the edge |x| = width/2 itself is decided by rounding
            keep = np.abs(np.abs(u - theta) - params["width"] / 2) > 1e-9
            got, want = got[keep], want[keep]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.max(want))

    check()


# -------------------------------------------------------------- basic shape
def _extremes(dtype) -> np.ndarray:
    big = float(np.finfo(dtype).max) / 4
    return np.array([-big, -1e12, -1e6, -700.0, -50.0, 50.0, 700.0, 1e6, 1e12, big])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NAMES)
def test_finite_and_nonnegative(name, dtype):
    theta = 1.0
    u = np.concatenate([theta + np.linspace(-10.0, 10.0, 4001), theta + _extremes(dtype)]).astype(dtype)
    y = SURROGATES[name]()(u, theta)
    assert np.all(np.isfinite(y)), u[~np.isfinite(y)]
    assert np.all(y >= 0), u[y < 0]
    # far from theta it vanishes
    far = SURROGATES[name]()(np.array([theta - 1e12, theta + 1e12], dtype=dtype), theta)
    np.testing.assert_allclose(far, 0.0, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_peak_at_theta(name):
    @settings(max_examples=10, deadline=None)
    @given(params=surrogate_params(name), theta=thetas)
    def check(params, theta):
        step = 1e-3
        u = theta + step * np.arange(-4000, 4001)  # contains theta exactly at index 4000
        y = SURROGATES[name](**params)(u, theta)
        top = np.flatnonzero(y == y.max())
        # boxcar is flat on top: its maximisers are an interval centred on theta
        centre = 0.5 * (u[top[0]] + u[top[-1]])
        assert abs(centre - theta) <= step
        assert abs(u[np.argmax(y)] - theta) <= step or name == "boxcar"
        assert y[4000] == y.max()

    check()


@pytest.mark.parametrize("shape", [(), (7,), (3, 4), (2, 3, 2)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NAMES)
def test_dtype_and_shape_preserved(name, dtype, shape):
    rng = np.random.default_rng(7)
    u = rng.normal(1.0, 1.0, size=shape).astype(dtype)
    sur = SURROGATES[name]()
    y = sur(u, 1.0)
    assert isinstance(y, np.ndarray)
    assert y.dtype == dtype
    assert y.shape == shape
    want = HAND[name](u.astype(np.float64), 1.0)
    tol = {np.float64: 1e-12, np.float32: 1e-5}[dtype]
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=tol, atol=tol * np.max(want, initial=1.0))
    if name in WITH_PRIMITIVE:
        F = sur.antiderivative(u, 1.0)
        assert F.dtype == dtype and F.shape == shape


# ------------------------------------------------------------- primitives
@pytest.mark.parametrize("name", WITH_PRIMITIVE)
def test_primitive_derivative_is_the_surrogate(name):
    @settings(max_examples=15, deadline=None)
    @given(params=surrogate_params(name), theta=thetas)
    def check(params, theta):
        sur = SURROGATES[name](**params)
        u = theta + np.linspace(-4.0, 4.0, 161)
        h = 1e-5
        numeric = (sur.antiderivative(u + h, theta) - sur.antiderivative(u - h, theta)) / (2 * h)
        np.testing.assert_allclose(numeric, sur(u, theta), rtol=0, atol=1e-6)

    check()


@pytest.mark.parametrize("name", WITH_PRIMITIVE)
def test_primitive_limits(name):
    sur = SURROGATES[name](scale=1.5)
    theta = 0.8
    below = sur.antiderivative(theta - np.array([1e2, 1e4, 1e6, 1e9, 1e12, np.inf]), theta)
    assert np.all(below >= 0)
    assert np.all(np.diff(below) <= 0), below  # decreasing towards -inf
    assert below[-2] < 1e-9 and below[-1] == 0.0
    above = sur.antiderivative(np.array([theta + 1e12]), theta)
    np.testing.assert_allclose(above, 1.5, rtol=1e-9)
    np.testing.assert_allclose(sur.antiderivative(np.array([theta]), theta), 0.75, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(set(NAMES) - set(WITH_PRIMITIVE)))
def test_no_primitive_refused(name):
    sur = SURROGATES[name]()
    assert sur.primitive is None
    with pytest.raises(ValueError, match=rf"surrogate {name}\(.*\) has no primitive"):
        sur.antiderivative(np.zeros(3), 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_shift_invariance(name):
    # exponential's width is relative to theta; all the others depend on u - theta only
    assert SURROGATES[name]().shift_invariant is (name != "exponential")


# ----------------------------------------------------------- lookup and repr
def test_get_surrogate_with_parameters():
    sur = get_surrogate("exponential", scale=2)
    assert isinstance(sur, Surrogate)
    assert sur.name == "exponential"
    assert dict(sur.constants) == {"scale": 2.0, "width": 0.5}
    u = np.linspace(-1.0, 3.0, 41)
    np.testing.assert_allclose(sur(u, 1.0), _exponential(u, 1.0, scale=2.0), rtol=1e-12)
    assert get_surrogate(sur) is sur
    assert sur == surrogates.exponential(scale=2.0)


def test_get_surrogate_bad_use():
    with pytest.raises(ValueError, match=r"surrogate parameters can only be given with a surrogate name"):
        get_surrogate(surrogates.sigmoid(), scale=2)
    with pytest.raises(TypeError, match=r"surrogate must be a name or a Surrogate, got float"):
        get_surrogate(1.0)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'slope'"):
        get_surrogate("exponential", slope=2)


@pytest.mark.parametrize("name", NAMES)
def test_repr_names_surrogate_and_parameters(name):
    params = {"scale": 2.0, SHAPE_PARAM[name]: 0.75}
    text = repr(SURROGATES[name](**params))
    assert text == f"{name}(scale=2, {SHAPE_PARAM[name]}=0.75)"
    assert repr(SURROGATES[name]()).startswith(f"{name}(scale=1, {SHAPE_PARAM[name]}=")


def test_repr_of_custom():
    assert repr(surrogates.custom("1/(1+abs(u-theta))**2")).startswith("custom('")


def test_surrogate_is_hashable_and_comparable():
    assert surrogates.gaussian() == surrogates.gaussian(1, 0.5)
    assert hash(surrogates.gaussian()) == hash(surrogates.gaussian(1.0, 0.5))
    assert surrogates.gaussian() != surrogates.gaussian(width=0.6)
    assert len({surrogates.sigmoid(), surrogates.sigmoid(), surrogates.arctan()}) == 2


@pytest.mark.parametrize("theta", [0.5, 1.0, 2.0])
def test_exponential_width_is_relative_to_theta(theta):
    sur = surrogates.exponential()
    peak = sur(np.array([theta]), theta)[0]
    assert math.isclose(peak, 1.0 / (0.5 * theta), rel_tol=1e-12)
