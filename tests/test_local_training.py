"""Chunked (truncated) and local-block training with one chunk's traces in memory (ift_snn.training.local).

What is equal and what is not:
- K = T (one chunk): chunked_step's loss and gradients are Network.step's (float64, 1e-10), with and
  without blocks, for every loss.
- K < T with the per-chunk loss: NOT Network.step(truncation=K) (that truncates the gradient of the whole
  sequence's loss, whose dL/ds in a chunk depends on later chunks); checked to differ.
- K < T with a callable loss returning the restriction of the whole-sequence dL/ds to each chunk: equal to
  Network.step(truncation=K) (the chunked backward from carried states is the truncated backward).
- The chunked forward's spikes equal the whole sequence's exactly (state carried).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import ift_snn
from ift_snn.training.local import (block_layout, chunked_forward, chunked_step, fit_local, measure_memory,
                                    memory_experiment)
from ift_snn.training.network import Network, loss_and_grad

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")

SIZES = [12, 16, 16, 16, 3]


def _toy(seed=0, T=40, B=5, C=12, classes=3):
    rng = np.random.default_rng(seed)
    x = (rng.random((T, B, C)) < 0.2).astype(np.float64)
    return x, rng.integers(0, classes, B)


def _net(blocks=None, model=None, dtype=np.float64, sizes=SIZES):
    return Network(sizes, model or ift_snn.if_neuron(), seed=1, dtype=dtype, blocks=blocks)


def _one_blas_thread():
    """OpenBLAS's spinning threads slow the many small products of a chunked step 5-7x on a busy 2-core box."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _rel(got, want) -> float:
    return max(float(np.abs(g - w).max()) / max(float(np.abs(w).max()), 1e-300) for g, w in zip(got, want))


@pytest.mark.parametrize("blocks", [None, 1, 2])
@pytest.mark.parametrize("loss", ["max_ce", "sum_ce", "count_mse"])
def test_one_chunk_equals_network_step(blocks, loss):
    x, y = _toy()
    net = _net(blocks)
    want, gw, gr = net.step(x, y, loss=loss, method="exodus")
    got, cw, cr = chunked_step(net, x, y, K=x.shape[0], loss=loss, method="exodus")
    assert _rel(cw, gw) <= 1e-10
    assert set(cr) == set(gr) == set(net.readouts)
    if gr:
        assert _rel([cr[k] for k in sorted(cr)], [gr[k] for k in sorted(gr)]) <= 1e-10
    assert got.loss == pytest.approx(want.loss, rel=1e-12)
    assert got.correct == want.correct
    assert np.any(np.abs(gw[0]) > 0)  # a gradient reaches the first layer


def test_lif_and_slayer_one_chunk():
    x, y = _toy(seed=3)
    net = _net(model=ift_snn.lif(0.9))
    for method in ("exodus", "slayer"):
        _, gw, _ = net.step(x, y, loss="max_ce", method=method)
        _, cw, _ = chunked_step(net, x, y, K=None, loss="max_ce", method=method)
        assert _rel(cw, gw) <= 1e-10


@pytest.mark.parametrize("K", [7, 10, 20])
def test_restricted_whole_loss_equals_network_truncation(K):
    """Fed the whole-sequence dL/ds chunk by chunk, the chunked pass IS Network.step(truncation=K)."""
    x, y = _toy(seed=1)
    net = _net()
    _, traces = net.forward(x)
    _, g, _ = loss_and_grad("max_ce", traces[-1].s, y, net.n_classes)
    _, want, _ = net.step(x, y, loss="max_ce", truncation=K)
    got = chunked_step(net, x, y, K=K, loss=lambda start, stop, s, y: (0.0, g[start:stop]), predict="max_ce")
    assert _rel(got[1], want) <= 1e-10
    # ... while the per-chunk loss is a different objective (its dL/ds does not see later chunks)
    _, own, _ = chunked_step(net, x, y, K=K, loss="max_ce")
    assert _rel(own, want) > 1e-3


