"""Training the event network on digits: same samples and split as the discrete task, metrics per epoch."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="digits needs scikit-learn")

from ift_snn.training import data  # noqa: E402
from ift_snn.events import EventNetwork, SpikeTrain  # noqa: E402
from ift_snn.events.train import calibrate, digits_spike_times, train_digits  # noqa: E402


def test_digits_as_spike_times_are_the_discrete_task_split():
    (xtr, ytr), (_, yte) = digits_spike_times(T=50, seed=0, t_window=4.0)
    train, test = data.digits(T=50, seed=0).split(0.25, seed=0)
    assert np.array_equal(ytr, train.y) and np.array_equal(yte, test.y)
    # each pixel's one spike sits at step * 4/49
    b, n, c = np.nonzero(train.x)
    assert np.array_equal(xtr.counts, (train.x.sum(axis=1) > 0).astype(int))
    np.testing.assert_allclose(xtr.times[b, c, 0], n * 4.0 / 49, rtol=1e-15)


def test_calibration_reaches_the_target_rates():
    rng = np.random.default_rng(0)
    x = SpikeTrain(np.sort(rng.uniform(0, 4, size=(16, 20, 2)), axis=2), np.full((16, 20), 2))
    net = EventNetwork([20, 12, 5], seed=0)
    net.weights = [np.abs(w) for w in net.weights]
    calibrate(net, x, (3.0, 1.5), iterations=20)
    rates = [tr.out.counts.mean() for tr in net.forward(x)]
    assert abs(rates[0] - 3.0) < 0.6 and abs(rates[1] - 1.5) < 0.6


def test_train_digits_writes_metrics_per_epoch(tmp_path):
    metrics = train_digits(epochs=2, seed=0, out=tmp_path, hidden=(16,), limit=96, backend="numpy",
                           progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["epochs"] == metrics["epochs"] and len(saved["epochs"]) == 2
    row = saved["epochs"][-1]
    for key in ("loss", "train_acc", "test_acc", "seconds", "spikes_per_neuron", "dropped_spikes"):
        assert key in row
    assert np.isfinite(row["loss"]) and 0 <= row["test_acc"] <= 1 and row["seconds"] > 0
    assert saved["config"]["method"] == "events" and saved["config"]["train_samples"] == 96
    assert saved["stopped"] is None and (tmp_path / "weights.npz").is_file()
    # it learns something even on 96 samples in 2 epochs: the loss falls
    assert metrics["epochs"][1]["loss"] < metrics["epochs"][0]["loss"]


def test_bad_training_arguments():
    with pytest.raises(ValueError, match="epochs=0"):
        train_digits(epochs=0)
    with pytest.raises(ValueError, match="loss='mse'"):
        train_digits(epochs=1, loss="mse")


def test_cli_train_events(tmp_path, monkeypatch, capsys):
    from ift_snn import cli
    from ift_snn.events import train as events_train

    real = events_train.train_digits
    monkeypatch.setattr(events_train, "train_digits",
                        lambda **kw: real(**kw, limit=64, backend="numpy", progress=False))
    out = tmp_path / "run"
    assert cli.main(["train", "--task", "digits", "--method", "events", "--epochs", "1", "--hidden", "8",
                     "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert len(json.loads((out / "metrics.json").read_text())["epochs"]) == 1
    assert cli.main(["train", "--task", "randman", "--method", "events", "--epochs", "1"]) == 2
    assert "--method events trains on spike times: --task digits or shd; got --task 'randman'" in capsys.readouterr().err
