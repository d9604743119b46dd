"""The CLI entry points of the events package: ``ift-snn derive events_lif``, ``ift-snn derive --continuous``
and ``ift-snn train --method events`` (``--task digits``: the closed-form EventLIF network; ``--task shd``: an
SHD-format file read as spike times, any continuous neuron, ``--delays``, ``--recurrent``); ``ift_snn.cli``
dispatches here."""

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
    if args.task == "shd":  # any continuous neuron on an SHD-format file read as spike times
        from .srm_network import SRMTrainConfig, shd_spike_times, train_srm

        if args.shd_path is None:
            raise ValueError("--method events --task shd needs --shd-path (an SHD-format file, e.g. shd_train.h5 or "
                             "the SHD-like task's shd_like_train.h5)")
        xtr, ytr, K = shd_spike_times(args.shd_path)
        if args.shd_test_path is not None:
            xte, yte, K2 = shd_spike_times(args.shd_test_path)
            K = max(K, K2)
        else:  # the last 25% held out, as the discrete shd task does without a test file
            n = len(ytr)
            cut = n - max(1, n // 4)
            from .srm_network import subset

            xte, yte, xtr, ytr = subset(xtr, slice(cut, n)), ytr[cut:], subset(xtr, slice(0, cut)), ytr[:cut]
        cfg = SRMTrainConfig(hidden=tuple(args.hidden), delays=args.delays, recurrent=args.recurrent,
                             epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                             readout="max", max_spikes=64, max_delay=20.0, params={"tau": 4.0, "tau_s": 1.0},
                             count_floor=0.0)
        return train_srm(cfg, (xtr, ytr), (xte, yte), K, out, t_absent=100.0)
    from .train import train_digits

    return train_digits(epochs=args.epochs, seed=args.seed, out=out, hidden=tuple(args.hidden),
                        batch_size=args.batch_size, lr=args.lr)


def derive_continuous_command(args: argparse.Namespace) -> int:
    """``ift-snn derive [lif|alpha|adaptive] --continuous [--eps E --nu N --param NAME=VALUE --theta X]``:
    the derivation of :mod:`ift_snn.symbolic.continuous` with its proofs, the generated kernels' name, and a
    numeric check (every gradient against central differences of the simulation, float64)."""
    from ..neurons.spec import FLAGS, parse_params
    from ..symbolic.continuous import CONTINUOUS_MODELS, render_continuous_text
    from .srm import EventSRM, srm_source

    other = [flag for key, flag in FLAGS.items()
             if key not in ("builtin", "eps", "nu", "params", "theta") and getattr(args, key, None) is not None]
    if other:
        raise ValueError(f"--continuous takes a model name or --eps/--nu/--param/--theta; {', '.join(other)} "
                         "belong to the discrete models")
    params = parse_params(getattr(args, "params", None))
    if getattr(args, "theta", None) is not None:
        params["theta"] = float(args.theta)
    if args.model is not None:
        if args.model not in CONTINUOUS_MODELS:
            raise ValueError(f"--continuous: model {args.model!r} has no continuous form; expected one of "
                             f"{', '.join(CONTINUOUS_MODELS)} or --eps/--nu")
        if args.eps is not None or args.nu is not None:
            raise ValueError(f"give the model name {args.model!r} or --eps/--nu, not both")
        model = EventSRM.named(args.model, backend="python", **params)
    else:
        if args.eps is None or args.nu is None:
            raise ValueError("--continuous needs a model (lif, alpha, adaptive) or both --eps and --nu, kernels in t "
                             "(e.g. --eps 't*exp(-t/tau)/tau' --nu='-theta*exp(-t/tau)' --param tau=2; a text that starts with '-' "
                             "needs the '=')")
        params.setdefault("theta", 1.0)
        model = EventSRM(args.eps, args.nu, params, backend="python")
    start = time.perf_counter()
    d = model.derivation
    print(render_continuous_text(d))
    name = srm_source(model).split("kernel: ")[1].split("\n")[0]
    print(f"\ngenerated kernels: {name} (ift_snn.events.srm.srm_source prints them)")
    err = numeric_check(model)
    print(f"numeric    every gradient (weights, input times, delays, {', '.join(model.names)}) against central "
          f"differences of the simulation (2 samples, 3 inputs, 2 neurons, float64): max relative error {err:.1e}")
    print(f"time: derivation, proofs and numeric check {time.perf_counter() - start:.2f} s")
    return 0 if d.ok and err < 1e-5 else 1


def numeric_check(model, seed: int = 0) -> float:
    """Max-norm relative error of every gradient of a small random layer against central differences."""
    import numpy as np

    from .model import SpikeTrain
    from .srm import backward_srm, simulate_srm

    rng = np.random.default_rng(seed)
    B, C, M, K = 2, 3, 2, 3
    times = np.sort(rng.uniform(0.0, 8.0, (B, C, K)), axis=2)
    x = SpikeTrain(times, np.full((B, C), K))
    w = rng.normal(1.5, 0.7, (C, M))
    dl = rng.uniform(0.0, 1.0, (C, M))
    model = model.with_(max_spikes=64)
    tr = simulate_srm(model, w, x, delays=dl)
    g = rng.normal(size=tr.out.times.shape)

    def loss(mod=model, w_=w, x_=x, d_=dl):
        t = simulate_srm(mod, w_, x_, delays=d_)
        if not np.array_equal(t.out.counts, tr.out.counts):
            return None
        return float(np.sum(np.where(np.isfinite(t.out.times), t.out.times, 0.0) * g))

    grads = backward_srm(tr, g)
    worst = 0.0

    def compare(analytic, plus, minus, h):
        nonlocal worst
        if plus is None or minus is None:
            return
        fd = (plus - minus) / (2 * h)
        worst = max(worst, abs(fd - analytic) / max(abs(analytic), abs(fd), 1e-3))

    for (i, m) in ((0, 0), (C - 1, M - 1)):
        h = 1e-6
        for arr, analytic in ((w, grads.w), (dl, grads.delays)):
            p, q = arr.copy(), arr.copy()
            p[i, m] += h
            q[i, m] -= h
            kw = "w_" if arr is w else "d_"
            compare(analytic[i, m], loss(**{kw: p}), loss(**{kw: q}), h)
    t2 = times.copy()
    t2[0, 1, 1] += 1e-6
    t3 = times.copy()
    t3[0, 1, 1] -= 1e-6
    compare(grads.inputs[0, 1, 1], loss(x_=SpikeTrain(t2, x.counts)), loss(x_=SpikeTrain(t3, x.counts)), 1e-6)
    for name in model.names:
        v = model.params[name]
        h = 1e-6 * max(abs(v), 1.0)
        compare(grads.params[name], loss(mod=model.with_(**{name: v + h})), loss(mod=model.with_(**{name: v - h})), h)
    return worst
