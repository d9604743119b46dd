"""``ift-snn experiment events``: continuous-time networks on spike TIMES against the discrete EXODUS network on bins.

The task: the SHD-like order task of :mod:`ift_snn.training.shd_like` (its class lives in the order of its
phonemes; files written by ``make_task``), or an SHD-format pair (``shd_path`` / ``shd_test_path``). The
continuous networks read the files as spike times (:func:`ift_snn.events.srm_network.shd_spike_times`, units of
``time_unit`` seconds, no bins); the discrete ones bin the same spikes (:func:`ift_snn.training.data.load_shd`,
``T`` steps of ``t_window / T``), 64 channels each.

Runs, per seed:

* events (:class:`~ift_snn.events.srm_network.SRMNetwork` [C, H, K], the ``lif`` neuron of
  :mod:`ift_snn.symbolic.continuous`, a non-spiking max-potential readout, cross-entropy of the max potentials,
  Adam): feed-forward, with learned synaptic delays, recurrent (learned recurrent weights and delays), both;
* discrete (``ift_snn.training``: [C, H, K] LIF(alpha), exodus, ``max_ce``): feed-forward and recurrent.

Per run: test accuracy per epoch, seconds per epoch, the peak NumPy memory of one training step (tracemalloc;
the compiled kernels' scratch is not traced). ``events.json`` is rewritten after every run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .paper import _stats

__all__ = ["EventsConfig", "events_experiment", "QUICK", "EVENT_RUNS"]

#: (name, delays, recurrent) of the continuous-time runs
EVENT_RUNS = (("events", False, False), ("events+delays", True, False), ("events recurrent", False, True),
              ("events recurrent+delays", True, True))
#: ``--quick``: one seed, little data, 2 epochs (a first look, and the test suite's run)
QUICK = dict(seeds=(0,), n_train=60, n_test=40, epochs=2, hidden=16)


@dataclass
class EventsConfig:
    """The setting of :func:`events_experiment` (module docstring); checked before any work."""

    seeds: tuple = (0, 1)
    epochs: int = 5
    n_train: int = 400
    n_test: int = 200
    hidden: int = 64
    batch_size: int = 32
    lr: float = 2e-3
    tau: float = 4.0
    tau_s: float = 1.0
    time_unit: float = 0.01
    t_window: float = 1.0
    max_delay: float = 20.0
    max_spikes: int = 64
    T: int = 100
    alpha: float = 0.9
    discrete_lr: float = 2e-3
    shd_path: str | None = None
    shd_test_path: str | None = None

    def validate(self) -> None:
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds={list(self.seeds)!r}: expected one or more ints >= 0")
        for name in ("epochs", "n_train", "n_test", "hidden", "batch_size", "max_spikes", "T"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r}: expected an int >= 1")
        for name in ("lr", "tau", "tau_s", "time_unit", "t_window", "discrete_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"{name}={v!r}: expected a finite number > 0")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha={self.alpha!r}: expected a number in (0, 1)")
        if (self.shd_path is None) != (self.shd_test_path is None):
            raise ValueError("give both shd_path and shd_test_path, or neither (the SHD-like task is generated)")
        for name in ("shd_path", "shd_test_path"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} {str(path)!r} is not a file (an SHD-format HDF5 file)")


def events_experiment(cfg: EventsConfig | None = None, out: str | Path = "runs/events", *,
                      progress: bool = True) -> dict:
    """Run the comparison (module docstring); returns what it writes to ``out/events.json``."""
    from ..events.srm_network import SRMTrainConfig, shd_spike_times, train_srm
    from ..training import shd_like
    from ..training.train import _write_json, prepare_out_dir

    cfg = cfg or EventsConfig()
    cfg.validate()
    out = prepare_out_dir(out, "out")
    start = time.perf_counter()
    if cfg.shd_path is None:
        train_path, test_path = shd_like.make_task(out / "data", n_train=cfg.n_train, n_test=cfg.n_test, seed=0)
        limit = None
    else:
        train_path, test_path, limit = cfg.shd_path, cfg.shd_test_path, cfg.n_train
    xtr, ytr, K = shd_spike_times(train_path, 64, cfg.t_window, cfg.time_unit, max_samples=limit)
    xte, yte, _ = shd_spike_times(test_path, 64, cfg.t_window, cfg.time_unit,
                                  max_samples=None if limit is None else cfg.n_test)
    t_end = cfg.t_window / cfg.time_unit
    result = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
              "data": {"files": [str(train_path), str(test_path)], "n_train": len(ytr), "n_test": len(yte),
                       "n_classes": K, "spikes_per_sample": float(xtr.counts.sum(axis=1).mean())},
              "runs": [], "complete": False}

    def write():
        result["seconds"] = time.perf_counter() - start
        result["summary"] = summarise(result)
        _write_json(out / "events.json", result)

    for seed in cfg.seeds:
        for name, delays, recurrent in EVENT_RUNS:
            tc = SRMTrainConfig(params={"tau": cfg.tau, "tau_s": cfg.tau_s}, hidden=(cfg.hidden,), delays=delays,
                                recurrent=recurrent, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                seed=seed, max_spikes=cfg.max_spikes, max_delay=cfg.max_delay, readout="max",
                                silent_push=0.01, count_floor=0.0)
            if progress:
                print(f"{name}, seed {seed}", flush=True)
            m = train_srm(tc, (xtr, ytr), (xte, yte), K, t_absent=t_end, progress=progress)
            # each epoch row holds "dropped_spikes": spikes past max_spikes, and capped neurons of a recurrent layer
            result["runs"].append({"name": name, "seed": seed, "epochs": m["epochs"], "stopped": m["stopped"],
                                   "peak_step_mb": m["peak_step_mb"]})
            write()
        for recurrent in (False, True):
            result["runs"].append(_discrete(cfg, seed, recurrent, train_path, test_path, limit, progress))
            write()
    result["complete"] = True
    write()
    return result


def _discrete(cfg: EventsConfig, seed: int, recurrent: bool, train_path, test_path, limit, progress) -> dict:
    """The discrete EXODUS network on the same spikes, binned: test accuracy, seconds per epoch, peak step memory."""
    from ..neurons.models import lif
    from ..training.data import load_shd
    from ..training.local import _peak
    from ..training.train import TrainConfig, build_network, fit_run

    train_ds = load_shd(train_path, T=cfg.T, n_channels=64, t_max=cfg.t_window, max_samples=limit)
    test_ds = load_shd(test_path, T=cfg.T, n_channels=64, t_max=cfg.t_window,
                       max_samples=None if limit is None else cfg.n_test)
    tc = TrainConfig(task="shd", shd_path=str(train_path), shd_test_path=str(test_path), method="exodus",
                     epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.discrete_lr, hidden=(cfg.hidden,),
                     loss="max_ce", seed=seed, T=cfg.T, n_channels=64, model=lif(cfg.alpha), init_gain=2.0,
                     recurrent=recurrent)
    n_classes = max(train_ds.n_classes, test_ds.n_classes)
    net = build_network(tc, 64, n_classes)
    x, y = next(iter(train_ds.time_major_batches(cfg.batch_size, shuffle=False)))
    _peak(lambda: net.step(x, y, loss=tc.loss, method=tc.method))  # compiles the kernels (not the step's memory)
    peak = _peak(lambda: net.step(x, y, loss=tc.loss, method=tc.method))
    net = build_network(tc, 64, n_classes)
    name = "exodus (discrete) recurrent" if recurrent else "exodus (discrete)"
    if progress:
        print(f"{name}, seed {seed}", flush=True)
    run = {"name": name, "seed": seed, "epochs": [], "stopped": None, "silent": None, "peak_step_mb": peak / 2**20}
    fit_run(run, net, train_ds, test_ds, tc)
    return run


def summarise(result: dict) -> dict:
    """Per run name: final and best test accuracy (mean, min, max over seeds), seconds per epoch, peak step MB."""
    groups: dict = {}
    for run in result["runs"]:
        groups.setdefault(run["name"], []).append(run)
    summary = {}
    for name, runs in groups.items():
        done = [r for r in runs if r["epochs"]]
        summary[name] = {
            "runs": len(runs),
            "final_test_acc": _stats([r["epochs"][-1]["test_acc"] for r in done]),
            "best_test_acc": _stats([max(e["test_acc"] for e in r["epochs"]) for r in done]),
            "epoch_seconds": _stats([float(np.mean([e["seconds"] for e in r["epochs"]])) for r in done]),
            "peak_step_mb": _stats([r["peak_step_mb"] for r in runs]),
            "stopped": sum(r["stopped"] is not None for r in runs),
        }
    return summary
