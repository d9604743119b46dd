"""The gradient methods as objects, as diffrax passes its adjoints: what a backward differentiates, in one place.

    EXODUS  the exact gradient (= BPTT), by the IFT: the generated backward scan
    SLAYER  BPTT with the reset path detached (docs/MATH.md section 5): the generated SLAYER scan
    BPTT    the hand-written float64 reverse sweep (``backends/reference.py``): the oracle, for checks

Every public function takes a method by name ("exodus", "slayer", "bptt") or as one of these objects;
:func:`get_method` turns either into the object, whose attributes say what to run, so that no code compares
method names. A definition: it imports nothing of the package.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Method", "EXODUS", "SLAYER", "BPTT", "METHODS", "get_method"]


@dataclass(frozen=True)
class Method:
    """A gradient method: ``detach_reset`` (SLAYER drops the reset path), ``reference`` (the float64 oracle runs
    instead of a generated scan), ``scan`` (the generated scan it runs: "backward" or "slayer"; the
    one-step VJP of the same method is ``step`` / ``step_slayer``)."""

    name: str
    detach_reset: bool
    reference: bool
    scan: str

    @property
    def step(self) -> str:
        return "step_slayer" if self.detach_reset else "step"

    def __str__(self) -> str:
        return self.name


EXODUS = Method("exodus", detach_reset=False, reference=False, scan="backward")
SLAYER = Method("slayer", detach_reset=True, reference=False, scan="slayer")
BPTT = Method("bptt", detach_reset=False, reference=True, scan="backward")
#: The methods by name, in the order the CLI and the docs list them.
METHODS = {m.name: m for m in (EXODUS, SLAYER, BPTT)}


def get_method(method: str | Method) -> Method:
    """The :class:`Method` of ``method`` (a name or a Method); ValueError naming the methods otherwise."""
    if isinstance(method, Method):
        return method
    found = METHODS.get(method) if isinstance(method, str) else None
    if found is None:
        raise ValueError(f"unknown method {method!r:.40}; expected one of {', '.join(METHODS)}")
    return found
