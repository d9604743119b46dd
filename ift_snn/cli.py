"""Command line: ``ift-snn derive | codegen | bench | train | experiment | demo``.

``ift-snn derive`` (no argument) derives, proves and verifies the built-in LIF;
``ift-snn derive MODEL`` any built-in; ``ift-snn derive --eps "n*alpha**n"
--nu "theta*beta**n"`` a user's own kernels (parsed over a whitelist).
``derive``, ``codegen``, ``demo``, ``bench`` and ``train`` take a model the
same way: a built-in with overrides, your kernels or a model file
(:mod:`ift_snn.neurons.spec`).

Errors: every failure is one line ``ift-snn: error: ...`` on stderr naming the
flag or file, exit code 2, no traceback (``IFT_SNN_DEBUG=1`` re-raises for
one). Arguments and output paths are checked before any work; ``train`` and
``experiment scale-sweep`` write their results as they arrive, and Ctrl-C
(exit code 130) says what was kept.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .backends import reference
from .neurons.kernels import MAX_DELAY, MAX_TAPS
from .neurons.models import BUILTIN_MODELS, get_model
from .methods import EXODUS, get_method
from .ops import METHODS, backward, forward
from .neurons.spec import (
    add_model_arguments,
    check_model_file_name,
    model_and_spec_from_args,
    model_from_args,
    model_options,
    save_model_file,
)
from .symbolic.continuous import CONTINUOUS_MODELS

#: Continuous-time neurons with no discrete model of the same name (``derive NAME --continuous``).
CONTINUOUS_ONLY = tuple(n for n in CONTINUOUS_MODELS if n not in BUILTIN_MODELS)


def _demo(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    rng = np.random.default_rng(args.seed)
    T, M = args.T, args.neurons
    a = rng.normal(0.35, 0.5, size=(T, M))
    g = rng.normal(size=(T, M))
    print(f"model   {model!r}")
    print(f"input   a ~ N(0.35, 0.5^2), shape (T, neurons) = {a.shape}, float64, seed {args.seed}")
    first: dict[str, float] = {}

    def warm(name, call):
        """(result, warm ms): a first call (derive + generate + compile, kept in ``first``), then the median
        of three warm calls."""
        start = time.perf_counter()
        out = call()
        first[name] = 1e3 * (time.perf_counter() - start)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            out = call()
            times.append(1e3 * (time.perf_counter() - start))
        return out, sorted(times)[1]

    trace, ms = warm("forward", lambda: forward(model, a))
    print(f"forward {ms:.2f} ms (warm), spike rate {np.mean(trace.s > 0):.3f}")
    oracle = reference.bptt(model, a, g)
    norm = np.max(np.abs(oracle.a))
    print("\nloss L = sum(g * s), g ~ N(0, 1); gradients of L against the float64 BPTT oracle (ms: warm, the median"
          " of 3 calls after a first one):")
    print(f"{'method':<8} {'ms':>8} {'|dL/da - BPTT|/|BPTT|':>24} " + " ".join(f"{'dL/d' + k:>14}" for k in oracle.params))
    factors = {}
    for method in METHODS:
        grads, ms = warm(method, lambda: backward(model, trace, g, method=method))
        factors[method] = grads.max_step_factor
        err = np.max(np.abs(grads.a - oracle.a)) / norm
        params = " ".join(f"{grads.params[k]:>14.6g}" for k in oracle.params)
        print(f"{method:<8} {ms:>8.2f} {err:>24.3e} {params}")
    print(f"{'oracle':<8} {'':>8} {'':>24} " + " ".join(f"{v:>14.6g}" for v in oracle.params.values()))
    print("first calls (derive, generate and compile the kernels, once per model structure): "
          + ", ".join(f"{k} {v:.0f} ms" for k, v in first.items()))
    print(f"\nlargest |step factor| (docs/MATH.md section 6): {factors['exodus']:.3f}")
    print("EXODUS equals BPTT to rounding; SLAYER drops the reset and is off wherever spikes occur.")
    return 0


class counted_warnings:
    """Record the warnings of a long command instead of streaming them (a diverging run of a sweep raises
    hundreds of identical overflow warnings); :meth:`summary` is one line per kind with its first message."""

    def __enter__(self):
        import warnings

        self._context = warnings.catch_warnings(record=True)
        self.caught = self._context.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        return self._context.__exit__(*exc)

    def summary(self, why: str = "") -> list[str]:
        kinds: dict[str, list] = {}
        for w in self.caught:
            kinds.setdefault(w.category.__name__, []).append(w)
        lines = []
        for kind, items in sorted(kinds.items()):
            lines.append(f"{len(items)} {kind}{'s' if len(items) > 1 else ''} (first: {_shortened(items[0].message)})")
        if lines and why:
            lines.append(why)
        return lines


def _shortened(message, limit: int = 160) -> str:
    """The first line of ``message``, cut at a word boundary before ``limit`` characters, with "..." if cut."""
    text = str(message).splitlines()[0] if str(message) else ""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + " ..."


#: What each optional dependency is for: module -> the extra that installs it.
EXTRAS = {"tqdm": "train", "matplotlib": "train", "sklearn": "train", "h5py": "train", "torch": "torch"}
#: Package names where they differ from the module's.
_PACKAGES = {"sklearn": "scikit-learn"}


def require_extras(command: str, *modules: str) -> None:
    """Raise MissingExtraError, naming the extra to install, when a module ``command`` needs is missing:
    called before any work, so that no run is lost to an import at its end."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extras = sorted({EXTRAS[m] for m in missing})
        raise MissingExtraError(f"{command} needs {', '.join(_PACKAGES.get(m, m) for m in missing)}: "
                                f"pip install -e '.[{','.join(extras)}]' in the ift_snn checkout (from a wheel built "
                                f"with pip wheel --no-deps .: pip install 'ift_snn-*.whl[{','.join(extras)}]')")


class MissingExtraError(ImportError):
    """An optional dependency of a command is not installed (the message names the extra)."""


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


def _derive_builtin(name: str, T: int, folder: str, latex: bool) -> tuple[bool, float]:
    """Derive and prove a built-in and write its folder (one job of ``derive --all``): (proved, seconds)."""
    from .symbolic.report import derive

    start = time.perf_counter()
    d = derive(get_model(name), T)
    _write_derivation(d, folder, latex, cuda=True)
    return d.proved, time.perf_counter() - start


def _derive_recurrent(model) -> bool:
    """The recurrent layer of ``model`` (docs/MATH.md section 9): the coupling and its proofs (``derive --recurrent``)."""
    from .symbolic.recurrent_layer import COUPLING_RULES, prove_recurrent

    print("recurrent layer  a[n] = c[n] + V s[n-1]: the neuron's scans run time-outer, coupled by")
    for rule in COUPLING_RULES:
        print(f"  {rule}")
    start = time.perf_counter()
    proofs = [prove_recurrent(model, 4, 2), prove_recurrent(model, 4, 2, method="slayer"),
              prove_recurrent(model, 4, 2, truncation=2)]
    ok = all(p.ok for p in proofs)
    print(f"  symbolic   time-outer scans == IFT adjoint of the coupled system for dL/dc, dL/dV, dL/d(initial state) "
          f"and every dL/dp (exodus, SLAYER, truncated K=2; T=4, N=2): {'passed' if ok else 'FAILED'} "
          f"({time.perf_counter() - start:.2f} s)")
    for p in proofs:
        if not p.ok:
            print(f"             {p.detail}")
    from .experiments.verify import verify_recurrent

    check = verify_recurrent(model)
    print(f"  numeric    generated kernels vs the float64 oracle (T=100, 2 x 8 neurons, 3 seeds): u {check['u']:.1e}, "
          f"every gradient exodus {check['exodus']:.1e}, slayer {check['slayer']:.1e}; spike rate "
          f"{check['spike_rate']:.2f}")
    return ok and max(check["u"], check["exodus"], check["slayer"]) < 1e-10


