"""Printers: SymPy expressions to CUDA C, scalar Python for Numba and vectorised NumPy;
the loop tree of :mod:`ift_snn.codegen.tree` to a CUDA, Numba or NumPy function.

Expression printers are configured by attributes (float32 vs float64) and
override one construct at a time:

- literals carry the dtype (``2.0F`` / ``2.0`` / ``np.float32(2.0)``: a bare
  Python literal would promote float32 arithmetic to float64), math functions
  their suffix (``expf`` / ``exp``);
- small integer powers are expanded to products (``x*x``, ``1.0F/(x*x)``);
- Heaviside and Piecewise become masks (``(float)(x >= 0)``, a sum of
  mutually exclusive masked terms), never a chain of ternaries;
- no fast-math: nothing here reassociates or approximates.

Tree printers (:func:`print_cuda`, :func:`print_numba`, :func:`print_numpy`)
only choose syntax; what is loaded, computed, stored, restarted and returned
is decided by :func:`ift_snn.codegen.tree.lower`. CUDA runs one thread per
neuron; Numba a time loop over chunks of neurons with the state of a chunk in
small arrays; NumPy a Python time loop whose every statement acts on the
whole neuron vector ``[j_begin:j_end]``.
"""

from __future__ import annotations

import ast
import math
from itertools import groupby

import sympy as sp
from sympy.codegen.ast import float32, float64, real
from sympy.printing.c import C99CodePrinter
from sympy.printing.numpy import _known_functions_numpy
from sympy.printing.pycode import PythonCodePrinter

from ..symbolic.recurrence import PARAMETER as WIDE_PREFIX
from .ir import RING_MIN
from .tree import (
    COUPLING_INIT,
    COUPLING_LAST,
    COUPLING_MATRIX,
    FINAL,
    INPUT,
    MATRIX,
    OUTPUT,
    PARAM,
    RING_HEAD,
    SIZE,
    VECTOR,
    WORK,
    Assign,
    Couple,
    Final,
    Function,
    InitState,
    Invariant,
    Load,
    Ring,
    RingInit,
    Source,
    Store,
    TimeLoop,
    UpdateState,
)

__all__ = ["CudaPrinter", "NumbaPrinter", "NumpyPrinter", "cuda_code", "python_code", "numpy_code",
           "print_cuda", "print_numba", "print_numpy", "print_numpy_map", "HOST_ARGS", "MAP_ARGS"]

#: The arguments the CPU targets (Numba, NumPy) take after the sizes: chunk width and neuron range.
HOST_ARGS = ("chunk", "j_begin", "j_end")
#: The trailing arguments of a pointwise map: the range of flat elements it computes.
MAP_ARGS = ("e_begin", "e_end")

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

    def _as_f32(self, x: str) -> str:
        raise NotImplementedError

    def _print_NonFinite(self, expr):
        """The finite guard (codegen/ir.py): x - x, 0 for a finite x, NaN otherwise; in a float32 kernel of
        the value as float32 (a float64 local, from a widened state, is stored as float32: a value beyond
        float32's range is inf there)."""
        x = self.parenthesize(expr.args[0], sp.printing.precedence.PRECEDENCE["Add"] + 1)
        if self.dtype == "f32":
            x = self._as_f32(x)
        return f"({x} - {x})"

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

    def _as_f32(self, x: str) -> str:
        return f"((float)({x}))"

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

    def _as_f32(self, x: str) -> str:
        return f"np.float32({x})"

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


class NumpyPrinter(NumbaPrinter):
    """Python over whole NumPy arrays: np.exp, np.maximum / np.minimum, np.abs, masks as
    ``(cond) * 1.0`` in the array dtype, ``&`` / ``|`` / ``~`` for conditions. float32 stays float32:
    literals and constants are np.float32 in f32 kernels, and every function keeps its input's dtype."""

    def __init__(self, dtype: str = "f64", settings=None):
        super().__init__(dtype, settings)
        self.known_functions = {k: "np." + v for k, v in _known_functions_numpy.items()}
        self.known_functions["erf"] = "scipy.special.erf"

    def _print_Pi(self, expr):
        return self._literal(repr(math.pi))

    def _print_Exp1(self, expr):
        return self._literal(repr(math.e))

    def _print_Pow(self, expr):
        if expr.exp == sp.Rational(1, 2):
            return f"np.sqrt({self._print(expr.base)})"
        if expr.exp == sp.Rational(-1, 2):
            return f"({self._literal('1.0')}/np.sqrt({self._print(expr.base)}))"
        return super()._print_Pow(expr)

    def _nested(self, fn: str, expr) -> str:
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"{fn}({out}, {a})"
        return out

    def _print_Max(self, expr):
        return self._nested("np.maximum", expr)

    def _print_Min(self, expr):
        return self._nested("np.minimum", expr)

    def _print_Abs(self, expr):
        return f"np.abs({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        return f"np.sign({self._print(expr.args[0])})"

    def _print_erf(self, expr):
        return f"scipy.special.erf({self._print(expr.args[0])})"

    def _print_And(self, expr):
        return "(" + " & ".join(f"({self._print(a)})" for a in expr.args) + ")"

    def _print_Or(self, expr):
        return "(" + " | ".join(f"({self._print(a)})" for a in expr.args) + ")"

    def _print_Not(self, expr):
        return f"(~({self._print(expr.args[0])}))"


def cuda_code(expr: sp.Expr, dtype: str = "f32") -> str:
    return CudaPrinter(dtype).doprint(expr)


def python_code(expr: sp.Expr, dtype: str = "f64") -> str:
    return NumbaPrinter(dtype).doprint(expr)


def numpy_code(expr: sp.Expr, dtype: str = "f64") -> str:
    return NumpyPrinter(dtype).doprint(expr)


