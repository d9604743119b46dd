"""``ift-snn bench --peers``: agreement with snnTorch / SpikingJelly / Norse, the JSON, the missing-peer error."""

from __future__ import annotations

import json
import sys

import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")

from ift_snn.experiments import bench_peers  # noqa: E402
from ift_snn.cli import main  # noqa: E402

TINY = (2, 20, 8)
SMALL = (2, 60, 8)


def _agree(peer: str, dtype: str) -> dict:
    (row,) = bench_peers.agreement([peer], dtype, size=SMALL)
    assert row["peer"] == peer and row["spikes"] > 0
    return row


@pytest.mark.parametrize("dtype, tol", [("f64", 1e-12), ("f32", 1e-5)])
def test_spikingjelly_equals_exodus(dtype, tol):
    pytest.importorskip("spikingjelly")
    row = _agree("spikingjelly", dtype)
    assert "exodus" in row["versus"]
    assert row["spikes_differ"] == 0
    assert row["grad_rel_diff"] < tol


@pytest.mark.parametrize("dtype, tol", [("f64", 1e-12), ("f32", 1e-5)])
def test_snntorch_equals_slayer(dtype, tol):
    pytest.importorskip("snntorch")
    row = _agree("snntorch", dtype)
    assert "slayer" in row["versus"]
    assert row["spikes_differ"] == 0
    assert row["grad_rel_diff"] < tol


def test_norse_equals_exodus():
    pytest.importorskip("norse")
    row = _agree("norse", "f64")
    assert row["spikes_differ"] == 0
    assert row["grad_rel_diff"] < 1e-12


def by_name(data: dict, name: str) -> dict:
    return next(r for r in data["rows"] if r["contestant"] == name)