def _derive(args: argparse.Namespace) -> int:
    options = model_options(args) + (["--save-model"] if args.save_model else [])
    if args.continuous:  # any continuous-time neuron (docs/MATH.md section 7)
        from .events.commands import derive_continuous_command

        dropped = [flag for flag, on in (("--recurrent", args.recurrent), ("--all", args.all), ("--out", args.out),
                                         ("--save-model", args.save_model), ("--markdown", args.markdown),
                                         ("--latex", args.latex)) if on]
        if dropped:
            raise ValueError(f"--continuous prints its derivation as text; it takes no {', '.join(dropped)}")
        return derive_continuous_command(args)
    if args.model in CONTINUOUS_ONLY:
        raise ValueError(f"{args.model} is a continuous-time neuron: add --continuous")
    if args.model == "events_lif":  # continuous time (docs/MATH.md section 7): its own derivation and report
        from .events.commands import derive_command

        if options[1:]:
            raise ValueError(f"events_lif is the continuous-time LIF of ift_snn.events with a derivation of its own; "
                             f"it takes no model options ({', '.join(options[1:])})")
        return derive_command(args)
    from pathlib import Path

    from .symbolic.report import derive, render_latex, render_markdown, render_text
    from .experiments.verify import verify_numerically

    if args.all:
        if options:
            raise ValueError(f"--all derives every built-in model as it is; it takes no model options "
                             f"({', '.join(options)})")
        if not args.out:
            raise ValueError("--all writes one folder per built-in model: give --out DIR")
        _prepare_out_dir(args.out, "--out")
        done: list[str] = []
        args.kept = lambda: (f"kept {len(done)} derivations in {args.out}: {', '.join(done)}" if done else None)
        status = 0
        # one model per process (the proofs are pure-Python SymPy work): results printed in the models' order
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        names = list(BUILTIN_MODELS)
        workers = max(1, min(len(names), os.cpu_count() or 1))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs = [pool.submit(_derive_builtin, name, args.T, str(Path(args.out) / name), args.latex)
                    for name in names]
            for name, job in zip(names, jobs):
                proved, seconds = job.result()
                done.append(name)
                ok = "proved" if proved else "FAILED"
                print(f"{name:<18} {ok} T=2..{args.T}  {seconds:6.2f} s  -> {Path(args.out) / name}", flush=True)
                status |= 0 if proved else 1
        return status
    if args.save_model:
        check_model_file_name(args.save_model, "--save-model")
        _prepare_out_file(args.save_model, "--save-model")
    model, spec = model_and_spec_from_args(args)
    if args.out:
        _prepare_out_dir(args.out, "--out")
    if args.save_model:
        save_model_file(spec, args.save_model)
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
    if args.save_model:
        print(f"wrote {args.save_model} (use it with --model-file)")
    check = verify_numerically(d)
    exodus = [p for p in d.proofs if get_method(p.method) is EXODUS and not p.truncation]
    cut = [p for p in d.proofs if p.truncation]
    proofs = (f"exodus and SLAYER at T={exodus[0].T}..{exodus[-1].T}"
              + (f", both truncated K={cut[0].truncation} at T={cut[0].T}" if cut else "")) if exodus else ""
    print("verification")
    print(f"  symbolic   scans == IFT adjoint for dL/da, dL/ds, dL/d(initial state), dL/du_init and every dL/dp ({proofs}): "
          f"{'passed' if d.proved else 'FAILED'}")
    for p in d.proofs:
        if not p.ok:
            print(f"             {p.detail}")
    print(f"  numeric    largest relative error vs the float64 BPTT oracle (T=200, 16 neurons, 3 seeds): "
          f"u {check.forward:.1e}, dL/da {check.grad_a:.1e}, dL/du_init {check.grad_u_init:.1e}, "
          f"dL/d({', '.join(d.model.parameter_names)}) {check.params:.1e}")
    print(f"  SLAYER     {100 * check.slayer_vs_exact:.0f}% from exact (relative max-norm of dL/da); "
          f"equals BPTT with the reset detached to {check.slayer_vs_oracle:.1e}; spike rate {check.spike_rate:.2f}")
    print(f"  time       derivation and proofs {elapsed:.2f} s")
    recurrent_ok = _derive_recurrent(model) if args.recurrent else True
    # dL/dp runs through derivative filters; with a repeated pole pair (n rho^n cos(omega n)) their rounding
    # reaches ~1e-10 at T = 200, so the parameters pass at 1e-9, everything else at 1e-10
    good = d.proved and max(check.forward, check.grad_a, check.grad_u_init, check.slayer_vs_oracle) < 1e-10 \
        and check.params < 1e-9
    return 0 if good and recurrent_ok else 1


def _codegen(args: argparse.Namespace) -> int:
    from .codegen.cpu import numpy_map_source, numpy_source, python_source
    from .codegen.cuda import compile_ptx, cuda_source
    from .codegen.ir import QUANTITIES, SPLIT_QUANTITIES, build_kernel

    model = model_from_args(args)
    quantities = QUANTITIES if args.quantity == "all" else (args.quantity,)
    if args.target == "cpu":  # what the cpu target runs: the forward as its scan and its pointwise map
        quantities = tuple(q for quantity in quantities
                           for q in (SPLIT_QUANTITIES if quantity == "forward" else (quantity,)))
    for quantity in quantities:
        kernel = build_kernel(model, quantity, args.dtype)
        if kernel.direction == "map":
            source = numpy_map_source(kernel, header=f"model: {model!r}")
        elif args.target == "cuda":
            source = cuda_source(kernel, header=f"model: {model!r}", fast_math=args.fast_math)
            if args.check:
                for arch in ("sm_80", "sm_90"):
                    compile_ptx(source, arch)
                print("// compiled to PTX for sm_80 and sm_90: ok", file=sys.stderr)
        elif args.target == "numpy":
            source = numpy_source(kernel, header=f"model: {model!r}")
        else:
            source = python_source(kernel, header=f"model: {model!r}")
        print(source.code)
    return 0


def _bench_zoo(args: argparse.Namespace) -> int:
    """``bench --zoo``: the first call of every zoo neuron, in a fresh kernel cache folder (nothing compiled
    before), one row as each finishes; warnings counted, not streamed; JSON rewritten after every row."""
    import tempfile

    from .experiments.zoo import (
        ZOO,
        bench_zoo,
        delay_line,
        format_zoo_table,
        tap_list,
    )

    specs = dict(ZOO)
    if args.delays or args.taps:
        specs = {f"delay{d}": delay_line(d) for d in args.delays or ()}
        specs.update({f"taps{n}": tap_list(n) for n in args.taps or ()})
    rows: list = []
    args.kept = lambda: f"kept {args.json} ({len(rows)} of {len(specs)} neurons)" if args.json and rows else None
    with tempfile.TemporaryDirectory(prefix="ift_snn_zoo_") as folder, counted_warnings() as warned:
        before = os.environ.get("IFT_SNN_CACHE_DIR")
        os.environ["IFT_SNN_CACHE_DIR"] = folder

        def progress(row) -> None:
            rows.append(row)
            print(f"  {row['name']:<22} first call {row['first_call_s']:6.2f} s, proofs "
                  f"{'passed' if row['proved'] else 'FAILED'}", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps({"zoo": rows}, indent=2))

        print(f"timing {len(specs)} neurons (T = 200, 1024 neurons, float32, CPU; fresh kernel cache {folder})")
        try:
            bench_zoo(specs=specs, progress=progress)
        finally:
            if before is None:
                del os.environ["IFT_SNN_CACHE_DIR"]
            else:
                os.environ["IFT_SNN_CACHE_DIR"] = before
    print(format_zoo_table(rows, target=not (args.delays or args.taps)))
    for line in warned.summary("warnings while timing, counted: the random inputs, not errors"):
        print(line)
    if args.json:
        print(f"wrote {args.json}")
    return 0 if all(r["proved"] for r in rows) else 1


