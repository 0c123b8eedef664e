"""Property tests of ``aeot.fit`` over random code laws (hypothesis).

For every drawn law the default fit, with a small step budget, either raises a clear
``ValueError`` or returns a sampler whose samples are finite, whose map is monotone along random
lines in noise space (``t ↦ ⟨T(x₀ + t u), u⟩`` nondecreasing, through the origin and through
prior draws), whose inverse round-trips its own samples, and which saves and loads to identical
samples. The CI profile draws a few laws (derandomised, so every machine draws the same ones);
``HYPOTHESIS_PROFILE=thorough`` draws many more, by hand.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentot import aeot
from latentot.aeot import train

settings.register_profile(
    "ci",
    max_examples=4,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

FAMILIES = (
    "mixture",
    "student_t",
    "scale_mixture",
    "rank_deficient",
    "constant_column",
    "bounded",
)


@st.composite
def code_laws(draw):
    """``(family, codes [n, d] float32, bounds or None)`` of a random law."""
    family = draw(st.sampled_from(FAMILIES))
    d = draw(st.integers(2, 80))
    scale = 10.0 ** draw(st.floats(-6.0, 6.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = 1200
    z = rng.standard_normal((n, d))
    bounds = None
    if family in ("mixture", "bounded"):
        k = draw(st.integers(2, 6))
        weights = rng.dirichlet(np.ones(k))
        separation = draw(st.floats(0.0, 8.0))
        centres = separation * rng.standard_normal((k, d))
        z = z + centres[rng.choice(k, size=n, p=weights)]
    elif family == "student_t":
        df = draw(st.integers(2, 5))
        z = z / np.sqrt(rng.chisquare(df, (n, 1)) / df)
    elif family == "scale_mixture":
        z = z * np.exp(rng.standard_normal((n, 1)))
    elif family == "rank_deficient":
        r = draw(st.integers(1, max(1, d - 1)))
        z = z[:, :r] @ rng.standard_normal((r, d))
    elif family == "constant_column":
        z[:, rng.integers(d)] = 1.5
    z = z @ rng.standard_normal((d, d)) / np.sqrt(d) if family != "constant_column" else z
    if family == "bounded":
        z = 1.0 / (1.0 + np.exp(-z))  # in (0, 1)
        bounds = (0.0, 1.0)
    else:
        z = z * scale
    return family, z.astype(np.float32), bounds


def monotone_along_lines(transport, rng, d, *, lines=16, t_max=4.0, points=33):
    """The worst decrease of ``t ↦ ⟨T(x₀ + t u), u⟩`` over random unit directions u, with x₀
    the origin for half the lines and a prior draw for the rest, relative to the range of the
    values along the line (0 for a monotone map)."""
    k1, k2 = jax.random.split(rng)
    u = jax.random.normal(k1, (lines, d))
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    x0 = jax.random.normal(k2, (lines, d)).at[: lines // 2].set(0.0)
    t = jnp.linspace(-t_max, t_max, points)
    pts = x0[:, None, :] + t[None, :, None] * u[:, None, :]  # [lines, points, d]
    y = np.asarray(transport(pts.reshape(-1, d)), np.float64).reshape(lines, points, d)
    proj = np.einsum("lpd,ld->lp", y, np.asarray(u, np.float64))
    span = np.maximum(proj.max(1) - proj.min(1), 1e-30)
    return float(np.max(np.maximum(-np.diff(proj, axis=1), 0.0).max(1) / span))


@given(code_laws())
def test_fit_on_any_code_law_gives_a_sound_sampler_or_a_clear_error(tmp_path_factory, law):
    family, codes, bounds = law
    d = codes.shape[1]
    try:
        sampler = aeot.fit(jax.random.key(0), codes, steps=12, batch_size=128, bounds=bounds)
    except ValueError as e:  # a clear refusal is allowed, never a NaN
        assert str(e)
        return
    samples = np.asarray(sampler.sample(jax.random.key(1), 256))
    assert samples.shape == (256, d) and np.all(np.isfinite(samples)), family
    # The map before the box (a componentwise logistic) is the one that must be monotone. The
    # minibatch method's default potential in the plane (d <= 2) is not convex and its map is
    # not monotone: test_potential.py's plane fit measures it (and Potential(convex=True),
    # which is); every other method's map must be.
    if aeot.resolve_method("auto", d) != "minibatch":
        inner = train._with(sampler, bounds=None)
        worst = monotone_along_lines(inner.transport, jax.random.key(2), d)
        assert worst <= 1e-4, (family, d, worst)
    x, info = sampler.inverse_transport(samples[:128], return_info=True)
    assert np.all(np.isfinite(np.asarray(x)))
    assert np.mean(np.asarray(info.converged)) >= 0.95, (family, d, info.residual)
    path = tmp_path_factory.mktemp("law") / "s.aeot"
    aeot.save(path, sampler)
    again = aeot.load(path)
    np.testing.assert_array_equal(
        np.asarray(again.sample(jax.random.key(3), 64)),
        np.asarray(sampler.sample(jax.random.key(3), 64)),
    )


def test_monotone_check_catches_a_non_monotone_map():
    """The control of the property above: a rotation by 90° in a plane is not monotone."""
    d = 4
    rot = jnp.eye(d).at[:2, :2].set(jnp.asarray([[0.0, -1.0], [1.0, 0.0]]))
    assert monotone_along_lines(lambda z: z @ rot, jax.random.key(0), d) == 0.0  # ⟨Ru, u⟩ = 0
    swirl = lambda z: z + 2.0 * jnp.sin(3.0 * z[:, ::-1])  # noqa: E731
    assert monotone_along_lines(swirl, jax.random.key(0), d) > 0.05
    assert monotone_along_lines(lambda z: 2.0 * z + 1.0, jax.random.key(0), d) == 0.0


if __name__ == "__main__":
    pytest.main([__file__])


@pytest.mark.slow  # about 3 minutes on 2 cores: three default fits at d = 40-64
@pytest.mark.xfail(
    strict=True,
    reason="pursuit composes monotone layers in different bases and scales them anisotropically; "
    "the composition is not monotone (patches: a 15% drop along a line)",
)
def test_default_map_is_monotone_on_patches_a_scale_mixture_and_a_known_map():
    """Along 64 random lines through the origin (and 64 through prior draws), t in [-4, 4], the
    default sampler's map is monotone on natural-image patches (d = 64), a Gaussian scale
    mixture (d = 40) and the clusters known-map pair (d = 64, a learned block)."""
    from sklearn.datasets import load_sample_images

    from latentot.aeot.known_maps import known_map

    rng = np.random.default_rng(0)
    images = [im.mean(-1) / 255.0 for im in load_sample_images().images]
    rows = []
    for i in range(20_000):
        im = images[i % 2]
        r, c = rng.integers(im.shape[0] - 8), rng.integers(im.shape[1] - 8)
        rows.append(im[r : r + 8, c : c + 8].ravel())
    patches = np.asarray(rows) + rng.uniform(0.0, 1.0 / 255.0, (20_000, 64))
    mixture = rng.standard_normal((20_000, 40)) * np.exp(rng.standard_normal((20_000, 1)))
    _, clusters = known_map(jax.random.key(0), "clusters", 64).sample(jax.random.key(1), 20_000)
    worst = {}
    for name, codes in (("patches", patches), ("mixture", mixture), ("clusters", clusters)):
        codes = np.asarray(codes, np.float32)
        sampler = aeot.fit(jax.random.key(0), codes)
        worst[name] = monotone_along_lines(
            sampler.transport, jax.random.key(3), codes.shape[1], lines=128
        )
    assert max(worst.values()) <= 1e-4, worst
