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


# -- convex = True: φ(x) = ½‖x‖² + D(x) convex for every parameter value ---------------------


def _line_drops(transport, x0, u, span=4.0, points=33):
    """The largest decrease of ``t ↦ ⟨T(x₀ + t u), u⟩`` on ``t ∈ [−span, span]`` along each line,
    as a fraction of its range on the line (0 for a monotone map), ``[lines]`` float64."""
    t = jnp.linspace(-span, span, points)
    pts = x0[:, None, :] + t[None, :, None] * u[:, None, :]
    v = jnp.sum(transport(pts.reshape(-1, x0.shape[1])).reshape(pts.shape) * u[:, None, :], -1)
    v = np.asarray(v, np.float64)
    drop = np.max(np.maximum.accumulate(v, axis=1) - v, axis=1)
    return drop / np.maximum(v.max(1) - v.min(1), 1e-12)


def _random_lines(key, lines, dim, scale=1.0):
    """Unit directions, through the origin for half the lines and through N(0, scale² I) draws
    for the others."""
    k1, k2 = jax.random.split(key)
    u = jax.random.normal(k1, (lines, dim))
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    x0 = scale * jax.random.normal(k2, (lines, dim))
    return x0.at[: lines // 2].set(0.0), u


def _scramble(pot, key):
    """Random parameters with most raw weights negative, a shared quadratic and curvatures far
    below 0, and a base matrix that is not positive semi-definite."""
    params = nnx.state(pot, nnx.Param)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [
        2.0 * jax.random.normal(k, p.shape, p.dtype) - 1.0
        for k, p in zip(keys, leaves, strict=True)
    ]
    nnx.update(pot, jax.tree.unflatten(tree, leaves))
    if pot.base:
        pot.set_base(jnp.array([[0.5, 2.0], [2.0, -1.0]]), jnp.array([0.3, -0.2]))


CONVEX_CASES = [
    {"activation": "relu", "quadratic": True, "curvature": True},
    {"activation": "leaky_relu", "quadratic": True, "base": True},
    {"activation": "softplus", "quadratic": True, "curvature": True, "temperature": 0.1},
]


@pytest.mark.parametrize("kwargs", CONVEX_CASES)
def test_convex_potential_is_convex_for_any_parameters(kwargs):
    """With ``convex=True`` the map is monotone along random lines and the Hessian of
    ``φ = ½‖x‖² + D`` is positive semi-definite, for random parameters with the raw weights
    pushed negative; the same parameters in the unconstrained potential give a non-convex φ."""
    d = 2
    kw = {"width": 16, "depth": 3, "heads": 4, "output_scale": 2.0} | kwargs
    convex = aeot.Potential(d, convex=True, rngs=3, **kw)
    plain = aeot.Potential(d, rngs=3, **kw)
    for pot in (convex, plain):
        _scramble(pot, jax.random.key(4))
    x = 2.0 * jax.random.normal(jax.random.key(5), (64, d))

    def phi_hessian_min_eig(pot):
        hess = jax.vmap(jax.hessian(lambda z: 0.5 * z @ z + pot(z)))(x)
        return np.linalg.eigvalsh(np.asarray(hess, np.float64)).min(axis=1)

    lam = phi_hessian_min_eig(convex)
    scale = np.abs(np.asarray(jax.vmap(jax.hessian(lambda z: convex(z)))(x))).max()
    assert lam.min() >= -1e-5 * scale, lam.min()
    x0, u = _random_lines(jax.random.key(6), 16, d, scale=2.0)
    assert _line_drops(lambda z: z + convex.gradient(z), x0, u).max() <= 1e-4
    # the control: the same parameters without the constraint
    assert phi_hessian_min_eig(plain).min() < -0.1
    assert _line_drops(lambda z: z + plain.gradient(z), x0, u).max() > 0.01


def test_convex_quadratic_forms_derivative_matches_finite_differences():
    """The custom derivative of the positive-definite forms (Daleckii-Krein, with the limit where
    eigenvalues meet) against central differences in float64, at ``q = I`` (repeated
    eigenvalues, the initial state, where eigh's own derivative divides by zero) and at a
    random symmetric ``q`` with eigenvalues of both signs."""
    from jax.test_util import check_grads

    from latentot.aeot.potential import _convex_forms

    with jax.enable_x64(True):
        shifts = jnp.array([0.0, -0.5, 0.02])
        b = jax.random.normal(jax.random.key(0), (3, 3), jnp.float64)
        for q in (jnp.eye(3), 0.5 * (b + b.T)):
            check_grads(_convex_forms, (q, shifts), order=1, modes=["fwd", "rev"], eps=1e-6)
        # at q = I the forms are g(1 + s) I, g(μ) = softplus(β μ) / β
        want = np.asarray(jax.nn.softplus(50.0 * (1.0 + shifts)) / 50.0)
        np.testing.assert_allclose(
            _convex_forms(jnp.eye(3), shifts), want[:, None, None] * np.eye(3), rtol=1e-12
        )


def test_convex_start_keeps_the_cones_and_the_default_is_unchanged():
    """A convex potential starts with every head owning a cone and ∇D equal to the heads' linear
    terms up to a small common term; ``convex=False`` (the default) keeps the configuration
    without the key, so older configurations load unchanged."""
    pot = aeot.Potential(2, heads=8, quadratic=True, convex=True, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (4000, 2))
    winner = jnp.argmax(pot.head_values(x), -1)
    share = np.bincount(np.asarray(winner), minlength=8) / len(x)
    assert np.all(share > 0.01), share
    skip = pot.linear.kernel[...].T[winner]
    assert float(jnp.max(jnp.abs(pot.gradient(x) - skip))) < 0.05
    assert pot.config["convex"] is True and aeot.Potential(**pot.config).convex
    plain = aeot.Potential(2, heads=8, quadratic=True, rngs=nnx.Rngs(0))
    assert "convex" not in plain.config and not aeot.Potential(**plain.config).convex
    explicit = aeot.Potential(2, heads=8, quadratic=True, convex=False, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(plain(x), explicit(x))


def test_convex_config_round_trip_through_save_and_load(tmp_path):
    for convex in (True, False):
        pot = aeot.Potential(2, width=8, depth=2, heads=3, quadratic=True, convex=convex, rngs=1)
        _scramble(pot, jax.random.key(2))
        sampler = aeot.Sampler.from_potential(pot, Gaussian())
        aeot.save(tmp_path / f"{convex}.ckpt", sampler)
        again = aeot.load(tmp_path / f"{convex}.ckpt")
        assert again.potential_config == pot.config
        z = jax.random.normal(jax.random.key(3), (50, 2))
        np.testing.assert_allclose(again.transport(z), sampler.transport(z), rtol=1e-6, atol=1e-6)


def test_convex_rejects_a_non_convex_activation():
    for activation in ("gelu", "silu", "elu", "tanh"):
        with pytest.raises(ValueError, match="activation"):
            aeot.Potential(2, activation=activation, convex=True)


def test_fit_in_the_plane_with_convex_heads_is_monotone_along_lines():
    """A short fit in the plane (the minibatch method) with ``potential={"convex": True}`` gives
    a map that increases along random lines; the default, unconstrained heads (the control)
    decrease along some of them, by 9% of the range after these 300 steps on a scale mixture
    of Gaussians."""
    k1, k2 = jax.random.split(jax.random.key(0))
    codes = jax.random.normal(k1, (2000, 2)) * jnp.exp(jax.random.normal(k2, (2000, 1)))
    x0, u = _random_lines(jax.random.key(7), 16, 2)
    drops = {}
    for potential in ({"convex": True}, None):
        sampler = aeot.fit(jax.random.key(0), codes, steps=300, batch_size=256, potential=potential)
        drops[potential is None] = _line_drops(sampler.transport, x0, u).max()
    assert drops[False] <= 1e-4, drops
    assert drops[True] > 0.02, drops
