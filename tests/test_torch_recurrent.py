"""The recurrent PyTorch layer (ift_snn.integrations.torch_recurrent): exact gradients against autograd through
a float64 PyTorch loop; snnTorch's RLeaky converted gives its spikes and, with method="slayer", its gradients;
stepping equals one call (spikes and gradients); streaming; layouts; torch.compile; bad input."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ift_snn  # noqa: E402
from ift_snn.integrations.torch_recurrent import RLIF, RecurrentSpikingLayer, from_snntorch_recurrent  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning", "ignore::ift_snn.UnstableModelWarning")


def _loop(layer: RecurrentSpikingLayer, x: torch.Tensor, alpha, theta):
    """The layer's LIF (reset by subtraction) written as a float64 PyTorch loop over time, spiking with the
    model's surrogate: autograd through it is BPTT through reset and recurrence."""
    model = layer.model

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            ctx.save_for_backward(v)
            return (v >= 0).to(v.dtype)

        @staticmethod
        def backward(ctx, grad):
            (v,) = ctx.saved_tensors
            return grad * torch.from_numpy(model.sigma(v.detach().numpy() + float(theta)))

    c = layer.fc(x)
    B, T, N = c.shape
    u, s, out = torch.zeros(B, N, dtype=x.dtype), torch.zeros(B, N, dtype=x.dtype), []
    for t in range(T):
        u = alpha * u + c[:, t] + s @ layer.V.T - theta * s
        s = Spike.apply(u - theta)
        out.append(s)
    return torch.stack(out, 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_gradients_equal_autograd_through_a_float64_loop(seed):
    torch.manual_seed(seed)
    layer = RLIF(0.85, 7, in_features=5, train_alpha=True, train_theta=True, recurrent_gain=2.0,
                 dtype=torch.float64)
    x = torch.rand(4, 50, 5, dtype=torch.float64) * 1.5
    g = torch.randn(4, 50, 7, dtype=torch.float64)
    ours = layer(x)
    (ours * g).sum().backward()
    got = {k: p.grad.clone() for k, p in layer.named_parameters()}
    layer.zero_grad()
    theirs = _loop(layer, x, layer.alpha, layer.theta)
    assert ours.sum() > 50 and torch.equal(ours, theirs)
    (theirs * g).sum().backward()
    for k, p in layer.named_parameters():
        assert torch.allclose(got[k], p.grad, rtol=1e-10, atol=1e-10), k


@pytest.mark.parametrize("kind", ["RLeaky", "RSynaptic"])
@pytest.mark.parametrize("one_to_one", [False, True])
def test_snntorch_recurrent_neurons_give_their_spikes_and_with_slayer_their_gradients(kind, one_to_one):
    """RLeaky (ift_snn lif) and RSynaptic (cuba_lif, the recurrent current into the synapse), all-to-all and
    one-to-one: snnTorch stepped over time gives the layer's spikes, and its gradients (the reset detached) are
    method="slayer"'s, in float32 (snnTorch's spikes are float32)."""
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(3)
    N, B, T = 6, 3, 40
    decays = {"beta": 0.85} if kind == "RLeaky" else {"alpha": 0.7, "beta": 0.85}
    if one_to_one:
        rl = getattr(snn, kind)(**decays, all_to_all=False, V=torch.linspace(-0.5, 0.8, N))
    else:
        rl = getattr(snn, kind)(**decays, linear_features=N)
        with torch.no_grad():
            rl.recurrent.weight.mul_(2)
    layer = from_snntorch_recurrent(rl, method="slayer")
    assert layer.model.name == ("lif" if kind == "RLeaky" else "cuba_lif")
    x = (torch.rand(B, T, N) * (1.2 if kind == "RLeaky" else 0.5)).requires_grad_()
    state, out = [torch.zeros(B, N)] * (2 if kind == "RLeaky" else 3), []
    for t in range(T):
        spk, *rest = rl(x[:, t], *state)
        state = [spk, *rest]
        out.append(spk)
    theirs = torch.stack(out, 1)
    ours = layer(x)
    assert ours.sum() > 20 and torch.equal(ours, theirs)
    g = torch.randn_like(ours)
    (theirs * g).sum().backward()
    want_x = x.grad.clone()
    want_V = (rl.recurrent.V.grad if one_to_one else rl.recurrent.weight.grad).clone()
    x.grad = None
    (ours * g).sum().backward()
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))  # noqa: E731
    assert rel(x.grad, want_x) < 1e-5
    assert rel(layer.v.grad if one_to_one else layer.V.grad, want_V) < 1e-5
    if not one_to_one:
        assert rel(layer.bias.grad, rl.recurrent.bias.grad) < 1e-5


def test_what_rleaky_has_that_is_not_here_is_refused():
    snn = pytest.importorskip("snntorch")
    with pytest.raises(ValueError, match="zeroes the step's input"):
        from_snntorch_recurrent(snn.RLeaky(beta=0.9, linear_features=4, reset_mechanism="zero"))
    with pytest.raises(ValueError, match="scalar V"):
        from_snntorch_recurrent(snn.RLeaky(beta=0.9, all_to_all=False, V=0.5))
    with pytest.raises(ValueError, match="zeroes the step's input"):
        from_snntorch_recurrent(snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=4, reset_mechanism="zero"))
    with pytest.raises(ValueError, match="RLeaky with inhibition=True has no equal"):
        from_snntorch_recurrent(snn.RLeaky(beta=0.9, linear_features=4, inhibition=True))
    graded = snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=4)
    graded.graded_spikes_factor = torch.tensor(2.0)
    with pytest.raises(ValueError, match="RSynaptic with graded spikes has no equal"):
        from_snntorch_recurrent(graded)
    from ift_snn.integrations.torch import from_snntorch

    with pytest.raises(ValueError, match="Leaky with state_quant has no equal"):
        from_snntorch(snn.Leaky(beta=0.9, state_quant=lambda x: x))
    with pytest.raises(TypeError, match="RLeaky"):
        from_snntorch_recurrent(snn.Leaky(beta=0.9))


