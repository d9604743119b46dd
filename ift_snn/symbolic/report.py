"""The Derivation record and its rendering to Markdown (with LaTeX), LaTeX and JSON.

One :class:`Derivation` feeds the reference check, the generated kernels and
the golden files in ``derivations/``; its ``fingerprint`` (sha256 of the
canonical SymPy form of the model and its scans, stable across runs) keys
every cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

import sympy as sp
from sympy.printing.latex import LatexPrinter

from ..neurons.models import NeuronModel
from . import ift
from .recurrence import (
    Proof,
    Recurrence,
    Scan,
    derive_recurrence,
    prove,
)
from .system import System, build_system

__all__ = ["Derivation", "derive", "render_markdown", "render_latex", "render_text", "recurrence_json",
]

DISPLAY_T = 4


class _Latex(LatexPrinter):
    """SymPy's LaTeX printer, except that Heaviside prints as H (theta is the threshold here)."""

    def _print_Heaviside(self, expr, exp=None):
        tex = r"H\left(%s\right)" % self._print(expr.args[0])
        return tex if exp is None else f"{tex}^{{{exp}}}"


def _tex(expr) -> str:
    return _Latex().doprint(expr)


@dataclass(frozen=True, eq=False)
class Derivation:
    """Everything derived for one model: system, Jacobians, G, adjoint, recurrence, proofs."""

    model: NeuronModel
    T: int
    system: System
    jacobians: ift.Jacobians
    G: sp.Matrix
    adjoint: ift.Adjoint
    recurrence: Recurrence
    proofs: tuple[Proof, ...]

    @property
    def proved(self) -> bool:
        return all(p.ok for p in self.proofs)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of srepr of the model definition and every scan (stable across runs)."""
        parts = [repr(self.model), sp.srepr(self.model.surrogate.expr)]
        for scan in (self.recurrence.forward, self.recurrence.backward, self.recurrence.slayer):
            parts.append(_scan_srepr(scan))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _scan_srepr(scan: Scan) -> str:
    items = [scan.name, scan.direction, *map(sp.srepr, scan.inputs), *map(sp.srepr, scan.state),
             *map(sp.srepr, scan.init)]
    items += [f"{sp.srepr(lhs)}={sp.srepr(rhs)}" for lhs, rhs in scan.assignments]
    items += [sp.srepr(e) for e in scan.update]
    items += [f"{sp.srepr(lhs)}={sp.srepr(rhs)}" for lhs, rhs in scan.finals]
    return "|".join(items)


def derive(model: NeuronModel, T: int = 6) -> Derivation:
    """Build, solve and prove: system and Jacobians at min(T, 4) for display, proofs for 2..T.

    Cost: dominated by the symbolic proofs, roughly O(T^3) expression work;
    a second or less per built-in model at T = 6.
    """
    if isinstance(T, bool) or not isinstance(T, int) or not 2 <= T <= 8:
        raise ValueError(f"T={T!r} is out of range: the symbolic horizon must be an int in 2..8")
    rec = derive_recurrence(model)
    shown = min(T, DISPLAY_T)
    system = build_system(model, shown)
    jac = ift.jacobians(system)
    ift.check_unit_lower_triangular(jac.dependent, system.dependent)
    G = ift.ds_da(system, jac)
    adj = ift.adjoint(system, jac)
    proofs = tuple(prove(model, t, rec, method=m) for m in ("exodus", "slayer") for t in range(2, T + 1))
    if T >= 3:  # truncation with chunks of 2 steps at the largest horizon up to 5: it cuts at least once
        proofs += tuple(prove(model, min(T, 5), rec, method=m, truncation=2) for m in ("exodus", "slayer"))
    return Derivation(model, T, system, jac, G, adj, rec, proofs)


# (the numeric check against the oracle: ift_snn/experiments/verify.py, above the backends)
# ----------------------------------------------------------------- render
def _pattern(J: sp.Matrix) -> str:
    rows = []
    for i in range(J.rows):
        rows.append(" ".join("1" if (i == j and J[i, j] == 1) else ("*" if J[i, j] != 0 else ".")
                             for j in range(J.cols)))
    return "\n".join(rows)


def _latex_scan(scan: Scan) -> list[str]:
    lines = []
    for lhs, rhs in scan.assignments:
        lines.append(f"{_tex(lhs)} &\\leftarrow {_tex(rhs)}")
    for s, e in zip(scan.state, scan.update):
        lines.append(f"{_tex(s)} &\\leftarrow {_tex(e)}")
    return lines


def _aligned(lines: list[str]) -> str:
    return "$$\n\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}\n$$"


def _kernel_lines(d: Derivation) -> list[str]:
    out = []
    for k in d.recurrence.kernels:
        closed = str(k.kernel)
        rel = k.relation()
        out.append(f"- `{k.name}[n] = {closed}`: transfer function "
                   f"`({' + '.join(_poly_terms(k.num))}) / ({' + '.join(_poly_terms(k.den))})`, "
                   f"order {k.order}; recurrence `{rel}`; {_form(k.kernel)}")
    return out


def _form(kernel) -> str:
    """Which state representation the scans run the kernel in (docs/MATH.md section 10)."""
    form = kernel.parallel
    if form is None:
        return f"run in the direct form ({kernel.size} state value(s): one pole or finite taps, the same thing)"
    parts = []
    for s in form.sections:
        kind = "real pole" if s.frequency == 0 else f"conjugate pair at frequency {sp.sstr(s.frequency)}"
        cascade = f", a cascade of {s.multiplicity} sections" if s.multiplicity > 1 else ""
        parts.append(f"{kind} {sp.sstr(s.pole)}{cascade}")
    delay = f" behind {form.delay} leading tap(s)" if form.delay else ""
    return (f"run in the parallel form ({form.size} state values{delay}: {'; '.join(parts)}), "
            f"`{form}`")


def _poly_terms(coeffs) -> list[str]:
    terms = []
    for i, c in enumerate(coeffs):
        if c == 0:
            continue
        c = sp.sstr(c)
        terms.append(c if i == 0 else f"({c})*x**{i}" if i > 1 else f"({c})*x")
    return terms or ["0"]


def render_markdown(d: Derivation) -> str:
    """Markdown with LaTeX math: system, Jacobian structure, ds/da, recurrence, SLAYER's dropped term."""
    s, rec, m = d.system, d.recurrence, d.model
    out = [f"# Derivation: `{m.name}`", ""]
    out += [f"Model: `{m!r}`", "", f"Fingerprint (sha256): `{d.fingerprint}`", ""]
    out += ["## 1. The equation system", "",
            f"phi(u, s; a) = 0 for T = {s.T} (u_init is the initial state; f is the spike function, "
            "whose derivative the surrogate sigma replaces):", ""]
    eqs = [f"0 &= {_tex(e)}" for e in s.phi]
    out += [_aligned(eqs), ""]
    out += ["## 2. Jacobian structure", "",
            "d phi / d(u, s) in the order (u_0, s_0, u_1, s_1, ...): unit lower triangular, so the IFT "
            "holds unconditionally.", "", "```", _pattern(d.jacobians.dependent), "```", "",
            f"$$J = {_tex(d.jacobians.dependent)}$$", ""]
    out += ["## 3. ds/da by forward substitution", "",
            "G[n, m] = ds_n / da_m (zero above the diagonal: causal):", ""]
    entries = []
    for i in range(s.T):
        for j in range(i + 1):
            entries.append(f"G_{{{i},{j}}} &= {_tex(sp.factor(d.G[i, j]))}")
    out += [_aligned(entries), ""]
    out += ["## 4. The recurrence", "", "Kernel recurrences (transfer functions in x = z^-1):", ""]
    out += _kernel_lines(d) + [""]
    if rec.step_factor is not None:
        out += [f"Step factor of the exact reverse scan: $c_n = {_tex(rec.step_factor)}$", ""]
    for scan in (rec.forward, rec.backward):
        out += [f"### {scan.name.capitalize()} scan ({scan.direction} in time), one thread per neuron", "",
                "```", str(scan), "```", "", _aligned(_latex_scan(scan)), ""]
    out += ["## 5. The term SLAYER drops", "",
            f"SLAYER computes dL/ds_n = g_n; the exact gradient adds ${_tex(rec.dropped)}$ "
            "(the reset's feedback through later steps).", "", "```", str(rec.slayer), "```", ""]
    out += ["## 6. Proof", "", "The backward scan, unrolled symbolically, against the IFT adjoint "
            "(kernels by their closed-form values):", ""]
    for p in d.proofs:
        out.append(f"- {p.label}: {'proved' if p.ok else 'FAILED'}: {p.detail}")
    out.append("")
    return "\n".join(out)


