"""FastICA on every code (latentot/aeot/ica.py): FOBI's start, chunked sums, the stopping rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentot.aeot import ica


def _hidden_bimodal(n, m, count, seed):
    """Whitened codes whose ``count`` bimodal directions (the bulk's variance) are a random
    orthonormal set among m − count Gaussian ones: ``(z [n, m], directions [count, m])``."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((n, m))
    s[:, :count] = np.sign(s[:, :count]) * 0.95 + 0.31 * rng.standard_normal((n, count))
    s /= s.std(0)
    q, _ = np.linalg.qr(rng.standard_normal((m, m)))
    return (s @ q.T).astype(np.float32), q[:, :count].T


def test_fobi_start_and_fast_ica_find_a_few_bimodal_directions_among_many_gaussian_ones():
    z, u = _hidden_bimodal(20_000, 64, 4, seed=0)
    w0 = ica.fobi_start(jnp.asarray(z))
    np.testing.assert_allclose(w0 @ w0.T, np.eye(64), atol=1e-8)
    # FOBI's leading directions already lie in the bimodal span (a random start: about 1/8).
    assert np.linalg.svd(w0[:4] @ u.T, compute_uv=False).min() > 0.9
    w, steps = ica.fast_ica(z, patience=ica.ICA_PATIENCE, return_iterations=True)
    np.testing.assert_allclose(w @ w.T, np.eye(64), atol=1e-5)
    assert steps < 200  # the Gaussian rows never settle: the patience rule stopped it
    # The reference: FastICA started at the true directions reaches the sample optimum (the
    # estimate's own error at n = 20,000 leaves overlaps near 0.98 with the truth; a random
    # row overlaps a direction by about 0.1, the best of 64 rows by about 0.3).
    rest = np.linalg.qr(np.random.default_rng(1).standard_normal((64, 64)))[0][4:]
    truth_start = np.linalg.qr(np.concatenate([u, rest]).T)[0].T
    optimum = ica.fast_ica(z, start=truth_start)[:4]
    assert np.max(np.abs(w @ optimum.T), axis=0).min() > 0.999
    assert np.max(np.abs(w @ u.T), axis=0).min() > 0.95


def test_chunked_sums_and_maps_equal_the_whole_array_under_jit():
    z = jax.random.normal(jax.random.key(0), (1000, 5))

    @jax.jit
    def both(z):
        sums = ica.row_sums(lambda c: (c.sum(0), c.T @ c), z, chunk=96)
        mapped = ica.map_rows(lambda c, a: jnp.tanh(c) * a, z, 2.0, chunk=96)
        return sums, mapped

    (total, outer), mapped = both(z)
    np.testing.assert_allclose(total, z.sum(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(outer, z.T @ z, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(mapped, jnp.tanh(z) * 2.0, rtol=1e-6)


def test_bad_start_raises():
    z = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match="start"):
        ica.fast_ica(z, start="ones")
    with pytest.raises(ValueError, match="start"):
        ica.fast_ica(z, start=np.eye(2))
    with pytest.raises(ValueError, match=r"\[n, m\]"):
        ica.fast_ica(np.zeros(3, np.float32))
