"""NIR export and import (ift_snn/integrations/nir.py): a round trip through a NIR file reproduces the spikes and
the weights; an imported graph with other input gains runs the NIR equations (checked against a direct
forward-Euler simulation of them, written here); what NIR cannot describe is refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest

import ift_snn
from ift_snn.integrations.nir import NIR_NODES, from_nir, to_nir
from ift_snn.training.network import Network

nir = pytest.importorskip("nir")


def _net(seed: int = 0) -> Network:
    models = [ift_snn.lif(0.85, 0.9, reset="zero"), ift_snn.cuba_lif(0.8, 0.6, 1.1, reset="zero"),
              ift_snn.if_neuron(1.3, reset="zero")]
    return Network([12, 10, 8, 4], models, seed=seed, dtype=np.float64, init_gain=3.0)


def _spikes(net: Network, x) -> list:
    _, traces = net.forward(x)
    return [t.s for t in traces]


def test_round_trip_through_a_file_reproduces_the_spikes(tmp_path):
    net = _net()
    x = (np.random.default_rng(1).random((60, 5, 12)) < 0.3).astype(np.float64)
    path = tmp_path / "net.nir"
    nir.write(str(path), to_nir(net, dt=1e-3))
    back = from_nir(path, dtype=np.float64)  # dt recorded by the export
    assert [m.name for m in back.models] == ["lif", "cuba_lif", "if"]
    for a, b in zip(net.models, back.models):
        for (k, v), (k2, v2) in zip(a.params, b.params):
            assert k == k2 and v2 == pytest.approx(v, rel=1e-12)
    for W, W2 in zip(net.weights, back.weights):
        np.testing.assert_allclose(W2, W, rtol=1e-12)
    spikes = _spikes(net, x)
    assert sum(float(s.sum()) for s in spikes) > 0 and all(s.any() for s in spikes)
    for s, s2 in zip(spikes, _spikes(back, x)):
        np.testing.assert_array_equal(s2, s)


def _euler_lif(x, W, tau, r, theta, dt):
    """The NIR LIF equations stepped by forward Euler, written directly: v += dt/tau (-v + r I), reset to 0."""
    v = np.zeros((x.shape[1], W.shape[0]))
    out = []
    for t in range(x.shape[0]):
        v = v + dt / tau * (-v + r * (x[t] @ W.T))
        z = v > theta
        out.append(z.astype(float))
        v = np.where(z, 0.0, v)
    return np.stack(out)


def test_an_imported_graph_runs_the_nir_equations():
    """Input gains other than 1 (r != tau/dt) are folded into the weights: the spikes are those of the NIR
    equations stepped by forward Euler."""
    rng = np.random.default_rng(2)
    W = rng.normal(0, 1.0, (6, 9))
    tau, r, theta, dt = 8.0, 3.0, 0.7, 1.0
    graph = nir.NIRGraph(
        nodes={"in": nir.Input(input_type={"input": np.array([9])}),
               "fc": nir.Affine(weight=W, bias=np.zeros(6)),
               "lif": nir.LIF(tau=np.full(6, tau), r=np.full(6, r), v_leak=np.zeros(6),
                              v_threshold=np.full(6, theta), v_reset=np.zeros(6)),
               "out": nir.Output(output_type={"output": np.array([6])})},
        edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")])
    net = from_nir(graph, dt=dt, dtype=np.float64)
    x = (rng.random((50, 4, 9)) < 0.4).astype(np.float64)
    want = _euler_lif(x, W, tau, r, theta, dt)
    assert want.sum() > 0
    np.testing.assert_array_equal(_spikes(net, x)[0], want)


def test_what_nir_cannot_describe_is_refused():
    sub = Network([3, 2], ift_snn.lif(0.9), dtype=np.float64)  # the default subtractive reset
    with pytest.raises(ValueError, match="layer 0 .* resets by subtraction; NIR's neurons reset to v_reset"):
        to_nir(sub)
    srm = Network([3, 2], ift_snn.get_model("alpha_srm"), dtype=np.float64)
    with pytest.raises(ValueError, match="has no NIR node: NIR describes LIF, IF and CubaLIF"):
        to_nir(srm)
    graph = to_nir(_net())
    graph.nodes["neuron0"].tau[0] += 1.0
    with pytest.raises(ValueError, match="layer 0 of the NIR graph has alpha differing between neurons.*to='torch'"):
        from_nir(graph)
    graph = to_nir(_net())
    graph.nodes["neuron1"].v_leak[:] = 0.1
    with pytest.raises(ValueError, match="'neuron1' .* has v_leak != 0"):
        from_nir(graph)
    with pytest.raises(ValueError, match="dt=0"):
        to_nir(_net(), dt=0)
    assert set(NIR_NODES) == {"lif", "if", "cuba_lif"}


def test_a_torch_sequential_round_trips_and_crosses_to_a_network(tmp_path):
    """nn.Sequential of nn.Linear (with biases) and SpikingLayers -> NIR file -> nn.Sequential: the same weights,
    biases, trained parameter values and spikes; a Network's graph imported as an nn.Sequential spikes as the
    Network does."""
    torch = pytest.importorskip("torch")
    from ift_snn.integrations.torch import CUBALIF, LIF

    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(7, 9, dtype=torch.float64), LIF(0.8, reset="zero", train_alpha=True),
                              torch.nn.Linear(9, 4, dtype=torch.float64), CUBALIF(0.85, 0.6, 0.9, reset="zero"))
    with torch.no_grad():
        seq[0].weight.mul_(3.0)
        seq[0].bias.fill_(0.2)
        seq[1].alpha.fill_(0.75)  # a trained value: exported as the layer holds it now
    path = tmp_path / "seq.nir"
    nir.write(str(path), to_nir(seq, dt=0.5))
    back = from_nir(path, to="torch", dtype=np.float64)
    assert isinstance(back[1], type(seq[1])) and back[1].model.params[0][1] == pytest.approx(0.75, rel=1e-12)
    torch.testing.assert_close(back[0].bias, seq[0].bias, rtol=1e-12, atol=0)
    x = 2.0 * (torch.rand(3, 50, 7, dtype=torch.float64) < 0.3).double()
    with torch.no_grad():
        want, got = seq(x), back(x)
    assert want.sum() > 0 and torch.equal(got, want)
    net = _net()
    as_torch = from_nir(to_nir(net), to="torch", dtype=np.float64)
    xs = (np.random.default_rng(4).random((40, 3, 12)) < 0.3).astype(np.float64)
    with torch.no_grad():
        spikes = as_torch(torch.from_numpy(np.ascontiguousarray(xs.transpose(1, 0, 2)))).numpy().transpose(1, 0, 2)
    np.testing.assert_array_equal(spikes, _spikes(net, xs)[-1])
    with pytest.raises(ValueError, match="nonzero bias; ift_snn's Network has none: import it with to='torch'"):
        from_nir(path)


def test_per_neuron_values_round_trip_through_nir(tmp_path):
    """A Sequential whose layers have per-neuron alpha, theta (and a per-neuron r in the file: a gain per row of
    the weights): NIR file -> nn.Sequential with the same per-neuron values and spikes; a graph with per-neuron
    values runs the NIR equations (forward Euler, written in this file)."""
    torch = pytest.importorskip("torch")
    from ift_snn.integrations.torch import CUBALIF, LIF

    torch.manual_seed(1)
    alpha, theta = torch.linspace(0.7, 0.95, 9, dtype=torch.float64), torch.linspace(0.6, 1.2, 9, dtype=torch.float64)
    seq = torch.nn.Sequential(torch.nn.Linear(7, 9, dtype=torch.float64), LIF(alpha, theta, reset="zero",
                                                                               train_alpha=True),
                              torch.nn.Linear(9, 4, dtype=torch.float64),
                              CUBALIF(torch.tensor([0.8, 0.85, 0.9, 0.95]), 0.6, 0.9, reset="zero"))
    with torch.no_grad():
        seq[0].weight.mul_(3.0)
        seq[2].weight.mul_(3.0)
    path = tmp_path / "per_neuron.nir"
    nir.write(str(path), to_nir(seq))
    back = from_nir(path, to="torch", dtype=np.float64)
    assert back[1].per_neuron == ("alpha", "theta") and back[3].per_neuron == ("alpha_mem",)
    torch.testing.assert_close(back[1].alpha, alpha, rtol=1e-12, atol=0)
    torch.testing.assert_close(back[1].theta, theta, rtol=1e-12, atol=0)
    x = (torch.rand(4, 50, 7, generator=torch.Generator().manual_seed(3)) < 0.4).double()
    with torch.no_grad():
        want, got = seq(x), back(x)
    assert want.sum() > 0 and torch.equal(got, want)

    rng = np.random.default_rng(4)
    W, tau, r, th = rng.normal(0, 1.0, (6, 9)), np.linspace(4.0, 12.0, 6), np.linspace(2.0, 5.0, 6), 0.7
    graph = nir.NIRGraph(
        nodes={"in": nir.Input(input_type={"input": np.array([9])}), "fc": nir.Linear(weight=W),
               "lif": nir.LIF(tau=tau, r=r, v_leak=np.zeros(6), v_threshold=np.full(6, th), v_reset=np.zeros(6)),
               "out": nir.Output(output_type={"output": np.array([6])})},
        edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")])
    spikes_in = (rng.random((50, 4, 9)) < 0.4).astype(np.float64)
    euler = _euler_lif(spikes_in, W, tau, r, th, 1.0)
    with torch.no_grad():
        got = from_nir(graph, dt=1.0, to="torch", dtype=np.float64)(torch.from_numpy(spikes_in.transpose(1, 0, 2)))
    assert euler.sum() > 0
    np.testing.assert_array_equal(got.numpy().transpose(1, 0, 2), euler)


def test_import_is_float32_by_default_and_runs_float32_inputs():
    """A PyTorch user's input is float32: the imported layers take it (nn.Linear was float64 and refused it)."""
    torch = pytest.importorskip("torch")
    seq = from_nir(to_nir(_net()), to="torch")
    assert seq[0].weight.dtype == torch.float32
    out = seq(torch.rand(2, 20, 12))
    assert out.dtype == torch.float32 and out.shape == (2, 20, 4)
    assert from_nir(to_nir(_net())).dtype == np.float32


