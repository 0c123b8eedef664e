"""FFT-lattice transport maps: closed forms, the quadrature map, tails, dtypes, jit/vmap/grad."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

import latentot as lo
from tests.references import STANDARD, USER, Gumbel, StudentT2, name, scipy_law

WEIGHTS_2 = [[0.5, 0.5], [0.95, 0.05], [0.25, 0.75], [1.0, 0.0], [1.0, 2.0], [1.0, -1.0]]
WEIGHTS_N = [[-1.0, 1.0, 1.0], [0.25, 0.25, 0.25, 0.25], [-0.0625, 0.5625] * 2]


def _fft(prior, w, y):
    return lo.transport_map(prior, jnp.asarray(w), method="fft")(y)


@pytest.mark.parametrize("prior", [lo.Gaussian(1.0, 3.0)], ids=name)
@pytest.mark.parametrize("w", WEIGHTS_2 + WEIGHTS_N, ids=str)
def test_gaussian_closed_form(prior, w):
    """y / ‖w‖₂ to 1e-4 (× scale) over ±6 standard deviations of Y (tail probability 1e-9)."""
    w = jnp.asarray(w)
    sd = float(prior.scale) * float(jnp.linalg.norm(w))
    mid = float(prior.loc) * float(jnp.sum(w))
    y = jnp.linspace(mid - 6 * sd, mid + 6 * sd, 2001)[:, None]
    closed = lo.transport_map(prior, w, method="closed")(y)
    assert float(jnp.max(jnp.abs(_fft(prior, w, y) - closed))) < 1e-4 * float(prior.scale)


@pytest.mark.parametrize("prior", [lo.Uniform(-0.5, 3.0)], ids=name)
@pytest.mark.parametrize("w", WEIGHTS_2, ids=str)
def test_uniform_pair_closed_form(prior, w):
    w = jnp.asarray(w)
    half = 1.2 * float(prior.scale) * float(jnp.sum(jnp.abs(w)))
    mid = float(prior.loc) * float(jnp.sum(w))
    y = jnp.linspace(mid - half, mid + half, 4001)[:, None]
    closed = lo.transport_map(prior, w, method="closed")(y)
    assert float(jnp.max(jnp.abs(_fft(prior, w, y) - closed))) < 1e-4 * float(prior.scale)


def test_laplace_pair_closed_form():
    """Y = (Z₁ + Z₂)/2, Laplace: 1 - F_Y(y) = e^{-2y}(1 + y)/2 for y >= 0 (scipy for F_Z⁻¹)."""
    y = np.linspace(-12, 12, 2001)
    a = np.abs(y)
    tail = 0.5 * np.exp(-2 * a) * (1 + a)
    ref = np.sign(y) * -st.laplace.ppf(tail)
    got = _fft(lo.Laplace(), [0.5, 0.5], jnp.asarray(y, jnp.float32)[:, None])[:, 0]
    # 1e-4, relative in the far tail (T = 21 at y = 12, where 1 - F_Y = 2.4e-10)
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize(
    "prior, w",
    [
        (lo.Laplace(), [0.25, 0.25, 0.25, 0.25]),
        (lo.Laplace(), [-1.0, 1.0, 1.0]),
        (lo.Logistic(), [0.7, 0.3]),
        (Gumbel(), [-1.0, 1.0, 1.0]),
    ],
    ids=lambda v: name(v) if not isinstance(v, list) else str(v),
)
def test_agrees_with_the_quadrature_map(prior, w):
    """Both numerical maps, built independently, agree to 3e-4 where T(y) lies inside the
    prior's 1e-6 quantiles. A prior without ``sf`` (Gumbel here) has only 1 - cdf in its upper
    tail, good to 6e-8 absolute in float32, which limits both maps wherever that tail enters
    (either tail of Y once a weight is negative), so it is compared inside its 1e-3 quantiles.
    The residual is the lattice's O(h²) discretisation."""
    w = jnp.asarray(w)
    quad = lo.transport_map(prior, w, method="quadrature")
    law = scipy_law(prior)
    cut = 1e-6 if hasattr(prior, "sf") else 1e-3
    low, high = law.ppf(cut), law.isf(cut)
    reach = max(-low, high) * float(jnp.sum(jnp.abs(w)))
    y = jnp.linspace(-reach, reach, 2001)[:, None]
    fq = np.asarray(quad(y))[:, 0]
    body = (fq >= low) & (fq <= high)
    err = np.abs(np.asarray(_fft(prior, w, y))[:, 0] - fq)[body]
    assert err.max() < 3e-4


