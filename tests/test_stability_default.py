"""The worst-case step factor (ift_snn/symbolic/stability.py, docs/MATH.md section 6): against a brute-force scan of u,
against the backward's running diagnostic, the largest stable scale, stabilized models, and the warning
the constructors give (once per model)."""

from __future__ import annotations

import dataclasses
import re
import warnings

import numpy as np
import pytest

import ift_snn
from ift_snn.symbolic import stability
from ift_snn.neurons import surrogates
from ift_snn.neurons.models import builtin_model, cuba_lif, if_neuron, lif
from ift_snn.symbolic.stability import (
    UnstableModelWarning,
    largest_stable_scale,
    stabilized,
    worst_step_factor,
)

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.symbolic.stability.UnstableModelWarning",
                                        "ignore::ift_snn.StabilityWarning")

#: The membrane models and their step factors c(u, s, sigma), written out here (the library reads them
#: from the derivation): reset by subtraction alpha - rho sigma, reset to zero alpha (1 - s - u sigma).
MEMBRANES = {
    "lif": (lambda sg: lif(0.9, surrogate=sg), lambda u, s, sig: 0.9 - 1.0 * sig),
    "lif_theta_r": (lambda sg: lif(0.8, 1.2, theta_r=0.5, surrogate=sg), lambda u, s, sig: 0.8 - 0.5 * sig),
    "if": (lambda sg: if_neuron(surrogate=sg), lambda u, s, sig: 1.0 - sig),
    "cuba_lif": (lambda sg: cuba_lif(0.9, 0.8, surrogate=sg), lambda u, s, sig: 0.9 - sig),
    "before_decay": (lambda sg: lif(0.9, reset_before_decay=True, surrogate=sg), lambda u, s, sig: 0.9 * (1 - sig)),
    "reset_zero": (lambda sg: lif(0.9, reset="zero", surrogate=sg), lambda u, s, sig: 0.9 * (1 - s - u * sig)),
    "multi": (lambda sg: lif(0.9, spike="multi", surrogate=sg), lambda u, s, sig: 0.9 - sig),
}
SURROGATES = sorted(surrogates.SURROGATES)


def _brute_force(model, c, half_width=12.0, points=240_001):
    """max |c| over a fine uniform grid of u around theta (theta itself on it), by the model's sigma and f."""
    theta = model.theta
    u = theta + theta * np.linspace(-half_width, half_width, points)
    if model.u_min is not None:
        u = u[u >= model.u_min]
    with np.errstate(all="ignore"):
        return float(np.nanmax(np.abs(c(u, model.spike_fn(u), model.sigma(u)))))


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("name", sorted(MEMBRANES))
def test_worst_step_factor_is_the_brute_force_maximum(name, surrogate):
    build, c = MEMBRANES[name]
    model = build(surrogates.get_surrogate(surrogate, scale=2.0))
    worst, brute = worst_step_factor(model), _brute_force(model, c)
    assert brute <= worst * (1 + 1e-12)
    assert brute >= worst * (1 - 2e-3), f"{model!r}: grid {brute} vs worst {worst}"


def test_the_defaults_and_their_largest_stable_scales():
    """Exponential surrogate, scale 1, width 0.5: peak sigma 2 / theta."""
    expected = {  # (worst factor, largest stable scale)
        "lif": (1.1, 0.95),  # |0.9 - 2|, (1 + 0.9) / 2
        "if": (1.0, 1.0),  # |1 - 2|, 2 / 2
        "cuba_lif": (1.1, 0.95),
        "lif_before_decay": (0.9, (1 + 1 / 0.9) / 2),  # 0.9 |1 - 2 k| <= 1
        "lif_reset_zero": (1.8, 1 / 1.8),  # at u = theta, s = 1: 0.9 u sigma = 1.8 k
        "lif_multi": (1.1, 0.95),
        "lif_clip": (1.1, 0.95),
    }
    for name, (worst, scale) in expected.items():
        model = builtin_model(name, surrogate=surrogates.exponential())  # a Surrogate object: used as given
        assert worst_step_factor(model) == pytest.approx(worst, rel=1e-12), name
        assert largest_stable_scale(model) == pytest.approx(scale, rel=1e-12), name
        # by name (the default): the scale min(1, largest stable scale), 4 digits rounded down
        default = builtin_model(name)
        assert default == dataclasses.replace(model, surrogate=default.surrogate), name
        chosen = dict(default.surrogate.constants)
        assert chosen["width"] == 0.5 and chosen["scale"] == pytest.approx(min(1.0, scale), rel=2e-4), name
        assert chosen["scale"] <= min(1.0, scale) * (1 + 1e-12) and worst_step_factor(default) <= 1, name


