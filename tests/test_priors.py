"""Priors against scipy.stats (rtol 1e-5 in float32, body and tails), and the protocol."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import latentot as lo
from latentot import priors
from tests.references import SHIFTED, STANDARD, name, scipy_law

ALL = STANDARD + SHIFTED
# u in [1e-6, 1 - 1e-6], rounded to float32 first so both sides see the same input.
U = np.concatenate([np.geomspace(1e-6, 0.5, 40), 1 - np.geomspace(1e-6, 0.5, 40)[::-1]])
U32 = U.astype(np.float32)
RTOL = 1e-5


@pytest.mark.parametrize("prior", ALL, ids=name)
def test_icdf_matches_scipy_in_body_and_tails(prior):
    ref = scipy_law(prior).ppf(U32.astype(np.float64))
    got = np.asarray(prior.icdf(jnp.asarray(U32)), np.float64)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=1e-6 * float(jnp.max(prior.scale)))


@pytest.mark.parametrize("prior", ALL, ids=name)
def test_cdf_sf_log_prob_match_scipy(prior):
    law = scipy_law(prior)
    x = np.asarray(law.ppf(U), np.float32)
    x64 = x.astype(np.float64)
    lower = U < 0.5
    np.testing.assert_allclose(np.asarray(prior.cdf(x))[lower], law.cdf(x64)[lower], rtol=RTOL)
    np.testing.assert_allclose(np.asarray(prior.sf(x))[~lower], law.sf(x64)[~lower], rtol=RTOL)
    np.testing.assert_allclose(np.asarray(prior.cdf(x)), law.cdf(x64), rtol=RTOL)
    lp = np.asarray(prior.log_prob(x))
    np.testing.assert_allclose(lp, law.logpdf(x64), rtol=RTOL, atol=1e-5)


@pytest.mark.parametrize("prior", ALL, ids=name)
def test_isf_matches_scipy(prior):
    q = jnp.asarray(U32[U32 < 0.5])
    ref = scipy_law(prior).isf(np.asarray(q, np.float64))
    np.testing.assert_allclose(np.asarray(prior.isf(q)), ref, rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("prior", ALL, ids=name)
def test_round_trip(prior):
    u = jnp.asarray(U32)
    x = prior.icdf(u)
    lower = u < 0.5
    back = jnp.where(lower, prior.icdf(prior.cdf(x)), prior.isf(prior.sf(x)))
    np.testing.assert_allclose(back, x, rtol=2e-5, atol=2e-5 * float(jnp.max(prior.scale)))


@pytest.mark.parametrize("prior", ALL, ids=name)
def test_sample_shape_dtype_and_law(prior):
    z = prior.sample(jax.random.PRNGKey(0), (20_000, 5))
    assert z.shape == (20_000, 5) and z.dtype == jnp.float32
    from scipy.stats import kstest

    assert kstest(np.asarray(z).ravel(), scipy_law(prior).cdf).statistic < 0.01


def test_sample_float64(x64):
    z = lo.Laplace().sample(jax.random.PRNGKey(0), (3,))
    assert z.dtype == jnp.float64
    assert lo.Gaussian().sample(jax.random.PRNGKey(0), (3,), jnp.float32).dtype == jnp.float32


def test_uniform_samples_stay_in_support():
    p = lo.Uniform(2.0, 2.5)
    z = p.sample(jax.random.PRNGKey(1), (100_000,))
    assert float(z.min()) >= 2.0 and float(z.max()) <= 2.5


def test_priors_are_pytrees_and_jit():
    p = lo.Gaussian(1.0, 2.0)
    assert jax.tree_util.tree_leaves(p) == [1.0, 2.0]
    f = jax.jit(lambda p, x: p.cdf(x))
    np.testing.assert_allclose(f(p, jnp.float32(1.0)), 0.5)
    # traced parameters are allowed (not validated)
    g = jax.jit(lambda s: lo.Cauchy(0.0, s).icdf(jnp.float32(0.75)))
    np.testing.assert_allclose(g(jnp.float32(2.0)), 2.0, rtol=1e-6)
    assert isinstance(p, priors.Prior)


def test_array_parameters_fix_the_dimension():
    p = lo.Gaussian(jnp.zeros(3), jnp.array([1.0, 2.0, 3.0]))
    assert p.dim == 3 and lo.Gaussian().dim is None
    z = p.sample(jax.random.PRNGKey(0), (50_000, 3))
    np.testing.assert_allclose(jnp.std(z, 0), [1, 2, 3], rtol=0.03)


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda: lo.Gaussian(scale=-1.0), "scale"),
        (lambda: lo.Cauchy(scale=0.0), "scale"),
        (lambda: lo.Laplace(loc=float("nan")), "loc"),
        (lambda: lo.Logistic(scale=jnp.array([1.0, -2.0])), "scale"),
        (lambda: lo.Uniform(1.0, 1.0), "low"),
        (lambda: lo.Uniform(2.0, 1.0), "low"),
    ],
)
def test_bad_parameters_raise(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


CLASSES = [lo.Gaussian, lo.Uniform, lo.Cauchy, lo.Laplace, lo.Logistic]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_tree_utilities_rebuild_priors_with_any_leaves(cls):
    p = cls()
    zero = jax.tree.map(lambda x: x * 0, p)  # scale 0 / low == high: invalid, yet a valid pytree
    assert type(zero) is cls and jax.tree.leaves(zero) == [0.0, 0.0]
    none = jax.tree.map(lambda x: None, p)
    assert type(none) is cls and jax.tree.leaves(none, is_leaf=lambda x: x is None) == [None] * 2
    paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(p)[0]]
    assert paths == [f".{f.name}" for f in dataclasses.fields(cls)]
    # optax-style tree arithmetic and structure checks go through unflatten as well
    twice = jax.tree.map(lambda a, b: a + b, p, p)
    assert jax.tree.leaves(twice) == [2 * x for x in jax.tree.leaves(p)]
    assert jax.tree.structure(zero) == jax.tree.structure(p)


def test_vmap_over_a_batch_of_priors_matches_scipy():
    from scipy import stats

    loc, scale = jnp.array([-1.0, 0.0, 2.0]), jnp.array([0.5, 1.0, 3.0])
    x = jnp.array([0.3, -1.2, 4.0], jnp.float32)
    batch = lo.Gaussian(loc, scale)
    got = jax.vmap(lambda p, x: p.log_prob(x))(batch, x)
    np.testing.assert_allclose(got, stats.norm(loc, scale).logpdf(x), rtol=1e-6)
    # one sample row per prior of the batch; a prefix tree names the batched leaves
    z = jax.vmap(lambda p, k: p.sample(k, (20_000,)))(batch, jax.random.split(jax.random.key(0), 3))
    np.testing.assert_allclose(jnp.mean(z, 1), loc, atol=0.06)
    np.testing.assert_allclose(jnp.std(z, 1), scale, rtol=0.03)
    shared = lo.Gaussian(loc, 2.0)
    cdf = jax.vmap(lambda p, x: p.cdf(x), in_axes=(lo.Gaussian(0, None), 0))(shared, x)
    np.testing.assert_allclose(cdf, stats.norm(loc, 2.0).cdf(x), rtol=1e-6)
    lows, highs = jnp.array([0.0, -2.0]), jnp.array([1.0, 2.0])
    icdf = jax.vmap(lambda p: p.icdf(jnp.float32(0.25)))(lo.Uniform(lows, highs))
    np.testing.assert_allclose(icdf, stats.uniform(lows, highs - lows).ppf(0.25), rtol=1e-6)


def test_construction_still_validates_replaced_and_mapped_parameters():
    with pytest.raises(ValueError, match="scale"):
        dataclasses.replace(lo.Gaussian(), scale=-1.0)
    zero = jax.tree.map(lambda x: x * 0, lo.Laplace(1.0, 2.0))
    with pytest.raises(ValueError, match="scale"):
        lo.Laplace(zero.loc, zero.scale)
    with pytest.raises(ValueError, match="low"):
        lo.Uniform(jnp.array([0.0, 1.0]), jnp.array([1.0, 1.0]))


def test_protocol_defaults_for_user_priors():
    from tests.references import Gumbel

    g = Gumbel()
    x = jnp.asarray([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(priors.sf(g, x), 1 - g.cdf(x))
    np.testing.assert_allclose(priors.isf(g, jnp.float32(0.25)), g.icdf(jnp.float32(0.75)))
    assert priors.support(g) == (-np.inf, np.inf)
    assert priors.standardize(g) == (g, 0.0, 1.0)
