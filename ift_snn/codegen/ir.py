"""ScanKernel: the small IR between a derived recurrence and printed code.

One kernel runs one :class:`~ift_snn.symbolic.recurrence.Scan` for every
neuron: one thread (CUDA) or one inner-loop lane (CPU) per neuron, looping
over time; arrays are time-major (T, M) so neighbouring neurons are
neighbouring addresses. Built by :func:`build_kernel`:

1. the scan's assignments, state update and finals, with the model's
   parameters left as scalar arguments (a kernel serves every value of alpha,
   theta, ...; only the structure and the surrogate's constants are baked in);
2. hoisting: every sub-expression that depends on parameters only is computed
   once before the time loop (``invariants``);
3. common-subexpression elimination over the per-step expressions.

Arguments are kept in a fixed, meaningful order (never sorted by name):
per-step inputs, per-neuron vectors (``u_init``), per-step outputs, finals,
parameters, then the sizes T, M and the truncation K (0 = none). The loop
tree that every target prints is made from a ScanKernel by
:func:`ift_snn.codegen.tree.lower`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from functools import cached_property

import sympy as sp

from ..neurons.kernels import MAX_DELAY
from ..neurons.models import NeuronModel, param_symbol
from ..symbolic.recurrence import DIAGNOSTIC, Recurrence, Scan, derive_recurrence
from ..symbolic.step import step_scans
from ..symbolic.system import U_INIT

__all__ = ["ScanKernel", "build_kernel", "NonFinite", "GUARD", "per_neuron_symbol", "check_per_neuron", "PER_NEURON", "rings", "DTYPES", "CodegenError", "comment_lines", "argument_values", "structure_header"]

DTYPES = ("f32", "f64")
#: Largest scan state a generated kernel carries in scalars (registers per thread on a GPU), rings aside.
MAX_STATE = 64
#: A shift chain of at least this many states is carried as a ring buffer in memory (see :func:`rings`).
RING_MIN = 8
#: Longest ring buffer, in values per neuron: the longest delay of a kernel (a delay of d steps needs about d
#: in each scan that carries it; its derivative filters a few more).
MAX_RING = MAX_DELAY + MAX_STATE
QUANTITIES = ("forward", "backward", "slayer")
#: The reverse scans without the parameter sums, or with those of ``build_kernel(sums=...)`` only
#: (``Scan.without_parameter_sums``): for a backward that asks for fewer dL/dp (``ops.backward(...,
#: parameters=False or names)``, training the weights or some parameters): a LIF's then reads g and sigma,
#: plus u for alpha's sum and s for theta's.
INPUT_QUANTITIES = ("backward_a", "slayer_a")
#: One step's vector-Jacobian product (:mod:`ift_snn.symbolic.step`): the gradient through a carried state.
STEP_QUANTITIES = ("step", "step_slayer")
#: The forward scan split for the CPU: ``forward_core`` writes only what the recurrence computes (u, s,
#: ...), ``surrogate`` is the pointwise rest (sigma from u) as a map printed for vectorised NumPy
#: (SIMD exp; a scalar exp in a Numba loop cost 58 of 97 ms at 500 x 65,536 float32 on 2 cores).
SPLIT_QUANTITIES = ("forward_core", "surrogate")


#: The final every scan kernel (not a step's, not a map) writes per neuron: the sum over its steps of x - x
#: for each value in :data:`GUARDED` it reads or writes (:class:`NonFinite`): exactly 0 where they are all
#: finite, NaN otherwise. The callers check this (M,) vector instead of reading the (T, M) arrays again.
GUARD = DIAGNOSTIC + "nonfinite"
#: What the guard watches: the inputs from outside (a, dL/ds = g) and what a scan computes and hands on (u,
#: sigma, dL/da). The backward's u and sigma come from the forward, which watched them.
GUARDED = {"forward": ("a", "u", "sigma"), "reverse": ("g", "grad_a")}


class NonFinite(sp.Function):
    """x - x as printed code: 0 for a finite x, NaN for inf or NaN (IEEE 754; no kernel is compiled with
    fast-math unless asked, and CUDA's fast-math keeps NaN and inf). Never evaluated by SymPy (x - x would
    be 0): a node of the finite guard only, which no derivation reads."""

    nargs = 1


def _guarded(scan: Scan) -> Scan:
    """``scan`` with the finite guard (:data:`GUARD`): a persistent state summing NonFinite of the watched
    values of each step, read out as a final. Nothing else of the scan changes."""
    names = GUARDED[scan.direction]
    read = {sym for _, rhs in scan.assignments for sym in rhs.free_symbols} | set(scan.outputs)
    watched = [x for x in (*scan.inputs, *scan.outputs) if x.name in names and x in read]
    if not watched:
        return scan
    guard = sp.Symbol(DIAGNOSTIC + "guard", real=True)
    update = guard + sp.Add(*[NonFinite(x) for x in dict.fromkeys(watched)], evaluate=False)
    return dataclasses.replace(scan, state=scan.state + (guard,), init=scan.init + (sp.Integer(0),),
                               update=scan.update + (update,),
                               finals=scan.finals + ((sp.Symbol(GUARD, real=True), guard),),
                               persistent=scan.persistent + (guard,))


class CodegenError(ValueError):
    """The code generator cannot handle this model or expression."""


#: Every kernel quantity: the names a generated kernel (and its cached file, codegen/cpu.py) may carry.
ALL_QUANTITIES = QUANTITIES + INPUT_QUANTITIES + SPLIT_QUANTITIES + STEP_QUANTITIES
KERNEL_SUFFIX = rf"_({'|'.join(ALL_QUANTITIES)})_(f32|f64)_[0-9a-f]{{8}}"
_KERNEL_NAME = re.compile(r"ift_snn_[a-z_][a-z0-9_]{0,39}" + KERNEL_SUFFIX)
_COMMENT_SAFE = re.compile(r"[^A-Za-z0-9 _.,:;=+\-*/()<>\[\]{}'\"|&^%!~@$#]")


def comment_lines(text: str) -> list[str]:
    """``text`` as lines that are safe inside a ``#`` or ``//`` comment of generated source.

    Every character outside a small printable ASCII set (control characters,
    line separators, backslashes that would continue a C++ comment, ``?`` of
    trigraphs, non-ASCII) becomes ``_``, so no text can end the comment and
    reach the code. Names in generated code come from validated identifiers
    and hashes only; comments are the one place expressions are shown.
    """
    if not text:
        return []
    return [_COMMENT_SAFE.sub("_", line) for line in str(text).split("\n")]


@dataclass(frozen=True, eq=False)
class ScanKernel:
    """A scan ready to print: ordered arguments, state, per-step code, direction, dtype."""

    model_name: str
    quantity: str  # forward | backward | slayer | forward_core | surrogate
    direction: str  # forward | reverse | map (pointwise, no state)
    dtype: str  # f32 | f64
    inputs: tuple[sp.Symbol, ...]
    outputs: tuple[sp.Symbol, ...]
    finals: tuple[tuple[sp.Symbol, sp.Expr], ...]
    params: tuple[sp.Symbol, ...]
    state: tuple[sp.Symbol, ...]
    init: tuple[sp.Expr, ...]
    invariants: tuple[tuple[sp.Symbol, sp.Expr], ...]
    body: tuple[tuple[sp.Symbol, sp.Expr], ...]
    update: tuple[sp.Expr, ...]
    #: Per-neuron input vectors, shape (M,), that ``init`` and ``finals`` read (today U_INIT, the initial
    #: membrane); each is the argument ``in_<name>`` right after the per-step inputs.
    vectors: tuple[sp.Symbol, ...]
    fingerprint: str  # sha256 of the structure (not of parameter values)
    persistent: tuple[sp.Symbol, ...] = ()  # state that truncation does not restart
    #: Shift chains c_1..c_m carried as ring buffers (:func:`rings`): c_j <- c_(j+1) + update(c_j) for
    #: j < m, c_m <- update(c_m); the update of a ring member is its increment on top of the shift.
    rings: tuple[tuple[sp.Symbol, ...], ...] = ()
    #: Scalar states a float32 kernel carries in float64 (and the values computed from them): the states of a
    #: model whose filters run in the parallel form (docs/MATH.md section 10). A pole at 0.999 sums about a
    #: thousand steps into each state; in float32 that rounding (and, in the adjoint, its feedback through the
    #: reset) is what is left of the error once the poles are separated. Inputs and outputs stay float32.
    wide: tuple[sp.Symbol, ...] = ()
    #: A recurrent layer's kernel (docs/MATH.md section 9): (the per-step input the coupling adds to, the output
    #: it couples back from) -- ("a", "s") for the forward (a[n] = c[n] + V s[n-1]), ("g", "grad_a") for the
    #: backward (g[n] + V^T dL/da[n+1]); the body reads the coupling as :data:`COUPLING`. () for one neuron's scan.
    coupled: tuple[str, str] = ()

    @property
    def restarted(self) -> tuple[tuple[sp.Symbol, sp.Expr], ...]:
        """(state, init) of the state a truncation boundary restarts."""
        keep = set(self.persistent)
        return tuple((s, i) for s, i in zip(self.state, self.init) if s not in keep)

    @property
    def uses_u_init(self) -> bool:
        """Whether ``u_init`` is one of the kernel's vectors (kept for callers of the older IR)."""
        return U_INIT in self.vectors

    @property
    def truncatable(self) -> bool:
        return self.direction == "reverse"

    @cached_property
    def name(self) -> str:
        """ift_snn_<model>_<quantity>_<f32|f64>_<sha8>, from validated identifiers and a hash only."""
        name = f"ift_snn_{self.model_name}_{self.quantity}_{self.dtype}_{self.fingerprint[:8]}"
        if not _KERNEL_NAME.fullmatch(name):
            raise CodegenError(f"kernel name {name!r:.120} is not an identifier; model names must be [a-z_][a-z0-9_]*")
        return name

    def describe(self) -> str:
        """Expressions for the header comment of generated code."""
        if self.direction == "map":
            lines = [f"map {self.quantity} (pointwise over (T, M), after the scan), dtype {self.dtype}"]
        else:
            lines = [f"scan {self.quantity} ({self.direction} in time), dtype {self.dtype}"]
            init = dict(zip(self.state, self.init))
            first = {r[0]: r for r in self.rings}
            inner = {c for r in self.rings for c in r[1:]}
            shown = [f"{s}..{first[s][-1]} = {init[s]}, ..." if s in first else f"{s} = {init[s]}"
                     for s in self.state if s not in inner]
            lines.append("state: " + ", ".join(shown))
            if self.coupled:
                x, src = self.coupled
                lines.append(f"recurrent layer: rc = (V s[n-1])_i, {x} read as {x} + rc" if x == "a" else
                             f"recurrent layer: rc = (V^T dL/da[n+1])_i, {x} read as {x} + rc; {src} couples back")
        lines += [f"invariant {k} = {_short(v)}" for k, v in self.invariants]
        lines += [f"{k} = {_short(v)}" for k, v in self.body]
        succ = {c: r[i + 1] for r in self.rings for i, c in enumerate(r[:-1])}
        for k, r in enumerate(self.rings):
            lines.append(f"ring {k} of {len(r)} values: {r[0]}, ..., {r[-1]} (each takes the next one's value, "
                         "plus its update below)")
        lines += [f"{s} <- {succ[s]} + {_short(e)}" if s in succ else f"{s} <- {_short(e)}"
                  for s, e in zip(self.state, self.update) if s not in succ or e != 0]
        lines += [f"final {k} = {_short(v)}" for k, v in self.finals]
        return "\n".join(lines)


