"""aeot.transport_gap: the cyclical-monotonicity gap and the Monge gap of a map, against optimal
maps (gap 0), non-monotone maps with closed-form or brute-force assignments, and ott-jax."""

import itertools
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentot import Gaussian, aeot
from latentot._promotion import third_party_promotion
from latentot.aeot.potential import Potential

D = 8


def _spd(d, seed=0, spread=10.0):
    """A symmetric positive definite matrix with eigenvalues spread over ``spread``."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.geomspace(1.0, spread, d)) @ q.T


def _as_sampler(fn, d=D, prior=None):
    return SimpleNamespace(prior=prior or Gaussian(), dim=d, transport=jax.jit(fn))


def _brute(x, y):
    """max over all permutations of Σ⟨xᵢ, y_σ(i)⟩ (uncentred) and its argmax, by enumeration."""
    n = len(x)
    m = np.asarray(x, np.float64) @ np.asarray(y, np.float64).T
    best = max(itertools.permutations(range(n)), key=lambda p: m[np.arange(n), list(p)].sum())
    return m[np.arange(n), list(best)].sum(), np.array(best)


A = _spd(D)
SHIFT = np.linspace(-1.0, 2.0, D)
U = np.linspace(0.5, 1.5, D) / np.sqrt(D)

OPTIMAL_MAPS = {
    # the Bures map between N(0, I) and N(m, A²): the gradient of ½ xᵀ A x + mᵀ x
    "bures": lambda x: x @ jnp.asarray(A, x.dtype) + jnp.asarray(SHIFT, x.dtype),
    # increasing in each coordinate: the gradient of a separable convex function
    "componentwise": lambda x: jnp.sinh(x) + 0.1 * x**3 + jnp.arange(D, dtype=x.dtype),
    # x + ∇(3 softplus(uᵀx)): the gradient of the convex ½‖x‖² + 3 softplus(uᵀx)
    "softplus_ridge": lambda x: (
        x + 3.0 * jax.nn.sigmoid(x @ jnp.asarray(U, x.dtype))[:, None] * jnp.asarray(U, x.dtype)
    ),
    # a step function, nondecreasing per coordinate (the gradient of a convex piecewise-linear
    # function): its images tie exactly, and ties must not count as reassignments
    "steps": lambda x: jnp.round(2.0 * x),
    # a constant map (the gradient of a linear function): every assignment is optimal
    "constant": lambda x: jnp.zeros_like(x) + 3.0,
}


@pytest.mark.parametrize("name", sorted(OPTIMAL_MAPS))
def test_optimal_maps_have_gap_zero(name):
    g = aeot.transport_gap(_as_sampler(OPTIMAL_MAPS[name]), jax.random.key(0), 512)
    assert g.gap <= 1e-6, g
    assert g.reassigned == 0.0, g
    assert g.n == 512
    # the Monge gap of an optimal map is its entropic bias, between ε log n and 2 ε log n
    assert g.monge_converged
    bias = g.epsilon * math.log(g.n)
    assert (
        bias * (1 - 1e-3) - 1e-4 * g.scale <= g.monge_gap <= 2 * bias * (1 + 1e-3) + 1e-4 * g.scale
    )
    assert abs(g.monge_gap_relative) <= bias / max(g.scale, 1e-30) + 1e-4


def _rotation90(x):
    """A rotation by 90° in each coordinate plane (0, 1), (2, 3), ...: ⟨x, T(x)⟩ = 0."""
    pairs = x.reshape(x.shape[0], -1, 2)
    return jnp.stack([-pairs[..., 1], pairs[..., 0]], -1).reshape(x.shape)


def test_rotation_by_90_degrees_has_gap_one():
    # Σ⟨x̃ᵢ, T(x̃ᵢ)⟩ = 0 exactly for a rotation by 90°, so the gap is 1 − 0 / max = 1.
    g = aeot.transport_gap(_as_sampler(_rotation90), jax.random.key(1), 256, monge=False)
    assert g.gap == pytest.approx(1.0, abs=1e-9)
    assert g.reassigned > 0.9
    assert math.isnan(g.monge_gap) and math.isnan(g.monge_gap_relative)


def test_reflection_has_gap_above_one():
    # T(x) = −x: S(id) = −Σ‖x̃ᵢ‖² < 0 < max S, so the gap is 1 + Σ‖x̃ᵢ‖² / max S > 1.
    x = jax.random.normal(jax.random.key(2), (200, D))
    g = aeot.transport_gap_from_samples(x, -x, monge=False)
    xc = np.asarray(x, np.float64) - np.asarray(x, np.float64).mean(0)
    top = g.scale * g.n / 2
    assert g.gap == pytest.approx(1.0 + np.sum(xc**2) / top, rel=1e-9)
    assert g.gap > 1.5


def test_one_dimensional_gap_matches_sorting():
    # In one dimension the optimal assignment pairs the sorted x with the sorted y (the
    # rearrangement inequality): an independent closed form for max_σ S.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 1))
    for y in (np.sin(3 * x) + 0.1 * x, np.where(x < 0, x + 4.0, x - 4.0), -(x**3)):
        g = aeot.transport_gap_from_samples(x, y, monge=False, rtol=0.0)
        xc, yc = x[:, 0] - x.mean(), y[:, 0] - y.mean()
        top = np.sort(xc) @ np.sort(yc)
        assert g.gap == pytest.approx(1.0 - xc @ yc / top, rel=1e-9, abs=1e-12)
        # a point keeps its image iff x and y have the same rank (no ties here)
        same = np.argsort(np.argsort(x[:, 0])) == np.argsort(np.argsort(y[:, 0]))
        assert g.reassigned == pytest.approx(1.0 - same.mean())


def test_cluster_permutation_is_far_from_optimal():
    # The map that swaps two clusters (x₁ < 0 goes to the right, x₁ > 0 to the left) is a
    # translation within each half: monotone inside, reversed between them.
    def swap(x):
        s = jnp.where(x[:, :1] < 0, 1.0, -1.0).astype(x.dtype)
        return x + 6.0 * s * jax.nn.one_hot(0, D, dtype=x.dtype)

    g = aeot.transport_gap(_as_sampler(swap), jax.random.key(4), 256, monge=False)
    assert g.gap > 0.2 and g.reassigned > 0.5, g


def test_rbig_like_composition_is_not_optimal():
    # Rotations and monotone marginal maps, composed by hand as RBIG composes them: each layer
    # R g(Rᵀ·) is optimal, the composition with another rotation is not.
    rng = np.random.default_rng(5)
    r1 = jnp.asarray(np.linalg.qr(rng.standard_normal((D, D)))[0], jnp.float32)
    r2 = jnp.asarray(np.linalg.qr(rng.standard_normal((D, D)))[0], jnp.float32)

    def layer(x, r):
        z = x @ r
        return (z + 2.0 * jnp.tanh(3.0 * z)) @ r.T

    g_one = aeot.transport_gap(
        _as_sampler(lambda x: layer(x, r1)), jax.random.key(6), 512, monge=False
    )
    g_two = aeot.transport_gap(
        _as_sampler(lambda x: layer(layer(x, r1), r2) @ r1), jax.random.key(6), 512, monge=False
    )
    assert g_one.gap <= 1e-6 and g_one.reassigned == 0.0, g_one
    assert g_two.gap > 1e-2 and g_two.reassigned > 0.05, g_two


@pytest.mark.parametrize("seed", range(4))
def test_assignment_matches_brute_force(seed):
    rng = np.random.default_rng(10 + seed)
    n = 5 + seed % 3  # 5, 6, 7 points: 120 to 5040 permutations
    x = rng.standard_normal((n, 3))
    y = np.tanh(x @ rng.standard_normal((3, 3))) + 0.3 * rng.standard_normal((n, 3))
    g = aeot.transport_gap_from_samples(x, y, monge=False, rtol=0.0)
    best, perm = _brute(x, y)
    identity = float(np.sum(x * y))
    centre = n * float(x.mean(0) @ y.mean(0))  # S(σ) − S̃(σ), the same for every σ
    assert g.scale * n / 2 == pytest.approx(best - centre, rel=1e-9)
    assert g.gap == pytest.approx((best - identity) / (best - centre), rel=1e-9, abs=1e-12)
    assert g.reassigned == pytest.approx(np.mean(perm != np.arange(n)))


def test_rounding_level_inversions_are_ties():
    # The identity computed as (3x + 1000) − 2x − 1000 in float32: exact but for rounding, which
    # is not monotone (close points swap order by ~1e-4). An exact assignment on the float64
    # values reassigns them for gains of ~1e-8; the default tolerance counts them as ties.
    x = np.random.default_rng(8).standard_normal((2048, 1)).astype(np.float32)
    c = np.float32(1000.0)
    y = (np.float32(3.0) * x + c) - np.float32(2.0) * x - c
    assert np.any(np.diff(y[np.argsort(x[:, 0]), 0]) < 0)  # the rounding does invert pairs
    strict = aeot.transport_gap_from_samples(x, y, monge=False, rtol=0.0)
    assert strict.reassigned > 0.0 and 0.0 < strict.gap < 1e-7
    g = aeot.transport_gap_from_samples(x, y, monge=False)
    assert g.gap == 0.0 and g.reassigned == 0.0


def test_invariant_to_translation_and_positive_scaling():
    x = jax.random.normal(jax.random.key(7), (300, D))
    y = _rotation90(x) * 0.3 + jnp.tanh(x)
    base = aeot.transport_gap_from_samples(x, y, monge=False)
    moved = aeot.transport_gap_from_samples(x + 5.0, 7.0 * y - 2.0, monge=False)
    assert moved.gap == pytest.approx(base.gap, rel=1e-6)
    assert moved.reassigned == base.reassigned


def test_monge_gap_is_ott_function_and_bounds_the_exact_gap():
    monge_gap = pytest.importorskip("ott.neural.methods.monge_gap")
    x = jax.random.normal(jax.random.key(8), (256, D))
    y = 3.0 * _rotation90(x) + x @ jnp.asarray(A, jnp.float32) + 1.0  # not optimal
    g = aeot.transport_gap_from_samples(x, y)
    with third_party_promotion():
        ref = float(monge_gap.monge_gap_from_samples(x, y, epsilon=g.epsilon, max_iterations=2000))
    assert g.monge_converged
    assert g.monge_gap == pytest.approx(ref, rel=1e-3)
    # ott's entropy lies in [log n, 2 log n]: M₀ + ε log n ≤ M_ε ≤ M₀ + 2 ε log n, where the
    # unregularised Monge gap M₀ is the exact gap times (2/n) max S
    m0 = g.gap * g.scale
    bias = g.epsilon * math.log(g.n)
    assert g.gap > 0.01
    assert m0 + bias * (1 - 1e-3) <= g.monge_gap * (1 + 1e-4) <= (m0 + 2 * bias) * (1 + 1e-3)
    assert g.gap <= g.monge_gap_relative * (1 + 1e-3) + 1e-6


def test_boxed_sampler_is_measured_in_the_box_or_in_logits():
    # A boxed sampler whose logit map is affine and symmetric (optimal): optimal in logits,
    # not in the box, where a coordinate-wise sigmoid follows a non-diagonal map.
    d = 4
    model = Potential(d, width=8, depth=0, heads=1, skip=False, base=True, rngs=0)
    model.out.kernel[...] = jnp.zeros_like(model.out.kernel[...])
    model.set_base(jnp.asarray(2.0 * _spd(d, seed=1, spread=30.0), jnp.float32), jnp.ones(d))
    inner = aeot.Sampler.from_potential(model, Gaussian())
    low, high = jnp.zeros(d), jnp.array([1.0, 2.0, 3.0, 4.0])
    boxed = aeot.Sampler(inner.params, Gaussian(), inner.potential_config, bounds=(low, high))
    key = jax.random.key(9)
    in_logits = aeot.transport_gap(boxed, key, 256, space="logits", monge=False)
    in_box = aeot.transport_gap(boxed, key, 256, monge=False)
    assert in_logits.gap <= 1e-6 and in_logits.reassigned == 0.0, in_logits
    x = Gaussian().sample(key, (256, d), jnp.float32)
    y = low + (high - low) * jax.nn.sigmoid(inner.transport(x))
    ref = aeot.transport_gap_from_samples(x, y, monge=False)
    assert in_box.gap == pytest.approx(ref.gap, rel=1e-6) and in_box.gap > 1e-3, in_box
    assert boxed.bounds is not None  # measuring in logits leaves the sampler alone


def test_float64(x64):
    g = aeot.transport_gap(_as_sampler(OPTIMAL_MAPS["bures"]), jax.random.key(0), 64)
    assert g.gap <= 1e-12 and g.reassigned == 0.0
    assert isinstance(g.gap, float) and isinstance(g.monge_gap, float)


def test_bad_input():
    s = _as_sampler(OPTIMAL_MAPS["bures"])
    key = jax.random.key(0)
    for n in (0, 1, 2.5, "8"):
        with pytest.raises(ValueError, match="n"):
            aeot.transport_gap(s, key, n)
    with pytest.raises(ValueError, match="epsilon"):
        aeot.transport_gap(s, key, 16, epsilon=0.0)
    with pytest.raises(ValueError, match="max_iterations"):
        aeot.transport_gap(s, key, 16, max_iterations=0)
    with pytest.raises(ValueError, match="rtol"):
        aeot.transport_gap(s, key, 16, rtol=-1.0)
    with pytest.raises(ValueError, match="space"):
        aeot.transport_gap(s, key, 16, space="box")
    with pytest.raises(ValueError, match="transport"):
        aeot.transport_gap(SimpleNamespace(prior=Gaussian(), dim=D), key, 16)
    with pytest.raises(ValueError, match="finite"):
        aeot.transport_gap(_as_sampler(lambda x: x / 0.0), key, 16)
    x = jnp.zeros((8, 3))
    with pytest.raises(ValueError, match="same shape"):
        aeot.transport_gap_from_samples(x, jnp.zeros((8, 2)))
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        aeot.transport_gap_from_samples(x[0], x[0])
    with pytest.raises(ValueError, match="real"):
        aeot.transport_gap_from_samples(x.astype(jnp.int32), x.astype(jnp.int32))


def test_fit_records_the_certificate_of_its_map():
    """``fit`` records the gap of the sampler it returns, on CERTIFICATE_POINTS prior draws,
    equal to a direct call with the same key (pursuit, k = 0: the layers alone)."""
    from latentot.aeot import train

    rng = np.random.default_rng(0)
    codes = (rng.laplace(size=(3000, 34)) @ rng.standard_normal((34, 34)) / 6.0).astype(np.float32)
    key = jax.random.key(1)
    sampler = aeot.fit(key, codes)
    direct = aeot.transport_gap(
        sampler,
        jax.random.fold_in(key, train.CERTIFICATE_KEY),
        n=train.CERTIFICATE_POINTS,
        monge=False,
    )
    assert sampler.history["transport_gap"][0] == direct.gap
    assert sampler.history["transport_gap_reassigned"][0] == direct.reassigned
    assert 0.0 <= direct.gap < 0.05
