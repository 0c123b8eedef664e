"""The pursuit frame (method="pursuit"): k found from the codes, exact linear map on Gaussian
codes, exact 1-D maps on independent non-Gaussian directions, invertible layers, save/load."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from latentot import Gaussian, aeot
from latentot.aeot import monotone, pursuit


def _frame_sampler(codes, seed=0):
    n_val = len(codes) // 5
    frame, report = pursuit.find_frame(codes, codes[:n_val], fit_rows=np.arange(n_val, len(codes)))
    return frame, report


def test_monotone_map_matches_scipy_quantiles_and_inverts():
    rng = np.random.default_rng(0)
    s = rng.exponential(size=(40_000, 2)) * [1.0, 3.0]
    g = monotone.quantile_map(s)
    z = jnp.asarray([[-1.0, 0.5], [0.0, 2.0], [7.0, -7.0]], jnp.float32)
    y = np.asarray(g(z))
    want = stats.expon.ppf(stats.norm.cdf(np.asarray(z[:2]))) * [1.0, 3.0]
    np.testing.assert_allclose(y[:2], want, rtol=0.03)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(np.asarray(g.inverse(g(z))), np.asarray(z), atol=1e-4)


def test_gaussian_codes_give_the_exact_linear_map():
    rng = np.random.default_rng(1)
    d = 40
    a = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    codes = (rng.standard_normal((6000, d)) @ a.T + 2.0).astype(np.float32)
    s = aeot.fit(jax.random.key(0), codes, method="pursuit")
    assert s.k == 0 and len(s.frame.layers) == 0 and int(s.history["k"][0]) == 0
    x = jax.random.normal(jax.random.key(1), (256, d))
    c = codes.astype(np.float64)  # the Bures map in float64 (float32 moments lose ~1e-2 here)
    w, v = np.linalg.eigh(np.cov(c, rowvar=False, bias=True))
    want = np.asarray(x, np.float64) @ (v * np.sqrt(w)) @ v.T + c.mean(0)
    np.testing.assert_allclose(np.asarray(s.transport(x)), want, atol=2e-4)


def test_spiked_block_is_found_and_bimodal_directions_of_bulk_variance_are_matched():
    """8 spiked directions carry clusters; 2 more directions, of the bulk's variance, are
    bimodal. k must be 8 and the samples' marginals along the bimodal directions must match
    the codes' (they are Gaussian under the linear map)."""
    rng = np.random.default_rng(2)
    d, n = 48, 20_000
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    z = rng.standard_normal((n, d))
    centres = 4.0 * rng.standard_normal((12, 8))
    z[:, :8] = 2.0 * z[:, :8] + centres[rng.integers(12, size=n)]  # clusters in the spiked block
    bimodal = np.sign(rng.standard_normal((n, 2))) * 0.9 + 0.436 * rng.standard_normal((n, 2))
    z[:, 8:10] = bimodal
    codes = (z @ q.T).astype(np.float32)
    frame, report = _frame_sampler(codes)
    assert frame.k == 8, report
    x = jax.random.normal(jax.random.key(3), (8000, d))
    u = np.asarray(frame.transport(x, lambda v: v))[:, :] @ q[:, 8:10]
    real = codes[:8000] @ q[:, 8:10]
    for j in range(2):
        assert pursuit.ks_two(u[:, j], real[:, j]) < 0.05
        assert pursuit.ks_normal(real[:, j : j + 1])[0] > 0.1  # the control: not Gaussian


def test_layers_invert_and_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    d = 34
    codes = rng.laplace(size=(4000, d)) @ rng.standard_normal((d, d)) / 6.0
    s = aeot.fit(jax.random.key(5), codes.astype(np.float32), method="pursuit")
    assert s.k == 0 and len(s.frame.layers) >= 2
    x = jax.random.normal(jax.random.key(6), (128, d - s.k))
    back = s.frame.complement_inverse(s.frame.complement(x))
    np.testing.assert_allclose(np.asarray(back), np.asarray(x), atol=2e-3)
    aeot.save(tmp_path / "s.ckpt", s)
    t = aeot.load(tmp_path / "s.ckpt")
    z = jax.random.normal(jax.random.key(7), (64, d))
    np.testing.assert_array_equal(np.asarray(t.transport(z)), np.asarray(s.transport(z)))
    assert np.all(np.isfinite(np.asarray(s.sample(jax.random.key(8), 512))))


