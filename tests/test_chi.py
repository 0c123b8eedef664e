"""The chi law (latentot.chi) against scipy.stats.chi, body and both tails."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from latentot import chi

U = np.concatenate([np.geomspace(1e-6, 0.5, 25), 1 - np.geomspace(1e-6, 0.5, 25)[::-1]])


@pytest.mark.parametrize("dim", [1, 2, 7, 100, 1000])
def test_chi_law_matches_scipy(dim):
    law = stats.chi(dim)
    u = jnp.asarray(U, jnp.float32)
    np.testing.assert_allclose(chi.chi_icdf(u, dim), law.ppf(np.asarray(u, np.float64)), rtol=2e-5)
    q = u[u < 0.5]
    np.testing.assert_allclose(chi.chi_isf(q, dim), law.isf(np.asarray(q, np.float64)), rtol=2e-5)


@pytest.mark.parametrize("dim", [1, 2, 7, 100])
def test_chi_cdf_and_sf_match_scipy_float32(dim):
    _check_cdf_sf(dim, jnp.float32, rtol=1e-4)


@pytest.mark.parametrize("dim", [1, 7, 1000])
def test_chi_cdf_and_sf_match_scipy_float64(dim, x64):
    # In float32 the rounding of r²/2 (relative 6e-8) is amplified about dim-fold in the tails,
    # so large dimensions are checked in float64.
    _check_cdf_sf(dim, jnp.float64, rtol=1e-8)


def _check_cdf_sf(dim, dtype, rtol):
    law = stats.chi(dim)
    r = jnp.asarray(law.ppf(U), dtype)
    r64 = np.asarray(r, np.float64)
    lower = U < 0.5
    np.testing.assert_allclose(
        np.asarray(chi.chi_cdf(r, dim))[lower], law.cdf(r64)[lower], rtol=rtol
    )
    np.testing.assert_allclose(
        np.asarray(chi.chi_sf(r, dim))[~lower], law.sf(r64)[~lower], rtol=rtol
    )


def test_chi_ends_and_bad_dim():
    assert float(chi.chi_icdf(jnp.float32(0.0), 3)) == 0.0
    assert float(chi.chi_icdf(jnp.float32(1.0), 3)) == np.inf
    assert float(chi.chi_isf(jnp.float32(0.0), 3)) == np.inf
    assert float(chi.chi_cdf(jnp.float32(-1.0), 3)) == 0.0
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="dim"):
            chi.chi_cdf(jnp.float32(1.0), bad)
