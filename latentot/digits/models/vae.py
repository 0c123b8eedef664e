"""A variational autoencoder with the standard Gaussian prior N(0, I).

Decoding prior samples makes it both the "VAE decoded from prior samples" baseline and a
Gaussian-prior generator for the matched-operator experiments.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from latentot.digits.budget import Budget
from latentot.digits.models import training
from latentot.digits.models.mlp import MLP
from latentot.priors import Gaussian

__all__ = ["VAE", "train_vae"]


class VAE(nnx.Module):
    """Gaussian encoder q(z|x) = N(mean(x), diag exp(log_var(x))), Bernoulli-logit decoder.

    Attributes:
        prior: ``latentot.Gaussian()``, the prior N(0, I) of every latent component.
        latent_dim: latent dimension.

    Args:
        latent_dim: latent dimension.
        rngs: NNX random streams for the initialisation.
        data_dim: number of pixels.
        hidden: hidden widths of the encoder; the decoder mirrors them.
    """

    def __init__(
        self,
        latent_dim: int = 8,
        *,
        rngs: nnx.Rngs,
        data_dim: int = 64,
        hidden: Sequence[int] = (256, 128),
    ):
        hidden = tuple(hidden)
        self.latent_dim = int(latent_dim)
        self.data_dim = int(data_dim)
        self.prior = Gaussian()
        self.encoder = MLP((self.data_dim, *hidden, 2 * self.latent_dim), rngs=rngs)
        self.decoder = MLP((self.latent_dim, *hidden[::-1], self.data_dim), rngs=rngs)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Posterior ``(mean, log_var)``, each ``[n, latent_dim]``, of images ``[n, data_dim]``."""
        h = self.encoder(x)
        return h[..., : self.latent_dim], h[..., self.latent_dim :]

    def decode_logits(self, z: jax.Array) -> jax.Array:
        """Pixel logits ``[n, data_dim]`` of latents ``[n, latent_dim]``."""
        return self.decoder(z)

    def decode(self, z: jax.Array) -> jax.Array:
        """Mean images ``[n, data_dim]`` in (0, 1) of latents ``[n, latent_dim]``."""
        return jax.nn.sigmoid(self.decode_logits(z))

    def sample(self, rng: jax.Array, n: int) -> jax.Array:
        """Decodes ``n`` prior samples: images ``[n, data_dim]`` in (0, 1)."""
        return self.decode(self.prior.sample(rng, (n, self.latent_dim)))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Reconstructions ``[n, data_dim]`` from the posterior means."""
        return self.decode(self.encode(x)[0])


def train_vae(
    rng: jax.Array,
    x: jax.Array,
    *,
    latent_dim: int = 8,
    hidden: Sequence[int] = (256, 128),
    steps: int = Budget.vae_steps,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    beta: float = 1.0,
    progress: bool = False,
) -> tuple[VAE, dict]:
    """Trains a :class:`VAE` on images ``x`` ``[n, data_dim]`` in [0, 1].

    Maximises the evidence lower bound with a Bernoulli likelihood on the [0, 1] pixel values:
    the loss per image is ``BCE(x, decoder(z)) + beta · KL(q(z|x) ‖ N(0, I))`` with one
    reparameterised sample z, minimised with Adam and a cosine learning-rate decay.

    Args:
        rng: PRNG key for the initialisation, the minibatches and the reparameterisation noise.
        x: training images ``[n, data_dim]``.
        latent_dim: latent dimension.
        hidden: hidden widths of the encoder (mirrored by the decoder).
        steps: optimiser steps (default: ``Budget().vae_steps``).
        batch_size: minibatch size.
        learning_rate: peak Adam learning rate.
        beta: weight of the KL term (1 is the ELBO).
        progress: show a progress bar.

    Returns:
        ``(model, history)``; ``history`` maps ``"loss"`` (negative ELBO per image, nats),
        ``"reconstruction"`` and ``"kl"`` to numpy arrays ``[steps]``.

    Raises:
        ValueError: if ``steps`` is not a positive int.
    """
    x = jnp.asarray(x)
    model = functools.partial(VAE, latent_dim, data_dim=x.shape[-1], hidden=hidden)
    step = functools.partial(_Step, batch_size=batch_size, learning_rate=learning_rate, beta=beta)
    return training.train_model(rng, model, step, x, steps=steps, progress=progress, desc="VAE")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Step(training.GradientStep):
    beta: float

    def loss(self, model, rng, x):
        batch_rng, noise_rng = jax.random.split(rng)
        batch = training.minibatch(batch_rng, x, self.batch_size)
        mean, log_var = model.encode(batch)
        eps = jax.random.normal(noise_rng, mean.shape, mean.dtype)
        z = mean + jnp.exp(0.5 * log_var) * eps
        logits = model.decode_logits(z)
        rec = jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(logits, batch), axis=-1))
        kl = jnp.mean(0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1))
        return rec + self.beta * kl, {"reconstruction": rec, "kl": kl}
