"""``ift-snn experiment paper`` (ift_snn/experiments/paper.py) on a small setting: every planned run is in paper.json
with per-epoch metrics, the bptt run's gradients at initialisation equal EXODUS's to rounding, the same initial
weights for every method of a seed, figures written, and bad settings refused before any work."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("h5py")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from ift_snn.experiments.paper import PaperConfig, paper_experiment  # noqa: E402

SMALL = dict(seeds=(0,), scales=(0.3, 1.0), n_train=64, n_test=40, epochs=2, T=40, hidden=(16, 16, 16),
             n_channels=16)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_small_paper_run_records_everything(tmp_path):
    result = paper_experiment(PaperConfig(**SMALL), tmp_path, progress=False)
    data = json.loads((tmp_path / "paper.json").read_text())
    assert data["complete"] and result["complete"]
    plan = {(r["method"], r["scale"]) for r in data["runs"]}
    assert plan == {("exodus", 0.3), ("slayer", 0.3), ("exodus", 1.0), ("slayer", 1.0), ("bptt", 1.0)}
    for run in data["runs"]:
        assert len(run["epochs"]) == 2 and run["stopped"] is None
        for epoch in run["epochs"]:
            assert {"test_acc", "loss", "grad_norms", "seconds", "forward_s", "backward_s", "weight_grad_s"} <= set(epoch)
            assert len(epoch["grad_norms"]) == 4 and len(epoch["spike_rates"]) == 4  # the four weight layers
        assert (run["silent"] is None) == all(min(e["spike_rates"]) > 0 for e in run["epochs"])
    assert all(row["silent"] == sum(r["silent"] is not None for r in data["runs"]
                                    if f"{r['method']}@{r['scale']:g}" == key)
               for key, row in data["summary"].items())
    # bptt (the float64 reference) against exodus (float32 kernels) at initialisation: rounding only
    check = data["summary"]["bptt@1"]["init_grad_rel_diff_vs_exodus"]
    assert check < 1e-4
    # the same initial weights for every method of a seed: identical gradient norms of exodus and bptt at init
    by = {(r["method"], r["scale"]): r for r in data["runs"]}
    assert by[("bptt", 1.0)]["init_grad_norms"] == pytest.approx(by[("exodus", 1.0)]["init_grad_norms"], rel=1e-4)
    assert 0.0 <= data["baselines"]["1"] <= 1.0
    assert (tmp_path / "accuracy.png").stat().st_size > 0 and (tmp_path / "grad_norms.png").stat().st_size > 0


def test_bad_settings_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="scales"):
        PaperConfig(scales=(0.0,)).validate()
    with pytest.raises(ValueError, match="give both shd_path and shd_test_path"):
        PaperConfig(shd_path=str(tmp_path / "x.h5")).validate()
    with pytest.raises(ValueError, match="bptt_scale=2.0 is not one of the scales"):
        PaperConfig(bptt_scale=2.0).validate()
    run = subprocess.run([sys.executable, "-m", "ift_snn.cli", "experiment", "paper", "--shd-path",
                          str(tmp_path / "missing.h5"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert run.returncode == 2 and "missing.h5" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_one_factor_at_a_time_and_stable_scaling(tmp_path):
    """The setting's factors (neuron, loss) change one at a time; stable=True lowers scale 3 to the model's
    largest stable scale (an IF neuron's: 1), so its run equals the scale-1 run of the same seed."""
    cfg = PaperConfig(**{**SMALL, "scales": (1.0, 3.0), "epochs": 1}, neuron="lif", loss="sum_ce", bptt_scale=None,
                      methods=("exodus",), stable=True)
    data = paper_experiment(cfg, tmp_path, progress=False, baselines=False)
    assert "lif" in repr(cfg.train_config(1.0, "exodus", 0).model) and data["config"]["loss"] == "sum_ce"
    by = {r["scale"]: r for r in data["runs"]}
    assert by[3.0]["stopped"] is None
    # lif(0.9)'s largest stable scale is 0.95 < 1: both scales run at 0.95, from the same weights and batches
    assert by[3.0]["epochs"][0]["test_acc"] == by[1.0]["epochs"][0]["test_acc"]
    assert by[3.0]["init_grad_norms"] == by[1.0]["init_grad_norms"]


def test_the_task_as_a_factor(tmp_path):
    """task='randman': the same setting on the random-manifold task (generated, no SHD files)."""
    cfg = PaperConfig(**{**SMALL, "scales": (1.0,), "epochs": 1, "n_train": 40, "n_test": 20}, task="randman",
                      bptt_scale=None)
    data = paper_experiment(cfg, tmp_path, progress=False, baselines=False)
    assert data["data"]["task"] == "randman" and data["data"]["n_classes"] == 4
    assert {r["method"] for r in data["runs"]} == {"exodus", "slayer"} and all(r["epochs"] for r in data["runs"])
    with pytest.raises(ValueError, match="task='randman' generates its data"):
        PaperConfig(task="randman", shd_path=__file__, shd_test_path=__file__).validate()
