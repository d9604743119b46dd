"""The recurrent-layer peer benchmark: agreement with snnTorch / SpikingJelly / Norse, every field, the table."""

from __future__ import annotations

import json
import math
import warnings

import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")

from ift_snn.experiments import bench_recurrent  # noqa: E402

TINY = (2, 20, 8)
SMALL = (3, 60, 12)


def _agree(peer: str, dtype: str = "f64") -> dict:
    (row,) = bench_recurrent.recurrent_agreement(dtype, size=SMALL, peers=[peer])
    assert row["peer"] == peer and row["size"] == list(SMALL) and row["spikes"] > 0
    return row


@pytest.mark.parametrize("dtype, tol", [("f64", 1e-10), ("f32", 1e-4)])
@pytest.mark.parametrize("peer, versus", [("snntorch", "ift_snn slayer"), ("spikingjelly", "ift_snn exodus"),
                                          ("norse", "ift_snn slayer (cuba_lif")])
def test_peer_equals_ift_snn(peer, versus, dtype, tol):
    pytest.importorskip(peer)
    row = _agree(peer, dtype)
    assert row["versus"].startswith(versus)
    assert row["spikes_differ"] == 0
    for key in ("grad_rel_diff", "grad_W_rel_diff", "grad_V_rel_diff"):
        assert row[key] < tol, (key, row)


def test_norse_gradient_is_not_the_exact_one():
    """Norse detaches the reset: its gradient is ift_snn's slayer of its model, far from exodus."""
    pytest.importorskip("norse")
    from ift_snn.neurons.models import cuba_lif
    from ift_snn.neurons.surrogates import fast_sigmoid

    B, T, N = SMALL
    gen = torch.Generator().manual_seed(0)
    x = (0.3 + 0.5 * torch.randn(B, T, N, generator=gen, dtype=torch.float64))
    g = torch.randn(B, T, N, generator=gen, dtype=torch.float64)
    W, V = bench_recurrent._weights(torch, N, 0, torch.float64)
    fn, _ = bench_recurrent._norse_fn(torch, W, V, exact_params=True)
    xn = x.transpose(0, 1).contiguous().requires_grad_(True)
    fn(xn).backward(g.transpose(0, 1))
    k = (1 - bench_recurrent.NORSE_ALPHA_MEM) * bench_recurrent.NORSE_GAIN
    xi = x.clone().requires_grad_(True)
    with warnings.catch_warnings():  # Norse's surrogate scale 1 is above the largest stable one (0.89)
        warnings.simplefilter("ignore")
        model = cuba_lif(0.9, 0.8, reset="zero", surrogate=fast_sigmoid(1.0, 1.0))
        layer, _ = bench_recurrent._ift_layer(torch, k * W, k * V, "exodus", model)
        layer(xi).backward(g)
    assert bench_recurrent._rel(xn.grad.transpose(0, 1), xi.grad) > 1e-3


def _check_result(result, peers):
    assert set(result["environment"]) >= {"device", "platform", "python", "torch", "threads"}
    assert result["config"]["threads"] == 2 and result["config"]["sizes"] == [list(TINY)]
    names = {r["contestant"] for r in result["rows"]}
    assert {"ift_snn exodus", "ift_snn slayer", bench_recurrent.INPUT_LAYER} <= names and len(names) == 3 + len(peers)
    for r in result["rows"]:
        assert r["forward_ms"] > 0 and r["backward_ms"] > 0
        assert r["fwd_bwd_ms"] == pytest.approx(r["forward_ms"] + r["backward_ms"])
        assert len(r["times_ms"]) == 1 and r["peak_mb"] >= 0
        assert r["spike_rate"] is None if r["contestant"] == bench_recurrent.INPUT_LAYER else 0 <= r["spike_rate"] <= 1
        assert r["forward_median_ms"] > 0 and r["backward_median_ms"] > 0
    (s,) = result["summary"]
    assert s["exodus_over_slayer_backward"] > 0 and isinstance(s["exodus_over_slayer_backward_met"], bool)
    for key in ("exodus_over_fastest_peer", "exodus_memory_over_leanest_peer"):
        assert key in s and key + "_met" in s
    return s


def test_run_returns_every_field_and_formats(tmp_path):
    peers, _ = bench_recurrent.available_peers()
    if not peers:
        pytest.skip("no peer library installed")
    out = tmp_path / "recurrent.json"
    result = bench_recurrent.run_recurrent_peers(sizes=(TINY,), rounds=1, progress=False, json_path=out)
    s = _check_result(result, peers)
    assert s["fastest_peer"] in {r["contestant"] for r in result["rows"] if r["peer"]}
    assert s["exodus_over_fastest_peer"] > 0 and s["slayer_over_fastest_peer"] > 0
    assert {(a["peer"], a["dtype"]) for a in result["agreement"]} == {(p, d) for p in peers for d in ("f64", "f32")}
    assert all(a["spikes_differ"] == 0 and a["grad_rel_diff"] < 1e-4 for a in result["agreement"])
    data = json.loads(out.read_text())
    assert data["summary"] == json.loads(json.dumps(result["summary"]))
    text = bench_recurrent.format_recurrent_table(result)
    for c in result["rows"]:
        assert c["contestant"] in text
    assert "ift_snn exodus fwd+bwd / fastest peer" in text and "target <= 0.333" in text
    assert "ift_snn exodus backward / slayer backward" in text and "target <= 1.2" in text
    assert "ift_snn exodus peak memory / leanest peer" in text and "agreement" in text


def test_missing_peers_are_not_fatal(monkeypatch):
    monkeypatch.setattr(bench_recurrent, "available_peers",
                        lambda: ([], {"snntorch": "not installed", "norse": "not installed"}))
    result = bench_recurrent.run_recurrent_peers(sizes=(TINY,), rounds=1, progress=False)
    s = _check_result(result, [])
    assert s["exodus_over_fastest_peer"] is None and s["exodus_memory_over_leanest_peer"] is None
    assert result["missing"] == {"snntorch": "not installed", "norse": "not installed"}
    text = bench_recurrent.format_recurrent_table(result)
    assert "note: snntorch: not installed" in text and "fastest peer (none installed): -" in text
    assert not math.isnan(result["rows"][0]["fwd_bwd_ms"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="rounds"):
        bench_recurrent.run_recurrent_peers(sizes=(TINY,), rounds=0, progress=False)
    with pytest.raises(ValueError, match="batch, T, neurons"):
        bench_recurrent.run_recurrent_peers(sizes=((2, 0, 8),), rounds=1, progress=False)
    with pytest.raises(ValueError, match="dtype"):
        bench_recurrent.recurrent_agreement("f16")


def test_the_cli_runs_it_and_refuses_what_does_not_apply(tmp_path, capsys):
    from ift_snn.cli import main

    out = tmp_path / "rec.json"
    assert main(["bench", "--peers", "--recurrent", "--sizes", "2,12,6", "--rounds", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ift_snn exodus fwd+bwd / fastest peer" in text and out.is_file()
    assert main(["bench", "--recurrent"]) == 2
    assert "give it with --peers" in capsys.readouterr().err
    assert main(["bench", "--peers", "--recurrent", "--with-sinabs"]) == 2
    assert "sinabs has no recurrent layer" in capsys.readouterr().err