def test_chunked_forward_spikes_exact():
    x, y = _toy(seed=2, T=53)
    for model in (ift_snn.if_neuron(), ift_snn.lif(0.9)):
        net = _net(model=model)
        _, traces = net.forward(x)
        for K in (1, 7, 10, 53):
            spikes = chunked_forward(net, x, K)
            for layer, trace in enumerate(traces):
                assert np.array_equal(spikes[layer], trace.s), (K, layer)
        assert traces[-1].s.sum() > 0


def test_prediction_is_whole_sequence_and_loss_is_weighted_mean():
    x, y = _toy(seed=4, T=40)
    net = _net()
    pred = net.predict(x, "max_ce")
    for K in (5, 13, 40):
        result, _, _ = chunked_step(net, x, y, K=K, loss="max_ce")
        assert result.correct == int((pred == y).sum())
    # T not a multiple of K: chunk weights K_c / T sum to 1; a constant chunk loss gives that constant
    result, gw, _ = chunked_step(net, x, y, K=13, loss=lambda a, b, s, y: (1.0, np.zeros_like(s)))
    assert result.loss == pytest.approx(4.0)  # callables are not weighted: 4 chunks
    assert all(not np.any(g) for g in gw)


def test_block_layout():
    assert block_layout(_net()) == [(0, 3, None)]
    assert block_layout(_net(1)) == [(0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, None)]
    assert block_layout(_net(2)) == [(0, 1, 1), (2, 3, None)]
    assert block_layout(_net(3)) == [(0, 2, 2), (3, 3, None)]


def test_bptt_refused_with_chunks():
    x, y = _toy()
    with pytest.raises(ValueError, match="bptt"):
        chunked_step(_net(), x, y, K=10, method="bptt")
    with pytest.raises(ValueError, match="K="):
        chunked_step(_net(), x, y, K=0)


def test_peak_memory_shrinks_with_k():
    rng = np.random.default_rng(0)
    T, B = 120, 8
    x = (rng.random((T, B, 12)) < 0.2).astype(np.float32)
    y = rng.integers(0, 3, B)
    net = _net(dtype=np.float32, sizes=[12, 64, 64, 3])
    configs = [{"name": "e2e", "K": None, "end_to_end": True}, {"name": "K=T", "K": T},
               {"name": "K=T/10", "K": T // 10}, {"name": "b=1 K=T/10", "K": T // 10, "blocks": 1}]
    with _one_blas_thread():
        mem = measure_memory(net, x, y, configs=configs)
    e2e = mem["e2e"]["peak_bytes"]
    assert mem["K=T/10"]["peak_bytes"] * 4 < e2e  # ~10x in practice; 4x is a margin for allocator noise
    assert mem["K=T"]["peak_bytes"] <= 1.1 * e2e
    assert mem["b=1 K=T/10"]["peak_bytes"] < mem["K=T/10"]["peak_bytes"]
    for row in mem.values():
        assert row["peak_bytes"] >= row["floor_bytes"] * 0.9


def test_fit_local_and_quick_experiment(tmp_path):
    """A tiny end-to-end run of the experiment: files written, every configuration trained."""
    configs = [{"name": "end-to-end", "K": None, "end_to_end": True}, {"name": "K=5", "K": 5},
               {"name": "b=1 K=5", "K": 5, "blocks": 1}]
    result = memory_experiment(tmp_path, quick=True, n_train=20, n_test=10, T=20, epochs=1, configs=configs,
                               progress=False)
    saved = json.loads((tmp_path / "memory.json").read_text())
    assert saved["complete"] and set(saved["memory"]) == set(saved["training"]) == {c["name"] for c in configs}
    assert (tmp_path / "memory.png").stat().st_size > 0
    for row in result["training"].values():
        assert len(row["test_acc"]) == 1 and 0 <= row["test_acc"][0] <= 1
    assert result["memory"]["K=5"]["peak_bytes"] < result["memory"]["end-to-end"]["peak_bytes"]
    assert result["memory"]["end-to-end"]["ratio"] == 1.0 and result["memory"]["K=5"]["ratio"] < 1.0
