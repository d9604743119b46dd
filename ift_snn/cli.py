"""Command line: ``ift-snn demo`` (and more subcommands as the library grows)."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import __version__
from .backends import reference
from .models import BUILTIN_MODELS, get_model
from .ops import METHODS, backward, forward


def _demo(args: argparse.Namespace) -> int:
    model = get_model(args.model)
    rng = np.random.default_rng(args.seed)
    T, M = args.T, args.neurons
    a = rng.normal(0.35, 0.5, size=(T, M))
    g = rng.normal(size=(T, M))
    print(f"model   {model!r}")
    print(f"input   a ~ N(0.35, 0.5^2), shape (T, neurons) = {a.shape}, float64, seed {args.seed}")
    start = time.perf_counter()
    trace = forward(model, a)
    print(f"forward {1e3 * (time.perf_counter() - start):.2f} ms, spike rate {np.mean(trace.s > 0):.3f}")
    oracle = reference.bptt(model, a, g)
    norm = np.max(np.abs(oracle.a))
    print("\nloss L = sum(g * s), g ~ N(0, 1); gradients of L against the float64 BPTT oracle:")
    print(f"{'method':<8} {'ms':>8} {'|dL/da - BPTT|/|BPTT|':>24} " + " ".join(f"{'dL/d' + k:>14}" for k in oracle.params))
    factors = {}
    for method in METHODS:
        start = time.perf_counter()
        grads = backward(model, trace, g, method=method)
        ms = 1e3 * (time.perf_counter() - start)
        factors[method] = grads.max_step_factor
        err = np.max(np.abs(grads.a - oracle.a)) / norm
        params = " ".join(f"{grads.params[k]:>14.6g}" for k in oracle.params)
        print(f"{method:<8} {ms:>8.2f} {err:>24.3e} {params}")
    print(f"{'oracle':<8} {'':>8} {'':>24} " + " ".join(f"{v:>14.6g}" for v in oracle.params.values()))
    print(f"\nlargest |step factor| (MATH section 6): {factors['exodus']:.3f}")
    print("EXODUS equals BPTT to rounding; SLAYER drops the reset and is off wherever spikes occur.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ift-snn", description="Exact gradients for spiking neural networks.")
    parser.add_argument("--version", action="version", version=f"ift-snn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="EXODUS vs SLAYER vs BPTT gradients of one layer")
    demo.add_argument("model", nargs="?", default="lif", choices=sorted(BUILTIN_MODELS))
    demo.add_argument("--T", type=int, default=100, help="time steps (default 100)")
    demo.add_argument("--neurons", type=int, default=64, help="neurons (default 64)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as exc:
        print(f"ift-snn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
