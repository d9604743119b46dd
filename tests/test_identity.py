"""The polynomial identity test the proofs try first (ift_snn/symbolic/identity.py): True only for identities
(checked against SymPy's simplify and at random points), and True for the identities the proofs need."""

import random

import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from ift_snn.symbolic.identity import equal

x, y, z, w = sp.symbols("x y z w", real=True)


@pytest.mark.parametrize("a, b", [
    ((x + y) ** 3 * (x - 2 * z), sp.expand((x + y) ** 3 * (x - 2 * z))),
    (x * (1 / x) + y, 1 + y),
    (x ** 3 / x ** 5 * (x + y), 1 / x + y / x ** 2),
    ((1 / x - 1 / y) * x * y, y - x),
    (sp.cos(2 * w), 2 * sp.cos(w) ** 2 - 1),
    (sp.cos(2 * w), 1 - 2 * sp.sin(w) ** 2),
    (sp.sin(3 * w) * x, x * (3 * sp.sin(w) - 4 * sp.sin(w) ** 3)),
    (sp.sin(w) ** 4 + sp.cos(w) ** 4, 1 - 2 * sp.sin(w) ** 2 * sp.cos(w) ** 2),
    (sp.cos(5 * w) * sp.sin(2 * w) / x, sp.expand_trig(sp.cos(5 * w) * sp.sin(2 * w)) / x),
    (sp.exp(z) * (x + 1), x * sp.exp(z) + sp.exp(z)),
    (sp.Rational(3, 7) * (x + sp.Rational(1, 3)), sp.Rational(3, 7) * x + sp.Rational(1, 7)),
    (sp.Integer(2), sp.Rational(4, 2)),
])
def test_identities_are_shown(a, b):
    assert equal(a, b)
    assert equal(b, a)


@pytest.mark.parametrize("a, b", [
    (x + y, x + y + 1),
    (x * y, x * z),
    (1 / x, x),
    (sp.cos(2 * w), sp.cos(w) ** 2),
    (sp.sin(w) ** 2, 1 + sp.cos(w) ** 2),
    (sp.cos(w), sp.cos(-w) + 1),
    (sp.Integer(1), sp.Integer(2)),
    (1 / (x + y), 1 / x + 1 / y),
])
def test_non_identities_are_not_shown(a, b):
    assert not equal(a, b)


@pytest.mark.parametrize("a, b", [
    (sp.exp(x) * sp.exp(y), sp.exp(x + y)),  # a relation among atoms it does not know
    (sp.Float(0.5) * x, x / 2),
    ((x ** 2 - 1) / (x - 1), x + 1),
])
def test_what_it_cannot_show_it_leaves_to_simplify(a, b):
    assert not equal(a, b)
    assert sp.simplify(a - b) == 0


_atom = st.sampled_from([x, y, z, 1 / x, 1 / y, sp.cos(w), sp.sin(w), sp.cos(2 * w), sp.sin(3 * w),
                         sp.Integer(2), sp.Rational(-1, 3)])


@st.composite
def _expr(draw, depth=3):
    if depth == 0 or draw(st.booleans()):
        return draw(_atom)
    op = draw(st.sampled_from(["add", "mul", "pow"]))
    a, b = draw(_expr(depth - 1)), draw(_expr(depth - 1))
    if op == "add":
        return a + b
    if op == "mul":
        return a * b
    return a ** draw(st.integers(1, 3))


def _numeric(expr, seed: int) -> complex:
    rng = random.Random(seed)
    values = {s: sp.Rational(rng.randint(1, 97), rng.randint(1, 13)) for s in (x, y, z, w)}
    return complex(sp.N(expr.xreplace(values), 30))


@given(_expr(), st.sampled_from([0, 1, sp.Rational(-2, 3)]), st.sampled_from([x, 1 / y, sp.cos(w), sp.sin(w) ** 2]))
def test_equal_exactly_when_the_difference_vanishes(a, c, t):
    """b = a written out (expand, expand_trig) times sin(w)^2 + cos(w)^2 (= 1: the relation must be used), plus
    c t: an identity when c = 0, and not one otherwise (a nonzero multiple of t, which no relation among the atoms
    cancels). ``equal`` says which, and what it calls equal is equal at random points."""
    b = sp.expand(sp.expand_trig(a) * (sp.sin(w) ** 2 + sp.cos(w) ** 2)) + c * t
    assert equal(a, b) == (c == 0), (a, b)
    if c == 0:
        for seed in range(2):
            assert abs(_numeric(a - b, seed)) <= 1e-20 * (1 + abs(_numeric(a, seed)) + abs(_numeric(b, seed)))


def test_nested_deeper_than_the_recursion_limit():
    """An unrolled scan nests as deep as its horizon: the walk uses no recursion."""
    e = y
    for k in range(3000):
        e = sp.Mul(x, sp.Add(e, 0, evaluate=False), evaluate=False)  # x (x (... (x y)))
    assert equal(e, x ** 3000 * y)
    assert not equal(e, x ** 2999 * y)
