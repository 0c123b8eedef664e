"""Matched operators: the output has the prior's law (KS vs scipy), and the raw ones do not."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import kstest

import latentot as lo
from tests.references import SHIFTED, STANDARD, USER, name, scipy_law

N, D = 2_000, 100  # 200k output components per case
KS_MAX = 0.005


def _draws(prior, k, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), k)
    return [prior.sample(key, (N, D)) for key in keys]


def _case(prior, case):
    """(matched output, raw output, raw weights or None) for one named case."""
    rng = jax.random.PRNGKey(7)
    z = _draws(prior, 4)
    kind, arg = case
    if kind == "lerp":
        return lo.matched_lerp(prior, z[0], z[1], arg), lo.lerp(z[0], z[1], arg), [1 - arg, arg]
    if kind == "analogy":
        return lo.matched_analogy(prior, *z[:3]), lo.analogy(*z[:3]), [-1, 1, 1]
    if kind == "combine":
        w = jnp.asarray([0.2, 0.5, 0.3])
        zs = jnp.stack(z[:3])
        return lo.matched_combine(prior, zs, w), lo.combine(zs, w), [0.2, 0.5, 0.3]
    if kind == "vicinity":
        m = lo.matched_vicinity(rng, prior, z[0][:400], arg, 5)
        return m, lo.vicinity(rng, prior, z[0][:400], arg, 5), [1, arg]
    if kind == "walk":
        m = lo.matched_random_walk(rng, prior, z[0], 0.5, 100)[-1]
        return m, lo.random_walk(rng, prior, z[0], 0.5, 100)[-1], None
    if kind == "grid":
        corners = jnp.stack([zi.reshape(-1) for zi in z], 0)  # [4, N·D]
        m = lo.matched_grid(prior, corners, 3)[1, 1]
        return m, lo.grid(corners, 3)[1, 1], [0.25] * 4
    raise AssertionError(case)


CASES = [
    ("lerp", 0.05),
    ("lerp", 0.25),
    ("lerp", 0.5),
    ("lerp", 0.9),
    ("analogy", None),
    ("combine", None),
    ("vicinity", 0.1),
    ("vicinity", 0.5),
    ("vicinity", 2.0),
    ("walk", None),
    ("grid", None),
]
SHIFTED_CASES = [("lerp", 0.25), ("analogy", None), ("vicinity", 0.5), ("grid", None)]


def _ks(x, prior):
    return kstest(np.asarray(x, np.float64).ravel(), scipy_law(prior).cdf).statistic


def _raw_keeps_law(prior, weights):
    """Cases where the raw operation already has the prior's law (so it cannot fail the test)."""
    if weights is None:
        return False
    w = np.asarray(weights, float)
    cauchy = isinstance(prior, lo.Cauchy) and np.all(w >= 0) and np.isclose(w.sum(), 1)
    return bool(cauchy)


# Raw operations whose law is too close to the prior for 200k samples to tell apart at 0.005:
# a vicinity step of eps = 0.1 changes a Gaussian's scale by only 0.5%.
_RAW_TOO_CLOSE = {("vicinity", 0.1)}


def _check(prior, case):
    matched, raw, weights = _case(prior, case)
    assert matched.size >= 200_000
    assert np.all(np.isfinite(np.asarray(matched)))
    ks = _ks(matched, prior)
    assert ks < KS_MAX, f"matched {case}: KS {ks:.4f}"
    if _raw_keeps_law(prior, weights):
        assert _ks(raw, prior) < KS_MAX  # Cauchy is stable under convex combinations
    elif case not in _RAW_TOO_CLOSE:
        raw_ks = _ks(raw, prior)
        assert raw_ks > KS_MAX, f"raw {case} is not detected: KS {raw_ks:.4f}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("prior", STANDARD, ids=name)
def test_matched_ops_keep_the_prior(prior, case):
    _check(prior, case)