def render_latex(d: Derivation) -> str:
    """A standalone LaTeX document of the derivation."""
    s, rec = d.system, d.recurrence
    title = d.model.name.replace("_", r"\_")
    body = [r"\documentclass{article}", r"\usepackage{amsmath}", r"\begin{document}",
            rf"\section*{{Derivation: \texttt{{{title}}}}}",
            r"\subsection*{Equation system}", r"\begin{align*}"]
    body.append(r" \\ ".join(f"0 &= {_tex(e)}" for e in s.phi))
    body += [r"\end{align*}", r"\subsection*{Jacobian}", rf"\[ J = {_tex(d.jacobians.dependent)} \]",
             r"\subsection*{$\partial s/\partial a$}", r"\begin{align*}"]
    body.append(r" \\ ".join(f"G_{{{i},{j}}} &= {_tex(sp.factor(d.G[i, j]))}"
                             for i in range(s.T) for j in range(i + 1)))
    body += [r"\end{align*}", r"\subsection*{Backward scan}", r"\begin{align*}"]
    body.append(r" \\ ".join(_latex_scan(rec.backward)))
    body += [r"\end{align*}", rf"SLAYER drops ${_tex(rec.dropped)}$.", r"\end{document}", ""]
    return "\n".join(body)


def render_text(d: Derivation) -> str:
    """Plain text for a terminal."""
    rec = d.recurrence
    out = [f"model        {d.model!r}", f"fingerprint  {d.fingerprint}", ""]
    out.append(f"equation system phi(u, s; a) = 0, T = {d.system.T}:")
    out += [f"  0 = {sp.sstr(e)}" for e in d.system.phi]
    out += ["", "Jacobian d phi/d(u, s) (unit lower triangular):", _pattern(d.jacobians.dependent), ""]
    out.append("ds/da by forward substitution:")
    for i in range(d.system.T):
        for j in range(i + 1):
            out.append(f"  G[{i},{j}] = {sp.sstr(sp.factor(d.G[i, j]))}")
    out += ["", "kernel recurrences:"] + [f"  {line[2:]}" for line in _kernel_lines(d)]
    if rec.step_factor is not None:
        out.append(f"  step factor c_n = {sp.sstr(rec.step_factor)}")
    out += ["", str(rec.forward), "", str(rec.backward), "",
            f"SLAYER drops from dL/ds_n: {sp.sstr(rec.dropped)}", ""]
    return "\n".join(out)


