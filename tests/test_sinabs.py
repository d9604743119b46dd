"""from_sinabs (ift_snn/integrations/convert.py): a sinabs LIF / IAF and the converted layer give the same spikes and
the same gradients, for each convention sinabs offers that has an equal here; the rest is refused by name.

Two comparisons per configuration:

* the sinabs layer as users build it (float32 parameters), on float64 input: the spikes are equal exactly; the
  input gradients to float32 accuracy, because sinabs' spike functions return float32 spikes (``.float()``), so
  the gradient reaching each step's spikes is rounded to float32 even for float64 input;
* the same sinabs layer in float64 (``.double()``) with its spike function's output kept in float64 (the only
  change: a subclass that returns ``.to(v.dtype)``; decay, reset and surrogate are sinabs' own code): spikes equal,
  input gradients to ~1e-15, and the membranes related exactly as stated in test_membrane_is_before_the_reset.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sinabs = pytest.importorskip("sinabs")

import sinabs.activation as sa  # noqa: E402
import sinabs.layers as sl  # noqa: E402
from sinabs.activation.spike_generation import MaxSpikeInner  # noqa: E402

from ift_snn.integrations.convert import from_sinabs  # noqa: E402
from ift_snn.integrations.torch import SpikingLayer  # noqa: E402

from .conftest import rel_err  # noqa: E402

B, T, N = 3, 40, 5


# ------------------------------------------------------------ float64 spikes
class _Single64(sa.SingleSpike):
    @staticmethod
    def forward(ctx, v_mem, spike_threshold, surrogate_grad_fn):
        return sa.SingleSpike.forward(ctx, v_mem, spike_threshold, surrogate_grad_fn).to(v_mem.dtype)


class _Multi64(sa.MultiSpike):
    @staticmethod
    def forward(ctx, v_mem, spike_threshold, surrogate_grad_fn):
        return sa.MultiSpike.forward(ctx, v_mem, spike_threshold, surrogate_grad_fn).to(v_mem.dtype)


class _MaxInner64(MaxSpikeInner):
    @staticmethod
    def forward(ctx, v_mem, max_spikes, spike_threshold, surrogate_grad_fn):
        return MaxSpikeInner.forward(ctx, v_mem, max_spikes, spike_threshold, surrogate_grad_fn).to(v_mem.dtype)


class _Max64(sa.MaxSpike):
    def apply(self, v_mem, spike_threshold, surrogate_grad_fn):
        return _MaxInner64.apply(v_mem, self.max_num_spikes_per_bin, spike_threshold, surrogate_grad_fn)


def _float64_spikes(spike_fn):
    """sinabs' spike function with its output in the membrane's dtype (sinabs returns float32 spikes)."""
    if spike_fn is sa.SingleSpike:
        return _Single64
    if spike_fn is sa.MultiSpike:
        return _Multi64
    return _Max64(spike_fn.max_num_spikes_per_bin)


@contextlib.contextmanager
def _default_float64():
    """sinabs' Gaussian surrogates make pi with torch.tensor(math.pi): in float64 only under this default."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


# ------------------------------------------------------------ configurations
def _lif(**kw):
    return sl.LIF(tau_mem=kw.pop("tau_mem", 8.0), norm_input=False, record_states=True, **kw)


