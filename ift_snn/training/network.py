"""A feedforward spiking network on the layer equations of the EXODUS paper (docs/MATH.md section 4).

Layer l: a_l[n] = s_{l-1}[n] W_l (dense weights, (n_in, n_out)), then any
NeuronModel: s_l = f(u_l), u_l the SRM membrane. Back-propagation per layer:

    g_l = dL/ds_l                     (from the loss, or handed down)
    dL/da_l = ops.backward(model_l, trace_l, g_l, method, truncation).a
    dL/dW_l = sum_n s_{l-1}[n]^T dL/da_l[n]
    g_{l-1} = dL/da_l W_l^T

Methods "exodus" (exact), "slayer" (reset dropped), "bptt" (reference sweep)
and ``truncation=K`` apply to every layer. Arrays are time-major (T, B, C)
and numpy or cupy: the array type picks the backend.

Losses (x: output spikes (T, B, C), y: labels):
- ``"sum_ce"``: cross-entropy of the spike counts sum_n s[n];
- ``"max_ce"``: cross-entropy of max_n r[n], r the output spikes low-pass
  filtered, r[n] = beta r[n-1] + s[n] (beta = 0.9): the max-over-time loss
  used for SHD;
- ``"count_mse"``: mean squared error of the spike counts against a target
  count for the right class and 0 otherwise.

Local blocks (docs/MATH.md section 8, a reconstruction from the abstract of Guo et
al.): ``blocks=b`` groups layers in blocks of b; the last layer of each block
but the final one gets an auxiliary linear readout (trained) with its own
loss, and no gradient crosses a block boundary.

Weights: W ~ N(0, (gain / sqrt(n_in))^2) with ``gain`` = ``init_gain``
(default 2.0 so that a few input spikes drive a neuron to threshold), seeded.

Recurrent hidden layers (``recurrent=True``, docs/MATH.md section 9): a hidden layer's spikes also feed back
into it one step later, a_l[n] = s_{l-1}[n] W_l + V_l s_l[n-1] (V_l (n_out, n_out), V[i, j] from neuron j to
i, N(0, (recurrent_gain / sqrt(n_out))^2)); its forward and backward are :mod:`ift_snn.recurrent`'s (one
generated kernel each way), dL/dV_l = sum_n dL/da_l[n] s_l[n-1]^T. The output layer stays feed-forward.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .. import ops, recurrent
from ..files import write_atomically
from ..neurons.models import NeuronModel, model_from_dict, model_to_dict
from ..optim import Adam


def _check_classes(n_classes, what: str) -> None:
    """None, or an int from 1 to data.MAX_CLASSES (a one-hot target of 10**30 classes cannot be made)."""
    from .data import MAX_CLASSES

    if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer))
                                  or not 1 <= n_classes <= MAX_CLASSES):
        raise ValueError(f"{what}={str(n_classes)[:40]}: expected None or an int from 1 to {MAX_CLASSES}")


__all__ = ["Network", "Adam", "LOSSES", "loss_and_grad", "NonFiniteLossError"]

LOSSES = ("sum_ce", "max_ce", "count_mse")
MAX_BETA = 0.9
COUNT_TARGET = 5.0


class NonFiniteLossError(FloatingPointError):
    """Training stopped: the loss or a gradient became NaN or inf (the message names the layer)."""


def _xp(x):
    return np if isinstance(x, np.ndarray) else __import__("cupy")


class _Clock:
    """Seconds per phase of a step; on a GPU the device is synchronised at each lap (kernels are asynchronous)."""

    def __init__(self, xp):
        self.sync = (lambda: xp.cuda.Device().synchronize()) if xp is not np else (lambda: None)  # noqa: E731
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        self.sync()
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.last
        self.last = now


def _softmax_ce(logits, y):
    xp = _xp(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = xp.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    B = logits.shape[0]
    loss = float(-xp.log(p[xp.arange(B), y] + 1e-30).mean())
    grad = p.copy()
    grad[xp.arange(B), y] -= 1
    return loss, grad / B


def max_filter(s, acc=None):
    """r[n] = MAX_BETA r[n-1] + s[n] over the time axis of s (T, B, C), from r[-1] = ``acc`` (zeros)."""
    xp = _xp(s)
    r = xp.empty_like(s)
    acc = xp.zeros_like(s[0]) if acc is None else acc
    for n in range(s.shape[0]):
        acc = MAX_BETA * acc + s[n]
        r[n] = acc
    return r


def loss_and_grad(kind: str, s, y, n_classes: int, *, r=None, count_target: float = COUNT_TARGET):
    """(loss, dL/ds (T, B, C), predictions (B,)) for output spikes s and labels y.

    ``r``: for max_ce, the filter :func:`max_filter` of s already computed (e.g. from a carried state: a
    chunk of a longer sequence); ``count_target``: count_mse's target count of the labelled output."""
    xp = _xp(s)
    if kind == "sum_ce":
        logits = s.sum(axis=0)
        loss, dlogits = _softmax_ce(logits, y)
        return loss, xp.broadcast_to(dlogits, s.shape).astype(s.dtype), logits.argmax(axis=1)
    if kind == "max_ce":
        r = max_filter(s) if r is None else r
        idx = r.argmax(axis=0)  # (B, C)
        logits = xp.take_along_axis(r, idx[None], axis=0)[0]
        loss, dlogits = _softmax_ce(logits, y)
        # dlogit/ds[n] = beta^(idx - n) for n <= idx
        n = xp.arange(s.shape[0])[:, None, None]
        lag = idx[None] - n
        weight = xp.where(lag >= 0, MAX_BETA ** xp.clip(lag, 0, None), 0.0)
        return loss, (weight * dlogits[None]).astype(s.dtype), logits.argmax(axis=1)
    if kind == "count_mse":
        counts = s.sum(axis=0)
        target = xp.zeros_like(counts)
        target[xp.arange(counts.shape[0]), y] = count_target
        diff = counts - target
        loss = float((diff**2).mean())
        grad = 2 * diff / diff.size
        return loss, xp.broadcast_to(grad, s.shape).astype(s.dtype), counts.argmax(axis=1)
    raise ValueError(f"unknown loss {kind!r}; expected one of {', '.join(LOSSES)}")


