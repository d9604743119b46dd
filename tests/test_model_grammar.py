"""One model grammar for every command (ift_snn.neurons.spec): built-ins with overrides, your own kernels, taps,
surrogate specs, model files in the spec and stored forms, --save-model, and the commands that refuse it."""

from __future__ import annotations

import json
import re

import pytest

import ift_snn.experiments.bench as bench_mod
import ift_snn.training.train as train_mod
from ift_snn.neurons import spec
from ift_snn.cli import _train_config, build_parser, main
from ift_snn.neurons.models import get_model, lif, model_to_dict

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")


def parse(*argv: str, command: str = "codegen"):
    return build_parser().parse_args([command, *argv])


def model(*argv: str, command: str = "codegen"):
    """The model the options describe (nothing is derived or compiled)."""
    return spec.model_from_args(parse(*argv, command=command))


def error(capsys, argv, *needles: str) -> str:
    """Run ``argv``: exit code 2 and one line ``ift-snn: error: ...`` naming every needle."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ift-snn: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


# ------------------------------------------------------- built-ins, overrides
def test_default_and_builtin_names():
    assert repr(model()) == repr(get_model("lif"))
    assert repr(model("cuba_lif")) == repr(get_model("cuba_lif"))


@pytest.mark.parametrize("argv,check", [
    (["--param", "alpha=0.8"], lambda m: dict(m.params)["alpha"] == 0.8),
    (["--theta", "2"], lambda m: m.theta == 2.0),
    (["--theta-r", "0.5"], lambda m: dict(m.params)["theta_r"] == 0.5),
    (["--surrogate", "fast_sigmoid"], lambda m: m.surrogate.name == "fast_sigmoid"),
    (["--spike", "multi"], lambda m: m.spike == "multi"),
    (["--spike", "3"], lambda m: m.spike == 3),
    (["--reset", "zero"], lambda m: m.reset == "zero" and m.nu is None),
    (["--u-min", "-0.5"], lambda m: m.u_min == -0.5),
])
def test_each_override_is_applied(argv, check):
    assert check(model("lif", *argv))


def test_overrides_of_other_builtins():
    m = model("alpha_srm", "--param", "beta=0.95", "--theta", "1.5")
    assert dict(m.params) == {"alpha": 0.8, "beta": 0.95, "theta": 1.5}
    assert dict(model("cuba_lif", "--param", "alpha_syn=0.5").params)["alpha_syn"] == 0.5


@pytest.mark.parametrize("argv,needles", [
    (["derive", "lif", "--surrogate", "nonsense"], ["--surrogate", "nonsense", "custom(EXPR)"]),
    (["codegen", "if", "--param", "alpha=0.5"], ["--param alpha", "'if'"]),
    (["demo", "lif", "--param", "beta=2"], ["--param beta", "its parameters are alpha"]),
    (["demo", "lif", "--param", "theta_r=2"], ["--param theta_r", "--theta-r"]),
    (["codegen", "lif", "--truncate", "3"], ["--truncate", "your own kernels"]),
    (["codegen", "lif", "--name", "mine"], ["--name"]),
    (["codegen", "taps4_srm", "--reset", "zero"], ["taps4_srm"]),
    (["codegen", "lif", "--spike", "0"], ["--spike", "0"]),
    (["codegen", "lif", "--spike", "many"], ["--spike", "many"]),
    (["codegen", "lif", "--theta", "-1"], ["--theta", "> 0"]),
    (["codegen", "lif", "--reset", "half"], ["--reset", "half"]),
])
def test_an_override_that_does_not_apply_is_an_error(argv, needles, capsys):
    error(capsys, argv, *needles)


# ------------------------------------------------------------- own kernels
def test_taps_for_eps_and_nu():
    m = model("--eps", "[0.5, 1, 0.6]", "--nu", "[1, 0.5,]", "--name", "mine")
    assert m.name == "mine" and m.eps.taps == (0.5, 1.0, 0.6) and m.nu.taps == (1.0, 0.5)
    m = model("--eps", "[1e-1, .5, 01]", "--nu", "theta*beta**n", "--param", "beta=0.7", "--theta-r", "0.5")
    assert m.eps.taps == (0.1, 0.5, 1.0) and dict(m.params)["beta"] == 0.7
    assert spec.parse_kernel([1, 2]) == [1.0, 2.0] and spec.parse_kernel("n*alpha**n") == "n*alpha**n"


@pytest.mark.parametrize("eps", ["[0.5, x]", "[__import__('os')]", "[]", "[1e999]", "[[1]]", "[1 2]", "[0x1]"])
def test_bad_taps_are_errors(eps, capsys):
    error(capsys, ["codegen", "--eps", eps, "--nu", "[1]"], "--eps")


def test_kernel_parameters_get_a_default_with_a_note(capsys):
    m = model("--eps", "n*gamma**n", "--nu", "theta*0.5**n")
    assert dict(m.params)["gamma"] == spec.DEFAULT_PARAM
    assert "--param gamma=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needles", [
    (["codegen", "lif", "--eps", "alpha**n", "--nu", "theta"], ["lif", "--eps", "not both"]),
    (["codegen", "--nu", "theta"], ["--nu needs --eps"]),
    (["codegen", "--eps", "alpha**n"], ["--eps needs --nu"]),
    (["codegen", "--eps", "alpha**n", "--nu", "theta*alpha**n", "--param", "gamma=2"], ["--param", "gamma"]),
])
def test_kernel_option_errors(argv, needles, capsys):
    error(capsys, argv, *needles)


def test_python_spec_without_a_parameter_value_teaches():
    with pytest.raises(ValueError, match=r"'gamma' with no value.*params \(gamma = VALUE"):
        spec.model_from_spec({"eps": "n*gamma**n", "nu": [1.0]})


# -------------------------------------------------------------- surrogates
def test_surrogate_specs():
    s = spec.parse_surrogate("exponential(scale=2, width=0.3)")
    assert s.name == "exponential" and dict(s.constants) == {"scale": 2.0, "width": 0.3}
    assert dict(spec.parse_surrogate("sigmoid()").constants) == {"scale": 1.0, "slope": 5.0}
    assert spec.parse_surrogate("custom(exp(-abs(u - theta)))").name == "custom"
    m = model("lif", "--surrogate", "custom(1/(1+abs(u-theta))**2)")
    assert m.surrogate.name == "custom"
    m = model("--eps", "alpha**n", "--nu", "theta*alpha**n", "--surrogate", "arctan(slope=3)")
    assert dict(m.surrogate.constants)["slope"] == 3.0


@pytest.mark.parametrize("text,match", [
    ("exponential(slope=2)", "takes scale, width"),
    ("exponential(2, 0.3)", "CONSTANT=NUMBER"),
    ("exponential(scale=abc)", "CONSTANT=NUMBER"),
    ("exponential(scale=-1)", "out of range"),
    ("exponential(scale=1, scale=2)", "twice"),
    ("custom(__import__('os'))", "not"),
    ("custom(u*q)", "q"),
    ("nonsense", "unknown surrogate"),
])
def test_bad_surrogate_specs(text, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        spec.parse_surrogate(text)


# ------------------------------------------------------------- model files
SPEC = {"builtin": "alpha_srm", "params": {"beta": 0.8}, "theta": 1.5, "surrogate": "fast_sigmoid(slope=4)",
        "spike": 2}


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_spec_form_files(tmp_path, suffix):
    file = tmp_path / f"m{suffix}"
    spec.save_model_file(SPEC, file)
    assert spec.load_model_file(file) == SPEC
    m = model("--model-file", str(file))
    assert dict(m.params) == {"alpha": 0.8, "beta": 0.8, "theta": 1.5} and m.spike == 2
    custom = {"eps": "0.9**n/(n + 1)", "nu": "theta*beta**n", "params": {"beta": 0.7}, "name": "mine", "truncate": 4,
              "surrogate": 'custom(exp(-abs(u-theta)))'}
    spec.save_model_file(custom, file)
    assert spec.load_model_file(file) == custom
    assert model("--model-file", str(file)).name == "mine"


@pytest.mark.parametrize("suffix", [".json", ".toml"])
@pytest.mark.parametrize("name", ["cuba_lif", "lif_clip", "lif_reset_zero", "taps4_srm"])
def test_stored_form_files(tmp_path, suffix, name):
    file = tmp_path / f"m{suffix}"
    stored = model_to_dict(get_model(name))
    spec.save_model_file(stored, file)
    assert model_to_dict(model("--model-file", str(file))) == stored


def test_command_line_overrides_a_spec_file_but_not_a_stored_one(tmp_path, capsys):
    file = tmp_path / "m.json"
    file.write_text(json.dumps({"eps": "n*gamma**n", "nu": [1], "params": {"gamma": 0.5}, "theta": 2}))
    m = model("--model-file", str(file), "--theta", "3", "--param", "gamma=0.7")
    assert dict(m.params) == {"gamma": 0.7, "theta": 3.0}
    file.write_text(json.dumps(model_to_dict(get_model("lif"))))
    error(capsys, ["codegen", "--model-file", str(file), "--theta", "3"], "stored model", "--theta")


BAD_FILES = [
    ("m.json", "[1, 2]", ["expected a mapping", "got list"]),
    ("m.json", "{}", ["no model"]),
    ("m.json", '{"eps": "alpha**n"}', ["eps needs nu"]),
    ("m.json", '{"builtin": "lif", "thta": 2}', ["unknown key 'thta'"]),
    ("m.json", '{"builtin": "lif", "theta": "x"}', ["key 'theta'", "finite number"]),
    ("m.json", '{"builtin": "lif", "theta": NaN}', ["key 'theta'"]),
    ("m.json", '{"builtin": "nope"}', ["key 'builtin'", "nope"]),
    ("m.json", '{"builtin": "lif", "params": [1]}', ["key 'params'"]),
    ("m.json", '{"builtin": "lif", "params": {"alpha": "fast"}}', ["params.alpha"]),
    ("m.json", '{"builtin": "lif", "spike": 0}', ["key 'spike'"]),
    ("m.json", '{"builtin": "lif", "surrogate": "exponential(slope=1)"}', ["key 'surrogate'", "slope"]),
    ("m.json", '{"builtin": "lif", "eps": "n", "nu": "n"}', ["exclude"]),
    ("m.json", '{"eps": "n*gamma**n", "nu": [1]}', ["key 'eps'", "gamma", "params"]),
    ("m.json", '{"eps": "[1, x]", "nu": [1]}', ["key 'eps'", "taps"]),
    ("m.json", '{"builtin": "lif"', ["not valid JSON"]),
    ("m.toml", 'builtin = "lif"\ntheta = ', ["not valid TOML"]),
    ("m.toml", 'eps = "alpha**n"', ["eps needs nu"]),
    ("m.txt", "{}", [".json or .toml"]),
]


@pytest.mark.parametrize("name,text,needles", BAD_FILES, ids=[t for _, t, _ in BAD_FILES])
def test_bad_model_files(tmp_path, capsys, name, text, needles):
    file = tmp_path / name
    file.write_text(text)
    error(capsys, ["codegen", "--model-file", str(file)], str(file), *needles)


def test_bad_stored_files(tmp_path, capsys):
    stored = model_to_dict(get_model("lif"))
    file = tmp_path / "m.json"
    file.write_text(json.dumps({k: v for k, v in stored.items() if k != "reset"}))
    error(capsys, ["codegen", "--model-file", str(file)], str(file), "reset")
    file.write_text(json.dumps({**stored, "extra": 1}))
    error(capsys, ["codegen", "--model-file", str(file)], str(file), "extra")
    error(capsys, ["codegen", "--model-file", str(tmp_path / "none.json")], "does not exist")


@pytest.mark.parametrize("argv,needles", [
    (["codegen", "lif", "--model-file", "m.json"], ["--model-file", "'lif'"]),
    (["codegen", "--eps", "n", "--nu", "n", "--model-file", "m.json"], ["--model-file", "--eps"]),
])
def test_model_file_takes_the_whole_model(argv, needles, capsys):
    error(capsys, argv, *needles)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_save_model_round_trip(tmp_path, capsys, suffix):
    file = str(tmp_path / f"m{suffix}")
    argv = ["--eps", "[0.5, 1, 0.6]", "--nu", "theta*beta**n", "--param", "beta=0.7", "--theta", "1.25",
            "--surrogate", "exponential(scale=2, width=0.3)", "--spike", "multi", "--name", "mine"]
    assert main(["derive", *argv, "--T", "2", "--save-model", file]) == 0
    assert f"wrote {file}" in capsys.readouterr().out
    assert model_to_dict(model("--model-file", file)) == model_to_dict(model(*argv))
    assert main(["codegen", "--model-file", file, "--target", "numpy", "--quantity", "forward"]) == 0
    assert f"# model: {model(*argv)!r}" in capsys.readouterr().out
    builtin = ["lif_clip", "--param", "alpha=0.8", "--u-min", "-1", "--surrogate", "custom(exp(-abs(u-theta)))"]
    assert main(["derive", *builtin, "--T", "2", "--save-model", file]) == 0
    assert model_to_dict(model("--model-file", file)) == model_to_dict(model(*builtin))


def test_save_model_is_checked_before_work(tmp_path, capsys):
    error(capsys, ["derive", "--save-model", str(tmp_path / "m.yaml")], "--save-model", ".json or .toml")
    error(capsys, ["derive", "--save-model", str(tmp_path / "no" / "m.json")], "--save-model")


@pytest.mark.parametrize("argv,needles", [
    (["derive", "--all", "--out", "x", "--theta", "2"], ["--all", "--theta"]),
    (["derive", "events_lif", "--theta", "2"], ["events_lif", "--theta"]),
    (["derive", "events_lif", "--save-model", "m.json"], ["events_lif", "--save-model"]),
])
def test_derive_all_and_events_take_no_model_options(argv, needles, capsys):
    error(capsys, argv, *needles)


# ------------------------------------------------------------ bench, train
@pytest.mark.parametrize("argv,needles", [
    (["bench", "alpha_srm", "--peers"], ["--peers", "LIF", "alpha_srm"]),
    (["bench", "--theta", "2", "--torch"], ["--torch", "LIF", "--theta"]),
])
def test_bench_peers_and_torch_refuse_model_options(argv, needles, capsys):
    error(capsys, argv, *needles)


def test_bench_takes_the_model(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(bench_mod, "run", lambda **kw: seen.append(kw["model"]) or [])
    assert main(["bench", "alpha_srm", "--theta", "2"]) == 0
    assert main(["bench"]) == 0
    assert seen[0].name == "alpha_srm" and seen[0].theta == 2.0 and seen[1] is None
    assert bench_mod._torch_baseline_applies(lif(0.8)) and not bench_mod._torch_baseline_applies(get_model("lif_clip"))


def test_train_builds_the_model_of_the_options():
    cfg = _train_config(parse("cuba_lif", "--theta", "1.5", command="train"))
    assert cfg.model == {"builtin": "cuba_lif", "theta": 1.5}
    cfg.validate()
    assert train_mod._model(cfg).name == "cuba_lif" and train_mod._model(cfg).theta == 1.5
    cfg = _train_config(parse("lif_multi", "--alpha", "0.8", "--surrogate-scale", "2", command="train"))
    m = train_mod._model(cfg)
    assert m.spike == "multi" and dict(m.params)["alpha"] == 0.8 and dict(m.surrogate.constants)["scale"] == 2.0
    cfg = _train_config(parse("--alpha", "0.7", "--surrogate-width", "0.25", command="train"))  # the default LIF
    assert cfg.model is None and cfg.alpha == 0.7 and cfg.surrogate_width == 0.25


@pytest.mark.parametrize("argv,needles", [
    (["train", "alpha_srm", "--alpha", "0.5"], ["--alpha", "not a LIF"]),
    (["train", "cuba_lif", "--alpha", "0.5"], ["--alpha", "alpha_mem"]),
    (["train", "lif", "--alpha", "0.5", "--param", "alpha=0.6"], ["--alpha", "--param alpha"]),
    (["train", "--surrogate", "sigmoid", "--surrogate-scale", "2"], ["--surrogate-scale", "--surrogate"]),
    (["train", "--method", "events", "--task", "digits", "--theta", "2"], ["--method events", "--theta"]),
])
def test_train_model_option_errors(argv, needles, capsys, monkeypatch):
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: pytest.fail("training started"))
    error(capsys, argv, *needles)


def test_train_config_model():
    cfg = train_mod.TrainConfig(model=get_model("if"))
    assert cfg.model == model_to_dict(get_model("if"))  # JSON-able
    assert repr(train_mod._model(cfg)) == repr(get_model("if"))
    with pytest.raises(ValueError, match="alpha=0.5"):
        train_mod.TrainConfig(model={"builtin": "if"}, alpha=0.5).validate()


def test_train_runs_with_a_model(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "lif_multi", "--theta", "1.5", "--epochs", "1", "--hidden", "4", "--randman-samples", "4",
            "--T", "10", "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["model"] == {"builtin": "lif_multi", "theta": 1.5}
    assert "spike='multi'" in metrics["model"] and "theta=1.5" in metrics["model"]


def test_every_command_has_the_model_options(capsys):
    for command in ("derive", "codegen", "demo", "bench", "train"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        for flag in ("--eps", "--nu", "--param", "--theta", "--theta-r", "--surrogate", "--spike", "--reset",
                     "--u-min", "--truncate", "--name", "--model-file"):
            assert flag in out, (command, flag)