# id -> (sinabs layer factory, input gain (times the threshold), method that gives sinabs' input gradient)
CONFIGS = {
    "lif-defaults": (lambda: _lif(), 1.5, "exodus"),  # MultiSpike, MembraneSubtract(), SingleExponential()
    "single-threshold-2": (lambda: _lif(spike_fn=sa.SingleSpike, spike_threshold=2.0), 1.0, "exodus"),
    "subtract-value": (lambda: _lif(spike_fn=sa.SingleSpike, reset_fn=sa.MembraneSubtract(subtract_value=1.5)),
                       1.0, "exodus"),
    # sinabs multiplies by the mask (spikes == 0), which has no gradient: its gradient is the reset detached
    "reset-zero": (lambda: _lif(spike_fn=sa.SingleSpike, reset_fn=sa.MembraneReset()), 1.0, "slayer"),
    "maxspike-2": (lambda: _lif(spike_fn=sa.MaxSpike(2)), 2.5, "exodus"),
    "maxspike-none": (lambda: _lif(spike_fn=sa.MaxSpike(None), spike_threshold=0.5), 1.5, "exodus"),
    "iaf-defaults": (lambda: sl.IAF(record_states=True), 0.6, "exodus"),
    "iaf-threshold-2": (lambda: sl.IAF(spike_threshold=2.0, record_states=True), 0.6, "exodus"),
    # grad_scale / (threshold grad_width) exactly representable: sinabs computes it in float32
    "exponential": (lambda: _lif(spike_fn=sa.SingleSpike, spike_threshold=2.0,
                                 surrogate_grad_fn=sa.SingleExponential(grad_width=0.25, grad_scale=1.5)),
                    1.0, "exodus"),
    "gaussian": (lambda: _lif(surrogate_grad_fn=sa.Gaussian(sigma=0.25, grad_scale=1.5)), 1.5, "exodus"),
    "gaussian-mu": (lambda: _lif(spike_fn=sa.SingleSpike, surrogate_grad_fn=sa.Gaussian(mu=0.1, sigma=0.5)),
                    1.0, "exodus"),
    "multigaussian": (lambda: _lif(surrogate_grad_fn=sa.MultiGaussian(grad_scale=0.75)), 1.5, "exodus"),
    "heaviside": (lambda: _lif(spike_fn=sa.SingleSpike, surrogate_grad_fn=sa.Heaviside(window=0.5)), 1.0, "exodus"),
    "periodic-exponential": (lambda: _lif(surrogate_grad_fn=sa.PeriodicExponential(grad_width=0.5, grad_scale=1.5)),
                             2.0, "exodus"),
    # one value per neuron: tau_mem, spike_threshold and subtract_value of shape (N,)
    "per-neuron": (lambda: _lif(tau_mem=torch.linspace(4.0, 20.0, N), spike_fn=sa.SingleSpike,
                                spike_threshold=torch.linspace(0.8, 1.4, N),
                                reset_fn=sa.MembraneSubtract(subtract_value=torch.linspace(0.5, 1.5, N))),
                   1.0, "exodus"),
    "per-neuron-iaf-multi": (lambda: sl.IAF(spike_threshold=torch.linspace(0.7, 1.3, N), record_states=True), 0.6,
                             "exodus"),
}


def _data(seed: int, gain: float, theta: float):
    gen = torch.Generator().manual_seed(seed)
    x = theta * gain * (0.45 + torch.randn(B, T, N, generator=gen, dtype=torch.float64))
    g = torch.randn(B, T, N, generator=gen, dtype=torch.float64)
    return x, g


def _run(layer, x, g, reset=True):
    """Spikes (float64) and dL/dx for L = sum(s * g), from rest."""
    if reset and hasattr(layer, "reset_states"):
        layer.reset_states()
    xi = x.clone().requires_grad_(True)
    s = layer(xi)
    (s * g).sum().backward()
    return s.detach().double(), xi.grad


@pytest.mark.parametrize("name", list(CONFIGS))
def test_spikes_and_gradients_equal_sinabs(name):
    make, gain, method = CONFIGS[name]
    theta = float(torch.as_tensor(make().spike_threshold).mean())
    x, g = _data(sorted(CONFIGS).index(name), gain, theta)

    # as users build it: float32 parameters (the converted layer takes sinabs' float32 alpha and threshold)
    theirs = make()
    ours = from_sinabs(theirs, method=method)
    assert isinstance(ours, SpikingLayer) and ours.model.convention in ("reset before decay", "reset after decay")
    s_theirs, g_theirs = _run(theirs, x, g)
    s_ours, g_ours = _run(ours, x, g)
    assert torch.equal(s_ours, s_theirs), f"{name}: spikes differ"
    spiking = float((s_theirs > 0).double().mean())
    assert 0.1 < spiking < 0.9, f"{name}: the input should make the neurons spike often ({spiking:.2f} of steps)"
    assert rel_err(g_ours, g_theirs) < 1e-5, f"{name}: dL/dx {rel_err(g_ours, g_theirs):.3g} (float32 spikes)"

    # float64 throughout: the same to ~1e-15
    with _default_float64():
        theirs = make().double()
        ours = from_sinabs(theirs, method=method)
        exodus = from_sinabs(theirs, method="exodus")
        theirs.spike_fn = _float64_spikes(theirs.spike_fn)
        s_theirs, g_theirs = _run(theirs, x, g)
    s_ours, g_ours = _run(ours, x, g)
    assert torch.equal(s_ours, s_theirs), f"{name}: spikes differ (float64)"
    assert rel_err(g_ours, g_theirs) < 1e-12, f"{name}: dL/dx relative error {rel_err(g_ours, g_theirs):.3g}"
    if method == "slayer":  # the exact gradient of the same spikes is another one (sinabs detaches the mask)
        _, g_exodus = _run(exodus, x, g)
        assert rel_err(g_exodus, g_theirs) > 1e-3


