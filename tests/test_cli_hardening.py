"""Every CLI failure is one line ``ift-snn: error: ...`` on stderr, exit code 2, no traceback;
outputs are checked before any work and results are written as they arrive."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import ift_snn.cli as cli
import ift_snn.training.train as train_mod
from ift_snn.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")
TINY = ["--randman-samples", "8", "--T", "20", "--hidden", "8", "--batch-size", "16"]


def _one_error_line(capsys, *needles: str) -> str:
    """The stderr of a failed command: exactly one line ``ift-snn: error: ...`` naming every needle,
    nothing else but progress bars."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not re.search(r"\d+%\|", line)]  # tqdm
    assert len(lines) == 1, err
    assert lines[0].startswith("ift-snn: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any training or data generation starts."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("work started before the arguments were checked")

    for name in ("make_task", "fit", "build_network"):
        monkeypatch.setattr(train_mod, name, refuse)
    return calls


# ------------------------------------------------------------ missing extras
@pytest.fixture
def without(monkeypatch):
    """Make modules look uninstalled to the commands' checks (``without("tqdm")``)."""
    import importlib.util

    real = importlib.util.find_spec
    hidden: set[str] = set()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    return hidden.update


@pytest.mark.parametrize("argv, modules, needles", [
    (["train", "--epochs", "1", *TINY], ("tqdm",), ["ift-snn train needs tqdm", "pip install -e '.[train]' in the ift_snn checkout"]),
    (["train", "--task", "digits", "--epochs", "1"], ("sklearn",), ["needs scikit-learn", "'.[train]'"]),
    (["experiment", "scale-sweep", "--seeds", "1", "--epochs", "1", *TINY], ("matplotlib",),
     ["scale-sweep needs matplotlib", "pip install -e '.[train]'"]),
])
def test_a_missing_extra_is_named_before_any_work(argv, modules, needles, tmp_path, capsys, no_training, without):
    without(modules)
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys, *needles)
    assert not no_training and not (tmp_path / "run").exists()


def test_bench_torch_without_torch_fails_before_timing(capsys, monkeypatch, without):
    import ift_snn.experiments.bench as bench_mod

    monkeypatch.setattr(bench_mod, "run", lambda *a, **k: pytest.fail("the benchmark ran before the check"))
    without({"torch"})
    assert main(["bench", "--torch"]) == 2
    _one_error_line(capsys, "bench --torch needs torch", "pip install -e '.[torch]' in the ift_snn checkout")


def test_demo_times_warm_kernels_and_says_so(capsys):
    assert main(["demo", "--T", "30", "--neurons", "4"]) == 0
    out = capsys.readouterr().out
    assert "(warm)" in out and "ms: warm, the median of 3 calls after a first one" in out
    assert re.search(r"first calls \(derive, generate and compile .*\): forward \d+ ms, exodus \d+ ms", out)


# ------------------------------------------------------------ output paths
def test_train_out_that_is_a_file_fails_before_training(tmp_path, capsys, no_training):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--epochs", "1", "--out", str(blocker), *TINY]) == 2
    _one_error_line(capsys, "--out", str(blocker))
    assert not no_training


def test_train_out_under_a_file_fails_before_training(tmp_path, capsys, no_training):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--epochs", "1", "--out", str(blocker / "run"), *TINY]) == 2
    _one_error_line(capsys, "--out")
    assert not no_training


def test_sweep_out_that_is_a_file_fails_before_training(tmp_path, capsys, no_training):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["experiment", "scale-sweep", "--seeds", "1", "--epochs", "1", "--scales", "1",
                 "--methods", "exodus", "--out", str(blocker), *TINY]) == 2
    _one_error_line(capsys, "--out", str(blocker))
    assert not no_training


def test_bench_json_that_is_a_folder_fails_before_timing(tmp_path, capsys, monkeypatch):
    import ift_snn.experiments.bench as bench

    monkeypatch.setattr(bench, "run_cpu", lambda *a, **k: pytest.fail("benchmark ran"))
    assert main(["bench", "--T", "5", "--batch", "1", "--neurons", "2", "--repeats", "1",
                 "--json", str(tmp_path)]) == 2
    _one_error_line(capsys, "--json", str(tmp_path))


