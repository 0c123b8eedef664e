"""Leśniak et al.: Cauchy-linear interpolations keep the prior's law; spherical keeps chi norms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import latentot as lo
from tests.references import SHIFTED, STANDARD, USER, name, scipy_law

N, D = 2_000, 100


@pytest.mark.parametrize("t", [0.1, 0.5])
@pytest.mark.parametrize("prior", STANDARD + SHIFTED[:2] + USER, ids=name)
def test_cauchy_lerp_keeps_the_law(prior, t):
    k0, k1 = jax.random.split(jax.random.PRNGKey(0))
    z0, z1 = prior.sample(k0, (N, D)), prior.sample(k1, (N, D))
    out = np.asarray(lo.cauchy_lerp(prior, z0, z1, t), np.float64).ravel()
    assert np.all(np.isfinite(out))
    assert stats.kstest(out, scipy_law(prior).cdf).statistic < 0.005


@pytest.mark.parametrize("prior", STANDARD, ids=name)
def test_cauchy_lerp_endpoints(prior):
    z0, z1 = prior.sample(jax.random.PRNGKey(1), (2, 50))
    np.testing.assert_allclose(lo.cauchy_lerp(prior, z0, z1, 0.0), z0, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(lo.cauchy_lerp(prior, z0, z1, 1.0), z1, rtol=2e-5, atol=2e-5)


def test_cauchy_lerp_of_a_cauchy_prior_is_lerp():
    p = lo.Cauchy()
    z0, z1 = p.sample(jax.random.PRNGKey(1), (2, 100))
    np.testing.assert_allclose(lo.cauchy_lerp(p, z0, z1, 0.3), lo.lerp(z0, z1, 0.3), rtol=1e-4)


@pytest.mark.parametrize("dim", [2, 16, 100])
@pytest.mark.parametrize("t", [0.25, 0.5])
def test_spherical_cauchy_lerp_keeps_the_chi_law_and_the_gaussian(dim, t):
    p = lo.Gaussian()
    n = 200_000 // dim
    k0, k1 = jax.random.split(jax.random.PRNGKey(dim))
    z0, z1 = p.sample(k0, (n, dim)), p.sample(k1, (n, dim))
    out = lo.spherical_cauchy_lerp(p, z0, z1, t)
    norms = np.asarray(jnp.linalg.norm(out, axis=-1), np.float64)
    assert stats.kstest(norms, stats.chi(dim).cdf).statistic < 0.02
    # raw linear midpoints do not keep the chi law (their norms shrink)
    raw = np.asarray(jnp.linalg.norm(lo.lerp(z0, z1, 0.5), axis=-1), np.float64)
    assert stats.kstest(raw, stats.chi(dim).cdf).statistic > 0.1
    assert stats.kstest(np.asarray(out, np.float64).ravel(), "norm").statistic < 0.005


def test_spherical_cauchy_lerp_with_loc_and_scale():
    p = lo.Gaussian(2.0, 3.0)
    z0, z1 = p.sample(jax.random.PRNGKey(5), (2, 2000, 100))
    out = np.asarray(lo.spherical_cauchy_lerp(p, z0, z1, 0.4), np.float64).ravel()
    assert stats.kstest(out, stats.norm(2, 3).cdf).statistic < 0.005
    np.testing.assert_allclose(lo.spherical_cauchy_lerp(p, z0, z1, 0.0), z0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "prior", [lo.Laplace(), lo.Uniform(), lo.Gaussian(0.0, jnp.ones(3))], ids=name
)
def test_spherical_cauchy_lerp_rejects_non_isotropic_priors(prior):
    with pytest.raises(ValueError, match="isotropic"):
        lo.spherical_cauchy_lerp(prior, jnp.zeros(3), jnp.ones(3), 0.5)


def test_gaussian_norm_law_methods_match_scipy():
    p = lo.Gaussian(0.0, 2.0)
    r = jnp.linspace(0.1, 40, 50)
    ref = stats.chi(50, scale=2.0)
    np.testing.assert_allclose(p.norm_cdf(r, 50), ref.cdf(np.asarray(r)), rtol=1e-4, atol=1e-7)
    u = jnp.asarray([1e-6, 0.01, 0.5, 0.99])
    np.testing.assert_allclose(p.norm_icdf(u, 50), ref.ppf(np.asarray(u, np.float64)), rtol=1e-5)
    q = jnp.asarray([1e-12, 1e-6, 0.3])
    np.testing.assert_allclose(p.norm_isf(q, 50), ref.isf(np.asarray(q, np.float64)), rtol=1e-5)
