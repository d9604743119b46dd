"""Layouts never misread (issue 26, S1): a declared layout as in nn.RNN, a declared neuron shape, a warning for
the 4-D input that looks like one Conv2d frame, and TimeFold for frame-wise layers."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

from ift_snn.integrations.torch import LIF, TimeFold  # noqa: E402

pytestmark = pytest.mark.torch


def test_time_first_layout_equals_batch_first_transposed():
    torch.manual_seed(0)
    x = torch.randn(2, 30, 5, dtype=torch.float64, requires_grad=True)  # (batch, time, neurons)
    xt = x.detach().transpose(0, 1).clone().requires_grad_(True)  # (time, batch, neurons)
    first, second = LIF(0.9, train_alpha=True, record_states=True), LIF(0.9, train_alpha=True, batch_first=False,
                                                                           record_states=True)
    s1, s2 = first(x), second(xt)
    assert s2.shape == (30, 2, 5)
    assert torch.equal(s1, s2.transpose(0, 1))
    assert torch.equal(first.recordings["v_mem"], second.recordings["v_mem"].transpose(0, 1))
    (s1 * torch.arange(5.0, dtype=torch.float64)).sum().backward()
    (s2 * torch.arange(5.0, dtype=torch.float64)).sum().backward()
    assert torch.allclose(x.grad, xt.grad.transpose(0, 1), rtol=1e-12, atol=1e-12)
    assert torch.allclose(first.alpha.grad, second.alpha.grad, rtol=1e-12)
    assert "batch_first=False" in repr(second)


def test_a_declared_neuron_shape_refuses_the_other_reading():
    layer = LIF(0.9, neurons=(5,))
    layer(torch.randn(2, 30, 5))
    with pytest.raises(ValueError, match=r"declared neurons=\(5,\).*input has shape \(30, 5\)"):
        layer(torch.randn(30, 5))  # one step of (batch, neurons): not a sequence
    with pytest.raises(ValueError, match=r"read that way its neurons are \(2, 5\)"):
        layer(torch.randn(30, 4, 2, 5))
    with pytest.raises(ValueError, match="must be the neuron shape"):
        LIF(0.9, neurons=(0,))
    with pytest.raises(TypeError, match="batch_first"):
        LIF(0.9, batch_first="yes")


def test_one_conv_frame_warns_once_naming_both_readings():
    layer = LIF(0.9)
    frame = torch.randn(4, 8, 6, 6)  # (batch, channels, H, W) after a Conv2d
    with pytest.warns(UserWarning, match=r"channels are being read as time"):
        layer(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(frame)  # once per layer


def test_time_fold_runs_a_conv_frame_by_frame():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64)
    x = torch.randn(2, 7, 2, 5, 5, dtype=torch.float64)  # (batch, time, C, H, W)
    folded = TimeFold(conv)(x)
    assert folded.shape == (2, 7, 3, 5, 5)
    assert torch.allclose(folded[1, 4], conv(x[1, 4:5])[0])
    net = torch.nn.Sequential(TimeFold(conv), LIF(0.9, neurons=(3, 5, 5)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 4-D warning: the shape is declared, the input 5-D
        assert net(x).shape == (2, 7, 3, 5, 5)
    time_first = TimeFold(conv, batch_first=False)(x.transpose(0, 1))
    assert torch.allclose(time_first.transpose(0, 1), folded)
    with pytest.raises(ValueError, match="TimeFold expects"):
        TimeFold(conv)(torch.randn(3, 5))


@pytest.mark.parametrize("call, answer", [
    (lambda: LIF(beta=0.9), r"LIF\(\) needs alpha.*beta: use alpha"),
    (lambda: LIF(tau=10.0), r"LIF\(\) needs alpha.*tau: use alpha \(= exp\(-dt/tau\)"),
    (lambda: LIF(), r"LIF\(\) needs alpha, the membrane's decay per step"),
    (lambda: LIF(0.9, beta=0.9), r"unexpected keyword\(s\) beta \(beta: use alpha\)"),
    (lambda: LIF(0.9, threshold=2.0), r"threshold: use theta"),
    (lambda: LIF(0.9, learn_beta=True), r"learn_beta: use train_alpha"),
])
def test_the_peers_keywords_are_answered_with_the_names_used_here(call, answer):
    """snnTorch's LIF(beta=...) and SpikingJelly's tau got a bare 'missing positional argument' (issue 27)."""
    with pytest.raises(TypeError, match=answer):
        call()


def test_cubalif_names_the_decay_it_misses():
    from ift_snn.integrations.torch import CUBALIF

    with pytest.raises(TypeError, match="CUBALIF\\(\\) needs alpha_syn, the synaptic current's decay"):
        CUBALIF(0.9)