def recurrence_json(d: Derivation) -> dict:
    """The recurrence as plain data (strings in SymPy's sstr syntax)."""

    def scan(sc: Scan) -> dict:
        return {
            "direction": sc.direction,
            "inputs": [str(x) for x in sc.inputs],
            "state": {str(s): sp.sstr(i) for s, i in zip(sc.state, sc.init)},
            "assignments": [[str(lhs), sp.sstr(rhs)] for lhs, rhs in sc.assignments],
            "outputs": [str(x) for x in sc.outputs],
            "update": {str(s): sp.sstr(e) for s, e in zip(sc.state, sc.update)},
            "finals": {str(lhs): sp.sstr(rhs) for lhs, rhs in sc.finals},
        }

    rec = d.recurrence
    return {
        "model": repr(d.model),
        "fingerprint": d.fingerprint,
        "kind": rec.kind,
        "parameters": dict(d.model.params),
        "surrogate": sp.sstr(d.model.surrogate.expr),
        "kernels": [{"name": k.name, "closed_form": str(k.kernel), "num": [sp.sstr(c) for c in k.num],
                     "den": [sp.sstr(c) for c in k.den], "order": k.order,
                     "form": "direct" if k.kernel.parallel is None else "parallel",
                     "parallel": None if k.kernel.parallel is None else str(k.kernel.parallel)}
                    for k in rec.kernels],
        "step_factor": None if rec.step_factor is None else sp.sstr(rec.step_factor),
        "slayer_drops": sp.sstr(rec.dropped),
        "scans": {"forward": scan(rec.forward), "backward": scan(rec.backward), "slayer": scan(rec.slayer)},
        "proofs": [{"T": p.T, "method": p.method, "truncation": p.truncation, "ok": p.ok} for p in d.proofs],
    }


def dumps_json(d: Derivation) -> str:
    return json.dumps(recurrence_json(d), indent=2, sort_keys=False) + "\n"


__all__ += ["dumps_json"]
