"""Training loops, ``ift-snn train`` and ``ift-snn experiment scale-sweep``.

The scale sweep is the analogue of Figure 2 of the EXODUS paper: for several
surrogate-gradient scales and the methods exodus / slayer / bptt, over seeds,
it records the per-layer weight-gradient norms at initialisation and the
accuracy after a fixed number of epochs, and plots both.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..methods import METHODS, get_method
from ..neurons.models import NeuronModel, lif, model_to_dict
from ..files import write_atomically
from .network import Adam, Network, NonFiniteLossError
from ..neurons.surrogates import exponential

__all__ = ["TrainConfig", "make_task", "build_network", "fit", "train", "scale_sweep", "TASKS", "prepare_out_dir",
           "SilentLayerWarning"]

TASKS = ("randman", "digits", "shd")


@dataclass
class TrainConfig:
    """A training run. The neuron of every layer is ``lif(alpha)`` with the exponential surrogate
    (surrogate_scale, surrogate_width; scale None: the largest stable scale up to 1, as
    ``ift_snn.symbolic.stability.stable_default`` chooses it), or ``model``: a model spec or stored model (see
    :func:`ift_snn.neurons.spec.model_from_spec`; a NeuronModel is kept as its stored form), which the LIF fields
    then must leave at their defaults."""

    task: str = "randman"
    method: str = "exodus"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    surrogate_scale: float | None = None
    surrogate_width: float = 0.5
    alpha: float = 0.9
    hidden: tuple = (64, 64)
    loss: str = "sum_ce"
    truncation: int | None = None
    blocks: int | None = None
    seed: int = 0
    T: int | None = None
    shd_path: str | None = None
    randman_samples: int = 100
    model: dict | None = None
    #: The standard deviation of W_l is init_gain / sqrt(fan-in).
    init_gain: float = 2.0
    #: The network's floating-point type: "f32" or "f64".
    dtype: str = "f32"
    #: SHD: the separate test file (without it, 25% of the training file is held out), the input channels the
    #: 700 units are binned into, and how many samples of each file are read (None: all).
    shd_test_path: str | None = None
    n_channels: int = 700
    max_samples: int | None = None
    #: Recurrent hidden layers (docs/MATH.md section 9): each hidden layer's spikes feed back into it.
    recurrent: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.model, NeuronModel):  # keep the config JSON-able
            self.model = model_to_dict(self.model)

    def validate(self) -> None:
        """Check every field (before any data is made or read); ValueError/TypeError name the field."""
        from .network import LOSSES

        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        get_method(self.method)  # ValueError naming the methods
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if self.task == "shd":
            if not self.shd_path:
                raise ValueError("task 'shd' needs --shd-path FILE (the Spiking Heidelberg Digits HDF5 file)")
            for name in ("shd_path", "shd_test_path"):
                path = getattr(self, name)
                if path is not None and not os.path.isfile(path):
                    what = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
                    raise ValueError(f"{name} {str(path)!r} {what} (a Spiking Heidelberg Digits HDF5 file)")
            _check_int("n_channels", self.n_channels)
            if self.n_channels > 700:
                raise ValueError(f"n_channels={self.n_channels!r} is out of range: SHD has 700 units, expected 1..700")
            if self.max_samples is not None:
                _check_int("max_samples", self.max_samples)
        elif self.shd_test_path is not None or self.max_samples is not None or self.n_channels != 700:
            raise ValueError("shd_test_path, n_channels and max_samples configure the SHD files; "
                             f"task {self.task!r} does not read them")
        if self.dtype not in ("f32", "f64"):
            raise ValueError(f"dtype={self.dtype!r}: expected 'f32' or 'f64'")
        if not isinstance(self.recurrent, bool):
            raise TypeError(f"recurrent={self.recurrent!r}: expected True or False")
        if self.recurrent and self.blocks is not None:
            raise ValueError("recurrent hidden layers with local blocks are not supported: give one of them")
        for name in ("epochs", "batch_size"):
            _check_int(name, getattr(self, name))
        _check_int("randman_samples", self.randman_samples, 2)  # the 25 % test split needs a sample
        for name in ("T", "truncation", "blocks"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name))
        _check_int("seed", self.seed, 0)
        hidden = self.hidden
        if not isinstance(hidden, (tuple, list)):
            raise TypeError(f"hidden={hidden!r}: expected a tuple of positive ints (hidden layer sizes)")
        for k in hidden:
            _check_int("hidden", k)
        for name in ("lr", "surrogate_scale", "surrogate_width", "init_gain"):
            value = getattr(self, name)
            if value is None and name == "surrogate_scale":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name}={value!r}: expected a finite number > 0")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r} is out of range: expected a finite number > 0")
        if self.model is not None:
            changed = [f"{k}={getattr(self, k)!r}" for k in _LIF_FIELDS if getattr(self, k) != _LIF_DEFAULTS[k]]
            if changed:
                raise ValueError(f"{', '.join(changed)} configure the default LIF; with model= set the neuron "
                                 "in the model spec")
        _model(self)  # alpha and the surrogate, or the model, checked by their constructors


def make_task(cfg: TrainConfig):
    """(train, test) datasets for the configured task."""
    from . import data

    if cfg.task == "randman":
        ds = data.randman(samples_per_class=cfg.randman_samples, T=cfg.T or 100, seed=cfg.seed)
    elif cfg.task == "digits":
        ds = data.digits(T=cfg.T or 50, seed=cfg.seed)
    else:
        read = lambda path: data.load_shd(path, T=cfg.T or 250, n_channels=cfg.n_channels,  # noqa: E731
                                          max_samples=cfg.max_samples)
        ds = read(cfg.shd_path)
        if cfg.shd_test_path is not None:  # the data set's own split
            return ds, read(cfg.shd_test_path)
    return ds.split(0.25, seed=cfg.seed)


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={value!r}: expected an int >= {minimum}")
    if value < minimum:
        raise ValueError(f"{name}={value!r} is out of range: expected an int >= {minimum}")


_LIF_FIELDS = ("alpha", "surrogate_scale", "surrogate_width")
_LIF_DEFAULTS = {k: TrainConfig.__dataclass_fields__[k].default for k in _LIF_FIELDS}


def _model(cfg: TrainConfig):
    if cfg.model is not None:
        from ..neurons.spec import model_from_spec

        return model_from_spec(cfg.model, source="TrainConfig.model")
    if cfg.surrogate_scale is None:  # the largest stable scale, at most 1 (ift_snn.symbolic.stability.stable_default)
        return lif(cfg.alpha, 1.0, surrogate=f"exponential(width={cfg.surrogate_width!r})")
    return lif(cfg.alpha, 1.0, surrogate=exponential(cfg.surrogate_scale, cfg.surrogate_width))


def prepare_out_dir(path: str | Path, flag: str = "out") -> Path:
    """Create the output folder ``path`` now and check it is writable, before any work.

    ValueError naming ``flag`` and the path if it is an existing file, cannot
    be created (a file in the way, no permission) or cannot be written to.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {str(folder)!r} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag} {str(folder)!r}: cannot create the folder: {exc.strerror or exc}") from None
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(f"{flag} {str(folder)!r}: cannot write into the folder: {exc.strerror or exc}") from None
    return folder


