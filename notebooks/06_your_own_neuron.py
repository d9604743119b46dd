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
# # 6. Your own neuron: define, derive, prove, generate, check, train
#
# Nothing in notebooks 2-5 was specific to LIF. Any Spike Response Model
# whose kernels satisfy a finite linear recurrence gets the same treatment.
# Here is a neuron the library has no constructor for:
#
# * input kernel eps[n] = n alpha^n. This is an *alpha-kernel*
#   postsynaptic potential that rises and then decays. It peaks
#   -1/ln(alpha) steps after the input and is 0 at n = 0, so an input acts
#   from the next step on;
# * reset kernel nu[n] = theta beta^n with beta = 0.95. This is a *slow*
#   reset: after a spike the membrane is pulled down by theta and recovers
#   over about 1/(1 - beta) = 20 steps, a relative refractory period.
#
# The kernels are written as strings. They are parsed over a whitelist of
# names, never evaluated.

# %%
import os
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import ift_snn
from ift_snn.training import data
from ift_snn.neurons import surrogates
from ift_snn.backends import reference
from ift_snn.codegen.cpu import python_source
from ift_snn.codegen.cuda import generate_cuda
from ift_snn.codegen.ir import build_kernel
from ift_snn.training.network import Adam, Network
from ift_snn.symbolic.report import derive, render_markdown
from ift_snn.experiments.verify import verify_numerically