# ------------------------------------------------------------------ tree printers
class _TreePrinter:
    """Walks a :class:`~ift_snn.codegen.tree.Function`; subclasses print each kind of statement.

    Subclasses say how element ``row`` of a (rows, M) array is addressed (:meth:`at`) and how a
    counted loop opens (:meth:`loop`); reads of vectors, rows of grouped vectors and ring elements
    in expressions are resolved here (:meth:`code`).
    """

    #: A loop closes by dedenting (Python) or with a brace (C).
    CLOSE = None

    def __init__(self, fn: Function, printer):
        self.fn = fn
        self.pr = printer
        self.lines: list[str] = []
        self.refs: dict[sp.Symbol, tuple] = {}
        for a in fn.vectors:
            if a.rows:
                self.refs.update({sym: ("row", a, r) for r, sym in enumerate(a.rows)})
            else:
                self.refs[a.symbol] = ("vector", a, -1)
        for ring in fn.rings:
            self.refs.update({sym: ("ring", ring, i) for i, sym in enumerate(ring.states)})
        self.in_ring = {sym for ring in fn.rings for sym in ring.states}
        #: Invariants computed per neuron (they read a per-neuron parameter): the Numba printer keeps them in arrays.
        self.per_neuron: tuple[sp.Symbol, ...] = ()
        self.n_acc = 0
        #: States carried in float64 in a float32 kernel (:attr:`ScanKernel.wide`; the acc_ sums by name), and the
        #: locals computed from them.
        self.wide_names = {s.name for s in fn.kernel.wide}
        self.wide_locals: set[str] = set()
        #: Constant tables (the taps of a long tap list) by values -> name, printed before the function.
        self.tables: dict[tuple[float, ...], str] = {}
        #: Per ring: (first increment position, table, common factor) where a loop over a table adds them.
        self.tabled: dict = {}

    def wide(self, name: str) -> bool:
        """Whether a state (or its ``next_`` local) is carried in float64 in a float32 kernel: the parameter
        sums acc_<p>, each a sum over every step of the sequence (T terms rounded in float32 would lose about
        T eps relative; in float64 the terms' own float32 rounding is what is left), and the states of
        :attr:`ScanKernel.wide` (filters in the parallel form)."""
        if self.fn.dtype != "f32":
            return False
        name = name.removeprefix("next_")
        return name.startswith(WIDE_PREFIX) or name in self.wide_names

    def reads_wide(self, name: str, expr) -> bool:
        """Whether a local is float64 in a float32 kernel: it is a wide state's next value, or it reads a wide
        state or another such local (CUDA declares its type; Numba and NumPy promote by themselves)."""
        if self.wide(name) or (self.fn.dtype == "f32" and {s.name for s in sp.sympify(expr).free_symbols}
                                & (self.wide_names | self.wide_locals)):
            self.wide_locals.add(name)
            return True
        return False

    def at(self, name: str, row: str, index: str) -> str:
        raise NotImplementedError

    def loop(self, depth: int, var: str, n: int) -> None:
        raise NotImplementedError

    def end_loop(self, depth: int) -> None:
        if self.CLOSE:
            self.emit(depth, self.CLOSE)

    @staticmethod
    def slot(ring: Ring, i) -> str:
        """The slot of ring element ``i`` (an int or an index expression)."""
        return f"({RING_HEAD} + {i}) % {ring.arg.length}" if i != 0 else f"{RING_HEAD} % {ring.arg.length}"

    def ref(self, sym: sp.Symbol, index: str) -> str:
        kind, arg, pos = self.refs[sym]
        if kind == "vector":
            return f"{arg.name}[{index}]"
        if kind == "row":
            return self.at(arg.name, str(pos), index)
        return self.at(arg.arg.name, self.slot(arg, pos), index)

    def code(self, expr, index: str) -> str:
        """``expr`` printed, each vector, row or ring element read at ``index`` (the neuron, in the
        target's syntax)."""
        expr = sp.sympify(expr)
        repl = {sym: sp.Symbol(self.ref(sym, index), real=True) for sym in expr.free_symbols if sym in self.refs}
        return self.pr.doprint(expr.xreplace(repl) if repl else expr)

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def statements(self, body) -> None:
        """Top-level statements, grouped by kind (a group of InitStates or Finals is one block)."""
        for kind, group in groupby(body, key=type):
            getattr(self, f"top_{kind.__name__}")(list(group))

    def _pattern(self, exprs) -> tuple | None:
        """A loop for exprs[k], k = 0..n-1, when they follow one pattern: ("same", expr), or
        ("ref", kind, arg, first, step) for reads of rows or ring elements first + step k (step +-1)."""
        exprs = [sp.sympify(e) for e in exprs]
        if all(e == exprs[0] for e in exprs):
            return ("same", exprs[0])
        if not all(e.is_Symbol and e in self.refs for e in exprs):
            return None
        kinds = {self.refs[e][:2] for e in exprs}
        if len(kinds) != 1 or next(iter(kinds))[0] == "vector":
            return None
        pos = [self.refs[e][2] for e in exprs]
        step = pos[1] - pos[0] if len(pos) > 1 else 1
        if step not in (1, -1) or any(p != pos[0] + step * k for k, p in enumerate(pos)):
            return None
        return ("ref", *next(iter(kinds)), pos[0], step)

    def assign_all(self, depth: int, targets, exprs, index: str, op: str = "=", end: str = "") -> None:
        """targets[k](k) <op> exprs[k] for every k: one loop when the expressions follow a pattern
        (:meth:`_pattern`), else one statement each. ``targets`` maps a position (int or loop variable) to
        the printed target."""
        pattern = self._pattern(exprs) if len(exprs) > 2 else None
        if pattern is None:
            for k, e in enumerate(exprs):
                self.emit(depth, f"{targets(k)} {op} {self.code(e, index)}{end}")
            return
        self.loop(depth, "_k", len(exprs))
        if pattern[0] == "same":
            value = self.code(pattern[1], index)
        else:
            _, kind, arg, first, step = pattern
            pos = f"{first} + _k" if step == 1 else f"{first} - _k"
            value = self.at(arg.name, pos, index) if kind == "row" else self.at(arg.arg.name, self.slot(arg, pos), index)
        self.emit(depth + 1, f"{targets('_k')} {op} {value}{end}")
        self.end_loop(depth)

    def ring_inits(self, depth: int, inits, index: str, end: str = "") -> None:
        for st in inits:
            ring = st.ring
            self.assign_all(depth, lambda k, r=ring: self.at(r.arg.name, self.slot(r, k), index), st.exprs, index,
                            end=end)

    def table(self, values) -> str:
        """The name of a constant table of ``values`` (one per distinct list), printed before the function."""
        key = tuple(float(v) for v in values)
        if key not in self.tables:
            self.tables[key] = self.table_name(len(self.tables))
        return self.tables[key]

    def table_name(self, k: int) -> str:
        return f"_t{k}"

    def table_lines(self) -> list[str]:
        """The tables as module-level NumPy arrays of the kernel's dtype (Numba reads them as constants)."""
        dtype = "np.float32" if self.fn.dtype == "f32" else "np.float64"
        return [f"{name} = np.array([{', '.join(repr(v) for v in values)}], dtype={dtype})"
                for values, name in self.tables.items()]

    def plan_tables(self, pairs) -> set:
        """Decide, per ring, whether its increments are one loop over a table: at least RING_MIN of them, each
        a number times one common factor (a tap list's b_k x). Returns the members whose increments the
        loop covers (no ``next_`` value of their own)."""
        inc = dict(pairs)
        covered = set()
        for ring in self.fn.rings:
            terms = {i: sp.sympify(inc[sym]).as_coeff_Mul() for i, sym in enumerate(ring.states[:-1])
                     if inc[sym] != 0}
            factors = {f for _, f in terms.values()}
            if len(terms) < RING_MIN or len(factors) != 1 or not all(c.is_Number for c, _ in terms.values()):
                continue
            lo, hi = min(terms), max(terms)
            values = [terms[i][0] if i in terms else 0 for i in range(lo, hi + 1)]
            self.tabled[ring] = (lo, self.table(values), factors.pop(), len(values))
            covered |= {ring.states[i] for i in terms}
        return covered

    #: Statement terminator; whether scalar states get a ``next_`` local (else written in place, in turn).
    END = ""
    NEXT_FOR_SCALARS = True

    def local(self, name: str, expr, index: str) -> str:
        """The statement ``name = expr`` defining a local in the target's syntax."""
        return f"{name} = {self.code(expr, index)}{self.END}"

    def assign_state(self, state: sp.Symbol, expr, index: str) -> str:
        """The statement that gives a scalar state its new value (its ``next_`` local, by default)."""
        return f"{state.name} = next_{state.name}{self.END}"

    def update_state(self, depth: int, pairs, index: str, ring_index: str) -> None:
        """One step's state update: every new value computed from the old ones (``next_<state>`` locals; a
        tabled ring's common factor as ``next_<ring>``), then the scalar states assigned, then the rings
        written (:meth:`ring_update`)."""
        covered = self.plan_tables(pairs)
        for ring, (_, _, factor, _) in self.tabled.items():
            self.emit(depth, self.local(f"next_{ring.arg.name}", factor, index))
        for s, e in pairs:
            ringed = s in self.in_ring
            if s not in covered and (e != 0 if ringed else self.NEXT_FOR_SCALARS):
                self.emit(depth, self.local(f"next_{s.name}", e, index))
        for s, e in pairs:
            if s not in self.in_ring:
                self.emit(depth, self.assign_state(s, e, index))
        self.ring_update(depth, pairs, ring_index, lambda s: f"next_{s.name}", end=self.END)

    def ring_update(self, depth: int, pairs, index: str, value, end: str = "") -> None:
        """The ring writes of one step: the last element's new value into the slot of the first, every
        other increment added in place (``value(sym)`` is the printed increment computed before; a tabled
        ring's increments in a loop, table[k] times its factor ``next_<ring>``)."""
        inc = dict(pairs)
        for ring in self.fn.rings:
            last = ring.states[-1]
            new = value(last) if inc[last] != 0 else self.pr.doprint(sp.Float(0.0))
            self.emit(depth, f"{self.at(ring.arg.name, self.slot(ring, 0), index)} = {new}{end}")
            if ring in self.tabled:
                lo, table, _, n = self.tabled[ring]
                self.loop(depth, "_k", n)
                slot = self.slot(ring, f"{lo + 1} + _k")
                self.emit(depth + 1, f"{self.at(ring.arg.name, slot, index)} += {table}[_k] * next_{ring.arg.name}{end}")
                self.end_loop(depth)
                continue
            for i, sym in enumerate(ring.states[:-1]):
                if inc[sym] != 0:
                    self.emit(depth, f"{self.at(ring.arg.name, self.slot(ring, i + 1), index)} += {value(sym)}{end}")

    def declare(self, name: str) -> str:
        """A statement that starts the accumulator ``name`` at zero (in the kernel's dtype)."""
        return f"{name} = {self.pr.doprint(sp.Float(0.0))}"

    def dot_loops(self, depth: int, expr, index: str, end: str = "") -> sp.Expr:
        """``expr`` with each long sum sum_k c A[r + k] R[p +- k] (rows of a grouped vector times ring
        elements: a filter's initial state against a shift register) accumulated in a loop first, and
        replaced by the accumulator; everything else stays as it is."""
        expr = sp.sympify(expr)
        if not (expr.is_Add and self.fn.rings):
            return expr
        groups: dict[tuple, list[tuple[int, int, sp.Expr]]] = {}
        tabled: dict[Ring, dict[int, tuple[sp.Expr, sp.Expr]]] = {}
        for term in expr.args:
            factors = term.args if term.is_Mul else (term,)
            refs = [f for f in factors if f.is_Symbol and f in self.refs]
            kinds = sorted(self.refs[f][0] for f in refs)
            coeff, rest = term.as_coeff_Mul()
            if kinds == ["ring"] and rest.is_Symbol:  # a number times a ring element: a table's dot product
                tabled.setdefault(self.refs[rest][1], {})[self.refs[rest][2]] = (coeff, term)
                continue
            if kinds != ["ring", "row"]:
                continue
            row, ring = sorted(refs, key=lambda f: self.refs[f][0] != "row")
            coeff = sp.Mul(*[f for f in factors if f not in (row, ring)])
            key = (self.refs[row][1], self.refs[ring][1], coeff)
            groups.setdefault(key, []).append((self.refs[row][2], self.refs[ring][2], term))
        for (arg, ring, coeff), items in groups.items():
            items.sort()
            if len(items) < 3:
                continue
            step = items[1][1] - items[0][1]
            r0, p0 = items[0][0], items[0][1]
            if step not in (1, -1) or any((r, p) != (r0 + k, p0 + step * k) for k, (r, p, _) in enumerate(items)):
                continue
            name = f"_acc{self.n_acc}"
            self.n_acc += 1
            self.emit(depth, self.declare(name) + end)
            self.loop(depth, "_k", len(items))
            pos = f"{p0} + _k" if step == 1 else f"{p0} - _k"
            self.emit(depth + 1, f"{name} += {self.at(arg.name, f'{r0} + _k', index)} * "
                                 f"{self.at(ring.arg.name, self.slot(ring, pos), index)}{end}")
            self.end_loop(depth)
            expr = expr - sp.Add(*[t for _, _, t in items]) + coeff * sp.Symbol(name, real=True)
        for ring, items in tabled.items():
            if len(items) < RING_MIN:
                continue
            lo, hi = min(items), max(items)
            table = self.table([items[p][0] if p in items else 0 for p in range(lo, hi + 1)])
            name = f"_acc{self.n_acc}"
            self.n_acc += 1
            self.emit(depth, self.declare(name) + end)
            self.loop(depth, "_k", hi - lo + 1)
            self.emit(depth + 1, f"{name} += {table}[_k] * "
                                 f"{self.at(ring.arg.name, self.slot(ring, f'{lo} + _k'), index)}{end}")
            self.end_loop(depth)
            expr = expr - sp.Add(*[t for _, t in items.values()]) + sp.Symbol(name, real=True)
        return expr

    def finals(self, depth: int, group: list[Final], index: str, end: str = "") -> None:
        """Every final; the rows of one grouped final in a loop where their expressions follow a pattern."""
        for arg, items in groupby(group, key=lambda st: st.arg):
            items = list(items)
            if not arg.rows:
                for st in items:
                    expr = self.dot_loops(depth, st.expr, index, end)
                    self.emit(depth, f"{arg.name}[{index}] = {self.code(expr, index)}{end}")
                continue
            rows = [st.row for st in items]
            if rows == list(range(len(rows))):
                self.assign_all(depth, lambda k, a=arg: self.at(a.name, str(k), index), [st.expr for st in items],
                                index, end=end)
            else:
                for st in items:
                    self.emit(depth, f"{self.at(arg.name, str(st.row), index)} = {self.code(st.expr, index)}{end}")


