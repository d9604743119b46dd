"""The PyTorch integration: SpikingLayer / spike_scan against plain PyTorch autograd BPTT written here.

Claims checked (float64 unless stated):
- gradcheck of spikes w.r.t. input, alpha, theta, u0 with the smooth (sigmoid-primitive) spike;
- EXODUS gradients (input, u0, alpha(s), theta) equal a PyTorch time loop with a surrogate spike
  Function, to 1e-10 relative, for single / multi spikes, reset after / before decay, clip, reset to
  zero, IF and CUBA; SLAYER equals the loop with the reset term detached; truncation and "bptt" too;
- streaming (every model, SRM kernels too): calls of T/2 reproduce one call of T (spikes exactly; the
  input gradient equals one call with truncation=T/2, the second half's equals the untruncated one;
  parameter gradients hold the carried state fixed), reset_states restarts; dL/dstate is ops' dL/dx0;
- a Linear -> LIF -> Linear -> LIF network trains (loss falls); Conv2d batch-time folding has the right shapes;
- bad input is refused with the right exception and a message naming the value;
- on a GPU (marker gpu): the same equalities on CUDA tensors, CuPy arrays handed to ops, no host copy.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ift_snn  # noqa: E402
from ift_snn import ops  # noqa: E402
from ift_snn.neurons import surrogates
from ift_snn.integrations import torch as tint  # noqa: E402
from ift_snn.integrations.torch import CUBALIF, IF, LIF, SpikingLayer, spike_scan  # noqa: E402

from .conftest import rel_err  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")]

F64 = torch.float64
RTOL = 1e-10
SCALE, WIDTH = 1.0, 0.5  # the exponential surrogate the loop oracle writes out, given to every model below
SG = surrogates.exponential(SCALE, WIDTH)


# ------------------------------------------------------------ the loop oracle
class _Spike(torch.autograd.Function):
    """s = 1[u >= theta] or max(floor(u/theta), 0); backward: the exponential surrogate,
    ds/dtheta := -sigma (single) or -(u/theta) sigma (multi)."""

    @staticmethod
    def forward(ctx, u, theta, multi):
        ctx.save_for_backward(u, theta)
        ctx.multi = multi
        if multi:
            return torch.clamp(torch.floor(u / theta), min=0)
        return (u >= theta).to(u.dtype)

    @staticmethod
    def backward(ctx, g):
        u, theta = ctx.saved_tensors
        w = WIDTH * theta
        sigma = SCALE / w * torch.exp(-(u - theta).abs() / w)
        kappa = u / theta if ctx.multi else 1.0
        return g * sigma, -(g * kappa * sigma).sum(), None


def bptt_loop(x, alpha, theta, *, u0=None, alpha_syn=None, spike="single", before_decay=False,
              reset="subtract", u_min=None, detach_reset=False, truncation=None):
    """Plain autograd BPTT, x (B, T, *N); theta is also the reset amount."""
    u = torch.zeros_like(x[:, 0]) if u0 is None else u0
    s = torch.zeros_like(x[:, 0])
    i = torch.zeros_like(x[:, 0])
    out = []
    for n in range(x.shape[1]):
        if truncation and n and n % truncation == 0:
            u, s = u.detach(), s.detach()
        i = x[:, n] if alpha_syn is None else alpha_syn * i + x[:, n]
        r = s.detach() if detach_reset else s
        if reset == "zero":
            pre = alpha * u * (1 - r) + i
        elif before_decay:
            pre = alpha * (u - theta * r) + i
        else:
            pre = alpha * u + i - theta * r
        if u_min is not None:
            pre = torch.where(pre > u_min, pre, torch.full_like(pre, u_min))
        u = pre
        s = _Spike.apply(u, theta, spike == "multi")
        out.append(s)
    return torch.stack(out, 1)


# name: (model, loop options, input mean, std)
CASES = {
    "single": (lambda: ift_snn.lif(0.9, surrogate=SG), {}, 0.3, 0.6),
    "multi": (lambda: ift_snn.lif(0.9, surrogate=SG, spike="multi"), {"spike": "multi"}, 0.5, 1.2),
    "before_decay": (lambda: ift_snn.lif(0.9, surrogate=SG, reset_before_decay=True), {"before_decay": True},
                     0.3, 0.6),
    "clip": (lambda: ift_snn.lif(0.9, surrogate=SG, u_min=-0.3), {"u_min": -0.3}, 0.2, 0.8),
    "reset_zero": (lambda: ift_snn.lif(0.9, surrogate=SG, reset="zero"), {"reset": "zero"}, 0.3, 0.6),
    "if": (lambda: ift_snn.if_neuron(1.0, surrogate=SG), {}, 0.2, 0.6),
    "cuba": (lambda: ift_snn.cuba_lif(0.9, 0.7, surrogate=SG), {}, 0.15, 0.4),
}


def _data(name, B=3, T=30, N=4, device="cpu", seed=0):
    _, _, mean, std = CASES[name]
    gen = torch.Generator().manual_seed(seed)
    x = mean + std * torch.randn(B, T, N, generator=gen, dtype=F64)
    g = torch.randn(B, T, N, generator=gen, dtype=F64)
    u0 = 0.4 * torch.randn(B, N, generator=gen, dtype=F64)
    return x.to(device), g.to(device), u0.to(device)


def _layer(name, device="cpu", **kw):
    model = CASES[name][0]()
    train_alpha = any(k.startswith("alpha") for k in model.parameter_names)
    return SpikingLayer(model, train_alpha=train_alpha, train_theta=True, **kw).to(device=device, dtype=F64)


def _loop_params(layer):
    """Leaf copies of the layer's parameter values for the loop (alpha = 1 for IF)."""
    p = {k: getattr(layer, k).detach().clone().requires_grad_(True) for k in layer.trainable}
    alpha = p.get("alpha", p.get("alpha_mem", 1.0))
    return p, alpha


