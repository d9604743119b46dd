"""`ift-snn train` and `ift-snn experiment scale-sweep` on tiny settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ift_snn.cli import main
from ift_snn.training.network import Network
from ift_snn.training.train import SilentLayerWarning, TrainConfig, scale_sweep, train

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")
TINY = ["--randman-samples", "16", "--T", "40", "--hidden", "16", "16", "--batch-size", "16"]


def test_train_cli_writes_metrics_and_weights(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "randman", "--method", "exodus", "--epochs", "2", "--seed", "0",
                 "--out", str(out), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert {"loss", "train_acc", "test_acc", "grad_norms", "max_step_factor"} <= set(metrics["epochs"][0])
    for epoch in metrics["epochs"]:  # the steps' phases, each measured, within the epoch's time
        phases = [epoch["forward_s"], epoch["backward_s"], epoch["weight_grad_s"]]
        assert min(phases) > 0 and sum(phases) <= epoch["seconds"]
    assert metrics["stopped"] is None and metrics["silent"] is None
    rates = metrics["epochs"][-1]["spike_rates"]
    assert len(rates) == 3 and all(0 < r < 1 for r in rates)
    net = Network.load(out / "weights.npz")
    assert net.sizes == [40, 16, 16, 4]
    assert "test accuracy" in capsys.readouterr().out


def test_exodus_and_bptt_train_identically():
    runs = {m: train(TrainConfig(task="randman", method=m, epochs=2, randman_samples=16, T=40, hidden=(16,),
                                 batch_size=16), progress=False) for m in ("exodus", "bptt", "slayer")}
    ex, bp, sl = ([e["loss"] for e in runs[m]["epochs"]] for m in ("exodus", "bptt", "slayer"))
    np.testing.assert_allclose(ex, bp, rtol=1e-4)  # float32 network: the same numbers up to rounding
    assert ex != sl


def test_training_stops_on_a_blown_up_gradient_and_names_the_layer(tmp_path, capsys):
    code = main(["train", "--epochs", "2", "--surrogate-scale", "30", "--out", str(tmp_path), *TINY])
    assert code == 3
    err = capsys.readouterr().err
    assert "training stopped" in err and "layer" in err and "step factor" in err
    assert json.loads((tmp_path / "metrics.json").read_text())["stopped"]


def test_a_silent_layer_is_reported_once_with_its_spike_rate(tmp_path, capsys):
    """Weights too small to reach threshold: nothing fires, the loss sits at ln(classes), and the run says so."""
    cfg = TrainConfig(task="randman", epochs=2, randman_samples=16, T=40, hidden=(16,), batch_size=16,
                      init_gain=1e-3)
    with pytest.warns(SilentLayerWarning, match=r"epoch 1: layer\(s\) \[0, 1\] emitted no spike") as record:
        metrics = train(cfg, tmp_path, progress=False)
    assert len(record) == 1  # once per run, not per epoch
    assert metrics["silent"].startswith("epoch 1")
    assert all(rate == 0 for e in metrics["epochs"] for rate in e["spike_rates"])
    assert metrics["epochs"][-1]["loss"] == pytest.approx(np.log(4), rel=1e-6)
    assert json.loads((tmp_path / "metrics.json").read_text())["silent"] == metrics["silent"]
    code = main(["train", "--epochs", "1", "--init-gain", "0.001", "--out", str(tmp_path / "cli"), *TINY])
    assert code == 0 and "emitted no spike" in capsys.readouterr().err


def test_digits_task_trains(tmp_path):
    metrics = train(TrainConfig(task="digits", epochs=1, hidden=(32,), T=20, batch_size=128), tmp_path,
                    progress=False)
    assert metrics["epochs"][0]["test_acc"] > 0.15  # 10 classes: above chance after one epoch


def _shd_file(path, n: int = 24, seed: int = 0):
    """A small file in the SHD layout: n samples of random spikes on the 700 units, 3 classes."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float32))
        units = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
        for i in range(n):
            k = rng.integers(20, 60)
            times[i] = np.sort(rng.random(k)).astype(np.float32)
            units[i] = rng.integers(0, 700, k).astype(np.uint16)
        f["labels"] = rng.integers(0, 3, n)
    return path