def _check_update(st) -> None:
    if not isinstance(st, UpdateState):
        raise TypeError(f"a time loop holds Load, Assign, Store and UpdateState statements, not {type(st).__name__}")


class _CudaTree(_TreePrinter):
    CLOSE = "}"
    END = ";"

    def local(self, name: str, expr, index: str) -> str:
        return f"const {'double' if self.reads_wide(name, expr) else self.pr.ctype} {name} = {self.code(expr, index)};"

    def at(self, name: str, row: str, index: str) -> str:
        return f"{name}[(long long)({row}) * n_neurons + {index}]"

    def loop(self, depth: int, var: str, n: int) -> None:
        self.emit(depth, f"for (int {var} = 0; {var} < {n}; ++{var}) {{")

    def declare(self, name: str) -> str:
        return f"{self.pr.ctype} {name} = {self.pr.doprint(sp.Float(0.0))}"

    def print(self) -> str:
        ct = self.pr.ctype
        fn = self.fn
        read, write = f"const {ct}* __restrict__ ", f"{ct}* __restrict__ "
        decl = {INPUT: read, VECTOR: read, OUTPUT: write, FINAL: write, PARAM: f"const {ct} ", MATRIX: read,
                WORK: write, SIZE: "const int "}
        args = [decl[a.kind] + a.name for a in fn.args]
        self.lines = ["// Generated by ift_snn. Do not edit: regenerate with `ift-snn codegen`."]
        self.lines += [f"// {line}" for line in fn.comments]
        self.lines += [f'extern "C" __global__ void {fn.name}(']
        self.lines += ["    " + a + ("," if i < len(args) - 1 else ")") for i, a in enumerate(args)]
        self.lines += ["{", "    const int j = blockIdx.x * blockDim.x + threadIdx.x;",
                       "    if (j >= n_neurons) return;"]
        if fn.rings:
            self.emit(1, f"int {RING_HEAD} = 0;")
        if fn.coupled:  # one block per group of neurons (blockDim.x = N): its coupled-back values in shared memory
            self.emit(1, "extern __shared__ unsigned char ift_snn_shared[];")
            self.emit(1, f"{ct}* _src = ({ct}*)ift_snn_shared;")
            self.emit(1, f"_src[threadIdx.x] = {COUPLING_INIT}[j];")
        self.statements(fn.body)
        self.lines.append("}")
        if self.tables:  # constant memory, before the kernel: every thread reads the same entry at once
            at = self.lines.index(f'extern "C" __global__ void {fn.name}(')
            self.lines[at:at] = self.table_lines()
        return "\n".join(self.lines) + "\n"

    def table_name(self, k: int) -> str:
        return f"{self.fn.name}_t{k}"

    def table_lines(self) -> list[str]:
        suffix = "F" if self.fn.dtype == "f32" else ""
        return [f"__constant__ {self.pr.ctype} {name}[{len(values)}] = {{{', '.join(repr(v) + suffix for v in values)}}};"
                for values, name in self.tables.items()]

    def top_Invariant(self, group: list[Invariant]) -> None:
        for st in group:
            self.emit(1, f"const {self.pr.ctype} {st.target.name} = {self.code(st.expr, 'j')};")

    def top_InitState(self, group: list[InitState]) -> None:
        for st in group:
            ctype = "double" if self.wide(st.state.name) else self.pr.ctype
            self.emit(1, f"{ctype} {st.state.name} = {self.code(st.expr, 'j')};")

    def top_RingInit(self, group: list[RingInit]) -> None:
        self.ring_inits(1, group, "j", end=";")

    def top_TimeLoop(self, group: list[TimeLoop]) -> None:
        ct = self.pr.ctype
        for loop in group:
            if loop.direction == "forward":
                self.emit(1, "for (int t = 0; t < n_steps; ++t) {")
            else:
                self.emit(1, "for (int t = n_steps - 1; t >= 0; --t) {")
            if loop.restart is not None:
                self.emit(2, "if (truncation > 0 && (t + 1) % truncation == 0) {")
                for st in loop.restart:
                    if isinstance(st, InitState):
                        self.emit(3, f"{st.state.name} = {self.code(st.expr, 'j')};")
                self.ring_inits(3, [st for st in loop.restart if isinstance(st, RingInit)], "j", end=";")
                if self.fn.coupled:
                    self.emit(3, "_src[threadIdx.x] = 0;")
                self.emit(2, "}")
            if self.fn.coupled:  # every write of the last step (or restart) seen, then every read before a write
                self.coupling(2)
            self.emit(2, "const long long i = (long long)t * n_neurons + j;")
            for st in loop.body:
                if isinstance(st, Couple):
                    self.emit(2, f"const {ct} {st.target.name} = _rc;")
                elif isinstance(st, Source):
                    self.emit(2, f"_src[threadIdx.x] = {st.value.name};")
                elif isinstance(st, Load):
                    self.emit(2, f"const {ct} {st.target.name} = {st.arg.name}[i];")
                elif isinstance(st, Assign):
                    expr = self.dot_loops(2, st.expr, "j", end=";")
                    self.emit(2, self.local(st.target.name, expr, "j"))
                elif isinstance(st, Store):
                    self.emit(2, f"{st.arg.name}[i] = {st.value.name};")
                else:
                    _check_update(st)
                    self.update_state(2, st.pairs, "j", "j")
            if self.fn.rings:
                self.emit(2, f"++{RING_HEAD};")
            self.emit(1, "}")
            if self.fn.coupled:  # the coupling after the last step (the next step's, or dL/ds0's through V)
                self.coupling(1)
                self.emit(1, f"{COUPLING_LAST}[j] = _rc;")

    def coupling(self, depth: int) -> None:
        """rc of this thread's neuron from the block's coupled-back values, between two barriers."""
        ct = self.pr.ctype
        self.emit(depth, "__syncthreads();")
        self.emit(depth, f"{ct} _rc = 0;")
        self.emit(depth, "for (int _k = 0; _k < (int)blockDim.x; ++_k) {")
        self.emit(depth + 1, f"const {ct} _v = _src[_k];")
        self.emit(depth + 1, f"if (_v != 0) _rc += {COUPLING_MATRIX}[_k * blockDim.x + threadIdx.x] * _v;")
        self.emit(depth, "}")
        self.emit(depth, "__syncthreads();")

    def top_Final(self, group: list[Final]) -> None:
        self.finals(1, group, "j", end=";")


