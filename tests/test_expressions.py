"""The whitelist parser: arithmetic in, anything else refused, nothing executed."""

from __future__ import annotations

import builtins
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from ift_snn.neurons import surrogates
from ift_snn.neurons.expressions import CONSTANTS, FUNCTIONS, MAX_LENGTH, ExpressionError, parse_expression

n = sp.Symbol("n", integer=True, nonnegative=True)
alpha = sp.Symbol("alpha", positive=True)
SYMBOLS = {"n": n, "alpha": alpha}


def parse(text: str) -> sp.Expr:
    return parse_expression(text, SYMBOLS)


# ----------------------------------------------------------------- accepted
@pytest.mark.parametrize(
    "text, want",
    [
        ("2*n + 3", 2 * n + 3),
        ("  n - 1  ", n - 1),
        ("n/4", n / 4),
        ("-n**2", -(n**2)),
        ("+n", n),
        ("(n + 1)*(n - 1)", (n + 1) * (n - 1)),
        ("alpha**n", alpha**n),
        ("alpha^n", alpha**n),
        ("2^3", sp.Integer(8)),  # a power, not Python's xor (which gives 1)
        ("(n+1)*(alpha^n)", (n + 1) * alpha**n),
        ("0.5*n", sp.Float(0.5) * n),
        ("1.5e-3", sp.Float(1.5e-3)),
        ("pi", sp.pi),
        ("E**n", sp.exp(n)),
        ("exp(-n/2)", sp.exp(-n / 2)),
        ("log(alpha)", sp.log(alpha)),
        ("sqrt(4)", sp.Integer(2)),
        ("abs(-3)", sp.Integer(3)),
        ("Abs(n - 3)", sp.Abs(n - 3)),
        ("sin(n) + cos(n)", sp.sin(n) + sp.cos(n)),
        ("tanh(n)", sp.tanh(n)),
        ("atan(n)", sp.atan(n)),
        ("arctan(n)", sp.atan(n)),
        ("sigmoid(n)", 1 / (1 + sp.exp(-n))),
        ("heaviside(n - 2)", sp.Heaviside(n - 2, sp.Rational(1, 2))),
        ("max(n, 3)", sp.Max(n, 3)),
        ("min(n, 3)", sp.Min(n, 3)),
    ],
)
def test_accepted(text, want):
    got = parse(text)
    assert sp.simplify(got - want) == 0, (text, got, want)


def test_every_whitelisted_function_and_constant_parses():
    for name in FUNCTIONS:
        args = "n, 2" if name in ("max", "Max", "min", "Min") else "n"
        assert isinstance(parse(f"{name}({args})"), sp.Basic), name
    for name, value in CONSTANTS.items():
        assert parse(name) == value


_LEAVES = st.one_of(st.integers(-9, 9).map(lambda k: (str(k) if k >= 0 else f"({k})", k)), st.just(("n", None)))


def _combine(children):
    ops = st.sampled_from([("+", lambda x, y: x + y), ("-", lambda x, y: x - y), ("*", lambda x, y: x * y)])
    return st.tuples(children, ops, children).map(
        lambda t: (f"({t[0][0]} {t[1][0]} {t[2][0]})", (t[1][1], t[0][1], t[2][1]))
    )


def _value(tree, at: int) -> int:
    """Evaluate the generated tree by hand (no eval): None is the symbol n."""
    if tree is None:
        return at
    if isinstance(tree, int):
        return tree
    op, left, right = tree
    return op(_value(left, at), _value(right, at))


@settings(max_examples=60, deadline=None)
@given(st.recursive(_LEAVES, _combine, max_leaves=12), st.integers(0, 20))
def test_random_integer_arithmetic(expr, at):
    text, tree = expr
    got = parse(text).subs(n, at)
    assert got == _value(tree, at), text


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 6), st.integers(0, 6))
def test_caret_is_power(base, exponent):
    assert parse(f"{base}^{exponent}") == sp.Integer(base) ** exponent
    assert parse(f"{base}^{exponent}") == parse(f"{base}**{exponent}")


CARET_PRECEDENCE = [
    ("n*alpha^n", n * alpha**n),
    ("alpha^n + 1", alpha**n + 1),
    ("alpha^n*n", n * alpha**n),
    ("2*n^2 + 1", 2 * n**2 + 1),
    ("-n^2", -(n**2)),
    ("2^3^2", sp.Integer(512)),
]


@pytest.mark.parametrize("text, want", CARET_PRECEDENCE, ids=[t for t, _ in CARET_PRECEDENCE])
def test_caret_has_power_precedence(text, want):
    got = parse(text)
    assert sp.simplify(got - want) == 0, f"{text!r} parsed as {got}, expected {want}"
    assert got == parse(text.replace("^", "**"))


