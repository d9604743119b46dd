"""Command line: ``ift-snn derive | codegen | bench | train | experiment | demo``.

``ift-snn derive`` (no argument) derives, proves and verifies the built-in LIF;
``ift-snn derive MODEL`` any built-in; ``ift-snn derive --eps "n*alpha**n"
--nu "theta*beta**n"`` a user's own kernels (parsed over a whitelist).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import __version__
from .backends import reference
from .models import BUILTIN_MODELS, get_model, srm
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


DEFAULT_PARAM = 0.9


def _user_model(args: argparse.Namespace):
    from .expressions import free_names

    if args.nu is None:
        raise ValueError("--eps needs --nu as well (the reset kernel; e.g. --nu 'theta*beta**n')")
    given: dict[str, float] = {}
    for item in args.param or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--param {item!r}: expected NAME=VALUE")
        try:
            given[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--param {item!r}: {value!r} is not a number") from None
    needed = [n for text in (args.eps, args.nu) for n in free_names(text) if n not in ("n", "theta")]
    params = {}
    for name in dict.fromkeys(needed):
        if name not in given:
            print(f"note: parameter {name} has no value; using {name}={DEFAULT_PARAM} for the numeric check "
                  f"(set it with --param {name}=VALUE)", file=sys.stderr)
        params[name] = given.pop(name, DEFAULT_PARAM)
    if given:
        raise ValueError(f"--param names {sorted(given)} do not appear in --eps or --nu")
    spike = int(args.spike) if args.spike.isdigit() else args.spike
    return srm(args.eps, args.nu, args.theta, params=params, spike=spike, surrogate=args.surrogate,
               truncate=args.truncate, name=args.name)


def _write_derivation(d, folder, latex: bool, cuda: bool = False) -> None:
    from pathlib import Path

    from .symbolic.report import dumps_json, render_latex, render_markdown

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "derivation.md").write_text(render_markdown(d))
    (out / "recurrence.json").write_text(dumps_json(d))
    if latex:
        (out / "derivation.tex").write_text(render_latex(d))
    if cuda:
        from .codegen.cuda import cuda_source
        from .codegen.ir import QUANTITIES, build_kernel

        for quantity in QUANTITIES:
            for dtype in ("f32", "f64"):
                kernel = build_kernel(d.model, quantity, dtype, d.recurrence)
                source = cuda_source(kernel, header=f"model: {d.model!r}")
                (out / f"{quantity}_{dtype}.cu").write_text(source.code)


def _derive(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .symbolic.report import derive, render_latex, render_markdown, render_text, verify_numerically

    if args.all:
        if not args.out:
            raise ValueError("--all writes one folder per built-in model: give --out DIR")
        status = 0
        for name in BUILTIN_MODELS:
            start = time.perf_counter()
            d = derive(get_model(name), args.T)
            _write_derivation(d, Path(args.out) / name, args.latex, cuda=True)
            ok = "proved" if d.proved else "FAILED"
            print(f"{name:<18} {ok} T=2..{args.T}  {time.perf_counter() - start:6.2f} s  -> {Path(args.out) / name}")
            status |= 0 if d.proved else 1
        return status
    if args.eps is not None:
        model = _user_model(args)
    else:
        if args.nu is not None:
            raise ValueError("--nu needs --eps as well")
        model = get_model(args.model)
    start = time.perf_counter()
    d = derive(model, args.T)
    elapsed = time.perf_counter() - start
    if args.latex:
        print(render_latex(d))
    elif args.markdown:
        print(render_markdown(d))
    else:
        print(render_text(d))
    if args.out:
        _write_derivation(d, args.out, args.latex)
        print(f"wrote {args.out}/derivation.md, recurrence.json" + (", derivation.tex" if args.latex else ""))
    check = verify_numerically(d)
    proofs = ", ".join(f"T={p.T}" for p in d.proofs)
    print("verification")
    print(f"  symbolic   recurrence == IFT adjoint ({proofs}): {'passed' if d.proved else 'FAILED'}")
    for p in d.proofs:
        if not p.ok:
            print(f"             {p.detail}")
    print(f"  numeric    largest relative error vs the float64 BPTT oracle (T=200, 16 neurons, 3 seeds): "
          f"u {check.forward:.1e}, dL/da {check.grad_a:.1e}, dL/du_init {check.grad_u_init:.1e}")
    print(f"  SLAYER     {100 * check.slayer_vs_exact:.0f}% from exact (relative max-norm of dL/da); "
          f"equals BPTT with the reset detached to {check.slayer_vs_oracle:.1e}; spike rate {check.spike_rate:.2f}")
    print(f"  time       derivation and proofs {elapsed:.2f} s")
    good = d.proved and max(check.forward, check.grad_a, check.grad_u_init, check.slayer_vs_oracle) < 1e-10
    return 0 if good else 1


def _codegen(args: argparse.Namespace) -> int:
    from .codegen.cuda import compile_ptx, cuda_source
    from .codegen.cpu import python_source
    from .codegen.ir import QUANTITIES, build_kernel

    model = get_model(args.model)
    quantities = QUANTITIES if args.quantity == "all" else (args.quantity,)
    for quantity in quantities:
        kernel = build_kernel(model, quantity, args.dtype)
        if args.target == "cuda":
            source = cuda_source(kernel, header=f"model: {model!r}", fast_math=args.fast_math)
            if args.check:
                for arch in ("sm_80", "sm_90"):
                    compile_ptx(source, arch)
                print(f"// compiled to PTX for sm_80 and sm_90: ok", file=sys.stderr)
        else:
            source = python_source(kernel, header=f"model: {model!r}")
        print(source.code)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import format_table, run

    results = run(T=args.T, batch=args.batch, neurons=args.neurons, dtype=args.dtype, repeats=args.repeats,
                  json_path=args.json)
    print(format_table(results))
    if args.torch:
        from .integrations.torch import bench_layer

        for device in ("cpu", "cuda"):
            if device == "cuda":
                import torch

                if not torch.cuda.is_available():
                    print("== torch layer on CUDA: no GPU here, skipped")
                    continue
            r = bench_layer(T=args.T, batch=args.batch, neurons=args.neurons, device=device, repeats=args.repeats)
            print(f"== torch layer on {device}: SpikingLayer forward+backward {r['layer_fwd_bwd_ms']:.1f} ms, "
                  f"PyTorch BPTT loop {r['torch_bptt_fwd_bwd_ms']:.1f} ms, ratio {r['ratio_torch_over_layer']:.1f}x, "
                  f"spikes equal: {r['spikes_equal']}")
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _train_config(args: argparse.Namespace):
    from .train import TrainConfig

    return TrainConfig(task=args.task, method=args.method, epochs=args.epochs, batch_size=args.batch_size,
                       lr=args.lr, surrogate_scale=args.surrogate_scale, surrogate_width=args.surrogate_width,
                       alpha=args.alpha, hidden=tuple(args.hidden), loss=args.loss, truncation=args.truncation,
                       blocks=args.blocks, seed=args.seed, T=args.T, shd_path=args.shd_path,
                       randman_samples=args.randman_samples)


def _train(args: argparse.Namespace) -> int:
    from .train import train

    metrics = train(_train_config(args), args.out)
    last = metrics["epochs"][-1] if metrics["epochs"] else None
    if last:
        print(f"final: loss {last['loss']:.4f}, train accuracy {last['train_acc']:.3f}, "
              f"test accuracy {last['test_acc']:.3f}")
    print(f"wrote {args.out}/metrics.json and {args.out}/weights.npz")
    if metrics["stopped"]:
        print(f"ift-snn: training stopped: {metrics['stopped']}", file=sys.stderr)
        return 3
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from .train import TrainConfig, scale_sweep

    base = TrainConfig(task="randman", randman_samples=args.randman_samples, T=args.T or 50,
                       hidden=tuple(args.hidden), batch_size=args.batch_size, lr=args.lr)
    result = scale_sweep(tuple(args.scales), tuple(args.methods), tuple(range(args.seeds)), epochs=args.epochs,
                         base=base, out=args.out)
    print(f"{'method':<8} {'scale':>6} {'|dL/dW1|':>12} {'test acc':>9} {'diverged':>9}")
    for method, per in result["summary"].items():
        for scale, row in per.items():
            acc = "-" if row["final_test_acc"] is None else f"{row['final_test_acc']:.3f}"
            print(f"{method:<8} {float(scale):>6g} {row['first_layer_grad_norm']:>12.4g} {acc:>9} "
                  f"{row['diverged_runs']:>9}")
    print(f"{result['seconds']:.0f} s; wrote {args.out}/scale_sweep.json, grad_norms.png, accuracy.png")
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

    derive = sub.add_parser("derive", help="derive, prove and verify the exact gradient of a neuron model")
    derive.add_argument("model", nargs="?", default="lif", choices=sorted(BUILTIN_MODELS),
                        help="a built-in model (default lif)")
    derive.add_argument("--eps", help="your spike-response kernel, a closed form in n, e.g. 'n*alpha**n'")
    derive.add_argument("--nu", help="your reset kernel, e.g. 'theta*beta**n'")
    derive.add_argument("--param", action="append", metavar="NAME=VALUE",
                        help="value of a kernel parameter for the numeric check (repeatable)")
    derive.add_argument("--theta", type=float, default=1.0, help="threshold (default 1)")
    derive.add_argument("--surrogate", default="exponential", help="surrogate name (default exponential)")
    derive.add_argument("--spike", default="single", help="single, multi, smooth or a max count")
    derive.add_argument("--truncate", type=int, default=None,
                        help="turn kernels without a finite recurrence into this many taps")
    derive.add_argument("--name", default="srm", help="name of a user model (default srm)")
    derive.add_argument("--T", type=int, default=6, help="symbolic horizon: prove for T = 2..this (default 6)")
    fmt = derive.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="print Markdown with LaTeX math")
    fmt.add_argument("--latex", action="store_true", help="print a LaTeX document")
    derive.add_argument("--out", help="write derivation.md and recurrence.json into this folder")
    derive.add_argument("--all", action="store_true", help="every built-in model into --out DIR/<model>/")
    derive.set_defaults(func=_derive)

    codegen = sub.add_parser("codegen", help="print the generated CUDA or CPU (Numba) kernels of a model")
    codegen.add_argument("model", nargs="?", default="lif", choices=sorted(BUILTIN_MODELS))
    codegen.add_argument("--target", choices=("cuda", "cpu"), default="cuda")
    codegen.add_argument("--dtype", choices=("f32", "f64"), default="f32")
    codegen.add_argument("--quantity", choices=("forward", "backward", "slayer", "all"), default="all",
                         help="which scan (default all): forward, backward (exodus) or slayer")
    codegen.add_argument("--fast-math", action="store_true", help="compile CUDA with --use_fast_math")
    codegen.add_argument("--check", action="store_true", help="also compile the CUDA to PTX (NVRTC or nvcc)")
    codegen.set_defaults(func=_codegen)

    bench = sub.add_parser("bench", help="speed against PyTorch autograd BPTT and the memory floor (ratios)")
    bench.add_argument("--T", type=int, default=300)
    bench.add_argument("--batch", type=int, default=64)
    bench.add_argument("--neurons", type=int, default=256)
    bench.add_argument("--dtype", choices=("f32", "f64"), default="f32")
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--json", help="also write the results as JSON to this file")
    bench.add_argument("--torch", action="store_true",
                       help="also time the PyTorch SpikingLayer against a PyTorch BPTT loop (CPU, and GPU if present)")
    bench.set_defaults(func=_bench)

    train = sub.add_parser("train", help="train a dense SNN (randman, digits or SHD) with exodus, slayer or bptt")
    train.add_argument("--task", choices=("randman", "digits", "shd"), default="randman")
    train.add_argument("--shd-path", help="the Spiking Heidelberg Digits HDF5 file (task shd)")
    train.add_argument("--method", choices=("exodus", "slayer", "bptt"), default="exodus")
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--surrogate-scale", type=float, default=1.0)
    train.add_argument("--surrogate-width", type=float, default=0.5)
    train.add_argument("--alpha", type=float, default=0.9, help="membrane decay of every LIF layer")
    train.add_argument("--hidden", type=int, nargs="+", default=[64, 64], help="hidden layer sizes")
    train.add_argument("--loss", choices=("sum_ce", "max_ce", "count_mse"), default="sum_ce")
    train.add_argument("--truncation", type=int, default=None, help="truncated BPTT window K")
    train.add_argument("--blocks", type=int, default=None, help="local blocks of this many layers")
    train.add_argument("--T", type=int, default=None, help="time steps (default: the task's)")
    train.add_argument("--randman-samples", type=int, default=100, help="randman samples per class")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="runs/train", help="output folder (metrics.json, weights.npz)")
    train.set_defaults(func=_train)

    experiment = sub.add_parser("experiment", help="experiments of the EXODUS paper")
    exp_sub = experiment.add_subparsers(dest="experiment", required=True)
    sweep = exp_sub.add_parser("scale-sweep", help="gradient norms and accuracy against surrogate scale")
    sweep.add_argument("--scales", type=float, nargs="+", default=[0.1, 0.3, 1.0, 2.0, 5.0])
    sweep.add_argument("--methods", nargs="+", default=["exodus", "slayer", "bptt"],
                       choices=("exodus", "slayer", "bptt"))
    sweep.add_argument("--seeds", type=int, default=3)
    sweep.add_argument("--epochs", type=int, default=15)
    sweep.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    sweep.add_argument("--batch-size", type=int, default=30)
    sweep.add_argument("--lr", type=float, default=3e-3)
    sweep.add_argument("--T", type=int, default=50)
    sweep.add_argument("--randman-samples", type=int, default=60)
    sweep.add_argument("--out", default="runs/scale_sweep")
    sweep.set_defaults(func=_experiment)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, ImportError) as exc:
        print(f"ift-snn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
