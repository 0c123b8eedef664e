"""The shared scanned training loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from latentot.digits.models import training


def _quadratic_run(chunk_size, progress=False):
    target = jnp.arange(3.0)

    def loss_fn(params, rng, data):
        noise = 0.01 * jax.random.normal(rng, params.shape)
        return jnp.sum((params - data + noise) ** 2), {"norm": jnp.linalg.norm(params)}

    opt = optax.sgd(0.1)
    params = jnp.zeros(3)
    (params, _), history = training.run_steps(
        jax.random.key(0),
        (params, opt.init(params)),
        training.gradient_step(loss_fn, opt),
        target,
        steps=53,
        chunk_size=chunk_size,
        progress=progress,
        desc="quadratic",
    )
    return params, history


def test_run_steps_minimises_and_ignores_chunking():
    params, history = _quadratic_run(53)
    assert set(history) == {"loss", "norm"}
    assert history["loss"].shape == (53,)
    assert history["loss"][-1] < 1e-2 * history["loss"][0]
    np.testing.assert_allclose(params, jnp.arange(3.0), atol=0.05)
    params2, history2 = _quadratic_run(10, progress=True)  # 5 chunks of 10 and one of 3
    np.testing.assert_allclose(params2, params, rtol=1e-6)
    np.testing.assert_allclose(history2["loss"], history["loss"], rtol=1e-5)


def test_resolve_steps():
    assert training.resolve_steps(None, fast=True, fast_steps=3, default_steps=9) == 3
    assert training.resolve_steps(None, fast=False, fast_steps=3, default_steps=9) == 9
    assert training.resolve_steps(4, fast=True, fast_steps=3, default_steps=9) == 4
    with pytest.raises(ValueError, match="steps"):
        training.resolve_steps(0, fast=False, fast_steps=3, default_steps=9)


def test_minibatch_rows_come_from_data():
    x = jnp.arange(20.0).reshape(10, 2)
    b = training.minibatch(jax.random.key(1), x, 7)
    assert b.shape == (7, 2)
    assert set(np.asarray(b[:, 0]).tolist()) <= set(np.asarray(x[:, 0]).tolist())
