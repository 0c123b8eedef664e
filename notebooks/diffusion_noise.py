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
# # Interpolating diffusion noise: which paths stay on the prior's shell
#
# A latent diffusion model starts from Gaussian noise of shape `[4, 64, 64]`, often held in
# bfloat16. That is a latent of d = 4 · 64 · 64 = 16,384 i.i.d. N(0, 1) components, so its norm
# follows the χ law with 16,384 degrees of freedom: about 128, give or take 0.7. The model has
# only ever seen noise on that thin shell. Here we interpolate between noise latents three ways
# and look at the law of the norms:
#
# * **linear**: `latentot.lerp` (what `(1 - t) * a + t * b` does);
# * **slerp**: `latentot.slerp` over the whole latent, `axis=(-3, -2, -1)`;
# * **matched**: `latentot.matched_lerp` with the Gaussian prior, whose output has exactly the
#   prior's law (Agustsson et al.).
#
# No model is needed (or downloaded): the point is the latents' law, which is what the model
# receives. Everything runs in bfloat16 under `jax.jit`: latentot computes in float32 inside and
# returns bfloat16.
#
# Set `LATENTOT_FAST=1` for a quick run (the test suite does this).

# %%
# %matplotlib inline
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

import latentot as lt

FAST = os.environ.get("LATENTOT_FAST", "0") == "1"
SHAPE = (4, 64, 64)  # one noise latent [C, H, W], as a latent diffusion model takes it
AXES = (-3, -2, -1)  # the latent's axes: norms and angles are taken over all of them
DIM = int(np.prod(SHAPE))
PAIRS = 8 if FAST else 64  # interpolation paths, in one vmapped batch
FRAMES = 9 if FAST else 17  # frames per path, t = 0 ... 1
GRID = 5 if FAST else 9  # the 2-D grid between four latents is GRID x GRID
METHODS = ("linear", "slerp", "matched")
prior = lt.Gaussian()
chi = stats.chi(DIM)  # the law of ‖z‖ for z ~ N(0, I_d)
print(f"fast mode: {FAST}; JAX backend: {jax.default_backend()}; d = {DIM}")
print(f"prior norm law: chi({DIM}), mean {chi.mean():.3f}, sd {chi.std():.3f}")

# %% [markdown]
# ## Noise latents and the jitted operations
#
# `interpolate` takes one pair of latents and a vector of frames and returns `[T, 4, 64, 64]`
# for each method: slerp takes its angle over the whole latent (`axis=AXES`), while `lerp` and
# `matched_lerp` are component-wise and work on any shape as they are. `jax.vmap` over `t`
# gives the frames, and a second `jax.vmap` the batch of paths. `grid` builds the
# `[n, n, 4, 64, 64]` grid between four corner latents: bilinear (`lt.grid`), slerp of slerps,
# and matched (`lt.matched_grid`).

# %%
keys = jax.random.split(jax.random.key(0), 3)
starts = prior.sample(keys[0], (PAIRS, *SHAPE), jnp.bfloat16)
ends = prior.sample(keys[1], (PAIRS, *SHAPE), jnp.bfloat16)
corners = prior.sample(keys[2], (4, *SHAPE), jnp.bfloat16)  # top-left, top-right, bottom-...
ts = jnp.linspace(0.0, 1.0, FRAMES)


def interpolate(z0, z1, ts):
    """Frames ``[T, 4, 64, 64]`` of one path, for each method."""
    return {
        "linear": jax.vmap(lambda t: lt.lerp(z0, z1, t))(ts),
        "slerp": jax.vmap(lambda t: lt.slerp(z0, z1, t, axis=AXES))(ts),
        "matched": jax.vmap(lambda t: lt.matched_lerp(prior, z0, z1, t))(ts),
    }


@jax.jit
def paths(starts, ends, ts):
    """A batch of paths: ``[P, T, 4, 64, 64]`` for each method."""
    return jax.vmap(interpolate, in_axes=(0, 0, None))(starts, ends, ts)


@jax.jit
def grids(corners):
    """The ``[n, n, 4, 64, 64]`` grid between four latents, for each method."""
    tl, tr, bl, br = corners
    s = jnp.linspace(0.0, 1.0, GRID)

    def slerp_cell(v, u):
        top = lt.slerp(tl, tr, u, axis=AXES)
        bottom = lt.slerp(bl, br, u, axis=AXES)
        return lt.slerp(top, bottom, v, axis=AXES)

    return {
        "linear": lt.grid(corners, GRID),
        "slerp": jax.vmap(lambda v: jax.vmap(lambda u: slerp_cell(v, u))(s))(s),
        "matched": lt.matched_grid(prior, corners, GRID),
    }


def norms(z):
    """‖z‖ over the latent's axes, in float32."""
    z = z.astype(jnp.float32)
    return np.asarray(jnp.sqrt(jnp.sum(z * z, axis=AXES)))


t0 = time.perf_counter()
path = jax.block_until_ready(paths(starts, ends, ts))
grid = jax.block_until_ready(grids(corners))
t_first = time.perf_counter() - t0
t0 = time.perf_counter()
jax.block_until_ready((paths(starts, ends, ts), grids(corners)))
t_run = time.perf_counter() - t0
for name in METHODS:
    print(f"{name:8s} paths {path[name].shape} {path[name].dtype}, grid {grid[name].shape}")
