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
# # Digits end to end: AE-OT against a VAE, matched against linear interpolation
#
# Everything runs on the 1797 scikit-learn digits (8×8 pixels, shipped inside scikit-learn, so
# nothing is downloaded), on a CPU:
#
# 1. a digits classifier trained in-process scores samples (an "inception score", a Fréchet
#    distance in its feature space, and class coverage; held-out real digits are the
#    reference row);
# 2. **Liu et al. Table 1 in miniature**: a VAE decoded from its prior, a Gaussian fitted to an
#    autoencoder's codes, and AE-OT (`latentot.aeot`) on the same codes;
# 3. **Agustsson et al. Table 2 in miniature**: midpoints of 2-point and 4-point interpolations
#    (linear, SLERP, matched) decoded by WGAN-GP generators trained on a uniform and on a
#    Gaussian prior.
#
# `latentot demo` runs the same pipeline from the command line and writes a report. Set
# `LATENTOT_FAST=1` for a run of seconds with tiny budgets (the test suite does; the models are
# then poor, and the numbers mean nothing).

# %%
# %matplotlib inline
import os
import time

import jax
from IPython.display import Markdown, display

import latentot
from latentot import diagnostics
from latentot.digits import demo, experiments, models, scores

FAST = os.environ.get("LATENTOT_FAST", "0") == "1"
BUDGET = experiments.Budget.fast() if FAST else experiments.Budget()
SEEDS = 1 if FAST else 3
print("fast mode" if FAST else "full run", f"- {SEEDS} seed(s) -", BUDGET)
t_start = time.perf_counter()

# %% [markdown]
# ## Data and scorer
# The split is stratified: a training part for every model, a *reference* part whose classifier
# features are the Fréchet reference, and a *holdout* part scored like a generator's samples.

# %%
split = models.split_digits(seed=0)
scorer = scores.fit_scorer(
    jax.random.key(0),
    split.train_x,
    split.train_y,
    split.reference_x,
    split.reference_y,
    steps=BUDGET.classifier_steps,
)
print(
    f"train / reference / holdout: {split.train_x.shape[0]} / {split.reference_x.shape[0]} /"
    f" {split.holdout_x.shape[0]}; classifier accuracy on the reference: {scorer.accuracy:.3f}"
)
print("held-out digits:", scorer.score(split.holdout_x[: BUDGET.n_samples]))

# %% [markdown]
# ## Liu et al. Table 1: sampling an autoencoder's latent space
# A deterministic autoencoder gives codes of the digits. A Gaussian fitted to the codes covers
# the space between the digit clusters, where the decoder produces blends; AE-OT learns the
# optimal-transport map from N(0, I) noise onto the codes, z ↦ z + ∇D(z), and so samples the
# codes' own law. The VAE is the classic alternative.

# %%
liu, liu_models = experiments.liu_table(
    jax.random.key(1), split, scorer, seeds=SEEDS, budget=BUDGET
)
display(Markdown(liu.markdown()))

# %%
keys = jax.random.split(jax.random.key(2), 3)
ae = liu_models.autoencoder
demo.plot_digit_panels(
    {
        "real digits (held out)": split.holdout_x[:48],
        "(a) VAE": liu_models.vae.sample(keys[0], 48),
        "(b) Gaussian fit to AE codes": ae.decode(liu_models.gaussian_codes(keys[1], 48)),
        "(c) AE-OT": ae.decode(liu_models.sampler.sample(keys[2], 48)),
    },
    per_row=4,
)

# %% [markdown]
# The codes, the Gaussian fit and AE-OT's samples in the codes' first two principal components:

# %%
demo.plot_aeot(liu_models, jax.random.key(3))

# %% [markdown]
# ## Agustsson et al. Table 2: midpoints of interpolations
# A generator trained on a prior expects latents with that prior's law. The midpoint of two
# prior samples does not have it: for the uniform prior the linear midpoint is triangular, and
# in d dimensions its squared norm is half the prior's. Matched interpolation maps every
# component through the monotone transport map T = F_Z⁻¹ ∘ F_Y, which restores the law exactly.

# %%
agu, agu_models = experiments.agustsson_table(
    jax.random.key(4), split, scorer, seeds=SEEDS, budget=BUDGET
)
display(Markdown(agu.markdown()))

# %% [markdown]
# Interpolation strips (linear / SLERP / matched for four pairs) and 4-point grids:

# %%
priors = {"uniform": latentot.Uniform(-1.0, 1.0), "Gaussian": latentot.Gaussian()}
for i, (name, prior) in enumerate(priors.items()):
    latents = demo.interpolation_latents(jax.random.key(5 + i), prior, dim=BUDGET.gan_latent_dim)
    display(
        demo.plot_interpolations(
            agu_models.generators[name], latents, title=f"WGAN-GP, {name} prior"
        )
    )

# %% [markdown]
# ## A looping latent video through keyframes
# StyleGAN-style videos draw a cubic spline through latent keyframes. Between keyframes the
# spline is a weighted sum of four of them, off the prior like any other combination:
# `latentot.matched_spline` maps every frame back to the prior's law (the keyframes themselves
# are unchanged). The curves below pool 500 independent loops: the raw frames' KS distance to
# the uniform prior and their norm sag peak half-way between keyframes, the matched ones stay
# flat at the sampling noise.

# %%
uniform = priors["uniform"]
path = demo.keyframe_path(jax.random.key(8), uniform, dim=BUDGET.gan_latent_dim)
print(
    "largest per-frame KS: raw",
    f"{path['ks']['raw'].max():.3f}, matched {path['ks']['matched'].max():.3f}",
)
demo.plot_keyframe_path(
    agu_models.generators["uniform"], path, title="WGAN-GP, uniform prior: a looping keyframe path"
)

# %% [markdown]
# Why linear midpoints look washed out: their squared norms (Agustsson Fig. 2 at the generators'
# latent dimension) sit far from those of the prior samples the generator was trained on.

# %%
n_pairs = 5_000 if FAST else 50_000
diagnostics.plot_fig2(
    {
        f"{name} prior, d = {BUDGET.gan_latent_dim}": diagnostics.fig2_data(
            jax.random.key(7), prior, dim=BUDGET.gan_latent_dim, n=n_pairs
        )
        for name, prior in priors.items()
    }
)

# %% [markdown]
# ## The papers' claims, as measured here

# %%
lines = ["| claim | holds | means |", "|---|---|---|"]
for c in demo.claims(liu, agu):
    means = " vs ".join(f"{v:.2f}" for v in c["values"])
    lines.append(f"| {c['claim']} | {'yes' if c['holds'] else '**no**'} | {means} |")
display(Markdown("\n".join(lines)))
print(f"notebook time: {time.perf_counter() - t_start:.0f} s")