class _NumbaTree(_TreePrinter):
    """Time loop outside, contiguous neurons inside in chunks of ``chunk``; the state of a chunk in arrays."""

    #: The scalar states' right-hand sides read the locals loaded at the top of the step (and the rings,
    #: written last): writing the state arrays in turn is simultaneous, no next_ locals needed.
    NEXT_FOR_SCALARS = False

    def assign_state(self, state: sp.Symbol, expr, index: str) -> str:
        return f"st_{state.name}[_jj] = {self.code(expr, index)}"

    def at(self, name: str, row: str, index: str) -> str:
        return f"{name}[{row}, {index}]"

    def loop(self, depth: int, var: str, n: int) -> None:
        self.emit(depth, f"for {var} in range({n}):")

    def print(self) -> str:
        fn = self.fn
        self.np_dtype = "np.float32" if fn.dtype == "f32" else "np.float64"
        self.lines = ["# Generated by ift_snn. Do not edit: regenerate with `ift-snn codegen --target cpu`."]
        self.lines += [f"# {line}" for line in fn.comments]
        self.lines += ["import math", "import numpy as np", ""]
        self.lines += [f"def {fn.name}({', '.join([a.name for a in fn.args] + list(HOST_ARGS))}):"]
        self.lines += ["    _nchunks = (j_end - j_begin + chunk - 1) // chunk", "    for _c in range(_nchunks):",
                       "        _j0 = j_begin + _c * chunk", "        _w = min(j_end, _j0 + chunk) - _j0"]
        if fn.rings:
            self.emit(2, f"{RING_HEAD} = 0")
        if fn.coupled:  # a chunk is whole groups of N coupled neurons (N = the matrix's size; chunk a multiple)
            self.emit(2, f"_n = {COUPLING_MATRIX}.shape[0]")
            self.emit(2, "_ng = _w // _n")
            self.emit(2, f"_src = np.empty(_w, dtype={self.np_dtype})")
            self.emit(2, f"_rc = np.empty(_w, dtype={self.np_dtype})")
            self.emit(2, "for _jj in range(_w):")
            self.emit(3, f"_src[_jj] = {COUPLING_INIT}[_j0 + _jj]")
        self.statements(fn.body)
        self.lines.append("")
        if self.tables:
            at = self.lines.index(f"def {fn.name}({', '.join([a.name for a in fn.args] + list(HOST_ARGS))}):")
            self.lines[at:at] = self.table_lines() + [""]
        return "\n".join(self.lines) + "\n"

    def load_states(self, depth: int) -> None:
        for s in self.fn.states:
            self.emit(depth, f"{s.name} = st_{s.name}[_jj]")
        for s in self.per_neuron:
            self.emit(depth, f"{s.name} = iv_{s.name}[_jj]")

    def top_Invariant(self, group: list[Invariant]) -> None:
        # an invariant that reads a per-neuron parameter (a vector) is per neuron: computed once per neuron of
        # the chunk into iv_<name>, loaded with the state inside the neuron loops
        varying = {a.symbol for a in self.fn.vectors if a.symbol is not None}
        per = []
        for st in group:
            if st.expr.free_symbols & varying:
                varying.add(st.target)
                per.append(st)
            else:
                self.emit(2, f"{st.target.name} = {self.code(st.expr, '_j0')}")
        self.per_neuron = tuple(st.target for st in per)
        if not per:
            return
        for st in per:
            self.emit(2, f"iv_{st.target.name} = np.empty(_w, dtype={self.np_dtype})")
        self.emit(2, "for _jj in range(_w):")
        for st in per:
            self.emit(3, f"{st.target.name} = {self.code(st.expr, '_j0 + _jj')}")
            self.emit(3, f"iv_{st.target.name}[_jj] = {st.target.name}")

    def top_InitState(self, group: list[InitState]) -> None:
        for st in group:
            dtype = "np.float64" if self.wide(st.state.name) else self.np_dtype
            self.emit(2, f"st_{st.state.name} = np.empty(_w, dtype={dtype})")
        self.emit(2, "for _jj in range(_w):")
        for st in group:
            self.emit(3, f"st_{st.state.name}[_jj] = {self.code(st.expr, '_j0 + _jj')}")

    def top_RingInit(self, group: list[RingInit]) -> None:
        self.emit(2, "for _jj in range(_w):")
        self.ring_inits(3, group, "_j0 + _jj")

    def top_TimeLoop(self, group: list[TimeLoop]) -> None:
        for loop in group:
            if loop.direction == "forward":
                self.emit(2, "for _t in range(n_steps):")
            else:
                self.emit(2, "for _t in range(n_steps - 1, -1, -1):")
            if loop.restart is not None:
                self.emit(3, "if truncation > 0 and (_t + 1) % truncation == 0:")
                self.emit(4, "for _jj in range(_w):")
                for st in loop.restart:
                    if isinstance(st, InitState):
                        self.emit(5, f"st_{st.state.name}[_jj] = {self.code(st.expr, '_j0 + _jj')}")
                self.ring_inits(5, [st for st in loop.restart if isinstance(st, RingInit)], "_j0 + _jj")
                if self.fn.coupled:
                    self.emit(5, "_src[_jj] = 0")
                elif not loop.restart:
                    self.emit(5, "pass")
            if self.fn.coupled:
                self.coupling(3)
            self.emit(3, "for _jj in range(_w):")
            self.emit(4, "_j = _j0 + _jj")
            loaded = False
            for st in loop.body:
                if not isinstance(st, Load) and not loaded:
                    self.load_states(4)
                    loaded = True
                if isinstance(st, Couple):
                    self.emit(4, f"{st.target.name} = _rc[_jj]")
                elif isinstance(st, Source):
                    self.emit(4, f"_src[_jj] = {st.value.name}")
                elif isinstance(st, Load):
                    self.emit(4, f"{st.target.name} = {st.arg.name}[_t, _j]")
                elif isinstance(st, Assign):
                    expr = self.dot_loops(4, st.expr, "_j0 + _jj")
                    self.emit(4, f"{st.target.name} = {self.code(expr, '_j0 + _jj')}")
                elif isinstance(st, Store):
                    self.emit(4, f"{st.arg.name}[_t, _j] = {st.value.name}")
                else:
                    _check_update(st)
                    self.update_state(4, st.pairs, "_j0 + _jj", "_j")
            if self.fn.rings:
                self.emit(3, f"{RING_HEAD} += 1")
            if self.fn.coupled:  # the coupling after the last step (the next step's, or dL/ds0's through V)
                self.coupling(2)
                self.emit(2, "for _jj in range(_w):")
                self.emit(3, f"{COUPLING_LAST}[_j0 + _jj] = _rc[_jj]")

    def coupling(self, depth: int) -> None:
        """rc of every group in the chunk from the coupled-back values (a zero is skipped); row _kk of the matrix
        is read once for all the chunk's groups (the samples share it)."""
        self.emit(depth, "for _jj in range(_w):")
        self.emit(depth + 1, "_rc[_jj] = 0")
        self.emit(depth, "for _kk in range(_n):")
        self.emit(depth + 1, "for _gg in range(_ng):")
        self.emit(depth + 2, "_v = _src[_gg * _n + _kk]")
        self.emit(depth + 2, "if _v != 0:")
        self.emit(depth + 3, "_o = _gg * _n")
        self.emit(depth + 3, "for _jj in range(_n):")
        self.emit(depth + 4, f"_rc[_o + _jj] += {COUPLING_MATRIX}[_kk, _jj] * _v")

    def top_Final(self, group: list[Final]) -> None:
        self.emit(2, "for _jj in range(_w):")
        self.load_states(3)
        self.finals(3, group, "_j0 + _jj")


