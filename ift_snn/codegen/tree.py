"""One loop tree per ScanKernel: the structure every target prints.

:func:`lower` decides, once for every target, what a kernel does and in which
order; the printers of :mod:`ift_snn.codegen.printers` only choose the syntax
(CUDA: one thread per neuron; Numba: chunks of neurons inside the time loop;
NumPy: whole neuron vectors)::

    Function(name, args)
      Invariant(target, expr)          parameter-only values, once, before the time loop
      InitState(state, expr)           the scan state per neuron (expr may read vectors)
      TimeLoop(direction, restart)     t = 0..T-1 (forward) or T-1..0 (reverse)
        restart: InitState*            reverse scans: at the top of step t when K > 0 and (t + 1) % K == 0
        Load(target, arg)              target = arg[t, j]
        Assign(target, expr)           single assignment (each target once)
        Store(arg, value)              arg[t, j] = value
        UpdateState(pairs)             every state replaced at once by its new value
      Final(arg, expr)                 arg[j] = expr, after the last step (reads the state and vectors)

Arguments (:class:`Arg`) keep the IR's order: per-step inputs ``in_<x>``
(T, M), per-neuron vectors ``in_<v>`` (M,), per-step outputs ``out_<y>``
(T, M), finals ``fin_<f>`` (M,), scalar parameters ``p_<p>``, then the sizes
``n_steps``, ``n_neurons``, ``truncation``. Expressions are SymPy, with the
parameters renamed ``p_<name>`` (no clash with C keywords or scan symbols);
a vector appears as its IR symbol, which each printer indexes its own way.
Comments are sanitised here (:func:`~ift_snn.codegen.ir.comment_lines`).
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass

import sympy as sp

from .ir import CodegenError, ScanKernel, comment_lines

__all__ = ["Arg", "Function", "Invariant", "InitState", "TimeLoop", "Load", "Assign", "Store", "UpdateState",
           "Final", "lower", "INPUT", "VECTOR", "OUTPUT", "FINAL", "PARAM", "SIZE", "SIZES"]

#: Kinds of kernel arguments, in their order in a signature.
INPUT, VECTOR, OUTPUT, FINAL, PARAM, SIZE = "input", "vector", "output", "final", "param", "size"
#: The size arguments every target's signature carries (CPU targets add their partition of the neurons).
SIZES = ("n_steps", "n_neurons", "truncation")
#: Names the printers use for their own locals, the builtins they call and keywords of Python and C: no
#: scan symbol may take them.
RESERVED = frozenset({"i", "j", "t", "np", "math", "scipy", "chunk", "j_begin", "j_end", *SIZES,
                      "abs", "min", "max", "range", *keyword.kwlist,
                      "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
                      "enum", "extern", "float", "for", "goto", "if", "int", "long", "register", "return", "short",
                      "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
                      "volatile", "while"})
_RESERVED_PREFIXES = ("_", "next_", "st_", "p_", "in_", "out_", "fin_")


@dataclass(frozen=True)
class Arg:
    """One kernel argument: its printed name, its kind, and the symbol it carries in expressions."""

    name: str
    kind: str
    symbol: sp.Symbol | None = None


@dataclass(frozen=True)
class Invariant:
    target: sp.Symbol
    expr: sp.Expr


@dataclass(frozen=True)
class InitState:
    state: sp.Symbol
    expr: sp.Expr


@dataclass(frozen=True)
class Load:
    target: sp.Symbol
    arg: Arg


@dataclass(frozen=True)
class Assign:
    target: sp.Symbol
    expr: sp.Expr


@dataclass(frozen=True)
class Store:
    arg: Arg
    value: sp.Symbol


@dataclass(frozen=True)
class UpdateState:
    pairs: tuple[tuple[sp.Symbol, sp.Expr], ...]


@dataclass(frozen=True)
class TimeLoop:
    direction: str  # forward | reverse
    restart: tuple[InitState, ...] | None  # None: the scan is not truncatable
    body: tuple[Load | Assign | Store | UpdateState, ...]


@dataclass(frozen=True)
class Final:
    arg: Arg
    expr: sp.Expr


Statement = Invariant | InitState | TimeLoop | Final


@dataclass(frozen=True, eq=False)
class Function:
    """A kernel as a tree: name, dtype, sanitised comment lines, arguments and top-level statements."""

    name: str
    dtype: str  # f32 | f64
    comments: tuple[str, ...]
    args: tuple[Arg, ...]
    body: tuple[Statement, ...]
    kernel: ScanKernel

    def of_kind(self, kind: str) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if a.kind == kind)

    @property
    def states(self) -> tuple[sp.Symbol, ...]:
        return tuple(st.state for st in self.body if isinstance(st, InitState))

    @property
    def vectors(self) -> tuple[Arg, ...]:
        return self.of_kind(VECTOR)


def lower(kernel: ScanKernel, *, header: str = "") -> Function:
    """The loop tree of ``kernel``; ``header`` (e.g. the model) goes into the comments.

    Raises CodegenError when a symbol is assigned twice or takes a name the
    printers reserve. Cost: one pass over the kernel's expressions.
    """
    ren = {p: sp.Symbol(f"p_{p.name}", real=True) for p in kernel.params}
    rename = lambda e: sp.sympify(e).xreplace(ren)  # noqa: E731
    args = [Arg(f"in_{s.name}", INPUT, s) for s in kernel.inputs]
    args += [Arg(f"in_{v.name}", VECTOR, v) for v in kernel.vectors]
    outputs = {s: Arg(f"out_{s.name}", OUTPUT, s) for s in kernel.outputs}
    finals = [Arg(f"fin_{lhs.name}", FINAL, lhs) for lhs, _ in kernel.finals]
    args += list(outputs.values()) + finals
    args += [Arg(ren[p].name, PARAM, ren[p]) for p in kernel.params]
    args += [Arg(name, SIZE) for name in SIZES]

    _check_names(kernel)
    inputs = {a.symbol: a for a in args if a.kind == INPUT}
    body: list = [Load(s, inputs[s]) for s in kernel.inputs]
    body += [Assign(sym, rename(expr)) for sym, expr in kernel.body]
    body += [Store(outputs[s], s) for s in kernel.outputs]
    body.append(UpdateState(tuple((s, rename(e)) for s, e in zip(kernel.state, kernel.update))))
    restart = tuple(InitState(s, rename(i)) for s, i in kernel.restarted) if kernel.truncatable else None

    top: list = [Invariant(sym, rename(expr)) for sym, expr in kernel.invariants]
    top += [InitState(s, rename(i)) for s, i in zip(kernel.state, kernel.init)]
    top.append(TimeLoop(kernel.direction, restart, tuple(body)))
    top += [Final(arg, rename(rhs)) for arg, (_, rhs) in zip(finals, kernel.finals)]
    comments = [f"kernel: {kernel.name}", *comment_lines(header), f"structure fingerprint: {kernel.fingerprint}",
                *comment_lines(kernel.describe())]
    return Function(kernel.name, kernel.dtype, tuple(comments), tuple(args), tuple(top), kernel)


def _check_names(kernel: ScanKernel) -> None:
    assigned: set[sp.Symbol] = set()
    for sym, _ in kernel.body:
        if sym in assigned:
            raise CodegenError(f"{kernel.name}: {sym} is assigned twice")
        assigned.add(sym)
    locals_ = list(kernel.inputs) + list(kernel.state) + [s for s, _ in kernel.body] + [s for s, _ in kernel.invariants]
    for sym in locals_:
        if not sym.name.isidentifier() or sym.name in RESERVED or sym.name.startswith(_RESERVED_PREFIXES):
            raise CodegenError(f"{kernel.name}: the scan symbol {sym.name!r:.60} cannot be a local of generated "
                               "code (not an identifier, or a name the printers reserve)")