def _short(expr, terms: int = 16) -> str:
    """``expr`` as text; a sum of more than ``terms`` terms shortened to its first two and its size."""
    expr = sp.sympify(expr)
    if expr.is_Add and len(expr.args) > terms:
        return f"{sp.sstr(expr.args[0])} + {sp.sstr(expr.args[1])} + ... ({len(expr.args)} terms)"
    return sp.sstr(expr)


def _srepr(expr) -> str:
    """srepr of ``expr``; a long sum (a delay line's thousands of terms) in its stored order, which is as
    deterministic and saves sorting the terms by their printing keys (seconds at 2000 terms)."""
    expr = sp.sympify(expr)
    long = any(node.is_Add and len(node.args) > 64 for node in sp.preorder_traversal(expr))
    return sp.srepr(expr, order="none") if long else sp.srepr(expr)


def _with_per_neuron(scan: Scan, pv: dict) -> Scan:
    """``scan`` with each parameter of ``pv`` replaced by its per-neuron symbol."""
    sub = lambda e: sp.sympify(e).xreplace(pv)  # noqa: E731
    return dataclasses.replace(
        scan, assignments=tuple((l, sub(r)) for l, r in scan.assignments), update=tuple(sub(e) for e in scan.update),
        init=tuple(sub(e) for e in scan.init), finals=tuple((l, sub(r)) for l, r in scan.finals))


