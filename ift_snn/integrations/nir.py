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
``nn.Linear``). Both a dense :class:`~ift_snn.training.network.Network` and an ``nn.Sequential`` of ``nn.Linear`` and
``SpikingLayer`` modules export, and import to either. NIR has no surrogate: an imported network gets
``surrogate`` (by default "exponential", its scale the largest stable one for every neuron's values, at most
1; an IF neuron with NIR's reset to zero has none and warns). The threshold is compared with >= here and > in NIR: the two
differ only where a membrane equals theta exactly. Values that differ between neurons (tau, v_threshold,
r, w_in per neuron) are per-neuron values of a ``SpikingLayer`` (``values=``): they export from and import
to an ``nn.Sequential``; a ``Network``'s models share one value per layer (import with ``to="torch"``).

A recurrent layer (a[n] = W x[n] + V s[n-1], docs/MATH.md section 9; a ``Network`` with recurrent hidden
layers, or a ``RecurrentSpikingLayer``) is NIR's cycle neuron -> Linear(V) -> neuron, the edge back carrying the
previous step's spikes, as snnTorch writes its RLeaky: exported so and imported from it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping

import numpy as np

from ..neurons.models import (
    NeuronModel,
    chooses_scale,
    cuba_lif,
    if_neuron,
    lif,
)
from ..training.network import Network
from ..symbolic.stability import stable_default

__all__ = ["to_nir", "from_nir", "NIR_NODES", "MAX_WEIGHTS"]

#: The ift_snn models that have a NIR node (with reset="zero" and single spikes), by name.
NIR_NODES = {"lif": "LIF", "if": "IF", "cuba_lif": "CubaLIF"}


def _require_nir():
    try:
        import nir
    except ImportError as exc:
        raise ImportError("NIR export and import need the nir package: pip install -e '.[nir]' in the ift_snn checkout") from exc
    return nir


def _check_dt(dt: float) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating)) or not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt={dt!r}: expected the time step as a finite number > 0")
    return float(dt)


def _node(model: NeuronModel, n: int, dt: float, layer: int, per=None, fold_r: bool = False):
    """(NIR node, input gain) of one layer of ``n`` neurons of ``model``; ``per``: {parameter: (n,) values} that
    replace the model's (per-neuron values of a SpikingLayer). The gain is 1, or with ``fold_r`` the node's input
    resistance (r, times w_in for a CubaLIF), set to 1 in the node: the caller multiplies the weights by it."""
    nir = _require_nir()
    where = f"layer {layer} ({model!r})"
    if model.name not in NIR_NODES:
        raise ValueError(f"{where} has no NIR node: NIR describes LIF, IF and CubaLIF neurons "
                         f"({', '.join(NIR_NODES)} here)")
    if model.reset != "zero":
        raise ValueError(f"{where} resets by subtraction; NIR's neurons reset to v_reset: export a model built with "
                         f"reset='zero' ({model.name}(..., reset='zero'); a network of `ift-snn train` with "
                         "--reset zero, or LIF(..., reset='zero') in PyTorch). Exporting the subtractive reset as "
                         "NIR's would change the neuron: the exact gradient here would not be the imported one's")
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
    ones = full(1.0)
    if model.name == "if" or p.get("alpha", 0) is None:
        r = full(1.0 / dt)
        return (nir.IF(r=ones, v_threshold=full(p["theta"]), v_reset=zeros), r) if fold_r else \
            (nir.IF(r=r, v_threshold=full(p["theta"]), v_reset=zeros), ones)
    if model.name == "lif":
        tau = dt / (1.0 - full(p["alpha"]))
        r = tau / dt
        return nir.LIF(tau=tau, r=ones if fold_r else r, v_leak=zeros, v_threshold=full(p["theta"]),
                       v_reset=zeros), (r if fold_r else ones)
    tau_mem, tau_syn = dt / (1.0 - full(p["alpha_mem"])), dt / (1.0 - full(p["alpha_syn"]))
    r, w_in = tau_mem / dt, tau_syn / dt
    node = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=ones if fold_r else r, v_leak=zeros,
                       v_threshold=full(p["theta"]), v_reset=zeros, w_in=ones if fold_r else w_in)
    return node, (r * w_in if fold_r else ones)


def _host64(x) -> np.ndarray:
    return np.asarray(x if isinstance(x, np.ndarray) else x.get(), dtype=np.float64)


