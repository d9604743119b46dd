"""The dense network's gradients: whole-network BPTT in PyTorch, finite differences, blocks, save/load."""

from __future__ import annotations

import numpy as np
import pytest

import ift_snn
from ift_snn.training.network import Adam, Network, NonFiniteLossError, loss_and_grad
from ift_snn.neurons.surrogates import sigmoid

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")


def _toy(seed=0, T=30, B=6, C=10, classes=3):
    rng = np.random.default_rng(seed)
    x = (rng.random((T, B, C)) < 0.2).astype(np.float64)
    y = rng.integers(0, classes, B)
    return x, y


def _torch_bptt_grads(net: Network, x, y, loss: str, detach_reset=False):
    """An independent whole-network BPTT: PyTorch autograd through the time loop of every layer."""
    torch = pytest.importorskip("torch")
    model = net.models[0]
    alpha, theta = dict(model.params)["alpha"], model.theta
    sg = dict(model.surrogate.constants)  # the exponential surrogate: scale / width exp(-|u - theta| / width)
    scale, width = sg["scale"], sg["width"] * theta

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u >= theta).double()

        @staticmethod
        def backward(ctx, grad):
            (u,) = ctx.saved_tensors
            return grad * scale * torch.exp(-(u - theta).abs() / width) / width

    Ws = [torch.tensor(W, dtype=torch.float64, requires_grad=True) for W in net.weights]
    s = torch.tensor(x)
    for W in Ws:
        a = s @ W
        u = torch.zeros_like(a[0])
        prev = torch.zeros_like(a[0])
        out = []
        for n in range(a.shape[0]):
            reset = prev.detach() if detach_reset else prev
            u = alpha * u + a[n] - theta * reset
            prev = Spike.apply(u)
            out.append(prev)
        s = torch.stack(out)
    yt = torch.tensor(y)
    if loss == "sum_ce":
        L = torch.nn.functional.cross_entropy(s.sum(0), yt)
    elif loss == "max_ce":
        r, rs = torch.zeros_like(s[0]), []
        for n in range(s.shape[0]):
            r = 0.9 * r + s[n]
            rs.append(r)
        L = torch.nn.functional.cross_entropy(torch.stack(rs).max(0).values, yt)
    else:
        target = torch.nn.functional.one_hot(yt, s.shape[2]).double() * 5.0
        L = ((s.sum(0) - target) ** 2).mean()
    L.backward()
    return float(L.detach()), [W.grad.numpy() for W in Ws]


@pytest.mark.parametrize("loss", ["sum_ce", "max_ce", "count_mse"])
@pytest.mark.parametrize("method", ["exodus", "bptt", "slayer"])
def test_weight_gradients_equal_whole_network_bptt(loss, method):
    net = Network([10, 16, 12, 3], ift_snn.lif(0.9), seed=1, dtype=np.float64)
    x, y = _toy()
    result, grads, _ = net.step(x, y, loss=loss, method=method)
    want_loss, want = _torch_bptt_grads(net, x, y, loss, detach_reset=method == "slayer")
    assert result.loss == pytest.approx(want_loss, rel=1e-12)
    for got, ref in zip(grads, want):
        assert np.max(np.abs(got - ref)) <= 1e-10 * max(np.max(np.abs(ref)), 1e-12)


def test_slayer_weight_gradients_differ_from_exact():
    net = Network([10, 16, 12, 3], ift_snn.lif(0.9), seed=1, dtype=np.float64)
    x, y = _toy()
    _, exact, _ = net.step(x, y, method="exodus")
    _, slayer, _ = net.step(x, y, method="slayer")
    assert np.max(np.abs(exact[0] - slayer[0])) > 1e-3 * np.max(np.abs(exact[0]))


def test_weight_gradients_equal_finite_differences():
    model = ift_snn.lif(0.85, spike="smooth", surrogate=sigmoid(slope=4.0))
    net = Network([6, 5, 3], model, seed=2, dtype=np.float64)
    x, y = _toy(C=6)
    _, grads, _ = net.step(x, y, loss="count_mse")
    rng = np.random.default_rng(0)
    h = 1e-6
    for layer in range(2):
        for _ in range(4):
            i, j = rng.integers(net.weights[layer].shape[0]), rng.integers(net.weights[layer].shape[1])
            net.weights[layer][i, j] += h
            up = net.step(x, y, loss="count_mse")[0].loss
            net.weights[layer][i, j] -= 2 * h
            down = net.step(x, y, loss="count_mse")[0].loss
            net.weights[layer][i, j] += h
            fd = (up - down) / (2 * h)
            assert grads[layer][i, j] == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_no_gradient_crosses_a_block_boundary():
    net = Network([10, 16, 12, 3], ift_snn.lif(0.9), seed=3, dtype=np.float64, blocks=1)
    assert sorted(net.readouts) == [0, 1]
    x, y = _toy()
    _, grads, grads_r = net.step(x, y)
    net.weights[2] *= 3.0  # the layers above block 0 change...
    net.weights[1] *= 0.5
    _, grads2, _ = net.step(x, y)
    np.testing.assert_array_equal(grads[0], grads2[0])  # ...and block 0's gradient does not
    assert sorted(grads_r) == [0, 1]


