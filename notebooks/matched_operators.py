# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Distribution-matched latent operations
#
# This notebook reproduces the figures behind `latentot`'s matched operators:
#
# * **Agustsson et al.** (ICLR 2018 submission, arXiv 1711.01970), Figs 1–3: linear and
#   spherical interpolation change the distribution of latent points, and the monotone transport
#   map T = F_Z⁻¹ ∘ F_Y restores it.
# * **Leśniak et al.** (arXiv 1806.01670), Fig. 1: the norms of high-dimensional Gaussian and
#   uniform latent vectors concentrate on a thin shell (Observation 2.1), while Cauchy vectors
#   fill the space.
#
# Set `LATENTOT_FAST=1` for a quick run with small samples (the test suite does this); the
# paper-sized run uses 10⁶ pairs.

# %%
# %matplotlib inline
import os

import jax
import numpy as np

import latentot as lt
from latentot import diagnostics as dg

FAST = os.environ.get("LATENTOT_FAST", "0") == "1"
N_2D = 20_000 if FAST else 1_000_000  # pairs for Fig. 1 (the paper: 10⁶)
N_100D = 5_000 if FAST else 1_000_000  # pairs for Fig. 2 (the paper: 10⁶)
N_NORMS = 1_000 if FAST else 10_000  # samples per dimension for Leśniak Fig. 1 (the paper: 10⁴)
DIMS = (1, 10, 100) if FAST else (1, 10, 100, 1000)
rng = jax.random.key(0)
k1, k2, k3, k4 = jax.random.split(rng, 4)
print(f"fast mode: {FAST}; JAX backend: {jax.default_backend()}")

# %% [markdown]
# ## Agustsson Fig. 1: midpoints of a 2-D uniform prior
#
# Draw independent pairs z0, z1 from Uniform(-1, 1)² and take midpoints. The linear midpoint
# (z0 + z1)/2 has a triangular density in each coordinate (a pyramid in 2-D); SLERP pushes points
# away from the origin (a ring with a hole); the matched midpoint T((z0 + z1)/2) is uniform
# again. For two uniform components T has a closed form through the trapezoid CDF of the
# weighted sum.

# %%
fig1 = dg.fig1_data(k1, n=N_2D)
for name, pts in fig1.items():
    print(f"{name:8s} KS against U(-1, 1): {float(dg.ks_distance(pts, lt.Uniform())):.4f}")
dg.plot_fig1(fig1, bins=60)

# %% [markdown]
# ## Agustsson Fig. 2: squared norms of midpoints in d = 100
#
# For i.i.d. components, E‖z‖² = d · E[Z²]. Uniform(-1, 1) prior: d/3 ≈ 33.3, but a linear
# midpoint has E[((Z0 + Z1)/2)²] = 1/6, so ‖y‖² ≈ d/6 ≈ 16.7. Gaussian: 100 vs 50. Matched
# midpoints coincide with the prior. SLERP roughly keeps the norm but not the component law.

# %%
fig2 = {
    "Uniform(-1, 1)": dg.fig2_data(k2, lt.Uniform(), dim=100, n=N_100D),
    "Gaussian N(0, 1)": dg.fig2_data(k2, lt.Gaussian(), dim=100, n=N_100D),
}
for prior_name, data in fig2.items():
    means = ", ".join(f"{k} {float(np.mean(v)):.1f}" for k, v in data.items())
    print(f"{prior_name}: mean ‖y‖² — {means}")
dg.plot_fig2(fig2, bins=80)

# %% [markdown]
# The same comparison as numbers: `mismatch_report` gives the KS statistic of the components
# against the prior's CDF, the KS of the norms against the norm law (the exact chi law for the
# Gaussian, Observation 2.1's normal approximation otherwise), and the norm moments.

# %%
for prior in (lt.Uniform(), lt.Gaussian()):
    print(dg.mismatch_report(k2, prior, 100, N_100D).format(), end="\n\n")

# %% [markdown]
# ## Agustsson Fig. 3: the monotone transport maps
#
# For linear interpolation y = (1 - t) z0 + t z1 of a uniform prior, T_t = F_Z⁻¹ ∘ F_Y stretches
# the concentrated middle of the trapezoid density outwards. At t → 0 the map approaches the
# identity; at t = 0.5 it is steepest.

# %%
fig3 = dg.fig3_data(lt.Uniform(), ts=(0.05, 0.25, 0.5))
dg.plot_fig3(fig3)

# %% [markdown]
# The same maps for other priors: the Gaussian map is linear (y / √((1-t)² + t²)), the Cauchy map
# is the identity (the Cauchy is stable under convex combinations), and the Laplace map is
# computed numerically by quadrature over the prior's quantiles.

# %%
y = np.linspace(-3.0, 3.0, 5, dtype=np.float32)
print("y =", y.tolist())
for prior in (lt.Gaussian(), lt.Cauchy(), lt.Laplace()):
    d3 = dg.fig3_data(prior, ts=(0.05, 0.25, 0.5), y=y)
    for t, m in zip(d3["t"], np.asarray(d3["maps"]), strict=True):
        print(f"{type(prior).__name__:8s} T_{float(t):g}(y) = {np.round(m, 3).tolist()}")

# %% [markdown]
# ## Leśniak Fig. 1: norms of latent vectors with increasing dimension
#
# For i.i.d. components with E[Z²] = μ₂ and Var[Z²] = σ₂², ‖z‖ is approximately
# N(√(d μ₂), σ₂²/(4μ₂)) (Observation 2.1). For the Gaussian that is N(√d, 1/2) (the paper
# prints variance 1; the exact chi law's variance tends to 1/2), for Uniform(-1, 1) it is
# N(√(d/3), 1/15). The Cauchy has no finite second moment: its norms spread over orders of
# magnitude and no normal approximation exists (no curve is drawn).

# %%
norm_data = dg.norm_distribution_data(
    k4,
    {"Gaussian": lt.Gaussian(), "Uniform": lt.Uniform(), "Cauchy": lt.Cauchy()},
    DIMS,
    n=N_NORMS,
)
for d in DIMS:
    mean, var = dg.chi_moments(d)
    sample = np.asarray(norm_data["Gaussian"][d]["norms"])
    print(
        f"d = {d:5d}: Gaussian ‖z‖ sample mean {sample.mean():8.3f} var {sample.var():.3f} | "
        f"chi law {float(mean):8.3f} / {float(var):.3f} | Obs. 2.1 {np.sqrt(d):8.3f} / 0.500"
    )
dg.plot_norm_distribution(norm_data)