def _write_json(path: Path, data) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    write_atomically(path, lambda fh: fh.write(json.dumps(data, indent=2).encode()))


def blas_threads(n: int | None):
    """A context in which BLAS (NumPy's matrix products) uses at most ``n`` threads (threadpoolctl, which
    scikit-learn brings; without it, or with ``n`` None, nothing changes). In a training loop the weight
    gradients' products alternate with the kernels' own threads: OpenBLAS's spinning threads then compete with
    them on a small machine (a --quick paper run took 26 s with one BLAS thread, minutes without, on 2 cores
    shared with other work)."""
    import contextlib

    if n is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(n, user_api="blas")


def build_network(cfg: TrainConfig, n_in: int, n_classes: int) -> Network:
    model = _model(cfg)
    return Network([n_in, *cfg.hidden, n_classes], model, seed=cfg.seed, blocks=cfg.blocks, n_classes=n_classes,
                   init_gain=cfg.init_gain, dtype=np.float32 if cfg.dtype == "f32" else np.float64,
                   recurrent=cfg.recurrent)


def _accuracy(net: Network, ds, cfg: TrainConfig) -> float:
    correct = 0
    for x, y in ds.time_major_batches(256, shuffle=False):
        correct += int((net.predict(x, cfg.loss) == y).sum())
    return correct / len(ds)


