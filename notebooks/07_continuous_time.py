# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7. Continuous time: from the implicit spike time to the multi-spike reverse scan
#
# Notebooks 1-6 worked on a time grid: the spike was a step function of
# u, and the gradient needed a surrogate for its derivative. Without a grid
# nothing needs replacing. A spike is the *time* t_k at which the membrane
# potential reaches the threshold, u(t_k) = theta. That equation defines t_k
# implicitly as a function of the weights and the input times, and the
# Implicit Function Theorem differentiates it exactly:
#
#     dt_k/dx = -(du/dx)(t_k) / u'(t_k)
#
# This is the method of Bacho and Chu (docs/MATH.md section 7). Their neuron is a
# current-based LIF with a subtractive reset dtheta:
#
#     u(t) = c sum_i w_i sum_j K(t - t_i^j) - dtheta sum_{t_k < t} exp(-(t - t_k)/tau)
#     K(s) = exp(-s/tau) - exp(-s/tau_s),      c = tau tau_s/(tau - tau_s)
#
# Their spike times have a closed form at tau = 2 tau_s. `ift_snn.events`
# handles that case and also any other tau != tau_s, with a bracketed root
# finder.

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ift_snn.events import EventLIF, EventNetwork, SpikeTrain, membrane, simulate
from ift_snn.events.kernels import cuda_sources
from ift_snn.symbolic.events import derive_events, render_events_text