def _two_layers():
    """Two LIF layers (reset to zero, as NIR's neurons) with weights large enough to spike, and 60 steps of input."""
    import torch

    from ift_snn.integrations.torch import LIF

    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=False), LIF(0.8, reset="zero"),
                              torch.nn.Linear(5, 3, bias=False), LIF(0.9, 0.7, reset="zero"))
    with torch.no_grad():
        seq[0].weight.mul_(3)
        seq[2].weight.mul_(3)
    x = (torch.rand(60, 4, 6) < 0.4).float()
    with torch.no_grad():
        ours = seq(x.transpose(0, 1)).transpose(0, 1)
    return seq, x, ours


def _step(imported, x):
    """The spikes of a peer's imported graph, stepped one time step at a time with its own state."""
    import torch

    state, out = None, []
    with torch.no_grad():
        for t in range(x.shape[0]):
            o, state = imported(x[t], state)
            out.append(o)
    return torch.stack(out)


def test_snntorch_imports_the_export_with_the_same_spikes():
    """snnTorch's NIR importer (snntorch.import_nir, through nirtorch) steps a LIF with its own dt = 1e-4 s:
    exported with that dt, two layers give exactly the spikes of the ift_snn layers."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("nirtorch")
    from snntorch.import_nir import import_from_nir

    seq, x, ours = _two_layers()
    theirs = _step(import_from_nir(to_nir(seq, dt=1e-4)), x)
    assert ours.sum() > 10 and torch.equal(ours, theirs)


def test_spikingjelly_imports_the_export_with_the_same_spikes():
    """SpikingJelly's importer reads r = tau/dt as its LIFNode(decay_input=False): the same spikes."""
    torch = pytest.importorskip("torch")
    sj = pytest.importorskip("spikingjelly.activation_based.nir_exchange.from_nir")

    seq, x, ours = _two_layers()
    theirs = _step(sj.import_from_nir(to_nir(seq, dt=1e-4), dt=1e-4), x)
    assert ours.sum() > 10 and torch.equal(ours, theirs)


