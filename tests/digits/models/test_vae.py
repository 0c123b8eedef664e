"""The VAE with prior N(0, I)."""

import jax
import jax.numpy as jnp
import numpy as np

import latentot
from latentot.digits import models
from latentot.digits.budget import Budget


def test_fast_training_reduces_loss_and_samples():
    split = models.split_digits(seed=0)
    model, history = models.train_vae(
        jax.random.key(0), split.train_x, latent_dim=6, steps=Budget.fast().vae_steps
    )
    assert set(history) == {"loss", "reconstruction", "kl"}
    assert history["loss"].shape == (300,)
    assert np.all(np.isfinite(history["loss"]))
    # The Bernoulli likelihood of [0, 1]-valued pixels has a floor well above zero (the pixels'
    # entropy), so the loss falls by a fraction, not to zero.
    assert history["loss"][-20:].mean() < 0.6 * history["loss"][0]
    np.testing.assert_allclose(
        history["loss"], history["reconstruction"] + history["kl"], rtol=1e-5
    )

    assert model.prior == latentot.Gaussian()
    assert model.latent_dim == 6
    x = model.sample(jax.random.key(1), 17)
    assert x.shape == (17, 64) and x.dtype == jnp.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    z = latentot.Gaussian().sample(jax.random.key(2), (4, 6))
    assert model.decode(z).shape == (4, 64)
    mean, log_var = model.encode(split.holdout_x[:3])
    assert mean.shape == log_var.shape == (3, 6)
    assert model(split.holdout_x[:3]).shape == (3, 64)
