"""torch.compile over the PyTorch layer: the scan as the custom op ``ift_snn::spike_scan`` (fake-tensor shapes
and autograd registered), so that ``fullgraph=True`` captures a whole network. Compiled with the aot_eager
backend here (graph capture, fake tensors and the autograd formula, without inductor's C++ compile, which
took 20 s on 2 cores for this network; its results agreed to 9e-14)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import ift_snn  # noqa: E402
from ift_snn.integrations.torch import LIF, SpikingLayer  # noqa: E402


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 10, dtype=torch.float64), LIF(0.9, train_alpha=True, train_theta=True),
                               torch.nn.Linear(10, 3, dtype=torch.float64),
                               SpikingLayer(ift_snn.get_model("alpha_srm"), method="slayer"))


def _run(module, net, x):
    for p in net.parameters():
        p.grad = None
    out = module(x)
    (out * torch.linspace(-1, 1, out.shape[1], dtype=out.dtype)[None, :, None]).sum().backward()
    return out.detach(), {k: p.grad.clone() for k, p in net.named_parameters()}


def test_fullgraph_compile_gives_the_eager_spikes_and_gradients():
    net = _net()
    x = 2.0 * (torch.rand(4, 30, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) < 0.4).double()
    want, grads = _run(net, net, x)
    got, compiled_grads = _run(torch.compile(net, fullgraph=True, backend="aot_eager"), net, x)
    assert want.sum() > 0 and torch.equal(got, want)
    for k, g in grads.items():
        assert g.abs().sum() > 0, k
        torch.testing.assert_close(compiled_grads[k], g, rtol=0, atol=0, msg=f"dL/d{k}")
    graphs = []

    def recording(gm, inputs):  # the captured graph, run as it is
        graphs.append(str(gm.graph))
        return gm.forward

    torch._dynamo.reset()
    _run(torch.compile(net, fullgraph=True, backend=recording), net, x)
    assert len(graphs) == 1 and graphs[0].count("ift_snn.spike_scan") == 2  # both layers are the custom op


def test_compiled_layer_with_an_initial_membrane():
    layer = LIF(0.8, train_alpha=True)
    gen = torch.Generator().manual_seed(2)
    x = (0.4 + 0.5 * torch.randn(3, 20, 5, dtype=torch.float64, generator=gen)).requires_grad_(True)
    u0 = (0.3 * torch.randn(3, 5, dtype=torch.float64, generator=gen)).requires_grad_(True)
    call = lambda a, u: (layer(a, u) * torch.arange(20, dtype=a.dtype)[None, :, None]).sum()  # noqa: E731
    grads = torch.autograd.grad(call(x, u0), (x, u0, layer.alpha))
    compiled = torch.compile(call, fullgraph=True, backend="aot_eager")
    for got, want in zip(torch.autograd.grad(compiled(x, u0), (x, u0, layer.alpha)), grads):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("per_neuron", [False, True])
def test_the_custom_op_passes_opcheck(per_neuron):
    """torch.library.opcheck: schema, fake tensor, autograd registration and AOT dispatch of the op (with a
    per-neuron theta: the op's list of per-neuron tensors)."""
    theta = torch.tensor([0.8, 1.0, 1.2], dtype=torch.float64) if per_neuron else 1.0
    layer = LIF(0.9, theta, train_alpha=True, train_theta=per_neuron)
    x = (0.4 + 0.5 * torch.randn(2, 12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    params = layer.alpha.detach().reshape(1).clone().requires_grad_(True)
    per = [layer.theta.detach().clone().requires_grad_(True)] if per_neuron else []
    torch.library.opcheck(torch.ops.ift_snn.spike_scan.default,
                          (x.requires_grad_(True), None, None, params, per, layer._op_key, "exodus", 0))


@pytest.mark.parametrize("fullgraph", [False, True])
@pytest.mark.parametrize("options", [{"stateful": True}, {"record_states": True}, {"method": "bptt"}])
def test_options_the_custom_op_does_not_take_run_uncompiled(options, fullgraph):
    """A stateful or recording layer (or the bptt reference) under torch.compile runs eagerly behind a graph break:
    the same spikes, state and recordings as uncompiled (it crashed inside Dynamo: 'exception table entry ...')."""
    torch.manual_seed(0)
    x = torch.rand(2, 12, 3, dtype=torch.float64)
    compiled, eager = LIF(0.9, **options), LIF(0.9, **options)
    run = torch.compile(compiled, fullgraph=fullgraph, backend="aot_eager")
    for _ in range(2):  # a stateful layer carries its state into the second call
        assert torch.equal(run(x), eager(x))
    if options.get("stateful"):
        assert torch.equal(compiled.state, eager.state)
    if options.get("record_states"):
        assert torch.equal(compiled.recordings["v_mem"], eager.recordings["v_mem"])
