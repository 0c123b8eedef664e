"""A WGAN-GP generator for any latentot prior (Gulrajani et al., 2017).

The generator maps prior samples ``z ~ prior^latent_dim`` to digits; the prior is a parameter,
so the same code gives the uniform-prior generator (``latentot.Uniform(-1, 1)``) and a
Gaussian-prior one (``latentot.Gaussian()``) for the matched-operator experiments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from latentot._promotion import promotion_clean
from latentot.digits.budget import Budget
from latentot.digits.models import training
from latentot.digits.models.mlp import MLP

__all__ = ["Critic", "Generator", "train_wgan_gp"]


def _leaky_relu(x: jax.Array) -> jax.Array:
    return nnx.leaky_relu(x, negative_slope=0.2)


class Generator(nnx.Module):
    """MLP generator from latents ``[n, latent_dim]`` to images ``[n, data_dim]`` in (0, 1).

    Attributes:
        prior: the latentot prior of each latent component the generator was trained on.
        latent_dim: latent dimension.

    Args:
        latent_dim: latent dimension.
        prior: the latent prior (any object with ``sample(rng, shape, dtype)``).
        rngs: NNX random streams for the initialisation.
        data_dim: number of pixels.
        hidden: hidden widths.
    """

    def __init__(
        self,
        latent_dim: int,
        *,
        prior: Any,
        rngs: nnx.Rngs,
        data_dim: int = 64,
        hidden: Sequence[int] = (128, 256),
    ):
        self.latent_dim = int(latent_dim)
        self.data_dim = int(data_dim)
        self.prior = nnx.data(prior)
        self.net = MLP((self.latent_dim, *hidden, self.data_dim), rngs=rngs)

    def decode(self, z: jax.Array) -> jax.Array:
        """Images ``[n, data_dim]`` in (0, 1) of latents ``[n, latent_dim]``."""
        return jax.nn.sigmoid(self.net(z))

    def __call__(self, z: jax.Array) -> jax.Array:
        """Same as :meth:`decode`."""
        return self.decode(z)

    def sample(self, rng: jax.Array, n: int) -> jax.Array:
        """Decodes ``n`` prior samples: images ``[n, data_dim]`` in (0, 1)."""
        return self.decode(self.prior.sample(rng, (n, self.latent_dim), jnp.float32))


class Critic(nnx.Module):
    """MLP critic ``[n, data_dim] -> [n]`` with leaky-ReLU hidden layers.

    Args:
        rngs: NNX random streams for the initialisation.
        data_dim: number of pixels.
        hidden: hidden widths.
    """

    def __init__(self, *, rngs: nnx.Rngs, data_dim: int = 64, hidden: Sequence[int] = (256, 128)):
        self.net = MLP((int(data_dim), *hidden, 1), rngs=rngs, activation=_leaky_relu)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Critic values ``[n]`` of images ``[n, data_dim]``."""
        return self.net(x)[..., 0]