@pytest.mark.parametrize("prior", STANDARD + USER, ids=name)
@pytest.mark.parametrize("w", [[-1.0, 0.5, 0.25, 0.25]], ids=str)
def test_tails_are_finite_monotone_and_linear(prior, w):
    """No NaN/inf up to |y| = 1e30, monotone, in the support, and linear far out."""
    T = lo.transport_map(prior, jnp.asarray(w), method="fft")
    big = jnp.geomspace(1e-3, 1e30, 300)
    y = jnp.sort(jnp.concatenate([-big, jnp.linspace(-5, 5, 1001), big]))[:, None]
    out = T(y)[:, 0]
    assert bool(jnp.all(jnp.isfinite(out)))
    assert bool(jnp.all(jnp.diff(out) >= 0))
    low, high = lo.priors.support(prior)
    assert float(out.min()) >= float(low) and float(out.max()) <= float(high)
    if not isinstance(prior, lo.Uniform):  # beyond the lattice, T continues linearly
        far = jnp.asarray([1e3, 2e3, 3e3])[:, None]
        t = T(far)[:, 0]
        np.testing.assert_allclose(t[2] - t[1], t[1] - t[0], rtol=1e-3)


def test_float64(x64):
    """In float64 the lattice map is exact to 1e-11 over ±6 standard deviations of Y."""
    w = jnp.asarray([0.3, 0.7], jnp.float64)
    sd = np.sqrt(0.58)
    y = jnp.linspace(-6 * sd, 6 * sd, 1001, dtype=jnp.float64)[:, None]
    out = lo.transport_map(lo.Gaussian(), w, method="fft")(y)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, y / sd, atol=1e-11)


def test_jit_vmap_and_grad():
    p = lo.Laplace()
    ts = jnp.asarray([0.1, 0.5, 0.8])
    y = jnp.linspace(-3, 3, 7)[:, None]

    def one(t):
        return lo.transport_map(p, jnp.stack([1 - t, t]), method="fft")(y)[:, 0]

    batched = jax.jit(jax.vmap(one))(ts)
    for i, t in enumerate(ts):
        np.testing.assert_allclose(batched[i], one(t), rtol=1e-5, atol=1e-5)
    # d T(y) / dy is the table's slope: finite and positive.
    T = lo.transport_map(p, jnp.asarray([0.5, 0.5]))
    g = jax.grad(lambda v: jnp.sum(T(v)))(y)
    assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.all(g > 0))


def test_repeated_weight_vectors_share_one_build():
    """Concrete weights: one table per distinct multiset, shared by the batch entries in order."""
    p = lo.Logistic()
    w = jnp.asarray([[0.2, 0.8], [0.8, 0.2], [0.5, 0.5], [0.2, 0.8]])
    T = lo.transport_map(p, w[:, None, :])  # batch [4, 1] against points [4, 9]
    assert T.standard.A.shape[0] == 2  # {0.2, 0.8} and {0.5, 0.5}
    assert T.standard.rows.shape == (4, 1)
    np.testing.assert_array_equal(T.standard.rows[:, 0], [0, 0, 1, 0])
    y = jnp.linspace(-4, 4, 9)
    out = T(jnp.broadcast_to(y, (4, 9))[..., None])[..., 0]
    for i in range(4):
        single = lo.transport_map(p, w[i])(y[:, None])[:, 0]
        np.testing.assert_allclose(out[i], single, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[0], out[1])


def test_heavy_tails_use_the_quadrature_map():
    assert isinstance(
        lo.transport_map(StudentT2(), jnp.ones(3)).standard, lo.transport.TabulatedMap
    )
    assert isinstance(lo.transport_map(Gumbel(), jnp.ones(3)).standard, lo.transport.LatticeMap)
    assert not lo.convolution.light_tailed(lo.Cauchy())