class _Given(argparse.Action):
    """Stores the value and notes that it was given (``<dest>_given``), for an option whose default depends on
    the rest of the command (``bench --T``: 300 for timing, 2000 for --precision)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def _bench_precision(args: argparse.Namespace) -> int:
    """``bench --precision``: every precision family (ift_snn.experiments.precision) in float64 and float32 at ``--T`` steps
    against the float64 oracle on the same spikes, one row as each finishes; JSON rewritten after every row."""
    import numpy as np

    from .experiments.precision import FAMILIES, family_model, format_precision_table, measure

    T = args.T if getattr(args, "T_given", False) else 2000
    rows: list = []
    args.kept = lambda: f"kept {args.json} ({len(rows)} rows)" if args.json and rows else None
    print(f"precision of {len(FAMILIES)} families at T = {T}, 4 neurons, against the float64 oracle on the same "
          "spikes, inputs and float32-rounded parameters (relative max-norm errors)")
    with counted_warnings() as warned:
        for name in FAMILIES:
            for dtype in (np.float64, np.float32):
                r = measure(family_model(name), T=T, M=4, dtype=dtype)
                rows.append({"name": name, "dtype": r.dtype, "T": r.T, "u": r.u, "a": r.a, "u0": r.u0,
                             "params": r.params, "spike_rate": r.spike_rate, "flips": r.flips})
                print(f"  {name:<18} {r.dtype:<8} membrane {r.u:.1e}  worst gradient {r.worst_gradient:.1e}",
                      flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps({"precision": rows}, indent=2))
    print(format_precision_table(rows))
    for line in warned.summary("warnings while measuring, counted: the random inputs, not errors"):
        print(line)
    met = all(r["u"] <= (1e-10 if r["dtype"] == "float64" else 1e-5)
              and max([r["a"], r["u0"], *r["params"].values()]) <= (1e-10 if r["dtype"] == "float64" else 1e-4)
              for r in rows)
    print(f"targets (float64 1e-10; float32 membrane 1e-5, gradients 1e-4): {'met' if met else 'NOT met'}")
    if args.json:
        print(f"wrote {args.json}")
    return 0 if met else 1


def _bench(args: argparse.Namespace) -> int:
    from .experiments.bench import format_table, run

    if args.torch:
        require_extras("ift-snn bench --torch", "torch")
    options = model_options(args)
    if options not in ([], ["lif"]) and (args.peers or args.torch):
        flag, what = (("--peers", "snnTorch, SpikingJelly and Norse") if args.peers
                      else ("--torch", "a PyTorch BPTT loop"))
        raise ValueError(f"{flag} compares LIF against {what}; model options do not apply there ({', '.join(options)})")
    lines = args.delays or args.taps
    if (args.zoo or lines) and (options or args.peers or args.torch):
        raise ValueError(f"{'--zoo' if args.zoo else '--delays/--taps'} times neurons of its own (ift_snn.experiments.zoo); "
                         "model options, --peers and --torch do not apply there")
    if args.zoo and lines:
        raise ValueError("--zoo and --delays/--taps are two benchmarks: give one of them")
    if args.precision and (options or args.peers or args.torch or args.zoo or lines):
        raise ValueError("--precision measures neurons of its own (ift_snn.experiments.precision); model options, --peers, "
                         "--torch, --zoo, --delays and --taps do not apply there")
    if args.fresh_memory:  # what a fresh array costs on this machine (the slow rounds of docs/benchmarks.md)
        if options or args.peers or args.torch or args.zoo or lines or args.precision or args.continuous:
            raise ValueError("--fresh-memory times fresh memory alone; model options and the other benchmarks do not "
                             "apply there")
        from .experiments.bench_peers import format_fresh_memory, fresh_memory

        if args.json:
            _prepare_out_file(args.json, "--json")
        result = fresh_memory()
        print(format_fresh_memory(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    if args.continuous:  # continuous time: cost against the horizon at a fixed number of spikes
        if options or args.peers or args.torch or args.zoo or lines or args.precision or args.recurrent:
            raise ValueError("--continuous times the continuous-time layer of its own neurons (lif, alpha, adaptive); "
                             "model options and the other benchmarks do not apply there")
        from .events.bench import format_horizon, horizon_scaling

        if args.json:
            _prepare_out_file(args.json, "--json")
        rows = horizon_scaling(rounds=args.rounds)
        print("continuous-time layer (ift_snn.events.srm, compiled; B=64, C=M=32, 4 input spikes per channel spread "
              f"over [0, T]), forward + backward, median of {args.rounds} rounds (min-max):")
        print(format_horizon(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return 0
    model = model_from_args(args) if options else None
    if args.json:
        _prepare_out_file(args.json, "--json")
    if args.zoo or lines:
        return _bench_zoo(args)
    if args.precision:
        return _bench_precision(args)
    if args.recurrent and not args.peers:
        raise ValueError("--recurrent compares a recurrent layer against the peers: give it with --peers")
    if (args.configs or args.threads != 2) and (not args.peers or args.recurrent):
        raise ValueError(f"{'--configs' if args.configs else '--threads'} applies to the feed-forward peer benchmark: "
                         "give it with --peers (and without --recurrent)")
    if args.peers and args.recurrent:  # one recurrent LIF layer: ift_snn.experiments.bench_recurrent
        if args.with_sinabs:
            raise ValueError("--with-sinabs: sinabs has no recurrent layer; leave it out with --recurrent")
        require_extras("ift-snn bench --peers --recurrent", "torch")
        from .experiments.bench_recurrent import DEFAULT_SIZES as RECURRENT_SIZES
        from .experiments.bench_recurrent import format_recurrent_table, run_recurrent_peers

        args.kept = lambda: f"kept {args.json} (rewritten after every size)" if args.json else None
        result = run_recurrent_peers(sizes=args.sizes or RECURRENT_SIZES, rounds=args.rounds, json_path=args.json)
        print(format_recurrent_table(result))
        if args.json:
            print(f"wrote {args.json}")
        return 0
    if args.peers:  # against snnTorch, SpikingJelly, Norse (sinabs): ift_snn.experiments.bench_peers
        from .experiments.bench_peers import DEFAULT_SIZES, format_peers_table, run_peers

        args.kept = lambda: f"kept {args.json} (rewritten after every size)" if args.json else None
        result = run_peers(sizes=args.sizes or DEFAULT_SIZES, rounds=args.rounds, with_sinabs=args.with_sinabs,
                           json_path=args.json, threads=args.threads, configs=args.configs)
        print(format_peers_table(result))
        if args.json:
            print(f"wrote {args.json}")
        return 0
    print(f"timing {'the model' if model is not None else 'LIF'} on the CPU (T = {args.T}, {args.batch} x "
          f"{args.neurons} neurons, {args.dtype}, median of {args.repeats} runs; kernels compiled first, untimed), "
          "then on the GPU if there is one ...", flush=True)
    results = run(T=args.T, batch=args.batch, neurons=args.neurons, dtype=args.dtype, repeats=args.repeats,
                  json_path=args.json, model=model)
    if model is not None:
        print(f"model   {model!r}")
    print(format_table(results))
    if args.torch:
        from .experiments.bench import bench_layer

        for device in ("cpu", "cuda"):
            if device == "cuda":
                import torch

                if not torch.cuda.is_available():
                    print("== torch layer on CUDA: no GPU here, skipped")
                    continue
            print(f"timing the torch layer on {device} against a PyTorch BPTT loop ...", flush=True)
            r = bench_layer(T=args.T, batch=args.batch, neurons=args.neurons, device=device, repeats=args.repeats)
            print(f"== torch layer on {device}: SpikingLayer forward+backward {r['layer_fwd_bwd_ms']:.1f} ms, "
                  f"PyTorch BPTT loop {r['torch_bptt_fwd_bwd_ms']:.1f} ms, ratio {r['ratio_torch_over_layer']:.1f}x, "
                  f"spikes equal: {r['spikes_equal']}")
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _train_config(args: argparse.Namespace):
    """The TrainConfig of ``ift-snn train``: the default LIF from --alpha and --surrogate-*, or, given model
    options, the model they describe with those folded in (--alpha then needs a LIF)."""
    from .training.train import TrainConfig

    lif = {"alpha": args.alpha, "surrogate_scale": args.surrogate_scale, "surrogate_width": args.surrogate_width}
    spec = None
    if model_options(args):
        extra = {}
        if args.alpha is not None:
            extra["params.alpha"] = (args.alpha, "--alpha")
        if args.surrogate_scale is not None or args.surrogate_width is not None:
            given = {"scale": args.surrogate_scale, "width": args.surrogate_width or 0.5}
            inner = ", ".join(f"{k}={v!r}" for k, v in given.items() if v is not None)
            extra["surrogate"] = (f"exponential({inner})", "--surrogate-scale/--surrogate-width")
        model, spec = model_and_spec_from_args(args, extra=extra)
        if args.alpha is not None and model.name != "lif":
            raise ValueError(f"--alpha is the decay of the default LIF, and {model.name} is not a LIF: "
                             "set its parameters with --param NAME=VALUE")
        lif = {}
    return TrainConfig(task=args.task, method=args.method, epochs=args.epochs, batch_size=args.batch_size,
                       lr=args.lr, hidden=tuple(args.hidden), loss=args.loss, truncation=args.truncation,
                       blocks=args.blocks, seed=args.seed, T=args.T, shd_path=args.shd_path,
                       randman_samples=args.randman_samples, model=spec, init_gain=args.init_gain,
                       dtype=args.dtype, shd_test_path=args.shd_test_path, n_channels=args.n_channels,
                       max_samples=args.max_samples, recurrent=args.recurrent,
                       **{k: v for k, v in lif.items() if v is not None})


def _kept_json(path: Path, describe):
    """``args.kept`` of a command that rewrites the JSON file ``path`` as results arrive: "kept PATH
    (describe(data))", or None when nothing readable is there yet."""
    def kept():
        try:
            return f"kept {path} ({describe(json.loads(path.read_text()))})"
        except (OSError, ValueError, KeyError, TypeError):
            return None

    return kept


