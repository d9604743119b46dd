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
# # 1. The Implicit Function Theorem from scratch
#
# Spiking neurons reset after a spike, and the reset feeds back into the
# membrane. Once a layer is written over all time steps at once, that
# feedback is a *loop* in the computation graph, and the chain rule cannot be
# pushed through a loop. The Implicit Function Theorem (IFT) handles loops.
# This notebook shows it on two small problems before the spiking case:
#
# 1. a curve F(x, y) = 0, where dy/dx = -F_x / F_y;
# 2. a value defined by a loop, y = tanh(w x + c y). Here the chain rule that
#    ignores the loop gives the wrong derivative, and the IFT gives the right
#    one. Finite differences decide which is right.
#
# Every claim is checked by an `assert`, so the test suite fails if one stops
# being true.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import sympy as sp
from scipy.optimize import brentq

from ift_snn.symbolic.ift import implicit_derivative

FIGURES = Path(os.environ.get("IFT_SNN_FIGURE_DIR", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)


def save(fig, name):
    """Write the figure to FIGURES/name.png; every axes must have both labels."""
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: an axes has no label"
    fig.savefig(FIGURES / f"{name}.png", dpi=110, bbox_inches="tight")


# %% [markdown]
# ## The theorem for two variables
#
# Let F(x, y) = 0 near a point (x0, y0) where F is smooth and F_y = dF/dy is
# not zero. Then near x0 the equation defines y as a function y(x), and since
# F(x, y(x)) = 0 for every x, its total derivative is zero:
#
#     F_x + F_y dy/dx = 0   =>   dy/dx = -F_x / F_y.
#
# We never need a formula for y(x) itself. Take the cubic curve
# F(x, y) = x^2 + x y + y^3 - 3, which passes through (1, 1).

# %%
x, y = sp.symbols("x y", real=True)
F = x**2 + x * y + y**3 - 3
assert F.subs({x: 1, y: 1}) == 0

dydx_ift = -sp.diff(F, x) / sp.diff(F, y)
dydx_ift

# %% [markdown]
# SymPy's `idiff` does implicit differentiation its own way (it
# differentiates F(x, y(x)) and solves for y'); the library's
# `implicit_derivative` solves -(dF/dy)^-1 dF/dx. Both agree with the formula:

# %%
dydx_sympy = sp.idiff(F, y, x)
dydx_lib = implicit_derivative([F], [y], [x])[0, 0]
print("-F_x/F_y          :", dydx_ift)
print("sympy.idiff       :", dydx_sympy)
print("implicit_derivative:", dydx_lib)
assert sp.simplify(dydx_ift - dydx_sympy) == 0
assert sp.simplify(dydx_ift - dydx_lib) == 0

slope = float(dydx_ift.subs({x: 1, y: 1}))
print("dy/dx at (1, 1) =", slope)
assert slope == -0.75

# %% [markdown]
# A numerical check needs y(x) only as a black box: solve F(x, y) = 0 for y
# by root finding at x0 +- h and take the central difference.

# %%
F_num = sp.lambdify((x, y), F)


def y_of(xv):
    """The branch of F(x, y) = 0 through (1, 1), by bracketing root search."""
    return brentq(lambda yv: F_num(xv, yv), 0.0, 2.0, xtol=1e-15)


h = 1e-5
fd = (y_of(1 + h) - y_of(1 - h)) / (2 * h)
print(f"finite difference {fd:.10f}   IFT {slope:.10f}")
assert abs(fd - slope) < 1e-8

# %% [markdown]
# The tangent line with that slope touches the curve at (1, 1):

# %%
xs = np.linspace(-2.5, 2.5, 400)
X, Y = np.meshgrid(xs, xs)
fig, ax = plt.subplots(figsize=(5, 4.5))
ax.contour(X, Y, F_num(X, Y), levels=[0], colors="tab:blue")
ax.plot(xs, 1 + slope * (xs - 1), "--", color="tab:red", label=f"tangent, slope -F_x/F_y = {slope:g}")
ax.plot([1], [1], "ko")
ax.plot([], [], color="tab:blue", label="F(x, y) = x² + xy + y³ − 3 = 0")
ax.set_xlim(-2.5, 2.5)
ax.set_ylim(-2.5, 2.5)
ax.set_xlabel("x")
ax.set_ylabel("y")
ax.set_title("The IFT gives the slope of a curve known only implicitly")
ax.legend(loc="lower left", fontsize=8)
save(fig, "01_curve_tangent")

# %% [markdown]
# **When the theorem does not apply.** If F_y = 0 the curve has a vertical
# tangent there and y is not a function of x. On the plot these are the two
# points where the blue curve turns back. They solve F = 0 together with
# F_y = x + 3 y^2 = 0; substituting x = -3 y^2 gives 9 y^4 - 2 y^3 - 3 = 0:

# %%
turning = [(-3 * r**2, r) for r in (float(v) for v in sp.Poly(9 * y**4 - 2 * y**3 - 3, y).nroots() if v.is_real)]
for xt, yt in turning:
    print(f"vertical tangent at x = {xt:.3f}, y = {yt:.3f}:  F = {F_num(xt, yt):.1e}, F_y = {xt + 3 * yt**2:.1e}")
assert len(turning) == 2 and all(abs(F_num(xt, yt)) < 1e-12 for xt, yt in turning)

# %% [markdown]
# With several unknowns the condition is that the Jacobian dF/dy is
# non-singular, and `implicit_derivative` refuses a system where it is
# singular. (For the spiking neuron the Jacobian is unit lower triangular, so
# this never happens: see notebook 2.)

# %%
x1, y1, y2 = sp.symbols("x1 y1 y2", real=True)
try:
    implicit_derivative([y1 + y2 - x1, 2 * y1 + 2 * y2 - 2 * x1], [y1, y2], [x1])
    raise AssertionError("a singular dF/dy was accepted")
except ValueError as exc:
    print("refused:", exc)

# %% [markdown]
# ## A loop in the computation graph
#
# Now let y be defined by a loop: y is the fixed point of
#
#     y = tanh(w x + c y).
#
# In the graph, y feeds back into its own input. Numerically we find y by
# iterating y <- tanh(w x + c y). This converges because the map is a
# contraction: |c (1 - y^2)| < 1.
#
# What is dy/dx?
#
# * **Naive chain rule, ignoring the loop**: treat the y inside tanh as a
#   constant. Then dy/dx = (1 - y^2) w.
# * **IFT**: F(x, y) = y - tanh(w x + c y) = 0, so F_y = 1 - c (1 - y^2) and
#   F_x = -w (1 - y^2), giving
#   dy/dx = w (1 - y^2) / (1 - c (1 - y^2)).
#
# The two differ by the factor 1 / (1 - c (1 - y^2)): the feedback the naive
# rule throws away.

# %%
W, C = 1.5, 0.8
x0 = 0.3


def fixed_point(xv, w=W, c=C, iters=None, tol=1e-15):
    """y = tanh(w x + c y) by fixed-point iteration (to convergence, or a given number of steps)."""
    yv = 0.0
    for k in range(iters or 10_000):
        new = np.tanh(w * xv + c * yv)
        if iters is None and abs(new - yv) < tol:
            return new
        yv = new
    return yv


y0 = fixed_point(x0)
contraction = C * (1 - y0**2)
print(f"y* = {y0:.12f}, residual {y0 - np.tanh(W * x0 + C * y0):.1e}")
print(f"contraction factor c(1 - y*^2) = {contraction:.3f}")
assert abs(contraction) < 1

naive = (1 - y0**2) * W
ift = W * (1 - y0**2) / (1 - C * (1 - y0**2))
h = 1e-6
fd = (fixed_point(x0 + h) - fixed_point(x0 - h)) / (2 * h)
print(f"finite difference : {fd:.9f}")
print(f"IFT               : {ift:.9f}   (error {abs(ift - fd):.1e})")
print(f"naive chain rule  : {naive:.9f}   (error {abs(naive - fd):.1e}, {100 * abs(naive - fd) / fd:.0f}% off)")

# %% [markdown]
# The claims of this section, as asserts: the IFT derivative agrees with
# finite differences to about 1e-8 (the limit of a central difference), and
# the naive chain rule is wrong by far more than that.

# %%
assert abs(ift - fd) < 1e-7 * abs(fd)
assert abs(naive - fd) > 0.2 * abs(fd)  # about 29% off here

# %% [markdown]
# The library's symbolic IFT gives the same formula, with y left as a
# symbol: the derivative is a function of the solution, never of how it was
# found.

# %%
w_s, c_s = sp.symbols("w c", real=True)
G = y - sp.tanh(w_s * x + c_s * y)
dydx_loop = implicit_derivative([G], [y], [x])[0, 0]
print("dy/dx =", dydx_loop)
value = float(dydx_loop.subs({w_s: W, c_s: C, x: x0, y: y0}))
assert abs(value - ift) < 1e-12
assert sp.simplify(dydx_loop - sp.idiff(G, y, x)) == 0

# %% [markdown]
# ## Unrolling the loop is back-propagation through "time"
#
# Another exact route is to differentiate the iteration itself:
# y_{k+1} = tanh(w x + c y_k) gives
#
#     dy_{k+1}/dx = (1 - y_{k+1}^2) (w + c dy_k/dx),
#
# which is what automatic differentiation through K iterations (BPTT over the
# iterations) computes. Near the fixed point each iteration multiplies the
# error by the factor c (1 - y*^2), so the unrolled derivative converges
# geometrically to the IFT value. The first unrolled step is exactly the
# naive chain rule. The IFT skips the K iterations: it needs only the
# solution y*.

# %%
def unrolled_derivative(xv, K, w=W, c=C):
    """dy_K/dx through K iterations from y_0 = y* (forward mode)."""
    yv, dy = y0, 0.0
    for _ in range(K):
        yv = np.tanh(w * xv + c * yv)
        dy = (1 - yv**2) * (w + c * dy)
    return dy


Ks = np.arange(1, 28)  # beyond ~28 iterations the error is at float64 round-off
unrolled = np.array([unrolled_derivative(x0, K) for K in Ks])
assert abs(unrolled[0] - naive) < 1e-12  # one step of the chain rule = the naive rule
assert abs(unrolled[-1] - ift) < 1e-9 * abs(ift)  # many steps = the IFT

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.semilogy(Ks, np.abs(unrolled - ift), "o-", ms=3, label="|unrolled (BPTT over K steps) − IFT|")
ax.semilogy(Ks, abs(naive - ift) * np.abs(contraction) ** (Ks - 1), "--",
            label=f"|naive − IFT| · |c(1 − y*²)|^(K−1), factor {contraction:.2f}")
ax.set_xlabel("unrolled iterations K")
ax.set_ylabel("error of dy/dx")
ax.set_title("Unrolling converges to the IFT derivative geometrically")
ax.legend(fontsize=8)
save(fig, "01_unrolled_vs_ift")

# %% [markdown]
# ## What this means for spiking neurons
#
# | toy loop | spiking layer (notebooks 2 and 3) |
# |---|---|
# | y = tanh(w x + c y) | u = E a - N s, s = f(u) |
# | the feedback c y | the reset term N s |
# | naive chain rule (loop cut) | SLAYER: the reset dropped from the backward pass |
# | unrolled iterations (BPTT) | BPTT through the time loop |
# | IFT, one linear solve | EXODUS: one O(T) reverse scan |
# | contraction factor c (1 - y^2) | step factor alpha - theta_r sigma(u) |
#
# There is one difference. In the spiking layer the loop is causal: the
# reset at step n only affects later steps. The Jacobian is therefore
# triangular, and the IFT's linear solve is a single substitution sweep,
# exactly equal to BPTT.