def test_pursuit_needs_the_standard_gaussian_prior():
    codes = np.random.default_rng(0).standard_normal((600, 40)).astype(np.float32)
    with pytest.raises(ValueError, match="pursuit"):
        aeot.fit(jax.random.key(0), codes, method="pursuit", prior=Gaussian(scale=2.0))
    assert aeot.resolve_method("auto", 33) == "pursuit"
    assert aeot.resolve_method("auto", 32) == "debiased"


def _grey_patches(n, size, seed):
    """Grey ``size × size`` patches of sklearn's sample photos, in [0, 1] (dequantised)."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    images = [im.mean(-1) / 256.0 for im in load_sample_images().images]
    out = np.empty((n, size * size))
    for i in range(n):
        im = images[i % 2]
        r, c = rng.integers(im.shape[0] - size), rng.integers(im.shape[1] - size)
        out[i] = im[r : r + size, c : c + size].ravel()
    return (out + rng.uniform(0.0, 1.0 / 256.0, out.shape)).astype(np.float32)


def test_bounds_keep_every_sample_in_the_box_and_survive_save_load(tmp_path):
    """Natural-image patches in [0, 1]: without bounds, samples leave the box (the control);
    with ``bounds=(0, 1)`` none does, and the samples' pixel law stays close to the codes'."""
    codes = _grey_patches(4000, 5, 0)
    free = aeot.fit(jax.random.key(0), codes, method="pursuit")
    boxed = aeot.fit(jax.random.key(0), codes, method="pursuit", bounds=(0.0, 1.0))
    x_free = np.asarray(free.sample(jax.random.key(1), 4000))
    x_box = np.asarray(boxed.sample(jax.random.key(1), 4000))
    assert np.mean((x_free < 0) | (x_free > 1)) > 0.005
    assert np.all((x_box >= 0) & (x_box <= 1)) and np.all(np.isfinite(x_box))
    held_out = _grey_patches(4000, 5, 1)
    # The centre pixel's law: at most half as far from the held-out codes' as a Gaussian fit
    # clipped to the box (KS 0.19; the boxed sampler measured 0.075-0.080 over fit keys 0-2).
    rng = np.random.default_rng(0)
    c = codes.astype(np.float64)
    clipped = np.clip(rng.multivariate_normal(c.mean(0), np.cov(c, rowvar=False), 4000), 0, 1)
    control = pursuit.ks_two(clipped[:, 12], held_out[:, 12])
    assert pursuit.ks_two(x_box[:, 12], held_out[:, 12]) < 0.5 * control
    aeot.save(tmp_path / "b.ckpt", boxed)
    again = aeot.load(tmp_path / "b.ckpt")
    z = jax.random.normal(jax.random.key(2), (32, 25))
    np.testing.assert_array_equal(np.asarray(again.transport(z)), np.asarray(boxed.transport(z)))
    with pytest.raises(ValueError, match="bounds"):
        aeot.fit(jax.random.key(0), codes, bounds=(0.0, 0.5))
    with pytest.raises(ValueError, match="bounds"):
        aeot.fit(jax.random.key(0), codes, bounds=(1.0, 0.0))


def test_moment_correction_is_the_bures_map_between_the_moments():
    """Closed form: S is symmetric positive definite with S Σ_T S = Σ, so the corrected
    points have exactly the codes' mean and covariance; matched moments give no correction."""
    rng = np.random.default_rng(3)
    k = 5
    a = rng.standard_normal((k, k))
    pushed = rng.standard_normal((4000, k)) @ a + 1.0
    b = rng.standard_normal((k, k)) * np.logspace(0, -3, k)  # six decades of variance
    cov, mean = b @ b.T, rng.standard_normal(k)
    layer = pursuit.moment_correction(pushed, mean, cov)
    s = np.asarray(layer.matrix, np.float64)
    np.testing.assert_allclose(s, s.T, atol=1e-6)
    assert np.linalg.eigvalsh(s).min() > 0
    out = np.asarray(layer.forward(jnp.asarray(pushed, jnp.float32)), np.float64)
    np.testing.assert_allclose(np.cov(out, rowvar=False), cov, rtol=2e-3, atol=1e-5 * cov.max())
    np.testing.assert_allclose(out.mean(0), mean, atol=1e-4)
    back = np.asarray(layer.forward(jnp.asarray(out, jnp.float32), inverse=True))
    np.testing.assert_allclose(back, pushed, atol=1e-3)
    assert pursuit.moment_correction(pushed, pushed.mean(0), np.cov(pushed, rowvar=False)) is None


