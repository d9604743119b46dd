"""Networks of continuous-time layers: the max-potential readout (against a grid and central differences, a max
on a kink included), chained gradients through delays and a recurrent hidden layer, SHD files read as spike
times, a short training run."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp

from ift_snn.events import SpikeTrain
from ift_snn.events.srm import EventSRM, readout_backward, readout_max
from ift_snn.events.srm_network import SRMNetwork, SRMTrainConfig, shd_spike_times, subset, train_srm
from ift_snn.symbolic.continuous import T


def _x(seed, B=2, C=4, S=3, t_max=6.0):
    rng = np.random.default_rng(seed)
    return SpikeTrain(np.sort(rng.uniform(0, t_max, (B, C, S)), axis=2), np.full((B, C), S))


@pytest.mark.parametrize("name", ["lif", "alpha", "adaptive"])
def test_readout_max_equals_a_fine_grid_and_central_differences(name):
    rng = np.random.default_rng(1)
    x = _x(1)
    w = rng.normal(0.3, 1.0, (4, 3))
    dl = rng.uniform(0, 1, (4, 3))
    m = EventSRM.named(name, backend="python")
    tr = readout_max(m, w, x, 10.0, delays=dl)
    vals = dict(zip(m.derivation.params, m.values))
    eps = sp.lambdify(T, m.derivation.eps.subs(vals), "numpy")
    grid = np.linspace(0, 10, 100001)
    for b in range(2):
        for j in range(3):
            u = np.zeros_like(grid)
            for c in range(4):
                for a in x.times[b, c] + dl[c, j]:
                    u += np.where(grid > a, w[c, j] * eps(np.maximum(grid - a, 0)), 0.0)
            # the grid can only miss a max (by its step times the slope), never exceed it
            assert -1e-12 <= tr.u_max[b, j] - max(u.max(), 0.0) < 1e-3
    G = rng.normal(size=(2, 3))
    gr = readout_backward(tr, G)

    def L(model=m, w_=w, d_=dl, x_=x):
        return float(np.sum(readout_max(model, w_, x_, 10.0, delays=d_).u_max * G))

    h = 1e-6
    for (c, j) in ((0, 0), (1, 2), (3, 1)):
        for arr, an, kw in ((w, gr.w, "w_"), (dl, gr.delays, "d_")):
            p, q = arr.copy(), arr.copy()
            p[c, j] += h
            q[c, j] -= h
            fd = (L(**{kw: p}) - L(**{kw: q})) / (2 * h)
            assert abs(fd - an[c, j]) <= 1e-6 * max(1.0, abs(fd)), (kw, c, j, fd, an[c, j])
    t2 = x.times.copy()
    t2[1, 2, 0] += h
    t3 = x.times.copy()
    t3[1, 2, 0] -= h
    fd = (L(x_=SpikeTrain(t2, x.counts)) - L(x_=SpikeTrain(t3, x.counts))) / (2 * h)
    assert abs(fd - gr.inputs[1, 2, 0]) <= 1e-6 * max(1.0, abs(fd))
    for k in m.names:
        v = m.params[k]
        fd = (L(model=m.with_(**{k: v + h})) - L(model=m.with_(**{k: v - h}))) / (2 * h)
        assert abs(fd - gr.params[k]) <= 1e-6 * max(1.0, abs(fd)), (k, fd, gr.params[k])


def test_readout_max_on_a_kink_moves_with_its_arrival():
    """u rises after an input at 0, and an inhibitory input at 1.2 (before the PSP's peak at 2 ln 2) turns it
    down: the max sits on that arrival, and moves with it at the slope just before it."""
    m = EventSRM.named("lif", backend="python")
    x = SpikeTrain(np.array([[[0.0], [1.2]]]), np.array([[1, 1]]))
    w = np.array([[1.0], [-3.0]])
    tr = readout_max(m, w, x, 10.0)
    assert tr.kink[0, 0] >= 0 and tr.t_max[0, 0] == 1.2
    gr = readout_backward(tr, np.ones((1, 1)))
    slope = 2.0 * (-np.exp(-1.2 / 2) / 2 + np.exp(-1.2))  # u'(1.2-) of c (e^-t/tau - e^-t/tau_s), c = tau = 2
    assert gr.inputs[0, 1, 0] == pytest.approx(slope, rel=1e-12)
    h = 1e-7
    up = readout_max(m, w, SpikeTrain(np.array([[[0.0], [1.2 + h]]]), np.array([[1, 1]])), 10.0).u_max[0, 0]
    down = readout_max(m, w, SpikeTrain(np.array([[[0.0], [1.2 - h]]]), np.array([[1, 1]])), 10.0).u_max[0, 0]
    assert (up - down) / (2 * h) == pytest.approx(slope, rel=1e-6)


@pytest.mark.parametrize("readout,sizes,name", [("ttfs", [4, 5, 3], "lif"), ("max", [4, 5, 3], "lif"),
                                                ("ttfs", [4, 5, 4, 3], "adaptive"), ("max", [4, 5, 4, 3], "alpha")])
def test_network_gradients_equal_central_differences(readout, sizes, name):
    """Two or three layers: learned delays everywhere, the hidden layers recurrent; every parameter's gradient
    (a sample of entries) against central differences of the network's loss."""
    x = _x(2)
    net = SRMNetwork(sizes, EventSRM.named(name, backend="python", max_spikes=64), delays=True,
                     recurrent=True, seed=3, readout=readout, t_end=15.0, recurrent_std=0.3)
    for layer in net.layers[:-1]:
        layer["w"] *= 12.0
    traces = net.forward(x)
    assert traces[0].out.counts.sum() >= 6
    rng = np.random.default_rng(4)
    if readout == "max":
        g = rng.normal(size=(2, 3))

        def L():
            return float(np.sum(net.forward(x)[-1].u_max * g))
    else:
        out = traces[-1].out
        assert out.counts.sum() >= 2
        g = np.where(np.isfinite(out.times), rng.normal(size=out.times.shape), 0.0)

        def L():
            o = net.forward(x)[-1].out
            return float(np.sum(np.where(np.isfinite(o.times), o.times, 0.0) * g))
    counts = [tr.out.counts.copy() for tr in traces if hasattr(tr, "out")]
    grads = net.backward(traces, g)
    names = [(li, k) for li, layer in enumerate(net.layers) for k in layer]
    assert (0, "recurrent") in names and (len(sizes) - 2, "recurrent") not in names  # hidden layers only
    h = 1e-6
    checked = 0
    for (li, k), arr, gr in zip(names, net.parameters(), grads):
        corners = [(0, 0), tuple(s - 1 for s in arr.shape)]
        for idx in corners if len(sizes) == 3 else corners[1:]:  # three layers: one entry each (time)
            old = arr[idx]
            arr[idx] = old + h
            plus = L(), [tr.out.counts.copy() for tr in net.forward(x) if hasattr(tr, "out")]
            arr[idx] = old - h
            minus = L(), [tr.out.counts.copy() for tr in net.forward(x) if hasattr(tr, "out")]
            arr[idx] = old
            if not all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(counts, plus[1], minus[1])):
                continue
            fd = (plus[0] - minus[0]) / (2 * h)
            assert abs(fd - gr[idx]) <= 1e-5 * max(1.0, abs(fd)), (li, k, idx, fd, gr[idx])
            checked += 1
    assert checked >= 8