def _report_warnings(warned, why: str = "warnings while training, counted") -> None:
    for line in warned.summary(why):
        print(f"ift-snn: {line}", file=sys.stderr)


def _kept_training(out: Path):
    """What an interrupted ``train`` left in ``out`` (None if nothing)."""
    try:
        epochs = len(json.loads((out / "metrics.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    kept = f"kept {out / 'metrics.json'} ({epochs} epochs)"
    if epochs and (out / "weights.npz").exists():
        kept += f" and {out / 'weights.npz'} (weights after epoch {epochs})"
    return kept


#: The modules each training task reads its data with (besides tqdm for the progress bar).
_TASK_MODULES = {"digits": ("sklearn",), "shd": ("h5py",)}


def _train(args: argparse.Namespace) -> int:
    require_extras("ift-snn train", "tqdm", *_TASK_MODULES.get(args.task, ()))
    if args.method == "events":  # continuous-time exact spike-time gradients; --task digits only
        from .events.commands import train_command

        if model_options(args):
            raise ValueError("--method events trains the continuous-time LIF of ift_snn.events, a different system; "
                             f"model options do not apply there ({', '.join(model_options(args))})")
        if args.task not in ("digits", "shd"):
            raise ValueError(f"--method events trains on spike times: --task digits or shd; got --task {args.task!r}")
        if args.task == "digits" and (args.delays or args.recurrent):
            raise ValueError("--method events --task digits trains the closed-form EventLIF network; --delays and "
                             "--recurrent are for --task shd (any continuous neuron)")
        out = _prepare_out_dir(args.out, "--out")
        args.kept = lambda: _kept_training(out)
        metrics = train_command(args, out)
    else:
        from .training.train import train

        cfg = _train_config(args)
        cfg.validate()
        out = _prepare_out_dir(args.out, "--out")
        args.kept = lambda: _kept_training(out)
        with counted_warnings() as warned:
            metrics = train(cfg, out)
        _report_warnings(warned)
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
    require_extras("ift-snn experiment scale-sweep", "tqdm", "matplotlib")
    from .training.train import TrainConfig, scale_sweep

    base = TrainConfig(task="randman", randman_samples=args.randman_samples, T=args.T or 50,
                       hidden=tuple(args.hidden), batch_size=args.batch_size, lr=args.lr)
    out = _prepare_out_dir(args.out, "--out")

    args.kept = _kept_json(out / "scale_sweep.json", lambda data: f"{len(data['runs'])} of "
                           f"{len(data['scales']) * len(data['methods']) * len(data['seeds'])} runs")
    with counted_warnings() as warned:
        result = scale_sweep(tuple(args.scales), tuple(args.methods), tuple(range(args.seeds)), epochs=args.epochs,
                             base=base, out=args.out)
    print(f"{'method':<8} {'scale':>6} {'|dL/dW1|':>12} {'test acc':>9} {'diverged':>9}")
    for method, per in result["summary"].items():
        for scale, row in per.items():
            acc = "-" if row["final_test_acc"] is None else f"{row['final_test_acc']:.3f}"
            print(f"{method:<8} {float(scale):>6g} {row['first_layer_grad_norm']:>12.4g} {acc:>9} "
                  f"{row['diverged_runs']:>9}")
    print(f"{result['seconds']:.0f} s; wrote {args.out}/scale_sweep.json, grad_norms.png, accuracy.png")
    diverged = sum(row["diverged_runs"] for per in result["summary"].values() for row in per.values())
    _report_warnings(warned, "warnings while training, counted (large surrogate scales make gradients overflow: "
                             f"{diverged} run(s) diverged, see the table)" if diverged else
                     "warnings while training, counted (no run diverged)")
    return 0


def _paper(args: argparse.Namespace) -> int:
    require_extras("ift-snn experiment paper", "tqdm", "matplotlib", "h5py", "sklearn")
    from .experiments.paper import QUICK, PaperConfig, paper_experiment

    given = {k: getattr(args, k) for k in ("epochs", "n_train", "n_test", "n_channels", "lr", "batch_size", "T",
                                           "loss", "neuron", "task") if getattr(args, k) is not None}
    if args.hidden is not None:
        given["hidden"] = tuple(args.hidden)
    quick = QUICK if args.quick else {}
    seeds = tuple(range(args.seeds)) if args.seeds is not None else None
    cfg = PaperConfig(**{**quick, **given, **({"seeds": seeds} if seeds else {}), "scales": tuple(args.scales),
                         "methods": tuple(args.methods), "bptt_scale": None if args.no_bptt else 1.0,
                         "stable": args.stable,
                         "shd_path": args.shd_path, "shd_test_path": args.shd_test_path})
    cfg.validate()
    out = _prepare_out_dir(args.out, "--out")

    args.kept = _kept_json(out / "paper.json", lambda data: f"{len(data['runs'])} runs, rewritten after every epoch")
    with counted_warnings() as warned:
        result = paper_experiment(cfg, out)
    if "baselines" in result:
        print("logistic regression on the inputs, test accuracy (1 bin = per-channel counts): "
              + ", ".join(f"{k} bins {v:.3f}" for k, v in result["baselines"].items())
              + f"; chance {1 / result['data']['n_classes']:.3f}")
    print(f"{'method':<8} {'scale':>6} {'final acc (min-max)':>22} {'best acc':>9} {'|dL/dW1| init':>14} "
          f"{'|dL/dW4| init':>14} {'s/epoch':>8}")
    for key, row in result["summary"].items():
        method, scale = key.split("@")
        acc, best = row["final_test_acc"], row["best_test_acc"]
        init = row["init_grad_norms"] or [math.inf] * 2  # (overflowed at initialisation)
        if acc is None:
            print(f"{method:<8} {float(scale):>6g} {'stopped (overflow)':>22} {'-':>9} {init[0]:>14.4g} "
                  f"{init[-1]:>14.4g} {'-':>8}")
        else:
            print(f"{method:<8} {float(scale):>6g} {acc['mean']:>8.3f} ({acc['min']:.3f}-{acc['max']:.3f}) "
                  f"{best['mean']:>9.3f} {init[0]:>14.4g} {init[-1]:>14.4g} {row['epoch_seconds']:>8.1f}")
        if row["stopped"]:
            print(f"         {row['stopped']} of {row['runs']} runs stopped: the gradient overflowed (paper.json "
                  "says where)")
        if row.get("silent"):
            print(f"         {row['silent']} of {row['runs']} runs had a silent layer (no spike in a whole epoch: "
                  "training stalls; paper.json's 'silent' and 'spike_rates' say where)")
        if "init_grad_rel_diff_vs_exodus" in row:
            print(f"         bptt against exodus at initialisation: largest relative difference of dL/dW "
                  f"{row['init_grad_rel_diff_vs_exodus']:.2g}")
    print(f"{result['seconds']:.0f} s; wrote {args.out}/paper.json, accuracy.png, grad_norms.png")
    _report_warnings(warned)
    return 0


def _recurrent_experiment(args: argparse.Namespace) -> int:
    require_extras("ift-snn experiment recurrent", "tqdm", "matplotlib", "h5py")
    from .experiments.recurrent import QUICK, RecurrentConfig, recurrent_experiment

    given = {k: getattr(args, k) for k in ("epochs", "n_train", "n_test", "n_channels", "lr", "T", "hidden")
             if getattr(args, k) is not None}
    quick = QUICK if args.quick else {}
    seeds = {"seeds": tuple(range(args.seeds))} if args.seeds is not None else {}
    cfg = RecurrentConfig(**{**quick, **given, **seeds, "bptt": not args.no_bptt, "shd_path": args.shd_path,
                             "shd_test_path": args.shd_test_path})
    cfg.validate()
    out = _prepare_out_dir(args.out, "--out")
    args.kept = _kept_json(out / "recurrent.json", lambda data: f"{len(data['runs'])} runs, rewritten after every epoch")
    with counted_warnings() as warned:
        result = recurrent_experiment(cfg, out)
    nets = result["networks"]
    print("networks: " + "; ".join(f"{k} {v['sizes']} ({v['weights']} weights)" for k, v in nets.items()))
    print(f"{'network/method':<22} {'final acc (min-max)':>22} {'best acc':>9} {'s/epoch':>8}")
    for key, row in result["summary"].items():
        acc, best = row["final_test_acc"], row["best_test_acc"]
        if acc is None:
            print(f"{key:<22} {'stopped (overflow)':>22}")
            continue
        print(f"{key:<22} {acc['mean']:>8.3f} ({acc['min']:.3f}-{acc['max']:.3f}) {best['mean']:>9.3f} "
              f"{row['epoch_seconds']:>8.1f}")
    if "bptt_vs_exodus" in result:
        print("bptt against exodus on the recurrent network at initialisation, largest relative difference per "
              "array: " + ", ".join(f"{v:.2g}" for v in result["bptt_vs_exodus"]))
    print(f"{result['seconds']:.0f} s; wrote {args.out}/recurrent.json, accuracy.png")
    _report_warnings(warned)
    return 0


def _events_experiment(args: argparse.Namespace) -> int:
    require_extras("ift-snn experiment events", "h5py")
    from .experiments.events import QUICK, EventsConfig, events_experiment

    given = {k: getattr(args, k) for k in ("epochs", "n_train", "n_test", "hidden", "lr") if getattr(args, k) is not None}
    quick = QUICK if args.quick else {}
    seeds = {"seeds": tuple(range(args.seeds))} if args.seeds is not None else {}
    cfg = EventsConfig(**{**quick, **given, **seeds, "shd_path": args.shd_path, "shd_test_path": args.shd_test_path})
    cfg.validate()
    out = _prepare_out_dir(args.out, "--out")
    args.kept = _kept_json(out / "events.json", lambda data: f"{len(data['runs'])} runs, rewritten after every run")
    with counted_warnings() as warned:
        result = events_experiment(cfg, out)
    print(f"{'run':<28} {'final acc (min-max)':>22} {'best acc':>9} {'s/epoch':>8} {'step MB':>8}")
    for key, row in result["summary"].items():
        acc, best = row["final_test_acc"], row["best_test_acc"]
        if acc is None:
            print(f"{key:<28} {'stopped':>22}")
            continue
        print(f"{key:<28} {acc['mean']:>8.3f} ({acc['min']:.3f}-{acc['max']:.3f}) {best['mean']:>9.3f} "
              f"{row['epoch_seconds']['mean']:>8.1f} {row['peak_step_mb']['mean']:>8.1f}")
    print(f"{result['seconds']:.0f} s; wrote {args.out}/events.json")
    _report_warnings(warned)
    return 0


def _truncation(args: argparse.Namespace) -> int:
    require_extras("ift-snn experiment truncation", "tqdm", "matplotlib", "h5py")
    from .training.local import memory_experiment

    out = _prepare_out_dir(args.out, "--out")
    args.kept = _kept_json(out / "memory.json", lambda data: "rewritten after every measurement and epoch")
    with counted_warnings() as warned:
        result = memory_experiment(out, quick=args.quick, epochs=args.epochs, n_train=args.n_train,
                                   n_test=args.n_test, neuron=args.neuron, seed=args.seed)
    print(f"{'configuration':<30} {'peak MiB':>9} {'of end-to-end':>14} {'floor MiB':>10} {'final acc':>10} {'best':>6}")
    for name, mem in result["memory"].items():
        run = result["training"].get(name, {})
        acc = run.get("test_acc") or []
        final = f"{acc[-1]:.3f}" if acc else "-"
        best = f"{max(acc):.3f}" if acc else "-"
        print(f"{name:<30} {mem['peak_bytes'] / 2**20:>9.1f} {mem['ratio']:>14.3f} {mem['floor_bytes'] / 2**20:>10.1f} "
              f"{final:>10} {best:>6}")
    print(f"{result['seconds']:.0f} s; wrote {args.out}/memory.json and memory.png")
    _report_warnings(warned)
    return 0


# ------------------------------------------------------------ argument checks
class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ``ift-snn: error: --FLAG: ...`` and exit code 2."""

    def error(self, message: str):  # noqa: D102 - argparse API
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message)
        print(f"ift-snn: error: {message} (see {self.prog} --help)", file=sys.stderr)
        self.exit(2)


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after every option's help, except where there is no default (None, a flag)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def _int_type(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    parse.__name__ = what
    return parse


def _float_type(what: str, ok):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = what
    return parse


POSITIVE_INT = _int_type(1, "a positive integer")
NON_NEGATIVE_INT = _int_type(0, "a non-negative integer")
AT_LEAST_2 = _int_type(2, "an integer >= 2")
POSITIVE_FLOAT = _float_type("a finite number > 0", lambda v: v > 0)
UNIT_INTERVAL = _float_type("a number in (0, 1]", lambda v: 0 < v <= 1)


def _size_triple(text: str) -> tuple[int, int, int]:
    """``B,T,N`` -> three positive ints (batch, time steps, neurons)."""
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected B,T,N (batch,time,neurons), got {text!r}")
    return tuple(POSITIVE_INT(p.strip()) for p in parts)


_size_triple.__name__ = "B,T,N"


def _counts(text: str, what: str, most: int) -> list[int]:
    """``N[,N...]`` -> positive ints, each at most ``most``."""
    out = []
    for part in text.split(","):
        n = POSITIVE_INT(part.strip())
        if n > most:
            raise argparse.ArgumentTypeError(f"{what} {n} is out of range: at most {most}")
        out.append(n)
    return out


def _delays(text: str) -> list[int]:
    """``D[,D...]`` -> delays in steps, each from 1 to MAX_DELAY."""
    return _counts(text, "delay", MAX_DELAY)


def _tap_counts(text: str) -> list[int]:
    """``L[,L...]`` -> tap counts, each from 1 to MAX_TAPS."""
    return _counts(text, "tap count", MAX_TAPS)


_delays.__name__ = "D[,D...]"
_tap_counts.__name__ = "L[,L...]"


def _existing_file(text: str) -> str:
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; expected a file")
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"file {text!r} does not exist")
    return text


def _prepare_out_dir(path, flag: str) -> Path:
    """Create the output folder of ``flag`` before any work; ValueError naming the flag if impossible. A folder
    that holds an earlier run's results (metrics.json, weights.npz, or an experiment's JSON) is said to be
    overwritten, one line on stderr, before the run starts (it was overwritten silently)."""
    from .training.train import prepare_out_dir

    folder = prepare_out_dir(path, flag)
    earlier = sorted(p.name for p in folder.glob("*") if p.suffix in (".json", ".npz") and p.is_file())
    if earlier:
        print(f"ift-snn: note: {flag} {str(folder)!r} holds an earlier run ({', '.join(earlier[:4])}"
              f"{', ...' if len(earlier) > 4 else ''}); it is overwritten as this run goes (give another {flag} "
              "to keep it)", file=sys.stderr)
    return folder


def _prepare_out_file(path, flag: str) -> Path:
    """Check, before any work, that the file of ``flag`` can be written (its folder exists, it is no folder)."""
    import tempfile

    file = Path(path)
    if file.is_dir():
        raise ValueError(f"{flag} {str(file)!r} is a folder; expected a file name")
    folder = file.parent
    if not folder.is_dir():
        raise ValueError(f"{flag} {str(file)!r}: the folder {str(folder)!r} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
        if file.exists():
            with open(file, "ab"):
                pass
    except OSError as exc:
        raise ValueError(f"{flag} {str(file)!r}: cannot write it: {exc.strerror or exc}") from None
    return file


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ift-snn", description="Exact gradients for spiking neural networks.")
    parser.add_argument("--version", action="version", version=f"ift-snn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    defaults = _DefaultsFormatter
    demo = sub.add_parser("demo", help="EXODUS vs SLAYER vs BPTT gradients of one layer")
    add_model_arguments(demo)
    demo.add_argument("--T", type=POSITIVE_INT, default=100, help="time steps (default 100)")
    demo.add_argument("--neurons", type=POSITIVE_INT, default=64, help="neurons (default 64)")
    demo.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the random input (default 0)")
    demo.set_defaults(func=_demo)

    derive = sub.add_parser("derive", help="derive, prove and verify the exact gradient of a neuron model")
    add_model_arguments(derive, extra_names=("events_lif", *CONTINUOUS_ONLY))
    derive.add_argument("--save-model", metavar="FILE",
                        help="also write the model to FILE (.json or .toml) for --model-file of any command")
    derive.add_argument("--T", type=AT_LEAST_2, default=6,
                        help="symbolic horizon: prove for T = 2..this (default 6)")
    fmt = derive.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="print Markdown with LaTeX math")
    fmt.add_argument("--latex", action="store_true", help="print a LaTeX document")
    derive.add_argument("--out", help="write derivation.md and recurrence.json into this folder")
    derive.add_argument("--all", action="store_true", help="every built-in model into --out DIR/<model>/")
    derive.add_argument("--recurrent", action="store_true",
                        help="also the recurrent layer a = c + V s[n-1]: its coupling and its proofs (T=4, N=2)")
    derive.add_argument("--continuous", action="store_true",
                        help="continuous time: MODEL (lif, alpha, adaptive) or --eps/--nu in t, exact spike-time "
                             "gradients by the implicit function theorem (docs/MATH.md section 7)")
    derive.set_defaults(func=_derive)

    codegen = sub.add_parser("codegen", help="print the generated CUDA, CPU (Numba) or NumPy kernels of a model")
    add_model_arguments(codegen)
    codegen.add_argument("--target", choices=("cuda", "cpu", "numpy"), default="cuda",
                         help="CUDA C (default), Python for Numba (cpu) or vectorised NumPy Python")
    codegen.add_argument("--dtype", choices=("f32", "f64"), default="f32")
    codegen.add_argument("--quantity", choices=("forward", "backward", "slayer", "all"), default="all",
                         help="which scan (default all): forward, backward (exodus) or slayer")
    codegen.add_argument("--fast-math", action="store_true", help="compile CUDA with --use_fast_math")
    codegen.add_argument("--check", action="store_true", help="also compile the CUDA to PTX (NVRTC or nvcc)")
    codegen.set_defaults(func=_codegen)

    bench = sub.add_parser("bench", help="speed against PyTorch autograd BPTT and the memory floor (ratios)",
                           formatter_class=defaults)
    add_model_arguments(bench)
    bench.add_argument("--T", type=POSITIVE_INT, default=300, action=_Given,
                       help="time steps (with --precision: 2000 unless given)")
    bench.add_argument("--batch", type=POSITIVE_INT, default=64, help="batch size")
    bench.add_argument("--neurons", type=POSITIVE_INT, default=256, help="neurons per sample")
    bench.add_argument("--dtype", choices=("f32", "f64"), default="f32", help="floating-point type")
    bench.add_argument("--repeats", type=POSITIVE_INT, default=5, help="timed runs per figure (the median is reported)")
    bench.add_argument("--json", help="also write the results as JSON to this file")
    bench.add_argument("--torch", action="store_true",
                       help="also time the PyTorch SpikingLayer against a PyTorch BPTT loop (CPU, and GPU if present)")
    bench.add_argument("--zoo", action="store_true",
                       help="instead: the first call (derive + generate + compile) and the proofs of every neuron "
                            "of the zoo (ift_snn.experiments.zoo), in a fresh kernel cache")
    bench.add_argument("--precision", action="store_true",
                       help="instead: float64 and float32 errors of every precision family (ift_snn.experiments.precision) "
                            "against the float64 oracle on the same spikes, at --T steps (default here 2000)")
    bench.add_argument("--delays", type=_delays, default=None, metavar="D[,D...]",
                       help="instead: as --zoo, for an exponential synapse delayed by each D steps (ring buffers; "
                            f"D from 1 to {MAX_DELAY})")
    bench.add_argument("--taps", type=_tap_counts, default=None, metavar="L[,L...]",
                       help=f"with or instead of --delays: a synapse of L taps (L from 1 to {MAX_TAPS})")
    bench.add_argument("--peers", action="store_true",
                       help="instead: one LIF layer (float32, CPU, 2 threads) against snnTorch, SpikingJelly and "
                            "Norse: forward, backward, peak memory, gradient agreement, memory floor, ratios "
                            "(needs pip install -e '.[bench]' in the ift_snn checkout)")
    bench.add_argument("--sizes", type=_size_triple, nargs="+", metavar="B,T,N", default=None,
                       help="with --peers: batch,time,neurons of each run "
                            "(default 64,300,256 16,500,4096 16,2000,1024)")
    bench.add_argument("--rounds", type=POSITIVE_INT, default=5,
                       help="with --peers: interleaved rounds per size (the median is reported)")
    bench.add_argument("--threads", type=POSITIVE_INT, default=2,
                       help="with --peers: threads of every contestant (PyTorch's and ift_snn's kernels; default 2)")
    bench.add_argument("--configs", action="store_true",
                       help="with --peers: also the exact layer with every built-in surrogate and with the reset "
                            "before the decay (sinabs', SpikingJelly's and Norse's convention)")
    bench.add_argument("--with-sinabs", action="store_true",
                       help="with --peers: also sinabs' LIF (slow: its CPU backward takes 7-83 s)")
    bench.add_argument("--fresh-memory", action="store_true",
                       help="instead: the time to fill a fresh 512 MB array right after freeing one and after pauses "
                            "of 0.5-3 s, against a reused buffer (the slow rounds on machines that hand free memory "
                            "back to their host; docs/benchmarks.md)")
    bench.add_argument("--continuous", action="store_true",
                       help="the continuous-time layer: forward + backward at a fixed number of spikes against the "
                            "horizon T = 100 .. 1e5 (target: constant within 1.5x)")
    bench.add_argument("--recurrent", action="store_true",
                       help="with --peers: one recurrent LIF layer (a = W x + V s[n-1]) against snnTorch's RLeaky, "
                            "SpikingJelly's LinearRecurrentContainer and Norse's LIFRecurrent (default sizes "
                            "64,250,256 32,1000,512)")
    bench.set_defaults(func=_bench)

    train = sub.add_parser("train", help="train a dense SNN (randman, digits or SHD) with exodus, slayer or bptt",
                           formatter_class=defaults)
    train.add_argument("--task", choices=("randman", "digits", "shd"), default="randman", help="the data set")
    train.add_argument("--shd-path", type=_existing_file,
                       help="the Spiking Heidelberg Digits HDF5 file (task shd)")
    train.add_argument("--method", choices=("exodus", "slayer", "bptt", "events"), default="exodus",
                       help="gradient: exact (exodus), reset dropped (slayer) or the BPTT reference")
    train.add_argument("--epochs", type=POSITIVE_INT, default=30, help="passes over the training set")
    train.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="samples per step")
    train.add_argument("--lr", type=POSITIVE_FLOAT, default=2e-3, help="Adam learning rate")
    add_model_arguments(train)
    train.add_argument("--surrogate-scale", type=POSITIVE_FLOAT,
                       help="height of the exponential surrogate (default: the largest stable scale, at most 1: "
                            "0.95 for --alpha 0.9)")
    train.add_argument("--surrogate-width", type=POSITIVE_FLOAT,
                       help="width of the exponential surrogate, times theta (default: 0.5)")
    train.add_argument("--alpha", type=UNIT_INTERVAL, help="membrane decay of every LIF layer (default: 0.9)")
    train.add_argument("--hidden", type=POSITIVE_INT, nargs="+", default=[64, 64], help="hidden layer sizes")
    train.add_argument("--loss", choices=("sum_ce", "max_ce", "count_mse"), default="sum_ce",
                       help="loss on the output spikes")
    train.add_argument("--truncation", type=POSITIVE_INT, default=None, metavar="K",
                       help="truncated BPTT: the backward scan restarts every K steps (not --truncate, which cuts "
                            "a kernel to K taps)")
    train.add_argument("--blocks", type=POSITIVE_INT, default=None, help="local blocks of this many layers")
    train.add_argument("--delays", action="store_true",
                       help="--method events --task shd: learn a synaptic delay per connection (exact gradient)")
    train.add_argument("--recurrent", action="store_true",
                       help="recurrent hidden layers: each hidden layer's spikes feed back into it (a = W x + V s[n-1])")
    train.add_argument("--T", type=POSITIVE_INT, default=None,
                       help="time steps (default: the task's, randman 100, digits 50, shd 250)")
    train.add_argument("--randman-samples", type=AT_LEAST_2, default=100, help="randman samples per class")
    train.add_argument("--init-gain", type=POSITIVE_FLOAT, default=2.0,
                       help="initial weights ~ N(0, (gain / sqrt(fan-in))^2)")
    train.add_argument("--dtype", choices=("f32", "f64"), default="f32", help="the network's floating-point type")
    train.add_argument("--shd-test-path", type=_existing_file, default=None,
                       help="task shd: the separate test file (without it 25%% of --shd-path is held out)")
    train.add_argument("--n-channels", type=POSITIVE_INT, default=700,
                       help="task shd: input channels the 700 units are binned into")
    train.add_argument("--max-samples", type=POSITIVE_INT, default=None,
                       help="task shd: read only the first N samples of each file (default: all)")
    train.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the data, weights and batches")
    train.add_argument("--out", default="runs/train",
                       help="output folder: metrics.json and weights.npz, rewritten after every epoch")
    train.set_defaults(func=_train)

    experiment = sub.add_parser("experiment", help="experiments of the EXODUS paper")
    exp_sub = experiment.add_subparsers(dest="experiment", required=True)
    sweep = exp_sub.add_parser("scale-sweep", help="gradient norms and accuracy against surrogate scale",
                               formatter_class=defaults)
    sweep.add_argument("--scales", type=POSITIVE_FLOAT, nargs="+", default=[0.1, 0.3, 1.0, 2.0, 5.0],
                       help="surrogate scales")
    sweep.add_argument("--methods", nargs="+", default=["exodus", "slayer", "bptt"],
                       choices=("exodus", "slayer", "bptt"), help="gradient methods")
    sweep.add_argument("--seeds", type=POSITIVE_INT, default=3, help="number of seeds (0, 1, ...)")
    sweep.add_argument("--epochs", type=POSITIVE_INT, default=15, help="epochs per run")
    sweep.add_argument("--hidden", type=POSITIVE_INT, nargs="+", default=[64, 64], help="hidden layer sizes")
    sweep.add_argument("--batch-size", type=POSITIVE_INT, default=30, help="samples per step")
    sweep.add_argument("--lr", type=POSITIVE_FLOAT, default=3e-3, help="Adam learning rate")
    sweep.add_argument("--T", type=POSITIVE_INT, default=50, help="time steps")
    sweep.add_argument("--randman-samples", type=AT_LEAST_2, default=60, help="randman samples per class")
    sweep.add_argument("--out", default="runs/scale_sweep",
                       help="output folder: scale_sweep.json (rewritten after every run) and figures")
    sweep.set_defaults(func=_experiment)
    paper = exp_sub.add_parser(
        "paper", formatter_class=defaults,
        help="the EXODUS paper's SHD setting (IF neurons, 4 layers, max-over-time CE, T = 250) on the SHD-like "
             "order task or an SHD file pair: exodus vs slayer over surrogate scales and seeds")
    paper.add_argument("--quick", action="store_true",
                       help="one seed, 240 training samples, 3 epochs (a first look: about a minute)")
    paper.add_argument("--scales", type=POSITIVE_FLOAT, nargs="+", default=[0.3, 1.0, 3.0], help="surrogate scales")
    paper.add_argument("--methods", nargs="+", default=["exodus", "slayer"], choices=("exodus", "slayer"),
                       help="gradient methods (bptt runs once, on the first seed at scale 1, as the equality check)")
    paper.add_argument("--no-bptt", action="store_true", help="leave out the bptt equality run")
    paper.add_argument("--stable", action="store_true",
                       help="lower every surrogate scale to the model's largest stable one (worst step factor <= 1)")
    paper.add_argument("--seeds", type=POSITIVE_INT, default=None, help="number of seeds (0, 1, ...; default 3)")
    paper.add_argument("--epochs", type=POSITIVE_INT, default=None, help="epochs per run (default 12)")
    paper.add_argument("--n-train", type=POSITIVE_INT, default=None,
                       help="SHD-like training samples to generate (default 1000)")
    paper.add_argument("--n-test", type=POSITIVE_INT, default=None, help="SHD-like test samples (default 400)")
    paper.add_argument("--n-channels", type=POSITIVE_INT, default=None,
                       help="input channels the 700 units are binned into (default 64)")
    paper.add_argument("--lr", type=POSITIVE_FLOAT, default=None, help="Adam learning rate (default 5e-4)")
    paper.add_argument("--batch-size", type=POSITIVE_INT, default=None, help="samples per step (default 32)")
    paper.add_argument("--task", choices=("shd_like", "randman"), default=None,
                       help="one factor at a time: the task (default shd_like; randman = the scale sweep's "
                            "random-manifold timing task, 4 classes)")
    paper.add_argument("--neuron", choices=("if", "lif"), default=None,
                       help="one factor at a time: the neurons (default if, the paper's; lif = lif(0.9))")
    paper.add_argument("--hidden", type=POSITIVE_INT, nargs="+", default=None,
                       help="one factor at a time: hidden layer sizes (default 128 128 128)")
    paper.add_argument("--T", type=POSITIVE_INT, default=None, help="one factor at a time: time steps (default 250)")
    paper.add_argument("--loss", choices=("max_ce", "sum_ce", "count_mse"), default=None,
                       help="one factor at a time: the loss (default max_ce, the paper's)")
    paper.add_argument("--shd-path", type=_existing_file, default=None,
                       help="an SHD-format training file (e.g. shd_train.h5) instead of the generated task")
    paper.add_argument("--shd-test-path", type=_existing_file, default=None,
                       help="its test file (e.g. shd_test.h5); needed with --shd-path")
    paper.add_argument("--out", default="runs/paper",
                       help="output folder: paper.json (rewritten after every epoch), accuracy.png, grad_norms.png")
    paper.set_defaults(func=_paper)
    rexp = exp_sub.add_parser(
        "recurrent", help="a feed-forward against a recurrent hidden layer at the same number of weights (SHD-like)",
        description="One hidden layer, feed-forward or recurrent (a = W x + V s[n-1]), at the same number of weights, "
                    "on the SHD-like order task (or an SHD file pair), exodus and slayer over seeds, and bptt's "
                    "gradient at initialisation against exodus's on one seed.")
    rexp.add_argument("--quick", action="store_true", help="one seed, 160 / 80 samples, T = 100, H = 32, 3 epochs")
    rexp.add_argument("--seeds", type=POSITIVE_INT, default=None, help="number of seeds (0, 1, ...; default 3)")
    rexp.add_argument("--epochs", type=POSITIVE_INT, default=None, help="epochs per run (default 12)")
    rexp.add_argument("--hidden", type=POSITIVE_INT, default=None, help="the recurrent layer's width (default 128)")
    rexp.add_argument("--n-train", type=POSITIVE_INT, default=None, help="SHD-like training samples (default 1000)")
    rexp.add_argument("--n-test", type=POSITIVE_INT, default=None, help="SHD-like test samples (default 400)")
    rexp.add_argument("--n-channels", type=POSITIVE_INT, default=None, help="input channels (default 64)")
    rexp.add_argument("--lr", type=POSITIVE_FLOAT, default=None, help="Adam learning rate (default 5e-4)")
    rexp.add_argument("--T", type=POSITIVE_INT, default=None, help="time steps (default 250)")
    rexp.add_argument("--no-bptt", action="store_true", help="leave out the bptt equality check")
    rexp.add_argument("--shd-path", type=_existing_file, default=None, help="an SHD-format training file")
    rexp.add_argument("--shd-test-path", type=_existing_file, default=None, help="its test file")
    rexp.add_argument("--out", default="runs/recurrent",
                      help="output folder for recurrent.json and accuracy.png (default runs/recurrent)")
    rexp.set_defaults(func=_recurrent_experiment)

    eexp = exp_sub.add_parser(
        "events", help="continuous-time networks on spike times (delays, recurrence) against discrete EXODUS (SHD-like)",
        description="One hidden layer of continuous-time LIF neurons trained on spike times with exact gradients "
                    "(feed-forward, learned delays, recurrent, both) against the discrete EXODUS network on the same "
                    "spikes binned, on the SHD-like order task (or an SHD file pair): accuracy, seconds per epoch, "
                    "peak memory of a training step.")
    eexp.add_argument("--quick", action="store_true", help="one seed, 60 / 40 samples, H = 16, 2 epochs")
    eexp.add_argument("--seeds", type=POSITIVE_INT, default=None, help="number of seeds (0, 1, ...; default 2)")
    eexp.add_argument("--epochs", type=POSITIVE_INT, default=None, help="epochs per run (default 5)")
    eexp.add_argument("--hidden", type=POSITIVE_INT, default=None, help="hidden width (default 64)")
    eexp.add_argument("--n-train", type=POSITIVE_INT, default=None, help="training samples (default 400)")
    eexp.add_argument("--n-test", type=POSITIVE_INT, default=None, help="test samples (default 200)")
    eexp.add_argument("--lr", type=POSITIVE_FLOAT, default=None, help="Adam learning rate of the event runs (2e-3)")
    eexp.add_argument("--shd-path", type=_existing_file, default=None, help="an SHD-format training file")
    eexp.add_argument("--shd-test-path", type=_existing_file, default=None, help="its test file")
    eexp.add_argument("--out", default="runs/events", help="output folder: events.json (rewritten after every run)")
    eexp.set_defaults(func=_events_experiment)
    trunc = exp_sub.add_parser(
        "truncation", formatter_class=defaults,
        help="truncated and local training (Guo et al.): peak memory of a step and accuracy against the chunk "
             "length K and blocks of b layers, on the SHD-like task")
    trunc.add_argument("--quick", action="store_true", help="160 / 80 samples and 2 epochs (a first look)")
    trunc.add_argument("--epochs", type=POSITIVE_INT, default=None, help="epochs per configuration (default 12)")
    trunc.add_argument("--n-train", type=POSITIVE_INT, default=None, help="training samples (default 800)")
    trunc.add_argument("--n-test", type=POSITIVE_INT, default=None, help="test samples (default 200)")
    trunc.add_argument("--neuron", choices=("if", "lif"), default="if", help="the neurons of every layer")
    trunc.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the data, weights and batches")
    trunc.add_argument("--out", default="runs/truncation",
                       help="output folder: memory.json (rewritten as results arrive) and memory.png")
    trunc.set_defaults(func=_truncation)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(message: str) -> int:
    print(f"ift-snn: error: {_one_line(message)}", file=sys.stderr)
    return 2


def _os_error(exc: OSError) -> str:
    names = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{names}: {reason}" if names else reason


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 a check failed, 2 an error, 3 training
    stopped on a non-finite gradient, 130 interrupted). Set IFT_SNN_DEBUG=1 for tracebacks."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    debug = os.environ.get("IFT_SNN_DEBUG", "").strip() not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        kept = getattr(args, "kept", None)
        try:
            what = kept() if callable(kept) else None
        except Exception:  # noqa: BLE001 - only describing what is on disk
            what = None
        print(f"ift-snn: interrupted; {what or 'nothing was written'}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place every failure becomes one line
        if debug:
            raise
        if isinstance(exc, (ValueError, TypeError, ImportError)):
            return _error(str(exc) or type(exc).__name__)
        if isinstance(exc, RecursionError):
            return _error(f"the input is nested too deeply (RecursionError: {exc})")
        if isinstance(exc, MemoryError):
            return _error(f"out of memory (MemoryError{': ' + str(exc) if str(exc) else ''}): "
                          "reduce the sizes (--T, --batch, --neurons, --hidden ...)")
        if isinstance(exc, OSError):
            return _error(_os_error(exc))
        if isinstance(exc, FloatingPointError):  # NonFiniteError, GradientOverflowError: the message says why
            return _error(str(exc) or type(exc).__name__)
        return _error(f"internal error: {type(exc).__name__}: {exc} (set IFT_SNN_DEBUG=1 for the traceback)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
