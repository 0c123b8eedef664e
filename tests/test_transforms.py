"""Every public operation under jax.jit, jax.vmap (over t and over pairs) and jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import latentot as lo
from tests.references import STANDARD, name

# One prior per kind of map: closed forms (Gaussian, Cauchy, the uniform pair) and the FFT
# lattice (Laplace; Logistic takes the same path, and its law is checked in test_matching).
PRIORS = [p for p in STANDARD if not isinstance(p, lo.Logistic)]
# Beyond two weights the uniform prior takes the FFT lattice too: Laplace covers it there.
NO_UNIFORM = [p for p in PRIORS if not isinstance(p, lo.Uniform)]

KEY = jax.random.PRNGKey(0)
D = 8


def _pairs(prior, n=4, dtype=None):
    k0, k1 = jax.random.split(KEY)
    return prior.sample(k0, (n, D), dtype), prior.sample(k1, (n, D), dtype)


INTERPOLATIONS = [lo.lerp, lo.slerp]
PRIOR_INTERPOLATIONS = [lo.matched_lerp, lo.cauchy_lerp]


@pytest.mark.heavy
@pytest.mark.parametrize("prior", PRIORS, ids=name)
def test_interpolations_jit_and_vmap_over_t_and_pairs(prior):
    z0, z1 = _pairs(prior)
    ts = jnp.linspace(0.0, 1.0, 5)
    fns = [lambda a, b, t, f=f: f(a, b, t) for f in INTERPOLATIONS]
    fns += [lambda a, b, t, f=f: f(prior, a, b, t) for f in PRIOR_INTERPOLATIONS]
    if isinstance(prior, lo.Gaussian):
        fns.append(lambda a, b, t: lo.spherical_cauchy_lerp(prior, a, b, t))
    for f in fns:
        # References: the unbatched function, jitted once with t traced (evaluated eagerly,
        # op by op, the references took most of this test's time; eager calls are covered by
        # the tests of each operation).
        one = jax.jit(f)
        single = jnp.stack([one(z0, z1, t) for t in ts])
        # the README's grid: vmap over t of a jitted function of traced t
        over_t = jax.jit(jax.vmap(f, in_axes=(None, None, 0)))(z0, z1, ts)
        np.testing.assert_allclose(over_t, single, rtol=2e-5, atol=2e-5)
        over_pairs = jax.jit(jax.vmap(f, in_axes=(0, 0, None)))(z0, z1, 0.3)
        np.testing.assert_allclose(over_pairs, one(z0, z1, 0.3), rtol=2e-5, atol=2e-5)


@pytest.mark.heavy
@pytest.mark.parametrize("prior", NO_UNIFORM, ids=name)
def test_other_matched_ops_jit_and_vmap(prior):
    z = prior.sample(KEY, (4, 3, D))
    ops = {
        "analogy": lambda z: lo.matched_analogy(prior, z[0], z[1], z[2]),
        "combine": lambda z: lo.matched_combine(prior, z[:3], jnp.asarray([0.2, 0.3, 0.5])),
        "grid": lambda z: lo.matched_grid(prior, z[:, 0], 3),
        "vicinity": lambda z: lo.matched_vicinity(KEY, prior, z[0], 0.5, 2),
        "walk": lambda z: lo.matched_random_walk(KEY, prior, z[0], 0.5, 3),
    }
    for fn_name, f in ops.items():
        out = jax.jit(f)(z)
        batched = jax.jit(jax.vmap(f))(jnp.stack([z, -z]))
        np.testing.assert_allclose(batched[0], out, rtol=2e-5, atol=2e-5, err_msg=fn_name)
        np.testing.assert_allclose(
            batched[1], jax.jit(f)(-z), rtol=2e-5, atol=2e-5, err_msg=fn_name
        )


def test_vmap_over_eps_and_traced_eps():
    p = lo.Laplace()
    z = p.sample(KEY, (5, D))
    eps = jnp.asarray([0.1, 0.5, 2.0])
    one = jax.jit(lambda e: lo.matched_vicinity(KEY, p, z, e, 2))
    out = jax.jit(jax.vmap(one))(eps)
    for i, e in enumerate(eps):
        np.testing.assert_allclose(out[i], one(e), rtol=1e-5, atol=1e-5)
    # a concrete eps (a Python float, jitted as a constant) takes the same map
    concrete = jax.jit(lambda: lo.matched_vicinity(KEY, p, z, 0.5, 2))()
    np.testing.assert_allclose(out[1], concrete, rtol=1e-5, atol=1e-5)
    walk = jax.jit(lambda e: lo.matched_random_walk(KEY, p, z, e, 4))(0.5)
    np.testing.assert_allclose(
        walk, lo.matched_random_walk(KEY, p, z, 0.5, 4), rtol=1e-5, atol=1e-5
    )


def _fd_grad(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("prior", PRIORS, ids=name)
def test_matched_lerp_gradients_match_finite_differences(prior, x64):
    z0, z1 = _pairs(prior, n=2, dtype=jnp.float64)
    t = jnp.float64(0.3)

    def f(z0, z1, t):
        return jnp.sum(jnp.sin(lo.matched_lerp(prior, z0, z1, t)))

    g0, g1, gt = jax.grad(f, argnums=(0, 1, 2))(z0, z1, t)
    for g in (g0, g1, gt):
        assert g.dtype == jnp.float64 and bool(jnp.all(jnp.isfinite(g)))
    h = 1e-5
    np.testing.assert_allclose(gt, _fd_grad(lambda s: f(z0, z1, s), t, h), rtol=1e-3, atol=1e-6)
    e = jnp.zeros_like(z0).at[0, 0].set(1.0)
    fd0 = _fd_grad(lambda s: f(z0 + s * e, z1, t), 0.0, h)
    np.testing.assert_allclose(g0[0, 0], fd0, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("prior", PRIORS, ids=name)
def test_float32_gradients_are_finite_at_the_endpoints(prior):
    z0, z1 = _pairs(prior, n=2)
    for t in (0.0, 0.5, 1.0):
        grads = jax.grad(
            lambda a, b, s: jnp.sum(lo.matched_lerp(prior, a, b, s)), argnums=(0, 1, 2)
        )(z0, z1, jnp.float32(t))
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads), t


@pytest.mark.parametrize("prior", NO_UNIFORM, ids=name)
def test_float64_end_to_end(prior, x64):
    z0, z1 = _pairs(prior, dtype=jnp.float64)
    assert z0.dtype == jnp.float64
    for out in (
        lo.matched_lerp(prior, z0, z1, 0.25),
        lo.cauchy_lerp(prior, z0, z1, 0.25),
        lo.matched_analogy(prior, z0, z1, z0),
        lo.matched_grid(prior, jnp.concatenate([z0, z1])[:4], 3),
        lo.matched_random_walk(KEY, prior, z0, 0.5, 2),
    ):
        assert out.dtype == jnp.float64
        assert bool(jnp.all(jnp.isfinite(out)))


def test_float32_inputs_stay_float32_under_x64(x64):
    z0, z1 = _pairs(lo.Logistic(), dtype=jnp.float32)
    assert lo.matched_lerp(lo.Logistic(), z0, z1, 0.5).dtype == jnp.float32
    assert lo.cauchy_lerp(lo.Logistic(), z0, z1, 0.5).dtype == jnp.float32