def _structure_fingerprint(model: NeuronModel, scan: Scan, dtype: str, per_neuron: tuple[str, ...] = (),
                           wide: tuple[sp.Symbol, ...] = (), coupled: tuple[str, str] = ()) -> str:
    surrogate = model.surrogate.template if model.surrogate_arguments else model.surrogate.expr
    parts = [model.name, scan.name, scan.direction, dtype, repr(model.parameter_names),
             sp.srepr(surrogate), repr(model.spike),
             repr(model.u_min), model.reset]
    parts += [f"{sp.srepr(l)}={_srepr(r)}" for l, r in scan.assignments]
    parts += [_srepr(e) for e in scan.update] + [_srepr(e) for e in scan.init]
    parts += [f"{sp.srepr(l)}={_srepr(r)}" for l, r in scan.finals]
    parts += ["persistent:" + ",".join(p.name for p in scan.persistent)]
    if per_neuron:  # (absent for scalar parameters: the fingerprints of those kernels stay as they were)
        parts += ["per-neuron:" + ",".join(per_neuron)]
    if wide:  # (likewise: absent where no state is widened)
        parts += ["wide:" + ",".join(s.name for s in wide)]
    if coupled:
        parts += ["coupled:" + "->".join(coupled)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class _Hoister:
    """Replace maximal parameter-only sub-expressions by invariant symbols."""

    def __init__(self, params: frozenset[sp.Symbol]):
        self.params = params
        self.table: dict[sp.Expr, sp.Symbol] = {}

    def __call__(self, expr: sp.Expr) -> sp.Expr:
        expr = sp.sympify(expr)
        if expr.is_Atom:
            return expr
        free = expr.free_symbols
        if free and free <= self.params:
            if expr not in self.table:
                self.table[expr] = sp.Symbol(f"k{len(self.table)}", real=True)
            return self.table[expr]
        return expr.func(*[self(arg) for arg in expr.args])


def _check_supported(expr: sp.Expr, what: str) -> None:
    allowed = (sp.Add, sp.Mul, sp.Pow, sp.exp, sp.log, sp.Abs, sp.Max, sp.Min, sp.floor, sp.Heaviside,
               sp.Piecewise, sp.atan, sp.tanh, sp.sin, sp.cos, sp.erf, sp.sign)
    for node in sp.preorder_traversal(expr):
        if node.is_Atom or isinstance(node, (sp.logic.boolalg.Boolean, sp.core.relational.Relational)):
            continue
        if isinstance(node, sp.core.containers.Tuple) or isinstance(node, sp.functions.elementary.piecewise.ExprCondPair):
            continue
        if not isinstance(node, allowed):
            raise CodegenError(
                f"{what}: the code generator cannot print {type(node).__name__} ({node}); supported: "
                "arithmetic, exp, log, abs, max, min, floor, Heaviside, Piecewise, atan, tanh, erf, sqrt"
            )


#: Prefix of the per-neuron vector that carries a parameter given one value per neuron.
PER_NEURON = "pv_"


def per_neuron_symbol(name: str) -> sp.Symbol:
    """The kernel symbol of parameter ``name`` given per neuron (read from the vector ``in_pv_<name>``)."""
    return sp.Symbol(PER_NEURON + name, real=True)


def check_per_neuron(model: NeuronModel, per_neuron) -> tuple[str, ...]:
    """``per_neuron`` as a tuple of parameter names of ``model``, in the model's order; an error naming
    any other name."""
    names = tuple(per_neuron or ())
    unknown = [k for k in names if k not in model.parameter_names]
    if unknown:
        raise ValueError(f"per-neuron parameters {unknown} are not parameters of the {model.name} model "
                         f"(its parameters are {model.parameter_names})")
    return tuple(k for k in model.parameter_names if k in names)


#: The coupling of a recurrent layer's kernel in its per-step expressions: (V s[n-1])_i in the forward,
#: (V^T dL/da[n+1])_i in the backward, computed per group of neurons by the printers (:mod:`ift_snn.codegen.tree`).
COUPLING = sp.Symbol("rc", real=True)


def _coupled(scan: Scan) -> tuple[Scan, tuple[str, str]]:
    """``scan`` with its coupled input x read as x + :data:`COUPLING` (the recurrent layer's scans: the derivation
    and its proof are :mod:`ift_snn.symbolic.recurrent_layer`), and (x, the output coupled back)."""
    name, source = ("a", "s") if scan.direction == "forward" else ("g", "grad_a")
    x = next((i for i in scan.inputs if i.name == name), None)
    if x is None or source not in {o.name for o in scan.outputs}:
        raise CodegenError(f"the {scan.name} scan has no input {name!r} or no output {source!r} to couple")
    sub = {x: x + COUPLING}
    return dataclasses.replace(scan, assignments=tuple((l, sp.sympify(r).xreplace(sub)) for l, r in scan.assignments),
                               update=tuple(sp.sympify(e).xreplace(sub) for e in scan.update)), (name, source)


def build_kernel(model: NeuronModel, quantity: str, dtype: str, recurrence: Recurrence | None = None,
                 per_neuron=(), sums: tuple[str, ...] = (), recurrent: bool = False) -> ScanKernel:
    """The ScanKernel of one scan (``forward``, ``backward`` = exodus, ``slayer``) of ``model``.

    ``per_neuron``: names of parameters given one value per neuron. Each becomes the per-neuron vector
    ``pv_<name>`` instead of a scalar argument; what the hoisting computes from it is then computed once per
    neuron before the time loop (a per-neuron invariant), and its sum ``acc_<name>`` is dL/dp of that
    neuron's value. The derivation is the same (a neuron's scan reads only its own values).
    ``sums``: for ``backward_a`` / ``slayer_a``, the parameters whose sums the scan keeps (none by default).
    ``recurrent``: the scan of a recurrent layer's neurons, coupled per group (:data:`COUPLING`; forward,
    forward_core, backward, slayer and their ``_a`` forms).
    """
    per_neuron = check_per_neuron(model, per_neuron)
    if quantity not in ALL_QUANTITIES:
        raise ValueError(f"unknown kernel quantity {quantity!r}; expected one of {ALL_QUANTITIES}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {DTYPES}")
    rec = recurrence or derive_recurrence(model)
    for k in rec.kernels:
        size = k.kernel.size  # the filter's state (transposed direct form II, or the parallel form)
        if size > MAX_RING:
            raise CodegenError(
                f"kernel {k.name} = {k.kernel} needs a scan state of {size} values per neuron (a delay of d steps "
                f"or a list of L taps is carried as d or L - 1 values in a ring buffer, plus the poles); the "
                f"generated kernels carry rings of at most {MAX_RING} values per neuron (memory: each scan holds "
                "such a ring for every neuron). Shorten the delay or the tap list, or write the kernel as a closed "
                "form with a short recurrence (a sum of exponentials)"
            )
    if sums and quantity not in INPUT_QUANTITIES:
        raise ValueError(f"sums= selects the parameter sums of {INPUT_QUANTITIES}, not of {quantity!r}")
    unknown = sorted(set(sums) - set(model.parameter_names))
    if unknown:
        raise ValueError(f"sums {unknown} are not parameters of {model.name} ({model.parameter_names})")
    if quantity in STEP_QUANTITIES:
        scan = step_scans(rec)[quantity == "step_slayer"]
    else:
        scan = {"backward": rec.backward, "slayer": rec.slayer}.get(quantity.removesuffix("_a"), rec.forward)
        if quantity in INPUT_QUANTITIES:
            scan = scan.without_parameter_sums(tuple(sorted(sums)))
    coupled: tuple[str, str] = ()
    if recurrent:
        if quantity in STEP_QUANTITIES or quantity == "surrogate":
            raise CodegenError(f"{quantity!r} has no recurrent form (the coupling is per step of a whole scan)")
        scan, coupled = _coupled(scan)
    lifted = model.surrogate_arguments
    if lifted:
        # The surrogate's constants become kernel arguments: sigma = template(u; theta, sg_*).
        template = model.surrogate.template
        scan = dataclasses.replace(scan, assignments=tuple(
            (lhs, template if lhs.name == "sigma" else rhs) for lhs, rhs in scan.assignments))
    if quantity in SPLIT_QUANTITIES:
        scan = split_pointwise(scan, model.symbols + tuple(sym for sym, _ in lifted))[quantity == "surrogate"]
    if quantity not in STEP_QUANTITIES and quantity != "surrogate":
        scan = _guarded(scan)
    pv = {param_symbol(k): per_neuron_symbol(k) for k in per_neuron}
    if pv:
        if quantity == "surrogate":
            raise CodegenError(f"{model.name}: the pointwise surrogate map reads scalar parameters only; with "
                               f"per-neuron {', '.join(per_neuron)} the surrogate is computed in the forward scan")
        scan = _with_per_neuron(scan, pv)
    params = tuple(p for p in model.symbols if p not in pv) + tuple(sym for sym, _ in lifted)
    hoist = _Hoister(frozenset(params) | frozenset(pv.values()))
    assigns = [(lhs, hoist(rhs)) for lhs, rhs in scan.assignments]
    update = [hoist(e) for e in scan.update]
    finals = [(lhs, hoist(rhs)) for lhs, rhs in scan.finals]
    init = tuple(sp.sympify(e) for e in scan.init)
    chains = rings(scan.state, update, scan.persistent)
    succ = {c: r[i + 1] for r in chains for i, c in enumerate(r[:-1])}
    update = [e - succ[st] if st in succ else e for st, e in zip(scan.state, update)]  # ring members: increments
    scalars = len(scan.state) - sum(len(r) for r in chains)
    if scalars > MAX_STATE:
        raise CodegenError(
            f"{model.name} {quantity}: the scan carries {scalars} scalar state values per neuron besides its ring "
            f"buffers; the generated kernels carry at most {MAX_STATE} (registers per GPU thread). Long delays and "
            "tap lists become ring buffers; many poles (a kernel of high order in its denominator) do not: write "
            "the kernel with fewer poles"
        )
    for lhs, rhs in assigns:
        _check_supported(rhs, f"{model.name} {quantity}: {lhs}")
    # CSE over the per-step expressions; the assigned names stay, temporaries are x0, x1, ... The increments
    # of ring members stay as they are (b_k x for a tap list: the printers loop over a table of the b_k).
    ringed = {c for r in chains for c in r}
    scalar_updates = [i for i, st in enumerate(scan.state) if st not in ringed]
    exprs = [rhs for _, rhs in assigns] + [update[i] for i in scalar_updates]
    replacements, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("x", real=True), optimizations="basic")
    reduced = list(reduced[:len(assigns)]) + _placed(update, scalar_updates, reduced[len(assigns):])
    body: list[tuple[sp.Symbol, sp.Expr]] = []
    placed: set[sp.Symbol] = set()
    pending = list(replacements)
    # Emit each temporary just before the first assignment that needs it (they depend on earlier lhs).
    for (lhs, _), rhs in zip(assigns, reduced[: len(assigns)]):
        _emit_needed(rhs, pending, placed, body)
        body.append((lhs, rhs))
    upd = reduced[len(assigns):]
    for e in upd:
        _emit_needed(e, pending, placed, body)
    used = set().union(*(e.free_symbols for _, e in body), *(e.free_symbols for e in upd))
    inputs = tuple(i for i in scan.inputs if i in used)  # no loads of what the scan never reads
    invariants = [(sym, expr) for expr, sym in hoist.table.items()]
    # Temporaries of parameters and invariants only are loop-invariant too: out of the loop.
    constant = set(params) | set(pv.values()) | {sym for sym, _ in invariants}
    kept = []
    for sym, expr in body:
        if sym.name.startswith("x") and expr.free_symbols <= constant:
            invariants.append((sym, expr))
            constant.add(sym)
        else:
            kept.append((sym, expr))
    body = kept
    invariants = tuple(invariants)
    wide = _wide_states(rec, scan, dtype, ringed)
    return ScanKernel(
        model_name=model.name,
        quantity=quantity,
        direction=scan.direction,
        dtype=dtype,
        inputs=inputs,
        # A reverse scan hands on dL/da only: the parameter sums and the diagnostics are finals,
        # so d and dL/ds are never written (two full-size stores saved).
        outputs=scan.outputs if scan.direction != "reverse" else tuple(o for o in scan.outputs if o.name == "grad_a"),
        finals=tuple(finals),
        params=params,
        state=scan.state,
        init=init,
        invariants=invariants,
        body=tuple(body),
        update=tuple(upd),
        # (a per-step expression may read a vector too: a step's dL/dx1, symbolic/step.py)
        vectors=_vectors(list(init) + [e for _, e in body] + list(upd), finals,
                         set(scan.state) | constant | set(scan.inputs) | {sym for sym, _ in body} | {COUPLING})
        + tuple(pv.values()),
        fingerprint=_structure_fingerprint(model, scan, dtype, per_neuron, wide, coupled),
        persistent=tuple(scan.persistent),
        rings=chains,
        wide=wide,
        coupled=coupled,
    )


