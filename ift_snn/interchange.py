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
(``u_min``), kernels of a general SRM, a nonzero v_leak or v_reset (and a bias, for a ``Network``; an ``nn.Sequential`` keeps it in its
``nn.Linear``). Both a dense :class:`~ift_snn.network.Network` and an ``nn.Sequential`` of ``nn.Linear`` and
``SpikingLayer`` modules export, and import to either. NIR has no surrogate: an imported network gets
``surrogate`` (by default "exponential", its scale the largest stable one for every neuron's values, at most
1; an IF neuron with NIR's reset to zero has none and warns). The threshold is compared with >= here and > in NIR: the two
differ only where a membrane equals theta exactly. Values that differ between neurons (tau, v_threshold,
r, w_in per neuron) are per-neuron values of a ``SpikingLayer`` (``values=``): they export from and import
to an ``nn.Sequential``; a ``Network``'s models share one value per layer (import with ``to="torch"``).
"""

from __future__ import annotations

import numpy as np

from .models import NeuronModel, chooses_scale, cuba_lif, if_neuron, lif
from .network import Network
from .stability import stable_default

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


def _node(model: NeuronModel, n: int, dt: float, layer: int, per=None):
    """The NIR node of one layer of ``n`` neurons of ``model``; ``per``: {parameter: (n,) values} that replace
    the model's (per-neuron values of a SpikingLayer)."""
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
    p = {**dict(model.params), **(per or {})}
    full = lambda v: np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy()  # noqa: E731
    zeros = full(0.0)
    leakless = [k for k in ("alpha", "alpha_mem", "alpha_syn") if k in p and np.any(full(p[k]) == 1)]
    if model.name == "lif" and np.all(full(p["alpha"]) == 1):  # alpha = 1: no leak, an IF
        leakless = []
        p = {**p, "alpha": None}
    if leakless:
        raise ValueError(f"{where}: {leakless[0]} = 1 (no leak) for some neurons but not all; NIR's {NIR_NODES[model.name]} "
                         "needs a finite tau for every neuron")
    if model.name == "if" or p.get("alpha", 0) is None:
        return nir.IF(r=full(1.0 / dt), v_threshold=full(p["theta"]), v_reset=zeros)
    if model.name == "lif":
        tau = dt / (1.0 - full(p["alpha"]))
        return nir.LIF(tau=full(tau), r=full(tau / dt), v_leak=zeros, v_threshold=full(p["theta"]), v_reset=zeros)
    tau_mem, tau_syn = dt / (1.0 - full(p["alpha_mem"])), dt / (1.0 - full(p["alpha_syn"]))
    return nir.CubaLIF(tau_syn=full(tau_syn), tau_mem=full(tau_mem), r=full(tau_mem / dt), v_leak=zeros,
                       v_threshold=full(p["theta"]), v_reset=zeros, w_in=full(tau_syn / dt))


def _layers_of(obj) -> list[tuple[np.ndarray, np.ndarray | None, NeuronModel, dict]]:
    """(weight (out, in), bias or None, model, {parameter: per-neuron values}) per layer of a Network or of an
    nn.Sequential of nn.Linear and ift_snn SpikingLayer modules (the layers' present parameter values)."""
    if isinstance(obj, Network):
        return [(np.asarray(W if isinstance(W, np.ndarray) else W.get(), dtype=np.float64).T.copy(), None, m, {})
                for W, m in zip(obj.weights, obj.models)]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not isinstance(obj, torch.nn.Sequential):
        raise TypeError(f"to_nir exports an ift_snn.network.Network or a torch.nn.Sequential of nn.Linear and "
                        f"SpikingLayer modules, got {type(obj).__name__}")
    from .integrations.torch import SpikingLayer

    layers, pending = [], None
    for k, module in enumerate(obj):
        if isinstance(module, torch.nn.Linear) and pending is None:
            bias = None if module.bias is None else module.bias.detach().cpu().double().numpy().copy()
            pending = (module.weight.detach().cpu().double().numpy().copy(), bias)
        elif isinstance(module, SpikingLayer) and pending is not None:
            n = pending[0].shape[0]
            per = {}
            for k, v in module.parameter_values().items():
                if v.numel() != 1:
                    try:
                        per[k] = np.broadcast_to(v.cpu().double().numpy(), (n,)).copy()
                    except ValueError:
                        raise ValueError(f"module {k} ({type(module).__name__}): its {k} has shape {tuple(v.shape)}, "
                                         f"not one value per neuron of the {n} after the nn.Linear") from None
            layers.append((*pending, module.current_model(), per))
            pending = None
        else:
            raise ValueError(f"module {k} ({type(module).__name__}) of the Sequential: NIR export takes nn.Linear "
                             "followed by SpikingLayer, repeated")
    if pending is not None or not layers:
        raise ValueError("the Sequential must end with a SpikingLayer after its last nn.Linear")
    return layers


def to_nir(net, dt: float = 1.0):
    """``net`` (a ``Network``, or an ``nn.Sequential`` of ``nn.Linear`` and ``SpikingLayer``) as a
    ``nir.NIRGraph``: input -> (Linear or Affine -> neuron) per layer -> output, steps of length ``dt``.

    Weights are stored (out, in), as NIR and PyTorch do; a layer with a bias is an Affine node. Each
    layer's model becomes its NIR node (:data:`NIR_NODES`, module docstring). The readouts of a
    Network's local blocks are training aids, not part of the graph. Raises ValueError naming the layer
    whose model NIR cannot describe.
    """
    nir = _require_nir()
    dt = _check_dt(dt)
    layers = _layers_of(net)
    nodes = {"input": nir.Input(input_type={"input": np.array([layers[0][0].shape[1]])})}
    edges, last = [], "input"
    for k, (W, b, model, per) in enumerate(layers):
        nodes[f"linear{k}"] = nir.Linear(weight=W) if b is None else nir.Affine(weight=W, bias=b)
        nodes[f"neuron{k}"] = _node(model, W.shape[0], dt, k, per)
        edges += [(last, f"linear{k}"), (f"linear{k}", f"neuron{k}")]
        last = f"neuron{k}"
    nodes["output"] = nir.Output(output_type={"output": np.array([layers[-1][0].shape[0]])})
    edges.append((last, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"ift_snn_dt": dt})


def _uniform(node, field: str, name: str):
    """The node's ``field``: a float when every neuron has the same value, else the (n,) array."""
    values = np.asarray(getattr(node, field), dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError(f"NIR node {name!r}: {field} is empty")
    return float(values[0]) if np.all(values == values[0]) else values


def _model_of(node, name: str, dt: float, surrogate) -> tuple[NeuronModel, object, dict]:
    """(model, input gain (a float or per neuron), {parameter: per-neuron values}) of a NIR neuron node; the
    gain is folded into the weights before it."""
    nir = _require_nir()
    kind = type(node).__name__
    for field in ("v_leak", "v_reset"):
        if hasattr(node, field) and getattr(node, field) is not None and np.any(_uniform(node, field, name) != 0):
            raise ValueError(f"NIR node {name!r} ({kind}) has {field} != 0; ift_snn's neurons rest at 0 and reset to 0")
    theta = _uniform(node, "v_threshold", name) if hasattr(node, "v_threshold") else None
    if theta is not None and not np.all(theta > 0):
        raise ValueError(f"NIR node {name!r}: v_threshold {np.min(theta)} must be > 0")
    per = {}

    def scalar(key: str, value):  # the first value for the model; all of them as per-neuron values
        if isinstance(value, float):
            return value
        per[key] = value
        return float(value[0])

    def decay(tau_field: str):
        tau = _uniform(node, tau_field, name)
        if not np.all(tau >= dt):
            raise ValueError(f"NIR node {name!r}: {tau_field} = {np.min(tau)} is shorter than the step dt = {dt}: the "
                             "Euler step would not decay (1 - dt/tau < 0); import with a smaller dt")
        return (1.0 - dt / tau), tau

    if isinstance(node, nir.IF):
        return (if_neuron(scalar("theta", theta), reset="zero", surrogate=surrogate), dt * _uniform(node, "r", name),
                per)
    if isinstance(node, nir.LIF):
        alpha, tau = decay("tau")
        model = lif(scalar("alpha", alpha), scalar("theta", theta), reset="zero", surrogate=surrogate)
        return model, dt * _uniform(node, "r", name) / tau, per
    if isinstance(node, nir.CubaLIF):
        alpha_mem, tau_mem = decay("tau_mem")
        alpha_syn, tau_syn = decay("tau_syn")
        gain = (dt * _uniform(node, "w_in", name) / tau_syn) * (dt * _uniform(node, "r", name) / tau_mem)
        model = cuba_lif(scalar("alpha_mem", alpha_mem), scalar("alpha_syn", alpha_syn), scalar("theta", theta),
                         reset="zero", surrogate=surrogate)
        return model, gain, per
    raise ValueError(f"NIR node {name!r} is a {kind}; ift_snn imports LIF, IF and CubaLIF neurons "
                     "(between Linear or Affine layers)")


def _read_layers(graph, dt: float, surrogate) -> list[tuple[np.ndarray, np.ndarray | None, NeuronModel, dict]]:
    """(weight (out, in) times the node's input gain, bias likewise or None, model, per-neuron values) per
    layer of a chain."""
    nir = _require_nir()
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    starts = [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(starts) != 1:
        raise ValueError(f"the NIR graph has {len(starts)} Input nodes; ift_snn imports a chain with one input")
    layers, name, pending = [], starts[0], None
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
            bias = np.asarray(node.bias, dtype=np.float64) if isinstance(node, nir.Affine) else None
            pending = (name, np.asarray(node.weight, dtype=np.float64), bias)
            continue
        if pending is None:
            raise ValueError(f"NIR node {name!r} ({type(node).__name__}) follows no Linear or Affine layer")
        model, gain, per = _model_of(node, name, dt, surrogate)
        if per and chooses_scale(surrogate):  # the scale stable for every neuron's values, not only the first's
            model = stable_default(model, per)
        row = gain if isinstance(gain, float) else np.asarray(gain)[:, None]  # a gain per neuron scales its row
        layers.append((pending[1] * row, None if pending[2] is None else pending[2] * gain, model, per))
        pending = None
    if not isinstance(graph.nodes.get(name), nir.Output) or pending is not None or not layers:
        raise ValueError("the NIR graph is not input -> (Linear or Affine -> neuron) ... -> output")
    return layers


def from_nir(graph, dt: float | None = None, *, surrogate="exponential", dtype=np.float64, to: str = "network"):
    """The network of a NIR graph input -> (Linear or Affine -> LIF/IF/CubaLIF) ... -> output, one path.

    ``graph``: a ``nir.NIRGraph`` or a path to a NIR file (``nir.read``); ``dt``: the step (default: the
    one an ift_snn export recorded, else 1). Each node's input gain is folded into the weights (and bias)
    before it (module docstring). ``to="network"``: a dense :class:`Network` (no biases: a nonzero one is
    refused); ``to="torch"``: an ``nn.Sequential`` of ``nn.Linear`` and ``SpikingLayer`` in ``dtype``.
    Raises ValueError naming the node that ift_snn cannot represent.
    """
    nir = _require_nir()
    if to not in ("network", "torch"):
        raise ValueError(f"to={to!r}: expected 'network' or 'torch'")
    if not isinstance(graph, nir.NIRGraph):
        graph = nir.read(str(graph))
    if dt is None:
        dt = float(graph.metadata.get("ift_snn_dt", 1.0)) if isinstance(graph.metadata, dict) else 1.0
    dt = _check_dt(dt)
    layers = _read_layers(graph, dt, surrogate)
    if to == "torch":
        import torch

        from .integrations.torch import SpikingLayer

        tdtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
        modules = []
        for W, b, model, per in layers:
            linear = torch.nn.Linear(W.shape[1], W.shape[0], bias=b is not None, dtype=tdtype)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W))
                if b is not None:
                    linear.bias.copy_(torch.from_numpy(b))
            values = {k: torch.from_numpy(v).to(tdtype) for k, v in per.items()}
            modules += [linear, SpikingLayer(model, values=values or None)]
        return torch.nn.Sequential(*modules)
    for k, (_, b, _, per) in enumerate(layers):
        if b is not None and np.any(b != 0):
            raise ValueError(f"layer {k} of the NIR graph (an Affine) has a nonzero bias; ift_snn's Network has "
                             "none: import it with to='torch' (nn.Linear keeps the bias)")
        if per:
            raise ValueError(f"layer {k} of the NIR graph has {', '.join(per)} differing between neurons; a Network's "
                             "models share one value per layer: import it with to='torch' (per-neuron values)")
    sizes = [layers[0][0].shape[1]] + [W.shape[0] for W, *_ in layers]
    net = Network(sizes, [m for _, _, m, _ in layers], dtype=dtype)
    net.weights = [W.T.astype(net.dtype) for W, *_ in layers]
    return net