FIGURES = Path(os.environ.get("IFT_SNN_FIGURE_DIR", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)


def save(fig, name):
    """Write the figure to FIGURES/name.png; every axes must have both labels."""
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: an axes has no label"
    fig.savefig(FIGURES / f"{name}.png", dpi=110, bbox_inches="tight")


def rel(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# %% [markdown]
# ## 1. Define

# %%
model = ift_snn.srm("n*alpha**n", "theta*beta**n", theta=1.0, params={"alpha": 0.8, "beta": 0.95},
                    name="alpha_slow_reset")
print(model)

n = np.arange(40)
values = model.values
eps = model.eps.impulse(40, values)
nu = model.nu.impulse(40, values)
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(n, eps, "o-", ms=3, label="eps[n] = n alpha^n  (response to one input)")
ax.plot(n, -nu, "s-", ms=3, label="−nu[n] = −theta beta^n  (reset, from the step after a spike)")
ax.axhline(0, color="k", lw=0.5)
ax.set_xlabel("steps after the input / spike, n")
ax.set_ylabel("contribution to u")
ax.set_title("the two kernels of the new neuron")
ax.legend(fontsize=8)
save(fig, "06_kernels")
assert eps[0] == 0 and np.argmax(eps) in (4, 5)  # peak at -1/ln(0.8) = 4.5 steps
assert np.all(nu > 0) and nu[20] > 0.3  # the reset is still a third of theta 20 steps later

# %% [markdown]
# ## 2. Derive and prove
#
# `derive` builds phi(u, s; a) = 0, checks that its Jacobian is unit lower
# triangular, solves ds/da by forward substitution, and finds each kernel's
# recurrence with SymPy: eps is second order, nu first order. From those it
# writes the forward and backward scans. It then *proves*, symbolically for
# T = 2..6, that the unrolled backward scan equals the IFT adjoint, in which
# the kernels enter by their closed-form values.

# %%
d = derive(model)
for k in d.recurrence.kernels:
    print(f"{k.name}: order {k.order}; {k.relation()}")
print()
print(d.recurrence.backward)
print()
for p in d.proofs:
    print(f"{p.label}: {'proved' if p.ok else 'FAILED'}: {p.detail}")
assert d.proved
assert [k.order for k in d.recurrence.kernels] == [2, 1]
assert d.recurrence.backward.direction == "reverse" and d.recurrence.state_size == 4  # d_next + 1 (nu) + 2 (eps)

# %% [markdown]
# The whole derivation renders as Markdown with LaTeX (what `ift-snn derive
# --eps "n*alpha**n" --nu "theta*beta**n" --markdown` prints). Here are its
# first three sections: the equations, the Jacobian structure, and ds/da.
# Because the reset kernel never ends, each u-row of the Jacobian has an
# entry for *every* earlier spike: all past spikes still pull on today's
# membrane. The matrix is still unit lower triangular.

# %%
markdown = render_markdown(d)
display(Markdown(markdown.split("## 4.")[0]))

# %% [markdown]
# A numeric check of the derived scans, run straight from their SymPy
# expressions, against the float64 oracle. It uses random inputs, T = 200,
# 16 neurons and 3 seeds:

# %%
check = verify_numerically(d)
print(check)
assert check.forward < 1e-10 and check.grad_a < 1e-10 and check.grad_u_init < 1e-10
assert check.slayer_vs_oracle < 1e-10 and check.slayer_vs_exact > 0.1

# %% [markdown]
# ## 3. Generate
#
# The same code generator as in notebook 4. The backward kernel carries four
# state variables per neuron: d_next, one for the reset filter and two for
# the alpha kernel. Parameters alpha, beta, theta are kernel arguments.

# %%
cuda_bwd = generate_cuda(model, "backward", "f32")
print(cuda_bwd.code)
assert "const float p_beta" in cuda_bwd.code

# %%
cpu_bwd = python_source(build_kernel(model, "backward", "f64"))
print(cpu_bwd.code)

# %% [markdown]
# ## 4. Check against the oracle
#
# Through the public API: NumPy arrays run the generated CPU kernels
# (compiled by Numba on first use). We compare dL/da, dL/du0 and the
# gradients of all three parameters with the oracle's hand-written BPTT
# sweep and with its dense IFT solve.

# %%
T, M = 300, 64
rng = np.random.default_rng(0)
a = rng.normal(0.12, 0.2, (T, M))
g = rng.normal(size=(T, M))
u0 = rng.normal(0.0, 0.3, M)
trace = ift_snn.forward(model, a, u0)
exact = ift_snn.backward(model, trace, g, method="exodus")
slayer = ift_snn.backward(model, trace, g, method="slayer")
oracle = reference.bptt(model, a, g, u0)
dense = reference.dense_ift(model, a, g, u0)
print(f"backend {trace.backend}, spike rate {trace.s.mean():.3f}")
print(f"u      vs oracle {rel(trace.u, oracle.u):.1e}")
print(f"dL/da  vs oracle {rel(exact.a, oracle.a):.1e}   vs dense IFT {rel(exact.a, dense.a):.1e}")
print(f"dL/du0 vs oracle {rel(exact.u0, oracle.u0):.1e}")
for k in model.parameter_names:
    print(f"dL/d{k:<5} {exact.params[k]: .8f}   oracle {oracle.params[k]: .8f}")
print(f"SLAYER vs exact {rel(slayer.a, oracle.a):.2f}")

assert trace.backend == "cpu" and trace.s.mean() > 0.02
assert np.array_equal(trace.s, oracle.s)
assert rel(trace.u, oracle.u) < 1e-10
assert rel(exact.a, oracle.a) < 1e-10 and rel(exact.a, dense.a) < 1e-10
assert rel(exact.u0, oracle.u0) < 1e-10
scale = max(abs(v) for v in oracle.params.values())
assert all(abs(exact.params[k] - oracle.params[k]) < 1e-10 * scale for k in oracle.params)
assert rel(slayer.a, oracle.a) > 0.1

# %% [markdown]
# The parameter gradients can also be checked without any oracle, by finite
# differences. The spike function must then be differentiable:
# `spike="smooth"` uses the primitive of a sigmoid surrogate, whose true
# derivative is exactly the surrogate. Here dL/dbeta, the gradient with
# respect to the reset's time constant, is checked against a central
# difference of L = sum(g * s):

# %%
smooth = ift_snn.srm("n*alpha**n", "theta*beta**n", theta=1.0, params={"alpha": 0.8, "beta": 0.95},
                     spike="smooth", surrogate=surrogates.sigmoid(slope=4.0), name="alpha_slow_reset")


def loss(m):
    return float(np.sum(g * ift_snn.forward(m, a, u0, backend="numpy").s))


grad_beta = ift_snn.backward(smooth, ift_snn.forward(smooth, a, u0, backend="numpy"), g).params["beta"]
h = 1e-6
fd_beta = (loss(smooth.with_params(beta=0.95 + h)) - loss(smooth.with_params(beta=0.95 - h))) / (2 * h)
print(f"dL/dbeta: exact {grad_beta:.8f}, central difference {fd_beta:.8f}")
assert abs(grad_beta - fd_beta) < 1e-6 * abs(fd_beta)

# %% [markdown]
# ## 5. Train a tiny network with it
#
# `ift_snn.training.network.Network` takes any neuron model. This one has 30 inputs,
# 32 hidden and 3 output neurons, all of the new kind. It gets 30 Adam steps
# on one batch of RandMan spike patterns (60 samples, 3 classes). This is a
# smoke test that gradients flow through the new neuron and reduce the loss,
# not a benchmark.

# %%
ds = data.randman(n_classes=3, samples_per_class=20, n_channels=30, T=50, seed=0)
x, y = next(ds.time_major_batches(len(ds), shuffle=False))
net = Network([30, 32, 3], model, seed=0, init_gain=1.0, dtype=np.float64)  # float64: the kernels compiled above
opt = Adam(lr=1e-2)
losses, accuracy = [], []
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ift_snn.StabilityWarning)
    for step in range(30):
        result, grads_w, _ = net.step(x, y, loss="sum_ce", method="exodus")
        opt.step(net.parameters(), grads_w)
        losses.append(result.loss)
        accuracy.append(result.correct / len(y))
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, batch accuracy {accuracy[0]:.2f} -> {accuracy[-1]:.2f}")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(np.arange(1, 31), losses, "o-", ms=3)
ax.set_xlabel("Adam step")
ax.set_ylabel("loss (cross-entropy of spike counts)")
ax.set_title("30-32-3 network of alpha-kernel, slow-reset neurons (EXODUS gradients)")
ax.grid(True, alpha=0.3)
save(fig, "06_training_loss")

# %%
assert losses[-1] < 0.5 * losses[0]
assert np.mean(losses[-5:]) < np.mean(losses[:5])
assert accuracy[-1] > 0.6

# %% [markdown]
# To make a neuron of your own, change the two strings. Closed forms with a
# finite linear recurrence (sums of exponentials, n^k alpha^n, differences of
# exponentials) give O(T) scans. A list of taps gives a finite kernel. A
# closed form without a recurrence is refused, unless you ask for its first
# K taps with `truncate=K`.
