"""Transport maps: closed forms against the numerical map, monotonicity, range, tails, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import latentot as lo
from tests.references import SHIFTED, STANDARD, USER, name

WEIGHTS_2 = [[0.5, 0.5], [0.95, 0.05], [0.25, 0.75], [1.0, 0.0], [1.0, 2.0], [1.0, -1.0]]
WEIGHTS_N = [[-1.0, 1.0, 1.0], [0.25, 0.25, 0.25, 0.25], [0.2, 0.3, 0.5]]


def _y_grid(prior, w, halfwidth, n=2001):
    """A grid over the body of Y = Σ w_k Z_k: its centre ± halfwidth · scale · Σ|w_k|."""
    loc, scale = float(prior.loc), float(prior.scale)
    mid, half = loc * float(jnp.sum(w)), halfwidth * scale * float(jnp.sum(jnp.abs(w)))
    return jnp.linspace(mid - half, mid + half, n)[:, None]


# Tolerance 1e-4 in the prior's own units (× scale), i.e. exactly 1e-4 for the standard priors.
@pytest.mark.parametrize(
    "prior",
    [lo.Gaussian(), lo.Cauchy(), lo.Gaussian(1.0, 3.0), lo.Cauchy(-1.0, 0.5)],
    ids=name,
)
@pytest.mark.parametrize("w", WEIGHTS_2 + WEIGHTS_N, ids=str)
def test_stable_closed_forms_agree_with_numerical_map(prior, w):
    w = jnp.asarray(w)
    y = _y_grid(prior, w, 5.0)
    closed = lo.transport_map(prior, w, method="closed")(y)
    numerical = lo.transport_map(prior, w, method="numerical")(y)
    assert float(jnp.max(jnp.abs(closed - numerical))) < 1e-4 * float(prior.scale)


@pytest.mark.parametrize("prior", [lo.Uniform(), lo.Uniform(-0.5, 3.0)], ids=name)
@pytest.mark.parametrize("w", WEIGHTS_2, ids=str)
def test_uniform_closed_form_agrees_with_numerical_map(prior, w):
    w = jnp.asarray(w)
    y = _y_grid(prior, w, 1.2, 4001)
    closed = lo.transport_map(prior, w, method="closed")(y)
    numerical = lo.transport_map(prior, w, method="numerical")(y)
    assert float(jnp.max(jnp.abs(closed - numerical))) < 1e-4 * float(prior.scale)


def test_uniform_closed_form_is_the_papers_formula():
    """F_Y of the formula sheet, written out independently, then F_Z⁻¹(p) = 2p - 1."""
    for t in [0.05, 0.25, 0.5, 0.9]:
        a, b = max(t, 1 - t), min(t, 1 - t)
        y = np.linspace(-1, 1, 1001)
        F = np.where(
            y <= b - a,
            (y + 1) ** 2 / (8 * a * b),
            np.where(y <= a - b, (y + a) / (2 * a), 1 - (1 - y) ** 2 / (8 * a * b)),
        )
        got = lo.transport_map(lo.Uniform(), jnp.asarray([1 - t, t]))(jnp.asarray(y)[:, None])
        np.testing.assert_allclose(got[:, 0], 2 * F - 1, atol=2e-6)


@pytest.mark.parametrize("prior", STANDARD + SHIFTED + USER, ids=name)
@pytest.mark.parametrize(
    "w", [[0.7, 0.3], [-1.0, 1.0, 1.0], [0.25, 0.25, 0.25, 0.25], [1.0, 2.0]], ids=str
)
def test_maps_are_monotone_finite_and_in_range(prior, w):
    T = lo.transport_map(prior, jnp.asarray(w))
    y = jnp.concatenate(
        [-jnp.geomspace(1e6, 1e-3, 400), jnp.linspace(-5, 5, 1001), jnp.geomspace(1e-3, 1e6, 400)]
    )
    y = jnp.sort(y)[:, None]
    out = T(y)[:, 0]
    assert bool(jnp.all(jnp.isfinite(out)))
    assert bool(jnp.all(jnp.diff(out) >= 0))
    lo_, hi_ = lo.priors.support(prior)
    assert float(out.min()) >= float(lo_) and float(out.max()) <= float(hi_)


def test_uniform_exact_endpoints():
    p = lo.Uniform()
    z = jnp.asarray([[-1.0, 1.0, -1.0, 1.0]])
    for t in [0.0, 0.3, 0.5, 1.0]:
        out = lo.matched_lerp(p, z, -z, t)
        assert bool(jnp.all(jnp.isfinite(out))) and float(jnp.max(jnp.abs(out))) <= 1.0


@pytest.mark.parametrize(
    "prior", [lo.Cauchy(), lo.Laplace(), lo.Logistic(), lo.Gaussian()], ids=name
)
def test_huge_inputs_stay_finite(prior):
    z0 = jnp.asarray([[1e6, -1e6, 0.0, 3.0]])
    z1 = jnp.asarray([[-1e6, -1e6, 1e6, -3.0]])
    for t in [0.0, 0.25, 0.5, 1.0]:
        assert bool(jnp.all(jnp.isfinite(lo.matched_lerp(prior, z0, z1, t))))
    assert bool(jnp.all(jnp.isfinite(lo.matched_analogy(prior, z0, z1, z0))))


@pytest.mark.parametrize("prior", STANDARD, ids=name)
def test_quantiles_near_0_and_1_stay_finite(prior):
    u = jnp.asarray([1e-7, 1e-6, 0.5, 1 - 1e-6, 1 - 1e-7], jnp.float32)
    z = prior.icdf(u)[None, :]
    assert bool(jnp.all(jnp.isfinite(z)))
    for w in ([0.5, 0.5], [1.0, 1.0, -1.0]):
        T = lo.transport_map(prior, jnp.asarray(w), method="numerical")
        assert bool(jnp.all(jnp.isfinite(T(z))))


def test_numerical_map_is_accurate_in_float64(x64):
    p = lo.Gaussian()
    w = jnp.asarray([0.3, 0.7], jnp.float64)
    y = jnp.linspace(-6, 6, 1001, dtype=jnp.float64)[:, None]
    T = lo.transport_map(p, w, method="numerical")
    out = T(y)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, y / jnp.sqrt(0.58), atol=1e-7)


def test_batched_weights_broadcast_against_points():
    p = lo.Laplace()
    ts = jnp.asarray([0.1, 0.5, 0.8])[:, None]  # batch shape [3, 1] against points [3, 7]
    T = lo.transport_map(p, jnp.stack([1 - ts, ts], -1))
    y = jnp.linspace(-3, 3, 7)
    out = T(jnp.broadcast_to(y, (3, 7))[..., None])[..., 0]
    for i, t in enumerate(ts[:, 0]):
        single = lo.transport_map(p, jnp.asarray([1 - t, t]))(y[:, None])[:, 0]
        np.testing.assert_allclose(out[i], single, rtol=1e-6, atol=1e-6)


def test_method_validation():
    with pytest.raises(ValueError, match="no closed-form"):
        lo.transport_map(lo.Laplace(), jnp.asarray([0.5, 0.5]), method="closed")
    with pytest.raises(ValueError, match="method"):
        lo.transport_map(lo.Gaussian(), jnp.asarray([0.5, 0.5]), method="exact")
    with pytest.raises(ValueError, match="weights"):
        lo.transport_map(lo.Gaussian(), jnp.asarray([0.0, 0.0]))
    with pytest.raises(ValueError, match="weights"):
        lo.transport_map(lo.Gaussian(), jnp.float32(0.5))
    with pytest.raises(TypeError, match="icdf"):
        lo.transport_map(object(), jnp.asarray([0.5, 0.5]))


def test_map_is_a_pytree_usable_in_jit():
    T = lo.transport_map(lo.Logistic(), jnp.asarray([0.5, 0.5]))
    y = jnp.linspace(-4, 4, 9)[:, None]
    np.testing.assert_allclose(jax.jit(lambda T, y: T(y))(T, y), T(y), rtol=1e-6)
