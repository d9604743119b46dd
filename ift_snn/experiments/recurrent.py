"""``ift-snn experiment recurrent``: a feed-forward against a recurrent hidden layer at the same parameter count.

The task (:func:`recurrent_experiment`): the SHD-like order task of :mod:`ift_snn.training.shd_like` (its class
lives in the order of its phonemes), or any SHD-format file pair (``shd_path`` / ``shd_test_path``, e.g. the
real SHD), binned to ``n_channels`` inputs and T steps, loss ``max_ce``, Adam, batch 32, every layer
``lif(alpha)`` with the exponential surrogate at its stable default scale. Two networks of one hidden layer:

* recurrent: [C, H, K], the hidden layer recurrent (a = W x + V s[n-1], docs/MATH.md section 9);
* feed-forward: [C, H_ff, K] with H_ff the width whose weights number as many as the recurrent network's
  (C H + H^2 + H K = (C + K) H_ff, rounded).

Runs: every (seed, network, method) for methods exodus and slayer, the same initial weights and batch order
for both methods of a network and seed; and the equality check: on the first seed, the recurrent network's
weight gradients (W_0, W_1, V_0) on the first batch at initialisation by ``bptt`` (the hand-written float64
oracle) against exodus's, the network in float64 (the largest relative difference is reported).
``recurrent.json`` is rewritten after every epoch (``complete: false`` until the end), ``accuracy.png`` after
the last run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..neurons.models import lif
from ..training.network import NonFiniteLossError
from ..training.train import TrainConfig, _write_json, build_network, fit_run, prepare_out_dir
from .paper import _datasets, _stats
from ..training.train import blas_threads as limited_blas

__all__ = ["RecurrentConfig", "recurrent_experiment", "QUICK", "feedforward_width"]

#: ``--quick``: one seed, small data, short sequences, 3 epochs (a first look, and the test suite's run).
QUICK = dict(seeds=(0,), n_train=160, n_test=80, epochs=3, T=100, hidden=32)
NETWORKS = ("feedforward", "recurrent")


def feedforward_width(C: int, H: int, K: int) -> int:
    """H_ff with (C + K) H_ff closest to the recurrent network's C H + H^2 + H K weights."""
    return max(1, round((C * H + H * H + H * K) / (C + K)))