def _layers_of(obj) -> list[tuple[np.ndarray, np.ndarray | None, NeuronModel, dict, np.ndarray | None]]:
    """(weight (out, in), bias or None, model, {parameter: per-neuron values}, recurrent V (out, out) or None) per
    layer of a Network or of an nn.Sequential of nn.Linear followed by ift_snn SpikingLayer or
    RecurrentSpikingLayer modules (a RecurrentSpikingLayer with W inside stands alone) (the present values)."""
    if isinstance(obj, Network):
        rec = getattr(obj, "recurrent", {})
        return [(_host64(W).T.copy(), None, m, {}, _host64(rec[k]).copy() if k in rec else None)
                for k, (W, m) in enumerate(zip(obj.weights, obj.models))]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not isinstance(obj, torch.nn.Sequential):
        raise TypeError(f"to_nir exports an ift_snn.training.network.Network or a torch.nn.Sequential of nn.Linear and "
                        f"SpikingLayer modules, got {type(obj).__name__}")
    from .torch import SpikingLayer
    from .torch_recurrent import RecurrentSpikingLayer

    layers, pending = [], None
    numpy64 = lambda t: t.detach().cpu().double().numpy().copy()  # noqa: E731
    for k, module in enumerate(obj):
        if isinstance(module, RecurrentSpikingLayer):
            if (module.fc is None) == (pending is None):
                raise ValueError(f"module {k} (RecurrentSpikingLayer): NIR export takes it after an nn.Linear, or "
                                 "with its own input weights (in_features=) alone")
            W, b = pending if module.fc is None else (numpy64(module.fc.weight), None)
            if module.bias is not None:
                b = numpy64(module.bias) + (0.0 if b is None else b)
            layers.append((W, b, module.current_model(), {}, numpy64(module.weight)))
            pending = None
        elif isinstance(module, torch.nn.Linear) and pending is None:
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
            layers.append((*pending, module.current_model(), per, None))
            pending = None
        else:
            raise ValueError(f"module {k} ({type(module).__name__}) of the Sequential: NIR export takes nn.Linear "
                             "followed by SpikingLayer or RecurrentSpikingLayer, repeated")
    if pending is not None or not layers:
        raise ValueError("the Sequential must end with a SpikingLayer after its last nn.Linear")
    return layers


def to_nir(net, dt: float = 1.0, *, fold_r: bool = False):
    """``net`` (a ``Network``, or an ``nn.Sequential`` of ``nn.Linear`` and ``SpikingLayer``) as a
    ``nir.NIRGraph``: input -> (Linear or Affine -> neuron) per layer -> output, steps of length ``dt``.

    ``fold_r``: write each neuron's input resistance into the weights before it (r = 1 and w_in = 1 in the
    node, each weight row and bias times the neuron's r w_in): the same dynamics in NIR's semantics, for
    importers that assume r = 1 (Norse's ``from_nir`` ignores r). The default keeps the weights as trained
    (snnTorch and SpikingJelly read r).

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
    for k, (W, b, model, per, V) in enumerate(layers):
        neuron, gain = _node(model, W.shape[0], dt, k, per, fold_r)
        if fold_r:
            W, b = W * gain[:, None], (None if b is None else b * gain)
            V = None if V is None else V * gain[:, None]
        nodes[f"linear{k}"] = nir.Linear(weight=W) if b is None else nir.Affine(weight=W, bias=b)
        nodes[f"neuron{k}"] = neuron
        edges += [(last, f"linear{k}"), (f"linear{k}", f"neuron{k}")]
        if V is not None:  # the cycle neuron -> recurrent -> neuron: last step's spikes into this step's input
            nodes[f"recurrent{k}"] = nir.Linear(weight=V)
            edges += [(f"neuron{k}", f"recurrent{k}"), (f"recurrent{k}", f"neuron{k}")]
        last = f"neuron{k}"
    nodes["output"] = nir.Output(output_type={"output": np.array([layers[-1][0].shape[0]])})
    edges.append((last, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"ift_snn_dt": dt})


#: The most weight entries (all the Linear and Affine weights of a graph together) that :func:`from_nir` imports;
#: a graph or file declaring more is refused from the declared shapes, before any weight is read or converted.
MAX_WEIGHTS = 50_000_000

#: The parameters of each NIR neuron node that ift_snn reads (v_leak and v_reset may be None: 0).
_NEURON_FIELDS = {"IF": ("r", "v_threshold", "v_reset"),
                  "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
                  "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in")}
_MAY_BE_NONE = ("v_leak", "v_reset")
_CHAIN = "ift_snn imports a chain input -> (Linear or Affine -> LIF/IF/CubaLIF) ... -> output"
#: What a hostile array-like may raise when asked for its shape or its values (refused as ValueError).
_ARRAY_ERRORS = (TypeError, ValueError, AttributeError, IndexError, KeyError, OverflowError)


def _neuron_fields(node) -> tuple[str, ...]:
    """The parameters ift_snn reads of a NIR neuron node (:data:`_NEURON_FIELDS`), by its class."""
    nir = _require_nir()
    return next(fields for kind, fields in _NEURON_FIELDS.items() if isinstance(node, getattr(nir, kind)))


def _show(value, limit: int = 60) -> str:
    """A one-line, bounded repr of ``value`` for an error message."""
    try:
        text = " ".join(repr(value).split())
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not hide the error being reported
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shape(value, name, field: str) -> tuple[int, ...]:
    """The shape of what node ``name`` holds as ``field``, read without converting it (``np.shape`` reads an
    array's ``.shape``); ValueError when it is not array-like."""
    try:
        shape = tuple(int(d) for d in np.shape(value))
    except _ARRAY_ERRORS:
        raise ValueError(f"NIR node {name!r} holds {_show(value)} ({type(value).__name__}) as its {field}: expected "
                         "an array of numbers") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"NIR node {name!r} has {field} of shape {shape}: expected nonnegative sizes")
    return shape