@dataclass
class History:
    epochs: list = field(default_factory=list)
    stopped: str | None = None
    #: The first epoch in which a layer emitted no spike at all, and which layers (None: every layer fired).
    silent: str | None = None

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "stopped": self.stopped, "silent": self.silent}


class SilentLayerWarning(RuntimeWarning):
    """A layer emitted no spike in a whole training epoch (``fit``): its gradient then flows only through the
    surrogate far below threshold, and training stalls. Warned once per run; ``History.silent`` and the
    metrics' ``silent`` say which layers, ``spike_rates`` per epoch how close the others are."""


def fit_run(run: dict, net: Network, train_ds, test_ds, cfg: TrainConfig, *, bar=None, label: str = "",
            write=None) -> History:
    """:func:`fit` for one run of an experiment: ``run["epochs"]`` filled as epochs finish (then ``write()``),
    ``run["stopped"]`` / ``run["silent"]`` at the end, a shared progress ``bar`` advanced by one per epoch (by the
    epochs left when the run stops early) and labelled ``label``; SilentLayerWarning counted in ``run``, not
    printed (one per run would interleave the bar)."""
    import warnings

    def on_epoch(history):
        run["epochs"] = list(history.epochs)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(run=label, test=f"{history.epochs[-1]['test_acc']:.2f}")
        if write is not None:
            write()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SilentLayerWarning)
        history = fit(net, train_ds, test_ds, cfg, progress=False, on_epoch=on_epoch)
    run["stopped"], run["silent"] = history.stopped, history.silent
    if bar is not None and len(history.epochs) < cfg.epochs:
        bar.update(cfg.epochs - len(history.epochs))
    if write is not None:
        write()
    return history


def fit(net: Network, train_ds, test_ds, cfg: TrainConfig, *, progress: bool = True,
        history: History | None = None, on_epoch=None) -> History:
    """Adam on the configured loss and method; stops (history.stopped) on a non-finite loss or gradient.

    ``history``: a :class:`History` to fill (so that a caller keeps the finished
    epochs if the loop is interrupted); ``on_epoch(history)`` is called after
    every finished epoch, e.g. to write the metrics as they arrive.
    """
    opt = Adam(lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    history = History() if history is None else history
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.epochs, desc=f"{cfg.task}/{cfg.method}", unit="epoch")
    try:
        for epoch in range(cfg.epochs):
            start = time.perf_counter()
            losses, correct, seen = [], 0, 0
            norms = np.zeros(len(net.weights))
            factors = np.zeros(len(net.weights))
            rates = np.zeros(len(net.weights))
            phases = {"forward": 0.0, "backward": 0.0, "weight_grad": 0.0}
            try:
                for x, y in train_ds.time_major_batches(cfg.batch_size, rng=rng):
                    result, gw, gr = net.step(x, y, loss=cfg.loss, method=cfg.method, truncation=cfg.truncation)
                    opt.step(net.parameters(), gw + [gr[k] for k in sorted(gr)])
                    for phase, sec in result.seconds.items():
                        phases[phase] += sec
                    losses.append(result.loss)
                    correct += result.correct
                    seen += len(y)
                    norms += np.array(result.grad_norms)
                    factors = np.maximum(factors, result.max_step_factors)
                    rates += np.array(result.spike_rates)
            except NonFiniteLossError as exc:
                history.stopped = f"epoch {epoch}: {exc}"
                if bar is not None:
                    bar.write(f"stopped: {history.stopped}")
                break
            batches = max(len(losses), 1)
            row = {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "train_acc": correct / max(seen, 1),
                "test_acc": _accuracy(net, test_ds, cfg),
                "grad_norms": (norms / batches).tolist(),
                "max_step_factor": factors.tolist(),
                "spike_rates": (rates / batches).tolist(),
                "seconds": time.perf_counter() - start,
                # the training steps' phases (the rest of "seconds": data, Adam, the test accuracy)
                **{f"{phase}_s": sec for phase, sec in phases.items()},
            }
            history.epochs.append(row)
            silent = [k for k, rate in enumerate(row["spike_rates"]) if rate == 0]
            if silent and not history.silent:
                last = len(net.weights) - 1
                history.silent = (f"epoch {epoch + 1}: layer(s) {silent} emitted no spike in the whole epoch "
                                  f"(layers 0..{last}, {last} the output)")
                warnings.warn(f"{history.silent}: training stalls there (its gradient flows only through sigma(u) "
                              "far below threshold; a silent output gives the loss ln(classes)); a larger "
                              "init_gain or a lower learning rate keeps layers firing", SilentLayerWarning,
                              stacklevel=2)
            if on_epoch is not None:
                on_epoch(history)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['train_acc']:.2f}", test=f"{row['test_acc']:.2f}")
                bar.update(1)
    finally:  # close the bar on an interrupt too: messages then start on a line of their own
        if bar is not None:
            bar.close()
    return history