def test_norse_imports_the_export_with_folded_r_with_the_same_spikes():
    """Norse's from_nir ignores a LIF's r (it warns): exported with fold_r=True (r = 1, the weights times
    tau/dt, the same NIR dynamics) it gives exactly the spikes of the ift_snn layers; without, it does not."""
    torch = pytest.importorskip("torch")
    norse = pytest.importorskip("norse.torch")

    seq, x, ours = _two_layers()
    theirs = _step(norse.from_nir(to_nir(seq, dt=1e-3, fold_r=True), dt=1e-3), x)
    assert ours.sum() > 10 and torch.equal(ours, theirs)
    unfolded = _step(norse.from_nir(to_nir(seq, dt=1e-3), dt=1e-3, ignore_warnings=True), x)
    assert not torch.equal(ours, unfolded)


def test_folding_r_into_the_weights_keeps_the_nir_dynamics():
    """fold_r changes how the graph is written, not what it computes: r = 1 (and w_in = 1) in every neuron node,
    and imported back here the graph gives the network's spikes, for LIF, CubaLIF and IF layers."""
    net = _net()
    x = (np.random.default_rng(3).random((60, 5, 12)) < 0.3).astype(np.float64)
    want = _spikes(net, x)
    graph = to_nir(net, dt=1e-3, fold_r=True)
    neurons = [n for n in graph.nodes.values() if isinstance(n, (nir.LIF, nir.CubaLIF, nir.IF))]
    assert len(neurons) == 3 and all(np.all(n.r == 1) for n in neurons)
    assert np.all(neurons[1].w_in == 1)
    assert not np.allclose(graph.nodes["linear0"].weight, to_nir(net, dt=1e-3).nodes["linear0"].weight)  # the gain went into the weights
    assert all(s.any() for s in want)
    for s, s2 in zip(want, _spikes(from_nir(graph, dtype=np.float64), x)):
        np.testing.assert_array_equal(s2, s)


