"""The digits autoencoder: training reduces the loss and beats the mean image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentot.digits import models
from latentot.digits.budget import Budget

FAST = Budget.fast()


@pytest.fixture(scope="module")
def split():
    return models.split_digits(seed=0)


@pytest.fixture(scope="module")
def trained(split):
    return models.train_autoencoder(
        jax.random.key(0), split.train_x, latent_dim=8, steps=FAST.autoencoder_steps
    )


def test_fast_training_reduces_loss(trained):
    _, history = trained
    assert set(history) == {"loss", "mse"}
    assert history["loss"].shape == (300,)
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-20:].mean() < 0.6 * history["loss"][:20].mean()


def test_reconstruction_beats_mean_image(trained, split):
    model, _ = trained
    baseline = float(jnp.mean((split.holdout_x - split.train_x.mean(axis=0)) ** 2))
    mse = float(models.reconstruction_error(model, split.holdout_x))
    assert mse < 0.5 * baseline


def test_shapes_and_range(trained, split):
    model, _ = trained
    z = model.encode(split.holdout_x[:5])
    assert z.shape == (5, 8) and z.dtype == jnp.float32
    x = model.decode(z)
    assert x.shape == (5, 64)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    np.testing.assert_allclose(model(split.holdout_x[:5]), x, rtol=1e-6)


def test_deterministic_given_rng(split):
    x = split.train_x[:200]
    _, h1 = models.train_autoencoder(jax.random.key(3), x, latent_dim=2, steps=20)
    _, h2 = models.train_autoencoder(jax.random.key(3), x, latent_dim=2, steps=20)
    np.testing.assert_array_equal(h1["loss"], h2["loss"])
