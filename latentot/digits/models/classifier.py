"""The digits classifier behind :mod:`latentot.digits.scores`, trained in-process (no downloads)."""

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

__all__ = ["Classifier", "accuracy", "train_classifier"]


class Classifier(nnx.Module):
    """An MLP classifier whose last hidden layer is the feature space of the Fréchet distance.

    Args:
        num_classes: number of classes.
        rngs: NNX random streams for the initialisation.
        data_dim: number of pixels.
        hidden: hidden widths; the last is the feature dimension.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        rngs: nnx.Rngs,
        data_dim: int = 64,
        hidden: Sequence[int] = (256, 64),
    ):
        self.num_classes = int(num_classes)
        self.data_dim = int(data_dim)
        self.feature_dim = int(tuple(hidden)[-1])
        self.net = MLP((self.data_dim, *hidden, self.num_classes), rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Penultimate-layer activations ``[n, feature_dim]`` of images ``[n, data_dim]``."""
        return self.net.hidden(x)

    def head(self, features: jax.Array) -> jax.Array:
        """Class logits ``[n, num_classes]`` of features ``[n, feature_dim]``."""
        return self.net.layers[-1](features)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Class logits ``[n, num_classes]`` of images ``[n, data_dim]``."""
        return self.net(x)

    def probabilities(self, x: jax.Array) -> jax.Array:
        """Class probabilities p(y|x) ``[n, num_classes]`` of images ``[n, data_dim]``."""
        return jax.nn.softmax(self(x), axis=-1)


def accuracy(model: Classifier, x: jax.Array, y: jax.Array) -> float:
    """Fraction of images ``x`` ``[n, data_dim]`` whose arg-max class equals label ``y`` ``[n]``."""
    return float(jnp.mean(jnp.argmax(model(x), axis=-1) == y))


def train_classifier(
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    hidden: Sequence[int] = (256, 64),
    num_classes: int = 10,
    steps: int = Budget.classifier_steps,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-2,
    input_noise: float = 0.1,
    progress: bool = False,
) -> tuple[Classifier, dict]:
    """Trains a :class:`Classifier` on labelled images.

    Cross-entropy, minimised with AdamW and a cosine learning-rate decay. Each minibatch gets
    Gaussian pixel noise of standard deviation ``input_noise`` (a mild augmentation that makes
    the features less brittle off the data, where generated images lie).

    Args:
        rng: PRNG key for the initialisation, the minibatches and the noise.
        x: images ``[n, data_dim]`` in [0, 1].
        y: integer labels ``[n]`` in ``[0, num_classes)``.
        hidden: hidden widths; the last is the feature dimension.
        num_classes: number of classes.
        steps: optimiser steps (default: ``Budget().classifier_steps``).
        batch_size: minibatch size.
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        input_noise: standard deviation of the pixel noise added during training.
        progress: show a progress bar.

    Returns:
        ``(model, history)``; ``history`` maps ``"loss"`` (cross-entropy) and ``"accuracy"``
        (on the minibatch) to numpy arrays ``[steps]``.

    Raises:
        ValueError: if ``steps`` is not a positive int.
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y, dtype=jnp.int32)
    model = functools.partial(Classifier, num_classes, data_dim=x.shape[-1], hidden=hidden)
    step = functools.partial(_Step, batch_size=batch_size, learning_rate=learning_rate)
    step = functools.partial(step, weight_decay=weight_decay, input_noise=input_noise)
    return training.train_model(
        rng, model, step, (x, y), steps=steps, progress=progress, desc="classifier"
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Step(training.GradientStep):
    input_noise: float

    def loss(self, model, rng, data):
        batch_rng, noise_rng = jax.random.split(rng)
        xb, yb = training.minibatch(batch_rng, data, self.batch_size)
        xb = xb + self.input_noise * jax.random.normal(noise_rng, xb.shape, xb.dtype)
        logits = model(xb)
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))
        acc = jnp.mean((jnp.argmax(logits, axis=-1) == yb).astype(logits.dtype))
        return loss, {"accuracy": acc}