FIGURES = Path(os.environ.get("IFT_SNN_FIGURE_DIR", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)


def save(fig, name):
    """Write the figure to FIGURES/name.png; every axes must have both labels."""
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: an axes has no label"
    fig.savefig(FIGURES / f"{name}.png", dpi=110, bbox_inches="tight")


def rel(got, want):
    return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


# %% [markdown]
# ## 1. One spike, one weight: the implicit derivative
#
# One neuron gets a single input spike at t = 0.2 through a weight w. We
# simulate it exactly, with no grid. Then we check dt_1/dw = -(du/dw)/(du/dt)
# against a central finite difference.

# %%
model = EventLIF(tau=2.0, tau_s=1.0, theta=1.0, max_spikes=10)
x1 = SpikeTrain.from_lists([[[0.2]]])


def first_spike(w):
    return simulate(model, np.array([[w]]), x1).out.times[0, 0, 0]


w0 = 2.5
t1 = first_spike(w0)
lag = t1 - 0.2
du_dw = model.c * (np.exp(-lag / model.tau) - np.exp(-lag / model.tau_s))
du_dt = model.c * w0 * (-np.exp(-lag / model.tau) / model.tau + np.exp(-lag / model.tau_s) / model.tau_s)
ift = -du_dw / du_dt
h = 1e-6
fd = (first_spike(w0 + h) - first_spike(w0 - h)) / (2 * h)
print(f"t_1 = {t1:.6f}   dt_1/dw: IFT {ift:.10f}, finite difference {fd:.10f}")
assert abs(ift - fd) < 1e-7 * abs(fd)
assert ift < 0  # a larger weight makes the neuron fire earlier

# %% [markdown]
# ## 2. tau = 2 tau_s: a quadratic in z = exp(t/tau)
#
# With tau = 2 tau_s, exp(-t/tau_s) = 1/z^2, so u = tau (B/z - A/z^2). The
# threshold condition becomes c z^2 - B z + A = 0, and its earlier root is
# z_k = 2A / (B + sqrt(B^2 - 4Ac)). SymPy derives this, proves that the
# closed-form derivatives dt_k/dA, dt_k/dB and dt_k/dt_m equal the implicit
# derivative (an exact algebraic proof), and checks them against central
# differences.

# %%
start = time.perf_counter()
d = derive_events()
print(render_events_text(d))
print(f"{time.perf_counter() - start:.1f} s")

# %%
assert d.proved and len(d.proofs) >= 8
assert d.numeric_ok and max(n.rel_error for n in d.numeric) < 1e-6

# %% [markdown]
# The simulator uses the closed form when tau = 2 tau_s. Otherwise it uses
# a root finder that cannot miss a crossing: between two input events u is
# a sum of two exponentials, so u' = 0 has at most one solution. That
# solution splits the interval into at most two monotone pieces. The first
# piece whose end is at or above theta brackets the crossing, and Newton's
# method, safeguarded by bisection, finds it. At tau = 2 tau_s both give
# the same spikes:

# %%
rng = np.random.default_rng(0)
x = SpikeTrain(np.sort(rng.uniform(0, 10, size=(2, 6, 8)), axis=2), np.full((2, 6), 8))
w = rng.uniform(0.1, 0.5, size=(6, 4))
closed = simulate(model.with_(solver="closed", max_spikes=40), w, x).out
bracketed = simulate(model.with_(solver="bracketed", max_spikes=40), w, x).out
valid = np.isfinite(closed.times)
print("spikes per neuron:", closed.counts.tolist())
assert np.array_equal(closed.counts, bracketed.counts)
assert np.max(np.abs(closed.times[valid] - bracketed.times[valid])) < 1e-12 * closed.times[valid].max()

# %% [markdown]
# ## 3. No crossing is missed, every spike is on the threshold
#
# Here we evaluate u from the global sum (independent of the simulator) on a
# dense grid, and at each recorded spike just before its reset.

# %%
out = simulate(model.with_(max_spikes=40), w, x).out
grid = np.linspace(0, 14, 10_000)[None].repeat(2, axis=0)
u = membrane(model, w, x, out, grid)
t_spikes = np.where(valid, out.times, 0.0).reshape(2, -1)
u_at = membrane(model, w, x, out, t_spikes).reshape(2, 4, 4, 40)
u_at = np.stack([u_at[:, m, m, :] for m in range(4)], axis=1)[valid]
print(f"max u on the grid {u.max():.6f}; |u(t_k) - theta| <= {np.max(np.abs(u_at - 1)):.1e}")
assert u.max() <= 1 + 1e-12 and np.max(np.abs(u_at - 1)) < 1e-12

fig, ax = plt.subplots(figsize=(8, 3.5))
ax.plot(grid[0], u[0, 0], lw=1, label="u(t), neuron 0, sample 0")
ax.plot(out.times[0, 0][valid[0, 0]], np.ones(valid[0, 0].sum()), "rv", label="spikes: u(t_k) = theta")
ax.axhline(1.0, color="k", ls=":", lw=0.8)
ax.set_xlabel("time t (units of tau_s)")
ax.set_ylabel("membrane potential u")
ax.legend(loc="lower right", fontsize=8)
save(fig, "07_membrane")

# %% [markdown]
# ## 4. Several spikes: the reset couples a neuron's spikes
#
# Spike k is emitted at u(t_k) = theta, and u contains the resets of the
# neuron's own earlier spikes m < k. So t_k depends on t_m:
#
#     dt_k/dt_m = -(du/dt_m)/u'(t_k) = (dtheta/tau) exp(-(t_k - t_m)/tau) / u'(t_k)
#
# (at tau = 2 tau_s: dtheta z_m / (tau x_k)). The total sensitivity of the
# loss to t_k is the direct term plus everything that flows through later
# spikes. A reverse scan over the neuron's own spikes accumulates it:
#
#     total_k = g_k + (dtheta/tau) sum_{n>k} lambda_n exp(-(t_n - t_k)/tau),   lambda_n = total_n / u'(t_n)
#
# Weight and input-time gradients then follow from lambda in closed form.
# Here is a two-layer network with 4-15 spikes per neuron, checked against
# central finite differences. The same backward without the reset term is
# also shown.

# %%
sizes = [6, 5, 3]
net = EventNetwork(sizes, model.with_(max_spikes=30))
net.weights = [rng.uniform(0.1, 0.5, size=(a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
traces = net.forward(x)
print("spikes per neuron, layer 1:", traces[0].out.counts.tolist(), " layer 2:", traces[1].out.counts.tolist())
out2 = traces[-1].out
g = np.where(np.isfinite(out2.times), rng.normal(size=out2.times.shape), 0.0)


def loss(weights):
    other = EventNetwork(sizes, net.models[0])
    other.weights = weights
    o = other.forward(x)[-1].out
    return float(np.sum(g * np.where(np.isfinite(o.times), o.times, 0.0)))


exact, _ = net.backward(traces, g)
no_reset, _ = net.backward(traces, g, reset_term=False)
fd = np.zeros_like(net.weights[0])
for i in range(fd.shape[0]):
    for j in range(fd.shape[1]):
        plus = [v.copy() for v in net.weights]
        minus = [v.copy() for v in net.weights]
        plus[0][i, j] += 1e-6
        minus[0][i, j] -= 1e-6
        fd[i, j] = (loss(plus) - loss(minus)) / 2e-6
print(f"dL/dW1: exact vs finite differences {rel(exact[0], fd):.1e}; "
      f"without the reset term {rel(no_reset[0], fd):.0%} off")

# %%
assert rel(exact[0], fd) < 1e-6
assert rel(no_reset[0], fd) > 0.1

# %% [markdown]
# ## 5. The same expressions, printed into kernels
#
# The simulation and the reverse scan are also generated as Numba and CUDA
# kernels (`ift_snn.events.kernels`), with one lane per (sample, neuron). Every
# expression in them comes from the SymPy derivation above. Here is the
# core of the CUDA reverse scan:

# %%
fwd_cu, bwd_cu = cuda_sources()
body = bwd_cu.code[bwd_cu.code.index("    for (long long e = ne"):]
print(bwd_cu.name)
print(body)
assert "P_tau*dtheta/tau + g" in body and "atomicAdd" in body