@dataclass
class StepResult:
    loss: float
    correct: int
    grad_norms: list  # per layer ||dL/dW||
    max_step_factors: list
    #: Seconds of the step's phases: "forward" (layers and loss), "backward" (the scans and dL/ds handed
    #: down) and "weight_grad" (dL/dW and dL/dR).
    seconds: dict = field(default_factory=dict)
    #: Per layer, the mean of its spikes s over time, batch and neurons (0: the layer was silent).
    spike_rates: list = field(default_factory=list)


class Network:
    """Dense layers W_l followed by neuron models; see the module docstring."""

    def __init__(self, sizes: list[int], models: NeuronModel | list[NeuronModel], *, seed: int = 0,
                 init_gain: float = 2.0, dtype=np.float32, blocks: int | None = None, n_classes: int | None = None,
                 recurrent: bool = False, recurrent_gain: float = 1.0):
        if len(sizes) < 2 or any((not isinstance(k, (int, np.integer))) or k < 1 for k in sizes):
            raise ValueError(f"sizes={sizes!r}: expected at least [n_in, n_out] with positive ints")
        n_layers = len(sizes) - 1
        models = [models] * n_layers if isinstance(models, NeuronModel) else list(models)
        if len(models) != n_layers or not all(isinstance(m, NeuronModel) for m in models):
            raise ValueError(f"need {n_layers} NeuronModels (one per layer), got {len(models)}")
        if blocks is not None and (not isinstance(blocks, int) or blocks < 1):
            raise ValueError(f"blocks={blocks!r}: expected an int >= 1 or None")
        _check_classes(n_classes, "n_classes")
        rng = np.random.default_rng(seed)
        self.sizes = list(map(int, sizes))
        self.models = models
        self.dtype = np.dtype(dtype)
        self.init_gain = init_gain
        self.seed = seed
        self.weights = [(rng.normal(0, init_gain / math.sqrt(n_in), (n_in, n_out))).astype(self.dtype)
                        for n_in, n_out in zip(sizes[:-1], sizes[1:])]
        self.blocks = blocks
        self.n_classes = n_classes or sizes[-1]
        if not isinstance(recurrent, bool):
            raise TypeError(f"recurrent={recurrent!r}: expected True (every hidden layer recurrent) or False")
        if not (isinstance(recurrent_gain, (int, float)) and math.isfinite(recurrent_gain)):
            raise ValueError(f"recurrent_gain={recurrent_gain!r}: expected a finite number")
        if recurrent and blocks:
            raise ValueError("recurrent hidden layers with local blocks (blocks=) are not supported; use one or the "
                             "other")
        self.recurrent_gain = float(recurrent_gain)
        #: {layer: V (n_out, n_out)} of the recurrent layers (the hidden ones with ``recurrent=True``; a network
        #: imported from NIR may have others).
        self.recurrent = {layer: rng.normal(0, recurrent_gain / math.sqrt(sizes[layer + 1]),
                                            (sizes[layer + 1], sizes[layer + 1])).astype(self.dtype)
                          for layer in range(n_layers - 1)} if recurrent else {}
        self.readouts = {}
        if blocks:
            for end in range(blocks - 1, n_layers - 1, blocks):
                width = sizes[end + 1]
                self.readouts[end] = rng.normal(0, 1 / math.sqrt(width), (width, self.n_classes)).astype(self.dtype)

    # -------------------------------------------------------------- device
    def to(self, device: str) -> Network:
        """Move weights and readouts to ``"gpu"`` (CuPy arrays) or ``"cpu"`` (NumPy), in place."""
        if device == "gpu":
            from ..backends.cupy import require_cupy

            move = require_cupy().asarray
        elif device == "cpu":
            move = lambda w: w if isinstance(w, np.ndarray) else w.get()  # noqa: E731
        else:
            raise ValueError(f"device={device!r}: expected 'cpu' or 'gpu'")
        self.weights = [move(w) for w in self.weights]
        self.recurrent = {k: move(v) for k, v in self.recurrent.items()}
        self.readouts = {k: move(r) for k, r in self.readouts.items()}
        return self

    # ----------------------------------------------------------------- run
    def forward(self, x):
        """x: (T, B, n_in) -> (list of layer inputs s_{l-1}, list of traces)."""
        if x.ndim != 3 or x.shape[2] != self.sizes[0]:
            raise ValueError(f"input has shape {x.shape}; expected (T, batch, {self.sizes[0]})")
        if isinstance(x, np.ndarray) != isinstance(self.weights[0], np.ndarray):
            where = "numpy" if isinstance(self.weights[0], np.ndarray) else "cupy"
            raise TypeError(f"the input is a {type(x).__module__} array but the weights are {where} arrays: "
                            "move one of them (Network.to('gpu') / .to('cpu'), cupy.asarray / .get())")
        inputs, traces = [], []
        s = x.astype(self.dtype, copy=False)
        for layer, (W, model) in enumerate(zip(self.weights, self.models)):
            inputs.append(s)
            a = s @ W
            V = self.recurrent.get(layer)
            trace = ops.forward(model, a) if V is None else recurrent.forward(model, a, V, copy=False)
            traces.append(trace)
            s = trace.s
        return inputs, traces

    def _block_of(self, layer: int) -> int:
        return layer // self.blocks if self.blocks else 0

    def step(self, x, y, *, loss: str = "sum_ce", method: str = "exodus", truncation: int | None = None):
        """Forward, loss, backward; returns (StepResult, grads for weights and readouts)."""
        import warnings

        xp = _xp(x)
        clock = _Clock(xp)
        inputs, traces = self.forward(x)
        out = traces[-1].s
        total, g, pred = loss_and_grad(loss, out, y, self.n_classes)
        aux = {}
        for end, R in self.readouts.items():
            s_end = traces[end].s
            logits_t = s_end @ R  # (T, B, C)
            l_aux, dlog = _softmax_ce(logits_t.mean(axis=0), y)
            total += l_aux
            aux[end] = (dlog, s_end)
        if not math.isfinite(total):
            raise NonFiniteLossError(f"the loss became {total}: not training on it")
        clock.lap("forward")
        n_layers = len(self.weights)
        grads_w = [None] * n_layers
        grads_v = {}
        grads_r = {}
        norms = [0.0] * n_layers
        factors = [0.0] * n_layers
        for layer in range(n_layers - 1, -1, -1):
            if layer in aux:  # a block boundary: its own loss, nothing from above
                dlog, s_end = aux[layer]
                T = s_end.shape[0]
                grads_r[layer] = (s_end.sum(axis=0).T @ dlog) / T
                g = xp.broadcast_to((dlog @ self.readouts[layer].T) / T, s_end.shape).astype(self.dtype)
                clock.lap("weight_grad")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ops.StabilityWarning)
                try:
                    if layer in self.recurrent:
                        grads = recurrent.backward(self.models[layer], traces[layer], g, method, truncation,
                                                   parameters=False)
                        grads_v[layer] = grads.V
                    else:
                        grads = ops.backward(self.models[layer], traces[layer], g, method=method,
                                             truncation=truncation, parameters=False)  # only the weights are trained
                except ops.GradientOverflowError as exc:
                    raise NonFiniteLossError(f"layer {layer}: {exc}") from None
            factors[layer] = grads.max_step_factor
            da = grads.c if layer in self.recurrent else grads.a
            clock.lap("backward")
            # dL/dW = sum over t and b of s_(l-1)[t, b]^T da[t, b]: one matrix product of the (T B, in) and
            # (T B, out) views (an einsum "tbi,tbo->io" took 4.5 times as long, 44% of a training step)
            x_in = inputs[layer]
            gw = x_in.reshape(-1, x_in.shape[-1]).T @ da.reshape(-1, da.shape[-1])
            if not bool(xp.all(xp.isfinite(gw))):
                raise NonFiniteLossError(
                    f"layer {layer}: the weight gradient is not finite (largest |step factor| "
                    f"{grads.max_step_factor:.3g}, docs/MATH.md section 6)")
            grads_w[layer] = gw
            norms[layer] = float(xp.linalg.norm(gw.astype(np.float64)))  # finite where float32's sum of squares is not
            clock.lap("weight_grad")
            g = (da @ self.weights[layer].T).astype(self.dtype)
            clock.lap("backward")
        correct = int((pred == y).sum())
        rates = [float(trace.s.mean(dtype=np.float64)) for trace in traces]
        # the recurrent weights' gradients follow the feed-forward ones, in the order of parameters()
        grads_w = grads_w + [grads_v[k] for k in sorted(self.recurrent)]
        return StepResult(total, correct, norms, factors, clock.seconds, rates), grads_w, grads_r

    def parameters(self) -> list:
        """The trained arrays in the order of the gradients :meth:`step` returns: W_0.., V of the recurrent layers
        (by layer), the readouts (by layer)."""
        return (self.weights + [self.recurrent[k] for k in sorted(self.recurrent)]
                + [self.readouts[k] for k in sorted(self.readouts)])

    def predict(self, x, loss: str = "sum_ce"):
        _, traces = self.forward(x)
        s = traces[-1].s
        if loss == "max_ce":
            xp = _xp(s)
            r = xp.zeros_like(s[0])
            best = xp.full_like(s[0], -np.inf)
            for n in range(s.shape[0]):
                r = MAX_BETA * r + s[n]
                best = xp.maximum(best, r)
            return best.argmax(axis=1)
        return s.sum(axis=0).argmax(axis=1)

    # ------------------------------------------------------------ save/load
    def save(self, path) -> None:
        """Weights, readouts and the model definitions (as JSON) in one .npz (``.npz`` is appended if missing).

        The file is written to a temporary name and renamed, so an interrupted
        save leaves the previous file intact. Non-finite weights are refused
        (ValueError): :meth:`load` would refuse the file.
        """
        import errno

        host = lambda w: w if isinstance(w, np.ndarray) else w.get()  # noqa: E731
        meta = {"sizes": self.sizes, "models": [model_to_dict(m) for m in self.models], "blocks": self.blocks,
                "n_classes": self.n_classes, "init_gain": self.init_gain, "seed": self.seed,
                "dtype": self.dtype.name, "readouts": sorted(self.readouts)}
        if self.recurrent:  # (absent for a feed-forward network: its files stay as they were)
            meta["recurrent"] = sorted(self.recurrent)
            meta["recurrent_gain"] = self.recurrent_gain
        arrays = {f"W{i}": host(w) for i, w in enumerate(self.weights)}
        arrays.update({f"V{k}": host(v) for k, v in self.recurrent.items()})
        arrays.update({f"R{k}": host(r) for k, r in self.readouts.items()})
        for key, array in arrays.items():
            if not np.all(np.isfinite(array)):
                raise ValueError(f"weights {key!r} are not all finite (NaN or inf): not saving a network "
                                 "that Network.load would refuse")
        if not isinstance(path, (str, os.PathLike)):  # a file object
            np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
            return
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        folder = os.path.dirname(path) or "."
        if not os.path.isdir(folder):
            raise FileNotFoundError(errno.ENOENT, "the folder does not exist", folder)
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", path)
        write_atomically(path, lambda fh: np.savez(fh, meta=np.array(json.dumps(meta)), **arrays))

    @classmethod
    def load(cls, path) -> Network:
        """Read a file written by :meth:`save`, validating it like the constructor validates arguments.

        Everything is checked before any array is allocated: the metadata
        (sizes, models, blocks, dtype ...), the set of keys, and each array's
        ``.npy`` header (dtype equal to the network's float32/float64, shape
        matching ``sizes``, payload size matching the shape); then the arrays
        are read (never unpickled) and must be finite. Any problem, including
        a truncated or corrupt file, is a ValueError naming the file and the
        key; a missing file is a FileNotFoundError.
        """
        return _load(cls, path)