print(
    f"wall time on this {jax.default_backend().upper()}: {t_first:.2f} s for the first call "
    f"(compilation included), {1e3 * t_run:.0f} ms for the next "
    f"({PAIRS * FRAMES + GRID * GRID} latents per method)"
)

# %% [markdown]
# ## The norm along the paths
#
# The shaded band holds 98% of the prior's norms (χ with 16,384 degrees of freedom, 1st to 99th
# percentile). Linear interpolation sinks to 128 · √((1 - t)² + t²), about 90.5 at the midpoint:
# 29% below the shell, some 50 standard deviations out. Slerp and the matched interpolation stay
# on it.

# %%
lo_band, hi_band = chi.ppf([0.01, 0.99])
inner = slice(1, FRAMES - 1)  # the frames strictly between the endpoints (the endpoints are noise)
colors = {"linear": "tab:red", "slerp": "tab:blue", "matched": "tab:green"}
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.2))
ax0.axhspan(lo_band, hi_band, color="0.8", label="prior: χ₁₆₃₈₄, 1%–99%")
for name in METHODS:
    r = norms(path[name])  # [P, T]
    for p in range(PAIRS):
        ax0.plot(ts, r[p], color=colors[name], alpha=0.5, lw=1, label=name if p == 0 else None)
ax0.set_xlabel("t")
ax0.set_ylabel("‖z‖ over the [4, 64, 64] latent")
ax0.set_title(f"norms along {PAIRS} bfloat16 paths")
ax0.legend(loc="lower left")

r_grid = np.linspace(chi.ppf(1e-4) - 0.5, chi.ppf(1 - 1e-4) + 0.5, 200)
ax1.plot(r_grid, chi.pdf(r_grid), color="k", lw=2, label="prior: χ₁₆₃₈₄ density")
bins = np.linspace(r_grid[0], r_grid[-1], 25)
for name in METHODS:
    r = norms(path[name][:, inner]).ravel()
    if name == "linear":  # nowhere near the shell: say where it is instead
        ax1.annotate(
            f"← linear: every inner frame at {r.min():.0f}–{r.max():.0f},\n"
            "    far left of this window",
            xy=(0.02, 0.9),
            xycoords="axes fraction",
            color=colors[name],
            fontsize=9,
        )
        continue
    ax1.hist(
        r,
        bins=bins,
        density=True,
        histtype="step",
        lw=2,
        color=colors[name],
        label=f"{name} (median {np.median(r):.1f})",
    )
ax1.set_xlabel("‖z‖ of the inner frames (0 < t < 1)")
ax1.set_ylabel("density")
ax1.set_title("norm law of the interpolated noise, zoomed on the shell")
ax1.legend(fontsize=8, loc="upper right")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## How far from the prior's norm law: KS statistics
#
# `latentot.diagnostics.norm_ks` compares the norms, taken over `axis=AXES`, with the exact χ
# law. The first row is the same number of fresh prior draws, for scale (frames of one path are
# correlated, so the matched and slerp rows scatter a little more than independent draws
# would). A KS of 1, the linear frames', means no overlap with the prior's norms at all.

# %%
from latentot import diagnostics as dg

inner_frames = {name: path[name][:, inner].reshape(-1, *SHAPE) for name in METHODS}
n = PAIRS * (FRAMES - 2)
reference = prior.sample(jax.random.key(1), (n, *SHAPE), jnp.bfloat16)  # fresh prior draws
print(f"KS of {n} norms against chi({DIM}):")
for name, z in {"prior draws": reference, **inner_frames}.items():
    print(f"  {name:12s} KS {float(dg.norm_ks(z, prior, axis=AXES)):.3f}")

# %% [markdown]
# ## A 2-D grid between four noise latents
#
# The bilinear grid's centre averages four latents, so its norm drops by half (to 64). Slerp of
# slerps and the matched grid keep every cell on the shell. Each panel shows ‖z‖ per grid cell,
# on one colour scale.

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
vmin = min(norms(grid[m]).min() for m in METHODS)
vmax = max(norms(grid[m]).max() for m in METHODS)
for ax, name in zip(axes, METHODS, strict=True):
    r = norms(grid[name])
    im = ax.imshow(r, vmin=vmin, vmax=vmax, cmap="viridis")
    for i in range(GRID):
        for j in range(GRID):
            light = r[i, j] > (vmin + vmax) / 2
            ax.text(
                j,
                i,
                f"{r[i, j]:.0f}",
                ha="center",
                va="center",
                fontsize=8,
                color="k" if light else "w",
            )
    ax.set_title(f"{name} grid: ‖z‖ per cell")
    ax.set_xticks([0, GRID - 1], ["left corners", "right corners"])
    ax.set_yticks([0, GRID - 1], ["top", "bottom"])
fig.colorbar(im, ax=axes, shrink=0.8, label="‖z‖ (prior: 128 ± 0.7)")
plt.show()
for name in METHODS:
    print(f"{name:8s} grid: centre norm {norms(grid[name])[GRID // 2, GRID // 2]:.1f}")

# %% [markdown]
# ## For your pipeline
#
# The matched interpolation is one line, and keeps the dtype and shape of the noise:
#
# ```python
# noise = latentot.matched_lerp(latentot.Gaussian(), noise0, noise1, t)  # [B, 4, 64, 64] bf16
# ```
#
# then hand `noise` to the pipeline as its initial latents. For the Gaussian prior it is the
# closed form y / √((1 - t)² + t²) of the linear interpolant y; for other priors latentot builds
# the monotone transport map numerically, the same call.
