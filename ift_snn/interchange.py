"""NIR (the Neuromorphic Intermediate Representation, the ``nir`` package): export and import of dense networks.

NIR describes neurons in continuous time; a discrete ift_snn layer is its forward-Euler step of length
``dt``, as snnTorch and Norse write it::

    LIF      tau dv/dt = (v_leak - v) + r I          v[n] = (1 - dt/tau) v[n-1] + (dt r / tau) I[n]
    IF       dv/dt = r I                             v[n] = v[n-1] + dt r I[n]
    CubaLIF  tau_syn dI/dt = -I + w_in S            I[n] = (1 - dt/tau_syn) I[n-1] + (dt w_in / tau_syn) S[n]
             tau_mem dv/dt = (v_leak - v) + r I      v[n] = (1 - dt/tau_mem) v[n-1] + (dt r / tau_mem) I[n]

with a spike where v > v_threshold and v set to v_reset. So an ift_snn model has a NIR node when its reset
is to zero (``reset="zero"``) and its spike single: ``lif`` (alpha = 1 - dt/tau), ``if`` and ``cuba_lif``
(alpha_mem, alpha_syn). Export writes input gains of 1 (r = tau/dt, w_in = tau_syn/dt, the way snnTorch
exports); import folds any other gain into the weights of the Linear/Affine before the node, which is
exact because the layers are linear in their input. Not representable, and refused with the reason: the
subtractive reset (ift_snn's default; NIR's neurons reset to v_reset), multi-spike and max-k spikes, a clip
(``u_min``), kernels of a general SRM, per-neuron parameters that differ (ift_snn's models share one value
per layer), a nonzero v_leak, v_reset or bias. NIR has no surrogate: an imported network gets
``surrogate`` (exponential by default). The threshold is compared with >= here and > in NIR: the two
differ only where a membrane equals theta exactly.
"""

from __future__ import annotations

import numpy as np

from .models import NeuronModel, cuba_lif, if_neuron, lif
from .network import Network

__all__ = ["to_nir", "from_nir", "NIR_NODES"]

#: The ift_snn models that have a NIR node (with reset="zero" and single spikes), by name.
NIR_NODES = {"lif": "LIF", "if": "IF", "cuba_lif": "CubaLIF"}


def _require_nir():
    try:
        import nir
    except ImportError as exc:
        raise ImportError("NIR export and import need the nir package: pip install 'ift-snn[nir]'") from exc
    return nir


def _check_dt(dt: float) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating)) or not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt={dt!r}: expected the time step as a finite number > 0")
    return float(dt)


def _node(model: NeuronModel, n: int, dt: float, layer: int):
    """The NIR node of one layer of ``n`` neurons of ``model``."""
    nir = _require_nir()
    where = f"layer {layer} ({model!r})"
    if model.name not in NIR_NODES:
        raise ValueError(f"{where} has no NIR node: NIR describes LIF, IF and CubaLIF neurons "
                         f"({', '.join(NIR_NODES)} here)")
    if model.reset != "zero":
        raise ValueError(f"{where} resets by subtraction; NIR's neurons reset to v_reset: export a model built with "
                         f"reset='zero' ({model.name}(..., reset='zero'))")
    if model.spike != "single" or model.u_min is not None:
        raise ValueError(f"{where}: NIR has single spikes and no clip (spike={model.spike!r}, u_min={model.u_min})")
    p = dict(model.params)
    full = lambda v: np.full(n, v, dtype=np.float64)  # noqa: E731
    zeros = full(0.0)
    if model.name == "if" or (model.name == "lif" and p["alpha"] == 1):  # alpha = 1: no leak, an IF
        return nir.IF(r=full(1.0 / dt), v_threshold=full(p["theta"]), v_reset=zeros)
    if model.name == "lif":
        tau = dt / (1.0 - p["alpha"])
        return nir.LIF(tau=full(tau), r=full(tau / dt), v_leak=zeros, v_threshold=full(p["theta"]), v_reset=zeros)
    tau_mem, tau_syn = dt / (1.0 - p["alpha_mem"]), dt / (1.0 - p["alpha_syn"])
    return nir.CubaLIF(tau_syn=full(tau_syn), tau_mem=full(tau_mem), r=full(tau_mem / dt), v_leak=zeros,
                       v_threshold=full(p["theta"]), v_reset=zeros, w_in=full(tau_syn / dt))


def to_nir(net: Network, dt: float = 1.0):
    """``net`` as a ``nir.NIRGraph``: input -> (Linear -> neuron) per layer -> output, steps of length ``dt``.

    Linear weights are W_l^T (NIR and PyTorch store (out, in)); each layer's model becomes its NIR node
    (:data:`NIR_NODES`, module docstring). The readouts of local blocks are training aids, not part of the
    graph. Raises ValueError naming the layer whose model NIR cannot describe.
    """
    nir = _require_nir()
    if not isinstance(net, Network):
        raise TypeError(f"to_nir exports an ift_snn.network.Network, got {type(net).__name__}")
    dt = _check_dt(dt)
    nodes = {"input": nir.Input(input_type={"input": np.array([net.sizes[0]])})}
    edges, last = [], "input"
    for k, (W, model) in enumerate(zip(net.weights, net.models)):
        W = np.asarray(W if isinstance(W, np.ndarray) else W.get(), dtype=np.float64)
        nodes[f"linear{k}"] = nir.Linear(weight=W.T.copy())
        nodes[f"neuron{k}"] = _node(model, W.shape[1], dt, k)
        edges += [(last, f"linear{k}"), (f"linear{k}", f"neuron{k}")]
        last = f"neuron{k}"
    nodes["output"] = nir.Output(output_type={"output": np.array([net.sizes[-1]])})
    edges.append((last, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"ift_snn_dt": dt})