def test_the_default_scales_print_as_chosen():
    """What a user sees: LIF(0.9) exponential(scale=0.95), IF 1, reset to zero 0.5555 (1/1.8 rounded down)."""
    assert lif(0.9).surrogate == surrogates.exponential(scale=0.95, width=0.5)
    assert if_neuron().surrogate == surrogates.exponential()
    assert lif(0.9, reset="zero").surrogate == surrogates.exponential(scale=0.5555)
    assert lif(0.9, reset_before_decay=True).surrogate == surrogates.exponential()  # stable up to 1.056: keeps 1
    assert lif(0.9, surrogate="exponential(width=0.25)").surrogate == surrogates.exponential(scale=0.475, width=0.25)
    assert lif(0.9, surrogate="exponential(scale=2)").surrogate == surrogates.exponential(scale=2.0)  # given: kept
    for name in SURROGATES:  # every built-in family by name: stable, at most its default scale 1
        model = lif(0.5, surrogate=name)
        assert dict(model.surrogate.constants)["scale"] <= 1 and worst_step_factor(model) <= 1, name
    custom = lif(0.9, surrogate="custom(3*exp(-abs(u - theta)))")  # no scale to choose: as given, warned
    assert worst_step_factor(custom) == pytest.approx(2.1, rel=1e-12)
    zero = if_neuron(reset="zero")  # no scale above 0 is stable: kept at 1, warned
    assert zero.surrogate == surrogates.exponential()


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("name", ["lif", "if", "cuba_lif", "before_decay", "reset_zero"])
def test_largest_stable_scale_is_where_the_factor_reaches_one(name, surrogate):
    build = MEMBRANES[name][0]
    model = build(surrogates.get_surrogate(surrogate, scale=2.0))
    k = largest_stable_scale(model)
    at = build(model.surrogate.with_constants(scale=k))
    assert worst_step_factor(at) <= 1
    assert worst_step_factor(at) == pytest.approx(1.0, abs=1e-9)
    assert worst_step_factor(build(model.surrogate.with_constants(scale=1.01 * k))) > 1
    fixed = stabilized(model)
    assert worst_step_factor(fixed) <= 1
    scale = dict(fixed.surrogate.constants)["scale"]
    assert scale == min(2.0, scale) and float(f"{scale:.4g}") == scale  # printed as it is
    assert scale <= min(2.0, k) * (1 + 1e-12) and scale == pytest.approx(min(2.0, k), rel=2e-3)
    assert {k: v for k, v in fixed.surrogate.constants if k != "scale"} == \
           {k: v for k, v in model.surrogate.constants if k != "scale"}


def test_largest_stable_scale_of_reset_by_subtraction_is_the_closed_form():
    """theta_r sigma_max <= 1 + alpha: scale <= (1 + alpha) / (theta_r peak_1), peak_1 = 1/(width theta)."""
    for alpha, theta, theta_r, width in [(0.9, 1.0, 1.0, 0.5), (0.7, 2.0, 0.5, 0.3), (1.0, 0.5, 0.5, 1.0)]:
        model = lif(alpha, theta, theta_r=theta_r, surrogate=surrogates.exponential(width=width))
        assert largest_stable_scale(model) == pytest.approx((1 + alpha) * width * theta / theta_r, rel=1e-12)


def test_stable_models_are_left_alone_and_edge_cases():
    quiet = lif(0.9, surrogate=surrogates.exponential(scale=0.5))
    assert stabilized(quiet) is quiet
    assert largest_stable_scale(lif(0.9, theta_r=0.0)) == np.inf  # no reset: c = alpha
    custom = lif(0.9, surrogate=surrogates.custom("3*exp(-abs(u - theta))"))
    assert worst_step_factor(custom) == pytest.approx(2.1, rel=1e-12)  # |0.9 - 3|
    with pytest.raises(ValueError, match=re.escape(f"{custom.surrogate!r} has no scale")):
        largest_stable_scale(custom)
    with pytest.raises(ValueError, match="has no scale"):
        stabilized(custom)
    # IF with reset to zero: c = 1 - s - u sigma(u) is 1 + |u| sigma(u) > 1 at u < 0 for every scale > 0
    zero = if_neuron(reset="zero")
    assert worst_step_factor(zero) == pytest.approx(2.0, rel=1e-12) and largest_stable_scale(zero) == 0.0
    with pytest.raises(ValueError, match="no surrogate scale makes"):
        stabilized(zero)
    with pytest.raises(ValueError, match="has no constant slope"):
        surrogates.exponential().with_constants(slope=2.0)