def train(cfg: TrainConfig, out: str | Path | None = None, *, progress: bool = True) -> dict:
    """Train one network; write metrics.json and weights.npz into ``out``.

    The configuration and ``out`` are checked (and ``out`` created) before
    any work. Both files are rewritten after every epoch, so an interrupted or
    crashed run keeps the finished epochs: metrics.json then holds them with
    ``stopped`` saying why, and weights.npz the weights after the last one.
    """
    cfg.validate()
    if out is not None:
        out = prepare_out_dir(out, "out")
    train_ds, test_ds = make_task(cfg)
    net = build_network(cfg, train_ds.x.shape[2], train_ds.n_classes)
    history = History()

    def metrics() -> dict:
        return {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
                "model": repr(net.models[0]), "sizes": net.sizes, **history.to_dict()}

    def record(_history=None, weights: bool = True) -> None:
        if out is not None:
            _write_json(out / "metrics.json", metrics())
            if weights:
                net.save(out / "weights.npz")

    try:
        fit(net, train_ds, test_ds, cfg, progress=progress, history=history, on_epoch=record)
    except BaseException as exc:
        done = len(history.epochs)
        why = "interrupted (KeyboardInterrupt)" if isinstance(exc, KeyboardInterrupt) else \
            f"crashed ({type(exc).__name__}: {exc})"
        history.stopped = f"{why} during epoch {done + 1}; the {done} finished epochs are kept"
        record(weights=False)  # weights.npz stays as after the last finished epoch
        raise
    record()
    return metrics()


# -------------------------------------------------------------- experiment
def initial_grad_norms(cfg: TrainConfig, train_ds) -> list[float]:
    """Per-layer ||dL/dW|| on the first batch at initialisation (inf where the gradient overflowed)."""
    net = build_network(cfg, train_ds.x.shape[2], train_ds.n_classes)
    x, y = next(iter(train_ds.time_major_batches(cfg.batch_size, shuffle=False)))
    try:
        result, _, _ = net.step(x, y, loss=cfg.loss, method=cfg.method, truncation=cfg.truncation)
    except NonFiniteLossError:
        return [math.inf] * len(net.weights)
    return result.grad_norms


def scale_sweep(
    scales=(0.1, 0.3, 1.0, 2.0, 5.0),
    methods=("exodus", "slayer", "bptt"),
    seeds=(0, 1, 2),
    *,
    epochs: int = 15,
    base: TrainConfig | None = None,
    out: str | Path = "scale_sweep",
    progress: bool = True,
) -> dict:
    """Gradient norms and accuracy against surrogate scale, per method; JSON + PNG figures in ``out``.

    Everything is checked and ``out`` created before the first run;
    scale_sweep.json is rewritten after every run (``"complete": false``
    until the last), so an interrupted sweep keeps the finished runs.
    """
    base = base or TrainConfig(task="randman", randman_samples=60, T=50, hidden=(64, 64), batch_size=30,
                               lr=3e-3, epochs=epochs)
    scales, methods, seeds = tuple(scales), tuple(methods), tuple(seeds)
    if not scales:
        raise ValueError("scales is empty: expected at least one surrogate scale")
    for scale in scales:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scales: {scale!r} is out of range: expected finite numbers > 0")
    if not methods:
        raise ValueError(f"methods={list(methods)!r}: expected one or more of {', '.join(METHODS)}")
    for m in methods:
        get_method(m)
    if not seeds:
        raise ValueError("seeds is empty: expected at least one seed")
    for seed in seeds:
        _check_int("seeds", seed, 0)
    _check_int("epochs", epochs)
    TrainConfig(**{**base.__dict__, "seed": seeds[0], "epochs": epochs}).validate()
    out = prepare_out_dir(out, "out")
    rows = []
    start = time.perf_counter()

    def result(complete: bool) -> dict:
        res = {"scales": list(scales), "methods": list(methods), "seeds": list(seeds), "epochs": epochs,
               "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in base.__dict__.items()},
               "runs": rows, "seconds": time.perf_counter() - start, "complete": complete}
        res["summary"] = _summarise(res)
        return res

    _write_json(out / "scale_sweep.json", result(complete=False))  # no stale file from an earlier sweep
    total = len(scales) * len(methods) * len(seeds)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="scale-sweep", unit="run")
    try:
        for seed in seeds:
            cfg0 = TrainConfig(**{**base.__dict__, "seed": seed, "epochs": epochs})
            train_ds, test_ds = make_task(cfg0)
            for scale in scales:
                for method in methods:
                    cfg = TrainConfig(**{**cfg0.__dict__, "surrogate_scale": scale, "method": method})
                    norms = initial_grad_norms(cfg, train_ds)
                    net = build_network(cfg, train_ds.x.shape[2], train_ds.n_classes)
                    history = fit(net, train_ds, test_ds, cfg, progress=False)
                    accs = [e["test_acc"] for e in history.epochs]
                    rows.append({"seed": seed, "scale": scale, "method": method, "grad_norms": norms,
                                 "test_acc": accs, "final_test_acc": accs[-1] if accs else None,
                                 "stopped": history.stopped})
                    _write_json(out / "scale_sweep.json", result(complete=False))
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    final = result(complete=True)
    _write_json(out / "scale_sweep.json", final)
    _plot(final, out)
    return final


