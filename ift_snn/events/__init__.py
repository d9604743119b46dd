"""Continuous time: exact event simulation and spike-time gradients (docs/MATH.md section 7, Bacho and Chu).

Current-based LIF neurons with subtractive reset, simulated event by event
(no time grid); the gradient of every spike time comes from the Implicit
Function Theorem applied to u(t_k) = theta, including the term through a
neuron's own earlier spikes (a reverse scan over its spikes)::

    import numpy as np
    from ift_snn.events import EventLIF, SpikeTrain, simulate, layer_backward
    model = EventLIF(tau=2.0, tau_s=1.0, theta=1.0, max_spikes=8)
    x = SpikeTrain.from_lists([[[0.1, 0.5], [0.3]]])        # 1 sample, 2 channels
    trace = simulate(model, np.array([[3.0, 2.0], [2.5, 1.0]]), x)
    grads = layer_backward(trace, np.ones_like(trace.out.times))
    grads.w, grads.inputs                                     # dL/dW, dL/d(input times)
"""

from .gradients import LayerGradients, layer_backward
from .losses import count_mse, first_spike_times, ttfs_cross_entropy
from .model import EventLIF, SpikeTrain, check_weights
from .network import EventNetwork
from .simulate import (
    LayerTrace,
    event_stream,
    first_crossing,
    membrane,
    simulate,
)

__all__ = [
    "EventLIF",
    "EventNetwork",
    "LayerGradients",
    "LayerTrace",
    "SpikeTrain",
    "check_weights",
    "count_mse",
    "event_stream",
    "first_crossing",
    "first_spike_times",
    "layer_backward",
    "membrane",
    "simulate",
    "ttfs_cross_entropy",
]