def _wide_states(rec: Recurrence, scan: Scan, dtype: str, ringed) -> tuple[sp.Symbol, ...]:
    """The states a float32 kernel of ``rec`` carries in float64 (see :attr:`ScanKernel.wide`): every scalar
    state but the diagnostics, when a kernel the scans run is in the parallel form; none otherwise (a LIF's
    kernels are unchanged)."""
    run = [k for k in rec.kernels if k.name == "syn"] if rec.kind == "membrane" else list(rec.kernels)
    if dtype != "f32" or not any(k.kernel.parallel is not None for k in run):
        return ()
    return tuple(st for st in scan.state if st not in ringed and not st.name.startswith(DIAGNOSTIC))


def rings(state, update, persistent=()) -> tuple[tuple[sp.Symbol, ...], ...]:
    """The shift chains of a scan long enough to be carried as ring buffers (at least RING_MIN states).

    A chain c_1..c_m has c_j <- c_(j+1) + E_j (the successor a bare term of the update, coefficient
    1) and c_m <- E_m, every state in at most one chain, all of one persistence. A filter in transposed
    direct form II is one such chain (w_i <- w_(i+1) + b x - a y), its adjoint another (lam_j <- lam_(j-1)),
    and so is a shift register. In a ring buffer, element c_j of a chain of m lives at slot
    (h + j - 1) mod m, h the steps taken: a step computes every E_j from the old values, writes E_m into
    the slot of c_1, adds E_j in place into the slot of c_(j+1) (the new c_j) and advances h. A delay
    of d steps then costs one write per step instead of d moves.
    """
    state = tuple(state)
    members = set(state)
    succ: dict[sp.Symbol, sp.Symbol] = {}
    for st, e in zip(state, update):
        e = sp.sympify(e)
        terms = e.args if e.is_Add else (e,)
        bare = [t for t in terms if t in members and t != st]
        if len(bare) == 1 and bare[0] not in (e - bare[0]).free_symbols:
            succ[st] = bare[0]
    taken: dict[sp.Symbol, list[sp.Symbol]] = {}
    for st, nxt in succ.items():
        taken.setdefault(nxt, []).append(st)
    succ = {st: nxt for st, nxt in succ.items() if len(taken[nxt]) == 1}
    followers = set(succ.values())
    heads = [st for st in state if st in succ and st not in followers]
    keep = set(persistent)
    out = []
    for head in heads:
        chain = [head]
        while chain[-1] in succ and len(chain) <= len(state):
            chain.append(succ[chain[-1]])
        if len(chain) > len(state) or len(chain) < RING_MIN:
            continue
        if len({c in keep for c in chain}) == 1:
            out.append(tuple(chain))
    return tuple(out)