def test_spikes_over_a_flat_bulk_without_a_gap_of_three():
    """Seven cluster directions whose eigenvalues end 2.2× above a flat bulk (the clusters
    pair at d = 64): the block is those seven; a smoothly decaying spectrum has no spikes."""
    rng = np.random.default_rng(4)
    n, d = 20_000, 64
    lam = np.concatenate([np.linspace(6.0, 2.4, 7), np.ones(d - 7)])
    sample = np.sort(
        np.linalg.eigvalsh(np.cov(rng.standard_normal((n, d)) * np.sqrt(lam), rowvar=False))
    )[::-1]
    assert pursuit._spikes(sample, n, 32)[0] == 7
    decay = np.arange(1, d + 1, dtype=float) ** -1.5  # natural images' power law
    assert pursuit._spikes(decay, n, 32)[0] == 0


def test_the_small_end_of_a_spectrum_is_never_a_gap():
    """Laplace sources through a random mixing matrix: the spectrum decays to ratios of 3.6 and
    3.2 among its smallest eigenvalues (below the bulk's median). The gap rule must give k = 0
    from the spectrum alone, not leave it to a normality test of a 32-dimensional block; a
    real gap above the bulk (8 spikes) is still found."""
    rng = np.random.default_rng(4)
    d = 34
    codes = rng.laplace(size=(4000, d)) @ rng.standard_normal((d, d)) / 6.0
    lam = np.linalg.eigvalsh(np.cov(codes, rowvar=False))[::-1]
    assert np.max(lam[25:-1] / lam[26:]) > 3.0  # the control: large ratios at the small end
    assert pursuit._spectral_gap(lam, 32, 3.0)[0] == 0
    spiked = np.concatenate([np.linspace(40.0, 20.0, 8), lam[8:]])
    assert pursuit._spectral_gap(spiked, 32, 3.0)[0] == 8


def _scale_mixture(rng, n, m):
    """Whitened Gaussian scale-mixture codes (the contrast law of image patches)."""
    s = np.where(rng.random(n) < 0.5, 0.5, 2.5)[:, None]
    z = rng.standard_normal((n, m)) * s
    return z / z.std()


def test_radial_layer_starts_at_the_origin_and_is_injective():
    """On a Gaussian scale mixture the radius map's lowest quantile knot lies far from 0; the
    map must still give ρ(0) = 0 and ρ ≥ 0 below that knot, so no small-radius point is sent
    through the origin (ρ < 0 flips its direction; a linear extrapolation below the knot
    gave ρ(0) = −0.38 on this law)."""
    rng = np.random.default_rng(0)
    m = 8
    zs, zv = _scale_mixture(rng, 20_000, m), _scale_mixture(rng, 5_000, m)
    zs, zv = (jnp.asarray(z, jnp.float32) for z in (zs, zv))
    layer, mapped = pursuit._radial_layer(zs, zv, 1e-3, 257)
    assert mapped == 1
    rho = layer.radius
    first = float(rho.x[0, 1])  # the first quantile knot (after the origin)
    assert first > 0.5  # the control: a chi(8) quantile away from the origin
    r = jnp.linspace(0.0, first, 50)[:, None]
    values = np.asarray(rho(r))[:, 0]
    assert values[0] == 0.0 and np.all(np.diff(values) > 0)
    # Points near the origin keep their direction, and the layer inverts there.
    z = jnp.asarray(rng.standard_normal((64, m)) * 1e-2, jnp.float32)
    out = layer.forward(z)
    cos = np.sum(np.asarray(out) * np.asarray(z), 1) / (
        np.linalg.norm(np.asarray(out), axis=1) * np.linalg.norm(np.asarray(z), axis=1)
    )
    np.testing.assert_allclose(cos, 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer.forward(out, inverse=True)), z, atol=1e-6)