class _NumpyTree(_TreePrinter):
    """A Python time loop; every statement acts on the neuron vector ``[j_begin:j_end]`` at once."""

    def local(self, name: str, expr, index: str) -> str:
        # a bare read of a ring row is a view that the ring writes of the step would change: a copy
        value = self.code(expr, index)
        return f"{name} = {f'np.copy({value})' if self.fn.rings and sp.sympify(expr).is_Symbol else value}"

    SLICE = "j_begin:j_end"

    def at(self, name: str, row: str, index: str) -> str:
        return f"{name}[{row}, {index}]"

    def loop(self, depth: int, var: str, n: int) -> None:
        self.emit(depth, f"for {var} in range({n}):")

    def print(self) -> str:
        fn = self.fn
        self.lines = []
        if fn.rings:
            self.emit(1, f"{RING_HEAD} = 0")
        if fn.coupled:  # the neurons j_begin..j_end-1 are whole groups of cp_w.shape[0]
            self.emit(1, f"_src = np.array({COUPLING_INIT}[j_begin:j_end])")
        self.statements(fn.body)
        body = self.lines
        imports = ["import numpy as np"]
        if any("scipy.special." in line for line in body):
            imports.append("import scipy.special")
        self.lines = ["# Generated by ift_snn. Do not edit: regenerate with `ift-snn codegen --target numpy`."]
        self.lines += [f"# {line}" for line in fn.comments]
        self.lines += imports + [""] + (self.table_lines() + [""] if self.tables else [])
        self.lines += [f"def {fn.name}({', '.join([a.name for a in fn.args] + list(HOST_ARGS))}):"]
        self.lines += body + [""]
        return "\n".join(self.lines) + "\n"

    def top_Invariant(self, group: list[Invariant]) -> None:
        for st in group:
            self.emit(1, f"{st.target.name} = {self.code(st.expr, self.SLICE)}")

    def init_value(self, st: InitState) -> str:
        value = self.code(st.expr, self.SLICE)
        return f"np.asarray({value}, dtype=np.float64)" if self.wide(st.state.name) else value

    def top_InitState(self, group: list[InitState]) -> None:
        for st in group:
            self.emit(1, f"{st.state.name} = {self.init_value(st)}")

    def top_RingInit(self, group: list[RingInit]) -> None:
        self.ring_inits(1, group, self.SLICE)

    def top_TimeLoop(self, group: list[TimeLoop]) -> None:
        for loop in group:
            if loop.direction == "forward":
                self.emit(1, "for _t in range(n_steps):")
            else:
                self.emit(1, "for _t in range(n_steps - 1, -1, -1):")
            if loop.restart is not None:
                self.emit(2, "if truncation > 0 and (_t + 1) % truncation == 0:")
                for st in loop.restart:
                    if isinstance(st, InitState):
                        self.emit(3, f"{st.state.name} = {self.init_value(st)}")
                self.ring_inits(3, [st for st in loop.restart if isinstance(st, RingInit)], self.SLICE)
                if self.fn.coupled:
                    self.emit(3, "_src = np.zeros_like(_src)")
                elif not loop.restart:
                    self.emit(3, "pass")
            if self.fn.coupled:
                self.emit(2, self.coupling())
            for st in loop.body:
                if isinstance(st, Couple):
                    self.emit(2, f"{st.target.name} = _rc")
                elif isinstance(st, Source):
                    # (a value that reads no per-step vector is a scalar: an SRM whose eps[0] = 0)
                    self.emit(2, f"_src = np.broadcast_to({st.value.name}, _src.shape).astype(_src.dtype)")
                elif isinstance(st, Load):
                    self.emit(2, f"{st.target.name} = {st.arg.name}[_t, {self.SLICE}]")
                elif isinstance(st, Assign):
                    expr = self.dot_loops(2, st.expr, self.SLICE)
                    self.emit(2, f"{st.target.name} = {self.code(expr, self.SLICE)}")
                elif isinstance(st, Store):
                    self.emit(2, f"{st.arg.name}[_t, {self.SLICE}] = {st.value.name}")
                else:
                    _check_update(st)
                    self.update_state(2, st.pairs, self.SLICE, self.SLICE)
            if self.fn.rings:
                self.emit(2, f"{RING_HEAD} += 1")
            if self.fn.coupled:  # the coupling after the last step (the next step's, or dL/ds0's through V)
                self.emit(1, self.coupling())
                self.emit(1, f"{COUPLING_LAST}[{self.SLICE}] = _rc")

    @staticmethod
    def coupling() -> str:
        return f"_rc = (_src.reshape(-1, {COUPLING_MATRIX}.shape[0]) @ {COUPLING_MATRIX}).reshape(-1)"

    def top_Final(self, group: list[Final]) -> None:
        self.finals(1, group, self.SLICE)