def test_not_a_string_is_type_error():
    with pytest.raises(TypeError, match=r"expression must be a string, got int"):
        parse_expression(3, SYMBOLS)


# ------------------------------------------------------------------ refused
HOSTILE = [
    ("__import__('os').system('echo hi')", r"call of .* is not allowed"),
    ("().__class__.__bases__[0].__subclasses__()", r"call of .* is not allowed"),
    ("n.__class__", r"attribute access \('\.__class__'\) is not allowed"),
    ("lambda: 1", r"Lambda is not allowed"),
    ("[1,2][0]", r"Subscript is not allowed"),
    ("exp(n, x=1)", r"keyword arguments are not allowed"),
    ("exp(**{'x': 1})", r"keyword arguments are not allowed"),
    ("exp(*[n])", r"Starred is not allowed"),
    ('"abc"', r"constant 'abc' is not a number"),
    ("b'abc'", r"constant b'abc' is not a number"),
    ("True", r"constant True is not a number"),
    ("1j", r"constant 1j is not a number"),
    ("import os", r"is not a valid expression"),
    ("open('f')", r"call of 'open' is not allowed"),
    ("eval('1')", r"call of 'eval' is not allowed"),
    ("exec('1')", r"call of 'exec' is not allowed"),
    ("getattr(n, 'real')", r"call of 'getattr' is not allowed"),
    ("globals()", r"call of 'globals' is not allowed"),
    ("sin.__call__(n)", r"call of .* is not allowed"),
    ("exp(n)(1)", r"call of .* is not allowed"),
    ("__builtins__", r"unknown name '__builtins__'"),
    ("exp", r"unknown name 'exp'"),
    ("x * 5000", r"unknown name 'x'"),
    ("n" + " + n" * 1250, rf"is 5001 characters long; at most {MAX_LENGTH} are accepted"),
    ("", r"expression is empty"),
    ("   \n\t", r"expression is empty"),
    ("n if n else 1", r"IfExp is not allowed"),
    ("n < 1", r"Compare is not allowed"),
    ("n and 1", r"BoolOp is not allowed"),
    ("not n", r"operator Not is not allowed"),
    ("~n", r"operator Invert is not allowed"),
    ("n % 2", r"operator Mod is not allowed"),
    ("n // 2", r"operator FloorDiv is not allowed"),
    ("n @ n", r"operator MatMult is not allowed"),
    ("n | 1", r"operator BitOr is not allowed"),
    ("(n, 1)", r"Tuple is not allowed"),
    ("{n}", r"Set is not allowed"),
    ("{'a': n}", r"Dict is not allowed"),
    ("[x for x in (1,)]", r"ListComp is not allowed"),
    ("(n := 1)", r"NamedExpr is not allowed"),
    ("f'{n}'", r"JoinedStr is not allowed"),
    ("n = 1", r"is not a valid expression"),
    ("n; import os", r"is not a valid expression"),
    ("exp()", r"bad arguments to exp"),
    ("sigmoid(n, 2)", r"bad arguments to sigmoid"),
    ("(" * 300 + "n" + ")" * 300, r"is not a valid expression"),
]


