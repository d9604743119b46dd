"""Hostile or careless NIR graphs (ift_snn/integrations/nir.py, from_nir) are refused with a one-line ValueError that
names the node, the value and what was expected, before any large allocation or long work: a cycle (H2);
weights that do not chain, are not 2-D, are not arrays or declare more than MAX_WEIGHTS entries (in memory or
in a small file); NaN or inf in weights, biases and neuron parameters; neuron parameters of the wrong length
(M5). A property test: random small chains, some broken, import or raise ValueError, never anything else."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ift_snn
from ift_snn.integrations import nir as interchange
from ift_snn.integrations.nir import from_nir, to_nir
from ift_snn.training.network import Network

nir = pytest.importorskip("nir")
# an IF neuron reset to zero has no stable surrogate scale and warns so; not what these tests are about
pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.symbolic.stability.UnstableModelWarning")

try:  # imported here, so that the property test's time limit does not count the first import
    import torch

    import ift_snn.integrations.torch  # noqa: F401
except ImportError:  # pragma: no cover - torch is optional
    torch = None


def _net() -> Network:
    models = [ift_snn.lif(0.85, 0.9, reset="zero"), ift_snn.cuba_lif(0.8, 0.6, 1.1, reset="zero"),
              ift_snn.if_neuron(1.3, reset="zero")]
    return Network([9, 7, 5, 4], models, seed=0, dtype=np.float64, init_gain=3.0)


def _graph(nodes: dict, edges: list) -> nir.NIRGraph:
    """A graph as given: nir's own type check off, the way a careless exporter (or a hostile file) leaves it."""
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _refused(graph, match: str, **kwargs) -> str:
    """from_nir(graph) raises a one-line ValueError matching ``match``; its message."""
    with pytest.raises(ValueError, match=match) as info:
        from_nir(graph, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


class _WatchedNodes(dict):
    """The nodes of a graph, counting the lookups of a walk: one that loops is stopped (and fails the test)
    after ``limit`` of them, with no timer and no memory grown."""

    def __init__(self, *args, limit: int = 1000, **kwargs):
        super().__init__(*args, **kwargs)
        self.lookups, self.limit = 0, limit

    def __getitem__(self, key):
        self.lookups += 1
        if self.lookups > self.limit:
            raise RuntimeError(f"from_nir looked up {self.lookups} nodes of a graph of {len(self)}: it loops")
        return super().__getitem__(key)


# H2 ---------------------------------------------------------------------------------------------------------


def test_a_recurrent_loop_that_reaches_no_output_is_refused():
    """input -> linear0 -> neuron0 -> linear1 -> back to neuron0: linear1 is neuron0's recurrent loop (a recurrent
    layer), and the path then ends at neuron0, not at the output: refused, quickly."""
    good = to_nir(_net())
    nodes = _WatchedNodes({k: good.nodes[k] for k in ["input", "linear0", "neuron0", "linear1", "output"]})
    graph = _graph(nodes, [("input", "linear0"), ("linear0", "neuron0"), ("neuron0", "linear1"),
                           ("linear1", "neuron0")])
    nodes.lookups = 0
    start = time.perf_counter()
    _refused(graph, "is not input -> ")
    assert time.perf_counter() - start < 0.5 and nodes.lookups <= 20


@pytest.mark.parametrize("back_to", ["linear0", "input"])
def test_a_cycle_is_refused_naming_its_nodes(back_to):
    """input -> linear0 -> neuron0 -> linear1 -> back to neuron0 (or to linear0, or to the input) looped forever
    while memory grew; now the walk refuses the node reached twice, naming the cycle."""
    good = to_nir(_net())
    keep = ["input", "linear0", "neuron0", "linear1"]
    nodes = _WatchedNodes({k: good.nodes[k] for k in keep + ["output"]})
    graph = _graph(nodes, [("input", "linear0"), ("linear0", "neuron0"), ("neuron0", "linear1"),
                           ("linear1", back_to)])
    nodes.lookups = 0
    start = time.perf_counter()
    message = _refused(graph, "the NIR graph has a cycle")
    assert time.perf_counter() - start < 0.5 and nodes.lookups <= 10
    cycle = keep[keep.index(back_to):] + [back_to]
    assert " -> ".join(repr(k) for k in cycle) in message and f"node {back_to!r} is reached twice" in message


# M5: shapes ----------------------------------------------------------------------------------------------------


def test_weights_that_do_not_chain_are_refused():
    """A Linear whose input size is not the layer before it, a neuron node whose size is not its Linear's
    output size, a first Linear that does not take the Input's size, an Output of another size."""
    graph = to_nir(_net())
    graph.nodes["linear1"].weight = np.ones((5, 9))  # the layer before it (neuron0) has 7 neurons
    _refused(graph, r"^NIR node 'linear1' has weight shape \(5, 9\), but the layer before it \('neuron0'\) has 7 "
                    r"neurons: expected \(n, 7\)$")
    graph = to_nir(_net())
    graph.nodes["linear0"].weight = np.ones((7, 6))
    _refused(graph, r"'linear0' has weight shape \(7, 6\), but the input node 'input' declares 9 inputs: "
                    r"expected \(n, 9\)")
    graph = to_nir(_net())
    for field in ("tau", "r", "v_leak", "v_threshold", "v_reset"):  # 6 LIF neurons after a Linear with 7 outputs
        setattr(graph.nodes["neuron0"], field, np.resize(getattr(graph.nodes["neuron0"], field), 6))
    _refused(graph, r"'neuron0' \(LIF\) has tau of shape \(6,\), but the Linear 'linear0' before it has 7 "
                    r"outputs: expected one value or \(7,\)")
    graph = to_nir(_net())
    graph.nodes["output"].output_type = {"output": np.array([3])}
    _refused(graph, r"'output' \(the Output\) declares 3 outputs, but the layer before it \('neuron2'\) has 4")


def test_weights_that_are_not_2d_or_not_arrays_are_refused():
    graph = to_nir(_net())
    graph.nodes["linear1"] = nir.Linear(weight=np.ones((2, 5, 7)))  # nir takes >= 2-D (a batch of matrices)
    _refused(graph, r"^NIR node 'linear1' has weight shape \(2, 5, 7\): expected a 2-D array \(out, in\)")
    graph = to_nir(_net())
    graph.nodes["linear0"].weight = {"rows": 7, "cols": 9}
    _refused(graph, r"NIR node 'linear0' has weight shape \(\): expected a 2-D array")
    graph = to_nir(_net())
    graph.nodes["linear0"].weight = np.array([["a"] * 9] * 7)
    _refused(graph, r"NIR node 'linear0' has weight of dtype <U1 .*: expected real numbers")


def test_neuron_parameters_of_the_wrong_length_are_refused():
    """Thresholds of length 5 for a layer of 7 neurons (the other parameters right): refused naming the node,
    the shape and the 7 expected; one value for all neurons stays allowed."""
    graph = to_nir(_net())
    graph.nodes["neuron0"].v_threshold = np.linspace(0.5, 1.0, 5)
    _refused(graph, r"^NIR node 'neuron0' \(LIF\) has v_threshold of shape \(5,\), but the Linear 'linear0' before "
                    r"it has 7 outputs: expected one value or \(7,\)$", to="torch")
    graph = to_nir(_net())
    graph.nodes["neuron0"].v_threshold = np.full(5, 0.9)  # all equal: was read as one value, silently
    _refused(graph, r"'neuron0' \(LIF\) has v_threshold of shape \(5,\)")
    graph = to_nir(_net())
    graph.nodes["neuron1"].w_in = np.ones(3)
    _refused(graph, r"'neuron1' \(CubaLIF\) has w_in of shape \(3,\), but the Linear 'linear1' before it has 5 ")
    graph = to_nir(_net())
    graph.nodes["neuron0"].v_threshold = np.array(0.9)  # one value: broadcast to the layer
    assert isinstance(from_nir(graph), Network)


# M5: values ----------------------------------------------------------------------------------------------------

_NON_FINITE = [("linear0", "weight", np.nan), ("linear1", "weight", np.inf), ("affine", "bias", np.nan)] + [
    ("neuron0", f, v) for f, v in [("tau", np.nan), ("r", np.inf), ("v_threshold", np.nan), ("v_leak", np.nan),
                                   ("v_reset", -np.inf)]] + [
    ("neuron1", f, np.nan) for f in ("tau_syn", "tau_mem", "w_in", "r", "v_threshold", "v_leak")] + [
    ("neuron2", f, np.inf) for f in ("r", "v_threshold", "v_reset")]


@pytest.mark.parametrize("node,field,value", _NON_FINITE)
def test_nan_and_inf_are_refused_naming_node_and_field(node, field, value):
    graph = to_nir(_net())
    if node == "affine":
        node = "linear0"
        graph.nodes[node] = nir.Affine(weight=graph.nodes[node].weight, bias=np.zeros(7))
    held = np.array(getattr(graph.nodes[node], field), dtype=np.float64)
    held.flat[min(2, held.size - 1)] = value
    setattr(graph.nodes[node], field, held)
    where = r"\(0, 2\)" if field == "weight" else r"\(2,\)"
    _refused(graph, rf"^NIR node '{node}' has {field} {value} at index {where} \(1 of \d+ values not finite\): "
                    r"expected finite numbers$", to="torch")


# M5: size ------------------------------------------------------------------------------------------------------


class _Declared:
    """An array-like that declares a shape (as a lazy or sparse array does) and fails the test if converted."""

    def __init__(self, shape):
        self.shape = shape

    def __array__(self, *args, **kwargs):
        raise AssertionError(f"from_nir converted a declared {self.shape} weight instead of refusing it")


def _huge_graph(weight) -> nir.NIRGraph:
    n_in, n_out = weight.shape[1], weight.shape[0]
    ones = np.ones(n_out)
    return _graph({"input": nir.Input(input_type={"input": np.array([n_in])}), "fc": nir.Linear(weight=weight),
                   "lif": nir.LIF(tau=5 * ones, r=5 * ones, v_leak=0 * ones, v_threshold=ones, v_reset=0 * ones),
                   "output": nir.Output(output_type={"output": np.array([n_out])})},
                  [("input", "fc"), ("fc", "lif"), ("lif", "output")])


def test_a_huge_declared_weight_is_refused_before_it_is_allocated(tmp_path):
    """A 30000 x 30000 weight (6.7 GiB in float64): in memory (an array-like that only declares its shape, a
    broadcast view of one number) and in a NIR file of a few kB that declares it; refused from the shape, naming
    MAX_WEIGHTS, before any conversion or read."""
    assert interchange.MAX_WEIGHTS == 50_000_000
    expected = r"^NIR node 'fc' has weight shape \(30000, 30000\): the graph's weights up to it hold 900000000 " \
               r"entries, more than MAX_WEIGHTS = 50000000 \(ift_snn.integrations.nir.MAX_WEIGHTS\): refused"
    _refused(_huge_graph(_Declared((30000, 30000))), expected)
    _refused(_huge_graph(np.broadcast_to(np.float64(0.1), (30000, 30000))), expected, to="torch")

    h5py = pytest.importorskip("h5py")
    path = tmp_path / "huge.nir"
    nir.write(str(path), to_nir(_net()))
    with h5py.File(path, "r+") as f:  # declared, never written: the file keeps a few chunks of fill value
        del f["node/nodes/linear0/weight"]
        f["node/nodes/linear0"].create_dataset("weight", shape=(30000, 30000), dtype="f8", chunks=(1000, 1000),
                                               compression="gzip")
    assert path.stat().st_size < 100_000
    _refused(path, r"^NIR file '.*huge.nir': node 'linear0' declares weight of shape \(30000, 30000\): the file's "
                   r"weights up to it hold 900000000 entries, more than MAX_WEIGHTS = 50000000")


def test_a_weight_that_is_not_array_like_or_too_many_in_all_is_refused(monkeypatch):
    """Several weights are counted together against MAX_WEIGHTS (the one that passes it is named), and a weight
    object with no shape is refused, not converted."""
    monkeypatch.setattr(interchange, "MAX_WEIGHTS", 9 * 7 + 7 * 5 - 1)
    _refused(to_nir(_net()), r"'linear1' has weight shape \(5, 7\): the graph's weights up to it hold 98 entries, "
                             r"more than MAX_WEIGHTS = 97")
    monkeypatch.setattr(interchange, "MAX_WEIGHTS", 50_000_000)
    graph = to_nir(_net())
    graph.nodes["linear0"].weight = object()
    _refused(graph, r"^NIR node 'linear0' has weight shape \(\): expected a 2-D array \(out, in\)")


def test_a_file_that_is_not_a_small_nir_graph_is_refused(tmp_path):
    """What nir.read would choke on, loop on or fill memory with: not HDF5, a hard link that makes the file's
    tree endless, a huge declared neuron parameter; each a ValueError naming the file, before reading."""
    h5py = pytest.importorskip("h5py")
    junk = tmp_path / "junk.nir"
    junk.write_text("not a NIR file")
    _refused(junk, r"^NIR file '.*junk.nir' is not an HDF5 file: expected a file written by nir.write$")
    loop, tau = tmp_path / "loop.nir", tmp_path / "tau.nir"
    for path in (loop, tau):
        nir.write(str(path), to_nir(_net()))
    with h5py.File(loop, "r+") as f:
        f["node/nodes/linear0/again"] = f["node/nodes/linear0"]  # a group that holds itself
    _refused(loop, r"^NIR file '.*loop.nir' nests groups deeper than 64 levels \(nodes/linear0/again/again")
    with h5py.File(tau, "r+") as f:
        del f["node/nodes/neuron0/tau"]
        f["node/nodes/neuron0"].create_dataset("tau", shape=(10**9,), dtype="f8", chunks=(10**6,),
                                               compression="gzip")
    _refused(tau, r"node 'neuron0' declares tau of shape \(1000000000,\) \(float64\): .* more than MAX_WEIGHTS")


# Property: anything random and small imports or raises ValueError ---------------------------------------------


def _params(draw, n: int, kind: str) -> dict:
    size = draw(st.integers(0, 4)) if draw(st.integers(0, 5)) == 5 else n  # sometimes the wrong length
    def values(lo, hi):  # noqa: E306
        if draw(st.booleans()):
            return np.full(size, draw(st.floats(lo, hi)))
        return np.array(draw(st.lists(st.floats(lo, hi), min_size=size, max_size=size)), dtype=np.float64)
    common = {"r": values(0.1, 4.0), "v_threshold": values(0.2, 2.0), "v_reset": np.zeros(size)}
    if kind == "IF":
        return common
    common["v_leak"] = values(-1.0, 1.0) if draw(st.integers(0, 5)) == 5 else np.zeros(size)
    if kind == "LIF":
        return {"tau": values(1.0, 20.0), **common}
    return {"tau_syn": values(1.0, 20.0), "tau_mem": values(1.0, 20.0), "w_in": values(0.5, 2.0), **common}


@st.composite
def _chains(draw):
    """A random chain input -> (Linear or Affine -> IF/LIF/CubaLIF) x 1-3 -> output; sometimes a shape that does
    not chain, a weight that is not 2-D, a NaN or inf, a cycle."""
    sizes = draw(st.lists(st.integers(1, 5), min_size=2, max_size=4))
    nodes = {"in": nir.Input(input_type={"input": np.array([sizes[0]])})}
    edges, last = [], "in"
    for k, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        shape = draw(st.sampled_from([(n_out, n_in + 1), (n_out + 1, n_in), (2, n_out, n_in), (n_out,)])) if draw(
            st.integers(0, 5)) == 5 else (n_out, n_in)
        W = np.asarray(draw(st.lists(st.floats(-3, 3), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),
                       dtype=np.float64).reshape(shape)
        lin = nir.Linear(weight=np.zeros((1, 1)))
        if draw(st.booleans()):
            lin = nir.Affine(weight=np.zeros((1, 1)), bias=np.zeros(1))
            lin.bias = np.zeros(n_out) if draw(st.booleans()) else np.full(n_out, draw(st.floats(-1, 1)))
        lin.weight = W  # set after construction: nir checks nothing then, as a careless exporter's graph
        kind = draw(st.sampled_from(["IF", "LIF", "CubaLIF"]))
        nodes[f"lin{k}"], nodes[f"neu{k}"] = lin, getattr(nir, kind)(**_params(draw, n_out, kind))
        edges += [(last, f"lin{k}"), (f"lin{k}", f"neu{k}")]
        last = f"neu{k}"
    nodes["out"] = nir.Output(output_type={"output": np.array([sizes[-1]])})
    chain = [k for k in nodes if k not in ("in", "out")]
    held_by = [(name, f) for name in chain for f in ("weight", "bias", "tau", "tau_syn", "tau_mem", "r",
                                                      "v_threshold", "w_in", "v_leak")
               if isinstance(getattr(nodes[name], f, None), np.ndarray) and getattr(nodes[name], f).size]
    if draw(st.integers(0, 3)) == 3:  # a NaN or inf somewhere
        name, field = draw(st.sampled_from(held_by))
        held = getattr(nodes[name], field).copy()
        held.flat[draw(st.integers(0, held.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        setattr(nodes[name], field, held)
    edges.append((last, draw(st.sampled_from(["out", "in"] + chain)) if draw(st.integers(0, 3)) == 3 else "out"))
    return nir.NIRGraph(nodes=_WatchedNodes(nodes, limit=100), edges=edges, type_check=False)  # no endless walk


@settings(max_examples=30, deadline=None)
@given(graph=_chains(), to=st.sampled_from(["network", "torch"] if torch is not None else ["network"]))
def test_random_small_chains_import_or_raise_value_error(graph, to):
    """A clear error or a network, within 2 s and 500 MB (the process's peak resident memory may not rise more)."""
    import resource

    start = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    try:
        got = from_nir(graph, to=to)
    except ValueError as exc:
        assert "\n" not in str(exc), str(exc)
    else:
        assert isinstance(got, Network) if to == "network" else isinstance(got, torch.nn.Sequential)
    assert time.perf_counter() - start < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 500 * 1024