def split_pointwise(scan: Scan, params) -> tuple[Scan, Scan]:
    """(core, map): the forward scan without its pointwise outputs, and those outputs as a map.

    An output is pointwise when its expression reads only other outputs and parameters and nothing
    else reads it (sigma = surrogate(u)): it needs no scan state, so it can be computed after the
    scan over whole blocks of (T, M), where NumPy's exp is SIMD. The map's inputs are the outputs
    it reads; it has no state, init, update or finals (direction "map").
    """
    outputs = set(scan.outputs)
    allowed = outputs | set(params)
    readers = [e for _, e in scan.assignments] + list(scan.update) + [e for _, e in scan.finals]
    point = []
    for lhs, rhs in scan.assignments:
        if lhs not in outputs or not sp.sympify(rhs).free_symbols <= allowed - {lhs}:
            continue
        if any(lhs in sp.sympify(e).free_symbols for e in readers):
            continue
        point.append((lhs, rhs))
    names = {lhs for lhs, _ in point}
    core = dataclasses.replace(scan, name=scan.name + "_core",
                               assignments=tuple((l, r) for l, r in scan.assignments if l not in names),
                               outputs=tuple(o for o in scan.outputs if o not in names))
    reads = sorted(set().union(*(sp.sympify(r).free_symbols for _, r in point)) & outputs, key=lambda x: x.name)
    pointwise = Scan("surrogate", "map", tuple(reads), (), (), tuple(point), tuple(lhs for lhs, _ in point), (), ())
    return core, pointwise