def test_steps_equal_one_call_in_spikes_and_gradients():
    torch.manual_seed(1)
    layer = RLIF(0.9, 6, in_features=4, recurrent_gain=2.0, dtype=torch.float64)
    x = torch.randn(3, 30, 4, dtype=torch.float64)
    g = torch.randn(3, 30, 6, dtype=torch.float64)
    whole = layer(x)
    (whole * g).sum().backward()
    want = {k: p.grad.clone() for k, p in layer.named_parameters()}
    layer.zero_grad()
    steps = torch.stack([layer.step(x[:, t]) for t in range(30)], 1)
    assert whole.sum() > 10 and torch.equal(whole, steps)
    (steps * g).sum().backward()
    for k, p in layer.named_parameters():
        assert torch.allclose(p.grad, want[k], rtol=1e-12, atol=1e-12), k


def test_a_stateful_layer_continues_the_sequence_and_time_first_is_the_same():
    torch.manual_seed(2)
    model = ift_snn.get_model("alif")
    layer = RecurrentSpikingLayer(model, 5, in_features=3, stateful=True, recurrent_gain=2.0, dtype=torch.float64)
    x = torch.randn(2, 40, 3, dtype=torch.float64) * 2
    with torch.no_grad():
        halves = torch.cat([layer(x[:, :15]), layer(x[:, 15:])], 1)
        layer.reset_states()
        whole = layer(x)
        layer.reset_states()
        layer.batch_first = False
        first = layer(x.transpose(0, 1)).transpose(0, 1)
    assert whole.sum() > 5 and torch.equal(halves, whole) and torch.equal(first, whole)


@pytest.mark.parametrize("method", ["exodus", "slayer"])
def test_torch_compile_fullgraph_runs_the_custom_op_with_the_same_gradients(method):
    """Under torch.compile(fullgraph=True) the scan is the custom op ift_snn::recurrent_scan: the same spikes and
    the same gradients (W, V, alpha, theta) as the eager layer."""
    torch.manual_seed(0)
    layer = RLIF(0.9, 5, in_features=3, recurrent_gain=2.0, train_alpha=True, train_theta=True, method=method,
                 dtype=torch.float64)
    x = torch.randn(2, 20, 3, dtype=torch.float64) * 2
    g = torch.randn(2, 20, 5, dtype=torch.float64)
    want = layer(x)
    (want * g).sum().backward()
    eager = {k: p.grad.clone() for k, p in layer.named_parameters()}
    layer.zero_grad()
    got = torch.compile(layer, backend="aot_eager", fullgraph=True)(x)
    assert want.sum() > 5 and torch.equal(got, want)
    (got * g).sum().backward()
    for k, p in layer.named_parameters():
        assert torch.allclose(p.grad, eager[k], rtol=1e-12, atol=1e-12), k


def test_a_stateful_layer_under_torch_compile_runs_eagerly_with_a_graph_break():
    torch.manual_seed(0)
    layer = RLIF(0.9, 5, in_features=3, recurrent_gain=2.0, stateful=True)
    x = torch.randn(2, 20, 3) * 2
    want = [layer(x), layer(x)]  # the second call continues from the first's state
    eager_state = layer.state.clone()
    layer.reset_states()
    compiled = torch.compile(layer, backend="eager")
    got = [compiled(x), compiled(x)]
    assert not torch.equal(want[0], want[1])  # the carried state changes the second call
    assert all(torch.equal(a, b) for a, b in zip(got, want)) and torch.equal(layer.state, eager_state)


def test_bad_input_is_refused_naming_the_value():
    layer = RLIF(0.9, 5, in_features=3)
    with pytest.raises(ValueError, match="last dimension is 4, expected in_features = 3"):
        layer(torch.zeros(2, 10, 4))
    with pytest.raises(TypeError, match=r"recurrent weights are torch\.float32 but the input current is torch\.float64"):
        RLIF(0.9, 5)(torch.zeros(2, 10, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="neurons=0"):
        RLIF(0.9, 0)
    with pytest.raises(ValueError, match="connectivity"):
        RLIF(0.9, 4, connectivity="sparse")
    with pytest.raises(ValueError, match="3-D input"):
        RLIF(0.9, 5)(torch.zeros(2, 3, 10, 5))


@pytest.mark.gpu
def test_the_layer_on_cuda_equals_the_layer_on_the_cpu():
    """CUDA tensors through the CuPy kernels (one block per sample): the CPU layer's spikes and gradients."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    cpu = RLIF(0.9, 64, in_features=16, recurrent_gain=2.0, train_alpha=True, dtype=torch.float64)
    gpu = RLIF(0.9, 64, in_features=16, recurrent_gain=2.0, train_alpha=True, dtype=torch.float64)
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    x = torch.randn(4, 80, 16, dtype=torch.float64) * 2
    g = torch.randn(4, 80, 64, dtype=torch.float64)
    want = cpu(x)
    (want * g).sum().backward()
    got = gpu(x.cuda())
    (got * g.cuda()).sum().backward()
    assert want.sum() > 10 and torch.equal(got.cpu(), want)
    for (k, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        assert torch.allclose(q.grad.cpu(), p.grad, rtol=1e-10, atol=1e-12), k