def _recurrent_net():
    return Network([8, 6, 4], [ift_snn.lif(0.85, reset="zero"), ift_snn.cuba_lif(0.9, 0.7, reset="zero")], seed=0,
                   dtype=np.float64, recurrent=True, init_gain=3.0, recurrent_gain=2.0)


def test_a_recurrent_layer_is_a_loop_and_round_trips(tmp_path):
    """A recurrent hidden layer exports as neuron -> Linear(V) -> neuron (the edge back: last step's spikes) and
    imports back, through a file, to a Network and to an nn.Sequential with a RecurrentSpikingLayer, with the
    same spikes; the Sequential exports to the same graph."""
    net = _recurrent_net()
    x = (np.random.default_rng(0).random((60, 3, 8)) < 0.4).astype(np.float64)
    want = _spikes(net, x)
    graph = to_nir(net, dt=1e-3)
    assert ("neuron0", "recurrent0") in graph.edges and ("recurrent0", "neuron0") in graph.edges
    path = tmp_path / "rec.nir"
    nir.write(str(path), graph)
    back = from_nir(path, dtype=np.float64)
    np.testing.assert_allclose(back.recurrent[0], net.recurrent[0], rtol=1e-12)
    assert all(s.sum() > 0 for s in want)
    for s, s2 in zip(want, _spikes(back, x)):
        np.testing.assert_array_equal(s2, s)
    torch = pytest.importorskip("torch")
    seq = from_nir(path, to="torch", dtype=np.float64)
    with torch.no_grad():
        out = seq(torch.from_numpy(x.transpose(1, 0, 2).copy()))
    np.testing.assert_array_equal(out.numpy().transpose(1, 0, 2), want[-1])
    again = to_nir(seq, dt=1e-3)
    assert list(again.nodes) == list(graph.nodes) and sorted(again.edges) == sorted(graph.edges)
    np.testing.assert_allclose(again.nodes["recurrent0"].weight, graph.nodes["recurrent0"].weight, rtol=1e-12)


def test_spikingjelly_imports_the_recurrent_export_with_the_same_spikes():
    torch = pytest.importorskip("torch")
    sj = pytest.importorskip("spikingjelly.activation_based.nir_exchange.from_nir")
    net = Network([8, 6, 4], [ift_snn.lif(0.85, reset="zero"), ift_snn.lif(0.9, reset="zero")], seed=0,
                  dtype=np.float64, recurrent=True, init_gain=3.0, recurrent_gain=2.0)
    x = (np.random.default_rng(0).random((60, 3, 8)) < 0.4).astype(np.float64)
    want = _spikes(net, x)[-1]
    imported = sj.import_from_nir(to_nir(net, dt=1e-4), dt=1e-4, dtype=torch.float64)
    state, out = None, []
    with torch.no_grad():
        for t in range(60):
            o, state = imported(torch.from_numpy(x[t]), state)
            out.append(o)
    assert want.sum() > 10
    np.testing.assert_array_equal(torch.stack(out).numpy(), want)


def test_a_recurrent_loop_of_the_wrong_shape_or_with_a_bias_is_refused():
    graph = to_nir(_recurrent_net())
    graph.nodes["recurrent0"] = nir.Linear(weight=np.zeros((6, 5)))
    with pytest.raises(ValueError, match=r"'recurrent0' \(the recurrent loop of 'neuron0'\) has weight shape \(6, 5\)"):
        from_nir(graph)
    graph.nodes["recurrent0"] = nir.Affine(weight=np.zeros((6, 6)), bias=np.ones(6))
    with pytest.raises(ValueError, match="nonzero bias"):
        from_nir(graph)
