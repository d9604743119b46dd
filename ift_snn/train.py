"""Training loops, ``ift-snn train`` and ``ift-snn experiment scale-sweep``.

The scale sweep is the analogue of Figure 2 of the EXODUS paper: for several
surrogate-gradient scales and the methods exodus / slayer / bptt, over seeds,
it records the per-layer weight-gradient norms at initialisation and the
accuracy after a fixed number of epochs, and plots both.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .models import lif
from .network import Adam, Network, NonFiniteLossError
from .surrogates import exponential

__all__ = ["TrainConfig", "make_task", "build_network", "fit", "train", "scale_sweep", "TASKS"]

TASKS = ("randman", "digits", "shd")


@dataclass
class TrainConfig:
    task: str = "randman"
    method: str = "exodus"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    surrogate_scale: float = 1.0
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

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        if self.task == "shd" and not self.shd_path:
            raise ValueError("task 'shd' needs --shd-path FILE (the Spiking Heidelberg Digits HDF5 file)")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range: expected >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} is out of range: expected > 0")


def make_task(cfg: TrainConfig):
    """(train, test) datasets for the configured task."""
    from . import data

    if cfg.task == "randman":
        ds = data.randman(samples_per_class=cfg.randman_samples, T=cfg.T or 100, seed=cfg.seed)
    elif cfg.task == "digits":
        ds = data.digits(T=cfg.T or 50, seed=cfg.seed)
    else:
        ds = data.load_shd(cfg.shd_path, T=cfg.T or 250)
    return ds.split(0.25, seed=cfg.seed)


def build_network(cfg: TrainConfig, n_in: int, n_classes: int) -> Network:
    model = lif(cfg.alpha, 1.0, surrogate=exponential(cfg.surrogate_scale, cfg.surrogate_width))
    return Network([n_in, *cfg.hidden, n_classes], model, seed=cfg.seed, blocks=cfg.blocks, n_classes=n_classes)


def _accuracy(net: Network, ds, cfg: TrainConfig) -> float:
    correct = 0
    for x, y in ds.time_major_batches(256, shuffle=False):
        correct += int((net.predict(x, cfg.loss) == y).sum())
    return correct / len(ds)


@dataclass
class History:
    epochs: list = field(default_factory=list)
    stopped: str | None = None

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "stopped": self.stopped}


def fit(net: Network, train_ds, test_ds, cfg: TrainConfig, *, progress: bool = True) -> History:
    """Adam on the configured loss and method; stops (history.stopped) on a non-finite loss or gradient."""
    opt = Adam(lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    history = History()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.epochs, desc=f"{cfg.task}/{cfg.method}", unit="epoch")
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        losses, correct, seen = [], 0, 0
        norms = np.zeros(len(net.weights))
        factors = np.zeros(len(net.weights))
        try:
            for x, y in train_ds.time_major_batches(cfg.batch_size, rng=rng):
                result, gw, gr = net.step(x, y, loss=cfg.loss, method=cfg.method, truncation=cfg.truncation)
                opt.step(net.parameters(), gw + [gr[k] for k in sorted(gr)])
                losses.append(result.loss)
                correct += result.correct
                seen += len(y)
                norms += np.array(result.grad_norms)
                factors = np.maximum(factors, result.max_step_factors)
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
            "seconds": time.perf_counter() - start,
        }
        history.epochs.append(row)
        if bar is not None:
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['train_acc']:.2f}", test=f"{row['test_acc']:.2f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    return history


def train(cfg: TrainConfig, out: str | Path | None = None, *, progress: bool = True) -> dict:
    """Train one network; write metrics.json and weights.npz into ``out``."""
    cfg.validate()
    train_ds, test_ds = make_task(cfg)
    net = build_network(cfg, train_ds.x.shape[2], train_ds.n_classes)
    history = fit(net, train_ds, test_ds, cfg, progress=progress)
    metrics = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
               "model": repr(net.models[0]), "sizes": net.sizes, **history.to_dict()}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        net.save(out / "weights.npz")
    return metrics


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
    """Gradient norms and accuracy against surrogate scale, per method; JSON + PNG figures in ``out``."""
    base = base or TrainConfig(task="randman", randman_samples=60, T=50, hidden=(64, 64), batch_size=30,
                               lr=3e-3, epochs=epochs)
    rows = []
    start = time.perf_counter()
    total = len(scales) * len(methods) * len(seeds)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="scale-sweep", unit="run")
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
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    result = {"scales": list(scales), "methods": list(methods), "seeds": list(seeds), "epochs": epochs,
              "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in base.__dict__.items()},
              "runs": rows, "seconds": time.perf_counter() - start}
    result["summary"] = _summarise(result)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale_sweep.json").write_text(json.dumps(result, indent=2))
    _plot(result, out)
    return result


def _summarise(result: dict) -> dict:
    """Mean over seeds: first-layer gradient norm and final accuracy per (method, scale)."""
    summary = {}
    for method in result["methods"]:
        per_scale = {}
        for scale in result["scales"]:
            runs = [r for r in result["runs"] if r["method"] == method and r["scale"] == scale]
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