def test_non_finite_gradient_names_the_layer():
    from ift_snn.neurons.surrogates import exponential

    model = ift_snn.lif(0.9, surrogate=exponential(scale=20.0, width=0.5))
    net = Network([10, 4], model, seed=0, dtype=np.float32)
    net.weights[0][:] = 0.1 * 0.97 / 10  # u settles just under theta: |alpha - theta sigma| >> 1 throughout
    x = np.ones((400, 2, 10), np.float32)
    with pytest.raises(NonFiniteLossError, match="layer 0.*step factor"):
        net.step(x, np.zeros(2, int), loss="count_mse")


def test_save_and_load_round_trip(tmp_path):
    models = [ift_snn.cuba_lif(0.9, 0.7), ift_snn.srm("n*alpha**n", "theta*beta**n", params={"alpha": 0.7, "beta": 0.8})]
    net = Network([10, 8, 3], models, seed=4, blocks=1)
    net.save(tmp_path / "net.npz")
    back = Network.load(tmp_path / "net.npz")
    assert back.models == net.models and back.sizes == net.sizes
    for w, v in zip(net.parameters(), back.parameters()):
        np.testing.assert_array_equal(w, v)
    x, _ = _toy()
    np.testing.assert_array_equal(net.predict(x.astype(np.float32)), back.predict(x.astype(np.float32)))


def test_adam_training_reduces_the_loss():
    x, y = _toy(seed=5, B=12)
    net = Network([10, 20, 3], ift_snn.lif(0.9), seed=5)
    opt = Adam(lr=0.02)
    first = None
    for _ in range(40):
        result, gw, gr = net.step(x.astype(np.float32), y, loss="sum_ce")
        first = first if first is not None else result.loss
        opt.step(net.parameters(), gw + [gr[k] for k in sorted(gr)])
    assert result.loss < 0.7 * first


def test_loss_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    s = rng.random((7, 4, 3))
    y = np.array([0, 2, 1, 2])
    for kind in ("sum_ce", "max_ce", "count_mse"):
        _, grad, _ = loss_and_grad(kind, s, y, 3)
        for idx in [(0, 0, 0), (3, 1, 2), (6, 3, 1)]:
            e = np.zeros_like(s)
            e[idx] = 1e-6
            fd = (loss_and_grad(kind, s + e, y, 3)[0] - loss_and_grad(kind, s - e, y, 3)[0]) / 2e-6
            assert grad[idx] == pytest.approx(fd, rel=1e-5, abs=1e-8), (kind, idx)


def test_bad_network_arguments():
    with pytest.raises(ValueError, match="sizes"):
        Network([10], ift_snn.lif(0.9))
    with pytest.raises(ValueError, match="NeuronModels"):
        Network([10, 5, 3], [ift_snn.lif(0.9)])
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        loss_and_grad("hinge", np.zeros((2, 1, 2)), np.zeros(1, int), 2)
    net = Network([10, 3], ift_snn.lif(0.9))
    with pytest.raises(ValueError, match=r"expected \(T, batch, 10\)"):
        net.forward(np.zeros((5, 10)))


def test_device_mismatch_and_moves_are_clear():
    net = Network([10, 3], ift_snn.lif(0.9))
    with pytest.raises(ValueError, match="device='tpu'"):
        net.to("tpu")
    assert net.to("cpu") is net

    class FakeCupy:
        __module__ = "cupy._core.core"
        ndim, shape = 3, (5, 2, 10)

    with pytest.raises(TypeError, match="weights are numpy arrays"):
        net.forward(FakeCupy())


@pytest.mark.gpu
def test_network_step_on_the_gpu_equals_cpu():
    cupy = pytest.importorskip("cupy")
    net = Network([10, 16, 3], ift_snn.lif(0.9), seed=1, dtype=np.float64)
    x, y = _toy()
    result, grads, _ = net.step(x, y)
    net.to("gpu")
    result_gpu, grads_gpu, _ = net.step(cupy.asarray(x), cupy.asarray(y))
    assert result_gpu.loss == pytest.approx(result.loss, rel=1e-12)
    for g_cpu, g_gpu in zip(grads, grads_gpu):
        np.testing.assert_allclose(g_gpu.get(), g_cpu, rtol=1e-10, atol=1e-12)
