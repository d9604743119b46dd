"""Parse user expressions into SymPy over a whitelist, never with eval.

The text is parsed by Python's :mod:`ast` and the tree is walked node by
node; every node type, name and function must be on a whitelist, otherwise a
:class:`ExpressionError` (a ``ValueError``) names what was refused. Nothing of
the text is ever executed: no ``eval``, no ``sympify`` of raw strings.

Accepted: numbers, the names passed in ``symbols``, the operators
``+ - * / ** ^`` (``^`` means power, as in mathematics, with the precedence of
``**``; numeric exponents are limited to :data:`MAX_EXPONENT` in magnitude), unary minus, and calls
of the functions in :data:`FUNCTIONS` (``exp``, ``log``, ``sqrt``, ``abs``,
``tanh``, ``sigmoid``, ``heaviside``, ``step``, ``delta``, ``max``, ``min`` ...) and the constants
``pi`` and ``E``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping

import sympy as sp

__all__ = ["ExpressionError", "FUNCTIONS", "CONSTANTS", "parse_expression", "free_names"]

MAX_LENGTH = 1000


class ExpressionError(ValueError):
    """A user expression was refused; the message says what and why."""


def _sigmoid(x: sp.Expr) -> sp.Expr:
    return 1 / (1 + sp.exp(-x))


FUNCTIONS: dict[str, object] = {
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "abs": sp.Abs,
    "Abs": sp.Abs,
    "sin": sp.sin,
    "cos": sp.cos,
    "tanh": sp.tanh,
    "atan": sp.atan,
    "arctan": sp.atan,
    "sigmoid": _sigmoid,
    "heaviside": lambda x, h0=sp.Rational(1, 2): sp.Heaviside(x, h0),
    "Heaviside": lambda x, h0=sp.Rational(1, 2): sp.Heaviside(x, h0),
    # discrete time: the unit step (1 from 0 on, so step(n - d) delays a kernel by d) and the unit impulse
    "step": lambda x: sp.Heaviside(x, 1),
    "delta": lambda x: sp.KroneckerDelta(x, 0),
    "KroneckerDelta": lambda i, j=0: sp.KroneckerDelta(i, j),
    "erf": sp.erf,
    "max": sp.Max,
    "Max": sp.Max,
    "min": sp.Min,
    "Min": sp.Min,
}

CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi, "E": sp.E}

_BINOPS = {
    ast.Add: lambda x, y: x + y,
    ast.Sub: lambda x, y: x - y,
    ast.Mult: lambda x, y: x * y,
    ast.Div: lambda x, y: x / y,
    ast.Pow: lambda x, y: x**y,
}

#: Largest |exponent| of a power of two numbers: 9**9**9 must not hang the parser.
MAX_EXPONENT = 64
#: Largest number of decimal digits of a number in an expression (literal or computed, e.g. (10**64)**64),
#: checked before the operation that would make it: SymPy computes exact powers and products digit by digit.
MAX_DIGITS = 300


def _digits(x: sp.Expr) -> float:
    """log10 |x| of a number (0 for 0), cheaply: from the float of x where it is in range, else from
    its exact integer size or mpmath's exponent; inf where x is not a finite real number."""
    if x == 0:
        return 0.0
    if x.is_Integer:
        return len(str(abs(int(x)))) - 1.0 if abs(int(x)) >= 10**15 else math.log10(abs(int(x)))
    if x.is_Rational:
        return _digits(sp.Integer(x.p)) - _digits(sp.Integer(x.q))
    try:
        value = sp.N(x, 15)
    except (ValueError, TypeError, OverflowError, ZeroDivisionError):
        return math.inf
    if not value.is_real or not value.is_finite:
        return math.inf
    if value == 0:
        return 0.0
    try:
        return math.log10(abs(float(value)))
    except (OverflowError, ValueError):
        return math.inf


