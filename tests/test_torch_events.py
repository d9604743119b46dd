"""The PyTorch layer of continuous-time neurons: exact gradients (gradcheck = central differences), learnable
delays and kernel parameters, training steps, conversion from and to time bins, bad input."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ift_snn.events import SpikeTrain  # noqa: E402
from ift_snn.events.srm import EventSRM, backward_srm, simulate_srm  # noqa: E402
from ift_snn.integrations.torch_events import EventSRMLayer, SpikeTimes, bins_to_times, times_to_bins  # noqa: E402

pytestmark = pytest.mark.torch


def _finite(o):
    return torch.where(torch.isfinite(o), o, torch.zeros_like(o))


def _inputs(seed, B=2, C=4, S=3, t_max=8.0):
    g = torch.Generator().manual_seed(seed)
    return torch.sort(torch.rand(B, C, S, generator=g, dtype=torch.float64) * t_max, dim=2).values


@pytest.mark.parametrize("name", ["lif", "alpha", "adaptive"])
def test_gradcheck_every_input(name):
    layer = EventSRMLayer(4, 3, EventSRM.named(name, backend="python", max_spikes=32), delays=True, axonal=True,
                          seed=1, weight_mean=1.5 if name != "alpha" else 3.0)
    x = _inputs(0).requires_grad_()
    w = layer.weight.detach().clone().requires_grad_()
    d = layer.delay.detach().clone().requires_grad_()
    a = layer.axonal_delay.detach().clone().requires_grad_()
    p = layer.kernel_params().detach().clone().requires_grad_()
    out = SpikeTimes.apply(x, w, d, a, p, layer.model)
    assert torch.isfinite(out).sum() >= 6  # the layer fires: the check covers real spikes
    assert torch.autograd.gradcheck(lambda *args: _finite(SpikeTimes.apply(*args, layer.model)), (x, w, d, a, p),
                                    eps=1e-6, atol=1e-6, rtol=1e-5)


def test_layer_backward_equals_the_numpy_api_and_clamps_delays():
    model = EventSRM.named("lif", backend="python", max_spikes=32)
    layer = EventSRMLayer(4, 3, model, delays=True, learn=("tau", "theta"), seed=2, weight_mean=1.5)
    with torch.no_grad():
        layer.delay[0, 0] = -0.3  # acts as 0, gradient 0 through the clamp
    x = _inputs(1)
    out = layer(x)
    g = torch.cos(_finite(out)).detach()
    (torch.where(torch.isfinite(out), out, torch.zeros_like(out)) * g).sum().backward()
    d = np.clip(layer.delay.detach().numpy(), 0, None)
    tr = simulate_srm(model, layer.weight.detach().numpy(), SpikeTrain(x.numpy(), np.isfinite(x.numpy()).sum(2)),
                      delays=d)
    np.testing.assert_array_equal(tr.out.times, out.detach().numpy())
    ref = backward_srm(tr, np.where(np.isfinite(tr.out.times), g.numpy(), 0.0))
    np.testing.assert_allclose(layer.weight.grad.numpy(), ref.w, rtol=1e-12, atol=1e-14)
    want_d = ref.delays.copy()
    want_d[0, 0] = 0.0
    np.testing.assert_allclose(layer.delay.grad.numpy(), want_d, rtol=1e-12, atol=1e-14)
    assert ref.delays[0, 0] != 0.0  # the clamp is what zeroes it
    assert layer.tau.grad.item() == pytest.approx(ref.params["tau"], rel=1e-12)
    assert layer.theta.grad.item() == pytest.approx(ref.params["theta"], rel=1e-12)


def test_training_steps_move_first_spikes_toward_targets():
    torch.manual_seed(0)
    model = EventSRM.named("lif", backend="python", max_spikes=64)
    net = torch.nn.Sequential(EventSRMLayer(4, 6, model, delays=True, seed=3, weight_mean=0.8),
                              EventSRMLayer(6, 2, model, axonal=True, seed=4, weight_mean=0.6))
    x = _inputs(5, B=4)
    target = torch.tensor([4.0, 6.0], dtype=torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)

    def loss_fn():
        first = net(x)[:, :, 0]
        first = torch.where(torch.isfinite(first), first, torch.full_like(first, 20.0))
        return ((first - target) ** 2).mean()

    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_bins_and_times_round_trip_and_discrete_layer_next_to_it():
    raster = torch.zeros(2, 10, 3)
    raster[0, 2, 0] = 1
    raster[0, 7, 0] = 1
    raster[1, 4, 2] = 2
    t = bins_to_times(raster, dt=0.5)
    assert t.shape == (2, 3, 2)
    assert t[0, 0].tolist() == [1.0, 3.5] and t[1, 2].tolist() == [2.0, 2.0]
    assert torch.isinf(t[0, 1]).all()
    torch.testing.assert_close(times_to_bins(t, 10, 0.5), raster)
    # a discrete layer's spikes, binned -> times -> the event layer
    from ift_snn.integrations.torch import LIF

    lif = LIF(alpha=0.9, theta=0.5)
    s = lif(torch.rand(2, 10, 3) * 2)
    out = EventSRMLayer(3, 2, EventSRM.named("lif", backend="python"), seed=0, weight_mean=2.0)(
        bins_to_times(s.detach(), dt=1.0).double())
    assert out.shape[:2] == (2, 2)


def test_bad_input_is_refused():
    layer = EventSRMLayer(3, 2, EventSRM.named("lif", backend="python"), learn=("tau",), seed=0)
    with pytest.raises(ValueError, match=r"input has 4 channels .*expected 3"):
        layer(torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match="not sorted"):
        layer(torch.tensor([[[2.0, 1.0], [0.0, 1.0], [1.0, 2.0]]], dtype=torch.float64))
    with pytest.raises(ValueError, match="is NaN"):
        layer(torch.tensor([[[float("nan")], [0.0], [1.0]]], dtype=torch.float64))
    with pytest.raises(TypeError, match="expected floating point"):
        layer(torch.zeros(1, 3, 2, dtype=torch.int64))
    with torch.no_grad():
        layer.tau.fill_(-1.0)
    with pytest.raises(ValueError, match="tau"):
        layer(torch.zeros(1, 3, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"learn=\('tau_m',\)"):
        EventSRMLayer(3, 2, "lif", learn=("tau_m",))
    with pytest.raises(ValueError, match="max_delay"):
        EventSRMLayer(3, 2, "lif", delays=True, max_delay=-1.0)
    with pytest.raises(ValueError, match="expected one of lif, alpha, adaptive"):
        EventSRMLayer(3, 2, "izhikevich")
    with pytest.raises(ValueError, match="whole spike counts"):
        bins_to_times(torch.full((1, 2, 2), 0.5))


def test_recurrent_layer_gradcheck_and_error_on_dropped_spikes():
    model = EventSRM.named("lif", backend="python", max_spikes=32)
    layer = EventSRMLayer(3, 3, model, delays=True, recurrent=True, seed=6, weight_mean=1.5, recurrent_std=0.5)
    x = _inputs(7, C=3).requires_grad_()
    args = [x, layer.weight.detach().clone().requires_grad_(), layer.delay.detach().clone().requires_grad_(), None,
            layer.kernel_params().detach().clone().requires_grad_(),
            layer.recurrent_weight.detach().clone().requires_grad_(),
            layer.recurrent_delay.detach().clone().requires_grad_()]
    out = SpikeTimes.apply(*args[:5], model, *args[5:])
    plain = SpikeTimes.apply(*args[:5], model)
    assert torch.isfinite(out).sum() >= 6 and not torch.equal(out, plain)  # recurrence changes the spikes

    def f(x_, w_, d_, p_, v_, r_):
        return _finite(SpikeTimes.apply(x_, w_, d_, None, p_, model, v_, r_))

    assert torch.autograd.gradcheck(f, tuple(a for a in args if a is not None), eps=1e-6, atol=1e-6, rtol=1e-5)
    loud = EventSRMLayer(3, 3, model.with_(max_spikes=2), recurrent=True, seed=6, weight_mean=3.0)
    with pytest.warns(RuntimeWarning, match="reached max_spikes=2 and were silenced"):
        capped = loud(x.detach())
    assert (torch.isfinite(capped).sum(dim=2) <= 2).all() and torch.isfinite(capped).sum() > 0
    # the gradient is exact for the capped network
    cap_args = (x.detach().clone().requires_grad_(), loud.weight.detach().clone().requires_grad_(),
                loud.recurrent_weight.detach().clone().requires_grad_())
    p = loud.kernel_params().detach()
    dr = loud.recurrent_delay.detach().clamp(min=loud.min_recurrent_delay)
    with pytest.warns(RuntimeWarning):
        assert torch.autograd.gradcheck(
            lambda x_, w_, v_: _finite(SpikeTimes.apply(x_, w_, None, None, p, loud.model, v_, dr)), cap_args,
            eps=1e-6, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="min_recurrent_delay=0"):
        EventSRMLayer(3, 3, "lif", recurrent=True, min_recurrent_delay=0)
