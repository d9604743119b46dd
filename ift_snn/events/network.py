"""A dense feedforward network of :class:`EventLIF` layers, trained with exact spike-time gradients.

Layer l maps spike trains of ``sizes[l]`` channels to ``sizes[l+1]`` neurons
with weights ``W_l`` (sizes[l], sizes[l+1]). Forward: :func:`simulate` layer
by layer (the output times of one layer are the input times of the next).
Backward: :func:`layer_backward` from the last layer down; the input-time
gradient of layer l+1 is the direct dL/dt of layer l's spikes. Exact: the
gradient of the network's spike times (and of any loss of them) wherever the
spike counts do not change.

Cost: O(sum over layers of B M (E + K)). ``backend="numba"`` runs the
compiled kernels of :mod:`ift_snn.events.kernels` (generated from the SymPy
derivation), ``"numpy"`` the reference simulation.
"""

from __future__ import annotations

import numpy as np

from ..optim import Adam
from .gradients import LayerGradients, layer_backward
from .losses import count_mse, ttfs_cross_entropy
from .model import EventLIF, SpikeTrain, check_weights
from .simulate import LayerTrace, simulate

__all__ = ["EventNetwork", "Adam"]

BACKENDS = ("numpy", "numba")


class EventNetwork:
    """Dense layers ``W_l`` of :class:`EventLIF` neurons; see the module docstring."""

    def __init__(self, sizes: list[int], model: EventLIF | list[EventLIF] | None = None, *, seed: int = 0,
                 weight_mean: float = 0.0, weight_std: float | None = None, backend: str = "numpy"):
        if len(sizes) < 2 or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in sizes):
            raise ValueError(f"sizes={sizes!r}: expected at least [n_in, n_out] with positive ints")
        self.sizes = [int(k) for k in sizes]
        models = model if isinstance(model, list) else [model or EventLIF()] * (len(sizes) - 1)
        if len(models) != len(sizes) - 1 or not all(isinstance(m, EventLIF) for m in models):
            raise TypeError(f"model: expected one EventLIF or a list of {len(sizes) - 1}")
        self.models = models
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: expected one of {BACKENDS}")
        self.backend = backend
        rng = np.random.default_rng(seed)
        self.weights = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            std = weight_std if weight_std is not None else 1.0 / np.sqrt(n_in)
            self.weights.append(rng.normal(weight_mean, std, size=(n_in, n_out)))

    def parameters(self) -> list[np.ndarray]:
        return self.weights

    def _simulate(self, model, w, x):
        if self.backend == "numba":
            from .kernels import simulate_compiled

            return simulate_compiled(model, w, x)
        return simulate(model, w, x)

    def _backward(self, trace, g, reset_term):
        if self.backend == "numba" and reset_term:
            from .kernels import backward_compiled

            return backward_compiled(trace, g)
        return layer_backward(trace, g, reset_term=reset_term)

    def forward(self, x: SpikeTrain) -> list[LayerTrace]:
        """Traces of every layer; ``traces[-1].out`` are the output spikes."""
        if not isinstance(x, SpikeTrain):
            raise TypeError(f"x is a {type(x).__name__}; expected ift_snn.events.SpikeTrain")
        if x.shape[1] != self.sizes[0]:
            raise ValueError(f"x has {x.shape[1]} channels; expected {self.sizes[0]}")
        traces = []
        for model, w in zip(self.models, self.weights):
            check_weights(w)
            traces.append(self._simulate(model, w, x))
            x = traces[-1].out
        return traces

    def backward(self, traces: list[LayerTrace], grad_out: np.ndarray, *,
                 reset_term: bool = True) -> tuple[list[np.ndarray], np.ndarray]:
        """(dL/dW per layer, dL/d(network input times)) from dL/d(output times)."""
        grads: list[LayerGradients] = []
        g = grad_out
        for trace in reversed(traces):
            grads.append(self._backward(trace, g, reset_term))
            g = grads[-1].inputs
        return [gr.w for gr in reversed(grads)], g

    def loss(self, out: SpikeTrain, labels, loss: str = "ttfs", **kw):
        """(loss, dL/d(output times), predictions) for ``loss`` in ('ttfs', 'count')."""
        if loss == "ttfs":
            return ttfs_cross_entropy(out, labels, **kw)
        if loss == "count":
            on, off = kw.get("target_on", 4.0), kw.get("target_off", 1.0)
            y = np.asarray(labels)
            targets = np.full(out.counts.shape, float(off))
            targets[np.arange(len(y)), y] = on
            return count_mse(out, targets)
        raise ValueError(f"loss={loss!r}: expected 'ttfs' or 'count'")

    def predict(self, x: SpikeTrain, loss: str = "ttfs", t_absent: float = 1e9) -> np.ndarray:
        out = self.forward(x)[-1].out
        if loss == "count":
            return np.argmax(out.counts, axis=1)
        return np.argmin(np.where(out.counts > 0, out.times[:, :, 0], t_absent), axis=1)