def test_whitening_layer_stores_the_map_it_applies():
    """The stage's codes (mean 0.3, covariance far from I) are whitened about their mean; the
    stored layer's inverse (codes → noise) must reproduce the returned codes, and its forward
    map them back, exactly in float32."""
    rng = np.random.default_rng(1)
    m = 6
    a = rng.standard_normal((m, m)) * 0.5 + np.eye(m)
    zs = rng.standard_normal((4000, m)) @ a + 0.3
    layer = pursuit._whitening_layer(jnp.asarray(zs, jnp.float32))
    assert layer is not None
    ws = np.asarray(pursuit._to_noise(layer, jnp.asarray(zs, jnp.float32)), np.float64)
    np.testing.assert_allclose(np.cov(ws, rowvar=False, bias=True), np.eye(m), atol=1e-4)
    np.testing.assert_allclose(ws.mean(0), zs.mean(0), atol=1e-4)  # the mean is kept
    stored = np.asarray(layer.forward(jnp.asarray(zs, jnp.float32), inverse=True))
    np.testing.assert_allclose(stored, ws, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(layer.forward(jnp.asarray(ws, jnp.float32))), zs, atol=1e-4
    )


def test_covariance_correction_gives_unit_variances_on_fresh_noise():
    """Layers whose pushed noise has variances 4 and 0.25: the correction (a diagonal linear
    layer on the codes' side) makes every coordinate's variance 1 on fresh prior draws, and
    leaves unit-variance layers alone."""
    m = 3
    stretch = pursuit.LinearLayer(
        jnp.diag(jnp.asarray([2.0, 0.5, 1.0])), jnp.diag(jnp.asarray([0.5, 2.0, 1.0]))
    )
    corrected = pursuit._covariance_correction([stretch], m, np.random.default_rng(0))
    assert len(corrected) == 2
    z = jax.random.normal(jax.random.key(9), (200_000, m))
    for layer in reversed(corrected):
        z = layer.forward(z)
    np.testing.assert_allclose(np.std(np.asarray(z), 0), 1.0, atol=0.01)
    same = pursuit._covariance_correction(corrected, m, np.random.default_rng(1))
    assert len(same) == 2


def test_pursuit_validates_like_the_other_methods():
    codes = np.random.default_rng(0).standard_normal((600, 40)).astype(np.float32)
    key = jax.random.key(0)
    for kwargs, word in (
        ({"penalty": "l3"}, "penalty"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"callback": 3}, "callback"),
        ({"lp": 3}, "lp"),
        ({"steps": 0}, "steps"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"ema_decay": 1.5}, "ema_decay"),
        ({"batch_size": 601}, "batch_size"),
    ):
        with pytest.raises(ValueError, match=word):
            aeot.fit(key, codes, method="pursuit", **kwargs)
    with pytest.raises(ValueError, match="zero spread"):
        aeot.fit(key, np.ones((600, 40), np.float32), method="pursuit")
    with pytest.raises(ValueError, match="NaN"):
        aeot.fit(key, np.where(codes > 3.5, np.nan, codes), method="pursuit")
    assert aeot.resolve_method("auto", 40) == "pursuit"
    assert aeot.resolve_method("auto", 40, prior=Gaussian(scale=2.0)) == "debiased"


def test_every_fitting_code_counts_in_the_layers():
    """28,000 fitting codes, more than FastICA's first-pass sample here and the 20,000 that the
    search once subsampled: the first marginal layer's (the FastICA layer's) outer knots are the
    minimum and maximum over all of them (a subsample would miss the extremes), and the
    held-out split grows with N beyond 100,000 codes."""
    rng = np.random.default_rng(3)
    d, n = 34, 30_000
    codes = rng.laplace(size=(n, d)).astype(np.float32)
    codes[n - 1, 0] = 40.0  # one extreme fitting code
    frame, report = pursuit.find_frame(
        codes, codes[:2000], fit_rows=np.arange(2000, n), ica_sample=5000
    )
    assert report.layers[:2] == [("principal", 0), ("ica", d)], report.layers  # the control
    layer = next(lay for lay in frame.layers if isinstance(lay, pursuit.MarginalLayer))
    mean = codes.astype(np.float64).mean(0)
    z = (codes[2000:].astype(np.float64) - mean) @ np.asarray(frame.basis, np.float64)
    c = (z / np.asarray(frame.scale, np.float64)) @ np.asarray(layer.rotation, np.float64)
    y = np.asarray(layer.marginal.y, np.float64)
    np.testing.assert_allclose(y[:, -1], c.max(0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(y[:, 0], c.min(0), rtol=1e-3, atol=1e-4)
    assert pursuit.held_out_size(20_000) == 4000
    assert pursuit.held_out_size(100_000) == 10_000
    assert pursuit.held_out_size(1_000_000) == 100_000
