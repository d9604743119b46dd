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
# # 2. The spiking neuron as a system of equations
#
# A Spike Response Model (SRM) neuron over T time steps (docs/MATH.md sections 1-3):
#
#     u[n] = sum_k eps[k] a[n-k]  -  sum_k nu[k] s[n-1-k]        membrane
#     s[n] = f(u[n])                                              spikes
#
# Written for all steps at once this is u = E a - N s, s = f(u), with E the
# lower-triangular Toeplitz matrix of the input kernel eps and N the strictly
# lower-triangular matrix of the reset kernel nu. Here u depends on s and s on
# u, which is a loop. Following notebook 1 we write it as
# phi(u, s; a) = 0 and apply the Implicit Function Theorem.
#
# `ift_snn.symbolic` does this with SymPy at a small horizon. We use T = 4
# and the LIF neuron written as an SRM, eps[k] = alpha^k and
# nu[k] = theta alpha^k (reset after decay, theta_r = theta). The surrogate
# derivative f'(u_n) becomes the symbol sigma_n.

# %%
import sympy as sp
from IPython.display import Math, display

import ift_snn
from ift_snn.neurons.models import param_symbol
from ift_snn.symbolic import ift
from ift_snn.symbolic.system import U_INIT, build_system

T = 4
model = ift_snn.srm("alpha**n", "theta*alpha**n", theta=1.0, params={"alpha": 0.9}, name="lif_as_srm")
print(model)
system = build_system(model, T)
alpha, theta = param_symbol("alpha"), param_symbol("theta")
a, u, s, sigma = system.a, system.u, system.s, system.sigma

# %% [markdown]
# ## The equations phi(u, s; a) = 0
#
# Two equations per step, interleaved in causal order (u_0, s_0, u_1, s_1,
# ...). `u_init` is the initial membrane. `f` is the spike function, which
# the library keeps opaque: only its derivative, the surrogate sigma, is
# ever used.

# %%
for eq in system.phi:
    display(Math("0 = " + sp.latex(eq)))

# %% [markdown]
# These are exactly u - E a + N s = 0 and s - f(u) = 0 of docs/MATH.md section 3.
# We check this by building E and N from the kernels (u_init set to 0):

# %%
E = sp.Matrix(T, T, lambda n, m: alpha ** (n - m) if n >= m else 0)
N = sp.Matrix(T, T, lambda n, m: theta * alpha ** (n - 1 - m) if n > m else 0)
display(Math(r"E = " + sp.latex(E) + r",\quad N = " + sp.latex(N)))
phi_u_matrix = sp.Matrix(u) - E * sp.Matrix(a) + N * sp.Matrix(s)
for n in range(T):
    assert sp.expand(system.phi_u[n].subs(U_INIT, 0) - phi_u_matrix[n]) == 0

# %% [markdown]
# ## The Jacobian is unit lower triangular
#
# d phi / d(u, s) in the interleaved order. Differentiating `f(u_n)` gives
# -sigma_n on the s-rows. The reset puts theta alpha^k on the u-rows, always
# *below* the diagonal because a spike acts only from the next step on.

# %%
jac = ift.jacobians(system)
J = jac.dependent
display(Math(r"\frac{\partial\phi}{\partial(u_0, s_0, \dots, u_3, s_3)} = " + sp.latex(J)))
print("structure (1 = unit diagonal, * = nonzero, . = zero):")
for i in range(J.rows):
    print(" ".join("1" if i == j else ("*" if J[i, j] != 0 else ".") for j in range(J.cols)))

# %% [markdown]
# The claim, asserted two ways: by the library's checker (it raises
# `NotTriangularError` naming the first offending entry) and directly. A
# unit lower-triangular matrix has determinant 1, so it is invertible for
# *every* value of the surrogate and the parameters. The IFT therefore
# always applies.

# %%
ift.check_unit_lower_triangular(J, system.dependent)
assert J.is_lower and all(J[i, i] == 1 for i in range(J.rows))
assert J.det() == 1

# %% [markdown]
# In the block order (u, s) the same matrix is [[I, N], [-F', I]] with
# F' = diag(sigma), as in docs/MATH.md section 3:

# %%
order = [2 * n for n in range(T)] + [2 * n + 1 for n in range(T)]
blocks = J.extract(order, order)
F_prime = sp.diag(*sigma)
assert blocks == sp.BlockMatrix([[sp.eye(T), N], [-F_prime, sp.eye(T)]]).as_explicit()
display(Math(r"\begin{bmatrix} I & N \\ -F' & I \end{bmatrix} = " + sp.latex(blocks)))

# %% [markdown]
# ## ds/da by forward substitution
#
# The IFT gives d(u, s)/da = -(d phi/d(u,s))^-1 d phi/da. Because the
# Jacobian is triangular, that inverse is never formed: one sweep down the
# rows (docs/MATH.md section 3) gives G = ds/da,
#
#     (du/da)[n, :] = E[n, :] - sum_{m<n} N[n, m] G[m, :]
#     G[n, :]       = sigma_n (du/da)[n, :]
#
# Written out by hand, row by row:

