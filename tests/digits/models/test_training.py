"""The one training loop of the digits models."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from latentot._promotion import promotion_clean
from latentot.digits import models
from latentot.digits.budget import Budget
from latentot.digits.models import training


class _Point(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.w = nnx.Param(jnp.zeros(3))


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Quadratic(training.GradientStep):
    def loss(self, model, rng, target):
        noise = 0.01 * jax.random.normal(rng, target.shape)
        return jnp.sum((model.w - target + noise) ** 2), {"norm": jnp.linalg.norm(model.w)}


def _quadratic_run(chunk_size, progress=False):
    step = _Quadratic(
        graphdef=nnx.graphdef(_Point(None)), batch_size=1, learning_rate=0.1, steps=53
    )
    (params, _), history = training.run_steps(
        jax.random.key(0),
        step,
        nnx.state(_Point(None), nnx.Param),
        (nnx.State({}), jnp.arange(3.0)),
        steps=53,
        chunk_size=chunk_size,
        progress=progress,
        desc="quadratic",
    )
    return params["w"].get_value(), history


def test_run_steps_minimises_and_ignores_chunking():
    params, history = _quadratic_run(53)
    assert set(history) == {"loss", "norm"}
    assert history["loss"].shape == (53,)
    assert history["loss"][-1] < 1e-2 * history["loss"][0]
    np.testing.assert_allclose(params, jnp.arange(3.0), atol=0.05)
    params2, history2 = _quadratic_run(10, progress=True)  # 5 chunks of 10 and one of 3
    np.testing.assert_allclose(params2, params, rtol=1e-6)
    np.testing.assert_allclose(history2["loss"], history["loss"], rtol=1e-5)


def test_run_steps_rejects_bad_arguments():
    step = _Quadratic(graphdef=nnx.graphdef(_Point(None)), batch_size=1, learning_rate=0.1, steps=3)
    with pytest.raises(ValueError, match="steps"):
        training.run_steps(jax.random.key(0), step, jnp.zeros(3), jnp.ones(3), steps=0)
    with pytest.raises(ValueError, match="chunk_size"):
        training.run_steps(
            jax.random.key(0), step, jnp.zeros(3), jnp.ones(3), steps=3, chunk_size=0
        )
    with pytest.raises(TypeError, match="frozen dataclass"):
        training.run_steps(jax.random.key(0), lambda s, k, d: (s, {}), 0.0, None, steps=3)


def test_each_configuration_compiles_once():
    x = jax.random.uniform(jax.random.key(0), (40, 64))
    models.train_autoencoder(jax.random.key(1), x, latent_dim=2, hidden=(8,), steps=7)
    compiled = training._scan._cache_size()
    # Another seed and other images of the same shape reuse the compiled chunk...
    models.train_autoencoder(jax.random.key(2), x[::-1], latent_dim=2, hidden=(8,), steps=7)
    assert training._scan._cache_size() == compiled
    # ...while another configuration compiles its own.
    models.train_autoencoder(jax.random.key(2), x, latent_dim=3, hidden=(8,), steps=7)
    assert training._scan._cache_size() == compiled + 1


def test_promotion_clean_adam_matches_optax_bit_for_bit():
    """Float step counts trace under strict promotion (the suite's setting) and change nothing."""
    params = {"w": jnp.linspace(-1.0, 1.0, 5)}

    def run(optimizer):
        @jax.jit
        def step(p, s):
            g = jax.grad(lambda p: jnp.sum(jnp.sin(p["w"]) ** 2))(p)
            u, s = optimizer.update(g, s, p)
            return optax.apply_updates(p, u), s

        p, s = params, optimizer.init(params)
        for _ in range(30):
            p, s = step(p, s)
        return p

    opt = training.adam_cosine(2e-2, 30, weight_decay=1e-2)
    with pytest.raises(Exception, match="promotion"):
        run(opt)  # optax's int32 counts meet Python floats
    with jax.numpy_dtype_promotion("standard"):
        reference = run(opt)
    np.testing.assert_array_equal(run(promotion_clean(opt))["w"], reference["w"])


def test_default_steps_come_from_the_budget():
    import inspect

    defaults = {
        models.train_autoencoder: Budget().autoencoder_steps,
        models.train_vae: Budget().vae_steps,
        models.train_wgan_gp: Budget().gan_steps,
        models.train_classifier: Budget().classifier_steps,
    }
    for fn, steps in defaults.items():
        params = inspect.signature(fn).parameters
        assert params["steps"].default == steps and "fast" not in params


def test_minibatch_rows_come_from_data():
    x = jnp.arange(20.0).reshape(10, 2)
    b = training.minibatch(jax.random.key(1), x, 7)
    assert b.shape == (7, 2)
    assert set(np.asarray(b[:, 0]).tolist()) <= set(np.asarray(x[:, 0]).tolist())
    xb, yb = training.minibatch(jax.random.key(1), (x, jnp.arange(10)), 7)
    np.testing.assert_array_equal(xb, b)
    np.testing.assert_array_equal(xb[:, 0], 2 * np.asarray(yb))


def test_budget_rejects_non_positive_fields():
    with pytest.raises(ValueError, match="gan_steps"):
        Budget(gan_steps=0)
    assert Budget.fast().gan_steps < Budget().gan_steps