@pytest.mark.parametrize("case", SHIFTED_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("prior", SHIFTED + USER, ids=name)
def test_matched_ops_keep_loc_scale_and_user_priors(prior, case):
    _check(prior, case)


def test_per_component_loc_and_scale():
    loc = jnp.linspace(-2.0, 2.0, D)
    scale = jnp.linspace(0.5, 3.0, D)
    prior = lo.Laplace(loc, scale)
    z0, z1 = _draws(prior, 2)
    y = lo.matched_lerp(prior, z0, z1, 0.3)
    u = lo.Laplace().cdf((y - loc) / scale)  # back to the standard law, component by component
    assert kstest(np.asarray(u).ravel(), "uniform").statistic < KS_MAX


@pytest.mark.parametrize("prior", STANDARD + USER, ids=name)
def test_lerp_endpoints(prior):
    z0, z1 = (z[:50] for z in _draws(prior, 2))
    np.testing.assert_allclose(lo.matched_lerp(prior, z0, z1, 0.0), z0, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(lo.matched_lerp(prior, z0, z1, 1.0), z1, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prior", STANDARD + USER, ids=name)
def test_grid_corners_equal_the_corners(prior):
    corners = prior.sample(jax.random.PRNGKey(3), (4, 16))
    g = lo.matched_grid(prior, corners, 5)
    got = jnp.stack([g[0, 0], g[0, -1], g[-1, 0], g[-1, -1]])
    np.testing.assert_allclose(got, corners, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prior", STANDARD, ids=name)
def test_random_walk_starts_at_z0_and_uses_the_raw_draws(prior):
    z0 = prior.sample(jax.random.PRNGKey(0), (3, 4))
    rng = jax.random.PRNGKey(1)
    walk = lo.matched_random_walk(rng, prior, z0, 0.3, 5)
    raw = lo.random_walk(rng, prior, z0, 0.3, 5)
    assert walk.shape == raw.shape == (6, 3, 4)
    np.testing.assert_array_equal(walk[0], z0)
    # one matched step is the matched vicinity of the previous point with the same draw
    step = lo.transport_map(prior, jnp.asarray([1.0, 0.3]))(raw[1])
    np.testing.assert_allclose(walk[1], step, rtol=1e-6, atol=1e-6)


def test_gaussian_closed_forms_of_the_paper():
    """Lerp y/√((1-t)²+t²), vicinity y/√(1+ε²), analogy μ + (y-μ)/√3 (formula sheet §1)."""
    p = lo.Gaussian(0.5, 2.0)
    z = _draws(p, 3)
    t = 0.3
    np.testing.assert_allclose(
        lo.matched_lerp(p, z[0], z[1], t),
        0.5 + (lo.lerp(z[0], z[1], t) - 0.5) / np.sqrt((1 - t) ** 2 + t**2),
        rtol=1e-5,
        atol=1e-5,
    )
    y = lo.analogy(*z)
    np.testing.assert_allclose(
        lo.matched_analogy(p, *z), 0.5 + (y - 0.5) / np.sqrt(3), rtol=1e-5, atol=1e-5
    )
    rng = jax.random.PRNGKey(2)
    yv = lo.vicinity(rng, p, z[0][:10], 0.5, 3)
    np.testing.assert_allclose(
        lo.matched_vicinity(rng, p, z[0][:10], 0.5, 3),
        0.5 + (yv - 0.5 * 1.5) / np.sqrt(1.25),
        rtol=1e-5,
        atol=1e-5,
    )


def test_cauchy_lerp_is_already_matched():
    p = lo.Cauchy()
    z0, z1 = _draws(p, 2)
    np.testing.assert_allclose(lo.matched_lerp(p, z0, z1, 0.3), lo.lerp(z0, z1, 0.3), rtol=1e-6)


@pytest.mark.parametrize("prior", [lo.Uniform(), lo.Laplace(), *USER], ids=name)
def test_matched_mean_has_the_prior_law(prior):
    zs = jnp.stack(_draws(prior, 5))
    mean = lo.matched_mean(prior, zs)
    assert mean.shape == (N, D)
    assert _ks(mean, prior) < KS_MAX
    assert _ks(jnp.mean(zs, 0), prior) > KS_MAX or _raw_keeps_law(prior, [0.2] * 5)


def test_matched_mean_gaussian_closed_form():
    p = lo.Gaussian(1.0, 2.0)
    zs = jnp.stack(_draws(p, 4))[:, :10]
    np.testing.assert_allclose(
        lo.matched_mean(p, zs), 1.0 + (jnp.mean(zs, 0) - 1.0) * 2.0, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(lo.matched_mean(p, zs[:1]), zs[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "prior, convex", [(lo.Laplace(), False), (USER[1], True)], ids=["Laplace-span", "Gumbel-convex"]
)
def test_matched_subspace_points_have_the_prior_law(prior, convex):
    zs = jnp.stack(_draws(prior, 3))
    rng = jax.random.PRNGKey(5)
    pts = lo.matched_subspace(rng, prior, zs, 3, convex=convex)
    assert pts.shape == (3, N, D)
    for p in pts:
        assert _ks(p, prior) < KS_MAX
    # documented coefficients: i.i.d. N(0, 1) (or Dirichlet(1, ..., 1)) from rng, one row per point
    c = jax.random.dirichlet(rng, jnp.ones(3), (3,)) if convex else jax.random.normal(rng, (3, 3))
    if convex:
        assert bool(jnp.all(c >= 0)) and np.allclose(c.sum(-1), 1, atol=1e-6)
    expected = lo.matched_combine(prior, zs[:, :5], c[1])
    np.testing.assert_allclose(pts[1, :5], expected, rtol=1e-5, atol=1e-5)


def test_batched_grid_is_a_grid_per_batch_entry():
    p = lo.Logistic()
    corners = p.sample(jax.random.PRNGKey(4), (4, 3, 16))
    g = jax.jit(lambda c: lo.matched_grid(p, c, 4))(corners)
    assert g.shape == (4, 4, 3, 16)
    for b in range(3):
        np.testing.assert_allclose(
            g[:, :, b], lo.matched_grid(p, corners[:, b], 4), rtol=1e-5, atol=1e-5
        )
    raw = lo.grid(corners, 4)
    np.testing.assert_allclose(raw[:, :, 1], lo.grid(corners[:, 1], 4), rtol=1e-6, atol=1e-6)


def test_mean_and_subspace_bad_input():
    with pytest.raises(ValueError, match="zs"):
        lo.matched_mean(lo.Laplace(), jnp.zeros(3))
    with pytest.raises(ValueError, match="zs"):
        jax.jit(lambda: lo.matched_subspace(jax.random.PRNGKey(0), lo.Laplace(), jnp.zeros(3), 2))()
    with pytest.raises(ValueError, match="num"):
        lo.matched_subspace(jax.random.PRNGKey(0), lo.Laplace(), jnp.zeros((2, 3)), 0)


# --------------------------------------------------------------------------------------------
# A LatentMap (an AE-OT sampler) in the prior's place: the operations act on its noise.


def _energy_distance(x, y):
    def mean_dist(u, v):
        return jnp.mean(jnp.linalg.norm(u[:, None] - v[None], axis=-1))

    return float(2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y))


@pytest.mark.slow  # an AE-OT fit and Newton inverses: ~50 s on 2 cores; run with -m slow
@pytest.mark.heavy
def test_sampler_in_the_priors_place_keeps_the_codes_law():
    from latentot import aeot
    from tests import fitted

    sampler = fitted.clusters()[0]
    assert isinstance(sampler, lo.LatentMap) and not isinstance(lo.Gaussian(), lo.LatentMap)
    assert isinstance(sampler, aeot.Sampler)
    n = 800
    y = sampler.sample(jax.random.key(11), 3 * n)
    a, b, ref = y[:n], y[n : 2 * n], y[2 * n :]
    matched = lo.matched_lerp(sampler, a, b, 0.5)
    linear = lo.lerp(a, b, 0.5)
    own = sampler.sample(jax.random.key(12), n)
    e_matched, e_linear, e_own = (_energy_distance(v, ref) for v in (matched, linear, own))
    # Matched midpoints have the codes' law (as close to it as fresh samples, up to noise);
    # linear midpoints fall between the clusters.
    assert e_matched < 4 * e_own + 0.01 and e_linear > 5 * e_matched, (e_matched, e_linear, e_own)
    # The meaning: T(matched_op(prior, T⁻¹(y₀), T⁻¹(y₁))).
    # (Same shapes: a map that is not injective gives a code several preimages, and a batch of
    # another size may round its way to another one.)
    n0, n1 = sampler.inverse_transport(a[:8]), sampler.inverse_transport(b[:8])
    want = sampler.transport(lo.matched_lerp(sampler.prior, n0, n1, 0.5))
    got = lo.matched_lerp(sampler, a[:8], b[:8], 0.5)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


@pytest.mark.slow  # minutes of fitting and Newton on 2 cores: run with -m slow
@pytest.mark.heavy
def test_sampler_endpoints_corners_and_keyframes_come_back():
    from tests import fitted

    sampler = fitted.clusters()[0]
    y = sampler.sample(jax.random.key(13), 64)
    _, info = sampler.inverse_transport(y, return_info=True)
    y = y[np.asarray(info.converged)][:8]  # codes with an exact preimage
    tol = 2e-2 * float(jnp.sqrt(jnp.mean(jnp.var(y, axis=0))))
    ends = jax.vmap(lambda t: lo.matched_lerp(sampler, y[:4], y[4:8], t))(jnp.asarray([0.0, 1.0]))
    np.testing.assert_allclose(np.asarray(ends), np.asarray(jnp.stack([y[:4], y[4:8]])), atol=tol)
    g = lo.matched_grid(sampler, y[:4], 3)
    corners = jnp.stack([g[0, 0], g[0, -1], g[-1, 0], g[-1, -1]])
    np.testing.assert_allclose(np.asarray(corners), np.asarray(y[:4]), atol=tol)
    keys = lo.matched_spline(sampler, y[:5], np.arange(5.0))
    np.testing.assert_allclose(np.asarray(keys), np.asarray(y[:5]), atol=tol)
    # Every operator, shapes as with a prior, under jit.
    rng = jax.random.key(0)
    jitted = jax.jit(lambda s, a, b: lo.matched_lerp(s, a, b, 0.3))(sampler, y[:2], y[2:4])
    assert jitted.shape == (2, 4)
    assert lo.matched_mean(sampler, y[:3]).shape == (4,)
    assert lo.matched_combine(sampler, y[:3], jnp.asarray([0.2, 0.3, 0.5])).shape == (4,)
    assert lo.matched_analogy(sampler, y[0], y[1], y[2]).shape == (4,)
    assert lo.matched_subspace(rng, sampler, y[:3], 5).shape == (5, 4)
    assert lo.matched_vicinity(rng, sampler, y[:2], 0.1, 3).shape == (3, 2, 4)
    walk = lo.matched_random_walk(rng, sampler, y[0], 0.1, 4)
    assert walk.shape == (5, 4) and np.all(np.isfinite(np.asarray(walk)))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        lo.matched_lerp(sampler, y[:, :3], y[:, :3], 0.5)