@dataclass
class RecurrentConfig:
    """The setting of :func:`recurrent_experiment` (module docstring); checked before any work."""

    seeds: tuple = (0, 1, 2)
    methods: tuple = ("exodus", "slayer")
    epochs: int = 12
    n_train: int = 1000
    n_test: int = 400
    T: int = 250
    n_channels: int = 64
    #: The recurrent network's hidden width H (the feed-forward one's follows from the parameter count).
    hidden: int = 128
    batch_size: int = 32
    lr: float = 5e-4
    alpha: float = 0.95
    init_gain: float = 2.0
    loss: str = "max_ce"
    bptt: bool = True
    shd_path: str | None = None
    shd_test_path: str | None = None

    @property
    def task(self) -> str:
        """The data: the SHD-like task, or the SHD files given (what :func:`.paper._datasets` reads)."""
        return "shd_like"

    def validate(self) -> None:
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds={list(self.seeds)!r}: expected one or more ints >= 0")
        if not self.methods or any(m not in ("exodus", "slayer") for m in self.methods):
            raise ValueError(f"methods={list(self.methods)!r}: expected one or more of exodus, slayer")
        for name in ("epochs", "n_train", "n_test", "T", "n_channels", "hidden", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected an int >= 1")
        if (self.shd_path is None) != (self.shd_test_path is None):
            raise ValueError("give both shd_path and shd_test_path (an SHD-format train and test file), or neither "
                             "(the SHD-like task is generated)")
        for name in ("shd_path", "shd_test_path"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} {str(path)!r} is not a file (an SHD-format HDF5 file)")
        probe = self.train_config("recurrent", self.methods[0], self.seeds[0], 10)
        TrainConfig(**{**probe.__dict__, "task": "randman", "shd_path": None, "shd_test_path": None,
                       "n_channels": 700}).validate()

    def train_config(self, network: str, method: str, seed: int, n_in: int, n_classes: int = 10,
                     shd=(None, None)) -> TrainConfig:
        width = self.hidden if network == "recurrent" else feedforward_width(n_in, self.hidden, n_classes)
        return TrainConfig(task="shd", shd_path=shd[0], shd_test_path=shd[1], method=method, epochs=self.epochs,
                           batch_size=self.batch_size, lr=self.lr, hidden=(width,), loss=self.loss, seed=seed,
                           T=self.T, n_channels=self.n_channels, model=lif(self.alpha), init_gain=self.init_gain,
                           recurrent=network == "recurrent")


def _first_batch(net, ds, tc: TrainConfig):
    x, y = next(iter(ds.time_major_batches(tc.batch_size, shuffle=False)))
    try:
        return [np.asarray(g, dtype=np.float64) for g in net.step(x, y, loss=tc.loss, method=tc.method)[1]]
    except NonFiniteLossError:
        return None


def recurrent_experiment(cfg: RecurrentConfig | None = None, out: str | Path = "runs/recurrent", *,
                         progress: bool = True, blas_threads: int | None = 1) -> dict:
    """Run the comparison (module docstring); returns the result written to ``out/recurrent.json``."""
    with limited_blas(blas_threads):
        return _run(cfg or RecurrentConfig(), out, progress)


def _run(cfg: RecurrentConfig, out, progress: bool) -> dict:
    cfg.validate()
    out = prepare_out_dir(out, "out")
    start = time.perf_counter()
    train_ds, test_ds, paths = _datasets(cfg, out)
    n_in, n_classes = train_ds.x.shape[2], train_ds.n_classes
    runs: list[dict] = []
    shapes = {net: [n_in, cfg.train_config(net, "exodus", 0, n_in, n_classes).hidden[0], n_classes]
              for net in NETWORKS}
    params = {"feedforward": shapes["feedforward"][1] * (n_in + n_classes),
              "recurrent": cfg.hidden * (n_in + cfg.hidden + n_classes)}
    result = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
              "data": {"files": paths, "n_train": len(train_ds), "n_test": len(test_ds), "n_classes": n_classes,
                       "generated": cfg.shd_path is None},
              "networks": {k: {"sizes": shapes[k], "weights": params[k]} for k in NETWORKS},
              "runs": runs, "complete": False}

    def write() -> None:
        result["seconds"] = time.perf_counter() - start
        result["summary"] = summarise(result)
        _write_json(out / "recurrent.json", result)

    if cfg.bptt:  # the oracle's gradient at initialisation against exodus's, on the recurrent network
        tc = dataclasses.replace(cfg.train_config("recurrent", "exodus", cfg.seeds[0], n_in, n_classes, paths),
                                 dtype="f64")  # (in float64: equal to rounding, not to float32's)
        exact = _first_batch(build_network(tc, n_in, n_classes), train_ds, tc)
        oracle = _first_batch(build_network(tc, n_in, n_classes), train_ds, dataclasses.replace(tc, method="bptt"))
        if exact is not None and oracle is not None:
            result["bptt_vs_exodus"] = [float(np.max(np.abs(g - r)) / max(float(np.max(np.abs(r))), 1e-300))
                                        for g, r in zip(exact, oracle)]
            result["bptt_note"] = ("largest |dL/dp_exodus - dL/dp_bptt| / max |dL/dp_bptt| on the first batch at "
                                   "initialisation, per array (W_0, W_1, V_0), the recurrent network in float64, "
                                   "first seed")
    write()
    plan = [(seed, net, method) for seed in cfg.seeds for net in NETWORKS for method in cfg.methods]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan) * cfg.epochs, desc="recurrent", unit="epoch")
    try:
        for seed, network, method in plan:
            tc = cfg.train_config(network, method, seed, n_in, n_classes, paths)
            net = build_network(tc, n_in, n_classes)
            run = {"seed": seed, "network": network, "method": method, "epochs": [], "stopped": None, "silent": None}
            runs.append(run)

            fit_run(run, net, train_ds, test_ds, tc, bar=bar, label=f"{network} {method} seed={seed}", write=write)
    finally:
        if bar is not None:
            bar.close()
    result["complete"] = True
    write()
    plot(result, out)
    return result


def summarise(result: dict) -> dict:
    """Per (network, method): final and best test accuracy (mean, min, max over seeds), seconds per epoch, runs
    stopped."""
    groups: dict = {}
    for run in result["runs"]:
        groups.setdefault(f"{run['network']}/{run['method']}", []).append(run)
    summary = {}
    for key, runs in groups.items():
        done = [r for r in runs if r["epochs"]]
        finals = [r["epochs"][-1]["test_acc"] for r in done]
        best = [max(e["test_acc"] for e in r["epochs"]) for r in done]
        summary[key] = {"runs": len(runs), "final_test_acc": _stats(finals), "best_test_acc": _stats(best),
                        "epoch_seconds": float(np.mean([np.mean([e["seconds"] for e in r["epochs"]]) for r in done]))
                        if done else None,
                        "stopped": sum(r["stopped"] is not None for r in runs)}
    return summary


def plot(result: dict, out: Path) -> None:
    """accuracy.png: test accuracy per epoch, one line per (network, method), mean and range over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    colors = {"feedforward": "tab:gray", "recurrent": "tab:blue"}
    styles = {"exodus": "-", "slayer": "--"}
    for key in result["summary"]:
        network, method = key.split("/")
        curves = [[e["test_acc"] for e in r["epochs"]] for r in result["runs"]
                  if r["network"] == network and r["method"] == method and r["epochs"]]
        if not curves:
            continue
        n = max(map(len, curves))
        acc = np.array([c + [math.nan] * (n - len(c)) for c in curves])
        x = np.arange(1, n + 1)
        ax.plot(x, np.nanmean(acc, axis=0), ls=styles.get(method, ":"), color=colors[network],
                label=f"{network} {method} ({result['networks'][network]['weights']} weights)")
        if len(curves) > 1:
            ax.fill_between(x, np.nanmin(acc, axis=0), np.nanmax(acc, axis=0), color=colors[network], alpha=0.12)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (mean, range over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"one hidden layer, LIF, T = {result['config']['T']}")
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)