@pytest.mark.parametrize("name", ["lif-defaults", "subtract-value", "reset-zero", "iaf-defaults"])
def test_membrane_is_before_the_reset(name):
    """sinabs records v_mem after each step's reset; ift_snn records u[t] before it (the value compared with theta):
    sinabs' = u - theta_r s (MembraneSubtract) or u (s == 0) (MembraneReset)."""
    make, gain, method = CONFIGS[name]
    theirs = make().double()
    ours = from_sinabs(theirs, method=method)
    theirs.spike_fn = _float64_spikes(theirs.spike_fn)
    assert ours.record_states
    x, g = _data(7, gain, float(theirs.spike_threshold))
    s, _ = _run(theirs, x, g)
    _run(ours, x, g)
    v_theirs, u = theirs.recordings["v_mem"].detach(), ours.recordings["v_mem"]
    reset = theirs.reset_fn
    if isinstance(reset, sa.MembraneReset):
        want = u * (s == 0)
    else:
        want = u - s * (float(theirs.spike_threshold) if reset.subtract_value is None else reset.subtract_value)
    assert rel_err(want, v_theirs) < 1e-13
    assert rel_err(u, v_theirs) > 1e-2  # they are not the same quantity


def test_trainable_alpha_gradient_equals_sinabs():
    """train_alphas=True: sinabs trains alpha_mem, the converted layer alpha: the same gradient. By default sinabs
    trains tau_mem: dL/dtau = dL/dalpha alpha / tau^2. A frozen tau_mem stays frozen."""
    x, g = _data(11, 1.5, 1.0)
    for train_alphas, tau in ((True, 8.0), (False, 8.0), (True, torch.linspace(4.0, 20.0, N)),
                              (False, torch.linspace(4.0, 20.0, N))):
        theirs = _lif(train_alphas=train_alphas, tau_mem=tau).double()
        ours = from_sinabs(theirs)
        assert ours.trainable == ("alpha",) and ours.alpha.dtype == torch.float64
        assert ours.alpha.shape == torch.as_tensor(tau).shape
        theirs.spike_fn = _float64_spikes(theirs.spike_fn)
        s_theirs, g_theirs = _run(theirs, x, g)
        s_ours, g_ours = _run(ours, x, g)
        assert torch.equal(s_ours, s_theirs)
        assert rel_err(g_ours, g_theirs) < 1e-12
        d_alpha = ours.alpha.grad
        if train_alphas:
            want = theirs.alpha_mem.grad
        else:
            alpha, tau_now = theirs.alpha_mem_calculated.detach(), theirs.tau_mem.detach()
            want = theirs.tau_mem.grad * tau_now**2 / alpha  # dL/dalpha from sinabs' dL/dtau
        assert rel_err(d_alpha, want) <= 1e-12, (train_alphas, d_alpha, want)
    frozen = _lif()
    frozen.tau_mem.requires_grad_(False)
    assert from_sinabs(frozen).trainable == ()
    assert from_sinabs(sl.IAF()).trainable == ()


