"""The two CLI entry points of the events package: ``ift-snn derive events_lif`` and
``ift-snn train --task digits --method events`` (``ift_snn.cli`` dispatches here)."""

from __future__ import annotations

import argparse
import sys
import time


def derive_command(args: argparse.Namespace | None = None) -> int:
    """Print the continuous-time derivation report; exit status 0 when proved and numerically checked."""
    from ..symbolic.events import derive_events, render_events_text

    start = time.perf_counter()
    d = derive_events()
    print(render_events_text(d))
    print(f"time: derivation, proofs and numeric check {time.perf_counter() - start:.2f} s")
    return 0 if d.proved and d.numeric_ok else 1


def train_command(args: argparse.Namespace) -> int:
    """Train the event network on digits with the CLI's epochs, seed, hidden sizes, batch size, lr and out."""
    from .train import train_digits

    if args.task != "digits":
        raise ValueError(f"--method events supports --task digits only; got --task {args.task!r}")
    metrics = train_digits(epochs=args.epochs, seed=args.seed, out=args.out, hidden=tuple(args.hidden),
                           batch_size=args.batch_size, lr=args.lr)
    last = metrics["epochs"][-1] if metrics["epochs"] else None
    if last:
        print(f"final: loss {last['loss']:.4f}, train accuracy {last['train_acc']:.3f}, "
              f"test accuracy {last['test_acc']:.3f}")
    print(f"wrote {args.out}/metrics.json and {args.out}/weights.npz")
    if metrics["stopped"]:
        print(f"ift-snn: training stopped: {metrics['stopped']}", file=sys.stderr)
        return 3
    return 0
