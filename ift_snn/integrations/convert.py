"""Drop-in conversion of sinabs layers to ift_snn PyTorch layers: :func:`from_sinabs`.

sinabs is not imported here (nor needed): its layers, spike functions, resets and surrogates are recognised by
class name and module (``sinabs.layers`` / ``sinabs.activation``), and read through their attributes.
"""

from __future__ import annotations

import math

import sympy as sp

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("ift_snn.integrations.convert needs PyTorch: pip install -e '.[torch]' in the ift_snn checkout") from exc

from ..neurons.surrogates import (
    THETA,
    U,
    Surrogate,
    custom,
    exponential,
    gaussian,
)
from .torch import IF, LIF, SpikingLayer

__all__ = ["from_sinabs"]

#: The sinabs layers that convert (class name -> what they are).
_LAYERS = ("LIF", "IAF")
#: sinabs layers with no equal here, and why.
_REFUSED_LAYERS = {
    "LIFSqueeze": "takes (batch*time, *neurons) with batch and time flattened into one axis",
    "IAFSqueeze": "takes (batch*time, *neurons) with batch and time flattened into one axis",
    "LIFRecurrent": "feeds its spikes back through rec_connect at every step",
    "IAFRecurrent": "feeds its spikes back through rec_connect at every step",
}


def _is_sinabs(obj: object, module: str) -> bool:
    cls = obj if isinstance(obj, type) else type(obj)
    return cls.__module__.startswith(module)


def _name(obj: object) -> str:
    """The class name of a sinabs option (a class, such as SingleSpike, or an instance, such as MaxSpike(2))."""
    if isinstance(obj, type):
        return obj.__name__
    if not _is_sinabs(obj, "sinabs") and hasattr(obj, "__qualname__"):  # a function of one's own
        return obj.__qualname__
    return type(obj).__name__


def _scalar(kind: str, name: str, value: object) -> float:
    """One float from a number or a one-element tensor; several values (one per neuron) raise."""
    t = torch.as_tensor(value).detach()
    if t.numel() != 1:
        raise ValueError(f"sinabs.{kind} has {t.numel()} values of {name} (shape {tuple(t.shape)}); ift_snn takes "
                         "one value here")
    return float(t)


def _value(name: str, value: object) -> float | torch.Tensor:
    """A float (one value) or a detached copy of a tensor of values per neuron."""
    t = torch.as_tensor(value).detach()
    return float(t) if t.numel() == 1 else t.clone()


def _spike(kind: str, spike_fn) -> str | int:
    if spike_fn is None:
        raise ValueError(f"sinabs.{kind} with spike_fn=None (the membrane as output, no spikes) has no equal in "
                         "ift_snn's spiking layers")
    name = _name(spike_fn)
    if _is_sinabs(spike_fn, "sinabs.activation"):
        if name == "SingleSpike":
            return "single"
        if name == "MultiSpike":
            return "multi"
        if name == "MaxSpike":
            k = spike_fn.max_num_spikes_per_bin
            if k is None:
                return "multi"
            k = float(torch.as_tensor(k))
            if k < 1 or k != math.floor(k):
                raise ValueError(f"sinabs spike_fn MaxSpike(max_num_spikes_per_bin={k:g}) has no equal: ift_snn "
                                 "caps the spikes per step at an integer >= 1")
            return int(k)
    raise ValueError(f"sinabs spike_fn {name} has no equal in ift_snn; SingleSpike, MultiSpike and MaxSpike(k) have "
                     "(spike='single', 'multi', k)")


def _reset(kind: str, reset_fn, spike: str | int, spike_name: str) -> tuple[str, float | None]:
    """(reset, theta_r): theta_r None means the threshold itself."""
    name = _name(reset_fn)
    if _is_sinabs(reset_fn, "sinabs.activation"):
        if name == "MembraneSubtract":
            value = reset_fn.subtract_value
            return "subtract", None if value is None else _value("MembraneSubtract.subtract_value", value)
        if name == "MembraneReset":
            value = _scalar(kind, "MembraneReset.reset_value", reset_fn.reset_value)
            if value != 0.0:
                raise ValueError(
                    f"sinabs reset_fn MembraneReset(reset_value={value:g}) has no equal: sinabs computes "
                    "v * (spikes == 0) + reset_value, which adds reset_value to every neuron at every step, "
                    "not only after a spike; ift_snn resets to zero (reset_value=0)")
            if spike != "single":
                raise ValueError(f"sinabs reset_fn MembraneReset with spike_fn {spike_name} (several spikes per "
                                 "step) has no equal: ift_snn's reset to zero needs spike_fn=SingleSpike")
            return "zero", None
    raise ValueError(f"sinabs reset_fn {name} has no equal in ift_snn; MembraneSubtract(subtract_value) and "
                     "MembraneReset(reset_value=0) have")


