"""Raw operations: formulas, shapes, and bad input (ValueError at trace time, also under jit)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import latentot as lo

KEY = jax.random.PRNGKey(0)
P = lo.Gaussian()


def test_formulas():
    z0, z1, z2 = (P.sample(k, (5, 3)) for k in jax.random.split(KEY, 3))
    np.testing.assert_allclose(lo.lerp(z0, z1, 0.3), 0.7 * z0 + 0.3 * z1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lo.analogy(z0, z1, z2), z2 + z1 - z0, rtol=1e-6, atol=1e-6)
    zs = jnp.stack([z0, z1, z2])
    w = jnp.asarray([0.2, 0.3, 0.5])
    np.testing.assert_allclose(
        lo.combine(zs, w), 0.2 * z0 + 0.3 * z1 + 0.5 * z2, rtol=1e-6, atol=1e-6
    )


def test_slerp_matches_the_formula_and_guards_degenerate_angles():
    z0 = jnp.asarray([1.0, 0.0])
    z1 = jnp.asarray([0.0, 2.0])
    t = 0.25
    omega = np.pi / 2
    expected = np.sin((1 - t) * omega) * np.asarray(z0) + np.sin(t * omega) * np.asarray(z1)
    np.testing.assert_allclose(lo.slerp(z0, z1, t), expected, rtol=1e-6, atol=1e-6)
    # parallel, antipodal and zero vectors fall back to lerp, with no NaN
    for a, b in [(z0, 3 * z0), (z0, -z0), (z0, jnp.zeros(2))]:
        np.testing.assert_allclose(lo.slerp(a, b, 0.4), lo.lerp(a, b, 0.4), rtol=1e-6, atol=1e-7)
    g = jax.grad(lambda a: jnp.sum(lo.slerp(a, z0, 0.3)))(z0)
    assert bool(jnp.all(jnp.isfinite(g)))


def test_grid_corners_and_shape():
    corners = P.sample(KEY, (4, 6))
    g = lo.grid(corners, 4)
    assert g.shape == (4, 4, 6)
    np.testing.assert_allclose(
        jnp.stack([g[0, 0], g[0, -1], g[-1, 0], g[-1, -1]]), corners, rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(g[0, 1], lo.lerp(corners[0], corners[1], 1 / 3), rtol=1e-5)


def test_vicinity_and_walk_shapes():
    z = P.sample(KEY, (2, 3))
    assert lo.vicinity(KEY, P, z, 0.5, 7).shape == (7, 2, 3)
    w = lo.random_walk(KEY, P, z, 0.5, 4)
    assert w.shape == (5, 2, 3)
    np.testing.assert_array_equal(w[0], z)
    np.testing.assert_array_equal(lo.random_walk(KEY, P, z, 0.5, 0), z[None])


def test_t_broadcasts_over_leading_axes():
    z0, z1 = P.sample(KEY, (2, 5, 3))
    ts = jnp.linspace(0, 1, 4)
    out = lo.lerp(z0, z1, ts[:, None])
    assert out.shape == (4, 5, 3)
    np.testing.assert_allclose(out[2], lo.lerp(z0, z1, ts[2]), rtol=1e-6, atol=1e-6)


SHAPE_ERRORS = [
    (lambda: lo.lerp(jnp.zeros((2, 3)), jnp.zeros((2, 4)), 0.5), "latent dimension"),
    (lambda: lo.slerp(jnp.zeros((2, 3)), jnp.zeros((5, 3)), 0.5), "broadcast"),
    (lambda: lo.lerp(jnp.zeros(()), jnp.zeros(()), 0.5), "rank"),
    (lambda: lo.lerp(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.zeros(5)), "t"),
    (lambda: lo.analogy(jnp.zeros(3), jnp.zeros(3), jnp.zeros(2)), "latent dimension"),
    (lambda: lo.combine(jnp.zeros((3, 4)), jnp.zeros(2)), "weights"),
    (lambda: lo.combine(jnp.zeros(3), jnp.zeros(3)), "zs"),
    (lambda: lo.grid(jnp.zeros((3, 4)), 3), "corners"),
    (lambda: lo.grid(jnp.zeros((4,)), 3), "corners"),
    (lambda: lo.matched_grid(P, jnp.zeros((5, 2)), 3), "corners"),
    (lambda: lo.matched_combine(P, jnp.zeros((3, 4)), jnp.ones(4)), "weights"),
    (lambda: lo.matched_lerp(P, jnp.zeros((2, 3)), jnp.zeros((2, 4)), 0.5), "latent dimension"),
]


@pytest.mark.parametrize("fn, match", SHAPE_ERRORS)
def test_shape_errors_raise_value_error(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


@pytest.mark.parametrize("fn, match", SHAPE_ERRORS)
def test_shape_errors_raise_under_jit(fn, match):
    with pytest.raises(ValueError, match=match):
        jax.jit(fn)()


VALUE_ERRORS = [
    (lambda: lo.lerp(jnp.zeros(3), jnp.ones(3), 1.5), "t"),
    (lambda: lo.matched_lerp(P, jnp.zeros(3), jnp.ones(3), -0.1), "t"),
    (lambda: lo.slerp(jnp.zeros(3), jnp.ones(3), jnp.asarray([0.5, 2.0])), "t"),
    (lambda: lo.cauchy_lerp(P, jnp.zeros(3), jnp.ones(3), 1.01), "t"),
    (lambda: lo.vicinity(KEY, P, jnp.zeros(3), -0.5, 2), "eps"),
    (lambda: lo.matched_vicinity(KEY, P, jnp.zeros(3), -0.5, 2), "eps"),
    (lambda: lo.matched_random_walk(KEY, P, jnp.zeros(3), -1.0, 2), "eps"),
    (lambda: lo.random_walk(KEY, P, jnp.zeros(3), 0.5, -1), "steps"),
    (lambda: lo.matched_random_walk(KEY, P, jnp.zeros(3), 0.5, -2), "steps"),
    (lambda: lo.vicinity(KEY, P, jnp.zeros(3), 0.5, 0), "num"),
    (lambda: lo.grid(jnp.zeros((4, 2)), 1), "n"),
    (lambda: lo.matched_combine(P, jnp.zeros((2, 3)), jnp.zeros(2)), "weights"),
    (lambda: lo.lerp(jnp.zeros(3), jnp.ones(3), float("nan")), "t"),
]


@pytest.mark.parametrize("fn, match", VALUE_ERRORS)
def test_bad_values_raise_value_error_naming_the_argument(fn, match):
    with pytest.raises(ValueError, match=rf"\b{match}\b"):
        fn()


def test_traced_t_is_documented_extrapolation():
    f = jax.jit(lambda t: lo.lerp(jnp.zeros(2), jnp.ones(2), t))
    np.testing.assert_allclose(f(1.5), [1.5, 1.5])
    g = jax.jit(lambda t: lo.matched_lerp(P, jnp.zeros(2), jnp.ones(2), t))
    assert bool(jnp.all(jnp.isfinite(g(1.5))))


@pytest.mark.parametrize(
    "fn",
    [
        lambda p: lo.vicinity(KEY, p, jnp.zeros(3), 0.5, 2),
        lambda p: lo.matched_lerp(p, jnp.zeros(3), jnp.ones(3), 0.5),
        lambda p: lo.cauchy_lerp(p, jnp.zeros(3), jnp.ones(3), 0.5),
        lambda p: lo.transport_map(p, jnp.ones(2)),
    ],
)
def test_non_priors_raise_type_error_saying_what_is_missing(fn):
    class NotAPrior:
        def cdf(self, x):
            return x

    with pytest.raises(TypeError, match="sample, log_prob, icdf"):
        fn(NotAPrior())


def test_integer_inputs_are_promoted_to_float():
    out = lo.lerp(jnp.arange(3), jnp.arange(3) + 1, 0.5)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, [0.5, 1.5, 2.5])