def print_cuda(fn: Function) -> str:
    """``fn`` as a CUDA C ``extern "C" __global__`` function: one thread per neuron j."""
    return _CudaTree(fn, CudaPrinter(fn.dtype)).print()


def print_numba(fn: Function) -> str:
    """``fn`` as a Python function for ``numba.njit(nogil=True)`` over neurons j_begin..j_end-1, in chunks."""
    return _NumbaTree(fn, NumbaPrinter(fn.dtype)).print()


def print_numpy(fn: Function) -> str:
    """``fn`` as a plain Python function over the NumPy vectors of neurons j_begin..j_end-1."""
    return _NumpyTree(fn, NumpyPrinter(fn.dtype)).print()


#: Python operators and NumPy calls of printed NumPy code that are ufuncs taking ``out=`` (the same function
#: the operator calls on arrays: the same rounding). ``**`` is not among them: NumPy computes ``x ** 0.5``
#: and ``x ** 2`` by other functions than ``np.power``.
_OUT_BINARY = {ast.Add: "np.add", ast.Sub: "np.subtract", ast.Mult: "np.multiply", ast.Div: "np.true_divide"}
_OUT_UNARY = {ast.USub: "np.negative"}
_OUT_CALLS = frozenset({"np.exp", "np.abs", "np.sqrt", "np.maximum", "np.minimum", "np.sign", "np.log", "np.tanh",
                        "np.arctan", "np.sin", "np.cos"})