def test_shd_task_reads_an_hdf5_file(tmp_path):
    path = _shd_file(tmp_path / "shd.h5")
    metrics = train(TrainConfig(task="shd", shd_path=str(path), epochs=1, hidden=(8,), T=30, batch_size=8),
                    progress=False)
    assert len(metrics["epochs"]) == 1


def test_train_cli_exposes_the_network_and_the_shd_files(tmp_path, monkeypatch):
    """--init-gain, --dtype, and for SHD its separate test file, --n-channels and --max-samples reach the run."""
    from ift_snn.training import train as train_mod

    train_file, test_file = _shd_file(tmp_path / "train.h5", 24), _shd_file(tmp_path / "test.h5", 12, seed=1)
    seen = {}
    real_accuracy = train_mod._accuracy

    def accuracy(net, ds, cfg):
        seen["test_samples"] = len(ds.y)
        return real_accuracy(net, ds, cfg)

    monkeypatch.setattr(train_mod, "_accuracy", accuracy)
    out = tmp_path / "run"
    assert main(["train", "--task", "shd", "--shd-path", str(train_file), "--shd-test-path", str(test_file),
                 "--n-channels", "70", "--max-samples", "10", "--T", "20", "--hidden", "8", "--epochs", "1",
                 "--batch-size", "8", "--init-gain", "0.5", "--dtype", "f64", "--out", str(out)]) == 0
    net = Network.load(out / "weights.npz")
    assert net.sizes[0] == 70 and net.dtype == np.float64 and net.init_gain == 0.5
    assert seen["test_samples"] == 10  # the test file's first 10 samples, not a split of the training file
    with pytest.raises(ValueError, match="n_channels, max_samples configure the SHD files|configure the SHD files"):
        TrainConfig(task="randman", max_samples=5).validate()


def test_bad_train_arguments():
    with pytest.raises(ValueError, match="unknown task 'mnist'"):
        train(TrainConfig(task="mnist"), progress=False)
    with pytest.raises(ValueError, match="--shd-path"):
        train(TrainConfig(task="shd"), progress=False)
    with pytest.raises(ValueError, match="epochs=0"):
        train(TrainConfig(epochs=0), progress=False)


def test_scale_sweep_writes_table_and_figures(tmp_path):
    base = TrainConfig(task="randman", randman_samples=12, T=30, hidden=(12,), batch_size=16)
    result = scale_sweep((0.3, 1.0), ("exodus", "slayer"), (0,), epochs=1, base=base, out=tmp_path,
                         progress=False)
    assert len(result["runs"]) == 4
    assert set(result["summary"]) == {"exodus", "slayer"}
    data = json.loads((tmp_path / "scale_sweep.json").read_text())
    assert data["runs"][0]["grad_norms"]
    for name in ("grad_norms.png", "accuracy.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_with_diverging_scales_reports_counts_not_streams(tmp_path, capsys):
    """A diverging scale neither floods stderr with overflow warnings nor shows an infinite gradient norm for a
    run that did not diverge (the norm and Adam's moments are taken in float64)."""
    assert main(["experiment", "scale-sweep", "--seeds", "1", "--epochs", "2", "--scales", "1", "10", "100",
                 "--methods", "exodus", "--out", str(tmp_path / "sweep"), *TINY]) == 0
    captured = capsys.readouterr()
    assert "RuntimeWarning:" not in captured.err and "overflow encountered" not in captured.err
    rows = [line.split() for line in captured.out.splitlines() if line.startswith("exodus")]
    assert len(rows) == 3
    for method, scale, norm, acc, diverged in rows:
        assert norm != "inf" or int(diverged) > 0, (scale, norm, diverged)


def test_counted_warnings_summarise_by_kind():
    import warnings

    from ift_snn.cli import counted_warnings

    with counted_warnings() as warned:
        for k in range(5):
            warnings.warn(f"overflow {k}", RuntimeWarning)
        warnings.warn("a step factor above 1", UserWarning)
    lines = warned.summary("counted")
    assert lines == ["5 RuntimeWarnings (first: overflow 0)", "1 UserWarning (first: a step factor above 1)", "counted"]