def _compare(name, method="exodus", truncation=None, device="cpu", with_u0=True):
    """Layer vs loop: spikes equal, every gradient to RTOL; returns the layer's spikes."""
    x, g, u0 = _data(name, device=device)
    opts = dict(CASES[name][1])
    layer = _layer(name, device, method=method, truncation=truncation)
    xl, u0l = x.clone().requires_grad_(True), u0.clone().requires_grad_(True)
    s = layer(xl, u0l if with_u0 else None)
    (s * g).sum().backward()

    p, alpha = _loop_params(layer)
    xr, u0r = x.clone().requires_grad_(True), u0.clone().requires_grad_(True)
    sr = bptt_loop(xr, alpha, p["theta"], u0=u0r if with_u0 else None, alpha_syn=p.get("alpha_syn"),
                   detach_reset=method == "slayer", truncation=truncation, **opts)
    (sr * g).sum().backward()

    assert s.shape == x.shape and s.dtype == F64 and s.device == x.device
    assert torch.equal(s, sr), f"{name}: spikes differ"
    assert 0 < float(s.detach().sum()) < s.numel(), f"{name}: no spikes or all spikes, the test would be weak"
    assert rel_err(xl.grad.cpu().numpy(), xr.grad.cpu().numpy()) <= RTOL, f"{name} {method}: dL/dx"
    if with_u0:
        assert rel_err(u0l.grad.cpu().numpy(), u0r.grad.cpu().numpy()) <= RTOL, f"{name} {method}: dL/du0"
    want = {k: float(v.grad) for k, v in p.items()}
    scale = max(abs(v) for v in want.values())
    for k, v in want.items():
        got = getattr(layer, k).grad
        assert got.shape == () and got.device == x.device
        assert abs(float(got) - v) <= RTOL * scale, f"{name} {method}: dL/d{k} {float(got)!r} vs {v!r}"
    return s