class _InPlace:
    """A printed NumPy expression as ufunc calls writing into one buffer (``out=``): a map's expression then
    allocates no temporary array per operation and writes its result where it is stored. The same operations
    in the same order as Python evaluates the printed expression, so the same values bit for bit
    (tests/test_compiled.py).

    ``arrays``: the names holding arrays (loaded inputs, earlier array locals): a sub-expression of other names
    is a scalar and stays as printed, and so does one that is no such ufunc (a comparison, a power: NumPy
    then allocates its result). ``like``: an input array whose shape and dtype a second buffer takes."""

    def __init__(self, arrays: set[str], like: str):
        self.arrays, self.like = arrays, like
        self.lines: list[str] = []
        self.temps = 0

    def is_array(self, node) -> bool:
        return any(isinstance(n, ast.Name) and n.id in self.arrays for n in ast.walk(node))

    def into(self, source: str, target: str) -> list[str]:
        """Statements computing the expression ``source`` into the existing array ``target``."""
        got = self.operand(ast.parse(source, mode="eval").body, target)
        if got != target:
            self.lines.append(f"{target}[...] = {got}")
        return self.lines

    def operand(self, node, target: str | None) -> str:
        """Where ``node``'s value is after the statements emitted: ``target`` (or a new buffer when None) if
        computed into it, else an expression: a name, a scalar, a sub-expression left as printed."""
        if not self.is_array(node) or isinstance(node, ast.Name):
            return ast.unparse(node)
        if isinstance(node, ast.BinOp) and type(node.op) in _OUT_BINARY:
            fn, children = _OUT_BINARY[type(node.op)], [node.left, node.right]
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _OUT_UNARY:
            fn, children = _OUT_UNARY[type(node.op)], [node.operand]
        elif (isinstance(node, ast.Call) and ast.unparse(node.func) in _OUT_CALLS and not node.keywords
              and all(not isinstance(a, ast.Starred) for a in node.args)):
            fn, children = ast.unparse(node.func), list(node.args)
        else:
            return f"({ast.unparse(node)})"
        if target is None:
            self.temps += 1
            target = f"_t{self.temps}"
            self.lines.append(f"{target} = np.empty_like({self.like})")
        args, free = [], True
        for child in children:  # the first computed child into the target (in place), any other into a buffer
            computed = self.is_array(child) and not isinstance(child, ast.Name)
            args.append(self.operand(child, target if computed and free else None))
            free &= not (computed and args[-1] == target)
        self.lines.append(f"{fn}({', '.join(args)}, out={target})")
        return target