class Sentinel:
    """Records every call of the dangerous builtins and os/subprocess functions it replaces,
    and every import of a module outside SymPy."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, tuple]] = []
        real_import = builtins.__import__

        def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
            # SymPy imports its own submodules lazily (e.g. to format an error); anything else is recorded
            if level == 0 and name.partition(".")[0] not in ("sympy", "mpmath"):
                self.calls.append(("__import__", (name,)))
            return real_import(name, globals, locals, fromlist, level)

        monkeypatch.setattr(builtins, "__import__", recording_import)
        for owner, name in [(builtins, "eval"), (builtins, "exec"), (builtins, "open"), (builtins, "globals"),
                            (os, "system"), (os, "popen"), (subprocess, "Popen")]:
            monkeypatch.setattr(owner, name, self._recorder(f"{owner.__name__}.{name}"))
        self.calls.clear()  # monkeypatch.setattr itself imports inspect

    def _recorder(self, label):
        def record(*args, **kwargs):
            self.calls.append((label, args))
            raise AssertionError(f"{label} was called with {args!r}")

        return record


def test_sentinel_sees_calls(monkeypatch):
    with monkeypatch.context() as patch:
        sentinel = Sentinel(patch)
        with pytest.raises(AssertionError):
            os.system("true")
        __import__("math")
    assert ("os.system", ("true",)) in sentinel.calls
    assert ("__import__", ("math",)) in sentinel.calls


def _guarded(monkeypatch, func, *args):
    """Run func(*args) with the sentinel in place; return (exception or None, recorded calls).

    The exception is checked after the sentinel is gone, so that pytest's own
    machinery (regex matching, reporting) never trips it.
    """
    caught = None
    with monkeypatch.context() as patch:
        sentinel = Sentinel(patch)
        try:
            func(*args)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            caught = exc
        calls = list(sentinel.calls)
    return caught, calls


@pytest.mark.parametrize("text, match", HOSTILE, ids=[repr(t)[:40] for t, _ in HOSTILE])
def test_hostile_string_refused_without_executing(text, match, monkeypatch, capfd):
    caught, calls = _guarded(monkeypatch, parse_expression, text, SYMBOLS)
    assert calls == [], f"parsing {text!r} called {calls}"
    with pytest.raises(ExpressionError, match=match):
        if caught is not None:
            raise caught
    out, _ = capfd.readouterr()
    assert "hi" not in out


def test_refusal_message_lists_what_is_allowed():
    with pytest.raises(ExpressionError, match=r"allowed names are alpha, n, constants pi, E and functions .*exp"):
        parse("beta*n")
    with pytest.raises(ExpressionError, match=r"call of 'open' is not allowed; functions: .*sigmoid"):
        parse("open(n)")


def test_length_limit_is_inclusive():
    text = "n" + "+n" * ((MAX_LENGTH - 1) // 2)
    assert len(text) == MAX_LENGTH - (MAX_LENGTH - 1) % 2
    assert parse(text) == n * (1 + (MAX_LENGTH - 1) // 2)
    with pytest.raises(ExpressionError, match=rf"{MAX_LENGTH + 1} characters long"):
        parse(text + " " * (MAX_LENGTH + 1 - len(text)))


def test_deep_unary_chain_refused_cleanly():
    text = "-" * (MAX_LENGTH - 1) + "1"
    try:
        result = parse_expression(text, SYMBOLS)
    except ExpressionError:
        return
    assert result == -1


def _parse_in_child(conn, text):
    try:
        parse_expression(text, {})
        conn.send("accepted")
    except ExpressionError as exc:
        conn.send(f"ExpressionError: {exc}")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(f"{type(exc).__name__}: {exc}")


@pytest.mark.skipif(sys.platform == "win32", reason="needs the fork start method")
def test_huge_integer_power_is_bounded():
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_parse_in_child, args=(child, "9**9**9"), daemon=True)
    proc.start()
    try:
        done = parent.poll(1.5)
        result = parent.recv() if done else None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
    assert result is not None, "parse_expression('9**9**9') did not return within 1.5 s"
    assert result.startswith("ExpressionError"), result


# ------------------------------------------------------- custom surrogates
@settings(max_examples=30, deadline=None)
@given(st.floats(0.2, 3.0), st.floats(-5.0, 5.0))
def test_custom_surrogate_matches_numpy(theta, shift):
    sur = surrogates.custom("1/(1+abs(u-theta))**2")
    u = theta + shift + np.linspace(-4.0, 4.0, 101)
    want = 1.0 / (1.0 + np.abs(u - theta)) ** 2
    np.testing.assert_allclose(sur(u, theta), want, rtol=1e-12, atol=0)


def test_custom_surrogate_with_constant_and_caret():
    sur = surrogates.custom("k*exp(-(abs(u-theta)^2))", k=2.5)
    u = np.linspace(-2.0, 4.0, 61)
    np.testing.assert_allclose(sur(u, 1.2), 2.5 * np.exp(-np.abs(u - 1.2) ** 2), rtol=1e-12, atol=0)
    assert sur.constants == (("k", 2.5),)
    assert repr(sur).startswith("custom(")


@pytest.mark.parametrize(
    "text, match",
    [
        ("u.real", r"surrogate 'u\.real': attribute access \('\.real'\) is not allowed"),
        ("u*k", r"unknown name 'k'; allowed names are theta, u"),
        ("__import__('os')", r"call of '__import__' is not allowed"),
    ],
)
def test_custom_surrogate_refused(text, match, monkeypatch):
    caught, calls = _guarded(monkeypatch, surrogates.custom, text)
    assert calls == []
    with pytest.raises(ExpressionError, match=match):
        if caught is not None:
            raise caught


def test_custom_surrogate_constant_clash():
    with pytest.raises(ValueError, match=r"clash with the variables u and theta"):
        surrogates.custom("u*theta", theta=2.0)