def _numbers(value, name, field: str, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` (whose declared ``shape`` was checked) as float64, refused unless real and finite."""
    try:
        a = np.asarray(value)
    except _ARRAY_ERRORS as exc:
        raise ValueError(f"NIR node {name!r}: its {field} ({type(value).__name__}) cannot be read as an array "
                         f"({type(exc).__name__}): expected an array of numbers") from None
    if a.shape != shape:
        raise ValueError(f"NIR node {name!r}: its {field} ({type(value).__name__}) declares shape {shape} but reads "
                         f"as an array of shape {a.shape}: expected a dense array of numbers")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"NIR node {name!r} has {field} of dtype {a.dtype} ({_show(value)}): expected real numbers")
    a = a.astype(np.float64, copy=False)
    bad = ~np.isfinite(a)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"NIR node {name!r} has {field} {a[where]} at index {where} ({int(bad.sum())} of {a.size} "
                         "values not finite): expected finite numbers")
    return a


def _values(node, field: str, name, n: int | None = None) -> np.ndarray | None:
    """The node's ``field`` as finite float64 values, flattened: one value or (when ``n`` is given) ``n``, one per
    neuron. None where v_leak or v_reset is None (0)."""
    value = getattr(node, field, None)
    if value is None:
        if field in _MAY_BE_NONE:
            return None
        raise ValueError(f"NIR node {name!r} ({type(node).__name__}) has no {field}: expected an array of numbers")
    shape = _shape(value, name, field)
    size = int(np.prod(shape, dtype=object)) if shape else 1
    if n is not None and size not in (1, n):
        raise ValueError(f"NIR node {name!r} ({type(node).__name__}) has {field} of shape {shape}, but the layer has "
                         f"{n} neurons: expected one value or one per neuron, shape ({n},)")
    if size == 0:
        raise ValueError(f"NIR node {name!r} ({type(node).__name__}) has {field} of shape {shape}: expected at least "
                         "one value")
    return _numbers(value, name, field, shape).ravel()


def _uniform(node, field: str, name: str, n: int | None = None):
    """The node's ``field``: a float when every neuron has the same value, else the (n,) array (finite values,
    one or ``n`` of them: :func:`_values`)."""
    values = _values(node, field, name, n)
    if values is None:
        return 0.0
    return float(values[0]) if np.all(values == values[0]) else values


def _named(exc: ValueError, name, node) -> ValueError:
    """``exc`` (raised building the model of NIR node ``name``) as one line that names the node."""
    text = " ".join(str(exc).split())
    return exc if text.startswith("NIR node") else ValueError(f"NIR node {name!r} ({type(node).__name__}): {text}")


def _model_of(node, name: str, dt: float, surrogate, n: int | None = None) -> tuple[NeuronModel, object, dict]:
    """(model, input gain (a float or per neuron), {parameter: per-neuron values}) of a NIR neuron node; the
    gain is folded into the weights before it. ``n``: the layer's number of neurons (each parameter must have one
    value or ``n``); every parameter must be finite. A value the model refuses is a ValueError naming the node."""
    try:
        return _neuron_model(node, name, dt, surrogate, n)
    except ValueError as exc:
        raise _named(exc, name, node) from exc


def _neuron_model(node, name: str, dt: float, surrogate, n: int | None) -> tuple[NeuronModel, object, dict]:
    nir = _require_nir()
    kind = type(node).__name__
    if not isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF)):
        raise ValueError(f"NIR node {name!r} is a {kind}; ift_snn imports LIF, IF and CubaLIF neurons "
                         "(between Linear or Affine layers)")
    for field in ("v_leak", "v_reset"):
        if hasattr(node, field) and np.any(_uniform(node, field, name, n) != 0):
            raise ValueError(f"NIR node {name!r} ({kind}) has {field} != 0; ift_snn's neurons rest at 0 and reset to 0")
    theta = _uniform(node, "v_threshold", name, n)
    if not np.all(theta > 0):
        raise ValueError(f"NIR node {name!r}: v_threshold {np.min(theta)} must be > 0")
    per = {}

    def scalar(key: str, value):  # the first value for the model; all of them as per-neuron values
        if isinstance(value, float):
            return value
        per[key] = value
        return float(value[0])

    def decay(tau_field: str):
        tau = _uniform(node, tau_field, name, n)
        if not np.all(tau >= dt):
            raise ValueError(f"NIR node {name!r}: {tau_field} = {np.min(tau)} is shorter than the step dt = {dt}: the "
                             "Euler step would not decay (1 - dt/tau < 0); import with a smaller dt")
        return (1.0 - dt / tau), tau

    if isinstance(node, nir.IF):
        return (if_neuron(scalar("theta", theta), reset="zero", surrogate=surrogate),
                dt * _uniform(node, "r", name, n), per)
    if isinstance(node, nir.LIF):
        alpha, tau = decay("tau")
        model = lif(scalar("alpha", alpha), scalar("theta", theta), reset="zero", surrogate=surrogate)
        return model, dt * _uniform(node, "r", name, n) / tau, per
    alpha_mem, tau_mem = decay("tau_mem")
    alpha_syn, tau_syn = decay("tau_syn")
    gain = (dt * _uniform(node, "w_in", name, n) / tau_syn) * (dt * _uniform(node, "r", name, n) / tau_mem)
    model = cuba_lif(scalar("alpha_mem", alpha_mem), scalar("alpha_syn", alpha_syn), scalar("theta", theta),
                     reset="zero", surrogate=surrogate)
    return model, gain, per


def _chain(graph) -> tuple[str, list[tuple[str, object, str, object]], str, dict]:
    """(the Input's name, [(Linear/Affine name, node, neuron name, node) per layer], the Output's name,
    {layer: (name, node) of its recurrent Linear}) of a one-path graph, walked from its Input to its Output
    reading no array: a missing node, a branch, a cycle other than a neuron's own recurrent loop (neuron ->
    Linear -> the same neuron, the Linear connected to nothing else) or a node out of place is refused by name."""
    nir = _require_nir()
    nodes, edges = getattr(graph, "nodes", None), getattr(graph, "edges", None)
    if not isinstance(nodes, Mapping):
        raise ValueError(f"the NIR graph's nodes are a {type(nodes).__name__}: expected a dict of name: node")
    try:
        edges = list(edges)
    except TypeError:
        raise ValueError(f"the NIR graph's edges are a {type(edges).__name__}: expected a list of (source, target) "
                         "pairs") from None
    succ: dict = {}
    for edge in edges:
        try:
            a, b = edge
        except (TypeError, ValueError):
            raise ValueError(f"the NIR graph has an edge {_show(edge)}: expected a pair (source, target) of node "
                             "names") from None
        for end in (a, b):
            try:
                known = end in nodes
            except TypeError:
                known = False
            if not known:
                raise ValueError(f"the NIR graph's edge ({_show(a)}, {_show(b)}) names node {_show(end)}, which the "
                                 f"graph does not have: expected one of {_show(sorted(map(str, nodes)), 200)}")
        succ.setdefault(a, []).append(b)
    pred: dict = {}
    for a, targets in succ.items():
        for b in targets:
            pred.setdefault(b, []).append(a)
    loops = {}  # neuron -> its recurrent Linear: the only 2-cycles accepted
    for a, targets in succ.items():
        if not isinstance(nodes[a], (nir.IF, nir.LIF, nir.CubaLIF)):
            continue
        for b in targets:
            if isinstance(nodes[b], (nir.Linear, nir.Affine)) and succ.get(b) == [a] and pred.get(b) == [a]:
                if a in loops:
                    raise ValueError(f"NIR node {a!r} has two recurrent loops ({loops[a]!r} and {b!r}); expected one")
                loops[a] = b
    for a, b in loops.items():
        succ[a] = [t for t in succ[a] if t != b]
    starts = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
    if len(starts) != 1:
        raise ValueError(f"the NIR graph has {len(starts)} Input nodes; ift_snn imports a chain with one input")
    name = starts[0]
    order, at = [name], {name: 0}
    layers, pending = [], None
    while True:
        nxt = succ.get(name, [])
        if not nxt:
            break
        if len(nxt) != 1:
            raise ValueError(f"NIR node {name!r} feeds {len(nxt)} nodes; ift_snn imports a chain (no branches)")
        name = nxt[0]
        if name in at:
            cycle = " -> ".join(repr(k) for k in order[at[name]:] + [name])
            raise ValueError(f"the NIR graph has a cycle: {cycle} (node {name!r} is reached twice); {_CHAIN}")
        at[name] = len(order)
        order.append(name)
        node = nodes[name]
        if isinstance(node, nir.Output):
            break
        if isinstance(node, (nir.Linear, nir.Affine)):
            if pending is not None:
                raise ValueError(f"NIR nodes {pending[0]!r} and {name!r}: two linear layers in a row")
            pending = (name, node)
            continue
        if pending is None:
            raise ValueError(f"NIR node {name!r} ({type(node).__name__}) follows no Linear or Affine layer")
        if not isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF)):
            raise ValueError(f"NIR node {name!r} is a {type(node).__name__}; ift_snn imports LIF, IF and CubaLIF "
                             "neurons (between Linear or Affine layers)")
        layers.append((*pending, name, node))
        pending = None
    if not isinstance(nodes.get(name), nir.Output) or pending is not None or not layers:
        raise ValueError("the NIR graph is not input -> (Linear or Affine -> neuron) ... -> output")
    recurrent = {k: (loops[neuron], nodes[loops[neuron]]) for k, (_, _, neuron, _) in enumerate(layers)
                 if neuron in loops}
    unused = sorted(set(loops.values()) - {r for r, _ in recurrent.values()})
    if unused:
        raise ValueError(f"NIR node {unused[0]!r} is a recurrent loop of a neuron off the input's path; {_CHAIN}")
    return order[0], layers, name, recurrent


def _declared_size(node, key: str) -> int | None:
    """The number of values an Input (``key`` "input") or Output ("output") node declares, None where it
    declares none readable (not checked then)."""
    types = getattr(node, f"{key}_type", None)
    shape = types.get(key) if isinstance(types, dict) else None
    try:
        if shape is None or np.size(shape) == 0 or np.size(shape) > 8:
            return None
        dims = np.asarray(shape).ravel()
    except _ARRAY_ERRORS:
        return None
    if dims.dtype.kind not in "iu" or np.any(dims < 0):
        return None
    return int(np.prod(dims, dtype=object))


def _check_shapes(graph, start: str, chain, end: str) -> list[int]:
    """The number of neurons of each layer of ``chain`` (:func:`_chain`, between nodes ``start`` and ``end``),
    from the shapes the nodes declare, read without converting any array: 2-D weights that chain from the
    Input's size to the Output's, a bias and neuron parameters of one value or one per neuron, and at most
    :data:`MAX_WEIGHTS` weight entries in all."""
    nir = _require_nir()
    before, what = _declared_size(graph.nodes[start], "input"), f"the input node {start!r} declares"
    total, sizes = 0, []
    for lin_name, lin, neuron_name, neuron in chain:
        shape = _shape(getattr(lin, "weight", None), lin_name, "weight")
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"NIR node {lin_name!r} has weight shape {shape}: expected a 2-D array (out, in) with "
                             "at least one row and one column")
        total += shape[0] * shape[1]
        if total > MAX_WEIGHTS:
            raise ValueError(f"NIR node {lin_name!r} has weight shape {shape}: the graph's weights up to it hold "
                             f"{total} entries, more than MAX_WEIGHTS = {MAX_WEIGHTS} "
                             "(ift_snn.integrations.nir.MAX_WEIGHTS): refused before reading them")
        if before is not None and shape[1] != before:
            unit = "inputs" if not sizes else "neurons"
            raise ValueError(f"NIR node {lin_name!r} has weight shape {shape}, but {what} {before} {unit}: "
                             f"expected (n, {before})")
        n = shape[0]
        if isinstance(lin, nir.Affine) and getattr(lin, "bias", None) is not None:
            bias = _shape(lin.bias, lin_name, "bias")
            if int(np.prod(bias, dtype=object)) not in (1, n):
                raise ValueError(f"NIR node {lin_name!r} has bias shape {bias}, but its weight {shape} has {n} rows: "
                                 f"expected ({n},)")
        for field in _neuron_fields(neuron):
            value = getattr(neuron, field, None)
            if value is None and field in _MAY_BE_NONE:
                continue
            if value is None:
                raise ValueError(f"NIR node {neuron_name!r} ({type(neuron).__name__}) has no {field} (None): "
                                 f"expected one value or ({n},)")
            got = _shape(value, neuron_name, field)
            if int(np.prod(got, dtype=object)) not in (1, n):
                raise ValueError(f"NIR node {neuron_name!r} ({type(neuron).__name__}) has {field} of shape {got}, but "
                                 f"the {type(lin).__name__} {lin_name!r} before it has {n} outputs: expected one "
                                 f"value or ({n},)")
        sizes.append(n)
        before, what = n, f"the layer before it ({neuron_name!r}) has"
    declared = _declared_size(graph.nodes[end], "output")
    if declared is not None and declared != sizes[-1]:
        raise ValueError(f"NIR node {end!r} (the Output) declares {declared} outputs, but the layer before it "
                         f"({chain[-1][2]!r}) has {sizes[-1]} neurons: expected {sizes[-1]}")
    return sizes


def _read_layers(graph, dt: float, surrogate) -> list[tuple[np.ndarray, np.ndarray | None, NeuronModel, dict,
                                                             np.ndarray | None]]:
    """(weight (out, in) times the node's input gain, bias likewise or None, model, per-neuron values) per
    layer of a chain. Nothing is built before the whole graph is checked: its path (:func:`_chain`: no cycle, no
    branch), every declared shape and the total size (:func:`_check_shapes`), then every array's values (real,
    finite)."""
    nir = _require_nir()
    start, chain, end, loops = _chain(graph)
    sizes = _check_shapes(graph, start, chain, end)
    recurrent = {}
    for k, (rec_name, rec) in loops.items():
        shape = _shape(getattr(rec, "weight", None), rec_name, "weight")
        if shape != (sizes[k], sizes[k]):
            raise ValueError(f"NIR node {rec_name!r} (the recurrent loop of {chain[k][2]!r}) has weight shape {shape}: "
                             f"expected ({sizes[k]}, {sizes[k]}), the layer's neurons to themselves")
        if isinstance(rec, nir.Affine) and getattr(rec, "bias", None) is not None:
            bias = _numbers(rec.bias, rec_name, "bias", _shape(rec.bias, rec_name, "bias"))
            if np.any(bias != 0):
                raise ValueError(f"NIR node {rec_name!r} (a recurrent loop) has a nonzero bias; expected none (a "
                                 "bias belongs to the layer's input Affine)")
        recurrent[k] = _numbers(rec.weight, rec_name, "weight", shape)
    arrays = []
    for (lin_name, lin, neuron_name, neuron), n in zip(chain, sizes):
        W = _numbers(lin.weight, lin_name, "weight", _shape(lin.weight, lin_name, "weight"))
        bias = None
        if isinstance(lin, nir.Affine) and getattr(lin, "bias", None) is not None:
            bias = np.broadcast_to(_numbers(lin.bias, lin_name, "bias", _shape(lin.bias, lin_name, "bias")).ravel(),
                                   (n,)).copy()
        for field in _neuron_fields(neuron):
            _values(neuron, field, neuron_name, n)
        arrays.append((W, bias))
    layers = []
    for (lin_name, _, neuron_name, neuron), n, (W, bias) in zip(chain, sizes, arrays):
        model, gain, per = _model_of(neuron, neuron_name, dt, surrogate, n)
        if per and chooses_scale(surrogate):  # the scale stable for every neuron's values, not only the first's
            try:
                model = stable_default(model, per)
            except ValueError as exc:
                raise _named(exc, neuron_name, neuron) from exc
        row = gain if isinstance(gain, float) else np.asarray(gain)[:, None]  # a gain per neuron scales its row
        W = W * row
        bias = None if bias is None else bias * gain
        V = recurrent[len(layers)] * row if len(layers) in recurrent else None
        if not (np.all(np.isfinite(W)) and (bias is None or np.all(np.isfinite(bias)))):
            raise ValueError(f"NIR node {neuron_name!r}: its input gain (up to {np.max(np.abs(gain)):.3g} per unit of "
                             f"input) times the weights of {lin_name!r} is not finite: expected gains and weights "
                             "whose product is a finite float64")
        layers.append((W, bias, model, per, V))
    return layers


#: The deepest nesting of groups, and the most groups and datasets, a NIR file may have (a graph nested in a
#: graph adds two levels); checked before ``nir.read`` reads every dataset of the file.
_MAX_FILE_DEPTH, _MAX_FILE_OBJECTS = 64, 200_000


def _check_file(path: str) -> None:
    """Refuse a NIR file (HDF5) from the shapes its datasets declare, before ``nir.read`` reads every one of
    them into memory: more than :data:`MAX_WEIGHTS` weight entries in all (or as many 8-byte words in its other
    arrays), groups nested deeper than 64 or more than 200000 groups and datasets (hard links can make a small
    file's tree endless). A path that is not a file is left to ``nir.read`` (FileNotFoundError)."""
    if not os.path.isfile(path):
        return
    import h5py

    if not h5py.is_hdf5(path):
        raise ValueError(f"NIR file {path!r} is not an HDF5 file: expected a file written by nir.write")
    totals = {"weight": 0, "other": 0}
    with h5py.File(path, "r") as f:
        root = f.get("node")
        if not isinstance(root, h5py.Group):
            return  # nir.read refuses it (wrapped in a ValueError by _read_file)
        queue, count = deque([(root, ())]), 0
        while queue:  # breadth first, in the file's order of names
            group, where = queue.popleft()
            for key, item in group.items():
                count += 1
                at = (*where, str(key))
                if count > _MAX_FILE_OBJECTS:
                    raise ValueError(f"NIR file {path!r} has more than {_MAX_FILE_OBJECTS} groups and datasets under "
                                     "'node': refused before reading them (is it a NIR graph ift_snn can import?)")
                if isinstance(item, h5py.Group):
                    if len(at) > _MAX_FILE_DEPTH:
                        raise ValueError(f"NIR file {path!r} nests groups deeper than {_MAX_FILE_DEPTH} levels "
                                         f"({'/'.join(at[:6])}/...): expected a NIR graph")
                    queue.append((item, at))
                    continue
                if not isinstance(item, h5py.Dataset):
                    continue
                shape = item.shape if item.shape is not None else (0,)
                size = int(np.prod(shape, dtype=object))
                names = [at[i + 1] for i in range(len(at) - 2) if at[i] == "nodes"]
                node = "/".join(names) if names else "/".join(at[:-1]) or "node"
                if key == "weight":
                    totals["weight"] += size
                    if totals["weight"] > MAX_WEIGHTS:
                        raise ValueError(f"NIR file {path!r}: node {node!r} declares weight of shape {shape}: the "
                                         f"file's weights up to it hold {totals['weight']} entries, more than "
                                         f"MAX_WEIGHTS = {MAX_WEIGHTS} (ift_snn.integrations.nir.MAX_WEIGHTS): refused "
                                         "before reading them")
                else:
                    totals["other"] += -(-size * max(int(item.dtype.itemsize), 1) // 8)
                    if totals["other"] > MAX_WEIGHTS:
                        raise ValueError(f"NIR file {path!r}: node {node!r} declares {key} of shape {shape} "
                                         f"({item.dtype}): the file's arrays other than weights up to it hold "
                                         f"{totals['other']} 8-byte words, more than MAX_WEIGHTS = {MAX_WEIGHTS} "
                                         "(ift_snn.integrations.nir.MAX_WEIGHTS): refused before reading them")


def _read_file(path: str):
    """``nir.read(path)`` after :func:`_check_file`; what the file holds that is not a NIR graph is refused as a
    ValueError naming the file (a missing or unreadable file keeps its OSError)."""
    nir = _require_nir()
    try:
        _check_file(path)
        graph = nir.read(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (AssertionError, AttributeError, IndexError, KeyError, OSError, RecursionError, RuntimeError, TypeError,
            ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("NIR file "):
            raise
        reason = " ".join(str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).split())
        reason = reason if len(reason) <= 300 else reason[:297] + "..."
        raise ValueError(f"NIR file {path!r} is not a NIR graph ift_snn can read: {type(exc).__name__}: "
                         f"{reason}") from exc
    if not isinstance(graph, nir.NIRGraph):
        raise ValueError(f"NIR file {path!r} holds a {type(graph).__name__}, not a NIRGraph: {_CHAIN}")
    return graph


def _recorded_dt(graph) -> float:
    """The step an ift_snn export recorded in the graph's metadata (``ift_snn_dt``), else 1."""
    meta = getattr(graph, "metadata", None)
    if not isinstance(meta, dict) or "ift_snn_dt" not in meta:
        return 1.0
    value = meta["ift_snn_dt"]
    try:
        dt = float(np.asarray(value).ravel()[0]) if np.size(value) == 1 else None
    except _ARRAY_ERRORS:
        dt = None
    if dt is None or not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"the NIR graph's metadata has ift_snn_dt = {_show(value)}: expected the time step as a "
                         "finite number > 0 (or pass dt=)")
    return dt


def from_nir(graph, dt: float | None = None, *, surrogate="exponential", dtype=np.float32, to: str = "network"):
    """The network of a NIR graph input -> (Linear or Affine -> LIF/IF/CubaLIF) ... -> output, one path.

    ``graph``: a ``nir.NIRGraph`` or a path to a NIR file (``nir.read``); ``dt``: the step (default: the
    one an ift_snn export recorded, else 1). Each node's input gain is folded into the weights (and bias)
    before it (module docstring). ``to="network"``: a dense :class:`Network` (no biases: a nonzero one is
    refused); ``to="torch"``: an ``nn.Sequential`` of ``nn.Linear`` and ``SpikingLayer`` in ``dtype`` (float32 by
    default, as PyTorch's layers and inputs are; float64 where exact comparisons need it).
    Raises ValueError naming the node that ift_snn cannot represent, and, before building anything, a graph
    that is not one path (a cycle, a branch), weights that are not 2-D or do not chain, parameters that are not
    one value or one per neuron, values that are not finite, and more than :data:`MAX_WEIGHTS` weight entries
    (a file's are checked from its declared shapes before it is read).
    """
    nir = _require_nir()
    if to not in ("network", "torch"):
        raise ValueError(f"to={to!r}: expected 'network' or 'torch'")
    if not isinstance(graph, nir.NIRGraph):
        graph = _read_file(str(graph))
    if dt is None:
        dt = _recorded_dt(graph)
    dt = _check_dt(dt)
    layers = _read_layers(graph, dt, surrogate)
    if to == "torch":
        import torch

        from .torch import SpikingLayer

        tdtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
        modules = []
        from .torch_recurrent import RecurrentSpikingLayer

        for k, (W, b, model, per, V) in enumerate(layers):
            linear = torch.nn.Linear(W.shape[1], W.shape[0], bias=b is not None, dtype=tdtype)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W))
                if b is not None:
                    linear.bias.copy_(torch.from_numpy(b))
            values = {k: torch.from_numpy(v).to(tdtype) for k, v in per.items()}
            if V is None:
                modules += [linear, SpikingLayer(model, values=values or None)]
                continue
            if per:
                raise ValueError(f"layer {k} of the NIR graph is recurrent with {', '.join(per)} differing between "
                                 "neurons; a RecurrentSpikingLayer takes one value per layer")
            layer = RecurrentSpikingLayer(model, W.shape[0], dtype=tdtype)
            with torch.no_grad():
                layer.V.copy_(torch.from_numpy(V))
            modules += [linear, layer]
        return torch.nn.Sequential(*modules)
    for k, (_, b, _, per, _) in enumerate(layers):
        if b is not None and np.any(b != 0):
            raise ValueError(f"layer {k} of the NIR graph (an Affine) has a nonzero bias; ift_snn's Network has "
                             "none: import it with to='torch' (nn.Linear keeps the bias)")
        if per:
            raise ValueError(f"layer {k} of the NIR graph has {', '.join(per)} differing between neurons; a Network's "
                             "models share one value per layer: import it with to='torch' (per-neuron values)")
    sizes = [layers[0][0].shape[1]] + [W.shape[0] for W, *_ in layers]
    net = Network(sizes, [m for _, _, m, _, _ in layers], dtype=dtype)
    net.weights = [W.T.astype(net.dtype) for W, *_ in layers]
    net.recurrent = {k: V.astype(net.dtype) for k, (*_, V) in enumerate(layers) if V is not None}
    return net
