"""One loop tree per ScanKernel: the structure every target prints.

:func:`lower` decides, once for every target, what a kernel does and in which
order; the printers of :mod:`ift_snn.codegen.printers` only choose the syntax
(CUDA: one thread per neuron; Numba: chunks of neurons inside the time loop;
NumPy: whole neuron vectors)::

    Function(name, args)
      Invariant(target, expr)          parameter-only values, once, before the time loop (per neuron
                                       where they read a per-neuron parameter ``pv_<name>``)
      InitState(state, expr)           the scan state per neuron (expr may read vectors)
      TimeLoop(direction, restart)     t = 0..T-1 (forward) or T-1..0 (reverse)
        restart: InitState*            reverse scans: at the top of step t when K > 0 and (t + 1) % K == 0
        Load(target, arg)              target = arg[t, j]
        Assign(target, expr)           single assignment (each target once)
        Store(arg, value)              arg[t, j] = value
        UpdateState(pairs)             every state replaced at once by its new value
      Final(arg, expr)                 arg[j] = expr, after the last step (reads the state and vectors)

A recurrent layer's kernel (``ScanKernel.coupled``; docs/MATH.md section 9) couples the neurons of a group
(one sample's N neurons, numbered contiguously): the printers keep the group's coupled-back values in a work
vector ``_src`` (from the vector ``cp_init``: s0 in the forward, dL/da[T] in the backward; zeroed by a
truncation restart), and at the top of every step compute, for the whole group, rc_i = sum_k cp_w[k, i] _src[k]
(``cp_w`` is V^T for the forward, V for the backward, (N, N) C-contiguous; spikes are sparse, so a zero
_src[k] is skipped)::

      TimeLoop
        Couple(target)                 target = rc of this neuron (computed for the group before the step)
        ...
        Source(value)                  _src[this neuron] = value (read by the next step's Couple)
      (after the loop)                 fin_cp_last[j] = rc once more: (V s[T-1])_i forward, (V^T dL/da[0])_i backward

A long shift chain of the state (a delay line, a tap list, a shift register; see
:func:`ift_snn.codegen.ir.rings`) is a :class:`Ring`: a work array (m, M) that
the launcher allocates, element i of the chain at slot (rb_h + i) % m, rb_h the
steps taken. ``RingInit`` sets all its elements (before the loop, and in a
restart); ``UpdateState`` carries the ring members' increments, and the
printers write them in place and advance rb_h (one write per step for a pure
delay). A family of 8 or more vectors or finals named alike with a trailing
index (x0_w_eps0, x0_w_eps1, ...) is one (rows, M) argument, so that a delay
line of 1000 steps does not make 3000 arguments.

Arguments (:class:`Arg`) keep the IR's order: per-step inputs ``in_<x>``
(T, M), per-neuron vectors ``in_<v>`` (M,), per-step outputs ``out_<y>``
(T, M), finals ``fin_<f>`` (M,) (a family: (rows, M)), scalar parameters
``p_<p>``, the ring buffers ``rb_<k>`` (slots, M), then the sizes
``n_steps``, ``n_neurons``, ``truncation``. Expressions are SymPy, with the
parameters renamed ``p_<name>`` (no clash with C keywords or scan symbols);
a vector, a row or a ring element appears as its IR symbol, which each
printer indexes its own way (and where a ring's increments or a sum over its
elements have numeric coefficients, loops over a constant table of them).
Comments are sanitised here (:func:`~ift_snn.codegen.ir.comment_lines`).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

import sympy as sp

from .ir import COUPLING, CodegenError, ScanKernel, comment_lines

__all__ = ["Arg", "Function", "Invariant", "InitState", "TimeLoop", "Load", "Assign", "Store", "UpdateState",
           "Final", "Ring", "RingInit", "Couple", "Source", "lower", "INPUT", "VECTOR", "OUTPUT", "FINAL", "PARAM",
           "MATRIX", "WORK", "SIZE", "SIZES", "RING_HEAD", "GROUP_MIN", "COUPLING_INIT", "COUPLING_MATRIX",
           "COUPLING_LAST"]

#: Kinds of kernel arguments, in their order in a signature.
INPUT, VECTOR, OUTPUT, FINAL, PARAM, MATRIX, WORK, SIZE = ("input", "vector", "output", "final", "param", "matrix",
                                                           "work", "size")
#: The arguments of a recurrent layer's kernel: the coupled-back values before step 0 (a vector) and the coupling
#: matrix (N, N).
COUPLING_INIT, COUPLING_MATRIX = "cp_init", "cp_w"
#: The final of a recurrent layer's kernel: the coupling computed once more after the last step, (V s[T-1])_i in the
#: forward (the next step's recurrent input), (V^T dL/da[0])_i in the backward (dL/ds0's recurrent term).
COUPLING_LAST = "fin_cp_last"
#: The printers' step counter of ring buffers (element i of a ring of m at slot (rb_h + i) % m).
RING_HEAD = "rb_h"
#: Vectors or finals named alike with a trailing index become one (rows, M) argument from this many on.
GROUP_MIN = 8
#: The size arguments every target's signature carries (CPU targets add their partition of the neurons).
SIZES = ("n_steps", "n_neurons", "truncation")
#: Names the printers use for their own locals, the builtins they call and keywords of Python and C: no
#: scan symbol may take them.
RESERVED = frozenset({"i", "j", "t", "np", "math", "scipy", "chunk", "j_begin", "j_end", "rc", *SIZES,
                      "abs", "min", "max", "range", *keyword.kwlist,
                      "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
                      "enum", "extern", "float", "for", "goto", "if", "int", "long", "register", "return", "short",
                      "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
                      "volatile", "while"})
_RESERVED_PREFIXES = ("_", "next_", "st_", "p_", "in_", "out_", "fin_", "rb_", "pv_", "iv_")


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a grouped Arg holds thousands of rows
class Arg:
    """One kernel argument: its printed name, its kind, and the symbol it carries in expressions.

    ``rows``: a (len(rows), M) vector or final whose row r carries ``rows[r]`` (``symbol`` is None);
    ``length``: the slots of a WORK array (length, M).
    """

    name: str
    kind: str
    symbol: sp.Symbol | None = None
    rows: tuple[sp.Symbol, ...] = ()
    length: int = 0


@dataclass(frozen=True, eq=False)
class Ring:
    """A shift chain c_0..c_(m-1) of the state in the work array ``arg``: c_i at slot (rb_h + i) % m."""

    arg: Arg
    states: tuple[sp.Symbol, ...]


@dataclass(frozen=True)
class RingInit:
    """Element i of ``ring`` set to ``exprs[i]`` (every element; before the loop, or in a restart)."""

    ring: Ring
    exprs: tuple[sp.Expr, ...]


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
class Couple:
    target: sp.Symbol


@dataclass(frozen=True)
class Source:
    value: sp.Symbol


@dataclass(frozen=True)
class UpdateState:
    pairs: tuple[tuple[sp.Symbol, sp.Expr], ...]


@dataclass(frozen=True)
class TimeLoop:
    direction: str  # forward | reverse
    restart: tuple[InitState | RingInit, ...] | None  # None: the scan is not truncatable
    body: tuple[Load | Assign | Store | Couple | Source | UpdateState, ...]


@dataclass(frozen=True)
class Final:
    arg: Arg
    expr: sp.Expr
    row: int = -1  # the row of a (rows, M) final; -1: an (M,) final


Statement = Invariant | InitState | RingInit | TimeLoop | Final


@dataclass(frozen=True, eq=False)
class Function:
    """A kernel as a tree: name, dtype, sanitised comment lines, arguments and top-level statements."""

    name: str
    dtype: str  # f32 | f64
    comments: tuple[str, ...]
    args: tuple[Arg, ...]
    body: tuple[Statement, ...]
    kernel: ScanKernel
    rings: tuple[Ring, ...] = ()

    @property
    def coupled(self) -> bool:
        """Whether this is a recurrent layer's kernel (its neurons coupled per group)."""
        return bool(self.kernel.coupled)

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
    args += _grouped(kernel.vectors, "in_", VECTOR)
    if kernel.coupled:
        args.append(Arg(COUPLING_INIT, VECTOR, sp.Symbol(COUPLING_INIT, real=True)))
    outputs = {s: Arg(f"out_{s.name}", OUTPUT, s) for s in kernel.outputs}
    finals = _grouped([lhs for lhs, _ in kernel.finals], "fin_", FINAL)
    if kernel.coupled:
        finals.append(Arg(COUPLING_LAST, FINAL, sp.Symbol(COUPLING_LAST.removeprefix("fin_"), real=True)))
    args += list(outputs.values()) + finals
    args += [Arg(ren[p].name, PARAM, ren[p]) for p in kernel.params]
    if kernel.coupled:
        args.append(Arg(COUPLING_MATRIX, MATRIX))
    rings = tuple(Ring(Arg(f"rb_{k}", WORK, length=len(chain)), chain) for k, chain in enumerate(kernel.rings))
    args += [r.arg for r in rings]
    args += [Arg(name, SIZE) for name in SIZES]

    _check_names(kernel)
    inputs = {a.symbol: a for a in args if a.kind == INPUT}
    body: list = [Couple(COUPLING)] if kernel.coupled else []
    body += [Load(s, inputs[s]) for s in kernel.inputs]
    body += [Assign(sym, rename(expr)) for sym, expr in kernel.body]
    body += [Store(outputs[s], s) for s in kernel.outputs]
    if kernel.coupled:
        source = {s.name: s for s in kernel.outputs}.get(kernel.coupled[1])
        if source is None:
            raise CodegenError(f"{kernel.name}: the coupled-back value {kernel.coupled[1]!r} is not an output")
        body.append(Source(source))
    body.append(UpdateState(tuple((s, rename(e)) for s, e in zip(kernel.state, kernel.update))))
    in_ring = {s for r in rings for s in r.states}

    def initial(pairs) -> list:
        pairs = dict(pairs)
        out: list = [InitState(s, rename(i)) for s, i in pairs.items() if s not in in_ring]
        out += [RingInit(r, tuple(rename(pairs[s]) for s in r.states)) for r in rings if r.states[0] in pairs]
        return out

    restart = tuple(initial(kernel.restarted)) if kernel.truncatable else None
    top: list = [Invariant(sym, rename(expr)) for sym, expr in kernel.invariants]
    top += initial(zip(kernel.state, kernel.init))
    top.append(TimeLoop(kernel.direction, restart, tuple(body)))
    where = {sym: (a, r if a.rows else -1) for a in finals for r, sym in enumerate(a.rows or (a.symbol,))}
    top += [Final(where[lhs][0], rename(rhs), where[lhs][1]) for lhs, rhs in kernel.finals]
    comments = [f"kernel: {kernel.name}", *comment_lines(header), f"structure fingerprint: {kernel.fingerprint}",
                *comment_lines(kernel.describe())]
    return Function(kernel.name, kernel.dtype, tuple(comments), tuple(args), tuple(top), kernel, rings)


_INDEXED = re.compile(r"(.*\D)(\d+)")


def _grouped(symbols, prefix: str, kind: str) -> list[Arg]:
    """One Arg per symbol, except that a family of GROUP_MIN or more named <stem><index> (indices
    0..n-1) becomes one (n, M) Arg named <prefix><stem>, rows in index order, where the first member was."""
    symbols = list(symbols)
    names = {s.name for s in symbols}
    families: dict[str, dict[int, sp.Symbol]] = {}
    for s in symbols:
        m = _INDEXED.fullmatch(s.name)
        if m:
            families.setdefault(m.group(1), {})[int(m.group(2))] = s
    grouped = {stem: members for stem, members in families.items()
               if len(members) >= GROUP_MIN and sorted(members) == list(range(len(members))) and stem not in names}
    member = {s: stem for stem, members in grouped.items() for s in members.values()}
    out, placed = [], set()
    for s in symbols:
        stem = member.get(s)
        if stem is None:
            out.append(Arg(f"{prefix}{s.name}", kind, s))
        elif stem not in placed:
            placed.add(stem)
            rows = grouped[stem]
            out.append(Arg(f"{prefix}{stem}", kind, None, rows=tuple(rows[i] for i in range(len(rows)))))
    return out


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
