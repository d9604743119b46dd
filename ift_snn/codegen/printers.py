"""Printers from SymPy expressions to CUDA C and to Python for Numba.

Both are configured by attributes (float32 vs float64) and override one
construct at a time:

- literals carry the dtype (``2.0F`` / ``2.0``; Python literals are cast by
  the kernel's store), math functions their suffix (``expf`` / ``exp``);
- small integer powers are expanded to products (``x*x``, ``1.0F/(x*x)``);
- Heaviside and Piecewise become masks (``(float)(x >= 0)``, a sum of
  mutually exclusive masked terms), never a chain of ternaries;
- no fast-math: nothing here reassociates or approximates.
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.ast import float32, float64, real
from sympy.printing.c import C99CodePrinter
from sympy.printing.pycode import PythonCodePrinter

__all__ = ["CudaPrinter", "NumbaPrinter", "cuda_code", "python_code"]

MAX_EXPANDED_POWER = 4


def _masks(pieces):
    """[(expr, cond)] of a Piecewise -> [(expr, exclusive condition)]."""
    out = []
    earlier = sp.false
    for expr, cond in pieces:
        exclusive = sp.And(cond, sp.Not(earlier)) if earlier != sp.false else cond
        out.append((expr, sp.simplify_logic(exclusive) if exclusive not in (sp.true, sp.false) else exclusive))
        earlier = sp.Or(earlier, cond)
    return out


class _MaskPrinting:
    """Constructs both printers share; subclasses say how a 0/1 mask and a comparison are written."""

    def _mask(self, comparison: str) -> str:
        raise NotImplementedError

    def _compare(self, x: str, op: str) -> str:
        raise NotImplementedError

    def _print_Pow(self, expr):
        base, exp = expr.as_base_exp()
        if exp.is_Integer and 1 < abs(int(exp)) <= MAX_EXPANDED_POWER:
            prod = "*".join([self.parenthesize(base, sp.printing.precedence.PRECEDENCE["Mul"])] * abs(int(exp)))
            return f"({prod})" if exp > 0 else f"({self._print(sp.Float(1.0))}/({prod}))"
        return super()._print_Pow(expr)

    def _print_Heaviside(self, expr):
        x = self._print(expr.args[0])
        h0 = expr.args[1] if len(expr.args) > 1 else sp.Rational(1, 2)
        if h0 == 1:
            return self._mask(self._compare(x, ">="))
        if h0 == 0:
            return self._mask(self._compare(x, ">"))
        return (f"({self._mask(self._compare(x, '>'))} + {self._print(sp.Float(h0))}*"
                f"{self._mask(self._compare(x, '=='))})")

    def _print_Piecewise(self, expr):
        terms = []
        for value, cond in _masks(expr.args):
            if cond == sp.false or value == 0:
                continue
            if cond == sp.true:
                terms.append(f"({self._print(value)})")
            else:
                terms.append(f"{self._mask(self._print(cond))}*({self._print(value)})")
        return "(" + " + ".join(terms) + ")" if terms else self._print(sp.Float(0.0))


class CudaPrinter(_MaskPrinting, C99CodePrinter):
    """C99 for CUDA device code in float or double."""

    def __init__(self, dtype: str = "f32", settings=None):
        self.dtype = dtype
        alias = float32 if dtype == "f32" else float64
        super().__init__(settings={"type_aliases": {real: alias}, **(settings or {})})

    @property
    def _suffix(self) -> str:
        return "f" if self.dtype == "f32" else ""

    @property
    def ctype(self) -> str:
        return "float" if self.dtype == "f32" else "double"

    def _mask(self, comparison: str) -> str:
        return f"(({self.ctype})({comparison}))"

    def _compare(self, x: str, op: str) -> str:
        return f"{x} {op} 0"

    def _print_Relational(self, expr):
        return f"{self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)}"

    def _float_args(self, expr):
        # Integer literals would pick the host-only int overloads of fmax/fmin: print them as floats.
        return [self._print(sp.Float(a) if a.is_Integer else a) for a in expr.args]

    def _print_Max(self, expr):
        out = None
        for a in self._float_args(expr):
            out = a if out is None else f"fmax{self._suffix}({out}, {a})"
        return out

    def _print_Min(self, expr):
        out = None
        for a in self._float_args(expr):
            out = a if out is None else f"fmin{self._suffix}({out}, {a})"
        return out


class NumbaPrinter(_MaskPrinting, PythonCodePrinter):
    """Python with the math module, for scalar code inside Numba loops."""

    def __init__(self, dtype: str = "f64", settings=None):
        self.dtype = dtype
        super().__init__(settings={"fully_qualified_modules": True, **(settings or {})})

    def _literal(self, text: str) -> str:
        # float32 kernels keep float32 arithmetic: a bare Python literal would promote to float64.
        return f"np.float32({text})" if self.dtype == "f32" else text

    def _print_Float(self, expr):
        return self._literal(super()._print_Float(expr))

    def _print_Integer(self, expr):
        return self._literal(f"{int(expr)}.0")

    def _print_Rational(self, expr):
        return self._literal(repr(float(expr)))

    def _print_Half(self, expr):
        return self._literal("0.5")

    def _print_One(self, expr):
        return self._literal("1.0")

    def _print_Zero(self, expr):
        return self._literal("0.0")

    def _print_NegativeOne(self, expr):
        return self._literal("-1.0")

    def _mask(self, comparison: str) -> str:
        # parenthesised: a condition like "(a) and (b)" binds looser than "*"
        return f"(({comparison}) * {self._literal('1.0')})"

    def _compare(self, x: str, op: str) -> str:
        return f"{x} {op} 0"

    def _print_Pow(self, expr):
        if expr.exp == -1:
            return f"({self._literal('1.0')}/{self.parenthesize(expr.base, sp.printing.precedence.PRECEDENCE['Pow'])})"
        return super()._print_Pow(expr)

    def _print_Max(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"max({out}, {a})"
        return out

    def _print_Min(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"min({out}, {a})"
        return out

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_floor(self, expr):
        # np.floor keeps the float type in Numba (math.floor returns int64, which overflows past 2**63)
        return f"np.floor({self._print(expr.args[0])})"

    def _print_erf(self, expr):
        return f"math.erf({self._print(expr.args[0])})"


def cuda_code(expr: sp.Expr, dtype: str = "f32") -> str:
    return CudaPrinter(dtype).doprint(expr)


def python_code(expr: sp.Expr, dtype: str = "f64") -> str:
    return NumbaPrinter(dtype).doprint(expr)