def parse_expression(text: str, symbols: Mapping[str, sp.Symbol], *, what: str = "expression") -> sp.Expr:
    """Parse ``text`` into a SymPy expression using only whitelisted names.

    ``symbols`` maps the names the user may use (for a kernel: ``n`` and the
    parameter names) to SymPy symbols. Raises :class:`ExpressionError` for
    unknown names, attribute access, subscripts, imports, lambdas, strings,
    keyword arguments and any other construct outside arithmetic and calls of
    :data:`FUNCTIONS`.
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"{what} is {len(text)} characters long; at most {MAX_LENGTH} are accepted")
    if not text.strip():
        raise ExpressionError(f"{what} is empty")
    try:
        # "^" means a power (as in mathematics), with the precedence of "**".
        tree = ast.parse(text.strip().replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"{what} {text!r} is not a valid expression: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"{what} {text!r} is nested too deeply") from None

    allowed = ", ".join(sorted(symbols)) or "(none)"

    def walk(node: ast.AST) -> sp.Expr:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ExpressionError(f"{what} {text!r}: constant {node.value!r} is not a number")
            if isinstance(node.value, float) and not math.isfinite(node.value):
                raise ExpressionError(f"{what} {text!r}: constant {node.value!r} is not finite")
            if isinstance(node.value, float) and node.value and abs(math.log10(abs(node.value))) > MAX_DIGITS:
                raise ExpressionError(f"{what} {text[:80]!r}: constant {node.value!r} is out of range: at most "
                                      f"{MAX_DIGITS} digits either way (1e-{MAX_DIGITS} < |x| < 1e{MAX_DIGITS})")
            if isinstance(node.value, int) and node.value and math.log10(abs(node.value)) > MAX_DIGITS:
                raise ExpressionError(f"{what} {text[:80]!r}: the integer {str(node.value)[:20]}... has "
                                      f"{len(str(abs(node.value)))} digits; at most {MAX_DIGITS} are accepted")
            return sp.Integer(node.value) if isinstance(node.value, int) else sp.Float(node.value)
        if isinstance(node, ast.Name):
            if node.id in symbols:
                return symbols[node.id]
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            raise ExpressionError(
                f"{what} {text!r}: unknown name {node.id!r}; allowed names are {allowed}, "
                f"constants {', '.join(CONSTANTS)} and functions {', '.join(sorted(FUNCTIONS))}"
            )
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise ExpressionError(f"{what} {text!r}: operator {type(node.op).__name__} is not allowed")
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and right.is_number and (
                not right.is_finite or abs(right) > MAX_EXPONENT
            ):
                raise ExpressionError(
                    f"{what} {text!r}: exponent {right} is too large (at most {MAX_EXPONENT} in magnitude)"
                )
            if (isinstance(node.op, ast.Pow) and left.is_number and not right.is_number and left != 0
                    and sp.count_ops(right) <= 200):  # larger exponents: the kernel's expansion budget refuses them
                # b**(c + k n) expands to b**c (b**k)**n: each exact power is as large as its numeric term says
                dl = _digits(left)
                for term in sp.Add.make_args(sp.expand(right, log=False)):
                    coeff = term.as_coeff_Mul()[0]
                    size = abs(float(coeff)) * abs(dl) if coeff.is_number and math.isfinite(dl) else 0.0
                    if size > MAX_DIGITS:
                        raise ExpressionError(f"{what} {text[:80]!r}: {left}**({term}) would have about "
                                              f"{min(size, 1e300):.3g} digits (or its reciprocal would); at most "
                                              f"{MAX_DIGITS} are accepted")
            if left.is_number and right.is_number:  # the size of the result, before SymPy computes it exactly
                dl, dr = _digits(left), _digits(right)
                if isinstance(node.op, ast.Pow):
                    size = abs(float(right)) * abs(dl) if math.isfinite(dl) else math.inf
                elif isinstance(node.op, (ast.Mult, ast.Div)):
                    size = abs(dl) + abs(dr)
                else:
                    size = max(dl, dr) + 1
                if size > MAX_DIGITS:
                    raise ExpressionError(f"{what} {text[:80]!r}: a number in it would have about {min(size, 1e300):.3g} "
                                          f"digits (or its reciprocal would); at most {MAX_DIGITS} are accepted")
            return op(left, right)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return -walk(node.operand)
            if isinstance(node.op, ast.UAdd):
                return walk(node.operand)
            raise ExpressionError(f"{what} {text!r}: operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                name = node.func.id if isinstance(node.func, ast.Name) else ast.dump(node.func)[:40]
                raise ExpressionError(
                    f"{what} {text!r}: call of {name!r} is not allowed; functions: {', '.join(sorted(FUNCTIONS))}"
                )
            if node.keywords:
                raise ExpressionError(f"{what} {text!r}: keyword arguments are not allowed")
            args = [walk(arg) for arg in node.args]
            try:
                out = FUNCTIONS[node.func.id](*args)  # type: ignore[operator]
            except TypeError as exc:
                raise ExpressionError(f"{what} {text!r}: bad arguments to {node.func.id}: {exc}") from None
            if all(sp.sympify(a).is_number for a in args) and sp.sympify(out).is_number:
                if abs(_digits(sp.sympify(out))) > MAX_DIGITS:
                    raise ExpressionError(f"{what} {text[:80]!r}: {node.func.id}(...) of a number is out of range "
                                          f"(more than {MAX_DIGITS} digits, or not a finite real number)")
            return out
        if isinstance(node, ast.Attribute):
            raise ExpressionError(f"{what} {text!r}: attribute access ('.{node.attr}') is not allowed")
        raise ExpressionError(f"{what} {text!r}: {type(node).__name__} is not allowed in an expression")

    try:
        result = sp.sympify(walk(tree))
    except RecursionError:
        raise ExpressionError(f"{what} {text!r} is nested too deeply") from None
    except ZeroDivisionError:
        raise ExpressionError(f"{what} {text!r} divides by zero") from None
    if result.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        raise ExpressionError(f"{what} {text!r} is not finite (it evaluates to {result}); "
                              "expected an expression with finite constants")
    return result


def free_names(text: str) -> list[str]:
    """The variable names used in ``text`` (not functions or constants), in order of appearance.

    Only parses (``ast.parse``); names must be plain identifiers not starting
    with an underscore. Use it to learn which parameters an expression needs
    before :func:`parse_expression` checks everything else.
    """
    import re

    if not isinstance(text, str):
        raise TypeError(f"expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(text)} characters long; at most {MAX_LENGTH} are accepted")
    try:
        tree = ast.parse(str(text).strip().replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"expression {text!r} is not valid: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"expression {text[:60]!r}... is nested too deeply") from None
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and id(node) not in called and node.id not in CONSTANTS:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", node.id):
                raise ExpressionError(f"expression {text!r}: name {node.id!r} is not allowed")
            if node.id not in names:
                names.append(node.id)
    return names