def _summarise(result: dict) -> dict:
    """Mean over seeds: first-layer gradient norm and final accuracy per (method, scale)."""
    summary = {}
    for method in result["methods"]:
        per_scale = {}
        for scale in result["scales"]:
            runs = [r for r in result["runs"] if r["method"] == method and r["scale"] == scale]
            if not runs:  # an unfinished sweep
                per_scale[str(scale)] = {"first_layer_grad_norm": None, "final_test_acc": None, "diverged_runs": 0}
                continue
            first = [r["grad_norms"][0] for r in runs]
            acc = [r["final_test_acc"] for r in runs if r["final_test_acc"] is not None]
            per_scale[str(scale)] = {
                "first_layer_grad_norm": float(np.mean(first)) if all(map(math.isfinite, first)) else math.inf,
                "final_test_acc": float(np.mean(acc)) if acc else None,
                "diverged_runs": sum(r["stopped"] is not None for r in runs),
            }
        summary[method] = per_scale
    return summary


def _plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = result["scales"]
    methods = result["methods"]
    n_layers = len(result["runs"][0]["grad_norms"])
    styles = {"exodus": ("tab:blue", "-", "o"), "slayer": ("tab:red", "--", "s"), "bptt": ("k", ":", "x")}
    fig, axes = plt.subplots(1, n_layers, figsize=(4.2 * n_layers, 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    for layer, ax in enumerate(axes):
        for method in methods:
            color, ls, marker = styles.get(method, ("gray", "-", "."))
            means = []
            for scale in scales:
                vals = [r["grad_norms"][layer] for r in result["runs"] if r["method"] == method and r["scale"] == scale]
                means.append(np.mean(vals) if all(map(math.isfinite, vals)) else np.nan)
            ax.plot(scales, means, ls=ls, marker=marker, color=color, label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("surrogate scale")
        ax.set_title(f"layer {layer + 1}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("||dL/dW|| at initialisation (mean over seeds)")
    axes[-1].legend()
    fig.suptitle("Weight-gradient norm per layer against surrogate scale")
    fig.tight_layout()
    fig.savefig(out / "grad_norms.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(scales), figsize=(3.4 * len(scales), 3.4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, scale in zip(axes, scales):
        for method in methods:
            color, ls, marker = styles.get(method, ("gray", "-", "."))
            curves = [r["test_acc"] for r in result["runs"] if r["method"] == method and r["scale"] == scale]
            length = max(len(c) for c in curves) if curves else 0
            if not length:
                continue
            padded = np.array([c + [np.nan] * (length - len(c)) for c in curves], dtype=float)
            ax.plot(np.arange(1, length + 1), np.nanmean(padded, axis=0), ls=ls, color=color, label=method)
        ax.set_title(f"scale {scale:g}")
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("test accuracy (mean over seeds)")
    axes[-1].legend()
    fig.suptitle("Accuracy per method and surrogate scale (randman)")
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)