def test_shd_file_read_as_times_bins_to_load_shd(tmp_path):
    pytest.importorskip("h5py")
    from ift_snn.training import shd_like
    from ift_snn.training.data import load_shd

    train, _ = shd_like.make_task(tmp_path, n_train=20, n_test=10, seed=0)
    x, y, K = shd_spike_times(train, n_channels=64, time_unit=0.01)
    ds = load_shd(train, T=100, n_channels=64, t_max=1.0)
    assert K == ds.n_classes and np.array_equal(y, ds.y)
    binned = np.zeros(ds.x.shape)
    b, c, k = np.nonzero(np.isfinite(x.times))
    np.add.at(binned, (b, np.minimum(np.floor(x.times[b, c, k] / 100.0 * 100).astype(int), 99), c), 1.0)
    assert np.array_equal(binned, ds.x)
    assert x.counts.sum() == ds.x.sum() > 0


@pytest.mark.parametrize("readout, lr", [("ttfs", 3e-3), ("max", 1e-2)])
def test_training_on_digits_learns_with_either_readout(readout, lr):
    from ift_snn.events.train import digits_spike_times

    (xtr, ytr), (xte, yte) = digits_spike_times()
    xtr, ytr, xte, yte = subset(xtr, slice(0, 240)), ytr[:240], subset(xte, slice(0, 120)), yte[:120]
    cfg = SRMTrainConfig(hidden=(16,), epochs=3, max_spikes=8, lr=lr, tau_L=0.5, count_floor=2.0, readout=readout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = train_srm(cfg, (xtr, ytr), (xte, yte), 10, t_absent=12.0, progress=False)
    assert m["epochs"][-1]["test_acc"] >= 0.3, (readout, m["epochs"])  # chance is 0.1
    assert m["peak_step_mb"] > 0


def test_bad_network_settings_are_refused():
    m = EventSRM.named("lif", backend="python")
    with pytest.raises(ValueError, match="readout='mean'"):
        SRMNetwork([2, 2], m, readout="mean")
    with pytest.raises(ValueError, match="t_end=None: the max readout needs"):
        SRMNetwork([2, 2], m, readout="max")
    with pytest.raises(ValueError, match="min_recurrent_delay=0"):
        SRMNetwork([2, 3, 2], m, recurrent=True, min_recurrent_delay=0.0)
    with pytest.raises(ValueError, match="x has 3 channels; expected 2"):
        SRMNetwork([2, 2], m).forward(_x(0, C=3))
    with pytest.raises(ValueError, match="t_end=-1.0"):
        readout_max(m, np.ones((4, 1)), _x(0), -1.0)
    with pytest.raises(ValueError, match="hidden=()"):
        SRMTrainConfig(hidden=()).validate()


def test_horizon_benchmark_rows_and_cli_refusal():
    import subprocess
    import sys

    from ift_snn.events.bench import format_horizon, horizon_scaling

    rows = horizon_scaling(horizons=(100.0, 1e4), models=("lif",), B=2, C=4, M=4, rounds=1)
    assert [r["T"] for r in rows] == [100.0, 1e4]
    assert all(r["input_spikes"] == 2 * 4 * 4 and r["output_spikes"] > 0 and r["min_ms"] <= r["median_ms"]
               for r in rows)
    assert "largest / smallest median over T" in format_horizon(rows)
    r = subprocess.run([sys.executable, "-m", "ift_snn.cli", "bench", "--continuous", "--peers"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "--continuous times the continuous-time layer" in r.stderr