# %%
G_hand = sp.zeros(T, T)
for n in range(T):
    du_da_row = E[n, :] - sum((N[n, m] * G_hand[m, :] for m in range(n)), sp.zeros(1, T))
    G_hand[n, :] = (sigma[n] * du_da_row).applyfunc(sp.expand)

G = ift.ds_da(system, jac)  # the library: forward substitution over the sparse Jacobian
G_matrix = ((sp.eye(T) + F_prime * N).inv() * F_prime * E).applyfunc(sp.expand)  # (I + F'N)^-1 F'E
assert (G_hand - G).applyfunc(sp.expand) == sp.zeros(T, T)
assert (G_matrix - G).applyfunc(sp.expand) == sp.zeros(T, T)
display(Math("G = " + sp.latex(G.applyfunc(sp.factor))))

# %% [markdown]
# ## The LIF product formula
#
# Every entry factors into a product of step factors (docs/MATH.md section 3):
#
#     dS[n]/da[m] = sigma_n * prod_{k=m}^{n-1} (alpha - theta_r sigma_k)   (n > m),
#     sigma_n (n = m),   0 (n < m).
#
# Each factor alpha - theta_r sigma_k says how a perturbation survives one
# step. The membrane leak multiplies it by alpha, and the reset takes back
# theta_r sigma_k of it. We assert the formula symbolically for every entry:

# %%
def product_formula(n, m):
    if n < m:
        return sp.Integer(0)
    return sigma[n] * sp.prod([alpha - theta * sigma[k] for k in range(m, n)])


for n in range(T):
    for m in range(T):
        assert sp.expand(G[n, m] - product_formula(n, m)) == 0, (n, m)
display(Math(r"G_{3,0} = " + sp.latex(sp.factor(G[3, 0]))))

# %% [markdown]
# The same neuron in its first-order membrane form,
# u[n] = alpha u[n-1] + a[n] - theta s[n-1] (`ift_snn.lif`), gives a
# different, sparser system of equations. Its implicit function is the same,
# and so is G:

# %%
lif_system = build_system(ift_snn.lif(0.9, 1.0), T)
for eq in lif_system.phi_u:
    display(Math("0 = " + sp.latex(eq)))
G_lif = ift.ds_da(lif_system)
assert (G_lif - G).applyfunc(sp.expand) == sp.zeros(T, T)

# %% [markdown]
# ## What SLAYER computes instead
#
# SLAYER cuts the loop by dropping N from the backward pass. Its G is
# F' E, with entries sigma_n alpha^(n-m): the step factor is alpha instead of
# alpha - theta sigma_k. The difference is every term that contains the
# reset theta:

# %%
G_slayer = (F_prime * E).applyfunc(sp.expand)
for n in range(T):
    for m in range(n + 1):
        assert G_slayer[n, m] == sigma[n] * alpha ** (n - m)
assert G_slayer != G
assert (G - G_slayer).subs(theta, 0).applyfunc(sp.expand) == sp.zeros(T, T)  # equal when there is no reset
display(Math(r"G_{3,0} - G^{\mathrm{SLAYER}}_{3,0} = " + sp.latex(sp.factor(G[3, 0] - G_slayer[3, 0]))))

# %% [markdown]
# ## From G to the reverse scan that training runs
#
# Training needs dL/da = G^T g for g = dL/ds (the loss, or the layer above),
# not G itself. The adjoint of the forward substitution is a *back*
# substitution. For LIF it is one reverse scan per neuron (docs/MATH.md section 4):
#
#     delta_n = sigma_n g_n + (alpha - theta_r sigma_n) delta_{n+1},   delta_T = 0,   dL/da[n] = delta_n.
#
# We assert that G^T g, the library's symbolic adjoint, and this scan agree:

# %%
g = sp.Matrix(system.g)
grad_from_G = (G.T * g).applyfunc(sp.expand)
adjoint = ift.adjoint(system, jac)
delta = [sp.Integer(0)] * (T + 1)
for n in range(T - 1, -1, -1):
    delta[n] = sp.expand(sigma[n] * g[n] + (alpha - theta * sigma[n]) * delta[n + 1])
for n in range(T):
    assert sp.expand(grad_from_G[n] - adjoint.grad_a[n]) == 0
    assert sp.expand(delta[n] - grad_from_G[n]) == 0
factored = sp.Add(*[sp.factor(delta[0].coeff(gn)) * gn for gn in system.g], evaluate=False)
display(Math(r"\frac{\partial L}{\partial a_0} = " + sp.latex(factored)))

# %% [markdown]
# The scan costs O(T) per neuron and needs nothing from the forward pass but
# sigma_n. That is EXODUS. Notebook 3 runs it on real inputs against the
# float64 BPTT oracle, and notebook 4 turns it into generated kernels.