def _placed(update: list, indices: list[int], values) -> list:
    """``update`` with update[indices[k]] replaced by values[k]."""
    out = list(update)
    for i, v in zip(indices, values):
        out[i] = v
    return out


def _vectors(exprs, finals, known: set) -> tuple[sp.Symbol, ...]:
    """The per-neuron vectors ``exprs`` (the initial state, the per-step expressions) and ``finals`` read:
    every free symbol that is neither state, input, assigned, parameter nor invariant, in the order of first
    appearance (u_init, x0_<state>, a step's lT_<state>)."""
    out: dict[sp.Symbol, None] = {}
    for expr in list(exprs) + [rhs for _, rhs in finals]:
        for sym in sorted(sp.sympify(expr).free_symbols, key=lambda x: x.name):
            if sym not in known:
                out.setdefault(sym)
    return tuple(out)


def structure_header(model: NeuronModel) -> str:
    """A header for a kernel shared by every parameter value of ``model``'s structure (no values)."""
    surrogate = model.surrogate.name if model.surrogate_arguments else repr(model.surrogate)
    return (f"model structure: {model.name}; parameters {', '.join(model.parameter_names)}"
            + (f", surrogate constants {', '.join(s.name for s, _ in model.surrogate_arguments)}"
               if model.surrogate_arguments else "")
            + f"; spike {model.spike}; surrogate {surrogate}; reset {model.reset}"
            + ("" if model.u_min is None else f"; u_min {model.u_min:g}"))


def argument_values(model: NeuronModel, per_neuron=()) -> list[float]:
    """Values of a kernel's scalar parameters, in the order of ``ScanKernel.params``:
    the model's parameters (but those given ``per_neuron``), then the surrogate constants lifted to
    arguments."""
    return ([v for k, v in model.params if k not in per_neuron] + [v for _, v in model.surrogate_arguments])


def _emit_needed(expr, pending, placed, body):
    needed = expr.free_symbols
    changed = True
    while changed:
        changed = False
        for sym, rhs in list(pending):
            if sym in needed and sym not in placed:
                # its own dependencies first
                _emit_needed(rhs, [p for p in pending if p[0] != sym], placed, body)
                body.append((sym, rhs))
                placed.add(sym)
                pending.remove((sym, rhs))
                changed = True
