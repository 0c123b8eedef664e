"""The AE-OT potential network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latentot import Gaussian, aeot


def test_shapes_and_gradient():
    pot = aeot.Potential(3, width=16, depth=2, heads=4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (5, 7, 3))
    assert pot(x).shape == (5, 7)
    g = pot.gradient(x)
    assert g.shape == (5, 7, 3)
    # The gradient of each row is the gradient of that row's value alone.
    g0 = jax.grad(lambda z: pot(z))(x[1, 2])
    np.testing.assert_allclose(g[1, 2], g0, rtol=1e-5, atol=1e-6)


def test_max_head_is_max_of_heads_and_its_gradient_jumps():
    pot = aeot.Potential(2, width=8, depth=1, heads=3, skip=False, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(1), (64, 2))
    h = jax.nn.relu(pot.hidden[0](x))
    f = pot.out(h)
    np.testing.assert_allclose(pot(x), f.max(-1), rtol=1e-6)
    # The gradient is that of the winning head: exact kinks, not a ramp.
    winner = jnp.argmax(f, -1)
    jac = jax.vmap(jax.jacobian(lambda z: pot.out(jax.nn.relu(pot.hidden[0](z)))))(x)
    np.testing.assert_allclose(pot.gradient(x), jac[jnp.arange(64), winner], rtol=1e-5, atol=1e-6)


def test_soft_max_head_and_plain_mlp():
    x = jax.random.normal(jax.random.key(2), (10, 2))
    kw = {"width": 8, "depth": 1, "heads": 3, "skip": False}
    soft = aeot.Potential(2, temperature=0.5, rngs=nnx.Rngs(1), **kw)
    hard = aeot.Potential(2, temperature=0.0, rngs=nnx.Rngs(1), **kw)
    f = hard.out(jax.nn.relu(hard.hidden[0](x)))
    np.testing.assert_allclose(soft(x), 0.5 * jax.nn.logsumexp(f / 0.5, -1), rtol=1e-5)
    assert bool(jnp.all(soft(x) >= hard(x)))
    plain = aeot.Potential(2, width=8, depth=2, heads=1, activation="softplus")
    assert plain(x).shape == (10,)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"width": 0}, "width"),
        ({"depth": -1}, "depth"),
        ({"heads": 0}, "heads"),
        ({"activation": "swish2"}, "activation"),
        ({"temperature": -1.0}, "temperature"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        aeot.Potential(2, **kwargs)


def test_wrong_input_dimension():
    with pytest.raises(ValueError, match="shape"):
        aeot.Potential(3, width=4, depth=1)(jnp.ones((2, 2)))


def test_sampler_transport_is_jittable_and_vmappable():
    pot = aeot.Potential(2, width=16, depth=2, heads=2, rngs=nnx.Rngs(3))
    sampler = aeot.Sampler.from_potential(pot, Gaussian())
    z = jax.random.normal(jax.random.key(4), (32, 2))
    t = sampler.transport(z)
    np.testing.assert_allclose(t, z + pot.gradient(z), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(sampler.transport)(z), t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(sampler.transport)(z), t, rtol=1e-5, atol=1e-6)
    # As a pytree argument, too.
    np.testing.assert_allclose(
        jax.jit(lambda s, z: s.transport(z))(sampler, z), t, rtol=1e-5, atol=1e-6
    )
    s = jax.jit(sampler.sample, static_argnums=1)(jax.random.key(5), 100)
    assert s.shape == (100, 2)
    z5 = Gaussian().sample(jax.random.key(5), (100, 2), jnp.float32)
    np.testing.assert_allclose(s, sampler.transport(z5), rtol=1e-5, atol=1e-5)


def test_config_round_trip():
    pot = aeot.Potential(4, width=8, depth=2, activation="leaky_relu", heads=5, temperature=0.1)
    again = aeot.Potential(**pot.config)
    assert again.config == pot.config


def test_heads_start_by_sharing_the_space():
    """The default initialisation gives every head a cone: no head is dead at the start."""
    pot = aeot.Potential(2, heads=8, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (4000, 2))
    h = x
    for layer in pot.hidden:
        h = jax.nn.relu(layer(h))
    f = pot.out(h) + pot.linear(x)
    share = np.bincount(np.asarray(jnp.argmax(f, -1)), minlength=8) / len(x)
    assert np.all(share > 0.01), share
    np.testing.assert_allclose(np.linalg.norm(pot.linear.kernel[...], axis=0), 1.0, rtol=1e-5)


def test_output_scale_and_skip():
    x = jax.random.normal(jax.random.key(0), (6, 3))
    a = aeot.Potential(3, width=8, depth=1, heads=2, rngs=nnx.Rngs(2))
    b = aeot.Potential(3, width=8, depth=1, heads=2, output_scale=2.5, rngs=nnx.Rngs(2))
    np.testing.assert_allclose(b(x), 2.5 * a(x), rtol=1e-5)
    np.testing.assert_allclose(b.gradient(x), 2.5 * a.gradient(x), rtol=1e-5)
    with pytest.raises(ValueError, match="output_scale"):
        aeot.Potential(3, output_scale=0.0)


def test_curvature_and_shared_quadratic_give_the_closed_form_linear_map():
    """With the network's output zeroed, head k's map is the closed form
    ``∇D(x) = s · rate · (γ_k I + sym(M)) x`` (s the output scale); the shared quadratic M
    (``quadratic=True``) is one symmetric matrix for all heads, a parameter that training moves."""
    d, rate, s = 3, 2.5, 1.5
    pot = aeot.Potential(
        d,
        width=4,
        depth=1,
        heads=2,
        curvature=True,
        quadratic=True,
        curvature_rate=rate,
        output_scale=s,
        rngs=nnx.Rngs(0),
    )
    assert pot.config["quadratic"] and aeot.Potential(**pot.config).quadratic
    assert {"head_curvature", "shared_quadratic"} <= set(nnx.state(pot, nnx.Param).keys())
    pot.out.kernel[...] = jnp.zeros_like(pot.out.kernel[...])
    pot.out.bias[...] = jnp.zeros_like(pot.out.bias[...])
    pot.linear.kernel[...] = jnp.zeros_like(pot.linear.kernel[...])
    gamma = np.array([0.3, -0.2], np.float32)
    m = np.arange(9, dtype=np.float32).reshape(3, 3) / 10.0  # not symmetric: only sym(M) acts
    pot.head_curvature[...] = jnp.asarray(gamma)
    pot.shared_quadratic[...] = jnp.asarray(m)
    x = jax.random.normal(jax.random.key(1), (5, d))
    sym = 0.5 * (m + m.T)
    xs = np.asarray(x, np.float64)
    # the larger quadratic wins the maximum: head 0 where γ_0 > γ_1, i.e. everywhere but 0
    want = s * rate * (gamma[0] * xs + xs @ sym)
    np.testing.assert_allclose(pot.gradient(x), want, rtol=1e-5, atol=1e-5)
    value = s * rate * 0.5 * (gamma[0] * np.sum(xs**2, -1) + np.einsum("ni,ij,nj->n", xs, sym, xs))
    np.testing.assert_allclose(pot(x), value, rtol=1e-5, atol=1e-5)


def test_shared_quadratic_on_a_bures_base_moves_the_base_map():
    """The debiased default (``base=True, quadratic=True``): with the network's output zeroed,
    ``x + ∇D(x) = A x + b + s · rate · sym(M) x``, the fixed base map plus the learnable shared
    quadratic; at M = 0 (its initial value) the map is the base's exactly."""
    d, rate, s = 3, 4.0, 2.0
    pot = aeot.Potential(
        d, width=4, depth=1, heads=2, quadratic=True, base=True, output_scale=s, rngs=0
    )
    for layer in (pot.out, pot.linear):
        layer.kernel[...] = jnp.zeros_like(layer.kernel[...])
    pot.out.bias[...] = jnp.zeros_like(pot.out.bias[...])
    a = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.0]], np.float32)  # a flat axis
    b = np.array([1.0, -2.0, 5.0], np.float32)
    pot.set_base(a, b)
    x = jax.random.normal(jax.random.key(1), (5, d))
    xs = np.asarray(x, np.float64)
    np.testing.assert_allclose(x + pot.gradient(x), xs @ a + b, rtol=1e-5, atol=1e-5)
    m = np.arange(9, dtype=np.float32).reshape(3, 3) / 10.0
    pot.shared_quadratic[...] = jnp.asarray(m)
    want = xs @ a + b + s * rate * xs @ (0.5 * (m + m.T))
    np.testing.assert_allclose(x + pot.gradient(x), want, rtol=1e-5, atol=1e-5)
