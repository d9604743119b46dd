"""The two CLI entry points of the events package: ``ift-snn derive events_lif`` and
``ift-snn train --task digits --method events`` (``ift_snn.cli`` dispatches here)."""

from __future__ import annotations

import argparse
import time


def derive_command(args: argparse.Namespace | None = None) -> int:
    """Print the continuous-time derivation report; exit status 0 when proved and numerically checked."""
    from ..symbolic.events import derive_events, render_events_text

    start = time.perf_counter()
    d = derive_events()
    print(render_events_text(d))
    print(f"time: derivation, proofs and numeric check {time.perf_counter() - start:.2f} s")
    return 0 if d.proved and d.numeric_ok else 1


def train_command(args: argparse.Namespace, out) -> dict:
    """Train the event network on digits with the CLI's epochs, seed, hidden sizes, batch size and lr;
    writes ``out``/metrics.json every epoch and returns the metrics (the CLI prints the summary)."""
    from .train import train_digits

    if args.task != "digits":
        raise ValueError(f"--method events supports --task digits only; got --task {args.task!r}")
    return train_digits(epochs=args.epochs, seed=args.seed, out=out, hidden=tuple(args.hidden),
                        batch_size=args.batch_size, lr=args.lr)