def _uniform(node, field: str, name: str) -> float:
    values = np.asarray(getattr(node, field), dtype=np.float64).ravel()
    if values.size == 0 or not np.all(values == values[0]):
        raise ValueError(f"NIR node {name!r}: {field} differs between neurons; ift_snn's models share one value per "
                         "layer (per-neuron parameters are not supported yet)")
    return float(values[0])


def _model_of(node, name: str, dt: float, surrogate) -> tuple[NeuronModel, float]:
    """(model, input gain) of a NIR neuron node; the gain is folded into the weights before it."""
    nir = _require_nir()
    kind = type(node).__name__
    for field in ("v_leak", "v_reset"):
        if hasattr(node, field) and getattr(node, field) is not None and _uniform(node, field, name) != 0:
            raise ValueError(f"NIR node {name!r} ({kind}) has {field} != 0; ift_snn's neurons rest at 0 and reset to 0")
    theta = _uniform(node, "v_threshold", name) if hasattr(node, "v_threshold") else None
    if theta is not None and not theta > 0:
        raise ValueError(f"NIR node {name!r}: v_threshold {theta} must be > 0")

    def decay(tau_field: str) -> float:
        tau = _uniform(node, tau_field, name)
        if not tau >= dt:
            raise ValueError(f"NIR node {name!r}: {tau_field} = {tau} is shorter than the step dt = {dt}: the Euler "
                             "step would not decay (1 - dt/tau < 0); import with a smaller dt")
        return (1.0 - dt / tau), tau

    if isinstance(node, nir.IF):
        return if_neuron(theta, reset="zero", surrogate=surrogate), dt * _uniform(node, "r", name)
    if isinstance(node, nir.LIF):
        alpha, tau = decay("tau")
        return lif(alpha, theta, reset="zero", surrogate=surrogate), dt * _uniform(node, "r", name) / tau
    if isinstance(node, nir.CubaLIF):
        alpha_mem, tau_mem = decay("tau_mem")
        alpha_syn, tau_syn = decay("tau_syn")
        gain = (dt * _uniform(node, "w_in", name) / tau_syn) * (dt * _uniform(node, "r", name) / tau_mem)
        return cuba_lif(alpha_mem, alpha_syn, theta, reset="zero", surrogate=surrogate), gain
    raise ValueError(f"NIR node {name!r} is a {kind}; ift_snn imports LIF, IF and CubaLIF neurons "
                     "(between Linear or Affine layers)")


def from_nir(graph, dt: float | None = None, *, surrogate="exponential", dtype=np.float64) -> Network:
    """The dense ``Network`` of a NIR graph: input -> (Linear or Affine -> LIF/IF/CubaLIF) ... -> output, one path.

    ``graph``: a ``nir.NIRGraph`` or a path to a NIR file (``nir.read``); ``dt``: the step (default: the
    one an ift_snn export recorded, else 1). Each node's input gain is folded into the weights before it
    (module docstring). Raises ValueError naming the node that ift_snn cannot represent.
    """
    nir = _require_nir()
    if not isinstance(graph, nir.NIRGraph):
        graph = nir.read(str(graph))
    if dt is None:
        dt = float(graph.metadata.get("ift_snn_dt", 1.0)) if isinstance(graph.metadata, dict) else 1.0
    dt = _check_dt(dt)
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    starts = [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(starts) != 1:
        raise ValueError(f"the NIR graph has {len(starts)} Input nodes; ift_snn imports a chain with one input")
    weights, models, name = [], [], starts[0]
    pending = None
    while True:
        nxt = succ.get(name, [])
        if not nxt:
            break
        if len(nxt) != 1:
            raise ValueError(f"NIR node {name!r} feeds {len(nxt)} nodes; ift_snn imports a chain (no branches)")
        name = nxt[0]
        node = graph.nodes[name]
        if isinstance(node, nir.Output):
            break
        if isinstance(node, (nir.Linear, nir.Affine)):
            if pending is not None:
                raise ValueError(f"NIR nodes {pending[0]!r} and {name!r}: two linear layers in a row")
            if isinstance(node, nir.Affine) and np.any(np.asarray(node.bias) != 0):
                raise ValueError(f"NIR node {name!r} (Affine) has a nonzero bias; ift_snn's layers have none")
            pending = (name, np.asarray(node.weight, dtype=np.float64).T)
            continue
        if pending is None:
            raise ValueError(f"NIR node {name!r} ({type(node).__name__}) follows no Linear or Affine layer")
        model, gain = _model_of(node, name, dt, surrogate)
        weights.append(pending[1] * gain)
        models.append(model)
        pending = None
    if not isinstance(graph.nodes.get(name), nir.Output) or pending is not None or not models:
        raise ValueError("the NIR graph is not input -> (Linear or Affine -> neuron) ... -> output")
    sizes = [weights[0].shape[0]] + [W.shape[1] for W in weights]
    net = Network(sizes, models, dtype=dtype)
    net.weights = [W.astype(net.dtype) for W in weights]
    return net
