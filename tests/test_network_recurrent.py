"""Networks with recurrent hidden layers (Network(..., recurrent=True)): the exact weight gradients (W and V)
equal the float64 oracle's; the file round trip keeps V; a training run learns; what is not supported is
refused."""

from __future__ import annotations

import numpy as np
import pytest

import ift_snn
from ift_snn.training.network import Network

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning", "ignore::ift_snn.UnstableModelWarning")


def _net(**kw):
    models = [ift_snn.lif(0.9), ift_snn.get_model("alif"), ift_snn.lif(0.9)]
    return Network([10, 8, 6, 3], models, seed=1, dtype=np.float64, recurrent=True, recurrent_gain=1.5, **kw)


def _data(seed=0, T=30, B=4):
    rng = np.random.default_rng(seed)
    return (rng.random((T, B, 10)) < 0.3).astype(np.float64), rng.integers(0, 3, B)


@pytest.mark.parametrize("loss", ["sum_ce", "max_ce"])
def test_exodus_weight_gradients_equal_the_oracle(loss):
    net = _net()
    x, y = _data()
    assert sorted(net.recurrent) == [0, 1] and all(v.shape == (n, n) for v, n in zip(net.recurrent.values(), (8, 6)))
    res, gw, _ = net.step(x, y, loss=loss, method="exodus")
    _, want, _ = net.step(x, y, loss=loss, method="bptt")
    assert len(gw) == len(net.parameters()) == 5 and all(r > 0 for r in res.spike_rates)
    for got, ref in zip(gw, want):
        assert np.max(np.abs(got - ref)) <= 1e-10 * max(1.0, np.max(np.abs(ref)))
    assert np.abs(gw[3]).max() > 0 and np.abs(gw[4]).max() > 0  # dL/dV of both hidden layers


def test_v_gradient_matches_a_central_difference_with_smooth_spikes():
    from ift_snn.neurons.surrogates import sigmoid

    model = ift_snn.lif(0.9, spike="smooth", surrogate=sigmoid(slope=3.0))
    net = Network([5, 4, 2], [model, model], seed=2, dtype=np.float64, recurrent=True, init_gain=3.0)
    x, y = _data(3, T=20, B=3)
    x = x[:, :, :5]
    y = y % 2
    _, gw, _ = net.step(x, y, loss="sum_ce")
    h = 1e-6
    V = net.recurrent[0]
    for i, j in [(0, 1), (3, 3)]:
        V[i, j] += h
        plus = net.step(x, y, loss="sum_ce")[0].loss
        V[i, j] -= 2 * h
        minus = net.step(x, y, loss="sum_ce")[0].loss
        V[i, j] += h
        assert abs(gw[2][i, j] - (plus - minus) / (2 * h)) <= 1e-6 * max(1.0, np.abs(gw[2]).max())


def test_the_file_round_trip_keeps_the_recurrent_weights(tmp_path):
    net = _net()
    net.save(tmp_path / "net.npz")
    back = Network.load(tmp_path / "net.npz")
    assert sorted(back.recurrent) == [0, 1] and back.recurrent_gain == 1.5
    for k in net.recurrent:
        np.testing.assert_array_equal(back.recurrent[k], net.recurrent[k])
    x, _ = _data()
    np.testing.assert_array_equal(back.forward(x)[1][-1].s, net.forward(x)[1][-1].s)
    plain = Network([4, 3, 2], ift_snn.lif(0.9), seed=0)
    plain.save(tmp_path / "plain.npz")
    assert Network.load(tmp_path / "plain.npz").recurrent == {}


def test_training_with_recurrent_layers_learns():
    from ift_snn.optim import Adam

    rng = np.random.default_rng(0)
    T, B = 25, 16
    y = rng.integers(0, 2, B)
    x = (rng.random((T, B, 10)) < np.where(y[None, :, None] == 0, 0.05, 0.4)).astype(np.float32)
    x[:, :, 5:] = (rng.random((T, B, 5)) < np.where(y[None, :, None] == 0, 0.4, 0.05))
    net = Network([10, 12, 2], ift_snn.lif(0.9), seed=0, recurrent=True)
    opt = Adam(lr=0.02)
    first = None
    for _ in range(30):
        res, gw, gr = net.step(x, y)
        first = first if first is not None else res.loss
        opt.step(net.parameters(), gw + [gr[k] for k in sorted(gr)])
    assert res.loss < 0.5 * first


def test_what_is_not_supported_is_refused():
    with pytest.raises(ValueError, match="local blocks"):
        Network([4, 3, 3, 2], ift_snn.lif(0.9), recurrent=True, blocks=1)
    with pytest.raises(TypeError, match="recurrent="):
        Network([4, 3, 2], ift_snn.lif(0.9), recurrent=[0])
    from ift_snn.training.local import chunked_step

    net = Network([4, 3, 2], ift_snn.lif(0.9), recurrent=True)
    with pytest.raises(ValueError, match="recurrent hidden layers"):
        chunked_step(net, np.zeros((10, 2, 4), np.float32), np.array([0, 1]), K=5)


def test_train_recurrent_from_the_cli(tmp_path, capsys):
    from ift_snn.cli import main

    assert main(["train", "--recurrent", "--epochs", "1", "--hidden", "12", "--randman-samples", "8", "--T", "20",
                 "--out", str(tmp_path / "run")]) == 0
    back = Network.load(tmp_path / "run" / "weights.npz")
    assert sorted(back.recurrent) == [0] and back.recurrent[0].shape == (12, 12)
    assert main(["train", "--recurrent", "--blocks", "1", "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
    assert "local blocks" in capsys.readouterr().err


def test_experiment_recurrent_quick(tmp_path, capsys):
    import json

    from ift_snn.cli import main

    assert main(["experiment", "recurrent", "--quick", "--epochs", "1", "--T", "40", "--n-train", "40",
                 "--n-test", "20", "--out", str(tmp_path / "r")]) == 0
    result = json.loads((tmp_path / "r" / "recurrent.json").read_text())
    nets = result["networks"]
    assert abs(nets["feedforward"]["weights"] - nets["recurrent"]["weights"]) <= nets["recurrent"]["sizes"][0]
    assert result["complete"] and len(result["runs"]) == 4
    assert max(result["bptt_vs_exodus"]) < 1e-10
    assert (tmp_path / "r" / "accuracy.png").is_file()
    assert "recurrent/exodus" in capsys.readouterr().out