# ------------------------------------------------------------------ loading
_META_FIELDS = ("sizes", "models", "blocks", "n_classes", "init_gain", "seed", "dtype", "readouts")
#: Metadata fields a file may have (a network with recurrent hidden layers).
_OPTIONAL_FIELDS = ("recurrent", "recurrent_gain")
_MAX_META_CHARS = 1 << 20
_DTYPES = ("float32", "float64")
_MAX_DEFLATE_RATIO = 1100  # DEFLATE cannot expand more than ~1032:1


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _load(cls, path) -> Network:
    import os
    import zipfile
    import zlib

    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else repr(path)

    def fail(key, msg):
        where = f"key {key}: " if key else ""
        return ValueError(f"{name}: {where}{msg}")

    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{name}: not a readable network file (truncated, corrupt, or not an .npz archive "
                         f"written by Network.save): {exc}") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (EOFError, ValueError, OSError, zlib.error) as exc:
        raise ValueError(f"{name}: not a readable .npz archive: {exc}") from None
    with archive:
        members = {}
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise fail(repr(info.filename), "unexpected member (an .npz holds only .npy arrays)")
            key = info.filename[:-4]
            if key in members:
                raise fail(repr(key), "appears twice in the archive")
            members[key] = info

        def header(key):
            """(shape, dtype, header length) of member ``key``, reading nothing but its header."""
            info = members[key]
            if info.compress_type == zipfile.ZIP_STORED:
                if info.compress_size != info.file_size:
                    raise fail(repr(key), "stored sizes disagree (corrupt archive)")
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                if info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 4096:
                    raise fail(repr(key), f"declares {info.file_size} bytes from {info.compress_size} "
                                          "compressed (corrupt archive)")
            else:
                raise fail(repr(key), f"compression method {info.compress_type} is not supported "
                                      "(Network.save writes stored or deflated members)")
            try:
                with archive.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                    else:
                        raise ValueError(f"unsupported .npy format version {version}")
                    offset = fh.tell()
            except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
                raise fail(repr(key), f"not a readable .npy array: {exc}") from None
            if dtype.hasobject:
                raise fail(repr(key), f"has dtype {dtype} (Python objects): refused, arrays are never unpickled")
            return shape, dtype, offset

        def check_payload(key, shape, dtype, offset):
            expected = offset + math.prod(shape) * dtype.itemsize
            if members[key].file_size != expected:
                raise fail(repr(key), f"holds {members[key].file_size - offset} bytes of data; shape {shape} "
                                      f"of {dtype} needs {expected - offset} (truncated or corrupt)")

        def read(key):
            try:
                with archive.open(members[key]) as fh:
                    return np.lib.format.read_array(fh, allow_pickle=False)
            except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
                raise fail(repr(key), f"cannot be read (truncated or corrupt): {exc}") from None

        # ---- metadata
        if "meta" not in members:
            raise fail("'meta'", f"missing; the archive holds {sorted(members) or 'nothing'} "
                                 "(not a file written by Network.save)")
        shape, dtype, offset = header("meta")
        if shape != () or dtype.kind != "U":
            raise fail("'meta'", f"expected a JSON string (0-d unicode array), got shape {shape} dtype {dtype}")
        if dtype.itemsize > 4 * _MAX_META_CHARS:
            raise fail("'meta'", f"is {dtype.itemsize // 4} characters long; at most {_MAX_META_CHARS} accepted")
        check_payload("meta", shape, dtype, offset)
        text = str(read("meta")[()])
        try:
            meta = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise fail("'meta'", f"is not valid JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise fail("'meta'", f"expected a JSON object, got {type(meta).__name__}")
        missing = [k for k in _META_FIELDS if k not in meta]
        if missing:
            raise fail(repr(missing[0]), f"missing from the metadata (expected fields: {', '.join(_META_FIELDS)})")
        unknown = sorted(set(meta) - set(_META_FIELDS) - set(_OPTIONAL_FIELDS))
        if unknown:
            raise fail(repr(unknown[0]), f"unknown metadata field (expected: {', '.join(_META_FIELDS)}; optional: "
                                         f"{', '.join(_OPTIONAL_FIELDS)})")

        sizes = meta["sizes"]
        if not isinstance(sizes, list) or len(sizes) < 2 or not all(_is_int(k) and k >= 1 for k in sizes):
            raise fail("'sizes'", f"{sizes!r}: expected a list of at least 2 positive ints [n_in, ..., n_out]")
        n_layers = len(sizes) - 1
        dtype_name = meta["dtype"]
        if dtype_name not in _DTYPES:
            raise fail("'dtype'", f"{dtype_name!r}: expected one of {', '.join(_DTYPES)}")
        net_dtype = np.dtype(dtype_name)
        blocks = meta["blocks"]
        if blocks is not None and not (_is_int(blocks) and blocks >= 1):
            raise fail("'blocks'", f"{blocks!r}: expected an int >= 1 or null")
        n_classes = meta["n_classes"]
        from .data import MAX_CLASSES

        if not (_is_int(n_classes) and 1 <= n_classes <= MAX_CLASSES):
            raise fail("'n_classes'", f"{str(n_classes)[:40]}: expected an int from 1 to {MAX_CLASSES}")
        gain = meta["init_gain"]
        if not (isinstance(gain, (int, float)) and not isinstance(gain, bool) and math.isfinite(gain)):
            raise fail("'init_gain'", f"{gain!r}: expected a finite number")
        seed = meta["seed"]
        if seed is not None and not (_is_int(seed) and seed >= 0):
            raise fail("'seed'", f"{seed!r}: expected an int >= 0 or null")
        rec = meta.get("recurrent", [])
        if not (isinstance(rec, list) and all(_is_int(k) for k in rec) and rec == sorted(set(rec))
                and all(0 <= k < n_layers for k in rec)):
            raise fail("'recurrent'", f"{str(rec)[:60]}: expected the recurrent layers, a sorted list of distinct "
                                      f"layer indices 0..{n_layers - 1}")
        rec_gain = meta.get("recurrent_gain", 1.0)
        if not (isinstance(rec_gain, (int, float)) and not isinstance(rec_gain, bool) and math.isfinite(rec_gain)):
            raise fail("'recurrent_gain'", f"{rec_gain!r}: expected a finite number")
        if rec and blocks:
            raise fail("'recurrent'", "recurrent layers with local blocks are not supported")
        ends = list(range(blocks - 1, n_layers - 1, blocks)) if blocks else []
        if meta["readouts"] != ends:
            raise fail("'readouts'", f"{meta['readouts']!r}: with sizes {sizes} and blocks {blocks} "
                                     f"expected {ends}")
        specs = meta["models"]
        if not isinstance(specs, list) or len(specs) != n_layers:
            got = f"{len(specs)} entries" if isinstance(specs, list) else type(specs).__name__
            raise fail("'models'", f"expected a list of {n_layers} model definitions (one per layer), got {got}")
        models = []
        for i, spec in enumerate(specs):
            try:
                if not isinstance(spec, dict):
                    raise TypeError(f"expected a model definition (a JSON object), got {type(spec).__name__}")
                model = model_from_dict(spec)
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
                detail = str(exc) or type(exc).__name__
                if isinstance(exc, KeyError):
                    detail = f"missing field {exc}"
                raise fail(f"'models'[{i}]", detail) from None
            if not isinstance(model, NeuronModel):
                raise fail(f"'models'[{i}]", f"did not describe a NeuronModel (got {type(model).__name__})")
            models.append(model)

        # ---- array headers, before reading any array
        expected = {f"W{i}": (sizes[i], sizes[i + 1]) for i in range(n_layers)}
        expected.update({f"R{k}": (sizes[k + 1], n_classes) for k in ends})
        expected.update({f"V{k}": (sizes[k + 1], sizes[k + 1]) for k in rec})
        for key in expected:
            if key not in members:
                raise fail(repr(key), f"missing: sizes {sizes} and blocks {blocks} need arrays "
                                      f"{', '.join(expected)}")
        extra = sorted(set(members) - set(expected) - {"meta"})
        if extra:
            raise fail(repr(extra[0]), f"unexpected array: sizes {sizes} and blocks {blocks} need exactly "
                                       f"{', '.join(expected)}")
        for key, want in expected.items():
            shape, dtype, offset = header(key)
            if dtype != net_dtype:
                raise fail(repr(key), f"has dtype {dtype}; the network's dtype is {net_dtype}")
            if shape != want:
                raise fail(repr(key), f"has shape {shape}; sizes {sizes} need {want}")
            check_payload(key, shape, dtype, offset)

        # ---- arrays
        arrays = {}
        for key in expected:
            array = np.ascontiguousarray(read(key))
            if not np.all(np.isfinite(array)):
                bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
                raise fail(repr(key), f"{bad} of its {array.size} values are not finite (NaN or inf)")
            arrays[key] = array

    net = cls.__new__(cls)
    net.sizes = list(sizes)
    net.models = models
    net.dtype = net_dtype
    net.init_gain = gain
    net.seed = seed
    net.weights = [arrays[f"W{i}"] for i in range(n_layers)]
    net.blocks = blocks
    net.n_classes = n_classes
    net.readouts = {k: arrays[f"R{k}"] for k in ends}
    net.recurrent = {k: arrays[f"V{k}"] for k in rec}
    net.recurrent_gain = float(rec_gain)
    return net