def test_one_nonzero_weight_is_the_exact_scaling():
    p = lo.Logistic()
    y = jnp.linspace(-30, 30, 61)[:, None]
    np.testing.assert_allclose(_fft(p, [0.0, 2.0, 0.0], y), y / 2, rtol=1e-6, atol=1e-6)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _ScaledLogistic:
    """A logistic law of scale s as a pytree prior with a parameter and no ``standard()``."""

    s: Any

    def sample(self, rng, shape, dtype=None):
        return self.s * jax.random.logistic(rng, shape, dtype or jnp.result_type(float))

    def log_prob(self, x):
        return -jnp.abs(x) / self.s - 2 * jnp.log1p(jnp.exp(-jnp.abs(x) / self.s)) - jnp.log(self.s)

    def cdf(self, x):
        return jax.nn.sigmoid(x / self.s)

    def icdf(self, u):
        return self.s * (jnp.log(u) - jnp.log1p(-u))


@pytest.mark.parametrize("prior", [lo.Laplace(), Gumbel()], ids=name)
def test_concrete_weights_build_the_tables_while_tracing(prior):
    """Under jit, a grid's tables are constants of the program (no FFT runs per call)."""
    corners = prior.sample(jax.random.key(0), (4, 8))
    grid = jax.jit(lambda c: lo.matched_grid(prior, c, 4))
    assert "fft" not in grid.lower(corners).as_text().lower()
    eager = lo.matched_grid(prior, corners, 4)
    np.testing.assert_allclose(grid(corners), eager, rtol=1e-6, atol=1e-6)
    # The traced-weight build (one table per frame, inside the program) agrees.
    w = jnp.asarray(lo.ops.bilinear_weights(4, jnp.float32)).reshape(4, 4, 4)
    traced = jax.jit(lambda w: lo.transport_map(prior, w, method="fft"))(w)
    assert "fft" in jax.jit(lambda w: lo.transport_map(prior, w, method="fft")).lower(w).as_text()
    np.testing.assert_allclose(traced(lo.grid(corners, 4)), eager, rtol=1e-5, atol=1e-5)


def test_table_cache_is_keyed_by_the_prior_parameters():
    """Same weights, another scale: T_s(y) = s · T_1(y / s) exactly (a scale family)."""
    w = jnp.asarray([[0.3, 0.7, 0.2], [0.5, 0.5, 0.5]])
    y = jnp.linspace(-6, 6, 121)[None, :, None]
    one = lo.transport_map(_ScaledLogistic(1.0), w[:, None, :])(y)[..., 0]
    two = lo.transport_map(_ScaledLogistic(2.0), w[:, None, :])(y)[..., 0]
    np.testing.assert_allclose(
        two,
        2 * lo.transport_map(_ScaledLogistic(1.0), w[:, None, :])(y / 2)[..., 0],
        rtol=1e-5,
        atol=1e-5,
    )
    assert float(jnp.max(jnp.abs(two - one))) > 0.1  # a shared table would have matched `one`
    # Traced parameters: the tables are built inside the program, with the same values.
    traced = jax.jit(lambda s: lo.transport_map(_ScaledLogistic(s), w[:, None, :])(y))(2.0)
    np.testing.assert_allclose(traced[..., 0], two, rtol=1e-5, atol=1e-5)


def test_table_cache_stays_within_its_budget(monkeypatch):
    p = lo.Logistic()
    y = jnp.linspace(-5, 5, 11)[:, None]
    one = lo.transport_map(p, jnp.asarray([0.1, 0.9]))
    table = one.standard.A.nbytes + one.standard.B.nbytes
    monkeypatch.setattr(lo.transport, "_CACHE_BYTES", 2 * table + 100)
    maps = [lo.transport_map(p, jnp.asarray([0.1 * i, 1.0])) for i in range(2, 6)]
    cache = lo.transport._CACHE
    assert sum(x.nbytes for v in cache.values() for x in v) <= 2 * table + 100
    # Evicted or not, every map is the map of its own weights.
    fresh = jax.jit(lambda w: lo.transport_map(p, w, method="fft"))  # traced: no cache
    for i, T in zip(range(2, 6), maps, strict=True):
        np.testing.assert_allclose(
            T(y), fresh(jnp.asarray([0.1 * i, 1.0]))(y), rtol=1e-5, atol=1e-5
        )