def test_general_srms_use_the_backward_factor():
    """alpha_srm: c = beta - theta sigma (the pole of nu = theta beta^n); finite taps: c = -nu[0] sigma."""
    scale_1 = surrogates.exponential()
    assert worst_step_factor(builtin_model("alpha_srm", surrogate=scale_1)) == pytest.approx(abs(0.9 - 2.0), rel=1e-12)
    assert worst_step_factor(builtin_model("taps4_srm", surrogate=scale_1)) == pytest.approx(2.0, rel=1e-12)
    model = builtin_model("alpha_srm", surrogate=surrogates.exponential(scale=3.0))
    assert worst_step_factor(stabilized(model)) <= 1


def _peak_visiting_input(T, M, theta, seed=0):
    """Random input, and in neuron 0 a first step of exactly theta from u0 = 0 (u = theta: sigma's peak)."""
    a = np.random.default_rng(seed).normal(0.3, 0.6, (T, M))
    a[0, 0] = theta
    return a


@pytest.mark.parametrize("name", ["lif", "if", "cuba_lif", "lif_before_decay", "lif_reset_zero", "lif_clip",
                                  "alpha_srm"])
def test_the_running_diagnostic_stays_below_and_reaches_the_worst_factor(name):
    model = builtin_model(name, surrogate=surrogates.exponential(scale=1.5, width=0.5))
    a = _peak_visiting_input(120, 64, model.theta)
    trace = ift_snn.forward(model, a, backend="numpy")
    got = ift_snn.backward(model, trace, np.ones_like(a)).max_step_factor
    worst = worst_step_factor(model)
    assert got <= worst * (1 + 1e-12)
    assert got >= 0.99 * worst, f"{model!r}: diagnostic {got} vs worst {worst}"


def test_the_warning_is_above_one():
    assert stability.WARN_ABOVE == 1.0


def test_construction_warns_once_naming_the_largest_stable_scale():
    stability._WARNED.clear()
    with pytest.warns(UnstableModelWarning, match=r"5\.1 > 1.*largest stable scale is 0\.95.*"
                                                  r"surrogate=exponential\(scale=0\.95, width=0\.5\)") as record:
        model = lif(0.9, surrogate=surrogates.exponential(scale=3))
    assert len(record) == 1
    assert record[0].filename == __file__  # attributed to the caller, not to ift_snn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = lif(0.9, surrogate=surrogates.exponential(scale=3))  # the same model: not again
        model.with_params(alpha=0.8)  # training steps never warn
        stabilized(model)
    assert again == model


def test_the_defaults_do_not_warn_and_a_scale_given_above_the_stable_one_does():
    stability._WARNED.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("lif", "if", "cuba_lif", "lif_before_decay", "lif_reset_zero", "lif_multi", "lif_clip",
                     "alpha_srm", "alif"):
            builtin_model(name)
        lif(0.9, surrogate=surrogates.exponential(scale=0.95))  # at the largest stable scale: quiet
    with pytest.warns(UnstableModelWarning, match=r"1\.1 > 1.*largest stable scale is 0\.95"):
        lif(0.9, surrogate=surrogates.exponential())
    stability._WARNED.clear()


def test_per_neuron_values_get_the_scale_stable_for_every_neuron():
    model = lif(0.9)
    per = {"alpha": np.array([0.9, 0.5, 0.95])}
    fixed = stability.stable_default(model, per)
    assert dict(fixed.surrogate.constants)["scale"] == 0.75  # (1 + 0.5) / 2: the smallest alpha decides
    for alpha in per["alpha"]:
        assert worst_step_factor(fixed.with_params(alpha=alpha)) <= 1
    assert stability.stable_default(model, {"alpha": [0.95, 0.99]}) is model  # every neuron stable at 0.95
    zero = if_neuron(reset="zero")
    assert stability.stable_default(zero) is zero  # nothing stable: as it was