def test_stateful_carries_the_membrane_as_sinabs():
    """sinabs carries v_mem from call to call; stateful=True does the same: two halves give sinabs' spikes."""
    theirs = _lif(spike_fn=sa.SingleSpike).double()
    ours = from_sinabs(theirs, stateful=True)
    x, _ = _data(3, 1.0, 1.0)
    with torch.no_grad():
        want = torch.cat([theirs(x[:, : T // 2]), theirs(x[:, T // 2 :])], 1).double()
        got = torch.cat([ours(x[:, : T // 2]), ours(x[:, T // 2 :])], 1)
    assert torch.equal(got, want) and float(want.sum()) > 0


def test_conventions_of_the_converted_model():
    ours = from_sinabs(sl.LIF(tau_mem=10.0, norm_input=False, spike_fn=sa.MaxSpike(3),
                              reset_fn=sa.MembraneSubtract(subtract_value=0.5), spike_threshold=2.0,
                              surrogate_grad_fn=sa.SingleExponential(grad_width=0.25, grad_scale=1.5)))
    m = ours.model
    assert m.convention == "reset before decay" and m.spike == 3 and m.reset == "subtract"
    p = dict(m.params)
    assert p["theta"] == 2.0 and p["theta_r"] == 0.5
    assert p["alpha"] == float(torch.exp(-1.0 / torch.tensor(10.0)))  # sinabs' float32 alpha, as it is
    assert dict(m.surrogate.constants) == {"scale": 1.5, "width": 0.25} and m.surrogate.name == "exponential"
    assert from_sinabs(sl.IAF()).model.name == "if"
    frozen_threshold = from_sinabs(sl.IAF())
    assert frozen_threshold.trainable == () and frozen_threshold.model.spike == "multi"  # sinabs' default spike_fn
    trained = sl.IAF(spike_threshold=1.5)
    trained.spike_threshold.requires_grad_(True)
    assert from_sinabs(trained).trainable == ("theta",)
    assert from_sinabs(sl.IAF(spike_fn=sa.SingleSpike, reset_fn=sa.MembraneReset())).model.reset == "zero"


REFUSED = {
    "norm_input": (lambda: sl.LIF(tau_mem=10.0), r"norm_input=True .* \(1 - alpha\)"),
    "tau_syn": (lambda: sl.LIF(tau_mem=10.0, tau_syn=5.0, norm_input=False), "tau_syn"),
    "tau_syn IAF": (lambda: sl.IAF(tau_syn=5.0), "tau_syn"),
    "min_v_mem": (lambda: sl.LIF(tau_mem=10.0, norm_input=False, min_v_mem=-1.0), "min_v_mem"),
    "reset_value": (lambda: sl.IAF(spike_fn=sa.SingleSpike, reset_fn=sa.MembraneReset(reset_value=0.5)),
                    r"MembraneReset\(reset_value=0.5\)"),
    "reset zero multi": (lambda: sl.IAF(reset_fn=sa.MembraneReset()), "MembraneReset with spike_fn MultiSpike"),
    "maxspike 0": (lambda: sl.IAF(spike_fn=sa.MaxSpike(0)), r"MaxSpike\(max_num_spikes_per_bin=0\)"),
    "maxspike 1.5": (lambda: sl.IAF(spike_fn=sa.MaxSpike(1.5)), r"MaxSpike\(max_num_spikes_per_bin=1.5\)"),
    "no spikes": (lambda: sl.IAF(spike_fn=None), "spike_fn=None"),
    "own surrogate": (lambda: sl.IAF(surrogate_grad_fn=lambda v, thr: torch.ones_like(v)),
                      "surrogate_grad_fn <lambda>"),
    "own reset": (lambda: sl.IAF(reset_fn=lambda s, state, thr: state), "reset_fn <lambda>"),
    "squeeze": (lambda: sl.IAFSqueeze(batch_size=B), r"IAFSqueeze .*batch\*time.*sinabs.layers.IAF"),
    "squeeze LIF": (lambda: sl.LIFSqueeze(batch_size=B, tau_mem=10.0, norm_input=False), "LIFSqueeze"),
    "recurrent": (lambda: sl.LIFRecurrent(tau_mem=10.0, rec_connect=torch.nn.Linear(N, N), norm_input=False),
                  "LIFRecurrent .*rec_connect"),
}


@pytest.mark.parametrize("what", list(REFUSED))
def test_refuses_what_has_no_equal(what):
    make, message = REFUSED[what]
    with pytest.raises(ValueError, match=message):
        from_sinabs(make())


def test_refuses_other_layers_by_type():
    with pytest.raises(TypeError, match="converts a sinabs.layers.LIF or sinabs.layers.IAF, got .*ExpLeak"):
        from_sinabs(sl.ExpLeak(tau_mem=10.0))
    with pytest.raises(TypeError, match="got torch.nn.modules.linear.Linear"):
        from_sinabs(torch.nn.Linear(2, 2))


def test_converted_layer_trains_in_float32():
    """The usual float32 training step runs on the converted layer (parameters in sinabs' dtype, float32)."""
    theirs = sl.LIF(tau_mem=10.0, norm_input=False, train_alphas=True)
    ours = from_sinabs(theirs)
    assert ours.alpha.dtype == torch.float32
    x = (0.7 + torch.randn(2, 20, 4, generator=torch.Generator().manual_seed(5))).requires_grad_(True)
    ours(x).sum().backward()
    assert np.isfinite(float(ours.alpha.grad)) and x.grad.abs().sum() > 0