def test_bench_json_in_a_missing_folder_fails_before_timing(tmp_path, capsys, monkeypatch):
    import ift_snn.experiments.bench as bench

    monkeypatch.setattr(bench, "run_cpu", lambda *a, **k: pytest.fail("benchmark ran"))
    assert main(["bench", "--T", "5", "--batch", "1", "--neurons", "2", "--repeats", "1",
                 "--json", str(tmp_path / "nope" / "b.json")]) == 2
    _one_error_line(capsys, "--json", "nope")


def test_derive_out_that_is_a_file_fails_before_deriving(tmp_path, capsys, monkeypatch):
    import ift_snn.symbolic.report as report

    monkeypatch.setattr(report, "derive", lambda *a, **k: pytest.fail("derivation ran"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["derive", "--T", "3", "--out", str(blocker)]) == 2
    _one_error_line(capsys, "--out", str(blocker))
    assert main(["derive", "--all", "--out", str(blocker)]) == 2
    _one_error_line(capsys, "--out", str(blocker))


def test_train_library_checks_out_before_training(tmp_path, no_training):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = train_mod.TrainConfig(epochs=1, randman_samples=8, T=20, hidden=(8,), batch_size=16)
    with pytest.raises(ValueError, match="not a folder"):
        train_mod.train(cfg, blocker, progress=False)
    assert not no_training


# ------------------------------------------------------- results as they come
def _interrupt_on_epoch(monkeypatch, epoch: int, exc: BaseException):
    """Raise ``exc`` while evaluating epoch ``epoch`` (1-based): epochs before it are complete."""
    real = train_mod._accuracy
    calls = []

    def accuracy(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "_accuracy", accuracy)


def test_interrupted_training_keeps_the_finished_epochs(tmp_path, capsys, monkeypatch):
    _interrupt_on_epoch(monkeypatch, 3, KeyboardInterrupt())
    out = tmp_path / "run"
    code = main(["train", "--epochs", "4", "--out", str(out), *TINY])
    assert code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = [x for x in err.splitlines() if "ift-snn:" in x]
    assert len(line) == 1 and "interrupted" in line[0] and "metrics.json" in line[0] and "2 epochs" in line[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert "interrupted" in metrics["stopped"]
    from ift_snn.training.network import Network

    assert Network.load(out / "weights.npz").sizes == [40, 8, 4]


def test_crashed_training_keeps_the_finished_epochs(tmp_path, capsys, monkeypatch):
    _interrupt_on_epoch(monkeypatch, 3, RuntimeError("injected"))
    out = tmp_path / "run"
    assert main(["train", "--epochs", "4", "--out", str(out), *TINY]) == 2
    _one_error_line(capsys, "internal error", "RuntimeError", "injected")
    assert [e["epoch"] for e in json.loads((out / "metrics.json").read_text())["epochs"]] == [1, 2]


def test_debug_env_reraises(tmp_path, monkeypatch):
    _interrupt_on_epoch(monkeypatch, 1, RuntimeError("injected"))
    monkeypatch.setenv("IFT_SNN_DEBUG", "1")
    with pytest.raises(RuntimeError, match="injected"):
        main(["train", "--epochs", "1", "--out", str(tmp_path / "run"), *TINY])


def test_sweep_writes_its_json_after_every_run(tmp_path, capsys, monkeypatch):
    real = train_mod.fit
    calls = []

    def fit(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "fit", fit)
    out = tmp_path / "sweep"
    code = main(["experiment", "scale-sweep", "--seeds", "1", "--epochs", "1", "--scales", "0.5", "1",
                 "--methods", "exodus", "--out", str(out), *TINY])
    assert code == 130
    assert "scale_sweep.json" in capsys.readouterr().err
    data = json.loads((out / "scale_sweep.json").read_text())
    assert len(data["runs"]) == 1 and data["complete"] is False


# ---------------------------------------------------------- bad arguments
BAD_ARGS = [
    (["demo", "--T", "-5"], ["--T", "positive integer", "-5"]),
    (["demo", "--T", "x"], ["--T", "'x'"]),
    (["demo", "--neurons", "0"], ["--neurons", "positive integer", "0"]),
    (["demo", "--seed", "-1"], ["--seed", "-1"]),
    (["bench", "--neurons", "0"], ["--neurons", "positive integer"]),
    (["bench", "--repeats", "0"], ["--repeats", "positive integer"]),
    (["bench", "--T", "0"], ["--T"]),
    (["bench", "--batch", "-2"], ["--batch"]),
    (["experiment", "scale-sweep", "--seeds", "0"], ["--seeds", "positive integer"]),
    (["experiment", "scale-sweep", "--scales", "nan"], ["--scales", "nan"]),
    (["experiment", "scale-sweep", "--epochs", "0"], ["--epochs"]),
    (["train", "--epochs", "0"], ["--epochs", "positive integer"]),
    (["train", "--hidden", "0"], ["--hidden"]),
    (["train", "--lr", "-1"], ["--lr", "-1"]),
    (["train", "--lr", "inf"], ["--lr"]),
    (["train", "--surrogate-scale", "0"], ["--surrogate-scale"]),
    (["train", "--truncation", "0"], ["--truncation"]),
    (["train", "--blocks", "0"], ["--blocks"]),
    (["train", "--randman-samples", "1"], ["--randman-samples", ">= 2"]),
    (["train", "--alpha", "1.5"], ["--alpha", "1.5"]),
    (["train", "--task", "mnist"], ["--task", "mnist"]),
    (["derive", "--T", "1"], ["--T"]),
    (["derive", "--truncate", "0", "--eps", "n", "--nu", "theta"], ["--truncate"]),
    (["nonsense"], ["nonsense"]),
    ([], ["command"]),
]


@pytest.mark.parametrize("argv,needles", BAD_ARGS, ids=[" ".join(a) or "empty" for a, _ in BAD_ARGS])
def test_bad_arguments_are_one_line(argv, needles, capsys, no_training):
    assert main(argv) == 2
    _one_error_line(capsys, *needles)
    assert not no_training


def test_missing_shd_file_names_the_file(tmp_path, capsys, no_training):
    missing = tmp_path / "shd_train.h5"
    assert main(["train", "--task", "shd", "--shd-path", str(missing), "--out", str(tmp_path / "o")]) == 2
    _one_error_line(capsys, "--shd-path", str(missing))
    assert main(["train", "--task", "shd", "--shd-path", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    _one_error_line(capsys, "--shd-path", str(tmp_path))
    assert main(["train", "--task", "shd", "--out", str(tmp_path / "o")]) == 2
    _one_error_line(capsys, "--shd-path")


def test_train_refuses_bad_alpha_before_training(no_training):
    with pytest.raises(ValueError, match="alpha"):
        train_mod.train(train_mod.TrainConfig(alpha=1.5), progress=False)
    with pytest.raises(ValueError, match="seeds"):
        train_mod.scale_sweep(seeds=(), progress=False)
    assert not no_training


def test_bench_library_checks_its_arguments(monkeypatch):
    import ift_snn.experiments.bench as bench

    monkeypatch.setattr(bench, "run_cpu", lambda *a, **k: pytest.fail("benchmark ran"))
    for name in ("T", "batch", "neurons", "repeats"):
        with pytest.raises(ValueError, match=rf"{name}=0"):
            bench.run(**{name: 0})
    with pytest.raises(ValueError, match="dtype"):
        bench.run(dtype="f16")


# ------------------------------------------------------------------ derive
HUGE = "+".join(["n"] * 60000)


@pytest.mark.parametrize("argv,needles", [
    (["derive", "--eps", HUGE, "--nu", "theta*beta**n"], ["--eps", "characters"]),
    (["derive", "--eps", "n*alpha**n", "--nu", HUGE], ["--nu", "characters"]),
    (["derive", "--eps", "exp**n", "--nu", "theta*beta**n"], ["--eps", "'exp'", "function"]),
    (["derive", "--eps", "n*alpha**n", "--nu", "theta*sin**n"], ["--nu", "'sin'", "function"]),
    (["derive", "--eps", "n*alpha**n", "--nu", "theta*beta**n", "--param", "exp=0.5"],
     ["--param", "'exp'", "function"]),
    (["derive", "--eps", "n*alpha**n", "--nu", "theta*beta**n", "--param", "n=3"], ["--param", "'n'"]),
    (["derive", "--eps", "n*alpha**n", "--nu", "theta*beta**n", "--param", "theta=2"], ["--param", "'theta'"]),
    (["derive", "--eps", "n*alpha**n", "--nu", "theta*beta**n", "--param", "pi=3"], ["--param", "'pi'"]),
    (["derive", "--eps", "n*alpha**n", "--nu", "theta*beta**n", "--param", "2a=3"], ["--param", "'2a'"]),
    (["derive", "--eps", "n*alpha**n", "--nu", "theta*beta**n", "--param", "alpha=nan"], ["--param", "nan"]),
    (["derive", "--eps", "n*alpha**n", "--nu", "theta*beta**n", "--param", "alpha=0.5", "--param", "alpha=0.6"],
     ["--param", "alpha", "twice"]),
    (["derive", "--eps", "n*alpha**n", "--nu", "theta*beta**n", "--param", "alpha"], ["--param", "NAME=VALUE"]),
])
def test_bad_derive_input_is_one_line(argv, needles, capsys):
    assert main(argv) == 2
    _one_error_line(capsys, *needles)


# -------------------------------------------------------------- last resort
def test_recursion_memory_and_os_errors_are_one_line(capsys, monkeypatch):
    for exc, needle in [(RecursionError("deep"), "too deeply"), (MemoryError(), "memory"),
                        (PermissionError(13, "Permission denied", "/x/y"), "/x/y")]:
        def boom(args, exc=exc):
            raise exc

        monkeypatch.setattr(cli, "_demo", boom)
        assert main(["demo"]) == 2
        _one_error_line(capsys, needle)


def _subparser(name):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction))
    return sub.choices[name]


def test_help_and_version_still_exit_zero(capsys):
    assert main(["--version"]) == 0
    assert main(["bench", "--help"]) == 0
    assert "(default: 300)" in capsys.readouterr().out
    for action in _subparser("bench")._actions:
        assert action.help, action.option_strings  # every bench option says what it is
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for default in ("(default: 30)", "(default: 0.002)", "(default: runs/train)", "(default: exodus)"):
        assert default in out


def test_what_an_interrupted_experiment_kept_is_read_from_its_json(tmp_path):
    from ift_snn.cli import _kept_json

    path = tmp_path / "paper.json"
    kept = _kept_json(path, lambda data: f"{len(data['runs'])} runs")
    assert kept() is None  # nothing written yet
    path.write_text("{not json")
    assert kept() is None  # a half-written file
    path.write_text('{"runs": [1, 2]}')
    assert kept() == f"kept {path} (2 runs)"
    path.write_text('{"other": 1}')
    assert kept() is None  # not the layout expected


def test_printouts_of_issue_27(tmp_path, capsys):
    """Warning summaries cut at a word; a second train into the same --out says it overwrites; the events bench
    times its discrete backward by itself (it printed total - forward, which could be negative)."""
    import warnings as _warnings

    from ift_snn.cli import _shortened, counted_warnings

    long = "word " * 60
    assert _shortened(long).endswith("word ...") and len(_shortened(long)) <= 164
    with counted_warnings() as warned:
        _warnings.warn(long, RuntimeWarning)
    assert warned.summary()[0].endswith("word ...)")
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    from ift_snn.cli import _prepare_out_dir

    _prepare_out_dir(out, "--out")
    assert "holds an earlier run (metrics.json); it is overwritten" in capsys.readouterr().err
    from ift_snn.events.bench import _discrete_layer, _inputs

    rng = np.random.default_rng(0)
    x = _inputs(rng, 2, 8, 2, 4.0)
    fwd, bwd = _discrete_layer(50, x, rng.normal(size=(8, 4)), 4.0, 3)
    assert fwd > 0 and bwd > 0


def test_bench_peers_columns_add_up():
    """The fwd and bwd columns are those of the round whose fwd + bwd is the median (issue 27: 291 + 234 vs 937)."""
    from ift_snn.experiments.bench_peers import _median_round

    fw, bw = [100.0, 300.0, 290.0, 120.0], [700.0, 230.0, 240.0, 650.0]
    mid = _median_round([f + b for f, b in zip(fw, bw)])
    assert fw[mid] + bw[mid] == sorted(f + b for f, b in zip(fw, bw))[1]
    assert _median_round([]) == 0