def test_specs_the_training_config_and_the_command_line_choose_the_scale_as_the_constructors():
    from ift_snn.neurons.spec import model_from_spec
    from ift_snn.training.train import TrainConfig, _model

    assert model_from_spec({"builtin": "lif", "surrogate": "exponential"}) == lif(0.9)
    assert model_from_spec({"builtin": "lif", "surrogate": "exponential(width=0.25)"}).surrogate == \
        surrogates.exponential(scale=0.475, width=0.25)
    stability._WARNED.clear()  # warned once per model and process: whatever ran before in this worker
    with pytest.warns(UnstableModelWarning):
        given = model_from_spec({"builtin": "lif", "surrogate": "exponential(scale=1)"})
    assert given.surrogate == surrogates.exponential()
    assert _model(TrainConfig()).surrogate == surrogates.exponential(scale=0.95)
    assert _model(TrainConfig(surrogate_width=0.25)).surrogate == surrogates.exponential(scale=0.475, width=0.25)
    assert _model(TrainConfig(surrogate_scale=0.3)).surrogate == surrogates.exponential(scale=0.3)
    with pytest.raises(TypeError, match="surrogate_scale"):
        TrainConfig(surrogate_scale="1").validate()


def test_torch_layers_and_nir_imports_get_the_scale_stable_for_every_neuron():
    torch = pytest.importorskip("torch")
    from ift_snn.integrations.torch import LIF

    layer = LIF(torch.tensor([0.9, 0.5, 0.95]), train_alpha=True)
    assert layer.model.surrogate == surrogates.exponential(scale=0.75)  # alpha 0.5 decides
    assert LIF(0.9).model.surrogate == surrogates.exponential(scale=0.95)
    given = LIF(torch.tensor([0.9, 0.5]), surrogate=surrogates.exponential(scale=0.9))
    assert given.model.surrogate == surrogates.exponential(scale=0.9)  # given: kept
    nir = pytest.importorskip("nir")
    from ift_snn.integrations.nir import from_nir

    tau = np.array([2.0, 10.0, 20.0])  # alpha = 1 - 1/tau: 0.5, 0.9, 0.95
    graph = nir.NIRGraph(
        nodes={"in": nir.Input(input_type={"input": np.array([2])}), "fc": nir.Linear(weight=np.ones((3, 2))),
               "lif": nir.LIF(tau=tau, r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3),
                              v_reset=np.zeros(3)),
               "out": nir.Output(output_type={"output": np.array([3])})},
        edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")])
    model = from_nir(graph, dt=1.0, to="torch")[1].model
    for alpha in (0.5, 0.9, 0.95):
        assert worst_step_factor(model.with_params(alpha=alpha)) <= 1
    # reset to zero: alpha (1 - s - u sigma) grows with alpha, so here the largest alpha decides (1 / 1.9)
    assert dict(model.surrogate.constants)["scale"] == min(
        stability.stable_scale(lif(a, reset="zero", surrogate=surrogates.exponential())) for a in (0.5, 0.9, 0.95))
    assert dict(model.surrogate.constants)["scale"] == 0.5263


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("name", sorted(MEMBRANES))
def test_the_grid_closed_form_equals_the_search(name, surrogate):
    """The largest stable scale from A + k B on the grid equals the root found by searching over k."""
    model = MEMBRANES[name][0](surrogates.get_surrogate(surrogate, scale=2.0))
    fast, searched = stability._largest_stable_scale(model), stability._searched_stable_scale(model)
    assert fast == searched or fast == pytest.approx(searched, rel=1e-9), (fast, searched)


def test_the_grid_closed_form_equals_the_search_for_smooth_spikes_and_srms():
    models = [lif(0.9, spike="smooth", surrogate=surrogates.get_surrogate(name, scale=2.0))
              for name in ("sigmoid", "arctan", "gaussian")]
    models += [lif(0.8, reset="zero", spike="smooth", surrogate=surrogates.sigmoid(scale=2.0)),
               builtin_model("alpha_srm", surrogate=surrogates.exponential(scale=3.0)),
               builtin_model("taps4_srm", surrogate=surrogates.exponential(scale=3.0)),
               builtin_model("alif", surrogate=surrogates.exponential(scale=3.0))]
    for model in models:
        fast, searched = stability._largest_stable_scale(model), stability._searched_stable_scale(model)
        assert fast == pytest.approx(searched, rel=1e-9), (model, fast, searched)
