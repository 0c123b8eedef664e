"""A deterministic MLP autoencoder for the digits, whose latent codes AE-OT models."""

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

__all__ = ["Autoencoder", "reconstruction_error", "train_autoencoder"]


class Autoencoder(nnx.Module):
    """MLP encoder ``[n, data_dim] -> [n, latent_dim]`` and decoder back to pixels in (0, 1).

    The latent codes are unconstrained (linear last encoder layer); the decoder ends in a
    sigmoid. Train it with :func:`train_autoencoder`.

    Args:
        latent_dim: dimension of the codes.
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
        hidden: Sequence[int] = (128, 64),
    ):
        hidden = tuple(hidden)
        self.latent_dim = int(latent_dim)
        self.data_dim = int(data_dim)
        self.encoder = MLP((self.data_dim, *hidden, self.latent_dim), rngs=rngs)
        self.decoder = MLP((self.latent_dim, *hidden[::-1], self.data_dim), rngs=rngs)

    def encode(self, x: jax.Array) -> jax.Array:
        """Codes ``[n, latent_dim]`` of images ``[n, data_dim]``."""
        return self.encoder(x)

    def decode_logits(self, z: jax.Array) -> jax.Array:
        """Pixel logits ``[n, data_dim]`` of codes ``[n, latent_dim]``."""
        return self.decoder(z)

    def decode(self, z: jax.Array) -> jax.Array:
        """Images ``[n, data_dim]`` in (0, 1) of codes ``[n, latent_dim]``."""
        return jax.nn.sigmoid(self.decode_logits(z))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Reconstructions ``[n, data_dim]`` of images ``[n, data_dim]``."""
        return self.decode(self.encode(x))


def reconstruction_error(model: Autoencoder, x: jax.Array) -> jax.Array:
    """Mean squared error per pixel of the reconstructions of ``x`` ``[n, data_dim]`` (scalar)."""
    return jnp.mean((model(x) - x) ** 2)


def train_autoencoder(
    rng: jax.Array,
    x: jax.Array,
    *,
    latent_dim: int = 8,
    hidden: Sequence[int] = (128, 64),
    steps: int = Budget.autoencoder_steps,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-2,
    progress: bool = False,
) -> tuple[Autoencoder, dict]:
    """Trains an :class:`Autoencoder` on images ``x`` ``[n, data_dim]`` in [0, 1].

    The loss is the per-pixel binary cross-entropy of the decoder logits against the pixel
    intensities (a Bernoulli likelihood on [0, 1] values), minimised with AdamW and a cosine
    learning-rate decay on minibatches drawn with replacement.

    Args:
        rng: PRNG key for the initialisation and the minibatches.
        x: training images ``[n, data_dim]``.
        latent_dim: dimension of the codes.
        hidden: hidden widths of the encoder (mirrored by the decoder).
        steps: optimiser steps (default: ``Budget().autoencoder_steps``).
        batch_size: minibatch size.
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        progress: show a progress bar.

    Returns:
        ``(model, history)``; ``history`` maps ``"loss"`` (cross-entropy per pixel) and
        ``"mse"`` (per pixel) to numpy arrays ``[steps]``.

    Raises:
        ValueError: if ``steps`` is not a positive int.
    """
    x = jnp.asarray(x)
    model = functools.partial(Autoencoder, latent_dim, data_dim=x.shape[-1], hidden=hidden)
    step = functools.partial(_Step, batch_size=batch_size, learning_rate=learning_rate)
    step = functools.partial(step, weight_decay=weight_decay)
    return training.train_model(
        rng, model, step, x, steps=steps, progress=progress, desc="autoencoder"
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Step(training.GradientStep):
    def loss(self, model, rng, x):
        batch = training.minibatch(rng, x, self.batch_size)
        logits = model.decode_logits(model.encode(batch))
        loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, batch))
        mse = jnp.mean((jax.nn.sigmoid(logits) - batch) ** 2)
        return loss, {"mse": mse}
