"""The WGAN-GP generator, on the uniform prior (and any other prior)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import latentot
from latentot.digits import models


@pytest.fixture(scope="module")
def split():
    return models.split_digits(seed=0)


def _moment_errors(images, x):
    return (
        float(jnp.linalg.norm(images.mean(axis=0) - x.mean(axis=0))),
        float(jnp.linalg.norm(images.std(axis=0) - x.std(axis=0))),
    )


def test_uniform_prior_generator_fast_training(split):
    prior = latentot.Uniform(-1.0, 1.0)
    gen, history = models.train_wgan_gp(
        jax.random.key(0), split.train_x, prior=prior, latent_dim=16, steps=200
    )
    assert set(history) == {"critic", "generator", "wasserstein", "penalty"}
    assert history["wasserstein"].shape == (200,)
    assert all(np.all(np.isfinite(v)) for v in history.values())
    # The critic's Wasserstein estimate peaks early, then falls as the generator catches up.
    w = history["wasserstein"]
    assert w[-20:].mean() < 0.8 * w.max()

    assert gen.prior == prior and gen.latent_dim == 16
    z = prior.sample(jax.random.key(1), (500, 16))
    assert float(z.min()) >= -1.0 and float(z.max()) <= 1.0
    images = gen(z)
    assert images.shape == (500, 64) and images.dtype == jnp.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    np.testing.assert_array_equal(gen.decode(z), images)
    assert gen.sample(jax.random.key(2), 9).shape == (9, 64)

    # Trained samples match the pixel moments of the data far better than the initial ones.
    untrained = models.Generator(16, prior=prior, rngs=nnx.Rngs(0))
    before = _moment_errors(untrained(z), split.train_x)
    after = _moment_errors(images, split.train_x)
    assert after[0] < 0.3 * before[0]
    assert after[1] < before[1]


def test_generator_is_prior_agnostic():
    for prior in (latentot.Gaussian(), latentot.Uniform(low=-2.0, high=2.0)):
        gen = models.Generator(3, prior=prior, rngs=nnx.Rngs(0))
        assert gen.sample(jax.random.key(0), 4).shape == (4, 64)
    # Array-valued prior parameters are carried as data.
    gen = models.Generator(3, prior=latentot.Gaussian(loc=jnp.zeros(3)), rngs=nnx.Rngs(0))
    assert gen.sample(jax.random.key(0), 2).shape == (2, 64)
    critic = models.Critic(rngs=nnx.Rngs(0))
    assert critic(jnp.zeros((5, 64))).shape == (5,)
