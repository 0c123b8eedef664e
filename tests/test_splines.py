"""Keyframe splines: Catmull-Rom formula, pass-through, loops, laws, merging, jit/vmap, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import kstest

import latentot as lo
from latentot import splines
from tests.references import STANDARD, USER, name, scipy_law

N, D = 2_000, 100  # 200k components per frame
KS_MAX = 0.005
KEY = jax.random.PRNGKey(0)


def _ks(x, prior):
    return kstest(np.asarray(x, np.float64).ravel(), scipy_law(prior).cdf).statistic


def test_catmull_rom_formula_and_pass_through():
    """Midpoints (-P₀ + 9P₁ + 9P₂ - P₃)/16; exact keyframes at integer t; clamped ends."""
    kf = jax.random.normal(KEY, (5, 3, 4))
    out = lo.spline(kf, np.asarray([1.5, 2.5, 0.0, 1.0, 2.0, 3.0, 4.0, 0.5]))
    for r, i in enumerate([1, 2]):
        mid = (-kf[i - 1] + 9 * kf[i] + 9 * kf[i + 1] - kf[i + 2]) / 16
        np.testing.assert_allclose(out[r], mid, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[2:7], kf)
    # open start: P_{-1} = P_0, so the first half-segment is (8 P₀ + 9 P₁ - P₂) / 16
    np.testing.assert_allclose(out[7], (8 * kf[0] + 9 * kf[1] - kf[2]) / 16, rtol=1e-6, atol=1e-6)


def test_closed_loop_is_periodic_and_smooth():
    kf = jax.random.normal(KEY, (4, 6))
    t = np.linspace(-4.0, 8.0, 49)
    out = lo.spline(kf, t, closed=True)
    np.testing.assert_allclose(out[:16], out[16:32], rtol=1e-5, atol=1e-5)  # period K = 4
    np.testing.assert_allclose(out[16:32], out[32:48], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[16::4][:4], kf, rtol=1e-6, atol=1e-6)  # t = 0, 1, 2, 3
    # the loop closes smoothly: the tangent at t = 0 is (P₁ - P₃) / 2 from both sides
    e = 1e-3
    ends = lo.spline(kf, np.asarray([-e, e, 4 - e]), closed=True)
    np.testing.assert_allclose((ends[1] - ends[0]) / (2 * e), (kf[1] - kf[3]) / 2, atol=2e-3)
    np.testing.assert_allclose(ends[2], ends[0], rtol=1e-6, atol=1e-6)


def test_repeated_keyframes_are_merged():
    index, weight = splines.spline_weights(np.asarray([0.5, 1.5]), 2, closed=True)
    for row_i, row_w in zip(np.asarray(index), np.asarray(weight), strict=True):
        assert np.count_nonzero(row_w) == 2  # two distinct keyframes, one weight each
        assert sorted(row_i[row_w != 0].tolist()) == [0, 1]
        np.testing.assert_allclose(row_w.sum(), 1.0)


T_OPEN = np.asarray([0.0, 0.3, 0.5, 1.5, 2.75, 3.0])


@pytest.mark.parametrize("prior", STANDARD + USER, ids=name)
def test_matched_frames_have_the_prior_law(prior):
    kf = prior.sample(jax.random.PRNGKey(1), (4, N, D))
    matched = lo.matched_spline(prior, kf, T_OPEN)
    raw = lo.spline(kf, T_OPEN)
    assert matched.shape == (len(T_OPEN), N, D)
    assert bool(jnp.all(jnp.isfinite(matched)))
    for r, t in enumerate(T_OPEN):
        assert _ks(matched[r], prior) < KS_MAX, f"t = {t}"
        if t not in (0.0, 3.0):  # between keyframes the raw spline is off the prior
            assert _ks(raw[r], prior) > KS_MAX, f"raw t = {t}"
    np.testing.assert_allclose(matched[0], kf[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(matched[-1], kf[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prior", [lo.Laplace(), USER[0]], ids=name)
def test_merging_is_what_keeps_the_law(prior):
    """A 2-keyframe loop at t = 0.5 uses P₁, P₀, P₁, P₀ with weights (-1, 9, 9, -1)/16.

    Merged, y = (P₀ + P₁)/2 and its map keeps the law; the map of the four weights as if they
    were four independent draws does not.
    """
    kf = prior.sample(jax.random.PRNGKey(2), (2, N, D))
    t = np.asarray([0.5])
    matched = lo.matched_spline(prior, kf, t, closed=True)[0]
    assert _ks(matched, prior) < KS_MAX
    y = lo.spline(kf, t, closed=True)[0]
    np.testing.assert_allclose(y, (kf[0] + kf[1]) / 2, rtol=1e-5, atol=1e-5)
    unmerged = lo.transport_map(prior, jnp.asarray([-1.0, 9.0, 9.0, -1.0]) / 16)(y)
    assert _ks(unmerged, prior) > 3 * KS_MAX


@pytest.mark.heavy
def test_jit_vmap_and_traced_t():
    p = lo.Uniform()
    kf = p.sample(KEY, (3, 5, 8))
    t = np.asarray([0.0, 0.4, 1.0, 1.7])
    eager = lo.matched_spline(p, kf, t)
    traced = jax.jit(lambda k, s: lo.matched_spline(p, k, s))(kf, jnp.asarray(t))
    np.testing.assert_allclose(traced, eager, rtol=1e-5, atol=1e-5)
    closed_over = jax.jit(lambda k: lo.matched_spline(p, k, t))(kf)  # concrete t under jit
    np.testing.assert_allclose(closed_over, eager, rtol=1e-6, atol=1e-6)
    # vmap over a batch of keyframe sets = the batch as a leading axis of the latents
    per_set = jax.vmap(lambda k: lo.spline(k, t), in_axes=1, out_axes=1)(kf)
    np.testing.assert_allclose(per_set, lo.spline(kf, t), rtol=1e-6, atol=1e-6)
    per_set = jax.jit(jax.vmap(lambda k: lo.matched_spline(p, k, t), in_axes=1, out_axes=1))(kf)
    np.testing.assert_allclose(per_set, eager, rtol=1e-5, atol=1e-5)
    # traced t outside [0, K - 1] holds the end keyframes (documented), never NaN
    ends = jax.jit(lambda s: lo.matched_spline(p, kf, s))(jnp.asarray([-0.5, 2.5]))
    np.testing.assert_allclose(ends, kf[jnp.asarray([0, 2])], rtol=1e-6, atol=1e-6)


def test_float64(x64):
    p = lo.Logistic()
    kf = p.sample(KEY, (3, 4, 6), jnp.float64)
    out = lo.matched_spline(p, kf, np.asarray([0.0, 0.5, 2.0]), closed=True)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out[0], kf[0], rtol=1e-12, atol=1e-12)
    assert lo.spline(kf, np.asarray([0.5])).dtype == jnp.float64


SHAPE_ERRORS = [
    (lambda: lo.spline(jnp.zeros((1, 3)), jnp.zeros(2)), "K = 2"),
    (lambda: lo.matched_spline(lo.Uniform(), jnp.zeros((1, 3)), jnp.zeros(2)), "K = 2"),
    (lambda: lo.spline(jnp.zeros(3), jnp.zeros(2)), "keyframes"),
    (lambda: lo.spline(jnp.zeros((3, 2)), jnp.zeros((2, 2))), "t must be"),
    (lambda: lo.matched_spline(lo.Laplace(), jnp.zeros((3, 2)), jnp.zeros(())), "t must be"),
]


@pytest.mark.parametrize("fn, match", SHAPE_ERRORS)
def test_shape_errors_raise_also_under_jit(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()
    with pytest.raises(ValueError, match=match):
        jax.jit(fn)()


@pytest.mark.parametrize(
    "t, closed", [([0.0, 3.5], False), ([-0.1], False), ([float("nan")], True), ([np.inf], False)]
)
def test_bad_concrete_t_raises_naming_t(t, closed):
    kf = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match=r"\bt\b"):
        lo.spline(kf, np.asarray(t), closed=closed)
    with pytest.raises(ValueError, match=r"\bt\b"):
        lo.matched_spline(lo.Gaussian(), kf, np.asarray(t), closed=closed)


@pytest.mark.parametrize(
    "prior, closed",
    [(lo.Laplace(), True), (lo.Logistic(), False)],
    ids=["laplace-closed", "logistic-open"],
)
def test_traced_t_interpolates_tables_built_while_tracing(prior, closed):
    """A traced t runs no FFT: each frame interpolates the tables of nodes along its segment.

    The frames agree with the maps of their own weights (a concrete t) to 1e-4, keyframes
    exactly, and a non-finite t gives a NaN frame.
    """
    kf = prior.sample(KEY, (4, 64))
    t = np.asarray([0.0, 0.3, 0.5, 1.25, 2.03, 2.9, 3.0, np.nan], np.float32)
    f = jax.jit(lambda k, s: lo.matched_spline(prior, k, s, closed=closed))
    assert "fft" not in f.lower(kf, jnp.asarray(t)).as_text().lower()
    traced = np.asarray(f(kf, jnp.asarray(t)))
    own = lo.matched_spline(prior, kf, t[:-1], closed=closed)
    np.testing.assert_allclose(traced[:-1], own, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(traced[[0, 6]], kf[np.asarray([0, 3])])
    assert np.all(np.isnan(traced[-1]))