def train_wgan_gp(
    rng: jax.Array,
    x: jax.Array,
    *,
    prior: Any,
    latent_dim: int = 32,
    generator_hidden: Sequence[int] = (128, 256),
    critic_hidden: Sequence[int] = (256, 128),
    steps: int = Budget.gan_steps,
    n_critic: int = 5,
    batch_size: int = 64,
    learning_rate: float = 2e-4,
    gradient_penalty: float = 10.0,
    progress: bool = False,
) -> tuple[Generator, dict]:
    """Trains a :class:`Generator` on images ``x`` ``[n, data_dim]`` with WGAN-GP.

    Each step does ``n_critic`` critic updates on
    ``E D(G(z)) - E D(x) + λ E (‖∇D(x̂)‖ - 1)²`` (x̂ uniform on segments between real and
    generated images), then one generator update on ``-E D(G(z))``; both use Adam with
    ``b1 = 0.5, b2 = 0.9``. Latents are drawn from ``prior``.

    Args:
        rng: PRNG key for the initialisations, the minibatches and the latents.
        x: training images ``[n, data_dim]`` in [0, 1].
        prior: latent prior of each component, e.g. ``latentot.Uniform(-1.0, 1.0)``.
        latent_dim: latent dimension.
        generator_hidden: hidden widths of the generator.
        critic_hidden: hidden widths of the critic.
        steps: generator steps (default: ``Budget().gan_steps``).
        n_critic: critic updates per generator step.
        batch_size: minibatch size (real and generated).
        learning_rate: Adam learning rate of both networks.
        gradient_penalty: weight λ of the gradient penalty.
        progress: show a progress bar.

    Returns:
        ``(generator, history)``; ``history`` maps ``"critic"`` (critic loss),
        ``"generator"`` (generator loss), ``"wasserstein"`` (the critic's estimate
        ``E D(x) - E D(G(z))``) and ``"penalty"`` to numpy arrays ``[steps]``.

    Raises:
        ValueError: if ``steps`` is not a positive int.
    """
    x = jnp.asarray(x)
    g_rng, d_rng, train_rng = jax.random.split(rng, 3)
    gen = Generator(
        latent_dim,
        prior=prior,
        rngs=nnx.Rngs(g_rng),
        data_dim=x.shape[-1],
        hidden=generator_hidden,
    )
    critic = Critic(rngs=nnx.Rngs(d_rng), data_dim=x.shape[-1], hidden=critic_hidden)
    g_def, g_params, g_rest = training.split_params(gen)
    d_def, d_params, d_rest = training.split_params(critic)
    step = _Step(
        g_def=g_def,
        d_def=d_def,
        n_critic=n_critic,
        batch_size=batch_size,
        learning_rate=learning_rate,
        gradient_penalty=gradient_penalty,
    )
    (g_params, *_), history = training.run_steps(
        train_rng,
        step,
        (g_params, d_params),
        (g_rest, d_rest, x),
        steps=steps,
        chunk_size=250,
        progress=progress,
        desc="WGAN-GP",
    )
    return nnx.merge(g_def, g_params, g_rest), history


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Step:
    """``n_critic`` critic updates, then one generator update; state ``(g, d, g_opt, d_opt)``."""

    g_def: nnx.GraphDef
    d_def: nnx.GraphDef
    n_critic: int
    batch_size: int
    learning_rate: float
    gradient_penalty: float

    def optimizer(self):
        return promotion_clean(optax.adam(self.learning_rate, b1=0.5, b2=0.9))

    def init(self, params):
        g_params, d_params = params
        opt = self.optimizer()
        return g_params, d_params, opt.init(g_params), opt.init(d_params)

    def __call__(self, state, rng, data):
        g_rest, d_rest, x = data
        g_params, d_params, g_opt, d_opt = state
        optimizer = self.optimizer()

        def generate(g_params, rng):
            return nnx.merge(self.g_def, g_params, g_rest).sample(rng, self.batch_size)

        def critic_fn(d_params, images):
            return nnx.merge(self.d_def, d_params, d_rest)(images)

        def critic_loss(d_params, rng):
            batch_rng, z_rng, mix_rng = jax.random.split(rng, 3)
            real = training.minibatch(batch_rng, x, self.batch_size)
            fake = jax.lax.stop_gradient(generate(g_params, z_rng))
            t = jax.random.uniform(mix_rng, (self.batch_size, 1), real.dtype)
            mixed = t * real + (1.0 - t) * fake
            grads = jax.grad(lambda images: jnp.sum(critic_fn(d_params, images)))(mixed)
            norms = jnp.sqrt(jnp.sum(grads**2, axis=-1) + 1e-12)
            penalty = jnp.mean((norms - 1.0) ** 2)
            w = jnp.mean(critic_fn(d_params, real)) - jnp.mean(critic_fn(d_params, fake))
            return -w + self.gradient_penalty * penalty, (w, penalty)

        def critic_update(carry, key):
            d_params, d_opt = carry
            (loss, (w, penalty)), grads = jax.value_and_grad(critic_loss, has_aux=True)(
                d_params, key
            )
            updates, d_opt = optimizer.update(grads, d_opt, d_params)
            return (optax.apply_updates(d_params, updates), d_opt), (loss, w, penalty)

        keys = jax.random.split(rng, self.n_critic + 1)
        (d_params, d_opt), (d_loss, w, penalty) = jax.lax.scan(
            critic_update, (d_params, d_opt), keys[:-1]
        )

        def generator_loss(g_params):
            return -jnp.mean(critic_fn(d_params, generate(g_params, keys[-1])))

        g_loss, grads = jax.value_and_grad(generator_loss)(g_params)
        updates, g_opt = optimizer.update(grads, g_opt, g_params)
        g_params = optax.apply_updates(g_params, updates)
        metrics = {
            "critic": d_loss[-1],
            "generator": g_loss,
            "wasserstein": w[-1],
            "penalty": penalty[-1],
        }
        return (g_params, d_params, g_opt, d_opt), metrics
