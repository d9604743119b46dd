"""The recurrent layer's float64 oracle (backends/reference.py: simulate_recurrent, bptt_recurrent), itself checked:
with V = 0 it is the feed-forward oracle; for a LIF it equals autograd through a float64 PyTorch loop written here;
with the smooth spike function every gradient equals central finite differences (docs/MATH.md section 9)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ift_snn
from ift_snn.backends import reference

from .conftest import models

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning", "ignore::RuntimeWarning")


def _problem(seed: int, T: int, B: int, N: int, scale: float = 0.6, dtype=np.float64):
    """(c, V, g, s0, u0) of a recurrent layer: input currents, weights of spectral scale ``scale``, dL/ds, the
    spikes before step 0 and the initial membrane."""
    rng = np.random.default_rng(seed)
    c = rng.normal(0.3, 0.7, size=(T, B, N))
    V = rng.normal(0, scale / np.sqrt(N), size=(N, N))
    g = rng.normal(size=(T, B, N))
    s0 = (rng.random((B, N)) < 0.3).astype(float)
    u0 = rng.normal(0, 0.4, size=(B, N))
    return [x.astype(dtype) for x in (c, V, g, s0, u0)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models(), st.integers(0, 2**31), st.integers(1, 14), st.sampled_from([None, 3, 5]), st.booleans())
def test_without_recurrence_it_is_the_feed_forward_oracle(model, seed, T, K, detach):
    c, _, g, _, u0 = _problem(seed, T, 2, 3)
    V = np.zeros((3, 3))
    got = reference.bptt_recurrent(model, c, V, g, None, u0, truncation=K, detach_reset=detach)
    want = reference.bptt(model, c.reshape(T, 6), g.reshape(T, 6), u0.reshape(6), truncation=K,
                          detach_reset=detach)
    np.testing.assert_array_equal(got.s.reshape(T, 6), want.s)
    np.testing.assert_allclose(got.c.reshape(T, 6), want.a, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got.u0.reshape(6), want.u0, rtol=1e-10, atol=1e-10)
    for k, v in want.params.items():
        assert got.params[k] == pytest.approx(v, rel=1e-10, abs=1e-10), k


def _torch_lif(c, V, g, s0, u0, alpha, theta, model, reset):
    """A LIF recurrent layer as a float64 PyTorch loop, spikes with the model's surrogate: autograd is the BPTT."""
    torch = pytest.importorskip("torch")

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u > theta).to(u.dtype)

        @staticmethod
        def backward(ctx, grad):
            (u,) = ctx.saved_tensors
            return grad * torch.from_numpy(model.sigma(u.detach().numpy()))

    t = lambda x: torch.tensor(x, dtype=torch.float64, requires_grad=True)  # noqa: E731
    c_, V_, s0_, u0_, al, th = t(c), t(V), t(s0), t(u0), t(alpha), t(theta)
    u_prev, s_prev, out = u0_, s0_, []
    for n in range(c.shape[0]):
        a = c_[n] + s_prev @ V_.T
        if reset == "zero":
            u = al * u_prev * (1 - s_prev) + a
        else:
            u = al * u_prev + a - th * s_prev
        s = Spike.apply(u - th + theta)  # the threshold's own gradient: d(u - theta)/dtheta
        out.append(s)
        u_prev, s_prev = u, s
    loss = (torch.stack(out) * torch.from_numpy(g)).sum()
    loss.backward()
    return {"c": c_.grad.numpy(), "V": V_.grad.numpy(), "s0": s0_.grad.numpy(), "u0": u0_.grad.numpy(),
            "alpha": al.grad.numpy() if al.grad.dim() else float(al.grad), "theta": float(th.grad),
            "s": torch.stack(out).detach().numpy()}


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_lif_equals_autograd_through_a_float64_torch_loop(reset, seed):
    model = ift_snn.lif(0.85, 1.0, reset=reset)
    c, V, g, s0, u0 = _problem(seed, 40, 3, 5, scale=1.5)
    if reset == "zero":
        s0 = np.zeros_like(s0)  # (a reset to zero from a spike before step 0: u0 is then the reset membrane)
    want = _torch_lif(c, V, g, s0, u0, 0.85, 1.0, model, reset)
    got = reference.bptt_recurrent(model, c, V, g, s0, u0)
    assert got.s.sum() > 20
    np.testing.assert_array_equal(got.s, want["s"])
    for name in ("c", "V", "s0", "u0"):
        np.testing.assert_allclose(getattr(got, name), want[name], rtol=1e-12, atol=1e-12, err_msg=name)
    assert got.params["alpha"] == pytest.approx(want["alpha"], rel=1e-12, abs=1e-12)
    assert got.params["theta"] == pytest.approx(want["theta"], rel=1e-12, abs=1e-12)


H = 1e-6


def _loss(model, c, V, g, s0, u0):
    return float(np.sum(g * reference.simulate_recurrent(model, c, V, s0, u0)[1]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models(smooth=True), st.integers(0, 2**31), st.integers(2, 12))
def test_with_the_smooth_spike_every_gradient_equals_finite_differences(model, seed, T):
    c, V, g, _, u0 = _problem(seed, T, 2, 3, scale=1.0)
    s0 = np.random.default_rng(seed + 1).random((2, 3))  # smooth spikes are not binary
    got = reference.bptt_recurrent(model, c, V, g, s0, u0)
    scale = max(1e-3, float(np.max(np.abs(got.c))), float(np.max(np.abs(got.V))))

    def fd(array, index, build):
        e = np.zeros_like(array)
        e[index] = H
        return (_loss(model, *build(array + e)) - _loss(model, *build(array - e))) / (2 * H)

    for i, j in [(0, 0), (1, 2), (2, 1)]:
        want = fd(V, (i, j), lambda x: (c, x, g, s0, u0))
        assert abs(got.V[i, j] - want) <= 1e-6 * scale, ("V", i, j, got.V[i, j], want)
    for index in [(0, 0, 0), (T // 2, 1, 2), (T - 1, 0, 1)]:
        want = fd(c, index, lambda x: (x, V, g, s0, u0))
        assert abs(got.c[index] - want) <= 1e-6 * scale, ("c", index, got.c[index], want)
    for index in [(0, 1), (1, 2)]:
        want = fd(s0, index, lambda x: (c, V, g, x, u0))
        assert abs(got.s0[index] - want) <= 1e-6 * scale, ("s0", index, got.s0[index], want)
        want = fd(u0, index, lambda x: (c, V, g, s0, x))
        assert abs(got.u0[index] - want) <= 1e-6 * scale, ("u0", index, got.u0[index], want)
    for name, value in model.params:
        if name.startswith("alpha") and value + H > 1:
            continue
        at = lambda v: _loss(model.with_params(**{name: v}), c, V, g, s0, u0)  # noqa: E731
        want = (at(value + H) - at(value - H)) / (2 * H)
        assert abs(got.params[name] - want) <= 1e-6 * max(scale, abs(want)), (name, got.params[name], want)


def test_bad_shapes_are_refused_naming_the_value():
    model = ift_snn.lif(0.9)
    c = np.zeros((5, 2, 3))
    with pytest.raises(ValueError, match=r"V has shape \(3, 2\); expected \(3, 3\)"):
        reference.bptt_recurrent(model, c, np.zeros((3, 2)), c)
    with pytest.raises(ValueError, match=r"\(T, B, N\)"):
        reference.simulate_recurrent(model, np.zeros((5, 3)), np.zeros((3, 3)))