# --------------------------------------------------------------- gradients
def test_gradcheck_smooth_spike():
    model = ift_snn.lif(0.9, spike="smooth", surrogate=surrogates.sigmoid(slope=4.0))
    gen = torch.Generator().manual_seed(0)
    x = (0.4 + 0.6 * torch.randn(2, 12, 3, generator=gen, dtype=F64)).requires_grad_(True)
    u0 = (0.3 * torch.randn(2, 3, generator=gen, dtype=F64)).requires_grad_(True)
    alpha = torch.tensor(0.85, dtype=F64, requires_grad=True)
    theta = torch.tensor(0.9, dtype=F64, requires_grad=True)

    def f(x, u0, alpha, theta):
        return spike_scan(model, x, u0, params={"alpha": alpha, "theta": theta})[0]

    assert torch.autograd.gradcheck(f, (x, u0, alpha, theta), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_exodus_equals_torch_bptt(name):
    s = _compare(name, "exodus")
    if name == "multi":
        assert float(s.detach().max()) >= 2, "multi-spike case never emits more than one spike"


@pytest.mark.parametrize("name", ["single", "multi", "before_decay", "reset_zero", "cuba"])
def test_slayer_equals_torch_bptt_with_detached_reset(name):
    _compare(name, "slayer")


def test_exodus_differs_from_slayer():
    """The reset term matters on these inputs (else the two tests above would not tell them apart)."""
    x, g, _ = _data("single")
    grads = []
    for method in ("exodus", "slayer"):
        xi = x.clone().requires_grad_(True)
        (LIF(0.9, method=method)(xi) * g).sum().backward()
        grads.append(xi.grad.numpy())
    assert rel_err(grads[1], grads[0]) > 1e-3


@pytest.mark.parametrize("name", ["single", "clip"])
def test_truncation_equals_loop_with_detached_state(name):
    _compare(name, "exodus", truncation=7)


def test_bptt_method_equals_loop():
    _compare("before_decay", "bptt")


def test_float32_keeps_dtype_and_agrees_with_float64():
    x, g, _ = _data("single")
    out = {}
    for dtype in (torch.float32, F64):
        xi = x.to(dtype).requires_grad_(True)
        s = LIF(0.9)(xi)
        (s * g.to(dtype)).sum().backward()
        assert s.dtype == dtype and xi.grad.dtype == dtype
        out[dtype] = (s, xi.grad)
    if not torch.equal(out[torch.float32][0].double(), out[F64][0]):
        pytest.skip("a float32 spike flipped at threshold")
    assert rel_err(out[torch.float32][1].numpy(), out[F64][1].numpy()) <= 1e-4


def test_output_modified_in_place_is_refused():
    """The spikes share memory with the trace the backward pass reads: editing them in place must fail."""
    x = _data("single")[0].requires_grad_(True)
    s = LIF(0.9)(x)
    s.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.sum().backward()
    s = LIF(0.9)(x)
    s.clone().mul_(2.0).sum().backward()  # the documented way out


def test_input_modified_in_place_is_refused():
    """The kernels read the input in place (no copy): editing it before the backward pass must fail."""
    x = _data("cuba")[0]
    layer = _layer("cuba")  # dL/dalpha_syn reads the input again in the backward pass
    xi = x.clone().requires_grad_(True)
    z = xi * 1.0
    s = layer(z)
    with torch.no_grad():
        z.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.sum().backward()


# --------------------------------------------------------------- streaming
@pytest.mark.parametrize("name", ["single", "multi", "before_decay", "clip", "reset_zero", "if", "cuba"])
def test_two_half_calls_equal_one_call(name):
    x, g, _ = _data(name, T=40)
    half = 20
    stream = _layer(name, stateful=True)
    xs = x.clone().requires_grad_(True)
    s1 = stream(xs[:, :half])
    s2 = stream(xs[:, half:])
    ((s1 * g[:, :half]).sum() + (s2 * g[:, half:]).sum()).backward()

    whole = _layer(name, truncation=half)  # the carried state has no gradient: truncated BPTT at the seam
    xw = x.clone().requires_grad_(True)
    s = whole(xw)
    (s * g).sum().backward()
    full = _layer(name)
    xf = x.clone().requires_grad_(True)
    (full(xf) * g).sum().backward()

    assert torch.equal(torch.cat([s1, s2], 1), s)
    assert float(s1[:, -1].detach().sum()) > 0, "no spike at the seam: the pending reset would go untested"
    assert rel_err(xs.grad.numpy(), xw.grad.numpy()) <= RTOL
    assert rel_err(xs.grad[:, half:].numpy(), xf.grad[:, half:].numpy()) <= RTOL  # causal: exact
    # the parameters: the second call holds its starting state fixed (ops.backward from state=)
    model = stream.current_model()
    a = x.transpose(0, 1).numpy()
    t1 = ops.forward(model, a[:half])
    t2 = ops.forward(model, a[half:], state=t1.state)
    gt = g.transpose(0, 1).numpy()
    held = {k: ops.backward(model, t1, gt[:half]).params[k] + ops.backward(model, t2, gt[half:]).params[k]
            for k in stream.trainable}
    want = {k: float(getattr(whole, k).grad) for k in whole.trainable}
    scale = max(abs(v) for v in want.values())
    for k, v in want.items():
        got = float(getattr(stream, k).grad)
        assert abs(got - held[k]) <= RTOL * scale, f"dL/d{k} vs the ops gradient with the state held"
        if k != "alpha_syn":  # the carried synaptic state depends on alpha_syn; one truncated call sees that
            assert abs(got - v) <= RTOL * scale, f"dL/d{k} vs one call truncated at the seam"
    if name == "cuba":
        assert abs(float(stream.alpha_syn.grad) - want["alpha_syn"]) > 1e-6 * scale


def test_stateful_srm_continues_exactly():
    """Streaming for a general SRM kernel (filter states carried): spikes of two calls = one call."""
    srm = ift_snn.srm("n*alpha**n", "theta*beta**n", params={"alpha": 0.8, "beta": 0.9})
    x = 0.4 + 0.5 * torch.randn(3, 40, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    layer = SpikingLayer(srm, stateful=True).double()
    with torch.no_grad():
        parts = [layer(x[:, :13]), layer(x[:, 13:])]
        whole = SpikingLayer(srm).double()(x)
    assert layer.state.shape == (len(ift_snn.state_names(srm)), 3, 4)
    assert torch.equal(torch.cat(parts, 1), whole) and float(whole.sum()) > 0


def test_spike_scan_state_gradient_is_the_ops_gradient():
    """dL/dx0 through spike_scan(state=) is ops.backward's Gradients.state (finite differences: test_state)."""
    model = ift_snn.cuba_lif(0.9, 0.7)
    x, g, _ = _data("cuba")
    _, state = spike_scan(model, x[:, :10])
    x0 = state.clone().requires_grad_(True)
    s, _ = spike_scan(model, x[:, 10:], state=x0)
    (s * g[:, 10:]).sum().backward()
    t = ops.forward(model, x[:, 10:].transpose(0, 1).numpy(), state=state.numpy())
    want = ops.backward(model, t, g[:, 10:].transpose(0, 1).numpy()).state
    assert float(np.abs(want).max()) > 0
    assert rel_err(x0.grad.numpy(), want) <= RTOL
    with pytest.raises(ValueError, match=r"state has shape \(2, 3, 4\); expected \(n_state, batch, \*neurons\) = "
                                         r"\(3, 3, 4\)"):
        spike_scan(model, x, state=state[:2])
    with pytest.raises(ValueError, match="give u0 or state, not both"):
        spike_scan(model, x, torch.zeros(3, 4, dtype=F64), state=state)


@pytest.mark.parametrize("name", ["single", "cuba"])
def test_uneven_calls_and_reset_states(name):
    x, _, _ = _data(name, T=40)
    layer = _layer(name, stateful=True)
    with torch.no_grad():
        parts = [layer(x[:, a:b]) for a, b in ((0, 7), (7, 27), (27, 40))]
        whole = _layer(name)(x)
        assert torch.equal(torch.cat(parts, 1), whole)
        layer.reset_states()
        again = layer(x[:, :7])
    assert torch.equal(again, parts[0])


def test_carried_state_uses_the_pending_reset():
    """A spike at the last step of a call must reset the first step of the next one."""
    layer = LIF(0.9, stateful=True).double()
    x = torch.tensor([[[0.0], [1.5]]], dtype=F64)  # spike at the last step, membrane 1.5
    assert float(layer(x)[0, -1, 0]) == 1.0
    s = layer(torch.tensor([[[0.0]]], dtype=F64))
    assert float(s[0, 0, 0]) == 0.0  # 0.9 * 1.5 - 1 = 0.35 < 1; without the reset 1.35 would spike


def test_explicit_u0_overrides_the_carried_state():
    x = _data("single")[0]
    layer = LIF(0.9, stateful=True).double()
    with torch.no_grad():
        first = layer(x)
        again = layer(x, torch.zeros(x.shape[0], x.shape[2], dtype=F64))
    assert torch.equal(first, again)


# ---------------------------------------------------------------- networks
def test_small_network_trains():
    torch.manual_seed(0)
    n_in, hidden, classes, T, B = 20, 32, 3, 25, 48
    rates = 0.05 + 0.4 * torch.rand(classes, n_in)
    labels = torch.arange(B) % classes
    x = (torch.rand(B, T, n_in) < rates[labels].unsqueeze(1)).float()
    net = torch.nn.Sequential(
        torch.nn.Linear(n_in, hidden), LIF(0.9, train_alpha=True, train_theta=True),
        torch.nn.Linear(hidden, classes), LIF(0.9),
    )
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    losses = []
    for _ in range(30):
        counts = net(x).sum(1)  # spike count of each output neuron
        loss = torch.nn.functional.cross_entropy(counts, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            net[1].alpha.clamp_(0.05, 1.0)
            net[1].theta.clamp_(min=0.05)
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_conv2d_batch_time_folding():
    B, T, C, H, W = 2, 6, 2, 8, 8
    conv = torch.nn.Conv2d(C, 4, 3, padding=1).double()
    layer = LIF(0.8, theta=0.5)
    x = torch.rand(B, T, C, H, W, dtype=F64)
    z = conv(x.flatten(0, 1))  # (B*T, 4, H, W)
    assert z.shape == (B * T, 4, H, W)
    z = z.unflatten(0, (B, T))
    s = layer(z)
    assert s.shape == (B, T, 4, H, W)
    assert float(s.detach().sum()) > 0
    s.sum().backward()
    assert conv.weight.grad.shape == conv.weight.shape and float(conv.weight.grad.abs().sum()) > 0
    flat = spike_scan(layer.model, z.detach().reshape(B, T, -1))[0]  # the same neurons flattened
    assert torch.equal(flat.reshape(s.shape), s.detach())


def test_constructors_split_model_and_layer_keywords():
    layer = LIF(0.8, 0.7, theta_r=0.5, reset_before_decay=True, method="slayer", truncation=5, train_alpha=True)
    assert layer.model == ift_snn.lif(0.8, 0.7, theta_r=0.5, reset_before_decay=True)
    assert (layer.method, layer.truncation, layer.trainable) == ("slayer", 5, ("alpha",))
    assert IF(0.5, u_min=-1.0).model == ift_snn.if_neuron(0.5, u_min=-1.0)
    cuba = CUBALIF(0.9, 0.6, train_alpha=True, train_theta=True, stateful=True)
    assert cuba.trainable == ("alpha_mem", "alpha_syn", "theta") and cuba.stateful
    assert {n for n, _ in cuba.named_parameters()} == {"alpha_mem", "alpha_syn", "theta"}


# --------------------------------------------------------------- bad input
def test_bad_rank():
    with pytest.raises(ValueError, match=r"input has shape \(5,\) \(1 dims\); expected \(batch, time, \*neurons\)"):
        LIF(0.9)(torch.zeros(5))


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_bad_dtype(dtype):
    with pytest.raises(TypeError, match=rf"input has dtype {dtype}; expected a floating type: float32 or float64"):
        LIF(0.9)(torch.zeros(2, 3, 4, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32(dtype):
    """float16 / bfloat16 (as SpikingJelly runs them): the scan in float32 on the half values, spikes and input
    gradients in the input's type, equal to the float32 layer's on the same values; the carried state float32."""
    gen = torch.Generator().manual_seed(3)
    x = (0.4 + 0.6 * torch.randn(3, 40, 5, generator=gen)).to(dtype).requires_grad_(True)
    g = torch.randn(3, 40, 5, generator=gen).to(dtype).float()  # dL/ds reaches half spikes in the half type
    half, full = LIF(0.9, train_alpha=True), LIF(0.9, train_alpha=True)
    s = half(x)
    x32 = x.detach().float().requires_grad_(True)
    s32 = full(x32)
    assert s.dtype == dtype and torch.equal(s.float(), s32) and float(s32.sum()) > 0
    (s.float() * g).sum().backward()
    (s32 * g).sum().backward()
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad.float(), x32.grad.to(dtype).float())
    torch.testing.assert_close(half.alpha.grad, full.alpha.grad)
    stream = LIF(0.9, stateful=True)
    stream(x.detach())
    assert stream.state.dtype == torch.float32


def test_record_states_keeps_the_membrane():
    """record_states=True (sinabs' recordings, SpikingJelly's store_v_seq): the membrane of the last call, the
    value compared with theta (spikes where u >= theta), equal to ops.forward's, without gradient."""
    gen = torch.Generator().manual_seed(4)
    x = (0.4 + 0.6 * torch.randn(2, 30, 3, generator=gen, dtype=torch.float64)).requires_grad_(True)
    layer = LIF(0.9, theta=0.8, record_states=True)
    s = layer(x)
    v = layer.recordings["v_mem"]
    assert v.shape == x.shape and not v.requires_grad
    torch.testing.assert_close(s, (v >= 0.8).to(s.dtype))
    want = ops.forward(layer.model, x.detach().numpy(), time_axis=1).u
    np.testing.assert_allclose(v.numpy(), want, rtol=1e-14, atol=1e-14)
    v.zero_()  # a copy: the backward still reads the layer's own membrane
    s.sum().backward()
    x2 = x.detach().requires_grad_(True)
    LIF(0.9, theta=0.8)(x2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=0)


def test_constructor_keywords_of_the_peers_are_named():
    """LIF(0.9, threshold=1.0) (snnTorch's name) says what the keyword is called here, not what lif() takes."""
    with pytest.raises(TypeError, match=r"LIF\(\) got unexpected keyword\(s\) threshold \(threshold: use theta\); "
                                        r"it takes method, .* \(the layer\) and theta_r, reset_before_decay"):
        LIF(0.9, threshold=1.0)
    with pytest.raises(TypeError, match=r"IF\(\) got unexpected keyword\(s\) reset_before_decay; .* and theta_r, "
                                        r"spike, surrogate, reset, u_min \(the model\)"):
        IF(reset_before_decay=True)


def test_not_a_tensor():
    with pytest.raises(TypeError, match="input must be a torch.Tensor .* got ndarray"):
        LIF(0.9)(np.zeros((2, 3, 4)))


def test_unsupported_device():
    with pytest.raises(ValueError, match="input is on device meta; ift_snn runs on cpu"):
        LIF(0.9)(torch.zeros(2, 3, 4, device="meta"))


def test_mixed_devices():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="u0 is on device meta but the input is on cpu"):
        LIF(0.9)(x, torch.zeros(2, 4, device="meta"))


def test_bad_u0_shape():
    with pytest.raises(ValueError, match=r"u0 has shape \(4,\); expected \(batch, \*neurons\) = \(2, 4\)"):
        LIF(0.9)(torch.zeros(2, 3, 4), torch.zeros(4))


def test_non_finite_input():
    x = torch.zeros(2, 3, 4)
    x[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        LIF(0.9)(x)


def test_missing_cupy_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[gpu\]' in the ift_snn checkout"):
        tint._require_cupy()


def test_cuda_tensor_without_cupy(monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: a CUDA tensor cannot be made here")
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(ImportError, match=r"CUDA tensors need CuPy.*pip install -e '\.\[gpu\]' in the ift_snn checkout"):
        LIF(0.9)(torch.zeros(2, 3, 4, device="cuda"))


def test_bad_layer_arguments():
    with pytest.raises(TypeError, match="model must be a NeuronModel"):
        SpikingLayer("lif")
    with pytest.raises(ValueError, match="unknown method 'ift'"):
        LIF(0.9, method="ift")
    with pytest.raises(ValueError, match="truncation=0 is out of range"):
        LIF(0.9, truncation=0)
    with pytest.raises(TypeError, match="truncation must be an int"):
        LIF(0.9, truncation=2.5)
    with pytest.raises(ValueError, match="train_alpha=True but the if model has no alpha parameter"):
        IF(1.0, train_alpha=True)
    with pytest.raises(ValueError, match="stateful=True needs method='exodus' or 'slayer'"):
        LIF(0.9, method="bptt", stateful=True)


def test_parameter_out_of_range_after_a_step():
    layer = LIF(0.9, train_alpha=True)
    with torch.no_grad():
        layer.alpha.fill_(1.5)
    with pytest.raises(ValueError, match=r"alpha=1\.5 is out of range: expected 0 < alpha <= 1.*clamp"):
        layer(torch.rand(2, 5, 3))


def test_unknown_parameter_name():
    with pytest.raises(ValueError, match=r"unknown parameters \['beta'\]"):
        spike_scan(ift_snn.lif(0.9), torch.rand(2, 5, 3), params={"beta": torch.tensor(0.5)})


def test_stateful_shape_change_is_refused():
    layer = LIF(0.9, stateful=True)
    layer(torch.rand(2, 5, 3))
    with pytest.raises(ValueError, match=r"carried state is for \(batch, \*neurons\) = \(2, 3\).*reset_states\(\)"):
        layer(torch.rand(4, 5, 3))
    layer.reset_states()
    layer(torch.rand(4, 5, 3))


# --------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("method", ["exodus", "slayer"])
def test_cuda_equals_torch_bptt_without_host_copies(name, method, monkeypatch):
    cupy = pytest.importorskip("cupy")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device")
    seen = []
    real_forward, real_backward = ops.forward, ops.backward

    def forward(model, a, u0=None, **kw):
        seen.append(type(a))
        seen.extend([] if u0 is None else [type(u0)])
        return real_forward(model, a, u0, **kw)

    def backward(model, record, grad_s, *args, **kw):
        seen.append(type(grad_s))
        out = real_backward(model, record, grad_s, *args, **kw)
        seen.extend([type(out.a), type(out.u0)])
        return out

    monkeypatch.setattr(ops, "forward", forward)
    monkeypatch.setattr(ops, "backward", backward)
    _compare(name, method, device="cuda")
    assert seen and all(t is cupy.ndarray for t in seen), seen


@pytest.mark.gpu
def test_cuda_gradients_stay_on_the_device_and_follow_the_stream():
    pytest.importorskip("cupy")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device")
    x, g, _ = _data("single", B=8, T=200, N=512, device="cuda")
    want = None
    default = torch.cuda.current_stream()
    for stream in (default, torch.cuda.Stream()):
        stream.wait_stream(default)  # x and g were made on the default stream
        with torch.cuda.stream(stream):
            layer = LIF(0.9, train_alpha=True, train_theta=True).to("cuda", F64)
            xi = x.clone().requires_grad_(True)
            s = layer(xi)
            (s * g).sum().backward()
        stream.synchronize()
        assert xi.grad.is_cuda and layer.alpha.grad.is_cuda and layer.theta.grad.is_cuda
        got = (s.cpu(), xi.grad.cpu(), float(layer.alpha.grad))
        if want is None:
            want = got
        else:
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and got[2] == want[2]


# ------------------------------------------------------------ from snnTorch
@pytest.mark.parametrize("kind, slope, reset", [("atan", 3.0, "subtract"), ("fast_sigmoid", 10.0, "zero"),
                                                ("sigmoid", 5.0, "subtract")])
def test_from_snntorch_gives_its_spikes_and_exact_gradients(kind, slope, reset):
    """An snntorch.Leaky stepped over time, and the converted layer on the whole sequence: the same spikes;
    method="slayer" gives snnTorch's gradients (its reset is detached) and the default the exact ones, both
    against the float64 oracle at 1e-12. Against snnTorch's own backward: 1e-12, except its sigmoid backward,
    which is off by about 1e-7 (ift_snn equals the oracle there to 1e-15), compared at 1e-6."""
    snn = pytest.importorskip("snntorch")
    from snntorch import surrogate as snn_surrogate

    from ift_snn.backends import reference
    from ift_snn.integrations.torch import from_snntorch

    spike_grad = getattr(snn_surrogate, kind)(**({"alpha": slope} if kind == "atan" else {"slope": slope}))
    leaky = snn.Leaky(beta=0.85, threshold=0.9, reset_mechanism=reset, spike_grad=spike_grad, learn_beta=True).double()
    gen = torch.Generator().manual_seed(5)
    B, T, N = 3, 40, 4
    x = (0.5 + 0.7 * torch.randn(B, T, N, dtype=torch.float64, generator=gen)).requires_grad_(True)
    # snnTorch's spikes are float32 whatever the input (its Heaviside returns .float()): dL/ds reaches them
    # rounded to float32, so g is taken in float32 to compare the rest of its backward at 1e-12
    g = torch.randn(B, T, N, generator=gen).double()
    mem, spikes = leaky.init_leaky(), []
    for t in range(T):
        s, mem = leaky(x[:, t], mem)
        spikes.append(s)
    spikes = torch.stack(spikes, 1)
    (spikes * g).sum().backward()
    tm = lambda y: y.detach().numpy().transpose(1, 0, 2).reshape(T, B * N)  # noqa: E731
    for method, oracle in (("slayer", reference.slayer), ("exodus", reference.bptt)):
        layer = from_snntorch(leaky, method=method)
        assert layer.model.reset == reset and layer.trainable == ("alpha",)
        xi = x.detach().requires_grad_(True)
        s = layer(xi)
        assert torch.equal(s, spikes) and float(s.detach().sum()) > 0
        (s * g).sum().backward()
        want = oracle(layer.model, tm(x), tm(g))
        assert rel_err(tm(xi.grad), want.a) < 1e-12, method
        if method == "slayer":
            loose = kind == "sigmoid"  # snnTorch's sigmoid backward, see the docstring
            assert rel_err(xi.grad.numpy(), x.grad.numpy()) < (1e-6 if loose else 1e-12)
            # the layer's alpha is a float32 parameter (torch's default dtype)
            want_beta = float(leaky.beta.grad)
            assert abs(float(layer.alpha.grad) - want_beta) <= (1e-5 if loose else 1e-6) * abs(want_beta)


def test_from_snntorch_per_neuron_beta_and_threshold():
    """snnTorch's per-neuron beta and threshold (tensors of the neuron shape): the same spikes, and with
    method="slayer" snnTorch's gradients of x and of each neuron's beta (float32 spikes there: 1e-6)."""
    snn = pytest.importorskip("snntorch")
    from ift_snn.integrations.torch import from_snntorch

    B, T, N = 3, 30, 4
    leaky = snn.Leaky(beta=torch.tensor([0.6, 0.75, 0.9, 1.0]), threshold=torch.tensor([0.7, 0.9, 1.1, 1.3]),
                      learn_beta=True).double()
    gen = torch.Generator().manual_seed(8)
    x = (0.5 + 0.7 * torch.randn(B, T, N, dtype=torch.float64, generator=gen)).requires_grad_(True)
    g = torch.randn(B, T, N, generator=gen).double()
    mem, spikes = leaky.init_leaky(), []
    for t in range(T):
        s, mem = leaky(x[:, t], mem)
        spikes.append(s)
    spikes = torch.stack(spikes, 1)
    (spikes * g).sum().backward()
    layer = from_snntorch(leaky, method="slayer")
    assert layer.alpha.shape == (N,) and layer.per_neuron == ("theta",)
    xi = x.detach().requires_grad_(True)
    s = layer(xi)
    (s * g).sum().backward()
    assert torch.equal(s, spikes) and s.sum() > 0
    assert rel_err(xi.grad.numpy(), x.grad.numpy()) < 1e-6
    assert rel_err(layer.alpha.grad.numpy(), leaky.beta.grad.numpy()) < 1e-6


def test_from_snntorch_refuses_what_has_no_equal():
    snn = pytest.importorskip("snntorch")
    from ift_snn.integrations.torch import from_snntorch

    with pytest.raises(ValueError, match="reset_mechanism='none'"):
        from_snntorch(snn.Leaky(beta=0.9, reset_mechanism="none"))
    with pytest.raises(ValueError, match="surrogate .* has no equal here"):
        from_snntorch(snn.Leaky(beta=0.9, spike_grad=lambda u: (u > 0).float()))
    with pytest.raises(TypeError, match="converts an snntorch.Leaky, got Linear"):
        from_snntorch(torch.nn.Linear(2, 2))


def test_single_steps_carry_the_state_and_equal_one_call():
    """layer.step(x_t), t = 0..T-1 (the cells of snnTorch and Norse): the spikes of one call on the sequence,
    for a membrane model and an SRM; a 2-D input to forward() is named (gradients through steps:
    tests/test_step_gradients.py)."""
    gen = torch.Generator().manual_seed(6)
    x = 0.5 + 0.7 * torch.randn(3, 25, 4, dtype=torch.float64, generator=gen)
    for layer in (CUBALIF(0.85, 0.7), SpikingLayer(ift_snn.get_model("alpha_srm"))):
        whole = layer(x)
        steps = torch.stack([layer.step(x[:, t]) for t in range(x.shape[1])], 1)
        assert whole.sum() > 0 and torch.equal(steps, whole)
        layer.reset_states()
        assert torch.equal(layer.step(x[:, 0]), whole[:, 0])
    with pytest.warns(UserWarning, match=r"reads the 2-D input \(3, 25\) as \(batch, time\) .* use layer.step\(x\)"):
        LIF(0.9)(x[:, :, 0])
