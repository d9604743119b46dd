"""Kernels of the Spike Response Model and their finite linear recurrences.

A kernel h[k], k = 0, 1, 2, ... is given either as a closed form in ``n``
(SymPy; causal by construction, valid for n >= 0) or as a finite tap sequence.
Every kernel that ift_snn can scan is also held as a rational transfer
function in the delay operator x = z^-1:

    H(x) = sum_k h[k] x^k = (b_0 + b_1 x + ... ) / (1 + a_1 x + ... + a_p x^p)

so that h obeys the linear recurrence h[k] = -a_1 h[k-1] - ... - a_p h[k-p]
for k >= len(b), and filtering a sequence with h is one IIR filter
(``scipy.signal.lfilter(b, a, .)``) whose state size is p.

Closed forms are recognised when they are sums of terms P(n) r^n c(n), where
P is a polynomial, r a product of exponentials with exponents linear in n and
c a product of cos / sin of arguments linear in n (resonators r^n cos(omega n
+ phi), their products with polynomials and exponentials); a term may be
delayed, ``step(n - d) * g(n - d)`` (or ``heaviside``), or be a single tap,
``delta(n - k) * c``. The characteristic polynomial is prod (1 - r x)^(deg P + 1)
over the real roots and prod (1 - 2 r cos(f) x + r^2 x^2)^(deg P + 1) over each
conjugate pair r exp(+-i f), with real coefficients; the numerator follows from
the first order + (delay) values, exactly. Anything else (``1/(n+1)``,
``cos(n**2)``) has no finite recurrence that ift_snn can derive and raises
:class:`NoRecurrenceError` naming the offending factor; :meth:`Kernel.truncated`
turns such a kernel into taps when the user asks for it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from collections.abc import Iterable, Mapping

import numpy as np
import sympy as sp

__all__ = ["N", "X", "Kernel", "KernelError", "NoRecurrenceError", "MAX_TAPS", "MAX_DELAY", "Section", "Parallel"]

#: Longest tap kernel (and longest ``truncate=``): every tap is a multiply-add per step of the scan.
MAX_TAPS = 1024
#: Longest delay of a closed form (``step(n - d)``, ``delta(n - k)``): a delay line of d values per neuron,
#: carried in a ring buffer by the generated kernels (one write per step, whatever d).
MAX_DELAY = 4096

#: Largest number of poles (the order of the recurrence, a conjugate pair counting two, a pole of multiplicity m
#: counting m) of a closed form: the symbolic work grows fast with it (10 symbolic poles: seconds, 12: half a
#: minute), and the state of every scan with it. Checked before the recurrence is derived.
MAX_POLES = 8
#: Largest number of terms a closed form may expand to (products of sums, powers of sums), estimated before
#: SymPy expands it.
MAX_TERMS = 512
#: Largest number of cos/sin factors in one product term (k factors make 2^(k-1) frequencies).
MAX_TRIG_FACTORS = 4
#: The largest whole multiple k of an angle whose cos(k x) / sin(k x) is expanded into cos x, sin x (a polynomial
#: of degree k) when coefficients are brought to a canonical form (:func:`trig_polynomial`).
MAX_TRIG_MULTIPLE = 64

#: The time index of a kernel, h[n] for n = 0, 1, ...
N = sp.Symbol("n", integer=True, nonnegative=True)
#: The delay operator z^-1 of transfer functions.
X = sp.Symbol("x")


class KernelError(ValueError):
    """A kernel definition is invalid (not causal, no taps, bad values)."""


class NoRecurrenceError(KernelError):
    """A closed-form kernel has no finite linear recurrence that can be derived."""


def _linear_in_n(exponent: sp.Expr) -> tuple[sp.Expr, sp.Expr] | None:
    """Return (c, d) with exponent == c*n + d, or None when not linear in n."""
    exponent = sp.expand(exponent)
    if not exponent.is_polynomial(N):
        return None
    poly = sp.Poly(exponent, N)
    if poly.degree() > 1:
        return None
    c = poly.coeff_monomial(N)
    d = poly.coeff_monomial(1)
    return c, d


def _integer(value: sp.Expr, what: str) -> int:
    if not (value.is_number and value.is_integer):
        raise NoRecurrenceError(f"{what} must be a whole number of steps; give it as an integer")
    return int(value)


def _factors(term: sp.Expr):
    """Each factor of a product term with its power (cos(w n)**2 is cos(w n) twice)."""
    for factor in sp.Mul.make_args(term):
        if factor.is_Pow and isinstance(factor.base, (sp.cos, sp.sin)) and factor.exp.is_Integer and factor.exp > 0:
            yield from [factor.base] * int(factor.exp)
        else:
            yield factor


def _canonical_frequency(f: sp.Expr) -> sp.Expr:
    """f or -f, whichever is the representative of the conjugate pair exp(+-i f n)."""
    f = sp.expand(f)
    if f.is_number:
        return sp.Abs(f)
    return -f if f.could_extract_minus_sign() else f


def _exp_poly_terms(expr: sp.Expr) -> tuple[dict[tuple[sp.Expr, sp.Expr], int], int]:
    """Decompose expr = sum_i P_i(n) r_i^n cos/sin(...) (each term possibly delayed or a single impulse).

    Returns ({(r_i, f_i): deg P_i}, start): the characteristic roots r_i exp(+-i f_i) (f_i = 0: the real
    root r_i) with their multiplicity minus one, and the first n from which every term is its smooth
    part (the recurrence holds from ``start`` + order on). A factor ``heaviside(n - d)`` (or ``step``)
    delays a term by d steps; ``delta(n - k)`` (KroneckerDelta) makes it a single tap at k, which adds no
    root. Products of cos and sin of arguments linear in n give the frequencies +-f_1 +- f_2 ....
    Raises NoRecurrenceError naming the first factor that is none of these.
    """
    size = _expanded_size(sp.sympify(expr))
    if size > MAX_TERMS:
        raise KernelError(f"kernel {str(expr)[:120]} would expand to about {size:.3g} terms; at most {MAX_TERMS} "
                          "are accepted (write it as a sum of fewer terms)")
    expanded = sp.expand(sp.sympify(expr), power_exp=True, mul=True, multinomial=True, log=False)
    degrees: dict[tuple[sp.Expr, sp.Expr], int] = {}
    start = 0
    for term in sp.Add.make_args(expanded):
        if term == 0:
            continue
        ratio: sp.Expr = sp.Integer(1)
        degree = 0
        frequencies: list[sp.Expr] = []
        impulse = False
        for factor in _factors(term):
            if not factor.has(N):
                continue
            if isinstance(factor, sp.KroneckerDelta):
                linear = _linear_in_n(factor.args[0] - factor.args[1])
                if linear is None or linear[0] not in (1, -1):
                    raise NoRecurrenceError(f"factor {factor} must be delta(n - k) with a whole number k")
                start = max(start, _integer(-linear[1] * linear[0], f"the tap of {factor}") + 1)
                impulse = True
                continue
            if isinstance(factor, sp.Heaviside):
                linear = _linear_in_n(factor.args[0])
                if linear is None or not linear[0].is_positive or not linear[0].is_number:
                    raise NoRecurrenceError(f"factor {factor} must be heaviside(n - d) with a whole number d")
                first = sp.ceiling(-linear[1] / linear[0])
                start = max(start, _integer(first, f"the delay of {factor}") + 1)
                continue
            if isinstance(factor, (sp.cos, sp.sin)):
                linear = _linear_in_n(factor.args[0])
                if linear is None:
                    raise NoRecurrenceError(f"factor {factor} has an argument that is not linear in n, so the "
                                            "kernel has no finite linear recurrence; give it as taps or ask for "
                                            "truncation")
                frequencies.append(linear[0])
                continue
            base, exponent = factor.as_base_exp()
            if isinstance(factor, sp.exp):
                base, exponent = sp.E, factor.args[0]
            if not base.has(N):
                linear = _linear_in_n(exponent)
                if linear is None:
                    raise NoRecurrenceError(
                        f"factor {factor} has an exponent that is not linear in n, so the kernel has no "
                        "finite linear recurrence; give it as taps or ask for truncation"
                    )
                ratio = ratio * base ** linear[0]
                continue
            if factor.is_polynomial(N):
                degree += sp.Poly(factor, N).degree()
                continue
            raise NoRecurrenceError(
                f"factor {factor} is neither polynomial, exponential, cos/sin nor a delay in n, so the kernel "
                "has no finite linear recurrence; give it as taps or ask for truncation"
            )
        if impulse:
            continue
        if len(frequencies) > MAX_TRIG_FACTORS:
            raise KernelError(f"a term of kernel {str(expr)[:120]} multiplies {len(frequencies)} cos/sin factors; at "
                              f"most {MAX_TRIG_FACTORS} are accepted (k factors make 2^(k-1) frequencies, each a "
                              "pair of poles)")
        ratio = sp.powsimp(sp.simplify(ratio))
        combos = {sp.Integer(0)}
        for f in frequencies:
            combos = {c + f for c in combos} | {c - f for c in combos}
        for f in {_canonical_frequency(c) for c in combos}:
            key = (ratio, f)
            degrees[key] = max(degrees.get(key, -1), degree)
    poles = sum((d + 1) * (1 if f == 0 else 2) for (_, f), d in degrees.items())
    if poles > MAX_POLES:
        raise KernelError(f"kernel {str(expr)[:120]} has {poles} poles; at most {MAX_POLES} are accepted (each is "
                          "state of every scan, and its symbolic derivation grows fast with their number)")
    return degrees, start


def _expanded_size(expr: sp.Expr) -> float:
    """About how many terms ``sp.expand`` makes of ``expr``: a sum adds, a product multiplies, a power k of a
    sum of m terms gives C(m + k - 1, k); a cheap walk, before anything is expanded."""
    if expr.is_Add:
        return sum(_expanded_size(a) for a in expr.args)
    if expr.is_Mul:
        out = 1.0
        for a in expr.args:
            out *= _expanded_size(a)
        return out
    if expr.is_Pow and expr.exp.is_Integer and expr.exp > 1:
        m = _expanded_size(expr.base)
        return float(math.comb(int(min(m, 1e6)) + int(expr.exp) - 1, int(expr.exp))) if m > 1 else 1.0
    if isinstance(expr, (sp.cos, sp.sin)):  # cos(a + b) expands into two products
        return max(1.0, _expanded_size(expr.args[0]))
    return 1.0


def _normalised(expr: sp.Expr) -> sp.Expr:
    """expr in the terms the decomposition reads: a power of a step, heaviside(n - d, h0)**k, is the step
    heaviside(n - d, h0**k) (a delay written twice, e.g. by a membrane form's shift of a delayed kernel), and
    complex exponentials exp(i w n) are written as cos and sin. A kernel is real: an imaginary part left
    after that is refused, naming it (it would reach the scans as a complex number)."""
    def single_step(e):
        h0 = e.base.args[1] if len(e.base.args) > 1 else sp.S.Half
        return sp.Heaviside(e.base.args[0], h0**e.exp)

    expr = expr.replace(lambda e: e.is_Pow and isinstance(e.base, sp.Heaviside) and e.exp.is_Integer and e.exp > 0,
                        single_step)
    def euler(e):  # exp(a + i b) = exp(a) (cos b + i sin b)
        terms = sp.Add.make_args(sp.expand(e.args[0]))
        b = sp.Add(*[t for t in terms if t.has(sp.I)]) / sp.I
        a = sp.Add(*[t for t in terms if not t.has(sp.I)])
        return sp.exp(a) * (sp.cos(sp.expand(b)) + sp.I * sp.sin(sp.expand(b)))

    if expr.has(sp.I):
        rewritten = sp.expand(expr.replace(lambda e: isinstance(e, sp.exp) and e.args[0].has(sp.I), euler),
                              power_exp=True)
        imaginary = sp.Add(*[t for t in sp.Add.make_args(rewritten) if t.has(sp.I)])
        if _tidy(sp.expand(imaginary)) != 0:
            raise KernelError(f"kernel {expr} is not real: its imaginary part {sp.sstr(sp.expand(imaginary / sp.I))} "
                              "is not zero (write a resonator with cos and sin, e.g. rho**n*cos(omega*n))")
        expr = sp.Add(*[t for t in sp.Add.make_args(rewritten) if not t.has(sp.I)])
    return expr


def _poly_coeffs(expr: sp.Expr) -> tuple[sp.Expr, ...]:
    """Coefficients of a polynomial in X, lowest power first."""
    poly = sp.Poly(sp.expand(expr), X)
    coeffs = list(reversed(poly.all_coeffs()))
    return tuple(_tidy(c) for c in coeffs)


def trig_polynomial(expr: sp.Expr) -> sp.Expr:
    """expr with every cos/sin written as a polynomial in cos and sin of base angles, sin^2 = 1 - cos^2.

    Rational angles (decimal frequencies proved as rationals: cos(9/10) against cos(3/10)) become whole
    multiples of one symbol, the angles' greatest common divisor, so that the multiple-angle identities
    apply to them as to symbolic angles (and are put back after). Zero iff expr is zero as a
    trigonometric identity of the angles.
    """
    atoms = expr.atoms(sp.cos, sp.sin)
    if not atoms:
        return expr
    if not expr.is_polynomial(*atoms):  # e.g. exp(sin(...)) of parameters: no identity to expand (it only grows)
        return expr
    constants = {a.args[0].as_coeff_Add()[0] for a in atoms} - {0}
    back = {}
    if constants and all(c.is_Rational for c in constants):
        unit = functools.reduce(sp.gcd, constants)
        angle = sp.Dummy("angle_unit", real=True)
        back = {angle: unit}
        expr = expr.xreplace({a: a.func(a.args[0] - a.args[0].as_coeff_Add()[0]
                                       + a.args[0].as_coeff_Add()[0] / unit * angle) for a in atoms})
    # a multiple-angle identity of k x is a polynomial of degree k: beyond MAX_TRIG_MULTIPLE (an angle of
    # 10**64 next to one of 1, sin(1000 n omega)) it is not expanded (SymPy built degree-10**64 Chebyshev
    # polynomials: the expression fuzz test hung there); such coefficients then stay as they are
    multiples = [abs(t.as_coeff_Mul()[0]) for a in expr.atoms(sp.cos, sp.sin) for t in sp.Add.make_args(a.args[0])]
    if any(m.is_Number and m > MAX_TRIG_MULTIPLE for m in multiples):
        return expr.xreplace(back) if back else expr
    expr = sp.expand(sp.expand_trig(expr))
    square = lambda e: (e.is_Pow and isinstance(e.base, sp.sin) and e.exp.is_Integer  # noqa: E731
                        and e.exp >= 2)
    expr = sp.expand(expr.replace(square, lambda e: sp.sin(e.base.args[0]) ** (e.exp % 2)
                                  * (1 - sp.cos(e.base.args[0]) ** 2) ** (e.exp // 2)))
    return expr.xreplace(back) if back else expr


def _tidy(expr: sp.Expr) -> sp.Expr:
    """A coefficient of a kernel's recurrence in a canonical form, zero iff it is zero: a rational function
    of the parameters (cancelled), cos and sin as polynomials of the base angles (:func:`trig_polynomial`).
    Linear in the size of the expression, where ``simplify`` tries every strategy (seconds for a resonator)."""
    return sp.cancel(trig_polynomial(sp.expand(expr)))


@dataclass(frozen=True)
class Section:
    """One block of a kernel's parallel form: the pole ``r`` (``frequency`` 0) or the conjugate pair
    r exp(+-i f), of multiplicity m = ``len(coeffs)``, with the impulse response (m >= 1)

        real pole:     sum_j coeffs[j] C(n + j, j) r^n
        conjugate pair sum_j C(n + j, j) r^n (coeffs[j][0] cos(f n) + coeffs[j][1] sin(f n))

    run as a cascade of m first-order sections (v_1 = r v_1 + x, v_j = r v_j + v_(j-1); a pair: the same
    with the complex pole r exp(i f) on the real and imaginary parts, a rotation), the output
    sum_j c_j v_j (a pair: sum_j A_j Re v_j + B_j Im v_j). Each state is then as accurate as one LIF
    membrane, however close the poles of other sections are (docs/MATH.md section 10)."""

    pole: sp.Expr
    frequency: sp.Expr
    coeffs: tuple

    @property
    def multiplicity(self) -> int:
        return len(self.coeffs)

    @property
    def size(self) -> int:
        """State values: one per level, two (real and imaginary part) for a pair."""
        return self.multiplicity * (1 if self.frequency == 0 else 2)

    def __str__(self) -> str:
        if self.frequency == 0:
            terms = [f"{sp.sstr(c)}*C(n+{j},{j})" if j else sp.sstr(c) for j, c in enumerate(self.coeffs)]
            return f"({' + '.join(terms)})*({sp.sstr(self.pole)})**n"
        terms = []
        for j, (ca, cb) in enumerate(self.coeffs):
            binom = f"C(n+{j},{j})*" if j else ""
            terms += [f"{binom}{sp.sstr(ca)}*cos({sp.sstr(self.frequency)}*n)" for _ in [0] if ca != 0]
            terms += [f"{binom}{sp.sstr(cb)}*sin({sp.sstr(self.frequency)}*n)" for _ in [0] if cb != 0]
        return f"({' + '.join(terms) or '0'})*({sp.sstr(self.pole)})**n"


@dataclass(frozen=True)
class Parallel:
    """The parallel form of a kernel: h[n] = taps[n] for n < delay, and for n >= delay the sum of the
    sections' responses at n - delay (``delay = len(taps)``): H(x) = sum_k taps[k] x^k + x^delay
    sum_sections G(x). The scans run the sections on the undelayed input and delay their sum in a shift
    chain that also carries the taps (transposed form), so a delay costs a ring buffer, as before."""

    taps: tuple
    sections: tuple

    @property
    def delay(self) -> int:
        return len(self.taps)

    @property
    def size(self) -> int:
        """State values per neuron of one filter in this form."""
        return self.delay + sum(s.size for s in self.sections)

    def __str__(self) -> str:
        parts = [str(s) for s in self.sections]
        text = " + ".join(parts)
        if self.delay:
            lead = ", ".join(sp.sstr(t) for t in self.taps)
            text = f"taps({lead}) then, delayed by {self.delay}: {text}"
        return text


@dataclass(frozen=True)
class Kernel:
    """A causal kernel h[n], n >= 0, with its transfer function b(x)/a(x).

    Build one with :meth:`closed_form` or :meth:`from_taps`. ``num`` and ``den``
    are the coefficients of b and a (lowest power of x first, ``den[0] == 1``);
    ``len(den) - 1`` is the order of the recurrence, the state size of a scan.
    """

    expr: sp.Expr | None
    taps: tuple[float, ...] | None
    num: tuple[sp.Expr, ...]
    den: tuple[sp.Expr, ...]
    #: The parallel form the scans run (kernels with two or more poles); None: the direct form b(x)/a(x),
    #: which is the same thing for one pole and for finite taps.
    parallel: Parallel | None = None

    def __post_init__(self) -> None:
        if len(self.den) > 2 and self.parallel is None:
            # the poles of a denominator given by itself would have to be found numerically; the scans never
            # fall back to the direct form of two or more poles (docs/MATH.md section 10)
            raise KernelError(
                f"kernel {self.expr if self.expr is not None else self.num} has {len(self.den) - 1} poles but no "
                "parallel form: its poles are not known. Build it with Kernel.closed_form(expr) (the poles are read "
                "off the closed form's terms) or give its taps"
            )

    # ------------------------------------------------------------------ build
    @classmethod
    def closed_form(cls, expr: sp.Expr | float | int) -> Kernel:
        """A kernel from a closed form in ``n`` (the symbol :data:`N`), n >= 0 (one derivation per expression:
        kernels are immutable, and a model's parameters are symbols in them, so every value shares it)."""
        expr = sp.sympify(expr)
        if not isinstance(expr, sp.Expr):
            raise KernelError(f"kernel {expr!r} is not a SymPy expression")
        try:
            return _closed_form(expr)
        except KernelError:
            raise
        except (ArithmeticError, RecursionError, NotImplementedError, sp.PolynomialError) as exc:
            # numbers out of range at the check's generic point (pi**(1e308 - n)), or a form SymPy cannot take apart
            raise KernelError(f"kernel {str(expr)[:120]} cannot be taken as a closed form with a recurrence "
                              f"({type(exc).__name__}: {str(exc)[:80]}); check its constants, or give it as taps") \
                from None

    @classmethod
    def _derive_closed_form(cls, expr: sp.Expr) -> Kernel:
        others = {s for s in expr.free_symbols if s.name == "n" and s != N}
        if others:
            expr = expr.subs({s: N for s in others})
        expr = _normalised(expr)
        degrees, start = _exp_poly_terms(expr)
        if start - 1 > MAX_DELAY:
            raise KernelError(
                f"kernel {expr} is delayed by {start - 1} steps; at most {MAX_DELAY} are supported (a delay "
                f"of d steps is a line of d values per neuron in every scan)"
            )
        char = sp.Integer(1)
        for (ratio, frequency), degree in degrees.items():
            if frequency == 0:
                char = char * (1 - ratio * X) ** (degree + 1)
            else:  # the conjugate pair r exp(+-i f): one real quadratic factor
                char = char * (1 - 2 * ratio * sp.cos(frequency) * X + ratio**2 * X**2) ** (degree + 1)
        den = _poly_coeffs(char)
        order = len(den) - 1
        length = order + start
        values = [expr.xreplace({N: sp.Integer(k)}) for k in range(length)]
        num = []
        for k in range(length):
            num.append(_tidy(sp.Add(*[den[j] * values[k - j] for j in range(min(k, order) + 1)])))
        while len(num) > 1 and num[-1] == 0:
            num.pop()
        if all(c == 0 for c in num):
            return cls(expr=sp.Integer(0), taps=None, num=(sp.Integer(0),), den=(sp.Integer(1),))
        parallel = _parallel_form(expr, start) if order >= 2 else None
        kernel = cls(expr=expr, taps=None, num=tuple(num), den=den, parallel=parallel)
        kernel._check_recurrence()
        return kernel

    @classmethod
    def from_taps(cls, values: Iterable[float], start: int = 0) -> Kernel:
        """A finite kernel h[start + k] = values[k]; ``start`` must be >= 0 (causal)."""
        if not isinstance(start, (int, np.integer)):
            raise TypeError(f"kernel start must be an int, got {type(start).__name__}")
        if start < 0:
            raise KernelError(
                f"kernel is not causal: it starts at n = {start}, but a kernel must vanish for n < 0 "
                "(start >= 0)"
            )
        try:
            array = np.asarray(list(values), dtype=np.float64)
        except (TypeError, ValueError):
            raise KernelError(f"kernel taps {values!r} must be real numbers") from None
        if array.ndim != 1:
            raise KernelError(f"kernel taps must be a 1-D sequence of numbers, got shape {array.shape}")
        if array.size == 0:
            raise KernelError("kernel has no taps: give at least one value")
        if array.size + int(start) > MAX_TAPS:
            raise KernelError(
                f"kernel has {array.size + int(start)} taps; at most {MAX_TAPS} are supported (a long kernel "
                "is better written as a closed form with a finite recurrence, e.g. a sum of exponentials)"
            )
        if not np.all(np.isfinite(array)):
            raise KernelError(f"kernel taps {array.tolist()} contain NaN or inf")
        taps = (0.0,) * int(start) + tuple(float(v) for v in array)
        return cls(expr=None, taps=taps, num=tuple(_number(v) for v in taps), den=(sp.Integer(1),))

    def truncated(self, length: int, values: Mapping[sp.Symbol, float] | None = None) -> Kernel:
        """The first ``length`` values as a tap kernel (parameters evaluated at ``values``)."""
        if length < 1:
            raise KernelError(f"truncation length must be >= 1, got {length}")
        if length > MAX_TAPS:
            raise KernelError(f"truncation length {length} is out of range: at most {MAX_TAPS} taps")
        return Kernel.from_taps(self.impulse(length, values or {}))

    def _check_recurrence(self) -> None:
        # The decomposition is constructive; this numeric spot check guards the
        # algebra (simplification of ratios, numerator) at a generic point.
        rng = np.random.default_rng(0)
        point = {s: float(rng.uniform(0.3, 0.7)) for s in sorted(self.parameters, key=str)}
        length = 3 * self.order + 6 + len(self.num)
        direct = self.impulse(length, point)
        via_filter = self._impulse_from_filter(length, point)
        scale = max(1.0, float(np.max(np.abs(direct))))
        if not np.allclose(direct, via_filter, rtol=1e-9, atol=1e-9 * scale):
            raise NoRecurrenceError(
                f"kernel {self.expr} did not match its derived recurrence numerically; "
                "give it as taps instead"
            )
        if self.parallel is not None:
            via_sections = parallel_impulse(self.parallel, length, point)
            if not np.allclose(direct, via_sections, rtol=1e-9, atol=1e-9 * scale):
                raise NoRecurrenceError(
                    f"kernel {self.expr} did not match its parallel form {self.parallel} numerically; "
                    "give it as taps instead"
                )

    # --------------------------------------------------------------- queries
    @property
    def order(self) -> int:
        """State size of the recurrence (number of poles)."""
        return len(self.den) - 1

    @property
    def parameters(self) -> frozenset[sp.Symbol]:
        """Free symbols other than n."""
        symbols: set[sp.Symbol] = set()
        for c in self.num + self.den:
            symbols |= c.free_symbols
        if self.expr is not None:
            symbols |= self.expr.free_symbols
        symbols.discard(N)
        return frozenset(symbols)

    @property
    def size(self) -> int:
        """State values per neuron of the filter the scans run: the parallel form's, or the direct form's
        max(len(b), len(a)) - 1 (transposed direct form II)."""
        if self.parallel is not None:
            return self.parallel.size
        return max(len(self.num), len(self.den)) - 1

    @property
    def is_finite(self) -> bool:
        """True for a kernel with finitely many nonzero taps (no poles)."""
        return self.order == 0

    def diff(self, symbol: sp.Symbol) -> Kernel:
        """The kernel d h[n] / d symbol (same kind of kernel; cached, the derivations ask for it often)."""
        return _diff(self, symbol)

    def value(self, k: int) -> sp.Expr:
        """h[k] as a SymPy expression (0 for k < 0)."""
        if k < 0:
            return sp.Integer(0)
        if self.expr is not None:
            return self.expr.subs(N, k)
        assert self.taps is not None and self.den == (1,)
        return self.num[k] if k < len(self.num) else sp.Integer(0)  # the taps as SymPy numbers

    # --------------------------------------------------------------- numbers
    def check_defined(self, values: Mapping[sp.Symbol, float], what: str = "kernel") -> None:
        """Raise KernelError when the parallel form is undefined at ``values``: its coefficients are those of the
        closed form as written, so (alpha^n - beta^n)/(alpha - beta) at alpha = beta divides by zero there, as
        the closed form itself does (0/0)."""
        if self.parallel is None:
            return
        form = self.parallel
        exprs = tuple(form.taps) + tuple(s.pole for s in form.sections) + tuple(
            c for s in form.sections for c in (sp.flatten(s.coeffs) if s.frequency != 0 else s.coeffs))
        symbols = tuple(sorted(self.parameters, key=str))
        try:
            with np.errstate(all="ignore"):
                numbers = [complex(v) for v in _lambdified(exprs, symbols)(*[float(values[s]) for s in symbols])]
        except ZeroDivisionError:
            numbers = [complex(np.nan)]
        if not all(np.isfinite(v) for v in numbers):
            shown = ", ".join(f"{s} = {float(values[s]):g}" for s in symbols)
            raise KernelError(f"{what} = {self.expr} is undefined at {shown}: its terms divide by zero there (two "
                              "poles that the closed form keeps apart are equal); give the parameters distinct "
                              "values or write the kernel for that case (e.g. (n+1)*alpha**n)")

    def coefficients(self, values: Mapping[sp.Symbol, float]) -> tuple[np.ndarray, np.ndarray]:
        """Numeric (b, a) for ``scipy.signal.lfilter`` at the parameter ``values``."""
        symbols = tuple(sorted(self.parameters, key=str))
        args = [float(values[s]) for s in symbols]
        b = np.array([float(v) for v in _lambdified(self.num, symbols)(*args)], dtype=np.float64)
        a = np.array([float(v) for v in _lambdified(self.den, symbols)(*args)], dtype=np.float64)
        return b, a

    def impulse(self, length: int, values: Mapping[sp.Symbol, float]) -> np.ndarray:
        """h[0..length-1] in float64, evaluated directly from the closed form or taps."""
        if self.taps is not None:
            out = np.zeros(length)
            m = min(length, len(self.taps))
            out[:m] = self.taps[:m]
            return out
        symbols = tuple(sorted(self.parameters, key=str))
        func = _lambdified((_for_arrays(self.expr),), (N,) + symbols)
        ks = np.arange(length, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # unselected branches may overflow
            out = np.asarray(func(ks, *[float(values[s]) for s in symbols])[0], dtype=np.float64)
        return np.broadcast_to(out, (length,)).copy()

    def _impulse_from_filter(self, length: int, values: Mapping[sp.Symbol, float]) -> np.ndarray:
        from scipy.signal import lfilter

        b, a = self.coefficients(values)
        x = np.zeros(length)
        x[0] = 1.0
        return lfilter(b, a, x)

    # ---------------------------------------------------------------- display
    def __str__(self) -> str:
        if self.expr is not None:
            return str(self.expr)
        taps = self.taps or ()
        if len(taps) > 8:
            shown = ", ".join(f"{v:g}" for v in taps[:4])
            return f"taps({shown}, ..., {taps[-1]:g}; {len(taps)} taps)"
        return "taps(" + ", ".join(f"{v:g}" for v in taps) + ")"

    def __repr__(self) -> str:
        return f"Kernel({self})"


@functools.lru_cache(maxsize=1024)
def _diff(kernel: Kernel, symbol: sp.Symbol) -> Kernel:
    if kernel.expr is not None:
        return Kernel.closed_form(sp.diff(kernel.expr, symbol))
    return Kernel.from_taps([0.0])


def _for_arrays(expr: sp.Expr) -> sp.Expr:
    """expr for NumPy arrays of n: the unit impulse as a Piecewise (NumPy's printer has no KroneckerDelta),
    and a delayed term heaviside(n - d) g(n - d) as Piecewise((g, n > d), (h0 g, n = d), (0, True)), so that
    g(n - d) = r^(n - d), which overflows for n << d, is selected away rather than multiplied by 0."""
    expr = expr.replace(sp.KroneckerDelta, lambda i, j: sp.Piecewise((1, sp.Eq(i, j)), (0, True)))

    def gated(term):
        steps = [f for f in term.args if isinstance(f, sp.Heaviside)]
        rest = sp.Mul(*[f for f in term.args if f not in steps])
        for step in steps:
            x = step.args[0]
            h0 = step.args[1] if len(step.args) > 1 else sp.Rational(1, 2)
            rest = sp.Piecewise((rest, x > 0), (h0 * rest, sp.Eq(x, 0)), (0, True))
        return rest

    return expr.replace(lambda e: e.is_Mul and any(isinstance(f, sp.Heaviside) for f in e.args), gated)


def _number(v: float) -> sp.Expr:
    """Integers stay exact (1, not 1.0) so that derivations read cleanly."""
    return sp.Integer(int(v)) if float(v).is_integer() else sp.Float(v)


def _float_big_integers(expr):
    """Integers beyond int64 as floats: NumPy would make them object arrays (log(10**64) fails there)."""
    expr = sp.sympify(expr)
    big = {i: sp.Float(i) for i in expr.atoms(sp.Integer) if abs(i) > 2**62}
    return expr.xreplace(big) if big else expr


@functools.lru_cache(maxsize=1024)
def _lambdified(exprs: tuple[sp.Expr, ...], symbols: tuple[sp.Symbol, ...]):
    """One function of ``symbols`` returning the list of ``exprs`` (one lambdify for a whole tap list)."""
    return sp.lambdify(symbols, [_float_big_integers(e) for e in exprs], modules="numpy")


@functools.lru_cache(maxsize=512)
def _closed_form(expr: sp.Expr) -> Kernel:
    return Kernel._derive_closed_form(expr)


# ------------------------------------------------------------ parallel form
def _binomial_basis(poly: sp.Poly) -> list[sp.Expr]:
    """c_0..c_d with P(m) = sum_j c_j C(m + j, j): the polynomial in the basis of the responses of a
    cascade of first-order sections (C(m + j, j) r^m is the impulse response of j + 1 of them)."""
    m = poly.gens[0]
    rest = poly
    out: list[sp.Expr] = []
    degree = poly.degree() if not poly.is_zero else -1
    coeffs = [sp.Integer(0)] * (degree + 1)
    for j in range(degree, -1, -1):
        lead = rest.coeff_monomial(m**j)
        c = lead * sp.factorial(j)  # C(m + j, j) = m^j / j! + lower powers
        coeffs[j] = c
        rest = rest - sp.Poly(c * sp.expand_func(sp.binomial(m + j, j)), m)
    out = [_tidy(c) for c in coeffs]
    return out


def _trig_product(factors: list[dict]) -> dict:
    """The product of trigonometric factors, each {F: (A, B)} meaning A cos(F m) + B sin(F m), as one such
    dict with canonical frequencies (:func:`_canonical_frequency`; F = 0 keeps A only)."""
    result = {sp.Integer(0): (sp.Integer(1), sp.Integer(0))}
    for factor in factors:
        new: dict = {}

        def add(freq, a, b):
            freq = sp.expand(freq)
            canon = _canonical_frequency(freq)
            if canon != freq:  # cos(-F m) = cos(F m), sin(-F m) = -sin(F m)
                b = -b
            if canon == 0:
                b = sp.Integer(0)
            old = new.get(canon, (sp.Integer(0), sp.Integer(0)))
            new[canon] = (old[0] + a, old[1] + b)

        for f1, (a1, b1) in result.items():
            for f2, (a2, b2) in factor.items():
                half = sp.Rational(1, 2)
                add(f1 - f2, half * (a1 * a2 + b1 * b2), half * (b1 * a2 - a1 * b2))
                add(f1 + f2, half * (a1 * a2 - b1 * b2), half * (a1 * b2 + b1 * a2))
        result = new
    return result


def _parallel_form(expr: sp.Expr, start: int) -> Parallel:
    """The parallel form of a closed form whose terms are all smooth from n = ``start`` on (see
    :func:`_exp_poly_terms`): the taps h[0..start-1] and, for n = start + m, the sections of
    sum_i P_i(m) r_i^m (A_i cos(F_i m) + B_i sin(F_i m)), one per distinct pole (r_i, F_i), read off the
    terms exactly (no linear solve: the coefficients are those the closed form was written with)."""
    m = sp.Dummy("m", integer=True, nonnegative=True)
    expanded = sp.expand(sp.sympify(expr), power_exp=True, mul=True, multinomial=True, log=False)
    taps = tuple(_tidy(expr.xreplace({N: sp.Integer(k)})) for k in range(start))
    groups: dict[tuple[sp.Expr, sp.Expr], list] = {}
    for term in sp.Add.make_args(expanded):
        if term == 0 or any(isinstance(f, sp.KroneckerDelta) for f in sp.Mul.make_args(term)):
            continue  # an impulse lies before ``start``: it is one of the taps
        coefficient: sp.Expr = sp.Integer(1)
        ratio: sp.Expr = sp.Integer(1)
        poly = sp.Poly(1, m)
        trig: list[dict] = []
        for factor in _factors(term):
            if not factor.has(N):
                coefficient = coefficient * factor
                continue
            if isinstance(factor, sp.Heaviside):
                continue  # 1 for n >= start
            if isinstance(factor, (sp.cos, sp.sin)):
                c, d = _linear_in_n(factor.args[0])
                phase = c * start + d
                if isinstance(factor, sp.cos):  # cos(c m + phase)
                    trig.append({c: (sp.cos(phase), -sp.sin(phase))})
                else:
                    trig.append({c: (sp.sin(phase), sp.cos(phase))})
                continue
            base, exponent = factor.as_base_exp()
            if isinstance(factor, sp.exp):
                base, exponent = sp.E, factor.args[0]
            if not base.has(N):
                c, d = _linear_in_n(exponent)
                ratio = ratio * base**c
                coefficient = coefficient * base ** (c * start + d)
                continue
            poly = poly * sp.Poly(sp.expand(factor.xreplace({N: m + start})), m)
        ratio = sp.powsimp(sp.simplify(ratio))
        for freq, (a, b) in _trig_product(trig).items():
            groups.setdefault((ratio, freq), []).append((coefficient, poly, a, b))
    sections = []
    for (ratio, freq), parts in groups.items():
        pa = sum((sp.Poly(sp.expand(c * a), m) * p for c, p, a, _ in parts), sp.Poly(0, m))
        pb = sum((sp.Poly(sp.expand(c * b), m) * p for c, p, _, b in parts), sp.Poly(0, m))
        ca, cb = _binomial_basis(pa), _binomial_basis(pb)
        size = max(len(ca), len(cb))
        ca += [sp.Integer(0)] * (size - len(ca))
        cb += [sp.Integer(0)] * (size - len(cb))
        if freq == 0:
            coeffs = tuple(ca)
        else:
            coeffs = tuple(zip(ca, cb))
        while coeffs and (coeffs[-1] == 0 or coeffs[-1] == (0, 0)):
            coeffs = coeffs[:-1]
        if coeffs:
            sections.append(Section(pole=ratio, frequency=freq, coeffs=coeffs))
    sections.sort(key=lambda s: (sp.default_sort_key(s.frequency), sp.default_sort_key(s.pole)))
    return Parallel(taps=taps, sections=tuple(sections))


def parallel_impulse(form: Parallel, length: int, values: Mapping[sp.Symbol, float]) -> np.ndarray:
    """h[0..length-1] of a parallel form, run as the scans run it (the sections' cascades, float64)."""
    def num(e):
        return complex(sp.N(sp.sympify(e).subs(values))).real

    out = np.zeros(length)
    for k, t in enumerate(form.taps[:length]):
        out[k] = num(t)
    d = form.delay
    for sec in form.sections:
        r = num(sec.pole)
        pole = r * np.exp(1j * num(sec.frequency)) if sec.frequency != 0 else r
        levels = [0j] * sec.multiplicity
        for n in range(length - d):
            prev = 1.0 if n == 0 else 0.0
            for j in range(sec.multiplicity):
                levels[j] = pole * levels[j] + prev
                prev = levels[j]
            if sec.frequency == 0:
                out[d + n] += sum(num(c) * v.real for c, v in zip(sec.coeffs, levels))
            else:
                out[d + n] += sum(num(ca) * v.real + num(cb) * v.imag for (ca, cb), v in zip(sec.coeffs, levels))
    return out