def _gaussian_density(x: sp.Expr, mu: float, sigma: float) -> sp.Expr:
    mu, sigma = sp.Float(mu), sp.Float(sigma)
    return sp.exp(-((x - mu) ** 2) / (2 * sigma**2)) / (sigma * sp.sqrt(2 * sp.pi))


def _surrogate(surrogate_grad_fn) -> Surrogate:
    """ift_snn's surrogate with sinabs' sigma(v, threshold), formula for formula."""
    sg = surrogate_grad_fn
    name = _name(sg)
    x = U - THETA
    if _is_sinabs(sg, "sinabs.activation"):
        if name == "SingleExponential":
            return exponential(scale=float(sg.grad_scale), width=float(sg.grad_width))
        if name == "Gaussian":
            if float(sg.mu) == 0.0:
                return gaussian(scale=float(sg.grad_scale), width=float(sg.sigma))
            return custom(sp.Float(float(sg.grad_scale)) * _gaussian_density(x, float(sg.mu), float(sg.sigma)))
        if name == "MultiGaussian":
            h, sigma, mu, s = (sp.Float(float(v)) for v in (sg.h, sg.sigma, sg.mu, sg.s))
            expr = ((1 + h) * _gaussian_density(x, mu, sigma) - h * _gaussian_density(x, sigma, s * sigma)
                    - h * _gaussian_density(x, -sigma, s * sigma))
            return custom(sp.Float(float(sg.grad_scale)) * expr)
        if name == "Heaviside":
            # sinabs: (v >= threshold - window) / threshold; Heaviside(0) = 1 as the >= there
            return custom(sp.Heaviside(x + sp.Float(float(sg.window)), 1) / THETA)
        if name == "PeriodicExponential":
            # sinabs: v below the threshold -> v - threshold; above -> threshold (2 frac(v/threshold - 1/2) - 1),
            # twice v's distance to the nearest multiple of the threshold; then grad_scale exp(-|.| / grad_width)
            normalised = U / THETA - sp.Rational(1, 2)
            periodic = THETA * (2 * (normalised - sp.floor(normalised)) - 1)
            shifted = sp.Piecewise((x, U < THETA), (periodic, True))
            return custom(sp.Float(float(sg.grad_scale)) * sp.exp(-sp.Abs(shifted) / sp.Float(float(sg.grad_width))))
    raise ValueError(f"sinabs surrogate_grad_fn {name} has no equal in ift_snn; SingleExponential, Gaussian, "
                     "MultiGaussian, Heaviside and PeriodicExponential have")