def test_cli_peers_writes_json(tmp_path, capsys, monkeypatch):
    peers, _ = bench_peers.available_peers()
    if not peers:
        pytest.skip("no peer library installed")
    monkeypatch.setattr(bench_peers, "AGREE_SIZE", (2, 30, 4))
    out = tmp_path / "peers.json"
    assert main(["bench", "--peers", "--sizes", "2,20,8", "--rounds", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fwd+bwd" in printed and "ift_snn exodus fwd+bwd / fastest peer" in printed
    data = json.loads(out.read_text())
    assert data["config"]["sizes"] == [list(TINY)] and data["config"]["threads"] == 2
    names = {r["contestant"] for r in data["rows"]}
    assert {"ift_snn exodus", "ift_snn slayer", "ift_snn exodus, fixed alpha", "ift_snn kernels"} <= names
    # snnTorch, SpikingJelly and Norse twice: in the configuration that matches ours and in their defaults
    defaults = {"snntorch": "snnTorch, default", "spikingjelly": "SpikingJelly, default", "norse": "Norse, default"}
    assert len(names) == 4 + len(peers) + sum(p in peers for p in defaults)
    assert {defaults[p] for p in peers if p in defaults} <= names
    for r in data["rows"]:
        assert r["fwd_bwd_ms"] > 0 and r["forward_ms"] > 0 and r["peak_mb"] >= 0 and len(r["times_ms"]) == 2
        sums = [f + b for f, b in r["times_ms"]]
        assert r["fwd_bwd_mean_ms"] == pytest.approx(sum(sums) / 2)
        assert r["slowest_over_median"] == pytest.approx(max(sums) / (sum(sums) / 2)) and r["slowest_over_median"] >= 1
    (s,) = data["summary"]
    assert s["exodus_over_fastest_peer"] > 0 and s["memory_floor_ms"] > 0 and s["exodus_over_slayer_backward"] > 0
    assert s["exodus_fixed_alpha_over_fastest_peer"] > 0 and "with alpha fixed, as the peers run it" in printed
    # the machine probe: timed once per round, summarised per size, printed
    assert len(data["probe_ms"]["2x20x8"]) == 2 and all(p > 0 for p in data["probe_ms"]["2x20x8"])
    assert s["probe_slowest_over_median"] >= 1 and "machine probe (fixed work on one core" in printed
    # what each timed call cost besides wall time: the exact layer's slowest and median rounds, printed
    usage = data["usage"]["2x20x8"]
    assert set(usage) == names and all(len(u) == 2 for u in usage.values())
    slow, mid = s["exodus_slowest_round"], s["exodus_median_round"]
    assert slow["ms"] == pytest.approx(max(sum(t) for t in by_name(data, "ift_snn exodus")["times_ms"]))
    for r in (slow, mid):
        assert r["cpu_ms"] >= 0 and r["preempted"] >= 0 and r["faults"] >= 0
        assert isinstance(r["others_ms"], float) if sys.platform == "linux" else r["others_ms"] is None
    assert "exodus' slowest round" in printed and "involuntary switches" in printed and "page faults" in printed
    assert {a["peer"] for a in data["agreement"]} == set(peers)
    assert all(a["grad_rel_diff"] < 1e-5 for a in data["agreement"])


def test_missing_peers_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench_peers, "_import", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[bench\]' in the ift_snn checkout"):
        bench_peers.run_peers([TINY], 1, progress=False)
    assert main(["bench", "--peers", "--sizes", "2,20,8", "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("ift-snn: error:") and "pip install -e '.[bench]' in the ift_snn checkout" in err


@pytest.mark.parametrize("bad", ["2,20", "2,0,8", "a,b,c"])
def test_bad_sizes(bad, capsys):
    assert main(["bench", "--peers", "--sizes", bad]) == 2
    err = capsys.readouterr().err
    assert "--sizes" in err and len(err.strip().splitlines()) == 1


def test_peak_rss_delta_sees_an_allocation():
    import numpy as np

    nbytes, method = bench_peers.peak_rss_delta(lambda: np.ones(8_000_000).sum())  # 64 MB
    assert 40e6 < nbytes < 200e6, (nbytes, method)


def test_threads_reach_both_libraries(monkeypatch, capsys):
    """--threads sets PyTorch's threads and ift_snn's kernels' for the run, and ift_snn's default comes back."""
    peers, _ = bench_peers.available_peers()
    if not peers:
        pytest.skip("no peer library installed")
    from ift_snn.backends import compiled

    before = compiled.threads()
    import torch

    torch_before = torch.get_num_threads()
    result = bench_peers.run_peers(sizes=[TINY], rounds=1, threads=1, progress=False, agree=False)
    assert result["config"]["threads"] == 1 and result["config"]["ift_snn_threads"] == 1
    assert compiled.threads() == before and torch.get_num_threads() == torch_before
    with pytest.raises(ValueError, match="threads=0"):
        bench_peers.run_peers(sizes=[TINY], rounds=1, threads=0, progress=False)
    with pytest.raises(ValueError, match="threads=1.5"):
        compiled.set_threads(1.5)


def test_fresh_memory_cli(monkeypatch, capsys, tmp_path):
    """bench --fresh-memory: a fill time per pause and repeat, the reused buffer's, the JSON; no peer needed."""
    monkeypatch.setattr(bench_peers, "FRESH_MB", 8)
    monkeypatch.setattr(bench_peers, "FRESH_PAUSES", (0.0, 0.01))
    out = tmp_path / "fresh.json"
    assert main(["bench", "--fresh-memory", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fill a fresh 8 MB float32 array" in printed and "the same buffer filled again" in printed
    data = json.loads(out.read_text())
    assert data["pause_s"] == [0.0, 0.01] and len(data["fresh_ms"]) == 2
    assert all(len(ms) == 3 and min(ms) > 0 for ms in data["fresh_ms"]) and min(data["reused_ms"]) > 0
    assert main(["bench", "--fresh-memory", "--peers"]) == 2


def test_the_docs_scripts_of_the_slow_rounds_run(capsys):
    """docs/scripts/layer_page_faults.py, after_free.py and round_usage.py (cited in docs/benchmarks.md) run, on a
    small layer."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("torch")
    root = Path(__file__).resolve().parents[1] / "docs" / "scripts"
    for name, kwargs in (("layer_page_faults", {"B": 2, "T": 10, "N": 8, "calls": 2}),
                         ("after_free", {"B": 2, "T": 10, "N": 8, "rounds": 1, "pause": 0.01}),
                         ("round_usage", {"B": 2, "T": 10, "N": 8, "rounds": 2, "pause": 0.0})):
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.main(**kwargs)
    out = capsys.readouterr().out
    assert "call 2:" in out and "minor page faults" in out and "right after 1.5 GB freed" in out
    assert "slowest / median" in out and "others' CPU ms" in out


def test_configs_time_every_surrogate_and_the_other_reset(monkeypatch):
    """--configs adds the exact layer with every built-in surrogate and with the reset before the decay, timed in
    the same interleaved rounds; --configs and --threads without --peers are errors."""
    peers, _ = bench_peers.available_peers()
    if not peers:
        pytest.skip("no peer library installed")
    from ift_snn.neurons.surrogates import SURROGATES

    result = bench_peers.run_peers(sizes=[TINY], rounds=1, progress=False, agree=False, configs=True)
    names = {r["contestant"] for r in result["rows"]}
    assert {f"ift_snn exodus, {n}" for n in SURROGATES} | {"ift_snn exodus, reset before decay"} <= names
    assert all(r["fwd_bwd_ms"] > 0 for r in result["rows"])
    assert main(["bench", "--configs"]) == 2 and main(["bench", "--threads", "1"]) == 2