class _NumpyMap(_NumpyTree):
    """A pointwise map (direction "map"): every statement acts on the flat element range
    ``[e_begin:e_end]`` of (T, M) arrays passed flattened; no state, no time loop. A value that is stored is
    computed in place in the output's range (:class:`_InPlace`)."""

    SLICE = "e_begin:e_end"

    def print(self) -> str:
        fn = self.fn
        loops = [st for st in fn.body if isinstance(st, TimeLoop)]
        if len(loops) != 1 or loops[0].direction != "map":
            raise TypeError(f"{fn.name} is not a pointwise map")
        self.lines = []
        for st in fn.body:
            if isinstance(st, Invariant):
                self.emit(1, f"{st.target.name} = {self.code(st.expr, self.SLICE)}")
        stored = {st.value.name: st.arg.name for st in loops[0].body if isinstance(st, Store)}
        arrays: set[str] = set()
        in_place: set[str] = set()
        for st in loops[0].body:
            if isinstance(st, Load):
                self.emit(1, f"{st.target.name} = {st.arg.name}[{self.SLICE}]")
                arrays.add(st.target.name)
            elif isinstance(st, Assign) and st.target.name in stored and arrays and self.in_place:
                name = st.target.name
                self.emit(1, f"{name} = {stored[name]}[{self.SLICE}]")
                for line in _InPlace(arrays, sorted(arrays)[0]).into(self.code(st.expr, self.SLICE), name):
                    self.emit(1, line)
                arrays.add(name)
                in_place.add(name)
            elif isinstance(st, Assign):
                self.emit(1, f"{st.target.name} = {self.code(st.expr, self.SLICE)}")
                arrays.add(st.target.name)
            elif isinstance(st, Store) and st.value.name not in in_place:
                self.emit(1, f"{st.arg.name}[{self.SLICE}] = {st.value.name}")
        body = self.lines
        imports = ["import numpy as np"]
        if any("scipy.special." in x for x in body):
            imports.append("import scipy.special")
        args = [a.name for a in fn.args if a.kind in (INPUT, OUTPUT, PARAM)] + list(MAP_ARGS)
        self.lines = ["# Generated by ift_snn. Do not edit: regenerate with `ift-snn codegen --target cpu`."]
        self.lines += [f"# {line}" for line in fn.comments]
        self.lines += imports + ["", f"def {fn.name}({', '.join(args)}):"] + body + [""]
        return "\n".join(self.lines) + "\n"


def print_numpy_map(fn: Function, in_place: bool = True) -> str:
    """A pointwise map ``fn`` as NumPy over flat elements e_begin..e_end-1 (SIMD ufuncs, no loop); with
    ``in_place=False`` each stored value as one printed expression (allocating its temporaries; the same
    values, tests/test_compiled.py)."""
    printer = _NumpyMap(fn, NumpyPrinter(fn.dtype))
    printer.in_place = in_place
    return printer.print()