def from_sinabs(layer, *, method: str = "exodus", stateful: bool = False) -> SpikingLayer:
    """A :class:`~ift_snn.integrations.torch.SpikingLayer` of the neurons a ``sinabs.layers.LIF`` or ``IAF`` describes.

    sinabs steps, per neuron (``norm_input=False``, no ``tau_syn``)::

        v = alpha v + x[t]                 alpha = exp(-1/tau_mem) (sinabs' alpha_mem_calculated); IAF: alpha = 1
        s[t] = spike_fn(v)                 SingleSpike 1[v >= thr]; MultiSpike (v > 0) trunc(v/thr); MaxSpike(k)
        v = reset_fn(s[t], v)              MembraneSubtract: v - s[t] subtract_value (default thr);
                                           MembraneReset(0): v (s[t] == 0)

    so the membrane compared with the threshold is u[t] = alpha (u[t-1] - theta_r s[t-1]) + x[t]: ift_snn's
    :func:`~ift_snn.lif` with ``reset_before_decay=True`` (IAF: :func:`~ift_snn.if_neuron`). Mapping:

    ================================================  ====================================================
    sinabs                                            ift_snn
    ================================================  ====================================================
    tau_mem (or alpha_mem with train_alphas=True)     alpha = the layer's ``alpha_mem_calculated`` (float32
                                                      in sinabs: taken as it is, so the values agree)
    spike_threshold                                   theta
    spike_fn SingleSpike / MultiSpike / MaxSpike(k)   spike="single" / "multi" / k (MaxSpike(None): "multi")
    MembraneSubtract(subtract_value)                  reset="subtract", theta_r=subtract_value (None: theta)
    MembraneReset(reset_value=0.0)                    reset="zero" (with SingleSpike)
    SingleExponential(grad_width, grad_scale)         exponential(scale=grad_scale, width=grad_width)
    Gaussian(mu=0, sigma, grad_scale)                 gaussian(scale=grad_scale, width=sigma)
    Gaussian(mu != 0), MultiGaussian, Heaviside,      custom(the same formula in u and theta); each new
    PeriodicExponential                               set of constants compiles its own kernel
    train_alphas=True, or tau_mem requiring grad      train_alpha=True (``layer.alpha``, see below)
    spike_threshold requiring grad                    train_theta=True
    record_states                                     record_states (see below)
    (batch, time, *neurons)                           the same layout
    ================================================  ====================================================

    The converted layer gives sinabs' spikes. Gradients: sinabs backpropagates through the subtraction reset
    (its spikes carry the surrogate gradient into ``v - s thr``): that is ``method="exodus"`` (the default), equal
    to sinabs' input gradient up to rounding (sinabs' spike functions return float32 spikes, so for float64
    inputs its gradients are float32-accurate; with float64 spikes they agree to ~1e-15). ``MembraneReset``
    multiplies by the mask ``(spikes == 0)``, which has no gradient: sinabs' gradient is then ``method="slayer"``
    (the reset detached); ``"exodus"`` is the exact gradient of the same spikes. sinabs' ``Gaussian`` and
    ``MultiGaussian`` take sqrt(2 pi) from ``torch.tensor(math.pi)``, float32 unless the default dtype is float64:
    theirs then differ from the formula (and from here) by ~1e-8 relative.

    Differences to know:

    * Trainable decay: sinabs trains ``tau_mem`` (an ``nn.Parameter`` requiring grad by default) or, with
      ``train_alphas=True``, ``alpha_mem``; the converted layer trains ``alpha`` (``layer.alpha``) in either case,
      so its gradient is dL/dalpha (dL/dtau_mem = dL/dalpha alpha / tau_mem^2): the same gradient flow, but an
      optimiser step on alpha is not one on tau_mem. A frozen ``tau_mem`` (requires_grad False) stays fixed.
      The trainable parameters take the dtype and device of the sinabs layer's parameters.
    * A trainable ``spike_threshold`` (sinabs freezes it): sinabs' own threshold gradient has only the reset
      path (its spike functions return no gradient for the threshold); ``train_theta`` gives the whole one.
    * ``record_states=True``: sinabs' ``recordings["v_mem"]`` is the membrane after the step's reset
      (u[t] - theta_r s[t], or u[t] (s[t] == 0)); the converted layer's is u[t] before it (the value compared
      with theta).
    * State: a sinabs layer carries ``v_mem`` from call to call until ``reset_states()``. ``stateful=True``
      does that (exactly, the carried state detached at the call boundary); the default ``stateful=False``
      starts every call from rest, as sinabs after ``reset_states()``. The sinabs layer's present ``v_mem`` is not
      copied. ``shape`` is not needed: the layer takes any (batch, time, *neurons).
    * The spikes come back in the input's dtype (sinabs: float32).
    * Per-neuron ``tau_mem`` (or ``alpha_mem``), ``spike_threshold`` and ``subtract_value`` (tensors of the neuron
      shape) become per-neuron values of the layer (trainable as above, or fixed buffers).

    Refused (ValueError naming the option; no exact equal here): ``norm_input=True`` (sinabs.LIF's default:
    it scales the input by (1 - alpha) inside the layer; build it with ``norm_input=False`` and scale the
    input, e.g. in the weights before); ``tau_syn`` (sinabs' synaptic current alpha_syn (i + x) with the reset
    before the decay is not :func:`~ift_snn.cuba_lif`); ``min_v_mem`` (sinabs clips the membrane after the reset, ift_snn's
    ``u_min`` before the spike: the spikes agree while the reset never goes below min_v_mem, the gradients do
    not, since sinabs evaluates the surrogate at the unclipped membrane); ``MembraneReset(reset_value != 0)``
    (sinabs adds reset_value to every neuron at every step) and ``MembraneReset`` with several spikes per
    step; ``MaxSpike(k)`` with k not an integer >= 1; ``spike_fn=None``; spike, reset and surrogate functions
    of one's own; ``LIFSqueeze`` / ``IAFSqueeze`` ((batch*time, ...) input: convert the LIF / IAF with the
    same arguments and unflatten around it); ``LIFRecurrent`` / ``IAFRecurrent`` (``rec_connect``). Any other
    layer (``ExpLeak``, ``ALIF``, sinabs-exodus' layers ...) raises TypeError.
    """
    cls = type(layer)
    kind = cls.__name__
    if cls.__module__.startswith("sinabs.layers") and kind in _REFUSED_LAYERS:
        if kind.endswith("Squeeze"):
            hint = (f"ift_snn's layer takes (batch, time, *neurons): convert sinabs.layers.{kind[:-len('Squeeze')]} "
                    "with the same arguments and call it on x.unflatten(0, (batch, time)), then .flatten(0, 1) "
                    "the spikes")
        else:
            hint = "ift_snn's layer has no recurrent connection: put one around it"
        raise ValueError(f"sinabs.{kind} {_REFUSED_LAYERS[kind]}: no equal here; {hint}")
    if kind not in _LAYERS or not cls.__module__.startswith("sinabs.layers"):
        raise TypeError(f"from_sinabs converts a sinabs.layers.LIF or sinabs.layers.IAF, got "
                        f"{cls.__module__}.{kind}")

    if getattr(layer, "tau_syn", None) is not None or getattr(layer, "alpha_syn", None) is not None:
        raise ValueError(f"sinabs.{kind} with tau_syn (a synaptic current i = alpha_syn (i + x), the reset before "
                         "the decay) has no exact equal in ift_snn (cuba_lif resets after the decay and filters "
                         "x without the factor alpha_syn)")
    if kind == "LIF" and layer.norm_input:
        raise ValueError("sinabs.LIF with norm_input=True (its default) scales the input by (1 - alpha) inside the "
                         "layer; ift_snn's LIF has no input scale: build the sinabs layer with norm_input=False and "
                         "scale the input by (1 - alpha) yourself (e.g. in the weights of the layer before)")
    if layer.min_v_mem is not None:
        raise ValueError(f"sinabs.{kind} with min_v_mem has no exact equal: sinabs clips the membrane after the "
                         "reset (v = max(v - reset, min_v_mem), then decays it), ift_snn's u_min clips it before "
                         "the spike; the spikes agree (while no reset takes v below min_v_mem) but the gradients do "
                         "not (sinabs evaluates the surrogate at the unclipped membrane)")
    if layer.spike_threshold is None:
        raise ValueError(f"sinabs.{kind} with spike_threshold=None has no equal: ift_snn's neurons need a threshold")

    theta = _value("spike_threshold", layer.spike_threshold)
    spike = _spike(kind, layer.spike_fn)
    reset, theta_r = _reset(kind, layer.reset_fn, spike, _name(layer.spike_fn))
    surrogate = _surrogate(layer.surrogate_grad_fn)
    model_kw = {"spike": spike, "surrogate": surrogate, "reset": reset}
    if theta_r is not None:
        model_kw["theta_r"] = theta_r
    layer_kw = {"method": method, "stateful": stateful, "record_states": bool(layer.record_states),
                "train_theta": bool(getattr(layer.spike_threshold, "requires_grad", False))}

    params = [p for p in layer.parameters() if p.is_floating_point()]
    if kind == "IAF":
        out = IF(theta, **model_kw, **layer_kw)
    else:
        if layer.train_alphas:
            decay, name = layer.alpha_mem, "tau_mem (alpha_mem, train_alphas=True)"
        else:
            decay, name = getattr(layer, "tau_mem", None), "tau_mem"
        if decay is None:
            raise ValueError(f"sinabs.LIF without {name} has no equal: ift_snn's LIF needs a decay")
        alpha = _value(name, layer.alpha_mem_calculated)
        train_alpha = isinstance(decay, torch.Tensor) and decay.requires_grad
        out = LIF(alpha, theta, reset_before_decay=True, train_alpha=train_alpha, **model_kw, **layer_kw)
    if params and out.trainable:  # in the dtype and on the device of sinabs' parameters, with the exact values
        like = params[0]
        values = {"alpha": alpha if kind == "LIF" else None, "theta": theta}
        for k in out.trainable:
            getattr(out, k).data = torch.as_tensor(values[k], dtype=like.dtype, device=like.device).clone()
    return out
