"""ift_snn: exact gradients for spiking neural networks by the Implicit Function Theorem.

EXODUS (exact, = BPTT), SLAYER (reset dropped) and BPTT behind one switch::

    import numpy as np, ift_snn
    model = ift_snn.lif(alpha=0.9, theta=1.0)
    a = np.random.default_rng(0).normal(0.3, 0.5, size=(100, 32))   # (T, neurons)
    trace = ift_snn.forward(model, a)
    grads = ift_snn.backward(model, trace, np.ones_like(a), method="exodus")
    grads.a, grads.params["alpha"], grads.params["theta"]
"""

from .neurons import surrogates
from .neurons.kernels import Kernel, KernelError, NoRecurrenceError
from .neurons.models import (
    BUILTIN_MODELS,
    NeuronModel,
    alif,
    builtin_model,
    cuba_lif,
    get_model,
    if_neuron,
    lif,
    resonate_and_fire,
    srm,
)
from .methods import (
    BPTT,
    EXODUS,
    SLAYER,
    Method,
    get_method,
)
from .ops import (
    METHODS,
    GradientOverflowError,
    Gradients,
    StabilityWarning,
    Trace,
    backward,
    forward,
    state_names,
)
from . import recurrent  # recurrent layers: ift_snn.recurrent.forward / backward (docs/MATH.md section 9)
from .symbolic.stability import UnstableModelWarning, largest_stable_scale, stabilized, worst_step_factor
from .neurons.surrogates import Surrogate, get_surrogate

__version__ = "0.1.0"

__all__ = [
    "recurrent",
    "BUILTIN_MODELS",
    "EXODUS",
    "SLAYER",
    "BPTT",
    "Method",
    "get_method",
    "alif",
    "resonate_and_fire",
    "builtin_model",
    "METHODS",
    "GradientOverflowError",
    "Gradients",
    "Kernel",
    "KernelError",
    "NeuronModel",
    "NoRecurrenceError",
    "StabilityWarning",
    "UnstableModelWarning",
    "largest_stable_scale",
    "stabilized",
    "worst_step_factor",
    "Surrogate",
    "Trace",
    "backward",
    "cuba_lif",
    "forward",
    "get_model",
    "get_surrogate",
    "if_neuron",
    "lif",
    "srm",
    "state_names",
    "surrogates",
]
