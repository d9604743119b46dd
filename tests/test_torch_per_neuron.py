"""The PyTorch layer with parameters given one value per neuron (snnTorch's and sinabs' per-neuron beta /
tau_mem / threshold): spikes equal those of one scalar layer per neuron; dL/dx and dL/dp per neuron equal the
float64 oracle run neuron by neuron (1e-10 in float64); trainable, fixed (buffers), broadcast over
(*neurons), under torch.compile, with a carried state, and refused with a clear error when the shape does
not fit."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ift_snn  # noqa: E402
from ift_snn.backends import reference  # noqa: E402
from ift_snn.integrations.torch import CUBALIF, IF, LIF, SpikingLayer  # noqa: E402

F64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")


def _data(B=3, T=30, neurons=(4,), seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = 0.5 + 0.8 * torch.randn(B, T, *neurons, dtype=F64, generator=gen)
    return x, torch.randn(B, T, *neurons, dtype=F64, generator=gen)


def _oracle(model, x, g, values, method="exodus"):
    """(spikes, dL/dx, {p: dL/dp of the layer's parameter}) by the reference sweep, one neuron (and batch
    element) at a time with that neuron's scalar values; dL/dp of a per-neuron parameter summed over the batch."""
    B, T, *neurons = x.shape
    N = int(np.prod(neurons))
    model = model.with_params(**{k: float(v.detach()) for k, v in values.items() if v.numel() == 1})  # as the layer
    values = {k: v for k, v in values.items() if v.numel() > 1}
    xs, gs = x.reshape(B, T, N).numpy(), g.reshape(B, T, N).numpy()
    full = {k: np.broadcast_to(v.detach().double().numpy(), tuple(neurons)).reshape(N) for k, v in values.items()}
    spikes, grad_x = np.empty((B, T, N)), np.empty((B, T, N))
    grads = {k: np.zeros(N) if k in full else 0.0 for k in model.parameter_names}
    sweep = reference.bptt if method == "exodus" else reference.slayer
    for j in range(N):
        mj = model.with_params(**{k: float(v[j]) for k, v in full.items()})
        col = lambda z: np.ascontiguousarray(z[:, :, j].T)  # noqa: E731 - (T, B): the batch as neurons
        spikes[:, :, j] = reference.simulate(mj, col(xs))[1].T
        ref = sweep(mj, col(xs), col(gs))
        grad_x[:, :, j] = ref.a.T
        for k, v in ref.params.items():
            grads[k] = grads[k] + (np.eye(N)[j] * v if k in full else v)
    shape = lambda z: torch.from_numpy(z.reshape(B, T, *neurons))  # noqa: E731
    return shape(spikes), shape(grad_x), grads


def _close(got, want, what):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = float(np.max(np.abs(want))) or 1.0
    err = float(np.max(np.abs(got - want))) / scale
    assert err <= 1e-10, f"{what}: relative error {err:.3g}"


@pytest.mark.parametrize("case, method", [("lif", "exodus"), ("lif", "slayer"), ("lif_reset_before_decay", "exodus"),
                                          ("if", "slayer"), ("cuba", "exodus")])
def test_trainable_per_neuron_parameters_equal_the_oracle(case, method):
    x, g = _data(seed=len(case))
    alpha = torch.tensor([0.7, 0.8, 0.9, 1.0], dtype=F64)
    theta = torch.tensor([0.6, 0.9, 1.1, 1.4], dtype=F64)
    layer = {"lif": lambda: LIF(alpha, theta, train_alpha=True, train_theta=True, method=method),
             "lif_reset_before_decay": lambda: LIF(alpha, theta, theta_r=0.7, reset_before_decay=True,
                                                   train_alpha=True, train_theta=True, method=method),
             "if": lambda: IF(theta, train_theta=True, method=method),
             "cuba": lambda: CUBALIF(alpha, 0.6, theta, train_alpha=True, train_theta=True, method=method)}[case]()
    layer.to(F64)  # (a one-value parameter is made in the default dtype: its gradient in float64 too)
    values = {k: getattr(layer, k) for k in layer.trainable}
    assert all(getattr(layer, k).shape == ((4,) if k != "alpha_syn" else ()) for k in layer.trainable)
    xi = x.clone().requires_grad_(True)
    s = layer(xi)
    (s * g).sum().backward()
    spikes, grad_x, grads = _oracle(layer.model, x, g, values, method)
    assert torch.equal(s, spikes) and s.any()
    _close(xi.grad, grad_x, "dL/dx")
    for k in layer.trainable:
        _close(getattr(layer, k).grad, grads[k], f"dL/d{k}")


def test_the_issue_example_and_fixed_values_are_buffers():
    """LIF(torch.full((4,), 0.9)) (failed before): a buffer, saved in the state_dict, moved by .to(); the
    spikes of per-neuron values equal those of one scalar layer per neuron."""
    layer = LIF(torch.full((4,), 0.9))
    assert layer.per_neuron == ("alpha",) and "alpha" in dict(layer.named_buffers())
    assert "alpha" in layer.state_dict() and layer.to(F64).alpha.dtype == F64
    x, _ = _data()
    with torch.no_grad():
        mixed = LIF(torch.tensor([0.6, 0.75, 0.9, 1.0]))(x)
        for j, a in enumerate([0.6, 0.75, 0.9, 1.0]):
            assert torch.equal(mixed[..., j], LIF(a)(x[..., j:j + 1])[..., 0])


def test_values_broadcast_over_neuron_dimensions():
    """A (C, 1) threshold over (C, H) neurons: dL/dtheta summed over the batch and over H."""
    x, g = _data(B=2, T=20, neurons=(3, 5), seed=4)
    theta = torch.tensor([[0.8], [1.0], [1.2]], dtype=F64)
    layer = LIF(0.9, theta, train_theta=True)
    s = layer(x)
    (s * g).sum().backward()
    spikes, _, grads = _oracle(layer.model, x, g, {"theta": theta})
    assert torch.equal(s, spikes)
    per_neuron = grads["theta"].reshape(3, 5).sum(axis=1, keepdims=True)
    _close(layer.theta.grad, per_neuron, "dL/dtheta")


def test_compiled_and_stateful_layers_with_per_neuron_values():
    x, g = _data(T=40, seed=7)
    alpha = torch.tensor([0.7, 0.8, 0.9, 1.0], dtype=F64)
    eager = LIF(alpha, train_alpha=True)
    s = eager(x)
    (s * g).sum().backward()
    compiled_layer = LIF(alpha, train_alpha=True)
    c = torch.compile(compiled_layer, fullgraph=True, backend="aot_eager")
    s2 = c(x)
    (s2 * g).sum().backward()
    assert torch.equal(s, s2)
    torch.testing.assert_close(compiled_layer.alpha.grad, eager.alpha.grad, rtol=0, atol=0)
    stream = CUBALIF(alpha, torch.tensor([0.5, 0.6, 0.7, 0.8], dtype=F64), stateful=True)
    with torch.no_grad():
        whole = CUBALIF(alpha, torch.tensor([0.5, 0.6, 0.7, 0.8], dtype=F64))(x)
        parts = torch.cat([stream(x[:, :15]), stream(x[:, 15:])], dim=1)
    assert torch.equal(whole, parts)


def test_step_with_per_neuron_values_equals_the_sequence():
    x, _ = _data(T=12, seed=9)
    layer = LIF(torch.tensor([0.7, 0.8, 0.9, 1.0], dtype=F64))
    with torch.no_grad():
        steps = torch.stack([layer.step(x[:, t]) for t in range(x.shape[1])], dim=1)
        assert torch.equal(steps, layer(x))


def test_bad_per_neuron_values_are_named():
    with pytest.raises(ValueError, match=r"alpha=1.5 is out of range"):
        LIF(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="values has 'tau', which is not a parameter"):
        SpikingLayer(ift_snn.lif(0.9), values={"tau": torch.ones(3)})
    with pytest.raises(ValueError, match=r"values\['theta'\] holds NaN"):
        LIF(0.9, torch.tensor([1.0, float("nan")]))
    layer = LIF(torch.full((4,), 0.9))
    with pytest.raises(ValueError, match=r"parameter alpha has shape \(4,\), which does not broadcast to the neuron "
                                         r"shape \(3,\)"):
        layer(torch.rand(2, 5, 3))
    trained = LIF(torch.full((3,), 0.9), train_alpha=True)
    with torch.no_grad():
        trained.alpha[1] = 1.2
    with pytest.raises(ValueError, match=r"params\['alpha'\] holds 1.2\d*, out of range .*clamp"):
        trained(torch.rand(2, 5, 3))


@pytest.mark.gpu
def test_cuda_per_neuron_values_and_steps_equal_the_cpu():
    """On a GPU (CuPy kernels): per-neuron trainable values, and stepping with gradients through the state,
    give the CPU's spikes and gradients (float64, 1e-12)."""
    pytest.importorskip("cupy")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device")
    x, g = _data(B=4, T=30, neurons=(64,), seed=21)
    alpha = torch.linspace(0.7, 1.0, 64, dtype=F64)
    results = {}
    for device in ("cpu", "cuda"):
        layer = LIF(alpha, torch.linspace(0.8, 1.2, 64, dtype=F64), train_alpha=True, train_theta=True).to(device)
        xi = x.to(device).requires_grad_(True)
        s = layer(xi)
        (s * g.to(device)).sum().backward()
        stepper = CUBALIF(alpha, 0.7, train_alpha=True).to(device, F64)
        xs = x.to(device).requires_grad_(True)
        ss = torch.stack([stepper.step(xs[:, t]) for t in range(x.shape[1])], 1)
        (ss * g.to(device)).sum().backward()
        results[device] = [t.detach().cpu() for t in (s, xi.grad, layer.alpha.grad, layer.theta.grad, ss, xs.grad,
                                                      stepper.alpha_mem.grad)]
    for got, want in zip(results["cuda"], results["cpu"]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
